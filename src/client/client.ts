/**
 * A small typed client for sealbox, used by the examples, the CLI, tests and benchmarks.
 * Streams follow Node's stream contract: `encryptStream` and `decryptStream` return a Duplex-like
 * pair of (writable input, readable output), so `pipeline(file, enc.input)`/`pipeline(enc.output, …)`
 * get backpressure from gRPC flow control.
 */
import { Duplex } from 'node:stream';
import {
  type CallOptions,
  type ChannelOptions,
  credentials,
  Metadata,
  type ServiceError,
} from '@grpc/grpc-js';
import { type EnvelopeClient, loadApi } from '../api/proto';
import type { DecryptBatchResult__Output } from '../gen/sealbox/v1/DecryptBatchResult';
import type { DecryptStreamResponse__Output } from '../gen/sealbox/v1/DecryptStreamResponse';
import type { EncryptBatchResult__Output } from '../gen/sealbox/v1/EncryptBatchResult';
import type { EncryptStreamResponse__Output } from '../gen/sealbox/v1/EncryptStreamResponse';
import type { RewrapRequest } from '../gen/sealbox/v1/RewrapRequest';
import type { RewrapResponse__Output } from '../gen/sealbox/v1/RewrapResponse';

export type Context = Record<string, string>;

/** gRPC's default receive limit is 4 MiB; a 4 MiB unary plaintext encrypts to slightly more. */
export const CLIENT_CHANNEL_OPTIONS: ChannelOptions = { 'grpc.max_receive_message_length': 64 * 1024 * 1024 };

/** How a client connects, beyond grpc-js channel options. */
export interface ConnectOptions {
  /**
   * HTTP/2 connections to open (default 1). Each new call goes to the connection with the fewest calls
   * in flight, so concurrent streams spread over them instead of sharing one connection's flow-control
   * window and one socket (bench/pool.ts measures 8 streams over 1 vs 4 connections).
   */
  readonly connections?: number;
}

/** "unix:/path" or "host:port". */
export function connectEnvelope(
  target: string,
  options: ChannelOptions = {},
  connect: ConnectOptions = {},
): EnvelopeClient {
  const { Envelope } = loadApi().sealbox.sealbox.v1;
  const connections = connect.connections ?? 1;
  if (!Number.isInteger(connections) || connections < 1 || connections > 64)
    throw new RangeError(`connections must be a whole number from 1 to 64, got ${connections}`);
  if (connections === 1)
    return new Envelope(target, credentials.createInsecure(), { ...CLIENT_CHANNEL_OPTIONS, ...options });
  // grpc-js shares one connection (subchannel) among all channels to the same address with equal
  // options through a process-wide subchannel pool (subchannel-pool.ts, getOrCreateSubchannel); with
  // grpc.use_local_subchannel_pool each channel gets a pool of its own, hence its own connection
  // (internal-channel.ts: `getSubchannelPool((options['grpc.use_local_subchannel_pool'] ?? 0) === 0)`,
  // @grpc/grpc-js 1.14.7).
  const channelOptions = { ...CLIENT_CHANNEL_OPTIONS, ...options, 'grpc.use_local_subchannel_pool': 1 };
  return spreadCalls(
    Array.from(
      { length: connections },
      () => new Envelope(target, credentials.createInsecure(), channelOptions),
    ),
  );
}

/**
 * One EnvelopeClient over several: every RPC method sends its call through the client with the
 * fewest calls in flight (ties broken round-robin), counting a call until its 'status' (grpc-js
 * emits it once for every call type, OK or not). `close()` closes them all; `waitForReady` waits for
 * all. Anything else (getChannel…) is the first client's.
 */
export function spreadCalls(clients: readonly EnvelopeClient[]): EnvelopeClient {
  if (clients.length === 0) throw new RangeError('spreadCalls needs at least one client');
  const first = clients[0]!;
  const methods = rpcMethodNames(first);
  const inFlight = clients.map(() => 0);
  let nextStart = 0;
  const pick = (): number => {
    let best = nextStart;
    for (let k = 1; k < clients.length; k++) {
      const i = (nextStart + k) % clients.length;
      if (inFlight[i]! < inFlight[best]!) best = i;
    }
    nextStart = (best + 1) % clients.length;
    return best;
  };
  const spread = new Map<string | symbol, unknown>();
  for (const name of methods) {
    spread.set(name, (...args: unknown[]) => {
      const i = pick();
      const client = clients[i] as unknown as Record<string, (...a: unknown[]) => unknown>;
      const call = client[name]!(...args) as { once(event: string, fn: () => void): unknown };
      inFlight[i]!++;
      let counted = true;
      const done = () => {
        if (counted) inFlight[i]!--;
        counted = false;
      };
      call.once('status', done);
      call.once('error', done);
      return call;
    });
  }
  spread.set('close', () => {
    for (const c of clients) c.close();
  });
  spread.set('waitForReady', (deadline: Date | number, callback: (error?: Error) => void) => {
    let left = clients.length;
    let failed = false;
    for (const c of clients)
      c.waitForReady(deadline, (err) => {
        if (failed) return;
        if (err) {
          failed = true;
          callback(err);
        } else if (--left === 0) callback();
      });
  });
  spread.set(SPREAD_IN_FLIGHT, () => [...inFlight]);
  return new Proxy(first, {
    get: (target, prop, receiver) =>
      spread.has(prop) ? spread.get(prop) : Reflect.get(target, prop, receiver),
  });
}

/** Key of a spread client's in-flight counts per connection (tests and diagnostics). */
export const SPREAD_IN_FLIGHT = Symbol('sealbox.spreadInFlight');

/** Calls in flight per connection of a client made by spreadCalls (undefined for a plain client). */
export function callsInFlight(client: EnvelopeClient): number[] | undefined {
  const read = (client as unknown as Record<symbol, (() => number[]) | undefined>)[SPREAD_IN_FLIGHT];
  return read?.();
}

/** The service's method names, both as in the .proto (Encrypt) and grpc-js's camelCase aliases. */
function rpcMethodNames(client: EnvelopeClient): string[] {
  const service = (client.constructor as unknown as { service?: Record<string, { originalName?: string }> })
    .service;
  if (!service) throw new Error('not a grpc-js generated client (no service definition)');
  return Object.entries(service).flatMap(([name, def]) =>
    def.originalName && def.originalName !== name ? [name, def.originalName] : [name],
  );
}

/** The stable sealbox error code of a failed call, from its trailer. */
export function errorCode(err: unknown): string | undefined {
  const metadata = (err as ServiceError | undefined)?.metadata;
  return metadata instanceof Metadata
    ? (metadata.get('sealbox-error-code')[0] as string | undefined)
    : undefined;
}

export function encrypt(
  client: EnvelopeClient,
  keyAlias: string,
  plaintext: Uint8Array,
  context: Context = {},
): Promise<{ ciphertext: Buffer; keyId: string }> {
  return new Promise((resolve, reject) => {
    client.Encrypt({ keyAlias, plaintext, context }, (err, res) =>
      err || !res ? reject(err) : resolve(res),
    );
  });
}

export function decrypt(
  client: EnvelopeClient,
  ciphertext: Uint8Array,
  expectedContext: Context = {},
  options: CallOptions = {},
): Promise<{ plaintext: Buffer; keyId: string; context: Context }> {
  return new Promise((resolve, reject) => {
    client.Decrypt({ ciphertext, expectedContext }, options, (err, res) =>
      err || !res ? reject(err) : resolve(res),
    );
  });
}

/** Rewraps one ciphertext's header (or the ciphertext's first bytes) under its key's current version. */
export function rewrap(
  client: EnvelopeClient,
  request: RewrapRequest,
  options: CallOptions = {},
): Promise<RewrapResponse__Output> {
  return new Promise((resolve, reject) => {
    client.Rewrap(request, options, (err, res) => (err || !res ? reject(err) : resolve(res)));
  });
}

/**
 * Sends every request through RewrapStream, half-closes, and collects the responses (one per request,
 * in order; a failed item carries its errorCode) and the error that ended the stream, if any.
 */
export function rewrapStream(
  client: EnvelopeClient,
  requests: readonly RewrapRequest[],
  options: CallOptions = {},
): Promise<{ responses: RewrapResponse__Output[]; error?: ServiceError }> {
  return new Promise((resolve) => {
    const call = client.RewrapStream(options);
    const responses: RewrapResponse__Output[] = [];
    call.on('data', (r: RewrapResponse__Output) => responses.push(r));
    call.on('error', (error: ServiceError) => resolve({ responses, error }));
    call.on('end', () => resolve({ responses }));
    for (const request of requests) call.write(request);
    call.end();
  });
}

/** One EncryptBatch item: a record, its key alias and its own context. */
export interface BatchRecord {
  readonly keyAlias: string;
  readonly plaintext: Uint8Array;
  readonly context?: Context;
}

/**
 * Encrypts many small records in one EncryptBatch call: one result per record, in order, each an
 * independent ciphertext or, for a record that failed alone, its errorCode and errorMessage. A
 * whole-call failure (limits, vault unavailable, cancellation) rejects.
 */
export function encryptBatch(
  client: EnvelopeClient,
  records: readonly BatchRecord[],
  options: CallOptions = {},
): Promise<EncryptBatchResult__Output[]> {
  const items = records.map((r) => ({
    keyAlias: r.keyAlias,
    plaintext: r.plaintext,
    context: r.context ?? {},
  }));
  return new Promise((resolve, reject) => {
    client.EncryptBatch({ items }, options, (err, res) => (err || !res ? reject(err) : resolve(res.results)));
  });
}

/**
 * Decrypts many ciphertexts in one DecryptBatch call (each checked against its own expected context,
 * if given): one result per ciphertext, in order, with plaintext, keyId and context, or errorCode.
 */
export function decryptBatch(
  client: EnvelopeClient,
  ciphertexts: readonly (Uint8Array | { ciphertext: Uint8Array; expectedContext?: Context })[],
  options: CallOptions = {},
): Promise<DecryptBatchResult__Output[]> {
  const items = ciphertexts.map((c) =>
    c instanceof Uint8Array
      ? { ciphertext: c, expectedContext: {} }
      : { ciphertext: c.ciphertext, expectedContext: c.expectedContext ?? {} },
  );
  return new Promise((resolve, reject) => {
    client.DecryptBatch({ items }, options, (err, res) => (err || !res ? reject(err) : resolve(res.results)));
  });
}

/** Result of a whole stream, collected. */
export interface StreamResult {
  readonly keyId: string;
  readonly context: Context;
  readonly data: Buffer;
}

/**
 * Encrypts `pieces` through EncryptStream (each piece one data message) and collects the output.
 * Writes respect backpressure.
 */
export async function encryptStream(
  client: EnvelopeClient,
  keyAlias: string,
  pieces: Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
  options: { context?: Context; chunkSize?: number } = {},
): Promise<StreamResult> {
  const call = client.EncryptStream();
  const collected = collect(call);
  await writeAll(
    call,
    [{ init: { keyAlias, context: options.context ?? {}, chunkSize: options.chunkSize ?? 0 } }],
    pieces,
  );
  return collected;
}

/** Decrypts `pieces` of a ciphertext through DecryptStream and collects the plaintext. */
export async function decryptStream(
  client: EnvelopeClient,
  pieces: Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
  expectedContext?: Context,
  options: CallOptions = {},
): Promise<StreamResult> {
  const call = client.DecryptStream(options);
  const collected = collect(call);
  await writeAll(call, expectedContext ? [{ init: { expectedContext } }] : [], pieces).catch(() => {});
  return collected;
}

type CallLike = {
  write(message: unknown): boolean;
  end(): void;
  once(event: string, fn: (...args: unknown[]) => void): unknown;
  removeListener(event: string, fn: (...args: unknown[]) => void): unknown;
  on(event: string, fn: (...args: never[]) => void): unknown;
};

async function writeAll(
  call: CallLike,
  first: unknown[],
  pieces: Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
): Promise<void> {
  let failed = false;
  call.on('error', () => {
    failed = true;
  });
  for (const message of first) call.write(message);
  for await (const data of pieces) {
    if (failed) return;
    if (!call.write({ data })) {
      await new Promise<void>((resolve) => {
        const done = () => {
          call.removeListener('drain', done);
          call.removeListener('error', done);
          call.removeListener('close', done);
          resolve();
        };
        call.once('drain', done);
        call.once('error', done);
        call.once('close', done);
      });
    }
  }
  call.end();
}

function collect(call: CallLike): Promise<StreamResult> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let keyId = '';
    let context: Context = {};
    call.on('data', (message: EncryptStreamResponse__Output | DecryptStreamResponse__Output) => {
      if (message.metadata) {
        keyId = message.metadata.keyId;
        context = message.metadata.context;
      } else if (message.data) {
        parts.push(message.data);
      }
    });
    call.on('error', (err: Error) => Object.assign(err, { received: Buffer.concat(parts) }) && reject(err));
    call.on('end', () => resolve({ keyId, context, data: Buffer.concat(parts) }));
  });
}

/** Options for the Node stream adapters. */
export interface StreamOptions {
  readonly context?: Context;
  readonly chunkSize?: number;
  /** DecryptStream: pairs the ciphertext's context must contain. */
  readonly expectedContext?: Context;
}

type BidiCall = {
  write(message: unknown, cb?: (err?: Error | null) => void): boolean;
  end(): void;
  cancel(): void;
  on(event: string, fn: (...args: never[]) => void): unknown;
  pause(): void;
  resume(): void;
};

/**
 * A Duplex over one EncryptStream or DecryptStream call: write plaintext (or ciphertext), read the
 * other side. Emits 'metadata' ({keyId, context}) before the first data. Backpressure flows both
 * ways: writes wait for gRPC's buffer to drain, and the call is paused while the reader is behind.
 */
export class EnvelopeDuplex extends Duplex {
  constructor(private readonly call: BidiCall) {
    super();
    call.on('data', (message: EncryptStreamResponse__Output | DecryptStreamResponse__Output) => {
      if (message.metadata)
        this.emit('metadata', { keyId: message.metadata.keyId, context: message.metadata.context });
      else if (message.data && !this.push(message.data)) call.pause();
    });
    call.on('end', () => this.push(null));
    call.on('error', (err: Error) => this.destroy(err));
  }

  override _read(): void {
    this.call.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.call.write({ data: chunk })) callback();
    else (this.call as unknown as Duplex).once('drain', () => callback());
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.call.end();
    callback();
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    if (err) this.call.cancel();
    callback(err);
  }
}

/** Opens an EncryptStream call as a Duplex: plaintext in, ciphertext out. */
export function createEncryptStream(
  client: EnvelopeClient,
  keyAlias: string,
  options: StreamOptions = {},
): EnvelopeDuplex {
  const call = client.EncryptStream();
  call.write({ init: { keyAlias, context: options.context ?? {}, chunkSize: options.chunkSize ?? 0 } });
  return new EnvelopeDuplex(call as unknown as BidiCall);
}

/** Opens a DecryptStream call as a Duplex: ciphertext in, verified plaintext out. */
export function createDecryptStream(client: EnvelopeClient, options: StreamOptions = {}): EnvelopeDuplex {
  const call = client.DecryptStream();
  if (options.expectedContext) call.write({ init: { expectedContext: options.expectedContext } });
  return new EnvelopeDuplex(call as unknown as BidiCall);
}
