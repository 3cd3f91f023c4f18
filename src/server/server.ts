/**
 * The gRPC server: Envelope, Admin (admin identities only) and grpc.health.v1 on a Unix socket (mode
 * 0600 by default) and, if configured, a TCP listener: plaintext on loopback, TLS (optionally mTLS)
 * on any address. Server reflection describes those services on the socket (listen.reflection, on by
 * default) and on TCP (listen.tcp.reflection, off by default); see ./reflection.ts.
 */
import { readFileSync, unlinkSync } from 'node:fs';
import { Server, ServerCredentials, type ServerInterceptor } from '@grpc/grpc-js';
import { HealthImplementation, type ServingStatus, type ServingStatusMap } from 'grpc-health-check';
import { loadApi } from '../api/proto';
import type { Config, PeerKind } from '../config/config';
import type { Logger } from '../log/logger';
import { type AdminDeps, adminHandlers } from './admin';
import { type EnvelopeDeps, envelopeHandlers, newOutputRecycler } from './envelope';
import { installFrameInPlace } from './grpc-frame';
import { installRequestReuse, requestBufferStats } from './grpc-reassembly';
import { setInitialWindow, widenConnectionWindows } from './http2-window';
import { addReflection } from './reflection';
import { bind, bindUnixSocket } from './socket';
import { acceptPreEncoded } from './wire';

/** Health service names sealbox reports: the whole server ("") and the Envelope service. */
export const HEALTH_SERVICES = ['', 'sealbox.v1.Envelope'] as const;

/** The gRPC health service, which also tells sealbox what it answers (for /readyz and metrics). */
export class SealboxHealth extends HealthImplementation {
  private readonly statuses = new Map<string, ServingStatus>();

  constructor(initial: ServingStatusMap) {
    super(initial);
    for (const [service, status] of Object.entries(initial)) this.statuses.set(service, status);
  }

  override setStatus(service: string, status: ServingStatus): void {
    this.statuses.set(service, status);
    super.setStatus(service, status);
  }

  /** What Check answers for `service` right now; undefined for a name it does not know. */
  statusOf(service: string): ServingStatus | undefined {
    return this.statuses.get(service);
  }
}

/** What the buffer pools hold: free buffers and their bytes, per pool. */
export type BufferPools = Readonly<Record<'responses' | 'requests', { buffers: number; bytes: number }>>;

export interface RunningServer {
  /** Where the server listens, for logs and clients: "unix:/path", "127.0.0.1:port". */
  readonly addresses: string[];
  readonly health: SealboxHealth;
  /**
   * Free buffers the two reuse pools hold now (stream responses: envelope.ts; large requests:
   * grpc-reassembly.ts): bounded, and part of idle RSS by design (docs/operations.md).
   */
  bufferPools(): BufferPools;
  /** Stops accepting calls, lets in-flight calls finish for up to `graceMs`, then cancels the rest. */
  stop(graceMs: number): Promise<void>;
}

/**
 * `interceptors` run around every call (metrics: one per call, never per message). With `admin`, the
 * Admin service is served too, to identities with `admin: true` only.
 *
 * Each listener (the Unix socket, the TCP listener) gets its own grpc-js Server with the same
 * services: which listener took a call is then a fact of construction that access control relies on
 * (a socket caller and a TCP caller may be different identities), not something read off the call.
 */
export async function startServer(
  config: Config,
  deps: EnvelopeDeps,
  log: Logger,
  interceptors: ServerInterceptor[] = [],
  admin?: AdminDeps,
): Promise<RunningServer> {
  const window = config.stream.http2WindowBytes;
  if (!installFrameInPlace()) {
    log.warn(
      'this grpc-js version frames responses differently from the one sealbox was built with; stream ' +
        'responses are copied once more (see src/server/grpc-frame.ts)',
    );
  }
  if (!installRequestReuse()) {
    log.warn(
      'this grpc-js version reads messages differently from the one sealbox was built with; stream ' +
        'requests are reassembled into new buffers (see src/server/grpc-reassembly.ts)',
    );
  }
  const envelope = acceptPreEncoded(loadApi().sealbox.sealbox.v1.Envelope.service, [
    'EncryptStream',
    'DecryptStream',
  ]);
  const outputs = newOutputRecycler();
  const health = new SealboxHealth(Object.fromEntries(HEALTH_SERVICES.map((s) => [s, 'NOT_SERVING'])));
  const serverFor = (peer: PeerKind): Server => {
    const server = new Server({
      'grpc.max_receive_message_length': config.stream.maxMessageBytes,
      'grpc.max_send_message_length': -1,
      ...(interceptors.length > 0 ? { interceptors } : {}),
    });
    if (window > 0) setInitialWindow(server, window, log);
    server.addService(envelope, envelopeHandlers(deps, peer, outputs));
    if (admin) {
      server.addService(
        loadApi().sealbox.sealbox.v1.Admin.service,
        adminHandlers(admin, (call, method) => deps.access.admitAdmin(call, peer, method)),
      );
    }
    health.addToServer(server);
    if (peer === 'tcp' ? config.listen.tcp?.reflection : config.listen.reflection) {
      addReflection(
        server,
        ['sealbox.v1.Envelope', ...(admin ? ['sealbox.v1.Admin'] : []), 'grpc.health.v1.Health'],
        {
          admit: (call, method) => deps.access.admit(call, peer, method, true),
          idleTimeoutMs: config.stream.idleTimeoutMs,
          log,
        },
      );
    }
    return server;
  };

  const servers: Server[] = [];
  const addresses: string[] = [];
  const socket = config.listen.socket;
  // Read before anything is bound: an unreadable certificate must not leave a socket listening.
  const tcp = config.listen.tcp ? tcpCredentials(config.listen.tcp.tls) : undefined;
  try {
    if (socket) {
      const server = serverFor('socket');
      servers.push(server);
      await bindUnixSocket(
        server,
        socket,
        { mode: config.listen.socketMode, group: config.listen.socketGroup },
        ServerCredentials.createInsecure(),
      );
      addresses.push(`unix:${socket}`);
    }
    if (config.listen.tcp && tcp) {
      const server = serverFor('tcp');
      servers.push(server);
      const { host, port } = config.listen.tcp;
      const target = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
      const bound = await bind(server, target, tcp);
      addresses.push(host.includes(':') ? `[${host}]:${bound}` : `${host}:${bound}`);
    }
  } catch (err) {
    // Postcondition of a failed start: nothing is left listening (the caller gets no handle to stop).
    for (const server of servers) server.forceShutdown();
    if (addresses.length > 0 && socket) removeSocket(socket);
    throw err;
  }
  if (window > 0) for (const server of servers) widenConnectionWindows(server, window, log);
  for (const s of HEALTH_SERVICES) health.setStatus(s, 'SERVING');

  if (config.listen.tcp?.tls && !config.listen.tcp.tls.clientCaFile) {
    log.warn(
      { address: addresses.at(-1) },
      'TLS listener without client certificates: any client that can reach it is the identity of peer "tcp"',
    );
  }
  return {
    addresses,
    health,
    bufferPools() {
      const { buffers, bytes } = requestBufferStats();
      return { responses: outputs.held, requests: { buffers, bytes } };
    },
    async stop(graceMs: number) {
      for (const s of HEALTH_SERVICES) health.setStatus(s, 'NOT_SERVING');
      await Promise.all(
        servers.map(
          (server) =>
            new Promise<void>((resolve) => {
              const timer = setTimeout(() => {
                log.warn({ graceMs }, 'shutdown grace period over; cancelling remaining calls');
                server.forceShutdown();
                resolve();
              }, graceMs);
              server.tryShutdown(() => {
                clearTimeout(timer);
                resolve();
              });
            }),
        ),
      );
      if (socket) removeSocket(socket);
    },
  };
}

function removeSocket(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone: nothing to clean up.
  }
}

/** Plaintext for loopback TCP (config allows no other without TLS); TLS, with client certificates required when a client CA is set. */
function tcpCredentials(tls: NonNullable<Config['listen']['tcp']>['tls']): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  const read = (field: string, path: string) => {
    try {
      return readFileSync(path);
    } catch (err) {
      throw new Error(`listen.tcp.tls.${field}: cannot read ${path}: ${(err as Error).message}`);
    }
  };
  const clientCa = tls.clientCaFile ? read('clientCaFile', tls.clientCaFile) : null;
  return ServerCredentials.createSsl(
    clientCa,
    [{ cert_chain: read('certFile', tls.certFile), private_key: read('keyFile', tls.keyFile) }],
    clientCa !== null,
  );
}
