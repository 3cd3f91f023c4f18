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
