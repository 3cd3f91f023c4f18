/**
 * The dev vault's TLS material (src/devvault/tls.ts): made once with the right names, usages and file
 * modes, reused on later starts, the server certificate re-issued under the same CA when it nears
 * expiry, and unusable files refused with an error naming them.
 */
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { DevVaultTlsError, loadOrCreateTls } from '../../../src/devvault/tls';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-dv-tls-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const DAY = 86_400_000;

test('first start makes a CA and a server certificate for localhost, 127.0.0.1 and ::1', async () => {
  const dir = tempDir();
  const tls = await loadOrCreateTls(dir);
  const ca = new X509Certificate(tls.caPem);
  const server = new X509Certificate(tls.certPem);
  assert.equal(tls.caFile, join(dir, 'tls', 'ca.pem'));
  assert.ok(ca.ca, 'the CA certificate is a CA');
  assert.ok(!server.ca, 'the server certificate is not a CA');
  assert.ok(server.checkIssued(ca) && server.verify(ca.publicKey), 'the CA signed the server certificate');
  assert.ok(server.checkHost('localhost'));
  assert.ok(server.checkHost('sealbox.localhost'));
  assert.ok(server.checkIP('127.0.0.1'));
  assert.ok(server.checkIP('::1'));
  assert.equal(server.checkHost('example.com'), undefined);
  assert.deepEqual(server.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'extended key usage: serverAuth only');
  const mode = (f: string) => statSync(join(dir, 'tls', f)).mode & 0o777;
  assert.equal(mode('ca-key.pem'), 0o600);
  assert.equal(mode('server-key.pem'), 0o600);
  assert.equal(statSync(join(dir, 'tls')).mode & 0o777, 0o700);
});

test('later starts reuse every file', async () => {
  const dir = tempDir();
  const first = await loadOrCreateTls(dir);
  const second = await loadOrCreateTls(dir);
  assert.deepEqual(second, first);
});

test('a server certificate near expiry is re-issued under the same CA', async () => {
  const dir = tempDir();
  const first = await loadOrCreateTls(dir);
  const later = new Date(Date.now() + 825 * DAY);
  const renewed = await loadOrCreateTls(dir, later);
  assert.equal(renewed.caPem, first.caPem, 'clients keep trusting the same CA');
  assert.notEqual(renewed.certPem, first.certPem);
  const cert = new X509Certificate(renewed.certPem);
  assert.ok(Date.parse(cert.validTo) > later.getTime() + 800 * DAY);
  assert.ok(cert.checkIssued(new X509Certificate(first.caPem)));
});

test('unusable TLS files are refused, naming the file', async (t) => {
  const cases: ReadonlyArray<{ name: string; damage: (dir: string) => void; file: string; problem: RegExp }> =
    [
      {
        name: 'CA key missing',
        damage: (d) => unlinkSync(join(d, 'tls', 'ca-key.pem')),
        file: 'ca-key.pem',
        problem: /missing/,
      },
      {
        name: 'CA not PEM',
        damage: (d) => writeFileSync(join(d, 'tls', 'ca.pem'), 'junk'),
        file: 'ca.pem',
        problem: /not a PEM certificate/,
      },
      {
        name: 'CA key of another CA',
        damage: (d) =>
          writeFileSync(join(d, 'tls', 'ca-key.pem'), readFileSync(join(d, 'tls', 'server-key.pem'))),
        file: 'ca-key.pem',
        problem: /does not match its certificate/,
      },
      {
        name: 'server key missing',
        damage: (d) => unlinkSync(join(d, 'tls', 'server-key.pem')),
        file: 'server-key.pem',
        problem: /missing/,
      },
    ];
  for (const c of cases) {
    await t.test(c.name, async () => {
      const dir = tempDir();
      await loadOrCreateTls(dir);
      c.damage(dir);
      await assert.rejects(loadOrCreateTls(dir), (err: unknown) => {
        assert.ok(err instanceof DevVaultTlsError, String(err));
        assert.ok(err.message.includes(join(dir, 'tls', c.file)), err.message);
        assert.match(err.message, c.problem);
        return true;
      });
    });
  }
  await t.test('a server certificate from another CA', async () => {
    const a = tempDir();
    const b = tempDir();
    await loadOrCreateTls(a);
    await loadOrCreateTls(b);
    for (const f of ['server.pem', 'server-key.pem'])
      writeFileSync(join(a, 'tls', f), readFileSync(join(b, 'tls', f)));
    await assert.rejects(loadOrCreateTls(a), /server\.pem: was not issued by the CA/);
  });
});
