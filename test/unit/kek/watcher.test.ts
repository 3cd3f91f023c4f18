import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DEFAULT_KEY_STATES_OPTIONS, KeyStates } from '../../../src/cache/key-states';
import { ErrorCode, SealboxError } from '../../../src/errors';
import type { KekProvider, KeyStatus } from '../../../src/kek/provider';
import { KekRegistry } from '../../../src/kek/registry';
import { KeyWatcher, Pacer, type WatchedCache } from '../../../src/kek/watcher';
import { createLogger } from '../../../src/log/logger';

/** A provider whose key versions' states the test sets directly, counting calls and concurrency. */
class ScriptedProvider implements KekProvider {
  readonly kind = 'scripted';
  readonly keyRef = 'scripted:k';
  latest = 'k/2';
  states = new Map<string, Partial<KeyStatus> | SealboxError>();
  statusCalls: string[] = [];
  wraps = 0;
  inFlight = 0;
  maxInFlight = 0;
  wrapAnswer: SealboxError | undefined;
  owns(keyId: string) {
    return keyId.startsWith('k/');
  }
  async wrap(dek: Uint8Array) {
    this.wraps++;
    if (this.wrapAnswer) throw this.wrapAnswer;
    return { keyId: this.latest, algorithm: 'A256KW', wrapped: Buffer.from(dek) };
  }
  async unwrap(): Promise<never> {
    throw new Error('not used');
  }
  async status(keyId: string): Promise<KeyStatus> {
    this.statusCalls.push(keyId);
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    await new Promise((r) => setTimeout(r, 2));
    this.inFlight--;
    const s = this.states.get(keyId) ?? {};
    if (s instanceof SealboxError) throw s;
    return { keyId, enabled: true, latestKeyId: this.latest, ...s };
  }
  async refreshCurrentVersion(): Promise<KeyStatus> {
    return this.status(this.latest);
  }
  async close() {}
}

class Cache implements WatchedCache {
  inUse = new Set<string>(['k/1']);
  active = new Map<string, string>([['a', 'k/1']]);
  invalidated: string[] = [];
  evicted: Array<[string, string]> = [];
  keyIdsInUse() {
    return new Set(this.inUse);
  }
  activeKeyIds() {
    return this.active;
  }
  invalidate(alias: string) {
    this.invalidated.push(alias);
  }
}

function setup(options: Partial<typeof DEFAULT_KEY_STATES_OPTIONS> = {}, watcher = {}) {
  const provider = new ScriptedProvider();
  const cache = new Cache();
  const states = new KeyStates(
    { ...DEFAULT_KEY_STATES_OPTIONS, ...options },
    { evict: (keyId, scope) => cache.evicted.push([keyId, scope]) },
  );
  const requests: string[] = [];
  const w = new KeyWatcher(
    new KekRegistry(new Map([['a', provider]])),
    cache,
    states,
    {
      pollIntervalMs: 3_600_000,
      maxChecksPerSecond: 1000,
      maxConcurrentChecks: 4,
      onRequest: (op) => requests.push(op),
      ...watcher,
    },
    createLogger('silent'),
  );
  return { provider, cache, states, watcher: w, requests };
}

test('start() runs the first check at once: every alias has a current verdict before one interval', async () => {
  const { watcher, provider } = setup();
  let checked = 0;
  watcher.onChecked(() => checked++);
  watcher.start();
  await new Promise((r) => setTimeout(r, 100));
  watcher.stop();
  assert.equal(checked, 1);
  assert.deepEqual(watcher.currentStates().get('a'), { keyId: 'k/2', state: 'enabled' });
  assert.ok(provider.statusCalls.includes('k/1'), 'the version with cached DEKs was read too');
});

test('a rotation invalidates the alias; a disabled version in use is revoked for all uses', async () => {
  const { watcher, provider, cache, states } = setup();
  provider.states.set('k/1', { enabled: false });
  await watcher.checkNow();
  assert.deepEqual(cache.invalidated, ['a']);
  assert.deepEqual(cache.evicted, [['k/1', 'all']]);
  assert.throws(() => states.check('k/1', 'decrypt'), { code: ErrorCode.KEY_DISABLED });
  provider.states.set('k/1', { enabled: true });
  await watcher.checkNow();
  assert.doesNotThrow(() => states.check('k/1', 'decrypt'), 're-enabled: serves after the next good check');
});

test('an expired version stops wrapping but still decrypts (Key Vault allows unwrap outside nbf/exp)', async () => {
  const { watcher, provider, cache, states } = setup();
  provider.latest = 'k/1';
  provider.states.set('k/1', { expiresOn: new Date(Date.now() - 1000) });
  await watcher.checkNow();
  assert.deepEqual(cache.evicted, [['k/1', 'encrypt']]);
  assert.throws(() => states.check('k/1', 'encrypt'), { code: ErrorCode.KEY_DISABLED });
  assert.doesNotThrow(() => states.check('k/1', 'decrypt'));
  // Expiry extended: the next poll restores wrapping, no restart.
  provider.states.set('k/1', { expiresOn: new Date(Date.now() + 3_600_000) });
  await watcher.checkNow();
  assert.doesNotThrow(() => states.check('k/1', 'encrypt'));
});

test('the strict setting also refuses decrypt outside the validity window', async () => {
  const { watcher, provider, cache, states } = setup({ refuseDecryptOutsideValidity: true });
  provider.states.set('k/1', { notBefore: new Date(Date.now() + 60_000) });
  await watcher.checkNow();
  assert.deepEqual(cache.evicted, [['k/1', 'all']]);
  assert.throws(() => states.check('k/1', 'decrypt'), { code: ErrorCode.KEY_DISABLED });
});

test('an outage is never a verdict: no eviction, the error is noted', async () => {
  const { watcher, provider, cache, states } = setup();
  await watcher.checkNow();
  provider.states.set(
    'k/1',
    new SealboxError(ErrorCode.VAULT_UNAVAILABLE, 'down', { keyId: 'k/1', verdict: 'outage' }),
  );
  await watcher.checkNow();
  assert.deepEqual(cache.evicted, []);
  assert.equal(states.stateOf('k/1'), 'enabled');
  assert.match(states.describe().find((v) => v.keyId === 'k/1')?.lastError ?? '', /down/);
});

test('only versions the vault vouched for are watched: a 404 for a never-seen version adds nothing', async () => {
  const { watcher, states, provider } = setup();
  for (let i = 0; i < 100; i++) {
    states.failed(
      `k/forged-${i}`,
      new SealboxError(ErrorCode.KEY_NOT_FOUND, 'no', { keyId: `k/forged-${i}`, verdict: 'not-found' }),
      'unwrapKey',
    );
  }
  assert.equal(states.watched().size, 0);
  await watcher.checkNow();
  assert.deepEqual(provider.statusCalls.sort(), ['k/1', 'k/2']);
});

test('a permission refusal is confirmed by the watcher at the end of its window, then revokes', async () => {
  const { watcher, provider, cache, states } = setup({ refusalConfirmMs: 50 });
  states.succeeded('k/2', 'wrapKey');
  const refused = new SealboxError(ErrorCode.PERMISSION_DENIED, 'no', { keyId: 'k/2', verdict: 'refused' });
  provider.wrapAnswer = refused;
  states.failed('k/2', refused, 'wrapKey');
  assert.equal(cache.evicted.length, 0, 'one refusal is a suspicion, not a verdict');
  watcher.start();
  watcher.confirmLater(Date.now() + 50);
  await new Promise((r) => setTimeout(r, 200));
  watcher.stop();
  assert.ok(provider.wraps >= 1, 'the confirming check tried the refused operation');
  assert.deepEqual(cache.evicted, [['k/2', 'all']]);
  assert.equal(states.stateOf('k/2'), 'forbidden');
  // The permission comes back: the next confirming check restores it.
  provider.wrapAnswer = undefined;
  await watcher.checkNow();
  assert.equal(states.stateOf('k/2'), 'enabled');
});

test('a refusal followed by success inside the window: no refusal, nothing zeroed', async () => {
  const { watcher, provider, cache, states } = setup({ refusalConfirmMs: 50 });
  states.succeeded('k/2', 'wrapKey');
  states.failed(
    'k/2',
    new SealboxError(ErrorCode.PERMISSION_DENIED, 'no', { keyId: 'k/2', verdict: 'refused' }),
    'wrapKey',
  );
  watcher.start();
  watcher.confirmLater(Date.now() + 50);
  await new Promise((r) => setTimeout(r, 200));
  watcher.stop();
  assert.deepEqual(cache.evicted, []);
  assert.equal(states.stateOf('k/2'), 'enabled');
  assert.equal(states.sizes.suspected, 0);
  void provider;
});

test('checks run with bounded concurrency', async () => {
  const { watcher, provider, cache } = setup({}, { maxConcurrentChecks: 3 });
  for (let i = 0; i < 40; i++) cache.inUse.add(`k/v${i}`);
  await watcher.checkNow();
  assert.equal(provider.statusCalls.length, 42);
  assert.ok(provider.maxInFlight <= 3, `max in flight ${provider.maxInFlight}`);
});

test('the pacer starts at most perSecond calls per second after its one-second burst', async () => {
  const pacer = new Pacer(20, 100);
  // The pacer's timer is unref'd (it must not keep a stopping process alive): hold the loop open here.
  const keepAlive = setInterval(() => {}, 1000);
  const started: number[] = [];
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: 30 }, () => pacer.run(async () => started.push(performance.now() - t0))),
  );
  // 20 may start at once (the burst); the other 10 need 10 / 20 s of new tokens, one per 50 ms.
  clearInterval(keepAlive);
  started.sort((a, b) => a - b);
  const early = started.filter((t) => t < 100).length;
  assert.ok(early <= 22, `calls started in the first 0.1 s: ${early} (burst 20)`);
  assert.ok(started[29]! >= 400, `the 30th call started at ${Math.round(started[29]!)} ms, before its token`);
});

test('once the vault throttles, the rest of the poll is skipped (no verdict), and the next poll tries again', async () => {
  const { watcher, provider, cache, states } = setup({}, { maxConcurrentChecks: 1 });
  for (let i = 0; i < 10; i++) cache.inUse.add(`k/v${i}`);
  const throttled = new SealboxError(ErrorCode.VAULT_THROTTLED, '429', { keyId: 'k/1', verdict: 'outage' });
  provider.states.set('k/1', throttled);
  await watcher.checkNow();
  // The current version (k/2) first, then k/1 is throttled: none of the ten others is asked.
  assert.ok(provider.statusCalls.length <= 3, `requests after the 429: ${provider.statusCalls.join(',')}`);
  assert.equal(states.watched().size, 0, 'skipped checks are no verdict');
  provider.states.delete('k/1');
  provider.statusCalls = [];
  await watcher.checkNow();
  assert.equal(provider.statusCalls.length, 12, 'the next poll reads everything again');
});
