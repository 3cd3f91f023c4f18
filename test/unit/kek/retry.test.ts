/**
 * The vault retry layer (src/kek/retry.ts) on a fake clock: Retry-After handling, full-jitter
 * backoff bounds, what is never retried, attempt bounds, the per-call deadline and caller aborts.
 */
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { describe, test } from 'node:test';
import { createHttpHeaders, createPipelineRequest, RestError } from '@azure/core-rest-pipeline';
import {
  CallAbortedError,
  type Classification,
  classifyHttpError,
  DeadlineExceededError,
  parseRetryAfter,
  RetryCounters,
  RetryPolicy,
  type RetryPolicyOptions,
} from '../../../src/kek/retry';

const T0 = Date.parse('2026-03-01T12:00:00Z');

/** A clock that moves only when told to; sleeping moves it at once. Timers fire as time passes. */
class FakeClock {
  t = T0;
  readonly sleeps: number[] = [];
  private timers: Array<{ at: number; fn: () => void }> = [];

  readonly now = () => this.t;

  readonly setTimer = (fn: () => void, ms: number) => {
    const timer = { at: this.t + ms, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  };

  readonly sleep = async (ms: number, signal: AbortSignal) => {
    this.sleeps.push(ms);
    if (signal.aborted) throw signal.reason;
    this.advance(ms);
    if (signal.aborted) throw signal.reason;
  };

  advance(ms: number): void {
    this.t += ms;
    const due = this.timers.filter((t) => t.at <= this.t);
    this.timers = this.timers.filter((t) => t.at > this.t);
    for (const t of due) t.fn();
  }

  get pendingTimers(): number {
    return this.timers.length;
  }
}

function restError(status: number, headers: Record<string, string> = {}, code?: string): RestError {
  const request = createPipelineRequest({ url: 'https://unit.vault.azure.net/keys/kek/v1/unwrapkey' });
  return new RestError(`status ${status}`, {
    statusCode: status,
    ...(code ? { code } : {}),
    request,
    response: { status, headers: createHttpHeaders(headers), request },
  });
}

function networkError(code: string): RestError {
  return new RestError(`connect ${code}`, { code });
}

function abortError(): Error {
  const err = new Error('The operation was aborted.');
  err.name = 'AbortError';
  return err;
}

function setup(options: Partial<RetryPolicyOptions> = {}, random: () => number = () => 0.5) {
  const clock = new FakeClock();
  const counters = new RetryCounters();
  const policy = new RetryPolicy(
    { maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 1000, timeoutMs: 10_000, ...options },
    {
      now: clock.now,
      sleep: clock.sleep,
      setTimer: clock.setTimer,
      random,
      onEvent: counters.observe,
    },
  );
  return { clock, counters, policy };
}

/** An attempt function that throws the given errors in turn, then returns "ok". */
function script(...errors: unknown[]) {
  const calls: AbortSignal[] = [];
  const fn = async (signal: AbortSignal) => {
    calls.push(signal);
    const next = errors.shift();
    if (next !== undefined) throw next;
    return 'ok';
  };
  return { fn, calls };
}

describe('parseRetryAfter', () => {
  const rows: Array<[string, string | undefined | null, number | undefined]> = [
    ['delay-seconds', '5', 5000],
    ['zero', '0', 0],
    ['padded', ' 2 ', 2000],
    ['HTTP-date ahead', new Date(T0 + 3000).toUTCString(), 3000],
    ['HTTP-date in the past', new Date(T0 - 60_000).toUTCString(), 0],
    ['RFC 850 date', 'Sunday, 01-Mar-26 12:00:07 GMT', 7000],
    ['negative', '-1', undefined],
    ['fraction', '1.5', undefined],
    ['garbage', 'soon', undefined],
    ['empty', '', undefined],
    ['absent', undefined, undefined],
    ['null', null, undefined],
  ];
  for (const [name, value, expected] of rows) {
    test(name, () => assert.equal(parseRetryAfter(value, T0), expected));
  }
});

describe('classifyHttpError', () => {
  const rows: Array<[string, unknown, Classification]> = [
    [
      '429 + Retry-After seconds',
      restError(429, { 'retry-after': '2' }),
      { retry: true, reason: 'throttled', retryAfterMs: 2000 },
    ],
    [
      '429 + retry-after-ms',
      restError(429, { 'retry-after-ms': '150' }),
      { retry: true, reason: 'throttled', retryAfterMs: 150 },
    ],
    [
      '429 + x-ms-retry-after-ms',
      restError(429, { 'x-ms-retry-after-ms': '40' }),
      { retry: true, reason: 'throttled', retryAfterMs: 40 },
    ],
    ['429 without a hint', restError(429), { retry: true, reason: 'throttled' }],
    [
      '503 + Retry-After',
      restError(503, { 'retry-after': '1' }),
      { retry: true, reason: 'server-error', retryAfterMs: 1000 },
    ],
    ['500', restError(500), { retry: true, reason: 'server-error' }],
    ['502', restError(502), { retry: true, reason: 'server-error' }],
    ['408', restError(408), { retry: true, reason: 'timeout' }],
    ['400', restError(400, {}, 'BadParameter'), { retry: false }],
    ['401', restError(401), { retry: false }],
    ['403', restError(403, {}, 'Forbidden'), { retry: false }],
    ['404', restError(404, {}, 'KeyNotFound'), { retry: false }],
    ['409', restError(409), { retry: false }],
    ['ECONNRESET', networkError('ECONNRESET'), { retry: true, reason: 'network' }],
    ['ECONNREFUSED', networkError('ECONNREFUSED'), { retry: true, reason: 'network' }],
    ['REQUEST_SEND_ERROR', networkError('REQUEST_SEND_ERROR'), { retry: true, reason: 'network' }],
    ['ETIMEDOUT', networkError('ETIMEDOUT'), { retry: true, reason: 'timeout' }],
    ['AbortError (SDK timeout)', abortError(), { retry: true, reason: 'timeout' }],
    ['TLS: self-signed chain', networkError('SELF_SIGNED_CERT_IN_CHAIN'), { retry: false }],
    ['TLS: host mismatch', networkError('ERR_TLS_CERT_ALTNAME_INVALID'), { retry: false }],
    [
      'CredentialUnavailableError',
      Object.assign(new Error('x'), { name: 'CredentialUnavailableError' }),
      { retry: false },
    ],
    ['TypeError (a bug)', new TypeError('x is undefined'), { retry: false }],
    ['not an object', 'boom', { retry: false }],
    ['null', null, { retry: false }],
  ];
  for (const [name, err, expected] of rows) {
    test(name, () => assert.deepEqual(classifyHttpError(err, T0), expected));
  }
});

describe('RetryPolicy.run', () => {
  test('success on the first attempt: one attempt, no sleep, no retry', async () => {
    const { clock, counters, policy } = setup();
    const { fn } = script();
    assert.equal(await policy.run('wrapKey', fn), 'ok');
    assert.equal(counters.attempts, 1);
    assert.equal(counters.successes, 1);
    assert.deepEqual(clock.sleeps, []);
    assert.equal(clock.pendingTimers, 0, 'the deadline timer is cancelled');
  });

  test('429 with Retry-After in seconds: waits exactly that long (not capped by maxDelayMs)', async () => {
    const { clock, counters, policy } = setup({ maxDelayMs: 500 });
    const { fn } = script(restError(429, { 'retry-after': '2' }), restError(429, { 'retry-after': '3' }));
    assert.equal(await policy.run('unwrapKey', fn), 'ok');
    assert.deepEqual(clock.sleeps, [2000, 3000]);
    assert.equal(counters.retries.throttled, 2);
    assert.equal(counters.attempts, 3);
  });

  test('429 with Retry-After as an HTTP-date: waits until then', async () => {
    const { clock, policy } = setup();
    const { fn } = script(restError(429, { 'retry-after': new Date(T0 + 4000).toUTCString() }));
    assert.equal(await policy.run('unwrapKey', fn), 'ok');
    assert.deepEqual(clock.sleeps, [4000]);
  });

  test('429 without Retry-After: exponential backoff with full jitter', async () => {
    const { clock, counters, policy } = setup({ baseDelayMs: 100, maxDelayMs: 1000 }, () => 0.5);
    const { fn } = script(restError(429), restError(429));
    assert.equal(await policy.run('wrapKey', fn), 'ok');
    // random 0.5 × cap, caps 100 then 200.
    assert.deepEqual(clock.sleeps, [50, 100]);
    assert.equal(counters.retries.throttled, 2);
  });

  const jitterRows: Array<[string, number]> = [
    ['random 0 → no wait', 0],
    ['random 0.5 → half the cap', 0.5],
    ['random just below 1 → just below the cap', 0.999_999],
  ];
  for (const [name, r] of jitterRows) {
    test(`5xx backoff stays within [0, min(maxDelay, base·2^n)): ${name}`, async () => {
      const { clock, counters, policy } = setup(
        { maxAttempts: 7, baseDelayMs: 100, maxDelayMs: 1000, timeoutMs: 60_000 },
        () => r,
      );
      const { fn } = script(...Array.from({ length: 6 }, () => restError(503)));
      assert.equal(await policy.run('unwrapKey', fn), 'ok');
      const caps = [100, 200, 400, 800, 1000, 1000];
      assert.equal(clock.sleeps.length, caps.length);
      clock.sleeps.forEach((d, i) => {
        assert.ok(d >= 0 && d < caps[i]!, `retry ${i}: ${d} not in [0, ${caps[i]})`);
        assert.equal(d, Math.floor(r * caps[i]!));
      });
      assert.equal(counters.retries['server-error'], 6);
    });
  }

  test('network errors and SDK timeouts are retried with their own reasons', async () => {
    const { counters, policy } = setup({ maxAttempts: 4 });
    const { fn } = script(networkError('ECONNRESET'), abortError(), restError(408));
    assert.equal(await policy.run('getKey', fn), 'ok');
    assert.equal(counters.retries.network, 1);
    assert.equal(counters.retries.timeout, 2);
  });

  const notRetried: Array<[string, unknown]> = [
    ['400', restError(400, {}, 'BadParameter')],
    ['401', restError(401)],
    ['403', restError(403, {}, 'Forbidden')],
    ['404', restError(404, {}, 'KeyNotFound')],
    ['TLS verification', networkError('UNABLE_TO_VERIFY_LEAF_SIGNATURE')],
  ];
  for (const [name, err] of notRetried) {
    test(`${name} is not retried: one attempt, the original error`, async () => {
      const { clock, counters, policy } = setup();
      const { fn, calls } = script(err);
      await assert.rejects(policy.run('unwrapKey', fn), (thrown) => thrown === err);
      assert.equal(calls.length, 1);
      assert.deepEqual(clock.sleeps, []);
      assert.equal(counters.failures['not-retryable'], 1);
    });
  }

  test('attempts are bounded: maxAttempts calls, then the last error', async () => {
    const { counters, policy } = setup({ maxAttempts: 3 });
    const last = restError(503);
    const { fn, calls } = script(restError(500), restError(502), last, restError(504));
    await assert.rejects(policy.run('wrapKey', fn), (thrown) => thrown === last);
    assert.equal(calls.length, 3);
    assert.equal(counters.failures['attempts-exhausted'], 1);
  });

  test('maxAttempts 1 never retries', async () => {
    const { policy } = setup({ maxAttempts: 1 });
    const { fn, calls } = script(restError(503));
    await assert.rejects(policy.run('wrapKey', fn));
    assert.equal(calls.length, 1);
  });

  test('deadline: a Retry-After past the deadline is not slept; the call fails at once', async () => {
    const { clock, counters, policy } = setup({ timeoutMs: 5000 });
    const throttled = restError(429, { 'retry-after': '30' });
    const { fn, calls } = script(throttled);
    await assert.rejects(policy.run('unwrapKey', fn), (err) => {
      assert.ok(err instanceof DeadlineExceededError);
      assert.equal(err.lastError, throttled);
      assert.equal(err.attempts, 1);
      return true;
    });
    assert.equal(calls.length, 1);
    assert.deepEqual(clock.sleeps, []);
    assert.equal(clock.t, T0, 'no time passed');
    assert.equal(counters.failures.deadline, 1);
  });

  test('deadline: slow attempts plus backoff never sleep past it', async () => {
    const { clock, policy } = setup(
      { maxAttempts: 10, baseDelayMs: 400, maxDelayMs: 400, timeoutMs: 2000 },
      () => 0.999,
    );
    let attempts = 0;
    const fn = async () => {
      attempts += 1;
      clock.advance(300); // each attempt takes 300 ms, then fails with a 503
      throw restError(503);
    };
    await assert.rejects(policy.run('unwrapKey', fn), DeadlineExceededError);
    assert.ok(clock.t <= T0 + 2000, `finished ${clock.t - T0} ms after start`);
    // 300 + 399 + 300 + 399 + 300 = 1698; the next 399 wait would end at 2097.
    assert.equal(attempts, 3);
    assert.deepEqual(clock.sleeps, [399, 399]);
  });

  test('deadline: an attempt still in flight is aborted when the deadline passes', async () => {
    const { clock, counters, policy } = setup({ timeoutMs: 1500 });
    let seen: AbortSignal | undefined;
    const hang = (signal: AbortSignal) =>
      new Promise<string>((_, reject) => {
        seen = signal;
        signal.addEventListener('abort', () => reject(abortError()));
      });
    const running = policy.run('wrapKey', hang);
    clock.advance(1499);
    assert.equal(seen?.aborted, false);
    clock.advance(1);
    await assert.rejects(running, DeadlineExceededError);
    assert.equal(seen?.aborted, true);
    assert.equal(counters.attempts, 1, 'a deadline abort is not retried');
    assert.equal(counters.failures.deadline, 1);
  });

  test('deadline mid-attempt after a 429: the error reports the throttling, not the abort', async () => {
    const { clock, policy } = setup({ timeoutMs: 3000 });
    const throttled = restError(429, { 'retry-after-ms': '1000' });
    let attempts = 0;
    const fn = (signal: AbortSignal) => {
      attempts += 1;
      if (attempts === 1) return Promise.reject(throttled);
      // The retry hangs until the deadline aborts it.
      return new Promise<string>((_, reject) => signal.addEventListener('abort', () => reject(abortError())));
    };
    const running = policy.run('unwrapKey', fn);
    await new Promise((r) => setImmediate(r));
    clock.advance(3000);
    await assert.rejects(running, (err) => {
      assert.ok(err instanceof DeadlineExceededError);
      assert.equal(err.lastError, throttled);
      assert.equal(err.attempts, 2);
      return true;
    });
  });

  test('caller abort during a wait stops the retries', async () => {
    const caller = new AbortController();
    const { clock, policy } = setup();
    const sleeps: number[] = [];
    // This sleep never completes on its own: only the abort ends it.
    const blockingPolicy = new RetryPolicy(policy.options, {
      now: clock.now,
      setTimer: clock.setTimer,
      random: () => 0.5,
      sleep: (ms, signal) =>
        new Promise((_, reject) => {
          sleeps.push(ms);
          signal.addEventListener('abort', () => reject(signal.reason));
        }),
    });
    const { fn, calls } = script(restError(503), restError(503));
    const running = blockingPolicy.run('unwrapKey', fn, caller.signal);
    await new Promise((r) => setImmediate(r));
    assert.equal(sleeps.length, 1);
    caller.abort(new Error('client went away'));
    await assert.rejects(running, (err) => {
      assert.ok(err instanceof CallAbortedError);
      assert.equal((err.reason as Error).message, 'client went away');
      return true;
    });
    assert.equal(calls.length, 1, 'no attempt after the abort');
    assert.equal(getEventListeners(caller.signal, 'abort').length, 0, 'listener removed');
  });

  test('caller abort during an attempt: CallAbortedError, not retried, not a deadline', async () => {
    const caller = new AbortController();
    const { counters, policy } = setup();
    const hang = (signal: AbortSignal) =>
      new Promise<string>((_, reject) => {
        signal.addEventListener('abort', () => reject(abortError()));
      });
    const running = policy.run('unwrapKey', hang, caller.signal);
    caller.abort();
    await assert.rejects(running, CallAbortedError);
    assert.equal(counters.attempts, 1);
    assert.equal(counters.failures.aborted, 1);
  });

  test('an already aborted caller signal makes no attempt', async () => {
    const { counters, policy } = setup();
    const { fn, calls } = script();
    await assert.rejects(policy.run('wrapKey', fn, AbortSignal.abort()), CallAbortedError);
    assert.equal(calls.length, 0);
    assert.equal(counters.attempts, 0);
  });

  test('a throwing event hook does not change the outcome', async () => {
    const clock = new FakeClock();
    const policy = new RetryPolicy(
      { maxAttempts: 2 },
      {
        now: clock.now,
        sleep: clock.sleep,
        setTimer: clock.setTimer,
        onEvent: () => {
          throw new Error('metrics bug');
        },
      },
    );
    const { fn } = script(restError(503));
    assert.equal(await policy.run('wrapKey', fn), 'ok');
  });

  test('with the real clock and timers, a hung attempt ends at the deadline', async () => {
    const policy = new RetryPolicy({ timeoutMs: 50 });
    const started = Date.now();
    const hang = (signal: AbortSignal) =>
      new Promise<string>((_, reject) => {
        signal.addEventListener('abort', () => reject(abortError()));
      });
    // The attempt never settles by itself: only the 50 ms deadline's timer can end it, on its one attempt.
    await assert.rejects(
      policy.run('getKey', hang),
      (err) => err instanceof DeadlineExceededError && err.timeoutMs === 50 && err.attempts === 1,
    );
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 45, `waited for the deadline: ${elapsed} ms`);
  });
});

describe('options', () => {
  const bad: Array<[string, Partial<RetryPolicyOptions>, RegExp]> = [
    ['zero attempts', { maxAttempts: 0 }, /retry\.maxAttempts/],
    ['fractional attempts', { maxAttempts: 1.5 }, /retry\.maxAttempts/],
    ['negative base delay', { baseDelayMs: -1 }, /retry\.baseDelayMs/],
    ['zero timeout', { timeoutMs: 0 }, /retry\.timeoutMs/],
    ['max below base', { baseDelayMs: 500, maxDelayMs: 100 }, /retry\.maxDelayMs/],
  ];
  for (const [name, options, message] of bad) {
    test(`refuses ${name}`, () => assert.throws(() => new RetryPolicy(options), message));
  }

  test('defaults: 3 attempts, 250 ms base, 4 s cap, 10 s deadline', () => {
    assert.deepEqual(new RetryPolicy().options, {
      maxAttempts: 3,
      baseDelayMs: 250,
      maxDelayMs: 4000,
      timeoutMs: 10_000,
    });
  });
});
