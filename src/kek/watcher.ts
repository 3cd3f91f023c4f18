/**
 * The key watcher: reads the state of the KEK versions that matter from the vault and reports it to
 * the key-state model (cache/key-states.ts), which revokes or restores. It also adopts rotations: when
 * a key's current version differs from the one wrapping new DEKs, new DEKs move to it.
 *
 * What it polls, every `pollIntervalMs` (jittered ±10 %) and once at start (so every alias has a health
 * verdict from the beginning): each alias's current version (one GET per alias), every other version
 * with cached DEKs, and every version the key-state model refuses or suspects. Nothing else: versions
 * named only by ciphertext headers are never watched (key-states.ts explains why that set is bounded).
 * It also runs the confirming checks the key-state model asks for (a refused operation tried once more
 * after `refusalConfirmMs`), at their due time and on every poll while they are pending.
 *
 * Cost control: every vault request the watcher makes goes through one pacer — at most
 * `maxConcurrentChecks` at once and `maxChecksPerSecond` on average — so a sidecar with many versions
 * in use spreads its checks instead of bursting them into the vault's shared throttling budget
 * (docs/operations.md, "Fleet budget"). Health answers from the last results, never from a vault call.
 *
 * A vault that does not answer (network, 5xx, throttling) is no verdict: the previous state stands,
 * and cached DEKs keep serving until their own TTL.
 */
import { randomFillSync } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { KeyAttributes, KeyOperationName, KeyState, KeyStateView } from '../cache/key-states';
import { ErrorCode, isSealboxError, SealboxError } from '../errors';
import type { Logger } from '../log/logger';
import { KEY_WATCHER } from './audit';
import type { KekProvider } from './provider';
import type { KekRegistry } from './registry';

export type { KeyState } from '../cache/key-states';

/** What the watcher needs from the DEK cache. */
export interface WatchedCache {
  /** Versions with cached DEKs. */
  keyIdsInUse(): Set<string>;
  /** Alias → key id of the DEK sealing new messages. */
  activeKeyIds(): Map<string, string>;
  /** Retires an alias's encrypt DEKs so the next message wraps under the (new) current version. */
  invalidate(alias: string): void;
}

/** What the watcher reports to, and learns from, the key-state model (cache/key-states.ts). */
export interface WatchedStates {
  attributes(keyId: string, attributes: KeyAttributes): void;
  failed(keyId: string, err: unknown, operation: KeyOperationName): void;
  confirmedUsable(keyId: string, operation: KeyOperationName): void;
  confirmations(): Array<{
    keyId: string;
    operation: KeyOperationName;
    sample?: { algorithm: string; wrapped: Buffer };
  }>;
  watched(): Set<string>;
  describe(): KeyStateView[];
  stateOf(keyId: string): KeyState;
}

/** The last verdict about one alias's current version, for health. */
export interface CurrentCheck {
  readonly keyId: string;
  readonly state: KeyState;
  readonly lastError?: string;
}

export interface WatcherOptions {
  readonly pollIntervalMs: number;
  /** Vault requests per second the watcher makes at most, averaged (token bucket, burst = 1 s). */
  readonly maxChecksPerSecond: number;
  /** Vault requests the watcher has in flight at most. */
  readonly maxConcurrentChecks: number;
  readonly random?: () => number;
  /** Told about every vault request the watcher makes (metrics: watcher requests per second). */
  readonly onRequest?: (operation: KeyOperationName) => void;
}

export class KeyWatcher {
  /** Alias → key id of its current version, as last reported by the vault. */
  private readonly current = new Map<string, string>();
  private readonly lastAliasError = new Map<string, string>();
  private readonly listeners: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private confirmTimer: NodeJS.Timeout | undefined;
  private confirmAt = Number.POSITIVE_INFINITY;
  private running: Promise<void> | undefined;
  private stopped = true;
  /** Set when the vault throttled a request of the current poll: the poll's remaining requests are skipped. */
  private throttled = false;
  private readonly random: () => number;
  private readonly pacer: Pacer;

  constructor(
    private readonly registry: KekRegistry,
    private readonly cache: WatchedCache,
    private readonly states: WatchedStates,
    private readonly options: WatcherOptions,
    private readonly log: Logger,
  ) {
    this.random = options.random ?? Math.random;
    this.pacer = new Pacer(options.maxChecksPerSecond, options.maxConcurrentChecks);
  }

  /** Runs the first check now (health from the start), then polls every interval. */
  start(): void {
    this.stopped = false;
    this.checkNow().finally(() => this.schedule());
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.confirmTimer) clearTimeout(this.confirmTimer);
    this.timer = this.confirmTimer = undefined;
    this.pacer.close();
  }

  /**
   * Checks every watched version now, plus `extra` versions (admin RevokeKey). Concurrent calls without
   * extras share one run.
   */
  checkNow(extra: readonly string[] = []): Promise<void> {
    if (extra.length > 0) return this.checkAll(extra);
    this.running ??= this.checkAll().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /**
   * Schedules the confirming checks of a suspected refusal at `at` (ms since the epoch); the key-state
   * model's `onSuspect` hook calls this.
   */
  confirmLater(at: number): void {
    if (this.stopped || at >= this.confirmAt) return;
    if (this.confirmTimer) clearTimeout(this.confirmTimer);
    this.confirmAt = at;
    this.confirmTimer = setTimeout(
      () => {
        this.confirmTimer = undefined;
        this.confirmAt = Number.POSITIVE_INFINITY;
        this.throttled = false;
        this.confirm().finally(() => this.notify());
      },
      Math.max(0, at - Date.now()) + 5,
    );
    this.confirmTimer.unref();
  }

  /** Every tracked version's state (GetKeyStatus). */
  snapshot(): KeyStateView[] {
    return this.states.describe();
  }

  /** Alias → the last verdict about its current version (undefined: not read yet). */
  currentStates(): Map<string, CurrentCheck | undefined> {
    const out = new Map<string, CurrentCheck | undefined>();
    for (const alias of this.registry.aliases()) {
      const keyId = this.current.get(alias);
      const lastError = this.lastAliasError.get(alias);
      out.set(
        alias,
        keyId === undefined
          ? undefined
          : { keyId, state: this.states.stateOf(keyId), ...(lastError ? { lastError } : {}) },
      );
    }
    return out;
  }

  /** How many versions the next poll will read (metrics: watched versions). */
  watchedCount(): number {
    const ids = this.cache.keyIdsInUse();
    for (const id of this.states.watched()) ids.add(id);
    for (const id of this.current.values()) ids.add(id);
    return ids.size;
  }

  /** Called after every check (health answers from the results, never from a vault call). */
  onChecked(listener: () => void): void {
    this.listeners.push(listener);
  }

  private schedule(): void {
    if (this.stopped) return;
    // ±10 % jitter so many sidecars polling one vault spread out.
    const delay = this.options.pollIntervalMs * (0.9 + 0.2 * this.random());
    this.timer = setTimeout(() => {
      this.checkNow().finally(() => this.schedule());
    }, delay);
    this.timer.unref();
  }

  private async checkAll(extra: readonly string[] = []): Promise<void> {
    this.throttled = false;
    try {
      await this.checkKeys(extra);
      await this.confirm();
    } finally {
      this.notify();
    }
  }

  private notify(): void {
    for (const listener of this.listeners) {
      try {
        listener();
      } catch (err) {
        this.log.error({ err }, 'key watcher listener failed');
      }
    }
  }

  private async checkKeys(extra: readonly string[]): Promise<void> {
    const keyIds = this.cache.keyIdsInUse();
    for (const keyId of this.states.watched()) keyIds.add(keyId);
    for (const keyId of extra) keyIds.add(keyId);
    // Every configured key's current version (so a re-enabled or rotated key is seen even when no DEK
    // is cached under it), compared with the version sealing new messages (rotation).
    const active = this.cache.activeKeyIds();
    await Promise.all(
      this.registry.aliases().map(async (alias) => {
        const provider = this.registry.forAlias(alias);
        try {
          const latest = await this.request('getKey', () =>
            provider.refreshCurrentVersion(undefined, KEY_WATCHER),
          );
          this.current.set(alias, latest.keyId);
          this.lastAliasError.delete(alias);
          const activeKeyId = active.get(alias);
          if (activeKeyId !== undefined && latest.keyId !== activeKeyId) {
            this.log.info(
              { alias, from: activeKeyId, to: latest.keyId },
              'key rotated: new DEKs wrap under the new version',
            );
            this.cache.invalidate(alias);
          }
          this.states.attributes(latest.keyId, latest);
          keyIds.delete(latest.keyId);
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err);
          this.lastAliasError.set(alias, message.slice(0, 512));
          // getKey(name) speaks for the whole key: a 404 means every version is gone. Attribute the
          // verdict to the version last known current (one the vault vouched for before).
          const known = this.current.get(alias);
          if (known !== undefined) {
            this.states.failed(known, err, 'getKey');
            // One attempt per version per poll: not read again below by its version id.
            keyIds.delete(known);
          }
          this.log.warn({ alias, err: message }, 'key check failed');
        }
      }),
    );
    await Promise.all(
      [...keyIds].map(async (keyId) => {
        const owner = this.registry.ownerOf(keyId);
        if (!owner) return; // no configured key owns it: nothing to watch
        try {
          const status = await this.request('getKey', () =>
            owner.provider.status(keyId, undefined, { latest: false }, KEY_WATCHER),
          );
          this.states.attributes(keyId, status);
        } catch (err) {
          this.states.failed(keyId, err, 'getKey');
          this.log.warn(
            { keyId, err: err instanceof Error ? err.message : String(err) },
            'key check failed; the key-state model decides from its verdict',
          );
        }
      }),
    );
  }

  /** Runs the confirming checks the key-state model asks for: the refused operation, once more. */
  private async confirm(): Promise<void> {
    await Promise.all(
      this.states.confirmations().map(async ({ keyId, operation, sample }) => {
        const owner = this.registry.ownerOf(keyId);
        if (!owner) return;
        try {
          await this.request(operation, () => probe(owner.provider, keyId, operation, sample));
          this.states.confirmedUsable(keyId, operation);
        } catch (err) {
          this.states.failed(keyId, err, operation);
        }
      }),
    );
  }

  /**
   * One vault request, paced. Once the vault throttles (429 past the retry policy) the rest of the
   * round is skipped — no verdict, the previous state stands — instead of adding load to a vault that
   * asked for less; the next poll tries again.
   */
  private request<T>(operation: KeyOperationName, call: () => Promise<T>): Promise<T> {
    return this.pacer.run(async () => {
      if (this.throttled) {
        throw new SealboxError(
          ErrorCode.VAULT_THROTTLED,
          'skipped: the vault throttled an earlier check of this poll; the next poll tries again',
          { verdict: 'outage' },
        );
      }
      this.options.onRequest?.(operation);
      try {
        return await call();
      } catch (err) {
        if (isSealboxError(err, ErrorCode.VAULT_THROTTLED)) this.throttled = true;
        throw err;
      }
    });
  }
}

/**
 * One try of `operation` under `keyId` whose outcome confirms or clears a refusal. Key material made
 * or returned here is zeroed at once; nothing is kept.
 */
async function probe(
  provider: KekProvider,
  keyId: string,
  operation: KeyOperationName,
  sample: { algorithm: string; wrapped: Buffer } | undefined,
): Promise<void> {
  switch (operation) {
    case 'getKey':
      await provider.status(keyId, undefined, undefined, KEY_WATCHER);
      return;
    case 'wrapKey': {
      // A throwaway DEK: only whether the vault lets sealbox wrap matters.
      const dek = randomFillSync(Buffer.allocUnsafeSlow(32));
      try {
        await provider.wrap(dek, undefined, KEY_WATCHER);
      } finally {
        dek.fill(0);
      }
      return;
    }
    case 'unwrapKey': {
      // Without a sample nothing under this version was ever unwrapped here, so nothing is cached that
      // a revocation would zero: reading the key is the best available check.
      if (!sample) {
        await provider.status(keyId, undefined, undefined, KEY_WATCHER);
        return;
      }
      const dek = await provider.unwrap(keyId, sample.algorithm, sample.wrapped, undefined, KEY_WATCHER);
      dek.fill(0);
      return;
    }
  }
}

/**
 * At most `concurrency` calls at once and `perSecond` starts per second on average (a token bucket
 * with one second of burst, on the monotonic clock).
 */
export class Pacer {
  private tokens: number;
  private last = performance.now();
  private active = 0;
  private readonly queue: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly perSecond: number,
    private readonly concurrency: number,
  ) {
    this.tokens = Math.max(1, perSecond);
  }

  run<T>(call: () => Promise<T>): Promise<T> {
    return new Promise<void>((resolve) => {
      this.queue.push(resolve);
      this.pump();
    }).then(async () => {
      try {
        return await call();
      } finally {
        this.active--;
        this.pump();
      }
    });
  }

  /** Lets everything queued run at once (shutdown must not wait on pacing). */
  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.pump();
  }

  private pump(): void {
    const now = performance.now();
    const burst = Math.max(1, this.perSecond);
    this.tokens = Math.min(burst, this.tokens + ((now - this.last) / 1000) * this.perSecond);
    this.last = now;
    while (this.queue.length > 0 && (this.closed || (this.active < this.concurrency && this.tokens >= 1))) {
      if (!this.closed) this.tokens -= 1;
      this.active++;
      this.queue.shift()!();
    }
    if (this.queue.length > 0 && !this.closed && this.active < this.concurrency && !this.timer) {
      const waitMs = ((1 - this.tokens) / this.perSecond) * 1000;
      this.timer = setTimeout(
        () => {
          this.timer = undefined;
          this.pump();
        },
        Math.max(1, waitMs),
      );
      this.timer.unref();
    }
  }
}
