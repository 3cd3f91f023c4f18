/**
 * sealbox's small HTTP listeners (metrics/probes, Event Grid webhook) hold a bounded number of
 * connections for a bounded time: a connection cap (Node closes connections beyond it at once) and
 * header/request timeouts (server/http-limits.ts). Checked on the real listeners sealbox starts.
 */
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
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

/** Listens on a free port of 127.0.0.1; resolves with the port. */
function listen(server: Server): Promise<number> {
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)),
  );
}

/** Connects and sends a request whose headers never end; `answer` is what came back by the close. */
async function stallHeaders(
  port: number,
): Promise<{ answer: Promise<string>; closed: () => boolean; socket: Socket }> {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => {});
  await new Promise((r) => socket.once('connect', r));
  let text = '';
  let closed = false;
  socket.on('data', (d) => (text += d.toString()));
  const answer = new Promise<string>((resolve) =>
    socket.once('close', () => {
      closed = true;
      resolve(text);
    }),
  );
  socket.write('GET / HTTP/1.1\r\nHost: x\r\n'); // never the blank line that ends the headers
  return { answer, closed: () => closed, socket };
}

test('a client that never finishes its headers is cut off by the header timeout', async () => {
  // The same limits helper on a plain server with a short timeout: Node enforces what it sets. Beside
  // it, a reference server that cuts the same stalled client after 20 s, checked every 100 ms: sooner
  // than Node's defaults would cut it on the limited server (headersTimeout 60 s, checked every 30 s:
  // https://nodejs.org/api/http.html#serverheaderstimeout and connectionsCheckingInterval in
  // #httpcreateserveroptions-requestlistener), far later than the configured 300 ms. The limited
  // server's client is cut while the reference's is still open, whatever the load (one event loop
  // runs both): the configured timeout and sweep did it, not a default one.
  const limited = createServer((_req, res) => res.end('ok'));
  limitHttpServer(limited, { ...PROBE_LIMITS, headersTimeoutMs: 300, requestTimeoutMs: 600 });
  const reference = createServer({ connectionsCheckingInterval: 100 }, (_req, res) => res.end('ok'));
  reference.headersTimeout = 20_000;
  try {
    // The reference's client first, so it has waited at least as long.
    const waiting = await stallHeaders(await listen(reference));
    const cut = await stallHeaders(await listen(limited));
    assert.match(await cut.answer, /^HTTP\/1\.1 408/, 'the server answers 408 Request Timeout and closes');
    assert.equal(waiting.closed(), false, 'the reference server (20 s) still holds the same client');
    waiting.socket.destroy();
  } finally {
    for (const server of [limited, reference]) {
      server.close();
      server.closeAllConnections();
    }
  }
});
