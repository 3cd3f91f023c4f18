import assert from 'node:assert/strict';
import { hkdfSync, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { dekKeyObject, deriveMessageKeys, hkdfSha256, MESSAGE_KEYS_INFO } from '../../../src/crypto/kdf';

test('deriveMessageKeys is HKDF-SHA256(DEK, message id, MESSAGE_KEYS_INFO, 96), byte for byte', () => {
  for (let i = 0; i < 500; i++) {
    const dek = randomBytes(32);
    const messageId = randomBytes(32);
    const keys = deriveMessageKeys(dek, messageId);
    const okm = Buffer.concat([keys.encryptionKey, keys.headerKey, keys.commitment]);
    assert.deepEqual(okm, hkdfSha256(dek, messageId, MESSAGE_KEYS_INFO, 96));
    assert.deepEqual(okm, Buffer.from(hkdfSync('sha256', dek, messageId, MESSAGE_KEYS_INFO, 96)));
    const viaKeyObject = deriveMessageKeys(dekKeyObject(dek), messageId);
    assert.deepEqual(
      Buffer.concat([viaKeyObject.encryptionKey, viaKeyObject.headerKey, viaKeyObject.commitment]),
      okm,
    );
  }
});

test('deriveMessageKeys leaves its inputs as they were and is deterministic', () => {
  const dek = randomBytes(32);
  const messageId = randomBytes(32);
  const [dekCopy, idCopy] = [Buffer.from(dek), Buffer.from(messageId)];
  const keys = deriveMessageKeys(dek, messageId);
  assert.deepEqual(dek, dekCopy);
  assert.deepEqual(messageId, idCopy);
  assert.deepEqual(deriveMessageKeys(dek, messageId), keys, 'deterministic');
  assert.notDeepEqual(deriveMessageKeys(dek, randomBytes(32)).encryptionKey, keys.encryptionKey);
});
