/**
 * ManagedIdentityCredential against the embedded Entra ID's IMDS endpoint
 * (AZURE_POD_IDENTITY_AUTHORITY_HOST), in its own process because MSAL fixes the managed identity source
 * and endpoint process-wide on first use (see entra.test.ts). Both a user-assigned identity (by client id)
 * and the system-assigned one, and a DefaultAzureCredential that reaches managed identity, get tokens that
 * the dev vault accepts through the real KeyClient and CryptographyClient.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { DefaultAzureCredential, ManagedIdentityCredential, type TokenCredential } from '@azure/identity';
import { CryptographyClient, KeyClient } from '@azure/keyvault-keys';
import { devVaultClientOptions } from '../../../src/devvault';
import { startTestVault, type TestVault, TOKENS } from './harness';

let tv: TestVault;
let kid: string;
const saved = { ...process.env };

before(async () => {
  tv = await startTestVault({
    kind: 'vault',
    permissionModel: 'rbac',
    entra: {
      principals: [
        { name: 'vm-system', managedIdentity: 'system' },
        { name: 'vm-user', managedIdentity: 'user' },
      ],
    },
    roleAssignments: [
      { principal: 'ops', role: 'Key Vault Crypto Officer', scope: '/' },
      { principal: 'vm-system', role: 'Key Vault Crypto Service Encryption User', scope: '/keys/kek' },
      { principal: 'vm-user', role: 'Key Vault Crypto Service Encryption User', scope: '/keys/kek' },
    ],
  });
  kid = (await tv.keys(TOKENS.admin).createRsaKey('kek')).id ?? '';
  // What a VM (or aad-pod-identity) environment provides; nothing else that would pick another source.
  for (const v of [
    'IDENTITY_ENDPOINT',
    'IDENTITY_HEADER',
    'MSI_ENDPOINT',
    'IMDS_ENDPOINT',
    'AZURE_FEDERATED_TOKEN_FILE',
    'AZURE_CLIENT_ID',
    'AZURE_CLIENT_SECRET',
    'AZURE_TENANT_ID',
  ])
    delete process.env[v];
  process.env['AZURE_POD_IDENTITY_AUTHORITY_HOST'] = tv.vault.entra!.imdsHost;
});

after(async () => {
  process.env = saved;
  await tv?.close();
});

async function useVault(credential: TokenCredential): Promise<void> {
  const keys = new KeyClient(tv.vault.url, credential, devVaultClientOptions(tv.vault));
  assert.equal((await keys.getKey('kek')).id, kid);
  const crypto = new CryptographyClient(kid, credential, devVaultClientOptions(tv.vault));
  const dek = randomBytes(32);
  const wrapped = await crypto.wrapKey('RSA-OAEP-256', dek);
  assert.deepEqual(Buffer.from((await crypto.unwrapKey('RSA-OAEP-256', wrapped.result)).result), dek);
}

test('IMDS: a user-assigned identity by client id', async () => {
  await useVault(
    new ManagedIdentityCredential({
      clientId: tv.vault.entra!.principal('vm-user')!.clientId,
      retryOptions: { maxRetries: 0 },
    }),
  );
});

test('IMDS: the system-assigned identity', async () => {
  await useVault(new ManagedIdentityCredential({ retryOptions: { maxRetries: 0 } }));
});

test('DefaultAzureCredential reaches managed identity (AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential)', async () => {
  process.env['AZURE_TOKEN_CREDENTIALS'] = 'ManagedIdentityCredential';
  try {
    await useVault(
      new DefaultAzureCredential({ managedIdentityClientId: tv.vault.entra!.principal('vm-user')!.clientId }),
    );
  } finally {
    delete process.env['AZURE_TOKEN_CREDENTIALS'];
  }
});

test('IMDS refuses a request without the Metadata header (what identity’s probe relies on)', async () => {
  const res = await fetch(
    `${tv.vault.entra!.imdsHost}/metadata/identity/oauth2/token?resource=https://localhost`,
  );
  assert.equal(res.status, 400);
});
