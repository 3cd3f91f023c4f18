/**
 * The vault fault matrix: every fault the dev vault can inject (latency spike, 5xx burst, 429 storm,
 * dropped connections, a full outage), driven through the real path (gRPC → sealbox → Azure provider →
 * @azure/keyvault-keys over HTTPS → dev vault). Each case is a table stating, per request, the outcome
 * it must have:
 *
 *   OK                  the plaintext round-trips byte-exactly (from the DEK cache, or through the vault)
 *   UNAVAILABLE         with sealbox-error-code VAULT_UNAVAILABLE
 *   RESOURCE_EXHAUSTED  with sealbox-error-code VAULT_THROTTLED
 *
 * and checks that every request got exactly that: one outcome per request issued (none lost), never a
 * hang (every call carries a gRPC deadline far beyond any expected answer), vault attempts per call
 * bounded by retry.maxAttempts, retries spread by jitter, and recovery without restarting sealbox.
 *
 * Vault requests are counted on the vault side: the dev vault's response hook sees every answered
 * request (with its path, so per-key attribution works) and its `faults.dropped` counter every request
 * whose connection it dropped instead.
 *
 * Each case starts two sealboxes on the same key: `warm` (DEK cache on; warmed so it holds an active
 * encrypt DEK and one unwrapped DEK) and `cold` (cache off: every message is one vault call). Both are
 * warmed before faults start, so the SDK's challenge round trip and the current-version look-up are
 * done and every later vault request is one attempt of one wrap or unwrap.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomInt } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { after, before, type TestContext, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeyClient } from '@azure/keyvault-keys';
import { type ClientDuplexStream, Metadata, type ServiceError, status } from '@grpc/grpc-js';
import { errorCode } from '../../src/client/client';
import type { ConfigInput } from '../../src/config/config';
import {
  type DevVault,
  type DevVaultExchange,
  devVaultClientOptions,
  type KeyPermission,
  startDevVault,
  staticTokenCredential,
} from '../../src/devvault';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';

const TOKEN = 'vault-faults-test';
const PERMISSIONS: KeyPermission[] = ['get', 'create', 'update', 'wrapKey', 'unwrapKey'];
const identities = () => ({ [TOKEN]: { name: 'sealbox', permissions: [...PERMISSIONS] } });
const MAIN_KEY = 'vf-main';
/** Attempts per vault call in every case. */
const MAX_ATTEMPTS = 3;
/** The gRPC deadline of every call: far beyond any expected answer, so a hang shows as DEADLINE_EXCEEDED. */
const NO_HANG_MS = 20_000;
/** Retry settings whose deadline never cuts a call short: maxAttempts decides. */
const RETRY = { maxAttempts: MAX_ATTEMPTS, baseDelayMs: 50, maxDelayMs: 200, timeoutMs: 5000 };
const NO_FAULTS = {
  latency: { fixedMs: 0, jitterMs: 0 },
  errorRate: 0,
  dropRate: 0,
  throttling: { enabled: false },
};

let dir: string;
let vault: DevVault;
let keys: KeyClient;
/** Every Key Vault request the main dev vault answered, in order. */
const answered: { at: number; path: string; status: number }[] = [];

/** Vault requests so far: those answered, plus those whose connection was dropped unanswered. */
function vaultRequests(): number {
  return answered.length + (vault.counters()['faults.dropped'] ?? 0);
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sealbox-faults-'));
  vault = await startDevVault({
    dataDir: join(dir, 'vault'),
    identities: identities(),
    onResponse: (x: DevVaultExchange) =>
      answered.push({ at: performance.now(), path: x.path, status: x.status }),
  });
  keys = new KeyClient(vault.url, staticTokenCredential(TOKEN), devVaultClientOptions(vault));
  await keys.createOctKey(MAIN_KEY, { hsm: true, keySize: 256 });
  // The 429 storm's second alias ("patient", other retry settings) needs its own key of the same class.
  await keys.createOctKey(`${MAIN_KEY}-patient`, { hsm: true, keySize: 256 });
});

after(async () => {
  await vault.close();
  rmSync(dir, { recursive: true, force: true });
});

// ------------------------------------------------------------------------------------------------
// Requests and their outcomes

/** A plaintext and the ciphertext an OK encrypt returned for it. */
interface Sealed {
  readonly plaintext: Buffer;
  readonly ciphertext: Buffer;
}

/** The outcomes a request may be expected to have. */
type Expected = 'OK' | 'UNAVAILABLE' | 'RESOURCE_EXHAUSTED';
/** The sealbox-error-code trailer each failing outcome must carry. */
const TRAILER: Record<Expected, string | undefined> = {
  OK: undefined,
  UNAVAILABLE: 'VAULT_UNAVAILABLE',
  RESOURCE_EXHAUSTED: 'VAULT_THROTTLED',
};

/** What one request ended with. */
interface Outcome {
  /** gRPC status name ('OK', 'UNAVAILABLE', 'DEADLINE_EXCEEDED' for a hang…) or 'WRONG_PLAINTEXT'. */
  readonly status: string;
  /** The sealbox-error-code trailer. */
  readonly code?: string;
  readonly ms: number;
  /** An OK encrypt: checked for a byte-exact round trip once the vault is healthy again. */
  readonly sealed?: Sealed;
}

/** One row of a matrix: a request and the outcome it must have. */
interface Row {
  readonly name: string;
  /** Every outcome allowed (more than one only where the fault is random). */
  readonly expect: Expected | readonly Expected[];
  /** Vault requests this request must cause (checked when the matrix runs sequentially). */
  readonly vault?: number;
  /** A lower bound on the call's duration: it waited (e.g. for its deadline) rather than ending early. */
  readonly minMs?: number;
  readonly run: () => Promise<Outcome>;
}

class WrongPlaintext extends Error {}

async function outcomeOf(work: () => Promise<Sealed | undefined>): Promise<Outcome> {
  const started = performance.now();
  try {
    const sealed = await work();
    return { status: 'OK', ms: performance.now() - started, ...(sealed ? { sealed } : {}) };
  } catch (err) {
    const ms = performance.now() - started;
    if (err instanceof WrongPlaintext) return { status: 'WRONG_PLAINTEXT', ms };
    const grpcCode = (err as Partial<ServiceError>).code;
    const code = errorCode(err);
    return {
      status: typeof grpcCode === 'number' ? (status[grpcCode] ?? String(grpcCode)) : `THREW ${String(err)}`,
      ms,
      ...(code ? { code } : {}),
    };
  }
}

const options = () => ({ deadline: Date.now() + NO_HANG_MS });
const newPlaintext = () => randomBytes(500 + randomInt(3000));

function unaryEncrypt(box: TestSealbox, alias = 'pay', plaintext = newPlaintext()): Promise<Sealed> {
  return new Promise((resolve, reject) =>
    box.client.Encrypt({ keyAlias: alias, plaintext, context: {} }, new Metadata(), options(), (err, res) =>
      err || !res ? reject(err) : resolve({ plaintext, ciphertext: res.ciphertext }),
    ),
  );
}

function unaryDecrypt(box: TestSealbox, ciphertext: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    box.client.Decrypt({ ciphertext, expectedContext: {} }, new Metadata(), options(), (err, res) =>
      err || !res ? reject(err) : resolve(res.plaintext),
    ),
  );
}

/** Writes `messages` (small: no backpressure to respect), half-closes and collects the data output. */
function runStream<Req>(
  call: ClientDuplexStream<Req, { data?: Buffer; metadata?: unknown }>,
  messages: Req[],
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    call.on('data', (m: { data?: Buffer; metadata?: unknown }) => {
      if (!m.metadata && m.data) parts.push(m.data);
    });
    call.on('error', reject);
    call.on('end', () => resolve(Buffer.concat(parts)));
    for (const m of messages) call.write(m);
    call.end();
  });
}

async function streamEncrypt(box: TestSealbox, alias = 'pay'): Promise<Sealed> {
  const plaintext = newPlaintext();
  const call = box.client.EncryptStream(new Metadata(), options());
  const ciphertext = await runStream(call, [
    { init: { keyAlias: alias, context: {}, chunkSize: 0 } },
    { data: plaintext.subarray(0, 100) },
    { data: plaintext.subarray(100) },
  ]);
  return { plaintext, ciphertext };
}

function streamDecrypt(box: TestSealbox, ciphertext: Buffer): Promise<Buffer> {
  const call = box.client.DecryptStream(new Metadata(), options());
  return runStream(call, [{ data: ciphertext.subarray(0, 50) }, { data: ciphertext.subarray(50) }]);
}

const checked = (sealed: Sealed) => (plaintext: Buffer) => {
  if (!plaintext.equals(sealed.plaintext)) throw new WrongPlaintext();
  return undefined;
};

/** Request factories: each returns a fresh `run` for a row. */
const req = {
  encrypt:
    (box: TestSealbox, alias = 'pay') =>
    () =>
      outcomeOf(() => unaryEncrypt(box, alias)),
  decrypt: (box: TestSealbox, sealed: Sealed) => () =>
    outcomeOf(() => unaryDecrypt(box, sealed.ciphertext).then(checked(sealed))),
  encryptStream:
    (box: TestSealbox, alias = 'pay') =>
    () =>
      outcomeOf(() => streamEncrypt(box, alias)),
  decryptStream: (box: TestSealbox, sealed: Sealed) => () =>
    outcomeOf(() => streamDecrypt(box, sealed.ciphertext).then(checked(sealed))),
};

/**
 * Runs the rows and checks each outcome against its row; prints the table as test diagnostics. Rows
 * run one after the other, each one's vault requests counted on the main dev vault (unless `counted`
 * is false), or all at once (`concurrent`).
 */
async function runMatrix(
  t: TestContext,
  title: string,
  rows: readonly Row[],
  how: { concurrent?: boolean; counted?: boolean } = {},
): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  const requests: number[] = [];
  if (how.concurrent) {
    outcomes.push(...(await Promise.all(rows.map((row) => row.run()))));
  } else {
    for (const row of rows) {
      const before = vaultRequests();
      outcomes.push(await row.run());
      if (how.counted !== false) requests.push(vaultRequests() - before);
    }
  }
  report(t, title, rows, outcomes, requests);
  // Postcondition: one outcome per request issued; none vanished.
  assert.equal(outcomes.length, rows.length, `${title}: one outcome per request`);
  for (const [i, row] of rows.entries()) {
    const o = outcomes[i]!;
    const what = `${title} / ${row.name}`;
    const allowed: readonly string[] = [row.expect].flat();
    assert.ok(
      allowed.includes(o.status),
      `${what}: expected ${allowed.join(' or ')}, got ${o.status} ${o.code ?? ''}`,
    );
    assert.equal(o.code, TRAILER[o.status as Expected], `${what}: the sealbox-error-code trailer`);
    if (row.vault !== undefined && requests[i] !== undefined) {
      assert.equal(requests[i], row.vault, `${what}: vault requests`);
    }
    if (row.minMs !== undefined)
      assert.ok(o.ms >= row.minMs, `${what}: took ${o.ms} ms, at least ${row.minMs}`);
  }
  return outcomes;
}

function report(
  t: TestContext,
  title: string,
  rows: readonly Row[],
  outcomes: readonly Outcome[],
  requests: readonly number[],
): void {
  const got = (o: Outcome) => `${o.status}${o.code ? `/${o.code}` : ''}`;
  const expected = (row: Row) => [row.expect].flat().join('|');
  t.diagnostic(`${title}:`);
  if (rows.length > 12) {
    // Large tables: one line per (expected, got) pair.
    const tally = new Map<string, { n: number; maxMs: number }>();
    for (const [i, row] of rows.entries()) {
      const key = `expect ${expected(row).padEnd(18)} got ${got(outcomes[i]!)}`;
      const entry = tally.get(key) ?? { n: 0, maxMs: 0 };
      tally.set(key, { n: entry.n + 1, maxMs: Math.max(entry.maxMs, outcomes[i]!.ms) });
    }
    for (const [key, { n, maxMs }] of tally)
      t.diagnostic(`  ${n} × ${key} (slowest ${Math.round(maxMs)} ms)`);
    return;
  }
  for (const [i, row] of rows.entries()) {
    const o = outcomes[i]!;
    const n = requests[i] === undefined ? '' : `, ${requests[i]} vault request(s)`;
    t.diagnostic(
      `  ${row.name.padEnd(40)} expect ${expected(row).padEnd(18)} got ${got(o)} in ${Math.round(o.ms)} ms${n}`,
    );
  }
}

/** A request that first drops every cached DEK of `box`, so it needs the vault (a new DEK, an unwrap). */
function afterFlush(box: TestSealbox, run: () => Promise<Outcome>): () => Promise<Outcome> {
  return () => {
    box.sealbox.flushCache();
    return run();
  };
}

/** Every OK encrypt among `outcomes` decrypts (through `box`, vault healthy) to its exact plaintext. */
async function assertRoundTrips(box: TestSealbox, outcomes: readonly Outcome[]): Promise<number> {
  let n = 0;
  for (const o of outcomes) {
    if (!o.sealed) continue;
    const plaintext = await unaryDecrypt(box, o.sealed.ciphertext);
    assert.ok(plaintext.equals(o.sealed.plaintext), 'an OK encrypt round-trips byte-exactly');
    n++;
  }
  return n;
}

// ------------------------------------------------------------------------------------------------
// Sealboxes

function azureKey(keyName: string, retry: object, target: DevVault = vault) {
  return {
    provider: 'azure' as const,
    vaultUrl: target.url,
    keyName,
    credential: { kind: 'static-token' as const, token: TOKEN },
    caFile: target.caFile,
    retry,
  };
}

/** What a warmed pair of sealboxes starts with. */
interface Seed {
  /** Sealed by `warm` and decrypted by it: its DEK is in warm's decrypt cache (and is warm's active DEK). */
  readonly w1: Sealed;
  /** Sealed by `cold`. */
  readonly c1: Sealed;
  /** Sealed by `cold` under a DEK `warm` has never seen: a cold decrypt for `warm`. */
  readonly c2: Sealed;
}

interface Pair {
  readonly warm: TestSealbox;
  readonly cold: TestSealbox;
  readonly seed: Seed;
}

/**
 * Starts `warm` (cache on) and `cold` (cache off) on `keyName`, warms both (challenge, current version,
 * one wrap and one unwrap each), runs `fn`, then clears every fault and closes both.
 */
async function withPair<T>(
  options: {
    retry?: object;
    cache?: ConfigInput['cache'];
    coldAliases?: Record<string, object>;
    keyName?: string;
    target?: DevVault;
  },
  fn: (pair: Pair) => Promise<T>,
): Promise<T> {
  const keyName = options.keyName ?? MAIN_KEY;
  const target = options.target ?? vault;
  const retry = options.retry ?? RETRY;
  const aliases = (extra: Record<string, object> = {}) => ({
    pay: azureKey(keyName, retry, target),
    // Each extra alias has a key of its own (`${keyName}-${alias}`): one key may have one alias.
    ...Object.fromEntries(Object.entries(extra).map(([a, r]) => [a, azureKey(`${keyName}-${a}`, r, target)])),
  });
  const warm = await startTestSealbox({ cache: { enabled: true, ...options.cache }, keys: aliases() });
  const cold = await startTestSealbox({ cache: { enabled: false }, keys: aliases(options.coldAliases) });
  try {
    const w1 = await unaryEncrypt(warm);
    assert.ok((await unaryDecrypt(warm, w1.ciphertext)).equals(w1.plaintext));
    const c1 = await unaryEncrypt(cold);
    assert.ok((await unaryDecrypt(cold, c1.ciphertext)).equals(c1.plaintext));
    for (const alias of Object.keys(options.coldAliases ?? {})) await unaryEncrypt(cold, alias);
    const c2 = await unaryEncrypt(cold);
    return await fn({ warm, cold, seed: { w1, c1, c2 } });
  } finally {
    if (target === vault) vault.setFaults(NO_FAULTS);
    await Promise.all([warm.close(), cold.close()]);
  }
}

async function until(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 10_000) {
  const started = Date.now();
  while (!(await condition())) {
    if (Date.now() - started > timeoutMs) assert.fail(`timed out waiting for: ${what}`);
    await sleep(20);
  }
}

function cacheStats(box: TestSealbox) {
  return box.sealbox.stats().cache;
}

// ------------------------------------------------------------------------------------------------
// 1. Latency spike

test('1. latency spike past retry.timeoutMs: cache serves, cold calls UNAVAILABLE at their deadline, then recover', async (t) => {
  const timeoutMs = 700;
  const spikeMs = 3000;
  await withPair({ retry: { ...RETRY, timeoutMs } }, async ({ warm, cold, seed }) => {
    const before = vaultRequests();
    const warmBefore = cacheStats(warm);
    vault.setFaults({ latency: { fixedMs: spikeMs, jitterMs: 0 } });
    // All at once: a warm request must not queue behind a cold one.
    const cached = { expect: 'OK' } as const;
    // A cold call ends at its own deadline (timers never fire early), before the vault's answer (an
    // answer would make it OK).
    const deadline = { expect: 'UNAVAILABLE', minMs: timeoutMs - 5 } as const;
    const during = await runMatrix(
      t,
      `latency ${spikeMs} ms, retry.timeoutMs ${timeoutMs}`,
      [
        { name: 'warm encrypt (active DEK)', ...cached, run: req.encrypt(warm) },
        { name: 'warm encrypt stream (active DEK)', ...cached, run: req.encryptStream(warm) },
        { name: 'warm decrypt (cached DEK)', ...cached, run: req.decrypt(warm, seed.w1) },
        { name: 'warm decrypt stream (cached DEK)', ...cached, run: req.decryptStream(warm, seed.w1) },
        { name: 'warm decrypt (DEK not cached)', ...deadline, run: req.decrypt(warm, seed.c2) },
        { name: 'cold encrypt', ...deadline, run: req.encrypt(cold) },
        { name: 'cold encrypt stream', ...deadline, run: req.encryptStream(cold) },
        { name: 'cold decrypt', ...deadline, run: req.decrypt(cold, seed.c1) },
      ],
      { concurrent: true },
    );
    // Every row ended before the vault answered any request: the cached ones did not wait for it.
    assert.equal(vaultRequests() - before, 0, 'no vault answer before all eight calls ended');
    const warmAfter = cacheStats(warm);
    assert.equal(warmAfter.hits.encrypt - warmBefore.hits.encrypt, 2, 'both warm encrypts from the cache');
    assert.equal(warmAfter.hits.decrypt - warmBefore.hits.decrypt, 2, 'both warm decrypts from the cache');
    assert.equal(warmAfter.misses.encrypt, warmBefore.misses.encrypt, 'no warm encrypt needed the vault');
    assert.equal(warmAfter.misses.decrypt - warmBefore.misses.decrypt, 1, 'only the uncached DEK missed');
    // A new DEK is a cold operation too: with its cache flushed, the warm box needs the vault.
    const flushed = await runMatrix(
      t,
      'latency spike, warm cache flushed',
      [
        {
          name: 'warm encrypt after flushCache (new DEK)',
          ...deadline,
          run: afterFlush(warm, req.encrypt(warm)),
        },
      ],
      { counted: false },
    );
    const coldCalls = 5;

    // The spike ends: new cold calls succeed at once, no restart.
    vault.setFaults({ latency: { fixedMs: 0, jitterMs: 0 } });
    const recovered = await runMatrix(
      t,
      'latency back to 0',
      [
        { name: 'cold encrypt', expect: 'OK', run: req.encrypt(cold) },
        { name: 'cold decrypt', expect: 'OK', run: req.decrypt(cold, seed.c1) },
        { name: 'warm decrypt (DEK not cached)', expect: 'OK', run: req.decrypt(warm, seed.c2) },
        { name: 'warm decrypt (DEK flushed)', expect: 'OK', run: req.decrypt(warm, seed.w1) },
        { name: 'warm encrypt (new DEK)', expect: 'OK', run: req.encrypt(warm) },
      ],
      { concurrent: true },
    );
    // The attempts abandoned at the deadline are still sleeping in the vault; once they are answered,
    // the count shows one attempt per cold call: a timed-out attempt is not retried past the deadline.
    const expected = coldCalls + recovered.length;
    await until(
      'the delayed requests are answered',
      () => vaultRequests() - before >= expected,
      spikeMs + 5000,
    );
    await sleep(200);
    assert.equal(vaultRequests() - before, expected, 'exactly one attempt per cold call, none after');
    const checkedTrips = await assertRoundTrips(cold, [...during, ...flushed, ...recovered]);
    t.diagnostic(`round trips checked: ${checkedTrips}`);
  });
});

// ------------------------------------------------------------------------------------------------
// 2. 5xx burst

test('2. 5xx burst: cache serves, cold calls UNAVAILABLE after exactly maxAttempts requests, then recover', async (t) => {
  await withPair({}, async ({ warm, cold, seed }) => {
    vault.setFaults({ errorRate: 1 });
    const cached = { expect: 'OK', vault: 0 } as const;
    const exhausted = { expect: 'UNAVAILABLE', vault: MAX_ATTEMPTS } as const;
    const during = await runMatrix(t, 'errorRate 1 (500/503)', [
      { name: 'warm encrypt (active DEK)', ...cached, run: req.encrypt(warm) },
      { name: 'warm encrypt stream (active DEK)', ...cached, run: req.encryptStream(warm) },
      { name: 'warm decrypt (cached DEK)', ...cached, run: req.decrypt(warm, seed.w1) },
      { name: 'warm decrypt stream (cached DEK)', ...cached, run: req.decryptStream(warm, seed.w1) },
      { name: 'warm decrypt (DEK not cached)', ...exhausted, run: req.decrypt(warm, seed.c2) },
      { name: 'cold encrypt', ...exhausted, run: req.encrypt(cold) },
      { name: 'cold encrypt stream', ...exhausted, run: req.encryptStream(cold) },
      { name: 'cold decrypt', ...exhausted, run: req.decrypt(cold, seed.c1) },
      { name: 'cold decrypt stream', ...exhausted, run: req.decryptStream(cold, seed.c1) },
      {
        name: 'warm encrypt after flushCache (new DEK)',
        ...exhausted,
        run: afterFlush(warm, req.encrypt(warm)),
      },
      { name: 'warm decrypt (DEK flushed)', ...exhausted, run: req.decrypt(warm, seed.w1) },
    ]);
    vault.setFaults({ errorRate: 0 });
    const recovered = await runMatrix(t, 'errorRate back to 0', [
      { name: 'cold encrypt', expect: 'OK', vault: 1, run: req.encrypt(cold) },
      { name: 'cold decrypt', expect: 'OK', vault: 1, run: req.decrypt(cold, seed.c1) },
      { name: 'warm decrypt (DEK not cached)', expect: 'OK', vault: 1, run: req.decrypt(warm, seed.c2) },
      { name: 'warm decrypt (DEK flushed)', expect: 'OK', vault: 1, run: req.decrypt(warm, seed.w1) },
      { name: 'warm encrypt (new DEK)', expect: 'OK', vault: 1, run: req.encrypt(warm) },
      { name: 'warm encrypt (that DEK, cached)', expect: 'OK', vault: 0, run: req.encrypt(warm) },
    ]);
    t.diagnostic(`round trips checked: ${await assertRoundTrips(cold, [...during, ...recovered])}`);
  });
});

// ------------------------------------------------------------------------------------------------
// 3. 429 storm

test('3. 429 storm: within the limit OK, beyond it RESOURCE_EXHAUSTED; Retry-After is honoured; recovers', async (t) => {
  const windowMs = 2500;
  const limit = 3;
  // "pay" cannot wait out any hint (Retry-After is ≥ 1 s): it gives up at the first 429 instead of
  // sleeping into its deadline. "patient" can, and must not retry before the hint.
  const retry = { ...RETRY, timeoutMs: 1000 };
  const patient = { ...RETRY, timeoutMs: 6000 };
  await withPair({ retry, coldAliases: { patient } }, async ({ warm, cold, seed }) => {
    // A fresh window opens at the first counted request; warm-up requests are not counted in it.
    const configuredAt = performance.now();
    vault.setFaults({ throttling: { enabled: true, windowMs, limitsPer10s: { oct: limit } } });
    const throttled = { expect: 'RESOURCE_EXHAUSTED', vault: 1 } as const;
    const cached = { expect: 'OK', vault: 0 } as const;
    const storm = await runMatrix(t, `throttling: ${limit} key operations per ${windowMs} ms window`, [
      { name: 'cold encrypt (1st in window)', expect: 'OK', vault: 1, run: req.encrypt(cold) },
      { name: 'cold encrypt (2nd)', expect: 'OK', vault: 1, run: req.encrypt(cold) },
      { name: 'cold decrypt (3rd)', expect: 'OK', vault: 1, run: req.decrypt(cold, seed.c1) },
      { name: 'cold encrypt (beyond the limit)', ...throttled, run: req.encrypt(cold) },
      { name: 'cold decrypt (beyond the limit)', ...throttled, run: req.decrypt(cold, seed.c1) },
      { name: 'cold encrypt stream (beyond the limit)', ...throttled, run: req.encryptStream(cold) },
      { name: 'warm decrypt (DEK not cached)', ...throttled, run: req.decrypt(warm, seed.c2) },
      { name: 'warm encrypt (active DEK)', ...cached, run: req.encrypt(warm) },
      { name: 'warm decrypt (cached DEK)', ...cached, run: req.decrypt(warm, seed.w1) },
    ]);

    // A caller whose deadline fits the hint waits it out: 429, then after Retry-After (≥ 1 s) the
    // window has reopened and the retry is admitted. Retrying earlier would have drawn another 429.
    const from = answered.length;
    const waited = await runMatrix(t, 'a caller that can wait', [
      {
        name: 'cold encrypt, alias patient',
        expect: 'OK',
        vault: 2,
        minMs: 1000,
        run: req.encrypt(cold, 'patient'),
      },
    ]);
    const attempts = answered.slice(from);
    assert.deepEqual(
      attempts.map((a) => a.status),
      [429, 200],
      'throttled once, then admitted',
    );
    const gap = attempts[1]!.at - attempts[0]!.at;
    // The hint is the window's rest in whole seconds; the window opened after `configuredAt` and the
    // 429 was decided before it was answered, so the hint was at least this (2 ms for clock rounding).
    const hintAtLeast = Math.max(1, Math.ceil((configuredAt + windowMs - attempts[0]!.at - 2) / 1000)) * 1000;
    t.diagnostic(`retry ${Math.round(gap)} ms after the 429 (Retry-After ≥ ${hintAtLeast / 1000} s)`);
    assert.ok(gap >= hintAtLeast - 1, `no retry before the Retry-After hint (${hintAtLeast} ms): ${gap} ms`);

    const recovered = await runMatrix(t, 'the window reopened', [
      { name: 'cold encrypt', expect: 'OK', vault: 1, run: req.encrypt(cold) },
      { name: 'warm decrypt (DEK not cached)', expect: 'OK', vault: 1, run: req.decrypt(warm, seed.c2) },
    ]);
    vault.setFaults({ throttling: { enabled: false } });
    t.diagnostic(`round trips checked: ${await assertRoundTrips(cold, [...storm, ...waited, ...recovered])}`);
  });
});

// ------------------------------------------------------------------------------------------------
// 4. Dropped connections

test('4. dropped connections: all dropped → UNAVAILABLE after maxAttempts; half dropped → retries recover most', async (t) => {
  await withPair({}, async ({ warm, cold, seed }) => {
    vault.setFaults({ dropRate: 1 });
    const exhausted = { expect: 'UNAVAILABLE', vault: MAX_ATTEMPTS } as const;
    const all = await runMatrix(t, 'dropRate 1', [
      { name: 'warm encrypt (active DEK)', expect: 'OK', vault: 0, run: req.encrypt(warm) },
      { name: 'warm decrypt (cached DEK)', expect: 'OK', vault: 0, run: req.decrypt(warm, seed.w1) },
      { name: 'warm decrypt (DEK not cached)', ...exhausted, run: req.decrypt(warm, seed.c2) },
      { name: 'cold encrypt', ...exhausted, run: req.encrypt(cold) },
      { name: 'cold decrypt', ...exhausted, run: req.decrypt(cold, seed.c1) },
      { name: 'cold decrypt stream', ...exhausted, run: req.decryptStream(cold, seed.c1) },
      {
        name: 'warm encrypt after flushCache (new DEK)',
        ...exhausted,
        run: afterFlush(warm, req.encrypt(warm)),
      },
    ]);

    // Half the connections dropped, at random. Each call fails only when all its attempts are
    // dropped (p = 0.5^3 = 1/8); 24 calls failing 12 or more times has p < 1e-6.
    const n = 24;
    vault.setFaults({ dropRate: 0.5 });
    const droppedBefore = vault.counters()['faults.dropped'] ?? 0;
    const from = answered.length;
    const rows: Row[] = Array.from({ length: n }, (_, i) =>
      i % 2 === 0
        ? { name: `cold encrypt #${i}`, expect: ['OK', 'UNAVAILABLE'], run: req.encrypt(cold) }
        : { name: `cold decrypt #${i}`, expect: ['OK', 'UNAVAILABLE'], run: req.decrypt(cold, seed.c1) },
    );
    const half = await runMatrix(t, 'dropRate 0.5', rows, { concurrent: true });
    vault.setFaults({ dropRate: 0 });
    const ok = half.filter((o) => o.status === 'OK').length;
    const failed = n - ok;
    const dropped = (vault.counters()['faults.dropped'] ?? 0) - droppedBefore;
    const served = answered.slice(from).filter((a) => /\/(un)?wrapkey$/i.test(a.path) && a.status === 200);
    t.diagnostic(`${ok} OK, ${failed} UNAVAILABLE, ${dropped} connections dropped`);
    assert.equal(served.length, ok, 'one vault answer per OK call: nothing served twice or lost');
    // Per call: a failure is exactly maxAttempts drops; a success is 0..maxAttempts-1 drops, then one
    // answer. Summed over the calls:
    assert.ok(dropped >= failed * MAX_ATTEMPTS, `failed calls used all attempts: ${dropped} drops`);
    assert.ok(
      dropped <= failed * MAX_ATTEMPTS + ok * (MAX_ATTEMPTS - 1),
      `no call made more than maxAttempts attempts: ${dropped} drops`,
    );
    assert.ok(dropped > failed * MAX_ATTEMPTS, 'some call succeeded on a retry after a drop');
    assert.ok(ok >= n / 2, `retries recover most calls: ${ok} of ${n}`);

    const recovered = await runMatrix(t, 'dropRate back to 0', [
      { name: 'cold encrypt', expect: 'OK', vault: 1, run: req.encrypt(cold) },
      { name: 'warm decrypt (DEK not cached)', expect: 'OK', vault: 1, run: req.decrypt(warm, seed.c2) },
    ]);
    t.diagnostic(`round trips checked: ${await assertRoundTrips(cold, [...all, ...half, ...recovered])}`);
  });
});

// ------------------------------------------------------------------------------------------------
// 5. Full outage

test('5. full outage: cached DEKs serve until their TTL, then fail closed; the vault returns → service resumes', async (t) => {
  const ttlMs = 1500;
  const outageDir = join(dir, 'outage-vault');
  const open = (port = 0) => startDevVault({ dataDir: outageDir, port, identities: identities() });
  let outage = await open();
  const port = outage.port;
  try {
    const outageKeys = new KeyClient(outage.url, staticTokenCredential(TOKEN), devVaultClientOptions(outage));
    await outageKeys.createOctKey('vf-outage', { hsm: true, keySize: 256 });
    const cache = { encrypt: { maxAgeMs: ttlMs }, decrypt: { ttlMs } };
    await withPair({ keyName: 'vf-outage', target: outage, cache }, async ({ warm, cold, seed }) => {
      // w1's DEK was wrapped and unwrapped during the warm-up, before `cachedBy`.
      const cachedBy = Date.now();
      await outage.close();
      const cached = { expect: 'OK' } as const;
      const down = { expect: 'UNAVAILABLE' } as const;
      // Requests to this vault are not counted: it is down, or it is not the main vault.
      const outageVault = { counted: false };
      const early = await runMatrix(
        t,
        'vault down, cached DEKs within their TTL',
        [
          { name: 'warm encrypt (active DEK)', ...cached, run: req.encrypt(warm) },
          { name: 'warm decrypt (cached DEK)', ...cached, run: req.decrypt(warm, seed.w1) },
          { name: 'warm decrypt stream (cached DEK)', ...cached, run: req.decryptStream(warm, seed.w1) },
          { name: 'warm decrypt (DEK not cached)', ...down, run: req.decrypt(warm, seed.c2) },
          { name: 'cold encrypt', ...down, run: req.encrypt(cold) },
          { name: 'cold decrypt', ...down, run: req.decrypt(cold, seed.c1) },
        ],
        outageVault,
      );
      // The cached rows passed, so they ran within the TTL (past it they fail closed, as below).
      t.diagnostic(`cached rows done ${Date.now() - cachedBy} ms into the ${ttlMs} ms TTL`);

      await sleep(cachedBy + ttlMs + 300 - Date.now());
      const late = await runMatrix(
        t,
        'vault down, past the TTL: fail closed',
        [
          { name: 'warm encrypt (DEK retired)', ...down, run: req.encrypt(warm) },
          { name: 'warm decrypt (DEK expired)', ...down, run: req.decrypt(warm, seed.w1) },
          { name: 'warm encrypt stream (DEK retired)', ...down, run: req.encryptStream(warm) },
        ],
        outageVault,
      );

      // The same vault (data directory, port, CA) comes back; neither sealbox restarts.
      outage = await open(port);
      const back = await runMatrix(
        t,
        'vault back',
        [
          { name: 'warm encrypt', expect: 'OK', run: req.encrypt(warm) },
          { name: 'warm decrypt (w1)', expect: 'OK', run: req.decrypt(warm, seed.w1) },
          { name: 'warm decrypt (c2)', expect: 'OK', run: req.decrypt(warm, seed.c2) },
          { name: 'cold encrypt', expect: 'OK', run: req.encrypt(cold) },
          { name: 'cold decrypt', expect: 'OK', run: req.decrypt(cold, seed.c1) },
        ],
        outageVault,
      );
      t.diagnostic(`round trips checked: ${await assertRoundTrips(cold, [...early, ...late, ...back])}`);
    });
  } finally {
    await outage.close();
  }
});

// ------------------------------------------------------------------------------------------------
// 6. No retry storm

test('6a. no retry storm: 20 concurrent cold calls on a failing vault make exactly 20 × maxAttempts requests, jittered', async (t) => {
  const n = 20;
  const baseDelayMs = 100;
  const retry = { maxAttempts: MAX_ATTEMPTS, baseDelayMs, maxDelayMs: 400, timeoutMs: 5000 };
  // One key per call, so the vault's request paths tell the calls apart.
  const names = Array.from({ length: n }, (_, i) => `vf-jitter-${i}`);
  await Promise.all(names.map((name) => keys.createOctKey(name, { hsm: true, keySize: 256 })));
  const box = await startTestSealbox({
    cache: { enabled: false },
    keys: Object.fromEntries(names.map((name, i) => [`j${i}`, azureKey(name, retry)])),
  });
  try {
    await Promise.all(names.map((_, i) => unaryEncrypt(box, `j${i}`)));
    const from = answered.length;
    vault.setFaults({ errorRate: 1 });
    const outcomes = await runMatrix(
      t,
      `errorRate 1, ${n} concurrent cold encrypts`,
      names.map((name, i) => ({
        name: `encrypt on ${name}`,
        expect: 'UNAVAILABLE',
        run: req.encrypt(box, `j${i}`),
      })),
      { concurrent: true },
    );
    assert.equal(outcomes.length, n);
    // Nothing keeps retrying after the callers got their answers.
    await sleep(300);
    vault.setFaults({ errorRate: 0 });
    const requests = answered.slice(from);
    assert.equal(requests.length, n * MAX_ATTEMPTS, 'exactly maxAttempts requests per call, never more');
    const byKey = new Map<string, number[]>();
    for (const r of requests) {
      const name = /\/keys\/([^/]+)\//.exec(r.path)?.[1] ?? '?';
      byKey.set(name, [...(byKey.get(name) ?? []), r.at]);
    }
    for (const name of names) {
      assert.equal(byKey.get(name)?.length, MAX_ATTEMPTS, `${name}: ${byKey.get(name)?.length} requests`);
    }
    // Full jitter: the first retry waits uniform [0, baseDelayMs). Different calls' retries must spread
    // out rather than land together (U(0,100) has a standard deviation of ~29 ms).
    const firstRetry = names.map((name) => byKey.get(name)![1]! - byKey.get(name)![0]!);
    const secondRetry = names.map((name) => byKey.get(name)![2]! - byKey.get(name)![1]!);
    const sd = (xs: number[]) => {
      const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
      return Math.sqrt(xs.reduce((a, b) => a + (b - mean) ** 2, 0) / xs.length);
    };
    const retryTimes = names.map((name) => byKey.get(name)![1]!).sort((a, b) => a - b);
    const crowd = Math.max(...retryTimes.map((at) => retryTimes.filter((x) => x >= at && x < at + 5).length));
    t.diagnostic(
      `first-retry gaps sd ${sd(firstRetry).toFixed(1)} ms (${firstRetry.map(Math.round).join(', ')}); ` +
        `second-retry gaps sd ${sd(secondRetry).toFixed(1)} ms; most retries in one 5 ms window: ${crowd}`,
    );
    assert.ok(sd(firstRetry) > 0.1 * baseDelayMs, `first retries are jittered: sd ${sd(firstRetry)} ms`);
    assert.ok(sd(secondRetry) > 0.1 * baseDelayMs, `second retries are jittered: sd ${sd(secondRetry)} ms`);
    assert.ok(crowd < (3 * n) / 4, `retries do not land together: ${crowd} of ${n} within 5 ms`);

    const recovered = await runMatrix(t, 'errorRate back to 0', [
      { name: 'encrypt on vf-jitter-0', expect: 'OK', vault: 1, run: req.encrypt(box, 'j0') },
    ]);
    await assertRoundTrips(box, recovered);
  } finally {
    vault.setFaults(NO_FAULTS);
    await box.close();
  }
});

test('6b. the cache bounds fan-out under faults: ≤ maxConcurrentVaultCalls in flight, retries included', async (t) => {
  const dekCount = 32;
  const slots = 4;
  await withPair({ cache: { maxConcurrentVaultCalls: slots } }, async ({ warm, cold }) => {
    // Cache off: each message its own DEK, so each is a distinct unwrap for `warm`.
    const sealed = await Promise.all(Array.from({ length: dekCount }, () => unaryEncrypt(cold)));
    const before = cacheStats(warm);
    const from = vaultRequests();
    vault.setFaults({ errorRate: 1 });
    // Every ciphertext twice, all at once: the second caller of a DEK may join the first one's unwrap.
    const rows: Row[] = [...sealed, ...sealed].map((s, i) => ({
      name: `warm decrypt #${i}`,
      expect: 'UNAVAILABLE',
      run: req.decrypt(warm, s),
    }));
    const failed = await runMatrix(t, `errorRate 1, ${rows.length} decrypts of ${dekCount} DEKs`, rows, {
      concurrent: true,
    });
    vault.setFaults({ errorRate: 0 });
    const after = cacheStats(warm);
    const flights = after.misses.decrypt - before.misses.decrypt - (after.coalesced - before.coalesced);
    const requests = vaultRequests() - from;
    t.diagnostic(
      `${flights} unwraps (vault calls) for ${rows.length} requests, ${requests} vault requests; ${JSON.stringify(after.vaultCalls)}`,
    );
    assert.equal(failed.length, rows.length);
    assert.ok(flights >= dekCount && flights <= rows.length, `flights ${flights}`);
    assert.equal(requests, flights * MAX_ATTEMPTS, 'each vault call made exactly maxAttempts requests');
    assert.ok(after.vaultCalls.maxInFlight <= slots, `bounded: ${JSON.stringify(after.vaultCalls)}`);
    assert.ok(
      after.vaultCalls.maxInFlight > 1,
      `the bound was exercised: ${JSON.stringify(after.vaultCalls)}`,
    );
    assert.equal(after.vaultCalls.inFlight, 0);

    // Recovery: one request per unwrap now, still within the bound.
    const recoveredFrom = vaultRequests();
    const beforeRecovery = cacheStats(warm);
    const recovered = await runMatrix(
      t,
      'errorRate back to 0',
      [...sealed, ...sealed].map((s, i) => ({
        name: `warm decrypt #${i}`,
        expect: 'OK',
        run: req.decrypt(warm, s),
      })),
      { concurrent: true },
    );
    assert.equal(recovered.length, 2 * dekCount);
    const final = cacheStats(warm);
    const unwraps =
      final.misses.decrypt - beforeRecovery.misses.decrypt - (final.coalesced - beforeRecovery.coalesced);
    t.diagnostic(`${unwraps} unwraps for ${rows.length} requests`);
    assert.equal(vaultRequests() - recoveredFrom, unwraps, 'one request per unwrap');
    assert.ok(unwraps >= dekCount && unwraps <= 2 * dekCount, `unwraps ${unwraps}`);
    assert.equal(final.entries.decrypt - beforeRecovery.entries.decrypt, dekCount, 'each DEK cached once');
    assert.ok(final.vaultCalls.maxInFlight <= slots, `bounded: ${JSON.stringify(final.vaultCalls)}`);
  });
});
