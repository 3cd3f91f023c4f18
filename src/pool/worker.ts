/**
 * The pool's worker: seals and opens batches of chunks. Small and pure on purpose — it imports only
 * the chunk code, never gRPC, vault clients or config.
 *
 * Postcondition: the message key copy each task carries is zeroed before the task returns.
 */
import { Piscina } from 'piscina';
import { type ChunkBatch, openChunks, sealChunks } from '../crypto/chunk';

/** A chunk batch as it crosses the thread boundary (Buffers arrive as Uint8Arrays). */
export type WorkerBatch = ChunkBatch;

/** Failure of an open task, returned (not thrown) so its fields survive the thread boundary. */
export interface OpenFailure {
  readonly failedIndex: number;
  readonly truncated: boolean;
}

export function seal(batch: WorkerBatch): unknown {
  try {
    return Piscina.move(sealChunks(batch));
  } finally {
    batch.key.fill(0);
  }
}

export function open(batch: WorkerBatch): unknown {
  try {
    const result = openChunks(batch);
    if (result.ok) return Piscina.move(result.plaintext);
    const failure: OpenFailure = { failedIndex: result.failedIndex, truncated: result.truncated };
    return failure;
  } finally {
    batch.key.fill(0);
  }
}
