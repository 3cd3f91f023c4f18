/**
 * Every server limit, hit over the real socket, answered with its documented status (README
 * "Limits"): message size, unary size, stream idle timeout, deadlines. After each, the call's
 * resources are back (no bytes in flight, no stream slot held) and the server still serves.
 * Stream-count limits (global and per identity) are hit in access.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Metadata, status } from '@grpc/grpc-js';
import { decrypt, encrypt, encryptStream, errorCode } from '../../src/client/client';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';

const KiB = 1024;
const MiB = 1024 * KiB;
const IDLE_MS = 400;

let box: TestSealbox;

before(async () => {
  box = await startTestSealbox({
    stream: { maxMessageBytes: 64 * KiB, idleTimeoutMs: IDLE_MS },
    envelope: { unaryMaxBytes: 16 * KiB },
  });
});
after(() => box.close());

interface Ended {
  readonly code: number;
  readonly details: string;
  readonly sealboxCode: string | undefined;
}

/** Resolves with the call's final status (OK included), never rejects. */
function ending(call: NodeJS.EventEmitter): Promise<Ended> {
  return new Promise((resolve) => {
    call.on('error', (err: { code: number; details: string; metadata?: Metadata }) =>
      resolve({ code: err.code, details: err.details, sealboxCode: errorCode(err) }),
    );
    call.on('status', (s: { code: number; details: string }) => {
      if (s.code === status.OK) resolve({ code: s.code, details: s.details, sealboxCode: undefined });
    });
  });
}

/** Waits until the server holds nothing for ended calls. */
async function released(): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const stats = box.sealbox.stats();
    if (stats.streamsOpen === 0 && stats.bytesInFlight === 0) return;
    await sleep(20);
  }
  assert.deepEqual(
    { streamsOpen: box.sealbox.stats().streamsOpen, bytesInFlight: box.sealbox.stats().bytesInFlight },
    { streamsOpen: 0, bytesInFlight: 0 },
    'resources of ended calls are released',
  );
}

async function stillServes(): Promise<void> {
  const plaintext = randomBytes(1000);
  const { ciphertext } = await encrypt(box.client, box.alias, plaintext, { after: 'limit' });
  assert.deepEqual((await decrypt(box.client, ciphertext)).plaintext, plaintext);
}

describe('message size', () => {
  test('a stream message over stream.maxMessageBytes: RESOURCE_EXHAUSTED, nothing encrypted', async () => {
    const call = box.client.EncryptStream();
    const end = ending(call);
    const data: unknown[] = [];
    call.on('data', (m) => data.push(m));
    call.write({ init: { keyAlias: box.alias, context: {}, chunkSize: 0 } });
    call.write({ data: randomBytes(64 * KiB + 1) });
    call.end();
    const { code, details } = await end;
    assert.equal(code, status.RESOURCE_EXHAUSTED);
    assert.match(details, /message larger than max/i);
    await released();
    await stillServes();
  });

  test('a message just under the limit goes through', async () => {
    // The request's protobuf framing (field tag, length varint, oneof) takes a few bytes of the limit.
    const plaintext = randomBytes(64 * KiB - 16);
    const { data } = await encryptStream(box.client, box.alias, [plaintext]);
    assert.ok(data.length > plaintext.length);
  });

  test('a unary call over envelope.unaryMaxBytes: RESOURCE_EXHAUSTED / LIMIT_EXCEEDED, pointing at the stream API', async () => {
    await assert.rejects(
      encrypt(box.client, box.alias, randomBytes(16 * KiB + 1), {}),
      (err: { code: number; details: string }) => {
        assert.equal(err.code, status.RESOURCE_EXHAUSTED);
        assert.equal(errorCode(err), 'LIMIT_EXCEEDED');
        assert.match(err.details, /exceeds the unary limit of 16384 bytes.*use EncryptStream/);
        return true;
      },
    );
    await released();
    await stillServes();
  });
});

describe('stream idle timeout', () => {
  test('a stream that goes quiet after its init ends DEADLINE_EXCEEDED / IDLE_TIMEOUT and frees its slot', async () => {
    const call = box.client.EncryptStream();
    const end = ending(call);
    call.on('data', () => {});
    call.write({ init: { keyAlias: box.alias, context: {}, chunkSize: 0 } });
    const started = Date.now();
    const { code, details, sealboxCode } = await end;
    const after = Date.now() - started;
    assert.equal(code, status.DEADLINE_EXCEEDED);
    assert.equal(sealboxCode, 'IDLE_TIMEOUT');
    assert.match(details, /EncryptStream made no progress for 400 ms.*stream\.idleTimeoutMs/);
    // It waited for the timeout (not ended early).
    assert.ok(after >= IDLE_MS - 50, `ended after ${after} ms`);
    await released();
  });

  test('a slow but steady stream is not cut: every message restarts the clock', async () => {
    const call = box.client.EncryptStream();
    const end = ending(call);
    const parts: Buffer[] = [];
    call.on('data', (m: { data?: Buffer }) => {
      if (m.data) parts.push(m.data);
    });
    call.write({ init: { keyAlias: box.alias, context: {}, chunkSize: 0 } });
    // 2.5 idle timeouts in total, never more than half of one between messages.
    for (let i = 0; i < 5; i++) {
      await sleep(IDLE_MS / 2);
      call.write({ data: randomBytes(1000) });
    }
    call.end();
    const { code } = await end;
    assert.equal(code, status.OK);
    assert.ok(Buffer.concat(parts).length > 5000);
  });

  test('a client that stops reading a stream is cut loose: the server releases what it held', async () => {
    const call = box.client.EncryptStream();
    const end = ending(call);
    const firstMessage = once(call, 'data');
    call.on('data', () => call.pause());
    call.write({ init: { keyAlias: box.alias, context: {}, chunkSize: 0 } });
    await firstMessage;
    // Keep offering data without reading until the server stops taking it (backpressure), then wait.
    const block = randomBytes(60 * KiB);
    let offered = 0;
    while (offered < 512 * MiB) {
      offered += block.length;
      if (!call.write({ data: block })) {
        const drained = await Promise.race([
          once(call, 'drain').then(() => true),
          sleep(IDLE_MS * 2).then(() => false),
        ]);
        if (!drained) break;
      }
    }
    assert.ok(offered < 512 * MiB, 'the server stopped reading from a client that stopped reading');
    // The server ended the call: its slot and bytes are free although the client never read on.
    await released();
    call.cancel();
    const { code } = await end;
    assert.notEqual(code, status.OK);
    await stillServes();
  });
});

describe('deadlines', () => {
  test('a stream past its deadline ends DEADLINE_EXCEEDED and frees its slot and bytes', async () => {
    const call = box.client.EncryptStream({ deadline: Date.now() + 250 });
    const end = ending(call);
    call.on('data', () => {});
    call.write({ init: { keyAlias: box.alias, context: {}, chunkSize: 0 } });
    // Keep it busy (so the idle timeout is not what ends it), slower than the deadline.
    const writer = (async () => {
      for (let i = 0; i < 20 && !call.destroyed; i++) {
        call.write({ data: randomBytes(4 * KiB) });
        await sleep(50);
      }
    })();
    const { code } = await end;
    await writer;
    assert.equal(code, status.DEADLINE_EXCEEDED);
    await released();
    await stillServes();
  });

  test('a deadline that leaves enough time is honoured, not cut short', async () => {
    const plaintext = randomBytes(2 * MiB);
    const call = box.client.EncryptStream({ deadline: Date.now() + 30_000 });
    const end = ending(call);
    const parts: Buffer[] = [];
    call.on('data', (m: { data?: Buffer }) => {
      if (m.data) parts.push(m.data);
    });
    call.write({ init: { keyAlias: box.alias, context: {}, chunkSize: 0 } });
    for (let at = 0; at < plaintext.length; at += 32 * KiB)
      call.write({ data: plaintext.subarray(at, at + 32 * KiB) });
    call.end();
    assert.equal((await end).code, status.OK);
    assert.ok(Buffer.concat(parts).length > plaintext.length);
  });
});
