/**
 * Reuses large output buffers once their bytes have been written out, so that a stream's sealed (or
 * opened) segments stop being fresh allocations. Measured reason (bench/README.md, "Stream allocation
 * budget"): these are the longest-lived buffers of a stream — they wait in HTTP/2 until the peer's
 * window lets them out — so V8 promotes them to the old generation, and only full mark-compacts free
 * their memory; a steady stream of them kept the server in a loop of full GCs.
 *
 * Invariant: a buffer is handed out again only after `give` — the caller gives it back only when no
 * one reads it any more (its write completed). Buffers never given back are left to the GC.
 */
export class BufferRecycler {
  private readonly free: ArrayBuffer[] = [];
  private freeBytes = 0;
  /** ArrayBuffers handed out by `take` and not yet given back: only these can be given back. */
  private readonly lent = new WeakSet<ArrayBuffer>();
  private reusedCount = 0;

  /** Keeps at most `maxFree` buffers and `maxFreeBytes` bytes for reuse. */
  constructor(
    private readonly maxFree: number,
    private readonly maxFreeBytes: number,
  ) {}

  /**
   * A buffer of exactly `bytes` bytes (uninitialized): a view of a free one between `bytes` and twice
   * that size, or a new one that owns its ArrayBuffer.
   */
  take(bytes: number): Buffer {
    for (let i = this.free.length - 1; i >= 0; i--) {
      const ab = this.free[i]!;
      if (ab.byteLength >= bytes && ab.byteLength <= 2 * bytes) {
        this.free.splice(i, 1);
        this.freeBytes -= ab.byteLength;
        this.lent.add(ab);
        this.reusedCount++;
        return Buffer.from(ab, 0, bytes);
      }
    }
    const made = Buffer.allocUnsafeSlow(bytes);
    this.lent.add(made.buffer as ArrayBuffer);
    return made;
  }

  /**
   * Returns a buffer from `take` (or any view of it) once nothing reads it. Anything else — a buffer
   * not from `take`, or one already given back — is ignored, so a second `give` can never put a
   * buffer that was lent out again back on the free list.
   */
  give(view: Uint8Array): void {
    const ab = view.buffer as ArrayBuffer;
    if (!this.lent.delete(ab)) return;
    if (this.free.length >= this.maxFree || this.freeBytes + ab.byteLength > this.maxFreeBytes) return;
    this.free.push(ab);
    this.freeBytes += ab.byteLength;
  }

  /** Whether `view` lies in a buffer this recycler lent out and has not had back. */
  lends(view: Uint8Array): boolean {
    return this.lent.has(view.buffer as ArrayBuffer);
  }

  /** Buffers `take` has handed out again (not new), for tests. */
  get reused(): number {
    return this.reusedCount;
  }

  /** Free buffers held, for tests and metrics. */
  get held(): { buffers: number; bytes: number } {
    return { buffers: this.free.length, bytes: this.freeBytes };
  }
}
