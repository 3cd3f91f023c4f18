/**
 * Metrics end to end with a real Prometheus (Debian package "prometheus", /usr/bin/prometheus and
 * /usr/bin/promtool): sealbox, with its only key alias on an RSA key in the embedded dev vault
 * (real Azure SDK over HTTPS), serves /metrics; Prometheus scrapes it every second with
 * deploy/prometheus/alerts.yml loaded; the test drives gRPC calls and reads the numbers back through
 * Prometheus's HTTP API (/api/v1/query, /api/v1/alerts), cross-checked against the dev vault's own
 * counters. promtool checks the exposition text and the alert rules.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeyClient } from '@azure/keyvault-keys';
import { credentials } from '@grpc/grpc-js';
import { loadApi } from '../../src/api/proto';
import { decrypt, encrypt, encryptStream, errorCode } from '../../src/client/client';
import {
  type DevVault,
  devVaultClientOptions,
  sealboxKeyConfig,
  startDevVault,
  staticTokenCredential,
} from '../../src/devvault';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';
import { REPO_ROOT } from '../helpers/paths';

const PROMETHEUS = '/usr/bin/prometheus';
const PROMTOOL = '/usr/bin/promtool';
const ALERTS = join(REPO_ROOT, 'deploy', 'prometheus', 'alerts.yml');
const ALERT_TESTS = join(REPO_ROOT, 'deploy', 'prometheus', 'alerts.test.yml');
const TOKEN = 'prometheus-tests';
const KEY_NAME = 'metrics-rsa';
/** The harness's alias, rebound to the dev vault's key: the only alias, so readiness hangs on it. */
const ALIAS = 'test';
const ENCRYPTS = 40;
const DECRYPTS = 6;
const PLAINTEXT_BYTES = 1000;
/** How long to wait for a value to show up in Prometheus (scrape interval 1 s). */
const SETTLE_MS = 20_000;

let dir: string;
let vault: DevVault;
let keys: KeyClient;
let box: TestSealbox;
let adminSocket: string;
let prometheus: ChildProcess | undefined;
let prometheusLog = '';
let api: string;
let keyVersion: string;

before(async () => {
  for (const binary of [PROMETHEUS, PROMTOOL]) {
    if (!existsSync(binary)) {
      throw new Error(
        `${binary} is missing: this test runs a real Prometheus. Install the Debian package "prometheus" ` +
          '(apt-get install prometheus; .ci/run does this).',
      );
    }
  }
  dir = mkdtempSync(join(tmpdir(), 'sealbox-prometheus-'));
  vault = await startDevVault({
    dataDir: join(dir, 'vault'),
    identities: {
      [TOKEN]: { name: 'sealbox', permissions: ['get', 'create', 'update', 'wrapKey', 'unwrapKey'] },
    },
  });
  keys = new KeyClient(vault.url, staticTokenCredential(TOKEN), devVaultClientOptions(vault));
  const key = await keys.createRsaKey(KEY_NAME, { keySize: 2048 });
  keyVersion = key.properties.version!;

  adminSocket = join(dir, 'admin.sock');
  box = await startTestSealbox({
    listen: { adminSocket },
    keys: {
      [ALIAS]: sealboxKeyConfig(vault, KEY_NAME, TOKEN),
    },
    // Checks happen when the test asks (watcher.checkNow), not on a timer.
    revocation: { pollIntervalMs: 3_600_000 },
    metrics: { listen: { host: '127.0.0.1', port: 0 } },
  });
  assert.ok(box.sealbox.metricsUrl, 'sealbox exposes its metrics URL');
  const target = new URL(box.sealbox.metricsUrl).host;

  const port = await freePort();
  api = `http://127.0.0.1:${port}`;
  const configFile = join(dir, 'prometheus.yml');
  writeFileSync(
    configFile,
    JSON.stringify({
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      rule_files: [ALERTS],
      scrape_configs: [
        { job_name: 'sealbox', metrics_path: '/metrics', static_configs: [{ targets: [target] }] },
      ],
    }),
  );
  const child = spawn(
    PROMETHEUS,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${join(dir, 'tsdb')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  prometheus = child;
  const keep = (chunk: Buffer) => {
    prometheusLog = (prometheusLog + chunk.toString()).slice(-8192);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const deadline = Date.now() + 20_000;
  for (;;) {
    assert.equal(child.exitCode, null, `prometheus exited (${child.exitCode}):\n${prometheusLog}`);
    try {
      if ((await fetch(`${api}/-/ready`)).ok) break;
    } catch {
      // not listening yet
    }
    assert.ok(Date.now() < deadline, `prometheus not ready after 20 s:\n${prometheusLog}`);
    await sleep(100);
  }
});

after(async () => {
  if (prometheus && prometheus.exitCode === null) {
    const exited = new Promise((resolve) => prometheus!.once('exit', resolve));
    prometheus.kill('SIGTERM');
    const killed = await Promise.race([exited.then(() => true), sleep(5_000).then(() => false)]);
    if (!killed) {
      prometheus.kill('SIGKILL');
      await exited;
    }
  }
  await box?.close();
  await vault?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** A TCP port nobody listens on right now. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** An instant query's single value (undefined when the result is empty). */
async function query(expr: string): Promise<number | undefined> {
  const res = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(expr)}`);
  const body = (await res.json()) as {
    status: string;
    error?: string;
    data?: { result: Array<{ value: [number, string] }> };
  };
  assert.equal(body.status, 'success', `query ${expr}: ${body.error}`);
  const result = body.data!.result;
  assert.ok(result.length <= 1, `query ${expr} returned ${result.length} series`);
  return result[0] ? Number(result[0].value[1]) : undefined;
}

/** Waits until Prometheus answers `expected` for `expr` (scrapes lag the calls), then asserts it. */
async function settles(expr: string, expected: number): Promise<void> {
  const deadline = Date.now() + SETTLE_MS;
  let last: number | undefined;
  for (;;) {
    last = await query(expr);
    if (last === expected) return;
    if (Date.now() > deadline) break;
    await sleep(250);
  }
  assert.equal(last, expected, `${expr} after ${SETTLE_MS} ms\n${prometheusLog}`);
}

/** Runs a command with `input` on stdin; resolves with its exit code and output. */
function run(
  command: string,
  args: string[],
  input?: string,
): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.end(input ?? '');
  });
}

test('promtool accepts the alert rules and their unit tests pass', async () => {
  const check = await run(PROMTOOL, ['check', 'rules', ALERTS]);
  assert.equal(check.code, 0, check.output);
  assert.match(check.output, /SUCCESS: \d+ rules found/);
  const unit = await run(PROMTOOL, ['test', 'rules', ALERT_TESTS]);
  assert.equal(unit.code, 0, unit.output);
});

test('Prometheus scrapes sealbox and loads the rules', async () => {
  await settles('up{job="sealbox"}', 1);
  const rules = (await (await fetch(`${api}/api/v1/rules`)).json()) as {
    data: { groups: Array<{ name: string; rules: Array<{ name: string; health: string }> }> };
  };
  const group = rules.data.groups.find((g) => g.name === 'sealbox');
  assert.ok(group, 'the sealbox rule group is loaded');
  assert.ok(group.rules.length >= 6);
  for (const rule of group.rules) assert.equal(rule.health === 'err', false, `${rule.name} evaluates`);
});

test(`${ENCRYPTS} encrypts on one key: Prometheus sees ${ENCRYPTS} Encrypt calls and exactly one wrapKey`, async () => {
  vault.resetCounters();
  const plaintext = Buffer.alloc(PLAINTEXT_BYTES, 7);
  // The first call wraps the DEK; the rest, concurrent, all hit the cache.
  const first = await encrypt(box.client, ALIAS, plaintext);
  const rest = await Promise.all(
    Array.from({ length: ENCRYPTS - 1 }, () => encrypt(box.client, ALIAS, plaintext)),
  );
  const sealed = [first, ...rest];
  for (const { ciphertext } of sealed.slice(0, DECRYPTS)) await decrypt(box.client, ciphertext);
  const missing = await encrypt(box.client, 'no-such-alias', plaintext).then(
    () => undefined,
    (e: unknown) => errorCode(e),
  );
  assert.equal(missing, 'KEY_NOT_FOUND');
  assert.equal(vault.counters()['wrapKey'] ?? 0, 1, 'the dev vault saw one wrapKey');
  assert.equal(vault.counters()['unwrapKey'] ?? 0, 1, 'the dev vault saw one unwrapKey');

  await settles('sum(sealbox_grpc_server_handled_total{method="Encrypt",code="OK"})', ENCRYPTS);
  await settles('sum(sealbox_grpc_server_handled_total{method="Encrypt",code="NOT_FOUND"})', 1);
  await settles('sum(sealbox_grpc_server_handled_total{method="Decrypt",code="OK"})', DECRYPTS);
  await settles('sum(sealbox_grpc_server_handling_seconds_count{method="Encrypt"})', ENCRYPTS + 1);
  await settles('sealbox_grpc_server_errors_total{method="Encrypt",error_code="KEY_NOT_FOUND"}', 1);
  await settles('sum(sealbox_vault_requests_total{operation="wrapKey"})', 1);
  await settles('sealbox_vault_requests_total{operation="wrapKey",outcome="success"}', 1);
  await settles('sealbox_vault_requests_total{operation="unwrapKey",outcome="success"}', 1);
  await settles('sealbox_vault_request_seconds_count{operation="wrapKey"}', 1);
  await settles('sealbox_dek_cache_hits_total{side="encrypt"}', ENCRYPTS - 1);
  await settles('sealbox_dek_cache_misses_total{side="encrypt"}', 1);
  await settles('sealbox_dek_cache_hits_total{side="decrypt"}', DECRYPTS - 1);
  // Bytes received count every call, the refused one too.
  await settles(
    'sealbox_payload_bytes_total{method="Encrypt",direction="in"}',
    (ENCRYPTS + 1) * PLAINTEXT_BYTES,
  );
  await settles('sealbox_payload_bytes_total{method="Decrypt",direction="out"}', DECRYPTS * PLAINTEXT_BYTES);
  await settles('sealbox_dek_cache_entries{side="encrypt"}', 1);
  await settles('sealbox_inflight_bytes', 0);
  await settles('sealbox_ready', 1);
  // The watcher's first check runs at start, so the alias has a verdict at once (not "unknown").
  await settles(`sealbox_key_state{alias="${ALIAS}",state="enabled"}`, 1);
  await settles('sealbox_key_versions_watched', 1);
  await settles('sum(sealbox_key_watcher_requests_total) > bool 0', 1);
  assert.ok(((await query('sealbox_process_resident_memory_bytes')) ?? 0) > 0, 'process metrics are scraped');
});

test('the buffer pools report the free buffers they keep for reuse (part of idle RSS)', async () => {
  const MiB = 1024 * 1024;
  const data = randomBytes(4 * MiB);
  const pieces = [0, 1, 2, 3].map((i) => data.subarray(i * MiB, (i + 1) * MiB));
  const sealed = await encryptStream(box.client, ALIAS, pieces);
  assert.ok(sealed.data.length > data.length);
  // 1 MiB responses go back to their pool once written. (Request buffers go back too, but in this
  // one process the test's own grpc-js client reassembles the 1 MiB responses from that same pool:
  // test/unit/metrics covers the requests label.)
  await settles('sealbox_buffer_pool_bytes{pool="responses"} > bool 1000000', 1);
  await settles('sum(sealbox_buffer_pool_bytes) <= bool 67108864', 1);
});

test('promtool check metrics finds nothing to fix in /metrics', async () => {
  const text = await (await fetch(box.sealbox.metricsUrl!)).text();
  assert.match(text, /sealbox_grpc_server_handling_seconds_bucket\{/, 'histograms have observations');
  const lint = await run(PROMTOOL, ['check', 'metrics'], text);
  assert.equal(lint.output, '', 'promtool has no complaints');
  assert.equal(lint.code, 0);
});

test('an admin RevokeKey counts as a revocation with reason "admin"', async () => {
  const { Admin } = loadApi().sealbox.sealbox.v1;
  const admin = new Admin(`unix:${adminSocket}`, credentials.createInsecure());
  try {
    await new Promise<void>((resolve, reject) =>
      admin.RevokeKey({ keyAlias: ALIAS }, (err) => (err ? reject(err) : resolve())),
    );
  } finally {
    admin.close();
  }
  // The key is still enabled: the re-check serves it again, and only the admin eviction counts.
  await settles('sealbox_revocations_total{reason="admin"}', 1);
  await settles('sum(sealbox_revocations_total{reason!="admin"})', 0);
  await settles(`sealbox_key_state{alias="${ALIAS}",state="enabled"}`, 1);
  await settles(`sealbox_key_refused{alias="${ALIAS}"}`, 0);
  await settles('sealbox_ready', 1);
});

test('disabling the key: revocation counted, key state and readiness follow, the alert fires', async () => {
  await keys.updateKeyProperties(KEY_NAME, keyVersion, { enabled: false });
  await box.sealbox.watcher!.checkNow();
  const refused = await encrypt(box.client, ALIAS, Buffer.from('x')).then(
    () => undefined,
    (e: unknown) => errorCode(e),
  );
  assert.equal(refused, 'KEY_DISABLED');
  const readyz = await fetch(new URL('/readyz', box.sealbox.metricsUrl));
  assert.equal(readyz.status, 503, '/readyz answers from the health state');
  assert.equal((await fetch(new URL('/healthz', box.sealbox.metricsUrl))).status, 200);

  await settles('sealbox_revocations_total{reason="disabled"}', 1);
  await settles(`sealbox_key_state{alias="${ALIAS}",state="disabled"}`, 1);
  await settles(`sealbox_key_state{alias="${ALIAS}",state="enabled"}`, 0);
  await settles(`sealbox_key_refused{alias="${ALIAS}"}`, 1);
  await settles('sealbox_ready', 0);
  await settles('sum(sealbox_grpc_server_handled_total{method="Encrypt",code="FAILED_PRECONDITION"})', 1);
  await settles('sealbox_grpc_server_errors_total{method="Encrypt",error_code="KEY_DISABLED"}', 1);

  // SealboxKeyRevoked has no `for:`: it fires on the first evaluation that sees the increase.
  const deadline = Date.now() + SETTLE_MS;
  let alerts: Array<{ labels: Record<string, string>; state: string }> = [];
  while (Date.now() < deadline) {
    const body = (await (await fetch(`${api}/api/v1/alerts`)).json()) as { data: { alerts: typeof alerts } };
    alerts = body.data.alerts;
    if (alerts.some((a) => a.labels['alertname'] === 'SealboxKeyRevoked' && a.state === 'firing')) break;
    await sleep(250);
  }
  const fired = alerts.find((a) => a.labels['alertname'] === 'SealboxKeyRevoked' && a.state === 'firing');
  assert.ok(fired, `SealboxKeyRevoked fires; alerts: ${JSON.stringify(alerts)}`);
  assert.equal(fired.labels['reason'], 'disabled');
  // SealboxNotReady waits 2 minutes (`for: 2m`); within this test it is at most pending.
  assert.ok(
    !alerts.some((a) => a.labels['alertname'] === 'SealboxNotReady' && a.state === 'firing'),
    'SealboxNotReady is not firing yet',
  );
});
