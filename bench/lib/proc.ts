/**
 * Process plumbing for benchmarks: /proc readings (RSS, CPU time) of other processes, and tracking of
 * every child a benchmark starts so none outlives it — on success, on error, on Ctrl-C or SIGTERM.
 */
import { type ChildProcess, execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { socketAccepts } from '../../src/server/socket';

/** Compiled bench/lib directory; paths of sibling scripts are resolved from it, whatever the build dir. */
export const BENCH_LIB_DIR = __dirname;
/** The preload that makes children exit when the benchmark dies. */
export const WATCH_PARENT = join(__dirname, 'watch-parent.js');

/**
 * Extra node flags for the load generators (stream, unary and batch clients), not for the servers:
 * SEALBOX_BENCH_CLIENT_NODE_ARGS, space-separated, e.g. "--cpu-prof --cpu-prof-dir=/tmp/c" (node
 * refuses --cpu-prof in NODE_OPTIONS). The servers' twin is SEALBOX_BENCH_SERVER_NODE_ARGS (servers.ts).
 */
export function clientNodeArgs(): string[] {
  return (process.env['SEALBOX_BENCH_CLIENT_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
}

const MiB = 1024 * 1024;

/** Resident set size of `pid` in bytes (VmRSS), or undefined if the process is gone. */
export function sampleRss(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** Open file descriptors of `pid` (entries of /proc/<pid>/fd), or undefined if the process is gone. */
export function openFds(pid: number): number | undefined {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return undefined;
  }
}

/**
 * A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it; we close it again), for a
 * child's fixed listener, e.g. sealbox's metrics.
 */
export function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      );
    });
  });
}

let clockTicks: number | undefined;
function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/** User + system CPU seconds used so far by `pid` (all its threads), or undefined if it is gone. */
export function cpuTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which is in parentheses and may itself contain spaces.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return (utime + stime) / ticksPerSecond();
  } catch {
    return undefined;
  }
}

/** Samples a process's RSS on a timer; `stop()` returns what it saw. */
export class RssSampler {
  private readonly samples: number[] = [];
  private readonly timer: NodeJS.Timeout;
  private lastAt = 0;
  /** Longest gap between two samples, ms (shows when the sampling process itself was busy). */
  maxGapMs = 0;

  constructor(
    private readonly pid: number,
    intervalMs = 100,
  ) {
    this.take();
    this.timer = setInterval(() => this.take(), intervalMs);
  }

  private take(): void {
    const now = performance.now();
    if (this.lastAt > 0) this.maxGapMs = Math.max(this.maxGapMs, now - this.lastAt);
    this.lastAt = now;
    const rss = sampleRss(this.pid);
    if (rss !== undefined) this.samples.push(rss);
  }

  stop(): RssSummary {
    clearInterval(this.timer);
    this.take();
    return summarizeRss(this.samples, this.maxGapMs);
  }
}

export interface RssSummary {
  readonly samples: number;
  readonly maxBytes: number;
  readonly medianBytes: number;
  readonly maxGapMs: number;
}

function summarizeRss(samples: number[], maxGapMs: number): RssSummary {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    samples: sorted.length,
    maxBytes: sorted[sorted.length - 1] ?? 0,
    medianBytes: sorted[Math.floor(sorted.length / 2)] ?? 0,
    maxGapMs: Math.round(maxGapMs),
  };
}

export const toMiB = (bytes: number): number => bytes / MiB;

// ---------------------------------------------------------------------------------------------------
// Children and cleanup

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();
let installed = false;

/** Tracks `child` so it is killed if the benchmark ends for any reason. */
export function trackChild(child: ChildProcess): void {
  installCleanup();
  children.add(child);
  child.once('exit', () => children.delete(child));
}

/** Removes `dir` (recursively) when the benchmark ends, unless removed earlier. */
export function trackTempDir(dir: string): () => void {
  installCleanup();
  tempDirs.add(dir);
  return () => {
    tempDirs.delete(dir);
    rmSync(dir, { recursive: true, force: true });
  };
}

/** Sends `signal`, waits up to `graceMs` for the exit, then SIGKILLs. Resolves once it has exited. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}

/** Stops every tracked child and removes temp dirs. */
export async function cleanupAll(): Promise<void> {
  await Promise.all([...children].map((c) => stopChild(c)));
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  tempDirs.clear();
}

function installCleanup(): void {
  if (installed) return;
  installed = true;
  // Last resort, synchronous: whatever is still alive when we exit gets SIGKILL.
  process.on('exit', () => {
    for (const child of children) child.kill('SIGKILL');
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      process.stderr.write(`\n${signal}: stopping ${children.size} child process(es)…\n`);
      cleanupAll().finally(() => process.exit(signal === 'SIGINT' ? 130 : 143));
    });
  }
}

/**
 * Runs a benchmark's main: exits with its code after cleaning up, or with 1 after printing the error.
 */
export function runMain(main: () => Promise<number>): void {
  installCleanup();
  main().then(
    async (code) => {
      await cleanupAll();
      process.exit(code);
    },
    async (err: unknown) => {
      process.stderr.write(`error: ${(err as Error)?.stack ?? String(err)}\n`);
      await cleanupAll();
      process.exit(1);
    },
  );
}

/** Resolves once a Unix socket accepts a connection; rejects if `alive()` turns false or on timeout. */
export async function waitForSocket(path: string, alive: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await socketAccepts(path)) return;
    if (!alive()) throw new Error(`the server exited before listening on ${path}`);
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${path} to accept connections`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
