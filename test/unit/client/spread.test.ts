/**
 * spreadCalls over fake clients (object literals with grpc-js's shape): each new call goes to the
 * client with the fewest calls in flight, a call counts until its 'status' (or 'error'), ties rotate,
 * close() and waitForReady reach every client. The real-socket side is test/integration/connections.test.ts.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';
import type { EnvelopeClient } from '../../../src/api/proto';
import { callsInFlight, connectEnvelope, spreadCalls } from '../../../src/client/client';

class FakeClient {
  static readonly service = {
    EncryptStream: { originalName: 'encryptStream' },
    Encrypt: { originalName: 'encrypt' },
  };
  readonly calls: EventEmitter[] = [];
  closed = false;
  EncryptStream(): EventEmitter {
    const call = new EventEmitter();
    this.calls.push(call);
    return call;
  }
  encryptStream(): EventEmitter {
    return this.EncryptStream();
  }
  Encrypt(_request: unknown, callback: () => void): EventEmitter {
    const call = this.EncryptStream();
    call.once('status', callback);
    return call;
  }
  close(): void {
    this.closed = true;
  }
  waitForReady(_deadline: number, callback: (err?: Error) => void): void {
    setImmediate(() => callback(this.closed ? new Error('closed') : undefined));
  }
}

function fakes(n: number) {
  const clients = Array.from({ length: n }, () => new FakeClient());
  return { clients, spread: spreadCalls(clients as unknown as EnvelopeClient[]) };
}

test('new calls go to the least busy client; ties rotate', () => {
  const { clients, spread } = fakes(3);
  const calls = Array.from({ length: 6 }, () => spread.EncryptStream());
  assert.deepEqual(
    clients.map((c) => c.calls.length),
    [2, 2, 2],
  );
  assert.deepEqual(callsInFlight(spread), [2, 2, 2]);
  // Two calls on the second client end: the next two calls both go there.
  clients[1]!.calls[0]!.emit('status', { code: 0 });
  clients[1]!.calls[1]!.emit('error', new Error('cancelled'));
  clients[1]!.calls[1]!.emit('status', { code: 1 }); // counted once, not twice
  assert.deepEqual(callsInFlight(spread), [2, 0, 2]);
  spread.EncryptStream();
  spread.encryptStream(); // the camelCase alias is spread too
  assert.deepEqual(
    clients.map((c) => c.calls.length),
    [2, 4, 2],
  );
  assert.equal(calls.length, 6);
});

test('unary calls are spread and counted until their status', () => {
  const { clients, spread } = fakes(2);
  let answered = 0;
  spread.Encrypt({}, () => answered++);
  spread.Encrypt({}, () => answered++);
  assert.deepEqual(callsInFlight(spread), [1, 1]);
  clients[0]!.calls[0]!.emit('status', { code: 0 });
  assert.equal(answered, 1);
  assert.deepEqual(callsInFlight(spread), [0, 1]);
});

test('close() closes every client; waitForReady waits for all and reports a failure once', async () => {
  const { clients, spread } = fakes(3);
  await new Promise<void>((resolve, reject) =>
    spread.waitForReady(Date.now() + 1000, (err) => (err ? reject(err) : resolve())),
  );
  spread.close();
  assert.ok(clients.every((c) => c.closed));
  let failures = 0;
  await new Promise<void>((resolve) =>
    spread.waitForReady(Date.now() + 1000, (err) => {
      if (err) failures++;
      setImmediate(resolve);
    }),
  );
  assert.equal(failures, 1);
});

test('connectEnvelope refuses a connection count outside 1..64 and keeps one plain client for 1', () => {
  for (const connections of [0, -1, 1.5, 65])
    assert.throws(() => connectEnvelope('unix:/nonexistent', {}, { connections }), /connections must be/);
  const plain = connectEnvelope('unix:/nonexistent', {}, { connections: 1 });
  assert.equal(callsInFlight(plain), undefined);
  plain.close();
  const spread = connectEnvelope('unix:/nonexistent', {}, { connections: 3 });
  assert.deepEqual(callsInFlight(spread), [0, 0, 0]);
  spread.close();
});
