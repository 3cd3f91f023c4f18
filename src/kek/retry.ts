/**
 * The one retry layer around vault calls. The Azure SDK clients are built with
 * `retryOptions: { maxRetries: 0 }`, so every HTTP attempt is one attempt here and the counts in
 * `RetryEvent`s are the counts on the wire (apart from the SDK's internal authentication-challenge
 * round trip, which is not a retry).
 *
 * Policy:
 * - 429: wait what the server asked for (`retry-after-ms`, `x-ms-retry-after-ms`, `Retry-After` in
 *   seconds or as an HTTP-date); without a hint, back off like a 5xx. A server hint is a floor, not
 *   capped by `maxDelayMs` (retrying earlier just gets throttled again), only by the deadline.
 * - 408, 5xx, timeouts and network errors: exponential backoff with full jitter,
 *   `random() * min(maxDelayMs, baseDelayMs * 2^retry)`.
 * - Everything else (other 4xx, TLS verification failures, credential errors, bugs): no retry.
 * - At most `maxAttempts` attempts, all inside one deadline of `timeoutMs` per call: the in-flight
 *   attempt is aborted when it passes, and a retry whose wait would end past it is not started.
 * - The caller's signal stops everything at once, including a wait.
 *
 * Pure apart from the injected clock, sleep, random source and timer; no Azure imports.
 */
import { setTimeout as delay } from 'node:timers/promises';

/** How the retry layer behaves; all times in milliseconds. */
export interface RetryPolicyOptions {
  /** Attempts per call, the first included (1 = never retry). */
  readonly maxAttempts: number;
  /** Backoff cap for the first retry; doubles per retry. */
  readonly baseDelayMs: number;
  /** Largest computed backoff (server Retry-After hints are not capped by it). */
  readonly maxDelayMs: number;
  /** Deadline for the whole call: every attempt and every wait. */
  readonly timeoutMs: number;
}

export const DEFAULT_RETRY_POLICY: Readonly<RetryPolicyOptions> = Object.freeze({
  maxAttempts: 3,
  baseDelayMs: 250,
  maxDelayMs: 4_000,
  timeoutMs: 10_000,
});

/** Why an attempt is retried; a bounded label set for metrics. */
export type RetryReason = 'throttled' | 'server-error' | 'timeout' | 'network';
export const RETRY_REASONS: readonly RetryReason[] = ['throttled', 'server-error', 'timeout', 'network'];

/** Why a call failed in the end; a bounded label set for metrics. */
export type FailureKind = 'not-retryable' | 'attempts-exhausted' | 'deadline' | 'aborted';

/** The verdict on one failed attempt. */
export type Classification =
  | { readonly retry: false }
  | { readonly retry: true; readonly reason: RetryReason; readonly retryAfterMs?: number };

/** What the retry layer reports, for counters and logs. Labels only; never error messages. */
export type RetryEvent =
  | { readonly type: 'attempt'; readonly operation: string; readonly attempt: number }
  | {
      readonly type: 'retry';
      readonly operation: string;
      readonly attempt: number;
      readonly reason: RetryReason;
      readonly delayMs: number;
    }
  | {
      readonly type: 'success';
      readonly operation: string;
      readonly attempts: number;
      readonly elapsedMs: number;
    }
  | {
      readonly type: 'failure';
      readonly operation: string;
      readonly attempts: number;
      readonly elapsedMs: number;
      readonly failure: FailureKind;
    };

/** Injected time and randomness, so tests run without real waits. */
export interface RetryDeps {
  /**
   * Wall-clock milliseconds (epoch), as Retry-After HTTP-dates need. Only "does the next wait fit
   * before the deadline" and elapsed times use it; the deadline itself is a timer (`setTimer`), so a
   * clock step cannot stretch a call.
   */
  now(): number;
  /** Resolves after `ms`, rejects when `signal` aborts. */
  sleep(ms: number, signal: AbortSignal): Promise<void>;
  /** Uniform in [0, 1). */
  random(): number;
  /** Calls `fn` after `ms` unless the returned cancel function is called first. */
  setTimer(fn: () => void, ms: number): () => void;
  /** Classifies a failed attempt; defaults to `classifyHttpError`. */
  classify(err: unknown, nowMs: number): Classification;
  /** Receives every event; must not throw. */
  onEvent?: (event: RetryEvent) => void;
}

export const defaultRetryDeps: RetryDeps = {
  now: Date.now,
  sleep: (ms, signal) => delay(ms, undefined, { signal }),
  random: Math.random,
  setTimer(fn, ms) {
    // Not unref'd: a call in flight keeps the process alive until it ends, at the latest here.
    const timer = setTimeout(fn, ms);
    return () => clearTimeout(timer);
  },
  classify: classifyHttpError,
};

/** The call's deadline passed, during an attempt or before a retry could fit. */
export class DeadlineExceededError extends Error {
  override readonly name = 'DeadlineExceededError';
  constructor(
    readonly timeoutMs: number,
    /** The last attempt's error, if an attempt failed before the deadline. */
    readonly lastError: unknown,
    readonly attempts: number,
  ) {
    super(`no answer within the ${timeoutMs} ms deadline after ${attempts} attempt(s)`, { cause: lastError });
  }
}

/** The caller's signal aborted the call. */
export class CallAbortedError extends Error {
  override readonly name = 'CallAbortedError';
  constructor(
    readonly reason: unknown,
    readonly attempts: number,
  ) {
    super('the call was aborted by its caller', { cause: reason });
  }
}

/** Validates options; errors name the field. */
export function checkRetryOptions(options: RetryPolicyOptions): RetryPolicyOptions {
  const int = (name: keyof RetryPolicyOptions, min: number) => {
    const v = options[name];
    if (!Number.isInteger(v) || v < min) throw new RangeError(`retry.${name} must be an integer >= ${min}`);
  };
  int('maxAttempts', 1);
  int('baseDelayMs', 0);
  int('maxDelayMs', 0);
  int('timeoutMs', 1);
  if (options.maxDelayMs < options.baseDelayMs) {
    throw new RangeError('retry.maxDelayMs must be >= retry.baseDelayMs');
  }
  return options;
}

/** Runs one vault call with the policy above. One instance serves all calls of a provider. */
export class RetryPolicy {
  readonly options: RetryPolicyOptions;
  private readonly deps: RetryDeps;

  constructor(options: Partial<RetryPolicyOptions> = {}, deps: Partial<RetryDeps> = {}) {
    this.options = checkRetryOptions({ ...DEFAULT_RETRY_POLICY, ...options });
    this.deps = { ...defaultRetryDeps, ...deps };
  }

  /** The full-jitter backoff before retry number `retry` (0 for the first retry). */
  backoffMs(retry: number): number {
    const { baseDelayMs, maxDelayMs } = this.options;
    const cap = Math.min(maxDelayMs, baseDelayMs * 2 ** Math.min(retry, 30));
    return Math.floor(this.deps.random() * cap);
  }

  /**
   * Calls `attempt` until it succeeds, fails for good, runs out of attempts or time, or `signal`
   * aborts. `attempt` must pass the given signal to the vault call.
   *
   * Throws the last attempt's own error when it is not retryable or attempts ran out;
   * `DeadlineExceededError` when the deadline passed or no retry fits before it;
   * `CallAbortedError` when the caller aborted.
   */
  async run<T>(
    operation: string,
    attempt: (signal: AbortSignal, attemptNumber: number) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    const { now, sleep, setTimer, classify } = this.deps;
    const { maxAttempts, timeoutMs } = this.options;
    const started = now();
    const deadlineAt = started + timeoutMs;
    let attempts = 0;
    const fail = (failure: FailureKind, err: unknown): never => {
      this.emit({ type: 'failure', operation, attempts, elapsedMs: now() - started, failure });
      throw err;
    };
    if (signal?.aborted) fail('aborted', new CallAbortedError(signal.reason, 0));

    // One controller per call rather than AbortSignal.any([signal, AbortSignal.timeout()]): listeners
    // and the timer are released in `finally`, and AbortSignal.any() leaks when one source signal is
    // long-lived on Node 20/22 (nodejs/node#54614, #55351).
    const controller = new AbortController();
    let deadlinePassed = false;
    const cancelTimer = setTimer(() => {
      deadlinePassed = true;
      controller.abort(new DeadlineExceededError(timeoutMs, undefined, attempts));
    }, timeoutMs);
    const onCallerAbort = () => controller.abort(signal?.reason);
    signal?.addEventListener('abort', onCallerAbort, { once: true });
    /** The failure that made the call retry: what the call was up against if the deadline ends it mid-attempt. */
    let retried: unknown;
    try {
      for (;;) {
        attempts += 1;
        this.emit({ type: 'attempt', operation, attempt: attempts });
        let failed: unknown;
        try {
          const value = await attempt(controller.signal, attempts);
          this.emit({ type: 'success', operation, attempts, elapsedMs: now() - started });
          return value;
        } catch (err) {
          failed = err;
        }
        // Whatever the attempt threw after an abort (usually the SDK's AbortError), the abort is
        // the reason.
        if (signal?.aborted) fail('aborted', new CallAbortedError(signal.reason, attempts));
        // An attempt cut off by the deadline failed with the abort, which says nothing about the vault:
        // report the failure that made us retry (a 429 stays "throttled"), if there was one.
        if (deadlinePassed)
          fail('deadline', new DeadlineExceededError(timeoutMs, retried ?? failed, attempts));
        const verdict = classify(failed, now());
        if (!verdict.retry) fail('not-retryable', failed);
        if (attempts >= maxAttempts) fail('attempts-exhausted', failed);
        const retry = verdict as Extract<Classification, { retry: true }>;
        const wait = Math.max(0, retry.retryAfterMs ?? this.backoffMs(attempts - 1));
        // Postcondition: no wait ends past the deadline; give up now instead of sleeping into it.
        if (now() + wait >= deadlineAt)
          fail('deadline', new DeadlineExceededError(timeoutMs, failed, attempts));
        retried = failed;
        this.emit({ type: 'retry', operation, attempt: attempts, reason: retry.reason, delayMs: wait });
        try {
          await sleep(wait, controller.signal);
        } catch {
          if (signal?.aborted) fail('aborted', new CallAbortedError(signal.reason, attempts));
          fail('deadline', new DeadlineExceededError(timeoutMs, failed, attempts));
        }
      }
    } finally {
      cancelTimer();
      signal?.removeEventListener('abort', onCallerAbort);
    }
  }

  private emit(event: RetryEvent): void {
    try {
      this.deps.onEvent?.(event);
    } catch {
      // Metrics must never change the outcome of a vault call.
    }
  }
}

/** Counts events by kind; plug `observe` into `onEvent` (tests now, metrics later). */
export class RetryCounters {
  attempts = 0;
  successes = 0;
  readonly retries: Record<RetryReason, number> = { throttled: 0, 'server-error': 0, timeout: 0, network: 0 };
  readonly failures: Record<FailureKind, number> = {
    'not-retryable': 0,
    'attempts-exhausted': 0,
    deadline: 0,
    aborted: 0,
  };
  /** Delays chosen before each retry, in order. */
  readonly delays: number[] = [];

  readonly observe = (event: RetryEvent): void => {
    switch (event.type) {
      case 'attempt':
        this.attempts += 1;
        break;
      case 'retry':
        this.retries[event.reason] += 1;
        this.delays.push(event.delayMs);
        break;
      case 'success':
        this.successes += 1;
        break;
      case 'failure':
        this.failures[event.failure] += 1;
        break;
    }
  };
}

/** The parts of an HTTP client error this module reads (Azure's RestError has them all). */
interface HttpErrorLike {
  readonly name?: unknown;
  readonly code?: unknown;
  readonly statusCode?: unknown;
  readonly response?: { readonly headers?: { get?(name: string): string | undefined } };
}

/**
 * TLS verification failures: retrying cannot help, and the fix is configuration (the CA file).
 * Node reports these as `err.code` on the socket error, which the SDK copies into RestError.code.
 */
export const TLS_VERIFY_ERROR_CODES: ReadonlySet<string> = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'HOSTNAME_MISMATCH',
]);

/** Credential errors from @azure/identity that retrying will not fix. */
const PERMANENT_ERROR_NAMES = new Set([
  'CredentialUnavailableError',
  'AggregateAuthenticationError',
  'AuthenticationRequiredError',
]);

/**
 * The default classifier: HTTP status first (429 → throttled with the server's hint, 408 →
 * timeout, 5xx → server-error, any other status → no retry), then transport failures (an abort we
 * did not ask for → timeout, a socket error → network, TLS verification → no retry).
 */
export function classifyHttpError(err: unknown, nowMs: number): Classification {
  if (err === null || typeof err !== 'object') return { retry: false };
  const e = err as HttpErrorLike;
  const status = typeof e.statusCode === 'number' ? e.statusCode : undefined;
  if (status !== undefined) {
    const retryAfterMs = retryAfterFromHeaders(e.response?.headers, nowMs);
    const hint = retryAfterMs === undefined ? {} : { retryAfterMs };
    if (status === 429) return { retry: true, reason: 'throttled', ...hint };
    if (status === 408) return { retry: true, reason: 'timeout', ...hint };
    if (status >= 500 && status <= 599) return { retry: true, reason: 'server-error', ...hint };
    return { retry: false };
  }
  const name = typeof e.name === 'string' ? e.name : '';
  const code = typeof e.code === 'string' ? e.code : '';
  if (PERMANENT_ERROR_NAMES.has(name)) return { retry: false };
  if (name === 'AbortError' || name === 'TimeoutError') return { retry: true, reason: 'timeout' };
  if (TLS_VERIFY_ERROR_CODES.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) {
    return { retry: false };
  }
  if (code === 'ETIMEDOUT' || code === 'ESOCKETTIMEDOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
    return { retry: true, reason: 'timeout' };
  }
  // A RestError without a status never reached the server's HTTP layer (REQUEST_SEND_ERROR or an
  // errno code such as ECONNRESET, ECONNREFUSED, ENOTFOUND, EAI_AGAIN).
  if (name === 'RestError' || /^E[A-Z0-9_]+$/.test(code)) return { retry: true, reason: 'network' };
  return { retry: false };
}

function retryAfterFromHeaders(
  headers: { get?(name: string): string | undefined } | undefined,
  nowMs: number,
): number | undefined {
  if (typeof headers?.get !== 'function') return undefined;
  for (const name of ['retry-after-ms', 'x-ms-retry-after-ms']) {
    const ms = parseMilliseconds(headers.get(name));
    if (ms !== undefined) return ms;
  }
  return parseRetryAfter(headers.get('retry-after'), nowMs);
}

function parseMilliseconds(value: string | undefined | null): number | undefined {
  if (value == null || !/^\s*\d+(\.\d+)?\s*$/.test(value)) return undefined;
  return Math.ceil(Number(value));
}

/**
 * Parses a Retry-After value (RFC 9110 §10.2.3): delay-seconds, or an HTTP-date resolved against
 * `nowMs` on the wall clock (`Date.now()` by default). Returns milliseconds ≥ 0, or undefined when
 * absent or unparsable.
 */
export function parseRetryAfter(
  value: string | undefined | null,
  nowMs: number = Date.now(),
): number | undefined {
  if (value == null) return undefined;
  const text = value.trim();
  if (text === '') return undefined;
  if (/^\d+$/.test(text)) return Number(text) * 1000;
  // Only the date forms; Date.parse would also accept "5" or "-1" as years.
  if (!/^[A-Za-z]{3,9},? /.test(text)) return undefined;
  const at = Date.parse(text);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - nowMs);
}
