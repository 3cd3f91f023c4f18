/**
 * A key-encryption-key provider wraps and unwraps data keys under one configured key (all its
 * versions). The Azure Key Vault provider, the local-file provider and test fakes implement it.
 *
 * Every operation takes an optional `caller` last: who the vault call is made for, for the audit line
 * (kek/audit.ts). Only the auditing wrapper reads it; providers themselves may ignore it.
 */
import type { AuditCaller } from './audit';

/** A DEK wrapped under a specific key version. */
export interface WrapResult {
  /** The full versioned key id; it goes into the ciphertext header. */
  readonly keyId: string;
  /** The wrap algorithm's JOSE name (RSA-OAEP-256, A256KW). */
  readonly algorithm: string;
  readonly wrapped: Buffer;
}

/** What the provider last knew about a key version. */
export interface KeyStatus {
  readonly keyId: string;
  readonly enabled: boolean;
  readonly notBefore?: Date;
  readonly expiresOn?: Date;
  /** The versioned id new DEKs are wrapped under. */
  readonly latestKeyId: string;
}

export interface KekProvider {
  /** What kind of provider this is (for logs and metrics): "local", "azure". */
  readonly kind: string;
  /**
   * Which key this provider serves, e.g. `azure:myvault.vault.azure.net/keys/kek` or `local:dev`: every
   * key id it `owns` belongs to this one key. Two aliases may not share it, so each key id has exactly
   * one owning alias (kek/registry.ts).
   */
  readonly keyRef: string;
  /** Wraps `dek` under the key's current version. */
  wrap(dek: Uint8Array, signal?: AbortSignal, caller?: AuditCaller): Promise<WrapResult>;
  /**
   * Unwraps a DEK that this provider's key wrapped, with the algorithm the header names (a mismatch
   * with the key is CIPHERTEXT_MALFORMED). The caller owns (and zeroes) the result. Failures carry the
   * key id and a verdict (errors.ts `Verdict`) for the key-state model.
   */
  unwrap(
    keyId: string,
    algorithm: string,
    wrapped: Uint8Array,
    signal?: AbortSignal,
    caller?: AuditCaller,
  ): Promise<Buffer>;
  /**
   * The state of one key version. With `{ latest: false }` the provider does not ask the vault for the
   * current version just to fill `latestKeyId` (it reports the one it last knew): the key watcher reads
   * the current version itself, once per poll, and must not spend a second request on it.
   */
  status(
    keyId: string,
    signal?: AbortSignal,
    options?: { latest?: boolean },
    caller?: AuditCaller,
  ): Promise<KeyStatus>;
  /**
   * Asks the vault for the current version now (bypassing any cache) and returns its status; the key
   * watcher calls it every poll (and once at start) so rotations, re-enables and changed dates are seen
   * promptly, and so every alias has a health verdict.
   */
  refreshCurrentVersion(signal?: AbortSignal, caller?: AuditCaller): Promise<KeyStatus>;
  /** True when `keyId` names a version of this provider's key. Pure string check, no I/O. */
  owns(keyId: string): boolean;
  /** Releases clients and zeroes held key material. */
  close(): Promise<void>;
}
