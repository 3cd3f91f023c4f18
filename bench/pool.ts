/**
 * Worker pool vs inline AES, side by side in one run (issue 14): sealbox with pool.mode "workers" and
 * "inline", its server pinned to 1 core and to 2 cores (`taskset`), EncryptStream and DecryptStream,
 * 1 MiB and 64 KiB messages, 1 and 8 streams; a fresh server per case. For each case: MB/s, server
 * CPU s/GB, the server's event-loop delay under the load (perf_hooks.monitorEventLoopDelay, p50/p99/
 * max: how long any other caller waits behind the main thread), and the latency of a unary 1 KiB
 * Encrypt probe sent at a fixed rate while the streams run (its p99 is what a small caller on the same
 * sidecar feels). Then 8 streams over 1 vs 4 connections (inline, all cores). Ratios are workers ÷
 * inline at 1 and 2 cores. Writes bench/results/pool-<ts>.{json,svg}.
 *
 * With the server on 1 core the load generators are pinned to the other cores (when there are any);
 * with the server on 2 cores they share them. Without `taskset` (or with fewer cores than asked) the
 * server runs unpinned, and the results say so.
 *
 *   node <build>/bench/pool.js [--tiny|--quick|--full] [--seconds N] [--warmup N] [--probe-rate R]
 */
import { type ChildProcess, execFileSync, type SpawnOptions, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { SERVER_ENV, SERVER_NODE_FLAGS } from '../src/cli/launch';
import { mergeConfigInput } from '../src/config/config';
import { createLocalKeyFile } from '../src/kek/local';
import { writeRatioChart } from './lib/chart';
import { runStreamClient, type StreamRun } from './lib/driver';
import type { LoopDelay } from './lib/loop-delay';
import {
  BENCH_LIB_DIR,
  runMain,
  stopChild,
  trackChild,
  trackTempDir,
  WATCH_PARENT,
  waitForSocket,
} from './lib/proc';
import { numberFlag, PROFILE_OPTIONS, type Profile, pickProfile } from './lib/profile';
import {
  environment,
  fixed,
  mbps,
  progress,
  type Ratio,
  ratioOf,
  ratioTable,
  table,
  timestamp,
  writeRun,
} from './lib/report';
import { BENCH_KEY_ALIAS, CLI_PATH } from './lib/servers';
import { runUnaryClient, type UnaryRun } from './lib/unary-driver';

const KiB = 1024;
const MiB = 1024 * KiB;
const LOOP_DELAY = join(BENCH_LIB_DIR, 'loop-delay.js');

type PoolMode = 'workers' | 'inline';
type Op = 'encrypt' | 'decrypt';

interface Case {
  readonly id: string;
  readonly cores: number;
  readonly mode: PoolMode;
  readonly op: Op;
  readonly messageBytes: number;
  readonly streams: number;
  readonly connections: number;
}

function options() {
  const { values } = parseArgs({
    options: {
      ...PROFILE_OPTIONS,
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      'probe-rate': { type: 'string' },
    },
  });
  const profile = pickProfile(values);
  return {
    profile,
    seconds: numberFlag('seconds', values.seconds, { tiny: 1, quick: 2.5, full: 8 }[profile]),
    warmup: numberFlag('warmup', values.warmup, { tiny: 0.3, quick: 0.7, full: 2 }[profile]),
    /**
     * Unary 1 KiB Encrypt probes per second during each case (open loop, ≤ 16 in flight); low, so its
     * own server CPU stays small next to the streams'.
     */
    probeRate: numberFlag('probe-rate', values['probe-rate'], 20),
    sourceBytes: { tiny: 4, quick: 16, full: 64 }[profile] * MiB,
  };
}

/**
 * Message sizes: tiny runs 64 KiB only, so that even a starved server answers a few messages inside
 * its short window (the harness needs every ratio to have a value); the others 1 MiB and 64 KiB.
 */
const messageSizes = (profile: Profile): number[] => (profile === 'tiny' ? [64 * KiB] : [MiB, 64 * KiB]);

/** The grid: tiny keeps EncryptStream on 1 stream; the others run everything. */
function cases(profile: Profile, coreCounts: number[]): Case[] {
  const tiny = profile === 'tiny';
  const list: Case[] = [];
  for (const cores of coreCounts)
    for (const op of tiny ? (['encrypt'] as const) : (['encrypt', 'decrypt'] as const))
      for (const messageBytes of messageSizes(profile))
        for (const streams of tiny ? [1] : [1, 8])
          for (const mode of ['inline', 'workers'] as const)
            list.push({
              id: `${cores}c-${mode}-${op}-${messageBytes >= MiB ? '1MiB' : '64KiB'}-${streams}s`,
              cores,
              mode,
              op,
              messageBytes,
              streams,
              connections: 1,
            });
  return list;
}

/** 8 streams over 1 vs 4 connections (inline, server unpinned): the client-side spread. */
function connectionCases(profile: Profile): Case[] {
  return [1, 4].map((connections) => ({
    id: `conn-${connections}-encrypt`,
    cores: 0,
    mode: 'inline' as const,
    op: 'encrypt' as const,
    messageBytes: messageSizes(profile)[0]!,
    streams: profile === 'tiny' ? 4 : 8,
    connections,
  }));
}

// ---------------------------------------------------------------------------------------------------
// CPU pinning

function hasTaskset(): boolean {
  try {
    execFileSync('taskset', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** "0" / "0,1": the first `cores` CPUs. */
const cpuList = (cores: number) => Array.from({ length: cores }, (_, i) => i).join(',');

/** Pins every thread of a running process (the load generators, once forked) to `cpus`. */
function pin(pid: number, cpus: string): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' });
  } catch {
    // The process may already be gone; an unpinned client only makes the figure noisier.
  }
}

/** User + system CPU seconds of a process's main thread (its tid is its pid), or undefined. */
function mainThreadCpu(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return undefined;
  }
}

/** USER_HZ: 100 on every Linux this runs on (proc.ts asks getconf; the ratio is what matters here). */
const CLOCK_TICKS = 100;

// ---------------------------------------------------------------------------------------------------
// The server: sealbox with the loop-delay probe, pinned with taskset

interface PinnedServer {
  readonly pid: number;
  readonly target: string;
  readonly config: Record<string, unknown>;
  loopDelay(): Promise<LoopDelay | undefined>;
  stop(): Promise<void>;
}

async function spawnPinned(mode: PoolMode, cpus: string | undefined, label: string): Promise<PinnedServer> {
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-bench-pool-'));
  const removeDir = trackTempDir(dir);
  const keyFile = join(dir, 'kek.json');
  createLocalKeyFile(keyFile, BENCH_KEY_ALIAS);
  const socketPath = join(dir, 'sealbox.sock');
  const config = mergeConfigInput(
    {
      dataDir: dir,
      listen: { socket: socketPath },
      keys: { [BENCH_KEY_ALIAS]: { provider: 'local', file: keyFile } },
      log: { level: 'warn' },
      shutdown: { graceMs: 2000 },
    },
    // Every batch goes where the mode says (no small batches inline) so the two modes differ only there.
    { pool: { mode, ...(mode === 'workers' ? { inlineBelowBytes: 0 } : {}) } },
  );
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  // Started as sealbox ships (src/cli/launch.ts), like every other bench server.
  const node = [
    process.execPath,
    ...SERVER_NODE_FLAGS,
    '--require',
    WATCH_PARENT,
    '--require',
    LOOP_DELAY,
    CLI_PATH,
  ];
  const argv = [...node, 'serve', '--config', configFile];
  const spawnOptions: SpawnOptions = {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: { ...process.env, ...SERVER_ENV },
  };
  // taskset execs node: same pid, the IPC channel's fd inherited.
  const child: ChildProcess = cpus
    ? spawn('taskset', ['-c', cpus, ...argv], spawnOptions)
    : spawn(argv[0]!, argv.slice(1), spawnOptions);
  trackChild(child);
  child.stderr?.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n'))
      if (line.trim()) process.stderr.write(`[${label} ${child.pid}] ${line}\n`);
  });
  const stop = async () => {
    await stopChild(child);
    removeDir();
  };
  try {
    await waitForSocket(socketPath, () => child.exitCode === null && child.signalCode === null);
  } catch (err) {
    await stop();
    throw err;
  }
  const loopDelay = () =>
    new Promise<LoopDelay | undefined>((resolve) => {
      const timer = setTimeout(() => done(undefined), 5000);
      const onMessage = (m: { event?: string } & LoopDelay) => {
        if (m.event === 'loop-delay') done(m);
      };
      const done = (value: LoopDelay | undefined) => {
        clearTimeout(timer);
        child.removeListener('message', onMessage);
        resolve(value);
      };
      child.on('message', onMessage);
      // With a callback, a closed channel (the server died) is reported there, not as an 'error' event.
      if (!child.connected) done(undefined);
      else child.send({ cmd: 'loop-delay' }, (err) => err && done(undefined));
    });
  return { pid: child.pid!, target: `unix:${socketPath}`, config, loopDelay, stop };
}

// ---------------------------------------------------------------------------------------------------
// One case

interface CaseResult extends Case {
  readonly pinned: string | undefined;
  readonly bytesPerSecond: number | undefined;
  readonly serverCpuSecondsPerGB: number | undefined;
  /**
   * CPU of the server's main thread alone per GB: the event loop's own share, what other callers
   * compete with (inline: AES included; workers: not). Less distorted by a busy machine than MB/s.
   */
  readonly mainThreadCpuSecondsPerGB: number | undefined;
  /** Event-loop delay of the server's main thread within the stream client's window. */
  readonly loopDelay: LoopDelay | undefined;
  /** The unary 1 KiB Encrypt probe sent during the case. */
  readonly probe: { p50Ms?: number; p99Ms?: number; maxMs?: number; calls: number; failed: number };
  readonly failures: number;
  readonly error?: string;
  readonly stream: StreamRun;
  readonly unary?: UnaryRun;
}

async function runCase(
  c: Case,
  opts: ReturnType<typeof options>,
  pinning: { server?: string; clients?: string },
): Promise<CaseResult> {
  const server = await spawnPinned(c.mode, pinning.server, `sealbox-${c.id}`);
  try {
    let atStart: Promise<LoopDelay | undefined> | undefined;
    let atEnd: Promise<LoopDelay | undefined> | undefined;
    let mainStart: number | undefined;
    let mainEnd: number | undefined;
    const streamRun = runStreamClient(
      {
        target: server.target,
        mode: c.op,
        streams: c.streams,
        channels: c.connections,
        messageBytes: c.messageBytes,
        seconds: opts.seconds,
        warmup: opts.warmup,
        sourceBytes: opts.sourceBytes,
        keyAlias: BENCH_KEY_ALIAS,
      },
      server.pid,
      {
        onChild: (child) => {
          if (pinning.clients && child.pid) pin(child.pid, pinning.clients);
          child.on('message', (m: { event?: string }) => {
            // Reading resets the histogram: the window-end reading covers exactly the window.
            if (m.event === 'window-start') {
              mainStart = mainThreadCpu(server.pid);
              atStart = server.loopDelay();
            } else if (m.event === 'window-end') {
              mainEnd = mainThreadCpu(server.pid);
              atEnd = server.loopDelay();
            }
          });
        },
      },
    );
    // The probe runs over the same span (decrypt's setup encrypts its source first: the probe's
    // warm-up covers that too, roughly). Not in the connection cases, which compare MB/s only.
    const unaryRun =
      opts.probeRate > 0 && c.cores > 0
        ? runUnaryClient(
            {
              target: server.target,
              mode: 'encrypt',
              concurrency: 16,
              payloadBytes: KiB,
              seconds: opts.seconds,
              warmup: opts.warmup + (c.op === 'decrypt' ? opts.sourceBytes / 100e6 : 0),
              rate: opts.probeRate,
              keyAlias: BENCH_KEY_ALIAS,
              drainSeconds: 2,
            },
            {},
            { onChild: (child) => pinning.clients && child.pid && pin(child.pid, pinning.clients) },
          )
        : undefined;
    const [stream, unary] = await Promise.all([streamRun, unaryRun]);
    await atStart;
    const loopDelay = await atEnd;
    const client = stream.client;
    const gb = (client?.windowBytes ?? 0) / 1e9;
    const probe = unary?.client;
    const failures =
      (client?.failedCalls ?? 0) +
      (client?.error ? 1 : 0) +
      (probe?.windowFailed ?? 0) +
      (probe?.error ? 1 : 0);
    return {
      ...c,
      pinned: pinning.server,
      bytesPerSecond: client?.bytesPerSecond,
      mainThreadCpuSecondsPerGB:
        mainStart !== undefined && mainEnd !== undefined && gb > 0 ? (mainEnd - mainStart) / gb : undefined,
      serverCpuSecondsPerGB:
        stream.serverCpuSeconds !== undefined && gb > 0 ? stream.serverCpuSeconds / gb : undefined,
      loopDelay,
      probe: {
        ...(probe?.latency.p50Ms !== undefined ? { p50Ms: probe.latency.p50Ms } : {}),
        ...(probe?.latency.p99Ms !== undefined ? { p99Ms: probe.latency.p99Ms } : {}),
        ...(probe?.latency.maxMs !== undefined ? { maxMs: probe.latency.maxMs } : {}),
        calls: probe?.windowOk ?? 0,
        failed: probe?.windowFailed ?? 0,
      },
      failures,
      ...(stream.error || unary?.error ? { error: stream.error ?? unary?.error } : {}),
      stream,
      ...(unary ? { unary } : {}),
    };
  } finally {
    await server.stop();
  }
}

// ---------------------------------------------------------------------------------------------------

async function main(): Promise<number> {
  const opts = options();
  const env = environment();
  const started = Date.now();
  const stamp = timestamp();
  const cores = availableParallelism();
  const taskset = hasTaskset();
  const coreCounts = [1, 2].filter((n) => n <= cores);
  const notes: string[] = [];
  if (!taskset)
    notes.push('taskset not found: servers ran unpinned on all cores; "1c"/"2c" only label the case');
  if (cores < 2) notes.push(`only ${cores} CPU: the 2-core cases were skipped`);
  notes.push(
    `each case: a fresh server; the unary probe (1 KiB Encrypt, ${opts.probeRate}/s) adds its own server CPU to every case alike ` +
      '(about 10 ms per second: ~0.1 s/GB at 100 MB/s, more when the streams are slow)',
  );
  const grid = [...cases(opts.profile, coreCounts), ...connectionCases(opts.profile)];
  progress(
    `pool (${opts.profile}): ${grid.length} cases, ${opts.seconds} s window after ${opts.warmup} s warm-up, ` +
      `probe ${opts.probeRate}/s; ${cores} CPUs, taskset ${taskset ? 'yes' : 'no'}; load average ${(env['loadavgAtStart'] as number[]).join(' ')}`,
  );

  const results: CaseResult[] = [];
  for (const c of grid) {
    const pinning =
      taskset && c.cores > 0
        ? {
            server: cpuList(c.cores),
            // Load generators on the cores the server does not have, if any; else anywhere.
            ...(cores > c.cores
              ? { clients: Array.from({ length: cores - c.cores }, (_, i) => i + c.cores).join(',') }
              : {}),
          }
        : {};
    progress(`${c.id}…`);
    const r = await runCase(c, opts, pinning);
    results.push(r);
    progress(
      `  ${mbps(r.bytesPerSecond)} MB/s, ${fixed(r.serverCpuSecondsPerGB)} s/GB (main thread ${fixed(r.mainThreadCpuSecondsPerGB)}), loop delay p99 ${fixed(r.loopDelay?.p99Ms)} ms, ` +
        `probe p99 ${fixed(r.probe.p99Ms)} ms${r.error ? `; error: ${r.error}` : ''}`,
    );
  }

  const find = (id: string) => results.find((r) => r.id === id);
  const ratios: Ratio[] = [];
  // Headline: EncryptStream, 1 stream, the largest message size of the profile.
  const headline = (c: Case) =>
    c.op === 'encrypt' && c.messageBytes === messageSizes(opts.profile)[0] && c.streams === 1;
  for (const w of results.filter((r) => r.mode === 'workers')) {
    const i = find(w.id.replace('-workers-', '-inline-'));
    const what = `${w.op === 'encrypt' ? 'EncryptStream' : 'DecryptStream'} ${w.messageBytes >= MiB ? '1 MiB' : '64 KiB'}, ${w.streams} stream${w.streams > 1 ? 's' : ''}, ${w.cores} core${w.cores > 1 ? 's' : ''}`;
    ratios.push({
      name: `workers ÷ inline MB/s: ${what}`,
      value: ratioOf(w.bytesPerSecond, i?.bytesPerSecond),
      main: headline(w),
    });
    ratios.push({
      name: `inline ÷ workers server s/GB: ${what}`,
      value: ratioOf(i?.serverCpuSecondsPerGB, w.serverCpuSecondsPerGB),
    });
    ratios.push({
      name: `inline ÷ workers main-thread s/GB: ${what}`,
      value: ratioOf(i?.mainThreadCpuSecondsPerGB, w.mainThreadCpuSecondsPerGB),
    });
    ratios.push({
      name: `inline ÷ workers loop-delay p99: ${what}`,
      value: ratioOf(i?.loopDelay?.p99Ms, w.loopDelay?.p99Ms),
      main: headline(w),
    });
    ratios.push({
      name: `inline ÷ workers unary probe p99: ${what}`,
      value: ratioOf(i?.probe.p99Ms, w.probe.p99Ms),
      main: headline(w) && w.cores === 2,
    });
  }
  const [one, four] = connectionCases(opts.profile).map((c) => find(c.id));
  ratios.push({
    name: `${one?.streams ?? 8} streams over 4 ÷ 1 connections MB/s (inline, all cores)`,
    value: ratioOf(four?.bytesPerSecond, one?.bytesPerSecond),
    main: true,
  });

  let out = `## Worker pool vs inline (${opts.profile}: ${opts.seconds} s window after ${opts.warmup} s warm-up)\n\n`;
  out += `${notes.map((n) => `- ${n}`).join('\n')}\n\n`;
  out += table(
    [
      'case',
      'MB/s',
      'server s/GB',
      'main thread s/GB',
      'loop delay p50 / p99 / max ms',
      'probe p50 / p99 / max ms',
      'probe calls',
      'failures',
    ],
    results.map((r) => [
      r.id,
      mbps(r.bytesPerSecond),
      fixed(r.serverCpuSecondsPerGB),
      fixed(r.mainThreadCpuSecondsPerGB),
      `${fixed(r.loopDelay?.p50Ms, 1)} / ${fixed(r.loopDelay?.p99Ms, 1)} / ${fixed(r.loopDelay?.maxMs, 1)}`,
      `${fixed(r.probe.p50Ms, 1)} / ${fixed(r.probe.p99Ms, 1)} / ${fixed(r.probe.maxMs, 1)}`,
      r.probe.calls,
      r.failures,
    ]),
  );
  out += `\n${ratioTable(ratios)}`;
  out += `\nnode ${env['node']}, ${cores} CPUs (${env['cpuModel']}), load average at start ${(env['loadavgAtStart'] as number[]).join(' ')}\n`;
  process.stdout.write(out);

  const chart = await writeRatioChart(
    `pool-${stamp}`,
    ratios.filter((r) => r.main),
    {
      title: 'Worker pool vs inline (same run)',
      subtitle: `${opts.profile} profile, server pinned with taskset`,
    },
  );
  const path = writeRun(
    'pool',
    { started, environment: env, options: opts },
    {
      taskset,
      notes,
      cases: Object.fromEntries(
        results.map(({ stream, unary, ...r }) => [
          r.id,
          { ...r, serverRss: stream.serverRss, clientCpuSeconds: stream.client?.clientCpuSeconds },
        ]),
      ),
      ratios,
      chart,
    },
    stamp,
  );
  progress(`wrote ${path} and ${chart} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  return results.every((r) => r.bytesPerSecond !== undefined && r.failures === 0) ? 0 : 1;
}

runMain(main);
