/**
 * The private grpc-js patch of request reassembly (src/server/grpc-reassembly.ts). The first test
 * fails when grpc-js's StreamDecoder.write changes under it: then the patch no longer applies (request
 * messages are reassembled into new buffers again, the allocation budget in bench/README.md no longer
 * holds) and must be reviewed against the new code.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { test } from 'node:test';
import { normalize } from '../../../src/server/grpc-patch';
import {
  EXPECTED_WRITE_SOURCE,
  installRequestReuse,
  isReusedRequest,
  REUSE_MIN_BYTES,
  RequestReturns,
  releaseRequest,
  requestBufferStats,
} from '../../../src/server/grpc-reassembly';

interface Decoder {
  write(data: Buffer): Buffer[];
}
const { StreamDecoder } = require('@grpc/grpc-js/build/src/stream-decoder') as {
  StreamDecoder: { new (max: number): Decoder; prototype: { write: Decoder['write'] } };
};
const original = StreamDecoder.prototype.write;

test('grpc-js StreamDecoder.write is the code the patch reproduces (fails when grpc-js changes)', () => {
  assert.equal(normalize(original.toString()), EXPECTED_WRITE_SOURCE);
});

test('installs once and replaces StreamDecoder.write', () => {
  assert.equal(installRequestReuse(), true);
  assert.notEqual(StreamDecoder.prototype.write, original);
  assert.equal(installRequestReuse(), true);
});

/** gRPC frames (flag 0, u32be length, bytes) of `messages`, concatenated. */
function frames(messages: readonly Buffer[]): Buffer {
  return Buffer.concat(
    messages.flatMap((m) => {
      const prefix = Buffer.alloc(5);
      prefix.writeUInt32BE(m.length, 1);
      return [prefix, m];
    }),
  );
}

/** Feeds `wire` to a decoder in pieces of random sizes (as HTTP/2 DATA frames arrive). */
function decodeInPieces(decoder: Decoder, wire: Buffer, maxPiece: number): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < wire.length; ) {
    const n = Math.min(wire.length - at, 1 + randomInt(maxPiece));
    out.push(...decoder.write(wire.subarray(at, at + n)));
    at += n;
  }
  return out;
}

test('decodes exactly what grpc-js decodes, however the bytes are split, large and small messages mixed', () => {
  installRequestReuse();
  const sizes = [
    0,
    1,
    4,
    100,
    REUSE_MIN_BYTES - 6,
    REUSE_MIN_BYTES - 5,
    REUSE_MIN_BYTES,
    300_000,
    1 << 20,
    7,
  ];
  const messages = sizes.map((n) => randomBytes(n));
  const wire = frames(messages);
  for (const maxPiece of [1, 5, 17, 16_384, 70_000]) {
    const patched = decodeInPieces(new StreamDecoder(-1), wire, maxPiece);
    const reference = decodeInPieces(
      Object.assign(new StreamDecoder(-1), { write: original }),
      wire,
      maxPiece,
    );
    assert.deepEqual(patched, reference, `pieces up to ${maxPiece} bytes`);
    assert.equal(patched.length, messages.length);
    for (const [i, framed] of patched.entries()) {
      assert.ok(framed.subarray(5).equals(messages[i]!));
      // Framed size ≥ REUSE_MIN_BYTES: a reused buffer; smaller: grpc-js's own Buffer.concat.
      assert.equal(isReusedRequest(framed), framed.length >= REUSE_MIN_BYTES, `message ${i}`);
    }
  }
  // grpc-js's size limit still holds.
  assert.throws(() => new StreamDecoder(10).write(frames([randomBytes(11)])), /larger than max/);
});

test('a message buffer given back is reused for a later message, and only once', () => {
  installRequestReuse();
  const decoder = new StreamDecoder(-1);
  const first = decoder.write(frames([randomBytes(200_000)]))[0]!;
  const data = first.subarray(9); // any view, e.g. protobuf's bytes field
  releaseRequest(data);
  assert.equal(isReusedRequest(first), false, 'given back: no longer lent');
  const before = requestBufferStats().buffers;
  assert.ok(before >= 1);
  const payload = randomBytes(199_000);
  const second = decoder.write(frames([payload]))[0]!;
  assert.equal(second.buffer, first.buffer, 'the same memory, reused');
  assert.ok(requestBufferStats().reused >= 1);
  assert.ok(second.subarray(5).equals(payload), 'fully overwritten with the new message');
  // Giving back twice puts it on the free list once: two later messages get two different buffers.
  releaseRequest(second);
  releaseRequest(second);
  const third = decoder.write(frames([randomBytes(199_000)]))[0]!;
  const fourth = decoder.write(frames([randomBytes(199_000)]))[0]!;
  assert.notEqual(third.buffer, fourth.buffer);
});

/** A promise with its resolve and reject. */
function deferred(): { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

test('RequestReturns gives a message back only once no push, pending segment or framer view uses it', async () => {
  installRequestReuse();
  const decoder = new StreamDecoder(-1);
  const [a, b, c] = decoder.write(frames([randomBytes(100_000), randomBytes(100_000), randomBytes(100_000)]));
  const held = new Set<ArrayBufferLike>();
  const returns = new RequestReturns((memory) => held.has(memory));
  const viewOf = (m: Buffer) => ({ data: m.subarray(10, 20) });

  // a: being pushed — kept even though nothing holds it yet.
  const ra = returns.received(a!.subarray(7));
  assert.equal(isReusedRequest(a!), true);
  // Its push returned one segment (a view of a) and left a tail in the framer.
  const sa = viewOf(a!);
  held.add(a!.buffer);
  returns.pushed(ra, [sa]);
  const workA = deferred();
  void returns.settles(sa, workA.promise);
  // b's push consumed a's tail (the framer no longer holds a) but a's segment is still pending
  // (e.g. queued for a worker): a stays lent, and so does b behind it.
  held.delete(a!.buffer);
  const rb = returns.received(b!.subarray(7));
  returns.pushed(rb, []);
  await tick();
  assert.equal(isReusedRequest(a!), true, 'a pending segment keeps its message');
  assert.equal(isReusedRequest(b!), true, 'an older message in use keeps the newer ones');
  workA.resolve();
  await tick();
  assert.equal(isReusedRequest(a!), false, 'given back once its segment settled');
  assert.equal(isReusedRequest(b!), false, 'and the newer one with it, nothing holding it');

  // A failed segment releases as well; the final segment (from finish) is tracked like any other.
  const rc = returns.received(c!.subarray(7));
  held.add(c!.buffer); // the framer holds back c's last bytes…
  returns.pushed(rc, []);
  const sc = viewOf(c!); // …until finish() hands them out as the final segment
  held.delete(c!.buffer);
  returns.pushed(undefined, [sc]);
  const workC = deferred();
  returns.settles(sc, workC.promise).catch(() => {});
  await tick();
  assert.equal(isReusedRequest(c!), true);
  workC.reject(new Error('chunk failed'));
  await tick();
  assert.equal(isReusedRequest(c!), false);

  // Buffers not from the decoder (small messages, foreign memory) are never tracked or given back.
  assert.equal(returns.received(Buffer.concat([randomBytes(10)])), undefined);
  returns.pushed(undefined, [{ data: Buffer.alloc(4) }]);
  const foreign = { data: Buffer.alloc(4) };
  assert.equal(await returns.settles(foreign, Promise.resolve(7)), 7);
});
