/**
 * The sealbox dev vault: an embedded, Azure Key Vault–compatible HTTPS server for the keys API, driven
 * unchanged by @azure/keyvault-keys (KeyClient, CryptographyClient). It exists so that integration tests,
 * `sealbox dev` and the benchmark exercise the real Azure SDK, real TLS and Key Vault's real error shapes
 * without an Azure subscription. See docs/devvault.md for what it implements and where it differs from
 * Key Vault.
 *
 * Options choose the vault kind (`vault` or `managedhsm`), the permission model and, optionally, an
 * embedded Entra ID (entra.ts) whose tokens the vault accepts beside static identity tokens.
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
import {
  AccessControl,
  type AccessPolicy,
  type PermissionModel,
  type Principal,
  ROLE_NAMES,
  type RoleAssignment,
  type RoleName,
  type VaultKind,
} from './access';
import {
  Counters,
  Faults,
  type ForcedAnswerStep,
  ForcedAnswers,
  type LatencySettings,
  Throttle,
  type ThrottleSettings,
} from './controls';
import { type DevEntra, type DevEntraOptions, type EndpointState, startDevEntra } from './entra';
import { kvErrors } from './errors';
import { atomicWriteFile, durableUnlink, ensurePrivateDir } from './fsutil';
import {
  ALL_KEY_PERMISSIONS,
  challengeResourceOf,
  createHandler,
  type DevVaultExchange,
  type FaultUpdate,
  faultUpdateSchema,
  firstIssue,
  forcedAnswerSchema,
  type Identity,
  type KeyPermission,
  throttlingSchema,
} from './server';
import { KeyStore } from './store';
import { loadOrCreateTls, MANAGED_HSM_SUBDOMAIN, VAULT_SUBDOMAIN } from './tls';
import { Vault } from './vault';

export type {
  AccessPolicy,
  PermissionModel,
  Principal,
  RoleAssignment,
  RoleName,
  VaultKind,
} from './access';
export { MANAGED_HSM_ROLES, VAULT_ROLES } from './access';
// Re-exports: everything callers need comes from this module.
export {
  devEntraCredentialOptions,
  devVaultClientOptions,
  sealboxKeyConfig,
  staticTokenCredential,
} from './client-options';
export type {
  ForcedAnswerKind,
  ForcedAnswerStep,
  LatencySettings,
  ThrottleClass,
  ThrottleSettings,
} from './controls';
export { AZURE_KEY_LIMITS_PER_10S, MANAGED_HSM_LIMITS_PER_10S } from './controls';
export type { DevEntra, DevEntraOptions, DevEntraPrincipalOptions, EndpointState } from './entra';
export { startDevEntra } from './entra';
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
   * permission is created (under RBAC: Key Vault Administrator; on a managedhsm: Managed HSM Crypto User
   * and Crypto Officer, all at "/"); its token is in DevVault.devToken and `<dataDir>/dev-token`.
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
  /**
   * `vault` (Key Vault Standard/Premium: RSA keys, access policies or Azure RBAC) or `managedhsm` (Managed
   * HSM: RSA-HSM and oct-HSM keys, local RBAC only). Default `vault`. See docs/devvault.md.
   */
  kind?: VaultKind;
  /** SKU of a `vault`; Standard refuses RSA-HSM as Azure does. Default `premium`. */
  sku?: 'standard' | 'premium';
  /** Permission model of a `vault`; default `accessPolicy`. A `managedhsm` always has local RBAC. */
  permissionModel?: PermissionModel;
  /**
   * Lets a `vault` create oct-HSM keys, which Azure refuses (they exist only on Managed HSM). Defaults to
   * true only when `kind` is omitted, so callers written before vault kinds keep working; set `kind`
   * to get Azure's refusal.
   */
  allowSymmetricKeys?: boolean;
  /**
   * Probability that a list page is short or empty while a nextLink follows, as Key Vault's can be;
   * default 0.25 (the rate is ours, Azure publishes none). 0 gives full pages.
   */
  shortPageRate?: number;
  /** The vault's name in 403 messages; default `sealbox-dev` (`sealbox-hsm` for a managedhsm). */
  name?: string;
  /**
   * Access policies (accessPolicy model) by principal: an identity name, or an Entra principal's name,
   * object id or client id. Each static-token identity also gets its `permissions` as a policy.
   */
  accessPolicies?: AccessPolicy[];
  /** Role assignments (rbac model and managedhsm): principal reference, role name, scope `/`, `/keys` or `/keys/<name>`. */
  roleAssignments?: RoleAssignment[];
  /**
   * Starts an embedded Entra ID beside the vault (entra.ts) whose JWTs the vault accepts next to the
   * static identity tokens: DevVault.entra. Access policies and role assignments name its principals.
   */
  entra?: DevEntraOptions;
  /** Verifies bearer tokens that are not static identity tokens, e.g. another DevEntra's verify. */
  tokenVerifier?: (token: string) => Principal | Error;
}

/** A run-time change of who may do what, for DevVault.changeAccess and POST /_sealbox/access. */
export interface AccessChange {
  /** Access policies to set (replace); `permissions: []` removes the principal's policy. */
  readonly setAccessPolicies?: readonly AccessPolicy[];
  readonly assignRoles?: readonly RoleAssignment[];
  readonly removeRoleAssignments?: readonly RoleAssignment[];
  /** Delay before the changes take effect (role/policy propagation); default 0. */
  readonly afterMs?: number;
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
  /** The embedded Entra ID, when DevVaultOptions.entra was given. */
  readonly entra?: DevEntra;
  /** The vault kind and, for a vault, its permission model. */
  readonly kind: VaultKind;
  readonly permissionModel: PermissionModel;
  /** Changes fault injection; fields present replace the current setting. */
  setFaults(f: {
    latency?: LatencySettings;
    errorRate?: number;
    dropRate?: number;
    throttling?: DevVaultOptions['throttling'];
    /** Replaces the forced-answer script ([] clears it). */
    forcedAnswers?: ForcedAnswerStep[];
  }): void;
  /** Appends steps to the forced-answer script: the next `count` matching requests get `answer`. */
  forceAnswers(...steps: ForcedAnswerStep[]): void;
  /** Grants or revokes at run time, now or after `afterMs` (propagation delay). */
  changeAccess(change: AccessChange): void;
  /** Current access policies / role assignments and the number of changes still pending. */
  access(): ReturnType<AccessControl['snapshot']>;
  /** Stops listening, closes open connections and waits for the server to close. */
  close(): Promise<void>;
}

/** Options that do not pass validation; the message names the field. */
export class DevVaultConfigError extends Error {
  override readonly name = 'DevVaultConfigError';
}

const permissionSchema = z.enum(ALL_KEY_PERMISSIONS as [KeyPermission, ...KeyPermission[]]);

const accessPolicySchema = z.strictObject({
  principal: z.string().min(1),
  permissions: z.array(permissionSchema),
});
const roleAssignmentSchema = z.strictObject({
  principal: z.string().min(1),
  role: z.enum(ROLE_NAMES as [RoleName, ...RoleName[]]),
  scope: z
    .string()
    .regex(/^\/$|^\/keys(\/[0-9a-zA-Z-]{1,127})?$/, 'must be "/", "/keys" or "/keys/<key name>"')
    .default('/'),
});
/** A run-time access change as accepted by changeAccess and POST /_sealbox/access. */
export const accessChangeSchema = z.strictObject({
  setAccessPolicies: z.array(accessPolicySchema).optional(),
  assignRoles: z.array(roleAssignmentSchema).optional(),
  removeRoleAssignments: z.array(roleAssignmentSchema).optional(),
  afterMs: z.number().int().min(0).max(3_600_000).default(0),
});

const endpointStateSchema = z.union([z.literal('up'), z.literal('refuse'), z.literal(500), z.literal(503)]);
/** POST /_sealbox/entra: outages of the embedded Entra ID's endpoints and the token lifetime. */
const entraControlSchema = z.strictObject({
  tokenEndpoint: endpointStateSchema.optional(),
  managedIdentity: endpointStateSchema.optional(),
  tokenLifetimeSec: z.number().int().min(1).max(86_400).optional(),
});

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
  kind: z.enum(['vault', 'managedhsm']).optional(),
  shortPageRate: z.number().min(0).max(1).default(0.25),
  sku: z.enum(['standard', 'premium']).default('premium'),
  permissionModel: z.enum(['accessPolicy', 'rbac']).optional(),
  allowSymmetricKeys: z.boolean().optional(),
  name: z
    .string()
    .regex(/^[a-zA-Z][a-zA-Z0-9-]{1,23}$/, 'must be 2-24 letters, digits and dashes, starting with a letter')
    .optional(),
  accessPolicies: z.array(accessPolicySchema).optional(),
  roleAssignments: z.array(roleAssignmentSchema).optional(),
});

/** Starts a dev vault on `options.dataDir`. Rejects with DevVaultStoreError on a corrupt store. */
export async function startDevVault(options: DevVaultOptions): Promise<DevVault> {
  const {
    logger: givenLogger,
    onResponse,
    tokenVerifier: givenVerifier,
    entra: entraOptions,
    ...rest
  } = options;
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

  const kind: VaultKind = opts.kind ?? 'vault';
  const permissionModel: PermissionModel = opts.permissionModel ?? 'accessPolicy';
  if (kind === 'managedhsm' && opts.permissionModel === 'accessPolicy') {
    throw new DevVaultConfigError(
      'invalid dev vault options: permissionModel: a managedhsm has local RBAC only; omit permissionModel and use roleAssignments',
    );
  }
  if (kind === 'managedhsm' && opts.allowSymmetricKeys === false) {
    throw new DevVaultConfigError(
      'invalid dev vault options: allowSymmetricKeys: a managedhsm always holds oct-HSM keys',
    );
  }
  const entra =
    entraOptions === undefined
      ? undefined
      : await startDevEntra(tls, { ...entraOptions, host: entraOptions.host ?? opts.host, logger });
  const tokenVerifier =
    givenVerifier ??
    (entra === undefined ? undefined : (token: string) => entra.verify(token, challengeResourceOf(kind)));
  const access = new AccessControl(kind, permissionModel);
  for (const [, identity] of identities) access.setAccessPolicy(identity.name, identity.permissions);
  if (devToken !== undefined && (kind === 'managedhsm' || permissionModel === 'rbac')) {
    // The default identity may do everything in every permission model.
    const roles: RoleName[] =
      kind === 'managedhsm'
        ? ['Managed HSM Crypto User', 'Managed HSM Crypto Officer']
        : ['Key Vault Administrator'];
    for (const role of roles) access.assignRole({ principal: 'dev', role, scope: '/' });
  }
  for (const p of opts.accessPolicies ?? []) access.setAccessPolicy(p.principal, p.permissions);
  for (const a of opts.roleAssignments ?? []) access.assignRole(a);
  const applyChange = (change: z.infer<typeof accessChangeSchema>): void => {
    for (const p of change.setAccessPolicies ?? [])
      access.setAccessPolicy(p.principal, p.permissions, change.afterMs);
    for (const a of change.assignRoles ?? []) access.assignRole(a, change.afterMs);
    for (const a of change.removeRoleAssignments ?? []) access.removeRoleAssignment(a, change.afterMs);
  };
  const forced = new ForcedAnswers();

  const vault = new Vault(store, {
    retentionDays: opts.softDeleteRetentionDays,
    purgeProtection: opts.purgeProtection,
    lroDelayMs: opts.lroDelayMs,
    kind,
    sku: opts.sku,
    allowSymmetricKeys: kind === 'managedhsm' || (opts.allowSymmetricKeys ?? opts.kind === undefined),
    shortPageRate: opts.shortPageRate,
  });
  const faults = new Faults();
  if (opts.latency !== undefined) faults.latency = opts.latency;
  // A Managed HSM throttles by its own per-partition figures (controls.ts MANAGED_HSM_LIMITS_PER_10S).
  const withKind = (t: ThrottleSettings): ThrottleSettings =>
    kind === 'managedhsm' ? { ...t, managedHsm: true } : t;
  const throttle = new Throttle(opts.throttling === undefined ? undefined : withKind(opts.throttling));
  let throttling: ThrottleSettings = opts.throttling ?? { enabled: false };
  const counters = new Counters();

  const setFaults = (update: FaultUpdate): void => {
    if (update.latency !== undefined) faults.latency = update.latency;
    if (update.errorRate !== undefined) faults.errorRate = update.errorRate;
    if (update.dropRate !== undefined) faults.dropRate = update.dropRate;
    if (update.throttling !== undefined) {
      throttling = update.throttling;
      throttle.configure(withKind(update.throttling));
    }
    if (update.forcedAnswers !== undefined) forced.set(update.forcedAnswers);
  };
  const getFaults = () => ({
    latency: faults.latency,
    errorRate: faults.errorRate,
    dropRate: faults.dropRate,
    throttling,
    forcedAnswers: forced.remaining(),
  });

  let port = 0;
  const server = createServer(
    { cert: tls.certPem, key: tls.keyPem, minVersion: 'TLSv1.2' },
    createHandler({
      vault,
      identities,
      kind,
      vaultName: opts.name ?? (kind === 'managedhsm' ? 'sealbox-hsm' : 'sealbox-dev'),
      access,
      forced,
      ...(tokenVerifier === undefined
        ? {}
        : {
            verifyToken: (token: string) => {
              const r = tokenVerifier(token);
              return r instanceof Error ? kvErrors.unauthorized(r.message, '') : r;
            },
          }),
      changeAccess: (raw: unknown) => {
        const parsed = accessChangeSchema.safeParse(raw);
        if (!parsed.success) return `invalid access change: ${firstIssue(parsed.error)}`;
        applyChange(parsed.data);
        return undefined;
      },
      getAccess: () => access.snapshot(),
      ...(entra === undefined
        ? {}
        : {
            controlEntra: async (raw: unknown) => {
              const parsed = entraControlSchema.safeParse(raw);
              if (!parsed.success) return `invalid Entra ID control: ${firstIssue(parsed.error)}`;
              const { tokenLifetimeSec, ...outage } = parsed.data;
              if (tokenLifetimeSec !== undefined) entra.setTokenLifetime(tokenLifetimeSec);
              await entra.setOutage(
                outage as { tokenEndpoint?: EndpointState; managedIdentity?: EndpointState },
              );
              return undefined;
            },
          }),
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
    subdomainUrl: `https://${kind === 'managedhsm' ? MANAGED_HSM_SUBDOMAIN : VAULT_SUBDOMAIN}:${port}`,
    kind,
    permissionModel,
    ...(entra === undefined ? {} : { entra }),
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
    forceAnswers(...steps) {
      const checked = z.array(forcedAnswerSchema).safeParse(steps);
      if (!checked.success)
        throw new DevVaultConfigError(`invalid forced answers: ${firstIssue(checked.error)}`);
      forced.add(checked.data);
    },
    changeAccess(change) {
      const checked = accessChangeSchema.safeParse(change);
      if (!checked.success)
        throw new DevVaultConfigError(`invalid access change: ${firstIssue(checked.error)}`);
      applyChange(checked.data);
    },
    access: () => access.snapshot(),
    close() {
      // Idempotent: every caller waits for the same shutdown.
      closing ??= Promise.all([
        new Promise<void>((resolve, reject) => {
          server.close((err) => (err ? reject(err) : resolve()));
          server.closeAllConnections();
        }),
        entra?.close(),
      ]).then(() => undefined);
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
