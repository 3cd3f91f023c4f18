/**
 * The chunk pool with real piscina workers: results identical to the inline path, what is
 * transferred and what is only read, batching of waiting jobs into one task, reuse of returned
 * buffers only once they are back, per-job failures, cancellation, the queue bound, and the worker's
 * zeroing of key material (the worker's entry point called directly, where its buffers can be seen).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { availableParallelism } from 'node:os';
import { after, describe, test } from 'node:test';
import { Piscina } from 'piscina';
import { type ChunkBatch, openChunks, sealChunks } from '../../../src/crypto/chunk';
import { ErrorCode, SealboxError } from '../../../src/errors';
import {
  AUTO_INLINE_MAX_CORES,
  ChunkPool,
  effectiveCores,
  poolThreads,
  resolvePoolMode,
} from '../../../src/pool/pool';
import { run as runInWorker, SKIPPED, type TaskResult, type WorkerJob } from '../../../src/pool/worker';

const KiB = 1024;
const CHUNK = 16 * KiB;
const RECORD = CHUNK + 16;

function batch(data: Uint8Array, firstIndex = 0, final = false, headroom = 0): ChunkBatch {
  return {
    key: randomBytes(32),
    messageId: randomBytes(32),
    chunkSize: CHUNK,
    firstIndex,
    final,
    data,
    headroom,
  };
}

/** A copy of a batch whose data is an independent buffer (the pool may consume the original's). */
function copyOf(b: ChunkBatch): ChunkBatch {
  return { ...b, key: Buffer.from(b.key), messageId: Buffer.from(b.messageId), data: Buffer.from(b.data) };
}

const pools: ChunkPool[] = [];
function workers(options: { threads?: number; maxQueue?: number; taskBytes?: number } = {}): ChunkPool {
  const pool = new ChunkPool({
    mode: 'workers',
    threads: options.threads ?? 1,
    maxQueue: options.maxQueue ?? 1024,
    inlineBelowBytes: 0,
    ...(options.taskBytes ? { taskBytes: options.taskBytes } : {}),
  });
  pools.push(pool);
  return pool;
}
after(() => Promise.all(pools.map((p) => p.close())));

const isCode = (code: string) => (err: unknown) => err instanceof SealboxError && err.code === code;

describe('results', () => {
  test('sealed and opened batches are byte-identical to the inline path, headroom kept', async () => {
    const pool = workers();
    for (const [bytes, final] of [
      [4 * CHUNK, false],
      [3 * CHUNK + 7, true],
      [1, true],
    ] as const) {
      const b = batch(randomBytes(bytes), 3, final, 5);
      const expected = sealChunks(copyOf(b));
      const sealed = await pool.seal(copyOf(b));
      assert.deepEqual(sealed.subarray(5), expected.subarray(5), `${bytes} bytes sealed`);
      const opened = await pool.open({ ...copyOf(b), data: Buffer.from(sealed.subarray(5)) });
      assert.ok(opened.ok);
      assert.deepEqual(opened.plaintext.subarray(5), b.data, `${bytes} bytes opened`);
    }
  });

  test('a tampered record fails with its chunk index and no plaintext', async () => {
    const pool = workers();
    const b = batch(randomBytes(4 * CHUNK), 10);
    const sealed = sealChunks(copyOf(b));
    sealed[2 * RECORD + 100]! ^= 1;
    const result = await pool.open({ ...b, data: sealed });
    assert.deepEqual(result, { ok: false, failedIndex: 12, truncated: false });
  });
});

describe('transfer', () => {
  test('a batch that fits a slot crosses through shared memory: the caller’s buffer is kept', async () => {
    const pool = workers();
    const data = Buffer.allocUnsafeSlow(2 * CHUNK).fill(7);
    const b = batch(data);
    const expected = sealChunks(copyOf(b));
    assert.deepEqual(await pool.seal(b), expected);
    assert.equal(data.buffer.byteLength, 2 * CHUNK, 'not detached');
    assert.ok(
      data.every((x) => x === 7),
      'not changed',
    );
  });

  test('a batch larger than a slot is moved instead (its ArrayBuffer detached here)', async () => {
    const pool = workers({ taskBytes: 8 * CHUNK }); // slots of 2 × 128 KiB + 256 KiB
    const data = randomBytes(40 * CHUNK);
    const owned = Buffer.allocUnsafeSlow(data.length);
    owned.set(data);
    const b = batch(owned);
    const expected = sealChunks({ ...copyOf(b), data });
    assert.deepEqual(await pool.seal(b), expected);
    assert.equal(owned.buffer.byteLength, 0, 'the ArrayBuffer was transferred');
  });

  test('keys never linger in the shared slab, whatever happened to the job', async () => {
    const pool = workers({ threads: 2 });
    const key = randomBytes(32);
    const good = { ...batch(randomBytes(4 * CHUNK)), key };
    const bad = { ...batch(randomBytes(CHUNK + 1)), key }; // throws in the worker
    const tampered = { ...batch(randomBytes(2 * RECORD)), key };
    await Promise.allSettled([pool.seal(good), pool.seal(bad), pool.open(tampered)]);
    const slab = Buffer.from((pool as unknown as { slab: Uint8Array }).slab.buffer);
    assert.equal(slab.indexOf(key), -1);
  });

  test('a view into a larger buffer is copied, never detached, and its neighbours stay intact', async () => {
    const pool = workers();
    const whole = randomBytes(4 * CHUNK + 100);
    const before = Buffer.from(whole);
    const view = whole.subarray(50, 50 + 2 * CHUNK);
    const b = batch(view);
    const expected = sealChunks(copyOf(b));
    const sealed = await pool.seal(b);
    assert.deepEqual(sealed, expected);
    assert.equal(whole.buffer.byteLength > 0, true);
    assert.deepEqual(whole, before, 'the caller’s memory is untouched');
  });

  test("a slice of Node's shared Buffer pool is copied, not transferred", async () => {
    const pool = workers();
    const small = Buffer.from('final chunk of a message'); // a slice of the 8 KiB allocation pool
    const neighbour = Buffer.from('another buffer in the same pool');
    assert.equal(small.buffer, neighbour.buffer, 'the test needs two slices of one pool');
    const b = { ...batch(small, 0, true) };
    const expected = sealChunks(copyOf(b));
    assert.deepEqual(await pool.seal(b), expected);
    assert.equal(neighbour.toString(), 'another buffer in the same pool');
    assert.equal(small.toString(), 'final chunk of a message');
  });
});

describe('batching', () => {
  test('jobs that wait for a busy worker share one task; an idle pool sends a job alone', async () => {
    const pool = workers({ threads: 1 });
    const batches = Array.from({ length: 6 }, (_, i) => batch(randomBytes(4 * CHUNK), i * 4));
    const expected = batches.map((b) => sealChunks(copyOf(b)));
    const sealed = await Promise.all(batches.map((b) => pool.seal(b)));
    assert.deepEqual(sealed, expected);
    assert.equal(pool.tasksSent, 2, 'one task for the first job, one for the five that waited');
  });

  test('a task carries at most taskBytes (but always one job)', async () => {
    const pool = workers({ threads: 1, taskBytes: 8 * CHUNK });
    const batches = Array.from({ length: 6 }, (_, i) => batch(randomBytes(4 * CHUNK), i * 4));
    const expected = batches.map((b) => sealChunks(copyOf(b)));
    assert.deepEqual(await Promise.all(batches.map((b) => pool.seal(b))), expected);
    assert.equal(pool.tasksSent, 4, '1 + 2 + 2 + 1 jobs');
    const big = batch(randomBytes(16 * CHUNK));
    const expectedBig = sealChunks(copyOf(big));
    assert.deepEqual(await pool.seal(big), expectedBig, 'a job larger than taskBytes still runs');
  });

  test('waiting jobs are shared among free workers rather than all taken by the first', async () => {
    const pool = workers({ threads: 2 });
    const batches = Array.from({ length: 8 }, (_, i) => batch(randomBytes(2 * CHUNK), i * 2));
    const expected = batches.map((b) => sealChunks(copyOf(b)));
    assert.deepEqual(await Promise.all(batches.map((b) => pool.seal(b))), expected);
    // The first two jobs go out alone (one per idle worker); the six that waited go in at least two tasks.
    assert.ok(pool.tasksSent >= 4 && pool.tasksSent < 8, `tasks: ${pool.tasksSent}`);
  });

  test('a job that throws fails alone; the jobs batched with it complete', async () => {
    const pool = workers({ threads: 1 });
    const first = pool.seal(batch(randomBytes(CHUNK)));
    const bad = pool.seal(batch(randomBytes(CHUNK + 1))); // non-final, not whole chunks
    const goodBatch = batch(randomBytes(2 * CHUNK), 7);
    const expected = sealChunks(copyOf(goodBatch));
    const good = pool.seal(goodBatch);
    await first;
    await assert.rejects(bad, /whole chunks/);
    assert.deepEqual(await good, expected);
    assert.equal(pool.tasksSent, 2, 'the bad and the good job shared a task');
  });
});

describe('buffer reuse', () => {
  test('slots are reused, and never while their task is in flight', async () => {
    const pool = workers({ threads: 2 });
    const backing = randomBytes(64 * CHUNK);
    for (let round = 0; round < 4; round++) {
      const batches = Array.from({ length: 12 }, (_, i) =>
        batch(backing.subarray((i + round) * CHUNK, (i + round + 4) * CHUNK), i * 4),
      );
      const expected = batches.map((b) => sealChunks(copyOf(b)));
      // All at once: a slot handed to two tasks would mix their bytes.
      assert.deepEqual(await Promise.all(batches.map((b) => pool.seal(b))), expected, `round ${round}`);
    }
  });

  test('batches too large for a slot travel in returned buffers, reused only once back', async () => {
    const pool = workers({ threads: 2, taskBytes: 8 * CHUNK });
    const backing = randomBytes(80 * CHUNK);
    for (let round = 0; round < 3; round++) {
      // Views, so each is copied into a carrier: fresh ones first, then ones the workers gave back.
      const batches = Array.from({ length: 4 }, (_, i) =>
        batch(backing.subarray((i + round) * CHUNK, (i + round + 36 + i) * CHUNK), i * 40),
      );
      const expected = batches.map((b) => sealChunks(copyOf(b)));
      assert.deepEqual(await Promise.all(batches.map((b) => pool.seal(b))), expected, `round ${round}`);
      assert.ok(pool.spareBuffers > 0, `spares: ${pool.spareBuffers}`);
    }
    const record = randomBytes(40 * CHUNK).subarray(0, 36 * RECORD + 10);
    const opened = await pool.open({ ...batch(record, 0, true) });
    assert.equal(opened.ok, false, 'garbage does not open, however long the carrier');
  });
});

describe('cancellation and limits', () => {
  test('waiting jobs of a cancelled call are dropped with CANCELLED; other calls go on', async () => {
    const pool = workers({ threads: 1 });
    const controller = new AbortController();
    const first = pool.seal(batch(randomBytes(4 * CHUNK)), controller.signal);
    const queued = [1, 2, 3].map(() => pool.seal(batch(randomBytes(4 * CHUNK)), controller.signal));
    const otherBatch = batch(randomBytes(CHUNK));
    const expected = sealChunks(copyOf(otherBatch));
    const other = pool.seal(otherBatch);
    // Handlers first: the waiting jobs are rejected synchronously, inside abort().
    const rejected = [first, ...queued].map((p) => assert.rejects(p, isCode(ErrorCode.CANCELLED)));
    controller.abort();
    assert.equal(pool.stats.queueSize, 1, 'the cancelled call’s waiting jobs left the queue at once');
    await Promise.all(rejected);
    assert.deepEqual(await other, expected);
    await assert.rejects(
      pool.seal(batch(randomBytes(CHUNK)), controller.signal),
      isCode(ErrorCode.CANCELLED),
    );
  });

  test('beyond maxQueue waiting jobs, new ones are refused with OVERLOADED', async () => {
    const pool = workers({ threads: 1, maxQueue: 2 });
    const running = pool.seal(batch(randomBytes(CHUNK)));
    const waiting = [pool.seal(batch(randomBytes(CHUNK))), pool.seal(batch(randomBytes(CHUNK)))];
    await assert.rejects(pool.seal(batch(randomBytes(CHUNK))), isCode(ErrorCode.OVERLOADED));
    await Promise.all([running, ...waiting]);
  });

  test('close() rejects jobs still waiting', async () => {
    const pool = new ChunkPool({ mode: 'workers', threads: 1, maxQueue: 16, inlineBelowBytes: 0 });
    const running = pool.seal(batch(randomBytes(CHUNK)));
    const waiting = pool.seal(batch(randomBytes(CHUNK)));
    running.catch(() => {});
    const closing = pool.close();
    await assert.rejects(waiting, isCode(ErrorCode.CANCELLED));
    await closing;
  });

  test('inline mode and small batches never reach a worker', async () => {
    const inline = new ChunkPool({ mode: 'inline', maxQueue: 1, inlineBelowBytes: 0 });
    const b = batch(randomBytes(2 * CHUNK));
    assert.deepEqual(await inline.seal(copyOf(b)), sealChunks(copyOf(b)));
    assert.equal(inline.tasksSent, 0);
    const pool = new ChunkPool({ mode: 'workers', threads: 1, maxQueue: 1, inlineBelowBytes: 4 * CHUNK });
    pools.push(pool);
    const data = Buffer.allocUnsafeSlow(2 * CHUNK);
    await pool.seal(batch(data));
    assert.equal(pool.tasksSent, 0);
    assert.equal(data.buffer.byteLength, 2 * CHUNK, 'an inline batch is not transferred');
  });
});

describe('worker entry point', () => {
  function job(op: 0 | 1, data: Uint8Array, options: { final?: boolean; cancelled?: boolean } = {}) {
    const keys = new Uint8Array(64);
    keys.set(randomBytes(64));
    const buffer = new ArrayBuffer(data.length + 8);
    new Uint8Array(buffer).set(data);
    const flag = new Int32Array(new SharedArrayBuffer(4));
    if (options.cancelled) flag[0] = 1;
    const j: WorkerJob = [op, keys, 32, CHUNK, 0, options.final ?? false, 0, buffer, data.length, flag];
    return { j, keys };
  }

  /** The value of what `run` returns (Piscina.move wraps it; piscina unwraps it before posting). */
  function unwrap(moved: unknown): TaskResult {
    return (moved as Record<symbol, unknown>)[Piscina.valueSymbol] as TaskResult;
  }

  test('zeroes every job’s key buffer: sealed, opened, failed, thrown and skipped alike', () => {
    const plaintext = randomBytes(2 * CHUNK);
    const jobs = [
      job(0, plaintext),
      job(1, randomBytes(2 * RECORD)), // fails to verify
      job(0, randomBytes(CHUNK + 1)), // throws: not whole chunks
      job(0, plaintext, { cancelled: true }),
    ];
    const [results, inputs] = unwrap(runInWorker(jobs.map((x) => x.j)));
    assert.ok(results[0] instanceof Uint8Array && results[0].length === 2 * RECORD);
    assert.deepEqual(results[1], { failedIndex: 0, truncated: false });
    assert.match((results[2] as { error: string }).error, /whole chunks/);
    assert.equal(results[3], SKIPPED);
    assert.equal(inputs.length, 4, 'every input buffer goes back');
    for (const [i, { keys }] of jobs.entries())
      assert.ok(
        keys.every((b) => b === 0),
        `job ${i}: key buffer zeroed`,
      );
  });

  test('the sealed output is what the chunk code produces', () => {
    const plaintext = randomBytes(3 * CHUNK + 5);
    const { j, keys } = job(0, plaintext, { final: true });
    const key = Buffer.from(keys.subarray(0, 32));
    const messageId = Buffer.from(keys.subarray(32));
    const [[out]] = unwrap(runInWorker([j]));
    const expected = sealChunks({
      key,
      messageId,
      chunkSize: CHUNK,
      firstIndex: 0,
      final: true,
      data: plaintext,
    });
    assert.deepEqual(Buffer.from(out as Uint8Array), expected);
    const opened = openChunks({
      key,
      messageId,
      chunkSize: CHUNK,
      firstIndex: 0,
      final: true,
      data: expected,
    });
    assert.ok(opened.ok && opened.plaintext.equals(plaintext));
  });
});

describe('auto mode', () => {
  const files = (entries: Record<string, string>) => (path: string) => {
    const text = entries[path];
    if (text === undefined) throw Object.assign(new Error(`ENOENT: ${path}`), { code: 'ENOENT' });
    return text;
  };
  const cpus = availableParallelism();

  test('effective cores: the cgroup v2 or v1 quota, rounded up, never above the CPUs we may run on', () => {
    assert.equal(effectiveCores(files({})), cpus, 'no cgroup files: all CPUs');
    assert.equal(effectiveCores(files({ '/sys/fs/cgroup/cpu.max': 'max 100000\n' })), cpus, 'no quota');
    assert.equal(effectiveCores(files({ '/sys/fs/cgroup/cpu.max': '100000 100000\n' })), 1);
    assert.equal(effectiveCores(files({ '/sys/fs/cgroup/cpu.max': '50000 100000\n' })), 1, 'half a CPU: 1');
    assert.equal(
      effectiveCores(files({ '/sys/fs/cgroup/cpu.max': '150000 100000\n' })),
      Math.min(cpus, 2),
      '1.5 CPUs: 2',
    );
    assert.equal(
      effectiveCores(files({ '/sys/fs/cgroup/cpu.max': '6400000 100000\n' })),
      cpus,
      'quota above CPUs',
    );
    assert.equal(
      effectiveCores(
        files({
          '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '100000\n',
          '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n',
        }),
      ),
      1,
      'cgroup v1',
    );
    assert.equal(
      effectiveCores(
        files({
          '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1\n',
          '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000\n',
        }),
      ),
      cpus,
      'cgroup v1 without a quota',
    );
    assert.equal(effectiveCores(files({ '/sys/fs/cgroup/cpu.max': 'garbage' })), cpus);
  });

  test('auto is inline up to the threshold and workers above it; explicit modes are kept', () => {
    assert.equal(resolvePoolMode('auto', 1), 'inline');
    assert.equal(resolvePoolMode('auto', AUTO_INLINE_MAX_CORES), 'inline');
    assert.equal(resolvePoolMode('auto', AUTO_INLINE_MAX_CORES + 1), 'workers');
    assert.equal(resolvePoolMode('workers', 1), 'workers');
    assert.equal(resolvePoolMode('inline', 64), 'inline');
  });

  test('pool.threads: null is one thread per core sealbox may use; an explicit count is kept', () => {
    const onEight = (entries: Record<string, string>) => effectiveCores(files(entries), 8);
    const quota = { '/sys/fs/cgroup/cpu.max': '150000 100000\n' };
    assert.equal(poolThreads(null, onEight(quota)), 2, 'a quota of 1.5 CPUs on 8 cores: 2 threads');
    assert.equal(poolThreads(null, onEight({})), 8, 'no quota: the CPUs we may run on');
    assert.equal(poolThreads(null, onEight({ '/sys/fs/cgroup/cpu.max': 'max 100000\n' })), 8);
    assert.equal(poolThreads(undefined, onEight(quota)), 2, 'absent is the same as null');
    assert.equal(poolThreads(3, onEight(quota)), 3, 'explicit: as set, even above the quota');
    assert.equal(poolThreads(3, onEight({})), 3);
    assert.equal(poolThreads(null, 0), 1, 'never below 1');
  });

  test('a workers pool with threads null starts poolThreads(null) workers and reports them', () => {
    const pool = new ChunkPool({ mode: 'workers', threads: null, maxQueue: 16, inlineBelowBytes: 0 });
    pools.push(pool);
    assert.equal(pool.stats.threads, poolThreads(null));
    assert.equal(poolThreads(null), effectiveCores());
    const inline = new ChunkPool({ mode: 'inline', threads: null, maxQueue: 16, inlineBelowBytes: 0 });
    assert.equal(inline.stats.threads, 0, 'no workers inline');
  });
});
