/**
 * Streaming throughput, everything measured side by side in one run so that ratios are meaningful on
 * a noisy machine (bench/PERF-NOTES.md): in-process AES-256-GCM on one core, `openssl speed`, a plain grpc-js
 * echo (the transport ceiling), and sealbox EncryptStream/DecryptStream with pool.mode workers and
 * inline (separate server processes, one at a time). Each gRPC case runs a load generator in its own
 * process (bench/stream-client.ts). Prints Markdown tables, writes bench/results/throughput-<ts>.json.
 *
 *   node <build>/bench/throughput.js [--tiny|--quick|--full] [--seconds N] [--warmup N] [--repeat N]
 *     [--message-bytes B] [--channels K] [--config JSON] [--node-args "ARGS"] [--only id,id]
 */
import { execFile } from 'node:child_process';
import { createCipheriv, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { writeRatioChart } from './lib/chart';
import { runStreamClient, type StreamRun } from './lib/driver';
import { cpuTime, runMain, sampleRss, toMiB, trackChild } from './lib/proc';
import { PROFILE_OPTIONS, type Profile, pickProfile } from './lib/profile';
import {
  environment,
  fixed,
  mbps,
  median,
  parseConfig,
  progress,
  type Ratio,
  table,
  timestamp,
  writeRun,
} from './lib/report';
import { BENCH_KEY_ALIAS, type SpawnedServer, spawnEcho, spawnSealbox } from './lib/servers';

const MiB = 1024 * 1024;
const FEED = 64 * 1024;

interface Options {
  profile: Profile;
  quick: boolean;
  seconds: number;
  warmup: number;
  repeat: number;
  messageBytes: number;
  channels: number;
  sourceBytes: number;
  /** Seconds of in-process AES and of `openssl speed`. */
  baselineSeconds: number;
  /** Extra sealbox config (JSON), deep-merged into both sealbox servers' config. */
  config: Record<string, unknown>;
  /** Extra node arguments for the sealbox servers (e.g. V8 heap flags to measure). */
  nodeArgs: string[];
  /** Case ids to run (default all). */
  only: string[] | undefined;
}

/**
 * `--window BYTES` gives every party the same HTTP/2 window: sealbox (stream.http2WindowBytes), the
 * echo server and the load generators (through SEALBOX_BENCH_HTTP2_WINDOW, which children inherit),
 * so the echo stays the transport ceiling for exactly the settings sealbox runs with.
 */
function withWindow(config: Record<string, unknown>, window: number): Record<string, unknown> {
  if (!Number.isInteger(window) || window < 0) throw new Error('--window must be a whole number of bytes');
  if (window === 0) return config;
  process.env['SEALBOX_BENCH_HTTP2_WINDOW'] = String(window);
  return { ...config, stream: { ...(config['stream'] as object), http2WindowBytes: window } };
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      ...PROFILE_OPTIONS,
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      repeat: { type: 'string', default: '1' },
      'message-bytes': { type: 'string', default: String(MiB) },
      window: { type: 'string', default: '0' },
      channels: { type: 'string', default: '1' },
      config: { type: 'string', default: '{}' },
      'node-args': { type: 'string' },
      only: { type: 'string' },
    },
  });
  const profile = pickProfile(values);
  const quick = profile === 'quick';
  const tiny = profile === 'tiny';
  const positive = (name: string, text: string | undefined, fallback: number): number => {
    const n = text === undefined ? fallback : Number(text);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a non-negative number`);
    return n;
  };
  return {
    profile,
    quick,
    // Every case starts a cold server now: tiny windows of 0.5 s after 0.25 s could see no 8-stream
    // response at all under load, so tiny keeps 1 s after 0.5 s.
    seconds: positive('seconds', values.seconds, tiny ? 1 : quick ? 3 : 10),
    warmup: positive('warmup', values.warmup, tiny ? 0.5 : quick ? 1 : 2),
    repeat: Math.max(1, Math.floor(positive('repeat', values.repeat, 1))),
    messageBytes: Math.max(1, positive('message-bytes', values['message-bytes'], MiB)),
    channels: Math.max(1, Math.floor(positive('channels', values.channels, 1))),
    sourceBytes: tiny ? 8 * MiB : quick ? 32 * MiB : 64 * MiB,
    baselineSeconds: tiny ? 1 : 2,
    config: withWindow(parseConfig(values.config ?? '{}'), Number(values.window ?? '0')),
    nodeArgs: (values['node-args'] ?? '').split(' ').filter((a) => a.length > 0),
    only: values.only?.split(','),
  };
}

/** Node's AES-256-GCM on this thread: 1 MiB messages fed to `update` in 64 KiB pieces. */
function inProcessAes(seconds: number, messageBytes: number) {
  const key = randomBytes(32);
  const data = randomBytes(messageBytes);
  const iv = Buffer.alloc(12);
  let bytes = 0;
  let counter = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000) {
    iv.writeUInt32BE(counter++, 8);
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    for (let at = 0; at < data.length; at += FEED) cipher.update(data.subarray(at, at + FEED));
    cipher.final();
    cipher.getAuthTag();
    bytes += data.length;
  }
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { bytesPerSecond: bytes / elapsed, cpuSeconds: (cpu.user + cpu.system) / 1e6, bytes, elapsed };
}

/** `openssl speed -evp aes-256-gcm` at one message size; undefined (with a reason) if unavailable. */
async function opensslSpeed(
  messageBytes: number,
  seconds: number,
): Promise<{ bytesPerSecond?: number; note?: string; raw?: string }> {
  const args = ['speed', '-evp', 'aes-256-gcm', '-bytes', String(messageBytes), '-seconds', String(seconds)];
  return new Promise((resolve) => {
    const child = execFile('openssl', args, { timeout: (seconds + 30) * 1000 }, (err, stdout) => {
      if (err) {
        const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
        resolve({
          note: missing ? 'openssl is not on PATH: skipped' : `openssl speed failed: ${err.message}`,
        });
        return;
      }
      // "AES-256-GCM    4156173.96k" — thousands of bytes per second.
      const match = /^AES-256-GCM\s+([\d.]+)k\s*$/im.exec(stdout);
      resolve(
        match
          ? { bytesPerSecond: Number(match[1]) * 1000, raw: match[0].trim() }
          : { note: 'could not parse openssl speed output', raw: stdout.slice(-400) },
      );
    });
    trackChild(child);
  });
}

interface GrpcCase {
  readonly id: string;
  readonly server: 'echo' | 'workers' | 'inline';
  readonly mode: 'echo' | 'encrypt' | 'decrypt';
  readonly streams: number;
  /**
   * Run first on the same server, unmeasured, for as long as a measured case: the trap of issue 14,
   * where a burst of 8 streams leaves V8's heap so that the next stream pays full GCs.
   */
  readonly after?: { readonly mode: 'encrypt'; readonly streams: number };
  /** HTTP/2 connections the streams are spread over (the client's `connections`); default --channels. */
  readonly connections?: number;
  /** The server's node without sealbox's launch settings (src/cli/launch.ts; the client keeps them). */
  readonly stockNode?: boolean;
}

/** Every case gets a fresh server process, so no case inherits another's heap. */
const CASES: GrpcCase[] = [
  { id: 'echo-1', server: 'echo', mode: 'echo', streams: 1 },
  { id: 'echo-8', server: 'echo', mode: 'echo', streams: 8 },
  { id: 'echo-8x4', server: 'echo', mode: 'echo', streams: 8, connections: 4 },
  // The echo server's protobuf-shaped EncryptStream (lib/echo-service.ts): transport plus protobuf.
  { id: 'pbecho-encrypt-1', server: 'echo', mode: 'encrypt', streams: 1 },
  { id: 'pbecho-encrypt-8', server: 'echo', mode: 'encrypt', streams: 8 },
  { id: 'workers-encrypt-1', server: 'workers', mode: 'encrypt', streams: 1 },
  { id: 'workers-encrypt-8', server: 'workers', mode: 'encrypt', streams: 8 },
  { id: 'workers-decrypt-1', server: 'workers', mode: 'decrypt', streams: 1 },
  { id: 'inline-encrypt-1', server: 'inline', mode: 'encrypt', streams: 1 },
  { id: 'inline-encrypt-8', server: 'inline', mode: 'encrypt', streams: 8 },
  { id: 'inline-encrypt-8x4', server: 'inline', mode: 'encrypt', streams: 8, connections: 4 },
  { id: 'inline-decrypt-1', server: 'inline', mode: 'decrypt', streams: 1 },
  {
    id: 'inline-decrypt-1-after-8',
    server: 'inline',
    mode: 'decrypt',
    streams: 1,
    after: { mode: 'encrypt', streams: 8 },
  },
  // Node as it starts without sealbox's launch settings (src/cli/launch.ts): what they buy, and the
  // after-8-streams trap they remove, stay visible.
  { id: 'echo-1-stock', server: 'echo', mode: 'echo', streams: 1, stockNode: true },
  { id: 'inline-encrypt-1-stock', server: 'inline', mode: 'encrypt', streams: 1, stockNode: true },
  { id: 'inline-decrypt-1-stock', server: 'inline', mode: 'decrypt', streams: 1, stockNode: true },
  {
    id: 'inline-decrypt-1-after-8-stock',
    server: 'inline',
    mode: 'decrypt',
    streams: 1,
    after: { mode: 'encrypt', streams: 8 },
    stockNode: true,
  },
];

interface CaseRun {
  readonly repeat: number;
  readonly bytesPerSecond: number | undefined;
  readonly serverCpuSecondsPerGB: number | undefined;
  readonly clientCpuSecondsPerGB: number | undefined;
  readonly serverMaxRssMiB: number;
  /** Fresh Buffer bytes the server allocated per plaintext byte, in the window (lib/alloc-probe.ts). */
  readonly freshBytesPerByte: number | undefined;
  /** V8 full (mark-compact) GCs in the server per 10^9 plaintext bytes, in the window. */
  readonly fullGcsPerGB: number | undefined;
  readonly run: StreamRun;
}

async function main(): Promise<number> {
  const opts = options();
  const env = environment();
  const started = Date.now();
  const stamp = timestamp();
  progress(
    `throughput: ${opts.profile}, ${opts.seconds} s windows after ${opts.warmup} s warm-up, ` +
      `${opts.messageBytes} B messages, ${opts.repeat} repeat(s); load average ${(env.loadavgAtStart as number[]).join(' ')}`,
  );

  progress('in-process AES-256-GCM (one core)…');
  const aes = inProcessAes(opts.baselineSeconds, opts.messageBytes);
  progress(`  ${mbps(aes.bytesPerSecond)} MB/s`);
  progress('openssl speed -evp aes-256-gcm…');
  const openssl = await opensslSpeed(opts.messageBytes, opts.baselineSeconds);
  progress(`  ${openssl.bytesPerSecond ? `${mbps(openssl.bytesPerSecond)} MB/s` : openssl.note}`);

  const runs = new Map<string, CaseRun[]>(CASES.map((c) => [c.id, []]));
  const serverConfigs: Record<string, unknown> = {};
  let step = 0;
  const selected = CASES.filter((c) => !opts.only || opts.only.includes(c.id));
  const totalSteps = selected.length * opts.repeat;
  const streamOptions = (target: string, mode: GrpcCase['mode'], streams: number, connections?: number) => ({
    target,
    mode,
    streams,
    channels: connections ?? (streams > 1 ? opts.channels : 1),
    messageBytes: opts.messageBytes,
    seconds: opts.seconds,
    warmup: opts.warmup,
    keyAlias: BENCH_KEY_ALIAS,
    sourceBytes: opts.sourceBytes,
  });
  for (let repeat = 1; repeat <= opts.repeat; repeat++) {
    for (const c of selected) {
      step++;
      const server: SpawnedServer =
        c.server === 'echo'
          ? await spawnEcho('echo', { probe: true, stockNode: c.stockNode === true })
          : await spawnSealbox(
              { ...opts.config, pool: { ...(opts.config['pool'] as object), mode: c.server } },
              `sealbox-${c.server}`,
              { probe: true, nodeArgs: opts.nodeArgs, stockNode: c.stockNode === true },
            );
      if (server.config) serverConfigs[c.server] = server.config;
      progress(
        `[${step}/${totalSteps}] ${c.id}${opts.repeat > 1 ? ` (repeat ${repeat})` : ''}: fresh ${c.server} server ` +
          `pid ${server.pid}, RSS ${fixed(toMiB(sampleRss(server.pid) ?? 0), 0)} MiB`,
      );
      try {
        if (c.after) {
          progress(
            `  first ${c.after.mode} with ${c.after.streams} streams on the same server (not measured)…`,
          );
          const before = await runStreamClient(
            streamOptions(server.target, c.after.mode, c.after.streams),
            server.pid,
          );
          if (before.error) progress(`  that run FAILED: ${before.error}`);
        }
        const run = await runStreamClient(
          streamOptions(server.target, c.mode, c.streams, c.connections),
          server.pid,
          {
            ...(server.probe ? { probe: server.probe } : {}),
          },
        );
        const windowBytes = run.client?.windowBytes ?? 0;
        const gb = windowBytes / 1e9;
        const result: CaseRun = {
          repeat,
          bytesPerSecond: run.error ? undefined : run.client?.bytesPerSecond,
          serverCpuSecondsPerGB:
            gb > 0 && run.serverCpuSeconds !== undefined ? run.serverCpuSeconds / gb : undefined,
          clientCpuSecondsPerGB: gb > 0 && run.client ? run.client.clientCpuSeconds / gb : undefined,
          serverMaxRssMiB: toMiB(run.serverRss.maxBytes),
          freshBytesPerByte:
            windowBytes > 0 && run.serverProbe ? run.serverProbe.freshBytes / windowBytes : undefined,
          fullGcsPerGB: gb > 0 && run.serverProbe ? run.serverProbe.gc.major / gb : undefined,
          run,
        };
        runs.get(c.id)!.push(result);
        progress(
          run.error
            ? `  FAILED: ${run.error}`
            : `  ${mbps(result.bytesPerSecond)} MB/s, server ${fixed(result.serverCpuSecondsPerGB)} CPU s/GB, ` +
                `client ${fixed(result.clientCpuSecondsPerGB)} CPU s/GB, ` +
                `${fixed(result.freshBytesPerByte)} fresh B/B, ${fixed(result.fullGcsPerGB, 0)} full GCs/GB`,
        );
      } finally {
        const cpu = cpuTime(server.pid);
        await server.stop();
        progress(`  server stopped (${fixed(cpu, 1)} CPU s in total)`);
      }
    }
  }

  // Summaries: medians over repeats.
  const summary = new Map(
    CASES.map((c) => {
      const list = runs.get(c.id)!;
      const ok = list.map((r) => r.bytesPerSecond).filter((v): v is number => v !== undefined);
      const pick = (f: (r: CaseRun) => number | undefined) =>
        median(list.map(f).filter((v): v is number => v !== undefined));
      return [
        c.id,
        {
          ...c,
          bytesPerSecond: median(ok),
          min: ok.length ? Math.min(...ok) : undefined,
          max: ok.length ? Math.max(...ok) : undefined,
          failures: list.length - ok.length,
          serverCpuSecondsPerGB: pick((r) => r.serverCpuSecondsPerGB),
          clientCpuSecondsPerGB: pick((r) => r.clientCpuSecondsPerGB),
          serverMaxRssMiB: pick((r) => r.serverMaxRssMiB),
          freshBytesPerByte: pick((r) => r.freshBytesPerByte),
          fullGcsPerGB: pick((r) => r.fullGcsPerGB),
        },
      ];
    }),
  );
  const rate = (id: string) => summary.get(id)?.bytesPerSecond;
  const ratio = (a: number | undefined, b: number | undefined) =>
    a !== undefined && b !== undefined && b > 0 ? a / b : undefined;

  const label: Record<string, string> = {
    echo: 'echo (no crypto)',
    workers: 'sealbox pool.mode=workers',
    inline: 'sealbox pool.mode=inline',
  };
  const rows: Array<Array<string | number>> = [
    [
      'in-process AES-256-GCM, one core',
      '—',
      mbps(aes.bytesPerSecond),
      fixed(aes.cpuSeconds / (aes.bytes / 1e9)),
      '—',
      '—',
      '—',
      '—',
    ],
    [
      'openssl speed -evp aes-256-gcm',
      '—',
      openssl.bytesPerSecond ? mbps(openssl.bytesPerSecond) : `skipped (${openssl.note})`,
      openssl.bytesPerSecond ? fixed(1e9 / openssl.bytesPerSecond) : '—',
      '—',
      '—',
      '—',
      '—',
    ],
    ...CASES.map((c) => {
      const s = summary.get(c.id)!;
      const spread = opts.repeat > 1 && s.min !== undefined ? ` (${mbps(s.min)}–${mbps(s.max)})` : '';
      const failed = s.failures > 0 ? ` ⚠ ${s.failures} failed` : '';
      return [
        `${c.server === 'echo' && c.mode !== 'echo' ? 'protobuf-shaped echo (no crypto)' : label[c.server]}, ${c.mode === 'echo' ? 'Echo' : c.mode === 'encrypt' ? 'EncryptStream' : 'DecryptStream'}` +
          (c.after ? `, right after ${c.after.streams} streams on the same server` : '') +
          (c.stockNode ? ', without launch settings' : ''),
        c.connections ? `${c.streams} over ${c.connections} conns` : c.streams,
        `${mbps(s.bytesPerSecond)}${spread}${failed}`,
        fixed(s.serverCpuSecondsPerGB),
        fixed(s.clientCpuSecondsPerGB),
        fixed(s.freshBytesPerByte),
        fixed(s.fullGcsPerGB, 0),
        fixed(s.serverMaxRssMiB, 0),
      ];
    }),
  ];
  const ratios: Record<string, { workers?: number; inline?: number; main?: boolean }> = {
    'sealbox encrypt 1 stream ÷ echo 1 stream': {
      main: true,
      workers: ratio(rate('workers-encrypt-1'), rate('echo-1')),
      inline: ratio(rate('inline-encrypt-1'), rate('echo-1')),
    },
    'sealbox encrypt 1 stream ÷ protobuf-shaped echo 1 stream': {
      inline: ratio(rate('inline-encrypt-1'), rate('pbecho-encrypt-1')),
    },
    'sealbox encrypt 8 streams ÷ protobuf-shaped echo 8 streams': {
      inline: ratio(rate('inline-encrypt-8'), rate('pbecho-encrypt-8')),
    },
    'sealbox encrypt 1 stream ÷ in-process AES': {
      workers: ratio(rate('workers-encrypt-1'), aes.bytesPerSecond),
      inline: ratio(rate('inline-encrypt-1'), aes.bytesPerSecond),
    },
    'sealbox encrypt 8 streams ÷ 1 stream': {
      main: true,
      workers: ratio(rate('workers-encrypt-8'), rate('workers-encrypt-1')),
      inline: ratio(rate('inline-encrypt-8'), rate('inline-encrypt-1')),
    },
    'sealbox decrypt 1 stream ÷ echo 1 stream': {
      main: true,
      workers: ratio(rate('workers-decrypt-1'), rate('echo-1')),
      inline: ratio(rate('inline-decrypt-1'), rate('echo-1')),
    },
    'sealbox decrypt 1 stream ÷ encrypt 1 stream': {
      workers: ratio(rate('workers-decrypt-1'), rate('workers-encrypt-1')),
      inline: ratio(rate('inline-decrypt-1'), rate('inline-encrypt-1')),
    },
    'sealbox encrypt 8 streams over 4 connections ÷ 1 stream': {
      main: true,
      inline: ratio(rate('inline-encrypt-8x4'), rate('inline-encrypt-1')),
    },
    'sealbox decrypt right after 8 streams ÷ on a fresh server (inline only)': {
      main: true,
      inline: ratio(rate('inline-decrypt-1-after-8'), rate('inline-decrypt-1')),
    },
    'the same, without launch settings (÷ fresh, also without; inline only)': {
      inline: ratio(rate('inline-decrypt-1-after-8-stock'), rate('inline-decrypt-1-stock')),
    },
    'sealbox encrypt 1 stream ÷ echo 1 stream, both without launch settings (inline only)': {
      inline: ratio(rate('inline-encrypt-1-stock'), rate('echo-1-stock')),
    },
    'sealbox decrypt 1 stream ÷ echo 1 stream, both without launch settings (inline only)': {
      inline: ratio(rate('inline-decrypt-1-stock'), rate('echo-1-stock')),
    },
    'sealbox pool.mode workers ÷ inline, encrypt 1 stream (one value)': {
      workers: ratio(rate('workers-encrypt-1'), rate('inline-encrypt-1')),
    },
    'sealbox pool.mode workers ÷ inline, encrypt 8 streams (one value)': {
      workers: ratio(rate('workers-encrypt-8'), rate('inline-encrypt-8')),
    },
    'echo 8 streams ÷ 1 stream (transport only, one value)': {
      workers: ratio(rate('echo-8'), rate('echo-1')),
    },
    'echo 8 streams over 4 connections ÷ 1 stream (transport only, one value)': {
      workers: ratio(rate('echo-8x4'), rate('echo-1')),
    },
    'protobuf-shaped echo 8 streams ÷ 1 stream (one value)': {
      workers: ratio(rate('pbecho-encrypt-8'), rate('pbecho-encrypt-1')),
    },
  };

  const windowNote =
    `${opts.messageBytes} B messages, ${opts.seconds} s window after ${opts.warmup} s warm-up` +
    `${opts.repeat > 1 ? `, median of ${opts.repeat} (min–max)` : ''}` +
    `${opts.channels > 1 ? `, 8-stream cases over ${opts.channels} channels` : ', one connection unless a case says otherwise'}`;
  let out =
    `## Throughput (${windowNote})\n\nEvery case on a fresh server process. MB = 10^6 bytes of plaintext; ` +
    'CPU s/GB = CPU seconds (all threads) per 10^9 plaintext bytes within the window; fresh B/B = Buffer ' +
    'bytes the server allocated per plaintext byte; full GCs = V8 mark-compacts (bench/lib/alloc-probe.ts).\n\n';
  out += table(
    [
      'case',
      'streams',
      'MB/s',
      'server CPU s/GB',
      'client CPU s/GB',
      'server fresh B/B',
      'server full GCs/GB',
      'server max RSS MiB',
    ],
    rows,
  );
  out += '\n';
  out += table(
    ['ratio', 'workers', 'inline'],
    Object.entries(ratios).map(([name, r]) => [
      `${name}${r.main ? ' (main)' : ''}`,
      'workers' in r ? fixed(r.workers) : '—',
      'inline' in r ? fixed(r.inline) : '—',
    ]),
  );
  out += `\nnode ${env.node}, OpenSSL ${env.openssl}, ${env.cpus} CPUs (${env.cpuModel}), load average at start ${(env.loadavgAtStart as number[]).join(' ')}\n`;
  process.stdout.write(out);

  // Main ratios are the inline ones: inline is the default on 2 cores (pool.mode auto).
  const chartRatios: Ratio[] = Object.entries(ratios).flatMap(([name, r]) => [
    ...('workers' in r ? [{ name: 'inline' in r ? `${name} (workers)` : name, value: r.workers }] : []),
    ...('inline' in r
      ? [{ name: 'workers' in r ? `${name} (inline)` : name, value: r.inline, main: r.main === true }]
      : []),
  ]);
  const chart = await writeRatioChart(`throughput-${stamp}`, chartRatios, {
    title: 'sealbox streaming throughput ratios (same run)',
    subtitle: `${opts.messageBytes} B messages, ${opts.profile} profile`,
  });
  const path = writeRun(
    'throughput',
    { started, environment: env, options: opts },
    {
      serverConfigs,
      inProcessAes: aes,
      openssl,
      cases: Object.fromEntries([...summary].map(([id, s]) => [id, { ...s, runs: runs.get(id) }])),
      ratios,
      chartRatios,
      chart,
    },
    stamp,
  );
  progress(`wrote ${path} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  const failures = [...summary.values()].reduce((n, s) => n + s.failures, 0);
  return failures > 0 ? 1 : 0;
}

runMain(main);
