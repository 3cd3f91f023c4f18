/**
 * Push revocation with polling effectively off (poll interval one hour): only an Event Grid webhook
 * event or an Admin RevokeKey can explain the refusals here. Also the webhook's handshakes and secret,
 * Admin GetKeyStatus/FlushCache, and rotation adopted on KeyNewVersionCreated without a restart.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { KeyClient } from '@azure/keyvault-keys';
import { credentials } from '@grpc/grpc-js';
import { loadApi } from '../../src/api/proto';
import { decrypt, encrypt, errorCode } from '../../src/client/client';
import {
  type DevVault,
  devVaultClientOptions,
  sealboxKeyConfig,
  startDevVault,
  staticTokenCredential,
} from '../../src/devvault';
import type { AdminClient } from '../../src/gen/sealbox/v1/Admin';
import type { KeyStatusList__Output } from '../../src/gen/sealbox/v1/KeyStatusList';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';

const TOKEN = 'push-test';
const SECRET = 'a-webhook-secret-of-some-length';
let dir: string;
let vault: DevVault;
let keys: KeyClient;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sealbox-push-'));
  vault = await startDevVault({
    dataDir: join(dir, 'vault'),
    identities: {
      [TOKEN]: {
        name: 'sealbox',
        permissions: ['get', 'create', 'update', 'rotate', 'wrapKey', 'unwrapKey'],
      },
    },
  });
  keys = new KeyClient(vault.url, staticTokenCredential(TOKEN), devVaultClientOptions(vault));
});

after(async () => {
  await vault.close();
  rmSync(dir, { recursive: true, force: true });
});

async function withSealbox(
  keyName: string,
  fn: (box: TestSealbox, admin: AdminClient) => Promise<void>,
  webhookTls: { certFile: string; keyFile: string } | null = null,
) {
  const adminSocket = join(dir, `admin-${keyName}.sock`);
  const box = await startTestSealbox({
    revocation: { pollIntervalMs: 3_600_000 },
    listen: { adminSocket },
    webhook: { listen: { host: '127.0.0.1', port: 0 }, secret: SECRET, tls: webhookTls },
    keys: {
      pay: sealboxKeyConfig(vault, keyName, TOKEN),
    },
  });
  const { Admin } = loadApi().sealbox.sealbox.v1;
  const admin = new Admin(`unix:${adminSocket}`, credentials.createInsecure());
  try {
    await fn(box, admin);
  } finally {
    admin.close();
    await box.close();
  }
}

function post(box: TestSealbox, body: unknown, secret = SECRET, contentType = 'application/json') {
  return fetch(`${box.sealbox.webhookUrl}?secret=${encodeURIComponent(secret)}`, {
    method: 'POST',
    headers: { 'content-type': contentType },
    body: JSON.stringify(body),
  });
}

const gridEvent = (eventType: string, data: object = {}) => [
  {
    id: '1',
    topic: '/vaults/dev',
    subject: 'k',
    eventType,
    eventTime: new Date().toISOString(),
    data,
    dataVersion: '1',
  },
];

const refused = (p: Promise<unknown>) =>
  p.then(
    () => false,
    (e: unknown) => errorCode(e) === 'KEY_DISABLED',
  );

function call<Req, Res>(
  fn: (req: Req, cb: (e: Error | null, r?: Res) => void) => void,
  req: Req,
): Promise<Res> {
  return new Promise((resolve, reject) => fn(req, (e, r) => (e ? reject(e) : resolve(r as Res))));
}

test('an Event Grid event alone makes sealbox refuse a key disabled in the vault', async () => {
  await keys.createRsaKey('push-webhook', { keySize: 2048 });
  await withSealbox('push-webhook', async (box) => {
    const { ciphertext } = await encrypt(box.client, 'pay', Buffer.from('x'));
    await decrypt(box.client, ciphertext);
    await keys.updateKeyProperties('push-webhook', { enabled: false });
    assert.equal(
      await refused(decrypt(box.client, ciphertext)),
      false,
      'no poll yet: the cached DEK still serves',
    );
    const res = await post(box, gridEvent('Microsoft.KeyVault.VaultAccessPolicyChanged'));
    assert.equal(res.status, 200);
    assert.equal(await refused(decrypt(box.client, ciphertext)), true, 'refused right after the event');
    await keys.updateKeyProperties('push-webhook', { enabled: true });
    // CloudEvents 1.0 form of a Key Vault event.
    const ce = await post(
      box,
      {
        specversion: '1.0',
        type: 'Microsoft.KeyVault.KeyNewVersionCreated',
        source: '/vaults/dev',
        id: '2',
        data: {},
      },
      SECRET,
      'application/cloudevents+json',
    );
    assert.equal(ce.status, 200);
    assert.equal(await refused(decrypt(box.client, ciphertext)), false, 'serving again after the next event');
  });
});

/** POSTs over HTTPS trusting only `ca` (Node's fetch cannot take a CA per request). */
function postTls(url: string, body: unknown, ca: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      url,
      { method: 'POST', ca, headers: { 'content-type': 'application/json' } },
      (res) => {
        const parts: Buffer[] = [];
        res.on('data', (b: Buffer) => parts.push(b));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(parts).toString() }));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}

test('the webhook over HTTPS (what Event Grid requires): handshake, then an event revokes', async () => {
  await keys.createRsaKey('push-https', { keySize: 2048 });
  // The dev vault's server certificate is valid for 127.0.0.1; its CA is the only one trusted here.
  const tls = {
    certFile: join(dir, 'vault', 'tls', 'server.pem'),
    keyFile: join(dir, 'vault', 'tls', 'server-key.pem'),
  };
  await withSealbox(
    'push-https',
    async (box) => {
      const url = `${box.sealbox.webhookUrl}?secret=${SECRET}`;
      assert.match(url, /^https:\/\/127\.0\.0\.1:\d+\/eventgrid\?/);
      const validation = await postTls(
        url,
        gridEvent('Microsoft.EventGrid.SubscriptionValidationEvent', { validationCode: 'tls-1' }),
        vault.caPem,
      );
      assert.deepEqual(
        [validation.status, JSON.parse(validation.text)],
        [200, { validationResponse: 'tls-1' }],
      );
      // Plain HTTP to the TLS port gets no answer a client could mistake for success.
      await assert.rejects(fetch(url.replace('https:', 'http:'), { method: 'POST', body: '[]' }));
      const { ciphertext } = await encrypt(box.client, 'pay', Buffer.from('x'));
      await decrypt(box.client, ciphertext);
      await keys.updateKeyProperties('push-https', { enabled: false });
      assert.equal(await refused(decrypt(box.client, ciphertext)), false, 'no poll yet: cached');
      const event = await postTls(url, gridEvent('Microsoft.KeyVault.VaultAccessPolicyChanged'), vault.caPem);
      assert.equal(event.status, 200);
      assert.equal(await refused(decrypt(box.client, ciphertext)), true, 'refused right after the event');
    },
    tls,
  );
});

test('webhook handshakes and the shared secret', async () => {
  await keys.createRsaKey('push-handshake', { keySize: 2048 });
  await withSealbox('push-handshake', async (box) => {
    const validation = await post(
      box,
      gridEvent('Microsoft.EventGrid.SubscriptionValidationEvent', { validationCode: 'abc-123' }),
    );
    assert.equal(validation.status, 200);
    assert.deepEqual(await validation.json(), { validationResponse: 'abc-123' });
    const options = await fetch(`${box.sealbox.webhookUrl}?secret=${SECRET}`, {
      method: 'OPTIONS',
      headers: { 'WebHook-Request-Origin': 'eventgrid.azure.net' },
    });
    assert.equal(options.status, 200);
    assert.equal(options.headers.get('webhook-allowed-origin'), 'eventgrid.azure.net');
    assert.equal(
      (await post(box, gridEvent('Microsoft.KeyVault.KeyExpired'), 'wrong-secret-wrong-secret')).status,
      401,
    );
    const bearer = await fetch(box.sealbox.webhookUrl!, {
      method: 'POST',
      headers: { authorization: `Bearer ${SECRET}` },
      body: JSON.stringify(gridEvent('Microsoft.KeyVault.KeyExpired')),
    });
    assert.equal(bearer.status, 200);
    const bad = await fetch(`${box.sealbox.webhookUrl}?secret=${SECRET}`, {
      method: 'POST',
      body: '{not json',
    });
    assert.equal(bad.status, 400);
  });
});

test('Admin RevokeKey alone refuses a disabled key; GetKeyStatus and FlushCache report', async () => {
  const key = await keys.createRsaKey('push-admin', { keySize: 2048 });
  await withSealbox('push-admin', async (box, admin) => {
    const { ciphertext } = await encrypt(box.client, 'pay', Buffer.from('x'));
    await decrypt(box.client, ciphertext);
    const before = await call<object, KeyStatusList__Output>(admin.GetKeyStatus.bind(admin), {});
    const row = before.keys.find((k) => k.keyId === key.id);
    assert.ok(row, JSON.stringify(before));
    assert.equal(row.cachedDecryptDeks, 1);
    assert.equal(row.cachedEncryptDeks, 1);
    await keys.updateKeyProperties('push-admin', { enabled: false });
    assert.equal(
      await refused(decrypt(box.client, ciphertext)),
      false,
      'cached DEK still serves before RevokeKey',
    );
    const revoked = await call<object, KeyStatusList__Output>(admin.RevokeKey.bind(admin), { keyId: key.id });
    const after = revoked.keys.find((k) => k.keyId === key.id);
    assert.equal(after?.state, 'disabled');
    assert.match(after?.refusedReason ?? '', /disabled/);
    assert.equal(after?.cachedDecryptDeks, 0, 'evicted');
    assert.equal(await refused(decrypt(box.client, ciphertext)), true);
    await keys.updateKeyProperties('push-admin', { enabled: true });
    await call(admin.RevokeKey.bind(admin), { keyAlias: 'pay' });
    await decrypt(box.client, ciphertext);
    const flushed = await call<object, { decryptDeks: number }>(admin.FlushCache.bind(admin), {});
    assert.equal(flushed.decryptDeks, 1);
    assert.equal(box.sealbox.stats().cache.entries.decrypt, 0);
  });
});

test('KeyNewVersionCreated adopts a rotation for new DEKs without a restart; old data still decrypts', async () => {
  await keys.createRsaKey('push-rotate', { keySize: 2048 });
  await withSealbox('push-rotate', async (box) => {
    const first = await encrypt(box.client, 'pay', Buffer.from('v1'));
    const rotated = await keys.rotateKey('push-rotate');
    const res = await post(
      box,
      gridEvent('Microsoft.KeyVault.KeyNewVersionCreated', { ObjectName: 'push-rotate' }),
    );
    assert.equal(res.status, 200);
    const second = await encrypt(box.client, 'pay', Buffer.from('v2'));
    assert.notEqual(second.keyId, first.keyId);
    assert.equal(second.keyId, rotated.id);
    assert.equal((await decrypt(box.client, first.ciphertext)).plaintext.toString(), 'v1');
    assert.equal((await decrypt(box.client, second.ciphertext)).plaintext.toString(), 'v2');
  });
});
