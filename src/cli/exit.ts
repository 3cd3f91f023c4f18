/**
 * The CLI's exit codes: one per failure class, stable so that scripts and init containers can act on
 * them. `sealbox --help` prints EXIT_CODES_HELP; keep the two in step.
 */
import { ErrorCode } from '../errors';

/** Process exit codes of every sealbox command. */
export const ExitCode = {
  OK: 0,
  /** Anything not covered below: an unexpected error, an I/O error, a failed wrap/unwrap round trip. */
  FAILURE: 1,
  /** Usage or configuration: unknown command or flag, bad flag value, invalid or unreadable config. */
  USAGE: 2,
  /** The vault (or sidecar) refused the identity: missing permission, operation not permitted on the key. */
  PERMISSION_DENIED: 3,
  /** The key version is disabled. */
  KEY_DISABLED: 4,
  /** The key version is expired or not yet valid (exp / nbf). */
  KEY_NOT_IN_DATE: 5,
  /** The key (or the alias) does not exist. */
  KEY_NOT_FOUND: 6,
  /** The vault did not answer (network, TLS, 5xx, timeouts, throttling). */
  VAULT_UNAVAILABLE: 7,
  /** decrypt: the ciphertext was rejected (corrupt, truncated, malformed, or its context did not match). */
  CIPHERTEXT_REJECTED: 8,
  /** encrypt/decrypt: no sealbox answered at --target. */
  SIDECAR_UNAVAILABLE: 9,
  /** Interrupted by SIGINT / SIGTERM (128 + signal number, as shells report it). */
  SIGINT: 130,
  SIGTERM: 143,
} as const;

export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

/** The exit-code table as printed in help texts. */
export const EXIT_CODES_HELP = `Exit codes:
  0    success (check: every key passed)
  1    other failure (unexpected error, I/O error, wrap/unwrap round trip mismatch)
  2    usage or configuration error (unknown command or flag, invalid or unreadable config)
  3    permission denied (grant the named permission to the identity)
  4    key version disabled
  5    key version expired or not yet valid
  6    key not found (vault key, or no such alias in the sidecar)
  7    vault unreachable (network, TLS, 5xx, timeout, throttling)
  8    decrypt: ciphertext rejected (corrupt, truncated, malformed, context mismatch)
  9    encrypt/decrypt: no sealbox answering at --target
  130  interrupted (SIGINT); 143 terminated (SIGTERM)
When several keys fail, check exits with the code of the first failing key in config order.`;

/** A command-line mistake: printed with a pointer to --help, exit code 2. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/** Short human names of the failure classes, for summaries. */
export const EXIT_CODE_NAMES: Readonly<Record<number, string>> = {
  [ExitCode.OK]: 'ok',
  [ExitCode.FAILURE]: 'failure',
  [ExitCode.USAGE]: 'configuration error',
  [ExitCode.PERMISSION_DENIED]: 'permission denied',
  [ExitCode.KEY_DISABLED]: 'key disabled',
  [ExitCode.KEY_NOT_IN_DATE]: 'key expired or not yet valid',
  [ExitCode.KEY_NOT_FOUND]: 'key not found',
  [ExitCode.VAULT_UNAVAILABLE]: 'vault unreachable',
  [ExitCode.CIPHERTEXT_REJECTED]: 'ciphertext rejected',
  [ExitCode.SIDECAR_UNAVAILABLE]: 'sidecar unreachable',
};

/**
 * The exit code for a sealbox error code (from a provider, or the `sealbox-error-code` trailer of a
 * failed call). KEY_DISABLED covers expired and not-yet-valid versions too; `expired` tells them apart
 * when the caller knows.
 */
export function exitCodeFor(code: string | undefined, expired = false): ExitCode {
  switch (code) {
    case ErrorCode.PERMISSION_DENIED:
    case ErrorCode.ACCESS_DENIED:
      return ExitCode.PERMISSION_DENIED;
    case ErrorCode.KEY_DISABLED:
      return expired ? ExitCode.KEY_NOT_IN_DATE : ExitCode.KEY_DISABLED;
    case ErrorCode.KEY_NOT_FOUND:
      return ExitCode.KEY_NOT_FOUND;
    case ErrorCode.VAULT_UNAVAILABLE:
    case ErrorCode.VAULT_THROTTLED:
      return ExitCode.VAULT_UNAVAILABLE;
    case ErrorCode.CIPHERTEXT_CORRUPT:
    case ErrorCode.CIPHERTEXT_TRUNCATED:
    case ErrorCode.CIPHERTEXT_MALFORMED:
    case ErrorCode.CONTEXT_MISMATCH:
      return ExitCode.CIPHERTEXT_REJECTED;
    case ErrorCode.INVALID_ARGUMENT:
    case ErrorCode.CONTEXT_INVALID:
      return ExitCode.USAGE;
    default:
      return ExitCode.FAILURE;
  }
}
