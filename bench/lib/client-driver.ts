/**
 * Drives a load client (bench/unary-client, bench/batch-client) in its own process: forks it, kills it
 * if it overruns, reads the CPU time of the watched processes (the server, the dev vault) when the
 * client reports its window's edges ({event:'window-start'|'window-end'} over IPC), and parses the
 * last line of its stdout as its JSON result. Optional hooks run at the same edges (e.g. vault
 * counter snapshots). CpuWindow is the CPU half alone, for a bench whose load runs in its own process.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { basename } from 'node:path';
import { clientNodeArgs, cpuTime, stopChild, trackChild } from './proc';

/** Slack past the client's expected run time before it is killed. */
const KILL_SLACK_SECONDS = 120;

/** CPU seconds (all threads, /proc) that each watched process used between open() and close(). */
export class CpuWindow {
  private start: Record<string, number | undefined>;
  private end: Record<string, number | undefined> | undefined;

  /** Reads at construction: a window whose open() never comes starts here. */
  constructor(private readonly watch: Record<string, number>) {
    this.start = this.read();
  }

  private read(): Record<string, number | undefined> {
    return Object.fromEntries(Object.entries(this.watch).map(([name, pid]) => [name, cpuTime(pid)]));
  }

  open(): void {
    this.start = this.read();
  }

  close(): void {
    this.end = this.read();
  }

  /** Closes the window now unless it was closed already. */
  closeIfOpen(): void {
    this.end ??= this.read();
  }

  /** Per watched name; undefined where the process was gone at either edge or the window never closed. */
  seconds(): Record<string, number | undefined> {
    return Object.fromEntries(
      Object.keys(this.watch).map((name) => {
        const a = this.start[name];
        const b = this.end?.[name];
        return [name, a !== undefined && b !== undefined ? Math.max(0, b - a) : undefined];
      }),
    );
  }
}

export interface WindowHooks<H> {
  /** Runs when the window opens and again when it closes; both results are returned. */
  readonly snapshot?: () => Promise<H>;
  /** Called with the forked client at once (e.g. to send it {cmd:'tick'} requests). */
  readonly onChild?: (child: ChildProcess) => void;
}

export interface DriveOptions<H> extends WindowHooks<H> {
  /** Processes whose CPU is read at the window's edges, by name. */
  readonly watch: Record<string, number>;
  /** How long the client should take (warm-up + window + drain); it is killed 120 s past this. */
  readonly expectedSeconds: number;
}

export interface ClientRun<T, H = unknown> {
  /** The client's JSON result (its last stdout line), or undefined if it left none. */
  readonly client: T | undefined;
  /** CPU seconds (all threads) of each watched process within the client's window. */
  readonly cpuSeconds: Record<string, number | undefined>;
  /** What the hooks returned at the window's start and end. */
  readonly atStart: H | undefined;
  readonly atEnd: H | undefined;
  readonly exitCode: number | null;
  /** The client's own error, or that it exited without a result. */
  readonly error?: string;
}

/** Forks `script` (a compiled client, absolute path) with `args` and returns what it measured. */
export async function driveClient<T extends { readonly error?: string }, H = unknown>(
  script: string,
  args: readonly string[],
  options: DriveOptions<H>,
): Promise<ClientRun<T, H>> {
  const child = fork(script, args, {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    execArgv: clientNodeArgs(),
  });
  trackChild(child);
  options.onChild?.(child);
  const cpu = new CpuWindow(options.watch);
  let atStart: Promise<H> | undefined;
  let atEnd: Promise<H> | undefined;
  child.on('message', (m: { event?: string }) => {
    if (m.event === 'window-start') {
      cpu.open();
      atStart = options.snapshot?.();
      atStart?.catch(() => {});
    } else if (m.event === 'window-end') {
      cpu.close();
      atEnd = options.snapshot?.();
      atEnd?.catch(() => {});
    }
  });
  let stdout = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });

  const timeout = setTimeout(
    () => void stopChild(child, 'SIGKILL'),
    (options.expectedSeconds + KILL_SLACK_SECONDS) * 1000,
  );
  const exitCode = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  clearTimeout(timeout);
  cpu.closeIfOpen();

  let client: T | undefined;
  try {
    client = JSON.parse(stdout.trim().split('\n').pop() ?? '') as T;
  } catch {
    client = undefined;
  }
  const settle = async (p: Promise<H> | undefined) => (p ? await p.catch(() => undefined) : undefined);
  const error =
    client?.error ??
    (client ? undefined : `${basename(script, '.js')} exited with ${exitCode} and no result`);
  return {
    client,
    cpuSeconds: cpu.seconds(),
    atStart: await settle(atStart),
    atEnd: await settle(atEnd),
    exitCode,
    ...(error ? { error } : {}),
  };
}
