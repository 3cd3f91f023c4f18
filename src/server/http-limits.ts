/**
 * Bounds for sealbox's small HTTP listeners (metrics/probes, Event Grid webhook): a connection cap and
 * tight header/request/keep-alive timeouts, so a slow or flooding client holds a bounded number of
 * sockets for a bounded time. Node's own defaults (no connection cap, 60 s headers, 300 s request) are
 * made for general web servers, not for endpoints that answer in milliseconds.
 */
import type { Server } from 'node:http';

export interface HttpLimits {
  /** Open connections at most; Node closes further ones at once (`server.maxConnections`). */
  readonly maxConnections: number;
  /** Time to receive the complete request headers. */
  readonly headersTimeoutMs: number;
  /** Time to receive the whole request. */
  readonly requestTimeoutMs: number;
  /** How long an idle keep-alive connection stays open. */
  readonly keepAliveTimeoutMs: number;
}

/** Prometheus scrapes and kubelet probes: a few connections, answers in milliseconds. */
export const PROBE_LIMITS: HttpLimits = {
  maxConnections: 32,
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 65_000,
};

/** Event Grid deliveries: batches up to 1 MB, retried by Event Grid on failure. */
export const WEBHOOK_LIMITS: HttpLimits = {
  maxConnections: 64,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 30_000,
};

/** Applies `limits` to a listener before it starts listening. */
export function limitHttpServer(server: Server, limits: HttpLimits): void {
  server.maxConnections = limits.maxConnections;
  // Node enforces the header and request timeouts only when it sweeps its connections, every 30 s by
  // default; read when the server starts listening, so setting it here (before listen) takes effect.
  (server as Server & { connectionsCheckingInterval: number }).connectionsCheckingInterval = Math.max(
    100,
    Math.min(1000, Math.floor(limits.headersTimeoutMs / 2)),
  );
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
}
