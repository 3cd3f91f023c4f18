/**
 * Shared by the fuzz tests (test/unit/crypto/fuzz.test.ts, test/integration/fuzz-rpc.test.ts and the
 * Jazzer.js targets in test/fuzz/): the format's largest header, and byte-level mutations (fast-check)
 * — flips, overwrites, inserts, deletes, truncations, duplicated and swapped ranges, and
 * "interesting" big-endian integers written over length fields. Positions are fractions of the
 * length, so one arbitrary fits any input.
 */
import * as fc from 'fast-check';
import { MAX_CONTEXT_BYTES } from '../../src/crypto/context';
import {
  COMMITMENT_BYTES,
  HEADER_TAG_BYTES,
  MAX_KEY_ID_BYTES,
  MAX_WRAP_ALG_BYTES,
  MAX_WRAPPED_DEK_BYTES,
} from '../../src/crypto/format';

/** The largest header the v1 format can express (every variable field at its bound). */
export const LARGEST_HEADER =
  44 +
  MAX_CONTEXT_BYTES +
  COMMITMENT_BYTES +
  2 +
  MAX_KEY_ID_BYTES +
  1 +
  MAX_WRAP_ALG_BYTES +
  2 +
  MAX_WRAPPED_DEK_BYTES +
  HEADER_TAG_BYTES;

/** One edit to a byte string; positions are fractions so they fit any length. */
export type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; value: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; count: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'append'; bytes: Uint8Array }
  | { kind: 'duplicate'; at: number; count: number }
  | { kind: 'swap'; a: number; b: number; count: number }
  | { kind: 'u16'; at: number; value: number }
  | { kind: 'u32'; at: number; value: number };

export const fraction = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });
export const interestingU16 = fc.oneof(
  fc.constantFrom(0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x3ff, 0x400, 0x401, 0x2000, 0x2001, 0x7fff, 0xffff),
  fc.integer({ min: 0, max: 0xffff }),
);
export const interestingU32 = fc.oneof(
  fc.constantFrom(0, 1, 4095, 4096, 4097, 0x400000, 0x400001, 0x7fffffff, 0xffffffff),
  fc.integer({ min: 0, max: 0xffffffff }),
);

export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fraction, bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fraction, value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fraction,
    bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
  }),
  fc.record({ kind: fc.constant('delete' as const), at: fraction, count: fc.integer({ min: 1, max: 64 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fraction }),
  fc.record({ kind: fc.constant('append' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  fc.record({
    kind: fc.constant('duplicate' as const),
    at: fraction,
    count: fc.integer({ min: 1, max: 5000 }),
  }),
  fc.record({
    kind: fc.constant('swap' as const),
    a: fraction,
    b: fraction,
    count: fc.integer({ min: 1, max: 5000 }),
  }),
  fc.record({ kind: fc.constant('u16' as const), at: fraction, value: interestingU16 }),
  fc.record({ kind: fc.constant('u32' as const), at: fraction, value: interestingU32 }),
);

export function mutate(input: Buffer, mutation: Mutation): Buffer {
  const n = input.length;
  const pos = (f: number) => Math.floor(f * n);
  switch (mutation.kind) {
    case 'flip': {
      if (n === 0) return input;
      const out = Buffer.from(input);
      out[pos(mutation.at)]! ^= 1 << mutation.bit;
      return out;
    }
    case 'set': {
      if (n === 0) return input;
      const out = Buffer.from(input);
      out[pos(mutation.at)] = mutation.value;
      return out;
    }
    case 'insert': {
      const at = Math.floor(mutation.at * (n + 1));
      return Buffer.concat([input.subarray(0, at), mutation.bytes, input.subarray(at)]);
    }
    case 'delete': {
      const at = pos(mutation.at);
      return Buffer.concat([input.subarray(0, at), input.subarray(at + mutation.count)]);
    }
    case 'truncate':
      return Buffer.from(input.subarray(0, pos(mutation.at)));
    case 'append':
      return Buffer.concat([input, mutation.bytes]);
    case 'duplicate': {
      const at = pos(mutation.at);
      const piece = input.subarray(at, at + mutation.count);
      return Buffer.concat([input.subarray(0, at), piece, input.subarray(at)]);
    }
    case 'swap': {
      const a = Math.min(pos(mutation.a), pos(mutation.b));
      const b = Math.max(pos(mutation.a), pos(mutation.b));
      const count = Math.min(mutation.count, b - a);
      if (count === 0) return input;
      const out = Buffer.from(input);
      input.copy(out, a, b, Math.min(n, b + count));
      input.copy(out, b, a, a + Math.min(count, n - b));
      return out;
    }
    case 'u16': {
      if (n < 2) return input;
      const out = Buffer.from(input);
      out.writeUInt16BE(mutation.value, Math.min(pos(mutation.at), n - 2));
      return out;
    }
    case 'u32': {
      if (n < 4) return input;
      const out = Buffer.from(input);
      out.writeUInt32BE(mutation.value, Math.min(pos(mutation.at), n - 4));
      return out;
    }
  }
}

export function applyAll(input: Buffer, mutations: readonly Mutation[]): Buffer {
  return mutations.reduce(mutate, input);
}
