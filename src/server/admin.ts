/**
 * sealbox.v1.Admin: cache flush, key revocation and key status, for operators. Served on its own
 * socket (listen.adminSocket), which application containers that share the envelope socket cannot
 * reach, and on the envelope server for identities with `admin: true` (e.g. an operator's mTLS
 * certificate); every other caller gets PERMISSION_DENIED.
 */
import { Server, ServerCredentials, type sendUnaryData } from '@grpc/grpc-js';
import { loadApi } from '../api/proto';
import type { CachedDataKeys } from '../cache/cached-data-keys';
import { ErrorCode, SealboxError } from '../errors';
import type { AdminHandlers } from '../gen/sealbox/v1/Admin';
import type { KeyVersionStatus } from '../gen/sealbox/v1/KeyVersionStatus';
import type { AuditCaller } from '../kek/audit';
import type { KekRegistry } from '../kek/registry';
import type { KeyWatcher } from '../kek/watcher';
import type { Logger } from '../log/logger';
import type { AccessControl, CallPeer } from './access';
import { rpcCaller } from './callers';
import { addReflection } from './reflection';
import { bindUnixSocket } from './socket';
import { toServiceError } from './status';

export interface AdminDeps {
  /** Absent when the cache is off (then there is nothing to flush or revoke). */
  readonly cache: CachedDataKeys | undefined;
  readonly watcher: KeyWatcher | undefined;
  readonly registry: KekRegistry;
  readonly log: Logger;
}

/**
 * The Admin handlers. `admit` decides, per call, whether the caller is an admin identity; it throws
 * ACCESS_DENIED (or QUOTA_EXCEEDED) otherwise.
 */
export function adminHandlers(
  deps: AdminDeps,
  admit: (call: CallPeer, method: string) => string,
): AdminHandlers {
  const { cache, watcher, registry, log } = deps;

  function unary<Res>(
    method: string,
    call: CallPeer,
    callback: sendUnaryData<Res>,
    work: (caller: AuditCaller) => Promise<Res>,
  ): void {
    let caller: AuditCaller;
    try {
      caller = rpcCaller(method, call, admit(call, method), 'admin:');
    } catch (err) {
      callback(toServiceError(err, log, method));
      return;
    }
    work(caller).then(
      (response) => callback(null, response),
      (err) => callback(toServiceError(err, log, method)),
    );
  }

  /** Status rows for every key version the watcher or the cache knows about. */
  function statusRows(only?: ReadonlySet<string>): KeyVersionStatus[] {
    const described = cache?.describe() ?? new Map();
    const checks = new Map((watcher?.snapshot() ?? []).map((c) => [c.keyId, c]));
    const ids = new Set([...described.keys(), ...checks.keys()]);
    return [...ids]
      .filter((id) => !only || only.has(id))
      .sort()
      .map((keyId) => {
        const d = described.get(keyId);
        const c = checks.get(keyId);
        return {
          keyId,
          state: c?.state ?? 'unknown',
          refusedReason: c?.reason ?? '',
          checkedAt: c?.checkedAt?.toISOString() ?? '',
          lastError: c?.lastError ?? '',
          cachedEncryptDeks: d?.encrypt ?? 0,
          cachedDecryptDeks: d?.decrypt ?? 0,
          refusalPending: c?.refusalPending
            ? `${c.refusalPending.since.toISOString()} ${c.refusalPending.operation}`
            : '',
        };
      });
  }

  return {
    RevokeKey(call, callback) {
      unary('RevokeKey', call, callback, async (caller) => {
        const { keyId, keyAlias } = call.request;
        if (!keyId === !keyAlias) {
          throw new SealboxError(
            ErrorCode.INVALID_ARGUMENT,
            'RevokeKey needs exactly one of key_id or key_alias',
          );
        }
        let targets: string[];
        if (keyId) {
          registry.forKeyId(keyId); // NOT_FOUND for a key no configured alias owns
          targets = [keyId];
        } else {
          const provider = registry.forAlias(keyAlias);
          const described = cache?.describe() ?? new Map<string, unknown>();
          targets = [...described.keys()].filter((id) => provider.owns(id));
          targets.push((await provider.refreshCurrentVersion(undefined, caller)).keyId);
          // The current version is usually cached too: evict (and count) each version once.
          targets = [...new Set(targets)];
        }
        for (const id of targets) cache?.evictKey(id);
        log.warn(
          { keyIds: targets, by: 'admin' },
          'cached DEKs evicted by RevokeKey; re-checking in the vault',
        );
        await watcher?.checkNow(targets);
        return { keys: statusRows(new Set(targets)) };
      });
    },

    FlushCache(call, callback) {
      unary('FlushCache', call, callback, async () => {
        const before = cache?.stats().entries ?? { encrypt: 0, decrypt: 0 };
        cache?.flush();
        log.warn({ by: 'admin', ...before }, 'DEK cache flushed');
        return { encryptDeks: before.encrypt, decryptDeks: before.decrypt };
      });
    },

    GetKeyStatus(call, callback) {
      unary('GetKeyStatus', call, callback, async () => ({ keys: statusRows() }));
    },
  };
}

/**
 * Starts the admin gRPC server on its own Unix socket (mode 0600 unless configured otherwise). With
 * `reflection`, server reflection describes sealbox.v1.Admin there (./reflection.ts) to any identity
 * of the admin socket.
 */
export async function startAdminServer(
  path: string,
  socket: { mode: number; group: number | string | null },
  deps: AdminDeps,
  access: AccessControl,
  reflection?: { idleTimeoutMs: number },
): Promise<{ stop(): Promise<void> }> {
  const server = new Server();
  server.addService(
    loadApi().sealbox.sealbox.v1.Admin.service,
    adminHandlers(deps, (call, method) => access.admitAdmin(call, 'admin-socket', method)),
  );
  if (reflection) {
    addReflection(server, ['sealbox.v1.Admin'], {
      admit: (call, method) => access.admit(call, 'admin-socket', method, true),
      idleTimeoutMs: reflection.idleTimeoutMs,
      log: deps.log,
    });
  }
  try {
    await bindUnixSocket(server, path, socket, ServerCredentials.createInsecure());
  } catch (err) {
    server.forceShutdown();
    throw err;
  }
  return {
    async stop() {
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
  };
}
