/**
 * Stream framing (PlaintextFramer, CiphertextReader), header parsing bounds and the canonical
 * context encoding. Pure functions only: no server, no pool.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import * as fc from 'fast-check';
import { CHUNK_OVERHEAD, openChunks } from '../../../src/crypto/chunk';
import {
  checkExpectedContext,
  decodeContext,
  type EncryptionContext,
  encodeContext,
  MAX_CONTEXT_BYTES,
  MAX_CONTEXT_PAIRS,
} from '../../../src/crypto/context';
import {
  buildHeader,
  COMMITMENT_BYTES,
  type Header,
  headerLayout,
  MAX_CHUNKS,
  MAX_KEY_ID_BYTES,
  MAX_WRAP_ALG_BYTES,
  MAX_WRAPPED_DEK_BYTES,
  MESSAGE_ID_BYTES,
  parseHeader,
  writeHeader,
} from '../../../src/crypto/format';
import { CiphertextReader, PlaintextFramer, type Segment } from '../../../src/crypto/framing';
import { deriveMessageKeys } from '../../../src/crypto/kdf';
import { sealMessage } from '../../../src/crypto/message';
import { utf8Text } from '../../../src/crypto/utf8';
import { ErrorCode, SealboxError } from '../../../src/errors';

function throwsCode(fn: () => unknown, code: ErrorCode, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof SealboxError, `expected a SealboxError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (message) assert.match(err.message, message);
    return true;
  });
}

function hex(text: string): Buffer {
  return Buffer.from(text.replace(/\s+/g, ''), 'hex');
}

/** A segment's buffer must own its whole ArrayBuffer, so the pool can transfer it to a worker. */
function assertOwnsMemory(data: Buffer): void {
  assert.equal(data.byteOffset, 0);
  assert.equal(data.byteLength, data.buffer.byteLength);
}

/** "first:bytes", with "!" appended for the final segment. */
function describeSegment(s: Segment): string {
  return `${s.firstIndex}:${s.data.length}${s.final ? '!' : ''}`;
}

/**
 * Feeds `pushes` (byte counts) to a framer, checking its invariants after every push.
 * Returns what each push emitted and the final segment, described.
 */
function runFramer(
  chunkSize: number,
  maxChunksPerSegment: number,
  pushes: readonly number[],
): { emitted: string[][]; final: string } {
  const framer = new PlaintextFramer(chunkSize, maxChunksPerSegment);
  const input = randomBytes(pushes.reduce((a, b) => a + b, 0));
  const out: Buffer[] = [];
  const emitted: string[][] = [];
  let pushed = 0;
  let nextIndex = 0;
  for (const length of pushes) {
    const segments = framer.push(input.subarray(pushed, pushed + length));
    pushed += length;
    for (const s of segments) {
      assert.equal(s.final, false, 'push never emits the final chunk');
      assert.equal(s.firstIndex, nextIndex, 'chunk indexes are consecutive');
      assert.ok(s.data.length > 0, 'no empty non-final segment');
      assert.equal(s.data.length % chunkSize, 0, 'segments hold whole chunks');
      const chunks = s.data.length / chunkSize;
      assert.ok(chunks <= maxChunksPerSegment, `${chunks} chunks exceed ${maxChunksPerSegment}`);
      assertOwnsMemory(s.data);
      nextIndex += chunks;
      out.push(s.data);
    }
    emitted.push(segments.map(describeSegment));
    assert.ok(framer.buffered <= chunkSize, `${framer.buffered} bytes buffered after a push`);
    if (pushed > 0) assert.ok(framer.buffered >= 1, 'at least one byte is held back for the final chunk');
    assert.equal(framer.buffered, pushed - nextIndex * chunkSize);
  }
  const last = framer.finish();
  assert.equal(last.final, true);
  assert.equal(last.firstIndex, nextIndex);
  if (pushed === 0) assert.equal(last.data.length, 0);
  else assert.ok(last.data.length >= 1 && last.data.length <= chunkSize);
  assertOwnsMemory(last.data);
  out.push(last.data);
  assert.ok(Buffer.concat(out).equals(input), 'segments reassemble the input');
  assert.throws(() => framer.push(Buffer.from('x')), /push after finish/);
  return { emitted, final: describeSegment(last) };
}

describe('PlaintextFramer', () => {
  const cases: ReadonlyArray<{
    name: string;
    chunkSize: number;
    maxChunks: number;
    pushes: number[];
    emitted: string[][];
    final: string;
  }> = [
    { name: 'empty message', chunkSize: 4, maxChunks: 8, pushes: [], emitted: [], final: '0:0!' },
    { name: 'one empty push', chunkSize: 4, maxChunks: 8, pushes: [0], emitted: [[]], final: '0:0!' },
    { name: 'one byte', chunkSize: 4, maxChunks: 8, pushes: [1], emitted: [[]], final: '0:1!' },
    { name: 'C − 1', chunkSize: 4, maxChunks: 8, pushes: [3], emitted: [[]], final: '0:3!' },
    { name: 'exactly C is held back', chunkSize: 4, maxChunks: 8, pushes: [4], emitted: [[]], final: '0:4!' },
    { name: 'C + 1', chunkSize: 4, maxChunks: 8, pushes: [5], emitted: [['0:4']], final: '1:1!' },
    {
      name: '2C keeps the last chunk',
      chunkSize: 4,
      maxChunks: 8,
      pushes: [8],
      emitted: [['0:4']],
      final: '1:4!',
    },
    { name: '3C + 1', chunkSize: 4, maxChunks: 8, pushes: [13], emitted: [['0:12']], final: '3:1!' },
    {
      name: 'byte by byte',
      chunkSize: 4,
      maxChunks: 8,
      pushes: [1, 1, 1, 1, 1, 1, 1, 1, 1],
      emitted: [[], [], [], [], ['0:4'], [], [], [], ['1:4']],
      final: '2:1!',
    },
    {
      name: 'segments capped at maxChunks',
      chunkSize: 4,
      maxChunks: 2,
      pushes: [20],
      emitted: [['0:8', '2:8']],
      final: '4:4!',
    },
    {
      name: 'one chunk per segment',
      chunkSize: 4,
      maxChunks: 1,
      pushes: [10],
      emitted: [['0:4', '1:4']],
      final: '2:2!',
    },
    {
      name: 'uneven pushes with empties',
      chunkSize: 4,
      maxChunks: 10,
      pushes: [3, 0, 2, 7, 0],
      emitted: [[], [], ['0:4'], ['1:4'], []],
      final: '2:4!',
    },
    {
      name: 'real chunk size, C + 1 then C − 1',
      chunkSize: 4096,
      maxChunks: 256,
      pushes: [4097, 4095],
      emitted: [['0:4096'], []],
      final: '1:4096!',
    },
    {
      name: 'real chunk size, 3C + 5 at once',
      chunkSize: 4096,
      maxChunks: 256,
      pushes: [3 * 4096 + 5],
      emitted: [['0:12288']],
      final: '3:5!',
    },
  ];

  for (const c of cases) {
    test(c.name, () => {
      assert.deepEqual(runFramer(c.chunkSize, c.maxChunks, c.pushes), { emitted: c.emitted, final: c.final });
    });
  }

  test('invariants hold for any pushes (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 64 }),
        fc.integer({ min: 1, max: 8 }),
        fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 30 }),
        (chunkSize, maxChunks, pushes) => {
          runFramer(chunkSize, maxChunks, pushes);
        },
      ),
      { numRuns: 300 },
    );
  });

  test('refuses to index past 2^32 chunks', () => {
    const framer = new PlaintextFramer(4, 8);
    // Reaching 2^32 chunks for real takes 16 GiB at this chunk size; start near the end instead.
    (framer as unknown as { nextIndex: number }).nextIndex = MAX_CHUNKS - 1;
    throwsCode(() => framer.push(Buffer.alloc(9)), ErrorCode.LIMIT_EXCEEDED, /2\^32/);
    const atLimit = new PlaintextFramer(4, 8);
    (atLimit as unknown as { nextIndex: number }).nextIndex = MAX_CHUNKS - 1;
    assert.deepEqual(atLimit.push(Buffer.alloc(3)), []);
    assert.equal(atLimit.finish().firstIndex, MAX_CHUNKS - 1, 'the last valid index is 2^32 − 1');
  });
});

const WRAPPED = { keyId: 'local:test/0123456789abcdef0123456789abcdef', wrapAlgorithm: 'A256KW' };

/** A sealed message, with what is needed to open it. */
function sealed(
  plaintextLength: number,
  chunkSize = 4096,
  context: EncryptionContext = { app: 'framing' },
): {
  plaintext: Buffer;
  ciphertext: Buffer;
  dek: Buffer;
  header: Header;
} {
  const plaintext = randomBytes(plaintextLength);
  const dek = randomBytes(32);
  const ciphertext = sealMessage(plaintext, {
    dek,
    wrapped: { ...WRAPPED, wrappedDek: randomBytes(40) },
    context,
    chunkSize,
  });
  const header = parseHeader(ciphertext);
  assert.ok(header);
  return { plaintext, ciphertext, dek, header };
}

/**
 * Feeds `ciphertext` to a reader cut at `cuts`, checking the reader's invariants; opens every
 * segment and returns the plaintext.
 */
function runReader(
  message: { ciphertext: Buffer; dek: Buffer; header: Header },
  cuts: readonly number[],
  chunksPerSegment: number,
): Buffer {
  const { ciphertext, header: expected } = message;
  const recordSize = expected.chunkSize + CHUNK_OVERHEAD;
  const asked: number[] = [];
  const reader = new CiphertextReader((size) => {
    asked.push(size);
    return chunksPerSegment;
  });
  const points = [...cuts.map((c) => Math.max(0, Math.min(ciphertext.length, c))), ciphertext.length].sort(
    (a, b) => a - b,
  );
  const segments: Segment[] = [];
  let header: Header | undefined;
  let from = 0;
  let segmentBytes = 0;
  for (const to of points) {
    const result = reader.push(ciphertext.subarray(from, to));
    from = to;
    if (to < expected.length) {
      assert.equal(result.header, undefined, 'no header before all its bytes arrived');
      assert.equal(result.segments.length, 0);
      assert.equal(reader.header, undefined);
      continue;
    }
    if (!header) {
      assert.ok(result.header, 'the push that completes the header returns it');
      header = result.header;
      assert.deepEqual(header, expected);
      assert.deepEqual(asked, [expected.chunkSize]);
    } else {
      assert.equal(result.header, undefined, 'the header is returned once');
    }
    for (const s of result.segments) {
      assert.equal(s.final, false);
      assert.equal(s.firstIndex, segmentBytes / recordSize, 'chunk indexes are consecutive');
      assert.ok(s.data.length > 0 && s.data.length % recordSize === 0, 'segments hold whole records');
      assert.ok(s.data.length / recordSize <= Math.max(1, chunksPerSegment));
      assertOwnsMemory(s.data);
      segmentBytes += s.data.length;
      segments.push(s);
    }
    const held = to - expected.length - segmentBytes;
    assert.ok(held <= recordSize, `${held} body bytes held after a push`);
    if (to > expected.length) assert.ok(held >= 1, 'the last record is held until the input ends');
  }
  const last = reader.finish();
  assert.equal(last.final, true);
  assert.equal(last.firstIndex, segmentBytes / recordSize);
  assert.ok(last.data.length >= CHUNK_OVERHEAD && last.data.length <= recordSize);
  segments.push(last);
  assert.ok(
    Buffer.concat(segments.map((s) => s.data)).equals(ciphertext.subarray(expected.length)),
    'segments reassemble the body',
  );

  const keys = deriveMessageKeys(message.dek, expected.messageId);
  const parts = segments.map((s) => {
    const opened = openChunks({
      key: keys.encryptionKey,
      messageId: expected.messageId,
      chunkSize: expected.chunkSize,
      ...s,
    });
    assert.ok(opened.ok, `segment at chunk ${s.firstIndex} opens`);
    return opened.plaintext;
  });
  return Buffer.concat(parts);
}

describe('CiphertextReader', () => {
  const C = 4096;
  const R = C + CHUNK_OVERHEAD;
  for (const length of [0, 1, C - 1, C, C + 1, 2 * C, 3 * C + 5]) {
    describe(`${length}-byte message`, () => {
      const message = sealed(length, C);
      const h = message.header.length;
      const splits: ReadonlyArray<{ name: string; cuts: number[]; perSegment: number }> = [
        { name: 'whole', cuts: [], perSegment: 256 },
        { name: 'whole, one chunk per segment', cuts: [], perSegment: 1 },
        { name: 'around the header end', cuts: [h - 1, h, h + 1], perSegment: 2 },
        {
          name: 'at record boundaries ± 1',
          cuts: [1, h, h + R - 1, h + R, h + R + 1, h + 2 * R, h + 3 * R - 1],
          perSegment: 256,
        },
        {
          name: 'byte by byte',
          cuts: Array.from({ length: message.ciphertext.length }, (_, i) => i),
          perSegment: 3,
        },
        { name: 'a zero from chunksPerSegment still makes progress', cuts: [h + 5], perSegment: 0 },
      ];
      for (const split of splits) {
        test(split.name, () => {
          const plaintext = runReader(message, split.cuts, split.perSegment);
          assert.ok(plaintext.equals(message.plaintext));
        });
      }
    });
  }

  test('any split of any message reassembles (property)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(4096, 8192),
        fc.integer({ min: 0, max: 40_000 }),
        fc.array(fc.nat(60_000), { maxLength: 20 }),
        fc.integer({ min: 0, max: 6 }),
        (chunkSize, length, cuts, perSegment) => {
          const message = sealed(length, chunkSize);
          assert.ok(runReader(message, cuts, perSegment).equals(message.plaintext));
        },
      ),
      { numRuns: 60 },
    );
  });

  describe('finish on an incomplete input', () => {
    const message = sealed(2 * C + 10, C);
    const h = message.header.length;
    const truncations: ReadonlyArray<{ name: string; bytes: number; why: RegExp }> = [
      { name: 'nothing', bytes: 0, why: /empty/ },
      { name: 'part of the magic', bytes: 2, why: /inside the header/ },
      { name: 'all but the last header byte', bytes: h - 1, why: /inside the header/ },
      { name: 'the header alone', bytes: h, why: /chunks are missing/ },
      { name: 'the header and 15 body bytes', bytes: h + 15, why: /chunks are missing/ },
      { name: 'one record and 15 bytes', bytes: h + R + 15, why: /after chunk 0/ },
    ];
    for (const t of truncations) {
      test(t.name, () => {
        const reader = new CiphertextReader(() => 1);
        reader.push(message.ciphertext.subarray(0, t.bytes));
        throwsCode(() => reader.finish(), ErrorCode.CIPHERTEXT_TRUNCATED, t.why);
      });
    }
  });

  test('a header claiming a 4 GiB chunk size is rejected as soon as the field arrives', () => {
    const bad = Buffer.from(sealed(10).ciphertext.subarray(0, 44));
    bad.writeUInt32BE(0xffffffff, 38);
    const reader = new CiphertextReader(() => 1);
    // Only the 44 bytes up to the field were pushed: the refusal cannot have waited for (or sized a
    // buffer by) the claimed chunk.
    throwsCode(() => reader.push(bad), ErrorCode.CIPHERTEXT_MALFORMED, /chunk size 4294967295/);
  });
});

test('writeHeader into a dirty buffer writes exactly the bytes buildHeader does, under alternating key ids', () => {
  const keys = deriveMessageKeys(randomBytes(32), randomBytes(MESSAGE_ID_BYTES));
  // Alternating ids and algorithms, one id not ASCII: each header encodes its own, at the right length.
  const variants = [
    { keyId: 'https://v.vault.azure.net/keys/a/1', wrapAlgorithm: 'RSA-OAEP-256' },
    { keyId: 'https://v.vault.azure.net/keys/ä/2', wrapAlgorithm: 'A256KW' },
    { keyId: 'https://v.vault.azure.net/keys/a/1', wrapAlgorithm: 'A256KW' },
  ];
  for (const [n, v] of [...variants, ...variants].entries()) {
    const fields = {
      messageId: randomBytes(MESSAGE_ID_BYTES),
      chunkSize: 65536,
      contextBytes: encodeContext({ row: String(n) }),
      wrappedDek: randomBytes(40 + n),
      ...v,
    };
    const built = buildHeader(fields, keys);
    const layout = headerLayout(fields);
    assert.equal(layout.size, built.length);
    const out = Buffer.alloc(layout.size + 7, 0xa5);
    assert.equal(writeHeader(fields, keys, out, layout), built.length);
    assert.deepEqual(out.subarray(0, built.length), built, `variant ${n}`);
    assert.ok(
      out.subarray(built.length).every((x) => x === 0xa5),
      'nothing written past the header',
    );
    const parsed = parseHeader(out);
    assert.equal(parsed?.keyId, v.keyId);
    assert.equal(parsed?.wrapAlgorithm, v.wrapAlgorithm);
  }
  assert.throws(() => writeHeader({ ...variantFields(), keyId: '' }, keys, Buffer.alloc(4096)), RangeError);
  assert.throws(() => writeHeader(variantFields(), keys, Buffer.alloc(10)), /too small/);
});

function variantFields() {
  return {
    messageId: randomBytes(MESSAGE_ID_BYTES),
    chunkSize: 65536,
    contextBytes: encodeContext({}),
    keyId: 'k',
    wrapAlgorithm: 'A256KW',
    wrappedDek: randomBytes(40),
  };
}

/** Offsets of the variable-position fields of a header built by `buildHeader`. */
function layout(header: Buffer): { keyIdLength: number; algLength: number; wrappedLength: number } {
  const contextLength = header.readUInt16BE(42);
  const keyIdLength = 44 + contextLength + COMMITMENT_BYTES;
  const algLength = keyIdLength + 2 + header.readUInt16BE(keyIdLength);
  const wrappedLength = algLength + 1 + header.readUInt8(algLength);
  return { keyIdLength, algLength, wrappedLength };
}

function testHeader(
  fields: Partial<{
    context: EncryptionContext;
    keyId: string;
    wrapAlgorithm: string;
    wrappedDek: Buffer;
  }> = {},
): Buffer {
  const messageId = randomBytes(MESSAGE_ID_BYTES);
  return buildHeader(
    {
      messageId,
      chunkSize: 65536,
      contextBytes: encodeContext(fields.context ?? { tenant: 'acme', purpose: 'unit' }),
      keyId: fields.keyId ?? WRAPPED.keyId,
      wrapAlgorithm: fields.wrapAlgorithm ?? WRAPPED.wrapAlgorithm,
      wrappedDek: fields.wrappedDek ?? randomBytes(40),
    },
    deriveMessageKeys(randomBytes(32), messageId),
  );
}

describe('parseHeader', () => {
  const variants: ReadonlyArray<{ name: string; bytes: Buffer }> = [
    { name: 'typical', bytes: testHeader() },
    { name: 'empty context', bytes: testHeader({ context: {} }) },
    {
      name: 'largest fields',
      bytes: testHeader({
        context: { k: 'v'.repeat(MAX_CONTEXT_BYTES - 7) },
        keyId: `local:test/${'é'.repeat(506)}x`, // 11 + 1012 + 1 = 1024 bytes
        wrapAlgorithm: 'A'.repeat(MAX_WRAP_ALG_BYTES),
        wrappedDek: randomBytes(MAX_WRAPPED_DEK_BYTES),
      }),
    },
    {
      name: 'smallest fields',
      bytes: testHeader({ context: {}, keyId: 'x', wrapAlgorithm: 'A', wrappedDek: randomBytes(1) }),
    },
  ];

  for (const v of variants) {
    test(`${v.name}: undefined for every strict prefix, the header for the whole`, () => {
      for (let n = 0; n < v.bytes.length; n++) {
        assert.equal(parseHeader(v.bytes.subarray(0, n)), undefined, `prefix of ${n} bytes`);
      }
      const parsed = parseHeader(v.bytes);
      assert.ok(parsed);
      assert.equal(parsed.length, v.bytes.length);
      assert.ok(parsed.authenticated.equals(v.bytes.subarray(0, v.bytes.length - 32)));
      // Bytes after the header (the body) do not change the result.
      assert.deepEqual(parseHeader(Buffer.concat([v.bytes, randomBytes(100)])), parsed);
    });
  }

  test('the parsed fields are the built ones', () => {
    const wrappedDek = randomBytes(40);
    const bytes = testHeader({ context: { b: '2', a: '1' }, keyId: 'local:test/ü', wrappedDek });
    const parsed = parseHeader(bytes)!;
    assert.equal(parsed.chunkSize, 65536);
    assert.deepEqual({ ...parsed.context }, { a: '1', b: '2' });
    assert.equal(parsed.keyId, 'local:test/ü');
    assert.equal(parsed.wrapAlgorithm, 'A256KW');
    assert.ok(parsed.wrappedDek.equals(wrappedDek));
    assert.ok(parsed.messageId.equals(bytes.subarray(6, 38)));
  });

  /** A mutation that applies `write` and returns `upTo`, the prefix length that holds the edited field. */
  const edit =
    (write: (b: Buffer) => unknown, upTo: number) =>
    (b: Buffer): number => {
      write(b);
      return upTo;
    };

  /**
   * Each mutation makes one field invalid. `upTo` is the shortest prefix that holds the bad field:
   * the parser must throw there, not ask for more bytes.
   */
  const mutations: ReadonlyArray<{
    name: string;
    mutate: (b: Buffer) => number;
    why?: RegExp;
  }> = [
    { name: 'bad magic', mutate: edit((b) => b.write('X', 0, 'latin1'), 1), why: /magic/ },
    { name: 'bad third magic byte', mutate: edit((b) => b.write('Z', 2, 'latin1'), 3), why: /magic/ },
    { name: 'format version 2', mutate: edit((b) => b.writeUInt8(2, 3), 4), why: /version 2/ },
    { name: 'format version 0', mutate: edit((b) => b.writeUInt8(0, 3), 4), why: /version 0/ },
    { name: 'unknown suite', mutate: edit((b) => b.writeUInt16BE(2, 4), 6), why: /suite/ },
    { name: '4 GiB chunk size', mutate: edit((b) => b.writeUInt32BE(0xffffffff, 38), 44), why: /chunk size/ },
    { name: 'chunk size 0', mutate: edit((b) => b.writeUInt32BE(0, 38), 44), why: /chunk size/ },
    { name: 'chunk size 4095', mutate: edit((b) => b.writeUInt32BE(4095, 38), 44), why: /chunk size/ },
    {
      name: 'chunk size 4 MiB + 1',
      mutate: edit((b) => b.writeUInt32BE(4 * 1024 * 1024 + 1, 38), 44),
      why: /chunk size/,
    },
    { name: 'context length 0', mutate: edit((b) => b.writeUInt16BE(0, 42), 44), why: /context length/ },
    { name: 'context length 1', mutate: edit((b) => b.writeUInt16BE(1, 42), 44), why: /context length/ },
    {
      name: 'context length 8193',
      mutate: edit((b) => b.writeUInt16BE(MAX_CONTEXT_BYTES + 1, 42), 44),
      why: /context length/,
    },
    {
      name: '60 000-byte key id',
      mutate: (b) => {
        const at = layout(b).keyIdLength;
        b.writeUInt16BE(60_000, at);
        return at + 2;
      },
      why: /key id length 60000/,
    },
    {
      name: '1025-byte key id',
      mutate: (b) => {
        const at = layout(b).keyIdLength;
        b.writeUInt16BE(MAX_KEY_ID_BYTES + 1, at);
        return at + 2;
      },
      why: /key id length/,
    },
    {
      name: 'empty key id',
      mutate: (b) => {
        const at = layout(b).keyIdLength;
        b.writeUInt16BE(0, at);
        return at + 2;
      },
      why: /key id length/,
    },
    {
      name: 'empty wrap algorithm',
      mutate: (b) => {
        const at = layout(b).algLength;
        b.writeUInt8(0, at);
        return at + 1;
      },
      why: /wrap algorithm length/,
    },
    {
      name: '33-byte wrap algorithm',
      mutate: (b) => {
        const at = layout(b).algLength;
        b.writeUInt8(MAX_WRAP_ALG_BYTES + 1, at);
        return at + 1;
      },
      why: /wrap algorithm length/,
    },
    {
      name: 'empty wrapped DEK',
      mutate: (b) => {
        const at = layout(b).wrappedLength;
        b.writeUInt16BE(0, at);
        return at + 2;
      },
      why: /wrapped DEK length/,
    },
    {
      name: '65535-byte wrapped DEK',
      mutate: (b) => {
        const at = layout(b).wrappedLength;
        b.writeUInt16BE(0xffff, at);
        return at + 2;
      },
      why: /wrapped DEK length/,
    },
    {
      name: 'key id not UTF-8',
      mutate: (b) => {
        b[layout(b).keyIdLength + 2] = 0xff;
        return b.length;
      },
      why: /UTF-8/,
    },
    {
      name: 'wrap algorithm with a space',
      mutate: (b) => {
        b[layout(b).algLength + 1] = 0x20;
        return b.length;
      },
      why: /algorithm name/,
    },
    {
      name: 'context pair count beyond its bytes',
      mutate: (b) => {
        b.writeUInt16BE(3, 44);
        return b.length;
      },
      why: /context/,
    },
  ];

  for (const m of mutations) {
    test(`${m.name} is CIPHERTEXT_MALFORMED`, () => {
      const bytes = Buffer.from(testHeader());
      const upTo = m.mutate(bytes);
      // Rejected from the bytes up to the bad field alone (the prefix throws the same code), so
      // nothing sized by the bad length is read, allocated or awaited. No clock: speed is bench's.
      throwsCode(() => parseHeader(bytes.subarray(0, upTo)), ErrorCode.CIPHERTEXT_MALFORMED, m.why);
      throwsCode(() => parseHeader(bytes), ErrorCode.CIPHERTEXT_MALFORMED, m.why);
    });
  }
});

describe('parseHeader options (DecryptBatch: views, and fields shared with the previous item)', () => {
  /** Every field of a header as plain values, to compare two parses. */
  const plain = (h: Header) => ({
    ...h,
    context: { ...h.context },
    messageId: Buffer.from(h.messageId),
    commitment: Buffer.from(h.commitment),
    wrappedDek: Buffer.from(h.wrappedDek),
    tag: Buffer.from(h.tag),
    authenticated: Buffer.from(h.authenticated),
  });
  const sharesMemory = (a: Buffer, b: Buffer) => a.buffer === b.buffer;

  test('views: the same fields as copies, in the parsed bytes', () => {
    const bytes = testHeader();
    const copied = parseHeader(bytes)!;
    const viewed = parseHeader(bytes, { views: true })!;
    assert.deepEqual(plain(viewed), plain(copied));
    for (const field of ['messageId', 'commitment', 'wrappedDek', 'tag', 'authenticated'] as const) {
      assert.ok(sharesMemory(viewed[field], bytes), `${field} is a view`);
      assert.ok(!sharesMemory(copied[field], bytes), `${field} is a copy by default`);
    }
  });

  test('previous: equal context, key id and algorithm bytes reuse its values; the rest is parsed', () => {
    const first = parseHeader(testHeader({ context: { row: '1' } }), { views: true })!;
    const bytes = testHeader({ context: { row: '1' } });
    const second = parseHeader(bytes, { views: true, previous: first })!;
    assert.equal(second.context, first.context, 'the same decoded context object');
    assert.equal(second.keyId, first.keyId);
    assert.deepEqual(plain(second), plain(parseHeader(bytes)!));
    assert.ok(!second.messageId.equals(first.messageId));
  });

  // Every field that differs from the previous header's, by as little as one byte or in length
  // alone, is decoded from this header's own bytes.
  const differences: ReadonlyArray<{ name: string; fields: Parameters<typeof testHeader>[0] }> = [
    { name: 'a context value one byte apart', fields: { context: { row: '2' } } },
    { name: 'a longer context', fields: { context: { row: '1', x: '' } } },
    { name: 'an empty context', fields: { context: {} } },
    {
      name: 'a key id one byte apart',
      fields: { context: { row: '1' }, keyId: `${WRAPPED.keyId.slice(0, -1)}X` },
    },
    { name: 'a key id one byte longer', fields: { context: { row: '1' }, keyId: `${WRAPPED.keyId}0` } },
    { name: 'another wrap algorithm', fields: { context: { row: '1' }, wrapAlgorithm: 'RSA-OAEP-256' } },
  ];
  for (const d of differences) {
    test(`previous: ${d.name} is decoded, not reused`, () => {
      const first = parseHeader(testHeader({ context: { row: '1' } }), { views: true })!;
      const bytes = testHeader(d.fields);
      const second = parseHeader(bytes, { views: true, previous: first })!;
      assert.deepEqual(plain(second), plain(parseHeader(bytes)!));
    });
  }

  test('previous: a malformed field is still rejected', () => {
    const first = parseHeader(testHeader(), { views: true })!;
    // Fields edited in place after the header was built (parsing comes before the tag is checked).
    const bytes = testHeader({ wrapAlgorithm: 'RSA_OAEP' });
    bytes.write('RSA OAEP', bytes.indexOf('RSA_OAEP'), 'latin1');
    throwsCode(() => parseHeader(bytes, { previous: first }), ErrorCode.CIPHERTEXT_MALFORMED, /algorithm/);
    const bad = testHeader({ keyId: 'local:test/k' });
    bad[bad.indexOf('local:test/k') + 11] = 0xff;
    throwsCode(() => parseHeader(bad, { previous: first }), ErrorCode.CIPHERTEXT_MALFORMED, /UTF-8/);
  });

  test('property: with any previous header, the result equals a plain parse', () => {
    const text = fc.string({ unit: 'binary', minLength: 1, maxLength: 12 });
    const fields = fc.record({
      context: fc.dictionary(text, fc.string({ unit: 'binary', maxLength: 8 }), { maxKeys: 3 }),
      keyId: fc.constantFrom('local:test/1', 'local:test/2', 'local:tést/1', 'x'),
      wrapAlgorithm: fc.constantFrom('A256KW', 'RSA-OAEP-256', 'B256KW'),
    });
    fc.assert(
      fc.property(fields, fields, (a, b) => {
        const first = parseHeader(testHeader(a), { views: true })!;
        const bytes = testHeader(b);
        const second = parseHeader(bytes, { views: true, previous: first })!;
        assert.deepEqual(plain(second), plain(parseHeader(bytes)!));
      }),
      { numRuns: 300 },
    );
  });
});

describe('utf8Text', () => {
  const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  const expected = (b: Buffer): string | undefined => {
    try {
      return strict.decode(b);
    } catch {
      return undefined;
    }
  };

  test('agrees with a strict TextDecoder on any bytes, at any offsets', () => {
    // Bytes biased to the ranges where UTF-8 goes wrong: continuation bytes, lead bytes, ASCII.
    const byte = fc.oneof(
      fc.integer({ min: 0, max: 0x7f }),
      fc.integer({ min: 0x80, max: 0xbf }),
      fc.integer({ min: 0xc0, max: 0xff }),
    );
    fc.assert(
      fc.property(fc.array(byte, { maxLength: 24 }), fc.nat(4), fc.nat(4), (values, before, after) => {
        const whole = Buffer.concat([
          Buffer.alloc(before, 0xe2),
          Buffer.from(values),
          Buffer.alloc(after, 0x80),
        ]);
        const end = before + values.length;
        assert.equal(utf8Text(whole, before, end), expected(whole.subarray(before, end)));
      }),
      { numRuns: 2000 },
    );
  });

  const cases: ReadonlyArray<{ name: string; hex: string; text: string | undefined }> = [
    { name: 'ASCII', hex: '6b65792d31', text: 'key-1' },
    { name: 'a BOM, kept', hex: 'efbbbf61', text: '\uFEFFa' },
    { name: 'a two-byte character', hex: 'c3a9', text: 'é' },
    { name: 'a four-byte character', hex: 'f09f9491', text: '🔑' },
    { name: 'an overlong NUL', hex: 'c080', text: undefined },
    { name: 'an encoded surrogate', hex: 'eda080', text: undefined },
    { name: 'a cut sequence', hex: '61e282', text: undefined },
    { name: 'a lone continuation byte', hex: '80', text: undefined },
    { name: 'beyond U+10FFFF', hex: 'f4908080', text: undefined },
  ];
  for (const c of cases) {
    test(c.name, () => {
      const b = Buffer.from(c.hex, 'hex');
      assert.equal(utf8Text(b, 0, b.length), c.text);
    });
  }
});

describe('encodeContext', () => {
  const encodings: ReadonlyArray<{ name: string; context: EncryptionContext; bytes: string }> = [
    { name: 'empty', context: {}, bytes: '0000' },
    { name: 'one pair', context: { a: 'b' }, bytes: '0001 0001 61 0001 62' },
    { name: 'empty value', context: { k: '' }, bytes: '0001 0001 6b 0000' },
    { name: 'sorted by key', context: { b: '2', a: '1' }, bytes: '0002 0001 61 0001 31 0001 62 0001 32' },
    { name: 'a prefix sorts first', context: { ab: '', a: '' }, bytes: '0002 0001 61 0000 0002 6162 0000' },
    {
      // UTF-16 order puts U+1F600 (D83D DE00) before U+FF61; UTF-8 byte order puts EF BD A1 first.
      name: 'sorted by UTF-8 bytes, not UTF-16 units',
      context: { '\u{1F600}': '', '\uFF61': '' },
      bytes: '0002 0003 efbda1 0000 0004 f09f9880 0000',
    },
    {
      name: 'uppercase before lowercase',
      context: { a: '', B: '' },
      bytes: '0002 0001 42 0000 0001 61 0000',
    },
  ];
  for (const e of encodings) {
    test(`canonical encoding: ${e.name}`, () => {
      assert.equal(encodeContext(e.context).toString('hex'), hex(e.bytes).toString('hex'));
      assert.deepEqual({ ...decodeContext(encodeContext(e.context)) }, { ...e.context });
    });
  }

  test('is independent of insertion order and round-trips (property)', () => {
    fc.assert(
      fc.property(
        fc.dictionary(
          fc.string({ unit: 'binary', minLength: 1, maxLength: 8 }),
          fc.string({ unit: 'binary', maxLength: 12 }),
          {
            maxKeys: 20,
          },
        ),
        fc.infiniteStream(fc.nat()),
        (context, randoms) => {
          const entries = Object.entries(context);
          const shuffled = entries
            .map((e) => [randoms.next().value as number, e] as const)
            .sort((x, y) => x[0] - y[0])
            .map(([, e]) => e);
          const a = encodeContext(Object.fromEntries(entries));
          const b = encodeContext(Object.fromEntries(shuffled));
          assert.ok(a.equals(b));
          assert.deepEqual({ ...decodeContext(a) }, { ...context });
        },
      ),
      { numRuns: 200 },
    );
  });

  const pairs = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
  // 2 (count) + 2 + 1 (key "k") + 2 + value bytes.
  const valueBytesAtLimit = MAX_CONTEXT_BYTES - 7;

  test('accepts the limits exactly', () => {
    assert.equal(decodeContext(encodeContext(pairs(MAX_CONTEXT_PAIRS))).k63, 'v');
    assert.equal(encodeContext({ k: 'v'.repeat(valueBytesAtLimit) }).length, MAX_CONTEXT_BYTES);
  });

  const rejects: ReadonlyArray<{ name: string; context: EncryptionContext; why: RegExp }> = [
    { name: '65 pairs', context: pairs(MAX_CONTEXT_PAIRS + 1), why: /65 pairs/ },
    { name: 'one byte over 8 KiB', context: { k: 'v'.repeat(valueBytesAtLimit + 1) }, why: /8193 bytes/ },
    // Counted in UTF-8 bytes, not characters: 4094 "é" are 8188 bytes.
    { name: 'over 8 KiB in multibyte characters', context: { k: 'é'.repeat(4094) }, why: /8195 bytes/ },
    { name: 'an empty key', context: { '': 'v' }, why: /empty/ },
    { name: 'a lone high surrogate in a key', context: { 'a\uD800': 'v' }, why: /valid Unicode/ },
    { name: 'a lone low surrogate in a value', context: { k: 'x\uDC00y' }, why: /valid Unicode/ },
    { name: 'a reversed surrogate pair', context: { k: '\uDE00\uD83D' }, why: /valid Unicode/ },
    { name: 'a non-string value', context: { k: 7 as unknown as string }, why: /valid Unicode/ },
  ];
  for (const r of rejects) {
    test(`rejects ${r.name} with CONTEXT_INVALID`, () => {
      throwsCode(() => encodeContext(r.context), ErrorCode.CONTEXT_INVALID, r.why);
    });
  }
});

describe('decodeContext', () => {
  const rejects: ReadonlyArray<{ name: string; bytes: Buffer; why: RegExp }> = [
    { name: 'no bytes', bytes: hex(''), why: /out of bounds/ },
    { name: 'one byte', bytes: hex('00'), why: /out of bounds/ },
    { name: 'over 8 KiB', bytes: Buffer.alloc(MAX_CONTEXT_BYTES + 1), why: /out of bounds/ },
    { name: '65 pairs claimed', bytes: hex('0041'), why: /65 pairs/ },
    { name: 'unsorted keys', bytes: hex('0002 0001 62 0000 0001 61 0000'), why: /ascending/ },
    {
      name: 'longer key before its prefix',
      bytes: hex('0002 0002 6162 0000 0001 61 0000'),
      why: /ascending/,
    },
    { name: 'duplicate keys', bytes: hex('0002 0001 61 0000 0001 61 0001 62'), why: /ascending/ },
    { name: 'an empty key', bytes: hex('0001 0000 0000'), why: /empty key/ },
    { name: 'invalid UTF-8 in a key', bytes: hex('0001 0001 ff 0000'), why: /UTF-8/ },
    { name: 'a cut UTF-8 sequence in a value', bytes: hex('0001 0001 61 0001 c3'), why: /UTF-8/ },
    { name: 'an overlong encoding', bytes: hex('0001 0002 c080 0000'), why: /UTF-8/ },
    { name: 'an encoded surrogate', bytes: hex('0001 0001 61 0003 eda080'), why: /UTF-8/ },
    { name: 'a stray byte after no pairs', bytes: hex('0000 00'), why: /1 stray bytes/ },
    { name: 'stray bytes after the last pair', bytes: hex('0001 0001 61 0000 ffff'), why: /2 stray bytes/ },
    { name: 'a key running past the end', bytes: hex('0001 0005 61'), why: /past the end/ },
    { name: 'a missing value length', bytes: hex('0001 0001 61'), why: /past the end/ },
    { name: 'fewer pairs than counted', bytes: hex('0002 0001 61 0000'), why: /past the end/ },
  ];
  for (const r of rejects) {
    test(`rejects ${r.name} with CIPHERTEXT_MALFORMED`, () => {
      throwsCode(() => decodeContext(r.bytes), ErrorCode.CIPHERTEXT_MALFORMED, r.why);
    });
  }

  test('reads a subarray of a larger buffer', () => {
    const whole = Buffer.concat([hex('ffff'), encodeContext({ a: '1' }), hex('ffff')]);
    assert.deepEqual({ ...decodeContext(whole.subarray(2, whole.length - 2)) }, { a: '1' });
  });
});

describe('checkExpectedContext', () => {
  const actual = { tenant: 'acme', purpose: 'backup' };
  const cases: ReadonlyArray<{ name: string; expected: EncryptionContext; ok: boolean }> = [
    { name: 'nothing expected', expected: {}, ok: true },
    { name: 'a subset', expected: { tenant: 'acme' }, ok: true },
    { name: 'everything', expected: { ...actual }, ok: true },
    { name: 'a different value', expected: { tenant: 'evil' }, ok: false },
    { name: 'a missing key', expected: { region: 'eu' }, ok: false },
    { name: 'a key differing in case', expected: { Tenant: 'acme' }, ok: false },
    { name: 'an inherited name', expected: { toString: 'x' }, ok: false },
  ];
  for (const c of cases) {
    test(c.name, () => {
      if (c.ok) checkExpectedContext(actual, c.expected);
      else throwsCode(() => checkExpectedContext(actual, c.expected), ErrorCode.CONTEXT_MISMATCH);
    });
  }

  test('names the key, never the value', () => {
    assert.throws(
      () => checkExpectedContext(actual, { tenant: 'guess-value-123' }),
      (err: Error) => /tenant/.test(err.message) && !/guess-value-123|acme/.test(err.message),
    );
  });
});

describe('views instead of copies (segments that need not own their memory)', () => {
  /** Pushes each length as a buffer of its own; returns the segments and the input. */
  function frame(chunkSize: number, maxChunks: number, pushes: readonly number[]) {
    const framer = new PlaintextFramer(chunkSize, maxChunks, () => false);
    const inputs = pushes.map((n) => randomBytes(n));
    const segments = inputs.flatMap((b) => framer.push(b));
    segments.push(framer.finish());
    return { segments, inputs };
  }
  const isView = (data: Buffer, inputs: readonly Buffer[]) => inputs.some((b) => b.buffer === data.buffer);

  test('chunk-aligned pushes: no byte is copied, the held-back chunk included', () => {
    const { segments, inputs } = frame(64, 16, [1024, 1024, 1024, 1024]);
    for (const s of segments) assert.ok(isView(s.data, inputs), `segment at ${s.firstIndex} is a view`);
    assert.ok(Buffer.concat(segments.map((s) => s.data)).equals(Buffer.concat(inputs)));
    // 15 chunks, then per further push the held-back chunk alone and 15 more, then the final one.
    assert.deepEqual(segments.map(describeSegment), [
      '0:960',
      '15:64',
      '16:960',
      '31:64',
      '32:960',
      '47:64',
      '48:960',
      '63:64!',
    ]);
  });

  test('any pushes: only a chunk straddling two pushed buffers is copied (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 64 }),
        fc.integer({ min: 1, max: 8 }),
        fc.array(fc.integer({ min: 0, max: 300 }), { maxLength: 30 }),
        (chunkSize, maxChunks, pushes) => {
          const { segments, inputs } = frame(chunkSize, maxChunks, pushes);
          for (const s of segments) {
            if (!isView(s.data, inputs))
              assert.ok(s.data.length <= chunkSize, 'a copy holds one chunk at most');
          }
          assert.ok(Buffer.concat(segments.map((s) => s.data)).equals(Buffer.concat(inputs)));
        },
      ),
      { numRuns: 300 },
    );
  });

  test('CiphertextReader: any split reassembles and opens; copies hold one record at most (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 40_000 }),
        fc.array(fc.nat(60_000), { maxLength: 20 }),
        fc.integer({ min: 1, max: 6 }),
        (length, cuts, perSegment) => {
          const message = sealed(length, 4096);
          const bounds = [...new Set([0, ...cuts.filter((c) => c < message.ciphertext.length)])].sort(
            (a, b) => a - b,
          );
          const inputs = bounds.map((from, i) =>
            Buffer.from(message.ciphertext.subarray(from, bounds[i + 1] ?? message.ciphertext.length)),
          );
          const reader = new CiphertextReader(
            () => perSegment,
            () => false,
          );
          const segments = inputs.flatMap((b) => reader.push(b).segments);
          segments.push(reader.finish());
          for (const s of segments) {
            if (!isView(s.data, inputs)) assert.ok(s.data.length <= 4096 + CHUNK_OVERHEAD);
          }
          const keys = deriveMessageKeys(message.dek, reader.header!.messageId);
          const plain = segments.map((s) => {
            const opened = openChunks({
              key: keys.encryptionKey,
              messageId: reader.header!.messageId,
              chunkSize: 4096,
              ...s,
            });
            assert.ok(opened.ok);
            return opened.plaintext;
          });
          assert.ok(Buffer.concat(plain).equals(message.plaintext));
        },
      ),
      { numRuns: 60 },
    );
  });
});

describe('reuseCopies and holds (the stream handlers of src/server/envelope.ts)', () => {
  /** Random cut points of `total` bytes: many small pieces and a few large ones. */
  const cutsArb = (total: number) =>
    fc
      .array(fc.integer({ min: 0, max: total }), { maxLength: 40 })
      .map((cuts) => [...cuts, total].sort((a, b) => a - b));

  test('PlaintextFramer: consuming each push before the next, reused straddle copies reassemble the input', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 40_000 }).chain((n) => fc.tuple(fc.constant(n), cutsArb(n))),
        ([n, cuts]) => {
          const input = randomBytes(n);
          const framer = new PlaintextFramer(4096, 3, () => false, true);
          const out: Buffer[] = [];
          const copies = new Set<ArrayBufferLike>();
          let from = 0;
          for (const to of cuts) {
            const piece = input.subarray(from, to);
            from = to;
            for (const s of framer.push(piece)) {
              // Consumed now (as the handler seals it before the next push): copied out.
              out.push(Buffer.from(s.data));
              if (s.data.buffer !== input.buffer) copies.add(s.data.buffer);
            }
            // What is held back is a view of the pushed input (copies only go out as segments).
            assert.equal(framer.holds(input.buffer), framer.buffered > 0);
          }
          out.push(Buffer.from(framer.finish().data));
          assert.ok(Buffer.concat(out).equals(input));
          assert.ok(copies.size <= 1, 'every straddling chunk was copied into the same reused buffer');
        },
      ),
      { numRuns: 200 },
    );
  });

  test('CiphertextReader: consuming each push before the next, reused straddle copies open to the plaintext', () => {
    const message = sealed(30_000);
    fc.assert(
      fc.property(cutsArb(message.ciphertext.length), (cuts) => {
        const reader = new CiphertextReader(
          () => 2,
          () => false,
          true,
        );
        let keys: ReturnType<typeof deriveMessageKeys> | undefined;
        const out: Buffer[] = [];
        const copies = new Set<ArrayBufferLike>();
        const open = (s: Segment) => {
          const result = openChunks({
            key: keys!.encryptionKey,
            messageId: message.header.messageId,
            chunkSize: message.header.chunkSize,
            firstIndex: s.firstIndex,
            final: s.final,
            data: s.data,
          });
          assert.ok(result.ok, `chunk ${s.firstIndex} opens`);
          out.push(result.plaintext);
          if (s.data.buffer !== message.ciphertext.buffer) copies.add(s.data.buffer);
        };
        let from = 0;
        for (const to of cuts) {
          const { header, segments } = reader.push(message.ciphertext.subarray(from, to));
          from = to;
          if (header) keys = deriveMessageKeys(message.dek, header.messageId);
          for (const s of segments) open(s);
        }
        open(reader.finish());
        assert.ok(Buffer.concat(out).equals(message.plaintext));
        assert.ok(copies.size <= 1, 'every straddling record was copied into the same reused buffer');
      }),
      { numRuns: 100 },
    );
  });

  test('without reuseCopies, every straddling copy is a buffer of its own (the default, and unary)', () => {
    const input = randomBytes(5 * 4096);
    const framer = new PlaintextFramer(4096, 1, () => false);
    const copies = new Set<ArrayBufferLike>();
    for (let at = 0; at < input.length; at += 3000) {
      for (const s of framer.push(input.subarray(at, at + 3000))) {
        if (s.data.buffer !== input.buffer) copies.add(s.data.buffer);
      }
    }
    assert.ok(copies.size >= 3);
  });
});
