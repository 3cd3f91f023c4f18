/**
 * The pool's worker: seals and opens batches of chunks. Small and pure on purpose — it imports only
 * the chunk code, never gRPC, vault clients or config.
 *
 * One task carries one or more jobs, so a busy pool sends one message for several segments.
 * `runShared` (the usual path) finds keys and bytes in the shared slab (workerData) at the offsets
 * its jobs give and writes its outputs there; `run` (batches too large for a slot) gets them as
 * transferred ArrayBuffers and transfers outputs and inputs back. Nothing else crosses but a few
 * small arrays and numbers.
 *
 * Postcondition: every job's key bytes (message key ‖ message id, in the slab or in their own buffer)
 * are zeroed before the task returns, whatever happened to the job.
 */
import { Piscina } from 'piscina';
import { type ChunkBatch, openChunks, sealChunks } from '../crypto/chunk';

/** 0 = seal, 1 = open. */
export type JobOp = 0 | 1;

/**
 * One batch as it crosses the thread boundary: a flat array, not an object, so the structured clone
 * has nothing to name. `keys` holds the message key (its first `keyLength` bytes) then the message
 * id; `data` is the first `dataLength` bytes of `buffer` (a reused buffer may be longer).
 * `cancelled` is the call's flag, a shared Int32Array the main thread sets to 1 when the call ends.
 */
export type WorkerJob = [
  op: JobOp,
  keys: Uint8Array,
  keyLength: number,
  chunkSize: number,
  firstIndex: number,
  final: boolean,
  headroom: number,
  buffer: ArrayBuffer,
  dataLength: number,
  cancelled: Int32Array | undefined,
];

/** Returned for a job whose call was cancelled before the task started. */
export const SKIPPED = 'skipped';

/** Failure of an open job, returned (not thrown) so its fields survive the thread boundary. */
export interface OpenFailure {
  readonly failedIndex: number;
  readonly truncated: boolean;
}

/** A job that threw (a bug or a malformed batch): its message, so the other jobs still complete. */
export interface JobError {
  readonly error: string;
}

/** One job's outcome: output bytes, SKIPPED, an open failure, or a thrown error. */
export type JobResult = Uint8Array | typeof SKIPPED | OpenFailure | JobError;

/** What a task returns: one result per job, in order, and the jobs' input buffers to reuse. */
export type TaskResult = [results: JobResult[], inputs: ArrayBuffer[]];

/** Runs every job of a task; outputs and inputs travel back transferred, not copied. */
export function run(jobs: WorkerJob[]): unknown {
  const results: JobResult[] = [];
  const inputs: ArrayBuffer[] = [];
  const transfer: ArrayBuffer[] = [];
  for (const job of jobs) {
    const result = runJob(job);
    results.push(result);
    if (result instanceof Uint8Array) transfer.push(result.buffer as ArrayBuffer);
    inputs.push(job[7]);
    transfer.push(job[7]);
  }
  const value: TaskResult = [results, inputs];
  return Piscina.move({
    [Piscina.transferableSymbol]: transfer,
    [Piscina.valueSymbol]: value,
  } as unknown as ArrayBuffer);
}

/** What every worker receives at start (piscina's workerData): the pool's shared slab. */
export interface SharedWorkerData {
  readonly slab: SharedArrayBuffer;
}

/**
 * A job whose keys, input and output live in the shared slab, given as offsets: [op, keyOffset,
 * keyLength, idLength, chunkSize, firstIndex, final, headroom, inputOffset, inputLength,
 * outputOffset, outputCapacity, cancelled]. The message id follows the key.
 */
export type SharedJob = [
  op: JobOp,
  keyOffset: number,
  keyLength: number,
  idLength: number,
  chunkSize: number,
  firstIndex: number,
  final: boolean,
  headroom: number,
  inputOffset: number,
  inputLength: number,
  outputOffset: number,
  outputCapacity: number,
  cancelled: Int32Array | undefined,
];

/** A shared job's outcome: the output's length (written at its outputOffset), or as JobResult. */
export type SharedResult = number | typeof SKIPPED | OpenFailure | JobError;

let sharedSlab: Uint8Array | undefined;

/** Runs jobs whose bytes are in the shared slab; returns only small values, nothing transferred. */
export function runShared(jobs: SharedJob[]): SharedResult[] {
  sharedSlab ??= new Uint8Array((Piscina.workerData as SharedWorkerData).slab);
  const slab = sharedSlab;
  return jobs.map((job) => {
    const [op, keyOffset, keyLength, idLength, chunkSize, firstIndex, final, headroom] = job;
    const [, , , , , , , , inputOffset, inputLength, outputOffset, outputCapacity, cancelled] = job;
    const keys = slab.subarray(keyOffset, keyOffset + keyLength + idLength);
    try {
      if (cancelled !== undefined && Atomics.load(cancelled, 0) === 1) return SKIPPED;
      const batch: ChunkBatch = {
        key: keys.subarray(0, keyLength),
        messageId: keys.subarray(keyLength),
        chunkSize,
        firstIndex,
        final,
        headroom,
        data: slab.subarray(inputOffset, inputOffset + inputLength),
      };
      let out: Buffer;
      if (op === 0) out = sealChunks(batch);
      else {
        const result = openChunks(batch);
        if (!result.ok) return { failedIndex: result.failedIndex, truncated: result.truncated };
        out = result.plaintext;
      }
      if (out.length > outputCapacity) return { error: 'chunk output larger than its slot (a bug)' };
      slab.set(out, outputOffset);
      return out.length;
    } catch (err) {
      return { error: (err as Error)?.message ?? String(err) };
    } finally {
      keys.fill(0);
    }
  });
}

function runJob(job: WorkerJob): JobResult {
  const [op, keys, keyLength, chunkSize, firstIndex, final, headroom, buffer, dataLength, cancelled] = job;
  try {
    if (cancelled !== undefined && Atomics.load(cancelled, 0) === 1) return SKIPPED;
    const batch: ChunkBatch = {
      key: keys.subarray(0, keyLength),
      messageId: keys.subarray(keyLength),
      chunkSize,
      firstIndex,
      final,
      headroom,
      data: new Uint8Array(buffer, 0, dataLength),
    };
    if (op === 0) return ownOutput(sealChunks(batch));
    const result = openChunks(batch);
    if (result.ok) return ownOutput(result.plaintext);
    const failure: OpenFailure = { failedIndex: result.failedIndex, truncated: result.truncated };
    return failure;
  } catch (err) {
    return { error: (err as Error)?.message ?? String(err) };
  } finally {
    keys.fill(0);
  }
}

/**
 * The chunk code allocates its output with allocUnsafeSlow (a buffer with its own ArrayBuffer); this
 * guards the transfer against a change there: a view into a shared (pooled) ArrayBuffer would hand
 * other memory to the main thread, so such output is copied first.
 */
function ownOutput(out: Buffer): Uint8Array {
  if (out.byteOffset === 0 && out.byteLength === out.buffer.byteLength) return out;
  return new Uint8Array(out);
}
