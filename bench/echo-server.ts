/**
 * A plain grpc-js echo server on a Unix socket, in its own process: the transport ceiling that
 * sealbox's streaming (bidi `Echo`) and unary (`EchoUnary`) numbers are compared with. It also serves
 * the protobuf-shaped echo (sealbox.v1.Envelope Encrypt/Decrypt without crypto, lib/echo-service.ts
 * `pbEchoHandlers`), the unary baseline that pays protobuf like sealbox does.
 * Usage: node echo-server.js SOCKET_PATH
 * Prints "ready" on stdout once listening; exits on SIGTERM/SIGINT.
 */
import './lib/watch-parent';
import {
  Server,
  ServerCredentials,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { loadApi } from '../src/api/proto';
import { createLogger } from '../src/log/logger';
import { setInitialWindow, widenConnectionWindows } from '../src/server/http2-window';
import {
  ECHO_SERVICE,
  PB_ECHO_ENV,
  type PbEchoShape,
  pbEchoHandlers,
  SERVER_OPTIONS,
} from './lib/echo-service';

const window = Number(process.env['SEALBOX_BENCH_HTTP2_WINDOW'] ?? 0);
const log = createLogger('warn');

const socketPath = process.argv[2];
if (!socketPath) {
  process.stderr.write('usage: echo-server SOCKET_PATH\n');
  process.exit(2);
}

const server = new Server(SERVER_OPTIONS);
if (window > 0) setInitialWindow(server, window, log);
server.addService(ECHO_SERVICE, {
  Echo(call: ServerDuplexStream<Buffer, Buffer>) {
    call.on('data', (message: Buffer) => {
      // Respect backpressure: stop reading while grpc-js holds more than it wants to buffer.
      if (!call.write(message)) {
        call.pause();
        call.once('drain', () => call.resume());
      }
    });
    call.on('end', () => call.end());
    call.on('error', () => {});
  },
  EchoUnary(call: ServerUnaryCall<Buffer, Buffer>, callback: sendUnaryData<Buffer>) {
    callback(null, call.request);
  },
});
const shape: PbEchoShape = {
  overheads: {},
  defaultOverhead: 500,
  keyId: 'pb-echo',
  ...(JSON.parse(process.env[PB_ECHO_ENV] ?? '{}') as Partial<PbEchoShape>),
};
server.addService(loadApi().sealbox.sealbox.v1.Envelope.service, pbEchoHandlers(shape));
server.bindAsync(`unix:${socketPath}`, ServerCredentials.createInsecure(), (err) => {
  if (err) {
    process.stderr.write(`echo-server: ${err.message}\n`);
    process.exit(1);
  }
  if (window > 0) widenConnectionWindows(server, window, log);
  process.stdout.write('ready\n');
});

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    server.forceShutdown();
    process.exit(0);
  });
}
