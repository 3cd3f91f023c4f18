/** Output helpers: Markdown tables on stdout, progress on stderr, JSON results under bench/results. */
import { appendFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { BENCH_LIB_DIR } from './proc';

/** bench/results in the source tree (this file runs from <build>/bench/lib). */
export const RESULTS_DIR = join(BENCH_LIB_DIR, '..', '..', '..', 'bench', 'results');

/**
 * Where results go: bench/results, or `SEALBOX_BENCH_RESULTS_DIR` (tests point it at a temp dir).
 * When `SEALBOX_BENCH_RESULTS_LOG` names a file, every path written is appended to it, one per line
 * (bench/index.ts collects its children's results that way).
 */
export function resultsDir(): string {
  return process.env['SEALBOX_BENCH_RESULTS_DIR'] || RESULTS_DIR;
}

function logResult(path: string): void {
  const log = process.env['SEALBOX_BENCH_RESULTS_LOG'];
  if (log) appendFileSync(log, `${path}\n`);
}

export function progress(message: string): void {
  process.stderr.write(`${message}\n`);
}

export function table(headers: string[], rows: Array<Array<string | number>>): string {
  const lines = [
    `| ${headers.join(' | ')} |`,
    `|${headers.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`,
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ];
  return `${lines.join('\n')}\n`;
}

/** Decimal megabytes per second (MB = 10^6 bytes, as openssl speed reports). */
export const mbps = (bytesPerSecond: number | undefined): string =>
  bytesPerSecond === undefined || !Number.isFinite(bytesPerSecond)
    ? 'n/a'
    : (bytesPerSecond / 1e6).toFixed(0);

export const fixed = (n: number | undefined, digits = 2): string =>
  n === undefined || !Number.isFinite(n) ? 'n/a' : n.toFixed(digits);

export function median(values: number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Facts about the run that matter when reading its numbers. */
export function environment(): Record<string, unknown> {
  return {
    node: process.version,
    openssl: process.versions.openssl,
    cpus: availableParallelism(),
    cpuModel: cpus()[0]?.model,
    loadavgAtStart: loadavg().map((l) => Number(l.toFixed(2))),
  };
}

/** ISO 8601 basic format (no colons, so it is a portable file name): 20261128T201503Z. */
export function timestamp(date = new Date()): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

/** Writes bench/results/<name>-<stamp>.json (via a .tmp file); returns its path. */
export function writeResults(name: string, data: unknown, stamp = timestamp()): string {
  return writeResultFile(`${name}-${stamp}.json`, `${JSON.stringify(data, null, 2)}\n`);
}

/** What every profile-driven benchmark records about its run. */
export interface RunInfo {
  readonly started: number;
  readonly environment: unknown;
  readonly options: { readonly profile: string };
}

/**
 * Writes bench/results/<name>-<stamp>.json with the fields every benchmark shares (name, profile,
 * start, duration, environment, options) followed by its own `data`; returns the path.
 */
export function writeRun(
  name: string,
  run: RunInfo,
  data: Record<string, unknown>,
  stamp = timestamp(),
): string {
  return writeResults(
    name,
    {
      name,
      profile: run.options.profile,
      startedAt: new Date(run.started).toISOString(),
      durationSeconds: (Date.now() - run.started) / 1000,
      environment: run.environment,
      options: run.options,
      ...data,
    },
    stamp,
  );
}

/** Writes `text` to bench/results/<file> (via a .tmp file); returns its path. */
export function writeResultFile(file: string, text: string): string {
  const dir = resultsDir();
  mkdirSync(dir, { recursive: true });
  const path = join(dir, file);
  writeFileSync(`${path}.tmp`, text);
  renameSync(`${path}.tmp`, path);
  logResult(path);
  return path;
}

/**
 * One compared figure: always a ratio of two numbers measured in the same run. `main` ratios go into
 * the run's summary chart (bench/index.ts).
 */
export interface Ratio {
  readonly name: string;
  readonly value: number | undefined;
  readonly main?: boolean;
}

/** a ÷ b, or undefined when either is missing or b is not positive. */
export function ratioOf(a: number | undefined, b: number | undefined): number | undefined {
  return a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b > 0
    ? a / b
    : undefined;
}

/** A Markdown table of ratios. */
export function ratioTable(ratios: readonly Ratio[]): string {
  return table(
    ['ratio (same run)', 'value'],
    ratios.map((r) => [r.name, fixed(r.value)]),
  );
}

/** Percent formatting of a 0..1 fraction. */
export const pct = (n: number | undefined): string =>
  n === undefined || !Number.isFinite(n) ? 'n/a' : `${(n * 100).toFixed(0)} %`;

/** Parses a `--config` flag: a JSON object deep-merged into a benchmark sealbox's config. */
export function parseConfig(text: string): Record<string, unknown> {
  const value = JSON.parse(text) as unknown;
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new Error('--config must be a JSON object, e.g. \'{"stream":{"maxInFlightSegments":8}}\'');
  return value as Record<string, unknown>;
}

/** A deep copy of `value` with every `token` field replaced (configs with dev vault credentials). */
export function redactTokens<T>(value: T): T {
  return JSON.parse(JSON.stringify(value ?? null), (key, v) => (key === 'token' ? '<redacted>' : v)) as T;
}
