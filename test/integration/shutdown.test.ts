/**
 * SIGTERM: sealbox stops accepting calls, lets in-flight calls finish (up to shutdown.graceMs),
 * zeroes its caches and exits 0. Runs the real CLI as a child process.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { SERVER_ENV, SERVER_NODE_FLAGS } from '../../src/cli/launch';
import { connectEnvelope, decryptStream, encrypt } from '../../src/client/client';

const CLI = join(__dirname, '..', '..', 'src', 'cli.js');
const dir = mkdtempSync(join(tmpdir(), 'sealbox-shutdown-'));
after(() => rmSync(dir, { recursive: true, force: true }));

async function startCli(): Promise<{ child: ChildProcess; target: string }> {
  const child = spawn(
    process.execPath,
    [...SERVER_NODE_FLAGS, CLI, 'dev', '--local-kek', '--data-dir', dir, '--log-level', 'warn'],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...SERVER_ENV } },
  );
  const socket = join(dir, 'sealbox.sock');
  const started = Date.now();
  while (!(existsSync(socket) && (await accepts(socket)))) {
    if (Date.now() - started > 15_000) throw new Error('sealbox did not start');
    await sleep(50);
  }
  return { child, target: `unix:${socket}` };
}

async function accepts(socket: string): Promise<boolean> {
  const client = connectEnvelope(`unix:${socket}`);
  try {
    await encrypt(client, 'dev', Buffer.from('ping'));
    return true;
  } catch {
    return false;
  } finally {
    client.close();
  }
}

test('SIGTERM drains an in-flight stream, then exits 0; new calls are refused meanwhile', async () => {
  const { child, target } = await startCli();
  const exited = once(child, 'exit');
  const client = connectEnvelope(target);
  const call = client.EncryptStream();
  const parts: Buffer[] = [];
  call.on('data', (m: { data?: Buffer }) => {
    if (m.data) parts.push(m.data);
  });
  const ended = once(call, 'end');
  call.write({ init: { keyAlias: 'dev', context: {}, chunkSize: 0 } });
  const plaintext = randomBytes(8 * 1024 * 1024);
  const pieces = 32;
  const piece = plaintext.length / pieces;
  for (let i = 0; i < pieces; i++) {
    call.write({ data: plaintext.subarray(i * piece, (i + 1) * piece) });
    if (i === 8) child.kill('SIGTERM'); // mid-stream
    await sleep(20);
  }
  // A new call after SIGTERM is refused (the server no longer accepts calls).
  const late = await encrypt(client, 'dev', Buffer.from('late')).then(
    () => 'accepted',
    () => 'refused',
  );
  call.end();
  await ended;
  const [code, signal] = (await exited) as [number | null, string | null];
  assert.equal(late, 'refused');
  assert.equal(signal, null);
  assert.equal(code, 0, 'exits 0 after draining');
  client.close();

  // The stream that was in flight completed: a new sealbox on the same key decrypts all of it.
  const again = await startCli();
  try {
    const reader = connectEnvelope(again.target);
    const { data } = await decryptStream(reader, parts);
    reader.close();
    assert.ok(data.equals(plaintext), 'the drained stream is complete and decrypts');
  } finally {
    again.child.kill('SIGTERM');
    await once(again.child, 'exit');
  }
});
