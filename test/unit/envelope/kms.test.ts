/**
 * The KMS v2 use cases (src/envelope/kms.ts) over fakes: key_id agreement with Status around a
 * rotation, health from verdicts, the bounds kube-apiserver enforces, and the annotation sealbox
 * returns passing the apiserver's own validation (mirrored in test/helpers/kube-apiserver-sim.ts).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadSync } from '@grpc/proto-loader';
import { PROTO_DIR } from '../../../src/api/proto';
import type { KeyAccess } from '../../../src/envelope/access';
import {
  KMS_CONTEXT,
  KMS_FORMAT_ANNOTATION,
  KMS_FORMAT_VALUE,
  KMS_MAX_PLAINTEXT_BYTES,
  type KmsDeps,
  KmsPlugin,
} from '../../../src/envelope/kms';
import type { EnvelopeService } from '../../../src/envelope/service';
import { ErrorCode, isSealboxError, SealboxError } from '../../../src/errors';
import { KMS_API_FILE } from '../../../src/server/kms';
import {
  annotationErrors,
  fullyQualifiedDomainNameErrors,
  keyIdErrors,
} from '../../helpers/kube-apiserver-sim';

const V1 = 'https://vault.example/keys/k8s/v1';
const V2 = 'https://vault.example/keys/k8s/v2';

/**
 * A fake core: `current` is what the watcher last read; the "cache" wraps under `cachedUnder` until
 * invalidated, then under `providerLatest`; refresh() makes the watcher read `providerLatest`.
 */
function fakeCore(initial: { current?: string; cachedUnder?: string; providerLatest?: string } = {}) {
  const core = {
    current: initial.current as string | undefined,
    cachedUnder: initial.cachedUnder ?? initial.current ?? V1,
    providerLatest: initial.providerLatest ?? initial.current ?? V1,
    refused: new Set<string>(),
    invalidations: 0,
    refreshes: 0,
    encrypts: 0,
    decrypts: [] as Array<{ context: object; access: KeyAccess }>,
  };
  const service = {
    async encrypt(alias: string, plaintext: Buffer, context: Record<string, string>) {
      core.encrypts++;
      assert.equal(alias, 'k8s');
      assert.deepEqual(context, KMS_CONTEXT);
      return { ciphertext: Buffer.concat([Buffer.from('SBX'), plaintext]), keyId: core.cachedUnder };
    },
    async decrypt(ciphertext: Buffer, context: object, _signal: unknown, access: KeyAccess) {
      core.decrypts.push({ context, access });
      access.checkKeyId('decrypt', V1);
      return { plaintext: ciphertext.subarray(3), info: { keyId: V1, context: {} } };
    },
  } as unknown as EnvelopeService;
  const deps: KmsDeps = {
    alias: 'k8s',
    service,
    current: () => (core.current === undefined ? undefined : { keyId: core.current }),
    check(keyId) {
      if (core.refused.has(keyId))
        throw new SealboxError(ErrorCode.KEY_DISABLED, `key version ${keyId} is refused: disabled`);
    },
    invalidate() {
      core.invalidations++;
      core.cachedUnder = core.providerLatest;
    },
    async refresh() {
      core.refreshes++;
      core.current = core.providerLatest;
    },
    aliasesOf: (keyId) => (keyId.startsWith('https://vault.example/keys/k8s/') ? ['k8s'] : ['other']),
  };
  return { core, plugin: new KmsPlugin(deps) };
}

const seed = () => Buffer.alloc(32, 7);

test('Status: ok with the current version as key_id; a refused version or no verdict yet is a short reason', () => {
  const { core, plugin } = fakeCore({ current: V1 });
  assert.deepEqual(plugin.status(), { version: 'v2', healthz: 'ok', keyId: V1 });
  core.refused.add(V1);
  const refused = plugin.status();
  assert.equal(refused.keyId, V1);
  assert.match(refused.healthz, /refused: disabled/);
  assert.ok(refused.healthz.length <= 300);
  core.current = undefined;
  const starting = plugin.status();
  assert.equal(starting.keyId, '');
  assert.match(starting.healthz, /has not read its current version/);
});

test('Encrypt answers the key_id Status reports; annotations pass the apiserver validation', async () => {
  const { plugin } = fakeCore({ current: V1 });
  const out = await plugin.encrypt(seed());
  assert.equal(out.keyId, plugin.status().keyId);
  assert.deepEqual(annotationErrors(out.annotations), []);
  assert.deepEqual(keyIdErrors(out.keyId), []);
  assert.equal(out.annotations[KMS_FORMAT_ANNOTATION]?.toString(), KMS_FORMAT_VALUE);
});

test('after a rotation the DEK cached under the old version is retired, never answered with the old key_id', async () => {
  // The watcher reports v2; the cached DEK is still wrapped under v1.
  const { core, plugin } = fakeCore({ current: V2, cachedUnder: V1, providerLatest: V2 });
  const out = await plugin.encrypt(seed());
  assert.equal(out.keyId, V2);
  assert.equal(plugin.status().keyId, V2);
  assert.equal(core.invalidations, 1);
  assert.equal(core.refreshes, 0);
});

test('the provider saw the new version before the watcher: the watcher reads it, then Status and Encrypt agree on it', async () => {
  const { core, plugin } = fakeCore({ current: V1, cachedUnder: V2, providerLatest: V2 });
  const out = await plugin.encrypt(seed());
  assert.equal(core.refreshes, 1);
  assert.equal(out.keyId, V2);
  assert.equal(plugin.status().keyId, V2);
});

test('a key_id that will not settle is UNAVAILABLE, never a key_id Status does not report', async () => {
  const { core, plugin } = fakeCore({ current: V1, cachedUnder: V2, providerLatest: V2 });
  // The watcher's read keeps failing (it still reports v1).
  const deps = (plugin as unknown as { deps: KmsDeps }).deps;
  (deps as { refresh: () => Promise<void> }).refresh = async () => {
    core.refreshes++;
  };
  const err = await plugin.encrypt(seed()).then(
    () => assert.fail('must not answer'),
    (e: unknown) => e,
  );
  assert.ok(isSealboxError(err, ErrorCode.VAULT_UNAVAILABLE), String(err));
  assert.match((err as Error).message, /rotating/);
  assert.equal(core.encrypts, 3);
});

test('Encrypt refuses a refused current version and out-of-bounds plaintexts', async () => {
  const { core, plugin } = fakeCore({ current: V1 });
  for (const size of [0, KMS_MAX_PLAINTEXT_BYTES + 1]) {
    await assert.rejects(plugin.encrypt(Buffer.alloc(size)), (e) =>
      isSealboxError(e, ErrorCode.INVALID_ARGUMENT),
    );
  }
  core.refused.add(V1);
  await assert.rejects(plugin.encrypt(seed()), (e) => isSealboxError(e, ErrorCode.KEY_DISABLED));
  assert.equal(core.encrypts, 0);
});

test('Decrypt: key_id must be the header key id and of the KMS alias; annotations exactly as returned', async () => {
  const { core, plugin } = fakeCore({ current: V1 });
  const ok = { [KMS_FORMAT_ANNOTATION]: Buffer.from(KMS_FORMAT_VALUE) };
  const ciphertext = Buffer.concat([Buffer.from('SBX'), seed()]);
  assert.deepEqual(await plugin.decrypt(ciphertext, V1, ok), seed());
  assert.deepEqual(core.decrypts[0]?.context, KMS_CONTEXT);
  // The header names V1 (fake); a request naming V2 is refused before the vault would be asked.
  await assert.rejects(plugin.decrypt(ciphertext, V2, ok), (e) =>
    isSealboxError(e, ErrorCode.INVALID_ARGUMENT),
  );
  const access = core.decrypts[0]!.access;
  assert.throws(
    () => access.checkKeyId('decrypt', 'https://vault.example/keys/other/v1'),
    (e) => isSealboxError(e),
  );
  const bads: Array<Record<string, Buffer>> = [
    {},
    { [KMS_FORMAT_ANNOTATION]: Buffer.from('x') },
    { ...ok, 'b.example': Buffer.alloc(1) },
  ];
  for (const bad of bads) {
    await assert.rejects(plugin.decrypt(ciphertext, V1, bad), (e) =>
      isSealboxError(e, ErrorCode.INVALID_ARGUMENT),
    );
  }
  await assert.rejects(plugin.decrypt(Buffer.alloc(1025), V1, ok), (e) =>
    isSealboxError(e, ErrorCode.INVALID_ARGUMENT),
  );
  await assert.rejects(plugin.decrypt(ciphertext, '', ok), (e) =>
    isSealboxError(e, ErrorCode.INVALID_ARGUMENT),
  );
});

test('annotation keys as the apiserver validates them (IsFullyQualifiedDomainName, < 32 KiB)', () => {
  const valid = ['format.sealbox.dev', 'a.b', 'x-1.example.com', 'trailing.dot.'];
  const invalid = [
    '',
    'sealbox',
    'format.sealbox.dev/v1',
    'Format.Sealbox.dev',
    '-a.b',
    'a..b',
    `${'a'.repeat(64)}.b`,
  ];
  for (const key of valid) assert.deepEqual(fullyQualifiedDomainNameErrors(key), [], key);
  for (const key of invalid) assert.notDeepEqual(fullyQualifiedDomainNameErrors(key), [], key);
  assert.deepEqual(annotationErrors({ 'a.b': Buffer.alloc(32 * 1024 - 3) }), []);
  assert.notDeepEqual(annotationErrors({ 'a.b': Buffer.alloc(32 * 1024 - 2) }), []);
  assert.deepEqual(fullyQualifiedDomainNameErrors(KMS_FORMAT_ANNOTATION), []);
});

test('the KMS proto is upstream v2: package v2, service KeyManagementService, upstream field numbers', () => {
  const def = loadSync(KMS_API_FILE, { includeDirs: [PROTO_DIR], keepCase: true });
  const service = def['v2.KeyManagementService'] as Record<string, { path: string }>;
  assert.deepEqual(
    Object.values(service)
      .map((m) => m.path)
      .sort(),
    [
      '/v2.KeyManagementService/Decrypt',
      '/v2.KeyManagementService/Encrypt',
      '/v2.KeyManagementService/Status',
    ],
  );
  const fields = (name: string) =>
    Object.fromEntries(
      (def[`v2.${name}`] as { type: { field: Array<{ name: string; number: number }> } }).type.field.map(
        (f) => [f.name, f.number],
      ),
    );
  assert.deepEqual(fields('StatusResponse'), { version: 1, healthz: 2, key_id: 3 });
  assert.deepEqual(fields('DecryptRequest'), { ciphertext: 1, uid: 2, key_id: 3, annotations: 4 });
  assert.deepEqual(fields('DecryptResponse'), { plaintext: 1 });
  assert.deepEqual(fields('EncryptRequest'), { plaintext: 1, uid: 2 });
  assert.deepEqual(fields('EncryptResponse'), { ciphertext: 1, key_id: 2, annotations: 3 });
});
