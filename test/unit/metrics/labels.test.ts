/**
 * The label vocabularies: every mapping lands in its fixed list whatever the input, and the free-text
 * revocation reasons the key watcher and the DEK cache really produce map to the intended labels (so a
 * reworded reason fails here instead of silently counting as "other").
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { CachedDataKeys } from '../../../src/cache/cached-data-keys';
import { DEFAULT_KEY_STATES_OPTIONS, KeyStates } from '../../../src/cache/key-states';
import { ErrorCode, SealboxError } from '../../../src/errors';
import type { KekProvider, KeyStatus } from '../../../src/kek/provider';
import { KekRegistry } from '../../../src/kek/registry';
import { type KeyState, KeyWatcher } from '../../../src/kek/watcher';
import { createLogger } from '../../../src/log/logger';
import {
  EVICTION_REASONS,
  errorCodeLabel,
  evictionReasonLabel,
  GRPC_CODES,
  grpcCodeName,
  KEY_STATES,
  keyStateLabel,
  methodLabels,
  RETRY_REASONS,
  REVOCATION_REASONS,
  retryReasonLabel,
  revocationReason,
  VAULT_OUTCOMES,
  vaultOperationLabel,
  vaultOutcome,
} from '../../../src/metrics/labels';

/** A provider whose one key version ("k/1") is in whatever state the test sets. */
class OneVersion implements KekProvider {
  readonly kind = 'scripted';
  readonly keyRef = 'scripted:k';
  constructor(private readonly answer: Partial<KeyStatus> | SealboxError) {}
  owns(keyId: string) {
    return keyId.startsWith('k/');
  }
  async wrap(): Promise<never> {
    throw this.answer instanceof SealboxError ? this.answer : new Error('not used');
  }
  async unwrap(): Promise<never> {
    throw new Error('not used');
  }
  async status(keyId: string): Promise<KeyStatus> {
    if (this.answer instanceof SealboxError) throw this.answer;
    return { keyId, enabled: true, latestKeyId: 'k/1', ...this.answer };
  }
  async refreshCurrentVersion(): Promise<KeyStatus> {
    return this.status('k/1');
  }
  async close() {}
}

/**
 * The reason text the real key-state model revokes with when the real KeyWatcher reports a provider
 * answer about a version it has seen valid before (a refusal needs its confirming check: window 0).
 */
async function watcherReason(answer: Partial<KeyStatus> | SealboxError): Promise<string | undefined> {
  let reason: string | undefined;
  const states = new KeyStates(
    { ...DEFAULT_KEY_STATES_OPTIONS, refusalConfirmMs: 0 },
    { onRevoke: (_keyId, text) => (reason = text) },
  );
  states.succeeded('k/1', 'getKey');
  const cache = {
    keyIdsInUse: () => new Set(['k/1']),
    activeKeyIds: () => new Map([['a', 'k/1']]),
    invalidate: () => {},
  };
  const watcher = new KeyWatcher(
    new KekRegistry(new Map([['a', new OneVersion(answer)]])),
    cache,
    states,
    { pollIntervalMs: 60_000, maxChecksPerSecond: 100, maxConcurrentChecks: 4 },
    createLogger('silent'),
  );
  await watcher.checkNow();
  return reason;
}

const watcherCases: Array<[string, Partial<KeyStatus> | SealboxError, string]> = [
  ['disabled', { enabled: false }, 'disabled'],
  ['expired', { expiresOn: new Date(Date.now() - 1000) }, 'expired'],
  ['not yet valid', { notBefore: new Date(Date.now() + 60_000) }, 'not_yet_valid'],
  [
    'deleted (404)',
    new SealboxError(ErrorCode.KEY_NOT_FOUND, 'gone', { keyId: 'k/1', verdict: 'not-found' }),
    'deleted',
  ],
  [
    'forbidden (403, confirmed)',
    new SealboxError(ErrorCode.PERMISSION_DENIED, 'no', { keyId: 'k/1', verdict: 'refused' }),
    'forbidden',
  ],
  [
    'disabled (in a vault error)',
    new SealboxError(ErrorCode.KEY_DISABLED, 'off', { keyId: 'k/1', verdict: 'disabled' }),
    'disabled',
  ],
];

for (const [name, answer, label] of watcherCases) {
  test(`a key watcher revocation for a version that is ${name} counts as reason="${label}"`, async () => {
    const text = await watcherReason(answer);
    assert.ok(text, 'the watcher revoked the version');
    assert.equal(revocationReason(text), label, `reason text: ${text}`);
  });
}

test('an in-band vault verdict (wrap refused: key disabled) revokes with the same reason as the watcher', async () => {
  let text: string | undefined;
  const registry = new KekRegistry(
    new Map([
      [
        'a',
        new OneVersion(
          new SealboxError(ErrorCode.KEY_DISABLED, 'refused', { keyId: 'k/1', verdict: 'disabled' }),
        ),
      ],
    ]),
  );
  const states = new KeyStates(DEFAULT_KEY_STATES_OPTIONS, { onRevoke: (_keyId, reason) => (text = reason) });
  const cache = new CachedDataKeys(
    registry,
    {
      maxConcurrentVaultCalls: 4,
      encrypt: { maxAgeMs: 60_000, maxMessages: 100, maxBytes: 2 ** 30, refreshAhead: 0 },
      decrypt: { maxEntries: 10, ttlMs: 60_000 },
    },
    {},
    states,
  );
  await assert.rejects(cache.forEncrypt('a', randomBytes(32)));
  cache.close();
  assert.ok(text, 'the key-state model revoked the version in band');
  assert.equal(revocationReason(text), 'disabled');
});

test('revocation reasons are bounded: arbitrary text maps into the fixed list', () => {
  for (let i = 0; i < 500; i++) {
    const label = revocationReason(randomBytes(24).toString('base64'));
    assert.ok((REVOCATION_REASONS as readonly string[]).includes(label), label);
  }
});

test('every key state the watcher reports has its own label; anything else is "unknown"', () => {
  const states: KeyState[] = [
    'enabled',
    'disabled',
    'expired',
    'not-yet-valid',
    'deleted',
    'forbidden',
    'unknown',
  ];
  assert.deepEqual(states.map(keyStateLabel), [...KEY_STATES]);
  assert.equal(keyStateLabel(undefined), 'unknown');
  assert.equal(keyStateLabel('melted'), 'unknown');
});

test('vault outcomes: each error code maps into the fixed list; verdicts and availability keep their own label', () => {
  const table: Record<string, string> = {
    VAULT_THROTTLED: 'throttled',
    VAULT_UNAVAILABLE: 'unavailable',
    PERMISSION_DENIED: 'denied',
    KEY_NOT_FOUND: 'not_found',
    KEY_DISABLED: 'disabled',
  };
  assert.equal(vaultOutcome(undefined), 'success');
  for (const code of Object.values(ErrorCode)) {
    const outcome = vaultOutcome(code);
    assert.ok((VAULT_OUTCOMES as readonly string[]).includes(outcome));
    assert.equal(outcome, table[code] ?? 'error', code);
  }
});

test('gRPC codes, error codes, operations, retry and eviction reasons fall back to one value', () => {
  for (let code = 0; code < GRPC_CODES.length; code++) assert.equal(grpcCodeName(code), GRPC_CODES[code]);
  for (const code of [-1, 17, 99, Number.NaN, 2.5]) assert.equal(grpcCodeName(code), 'UNKNOWN');

  for (const code of Object.values(ErrorCode)) assert.equal(errorCodeLabel(code), code);
  assert.equal(errorCodeLabel(undefined), 'none');
  for (const junk of ['key k/1 is disabled: call 555-0100', Buffer.from('KEY_DISABLED'), 42, ''])
    assert.equal(errorCodeLabel(junk), 'other');

  for (const op of ['getKey', 'wrapKey', 'unwrapKey']) assert.equal(vaultOperationLabel(op), op);
  assert.equal(vaultOperationLabel('purgeDeletedKey'), 'other');
  for (const reason of RETRY_REASONS) assert.equal(retryReasonLabel(reason), reason);
  assert.equal(retryReasonLabel('cosmic-ray'), 'other');
  for (const reason of EVICTION_REASONS) assert.equal(evictionReasonLabel(reason), reason);
  for (const reason of ['set', 'delete', 'fetch', 'whatever'])
    assert.equal(evictionReasonLabel(reason), 'other');
});

test('method paths split into service and method; anything else is "unknown"', () => {
  assert.deepEqual(methodLabels('/sealbox.v1.Envelope/Encrypt'), {
    service: 'sealbox.v1.Envelope',
    method: 'Encrypt',
  });
  assert.deepEqual(methodLabels('/grpc.health.v1.Health/Check'), {
    service: 'grpc.health.v1.Health',
    method: 'Check',
  });
  for (const path of ['', '/', 'Encrypt', '/a/b/c', '/sealbox.v1.Envelope/Enc rypt', `/${'x'.repeat(200)}/M`])
    assert.deepEqual(methodLabels(path), { service: 'unknown', method: 'unknown' });
});
