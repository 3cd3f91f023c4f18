/**
 * The one table from sealbox error codes to gRPC status codes, and the conversion of any thrown
 * value into a status a caller can act on. Unexpected errors are logged in full and answered with
 * INTERNAL and a reference, never with their message (it might echo data).
 */
import { Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { ErrorCode, SealboxError } from '../errors';
import type { Logger } from '../log/logger';

export const ERROR_CODE_TRAILER = 'sealbox-error-code';

export const grpcStatusFor: Readonly<Record<ErrorCode, status>> = {
  INVALID_ARGUMENT: status.INVALID_ARGUMENT,
  CONTEXT_INVALID: status.INVALID_ARGUMENT,
  CONTEXT_MISMATCH: status.FAILED_PRECONDITION,
  CIPHERTEXT_MALFORMED: status.INVALID_ARGUMENT,
  CIPHERTEXT_CORRUPT: status.DATA_LOSS,
  CIPHERTEXT_TRUNCATED: status.DATA_LOSS,
  KEY_NOT_FOUND: status.NOT_FOUND,
  KEY_DISABLED: status.FAILED_PRECONDITION,
  PERMISSION_DENIED: status.PERMISSION_DENIED,
  ACCESS_DENIED: status.PERMISSION_DENIED,
  VAULT_UNAVAILABLE: status.UNAVAILABLE,
  // Key Vault throttling is a quota: the caller should slow down, not fail over (as for an outage).
  VAULT_THROTTLED: status.RESOURCE_EXHAUSTED,
  LIMIT_EXCEEDED: status.RESOURCE_EXHAUSTED,
  OVERLOADED: status.RESOURCE_EXHAUSTED,
  QUOTA_EXCEEDED: status.RESOURCE_EXHAUSTED,
  IDLE_TIMEOUT: status.DEADLINE_EXCEEDED,
  CANCELLED: status.CANCELLED,
  INTERNAL: status.INTERNAL,
};

let internalErrors = 0;

/** Converts a thrown value into a gRPC error with the stable code in a trailer. */
export function toServiceError(err: unknown, log: Logger, method: string): Partial<ServiceError> {
  const metadata = new Metadata();
  if (err instanceof SealboxError) {
    metadata.set(ERROR_CODE_TRAILER, err.code);
    if (err.code === ErrorCode.INTERNAL) log.error({ err, method }, 'internal error');
    else log.debug({ code: err.code, method, message: err.message }, 'call failed');
    return { code: grpcStatusFor[err.code], details: err.message, metadata };
  }
  const reference = `E${Date.now().toString(36)}-${(++internalErrors).toString(36)}`;
  log.error({ err, method, reference }, 'unexpected error');
  metadata.set(ERROR_CODE_TRAILER, ErrorCode.INTERNAL);
  return {
    code: status.INTERNAL,
    details: `internal error (reference ${reference}); see sealbox logs`,
    metadata,
  };
}
