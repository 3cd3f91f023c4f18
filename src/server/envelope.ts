/**
 * gRPC handlers for sealbox.v1.Envelope: validate the request's shape, hand the work to the
 * envelope service, and answer with a status from the one error table.
 */
import type { ServerUnaryCall, sendUnaryData } from '@grpc/grpc-js';
import type { EnvelopeHandlers } from '../api/proto';
import type { EnvelopeService } from '../envelope/service';
import { ErrorCode, SealboxError } from '../errors';
import type { DecryptStreamRequest__Output } from '../gen/sealbox/v1/DecryptStreamRequest';
import type { DecryptStreamResponse } from '../gen/sealbox/v1/DecryptStreamResponse';
import type { EncryptStreamRequest__Output } from '../gen/sealbox/v1/EncryptStreamRequest';
import type { EncryptStreamResponse } from '../gen/sealbox/v1/EncryptStreamResponse';
import type { Logger } from '../log/logger';
import type { ByteBudget } from '../util/budget';
import { toServiceError } from './status';
import { Framed, StreamCall, type StreamLimits } from './stream-call';
import { RESPONSE_HEADROOM } from './wire';

/** Marks pool output as carrying RESPONSE_HEADROOM reserved bytes. */
const framed = (output: Promise<Buffer>): Promise<Framed> => output.then((buffer) => new Framed(buffer));

export interface EnvelopeDeps {
  readonly service: EnvelopeService;
  readonly budget: ByteBudget;
  readonly limits: StreamLimits;
  readonly log: Logger;
}

export function envelopeHandlers(deps: EnvelopeDeps): EnvelopeHandlers {
  const { service, budget, limits, log } = deps;

  /** Runs a unary call with cancellation, budget and error mapping. */
  function unary<Req, Res>(
    method: string,
    call: ServerUnaryCall<Req, Res>,
    callback: sendUnaryData<Res>,
    bytes: number,
    work: (signal: AbortSignal) => Promise<Res>,
  ): void {
    const abort = new AbortController();
    call.on('cancelled', () => abort.abort(new SealboxError(ErrorCode.CANCELLED, 'call cancelled')));
    let held = 0;
    budget
      .acquire(bytes, abort.signal)
      .then((h) => {
        held = h;
        return work(abort.signal);
      })
      .then(
        (response) => callback(null, response),
        (err) => callback(toServiceError(err, log, method)),
      )
      .finally(() => budget.release(held));
  }

  return {
    Encrypt(call, callback) {
      const { keyAlias, plaintext, context } = call.request;
      unary('Encrypt', call, callback, plaintext.length, async (signal) => {
        const { ciphertext, keyId } = await service.encrypt(keyAlias, plaintext, context, signal);
        return { ciphertext, keyId };
      });
    },

    Decrypt(call, callback) {
      const { ciphertext, expectedContext } = call.request;
      unary('Decrypt', call, callback, ciphertext.length, async (signal) => {
        const { plaintext, info } = await service.decrypt(ciphertext, expectedContext, signal);
        return { plaintext, keyId: info.keyId, context: info.context };
      });
    },

    EncryptStream(call) {
      const stream = new StreamCall<EncryptStreamRequest__Output, EncryptStreamResponse>(
        call,
        budget,
        limits,
        log,
        'EncryptStream',
      );
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
        const session = await service.beginEncrypt(keyAlias, context, chunkSize, stream.signal);
        stream.onEnd(() => session.dispose());
        await stream.send({ metadata: { keyId: session.info.keyId, context: session.info.context } });
        await stream.send(session.header);
        for await (const message of messages) {
          if (message.msg !== 'data') {
            throw new SealboxError(
              ErrorCode.INVALID_ARGUMENT,
              'EncryptStream accepts one init message, then only data',
            );
          }
          for (const segment of session.push(message.data!)) {
            await stream.submit(segment.data.length, () =>
              framed(session.seal(segment, stream.signal, RESPONSE_HEADROOM)),
            );
          }
        }
        const last = session.finish();
        await stream.submit(last.data.length, () =>
          framed(session.seal(last, stream.signal, RESPONSE_HEADROOM)),
        );
        await stream.complete();
      })().catch((err) => stream.fail(err));
    },

    DecryptStream(call) {
      const stream = new StreamCall<DecryptStreamRequest__Output, DecryptStreamResponse>(
        call,
        budget,
        limits,
        log,
        'DecryptStream',
      );
      (async () => {
        let session: ReturnType<EnvelopeService['beginDecrypt']> | undefined;
        for await (const message of stream.messages()) {
          if (message.msg === 'init') {
            if (session) {
              throw new SealboxError(
                ErrorCode.INVALID_ARGUMENT,
                'DecryptStream accepts init only as its first message',
              );
            }
            session = service.beginDecrypt(message.init?.expectedContext ?? {}, stream.signal);
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
            session = service.beginDecrypt({}, stream.signal);
            stream.onEnd(() => session?.dispose());
          }
          const active = session;
          const { info, segments } = await active.push(message.data!);
          if (info) await stream.send({ metadata: { keyId: info.keyId, context: info.context } });
          for (const segment of segments) {
            await stream.submit(segment.data.length, () =>
              framed(active.open(segment, stream.signal, RESPONSE_HEADROOM)),
            );
          }
        }
        if (!session)
          throw new SealboxError(ErrorCode.CIPHERTEXT_TRUNCATED, 'DecryptStream received no ciphertext');
        const active = session;
        const last = active.finish();
        await stream.submit(last.data.length, () =>
          framed(active.open(last, stream.signal, RESPONSE_HEADROOM)),
        );
        await stream.complete();
      })().catch((err) => stream.fail(err));
    },
  };
}
