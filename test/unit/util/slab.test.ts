import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SlabAllocator } from '../../../src/util/slab';

test('hands out views of one slab, side by side, until the next does not fit', () => {
  const s = new SlabAllocator(1000);
  const a = s.take(300);
  const b = s.take(300);
  const c = s.take(400);
  assert.deepEqual([a.length, b.length, c.length], [300, 300, 400]);
  assert.equal(a.buffer, b.buffer);
  assert.equal(b.buffer, c.buffer);
  assert.equal(b.byteOffset, a.byteOffset + 300);
  assert.equal(c.byteOffset, b.byteOffset + 300);
  const d = s.take(1);
  assert.notEqual(d.buffer, a.buffer, 'a full slab is left behind, not overwritten');
  // Writing every view leaves the others intact.
  a.fill(1);
  b.fill(2);
  c.fill(3);
  d.fill(4);
  assert.ok(a.every((x) => x === 1) && b.every((x) => x === 2) && c.every((x) => x === 3));
});

test('a request larger than a slab gets a buffer of its own, and the slab stays in use', () => {
  const s = new SlabAllocator(1000);
  const small = s.take(10);
  const big = s.take(1001);
  assert.equal(big.length, 1001);
  assert.equal(big.byteOffset, 0);
  assert.equal(big.buffer.byteLength, 1001);
  const next = s.take(10);
  assert.equal(next.buffer, small.buffer);
  assert.equal(next.byteOffset, small.byteOffset + 10);
});

test('allocate is take, usable unbound (as a ChunkBatch allocate)', () => {
  const s = new SlabAllocator(100);
  const { allocate } = s;
  const a = allocate(40);
  const b = allocate(40);
  assert.equal(a.buffer, b.buffer);
  assert.equal(b.byteOffset, a.byteOffset + 40);
});
