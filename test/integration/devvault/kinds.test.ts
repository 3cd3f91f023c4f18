/**
 * The two dev vault kinds and both permission models of a vault, through the real SDK over HTTPS:
 * `vault` Standard and Premium (key types Azure allows and refuses there), a `vault` with Azure RBAC
 * (roles at vault and key scope, ForbiddenByRbac, run-time assignment changes), and `managedhsm` (the
 * Managed HSM URL form and challenge, HSM key types only, A128KW/A192KW/A256KW and RSA-OAEP-256, local
 * RBAC roles at "/keys" and "/keys/<name>", its AccessDenied refusal), including an Entra principal
 * whose token carries the Managed HSM audience. Every response is validated against the swagger.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ClientSecretCredential } from '@azure/identity';
import { CryptographyClient, KeyClient } from '@azure/keyvault-keys';
import {
  type DevVaultExchange,
  devVaultClientOptions,
  startDevVault,
  staticTokenCredential,
} from '../../../src/devvault';
import { VECTORS_DIR } from '../../helpers/paths';
import {
  assertNoPrivateMaterial,
  expectKv,
  rejectsKv,
  startTestVault,
  type TestVault,
  TOKENS,
} from './harness';
import { keyVaultSwagger } from './swagger';

const DEK = randomBytes(32);
const records: DevVaultExchange[] = [];
const open: TestVault[] = [];

async function vaultOf(options: Parameters<typeof startTestVault>[0]): Promise<TestVault> {
  const tv = await startTestVault({ ...options, onResponse: (r) => records.push(r) });
  open.push(tv);
  return tv;
}

after(async () => {
  await Promise.all(open.map((tv) => tv.close()));
});

test('vault, Standard: RSA only; RSA-HSM is 403, symmetric keys are 400 KeyTypeNotSupported', async () => {
  const tv = await vaultOf({ kind: 'vault', sku: 'standard' });
  const keys = tv.keys();
  assert.equal((await keys.createRsaKey('soft')).keyType, 'RSA');
  await expectKv(
    keys.createRsaKey('hard', { hsm: true }),
    403,
    'Forbidden',
    undefined,
    /^Hardware key operation not allowed on standard vault$/,
  );
  await expectKv(
    keys.createOctKey('aes'),
    400,
    'BadParameter',
    'KeyTypeNotSupported',
    /^Invalid kty value: oct$/,
  );
  await expectKv(
    keys.createOctKey('aes', { hsm: true }),
    400,
    'BadParameter',
    'KeyTypeNotSupported',
    /^Invalid kty value: oct-HSM$/,
  );
});

test('vault, Premium: RSA and RSA-HSM; symmetric keys still refused (they live on Managed HSM)', async () => {
  const tv = await vaultOf({ kind: 'vault', sku: 'premium' });
  const keys = tv.keys();
  assert.equal((await keys.createRsaKey('hard', { hsm: true })).keyType, 'RSA-HSM');
  await expectKv(keys.createOctKey('aes', { hsm: true }), 400, 'BadParameter', 'KeyTypeNotSupported');
  await expectKv(
    keys.importKey('aes', { kty: 'oct-HSM', k: randomBytes(32) }),
    400,
    'BadParameter',
    'KeyTypeNotSupported',
  );
});

test('vault with Azure RBAC: roles at vault and key scope; ForbiddenByRbac names the data action', async (t) => {
  const tv = await vaultOf({
    kind: 'vault',
    permissionModel: 'rbac',
    roleAssignments: [
      { principal: 'ops', role: 'Key Vault Crypto Officer', scope: '/' },
      { principal: 'wrapper', role: 'Key Vault Crypto Service Encryption User', scope: '/keys/kek' },
    ],
  });
  const kek = await tv.keys().createRsaKey('kek');
  const other = await tv.keys().createRsaKey('other');
  const wrapper = (id: string) => tv.crypto(id, TOKENS.wrapper);

  await t.test(
    'the assigned key: get, wrap and unwrap work (access-policy permissions are ignored)',
    async () => {
      assert.equal((await tv.keys(TOKENS.wrapper).getKey('kek')).id, kek.id);
      const wrapped = await wrapper(kek.id ?? '').wrapKey('RSA-OAEP-256', DEK);
      assert.deepEqual(
        Buffer.from((await wrapper(kek.id ?? '').unwrapKey('RSA-OAEP-256', wrapped.result)).result),
        DEK,
      );
    },
  );
  await t.test('another key: 403 ForbiddenByRbac with Azure’s message', async () => {
    const err = await rejectsKv(
      tv.keys(TOKENS.wrapper).getKey('other'),
      403,
      'Forbidden',
      'ForbiddenByRbac',
      /^Caller is not authorized to perform action on resource\.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time\.\r\nCaller: appid=wrapper;oid=[0-9a-f-]{36};iss=https:\/\/sts\.windows\.net\/[0-9a-f-]{36}\/\r\nAction: 'Microsoft\.KeyVault\/vaults\/keys\/read'\r\nResource: '\/subscriptions\/[0-9a-f-]+\/resourcegroups\/sealbox-dev\/providers\/microsoft\.keyvault\/vaults\/sealbox-dev\/keys\/other'\r\nAssignment: \(not found\)\r\n/,
    );
    assert.match(err.message, /Vault: sealbox-dev;location=local\r\n$/);
    assert.ok(other.id);
  });
  await t.test('the service encryption role cannot create keys (keys/create/action)', () =>
    expectKv(
      tv.keys(TOKENS.wrapper).createRsaKey('nope'),
      403,
      'Forbidden',
      'ForbiddenByRbac',
      /Action: 'Microsoft\.KeyVault\/vaults\/keys\/create\/action'/,
    ),
  );
  await t.test('the reader identity has no role at all', () =>
    expectKv(tv.keys(TOKENS.reader).getKey('kek'), 403, 'Forbidden', 'ForbiddenByRbac'),
  );
  await t.test('removing the assignment revokes at once; a new one applies after its delay', async () => {
    const assignment = {
      principal: 'wrapper',
      role: 'Key Vault Crypto Service Encryption User',
      scope: '/keys/kek',
    } as const;
    const wrapped = await wrapper(kek.id ?? '').wrapKey('RSA-OAEP-256', DEK);
    tv.vault.changeAccess({ removeRoleAssignments: [assignment] });
    await rejectsKv(
      wrapper(kek.id ?? '').unwrapKey('RSA-OAEP-256', wrapped.result),
      403,
      'Forbidden',
      'ForbiddenByRbac',
    );
    tv.vault.changeAccess({ assignRoles: [assignment], afterMs: 300 });
    await rejectsKv(
      wrapper(kek.id ?? '').unwrapKey('RSA-OAEP-256', wrapped.result),
      403,
      'Forbidden',
      'ForbiddenByRbac',
    );
    await new Promise((r) => setTimeout(r, 350));
    assert.deepEqual(
      Buffer.from((await wrapper(kek.id ?? '').unwrapKey('RSA-OAEP-256', wrapped.result)).result),
      DEK,
    );
  });
});

test('managedhsm: URL form, HSM key types, AES key wrap and RSA-OAEP-256, local RBAC', async (t) => {
  const tv = await vaultOf({
    kind: 'managedhsm',
    entra: { principals: [{ name: 'hsm-app', clientSecret: 'hsm-secret-0123456789' }] },
    roleAssignments: [
      { principal: 'ops', role: 'Managed HSM Crypto User', scope: '/keys' },
      { principal: 'ops', role: 'Managed HSM Crypto Officer', scope: '/' },
      { principal: 'wrapper', role: 'Managed HSM Crypto Service Encryption User', scope: '/keys/aes-256' },
      { principal: 'hsm-app', role: 'Managed HSM Crypto Service Encryption User', scope: '/keys/aes-256' },
    ],
  });
  assert.match(tv.vault.subdomainUrl, /^https:\/\/sealbox\.managedhsm\.localhost:\d+$/);
  const strict = () => devVaultClientOptions(tv.vault, { verifyChallengeResource: true });
  const keys = new KeyClient(tv.vault.subdomainUrl, staticTokenCredential(TOKENS.admin), strict());

  await t.test('software key types are refused; RSA-HSM and oct-HSM 128/192/256 are created', async () => {
    await expectKv(
      keys.createRsaKey('soft'),
      400,
      'BadParameter',
      'KeyTypeNotSupported',
      /Invalid kty value: RSA/,
    );
    await expectKv(keys.createOctKey('soft-aes'), 400, 'BadParameter', 'KeyTypeNotSupported');
    assert.equal((await keys.createRsaKey('rsa', { hsm: true })).keyType, 'RSA-HSM');
    for (const size of [128, 192, 256]) {
      const key = await keys.createOctKey(`aes-${size}`, { hsm: true, keySize: size });
      assert.equal(key.keyType, 'oct-HSM');
      assert.match(
        key.id ?? '',
        /^https:\/\/sealbox\.managedhsm\.localhost:\d+\/keys\/aes-\d+\/[0-9a-f]{32}$/,
      );
    }
  });
  await t.test('A128KW, A192KW, A256KW and RSA-OAEP-256 round-trip', async () => {
    for (const [name, alg] of [
      ['aes-128', 'A128KW'],
      ['aes-192', 'A192KW'],
      ['aes-256', 'A256KW'],
      ['rsa', 'RSA-OAEP-256'],
    ] as const) {
      const key = await keys.getKey(name);
      const crypto = new CryptographyClient(key.id ?? '', staticTokenCredential(TOKENS.admin), strict());
      const wrapped = await crypto.wrapKey(alg, DEK);
      assert.deepEqual(Buffer.from((await crypto.unwrapKey(alg, wrapped.result)).result), DEK);
    }
  });
  await t.test(
    'a role scoped to one key: other keys are 403 AccessDenied naming the action and scope',
    async () => {
      const aes256 = await keys.getKey('aes-256');
      const mine = new CryptographyClient(aes256.id ?? '', staticTokenCredential(TOKENS.wrapper), strict());
      const wrapped = await mine.wrapKey('A256KW', DEK);
      assert.deepEqual(Buffer.from((await mine.unwrapKey('A256KW', wrapped.result)).result), DEK);
      const aes128 = await keys.getKey('aes-128');
      const theirs = new CryptographyClient(aes128.id ?? '', staticTokenCredential(TOKENS.wrapper), strict());
      await rejectsKv(
        theirs.unwrapKey('A128KW', randomBytes(40)),
        403,
        'AccessDenied',
        undefined,
        /^Not authorized to access Microsoft\.KeyVault\/managedHsm\/keys\/unwrap\/action on '\/keys\/aes-128' \(Activity ID: [0-9a-f-]{36}\)$/,
      );
    },
  );
  await t.test(
    'an Entra principal gets a token for https://managedhsm.localhost and uses its key',
    async () => {
      const entra = tv.vault.entra!;
      const credential = new ClientSecretCredential(
        entra.tenantId,
        entra.principal('hsm-app')!.clientId,
        'hsm-secret-0123456789',
        {
          authorityHost: entra.authorityHost,
          disableInstanceDiscovery: true,
          additionalPolicies: strict().additionalPolicies ?? [],
        },
      );
      const aes256 = await keys.getKey('aes-256');
      // The SDK asks for <challenge resource>/.default: the vault accepting the token proves the challenge
      // named https://managedhsm.localhost.
      const crypto = new CryptographyClient(aes256.id ?? '', credential, strict());
      const wrapped = await crypto.wrapKey('A256KW', DEK);
      assert.deepEqual(Buffer.from((await crypto.unwrapKey('A256KW', wrapped.result)).result), DEK);
      // A token for the vault audience is refused by the Managed HSM.
      const vaultToken = await credential.getToken('https://localhost/.default');
      await rejectsKv(
        new KeyClient(tv.vault.subdomainUrl, staticTokenCredential(vaultToken?.token ?? ''), strict()).getKey(
          'aes-256',
        ),
        401,
        'Unauthorized',
        undefined,
        /AKV10022: Invalid audience\. Expected https:\/\/managedhsm\.localhost/,
      );
    },
  );
  await t.test('an access policy cannot be configured on a managedhsm', async () => {
    await assert.rejects(
      startTestVault({ kind: 'managedhsm', permissionModel: 'accessPolicy' }),
      /a managedhsm has local RBAC only/,
    );
  });
});

test('the default dev identity may do everything in every permission model', async () => {
  for (const options of [{ kind: 'vault', permissionModel: 'rbac' }, { kind: 'managedhsm' }] as const) {
    const dir = mkdtempSync(join(tmpdir(), 'sealbox-devvault-'));
    const vault = await startDevVault({ dataDir: dir, ...options, onResponse: (r) => records.push(r) });
    try {
      const keys = new KeyClient(
        vault.url,
        staticTokenCredential(vault.devToken ?? ''),
        devVaultClientOptions(vault),
      );
      const key = await keys.createRsaKey('k', { hsm: true });
      const crypto = new CryptographyClient(
        key.id ?? '',
        staticTokenCredential(vault.devToken ?? ''),
        devVaultClientOptions(vault),
      );
      const wrapped = await crypto.wrapKey('RSA-OAEP-256', DEK);
      assert.deepEqual(Buffer.from((await crypto.unwrapKey('RSA-OAEP-256', wrapped.result)).result), DEK);
      await (await keys.beginDeleteKey('k', { intervalInMs: 20 })).pollUntilDone();
      await keys.purgeDeletedKey('k');
    } finally {
      await vault.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('every response validates against the swagger and carries no private key material', () => {
  const swagger = keyVaultSwagger(join(VECTORS_DIR, 'keyvault'));
  assert.deepEqual(
    records.flatMap((r) => swagger.validate(r.method, r.path, r.status, r.body, r.operationId)),
    [],
  );
  assertNoPrivateMaterial(records);
});
