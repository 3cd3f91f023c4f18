/**
 * Key state you can trust (issue 12), through the real path: gRPC over the Unix socket → sealbox →
 * the real Azure SDK over HTTPS → the dev vault. One test per failure the issue reproduced:
 * forged versions do not grow the watched set or spend the vault's budget after they stop; a credential
 * outage is not revocation; an extended expiry resumes wrapping within one poll with no flapping, and an
 * expired version still decrypts; two aliases cannot own one key; health exists from the start for
 * every alias (local ones included); an empty webhook secret file is refused.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AccessToken, TokenCredential } from '@azure/identity';
import type { KeyClient } from '@azure/keyvault-keys';
import { credentials } from '@grpc/grpc-js';
import { loadApi } from '../../src/api/proto';
import { decrypt, encrypt, errorCode } from '../../src/client/client';
import { ConfigError, type ConfigInput, validateConfig } from '../../src/config/config';
import { parseHeader } from '../../src/crypto/format';
import { type DevVault, sealboxKeyConfig } from '../../src/devvault';
import { createLocalKeyFile } from '../../src/kek/local';
import { createLogger } from '../../src/log/logger';
import { startSealbox } from '../../src/main';
import { startTestSealbox } from '../helpers/harness';
import { startTokenVault, type TokenVault } from '../helpers/token-vault';

const TOKEN = 'key-state-test';
let dir: string;
let vault: DevVault;
let keys: KeyClient;
let tokenVault: TokenVault;

before(async () => {
  tokenVault = await startTokenVault('key-state', TOKEN, ['get', 'create', 'update', 'wrapKey', 'unwrapKey']);
  ({ dir, vault, keys } = tokenVault);
});

after(() => tokenVault.close());

function config(keyName: string, extra: ConfigInput = {}): ConfigInput {
  return {
    revocation: { pollIntervalMs: 1000, maxChecksPerSecond: 50 },
    keys: { pay: { ...sealboxKeyConfig(vault, keyName, TOKEN), retry: { maxAttempts: 1, timeoutMs: 2000 } } },
    ...extra,
  };
}

const getKeys = () => vault.counters()['getKey'] ?? 0;

/** A genuine ciphertext whose header names another version of the same key (same length). */
function forge(ciphertext: Buffer, version: string): Buffer {
  const header = parseHeader(ciphertext);
  assert.ok(header, 'the ciphertext has a complete header');
  const keyId = header.keyId;
  const forgedId = `${keyId.slice(0, keyId.lastIndexOf('/') + 1)}${version}`;
  assert.equal(forgedId.length, keyId.length);
  const at = ciphertext.indexOf(Buffer.from(keyId, 'utf8'));
  const out = Buffer.from(ciphertext);
  out.write(forgedId, at, 'utf8');
  return out;
}

test('1,000 forged versions: one bounded lookup each while they arrive, nothing watched and zero extra vault GETs after', async () => {
  await keys.createRsaKey('ks-forged', { keySize: 2048 });
  const box = await startTestSealbox(config('ks-forged'));
  try {
    const { ciphertext } = await encrypt(box.client, 'pay', Buffer.from('genuine'));
    await decrypt(box.client, ciphertext);
    await sleep(1500); // a poll or two with only the genuine version
    const before = getKeys();
    const started = Date.now();
    const versions = Array.from({ length: 1000 }, (_, i) => i.toString(16).padStart(32, 'f'));
    let notFound = 0;
    for (let i = 0; i < versions.length; i += 50) {
      await Promise.all(
        versions.slice(i, i + 50).map(async (v) => {
          const err = await decrypt(box.client, forge(ciphertext, v)).then(
            () => assert.fail('a forged version must not decrypt'),
            (e: unknown) => e,
          );
          if (errorCode(err) === 'KEY_NOT_FOUND') notFound++;
        }),
      );
    }
    const during = getKeys() - before;
    const polls = Math.ceil((Date.now() - started) / 900) + 1;
    assert.equal(notFound, 1000, 'each forged version answers KEY_NOT_FOUND');
    // One lookup per forged version, plus the watcher's own polls (current + the genuine version).
    assert.ok(during <= 1000 + 2 * polls, `GETs while they arrived: ${during} (polls ≈ ${polls})`);

    // The same forged version again: answered from the negative cache, no vault call.
    const again = getKeys();
    for (let i = 0; i < 20; i++) await decrypt(box.client, forge(ciphertext, versions[0]!)).catch(() => {});
    assert.ok(getKeys() - again <= 2, `repeats cost ${getKeys() - again} GETs (watcher polls only)`);

    // After they stop: the watcher polls only the current version and the genuine one.
    const status = await adminStatus(box.sealbox);
    assert.ok(status.length <= 2, `tracked versions: ${status.map((s) => s.keyId).join(', ')}`);
    // One current version per alias (pay's is also the version in use; the harness's local alias "test").
    assert.equal(box.sealbox.watcher?.watchedCount(), 2);
    const quiet = getKeys();
    await sleep(3200);
    const after = getKeys() - quiet;
    assert.ok(after <= 4, `GETs in the 3 s after the forged calls stopped: ${after} (≈ 1 per poll)`);
    // The genuine ciphertext still decrypts: nothing was revoked.
    assert.equal((await decrypt(box.client, ciphertext)).plaintext.toString(), 'genuine');
  } finally {
    await box.close();
  }
});

/** GetKeyStatus rows as the admin service would answer (from the same sources). */
async function adminStatus(sealbox: {
  watcher?: { snapshot(): Array<{ keyId: string; state: string }> } | undefined;
}) {
  return sealbox.watcher?.snapshot() ?? [];
}

/**
 * A credential over the static token that the test can take down: while `down`, every token request
 * throws CredentialUnavailableError, as @azure/identity's managed-identity credential does when the
 * identity endpoint cannot be reached. Tokens expire at once, so the SDK asks for one on every request.
 */
class SwitchableCredential implements TokenCredential {
  down = false;
  calls = 0;
  async getToken(): Promise<AccessToken> {
    this.calls++;
    if (this.down) {
      const err = new Error('ManagedIdentityCredential: the identity endpoint could not be reached');
      err.name = 'CredentialUnavailableError';
      throw err;
    }
    return { token: TOKEN, expiresOnTimestamp: Date.now() + 200 };
  }
}

test('a credential outage is not revocation: cached DEKs keep serving, nothing is refused, new keys fail UNAVAILABLE', async () => {
  await keys.createRsaKey('ks-credential', { keySize: 2048 });
  const credential = new SwitchableCredential();
  const box = await startTestSealbox(config('ks-credential'), { credential });
  try {
    const { ciphertext } = await encrypt(box.client, 'pay', Buffer.from('cached'));
    await decrypt(box.client, ciphertext); // cached on both sides
    credential.down = true;
    const callsBefore = credential.calls;
    await sleep(2500); // two or three polls, each failing to get a token
    assert.ok(credential.calls > callsBefore, 'the watcher tried (and failed) to get tokens');
    // Served from the cache: no revocation happened.
    assert.equal((await decrypt(box.client, ciphertext)).plaintext.toString(), 'cached');
    const { ciphertext: more } = await encrypt(box.client, 'pay', Buffer.from('still encrypting'));
    assert.equal((await decrypt(box.client, more)).plaintext.toString(), 'still encrypting');
    const rows = box.sealbox.watcher!.snapshot();
    assert.ok(rows.length > 0);
    for (const row of rows) assert.equal(row.state, 'enabled', `${row.keyId} stays enabled`);
    assert.ok(
      rows.some((r) => /CredentialUnavailableError/.test((r as { lastError?: string }).lastError ?? '')),
      'the failed check is noted',
    );
    // A DEK that is not cached needs the vault: UNAVAILABLE, not PERMISSION_DENIED or KEY_DISABLED.
    box.sealbox.flushCache();
    const err = await decrypt(box.client, ciphertext).then(
      () => assert.fail('a cold decrypt needs a token'),
      (e: unknown) => e as { code: number },
    );
    assert.equal(err.code, 14);
    assert.equal(errorCode(err), 'VAULT_UNAVAILABLE');
    credential.down = false;
    assert.equal((await decrypt(box.client, ciphertext)).plaintext.toString(), 'cached');
  } finally {
    await box.close();
  }
});

test('expiry: an expired version wraps nothing new but still decrypts; extending exp resumes wraps within one poll, no flapping', async () => {
  await keys.createRsaKey('ks-expiry', { keySize: 2048 });
  const box = await startTestSealbox(config('ks-expiry', { cache: { encrypt: { maxAgeMs: 500 } } }));
  try {
    const { ciphertext } = await encrypt(box.client, 'pay', Buffer.from('before expiry'));
    await keys.updateKeyProperties('ks-expiry', { expiresOn: new Date(Date.now() - 60_000) });
    box.sealbox.flushCache();
    await sleep(1500); // the watcher sees exp
    const err = await encrypt(box.client, 'pay', Buffer.from('x')).then(
      () => assert.fail('an expired version must not wrap new data keys'),
      (e: unknown) => e as { details: string },
    );
    assert.equal(errorCode(err), 'KEY_DISABLED');
    assert.match(err.details, /expired/);
    // Key Vault allows unwrap outside nbf/exp; so does sealbox (the SDK's cached-copy check is gone).
    assert.equal((await decrypt(box.client, ciphertext)).plaintext.toString(), 'before expiry');

    await keys.updateKeyProperties('ks-expiry', { expiresOn: new Date(Date.now() + 3_600_000) });
    const extendedAt = Date.now();
    let resumed = 0;
    while (Date.now() - extendedAt < 5000) {
      const ok = await encrypt(box.client, 'pay', Buffer.from('after')).then(
        () => true,
        () => false,
      );
      if (ok) {
        resumed = Date.now() - extendedAt;
        break;
      }
      await sleep(100);
    }
    assert.ok(resumed > 0 && resumed <= 2500, `wraps resumed ${resumed} ms after the extension (poll 1 s)`);
    // No flapping: every encrypt for the next 3 s (several polls, DEKs retiring every 0.5 s) succeeds.
    const until = Date.now() + 3000;
    let count = 0;
    while (Date.now() < until) {
      await encrypt(box.client, 'pay', Buffer.from(`after ${count}`));
      count++;
      await sleep(50);
    }
    assert.ok(count > 10);
  } finally {
    await box.close();
  }
});

test('two aliases cannot own one key: same vault and key name, same key file, or two files with one name', async () => {
  const azure = sealboxKeyConfig(vault, 'shared-key', TOKEN);
  assert.throws(
    () => validateConfig({ keys: { tenantA: azure, tenantB: { ...azure, keyName: 'SHARED-KEY' } } }),
    (e: unknown) => e instanceof ConfigError && /keys\.tenantA and keys\.tenantB/.test(e.message),
  );
  const file = join(dir, 'one.json');
  createLocalKeyFile(file, 'tenant');
  assert.throws(
    () =>
      validateConfig({
        keys: {
          tenantA: { provider: 'local', file },
          tenantB: { provider: 'local', file: `${dir}/./one.json` },
        },
      }),
    (e: unknown) => e instanceof ConfigError && /keys\.tenantA and keys\.tenantB/.test(e.message),
  );
  // Two files generated with the same name inside (before names were unique): refused at start.
  const a = join(dir, 'a.json');
  const b = join(dir, 'b.json');
  createLocalKeyFile(a, 'dev');
  createLocalKeyFile(b, 'dev');
  const cfg = validateConfig({
    dataDir: dir,
    listen: { socket: join(dir, 'never.sock') },
    keys: { tenantA: { provider: 'local', file: a }, tenantB: { provider: 'local', file: b } },
    log: { level: 'silent' },
  });
  await assert.rejects(
    startSealbox(cfg, createLogger('silent')),
    (e: unknown) =>
      e instanceof ConfigError &&
      /keys\.tenantA and keys\.tenantB are the same key \(local:dev\)/.test(e.message),
  );
});

test('health from the start: every alias, Azure and local, has its health name and a GetKeyStatus row at once', async () => {
  await keys.createRsaKey('ks-health', { keySize: 2048 });
  const box = await startTestSealbox(config('ks-health'));
  try {
    const api = loadApi();
    const health = new api.health.grpc.health.v1.Health(box.target, credentials.createInsecure());
    const check = (service: string) =>
      new Promise<string>((resolve, reject) =>
        health.check({ service }, (err, res) => (err ? reject(err) : resolve(String(res?.status)))),
      );
    // No wait for a poll interval (the default would be 30 s): both answer right after start.
    assert.equal(await check('sealbox.key.pay'), 'SERVING');
    assert.equal(await check('sealbox.key.test'), 'SERVING');
    await sleep(300); // the first check, started at start, has finished
    const rows = box.sealbox.watcher!.snapshot();
    assert.ok(
      rows.some((r) => r.keyId.startsWith('local:test/')),
      'the local alias is listed',
    );
    assert.ok(
      rows.some((r) => r.keyId.includes('/keys/ks-health/')),
      'the Azure alias is listed',
    );
    health.close();
  } finally {
    await box.close();
  }
});

test('an empty webhook secret file is refused at start (it would authenticate every caller)', async () => {
  const secretFile = join(dir, 'empty-secret');
  writeFileSync(secretFile, '\n');
  await assert.rejects(
    startTestSealbox({ webhook: { listen: { port: 0 }, secretFile } }),
    (e: unknown) => e instanceof ConfigError && /holds no secret/.test(e.message),
  );
  assert.throws(
    () => validateConfig({ webhook: { listen: { host: '0.0.0.0', port: 8080 }, secret: 'x'.repeat(24) } }),
    /webhook\.tls is required/,
  );
});

/** Starts sealbox on `keyName` with a short confirmation window; returns it with two ciphertexts. */
async function withTwoDeks(keyName: string, refusalConfirmMs: number) {
  await keys.createRsaKey(keyName, { keySize: 2048 });
  const box = await startTestSealbox(
    config(keyName, {
      revocation: { pollIntervalMs: 1000, maxChecksPerSecond: 50, refusalConfirmMs },
      // One message per DEK: c1 and c2 get different DEKs, so c2's unwrap is a vault call.
      cache: { encrypt: { maxMessages: 1, refreshAhead: 0 } },
    }),
  );
  const c1 = (await encrypt(box.client, 'pay', Buffer.from('one'))).ciphertext;
  assert.equal((await decrypt(box.client, c1)).plaintext.toString(), 'one'); // DEK 1 cached for decrypt
  const c2 = (await encrypt(box.client, 'pay', Buffer.from('two'))).ciphertext;
  return { box, c1, c2 };
}

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 'OK',
    (e: unknown) => errorCode(e) ?? 'none',
  );

test('a transient 403 (RBAC propagation) then success inside the window: no refusal, nothing zeroed', async () => {
  const { box, c1, c2 } = await withTwoDeks('ks-transient', 1500);
  try {
    vault.forceAnswers({
      operations: ['unwrapKey'],
      keyName: 'ks-transient',
      count: 1,
      answer: 'ForbiddenByRbac',
    });
    assert.equal(await codeOf(decrypt(box.client, c2)), 'PERMISSION_DENIED', 'the refused call itself fails');
    assert.equal(await codeOf(decrypt(box.client, c1)), 'OK', 'cached DEKs keep serving meanwhile');
    const pending = box.sealbox.watcher!.snapshot().find((r) => r.refusalPending);
    assert.ok(pending, 'the refusal awaits confirmation (GetKeyStatus refusal_pending)');
    await sleep(2500); // past the window: the confirming unwrap succeeds (the forced answer is used up)
    assert.equal(await codeOf(decrypt(box.client, c1)), 'OK');
    assert.equal(await codeOf(decrypt(box.client, c2)), 'OK');
    for (const row of box.sealbox.watcher!.snapshot()) {
      assert.equal(row.state, 'enabled', row.keyId);
      assert.equal(row.refusalPending, undefined, row.keyId);
    }
    assert.equal(box.sealbox.stats().cache.evictions['revoked'] ?? 0, 0, 'no DEK was zeroed by revocation');
  } finally {
    await box.close();
  }
});

test('a firewall 403 on every check is an outage: never a refusal', async () => {
  const { box, c1 } = await withTwoDeks('ks-firewall', 1000);
  try {
    vault.forceAnswers({ keyName: 'ks-firewall', count: 1000, answer: 'ForbiddenByFirewall' });
    await sleep(3000); // three polls and any confirmation window, all answered 403 ForbiddenByFirewall
    assert.equal(await codeOf(decrypt(box.client, c1)), 'OK', 'cached DEKs serve');
    for (const row of box.sealbox.watcher!.snapshot()) {
      assert.equal(row.state, 'enabled', row.keyId);
      assert.equal(row.refusalPending, undefined, 'a firewall 403 is not even a suspicion');
    }
  } finally {
    vault.forceAnswers();
    await box.close();
  }
});

test('a permission removed for good is refused within the confirmation window; restored when granted again', async () => {
  const { box, c1 } = await withTwoDeks('ks-removed', 1500);
  try {
    const removedAt = Date.now();
    vault.changeAccess({ setAccessPolicies: [{ principal: 'sealbox', permissions: [] }] });
    let refusedAfter = 0;
    while (Date.now() - removedAt < 8000) {
      if ((await codeOf(decrypt(box.client, c1))) === 'KEY_DISABLED') {
        refusedAfter = Date.now() - removedAt;
        break;
      }
      await sleep(100);
    }
    // The first poll (≤ 1.1 s) sees the 403, the confirming check 1.5 s later revokes.
    assert.ok(refusedAfter > 0, 'the cached DEK stopped serving');
    assert.ok(refusedAfter >= 1400, `not before the confirmation window: ${refusedAfter} ms`);
    assert.ok(refusedAfter <= 1100 + 1500 + 1500, `within poll + window (+ slack): ${refusedAfter} ms`);
    assert.ok((box.sealbox.stats().cache.evictions['revoked'] ?? 0) >= 1, 'its DEKs were zeroed');
    assert.ok(box.sealbox.watcher!.snapshot().some((r) => r.state === 'forbidden'));

    vault.changeAccess({
      setAccessPolicies: [
        { principal: 'sealbox', permissions: ['get', 'create', 'update', 'wrapKey', 'unwrapKey'] },
      ],
    });
    let back = false;
    const grantedAt = Date.now();
    while (Date.now() - grantedAt < 5000 && !back) {
      back = (await codeOf(decrypt(box.client, c1))) === 'OK';
      if (!back) await sleep(100);
    }
    assert.ok(back, 'serves again after the next good check');
  } finally {
    await box.close();
  }
});
