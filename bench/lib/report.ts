/** Output helpers: Markdown tables on stdout, progress on stderr, JSON results under bench/results. */
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { BENCH_LIB_DIR } from './proc';

/** bench/results in the source tree (this file runs from <build>/bench/lib). */
export const RESULTS_DIR = join(BENCH_LIB_DIR, '..', '..', '..', 'bench', 'results');

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

/** Writes bench/results/<name>-<timestamp>.json (via a .tmp file); returns its path. */
export function writeResults(name: string, data: unknown): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const path = join(RESULTS_DIR, `${name}-${timestamp()}.json`);
  writeFileSync(`${path}.tmp`, `${JSON.stringify(data, null, 2)}\n`);
  renameSync(`${path}.tmp`, path);
  return path;
}

/** Parses a `--config` flag: a JSON object deep-merged into a benchmark sealbox's config. */
export function parseConfig(text: string): Record<string, unknown> {
  const value = JSON.parse(text) as unknown;
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new Error('--config must be a JSON object, e.g. \'{"stream":{"maxInFlightSegments":8}}\'');
  return value as Record<string, unknown>;
}
