/**
 * End to end through the production KEK path: gRPC → sealbox → Azure provider → @azure/keyvault-keys
 * over real HTTPS (trusting only the dev vault's CA) → the embedded dev vault. Vault calls are counted
 * with the dev vault's own counters.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { KeyClient } from '@azure/keyvault-keys';
import { decrypt, decryptStream, encrypt, encryptStream, errorCode } from '../../src/client/client';
import type { ConfigInput } from '../../src/config/config';
import { parseHeader } from '../../src/crypto/format';
import {
  type DevVault,
  devVaultClientOptions,
  sealboxKeyConfig,
  startDevVault,
  staticTokenCredential,
} from '../../src/devvault';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';

const FULL = 'full-access';
const NO_UNWRAP = 'no-unwrap';
let dir: string;
let vault: DevVault;
let keys: KeyClient;

/**
 * A sealbox config with alias "pay" on the dev vault's key `keyName`, authenticating as `token`. The DEK
 * cache is off unless `cache` is true, so every message is one vault call and provider behaviour
 * (errors, retries) shows on every request.
 */
function azureKeys(keyName: string, token = FULL, retry?: object, cache = false): ConfigInput {
  return {
    cache: { enabled: cache },
    keys: {
      pay: {
        ...sealboxKeyConfig(vault, keyName, token),
        ...(retry ? { retry } : {}),
      },
    },
  };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sealbox-e2e-'));
  vault = await startDevVault({
    dataDir: join(dir, 'vault'),
    identities: {
      [FULL]: { name: 'sealbox', permissions: ['get', 'create', 'update', 'wrapKey', 'unwrapKey'] },
      [NO_UNWRAP]: { name: 'no-unwrap', permissions: ['get', 'wrapKey'] },
    },
  });
  keys = new KeyClient(vault.url, staticTokenCredential(FULL), devVaultClientOptions(vault));
});

after(async () => {
  await vault.close();
  rmSync(dir, { recursive: true, force: true });
});

async function withSealbox<T>(config: ConfigInput, fn: (box: TestSealbox) => Promise<T>): Promise<T> {
  const box = await startTestSealbox(config);
  try {
    return await fn(box);
  } finally {
    await box.close();
  }
}

test('encrypt → sealbox → SDK → dev vault: the header carries the versioned key id; a restarted sealbox decrypts', async () => {
  const key = await keys.createRsaKey('e2e-rsa', { keySize: 2048 });
  vault.resetCounters();
  const plaintext = randomBytes(100_000);
  const sealed = await withSealbox(azureKeys('e2e-rsa', FULL, undefined, true), async (box) => {
    const unary = await encrypt(box.client, 'pay', plaintext, { tenant: 'acme' });
    const streamed = await encryptStream(box.client, 'pay', [
      plaintext.subarray(0, 7),
      plaintext.subarray(7),
    ]);
    return { unary, streamed };
  });
  assert.equal(sealed.unary.keyId, key.id, 'the full versioned key id');
  const header = parseHeader(sealed.unary.ciphertext);
  assert.ok(header);
  assert.equal(header.keyId, key.id);
  assert.equal(header.wrapAlgorithm, 'RSA-OAEP-256');
  assert.equal(header.wrappedDek.length, 256, 'RSA-2048 wraps to 256 bytes');
  assert.equal(vault.counters()['wrapKey'], 1, 'both messages share the cached DEK: one wrap');

  // A fresh sealbox process state (nothing cached) decrypts both through the vault.
  vault.resetCounters();
  await withSealbox(azureKeys('e2e-rsa', FULL, undefined, true), async (box) => {
    const a = await decrypt(box.client, sealed.unary.ciphertext, { tenant: 'acme' });
    assert.ok(a.plaintext.equals(plaintext));
    const b = await decryptStream(box.client, [sealed.streamed.data]);
    assert.ok(b.data.equals(plaintext));
  });
  assert.equal(vault.counters()['unwrapKey'], 1, 'one unwrap, then the cached DEK serves the second message');
});

test('an oct-HSM key wraps with A256KW', async () => {
  const key = await keys.createOctKey('e2e-oct', { hsm: true, keySize: 256 });
  await withSealbox(azureKeys('e2e-oct'), async (box) => {
    const { ciphertext, keyId } = await encrypt(box.client, 'pay', Buffer.from('hsm'));
    assert.equal(keyId, key.id);
    assert.equal(parseHeader(ciphertext)?.wrapAlgorithm, 'A256KW');
    assert.equal((await decrypt(box.client, ciphertext)).plaintext.toString(), 'hsm');
  });
});

test('a disabled key version is refused with FAILED_PRECONDITION / KEY_DISABLED', async () => {
  await keys.createRsaKey('e2e-disabled', { keySize: 2048 });
  await withSealbox(azureKeys('e2e-disabled'), async (box) => {
    const { ciphertext } = await encrypt(box.client, 'pay', Buffer.from('before'));
    await keys.updateKeyProperties('e2e-disabled', { enabled: false });
    const err = await decrypt(box.client, ciphertext).then(
      () => assert.fail('decrypt under a disabled key must fail'),
      (e: unknown) => e,
    );
    assert.equal((err as { code: number }).code, 9);
    assert.equal(errorCode(err), 'KEY_DISABLED');
  });
});

test('an identity without unwrapKey gets PERMISSION_DENIED naming the operation', async () => {
  await keys.createRsaKey('e2e-perm', { keySize: 2048 });
  const { ciphertext } = await withSealbox(azureKeys('e2e-perm'), (box) =>
    encrypt(box.client, 'pay', Buffer.from('x')),
  );
  await withSealbox(azureKeys('e2e-perm', NO_UNWRAP), async (box) => {
    const err = await decrypt(box.client, ciphertext).then(
      () => assert.fail('must be refused'),
      (e: unknown) => e,
    );
    assert.equal((err as { code: number }).code, 7);
    assert.equal(errorCode(err), 'PERMISSION_DENIED');
    assert.match((err as { details: string }).details, /unwrap/i);
  });
});

test('provider retries: a 5xx burst is retried with backoff; a vault that keeps failing gives UNAVAILABLE', async () => {
  await keys.createRsaKey('e2e-retry', { keySize: 2048 });
  const retry = { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 50, timeoutMs: 5000 };
  await withSealbox(azureKeys('e2e-retry', FULL, retry), async (box) => {
    await encrypt(box.client, 'pay', Buffer.from('warm')); // resolves the current version
    vault.resetCounters();
    vault.setFaults({ errorRate: 1 });
    const err = await encrypt(box.client, 'pay', Buffer.from('x')).then(
      () => assert.fail('must fail while the vault answers 5xx'),
      (e: unknown) => e,
    );
    vault.setFaults({ errorRate: 0 });
    assert.equal((err as { code: number }).code, 14);
    assert.equal(errorCode(err), 'VAULT_UNAVAILABLE');
    assert.equal(vault.counters()['wrapKey'] ?? 0, 0, 'no wrap succeeded');
    assert.equal(
      vault.counters()['faults.errors'],
      3,
      `exactly maxAttempts requests reached the vault: ${JSON.stringify(vault.counters())}`,
    );
    // Service resumes by itself once the vault answers again.
    await encrypt(box.client, 'pay', Buffer.from('after'));
  });
});

test('provider retries: a 429 with Retry-After is waited out and the call succeeds', async () => {
  await keys.createRsaKey('e2e-429', { keySize: 2048 });
  await withSealbox(azureKeys('e2e-429'), async (box) => {
    await encrypt(box.client, 'pay', Buffer.from('warm'));
    vault.setFaults({ throttling: { enabled: true, windowMs: 1000, limitsPer10s: { rsa2048: 1 } } });
    vault.resetCounters();
    try {
      const started = Date.now();
      await encrypt(box.client, 'pay', Buffer.from('one'));
      await encrypt(box.client, 'pay', Buffer.from('two')); // throttled once, then allowed
      const throttled = vault.counters()['throttled'] ?? 0;
      assert.ok(throttled >= 1, `the vault throttled: ${JSON.stringify(vault.counters())}`);
      // The vault counts every authenticated wrap request, throttled ones included.
      assert.equal(vault.counters()['wrapKey'], 2 + throttled);
      assert.ok(Date.now() - started >= 200, 'the provider waited for Retry-After');
    } finally {
      vault.setFaults({ throttling: { enabled: false } });
    }
  });
});
