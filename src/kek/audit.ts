/**
 * The audit trail: one structured log line for every KEK operation (wrap, unwrap, status, refresh),
 * whatever the provider — operation, key id, outcome, latency and caller. The caller is the RPC that
 * triggered the call (method and peer, carried through AsyncLocalStorage), or the background task
 * (refresh-ahead, key watcher) when no RPC did. Never key material: DEKs pass through untouched.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
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

const callers = new AsyncLocalStorage<AuditCaller>();

/** Runs `fn` with `caller` as the audit caller of every KEK call it makes (including async ones). */
export function withAuditCaller<T>(caller: AuditCaller, fn: () => T): T {
  return callers.run(caller, fn);
}

/** Records the identity of the current call's caller (server/access.ts), for the audit lines that follow. */
export function setAuditIdentity(identity: string): void {
  const store = callers.getStore();
  if (store) store.identity = identity;
}

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

  refreshCurrentVersion(signal?: AbortSignal): Promise<KeyStatus> {
    return this.audited(
      'getLatest',
      undefined,
      () => this.inner.refreshCurrentVersion(signal),
      (s) => s.keyId,
    );
  }

  wrap(dek: Uint8Array, signal?: AbortSignal): Promise<WrapResult> {
    return this.audited(
      'wrapKey',
      undefined,
      () => this.inner.wrap(dek, signal),
      (r) => r.keyId,
    );
  }

  unwrap(keyId: string, algorithm: string, wrapped: Uint8Array, signal?: AbortSignal): Promise<Buffer> {
    return this.audited('unwrapKey', keyId, () => this.inner.unwrap(keyId, algorithm, wrapped, signal));
  }

  status(keyId: string, signal?: AbortSignal, options?: { latest?: boolean }): Promise<KeyStatus> {
    return this.audited('getKey', keyId, () => this.inner.status(keyId, signal, options));
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
    call: () => Promise<T>,
    resultKeyId?: (result: T) => string,
  ): Promise<T> {
    const started = performance.now();
    const caller = callers.getStore() ?? { caller: 'background' };
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
