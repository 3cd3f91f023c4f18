/**
 * Soak: sealbox under a steady mixed load for a bounded time, sampled every second, then left idle to
 * see what it gives back. sealbox runs as its own process (default config, local key, metrics on);
 * the load comes from three load-generator processes at once:
 * - bench/stream-client.ts --mode pipe: N streams (default 16), each an EncryptStream whose ciphertext
 *   flows straight into a DecryptStream, in calls of --bytes-per-call one after another, so calls
 *   start and end all the time; failed calls are counted and replaced (--keep-going);
 * - bench/unary-client.ts --rate R twice: unary Encrypt and Decrypt of 1 KiB, open loop at R calls/s
 *   each (at most C in flight), so latency includes whatever queueing the streams cause.
 * Every second: the server's RSS (/proc/<pid>/status), open fds (/proc/<pid>/fd), CPU, and from its
 * /metrics the V8 heap used, external memory, event-loop delay p99 over the last second
 * (prom-client resets its histogram at each scrape) and non-OK statuses; from the load generators
 * (IPC ticks) stream throughput, calls, unary req/s and unary p99 latency over that second.
 * Phases: idle baseline, load (--seconds), settle (--settle seconds idle). Reports the after-load
 * RSS, heap and fds against the baseline and the peak, and the RSS trend over the second half of the
 * load. Verdicts are reported, never asserted; exit code 1 only when a load generator or the server
 * failed outright. Writes bench/results/soak-<ts>.{json,svg} (the SVG: every series over time).
 *
 *   node <build>/bench/soak.js [--tiny|--quick|--full] [--seconds N] [--settle N] [--baseline N]
 *     [--streams N] [--message-bytes B] [--bytes-per-call B] [--unary-rate R] [--unary-concurrency C]
 *     [--config JSON]
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { connectEnvelope, decrypt, decryptStream, encrypt, encryptStream } from '../src/client/client';
import { type SeriesPoint, writeTimeSeriesChart } from './lib/chart';
import { runStreamClient, type StreamRun } from './lib/driver';
import { cpuTime, freeTcpPort, openFds, runMain, sampleRss, toMiB } from './lib/proc';
import { numberFlag, PROFILE_OPTIONS, type Profile, pickProfile } from './lib/profile';
import {
  environment,
  fixed,
  mbps,
  median,
  parseConfig,
  progress,
  type Ratio,
  ratioOf,
  ratioTable,
  table,
  timestamp,
  writeRun,
} from './lib/report';
import { BENCH_KEY_ALIAS, spawnSealbox } from './lib/servers';
import { runUnaryClient, type UnaryRun } from './lib/unary-driver';
import type { StreamClientTick } from './stream-client';
import type { UnaryClientTick } from './unary-client';

const KiB = 1024;
const MiB = 1024 * KiB;

/** Verdict thresholds (reported, never asserted). */
const FDS_TOLERANCE = 2;
/**
 * The allocators (glibc malloc, V8's heap) keep much of what they freed mapped, so RSS after a load
 * settles above the idle baseline even when nothing leaks: in test/integration/memory.test.ts a 200 MiB
 * load left RSS 25–70 MiB up after a full GC, with heap and external memory back at their baseline.
 * Heap and external memory are the figures that return. The server's two buffer-reuse pools (up to
 * 32 MiB each, by design; sealbox_buffer_pool_bytes) also stay allocated after a load: the verdict
 * counts them apart and holds the rest to this tolerance.
 */
const RSS_TOLERANCE_MIB = 64;
/** RSS peak of the load's second half over its first half: a leak's growth, not the allocators' steps. */
const TREND_TOLERANCE_MIB = 16;

function options() {
  const { values } = parseArgs({
    options: {
      ...PROFILE_OPTIONS,
      seconds: { type: 'string' },
      settle: { type: 'string' },
      baseline: { type: 'string' },
      streams: { type: 'string' },
      channels: { type: 'string' },
      'message-bytes': { type: 'string' },
      'bytes-per-call': { type: 'string' },
      'unary-rate': { type: 'string' },
      'unary-concurrency': { type: 'string' },
      config: { type: 'string', default: '{}' },
    },
  });
  const profile: Profile = pickProfile(values);
  const pick = (tiny: number, quick: number, full: number) => ({ tiny, quick, full })[profile];
  const whole = (name: string, text: string | undefined, fallback: number, min = 1) =>
    Math.max(min, Math.floor(numberFlag(name, text, fallback)));
  return {
    profile,
    seconds: numberFlag('seconds', values.seconds, pick(1, 20, 60)),
    settle: numberFlag('settle', values.settle, pick(1, 10, 10)),
    baseline: whole('baseline', values.baseline, pick(1, 3, 5)),
    streams: whole('streams', values.streams, pick(4, 16, 16)),
    channels: whole('channels', values.channels, pick(2, 4, 4)),
    messageBytes: whole('message-bytes', values['message-bytes'], 256 * KiB),
    bytesPerCall: whole('bytes-per-call', values['bytes-per-call'], pick(1, 4, 4) * MiB),
    unaryRate: whole('unary-rate', values['unary-rate'], pick(50, 100, 100)),
    unaryConcurrency: whole('unary-concurrency', values['unary-concurrency'], 16),
    unaryPayloadBytes: KiB,
    config: parseConfig(values.config ?? '{}'),
  };
}

type Phase = 'baseline' | 'load' | 'settle';
type UnaryOp = 'encrypt' | 'decrypt';
const UNARY_OPS: readonly UnaryOp[] = ['encrypt', 'decrypt'];

interface UnarySample {
  readonly reqPerSecond: number | undefined;
  readonly p99Ms: number | undefined;
  readonly failed: number | undefined;
  readonly skipped: number | undefined;
}

/** One second of the run. Undefined: not measurable in that second (e.g. a tick that came late). */
interface Sample {
  /** Seconds since the load started (negative during the baseline). */
  readonly t: number;
  readonly phase: Phase;
  readonly rssBytes: number | undefined;
  readonly fds: number | undefined;
  readonly heapUsedBytes: number | undefined;
  readonly externalBytes: number | undefined;
  /** Free bytes the server's buffer-reuse pools hold (sealbox_buffer_pool_bytes, both pools). */
  readonly bufferPoolBytes: number | undefined;
  /** prom-client's event-loop delay over the last scrape interval (10 ms sampling resolution included). */
  readonly loopP99Ms: number | undefined;
  readonly loopMaxMs: number | undefined;
  /** Server CPU, all threads, percent of one core. */
  readonly cpuPercent: number | undefined;
  readonly inflightBytes: number | undefined;
  /** Plaintext through the pipes per second. */
  readonly streamBytesPerSecond: number | undefined;
  readonly streamCalls: number | undefined;
  readonly streamFailed: number | undefined;
  readonly unary: Record<UnaryOp, UnarySample>;
  /** Calls the server ended with a status other than OK in this second (all methods). */
  readonly serverErrors: number | undefined;
}

/** Asks a load generator for a tick ({cmd:'tick', seq}) and waits briefly for its answer. */
class TickProbe<T> {
  private seq = 0;
  private readonly waiting = new Map<number, (tick: T) => void>();
  /** The last answer and when it came (for rates over the time between two answers). */
  last: { tick: T; at: number } | undefined;

  constructor(private readonly child: ChildProcess) {
    child.on('message', (m: { event?: string; seq?: number }) => {
      if (m?.event !== 'tick' || m.seq === undefined) return;
      this.waiting.get(m.seq)?.(m as T);
      this.waiting.delete(m.seq);
    });
  }

  /** The answer, or undefined if the generator is gone or did not answer within `timeoutMs`. */
  async ask(timeoutMs: number): Promise<T | undefined> {
    if (!this.child.connected) return undefined;
    const seq = ++this.seq;
    let timer: NodeJS.Timeout | undefined;
    const answer = new Promise<T | undefined>((resolve) => {
      this.waiting.set(seq, resolve);
      timer = setTimeout(() => {
        this.waiting.delete(seq);
        resolve(undefined);
      }, timeoutMs);
    });
    try {
      this.child.send({ cmd: 'tick', seq });
    } catch {
      this.waiting.delete(seq);
      clearTimeout(timer);
      return undefined;
    }
    const tick = await answer;
    clearTimeout(timer);
    return tick;
  }
}

/** Prometheus text → value of a metric (summed over the series that pass `keep`). */
function metricValue(
  text: string,
  name: string,
  keep: (labels: string) => boolean = () => true,
): number | undefined {
  let total: number | undefined;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== ' ' && rest[0] !== '{') continue;
    const labels = rest[0] === '{' ? rest.slice(1, rest.indexOf('}')) : '';
    if (!keep(labels)) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(value)) total = (total ?? 0) + value;
  }
  return total;
}

async function scrape(url: string): Promise<string | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return res.ok ? await res.text() : undefined;
  } catch {
    return undefined;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));

/** Least-squares slope of y over x, or undefined with fewer than 3 points. */
function slope(points: Array<[number, number]>): number | undefined {
  if (points.length < 3) return undefined;
  const n = points.length;
  const mx = points.reduce((a, [x]) => a + x, 0) / n;
  const my = points.reduce((a, [, y]) => a + y, 0) / n;
  let num = 0;
  let den = 0;
  for (const [x, y] of points) {
    num += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den > 0 ? num / den : undefined;
}

const defined = (values: Array<number | undefined>): number[] =>
  values.filter((v): v is number => v !== undefined && Number.isFinite(v));
const max = (values: Array<number | undefined>): number | undefined => {
  const d = defined(values);
  return d.length > 0 ? Math.max(...d) : undefined;
};
const mib = (bytes: number | undefined, digits = 1) =>
  fixed(bytes === undefined ? undefined : toMiB(bytes), digits);
const signedMiB = (bytes: number | undefined) =>
  bytes === undefined ? 'n/a' : `${bytes >= 0 ? '+' : '−'}${fixed(toMiB(Math.abs(bytes)), 1)} MiB`;

async function main(): Promise<number> {
  const opts = options();
  const env = environment();
  const started = Date.now();
  const stamp = timestamp();
  progress(
    `soak (${opts.profile}): ${opts.baseline} s idle baseline, ${opts.seconds} s load, ${opts.settle} s settle; ` +
      `${opts.streams} encrypt→decrypt pipes (${opts.messageBytes} B messages, ${opts.bytesPerCall} B per call) + ` +
      `unary Encrypt and Decrypt at ${opts.unaryRate}/s each (≤ ${opts.unaryConcurrency} in flight); ` +
      `load average ${(env.loadavgAtStart as number[]).join(' ')}`,
  );

  const metricsPort = await freeTcpPort();
  const server = await spawnSealbox(
    { ...opts.config, metrics: { listen: { host: '127.0.0.1', port: metricsPort } } },
    'sealbox',
  );
  const metricsUrl = `http://127.0.0.1:${metricsPort}/metrics`;
  const pid = server.pid;
  progress(`sealbox pid ${pid}, metrics ${metricsUrl}`);

  const samples: Sample[] = [];
  let streamRun: StreamRun | undefined;
  const unaryRuns: Partial<Record<UnaryOp, UnaryRun>> = {};
  let loadSeconds = 0;
  let serverAlive = true;
  try {
    // Warm-up, so the baseline includes code paths and pools a first call creates (its connection is
    // closed again before the baseline).
    const warm = connectEnvelope(server.target);
    const plaintext = randomBytes(4 * MiB);
    const sealed = await encryptStream(warm, BENCH_KEY_ALIAS, [
      plaintext.subarray(0, 2 * MiB),
      plaintext.subarray(2 * MiB),
    ]);
    await decryptStream(warm, [sealed.data.subarray(0, MiB), sealed.data.subarray(MiB)]);
    for (let i = 0; i < (opts.profile === 'tiny' ? 10 : 50); i++) {
      const { ciphertext } = await encrypt(warm, BENCH_KEY_ALIAS, randomBytes(opts.unaryPayloadBytes));
      await decrypt(warm, ciphertext);
    }
    warm.close();
    await sleep(opts.profile === 'tiny' ? 100 : 500);

    // Sampling state.
    let t0 = performance.now() + opts.baseline * 1000;
    let lastCpu = { at: performance.now(), seconds: cpuTime(pid) };
    let lastServerErrors: number | undefined;
    let streamProbe: TickProbe<StreamClientTick> | undefined;
    const unaryProbes: Partial<Record<UnaryOp, TickProbe<UnaryClientTick>>> = {};

    const take = async (phase: Phase): Promise<Sample> => {
      const now = performance.now();
      const [text, streamTick, ...unaryTicks] = await Promise.all([
        scrape(metricsUrl),
        streamProbe?.ask(500),
        ...UNARY_OPS.map((op) => unaryProbes[op]?.ask(500)),
      ]);
      const at = performance.now();
      const rssBytes = sampleRss(pid);
      if (rssBytes === undefined) serverAlive = false;
      const cpu = cpuTime(pid);
      const cpuPercent =
        cpu !== undefined && lastCpu.seconds !== undefined
          ? ((cpu - lastCpu.seconds) / ((at - lastCpu.at) / 1000)) * 100
          : undefined;
      lastCpu = { at, seconds: cpu };
      const metric = (name: string) => (text ? metricValue(text, name) : undefined);
      // No series at all until the first call ends: count that as zero.
      const errorsTotal = text
        ? (metricValue(text, 'sealbox_grpc_server_handled_total') ?? 0) -
          (metricValue(text, 'sealbox_grpc_server_handled_total', (l) => l.includes('code="OK"')) ?? 0)
        : undefined;
      const serverErrors =
        errorsTotal !== undefined && lastServerErrors !== undefined
          ? errorsTotal - lastServerErrors
          : undefined;
      if (errorsTotal !== undefined) lastServerErrors = errorsTotal;

      let streamBytesPerSecond: number | undefined;
      let streamCalls: number | undefined;
      let streamFailed: number | undefined;
      if (streamProbe && streamTick) {
        const prev = streamProbe.last;
        if (prev) {
          const dt = (at - prev.at) / 1000;
          streamBytesPerSecond = (streamTick.received - prev.tick.received) / dt;
          streamCalls = streamTick.calls - prev.tick.calls;
          streamFailed = streamTick.failedCalls - prev.tick.failedCalls;
        }
        streamProbe.last = { tick: streamTick, at };
      }
      const unary = {} as Record<UnaryOp, UnarySample>;
      UNARY_OPS.forEach((op, i) => {
        const probe = unaryProbes[op];
        const tick = unaryTicks[i];
        let s: UnarySample = {
          reqPerSecond: undefined,
          p99Ms: undefined,
          failed: undefined,
          skipped: undefined,
        };
        if (probe && tick) {
          // Latency is per tick already; rates need the previous answer.
          const prev = probe.last;
          s = {
            reqPerSecond: prev ? (tick.ok - prev.tick.ok) / ((at - prev.at) / 1000) : undefined,
            p99Ms: tick.p99Ms,
            failed: prev ? tick.failed - prev.tick.failed : tick.failed,
            skipped: prev ? tick.skipped - prev.tick.skipped : tick.skipped,
          };
          probe.last = { tick, at };
        }
        unary[op] = s;
      });
      const loopP99 = metric('sealbox_nodejs_eventloop_lag_p99_seconds');
      const loopMax = metric('sealbox_nodejs_eventloop_lag_max_seconds');
      const sample: Sample = {
        t: Number(((now - t0) / 1000).toFixed(1)),
        phase,
        rssBytes,
        fds: openFds(pid),
        heapUsedBytes: metric('sealbox_nodejs_heap_size_used_bytes'),
        externalBytes: metric('sealbox_nodejs_external_memory_bytes'),
        bufferPoolBytes: metric('sealbox_buffer_pool_bytes'),
        loopP99Ms: loopP99 === undefined ? undefined : loopP99 * 1000,
        loopMaxMs: loopMax === undefined ? undefined : loopMax * 1000,
        cpuPercent,
        inflightBytes: metric('sealbox_inflight_bytes'),
        streamBytesPerSecond,
        streamCalls,
        streamFailed,
        unary,
        serverErrors,
      };
      samples.push(sample);
      return sample;
    };
    const show = (s: Sample) =>
      progress(
        `  ${fixed(s.t, 0).padStart(4)} s ${s.phase.padEnd(8)} RSS ${mib(s.rssBytes, 0)} MiB, heap ${mib(s.heapUsedBytes, 0)} MiB, ` +
          `fds ${s.fds ?? 'n/a'}, loop p99 ${fixed(s.loopP99Ms, 1)} ms, CPU ${fixed(s.cpuPercent, 0)} %, ` +
          `streams ${mbps(s.streamBytesPerSecond)} MB/s, unary p99 ${fixed(s.unary.encrypt.p99Ms, 1)}/${fixed(s.unary.decrypt.p99Ms, 1)} ms`,
      );
    /** Samples once a second (on a fixed schedule) until `until()` is true or `seconds` have passed. */
    const sampleFor = async (phase: Phase, seconds: number, until: () => boolean = () => false) => {
      const end = performance.now() + seconds * 1000;
      let next = performance.now() + 1000;
      while (!until() && performance.now() < end - 1) {
        await sleep(Math.min(next, end) - performance.now());
        if (until()) break;
        show(await take(phase));
        next += 1000;
        if (!serverAlive) break;
      }
    };

    progress('baseline (idle)…');
    t0 = performance.now() + opts.baseline * 1000;
    await take('baseline'); // primes the CPU and error counters
    samples.length = 0;
    await sampleFor('baseline', opts.baseline);

    progress('load…');
    t0 = performance.now();
    let loadDone = false;
    const load = Promise.all([
      runStreamClient(
        {
          target: server.target,
          mode: 'pipe',
          streams: opts.streams,
          channels: opts.channels,
          messageBytes: opts.messageBytes,
          seconds: opts.seconds,
          bytesPerCall: opts.bytesPerCall,
          keepGoing: true,
          keyAlias: BENCH_KEY_ALIAS,
        },
        pid,
        { onChild: (child) => (streamProbe = new TickProbe(child)) },
      ).then((r) => (streamRun = r)),
      ...UNARY_OPS.map((op) =>
        runUnaryClient(
          {
            target: server.target,
            mode: op,
            concurrency: opts.unaryConcurrency,
            rate: opts.unaryRate,
            payloadBytes: opts.unaryPayloadBytes,
            seconds: opts.seconds,
            keyAlias: BENCH_KEY_ALIAS,
            drainSeconds: 2,
          },
          { server: pid },
          { onChild: (child) => (unaryProbes[op] = new TickProbe(child)) },
        ).then((r) => (unaryRuns[op] = r)),
      ),
    ]).finally(() => (loadDone = true));
    await sampleFor('load', Number.POSITIVE_INFINITY, () => loadDone || !serverAlive);
    await load;
    loadSeconds = (performance.now() - t0) / 1000;

    progress(`settle (idle ${opts.settle} s)…`);
    await sampleFor('settle', opts.settle);
  } finally {
    await server.stop();
  }

  // --- summary ---
  const phase = (p: Phase) => samples.filter((s) => s.phase === p);
  const delta = (a: number | undefined, b: number | undefined) =>
    a !== undefined && b !== undefined ? a - b : undefined;
  const baseline = phase('baseline');
  const loaded = phase('load');
  const settled = phase('settle');
  const afterLoad = [...loaded, ...settled];
  const last = settled[settled.length - 1] ?? loaded[loaded.length - 1];
  const med = (list: Sample[], pick: (s: Sample) => number | undefined) => median(defined(list.map(pick)));
  const base = {
    rss: med(baseline, (s) => s.rssBytes),
    heap: med(baseline, (s) => s.heapUsedBytes),
    external: med(baseline, (s) => s.externalBytes),
    pools: med(baseline, (s) => s.bufferPoolBytes),
    fds: med(baseline, (s) => s.fds),
    loopP99Ms: med(baseline, (s) => s.loopP99Ms),
  };
  const peak = {
    rss: max(afterLoad.map((s) => s.rssBytes)),
    heap: max(afterLoad.map((s) => s.heapUsedBytes)),
    external: max(afterLoad.map((s) => s.externalBytes)),
    pools: max(afterLoad.map((s) => s.bufferPoolBytes)),
    fds: max(afterLoad.map((s) => s.fds)),
    loopP99Ms: max(loaded.map((s) => s.loopP99Ms)),
  };
  const after = {
    rss: last?.rssBytes,
    heap: last?.heapUsedBytes,
    external: last?.externalBytes,
    pools: last?.bufferPoolBytes,
    fds: last?.fds,
    loopP99Ms: last?.loopP99Ms,
  };
  const secondHalf = loaded.filter((s) => s.t >= loadSeconds / 2 && s.rssBytes !== undefined);
  const rssSlope = slope(secondHalf.map((s) => [s.t, toMiB(s.rssBytes!)]));
  // A leak keeps climbing: the second half of the load then peaks clearly higher than the first half.
  // A bounded server levels off (the allocators' steps aside), so the two peaks are close.
  const firstHalfPeak = max(loaded.filter((s) => s.t < loadSeconds / 2).map((s) => s.rssBytes));
  const secondHalfPeak = max(secondHalf.map((s) => s.rssBytes));
  const halfGrowth = delta(secondHalfPeak, firstHalfPeak);
  const halfTolerance = Math.max(TREND_TOLERANCE_MIB * MiB, (firstHalfPeak ?? 0) * 0.1);
  const unaryP99 = (op: UnaryOp) => defined(loaded.map((s) => s.unary[op].p99Ms));
  const unarySummary = (op: UnaryOp) => ({
    reqPerSecondMedian: med(loaded, (s) => s.unary[op].reqPerSecond),
    p99MsMedian: median(unaryP99(op)),
    p99MsMax: max(unaryP99(op)),
    ok: unaryRuns[op]?.client?.totalOk,
    failed: unaryRuns[op]?.client?.totalFailed,
    skipped: unaryRuns[op]?.client?.skipped,
    cancelledAtEnd: unaryRuns[op]?.client?.cancelledAtEnd,
    errors: unaryRuns[op]?.client?.errors,
  });
  const load = {
    seconds: loadSeconds,
    streamBytesPerSecondMedian: med(loaded, (s) => s.streamBytesPerSecond),
    streamCalls: streamRun?.client?.calls,
    streamFailedCalls: streamRun?.client?.failedCalls,
    streamVerified: streamRun?.client?.verified,
    unary: {
      encrypt: unarySummary('encrypt'),
      decrypt: unarySummary('decrypt'),
    },
    loopP99MsMedian: med(loaded, (s) => s.loopP99Ms),
    cpuPercentMedian: med(loaded, (s) => s.cpuPercent),
    serverErrors: defined(afterLoad.map((s) => s.serverErrors)).reduce((a, b) => a + b, 0),
    /** RSS trend over the second half of the load: a leak climbs steadily, a bounded server levels off. */
    rssSlopeMiBPerMinute: rssSlope === undefined ? undefined : rssSlope * 60,
  };
  const fdsDelta = delta(after.fds, base.fds);
  const rssDelta = delta(after.rss, base.rss);
  // What the buffer pools gained over the baseline is theirs by design; the rest is held to the tolerance.
  const poolsDelta = delta(after.pools, base.pools);
  const rssBeyondPools = rssDelta !== undefined ? rssDelta - Math.max(0, poolsDelta ?? 0) : undefined;
  const heapLimit = base.heap !== undefined ? base.heap * 1.5 + 16 * MiB : undefined;
  const verdicts = {
    fds: {
      ok: fdsDelta !== undefined && Math.abs(fdsDelta) <= FDS_TOLERANCE,
      text:
        fdsDelta === undefined
          ? 'n/a'
          : Math.abs(fdsDelta) <= FDS_TOLERANCE
            ? `returned to baseline (${fdsDelta >= 0 ? '+' : ''}${fdsDelta}, tolerance ±${FDS_TOLERANCE})`
            : `did not return: ${fdsDelta >= 0 ? '+' : ''}${fdsDelta} over baseline`,
    },
    rss: {
      ok: rssBeyondPools !== undefined && rssBeyondPools <= RSS_TOLERANCE_MIB * MiB,
      text:
        rssDelta === undefined || rssBeyondPools === undefined
          ? 'n/a'
          : `${signedMiB(rssDelta)} over baseline after ${opts.settle} s idle (peak ${signedMiB(delta(peak.rss, base.rss))}), ` +
            `of which the buffer pools ${poolsDelta === undefined ? 'n/a' : signedMiB(poolsDelta)}; the rest ${signedMiB(rssBeyondPools)} ` +
            (rssBeyondPools <= RSS_TOLERANCE_MIB * MiB
              ? `within ${RSS_TOLERANCE_MIB} MiB`
              : `MORE than ${RSS_TOLERANCE_MIB} MiB (the allocators keep freed memory mapped; compare heap and external)`),
    },
    heap: {
      ok: after.heap !== undefined && heapLimit !== undefined && after.heap <= heapLimit,
      text:
        after.heap === undefined || heapLimit === undefined
          ? 'n/a'
          : `${mib(after.heap)} MiB after vs ${mib(base.heap)} MiB baseline: ` +
            (after.heap <= heapLimit
              ? 'within 1.5 × baseline + 16 MiB'
              : 'MORE than 1.5 × baseline + 16 MiB (garbage not yet collected, or a leak)'),
    },
    rssTrend: {
      ok: halfGrowth === undefined || halfGrowth <= halfTolerance,
      text:
        halfGrowth === undefined
          ? 'n/a (load too short)'
          : `peak in the second half of the load ${signedMiB(halfGrowth)} vs the first half ` +
            (halfGrowth <= halfTolerance
              ? `(levelled off: within ${fixed(toMiB(halfTolerance), 0)} MiB)`
              : `(STILL CLIMBING: more than ${fixed(toMiB(halfTolerance), 0)} MiB)`) +
            `; slope over the second half ${fixed(load.rssSlopeMiBPerMinute, 1)} MiB/min`,
    },
  };

  const ratios: Ratio[] = [
    { name: 'soak: server RSS after load ÷ before', value: ratioOf(after.rss, base.rss), main: true },
    { name: 'soak: server RSS peak ÷ before', value: ratioOf(peak.rss, base.rss) },
    { name: 'soak: open fds after load ÷ before', value: ratioOf(after.fds, base.fds), main: true },
    { name: 'soak: V8 heap used after load ÷ before', value: ratioOf(after.heap, base.heap) },
  ];

  // --- output ---
  const note =
    `${opts.streams} encrypt→decrypt pipes (${opts.messageBytes / KiB} KiB messages, ${opts.bytesPerCall / MiB} MiB per call, ` +
    `calls replaced as they end) + unary Encrypt and Decrypt of ${opts.unaryPayloadBytes / KiB} KiB at ${opts.unaryRate}/s each ` +
    `(open loop, ≤ ${opts.unaryConcurrency} in flight), ${opts.seconds} s; one sealbox process (pool.mode ` +
    `${String((server.config?.['pool'] as { mode?: string } | undefined)?.mode ?? 'auto')}), metrics scraped every second.`;
  let out = `## Soak (${opts.profile})\n\n${note}\n\n`;
  out += table(
    [
      't s',
      'phase',
      'RSS MiB',
      'heap MiB',
      'external MiB',
      'fds',
      'loop p99 ms',
      'CPU %',
      'streams MB/s',
      'stream calls',
      'unary req/s (enc+dec)',
      'unary p99 ms enc / dec',
      'errors client / server',
    ],
    samples.map((s) => {
      const reqs = defined(UNARY_OPS.map((op) => s.unary[op].reqPerSecond));
      const clientErrors = defined([s.streamFailed, s.unary.encrypt.failed, s.unary.decrypt.failed]);
      return [
        fixed(s.t, 0),
        s.phase,
        mib(s.rssBytes),
        mib(s.heapUsedBytes),
        mib(s.externalBytes),
        s.fds ?? 'n/a',
        fixed(s.loopP99Ms, 1),
        fixed(s.cpuPercent, 0),
        mbps(s.streamBytesPerSecond),
        s.streamCalls ?? '',
        reqs.length > 0
          ? fixed(
              reqs.reduce((a, b) => a + b, 0),
              0,
            )
          : '',
        s.phase === 'load' ? `${fixed(s.unary.encrypt.p99Ms, 1)} / ${fixed(s.unary.decrypt.p99Ms, 1)}` : '',
        `${clientErrors.length > 0 ? clientErrors.reduce((a, b) => a + b, 0) : ''} / ${s.serverErrors ?? 'n/a'}`,
      ];
    }),
  );
  out += '\n';
  out += table(
    ['server', 'baseline (idle, median)', 'peak', `after load (${opts.settle} s idle)`, 'verdict'],
    [
      ['RSS MiB', mib(base.rss), mib(peak.rss), mib(after.rss), verdicts.rss.text],
      ['V8 heap used MiB', mib(base.heap), mib(peak.heap), mib(after.heap), verdicts.heap.text],
      [
        'external memory MiB',
        mib(base.external),
        mib(peak.external),
        mib(after.external),
        'reported only (Buffers wait for a GC, which an idle server may not run)',
      ],
      [
        'buffer pools MiB (free, kept for reuse)',
        mib(base.pools),
        mib(peak.pools),
        mib(after.pools),
        'reported only: bounded by design (sealbox_buffer_pool_bytes, at most 32 MiB per pool)',
      ],
      ['open fds', base.fds ?? 'n/a', peak.fds ?? 'n/a', after.fds ?? 'n/a', verdicts.fds.text],
      [
        'event-loop delay p99 ms',
        fixed(base.loopP99Ms, 1),
        fixed(peak.loopP99Ms, 1),
        fixed(after.loopP99Ms, 1),
        `load median ${fixed(load.loopP99MsMedian, 1)} (idle shows the 10 ms sampling resolution)`,
      ],
      ['RSS trend', '', '', '', verdicts.rssTrend.text],
    ],
  );
  out += '\n';
  out += table(
    ['load', 'value'],
    [
      ['streams: plaintext MB/s (median of 1 s samples)', mbps(load.streamBytesPerSecondMedian)],
      [
        'streams: calls completed / failed',
        `${load.streamCalls ?? 'n/a'} / ${load.streamFailedCalls ?? 'n/a'} (output = input: ${load.streamVerified ? 'yes' : 'NO'})`,
      ],
      ...UNARY_OPS.map((op) => {
        const u = load.unary[op];
        return [
          `unary ${op}: req/s median, p99 ms median / max, ok / failed / skipped`,
          `${fixed(u.reqPerSecondMedian, 0)}, ${fixed(u.p99MsMedian, 1)} / ${fixed(u.p99MsMax, 1)}, ` +
            `${u.ok ?? 'n/a'} / ${u.failed ?? 'n/a'} / ${u.skipped ?? 'n/a'}`,
        ];
      }),
      ['server CPU % (median; 100 = one core)', fixed(load.cpuPercentMedian, 0)],
      ['server non-OK statuses (whole run)', load.serverErrors],
    ],
  );
  out += `\n${ratioTable(ratios)}`;
  out += `\nnode ${env.node}, ${env.cpus} CPUs (${env.cpuModel}), load average at start ${(env.loadavgAtStart as number[]).join(' ')}\n`;
  process.stdout.write(out);

  const points: SeriesPoint[] = [];
  const add = (panel: string, series: string, t: number, value: number | undefined) => {
    if (value !== undefined && Number.isFinite(value)) points.push({ t, panel, series, value });
  };
  for (const s of samples) {
    add('server memory (MiB)', 'RSS', s.t, s.rssBytes && toMiB(s.rssBytes));
    add('server memory (MiB)', 'V8 heap used', s.t, s.heapUsedBytes && toMiB(s.heapUsedBytes));
    add('server memory (MiB)', 'external', s.t, s.externalBytes && toMiB(s.externalBytes));
    add('open fds', 'fds', s.t, s.fds);
    add('event-loop delay p99 (ms)', 'loop p99', s.t, s.loopP99Ms);
    add('unary latency p99 (ms)', 'Encrypt p99', s.t, s.unary.encrypt.p99Ms);
    add('unary latency p99 (ms)', 'Decrypt p99', s.t, s.unary.decrypt.p99Ms);
    add('stream plaintext (MB/s)', 'pipes', s.t, s.streamBytesPerSecond && s.streamBytesPerSecond / 1e6);
    add('server CPU (% of a core)', 'CPU', s.t, s.cpuPercent);
  }
  const chart = await writeTimeSeriesChart(`soak-${stamp}`, points, {
    title: 'sealbox soak: server resources and latency over time',
    subtitle: `${opts.profile} profile; load from 0 to ${fixed(loadSeconds, 0)} s, then idle`,
    xTitle: 'seconds since the load started',
    marks: [
      { t: 0, label: 'load starts' },
      { t: loadSeconds, label: 'load ends' },
    ],
  });

  const failures = [
    ...(serverAlive ? [] : ['the server exited during the run']),
    ...(streamRun?.error ? [`stream-client: ${streamRun.error}`] : []),
    ...UNARY_OPS.flatMap((op) =>
      unaryRuns[op]?.error ? [`unary-client ${op}: ${unaryRuns[op]!.error}`] : [],
    ),
  ];
  const path = writeRun(
    'soak',
    { started, environment: env, options: opts },
    {
      serverConfig: server.config,
      thresholds: {
        fdsTolerance: FDS_TOLERANCE,
        rssToleranceMiB: RSS_TOLERANCE_MIB,
        trendToleranceMiB: TREND_TOLERANCE_MIB,
        heap: '1.5 × baseline + 16 MiB',
      },
      baseline: base,
      peak,
      after,
      load,
      verdicts,
      samples,
      streamClient: streamRun?.client,
      unaryClients: Object.fromEntries(UNARY_OPS.map((op) => [op, unaryRuns[op]?.client])),
      failures,
      ratios,
      chart,
    },
    stamp,
  );
  for (const f of failures) progress(`FAILED: ${f}`);
  progress(`wrote ${path} and ${chart} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  return failures.length > 0 ? 1 : 0;
}

runMain(main);
