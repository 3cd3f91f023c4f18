/**
 * Revoke-on-disable through the real path (gRPC → sealbox → Azure SDK → dev vault): the key watcher
 * (poll interval 1 s) refuses a disabled or deleted key version within a poll, zeroes its cached DEKs,
 * stops streams in flight, and resumes when the key is enabled or recovered. A vault outage is not a
 * revocation: cached DEKs keep serving until their TTL, then calls fail closed with UNAVAILABLE.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeyClient } from '@azure/keyvault-keys';
import { credentials } from '@grpc/grpc-js';
import { loadApi } from '../../src/api/proto';
import { decrypt, encrypt, errorCode } from '../../src/client/client';
import type { ConfigInput } from '../../src/config/config';
import {
  type DevVault,
  devVaultClientOptions,
  sealboxKeyConfig,
  startDevVault,
  staticTokenCredential,
} from '../../src/devvault';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';

const TOKEN = 'revocation-test';
let dir: string;
let vault: DevVault;
let keys: KeyClient;

async function openVault(port = 0): Promise<DevVault> {
  return startDevVault({
    dataDir: join(dir, 'vault'),
    port,
    identities: {
      [TOKEN]: {
        name: 'sealbox',
        permissions: ['get', 'create', 'update', 'delete', 'recover', 'purge', 'wrapKey', 'unwrapKey'],
      },
    },
  });
}

function config(keyName: string, extra: ConfigInput = {}): ConfigInput {
  return {
    revocation: { pollIntervalMs: 1000 },
    keys: {
      pay: {
        ...sealboxKeyConfig(vault, keyName, TOKEN),
        retry: { maxAttempts: 1, timeoutMs: 2000 },
      },
    },
    ...extra,
  };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sealbox-revocation-'));
  vault = await openVault();
  keys = new KeyClient(vault.url, staticTokenCredential(TOKEN), devVaultClientOptions(vault));
});

after(async () => {
  await vault.close();
  rmSync(dir, { recursive: true, force: true });
});

async function failure(
  promise: Promise<unknown>,
): Promise<{ code: number; details: string; sealbox?: string }> {
  const err = await promise.then(
    () => assert.fail('the call must be refused'),
    (e: unknown) => e as { code: number; details: string },
  );
  return { code: err.code, details: err.details, ...(errorCode(err) ? { sealbox: errorCode(err)! } : {}) };
}

async function until(what: string, condition: () => Promise<boolean>, timeoutMs = 8000): Promise<number> {
  const started = Date.now();
  while (!(await condition())) {
    if (Date.now() - started > timeoutMs) assert.fail(`timed out waiting for: ${what}`);
    await sleep(100);
  }
  return Date.now() - started;
}

const refused = (p: Promise<unknown>) =>
  p.then(
    () => false,
    (e: unknown) => errorCode(e) === 'KEY_DISABLED',
  );

test('disabling the key version stops 16 running streams and new calls; re-enabling resumes', async (t) => {
  await keys.createRsaKey('rev-disable', { keySize: 2048 });
  const box = await startTestSealbox(config('rev-disable'));
  try {
    const { ciphertext } = await encrypt(box.client, 'pay', Buffer.from('cached'));
    await decrypt(box.client, ciphertext); // the DEK is cached on both sides now
    const streams = Array.from({ length: 16 }, () => runEncryptStream(box));
    await sleep(300);
    await keys.updateKeyProperties('rev-disable', { enabled: false });
    const outcomes = await Promise.all(streams);
    for (const outcome of outcomes) {
      assert.equal(outcome.code, 9, `stream ended with ${JSON.stringify(outcome)}`);
      assert.equal(outcome.sealbox, 'KEY_DISABLED');
      assert.match(outcome.details, /rev-disable/);
    }
    // New calls are refused, even those a cached DEK could have served.
    const e1 = await failure(decrypt(box.client, ciphertext));
    assert.equal(e1.code, 9);
    assert.match(e1.details, /disabled/);
    assert.equal(box.sealbox.stats().cache.entries.decrypt, 0, 'the cached DEKs were evicted');
    // Readiness answers from the watcher's last result.
    await until(
      'health reports the key',
      async () => (await health(box, 'sealbox.key.pay')) === 'NOT_SERVING',
    );
    // The harness also configures a local key ("test"), which still serves: the server stays ready.
    assert.equal(await health(box, ''), 'SERVING');
    assert.equal(await health(box, 'sealbox.key.test'), 'SERVING');
    await keys.updateKeyProperties('rev-disable', { enabled: true });
    const resumedAfter = await until(
      'service resumes',
      async () => !(await refused(decrypt(box.client, ciphertext))),
    );
    t.diagnostic(`served again ${resumedAfter} ms after the key was re-enabled`);
    await encrypt(box.client, 'pay', Buffer.from('after'));
    await until('health serving again', async () => (await health(box, 'sealbox.key.pay')) === 'SERVING');
  } finally {
    await box.close();
  }
});

test('soft-delete refuses; recover serves again; purge makes the data permanently undecryptable', async () => {
  await keys.createRsaKey('rev-delete', { keySize: 2048 });
  const box = await startTestSealbox(config('rev-delete'));
  let ciphertext: Buffer = Buffer.alloc(0);
  try {
    ciphertext = (await encrypt(box.client, 'pay', Buffer.from('x'))).ciphertext;
    await decrypt(box.client, ciphertext);
    await (await keys.beginDeleteKey('rev-delete', { intervalInMs: 50 })).pollUntilDone();
    await until('refused after soft-delete', () => refused(decrypt(box.client, ciphertext)));
    await (await keys.beginRecoverDeletedKey('rev-delete', { intervalInMs: 50 })).pollUntilDone();
    await until('served after recover', async () => !(await refused(decrypt(box.client, ciphertext))));
    await (await keys.beginDeleteKey('rev-delete', { intervalInMs: 50 })).pollUntilDone();
    await keys.purgeDeletedKey('rev-delete');
    await until('refused after purge', () => refused(decrypt(box.client, ciphertext)));
    const e = await failure(decrypt(box.client, ciphertext));
    assert.match(e.details, /deleted/);
  } finally {
    await box.close();
  }
  // A sealbox that never saw the key: the vault has no such key any more, and the error says which.
  const fresh = await startTestSealbox(config('rev-delete'));
  try {
    const e = await failure(decrypt(fresh.client, ciphertext));
    assert.equal(e.sealbox, 'KEY_NOT_FOUND', JSON.stringify(e));
    assert.match(e.details, /rev-delete/);
  } finally {
    await fresh.close();
  }
});

test('vault outage: cached DEKs serve until their TTL, then UNAVAILABLE; the vault returns → recovers', async () => {
  await keys.createRsaKey('rev-outage', { keySize: 2048 });
  const box = await startTestSealbox(config('rev-outage', { cache: { decrypt: { ttlMs: 2500 } } }));
  const port = vault.port;
  try {
    const { ciphertext } = await encrypt(box.client, 'pay', Buffer.from('outage'));
    await decrypt(box.client, ciphertext);
    await vault.close();
    // The watcher's checks fail now (no verdict): no revocation, the cached DEK keeps serving.
    await sleep(1500);
    assert.equal((await decrypt(box.client, ciphertext)).plaintext.toString(), 'outage');
    // Past the TTL the DEK is gone and the vault is needed: fail closed.
    await sleep(1500);
    const e = await failure(decrypt(box.client, ciphertext));
    assert.equal(e.code, 14, JSON.stringify(e));
    assert.equal(e.sealbox, 'VAULT_UNAVAILABLE');
    vault = await openVault(port);
    await until('recovers when the vault is back', async () =>
      decrypt(box.client, ciphertext).then(
        () => true,
        () => false,
      ),
    );
  } finally {
    await box.close();
  }
});

/** The gRPC health status of `service`. */
function health(box: TestSealbox, service: string): Promise<string> {
  const { Health } = loadApi().health.grpc.health.v1;
  const client = new Health(box.target, credentials.createInsecure());
  return new Promise((resolve, reject) =>
    client.Check({ service }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(String(res?.status));
    }),
  );
}

/** Encrypts a stream until the server ends it; returns how it ended. */
function runEncryptStream(box: TestSealbox): Promise<{ code: number; details: string; sealbox?: string }> {
  return new Promise((resolve) => {
    const call = box.client.EncryptStream();
    let ended = false;
    call.on('data', () => {});
    call.on('error', (err: { code: number; details: string }) => {
      ended = true;
      resolve({
        code: err.code,
        details: err.details,
        ...(errorCode(err) ? { sealbox: errorCode(err)! } : {}),
      });
    });
    call.on('end', () => {
      ended = true;
      resolve({ code: 0, details: 'OK' });
    });
    call.write({ init: { keyAlias: 'pay', context: {}, chunkSize: 0 } });
    const block = randomBytes(256 * 1024);
    const pump = () => {
      // Keep writing for up to 10 s; the revocation must end the stream long before that.
      const started = Date.now();
      const loop = () => {
        if (ended) return;
        if (Date.now() - started > 10_000) return call.end();
        if (call.write({ data: block })) setImmediate(loop);
        else call.once('drain', loop);
      };
      loop();
    };
    pump();
  });
}
