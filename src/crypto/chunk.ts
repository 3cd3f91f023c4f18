/**
 * Chunk sealing and opening (docs/FORMAT.md §Chunks). Pure and synchronous: the worker pool and the
 * inline path both call these.
 *
 * A message body is a sequence of chunks i = 0, 1, …, n−1. Every chunk but the last carries exactly
 * C plaintext bytes; the last ("final") carries 1..C bytes, or 0 only when the whole message is empty.
 * Each chunk is AES-256-GCM ciphertext ‖ 16-byte tag under the message's encryption key, with
 *
 *   nonce = 0x00 × 7 ‖ u32be(i) ‖ u8(final ? 1 : 0)
 *   AAD   = message id (32 bytes) ‖ u32be(i) ‖ u8(final ? 1 : 0)
 *
 * The key is unique to the message (HKDF from the DEK and the random message id), so deterministic
 * nonces never repeat under one key. Binding the index and final flag into nonce and AAD makes
 * reordering, dropping, duplicating and truncating chunks fail authentication; binding the message
 * id makes chunks spliced from another message under the same DEK fail too.
 */
import { gcmOpenInto, gcmSealInto, NONCE_BYTES, TAG_BYTES } from './aead';
import { MAX_CHUNKS } from './format';

/** Bytes a chunk adds to its plaintext. */
export const CHUNK_OVERHEAD = TAG_BYTES;

export function chunkNonce(index: number, final: boolean): Buffer {
  return writeNonce(Buffer.alloc(NONCE_BYTES), index, final);
}

export function chunkAad(messageId: Uint8Array, index: number, final: boolean): Buffer {
  return writeAad(Buffer.allocUnsafe(messageId.length + 5), messageId, index, final);
}

/** Writes bytes 7–11 of `nonce`; bytes 0–6 are zero from its allocation and never written. */
function writeNonce(nonce: Buffer, index: number, final: boolean): Buffer {
  nonce.writeUInt32BE(index, 7);
  nonce[11] = final ? 1 : 0;
  return nonce;
}

function writeAad(aad: Buffer, messageId: Uint8Array, index: number, final: boolean): Buffer {
  aad.set(messageId, 0);
  aad.writeUInt32BE(index, messageId.length);
  aad[messageId.length + 4] = final ? 1 : 0;
  return aad;
}

/**
 * One nonce and one AAD buffer per thread, rewritten for every chunk: a one-chunk batch item would
 * otherwise allocate both per item. Safe because each is consumed before the next chunk rewrites it:
 * createCipheriv copies the nonce into the cipher context and setAAD absorbs the AAD at once, both
 * synchronously inside gcmSealInto / gcmOpenInto.
 */
const scratchNonce = Buffer.alloc(NONCE_BYTES);
const scratchAad = Buffer.alloc(32 + 5);
const nonceFor = (index: number, final: boolean) => writeNonce(scratchNonce, index, final);
const aadFor = (messageId: Uint8Array, index: number, final: boolean) =>
  messageId.length + 5 === scratchAad.length
    ? writeAad(scratchAad, messageId, index, final)
    : chunkAad(messageId, index, final);

/** A run of consecutive chunks of one message, sealed or opened together (one pool task). */
export interface ChunkBatch {
  /** The message's AES-256-GCM key (never the DEK). */
  readonly key: Uint8Array;
  readonly messageId: Uint8Array;
  readonly chunkSize: number;
  /** Index of the batch's first chunk. */
  readonly firstIndex: number;
  /** True when the batch's last chunk is the message's final chunk. */
  readonly final: boolean;
  /** Plaintext (seal) or chunk records (open), contiguous. */
  readonly data: Uint8Array;
  /**
   * Bytes to leave uninitialized at the front of the output (default 0), so a transport can put its
   * framing there and send the output without copying it again.
   */
  readonly headroom?: number;
  /**
   * Where the output goes: called once with the output's size, returns a buffer of exactly that size
   * (e.g. a reused one). Default: a new buffer. Inline only — a function cannot cross to a worker.
   */
  readonly allocate?: (bytes: number) => Buffer;
}

const allocateNew = (bytes: number): Buffer => Buffer.allocUnsafeSlow(bytes);

/**
 * Number of chunks in a batch of `dataLength` bytes whose full chunks take `recordSize` bytes.
 * A final batch ends with one final chunk that takes the 1..recordSize bytes left after the full ones.
 */
function countChunks(dataLength: number, recordSize: number, final: boolean): number {
  if (!final) {
    if (dataLength === 0 || dataLength % recordSize !== 0) {
      throw new RangeError('a non-final batch must hold whole chunks');
    }
    return dataLength / recordSize;
  }
  return 1 + Math.max(0, Math.ceil((dataLength - recordSize) / recordSize));
}

/** Seals a batch of plaintext into contiguous chunk records (after `headroom` reserved bytes). */
export function sealChunks(batch: ChunkBatch): Buffer {
  const { chunkSize, data, final } = batch;
  const count = countChunks(data.length, chunkSize, final);
  if (batch.firstIndex + count > MAX_CHUNKS) throw new RangeError('message exceeds 2^32 chunks');
  const headroom = batch.headroom ?? 0;
  const out = (batch.allocate ?? allocateNew)(headroom + data.length + count * CHUNK_OVERHEAD);
  let read = 0;
  let written = headroom;
  for (let i = 0; i < count; i++) {
    const isFinal = final && i === count - 1;
    const end = isFinal ? data.length : read + chunkSize;
    const index = batch.firstIndex + i;
    written = gcmSealInto(
      batch.key,
      nonceFor(index, isFinal),
      aadFor(batch.messageId, index, isFinal),
      data.subarray(read, end),
      out,
      written,
    );
    read = end;
  }
  return out;
}

/** Outcome of opening a batch: the plaintext, or which chunk failed and how. */
export type OpenResult =
  | {
      readonly ok: true /** Plaintext after the batch's `headroom` reserved bytes. */;
      readonly plaintext: Buffer;
    }
  | {
      readonly ok: false;
      /** Index of the chunk that failed. */
      readonly failedIndex: number;
      /**
       * True when the failed chunk was expected to be final but verifies as a non-final chunk: the
       * ciphertext was cut at a chunk boundary.
       */
      readonly truncated: boolean;
    };

/**
 * Opens a batch of chunk records. Stops at the first chunk that fails.
 * Postcondition: on failure no plaintext is returned (the output buffer is zeroed).
 */
export function openChunks(batch: ChunkBatch): OpenResult {
  const { chunkSize, data, final } = batch;
  const recordSize = chunkSize + CHUNK_OVERHEAD;
  const count = countChunks(data.length, recordSize, final);
  if (batch.firstIndex + count > MAX_CHUNKS) throw new RangeError('message exceeds 2^32 chunks');
  const headroom = batch.headroom ?? 0;
  const out = (batch.allocate ?? allocateNew)(headroom + Math.max(0, data.length - count * CHUNK_OVERHEAD));
  let read = 0;
  let written = headroom;
  for (let i = 0; i < count; i++) {
    const isFinal = final && i === count - 1;
    const end = isFinal ? data.length : read + recordSize;
    const index = batch.firstIndex + i;
    const record = data.subarray(read, end);
    // Canonical form: an empty final chunk only ever stands alone (the empty message).
    const next =
      isFinal && index > 0 && record.length === CHUNK_OVERHEAD
        ? -1
        : gcmOpenInto(
            batch.key,
            nonceFor(index, isFinal),
            aadFor(batch.messageId, index, isFinal),
            record,
            out,
            written,
          );
    if (next < 0) {
      out.fill(0, 0, written);
      // A final record shorter than a tag, or a full record that verifies as non-final, means the
      // ciphertext was cut short rather than modified.
      const truncated =
        (isFinal && record.length < CHUNK_OVERHEAD) ||
        (isFinal &&
          record.length === recordSize &&
          gcmOpenInto(
            batch.key,
            nonceFor(index, false),
            aadFor(batch.messageId, index, false),
            record,
            out,
            headroom,
          ) >= 0);
      out.fill(0);
      return { ok: false, failedIndex: index, truncated };
    }
    written = next;
    read = end;
  }
  return { ok: true, plaintext: out };
}
