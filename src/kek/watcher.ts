/**
 * The key watcher: polls the state of every KEK version in use and revokes (or restores) it in the DEK
 * cache, so a disabled, expired, deleted or inaccessible key stops serving within one poll interval
 * instead of when cached DEKs happen to expire. It also adopts rotations: when a key's latest version
 * differs from the one wrapping new DEKs, new DEKs move to it.
 *
 * Cost: one status GET per version in use (plus one "latest version" GET per key alias) per interval,
 * whatever the traffic. Health answers from the last results here, never from a vault call per probe.
 *
 * A vault that does not answer (network, 5xx, throttling) is no verdict: the previous state stands,
 * and cached DEKs keep serving until their own TTL — past that the cache needs the vault and fails
 * closed with UNAVAILABLE.
 */
import { ErrorCode, isSealboxError } from '../errors';
import type { Logger } from '../log/logger';
import { withAuditCaller } from './audit';
import type { KeyStatus } from './provider';
import type { KekRegistry } from './registry';

/** What the watcher acts on (the DEK cache implements it). */
export interface RevocationTarget {
  /** Key versions to check: those of cached DEKs and those currently refused. */
  keyIdsInUse(): Set<string>;
  /** Alias → key id of the DEK sealing new messages. */
  activeKeyIds(): Map<string, string>;
  revoke(keyId: string, reason: string): void;
  restore(keyId: string): void;
  /** Retires an alias's encrypt DEKs so the next message wraps under the (new) current version. */
  invalidate(alias: string): void;
}

export type KeyState =
  | 'enabled'
  | 'disabled'
  | 'expired'
  | 'not-yet-valid'
  | 'deleted'
  | 'forbidden'
  | 'unknown';

/** The last verdict about one key version. */
export interface KeyCheck {
  readonly keyId: string;
  readonly state: KeyState;
  /** When the vault last gave a verdict (not when it last failed to answer). */
  readonly checkedAt?: Date;
  /** The last failure to get a verdict, if the latest attempt failed. */
  readonly lastError?: string;
}

export interface WatcherOptions {
  readonly pollIntervalMs: number;
  readonly now?: () => number;
  readonly random?: () => number;
}

export class KeyWatcher {
  private readonly results = new Map<string, KeyCheck>();
  /** Alias → key id of its current version, as last reported by the vault. */
  private readonly current = new Map<string, string>();
  private readonly listeners: Array<() => void> = [];
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(
    private readonly registry: KekRegistry,
    private readonly target: RevocationTarget,
    private readonly options: WatcherOptions,
    private readonly log: Logger,
  ) {
    this.now = options.now ?? Date.now;
    this.random = options.random ?? Math.random;
  }

  /** Starts polling (the first check runs after one interval: at start nothing is cached yet). */
  start(): void {
    this.stopped = false;
    this.schedule();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /**
   * Checks every version in use now, plus `extra` versions (webhook and admin use this). Concurrent
   * calls without extras share one run.
   */
  checkNow(extra: readonly string[] = []): Promise<void> {
    if (extra.length > 0) return this.checkAll(extra);
    this.running ??= this.checkAll().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  /** The last verdict per key version. */
  snapshot(): KeyCheck[] {
    return [...this.results.values()];
  }

  /** Alias → the last verdict about its current version (undefined: not checked yet). */
  currentStates(): Map<string, KeyCheck | undefined> {
    const out = new Map<string, KeyCheck | undefined>();
    for (const alias of this.registry.aliases()) {
      const keyId = this.current.get(alias);
      out.set(alias, keyId === undefined ? undefined : this.results.get(keyId));
    }
    return out;
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
    try {
      await withAuditCaller({ caller: 'key-watcher' }, () => this.checkKeys(extra));
    } finally {
      for (const listener of this.listeners) listener();
    }
  }

  private async checkKeys(extra: readonly string[]): Promise<void> {
    const keyIds = this.target.keyIdsInUse();
    for (const keyId of extra) keyIds.add(keyId);
    // Every configured key's current version (so a re-enabled or rotated key is seen even when no DEK
    // is cached under it), compared with the version sealing new messages (rotation).
    const active = this.target.activeKeyIds();
    for (const alias of this.registry.aliases()) {
      const provider = this.registry.forAlias(alias);
      if (!provider.refreshCurrentVersion) continue;
      const activeKeyId = active.get(alias);
      try {
        const latest = await provider.refreshCurrentVersion();
        this.current.set(alias, latest.keyId);
        if (activeKeyId !== undefined && latest.keyId !== activeKeyId) {
          this.log.info(
            { alias, from: activeKeyId, to: latest.keyId },
            'key rotated: new DEKs wrap under the new version',
          );
          this.target.invalidate(alias);
        }
        this.record(latest.keyId, latest);
        keyIds.delete(latest.keyId);
      } catch (err) {
        if (activeKeyId !== undefined) this.failed(activeKeyId, err);
        else
          this.log.warn({ alias, err: err instanceof Error ? err.message : String(err) }, 'key check failed');
      }
    }
    await Promise.all(
      [...keyIds].map(async (keyId) => {
        let provider: ReturnType<KekRegistry['forKeyId']>;
        try {
          provider = this.registry.forKeyId(keyId);
        } catch {
          return; // no configured key owns it: nothing to watch
        }
        try {
          this.record(keyId, await provider.status(keyId));
        } catch (err) {
          this.failed(keyId, err);
        }
      }),
    );
  }

  /** Applies a status: revoke for any state that forbids use, restore when enabled and in date. */
  private record(keyId: string, status: KeyStatus): void {
    const now = this.now();
    const state: KeyState = !status.enabled
      ? 'disabled'
      : status.expiresOn && status.expiresOn.getTime() <= now
        ? 'expired'
        : status.notBefore && status.notBefore.getTime() > now
          ? 'not-yet-valid'
          : 'enabled';
    this.apply(keyId, state);
  }

  private failed(keyId: string, err: unknown): void {
    const verdict: KeyState | undefined = isSealboxError(err, ErrorCode.KEY_NOT_FOUND)
      ? 'deleted'
      : isSealboxError(err, ErrorCode.PERMISSION_DENIED)
        ? 'forbidden'
        : isSealboxError(err, ErrorCode.KEY_DISABLED)
          ? 'disabled'
          : undefined;
    if (verdict) {
      this.apply(keyId, verdict);
      return;
    }
    // No verdict: keep the previous state, note the failure.
    const previous = this.results.get(keyId);
    const message = err instanceof Error ? err.message : String(err);
    this.results.set(keyId, { ...(previous ?? { keyId, state: 'unknown' }), lastError: message });
    this.log.warn({ keyId, err: message }, 'key check failed; keeping the last verdict');
  }

  private apply(keyId: string, state: KeyState): void {
    const previous = this.results.get(keyId)?.state;
    this.results.set(keyId, { keyId, state, checkedAt: new Date(this.now()) });
    if (state === 'enabled') {
      this.target.restore(keyId);
      if (previous && previous !== 'enabled' && previous !== 'unknown')
        this.log.info({ keyId }, 'key version serving again');
      return;
    }
    this.target.revoke(keyId, REASONS[state]);
    if (previous !== state)
      this.log.warn({ keyId, state }, 'key version revoked: its cached DEKs were zeroed');
  }
}

const REASONS: Record<Exclude<KeyState, 'enabled'>, string> = {
  disabled: 'the key version is disabled in the vault',
  expired: 'the key version has expired',
  'not-yet-valid': 'the key version is not valid yet (nbf)',
  deleted: 'the key version was deleted (404)',
  forbidden: 'sealbox lost access to the key (403)',
  unknown: 'the key state is unknown',
};
