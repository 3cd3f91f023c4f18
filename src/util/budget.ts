/**
 * A counting limit on bytes in flight, shared by every call. Waiters are served in arrival order,
 * so one large stream cannot starve others indefinitely.
 */
import { type Cancellation, signalOf } from './abort';

export class ByteBudget {
  private available: number;
  /** Sum of the waiters' bytes, kept as they come and go (admission reads it on every unary call). */
  private queued = 0;
  private readonly waiters: Array<{ bytes: number; resolve: () => void; reject: (e: unknown) => void }> = [];

  constructor(readonly capacity: number) {
    this.available = capacity;
  }

  /** Bytes currently held by callers. */
  get inUse(): number {
    return this.capacity - this.available;
  }

  /**
   * Waits until `bytes` fit, then holds them. A request larger than the whole capacity is clamped to
   * it, so it waits for an idle budget rather than forever.
   */
  acquire(bytes: number, signal?: AbortSignal): Promise<number> {
    const want = Math.min(bytes, this.capacity);
    if (this.waiters.length === 0 && want <= this.available) {
      this.available -= want;
      return Promise.resolve(want);
    }
    return new Promise<number>((resolve, reject) => {
      const waiter = {
        bytes: want,
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(want);
        },
        reject,
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          this.queued -= want;
        }
        reject(signal?.reason);
        this.wake();
      };
      if (signal?.aborted) return reject(signal.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
      this.queued += want;
    });
  }

  /**
   * Admission for callers that already hold their bytes in memory (unary requests, decoded by grpc-js
   * before the handler runs): takes `bytes` now if they fit; otherwise waits only while the bytes of
   * everyone waiting stay within `maxQueuedBytes`, and beyond that returns undefined at once, so the
   * caller refuses the request and its memory is freed instead of queued.
   */
  tryAcquire(bytes: number, maxQueuedBytes: number, signal?: Cancellation): Promise<number> | undefined {
    const want = Math.min(bytes, this.capacity);
    if (this.waiters.length === 0 && want <= this.available) {
      this.available -= want;
      return Promise.resolve(want);
    }
    if (this.queuedBytes + want > maxQueuedBytes) return undefined;
    // Only a caller that has to wait needs its signal (a LazySignal is made into one only now).
    return this.acquire(bytes, signalOf(signal));
  }

  /** True when nothing more fits now and the waiting bytes have reached `maxQueuedBytes`. */
  saturated(maxQueuedBytes: number): boolean {
    return this.available <= 0 && this.queuedBytes >= maxQueuedBytes;
  }

  /** Bytes requested by callers still waiting. */
  get queuedBytes(): number {
    return this.queued;
  }

  /** Returns bytes obtained from `acquire` (pass its resolved value). */
  release(held: number): void {
    this.available += held;
    this.wake();
  }

  private wake(): void {
    while (this.waiters.length > 0 && this.waiters[0]!.bytes <= this.available) {
      const next = this.waiters.shift()!;
      this.available -= next.bytes;
      this.queued -= next.bytes;
      next.resolve();
    }
  }
}
