/**
 * A dev vault for integration tests whose one identity is a static bearer token with the given
 * key permissions, and an admin KeyClient over that token (create, update, delete keys).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KeyClient } from '@azure/keyvault-keys';
import {
  type DevVault,
  devVaultClientOptions,
  type KeyPermission,
  startDevVault,
  staticTokenCredential,
} from '../../src/devvault';

export interface TokenVault {
  readonly dir: string;
  readonly vault: DevVault;
  readonly keys: KeyClient;
  close(): Promise<void>;
}

/** Starts the vault in a fresh temporary directory; `close` stops it and removes the directory. */
export async function startTokenVault(
  prefix: string,
  token: string,
  permissions: KeyPermission[],
): Promise<TokenVault> {
  const dir = mkdtempSync(join(tmpdir(), `sealbox-${prefix}-`));
  const vault = await startDevVault({
    dataDir: join(dir, 'vault'),
    identities: { [token]: { name: 'sealbox', permissions } },
  });
  const keys = new KeyClient(vault.url, staticTokenCredential(token), devVaultClientOptions(vault));
  return {
    dir,
    vault,
    keys,
    async close() {
      await vault.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
