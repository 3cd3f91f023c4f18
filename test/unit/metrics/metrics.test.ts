/**
 * SealboxMetrics' definitions: its own registry, scrape-time values read from live stats objects,
 * the vault and revocation hooks, bounded labels under junk input; and the /metrics, /healthz, /readyz
 * listener.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { register as globalRegistry } from 'prom-client';
import type { CacheStats } from '../../../src/cache/cached-data-keys';
import { ConfigError, loadConfig } from '../../../src/config/config';
import { ErrorCode } from '../../../src/errors';
import { createLogger } from '../../../src/log/logger';
import { EVICTION_REASONS, KEY_STATES, REVOCATION_REASONS } from '../../../src/metrics/labels';
import { type MetricsSources, SealboxMetrics } from '../../../src/metrics/metrics';
import type { PoolStats } from '../../../src/pool/pool';
import { startMetricsServer } from '../../../src/server/http';

type Values = Array<{ labels: Record<string, string | number>; value: number }>;

async function series(metrics: SealboxMetrics, name: string): Promise<Values> {
  const json = await metrics.registry.getMetricsAsJSON();
  const metric = json.find((m) => m.name === name);
  assert.ok(metric, `${name} is registered`);
  return metric.values as Values;
}

/** The value of the one series of `name` whose labels include `labels`. */
async function value(
  metrics: SealboxMetrics,
  name: string,
  labels: Record<string, string> = {},
): Promise<number> {
  const matching = (await series(metrics, name)).filter(
    (v) => !v.labels['le'] && Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want),
  );
  assert.equal(matching.length, 1, `one ${name} series with ${JSON.stringify(labels)}`);
  return matching[0]!.value;
}

function fakeSources(overrides: Partial<MetricsSources> = {}) {
  const cache: CacheStats = {
    enabled: true,
    hits: { encrypt: 40, decrypt: 7 },
    misses: { encrypt: 1, decrypt: 3 },
    coalesced: 2,
    blockingMisses: 4,
    evictions: { retired: 5, revoked: 2, set: 1, delete: 1 },
    entries: { encrypt: 1, decrypt: 3 },
    vaultCalls: { inFlight: 1, maxInFlight: 3 },
  };
  const pool: PoolStats = { threads: 4, queueSize: 12, utilization: 0.5, completed: 99 };
  const state = {
    cache,
    pool,
    bytesInFlight: 4096,
    ready: true,
    bufferPools: { responses: { buffers: 2, bytes: 2_097_708 }, requests: { buffers: 1, bytes: 1_048_576 } },
  };
  const sources: MetricsSources = {
    stats: () => ({
      bytesInFlight: state.bytesInFlight,
      streamsOpen: 7,
      pool: state.pool,
      cache: state.cache,
    }),
    maxInFlightBytes: 1 << 20,
    maxConcurrentStreams: 256,
    poolMaxQueue: 16,
    aliases: () => ['pay', 'logs'],
    aliasOf: (keyId) => (keyId.startsWith('pay/') ? 'pay' : keyId.startsWith('logs/') ? 'logs' : undefined),
    keyStates: () =>
      new Map<string, { state: string } | undefined>([
        ['pay', { state: 'not-yet-valid' }],
        ['logs', undefined],
      ]),
    ready: () => state.ready,
    bufferPools: () => state.bufferPools,
    ...overrides,
  };
  return { sources, state };
}

test('metrics live in their own registry, never the global one', async () => {
  const metrics = new SealboxMetrics();
  assert.notEqual(metrics.registry, globalRegistry);
  assert.ok((await metrics.registry.getMetricsAsJSON()).length > 20);
  const global = await globalRegistry.getMetricsAsJSON();
  assert.equal(
    global.filter((m) => m.name.startsWith('sealbox_')).length,
    0,
    'nothing registered globally under sealbox_',
  );
});

test('process metrics carry the sealbox_ prefix, without the gauges named like counters', async () => {
  const text = await new SealboxMetrics().text();
  assert.match(text, /^sealbox_process_cpu_seconds_total /m);
  assert.match(text, /^sealbox_nodejs_eventloop_lag_seconds /m);
  assert.match(text, /^# TYPE sealbox_nodejs_active_handles gauge$/m);
  assert.doesNotMatch(text, /^# TYPE \S+_total gauge/m);
  const noProcess = await new SealboxMetrics({ processMetrics: false }).text();
  assert.doesNotMatch(noProcess, /sealbox_process_|sealbox_nodejs_/);
});

test('cache, pool, budget and readiness values are read from the sources at scrape time', async () => {
  const metrics = new SealboxMetrics({ processMetrics: false });
  const { sources, state } = fakeSources();
  metrics.observe(sources);
  assert.equal(await value(metrics, 'sealbox_dek_cache_hits_total', { side: 'encrypt' }), 40);
  assert.equal(await value(metrics, 'sealbox_dek_cache_hits_total', { side: 'decrypt' }), 7);
  assert.equal(await value(metrics, 'sealbox_dek_cache_misses_total', { side: 'decrypt' }), 3);
  assert.equal(await value(metrics, 'sealbox_dek_cache_coalesced_total'), 2);
  assert.equal(await value(metrics, 'sealbox_dek_cache_blocking_misses_total'), 4);
  assert.equal(await value(metrics, 'sealbox_dek_cache_evictions_total', { reason: 'retired' }), 5);
  assert.equal(await value(metrics, 'sealbox_dek_cache_evictions_total', { reason: 'revoked' }), 2);
  assert.equal(await value(metrics, 'sealbox_dek_cache_evictions_total', { reason: 'other' }), 2);
  assert.deepEqual(
    (await series(metrics, 'sealbox_dek_cache_evictions_total')).map((v) => v.labels['reason']).sort(),
    [...EVICTION_REASONS].sort(),
  );
  assert.equal(await value(metrics, 'sealbox_dek_cache_entries', { side: 'decrypt' }), 3);
  assert.equal(await value(metrics, 'sealbox_dek_cache_vault_calls_in_flight'), 1);
  assert.equal(await value(metrics, 'sealbox_pool_threads'), 4);
  assert.equal(await value(metrics, 'sealbox_pool_queue_size'), 12);
  assert.equal(await value(metrics, 'sealbox_pool_queue_capacity'), 16);
  assert.equal(await value(metrics, 'sealbox_pool_utilization'), 0.5);
  assert.equal(await value(metrics, 'sealbox_pool_tasks_completed_total'), 99);
  assert.equal(await value(metrics, 'sealbox_inflight_bytes'), 4096);
  assert.equal(await value(metrics, 'sealbox_inflight_bytes_limit'), 1 << 20);
  assert.equal(await value(metrics, 'sealbox_streams_open'), 7);
  assert.equal(await value(metrics, 'sealbox_streams_open_limit'), 256);
  assert.equal(await value(metrics, 'sealbox_ready'), 1);
  assert.equal(await value(metrics, 'sealbox_buffer_pool_bytes', { pool: 'responses' }), 2_097_708);
  assert.equal(await value(metrics, 'sealbox_buffer_pool_bytes', { pool: 'requests' }), 1_048_576);

  // The next scrape sees the new values (counters follow the cache's totals, not increments).
  state.cache = { ...state.cache, hits: { encrypt: 41, decrypt: 7 } };
  state.pool = { ...state.pool, queueSize: 0 };
  state.ready = false;
  state.bufferPools = { ...state.bufferPools, requests: { buffers: 0, bytes: 0 } };
  assert.equal(await value(metrics, 'sealbox_buffer_pool_bytes', { pool: 'requests' }), 0);
  assert.equal(await value(metrics, 'sealbox_dek_cache_hits_total', { side: 'encrypt' }), 41);
  assert.equal(await value(metrics, 'sealbox_pool_queue_size'), 0);
  assert.equal(await value(metrics, 'sealbox_ready'), 0);
});

test('key state: one series per alias and state, 1 for the current verdict; no series without a watcher', async () => {
  const metrics = new SealboxMetrics({ processMetrics: false });
  metrics.observe(fakeSources().sources);
  const states = await series(metrics, 'sealbox_key_state');
  assert.equal(states.length, 2 * KEY_STATES.length);
  const ones = states.filter((v) => v.value === 1).map((v) => `${v.labels['alias']}=${v.labels['state']}`);
  assert.deepEqual(ones.sort(), ['logs=unknown', 'pay=not_yet_valid']);

  const noWatcher = new SealboxMetrics({ processMetrics: false });
  const { keyStates: _, ...rest } = fakeSources().sources;
  noWatcher.observe(rest);
  assert.equal((await series(noWatcher, 'sealbox_key_state')).length, 0);
});

test('revocations count by bounded reason; refused versions are counted per alias until restored', async () => {
  const metrics = new SealboxMetrics({ processMetrics: false });
  metrics.observe(fakeSources().sources);
  for (const reason of REVOCATION_REASONS)
    assert.equal(await value(metrics, 'sealbox_revocations_total', { reason }), 0, `${reason} starts at 0`);

  metrics.keyRevoked('pay/1', 'the key version is disabled in the vault');
  metrics.keyRevoked('pay/2', 'the vault refused it (KEY_NOT_FOUND)');
  metrics.keyRevoked('logs/7', 'the key version has expired');
  metrics.keyRevoked('elsewhere/1', 'the key version has expired');
  metrics.keyEvictedByAdmin('pay/1');
  assert.equal(await value(metrics, 'sealbox_revocations_total', { reason: 'disabled' }), 1);
  assert.equal(await value(metrics, 'sealbox_revocations_total', { reason: 'in_band' }), 1);
  assert.equal(await value(metrics, 'sealbox_revocations_total', { reason: 'expired' }), 2);
  assert.equal(await value(metrics, 'sealbox_revocations_total', { reason: 'admin' }), 1);
  assert.equal(await value(metrics, 'sealbox_key_refused', { alias: 'pay' }), 2);
  assert.equal(await value(metrics, 'sealbox_key_refused', { alias: 'logs' }), 1);
  metrics.keyRestored('pay/1');
  metrics.keyRestored('logs/7');
  assert.equal(await value(metrics, 'sealbox_key_refused', { alias: 'pay' }), 1);
  assert.equal(await value(metrics, 'sealbox_key_refused', { alias: 'logs' }), 0);
  // Only configured aliases are label values, whatever key ids were refused.
  assert.equal((await series(metrics, 'sealbox_key_refused')).length, 2);

  for (let i = 0; i < 300; i++) metrics.keyRevoked(`pay/${i + 10}`, randomBytes(16).toString('hex'));
  assert.equal((await series(metrics, 'sealbox_revocations_total')).length, REVOCATION_REASONS.length);
});

test('vault calls: one count per call by operation and outcome, with a latency histogram; retries by reason', async () => {
  const metrics = new SealboxMetrics({ processMetrics: false });
  metrics.vaultCall('wrapKey', 0.02, undefined);
  metrics.vaultCall('unwrapKey', 0.5, ErrorCode.VAULT_THROTTLED);
  metrics.vaultCall('unwrapKey', 3, ErrorCode.CIPHERTEXT_CORRUPT);
  metrics.vaultCall('getKey', 0.01, ErrorCode.PERMISSION_DENIED);
  metrics.retryEvent({ type: 'attempt', operation: 'unwrapKey', attempt: 1 });
  metrics.retryEvent({
    type: 'retry',
    operation: 'unwrapKey',
    attempt: 1,
    reason: 'throttled',
    delayMs: 100,
  });
  metrics.retryEvent({
    type: 'retry',
    operation: 'unwrapKey',
    attempt: 2,
    reason: 'server-error',
    delayMs: 100,
  });
  assert.equal(
    await value(metrics, 'sealbox_vault_requests_total', { operation: 'wrapKey', outcome: 'success' }),
    1,
  );
  assert.equal(
    await value(metrics, 'sealbox_vault_requests_total', { operation: 'unwrapKey', outcome: 'throttled' }),
    1,
  );
  assert.equal(
    await value(metrics, 'sealbox_vault_requests_total', { operation: 'unwrapKey', outcome: 'error' }),
    1,
  );
  assert.equal(
    await value(metrics, 'sealbox_vault_requests_total', { operation: 'getKey', outcome: 'denied' }),
    1,
  );
  assert.equal(
    await value(metrics, 'sealbox_vault_retries_total', { operation: 'unwrapKey', reason: 'throttled' }),
    1,
  );
  assert.equal(
    await value(metrics, 'sealbox_vault_retries_total', { operation: 'unwrapKey', reason: 'server-error' }),
    1,
  );
  const histogram = await series(metrics, 'sealbox_vault_request_seconds');
  const unwrapCount = histogram.find(
    (v) =>
      v.labels['operation'] === 'unwrapKey' && (v as { metricName?: string }).metricName?.endsWith('_count'),
  );
  assert.equal(unwrapCount?.value, 2);

  // Junk operations collapse into "other"; the series count stays fixed.
  for (let i = 0; i < 100; i++) metrics.vaultCall(`op${i}`, 0.001, undefined);
  const operations = new Set(
    (await series(metrics, 'sealbox_vault_requests_total')).map((v) => v.labels['operation']),
  );
  assert.deepEqual([...operations].sort(), ['getKey', 'other', 'unwrapKey', 'wrapKey']);
});

test('/metrics serves the registry with its content type; /healthz is up; /readyz follows readiness', async () => {
  const metrics = new SealboxMetrics({ processMetrics: false });
  let ready = true;
  const server = await startMetricsServer(
    { host: '127.0.0.1', port: 0 },
    { metrics: () => metrics.text(), contentType: metrics.registry.contentType, ready: () => ready },
    createLogger('silent'),
  );
  try {
    assert.match(server.url, /^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    const scrape = await fetch(server.url);
    assert.equal(scrape.status, 200);
    assert.equal(scrape.headers.get('content-type'), metrics.registry.contentType);
    assert.match(await scrape.text(), /^# TYPE sealbox_grpc_server_handled_total counter$/m);
    const at = (path: string, init?: RequestInit) => fetch(new URL(path, server.url), init);
    assert.equal((await at('/healthz')).status, 200);
    assert.equal((await at('/readyz')).status, 200);
    ready = false;
    const notReady = await at('/readyz?verbose');
    assert.equal(notReady.status, 503);
    assert.match(await notReady.text(), /not SERVING/);
    assert.equal((await at('/healthz')).status, 200, 'liveness does not follow readiness');
    const head = await at('/metrics', { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(await head.text(), '');
    assert.equal((await at('/metrics', { method: 'POST', body: 'x' })).status, 405);
    assert.equal((await at('/debug/pprof')).status, 404);
  } finally {
    await server.stop();
  }
});

test('a failing exposition answers 500 and the listener keeps serving', async () => {
  let fail = true;
  const server = await startMetricsServer(
    { host: '127.0.0.1', port: 0 },
    {
      metrics: async () => {
        if (fail) throw new Error('collect failed');
        return 'ok 1\n';
      },
      contentType: 'text/plain; version=0.0.4; charset=utf-8',
      ready: () => true,
    },
    createLogger('silent'),
  );
  try {
    const failed = await fetch(server.url);
    assert.equal(failed.status, 500);
    assert.doesNotMatch(await failed.text(), /collect failed/);
    fail = false;
    assert.equal(await (await fetch(server.url)).text(), 'ok 1\n');
  } finally {
    await server.stop();
  }
});

test('config: metrics are off by default; metrics.listen, --metrics and SEALBOX_METRICS turn them on', () => {
  const base = { listen: { socket: '/tmp/x.sock' } };
  assert.equal(loadConfig({ base }).metrics.listen, null);
  assert.deepEqual(loadConfig({ base: { ...base, metrics: { listen: { port: 9464 } } } }).metrics.listen, {
    host: '127.0.0.1',
    port: 9464,
  });
  assert.deepEqual(loadConfig({ base, env: { SEALBOX_METRICS: '9464' } }).metrics.listen, {
    host: '127.0.0.1',
    port: 9464,
  });
  assert.deepEqual(loadConfig({ base, flags: { metrics: '0.0.0.0:9100' } }).metrics.listen, {
    host: '0.0.0.0',
    port: 9100,
  });
  assert.equal(
    loadConfig({ base: { ...base, metrics: { listen: { port: 9464 } } }, flags: { metrics: 'none' } }).metrics
      .listen,
    null,
  );
  assert.throws(
    () => loadConfig({ base: { ...base, metrics: { listen: { port: 70_000 } } } }),
    (err: unknown) => err instanceof ConfigError && /metrics\.listen\.port/.test(err.message),
  );
});
