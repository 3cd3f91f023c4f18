/**
 * The metrics interceptor on a real grpc-js server and client (loopback TCP), in front of stub Envelope
 * handlers: each call is recorded exactly once — however it ends (status, error, client cancel,
 * deadline) and however many messages it carries — with its final code, the sealbox error-code trailer
 * and its payload bytes. Then the same through the real SealboxMetrics: label sets stay bounded.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  credentials,
  Metadata,
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
  status,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { type EnvelopeClient, loadApi } from '../../../src/api/proto';
import { ErrorCode, SealboxError } from '../../../src/errors';
import { createLogger } from '../../../src/log/logger';
import { type RpcMetrics, type RpcRoute, SealboxMetrics } from '../../../src/metrics/metrics';
import { metricsInterceptor, payloadBytes } from '../../../src/server/interceptor';
import { toServiceError } from '../../../src/server/status';
import { acceptPreEncoded, encodeDataResponse, RESPONSE_HEADROOM } from '../../../src/server/wire';

interface Finished {
  path: string;
  code: number;
  errorCode: unknown;
  seconds: number;
  bytesIn: number;
  bytesOut: number;
}

/** Records what the interceptor reports, and how often it asks for a route. */
class Recorder implements RpcMetrics {
  readonly finished: Finished[] = [];
  routeLookups = 0;
  route(path: string): RpcRoute {
    this.routeLookups++;
    const finished = this.finished;
    return {
      countsBytes: path.startsWith('/sealbox.v1.Envelope/'),
      finished(code, errorCode, seconds, bytesIn, bytesOut) {
        finished.push({ path, code, errorCode, seconds, bytesIn, bytesOut });
      },
    };
  }
  reset(): void {
    this.finished.length = 0;
    this.routeLookups = 0;
  }
}

const log = createLogger('silent');
const STREAM_MESSAGES = 50;
const CHUNK = 1000;

/**
 * Stub handlers. Encrypt echoes the plaintext as "ciphertext" (or fails with the error named by the
 * key alias); Decrypt never answers (for cancel and deadline cases); EncryptStream answers every data
 * message with a pre-encoded data response of the same size.
 */
const handlers = {
  Encrypt(
    call: ServerUnaryCall<{ keyAlias: string; plaintext: Buffer }, unknown>,
    callback: sendUnaryData<unknown>,
  ) {
    const { keyAlias, plaintext } = call.request;
    if (keyAlias === 'ok')
      return callback(null, { ciphertext: Buffer.concat([plaintext, plaintext]), keyId: 'k/1' });
    if (keyAlias === 'internal')
      return callback(toServiceError(new Error('boom: secret detail'), log, 'Encrypt'));
    callback(toServiceError(new SealboxError(keyAlias as ErrorCode, `refused ${keyAlias}`), log, 'Encrypt'));
  },
  Decrypt() {
    // Never answers: the client cancels or its deadline passes.
  },
  EncryptStream(call: ServerDuplexStream<{ msg: string; data?: Buffer }, unknown>) {
    call.on('data', (message: { msg: string; data?: Buffer }) => {
      if (message.msg !== 'data' || !message.data) return;
      const framed = Buffer.alloc(RESPONSE_HEADROOM + message.data.length);
      message.data.copy(framed, RESPONSE_HEADROOM);
      call.write(encodeDataResponse(framed));
    });
    call.on('end', () => call.end());
  },
};

const recorder = new Recorder();
const metrics = new SealboxMetrics({ processMetrics: false });
let recordedServer: Server;
let meteredServer: Server;
let recorded: EnvelopeClient;
let metered: EnvelopeClient;

async function serve(rpc: RpcMetrics): Promise<{ server: Server; client: EnvelopeClient }> {
  const api = loadApi().sealbox.sealbox.v1;
  const server = new Server({ interceptors: [metricsInterceptor(rpc)] });
  server.addService(
    acceptPreEncoded(api.Envelope.service, ['EncryptStream']),
    handlers as unknown as UntypedServiceImplementation,
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    ),
  );
  return { server, client: new api.Envelope(`127.0.0.1:${port}`, credentials.createInsecure()) };
}

before(async () => {
  ({ server: recordedServer, client: recorded } = await serve(recorder));
  ({ server: meteredServer, client: metered } = await serve(metrics));
});

after(() => {
  recorded.close();
  metered.close();
  recordedServer.forceShutdown();
  meteredServer.forceShutdown();
});

function encrypt(client: EnvelopeClient, keyAlias: string, plaintext: Buffer) {
  return new Promise<{ err: { code: number } | null }>((resolve) =>
    client.Encrypt({ keyAlias, plaintext, context: {} }, (err) =>
      resolve({ err: err as { code: number } | null }),
    ),
  );
}

/** Waits until the recorder holds `n` calls (the server records after the client may have its answer). */
async function recordedCalls(n: number): Promise<Finished[]> {
  for (let i = 0; i < 200 && recorder.finished.length < n; i++) await sleep(5);
  await sleep(20); // anything recorded twice would show up now
  return [...recorder.finished];
}

test('a unary call is recorded once, with code OK and its plaintext and ciphertext bytes', async () => {
  recorder.reset();
  const t0 = performance.now();
  const { err } = await encrypt(recorded, 'ok', Buffer.alloc(300));
  assert.equal(err, null);
  const calls = await recordedCalls(1);
  // The server's span lies inside this one: from before the call was sent to after it was recorded.
  const outerSeconds = (performance.now() - t0) / 1000;
  assert.equal(calls.length, 1);
  const [call] = calls;
  assert.equal(call!.path, '/sealbox.v1.Envelope/Encrypt');
  assert.equal(call!.code, status.OK);
  assert.equal(call!.errorCode, undefined);
  assert.equal(call!.bytesIn, 300);
  assert.equal(call!.bytesOut, 600);
  // In seconds (a figure in ms or ns would exceed the outer span), and measured (not zero).
  assert.ok(
    call!.seconds > 0 && call!.seconds <= outerSeconds,
    `seconds ${call!.seconds} of ${outerSeconds}`,
  );
  assert.equal(recorder.routeLookups, 1);
});

test('a failed call is recorded with its gRPC code and the sealbox error code from the trailer', async () => {
  recorder.reset();
  await encrypt(recorded, ErrorCode.KEY_DISABLED, Buffer.alloc(10));
  await encrypt(recorded, ErrorCode.VAULT_THROTTLED, Buffer.alloc(10));
  await encrypt(recorded, 'internal', Buffer.alloc(10));
  const calls = await recordedCalls(3);
  assert.deepEqual(
    calls.map((c) => [c.code, c.errorCode]),
    [
      [status.FAILED_PRECONDITION, 'KEY_DISABLED'],
      [status.RESOURCE_EXHAUSTED, 'VAULT_THROTTLED'],
      [status.INTERNAL, 'INTERNAL'],
    ],
  );
});

test(`a stream of ${STREAM_MESSAGES} messages each way is recorded once, with the summed payload bytes`, async () => {
  recorder.reset();
  const call = recorded.EncryptStream();
  let received = 0;
  let receivedBytes = 0;
  call.on('data', (message: { data?: Buffer }) => {
    received++;
    receivedBytes += message.data?.length ?? 0;
  });
  const ended = new Promise<void>((resolve, reject) => {
    call.on('end', resolve);
    call.on('error', reject);
  });
  call.write({ init: { keyAlias: 'ok', context: {}, chunkSize: 0 } });
  for (let i = 0; i < STREAM_MESSAGES; i++) call.write({ data: Buffer.alloc(CHUNK, i) });
  call.end();
  await ended;
  assert.equal(received, STREAM_MESSAGES);
  assert.equal(receivedBytes, STREAM_MESSAGES * CHUNK);
  const calls = await recordedCalls(1);
  assert.equal(calls.length, 1, 'one record per call, not per message');
  assert.equal(recorder.routeLookups, 1);
  assert.equal(calls[0]!.code, status.OK);
  assert.equal(calls[0]!.bytesIn, STREAM_MESSAGES * CHUNK);
  assert.equal(calls[0]!.bytesOut, STREAM_MESSAGES * CHUNK);
});

test('a call the client cancels is recorded once as CANCELLED', async () => {
  recorder.reset();
  const call = recorded.Decrypt({ ciphertext: Buffer.alloc(64), expectedContext: {} }, () => {});
  await sleep(50);
  call.cancel();
  const calls = await recordedCalls(1);
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.code, status.CANCELLED);
  assert.equal(calls[0]!.bytesIn, 64);
});

test('a call whose deadline passes is recorded once as DEADLINE_EXCEEDED', async () => {
  recorder.reset();
  const err = await new Promise<{ code: number } | null>((resolve) =>
    recorded.Decrypt(
      { ciphertext: Buffer.alloc(8), expectedContext: {} },
      { deadline: Date.now() + 100 },
      (e) => resolve(e as { code: number } | null),
    ),
  );
  assert.equal(err?.code, status.DEADLINE_EXCEEDED);
  const calls = await recordedCalls(1);
  assert.equal(calls.length, 1);
  assert.equal(calls[0]!.code, status.DEADLINE_EXCEEDED);
});

test('payloadBytes counts payload fields and pre-encoded data, nothing else', () => {
  assert.equal(
    payloadBytes({ keyAlias: 'a', plaintext: Buffer.alloc(7), context: { k: 'v'.repeat(100) } }),
    7,
  );
  assert.equal(payloadBytes({ msg: 'init', init: { keyAlias: 'a' } }), 0);
  assert.equal(payloadBytes({ header: Buffer.alloc(3), keyId: 'k/1', previousKeyId: 'k/0' }), 3);
  for (const size of [0, 1, 127, 128, 16_383, 16_384, 2 * 1024 * 1024]) {
    const framed = Buffer.alloc(RESPONSE_HEADROOM + size);
    assert.equal(payloadBytes(encodeDataResponse(framed)), size, `pre-encoded ${size}`);
  }
  // Batch requests and responses: every item's payload.
  assert.equal(
    payloadBytes({
      items: [
        { keyAlias: 'a', plaintext: Buffer.alloc(5), context: {} },
        { keyAlias: 'b', plaintext: Buffer.alloc(6), context: {} },
      ],
    }),
    11,
  );
  assert.equal(
    payloadBytes({
      results: [
        { ciphertext: Buffer.alloc(9), keyId: 'k/1' },
        { errorCode: 'X', errorMessage: 'm' },
      ],
    }),
    9,
  );
  assert.equal(payloadBytes(null), 0);
  assert.equal(payloadBytes('text'), 0);
});

test('through SealboxMetrics, many distinct failures still produce a bounded set of series', async () => {
  const codes = [...Object.values(ErrorCode), 'NOT_A_CODE', 'key k/1 is disabled', 'internal'];
  for (let round = 0; round < 3; round++) {
    await Promise.all(codes.map((code) => encrypt(metered, code, Buffer.alloc(5))));
    await encrypt(metered, 'ok', Buffer.alloc(5));
  }
  // Request metadata naming an error code must not reach any label (only the status trailer is read).
  await new Promise<void>((resolve) => {
    const md = new Metadata();
    md.set('sealbox-error-code', 'forged by a client');
    metered.Encrypt({ keyAlias: 'ok', plaintext: Buffer.alloc(1), context: {} }, md, () => resolve());
  });
  await sleep(50);
  const json = await metrics.registry.getMetricsAsJSON();
  const series = (name: string) => json.find((m) => m.name === name)?.values ?? [];
  const handled = series('sealbox_grpc_server_handled_total');
  const errors = series('sealbox_grpc_server_errors_total');
  const handledTotal = handled.reduce((sum, v) => sum + v.value, 0);
  assert.equal(handledTotal, 3 * (codes.length + 1) + 1);
  // Codes: one per distinct gRPC status the table maps to, at most 17.
  assert.ok(handled.length <= 17, `${handled.length} handled series`);
  const errorLabels = new Set(errors.map((v) => String(v.labels['error_code'])));
  for (const label of errorLabels)
    assert.ok(
      (Object.values(ErrorCode) as string[]).includes(label) || label === 'none' || label === 'other',
      label,
    );
  assert.ok(errorLabels.size <= Object.values(ErrorCode).length + 2);
  for (const v of [...handled, ...errors]) assert.equal(v.labels['method'], 'Encrypt');
  const text = await metrics.text();
  assert.doesNotMatch(text, /secret detail|forged|is disabled/);
});
