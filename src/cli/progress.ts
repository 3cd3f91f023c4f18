/**
 * A one-line progress display for encrypt/decrypt on stderr: bytes done (of the total when the input
 * is a file), percent, and throughput in MB/s. Only used when stderr is a terminal, so pipes and logs
 * never see carriage returns. Redraws at most every `intervalMs`, not per chunk.
 */
import { Transform, type TransformCallback } from 'node:stream';

/** What the meter writes to: a terminal stream (process.stderr in the CLI). */
export interface ProgressOutput {
  write(text: string): unknown;
  readonly columns?: number;
}

/** Decimal units, matching MB/s. */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let value = bytes / 1000;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/** The progress line for `bytes` done after `elapsedMs`. */
export function formatProgress(p: {
  readonly label: string;
  readonly bytes: number;
  readonly total?: number | undefined;
  readonly elapsedMs: number;
  readonly width?: number | undefined;
}): string {
  const rate = p.elapsedMs > 0 ? p.bytes / 1e6 / (p.elapsedMs / 1000) : 0;
  const speed = `${rate.toFixed(1)} MB/s`;
  const parts = [p.label];
  if (p.total !== undefined && p.total > 0) {
    const fraction = Math.min(1, p.bytes / p.total);
    const barWidth = 20;
    const filled = Math.round(fraction * barWidth);
    parts.push(
      `[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]`,
      `${(fraction * 100).toFixed(0).padStart(3)}%`,
      `${formatBytes(p.bytes)} / ${formatBytes(p.total)}`,
    );
  } else {
    parts.push(formatBytes(p.bytes));
  }
  parts.push(speed);
  const line = parts.join('  ');
  return p.width !== undefined && p.width > 1 && line.length >= p.width ? line.slice(0, p.width - 1) : line;
}

/** Options of ProgressMeter. */
export interface ProgressOptions {
  readonly label: string;
  /** Input size, when known (a regular file). */
  readonly total?: number | undefined;
  readonly intervalMs?: number;
  readonly now?: () => number;
}

/** Counts bytes as they pass and redraws one terminal line. */
export class ProgressMeter {
  private bytes = 0;
  private readonly started: number;
  private lastDraw = Number.NEGATIVE_INFINITY;
  private readonly now: () => number;
  private readonly intervalMs: number;

  constructor(
    private readonly out: ProgressOutput,
    private readonly options: ProgressOptions,
  ) {
    this.now = options.now ?? Date.now;
    this.intervalMs = options.intervalMs ?? 100;
    this.started = this.now();
  }

  /** Bytes counted so far. */
  get count(): number {
    return this.bytes;
  }

  /** Adds `n` bytes and redraws if the interval has passed. */
  add(n: number): void {
    this.bytes += n;
    const now = this.now();
    if (now - this.lastDraw >= this.intervalMs) {
      this.lastDraw = now;
      this.draw(now);
    }
  }

  /** A pass-through stream that counts what flows through it. */
  counter(): Transform {
    return new Transform({
      transform: (chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback) => {
        this.add(chunk.length);
        callback(null, chunk);
      },
    });
  }

  /** Draws the final state and ends the line (`suffix` appended, e.g. the key id). */
  finish(suffix = ''): void {
    this.draw(this.now());
    this.out.write(`${suffix}\n`);
  }

  /** Clears the line (on failure, before the error message). */
  clear(): void {
    this.out.write('\r\x1b[K');
  }

  private draw(now: number): void {
    const line = formatProgress({
      label: this.options.label,
      bytes: this.bytes,
      total: this.options.total,
      elapsedMs: now - this.started,
      width: this.out.columns,
    });
    this.out.write(`\r${line}\x1b[K`);
  }
}
