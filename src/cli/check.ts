/**
 * `sealbox check`: a preflight of every configured key through the same providers the sidecar uses.
 * For each key it proves, in order:
 *   get        the current version can be read (providers with refreshCurrentVersion; others after
 *              wrapKey, with status(keyId)), and it is enabled and within nbf/exp;
 *   wrapKey    a random 32-byte DEK wraps under the current version;
 *   unwrapKey  the wrapped DEK unwraps to the same bytes (compared in constant time).
 * The first failing step decides the key's line and exit code; later steps are not tried (wrapKey
 * needs the current version, and unwrapKey needs a wrapped key).
 *
 * Postcondition: both DEK buffers are zeroed whatever happens.
 */
import { randomFillSync, timingSafeEqual } from 'node:crypto';
import type { Config } from '../config/config';
import { ErrorCode, isSealboxError } from '../errors';
import { vaultErrorCodes } from '../kek/azure';
import type { KekProvider, KeyStatus } from '../kek/provider';
import { EXIT_CODE_NAMES, ExitCode } from './exit';

/** The vault operations the check performs, named as Key Vault names them. */
export type CheckStep = 'get' | 'wrapKey' | 'unwrapKey';

/** What the check knows about a key before talking to it (from the config). */
export interface KeyDescription {
  /** The key without a version: https://host/keys/name, or "local key file PATH". */
  readonly id: string;
  /** The vault URL (azure keys). */
  readonly vaultUrl?: string;
  readonly keyName?: string;
  /** Who the configured credential is, for when the vault's answer does not name the caller. */
  readonly identity?: string;
}

/** The verdict on one key. */
export interface KeyCheck {
  readonly alias: string;
  readonly ok: boolean;
  /** ExitCode.OK when ok. */
  readonly exitCode: ExitCode;
  /** The versioned key id once known, else KeyDescription.id. */
  readonly keyId: string;
  /** What passed, or what failed and what to do. */
  readonly message: string;
}

/** Keys expiring within this many days get a reminder on their ✓ line. */
const EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 86_400_000;

/** Checks one key through its provider. Never throws. */
export async function checkKey(
  alias: string,
  provider: KekProvider,
  description: KeyDescription,
  now: () => number = Date.now,
): Promise<KeyCheck> {
  let step: CheckStep = 'get';
  let keyId = description.id;
  const dek = Buffer.alloc(32);
  let unwrapped: Buffer | undefined;
  const fail = (exitCode: ExitCode, message: string): KeyCheck => ({
    alias,
    ok: false,
    exitCode,
    keyId,
    message,
  });
  try {
    randomFillSync(dek);
    let status: KeyStatus | undefined;
    if (provider.refreshCurrentVersion) {
      status = await provider.refreshCurrentVersion();
      keyId = status.keyId;
      const problem = validity(status, now());
      if (problem) return fail(problem.exitCode, problem.message);
    }
    step = 'wrapKey';
    const wrapped = await provider.wrap(dek);
    keyId = wrapped.keyId;
    if (!status) {
      step = 'get';
      status = await provider.status(wrapped.keyId);
      const problem = validity(status, now());
      if (problem) return fail(problem.exitCode, problem.message);
    }
    step = 'unwrapKey';
    unwrapped = await provider.unwrap(wrapped.keyId, wrapped.algorithm, wrapped.wrapped);
    if (unwrapped.length !== dek.length || !timingSafeEqual(unwrapped, dek)) {
      return fail(
        ExitCode.FAILURE,
        'unwrapKey returned a different data key than wrapKey was given; the vault or key is not ' +
          'behaving as a key-wrapping key (check the key type and the vaultUrl)',
      );
    }
    return {
      alias,
      ok: true,
      exitCode: ExitCode.OK,
      keyId,
      message: `get, wrapKey, unwrapKey ok (${wrapped.algorithm}); ${datesNote(status, now())}`,
    };
  } catch (err) {
    const verdict = explain(err, step, keyId, description);
    return fail(verdict.exitCode, verdict.message);
  } finally {
    dek.fill(0);
    unwrapped?.fill(0);
  }
}

/** Disabled, not yet valid or expired; undefined when the version is usable now. */
export function validity(
  status: KeyStatus,
  now: number,
): { exitCode: ExitCode; message: string } | undefined {
  const id = status.keyId;
  if (!status.enabled) {
    return {
      exitCode: ExitCode.KEY_DISABLED,
      message:
        `key version ${id} is disabled; enable the key version (az keyvault key set-attributes --enabled true), ` +
        'or rotate the key to a new enabled version',
    };
  }
  if (status.notBefore && status.notBefore.getTime() > now) {
    return {
      exitCode: ExitCode.KEY_NOT_IN_DATE,
      message: `key ${id} is not valid before ${status.notBefore.toISOString()}; wait until then, or move its activation date (nbf)`,
    };
  }
  if (status.expiresOn && status.expiresOn.getTime() <= now) {
    return {
      exitCode: ExitCode.KEY_NOT_IN_DATE,
      message: `key ${id} expired at ${status.expiresOn.toISOString()}; rotate (create a new version) or extend its expiry (exp)`,
    };
  }
  return undefined;
}

function datesNote(status: KeyStatus, now: number): string {
  if (!status.expiresOn) return 'enabled, no expiry';
  const days = Math.floor((status.expiresOn.getTime() - now) / DAY_MS);
  const when = status.expiresOn.toISOString();
  return days < EXPIRY_WARNING_DAYS
    ? `enabled; expires ${when}, in ${days} day(s): rotate or extend it soon`
    : `enabled, expires ${when}`;
}

/** The fields of an SDK error (the SealboxError's cause) the explanation reads. */
interface CauseLike {
  readonly message?: unknown;
  readonly statusCode?: unknown;
}

/**
 * The caller as Key Vault names it in a 403 ("appid=…;oid=…", from both access-policy and RBAC
 * denials), so the fix names the identity that actually called, not the one the config meant.
 */
export function callerOf(cause: unknown): string | undefined {
  const message = (cause as CauseLike | undefined)?.message;
  if (typeof message !== 'string') return undefined;
  return /appid=[^;'"\s]{1,128};oid=[0-9A-Za-z-]{1,64}/.exec(message)?.[0];
}

/** The least-privileged built-in roles that allow get, wrapKey and unwrapKey on a key (docs/azure.md "Permissions"). */
export const KEY_VAULT_ROLE = 'Key Vault Crypto Service Encryption User';
export const MANAGED_HSM_ROLE = 'Managed HSM Crypto Service Encryption User';

/** `Name: 'value'` from a Key Vault RBAC 403 message (Action, Resource), bounded. */
function rbacField(message: string, field: 'Action' | 'Resource'): string | undefined {
  return new RegExp(`${field}: '([^'\\r\\n]{1,512})'`).exec(message)?.[1];
}

/**
 * For a 403 from role-based access — Azure RBAC on a vault (inner ForbiddenByRbac) or Managed HSM local
 * RBAC (code AccessDenied, "Not authorized to access <data action> on '<scope>'") — the role to assign,
 * its scope and the principal, with the az command. Undefined for access-policy refusals.
 */
export function missingRole(
  cause: unknown,
  codes: readonly string[],
  step: CheckStep,
  description: KeyDescription,
  identity: string,
): string | undefined {
  const raw = (cause as CauseLike | undefined)?.message;
  const message = typeof raw === 'string' ? raw : '';
  const keyName = description.keyName ?? '<key>';
  const vaultHost = description.vaultUrl ? new URL(description.vaultUrl).hostname : '<vault>';
  // az: the object id when the vault named the caller, else the configured client id (az resolves it).
  const oid = /oid=([0-9A-Za-z-]{1,64})/.exec(identity)?.[1];
  const clientId = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/i.exec(identity)?.[0];
  const assignee = oid
    ? `--assignee-object-id ${oid} --assignee-principal-type ServicePrincipal`
    : `--assignee ${clientId ?? '<principal>'}`;
  if (codes.includes('ForbiddenByRbac')) {
    // Key Vault names the ARM resource it checked; a role on the key (or anything above it) grants it.
    const resource = rbacField(message, 'Resource');
    const action = rbacField(message, 'Action');
    const scope =
      resource && /\/keys\/[^/]+$/i.test(resource)
        ? resource
        : `${resource ?? `<vault ${vaultHost} resource id>`}/keys/${keyName}`;
    return (
      `${step} denied (403 Forbidden ForbiddenByRbac${action ? `, data action ${action}` : ''}): assign ` +
      `"${KEY_VAULT_ROLE}" on ${scope} to principal ${identity} ` +
      `(az role assignment create --role "${KEY_VAULT_ROLE}" ${assignee} --scope ${scope}); role assignments ` +
      'can take minutes to apply'
    );
  }
  const hsm = /^Not authorized to access (\S{1,256}) on '([^']{1,256})'/.exec(message);
  if (codes[0] === 'AccessDenied' && !codes.includes('Forbidden') && hsm) {
    const scope = `/keys/${keyName}`;
    const hsmName = vaultHost.split('.')[0];
    return (
      `${step} denied (403 AccessDenied, Managed HSM local RBAC, data action ${hsm[1]} on '${hsm[2]}'): assign ` +
      `"${MANAGED_HSM_ROLE}" (or "Managed HSM Crypto User") on ${scope} to principal ${identity} ` +
      `(az keyvault role assignment create --hsm-name ${hsmName} --role "${MANAGED_HSM_ROLE}" ` +
      `--scope ${scope} ${assignee})`
    );
  }
  return undefined;
}

/** The exit code and message for an error thrown during `step`. */
export function explain(
  err: unknown,
  step: CheckStep,
  keyId: string,
  description: KeyDescription,
): { exitCode: ExitCode; message: string } {
  if (!isSealboxError(err)) {
    const message = err instanceof Error ? err.message : String(err);
    return { exitCode: ExitCode.FAILURE, message: `${step} failed unexpectedly: ${message}` };
  }
  const cause = err.cause;
  const codes = vaultErrorCodes(cause);
  const statusCode = (cause as CauseLike | undefined)?.statusCode;
  const where = description.keyName
    ? `key ${description.keyName} in vault ${description.vaultUrl}`
    : `key ${description.id}`;
  switch (err.code) {
    case ErrorCode.PERMISSION_DENIED: {
      if (codes.includes('KeyOperationForbidden')) {
        return {
          exitCode: ExitCode.PERMISSION_DENIED,
          message: `${step} refused: key ${keyId} does not permit ${step}; add ${step} to the key's permitted operations (key_ops)`,
        };
      }
      if (
        statusCode === 403 &&
        !codes.includes('ForbiddenByFirewall') &&
        !codes.includes('ForbiddenByConnection')
      ) {
        const identity = callerOf(cause) ?? description.identity ?? 'the configured identity';
        const role = missingRole(cause, codes, step, description, identity);
        if (role) return { exitCode: ExitCode.PERMISSION_DENIED, message: role };
        return {
          exitCode: ExitCode.PERMISSION_DENIED,
          message:
            `${step} denied (${[statusCode, ...codes].join(' ')}): grant ${step} to identity ${identity} on ${where} ` +
            `(role "Key Vault Crypto Service Encryption User", or an access policy with keys/${step})`,
        };
      }
      return { exitCode: ExitCode.PERMISSION_DENIED, message: `${step} denied: ${err.message}` };
    }
    case ErrorCode.KEY_DISABLED: {
      const notInDate =
        codes.some((c) => c === 'KeyExpired' || c === 'KeyNotYetValid' || c === 'KeyNotActive') ||
        /expired|not (yet )?valid/.test(err.message);
      if (notInDate && !codes.includes('KeyDisabled')) {
        return {
          exitCode: ExitCode.KEY_NOT_IN_DATE,
          message: `${step} refused: key ${keyId} is expired or not yet valid; rotate (create a new version) or correct its activation (nbf) and expiry (exp) dates`,
        };
      }
      return {
        exitCode: ExitCode.KEY_DISABLED,
        message: `${step} refused: key version ${keyId} is disabled; enable the key version, or rotate to a new enabled version`,
      };
    }
    case ErrorCode.KEY_NOT_FOUND:
      return {
        exitCode: ExitCode.KEY_NOT_FOUND,
        message: description.keyName
          ? `${step}: key ${description.keyName} not found in vault ${description.vaultUrl} ` +
            `(${[statusCode, ...codes].filter((x) => x !== undefined).join(' ')}); check keyName and vaultUrl, ` +
            'or recover the key if it was soft-deleted'
          : `${step}: ${err.message}`,
      };
    case ErrorCode.VAULT_UNAVAILABLE:
    case ErrorCode.VAULT_THROTTLED:
      return {
        exitCode: ExitCode.VAULT_UNAVAILABLE,
        message: `${step}: vault ${description.vaultUrl ?? ''} unreachable: ${err.message}`,
      };
    default:
      return { exitCode: ExitCode.FAILURE, message: `${step} failed (${err.code}): ${err.message}` };
  }
}

/** Describes a configured key for messages, without any I/O. */
export function describeKey(key: Config['keys'][string]): KeyDescription {
  if (key.provider === 'local') return { id: `local key file ${key.file}` };
  const vaultUrl = key.vaultUrl.replace(/\/$/, '');
  return {
    id: `${vaultUrl}/keys/${key.keyName}`,
    vaultUrl,
    keyName: key.keyName,
    identity: describeCredential(key.credential),
  };
}

/** Who a credential config authenticates as, in words. */
export function describeCredential(credential: {
  readonly kind: string;
  readonly clientId?: string | undefined;
  readonly tokenFile?: string | undefined;
}): string {
  switch (credential.kind) {
    case 'static-token':
      return credential.tokenFile
        ? `of the static token in ${credential.tokenFile}`
        : 'of the static token (credential.token)';
    case 'managed-identity':
      return credential.clientId
        ? `managed identity ${credential.clientId}`
        : 'the system-assigned managed identity';
    case 'workload-identity':
      return `workload identity ${credential.clientId ?? '(AZURE_CLIENT_ID)'}`;
    default:
      return credential.clientId
        ? `${credential.clientId} (DefaultAzureCredential)`
        : 'that DefaultAzureCredential resolved (workload identity, managed identity or developer sign-in)';
  }
}

/** Builds the provider for one configured key (main.ts's buildProviders, one key at a time). */
export type ProviderFactory = (
  alias: string,
  config: Config,
) => { provider: KekProvider; close(): Promise<void> };

/** Checks every configured key concurrently; results in config order. */
export async function checkAll(config: Config, build: ProviderFactory): Promise<KeyCheck[]> {
  return Promise.all(
    Object.entries(config.keys).map(async ([alias, key]): Promise<KeyCheck> => {
      const description = describeKey(key);
      let built: ReturnType<ProviderFactory>;
      try {
        built = build(alias, config);
      } catch (err) {
        return {
          alias,
          ok: false,
          exitCode: ExitCode.USAGE,
          keyId: description.id,
          message: `cannot set up the key from its configuration: ${(err as Error).message}`,
        };
      }
      try {
        return await checkKey(alias, built.provider, description);
      } finally {
        await built.close().catch(() => {});
      }
    }),
  );
}

/** The report: one ✓/✗ line per key and a summary line. */
export function formatReport(checks: readonly KeyCheck[]): string {
  const lines = checks.map((c) => `${c.ok ? '✓' : '✗'} ${c.alias} (${c.keyId}): ${c.message}`);
  const failed = checks.filter((c) => !c.ok);
  const first = failed[0];
  lines.push(
    first
      ? `${failed.length} of ${checks.length} key(s) failed; exit code ${first.exitCode} ` +
          `(${EXIT_CODE_NAMES[first.exitCode] ?? 'failure'}) from the first failing key, "${first.alias}"`
      : `all ${checks.length} key(s) passed`,
  );
  return `${lines.join('\n')}\n`;
}

/** The exit code of a whole check: the first failing key's (in config order), or 0. */
export function checkExitCode(checks: readonly KeyCheck[]): ExitCode {
  return checks.find((c) => !c.ok)?.exitCode ?? ExitCode.OK;
}
