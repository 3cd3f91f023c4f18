import { ErrorCode, SealboxError } from '../errors';
import { utf8Text } from './utf8';

/** An encryption context: authenticated, unencrypted string pairs stored in the header. */
export type EncryptionContext = Readonly<Record<string, string>>;

export const MAX_CONTEXT_PAIRS = 64;
export const MAX_CONTEXT_BYTES = 8 * 1024;

/**
 * Canonical encoding (docs/FORMAT.md §Context): u16 pair count, then for each pair in ascending
 * byte order of the UTF-8 key: u16 key length, key, u16 value length, value. Keys are unique and
 * non-empty. One context has exactly one encoding, so the header MAC is over a unique byte string.
 */
export function encodeContext(context: EncryptionContext): Buffer {
  const entries = Object.entries(context);
  if (entries.length > MAX_CONTEXT_PAIRS) {
    throw new SealboxError(
      ErrorCode.CONTEXT_INVALID,
      `encryption context has ${entries.length} pairs; at most ${MAX_CONTEXT_PAIRS} are allowed`,
    );
  }
  const pairs = entries.map(([key, value]) => {
    if (key.length === 0)
      throw new SealboxError(ErrorCode.CONTEXT_INVALID, 'encryption context keys must not be empty');
    if (typeof value !== 'string' || !key.isWellFormed() || !value.isWellFormed()) {
      throw new SealboxError(
        ErrorCode.CONTEXT_INVALID,
        `encryption context key "${printable(key)}" must map a valid Unicode string to a valid Unicode string`,
      );
    }
    return [Buffer.from(key, 'utf8'), Buffer.from(value, 'utf8')] as const;
  });
  pairs.sort((a, b) => Buffer.compare(a[0], b[0]));
  let size = 2;
  for (const [k, v] of pairs) size += 4 + k.length + v.length;
  if (size > MAX_CONTEXT_BYTES) {
    throw new SealboxError(
      ErrorCode.CONTEXT_INVALID,
      `encryption context encodes to ${size} bytes; at most ${MAX_CONTEXT_BYTES} are allowed — keep large values out of the context`,
    );
  }
  const out = Buffer.allocUnsafe(size);
  let at = out.writeUInt16BE(pairs.length, 0);
  for (const [k, v] of pairs) {
    at = out.writeUInt16BE(k.length, at);
    at += k.copy(out, at);
    at = out.writeUInt16BE(v.length, at);
    at += v.copy(out, at);
  }
  return out;
}

/**
 * Parses a canonical context encoding. Throws CIPHERTEXT_MALFORMED for anything that is not the
 * canonical encoding of some context (wrong order, duplicate or empty keys, bad UTF-8, stray bytes).
 * Works on offsets into `bytes`: no view or closure per pair (DecryptBatch decodes one per item).
 */
export function decodeContext(bytes: Uint8Array): EncryptionContext {
  if (bytes.length < 2 || bytes.length > MAX_CONTEXT_BYTES)
    throw malformedContext(`${bytes.length} bytes is out of bounds`);
  const view = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const end = view.length;
  const count = view.readUInt16BE(0);
  if (count > MAX_CONTEXT_PAIRS) throw malformedContext(`${count} pairs exceed ${MAX_CONTEXT_PAIRS}`);
  const context: Record<string, string> = Object.create(null);
  let at = 2;
  let previousAt = -1;
  let previousEnd = -1;
  for (let i = 0; i < count; i++) {
    const keyAt = stringAt(view, at);
    const keyEnd = keyAt + view.readUInt16BE(keyAt - 2);
    const valueAt = stringAt(view, keyEnd);
    at = valueAt + view.readUInt16BE(valueAt - 2);
    if (keyEnd === keyAt) throw malformedContext('empty key');
    // Strictly ascending byte order: this key must compare after the one before it.
    if (previousAt >= 0 && view.compare(view, previousAt, previousEnd, keyAt, keyEnd) <= 0)
      throw malformedContext('keys are not in strictly ascending order');
    previousAt = keyAt;
    previousEnd = keyEnd;
    const key = utf8Text(view, keyAt, keyEnd);
    const value = utf8Text(view, valueAt, at);
    if (key === undefined || value === undefined) throw malformedContext('not valid UTF-8');
    context[key] = value;
  }
  if (at !== end) throw malformedContext(`${end - at} stray bytes after the last pair`);
  return { ...context };
}

/** Where the string whose u16 length is at `at` starts; throws if the length or the string runs past the end. */
function stringAt(view: Buffer, at: number): number {
  if (at + 2 > view.length) throw malformedContext('a length runs past the end');
  const start = at + 2;
  if (start + view.readUInt16BE(at) > view.length) throw malformedContext('a string runs past the end');
  return start;
}

function malformedContext(why: string): SealboxError {
  return new SealboxError(ErrorCode.CIPHERTEXT_MALFORMED, `header context is malformed: ${why}`);
}

/**
 * Checks that every expected pair is present with the same value. Names the first key that differs,
 * never a value: values may be sensitive.
 */
export function checkExpectedContext(actual: EncryptionContext, expected: EncryptionContext): void {
  for (const [key, value] of Object.entries(expected)) {
    if (!Object.hasOwn(actual, key)) {
      throw new SealboxError(
        ErrorCode.CONTEXT_MISMATCH,
        `encryption context has no key "${printable(key)}" that the caller expected; this ciphertext was sealed for another context`,
      );
    }
    if (actual[key] !== value) {
      throw new SealboxError(
        ErrorCode.CONTEXT_MISMATCH,
        `encryption context value for "${printable(key)}" differs from the expected value; this ciphertext was sealed for another context`,
      );
    }
  }
}

/** Shortens and escapes a caller-supplied string for an error message. */
function printable(s: string): string {
  const cut = s.length > 64 ? `${s.slice(0, 64)}…` : s;
  return JSON.stringify(cut).slice(1, -1);
}
