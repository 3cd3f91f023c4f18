/**
 * What a reader can tell apart when a ciphertext is cut short (docs/FORMAT.md "Splitting the body",
 * README's error table): exactly which code each cut answers, where the tampering suite accepts
 * either of two. A cut 16 or more bytes into a chunk cannot be told from a modification.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { CHUNK_OVERHEAD, sealChunks } from '../../../src/crypto/chunk';
import { parseHeader } from '../../../src/crypto/format';
import { deriveMessageKeys } from '../../../src/crypto/kdf';
import { openMessage, sealMessage } from '../../../src/crypto/message';
import { ErrorCode, SealboxError } from '../../../src/errors';

const C = 4096;
const R = C + CHUNK_OVERHEAD;
const dek = randomBytes(32);
const wrapped = {
  keyId: 'local:cuts/00000000000000000000000000000001',
  wrapAlgorithm: 'A256KW',
  wrappedDek: randomBytes(40),
};

function codeOf(ciphertext: Buffer): { code: string; message: string } {
  try {
    openMessage(ciphertext, () => Buffer.from(dek));
  } catch (err) {
    assert.ok(err instanceof SealboxError, String(err));
    return { code: err.code, message: err.message };
  }
  return { code: 'OK', message: '' };
}

const { CIPHERTEXT_CORRUPT: CORRUPT, CIPHERTEXT_TRUNCATED: TRUNCATED } = ErrorCode;

for (const [name, length] of [
  ['a short final chunk (3 C + 100)', 3 * C + 100],
  ['a full-size final chunk (3 C)', 3 * C],
] as const) {
  test(`cut points and their codes, ${name}`, () => {
    const ciphertext = sealMessage(randomBytes(length), { dek, wrapped, context: {}, chunkSize: C });
    const h = parseHeader(ciphertext)!.length;
    const last = ciphertext.length;
    const table: Array<[string, number, string, RegExp]> = [
      ['nothing', 0, TRUNCATED, /empty/],
      ['inside the header', h - 1, TRUNCATED, /inside the header/],
      ['right after the header', h, TRUNCATED, /after the header/],
      ['15 bytes into chunk 0', h + 15, TRUNCATED, /after the header/],
      ['16 bytes into chunk 0', h + 16, CORRUPT, /chunk 0 failed/],
      ['1 byte before the end of chunk 0', h + R - 1, CORRUPT, /chunk 0 failed/],
      ['at the boundary after chunk 0', h + R, TRUNCATED, /truncated after chunk 0\b/],
      ['1 byte past it', h + R + 1, TRUNCATED, /truncated after chunk 0\b/],
      ['15 bytes past it', h + R + 15, TRUNCATED, /truncated after chunk 0\b/],
      ['16 bytes past it', h + R + 16, CORRUPT, /chunk 1 failed/],
      ['at the boundary after chunk 1', h + 2 * R, TRUNCATED, /truncated after chunk 1\b/],
      ['1 byte short of the end', last - 1, CORRUPT, /failed authentication/],
      ['16 bytes short of the end', last - 16, CORRUPT, /failed authentication/],
    ];
    for (const [where, at, code, message] of table) {
      const got = codeOf(ciphertext.subarray(0, at));
      assert.equal(got.code, code, `cut ${where}: ${got.message}`);
      assert.match(got.message, message, where);
    }
    assert.equal(codeOf(ciphertext).code, 'OK');
  });
}

test('an empty final chunk after full chunks is CIPHERTEXT_CORRUPT naming it, even though its tag verifies', () => {
  const canonical = sealMessage(randomBytes(2 * C), { dek, wrapped, context: {}, chunkSize: C });
  const header = parseHeader(canonical)!;
  const keys = deriveMessageKeys(dek, header.messageId);
  const batch = { key: keys.encryptionKey, messageId: header.messageId, chunkSize: C };
  const body = Buffer.concat([
    sealChunks({ ...batch, firstIndex: 0, final: false, data: randomBytes(2 * C) }),
    sealChunks({ ...batch, firstIndex: 2, final: true, data: Buffer.alloc(0) }),
  ]);
  const got = codeOf(Buffer.concat([canonical.subarray(0, header.length), body]));
  assert.equal(got.code, CORRUPT, got.message);
  assert.match(got.message, /chunk 2 failed/);
});
