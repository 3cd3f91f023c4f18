/**
 * Parser fuzzing (issue 7): property-based tests over the ciphertext header parser, the stream
 * reader, the context decoder and whole-message opening, plus a corpus of mutated real ciphertexts.
 *
 * What is checked, for every input tried:
 *  - no crash: the only thing that escapes is a SealboxError (never a RangeError, TypeError…);
 *  - no runaway work: the bytes the expensive primitives (AES-GCM, HMAC) consume in one call are
 *    linear in the input's length, with at most one HKDF and one unwrap per call, counted rather than
 *    timed (issue 14: speed lives in bench/; see `checkWork` and `guarded`);
 *  - no allocation driven by an unchecked length: a header that claims a huge length is rejected from
 *    its prefix alone, a header never waits for more than MAX_HEADER_BYTES, and process memory does
 *    not grow over thousands of such inputs;
 *  - mutated ciphertexts never open: they fail with one of the ciphertext error codes.
 *
 * A failure prints fast-check's seed and path, which reproduce the input.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as fc from 'fast-check';

import cryptoModule = require('node:crypto');

import { TAG_BYTES } from '../../../src/crypto/aead';
import { CHUNK_OVERHEAD } from '../../../src/crypto/chunk';
import {
  decodeContext,
  type EncryptionContext,
  encodeContext,
  MAX_CONTEXT_BYTES,
} from '../../../src/crypto/context';
import {
  buildHeader,
  COMMITMENT_BYTES,
  type Header,
  MAX_CHUNK_SIZE,
  MAX_HEADER_BYTES,
  MAX_KEY_ID_BYTES,
  MAX_WRAP_ALG_BYTES,
  MAX_WRAPPED_DEK_BYTES,
  MESSAGE_ID_BYTES,
  MIN_CHUNK_SIZE,
  parseHeader,
} from '../../../src/crypto/format';
import { CiphertextReader } from '../../../src/crypto/framing';
import { deriveMessageKeys } from '../../../src/crypto/kdf';
import { openMessage, sealMessage } from '../../../src/crypto/message';
import { ErrorCode, SealboxError } from '../../../src/errors';
import {
  applyAll,
  fraction,
  interestingU16,
  interestingU32,
  LARGEST_HEADER,
  mutationArb,
} from '../../helpers/fuzzing';

/**
 * Work the expensive primitives did, counted (a deterministic measure: the same input always costs the
 * same, whatever the machine's load). node:crypto's factories are wrapped once for this file; the
 * wrappers count and call straight through. src/crypto calls them through the module object at call
 * time (CommonJS output), so every HKDF, HMAC and AES-GCM decryption of the code under test is seen.
 */
const work = { hkdf: 0, hmacBytes: 0, gcmOpens: 0, gcmBytes: 0, unwraps: 0 };

const byteLength = (data: unknown): number =>
  typeof data === 'string' ? Buffer.byteLength(data) : ArrayBuffer.isView(data) ? data.byteLength : 0;

{
  const { hkdfSync, createHmac, createDecipheriv } = cryptoModule;
  cryptoModule.hkdfSync = ((...args: Parameters<typeof hkdfSync>) => {
    work.hkdf++;
    return hkdfSync(...args);
  }) as typeof hkdfSync;
  cryptoModule.createHmac = ((...args: Parameters<typeof createHmac>) => {
    const hmac = createHmac(...args);
    const update = hmac.update.bind(hmac) as (data: unknown, encoding?: unknown) => typeof hmac;
    hmac.update = ((data: unknown, encoding?: unknown) => {
      work.hmacBytes += byteLength(data);
      return update(data, encoding);
    }) as typeof hmac.update;
    return hmac;
  }) as typeof createHmac;
  cryptoModule.createDecipheriv = ((...args: Parameters<typeof createDecipheriv>) => {
    const decipher = createDecipheriv(...args);
    work.gcmOpens++;
    const update = decipher.update.bind(decipher) as (...a: unknown[]) => unknown;
    decipher.update = ((...a: unknown[]) => {
      work.gcmBytes += byteLength(a[0]);
      return update(...a);
    }) as typeof decipher.update;
    return decipher;
  }) as typeof createDecipheriv;
}

/**
 * The work one call may do on `input`: the header's bytes are authenticated once (HMAC); every record
 * once by AES-GCM, each open consuming a record of its own with a 16-byte tag, plus at most one more
 * open of the final record when it fails (chunk.ts tries it as non-final to tell truncation from
 * tampering); and one message derives one set of keys from one unwrapped DEK. So HMAC bytes ≤ n,
 * AES-GCM bytes ≤ 2n and opens ≤ n/16 + 1 for an n-byte input. Fails on code that re-reads or
 * re-decrypts (a retry loop, a rescan of the records per record), not on a slow machine.
 */
function checkWork(what: string, input: Uint8Array, before: typeof work): void {
  const used = {
    hkdf: work.hkdf - before.hkdf,
    hmacBytes: work.hmacBytes - before.hmacBytes,
    gcmOpens: work.gcmOpens - before.gcmOpens,
    gcmBytes: work.gcmBytes - before.gcmBytes,
    unwraps: work.unwraps - before.unwraps,
  };
  const ok =
    used.hkdf <= 1 &&
    used.unwraps <= 1 &&
    used.hmacBytes <= input.length &&
    used.gcmBytes <= 2 * input.length &&
    used.gcmOpens <= Math.floor(input.length / TAG_BYTES) + 1;
  assert.ok(ok, `${what} did ${JSON.stringify(used)} for ${input.length} input bytes: ${preview(input)}`);
}

/** A garbage-collector handle without --expose-gc (used only to make memory measurements stable). */
const gc: () => void = (() => {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
})();

function preview(bytes: Uint8Array): string {
  const hex = Buffer.from(bytes.subarray(0, 96)).toString('hex');
  return bytes.length > 96 ? `${hex}… (${bytes.length} bytes)` : hex;
}

/**
 * Runs `fn`, which may return or throw a SealboxError, and checks the work it did (`checkWork`).
 * Anything else thrown fails the test with the input's first bytes, so the report is a reproducer.
 *
 * No wall-clock budget (issue 14): a per-call time bound fails on a loaded machine and measures nothing
 * the counts do not. The parsers (parseHeader, decodeContext, CiphertextReader) call no primitive; their
 * loops are bounded by counts and lengths checked against the bytes that remain, so a regression there
 * shows up as an infinite loop, which the runner's timeout ends (npm test and test:unit pass
 * --test-timeout), or as allocation, which the memory checks below catch.
 */
function guarded<T>(
  what: string,
  input: Uint8Array,
  fn: () => T,
): { ok: true; value: T } | { ok: false; error: SealboxError } {
  const before = { ...work };
  let outcome: { ok: true; value: T } | { ok: false; error: SealboxError };
  try {
    outcome = { ok: true, value: fn() };
  } catch (err) {
    if (!(err instanceof SealboxError)) {
      assert.fail(`${what} threw a non-SealboxError ${String(err)} for input ${preview(input)}`);
    }
    outcome = { ok: false, error: err };
  }
  checkWork(what, input, before);
  return outcome;
}

/** A fast deterministic byte generator, so large inputs are reproducible from a fast-check seed. */
function prngBytes(seed: number, length: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = seed | 0 || 0x9e3779b9;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** Large random inputs: a length up to `max` and a PRNG seed (cheap to generate and to shrink). */
function bulkBytes(max: number): fc.Arbitrary<Buffer> {
  return fc.tuple(fc.integer({ min: 0, max }), fc.integer()).map(([length, seed]) => prngBytes(seed, length));
}

// ---------------------------------------------------------------------------------------------------
// Valid headers and mutations

const contextArb: fc.Arbitrary<EncryptionContext> = fc.dictionary(
  fc.string({ minLength: 1, maxLength: 12 }),
  fc.string({ maxLength: 24 }),
  { maxKeys: 6 },
);

interface HeaderCase {
  readonly bytes: Buffer;
  readonly dek: Buffer;
  readonly keyId: string;
  readonly wrapAlgorithm: string;
  readonly wrappedDek: Buffer;
  readonly chunkSize: number;
  readonly context: EncryptionContext;
}

const headerArb: fc.Arbitrary<HeaderCase> = fc
  .record({
    dek: fc.uint8Array({ minLength: 32, maxLength: 32 }),
    messageId: fc.uint8Array({ minLength: MESSAGE_ID_BYTES, maxLength: MESSAGE_ID_BYTES }),
    chunkSize: fc.oneof(
      fc.constantFrom(MIN_CHUNK_SIZE, 65536, MAX_CHUNK_SIZE),
      fc.integer({ min: MIN_CHUNK_SIZE, max: MAX_CHUNK_SIZE }),
    ),
    context: contextArb,
    keyId: fc.string({ minLength: 1, maxLength: 80 }).filter((s) => s.isWellFormed()),
    wrapAlgorithm: fc.constantFrom('A256KW', 'RSA-OAEP-256', 'dev_wrap', 'x'),
    wrappedDek: fc.uint8Array({ minLength: 1, maxLength: 300 }),
  })
  .map((f) => {
    const keys = deriveMessageKeys(f.dek, f.messageId);
    const bytes = buildHeader(
      {
        messageId: f.messageId,
        chunkSize: f.chunkSize,
        contextBytes: encodeContext(f.context),
        keyId: f.keyId,
        wrapAlgorithm: f.wrapAlgorithm,
        wrappedDek: f.wrappedDek,
      },
      keys,
    );
    return {
      bytes,
      dek: Buffer.from(f.dek),
      keyId: f.keyId,
      wrapAlgorithm: f.wrapAlgorithm,
      wrappedDek: Buffer.from(f.wrappedDek),
      chunkSize: f.chunkSize,
      context: f.context,
    };
  });

const mutationsArb = fc.array(mutationArb, { minLength: 1, maxLength: 4 });

// ---------------------------------------------------------------------------------------------------
// parseHeader

/**
 * Checks one parseHeader call and, when it asks for more bytes, that the wait is bounded: the same
 * input padded (with zeros, and with random bytes) to MAX_HEADER_BYTES must resolve.
 */
function checkParse(input: Buffer, padSeed: number): 'header' | 'wait' | 'malformed' {
  const result = guarded('parseHeader', input, () => parseHeader(input));
  if (!result.ok) {
    assert.equal(result.error.code, ErrorCode.CIPHERTEXT_MALFORMED, result.error.message);
    return 'malformed';
  }
  const header = result.value;
  if (header) {
    assert.ok(header.length <= LARGEST_HEADER, `header length ${header.length}`);
    assert.ok(header.length <= input.length);
    assert.ok(header.chunkSize >= MIN_CHUNK_SIZE && header.chunkSize <= MAX_CHUNK_SIZE);
    return 'header';
  }
  // undefined: it claims to need more bytes. That claim must be bounded by the 64 KiB header bound.
  assert.ok(input.length < LARGEST_HEADER, `waits for more after ${input.length} bytes`);
  for (const pad of [Buffer.alloc(MAX_HEADER_BYTES), prngBytes(padSeed, MAX_HEADER_BYTES)]) {
    const padded = Buffer.concat([input, pad]).subarray(0, Math.max(MAX_HEADER_BYTES, input.length));
    const more = guarded('parseHeader (padded)', padded, () => parseHeader(padded));
    if (more.ok) {
      assert.ok(more.value, `still waiting after ${MAX_HEADER_BYTES} bytes: ${preview(input)}`);
      assert.ok(more.value.length <= LARGEST_HEADER);
    } else {
      assert.equal(more.error.code, ErrorCode.CIPHERTEXT_MALFORMED);
    }
  }
  return 'wait';
}

/** Counts outcomes, so a test can show (and assert) that the fuzzer reached the deep paths. */
class Tally {
  private readonly counts = new Map<string, number>();
  add(key: string): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  }
  get(key: string): number {
    return this.counts.get(key) ?? 0;
  }
  toString(): string {
    return [...this.counts].map(([k, v]) => `${k}=${v}`).join(' ');
  }
}

/** Bytes that start like a header, so the fuzzer gets past the magic/version/suite checks. */
const PLAUSIBLE_PREFIX = Buffer.from([0x53, 0x42, 0x58, 0x01, 0x00, 0x01]);

describe('fuzz: parseHeader', () => {
  test('arbitrary bytes up to 20 KiB: undefined, a header or CIPHERTEXT_MALFORMED', () => {
    const bytesArb = fc.oneof(fc.uint8Array({ maxLength: 20 * 1024, size: 'medium' }), bulkBytes(20 * 1024));
    fc.assert(
      fc.property(bytesArb, fc.integer(), (bytes, seed) => {
        checkParse(Buffer.from(bytes), seed);
      }),
      { numRuns: 10_000 },
    );
  });

  test('arbitrary bytes up to 20 KiB behind a valid magic/version/suite', () => {
    fc.assert(
      fc.property(bulkBytes(20 * 1024), fc.integer(), (bytes, seed) => {
        checkParse(Buffer.concat([PLAUSIBLE_PREFIX, bytes]), seed);
      }),
      { numRuns: 10_000 },
    );
  });

  test('structured garbage: plausible fixed part with random lengths and bodies', () => {
    const fieldsArb = fc.record({
      chunkSize: interestingU32,
      contextLength: interestingU16,
      keyIdLength: interestingU16,
      algLength: fc.integer({ min: 0, max: 255 }),
      wrappedLength: interestingU16,
      body: bulkBytes(12 * 1024),
      cut: fraction,
    });
    fc.assert(
      fc.property(fieldsArb, fc.integer(), (f, seed) => {
        const fixed = Buffer.alloc(44);
        PLAUSIBLE_PREFIX.copy(fixed);
        fixed.writeUInt32BE(f.chunkSize, 38);
        fixed.writeUInt16BE(f.contextLength, 42);
        const bytes = Buffer.concat([fixed, f.body]);
        // Plant the later length fields where a parser following contextLength would look for them.
        let at = 44 + f.contextLength + COMMITMENT_BYTES;
        if (at + 2 <= bytes.length) bytes.writeUInt16BE(f.keyIdLength, at);
        at += 2 + f.keyIdLength;
        if (at + 1 <= bytes.length) bytes.writeUInt8(f.algLength, at);
        at += 1 + f.algLength;
        if (at + 2 <= bytes.length) bytes.writeUInt16BE(f.wrappedLength, at);
        checkParse(bytes.subarray(0, Math.floor(f.cut * (bytes.length + 1))), seed);
      }),
      { numRuns: 6000 },
    );
  });

  test('valid headers: every prefix waits, the whole header parses to the sealed fields', () => {
    fc.assert(
      fc.property(headerArb, fc.array(fraction, { maxLength: 8 }), (h, cuts) => {
        for (const cut of cuts) {
          const prefix = h.bytes.subarray(0, Math.floor(cut * h.bytes.length));
          assert.equal(guarded('parseHeader', prefix, () => parseHeader(prefix)).ok, true);
          assert.equal(parseHeader(prefix), undefined);
        }
        const withBody = Buffer.concat([h.bytes, randomBytes(40)]);
        const header = parseHeader(withBody);
        assert.ok(header);
        assert.equal(header.length, h.bytes.length);
        assert.equal(header.keyId, h.keyId);
        assert.equal(header.wrapAlgorithm, h.wrapAlgorithm);
        assert.deepEqual(header.wrappedDek, h.wrappedDek);
        assert.equal(header.chunkSize, h.chunkSize);
        assert.deepEqual({ ...header.context }, { ...h.context });
      }),
      { numRuns: 1500 },
    );
  });

  test('valid headers with random mutations, insertions and deletions', (t) => {
    const tally = new Tally();
    fc.assert(
      fc.property(headerArb, mutationsArb, fc.integer(), (h, mutations, seed) => {
        const mutated = applyAll(h.bytes, mutations);
        tally.add(checkParse(mutated, seed));
      }),
      { numRuns: 10_000 },
    );
    t.diagnostic(`outcomes: ${tally}`);
    for (const outcome of ['header', 'wait', 'malformed']) assert.ok(tally.get(outcome) > 0, `${tally}`);
  });
});

// ---------------------------------------------------------------------------------------------------
// Huge claimed lengths

/** A valid header's bytes and the offsets of its length fields. */
function layoutOf(bytes: Buffer): {
  contextLengthAt: number;
  keyIdLengthAt: number;
  algLengthAt: number;
  wrappedLengthAt: number;
} {
  const contextLength = bytes.readUInt16BE(42);
  const keyIdLengthAt = 44 + contextLength + COMMITMENT_BYTES;
  const algLengthAt = keyIdLengthAt + 2 + bytes.readUInt16BE(keyIdLengthAt);
  const wrappedLengthAt = algLengthAt + 1 + bytes.readUInt8(algLengthAt);
  return { contextLengthAt: 42, keyIdLengthAt, algLengthAt, wrappedLengthAt };
}

function sampleHeader(context: EncryptionContext): Buffer {
  const dek = randomBytes(32);
  const messageId = randomBytes(MESSAGE_ID_BYTES);
  return buildHeader(
    {
      messageId,
      chunkSize: 4096,
      contextBytes: encodeContext(context),
      keyId: 'kek-1/v1',
      wrapAlgorithm: 'A256KW',
      wrappedDek: randomBytes(40),
    },
    deriveMessageKeys(dek, messageId),
  );
}

/** Prefixes that end right after a length field claiming an out-of-bounds value. */
function hugeClaims(base: Buffer, value: number): { name: string; bytes: Buffer }[] {
  const l = layoutOf(base);
  const cut = (end: number, patch: (b: Buffer) => void) => {
    const b = Buffer.from(base.subarray(0, end));
    patch(b);
    return b;
  };
  const u16 = value & 0xffff;
  return [
    {
      name: 'chunk size',
      bytes: cut(44, (b) => b.writeUInt32BE(Math.max(MAX_CHUNK_SIZE + 1, value >>> 0), 38)),
    },
    {
      name: 'context length',
      bytes: cut(44, (b) => b.writeUInt16BE(Math.max(MAX_CONTEXT_BYTES + 1, u16), 42)),
    },
    {
      name: 'key id length',
      bytes: cut(l.keyIdLengthAt + 2, (b) =>
        b.writeUInt16BE(Math.max(MAX_KEY_ID_BYTES + 1, u16), l.keyIdLengthAt),
      ),
    },
    {
      name: 'wrap algorithm length',
      bytes: cut(l.algLengthAt + 1, (b) =>
        b.writeUInt8(Math.max(MAX_WRAP_ALG_BYTES + 1, value & 0xff), l.algLengthAt),
      ),
    },
    {
      name: 'wrapped DEK length',
      bytes: cut(l.wrappedLengthAt + 2, (b) =>
        b.writeUInt16BE(Math.max(MAX_WRAPPED_DEK_BYTES + 1, u16), l.wrappedLengthAt),
      ),
    },
  ];
}

describe('fuzz: huge claimed lengths', () => {
  test('the maximal claims are rejected from the prefix alone, by parseHeader and by the reader', () => {
    const base = sampleHeader({ tenant: 'acme', purpose: 'fuzz' });
    for (const { name, bytes } of hugeClaims(base, 0xffffffff)) {
      const result = guarded(`parseHeader (${name})`, bytes, () => parseHeader(bytes));
      assert.equal(result.ok, false, `${name}: a huge claim must throw, not wait`);
      if (!result.ok) assert.equal(result.error.code, ErrorCode.CIPHERTEXT_MALFORMED, name);
      // Byte by byte through the stream reader: it must throw on the byte that completes the field.
      const reader = new CiphertextReader(() => 1);
      let threwAt = -1;
      for (let i = 0; i < bytes.length; i++) {
        const r = guarded('CiphertextReader.push', bytes, () => reader.push(bytes.subarray(i, i + 1)));
        if (!r.ok) {
          assert.equal(r.error.code, ErrorCode.CIPHERTEXT_MALFORMED);
          threwAt = i;
          break;
        }
      }
      assert.equal(threwAt, bytes.length - 1, `${name}: the reader throws on the field's last byte`);
    }
  });

  test('10,000 huge-length prefixes: always CIPHERTEXT_MALFORMED, no memory growth', () => {
    const bases = [
      sampleHeader({}),
      sampleHeader({ a: 'b' }),
      sampleHeader({ big: 'x'.repeat(MAX_CONTEXT_BYTES - 2 - 4 - 3) }),
    ];
    const values = fc.sample(fc.integer({ min: 0, max: 0xffffffff }), 2000);
    gc();
    const before = process.memoryUsage();
    let peakArrayBuffers = before.arrayBuffers;
    let peakRss = before.rss;
    let count = 0;
    for (let i = 0; count < 10_000; i++) {
      const claims = hugeClaims(bases[i % bases.length]!, values[i % values.length]!);
      for (const { name, bytes } of claims) {
        const result = guarded(`parseHeader (${name})`, bytes, () => parseHeader(bytes));
        assert.equal(result.ok, false, `${name}: claim ${preview(bytes.subarray(-4))} must throw`);
        if (!result.ok) assert.equal(result.error.code, ErrorCode.CIPHERTEXT_MALFORMED);
        const reader = new CiphertextReader(() => 1);
        assert.throws(
          () => reader.push(bytes),
          (e: unknown) => e instanceof SealboxError,
        );
        count++;
      }
      if (i % 100 === 0) {
        const now = process.memoryUsage();
        peakArrayBuffers = Math.max(peakArrayBuffers, now.arrayBuffers);
        peakRss = Math.max(peakRss, now.rss);
      }
    }
    gc();
    const after = process.memoryUsage();
    const growth = after.arrayBuffers - before.arrayBuffers;
    const peakGrowth = peakArrayBuffers - before.arrayBuffers;
    assert.ok(growth < 32 * 1024 * 1024, `arrayBuffers grew by ${growth} bytes`);
    assert.ok(peakGrowth < 32 * 1024 * 1024, `arrayBuffers peaked ${peakGrowth} bytes above the start`);
    assert.ok(
      peakRss - before.rss < 128 * 1024 * 1024,
      `rss peaked ${peakRss - before.rss} bytes above the start`,
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// CiphertextReader and openMessage on mutated real ciphertexts

const KEY_ID = 'kek-1/v1';
const WRAP_ALG = 'A256KW';
const DEK = createHash('sha256').update('sealbox fuzz DEK').digest();
const WRAPPED_DEK = createHash('sha512').update('sealbox fuzz wrapped DEK').digest().subarray(0, 40);
const CHUNK_SIZE = 4096;

/**
 * Stand-in for a KEK: an unknown key id is KEY_NOT_FOUND; a wrapped DEK other than ours unwraps to a
 * different DEK (as a tampered-with wrapped key would), which the key commitment must catch.
 */
function unwrap(header: Header): Uint8Array {
  work.unwraps++;
  if (header.keyId !== KEY_ID) {
    throw new SealboxError(ErrorCode.KEY_NOT_FOUND, `no key owns ${JSON.stringify(header.keyId)}`);
  }
  if (header.wrappedDek.equals(WRAPPED_DEK)) return DEK;
  return createHash('sha256').update(header.wrappedDek).digest();
}

const OPEN_CODES: ReadonlySet<string> = new Set([
  ErrorCode.CIPHERTEXT_MALFORMED,
  ErrorCode.CIPHERTEXT_CORRUPT,
  ErrorCode.CIPHERTEXT_TRUNCATED,
  ErrorCode.CONTEXT_MISMATCH,
  ErrorCode.KEY_NOT_FOUND,
]);

interface Sealed {
  readonly plaintext: Buffer;
  readonly context: EncryptionContext;
  readonly ciphertext: Buffer;
}

const sealedArb: fc.Arbitrary<Sealed> = fc
  .record({
    length: fc.oneof(
      fc.constantFrom(0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE, 3 * CHUNK_SIZE + 7),
      fc.integer({ min: 0, max: 5 * CHUNK_SIZE }),
    ),
    seed: fc.integer(),
    context: contextArb,
  })
  .map(({ length, seed, context }) => {
    const plaintext = prngBytes(seed, length);
    const ciphertext = sealMessage(plaintext, {
      dek: DEK,
      wrapped: { keyId: KEY_ID, wrapAlgorithm: WRAP_ALG, wrappedDek: WRAPPED_DEK },
      context,
      chunkSize: CHUNK_SIZE,
    });
    return { plaintext, context, ciphertext };
  });

/** Ciphertext mutations biased towards the header (where parsing happens) and chunk boundaries. */
const ciphertextMutationsArb = fc.array(mutationArb, { minLength: 1, maxLength: 3 });

/** Reads the reader's private queue length; the invariant is about memory the reader holds. */
function buffered(reader: CiphertextReader): number {
  return (reader as unknown as { queue: { length: number } }).queue.length;
}

/**
 * Feeds `bytes` to a reader split at `cuts`, checking after every push that only SealboxErrors escape
 * and that the reader holds at most one header or one record. Returns the error, if any.
 */
function readInPieces(bytes: Buffer, cuts: readonly number[]): SealboxError | undefined {
  const points = [...new Set(cuts.map((c) => Math.floor(c * (bytes.length + 1))))].sort((a, b) => a - b);
  const reader = new CiphertextReader((c) => Math.max(1, Math.floor((64 * 1024) / c)));
  let from = 0;
  let total = 0;
  let expectIndex = 0;
  for (const to of [...points, bytes.length]) {
    const piece = bytes.subarray(from, to);
    from = Math.max(from, to);
    const r = guarded('CiphertextReader.push', bytes, () => reader.push(piece));
    if (!r.ok) {
      assert.equal(r.error.code, ErrorCode.CIPHERTEXT_MALFORMED, r.error.message);
      return r.error;
    }
    for (const s of r.value.segments) {
      assert.equal(s.firstIndex, expectIndex);
      assert.equal(s.final, false);
      const record = reader.header!.chunkSize + CHUNK_OVERHEAD;
      assert.equal(s.data.length % record, 0);
      expectIndex += s.data.length / record;
      total += s.data.length;
    }
    const held = buffered(reader);
    if (reader.header) {
      assert.ok(
        held <= reader.header.chunkSize + CHUNK_OVERHEAD,
        `reader holds ${held} bytes after the header`,
      );
    } else {
      assert.ok(held < LARGEST_HEADER, `reader holds ${held} bytes waiting for a header`);
    }
  }
  const f = guarded('CiphertextReader.finish', bytes, () => reader.finish());
  if (!f.ok) {
    assert.equal(f.error.code, ErrorCode.CIPHERTEXT_TRUNCATED, f.error.message);
    return f.error;
  }
  assert.equal(f.value.final, true);
  assert.equal(f.value.firstIndex, expectIndex);
  assert.equal(
    reader.header!.length + total + f.value.data.length,
    bytes.length,
    'every byte is accounted for',
  );
  return undefined;
}

function checkOpen(original: Sealed, bytes: Buffer, expected: EncryptionContext): string {
  const r = guarded('openMessage', bytes, () => openMessage(bytes, unwrap, expected));
  if (r.ok) {
    assert.ok(bytes.equals(original.ciphertext), `a mutated ciphertext opened: ${preview(bytes)}`);
    assert.ok(r.value.plaintext.equals(original.plaintext));
    return 'OK';
  }
  assert.ok(OPEN_CODES.has(r.error.code), `unexpected code ${r.error.code}: ${r.error.message}`);
  return r.error.code;
}

describe('fuzz: mutated real ciphertexts', () => {
  test('unmodified ciphertexts read and open (sanity check for the corpus)', () => {
    fc.assert(
      fc.property(sealedArb, fc.array(fraction, { maxLength: 6 }), (s, cuts) => {
        assert.equal(readInPieces(s.ciphertext, cuts), undefined);
        const opened = openMessage(s.ciphertext, unwrap, s.context);
        assert.ok(opened.plaintext.equals(s.plaintext));
      }),
      { numRuns: 300 },
    );
  });

  test('CiphertextReader and openMessage on mutated ciphertexts split at random points', (t) => {
    const tally = new Tally();
    let opened = 0;
    let failures = 0;
    fc.assert(
      fc.property(
        sealedArb,
        ciphertextMutationsArb,
        fc.array(fraction, { maxLength: 6 }),
        fc.boolean(),
        (s, mutations, cuts, useExpected) => {
          const bytes = applyAll(s.ciphertext, mutations);
          readInPieces(bytes, cuts);
          tally.add(checkOpen(s, bytes, useExpected ? s.context : {}));
          if (bytes.equals(s.ciphertext)) opened++;
          else failures++;
        },
      ),
      { numRuns: 10_000 },
    );
    t.diagnostic(`outcomes: ${tally}`);
    assert.ok(failures > opened, `${failures} mutated, ${opened} no-op mutations`);
    for (const code of [
      ErrorCode.CIPHERTEXT_MALFORMED,
      ErrorCode.CIPHERTEXT_CORRUPT,
      ErrorCode.CIPHERTEXT_TRUNCATED,
    ]) {
      assert.ok(tally.get(code) > 0, `${tally}`);
    }
  });

  test('header-targeted mutations of real ciphertexts', (t) => {
    const tally = new Tally();
    // Mutations confined to the header, where the parser's bounds matter most.
    const headerMutation = fc.record({
      at: fc.nat(),
      how: fc.oneof(
        fc.record({ kind: fc.constant('byte' as const), value: fc.integer({ min: 0, max: 255 }) }),
        fc.record({ kind: fc.constant('u16' as const), value: interestingU16 }),
        fc.record({ kind: fc.constant('u32' as const), value: interestingU32 }),
      ),
    });
    fc.assert(
      fc.property(
        sealedArb,
        fc.array(headerMutation, { minLength: 1, maxLength: 3 }),
        fc.array(fraction, { maxLength: 4 }),
        (s, ms, cuts) => {
          const headerLength = parseHeader(s.ciphertext)!.length;
          const bytes = Buffer.from(s.ciphertext);
          for (const m of ms) {
            const at = m.at % headerLength;
            if (m.how.kind === 'byte') bytes[at] = m.how.value;
            else if (m.how.kind === 'u16') bytes.writeUInt16BE(m.how.value, Math.min(at, bytes.length - 2));
            else bytes.writeUInt32BE(m.how.value, Math.min(at, bytes.length - 4));
          }
          readInPieces(bytes, cuts);
          tally.add(checkOpen(s, bytes, s.context));
        },
      ),
      { numRuns: 6000 },
    );
    t.diagnostic(`outcomes: ${tally}`);
    assert.ok(
      tally.get(ErrorCode.KEY_NOT_FOUND) > 0 && tally.get(ErrorCode.CIPHERTEXT_CORRUPT) > 0,
      `${tally}`,
    );
  });

  test('a different expected context is CONTEXT_MISMATCH, never success', () => {
    fc.assert(
      fc.property(sealedArb, fc.string({ minLength: 1, maxLength: 8 }), (s, value) => {
        const expected = { ...s.context, 'fuzz-extra-key': value };
        const r = guarded('openMessage', s.ciphertext, () => openMessage(s.ciphertext, unwrap, expected));
        assert.equal(r.ok, false);
        if (!r.ok) assert.equal(r.error.code, ErrorCode.CONTEXT_MISMATCH);
      }),
      { numRuns: 200 },
    );
  });
});

describe('fuzz: the work meter', () => {
  test('sees every primitive openMessage calls (else the work bounds would hold vacuously)', () => {
    const plaintext = prngBytes(7, 3 * CHUNK_SIZE + 7);
    const ciphertext = sealMessage(plaintext, {
      dek: DEK,
      wrapped: { keyId: KEY_ID, wrapAlgorithm: WRAP_ALG, wrappedDek: WRAPPED_DEK },
      context: { tenant: 'meter' },
      chunkSize: CHUNK_SIZE,
    });
    const header = parseHeader(ciphertext)!;
    const before = { ...work };
    const r = guarded('openMessage', ciphertext, () => openMessage(ciphertext, unwrap, { tenant: 'meter' }));
    assert.ok(r.ok && r.value.plaintext.equals(plaintext));
    // Four records (three full chunks and a 7-byte final one): each opened once, its tag not fed to update.
    assert.deepEqual(
      {
        hkdf: work.hkdf - before.hkdf,
        unwraps: work.unwraps - before.unwraps,
        hmacBytes: work.hmacBytes - before.hmacBytes,
        gcmOpens: work.gcmOpens - before.gcmOpens,
        gcmBytes: work.gcmBytes - before.gcmBytes,
      },
      {
        hkdf: 1,
        unwraps: 1,
        hmacBytes: header.authenticated.length,
        gcmOpens: 4,
        gcmBytes: plaintext.length,
      },
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// decodeContext

function checkDecode(bytes: Uint8Array): void {
  const r = guarded('decodeContext', bytes, () => decodeContext(bytes));
  if (!r.ok) {
    assert.equal(r.error.code, ErrorCode.CIPHERTEXT_MALFORMED, r.error.message);
    return;
  }
  // Whatever decodes must be canonical: re-encoding gives the same bytes.
  assert.deepEqual(encodeContext(r.value), Buffer.from(bytes));
}

describe('fuzz: decodeContext', () => {
  test('arbitrary bytes', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.uint8Array({ maxLength: 10 * 1024, size: 'medium' }), bulkBytes(10 * 1024)),
        (bytes) => checkDecode(bytes),
      ),
      { numRuns: 10_000 },
    );
  });

  test('arbitrary bytes at an offset inside a larger buffer (views, not copies)', () => {
    fc.assert(
      fc.property(bulkBytes(MAX_CONTEXT_BYTES + 64), fc.nat(64), (bytes, offset) => {
        const start = Math.min(offset, bytes.length);
        checkDecode(bytes.subarray(start));
      }),
      { numRuns: 2000 },
    );
  });

  test('valid encodings with random mutations', () => {
    fc.assert(
      fc.property(contextArb, mutationsArb, (context, mutations) => {
        checkDecode(applyAll(encodeContext(context), mutations));
      }),
      { numRuns: 10_000 },
    );
  });

  test('small pair counts followed by random pairs', () => {
    const pairArb = fc.tuple(
      fc.uint8Array({ maxLength: 8 }),
      fc.uint8Array({ maxLength: 8 }),
      interestingU16,
      interestingU16,
    );
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 70 }),
        fc.array(pairArb, { maxLength: 8 }),
        fc.boolean(),
        (count, pairs, honest) => {
          const parts: Buffer[] = [Buffer.from([count >> 8, count & 0xff])];
          for (const [k, v, kl, vl] of pairs) {
            const kLen = Buffer.alloc(2);
            kLen.writeUInt16BE(honest ? k.length : kl);
            const vLen = Buffer.alloc(2);
            vLen.writeUInt16BE(honest ? v.length : vl);
            parts.push(kLen, Buffer.from(k), vLen, Buffer.from(v));
          }
          checkDecode(Buffer.concat(parts));
        },
      ),
      { numRuns: 10_000 },
    );
  });
});
