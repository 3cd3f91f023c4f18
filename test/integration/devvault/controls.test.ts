/**
 * The dev vault's test controls and wire protocol: throttling (429 + Retry-After, and what the SDK does
 * with it), injected latency, injected 5xx errors and dropped connections as the SDK sees them, the
 * `/_sealbox/` admin surface, and raw-HTTPS checks of what the SDK hides (the challenge header, TLS
 * trust, routing errors). Responses are validated against the swagger at the end.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { VECTORS_DIR } from '../../helpers/paths';
import { assertNoPrivateMaterial, rejectsKv, startTestVault, type TestVault, TOKENS } from './harness';
import { keyVaultSwagger } from './swagger';

let tv: TestVault;
const DEK = randomBytes(32);

before(async () => {
  tv = await startTestVault();
  await tv.keys().createRsaKey('rsa', { keySize: 2048 });
  await tv.keys().createKey('oct', 'oct-HSM', { keySize: 256 });
});

after(async () => {
  await tv?.close();
});

interface RawResponse {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly text: string;
  readonly json: unknown;
  readonly peerSubjectAltName?: string;
}

/** One HTTPS request to the vault, trusting its CA unless `trustCa` is false. */
function raw(
  method: string,
  path: string,
  options: { headers?: Record<string, string>; body?: unknown; host?: string; trustCa?: boolean } = {},
): Promise<RawResponse> {
  const body = options.body === undefined ? undefined : JSON.stringify(options.body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: options.host ?? '127.0.0.1',
        servername: options.host === undefined ? undefined : options.host,
        port: tv.vault.port,
        method,
        path,
        headers: {
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
          ...options.headers,
        },
        ...(options.trustCa === false ? {} : { ca: tv.vault.caPem }),
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const socket = res.socket as import('node:tls').TLSSocket;
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            text,
            json: text === '' ? undefined : JSON.parse(text),
            peerSubjectAltName: socket.getPeerCertificate?.().subjectaltname,
          });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

const admin = (method: string, path: string, body?: unknown, token = tv.vault.adminToken) =>
  raw(method, path, { headers: { authorization: `Bearer ${token}` }, body });

test('throttling: 429 Throttled with Retry-After past the window; the SDK waits and retries', async (t) => {
  const key = await tv.keys().getKey('rsa');
  tv.vault.setFaults({ throttling: { enabled: true, limitsPer10s: { rsa2048: 4 }, windowMs: 1500 } });
  tv.vault.resetCounters();
  try {
    await t.test('without retries the caller sees the 429', async () => {
      const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper, { retryOptions: { maxRetries: 0 } });
      for (let i = 0; i < 4; i++) await crypto.wrapKey('RSA-OAEP-256', DEK);
      const err = await rejectsKv(
        crypto.wrapKey('RSA-OAEP-256', DEK),
        429,
        'Throttled',
        undefined,
        /too many requests were received/,
      );
      const retryAfter = Number(err.response?.headers.get('retry-after'));
      assert.ok(
        retryAfter >= 1 && retryAfter <= 2,
        `Retry-After ${retryAfter} covers the rest of the 1.5 s window`,
      );
      assert.equal(tv.vault.counters()['throttled'], 1);
    });
    await t.test('with the default retry policy the SDK honours Retry-After and succeeds', async () => {
      // A fresh window with room for one operation: the second is throttled, then retried after it.
      tv.vault.setFaults({ throttling: { enabled: true, limitsPer10s: { rsa2048: 1 }, windowMs: 2000 } });
      const throttledBefore = tv.vault.counters()['throttled'] ?? 0;
      const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper);
      await crypto.wrapKey('RSA-OAEP-256', DEK);
      const started = Date.now();
      const wrapped = await crypto.wrapKey('RSA-OAEP-256', DEK);
      assert.equal(wrapped.result.length, 256);
      assert.equal(tv.vault.counters()['throttled'], throttledBefore + 1, 'one 429, then success');
      assert.ok(Date.now() - started >= 900, 'the SDK slept for Retry-After before retrying');
    });
  } finally {
    tv.vault.setFaults({ throttling: { enabled: false } });
  }
});

test('latency: fixed plus jitter before every request, from options and from setFaults', async (t) => {
  await t.test('setFaults', async () => {
    const client = tv.keys();
    await client.getKey('oct');
    tv.vault.setFaults({ latency: { fixedMs: 150, jitterMs: 100 } });
    try {
      for (let i = 0; i < 3; i++) {
        const started = Date.now();
        await client.getKey('oct');
        const took = Date.now() - started;
        // The wait happened; that the draw stays within fixed + jitter is test/unit/devvault/controls.test.ts's.
        assert.ok(took >= 145, `took ${took} ms`);
      }
    } finally {
      tv.vault.setFaults({ latency: { fixedMs: 0, jitterMs: 0 } });
    }
  });
  await t.test('DevVaultOptions.latency', async () => {
    const slow = await startTestVault({ latency: { fixedMs: 120, jitterMs: 0 } });
    try {
      const started = Date.now();
      await slow.keys().createKey('k', 'oct-HSM');
      // A new client answers the challenge first: two requests, two delays.
      assert.ok(Date.now() - started >= 2 * 115);
    } finally {
      await slow.close();
    }
  });
});

test('error injection: 500/503 with Key Vault bodies; the SDK retries them', async () => {
  tv.vault.setFaults({ errorRate: 1 });
  tv.vault.resetCounters();
  try {
    const client = tv.keys(TOKENS.admin, {
      retryOptions: { maxRetries: 2, retryDelayInMs: 5, maxRetryDelayInMs: 10 },
    });
    let caught: { statusCode?: number; code?: string } | undefined;
    await assert.rejects(client.getKey('oct'), (err: { statusCode?: number; code?: string }) => {
      caught = err;
      return true;
    });
    assert.ok(caught?.statusCode === 500 || caught?.statusCode === 503, `status ${caught?.statusCode}`);
    assert.ok(
      ['InternalServerError', 'ServiceUnavailable'].includes(caught?.code ?? ''),
      `code ${caught?.code}`,
    );
    assert.equal(tv.vault.counters()['faults.errors'], 3, 'one attempt and two retries');
  } finally {
    tv.vault.setFaults({ errorRate: 0 });
  }
  assert.equal((await tv.keys().getKey('oct')).name, 'oct');
});

test('dropped connections: the SDK sees a reset; with retries it recovers once drops stop', async () => {
  const client = tv.keys(TOKENS.admin, { retryOptions: { maxRetries: 0 } });
  await client.getKey('oct');
  tv.vault.setFaults({ dropRate: 1 });
  tv.vault.resetCounters();
  try {
    await assert.rejects(client.getKey('oct'), (err: { statusCode?: number; code?: string }) => {
      assert.equal(err.statusCode, undefined, 'no HTTP answer');
      assert.match(String(err.code), /ECONNRESET|REQUEST_SEND_ERROR|EPIPE/);
      return true;
    });
    assert.equal(tv.vault.counters()['faults.dropped'], 1);
  } finally {
    tv.vault.setFaults({ dropRate: 0 });
  }
  assert.equal((await client.getKey('oct')).name, 'oct');
});

test('admin surface: token, counters, reset and faults', async (t) => {
  await t.test('the token file holds the admin token, mode 0600', () => {
    const file = join(tv.dir, 'admin-token');
    assert.equal(readFileSync(file, 'utf8').trim(), tv.vault.adminToken);
    assert.equal(statSync(file).mode & 0o777, 0o600);
  });
  await t.test('no token, a wrong token or a Key Vault identity token → 401', async () => {
    const attempts: Array<Record<string, string>> = [
      {},
      { authorization: 'Bearer nope' },
      { authorization: `Bearer ${TOKENS.admin}` },
    ];
    for (const headers of attempts) {
      const res = await raw('GET', '/_sealbox/counters', { headers });
      assert.equal(res.status, 401);
    }
  });
  await t.test('counters, then reset', async () => {
    await tv.keys().getKey('oct');
    const before = await admin('GET', '/_sealbox/counters');
    assert.equal(before.status, 200);
    assert.ok(((before.json as { counters: Record<string, number> }).counters['getKey/oct'] ?? 0) >= 1);
    assert.equal((await admin('POST', '/_sealbox/reset')).status, 204);
    assert.deepEqual((await admin('GET', '/_sealbox/counters')).json, { counters: {} });
  });
  await t.test('faults: invalid updates are refused naming the field; valid ones apply', async () => {
    const bad = await admin('POST', '/_sealbox/faults', { errorRate: 2 });
    assert.equal(bad.status, 400);
    assert.match(bad.text, /errorRate/);
    const unknown = await admin('POST', '/_sealbox/faults', { latencyMs: 5 });
    assert.equal(unknown.status, 400);
    assert.equal(
      (await admin('POST', '/_sealbox/faults', { latency: { fixedMs: 80, jitterMs: 0 } })).status,
      204,
    );
    const current = (await admin('GET', '/_sealbox/faults')).json as { latency: { fixedMs: number } };
    assert.equal(current.latency.fixedMs, 80);
    const client = tv.keys();
    await client.getKey('oct');
    const started = Date.now();
    await client.getKey('oct');
    assert.ok(Date.now() - started >= 75);
    assert.equal(
      (await admin('POST', '/_sealbox/faults', { latency: { fixedMs: 0, jitterMs: 0 } })).status,
      204,
    );
  });
  await t.test('admin requests are not subject to faults and are not counted', async () => {
    tv.vault.setFaults({ dropRate: 1 });
    try {
      assert.equal((await admin('GET', '/_sealbox/counters')).status, 200);
    } finally {
      tv.vault.setFaults({ dropRate: 0 });
    }
    await admin('POST', '/_sealbox/reset');
    await admin('GET', '/_sealbox/counters');
    assert.deepEqual(tv.vault.counters(), {});
  });
  await t.test('unknown admin operation → 404', async () => {
    assert.equal((await admin('GET', '/_sealbox/nothing')).status, 404);
  });
});

test('admin surface: forced answers, run-time access changes and the Entra control', async (t) => {
  const key = await tv.keys().getKey('rsa');
  const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper);
  await t.test('POST /_sealbox/faults forcedAnswers: the next N matching requests, then normal', async () => {
    const set = await admin('POST', '/_sealbox/faults', {
      forcedAnswers: [{ operations: ['wrapKey'], keyName: 'RSA', count: 1, answer: 'ForbiddenByConnection' }],
    });
    assert.equal(set.status, 204);
    const current = (await admin('GET', '/_sealbox/faults')).json as { forcedAnswers: unknown[] };
    assert.deepEqual(current.forcedAnswers, [
      { operations: ['wrapKey'], keyName: 'RSA', count: 1, answer: 'ForbiddenByConnection' },
    ]);
    await rejectsKv(
      crypto.wrapKey('RSA-OAEP-256', DEK),
      403,
      'Forbidden',
      'ForbiddenByConnection',
      /^Public network access is disabled and request is not from a trusted service nor via an approved private link\.$/,
    );
    assert.ok((await crypto.wrapKey('RSA-OAEP-256', DEK)).result.length > 0);
    assert.deepEqual(
      ((await admin('GET', '/_sealbox/faults')).json as { forcedAnswers: unknown[] }).forcedAnswers,
      [],
    );
    assert.equal(
      (await admin('POST', '/_sealbox/faults', { forcedAnswers: [{ count: 1, answer: 'Nope' }] })).status,
      400,
    );
  });
  await t.test('POST /_sealbox/access revokes and re-grants; GET shows the policies', async () => {
    const revoke = await admin('POST', '/_sealbox/access', {
      setAccessPolicies: [{ principal: 'wrapper', permissions: [] }],
    });
    assert.equal(revoke.status, 204);
    await rejectsKv(
      crypto.wrapKey('RSA-OAEP-256', DEK),
      403,
      'Forbidden',
      'AccessDenied',
      /keys wrapKey permission/,
    );
    assert.equal(
      (
        await admin('POST', '/_sealbox/access', {
          setAccessPolicies: [
            { principal: 'wrapper', permissions: ['wrapKey', 'unwrapKey', 'encrypt', 'decrypt'] },
          ],
          afterMs: 200,
        })
      ).status,
      204,
    );
    const state = (await admin('GET', '/_sealbox/access')).json as { model: string; pendingChanges: number };
    assert.equal(state.model, 'accessPolicy');
    assert.equal(state.pendingChanges, 1);
    await new Promise((r) => setTimeout(r, 250));
    assert.ok((await crypto.wrapKey('RSA-OAEP-256', DEK)).result.length > 0);
    const bad = await admin('POST', '/_sealbox/access', { assignRoles: [{ principal: 'x', role: 'Owner' }] });
    assert.equal(bad.status, 400);
    assert.match(bad.text, /assignRoles\.0\.role/);
  });
  await t.test('POST /_sealbox/entra without an embedded Entra ID is 404 saying how to get one', async () => {
    const res = await admin('POST', '/_sealbox/entra', { tokenEndpoint: 'refuse' });
    assert.equal(res.status, 404);
    assert.match(res.text, /entra option/);
  });
});

test('protocol: challenge header, TLS trust and routing errors on the wire', async (t) => {
  await t.test('no Authorization → 401 with Key Vault’s challenge and AKV10000 body', async () => {
    const res = await raw('POST', '/keys/x/create?api-version=2025-07-01', {
      body: { kty: 'RSA' },
      headers: { 'x-ms-client-request-id': 'req-42' },
    });
    assert.equal(res.status, 401);
    assert.match(
      String(res.headers['www-authenticate']),
      /^Bearer authorization="https:\/\/login\.microsoftonline\.com\/[0-9a-f-]{36}", resource="https:\/\/localhost"$/,
    );
    assert.deepEqual(res.json, {
      error: { code: 'Unauthorized', message: 'AKV10000: Request is missing a Bearer or PoP token.' },
    });
    assert.equal(res.headers['x-ms-client-request-id'], 'req-42');
  });
  await t.test('the certificate chains to the CA and names localhost, 127.0.0.1 and ::1', async () => {
    const res = await raw('GET', '/keys?api-version=2025-07-01', { host: 'localhost' });
    assert.equal(res.status, 401);
    for (const name of ['DNS:localhost', 'IP Address:127.0.0.1'])
      assert.ok(res.peerSubjectAltName?.includes(name), name);
    assert.match(res.peerSubjectAltName ?? '', /IP Address:(0:0:0:0:0:0:0:1|::1)/);
  });
  await t.test('without the CA the TLS handshake is refused (verification stays on)', async () => {
    await assert.rejects(
      raw('GET', '/keys?api-version=2025-07-01', { trustCa: false }),
      (err: NodeJS.ErrnoException) => {
        assert.match(
          String(err.code),
          /UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_GET_ISSUER_CERT/,
        );
        return true;
      },
    );
  });
  const bearer = { authorization: `Bearer ${TOKENS.admin}` };
  const cases: ReadonlyArray<{ name: string; method: string; path: string; status: number; code: string }> = [
    { name: 'missing api-version', method: 'GET', path: '/keys', status: 400, code: 'BadParameter' },
    {
      name: 'unknown path',
      method: 'GET',
      path: '/secrets?api-version=2025-07-01',
      status: 404,
      code: 'NotFound',
    },
    {
      name: 'wrong method',
      method: 'POST',
      path: '/keys?api-version=2025-07-01',
      status: 405,
      code: 'MethodNotAllowed',
    },
    {
      name: 'unimplemented sign',
      method: 'POST',
      path: '/keys/oct//sign?api-version=2025-07-01',
      status: 400,
      code: 'BadParameter',
    },
    {
      name: 'bad JSON body',
      method: 'POST',
      path: '/keys/x/create?api-version=2025-07-01',
      status: 400,
      code: 'BadParameter',
    },
    {
      name: 'bad maxresults',
      method: 'GET',
      path: '/keys?api-version=2025-07-01&maxresults=26',
      status: 400,
      code: 'BadParameter',
    },
    {
      name: 'bad $skiptoken',
      method: 'GET',
      path: '/keys?api-version=2025-07-01&$skiptoken=!!',
      status: 400,
      code: 'BadParameter',
    },
  ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const res = await new Promise<RawResponse>((resolve, reject) => {
        if (c.name !== 'bad JSON body') {
          raw(c.method, c.path, { headers: bearer }).then(resolve, reject);
          return;
        }
        const req = request(
          {
            host: '127.0.0.1',
            port: tv.vault.port,
            method: c.method,
            path: c.path,
            ca: tv.vault.caPem,
            agent: false,
            headers: { ...bearer, 'content-type': 'application/json' },
          },
          (r) => {
            const chunks: Buffer[] = [];
            r.on('data', (x: Buffer) => chunks.push(x));
            r.on('end', () => {
              const text = Buffer.concat(chunks).toString();
              resolve({ status: r.statusCode ?? 0, headers: r.headers, text, json: JSON.parse(text) });
            });
          },
        );
        req.on('error', reject);
        req.end('{not json');
      });
      assert.equal(res.status, c.status, res.text);
      assert.equal((res.json as { error: { code: string } }).error.code, c.code);
    });
  }
});

test('every response validates against the swagger and carries no private key material', () => {
  const swagger = keyVaultSwagger(join(VECTORS_DIR, 'keyvault'));
  assert.deepEqual(
    tv.records.flatMap((r) => swagger.validate(r.method, r.path, r.status, r.body, r.operationId)),
    [],
  );
  assertNoPrivateMaterial(tv.records);
});
