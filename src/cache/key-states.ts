/**
 * The key-state model: the one place that decides, from evidence, whether a KEK version may be used.
 * The DEK cache (in-band vault answers) and the key watcher (polls, confirming checks) feed it; the cache
 * asks it before every use of a cached DEK. docs/SECURITY.md, "Key state", says the same in prose.
 *
 * Evidence classes (errors.ts `Verdict`):
 * - authoritative: the version's attributes as the vault reports them (enabled, nbf, exp); a 403 the
 *   vault sends because the version is disabled or outside its dates; a 404 for a version seen valid
 *   before. Disabled or deleted revokes at once: every cached DEK under it is zeroed, both sides. Outside
 *   nbf/exp only wrapping stops (as Key Vault does: decrypt and unwrap stay allowed, "about keys",
 *   date-time controlled operations), unless `refuseDecryptOutsideValidity` is set.
 * - refusal: a 403 naming a missing permission (or key_ops without the operation). Azure sends such
 *   403s transiently (policy and RBAC propagation, permission-model switches), so one is a *suspicion*:
 *   it revokes only when the same operation is still refused by a call at least `refusalConfirmMs` after
 *   the first refusal, with no success of that operation in between. The watcher runs that confirming
 *   call when the window ends. A success inside the window clears the suspicion: nothing is zeroed.
 * - outage: credential and token failures, 401, firewall 403s, 429, 5xx, timeouts. Never a verdict:
 *   cached DEKs serve until their TTL, then the cache needs the vault and fails closed (UNAVAILABLE).
 *
 * Header fields are attacker-controlled until the header verifies, so nothing here grows from them:
 * - only versions the vault has vouched for (a successful call, attributes read, or a vault statement
 *   that presupposes the version exists: disabled, out of window) are tracked, and at most
 *   `maxTrackedVersions` of them (the least recently used enabled one makes room);
 * - a 404 for a version never seen valid is remembered in a bounded negative cache (size + TTL), which
 *   answers KEY_NOT_FOUND without another vault call; it is never revoked, refused or watched;
 * - a refusal or outage about an untracked version changes nothing.
 * So the refused and watched sets are bounded by the real versions of the configured keys.
 */
import { LRUCache } from 'lru-cache';
import { ErrorCode, isSealboxError, SealboxError, type Verdict } from '../errors';

/** A version's state, as GetKeyStatus and metrics report it. */
export type KeyState =
  | 'enabled'
  | 'disabled'
  | 'expired'
  | 'not-yet-valid'
  | 'deleted'
  | 'forbidden'
  | 'unknown';

/** What a cached DEK is about to be used for. */
export type KeyUse = 'encrypt' | 'decrypt';

/** The vault operations evidence comes from (a refusal is about one of them). */
export type KeyOperationName = 'getKey' | 'wrapKey' | 'unwrapKey';

/** What a version's attributes say (KekProvider.status). */
export interface KeyAttributes {
  readonly enabled: boolean;
  readonly notBefore?: Date | undefined;
  readonly expiresOn?: Date | undefined;
}

export interface KeyStatesOptions {
  /** How long a permission refusal must persist before it revokes (see the module comment). */
  readonly refusalConfirmMs: number;
  /** The negative cache of versions the vault says do not exist (never seen valid). */
  readonly unknownVersions: { readonly maxEntries: number; readonly ttlMs: number };
  /** Versions tracked at most (only versions the vault vouched for are tracked). */
  readonly maxTrackedVersions: number;
  /** Also refuse unwrapping outside a version's nbf/exp window (Key Vault allows it). */
  readonly refuseDecryptOutsideValidity: boolean;
}

export const DEFAULT_KEY_STATES_OPTIONS: KeyStatesOptions = {
  refusalConfirmMs: 60_000,
  unknownVersions: { maxEntries: 4096, ttlMs: 60_000 },
  maxTrackedVersions: 4096,
  refuseDecryptOutsideValidity: false,
};

export interface KeyStateHooks {
  /** Zero and drop the cached DEKs under `keyId`: all of them, or only those sealing new messages. */
  evict?(keyId: string, scope: 'all' | 'encrypt'): void;
  /** A version started being refused (for all uses, or for encrypt only). Logs and metrics. */
  onRevoke?(keyId: string, reason: string): void;
  /** A version serves again. */
  onRestore?(keyId: string): void;
  /** A refusal is suspected; a confirming check is due at `confirmAt` (ms, on `now`'s clock). */
  onSuspect?(keyId: string, confirmAt: number): void;
  readonly now?: () => number;
}

/** A confirming check the watcher should run: the refused operation, once more. */
export interface Confirmation {
  readonly keyId: string;
  readonly operation: KeyOperationName;
  /** For unwrapKey: a wrapped DEK that unwrapped under this version before (not secret). */
  readonly sample?: { readonly algorithm: string; readonly wrapped: Buffer };
}

/** One tracked version, as GetKeyStatus shows it. */
export interface KeyStateView {
  readonly keyId: string;
  readonly state: KeyState;
  /** Why it is refused (empty while it serves). */
  readonly reason: string;
  /** When the vault last gave a verdict or a success. */
  readonly checkedAt?: Date;
  /** The last failure that gave no verdict, if the latest attempt failed. */
  readonly lastError?: string;
  /** A permission refusal awaiting confirmation. */
  readonly refusalPending?: { readonly since: Date; readonly operation: KeyOperationName };
}

interface Tracked {
  state: KeyState;
  reason: string;
  checkedAt?: number;
  lastError?: string;
  refusal?: { since: number; operation: KeyOperationName };
  /** The operation whose confirmed refusal made the state 'forbidden' (its success restores). */
  forbiddenOperation?: KeyOperationName;
  sample?: { algorithm: string; wrapped: Buffer };
}

/** States that refuse every use. */
const REFUSED: ReadonlySet<KeyState> = new Set(['disabled', 'deleted', 'forbidden']);
/** States that refuse new wraps only (unless refuseDecryptOutsideValidity). */
const OUT_OF_WINDOW: ReadonlySet<KeyState> = new Set(['expired', 'not-yet-valid']);

const REASONS: Record<Exclude<KeyState, 'enabled' | 'unknown'>, string> = {
  disabled: 'the key version is disabled in the vault',
  expired: 'the key version has expired (exp): it wraps no new data keys',
  'not-yet-valid': 'the key version is not valid yet (nbf): it wraps no new data keys',
  deleted: 'the key version was deleted (the vault answers 404 for a version it served before)',
  forbidden:
    'sealbox lost access to the key: a permission refusal (403) persisted past its confirmation window',
};

export class KeyStates {
  private readonly tracked = new Map<string, Tracked>();
  private readonly unknown: LRUCache<string, true>;
  private readonly now: () => number;

  constructor(
    readonly options: KeyStatesOptions = DEFAULT_KEY_STATES_OPTIONS,
    private readonly hooks: KeyStateHooks = {},
  ) {
    this.now = hooks.now ?? Date.now;
    this.unknown = new LRUCache<string, true>({
      max: options.unknownVersions.maxEntries,
      ttl: options.unknownVersions.ttlMs,
      ttlAutopurge: false,
      perf: { now: () => this.now() },
    });
  }

  /**
   * Throws unless `keyId` may be used for `use`: KEY_DISABLED for a refused version (naming why),
   * KEY_NOT_FOUND for a version the vault recently said does not exist. No I/O.
   */
  check(keyId: string, use: KeyUse): void {
    const t = this.tracked.get(keyId);
    if (t) {
      if (
        REFUSED.has(t.state) ||
        (OUT_OF_WINDOW.has(t.state) && (use === 'encrypt' || this.options.refuseDecryptOutsideValidity))
      ) {
        throw new SealboxError(
          ErrorCode.KEY_DISABLED,
          `key version ${keyId} is refused: ${t.reason}; sealbox resumes on the next good check after it is ` +
            'usable again',
          { keyId },
        );
      }
      return;
    }
    if (this.unknown.has(keyId)) {
      throw new SealboxError(
        ErrorCode.KEY_NOT_FOUND,
        `key version ${keyId.slice(0, 256)} does not exist in the vault (it answered 404 within the last ` +
          `${Math.round(this.options.unknownVersions.ttlMs / 1000)} s); the ciphertext names a version that ` +
          'never existed or was deleted',
        { keyId },
      );
    }
  }

  /** A vault call under `keyId` succeeded. `sample`: the wrapped DEK an unwrap opened (kept for confirming). */
  succeeded(
    keyId: string,
    operation: KeyOperationName,
    sample?: { algorithm: string; wrapped: Uint8Array },
  ): void {
    const t = this.track(keyId);
    if (!t) return;
    t.checkedAt = this.now();
    t.lastError = undefined;
    if (sample && !t.sample) t.sample = { algorithm: sample.algorithm, wrapped: Buffer.from(sample.wrapped) };
    // A success of the refused operation inside the window: the 403 was transient; nothing was zeroed.
    if (t.refusal && t.refusal.operation === operation) t.refusal = undefined;
  }

  /**
   * A confirming check (watcher) of `operation` succeeded: clears a suspicion and restores a version
   * that was forbidden for that operation. In-band successes never restore (a call that started before
   * a revocation may finish after it).
   */
  confirmedUsable(keyId: string, operation: KeyOperationName): void {
    this.succeeded(keyId, operation);
    const t = this.tracked.get(keyId);
    if (t?.state === 'forbidden' && t.forbiddenOperation === operation) this.apply(keyId, t, 'enabled');
  }

  /** The version's attributes as the vault reports them (watcher polls, the current-version read). */
  attributes(keyId: string, attributes: KeyAttributes): void {
    const t = this.track(keyId);
    if (!t) return;
    const now = this.now();
    const state: KeyState = !attributes.enabled
      ? 'disabled'
      : attributes.expiresOn && attributes.expiresOn.getTime() <= now
        ? 'expired'
        : attributes.notBefore && attributes.notBefore.getTime() > now
          ? 'not-yet-valid'
          : 'enabled';
    t.checkedAt = now;
    t.lastError = undefined;
    if (t.refusal?.operation === 'getKey') t.refusal = undefined;
    // A confirmed permission loss for wrap/unwrap is not undone by a readable key: only a confirming
    // check of that operation restores it (so an identity that may still `get` does not flap).
    if (t.state === 'forbidden') {
      if (t.forbiddenOperation !== 'getKey' || state !== 'enabled') {
        if (state !== 'enabled') this.apply(keyId, t, state);
        return;
      }
    }
    this.apply(keyId, t, state);
  }

  /** A vault call under `keyId` failed; decides from the error's verdict (errors.ts). */
  failed(keyId: string, err: unknown, operation: KeyOperationName): void {
    const verdict: Verdict = isSealboxError(err) ? (err.verdict ?? 'outage') : 'outage';
    const message = err instanceof Error ? err.message : String(err);
    switch (verdict) {
      case 'outage': {
        const t = this.tracked.get(keyId);
        if (t) t.lastError = message.slice(0, 512);
        return;
      }
      case 'not-found': {
        const t = this.tracked.get(keyId);
        // Postcondition: a version never seen valid gains no state but a bounded, expiring negative entry.
        if (!t) {
          this.unknown.set(keyId, true);
          return;
        }
        this.apply(keyId, t, 'deleted');
        return;
      }
      case 'disabled':
      case 'out-of-window': {
        // The vault answered about this very version, so it exists: track it.
        const t = this.track(keyId);
        if (t) this.apply(keyId, t, verdict === 'disabled' ? 'disabled' : 'expired');
        return;
      }
      case 'refused': {
        const t = this.tracked.get(keyId);
        if (!t || t.state === 'forbidden') return;
        const now = this.now();
        if (!t.refusal) {
          t.refusal = { since: now, operation };
          this.hooks.onSuspect?.(keyId, now + this.options.refusalConfirmMs);
          return;
        }
        if (t.refusal.operation === operation && now - t.refusal.since >= this.options.refusalConfirmMs) {
          t.forbiddenOperation = operation;
          t.refusal = undefined;
          this.apply(keyId, t, 'forbidden');
        }
        return;
      }
    }
  }

  /**
   * Confirming checks due now: suspected refusals whose window has passed, and forbidden versions (so a
   * restored permission is noticed). The watcher runs each and reports with `failed` / `confirmedUsable`.
   */
  confirmations(): Confirmation[] {
    const now = this.now();
    const out: Confirmation[] = [];
    for (const [keyId, t] of this.tracked) {
      const operation =
        t.refusal && now - t.refusal.since >= this.options.refusalConfirmMs
          ? t.refusal.operation
          : t.state === 'forbidden'
            ? t.forbiddenOperation
            : undefined;
      if (operation === undefined) continue;
      out.push({ keyId, operation, ...(t.sample ? { sample: t.sample } : {}) });
    }
    return out;
  }

  /** Versions the watcher must poll: every tracked one that is refused, out of window or suspected. */
  watched(): Set<string> {
    const ids = new Set<string>();
    for (const [keyId, t] of this.tracked)
      if (t.state !== 'enabled' && t.state !== 'unknown') ids.add(keyId);
      else if (t.refusal) ids.add(keyId);
    return ids;
  }

  /** Every tracked version, for GetKeyStatus. */
  describe(): KeyStateView[] {
    return [...this.tracked].map(([keyId, t]) => ({
      keyId,
      state: t.state,
      reason: REFUSED.has(t.state) || OUT_OF_WINDOW.has(t.state) ? t.reason : '',
      ...(t.checkedAt === undefined ? {} : { checkedAt: new Date(t.checkedAt) }),
      ...(t.lastError === undefined ? {} : { lastError: t.lastError }),
      ...(t.refusal
        ? { refusalPending: { since: new Date(t.refusal.since), operation: t.refusal.operation } }
        : {}),
    }));
  }

  /** The state of one version ('unknown' when untracked). */
  stateOf(keyId: string): KeyState {
    return this.tracked.get(keyId)?.state ?? 'unknown';
  }

  /** Sizes, for metrics and tests. */
  get sizes(): { tracked: number; refused: number; unknown: number; suspected: number } {
    let refused = 0;
    let suspected = 0;
    for (const t of this.tracked.values()) {
      if (t.state !== 'enabled' && t.state !== 'unknown') refused++;
      if (t.refusal) suspected++;
    }
    return { tracked: this.tracked.size, refused, unknown: this.unknown.size, suspected };
  }

  /** The tracked entry for a version the vault vouched for, making room if needed; undefined when full. */
  private track(keyId: string): Tracked | undefined {
    const existing = this.tracked.get(keyId);
    if (existing) {
      // Most recently used last (Map order), so eviction below drops the stalest.
      this.tracked.delete(keyId);
      this.tracked.set(keyId, existing);
      return existing;
    }
    if (this.tracked.size >= this.options.maxTrackedVersions) {
      let victim: string | undefined;
      for (const [id, t] of this.tracked) {
        if ((t.state === 'enabled' || t.state === 'unknown') && !t.refusal) {
          victim = id;
          break;
        }
      }
      // Every tracked version is refused or suspected: keep them all (refusals must not be forgotten).
      if (victim === undefined) return undefined;
      this.tracked.delete(victim);
    }
    this.unknown.delete(keyId);
    const entry: Tracked = { state: 'unknown', reason: '' };
    this.tracked.set(keyId, entry);
    return entry;
  }

  private apply(keyId: string, t: Tracked, state: KeyState): void {
    const previous = t.state;
    t.state = state;
    t.checkedAt = this.now();
    t.lastError = undefined;
    if (state === 'enabled' || state === 'unknown') {
      t.reason = '';
      t.forbiddenOperation = undefined;
      if (REFUSED.has(previous) || OUT_OF_WINDOW.has(previous)) this.hooks.onRestore?.(keyId);
      return;
    }
    t.reason = REASONS[state];
    const all = REFUSED.has(state) || this.options.refuseDecryptOutsideValidity;
    // Postcondition: no DEK under a refused version stays cached (zeroed by the cache's evict).
    this.hooks.evict?.(keyId, all ? 'all' : 'encrypt');
    if (previous !== state) this.hooks.onRevoke?.(keyId, t.reason);
  }
}
