/**
 * One-shot sealing and opening of a whole message with a known DEK. Pure and synchronous: the
 * known-answer vectors and the unit tests use it, and it is the shortest complete statement of the
 * format in code. The server's paths split the same steps across the pool and the network.
 */
import { randomBytes } from 'node:crypto';
import { ErrorCode, SealboxError } from '../errors';
import { type ChunkBatch, openChunks, sealChunks } from './chunk';
import { checkExpectedContext, type EncryptionContext, encodeContext } from './context';
import { buildHeader, type Header, MAX_CHUNKS, MESSAGE_ID_BYTES, verifyHeader } from './format';
import { CiphertextReader } from './framing';
import { deriveMessageKeys, zeroMessageKeys } from './kdf';

/** The wrapped form of the DEK and the key that wrapped it, as they go into the header. */
export interface WrappedKey {
  readonly keyId: string;
  readonly wrapAlgorithm: string;
  readonly wrappedDek: Uint8Array;
}

export interface SealOptions {
  readonly dek: Uint8Array;
  readonly wrapped: WrappedKey;
  readonly context: EncryptionContext;
  readonly chunkSize: number;
  /** Fixed only by known-answer vectors; random otherwise. */
  readonly messageId?: Uint8Array;
}

/** Seals `plaintext` into a complete ciphertext. */
export function sealMessage(plaintext: Uint8Array, options: SealOptions): Buffer {
  const messageId = options.messageId ?? randomBytes(MESSAGE_ID_BYTES);
  const keys = deriveMessageKeys(options.dek, messageId);
  try {
    const header = buildHeader(
      {
        messageId,
        chunkSize: options.chunkSize,
        contextBytes: encodeContext(options.context),
        ...options.wrapped,
      },
      keys,
    );
    if (Math.ceil(plaintext.length / options.chunkSize) > MAX_CHUNKS) {
      throw new SealboxError(ErrorCode.LIMIT_EXCEEDED, 'message exceeds 2^32 chunks');
    }
    const body = sealChunks({
      key: keys.encryptionKey,
      messageId,
      chunkSize: options.chunkSize,
      firstIndex: 0,
      final: true,
      data: plaintext,
    });
    return Buffer.concat([header, body]);
  } finally {
    zeroMessageKeys(keys);
  }
}

/** A verified, opened message. */
export interface OpenedMessage {
  readonly header: Header;
  readonly plaintext: Buffer;
}

/**
 * Opens a complete ciphertext. `unwrap` turns the header's wrapped DEK into the DEK (the caller owns
 * and zeroes it). Throws a SealboxError naming what failed.
 */
export function openMessage(
  ciphertext: Buffer,
  unwrap: (header: Header) => Uint8Array,
  expectedContext: EncryptionContext = {},
): OpenedMessage {
  const reader = new CiphertextReader(() => MAX_CHUNKS);
  const { header, segments } = reader.push(ciphertext);
  const final = reader.finish();
  if (!header) throw new Error('unreachable: finish() throws when the header is incomplete');
  const keys = deriveMessageKeys(unwrap(header), header.messageId);
  try {
    verifyHeader(header, keys);
    checkExpectedContext(header.context, expectedContext);
    const parts: Buffer[] = [];
    for (const segment of [...segments, final]) {
      parts.push(
        openBatchOrThrow({
          key: keys.encryptionKey,
          messageId: header.messageId,
          chunkSize: header.chunkSize,
          ...segment,
        }),
      );
    }
    return { header, plaintext: Buffer.concat(parts) };
  } finally {
    zeroMessageKeys(keys);
  }
}

/** Opens a batch and turns a failure into the error a caller sees. */
export function openBatchOrThrow(batch: ChunkBatch): Buffer {
  const result = openChunks(batch);
  if (result.ok) return result.plaintext;
  throw openFailure(result.failedIndex, result.truncated);
}

/** The error for a chunk that failed to open. */
export function openFailure(failedIndex: number, truncated: boolean): SealboxError {
  return truncated
    ? new SealboxError(
        ErrorCode.CIPHERTEXT_TRUNCATED,
        `ciphertext is truncated after chunk ${failedIndex}; the chunks after it are missing`,
      )
    : new SealboxError(
        ErrorCode.CIPHERTEXT_CORRUPT,
        `chunk ${failedIndex} failed authentication: the ciphertext was modified, reordered, spliced or cut short inside this chunk`,
      );
}
