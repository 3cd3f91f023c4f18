/**
 * Sending stream output without re-encoding it. A data response is the protobuf message
 * `{ data = 2: bytes }`, i.e. the byte 0x12, a varint length and the payload. Chunk batches are sealed
 * (or opened) into buffers that reserve RESPONSE_HEADROOM bytes at the front; the tag and length go
 * there, and the response serializer passes the finished bytes through. That saves one allocation and
 * one copy of every payload byte (protobufjs would otherwise copy the payload into a new buffer).
 * The headroom also keeps GRPC_PREFIX_BYTES in front of the protobuf bytes, where the gRPC message
 * prefix is written in place (./grpc-frame.ts) — another allocation and copy saved.
 */
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import { GRPC_PREFIX_BYTES, reservePrefix } from './grpc-frame';

/** Tag of field 2 (`data`), wire type 2 (length-delimited), in both streaming response messages. */
const DATA_FIELD_TAG = 0x12;

/** Room for the gRPC message prefix, the tag and a varint length up to 2³⁵. */
export const RESPONSE_HEADROOM = GRPC_PREFIX_BYTES + 6;

/** A response already encoded as protobuf bytes. */
export class PreEncoded {
  constructor(
    readonly bytes: Buffer,
    /** True when the GRPC_PREFIX_BYTES in front of `bytes` (same ArrayBuffer) are free to overwrite. */
    readonly prefixRoom = false,
  ) {}
}

/**
 * Encodes `buffer[RESPONSE_HEADROOM..]` as a data response, in place.
 * Precondition: the first RESPONSE_HEADROOM bytes of `buffer` are free.
 */
export function encodeDataResponse(buffer: Buffer): PreEncoded {
  let length = buffer.length - RESPONSE_HEADROOM;
  const varint: number[] = [];
  do {
    const low = length & 0x7f;
    length = Math.floor(length / 128);
    varint.push(length > 0 ? low | 0x80 : low);
  } while (length > 0);
  const start = RESPONSE_HEADROOM - 1 - varint.length;
  buffer[start] = DATA_FIELD_TAG;
  for (let i = 0; i < varint.length; i++) buffer[start + 1 + i] = varint[i]!;
  return new PreEncoded(buffer.subarray(start), true);
}

/**
 * A copy of `service` whose listed methods' response serializers pass PreEncoded bytes through, with
 * room for the gRPC prefix reserved in front (encodeDataResponse leaves at least GRPC_PREFIX_BYTES).
 */
export function acceptPreEncoded(service: ServiceDefinition, methods: readonly string[]): ServiceDefinition {
  const patched: Record<string, MethodDefinition<unknown, unknown>> = { ...service };
  for (const name of methods) {
    const method = service[name];
    if (!method) throw new Error(`service has no method ${name}`);
    const serialize = method.responseSerialize;
    patched[name] = {
      ...method,
      responseSerialize: (value: unknown) =>
        value instanceof PreEncoded
          ? value.prefixRoom
            ? reservePrefix(value.bytes)
            : value.bytes
          : serialize(value),
    };
  }
  return patched as ServiceDefinition;
}
