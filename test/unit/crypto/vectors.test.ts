/**
 * Known-answer vectors for ciphertext format v1. These ciphertexts must decrypt, byte for byte, in
 * every future version of sealbox; sealing the same inputs must still produce the same bytes.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { aesKeyUnwrap } from '../../../src/crypto/keywrap';
import { openMessage, sealMessage } from '../../../src/crypto/message';
import { VECTORS_DIR } from '../../helpers/paths';

interface VectorFile {
  kek: string;
  keyId: string;
  wrapAlgorithm: string;
  vectors: Array<{
    name: string;
    dek: string;
    messageId: string;
    chunkSize: number;
    context: Record<string, string>;
    plaintext: string;
    ciphertext: string;
  }>;
}

const file = JSON.parse(readFileSync(join(VECTORS_DIR, 'sealbox-v1.json'), 'utf8')) as VectorFile;
const kek = Buffer.from(file.kek, 'hex');

test('sealbox-v1 vectors: the file is not empty', () => {
  assert.ok(file.vectors.length >= 6);
});

for (const v of file.vectors) {
  test(`sealbox-v1 vector decrypts: ${v.name}`, () => {
    const opened = openMessage(Buffer.from(v.ciphertext, 'hex'), (header) => {
      assert.equal(header.keyId, file.keyId);
      assert.equal(header.wrapAlgorithm, file.wrapAlgorithm);
      const dek = aesKeyUnwrap(kek, header.wrappedDek);
      assert.ok(dek, 'the wrapped DEK unwraps under the vector KEK');
      assert.equal(dek.toString('hex'), v.dek);
      return dek;
    });
    assert.equal(opened.plaintext.toString('hex'), v.plaintext);
    assert.deepEqual({ ...opened.header.context }, v.context);
    assert.equal(opened.header.chunkSize, v.chunkSize);
    assert.equal(opened.header.messageId.toString('hex'), v.messageId);
  });

  test(`sealbox-v1 vector re-seals to the same bytes: ${v.name}`, () => {
    const ciphertext = Buffer.from(v.ciphertext, 'hex');
    const resealed = sealMessage(Buffer.from(v.plaintext, 'hex'), {
      dek: Buffer.from(v.dek, 'hex'),
      messageId: Buffer.from(v.messageId, 'hex'),
      wrapped: {
        keyId: file.keyId,
        wrapAlgorithm: file.wrapAlgorithm,
        // A256KW is deterministic, so the wrapped DEK in the header is reproducible too.
        wrappedDek: openMessage(ciphertext, (h) => aesKeyUnwrap(kek, h.wrappedDek)!).header.wrappedDek,
      },
      context: v.context,
      chunkSize: v.chunkSize,
    });
    assert.equal(resealed.toString('hex'), v.ciphertext);
  });
}
