/**
 * The Kubernetes KMS v2 face: grpc-js handlers for v2.KeyManagementService (proto/k8s/kms/v2/api.proto)
 * on a Unix socket of its own (kms.socket, mode 0600 by default), over the KMS use cases in
 * envelope/kms.ts. Every call runs with `kms:<Method>` and the request's uid as the audit caller, so
 * the audit line of each KEK operation it causes names the apiserver request (kek/audit.ts).
 * The socket's file permissions are its access control: kube-apiserver runs as root on the node.
 */
import { unlinkSync } from 'node:fs';
import { join } from 'node:path';
import {
  type GrpcObject,
  loadPackageDefinition,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type sendUnaryData,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { PROTO_DIR } from '../api/proto';
import { KMS_MAX_ANNOTATION_BYTES, type KmsPlugin } from '../envelope/kms';
import { ErrorCode, SealboxError } from '../errors';
import type { ProtoGrpcType as KmsProto } from '../gen/api';
import type { KeyManagementServiceHandlers } from '../gen/v2/KeyManagementService';
import type { AuditCaller } from '../kek/audit';
import type { Logger } from '../log/logger';
import { bindUnixSocket } from './socket';
import { ERROR_CODE_TRAILER, toServiceError } from './status';

/** The KMS API's proto file, relative to PROTO_DIR. */
export const KMS_API_FILE = join('k8s', 'kms', 'v2', 'api.proto');

/**
 * Largest KMS request: a 1 KiB ciphertext, a 1 KiB key_id and < 32 KiB of annotations, with room for
 * framing. Anything bigger is refused by grpc-js before a handler runs (RESOURCE_EXHAUSTED).
 */
const MAX_REQUEST_BYTES = 64 * 1024;

let cached: KmsProto | undefined;

/** The typed gRPC objects for package v2 (servers and test clients). */
export function loadKmsApi(): KmsProto {
  if (!cached) {
    const definition = loadSync(KMS_API_FILE, {
      keepCase: false,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
      includeDirs: [PROTO_DIR],
    });
    cached = loadPackageDefinition(definition) as GrpcObject as unknown as KmsProto;
  }
  return cached;
}

/** Told once per KMS call: method, "ok" / "unhealthy" (Status) or the sealbox error code, seconds. */
export type KmsCallObserver = (method: string, outcome: string, seconds: number) => void;

export interface KmsServerDeps {
  readonly plugin: KmsPlugin;
  readonly log: Logger;
  readonly onCall?: KmsCallObserver;
}

/** Handlers for v2.KeyManagementService. */
export function kmsHandlers(deps: KmsServerDeps): KeyManagementServiceHandlers {
  const { plugin, log, onCall } = deps;

  /** Runs one call as its own audit caller, answers it, and reports its outcome. */
  function serve<Req extends { uid?: string }, Res>(
    method: string,
    call: ServerUnaryCall<Req, Res>,
    callback: sendUnaryData<Res>,
    work: (signal: AbortSignal, caller: AuditCaller) => Promise<Res>,
  ): void {
    const started = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
    const abort = new AbortController();
    let answered = false;
    // grpc-js emits 'cancelled' also once a finished call closes: only a call still working is aborted.
    call.on('cancelled', () => {
      if (!answered) abort.abort(new SealboxError(ErrorCode.CANCELLED, 'call cancelled'));
    });
    // The uid is the apiserver's request id (a UUID); bounded so a caller cannot flood the audit log.
    const uid = (call.request.uid ?? '').slice(0, 128);
    const caller: AuditCaller = { caller: `kms:${method}`, peer: call.getPeer(), ...(uid ? { uid } : {}) };
    work(abort.signal, caller).then(
      (response) => {
        answered = true;
        onCall?.(method, 'ok', seconds());
        callback(null, response);
      },
      (err: unknown) => {
        answered = true;
        const error = toServiceError(err, log, `kms:${method}`);
        onCall?.(method, String(error.metadata?.get(ERROR_CODE_TRAILER)[0] ?? ErrorCode.INTERNAL), seconds());
        callback(error);
      },
    );
  }

  return {
    Status(_call, callback) {
      const started = process.hrtime.bigint();
      const status = plugin.status();
      onCall?.(
        'Status',
        status.healthz === 'ok' ? 'ok' : 'unhealthy',
        Number(process.hrtime.bigint() - started) / 1e9,
      );
      callback(null, status);
    },

    Encrypt(call, callback) {
      serve('Encrypt', call, callback, async (signal, caller) => {
        const { plaintext } = call.request;
        try {
          return await plugin.encrypt(plaintext, signal, caller);
        } finally {
          // The seed is a key: zero the request's copy once it is sealed (the response never holds it).
          plaintext.fill(0);
        }
      });
    },

    Decrypt(call, callback) {
      serve('Decrypt', call, callback, async (signal, caller) => {
        const { ciphertext, keyId, annotations } = call.request;
        let bytes = 0;
        for (const [key, value] of Object.entries(annotations))
          bytes += Buffer.byteLength(key) + value.length;
        if (bytes > KMS_MAX_ANNOTATION_BYTES) {
          throw new SealboxError(
            ErrorCode.INVALID_ARGUMENT,
            `annotations total ${bytes} bytes, over ${KMS_MAX_ANNOTATION_BYTES}; pass the annotations Encrypt returned`,
          );
        }
        return { plaintext: await plugin.decrypt(ciphertext, keyId, annotations, signal, caller) };
      });
    },
  };
}

export interface RunningKmsServer {
  /** "unix:/path" */
  readonly address: string;
  stop(graceMs: number): Promise<void>;
}

/** Serves the KMS API on `socket` (a Unix socket, never more open than `mode`). */
export async function startKmsServer(
  socket: string,
  access: { mode: number; group: number | string | null },
  deps: KmsServerDeps,
): Promise<RunningKmsServer> {
  const server = new Server({
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
    'grpc.max_send_message_length': MAX_REQUEST_BYTES,
  });
  server.addService(loadKmsApi().v2.KeyManagementService.service, kmsHandlers(deps));
  try {
    await bindUnixSocket(server, socket, access, ServerCredentials.createInsecure());
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  deps.log.info({ socket }, 'Kubernetes KMS v2 plugin listening');
  return {
    address: `unix:${socket}`,
    stop: (graceMs) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }).finally(() => {
        try {
          unlinkSync(socket);
        } catch {
          // Already gone.
        }
      }),
  };
}
