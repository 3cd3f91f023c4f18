/**
 * The Azure Key Vault KEK provider (src/kek/azure.ts) against a working fake vault: object
 * literals whose wrapKey/unwrapKey really wrap (AES-KW for oct-HSM keys, RSA-OAEP-256 for RSA
 * keys), which can be told to fail the next call(s) with SDK-shaped RestErrors. A last group runs
 * the real SDK clients over real HTTPS against a small in-test stub, to pin the SDK's error shapes,
 * the single retry layer and the caFile plumbing.
 */
import 'reflect-metadata'; // @peculiar/x509 (tsyringe) needs it loaded first
import assert from 'node:assert/strict';
import {
  constants,
  generateKeyPairSync,
  type KeyObject,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
  webcrypto,
} from 'node:crypto';
import { getEventListeners } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createHttpHeaders, createPipelineRequest, RestError } from '@azure/core-rest-pipeline';
import type { KeyVaultKey } from '@azure/keyvault-keys';
import * as x509 from '@peculiar/x509';
import { aesKeyUnwrap, aesKeyWrap } from '../../../src/crypto/keywrap';
import { ErrorCode, SealboxError } from '../../../src/errors';
import {
  type AzureCryptoClient,
  AzureKekProvider,
  type AzureKeyReader,
  azureClientOptions,
  createAzureProvider,
  entraCredentialOptions,
  mapVaultError,
  parseKeyId,
  staticTokenCredential,
} from '../../../src/kek/azure';
import { RetryCounters, type RetryDeps } from '../../../src/kek/retry';

// ---------------------------------------------------------------------------------------------------
// The fake vault

type Op = 'getKey' | 'wrapKey' | 'unwrapKey';
type Kty = 'RSA' | 'RSA-HSM' | 'oct' | 'oct-HSM' | 'EC';

interface FakeVersion {
  readonly version: string;
  readonly kty: Kty;
  enabled: boolean;
  notBefore?: Date;
  expiresOn?: Date;
  readonly aes?: Buffer;
  readonly rsa?: { publicKey: KeyObject; privateKey: KeyObject };
}

const HOST = 'unit.vault.azure.net';
const VAULT_URL = `https://${HOST}`;
const NAME = 'kek';

function restError(
  status: number,
  code?: string,
  inner?: string,
  headers: Record<string, string> = {},
): RestError {
  const request = createPipelineRequest({ url: `${VAULT_URL}/keys/${NAME}` });
  const err = new RestError(`vault said ${status}`, {
    statusCode: status,
    ...(code ? { code } : {}),
    request,
    response: { status, headers: createHttpHeaders(headers), request },
  });
  // The shape keyvault-keys builds: keyVaultErrorDeserializer(body), innererror → innerError.
  if (code) {
    err.details = {
      error: { code, message: `free text for ${code}`, ...(inner ? { innerError: { code: inner } } : {}) },
    };
  }
  return err;
}

function abortError(): Error {
  const err = new Error('The operation was aborted.');
  err.name = 'AbortError';
  return err;
}

let rsaPair: { publicKey: KeyObject; privateKey: KeyObject } | undefined;
function rsaKeys() {
  // One 2048-bit pair for all RSA versions keeps the suite fast; versions still differ by id.
  rsaPair ??= generateKeyPairSync('rsa', { modulusLength: 2048 });
  return rsaPair;
}

class FakeVault {
  readonly versions = new Map<string, FakeVersion>();
  latest = '';
  readonly calls: Record<Op, number> = { getKey: 0, wrapKey: 0, unwrapKey: 0 };
  readonly factoryCalls = new Map<string, number>();
  /** Return unwrap results as plain Uint8Array views instead of Buffers. */
  plainUint8Array = false;
  /** The id getKey reports for the latest version (to simulate a vault with another host). */
  idHost = HOST;
  private readonly failures: Record<Op, unknown[]> = { getKey: [], wrapKey: [], unwrapKey: [] };
  private hangs: Record<Op, number> = { getKey: 0, wrapKey: 0, unwrapKey: 0 };

  constructor(kty: Kty = 'oct-HSM') {
    this.rotate(kty);
  }

  idFor(version: string): string {
    return `https://${this.idHost}/keys/${NAME}/${version}`;
  }

  get latestId(): string {
    return this.idFor(this.latest);
  }

  /** Creates a new version and makes it the latest. */
  rotate(kty: Kty = this.versions.get(this.latest)?.kty ?? 'oct-HSM'): string {
    const version = randomBytes(16).toString('hex');
    const rsa = kty.startsWith('RSA') ? rsaKeys() : undefined;
    const aes = kty.startsWith('oct') ? randomBytes(32) : undefined;
    this.versions.set(version, {
      version,
      kty,
      enabled: true,
      ...(rsa ? { rsa } : {}),
      ...(aes ? { aes } : {}),
    });
    this.latest = version;
    return version;
  }

  version(v = this.latest): FakeVersion {
    return this.versions.get(v)!;
  }

  /** The next calls of `op` throw these errors, in order. */
  failNext(op: Op, ...errors: unknown[]): void {
    this.failures[op].push(...errors);
  }

  /** The next `n` calls of `op` never answer until their abort signal fires. */
  hangNext(op: Op, n = 1): void {
    this.hangs[op] += n;
  }

  private async enter(op: Op, signal: AbortSignal | undefined): Promise<void> {
    this.calls[op] += 1;
    if (signal?.aborted) throw abortError();
    if (this.hangs[op] > 0) {
      this.hangs[op] -= 1;
      await new Promise((_, reject) => signal?.addEventListener('abort', () => reject(abortError())));
    }
    const failure = this.failures[op].shift();
    if (failure !== undefined) throw failure;
  }

  private find(version: string): FakeVersion {
    const v = this.versions.get(version);
    if (!v) throw restError(404, 'KeyNotFound');
    return v;
  }

  readonly keyClient: AzureKeyReader = {
    getKey: async (name, options = {}) => {
      await this.enter('getKey', options.abortSignal as AbortSignal | undefined);
      if (name.toLowerCase() !== NAME) throw restError(404, 'KeyNotFound');
      const v = this.find(options.version || this.latest);
      const id = this.idFor(v.version);
      const key: KeyVaultKey = {
        name,
        id,
        keyType: v.kty,
        key: { kid: id, kty: v.kty },
        properties: {
          id,
          name,
          vaultUrl: `https://${this.idHost}`,
          version: v.version,
          enabled: v.enabled,
          notBefore: v.notBefore,
          expiresOn: v.expiresOn,
        },
      };
      return key;
    },
  };

  readonly factory = (keyId: string): AzureCryptoClient => {
    this.factoryCalls.set(keyId, (this.factoryCalls.get(keyId) ?? 0) + 1);
    const version = keyId.slice(keyId.lastIndexOf('/') + 1);
    return {
      wrapKey: async (algorithm, key, options = {}) => {
        await this.enter('wrapKey', options.abortSignal as AbortSignal | undefined);
        const v = this.find(version);
        // Like Key Vault, wrapping (a public-key operation) is allowed on a disabled key.
        if (v.aes && algorithm === 'A256KW')
          return { result: aesKeyWrap(v.aes, key), algorithm, keyID: keyId };
        if (v.rsa && algorithm === 'RSA-OAEP-256') {
          const result = publicEncrypt(
            { key: v.rsa.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
            key,
          );
          return { result, algorithm, keyID: keyId };
        }
        throw restError(400, 'BadParameter');
      },
      unwrapKey: async (algorithm, encrypted, options = {}) => {
        await this.enter('unwrapKey', options.abortSignal as AbortSignal | undefined);
        const v = this.find(version);
        if (!v.enabled) throw restError(403, 'Forbidden', 'KeyDisabled');
        let result: Buffer | undefined;
        if (v.aes && algorithm === 'A256KW') result = aesKeyUnwrap(v.aes, encrypted);
        if (v.rsa && algorithm === 'RSA-OAEP-256') {
          try {
            result = privateDecrypt(
              { key: v.rsa.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
              encrypted,
            );
          } catch {
            result = undefined;
          }
        }
        if (!result) throw restError(400, 'BadParameter');
        const out = this.plainUint8Array
          ? new Uint8Array(result.buffer, result.byteOffset, result.byteLength)
          : result;
        return { result: out, algorithm, keyID: keyId };
      },
    };
  };
}

function provider(
  vault: FakeVault,
  extra: { deps?: Partial<RetryDeps>; ttl?: number; maxCachedVersions?: number; vaultUrl?: string } = {},
) {
  const counters = new RetryCounters();
  const sleeps: number[] = [];
  const p = new AzureKekProvider({
    vaultUrl: extra.vaultUrl ?? VAULT_URL,
    keyName: NAME,
    keyClient: vault.keyClient,
    cryptoClientFactory: vault.factory,
    retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 100, timeoutMs: 5000 },
    currentVersionTtlMs: extra.ttl ?? 60_000,
    ...(extra.maxCachedVersions ? { maxCachedVersions: extra.maxCachedVersions } : {}),
    deps: {
      sleep: async (ms) => {
        sleeps.push(ms);
      },
      random: () => 0.5,
      onEvent: counters.observe,
      ...extra.deps,
    },
  });
  return { p, counters, sleeps };
}

async function rejectsWith(
  promise: Promise<unknown>,
  code: ErrorCode,
  message?: RegExp,
  cause?: unknown,
): Promise<SealboxError> {
  let caught: unknown;
  await assert.rejects(promise, (err) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof SealboxError, `expected a SealboxError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  if (message) assert.match(caught.message, message);
  if (cause !== undefined) assert.equal(caught.cause, cause);
  return caught;
}

const dek = () => randomBytes(32);

// ---------------------------------------------------------------------------------------------------

describe('wrap → unwrap round trip', () => {
  const rows: Array<[Kty, string]> = [
    ['oct-HSM', 'A256KW'],
    ['oct', 'A256KW'],
    ['RSA', 'RSA-OAEP-256'],
    ['RSA-HSM', 'RSA-OAEP-256'],
  ];
  for (const [kty, algorithm] of rows) {
    test(`${kty} key wraps with ${algorithm} and unwraps to the same DEK, as a Buffer`, async () => {
      const vault = new FakeVault(kty);
      const { p } = provider(vault);
      const key = dek();
      const wrapped = await p.wrap(key);
      assert.equal(wrapped.keyId, vault.latestId);
      assert.equal(wrapped.algorithm, algorithm);
      assert.ok(Buffer.isBuffer(wrapped.wrapped));
      assert.ok(!wrapped.wrapped.equals(key));
      const back = await p.unwrap(wrapped.keyId, wrapped.algorithm, wrapped.wrapped);
      assert.ok(Buffer.isBuffer(back));
      assert.ok(back.equals(key));
    });
  }

  test('a plain Uint8Array result comes back as a Buffer over the same memory (no copy)', async () => {
    const vault = new FakeVault();
    vault.plainUint8Array = true;
    const { p } = provider(vault);
    const key = dek();
    const w = await p.wrap(key);
    const back = await p.unwrap(w.keyId, w.algorithm, w.wrapped);
    assert.ok(Buffer.isBuffer(back));
    assert.ok(back.equals(key));
  });

  test('a 16-byte DEK also round-trips; odd sizes are refused before any vault call', async () => {
    const vault = new FakeVault();
    const { p } = provider(vault);
    const small = randomBytes(16);
    const w = await p.wrap(small);
    assert.ok((await p.unwrap(w.keyId, w.algorithm, w.wrapped)).equals(small));
    const calls = { ...vault.calls };
    for (const size of [0, 8, 20, 72]) {
      await rejectsWith(p.wrap(randomBytes(size)), ErrorCode.INVALID_ARGUMENT, /16-64 bytes/);
    }
    assert.deepEqual(vault.calls, calls);
  });
});

describe('owns', () => {
  const v = 'a'.repeat(32);
  const rows: Array<[string, string, boolean]> = [
    ['a versioned id', `${VAULT_URL}/keys/${NAME}/${v}`, true],
    ['trailing slash', `${VAULT_URL}/keys/${NAME}/${v}/`, true],
    ['explicit :443', `https://${HOST}:443/keys/${NAME}/${v}`, true],
    ['uppercase host', `https://UNIT.Vault.Azure.NET/keys/${NAME}/${v}`, true],
    ['uppercase scheme', `HTTPS://${HOST}/keys/${NAME}/${v}`, true],
    ['key name in another case', `${VAULT_URL}/keys/KEK/${v}`, true],
    ['no version (refused later)', `${VAULT_URL}/keys/${NAME}/`, true],
    ['another vault', `https://other.vault.azure.net/keys/${NAME}/${v}`, false],
    ['another port', `https://${HOST}:8443/keys/${NAME}/${v}`, false],
    ['a longer key name', `${VAULT_URL}/keys/${NAME}2/${v}`, false],
    ['a prefix of the name', `${VAULT_URL}/keys/ke/${v}`, false],
    ['http', `http://${HOST}/keys/${NAME}/${v}`, false],
    ['a secret, not a key', `${VAULT_URL}/secrets/${NAME}/${v}`, false],
    ['no /keys/name/ at all', `${VAULT_URL}/keys/${NAME}`, false],
    ['extra path', `${VAULT_URL}/keys/${NAME}/${v}/wrapkey`, false],
    ['userinfo', `https://evil@${HOST}/keys/${NAME}/${v}`, false],
    ['query', `${VAULT_URL}/keys/${NAME}/${v}?x=1`, false],
    ['local provider id', `local:${NAME}/${v}`, false],
    ['empty', '', false],
    ['too long', `${VAULT_URL}/keys/${NAME}/${'a'.repeat(2000)}`, false],
  ];
  const { p } = provider(new FakeVault());
  for (const [name, keyId, expected] of rows) {
    test(`${name}: ${expected}`, () => assert.equal(p.owns(keyId), expected));
  }

  test('a configured vaultUrl with a trailing slash or :443 owns the same ids', () => {
    const vault = new FakeVault();
    for (const url of [`${VAULT_URL}/`, `https://${HOST}:443`, `https://${HOST.toUpperCase()}`]) {
      assert.equal(provider(vault, { vaultUrl: url }).p.owns(`${VAULT_URL}/keys/${NAME}/${v}`), true, url);
    }
  });

  test('a dev vault on a port owns ids with that port only', () => {
    const { p: dev } = provider(new FakeVault(), { vaultUrl: 'https://localhost:8443' });
    assert.equal(dev.owns(`https://localhost:8443/keys/${NAME}/${v}`), true);
    assert.equal(dev.owns(`https://localhost/keys/${NAME}/${v}`), false);
  });

  test('parseKeyId splits host, name and version', () => {
    assert.deepEqual(parseKeyId(`https://A.vault.azure.net:443/keys/k/${v}/`), {
      host: 'a.vault.azure.net',
      name: 'k',
      version: v,
    });
  });

  const badUrls = [
    'http://x.vault.azure.net',
    'https://x.vault.azure.net/keys',
    'https://u:p@x',
    'not a url',
  ];
  for (const url of badUrls) {
    test(`refuses vaultUrl ${url}`, () =>
      assert.throws(
        () =>
          new AzureKekProvider({
            vaultUrl: url,
            keyName: NAME,
            keyClient: new FakeVault().keyClient,
            cryptoClientFactory: () => ({}) as AzureCryptoClient,
          }),
        /vaultUrl/,
      ));
  }
});

describe('one crypto client per key version', () => {
  test('the factory runs once per version, even under concurrent first use', async () => {
    const vault = new FakeVault();
    const { p } = provider(vault);
    const v1 = vault.latestId;
    const first = await Promise.all(Array.from({ length: 10 }, () => p.wrap(dek())));
    vault.rotate();
    await p.refreshCurrentVersion();
    const v2 = vault.latestId;
    const second = await Promise.all(Array.from({ length: 10 }, () => p.wrap(dek())));
    // A fresh provider meets both versions for the first time concurrently, through unwrap only.
    const { p: fresh } = provider(vault);
    vault.factoryCalls.clear();
    await Promise.all(
      [...first, ...second, ...first, ...second].map((w) => fresh.unwrap(w.keyId, w.algorithm, w.wrapped)),
    );
    assert.deepEqual(
      [...vault.factoryCalls.entries()].sort(),
      [
        [v1, 1],
        [v2, 1],
      ].sort(),
    );
    assert.equal(fresh.cachedVersions, 2);
    assert.equal(vault.calls.getKey, 2 + 2, 'one key-type look-up per version in the fresh provider');
  });

  test('the cache is bounded: forged versions do not grow it past maxCachedVersions', async () => {
    const vault = new FakeVault();
    const { p } = provider(vault, { maxCachedVersions: 3 });
    const w = await p.wrap(dek());
    const versions = Array.from({ length: 6 }, () => vault.rotate());
    for (const v of versions) {
      vault.plainUint8Array = false;
      // A wrong but well-formed ciphertext: the vault answers 400, the client stays cached.
      await rejectsWith(p.unwrap(vault.idFor(v), 'A256KW', randomBytes(40)), ErrorCode.CIPHERTEXT_CORRUPT);
    }
    assert.ok(p.cachedVersions <= 3, `${p.cachedVersions} cached`);
    // The current version survives eviction and still unwraps.
    assert.ok((await p.unwrap(w.keyId, w.algorithm, w.wrapped)).length === 32);
    // Versions that do not exist never get a client.
    const before = vault.factoryCalls.size;
    await rejectsWith(
      p.unwrap(vault.idFor('f'.repeat(32)), 'A256KW', randomBytes(40)),
      ErrorCode.KEY_NOT_FOUND,
    );
    assert.equal(vault.factoryCalls.size, before);
  });
  test('a burst of first uses of many versions: no listener leak on the shared signal, no leak warning', async () => {
    const vault = new FakeVault();
    const { p } = provider(vault, { maxCachedVersions: 64 });
    const wraps = [];
    for (let i = 0; i < 30; i++) {
      vault.rotate();
      await p.refreshCurrentVersion();
      wraps.push(await p.wrap(dek()));
    }
    const { p: fresh } = provider(vault, { maxCachedVersions: 64 });
    const closing = (fresh as unknown as { closing: AbortController }).closing.signal;
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      // 30 distinct versions met at once: 30 shared look-ups in flight, each listening on `closing`.
      const all = Promise.all(wraps.map((w) => fresh.unwrap(w.keyId, w.algorithm, w.wrapped)));
      const peak = getEventListeners(closing, 'abort').length;
      await all;
      await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on a later tick
      assert.ok(peak >= 11, `the burst was concurrent (${peak} listeners at once)`);
      assert.equal(getEventListeners(closing, 'abort').length, 0, 'every look-up removed its listener');
      assert.deepEqual(
        warnings.filter((name) => name === 'MaxListenersExceededWarning'),
        [],
      );
    } finally {
      process.off('warning', onWarning);
    }
  });
});

describe('rotation', () => {
  test('new wraps use the new version after refreshCurrentVersion; old ciphertexts still unwrap', async () => {
    const vault = new FakeVault();
    const { p } = provider(vault);
    const key1 = dek();
    const old = await p.wrap(key1);
    const v1 = old.keyId;

    const v2version = vault.rotate();
    const v2 = vault.idFor(v2version);
    // Within the TTL the cached current version is still used.
    assert.equal((await p.wrap(dek())).keyId, v1);

    const status = await p.refreshCurrentVersion();
    assert.equal(status.keyId, v2);
    assert.equal(status.latestKeyId, v2);
    const key2 = dek();
    const fresh = await p.wrap(key2);
    assert.equal(fresh.keyId, v2);

    assert.ok((await p.unwrap(old.keyId, old.algorithm, old.wrapped)).equals(key1));
    assert.ok((await p.unwrap(fresh.keyId, fresh.algorithm, fresh.wrapped)).equals(key2));
    assert.equal(vault.factoryCalls.get(v1), 1);
    assert.equal(vault.factoryCalls.get(v2), 1);

    // Each version unwraps only its own ciphertexts.
    await rejectsWith(p.unwrap(v2, old.algorithm, old.wrapped), ErrorCode.CIPHERTEXT_CORRUPT);
  });

  test('the current version is re-read when its TTL has passed', async () => {
    let now = Date.parse('2026-03-01T00:00:00Z');
    const vault = new FakeVault();
    const { p } = provider(vault, { ttl: 30_000, deps: { now: () => now } });
    const v1 = (await p.wrap(dek())).keyId;
    vault.rotate();
    now += 29_999;
    assert.equal((await p.wrap(dek())).keyId, v1);
    now += 1;
    assert.equal((await p.wrap(dek())).keyId, vault.latestId);
  });

  test('concurrent wraps after the TTL share one getKey', async () => {
    let now = 0;
    const vault = new FakeVault();
    const { p } = provider(vault, { ttl: 1000, deps: { now: () => now } });
    await p.wrap(dek());
    now += 1000;
    const before = vault.calls.getKey;
    await Promise.all(Array.from({ length: 8 }, () => p.wrap(dek())));
    assert.equal(vault.calls.getKey - before, 1);
  });

  test('when the vault is unavailable at refresh time, the previous current version keeps wrapping', async () => {
    let now = 0;
    const vault = new FakeVault();
    const { p } = provider(vault, { ttl: 1000, deps: { now: () => now } });
    const v1 = (await p.wrap(dek())).keyId;
    now += 5000;
    vault.failNext('getKey', restError(503), restError(503), restError(503));
    assert.equal((await p.wrap(dek())).keyId, v1);
  });

  test('but a refused refresh (403) is not papered over', async () => {
    let now = 0;
    const vault = new FakeVault();
    const { p } = provider(vault, { ttl: 1000, deps: { now: () => now } });
    await p.wrap(dek());
    now += 5000;
    vault.failNext('getKey', restError(403, 'Forbidden', 'ForbiddenByRbac'));
    await rejectsWith(p.wrap(dek()), ErrorCode.PERMISSION_DENIED, /grant get/);
  });

  const unusable: Array<[string, (v: FakeVersion) => void, RegExp]> = [
    ['disabled', (v) => (v.enabled = false), /is disabled; enable it/],
    ['expired', (v) => (v.expiresOn = new Date(Date.now() - 1000)), /expired at .*rotate the key/],
    ['not yet valid', (v) => (v.notBefore = new Date(Date.now() + 3_600_000)), /not valid before/],
  ];
  for (const [name, change, message] of unusable) {
    test(`wrap refuses a current version that is ${name} (KEY_DISABLED), without a wrapKey call`, async () => {
      const vault = new FakeVault();
      change(vault.version());
      const { p } = provider(vault);
      await rejectsWith(p.wrap(dek()), ErrorCode.KEY_DISABLED, message);
      assert.equal(vault.calls.wrapKey, 0);
    });
  }

  test('an EC key cannot wrap', async () => {
    const vault = new FakeVault('EC');
    const { p } = provider(vault);
    await rejectsWith(p.wrap(dek()), ErrorCode.INTERNAL, /type EC; sealbox wraps with RSA/);
  });

  test('a vault whose key ids name another host is refused before anything is written', async () => {
    const vault = new FakeVault();
    vault.idHost = 'elsewhere.vault.azure.net';
    const { p } = provider(vault);
    await rejectsWith(p.wrap(dek()), ErrorCode.INTERNAL, /set vaultUrl/);
    assert.equal(vault.calls.wrapKey, 0);
  });

  test('a wrap that finds the version disabled forgets the cached current version', async () => {
    const vault = new FakeVault();
    const { p } = provider(vault);
    await p.wrap(dek());
    vault.failNext('wrapKey', restError(403, 'Forbidden', 'KeyDisabled'));
    await rejectsWith(p.wrap(dek()), ErrorCode.KEY_DISABLED);
    vault.rotate();
    assert.equal((await p.wrap(dek())).keyId, vault.latestId, 'the next wrap asked getKey again');
  });
});

describe('unwrap checks the header before calling the vault', () => {
  const rows: Array<[string, Kty, (vault: FakeVault) => [string, string, Uint8Array], ErrorCode, RegExp]> = [
    [
      'A256KW against an RSA key',
      'RSA',
      (vault) => [vault.latestId, 'A256KW', randomBytes(40)],
      ErrorCode.CIPHERTEXT_MALFORMED,
      /RSA key and unwraps with RSA-OAEP-256, but the header says A256KW/,
    ],
    [
      'RSA-OAEP-256 against an oct-HSM key',
      'oct-HSM',
      (vault) => [vault.latestId, 'RSA-OAEP-256', randomBytes(256)],
      ErrorCode.CIPHERTEXT_MALFORMED,
      /oct-HSM key and unwraps with A256KW/,
    ],
    [
      'an algorithm sealbox never writes',
      'RSA',
      (vault) => [vault.latestId, 'RSA1_5', randomBytes(256)],
      ErrorCode.CIPHERTEXT_MALFORMED,
      /RSA-OAEP-256 or A256KW, but the header says RSA1_5/,
    ],
    [
      'no version in the key id',
      'oct-HSM',
      () => [`${VAULT_URL}/keys/${NAME}/`, 'A256KW', randomBytes(40)],
      ErrorCode.CIPHERTEXT_MALFORMED,
      /does not name a key version/,
    ],
    [
      'a key id of another key',
      'oct-HSM',
      () => [`${VAULT_URL}/keys/other/${'a'.repeat(32)}`, 'A256KW', randomBytes(40)],
      ErrorCode.KEY_NOT_FOUND,
      /is not a version of/,
    ],
    [
      'an empty wrapped key',
      'oct-HSM',
      (vault) => [vault.latestId, 'A256KW', new Uint8Array(0)],
      ErrorCode.CIPHERTEXT_MALFORMED,
      /1-1024/,
    ],
    [
      'a wrapped key over 1 KiB',
      'oct-HSM',
      (vault) => [vault.latestId, 'A256KW', randomBytes(1025)],
      ErrorCode.CIPHERTEXT_MALFORMED,
      /1-1024/,
    ],
  ];
  for (const [name, kty, args, code, message] of rows) {
    test(`${name} → ${code}`, async () => {
      const vault = new FakeVault(kty);
      const { p } = provider(vault);
      const [keyId, algorithm, wrapped] = args(vault);
      await rejectsWith(p.unwrap(keyId, algorithm, wrapped), code, message);
      assert.equal(vault.calls.unwrapKey, 0);
    });
  }

  test('when the identity may not read the key, the vault judges the algorithm', async () => {
    const vault = new FakeVault('RSA');
    const { p } = provider(vault);
    vault.failNext('getKey', restError(403, 'Forbidden', 'ForbiddenByRbac'));
    await rejectsWith(p.unwrap(vault.latestId, 'A256KW', randomBytes(40)), ErrorCode.CIPHERTEXT_CORRUPT);
    assert.equal(vault.calls.unwrapKey, 1);
  });
});

// ---------------------------------------------------------------------------------------------------

interface MappingRow {
  readonly name: string;
  readonly op: Op;
  /** Errors the vault throws on consecutive calls of `op` (the last one repeats if retried). */
  readonly errors: unknown[];
  readonly code: ErrorCode;
  readonly message: RegExp;
  /** Vault calls of `op` expected (1 = not retried). */
  readonly attempts: number;
}

const credentialUnavailable = Object.assign(new Error('no managed identity endpoint'), {
  name: 'CredentialUnavailableError',
});
const authFailed = (statusCode: number) =>
  Object.assign(new Error('AADSTS700016'), { name: 'AuthenticationError', statusCode });
const tlsFailure = new RestError('self-signed certificate in certificate chain', {
  code: 'SELF_SIGNED_CERT_IN_CHAIN',
});
const refused = new RestError('connect ECONNREFUSED 10.0.0.1:443', { code: 'ECONNREFUSED' });
const thrice = (make: () => unknown) => [make(), make(), make()];

const mappingRows: MappingRow[] = [
  {
    name: '404 KeyNotFound',
    op: 'unwrapKey',
    errors: [restError(404, 'KeyNotFound')],
    code: ErrorCode.KEY_NOT_FOUND,
    message: /has no .*deleted \(recover it/,
    attempts: 1,
  },
  {
    name: '403 KeyDisabled on unwrap',
    op: 'unwrapKey',
    errors: [restError(403, 'Forbidden', 'KeyDisabled')],
    code: ErrorCode.KEY_DISABLED,
    message: /is disabled.*enable the key version/,
    attempts: 1,
  },
  {
    name: '403 KeyExpired',
    op: 'unwrapKey',
    errors: [restError(403, 'Forbidden', 'KeyExpired')],
    code: ErrorCode.KEY_DISABLED,
    message: /expiry dates/,
    attempts: 1,
  },
  {
    name: '403 ForbiddenByRbac on unwrap',
    op: 'unwrapKey',
    errors: [restError(403, 'Forbidden', 'ForbiddenByRbac')],
    code: ErrorCode.PERMISSION_DENIED,
    message: /grant unwrapKey on the key to the identity/,
    attempts: 1,
  },
  {
    name: '403 ForbiddenByPolicy on wrap',
    op: 'wrapKey',
    errors: [restError(403, 'ForbiddenByPolicy')],
    code: ErrorCode.PERMISSION_DENIED,
    message: /grant wrapKey/,
    attempts: 1,
  },
  {
    name: '403 Forbidden / AccessDenied (access policy)',
    op: 'unwrapKey',
    errors: [restError(403, 'Forbidden', 'AccessDenied')],
    code: ErrorCode.PERMISSION_DENIED,
    message: /access policy with keys\/unwrapKey/,
    attempts: 1,
  },
  {
    name: '403 KeyOperationForbidden',
    op: 'unwrapKey',
    errors: [restError(403, 'Forbidden', 'KeyOperationForbidden')],
    code: ErrorCode.PERMISSION_DENIED,
    message: /permitted operations/,
    attempts: 1,
  },
  {
    name: '403 ForbiddenByFirewall',
    op: 'wrapKey',
    errors: [restError(403, 'Forbidden', 'ForbiddenByFirewall')],
    code: ErrorCode.VAULT_UNAVAILABLE,
    message: /firewall/,
    attempts: 1,
  },
  {
    name: '401 Unauthorized',
    op: 'unwrapKey',
    errors: [restError(401, 'Unauthorized')],
    code: ErrorCode.PERMISSION_DENIED,
    message: /did not accept the identity's token/,
    attempts: 1,
  },
  {
    name: '400 BadParameter on unwrap',
    op: 'unwrapKey',
    errors: [restError(400, 'BadParameter')],
    code: ErrorCode.CIPHERTEXT_CORRUPT,
    message: /could not unwrap the data key/,
    attempts: 1,
  },
  {
    name: '400 BadParameter on wrap',
    op: 'wrapKey',
    errors: [restError(400, 'BadParameter')],
    code: ErrorCode.INTERNAL,
    message: /refused wrapKey/,
    attempts: 1,
  },
  {
    name: '429 on every attempt',
    op: 'unwrapKey',
    errors: thrice(() => restError(429, 'Throttled')),
    code: ErrorCode.VAULT_THROTTLED,
    message: /throttled unwrapKey .*data-key cache/,
    attempts: 3,
  },
  {
    name: '429 with a Retry-After past the deadline',
    op: 'wrapKey',
    errors: [restError(429, 'Throttled', undefined, { 'retry-after': '3600' })],
    code: ErrorCode.VAULT_THROTTLED,
    message: /until the 5000 ms deadline/,
    attempts: 1,
  },
  {
    // The final code follows the last attempt: a burst of 5xx that ends in throttling is throttling…
    name: '503, 503, then 429 on the last attempt',
    op: 'wrapKey',
    errors: [restError(503), restError(503), restError(429, 'Throttled')],
    code: ErrorCode.VAULT_THROTTLED,
    message: /throttled wrapKey .*data-key cache/,
    attempts: 3,
  },
  {
    // …and throttling that ends in a 5xx is an outage.
    name: '429, 429, then 503 on the last attempt',
    op: 'unwrapKey',
    errors: [restError(429, 'Throttled'), restError(429, 'Throttled'), restError(503)],
    code: ErrorCode.VAULT_UNAVAILABLE,
    message: /failed unwrapKey .*503/,
    attempts: 3,
  },
  {
    name: '503 on every attempt',
    op: 'unwrapKey',
    errors: thrice(() => restError(503)),
    code: ErrorCode.VAULT_UNAVAILABLE,
    message: /failed unwrapKey .*503.*retry later/,
    attempts: 3,
  },
  {
    name: '500 on every attempt',
    op: 'wrapKey',
    errors: thrice(() => restError(500, 'InternalServerError')),
    code: ErrorCode.VAULT_UNAVAILABLE,
    message: /500 InternalServerError/,
    attempts: 3,
  },
  {
    name: 'connection refused',
    op: 'unwrapKey',
    errors: thrice(() => refused),
    code: ErrorCode.VAULT_UNAVAILABLE,
    message: /cannot reach Key Vault at unit\.vault\.azure\.net .*ECONNREFUSED/,
    attempts: 3,
  },
  {
    name: 'SDK timeout (AbortError)',
    op: 'unwrapKey',
    errors: thrice(abortError),
    code: ErrorCode.VAULT_UNAVAILABLE,
    message: /timed out/,
    attempts: 3,
  },
  {
    name: 'TLS verification failure',
    op: 'wrapKey',
    errors: [tlsFailure],
    code: ErrorCode.VAULT_UNAVAILABLE,
    message: /set caFile/,
    attempts: 1,
  },
  {
    name: 'no credential',
    op: 'unwrapKey',
    errors: [credentialUnavailable],
    code: ErrorCode.VAULT_UNAVAILABLE,
    message: /no Azure credential/,
    attempts: 1,
  },
  {
    name: 'Entra ID refuses the token',
    op: 'unwrapKey',
    errors: [authFailed(400)],
    code: ErrorCode.PERMISSION_DENIED,
    message: /federated credential/,
    attempts: 1,
  },
  {
    name: 'Entra ID down',
    op: 'unwrapKey',
    errors: thrice(() => authFailed(503)),
    code: ErrorCode.VAULT_UNAVAILABLE,
    message: /did not issue a token/,
    attempts: 3,
  },
  {
    name: "the SDK's own expiry check",
    op: 'unwrapKey',
    errors: [new Error('Key https://x/keys/k/v expired at 2020-01-01T00:00:00.000Z')],
    code: ErrorCode.KEY_DISABLED,
    message: /cached copy of the key's dates/,
    attempts: 1,
  },
  {
    name: 'a bug',
    op: 'unwrapKey',
    errors: [new TypeError("Cannot read properties of undefined (reading 'x')")],
    code: ErrorCode.INTERNAL,
    message: /unexpected failure during unwrapKey .*TypeError/,
    attempts: 1,
  },
];

describe('error mapping', () => {
  for (const row of mappingRows) {
    test(`${row.name} → ${row.code} (${row.attempts} attempt${row.attempts > 1 ? 's' : ''})`, async () => {
      const vault = new FakeVault();
      const { p } = provider(vault);
      const key = dek();
      const w = await p.wrap(key); // warms the current version and its client
      const before = vault.calls[row.op];
      vault.failNext(row.op, ...row.errors);
      const call = row.op === 'wrapKey' ? p.wrap(dek()) : p.unwrap(w.keyId, w.algorithm, w.wrapped);
      const err = await rejectsWith(call, row.code, row.message);
      assert.equal(vault.calls[row.op] - before, row.attempts);
      // Messages name the operation and the key, keep the SDK error, and carry no key material
      // and none of the vault's free text.
      assert.match(err.message, new RegExp(row.op));
      assert.ok(err.message.includes(w.keyId), err.message);
      assert.ok(err.cause !== undefined);
      for (const secret of [key, w.wrapped]) {
        for (const encoding of ['hex', 'base64', 'base64url'] as const) {
          assert.ok(!err.message.includes(secret.toString(encoding)));
        }
      }
      assert.ok(!err.message.includes('free text'));
    });
  }

  test('the SDK error is the cause (directly, or as the deadline error’s last error)', () => {
    const e = restError(404, 'KeyNotFound');
    const mapped = mapVaultError(e, { operation: 'getKey', keyId: `${VAULT_URL}/keys/${NAME}`, vault: HOST });
    assert.equal(mapped.cause, e);
    assert.equal(mapped.code, ErrorCode.KEY_NOT_FOUND);
  });

  test('a deadline passed during an attempt → VAULT_UNAVAILABLE naming the deadline', async () => {
    const vault = new FakeVault();
    const counters = new RetryCounters();
    const p = new AzureKekProvider({
      vaultUrl: VAULT_URL,
      keyName: NAME,
      keyClient: vault.keyClient,
      cryptoClientFactory: vault.factory,
      retry: { timeoutMs: 60 },
      deps: { onEvent: counters.observe },
    });
    const w = await p.wrap(dek());
    vault.hangNext('unwrapKey');
    await rejectsWith(
      p.unwrap(w.keyId, w.algorithm, w.wrapped),
      ErrorCode.VAULT_UNAVAILABLE,
      /did not complete unwrapKey .* within 60 ms/,
    );
    assert.equal(counters.failures.deadline, 1);
  });

  test('a caller abort → CANCELLED, and no retry', async () => {
    const vault = new FakeVault();
    const { p } = provider(vault);
    const w = await p.wrap(dek());
    vault.hangNext('unwrapKey');
    const caller = new AbortController();
    const running = p.unwrap(w.keyId, w.algorithm, w.wrapped, caller.signal);
    setImmediate(() => caller.abort());
    await rejectsWith(running, ErrorCode.CANCELLED, /cancelled while waiting for Key Vault/);
    assert.equal(vault.calls.unwrapKey, 1);
  });

  test('a caller abort while waiting on a shared getKey → CANCELLED for that caller only', async () => {
    const vault = new FakeVault();
    const { p } = provider(vault);
    vault.hangNext('getKey');
    const caller = new AbortController();
    const aborted = p.wrap(dek(), caller.signal);
    const other = p.wrap(dek());
    caller.abort();
    await rejectsWith(aborted, ErrorCode.CANCELLED);
    // The shared getKey is still running for the other caller; close() ends it.
    await p.close();
    await rejectsWith(other, ErrorCode.CANCELLED);
  });

  test('after 429s with Retry-After, the wait honours the header and the call succeeds', async () => {
    const vault = new FakeVault();
    const { p, sleeps, counters } = provider(vault);
    const w = await p.wrap(dek());
    vault.failNext(
      'unwrapKey',
      restError(429, 'Throttled', undefined, { 'retry-after': '2' }),
      restError(503),
    );
    await p.unwrap(w.keyId, w.algorithm, w.wrapped);
    assert.deepEqual(sleeps, [2000, 10]); // Retry-After, then 0.5 × min(100, 10·2)
    assert.equal(counters.retries.throttled, 1);
    assert.equal(counters.retries['server-error'], 1);
  });
});

describe('status', () => {
  test('reports enabled, dates and the latest key id for any version', async () => {
    const vault = new FakeVault();
    const { p } = provider(vault);
    const v1 = vault.latest;
    const expiresOn = new Date('2030-01-01T00:00:00Z');
    vault.version(v1).expiresOn = expiresOn;
    vault.version(v1).enabled = false;
    vault.rotate();
    const status = await p.status(vault.idFor(v1));
    assert.deepEqual(status, {
      keyId: vault.idFor(v1),
      enabled: false,
      notBefore: undefined,
      expiresOn,
      latestKeyId: vault.latestId,
    });
  });

  test('a version that does not exist → KEY_NOT_FOUND; another key → KEY_NOT_FOUND', async () => {
    const vault = new FakeVault();
    const { p } = provider(vault);
    await rejectsWith(p.status(vault.idFor('0'.repeat(32))), ErrorCode.KEY_NOT_FOUND, /getKey/);
    await rejectsWith(p.status('https://other.vault.azure.net/keys/x/1'), ErrorCode.KEY_NOT_FOUND);
  });
});

test('close: later calls fail with CANCELLED', async () => {
  const vault = new FakeVault();
  const { p } = provider(vault);
  const w = await p.wrap(dek());
  await p.close();
  assert.equal(p.cachedVersions, 0);
  await rejectsWith(p.wrap(dek()), ErrorCode.CANCELLED, /shut down/);
  await rejectsWith(p.unwrap(w.keyId, w.algorithm, w.wrapped), ErrorCode.CANCELLED);
});

describe('client options', () => {
  test('SDK retries off; TLS settings shared; verification never disabled', () => {
    const tls = { ca: '-----BEGIN CERTIFICATE-----\n…' };
    const a = azureClientOptions({ tls, staticToken: true });
    const b = azureClientOptions({ tls });
    assert.deepEqual(a.retryOptions, { maxRetries: 0 });
    assert.equal(a.tlsOptions, tls);
    assert.equal(b.tlsOptions, tls, 'one TLS object → one cached agent');
    assert.notEqual(a.userAgentOptions, b.userAgentOptions, 'the SDK mutates these; one per client');
    assert.equal(a.disableChallengeResourceVerification, true);
    assert.equal(b.disableChallengeResourceVerification, undefined);
    assert.ok(!JSON.stringify(a).includes('rejectUnauthorized'));
    assert.deepEqual(azureClientOptions().tlsOptions, undefined);
  });

  test('loopback vaults (the dev vault) skip the challenge-resource check for every credential', () => {
    assert.equal(azureClientOptions({ loopback: true }).disableChallengeResourceVerification, true);
  });

  test('Entra ID options: authority from cloud or authorityHost, discovery off for non-cloud hosts, the authority CA', () => {
    const pem = '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n';
    const read = (path: string) => {
      assert.equal(path, '/dev-ca.pem');
      return pem;
    };
    assert.deepEqual(entraCredentialOptions({ kind: 'workload-identity' }), {});
    assert.deepEqual(entraCredentialOptions({ kind: 'default', cloud: 'usgov' }), {
      authorityHost: 'https://login.microsoftonline.us',
    });
    assert.deepEqual(
      entraCredentialOptions(
        {
          kind: 'workload-identity',
          authorityHost: 'https://localhost:9443/',
          authorityCaFile: '/dev-ca.pem',
        },
        read,
      ),
      { authorityHost: 'https://localhost:9443', disableInstanceDiscovery: true, tlsOptions: { ca: pem } },
    );
    assert.throws(
      () =>
        entraCredentialOptions(
          { kind: 'workload-identity', authorityHost: 'https://localhost:9443', authorityCaFile: '/x' },
          () => 'not a pem',
        ),
      /caFile \/x holds no PEM certificate/,
    );
  });

  test('createAzureProvider refuses a caFile without a certificate and a token-less static credential', () => {
    const base = {
      provider: 'azure' as const,
      vaultUrl: VAULT_URL,
      keyName: NAME,
      credential: { kind: 'static-token' as const, token: 't' },
    };
    assert.throws(
      () => createAzureProvider({ ...base, caFile: '/ca.pem' }, { readFile: () => 'not a pem' }),
      /caFile \/ca\.pem holds no PEM certificate/,
    );
    assert.throws(
      () => createAzureProvider({ ...base, credential: { kind: 'static-token' } }),
      /static-token credential needs token or tokenFile/,
    );
  });
});

// ---------------------------------------------------------------------------------------------------
// The real SDK over real HTTPS, against a stub that speaks just enough Key Vault.

interface StubReply {
  readonly status: number;
  readonly body?: unknown;
  readonly headers?: Record<string, string>;
}

class StubVault {
  server!: Server;
  url = '';
  caPem = '';
  readonly kek = randomBytes(32);
  readonly version = 'c0ffee00c0ffee00c0ffee00c0ffee00';
  /** Authorized requests by "METHOD /path". */
  readonly seen: string[] = [];
  readonly replies: StubReply[] = [];
  tokens = new Set<string>();

  async start(): Promise<void> {
    x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
    const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
    const keys = await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: '01',
      name: 'CN=sealbox unit stub vault',
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
      signingAlgorithm: alg,
      keys: keys as unknown as x509.X509CertificateCreateSelfSignedParams['keys'],
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.SubjectAlternativeNameExtension([
          { type: 'ip', value: '127.0.0.1' },
          { type: 'dns', value: 'localhost' },
        ]),
      ],
    });
    const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
    const keyPem = `-----BEGIN PRIVATE KEY-----\n${pkcs8.toString('base64').replace(/.{64}/g, '$&\n')}\n-----END PRIVATE KEY-----\n`;
    this.caPem = cert.toString('pem');
    this.server = createServer({ key: keyPem, cert: this.caPem }, (req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () =>
        this.handle(req.method ?? '', req.url ?? '', req.headers, Buffer.concat(chunks), res),
      );
    });
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private handle(
    method: string,
    rawUrl: string,
    headers: NodeJS.Dict<string | string[]>,
    body: Buffer,
    res: import('node:http').ServerResponse,
  ): void {
    const reply = this.route(method, rawUrl, headers, body);
    res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers });
    res.end(reply.body === undefined ? '' : JSON.stringify(reply.body));
  }

  private route(
    method: string,
    rawUrl: string,
    headers: NodeJS.Dict<string | string[]>,
    body: Buffer,
  ): StubReply {
    const auth = headers.authorization;
    if (typeof auth !== 'string' || !this.tokens.has(auth.replace(/^Bearer /, ''))) {
      // Key Vault's challenge: the SDK's authentication policy answers it with a token.
      return {
        status: 401,
        headers: {
          'www-authenticate':
            'Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net"',
        },
      };
    }
    const path = new URL(rawUrl, this.url).pathname;
    this.seen.push(`${method} ${path}`);
    const scripted = this.replies.shift();
    if (scripted) return scripted;
    const kid = `${this.url}/keys/${NAME}/${this.version}`;
    if (method === 'GET' && (/^\/keys\/kek\/?$/.test(path) || path === `/keys/${NAME}/${this.version}`)) {
      const key = { kid, kty: 'oct-HSM', key_ops: ['wrapKey', 'unwrapKey'] };
      return { status: 200, body: { key, attributes: { enabled: true, created: 1_700_000_000 } } };
    }
    const op = /^\/keys\/[^/]+\/[^/]+\/(wrapkey|unwrapkey)$/.exec(path)?.[1];
    if (method === 'POST' && op) {
      const { value } = JSON.parse(body.toString('utf8')) as { alg: string; value: string };
      const input = Buffer.from(value, 'base64url');
      const out = op === 'wrapkey' ? aesKeyWrap(this.kek, input) : aesKeyUnwrap(this.kek, input);
      if (!out) return { status: 400, body: { error: { code: 'BadParameter', message: 'unwrap failed' } } };
      return { status: 200, body: { kid, value: out.toString('base64url') } };
    }
    return { status: 404, body: { error: { code: 'KeyNotFound', message: 'no such key' } } };
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

describe('the real Azure SDK against an HTTPS stub', () => {
  const stub = new StubVault();
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-azure-'));
  let caFile = '';
  before(async () => {
    await stub.start();
    caFile = join(dir, 'ca.pem');
    writeFileSync(caFile, stub.caPem);
    stub.tokens.add('dev-token');
  });
  after(() => stub.stop());

  function realProvider(opts: { caFile?: string } = {}) {
    const counters = new RetryCounters();
    const sleeps: number[] = [];
    const p = createAzureProvider(
      {
        provider: 'azure',
        vaultUrl: stub.url,
        keyName: NAME,
        credential: { kind: 'static-token', token: 'dev-token' },
        ...opts,
        retry: { maxAttempts: 3, baseDelayMs: 10, maxDelayMs: 50, timeoutMs: 5000 },
      },
      {
        retryDeps: {
          onEvent: counters.observe,
          random: () => 0,
          sleep: async (ms) => {
            sleeps.push(ms);
          },
        },
      },
    );
    return { p, counters, sleeps };
  }

  const authorized = (prefix: string) => stub.seen.filter((s) => s.startsWith(prefix)).length;

  test('round trip through KeyClient and CryptographyClient, trusting only caFile', async () => {
    const { p } = realProvider({ caFile });
    const key = dek();
    const w = await p.wrap(key);
    assert.equal(w.keyId, `${stub.url}/keys/${NAME}/${stub.version}`);
    assert.equal(w.algorithm, 'A256KW');
    assert.ok(p.owns(w.keyId));
    const back = await p.unwrap(w.keyId, w.algorithm, w.wrapped);
    assert.ok(Buffer.isBuffer(back), 'the SDK result is already a Buffer');
    assert.ok(back.equals(key));
    const status = await p.status(w.keyId);
    assert.equal(status.enabled, true);
    assert.equal(status.latestKeyId, w.keyId);
  });

  test('one retry layer: a 503 costs exactly one more request on the wire', async () => {
    const { p, counters } = realProvider({ caFile });
    const w = await p.wrap(dek());
    const before = authorized('POST');
    stub.replies.push({ status: 503, body: { error: { code: 'ServiceUnavailable', message: 'busy' } } });
    await p.unwrap(w.keyId, w.algorithm, w.wrapped);
    assert.equal(authorized('POST') - before, 2);
    assert.equal(counters.retries['server-error'], 1);
  });

  test('429 with Retry-After from the wire: the real RestError exposes the header', async () => {
    const { p, sleeps } = realProvider({ caFile });
    const w = await p.wrap(dek());
    stub.replies.push({
      status: 429,
      headers: { 'retry-after': '2' },
      body: { error: { code: 'Throttled', message: 'slow down' } },
    });
    await p.unwrap(w.keyId, w.algorithm, w.wrapped);
    assert.deepEqual(sleeps, [2000]);
  });

  const wireErrors: Array<[string, StubReply, ErrorCode]> = [
    [
      '403 KeyDisabled',
      {
        status: 403,
        body: {
          error: {
            code: 'Forbidden',
            message: 'Operation unwrapKey is not allowed on a disabled key.',
            innererror: { code: 'KeyDisabled' },
          },
        },
      },
      ErrorCode.KEY_DISABLED,
    ],
    [
      '403 ForbiddenByRbac',
      {
        status: 403,
        body: {
          error: {
            code: 'Forbidden',
            message: 'Caller is not authorized',
            innererror: { code: 'ForbiddenByRbac' },
          },
        },
      },
      ErrorCode.PERMISSION_DENIED,
    ],
    [
      '404 KeyNotFound',
      {
        status: 404,
        body: { error: { code: 'KeyNotFound', message: 'A key with (name/id) kek was not found' } },
      },
      ErrorCode.KEY_NOT_FOUND,
    ],
    [
      '400 BadParameter',
      { status: 400, body: { error: { code: 'BadParameter', message: 'The parameter is incorrect' } } },
      ErrorCode.CIPHERTEXT_CORRUPT,
    ],
  ];
  for (const [name, reply, code] of wireErrors) {
    test(`${name} from the wire → ${code}, one request`, async () => {
      const { p } = realProvider({ caFile });
      const w = await p.wrap(dek());
      const before = authorized('POST');
      stub.replies.push(reply);
      await rejectsWith(p.unwrap(w.keyId, w.algorithm, w.wrapped), code);
      assert.equal(authorized('POST') - before, 1);
    });
  }

  test('without caFile the stub certificate is refused: VAULT_UNAVAILABLE naming caFile, no retry', async () => {
    const { p, counters } = realProvider();
    await rejectsWith(p.refreshCurrentVersion(), ErrorCode.VAULT_UNAVAILABLE, /set caFile/);
    assert.equal(counters.attempts, 1);
  });

  test('a static token credential re-reads its source', async () => {
    let token = 'one';
    const credential = staticTokenCredential(() => token);
    assert.equal((await credential.getToken('https://vault.azure.net/.default'))?.token, 'one');
    token = 'two\n';
    assert.equal((await credential.getToken('https://vault.azure.net/.default'))?.token, 'two');
    token = '';
    await assert.rejects(credential.getToken('x') as Promise<unknown>, {
      name: 'CredentialUnavailableError',
    });
  });
});
