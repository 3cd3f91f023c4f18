/**
 * gRPC server reflection (grpc.reflection.v1 and v1alpha, from @grpc/reflection), so that grpcurl,
 * Postman or grpcui can list and describe sealbox's services without the proto files.
 *
 * What it reveals: the schema of the services the listener serves (service, method, message and
 * field names, as in proto/ in the repository) and nothing else — no key alias, identity, policy or
 * configuration. The schema is public, but reflection is still a call like any other: the caller
 * must be an identity of the access policy (an unknown caller gets PERMISSION_DENIED / ACCESS_DENIED
 * and not even the service list), no grant is needed beyond that, and the stream counts against the
 * identity's rate and stream limits and stream.maxConcurrentStreams while it is open.
 *
 * @grpc/reflection's handler answers each request with a write and never looks at write()'s result.
 * The wrapper here adds what sealbox gives every stream: it stops reading when grpc-js's write buffer
 * is full (so a client that sends requests and never reads cannot grow server memory), ends a stream
 * idle for stream.idleTimeoutMs, and releases the caller's stream slot however the stream ends.
 *
 * The descriptors come from ../api/descriptors.ts, which rewrites proto-loader's into the shape protoc
 * gives (grpcurl rejects proto-loader's map entries as they are).
 */
import type {
  handleBidiStreamingCall,
  Server,
  ServerDuplexStream,
  ServiceDefinition,
  UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { loadReflectionDefinition } from '../api/descriptors';
import { ErrorCode, SealboxError } from '../errors';
import type { Logger } from '../log/logger';
import type { CallPeer } from './access';
import { toServiceError } from './status';

export interface ReflectionOptions {
  /**
   * Admits one reflection stream, or throws (ACCESS_DENIED, QUOTA_EXCEEDED, OVERLOADED); the result
   * is released when the stream ends.
   */
  readonly admit: (call: CallPeer, method: string) => { release(): void };
  /** A stream with no request for this long ends with DEADLINE_EXCEEDED (IDLE_TIMEOUT); 0 = never. */
  readonly idleTimeoutMs: number;
  readonly log: Logger;
}

/**
 * Adds grpc.reflection.v1 and v1alpha to `server`, describing exactly `services` (fully qualified
 * names of services `server` serves, e.g. "sealbox.v1.Envelope"): reflection must not list a
 * service the listener would answer UNIMPLEMENTED.
 */
export function addReflection(
  server: Pick<Server, 'addService'>,
  services: readonly string[],
  options: ReflectionOptions,
): void {
  const definition = loadReflectionDefinition();
  const reflection = new ReflectionService(definition, { services: [...services] });
  const known = new Set(Object.keys(definition));
  for (const name of services) {
    // Precondition: every listed service has a descriptor (a typo would silently list nothing).
    if (!known.has(name)) throw new Error(`reflection: ${name} is not a service of proto/ (bug)`);
  }
  reflection.addToServer({
    addService(service: ServiceDefinition, implementation: UntypedServiceImplementation) {
      const method = service['ServerReflectionInfo'];
      const handler = implementation['ServerReflectionInfo'] as
        | handleBidiStreamingCall<unknown, unknown>
        | undefined;
      if (!method || !handler) {
        throw new Error('@grpc/reflection no longer serves ServerReflectionInfo; check its version');
      }
      server.addService(service, {
        ServerReflectionInfo: (call: ServerDuplexStream<unknown, unknown>) =>
          guarded(call, method.path, handler, options),
      });
    },
  });
}

/** Runs the library's handler for one admitted stream, with backpressure and an idle limit. */
function guarded(
  call: ServerDuplexStream<unknown, unknown>,
  path: string,
  handler: handleBidiStreamingCall<unknown, unknown>,
  { admit, idleTimeoutMs, log }: ReflectionOptions,
): void {
  let admitted: { release(): void };
  try {
    admitted = admit(call, path);
  } catch (err) {
    call.emit('error', toServiceError(err, log, path));
    return;
  }
  let ended = false;
  let idle: NodeJS.Timeout | undefined;
  const end = () => {
    if (ended) return;
    ended = true;
    clearTimeout(idle);
    admitted.release();
  };
  for (const event of ['cancelled', 'finish', 'close', 'error'] as const) call.once(event, end);
  if (idleTimeoutMs > 0) {
    idle = setTimeout(() => {
      if (ended) return;
      end();
      call.emit(
        'error',
        toServiceError(
          new SealboxError(
            ErrorCode.IDLE_TIMEOUT,
            `server reflection received no request for ${idleTimeoutMs} ms (stream.idleTimeoutMs); ` +
              'send requests or end the stream',
          ),
          log,
          path,
        ),
      );
    }, idleTimeoutMs);
    idle.unref();
  }
  handler(call);
  // Registered after the handler's own 'data' listener, so it runs once the response is written.
  call.on('data', () => {
    if (ended) return;
    // refresh() would re-arm a cleared timer, hence the check above.
    idle?.refresh();
    if (call.writableNeedDrain) {
      call.pause();
      call.once('drain', () => call.resume());
    }
  });
}
