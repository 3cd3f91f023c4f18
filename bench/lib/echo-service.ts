/**
 * An echo service for measuring the transport alone: the same grpc-js, socket and server options as
 * sealbox, with identity (de)serializers over Buffers instead of protobuf and no crypto. `Echo` is a
 * bidi stream (the streaming baseline), `EchoUnary` answers one message with itself (the unary one).
 */
import type { ChannelOptions, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { EnvelopeHandlers } from '../../src/api/proto';

const identity = (b: Buffer): Buffer => b;

export const ECHO_SERVICE: ServiceDefinition = {
  Echo: {
    path: '/bench.Echo/Echo',
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
  EchoUnary: {
    path: '/bench.Echo/EchoUnary',
    requestStream: false,
    responseStream: false,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

/** The options src/server/server.ts gives sealbox's server (with the default stream.maxMessageBytes). */
export const SERVER_OPTIONS: ChannelOptions = {
  'grpc.max_receive_message_length': 8 * 1024 * 1024,
  'grpc.max_send_message_length': -1,
};

/** What the protobuf-shaped echo answers with, so its responses have the size of sealbox's. */
export interface PbEchoShape {
  /**
   * Plaintext size → ciphertext bytes minus plaintext bytes of a sealbox unary message that size
   * (header + chunk tags), measured on the sealbox under test; other sizes get `defaultOverhead`.
   */
  readonly overheads: Record<string, number>;
  readonly defaultOverhead: number;
  /** The key id sealbox answers (the dev vault's versioned key id). */
  readonly keyId: string;
}

/** The env var bench/unary.ts passes the shape in (JSON). */
export const PB_ECHO_ENV = 'SEALBOX_BENCH_PB_ECHO';

/** sealbox's default chunk size (envelope.defaultChunkSize), for the stream echo's tag bytes. */
const STREAM_CHUNK_BYTES = 64 * 1024;

/**
 * The protobuf-shaped echo: sealbox.v1.Envelope's Encrypt, Decrypt and EncryptStream served from the real API
 * definition (src/api/proto.ts: the same proto-loader codec, options and generated types sealbox
 * uses), so grpc-js decodes the real EncryptRequest/DecryptRequest and encodes a same-size
 * EncryptResponse/DecryptResponse — no crypto, no sealbox handler, no interceptors. Each answer is a
 * fresh buffer (as sealbox's is) holding the request's payload bytes. The other methods are left
 * unimplemented (grpc-js answers UNIMPLEMENTED).
 */
export function pbEchoHandlers(shape: PbEchoShape): UntypedServiceImplementation {
  const bySize = new Map(Object.entries(shape.overheads).map(([size, o]) => [Number(size), o]));
  const byCiphertext = new Map([...bySize].map(([size, o]) => [size + o, o]));
  const handlers: Pick<EnvelopeHandlers, 'Encrypt' | 'Decrypt' | 'EncryptStream'> = {
    Encrypt(call, callback) {
      const { plaintext } = call.request;
      const overhead = bySize.get(plaintext.length) ?? shape.defaultOverhead;
      const ciphertext = Buffer.allocUnsafe(plaintext.length + overhead);
      ciphertext.fill(0, 0, overhead);
      plaintext.copy(ciphertext, overhead);
      callback(null, { ciphertext, keyId: shape.keyId });
    },
    Decrypt(call, callback) {
      const { ciphertext, expectedContext } = call.request;
      const overhead = byCiphertext.get(ciphertext.length) ?? shape.defaultOverhead;
      const body = ciphertext.subarray(Math.min(overhead, ciphertext.length));
      const plaintext = Buffer.allocUnsafe(body.length);
      body.copy(plaintext);
      callback(null, { plaintext, keyId: shape.keyId, context: expectedContext });
    },
    /**
     * The stream baseline that pays protobuf both ways as sealbox's EncryptStream does: metadata
     * first, then for each data message one fresh buffer of its bytes plus 16 per chunk (where the
     * tags would be), no crypto, stock grpc-js framing. Backpressure as in the raw echo.
     */
    EncryptStream(call) {
      let chunkSize = STREAM_CHUNK_BYTES;
      let first = true;
      call.on('data', (request) => {
        if (request.msg === 'init') {
          chunkSize = request.init?.chunkSize || STREAM_CHUNK_BYTES;
          return;
        }
        const data = request.data;
        if (request.msg !== 'data' || !data) return;
        if (first) {
          first = false;
          call.write({ metadata: { keyId: shape.keyId, context: {} } });
        }
        const out = Buffer.allocUnsafe(data.length + Math.ceil(data.length / chunkSize) * 16);
        data.copy(out);
        out.fill(0, data.length);
        if (!call.write({ data: out })) {
          call.pause();
          call.once('drain', () => call.resume());
        }
      });
      call.on('end', () => call.end());
      call.on('error', () => {});
    },
  };
  return handlers as unknown as UntypedServiceImplementation;
}
