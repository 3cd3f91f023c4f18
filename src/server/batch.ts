/**
 * gRPC handlers for EncryptBatch and DecryptBatch (envelope/batch.ts). They run through the same
 * unary path as Encrypt and Decrypt (server/envelope.ts): the read gate (server/admission.ts, which
 * lists their paths), access control (one rate token per call; each item's key checked by the use
 * case), the shared byte budget with its bounded queue, cancellation and the one error table. The
 * item and byte limits are checked before admission, so an oversized batch never waits.
 */
import type { ServerUnaryCall, ServiceError, sendUnaryData } from '@grpc/grpc-js';
import { status } from '@grpc/grpc-js';
import type { EnvelopeHandlers } from '../api/proto';
import type { KeyAccess } from '../envelope/access';
import type { BatchEnvelope } from '../envelope/batch';
import type { AuditCaller } from '../kek/audit';
import type { LazySignal } from '../util/abort';

/**
 * Budget bytes per EncryptBatch item beyond its plaintext: its header in the answer (a few hundred
 * bytes, up to about 10 KiB with a large context) and the decoded item's objects.
 */
export const ENCRYPT_ITEM_BUDGET_BYTES = 1024;

/** The unary runner of server/envelope.ts: admission, budget, cancellation and error mapping. */
export type UnaryRunner = <Req, Res>(
  method: string,
  call: ServerUnaryCall<Req, Res>,
  callback: sendUnaryData<Res>,
  bytes: number,
  work: (signal: LazySignal, keys: KeyAccess, caller: AuditCaller) => Promise<Res>,
  checkSize?: () => void,
) => void;

/** Answered when the server was started without the batch use case (tests that build deps by hand). */
const batchUnavailable = (): Partial<ServiceError> => ({
  code: status.UNIMPLEMENTED,
  details: 'EncryptBatch and DecryptBatch are not available in this sealbox: it was started without them',
});

/** The two batch handlers, to be registered with the other Envelope handlers. */
export function batchHandlers(
  batch: BatchEnvelope | undefined,
  unary: UnaryRunner,
): Pick<EnvelopeHandlers, 'EncryptBatch' | 'DecryptBatch'> {
  return {
    EncryptBatch(call, callback) {
      if (!batch) return callback(batchUnavailable());
      const { items } = call.request;
      let bytes = 0;
      for (const item of items) bytes += item.plaintext.length;
      unary(
        'EncryptBatch',
        call,
        callback,
        // The request, and the answer: about its size plus a header per item.
        2 * bytes + items.length * ENCRYPT_ITEM_BUDGET_BYTES,
        async (signal, keys, caller) => ({ results: await batch.encrypt(items, signal, keys, caller) }),
        () => batch.checkEncrypt(items),
      );
    },

    DecryptBatch(call, callback) {
      if (!batch) return callback(batchUnavailable());
      const { items } = call.request;
      let bytes = 0;
      for (const item of items) bytes += item.ciphertext.length;
      unary(
        'DecryptBatch',
        call,
        callback,
        2 * bytes, // the request, and the plaintext answer of at most its size
        async (signal, keys, caller) => ({ results: await batch.decrypt(items, signal, keys, caller) }),
        () => batch.checkDecrypt(items),
      );
    },
  };
}
