/**
 * Wiring and shutdown only: config → metrics → KEK providers → data keys → pool → envelope service →
 * server → metrics listener.
 */
import { readFileSync } from 'node:fs';
import type { TokenCredential } from '@azure/identity';
import { CachedDataKeys, type CacheStats } from './cache/cached-data-keys';
import { UncachedDataKeys } from './cache/data-keys';
import { KeyStates } from './cache/key-states';
import { type Config, ConfigError, kmsAlias } from './config/config';
import { BatchEnvelope } from './envelope/batch';
import { KmsPlugin } from './envelope/kms';
import { EnvelopeService } from './envelope/service';
import { AuditedProvider } from './kek/audit';
import { createAzureCredential, createAzureProvider, type VaultCallObserver } from './kek/azure';
import { LocalKekProvider } from './kek/local';
import type { KekProvider } from './kek/provider';
import { KekRegistry, KeyOwnershipError } from './kek/registry';
import type { RetryEvent } from './kek/retry';
import { KeyWatcher } from './kek/watcher';
import { createLogger, type Logger } from './log/logger';
import { SealboxMetrics } from './metrics/metrics';
import { ChunkPool, type PoolStats, resolvePoolMode } from './pool/pool';
import { AccessControl } from './server/access';
import { startAdminServer } from './server/admin';
import { ENVELOPE_UNARY_PATHS, ReadGate, unaryAdmissionInterceptor } from './server/admission';
import { type MetricsHttpServer, startMetricsServer } from './server/http';
import { metricsInterceptor } from './server/interceptor';
import { type RunningKmsServer, startKmsServer } from './server/kms';
import { HEALTH_SERVICES, type RunningServer, startServer } from './server/server';
import { startWebhookServer } from './server/webhook';
import { ByteBudget } from './util/budget';

/** Live counters for metrics and tests. */
export interface SealboxStats {
  /** Bytes held by calls in flight (the shared ByteBudget). */
  readonly bytesInFlight: number;
  /** Streaming calls open (admitted and not yet ended). */
  readonly streamsOpen: number;
  readonly pool: PoolStats;
  readonly cache: CacheStats;
}

/** Hooks for tests. */
export interface SealboxHooks {
  /** Called with every buffer the DEK cache stores a DEK in. */
  readonly trackDek?: (buffer: Buffer) => void;
  /** The Entra ID credential every Azure key uses, instead of the configured one (credential outages). */
  readonly credential?: TokenCredential;
}

const CACHE_OFF: CacheStats = {
  enabled: false,
  hits: { encrypt: 0, decrypt: 0 },
  misses: { encrypt: 0, decrypt: 0 },
  coalesced: 0,
  blockingMisses: 0,
  evictions: {},
  entries: { encrypt: 0, decrypt: 0 },
  vaultCalls: { inFlight: 0, maxInFlight: 0 },
};

export interface Sealbox {
  readonly server: RunningServer;
  readonly log: Logger;
  stats(): SealboxStats;
  /** Zeroes and drops every cached DEK. */
  flushCache(): void;
  /** The key watcher (absent when the cache is off); checkNow() re-checks every key in use. */
  readonly watcher: KeyWatcher | undefined;
  /** The Event Grid webhook's URL (http://host:port/eventgrid), when configured. */
  readonly webhookUrl: string | undefined;
  /** The metrics listener's URL (http://host:port/metrics; /healthz and /readyz beside it), when configured. */
  readonly metricsUrl: string | undefined;
  /** The Kubernetes KMS v2 plugin's socket ("unix:/path"), when configured. */
  readonly kmsAddress: string | undefined;
  /** Drains calls (up to the configured grace), then releases the pool and zeroes key material. */
  close(): Promise<void>;
}

/** Hooks the Azure providers report vault calls to (metrics), and the audit log. */
export interface ProviderObservers {
  /** Logs one audit line per KEK operation (kek/audit.ts). */
  readonly audit?: Logger;
  readonly onVaultCall?: VaultCallObserver;
  readonly onRetryEvent?: (event: RetryEvent) => void;
  /** Use this credential for every Azure key instead of building one from its config (tests). */
  readonly credential?: TokenCredential;
}

export function buildProviders(config: Config, observers: ProviderObservers = {}): KekRegistry {
  const byAlias = new Map<string, KekProvider>();
  // One credential per distinct identity, shared by its keys: one token cache, one Entra ID client.
  const credentials = new Map<string, TokenCredential>();
  for (const [alias, key] of Object.entries(config.keys)) {
    switch (key.provider) {
      case 'local':
        byAlias.set(alias, LocalKekProvider.fromFile(key.file));
        break;
      case 'azure': {
        const identity = JSON.stringify(key.credential);
        let credential = observers.credential ?? credentials.get(identity);
        if (!credential) {
          credential = createAzureCredential(key.credential);
          credentials.set(identity, credential);
        }
        byAlias.set(
          alias,
          createAzureProvider(key, {
            credential,
            ...(observers.onVaultCall ? { onVaultCall: observers.onVaultCall } : {}),
            ...(observers.onRetryEvent ? { retryDeps: { onEvent: observers.onRetryEvent } } : {}),
          }),
        );
        break;
      }
    }
  }
  if (observers.audit) {
    for (const [alias, provider] of byAlias)
      byAlias.set(alias, new AuditedProvider(provider, alias, observers.audit));
  }
  try {
    return new KekRegistry(byAlias);
  } catch (err) {
    if (err instanceof KeyOwnershipError) throw new ConfigError(err.message);
    throw err;
  }
}

/** Starts sealbox from a validated config. */
export async function startSealbox(
  config: Config,
  log: Logger = createLogger(config.log.level),
  hooks: SealboxHooks = {},
): Promise<Sealbox> {
  // Metrics exist only with their listener: without one nobody could read them.
  const metrics = config.metrics.listen ? new SealboxMetrics() : undefined;
  const registry = buildProviders(config, {
    audit: log,
    ...(metrics ? { onVaultCall: metrics.vaultCall, onRetryEvent: metrics.retryEvent } : {}),
    ...(hooks.credential ? { credential: hooks.credential } : {}),
  });
  // The key-state model (cache/key-states.ts) decides; the cache zeroes what it says, the watcher feeds it.
  let cache: CachedDataKeys | undefined;
  let watcher: KeyWatcher | undefined;
  const states = new KeyStates(config.revocation, {
    evict: (keyId, scope) => cache?.evict(keyId, scope),
    onRevoke: (keyId, reason) => {
      log.warn({ keyId, reason }, 'key version revoked: its cached DEKs were zeroed');
      metrics?.keyRevoked(keyId, reason);
    },
    onRestore: (keyId) => {
      log.info({ keyId }, 'key version serving again');
      metrics?.keyRestored(keyId);
    },
    onSuspect: (keyId, confirmAt) => {
      log.warn(
        { keyId, confirmAt: new Date(confirmAt).toISOString() },
        'the vault refused a permission; revoking only if a confirming check at the end of the window is refused too',
      );
      watcher?.confirmLater(confirmAt);
    },
  });
  if (config.cache.enabled) {
    cache = new CachedDataKeys(
      registry,
      config.cache,
      {
        ...(hooks.trackDek ? { trackDek: hooks.trackDek } : {}),
        onRefreshError: (alias, err) => log.warn({ alias, err }, 'background DEK refresh failed; will retry'),
        ...(metrics ? { onEvictKey: metrics.keyEvictedByAdmin } : {}),
      },
      states,
    );
    // Without a cache every operation asks the vault, which enforces key state itself.
    watcher = new KeyWatcher(
      registry,
      cache,
      states,
      {
        pollIntervalMs: config.revocation.pollIntervalMs,
        maxChecksPerSecond: config.revocation.maxChecksPerSecond,
        maxConcurrentChecks: config.revocation.maxConcurrentChecks,
        ...(metrics ? { onRequest: metrics.watcherRequest } : {}),
      },
      log,
    );
  }
  const pool = new ChunkPool({
    ...config.pool,
    taskBytes: config.envelope.batchBytes,
    onWorkerError: (err) => log.error({ err }, 'worker thread failed'),
  });
  const dataKeys = cache ?? new UncachedDataKeys(registry);
  const service = new EnvelopeService(dataKeys, pool, config.envelope, registry);
  const batch = new BatchEnvelope(dataKeys, pool, config.envelope);
  const budget = new ByteBudget(config.stream.maxInFlightBytes);
  const access = new AccessControl(config, (keyId) => registry.aliasesOf(keyId), log);
  const adminDeps = { cache, watcher, registry, log };
  let server: RunningServer;
  try {
    server = await startServer(
      config,
      {
        service,
        budget,
        limits: config.stream,
        access,
        log,
        unaryQueueBytes: config.envelope.unaryQueueBytes,
        batch,
      },
      log,
      [
        // grpc-js wraps in list order (the last is outermost): admission sends its refusals through
        // the metrics interceptor below it, so they are recorded too.
        ...(metrics ? [metricsInterceptor(metrics)] : []),
        unaryAdmissionInterceptor(
          new ReadGate(config.envelope.unaryReadConcurrency, config.envelope.unaryReadQueue, () =>
            budget.saturated(config.envelope.unaryQueueBytes),
          ),
          ENVELOPE_UNARY_PATHS,
        ),
      ],
      adminDeps,
    );
  } catch (err) {
    await pool.close();
    await registry.close();
    throw err;
  }
  if (watcher) {
    // Readiness from the watcher's last results: each key alias is its own health service
    // ("sealbox.key.<alias>"); the server as a whole serves while any alias's current version does.
    const health = server.health;
    // Every alias has its health name from the start: serving until the first check (running now)
    // says otherwise — an unknown state is not a refusal.
    for (const alias of registry.aliases()) health.setStatus(`sealbox.key.${alias}`, 'SERVING');
    watcher.onChecked(() => {
      let anyServing = false;
      for (const [alias, check] of watcher.currentStates()) {
        const serving = check === undefined || check.state === 'enabled' || check.state === 'unknown';
        anyServing ||= serving;
        health.setStatus(`sealbox.key.${alias}`, serving ? 'SERVING' : 'NOT_SERVING');
      }
      for (const name of HEALTH_SERVICES) health.setStatus(name, anyServing ? 'SERVING' : 'NOT_SERVING');
    });
    watcher.start();
  }
  let metricsServer: MetricsHttpServer | undefined;
  const ready = () => server.health.statusOf('') === 'SERVING';
  if (metrics) {
    const providerAlias = new Map(registry.aliases().map((alias) => [registry.forAlias(alias), alias]));
    metrics.observe({
      stats: () => ({
        bytesInFlight: budget.inUse,
        streamsOpen: access.streamsOpen,
        pool: pool.stats,
        cache: cache?.stats() ?? CACHE_OFF,
      }),
      maxInFlightBytes: config.stream.maxInFlightBytes,
      maxConcurrentStreams: config.stream.maxConcurrentStreams,
      poolMaxQueue: config.pool.maxQueue,
      aliases: () => registry.aliases(),
      aliasOf(keyId) {
        try {
          return providerAlias.get(registry.forKeyId(keyId));
        } catch {
          return undefined;
        }
      },
      ...(watcher
        ? {
            keyStates: () => watcher.currentStates(),
            keyVersions: () => ({ watched: watcher.watchedCount(), unknown: states.sizes.unknown }),
          }
        : {}),
      ready,
      bufferPools: () => server.bufferPools(),
    });
  }
  let admin: Awaited<ReturnType<typeof startAdminServer>> | undefined;
  let webhook: Awaited<ReturnType<typeof startWebhookServer>> | undefined;
  let kms: RunningKmsServer | undefined;
  try {
    if (metrics && config.metrics.listen) {
      metricsServer = await startMetricsServer(
        config.metrics.listen,
        { metrics: () => metrics.text(), contentType: metrics.registry.contentType, ready },
        log,
      );
      log.info({ url: metricsServer.url }, 'metrics listening');
    }
    if (config.listen.adminSocket) {
      admin = await startAdminServer(
        config.listen.adminSocket,
        { mode: config.listen.adminSocketMode, group: config.listen.adminSocketGroup },
        adminDeps,
        access,
        config.listen.reflection ? { idleTimeoutMs: config.stream.idleTimeoutMs } : undefined,
      );
    }
    if (config.webhook.listen) {
      webhook = await startWebhookServer(
        config.webhook.listen,
        config.webhook.secret ?? readWebhookSecret(config.webhook.secretFile!),
        watcher ?? { checkNow: async () => {} },
        log,
        config.webhook.tls ?? undefined,
      );
    }
    const alias = kmsAlias(config);
    if (config.kms.socket && alias && cache && watcher) {
      // The KMS face: the same envelope service, health from the watcher, refusals from the key states.
      const plugin = new KmsPlugin({
        alias,
        service,
        current: () => watcher.currentStates().get(alias),
        check: (keyId, use) => states.check(keyId, use),
        invalidate: () => cache.invalidate(alias),
        refresh: () => watcher.checkNow(),
        aliasesOf: (keyId) => registry.aliasesOf(keyId),
      });
      kms = await startKmsServer(
        config.kms.socket,
        { mode: config.kms.socketMode, group: config.kms.socketGroup },
        { plugin, log, ...(metrics ? { onCall: metrics.kmsCall } : {}) },
      );
    }
  } catch (err) {
    // A failed start leaves nothing running: stop what did start, then release keys and threads.
    watcher?.stop();
    await kms?.stop(0);
    await admin?.stop();
    await server.stop(0);
    await metricsServer?.stop();
    cache?.close();
    await pool.close();
    await registry.close();
    throw err;
  }
  if (webhook) log.info({ url: `${webhook.url}/eventgrid` }, 'Event Grid webhook listening');
  log.info(
    {
      addresses: server.addresses,
      adminSocket: config.listen.adminSocket,
      keys: registry.aliases(),
      pool: resolvePoolMode(config.pool.mode),
      poolThreads: pool.stats.threads,
    },
    'sealbox listening',
  );
  let closing: Promise<void> | undefined;
  return {
    server,
    log,
    stats: () => ({
      bytesInFlight: budget.inUse,
      streamsOpen: access.streamsOpen,
      pool: pool.stats,
      cache: cache?.stats() ?? CACHE_OFF,
    }),
    flushCache: () => cache?.flush(),
    watcher,
    webhookUrl: webhook ? `${webhook.url}/eventgrid` : undefined,
    metricsUrl: metricsServer?.url,
    kmsAddress: kms?.address,
    close() {
      closing ??= (async () => {
        watcher?.stop();
        await webhook?.stop();
        await kms?.stop(config.shutdown.graceMs);
        await admin?.stop();
        // Readiness turns 503 as the drain starts (server.stop); the probes stay up until it ends.
        await server.stop(config.shutdown.graceMs);
        await metricsServer?.stop();
        cache?.close();
        await pool.close();
        await registry.close();
        log.info('sealbox stopped');
      })();
      return closing;
    },
  };
}

/**
 * The webhook secret from its file, held to the inline secret's rule (at least 16 characters): an
 * empty file would otherwise authenticate every caller (`?secret=` matches an empty secret).
 */
export function readWebhookSecret(path: string): string {
  let secret: string;
  try {
    secret = readFileSync(path, 'utf8').trim();
  } catch (err) {
    throw new ConfigError(`webhook.secretFile: cannot read ${path}: ${(err as Error).message}`);
  }
  if (secret.length < 16) {
    throw new ConfigError(
      `webhook.secretFile ${path} holds ${secret.length === 0 ? 'no secret' : `a secret of ${secret.length} characters`}; ` +
        'it must hold at least 16 (e.g. openssl rand -hex 24 > FILE)',
    );
  }
  return secret;
}

/** Closes sealbox on SIGTERM/SIGINT and exits 0 once drained (1 if draining failed). */
export function installShutdown(sealbox: Sealbox): void {
  const onSignal = (signal: string) => {
    sealbox.log.info({ signal }, 'shutting down: draining calls');
    sealbox.close().then(
      () => process.exit(0),
      (err) => {
        sealbox.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);
}
