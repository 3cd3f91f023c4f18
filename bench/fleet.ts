/**
 * Fleet budget in a simulation (docs/operations.md, "Fleet budget"): N sidecars' key watchers polling
 * one dev vault whose throttling runs at Azure's published limits, to check the formula
 *
 *   watcher GETs per 10 s  =  N × (1 + v) × 10 / P
 *
 * and that the recommended poll interval (P ≥ 100 × N × (1 + v) / limit: at most 10 % of the key's
 * limit) causes no 429s, while an aggressive one does.
 *
 *   node <build>/bench/fleet.js [--tiny|--quick|--full] [--sidecars N] [--versions V] [--polls X]
 *     [--rate R] [--only case,…]
 *
 * Each simulated sidecar is a real `KeyWatcher` with its own `KeyStates`, over its own real Azure
 * provider (`createAzureProvider`: its own KeyClient, HTTPS connection pool and retry policy, a
 * static-token credential, the vault's CA as `caFile`), all in this process. A stand-in `WatchedCache`
 * reports the versions "in use": the key's current version and the V − 1 older ones, as a cache holding
 * DEKs under them would. Shared between sidecars: the credential object (a static token, read locally:
 * no request) and the CA file's text (read once). Nothing that makes a request is shared, so each
 * sidecar makes exactly the requests a real one makes, including its own authentication challenge.
 *
 * The dev vault runs in its own process (lib/vault.ts) with an RSA-2048 software key (Azure: 4,000
 * per 10 s) and an RSA-HSM-4096 key (250 per 10 s), each with V versions, 15 ms ± 5 ms per request.
 *
 * Time compression. P is minutes, so a case at factor k shortens the vault's throttling window and
 * every watcher's poll interval (and the provider's current-version TTL) by the same k, limits
 * unchanged: window 10 s / k, poll P / k. A window then sees N × (1 + v) × (10 / k) / (P / k) =
 * N × (1 + v) × 10 / P GETs, the same number as a real 10 s window sees at the real P: the k cancels,
 * so requests per window, and their ratio to the limit, are unchanged. Not compressed (they shift
 * requests within a window but do not change how many there are): the vault's latency, the TLS and
 * keep-alive timers, the pacer (5 checks/s, 4 at once: a watcher with V ≤ 4 versions never waits on it
 * at these intervals), and the retry policy; the vault's Retry-After is whole real seconds, so a 429'd
 * GET is retried ≥ 1 real second (k virtual seconds) later — only cases that are already throttled
 * retry at all. k is chosen per case so the process makes about R GETs per second (default
 * 150: a GET costs this process about 3 ms of CPU, TLS handshake and challenge included, and the vault
 * about 1.5 ms), at most 50 (see NICE_K).
 *
 * Starts: "rolling" starts the sidecars at uniform random times over one (compressed) poll interval, as
 * a rolling deployment would; "at-once" starts all of them together, so everyone's first check falls
 * into one window. The at-once cases run uncompressed (k = 1) until every sidecar's first check has
 * finished: compressing them would spread the burst over several windows only because this machine
 * needs seconds to send 1,000 × V requests (about 10 s for 1,000 × 2 on 2 busy cores, each sidecar's
 * first request with its own TLS handshake and challenge). Even uncompressed the burst is slower here
 * than from 1,000 pods, so an at-once case understates the throttling of a real simultaneous restart.
 *
 * Measured per case: GET attempts on the wire (the retry layer's attempt events, timestamped), the
 * mean per (compressed) window and the most in any window-long span (a sliding window, so it bounds
 * every fixed window the vault could have used), and from the vault's own counters its getKey count,
 * its 429s ("throttled") and authentication challenges. Writes bench/results/fleet-<ts>.{json,svg}.
 */
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { DEFAULT_KEY_STATES_OPTIONS, KeyStates } from '../src/cache/key-states';
import { AZURE_KEY_LIMITS_PER_10S } from '../src/devvault/controls';
import { createAzureProvider, staticTokenCredential } from '../src/kek/azure/construct';
import { DEFAULT_CURRENT_VERSION_TTL_MS } from '../src/kek/azure/provider';
import type { KekProvider } from '../src/kek/provider';
import { KekRegistry } from '../src/kek/registry';
import type { RetryEvent } from '../src/kek/retry';
import { KeyWatcher, type WatchedCache } from '../src/kek/watcher';
import { createLogger } from '../src/log/logger';
import { writeRatioChart } from './lib/chart';
import { cpuTime, runMain, toMiB } from './lib/proc';
import { numberFlag, PROFILE_OPTIONS, pickProfile } from './lib/profile';
import {
  environment,
  fixed,
  pct,
  progress,
  type Ratio,
  ratioOf,
  ratioTable,
  table,
  timestamp,
  writeRun,
} from './lib/report';
import { type DevVaultProcess, spawnDevVault } from './lib/vault';

const ALIAS = 'fleet';
/** The two key classes of the docs' table. */
type KeyClass = 'rsa2048' | 'rsaHsm4096';
const KEY_LABEL: Record<KeyClass, string> = { rsa2048: 'RSA-2048', rsaHsm4096: 'RSA-HSM-4096' };
/**
 * Compression factors whose window (10,000 ms / k) is a whole number of ms, as the dev vault needs. At
 * most 50: a window of ≥ 200 ms stays long next to this process's timer delays on a busy machine (a
 * stall of d ms bunches d / window windows' worth of requests into one).
 */
const NICE_K = [1, 2, 4, 5, 8, 10, 16, 20, 25, 40, 50] as const;
/** Poll intervals an operator would write down, seconds. */
const NICE_POLL = [10, 15, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600, 7200] as const;

function options() {
  const { values } = parseArgs({
    options: {
      ...PROFILE_OPTIONS,
      sidecars: { type: 'string' },
      versions: { type: 'string', default: '2' },
      polls: { type: 'string' },
      rate: { type: 'string' },
      only: { type: 'string' },
    },
  });
  const profile = pickProfile(values);
  const sidecars = Math.floor(
    numberFlag('sidecars', values.sidecars, { tiny: 100, quick: 1000, full: 1000 }[profile]),
  );
  const versions = Math.floor(numberFlag('versions', values.versions, 2));
  if (sidecars < 1) throw new Error('--sidecars must be at least 1');
  if (versions < 1 || versions > 4) throw new Error('--versions (1 + v) must be 1 to 4');
  return {
    profile,
    sidecars,
    /** 1 + v: versions each sidecar has in use. */
    versions,
    /** How long a rolling case runs, in (compressed) poll intervals, and at least in windows. */
    polls: numberFlag('polls', values.polls, { tiny: 1, quick: 1.5, full: 3 }[profile]),
    minWindows: { tiny: 1, quick: 4, full: 10 }[profile],
    /** GETs per real second the compression factor aims at (tiny: faster, its numbers mean nothing). */
    rate: Math.max(1, numberFlag('rate', values.rate, { tiny: 300, quick: 150, full: 150 }[profile])),
    /** The at-once cases (uncompressed) are left out of the tiny profile. */
    atOnce: profile !== 'tiny',
    /** Case ids to run (default: all). */
    only: values.only?.split(',').map((x) => x.trim()),
  };
}
type Options = ReturnType<typeof options>;

/** Watcher GETs per 10 s per key (docs/operations.md). */
const getsPer10s = (n: number, versions: number, pollSeconds: number) => (n * versions * 10) / pollSeconds;

/** The shortest poll interval keeping watcher GETs at ≤ 10 % of `limit`, rounded up to a usual value. */
function recommendedPoll(n: number, versions: number, limit: number): number {
  const min = (100 * n * versions) / limit;
  return NICE_POLL.find((p) => p >= min) ?? Math.ceil(min);
}

interface FleetCase {
  readonly id: string;
  readonly keyClass: KeyClass;
  readonly setting: 'recommended' | 'aggressive';
  readonly start: 'rolling' | 'at-once';
  readonly pollSeconds: number;
  /** Compression factor (1: real time). */
  readonly k: number;
}

function cases(opts: Options): FleetCase[] {
  const { sidecars: n, versions } = opts;
  const p2048 = recommendedPoll(n, versions, AZURE_KEY_LIMITS_PER_10S.rsa2048);
  const pHsm = recommendedPoll(n, versions, AZURE_KEY_LIMITS_PER_10S.rsaHsm4096);
  // The docs' "1,000 sidecars, 2 versions, 30 s" row (267 % of the HSM key's limit), for any N.
  const pAggressive = Math.max(1, Math.round((30 * n) / 1000));
  // k so that the process makes about opts.rate GETs per real second.
  const kFor = (pollSeconds: number) => {
    const ideal = (opts.rate * pollSeconds) / (n * versions);
    return [...NICE_K].reverse().find((k) => k <= ideal) ?? 1;
  };
  const out: FleetCase[] = [
    { keyClass: 'rsa2048', setting: 'recommended', start: 'rolling', pollSeconds: p2048 },
    { keyClass: 'rsaHsm4096', setting: 'recommended', start: 'rolling', pollSeconds: pHsm },
    { keyClass: 'rsaHsm4096', setting: 'aggressive', start: 'rolling', pollSeconds: pAggressive },
  ].map((c) => ({ ...c, k: kFor(c.pollSeconds), id: `${c.keyClass}-${c.setting}-${c.start}` }) as FleetCase);
  if (opts.atOnce) {
    for (const c of [
      { keyClass: 'rsa2048', pollSeconds: p2048 },
      { keyClass: 'rsaHsm4096', pollSeconds: pHsm },
    ] as const)
      out.push({
        ...c,
        setting: 'recommended',
        start: 'at-once',
        k: 1,
        id: `${c.keyClass}-recommended-at-once`,
      });
  }
  if (opts.only) {
    const unknown = opts.only.filter((id) => !out.some((c) => c.id === id));
    if (unknown.length > 0)
      throw new Error(
        `--only: unknown case ${unknown.join(', ')} (one of ${out.map((c) => c.id).join(', ')})`,
      );
  }
  return out.filter((c) => !opts.only || opts.only.includes(c.id));
}

/**
 * The DEK cache as the watcher sees it: DEKs are cached under `keyIds` (current version first), and
 * new messages seal under the current version, so the watcher never sees a rotation to adopt.
 */
class VersionsInUse implements WatchedCache {
  constructor(private readonly keyIds: readonly string[]) {}
  keyIdsInUse(): Set<string> {
    return new Set(this.keyIds);
  }
  activeKeyIds(): Map<string, string> {
    return new Map([[ALIAS, this.keyIds[0]!]]);
  }
  invalidate(): void {}
}

/** What one case's fleet recorded on the client side. */
class FleetTally {
  /** ms since the case's start of every GET attempt (each one HTTP request on the wire). */
  readonly attempts: number[] = [];
  /** Watcher requests (KeyWatcher onRequest): the checks it asked for, before any retry. */
  watcherRequests = 0;
  retriesThrottled = 0;
  readonly failures: Record<string, number> = {};
  inFlight = 0;
  checksDone = 0;
  /** performance.now() at the case's start. */
  t0 = 0;

  readonly onEvent = (event: RetryEvent): void => {
    switch (event.type) {
      case 'attempt':
        this.attempts.push(performance.now() - this.t0);
        if (event.attempt === 1) this.inFlight++;
        break;
      case 'retry':
        if (event.reason === 'throttled') this.retriesThrottled++;
        break;
      case 'success':
        this.inFlight--;
        break;
      case 'failure':
        this.inFlight--;
        this.failures[event.failure] = (this.failures[event.failure] ?? 0) + 1;
        break;
    }
  };
}

/** One simulated sidecar: a real watcher, key-state model and Azure provider. */
interface Sidecar {
  readonly watcher: KeyWatcher;
  readonly provider: KekProvider;
}

interface Shared {
  readonly vault: DevVaultProcess;
  readonly credential: ReturnType<typeof staticTokenCredential>;
  readonly readFile: (path: string) => string;
}

function buildSidecar(
  c: FleetCase,
  keyName: string,
  keyIds: readonly string[],
  shared: Shared,
  tally: FleetTally,
): Sidecar {
  const { info } = shared.vault;
  const provider = createAzureProvider(
    {
      provider: 'azure',
      vaultUrl: info.url,
      keyName,
      credential: { kind: 'static-token', token: info.sealboxToken },
      caFile: info.caFile,
    },
    {
      credential: shared.credential,
      readFile: shared.readFile,
      retryDeps: { onEvent: tally.onEvent },
      // Scaled with the poll interval: how long a read current version stays fresh, in virtual time.
      currentVersionTtlMs: Math.round(DEFAULT_CURRENT_VERSION_TTL_MS / c.k),
    },
  );
  const registry = new KekRegistry(new Map([[ALIAS, provider]]));
  const states = new KeyStates(DEFAULT_KEY_STATES_OPTIONS);
  const watcher = new KeyWatcher(
    registry,
    new VersionsInUse(keyIds),
    states,
    {
      pollIntervalMs: (c.pollSeconds * 1000) / c.k,
      // sealbox's defaults (config revocation.maxChecksPerSecond, maxConcurrentChecks).
      maxChecksPerSecond: 5,
      maxConcurrentChecks: 4,
      onRequest: () => {
        tally.watcherRequests++;
      },
    },
    createLogger('silent'),
  );
  watcher.onChecked(() => {
    tally.checksDone++;
  });
  return { watcher, provider };
}

/** GETs per window: the mean over [0, spanMs), the most in any window-long span, and fixed windows. */
function windowStats(times: readonly number[], windowMs: number, spanMs: number) {
  const t = times.filter((x) => x >= 0 && x < spanMs).sort((a, b) => a - b);
  let max = 0;
  let j = 0;
  for (let i = 0; i < t.length; i++) {
    while (t[i]! - t[j]! >= windowMs) j++;
    max = Math.max(max, i - j + 1);
  }
  const windows = new Array<number>(Math.max(1, Math.ceil(spanMs / windowMs))).fill(0);
  for (const x of t) windows[Math.floor(x / windowMs)]!++;
  return { count: t.length, meanPerWindow: (t.length * windowMs) / spanMs, maxInAnyWindow: max, windows };
}

interface CaseResult {
  readonly id: string;
  readonly keyClass: KeyClass;
  readonly keyLabel: string;
  readonly setting: FleetCase['setting'];
  readonly start: FleetCase['start'];
  readonly sidecars: number;
  readonly versions: number;
  readonly pollSeconds: number;
  readonly k: number;
  readonly windowMs: number;
  readonly pollMsCompressed: number;
  /** The key's limit per 10 s (per compressed window). */
  readonly limit: number;
  /** The formula's GETs per 10 s (rolling) or the first check's burst N × (1 + v) (at-once). */
  readonly expectedPerWindow: number;
  readonly expect429: boolean;
  readonly realSeconds: number;
  readonly virtualSeconds: number;
  readonly watcherRequests: number;
  readonly getAttempts: number;
  readonly meanPerWindow: number;
  readonly maxInAnyWindow: number;
  readonly maxShareOfLimit: number;
  /** GETs per fixed window from the case's start (client side). */
  readonly windows: number[];
  /** The vault's own counts over the case (counters reset at its start, read at its end). */
  readonly vault: { getKey: number; throttled: number; challenges: number };
  readonly retriesThrottled: number;
  readonly failedCalls: Record<string, number>;
  /** Sidecars whose watcher has read its key's current version (a health verdict) by the end. */
  readonly sidecarsWithVerdict: number;
  readonly eventLoopDelayMs: { p99: number; max: number };
  /** CPU time per GET attempt of this process (all watchers) and of the vault's, over the case. */
  readonly cpuMsPerGet: { watchers: number | undefined; vault: number | undefined };
  readonly rssMiB: number;
  readonly buildSeconds: number;
  /** 0 × 429 when the formula says the case fits the limit, some when it does not. */
  readonly asExpected: boolean;
}

async function runCase(c: FleetCase, opts: Options, shared: Shared): Promise<CaseResult> {
  const { vault } = shared;
  const limit = AZURE_KEY_LIMITS_PER_10S[c.keyClass];
  const windowMs = Math.round(10_000 / c.k);
  const pollMs = (c.pollSeconds * 1000) / c.k;
  const key =
    c.keyClass === 'rsa2048'
      ? { name: vault.info.keyName, keyIds: vault.info.keyIds }
      : { name: vault.info.hsmKey!.name, keyIds: vault.info.hsmKey!.keyIds };
  // Current version first, then the v older ones.
  const inUse = [...key.keyIds].reverse().slice(0, opts.versions);
  const expectedPerWindow =
    c.start === 'rolling'
      ? getsPer10s(opts.sidecars, opts.versions, c.pollSeconds)
      : opts.sidecars * opts.versions;
  progress(
    `${c.id}: ${opts.sidecars} sidecars × ${opts.versions} versions, P ${c.pollSeconds} s, k ${c.k} ` +
      `(window ${windowMs} ms, poll ${fixed(pollMs / 1000, 2)} s real); expected ${fixed(expectedPerWindow, 0)} GETs ` +
      `per window against ${limit}`,
  );

  const built = performance.now();
  const tally = new FleetTally();
  const sidecars = Array.from({ length: opts.sidecars }, () =>
    buildSidecar(c, key.name, inUse, shared, tally),
  );
  const buildSeconds = (performance.now() - built) / 1000;
  await vault.setThrottling({ enabled: true, windowMs });
  await vault.resetCounters();
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  const cpu0 = process.cpuUsage();
  const vaultCpu0 = cpuTime(vault.pid);
  const t0 = performance.now();
  tally.t0 = t0;
  const timers: NodeJS.Timeout[] = [];
  if (c.start === 'at-once') {
    for (const s of sidecars) s.watcher.start();
  } else {
    for (const s of sidecars) timers.push(setTimeout(() => s.watcher.start(), Math.random() * pollMs));
  }

  if (c.start === 'rolling') {
    await sleep(Math.max(opts.polls * pollMs, opts.minWindows * windowMs));
  } else {
    // Until every sidecar's first check has finished (with its retries), at most 60 s.
    const deadline = t0 + 60_000;
    while (tally.checksDone < opts.sidecars && performance.now() < deadline) await sleep(50);
  }
  for (const t of timers) clearTimeout(t);
  for (const s of sidecars) s.watcher.stop();
  // The cut: the client's attempts before it, the vault's counts right after it. (Timers may fire
  // late on a busy machine, so the span is measured, not assumed.)
  const spanMs = performance.now() - t0;
  const counters = await vault.counters();
  const cpu = process.cpuUsage(cpu0);
  const vaultCpu1 = cpuTime(vault.pid);
  loop.disable();
  const rssMiB = toMiB(process.memoryUsage().rss);
  // Let calls still in flight (and their retries) finish before the next case resets the counters.
  const drainUntil = performance.now() + 15_000;
  while (tally.inFlight > 0 && performance.now() < drainUntil) await sleep(50);
  await Promise.all(sidecars.map((s) => s.provider.close()));

  const w = windowStats(tally.attempts, windowMs, spanMs);
  const throttled = counters['throttled'] ?? 0;
  const expect429 = expectedPerWindow > limit;
  const result: CaseResult = {
    id: c.id,
    keyClass: c.keyClass,
    keyLabel: KEY_LABEL[c.keyClass],
    setting: c.setting,
    start: c.start,
    sidecars: opts.sidecars,
    versions: opts.versions,
    pollSeconds: c.pollSeconds,
    k: c.k,
    windowMs,
    pollMsCompressed: pollMs,
    limit,
    expectedPerWindow,
    expect429,
    realSeconds: spanMs / 1000,
    virtualSeconds: (spanMs * c.k) / 1000,
    watcherRequests: tally.watcherRequests,
    getAttempts: w.count,
    meanPerWindow: w.meanPerWindow,
    maxInAnyWindow: w.maxInAnyWindow,
    maxShareOfLimit: w.maxInAnyWindow / limit,
    windows: w.windows,
    vault: {
      getKey: counters[`getKey/${key.name.toLowerCase()}`] ?? 0,
      throttled,
      challenges: counters['challenges'] ?? 0,
    },
    retriesThrottled: tally.retriesThrottled,
    failedCalls: tally.failures,
    sidecarsWithVerdict: sidecars.filter((s) => s.watcher.currentStates().get(ALIAS) !== undefined).length,
    eventLoopDelayMs: { p99: loop.percentile(99) / 1e6, max: loop.max / 1e6 },
    cpuMsPerGet: {
      watchers: w.count > 0 ? (cpu.user + cpu.system) / 1000 / w.count : undefined,
      vault:
        vaultCpu0 !== undefined && vaultCpu1 !== undefined && w.count > 0
          ? ((vaultCpu1 - vaultCpu0) * 1000) / w.count
          : undefined,
    },
    rssMiB,
    buildSeconds,
    asExpected: expect429 ? throttled > 0 : throttled === 0,
  };
  progress(
    `  ${result.getAttempts} GETs in ${fixed(result.realSeconds, 1)} s (${fixed(result.virtualSeconds, 0)} s virtual): ` +
      `mean ${fixed(result.meanPerWindow, 0)} / window, max ${result.maxInAnyWindow} in any window ` +
      `(${pct(result.maxShareOfLimit)} of ${limit}); vault getKey ${result.vault.getKey}, 429 ${throttled}; ` +
      `loop delay p99 ${fixed(result.eventLoopDelayMs.p99, 0)} ms; RSS ${fixed(rssMiB, 0)} MiB; CPU ms/GET ` +
      `${fixed(result.cpuMsPerGet.watchers)} here, ${fixed(result.cpuMsPerGet.vault)} vault`,
  );
  return result;
}

async function main(): Promise<number> {
  const opts = options();
  const env = environment();
  const started = Date.now();
  const stamp = timestamp();
  progress(
    `fleet (${opts.profile}): ${opts.sidecars} watchers in one process, ${opts.versions} versions each; ` +
      `load average ${(env.loadavgAtStart as number[]).join(' ')}`,
  );
  const vault = await spawnDevVault({
    latency: { fixedMs: 10, jitterMs: 10 },
    throttling: true,
    keySize: 2048,
    versions: opts.versions,
    hsmKeySize: 4096,
  });
  progress(
    `dev vault pid ${vault.pid}: ${vault.info.keyName} (RSA-2048), ${vault.info.hsmKey?.name} (RSA-HSM-4096)`,
  );
  const ca = readFileSync(vault.info.caFile, 'utf8');
  const shared: Shared = {
    vault,
    credential: staticTokenCredential(() => vault.info.sealboxToken),
    readFile: (path) => (path === vault.info.caFile ? ca : readFileSync(path, 'utf8')),
  };

  const results: CaseResult[] = [];
  try {
    for (const c of cases(opts)) results.push(await runCase(c, opts, shared));
  } finally {
    await vault.stop();
  }

  const ratios: Ratio[] = results
    .filter((r) => r.start === 'rolling')
    .map((r) => ({
      name: `${r.keyLabel} P ${r.pollSeconds} s: measured ÷ formula GETs per window`,
      value: ratioOf(r.meanPerWindow, r.expectedPerWindow),
      main: r.setting === 'recommended',
    }));

  let out =
    `## Fleet budget: ${opts.sidecars} key watchers against one dev vault (${opts.profile}; ` +
    `${opts.versions} versions in use each)\n\n` +
    'Each watcher is a real KeyWatcher + KeyStates over its own Azure provider (its own KeyClient and ' +
    "connections; one shared static-token credential). Throttling at Azure's limits per 10 s " +
    "(RSA-2048 4,000, RSA-HSM-4096 250). Time compressed by k: the vault's window is 10 s / k and " +
    'every poll interval P / k, so a window holds as many GETs as a real 10 s window does at the real P. ' +
    '"max in any window": most GET attempts (client side) in any window-long span; 429s: the vault\'s ' +
    'own count. At-once cases run uncompressed until every first check has finished.\n\n';
  out += table(
    [
      'case',
      'key (limit / 10 s)',
      'start',
      'P',
      'k (window, poll)',
      'formula GETs / 10 s',
      'measured mean / window',
      'max in any window',
      'max ÷ limit',
      'GETs (vault)',
      '429s (vault)',
      'failed checks',
      'loop delay p99',
      'as expected',
    ],
    results.map((r) => [
      r.setting,
      `${r.keyLabel} (${r.limit.toLocaleString('en-US')})`,
      r.start,
      `${r.pollSeconds} s`,
      `${r.k} (${r.windowMs} ms, ${fixed(r.pollMsCompressed / 1000, 1)} s)`,
      r.start === 'rolling' ? fixed(r.expectedPerWindow, 0) : `${r.expectedPerWindow} at start`,
      // An at-once case is one burst, shorter than a window or little longer: no mean rate to speak of.
      r.start === 'rolling' ? fixed(r.meanPerWindow, 0) : 'n/a',
      r.maxInAnyWindow,
      pct(r.maxShareOfLimit),
      r.vault.getKey,
      r.vault.throttled,
      Object.values(r.failedCalls).reduce((a, b) => a + b, 0),
      `${fixed(r.eventLoopDelayMs.p99, 0)} ms`,
      r.asExpected ? 'yes' : '**no**',
    ]),
  );
  out += `\n${ratioTable(ratios)}`;
  out +=
    `\nnode ${env.node}, ${env.cpus} CPUs (${env.cpuModel}), load average at start ` +
    `${(env.loadavgAtStart as number[]).join(' ')}; RSS with ${opts.sidecars} watchers ` +
    `${fixed(Math.max(...results.map((r) => r.rssMiB)), 0)} MiB\n`;
  process.stdout.write(out);

  const chart = await writeRatioChart(`fleet-${stamp}`, ratios, {
    title: 'Fleet budget: measured ÷ formula watcher GETs per window (same run)',
    subtitle: `${opts.sidecars} watchers, ${opts.versions} versions, ${opts.profile} profile`,
  });
  const path = writeRun(
    'fleet',
    { started, environment: env, options: opts },
    {
      vault: {
        latency: vault.info.latency,
        keys: { rsa2048: vault.info.keyIds, rsaHsm4096: vault.info.hsmKey?.keyIds },
      },
      shared: ['credential (static token, no request)', 'CA file text'],
      cases: Object.fromEntries(results.map((r) => [r.id, r])),
      ratios,
      chart,
    },
    stamp,
  );
  progress(`wrote ${path} and ${chart} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  return 0;
}

runMain(main);
