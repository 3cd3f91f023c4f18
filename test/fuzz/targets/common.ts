/**
 * What the fuzz targets count as a bug, the keys they use to get past the header's MAC, and the
 * header-spec input mode (fromFields).
 *
 * A bug is anything but a SealboxError with an expected code escaping the code under test (a
 * TypeError, a RangeError, a SealboxError with another code), a single allocation larger than the
 * input could justify, or a broken round-trip property. Targets report a bug by throwing FuzzFinding
 * (or letting the unexpected error escape); Jazzer.js then writes the input to a crash-* file.
 * Hangs and memory growth are libFuzzer's to catch (-timeout, -rss_limit_mb; see ../runner.ts).
 */
import { createHash, createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  COMMITMENT_BYTES,
  FORMAT_VERSION,
  HEADER_TAG_BYTES,
  type Header,
  MAGIC,
  MAX_HEADER_BYTES,
  MESSAGE_ID_BYTES,
  SUITE_AES256GCM_HKDF_HMAC_COMMIT,
} from '../../../src/crypto/format';
import { deriveMessageKeys, type MessageKeys, zeroMessageKeys } from '../../../src/crypto/kdf';
import { type ErrorCode, SealboxError } from '../../../src/errors';
import { VECTORS_DIR } from '../../helpers/paths';

/** A broken property: thrown out of a target, it makes Jazzer.js report the input. */
export class FuzzFinding extends Error {
  override readonly name = 'FuzzFinding';
}

export function check(condition: unknown, message: string): asserts condition {
  if (!condition) throw new FuzzFinding(message);
}

/** First bytes of an input in hex, for messages. */
export function preview(bytes: Uint8Array): string {
  const hex = Buffer.from(bytes.subarray(0, 64)).toString('hex');
  return bytes.length > 64 ? `${hex}… (${bytes.length} bytes)` : hex;
}

// ---------------------------------------------------------------------------------------------------
// Allocation bound

type BufferAllocator = (size: number, ...rest: never[]) => Buffer;

/** Largest single Buffer allocation allowed right now; undefined outside the code under test. */
let allocationBudget: number | undefined;
let allocationViolation: string | undefined;

/**
 * Wraps Buffer's allocators (Buffer.concat goes through allocUnsafe too) so that a call under test can
 * be held to a bound. Installed once per process; outside `underTest` it only forwards.
 */
function installAllocationGuard(): void {
  const names = ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const;
  for (const name of names) {
    const original = Buffer[name] as unknown as BufferAllocator;
    const guarded = (size: number, ...rest: never[]): Buffer => {
      if (allocationBudget !== undefined && size > allocationBudget && allocationViolation === undefined) {
        allocationViolation = `Buffer.${name}(${size}) exceeds the bound of ${allocationBudget} bytes`;
      }
      return original.call(Buffer, size, ...rest);
    };
    (Buffer as unknown as Record<string, BufferAllocator>)[name] = guarded;
  }
}
installAllocationGuard();

/** The outcome of one call under test: its value, or the SealboxError it threw. */
export type Outcome<T> = { ok: true; value: T } | { ok: false; error: SealboxError };

/**
 * Runs code under test. Only a SealboxError whose code is in `allowed` may escape it; anything else
 * is rethrown as it is (so Jazzer.js prints its stack). No single Buffer allocation in it may exceed
 * the input's length plus one maximal header: a parser that allocates on the say-so of an unchecked
 * length field fails here even when the allocation itself would succeed.
 */
export function underTest<T>(
  what: string,
  input: Uint8Array,
  allowed: ReadonlySet<ErrorCode>,
  fn: () => T,
): Outcome<T> {
  allocationBudget = input.length + MAX_HEADER_BYTES;
  allocationViolation = undefined;
  let outcome: Outcome<T>;
  try {
    outcome = { ok: true, value: fn() };
  } catch (err) {
    if (!(err instanceof SealboxError)) throw err;
    if (!allowed.has(err.code)) {
      throw new FuzzFinding(`${what} threw ${err.code} (${err.message}), expected one of ${[...allowed]}`);
    }
    outcome = { ok: false, error: err };
  } finally {
    allocationBudget = undefined;
  }
  check(allocationViolation === undefined, `${what}: ${allocationViolation} for input ${preview(input)}`);
  return outcome;
}

// ---------------------------------------------------------------------------------------------------
// Keys

/** DEK for any message id that is not one of the known-answer vectors. */
export const FUZZ_DEK = createHash('sha256').update('sealbox fuzz DEK').digest();

/** The vectors' DEKs by message id, so the seed ciphertexts (copies of the vectors) open as they are. */
const VECTOR_DEKS: ReadonlyMap<string, Buffer> = (() => {
  const file = JSON.parse(readFileSync(join(VECTORS_DIR, 'sealbox-v1.json'), 'utf8')) as {
    vectors: Array<{ dek: string; messageId: string }>;
  };
  return new Map(file.vectors.map((v) => [v.messageId, Buffer.from(v.dek, 'hex')]));
})();

/** The DEK the targets' stand-in KEK unwraps to for a message. */
export function dekFor(messageId: Uint8Array): Buffer {
  return VECTOR_DEKS.get(Buffer.from(messageId).toString('hex')) ?? FUZZ_DEK;
}

/**
 * Returns a copy of `bytes` whose header (as parsed into `header`) carries the key commitment and
 * tag for `keys`. This is what lets mutated headers through verifyHeader, so that a fuzzer which
 * cannot forge an HMAC still reaches the code after it.
 */
export function reauthenticate(bytes: Buffer, header: Header, keys: MessageKeys): Buffer {
  const out = Buffer.from(bytes);
  const contextLength = header.authenticated.readUInt16BE(42);
  keys.commitment.copy(out, 44 + contextLength);
  const tagAt = header.length - HEADER_TAG_BYTES;
  createHmac('sha256', keys.headerKey).update(out.subarray(0, tagAt)).digest().copy(out, tagAt);
  return out;
}

/** Keys for a message under the stand-in KEK. */
export function keysFor(header: Header): MessageKeys {
  return deriveMessageKeys(dekFor(header.messageId), header.messageId);
}

// ---------------------------------------------------------------------------------------------------
// Headers from fields

/** Message id of headers built from fields (any fixed value does; the DEK is FUZZ_DEK). */
const FIELDS_MESSAGE_ID = createHash('sha256').update('sealbox fuzz message id').digest();

/** Bytes before the payload in a fields-mode input. */
export const FIELDS_PREFIX_BYTES = 12;

/**
 * Both targets read an input that starts with "S" as a ciphertext. Any other input is a header spec,
 * which puts every length the parser checks at a fixed offset where the mutator finds it easily:
 *
 *   0   1  mode (anything but "S")
 *   1   4  chunk size (u32be, as it goes into the header: it may be out of bounds)
 *   5   2  context length Lc      7  2  key id length Lk
 *   9   1  wrap algorithm length La
 *   10  2  wrapped DEK length Lw
 *   12  …  payload: context, key id, wrap algorithm and wrapped DEK bytes (zero-padded where the
 *          payload runs out), then whatever follows is the body
 *
 * The header built from it is well laid out (each length states the bytes that follow) and carries
 * the right key commitment and tag for FUZZ_DEK, but its values may break any bound: lengths of 0 or
 * past the maximum, non-canonical contexts, invalid UTF-8, odd algorithm names.
 */
export function fromFields(data: Buffer): Buffer {
  if (data.length === 0 || data[0] === MAGIC[0]) return data;
  const spec = Buffer.alloc(FIELDS_PREFIX_BYTES);
  data.copy(spec, 0, 0, FIELDS_PREFIX_BYTES);
  const lengths = [spec.readUInt16BE(5), spec.readUInt16BE(7), spec.readUInt8(9), spec.readUInt16BE(10)];
  let at = FIELDS_PREFIX_BYTES;
  const [context, keyId, alg, wrapped] = lengths.map((length) => {
    const field = Buffer.alloc(length);
    data.copy(field, 0, Math.min(at, data.length), Math.min(at + length, data.length));
    at += length;
    return field;
  }) as [Buffer, Buffer, Buffer, Buffer];
  const body = data.subarray(Math.min(at, data.length));

  const fixed = Buffer.alloc(44);
  MAGIC.copy(fixed, 0);
  fixed.writeUInt8(FORMAT_VERSION, 3);
  fixed.writeUInt16BE(SUITE_AES256GCM_HKDF_HMAC_COMMIT, 4);
  FIELDS_MESSAGE_ID.copy(fixed, 6, 0, MESSAGE_ID_BYTES);
  spec.copy(fixed, 38, 1, 5);
  fixed.writeUInt16BE(context.length, 42);
  const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
  const keys = deriveMessageKeys(FUZZ_DEK, FIELDS_MESSAGE_ID);
  const authenticated = Buffer.concat([
    fixed,
    context,
    keys.commitment.subarray(0, COMMITMENT_BYTES),
    u16(keyId.length),
    keyId,
    Buffer.from([alg.length]),
    alg,
    u16(wrapped.length),
    wrapped,
  ]);
  const tag = createHmac('sha256', keys.headerKey).update(authenticated).digest();
  zeroMessageKeys(keys);
  return Buffer.concat([authenticated, tag, body]);
}
