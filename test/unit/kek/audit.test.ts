import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { AuditedProvider, KEY_WATCHER, REFRESH_AHEAD } from '../../../src/kek/audit';
import { LocalKekProvider } from '../../../src/kek/local';
import { createLogger } from '../../../src/log/logger';

/** A logger whose JSON lines land in an array. */
function capture(): { lines: Array<Record<string, unknown>>; log: ReturnType<typeof createLogger> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      for (const line of String(chunk).split('\n')) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { lines, log: createLogger('info', sink) };
}

test('one audit line per KEK operation: operation, key id, outcome, latency, caller — never the DEK', async () => {
  const { lines, log } = capture();
  const inner = new LocalKekProvider({
    name: 'audit',
    versions: [{ version: 'a'.repeat(32), key: randomBytes(32).toString('base64'), enabled: true }],
  });
  const provider = new AuditedProvider(inner, 'pay', log);
  const dek = randomBytes(32);
  const wrapped = await provider.wrap(dek, undefined, { caller: 'Encrypt', peer: 'unix:/s' });
  await provider.unwrap(wrapped.keyId, wrapped.algorithm, wrapped.wrapped);
  await assert.rejects(provider.unwrap(wrapped.keyId, 'RSA-OAEP-256', wrapped.wrapped));
  await new Promise((r) => setTimeout(r, 50)); // pino flushes asynchronously
  const audit = lines.filter((l) => l['audit'] === 'kek');
  assert.equal(audit.length, 3);
  assert.deepEqual(
    audit.map((l) => [l['operation'], l['outcome'], l['caller']]),
    [
      ['wrapKey', 'success', 'Encrypt'],
      ['unwrapKey', 'success', 'background'],
      ['unwrapKey', 'CIPHERTEXT_MALFORMED', 'background'],
    ],
  );
  for (const line of audit) {
    assert.equal(line['keyId'], wrapped.keyId);
    assert.equal(line['alias'], 'pay');
    assert.equal(typeof line['latencyMs'], 'number');
  }
  assert.equal(audit[0]?.['peer'], 'unix:/s');
  const text = JSON.stringify(lines);
  assert.ok(
    !text.includes(dek.toString('hex')) && !text.includes(dek.toString('base64')),
    'no DEK in the logs',
  );
});

test('the identity access control names for a call is in the audit lines of that call only', async () => {
  const { lines, log } = capture();
  const inner = new LocalKekProvider({
    name: 'audit',
    versions: [{ version: 'b'.repeat(32), key: randomBytes(32).toString('base64'), enabled: true }],
  });
  const provider = new AuditedProvider(inner, 'pay', log);
  const billing = { caller: 'Encrypt', peer: 'unknown', identity: 'billing' };
  await provider.wrap(randomBytes(32), undefined, billing);
  await provider.wrap(randomBytes(32), undefined, { caller: 'Encrypt', peer: 'unknown' });
  await provider.wrap(randomBytes(32)); // no caller: a background call
  await new Promise((r) => setTimeout(r, 50));
  const audit = lines.filter((l) => l['audit'] === 'kek');
  assert.deepEqual(
    audit.map((l) => [l['caller'], l['identity']]),
    [
      ['Encrypt', 'billing'],
      ['Encrypt', undefined],
      ['background', undefined],
    ],
  );
});

test('background callers are named: every provider operation passes its caller to the audit line', async () => {
  const { lines, log } = capture();
  const inner = new LocalKekProvider({
    name: 'audit',
    versions: [{ version: 'c'.repeat(32), key: randomBytes(32).toString('base64'), enabled: true }],
  });
  const provider = new AuditedProvider(inner, 'pay', log);
  const admin = { caller: 'admin:RevokeKey', peer: 'unix:/a', identity: 'admin' };
  const wrapped = await provider.wrap(randomBytes(32), undefined, REFRESH_AHEAD);
  await provider.unwrap(wrapped.keyId, wrapped.algorithm, wrapped.wrapped, undefined, KEY_WATCHER);
  await provider.status(wrapped.keyId, undefined, undefined, KEY_WATCHER);
  await provider.refreshCurrentVersion(undefined, admin);
  await new Promise((r) => setTimeout(r, 50));
  const audit = lines.filter((l) => l['audit'] === 'kek');
  assert.deepEqual(
    audit.map((l) => [l['operation'], l['caller'], l['identity']]),
    [
      ['wrapKey', 'refresh-ahead', undefined],
      ['unwrapKey', 'key-watcher', undefined],
      ['getKey', 'key-watcher', undefined],
      ['getLatest', 'admin:RevokeKey', 'admin'],
    ],
  );
});
