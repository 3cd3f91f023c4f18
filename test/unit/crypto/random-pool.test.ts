import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RANDOM_POOL_BLOCK_BYTES, RandomPool } from '../../../src/crypto/random-pool';

test('message ids from the pool never repeat, across many refills', () => {
  const pool = new RandomPool();
  const seen = new Set<string>();
  const count = 10 * (RANDOM_POOL_BLOCK_BYTES / 32) + 7;
  for (let i = 0; i < count; i++) {
    const id = pool.take(32);
    assert.equal(id.length, 32);
    const hex = id.toString('hex');
    assert.ok(!seen.has(hex), `id ${i} repeated`);
    seen.add(hex);
  }
  assert.equal(pool.refills, 11);
});

test('refill boundaries: a take that does not fit the rest of a block starts a fresh block', () => {
  // Block of 100 bytes, takes of 32: 3 fit (96), the 4th refills and the 4 leftover bytes are dropped.
  const pool = new RandomPool(100);
  const takes = Array.from({ length: 7 }, () => pool.take(32));
  assert.equal(pool.refills, 3); // takes 0–2 from block 1, 3–5 from block 2, 6 from block 3
  // A take of exactly the rest of a block does not refill; the next one does.
  const exact = new RandomPool(64);
  exact.take(32);
  exact.take(32);
  assert.equal(exact.refills, 1);
  exact.take(1);
  assert.equal(exact.refills, 2);
  // Every id is its own memory: a later refill does not change an id handed out earlier.
  const before = takes.map((t) => Buffer.from(t));
  for (let i = 0; i < 20; i++) pool.take(32);
  assert.deepEqual(takes, before);
  for (const t of takes) assert.equal(t.buffer.byteLength, 32, 'owns a 32-byte ArrayBuffer');
});

test('no byte is handed out twice: consecutive takes never overlap within a block', () => {
  // With a 1-byte granularity the bytes of consecutive takes must be the block's bytes in order, once
  // each; a pool that handed out the same region twice would return equal buffers here.
  const pool = new RandomPool(4096);
  const a = pool.take(2048);
  const b = pool.take(2048);
  assert.notDeepEqual(a, b);
  assert.equal(pool.refills, 1);
  pool.take(1);
  assert.equal(pool.refills, 2);
});

test('takes larger than a block come straight from the CSPRNG; bad sizes are refused', () => {
  const pool = new RandomPool(64);
  const big = pool.take(65);
  assert.equal(big.length, 65);
  assert.equal(pool.refills, 0);
  assert.equal(pool.take(0).length, 0);
  assert.throws(() => pool.take(-1), RangeError);
  assert.throws(() => pool.take(1.5), RangeError);
  assert.throws(() => new RandomPool(0), RangeError);
});
