/**
 * sealbox's small HTTP listeners (metrics/probes, Event Grid webhook) hold a bounded number of
 * connections for a bounded time: a connection cap (Node closes connections beyond it at once) and
 * header/request timeouts (server/http-limits.ts). Checked on the real listeners sealbox starts.
 */
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { limitHttpServer, PROBE_LIMITS, WEBHOOK_LIMITS } from '../../src/server/http-limits';
import { startTestSealbox } from '../helpers/harness';

/** Opens `n` idle TCP connections to `port`; resolves with how many the server closed within `ms`. */
async function closedOf(port: number, n: number, ms: number): Promise<{ closed: number; sockets: Socket[] }> {
  let closed = 0;
  const sockets = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<Socket>((resolve, reject) => {
          const s = connect(port, '127.0.0.1', () => resolve(s));
          s.on('error', () => {});
          s.once('close', () => closed++);
          s.once('error', reject);
        }),
    ),
  );
  await sleep(ms);
  return { closed, sockets };
}

test('the metrics and webhook listeners close connections beyond their caps at once', async () => {
  const box = await startTestSealbox({
    metrics: { listen: { host: '127.0.0.1', port: 0 } },
    webhook: { listen: { host: '127.0.0.1', port: 0 }, secret: 'a-secret-of-sufficient-length' },
  });
  try {
    for (const [url, limits] of [
      [box.sealbox.metricsUrl!, PROBE_LIMITS],
      [box.sealbox.webhookUrl!, WEBHOOK_LIMITS],
    ] as const) {
      const port = Number(new URL(url).port);
      const extra = 5;
      const { closed, sockets } = await closedOf(port, limits.maxConnections + extra, 300);
      assert.equal(
        closed,
        extra,
        `${url}: exactly the ${extra} connections over ${limits.maxConnections} were closed`,
      );
      for (const s of sockets) s.destroy();
      await sleep(100);
      // Still serving once the flood is gone.
      const res = await fetch(url.endsWith('/eventgrid') ? `${url}?secret=wrong` : url);
      assert.ok(res.status === 200 || res.status === 401, `${url} answers (${res.status})`);
    }
  } finally {
    await box.close();
  }
});

test('a client that never finishes its headers is cut off by the header timeout', async () => {
  // The same limits helper on a plain server with a short timeout: Node enforces what it sets.
  const server = createServer((_req, res) => res.end('ok'));
  limitHttpServer(server, { ...PROBE_LIMITS, headersTimeoutMs: 300, requestTimeoutMs: 600 });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  try {
    const socket = connect(port, '127.0.0.1');
    socket.on('error', () => {});
    await new Promise((r) => socket.once('connect', r));
    socket.write('GET / HTTP/1.1\r\nHost: x\r\n'); // never the blank line that ends the headers
    const started = Date.now();
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      socket.on('data', (d) => (text += d.toString()));
      socket.once('close', () => resolve(text));
    });
    assert.match(answer, /^HTTP\/1\.1 408/, 'the server answers 408 Request Timeout and closes');
    assert.ok(Date.now() - started < 5_000, 'cut off by the configured timeout, not a default one');
  } finally {
    server.close();
    server.closeAllConnections();
  }
});
