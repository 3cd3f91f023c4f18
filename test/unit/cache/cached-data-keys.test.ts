/**
 * CachedDataKeys against a working fake KEK (real AES key wrap) whose vault calls can be held open,
 * failed, and counted — the cache's rules one at a time, without a network.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CachedDataKeys, type CacheOptions } from '../../../src/cache/cached-data-keys';
import type { Header } from '../../../src/crypto/format';
import { deriveMessageKeys } from '../../../src/crypto/kdf';
import { aesKeyUnwrap, aesKeyWrap } from '../../../src/crypto/keywrap';
import { ErrorCode, SealboxError } from '../../../src/errors';
import type { KekProvider } from '../../../src/kek/provider';
import { KekRegistry } from '../../../src/kek/registry';

/** A fake KEK that really wraps, counts calls, and can hold or fail them. */
class FakeKek implements KekProvider {
  readonly kind = 'fake';
  readonly keyRef = 'fake:k';
  readonly kek = randomBytes(32);
  wraps = 0;
  unwraps = 0;
  inFlight = 0;
  maxInFlight = 0;
  /** When set, calls wait for this promise (then fail if it rejects). */
  gate: Promise<void> | undefined;

  owns(keyId: string): boolean {
    return keyId.startsWith('fake:');
  }
  async refreshCurrentVersion() {
    return this.status('fake:k/1');
  }
  async wrap(dek: Uint8Array) {
    this.wraps++;
    await this.hold();
    return { keyId: 'fake:k/1', algorithm: 'A256KW', wrapped: aesKeyWrap(this.kek, dek) };
  }
  async unwrap(_keyId: string, alg: string, wrapped: Uint8Array) {
    // As the real providers do: the header's algorithm must be the key's.
    if (alg !== 'A256KW')
      throw new SealboxError(ErrorCode.CIPHERTEXT_MALFORMED, `A256KW key, header says ${alg}`);
    this.unwraps++;
    await this.hold();
    const dek = aesKeyUnwrap(this.kek, wrapped);
    if (!dek) throw new SealboxError(ErrorCode.CIPHERTEXT_CORRUPT, 'bad wrap');
    return dek;
  }
  async status(keyId: string) {
    return { keyId, enabled: true, latestKeyId: 'fake:k/1' };
  }
  async close() {}
  private async hold(): Promise<void> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.gate) await this.gate;
      else await sleep(1);
    } finally {
      this.inFlight--;
    }
  }
}

const OPTIONS: CacheOptions = {
  maxConcurrentVaultCalls: 16,
  encrypt: { maxAgeMs: 60_000, maxMessages: 1_000_000, maxBytes: 2 ** 36, refreshAhead: 0 },
  decrypt: { maxEntries: 1000, ttlMs: 60_000 },
};

function setup(options: Partial<CacheOptions> = {}, now?: () => number) {
  const kek = new FakeKek();
  const tracked: Buffer[] = [];
  const cache = new CachedDataKeys(
    new KekRegistry(new Map([['a', kek]])),
    {
      ...OPTIONS,
      ...options,
      encrypt: { ...OPTIONS.encrypt, ...options.encrypt },
      decrypt: { ...OPTIONS.decrypt, ...options.decrypt },
    },
    { trackDek: (b) => tracked.push(b), ...(now ? { now } : {}) },
  );
  return { kek, cache, tracked };
}

function headerFor(wrappedDek: Uint8Array, messageId = randomBytes(32)): Header {
  return {
    keyId: 'fake:k/1',
    wrapAlgorithm: 'A256KW',
    wrappedDek: Buffer.from(wrappedDek),
    messageId,
  } as unknown as Header;
}

const isZero = (b: Buffer) => b.every((x) => x === 0);

test('encrypt: many messages, one wrap; derived keys are those of the wrapped DEK', async () => {
  const { kek, cache } = setup();
  const results = await Promise.all(
    Array.from({ length: 500 }, () => cache.forEncrypt('a', randomBytes(32))),
  );
  assert.equal(kek.wraps, 1);
  const wrapped = results[0]!.wrapped.wrappedDek;
  assert.ok(results.every((r) => Buffer.compare(r.wrapped.wrappedDek, wrapped) === 0));
  const messageId = randomBytes(32);
  const fromCache = await cache.forEncrypt('a', messageId);
  const dek = aesKeyUnwrap(kek.kek, fromCache.wrapped.wrappedDek)!;
  assert.ok(fromCache.keys.encryptionKey.equals(deriveMessageKeys(dek, messageId).encryptionKey));
  const stats = cache.stats();
  assert.equal(stats.blockingMisses, 500, 'every cold caller waited — on the same single wrap');
  assert.equal(stats.hits.encrypt, 1);
});

test('encrypt: maxMessages retires the DEK; the retired buffer is zeroed', async () => {
  const { kek, cache, tracked } = setup({ encrypt: { ...OPTIONS.encrypt, maxMessages: 3 } });
  const first = await Promise.all([1, 2, 3].map(() => cache.forEncrypt('a', randomBytes(32))));
  assert.ok(!isZero(tracked[0]!), 'live DEK is not zero');
  const fourth = await cache.forEncrypt('a', randomBytes(32));
  assert.equal(kek.wraps, 2);
  assert.notDeepEqual(fourth.wrapped.wrappedDek, first[0]!.wrapped.wrappedDek);
  assert.ok(isZero(tracked[0]!), 'retired DEK is zeroed');
  assert.equal(cache.stats().evictions['retired'], 1);
});

test('encrypt: concurrent callers never overrun maxMessages', async () => {
  const { cache } = setup({ encrypt: { ...OPTIONS.encrypt, maxMessages: 5 } });
  const results = await Promise.all(Array.from({ length: 40 }, () => cache.forEncrypt('a', randomBytes(32))));
  const perDek = new Map<string, number>();
  for (const r of results) {
    const k = Buffer.from(r.wrapped.wrappedDek).toString('hex');
    perDek.set(k, (perDek.get(k) ?? 0) + 1);
  }
  assert.ok(
    [...perDek.values()].every((n) => n <= 5),
    JSON.stringify([...perDek.values()]),
  );
});

test('encrypt: the byte budget retires the DEK for new messages (streams account as they go)', async () => {
  const { cache } = setup({ encrypt: { ...OPTIONS.encrypt, maxBytes: 1024 * 1024 } });
  const stream = await cache.forEncrypt('a', randomBytes(32));
  stream.account(600 * 1024);
  const second = await cache.forEncrypt('a', randomBytes(32));
  assert.deepEqual(second.wrapped.wrappedDek, stream.wrapped.wrappedDek, 'budget not spent yet');
  stream.account(600 * 1024);
  const third = await cache.forEncrypt('a', randomBytes(32));
  assert.notDeepEqual(third.wrapped.wrappedDek, stream.wrapped.wrappedDek);
});

test('encrypt: refresh-ahead wraps the replacement in the background — no blocking miss at expiry', async () => {
  let now = 1_000_000;
  const { kek, cache } = setup(
    { encrypt: { ...OPTIONS.encrypt, maxAgeMs: 1000, refreshAhead: 0.5 } },
    () => now,
  );
  const first = await cache.forEncrypt('a', randomBytes(32));
  assert.equal(cache.stats().blockingMisses, 1);
  now += 600; // past the refresh point
  await cache.forEncrypt('a', randomBytes(32));
  await sleep(20); // the background wrap completes
  assert.equal(kek.wraps, 2);
  now += 500; // the first DEK has expired
  const later = await cache.forEncrypt('a', randomBytes(32));
  assert.notDeepEqual(later.wrapped.wrappedDek, first.wrapped.wrappedDek);
  assert.equal(cache.stats().blockingMisses, 1, 'the expiry did not make anyone wait');
});

test('decrypt: concurrent misses on one wrapped DEK share a single unwrap', async () => {
  const { kek, cache } = setup();
  const { wrapped } = await cache.forEncrypt('a', randomBytes(32));
  const cold = setup();
  cold.kek.kek.set(kek.kek);
  let open!: () => void;
  cold.kek.gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const pending = Array.from({ length: 100 }, () => cold.cache.forDecrypt(headerFor(wrapped.wrappedDek)));
  await sleep(10);
  open();
  await Promise.all(pending);
  assert.equal(cold.kek.unwraps, 1);
  assert.equal(cold.cache.stats().coalesced, 99);
  await cold.cache.forDecrypt(headerFor(wrapped.wrappedDek));
  assert.equal(cold.kek.unwraps, 1, 'then a hit');
  assert.equal(cold.cache.stats().hits.decrypt, 1);
});

test('decrypt: a failed unwrap fails exactly its waiters and is not cached', async () => {
  const { kek, cache } = setup();
  const wrapped = aesKeyWrap(kek.kek, randomBytes(32));
  let fail!: (e: Error) => void;
  kek.gate = new Promise<void>((_resolve, reject) => {
    fail = reject;
  });
  const pending = Array.from({ length: 20 }, () =>
    cache.forDecrypt(headerFor(wrapped)).then(
      () => 'ok',
      (e: Error) => e.message,
    ),
  );
  await sleep(10);
  fail(new Error('vault down'));
  assert.deepEqual(new Set(await Promise.all(pending)), new Set(['vault down']));
  assert.equal(kek.unwraps, 1);
  kek.gate = undefined;
  await cache.forDecrypt(headerFor(wrapped));
  assert.equal(kek.unwraps, 2, 'the next caller went to the vault again');
});

test('decrypt: at most maxConcurrentVaultCalls unwraps in flight', async () => {
  const { kek, cache } = setup({ maxConcurrentVaultCalls: 3 });
  let open!: () => void;
  kek.gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const pending = Array.from({ length: 20 }, () =>
    cache.forDecrypt(headerFor(aesKeyWrap(kek.kek, randomBytes(32)))),
  );
  await sleep(20);
  assert.equal(kek.inFlight, 3);
  open();
  await Promise.all(pending);
  assert.equal(kek.unwraps, 20);
  assert.equal(kek.maxInFlight, 3);
  assert.equal(cache.stats().vaultCalls.maxInFlight, 3);
});

test('decrypt: a waiter whose deadline passes gives up without failing the others', async () => {
  const { kek, cache } = setup();
  const wrapped = aesKeyWrap(kek.kek, randomBytes(32));
  let open!: () => void;
  kek.gate = new Promise<void>((resolve) => {
    open = resolve;
  });
  const patient = cache.forDecrypt(headerFor(wrapped));
  const deadline = new AbortController();
  setTimeout(() => deadline.abort(new Error('deadline')), 5); // a ref'd timer, unlike AbortSignal.timeout
  const impatient = cache.forDecrypt(headerFor(wrapped), deadline.signal);
  await assert.rejects(impatient);
  open();
  await patient;
  assert.equal(kek.unwraps, 1);
});

test('zeroization: flush and TTL expiry zero every cached DEK buffer', async () => {
  const { kek, cache, tracked } = setup({ decrypt: { maxEntries: 100, ttlMs: 100 } });
  await cache.forEncrypt('a', randomBytes(32));
  await cache.forDecrypt(headerFor(aesKeyWrap(kek.kek, randomBytes(32))));
  assert.ok(tracked.length >= 2);
  await sleep(300);
  assert.equal(cache.stats().entries.decrypt, 0, 'expired entries are purged without being touched');
  cache.flush();
  assert.ok(tracked.every(isZero), 'every DEK buffer reads zero');
  assert.ok((cache.stats().evictions['expire'] ?? 0) >= 1);
});

const disabled = () =>
  new SealboxError(ErrorCode.KEY_DISABLED, 'off', { keyId: 'fake:k/1', verdict: 'disabled' });

test('revoke race, decrypt: an unwrap that returns after its version was revoked stores no DEK', async () => {
  const { kek, cache, tracked } = setup();
  const wrapped = aesKeyWrap(kek.kek, randomBytes(32));
  let open!: () => void;
  kek.gate = new Promise((r) => (open = r));
  const pending = cache.forDecrypt(headerFor(wrapped));
  await sleep(5);
  cache.states.failed('fake:k/1', disabled(), 'getKey'); // the watcher's verdict lands mid-flight
  open();
  await assert.rejects(pending, { code: ErrorCode.KEY_DISABLED });
  assert.equal(cache.stats().entries.decrypt, 0, 'nothing cached under the revoked version');
  assert.equal(tracked.length, 0, 'no DEK buffer was ever stored');
});

test('revoke race, encrypt: a wrap that returns after its version was revoked is zeroed, not installed', async () => {
  const { kek, cache, tracked } = setup();
  let open!: () => void;
  kek.gate = new Promise((r) => (open = r));
  const pending = cache.forEncrypt('a', randomBytes(32));
  await sleep(5);
  cache.states.failed('fake:k/1', disabled(), 'getKey');
  open();
  await assert.rejects(pending, { code: ErrorCode.KEY_DISABLED });
  assert.equal(cache.stats().entries.encrypt, 0);
  assert.equal(tracked.length, 1);
  assert.ok(isZero(tracked[0]!), 'the freshly wrapped DEK was zeroed');
});

test('a cached DEK does not serve a header that names another wrap algorithm (the provider refuses it)', async () => {
  const { kek, cache } = setup();
  const wrapped = aesKeyWrap(kek.kek, randomBytes(32));
  await cache.forDecrypt(headerFor(wrapped));
  assert.equal(kek.unwraps, 1);
  for (const alg of ['RSA-OAEP-256', 'A128KW', 'RSA1_5', 'dir']) {
    const header = { ...headerFor(wrapped), wrapAlgorithm: alg } as unknown as Header;
    await assert.rejects(cache.forDecrypt(header), { code: ErrorCode.CIPHERTEXT_MALFORMED }, alg);
  }
  assert.equal(kek.unwraps, 1, 'refused before any unwrap');
});

test('in-band evidence: a 404 for a never-seen version is negative-cached; a 404 for a known one revokes', async () => {
  const { cache } = setup();
  const gone = (keyId: string) =>
    new SealboxError(ErrorCode.KEY_NOT_FOUND, 'no', { keyId, verdict: 'not-found' });
  cache.states.failed('fake:k/forged', gone('fake:k/forged'), 'unwrapKey');
  assert.throws(() => cache.check('fake:k/forged', 'decrypt'), { code: ErrorCode.KEY_NOT_FOUND });
  assert.equal(cache.states.sizes.tracked, 0, 'a forged version is never tracked, refused or watched');
  await cache.forEncrypt('a', randomBytes(32)); // fake:k/1 seen valid
  cache.states.failed('fake:k/1', gone('fake:k/1'), 'unwrapKey');
  assert.throws(() => cache.check('fake:k/1', 'encrypt'), { code: ErrorCode.KEY_DISABLED });
  assert.equal(cache.stats().entries.encrypt, 0, 'its DEKs were evicted');
});

test('vault answers from outside the cache (Rewrap): attributes may refuse a version, never restore one', async () => {
  const { cache } = setup();
  await cache.forEncrypt('a', randomBytes(32)); // fake:k/1 seen valid
  cache.vaultAnswered({ keyId: 'fake:k/1', operation: 'getKey', attributes: { enabled: true } });
  assert.equal(cache.states.stateOf('fake:k/1'), 'enabled');
  cache.vaultAnswered({ keyId: 'fake:k/1', operation: 'getKey', attributes: { enabled: false } });
  assert.equal(cache.states.stateOf('fake:k/1'), 'disabled');
  assert.equal(cache.stats().entries.encrypt, 0, 'its DEKs were evicted');
  // A read that started before the revocation answers "enabled" after it: the version stays refused.
  cache.vaultAnswered({ keyId: 'fake:k/1', operation: 'getKey', attributes: { enabled: true } });
  assert.equal(cache.states.stateOf('fake:k/1'), 'disabled');
  assert.throws(() => cache.check('fake:k/1', 'encrypt'), { code: ErrorCode.KEY_DISABLED });
  // Errors go through the same verdicts as the cache's own calls (here: an outage, no verdict).
  cache.vaultAnswered({
    keyId: 'fake:k/2',
    operation: 'unwrapKey',
    error: new SealboxError(ErrorCode.VAULT_UNAVAILABLE, 'down'),
  });
  assert.equal(cache.states.stateOf('fake:k/2'), 'unknown');
});
