/**
 * The sealbox ciphertext header, format version 1 (docs/FORMAT.md is the normative description).
 *
 * All integers are unsigned big-endian.
 *
 *   offset  size  field
 *   0       3     magic "SBX" (0x53 0x42 0x58)
 *   3       1     format version = 0x01
 *   4       2     suite id = 0x0001 (AES-256-GCM chunks, HKDF-SHA256 message keys, HMAC-SHA256 header tag,
 *                 key commitment)
 *   6       32    message id (random)
 *   38      4     chunk size C: plaintext bytes per chunk, 4096 ≤ C ≤ 4194304
 *   42      2     context length Lc ≤ 8192
 *   44      Lc    encryption context, canonical encoding (context.ts)
 *   …       32    key commitment (HKDF output, kdf.ts)
 *   …       2     key id length Lk, 1 ≤ Lk ≤ 1024
 *   …       Lk    KEK key id, UTF-8: the full versioned id of the key that wrapped the DEK
 *   …       1     wrap algorithm length La, 1 ≤ La ≤ 32
 *   …       La    wrap algorithm, ASCII (e.g. "RSA-OAEP-256", "A256KW")
 *   …       2     wrapped DEK length Lw, 1 ≤ Lw ≤ 1024
 *   …       Lw    wrapped DEK
 *   …       32    header tag: HMAC-SHA256(header key, every header byte before the tag)
 *
 * The tag authenticates the whole header. The key id, wrap algorithm and wrapped DEK are not bound
 * into the chunks' AAD, so Rewrap can replace them (and recompute the tag with the same DEK) without
 * touching the body.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { ErrorCode, SealboxError } from '../errors';
import { decodeContext, type EncryptionContext, MAX_CONTEXT_BYTES } from './context';
import type { MessageKeys } from './kdf';
import { utf8Text } from './utf8';

export const MAGIC = Buffer.from('SBX', 'ascii');
export const FORMAT_VERSION = 1;
export const SUITE_AES256GCM_HKDF_HMAC_COMMIT = 0x0001;

export const MESSAGE_ID_BYTES = 32;
export const COMMITMENT_BYTES = 32;
export const HEADER_TAG_BYTES = 32;
export const MIN_CHUNK_SIZE = 4 * 1024;
export const MAX_CHUNK_SIZE = 4 * 1024 * 1024;
export const DEFAULT_CHUNK_SIZE = 64 * 1024;
export const MAX_KEY_ID_BYTES = 1024;
export const MAX_WRAP_ALG_BYTES = 32;
export const MAX_WRAPPED_DEK_BYTES = 1024;
/** Chunk indexes are 32-bit: a message has at most 2³² chunks. */
export const MAX_CHUNKS = 2 ** 32;
/** Upper bound on any header; by construction a v1 header is at most about 10 KiB. */
export const MAX_HEADER_BYTES = 64 * 1024;

/** A parsed, not yet verified header. */
export interface Header {
  readonly messageId: Buffer;
  readonly chunkSize: number;
  readonly context: EncryptionContext;
  readonly commitment: Buffer;
  readonly keyId: string;
  readonly wrapAlgorithm: string;
  readonly wrappedDek: Buffer;
  readonly tag: Buffer;
  /** The bytes the tag covers (every header byte before it). */
  readonly authenticated: Buffer;
  /** Total header length in bytes; the first chunk starts here. */
  readonly length: number;
}

/** What the encrypting side knows before it builds a header. */
export interface HeaderFields {
  readonly messageId: Uint8Array;
  readonly chunkSize: number;
  readonly contextBytes: Uint8Array;
  readonly keyId: string;
  readonly wrapAlgorithm: string;
  readonly wrappedDek: Uint8Array;
}

/** Checks a chunk size against the format's bounds; used for requests and for parsed headers. */
export function isValidChunkSize(size: number): boolean {
  return Number.isInteger(size) && size >= MIN_CHUNK_SIZE && size <= MAX_CHUNK_SIZE;
}

/** A header's total size and the encoded lengths of its text fields (headerLayout). */
export interface HeaderLayout {
  readonly size: number;
  /** UTF-8 bytes of the key id. */
  readonly keyIdLength: number;
  /** ASCII bytes of the wrap algorithm (one per UTF-16 unit, as Buffer's 'ascii' encodes). */
  readonly algLength: number;
}

/** Checks the fields against the format's bounds and returns the header's size. Throws RangeError. */
export function headerLayout(fields: HeaderFields): HeaderLayout {
  const keyIdLength = Buffer.byteLength(fields.keyId, 'utf8');
  const algLength = fields.wrapAlgorithm.length;
  if (fields.messageId.length !== MESSAGE_ID_BYTES) throw new RangeError('message id must be 32 bytes');
  if (!isValidChunkSize(fields.chunkSize)) throw new RangeError('chunk size out of bounds');
  if (fields.contextBytes.length > MAX_CONTEXT_BYTES) throw new RangeError('context too large');
  if (keyIdLength < 1 || keyIdLength > MAX_KEY_ID_BYTES) throw new RangeError('key id length out of bounds');
  if (algLength < 1 || algLength > MAX_WRAP_ALG_BYTES)
    throw new RangeError('wrap algorithm length out of bounds');
  if (fields.wrappedDek.length < 1 || fields.wrappedDek.length > MAX_WRAPPED_DEK_BYTES) {
    throw new RangeError('wrapped DEK length out of bounds');
  }
  const size =
    44 +
    fields.contextBytes.length +
    COMMITMENT_BYTES +
    2 +
    keyIdLength +
    1 +
    algLength +
    2 +
    fields.wrappedDek.length +
    HEADER_TAG_BYTES;
  return { size, keyIdLength, algLength };
}

/**
 * Writes the tagged header into `out[0, layout.size)` (every byte of it; `out` may be uninitialized)
 * and returns its size. For a caller that sealed the body after `layout.size` bytes of headroom, so
 * header and body share one buffer without a copy (EncryptBatch).
 */
export function writeHeader(
  fields: HeaderFields,
  keys: MessageKeys,
  out: Buffer,
  layout: HeaderLayout = headerLayout(fields),
): number {
  if (out.length < layout.size) throw new RangeError('output buffer too small for the header');
  const { keyIdLength, algLength } = layout;
  let at = MAGIC.copy(out, 0);
  at = out.writeUInt8(FORMAT_VERSION, at);
  at = out.writeUInt16BE(SUITE_AES256GCM_HKDF_HMAC_COMMIT, at);
  out.set(fields.messageId, at);
  at += MESSAGE_ID_BYTES;
  at = out.writeUInt32BE(fields.chunkSize, at);
  at = out.writeUInt16BE(fields.contextBytes.length, at);
  out.set(fields.contextBytes, at);
  at += fields.contextBytes.length;
  at += keys.commitment.copy(out, at);
  // The text fields are encoded straight into `out`, no intermediate buffers.
  at = out.writeUInt16BE(keyIdLength, at);
  at += out.write(fields.keyId, at, keyIdLength, 'utf8');
  at = out.writeUInt8(algLength, at);
  at += out.write(fields.wrapAlgorithm, at, algLength, 'ascii');
  at = out.writeUInt16BE(fields.wrappedDek.length, at);
  out.set(fields.wrappedDek, at);
  at += fields.wrappedDek.length;
  headerTag(keys.headerKey, out.subarray(0, at)).copy(out, at);
  return at + HEADER_TAG_BYTES;
}

/** Builds and tags a header in a buffer of its own. Precondition: fields are within the format's bounds (checked here). */
export function buildHeader(fields: HeaderFields, keys: MessageKeys): Buffer {
  const layout = headerLayout(fields);
  const out = Buffer.alloc(layout.size);
  writeHeader(fields, keys, out, layout);
  return out;
}

/** How parseHeader may save work; without options it copies every field and decodes every text. */
export interface ParseOptions {
  /**
   * Return views of `bytes` for the binary fields instead of copies. Only for a caller that keeps
   * `bytes` alive and unchanged for as long as it uses the header (DecryptBatch: an item inside its
   * request). A stream reader's bytes are reused, so it keeps the default: copies, which also never
   * pin a large buffer.
   */
  readonly views?: boolean;
  /**
   * A header parsed before (DecryptBatch: the previous item). Where this header's context, key id or
   * wrap algorithm bytes equal that header's, its decoded value is reused instead of decoding the
   * same bytes again; anything else is decoded and checked as usual.
   */
  readonly previous?: Header;
}

/**
 * Parses a header from the start of `bytes`. Returns undefined when `bytes` ends before the header
 * does (a stream reader waits for more); throws CIPHERTEXT_MALFORMED as soon as any field is out of
 * bounds. Every length is checked against its bound before it is used, so nothing is allocated or
 * awaited on the say-so of an unchecked length.
 */
export function parseHeader(bytes: Buffer, options?: ParseOptions): Header | undefined {
  const bad = (why: string) =>
    new SealboxError(ErrorCode.CIPHERTEXT_MALFORMED, `ciphertext header is malformed: ${why}`);
  const have = bytes.length;
  // Magic, version and suite are checked byte by byte so garbage fails on its first bytes.
  for (let i = 0; i < MAGIC.length && i < have; i++) {
    if (bytes[i] !== MAGIC[i])
      throw bad('it does not start with the sealbox magic "SBX" — is this a sealbox ciphertext?');
  }
  if (have < 4) return undefined;
  if (bytes[3] !== FORMAT_VERSION) {
    throw new SealboxError(
      ErrorCode.CIPHERTEXT_MALFORMED,
      `ciphertext format version ${bytes[3]} is not supported by this sealbox (it reads version ${FORMAT_VERSION}); upgrade sealbox`,
    );
  }
  if (have < 6) return undefined;
  const suite = bytes.readUInt16BE(4);
  if (suite !== SUITE_AES256GCM_HKDF_HMAC_COMMIT)
    throw bad(`unknown suite id 0x${suite.toString(16).padStart(4, '0')}`);
  if (have < 44) return undefined;
  const chunkSize = bytes.readUInt32BE(38);
  if (!isValidChunkSize(chunkSize))
    throw bad(`chunk size ${chunkSize} is outside ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE}`);
  const contextLength = bytes.readUInt16BE(42);
  if (contextLength < 2 || contextLength > MAX_CONTEXT_BYTES)
    throw bad(`context length ${contextLength} is out of bounds`);
  let at = 44 + contextLength + COMMITMENT_BYTES;
  if (have < at + 2) return undefined;
  const keyIdLength = bytes.readUInt16BE(at);
  if (keyIdLength < 1 || keyIdLength > MAX_KEY_ID_BYTES)
    throw bad(`key id length ${keyIdLength} is out of bounds`);
  const keyIdAt = at + 2;
  at = keyIdAt + keyIdLength;
  if (have < at + 1) return undefined;
  const algLength = bytes.readUInt8(at);
  if (algLength < 1 || algLength > MAX_WRAP_ALG_BYTES)
    throw bad(`wrap algorithm length ${algLength} is out of bounds`);
  const algAt = at + 1;
  at = algAt + algLength;
  if (have < at + 2) return undefined;
  const wrappedLength = bytes.readUInt16BE(at);
  if (wrappedLength < 1 || wrappedLength > MAX_WRAPPED_DEK_BYTES) {
    throw bad(`wrapped DEK length ${wrappedLength} is out of bounds`);
  }
  const wrappedAt = at + 2;
  const tagAt = wrappedAt + wrappedLength;
  const length = tagAt + HEADER_TAG_BYTES;
  if (have < length) return undefined;

  const previous = options?.previous?.authenticated;
  const same = (at: number, length: number, previousAt: number, previousLength: number): boolean =>
    previous !== undefined &&
    length === previousLength &&
    bytes.compare(previous, previousAt, previousAt + length, at, at + length) === 0;
  // Where the previous header's fields sit in its authenticated bytes (the same layout as here).
  const previousContextLength = previous ? previous.readUInt16BE(42) : 0;
  const previousKeyIdAt = 44 + previousContextLength + COMMITMENT_BYTES + 2;
  const previousKeyIdLength = previous ? previous.readUInt16BE(previousKeyIdAt - 2) : 0;
  const previousAlgAt = previousKeyIdAt + previousKeyIdLength + 1;
  const previousAlgLength = previous ? previous[previousAlgAt - 1]! : 0;

  const context = same(44, contextLength, 44, previousContextLength)
    ? options!.previous!.context
    : decodeContext(bytes.subarray(44, 44 + contextLength));
  let keyId: string;
  if (same(keyIdAt, keyIdLength, previousKeyIdAt, previousKeyIdLength)) {
    keyId = options!.previous!.keyId;
  } else {
    const text = utf8Text(bytes, keyIdAt, keyIdAt + keyIdLength);
    if (text === undefined) throw bad('key id is not valid UTF-8');
    keyId = text;
  }
  let wrapAlgorithm: string;
  if (same(algAt, algLength, previousAlgAt, previousAlgLength)) {
    wrapAlgorithm = options!.previous!.wrapAlgorithm;
  } else {
    wrapAlgorithm = bytes.toString('latin1', algAt, algAt + algLength);
    if (!/^[A-Za-z0-9_-]+$/.test(wrapAlgorithm)) throw bad('wrap algorithm is not an algorithm name');
  }
  // Copies unless the caller asked for views, so a parsed header never pins the (possibly large)
  // buffer it came from.
  const field = options?.views
    ? (start: number, end: number) => bytes.subarray(start, end)
    : (start: number, end: number) => Buffer.from(bytes.subarray(start, end));
  return {
    messageId: field(6, 38),
    chunkSize,
    context,
    commitment: field(44 + contextLength, 44 + contextLength + COMMITMENT_BYTES),
    keyId,
    wrapAlgorithm,
    wrappedDek: field(wrappedAt, tagAt),
    tag: field(tagAt, length),
    authenticated: field(0, tagAt),
    length,
  };
}

/**
 * Verifies the key commitment, then the header tag, both in constant time. Throws CIPHERTEXT_CORRUPT.
 * Precondition: `keys` were derived from the unwrapped DEK and this header's message id.
 */
export function verifyHeader(header: Header, keys: MessageKeys): void {
  if (!timingSafeEqual(header.commitment, keys.commitment)) {
    throw new SealboxError(
      ErrorCode.CIPHERTEXT_CORRUPT,
      'ciphertext header failed its key-commitment check: the wrapped data key or the commitment was modified',
    );
  }
  if (!timingSafeEqual(header.tag, headerTag(keys.headerKey, header.authenticated))) {
    throw new SealboxError(
      ErrorCode.CIPHERTEXT_CORRUPT,
      'ciphertext header failed authentication: a header field (context, chunk size, key id…) was modified',
    );
  }
}

/** Builds the header of a re-wrapped message: same message fields and body, new key id and wrapped DEK. */
export function rewrapHeader(
  header: Header,
  keys: MessageKeys,
  envelope: Pick<HeaderFields, 'keyId' | 'wrapAlgorithm' | 'wrappedDek'>,
): Buffer {
  const contextLength = header.authenticated.readUInt16BE(42);
  return buildHeader(
    {
      messageId: header.messageId,
      chunkSize: header.chunkSize,
      contextBytes: header.authenticated.subarray(44, 44 + contextLength),
      ...envelope,
    },
    keys,
  );
}

function headerTag(headerKey: Uint8Array, authenticated: Uint8Array): Buffer {
  return createHmac('sha256', headerKey).update(authenticated).digest();
}
