/**
 * Load generator for streaming calls, run in its own process so that its CPU is not the server's.
 * Opens N concurrent bidi streams (spread over K channels), writes messages respecting backpressure,
 * reads every response, and prints one JSON object on stdout: plaintext bytes/s through the measured
 * window (after the warm-up). When forked with IPC it also sends {event:'window-start'|'window-end'}
 * at the window's edges, so the parent can read the server's CPU time at the same moments, and answers
 * {cmd:'tick', seq} with {event:'tick', seq, …StreamClientTick} (running totals), so a parent can
 * sample progress over time (bench/soak.ts).
 *
 *   node stream-client.js --target unix:/path --mode encrypt|echo|decrypt|pipe [--streams N] [--channels K]
 *     [--message-bytes B] (--seconds S | --bytes-per-stream B) [--bytes-per-call B] [--keep-going]
 *     [--warmup S] [--chunk-size C] [--key-alias A] [--source-bytes B] [--stall-seconds S]
 *
 * encrypt: each stream is one EncryptStream call (duration mode: until the window ends); throughput is
 *   the ciphertext received, scaled by C/(C+16) to plaintext bytes (the once-per-call header is noise).
 * decrypt: encrypts --source-bytes of plaintext once, then each stream decrypts that ciphertext over
 *   and over (one DecryptStream call per pass); throughput is the plaintext received.
 * echo: each stream is one call to the echo server; throughput is the bytes echoed back.
 * pipe: each call is an EncryptStream whose ciphertext is written, as it arrives, into a DecryptStream
 *   on the same channel (nothing stored; the encrypt side pauses while the decrypt side is full);
 *   throughput is the plaintext that comes back out, checked to equal what went in, byte count per call.
 *
 * --bytes-per-call B (encrypt, echo, pipe): a stream makes one call after another, each of B bytes,
 *   instead of one call for its whole run, so calls start and end all the time.
 * --keep-going: a failed call is counted (failedCalls, errorSamples) and its stream starts the next one,
 *   instead of the run ending with the first failure; a stall still ends it.
 */
import './lib/watch-parent';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { type ChannelOptions, credentials, makeGenericClientConstructor } from '@grpc/grpc-js';
import type { EnvelopeClient } from '../src/api/proto';
import { connectEnvelope, encryptStream } from '../src/client/client';
import { ECHO_SERVICE } from './lib/echo-service';

type Mode = 'encrypt' | 'echo' | 'decrypt' | 'pipe';
const MODES: readonly Mode[] = ['encrypt', 'echo', 'decrypt', 'pipe'];
const TAG_BYTES = 16;
const DEFAULT_CHUNK_SIZE = 64 * 1024; // the server's envelope.defaultChunkSize default

export interface StreamClientResult {
  readonly mode: Mode;
  readonly streams: number;
  readonly channels: number;
  readonly messageBytes: number;
  /** Seconds from window start to window end. */
  readonly windowSeconds: number;
  /** Plaintext bytes through the server within the window. */
  readonly windowBytes: number;
  readonly bytesPerSecond: number;
  /** This client's CPU seconds within the window. */
  readonly clientCpuSeconds: number;
  /** Bytes written and received over the whole run (warm-up and tail included). */
  readonly totalSent: number;
  readonly totalReceived: number;
  readonly calls: number;
  /** Every completed call's output had the expected length. */
  readonly verified: boolean;
  /** True when the window began after a warm-up (false: the run ended first, so it covers the whole run). */
  readonly warmedUp: boolean;
  readonly stalled: boolean;
  /** Calls that failed and were counted instead of ending the run (--keep-going). */
  readonly failedCalls: number;
  /** A few distinct failure messages. */
  readonly errorSamples: string[];
  readonly error?: string;
}

/** Running totals a parent asks for with {cmd:'tick', seq} (answered as {event:'tick', seq, …}). */
export interface StreamClientTick {
  readonly sent: number;
  /** Payload bytes received (pipe, decrypt: plaintext; encrypt: ciphertext; echo: echoed bytes). */
  readonly received: number;
  /** Calls completed with OK. */
  readonly calls: number;
  readonly failedCalls: number;
}

interface BidiCall {
  write(message: unknown): boolean;
  end(): void;
  cancel(): void;
  pause(): void;
  resume(): void;
  on(event: string, fn: (...args: never[]) => void): unknown;
  once(event: string, fn: (...args: never[]) => void): unknown;
  removeListener(event: string, fn: (...args: never[]) => void): unknown;
}

function parse() {
  const { values } = parseArgs({
    options: {
      target: { type: 'string' },
      mode: { type: 'string', default: 'encrypt' },
      streams: { type: 'string', default: '1' },
      channels: { type: 'string', default: '1' },
      'message-bytes': { type: 'string', default: String(1024 * 1024) },
      seconds: { type: 'string' },
      'bytes-per-stream': { type: 'string' },
      'bytes-per-call': { type: 'string' },
      'keep-going': { type: 'boolean', default: false },
      warmup: { type: 'string', default: '0' },
      'chunk-size': { type: 'string', default: '0' },
      'key-alias': { type: 'string', default: 'bench' },
      'source-bytes': { type: 'string', default: String(64 * 1024 * 1024) },
      'stall-seconds': { type: 'string', default: '15' },
    },
  });
  const num = (name: keyof typeof values, min: number): number => {
    const n = Number(values[name]);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number ≥ ${min}`);
    return n;
  };
  if (!values.target) throw new Error('--target is required (unix:/path or host:port)');
  if (!MODES.includes(values.mode as Mode)) throw new Error(`--mode must be one of ${MODES.join(', ')}`);
  if ((values.seconds === undefined) === (values['bytes-per-stream'] === undefined)) {
    throw new Error('give exactly one of --seconds and --bytes-per-stream');
  }
  return {
    target: values.target,
    mode: values.mode as Mode,
    streams: num('streams', 1),
    channels: num('channels', 1),
    messageBytes: num('message-bytes', 1),
    seconds: values.seconds === undefined ? undefined : num('seconds', 0.1),
    bytesPerStream: values['bytes-per-stream'] === undefined ? undefined : num('bytes-per-stream', 1),
    bytesPerCall: values['bytes-per-call'] === undefined ? undefined : num('bytes-per-call', 1),
    keepGoing: values['keep-going'] === true,
    warmup: num('warmup', 0),
    chunkSize: num('chunk-size', 0),
    keyAlias: values['key-alias'],
    sourceBytes: num('source-bytes', 1),
    stallSeconds: num('stall-seconds', 1),
  };
}

/** Bytes of a response message's payload. */
function payloadBytes(mode: Mode, message: unknown): number {
  if (mode === 'echo') return (message as Buffer).length;
  return (message as { data?: Buffer | null }).data?.length ?? 0;
}

async function main(): Promise<StreamClientResult> {
  const args = parse();
  const channelOptions: ChannelOptions = {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    ...(process.env['SEALBOX_BENCH_HTTP2_WINDOW']
      ? { 'grpc-node.flow_control_window': Number(process.env['SEALBOX_BENCH_HTTP2_WINDOW']) }
      : {}),
    ...(args.channels > 1 ? { 'grpc.use_local_subchannel_pool': 1 } : {}),
  };
  const EchoClient = makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
  const clients = Array.from({ length: args.channels }, () =>
    args.mode === 'echo'
      ? new EchoClient(args.target, credentials.createInsecure(), channelOptions)
      : connectEnvelope(args.target, channelOptions),
  );
  const openCall = (
    stream: number,
    method = { echo: 'Echo', encrypt: 'EncryptStream', decrypt: 'DecryptStream', pipe: 'EncryptStream' }[
      args.mode
    ],
  ): BidiCall => {
    const client = clients[stream % clients.length]! as unknown as Record<string, () => BidiCall>;
    return client[method]!.call(client);
  };

  // Inputs: one random message reused for every write (AES speed does not depend on the bytes), or
  // for decrypt one ciphertext made up front, outside any measurement.
  const message = randomBytes(args.messageBytes);
  let ciphertext: Buffer | undefined;
  if (args.mode === 'decrypt') {
    const plaintext = randomBytes(args.sourceBytes);
    const pieces = function* () {
      for (let at = 0; at < plaintext.length; at += args.messageBytes)
        yield plaintext.subarray(at, at + args.messageBytes);
    };
    ciphertext = (
      await encryptStream(clients[0] as EnvelopeClient, args.keyAlias, pieces(), {
        chunkSize: args.chunkSize,
      })
    ).data;
  }
  const chunkSize = args.chunkSize || DEFAULT_CHUNK_SIZE;
  const plaintextFactor = args.mode === 'encrypt' ? chunkSize / (chunkSize + TAG_BYTES) : 1;

  let sent = 0;
  let received = 0;
  let calls = 0;
  let failedCalls = 0;
  const errorSamples = new Set<string>();
  let verified = true;
  let stopWriting = false;
  const active = new Set<BidiCall>();
  process.on('message', (m: { cmd?: string; seq?: number }) => {
    if (m?.cmd !== 'tick') return;
    const tick: StreamClientTick = { sent, received, calls, failedCalls };
    process.send?.({ event: 'tick', seq: m.seq, ...tick });
  });

  const runCall = (stream: number, first: unknown[], next: () => Buffer | undefined) =>
    new Promise<{ sent: number; received: number }>((resolve, reject) => {
      const call = openCall(stream);
      active.add(call);
      let callSent = 0;
      let callReceived = 0;
      let ended = false;
      let status: { code: number; details: string } | undefined;
      let failed: Error | undefined;
      const settle = () => {
        if (!ended || !status || failed) return;
        active.delete(call);
        if (status.code === 0) resolve({ sent: callSent, received: callReceived });
        else reject(new Error(`status ${status.code}: ${status.details}`));
      };
      call.on('data', (m: unknown) => {
        const n = payloadBytes(args.mode, m);
        callReceived += n;
        received += n;
      });
      call.on('error', (err: Error) => {
        failed = err;
        active.delete(call);
        reject(err);
      });
      call.on('end', () => {
        ended = true;
        settle();
      });
      call.on('status', (s: { code: number; details: string }) => {
        status = s;
        settle();
      });
      const wrap = (data: Buffer) => (args.mode === 'echo' ? data : { data });
      (async () => {
        for (const m of first) call.write(m);
        for (;;) {
          if (failed) return;
          const data = next();
          if (data === undefined) break;
          callSent += data.length;
          sent += data.length;
          if (!call.write(wrap(data))) await drained(call);
        }
        call.end();
      })().catch(reject);
    });

  /**
   * One EncryptStream → DecryptStream pipe: the ciphertext goes into the decrypt call as it arrives,
   * pausing the encrypt side while the decrypt side is full. Resolves with the plaintext bytes written
   * and those that came back out.
   */
  const runPipe = (stream: number, next: () => Buffer | undefined) =>
    new Promise<{ sent: number; received: number }>((resolve, reject) => {
      const enc = openCall(stream, 'EncryptStream');
      const dec = openCall(stream, 'DecryptStream');
      active.add(enc);
      active.add(dec);
      let callSent = 0;
      let callReceived = 0;
      let decEnded = false;
      const statuses: { enc?: number; dec?: number } = {};
      let failed: Error | undefined;
      const fail = (err: Error) => {
        if (failed) return;
        failed = err;
        active.delete(enc);
        active.delete(dec);
        enc.cancel();
        dec.cancel();
        reject(err);
      };
      const settle = () => {
        if (failed || !decEnded || statuses.enc === undefined || statuses.dec === undefined) return;
        active.delete(enc);
        active.delete(dec);
        resolve({ sent: callSent, received: callReceived });
      };
      const onStatus = (side: 'enc' | 'dec') => (s: { code: number; details: string }) => {
        if (s.code !== 0)
          fail(
            new Error(`${side === 'enc' ? 'EncryptStream' : 'DecryptStream'} status ${s.code}: ${s.details}`),
          );
        statuses[side] = s.code;
        settle();
      };
      enc.on('error', (err: Error) => fail(err));
      dec.on('error', (err: Error) => fail(err));
      enc.on('status', onStatus('enc'));
      dec.on('status', onStatus('dec'));
      enc.on('data', (m: { data?: Buffer | null }) => {
        if (!m.data || m.data.length === 0 || failed) return;
        if (!dec.write({ data: m.data })) {
          enc.pause();
          dec.once('drain', () => enc.resume());
        }
      });
      enc.on('end', () => {
        if (!failed) dec.end();
      });
      dec.on('data', (m: { data?: Buffer | null }) => {
        const n = m.data?.length ?? 0;
        callReceived += n;
        received += n;
      });
      dec.on('end', () => {
        decEnded = true;
        settle();
      });
      dec.write({ init: { expectedContext: { bench: 'stream-client' } } });
      enc.write({
        init: { keyAlias: args.keyAlias, context: { bench: 'stream-client' }, chunkSize: args.chunkSize },
      });
      (async () => {
        for (;;) {
          if (failed) return;
          const data = next();
          if (data === undefined) break;
          callSent += data.length;
          sent += data.length;
          if (!enc.write({ data })) await drained(enc);
        }
        enc.end();
      })().catch(fail);
    });

  /** Counts a failed call under --keep-going (or rethrows); resolves after a short pause. */
  const survive = async (err: unknown): Promise<void> => {
    if (!args.keepGoing || stalled) throw err;
    failedCalls++;
    if (errorSamples.size < 5) errorSamples.add(String((err as Error)?.message ?? err).slice(0, 300));
    await new Promise((r) => setTimeout(r, 100));
  };

  /**
   * One stream's work: a single long call (encrypt, echo, pipe), calls of --bytes-per-call one after
   * another, or repeated passes (decrypt).
   */
  const runStream = async (stream: number): Promise<void> => {
    if (args.mode === 'decrypt') {
      let delivered = 0;
      const done = () => (args.bytesPerStream === undefined ? stopWriting : delivered >= args.bytesPerStream);
      while (!done()) {
        let at = 0;
        const source = ciphertext!;
        const next = () => {
          if (at >= source.length) return undefined;
          const piece = source.subarray(at, at + args.messageBytes);
          at += piece.length;
          return piece;
        };
        let r: { sent: number; received: number };
        try {
          r = await runCall(stream, [], next);
        } catch (err) {
          await survive(err);
          continue;
        }
        calls++;
        delivered += r.received;
        if (r.received !== args.sourceBytes) verified = false;
      }
      return;
    }
    let left = args.bytesPerStream ?? Number.POSITIVE_INFINITY;
    const first =
      args.mode === 'encrypt'
        ? [
            {
              init: {
                keyAlias: args.keyAlias,
                context: { bench: 'stream-client' },
                chunkSize: args.chunkSize,
              },
            },
          ]
        : [];
    // One call at least (even if the window has already closed), then more while there is work.
    for (let attempt = 0; attempt === 0 || (!stopWriting && left > 0); attempt++) {
      let callLeft = Math.min(left, args.bytesPerCall ?? Number.POSITIVE_INFINITY);
      const next = () => {
        if (stopWriting || callLeft <= 0) return undefined;
        const piece = callLeft >= message.length ? message : message.subarray(0, callLeft);
        callLeft -= piece.length;
        left -= piece.length;
        return piece;
      };
      let r: { sent: number; received: number };
      try {
        r = args.mode === 'pipe' ? await runPipe(stream, next) : await runCall(stream, first, next);
      } catch (err) {
        await survive(err);
        continue;
      }
      calls++;
      if ((args.mode === 'echo' || args.mode === 'pipe') && r.received !== r.sent) verified = false;
      if (args.mode === 'encrypt') {
        const chunks = Math.max(1, Math.ceil(r.sent / chunkSize));
        if (r.received < r.sent + chunks * TAG_BYTES) verified = false;
      }
      if (args.bytesPerCall === undefined) break;
    }
  };

  // Window edges.
  type Mark = { at: number; received: number; cpu: NodeJS.CpuUsage };
  const mark = (event?: 'window-start' | 'window-end'): Mark => {
    if (event) process.send?.({ event });
    return { at: performance.now(), received, cpu: process.cpuUsage() };
  };
  let windowStart: Mark | undefined;
  let windowEnd: Mark | undefined;
  const runStart = mark(args.warmup > 0 ? undefined : 'window-start');
  const timers: NodeJS.Timeout[] = [];
  if (args.warmup > 0) {
    timers.push(setTimeout(() => (windowStart = mark('window-start')), args.warmup * 1000));
  } else {
    windowStart = runStart;
  }
  if (args.seconds !== undefined) {
    timers.push(
      setTimeout(
        () => {
          windowEnd = mark('window-end');
          stopWriting = true;
        },
        (args.warmup + args.seconds) * 1000,
      ),
    );
  }

  // Stall watchdog: HTTP/2 window stalls show up as no progress with both sides idle.
  let stalled = false;
  let lastReceived = -1;
  let lastProgressAt = performance.now();
  const watchdog = setInterval(() => {
    if (received !== lastReceived) {
      lastReceived = received;
      lastProgressAt = performance.now();
    } else if (performance.now() - lastProgressAt > args.stallSeconds * 1000) {
      stalled = true;
      stopWriting = true;
      for (const call of active) call.cancel();
    }
  }, 250);

  let error: string | undefined;
  try {
    await Promise.all(Array.from({ length: args.streams }, (_, i) => runStream(i)));
  } catch (err) {
    error = stalled ? `no progress for ${args.stallSeconds} s (stalled)` : (err as Error).message;
    stopWriting = true;
    for (const call of active) call.cancel();
  }
  clearInterval(watchdog);
  for (const t of timers) clearTimeout(t);
  windowEnd ??= mark('window-end');
  const warmedUp = windowStart !== undefined;
  const start = windowStart ?? runStart;
  const windowSeconds = (windowEnd.at - start.at) / 1000;
  const windowBytes = Math.round((windowEnd.received - start.received) * plaintextFactor);
  for (const client of clients) client.close();
  return {
    mode: args.mode,
    streams: args.streams,
    channels: args.channels,
    messageBytes: args.messageBytes,
    windowSeconds,
    windowBytes,
    bytesPerSecond: windowSeconds > 0 ? windowBytes / windowSeconds : 0,
    clientCpuSeconds: (windowEnd.cpu.user + windowEnd.cpu.system - start.cpu.user - start.cpu.system) / 1e6,
    totalSent: sent,
    totalReceived: received,
    calls,
    verified: verified && error === undefined,
    warmedUp,
    stalled,
    failedCalls,
    errorSamples: [...errorSamples],
    ...(error !== undefined ? { error } : {}),
  };
}

function drained(call: BidiCall): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.removeListener('drain', done);
      call.removeListener('error', done);
      call.removeListener('status', done);
      resolve();
    };
    call.once('drain', done);
    call.once('error', done);
    call.once('status', done);
  });
}

main().then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(result.stalled ? 3 : result.error ? 1 : 0);
  },
  (err: unknown) => {
    process.stderr.write(`stream-client: ${(err as Error)?.message ?? String(err)}\n`);
    process.exit(2);
  },
);
