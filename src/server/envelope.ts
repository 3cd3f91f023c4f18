/**
 * gRPC handlers for sealbox.v1.Envelope: validate the request's shape, hand the work to the
 * envelope service, and answer with a status from the one error table.
 */
import {
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServiceError,
  type sendUnaryData,
  status,
} from '@grpc/grpc-js';
import type { EnvelopeHandlers } from '../api/proto';
import type { PeerKind } from '../config/config';
import type { KeyAccess } from '../envelope/access';
import type { BatchEnvelope } from '../envelope/batch';
import { isItemError, type RewrapResult, readRewrapRequest } from '../envelope/rewrap';
import type { EnvelopeService } from '../envelope/service';
import { ErrorCode, SealboxError } from '../errors';
import type { DecryptStreamRequest__Output } from '../gen/sealbox/v1/DecryptStreamRequest';
import type { DecryptStreamResponse } from '../gen/sealbox/v1/DecryptStreamResponse';
import type { EncryptStreamRequest__Output } from '../gen/sealbox/v1/EncryptStreamRequest';
import type { EncryptStreamResponse } from '../gen/sealbox/v1/EncryptStreamResponse';
import type { RewrapRequest__Output } from '../gen/sealbox/v1/RewrapRequest';
import type { RewrapResponse } from '../gen/sealbox/v1/RewrapResponse';
import type { AuditCaller } from '../kek/audit';
import type { Logger } from '../log/logger';
import { LazySignal } from '../util/abort';
import type { ByteBudget } from '../util/budget';
import { BufferRecycler } from '../util/recycler';
import type { AccessControl, Admitted } from './access';
import { batchHandlers } from './batch';
import { rpcCaller } from './callers';
import { RequestReturns } from './grpc-reassembly';
import { toServiceError } from './status';
import { Framed, StreamCall, type StreamLimits } from './stream-call';
import { RESPONSE_HEADROOM } from './wire';

/** How long a finished unary call's budget waits for grpc-js to report the call's end at most. */
const UNARY_RELEASE_FALLBACK_MS = 30_000;

/**
 * Output buffers of stream segments are reused once written (src/util/recycler.ts). At most 16 free
 * buffers / 32 MiB are kept: a few default 1 MiB segments per busy stream; beyond that they are
 * freed as before. One pool serves every listener (server.ts); metrics report what it holds.
 */
export function newOutputRecycler(): BufferRecycler {
  return new BufferRecycler(16, 32 * 1024 * 1024);
}

/** The wire form of a rewrap result. */
const rewrapResponse = (result: RewrapResult): RewrapResponse => ({
  header: result.header,
  keyId: result.keyId,
  previousKeyId: result.previousKeyId,
  headerLengthBefore: result.headerLengthBefore,
  changed: result.changed,
});

/**
 * A RewrapStream response as StreamCall's type sees it: it never carries `data` (StreamCall sends
 * non-Buffer results as they are), and naming the property satisfies StreamCall's response bound.
 */
type RewrapStreamResponse = RewrapResponse & { data?: undefined };

/** Until main.ts hands the service the KEK registry, Rewrap answers this. */
const rewrapUnavailable = (): Partial<ServiceError> => ({
  code: status.UNIMPLEMENTED,
  details:
    'Rewrap is not available in this sealbox: the envelope service was started without the KEK registry',
});

export interface EnvelopeDeps {
  readonly service: EnvelopeService;
  readonly budget: ByteBudget;
  readonly limits: StreamLimits;
  /** Bytes of unary requests that may wait for the budget; beyond it they are refused at once. */
  readonly unaryQueueBytes: number;
  readonly access: AccessControl;
  readonly log: Logger;
  /** EncryptBatch / DecryptBatch (server/batch.ts); without it they answer UNIMPLEMENTED. */
  readonly batch?: BatchEnvelope;
}

/** Handlers for the listener `peer` (the socket or TCP): access control attributes calls to it. */
export function envelopeHandlers(
  deps: EnvelopeDeps,
  peer: PeerKind,
  outputs: BufferRecycler = newOutputRecycler(),
): EnvelopeHandlers {
  const { service, budget, limits, access, log, unaryQueueBytes } = deps;
  const allocate = (bytes: number): Buffer => outputs.take(bytes);
  const recycle = (buffer: Buffer): void => outputs.give(buffer);
  /** Marks pool output as carrying RESPONSE_HEADROOM reserved bytes, to be recycled once written. */
  const framed = (output: Promise<Buffer>): Promise<Framed> =>
    output.then((buffer) => new Framed(buffer, recycle));

  /**
   * Admits a streaming call (identity, rate, stream limits); on refusal ends it with the status and
   * returns undefined. The caller releases the slot when the stream ends. `caller` is the call's audit
   * caller, for the vault calls it causes.
   */
  function admitStream(
    call: ServerDuplexStream<unknown, unknown>,
    method: string,
  ): (Admitted & { readonly caller: AuditCaller }) | undefined {
    try {
      const admitted = access.admit(call, peer, method, true);
      return { ...admitted, caller: rpcCaller(method, call, admitted.identity) };
    } catch (err) {
      call.emit('error', toServiceError(err, log, method));
      return undefined;
    }
  }

  /**
   * Runs a unary call with admission, cancellation, budget and error mapping. grpc-js has already
   * decoded the whole request when this runs, so a request that cannot be served soon is refused now
   * (its memory freed), never parked: the size limit first, then the budget with a bounded queue.
   */
  function unary<Req, Res>(
    method: string,
    call: ServerUnaryCall<Req, Res>,
    callback: sendUnaryData<Res>,
    bytes: number,
    work: (signal: LazySignal, keys: KeyAccess, caller: AuditCaller) => Promise<Res>,
    checkSize?: () => void,
  ): void {
    let admitted: Admitted;
    let caller: AuditCaller;
    try {
      checkSize?.();
      admitted = access.admit(call, peer, method, false);
      caller = rpcCaller(method, call, admitted.identity);
    } catch (err) {
      callback(toServiceError(err, log, method));
      return;
    }
    // Made into an AbortController only if the call has to wait on something (lazy: a DEK-cache hit
    // never does).
    const cancel = new LazySignal();
    let answered = false;
    // The budget covers the request and, until it has been handed to HTTP/2, the response: it is
    // released when the work has settled *and* grpc-js reports the call's end — 'cancelled', which
    // grpc-js also emits once a finished call's trailers went out (after its response data), so a
    // client that does not read its responses cannot make the server hold them beyond the budget.
    let held = 0;
    let settled = false;
    let ended = false;
    let fallback: NodeJS.Timeout | undefined;
    const release = () => {
      if (fallback) clearTimeout(fallback);
      fallback = undefined;
      if (held > 0) budget.release(held);
      held = 0;
    };
    call.on('cancelled', () => {
      ended = true;
      // Only a call still working is aborted (and no error object is built per call on the hot path).
      if (!answered) cancel.abort(new SealboxError(ErrorCode.CANCELLED, 'call cancelled'));
      if (settled) release();
    });
    const admission = budget.tryAcquire(bytes, unaryQueueBytes, cancel);
    if (!admission) {
      callback(
        toServiceError(
          new SealboxError(
            ErrorCode.OVERLOADED,
            `sealbox is at capacity: ${budget.inUse} bytes in flight and ${budget.queuedBytes} bytes of calls ` +
              'waiting (stream.maxInFlightBytes, envelope.unaryQueueBytes); retry with backoff',
          ),
          log,
          method,
        ),
      );
      return;
    }
    const settle = () => {
      settled = true;
      if (ended) return release();
      // Postcondition: the budget comes back even if grpc-js never reports the end (a safety net;
      // a response unread for this long is the client's stall, held by HTTP/2 flow control).
      fallback = setTimeout(release, UNARY_RELEASE_FALLBACK_MS);
      fallback.unref();
    };
    // Two promise reactions per call on the way (admission, work); no .finally, no async wrappers.
    admission
      .then((h) => {
        held = h;
        return work(cancel, admitted.keys, caller);
      })
      .then(
        (response) => {
          answered = true;
          try {
            callback(null, response);
          } finally {
            settle();
          }
        },
        (err) => {
          answered = true;
          try {
            callback(toServiceError(err, log, method));
          } finally {
            settle();
          }
        },
      );
  }

  return {
    ...batchHandlers(deps.batch, unary),

    Encrypt(call, callback) {
      const { keyAlias, plaintext, context } = call.request;
      unary(
        'Encrypt',
        call,
        callback,
        2 * plaintext.length, // the request, and the ciphertext response of about its size
        // The service's answer is the response as it is: { ciphertext, keyId }.
        (signal, keys, caller) => service.encrypt(keyAlias, plaintext, context, signal, keys, caller),
        () => service.checkUnarySize('plaintext', plaintext.length),
      );
    },

    Decrypt(call, callback) {
      const { ciphertext, expectedContext } = call.request;
      unary(
        'Decrypt',
        call,
        callback,
        2 * ciphertext.length, // the request, and the plaintext response of about its size
        (signal, keys, caller) =>
          service
            .decrypt(ciphertext, expectedContext, signal, keys, caller)
            .then(({ plaintext, info }) => ({ plaintext, keyId: info.keyId, context: info.context })),
        () => service.checkUnarySize('ciphertext', ciphertext.length),
      );
    },

    EncryptStream(call) {
      const admitted = admitStream(call, 'EncryptStream');
      if (!admitted) return;
      const stream = new StreamCall<EncryptStreamRequest__Output, EncryptStreamResponse>(
        call,
        budget,
        limits,
        log,
        'EncryptStream',
      );
      stream.onEnd(admitted.release);
      (async () => {
        const messages = stream.messages();
        const first = await messages.next();
        if (first.done || first.value.msg !== 'init' || !first.value.init) {
          throw new SealboxError(
            ErrorCode.INVALID_ARGUMENT,
            'EncryptStream must start with an init message (key_alias, context, chunk_size) before any data',
          );
        }
        const { keyAlias, context, chunkSize } = first.value.init;
        // Each push's segments are sealed (submitted) before the next push: consumesInOrder.
        const session = await service.beginEncrypt(
          keyAlias,
          context,
          chunkSize,
          stream.signal,
          admitted.keys,
          admitted.caller,
          true,
        );
        stream.onEnd(() => session.dispose());
        await stream.send({ metadata: { keyId: session.info.keyId, context: session.info.context } });
        await stream.send(session.header);
        const returns = new RequestReturns((memory) => session.holds(memory));
        for await (const message of messages) {
          if (message.msg !== 'data') {
            throw new SealboxError(
              ErrorCode.INVALID_ARGUMENT,
              'EncryptStream accepts one init message, then only data',
            );
          }
          const received = returns.received(message.data);
          const segments = session.push(message.data!);
          returns.pushed(received, segments);
          for (const segment of segments) {
            await stream.submit(segment.data.length, () =>
              framed(
                returns.settles(segment, session.seal(segment, stream.signal, RESPONSE_HEADROOM, allocate)),
              ),
            );
          }
        }
        const last = session.finish();
        // The final segment may be a view of the last message too: in use until it is sealed.
        returns.pushed(undefined, [last]);
        await stream.submit(last.data.length, () =>
          framed(returns.settles(last, session.seal(last, stream.signal, RESPONSE_HEADROOM, allocate))),
        );
        await stream.complete();
      })().catch((err) => stream.fail(err));
    },

    DecryptStream(call) {
      const admitted = admitStream(call, 'DecryptStream');
      if (!admitted) return;
      const stream = new StreamCall<DecryptStreamRequest__Output, DecryptStreamResponse>(
        call,
        budget,
        limits,
        log,
        'DecryptStream',
      );
      stream.onEnd(admitted.release);
      (async () => {
        let session: ReturnType<EnvelopeService['beginDecrypt']> | undefined;
        const returns = new RequestReturns((memory) => session?.holds(memory) ?? false);
        for await (const message of stream.messages()) {
          if (message.msg === 'init') {
            if (session) {
              throw new SealboxError(
                ErrorCode.INVALID_ARGUMENT,
                'DecryptStream accepts init only as its first message',
              );
            }
            // Each push's segments are opened (submitted) before the next push: consumesInOrder.
            session = service.beginDecrypt(
              message.init?.expectedContext ?? {},
              stream.signal,
              admitted.keys,
              admitted.caller,
              true,
            );
            stream.onEnd(() => session?.dispose());
            continue;
          }
          if (message.msg !== 'data') {
            throw new SealboxError(
              ErrorCode.INVALID_ARGUMENT,
              'DecryptStream messages must carry init (first only) or data; this one carries neither',
            );
          }
          if (!session) {
            session = service.beginDecrypt({}, stream.signal, admitted.keys, admitted.caller, true);
            stream.onEnd(() => session?.dispose());
          }
          const active = session;
          const received = returns.received(message.data);
          const { info, segments } = await active.push(message.data!);
          returns.pushed(received, segments);
          if (info) await stream.send({ metadata: { keyId: info.keyId, context: info.context } });
          for (const segment of segments) {
            await stream.submit(segment.data.length, () =>
              framed(
                returns.settles(segment, active.open(segment, stream.signal, RESPONSE_HEADROOM, allocate)),
              ),
            );
          }
        }
        if (!session)
          throw new SealboxError(ErrorCode.CIPHERTEXT_TRUNCATED, 'DecryptStream received no ciphertext');
        const active = session;
        const last = active.finish();
        // The final segment may be a view of the last message too: in use until it is opened.
        returns.pushed(undefined, [last]);
        await stream.submit(last.data.length, () =>
          framed(returns.settles(last, active.open(last, stream.signal, RESPONSE_HEADROOM, allocate))),
        );
        await stream.complete();
      })().catch((err) => stream.fail(err));
    },

    Rewrap(call, callback) {
      if (!service.canRewrap) {
        callback(rewrapUnavailable());
        return;
      }
      const request = call.request;
      unary('Rewrap', call, callback, request.headerOrCiphertext.length, async (signal, keys, caller) =>
        rewrapResponse(await service.rewrap(request, signal.signal, keys, caller)),
      );
    },

    /**
     * One response per request, in order. At most `limits.maxInFlightSegments` items are rewrapped at
     * a time (StreamCall's bound), each holding its header's size of the shared byte budget. An item's
     * own failure becomes its response; any other failure ends the stream naming the item's index.
     */
    RewrapStream(call) {
      if (!service.canRewrap) {
        call.emit('error', rewrapUnavailable());
        return;
      }
      const admitted = admitStream(call, 'RewrapStream');
      if (!admitted) return;
      const stream = new StreamCall<RewrapRequest__Output, RewrapStreamResponse>(
        call,
        budget,
        limits,
        log,
        'RewrapStream',
      );
      stream.onEnd(admitted.release);
      const session = service.beginRewrap(stream.signal, admitted.keys, admitted.caller);
      stream.onEnd(() => session.dispose());
      /** The item's failure as its response, or (not the item's fault) the stream's end. */
      const failed = (index: number, err: unknown, previousKeyId = ''): RewrapStreamResponse => {
        if (isItemError(err)) {
          return { previousKeyId, changed: false, errorCode: err.code, errorMessage: err.message };
        }
        if (err instanceof SealboxError) {
          throw new SealboxError(err.code, `RewrapStream item ${index}: ${err.message}`, { cause: err });
        }
        throw err;
      };
      (async () => {
        let index = 0;
        for await (const request of stream.messages()) {
          const at = index++;
          let item: ReturnType<typeof readRewrapRequest>;
          try {
            // Parsed now, so the request's bytes (maybe a whole ciphertext) are not kept while it waits.
            item = readRewrapRequest(request);
          } catch (err) {
            await stream.send(failed(at, err));
            continue;
          }
          const previous = item.header.keyId;
          await stream.submit(item.header.length, () =>
            session.rewrap(item).then(rewrapResponse, (err: unknown) => failed(at, err, previous)),
          );
        }
        await stream.complete();
      })().catch((err) => stream.fail(err));
    },
  };
}
