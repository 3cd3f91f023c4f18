/**
 * Tampering suite for the one-shot format (sealMessage/openMessage): every modified ciphertext must be
 * rejected with a SealboxError — never opened. Bit flips, truncation at every length, chunk drops,
 * duplicates, reorders and splices, header field edits and appended bytes, then a fast-check property.
 *
 * The unwrap callback models a real KEK rather than handing back the DEK: it AES-key-unwraps the
 * header's wrapped DEK under a fixed KEK and insists on the expected key id and wrap algorithm, so
 * header edits are caught the way the running system catches them. A second, lenient unwrap ignores
 * key id and algorithm, so the header tag alone must catch edits of those fields.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import fc from 'fast-check';
import { CHUNK_OVERHEAD, openChunks, sealChunks } from '../../../src/crypto/chunk';
import { encodeContext } from '../../../src/crypto/context';
import { type Header, MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, parseHeader } from '../../../src/crypto/format';
import { aesKeyUnwrap, aesKeyWrap } from '../../../src/crypto/keywrap';
import { openMessage, sealMessage } from '../../../src/crypto/message';
import { ErrorCode, SealboxError } from '../../../src/errors';

const { CIPHERTEXT_CORRUPT, CIPHERTEXT_MALFORMED, CIPHERTEXT_TRUNCATED, KEY_NOT_FOUND } = ErrorCode;

const KEK = Buffer.alloc(32, 0x4b);
const DEK = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
const OTHER_DEK = Buffer.from(Array.from({ length: 32 }, (_, i) => 0xff - i));
const KEY_ID = `local:t/${'0'.repeat(32)}`;
const WRAP_ALGORITHM = 'A256KW';
const CHUNK = MIN_CHUNK_SIZE;
const RECORD = CHUNK + CHUNK_OVERHEAD;
const CONTEXT = { tenant: 'acme', purpose: 'tamper-suite' };

type Unwrap = (header: Header) => Uint8Array;

/** Models a real KEK: unwraps for one key id and algorithm only, and fails on a modified wrapped DEK. */
const strictUnwrap: Unwrap = (header) => {
  if (header.keyId !== KEY_ID || header.wrapAlgorithm !== WRAP_ALGORITHM) {
    throw new SealboxError(KEY_NOT_FOUND, `no key owns ${header.keyId} (${header.wrapAlgorithm})`);
  }
  return kekUnwrap(header);
};

/** Ignores key id and wrap algorithm, so only the header tag can notice that they changed. */
const lenientUnwrap: Unwrap = (header) => kekUnwrap(header);

function kekUnwrap(header: Header): Uint8Array {
  const dek = aesKeyUnwrap(KEK, header.wrappedDek);
  if (!dek) throw new SealboxError(CIPHERTEXT_CORRUPT, 'wrapped DEK failed its key-wrap integrity check');
  return dek;
}

function seal(plaintext: Uint8Array, dek: Buffer = DEK): Buffer {
  return sealMessage(plaintext, {
    dek,
    wrapped: { keyId: KEY_ID, wrapAlgorithm: WRAP_ALGORITHM, wrappedDek: aesKeyWrap(KEK, dek) },
    context: CONTEXT,
    chunkSize: CHUNK,
  });
}

/** Deterministic filler, so a failure reproduces. */
function pattern(length: number, seed = 1): Buffer {
  const out = Buffer.alloc(length);
  let x = seed;
  for (let i = 0; i < length; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Three full chunks and a partial final one. */
const PARTIAL_PLAINTEXT = pattern(3 * CHUNK + 1000, 7);
/** Exactly four full chunks: every record has the same size, so only the AAD tells them apart. */
const WHOLE_PLAINTEXT = pattern(4 * CHUNK, 11);

/**
 * Opens `ciphertext` and asserts it is rejected with a SealboxError whose code is one of `codes`
 * (and whose message matches `message`, if given). Returns the error.
 */
function assertRejected(
  ciphertext: Buffer,
  codes: ErrorCode | readonly ErrorCode[],
  what: string,
  options: { message?: RegExp; unwrap?: Unwrap } = {},
): SealboxError {
  const allowed: readonly ErrorCode[] = typeof codes === 'string' ? [codes] : codes;
  let opened: { plaintext: Buffer } | undefined;
  try {
    opened = openMessage(ciphertext, options.unwrap ?? strictUnwrap);
  } catch (err) {
    if (!(err instanceof SealboxError)) {
      assert.fail(`${what}: threw ${String(err)} instead of a SealboxError`);
    }
    if (!allowed.includes(err.code)) {
      assert.fail(`${what}: rejected with ${err.code} (${err.message}); expected ${allowed.join(' or ')}`);
    }
    if (options.message && !options.message.test(err.message)) {
      assert.fail(`${what}: message ${JSON.stringify(err.message)} does not match ${options.message}`);
    }
    return err;
  }
  assert.fail(`${what}: tampered ciphertext opened (${opened.plaintext.length} plaintext bytes)`);
}

/** Byte offsets of every header field, read from the bytes (independently of parseHeader). */
interface Layout {
  readonly contextAt: number;
  readonly commitmentAt: number;
  readonly keyIdAt: number;
  readonly algAt: number;
  readonly wrappedAt: number;
  readonly tagAt: number;
  readonly length: number;
}

function layoutOf(ciphertext: Buffer): Layout {
  const contextAt = 44;
  const commitmentAt = contextAt + ciphertext.readUInt16BE(42);
  const keyIdLengthAt = commitmentAt + 32;
  const keyIdAt = keyIdLengthAt + 2;
  const algLengthAt = keyIdAt + ciphertext.readUInt16BE(keyIdLengthAt);
  const algAt = algLengthAt + 1;
  const wrappedLengthAt = algAt + ciphertext.readUInt8(algLengthAt);
  const wrappedAt = wrappedLengthAt + 2;
  const tagAt = wrappedAt + ciphertext.readUInt16BE(wrappedLengthAt);
  return { contextAt, commitmentAt, keyIdAt, algAt, wrappedAt, tagAt, length: tagAt + 32 };
}

/** A header split into its fields, so a test can change one and re-encode the rest unchanged. */
interface HeaderParts {
  magic: Buffer;
  version: number;
  suite: number;
  messageId: Buffer;
  chunkSize: number;
  context: Buffer;
  commitment: Buffer;
  keyId: Buffer;
  wrapAlgorithm: Buffer;
  wrappedDek: Buffer;
  tag: Buffer;
}

function splitHeader(ciphertext: Buffer): { parts: HeaderParts; body: Buffer } {
  const l = layoutOf(ciphertext);
  const copy = (from: number, to: number) => Buffer.from(ciphertext.subarray(from, to));
  return {
    parts: {
      magic: copy(0, 3),
      version: ciphertext[3]!,
      suite: ciphertext.readUInt16BE(4),
      messageId: copy(6, 38),
      chunkSize: ciphertext.readUInt32BE(38),
      context: copy(l.contextAt, l.commitmentAt),
      commitment: copy(l.commitmentAt, l.commitmentAt + 32),
      keyId: copy(l.keyIdAt, l.algAt - 1),
      wrapAlgorithm: copy(l.algAt, l.wrappedAt - 2),
      wrappedDek: copy(l.wrappedAt, l.tagAt),
      tag: copy(l.tagAt, l.length),
    },
    body: copy(l.length, ciphertext.length),
  };
}

/** Encodes header fields byte for byte as format.ts lays them out (no tag is computed). */
function joinHeader(p: HeaderParts): Buffer {
  const u8 = (n: number) => Buffer.from([n]);
  const u16 = (n: number) => {
    const b = Buffer.alloc(2);
    b.writeUInt16BE(n);
    return b;
  };
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    return b;
  };
  return Buffer.concat([
    p.magic,
    u8(p.version),
    u16(p.suite),
    p.messageId,
    u32(p.chunkSize),
    u16(p.context.length),
    p.context,
    p.commitment,
    u16(p.keyId.length),
    p.keyId,
    u8(p.wrapAlgorithm.length),
    p.wrapAlgorithm,
    u16(p.wrappedDek.length),
    p.wrappedDek,
    p.tag,
  ]);
}

function editHeader(ciphertext: Buffer, edit: (parts: HeaderParts) => void): Buffer {
  const { parts, body } = splitHeader(ciphertext);
  edit(parts);
  return Buffer.concat([joinHeader(parts), body]);
}

/** The header and the chunk records of a ciphertext sealed with chunk size CHUNK. */
function recordsOf(ciphertext: Buffer): { header: Buffer; records: Buffer[] } {
  const { length } = layoutOf(ciphertext);
  const records: Buffer[] = [];
  for (let at = length; at < ciphertext.length; at += RECORD) {
    records.push(Buffer.from(ciphertext.subarray(at, Math.min(at + RECORD, ciphertext.length))));
  }
  return { header: Buffer.from(ciphertext.subarray(0, length)), records };
}

const failedChunk = (index: number) => new RegExp(`\\bchunk ${index} failed authentication`);
const truncatedAfter = (index: number) => new RegExp(`truncated after chunk ${index}\\b`);

/** Flips one bit in place, runs `check`, and flips it back (copying 16 KiB per flip is the slow part). */
function withBitFlipped(buffer: Buffer, position: number, bit: number, check: () => void): void {
  buffer[position]! ^= 1 << bit;
  try {
    check();
  } finally {
    buffer[position]! ^= 1 << bit;
  }
}

describe('tampering: setup', () => {
  test('untampered ciphertexts open, so every rejection below is caused by the tampering', () => {
    for (const plaintext of [PARTIAL_PLAINTEXT, WHOLE_PLAINTEXT, Buffer.alloc(0)]) {
      const ciphertext = seal(plaintext);
      for (const unwrap of [strictUnwrap, lenientUnwrap]) {
        const opened = openMessage(ciphertext, unwrap);
        assert.deepEqual(opened.plaintext, plaintext);
        assert.deepEqual(opened.header.context, CONTEXT);
      }
      assert.equal(layoutOf(ciphertext).length, parseHeader(ciphertext)!.length);
      assert.deepEqual(
        joinHeader(splitHeader(ciphertext).parts),
        ciphertext.subarray(0, layoutOf(ciphertext).length),
      );
    }
    const { records } = recordsOf(seal(PARTIAL_PLAINTEXT));
    assert.deepEqual(
      records.map((r) => r.length),
      [RECORD, RECORD, RECORD, 1000 + CHUNK_OVERHEAD],
    );
  });
});

describe('tampering: single-bit flips', () => {
  /**
   * What each header byte may be rejected with. Length fields shift every field after them, so
   * the parse can fail anywhere; field contents have one expected outcome (or a parse failure
   * where the content must be well formed: UTF-8 key id, algorithm name, canonical context).
   */
  function expectedForHeaderByte(l: Layout, at: number, unwrap: 'strict' | 'lenient'): readonly ErrorCode[] {
    const structural = [CIPHERTEXT_MALFORMED, CIPHERTEXT_TRUNCATED, CIPHERTEXT_CORRUPT, KEY_NOT_FOUND];
    const keyField = unwrap === 'strict' ? KEY_NOT_FOUND : CIPHERTEXT_CORRUPT;
    if (at < 6) return [CIPHERTEXT_MALFORMED]; // magic, version, suite
    if (at < 38) return [CIPHERTEXT_CORRUPT]; // message id → other message keys → commitment
    // A flipped chunk size is either out of bounds or re-frames the body before the header is verified.
    if (at < 42) return [CIPHERTEXT_MALFORMED, CIPHERTEXT_CORRUPT, CIPHERTEXT_TRUNCATED];
    if (at < l.contextAt) return [CIPHERTEXT_MALFORMED, CIPHERTEXT_TRUNCATED];
    if (at < l.commitmentAt) return [CIPHERTEXT_MALFORMED, CIPHERTEXT_CORRUPT];
    if (at < l.commitmentAt + 32) return [CIPHERTEXT_CORRUPT];
    if (at < l.keyIdAt) return structural;
    if (at < l.algAt - 1) return [keyField, CIPHERTEXT_MALFORMED];
    if (at < l.algAt) return structural;
    if (at < l.wrappedAt - 2) return [keyField, CIPHERTEXT_MALFORMED];
    if (at < l.wrappedAt) return structural;
    if (at < l.tagAt) return [CIPHERTEXT_CORRUPT]; // AES key wrap integrity check
    return [CIPHERTEXT_CORRUPT]; // header tag
  }

  for (const mode of ['strict', 'lenient'] as const) {
    test(`every bit of the header (${mode} unwrap)`, () => {
      const ciphertext = seal(PARTIAL_PLAINTEXT);
      const l = layoutOf(ciphertext);
      const unwrap = mode === 'strict' ? strictUnwrap : lenientUnwrap;
      let flips = 0;
      for (let at = 0; at < l.length; at++) {
        const expected = expectedForHeaderByte(l, at, mode);
        for (let bit = 0; bit < 8; bit++) {
          withBitFlipped(ciphertext, at, bit, () =>
            assertRejected(ciphertext, expected, `header byte ${at} bit ${bit}`, { unwrap }),
          );
          flips++;
        }
      }
      assert.equal(flips, l.length * 8);
    });
  }

  test('tag and first/last 64 bytes of every chunk record: CIPHERTEXT_CORRUPT naming the chunk', () => {
    for (const plaintext of [PARTIAL_PLAINTEXT, WHOLE_PLAINTEXT]) {
      const ciphertext = seal(plaintext);
      const { length: headerLength } = layoutOf(ciphertext);
      const count = Math.ceil(plaintext.length / CHUNK);
      for (let index = 0; index < count; index++) {
        const start = headerLength + index * RECORD;
        const end = Math.min(start + RECORD, ciphertext.length);
        const positions = new Set<number>();
        for (let i = 0; i < 64; i++) {
          positions.add(start + i);
          positions.add(end - 1 - i);
        }
        for (let i = 0; i < CHUNK_OVERHEAD; i++) positions.add(end - 1 - i); // the GCM tag
        for (const at of positions) {
          for (let bit = 0; bit < 8; bit++) {
            withBitFlipped(ciphertext, at, bit, () =>
              assertRejected(ciphertext, CIPHERTEXT_CORRUPT, `chunk ${index} byte ${at - start} bit ${bit}`, {
                message: failedChunk(index),
              }),
            );
          }
        }
      }
    }
  });

  test('every bit of an empty message (header + one 16-byte final record)', () => {
    const ciphertext = seal(Buffer.alloc(0));
    const l = layoutOf(ciphertext);
    assert.equal(ciphertext.length, l.length + CHUNK_OVERHEAD);
    for (let at = l.length; at < ciphertext.length; at++) {
      for (let bit = 0; bit < 8; bit++) {
        withBitFlipped(ciphertext, at, bit, () =>
          assertRejected(ciphertext, CIPHERTEXT_CORRUPT, `empty-message tag byte ${at} bit ${bit}`, {
            message: failedChunk(0),
          }),
        );
      }
    }
    assertRejected(
      ciphertext.subarray(0, l.length),
      CIPHERTEXT_TRUNCATED,
      'empty message without its record',
    );
  });
});

describe('tampering: truncation', () => {
  for (const [name, plaintext] of [
    ['3 chunks + partial', PARTIAL_PLAINTEXT],
    ['4 full chunks', WHOLE_PLAINTEXT],
  ] as const) {
    test(`${name}: at every chunk boundary → CIPHERTEXT_TRUNCATED naming the last chunk present`, () => {
      const ciphertext = seal(plaintext);
      const { length: headerLength } = layoutOf(ciphertext);
      const count = Math.ceil(plaintext.length / CHUNK);
      assertRejected(
        ciphertext.subarray(0, headerLength),
        CIPHERTEXT_TRUNCATED,
        'cut right after the header',
        {
          message: /after the header/,
        },
      );
      for (let kept = 1; kept < count; kept++) {
        assertRejected(
          ciphertext.subarray(0, headerLength + kept * RECORD),
          CIPHERTEXT_TRUNCATED,
          `cut after ${kept} whole chunks`,
          { message: truncatedAfter(kept - 1) },
        );
      }
    });

    test(`${name}: at chosen points inside the header and inside chunks`, () => {
      const ciphertext = seal(plaintext);
      const l = layoutOf(ciphertext);
      const cases: Array<[cut: number, codes: readonly ErrorCode[], message?: RegExp]> = [
        [0, [CIPHERTEXT_TRUNCATED], /empty/],
        [1, [CIPHERTEXT_TRUNCATED], /inside the header/],
        [3, [CIPHERTEXT_TRUNCATED], /inside the header/],
        [6, [CIPHERTEXT_TRUNCATED], /inside the header/],
        [44, [CIPHERTEXT_TRUNCATED], /inside the header/],
        [l.commitmentAt + 5, [CIPHERTEXT_TRUNCATED], /inside the header/],
        [l.wrappedAt + 3, [CIPHERTEXT_TRUNCATED], /inside the header/],
        [l.length - 1, [CIPHERTEXT_TRUNCATED], /inside the header/],
        [l.length + 1, [CIPHERTEXT_TRUNCATED]],
        [l.length + 15, [CIPHERTEXT_TRUNCATED]],
        [l.length + 16, [CIPHERTEXT_TRUNCATED, CIPHERTEXT_CORRUPT], /chunk 0\b/],
        [l.length + 100, [CIPHERTEXT_TRUNCATED, CIPHERTEXT_CORRUPT], /chunk 0\b/],
        [l.length + RECORD - 1, [CIPHERTEXT_TRUNCATED, CIPHERTEXT_CORRUPT], /chunk 0\b/],
        [l.length + RECORD + 1, [CIPHERTEXT_TRUNCATED, CIPHERTEXT_CORRUPT], /chunk 0\b/],
        [l.length + 2 * RECORD + 2000, [CIPHERTEXT_TRUNCATED, CIPHERTEXT_CORRUPT], /chunk 2\b/],
        [ciphertext.length - CHUNK_OVERHEAD, [CIPHERTEXT_TRUNCATED, CIPHERTEXT_CORRUPT], /chunk 3\b/],
        [ciphertext.length - 1, [CIPHERTEXT_TRUNCATED, CIPHERTEXT_CORRUPT], /chunk 3\b/],
      ];
      for (const [cut, codes, message] of cases) {
        assertRejected(ciphertext.subarray(0, cut), codes, `cut at ${cut} of ${ciphertext.length}`, {
          ...(message ? { message } : {}),
        });
      }
    });
  }

  test('at every length shorter than the ciphertext', () => {
    const ciphertext = seal(PARTIAL_PLAINTEXT);
    const { length: headerLength } = layoutOf(ciphertext);
    for (let cut = 0; cut < ciphertext.length; cut++) {
      const codes = cut < headerLength ? [CIPHERTEXT_TRUNCATED] : [CIPHERTEXT_TRUNCATED, CIPHERTEXT_CORRUPT];
      assertRejected(ciphertext.subarray(0, cut), codes, `cut at ${cut}`);
    }
  });
});

describe('tampering: chunks dropped, duplicated, reordered, spliced', () => {
  const a = seal(PARTIAL_PLAINTEXT);
  const b = seal(PARTIAL_PLAINTEXT); // same DEK, same plaintext, another message id
  const wa = seal(WHOLE_PLAINTEXT);
  const wb = seal(WHOLE_PLAINTEXT);
  const other = seal(PARTIAL_PLAINTEXT, OTHER_DEK);

  test('the splice sources really are other messages under the same DEK', () => {
    assert.notDeepEqual(parseHeader(a)!.messageId, parseHeader(b)!.messageId);
    assert.notDeepEqual(parseHeader(wa)!.messageId, parseHeader(wb)!.messageId);
    assert.deepEqual(kekUnwrap(parseHeader(a)!), kekUnwrap(parseHeader(b)!));
  });

  type Edit = (records: Buffer[]) => Buffer[];
  const cases: Array<{
    name: string;
    of: Buffer;
    edit: Edit;
    code: ErrorCode;
    message: RegExp;
    header?: Buffer;
  }> = [];
  for (const [label, ct, donor] of [
    ['partial', a, b],
    ['whole', wa, wb],
  ] as const) {
    const donorRecords = recordsOf(donor).records;
    cases.push(
      {
        name: `${label}: chunk 0 dropped`,
        of: ct,
        edit: (r) => r.slice(1),
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(0),
      },
      {
        name: `${label}: chunk 1 dropped`,
        of: ct,
        edit: (r) => [r[0]!, ...r.slice(2)],
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(1),
      },
      {
        name: `${label}: final chunk dropped`,
        of: ct,
        edit: (r) => r.slice(0, -1),
        code: CIPHERTEXT_TRUNCATED,
        message: truncatedAfter(2),
      },
      {
        name: `${label}: chunk 1 duplicated`,
        of: ct,
        edit: (r) => [r[0]!, r[1]!, r[1]!, ...r.slice(2)],
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(2),
      },
      {
        name: `${label}: chunk 0 duplicated`,
        of: ct,
        edit: (r) => [r[0]!, ...r],
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(1),
      },
      {
        name: `${label}: chunks 0 and 1 swapped`,
        of: ct,
        edit: (r) => [r[1]!, r[0]!, ...r.slice(2)],
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(0),
      },
      {
        name: `${label}: chunks 1 and 2 swapped`,
        of: ct,
        edit: (r) => [r[0]!, r[2]!, r[1]!, r[3]!],
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(1),
      },
      {
        name: `${label}: final chunk moved to the front`,
        of: ct,
        edit: (r) => [r[3]!, r[0]!, r[1]!, r[2]!],
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(0),
      },
      {
        name: `${label}: chunks reversed`,
        of: ct,
        edit: (r) => [...r].reverse(),
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(0),
      },
      {
        name: `${label}: chunk 1 of another message (same DEK) at position 1`,
        of: ct,
        edit: (r) => [r[0]!, donorRecords[1]!, r[2]!, r[3]!],
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(1),
      },
      {
        name: `${label}: chunk 2 of another message (same DEK) at position 1`,
        of: ct,
        edit: (r) => [r[0]!, donorRecords[2]!, r[2]!, r[3]!],
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(1),
      },
      {
        name: `${label}: final chunk of another message (same DEK)`,
        of: ct,
        edit: (r) => [...r.slice(0, 3), donorRecords[3]!],
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(3),
      },
      {
        name: `${label}: header with the whole body of another message (same DEK)`,
        of: ct,
        edit: () => donorRecords,
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(0),
      },
      {
        name: `${label}: chunk 1 replaced by zeros`,
        of: ct,
        edit: (r) => [r[0]!, Buffer.alloc(RECORD), r[2]!, r[3]!],
        code: CIPHERTEXT_CORRUPT,
        message: failedChunk(1),
      },
    );
  }
  cases.push(
    {
      name: 'whole: final chunk moved to position 1 (same record size, only the final flag differs)',
      of: wa,
      edit: (r) => [r[0]!, r[3]!, r[1]!, r[2]!],
      code: CIPHERTEXT_CORRUPT,
      message: failedChunk(1),
    },
    {
      name: 'whole: final chunk duplicated (the original final is now read as non-final)',
      of: wa,
      edit: (r) => [...r, r[3]!],
      code: CIPHERTEXT_CORRUPT,
      message: failedChunk(3),
    },
    {
      name: 'whole: non-final chunk 2 placed last (a non-final record read as final is not truncation)',
      of: wa,
      edit: (r) => [r[0]!, r[1]!, r[3]!, r[2]!],
      code: CIPHERTEXT_CORRUPT,
      message: failedChunk(2),
    },
    {
      name: 'partial: chunk 1 of a message under another DEK',
      of: a,
      edit: (r) => [r[0]!, recordsOf(other).records[1]!, r[2]!, r[3]!],
      code: CIPHERTEXT_CORRUPT,
      message: failedChunk(1),
    },
    {
      name: 'header of message B with the body of message A (same DEK)',
      of: a,
      header: recordsOf(b).header,
      edit: (r) => r,
      code: CIPHERTEXT_CORRUPT,
      message: failedChunk(0),
    },
  );

  for (const c of cases) {
    test(c.name, () => {
      const { header, records } = recordsOf(c.of);
      const tampered = Buffer.concat([c.header ?? header, ...c.edit(records)]);
      assert.notDeepEqual(tampered, c.of);
      assertRejected(tampered, c.code, c.name, { message: c.message });
    });
  }
});

describe('tampering: chunk AAD under one key', () => {
  /*
   * Per-message keys already make a chunk from another message fail. The AAD binds the message id as
   * well, so even two messages under one AES key (a bug elsewhere, or a future suite) cannot trade chunks.
   */
  test('a batch sealed for one message id does not open for another, under the same key', () => {
    const key = Buffer.alloc(32, 7);
    const batch = { key, chunkSize: CHUNK, firstIndex: 0, final: true, data: PARTIAL_PLAINTEXT };
    const sealed = sealChunks({ ...batch, messageId: Buffer.alloc(32, 1) });
    const reopened = openChunks({ ...batch, messageId: Buffer.alloc(32, 1), data: sealed });
    assert.ok(reopened.ok && reopened.plaintext.equals(PARTIAL_PLAINTEXT));
    const spliced = openChunks({ ...batch, messageId: Buffer.alloc(32, 2), data: sealed });
    assert.deepEqual(spliced, { ok: false, failedIndex: 0, truncated: false });
  });
});

describe('tampering: header field edits', () => {
  const ciphertext = seal(PARTIAL_PLAINTEXT);
  const donor = seal(PARTIAL_PLAINTEXT); // same DEK, another message id
  const otherDek = seal(PARTIAL_PLAINTEXT, OTHER_DEK);
  const headerAuth = /header failed authentication/;
  const commitment = /key-commitment/;
  const flipFirst = (b: Buffer) => {
    const c = Buffer.from(b);
    c[0]! ^= 0x01;
    return c;
  };

  const cases: Array<{
    name: string;
    edit: (p: HeaderParts) => void;
    strict: ErrorCode | readonly ErrorCode[];
    /** Outcome when the unwrap ignores key id and algorithm (defaults to `strict`). */
    lenient?: ErrorCode | readonly ErrorCode[];
    message?: RegExp;
    lenientMessage?: RegExp;
  }> = [
    {
      name: 'context value changed',
      edit: (p) => {
        p.context = encodeContext({ ...CONTEXT, tenant: 'evil' });
      },
      strict: CIPHERTEXT_CORRUPT,
      message: headerAuth,
    },
    {
      name: 'context value changed, same length',
      edit: (p) => {
        p.context = encodeContext({ ...CONTEXT, tenant: 'acmf' });
      },
      strict: CIPHERTEXT_CORRUPT,
      message: headerAuth,
    },
    {
      name: 'context pair added',
      edit: (p) => {
        p.context = encodeContext({ ...CONTEXT, role: 'admin' });
      },
      strict: CIPHERTEXT_CORRUPT,
      message: headerAuth,
    },
    {
      name: 'context pair removed',
      edit: (p) => {
        p.context = encodeContext({ tenant: CONTEXT.tenant });
      },
      strict: CIPHERTEXT_CORRUPT,
      message: headerAuth,
    },
    {
      name: 'context emptied',
      edit: (p) => {
        p.context = encodeContext({});
      },
      strict: CIPHERTEXT_CORRUPT,
      message: headerAuth,
    },
    {
      name: 'context not canonical (pairs out of order)',
      edit: (p) => {
        const purpose = encodeContext({ purpose: CONTEXT.purpose }).subarray(2);
        const tenant = encodeContext({ tenant: CONTEXT.tenant }).subarray(2);
        p.context = Buffer.concat([Buffer.from([0, 2]), tenant, purpose]);
      },
      strict: CIPHERTEXT_MALFORMED,
    },
    {
      name: 'chunk size 4096 → 8192',
      edit: (p) => {
        p.chunkSize = 8192;
      },
      strict: CIPHERTEXT_CORRUPT,
      message: headerAuth,
    },
    {
      name: 'chunk size 4096 → maximum',
      edit: (p) => {
        p.chunkSize = MAX_CHUNK_SIZE;
      },
      strict: CIPHERTEXT_CORRUPT,
      message: headerAuth,
    },
    {
      // openMessage frames the whole body before it verifies the header: a chunk size that leaves
      // a final record shorter than a tag is reported as truncation.
      name: 'chunk size 4096 → 4097',
      edit: (p) => {
        p.chunkSize = 4097;
      },
      strict: [CIPHERTEXT_CORRUPT, CIPHERTEXT_TRUNCATED],
    },
    {
      name: 'chunk size out of bounds',
      edit: (p) => {
        p.chunkSize = MIN_CHUNK_SIZE - 1;
      },
      strict: CIPHERTEXT_MALFORMED,
      message: /chunk size/,
    },
    {
      name: 'message id changed',
      edit: (p) => {
        p.messageId = flipFirst(p.messageId);
      },
      strict: CIPHERTEXT_CORRUPT,
      message: commitment,
    },
    {
      name: 'message id of another message (same DEK)',
      edit: (p) => {
        p.messageId = splitHeader(donor).parts.messageId;
      },
      strict: CIPHERTEXT_CORRUPT,
      message: commitment,
    },
    {
      name: 'commitment changed',
      edit: (p) => {
        p.commitment = flipFirst(p.commitment);
      },
      strict: CIPHERTEXT_CORRUPT,
      message: commitment,
    },
    {
      name: 'key id changed, same length',
      edit: (p) => {
        p.keyId = Buffer.from(`local:t/${'0'.repeat(31)}1`);
      },
      strict: KEY_NOT_FOUND,
      lenient: CIPHERTEXT_CORRUPT,
      lenientMessage: headerAuth,
    },
    {
      name: 'key id changed, other length',
      edit: (p) => {
        p.keyId = Buffer.from('local:t/latest');
      },
      strict: KEY_NOT_FOUND,
      lenient: CIPHERTEXT_CORRUPT,
      lenientMessage: headerAuth,
    },
    {
      name: 'key id not UTF-8',
      edit: (p) => {
        p.keyId = Buffer.concat([p.keyId, Buffer.from([0xc3])]);
      },
      strict: CIPHERTEXT_MALFORMED,
    },
    {
      name: 'wrap algorithm changed',
      edit: (p) => {
        p.wrapAlgorithm = Buffer.from('A128KW');
      },
      strict: KEY_NOT_FOUND,
      lenient: CIPHERTEXT_CORRUPT,
      lenientMessage: headerAuth,
    },
    {
      name: 'wrap algorithm not an algorithm name',
      edit: (p) => {
        p.wrapAlgorithm = Buffer.from('A256 KW');
      },
      strict: CIPHERTEXT_MALFORMED,
    },
    {
      name: 'wrapped DEK changed',
      edit: (p) => {
        p.wrappedDek = flipFirst(p.wrappedDek);
      },
      strict: CIPHERTEXT_CORRUPT,
    },
    {
      name: 'wrapped DEK shortened by 8 bytes',
      edit: (p) => {
        p.wrappedDek = p.wrappedDek.subarray(8);
      },
      strict: CIPHERTEXT_CORRUPT,
    },
    {
      name: 'wrapped DEK replaced by a valid wrap of another DEK',
      edit: (p) => {
        p.wrappedDek = aesKeyWrap(KEK, OTHER_DEK);
      },
      strict: CIPHERTEXT_CORRUPT,
      message: commitment,
    },
    {
      name: 'wrapped DEK, commitment and tag of a message under another DEK',
      edit: (p) => {
        const o = splitHeader(otherDek).parts;
        p.wrappedDek = o.wrappedDek;
        p.commitment = o.commitment;
        p.tag = o.tag;
      },
      strict: CIPHERTEXT_CORRUPT,
      message: commitment,
    },
    {
      name: 'tag changed',
      edit: (p) => {
        p.tag = flipFirst(p.tag);
      },
      strict: CIPHERTEXT_CORRUPT,
      message: headerAuth,
    },
    {
      name: 'tag of another message (same DEK)',
      edit: (p) => {
        p.tag = splitHeader(donor).parts.tag;
      },
      strict: CIPHERTEXT_CORRUPT,
      message: headerAuth,
    },
    {
      name: 'format version 2',
      edit: (p) => {
        p.version = 2;
      },
      strict: CIPHERTEXT_MALFORMED,
      message: /format version 2\b/,
    },
    {
      name: 'format version 0',
      edit: (p) => {
        p.version = 0;
      },
      strict: CIPHERTEXT_MALFORMED,
      message: /format version 0\b/,
    },
    {
      name: 'suite id 0x0002',
      edit: (p) => {
        p.suite = 2;
      },
      strict: CIPHERTEXT_MALFORMED,
      message: /suite id 0x0002/,
    },
    {
      name: 'magic changed',
      edit: (p) => {
        p.magic = Buffer.from('SBY');
      },
      strict: CIPHERTEXT_MALFORMED,
      message: /magic/,
    },
  ];

  for (const c of cases) {
    test(c.name, () => {
      const tampered = editHeader(ciphertext, c.edit);
      assert.notDeepEqual(tampered, ciphertext);
      assertRejected(tampered, c.strict, `${c.name} (strict unwrap)`, {
        ...(c.message ? { message: c.message } : {}),
      });
      const lenientMessage = c.lenientMessage ?? (c.lenient ? undefined : c.message);
      assertRejected(tampered, c.lenient ?? c.strict, `${c.name} (lenient unwrap)`, {
        unwrap: lenientUnwrap,
        ...(lenientMessage ? { message: lenientMessage } : {}),
      });
    });
  }
});

describe('tampering: bytes appended after a valid ciphertext', () => {
  const anyCiphertextError = [CIPHERTEXT_CORRUPT, CIPHERTEXT_TRUNCATED, CIPHERTEXT_MALFORMED];
  for (const [label, plaintext] of [
    ['partial', PARTIAL_PLAINTEXT],
    ['whole', WHOLE_PLAINTEXT],
    ['empty', Buffer.alloc(0)],
  ] as const) {
    const ciphertext = seal(plaintext);
    const { records } = recordsOf(ciphertext);
    const appendices: Array<[string, Buffer]> = [
      ['1 zero byte', Buffer.alloc(1)],
      ['16 zero bytes', Buffer.alloc(16)],
      ['17 bytes', pattern(17, 3)],
      ['a copy of the final record', records.at(-1)!],
      ['a whole record of zeros', Buffer.alloc(RECORD)],
      ['a second complete ciphertext', seal(plaintext)],
    ];
    for (const [what, extra] of appendices) {
      test(`${label}: ${what}`, () => {
        assertRejected(Buffer.concat([ciphertext, extra]), anyCiphertextError, `${label} + ${what}`);
      });
    }
  }
});

describe('tampering: property', () => {
  type Mutation =
    | { kind: 'flip'; position: number; bit: number }
    | { kind: 'truncate'; length: number }
    | { kind: 'insert'; position: number; byte: number };

  const mutation: fc.Arbitrary<Mutation> = fc.oneof(
    fc.record({
      kind: fc.constant('flip' as const),
      position: fc.nat(),
      bit: fc.integer({ min: 0, max: 7 }),
    }),
    fc.record({ kind: fc.constant('truncate' as const), length: fc.nat() }),
    fc.record({
      kind: fc.constant('insert' as const),
      position: fc.nat(),
      byte: fc.integer({ min: 0, max: 255 }),
    }),
  );

  function mutate(ciphertext: Buffer, m: Mutation): Buffer {
    const out = Buffer.from(ciphertext);
    switch (m.kind) {
      case 'flip': {
        const at = m.position % out.length;
        out[at]! ^= 1 << m.bit;
        return out;
      }
      case 'truncate':
        return out.subarray(0, m.length % out.length);
      case 'insert': {
        const at = m.position % (out.length + 1); // may append
        return Buffer.concat([out.subarray(0, at), Buffer.from([m.byte]), out.subarray(at)]);
      }
    }
  }

  test('a random mutation of a random message never opens', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 20000 }), mutation, (plaintext, m) => {
        const ciphertext = seal(plaintext);
        const tampered = mutate(ciphertext, m);
        let opened = false;
        try {
          openMessage(tampered, strictUnwrap);
          opened = true;
        } catch (err) {
          if (!(err instanceof SealboxError)) throw err;
        }
        assert.equal(
          opened,
          false,
          `mutation ${JSON.stringify(m)} of a ${plaintext.length}-byte message opened`,
        );
      }),
      { numRuns: 300 },
    );
  });
});
