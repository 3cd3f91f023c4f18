/**
 * A private patch of grpc-js (the other: ./grpc-reassembly.ts; how both apply: ./grpc-patch.ts): stream responses get their 5-byte gRPC message prefix
 * written in place instead of being copied into a new frame.
 *
 * grpc-js 1.14.7 (`build/src/server-interceptors.js`, `BaseServerInterceptingCall.serializeMessage`)
 * calls the method's serializer, allocates `5 + length` bytes, writes the prefix (compressed flag 0,
 * u32be length) and copies the serialized message after it: one fresh buffer and one copy of every
 * response byte. sealbox's stream responses are already encoded in buffers that keep free bytes in
 * front (./wire.ts), so the prefix can go there and the frame is a view of the same memory.
 *
 * Scope: only serializer outputs registered with `reservePrefix` (bytes that have GRPC_PREFIX_BYTES
 * free bytes in front, in the same ArrayBuffer) take the new path; everything else runs grpc-js's own
 * code, reproduced below line for line. The patch is applied only when grpc-js's function is the one
 * it was written against (its source text is compared); otherwise grpc-js is left alone and responses
 * are copied as before. test/unit/server/grpc-frame.test.ts fails when grpc-js changes under it.
 *
 * Gain (bench/README.md, "Stream allocation budget"): one fresh byte per payload byte fewer.
 */
import { Buffer } from 'node:buffer';
import { replaceVerified } from './grpc-patch';

/** Compressed flag (1 byte) and message length (u32be) in front of every gRPC message. */
export const GRPC_PREFIX_BYTES = 5;

/** grpc-js's serializeMessage as of 1.14.7, whitespace collapsed; the patch reproduces it. */
export const EXPECTED_SERIALIZE_SOURCE =
  'serializeMessage(value) { const messageBuffer = this.handler.serialize(value); ' +
  'const byteLength = messageBuffer.byteLength; const output = Buffer.allocUnsafe(byteLength + 5); ' +
  '/* Note: response compression is currently not supported, so this * compressed bit is always 0. */ ' +
  'output.writeUInt8(0, 0); output.writeUInt32BE(byteLength, 1); messageBuffer.copy(output, 5); return output; }';

const reserved = new WeakSet<Uint8Array>();

/**
 * Marks `bytes` (a serializer's output) as having GRPC_PREFIX_BYTES free bytes in front of it in the
 * same ArrayBuffer; the patched serializeMessage writes the prefix there. Returns `bytes`.
 * Precondition: those bytes really are the caller's to overwrite (a small Buffer from Node's shared
 * pool has other Buffers in front of it); the byteOffset check only rules out having no room at all.
 */
export function reservePrefix(bytes: Buffer): Buffer {
  if (bytes.byteOffset >= GRPC_PREFIX_BYTES) reserved.add(bytes);
  return bytes;
}

interface Serializing {
  handler: { serialize(value: unknown): Buffer };
}

/** The gRPC message for serialized `messageBuffer`: in place when reserved, else grpc-js's copy. */
export function frameMessage(messageBuffer: Buffer): Buffer {
  const byteLength = messageBuffer.byteLength;
  if (reserved.has(messageBuffer)) {
    reserved.delete(messageBuffer);
    const frame = Buffer.from(
      messageBuffer.buffer,
      messageBuffer.byteOffset - GRPC_PREFIX_BYTES,
      byteLength + GRPC_PREFIX_BYTES,
    );
    frame.writeUInt8(0, 0);
    frame.writeUInt32BE(byteLength, 1);
    return frame;
  }
  // grpc-js's own path (copy of payload bytes, as grpc-js always did): not a reserved buffer.
  const output = Buffer.allocUnsafe(byteLength + GRPC_PREFIX_BYTES);
  output.writeUInt8(0, 0);
  output.writeUInt32BE(byteLength, 1);
  messageBuffer.copy(output, GRPC_PREFIX_BYTES);
  return output;
}

let installed: boolean | undefined;

/**
 * Applies the patch once per process. Returns whether responses are framed in place: false when
 * grpc-js's serializeMessage is not the expected one (then nothing was changed).
 */
export function installFrameInPlace(): boolean {
  installed ??= replaceVerified(
    '@grpc/grpc-js/build/src/server-interceptors',
    'BaseServerInterceptingCall',
    'serializeMessage',
    EXPECTED_SERIALIZE_SOURCE,
    function serializeMessage(this: Serializing, value: unknown): Buffer {
      return frameMessage(this.handler.serialize(value));
    },
  );
  return installed;
}
