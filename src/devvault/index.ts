/**
 * The sealbox dev vault: an embedded, Azure Key Vault–compatible HTTPS server for the keys API, driven
 * unchanged by @azure/keyvault-keys (KeyClient, CryptographyClient). It exists so that integration tests,
 * `sealbox dev` and the benchmark exercise the real Azure SDK, real TLS and Key Vault's real error shapes
 * without an Azure subscription. See docs/devvault.md for what it implements and where it differs from
 * Key Vault.
 *
 * Data directory layout:
 *   keys/<name>.json   one file per key name (store.ts), mode 0600
 *   tls/               CA and server certificate (tls.ts); clients trust tls/ca.pem
 *   admin-token        bearer token of the /_sealbox/ admin surface, new on every start, mode 0600
 *   dev-token          bearer token of the default all-permissions identity (only when no identities
 *                      are configured), kept across starts, mode 0600
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type Logger, pino } from 'pino';
import { z } from 'zod';
import { Counters, Faults, type LatencySettings, Throttle, type ThrottleSettings } from './controls';
import { atomicWriteFile, durableUnlink, ensurePrivateDir } from './fsutil';
import {
  ALL_KEY_PERMISSIONS,
  createHandler,
  type DevVaultExchange,
  type FaultUpdate,
  faultUpdateSchema,
  firstIssue,
  type Identity,
  type KeyPermission,
  throttlingSchema,
} from './server';
import { KeyStore } from './store';
import { loadOrCreateTls, VAULT_SUBDOMAIN } from './tls';
import { Vault } from './vault';

// Re-exports: everything callers need comes from this module.
export { devVaultClientOptions, sealboxKeyConfig, staticTokenCredential } from './client-options';
export type { LatencySettings, ThrottleClass, ThrottleSettings } from './controls';
export { AZURE_KEY_LIMITS_PER_10S } from './controls';
export { DevVaultStoreError } from './store';
export { DevVaultTlsError } from './tls';
export type { DevVaultExchange, KeyPermission };

/** Options of startDevVault. */
export interface DevVaultOptions {
  /** Persistence and certificates live here (created 0700 if missing). */
  dataDir: string;
  /** Listen address; default '127.0.0.1'. */
  host?: string;
  /** Listen port; 0 (the default) picks a free one. */
  port?: number;
  /**
   * Bearer token → identity with access-policy permissions. When omitted, one identity "dev" with every
   * permission is created; its token is in DevVault.devToken and `<dataDir>/dev-token`.
   */
  identities?: Record<string, { name: string; permissions: KeyPermission[] }>;
  /** Soft-delete retention, 7..90 days; default 90. */
  softDeleteRetentionDays?: number;
  /** When true, purge is refused (403) and deleted keys stay until their scheduled purge date. */
  purgeProtection?: boolean;
  /** Latency injected before every Key Vault request; default none. */
  latency?: LatencySettings;
  /**
   * Key Vault–like throttling per window (10 s) by key type; limits default to Azure's published ones
   * (controls.ts). Off unless enabled.
   */
  throttling?: { enabled: boolean; limitsPer10s?: ThrottleSettings['limitsPer10s']; windowMs?: number };
  /** Where the dev vault logs; default silent. */
  logger?: Logger;
  /** How long delete and recover stay in progress, so SDK pollers poll; default 0 (immediate). */
  lroDelayMs?: number;
  /** Test hook: called with every answered Key Vault request (not admin requests). */
  onResponse?: (exchange: DevVaultExchange) => void;
}

/** A running dev vault. */
export interface DevVault {
  /** Base URL clients use, e.g. https://localhost:PORT. */
  readonly url: string;
  /**
   * The same vault under a subdomain of localhost (https://sealbox.localhost:PORT), for clients that keep
   * the SDK's challenge-resource verification on; see client-options.ts.
   */
  readonly subdomainUrl: string;
  /** The bound address and port. */
  readonly host: string;
  readonly port: number;
  /** PEM file of the CA clients trust. */
  readonly caFile: string;
  readonly caPem: string;
  /** Bearer token of the /_sealbox/ admin surface (also in `<dataDir>/admin-token`). */
  readonly adminToken: string;
  /** Token of the default identity, when no identities were configured. */
  readonly devToken?: string;
  /** Per-operation call counts ("wrapKey", "wrapKey/<key name>", "throttled", "challenges", …). */
  counters(): Record<string, number>;
  resetCounters(): void;
  /** Changes fault injection; fields present replace the current setting. */
  setFaults(f: {
    latency?: LatencySettings;
    errorRate?: number;
    dropRate?: number;
    throttling?: DevVaultOptions['throttling'];
  }): void;
  /** Stops listening, closes open connections and waits for the server to close. */
  close(): Promise<void>;
}

/** Options that do not pass validation; the message names the field. */
export class DevVaultConfigError extends Error {
  override readonly name = 'DevVaultConfigError';
}

const permissionSchema = z.enum(ALL_KEY_PERMISSIONS as [KeyPermission, ...KeyPermission[]]);

const optionsSchema = z.object({
  dataDir: z.string().min(1),
  host: z.string().min(1).default('127.0.0.1'),
  port: z.number().int().min(0).max(65535).default(0),
  identities: z
    .record(
      z.string().regex(/^\S+$/, 'tokens cannot contain whitespace'),
      z.strictObject({ name: z.string().min(1), permissions: z.array(permissionSchema) }),
    )
    .optional(),
  softDeleteRetentionDays: z.number().int().min(7).max(90).default(90),
  purgeProtection: z.boolean().default(false),
  latency: faultUpdateSchema.shape.latency,
  throttling: throttlingSchema.optional(),
  lroDelayMs: z.number().int().min(0).max(60_000).default(0),
});

/** Starts a dev vault on `options.dataDir`. Rejects with DevVaultStoreError on a corrupt store. */
export async function startDevVault(options: DevVaultOptions): Promise<DevVault> {
  const { logger: givenLogger, onResponse, ...rest } = options;
  const parsed = optionsSchema.safeParse(rest);
  if (!parsed.success)
    throw new DevVaultConfigError(`invalid dev vault options: ${firstIssue(parsed.error)}`);
  const opts = parsed.data;
  const logger = givenLogger ?? pino({ level: 'silent' });

  await ensurePrivateDir(opts.dataDir);
  const tls = await loadOrCreateTls(opts.dataDir);
  const store = await KeyStore.open(opts.dataDir, async (file) => {
    logger.warn({ file }, 'removing a temporary file left by an interrupted write');
    await durableUnlink(file);
  });

  const identities = new Map<string, Identity>();
  let devToken: string | undefined;
  if (opts.identities === undefined) {
    devToken = await loadOrCreateToken(join(opts.dataDir, 'dev-token'));
    identities.set(devToken, { name: 'dev', permissions: ALL_KEY_PERMISSIONS });
  } else {
    for (const [token, identity] of Object.entries(opts.identities)) identities.set(token, identity);
  }
  const adminToken = randomBytes(32).toString('base64url');
  await atomicWriteFile(join(opts.dataDir, 'admin-token'), `${adminToken}\n`, 0o600);

  const vault = new Vault(store, {
    retentionDays: opts.softDeleteRetentionDays,
    purgeProtection: opts.purgeProtection,
    lroDelayMs: opts.lroDelayMs,
  });
  const faults = new Faults();
  if (opts.latency !== undefined) faults.latency = opts.latency;
  const throttle = new Throttle(opts.throttling);
  let throttling: ThrottleSettings = opts.throttling ?? { enabled: false };
  const counters = new Counters();

  const setFaults = (update: FaultUpdate): void => {
    if (update.latency !== undefined) faults.latency = update.latency;
    if (update.errorRate !== undefined) faults.errorRate = update.errorRate;
    if (update.dropRate !== undefined) faults.dropRate = update.dropRate;
    if (update.throttling !== undefined) {
      throttling = update.throttling;
      throttle.configure(update.throttling);
    }
  };
  const getFaults = () => ({
    latency: faults.latency,
    errorRate: faults.errorRate,
    dropRate: faults.dropRate,
    throttling,
  });

  let port = 0;
  const server = createServer(
    { cert: tls.certPem, key: tls.keyPem, minVersion: 'TLSv1.2' },
    createHandler({
      vault,
      identities,
      adminToken,
      faults,
      throttle,
      counters,
      logger,
      setFaults,
      getFaults,
      ...(onResponse === undefined ? {} : { onResponse }),
      port: () => port,
    }),
  );
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  logger.info({ port, dataDir: opts.dataDir }, 'dev vault listening');

  return {
    url: `https://localhost:${port}`,
    subdomainUrl: `https://${VAULT_SUBDOMAIN}:${port}`,
    host: opts.host,
    port,
    caFile: tls.caFile,
    caPem: tls.caPem,
    adminToken,
    ...(devToken === undefined ? {} : { devToken }),
    counters: () => counters.snapshot(),
    resetCounters: () => counters.reset(),
    setFaults(f) {
      const checked = faultUpdateSchema.safeParse(f);
      if (!checked.success) throw new DevVaultConfigError(`invalid faults: ${firstIssue(checked.error)}`);
      setFaults(checked.data);
    },
    close() {
      // Idempotent: every caller waits for the same shutdown.
      closing ??= new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

/** Reads a token file, or creates one (mode 0600) with a fresh random token. */
async function loadOrCreateToken(file: string): Promise<string> {
  try {
    const token = (await readFile(file, 'utf8')).trim();
    if (/^\S{16,}$/.test(token)) return token;
    throw new DevVaultConfigError(`${file} does not hold a token (16 or more non-space characters)`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const token = randomBytes(32).toString('base64url');
  await atomicWriteFile(file, `${token}\n`, 0o600);
  return token;
}
