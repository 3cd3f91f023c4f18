/**
 * Backpressure and cancellation over the real socket: a client that stops reading stalls its own
 * stream (the server stops reading too, so nothing piles up), and cancelled calls release their
 * budget and drop their queued pool work.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { decryptStream } from '../../src/client/client';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';

const MiB = 1024 * 1024;
let box: TestSealbox;

before(async () => {
  box = await startTestSealbox({ pool: { mode: 'workers', inlineBelowBytes: 0 } });
});
after(() => box.close());

/** Writes `block` until write() has returned false and no 'drain' came for `quietMs`; returns bytes accepted. */
async function writeUntilStalled(
  call: { write(m: unknown): boolean; once(e: string, f: () => void): unknown },
  block: Buffer,
  limit: number,
  quietMs: number,
): Promise<number> {
  let written = 0;
  while (written < limit) {
    written += block.length;
    if (!call.write({ data: block })) {
      const drained = await Promise.race([
        new Promise<boolean>((resolve) => call.once('drain', () => resolve(true))),
        sleep(quietMs).then(() => false),
      ]);
      if (!drained) return written;
    }
  }
  return written;
}

test('a client that stops reading stalls its stream; server memory in flight stays bounded', async (t) => {
  const call = box.client.EncryptStream();
  // Read the metadata message, then stop reading. (grpc-js's client only pauses its HTTP/2 stream
  // once the application has started reading; a call never read at all buffers without bound on the
  // client side, which says nothing about the server.)
  const parts: Buffer[] = [];
  const firstMessage = once(call, 'data');
  call.on('data', (m: { data?: Buffer }) => {
    if (m.data) parts.push(m.data);
    call.pause();
  });
  call.write({ init: { keyAlias: box.alias, context: { test: 'backpressure' }, chunkSize: 0 } });
  await firstMessage;
  const block = randomBytes(MiB);
  const limit = 1024 * MiB;
  const written = await writeUntilStalled(call, block, limit, 1500);

  const inFlight = box.sealbox.stats().bytesInFlight;
  t.diagnostic(`writer stalled after ${(written / MiB).toFixed(0)} MiB; server bytes in flight ${inFlight}`);
  // Per stream at most maxInFlightSegments segments of ≤ batchBytes each are held by the server.
  const bound = box.config.stream.maxInFlightSegments * (box.config.envelope.batchBytes + 64 * 1024);
  assert.ok(written < limit, 'the writer must stall long before 1 GiB');
  assert.ok(
    written < 160 * MiB,
    `stalled after ${written / MiB} MiB: too much buffered between client and server`,
  );
  assert.ok(inFlight <= bound, `server holds ${inFlight} bytes in flight, bound ${bound}`);

  // Resume reading: the stalled stream completes, and its output decrypts to what was written.
  call.removeAllListeners('data');
  call.on('data', (m: { data?: Buffer }) => {
    if (m.data) parts.push(m.data);
  });
  call.resume();
  call.end();
  await once(call, 'end');
  const { data: plaintext } = await decryptStream(box.client, parts);
  assert.equal(plaintext.length, written);
  assert.ok(plaintext.subarray(0, MiB).equals(block));
  await waitFor(() => box.sealbox.stats().bytesInFlight === 0, 'budget released after the stream ended');
});

test('cancelled streams release their budget and their queued pool work', async () => {
  const calls = Array.from({ length: 8 }, () => {
    const call = box.client.EncryptStream();
    call.on('error', () => {}); // CANCELLED is expected
    call.on('data', () => {});
    call.write({ init: { keyAlias: box.alias, context: {}, chunkSize: 0 } });
    return call;
  });
  const block = randomBytes(4 * MiB);
  for (let round = 0; round < 4; round++) for (const call of calls) call.write({ data: block });
  await waitFor(() => box.sealbox.stats().bytesInFlight > 0, 'work in flight before cancelling');
  for (const call of calls) call.cancel();
  await waitFor(
    () => box.sealbox.stats().bytesInFlight === 0 && box.sealbox.stats().pool.queueSize === 0,
    'budget and pool queue empty after cancelling',
  );
  // The server still serves new calls normally.
  const probe = box.client.EncryptStream();
  const ended = once(probe, 'end');
  probe.on('data', () => {});
  probe.write({ init: { keyAlias: box.alias, context: {}, chunkSize: 0 } });
  probe.write({ data: Buffer.from('after cancel') });
  probe.end();
  await ended;
});

test('a unary call whose deadline passes fails with DEADLINE_EXCEEDED and releases its budget', async () => {
  const err = await new Promise<{ code?: number } | null>((resolve) => {
    box.client.Encrypt(
      { keyAlias: box.alias, plaintext: randomBytes(4 * MiB), context: {} },
      { deadline: Date.now() + 1 },
      (e) => resolve(e),
    );
  });
  assert.ok(err, 'a 1 ms deadline cannot be met');
  assert.equal(err.code, 4);
  await waitFor(() => box.sealbox.stats().bytesInFlight === 0, 'budget released after the deadline');
});

async function waitFor(condition: () => boolean, what: string, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > until) assert.fail(`timed out waiting for: ${what}`);
    await sleep(20);
  }
}
