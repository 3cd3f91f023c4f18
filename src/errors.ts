/**
 * Stable error codes. Every failure that reaches a caller is a SealboxError with one of these codes;
 * server/status.ts maps them to gRPC status codes in one table. Messages say what was wrong and what
 * to do, and never contain key material or plaintext.
 */
export const ErrorCode = {
  /** A request field is missing or malformed (not the ciphertext itself). */
  INVALID_ARGUMENT: 'INVALID_ARGUMENT',
  /** The encryption context is not acceptable (too many pairs, too large, not UTF-8). */
  CONTEXT_INVALID: 'CONTEXT_INVALID',
  /** The ciphertext's context does not contain the pairs the caller expected. */
  CONTEXT_MISMATCH: 'CONTEXT_MISMATCH',
  /** The ciphertext is not in a format sealbox reads (magic, version, suite, a field out of bounds). */
  CIPHERTEXT_MALFORMED: 'CIPHERTEXT_MALFORMED',
  /** A header or chunk failed authentication: wrong key, or the bytes were modified. */
  CIPHERTEXT_CORRUPT: 'CIPHERTEXT_CORRUPT',
  /** The ciphertext ends early: inside the header, inside a chunk, or before the final chunk. */
  CIPHERTEXT_TRUNCATED: 'CIPHERTEXT_TRUNCATED',
  /** No configured key has this alias, or no configured key owns this key id. */
  KEY_NOT_FOUND: 'KEY_NOT_FOUND',
  /** The key-encryption key (or this version of it) is disabled, expired, not yet valid or deleted. */
  KEY_DISABLED: 'KEY_DISABLED',
  /** The key provider refused the operation for sealbox's own identity (the vault's access policy). */
  PERMISSION_DENIED: 'PERMISSION_DENIED',
  /** sealbox's access policy does not grant the caller this operation, key alias or service. */
  ACCESS_DENIED: 'ACCESS_DENIED',
  /** The vault did not answer (network, 5xx, timeout): no verdict about the key. */
  VAULT_UNAVAILABLE: 'VAULT_UNAVAILABLE',
  /** The vault throttled the request. */
  VAULT_THROTTLED: 'VAULT_THROTTLED',
  /** A size or count limit was exceeded (unary size, chunk count, stream length). */
  LIMIT_EXCEEDED: 'LIMIT_EXCEEDED',
  /** The server is at capacity (worker queue full, too many open streams); retry with backoff. */
  OVERLOADED: 'OVERLOADED',
  /** The caller's identity is over one of its own limits (request rate, concurrent streams). */
  QUOTA_EXCEEDED: 'QUOTA_EXCEEDED',
  /** A stream made no progress in either direction for the configured idle timeout. */
  IDLE_TIMEOUT: 'IDLE_TIMEOUT',
  /** The call was cancelled by the client or by shutdown. */
  CANCELLED: 'CANCELLED',
  /** A bug or an unexpected failure; details are logged, not returned. */
  INTERNAL: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * What a failed KEK call says about the key version it named — the evidence the key-state model
 * (cache/key-states.ts) decides from. docs/SECURITY.md, "Verdict classes":
 * - authoritative: `disabled` (the vault says the version is disabled), `not-found` (404; revokes only a
 *   version seen valid before — for any other it is a forged or mistyped id), `out-of-window` (before
 *   nbf or after exp: no new wraps, unwraps still allowed, as Key Vault itself does);
 * - refusal: `refused` (403 naming a missing permission, or key_ops without the operation): revokes
 *   only once confirmed;
 * - `outage`: no verdict at all (credential and token failures, 401, firewall 403s, 429, 5xx,
 *   timeouts, cancellation, bugs): never revokes.
 */
export type Verdict = 'disabled' | 'not-found' | 'out-of-window' | 'refused' | 'outage';

/** The one error type sealbox raises on purpose. */
export class SealboxError extends Error {
  override readonly name = 'SealboxError';
  /** The key version a vault verdict was about (set by KEK providers; drives in-band revocation). */
  readonly keyId?: string;
  /** What the failure says about `keyId` (set by KEK providers); absent means no verdict. */
  readonly verdict?: Verdict;
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown; keyId?: string; verdict?: Verdict },
  ) {
    super(message, options);
    if (options?.keyId !== undefined) this.keyId = options.keyId;
    if (options?.verdict !== undefined) this.verdict = options.verdict;
  }
}

/** Throws a SealboxError with `code` unless `condition` holds (aws-encryption-sdk's `needs`). */
export function needs(condition: unknown, code: ErrorCode, message: string): asserts condition {
  if (!condition) throw new SealboxError(code, message);
}

/** True when `err` is a SealboxError, optionally with the given code. */
export function isSealboxError(err: unknown, code?: ErrorCode): err is SealboxError {
  return err instanceof SealboxError && (code === undefined || err.code === code);
}
