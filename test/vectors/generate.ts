/**
 * Writes test/vectors/sealbox-v1.json: known-answer vectors for ciphertext format version 1.
 * Run once when a new format version is added (`npm run vectors`); never regenerate v1's file —
 * its ciphertexts must keep decrypting forever. Every input is fixed, so the output is reproducible.
 */
import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { aesKeyWrap } from '../../src/crypto/keywrap';
import { sealMessage } from '../../src/crypto/message';
import { VECTORS_DIR } from '../helpers/paths';

/** Deterministic bytes: SHA-256 in counter mode over a label. */
function fixedBytes(label: string, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let block = 0, at = 0; at < length; block++, at += 32) {
    createHash('sha256').update(`${label}:${block}`).digest().copy(out, at);
  }
  return out;
}

const kek = fixedBytes('kek', 32);
const keyId = 'local:vectors/00000000000000000000000000000001';

const cases: Array<{ name: string; size: number; chunkSize: number; context: Record<string, string> }> = [
  { name: 'empty message, empty context', size: 0, chunkSize: 4096, context: {} },
  { name: 'one byte', size: 1, chunkSize: 4096, context: { tenant: 'acme' } },
  { name: 'one full chunk (final chunk is full)', size: 4096, chunkSize: 4096, context: { tenant: 'acme' } },
  { name: 'chunk size + 1 (two chunks)', size: 4097, chunkSize: 4096, context: {} },
  {
    name: 'three chunks and a partial, unicode context',
    size: 3 * 4096 + 123,
    chunkSize: 4096,
    context: { 'b-key': 'v2', 'a-key': 'v1', région: 'Zürich ✓', emoji: '🔐' },
  },
  { name: 'default chunk size, two chunks', size: 70000, chunkSize: 65536, context: { purpose: 'kat' } },
];

const vectors = cases.map((c, i) => {
  const dek = fixedBytes(`dek:${i}`, 32);
  const messageId = fixedBytes(`message-id:${i}`, 32);
  const plaintext = fixedBytes(`plaintext:${i}`, c.size);
  const wrappedDek = aesKeyWrap(kek, dek);
  const ciphertext = sealMessage(plaintext, {
    dek,
    messageId,
    wrapped: { keyId, wrapAlgorithm: 'A256KW', wrappedDek },
    context: c.context,
    chunkSize: c.chunkSize,
  });
  return {
    name: c.name,
    dek: dek.toString('hex'),
    messageId: messageId.toString('hex'),
    chunkSize: c.chunkSize,
    context: c.context,
    plaintext: plaintext.toString('hex'),
    ciphertext: ciphertext.toString('hex'),
  };
});

const file = {
  description:
    'sealbox ciphertext format v1 known-answer vectors (docs/FORMAT.md). The DEK is wrapped with AES key wrap (A256KW) under `kek`; `dek` is given too so a decryptor can skip the unwrap.',
  formatVersion: 1,
  kek: kek.toString('hex'),
  keyId,
  wrapAlgorithm: 'A256KW',
  vectors,
};
const path = join(VECTORS_DIR, 'sealbox-v1.json');
writeFileSync(path, `${JSON.stringify(file, null, 1)}\n`);
process.stdout.write(`wrote ${vectors.length} vectors to ${path}\n`);
