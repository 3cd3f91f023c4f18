/**
 * The one table from what a Key Vault / Managed HSM call threw to (a) the SealboxError code a caller
 * sees and (b) the verdict the key-state model decides from (errors.ts `Verdict`). Rows are tried in
 * order; the first match wins. Tests walk the table row by row (test/unit/kek/verdicts.test.ts) and
 * docs/SECURITY.md reproduces it.
 *
 * Sources for the shapes matched here:
 * - 403 inner codes: Key Vault answers `Forbidden` with inner error `KeyDisabled` for a disabled key
 *   version and `AccessDenied` / `ForbiddenByPolicy` / `ForbiddenByRbac` for missing permissions
 *   ("Azure Key Vault REST API error codes", learn.microsoft.com/azure/key-vault/general/rest-error-codes;
 *   "Troubleshooting Azure Key Vault access policy issues"); network rules answer `ForbiddenByFirewall`
 *   / `ForbiddenByConnection` ("Configure Azure Key Vault networking settings", troubleshooting
 *   section). `KeyExpired` / `KeyNotYetValid` / `KeyNotActive` are what the dev vault (and, by our
 *   reading, Key Vault) uses for date-window refusals of encrypt/wrap — inferred, see docs/devvault.md.
 * - Transient 403s: Azure documents them right after an access policy or role assignment is added
 *   (RBAC "can take up to 10 minutes to take effect", "Azure RBAC troubleshooting"), and when the
 *   permission model is switched. That is why a permission refusal is a *refusal*, confirmed before it
 *   revokes, and never an authoritative verdict.
 * - @azure/identity throws `CredentialUnavailableError` when a credential cannot even try (no managed
 *   identity endpoint, no federated token file) and `AuthenticationError` (with the token endpoint's
 *   HTTP status) when Entra ID answers badly (@azure/identity `errors.ts`). Neither is a statement by
 *   the vault about the key: both are outages.
 */
import { ErrorCode, SealboxError, type Verdict } from '../../errors';
import { CallAbortedError, DeadlineExceededError, TLS_VERIFY_ERROR_CODES } from '../retry';

/** The vault calls, as operation labels in messages and retry events. */
export type VaultOperation = 'getKey' | 'wrapKey' | 'unwrapKey';

/** Where a vault error happened, for the message. */
export interface VaultCallContext {
  readonly operation: VaultOperation;
  /** The (versioned, or for getKey of the current version unversioned) key id. */
  readonly keyId: string;
  /** The vault's host[:port]. */
  readonly vault: string;
}

/** The fields of the SDK's RestError (and @azure/identity errors) that the mapping reads. */
interface SdkErrorLike {
  readonly name?: unknown;
  readonly message?: unknown;
  readonly code?: unknown;
  readonly statusCode?: unknown;
  /** Key Vault's error body: `{ error: { code, message, innerError: { code, innerError? } } }`. */
  readonly details?: { readonly error?: ErrorBody };
}
interface ErrorBody {
  readonly code?: unknown;
  readonly innerError?: ErrorBody;
  /** The wire spelling, in case a body reaches us undeserialized. */
  readonly innererror?: ErrorBody;
}

/** A thrown value reduced to what the rows match on (never its free-text message, except the SDK's own checks). */
export interface VaultFailure {
  readonly err: unknown;
  /** Error class name: RestError, CredentialUnavailableError, AbortError… */
  readonly name: string;
  /** HTTP status, when the vault (or Entra ID) answered. */
  readonly status: number | undefined;
  /** The error's code, then Key Vault's error and inner-error codes, outermost first. */
  readonly codes: readonly string[];
  /** Node's error code for transport failures (ECONNREFUSED, ERR_TLS_…), or ''. */
  readonly nodeCode: string;
  readonly message: string;
}

/** One row of the table. */
export interface VerdictRow {
  /** What the row matches, as docs/SECURITY.md lists it. */
  readonly when: string;
  readonly matches: (f: VaultFailure, operation: VaultOperation) => boolean;
  readonly code: ErrorCode;
  readonly verdict: Verdict;
  /** The caller's message: what happened and what to do; never the vault's own text or key material. */
  readonly message: (c: MessageContext) => string;
}

interface MessageContext extends VaultCallContext {
  /** "wrapKey on https://…/keys/k/v" */
  readonly what: string;
  /** Status and codes, e.g. "403 Forbidden ForbiddenByRbac". */
  readonly detail: string;
  readonly failure: VaultFailure;
}

const PERMISSION_BY_OPERATION: Record<VaultOperation, string> = {
  getKey: 'get',
  wrapKey: 'wrapKey',
  unwrapKey: 'unwrapKey',
};

const has = (f: VaultFailure, ...codes: string[]) => codes.some((c) => f.codes.includes(c));
const isStatus = (f: VaultFailure, status: number) => f.status === status;
const identityError = (f: VaultFailure) =>
  f.name === 'AuthenticationError' || f.name === 'AuthenticationRequiredError';

/** The table. Order matters: the first matching row decides. */
export const VAULT_VERDICTS: readonly VerdictRow[] = [
  {
    when: 'the caller cancelled (its deadline or its client)',
    matches: (f) => f.err instanceof CallAbortedError,
    code: ErrorCode.CANCELLED,
    verdict: 'outage',
    message: (c) => `the call was cancelled while waiting for Key Vault (${c.what})`,
  },
  {
    when: 'retry deadline passed while the vault answered 429',
    matches: (f) => f.err instanceof DeadlineExceededError && statusOf(f.err.lastError) === 429,
    code: ErrorCode.VAULT_THROTTLED,
    verdict: 'outage',
    message: (c) =>
      `Key Vault kept throttling ${c.what} until the ${(c.failure.err as DeadlineExceededError).timeoutMs} ms ` +
      'deadline; reduce the request rate (enable the data-key cache) or raise the vault limit',
  },
  {
    when: 'retry deadline passed (network, 5xx, timeouts)',
    matches: (f) => f.err instanceof DeadlineExceededError,
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
    message: (c) => {
      const e = c.failure.err as DeadlineExceededError;
      const last = e.lastError;
      return (
        `Key Vault did not complete ${c.what} within ${e.timeoutMs} ms (${e.attempts} attempt(s)` +
        `${last === undefined ? '' : `, last: ${describeError(last)}`}); check the network path to ${c.vault}, ` +
        'or raise retry.timeoutMs'
      );
    },
  },
  {
    // @azure/identity processMultiTenantRequest throws CredentialUnavailableError "The current credential
    // is not configured to acquire tokens for tenant X" when the vault's challenge names a tenant the
    // credential's tenantId (or additionallyAllowedTenants) does not allow: a configuration error, not an
    // unreachable identity endpoint, and still no statement about the key.
    when: '@azure/identity CredentialUnavailableError "not configured to acquire tokens for tenant" (tenant mismatch)',
    matches: (f) =>
      f.name === 'CredentialUnavailableError' &&
      /not configured to acquire tokens for tenant/.test(f.message),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'outage',
    message: (c) => {
      const tenant = /for tenant ([0-9A-Za-z.-]{1,64})/.exec(c.failure.message)?.[1] ?? '(unknown)';
      return (
        `the vault's challenge for ${c.what} names tenant ${tenant}, which the credential is not configured ` +
        'for; set credential.tenantId (or AZURE_TENANT_ID) to the tenant the vault belongs to'
      );
    },
  },
  {
    when: '@azure/identity CredentialUnavailableError / AggregateAuthenticationError (no token could be had)',
    matches: (f) => f.name === 'CredentialUnavailableError' || f.name === 'AggregateAuthenticationError',
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
    message: (c) =>
      `no Azure credential could get a token for ${c.what} (${c.failure.name}); the identity endpoint may ` +
      'be down, or no workload identity / managed identity is configured for this pod or VM — this is ' +
      'not a verdict about the key, cached data keys keep serving until their TTL',
  },
  {
    // identity's handleMsalError (msal/utils.ts, 4.13) turns every other MSAL error — Entra ID's OAuth
    // refusals and network failures alike — into AuthenticationRequiredError with MSAL's message and no
    // status. MSAL's message starts with the OAuth error code, so Entra ID's refusals (RFC 6749 §5.2:
    // a federated assertion for the wrong audience is invalid_grant / AADSTS700212, an unknown tenant
    // invalid_request / AADSTS90002) are told apart from network_error, temporarily_unavailable and
    // server_error, which fall through to the unavailable row below.
    when: '@azure/identity AuthenticationRequiredError carrying an OAuth refusal (invalid_grant, invalid_client, …)',
    matches: (f) =>
      f.name === 'AuthenticationRequiredError' &&
      /\b(invalid_request|invalid_client|invalid_grant|unauthorized_client|unsupported_grant_type|invalid_scope)\b/.test(
        f.message,
      ),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'outage',
    message: (c) => {
      const oauth = /\b(invalid_\w+|unauthorized_client|unsupported_grant_type)\b/.exec(
        c.failure.message,
      )?.[1];
      return (
        `Microsoft Entra ID refused a token for ${c.what} (${c.failure.name} ${oauth}); check the ` +
        "identity's client id, tenant and federated credential (issuer, subject, audience api://AzureADTokenExchange)"
      );
    },
  },
  {
    when: '@azure/identity AuthenticationError without status, 429 or 5xx (Entra ID unavailable)',
    matches: (f) => identityError(f) && (f.status === undefined || f.status === 429 || f.status >= 500),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
    message: (c) =>
      `Microsoft Entra ID did not issue a token for ${c.what} (${c.failure.name}` +
      `${c.failure.status ? ` ${c.failure.status}` : ''}); retry later`,
  },
  {
    when: '@azure/identity AuthenticationError 4xx (Entra ID refused the token request)',
    matches: identityError,
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'outage',
    message: (c) =>
      `Microsoft Entra ID refused a token for ${c.what} (${c.failure.name} ${c.failure.status}); check the ` +
      "identity's client id, tenant and federated credential",
  },
  {
    when: '404 (KeyNotFound)',
    matches: (f) => isStatus(f, 404),
    code: ErrorCode.KEY_NOT_FOUND,
    verdict: 'not-found',
    message: (c) =>
      `Key Vault has no ${c.keyId} (${c.operation}: ${c.detail}); the key or version was deleted (recover it ` +
      'if soft-deleted), the ciphertext names a version that never existed, or the configured ' +
      'vaultUrl/keyName is wrong',
  },
  {
    when: '403 with inner code KeyDisabled',
    matches: (f) => isStatus(f, 403) && has(f, 'KeyDisabled'),
    code: ErrorCode.KEY_DISABLED,
    verdict: 'disabled',
    message: (c) =>
      `key ${c.keyId} is disabled (${c.operation}: ${c.detail}); enable the key version to use it`,
  },
  {
    when: '403 with inner code KeyExpired, KeyNotYetValid or KeyNotActive',
    matches: (f) => isStatus(f, 403) && has(f, 'KeyExpired', 'KeyNotYetValid', 'KeyNotActive'),
    code: ErrorCode.KEY_DISABLED,
    verdict: 'out-of-window',
    message: (c) =>
      `key ${c.keyId} is outside its activation/expiry dates for ${c.operation} (${c.detail}); rotate the ` +
      'key (create a new version) or correct its dates',
  },
  {
    when: '403 with inner code ForbiddenByFirewall or ForbiddenByConnection (network rules)',
    matches: (f) => isStatus(f, 403) && has(f, 'ForbiddenByFirewall', 'ForbiddenByConnection'),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
    message: (c) =>
      `the vault's network rules refused ${c.what} (${c.detail}); allow this network in the vault firewall ` +
      'or reach it through its private endpoint — not a verdict about the key',
  },
  {
    when: "403 with inner code KeyOperationForbidden (the key's key_ops lack the operation)",
    matches: (f) => isStatus(f, 403) && has(f, 'KeyOperationForbidden'),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'refused',
    message: (c) =>
      `key ${c.keyId} does not permit ${c.operation} (${c.detail}); add ${c.operation} to the key's permitted operations`,
  },
  {
    when: '403 otherwise (AccessDenied, ForbiddenByPolicy, ForbiddenByRbac, no inner code)',
    matches: (f) => isStatus(f, 403),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'refused',
    message: (c) => {
      const permission = PERMISSION_BY_OPERATION[c.operation];
      return (
        `the identity may not ${c.what} (${c.detail}); grant ${permission} on the key to the identity ` +
        '(role "Key Vault Crypto Service Encryption User" or "Managed HSM Crypto Service Encryption User", ' +
        `or an access policy with keys/${permission})`
      );
    },
  },
  {
    when: '401 (the vault did not accept the token)',
    matches: (f) => isStatus(f, 401),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'outage',
    message: (c) =>
      `Key Vault did not accept the identity's token for ${c.what} (${c.detail}); check the credential's ` +
      "tenant and that it is allowed to sign in to the vault's tenant",
  },
  {
    when: '429 on every attempt',
    matches: (f) => isStatus(f, 429),
    code: ErrorCode.VAULT_THROTTLED,
    verdict: 'outage',
    message: (c) =>
      `Key Vault throttled ${c.what} (${c.detail}) on every attempt; reduce the request rate (enable the ` +
      'data-key cache) or raise the vault limit',
  },
  {
    when: '408 or 5xx on every attempt',
    matches: (f) => f.status !== undefined && (f.status === 408 || f.status >= 500),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
    message: (c) =>
      `Key Vault failed ${c.what} (${c.detail}) on every attempt; no verdict about the key, retry later`,
  },
  {
    when: '400 on unwrapKey (the wrapped key does not unwrap)',
    matches: (f, operation) => isStatus(f, 400) && operation === 'unwrapKey',
    code: ErrorCode.CIPHERTEXT_CORRUPT,
    verdict: 'outage',
    message: (c) =>
      `Key Vault could not unwrap the data key under ${c.keyId} (${c.operation}: ${c.detail}): the wrapped ` +
      'key was modified or belongs to another key version',
  },
  {
    when: 'any other HTTP status',
    matches: (f) => f.status !== undefined,
    code: ErrorCode.INTERNAL,
    verdict: 'outage',
    message: (c) =>
      `Key Vault refused ${c.what} (${c.detail}); check that the key is an RSA key or a 256-bit oct-HSM key`,
  },
  {
    when: 'TLS verification failed',
    matches: (f) =>
      TLS_VERIFY_ERROR_CODES.has(f.nodeCode) ||
      f.nodeCode.startsWith('ERR_TLS_') ||
      f.nodeCode.startsWith('ERR_SSL_'),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
    message: (c) =>
      `TLS verification of the vault at ${c.vault} failed during ${c.what} (${c.failure.nodeCode}); if the vault ` +
      'uses a private CA (the dev vault), set caFile to that CA certificate (PEM)',
  },
  {
    when: 'the request timed out (AbortError, TimeoutError)',
    matches: (f) => f.name === 'AbortError' || f.name === 'TimeoutError',
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
    message: (c) => `the request for ${c.what} timed out; retry later`,
  },
  {
    when: 'no HTTP answer (RestError without status, ECONNREFUSED, ENOTFOUND…)',
    matches: (f) => f.name === 'RestError' || /^E[A-Z0-9_]+$/.test(f.nodeCode),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
    message: (c) =>
      `cannot reach Key Vault at ${c.vault} for ${c.what} (${c.failure.nodeCode || c.failure.name}); check DNS, ` +
      'network and proxy settings',
  },
  {
    // sealbox builds CryptographyClients that never check a cached copy of the key (provider.ts), so
    // these two rows only guard against an SDK that starts checking again.
    when: 'the SDK\'s own date check of a cached key ("expired at", "can\'t be used before")',
    matches: (f) => / expired at |can't be used before/.test(f.message),
    code: ErrorCode.KEY_DISABLED,
    verdict: 'outage',
    message: (c) =>
      `the Azure SDK refused ${c.what} from its cached copy of the key's dates; this is not a vault verdict`,
  },
  {
    when: 'the SDK\'s own key_ops check of a cached key ("Operation … is not supported on key")',
    matches: (f) => /^Operation \w+ is not supported on key/.test(f.message),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'outage',
    message: (c) =>
      `the Azure SDK refused ${c.what} from its cached copy of the key's permitted operations; this is not ` +
      'a vault verdict',
  },
  {
    when: 'anything else (a bug)',
    matches: () => true,
    code: ErrorCode.INTERNAL,
    verdict: 'outage',
    message: (c) => `unexpected failure during ${c.what} (${c.failure.name || typeof c.failure.err})`,
  },
];

/** Reduces a thrown value to the fields the table matches on. */
export function vaultFailure(err: unknown): VaultFailure {
  const e = (typeof err === 'object' && err !== null ? err : {}) as SdkErrorLike;
  return {
    err,
    name: typeof e.name === 'string' ? e.name : '',
    status: statusOf(err),
    codes: vaultErrorCodes(err),
    nodeCode: typeof e.code === 'string' ? e.code : '',
    message: typeof e.message === 'string' ? e.message : '',
  };
}

/** The first row that matches `err` (the last row matches everything). */
export function verdictRow(err: unknown, operation: VaultOperation): VerdictRow {
  const failure = vaultFailure(err);
  return VAULT_VERDICTS.find((row) => row.matches(failure, operation))!;
}

/**
 * Maps what a vault call threw to a SealboxError carrying the key id and the verdict. Messages name
 * the operation, the key id and what to do; they carry status and error codes but never the vault's
 * free-text message or key material. The original error stays as `cause` (for logs).
 */
export function mapVaultError(err: unknown, context: VaultCallContext): SealboxError {
  if (err instanceof SealboxError) return err;
  const failure = vaultFailure(err);
  const row = VAULT_VERDICTS.find((r) => r.matches(failure, context.operation))!;
  const detail = [failure.status, ...failure.codes].filter((x) => x !== undefined).join(' ');
  const message = row.message({
    ...context,
    what: `${context.operation} on ${context.keyId}`,
    detail,
    failure,
  });
  return new SealboxError(row.code, message, { cause: err, keyId: context.keyId, verdict: row.verdict });
}

function statusOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const status = (err as SdkErrorLike).statusCode;
  return typeof status === 'number' ? status : undefined;
}

/** The error's code, then Key Vault's error and inner-error codes, outermost first, deduplicated. */
export function vaultErrorCodes(err: unknown): string[] {
  const codes: string[] = [];
  if (typeof err !== 'object' || err === null) return codes;
  const e = err as SdkErrorLike;
  const add = (code: unknown) => {
    if (typeof code === 'string' && code !== '' && !codes.includes(code)) codes.push(code.slice(0, 64));
  };
  add(e.code);
  let body = e.details?.error;
  for (let depth = 0; body && depth < 4; depth++) {
    add(body.code);
    body = body.innerError ?? body.innererror;
  }
  return codes;
}

/** A short label for an error: status and codes, or name and code; never its message. */
export function describeError(err: unknown): string {
  const e = (typeof err === 'object' && err !== null ? err : {}) as SdkErrorLike;
  const status = statusOf(err);
  const parts = [status, ...vaultErrorCodes(e)].filter((x) => x !== undefined);
  if (parts.length > 0) return parts.join(' ');
  return typeof e.name === 'string' ? e.name : typeof err;
}
