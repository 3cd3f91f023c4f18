/**
 * Starts dev vaults for the devvault integration tests and builds real Azure SDK clients for them.
 * Every vault records the Key Vault responses it sends, so each suite can finish by validating them
 * against the swagger (swagger.ts) and checking that no private key material ever left the vault.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CryptographyClient, KeyClient, type KeyClientOptions, type KeyVaultKey } from '@azure/keyvault-keys';
import {
  type DevVault,
  type DevVaultExchange,
  type DevVaultOptions,
  devVaultClientOptions,
  type KeyPermission,
  startDevVault,
  staticTokenCredential,
} from '../../../src/devvault';
import { ALL_KEY_PERMISSIONS } from '../../../src/devvault/server';

/** Bearer tokens of the identities every test vault has. */
export const TOKENS = {
  /** every permission */
  admin: 'tok-admin-0123456789',
  /** crypto only, no get: CryptographyClient then sends every operation to the vault */
  wrapper: 'tok-wrapper-0123456789',
  /** get and list only */
  reader: 'tok-reader-0123456789',
} as const;

const ALL: KeyPermission[] = [...ALL_KEY_PERMISSIONS];

/** The identities of TOKENS. */
export const IDENTITIES: NonNullable<DevVaultOptions['identities']> = {
  [TOKENS.admin]: { name: 'ops', permissions: ALL },
  [TOKENS.wrapper]: { name: 'wrapper', permissions: ['wrapKey', 'unwrapKey', 'encrypt', 'decrypt'] },
  [TOKENS.reader]: { name: 'reader', permissions: ['get', 'list'] },
};

/** A running test vault, its data directory, its recorded responses and client factories. */
export interface TestVault {
  readonly vault: DevVault;
  readonly dir: string;
  readonly records: DevVaultExchange[];
  /** A KeyClient on vault.url for the identity of `token`. */
  keys(token?: string, options?: KeyClientOptions): KeyClient;
  /** A CryptographyClient for a key id (or KeyVaultKey) for the identity of `token`. */
  crypto(key: string | KeyVaultKey, token?: string, options?: KeyClientOptions): CryptographyClient;
  /** Stops the vault; `keepDir` leaves the data directory for a restart. */
  close(keepDir?: boolean): Promise<void>;
}

/** Starts a vault in a new temporary directory (or `dir`) with the test identities. */
export async function startTestVault(
  options: Partial<DevVaultOptions> = {},
  dir?: string,
): Promise<TestVault> {
  const dataDir = dir ?? mkdtempSync(join(tmpdir(), 'sealbox-devvault-'));
  const records: DevVaultExchange[] = [];
  const vault = await startDevVault({
    identities: IDENTITIES,
    ...options,
    dataDir,
    onResponse: (r) => {
      records.push(r);
      options.onResponse?.(r);
    },
  });
  return {
    vault,
    dir: dataDir,
    records,
    keys: (token = TOKENS.admin, extra = {}) =>
      new KeyClient(vault.url, staticTokenCredential(token), { ...devVaultClientOptions(vault), ...extra }),
    crypto: (key, token = TOKENS.admin, extra = {}) =>
      new CryptographyClient(key, staticTokenCredential(token), {
        ...devVaultClientOptions(vault),
        ...extra,
      }),
    async close(keepDir = false) {
      await vault.close();
      if (!keepDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** A KeyClient option set whose pipeline does not retry, so 429 and 5xx reach the caller. */
export function noRetries(): KeyClientOptions {
  return { retryOptions: { maxRetries: 0 } };
}

/** What a RestError from the SDK carries about a Key Vault error. */
export interface KvRestError {
  readonly statusCode?: number;
  readonly code?: string;
  readonly message: string;
  readonly details?: { error?: { code?: string; message?: string; innerError?: { code?: string } } };
  readonly response?: { headers: { get(name: string): string | undefined } };
}

/**
 * Asserts that `promise` rejects with the SDK's RestError for a Key Vault error of `status`, `code` and
 * (optionally) inner code and message, and returns it.
 */
export async function rejectsKv(
  promise: Promise<unknown>,
  status: number,
  code: string,
  inner?: string,
  message?: RegExp,
): Promise<KvRestError> {
  let caught: KvRestError | undefined;
  await assert.rejects(promise, (err: KvRestError) => {
    caught = err;
    return true;
  });
  const err = caught!;
  assert.equal(err.statusCode, status, `status of ${err.message}`);
  assert.equal(err.code, code, `code of ${err.message}`);
  if (inner !== undefined)
    assert.equal(err.details?.error?.innerError?.code, inner, `inner code of ${err.message}`);
  if (message !== undefined) assert.match(err.message, message);
  return err;
}

/** rejectsKv for use as a test body (resolves to nothing). */
export async function expectKv(
  promise: Promise<unknown>,
  status: number,
  code: string,
  inner?: string,
  message?: RegExp,
): Promise<void> {
  await rejectsKv(promise, status, code, inner, message);
}

/** JWK members that are private key material and must never appear in a response. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'key_hsm'];

/**
 * Asserts that no recorded response body carries private key material: no member with a private JWK
 * name at any depth (no response field of the keys API legitimately has one of these names).
 */
export function assertNoPrivateMaterial(records: readonly DevVaultExchange[]): void {
  const visit = (value: unknown, where: string): void => {
    if (value === null || typeof value !== 'object') return;
    for (const [k, v] of Object.entries(value)) {
      if (PRIVATE_MEMBERS.includes(k)) assert.fail(`private member ${k} in ${where}`);
      visit(v, `${where}.${k}`);
    }
  };
  for (const r of records) visit(r.body, `${r.method} ${r.path}`);
}

/** Key id of a version under a vault URL. */
export function keyIdOf(vault: DevVault, name: string, version: string): string {
  return `${vault.url}/keys/${name}/${version}`;
}
