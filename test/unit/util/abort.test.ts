import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LazySignal, signalOf, untilAborted } from '../../../src/util/abort';
import { ByteBudget } from '../../../src/util/budget';

test('LazySignal: no AbortController until the signal is asked for; aborting first is remembered', () => {
  const lazy = new LazySignal();
  assert.equal(lazy.materialized, false);
  assert.equal(lazy.aborted, false);
  const reason = new Error('gone');
  lazy.abort(reason);
  lazy.abort(new Error('second')); // the first reason stands
  assert.equal(lazy.aborted, true);
  assert.equal(lazy.materialized, false, 'aborting makes no controller');
  const signal = signalOf(lazy);
  assert.equal(lazy.materialized, true);
  assert.equal(signal.aborted, true);
  assert.equal(signal.reason, reason);
  assert.equal(lazy.signal, signal, 'one signal per call');
});

test('LazySignal: a signal asked for before the abort fires its listeners when it comes', async () => {
  const lazy = new LazySignal();
  const never = new Promise<never>(() => {});
  const waiting = untilAborted(never, signalOf(lazy));
  lazy.abort(new Error('cancelled'));
  await assert.rejects(waiting, /cancelled/);
  const plain = new AbortController().signal;
  assert.equal(signalOf(plain), plain);
  assert.equal(signalOf(undefined), undefined);
});

test('ByteBudget.tryAcquire: a caller that fits never makes its lazy signal; one that waits does', async () => {
  const budget = new ByteBudget(10);
  const fits = new LazySignal();
  assert.equal(await budget.tryAcquire(10, 100, fits), 10);
  assert.equal(fits.materialized, false);
  const waits = new LazySignal();
  const queued = budget.tryAcquire(5, 100, waits);
  assert.ok(queued);
  assert.equal(waits.materialized, true);
  waits.abort(new Error('cancelled while queued'));
  await assert.rejects(queued, /cancelled while queued/);
  assert.equal(budget.queuedBytes, 0);
  budget.release(10);
  assert.equal(budget.inUse, 0);
});
