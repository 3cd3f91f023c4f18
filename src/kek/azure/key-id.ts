/**
 * Key Vault key ids and vault URLs: pure parsing, no I/O. A key id is
 * `https://{vault host[:port]}/keys/{name}/{version}`, the form Key Vault returns and sealbox writes
 * into ciphertext headers (so everything parsed here may be attacker-controlled).
 */
import { MAX_KEY_ID_BYTES } from '../../crypto/format';

/** Key Vault key names (1-127 letters, digits, dashes). */
export const KEY_NAME = /^[0-9A-Za-z-]{1,127}$/;
/** Key versions: Key Vault and Managed HSM use 32 hex digits; allow a little more for compatible vaults. */
export const KEY_VERSION = /^[0-9A-Za-z_-]{1,64}$/;
/** `https://host[:port]/keys/{name}/{version}[/]`; the version part may be empty (caught later). */
const KEY_ID = /^https:\/\/([^/?#@\s]+)\/keys\/([^/?#\s]+)\/([^/?#\s]*?)\/?$/i;

/** A key id split into its parts; host lowercased, default port dropped. */
export interface ParsedKeyId {
  readonly host: string;
  readonly name: string;
  readonly version: string;
}

/** Parses a Key Vault key id (pure, no I/O); undefined when it is not one. */
export function parseKeyId(keyId: string): ParsedKeyId | undefined {
  if (keyId.length > MAX_KEY_ID_BYTES) return undefined;
  const match = KEY_ID.exec(keyId);
  if (!match) return undefined;
  let host = match[1]!.toLowerCase();
  if (host.endsWith(':443')) host = host.slice(0, -4);
  return { host, name: match[2]!, version: match[3]! };
}

/** The lowercased host[:port] of a vault URL (https://host[:port] and nothing else); throws naming the URL. */
export function vaultHost(vaultUrl: string): string {
  let url: URL;
  try {
    url = new URL(vaultUrl);
  } catch {
    throw new Error(`vaultUrl "${vaultUrl.slice(0, 200)}" is not a URL`);
  }
  if (url.protocol !== 'https:') throw new Error(`vaultUrl ${vaultUrl} must use https`);
  if (
    url.username ||
    url.password ||
    url.search ||
    url.hash ||
    (url.pathname !== '/' && url.pathname !== '')
  ) {
    throw new Error(
      `vaultUrl ${vaultUrl} must be just https://host[:port], with no path, query or credentials`,
    );
  }
  // URL lowercases the host and drops the default port.
  return url.host;
}

/**
 * The identity of one configured key for ownership checks: two aliases with the same reference
 * would both own every version of the key, so configuration refuses that (kek/registry.ts).
 * Key names compare case-insensitively, as Key Vault treats them.
 */
export function azureKeyRef(vaultUrl: string, keyName: string): string {
  return `azure:${vaultHost(vaultUrl)}/keys/${keyName.toLowerCase()}`;
}
