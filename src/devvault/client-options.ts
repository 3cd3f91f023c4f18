/**
 * Options that let the real Azure SDK clients (KeyClient, CryptographyClient) talk to a dev vault.
 *
 * Trust: the SDK's HTTP client uses `PipelineRequest.agent` when a policy sets it, so a per-call pipeline
 * policy attaches one https.Agent whose `ca` is the dev vault's CA. TLS verification stays on; nothing
 * here touches rejectUnauthorized or NODE_TLS_REJECT_UNAUTHORIZED.
 *
 * Challenge: the SDK's keyVaultAuthenticationPolicy accepts a 401 challenge only when the request host
 * ends with "." + the challenge resource's host (verifyChallengeResource in @azure/keyvault-common). The
 * dev vault's resource is https://localhost, so a request to `sealbox.localhost` passes the check exactly
 * as `myvault.vault.azure.net` passes it for `https://vault.azure.net`. The bare host `localhost` has no
 * dot, so no resource can ever match it: clients using DevVault.url (https://localhost:PORT) must set
 * disableChallengeResourceVerification, which is what these options do by default. Pass
 * `{ verifyChallengeResource: true }` and use DevVault.subdomainUrl to keep the check on; the agent then
 * resolves `*.localhost` to the vault's loopback address itself (RFC 6761 reserves those names for
 * loopback, but glibc does not resolve them).
 */
import { lookup as dnsLookup } from 'node:dns';
import { Agent } from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import type { AccessToken, TokenCredential } from '@azure/identity';
import type { KeyClientOptions } from '@azure/keyvault-keys';

/**
 * A sealbox `keys.<alias>` entry for key `keyName` in a dev vault, authenticating with `token` (a
 * static identity token) and trusting only the vault's CA. To sign in through the embedded Entra ID
 * instead, use `credential.kind: workload-identity` or `managed-identity` with `authorityHost` and
 * `authorityCaFile` (docs/azure.md "Against the dev vault's embedded Entra ID").
 */
export function sealboxKeyConfig(
  vault: { readonly url: string; readonly caFile: string },
  keyName: string,
  token: string,
) {
  return {
    provider: 'azure' as const,
    vaultUrl: vault.url,
    keyName,
    credential: { kind: 'static-token' as const, token },
    caFile: vault.caFile,
  };
}

/** What devVaultClientOptions needs from a DevVault. */
export interface DevVaultEndpoint {
  readonly caPem: string;
  /** The bound address; *.localhost resolves here. Default 127.0.0.1. */
  readonly host?: string;
}

/** Tuning for devVaultClientOptions. */
export interface DevVaultClientTuning {
  /** Keep the SDK's challenge-resource check on (use DevVault.subdomainUrl as the vault URL). */
  readonly verifyChallengeResource?: boolean;
  /** Passed through to the SDK; e.g. `{ maxRetries: 0 }` to observe 429 and 5xx responses directly. */
  readonly retryOptions?: KeyClientOptions['retryOptions'];
}

/**
 * Options for `new KeyClient(url, credential, options)` and `new CryptographyClient(id, credential,
 * options)` against `vault`. Each call returns a fresh options object (the SDK mutates it) that shares
 * one keep-alive agent.
 */
export function devVaultClientOptions(
  vault: DevVaultEndpoint,
  tuning: DevVaultClientTuning = {},
): KeyClientOptions {
  const loopback =
    vault.host !== undefined && isIP(vault.host) !== 0 && vault.host !== '0.0.0.0' && vault.host !== '::'
      ? vault.host
      : '127.0.0.1';
  const family = isIP(loopback);
  const lookup: LookupFunction = (hostname, options, callback) => {
    if (hostname === 'localhost' || hostname.endsWith('.localhost')) {
      // Resolve in-process: *.localhost is loopback by definition and never leaves the machine.
      if (options.all === true) callback(null, [{ address: loopback, family }]);
      else callback(null, loopback, family);
      return;
    }
    if (options.all === true) dnsLookup(hostname, { ...options, all: true }, callback);
    else dnsLookup(hostname, { ...options, all: false }, callback);
  };
  const agent = new Agent({ ca: vault.caPem, keepAlive: true, lookup });
  return {
    additionalPolicies: [
      {
        position: 'perCall',
        policy: {
          name: 'sealboxDevVaultAgent',
          sendRequest(request, next) {
            request.agent = agent;
            return next(request);
          },
        },
      },
    ],
    disableChallengeResourceVerification: tuning.verifyChallengeResource !== true,
    ...(tuning.retryOptions === undefined ? {} : { retryOptions: tuning.retryOptions }),
  };
}

/**
 * A TokenCredential that always returns `token` (a dev vault identity's bearer token), for whatever
 * scope and tenant the challenge names. Tokens are valid for an hour from each call.
 */
export function staticTokenCredential(token: string): TokenCredential {
  return {
    async getToken(): Promise<AccessToken> {
      return { token, expiresOnTimestamp: Date.now() + 3_600_000, tokenType: 'Bearer' };
    },
  };
}

/**
 * Options that point an @azure/identity credential (WorkloadIdentityCredential, ClientSecretCredential,
 * ClientAssertionCredential, DefaultAzureCredential) at a dev vault's embedded Entra ID: its authority
 * host and tenant, no instance discovery (MSAL would ask login.microsoftonline.com about the host and
 * refuse it), and the pipeline policy that trusts the dev CA. ManagedIdentityCredential ignores these
 * (its endpoints are plain HTTP, chosen by environment variables; docs/devvault.md).
 */
export function devEntraCredentialOptions(
  vault: DevVaultEndpoint & {
    readonly entra?: { readonly authorityHost: string; readonly tenantId: string };
  },
) {
  if (vault.entra === undefined) {
    throw new Error('this dev vault has no embedded Entra ID: start it with the entra option');
  }
  return {
    authorityHost: vault.entra.authorityHost,
    tenantId: vault.entra.tenantId,
    disableInstanceDiscovery: true,
    additionalPolicies: devVaultClientOptions(vault).additionalPolicies ?? [],
  };
}
