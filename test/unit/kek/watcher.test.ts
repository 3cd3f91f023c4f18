import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ErrorCode, SealboxError } from '../../../src/errors';
import type { KekProvider, KeyStatus } from '../../../src/kek/provider';
import { KekRegistry } from '../../../src/kek/registry';
import { KeyWatcher, type RevocationTarget } from '../../../src/kek/watcher';
import { createLogger } from '../../../src/log/logger';

/** A provider whose key versions' states the test sets directly. */
class ScriptedProvider implements KekProvider {
  readonly kind = 'scripted';
  latest = 'k/2';
  states = new Map<string, Partial<KeyStatus> | SealboxError>();
  statusCalls = 0;
  owns(keyId: string) {
    return keyId.startsWith('k/');
  }
  async wrap(): Promise<never> {
    throw new Error('not used');
  }
  async unwrap(): Promise<never> {
    throw new Error('not used');
  }
  async status(keyId: string): Promise<KeyStatus> {
    this.statusCalls++;
    const s = this.states.get(keyId) ?? {};
    if (s instanceof SealboxError) throw s;
    return { keyId, enabled: true, latestKeyId: this.latest, ...s };
  }
  async refreshCurrentVersion(): Promise<KeyStatus> {
    return this.status(this.latest);
  }
  async close() {}
}

class Target implements RevocationTarget {
  inUse = new Set<string>(['k/1']);
  active = new Map<string, string>([['a', 'k/1']]);
  revoked = new Map<string, string>();
  invalidated: string[] = [];
  keyIdsInUse() {
    return new Set([...this.inUse, ...this.revoked.keys()]);
  }
  activeKeyIds() {
    return this.active;
  }
  revoke(keyId: string, reason: string) {
    this.revoked.set(keyId, reason);
  }
  restore(keyId: string) {
    this.revoked.delete(keyId);
  }
  invalidate(alias: string) {
    this.invalidated.push(alias);
  }
}

function setup(now = () => Date.now()) {
  const provider = new ScriptedProvider();
  const target = new Target();
  const watcher = new KeyWatcher(
    new KekRegistry(new Map([['a', provider]])),
    target,
    { pollIntervalMs: 60_000, now },
    createLogger('silent'),
  );
  return { provider, target, watcher };
}

const verdicts: Array<[string, Partial<KeyStatus> | SealboxError, RegExp | undefined]> = [
  ['enabled and in date', { enabled: true }, undefined],
  ['disabled', { enabled: false }, /disabled/],
  ['expired', { expiresOn: new Date(Date.now() - 1000) }, /expired/],
  ['not yet valid', { notBefore: new Date(Date.now() + 60_000) }, /not valid yet/],
  ['deleted (404)', new SealboxError(ErrorCode.KEY_NOT_FOUND, 'gone'), /deleted/],
  ['access lost (403)', new SealboxError(ErrorCode.PERMISSION_DENIED, 'no'), /lost access/],
];

for (const [name, state, revoked] of verdicts) {
  test(`a version in use that is ${name} is ${revoked ? 'revoked' : 'left serving'}`, async () => {
    const { provider, target, watcher } = setup();
    provider.states.set('k/1', state);
    await watcher.checkNow();
    const reason = target.revoked.get('k/1');
    if (revoked) assert.match(reason ?? '', revoked);
    else assert.equal(reason, undefined);
  });
}

test('no verdict (vault unavailable) keeps the last state: neither revoke nor restore', async () => {
  const { provider, target, watcher } = setup();
  provider.states.set('k/1', { enabled: false });
  await watcher.checkNow();
  assert.ok(target.revoked.has('k/1'));
  provider.states.set('k/1', new SealboxError(ErrorCode.VAULT_UNAVAILABLE, 'down'));
  await watcher.checkNow();
  assert.ok(target.revoked.has('k/1'), 'still refused: an outage is no verdict');
  const check = watcher.snapshot().find((c) => c.keyId === 'k/1');
  assert.equal(check?.state, 'disabled');
  assert.match(check?.lastError ?? '', /down/);
  provider.states.set('k/1', { enabled: true });
  await watcher.checkNow();
  assert.ok(!target.revoked.has('k/1'), 'restored on the next good check');
});

test('a newer latest version invalidates the alias so new DEKs wrap under it', async () => {
  const { target, watcher } = setup();
  await watcher.checkNow();
  assert.deepEqual(target.invalidated, ['a']);
});

test('one status call per version in use per check, whatever the traffic', async () => {
  const { provider, target, watcher } = setup();
  target.inUse = new Set(['k/1', 'k/3', 'k/4']);
  await watcher.checkNow();
  // k/1, k/3, k/4 plus the current version k/2.
  assert.equal(provider.statusCalls, 4);
});
