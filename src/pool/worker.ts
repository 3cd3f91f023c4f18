/**
 * The pool's worker: seals and opens batches of chunks. Small and pure on purpose — it imports only
 * the chunk code, never gRPC, vault clients or config.
 *
 * Postcondition: the message key copy each task carries is zeroed before the task returns.
 */
import { Piscina } from 'piscina';
import { type ChunkBatch, openChunks, sealChunks } from '../crypto/chunk';

/**
 * A chunk batch as it crosses the thread boundary (Buffers arrive as Uint8Arrays), with the call's
 * cancellation flag: a shared Int32Array the main thread sets to 1 when the call ends.
 */
export type WorkerBatch = ChunkBatch & { readonly cancelled?: Int32Array };

/** Returned instead of a result when the task's call was cancelled before the task started. */
export const SKIPPED = 'skipped';

/** Failure of an open task, returned (not thrown) so its fields survive the thread boundary. */
export interface OpenFailure {
  readonly failedIndex: number;
  readonly truncated: boolean;
}

export function seal(batch: WorkerBatch): unknown {
  try {
    if (isCancelled(batch)) return SKIPPED;
    return Piscina.move(sealChunks(batch));
  } finally {
    batch.key.fill(0);
  }
}

export function open(batch: WorkerBatch): unknown {
  try {
    if (isCancelled(batch)) return SKIPPED;
    const result = openChunks(batch);
    if (result.ok) return Piscina.move(result.plaintext);
    const failure: OpenFailure = { failedIndex: result.failedIndex, truncated: result.truncated };
    return failure;
  } finally {
    batch.key.fill(0);
  }
}

function isCancelled(batch: WorkerBatch): boolean {
  return batch.cancelled !== undefined && Atomics.load(batch.cancelled, 0) === 1;
}
