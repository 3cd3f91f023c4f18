/**
 * Building the Azure provider from configuration: the credential, the TLS trust, and the SDK clients
 * (one KeyClient, one CryptographyClient per key version), all with the SDK's own retries off.
 */
import { readFileSync } from 'node:fs';
import {
  DefaultAzureCredential,
  ManagedIdentityCredential,
  type TokenCredential,
  WorkloadIdentityCredential,
} from '@azure/identity';
import {
  CryptographyClient,
  type CryptographyClientOptions,
  KeyClient,
  type KeyVaultKey,
} from '@azure/keyvault-keys';
import { type AzureCloud, configuredAuthorityHost, instanceDiscoveryDisabled } from '../../config/config';
import type { RetryDeps, RetryPolicyOptions } from '../retry';
import { parseKeyId, vaultHost } from './key-id';
import { AzureKekProvider, type VaultCallObserver } from './provider';

/** How the provider gets its Entra ID token. */
export interface AzureCredentialConfig {
  /**
   * default: DefaultAzureCredential (workload identity, then managed identity, then developer
   * logins). workload-identity / managed-identity: only that one. static-token: a fixed bearer
   * token, for the local dev vault only.
   */
  readonly kind: 'default' | 'workload-identity' | 'managed-identity' | 'static-token';
  /** The user-assigned managed identity's or the workload identity app's client id. */
  readonly clientId?: string | undefined;
  readonly tenantId?: string | undefined;
  /** workload-identity: the projected service-account token; static-token: a file holding the token. */
  readonly tokenFile?: string | undefined;
  /** static-token: the token itself (dev only; prefer tokenFile). */
  readonly token?: string | undefined;
  /** The Azure cloud whose Entra ID signs in (public, china, usgov); see config.ts AZURE_CLOUDS. */
  readonly cloud?: AzureCloud | undefined;
  /** An explicit Entra ID authority host, instead of cloud (the dev vault's Entra ID, Azure Stack). */
  readonly authorityHost?: string | undefined;
  /** Skip MSAL's instance discovery; unset: skipped for authority hosts of no Azure cloud. */
  readonly disableInstanceDiscovery?: boolean | undefined;
  /** PEM CA of the authority host's TLS certificate (the dev vault's Entra ID); Entra ID requests only. */
  readonly authorityCaFile?: string | undefined;
}

/** One `keys.<alias>` entry with `provider: azure` (see the schema proposed in docs/azure.md). */
export interface AzureKeyConfig {
  readonly provider: 'azure';
  readonly vaultUrl: string;
  readonly keyName: string;
  readonly credential: AzureCredentialConfig;
  /** PEM file of the CA the vault's TLS certificate chains to (dev vault); added trust only for the vault. */
  readonly caFile?: string | undefined;
  readonly retry?: Partial<RetryPolicyOptions> | undefined;
}

/** What `createAzureProvider` lets callers (main.ts, tests) supply instead of building it. */
export interface AzureProviderDeps {
  /** A credential to use instead of building one from `config.credential` (share one per identity). */
  readonly credential?: TokenCredential;
  /** Reads caFile and static-token token files; defaults to fs.readFileSync(path, 'utf8'). */
  readonly readFile?: (path: string) => string;
  /** Clock, sleep, randomness and the retry event hook. */
  readonly retryDeps?: Partial<RetryDeps>;
  readonly currentVersionTtlMs?: number;
  /** Told about every vault call's duration and outcome (metrics). */
  readonly onVaultCall?: VaultCallObserver;
}

const readUtf8 = (path: string) => readFileSync(path, 'utf8');

/**
 * The @azure/identity options every Entra ID credential of this config shares: the authority host (from
 * cloud or authorityHost; unset, the SDK's default or AZURE_AUTHORITY_HOST), instance discovery, and the
 * authority's CA. identity builds its IdentityClient (MSAL's HTTP client) from the credential options, so
 * `tlsOptions` reaches core-rest-pipeline's tlsPolicy for Entra ID requests only. Verification stays on.
 */
export function entraCredentialOptions(
  config: AzureCredentialConfig,
  readFile: (path: string) => string = readUtf8,
): { authorityHost?: string; disableInstanceDiscovery?: boolean; tlsOptions?: { ca: string } } {
  const authorityHost = configuredAuthorityHost(config);
  return {
    ...(authorityHost ? { authorityHost } : {}),
    ...(instanceDiscoveryDisabled(config) ? { disableInstanceDiscovery: true } : {}),
    ...(config.authorityCaFile ? { tlsOptions: { ca: readCaFile(config.authorityCaFile, readFile) } } : {}),
  };
}

/** Builds the credential a config asks for. Throws (at startup) when the config cannot work. */
export function createAzureCredential(
  config: AzureCredentialConfig,
  readFile: (path: string) => string = readUtf8,
): TokenCredential {
  switch (config.kind) {
    case 'default':
      return new DefaultAzureCredential({
        ...entraCredentialOptions(config, readFile),
        ...(config.clientId ? { managedIdentityClientId: config.clientId } : {}),
        ...(config.clientId ? { workloadIdentityClientId: config.clientId } : {}),
        ...(config.tenantId ? { tenantId: config.tenantId } : {}),
      });
    case 'workload-identity':
      // Unset fields fall back to AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE
      // (and the authority to AZURE_AUTHORITY_HOST), which the AKS workload identity webhook injects;
      // the SDK reads them, not sealbox.
      return new WorkloadIdentityCredential({
        ...entraCredentialOptions(config, readFile),
        ...(config.clientId ? { clientId: config.clientId } : {}),
        ...(config.tenantId ? { tenantId: config.tenantId } : {}),
        ...(config.tokenFile ? { tokenFilePath: config.tokenFile } : {}),
      });
    case 'managed-identity':
      // The managed identity endpoint (IMDS, App Service, …) issues the token itself: no authority host.
      return config.clientId
        ? new ManagedIdentityCredential({ clientId: config.clientId })
        : new ManagedIdentityCredential();
    case 'static-token': {
      const { token, tokenFile } = config;
      if (!token && !tokenFile) throw new Error('a static-token credential needs token or tokenFile');
      return staticTokenCredential(token ? () => token : () => readFile(tokenFile!));
    }
  }
}

/**
 * A credential that always presents the same bearer token: for the local dev vault only. The token
 * is read on each request for a token (the Key Vault policy caches it for a few minutes), so a
 * rewritten token file is picked up.
 */
export function staticTokenCredential(read: () => string): TokenCredential {
  return {
    async getToken() {
      const token = read().trim();
      if (!token) {
        const err = new Error('the static token is empty');
        err.name = 'CredentialUnavailableError';
        throw err;
      }
      return { token, expiresOnTimestamp: Date.now() + 5 * 60_000, tokenType: 'Bearer' };
    },
  };
}

/**
 * Options for every KeyClient and CryptographyClient sealbox builds. A new object per client: the
 * SDK writes into `userAgentOptions`. `tls` must be one shared object, because the HTTP client
 * caches one agent (connection pool) per TLS settings object.
 */
export function azureClientOptions(
  options: { tls?: { ca: string } | undefined; staticToken?: boolean; loopback?: boolean } = {},
): CryptographyClientOptions {
  return {
    // Exactly one retry layer (retry.ts): SDK retries would multiply attempts past our deadline and
    // count nothing.
    retryOptions: { maxRetries: 0 },
    userAgentOptions: { userAgentPrefix: 'sealbox' },
    // core-rest-pipeline turns tlsOptions into its tlsPolicy, which sets PipelineRequest.tlsSettings
    // for each request; the Node HTTP client passes `ca` to https.Agent. Verification stays on.
    ...(options.tls ? { tlsOptions: options.tls } : {}),
    // A static token is not scoped by the challenge's resource, and a loopback host (the dev vault on
    // localhost or 127.0.0.1) has no dot, so no resource can ever match it (the SDK requires the host to
    // end with "." + the resource's host). Real credentials against a real vault keep the check.
    ...(options.staticToken || options.loopback ? { disableChallengeResourceVerification: true } : {}),
  };
}

/** Reads a PEM CA file; throws naming the file when it holds no certificate. */
export function readCaFile(path: string, readFile: (path: string) => string = readUtf8): string {
  let pem: string;
  try {
    pem = readFile(path);
  } catch (err) {
    throw new Error(`cannot read caFile ${path}: ${(err as Error).message}`);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new Error(`caFile ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  }
  return pem;
}

/**
 * Builds the provider for one configured Azure key: the credential (or `deps.credential`), one
 * KeyClient, and a factory for one CryptographyClient per key version, all sharing the credential,
 * the TLS settings and `retryOptions: { maxRetries: 0 }`. No I/O beyond reading caFile.
 */
export function createAzureProvider(config: AzureKeyConfig, deps: AzureProviderDeps = {}): AzureKekProvider {
  const readFile = deps.readFile ?? readUtf8;
  const credential = deps.credential ?? createAzureCredential(config.credential, readFile);
  const tls = config.caFile ? { ca: readCaFile(config.caFile, readFile) } : undefined;
  const staticToken = config.credential.kind === 'static-token';
  const vaultUrl = `https://${vaultHost(config.vaultUrl)}`;
  const loopback = isLoopbackHost(new URL(vaultUrl).hostname);
  return new AzureKekProvider({
    vaultUrl,
    keyName: config.keyName,
    keyClient: new KeyClient(vaultUrl, credential, azureClientOptions({ tls, staticToken, loopback })),
    cryptoClientFactory: (keyId) =>
      remoteOnlyCryptographyClient(keyId, credential, azureClientOptions({ tls, staticToken, loopback })),
    retry: config.retry,
    deps: deps.retryDeps,
    currentVersionTtlMs: deps.currentVersionTtlMs,
    onVaultCall: deps.onVaultCall,
  });
}

/** localhost, 127.0.0.0/8 or ::1: a vault on this machine (the dev vault). */
function isLoopbackHost(hostname: string): boolean {
  const host = hostname.replace(/^\[|\]$/g, '').toLowerCase();
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

/**
 * A CryptographyClient for one key version that sends every operation to the vault and enforces
 * nothing from a cached copy of the key.
 *
 * Why: built from a key id string, CryptographyClient fetches the key once (an extra GET per version)
 * and from then on checks that copy's nbf/exp and key_ops before every call, forever
 * (@azure/keyvault-keys 4.10 `cryptographyClient.ts`: `fetchKey` caches `this.key`; `ensureValid`
 * throws "expired at" / "can't be used before" / "Operation … is not supported" for every operation,
 * unwrap included). After an operator extends `exp` the copy keeps refusing, and it refuses unwraps
 * of expired versions that Key Vault allows. Built from a KeyVaultKey, the client uses that object as
 * is (`fetchKey` returns it, no GET); with no dates, no key_ops and no key material in it, `ensureValid`
 * checks nothing and only the remote provider is used (`getProvider` adds local RSA/AES providers only
 * for key material). The vault enforces the key's real, current attributes on every call.
 * test/integration/azure-e2e.test.ts fails if the SDK changes this behaviour.
 */
export function remoteOnlyCryptographyClient(
  keyId: string,
  credential: TokenCredential,
  options: CryptographyClientOptions,
): CryptographyClient {
  const parsed = parseKeyId(keyId);
  if (!parsed) throw new Error(`${keyId.slice(0, 256)} is not a Key Vault key id`);
  const vaultUrl = `https://${parsed.host}`;
  const key: KeyVaultKey = {
    id: keyId,
    name: parsed.name,
    properties: { id: keyId, name: parsed.name, vaultUrl, version: parsed.version },
  };
  return new CryptographyClient(key, credential, options);
}
