import { createCipheriv, createDecipheriv } from 'node:crypto';

/** AES-256-GCM key, nonce and tag sizes used throughout the format. */
export const KEY_BYTES = 32;
export const NONCE_BYTES = 12;
export const TAG_BYTES = 16;

/**
 * OpenSSL runs faster when fed moderate pieces: on the reference machine a 1 MiB chunk fed in
 * 64 KiB `update` calls encrypted about twice as fast as one 1 MiB call (bench/PERF-NOTES.md).
 */
const FEED_BYTES = 64 * 1024;

/**
 * Seals `plaintext` with AES-256-GCM and writes ciphertext ‖ tag into `out` at `offset`.
 * Returns the offset just past the tag. `out` must have room for plaintext.length + 16 bytes.
 */
export function gcmSealInto(
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  plaintext: Uint8Array,
  out: Buffer,
  offset: number,
): number {
  if (key.length !== KEY_BYTES) throw new RangeError(`AES-256-GCM key must be ${KEY_BYTES} bytes`);
  if (nonce.length !== NONCE_BYTES) throw new RangeError(`AES-GCM nonce must be ${NONCE_BYTES} bytes`);
  if (offset + plaintext.length + TAG_BYTES > out.length)
    throw new RangeError('output buffer too small for the ciphertext');
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  let at = offset;
  for (let i = 0; i < plaintext.length; i += FEED_BYTES) {
    const piece = cipher.update(plaintext.subarray(i, Math.min(i + FEED_BYTES, plaintext.length)));
    // Copy of payload bytes: Node 20's update always returns a new buffer (it has no form that writes
    // into a given one), and the transport needs the segment's records contiguous in one response, so
    // each piece is copied into `out` (often a reused buffer, src/util/recycler.ts). The pieces die young.
    out.set(piece, at);
    at += piece.length;
  }
  const rest = cipher.final();
  out.set(rest, at);
  at += rest.length;
  out.set(cipher.getAuthTag(), at);
  return at + TAG_BYTES;
}

/** Seals `plaintext` and returns a new buffer holding ciphertext ‖ tag. */
export function gcmSeal(key: Uint8Array, nonce: Uint8Array, aad: Uint8Array, plaintext: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(plaintext.length + TAG_BYTES);
  gcmSealInto(key, nonce, aad, plaintext, out, 0);
  return out;
}

/**
 * Opens ciphertext ‖ tag into `out` at `offset`. Returns the offset past the plaintext, or -1 when the
 * tag does not verify.
 *
 * Postcondition on failure: the bytes written into `out` are zeroed, so no unverified plaintext
 * survives in a buffer the caller might send.
 */
export function gcmOpenInto(
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  sealed: Uint8Array,
  out: Buffer,
  offset: number,
): number {
  if (key.length !== KEY_BYTES) throw new RangeError(`AES-256-GCM key must be ${KEY_BYTES} bytes`);
  if (nonce.length !== NONCE_BYTES) throw new RangeError(`AES-GCM nonce must be ${NONCE_BYTES} bytes`);
  if (sealed.length < TAG_BYTES) return -1;
  const bodyLength = sealed.length - TAG_BYTES;
  // Checked up front so a short buffer can never leave unverified plaintext half-written.
  if (offset + bodyLength > out.length) throw new RangeError('output buffer too small for the plaintext');
  const decipher = createDecipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  decipher.setAAD(aad);
  decipher.setAuthTag(sealed.subarray(bodyLength));
  let at = offset;
  for (let i = 0; i < bodyLength; i += FEED_BYTES) {
    const piece = decipher.update(sealed.subarray(i, Math.min(i + FEED_BYTES, bodyLength)));
    // Copy of payload bytes: as in gcmSealInto, update's output is always a new buffer.
    out.set(piece, at);
    at += piece.length;
  }
  try {
    const rest = decipher.final();
    out.set(rest, at);
    return at + rest.length;
  } catch {
    out.fill(0, offset, at);
    return -1;
  }
}

/** Opens ciphertext ‖ tag; returns the plaintext, or undefined when the tag does not verify. */
export function gcmOpen(
  key: Uint8Array,
  nonce: Uint8Array,
  aad: Uint8Array,
  sealed: Uint8Array,
): Buffer | undefined {
  const out = Buffer.alloc(Math.max(0, sealed.length - TAG_BYTES));
  const end = gcmOpenInto(key, nonce, aad, sealed, out, 0);
  return end < 0 ? undefined : out;
}
