/**
 * Reads what lib/alloc-probe.ts counts inside a server process: ask with SIGUSR2, read the snapshot
 * it writes. Spawn the server with `probeArgs(file)` in its node arguments and the env it returns.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { BENCH_LIB_DIR } from './proc';

export const ALLOC_PROBE = join(BENCH_LIB_DIR, 'alloc-probe.js');

export interface ProbeSnapshot {
  readonly seq: number;
  /** Fresh Buffer bytes by site (see alloc-probe.ts). */
  readonly bytes: Record<string, number>;
  readonly gc: {
    major: number;
    minor: number;
    incremental: number;
    weakcb: number;
    majorMs: number;
    totalMs: number;
  };
}

/** Differences between two snapshots. */
export interface ProbeDelta {
  readonly bytes: Record<string, number>;
  readonly freshBytes: number;
  readonly gc: ProbeSnapshot['gc'];
}

export class ServerProbe {
  private lastSeq = 0;

  constructor(
    private readonly pid: number,
    readonly file: string,
  ) {}

  /** Asks the server for a snapshot and waits (up to 5 s) for it to be written. */
  async snapshot(): Promise<ProbeSnapshot | undefined> {
    const want = this.lastSeq + 1;
    try {
      process.kill(this.pid, 'SIGUSR2');
    } catch {
      return undefined;
    }
    for (let i = 0; i < 500; i++) {
      try {
        const snap = JSON.parse(readFileSync(this.file, 'utf8')) as ProbeSnapshot;
        if (snap.seq >= want) {
          this.lastSeq = snap.seq;
          return snap;
        }
      } catch {
        // not written yet, or caught mid-write
      }
      await sleep(10);
    }
    return undefined;
  }
}

export function probeDelta(
  a: ProbeSnapshot | undefined,
  b: ProbeSnapshot | undefined,
): ProbeDelta | undefined {
  if (!a || !b) return undefined;
  const bytes: Record<string, number> = {};
  for (const k of Object.keys(b.bytes)) bytes[k] = (b.bytes[k] ?? 0) - (a.bytes[k] ?? 0);
  const gc = { ...b.gc };
  for (const k of Object.keys(gc) as Array<keyof typeof gc>) gc[k] -= a.gc[k];
  return { bytes, freshBytes: Object.values(bytes).reduce((s, v) => s + v, 0), gc };
}
