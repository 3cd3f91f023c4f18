/**
 * sealbox as a Kubernetes KMS v2 plugin (issue 16), through the real path: a kube-apiserver stand-in
 * (test/helpers/kube-apiserver-sim.ts: Status polling, the key_id check on Encrypt, the size and
 * annotation checks, its DEK-seed cache) → grpc-js over the KMS Unix socket → sealbox → the real Azure
 * SDK over HTTPS → the dev vault, where the tests rotate, disable and re-enable the key.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { credentials, type ServiceError, status } from '@grpc/grpc-js';
import { loadApi } from '../../src/api/proto';
import { connectEnvelope, decrypt, encrypt, errorCode, rewrap } from '../../src/client/client';
import { type ConfigInput, mergeConfigInput, validateConfig } from '../../src/config/config';
import { sealboxKeyConfig } from '../../src/devvault';
import { createLogger } from '../../src/log/logger';
import { type Sealbox, startSealbox } from '../../src/main';
import { KubeApiserverSim, type StoredObject } from '../helpers/kube-apiserver-sim';
import { startTokenVault, type TokenVault } from '../helpers/token-vault';

const TOKEN = 'kms-test';
let tokenVault: TokenVault;

before(async () => {
  tokenVault = await startTokenVault('kms', TOKEN, [
    'get',
    'create',
    'update',
    'rotate',
    'wrapKey',
    'unwrapKey',
  ]);
});

after(() => tokenVault.close());

interface KmsBox {
  readonly sealbox: Sealbox;
  readonly kmsTarget: string;
  readonly kmsSocket: string;
  readonly dir: string;
  /** Every JSON log line sealbox wrote. */
  readonly logs: Array<Record<string, unknown>>;
  sim(options?: Partial<ConstructorParameters<typeof KubeApiserverSim>[1]>): KubeApiserverSim;
  close(): Promise<void>;
}

/** sealbox with the Azure key `keyName` (dev vault) as KMS alias "k8s", logs captured. */
async function startKms(keyName: string, extra: ConfigInput = {}): Promise<KmsBox> {
  const { vault, dir: root } = tokenVault;
  const dir = mkdtempSync(join(root, 'box-'));
  const kmsSocket = join(dir, 'kms', 'kms.sock');
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line));
      done();
    },
  });
  const config = validateConfig(
    mergeConfigInput(
      {
        dataDir: dir,
        listen: { socket: join(dir, 'sealbox.sock') },
        keys: { k8s: sealboxKeyConfig(vault, keyName, TOKEN) },
        kms: { socket: kmsSocket },
        revocation: { pollIntervalMs: 1000, maxChecksPerSecond: 50 },
        pool: { threads: 1 },
        log: { level: 'info' },
        shutdown: { graceMs: 2000 },
      },
      extra,
    ),
  );
  const sealbox = await startSealbox(config, createLogger('info', sink));
  const sims: KubeApiserverSim[] = [];
  const kmsTarget = `unix:${kmsSocket}`;
  // The watcher's first read runs at start; Status answers from it.
  await sealbox.watcher?.checkNow();
  return {
    sealbox,
    kmsTarget,
    kmsSocket,
    dir,
    logs,
    sim(options = {}) {
      const sim = new KubeApiserverSim(kmsTarget, {
        healthyIntervalMs: 60_000,
        unhealthyIntervalMs: 10_000,
        ...options,
      });
      sims.push(sim);
      return sim;
    },
    async close() {
      for (const sim of sims) sim.close();
      await sealbox.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const unwraps = () => tokenVault.vault.counters()['unwrapKey'] ?? 0;
const wraps = () => tokenVault.vault.counters()['wrapKey'] ?? 0;

/** The gRPC status code a KMS call failed with. */
async function failure(promise: Promise<unknown>): Promise<number> {
  return promise.then(
    () => assert.fail('the call must be refused'),
    (err: ServiceError) => err.code,
  );
}

function encryptDirect(sim: KubeApiserverSim, plaintext: Buffer): Promise<unknown> {
  return new Promise((resolve, reject) =>
    sim.client.Encrypt({ plaintext, uid: 'direct' }, (err, res) => (err ? reject(err) : resolve(res))),
  );
}

test('as kube-apiserver uses it: Status, a key_id-equal Encrypt within the size limits (RSA-4096), seeds round trip, uid in every audit line, metrics', async (t) => {
  const key = await tokenVault.keys.createRsaKey('kms-rsa4096', { keySize: 4096 });
  const box = await startKms('kms-rsa4096', { metrics: { listen: { host: '127.0.0.1', port: 0 } } });
  try {
    assert.equal(statSync(box.kmsSocket).mode & 0o777, 0o600, 'the KMS socket is 0600');
    const sim = box.sim();
    const first = await sim.poll();
    assert.equal(first.healthy, true, first.error);
    assert.equal(first.rotated, true);
    assert.equal(first.statusKeyId, key.id, 'key_id is the current Key Vault key version');
    assert.equal(sim.writeKeyId, key.id);
    const objects = new Map<string, StoredObject>();
    for (let i = 0; i < 50; i++) {
      const name = `/registry/secrets/default/s${i}`;
      objects.set(name, sim.write(name, Buffer.from(`secret ${i}`)));
    }
    const stored = objects.values().next().value!;
    // RSA-4096: a 512-byte wrapped DEK in the header, and still under the apiserver's 1 KiB.
    assert.ok(
      stored.encryptedDekSource.length <= 1024,
      `ciphertext ${stored.encryptedDekSource.length} bytes`,
    );
    t.diagnostic(`ciphertext ${stored.encryptedDekSource.length} bytes, key id ${key.id!.length} bytes`);
    // Polls with an unchanged key_id do not call Encrypt again.
    for (let i = 0; i < 3; i++) assert.equal((await sim.poll()).rotated, false);
    assert.equal(sim.calls.encrypt, 1);

    // Another apiserver process (empty seed cache) and a cold sealbox: Decrypt, then one unwrap.
    box.sealbox.flushCache();
    const other = box.sim();
    assert.equal((await other.poll()).healthy, true);
    const before = unwraps();
    for (const [name, object] of objects) {
      const { data, stale } = await other.read(name, object);
      assert.equal(data.toString(), `secret ${name.slice(name.lastIndexOf('s') + 1)}`);
      assert.equal(stale, false, 'same key_id: not stale');
    }
    assert.equal(other.calls.decrypt, 1, 'one Decrypt for one seed');
    assert.equal(unwraps() - before, 1);

    // Every KEK operation a KMS call caused carries that call's uid.
    const kmsLines = box.logs.filter((l) => l['audit'] === 'kek' && String(l['caller']).startsWith('kms:'));
    const uids = new Set([...sim.uids, ...other.uids]);
    assert.ok(kmsLines.some((l) => l['operation'] === 'wrapKey' && l['caller'] === 'kms:Encrypt'));
    assert.ok(kmsLines.some((l) => l['operation'] === 'unwrapKey' && l['caller'] === 'kms:Decrypt'));
    for (const line of kmsLines) assert.ok(uids.has(String(line['uid'])), JSON.stringify(line));

    const metrics = await (await fetch(box.sealbox.metricsUrl!)).text();
    assert.match(metrics, /sealbox_kms_requests_total\{method="Encrypt",outcome="ok"\} [1-9]/);
    assert.match(metrics, /sealbox_kms_requests_total\{method="Decrypt",outcome="ok"\} 1\b/);
    assert.match(metrics, /sealbox_kms_requests_total\{method="Status",outcome="ok"\} [1-9]/);
  } finally {
    await box.close();
  }
});

test("the envelope socket refuses the KMS plugin's key: no Encrypt under it, no Decrypt of a seed, no vault call", async () => {
  await tokenVault.keys.createRsaKey('kms-guard', { keySize: 2048 });
  await tokenVault.keys.createRsaKey('kms-guard-app', { keySize: 2048 });
  const box = await startKms('kms-guard', {
    keys: { app: sealboxKeyConfig(tokenVault.vault, 'kms-guard-app', TOKEN) },
    kms: { alias: 'k8s' },
  });
  const envelope = connectEnvelope(`unix:${join(box.dir, 'sealbox.sock')}`);
  try {
    const seed = (await encryptDirect(box.sim(), Buffer.alloc(32, 7))) as { ciphertext: Buffer };
    // The same socket serves the application's own key.
    const mine = await encrypt(envelope, 'app', Buffer.from('row'), { table: 't' });
    assert.equal((await decrypt(envelope, mine.ciphertext)).plaintext.toString(), 'row');

    const before = { wraps: wraps(), unwraps: unwraps() };
    for (const call of [
      encrypt(envelope, 'k8s', Buffer.from('x'), {}),
      decrypt(envelope, seed.ciphertext),
      rewrap(envelope, { headerOrCiphertext: seed.ciphertext }),
    ]) {
      const err = await call.then(
        () => assert.fail('the envelope API must refuse the KMS key'),
        (e: ServiceError) => e,
      );
      assert.equal(err.code, status.PERMISSION_DENIED);
      assert.equal(errorCode(err), 'ACCESS_DENIED');
      assert.match(err.details, /Kubernetes KMS plugin \(kms\.alias "k8s"\)/);
    }
    assert.deepEqual({ wraps: wraps(), unwraps: unwraps() }, before, 'refused before any vault call');
  } finally {
    envelope.close();
    await box.close();
  }
});

test('rotation: a new Key Vault version changes key_id once; old data still decrypts (stale), new data carries the new key_id', async () => {
  const v1 = await tokenVault.keys.createRsaKey('kms-rotate', { keySize: 2048 });
  const box = await startKms('kms-rotate');
  try {
    const sim = box.sim();
    assert.equal((await sim.poll()).healthy, true);
    const old = sim.write('/registry/secrets/a/old', Buffer.from('before rotation'));
    assert.equal(old.keyId, v1.id);
    // A DEK-cache refresh is not a rotation: key_id stays.
    box.sealbox.flushCache();
    const same = await sim.poll();
    assert.equal(same.statusKeyId, v1.id);
    assert.equal(same.rotated, false);

    const v2 = await tokenVault.keys.rotateKey('kms-rotate');
    await box.sealbox.watcher!.checkNow();
    const rotated = await sim.poll();
    assert.equal(rotated.healthy, true, rotated.error);
    assert.equal(rotated.rotated, true, 'a new seed under the new key_id (Encrypt agreed with Status)');
    assert.equal(rotated.statusKeyId, v2.id);
    const fresh = sim.write('/registry/secrets/a/new', Buffer.from('after rotation'));
    assert.equal(fresh.keyId, v2.id);
    const oldRead = await sim.read('/registry/secrets/a/old', old);
    assert.equal(oldRead.data.toString(), 'before rotation');
    assert.equal(oldRead.stale, true, 'old key_id: the storage migration rewrites it');
    assert.equal((await sim.read('/registry/secrets/a/new', fresh)).stale, false);
    // A restarted apiserver reads the old object through Decrypt under the old version.
    box.sealbox.flushCache();
    const restarted = box.sim();
    assert.equal((await restarted.poll()).statusKeyId, v2.id);
    assert.equal((await restarted.read('/registry/secrets/a/old', old)).data.toString(), 'before rotation');
  } finally {
    await box.close();
  }
});

test('disable: healthz fails on the first poll after the verdict; Encrypt and Decrypt refused; re-enable restores', async () => {
  await tokenVault.keys.createRsaKey('kms-disable', { keySize: 2048 });
  const box = await startKms('kms-disable');
  try {
    const sim = box.sim({ healthyIntervalMs: 150, unhealthyIntervalMs: 50 });
    sim.start();
    let polled = await sim.nextPoll();
    while (!polled.healthy) polled = await sim.nextPoll();
    const object = sim.write('/registry/secrets/x/y', Buffer.from('payload'));

    await tokenVault.keys.updateKeyProperties('kms-disable', { enabled: false });
    await box.sealbox.watcher!.checkNow();
    const after = await sim.pollAfterNow();
    assert.equal(after.healthy, false, 'the first poll after the watcher saw the disable is unhealthy');
    assert.match(after.error ?? '', /disabled/);
    assert.equal(await failure(encryptDirect(sim, Buffer.alloc(32, 1))), status.FAILED_PRECONDITION);
    const cold = box.sim();
    await assert.rejects(cold.read('/registry/secrets/x/y', object), (err: ServiceError) => {
      assert.equal(err.code, status.FAILED_PRECONDITION);
      return true;
    });

    await tokenVault.keys.updateKeyProperties('kms-disable', { enabled: true });
    await box.sealbox.watcher!.checkNow();
    const back = await sim.pollAfterNow();
    assert.equal(back.healthy, true, back.error);
    assert.equal((await cold.read('/registry/secrets/x/y', object)).data.toString(), 'payload');
    assert.equal((await box.sim().poll()).healthy, true, 'Encrypt works again');
  } finally {
    await box.close();
  }
});

test('Admin RevokeKey refuses through the KMS face too (no watcher poll)', async () => {
  const key = await tokenVault.keys.createRsaKey('kms-admin', { keySize: 2048 });
  const adminSocket = join(mkdtempSync(join(tmpdir(), 'sealbox-kms-admin-')), 'admin.sock');
  const box = await startKms('kms-admin', {
    revocation: { pollIntervalMs: 3_600_000 },
    listen: { adminSocket },
  });
  const { Admin } = loadApi().sealbox.sealbox.v1;
  const admin = new Admin(`unix:${adminSocket}`, credentials.createInsecure());
  try {
    const sim = box.sim();
    assert.equal((await sim.poll()).healthy, true);
    const object = sim.write('/registry/secrets/r/s', Buffer.from('kept'));
    assert.equal((await box.sim().read('/registry/secrets/r/s', object)).data.toString(), 'kept');
    await tokenVault.keys.updateKeyProperties('kms-admin', { enabled: false });
    assert.equal((await sim.poll()).healthy, true, 'nothing has told sealbox yet');
    await new Promise<void>((resolve, reject) =>
      admin.RevokeKey({ keyId: key.id }, (err) => (err ? reject(err) : resolve())),
    );
    const polled = await sim.poll();
    assert.equal(polled.healthy, false);
    assert.match(polled.error ?? '', /disabled/);
    await assert.rejects(box.sim().read('/registry/secrets/r/s', object), (err: ServiceError) => {
      assert.equal(err.code, status.FAILED_PRECONDITION);
      return true;
    });
  } finally {
    admin.close();
    await box.close();
    rmSync(join(adminSocket, '..'), { recursive: true, force: true });
  }
});

test('an Event Grid event alone turns Status unhealthy and refuses Decrypt (no watcher poll)', async () => {
  await tokenVault.keys.createRsaKey('kms-webhook', { keySize: 2048 });
  const secret = 'a-webhook-secret-for-kms-tests';
  const box = await startKms('kms-webhook', {
    revocation: { pollIntervalMs: 3_600_000 },
    webhook: { listen: { host: '127.0.0.1', port: 0 }, secret },
  });
  try {
    const sim = box.sim();
    assert.equal((await sim.poll()).healthy, true);
    const object = sim.write('/registry/secrets/w/s', Buffer.from('pushed'));
    await tokenVault.keys.updateKeyProperties('kms-webhook', { enabled: false });
    assert.equal((await sim.poll()).healthy, true, 'nothing has told sealbox yet');
    const event = [
      {
        id: '1',
        topic: '/vaults/dev',
        subject: 'kms-webhook',
        eventType: 'Microsoft.KeyVault.VaultAccessPolicyChanged',
        eventTime: new Date().toISOString(),
        data: { ObjectName: 'kms-webhook' },
        dataVersion: '1',
      },
    ];
    const res = await fetch(`${box.sealbox.webhookUrl}?secret=${secret}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(event),
    });
    assert.equal(res.status, 200);
    const polled = await sim.poll();
    assert.equal(polled.healthy, false);
    assert.match(polled.error ?? '', /disabled/);
    await assert.rejects(box.sim().read('/registry/secrets/w/s', object), (err: ServiceError) => {
      assert.equal(err.code, status.FAILED_PRECONDITION);
      return true;
    });
  } finally {
    await box.close();
  }
});

test('a cold-start storm of Decrypts (3 apiservers × 100 concurrent reads, 3 seeds) costs one unwrap', async (t) => {
  await tokenVault.keys.createRsaKey('kms-storm', { keySize: 2048 });
  const box = await startKms('kms-storm');
  try {
    const objects: Array<[string, StoredObject]> = [];
    for (let seed = 0; seed < 3; seed++) {
      const writer = box.sim();
      assert.equal((await writer.poll()).healthy, true);
      for (let i = 0; i < 100; i++) {
        const name = `/registry/secrets/storm/${seed}-${i}`;
        objects.push([name, writer.write(name, Buffer.from(name))]);
      }
    }
    assert.equal(
      new Set(objects.map(([, o]) => o.encryptedDekSource.toString('hex'))).size,
      3,
      'three seeds',
    );
    box.sealbox.flushCache();
    const before = unwraps();
    const readers = [box.sim(), box.sim(), box.sim()];
    // The apiserver's seed cache has no single-flight: every concurrent miss calls Decrypt.
    await Promise.all(
      readers.flatMap((reader) =>
        objects.map(async ([name, object]) =>
          assert.equal((await reader.read(name, object)).data.toString(), name),
        ),
      ),
    );
    const decrypts = readers.reduce((n, r) => n + r.calls.decrypt, 0);
    const cost = unwraps() - before;
    t.diagnostic(`Decrypt calls ${decrypts}, vault unwraps ${cost}`);
    assert.ok(decrypts >= 9, `Decrypt calls: ${decrypts}`);
    assert.equal(cost, 1, 'every seed was sealed under one sealbox DEK; its unwrap is shared');
  } finally {
    await box.close();
  }
});

test('vault calls per apiserver restart with 10,000 stored objects (4 seeds: 3 restarts and a rotation)', async (t) => {
  await tokenVault.keys.createRsaKey('kms-restart', { keySize: 2048 });
  const box = await startKms('kms-restart');
  try {
    const objects: Array<[string, StoredObject]> = [];
    const wrapsBefore = wraps();
    let encrypts = 0;
    for (let start = 0; start < 4; start++) {
      if (start === 3) {
        await tokenVault.keys.rotateKey('kms-restart');
        await box.sealbox.watcher!.checkNow();
      }
      const apiserver = box.sim();
      assert.equal((await apiserver.poll()).healthy, true);
      encrypts += apiserver.calls.encrypt;
      for (let i = 0; i < 2500; i++) {
        const name = `/registry/secrets/ns${i % 50}/s${start}-${i}`;
        objects.push([name, apiserver.write(name, Buffer.from(name))]);
      }
    }
    const wrapsWriting = wraps() - wrapsBefore;
    assert.equal(objects.length, 10_000);
    assert.equal(encrypts, 4, 'one Encrypt per apiserver start or rotation');

    const measure = async (label: string, coldSealbox: boolean) => {
      if (coldSealbox) box.sealbox.flushCache();
      const before = unwraps();
      const wrapsBefore = wraps();
      const apiserver = box.sim();
      assert.equal((await apiserver.poll()).healthy, true);
      for (const [name, object] of objects) {
        assert.equal((await apiserver.read(name, object)).data.toString(), name);
      }
      const result = {
        decrypts: apiserver.calls.decrypt,
        encrypts: apiserver.calls.encrypt,
        unwraps: unwraps() - before,
        wraps: wraps() - wrapsBefore,
      };
      t.diagnostic(`${label}: ${JSON.stringify(result)}`);
      return result;
    };
    const warm = await measure('apiserver restart, sealbox running', false);
    const cold = await measure('apiserver and sealbox restart', true);
    t.diagnostic(
      `writing 10,000 objects under 4 seeds: ${encrypts} Encrypt calls, ${wrapsWriting} vault wraps`,
    );
    // The apiserver asks once per distinct seed; sealbox asks the vault once per distinct DEK (one per KEK version here).
    for (const r of [warm, cold]) {
      assert.equal(r.decrypts, 4);
      assert.equal(r.encrypts, 1);
    }
    assert.ok(warm.unwraps <= 2, `warm: ${warm.unwraps} unwraps`);
    assert.equal(cold.unwraps, 2, 'two KEK versions, one DEK each');
    assert.ok(wrapsWriting <= 2, `wraps while writing: ${wrapsWriting}`);
  } finally {
    await box.close();
  }
});
