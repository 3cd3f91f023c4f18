/**
 * Hands out many small output buffers as views of a few large ones: for EncryptBatch / DecryptBatch,
 * whose items each need an output of a few hundred bytes to a few KiB.
 *
 * Why (bench/README.md, "Batch per-record cost"): `Buffer.allocUnsafeSlow` per item makes a new
 * ArrayBuffer each time (a native backing store, tracked by V8 until a GC frees it); for 1 KiB
 * records that was about a tenth of the server's CPU per record, counting the GC it caused. Node's
 * own small-buffer pool (`Buffer.allocUnsafe`) would mix a batch's outputs with unrelated buffers of
 * the process; a slab holds only this batch's outputs and dies with its results.
 *
 * Invariant: views never overlap, and every byte of a view is the caller's to write (uninitialized).
 * Not for secrets that must be zeroed on their own: a slab is freed by the GC once no view is left.
 */
export class SlabAllocator {
  private slab: Buffer | undefined;
  private used = 0;

  /** `slabBytes`: the size of each slab; a request larger than that gets a buffer of its own. */
  constructor(private readonly slabBytes: number) {}

  /** A view of exactly `bytes` uninitialized bytes. */
  take(bytes: number): Buffer {
    if (bytes > this.slabBytes) return Buffer.allocUnsafeSlow(bytes);
    if (!this.slab || this.used + bytes > this.slab.length) {
      this.slab = Buffer.allocUnsafeSlow(this.slabBytes);
      this.used = 0;
    }
    const view = this.slab.subarray(this.used, this.used + bytes);
    this.used += bytes;
    return view;
  }

  /** `take`, bound, for use as a ChunkBatch's `allocate`. */
  readonly allocate = (bytes: number): Buffer => this.take(bytes);
}
