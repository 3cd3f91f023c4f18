/**
 * The dev vault (src/devvault) in a process of its own, so that its CPU (RSA private-key operations,
 * TLS) is neither sealbox's nor the benchmark's. Creates one RSA key with the real KeyClient (with
 * `--versions N`, N versions of it), with `--hsm-key-size`, an RSA-HSM key `<key-name>-hsm` with
 * as many versions, and with `--second-key` a second RSA key of the same size, `<key-name>-2` (one
 * version; bench/kms.ts gives it to the KMS face, whose key the envelope API never serves), then prints one JSON line on stdout (DevVaultInfo) and serves until SIGTERM/SIGINT.
 * Counters, resets and fault changes go through the admin surface (/_sealbox/, lib/vault.ts).
 *
 *   node dev-vault.js --data-dir DIR [--fixed-ms 10] [--jitter-ms 10] [--throttling on|off]
 *     [--key-size 2048|3072|4096] [--key-name bench-kek] [--versions 1] [--hsm-key-size 2048|3072|4096]
 *     [--second-key]
 *
 * Two identities: an admin one that may create keys (used here only), and the one sealbox uses, with
 * exactly get + wrapKey + unwrapKey.
 */
import './lib/watch-parent';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { KeyClient } from '@azure/keyvault-keys';
import { devVaultClientOptions, startDevVault, staticTokenCredential } from '../src/devvault';

export interface DevVaultInfo {
  readonly url: string;
  readonly port: number;
  readonly caFile: string;
  readonly adminToken: string;
  /** Bearer token of the identity sealbox is configured with (get, wrapKey, unwrapKey). */
  readonly sealboxToken: string;
  readonly keyName: string;
  /** Versioned id of the key created at start (its current version). */
  readonly keyId: string;
  /** Every version's id, oldest first (the last is keyId). */
  readonly keyIds: string[];
  readonly keySize: number;
  /** The RSA-HSM key, when --hsm-key-size was given: its name, size and version ids, oldest first. */
  readonly hsmKey?: { readonly name: string; readonly keySize: number; readonly keyIds: string[] };
  /** The second RSA key, when --second-key was given: its name and (only) version id. */
  readonly secondKey?: { readonly name: string; readonly keyId: string };
  readonly latency: { fixedMs: number; jitterMs: number };
  readonly throttling: { enabled: boolean };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'data-dir': { type: 'string' },
      'fixed-ms': { type: 'string', default: '10' },
      'jitter-ms': { type: 'string', default: '10' },
      throttling: { type: 'string', default: 'on' },
      'key-size': { type: 'string', default: '2048' },
      'key-name': { type: 'string', default: 'bench-kek' },
      versions: { type: 'string', default: '1' },
      'hsm-key-size': { type: 'string' },
      'second-key': { type: 'boolean', default: false },
    },
  });
  const dataDir = values['data-dir'];
  if (!dataDir) throw new Error('--data-dir is required');
  const keySize = Number(values['key-size']);
  if (![2048, 3072, 4096].includes(keySize)) throw new Error('--key-size must be 2048, 3072 or 4096');
  const versions = Number(values.versions);
  if (!Number.isInteger(versions) || versions < 1 || versions > 10)
    throw new Error('--versions must be an integer from 1 to 10');
  const hsmKeySize = values['hsm-key-size'] === undefined ? undefined : Number(values['hsm-key-size']);
  if (hsmKeySize !== undefined && ![2048, 3072, 4096].includes(hsmKeySize))
    throw new Error('--hsm-key-size must be 2048, 3072 or 4096');
  const latency = { fixedMs: Number(values['fixed-ms']), jitterMs: Number(values['jitter-ms']) };
  const throttling = { enabled: values.throttling !== 'off' };
  const adminIdentityToken = randomBytes(24).toString('base64url');
  const sealboxToken = randomBytes(24).toString('base64url');

  const vault = await startDevVault({
    dataDir,
    identities: {
      [adminIdentityToken]: { name: 'bench-admin', permissions: ['create', 'get'] },
      [sealboxToken]: { name: 'sealbox', permissions: ['get', 'wrapKey', 'unwrapKey'] },
    },
    latency,
    throttling,
  });
  const keys = new KeyClient(
    vault.url,
    staticTokenCredential(adminIdentityToken),
    devVaultClientOptions(vault),
  );
  const keyName = values['key-name']!;
  // Creating a key that exists adds a version (Key Vault semantics): N creates, N versions.
  const createVersions = async (name: string, size: number, hsm: boolean): Promise<string[]> => {
    const ids: string[] = [];
    for (let i = 0; i < versions; i++) {
      const key = await keys.createRsaKey(name, { keySize: size, hsm });
      if (!key.id) throw new Error('the dev vault returned a key without an id');
      ids.push(key.id);
    }
    return ids;
  };
  const keyIds = await createVersions(keyName, keySize, false);
  const hsmKey =
    hsmKeySize === undefined
      ? undefined
      : {
          name: `${keyName}-hsm`,
          keySize: hsmKeySize,
          keyIds: await createVersions(`${keyName}-hsm`, hsmKeySize, true),
        };
  const secondKey = values['second-key']
    ? { name: `${keyName}-2`, keyId: (await keys.createRsaKey(`${keyName}-2`, { keySize })).id! }
    : undefined;
  // A fresh throttling window and zero counters: the benchmark starts from here.
  vault.setFaults({ throttling });
  vault.resetCounters();

  const info: DevVaultInfo = {
    url: vault.url,
    port: vault.port,
    caFile: vault.caFile,
    adminToken: vault.adminToken,
    sealboxToken,
    keyName,
    keyId: keyIds.at(-1)!,
    keyIds,
    keySize,
    ...(hsmKey === undefined ? {} : { hsmKey }),
    ...(secondKey === undefined ? {} : { secondKey }),
    latency,
    throttling,
  };
  process.stdout.write(`${JSON.stringify(info)}\n`);

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      vault.close().finally(() => process.exit(0));
      setTimeout(() => process.exit(0), 2000).unref();
    });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`dev-vault: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});
