import { createSecretKey, hkdfSync, type KeyObject } from 'node:crypto';

/**
 * A DEK as HKDF's input key: its bytes, or a secret KeyObject made from them once (`dekKeyObject`).
 *
 * Why a KeyObject: Node 20's hkdfSync turns a Buffer key into a new secret KeyObject on every call
 * (lib/internal/crypto/hkdf.js `prepareKey` → `createSecretKey`), a native copy of the key that lives
 * until the garbage collector frees it. A KeyObject made once per cached DEK saves that per message
 * (about 5 µs, a third of the derivation; bench/README.md "Unary per-call cost") and leaves one native
 * copy per DEK instead of one per message. Node clears a KeyObject's bytes when it frees them
 * (src/crypto/crypto_util.cc: `ByteSource::~ByteSource` calls `OPENSSL_clear_free`), but only then:
 * unlike the DEK's Buffer it cannot be zeroed on demand (docs/SECURITY.md).
 */
export type DekInput = Uint8Array | KeyObject;

/** The DEK as a KeyObject (a native copy; see DekInput). */
export function dekKeyObject(dek: Uint8Array): KeyObject {
  return createSecretKey(dek);
}

/** HKDF-SHA256 (RFC 5869). Returns `length` bytes. */
export function hkdfSha256(ikm: DekInput, salt: Uint8Array, info: Uint8Array, length: number): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, salt, info, length));
}

/** The keys and values one message derives from its DEK. Per message; zero them when the message ends. */
export interface MessageKeys {
  /** AES-256-GCM key for this message's chunks. */
  readonly encryptionKey: Buffer;
  /** HMAC-SHA256 key that authenticates this message's header. */
  readonly headerKey: Buffer;
  /** Key-commitment value stored in the header and checked before anything is decrypted. */
  readonly commitment: Buffer;
}

/** HKDF info for suite 0x0001; docs/FORMAT.md gives the same bytes. */
export const MESSAGE_KEYS_INFO = Buffer.concat([
  Buffer.from('sealbox/v1 message keys', 'ascii'),
  Buffer.from([0x00, 0x01]),
]);

/**
 * Derives a message's keys from its DEK, salted with the message's 32-byte random id.
 *
 * Why: the DEK is never used as the AES key. Each message gets its own AES key, so one cached DEK can
 * seal many messages without nonce reuse (nonces restart at chunk 0 for every message) and without
 * approaching AES-GCM's per-key data limits.
 */
export function deriveMessageKeys(dek: DekInput, messageId: Uint8Array): MessageKeys {
  const okm = hkdfSha256(dek, messageId, MESSAGE_KEYS_INFO, 96);
  return {
    encryptionKey: okm.subarray(0, 32),
    headerKey: okm.subarray(32, 64),
    commitment: okm.subarray(64, 96),
  };
}

/** Zeroes a message's keys (they share one buffer). */
export function zeroMessageKeys(keys: MessageKeys): void {
  keys.encryptionKey.fill(0);
  keys.headerKey.fill(0);
  keys.commitment.fill(0);
}
