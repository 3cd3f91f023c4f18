/**
 * Runs bench/unary-client in a separate process and reads the CPU time of the watched processes
 * (the server, the dev vault) at the moments the client opens and closes its window; optional hooks
 * run at the same moments (e.g. vault counter snapshots).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { join } from 'node:path';
import type { UnaryClientResult } from '../unary-client';
import { BENCH_LIB_DIR, cpuTime, stopChild, trackChild } from './proc';

const UNARY_CLIENT_PATH = join(BENCH_LIB_DIR, '..', 'unary-client.js');

export interface UnaryRunOptions {
  readonly target: string;
  readonly mode: 'encrypt' | 'decrypt' | 'echo' | 'seal';
  readonly concurrency: number;
  readonly payloadBytes: number;
  readonly seconds?: number;
  readonly warmup?: number;
  readonly requests?: number;
  readonly keyAlias?: string;
  readonly sources?: number;
  readonly ciphertexts?: string;
  readonly out?: string;
  readonly channels?: number;
  readonly drainSeconds?: number;
  /** Open loop: calls per second on a fixed schedule, at most `concurrency` in flight. */
  readonly rate?: number;
}

export interface UnaryRun<H = unknown> {
  readonly client: UnaryClientResult | undefined;
  /** CPU seconds (all threads) of each watched process within the client's window. */
  readonly cpuSeconds: Record<string, number | undefined>;
  /** What the hooks returned at the window's start and end. */
  readonly atStart: H | undefined;
  readonly atEnd: H | undefined;
  readonly exitCode: number | null;
  readonly error?: string;
}

export interface WindowHooks<H> {
  /** Runs when the window opens and again when it closes; both results are returned. */
  readonly snapshot?: () => Promise<H>;
  /** Called with the forked client at once (e.g. to send it {cmd:'tick'} requests). */
  readonly onChild?: (child: ChildProcess) => void;
}

export async function runUnaryClient<H = unknown>(
  options: UnaryRunOptions,
  watch: Record<string, number>,
  hooks: WindowHooks<H> = {},
): Promise<UnaryRun<H>> {
  const opt = (name: string, value: string | number | undefined) =>
    value === undefined ? [] : [`--${name}=${value}`];
  const args = [
    `--target=${options.target}`,
    `--mode=${options.mode}`,
    `--concurrency=${options.concurrency}`,
    `--payload-bytes=${options.payloadBytes}`,
    ...opt('seconds', options.seconds),
    ...opt('warmup', options.warmup),
    ...opt('requests', options.requests),
    ...opt('key-alias', options.keyAlias),
    ...opt('sources', options.sources),
    ...opt('ciphertexts', options.ciphertexts),
    ...opt('out', options.out),
    ...opt('channels', options.channels),
    ...opt('drain-seconds', options.drainSeconds),
    ...opt('rate', options.rate),
  ];
  const child = fork(UNARY_CLIENT_PATH, args, { stdio: ['ignore', 'pipe', 'inherit', 'ipc'], execArgv: [] });
  trackChild(child);
  hooks.onChild?.(child);
  const read = () => Object.fromEntries(Object.entries(watch).map(([name, pid]) => [name, cpuTime(pid)]));
  let cpuStart = read();
  let cpuEnd: Record<string, number | undefined> | undefined;
  let atStart: Promise<H> | undefined;
  let atEnd: Promise<H> | undefined;
  child.on('message', (m: { event?: string }) => {
    if (m.event === 'window-start') {
      cpuStart = read();
      atStart = hooks.snapshot?.();
      atStart?.catch(() => {});
    } else if (m.event === 'window-end') {
      cpuEnd = read();
      atEnd = hooks.snapshot?.();
      atEnd?.catch(() => {});
    }
  });
  let stdout = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });

  const expected = (options.warmup ?? 0) + (options.seconds ?? 0) + (options.drainSeconds ?? 5);
  const timeout = setTimeout(() => void stopChild(child, 'SIGKILL'), (expected + 120) * 1000);
  const exitCode = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  clearTimeout(timeout);
  cpuEnd ??= read();

  let client: UnaryClientResult | undefined;
  try {
    client = JSON.parse(stdout.trim().split('\n').pop() ?? '') as UnaryClientResult;
  } catch {
    client = undefined;
  }
  const cpuSeconds = Object.fromEntries(
    Object.keys(watch).map((name) => {
      const a = cpuStart[name];
      const b = cpuEnd?.[name];
      return [name, a !== undefined && b !== undefined ? Math.max(0, b - a) : undefined];
    }),
  );
  const settle = async (p: Promise<H> | undefined) => (p ? await p.catch(() => undefined) : undefined);
  const error = client?.error ?? (client ? undefined : `unary-client exited with ${exitCode} and no result`);
  return {
    client,
    cpuSeconds,
    atStart: await settle(atStart),
    atEnd: await settle(atEnd),
    exitCode,
    ...(error ? { error } : {}),
  };
}
