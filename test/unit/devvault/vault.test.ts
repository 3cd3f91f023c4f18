/**
 * Key Vault semantics of the dev vault without HTTP (src/devvault/vault.ts), on a real store and a fake
 * clock: lifecycle states including in-progress deletes and recoveries, the scheduled purge, recovery
 * levels, paging, ISO 8601 durations, rotation expiry, attribute updates and validity windows.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { KvError } from '../../../src/devvault/errors';
import { KeyStore } from '../../../src/devvault/store';
import { parseIsoDuration, Vault, type VaultSettings } from '../../../src/devvault/vault';

const BASE = 'https://localhost:1234';
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A vault on a fresh store with a clock the test moves. */
async function vaultWith(settings: Partial<VaultSettings> = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-dv-vault-'));
  dirs.push(dir);
  let now = Date.UTC(2030, 0, 1);
  const vault = new Vault(await KeyStore.open(dir), {
    retentionDays: 90,
    purgeProtection: false,
    lroDelayMs: 0,
    now: () => now,
    ...settings,
  });
  return {
    vault,
    advance(ms: number) {
      now += ms;
    },
    nowSeconds: () => Math.floor(now / 1000),
  };
}

/** Asserts a promise rejects with a KvError of `status`, `code` and optional inner code. */
async function rejectsKv(p: Promise<unknown>, status: number, code: string, inner?: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof KvError, String(err));
    assert.equal(err.status, status, err.message);
    assert.equal(err.code, code);
    assert.equal(err.innerCode, inner);
    return true;
  });
}

/** Response bodies, read loosely: the swagger suites check their shape; these tests check values. */
// biome-ignore lint/suspicious/noExplicitAny: test-only access to nested response fields
type Json = Record<string, any>;
const octBody = { kty: 'oct-HSM', key_size: 128 };

test('parseIsoDuration', () => {
  const cases: ReadonlyArray<[string, number | undefined]> = [
    ['P90D', 90 * 86_400],
    ['P1Y', 365 * 86_400],
    ['P3M', 90 * 86_400],
    ['P2W', 14 * 86_400],
    ['PT48H', 48 * 3_600],
    ['P1Y10DT1H1M1S', (375 * 24 + 1) * 3_600 + 61],
    ['P', undefined],
    ['PT', undefined],
    ['P1DT', undefined],
    ['90D', undefined],
    ['P-1D', undefined],
  ];
  for (const [text, seconds] of cases) assert.equal(parseIsoDuration(text), seconds, text);
});

test('recovery level and retention follow the vault settings', async () => {
  const cases: ReadonlyArray<[number, boolean, string]> = [
    [90, false, 'Recoverable+Purgeable'],
    [90, true, 'Recoverable'],
    [7, false, 'CustomizedRecoverable+Purgeable'],
    [30, true, 'CustomizedRecoverable'],
  ];
  for (const [retentionDays, purgeProtection, level] of cases) {
    const { vault } = await vaultWith({ retentionDays, purgeProtection });
    const bundle = (await vault.createKey(BASE, 'k', octBody)) as Json;
    assert.equal(bundle['attributes'].recoveryLevel, level);
    assert.equal(bundle['attributes'].recoverableDays, retentionDays);
  }
});

test('in-progress delete and recover hide the key until they complete', async () => {
  const { vault, advance } = await vaultWith({ lroDelayMs: 1_000 });
  await vault.createKey(BASE, 'k', octBody);
  const deleted = (await vault.deleteKey(BASE, 'k')) as Json;
  assert.equal(deleted['recoveryId'], `${BASE}/deletedkeys/k`);
  await rejectsKv(vault.getDeletedKey(BASE, 'k'), 404, 'KeyNotFound');
  await rejectsKv(vault.getKey(BASE, 'k', ''), 404, 'KeyNotFound');
  await rejectsKv(vault.createKey(BASE, 'k', octBody), 409, 'Conflict', 'ObjectIsBeingDeleted');
  await rejectsKv(vault.recoverDeletedKey(BASE, 'k'), 409, 'Conflict', 'ObjectIsBeingDeleted');
  advance(1_000);
  assert.equal(
    ((await vault.getDeletedKey(BASE, 'k')) as Json)['key'].kid.startsWith(`${BASE}/keys/k/`),
    true,
  );
  await rejectsKv(vault.createKey(BASE, 'k', octBody), 409, 'Conflict', 'ObjectIsDeletedButRecoverable');
  await vault.recoverDeletedKey(BASE, 'k');
  await rejectsKv(vault.getKey(BASE, 'k', ''), 404, 'KeyNotFound');
  await rejectsKv(vault.createKey(BASE, 'k', octBody), 409, 'Conflict', 'ObjectIsBeingRecovered');
  advance(1_000);
  assert.ok(await vault.getKey(BASE, 'k', ''));
});

test('the service purges a deleted key once its scheduled purge date passes', async () => {
  const { vault, advance, nowSeconds } = await vaultWith({ retentionDays: 7 });
  await vault.createKey(BASE, 'k', octBody);
  const deleted = (await vault.deleteKey(BASE, 'k')) as Json;
  assert.equal(deleted['scheduledPurgeDate'], nowSeconds() + 7 * 86_400);
  advance(7 * 86_400_000 - 1_000);
  assert.equal(((await vault.getDeletedKeys(BASE, { apiVersion: '7.6' })) as Json)['value'].length, 1);
  advance(1_000);
  assert.equal(((await vault.getDeletedKeys(BASE, { apiVersion: '7.6' })) as Json)['value'].length, 0);
  assert.ok(await vault.createKey(BASE, 'k', octBody), 'the name is free again');
});

test('purge protection refuses purge; purge needs a deleted key', async () => {
  const guarded = await vaultWith({ purgeProtection: true });
  await guarded.vault.createKey(BASE, 'k', octBody);
  await guarded.vault.deleteKey(BASE, 'k');
  await rejectsKv(guarded.vault.purgeDeletedKey('k'), 403, 'Forbidden');
  const open = await vaultWith();
  await open.vault.createKey(BASE, 'k', octBody);
  await rejectsKv(open.vault.purgeDeletedKey('k'), 404, 'KeyNotFound');
  await open.vault.deleteKey(BASE, 'k');
  await open.vault.purgeDeletedKey('k');
  await rejectsKv(open.vault.getDeletedKey(BASE, 'k'), 404, 'KeyNotFound');
});

test('paging: maxresults, $skiptoken cursor and nextLink shape', async () => {
  const { vault } = await vaultWith();
  for (const name of ['c', 'a', 'b', 'e', 'd']) await vault.createKey(BASE, name, octBody);
  const names: string[] = [];
  let skiptoken: string | null = null;
  for (let pages = 0; pages < 10; pages++) {
    const page = (await vault.getKeys(BASE, { maxresults: '2', skiptoken, apiVersion: '7.5' })) as Json;
    names.push(...page['value'].map((i: Json) => i['kid'].split('/').at(-1)));
    if (page['nextLink'] === undefined) break;
    const next = new URL(page['nextLink']);
    assert.equal(`${next.origin}${next.pathname}`, `${BASE}/keys`);
    assert.equal(next.searchParams.get('api-version'), '7.5');
    assert.equal(next.searchParams.get('maxresults'), '2');
    skiptoken = next.searchParams.get('$skiptoken');
  }
  assert.deepEqual(names, ['a', 'b', 'c', 'd', 'e']);
  for (const maxresults of ['0', '26', 'x', '1.5']) {
    await rejectsKv(vault.getKeys(BASE, { maxresults, apiVersion: '7.5' }), 400, 'BadParameter');
  }
  await rejectsKv(vault.getKeys(BASE, { skiptoken: 'bm9wZQ', apiVersion: '7.5' }), 400, 'BadParameter');
});

test('update: null clears nbf/exp, absent leaves them; exportable keys are refused', async () => {
  const { vault, nowSeconds } = await vaultWith();
  const created = (await vault.createKey(BASE, 'k', {
    ...octBody,
    attributes: { nbf: 100, exp: nowSeconds() + 60 },
  })) as Json;
  const version = created['key'].kid.split('/').at(-1);
  let updated = (await vault.updateKey(BASE, 'k', version, { tags: { a: 'b' } })) as Json;
  assert.equal(updated['attributes'].nbf, 100);
  updated = (await vault.updateKey(BASE, 'k', version, { attributes: { nbf: null } })) as Json;
  assert.equal(updated['attributes'].nbf, undefined);
  assert.equal(updated['attributes'].exp, nowSeconds() + 60);
  assert.deepEqual(updated['tags'], { a: 'b' });
  await rejectsKv(
    vault.createKey(BASE, 'x', { ...octBody, attributes: { exportable: true } }),
    400,
    'BadParameter',
  );
  await rejectsKv(
    vault.updateKey(BASE, 'k', version, { attributes: { enabled: 'yes' } }),
    400,
    'BadParameter',
  );
});

test('validity windows apply to encrypt and wrapKey only; disabled blocks everything', async () => {
  const { vault, advance, nowSeconds } = await vaultWith();
  const body = {
    kty: 'oct-HSM',
    key_size: 256,
    attributes: { nbf: nowSeconds() + 10, exp: nowSeconds() + 20 },
  };
  const version = ((await vault.createKey(BASE, 'k', body)) as Json)['key'].kid.split('/').at(-1);
  const value = Buffer.alloc(32, 1).toString('base64url');
  await rejectsKv(
    vault.crypto(BASE, 'wrapKey', 'k', version, { alg: 'A256KW', value }),
    403,
    'Forbidden',
    'KeyNotYetValid',
  );
  advance(10_000);
  const wrapped = (await vault.crypto(BASE, 'wrapKey', 'k', '', { alg: 'A256KW', value })) as Json;
  assert.equal(wrapped['kid'], `${BASE}/keys/k/${version}`);
  advance(10_000);
  await rejectsKv(
    vault.crypto(BASE, 'wrapKey', 'k', version, { alg: 'A256KW', value }),
    403,
    'Forbidden',
    'KeyExpired',
  );
  const unwrapped = (await vault.crypto(BASE, 'unwrapKey', 'k', version, {
    alg: 'A256KW',
    value: wrapped['value'],
  })) as Json;
  assert.equal(unwrapped['value'], value);
  await vault.updateKey(BASE, 'k', version, { attributes: { enabled: false } });
  await rejectsKv(
    vault.crypto(BASE, 'unwrapKey', 'k', version, { alg: 'A256KW', value: wrapped['value'] }),
    403,
    'Forbidden',
    'KeyDisabled',
  );
  await rejectsKv(
    vault.crypto(BASE, 'wrapKey', 'k', version, { alg: 'A256KW', value: 'a+b' }),
    403,
    'Forbidden',
    'KeyDisabled',
  );
});

test('crypto request bodies are validated before the algorithm runs', async () => {
  const { vault } = await vaultWith();
  await vault.createKey(BASE, 'k', { kty: 'oct-HSM', key_size: 256 });
  const cases: ReadonlyArray<[unknown, RegExp]> = [
    [undefined, /alg/],
    [{ alg: 'A256KW' }, /value/],
    [{ alg: 'A256KW', value: 'not base64url!' }, /value must be base64url/],
    [{ alg: 'A256GCM', value: 'AAAA', iv: '***' }, /iv must be base64url/],
  ];
  for (const [body, message] of cases) {
    await assert.rejects(vault.crypto(BASE, 'encrypt', 'k', '', body), (err: unknown) => {
      assert.ok(
        err instanceof KvError && err.code === 'BadParameter' && message.test(err.message),
        String(err),
      );
      return true;
    });
  }
});

test('rotate takes exp from the policy expiryTime and keeps the key type and size', async () => {
  const { vault, nowSeconds } = await vaultWith();
  await vault.createKey(BASE, 'k', { kty: 'oct-HSM', key_size: 192, key_ops: ['wrapKey'] });
  await vault.updateKeyRotationPolicy(BASE, 'k', { attributes: { expiryTime: 'P1Y' }, lifetimeActions: [] });
  const rotated = (await vault.rotateKey(BASE, 'k')) as Json;
  assert.equal(rotated['attributes'].exp, nowSeconds() + 365 * 86_400);
  assert.deepEqual(rotated['key'].key_ops, ['wrapKey']);
  const value = Buffer.alloc(24, 2).toString('base64url');
  const wrapped = (await vault.crypto(BASE, 'wrapKey', 'k', '', { alg: 'A192KW', value })) as Json;
  assert.equal(wrapped['kid'], rotated['key'].kid);
  const versions = (await vault.getKeyVersions(BASE, 'k', { apiVersion: '7.6' })) as Json;
  assert.equal(versions['value'].length, 2);
  await rejectsKv(vault.rotateKey(BASE, 'missing'), 404, 'KeyNotFound');
});

test('rotation policy validation', async () => {
  const { vault } = await vaultWith();
  await vault.createKey(BASE, 'k', octBody);
  const bad: ReadonlyArray<unknown> = [
    { lifetimeActions: [{ trigger: { timeAfterCreate: 'P1D' }, action: { type: 'Explode' } }] },
    { lifetimeActions: [{ trigger: {}, action: { type: 'Rotate' } }] },
    {
      lifetimeActions: [
        { trigger: { timeAfterCreate: 'P1D', timeBeforeExpiry: 'P1D' }, action: { type: 'Rotate' } },
      ],
    },
    { lifetimeActions: [1, 2, 3] },
    { attributes: { expiryTime: 'P27D' } },
    { attributes: { expiryTime: 'soon' } },
  ];
  for (const body of bad)
    await rejectsKv(vault.updateKeyRotationPolicy(BASE, 'k', body), 400, 'BadParameter');
  const ok = (await vault.updateKeyRotationPolicy(BASE, 'k', {
    lifetimeActions: [{ trigger: { timeBeforeExpiry: 'P7D' }, action: { type: 'notify' } }],
  })) as Json;
  assert.deepEqual(ok['lifetimeActions'], [
    { trigger: { timeBeforeExpiry: 'P7D' }, action: { type: 'Notify' } },
  ]);
});

test('chargeFor classifies requests for throttling', async () => {
  const { vault } = await vaultWith();
  await vault.createKey(BASE, 'hsm', { kty: 'RSA-HSM', key_size: 2048 });
  const cases: ReadonlyArray<[Parameters<Vault['chargeFor']>, unknown]> = [
    [['wrapKey', 'hsm', '', undefined], { kind: 'key', cls: 'rsaHsm2048', op: 'wrapKey' }],
    [['getKey', 'missing', '', undefined], { kind: 'vault' }],
    [['getKeys', undefined, '', undefined], { kind: 'vault' }],
    [['createKey', 'new', '', { kty: 'RSA' }], { kind: 'create', hsm: false }],
    [['createKey', 'new', '', { kty: 'oct-HSM' }], { kind: 'create', hsm: true }],
    [['importKey', 'new', '', { key: { kty: 'RSA' }, Hsm: true }], { kind: 'create', hsm: true }],
    [['rotateKey', 'hsm', '', undefined], { kind: 'create', hsm: true }],
  ];
  for (const [args, charge] of cases) assert.deepEqual(vault.chargeFor(...args), charge, args.join(' '));
});
