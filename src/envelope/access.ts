/** The envelope service's view of access control: one question per key use. */
import type { KeyOperation } from '../config/config';

/**
 * Whether the caller of one call may use a key, asked before any vault call is made for it. The server
 * builds one per call from the access policy (server/access.ts); ALLOW_ALL when there is no caller.
 */
export interface KeyAccess {
  /** Throws ACCESS_DENIED unless the caller may `operation` under the key `alias`. */
  checkAlias(operation: KeyOperation, alias: string): void;
  /** The same for the key that owns `keyId` (read from a ciphertext header). */
  checkKeyId(operation: KeyOperation, keyId: string): void;
}

export const ALLOW_ALL: KeyAccess = Object.freeze({ checkAlias() {}, checkKeyId() {} });
