/**
 * Waiting on shared work with a caller's own signal: the caller stops waiting when its signal aborts,
 * the work itself goes on for the other waiters (a single-flight vault call, a cached lookup).
 */

/**
 * `promise`, or a rejection with `reasonOf(signal)` as soon as `signal` aborts. The abort listener is
 * removed when the promise settles, so a long-lived signal does not collect listeners.
 */
export function untilAborted<T>(
  promise: Promise<T>,
  signal: AbortSignal,
  reasonOf: (signal: AbortSignal) => unknown = (s) => s.reason,
): Promise<T> {
  if (signal.aborted) return Promise.reject(reasonOf(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(reasonOf(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/**
 * A call's cancellation whose AbortController is made only when something asks for the signal. A unary
 * call that hits the DEK cache waits on nothing and never asks, so it never pays for an AbortController
 * and its AbortSignal (~5 µs of CPU each, plus their GC; issue 14's profile). Aborting before anyone
 * asked is remembered: the signal made later is already aborted, with the same reason.
 */
export class LazySignal {
  private controller: AbortController | undefined;
  private abortedWith: { reason: unknown } | undefined;

  /** The signal (made now if nobody asked before). */
  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.abortedWith) this.controller.abort(this.abortedWith.reason);
    }
    return this.controller.signal;
  }

  get aborted(): boolean {
    return this.abortedWith !== undefined;
  }

  /** True once something asked for the signal (tests). */
  get materialized(): boolean {
    return this.controller !== undefined;
  }

  abort(reason: unknown): void {
    if (this.abortedWith) return;
    this.abortedWith = { reason };
    this.controller?.abort(reason);
  }
}

/** Where a caller's cancellation comes from: a signal, or one made on demand. */
export type Cancellation = AbortSignal | LazySignal;

/** The AbortSignal of `c` (making a lazy one now); call it only where the signal is about to be used. */
export function signalOf(c: Cancellation): AbortSignal;
export function signalOf(c: Cancellation | undefined): AbortSignal | undefined;
export function signalOf(c: Cancellation | undefined): AbortSignal | undefined {
  return c instanceof LazySignal ? c.signal : c;
}
