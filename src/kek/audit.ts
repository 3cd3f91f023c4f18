/**
 * The audit trail: one structured log line for every KEK operation (wrap, unwrap, status, refresh),
 * whatever the provider — operation, key id, outcome, latency and caller. The caller is the RPC that
 * triggered the call (method, peer and identity), or the background task (refresh-ahead, key watcher)
 * when no RPC did. Never key material: DEKs pass through untouched.
 *
 * The caller is passed explicitly, as the last argument of every provider method: each handler builds
 * one AuditCaller per call and hands it down (envelope service → DEK cache → provider). It used to ride
 * in AsyncLocalStorage, but on Node 20 AsyncLocalStorage enables promise hooks for every promise in
 * the process, which cost ~26–30 µs of CPU per unary call (bench/README.md, "Unary per-call cost").
 */
import { performance } from 'node:perf_hooks';
import { isSealboxError } from '../errors';
import type { Logger } from '../log/logger';
import type { KekProvider, KeyStatus, WrapResult } from './provider';

/** Who a vault call is made for. */
export interface AuditCaller {
  /** "Encrypt", "DecryptStream", "key-watcher", "refresh-ahead", "admin:RevokeKey", "check"… */
  readonly caller: string;
  /** The RPC peer, when there is one. */
  readonly peer?: string;
  /** The caller's identity in the access policy, once access control has named it. */
  identity?: string;
  /** The request's own id, when the protocol carries one (the Kubernetes KMS API's `uid`). */
  readonly uid?: string;
}

/** A vault call no RPC and no named background task asked for. */
export const BACKGROUND: AuditCaller = Object.freeze({ caller: 'background' });
/** The key watcher's polls and confirming checks (kek/watcher.ts). */
export const KEY_WATCHER: AuditCaller = Object.freeze({ caller: 'key-watcher' });
/** The DEK cache wrapping a replacement DEK ahead of need (cache/cached-data-keys.ts). */
export const REFRESH_AHEAD: AuditCaller = Object.freeze({ caller: 'refresh-ahead' });

/** Wraps a provider so each operation is logged once, after it completes. */
export class AuditedProvider implements KekProvider {
  readonly kind: string;
  readonly keyRef: string;

  constructor(
    private readonly inner: KekProvider,
    private readonly alias: string,
    private readonly log: Logger,
  ) {
    this.kind = inner.kind;
    this.keyRef = inner.keyRef;
  }

  refreshCurrentVersion(signal?: AbortSignal, caller?: AuditCaller): Promise<KeyStatus> {
    return this.audited(
      'getLatest',
      undefined,
      caller,
      () => this.inner.refreshCurrentVersion(signal, caller),
      (s) => s.keyId,
    );
  }

  wrap(dek: Uint8Array, signal?: AbortSignal, caller?: AuditCaller): Promise<WrapResult> {
    return this.audited(
      'wrapKey',
      undefined,
      caller,
      () => this.inner.wrap(dek, signal, caller),
      (r) => r.keyId,
    );
  }

  unwrap(
    keyId: string,
    algorithm: string,
    wrapped: Uint8Array,
    signal?: AbortSignal,
    caller?: AuditCaller,
  ): Promise<Buffer> {
    return this.audited('unwrapKey', keyId, caller, () =>
      this.inner.unwrap(keyId, algorithm, wrapped, signal, caller),
    );
  }

  status(
    keyId: string,
    signal?: AbortSignal,
    options?: { latest?: boolean },
    caller?: AuditCaller,
  ): Promise<KeyStatus> {
    return this.audited('getKey', keyId, caller, () => this.inner.status(keyId, signal, options, caller));
  }

  owns(keyId: string): boolean {
    return this.inner.owns(keyId);
  }

  close(): Promise<void> {
    return this.inner.close();
  }

  private async audited<T>(
    operation: string,
    keyId: string | undefined,
    by: AuditCaller | undefined,
    call: () => Promise<T>,
    resultKeyId?: (result: T) => string,
  ): Promise<T> {
    const started = performance.now();
    const caller = by ?? BACKGROUND;
    try {
      const result = await call();
      this.log.info(
        {
          audit: 'kek',
          operation,
          alias: this.alias,
          keyId: resultKeyId ? resultKeyId(result) : keyId,
          outcome: 'success',
          latencyMs: Math.round((performance.now() - started) * 10) / 10,
          ...caller,
        },
        'kek operation',
      );
      return result;
    } catch (err) {
      this.log.warn(
        {
          audit: 'kek',
          operation,
          alias: this.alias,
          keyId: keyId ?? (isSealboxError(err) ? err.keyId : undefined),
          outcome: isSealboxError(err) ? err.code : 'INTERNAL',
          latencyMs: Math.round((performance.now() - started) * 10) / 10,
          ...caller,
        },
        'kek operation failed',
      );
      throw err;
    }
  }
}
