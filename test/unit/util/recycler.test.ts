import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BufferRecycler } from '../../../src/util/recycler';

test('a buffer given back is handed out again, as a view of exactly the size asked for', () => {
  const r = new BufferRecycler(4, 1 << 20);
  const a = r.take(1000);
  assert.equal(a.length, 1000);
  r.give(a.subarray(11)); // any view of it
  const b = r.take(900);
  assert.equal(b.buffer, a.buffer);
  assert.equal(b.length, 900);
  assert.deepEqual(r.held, { buffers: 0, bytes: 0 });
});

test('never reuses a buffer that is still lent out, even when given back twice', () => {
  const r = new BufferRecycler(4, 1 << 20);
  const a = r.take(100);
  r.give(a);
  r.give(a);
  assert.deepEqual(r.held, { buffers: 1, bytes: 100 });
  const b = r.take(100);
  assert.equal(b.buffer, a.buffer);
  r.give(b);
  r.give(a); // stale: the same memory was already given back once
  assert.deepEqual(r.held, { buffers: 1, bytes: 100 });
  const c = r.take(100);
  assert.notEqual(r.take(100).buffer, c.buffer);
});

test('ignores foreign buffers, keeps sizes within 2x, and respects its bounds', () => {
  const r = new BufferRecycler(2, 3000);
  r.give(Buffer.alloc(100));
  assert.deepEqual(r.held, { buffers: 0, bytes: 0 });
  const big = r.take(1000);
  r.give(big);
  assert.notEqual(r.take(400).buffer, big.buffer, 'a buffer over twice the size is not used');
  const [x, y, z] = [r.take(1000), r.take(1000), r.take(1000)];
  for (const b of [x, y, z]) r.give(b);
  assert.equal(r.held.buffers, 2);
  assert.ok(r.held.bytes <= 3000);
});
