/**
 * The chunk cipher: where chunk batches are sealed and opened. Workers (piscina) keep AES off the
 * main thread, which does gRPC I/O and framing; small batches run inline because a pool task costs
 * ~40 µs of overhead (PERF-NOTES.md). Both the threshold and the mode are configuration, chosen by
 * measurement (bench/), not assumption.
 */
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Piscina } from 'piscina';
import { type ChunkBatch, type OpenResult, openChunks, sealChunks } from '../crypto/chunk';
import { ErrorCode, SealboxError } from '../errors';
import { type OpenFailure, SKIPPED } from './worker';

export interface PoolOptions {
  /**
   * "workers": batches at or above `inlineBelowBytes` go to piscina; "inline": everything on the main
   * thread; "auto": inline on ≤ 2 cores, workers above (see config.ts).
   */
  readonly mode: 'auto' | 'workers' | 'inline';
  /** Worker threads; default the number of cores. */
  readonly threads?: number;
  /** Tasks that may wait for a worker before new ones are refused with OVERLOADED. */
  readonly maxQueue: number;
  /** Batches smaller than this run inline even in "workers" mode. */
  readonly inlineBelowBytes: number;
  /** Told about worker failures (logged by the caller). */
  readonly onWorkerError?: (err: unknown) => void;
}

/** A snapshot for metrics. */
export interface PoolStats {
  readonly threads: number;
  readonly queueSize: number;
  readonly utilization: number;
  readonly completed: number;
}

export class ChunkPool {
  private readonly piscina: Piscina | undefined;
  private inlineTasks = 0;
  /** One shared cancellation flag per call signal (see run()). */
  private readonly flags = new WeakMap<AbortSignal, Int32Array>();

  constructor(private readonly options: PoolOptions) {
    if (resolvePoolMode(options.mode) === 'workers') {
      const threads = options.threads ?? availableParallelism();
      this.piscina = new Piscina({
        filename: join(__dirname, 'worker.js'),
        minThreads: threads,
        maxThreads: threads,
        maxQueue: options.maxQueue,
        idleTimeout: Number.POSITIVE_INFINITY,
      });
      // A worker that dies is replaced by piscina; never let its 'error' take the process down.
      this.piscina.on('error', (err: unknown) => options.onWorkerError?.(err));
    }
  }

  /** True when a batch of `bytes` runs on the main thread (its buffer is not transferred). */
  runsInline(bytes: number): boolean {
    return !this.piscina || bytes < this.options.inlineBelowBytes;
  }

  /** Seals a batch; the batch's data buffer is transferred (unusable afterwards) when it goes to a worker. */
  seal(batch: ChunkBatch, signal?: AbortSignal): Promise<Buffer> {
    if (this.runsInline(batch.data.length)) {
      return this.inline(() => sealChunks(batch));
    }
    return this.run('seal', batch, signal).then(asBuffer);
  }

  /** Opens a batch. Never resolves with plaintext of a chunk that failed to verify. */
  open(batch: ChunkBatch, signal?: AbortSignal): Promise<OpenResult> {
    if (this.runsInline(batch.data.length)) {
      return this.inline(() => openChunks(batch));
    }
    return this.run('open', batch, signal).then((result) =>
      result instanceof Uint8Array
        ? { ok: true as const, plaintext: asBuffer(result) }
        : { ok: false as const, ...(result as OpenFailure) },
    );
  }

  get stats(): PoolStats {
    if (!this.piscina) return { threads: 0, queueSize: 0, utilization: 0, completed: this.inlineTasks };
    return {
      threads: this.piscina.threads.length,
      queueSize: this.piscina.queueSize,
      utilization: this.piscina.utilization,
      completed: this.piscina.completed + this.inlineTasks,
    };
  }

  async close(): Promise<void> {
    await this.piscina?.destroy();
  }

  private inline<T>(work: () => T): Promise<T> {
    this.inlineTasks++;
    try {
      return Promise.resolve(work());
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * Runs a task on a worker. Cancellation: piscina would terminate a worker whose running task is
   * aborted (and respawn it), so the signal is not given to piscina. Instead the call's tasks share a
   * flag that the worker checks when a task starts: queued tasks of a cancelled call are skipped in
   * microseconds, a running one finishes its batch (≤ batchBytes), and no worker is ever killed.
   */
  private async run(name: 'seal' | 'open', batch: ChunkBatch, signal?: AbortSignal): Promise<unknown> {
    const piscina = this.piscina!;
    if (signal?.aborted) throw cancelled();
    // The key crosses as its own small buffer (the worker zeroes it); the data buffer is moved, not
    // copied — the framer hands out buffers that own their memory for exactly this.
    const key = new Uint8Array(batch.key);
    const data = batch.data;
    const transferList = [key.buffer];
    if (data.byteOffset === 0 && data.byteLength === data.buffer.byteLength)
      transferList.push(data.buffer as ArrayBuffer);
    const task = { ...batch, key, data, ...(signal ? { cancelled: this.flagFor(signal) } : {}) };
    let result: unknown;
    try {
      result = await piscina.run(task, { name, transferList });
    } catch (err) {
      throw poolError(err);
    }
    if (result === SKIPPED || signal?.aborted) throw cancelled();
    return result;
  }

  private flagFor(signal: AbortSignal): Int32Array {
    let flag = this.flags.get(signal);
    if (!flag) {
      const shared = new Int32Array(new SharedArrayBuffer(4));
      signal.addEventListener('abort', () => Atomics.store(shared, 0, 1), { once: true });
      this.flags.set(signal, shared);
      flag = shared;
    }
    return flag;
  }
}

function cancelled(): SealboxError {
  return new SealboxError(ErrorCode.CANCELLED, 'call cancelled; its pending chunks were dropped');
}

/** The mode "auto" stands for on this machine. */
export function resolvePoolMode(mode: PoolOptions['mode']): 'workers' | 'inline' {
  if (mode !== 'auto') return mode;
  return availableParallelism() > 2 ? 'workers' : 'inline';
}

function asBuffer(value: unknown): Buffer {
  const u8 = value as Uint8Array;
  return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}

function poolError(err: unknown, signal?: AbortSignal): unknown {
  if (signal?.aborted)
    return new SealboxError(ErrorCode.CANCELLED, 'call cancelled; its pending chunks were dropped');
  const message = (err as Error | undefined)?.message ?? '';
  if (/queue is at limit|no task queue available/i.test(message)) {
    return new SealboxError(
      ErrorCode.OVERLOADED,
      'sealbox is at capacity (worker queue full); retry with backoff',
    );
  }
  return err;
}
