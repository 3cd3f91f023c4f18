/**
 * Envelope.Rewrap and RewrapStream end to end: gRPC over a Unix socket → sealbox (DEK cache on) →
 * Azure provider → @azure/keyvault-keys over HTTPS → the embedded dev vault, with an RSA key rotated
 * through KeyClient.rotateKey. Vault traffic is checked with the dev vault's own counters.
 *
 * The tests run in order and share state: ciphertexts sealed before the rotation, one sealbox after it,
 * then the old version disabled.
 *
 * Wiring: main.ts does not (yet) hand the envelope service the KEK registry Rewrap needs, so this file
 * starts sealbox from the same parts main.ts uses (`startRewrapSealbox`). Once main.ts passes the
 * registry, it can become `startTestSealbox` from the harness.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { KeyClient } from '@azure/keyvault-keys';
import type { ServiceError } from '@grpc/grpc-js';
import type { EnvelopeClient } from '../../src/api/proto';
import { CachedDataKeys } from '../../src/cache/cached-data-keys';
import { connectEnvelope, decrypt, encrypt, errorCode, rewrap, rewrapStream } from '../../src/client/client';
import { type ConfigInput, validateConfig } from '../../src/config/config';
import { parseHeader } from '../../src/crypto/format';
import { sealMessage } from '../../src/crypto/message';
import {
  type DevVault,
  devVaultClientOptions,
  sealboxKeyConfig,
  startDevVault,
  staticTokenCredential,
} from '../../src/devvault';
import { EnvelopeService } from '../../src/envelope/service';
import type { RewrapRequest } from '../../src/gen/sealbox/v1/RewrapRequest';
import type { RewrapResponse__Output } from '../../src/gen/sealbox/v1/RewrapResponse';
import { createLogger } from '../../src/log/logger';
import { buildProviders } from '../../src/main';
import { ChunkPool } from '../../src/pool/pool';
import { AccessControl } from '../../src/server/access';
import { startServer } from '../../src/server/server';
import { ByteBudget } from '../../src/util/budget';

const TOKEN = 'rewrap-tests';
const KEY_NAME = 'rewrap-rsa';
const ALIAS = 'pay';
const CONTEXT = { tenant: 'acme' };
/** gRPC status codes used below. */
const S = {
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  FAILED_PRECONDITION: 9,
  UNIMPLEMENTED: 12,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
};

let dir: string;
let vault: DevVault;
let keys: KeyClient;
let v1: string;
let v2: string;
/** Sealed under v1 before the rotation (one sealbox, cache on: they share one DEK). */
let old: { plaintext: Buffer; ciphertext: Buffer };
let batch: Buffer[] = [];
/** Sealed under v2 after the rotation. */
let fresh: { plaintext: Buffer; ciphertext: Buffer };
/** `old` after Rewrap. */
let rewrapped: Buffer;
/** The sealbox started after the rotation; tests 2-6 use it. */
let box: RewrapBox;

interface RewrapBox {
  readonly client: EnvelopeClient;
  close(): Promise<void>;
}

/**
 * A sealbox on a Unix socket built from main.ts's parts, its envelope service given the KEK registry
 * (or not, with `registry: false`). Alias "pay" is the dev vault's RSA key; the DEK cache is on.
 */
async function startRewrapSealbox(options: { registry?: boolean; retry?: object } = {}): Promise<RewrapBox> {
  const home = mkdtempSync(join(tmpdir(), 'sealbox-rewrap-'));
  const input: ConfigInput = {
    dataDir: home,
    listen: { socket: join(home, 'sealbox.sock') },
    cache: { enabled: true },
    pool: { threads: 2 },
    log: { level: 'silent' },
    shutdown: { graceMs: 2000 },
    keys: {
      [ALIAS]: {
        ...sealboxKeyConfig(vault, KEY_NAME, TOKEN),
        ...(options.retry ? { retry: options.retry } : {}),
      },
    },
  } as ConfigInput;
  const config = validateConfig(input);
  const log = createLogger(config.log.level);
  const registry = buildProviders(config);
  const cache = new CachedDataKeys(registry, config.cache);
  const pool = new ChunkPool(config.pool);
  const service = new EnvelopeService(
    cache,
    pool,
    config.envelope,
    options.registry === false ? undefined : registry,
  );
  const budget = new ByteBudget(config.stream.maxInFlightBytes);
  const access = new AccessControl(config, (keyId) => registry.aliasesOf(keyId), log);
  const server = await startServer(
    config,
    { service, budget, limits: config.stream, access, log, unaryQueueBytes: config.envelope.unaryQueueBytes },
    log,
  );
  const client = connectEnvelope(`unix:${config.listen.socket}`);
  return {
    client,
    async close() {
      client.close();
      await server.stop(config.shutdown.graceMs);
      cache.close();
      await pool.close();
      await registry.close();
      rmSync(home, { recursive: true, force: true });
    },
  };
}

async function refused(call: Promise<unknown>): Promise<ServiceError> {
  return call.then(
    () => assert.fail('the call must fail'),
    (err: unknown) => err as ServiceError,
  );
}

/** `response.header ‖ ciphertext[header_length_before:]`, as the proto tells clients to store it. */
function splice(ciphertext: Buffer, response: RewrapResponse__Output): Buffer {
  return Buffer.concat([response.header, ciphertext.subarray(response.headerLengthBefore)]);
}

function headerLength(ciphertext: Buffer): number {
  return parseHeader(ciphertext)!.length;
}

/** A copy of `ciphertext` with the last byte of its header tag flipped. */
function tamperTag(ciphertext: Buffer): Buffer {
  const out = Buffer.from(ciphertext);
  out[headerLength(ciphertext) - 1]! ^= 0x01;
  return out;
}

const versionOf = (keyId: string) => keyId.split('/').pop()!;
const count = (op: string) => vault.counters()[op] ?? 0;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sealbox-rewrap-vault-'));
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
  v1 = (await keys.createRsaKey(KEY_NAME, { keySize: 2048 })).id!;
});

after(async () => {
  await box?.close();
  await vault.close();
  rmSync(dir, { recursive: true, force: true });
});

test('after a rotation, ciphertexts under the old and the new version both decrypt', async () => {
  const before = await startRewrapSealbox();
  try {
    const plaintext = randomBytes(100_000);
    old = { plaintext, ciphertext: (await encrypt(before.client, ALIAS, plaintext, CONTEXT)).ciphertext };
    batch = [];
    for (let i = 0; i < 40; i++) {
      batch.push((await encrypt(before.client, ALIAS, Buffer.from(`message ${i}`), CONTEXT)).ciphertext);
    }
  } finally {
    await before.close();
  }
  v2 = (await keys.rotateKey(KEY_NAME)).id!;
  assert.notEqual(v2, v1);

  // The Azure provider reuses the current version for 60 s, so a sealbox running across the rotation
  // would go on wrapping under v1 for up to a minute: start a fresh one, which asks the vault. (The key
  // watcher being built separately will adopt new versions in a running sealbox.)
  box = await startRewrapSealbox({
    retry: { maxAttempts: 2, baseDelayMs: 5, maxDelayMs: 10, timeoutMs: 3000 },
  });
  const plaintext = randomBytes(50_000);
  fresh = { plaintext, ciphertext: (await encrypt(box.client, ALIAS, plaintext, CONTEXT)).ciphertext };

  assert.equal(parseHeader(old.ciphertext)!.keyId, v1);
  assert.equal(parseHeader(fresh.ciphertext)!.keyId, v2);
  assert.ok((await decrypt(box.client, old.ciphertext, CONTEXT)).plaintext.equals(old.plaintext));
  assert.ok((await decrypt(box.client, fresh.ciphertext, CONTEXT)).plaintext.equals(fresh.plaintext));
});

test('Rewrap moves an old header to the new version; the body bytes are identical and it decrypts', async () => {
  vault.resetCounters();
  const response = await rewrap(box.client, { headerOrCiphertext: old.ciphertext, expectedContext: CONTEXT });
  assert.equal(response.changed, true);
  assert.equal(response.keyId, v2);
  assert.equal(response.previousKeyId, v1);
  assert.equal(response.headerLengthBefore, headerLength(old.ciphertext));
  assert.equal(response.errorCode, '');
  assert.equal(count('wrapKey'), 1, JSON.stringify(vault.counters()));
  assert.equal(count('unwrapKey'), 1);

  rewrapped = splice(old.ciphertext, response);
  assert.equal(parseHeader(rewrapped)!.keyId, v2);
  assert.ok(
    rewrapped.subarray(headerLength(rewrapped)).equals(old.ciphertext.subarray(headerLength(old.ciphertext))),
    'the body is byte for byte the same',
  );
  const opened = await decrypt(box.client, rewrapped, CONTEXT);
  assert.ok(opened.plaintext.equals(old.plaintext));
  assert.equal(opened.keyId, v2);
});

test('header-only input: the header alone, or the first 16 KiB, is enough', async () => {
  const length = headerLength(old.ciphertext);
  for (const prefix of [length, 16 * 1024]) {
    const response = await rewrap(box.client, { headerOrCiphertext: old.ciphertext.subarray(0, prefix) });
    assert.equal(response.changed, true);
    assert.equal(response.headerLengthBefore, length);
    const spliced = splice(old.ciphertext, response);
    assert.ok((await decrypt(box.client, spliced)).plaintext.equals(old.plaintext), `prefix ${prefix}`);
  }
  const short = await refused(
    rewrap(box.client, { headerOrCiphertext: old.ciphertext.subarray(0, length - 1) }),
  );
  assert.equal(short.code, S.DATA_LOSS);
  assert.equal(errorCode(short), 'CIPHERTEXT_TRUNCATED');
  assert.match(short.details, /16384 bytes/);
});

test('an up-to-date header comes back unchanged with no wrapKey call', async () => {
  vault.resetCounters();
  for (const ciphertext of [fresh.ciphertext, rewrapped]) {
    const response = await rewrap(box.client, { headerOrCiphertext: ciphertext, expectedContext: CONTEXT });
    assert.equal(response.changed, false);
    assert.equal(response.keyId, v2);
    assert.equal(response.previousKeyId, v2);
    assert.ok(response.header.equals(ciphertext.subarray(0, headerLength(ciphertext))));
    assert.ok(splice(ciphertext, response).equals(ciphertext), 'splicing is a no-op');
  }
  assert.equal(count('wrapKey'), 0, JSON.stringify(vault.counters()));
  assert.equal(count('unwrapKey'), 0, 'verified from the DEK cache (both were decrypted before)');
});

test('a tampered header fails with DATA_LOSS and nothing is wrapped; other bad input is refused', async () => {
  vault.resetCounters();
  for (const ciphertext of [tamperTag(old.ciphertext), tamperTag(fresh.ciphertext)]) {
    const err = await refused(rewrap(box.client, { headerOrCiphertext: ciphertext }));
    assert.equal(err.code, S.DATA_LOSS);
    assert.equal(errorCode(err), 'CIPHERTEXT_CORRUPT');
  }
  const mismatch = await refused(
    rewrap(box.client, { headerOrCiphertext: old.ciphertext, expectedContext: { tenant: 'other' } }),
  );
  assert.equal(mismatch.code, S.FAILED_PRECONDITION);
  assert.equal(errorCode(mismatch), 'CONTEXT_MISMATCH');
  assert.equal(count('wrapKey'), 0, JSON.stringify(vault.counters()));

  const garbage = await refused(rewrap(box.client, { headerOrCiphertext: Buffer.from('not a ciphertext') }));
  assert.equal(garbage.code, S.INVALID_ARGUMENT);
  assert.equal(errorCode(garbage), 'CIPHERTEXT_MALFORMED');
  const empty = await refused(rewrap(box.client, {}));
  assert.equal(empty.code, S.INVALID_ARGUMENT);
  assert.equal(errorCode(empty), 'INVALID_ARGUMENT');
  const alias = await refused(rewrap(box.client, { headerOrCiphertext: old.ciphertext, keyAlias: 'nope' }));
  assert.equal(alias.code, S.NOT_FOUND);
  assert.equal(errorCode(alias), 'KEY_NOT_FOUND');
});

test('RewrapStream: 50 headers in one call, in order, item errors reported in place', async (t) => {
  // 40 old headers sharing one DEK (one sealbox sealed them, cache on), 6 current ones, 4 bad ones.
  const requests: RewrapRequest[] = [];
  const expect: Array<'changed' | 'same' | string> = [];
  /** The whole ciphertext behind each request (some requests send only the header). */
  const whole: Buffer[] = [];
  const add = (ciphertext: Buffer, outcome: string, request: Partial<RewrapRequest> = {}) => {
    requests.push({ headerOrCiphertext: ciphertext, ...request });
    expect.push(outcome);
    whole.push(ciphertext);
  };
  for (const [i, ciphertext] of batch.entries()) {
    add(ciphertext, 'changed', { expectedContext: CONTEXT });
    // Mix whole ciphertexts and header-only prefixes.
    if (i % 2 === 0)
      requests[requests.length - 1]!.headerOrCiphertext = ciphertext.subarray(0, headerLength(ciphertext));
    if (i === 10) add(tamperTag(ciphertext), 'CIPHERTEXT_CORRUPT');
    if (i === 20) add(Buffer.from('SBX garbage'), 'CIPHERTEXT_MALFORMED');
    if (i === 30) add(ciphertext, 'CONTEXT_MISMATCH', { expectedContext: { tenant: 'other' } });
  }
  for (let i = 0; i < 6; i++) add(i % 2 ? fresh.ciphertext : rewrapped, 'same');
  add(Buffer.alloc(0), 'INVALID_ARGUMENT');
  assert.equal(requests.length, 50);

  vault.resetCounters();
  const started = Date.now();
  const { responses, error } = await rewrapStream(box.client, requests);
  const ms = Date.now() - started;
  assert.equal(error, undefined, error?.details);
  assert.equal(responses.length, 50);
  for (const [i, response] of responses.entries()) {
    const outcome = expect[i]!;
    if (outcome === 'changed' || outcome === 'same') {
      assert.equal(response.errorCode, '', `item ${i}: ${response.errorMessage}`);
      assert.equal(response.changed, outcome === 'changed', `item ${i}`);
      assert.equal(response.keyId, v2);
      assert.equal(response.headerLengthBefore, headerLength(whole[i]!));
    } else {
      assert.equal(response.errorCode, outcome, `item ${i}`);
      assert.ok(response.errorMessage.length > 0);
      assert.equal(response.header.length, 0);
      assert.equal(response.headerLengthBefore, 0);
      assert.equal(response.changed, false);
    }
  }
  // The 40 old headers carry one wrapped DEK: one unwrap and one wrap for all of them. The current
  // ones verify from the DEK cache.
  assert.equal(count('wrapKey'), 1, JSON.stringify(vault.counters()));
  assert.equal(count('unwrapKey'), 1, JSON.stringify(vault.counters()));

  for (const [i, response] of responses.entries()) {
    if (expect[i] !== 'changed') continue;
    const opened = await decrypt(box.client, splice(whole[i]!, response), CONTEXT);
    assert.equal(opened.keyId, v2);
    assert.equal(opened.plaintext.toString(), `message ${batch.indexOf(whole[i]!)}`);
  }
  t.diagnostic(`RewrapStream: 50 items in ${ms} ms`);
});

test('RewrapStream: a vault outage ends the stream with UNAVAILABLE naming the item; earlier items stand', async () => {
  vault.setFaults({ errorRate: 1 });
  try {
    const { responses, error } = await rewrapStream(box.client, [
      { headerOrCiphertext: Buffer.from('garbage') },
      { headerOrCiphertext: old.ciphertext },
      { headerOrCiphertext: fresh.ciphertext },
    ]);
    assert.equal(responses.length, 1);
    assert.equal(responses[0]!.errorCode, 'CIPHERTEXT_MALFORMED');
    assert.ok(error);
    assert.equal(error.code, S.UNAVAILABLE);
    assert.equal(errorCode(error), 'VAULT_UNAVAILABLE');
    assert.match(error.details, /RewrapStream item 1:/);
  } finally {
    vault.setFaults({ errorRate: 0 });
  }
});

test('a forged key version costs one vault lookup: later Rewraps naming it are refused without one', async () => {
  // A well-formed id of a version that does not exist, in an otherwise genuine ciphertext.
  const forgedId = `${v1.slice(0, v1.lastIndexOf('/') + 1)}${'f'.repeat(32)}`;
  const forged = sealMessage(Buffer.from('forged'), {
    dek: randomBytes(32),
    wrapped: { keyId: forgedId, wrapAlgorithm: 'RSA-OAEP-256', wrappedDek: randomBytes(256) },
    context: CONTEXT,
    chunkSize: 4096,
  });
  const vaultCalls = () => count('getKey') + count('unwrapKey') + count('wrapKey');
  const first = await refused(rewrap(box.client, { headerOrCiphertext: forged }));
  assert.equal(errorCode(first), 'KEY_NOT_FOUND');
  const after = vaultCalls();
  for (let i = 0; i < 5; i++) {
    const again = await refused(rewrap(box.client, { headerOrCiphertext: forged }));
    assert.equal(errorCode(again), 'KEY_NOT_FOUND');
  }
  assert.equal(vaultCalls(), after, 'no vault call after the first 404');
});

test('a Rewrap that the vault refuses because the old version is disabled revokes its cached DEK at once', async () => {
  // This sealbox has no key watcher: only in-band evidence can tell its cache about v1.
  assert.ok((await decrypt(box.client, old.ciphertext, CONTEXT)).plaintext.equals(old.plaintext));
  await keys.updateKeyProperties(KEY_NAME, versionOf(v1), { enabled: false });
  // Cached: served without asking the vault.
  assert.ok((await decrypt(box.client, old.ciphertext, CONTEXT)).plaintext.equals(old.plaintext));
  const late = await refused(rewrap(box.client, { headerOrCiphertext: old.ciphertext }));
  assert.equal(errorCode(late), 'KEY_DISABLED');
  // The vault's answer to Rewrap's unwrap went to the key-state model: v1's cached DEK is gone.
  const err = await refused(decrypt(box.client, old.ciphertext, CONTEXT));
  assert.equal(err.code, S.FAILED_PRECONDITION);
  assert.equal(errorCode(err), 'KEY_DISABLED');
});

test('with the old version disabled, the old ciphertext is refused and the rewrapped one decrypts', async () => {
  await box.close();
  await keys.updateKeyProperties(KEY_NAME, versionOf(v1), { enabled: false });
  // A fresh sealbox: the one above still holds v1's DEK in its decrypt cache.
  box = await startRewrapSealbox();
  const err = await refused(decrypt(box.client, old.ciphertext));
  assert.equal(err.code, S.FAILED_PRECONDITION);
  assert.equal(errorCode(err), 'KEY_DISABLED');
  assert.ok((await decrypt(box.client, rewrapped, CONTEXT)).plaintext.equals(old.plaintext));

  const late = await refused(rewrap(box.client, { headerOrCiphertext: old.ciphertext }));
  assert.equal(late.code, S.FAILED_PRECONDITION, 'too late to rewrap once the old version is disabled');
  assert.equal(errorCode(late), 'KEY_DISABLED');
});

test('a sealbox whose envelope service has no KEK registry answers UNIMPLEMENTED', async () => {
  const bare = await startRewrapSealbox({ registry: false });
  try {
    const err = await refused(rewrap(bare.client, { headerOrCiphertext: rewrapped }));
    assert.equal(err.code, S.UNIMPLEMENTED);
    assert.match(err.details, /KEK registry/);
    const { responses, error } = await rewrapStream(bare.client, [{ headerOrCiphertext: rewrapped }]);
    assert.equal(responses.length, 0);
    assert.equal(error?.code, S.UNIMPLEMENTED);
  } finally {
    await bare.close();
  }
});
