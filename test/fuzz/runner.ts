/**
 * Runs a fuzz target under Jazzer.js (coverage-guided, libFuzzer underneath) for a bounded time, in a
 * child process, and reads libFuzzer's statistics from its output. Used by the bounded CI run
 * (fuzz-targets.test.ts) and by `npm run fuzz` (run.ts).
 */
import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { REPO_ROOT } from '../helpers/paths';
import { ensureJazzerAddon } from './addon';

/** The fuzz targets, by name: dist/test/fuzz/targets/<name>.js exports `fuzz(data)`. */
export const TARGETS = ['header', 'chunks'] as const;
export type TargetName = (typeof TARGETS)[number];

/** Committed seed corpus: the v1 known-answer ciphertexts (both targets take a ciphertext). */
export const SEEDS_DIR = join(REPO_ROOT, 'test', 'fuzz', 'seeds');
/** Format tokens and the values around every length bound, for the mutator. */
export const DICTIONARY = join(REPO_ROOT, 'test', 'fuzz', 'sealbox.dict');

/** Per-input time limit; an input that takes longer is reported as a hang (timeout-* file). */
export const INPUT_TIMEOUT_SECONDS = 10;
/** Resident-memory limit; a run that grows past it is reported as an oom-* finding. */
export const RSS_LIMIT_MB = 2048;
/** Longest input libFuzzer makes: the largest seed is 12.4 KiB (three 4 KiB chunks and a partial). */
export const MAX_INPUT_BYTES = 16 * 1024;

export interface FuzzRun {
  readonly target: TargetName;
  /** The fuzzer's exit code: 0 when the time ran out without a finding. */
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly seconds: number;
  /** Inputs executed, executions per second, coverage (edges) and features at the end. */
  readonly runs?: number;
  readonly execPerSec?: number;
  readonly cov?: number;
  readonly ft?: number;
  readonly corpusSize?: number;
  readonly peakRssMb?: number;
  /** crash-*, timeout-*, oom-* and slow-unit-* files the run wrote. */
  readonly artifacts: string[];
  readonly logPath: string;
  readonly log: string;
}

export interface FuzzOptions {
  readonly target: TargetName;
  readonly seconds: number;
  /** Writable corpus: new interesting inputs go here (libFuzzer's first corpus directory). */
  readonly corpusDir: string;
  /** Where crash-*, timeout-* and oom-* files and the log go. */
  readonly artifactDir: string;
  /** Instead of fuzzing, run these inputs once each (reproduce a finding). */
  readonly inputs?: readonly string[];
  /** Echo the fuzzer's output to this process's stderr as well as to the log. */
  readonly echo?: boolean;
}

function jazzerCli(): string {
  const core = dirname(require.resolve('@jazzer.js/core/package.json', { paths: [REPO_ROOT] }));
  return join(core, 'dist', 'cli.js');
}

function targetModule(target: TargetName): string {
  return join(REPO_ROOT, 'dist', 'test', 'fuzz', 'targets', `${target}.js`);
}

function lastNumber(log: string, pattern: RegExp): number | undefined {
  const all = [...log.matchAll(pattern)];
  const last = all[all.length - 1];
  return last ? Number(last[1]) : undefined;
}

/** Runs one target; resolves when the fuzzer exits (or is killed well past its time bound). */
export async function runFuzzer(options: FuzzOptions): Promise<FuzzRun> {
  ensureJazzerAddon();
  mkdirSync(options.corpusDir, { recursive: true });
  mkdirSync(options.artifactDir, { recursive: true });
  const logPath = join(options.artifactDir, `${options.target}.log`);
  const args = [
    jazzerCli(),
    targetModule(options.target),
    ...(options.inputs ?? [options.corpusDir, SEEDS_DIR]),
    '--sync',
    // Instrument only sealbox's own compiled code (src/crypto and src/errors are what the targets load).
    '--includes=/dist/src/',
    `--timeout=${INPUT_TIMEOUT_SECONDS * 1000}`,
    '--',
    `-max_total_time=${options.seconds}`,
    `-rss_limit_mb=${RSS_LIMIT_MB}`,
    `-max_len=${MAX_INPUT_BYTES}`,
    `-dict=${DICTIONARY}`,
    `-artifact_prefix=${options.artifactDir}/`,
    '-print_final_stats=1',
  ];
  const started = Date.now();
  const log = createWriteStream(logPath);
  const child = spawn(process.execPath, args, { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  for (const stream of [child.stdout, child.stderr]) {
    stream.on('data', (chunk: Buffer) => {
      log.write(chunk);
      if (options.echo) process.stderr.write(chunk);
    });
  }
  // libFuzzer stops by itself; this only guards against a fuzzer that wedges outside an input.
  const killer = setTimeout(
    () => child.kill('SIGKILL'),
    (options.seconds + 2 * INPUT_TIMEOUT_SECONDS + 60) * 1000,
  );
  const [exitCode, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, sig) => resolve([code, sig]));
  });
  clearTimeout(killer);
  await new Promise<void>((resolve) => log.end(resolve));
  const text = readFileSync(logPath, 'utf8');
  const artifacts = readdirSync(options.artifactDir)
    .filter((f) => /^(crash|timeout|oom|leak|slow-unit)-/.test(f))
    .map((f) => join(options.artifactDir, f));
  return {
    target: options.target,
    exitCode,
    signal,
    seconds: (Date.now() - started) / 1000,
    // The final stats are missing when a finding ends the run; then the last status line tells.
    runs: lastNumber(text, /stat::number_of_executed_units:\s+(\d+)/g) ?? lastNumber(text, /^#(\d+)\s/gm),
    execPerSec:
      lastNumber(text, /stat::average_exec_per_sec:\s+(\d+)/g) ?? lastNumber(text, /\bexec\/s: (\d+)/g),
    cov: lastNumber(text, /\bcov: (\d+)/g),
    ft: lastNumber(text, /\bft: (\d+)/g),
    corpusSize: lastNumber(text, /\bcorp: (\d+)\//g),
    peakRssMb: lastNumber(text, /stat::peak_rss_mb:\s+(\d+)/g),
    artifacts,
    logPath,
    log: text,
  };
}

/** One line for a report: executions, rate, coverage. */
export function summary(run: FuzzRun): string {
  return (
    `${run.target}: ${run.runs ?? '?'} executions in ${run.seconds.toFixed(1)} s ` +
    `(${run.execPerSec ?? '?'}/s), coverage ${run.cov ?? '?'} edges, ${run.ft ?? '?'} features, ` +
    `corpus ${run.corpusSize ?? '?'} inputs, peak RSS ${run.peakRssMb ?? '?'} MB, exit ${run.exitCode ?? run.signal}`
  );
}
