/**
 * Raises the HTTP/2 flow-control window grpc-js's server advertises.
 *
 * Why: on a Unix socket, the stock 64 KiB windows — not CPU — cap stream throughput (both processes
 * sit partly idle waiting for WINDOW_UPDATEs; bench/PERF-NOTES.md). grpc-js 1.14.7 lets a client set its
 * window ('grpc-node.flow_control_window') but not a server; upstream PR grpc/grpc-node#3058 adds it.
 * Until it lands this reaches into two private fields, guarded so that a grpc-js that renames them
 * leaves the defaults in place (with a warning) rather than failing.
 *
 * Hazard: Node-to-Node HTTP/2 with windows of 256 KiB–1 MiB on a Unix socket was seen to stall
 * completely; 128 KiB never did. The configured value is bounded accordingly (config.ts).
 */
import type { Http2Server, ServerHttp2Session } from 'node:http2';
import type { Server } from '@grpc/grpc-js';
import type { Logger } from '../log/logger';

interface GrpcServerInternals {
  commonServerOptions?: { settings?: Record<string, unknown> };
  http2Servers?: Map<Http2Server, unknown>;
}

/** Call before bindAsync: sets the per-stream initial window in the server's SETTINGS. */
export function setInitialWindow(server: Server, bytes: number, log: Logger): boolean {
  const internals = server as unknown as GrpcServerInternals;
  if (!internals.commonServerOptions) {
    log.warn('this grpc-js has no commonServerOptions; keeping the default HTTP/2 window');
    return false;
  }
  internals.commonServerOptions.settings = {
    ...internals.commonServerOptions.settings,
    initialWindowSize: bytes,
  };
  return true;
}

/** Call after bindAsync: widens each new connection's window to match. */
export function widenConnectionWindows(server: Server, bytes: number, log: Logger): void {
  const http2Servers = (server as unknown as GrpcServerInternals).http2Servers;
  if (!(http2Servers instanceof Map)) {
    log.warn('this grpc-js has no http2Servers map; keeping the default connection window');
    return;
  }
  for (const http2Server of http2Servers.keys()) {
    http2Server.on('session', (session: ServerHttp2Session) => {
      session.once('localSettings', () => {
        try {
          session.setLocalWindowSize(bytes);
        } catch (err) {
          log.warn({ err }, 'could not widen an HTTP/2 connection window');
        }
      });
    });
  }
}
