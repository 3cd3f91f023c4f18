/**
 * The DEK cache: vault calls drop from one per message to one per key.
 *
 * Encrypt side — per alias one active DEK, generated locally (CSPRNG) and wrapped once, sealing many
 * messages. Reuse is safe because every message derives its own AES key from the DEK and a random
 * 256-bit message id (kdf.ts). A DEK retires for new messages when its age, message count or byte
 * count passes its budget. Refresh-ahead: once any budget is `refreshAhead` spent, a replacement is
 * wrapped in the background, so no request waits on the vault when the active DEK retires.
 *
 * Decrypt side — unwrapped DEKs in an LRU (lru-cache) keyed by (versioned key id, SHA-256 of the
 * wrapped DEK), bounded by entries and TTL. Concurrent misses for one wrapped DEK share a single
 * unwrap (single-flight); a failed unwrap is never cached and fails only the callers that waited on it.
 *
 * Fan-out bound — at most `maxConcurrentVaultCalls` distinct vault calls in flight; further callers
 * queue with their own deadline, so a cold start over many DEKs cannot trip vault throttling.
 *
 * Zeroization — every DEK lives in one buffer owned here; it is zero-filled on retirement, eviction,
 * expiry, flush and close (lru-cache `dispose`). Only per-message derived keys leave this module.
 *
 * Key state — every use asks the key-state model (key-states.ts) first, every vault answer is reported
 * to it, and it tells this cache what to evict. A vault call that returns after its version was revoked
 * stores nothing: the DEK is zeroed and the call fails (the revoke-race check in wrapNew / unwrapInto).
 * Decrypt entries are keyed by (key id, wrap algorithm, SHA-256 of the wrapped DEK): a header that names
 * another algorithm over the same wrapped bytes misses and goes to the provider, which refuses it.
 * (A garbage-collected runtime may have copied bytes elsewhere; docs/SECURITY.md says what this does
 * and does not guarantee.)
 */
import { createHash, type KeyObject, randomFillSync } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import type { Header } from '../crypto/format';
import {
  type DekInput,
  dekKeyObject,
  deriveMessageKeys,
  type MessageKeys,
  zeroMessageKeys,
} from '../crypto/kdf';
import type { WrappedKey } from '../crypto/message';
import { ErrorCode, SealboxError } from '../errors';
import { type AuditCaller, REFRESH_AHEAD } from '../kek/audit';
import type { KekRegistry } from '../kek/registry';
import { type Cancellation, signalOf, untilAborted } from '../util/abort';
import { ByteBudget } from '../util/budget';
import {
  type DataKeySource,
  DEK_BYTES,
  type EncryptKeyRun,
  type EncryptKeys,
  type VaultAnswer,
} from './data-keys';
import { type KeyOperationName, KeyStates, type KeyUse } from './key-states';

export interface CacheOptions {
  readonly maxConcurrentVaultCalls: number;
  readonly encrypt: {
    readonly maxAgeMs: number;
    readonly maxMessages: number;
    readonly maxBytes: number;
    /** 0 = off; else the fraction of any budget at which a replacement is prepared. */
    readonly refreshAhead: number;
  };
  readonly decrypt: { readonly maxEntries: number; readonly ttlMs: number };
}

/** Test and metrics hooks. */
export interface CacheHooks {
  /** Called with every buffer the cache stores a DEK in (tests check they end up zeroed). */
  readonly trackDek?: (buffer: Buffer) => void;
  /** Told when evictKey() drops a key version's DEKs on an operator's request (metrics). */
  readonly onEvictKey?: (keyId: string) => void;
  /** Told about background refresh failures (logged by the caller). */
  readonly onRefreshError?: (alias: string, err: unknown) => void;
  readonly now?: () => number;
}

/** Counters for metrics and tests. */
export interface CacheStats {
  readonly enabled: boolean;
  readonly hits: { encrypt: number; decrypt: number };
  readonly misses: { encrypt: number; decrypt: number };
  /** Decrypt callers that waited on another caller's in-flight unwrap. */
  readonly coalesced: number;
  /** Requests that had to wait on a vault call (wrap or unwrap). */
  readonly blockingMisses: number;
  /** DEKs dropped, by reason: retired (a budget ran out), expire, evict (LRU), flush, invalidate. */
  readonly evictions: Record<string, number>;
  readonly entries: { encrypt: number; decrypt: number };
  readonly vaultCalls: { inFlight: number; maxInFlight: number };
}

/** One DEK sealing new messages under an alias. */
interface ActiveDek {
  readonly dek: Buffer;
  /** The DEK as HKDF's input (kdf.ts DekInput); dropped, with the DEK zeroed, when it retires. */
  key: KeyObject | undefined;
  readonly wrapped: WrappedKey;
  readonly createdAt: number;
  messages: number;
  bytes: number;
  retired: boolean;
}

/** Per-alias encrypt state. */
interface AliasState {
  active?: ActiveDek;
  /** A replacement being wrapped (refresh-ahead or a blocking miss); shared by everyone who needs it. */
  pending?: Promise<ActiveDek>;
  /** A replacement ready to take over when the active DEK retires. */
  next?: ActiveDek;
}

/** An unwrapped DEK in the decrypt LRU: its buffer (zeroed on disposal) and its KeyObject (kdf.ts DekInput). */
interface DecryptedDek {
  readonly dek: Buffer;
  readonly key: KeyObject;
}

/** An unwrap in flight, shared by every caller that missed on the same wrapped DEK. */
interface Flight {
  readonly promise: Promise<Buffer>;
  waiters: number;
}

export class CachedDataKeys implements DataKeySource {
  private readonly aliases = new Map<string, AliasState>();
  private readonly decrypted: LRUCache<string, DecryptedDek>;
  private readonly flights = new Map<string, Flight>();
  private readonly vaultSlots: ByteBudget;
  private readonly now: () => number;
  private vaultInFlight = 0;
  /** After close(), DEKs arriving from vault calls still in flight are zeroed, never stored. */
  private closed = false;
  /** The eviction reason to count while revoke() deletes entries. */
  private deleting: string | undefined;
  private readonly counters = {
    hits: { encrypt: 0, decrypt: 0 },
    misses: { encrypt: 0, decrypt: 0 },
    coalesced: 0,
    blockingMisses: 0,
    evictions: {} as Record<string, number>,
    maxInFlight: 0,
  };

  /**
   * `states` decides key state; without one the cache makes its own (unit tests). Either way its
   * evict hook must reach this cache: main.ts passes `(keyId, scope) => cache.evict(keyId, scope)`.
   */
  readonly states: KeyStates;

  constructor(
    private readonly registry: KekRegistry,
    private readonly options: CacheOptions,
    private readonly hooks: CacheHooks = {},
    states?: KeyStates,
  ) {
    this.states =
      states ??
      new KeyStates(undefined, { evict: (keyId, scope) => this.evict(keyId, scope), now: hooks.now });
    this.now = hooks.now ?? Date.now;
    this.vaultSlots = new ByteBudget(options.maxConcurrentVaultCalls);
    this.decrypted = new LRUCache<string, DecryptedDek>({
      max: options.decrypt.maxEntries,
      ttl: options.decrypt.ttlMs,
      ttlAutopurge: true,
      // Postcondition: a DEK leaving the cache for any reason is zeroed.
      dispose: (entry, _key, reason) => {
        entry.dek.fill(0);
        this.evicted(reason === 'delete' ? (this.deleting ?? 'flush') : reason);
      },
    });
  }

  async forEncrypt(
    alias: string,
    messageId: Uint8Array,
    signal?: Cancellation,
    caller?: AuditCaller,
  ): Promise<EncryptKeys> {
    const state = this.stateFor(alias);
    let active = this.usable(state);
    if (active) {
      this.counters.hits.encrypt++;
    } else {
      this.counters.misses.encrypt++;
      this.counters.blockingMisses++;
      // Loop: while we waited, the replacement may already have been used up (or flushed) by others.
      while (!active) {
        await this.installReplacement(alias, state, signal, caller);
        active = this.usable(state);
      }
    }
    this.check(active.wrapped.keyId, 'encrypt');
    // Synchronously after the budget check, so concurrent callers can never overrun maxMessages.
    active.messages++;
    this.maybeRefresh(alias, state, active);
    const dek = active;
    return {
      wrapped: dek.wrapped,
      keys: deriveMessageKeys(inputOf(dek), messageId),
      account: (bytes: number) => {
        dek.bytes += bytes;
        if (dek.bytes >= this.options.encrypt.maxBytes) this.retire(state, dek);
        else this.maybeRefresh(alias, state, dek);
      },
    };
  }

  /**
   * forEncrypt for many messages: one lookup per DEK used, each DEK's message budget honoured (a run
   * ends where a DEK's budget does). Every key is derived synchronously after its lookup, so a DEK
   * retired or revoked meanwhile is never derived from.
   */
  async forEncryptMany(
    alias: string,
    messageIds: readonly Uint8Array[],
    signal?: Cancellation,
    caller?: AuditCaller,
  ): Promise<EncryptKeyRun[]> {
    const state = this.stateFor(alias);
    const runs: EncryptKeyRun[] = [];
    try {
      for (let from = 0; from < messageIds.length; ) {
        let active = this.usable(state);
        if (active) {
          this.counters.hits.encrypt++;
        } else {
          this.counters.misses.encrypt++;
          this.counters.blockingMisses++;
          while (!active) {
            await this.installReplacement(alias, state, signal, caller);
            active = this.usable(state);
          }
        }
        this.check(active.wrapped.keyId, 'encrypt');
        // usable() left at least one message in the budget; take as many as it has, synchronously.
        const count = Math.min(messageIds.length - from, this.options.encrypt.maxMessages - active.messages);
        active.messages += count;
        this.maybeRefresh(alias, state, active);
        const keys = new Array<MessageKeys>(count);
        const ikm = inputOf(active);
        for (let i = 0; i < count; i++) keys[i] = deriveMessageKeys(ikm, messageIds[from + i]!);
        const dek = active;
        runs.push({
          wrapped: dek.wrapped,
          keys,
          account: (bytes: number) => {
            dek.bytes += bytes;
            if (dek.bytes >= this.options.encrypt.maxBytes) this.retire(state, dek);
            else this.maybeRefresh(alias, state, dek);
          },
        });
        from += count;
      }
      return runs;
    } catch (err) {
      for (const run of runs) for (const keys of run.keys) zeroMessageKeys(keys);
      throw err;
    }
  }

  /**
   * Waits for a replacement DEK (a blocking wrap, shared with concurrent callers) and installs it: the
   * body of the miss loops of forEncrypt and forEncryptMany.
   */
  private async installReplacement(
    alias: string,
    state: AliasState,
    signal?: Cancellation,
    caller?: AuditCaller,
  ): Promise<void> {
    const fresh = await this.replacement(alias, state, signal, caller);
    if (this.closed) {
      this.drop(fresh, 'flush');
      throw new SealboxError(ErrorCode.CANCELLED, 'sealbox is shutting down');
    }
    if (!fresh.retired && fresh !== state.active) {
      if (!state.active) state.active = fresh;
      else if (!state.next) state.next = fresh;
      else this.drop(fresh, 'retired');
    }
  }

  forDecrypt(header: Header, signal?: Cancellation, caller?: AuditCaller): Promise<MessageKeys> {
    return this.withDek(header, signal, caller, (dek) => deriveMessageKeys(dek, header.messageId));
  }

  /** forDecrypt for messages whose headers share `header`'s key id, algorithm and wrapped DEK. */
  forDecryptMany(
    header: Header,
    messageIds: readonly Uint8Array[],
    signal?: Cancellation,
    caller?: AuditCaller,
  ): Promise<MessageKeys[]> {
    return this.withDek(header, signal, caller, (dek) => messageIds.map((id) => deriveMessageKeys(dek, id)));
  }

  /**
   * Finds `header`'s DEK (cache, a shared unwrap in flight, or a new unwrap) and runs `derive` on it
   * synchronously; the DEK itself never leaves this module.
   */
  private async withDek<T>(
    header: Header,
    signal: Cancellation | undefined,
    caller: AuditCaller | undefined,
    derive: (dek: DekInput) => T,
  ): Promise<T> {
    this.check(header.keyId, 'decrypt');
    const digest = createHash('sha256').update(header.wrappedDek).digest('hex');
    const key = `${header.keyId}\n${header.wrapAlgorithm}\n${digest}`;
    const cached = this.decrypted.get(key);
    if (cached) {
      this.counters.hits.decrypt++;
      return derive(cached.key);
    }
    this.counters.misses.decrypt++;
    this.counters.blockingMisses++;
    let flight = this.flights.get(key);
    if (flight) {
      this.counters.coalesced++;
    } else {
      // The flight takes no caller's signal: it is shared, and one caller giving up must not fail the
      // others. Each caller bounds its own wait below. The audit line names the caller that started it.
      const started: Flight = {
        promise: this.inBand(this.unwrapInto(key, header, caller), header.keyId, 'unwrapKey'),
        waiters: 0,
      };
      flight = started;
      this.flights.set(key, started);
      // Registered before any waiter's continuation, so the flight leaves the map before its waiters
      // run: nobody joins a settled flight. A failure is not cached; the next caller retries the vault.
      const leave = () => {
        if (this.flights.get(key) === started) this.flights.delete(key);
      };
      started.promise.then(leave, leave);
    }
    const joined = flight;
    joined.waiters++;
    try {
      // Every waiter derives from the flight's own copy of the DEK, which stays intact until the last
      // waiter is done — even if the LRU evicts (and zeroes) its entry meanwhile.
      const dek = await (signal ? untilAborted(joined.promise, signalOf(signal)) : joined.promise);
      return derive(dek);
    } finally {
      if (--joined.waiters === 0)
        joined.promise.then(
          (dek) => dek.fill(0),
          () => {},
        );
    }
  }

  /**
   * Evicts (and zeroes) the DEKs under `keyId`: all of them, or only those sealing new messages (a
   * version outside its validity dates still decrypts). The key-state model calls this when it
   * refuses a version; the refusal itself lives there.
   */
  evict(keyId: string, scope: 'all' | 'encrypt'): void {
    if (scope === 'all') this.evictDeks(keyId);
    else this.evictEncrypt(keyId);
  }

  /** Evicts (and zeroes) every DEK under `keyId` without refusing it (admin RevokeKey, before a re-check). */
  evictKey(keyId: string): void {
    this.hooks.onEvictKey?.(keyId);
    this.evictDeks(keyId);
  }

  /** Drops (and zeroes) every DEK under `keyId`, both sides, counted as evictions for "revoked". */
  private evictDeks(keyId: string): void {
    this.evictEncrypt(keyId);
    this.deleting = 'revoked';
    try {
      for (const key of [...this.decrypted.keys()])
        if (key.startsWith(`${keyId}\n`)) this.decrypted.delete(key);
    } finally {
      this.deleting = undefined;
    }
  }

  /** Drops (and zeroes) the encrypt-side DEKs under `keyId`. */
  private evictEncrypt(keyId: string): void {
    for (const state of this.aliases.values()) {
      if (state.active?.wrapped.keyId === keyId) this.retire(state, state.active, 'revoked');
      if (state.next?.wrapped.keyId === keyId) {
        this.drop(state.next, 'revoked');
        state.next = undefined;
      }
    }
  }

  /** Per key version: cached DEK counts. */
  describe(): Map<string, { encrypt: number; decrypt: number }> {
    const out = new Map<string, { encrypt: number; decrypt: number }>();
    const entry = (keyId: string) => {
      let e = out.get(keyId);
      if (!e) {
        e = { encrypt: 0, decrypt: 0 };
        out.set(keyId, e);
      }
      return e;
    };
    for (const state of this.aliases.values()) {
      for (const dek of [state.active, state.next])
        if (dek && !dek.retired) entry(dek.wrapped.keyId).encrypt++;
    }
    for (const key of this.decrypted.keys()) entry(key.slice(0, key.indexOf('\n'))).decrypt++;
    return out;
  }

  /**
   * Throws KEY_DISABLED when `keyId` may not be used for `use` (the key-state model decides), or
   * KEY_NOT_FOUND for a version the vault recently said does not exist; sessions call it before every
   * segment, so streams in flight stop promptly.
   */
  check(keyId: string, use: KeyUse = 'decrypt'): void {
    this.states.check(keyId, use);
  }

  /** Versions with cached DEKs (the watcher adds the refused and suspected ones from the key states). */
  keyIdsInUse(): Set<string> {
    const ids = new Set<string>();
    for (const state of this.aliases.values()) {
      if (state.active && !state.active.retired) ids.add(state.active.wrapped.keyId);
      if (state.next && !state.next.retired) ids.add(state.next.wrapped.keyId);
    }
    for (const key of this.decrypted.keys()) ids.add(key.slice(0, key.indexOf('\n')));
    return ids;
  }

  /** Aliases with an active DEK, and that DEK's key id (the watcher compares it with the latest version). */
  activeKeyIds(): Map<string, string> {
    const active = new Map<string, string>();
    for (const [alias, state] of this.aliases)
      if (state.active) active.set(alias, state.active.wrapped.keyId);
    return active;
  }

  /**
   * In-band evidence: every vault answer on a wrap or unwrap goes to the key-state model, which may
   * revoke the version at once (disabled, deleted), after confirmation (a permission refusal) or never
   * (an outage).
   */
  private inBand<T>(call: Promise<T>, keyId: string | undefined, operation: KeyOperationName): Promise<T> {
    return call.catch((err: unknown) => {
      this.vaultAnswered({ keyId, operation, error: err });
      throw err;
    });
  }

  /** DataKeySource.vaultAnswered: vault answers seen outside the cache (Rewrap) count as in-band evidence. */
  vaultAnswered(answer: VaultAnswer): void {
    if ('error' in answer) {
      const about = (answer.error instanceof SealboxError ? answer.error.keyId : undefined) ?? answer.keyId;
      if (about !== undefined) this.states.failed(about, answer.error, answer.operation);
      return;
    }
    // Attributes read in-band may refuse a version but never serve a refused one again: a read that
    // started before a revocation may answer after it. Only the key watcher's own reads restore.
    const refused = !['enabled', 'unknown'].includes(this.states.stateOf(answer.keyId));
    if (answer.attributes && !refused) this.states.attributes(answer.keyId, answer.attributes);
    else this.states.succeeded(answer.keyId, answer.operation, answer.sample);
  }

  /** Zeroes and drops every cached DEK, both sides. */
  flush(): void {
    for (const state of this.aliases.values()) {
      if (state.active) this.retire(state, state.active, 'flush');
      if (state.next) this.drop(state.next, 'flush');
      state.next = undefined;
    }
    this.decrypted.clear();
  }

  /** Retires an alias's encrypt DEKs now (key version changed or revoked); the next message wraps anew. */
  invalidate(alias: string): void {
    const state = this.aliases.get(alias);
    if (!state) return;
    if (state.active) this.retire(state, state.active, 'invalidate');
    if (state.next) this.drop(state.next, 'invalidate');
    state.next = undefined;
  }

  stats(): CacheStats {
    let encrypt = 0;
    for (const state of this.aliases.values()) encrypt += (state.active ? 1 : 0) + (state.next ? 1 : 0);
    return {
      enabled: true,
      hits: { ...this.counters.hits },
      misses: { ...this.counters.misses },
      coalesced: this.counters.coalesced,
      blockingMisses: this.counters.blockingMisses,
      evictions: { ...this.counters.evictions },
      entries: { encrypt, decrypt: this.decrypted.size },
      vaultCalls: { inFlight: this.vaultInFlight, maxInFlight: this.counters.maxInFlight },
    };
  }

  /** Zeroes everything now and anything that vault calls still in flight bring back later. */
  close(): void {
    this.closed = true;
    this.flush();
  }

  // --- encrypt side ---

  private stateFor(alias: string): AliasState {
    let state = this.aliases.get(alias);
    if (!state) {
      // Resolve the alias first so an unknown alias fails with NOT_FOUND and leaves no state behind.
      this.registry.forAlias(alias);
      state = {};
      this.aliases.set(alias, state);
    }
    return state;
  }

  /** The active DEK if it may seal one more message; retires it (and promotes `next`) otherwise. */
  private usable(state: AliasState): ActiveDek | undefined {
    const { maxAgeMs, maxMessages, maxBytes } = this.options.encrypt;
    for (;;) {
      const active = state.active;
      if (!active) return undefined;
      const fresh =
        !active.retired &&
        this.now() - active.createdAt < maxAgeMs &&
        active.messages < maxMessages &&
        active.bytes < maxBytes;
      if (fresh) return active;
      this.retire(state, active);
      if (state.next) {
        this.install(state, state.next);
        state.next = undefined;
      }
      if (!state.active) return undefined;
    }
  }

  private install(state: AliasState, dek: ActiveDek): void {
    if (state.active && state.active !== dek) this.retire(state, state.active);
    state.active = dek;
    if (state.next === dek) state.next = undefined;
  }

  /** Retires a DEK for new messages and zeroes it (messages already started hold derived keys only). */
  private retire(state: AliasState, dek: ActiveDek, reason = 'retired'): void {
    if (state.active === dek) state.active = undefined;
    this.drop(dek, reason);
  }

  private drop(dek: ActiveDek, reason: string): void {
    if (dek.retired) return;
    dek.retired = true;
    dek.dek.fill(0);
    dek.key = undefined;
    this.evicted(reason);
  }

  /** Starts wrapping a replacement in the background once any budget passes the refresh point. */
  private maybeRefresh(alias: string, state: AliasState, active: ActiveDek): void {
    const ahead = this.options.encrypt.refreshAhead;
    if (ahead === 0 || state.pending || state.next || active.retired) return;
    const { maxAgeMs, maxMessages, maxBytes } = this.options.encrypt;
    const spent = Math.max(
      (this.now() - active.createdAt) / maxAgeMs,
      active.messages / maxMessages,
      active.bytes / maxBytes,
    );
    if (spent < ahead) return;
    this.replacement(alias, state, undefined, REFRESH_AHEAD).then(
      (next) => {
        if (this.closed) return this.drop(next, 'flush');
        // A blocking caller may already have placed it.
        if (next.retired || next === state.active || next === state.next) return;
        if (!state.active || state.active.retired) {
          state.active = next;
          return;
        }
        if (state.next) this.drop(state.next, 'retired');
        state.next = next;
      },
      (err) => this.hooks.onRefreshError?.(alias, err),
    );
  }

  /**
   * A freshly wrapped DEK for `alias`; concurrent callers share one wrap, audited as the caller that
   * started it.
   */
  private replacement(
    alias: string,
    state: AliasState,
    signal?: Cancellation,
    caller?: AuditCaller,
  ): Promise<ActiveDek> {
    if (!state.pending) {
      const pending = this.wrapNew(alias, caller).finally(() => {
        if (state.pending === pending) state.pending = undefined;
      });
      state.pending = pending;
    }
    return signal ? untilAborted(state.pending, signalOf(signal)) : state.pending;
  }

  private async wrapNew(alias: string, caller?: AuditCaller): Promise<ActiveDek> {
    const provider = this.registry.forAlias(alias);
    // Filled in place: no temporary copy of the DEK exists anywhere else.
    const dek = randomFillSync(Buffer.allocUnsafeSlow(DEK_BYTES));
    this.hooks.trackDek?.(dek);
    try {
      // No caller signal: the wrap is shared, and one caller giving up must not fail the others.
      const result = await this.inBand(
        this.vaultCall(() => provider.wrap(dek, undefined, caller)),
        undefined,
        'wrapKey',
      );
      this.states.succeeded(result.keyId, 'wrapKey');
      // Revoke race: the version may have been refused while the wrap was in flight; never keep a DEK
      // under it (the finally below zeroes it).
      this.states.check(result.keyId, 'encrypt');
      return {
        dek,
        key: dekKeyObject(dek),
        wrapped: { keyId: result.keyId, wrapAlgorithm: result.algorithm, wrappedDek: result.wrapped },
        createdAt: this.now(),
        messages: 0,
        bytes: 0,
        retired: false,
      };
    } catch (err) {
      dek.fill(0);
      throw err;
    }
  }

  // --- decrypt side ---

  /** Unwraps into a buffer owned by the flight, and stores a second copy in the LRU. */
  private async unwrapInto(key: string, header: Header, caller?: AuditCaller): Promise<Buffer> {
    const provider = this.registry.forKeyId(header.keyId);
    const unwrapped = await this.vaultCall(() =>
      provider.unwrap(header.keyId, header.wrapAlgorithm, header.wrappedDek, undefined, caller),
    );
    try {
      if (this.closed) throw new SealboxError(ErrorCode.CANCELLED, 'sealbox is shutting down');
      this.states.succeeded(header.keyId, 'unwrapKey', {
        algorithm: header.wrapAlgorithm,
        wrapped: header.wrappedDek,
      });
      // Revoke race: a revocation that landed while the unwrap was in flight wins; nothing is stored.
      this.states.check(header.keyId, 'decrypt');
      if (unwrapped.length !== DEK_BYTES) {
        throw new SealboxError(
          ErrorCode.CIPHERTEXT_CORRUPT,
          `the wrapped data key unwrapped to ${unwrapped.length} bytes, not ${DEK_BYTES}: the header was modified`,
        );
      }
      const stored = Buffer.allocUnsafeSlow(DEK_BYTES);
      unwrapped.copy(stored);
      this.hooks.trackDek?.(stored);
      this.decrypted.set(key, { dek: stored, key: dekKeyObject(stored) });
      const forWaiters = Buffer.allocUnsafeSlow(DEK_BYTES);
      unwrapped.copy(forWaiters);
      this.hooks.trackDek?.(forWaiters);
      return forWaiters;
    } finally {
      unwrapped.fill(0);
    }
  }

  // --- vault fan-out ---

  /** Runs a vault call once one of the `maxConcurrentVaultCalls` slots is free. */
  private async vaultCall<T>(call: () => Promise<T>): Promise<T> {
    const held = await this.vaultSlots.acquire(1);
    this.vaultInFlight++;
    this.counters.maxInFlight = Math.max(this.counters.maxInFlight, this.vaultInFlight);
    try {
      return await call();
    } finally {
      this.vaultInFlight--;
      this.vaultSlots.release(held);
    }
  }

  private evicted(reason: string): void {
    this.counters.evictions[reason] = (this.counters.evictions[reason] ?? 0) + 1;
  }
}

/** An active DEK's HKDF input. Callers check `usable()` first, so a retired DEK here is a bug. */
function inputOf(dek: ActiveDek): KeyObject {
  if (!dek.key) throw new Error('unreachable: a retired DEK was about to seal a message');
  return dek.key;
}
