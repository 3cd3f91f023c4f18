/**
 * sealbox's Prometheus metrics: one prom-client Registry per sealbox (never the global one), so two
 * sealboxes in one process (tests) keep separate counts.
 *
 * Cost model. The hot path does as little as possible:
 * - per RPC: one interceptor (src/server/interceptor.ts) times the call and, when it ends, bumps a few
 *   counters and one histogram — once per call, never per message or chunk;
 * - per vault call (rare: the DEK cache exists to make it so): one counter and one histogram;
 * - everything else — DEK cache counters, pool and byte-budget gauges, key states, readiness — is read
 *   from the live stats objects by collect() callbacks at scrape time, so serving does nothing for it.
 *
 * Labels are bounded (./labels.ts): method names come from the server's method table, aliases from
 * configuration, everything else from fixed lists. Never an error message, never a key version.
 *
 * | metric | type | labels |
 * |---|---|---|
 * | sealbox_grpc_server_handled_total | counter | service, method, code |
 * | sealbox_grpc_server_handling_seconds | histogram | service, method |
 * | sealbox_grpc_server_errors_total | counter | service, method, error_code (the sealbox-error-code trailer) |
 * | sealbox_payload_bytes_total | counter | method, direction (in, out): plaintext/ciphertext/header bytes of Envelope calls |
 * | sealbox_vault_requests_total | counter | operation, outcome |
 * | sealbox_vault_request_seconds | histogram | operation (all attempts of one call) |
 * | sealbox_vault_retries_total | counter | operation, reason |
 * | sealbox_dek_cache_hits_total, sealbox_dek_cache_misses_total | counter | side (encrypt, decrypt) |
 * | sealbox_dek_cache_coalesced_total | counter | — (decrypt misses that joined another caller's unwrap) |
 * | sealbox_dek_cache_blocking_misses_total | counter | — (requests that waited on a vault call) |
 * | sealbox_dek_cache_evictions_total | counter | reason |
 * | sealbox_dek_cache_entries | gauge | side |
 * | sealbox_dek_cache_vault_calls_in_flight | gauge | — |
 * | sealbox_key_state | gauge | alias, state (1 for the current version's last verdict, 0 otherwise) |
 * | sealbox_key_refused | gauge | alias (key versions currently refused) |
 * | sealbox_revocations_total | counter | reason |
 * | sealbox_key_versions_watched | gauge | — (versions the key watcher reads each poll) |
 * | sealbox_key_versions_unknown | gauge | — (versions in the negative cache: the vault said 404, never seen valid) |
 * | sealbox_key_watcher_requests_total | counter | operation (vault requests the watcher made; rate() is requests/s) |
 * | sealbox_pool_threads, sealbox_pool_queue_size, sealbox_pool_queue_capacity, sealbox_pool_utilization | gauge | — |
 * | sealbox_pool_tasks_completed_total | counter | — |
 * | sealbox_inflight_bytes, sealbox_inflight_bytes_limit | gauge | — |
 * | sealbox_ready | gauge | — (1 while the gRPC health status of "" is SERVING) |
 * | sealbox_kms_requests_total | counter | method (Status, Encrypt, Decrypt), outcome (ok, unhealthy, or the sealbox error code) |
 * | sealbox_kms_request_seconds | histogram | method |
 * | sealbox_process_*, sealbox_nodejs_* | prom-client default metrics | |
 */
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { CacheStats } from '../cache/cached-data-keys';
import type { ErrorCode } from '../errors';
import type { RetryEvent } from '../kek/retry';
import type { PoolStats } from '../pool/pool';
import {
  EVICTION_REASONS,
  errorCodeLabel,
  evictionReasonLabel,
  GRPC_CODES,
  grpcCodeName,
  KEY_STATES,
  keyStateLabel,
  methodLabels,
  REVOCATION_REASONS,
  type RevocationReason,
  retryReasonLabel,
  revocationReason,
  VAULT_OPERATIONS,
  VAULT_OUTCOMES,
  vaultOperationLabel,
  vaultOutcome,
} from './labels';

export const PREFIX = 'sealbox_';

/** RPC latency buckets: 100 µs (a cached unary Encrypt) to 10 s (a long stream, a cold vault). */
export const RPC_SECONDS_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];
/** Vault call buckets: 5 ms (a nearby vault) to 30 s (retries up to the call deadline). */
export const VAULT_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** The service whose payload bytes are counted. */
const ENVELOPE_SERVICE = 'sealbox.v1.Envelope';

/**
 * prom-client's default metrics include three gauges whose names end in _total (active handles,
 * requests, resources), which Prometheus naming reserves for counters (promtool check metrics flags
 * them); the same values are exported without the suffix, so these are dropped.
 */
const DROPPED_DEFAULT_METRICS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/** What the scrape-time metrics read; main.ts supplies it once everything is built. */
export interface MetricsSources {
  stats(): {
    readonly bytesInFlight: number;
    readonly streamsOpen: number;
    readonly pool: PoolStats;
    readonly cache: CacheStats;
  };
  readonly maxInFlightBytes: number;
  readonly maxConcurrentStreams: number;
  readonly poolMaxQueue: number;
  /** The configured key aliases. */
  aliases(): readonly string[];
  /** The alias whose key owns `keyId`, if any. */
  aliasOf(keyId: string): string | undefined;
  /** Alias → the key watcher's last verdict about its current version; absent without a watcher. */
  keyStates?(): ReadonlyMap<string, { readonly state: string } | undefined>;
  /** Versions the key watcher reads each poll, and the negative cache's size; absent without a watcher. */
  keyVersions?(): { readonly watched: number; readonly unknown: number };
  /** True while the gRPC health status of "" is SERVING. */
  ready(): boolean;
  /** Free buffers held by the server's reuse pools (server.ts RunningServer.bufferPools). */
  bufferPools?(): Readonly<Record<string, { readonly buffers: number; readonly bytes: number }>>;
}

/** Where one RPC's measurements go; resolved once per method path (see `SealboxMetrics.route`). */
export interface RpcRoute {
  /** Whether the interceptor should sum payload bytes for this method. */
  readonly countsBytes: boolean;
  /** Records one finished call. `errorCode` is the sealbox-error-code trailer's value, if any. */
  finished(code: number, errorCode: unknown, seconds: number, bytesIn: number, bytesOut: number): void;
}

/** What the server interceptor needs. */
export interface RpcMetrics {
  route(path: string): RpcRoute;
}

export interface MetricsOptions {
  /** Register prom-client's process and Node.js metrics (default true). */
  readonly processMetrics?: boolean;
}

type IncChild = { inc(value?: number): void };

/** The Kubernetes KMS v2 methods (proto/k8s/kms/v2/api.proto). */
const KMS_METHODS: readonly string[] = ['Status', 'Encrypt', 'Decrypt'];

/** All of sealbox's metrics, in one registry. */
export class SealboxMetrics implements RpcMetrics {
  readonly registry = new Registry();
  private sources: MetricsSources | undefined;
  private readonly routes = new Map<string, RpcRoute>();
  /** Key versions refused right now (CacheHooks.onRevoke / onRestore). */
  private readonly refused = new Set<string>();

  private readonly handled: Counter<'service' | 'method' | 'code'>;
  private readonly handling: Histogram<'service' | 'method'>;
  private readonly errors: Counter<'service' | 'method' | 'error_code'>;
  private readonly payload: Counter<'method' | 'direction'>;
  private readonly vaultRequests: Counter<'operation' | 'outcome'>;
  private readonly vaultSeconds: Histogram<'operation'>;
  private readonly vaultRetries: Counter<'operation' | 'reason'>;
  private readonly revocations: Counter<'reason'>;
  private readonly watcherRequests: Counter<'operation'>;
  private readonly kmsRequests: Counter<'method' | 'outcome'>;
  private readonly kmsSeconds: Histogram<'method'>;

  constructor(options: MetricsOptions = {}) {
    const registers = [this.registry];
    if (options.processMetrics !== false) {
      collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
      for (const name of DROPPED_DEFAULT_METRICS) this.registry.removeSingleMetric(PREFIX + name);
    }
    const self = this;
    const sources = () => self.sources;

    // --- per RPC (interceptor) ---
    this.handled = new Counter({
      name: `${PREFIX}grpc_server_handled_total`,
      help: 'RPCs completed, by method and final gRPC status code.',
      labelNames: ['service', 'method', 'code'],
      registers,
    });
    this.handling = new Histogram({
      name: `${PREFIX}grpc_server_handling_seconds`,
      help: 'Time from a call arriving to its status being sent, by method.',
      labelNames: ['service', 'method'],
      buckets: RPC_SECONDS_BUCKETS,
      registers,
    });
    this.errors = new Counter({
      name: `${PREFIX}grpc_server_errors_total`,
      help: 'Failed RPCs by method and sealbox error code (the sealbox-error-code trailer; "none" when absent).',
      labelNames: ['service', 'method', 'error_code'],
      registers,
    });
    this.payload = new Counter({
      name: `${PREFIX}payload_bytes_total`,
      help: 'Payload bytes (plaintext, ciphertext, headers) of Envelope calls, received (in) and sent (out).',
      labelNames: ['method', 'direction'],
      registers,
    });

    // --- per vault call (provider hooks) ---
    this.vaultRequests = new Counter({
      name: `${PREFIX}vault_requests_total`,
      help: 'Key Vault calls (all attempts of one call count once), by operation and outcome.',
      labelNames: ['operation', 'outcome'],
      registers,
    });
    this.vaultSeconds = new Histogram({
      name: `${PREFIX}vault_request_seconds`,
      help: 'Duration of Key Vault calls, retries and waits included, by operation.',
      labelNames: ['operation'],
      buckets: VAULT_SECONDS_BUCKETS,
      registers,
    });
    this.vaultRetries = new Counter({
      name: `${PREFIX}vault_retries_total`,
      help: 'Key Vault attempts that were retried, by operation and reason (throttled: HTTP 429).',
      labelNames: ['operation', 'reason'],
      registers,
    });
    for (const operation of VAULT_OPERATIONS) {
      for (const outcome of VAULT_OUTCOMES) this.vaultRequests.inc({ operation, outcome }, 0);
      this.vaultRetries.inc({ operation, reason: 'throttled' }, 0);
    }

    // --- Kubernetes KMS v2 plugin (server/kms.ts) ---
    this.kmsRequests = new Counter({
      name: `${PREFIX}kms_requests_total`,
      help: 'Kubernetes KMS v2 calls, by method and outcome (ok; unhealthy for a Status not "ok"; else the sealbox error code).',
      labelNames: ['method', 'outcome'],
      registers,
    });
    this.kmsSeconds = new Histogram({
      name: `${PREFIX}kms_request_seconds`,
      help: 'Duration of Kubernetes KMS v2 calls, by method.',
      labelNames: ['method'],
      buckets: RPC_SECONDS_BUCKETS,
      registers,
    });

    // --- key revocation (cache hooks) ---
    this.revocations = new Counter({
      name: `${PREFIX}revocations_total`,
      help: 'Key versions revoked (cached DEKs zeroed, new use refused), by reason; admin: RevokeKey evictions.',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of REVOCATION_REASONS) this.revocations.inc({ reason }, 0);
    new Gauge({
      name: `${PREFIX}key_refused`,
      help: 'Key versions currently refused, by key alias.',
      labelNames: ['alias'],
      registers,
      collect() {
        const from = sources();
        if (!from) return;
        this.reset();
        const counts = new Map<string, number>(from.aliases().map((alias) => [alias, 0]));
        for (const keyId of self.refused) {
          const alias = from.aliasOf(keyId);
          if (alias !== undefined && counts.has(alias)) counts.set(alias, counts.get(alias)! + 1);
        }
        for (const [alias, n] of counts) this.set({ alias }, n);
      },
    });
    new Gauge({
      name: `${PREFIX}key_state`,
      help: "The key watcher's last verdict on each alias's current key version: 1 for its state, 0 for the others.",
      labelNames: ['alias', 'state'],
      registers,
      collect() {
        const states = sources()?.keyStates?.();
        if (!states) return;
        this.reset();
        for (const [alias, check] of states) {
          const current = keyStateLabel(check?.state);
          for (const state of KEY_STATES) this.set({ alias, state }, state === current ? 1 : 0);
        }
      },
    });

    new Gauge({
      name: `${PREFIX}buffer_pool_bytes`,
      help:
        'Bytes of free buffers kept for reuse, by pool: stream response segments and large request messages ' +
        '(at most 32 MiB each). They stay allocated while idle, so they are part of idle RSS by design.',
      labelNames: ['pool'],
      registers,
      collect() {
        for (const [pool, held] of Object.entries(sources()?.bufferPools?.() ?? {}))
          this.set({ pool }, held.bytes);
      },
    });
    new Gauge({
      name: `${PREFIX}key_versions_watched`,
      help: 'Key versions the key watcher reads from the vault each poll (current versions, versions with cached DEKs, refused and suspected versions).',
      registers,
      collect() {
        const versions = sources()?.keyVersions?.();
        if (versions) this.set(versions.watched);
      },
    });
    new Gauge({
      name: `${PREFIX}key_versions_unknown`,
      help: 'Key versions the vault said do not exist (404, never seen valid), remembered so repeats cost no vault call.',
      registers,
      collect() {
        const versions = sources()?.keyVersions?.();
        if (versions) this.set(versions.unknown);
      },
    });
    this.watcherRequests = new Counter({
      name: `${PREFIX}key_watcher_requests_total`,
      help: 'Vault requests made by the key watcher (polls and confirming checks), by operation; rate() gives requests per second.',
      labelNames: ['operation'],
      registers,
    });

    // --- DEK cache, read at scrape time ---
    const cacheStats = () => sources()?.stats().cache;
    const sideCounter = (
      name: string,
      help: string,
      pick: (c: CacheStats) => Record<'encrypt' | 'decrypt', number>,
    ) =>
      new Counter({
        name: `${PREFIX}${name}`,
        help,
        labelNames: ['side'],
        registers,
        collect() {
          const stats = cacheStats();
          if (!stats) return;
          this.reset();
          const values = pick(stats);
          this.inc({ side: 'encrypt' }, values.encrypt);
          this.inc({ side: 'decrypt' }, values.decrypt);
        },
      });
    sideCounter('dek_cache_hits_total', 'DEK cache hits, by side (encrypt, decrypt).', (c) => c.hits);
    sideCounter('dek_cache_misses_total', 'DEK cache misses, by side (encrypt, decrypt).', (c) => c.misses);
    const plainCounter = (name: string, help: string, pick: (c: CacheStats) => number) =>
      new Counter({
        name: `${PREFIX}${name}`,
        help,
        registers,
        collect() {
          const stats = cacheStats();
          if (!stats) return;
          this.reset();
          this.inc(pick(stats));
        },
      });
    plainCounter(
      'dek_cache_coalesced_total',
      "Decrypt-side misses that waited on another caller's unwrap instead of calling the vault.",
      (c) => c.coalesced,
    );
    plainCounter(
      'dek_cache_blocking_misses_total',
      'Requests that had to wait on a vault call (wrap or unwrap).',
      (c) => c.blockingMisses,
    );
    new Counter({
      name: `${PREFIX}dek_cache_evictions_total`,
      help: 'DEKs dropped (and zeroed) by the cache, by reason.',
      labelNames: ['reason'],
      registers,
      collect() {
        const stats = cacheStats();
        if (!stats) return;
        this.reset();
        const byLabel = new Map<string, number>(EVICTION_REASONS.map((r) => [r, 0]));
        for (const [reason, n] of Object.entries(stats.evictions)) {
          const label = evictionReasonLabel(reason);
          byLabel.set(label, (byLabel.get(label) ?? 0) + n);
        }
        for (const [reason, n] of byLabel) this.inc({ reason }, n);
      },
    });
    new Gauge({
      name: `${PREFIX}dek_cache_entries`,
      help: 'DEKs held by the cache, by side.',
      labelNames: ['side'],
      registers,
      collect() {
        const stats = cacheStats();
        if (!stats) return;
        this.set({ side: 'encrypt' }, stats.entries.encrypt);
        this.set({ side: 'decrypt' }, stats.entries.decrypt);
      },
    });
    gauge(
      registers,
      'dek_cache_vault_calls_in_flight',
      'Vault calls the DEK cache has in flight.',
      () => cacheStats()?.vaultCalls.inFlight,
    );

    // --- pool, byte budget, readiness ---
    const pool = () => sources()?.stats().pool;
    gauge(
      registers,
      'pool_threads',
      'Worker threads (0 when AES runs inline on the main thread).',
      () => pool()?.threads,
    );
    gauge(
      registers,
      'pool_queue_size',
      'Chunk batches waiting for a worker thread.',
      () => pool()?.queueSize,
    );
    gauge(
      registers,
      'pool_queue_capacity',
      'Batches that may wait before new ones are refused (OVERLOADED, RESOURCE_EXHAUSTED).',
      () => sources()?.poolMaxQueue,
    );
    gauge(
      registers,
      'pool_utilization',
      "Worker pool utilization as piscina reports it (0..1; the workers' busy share of their capacity).",
      () => pool()?.utilization,
    );
    new Counter({
      name: `${PREFIX}pool_tasks_completed_total`,
      help:
        'Chunk batches sealed or opened, on workers or inline: one per segment (up to envelope.batchBytes) ' +
        'of a unary or streamed message, one per EncryptBatch/DecryptBatch item.',
      registers,
      collect() {
        const stats = pool();
        if (!stats) return;
        this.reset();
        this.inc(stats.completed);
      },
    });
    gauge(
      registers,
      'inflight_bytes',
      'Bytes held by calls in flight (the shared byte budget).',
      () => sources()?.stats().bytesInFlight,
    );
    gauge(
      registers,
      'inflight_bytes_limit',
      'Size of the shared byte budget (stream.maxInFlightBytes).',
      () => sources()?.maxInFlightBytes,
    );
    gauge(
      registers,
      'streams_open',
      'Streaming calls open now, across all callers.',
      () => sources()?.stats().streamsOpen,
    );
    gauge(
      registers,
      'streams_open_limit',
      'Streams allowed open at once (stream.maxConcurrentStreams); beyond it, RESOURCE_EXHAUSTED.',
      () => sources()?.maxConcurrentStreams,
    );
    gauge(
      registers,
      'ready',
      'Whether sealbox is ready: 1 while the gRPC health status of "" is SERVING.',
      () => {
        const from = sources();
        return from === undefined ? undefined : from.ready() ? 1 : 0;
      },
    );
  }

  /** Gives the scrape-time metrics their sources (main.ts, once everything is built). */
  observe(sources: MetricsSources): void {
    this.sources = sources;
  }

  /** The recorders for one method path; cached, so the per-call cost is one Map lookup. */
  route(path: string): RpcRoute {
    let route = this.routes.get(path);
    if (!route) {
      route = this.newRoute(path);
      // Paths reach interceptors only for registered methods (grpc-js answers UNIMPLEMENTED first),
      // so this map is bounded by the server's method table.
      this.routes.set(path, route);
    }
    return route;
  }

  /** CacheHooks.onRevoke: a key version is refused from now on. */
  readonly keyRevoked = (keyId: string, reason: string): void => {
    this.refused.add(keyId);
    this.revocations.inc({ reason: revocationReason(reason) });
  };

  /** CacheHooks.onRestore: a key version serves again. */
  readonly keyRestored = (keyId: string): void => {
    this.refused.delete(keyId);
  };

  /** WatcherOptions.onRequest: the key watcher made one vault request. */
  readonly watcherRequest = (operation: string): void => {
    this.watcherRequests.inc({ operation: vaultOperationLabel(operation) });
  };

  /** CacheHooks.onEvictKey: an operator's RevokeKey evicted a key version's DEKs. */
  readonly keyEvictedByAdmin = (_keyId: string): void => {
    this.revocations.inc({ reason: 'admin' satisfies RevocationReason });
  };

  /** AzureProviderDeps.onVaultCall: one vault call ended. */
  readonly vaultCall = (operation: string, seconds: number, failure: ErrorCode | undefined): void => {
    const label = vaultOperationLabel(operation);
    this.vaultRequests.inc({ operation: label, outcome: vaultOutcome(failure) });
    this.vaultSeconds.observe({ operation: label }, seconds);
  };

  /** RetryDeps.onEvent: counts retried attempts (the other events are covered by vaultCall). */
  readonly retryEvent = (event: RetryEvent): void => {
    if (event.type !== 'retry') return;
    this.vaultRetries.inc({
      operation: vaultOperationLabel(event.operation),
      reason: retryReasonLabel(event.reason),
    });
  };

  /** KmsServerDeps.onCall: one Kubernetes KMS call ended. */
  readonly kmsCall = (method: string, outcome: string, seconds: number): void => {
    const m = KMS_METHODS.includes(method) ? method : 'other';
    const o = outcome === 'ok' || outcome === 'unhealthy' ? outcome : errorCodeLabel(outcome);
    this.kmsRequests.inc({ method: m, outcome: o });
    this.kmsSeconds.observe({ method: m }, seconds);
  };

  /** The exposition text, as GET /metrics serves it. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  private newRoute(path: string): RpcRoute {
    const { service, method } = methodLabels(path);
    const seconds = this.handling.labels(service, method);
    const byCode: Array<IncChild | undefined> = new Array(GRPC_CODES.length);
    const countsBytes = service === ENVELOPE_SERVICE;
    const bytesIn = countsBytes ? this.payload.labels(method, 'in') : undefined;
    const bytesOut = countsBytes ? this.payload.labels(method, 'out') : undefined;
    const handled = this.handled;
    const errors = this.errors;
    return {
      countsBytes,
      finished(code, errorCode, elapsed, inBytes, outBytes) {
        const name = grpcCodeName(code);
        const index = GRPC_CODES.indexOf(name);
        let counter = byCode[index];
        if (!counter) {
          counter = handled.labels(service, method, name);
          byCode[index] = counter;
        }
        counter.inc();
        seconds.observe(elapsed);
        if (code !== 0) errors.inc({ service, method, error_code: errorCodeLabel(errorCode) });
        if (inBytes > 0) bytesIn?.inc(inBytes);
        if (outBytes > 0) bytesOut?.inc(outBytes);
      },
    };
  }
}

/** A labelless gauge read at scrape time; `read` returning undefined leaves it unset (no source yet). */
function gauge(registers: Registry[], name: string, help: string, read: () => number | undefined): Gauge {
  return new Gauge({
    name: `${PREFIX}${name}`,
    help,
    registers,
    collect() {
      const value = read();
      if (value !== undefined) this.set(value);
    },
  });
}
