/**
 * sealbox through the real @azure/identity credential classes (issue 13 phase 2): gRPC over the Unix
 * socket → sealbox, configured with `credential.kind: workload-identity` (a federated service-account
 * token file) or `managed-identity` (the App Service endpoint) and pointed at the dev vault's embedded
 * Entra ID by config alone (authorityHost, authorityCaFile; instance discovery off for a non-cloud
 * authority) → the real Azure SDK → the dev vault, in both kinds: `vault` (Azure RBAC) and `managedhsm`.
 *
 * For each kind × credential: a token is acquired and data round-trips; with a 2 s token lifetime calls
 * keep succeeding across several expiries (new tokens are fetched, no call fails); an identity-endpoint
 * outage is an outage (cached DEKs serve, GetKeyStatus rows stay `enabled`, cold calls are UNAVAILABLE /
 * VAULT_UNAVAILABLE), and service resumes when the endpoint is back. Then tokens for the wrong tenant or
 * audience are refused without revocation, and Managed HSM wraps with A256KW (oct-HSM 256) and
 * RSA-OAEP-256 (RSA-HSM).
 *
 * One process, one managed identity endpoint: MSAL fixes the managed identity source process-wide on
 * first use (docs/devvault.md), so both vaults trust the one embedded Entra ID (the managedhsm vault
 * verifies its tokens through `tokenVerifier`), and each managed-identity case uses its own user-assigned
 * identity, so MSAL's process-wide token cache never hands one case another's token.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeyClient } from '@azure/keyvault-keys';
import { checkAll, KEY_VAULT_ROLE, MANAGED_HSM_ROLE } from '../../src/cli/check';
import { ExitCode } from '../../src/cli/exit';
import { decrypt, encrypt, errorCode } from '../../src/client/client';
import { type ConfigInput, validateConfig } from '../../src/config/config';
import { parseHeader } from '../../src/crypto/format';
import {
  type DevVault,
  type DevVaultOptions,
  devVaultClientOptions,
  type RoleName,
  startDevVault,
  staticTokenCredential,
} from '../../src/devvault';
import { buildProviders } from '../../src/main';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';

const ADMIN = 'azure-credentials-admin';
const KINDS = ['vault', 'managedhsm'] as const;
type Kind = (typeof KINDS)[number];
const CREDENTIALS = ['workload-identity', 'managed-identity'] as const;
type CredentialKind = (typeof CREDENTIALS)[number];

const subject = (name: string) => `system:serviceaccount:sealbox:${name}`;
/** One principal per case, so MSAL's process-wide managed identity cache never crosses cases. */
const principalName = (kind: Kind, credential: CredentialKind, use: string) =>
  `${credential === 'workload-identity' ? 'wi' : 'mi'}-${kind}-${use}`;
const CASES = ['basic', 'expiry', 'outage'];

let dir: string;
/** The `vault` kind (Azure RBAC), with the embedded Entra ID both vaults trust. */
let kv: DevVault;
let hsm: DevVault;
const savedEnv = { ...process.env };

const vaultOf = (kind: Kind) => (kind === 'vault' ? kv : hsm);
const entra = () => kv.entra!;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sealbox-azure-credentials-'));
  const principals = KINDS.flatMap((kind) =>
    CASES.flatMap((use) => [
      {
        name: principalName(kind, 'workload-identity', use),
        federatedCredentials: [{ subject: subject(principalName(kind, 'workload-identity', use)) }],
      },
      { name: principalName(kind, 'managed-identity', use), managedIdentity: 'user' as const },
    ]),
  );
  principals.push({ name: 'wi-check', federatedCredentials: [{ subject: subject('wi-check') }] });
  const grants = (kind: Kind) =>
    principals
      .filter((p) => p.name.includes(`-${kind}-`))
      .map((p) => ({
        principal: p.name,
        role: (kind === 'vault'
          ? 'Key Vault Crypto Service Encryption User'
          : 'Managed HSM Crypto Service Encryption User') as RoleName,
        scope: '/',
      }));
  const common: Partial<DevVaultOptions> = {
    identities: {
      [ADMIN]: { name: 'ops', permissions: ['get', 'list', 'create', 'wrapKey', 'unwrapKey'] },
    },
    shortPageRate: 0,
  };
  kv = await startDevVault({
    ...common,
    dataDir: join(dir, 'kv'),
    kind: 'vault',
    permissionModel: 'rbac',
    entra: { principals },
    roleAssignments: [{ principal: 'ops', role: 'Key Vault Crypto Officer', scope: '/' }, ...grants('vault')],
  });
  hsm = await startDevVault({
    ...common,
    dataDir: join(dir, 'hsm'),
    kind: 'managedhsm',
    tokenVerifier: (token) => entra().verify(token, 'https://managedhsm.localhost'),
    roleAssignments: [
      { principal: 'ops', role: 'Managed HSM Crypto User', scope: '/' },
      ...grants('managedhsm'),
    ],
  });
  await adminKeys(kv).createRsaKey('kek', { keySize: 2048 });
  await adminKeys(hsm).createRsaKey('kek', { keySize: 2048, hsm: true });
  await adminKeys(hsm).createOctKey('aes', { keySize: 256, hsm: true });
  // The App Service managed identity endpoint, and nothing that would pick another identity source.
  for (const v of [
    'MSI_ENDPOINT',
    'IMDS_ENDPOINT',
    'AZURE_POD_IDENTITY_AUTHORITY_HOST',
    'AZURE_CLIENT_SECRET',
  ])
    delete process.env[v];
  process.env['IDENTITY_ENDPOINT'] = entra().identityEndpoint;
  process.env['IDENTITY_HEADER'] = entra().identityHeader;
});

after(async () => {
  process.env = savedEnv;
  await kv?.close();
  await hsm?.close();
  rmSync(dir, { recursive: true, force: true });
});

function adminKeys(vault: DevVault): KeyClient {
  return new KeyClient(vault.url, staticTokenCredential(ADMIN), devVaultClientOptions(vault));
}

/** A projected service-account token for `name`'s federated credential, written where AKS would put it. */
function tokenFile(name: string, o: { audience?: string } = {}): string {
  const file = join(dir, `sa-${name}-${Math.random().toString(36).slice(2)}`);
  writeFileSync(file, entra().issueServiceAccountToken({ subject: subject(name), ...o }), { mode: 0o600 });
  return file;
}

/** The sealbox credential config for a principal, pointed at the embedded Entra ID by settings alone. */
function credentialConfig(credential: CredentialKind, name: string): Record<string, unknown> {
  const clientId = entra().principal(name)!.clientId;
  if (credential === 'managed-identity') return { kind: 'managed-identity', clientId };
  return {
    kind: 'workload-identity',
    clientId,
    tenantId: entra().tenantId,
    tokenFile: tokenFile(name),
    authorityHost: entra().authorityHost,
    authorityCaFile: kv.caFile,
  };
}

function keyConfig(kind: Kind, keyName: string, credential: Record<string, unknown>) {
  const vault = vaultOf(kind);
  return {
    provider: 'azure' as const,
    vaultUrl: vault.url,
    keyName,
    caFile: vault.caFile,
    credential,
    retry: { maxAttempts: 2, baseDelayMs: 50, maxDelayMs: 200, timeoutMs: 4000 },
  };
}

async function sealboxFor(
  kind: Kind,
  credential: CredentialKind,
  use: string,
  extra: ConfigInput = {},
): Promise<TestSealbox> {
  return startTestSealbox({
    revocation: { pollIntervalMs: 1000, maxChecksPerSecond: 50, refusalConfirmMs: 1000 },
    keys: { pay: keyConfig(kind, 'kek', credentialConfig(credential, principalName(kind, credential, use))) },
    ...extra,
  } as ConfigInput);
}

const issued = () => entra().counters()['tokens.issued'] ?? 0;
const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => 'OK',
    (e: unknown) => errorCode(e) ?? String((e as Error).message),
  );

for (const kind of KINDS) {
  for (const credential of CREDENTIALS) {
    test(`${kind}, ${credential}: sealbox gets a token from Entra ID and round-trips through the socket`, async () => {
      const before = issued();
      const box = await sealboxFor(kind, credential, 'basic');
      try {
        const { ciphertext } = await encrypt(box.client, 'pay', Buffer.from(`hello ${kind}`));
        assert.match(parseHeader(ciphertext)!.keyId, /^https:\/\/localhost:\d+\/keys\/kek\/[0-9a-f]{32}$/);
        box.sealbox.flushCache(); // the unwrap goes to the vault too
        assert.equal((await decrypt(box.client, ciphertext)).plaintext.toString(), `hello ${kind}`);
        assert.ok(issued() > before, 'Entra ID issued the token sealbox used');
      } finally {
        await box.close();
      }
    });

    test(`${kind}, ${credential}: a 2 s token is refreshed at expiry, no call fails across 4 expiries`, async () => {
      entra().setTokenLifetime(2);
      const box = await sealboxFor(kind, credential, 'expiry', { cache: { enabled: false } });
      try {
        const before = issued();
        const until = Date.now() + 8000;
        let calls = 0;
        while (Date.now() < until) {
          // Cache off: every call wraps or unwraps in the vault, which refuses an expired token (401).
          const { ciphertext } = await encrypt(box.client, 'pay', Buffer.from(`call ${calls}`));
          assert.equal((await decrypt(box.client, ciphertext)).plaintext.toString(), `call ${calls}`);
          calls++;
          await sleep(150);
        }
        assert.ok(calls >= 20, `${calls} calls`);
        assert.ok(issued() - before >= 3, `tokens issued across the expiries: ${issued() - before}`);
      } finally {
        entra().setTokenLifetime(3600);
        await box.close();
      }
    });

    test(`${kind}, ${credential}: an identity-endpoint outage is an outage, never revocation`, async () => {
      entra().setTokenLifetime(2);
      const box = await sealboxFor(kind, credential, 'outage');
      const endpoint = credential === 'workload-identity' ? 'tokenEndpoint' : 'managedIdentity';
      const state = kind === 'vault' ? 'refuse' : 503;
      try {
        const { ciphertext } = await encrypt(box.client, 'pay', Buffer.from('cached'));
        await decrypt(box.client, ciphertext); // cached for encrypt and decrypt
        await entra().setOutage({ [endpoint]: state });
        await sleep(3500); // the token expires; three polls fail to get a new one
        assert.equal(await codeOf(decrypt(box.client, ciphertext)), 'OK', 'cached DEKs keep serving');
        assert.equal(await codeOf(encrypt(box.client, 'pay', Buffer.from('more'))), 'OK');
        const rows = box.sealbox.watcher!.snapshot();
        assert.ok(rows.length > 0);
        for (const row of rows) {
          assert.equal(row.state, 'enabled', `${row.keyId} stays enabled`);
          assert.equal(row.refusalPending, undefined, `${row.keyId}: not even a suspicion`);
        }
        box.sealbox.flushCache();
        const err = await decrypt(box.client, ciphertext).then(
          () => assert.fail('a cold decrypt needs a token'),
          (e: unknown) => e as { code: number; details: string },
        );
        assert.equal(errorCode(err), 'VAULT_UNAVAILABLE', err.details);
        assert.equal(err.code, 14, 'UNAVAILABLE');
        assert.equal(box.sealbox.stats().cache.evictions['revoked'] ?? 0, 0, 'nothing was zeroed as revoked');
        await entra().setOutage({ [endpoint]: 'up' });
        if (state === 503 && credential === 'workload-identity') {
          // MSAL throttles a token request that got a 5xx without Retry-After for 60 s
          // (@azure/msal-common ThrottlingUtils, DEFAULT_THROTTLE_TIME_SECONDS): service resumes after that.
          const upAt = Date.now();
          let back = false;
          while (!back && Date.now() - upAt < 75_000) {
            back = (await codeOf(decrypt(box.client, ciphertext))) === 'OK';
            if (!back) await sleep(1000);
          }
          assert.ok(back, 'serves again once MSAL lets the token request through');
        }
        assert.equal((await decrypt(box.client, ciphertext)).plaintext.toString(), 'cached');
      } finally {
        await entra().setOutage({ tokenEndpoint: 'up', managedIdentity: 'up' });
        entra().setTokenLifetime(3600);
        await box.close();
      }
    });
  }
}

test('a token for the wrong tenant or audience is refused: PERMISSION_DENIED, and nothing revoked', async () => {
  const name = principalName('vault', 'workload-identity', 'basic');
  const good = credentialConfig('workload-identity', name);
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    // The vault's challenge names its tenant; a credential configured for another may not sign in there.
    [
      'another tenant',
      { ...good, tenantId: '0b0b0b0b-0000-4000-8000-000000000001' },
      /tenant 5ea1b0c0-de00-4000-8000-000000000001.*credential\.tenantId/,
    ],
    // A projected token for another audience: Entra ID refuses the federated assertion.
    [
      'another audience',
      { ...good, tokenFile: tokenFile(name, { audience: 'api://not-azure-ad' }) },
      /Entra ID refused a token/,
    ],
  ];
  for (const [what, credential, details] of cases) {
    const box = await startTestSealbox({
      revocation: { pollIntervalMs: 1000, maxChecksPerSecond: 50, refusalConfirmMs: 500 },
      keys: { pay: keyConfig('vault', 'kek', credential) },
    } as ConfigInput);
    try {
      const err = await encrypt(box.client, 'pay', Buffer.from('x')).then(
        () => assert.fail(`${what}: no token, no wrap`),
        (e: unknown) => e as { code: number; details: string },
      );
      assert.equal(errorCode(err), 'PERMISSION_DENIED', `${what}: ${err.details}`);
      assert.match(err.details, details, what);
      await sleep(1500); // polls and any confirmation window
      for (const row of box.sealbox.watcher!.snapshot()) assert.notEqual(row.state, 'forbidden', what);
    } finally {
      await box.close();
    }
  }
});

test('Managed HSM end to end: A256KW under oct-HSM 256 and RSA-OAEP-256 under RSA-HSM, workload identity', async () => {
  const name = principalName('managedhsm', 'workload-identity', 'basic');
  const credential = credentialConfig('workload-identity', name);
  const box = await startTestSealbox({
    keys: {
      aes: keyConfig('managedhsm', 'aes', credential),
      rsa: keyConfig('managedhsm', 'kek', credential),
    },
  } as ConfigInput);
  try {
    const data = Buffer.alloc(200_000, 7);
    for (const [alias, algorithm] of [
      ['aes', 'A256KW'],
      ['rsa', 'RSA-OAEP-256'],
    ] as const) {
      const { ciphertext } = await encrypt(box.client, alias, data);
      const header = parseHeader(ciphertext)!;
      assert.equal(header.wrapAlgorithm, algorithm, alias);
      box.sealbox.flushCache();
      assert.deepEqual((await decrypt(box.client, ciphertext)).plaintext, data, alias);
    }
    assert.ok((hsm.counters()['unwrapKey/aes'] ?? 0) >= 1, 'the oct-HSM key unwrapped in the HSM');
  } finally {
    await box.close();
  }
});

test('sealbox check names the missing role, its scope and the principal on an RBAC vault and a Managed HSM', async () => {
  const credential = credentialConfig('workload-identity', 'wi-check');
  const config = validateConfig({
    keys: { rbac: keyConfig('vault', 'kek', credential), hsm: keyConfig('managedhsm', 'kek', credential) },
  });
  const run = () =>
    checkAll(config, (alias, whole) => {
      const registry = buildProviders({ ...whole, keys: { [alias]: whole.keys[alias]! } });
      return { provider: registry.forAlias(alias), close: () => registry.close() };
    });
  const p = entra().principal('wi-check')!;
  const [rbac, hsmCheck] = await run();
  assert.equal(rbac?.ok, false);
  assert.equal(rbac?.exitCode, ExitCode.PERMISSION_DENIED, rbac?.message);
  assert.match(
    rbac!.message,
    new RegExp(
      `^get denied \\(403 Forbidden ForbiddenByRbac, data action Microsoft\\.KeyVault/vaults/keys/read\\): assign "${KEY_VAULT_ROLE}" ` +
        `on /subscriptions/[^ ]+/providers/Microsoft\\.KeyVault/vaults/[^ ]+/keys/kek to principal appid=${p.clientId};oid=${p.objectId} ` +
        `\\(az role assignment create --role "${KEY_VAULT_ROLE}" --assignee-object-id ${p.objectId} `,
      'i',
    ),
  );
  assert.equal(hsmCheck?.ok, false);
  assert.match(
    hsmCheck!.message,
    new RegExp(
      "^get denied \\(403 AccessDenied, Managed HSM local RBAC, data action Microsoft\\.KeyVault/managedHsm/keys/read/action on '/keys/kek'\\): " +
        `assign "${MANAGED_HSM_ROLE}" \\(or "Managed HSM Crypto User"\\) on /keys/kek to principal workload identity ${p.clientId} ` +
        `\\(az keyvault role assignment create --hsm-name localhost --role "${MANAGED_HSM_ROLE}" --scope /keys/kek --assignee ${p.clientId}\\)$`,
    ),
  );
  // Doing what the check said is enough: the named role at the named key scope makes both pass.
  kv.changeAccess({ assignRoles: [{ principal: 'wi-check', role: KEY_VAULT_ROLE, scope: '/keys/kek' }] });
  hsm.changeAccess({ assignRoles: [{ principal: 'wi-check', role: MANAGED_HSM_ROLE, scope: '/keys/kek' }] });
  const after = await run();
  for (const c of after) assert.equal(c.ok, true, `${c.alias}: ${c.message}`);
});
