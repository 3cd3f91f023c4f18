/**
 * The metrics and probe listener (config `metrics.listen`), plain HTTP:
 * - GET /metrics: the Prometheus exposition of sealbox's own registry;
 * - GET /healthz: 200 while the process serves HTTP at all (liveness);
 * - GET /readyz: 200 while the gRPC health status of "" is SERVING, else 503 (readiness). That status is
 *   what the key watcher last concluded (main.ts) and what shutdown sets, so a probe never causes a
 *   vault call.
 * HEAD works like GET without a body. Nothing here takes a request body or reveals key material.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log/logger';
import { limitHttpServer, PROBE_LIMITS } from './http-limits';

export interface ProbeSources {
  /** The exposition text and its content type. */
  metrics(): Promise<string>;
  readonly contentType: string;
  /** True while the gRPC health status of "" is SERVING. */
  ready(): boolean;
}

export interface MetricsHttpServer {
  /** "http://host:port/metrics" */
  readonly url: string;
  /** Stops listening and closes open (keep-alive) connections. */
  stop(): Promise<void>;
}

export async function startMetricsServer(
  listen: { host: string; port: number },
  sources: ProbeSources,
  log: Logger,
): Promise<MetricsHttpServer> {
  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err }, 'metrics endpoint failed');
      if (!res.headersSent) reply(res, 500, 'text/plain; charset=utf-8', 'internal error\n');
      else res.destroy();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return reply(res, 405, TEXT, 'use GET\n');
    }
    const path = new URL(req.url ?? '/', 'http://metrics').pathname;
    switch (path) {
      case '/metrics':
        return reply(res, 200, sources.contentType, await sources.metrics());
      case '/healthz':
        return reply(res, 200, TEXT, 'ok\n');
      case '/readyz':
        return sources.ready()
          ? reply(res, 200, TEXT, 'ready\n')
          : reply(res, 503, TEXT, 'not ready: the gRPC health status of "" is not SERVING\n');
      default:
        return reply(res, 404, TEXT, 'not found; endpoints: /metrics, /healthz, /readyz\n');
    }
  }

  limitHttpServer(server, PROBE_LIMITS);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => log.error({ err }, 'metrics listener failed'));
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}/metrics`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Prometheus keeps its scrape connection open; without this close() waits for it.
        server.closeAllConnections();
      }),
  };
}

const TEXT = 'text/plain; charset=utf-8';

function reply(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store' });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
