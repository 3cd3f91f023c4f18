/**
 * Throttling, fault injection and counters (src/devvault/controls.ts) with a fake clock and a scripted
 * random source: Azure's per-class limits, the weighted sum across key types, the window and Retry-After,
 * and the order of drop and error decisions.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  AZURE_KEY_LIMITS_PER_10S,
  Counters,
  Faults,
  MANAGED_HSM_LIMITS_PER_10S,
  Throttle,
  type ThrottleCharge,
  throttleClassOf,
} from '../../../src/devvault/controls';

/** A throttle on a clock the test moves. */
function throttleAt(settings: ConstructorParameters<typeof Throttle>[0]) {
  let now = 1_000_000;
  const throttle = new Throttle(settings, () => now);
  return {
    throttle,
    advance(ms: number) {
      now += ms;
    },
    /** How many of `charge` are admitted before the first refusal (at most `cap`). */
    admitted(charge: ThrottleCharge, cap = 10_000): number {
      let n = 0;
      while (n < cap && throttle.admit(charge) === undefined) n++;
      return n;
    },
  };
}

test('throttleClassOf maps key type and size to Azure’s classes', () => {
  const cases: ReadonlyArray<[string, number, string]> = [
    ['RSA', 2048, 'rsa2048'],
    ['RSA', 3072, 'rsa3072'],
    ['RSA', 4096, 'rsa4096'],
    ['RSA-HSM', 2048, 'rsaHsm2048'],
    ['RSA-HSM', 3072, 'rsaHsm3072'],
    ['RSA-HSM', 4096, 'rsaHsm4096'],
    ['oct-HSM', 256, 'oct'],
  ];
  for (const [kty, size, cls] of cases) assert.equal(throttleClassOf(kty, size), cls, `${kty} ${size}`);
});

test('default limits are Azure’s published per-10 s figures', () => {
  assert.deepEqual(AZURE_KEY_LIMITS_PER_10S, {
    rsa2048: 4000,
    rsa3072: 1000,
    rsa4096: 500,
    rsaHsm2048: 2000,
    rsaHsm3072: 500,
    rsaHsm4096: 250,
    oct: 2000,
  });
  for (const [cls, limit] of Object.entries(AZURE_KEY_LIMITS_PER_10S)) {
    const { admitted } = throttleAt({ enabled: true });
    assert.equal(admitted({ kind: 'key', cls: cls as keyof typeof AZURE_KEY_LIMITS_PER_10S }), limit, cls);
  }
  assert.equal(throttleAt({ enabled: true }).admitted({ kind: 'create', hsm: false }), 20);
  assert.equal(throttleAt({ enabled: true }).admitted({ kind: 'create', hsm: true }), 10);
  assert.equal(throttleAt({ enabled: true }).admitted({ kind: 'vault' }), 4000);
});

test('limits are weighted and enforced on their sum, as Azure documents', () => {
  // Azure's example: 248 RSA-HSM-4096 operations leave room for exactly 16 RSA-HSM-2048 ones.
  const { throttle, admitted } = throttleAt({ enabled: true });
  for (let i = 0; i < 248; i++) assert.equal(throttle.admit({ kind: 'key', cls: 'rsaHsm4096' }), undefined);
  assert.equal(admitted({ kind: 'key', cls: 'rsaHsm2048' }), 16);
  // Creates and vault transactions have budgets of their own.
  assert.equal(throttle.admit({ kind: 'create', hsm: true }), undefined);
  assert.equal(throttle.admit({ kind: 'vault' }), undefined);
});

test('overrides, the window, Retry-After, and refused requests not counting', () => {
  const { throttle, advance, admitted } = throttleAt({
    enabled: true,
    limitsPer10s: { rsa2048: 3 },
    windowMs: 10_000,
  });
  assert.equal(admitted({ kind: 'key', cls: 'rsa2048' }), 3);
  advance(2_500);
  assert.equal(throttle.admit({ kind: 'key', cls: 'rsa2048' }), 8, '7.5 s left rounds up to 8 s');
  advance(7_000);
  assert.equal(throttle.admit({ kind: 'key', cls: 'rsa2048' }), 1, 'never less than 1 s');
  advance(500);
  assert.equal(admitted({ kind: 'key', cls: 'rsa2048' }), 3, 'a new window; the 429s were not counted');
  throttle.configure({ enabled: false });
  assert.equal(admitted({ kind: 'key', cls: 'rsa2048' }, 50), 50, 'disabled admits everything');
});

test('faults: latency draws from [fixed, fixed + jitter]; drop is decided before errors', () => {
  const script = [0.5, 0.1, 0.9, 0.2, 0.3, 0.9, 0.9];
  const faults = new Faults(() => script.shift() ?? 0.99);
  faults.latency = { fixedMs: 100, jitterMs: 40 };
  assert.equal(faults.delayMs(), 120);
  assert.equal(faults.decide(), 'none', 'nothing enabled');
  faults.dropRate = 0.5;
  faults.errorRate = 0.5;
  assert.equal(faults.decide(), 'drop', '0.1 < dropRate');
  assert.equal(faults.decide(), 500, '0.9 ≥ dropRate, 0.2 < errorRate, 0.3 picks 500');
  assert.equal(faults.decide(), 'none', '0.9, 0.9');
  const always = new Faults(() => 0.7);
  always.errorRate = 1;
  assert.equal(always.decide(), 503);
});

test('counters: bump several names, snapshot sorted, reset', () => {
  const c = new Counters();
  c.bump('wrapKey', 'wrapKey/a');
  c.bump('wrapKey');
  c.bump('challenges');
  assert.deepEqual(Object.entries(c.snapshot()), [
    ['challenges', 1],
    ['wrapKey', 2],
    ['wrapKey/a', 1],
  ]);
  c.reset();
  assert.deepEqual(c.snapshot(), {});
});

test('Managed HSM throttling: one budget per key class and direction, from the scaling figures', () => {
  const now = 0;
  const throttle = new Throttle({ enabled: true, managedHsm: true, limitsPer10s: {} }, () => now);
  const unwrap = { kind: 'key', cls: 'rsaHsm2048', op: 'unwrapKey' } as const;
  const wrap = { kind: 'key', cls: 'rsaHsm2048', op: 'wrapKey' } as const;
  for (let i = 0; i < MANAGED_HSM_LIMITS_PER_10S.rsaHsm2048.private; i++)
    assert.equal(throttle.admit(unwrap), undefined);
  assert.equal(throttle.admit(unwrap), 10, 'unwraps are spent; Retry-After is the rest of the window');
  assert.equal(throttle.admit(wrap), undefined, 'wraps have their own budget');
  assert.equal(throttle.admit({ kind: 'key', cls: 'oct', op: 'unwrapKey' }), undefined, 'so do AES keys');
});
