/**
 * The data-key cache end to end: gRPC → sealbox (cached data keys) → Azure provider → @azure/keyvault-keys
 * over HTTPS → the embedded dev vault. Every claim about vault traffic is checked with the dev vault's
 * own counters; the cache itself is observed only through Sealbox.stats().cache, flushCache() and the
 * harness's trackDek hook.
 *
 * Counter notes (src/devvault/server.ts): an operation's counter ("wrapKey", "unwrapKey") counts
 * authenticated requests; a request answered by fault injection counts only as "faults.errors". A cold
 * provider reads a key version once (getKey) before its first unwrap; only wrapKey/unwrapKey are counted
 * here.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { finished } from 'node:stream/promises';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeyClient } from '@azure/keyvault-keys';
import {
  createEncryptStream,
  decrypt,
  decryptStream,
  encrypt,
  encryptStream,
  errorCode,
} from '../../src/client/client';
import type { ConfigInput } from '../../src/config/config';
import { parseHeader } from '../../src/crypto/format';
import {
  type DevVault,
  devVaultClientOptions,
  sealboxKeyConfig,
  startDevVault,
  staticTokenCredential,
} from '../../src/devvault';
import type { Sealbox } from '../../src/main';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';

type CacheStats = ReturnType<Sealbox['stats']>['cache'];
type CacheInput = NonNullable<ConfigInput['cache']>;
type Sealed = { ciphertext: Buffer; keyId: string };

const TOKEN = 'cache-tests';
const KEY_NAME = 'cache-rsa';
const ALIAS = 'pay';
const MiB = 1024 * 1024;
const NO_LATENCY = { fixedMs: 0, jitterMs: 0 };

let dir: string;
let vault: DevVault;
/** The versioned id of the one key every test wraps under. */
let keyId: string;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sealbox-cache-'));
  vault = await startDevVault({
    dataDir: join(dir, 'vault'),
    identities: {
      [TOKEN]: { name: 'sealbox', permissions: ['get', 'create', 'update', 'wrapKey', 'unwrapKey'] },
    },
  });
  const keys = new KeyClient(vault.url, staticTokenCredential(TOKEN), devVaultClientOptions(vault));
  const key = await keys.createRsaKey(KEY_NAME, { keySize: 2048 });
  assert.ok(key.id);
  keyId = key.id;
});

after(async () => {
  await vault.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Alias "pay" on the dev vault's key, with `cache` settings and optionally provider retry settings. */
function config(cache: CacheInput = {}, retry?: { maxAttempts: number }): ConfigInput {
  return {
    keys: {
      [ALIAS]: {
        ...sealboxKeyConfig(vault, KEY_NAME, TOKEN),
        ...(retry ? { retry } : {}),
      },
    },
    cache,
  };
}

async function withSealbox<T>(
  cfg: ConfigInput,
  fn: (box: TestSealbox) => Promise<T>,
  hooks?: { trackDek(buffer: Buffer): void },
): Promise<T> {
  const box = await startTestSealbox(cfg, hooks);
  try {
    return await fn(box);
  } finally {
    await box.close();
    await vaultIdle(box);
  }
}

/**
 * Waits until none of the sealbox's vault calls is in flight, so a background wrap still running
 * at close() cannot land in the next test's counters.
 */
async function vaultIdle(box: TestSealbox, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (box.sealbox.stats().cache.vaultCalls.inFlight > 0) {
    assert.ok(Date.now() < deadline, 'vault calls still in flight long after close()');
    await sleep(10);
  }
}

/** Cache stats, as a snapshot. */
function cacheStats(box: TestSealbox): CacheStats {
  return structuredClone(box.sealbox.stats().cache);
}

function count(name: string): number {
  return vault.counters()[name] ?? 0;
}

function countersText(): string {
  return JSON.stringify(vault.counters());
}

/** The wrapped DEK of a ciphertext's header, as hex; checks the header names our key. */
function wrappedDek(ciphertext: Buffer): string {
  const header = parseHeader(ciphertext);
  assert.ok(header, 'a complete header');
  assert.equal(header.keyId, keyId);
  return header.wrappedDek.toString('hex');
}

function plaintextOf(i: number): Buffer {
  return Buffer.from(`message #${i}`);
}

function isZero(buffer: Buffer): boolean {
  return buffer.every((byte) => byte === 0);
}

/** Runs fn(0..count-1) with at most `limit` in flight; results in index order. */
async function inParallel<T>(count: number, limit: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const results = new Array<T>(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, count) }, async () => {
      while (next < count) {
        const i = next++;
        results[i] = await fn(i);
      }
    }),
  );
  return results;
}

/** Encrypts plaintextOf(0..count-1) in a sealbox of its own (64 at a time). */
async function sealMany(count: number, cache: CacheInput = {}): Promise<Sealed[]> {
  return withSealbox(config(cache), (box) =>
    inParallel(count, 64, (i) => encrypt(box.client, ALIAS, plaintextOf(i))),
  );
}

/** Fisher-Yates, in place. */
function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

test('1. 10,000 unary encrypts on one alias (64 at a time) make exactly one wrapKey call', async () => {
  await withSealbox(config(), async (box) => {
    vault.resetCounters();
    const sealed = await inParallel(10_000, 64, (i) => encrypt(box.client, ALIAS, plaintextOf(i)));
    assert.equal(count('wrapKey'), 1, countersText());
    const deks = new Set(sealed.map((s) => wrappedDek(s.ciphertext)));
    assert.equal(deks.size, 1, 'every header carries the same wrapped DEK');
    assert.ok(sealed.every((s) => s.keyId === keyId));

    const stats = cacheStats(box);
    assert.equal(stats.enabled, true);
    assert.equal(stats.hits.encrypt + stats.misses.encrypt, 10_000, JSON.stringify(stats));
    assert.ok(stats.misses.encrypt >= 1, JSON.stringify(stats));
    // Only the first wave (at most 64 callers) can have waited for the one wrap.
    assert.ok(stats.blockingMisses >= 1 && stats.blockingMisses <= 64, JSON.stringify(stats));
    assert.equal(stats.entries.encrypt, 1);
    assert.deepEqual(stats.vaultCalls, { inFlight: 0, maxInFlight: 1 }, 'one vault call ever');
    assert.equal(stats.hits.decrypt + stats.misses.decrypt, 0);

    for (const i of [0, 4_999, 9_999]) {
      const opened = await decrypt(box.client, sealed[i]!.ciphertext);
      assert.ok(opened.plaintext.equals(plaintextOf(i)));
    }
  });
});

test('2. cold cache: 1,000 concurrent decrypts sharing one DEK make exactly one unwrapKey call', async (t) => {
  const sealed = await sealMany(1_000);
  assert.equal(new Set(sealed.map((s) => wrappedDek(s.ciphertext))).size, 1, 'one DEK for all 1,000');

  await withSealbox(config(), async (box) => {
    vault.resetCounters();
    const opened = await Promise.all(sealed.map((s) => decrypt(box.client, s.ciphertext)));
    for (const [i, o] of opened.entries()) assert.ok(o.plaintext.equals(plaintextOf(i)), `message ${i}`);
    assert.equal(count('unwrapKey'), 1, countersText());

    const stats = cacheStats(box);
    t.diagnostic(`cold decrypt stats: ${JSON.stringify(stats)}`);
    assert.ok(stats.coalesced >= 1, `callers waited on the one in-flight unwrap: ${JSON.stringify(stats)}`);
    assert.ok(stats.coalesced <= 999);
    // Every decrypt is counted once, as a hit or a miss.
    assert.equal(stats.hits.decrypt + stats.misses.decrypt, 1_000, JSON.stringify(stats));
    // One caller started the unwrap; coalesced callers may count as misses or as hits, nothing else can miss.
    assert.ok(
      stats.misses.decrypt >= 1 && stats.misses.decrypt <= 1 + stats.coalesced,
      JSON.stringify(stats),
    );
    // Waited on a vault call: the caller that started the unwrap and every coalesced caller; hits did not.
    assert.equal(stats.blockingMisses, 1 + stats.coalesced, JSON.stringify(stats));
    assert.equal(stats.entries.decrypt, 1);
    assert.equal(stats.hits.encrypt + stats.misses.encrypt, 0);

    // Warm: another 1,000 are all hits and reach no vault.
    await Promise.all(sealed.map((s) => decrypt(box.client, s.ciphertext)));
    const warm = cacheStats(box);
    assert.equal(count('unwrapKey'), 1, countersText());
    assert.equal(warm.hits.decrypt, stats.hits.decrypt + 1_000, JSON.stringify(warm));
    assert.equal(warm.misses.decrypt, stats.misses.decrypt);
    assert.equal(warm.blockingMisses, stats.blockingMisses);
  });
});

test('3. 100 DEKs × 100 concurrent decrypts each, at once: exactly 100 unwrapKey calls, ≤ 8 in flight', async (t) => {
  // refreshAhead 0: the next DEK is wrapped only when the current one has sealed its 100 messages.
  vault.resetCounters();
  const sealed = await sealMany(10_000, { encrypt: { maxMessages: 100, refreshAhead: 0 } });
  assert.equal(count('wrapKey'), 100, `one wrap per 100 messages: ${countersText()}`);
  const perDek = new Map<string, number>();
  for (const s of sealed) {
    const dek = wrappedDek(s.ciphertext);
    perDek.set(dek, (perDek.get(dek) ?? 0) + 1);
  }
  assert.equal(perDek.size, 100);
  assert.ok(
    [...perDek.values()].every((n) => n === 100),
    `each DEK sealed exactly maxMessages: ${[...perDek.values()].join(',')}`,
  );

  const order = shuffle(sealed.map((_, i) => i));
  vault.setFaults({ latency: { fixedMs: 15, jitterMs: 10 } }); // 20 ms ± 5
  try {
    await withSealbox(config({ maxConcurrentVaultCalls: 8 }), async (box) => {
      vault.resetCounters();
      const started = Date.now();
      const opened = await Promise.all(order.map((i) => decrypt(box.client, sealed[i]!.ciphertext)));
      t.diagnostic(`10,000 cold decrypts took ${Date.now() - started} ms`);
      for (const [k, o] of opened.entries()) assert.ok(o.plaintext.equals(plaintextOf(order[k]!)));
      assert.equal(count('unwrapKey'), 100, countersText());

      const stats = cacheStats(box);
      t.diagnostic(`stats: ${JSON.stringify(stats)}`);
      assert.ok(
        stats.vaultCalls.maxInFlight <= 8,
        `bounded by maxConcurrentVaultCalls: ${JSON.stringify(stats)}`,
      );
      assert.ok(stats.vaultCalls.maxInFlight > 1, `the bound was exercised: ${JSON.stringify(stats)}`);
      assert.equal(stats.vaultCalls.inFlight, 0);
      assert.equal(stats.entries.decrypt, 100);
      assert.equal(stats.hits.decrypt + stats.misses.decrypt, 10_000, JSON.stringify(stats));
      assert.ok(stats.coalesced >= 1);
    });
  } finally {
    vault.setFaults({ latency: NO_LATENCY });
  }
});

test('4. cache off: 10,000 unary encrypts make 10,000 wrapKey calls', async (t) => {
  await withSealbox(config({ enabled: false }), async (box) => {
    vault.resetCounters();
    const started = Date.now();
    const sealed = await inParallel(10_000, 64, (i) => encrypt(box.client, ALIAS, plaintextOf(i)));
    t.diagnostic(`10,000 uncached encrypts took ${Date.now() - started} ms`);
    assert.equal(count('wrapKey'), 10_000, countersText());
    assert.equal(new Set(sealed.map((s) => wrappedDek(s.ciphertext))).size, 10_000, 'a DEK per message');
    const stats = cacheStats(box);
    assert.equal(stats.enabled, false);
    assert.equal(stats.entries.encrypt + stats.entries.decrypt, 0);
  });
});

test('5. steady load across DEK retirements: refresh-ahead keeps callers off the vault after warm-up', async (t) => {
  // A max age well above the event-loop stalls a loaded 2-core CI box can show (p99 ~80 ms, max ~500 ms),
  // and a run long enough for several retirements.
  const maxAgeMs = 1000;
  vault.setFaults({ latency: { fixedMs: 15, jitterMs: 0 } });
  try {
    await withSealbox(config({ encrypt: { maxAgeMs, refreshAhead: 0.5 } }), async (box) => {
      vault.resetCounters();
      // Diagnostics: every client, server and vault callback shares this event loop, so a stalled loop
      // (a busy machine) delays the background wrap as much as a cache bug would.
      const loopDelay = monitorEventLoopDelay({ resolution: 10 });
      loopDelay.enable();
      const start = Date.now();
      let blockingAfterWarmUp: number | undefined;
      const warmUp = sleep(500).then(() => {
        blockingAfterWarmUp = cacheStats(box).blockingMisses;
      });
      /** Per DEK: the earliest completion and the latest start of a request it sealed. */
      const spans = new Map<string, { firstDone: number; lastStart: number }>();
      let n = 0;
      await Promise.all(
        Array.from({ length: 64 }, async () => {
          while (Date.now() - start < 4_500) {
            const sent = Date.now();
            const { ciphertext } = await encrypt(box.client, ALIAS, plaintextOf(n++));
            const done = Date.now();
            const dek = wrappedDek(ciphertext);
            const span = spans.get(dek);
            if (!span) spans.set(dek, { firstDone: done, lastStart: sent });
            else {
              span.firstDone = Math.min(span.firstDone, done);
              span.lastStart = Math.max(span.lastStart, sent);
            }
          }
        }),
      );
      await warmUp;
      loopDelay.disable();
      const stats = cacheStats(box);
      const lag = `event-loop delay p99 ${(loopDelay.percentile(99) / 1e6).toFixed(0)} ms, max ${(loopDelay.max / 1e6).toFixed(0)} ms`;
      t.diagnostic(
        `${n} encrypts, ${spans.size} DEKs, ${lag}, ${countersText()}, stats ${JSON.stringify(stats)}`,
      );
      assert.ok(blockingAfterWarmUp !== undefined && blockingAfterWarmUp >= 1, 'the cold start blocked');
      assert.equal(
        stats.blockingMisses,
        blockingAfterWarmUp,
        `no request waited on a wrap after the 0.5 s warm-up (${lag})`,
      );
      assert.ok(count('wrapKey') >= 4, `several retirements: ${countersText()}`);
      assert.ok(count('wrapKey') <= 16, `no refresh storm (≤ about one wrap per 300 ms): ${countersText()}`);
      assert.ok(spans.size >= 4, `headers show ${spans.size} distinct wrapped DEKs`);
      assert.ok(spans.size <= count('wrapKey'));
      // A DEK demonstrably sealed new messages from (at latest) firstDone until (at earliest) lastStart.
      for (const [dek, span] of spans) {
        assert.ok(
          span.lastStart - span.firstDone <= maxAgeMs,
          `DEK ${dek.slice(0, 16)}… sealed messages for at least ${span.lastStart - span.firstDone} ms > maxAgeMs`,
        );
      }
    });
  } finally {
    vault.setFaults({ latency: NO_LATENCY });
  }
});

test('6a. maxMessages: the message after the budget carries a different wrapped DEK', async () => {
  for (const refreshAhead of [0, 0.75]) {
    await withSealbox(config({ encrypt: { maxMessages: 50, refreshAhead } }), async (box) => {
      vault.resetCounters();
      const deks: string[] = [];
      for (let i = 0; i < 51; i++)
        deks.push(wrappedDek((await encrypt(box.client, ALIAS, plaintextOf(i))).ciphertext));
      assert.equal(
        new Set(deks.slice(0, 50)).size,
        1,
        `refreshAhead ${refreshAhead}: the first 50 share a DEK`,
      );
      assert.notEqual(deks[50], deks[0], `refreshAhead ${refreshAhead}: the 51st has a new DEK`);
      assert.equal(count('wrapKey'), 2, `refreshAhead ${refreshAhead}: ${countersText()}`);
    });
  }
});

test('6b. maxBytes on streams: a stream keeps its DEK; the budget retires it for new messages', async () => {
  await withSealbox(config({ encrypt: { maxBytes: MiB, refreshAhead: 0 } }), async (box) => {
    vault.resetCounters();
    const first = wrappedDek((await encrypt(box.client, ALIAS, Buffer.from('first'))).ciphertext);

    // Starts with nearly all of the 1 MiB budget left, then seals 3 MiB under that one DEK.
    const big = randomBytes(3 * MiB);
    const pieces = Array.from({ length: 12 }, (_, i) => big.subarray(i * (MiB / 4), (i + 1) * (MiB / 4)));
    const streamed = await encryptStream(box.client, ALIAS, pieces);
    assert.equal(wrappedDek(streamed.data), first, 'the stream started under the live DEK and kept it');
    assert.ok((await decryptStream(box.client, [streamed.data])).data.equals(big));

    const next = await encryptStream(box.client, ALIAS, [randomBytes(MiB / 2)]);
    const second = wrappedDek(next.data);
    assert.notEqual(second, first, 'the next stream gets a new DEK: the budget was spent');
    assert.equal(count('wrapKey'), 2, countersText());

    // Streams count as they pass: `second` has sealed 0.5 MiB; a stream that has pushed ≥ ~1 MiB more
    // (seen by its output) spends the budget while it is still open, so a message started now gets a
    // third DEK, and the open stream finishes under `second`.
    const open = createEncryptStream(box.client, ALIAS);
    const parts: Buffer[] = [];
    let received = 0;
    const pastBudget = new Promise<void>((resolve, reject) => {
      open.on('data', (chunk: Buffer) => {
        parts.push(chunk);
        received += chunk.length;
        if (received >= MiB) resolve();
      });
      open.on('error', reject);
    });
    const body = randomBytes(2 * MiB);
    open.write(body);
    await Promise.race([
      pastBudget,
      sleep(10_000).then(() => assert.fail(`the open stream produced only ${received} bytes`)),
    ]);
    const mid = wrappedDek((await encrypt(box.client, ALIAS, Buffer.from('mid-stream'))).ciphertext);
    open.end();
    await finished(open);
    const openCiphertext = Buffer.concat(parts);
    assert.equal(wrappedDek(openCiphertext), second, 'the open stream kept its DEK');
    assert.notEqual(mid, second, 'a message started after the stream spent the budget got a new DEK');
    assert.notEqual(mid, first);
    assert.equal(count('wrapKey'), 3, countersText());
    assert.ok((await decryptStream(box.client, [openCiphertext])).data.equals(body));
  });
});

test('7a. zeroization: flushCache() zeroes every cached DEK (encrypt and decrypt side)', async () => {
  const foreign = await sealMany(3); // sealed elsewhere: only this sealbox's decrypt side can hold its DEK
  const tracked: Buffer[] = [];
  await withSealbox(
    config(),
    async (box) => {
      vault.resetCounters();
      const own = await encrypt(box.client, ALIAS, Buffer.from('own'));
      for (const s of foreign) await decrypt(box.client, s.ciphertext);
      await decrypt(box.client, own.ciphertext);
      const before = cacheStats(box);
      assert.ok(before.entries.encrypt >= 1 && before.entries.decrypt >= 1, JSON.stringify(before));
      // Tracked buffers may include transient copies that are already zeroed; at least one live
      // (non-zero) buffer per cached entry shows the check below can fail.
      const live = tracked.filter((b) => !isZero(b)).length;
      assert.ok(
        live >= before.entries.encrypt + before.entries.decrypt,
        `${live} of ${tracked.length} tracked buffers non-zero for ${JSON.stringify(before.entries)} entries`,
      );

      box.sealbox.flushCache();
      assert.ok(
        tracked.every(isZero),
        `after flushCache every tracked buffer reads zero (${tracked.filter((b) => !isZero(b)).length} of ${tracked.length} do not)`,
      );
      const flushed = cacheStats(box);
      assert.deepEqual(flushed.entries, { encrypt: 0, decrypt: 0 });
      assert.ok(
        (flushed.evictions['flush'] ?? 0) >= before.entries.encrypt + before.entries.decrypt,
        `evictions by reason "flush": ${JSON.stringify(flushed.evictions)}`,
      );

      // Nothing stale survives: the next encrypt wraps a new DEK, the next decrypt unwraps again.
      const wraps = count('wrapKey');
      const unwraps = count('unwrapKey');
      const after = await encrypt(box.client, ALIAS, Buffer.from('after'));
      assert.equal(count('wrapKey'), wraps + 1);
      assert.notEqual(wrappedDek(after.ciphertext), wrappedDek(own.ciphertext));
      assert.equal((await decrypt(box.client, foreign[0]!.ciphertext)).plaintext.toString(), 'message #0');
      assert.equal(count('unwrapKey'), unwraps + 1, countersText());
    },
    { trackDek: (buffer) => tracked.push(buffer) },
  );
});

test('7b. zeroization: decrypt-side entries past ttlMs are purged and zeroed without further traffic', async () => {
  // Two DEKs: sealed by two sealboxes.
  const sealed = [...(await sealMany(2)), ...(await sealMany(2))];
  assert.equal(new Set(sealed.map((s) => wrappedDek(s.ciphertext))).size, 2);
  const tracked: Buffer[] = [];
  await withSealbox(
    config({ decrypt: { ttlMs: 200 } }),
    async (box) => {
      for (const s of sealed) await decrypt(box.client, s.ciphertext);
      const live = tracked.filter((b) => !isZero(b)).length;
      assert.ok(
        live >= 2,
        `both cached decrypt-side DEKs are tracked and non-zero (${live} of ${tracked.length})`,
      );
      await sleep(500);
      // Checked before anything touches the cache (stats() included), so a lazy purge-on-read cannot pass.
      assert.ok(
        tracked.every(isZero),
        `${tracked.filter((b) => !isZero(b)).length} of ${tracked.length} expired decrypt-side buffers are not zero`,
      );
      const stats = cacheStats(box);
      assert.equal(stats.entries.decrypt, 0, JSON.stringify(stats));
      assert.ok((stats.evictions['expire'] ?? 0) >= 2, `evictions: ${JSON.stringify(stats.evictions)}`);
    },
    { trackDek: (buffer) => tracked.push(buffer) },
  );
});

test('7c. zeroization: an encrypt-side DEK is zeroed when it retires (message budget, age)', async () => {
  // maxMessages 2 rather than 1: with a budget of 1 a DEK may retire as soon as it is used, so its
  // buffer could never be seen live. Encrypts are sequential and refresh-ahead is off, so buffers are
  // tracked in DEK order.
  const tracked: Buffer[] = [];
  await withSealbox(
    config({ encrypt: { maxMessages: 2, refreshAhead: 0 } }),
    async (box) => {
      vault.resetCounters();
      const deks: string[] = [];
      const liveAfter: boolean[][] = [];
      for (let i = 0; i < 5; i++) {
        deks.push(wrappedDek((await encrypt(box.client, ALIAS, plaintextOf(i))).ciphertext));
        liveAfter.push(tracked.map((b) => !isZero(b)));
      }
      assert.equal(deks[0], deks[1]);
      assert.equal(deks[2], deks[3]);
      assert.equal(new Set([deks[0], deks[2], deks[4]]).size, 3);
      assert.equal(count('wrapKey'), 3, countersText());
      assert.equal(tracked.length, 3, 'one buffer per DEK');
      // [after encrypt i] → which tracked buffers were non-zero
      assert.deepEqual(liveAfter[0], [true], 'DEK 1 live after message 1');
      assert.deepEqual(liveAfter[2], [false, true], 'DEK 1 retired and zeroed once DEK 2 took over');
      assert.deepEqual(liveAfter[4], [false, false, true], 'DEK 2 retired and zeroed; DEK 3 live');
      assert.ok((cacheStats(box).evictions['retired'] ?? 0) >= 2, JSON.stringify(cacheStats(box).evictions));
    },
    { trackDek: (buffer) => tracked.push(buffer) },
  );

  const aged: Buffer[] = [];
  await withSealbox(
    config({ encrypt: { maxAgeMs: 100, refreshAhead: 0 } }),
    async (box) => {
      const one = wrappedDek((await encrypt(box.client, ALIAS, Buffer.from('one'))).ciphertext);
      assert.equal(aged.length, 1);
      assert.ok(!isZero(aged[0]!), 'live');
      await sleep(250);
      const two = wrappedDek((await encrypt(box.client, ALIAS, Buffer.from('two'))).ciphertext);
      assert.notEqual(two, one, 'past maxAgeMs a new DEK seals new messages');
      assert.ok(isZero(aged[0]!), 'the aged-out DEK was zeroed');
    },
    { trackDek: (buffer) => aged.push(buffer) },
  );
});

test('7d. close() leaves no live DEK behind when a background refresh wrap was still in flight', async () => {
  const tracked: Buffer[] = [];
  const box = await startTestSealbox(config({ encrypt: { maxMessages: 4, refreshAhead: 0.5 } }), {
    trackDek: (buffer) => tracked.push(buffer),
  });
  try {
    await encrypt(box.client, ALIAS, Buffer.from('one')); // cold: wraps DEK 1
    vault.setFaults({ latency: { fixedMs: 300, jitterMs: 0 } });
    await encrypt(box.client, ALIAS, Buffer.from('two')); // 2 of 4 messages: refresh-ahead wraps DEK 2
    assert.equal(cacheStats(box).vaultCalls.inFlight, 1, 'the background wrap is in flight');
    assert.equal(tracked.length, 2);
    assert.ok(
      tracked.every((b) => !isZero(b)),
      'both live',
    );
  } finally {
    await box.close();
    await vaultIdle(box);
    vault.setFaults({ latency: NO_LATENCY });
  }
  assert.ok(isZero(tracked[0]!), 'the active DEK was zeroed by close()');
  assert.ok(isZero(tracked[1]!), 'the DEK whose wrap completed after close() was zeroed too');
});

test('7e. close() leaves no live DEK behind when an unwrap completes after its callers were cancelled', async () => {
  const [warm] = await sealMany(1);
  const [late] = await sealMany(1);
  const tracked: Buffer[] = [];
  const box = await startTestSealbox(
    { ...config(), shutdown: { graceMs: 50 } },
    { trackDek: (buffer) => tracked.push(buffer) },
  );
  try {
    await decrypt(box.client, warm!.ciphertext); // the provider knows the key version: only unwrapKey is left
    vault.setFaults({ latency: { fixedMs: 500, jitterMs: 0 } });
    const pending = decrypt(box.client, late!.ciphertext).then(
      () => assert.fail('the grace period cancels the call'),
      (err: unknown) => err,
    );
    while (cacheStats(box).vaultCalls.inFlight === 0) await sleep(5);
    await box.close(); // grace 50 ms: the call is cancelled while its unwrap is still in flight
    await pending;
    await vaultIdle(box);
  } finally {
    vault.setFaults({ latency: NO_LATENCY });
  }
  assert.ok(tracked.length >= 1);
  assert.ok(
    tracked.every(isZero),
    `${tracked.filter((b) => !isZero(b)).length} of ${tracked.length} DEK buffers are live after close()`,
  );
});

test('8. a failed shared unwrap fails exactly its waiting callers, reaches the vault once, and is not cached', async () => {
  const warm = await sealMany(1); // DEK A: warms the provider (key version, TLS, challenge)
  const shared = await sealMany(50); // DEK B: 50 messages
  assert.equal(new Set(shared.map((s) => wrappedDek(s.ciphertext))).size, 1);
  assert.notEqual(wrappedDek(warm[0]!.ciphertext), wrappedDek(shared[0]!.ciphertext));

  await withSealbox(config({}, { maxAttempts: 1 }), async (box) => {
    await decrypt(box.client, warm[0]!.ciphertext);
    vault.resetCounters();
    // The latency holds the one failing request long enough for all 50 callers to join it.
    vault.setFaults({ errorRate: 1, latency: { fixedMs: 300, jitterMs: 0 } });
    try {
      // A cached DEK still serves while the vault is down.
      assert.equal((await decrypt(box.client, warm[0]!.ciphertext)).plaintext.toString(), 'message #0');
      assert.equal(count('faults.errors'), 0, countersText());
      const before = cacheStats(box);

      const outcomes = await Promise.allSettled(shared.map((s) => decrypt(box.client, s.ciphertext)));
      const failures = outcomes.map((o) => (o.status === 'rejected' ? (o.reason as unknown) : undefined));
      assert.equal(failures.filter((e) => e !== undefined).length, 50, 'every waiting caller failed');
      for (const err of failures) {
        assert.equal((err as { code: number }).code, 14, 'UNAVAILABLE');
        assert.equal(errorCode(err), 'VAULT_UNAVAILABLE');
      }
      assert.equal(count('faults.errors'), 1, `exactly one request reached the vault: ${countersText()}`);
      assert.equal(count('unwrapKey'), 0);
      const failed = cacheStats(box);
      assert.ok(failed.coalesced > before.coalesced, 'the others waited on the one unwrap');
      assert.equal(failed.entries.decrypt, before.entries.decrypt, 'the failure was not cached');
      assert.equal(failed.vaultCalls.inFlight, 0);
    } finally {
      vault.setFaults({ errorRate: 0, latency: NO_LATENCY });
    }

    vault.resetCounters();
    const opened = await decrypt(box.client, shared[7]!.ciphertext);
    assert.ok(opened.plaintext.equals(plaintextOf(7)));
    assert.equal(count('unwrapKey'), 1, `a new unwrap after the failure: ${countersText()}`);
    await Promise.all(shared.map((s) => decrypt(box.client, s.ciphertext)));
    assert.equal(count('unwrapKey'), 1, `now cached: ${countersText()}`);
  });
});
