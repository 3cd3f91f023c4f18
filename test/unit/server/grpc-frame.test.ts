/**
 * The private grpc-js patch (src/server/grpc-frame.ts). The first test fails when grpc-js's
 * serializeMessage changes under it: then the patch no longer applies (responses are copied again, the
 * allocation budget in bench/README.md no longer holds) and must be reviewed against the new code.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  EXPECTED_SERIALIZE_SOURCE,
  frameMessage,
  GRPC_PREFIX_BYTES,
  installFrameInPlace,
  reservePrefix,
} from '../../../src/server/grpc-frame';
import { normalize } from '../../../src/server/grpc-patch';

type SerializeMessage = (this: { handler: { serialize(v: unknown): Buffer } }, value: unknown) => Buffer;

const proto = (
  require('@grpc/grpc-js/build/src/server-interceptors') as {
    BaseServerInterceptingCall: { prototype: { serializeMessage: SerializeMessage } };
  }
).BaseServerInterceptingCall.prototype;
const original = proto.serializeMessage;

test('grpc-js serializeMessage is the code the patch reproduces (fails when grpc-js changes)', () => {
  assert.equal(normalize(original.toString()), EXPECTED_SERIALIZE_SOURCE);
});

test('installs once and replaces serializeMessage', () => {
  assert.equal(installFrameInPlace(), true);
  assert.notEqual(proto.serializeMessage, original);
  assert.equal(installFrameInPlace(), true);
});

/** A call whose serializer passes buffers through, as sealbox's PreEncoded serializer does. */
const passThrough = { handler: { serialize: (v: unknown) => v as Buffer } };

test('a reserved message is framed in place: same memory, the prefix grpc-js would write', () => {
  installFrameInPlace();
  const backing = randomBytes(GRPC_PREFIX_BYTES + 3 + 1000);
  const message = backing.subarray(GRPC_PREFIX_BYTES + 3);
  const expected = original.call(passThrough, Buffer.from(message));
  const frame = proto.serializeMessage.call(passThrough, reservePrefix(message));
  assert.equal(frame.buffer, backing.buffer, 'no copy');
  assert.equal(frame.byteOffset, message.byteOffset - GRPC_PREFIX_BYTES);
  assert.ok(frame.equals(expected));
});

test('an unreserved message (or one without room in front) is copied exactly as grpc-js does', () => {
  const noRoom = reservePrefix(Buffer.allocUnsafeSlow(40).subarray(GRPC_PREFIX_BYTES - 1));
  for (const message of [randomBytes(100), noRoom]) {
    const frame = frameMessage(message);
    assert.notEqual(frame.buffer, message.buffer);
    assert.ok(frame.equals(original.call(passThrough, message)));
  }
  // A reservation is used once: sending the same bytes again copies them.
  const backing = Buffer.alloc(GRPC_PREFIX_BYTES + 8);
  const message = reservePrefix(backing.subarray(GRPC_PREFIX_BYTES));
  assert.equal(frameMessage(message).buffer, backing.buffer);
  assert.notEqual(frameMessage(message).buffer, backing.buffer);
});
