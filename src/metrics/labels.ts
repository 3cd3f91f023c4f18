/**
 * The bounded label vocabularies of sealbox's metrics, and the pure functions that map what the rest
 * of sealbox reports (gRPC status numbers, error codes, free-text revocation reasons, cache eviction
 * reasons, key states) onto them. Every label value a metric can carry comes from a list here or from
 * configuration (key aliases) or the server's own method table; anything unexpected collapses into
 * one fallback value, so no input can grow a series count. Never an error message.
 */
import { ErrorCode } from '../errors';
import type { VaultOperation } from '../kek/azure';
import type { RetryReason } from '../kek/retry';
import type { KeyState } from '../kek/watcher';

/** Compile-time check that a label list names every value of the type it mirrors, and no other. */
type Mirrors<List extends readonly string[], T extends string> = [T] extends [List[number]]
  ? [List[number]] extends [T]
    ? true
    : never
  : never;

/** gRPC status names indexed by code (grpc-js `status`), the values of the `code` label. */
export const GRPC_CODES = [
  'OK',
  'CANCELLED',
  'UNKNOWN',
  'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED',
  'FAILED_PRECONDITION',
  'ABORTED',
  'OUT_OF_RANGE',
  'UNIMPLEMENTED',
  'INTERNAL',
  'UNAVAILABLE',
  'DATA_LOSS',
  'UNAUTHENTICATED',
] as const;
export type GrpcCodeName = (typeof GRPC_CODES)[number];

/** The `code` label for a gRPC status number; out-of-range numbers count as UNKNOWN. */
export function grpcCodeName(code: number): GrpcCodeName {
  return GRPC_CODES[code] ?? 'UNKNOWN';
}

const ERROR_CODES: ReadonlySet<string> = new Set(Object.values(ErrorCode));

/**
 * The `error_code` label: sealbox's stable error code from the status trailer when it is one of
 * ErrorCode's values, "none" when the status carried none (grpc-js's own errors), "other" otherwise.
 */
export function errorCodeLabel(value: unknown): string {
  if (value === undefined) return 'none';
  return typeof value === 'string' && ERROR_CODES.has(value) ? value : 'other';
}

/** Vault operations (src/kek/azure.ts VaultOperation). */
export const VAULT_OPERATIONS = ['getKey', 'wrapKey', 'unwrapKey'] as const;
export type VaultOperationLabel = (typeof VAULT_OPERATIONS)[number] | 'other';
const vaultOperationsMirrored: Mirrors<typeof VAULT_OPERATIONS, VaultOperation> = true;

export function vaultOperationLabel(operation: string): VaultOperationLabel {
  return (VAULT_OPERATIONS as readonly string[]).includes(operation)
    ? (operation as VaultOperationLabel)
    : 'other';
}

/** How a vault call ended, after all its attempts. */
export const VAULT_OUTCOMES = [
  'success',
  'throttled',
  'unavailable',
  'denied',
  'not_found',
  'disabled',
  'error',
] as const;
export type VaultOutcome = (typeof VAULT_OUTCOMES)[number];

/**
 * The outcome label for a vault call that failed with `code` (undefined: it succeeded). "error" covers
 * everything that is not a verdict about the key or the vault's availability: a cancelled call, a
 * wrapped key the vault could not unwrap (CIPHERTEXT_CORRUPT), an unexpected answer (INTERNAL).
 */
export function vaultOutcome(code: ErrorCode | undefined): VaultOutcome {
  switch (code) {
    case undefined:
      return 'success';
    case ErrorCode.VAULT_THROTTLED:
      return 'throttled';
    case ErrorCode.VAULT_UNAVAILABLE:
      return 'unavailable';
    case ErrorCode.PERMISSION_DENIED:
      return 'denied';
    case ErrorCode.KEY_NOT_FOUND:
      return 'not_found';
    case ErrorCode.KEY_DISABLED:
      return 'disabled';
    default:
      return 'error';
  }
}

/** Why the retry layer retried an attempt (src/kek/retry.ts RetryReason). */
export const RETRY_REASONS = ['throttled', 'server-error', 'timeout', 'network'] as const;
const retryReasonsMirrored: Mirrors<typeof RETRY_REASONS, RetryReason> = true;

export function retryReasonLabel(reason: string): string {
  return (RETRY_REASONS as readonly string[]).includes(reason) ? reason : 'other';
}

/**
 * Why a key version was revoked: a watcher verdict (disabled, expired, not_yet_valid, deleted,
 * forbidden), a vault refusal seen on a wrap or unwrap (in_band), or an operator's RevokeKey (admin).
 * "other" is a fallback the tests show no current reason text reaches.
 */
export const REVOCATION_REASONS = [
  'disabled',
  'expired',
  'not_yet_valid',
  'deleted',
  'forbidden',
  'in_band',
  'admin',
  'other',
] as const;
export type RevocationReason = (typeof REVOCATION_REASONS)[number];

/**
 * Maps the cache's free-text revocation reason (CacheHooks.onRevoke) to its label. The texts come from
 * the key watcher (src/kek/watcher.ts REASONS) and the cache's in-band path ("the vault refused it
 * (CODE)"); test/unit/metrics/labels.test.ts runs both producers so a reworded reason fails there,
 * not silently here.
 */
export function revocationReason(text: string): RevocationReason {
  if (text.startsWith('the vault refused it')) return 'in_band';
  if (/not valid yet|not yet valid/.test(text)) return 'not_yet_valid';
  if (/expired/.test(text)) return 'expired';
  if (/disabled/.test(text)) return 'disabled';
  if (/deleted|\(404\)/.test(text)) return 'deleted';
  if (/lost access|\(403\)/.test(text)) return 'forbidden';
  return 'other';
}

/** Why the DEK cache dropped a DEK (CacheStats.evictions keys). */
export const EVICTION_REASONS = [
  'retired',
  'expire',
  'evict',
  'flush',
  'invalidate',
  'revoked',
  'other',
] as const;

export function evictionReasonLabel(reason: string): string {
  return (EVICTION_REASONS as readonly string[]).includes(reason) ? reason : 'other';
}

/** Key states (src/kek/watcher.ts KeyState), with "-" as "_"; "unknown" also means "not checked yet". */
export const KEY_STATES = [
  'enabled',
  'disabled',
  'expired',
  'not_yet_valid',
  'deleted',
  'forbidden',
  'unknown',
] as const;
export type KeyStateLabel = (typeof KEY_STATES)[number];
type Underscored<S extends string> = S extends `${infer A}-${infer B}` ? `${A}_${Underscored<B>}` : S;
const keyStatesMirrored: Mirrors<typeof KEY_STATES, Underscored<KeyState>> = true;
void [vaultOperationsMirrored, retryReasonsMirrored, keyStatesMirrored];

export function keyStateLabel(state: string | undefined): KeyStateLabel {
  if (state === undefined) return 'unknown';
  const label = state.replaceAll('-', '_');
  return (KEY_STATES as readonly string[]).includes(label) ? (label as KeyStateLabel) : 'unknown';
}

/** Splits a gRPC method path ("/sealbox.v1.Envelope/Encrypt") into service and method labels. */
export function methodLabels(path: string): { service: string; method: string } {
  const match = /^\/([A-Za-z0-9_.]{1,128})\/([A-Za-z0-9_]{1,128})$/.exec(path);
  return match ? { service: match[1]!, method: match[2]! } : { service: 'unknown', method: 'unknown' };
}
