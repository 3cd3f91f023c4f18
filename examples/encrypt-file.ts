/**
 * Encrypts a file through a running sealbox and decrypts it back, streaming both ways.
 *
 *   npm start                                  # in one terminal: sealbox on .sealbox/sealbox.sock
 *   node dist/examples/encrypt-file.js FILE    # in another: writes FILE.sbx and FILE.out, checks they match
 *
 * Options: --target unix:/path (default unix:.sealbox/sealbox.sock), --alias NAME (default dev).
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { connectEnvelope, createDecryptStream, createEncryptStream } from '../src/client/client';

async function sha256(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { target: { type: 'string' }, alias: { type: 'string' } },
  });
  const input = positionals[0];
  if (!input) throw new Error('usage: encrypt-file.js FILE [--target unix:/path] [--alias NAME]');
  const client = connectEnvelope(values.target ?? `unix:${resolve('.sealbox/sealbox.sock')}`);
  const context = { file: input };

  const encrypter = createEncryptStream(client, values.alias ?? 'dev', { context });
  encrypter.once('metadata', (m: { keyId: string }) => process.stdout.write(`sealed under ${m.keyId}\n`));
  await pipeline(createReadStream(input), encrypter, createWriteStream(`${input}.sbx`));

  // Decrypting with the expected context proves the ciphertext was sealed for this file.
  const decrypter = createDecryptStream(client, { expectedContext: context });
  await pipeline(createReadStream(`${input}.sbx`), decrypter, createWriteStream(`${input}.out`));

  const [a, b] = await Promise.all([sha256(input), sha256(`${input}.out`)]);
  process.stdout.write(`${input}.sbx written; round trip ${a === b ? 'matches' : 'DIFFERS'}\n`);
  client.close();
  if (a !== b) process.exitCode = 1;
}

main().catch((err: Error) => {
  process.stderr.write(`encrypt-file: ${err.message}\n`);
  process.exitCode = 1;
});
