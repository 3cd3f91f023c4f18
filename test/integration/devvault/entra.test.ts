/**
 * The embedded Entra ID driven by the real @azure/identity credential classes, and the tokens they obtain
 * used against the dev vault with the real KeyClient and CryptographyClient: WorkloadIdentityCredential
 * (a federated service-account token in a file), ClientSecretCredential, ManagedIdentityCredential (App
 * Service endpoint) and DefaultAzureCredential (workload identity from the environment). Then token
 * verification (expiry, audience), endpoint outages, access policies bound to Entra principals, and
 * run-time revocation and delayed grants.
 *
 * Note: MSAL caches the managed identity source (and its endpoint) process-wide on first use
 * (ManagedIdentityClient.identitySource), so one test process can reach one managed identity endpoint;
 * entra-imds.test.ts covers the IMDS form in its own process.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import {
  ClientSecretCredential,
  DefaultAzureCredential,
  ManagedIdentityCredential,
  type TokenCredential,
  WorkloadIdentityCredential,
} from '@azure/identity';
import { CryptographyClient, KeyClient } from '@azure/keyvault-keys';
import {
  devEntraCredentialOptions,
  devVaultClientOptions,
  staticTokenCredential,
} from '../../../src/devvault';
import { VECTORS_DIR } from '../../helpers/paths';
import { assertNoPrivateMaterial, rejectsKv, startTestVault, type TestVault, TOKENS } from './harness';
import { keyVaultSwagger } from './swagger';

let tv: TestVault;
let kid: string;
const DEK = randomBytes(32);
const SA_SUBJECT = 'system:serviceaccount:sealbox:sealbox';
const SECRET = 'dev-secret-0123456789';

before(async () => {
  tv = await startTestVault({
    kind: 'vault',
    entra: {
      principals: [
        { name: 'sealbox-wi', federatedCredentials: [{ subject: SA_SUBJECT }] },
        { name: 'sealbox-app', clientSecret: SECRET },
        { name: 'sealbox-mi', managedIdentity: 'user' },
        { name: 'no-access', clientSecret: SECRET },
      ],
    },
    accessPolicies: [
      { principal: 'sealbox-wi', permissions: ['get', 'wrapKey', 'unwrapKey'] },
      { principal: 'sealbox-app', permissions: ['get', 'wrapKey', 'unwrapKey'] },
      { principal: 'sealbox-mi', permissions: ['get', 'wrapKey', 'unwrapKey'] },
    ],
  });
  kid = (await tv.keys(TOKENS.admin).createRsaKey('kek', { keySize: 2048 })).id ?? '';
});

after(async () => {
  await tv?.close();
});

/** Options every credential needs against the dev Entra ID: its authority host, no instance discovery, its CA. */
function credentialOptions() {
  return devEntraCredentialOptions(tv.vault);
}

/** Wraps and unwraps through the real SDK with `credential`, and reads the key: proves the token works. */
async function useVault(credential: TokenCredential): Promise<void> {
  const keys = new KeyClient(tv.vault.url, credential, devVaultClientOptions(tv.vault));
  assert.equal((await keys.getKey('kek')).id, kid);
  const crypto = new CryptographyClient(kid, credential, devVaultClientOptions(tv.vault));
  const wrapped = await crypto.wrapKey('RSA-OAEP-256', DEK);
  assert.deepEqual(Buffer.from((await crypto.unwrapKey('RSA-OAEP-256', wrapped.result)).result), DEK);
}

/** Runs `fn` with environment variables set, restoring them afterwards. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const apply = (v: Record<string, string | undefined>) => {
    for (const [k, value] of Object.entries(v)) {
      if (value === undefined) delete process.env[k];
      else process.env[k] = value;
    }
  };
  apply(vars);
  try {
    return await fn();
  } finally {
    apply(saved);
  }
}

function tokenFile(lifetimeSec = 3600): string {
  const file = join(tv.dir, `sa-token-${randomBytes(4).toString('hex')}`);
  writeFileSync(file, tv.vault.entra!.issueServiceAccountToken({ subject: SA_SUBJECT, lifetimeSec }));
  return file;
}

test('WorkloadIdentityCredential: a federated service-account token file → a vault token', async () => {
  const entra = tv.vault.entra!;
  const credential = new WorkloadIdentityCredential({
    ...credentialOptions(),
    clientId: entra.principal('sealbox-wi')!.clientId,
    tokenFilePath: tokenFile(),
  });
  await useVault(credential);
  assert.ok((entra.counters()['tokens.issued'] ?? 0) >= 1);
});

test('WorkloadIdentityCredential: a token for another subject is refused by Entra (AADSTS70021)', async () => {
  const entra = tv.vault.entra!;
  const file = join(tv.dir, 'sa-other');
  writeFileSync(file, entra.issueServiceAccountToken({ subject: 'system:serviceaccount:other:app' }));
  const credential = new WorkloadIdentityCredential({
    ...credentialOptions(),
    clientId: entra.principal('sealbox-wi')!.clientId,
    tokenFilePath: file,
  });
  await assert.rejects(credential.getToken('https://localhost/.default'), /AADSTS70021/);
});

test('ClientSecretCredential: right secret works; a wrong one is AADSTS7000215', async () => {
  const entra = tv.vault.entra!;
  const clientId = entra.principal('sealbox-app')!.clientId;
  await useVault(new ClientSecretCredential(entra.tenantId, clientId, SECRET, credentialOptions()));
  await assert.rejects(
    new ClientSecretCredential(entra.tenantId, clientId, 'wrong-secret', credentialOptions()).getToken(
      'https://localhost/.default',
    ),
    /AADSTS7000215/,
  );
});

test('ManagedIdentityCredential (App Service endpoint: IDENTITY_ENDPOINT, IDENTITY_HEADER)', async () => {
  const entra = tv.vault.entra!;
  await withEnv(
    { IDENTITY_ENDPOINT: entra.identityEndpoint, IDENTITY_HEADER: entra.identityHeader },
    async () => {
      const credential = new ManagedIdentityCredential({
        clientId: entra.principal('sealbox-mi')!.clientId,
        retryOptions: { maxRetries: 0 },
      });
      await useVault(credential);
    },
  );
});

test('DefaultAzureCredential: workload identity from AZURE_* variables', async () => {
  const entra = tv.vault.entra!;
  await withEnv(
    {
      AZURE_TOKEN_CREDENTIALS: 'prod',
      AZURE_AUTHORITY_HOST: entra.authorityHost,
      AZURE_TENANT_ID: entra.tenantId,
      AZURE_CLIENT_ID: entra.principal('sealbox-wi')!.clientId,
      AZURE_FEDERATED_TOKEN_FILE: tokenFile(),
      AZURE_CLIENT_SECRET: undefined,
      IDENTITY_ENDPOINT: undefined,
      IDENTITY_HEADER: undefined,
    },
    async () => {
      const { tenantId: _t, authorityHost: _a, ...rest } = credentialOptions();
      await useVault(new DefaultAzureCredential(rest));
    },
  );
});

test('the vault verifies tokens: an expired token and a token for another resource are 401', async () => {
  const entra = tv.vault.entra!;
  const credential = appCredential();
  entra.setTokenLifetime(1);
  try {
    const short = await credential.getToken('https://localhost/.default');
    await new Promise((r) => setTimeout(r, 2100));
    await rejectsKv(
      tv.keys(short.token).getKey('kek'),
      401,
      'Unauthorized',
      undefined,
      /access token has expired/,
    );
  } finally {
    entra.setTokenLifetime(3600);
  }
  const other = await credential.getToken('https://management.azure.com/.default');
  await rejectsKv(
    tv.keys(other.token).getKey('kek'),
    401,
    'Unauthorized',
    undefined,
    /AKV10022: Invalid audience\. Expected https:\/\/localhost, found: https:\/\/management\.azure\.com\./,
  );
});

test('access policies bind to Entra principals: no policy → 403 AccessDenied naming appid and oid', async () => {
  const entra = tv.vault.entra!;
  const p = entra.principal('no-access')!;
  const credential = new ClientSecretCredential(entra.tenantId, p.clientId, SECRET, credentialOptions());
  const keys = new KeyClient(tv.vault.url, credential, devVaultClientOptions(tv.vault));
  await rejectsKv(
    keys.getKey('kek'),
    403,
    'Forbidden',
    'AccessDenied',
    new RegExp(
      `'appid=${p.clientId};oid=${p.objectId};iss=https://sts\\.windows\\.net/${entra.tenantId}/' does not have keys get permission`,
    ),
  );
});

test('run-time access: revoke for good, then grant after a propagation delay', async () => {
  const credential = appCredential();
  const crypto = new CryptographyClient(kid, credential, devVaultClientOptions(tv.vault));
  const wrapped = await crypto.wrapKey('RSA-OAEP-256', DEK);
  tv.vault.changeAccess({ setAccessPolicies: [{ principal: 'sealbox-app', permissions: [] }] });
  await rejectsKv(crypto.unwrapKey('RSA-OAEP-256', wrapped.result), 403, 'Forbidden', 'AccessDenied');
  tv.vault.changeAccess({
    setAccessPolicies: [{ principal: 'sealbox-app', permissions: ['get', 'wrapKey', 'unwrapKey'] }],
    afterMs: 400,
  });
  await rejectsKv(crypto.unwrapKey('RSA-OAEP-256', wrapped.result), 403, 'Forbidden', 'AccessDenied');
  assert.equal(tv.vault.access().pendingChanges, 1);
  await new Promise((r) => setTimeout(r, 450));
  assert.deepEqual(Buffer.from((await crypto.unwrapKey('RSA-OAEP-256', wrapped.result)).result), DEK);
});

test('forced answers: the next two unwraps are refused by the firewall, then handling resumes', async () => {
  const crypto = tv.crypto(kid, TOKENS.wrapper);
  const wrapped = await crypto.wrapKey('RSA-OAEP-256', DEK);
  tv.vault.forceAnswers({ operations: ['unwrapKey'], count: 2, answer: 'ForbiddenByFirewall' });
  for (let i = 0; i < 2; i++) {
    await rejectsKv(
      crypto.unwrapKey('RSA-OAEP-256', wrapped.result),
      403,
      'Forbidden',
      'ForbiddenByFirewall',
      /Client address is not authorized and caller is not a trusted service\.\r\nClient address: 127\.0\.0\.1\r\nCaller: appid=wrapper;/,
    );
  }
  assert.deepEqual(Buffer.from((await crypto.unwrapKey('RSA-OAEP-256', wrapped.result)).result), DEK);
  for (const answer of [
    'ForbiddenByConnection',
    'ForbiddenByRbac',
    'ForbiddenByPolicy',
    'AccessDenied',
  ] as const) {
    tv.vault.forceAnswers({ operations: ['wrapKey'], count: 1, answer });
    await rejectsKv(crypto.wrapKey('RSA-OAEP-256', DEK), 403, 'Forbidden', answer);
  }
  // A forced 401 carries the challenge; the SDK answers it once with a fresh token, so two uses per call.
  tv.vault.forceAnswers({ operations: ['wrapKey'], count: 2, answer: 'Unauthorized' });
  await rejectsKv(crypto.wrapKey('RSA-OAEP-256', DEK), 401, 'Unauthorized');
  assert.ok((await crypto.wrapKey('RSA-OAEP-256', DEK)).result.length > 0);
});

test('outages: the token endpoint refuses connections, then answers 503, then recovers', async () => {
  const entra = tv.vault.entra!;
  const clientId = entra.principal('sealbox-app')!.clientId;
  const credential = new ClientSecretCredential(entra.tenantId, clientId, SECRET, {
    ...credentialOptions(),
    retryOptions: { maxRetries: 0 },
  });
  // Discovery is cached by the credential from here on, so the outages below hit the token request.
  await credential.getToken('https://localhost/.default');
  const before = entra.counters();
  await entra.setOutage({ tokenEndpoint: 'refuse' });
  try {
    // A resource not asked for yet: MSAL has no cached token for it and must call the endpoint.
    await assert.rejects(credential.getToken('https://other-1.localhost/.default'), /network_error/);
    await entra.setOutage({ tokenEndpoint: 503 });
    await assert.rejects(credential.getToken('https://other-2.localhost/.default'), /AADSTS90033/);
    // A credential that never ran discovery fails there instead.
    await assert.rejects(
      new ClientSecretCredential(entra.tenantId, clientId, SECRET, credentialOptions()).getToken(
        'https://localhost/.default',
      ),
      /endpoints_resolution_error/,
    );
  } finally {
    await entra.setOutage({ tokenEndpoint: 'up' });
  }
  assert.ok((entra.counters()['outage.token.503'] ?? 0) > (before['outage.token.503'] ?? 0));
  await useVault(credential);
  assert.ok((await credential.getToken('https://other-3.localhost/.default')).token.length > 0);
});

test('outages: the managed identity endpoint refuses connections, answers 503, then recovers', async () => {
  const entra = tv.vault.entra!;
  await withEnv(
    { IDENTITY_ENDPOINT: entra.identityEndpoint, IDENTITY_HEADER: entra.identityHeader },
    async () => {
      const fresh = () =>
        new ManagedIdentityCredential({
          clientId: entra.principal('sealbox-mi')!.clientId,
          retryOptions: { maxRetries: 0 },
        });
      // MSAL caches managed identity tokens process-wide: ask for resources not asked for before.
      await entra.setOutage({ managedIdentity: 'refuse' });
      try {
        await assert.rejects(
          fresh().getToken('https://mi-1.localhost/.default'),
          /ManagedIdentityCredential/,
        );
        await entra.setOutage({ managedIdentity: 503 });
        await assert.rejects(
          fresh().getToken('https://mi-2.localhost/.default'),
          /ManagedIdentityCredential/,
        );
      } finally {
        await entra.setOutage({ managedIdentity: 'up' });
      }
      assert.ok((await fresh().getToken('https://mi-3.localhost/.default')).token.length > 0);
      await useVault(fresh());
    },
  );
});

test('admin surface: POST /_sealbox/entra sets the token lifetime and outages', async () => {
  const post = (body: unknown) =>
    new Promise<number>((resolve, reject) => {
      const req = httpsRequest(
        {
          host: '127.0.0.1',
          port: tv.vault.port,
          method: 'POST',
          path: '/_sealbox/entra',
          ca: tv.vault.caPem,
          agent: false,
          headers: { authorization: `Bearer ${tv.vault.adminToken}`, 'content-type': 'application/json' },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', reject);
      req.end(JSON.stringify(body));
    });
  const entra = tv.vault.entra!;
  const credential = new ClientSecretCredential(
    entra.tenantId,
    entra.principal('sealbox-app')!.clientId,
    SECRET,
    { ...credentialOptions(), retryOptions: { maxRetries: 0 } },
  );
  await credential.getToken('https://localhost/.default');
  assert.equal(await post({ tokenEndpoint: 503, tokenLifetimeSec: 600 }), 204);
  await assert.rejects(credential.getToken('https://admin-1.localhost/.default'), /AADSTS90033/);
  assert.equal(await post({ tokenEndpoint: 'up' }), 204);
  const asked = Date.now();
  const token = await credential.getToken('https://admin-2.localhost/.default');
  const answered = Date.now();
  const expires = token?.expiresOnTimestamp ?? 0;
  // expires_in is whole seconds, counted from the server's clock second: up to 1 s either way. The
  // token was issued between `asked` and `answered`, so measuring from both ends keeps the check free
  // of how long the request took (issue 14: no timed bounds), however loaded the machine.
  assert.ok(
    expires - asked > 590_000 && expires - answered <= 601_000,
    `token expires ${expires - asked} ms after it was asked for, ${expires - answered} ms after it came`,
  );
  assert.equal(await post({ tokenLifetimeSec: 3600 }), 204);
  assert.equal(await post({ tokenEndpoint: 'down' }), 400);
});

test('static identity tokens keep working beside Entra principals', async () => {
  const key = await new KeyClient(
    tv.vault.url,
    staticTokenCredential(TOKENS.admin),
    devVaultClientOptions(tv.vault),
  ).getKey('kek');
  assert.equal(key.id, kid);
});

test('every response validates against the swagger and carries no private key material', () => {
  const swagger = keyVaultSwagger(join(VECTORS_DIR, 'keyvault'));
  assert.deepEqual(
    tv.records.flatMap((r) => swagger.validate(r.method, r.path, r.status, r.body, r.operationId)),
    [],
  );
  assertNoPrivateMaterial(tv.records);
});

/** The test app's client-secret credential against the embedded Entra ID. */
function appCredential(): ClientSecretCredential {
  const entra = tv.vault.entra!;
  return new ClientSecretCredential(
    entra.tenantId,
    entra.principal('sealbox-app')!.clientId,
    SECRET,
    credentialOptions(),
  );
}
