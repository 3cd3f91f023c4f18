/**
 * Stream framing: turns bytes that arrive split anywhere into whole-chunk batches. Pure; no I/O.
 *
 * The encrypting side cannot know which chunk is final until the input ends, so it always holds back
 * at least one plaintext byte (the start of what may be the final chunk). The decrypting side likewise
 * releases a chunk record as non-final only once it has seen at least one byte beyond it.
 */
import { ErrorCode, SealboxError } from '../errors';
import { CHUNK_OVERHEAD } from './chunk';
import { type Header, MAX_CHUNKS, MAX_HEADER_BYTES, parseHeader } from './format';

/** A contiguous run of whole chunks (plaintext or records), owned by the receiver. */
export interface Segment {
  /** Index of the first chunk in `data`. */
  readonly firstIndex: number;
  /** True when the segment ends with the message's final chunk. */
  readonly final: boolean;
  /**
   * The bytes. When the framer's `mustOwn(length)` said so, a buffer with its own ArrayBuffer (so it
   * can be transferred to a worker); otherwise possibly a view into the pushed input, saving a copy.
   */
  readonly data: Buffer;
}

/** Collects buffers and hands out prefixes as views or as fresh, transferable buffers. */
class ByteQueue {
  private pieces: Buffer[] = [];
  length = 0;
  /** The buffer straddling takes are copied into when `reuseCopies` (see the framers' option). */
  private scratch: Buffer | undefined;

  constructor(private readonly reuseCopies = false) {}

  /** Bytes in the first pushed buffer still queued (the most a view can cover). */
  get headLength(): number {
    return this.pieces[0]?.length ?? 0;
  }

  push(data: Buffer): void {
    if (data.length === 0) return;
    this.pieces.push(data);
    this.length += data.length;
  }

  /**
   * Removes the first `n` bytes: a view when `owned` is false and they lie in one pushed buffer,
   * otherwise a new buffer that owns its memory.
   *
   * Copy of payload bytes: only when `owned` (the segment is transferred to a worker, which needs an
   * ArrayBuffer of its own) or when the bytes straddle two pushed buffers (the framers below keep that
   * to one chunk per pushed buffer when they may use views).
   */
  take(n: number, owned = true): Buffer {
    const head = this.pieces[0];
    if (!owned && head && head.length >= n) {
      this.length -= n;
      if (head.length === n) this.pieces.shift();
      else this.pieces[0] = head.subarray(n);
      return head.subarray(0, n);
    }
    const out = !owned && this.reuseCopies ? this.scratchOf(n) : Buffer.allocUnsafeSlow(n);
    let filled = 0;
    while (filled < n) {
      const head = this.pieces[0]!;
      const want = n - filled;
      if (head.length <= want) {
        out.set(head, filled);
        filled += head.length;
        this.pieces.shift();
      } else {
        out.set(head.subarray(0, want), filled);
        filled += want;
        this.pieces[0] = head.subarray(want);
      }
    }
    this.length -= n;
    return out;
  }

  /** `n` bytes of the scratch buffer, grown when too small (records have one size per message). */
  private scratchOf(n: number): Buffer {
    if (!this.scratch || this.scratch.length < n) this.scratch = Buffer.allocUnsafeSlow(n);
    return this.scratch.subarray(0, n);
  }

  /** Whether any queued bytes are a view of `memory` (an ArrayBuffer a pushed buffer lies in). */
  holds(memory: ArrayBufferLike): boolean {
    for (const piece of this.pieces) if (piece.buffer === memory) return true;
    return false;
  }

  /** The first `n` bytes (or fewer), without consuming them. */
  peek(n: number): Buffer {
    const first = this.pieces[0];
    if (first && first.length >= n) return first.subarray(0, n);
    return Buffer.concat(this.pieces, Math.min(n, this.length));
  }

  skip(n: number): void {
    let left = n;
    while (left > 0) {
      const head = this.pieces[0]!;
      if (head.length <= left) {
        left -= head.length;
        this.pieces.shift();
      } else {
        this.pieces[0] = head.subarray(left);
        left = 0;
      }
    }
    this.length -= n;
  }
}

/**
 * How many of the next `count` units (chunks or records, `unit` bytes each) to put in one segment.
 * When the segment may be a view (`mustOwn` says no), it stops at the end of the first pushed buffer,
 * so only a unit that straddles two pushed buffers is ever copied: with 1 MiB messages and 64 KiB
 * chunks, no plaintext byte is copied at all (the held-back chunk is a view too), and at most one
 * record per message on the decrypting side, where records do not line up with messages. A segment
 * that must be owned is copied whole anyway, so it takes all `count` units.
 */
function viewableChunks(
  queue: ByteQueue,
  unit: number,
  count: number,
  mustOwn: (bytes: number) => boolean,
): number {
  if (mustOwn(count * unit)) return count;
  return Math.min(count, Math.max(1, Math.floor(queue.headLength / unit)));
}

/**
 * Splits plaintext into chunk-aligned segments of at most `maxChunksPerSegment` chunks each.
 * Invariant: after `push`, fewer than chunkSize + 1 bytes stay buffered, so memory per stream is
 * bounded by one chunk plus what the caller has not yet consumed.
 */
export class PlaintextFramer {
  private readonly queue: ByteQueue;
  private nextIndex = 0;
  private finished = false;

  /**
   * `mustOwn(bytes)`: whether a segment of that size must own its memory (it will be transferred).
   * `reuseCopies`: a chunk that straddles two pushed buffers is copied into one buffer reused for every
   * such copy, instead of a new one. Only for a caller that has consumed (sealed) every segment of a
   * push before it pushes again or finishes, synchronously: the next straddle overwrites the last.
   */
  constructor(
    readonly chunkSize: number,
    private readonly maxChunksPerSegment: number,
    private readonly mustOwn: (bytes: number) => boolean = () => true,
    reuseCopies = false,
  ) {
    this.queue = new ByteQueue(reuseCopies);
  }

  /** Bytes accepted so far that are not yet in a segment. */
  get buffered(): number {
    return this.queue.length;
  }

  /**
   * Whether the bytes held back (not yet in a segment) include a view of `memory`: until they do
   * not, a pushed buffer in that memory must not be reused. Segments already returned are the
   * caller's to track.
   */
  holds(memory: ArrayBufferLike): boolean {
    return this.queue.holds(memory);
  }

  /** Adds plaintext; returns the non-final segments it completed. */
  push(data: Buffer): Segment[] {
    if (this.finished) throw new Error('push after finish');
    this.queue.push(data);
    const segments: Segment[] = [];
    // Hold back at least one byte: it may start the final chunk.
    while (this.queue.length > this.chunkSize) {
      const whole = Math.floor((this.queue.length - 1) / this.chunkSize);
      const count = viewableChunks(
        this.queue,
        this.chunkSize,
        Math.min(whole, this.maxChunksPerSegment),
        this.mustOwn,
      );
      segments.push(this.segment(count * this.chunkSize, count, false));
    }
    return segments;
  }

  /** Ends the message; returns the final segment (1..chunkSize bytes, or 0 for an empty message). */
  finish(): Segment {
    this.finished = true;
    return this.segment(this.queue.length, 1, true);
  }

  private segment(bytes: number, chunks: number, final: boolean): Segment {
    if (this.nextIndex + chunks > MAX_CHUNKS) {
      throw new SealboxError(
        ErrorCode.LIMIT_EXCEEDED,
        'message exceeds 2^32 chunks; use a larger chunk size',
      );
    }
    const segment = { firstIndex: this.nextIndex, final, data: this.queue.take(bytes, this.mustOwn(bytes)) };
    this.nextIndex += chunks;
    return segment;
  }
}

/**
 * Reads a ciphertext split anywhere: first the header, then chunk records in segments.
 * Nothing is buffered beyond one header (≤ 64 KiB) or one record plus what the caller pushed.
 */
export class CiphertextReader {
  private readonly queue: ByteQueue;
  private parsed: Header | undefined;
  private nextIndex = 0;
  private recordSize = 0;
  private maxChunksPerSegment = 1;

  /**
   * `chunksPerSegment` picks the segment size once the header's chunk size is known; `mustOwn` and
   * `reuseCopies` (a record straddling two pushed buffers) as for PlaintextFramer.
   */
  constructor(
    private readonly chunksPerSegment: (chunkSize: number) => number,
    private readonly mustOwn: (bytes: number) => boolean = () => true,
    reuseCopies = false,
  ) {
    this.queue = new ByteQueue(reuseCopies);
  }

  /** The header once it has been read in full. */
  get header(): Header | undefined {
    return this.parsed;
  }

  /** As PlaintextFramer.holds. (A parsed header holds copies, never views.) */
  holds(memory: ArrayBufferLike): boolean {
    return this.queue.holds(memory);
  }

  /** Adds ciphertext; returns the header if it just completed, and the non-final segments now whole. */
  push(data: Buffer): { header?: Header; segments: Segment[] } {
    this.queue.push(data);
    let header: Header | undefined;
    if (!this.parsed) {
      header = parseHeader(this.queue.peek(MAX_HEADER_BYTES));
      if (!header) return { segments: [] };
      this.queue.skip(header.length);
      this.parsed = header;
      this.recordSize = header.chunkSize + CHUNK_OVERHEAD;
      this.maxChunksPerSegment = Math.max(1, this.chunksPerSegment(header.chunkSize));
    }
    const segments: Segment[] = [];
    while (this.queue.length > this.recordSize) {
      const whole = Math.floor((this.queue.length - 1) / this.recordSize);
      const count = viewableChunks(
        this.queue,
        this.recordSize,
        Math.min(whole, this.maxChunksPerSegment),
        this.mustOwn,
      );
      segments.push(this.segment(count * this.recordSize, count, false));
    }
    return header ? { header, segments } : { segments };
  }

  /** Ends the input; returns the final segment. Throws CIPHERTEXT_TRUNCATED if the input ended early. */
  finish(): Segment {
    if (!this.parsed) {
      throw new SealboxError(
        ErrorCode.CIPHERTEXT_TRUNCATED,
        this.queue.length === 0
          ? 'ciphertext is empty; expected a sealbox header'
          : `ciphertext ends inside the header after ${this.queue.length} bytes`,
      );
    }
    if (this.queue.length < CHUNK_OVERHEAD) {
      throw new SealboxError(
        ErrorCode.CIPHERTEXT_TRUNCATED,
        this.nextIndex === 0
          ? 'ciphertext ends after the header; the chunks are missing'
          : `ciphertext is truncated after chunk ${this.nextIndex - 1}; the final chunk is missing or cut short`,
      );
    }
    return this.segment(this.queue.length, 1, true);
  }

  private segment(bytes: number, chunks: number, final: boolean): Segment {
    if (this.nextIndex + chunks > MAX_CHUNKS) {
      throw new SealboxError(ErrorCode.CIPHERTEXT_MALFORMED, 'ciphertext has more than 2^32 chunks');
    }
    const segment = { firstIndex: this.nextIndex, final, data: this.queue.take(bytes, this.mustOwn(bytes)) };
    this.nextIndex += chunks;
    return segment;
  }
}
