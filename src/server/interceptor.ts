/**
 * The one server interceptor: times each RPC from its arrival to its final status and records the
 * method, the status code, the sealbox error code (trailer) and the payload bytes — once per call.
 * Per message it only adds a length to a local number (Envelope methods only); the metrics themselves
 * are touched when the call ends.
 *
 * How a call can end, and what is recorded:
 * - the handler sends a status (OK or an error): that status, with the error-code trailer;
 * - the client cancels, or the connection drops, before any status: CANCELLED;
 * - the deadline passes: grpc-js's own timer sends DEADLINE_EXCEEDED below the interceptors, or the
 *   client's timer fires first and it resets the stream; either way the interceptor sees only a
 *   cancellation, recorded as DEADLINE_EXCEEDED when it comes within DEADLINE_SLACK_MS of the
 *   deadline or after it.
 * grpc-js also signals cancellation after a status was sent; only the first ending counts.
 */
import { performance } from 'node:perf_hooks';
import { ServerInterceptingCall, type ServerInterceptor, status } from '@grpc/grpc-js';
import type { RpcMetrics } from '../metrics/metrics';
import { ERROR_CODE_TRAILER } from './status';
import { PreEncoded } from './wire';

/**
 * A cancellation this close to the call's deadline is the deadline's doing: the client's deadline
 * timer and the server's run from nearly the same instant, and either may fire first.
 */
export const DEADLINE_SLACK_MS = 25;

/** Builds the interceptor that reports to `metrics`. */
export function metricsInterceptor(metrics: RpcMetrics): ServerInterceptor {
  return (descriptor, call) => {
    const route = metrics.route(descriptor.path);
    const started = performance.now();
    let bytesIn = 0;
    let bytesOut = 0;
    let done = false;
    const finish = (code: number, errorCode: unknown) => {
      if (done) return;
      done = true;
      route.finished(code, errorCode, (performance.now() - started) / 1000, bytesIn, bytesOut);
    };
    const deadlinePassed = () => {
      const deadline = call.getDeadline();
      const at = deadline instanceof Date ? deadline.getTime() : deadline;
      return Number.isFinite(at) && at <= Date.now() + DEADLINE_SLACK_MS;
    };
    return new ServerInterceptingCall(call, {
      start(next) {
        next({
          ...(route.countsBytes
            ? {
                onReceiveMessage(message, nextMessage) {
                  bytesIn += payloadBytes(message);
                  nextMessage(message);
                },
              }
            : {}),
          onCancel() {
            finish(deadlinePassed() ? status.DEADLINE_EXCEEDED : status.CANCELLED, undefined);
          },
        });
      },
      ...(route.countsBytes
        ? {
            sendMessage(message, next) {
              bytesOut += payloadBytes(message);
              next(message);
            },
          }
        : {}),
      sendStatus(sent, next) {
        finish(sent.code, sent.metadata?.get(ERROR_CODE_TRAILER)[0]);
        next(sent);
      },
    });
  };
}

/** Fields of Envelope messages that carry payload (plaintext, ciphertext, headers). */
const PAYLOAD_FIELDS = ['plaintext', 'ciphertext', 'data', 'headerOrCiphertext', 'header'] as const;

/**
 * The payload bytes of one Envelope request or response: its plaintext, ciphertext, data or header
 * bytes; not context, key ids or protobuf framing. A pre-encoded stream response (./wire.ts) is
 * `0x12, varint length, payload`; its payload length is read from the varint.
 */
export function payloadBytes(message: unknown): number {
  if (message instanceof PreEncoded) return preEncodedPayload(message.bytes);
  if (message === null || typeof message !== 'object') return 0;
  const fields = message as Record<string, unknown>;
  let total = 0;
  for (const field of PAYLOAD_FIELDS) {
    const value = fields[field];
    if (value instanceof Uint8Array) total += value.length;
  }
  // EncryptBatch / DecryptBatch: the payload of every item or result.
  for (const field of BATCH_FIELDS) {
    const list = fields[field];
    if (Array.isArray(list)) for (const entry of list) total += payloadBytes(entry);
  }
  return total;
}

/** Repeated fields of the batch messages whose entries carry payload. */
const BATCH_FIELDS = ['items', 'results'] as const;

function preEncodedPayload(bytes: Buffer): number {
  let length = 0;
  let scale = 1;
  // Byte 0 is the field tag; a varint of at most 5 bytes follows (RESPONSE_HEADROOM).
  for (let i = 1; i < Math.min(bytes.length, 6); i++) {
    const byte = bytes[i]!;
    length += (byte & 0x7f) * scale;
    if ((byte & 0x80) === 0) return length;
    scale *= 128;
  }
  return Math.max(0, bytes.length - 1);
}
