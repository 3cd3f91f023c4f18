/**
 * Runs bench/unary-client in a separate process (through driveClient): the server's and vault's CPU
 * within the client's window, and optional hooks at the window's edges (e.g. vault counter snapshots).
 */
import { join } from 'node:path';
import type { UnaryClientResult } from '../unary-client';
import { type ClientRun, driveClient, type WindowHooks } from './client-driver';
import { BENCH_LIB_DIR } from './proc';

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

/** What one unary-client run measured (see ClientRun). */
export type UnaryRun<H = unknown> = ClientRun<UnaryClientResult, H>;

/** Runs one unary-client case; `watch` names the processes whose CPU counts (e.g. {server: pid}). */
export function runUnaryClient<H = unknown>(
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
  return driveClient<UnaryClientResult, H>(UNARY_CLIENT_PATH, args, {
    ...hooks,
    watch,
    expectedSeconds: (options.warmup ?? 0) + (options.seconds ?? 0) + (options.drainSeconds ?? 5),
  });
}
