/**
 * The known-answer vectors decrypt through the real server (unary and stream), with the vector KEK
 * configured as a local key whose version matches the vectors' key id.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { decrypt, decryptStream } from '../../src/client/client';
import { splitAt, startTestSealbox, type TestSealbox } from '../helpers/harness';
import { VECTORS_DIR } from '../helpers/paths';

const file = JSON.parse(readFileSync(join(VECTORS_DIR, 'sealbox-v1.json'), 'utf8')) as {
  kek: string;
  keyId: string;
  vectors: Array<{ name: string; context: Record<string, string>; plaintext: string; ciphertext: string }>;
};

let box: TestSealbox;

before(async () => {
  const keyFile = join(process.env['TMPDIR'] ?? '/tmp', `sealbox-vectors-${process.pid}.json`);
  const [name, version] = file.keyId.replace(/^local:/, '').split('/');
  writeFileSync(
    keyFile,
    JSON.stringify({
      name,
      versions: [{ version, key: Buffer.from(file.kek, 'hex').toString('base64'), enabled: true }],
    }),
    { mode: 0o600 },
  );
  box = await startTestSealbox({ keys: { vectors: { provider: 'local', file: keyFile } } });
});

after(() => box.close());

for (const v of file.vectors) {
  test(`vector decrypts over gRPC: ${v.name}`, async () => {
    const ciphertext = Buffer.from(v.ciphertext, 'hex');
    const unary = await decrypt(box.client, ciphertext, v.context);
    assert.equal(unary.plaintext.toString('hex'), v.plaintext);
    assert.equal(unary.keyId, file.keyId);
    const streamed = await decryptStream(box.client, splitAt(ciphertext, [1, 7, 300, 4200, 9000]));
    assert.equal(streamed.data.toString('hex'), v.plaintext);
    assert.deepEqual({ ...streamed.context }, v.context);
  });
}
