/**
 * `sealbox check` logic (src/cli/check.ts) against a working fake KEK (the local provider really
 * wraps) that can be told to fail one step with what the Azure provider throws for a given vault
 * answer (mapVaultError over SDK-shaped errors), so each failure class is pinned to its exit code and
 * message without a vault.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import {
  type CheckStep,
  checkAll,
  checkExitCode,
  checkKey,
  describeCredential,
  describeKey,
  formatReport,
  type KeyCheck,
  type KeyDescription,
} from '../../../src/cli/check';
import { ExitCode } from '../../../src/cli/exit';
import { validateConfig } from '../../../src/config/config';
import { ErrorCode, SealboxError } from '../../../src/errors';
import { mapVaultError } from '../../../src/kek/azure';
import { LocalKekProvider } from '../../../src/kek/local';
import type { KekProvider, KeyStatus } from '../../../src/kek/provider';

const NOW = Date.parse('2026-06-01T00:00:00Z');
const DAY = 86_400_000;
const VAULT = 'https://unit.vault.azure.net';
const KEY_ID = `${VAULT}/keys/kek/0123456789abcdef0123456789abcdef`;
const AZURE: KeyDescription = {
  id: `${VAULT}/keys/kek`,
  vaultUrl: VAULT,
  keyName: 'kek',
  identity: 'managed identity 1111',
};

/** An SDK RestError-like object as @azure/keyvault-keys throws it (status, codes, Key Vault's message). */
function vaultError(status: number, code: string, inner?: string, message = `vault said ${status}`): object {
  return {
    name: 'RestError',
    message,
    statusCode: status,
    code,
    details: { error: { code, message, ...(inner ? { innerError: { code: inner } } : {}) } },
  };
}

/** What the Azure provider throws for `cause` during `step`. */
function azureFailure(step: CheckStep, cause: unknown): SealboxError {
  return mapVaultError(cause, {
    operation: step === 'get' ? 'getKey' : step,
    keyId: KEY_ID,
    vault: 'unit.vault.azure.net',
  });
}

interface FakeOptions {
  /** The status refreshCurrentVersion reports (Azure-like); omitted: a local-like provider. */
  readonly current?: Partial<KeyStatus>;
  readonly failAt?: CheckStep;
  readonly error?: unknown;
  /** unwrap returns other bytes. */
  readonly corruptUnwrap?: boolean;
}

/** A working provider (the local one, really wrapping) with injected failures; records DEK buffers. */
function fakeProvider(options: FakeOptions = {}): KekProvider & { seen: Buffer[] } {
  const real = new LocalKekProvider({
    name: 'unit',
    versions: [{ version: '0'.repeat(32), key: randomBytes(32).toString('base64'), enabled: true }],
  });
  const seen: Buffer[] = [];
  const maybeFail = (step: CheckStep) => {
    if (options.failAt === step) throw options.error;
  };
  const provider: KekProvider & { seen: Buffer[] } = {
    kind: 'fake',
    seen,
    async wrap(dek) {
      seen.push(dek as Buffer);
      maybeFail('wrapKey');
      return real.wrap(dek);
    },
    async unwrap(keyId, algorithm, wrapped) {
      maybeFail('unwrapKey');
      const dek = await real.unwrap(keyId, algorithm, wrapped);
      if (options.corruptUnwrap) dek[0]! ^= 1;
      seen.push(dek);
      return dek;
    },
    async status(keyId) {
      maybeFail('get');
      return real.status(keyId);
    },
    owns: (keyId) => real.owns(keyId),
    keyRef: real.keyRef,
    refreshCurrentVersion: () => real.refreshCurrentVersion(),
    close: () => real.close(),
  };
  if (options.current) {
    provider.refreshCurrentVersion = async () => {
      maybeFail('get');
      return { keyId: KEY_ID, enabled: true, latestKeyId: KEY_ID, ...options.current };
    };
  }
  return provider;
}

const cases: Array<{ name: string; fake: FakeOptions; exit: ExitCode; message: RegExp }> = [
  {
    name: 'azure-like, all good',
    fake: { current: {} },
    exit: ExitCode.OK,
    message: /^get, wrapKey, unwrapKey ok \(A256KW\); enabled, no expiry$/,
  },
  {
    name: 'expires in 90 days: ok, with the date',
    fake: { current: { expiresOn: new Date(NOW + 90 * DAY) } },
    exit: ExitCode.OK,
    message: /enabled, expires 2026-08-30T00:00:00\.000Z$/,
  },
  {
    name: 'expires in 10 days: ok, with a reminder',
    fake: { current: { expiresOn: new Date(NOW + 10 * DAY) } },
    exit: ExitCode.OK,
    message: /in 10 day\(s\): rotate or extend it soon$/,
  },
  {
    name: 'disabled current version',
    fake: { current: { enabled: false } },
    exit: ExitCode.KEY_DISABLED,
    message: /^key version \S+\/keys\/kek\/[0-9a-f]{32} is disabled; enable the key version/,
  },
  {
    name: 'expired',
    fake: { current: { expiresOn: new Date(NOW - DAY) } },
    exit: ExitCode.KEY_NOT_IN_DATE,
    message:
      /expired at 2026-05-31T00:00:00\.000Z; rotate \(create a new version\) or extend its expiry \(exp\)$/,
  },
  {
    name: 'not yet valid',
    fake: { current: { notBefore: new Date(NOW + DAY) } },
    exit: ExitCode.KEY_NOT_IN_DATE,
    message: /is not valid before 2026-06-02T00:00:00\.000Z; wait until then, or move its activation date/,
  },
  {
    name: 'access policy without unwrapKey: names the caller from the vault answer',
    fake: {
      current: {},
      failAt: 'unwrapKey',
      error: azureFailure(
        'unwrapKey',
        vaultError(
          403,
          'Forbidden',
          'ForbiddenByPolicy',
          "The user, group or application 'appid=app-123;oid=0000-1111;iss=https://sts.windows.net/t/' does not have keys unwrapKey permission on key vault 'v'.",
        ),
      ),
    },
    exit: ExitCode.PERMISSION_DENIED,
    message:
      /^unwrapKey denied \(403 Forbidden ForbiddenByPolicy\): grant unwrapKey to identity appid=app-123;oid=0000-1111 on key kek in vault https:\/\/unit\.vault\.azure\.net \(role/,
  },
  {
    name: 'RBAC without get and no caller in the message: names the configured identity',
    fake: {
      current: {},
      failAt: 'get',
      error: azureFailure('get', vaultError(403, 'Forbidden', 'ForbiddenByRbac')),
    },
    exit: ExitCode.PERMISSION_DENIED,
    message:
      /^get denied \(403 Forbidden ForbiddenByRbac\): assign "Key Vault Crypto Service Encryption User" on <vault unit\.vault\.azure\.net resource id>\/keys\/kek to principal managed identity 1111 \(az role assignment create/,
  },
  {
    name: 'RBAC with the recorded message: the resource and caller Key Vault named',
    fake: {
      current: {},
      failAt: 'wrapKey',
      error: azureFailure(
        'wrapKey',
        vaultError(
          403,
          'Forbidden',
          'ForbiddenByRbac',
          'Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role ' +
            'definitions were changed recently, please observe propagation time.\r\nCaller: appid=a1;oid=0b1;iss=x\r\n' +
            "Action: 'Microsoft.KeyVault/vaults/keys/wrap/action'\r\nResource: '/subscriptions/s/resourcegroups/rg/" +
            "providers/microsoft.keyvault/vaults/unit/keys/kek'\r\nAssignment: (not found)\r\n",
        ),
      ),
    },
    exit: ExitCode.PERMISSION_DENIED,
    message:
      /^wrapKey denied \(403 Forbidden ForbiddenByRbac, data action Microsoft\.KeyVault\/vaults\/keys\/wrap\/action\): assign "Key Vault Crypto Service Encryption User" on \/subscriptions\/s\/resourcegroups\/rg\/providers\/microsoft\.keyvault\/vaults\/unit\/keys\/kek to principal appid=a1;oid=0b1 \(az role assignment create --role "Key Vault Crypto Service Encryption User" --assignee-object-id 0b1 --assignee-principal-type ServicePrincipal --scope \/subscriptions\/s\/resourcegroups\/rg\/providers\/microsoft\.keyvault\/vaults\/unit\/keys\/kek\)/,
  },
  {
    name: 'Managed HSM local RBAC: the role on /keys/NAME',
    fake: {
      current: {},
      failAt: 'get',
      error: azureFailure(
        'get',
        vaultError(
          403,
          'AccessDenied',
          undefined,
          "Not authorized to access Microsoft.KeyVault/managedHsm/keys/read/action on '/keys/kek' (Activity ID: 1)",
        ),
      ),
    },
    exit: ExitCode.PERMISSION_DENIED,
    message:
      /^get denied \(403 AccessDenied, Managed HSM local RBAC, data action Microsoft\.KeyVault\/managedHsm\/keys\/read\/action on '\/keys\/kek'\): assign "Managed HSM Crypto Service Encryption User" \(or "Managed HSM Crypto User"\) on \/keys\/kek to principal managed identity 1111 \(az keyvault role assignment create --hsm-name unit --role "Managed HSM Crypto Service Encryption User" --scope \/keys\/kek --assignee <principal>\)$/,
  },
  {
    name: "wrapKey not in the key's permitted operations",
    fake: {
      current: {},
      failAt: 'wrapKey',
      error: azureFailure('wrapKey', vaultError(403, 'Forbidden', 'KeyOperationForbidden')),
    },
    exit: ExitCode.PERMISSION_DENIED,
    message:
      /^wrapKey refused: key \S+ does not permit wrapKey; add wrapKey to the key's permitted operations/,
  },
  {
    name: 'the vault says the key is disabled (wrapKey)',
    fake: {
      current: {},
      failAt: 'wrapKey',
      error: azureFailure('wrapKey', vaultError(403, 'Forbidden', 'KeyDisabled')),
    },
    exit: ExitCode.KEY_DISABLED,
    message: /^wrapKey refused: key version \S+ is disabled; enable the key version/,
  },
  {
    name: 'the vault says the key is expired (wrapKey)',
    fake: {
      current: {},
      failAt: 'wrapKey',
      error: azureFailure('wrapKey', vaultError(403, 'Forbidden', 'KeyExpired')),
    },
    exit: ExitCode.KEY_NOT_IN_DATE,
    message: /^wrapKey refused: key \S+ is expired or not yet valid; rotate/,
  },
  {
    name: 'key not found',
    fake: { current: {}, failAt: 'get', error: azureFailure('get', vaultError(404, 'KeyNotFound')) },
    exit: ExitCode.KEY_NOT_FOUND,
    message:
      /^get: key kek not found in vault https:\/\/unit\.vault\.azure\.net \(404 KeyNotFound\); check keyName and vaultUrl, or recover/,
  },
  {
    name: 'vault unreachable',
    fake: {
      current: {},
      failAt: 'get',
      error: azureFailure(
        'get',
        Object.assign(new Error('connect ECONNREFUSED'), { name: 'RestError', code: 'ECONNREFUSED' }),
      ),
    },
    exit: ExitCode.VAULT_UNAVAILABLE,
    message:
      /^get: vault https:\/\/unit\.vault\.azure\.net unreachable: cannot reach Key Vault .*ECONNREFUSED/,
  },
  {
    name: 'throttled counts as unavailable',
    fake: { current: {}, failAt: 'wrapKey', error: azureFailure('wrapKey', vaultError(429, 'Throttled')) },
    exit: ExitCode.VAULT_UNAVAILABLE,
    message: /^wrapKey: vault .* unreachable: Key Vault throttled/,
  },
  {
    name: 'unwrap returns other bytes',
    fake: { current: {}, corruptUnwrap: true },
    exit: ExitCode.FAILURE,
    message: /^unwrapKey returned a different data key than wrapKey was given/,
  },
  {
    name: 'an unexpected error',
    fake: { current: {}, failAt: 'wrapKey', error: new TypeError('boom') },
    exit: ExitCode.FAILURE,
    message: /^wrapKey failed unexpectedly: boom$/,
  },
  {
    name: 'another SealboxError',
    fake: { current: {}, failAt: 'wrapKey', error: new SealboxError(ErrorCode.INTERNAL, 'odd key type') },
    exit: ExitCode.FAILURE,
    message: /^wrapKey failed \(INTERNAL\): odd key type$/,
  },
];

for (const c of cases) {
  test(`checkKey: ${c.name} → exit ${c.exit}`, async () => {
    const provider = fakeProvider(c.fake);
    const result = await checkKey('pay', provider, AZURE, () => NOW);
    assert.equal(result.exitCode, c.exit, result.message);
    assert.equal(result.ok, c.exit === ExitCode.OK);
    assert.equal(result.alias, 'pay');
    assert.match(result.message, c.message);
    /* Postcondition: every DEK buffer the check handled is zeroed. */
    for (const dek of provider.seen)
      assert.ok(
        dek.every((b) => b === 0),
        'DEK zeroed',
      );
  });
}

test('checkKey: a local-like provider (no refreshCurrentVersion) is checked by wrap, status, unwrap', async () => {
  const provider = fakeProvider();
  const result = await checkKey('local', provider, { id: 'local key file /k.json' }, () => NOW);
  assert.equal(result.exitCode, ExitCode.OK, result.message);
  assert.match(result.keyId, /^local:unit\/0{32}$/);
  assert.equal(provider.seen.length, 2, 'the DEK wrapped and the DEK unwrapped');
  assert.ok(provider.seen.every((dek) => dek.length === 32 && dek.every((b) => b === 0)));
});

test('checkKey: the key id is the versioned one once known, the unversioned one before', async () => {
  const early = await checkKey(
    'a',
    fakeProvider({ current: {}, failAt: 'get', error: azureFailure('get', vaultError(404, 'KeyNotFound')) }),
    AZURE,
  );
  assert.equal(early.keyId, `${VAULT}/keys/kek`);
  const late = await checkKey('a', fakeProvider({ current: { enabled: false } }), AZURE);
  assert.equal(late.keyId, KEY_ID);
});

test('checkAll: config order, a provider that cannot be built is a configuration error (exit 2)', async () => {
  const config = validateConfig({
    keys: {
      first: { provider: 'local', file: '/nonexistent/a.json' },
      second: { provider: 'local', file: '/nonexistent/b.json' },
    },
  });
  const checks = await checkAll(config, (alias) => {
    if (alias === 'first') return { provider: fakeProvider(), close: async () => {} };
    throw new Error('cannot read local key file /nonexistent/b.json: ENOENT');
  });
  assert.deepEqual(
    checks.map((c) => [c.alias, c.exitCode]),
    [
      ['first', ExitCode.OK],
      ['second', ExitCode.USAGE],
    ],
  );
  assert.match(
    checks[1]!.message,
    /^cannot set up the key from its configuration: cannot read local key file/,
  );
});

test('formatReport and checkExitCode: one line per key, the first failure in order decides', () => {
  const make = (alias: string, exitCode: ExitCode): KeyCheck => ({
    alias,
    ok: exitCode === ExitCode.OK,
    exitCode,
    keyId: `id-${alias}`,
    message: `msg-${alias}`,
  });
  const checks = [make('a', 0), make('b', ExitCode.KEY_DISABLED), make('c', ExitCode.PERMISSION_DENIED)];
  assert.equal(checkExitCode(checks), ExitCode.KEY_DISABLED);
  assert.equal(
    formatReport(checks),
    '✓ a (id-a): msg-a\n✗ b (id-b): msg-b\n✗ c (id-c): msg-c\n' +
      '2 of 3 key(s) failed; exit code 4 (key disabled) from the first failing key, "b"\n',
  );
  assert.equal(checkExitCode([make('a', 0)]), ExitCode.OK);
  assert.match(formatReport([make('a', 0)]), /all 1 key\(s\) passed\n$/);
});

test('describeKey and describeCredential', () => {
  const config = validateConfig({
    keys: {
      az: {
        provider: 'azure',
        vaultUrl: 'https://v.vault.azure.net/',
        keyName: 'k',
        credential: { kind: 'workload-identity', clientId: 'abc' },
      },
      lo: { provider: 'local', file: '/etc/k.json' },
    },
  });
  assert.deepEqual(describeKey(config.keys['az']!), {
    id: 'https://v.vault.azure.net/keys/k',
    vaultUrl: 'https://v.vault.azure.net',
    keyName: 'k',
    identity: 'workload identity abc',
  });
  assert.deepEqual(describeKey(config.keys['lo']!), { id: 'local key file /etc/k.json' });
  const table: Array<[Parameters<typeof describeCredential>[0], string]> = [
    [{ kind: 'managed-identity' }, 'the system-assigned managed identity'],
    [{ kind: 'managed-identity', clientId: 'm1' }, 'managed identity m1'],
    [{ kind: 'static-token', tokenFile: '/t' }, 'of the static token in /t'],
    [{ kind: 'default', clientId: 'd1' }, 'd1 (DefaultAzureCredential)'],
  ];
  for (const [credential, expected] of table) assert.equal(describeCredential(credential), expected);
});
