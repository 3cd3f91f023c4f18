/**
 * A key-encryption-key provider wraps and unwraps data keys under one configured key (all its
 * versions). The Azure Key Vault provider, the local-file provider and test fakes implement it.
 */

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
  /** Wraps `dek` under the key's current version. */
  wrap(dek: Uint8Array, signal?: AbortSignal): Promise<WrapResult>;
  /** Unwraps a DEK that this provider's key wrapped. The caller owns (and zeroes) the result. */
  unwrap(keyId: string, algorithm: string, wrapped: Uint8Array, signal?: AbortSignal): Promise<Buffer>;
  /** The state of one key version. */
  status(keyId: string, signal?: AbortSignal): Promise<KeyStatus>;
  /**
   * Asks the vault for the current version now (bypassing any cache) and returns its status; the key
   * watcher calls it every poll so rotations and re-enables are seen promptly. Optional.
   */
  refreshCurrentVersion?(signal?: AbortSignal): Promise<KeyStatus>;
  /** True when `keyId` names a version of this provider's key. Pure string check, no I/O. */
  owns(keyId: string): boolean;
  /** Releases clients and zeroes held key material. */
  close(): Promise<void>;
}
