/**
 * Admission for unary calls, before grpc-js reads their request.
 *
 * grpc-js keeps a call's HTTP/2 stream paused until the handler asks to read (`startRead`, which a unary
 * handler does as soon as the call's metadata arrives), then reads and buffers the whole request
 * message before the handler runs. A flood of large unary requests was therefore all in memory at once
 * — 300 concurrent 4 MiB Encrypts took the server past 2 GiB — whatever the handler did with them
 * afterwards. This interceptor holds back the metadata (and with it `startRead`) until one of
 * `concurrency` read slots is free, so at most `concurrency` unary requests are being received at a
 * time; the others stay paused, held back by HTTP/2 flow control in the client (a stream window each).
 * The slot is released as soon as the request message has arrived; the handler then admits the bytes
 * against the shared budget (server/envelope.ts), with a bounded queue.
 *
 * Calls waiting for a slot are bounded too (`maxWaiting`): beyond it a call is refused at once with
 * RESOURCE_EXHAUSTED / OVERLOADED, having cost only its headers.
 *
 * Memory for unary requests is thus bounded by concurrency × stream.maxMessageBytes (being read) +
 * stream.maxInFlightBytes (admitted) + envelope.unaryQueueBytes (waiting for the budget).
 */
import { Metadata, ServerInterceptingCall, type ServerInterceptor, status } from '@grpc/grpc-js';
import { ErrorCode } from '../errors';
import { ERROR_CODE_TRAILER } from './status';

/**
 * A counting gate: `enter` gives a release function at once when a slot is free (no promise on the
 * common path), a promise of one when the call must wait, or undefined when it is refused.
 */
export class ReadGate {
  private active = 0;
  private readonly waiting: Array<(release: () => void) => void> = [];

  constructor(
    readonly concurrency: number,
    readonly maxWaiting: number,
    /**
     * True while the byte budget cannot take another unary request (no free bytes and its queue full):
     * such a call is refused before its request is read, costing only its headers.
     */
    private readonly saturated: () => boolean = () => false,
  ) {}

  /** True while the byte budget cannot take another unary request. */
  get full(): boolean {
    return this.saturated();
  }

  enter(): (() => void) | Promise<() => void> | undefined {
    if (this.saturated()) return undefined;
    if (this.active < this.concurrency) {
      this.active++;
      return this.releaser();
    }
    if (this.waiting.length >= this.maxWaiting) return undefined;
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next(this.releaser());
      else this.active--;
    };
  }
}

/** The unary methods of sealbox.v1.Envelope, whose requests can be large. */
export const ENVELOPE_UNARY_PATHS: ReadonlySet<string> = new Set([
  '/sealbox.v1.Envelope/Encrypt',
  '/sealbox.v1.Envelope/Decrypt',
  '/sealbox.v1.Envelope/Rewrap',
  '/sealbox.v1.Envelope/EncryptBatch',
  '/sealbox.v1.Envelope/DecryptBatch',
]);

/** The interceptor that admits the unary methods in `paths` through `gate`. */
export function unaryAdmissionInterceptor(gate: ReadGate, paths: ReadonlySet<string>): ServerInterceptor {
  return (descriptor, call) => {
    if (!paths.has(descriptor.path)) return new ServerInterceptingCall(call);
    let release: (() => void) | undefined;
    let ended = false;
    const done = () => {
      ended = true;
      release?.();
      release = undefined;
    };
    return new ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, nextMetadata) {
            const refuse = () => {
              const trailer = new Metadata();
              trailer.set(ERROR_CODE_TRAILER, ErrorCode.OVERLOADED);
              ended = true;
              call.sendStatus({
                code: status.RESOURCE_EXHAUSTED,
                details:
                  'sealbox is at capacity: the byte budget and its queue are full, or ' +
                  `${gate.maxWaiting} unary requests wait to be received; retry with backoff`,
                metadata: trailer,
              });
            };
            const slot = gate.enter();
            if (!slot) return refuse();
            if (typeof slot === 'function') {
              release = slot;
              return nextMetadata(metadata);
            }
            slot.then((r) => {
              // The call may have ended (cancelled) while it waited: pass the slot on at once.
              if (ended) return r();
              // The budget may have filled while it waited: refuse before reading the request.
              if (gate.full) {
                r();
                return refuse();
              }
              release = r;
              nextMetadata(metadata);
            });
          },
          onReceiveMessage(message, nextMessage) {
            // Postcondition: the request is in memory and the handler admits its bytes; the slot is free.
            release?.();
            release = undefined;
            nextMessage(message);
          },
          onCancel() {
            done();
          },
        });
      },
      sendStatus(sent, next) {
        done();
        next(sent);
      },
    });
  };
}
