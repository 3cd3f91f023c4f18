/**
 * Load generator for unary calls, run in its own process so that its CPU is not the server's (on this
 * box a Node client saturates long before the server does: bench/PERF-NOTES.md). Keeps `--concurrency`
 * calls in flight (closed loop: each slot sends its next call when the previous one answers) and
 * prints one JSON object on stdout (UnaryClientResult). When forked with IPC it sends
 * {event:'window-start'|'window-end'} at the window's edges, so the parent can read the server's CPU
 * time (and the vault's counters) at the same moments. It answers {cmd:'tick', seq} with
 * {event:'tick', seq, …UnaryClientTick}: running totals and the latency of the calls answered since
 * the previous tick, so a parent can sample latency over time (bench/soak.ts).
 *
 *   node unary-client.js --target unix:/path --mode encrypt|decrypt|echo|seal
 *     [--concurrency C] [--payload-bytes B] (--seconds S [--warmup W] [--rate R] | --requests N)
 *     [--key-alias A] [--sources K] [--ciphertexts FILE] [--out FILE] [--channels K] [--drain-seconds D]
 *
 * encrypt: Encrypt of one random B-byte plaintext, over and over.
 * decrypt: Decrypt of K ciphertexts of B bytes each, made through the server before anything is
 *   measured, or read from --ciphertexts (a file written by --mode seal).
 * echo: EchoUnary on bench/echo-server (B bytes there and back): the transport baseline.
 * seal: --requests N Encrypts of B bytes, written to --out (for the cold-start storm); reports how many
 *   distinct wrapped DEKs their headers carry.
 *
 * Duration mode (--seconds): the window opens after --warmup and covers calls that complete inside it;
 * at its end no new calls start, and calls still in flight after --drain-seconds are cancelled.
 * With --rate R the load is open-loop instead: R calls per second on a fixed schedule whatever the
 * answers do, at most C in flight; a call due while C are in flight is not sent and counts as skipped
 * (the server fell behind). Latency then includes any queueing at the server.
 * Count mode (--requests): N calls, `--concurrency` at a time (N = all at once); the window runs from
 * the first send to the last answer (drainSeconds).
 */
import './lib/watch-parent';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import {
  type ChannelOptions,
  type Client,
  credentials,
  makeGenericClientConstructor,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import type { EnvelopeClient } from '../src/api/proto';
import { connectEnvelope } from '../src/client/client';
import { parseHeader } from '../src/crypto/format';
import { ECHO_SERVICE } from './lib/echo-service';

type Mode = 'encrypt' | 'decrypt' | 'echo' | 'seal';
const MODES: readonly Mode[] = ['encrypt', 'decrypt', 'echo', 'seal'];
/** Every message is sealed with (and opened expecting) this context, as a real caller would. */
const CONTEXT = { bench: 'unary' };

export interface LatencySummary {
  readonly count: number;
  readonly p50Ms: number | undefined;
  readonly p99Ms: number | undefined;
  readonly p999Ms: number | undefined;
  readonly maxMs: number | undefined;
  readonly meanMs: number | undefined;
}

export interface UnaryClientResult {
  readonly mode: Mode;
  readonly concurrency: number;
  readonly payloadBytes: number;
  readonly channels: number;
  /** Seconds from window start to window end. */
  readonly windowSeconds: number;
  /** Duration mode: the window opened after the warm-up (false: the run ended first). */
  readonly warmedUp: boolean;
  /** Calls that completed inside the window. */
  readonly windowOk: number;
  readonly windowFailed: number;
  /** windowOk ÷ windowSeconds. */
  readonly reqPerSecond: number;
  /** Latency (send → answer) of the calls completed inside the window, successful or not. */
  readonly latency: LatencySummary;
  /** This client's CPU seconds within the window. */
  readonly clientCpuSeconds: number;
  readonly totalOk: number;
  readonly totalFailed: number;
  /** Duration mode: calls still in flight --drain-seconds after the window closed, then cancelled. */
  readonly cancelledAtEnd: number;
  /** --rate: calls per second asked for, and calls not sent because C were already in flight. */
  readonly rate?: number;
  readonly skipped?: number;
  /** Failed calls over the whole run by gRPC status name (RESOURCE_EXHAUSTED, UNAVAILABLE, …). */
  readonly errors: Record<string, number>;
  /** Failed calls by sealbox error code (the sealbox-error-code trailer). */
  readonly sealboxErrors: Record<string, number>;
  /** A few distinct error messages. */
  readonly errorSamples: string[];
  /** Every answer had the expected size (decrypt/echo: exactly B bytes; encrypt: more than B). */
  readonly verified: boolean;
  /** Count mode: first send → last answer, seconds. */
  readonly drainSeconds?: number;
  /** seal: distinct wrapped DEKs among the headers written. */
  readonly distinctDeks?: number;
  /** decrypt: distinct ciphertexts cycled through. */
  readonly sources?: number;
  readonly error?: string;
}

/** What a tick answers: running totals, and latency of the calls answered since the previous tick. */
export interface UnaryClientTick {
  readonly ok: number;
  readonly failed: number;
  readonly skipped: number;
  /** Calls answered since the previous tick (OK or not), and their latency. */
  readonly count: number;
  readonly p50Ms: number | undefined;
  readonly p99Ms: number | undefined;
  readonly maxMs: number | undefined;
}

function parse() {
  const { values } = parseArgs({
    options: {
      target: { type: 'string' },
      mode: { type: 'string', default: 'encrypt' },
      concurrency: { type: 'string', default: '1' },
      'payload-bytes': { type: 'string', default: '1024' },
      seconds: { type: 'string' },
      warmup: { type: 'string', default: '0' },
      requests: { type: 'string' },
      'key-alias': { type: 'string', default: 'bench' },
      sources: { type: 'string', default: '64' },
      ciphertexts: { type: 'string' },
      out: { type: 'string' },
      channels: { type: 'string', default: '1' },
      'drain-seconds': { type: 'string', default: '5' },
      rate: { type: 'string', default: '0' },
    },
  });
  const num = (name: keyof typeof values, min: number): number => {
    const n = Number(values[name]);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number ≥ ${min}`);
    return n;
  };
  if (!values.target) throw new Error('--target is required (unix:/path or host:port)');
  const mode = values.mode as Mode;
  if (!MODES.includes(mode)) throw new Error(`--mode must be one of ${MODES.join(', ')}`);
  if ((values.seconds === undefined) === (values.requests === undefined))
    throw new Error('give exactly one of --seconds and --requests');
  if (mode === 'seal' && (values.requests === undefined || !values.out))
    throw new Error('--mode seal needs --requests and --out');
  if (values.rate !== '0' && values.seconds === undefined) throw new Error('--rate needs --seconds');
  return {
    target: values.target,
    mode,
    concurrency: Math.floor(num('concurrency', 1)),
    payloadBytes: Math.floor(num('payload-bytes', 1)),
    seconds: values.seconds === undefined ? undefined : num('seconds', 0.05),
    warmup: num('warmup', 0),
    requests: values.requests === undefined ? undefined : Math.floor(num('requests', 1)),
    keyAlias: values['key-alias']!,
    sources: Math.floor(num('sources', 1)),
    ciphertexts: values.ciphertexts,
    out: values.out,
    channels: Math.floor(num('channels', 1)),
    drainSeconds: num('drain-seconds', 0),
    rate: num('rate', 0),
  };
}

/** Length-prefixed records: u32 big-endian length, then the bytes. */
function writeRecords(path: string, records: readonly Buffer[]): void {
  const parts: Buffer[] = [];
  for (const r of records) {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(r.length);
    parts.push(len, r);
  }
  writeFileSync(path, Buffer.concat(parts), { mode: 0o600 });
}

function readRecords(path: string): Buffer[] {
  const data = readFileSync(path);
  const out: Buffer[] = [];
  for (let at = 0; at < data.length; ) {
    const len = data.readUInt32BE(at);
    out.push(data.subarray(at + 4, at + 4 + len));
    at += 4 + len;
  }
  return out;
}

type Unary = (
  request: unknown,
  callback: (err: ServiceError | null, res?: unknown) => void,
) => {
  cancel(): void;
};

function summarize(h: RecordableHistogram): LatencySummary {
  const count = h.count;
  const ms = (us: number) => (count > 0 ? us / 1000 : undefined);
  return {
    count,
    p50Ms: ms(h.percentile(50)),
    p99Ms: ms(h.percentile(99)),
    p999Ms: ms(h.percentile(99.9)),
    maxMs: ms(h.max),
    meanMs: ms(h.mean),
  };
}

async function waitForReady(client: Client): Promise<void> {
  await new Promise<void>((resolve, reject) =>
    client.waitForReady(Date.now() + 20_000, (err) => (err ? reject(err) : resolve())),
  );
}

async function main(): Promise<UnaryClientResult> {
  const args = parse();
  const channelOptions: ChannelOptions = {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
    ...(args.channels > 1 ? { 'grpc.use_local_subchannel_pool': 1 } : {}),
  };
  const EchoClient = makeGenericClientConstructor(ECHO_SERVICE, 'Echo');
  const clients: Client[] = Array.from({ length: args.channels }, () =>
    args.mode === 'echo'
      ? new EchoClient(args.target, credentials.createInsecure(), channelOptions)
      : (connectEnvelope(args.target, channelOptions) as unknown as Client),
  );
  await Promise.all(clients.map(waitForReady));
  const method = { echo: 'EchoUnary', encrypt: 'Encrypt', seal: 'Encrypt', decrypt: 'Decrypt' }[args.mode];
  const unary = (slot: number): Unary => {
    const client = clients[slot % clients.length] as unknown as Record<string, Unary>;
    return client[method]!.bind(client);
  };

  const payload = randomBytes(args.payloadBytes);
  let sources: Buffer[] = [];
  if (args.mode === 'decrypt') {
    if (args.ciphertexts) {
      sources = readRecords(args.ciphertexts);
    } else {
      // Made through the server, outside any measurement.
      const envelope = clients[0] as unknown as EnvelopeClient;
      sources = await Promise.all(
        Array.from(
          { length: args.sources },
          () =>
            new Promise<Buffer>((resolve, reject) =>
              envelope.Encrypt(
                { keyAlias: args.keyAlias, plaintext: randomBytes(args.payloadBytes), context: CONTEXT },
                (err, res) => (err || !res ? reject(err) : resolve(res.ciphertext)),
              ),
            ),
        ),
      );
    }
    if (sources.length === 0) throw new Error('no ciphertexts to decrypt');
  }
  const requestFor = (i: number): unknown => {
    switch (args.mode) {
      case 'echo':
        return payload;
      case 'decrypt':
        return { ciphertext: sources[i % sources.length], expectedContext: CONTEXT };
      default:
        return { keyAlias: args.keyAlias, plaintext: payload, context: CONTEXT };
    }
  };
  const sizeOk = (res: unknown): boolean => {
    switch (args.mode) {
      case 'echo':
        return (res as Buffer).length === args.payloadBytes;
      case 'decrypt':
        return (res as { plaintext: Buffer }).plaintext.length === args.payloadBytes;
      default:
        return (res as { ciphertext: Buffer }).ciphertext.length > args.payloadBytes;
    }
  };

  // State.
  const windowLatency = createHistogram();
  /** Latency since the previous tick (every call, warm-up included); reset at each tick. */
  const tickLatency = createHistogram();
  let skipped = 0;
  let windowOpen = false;
  let windowOk = 0;
  let windowFailed = 0;
  let totalOk = 0;
  let totalFailed = 0;
  let verified = true;
  let stopIssuing = false;
  let cancelling = false;
  const errors: Record<string, number> = {};
  const sealboxErrors: Record<string, number> = {};
  const samples = new Set<string>();
  const active = new Set<{ cancel(): void }>();
  const sealed: Buffer[] = [];

  const callOnce = (slot: number, i: number) =>
    new Promise<void>((resolve) => {
      const sent = performance.now();
      const call = unary(slot)(requestFor(i), (err, res) => {
        active.delete(call);
        const us = Math.max(1, Math.round((performance.now() - sent) * 1000));
        if (windowOpen) windowLatency.record(us);
        tickLatency.record(us);
        if (err) {
          if (cancelling && err.code === status.CANCELLED) {
            resolve();
            return;
          }
          totalFailed++;
          if (windowOpen) windowFailed++;
          const name = status[err.code] ?? String(err.code);
          errors[name] = (errors[name] ?? 0) + 1;
          const code = err.metadata?.get('sealbox-error-code')[0];
          if (typeof code === 'string') sealboxErrors[code] = (sealboxErrors[code] ?? 0) + 1;
          if (samples.size < 5) samples.add(`${name}: ${err.details}`.slice(0, 300));
        } else {
          totalOk++;
          if (windowOpen) windowOk++;
          if (!sizeOk(res)) verified = false;
          if (args.mode === 'seal') sealed[i] = (res as { ciphertext: Buffer }).ciphertext;
        }
        resolve();
      });
      active.add(call);
    });

  process.on('message', (m: { cmd?: string; seq?: number }) => {
    if (m?.cmd !== 'tick') return;
    const latency = summarize(tickLatency);
    tickLatency.reset();
    const tick: UnaryClientTick = {
      ok: totalOk,
      failed: totalFailed,
      skipped,
      count: latency.count,
      p50Ms: latency.p50Ms,
      p99Ms: latency.p99Ms,
      maxMs: latency.maxMs,
    };
    process.send?.({ event: 'tick', seq: m.seq, ...tick });
  });

  type Mark = { at: number; cpu: NodeJS.CpuUsage };
  const mark = (event: 'window-start' | 'window-end'): Mark => {
    process.send?.({ event });
    windowOpen = event === 'window-start';
    return { at: performance.now(), cpu: process.cpuUsage() };
  };
  let start: Mark | undefined;
  let end: Mark | undefined;
  let cancelledAtEnd = 0;
  let warmedUp = true;

  if (args.requests !== undefined) {
    // Count mode: N calls, `concurrency` at a time; the window is first send → last answer.
    const n = args.requests;
    let next = 0;
    start = mark('window-start');
    await Promise.all(
      Array.from({ length: Math.min(args.concurrency, n) }, async (_, slot) => {
        while (next < n) {
          const i = next++;
          await callOnce(slot, i);
        }
      }),
    );
    end = mark('window-end');
  } else {
    const runStart = performance.now();
    const timers: NodeJS.Timeout[] = [];
    const opened = new Promise<void>((resolve) => {
      timers.push(
        setTimeout(() => {
          start = mark('window-start');
          resolve();
        }, args.warmup * 1000),
      );
    });
    timers.push(
      setTimeout(
        () => {
          end = mark('window-end');
          stopIssuing = true;
        },
        (args.warmup + args.seconds!) * 1000,
      ),
    );
    let i = 0;
    const slots =
      args.rate > 0
        ? openLoop(
            args.rate,
            args.concurrency,
            () => stopIssuing,
            (n) => callOnce(n % args.channels, n),
            () => {
              skipped++;
            },
          )
        : Promise.all(
            Array.from({ length: args.concurrency }, async (_, slot) => {
              while (!stopIssuing) await callOnce(slot, i++);
            }),
          );
    // After the window: give in-flight calls --drain-seconds, then cancel them.
    const drained = await Promise.race([
      slots.then(() => true),
      opened
        .then(() => new Promise((r) => setTimeout(r, (args.seconds! + args.drainSeconds) * 1000)))
        .then(() => false),
    ]);
    if (!drained) {
      cancelling = true;
      cancelledAtEnd = active.size;
      for (const call of [...active]) call.cancel();
      await slots;
    }
    for (const t of timers) clearTimeout(t);
    warmedUp = start !== undefined;
    start ??= { at: runStart, cpu: process.cpuUsage() };
    end ??= mark('window-end');
  }

  let distinctDeks: number | undefined;
  if (args.mode === 'seal') {
    const ok = sealed.filter((c): c is Buffer => c !== undefined);
    distinctDeks = new Set(ok.map((c) => parseHeader(c)?.wrappedDek.toString('hex') ?? 'unparsable')).size;
    writeRecords(args.out!, ok);
  }
  for (const client of clients) client.close();

  const windowSeconds = (end.at - start.at) / 1000;
  const errorSamples = [...samples];
  const failed = totalFailed > 0 || !verified;
  return {
    mode: args.mode,
    concurrency: args.concurrency,
    payloadBytes: args.payloadBytes,
    channels: args.channels,
    windowSeconds,
    warmedUp,
    windowOk,
    windowFailed,
    reqPerSecond: windowSeconds > 0 ? windowOk / windowSeconds : 0,
    latency: summarize(windowLatency),
    clientCpuSeconds: (end.cpu.user + end.cpu.system - start.cpu.user - start.cpu.system) / 1e6,
    totalOk,
    totalFailed,
    cancelledAtEnd,
    ...(args.rate > 0 ? { rate: args.rate, skipped } : {}),
    errors,
    sealboxErrors,
    errorSamples,
    verified,
    ...(args.requests !== undefined ? { drainSeconds: windowSeconds } : {}),
    ...(distinctDeks !== undefined ? { distinctDeks } : {}),
    ...(args.mode === 'decrypt' ? { sources: sources.length } : {}),
    ...(failed && totalOk === 0 ? { error: errorSamples[0] ?? 'every call failed verification' } : {}),
  };
}

/**
 * Sends call n at n/rate seconds after the start (on a 5 ms timer), never more than `limit` at once; a
 * call that comes due with `limit` in flight is skipped. Resolves when `stopped()` turns true and every
 * call sent has settled.
 */
function openLoop(
  rate: number,
  limit: number,
  stopped: () => boolean,
  send: (n: number) => Promise<void>,
  skip: () => void,
): Promise<void> {
  const inFlight = new Set<Promise<void>>();
  const start = performance.now();
  let due = 0;
  return new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (stopped()) {
        clearInterval(timer);
        void Promise.all(inFlight).then(() => resolve());
        return;
      }
      const target = Math.floor(((performance.now() - start) / 1000) * rate);
      for (; due < target; due++) {
        if (inFlight.size >= limit) {
          skip();
          continue;
        }
        const call = send(due).finally(() => inFlight.delete(call));
        inFlight.add(call);
      }
    }, 5);
  });
}

main().then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(result.error ? 1 : 0);
  },
  (err: unknown) => {
    process.stderr.write(`unary-client: ${(err as Error)?.message ?? String(err)}\n`);
    process.exit(2);
  },
);
