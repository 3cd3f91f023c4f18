/**
 * connectEnvelope({connections: N}) over the real socket: a counting Unix-socket relay in front of a
 * real sealbox sees exactly N connections, concurrent streams carry their bytes over all of them (each
 * connection carries at least its streams' plaintext), and every ciphertext decrypts through a plain
 * client. One connection is the control: the relay then sees one socket carrying everything.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { callsInFlight, connectEnvelope, decryptStream, encryptStream } from '../../src/client/client';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';

const MiB = 1024 * 1024;
let box: TestSealbox;

before(async () => {
  box = await startTestSealbox({ pool: { mode: 'inline' } });
});
after(() => box.close());

/** A relay on its own socket that forwards to sealbox and counts client bytes per accepted connection. */
async function relay(name: string): Promise<{ target: string; upload: number[]; close(): Promise<void> }> {
  const upload: number[] = [];
  const path = join(box.dir, `${name}.sock`);
  const server: Server = createServer((socket) => {
    const index = upload.push(0) - 1;
    const upstream = createConnection(box.socketPath);
    socket.on('data', (chunk: Buffer) => {
      upload[index]! += chunk.length;
    });
    socket.pipe(upstream).pipe(socket);
    socket.on('error', () => upstream.destroy());
    upstream.on('error', () => socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return {
    target: `unix:${path}`,
    upload,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function spreadStreams(connections: number, streams: number, bytesPerStream: number) {
  const r = await relay(`relay-${connections}-${streams}`);
  const client = connectEnvelope(r.target, {}, { connections });
  try {
    const inputs = Array.from({ length: streams }, () => randomBytes(bytesPerStream));
    const pieces = (data: Buffer) =>
      Array.from({ length: data.length / (256 * 1024) }, (_, i) =>
        data.subarray(i * 256 * 1024, (i + 1) * 256 * 1024),
      );
    const outputs = await Promise.all(
      inputs.map((data, i) =>
        encryptStream(client, box.alias, pieces(data), { context: { stream: String(i) } }),
      ),
    );
    for (const [i, out] of outputs.entries()) {
      const back = await decryptStream(box.client, [out.data], { stream: String(i) });
      assert.ok(back.data.equals(inputs[i]!), `stream ${i} decrypts to its input`);
    }
    assert.deepEqual(
      callsInFlight(client) ?? [0],
      Array(connections).fill(0),
      'no call is counted after its end',
    );
    return [...r.upload];
  } finally {
    client.close();
    await r.close();
  }
}

test('4 connections are 4 sockets, and 8 concurrent streams spread over all of them', async () => {
  const upload = await spreadStreams(4, 8, 2 * MiB);
  assert.equal(upload.length, 4, `connections accepted: ${upload.length}`);
  // Least busy first: two streams per connection, so each socket carried at least 2 × 2 MiB.
  for (const [i, bytes] of upload.entries())
    assert.ok(bytes >= 4 * MiB, `connection ${i} carried ${bytes} bytes (expected ≥ 2 streams' 4 MiB)`);
});

test('control: 1 connection is 1 socket that carries every stream', async () => {
  const upload = await spreadStreams(1, 4, MiB);
  assert.equal(upload.length, 1);
  assert.ok(upload[0]! >= 4 * MiB);
});
