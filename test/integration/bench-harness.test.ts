/**
 * The benchmark harness works end to end: `bench/index.js --tiny` runs every benchmark (except the
 * 1 GiB RSS check) from this build and writes well-formed results. Only the shape of the output is
 * checked — never a timing or a throughput figure, which mean nothing on a shared CI machine.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

/** <build>/bench/index.js, next to <build>/test/integration. */
const BENCH_INDEX = join(__dirname, '..', '..', 'bench', 'index.js');
const BENCHMARKS = [
  'throughput',
  'unary',
  'batch',
  'cache',
  'storm',
  'esdk',
  'fleet',
  'soak',
  'pool',
  'kms',
] as const;

let dir: string;
let exitCode: number | null;
let stdout = '';
let stderr = '';
const results = new Map<string, Record<string, unknown>>();

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sealbox-bench-test-'));
  const child = spawn(process.execPath, [BENCH_INDEX, '--tiny'], {
    env: { ...process.env, SEALBOX_BENCH_RESULTS_DIR: dir },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (c: Buffer) => {
    stdout += c.toString('utf8');
  });
  child.stderr.on('data', (c: Buffer) => {
    stderr += c.toString('utf8');
  });
  exitCode = await new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
    const name = file.replace(/-\d{8}T\d{6}Z\.json$/, '');
    results.set(name, JSON.parse(readFileSync(join(dir, file), 'utf8')) as Record<string, unknown>);
  }
});

after(() => {
  rmSync(dir, { recursive: true, force: true });
});

const tail = () => `stderr (last 3000 chars):\n${stderr.slice(-3000)}`;

function result(name: string): Record<string, unknown> {
  const r = results.get(name);
  assert.ok(
    r,
    `bench/results/${name}-<ts>.json was written; files: ${readdirSync(dir).join(', ')}\n${tail()}`,
  );
  return r;
}

function isCount(v: unknown): boolean {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0;
}

function assertFigures(where: string, obj: Record<string, unknown>, keys: string[]): void {
  for (const k of keys)
    assert.ok(isCount(obj[k]), `${where}.${k} is a non-negative number: ${JSON.stringify(obj[k])}`);
}

test('the tiny profile exits 0 and writes one JSON and one SVG per benchmark plus a summary', () => {
  assert.equal(exitCode, 0, tail());
  for (const name of [...BENCHMARKS, 'summary']) {
    const r = result(name);
    assert.equal(r['name'], name);
    assert.equal(r['profile'], 'tiny');
    assert.ok(!Number.isNaN(Date.parse(String(r['startedAt']))), `${name}.startedAt is a date`);
    assert.ok(isCount(r['durationSeconds']));
    assert.equal(typeof r['environment'], 'object');
    const chart = String(r['chart']);
    assert.match(chart, /\.svg$/);
    assert.ok(existsSync(chart), `${chart} exists`);
    assert.match(readFileSync(chart, 'utf8').slice(0, 200), /^<svg[\s>]/);
  }
  assert.match(stdout, /## Summary \(tiny\)/);
});

test('throughput: every case and ratio', () => {
  const r = result('throughput');
  const cases = r['cases'] as Record<string, Record<string, unknown>>;
  for (const id of ['echo-1', 'echo-8', 'workers-encrypt-1', 'inline-encrypt-1', 'inline-decrypt-1']) {
    assert.ok(cases[id], `case ${id}`);
    assertFigures(`cases.${id}`, cases[id]!, ['bytesPerSecond', 'serverCpuSecondsPerGB']);
    assert.equal(cases[id]!['failures'], 0);
  }
  assert.equal(typeof r['ratios'], 'object');
  assert.ok(Array.isArray(r['chartRatios']));
});

test('unary: echo, protobuf echo, Encrypt and Decrypt cases with req/s, latency percentiles and server CPU per call', () => {
  const r = result('unary');
  const cases = r['cases'] as Array<Record<string, unknown>>;
  assert.ok(Array.isArray(cases));
  assert.deepEqual(
    new Set(cases.map((c) => c['op'])),
    new Set(['echo', 'pb-echo-encrypt', 'pb-echo-decrypt', 'encrypt', 'decrypt']),
  );
  for (const c of cases) {
    assertFigures(`cases[${c['id']}]`, c, [
      'payloadBytes',
      'concurrency',
      'reqPerSecond',
      'p50Ms',
      'p99Ms',
      'p999Ms',
      'serverCpuUsPerCall',
      'clientCpuUsPerCall',
    ]);
    assert.equal(c['failed'], 0, `${c['id']}: ${JSON.stringify(c['errors'])}`);
  }
  const vault = r['vault'] as { latency: Record<string, unknown>; throttling: unknown; keyId: unknown };
  assertFigures('vault.latency', vault.latency, ['fixedMs', 'jitterMs']);
  assert.equal(vault.throttling, true);
  assert.equal(typeof vault.keyId, 'string');
  const ratios = r['ratios'] as Array<{ name: string; value: unknown }>;
  assert.ok(ratios.length >= 4 && ratios.every((x) => typeof x.name === 'string' && isCount(x.value)));
  // Both baselines for each sealbox case: the raw echo and the protobuf-shaped echo.
  const names = ratios.map((x) => x.name);
  for (const op of ['encrypt', 'decrypt']) {
    assert.ok(names.some((n) => n.startsWith(`unary ${op} `) && n.endsWith('sealbox ÷ protobuf echo req/s')));
    assert.ok(
      names.some(
        (n) => n.startsWith(`unary ${op} `) && n.endsWith('server CPU per call, sealbox ÷ protobuf echo'),
      ),
    );
  }
  const shape = r['pbEchoShape'] as { overheads: Record<string, unknown>; keyId: unknown };
  assert.equal(typeof shape.keyId, 'string');
  assertFigures('pbEchoShape.overheads', shape.overheads, Object.keys(shape.overheads));
  assert.ok(Object.keys(shape.overheads).length > 0);
});

test('batch: unary and batch cases with records/s, server CPU per record, expansion, and the main ratio', () => {
  const r = result('batch');
  const cases = r['cases'] as Array<Record<string, unknown>>;
  assert.ok(Array.isArray(cases));
  assert.deepEqual(
    new Set(cases.map((c) => `${c['api']} ${c['op']}`)),
    new Set(['unary encrypt', 'unary decrypt', 'batch encrypt', 'batch decrypt']),
  );
  for (const c of cases) {
    assertFigures(`cases[${c['id']}]`, c, [
      'recordBytes',
      'batchSize',
      'recordsPerSecond',
      'serverCpuUsPerRecord',
      'clientCpuUsPerRecord',
    ]);
    assert.equal(c['failed'], 0, `${c['id']}: ${JSON.stringify(c['error'])}`);
    if (c['api'] === 'batch') assertFigures(`cases[${c['id']}]`, c, ['expansionBytes']);
  }
  const ratios = r['ratios'] as Array<{ name: string; value: unknown; main?: boolean }>;
  assert.ok(ratios.some((x) => x.main && /batch of \d+ ÷ unary/.test(x.name) && isCount(x.value)));
});

test('cache: on and off with req/s, vault calls per 1,000 operations and throttling counts', () => {
  const r = result('cache');
  const cases = r['cases'] as Record<string, Record<string, unknown>>;
  for (const mode of ['on', 'off']) {
    const c = cases[mode];
    assert.ok(c, `case ${mode}`);
    assertFigures(`cases.${mode}`, c, [
      'reqPerSecond',
      'operations',
      'vaultCallsPer1000',
      'throttlingErrors',
    ]);
    assertFigures(`cases.${mode}.vault`, c['vault'] as Record<string, unknown>, [
      'wrapKey',
      'unwrapKey',
      'getKey',
      'throttled',
    ]);
  }
  const names = (r['ratios'] as Array<{ name: string }>).map((x) => x.name);
  assert.ok(names.includes('cache on ÷ off: Encrypt req/s'));
});

test('storm: 1 DEK and 100 DEKs (checked from the headers) plus the echo baseline', () => {
  const r = result('storm');
  const cases = r['cases'] as Record<string, Record<string, unknown>>;
  assert.equal(cases['1-dek']?.['distinctDeks'], 1);
  assert.equal(cases['100-deks']?.['distinctDeks'], 100);
  for (const id of ['1-dek', '100-deks', 'echo']) {
    assert.ok(cases[id], `case ${id}`);
    assertFigures(`cases.${id}`, cases[id]!, ['drainSeconds']);
    assert.equal(cases[id]!['failed'], 0);
  }
  for (const id of ['1-dek', '100-deks'])
    assertFigures(`cases.${id}`, cases[id]!, ['unwrapKey', 'getKey', 'throttled']);
});

test('esdk: three ESDK configurations that round-trip, and sealbox over gRPC', () => {
  const r = result('esdk');
  const esdk = r['esdk'] as Record<string, Record<string, unknown>>;
  for (const id of ['esdk-default', 'esdk-unsigned-4k', 'esdk-unsigned-64k']) {
    assert.ok(esdk[id], `ESDK case ${id}`);
    assertFigures(`esdk.${id}`, esdk[id]!, [
      'bytesPerSecond',
      'cpuSecondsPerGB',
      'messages',
      'backingMaterialsCalls',
    ]);
    assert.equal(esdk[id]!['verified'], true);
  }
  assertFigures('sealbox', r['sealbox'] as Record<string, unknown>, ['bytesPerSecond']);
  assert.equal((r['ratios'] as unknown[]).length, 3);
});

test('fleet: no 429s at the recommended poll intervals, some at the aggressive one', () => {
  const r = result('fleet');
  const cases = r['cases'] as Record<string, Record<string, unknown>>;
  const throttled = (id: string) => {
    const c = cases[id];
    assert.ok(c, `case ${id}`);
    assertFigures(`cases.${id}`, c, ['sidecars', 'getAttempts', 'expectedPerWindow', 'maxInAnyWindow']);
    assert.ok((c['getAttempts'] as number) > 0, `${id}: the watchers made requests`);
    const vault = c['vault'] as Record<string, unknown>;
    assertFigures(`cases.${id}.vault`, vault, ['getKey', 'throttled']);
    return vault['throttled'] as number;
  };
  for (const id of ['rsa2048-recommended-rolling', 'rsaHsm4096-recommended-rolling'])
    assert.equal(throttled(id), 0, `${id}: no 429s at the recommended poll interval`);
  assert.ok(throttled('rsaHsm4096-aggressive-rolling') > 0, 'the aggressive poll interval is throttled');
});

test('soak: samples of every phase, baseline / peak / after figures, verdicts, no failures', () => {
  const r = result('soak');
  const samples = r['samples'] as Array<Record<string, unknown>>;
  assert.ok(Array.isArray(samples));
  assert.deepEqual(new Set(samples.map((s) => s['phase'])), new Set(['baseline', 'load', 'settle']));
  for (const s of samples) {
    assert.equal(typeof s['t'], 'number');
    assertFigures(`samples[t=${s['t']}]`, s, ['rssBytes', 'fds']); // from /proc: always there
  }
  // From /metrics (a scrape may time out on a loaded machine, so not necessarily every second).
  for (const phase of ['baseline', 'load', 'settle']) {
    const scraped = samples.filter((s) => s['phase'] === phase && isCount(s['heapUsedBytes']));
    assert.ok(scraped.length > 0, `a ${phase} sample with metrics`);
    assertFigures(`${phase} sample`, scraped[0]!, ['externalBytes', 'loopP99Ms']);
  }
  for (const part of ['baseline', 'peak', 'after'])
    assertFigures(part, r[part] as Record<string, unknown>, ['rss', 'fds']);
  const verdicts = r['verdicts'] as Record<string, { ok: unknown; text: unknown }>;
  for (const name of ['fds', 'rss', 'heap', 'rssTrend']) {
    assert.equal(typeof verdicts[name]?.ok, 'boolean', `verdicts.${name}.ok`);
    assert.equal(typeof verdicts[name]?.text, 'string', `verdicts.${name}.text`);
  }
  assert.deepEqual(r['failures'], []);
  const client = r['streamClient'] as Record<string, unknown>;
  assert.equal(client['verified'], true);
  assert.equal(client['failedCalls'], 0);
  const unary = r['unaryClients'] as Record<string, Record<string, unknown>>;
  for (const op of ['encrypt', 'decrypt']) {
    assertFigures(`unaryClients.${op}`, unary[op]!, ['totalOk', 'skipped']);
    assert.equal(unary[op]!['totalFailed'], 0, `${op}: ${JSON.stringify(unary[op]!['errors'])}`);
  }
});

test('summary: every benchmark exited 0 and its main ratios were collected', () => {
  const r = result('summary');
  const benchmarks = r['benchmarks'] as Array<{ bench: string; exitCode: number; results: string[] }>;
  assert.deepEqual(
    benchmarks.map((b) => b.bench),
    [...BENCHMARKS],
  );
  for (const b of benchmarks) {
    assert.equal(b.exitCode, 0, b.bench);
    assert.ok(
      b.results.some((p) => p.endsWith('.json')) && b.results.some((p) => p.endsWith('.svg')),
      b.bench,
    );
  }
  const ratios = r['ratios'] as Array<{ bench: string; name: string; value: unknown }>;
  assert.deepEqual(new Set(ratios.map((x) => x.bench)), new Set(BENCHMARKS));
  assert.ok(ratios.every((x) => typeof x.name === 'string' && isCount(x.value)));
});

test('pool: workers and inline cases with MB/s, s/GB, event-loop delay and the unary probe; ratios', () => {
  const r = result('pool');
  const cases = r['cases'] as Record<string, Record<string, unknown>>;
  const ids = Object.keys(cases);
  for (const mode of ['inline', 'workers']) {
    const c = ids.filter((id) => cases[id]!['mode'] === mode && Number(cases[id]!['cores']) > 0);
    assert.ok(c.length > 0, `${mode} cases: ${ids.join(', ')}`);
    for (const id of c) {
      assertFigures(`cases.${id}`, cases[id]!, ['bytesPerSecond', 'serverCpuSecondsPerGB']);
      assertFigures(`cases.${id}.loopDelay`, cases[id]!['loopDelay'] as Record<string, unknown>, [
        'p50Ms',
        'p99Ms',
        'maxMs',
      ]);
      assertFigures(`cases.${id}.probe`, cases[id]!['probe'] as Record<string, unknown>, ['p99Ms']);
      assert.equal(cases[id]!['failures'], 0, id);
    }
  }
  assert.ok(
    ids.some((id) => cases[id]!['connections'] === 4),
    'a case over 4 connections',
  );
  const ratios = r['ratios'] as Array<{ name: string; main?: boolean }>;
  assert.ok(ratios.some((x) => x.main && /workers ÷ inline MB\/s/.test(x.name)));
  assert.ok(ratios.some((x) => /over 4 ÷ 1 connections/.test(x.name)));
});

test('kms: KMS and envelope Encrypt/Decrypt of 32-byte seeds with calls/s, p99, server CPU and vault calls per 1,000', () => {
  const r = result('kms');
  const cases = r['cases'] as Array<Record<string, unknown>>;
  assert.deepEqual(
    new Set(cases.map((c) => `${c['face']} ${c['op']}`)),
    new Set(['kms encrypt', 'kms decrypt', 'envelope encrypt', 'envelope decrypt']),
  );
  for (const c of cases) {
    assertFigures(`cases[${c['id']}]`, c, [
      'concurrency',
      'calls',
      'callsPerSecond',
      'p50Ms',
      'p99Ms',
      'vaultCallsPer1000',
    ]);
    assert.ok((c['calls'] as number) > 0, `${c['id']} made calls`);
    assert.equal(c['failed'], 0, String(c['id']));
  }
  const ratios = r['ratios'] as Array<{ name: string; value: unknown }>;
  assert.ok(ratios.some((x) => x.name.includes('KMS ÷ envelope calls/s') && isCount(x.value)));
});
