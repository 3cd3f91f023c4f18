import { createCipheriv, createDecipheriv } from 'node:crypto';

/** RFC 3394 default initial value. */
const DEFAULT_IV = Buffer.from('A6A6A6A6A6A6A6A6', 'hex');

function cipherName(kek: Uint8Array): string {
  switch (kek.length) {
    case 16:
      return 'id-aes128-wrap';
    case 24:
      return 'id-aes192-wrap';
    case 32:
      return 'id-aes256-wrap';
    default:
      throw new RangeError('AES key wrap needs a 16, 24 or 32-byte key-encryption key');
  }
}

/** AES key wrap (RFC 3394; JOSE A128KW/A192KW/A256KW). Key data must be a multiple of 8 bytes, ≥ 16. */
export function aesKeyWrap(kek: Uint8Array, keyData: Uint8Array): Buffer {
  if (keyData.length < 16 || keyData.length % 8 !== 0) {
    throw new RangeError('AES key wrap input must be at least 16 bytes and a multiple of 8');
  }
  const cipher = createCipheriv(cipherName(kek), kek, DEFAULT_IV);
  return Buffer.concat([cipher.update(keyData), cipher.final()]);
}

/**
 * AES key unwrap (RFC 3394). Returns undefined when the integrity check fails or the input length is
 * impossible; throws RangeError for a KEK that is not 16, 24 or 32 bytes (a configuration bug).
 */
export function aesKeyUnwrap(kek: Uint8Array, wrapped: Uint8Array): Buffer | undefined {
  if (wrapped.length < 24 || wrapped.length % 8 !== 0) return undefined;
  const decipher = createDecipheriv(cipherName(kek), kek, DEFAULT_IV);
  let head: Buffer | undefined;
  let tail: Buffer | undefined;
  try {
    head = decipher.update(wrapped);
    tail = decipher.final();
    // One buffer of its own (not a slice of Node's shared pool) that the caller zeroes.
    const out = Buffer.allocUnsafeSlow(head.length + tail.length);
    head.copy(out, 0);
    tail.copy(out, head.length);
    return out;
  } catch {
    return undefined;
  } finally {
    /* Postcondition: no temporary copy of the key data outlives this call. */
    head?.fill(0);
    tail?.fill(0);
  }
}
