/**
 * sealbox.v1.Admin: cache flush, key revocation and key status, for operators. Served on its own
 * socket (listen.adminSocket) so application containers that share the envelope socket cannot reach it.
 */
import { Server, ServerCredentials, type sendUnaryData } from '@grpc/grpc-js';
import { loadApi } from '../api/proto';
import type { CachedDataKeys } from '../cache/cached-data-keys';
import { ErrorCode, SealboxError } from '../errors';
import type { AdminHandlers } from '../gen/sealbox/v1/Admin';
import type { KeyVersionStatus } from '../gen/sealbox/v1/KeyVersionStatus';
import type { KekRegistry } from '../kek/registry';
import type { KeyWatcher } from '../kek/watcher';
import type { Logger } from '../log/logger';
import { withCallers } from './callers';
import { bindUnixSocket } from './socket';
import { toServiceError } from './status';

export interface AdminDeps {
  /** Absent when the cache is off (then there is nothing to flush or revoke). */
  readonly cache: CachedDataKeys | undefined;
  readonly watcher: KeyWatcher | undefined;
  readonly registry: KekRegistry;
  readonly log: Logger;
}

export function adminHandlers(deps: AdminDeps): AdminHandlers {
  const { cache, watcher, registry, log } = deps;

  function unary<Res>(method: string, callback: sendUnaryData<Res>, work: () => Promise<Res>): void {
    work().then(
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
          refusedReason: d?.refused ?? '',
          checkedAt: c?.checkedAt?.toISOString() ?? '',
          lastError: c?.lastError ?? '',
          cachedEncryptDeks: d?.encrypt ?? 0,
          cachedDecryptDeks: d?.decrypt ?? 0,
        };
      });
  }

  return withCallers(
    {
      RevokeKey(call, callback) {
        unary('RevokeKey', callback, async () => {
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
            if (provider.refreshCurrentVersion) targets.push((await provider.refreshCurrentVersion()).keyId);
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

      FlushCache(_call, callback) {
        unary('FlushCache', callback, async () => {
          const before = cache?.stats().entries ?? { encrypt: 0, decrypt: 0 };
          cache?.flush();
          log.warn({ by: 'admin', ...before }, 'DEK cache flushed');
          return { encryptDeks: before.encrypt, decryptDeks: before.decrypt };
        });
      },

      GetKeyStatus(_call, callback) {
        unary('GetKeyStatus', callback, async () => ({ keys: statusRows() }));
      },
    },
    'admin:',
  );
}

/** Starts the admin gRPC server on its own Unix socket (mode 0600). */
export async function startAdminServer(
  path: string,
  mode: number,
  deps: AdminDeps,
): Promise<{ stop(): Promise<void> }> {
  const server = new Server();
  server.addService(loadApi().sealbox.sealbox.v1.Admin.service, adminHandlers(deps));
  await bindUnixSocket(server, path, mode, ServerCredentials.createInsecure());
  return {
    async stop() {
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
  };
}
