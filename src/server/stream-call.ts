/**
 * The life of one streaming call: cancellation, ordered output with backpressure, and a single
 * place where the call ends (OK or error) and its resources are released.
 *
 * Backpressure, end to end: a stream reads its next message only after it could submit the previous
 * one's work, and it can submit only while it has fewer than `maxInFlight` segments outstanding and
 * the shared ByteBudget has room. Segments are written strictly in order, each write waiting for
 * 'drain' when grpc-js's buffer is full. So a client that stops reading stalls its own stream (and
 * HTTP/2 flow control stalls its writer) instead of growing server memory.
 */
import type { ServerDuplexStream } from '@grpc/grpc-js';
import { ErrorCode, SealboxError } from '../errors';
import type { Logger } from '../log/logger';
import type { ByteBudget } from '../util/budget';
import { toServiceError } from './status';
import { encodeDataResponse, RESPONSE_HEADROOM } from './wire';

/** Work output whose first RESPONSE_HEADROOM bytes are reserved for the response's framing. */
export class Framed {
  constructor(
    readonly buffer: Buffer,
    /** Called once the buffer was written out as one response and nothing reads it any more. */
    readonly written?: (buffer: Buffer) => void,
  ) {}
}

export interface StreamLimits {
  readonly maxInFlightSegments: number;
  /** Output data is split into messages of at most this many bytes. */
  readonly writeMessageBytes: number;
  /** The call ends with IDLE_TIMEOUT after this long without a message in or out; 0 = never. */
  readonly idleTimeoutMs: number;
}

type DataResponse = { data?: unknown };

/** Messages grpc-js may hold for one stream, each way (see narrowStreamBuffers). */
export const READ_AHEAD_MESSAGES = 1;
export const WRITE_BEHIND_MESSAGES = 2;

/**
 * grpc-js builds every server stream as an object-mode Duplex with Node's default of 16 messages each
 * way, and offers no option to change it. Messages, not bytes: with 8 MiB requests one stalled stream
 * held ~17 × 8 MiB outside the byte budget (test/integration/memory.test.ts). StreamCall pulls one
 * message at a time, so reading one ahead is all it needs; two queued writes keep the HTTP/2 stream
 * busy. The fields are Node's stream state, stable since Node 10; if they were ever missing this is
 * a no-op and the memory test fails, not the service.
 */
function narrowStreamBuffers(call: object): void {
  const state = call as {
    _readableState?: { highWaterMark?: number };
    _writableState?: { highWaterMark?: number };
  };
  if (typeof state._readableState?.highWaterMark === 'number')
    state._readableState.highWaterMark = READ_AHEAD_MESSAGES;
  if (typeof state._writableState?.highWaterMark === 'number')
    state._writableState.highWaterMark = WRITE_BEHIND_MESSAGES;
}

export class StreamCall<Req, Res extends DataResponse> {
  private readonly abort = new AbortController();
  private readonly pending: Array<{ result: Promise<Res | Buffer | Framed>; held: number }> = [];
  private readonly slotWaiters: Array<() => void> = [];
  private readonly disposers: Array<() => void> = [];
  /** True while pump() runs; set and cleared synchronously so no submitted result is ever orphaned. */
  private pumpActive = false;
  private readonly idleWaiters: Array<() => void> = [];
  private readonly stopListeners = new Set<() => void>();
  private failure: unknown;
  private ended = false;
  /** Restarted (refresh) by every message in or out; fires only on a stream that stopped moving. */
  private readonly idleTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly call: ServerDuplexStream<Req, Res>,
    private readonly budget: ByteBudget,
    private readonly limits: StreamLimits,
    private readonly log: Logger,
    private readonly method: string,
  ) {
    narrowStreamBuffers(call);
    call.on('cancelled', () => {
      // grpc-js emits 'cancelled' on every call's close, also after a normal end: no error object
      // (and its stack trace) is built for a call that has already finished.
      if (this.ended) return;
      this.finishWith(
        new SealboxError(ErrorCode.CANCELLED, 'call cancelled by the client or its deadline'),
        false,
      );
    });
    const idleMs = limits.idleTimeoutMs;
    if (idleMs > 0) {
      this.idleTimer = setTimeout(() => {
        this.finishWith(
          new SealboxError(
            ErrorCode.IDLE_TIMEOUT,
            `${method} made no progress for ${idleMs} ms: no message was received or sent ` +
              '(stream.idleTimeoutMs); keep sending or reading, or end the stream',
          ),
          true,
        );
      }, idleMs);
      this.idleTimer.unref();
    }
  }

  /** Aborts pool tasks, budget waits and writes when the call ends. */
  get signal(): AbortSignal {
    return this.abort.signal;
  }

  /** Runs `fn` once when the call ends, however it ends (zeroes keys). */
  onEnd(fn: () => void): void {
    if (this.ended) fn();
    else this.disposers.push(fn);
  }

  /**
   * Incoming messages, in order, pulled one at a time so grpc-js reads from the network only as fast
   * as this call consumes (its readable buffer holds at most highWaterMark messages). Ends early if
   * the call stops.
   *
   * Why not the stream's async iterator: it destroys the call when the call emits 'error', and
   * emitting 'error' is how grpc-js is told to send an error status — a destroyed call never sends
   * it, and the client hangs. Each wait also gets its own stop listener, removed when it resolves,
   * so nothing keeps received messages reachable.
   */
  async *messages(): AsyncGenerator<Req> {
    const call = this.call;
    while (!this.ended) {
      const message = call.read() as Req | null;
      if (message !== null) {
        this.idleTimer?.refresh();
        yield message;
        continue;
      }
      if (call.readableEnded || call.destroyed) return;
      await this.until('readable', 'end');
    }
  }

  /** Queues a message that needs no work (metadata, header bytes). */
  send(response: Res | Buffer): Promise<void> {
    return this.submit(0, () => Promise.resolve(response));
  }

  /**
   * Starts `work` once the stream has a free slot and the shared budget holds `bytes`; its result is
   * written after everything submitted before it. Throws if the call has already failed.
   */
  async submit(bytes: number, work: () => Promise<Res | Buffer | Framed>): Promise<void> {
    this.throwIfStopped();
    while (this.pending.length >= this.limits.maxInFlightSegments) {
      await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
      this.throwIfStopped();
    }
    const held = bytes > 0 ? await this.budget.acquire(bytes, this.signal) : 0;
    if (this.ended) {
      this.budget.release(held);
      this.throwIfStopped();
    }
    let result: Promise<Res | Buffer | Framed>;
    try {
      result = work();
    } catch (err) {
      this.budget.release(held);
      throw err;
    }
    result.catch(() => {}); // observed by the pump, in order
    this.pending.push({ result, held });
    if (!this.pumpActive) {
      this.pumpActive = true;
      void this.pump();
    }
  }

  /** Waits until every submitted result is written, then ends the call with OK. */
  async complete(): Promise<void> {
    while (this.pending.length > 0 && !this.ended) {
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
    this.throwIfStopped();
    this.finishWith(undefined, true);
  }

  /** Ends the call with `err` (after already-verified output is flushed). Idempotent. */
  fail(err: unknown): void {
    this.finishWith(err, true);
  }

  /**
   * Writes results in submission order. Invariant: the check that finds `pending` empty (or the call
   * ended) and the clearing of `pumpActive` run in one synchronous step — no await between them —
   * so a submit() resuming at any point afterwards sees the pump gone and starts a new one.
   */
  private async pump(): Promise<void> {
    for (;;) {
      if (this.pending.length === 0 || this.ended) {
        this.pumpActive = false;
        for (const wake of this.idleWaiters.splice(0)) wake();
        return;
      }
      const head = this.pending[0]!;
      try {
        await this.write(await head.result);
      } catch (err) {
        this.finishWith(err, true);
      } finally {
        // finishWith() may already have cleared the queue and released everything.
        if (this.pending[0] === head) {
          this.pending.shift();
          this.budget.release(head.held);
        }
        this.slotWaiters.shift()?.();
      }
    }
  }

  private async write(value: Res | Buffer | Framed): Promise<void> {
    if (value instanceof Framed) {
      const payload = value.buffer.length - RESPONSE_HEADROOM;
      if (payload === 0) return;
      if (payload <= this.limits.writeMessageBytes) {
        const { buffer, written } = value;
        return this.writeOne(
          encodeDataResponse(buffer) as unknown as Res,
          written && ((err) => err || written(buffer)),
        );
      }
      return this.write(value.buffer.subarray(RESPONSE_HEADROOM));
    }
    if (!Buffer.isBuffer(value)) return this.writeOne(value);
    const step = this.limits.writeMessageBytes;
    for (let at = 0; at < value.length; at += step) {
      await this.writeOne({ data: value.subarray(at, at + step) } as Res);
    }
  }

  /**
   * `done` runs when grpc-js has finished with the message: its write callback, which grpc-js calls
   * from the HTTP/2 stream's write callback (server-interceptors.js sendMessage), and Node calls that
   * once the bytes were written to the socket (node_http2.cc: ClearOutgoing after the session's
   * write completed) — so the message's memory may be reused then. Not called if the write never
   * happens (a cancelled call): that buffer is left to the GC.
   */
  private async writeOne(message: Res, done?: (err: Error | null | undefined) => void): Promise<void> {
    if (this.ended) return;
    const more = done ? this.call.write(message, done) : this.call.write(message);
    if (!more) await this.until('drain');
    // refresh() would re-arm a cleared timer, so only while the call lives.
    if (!this.ended) this.idleTimer?.refresh();
  }

  /**
   * Resolves on the first of `events` on the call, or as soon as the call ends (finishWith wakes every
   * stop listener); the caller checks `ended`. Its listeners are removed either way, so nothing keeps
   * received messages reachable. Not `events.once(call, 'drain', { signal })` for writes: that adds
   * and removes an abort listener on the call's signal for every wait, a write with two messages
   * behind it waits often, and the signal does not fire when a call ends with OK.
   */
  private until(...events: string[]): Promise<void> {
    const call = this.call;
    return new Promise<void>((resolve) => {
      const done = () => {
        for (const event of events) call.removeListener(event, done);
        this.stopListeners.delete(done);
        resolve();
      };
      for (const event of events) call.on(event, done);
      this.stopListeners.add(done);
    });
  }

  private throwIfStopped(): void {
    if (this.ended) throw this.failure ?? new SealboxError(ErrorCode.CANCELLED, 'call has ended');
  }

  private finishWith(err: unknown, sendStatus: boolean): void {
    if (this.ended) return;
    this.ended = true;
    this.failure = err;
    clearTimeout(this.idleTimer);
    if (err !== undefined) this.abort.abort(err);
    for (const fn of this.disposers.splice(0)) fn();
    for (const pending of this.pending.splice(0)) this.budget.release(pending.held);
    for (const wake of this.slotWaiters.splice(0)) wake();
    for (const wake of this.idleWaiters.splice(0)) wake();
    for (const stop of this.stopListeners) stop();
    this.stopListeners.clear();
    if (sendStatus) {
      if (err === undefined) this.call.end();
      else this.call.emit('error', toServiceError(err, this.log, this.method));
    }
  }
}
