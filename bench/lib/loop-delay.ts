/**
 * Preloaded into a benchmark server (`node --require …/loop-delay.js`, forked with an IPC channel):
 * samples the main thread's event-loop delay with perf_hooks.monitorEventLoopDelay — how late timers
 * and I/O callbacks run, i.e. how long other callers wait behind whatever runs on the main thread
 * (inline AES, GC, framing). Answers {cmd:'loop-delay'} with {event:'loop-delay', …LoopDelay} for the
 * samples since the previous request, then starts over. Does nothing in worker threads.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { isMainThread } from 'node:worker_threads';

/** Event-loop delay over one interval, milliseconds. */
export interface LoopDelay {
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  readonly meanMs: number;
  readonly samples: number;
}

if (isMainThread && process.send) {
  // 10 ms resolution: a sample every 10 ms, each recording how late its timer fired.
  const histogram = monitorEventLoopDelay({ resolution: 10 });
  histogram.enable();
  const ms = (ns: number) => ns / 1e6;
  process.on('message', (m: { cmd?: string }) => {
    if (m?.cmd !== 'loop-delay') return;
    const delay: LoopDelay = {
      p50Ms: ms(histogram.percentile(50)),
      p99Ms: ms(histogram.percentile(99)),
      maxMs: ms(histogram.max),
      meanMs: ms(histogram.mean),
      samples: histogram.count,
    };
    histogram.reset();
    process.send?.({ event: 'loop-delay', ...delay });
  });
  // The channel must not keep the server alive once it wants to exit.
  process.channel?.unref();
}
