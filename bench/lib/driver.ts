/**
 * Runs bench/stream-client in a separate process against a server, and reads the server's CPU time
 * at the moments the client opens and closes its measured window (it tells us over IPC).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import { SERVER_ENV, SERVER_NODE_FLAGS } from '../../src/cli/launch';
import type { StreamClientResult } from '../stream-client';
import {
  BENCH_LIB_DIR,
  clientNodeArgs,
  cpuTime,
  RssSampler,
  type RssSummary,
  stopChild,
  trackChild,
} from './proc';
import { type ProbeDelta, type ProbeSnapshot, probeDelta, type ServerProbe } from './server-probe';

const STREAM_CLIENT_PATH = join(BENCH_LIB_DIR, '..', 'stream-client.js');

export interface StreamRunOptions {
  readonly target: string;
  readonly mode: 'encrypt' | 'echo' | 'decrypt' | 'pipe';
  readonly streams: number;
  readonly channels?: number;
  readonly messageBytes: number;
  readonly seconds?: number;
  readonly bytesPerStream?: number;
  readonly warmup?: number;
  readonly chunkSize?: number;
  readonly keyAlias?: string;
  /** decrypt: plaintext bytes of the ciphertext that is decrypted over and over. */
  readonly sourceBytes?: number;
  readonly stallSeconds?: number;
  /** Each stream makes calls of this many bytes, one after another (encrypt, echo, pipe). */
  readonly bytesPerCall?: number;
  /** Count failed calls and go on, instead of ending the run at the first failure. */
  readonly keepGoing?: boolean;
}

export interface ClientHooks {
  /** Called with the forked client at once (e.g. to send it {cmd:'tick'} requests). */
  readonly onChild?: (child: ChildProcess) => void;
  /** Snapshot the server's allocation and GC counters at the window's edges. */
  readonly probe?: ServerProbe;
}

export interface StreamRun {
  readonly client: StreamClientResult | undefined;
  /** Server CPU seconds (all threads) within the client's window. */
  readonly serverCpuSeconds: number | undefined;
  readonly serverRss: RssSummary;
  /** Fresh Buffer bytes and GCs in the server within the window (with `hooks.probe`). */
  readonly serverProbe?: ProbeDelta;
  readonly exitCode: number | null;
  readonly error?: string;
}

export async function runStreamClient(
  options: StreamRunOptions,
  serverPid: number,
  hooks: ClientHooks = {},
): Promise<StreamRun> {
  const args = [
    `--target=${options.target}`,
    `--mode=${options.mode}`,
    `--streams=${options.streams}`,
    `--channels=${options.channels ?? 1}`,
    `--message-bytes=${options.messageBytes}`,
    `--warmup=${options.warmup ?? 0}`,
    `--chunk-size=${options.chunkSize ?? 0}`,
    `--key-alias=${options.keyAlias ?? 'bench'}`,
    `--stall-seconds=${options.stallSeconds ?? 15}`,
    ...(options.seconds !== undefined ? [`--seconds=${options.seconds}`] : []),
    ...(options.bytesPerStream !== undefined ? [`--bytes-per-stream=${options.bytesPerStream}`] : []),
    ...(options.sourceBytes !== undefined ? [`--source-bytes=${options.sourceBytes}`] : []),
    ...(options.bytesPerCall !== undefined ? [`--bytes-per-call=${options.bytesPerCall}`] : []),
    ...(options.keepGoing ? ['--keep-going'] : []),
  ];
  // The load generator starts as the servers do (src/cli/launch.ts), whatever it drives: without
  // that a 1 MiB-message client pays the same full-GC loop and page faults as a server would (the
  // DecryptStream client measured 4.0 vs 1.7 CPU s/GB), and on 2 cores its CPU is the server's.
  const child = fork(STREAM_CLIENT_PATH, args, {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    execArgv: [...SERVER_NODE_FLAGS, ...clientNodeArgs()],
    env: { ...process.env, ...SERVER_ENV },
  });
  trackChild(child);
  hooks.onChild?.(child);
  let cpuStart = cpuTime(serverPid);
  let cpuEnd: number | undefined;
  let rss: RssSampler | undefined;
  let probeStart: Promise<ProbeSnapshot | undefined> | undefined;
  let probeEnd: Promise<ProbeSnapshot | undefined> | undefined;
  child.on('message', (m: { event?: string }) => {
    if (m.event === 'window-start') {
      cpuStart = cpuTime(serverPid);
      rss = new RssSampler(serverPid);
      probeStart = hooks.probe?.snapshot();
    } else if (m.event === 'window-end') {
      cpuEnd = cpuTime(serverPid);
      probeEnd = hooks.probe?.snapshot();
    }
  });
  let stdout = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });

  // Generous upper bound; the client has its own stall watchdog, this only catches a hung client.
  const expected =
    (options.warmup ?? 0) +
    (options.seconds ?? 0) +
    (options.bytesPerStream !== undefined ? (options.bytesPerStream * options.streams) / 20e6 : 0);
  const timeout = setTimeout(() => void stopChild(child, 'SIGKILL'), (expected + 120) * 1000);
  const exitCode = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  clearTimeout(timeout);
  cpuEnd ??= cpuTime(serverPid);
  const serverRss = (rss ?? new RssSampler(serverPid)).stop();

  let client: StreamClientResult | undefined;
  try {
    client = JSON.parse(stdout.trim().split('\n').pop() ?? '') as StreamClientResult;
  } catch {
    client = undefined;
  }
  const serverCpuSeconds =
    cpuStart !== undefined && cpuEnd !== undefined ? Math.max(0, cpuEnd - cpuStart) : undefined;
  const serverProbe = probeDelta(await probeStart, await probeEnd);
  const error = client?.error ?? (client ? undefined : `stream-client exited with ${exitCode} and no result`);
  return {
    client,
    serverCpuSeconds,
    serverRss,
    ...(serverProbe ? { serverProbe } : {}),
    exitCode,
    ...(error ? { error } : {}),
  };
}
