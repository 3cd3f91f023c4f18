/**
 * The chunk cipher: where chunk batches are sealed and opened. Workers (piscina) keep AES off the
 * main thread, which does gRPC I/O and framing; small batches run inline because a pool task costs
 * ~40 µs of overhead (bench/PERF-NOTES.md). Both the threshold and the mode are configuration, chosen by
 * measurement (bench/pool.ts), not assumption.
 *
 * Per-task cost, cut where it was measured (issue 14): jobs queue here, not in piscina, so a worker
 * that frees up takes its share of the waiting jobs (up to `taskBytes`) in one message; keys and
 * bytes cross through a SharedArrayBuffer the workers got at start, one slot per task in flight, so
 * only offsets are posted — no structured clone of buffers and no transferred ArrayBuffers, whose
 * external-memory accounting made the main thread collect garbage ~4× as often per GB as inline.
 * A batch too large for a slot is transferred (a view copied once into a buffer a worker gave back).
 */
import { join } from 'node:path';
import { Piscina } from 'piscina';
import { CHUNK_OVERHEAD, type ChunkBatch, type OpenResult, openChunks, sealChunks } from '../crypto/chunk';
import { ErrorCode, SealboxError } from '../errors';
import { effectiveCores, poolThreads } from './cores';
import {
  type JobOp,
  type JobResult,
  type OpenFailure,
  type SharedJob,
  type SharedResult,
  type SharedWorkerData,
  SKIPPED,
  type TaskResult,
  type WorkerJob,
} from './worker';

// Where the pool's size comes from; kept in cores.ts so config print can use it without piscina.
export { effectiveCores, poolThreads } from './cores';

/** Default upper bound of the bytes one task carries (envelope.batchBytes in the server). */
const DEFAULT_TASK_BYTES = 1024 * 1024;

export interface PoolOptions {
  /**
   * "workers": batches at or above `inlineBelowBytes` go to piscina; "inline": everything on the main
   * thread; "auto": inline on ≤ 2 cores, workers above (see config.ts).
   */
  readonly mode: 'auto' | 'workers' | 'inline';
  /** Worker threads; null or absent: one per core sealbox may use (cores.ts poolThreads). */
  readonly threads?: number | null;
  /** Batches that may wait for a worker before new ones are refused with OVERLOADED. */
  readonly maxQueue: number;
  /** Batches smaller than this run inline even in "workers" mode. */
  readonly inlineBelowBytes: number;
  /**
   * Most bytes of data one worker task carries when jobs wait (several batches share a task); the
   * server passes envelope.batchBytes. Default 1 MiB.
   */
  readonly taskBytes?: number;
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

/** A batch waiting for, or running on, a worker. */
interface Job {
  readonly op: JobOp;
  readonly batch: ChunkBatch;
  readonly signal: AbortSignal | undefined;
  readonly resolve: (result: JobResult) => void;
  readonly reject: (err: unknown) => void;
}

export class ChunkPool {
  private readonly piscina: Piscina | undefined;
  private readonly threads: number;
  private readonly taskBytes: number;
  private inlineTasks = 0;
  private workerJobs = 0;
  private tasks = 0;
  /** Jobs waiting for a free worker, oldest first; bounded by `maxQueue`. */
  private readonly waiting: Job[] = [];
  /** Tasks handed to piscina and not yet answered; never more than `threads`. */
  private running = 0;
  /** Input buffers that came back from workers, ready to carry the next job's bytes. */
  private readonly spares: ArrayBuffer[] = [];
  /** One shared cancellation flag per call signal (see run()). */
  private readonly flags = new WeakMap<AbortSignal, Int32Array>();
  private closed = false;
  /** Shared memory the workers see from their start: one slot per task in flight. */
  private readonly slab: Uint8Array | undefined;
  private readonly slotBytes: number;
  private readonly freeSlots: number[] = [];

  constructor(private readonly options: PoolOptions) {
    this.threads = poolThreads(options.threads);
    this.taskBytes = options.taskBytes ?? DEFAULT_TASK_BYTES;
    this.slotBytes = 2 * Math.min(this.taskBytes, MAX_SLOT_TASK_BYTES) + SLOT_SLACK_BYTES;
    if (resolvePoolMode(options.mode) === 'workers') {
      const slab = new SharedArrayBuffer(this.threads * this.slotBytes);
      this.slab = new Uint8Array(slab);
      for (let i = 0; i < this.threads; i++) this.freeSlots.push(i);
      this.piscina = new Piscina({
        workerData: { slab } satisfies SharedWorkerData,
        filename: join(__dirname, 'worker.js'),
        minThreads: this.threads,
        maxThreads: this.threads,
        // The pool queues jobs itself (at most `threads` tasks reach piscina), so piscina's own
        // queue only ever holds what a respawned worker has not picked up yet.
        maxQueue: this.threads,
        idleTimeout: Number.POSITIVE_INFINITY,
      });
      // A worker that dies is replaced by piscina; never let its 'error' take the process down.
      this.piscina.on('error', (err: unknown) => options.onWorkerError?.(err));
    }
  }

  /** True when there are no workers: every batch is sealed or opened on this thread, at once. */
  get alwaysInline(): boolean {
    return !this.piscina;
  }

  /** True when a batch of `bytes` runs on the main thread. */
  runsInline(bytes: number): boolean {
    return !this.piscina || bytes < this.options.inlineBelowBytes;
  }

  /**
   * Whether a batch of `bytes` given to seal/open must own its ArrayBuffer. Never: a batch that goes
   * to a worker is copied into the shared slab (or, too large for a slot, into a reused buffer, or
   * moved when it owns its memory). Callers may hand out views and save a copy.
   */
  needsOwnedBuffer(_bytes: number): boolean {
    return false;
  }

  /**
   * Seals a batch. When it goes to a worker and its data owns its whole ArrayBuffer, that buffer is
   * transferred (unusable afterwards); otherwise the data is only read.
   */
  seal(batch: ChunkBatch, signal?: AbortSignal): Promise<Buffer> {
    if (this.runsInline(batch.data.length)) {
      return settled(() => this.sealInline(batch));
    }
    return this.run(0, batch, signal).then(asBuffer);
  }

  /** Opens a batch. Never resolves with plaintext of a chunk that failed to verify. */
  open(batch: ChunkBatch, signal?: AbortSignal): Promise<OpenResult> {
    if (this.runsInline(batch.data.length)) {
      return settled(() => this.openInline(batch));
    }
    return this.run(1, batch, signal).then((result) =>
      result instanceof Uint8Array
        ? { ok: true as const, plaintext: asBuffer(result) }
        : { ok: false as const, ...(result as OpenFailure) },
    );
  }

  /**
   * Seals a batch on the main thread, now, whatever its size: for callers that decided (runsInline)
   * to skip a promise per batch (EncryptBatch items). Counted in `stats.completed` like every batch.
   */
  sealInline(batch: ChunkBatch): Buffer {
    this.inlineTasks++;
    return sealChunks(batch);
  }

  /** Opens a batch on the main thread, now (see sealInline). */
  openInline(batch: ChunkBatch): OpenResult {
    this.inlineTasks++;
    return openChunks(batch);
  }

  /**
   * A snapshot for metrics. `completed` counts chunk batches sealed or opened — one per pool.seal/open
   * or sealInline/openInline, on a worker or inline: a segment (≤ envelope.batchBytes) of a unary or
   * streamed message, or one EncryptBatch/DecryptBatch item.
   */
  get stats(): PoolStats {
    if (!this.piscina) return { threads: 0, queueSize: 0, utilization: 0, completed: this.inlineTasks };
    return {
      threads: this.piscina.threads.length,
      queueSize: this.waiting.length + this.piscina.queueSize,
      utilization: this.piscina.utilization,
      completed: this.workerJobs + this.inlineTasks,
    };
  }

  /** Tasks sent to workers so far (each carries one or more batches). */
  get tasksSent(): number {
    return this.tasks;
  }

  /** Input buffers kept for reuse. */
  get spareBuffers(): number {
    return this.spares.length;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const job of this.waiting.splice(0)) job.reject(cancelled());
    await this.piscina?.destroy();
  }

  /**
   * Queues a batch for a worker. Cancellation: piscina would terminate a worker whose running task
   * is aborted (and respawn it), so no signal is given to piscina. A waiting job of a cancelled call
   * is dropped before it is sent; a sent one carries the call's shared flag, which the worker checks
   * when the job starts; a running one finishes its batch (≤ batchBytes); no worker is ever killed.
   */
  private run(op: JobOp, batch: ChunkBatch, signal?: AbortSignal): Promise<JobResult> {
    if (signal?.aborted || this.closed) return Promise.reject(cancelled());
    if (this.waiting.length >= this.options.maxQueue) {
      return Promise.reject(
        new SealboxError(
          ErrorCode.OVERLOADED,
          'sealbox is at capacity (worker queue full); retry with backoff',
        ),
      );
    }
    if (signal) this.flagFor(signal);
    return new Promise<JobResult>((resolve, reject) => {
      this.waiting.push({ op, batch, signal, resolve, reject });
      this.pump();
    });
  }

  /**
   * Sends waiting jobs while a worker is free. A free worker takes every waiting job up to
   * `taskBytes` in one task (at least one job), so under load several segments share one message
   * and one wake-up; when the pool is idle a job goes out alone at once, adding no latency.
   */
  private pump(): void {
    while (this.running < this.threads && this.waiting.length > 0) {
      const jobs: Job[] = [];
      let bytes = 0;
      // Leave work for the other workers, free now or soon: take at most an equal share of what waits.
      const share = Math.ceil(this.waiting.length / this.threads);
      let slotUse = 0;
      let shared = true;
      while (this.waiting.length > 0 && jobs.length < share) {
        const next = this.waiting[0]!;
        if (next.signal?.aborted) {
          this.waiting.shift();
          next.reject(cancelled());
          continue;
        }
        const need = slotNeed(next);
        if (jobs.length === 0) shared = need <= this.slotBytes;
        else if (
          !shared ||
          bytes + next.batch.data.length > this.taskBytes ||
          slotUse + need > this.slotBytes
        )
          break;
        this.waiting.shift();
        jobs.push(next);
        bytes += next.batch.data.length;
        slotUse += need;
      }
      if (jobs.length > 0) {
        if (shared) this.sendShared(jobs, this.freeSlots.pop()!);
        else this.send(jobs);
      }
    }
  }

  /**
   * Sends jobs through shared memory: their keys and bytes are copied into the task's slot of the
   * slab, the worker writes its outputs there, and each output is copied out into a Buffer of its
   * own. Nothing is transferred: a transferred ArrayBuffer re-counts as fresh external memory on
   * each side, and V8 answers that with garbage collections (profiled at ~4× the main thread's GC
   * per GB of inline mode); a few numbers cross instead.
   */
  private sendShared(jobs: Job[], slot: number): void {
    const piscina = this.piscina!;
    const slab = this.slab!;
    const task: SharedJob[] = [];
    let at = slot * this.slotBytes;
    for (const job of jobs) {
      const { batch } = job;
      const keyOffset = at;
      slab.set(batch.key, at);
      slab.set(batch.messageId, at + batch.key.length);
      at += batch.key.length + batch.messageId.length;
      const inputOffset = at;
      slab.set(batch.data, at);
      at += batch.data.length;
      const outputCapacity = outputBound(job);
      task.push([
        job.op,
        keyOffset,
        batch.key.length,
        batch.messageId.length,
        batch.chunkSize,
        batch.firstIndex,
        batch.final,
        batch.headroom ?? 0,
        inputOffset,
        batch.data.length,
        at,
        outputCapacity,
        job.signal ? this.flagFor(job.signal) : undefined,
      ]);
      at += outputCapacity;
    }
    this.running++;
    this.tasks++;
    const done = () => {
      this.running--;
      this.freeSlots.push(slot);
      this.pump();
    };
    piscina.run(task, { name: 'runShared' }).then(
      (value: unknown) => {
        const results = value as SharedResult[];
        for (let i = 0; i < jobs.length; i++) {
          const result = results[i];
          if (typeof result === 'number') {
            const outputOffset = task[i]![10];
            // Copied out: the slot is reused by the next task; this Buffer is the caller's.
            const out = Buffer.allocUnsafeSlow(result);
            out.set(slab.subarray(outputOffset, outputOffset + result));
            this.settle(jobs[i]!, out);
          } else {
            this.settle(jobs[i]!, result);
          }
        }
        done();
      },
      (err: unknown) => {
        // A worker that died mid-task may not have zeroed the keys it was given.
        for (const j of task) slab.fill(0, j[1], j[1] + j[2] + j[3]);
        for (const job of jobs) job.reject(poolError(err));
        done();
      },
    );
  }

  private send(jobs: Job[]): void {
    const piscina = this.piscina!;
    const task: WorkerJob[] = [];
    const transferList: ArrayBuffer[] = [];
    for (const { op, batch, signal } of jobs) {
      // Message key and message id cross in one small buffer of their own, which the worker zeroes.
      const keys = new Uint8Array(batch.key.length + batch.messageId.length);
      keys.set(batch.key, 0);
      keys.set(batch.messageId, batch.key.length);
      const buffer = this.carrier(batch.data);
      transferList.push(keys.buffer, buffer);
      task.push([
        op,
        keys,
        batch.key.length,
        batch.chunkSize,
        batch.firstIndex,
        batch.final,
        batch.headroom ?? 0,
        buffer,
        batch.data.length,
        signal ? this.flagFor(signal) : undefined,
      ]);
    }
    this.running++;
    this.tasks++;
    piscina.run(task, { name: 'run', transferList }).then(
      (value: unknown) => {
        this.running--;
        const [results, inputs] = value as TaskResult;
        for (const input of inputs) this.recycle(input);
        for (let i = 0; i < jobs.length; i++) this.settle(jobs[i]!, results[i]);
        this.pump();
      },
      (err: unknown) => {
        this.running--;
        for (const job of jobs) job.reject(poolError(err));
        this.pump();
      },
    );
  }

  private dropWaiting(signal: AbortSignal): void {
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      const job = this.waiting[i]!;
      if (job.signal !== signal) continue;
      this.waiting.splice(i, 1);
      job.reject(cancelled());
    }
  }

  private settle(job: Job, result: JobResult | undefined): void {
    this.workerJobs++;
    if (result === SKIPPED || job.signal?.aborted) job.reject(cancelled());
    else if (result === undefined) job.reject(new Error('worker returned no result for a job'));
    else if (typeof result === 'object' && 'error' in result) job.reject(new Error(result.error));
    else job.resolve(result);
  }

  /**
   * The ArrayBuffer that carries `data` to a worker. A buffer that owns all of its ArrayBuffer is
   * transferred as it is: the caller gave it up (seal/open consume their batch). Anything else — a
   * view into a gRPC message, a slice of Node's shared Buffer pool (those are at most 4 KiB of an
   * 8 KiB pool, so never a whole ArrayBuffer), a SharedArrayBuffer — is copied into a spare buffer,
   * since transferring it would detach memory others still use and cloning a view would copy its
   * whole ArrayBuffer.
   */
  private carrier(data: Uint8Array): ArrayBuffer {
    const owned =
      data.buffer instanceof ArrayBuffer &&
      data.byteOffset === 0 &&
      data.byteLength === data.buffer.byteLength;
    if (owned) return data.buffer as ArrayBuffer;
    const buffer = this.spare(data.byteLength);
    new Uint8Array(buffer, 0, data.byteLength).set(data);
    return buffer;
  }

  /**
   * A spare buffer of at least `bytes` (and at most twice that, so a small job does not pin a large
   * buffer), or a new one. A spare is only ever one that a worker gave back: a buffer in flight is
   * detached on this thread, so it cannot be handed out twice.
   */
  private spare(bytes: number): ArrayBuffer {
    for (let i = this.spares.length - 1; i >= 0; i--) {
      const candidate = this.spares[i]!;
      if (candidate.byteLength >= bytes && candidate.byteLength <= 2 * bytes) {
        this.spares.splice(i, 1);
        return candidate;
      }
    }
    // Not zero-filled (new ArrayBuffer would be): every byte used is overwritten at once.
    return Buffer.allocUnsafeSlow(bytes).buffer as ArrayBuffer;
  }

  /**
   * Keeps a returned input buffer for reuse, two per worker at most (only batches too large for a
   * slot travel this way); the rest are left to the GC.
   */
  private recycle(buffer: ArrayBuffer): void {
    if (this.spares.length >= 2 * this.threads) return;
    this.spares.push(buffer);
  }

  /**
   * The call's shared cancellation flag, made on its first job. When the call ends, the flag is set
   * for jobs already sent, and its jobs still waiting are dropped at once (their bytes freed).
   */
  private flagFor(signal: AbortSignal): Int32Array {
    let flag = this.flags.get(signal);
    if (!flag) {
      const shared = new Int32Array(new SharedArrayBuffer(4));
      const onAbort = () => {
        Atomics.store(shared, 0, 1);
        this.dropWaiting(signal);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.flags.set(signal, shared);
      flag = shared;
    }
    return flag;
  }
}

/** Task bytes a slot is sized for at most (a larger envelope.batchBytes does not grow the slab). */
const MAX_SLOT_TASK_BYTES = 4 * 1024 * 1024;
/** Room in a slot beyond input and output: keys, headroom and tags. */
const SLOT_SLACK_BYTES = 256 * 1024;

/** The most output a job can produce: headroom + data, plus a tag per chunk when sealing. */
function outputBound(job: Job): number {
  const { batch } = job;
  const headroom = batch.headroom ?? 0;
  if (job.op === 1) return headroom + batch.data.length;
  return headroom + batch.data.length + (Math.ceil(batch.data.length / batch.chunkSize) + 1) * CHUNK_OVERHEAD;
}

/** Slot bytes a job takes: keys, input, output. */
function slotNeed(job: Job): number {
  return job.batch.key.length + job.batch.messageId.length + job.batch.data.length + outputBound(job);
}

function cancelled(): SealboxError {
  return new SealboxError(ErrorCode.CANCELLED, 'call cancelled; its pending chunks were dropped');
}

/**
 * The mode "auto" stands for on this machine: inline up to AUTO_INLINE_MAX_CORES cores, workers above
 * (bench/README.md "Worker pool vs inline" has the measurements behind the threshold).
 */
export function resolvePoolMode(
  mode: PoolOptions['mode'],
  cores: number = effectiveCores(),
): 'workers' | 'inline' {
  if (mode !== 'auto') return mode;
  return cores > AUTO_INLINE_MAX_CORES ? 'workers' : 'inline';
}

/** "auto" runs AES inline on machines with at most this many cores. */
export const AUTO_INLINE_MAX_CORES = 2;

/** The result of synchronous work as a promise; a throw becomes a rejection. */
function settled<T>(work: () => T): Promise<T> {
  try {
    return Promise.resolve(work());
  } catch (err) {
    return Promise.reject(err);
  }
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
