/**
 * Loads the public API (proto/sealbox/v1) for servers and clients alike. Types come from
 * proto-loader-gen-types (npm run gen → src/gen), so handlers and clients are checked by tsc.
 */
import { join } from 'node:path';
import { type GrpcObject, loadPackageDefinition } from '@grpc/grpc-js';
import { loadSync, type Options } from '@grpc/proto-loader';
import type { ProtoGrpcType as HealthProto } from '../gen/health';
import type { ProtoGrpcType as SealboxProto } from '../gen/sealbox';

/** The repository's proto/ directory (dist/src/api → proto). */
export const PROTO_DIR = join(__dirname, '..', '..', '..', 'proto');

const loaderOptions: Options = {
  keepCase: false,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

/** The API's proto files, relative to PROTO_DIR. */
export const API_FILES = ['sealbox/v1/sealbox.proto', 'grpc/health/v1/health.proto'] as const;

let cached: { sealbox: SealboxProto; health: HealthProto } | undefined;

/** The typed gRPC objects for sealbox.v1 and grpc.health.v1. */
export function loadApi(): { sealbox: SealboxProto; health: HealthProto } {
  if (!cached) {
    const definition = loadSync([...API_FILES], loaderOptions);
    const loaded = loadPackageDefinition(definition) as GrpcObject;
    cached = { sealbox: loaded as unknown as SealboxProto, health: loaded as unknown as HealthProto };
  }
  return cached;
}

export type { EnvelopeClient, EnvelopeHandlers } from '../gen/sealbox/v1/Envelope';
