/**
 * The dev vault driven only through the real @azure/keyvault-keys KeyClient and CryptographyClient over
 * HTTPS (trusting the vault's CA, challenge authentication, real retries and pollers): every keys
 * operation, Key Vault's error codes, access policies, key_ops, nbf/exp and disabled-key enforcement, soft
 * delete with the SDK pollers, rotation and api-versions. The last test validates every response the
 * vault sent during the file against the swagger and checks none carried private key material.
 *
 * Crypto operations that must reach the vault use the "wrapper" identity: it lacks keys/get, so the
 * CryptographyClient cannot fetch the public key and sends every operation to the vault, which is how a
 * least-privilege KEK identity behaves in production too.
 */
import assert from 'node:assert/strict';
import {
  constants,
  type createPublicKey,
  generateKeyPairSync,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { JsonWebKey, KeyVaultKey } from '@azure/keyvault-keys';
import { KeyClient } from '@azure/keyvault-keys';
import { aesKeyWrap } from '../../../src/crypto/keywrap';
import { devVaultClientOptions, staticTokenCredential } from '../../../src/devvault';
import { VECTORS_DIR } from '../../helpers/paths';
import {
  assertNoPrivateMaterial,
  expectKv,
  noRetries,
  rejectsKv,
  startTestVault,
  type TestVault,
  TOKENS,
} from './harness';
import { keyVaultSwagger } from './swagger';

let tv: TestVault;
const LRO_DELAY_MS = 300;

before(async () => {
  tv = await startTestVault({ softDeleteRetentionDays: 7, lroDelayMs: LRO_DELAY_MS });
});

after(async () => {
  await tv?.close();
});

const DEK = randomBytes(32);
const KID = /^https:\/\/localhost:\d+\/keys\/([0-9A-Za-z-]+)\/([0-9a-f]{32})$/;

/** Key sizes in bits of an RSA key's modulus as the vault returned it. */
function modulusBits(key: KeyVaultKey): number {
  const n = key.key?.n;
  assert.ok(n, 'RSA key has n');
  let bytes = Buffer.from(n);
  while (bytes[0] === 0) bytes = bytes.subarray(1);
  return bytes.length * 8;
}

/** Asserts the KeyVaultKey carries no private member. */
function assertPublicOnly(key: KeyVaultKey): void {
  for (const m of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 't'] as const) {
    assert.equal(key.key?.[m], undefined, `${key.name} exposes ${m}`);
  }
}

/** A node RSA key pair as an SDK JsonWebKey (Uint8Array members) for BYOK import. */
function rsaJwk(bits: number): { jwk: JsonWebKey; publicKey: ReturnType<typeof createPublicKey> } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
  const exported = privateKey.export({ format: 'jwk' }) as Record<string, string>;
  const jwk: Record<string, unknown> = { kty: 'RSA' };
  for (const m of ['n', 'e', 'd', 'p', 'q', 'dp', 'dq', 'qi'])
    jwk[m] = Buffer.from(exported[m] ?? '', 'base64url');
  return { jwk: jwk as JsonWebKey, publicKey };
}

test('create: RSA 2048/3072/4096 (software and HSM) and oct-HSM 128/192/256', {
  concurrency: true,
}, async (t) => {
  const cases: ReadonlyArray<{ name: string; kty: 'RSA' | 'RSA-HSM' | 'oct-HSM'; size: number }> = [
    { name: 'rsa-2048', kty: 'RSA', size: 2048 },
    { name: 'rsa-3072', kty: 'RSA', size: 3072 },
    { name: 'rsa-4096', kty: 'RSA', size: 4096 },
    { name: 'rsahsm-2048', kty: 'RSA-HSM', size: 2048 },
    { name: 'oct-128', kty: 'oct-HSM', size: 128 },
    { name: 'oct-192', kty: 'oct-HSM', size: 192 },
    { name: 'oct-256', kty: 'oct-HSM', size: 256 },
  ];
  const client = tv.keys();
  await Promise.all(
    cases.map((c) =>
      t.test(`${c.kty} ${c.size}`, async () => {
        const key = await client.createKey(c.name, c.kty, { keySize: c.size, tags: { purpose: 'test' } });
        const [, name, version] = KID.exec(key.id ?? '') ?? [];
        assert.equal(name, c.name);
        assert.match(version ?? '', /^[0-9a-f]{32}$/);
        assert.equal(key.keyType, c.kty);
        assertPublicOnly(key);
        if (c.kty === 'oct-HSM') {
          assert.deepEqual(key.keyOperations, ['encrypt', 'decrypt', 'wrapKey', 'unwrapKey']);
        } else {
          assert.equal(modulusBits(key), c.size);
          assert.deepEqual(Buffer.from(key.key?.e ?? []), Buffer.from([1, 0, 1]));
          assert.deepEqual(key.keyOperations, [
            'encrypt',
            'decrypt',
            'sign',
            'verify',
            'wrapKey',
            'unwrapKey',
          ]);
        }
        assert.equal(key.properties.enabled, true);
        assert.ok(key.properties.createdOn instanceof Date);
        assert.equal(key.properties.recoverableDays, 7);
        assert.equal(key.properties.recoveryLevel, 'CustomizedRecoverable+Purgeable');
        assert.deepEqual(key.properties.tags, { purpose: 'test' });
      }),
    ),
  );
});

test('create: invalid requests are BadParameter; EC is not supported', async (t) => {
  const client = tv.keys();
  const cases: ReadonlyArray<{ name: string; run: () => Promise<unknown>; message: RegExp }> = [
    {
      name: 'RSA 1024',
      run: () => client.createRsaKey('bad-size', { keySize: 1024 }),
      message: /key_size 1024/,
    },
    {
      name: 'oct 512',
      run: () => client.createOctKey('bad-oct', { keySize: 512, hsm: true }),
      message: /key_size 512/,
    },
    { name: 'EC', run: () => client.createEcKey('bad-ec'), message: /EC keys are not supported/ },
    {
      name: 'bad name',
      run: () => client.createRsaKey('bad_name'),
      message: /key name 'bad_name' is invalid/,
    },
    {
      name: 'bad key_ops',
      run: () => client.createKey('bad-ops', 'oct-HSM', { keyOps: ['sign'] }),
      message: /Invalid key operation 'sign'/,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, () => expectKv(c.run(), 400, 'BadParameter', undefined, c.message));
  }
});

test('import (BYOK): RSA and oct JWKs; the vault unwraps what was wrapped outside it', async (t) => {
  const client = tv.keys();
  const wrapper = (id: string) => tv.crypto(id, TOKENS.wrapper);

  await t.test('RSA 2048 private JWK, Hsm flag → RSA-HSM', async () => {
    const { jwk, publicKey } = rsaJwk(2048);
    const key = await client.importKey('byok-rsa', jwk, { hardwareProtected: true });
    assert.equal(key.keyType, 'RSA-HSM');
    assertPublicOnly(key);
    assert.deepEqual(Buffer.from(key.key?.n ?? []), Buffer.from(jwk.n ?? []));
    const wrapped = publicEncrypt(
      { key: publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
      DEK,
    );
    const unwrapped = await wrapper(key.id ?? '').unwrapKey('RSA-OAEP-256', wrapped);
    assert.deepEqual(Buffer.from(unwrapped.result), DEK);
  });

  await t.test('oct 256 JWK with key_ops', async () => {
    const k = randomBytes(32);
    const key = await client.importKey('byok-oct', { kty: 'oct-HSM', k, keyOps: ['wrapKey', 'unwrapKey'] });
    assert.equal(key.keyType, 'oct-HSM');
    assert.deepEqual(key.keyOperations, ['wrapKey', 'unwrapKey']);
    assertPublicOnly(key);
    const unwrapped = await wrapper(key.id ?? '').unwrapKey('A256KW', aesKeyWrap(k, DEK));
    assert.deepEqual(Buffer.from(unwrapped.result), DEK);
  });

  await t.test('importing again adds a version', async () => {
    const { jwk } = rsaJwk(2048);
    const key = await client.importKey('byok-rsa', jwk);
    assert.equal(key.keyType, 'RSA');
    const versions = [];
    for await (const v of client.listPropertiesOfKeyVersions('byok-rsa')) versions.push(v.version);
    assert.equal(versions.length, 2);
  });

  const { jwk: full } = rsaJwk(2048);
  const bad: ReadonlyArray<{ name: string; jwk: JsonWebKey; message: RegExp }> = [
    {
      name: 'RSA without CRT members',
      jwk: { kty: 'RSA', n: full.n, e: full.e, d: full.d },
      message: /'p' is missing/,
    },
    { name: 'RSA 1024', jwk: rsaJwk(1024).jwk, message: /2048, 3072 or 4096 bits; this key has 1024/ },
    {
      name: 'inconsistent RSA',
      jwk: { ...full, d: rsaJwk(2048).jwk.d },
      message: /inconsistent|not a valid RSA/,
    },
    { name: 'oct of 20 bytes', jwk: { kty: 'oct', k: randomBytes(20) }, message: /16, 24 or 32 bytes/ },
    { name: 'EC', jwk: { kty: 'EC', crv: 'P-256' }, message: /cannot be imported/ },
  ];
  for (const c of bad) {
    await t.test(`rejects ${c.name}`, () =>
      expectKv(client.importKey('byok-bad', c.jwk), 400, 'BadParameter', undefined, c.message),
    );
  }
});

test('get: latest (trailing slash), a specific version, and KeyNotFound', async (t) => {
  const client = tv.keys();
  const first = await client.createKey('getter', 'oct-HSM', { keySize: 128 });
  const second = await client.createKey('getter', 'oct-HSM', { keySize: 128 });
  await t.test('latest is the newest version, fetched as /keys/{name}/', async () => {
    const latest = await client.getKey('getter');
    assert.equal(latest.id, second.id);
    const last = tv.records.filter((r) => r.operationId === 'GetKey' && r.status === 200).at(-1);
    assert.equal(last?.path, '/keys/getter/');
  });
  await t.test('names are case-insensitive', async () => {
    assert.equal((await client.getKey('GETTER')).id, second.id);
  });
  await t.test('a specific version', async () => {
    const got = await client.getKey('getter', { version: first.properties.version ?? '' });
    assert.equal(got.id, first.id);
  });
  await t.test('unknown key → 404 KeyNotFound with Key Vault wording', () =>
    expectKv(
      client.getKey('no-such-key'),
      404,
      'KeyNotFound',
      undefined,
      /A key with \(name\/id\) no-such-key was not found in this key vault/,
    ),
  );
  await t.test('unknown version → 404 KeyNotFound', () =>
    expectKv(client.getKey('getter', { version: '0'.repeat(32) }), 404, 'KeyNotFound'),
  );
});

test('list: keys and versions, following nextLink across pages', async (t) => {
  const client = tv.keys();
  const names = Array.from({ length: 27 }, (_, i) => `page-${String(i).padStart(2, '0')}`);
  for (const name of names) await client.createKey(name, 'oct-HSM', { keySize: 128 });
  for (let i = 0; i < 3; i++) await client.createKey('page-00', 'oct-HSM', { keySize: 128 });

  await t.test('iterating all keys crosses the default 25-item page', async () => {
    const seen = new Set<string>();
    for await (const p of client.listPropertiesOfKeys()) {
      assert.equal(p.version, undefined, 'list items carry no version');
      seen.add(p.name);
    }
    for (const n of names) assert.ok(seen.has(n), `${n} listed`);
    const listed = tv.records.filter((r) => r.operationId === 'GetKeys' && r.status === 200);
    assert.ok(listed.length >= 2, 'more than one page was fetched');
    assert.ok(listed.some((r) => (r.body as { nextLink?: string }).nextLink?.includes('$skiptoken=')));
  });
  await t.test('byPage with maxPageSize 4 gives pages of at most 4 that cover everything once', async () => {
    const all: string[] = [];
    for await (const page of client.listPropertiesOfKeys().byPage({ maxPageSize: 4 })) {
      assert.ok(page.length <= 4);
      all.push(...page.map((p) => p.name));
    }
    assert.equal(new Set(all).size, all.length, 'no key twice');
    for (const n of names) assert.ok(all.includes(n));
  });
  await t.test(
    'versions of one key: pages of at most 1 (some empty), every version once, no creation order promised',
    async () => {
      const versions: string[] = [];
      for await (const page of client.listPropertiesOfKeyVersions('page-00').byPage({ maxPageSize: 1 })) {
        assert.ok(page.length <= 1);
        versions.push(...page.map((p) => p.version ?? ''));
      }
      assert.equal(versions.length, 4);
      assert.equal(new Set(versions).size, 4);
      assert.deepEqual([...versions].sort(), versions, 'listed by version id, not by creation');
      assert.ok(versions.includes((await client.getKey('page-00')).properties.version ?? ''));
    },
  );
  await t.test('short and empty pages carry a nextLink and the SDK follows them', async () => {
    const shortVault = await startTestVault({ shortPageRate: 1 });
    try {
      const keys = shortVault.keys();
      // Which pages are short is random per vault and listing; three listings make an empty page all
      // but certain (a miss has probability below 1e-4).
      for (const name of ['short-a', 'short-b', 'short-c']) {
        const created = [];
        for (let i = 0; i < 3; i++) created.push((await keys.createRsaKey(name)).properties.version);
        const listed: string[] = [];
        for await (const page of keys.listPropertiesOfKeyVersions(name).byPage({ maxPageSize: 2 })) {
          assert.ok(page.length < 2, 'every page is short at rate 1');
          listed.push(...page.map((v) => v.version ?? ''));
        }
        assert.deepEqual([...listed].sort(), [...created].sort());
      }
      const pages = shortVault.records.filter((r) => r.operationId === 'GetKeyVersions' && r.status === 200);
      const bodies = pages.map((r) => r.body as { value: unknown[]; nextLink?: string });
      assert.ok(
        bodies.some((b) => b.value.length === 0 && b.nextLink !== undefined),
        'an empty page with a nextLink',
      );
      tv.records.push(...shortVault.records);
    } finally {
      await shortVault.close();
    }
  });
});

test('update: enabled, nbf, exp, key_ops and tags', async () => {
  const client = tv.keys();
  const key = await client.createKey('updatable', 'oct-HSM', { keySize: 256 });
  const version = key.properties.version ?? '';
  const nbf = new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000);
  const exp = new Date(Math.floor(Date.now() / 1000) * 1000 + 3_600_000);
  const updated = await client.updateKeyProperties('updatable', version, {
    enabled: false,
    notBefore: nbf,
    expiresOn: exp,
    keyOps: ['wrapKey', 'unwrapKey'],
    tags: { owner: 'sealbox' },
  });
  assert.equal(updated.properties.enabled, false);
  assert.deepEqual(updated.properties.notBefore, nbf);
  assert.deepEqual(updated.properties.expiresOn, exp);
  assert.deepEqual(updated.keyOperations, ['wrapKey', 'unwrapKey']);
  assert.deepEqual(updated.properties.tags, { owner: 'sealbox' });
  const fetched = await client.getKey('updatable');
  assert.equal(fetched.properties.enabled, false);
  assert.deepEqual(fetched.properties.tags, { owner: 'sealbox' });
  // Without a version the SDK updates the current version (PATCH /keys/{name}/).
  const again = await client.updateKeyProperties('updatable', { enabled: true });
  assert.equal(again.properties.enabled, true);
  assert.equal(again.id, key.id);
  await rejectsKv(
    client.updateKeyProperties('updatable', version, { keyOps: ['sign'] }),
    400,
    'BadParameter',
  );
});

test('crypto: every wrap algorithm round-trips through the vault, including the versionless path', async (t) => {
  const client = tv.keys();
  const cases: ReadonlyArray<{ key: string; alg: string }> = [
    { key: 'rsa-2048', alg: 'RSA-OAEP' },
    { key: 'rsa-2048', alg: 'RSA-OAEP-256' },
    { key: 'rsa-3072', alg: 'RSA-OAEP-256' },
    { key: 'rsa-4096', alg: 'RSA-OAEP-256' },
    { key: 'rsahsm-2048', alg: 'RSA-OAEP' },
    { key: 'oct-128', alg: 'A128KW' },
    { key: 'oct-192', alg: 'A192KW' },
    { key: 'oct-256', alg: 'A256KW' },
  ];
  for (const c of cases) {
    await t.test(`${c.alg} with ${c.key}`, async () => {
      const key = await client.getKey(c.key);
      const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper);
      const wrapped = await crypto.wrapKey(c.alg as 'RSA-OAEP', DEK);
      assert.equal(wrapped.keyID, key.id);
      const unwrapped = await crypto.unwrapKey(c.alg as 'RSA-OAEP', wrapped.result);
      assert.deepEqual(Buffer.from(unwrapped.result), DEK);
    });
  }

  await t.test('RSA1_5: wrap works; unwrap works only where Node allows PKCS#1 v1.5 decryption', async () => {
    const key = await client.getKey('rsa-2048');
    const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper);
    const wrapped = await crypto.wrapKey('RSA1_5', DEK);
    const revert = process.execArgv.some((a) => a.includes('CVE-2023-46809'));
    if (revert) {
      assert.deepEqual(Buffer.from((await crypto.unwrapKey('RSA1_5', wrapped.result)).result), DEK);
    } else {
      await rejectsKv(
        crypto.unwrapKey('RSA1_5', wrapped.result),
        400,
        'BadParameter',
        undefined,
        /CVE-2023-46809/,
      );
    }
  });

  await t.test('versionless CryptographyClient from KeyClient posts to /keys/{name}//wrapkey', async () => {
    const wrapperKeys = tv.keys(TOKENS.wrapper);
    const crypto = wrapperKeys.getCryptographyClient('oct-256');
    const wrapped = await crypto.wrapKey('A256KW', DEK);
    const latest = await client.getKey('oct-256');
    assert.equal(wrapped.keyID, 'https://localhost:' + tv.vault.port + '/keys/oct-256');
    const posted = tv.records.filter((r) => r.operationId === 'wrapKey').at(-1);
    assert.equal(posted?.path, '/keys/oct-256//wrapkey');
    assert.equal(
      (posted?.body as { kid?: string } | undefined)?.kid,
      latest.id,
      'the vault answers with the versioned kid',
    );
    const unwrapped = await tv.crypto(latest.id ?? '', TOKENS.wrapper).unwrapKey('A256KW', wrapped.result);
    assert.deepEqual(Buffer.from(unwrapped.result), DEK);
  });

  await t.test('algorithm not valid for the key → BadParameter', async () => {
    const key = await client.getKey('oct-128');
    const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper);
    await rejectsKv(crypto.wrapKey('A256KW', DEK), 400, 'BadParameter', undefined, /needs a 256-bit key/);
    await rejectsKv(crypto.wrapKey('RSA-OAEP', DEK), 400, 'BadParameter');
  });

  await t.test('a ciphertext that does not unwrap → BadParameter, and the vault keeps serving', async () => {
    const key = await client.getKey('rsa-2048');
    const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper);
    await rejectsKv(crypto.unwrapKey('RSA-OAEP-256', randomBytes(256)), 400, 'BadParameter');
    const wrapped = await crypto.wrapKey('RSA-OAEP-256', DEK);
    assert.deepEqual(Buffer.from((await crypto.unwrapKey('RSA-OAEP-256', wrapped.result)).result), DEK);
  });
});

test('crypto: encrypt/decrypt with RSA-OAEP-256, A256GCM (with AAD) and A128CBCPAD', async (t) => {
  const client = tv.keys();
  const plaintext = Buffer.from('sealbox dev vault encrypt test');
  await t.test('RSA-OAEP-256', async () => {
    const crypto = tv.crypto((await client.getKey('rsa-3072')).id ?? '', TOKENS.wrapper);
    const enc = await crypto.encrypt({ algorithm: 'RSA-OAEP-256', plaintext });
    const dec = await crypto.decrypt({ algorithm: 'RSA-OAEP-256', ciphertext: enc.result });
    assert.deepEqual(Buffer.from(dec.result), plaintext);
  });
  await t.test('A256GCM with additional authenticated data; a wrong tag fails', async () => {
    const crypto = tv.crypto((await client.getKey('oct-256')).id ?? '', TOKENS.wrapper);
    const aad = Buffer.from('context');
    const enc = await crypto.encrypt({ algorithm: 'A256GCM', plaintext, additionalAuthenticatedData: aad });
    assert.equal(enc.iv?.length, 12);
    assert.equal(enc.authenticationTag?.length, 16);
    const dec = await crypto.decrypt({
      algorithm: 'A256GCM',
      ciphertext: enc.result,
      iv: enc.iv ?? new Uint8Array(),
      authenticationTag: enc.authenticationTag ?? new Uint8Array(),
      additionalAuthenticatedData: aad,
    });
    assert.deepEqual(Buffer.from(dec.result), plaintext);
    const badTag = Buffer.from(enc.authenticationTag ?? []);
    badTag[0] = (badTag[0] ?? 0) ^ 1;
    await rejectsKv(
      crypto.decrypt({
        algorithm: 'A256GCM',
        ciphertext: enc.result,
        iv: enc.iv ?? new Uint8Array(),
        authenticationTag: badTag,
        additionalAuthenticatedData: aad,
      }),
      400,
      'BadParameter',
    );
  });
  await t.test('A128CBCPAD with a caller IV', async () => {
    const crypto = tv.crypto((await client.getKey('oct-128')).id ?? '', TOKENS.wrapper);
    const iv = randomBytes(16);
    const enc = await crypto.encrypt({ algorithm: 'A128CBCPAD', plaintext, iv });
    const dec = await crypto.decrypt({ algorithm: 'A128CBCPAD', ciphertext: enc.result, iv });
    assert.deepEqual(Buffer.from(dec.result), plaintext);
  });
});

test('disabled key: unwrapKey is 403 Forbidden / KeyDisabled until re-enabled', async () => {
  const client = tv.keys();
  const key = await client.createKey('to-disable', 'oct-HSM', { keySize: 256 });
  const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper);
  const wrapped = await crypto.wrapKey('A256KW', DEK);
  await client.updateKeyProperties('to-disable', key.properties.version ?? '', { enabled: false });
  const err = await rejectsKv(
    crypto.unwrapKey('A256KW', wrapped.result),
    403,
    'Forbidden',
    'KeyDisabled',
    /^Operation unwrapKey is not allowed on a disabled key\.$/,
  );
  assert.equal(err.details?.error?.message, 'Operation unwrapKey is not allowed on a disabled key.');
  await client.updateKeyProperties('to-disable', key.properties.version ?? '', { enabled: true });
  assert.deepEqual(Buffer.from((await crypto.unwrapKey('A256KW', wrapped.result)).result), DEK);
});

test('key_ops: an operation missing from key_ops is 403 KeyOperationForbidden', async () => {
  const client = tv.keys();
  const key = await client.createKey('wrap-only', 'oct-HSM', { keySize: 256, keyOps: ['wrapKey'] });
  const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper);
  const wrapped = await crypto.wrapKey('A256KW', DEK);
  await rejectsKv(
    crypto.unwrapKey('A256KW', wrapped.result),
    403,
    'Forbidden',
    'KeyOperationForbidden',
    /Operation unwrapKey is not permitted on this key\./,
  );
  await rejectsKv(
    crypto.encrypt({ algorithm: 'A256GCM', plaintext: DEK }),
    403,
    'Forbidden',
    'KeyOperationForbidden',
  );
});

test('nbf/exp: wrapKey and encrypt are refused outside the validity window; unwrapKey and decrypt are not', async (t) => {
  const client = tv.keys();
  const seconds = (offset: number) => new Date((Math.floor(Date.now() / 1000) + offset) * 1000);

  await t.test('expired key', async () => {
    const key = await client.createKey('expiring', 'oct-HSM', { keySize: 256 });
    const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper);
    const wrapped = await crypto.wrapKey('A256KW', DEK);
    const gcm = await crypto.encrypt({ algorithm: 'A256GCM', plaintext: DEK });
    await client.updateKeyProperties('expiring', key.properties.version ?? '', { expiresOn: seconds(-60) });
    await rejectsKv(
      crypto.wrapKey('A256KW', DEK),
      403,
      'Forbidden',
      'KeyExpired',
      /not allowed on an expired key/,
    );
    await rejectsKv(crypto.encrypt({ algorithm: 'A256GCM', plaintext: DEK }), 403, 'Forbidden', 'KeyExpired');
    // Key Vault keeps decrypt and unwrap open on expired keys so data is never locked out.
    assert.deepEqual(Buffer.from((await crypto.unwrapKey('A256KW', wrapped.result)).result), DEK);
    const dec = await crypto.decrypt({
      algorithm: 'A256GCM',
      ciphertext: gcm.result,
      iv: gcm.iv ?? new Uint8Array(),
      authenticationTag: gcm.authenticationTag ?? new Uint8Array(),
    });
    assert.deepEqual(Buffer.from(dec.result), DEK);
  });

  await t.test('not yet valid key', async () => {
    const key = await client.createKey('future', 'oct-HSM', { keySize: 256, notBefore: seconds(3600) });
    const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper);
    await rejectsKv(crypto.wrapKey('A256KW', DEK), 403, 'Forbidden', 'KeyNotYetValid', /not yet valid key/);
    await client.updateKeyProperties('future', key.properties.version ?? '', { notBefore: seconds(-60) });
    assert.ok((await crypto.wrapKey('A256KW', DEK)).result.length > 0);
  });

  await t.test('the SDK itself refuses an expired key it has fetched (client-side check)', async () => {
    const key = await client.getKey('expiring');
    await assert.rejects(tv.crypto(key).wrapKey('A256KW', DEK), /expired at/);
  });
});

test('access policy: a missing permission is 403 Forbidden / AccessDenied', async (t) => {
  await t.test('reader cannot create', () =>
    expectKv(
      tv.keys(TOKENS.reader).createRsaKey('not-allowed'),
      403,
      'Forbidden',
      'AccessDenied',
      /The user, group or application 'appid=reader;oid=[0-9a-f-]+;iss=https:\/\/sts\.windows\.net\/[0-9a-f-]+\/' does not have keys create permission on key vault 'sealbox-dev;location=local'\./,
    ),
  );
  await t.test('reader cannot unwrap', async () => {
    const key = await tv.keys().getKey('oct-256');
    await rejectsKv(
      tv.crypto(key.id ?? '', TOKENS.reader).unwrapKey('A256KW', randomBytes(40)),
      403,
      'Forbidden',
      'AccessDenied',
      /keys unwrapKey permission/,
    );
  });
  await t.test('wrapper cannot get or list', async () => {
    await rejectsKv(
      tv.keys(TOKENS.wrapper).getKey('oct-256'),
      403,
      'Forbidden',
      'AccessDenied',
      /keys get permission/,
    );
    // The SDK's pager reports its own message ("Pagination failed …") and drops the error details.
    await rejectsKv(tv.keys(TOKENS.wrapper).listPropertiesOfKeys().next(), 403, 'Forbidden');
  });
  await t.test('an unknown bearer token is 401', () =>
    expectKv(tv.keys('tok-nobody-0123456789').getKey('oct-256'), 401, 'Unauthorized'),
  );
});

test('challenge: the resource passes the SDK check on sealbox.localhost; bare localhost needs the opt-out', async (t) => {
  const strict = devVaultClientOptions(tv.vault, { verifyChallengeResource: true });
  await t.test('subdomainUrl with verification on', async () => {
    const client = new KeyClient(tv.vault.subdomainUrl, staticTokenCredential(TOKENS.admin), strict);
    const key = await client.getKey('oct-256');
    assert.match(
      key.id ?? '',
      /^https:\/\/sealbox\.localhost:\d+\/keys\/oct-256\//,
      'ids follow the host the client used',
    );
  });
  await t.test('url (bare localhost) with verification on is refused by the SDK itself', async () => {
    const client = new KeyClient(
      tv.vault.url,
      staticTokenCredential(TOKENS.admin),
      devVaultClientOptions(tv.vault, { verifyChallengeResource: true }),
    );
    await assert.rejects(
      client.getKey('oct-256'),
      /challenge resource 'localhost' does not match the requested domain/,
    );
  });
});

test('soft delete, deleted-key reads, recover and purge through the SDK pollers', async (t) => {
  const client = tv.keys();
  const key = await client.createKey('lifecycle', 'oct-HSM', { keySize: 256 });
  await client.createKey('lifecycle', 'oct-HSM', { keySize: 256 });
  const wrapped = await tv.crypto(key.id ?? '', TOKENS.wrapper).wrapKey('A256KW', DEK);

  await t.test('beginDeleteKey polls until the deletion completes', async () => {
    const started = Date.now();
    const poller = await client.beginDeleteKey('lifecycle', { intervalInMs: 50 });
    const deleted = await poller.pollUntilDone();
    assert.ok(Date.now() - started >= LRO_DELAY_MS - 20, 'the poller waited for the delete to finish');
    const polls = tv.records.filter((r) => r.operationId === 'GetDeletedKey' && r.status === 404);
    assert.ok(polls.length >= 1, 'getDeletedKey answered 404 while the delete was in progress');
    assert.equal(deleted.properties.recoveryId, `https://localhost:${tv.vault.port}/deletedkeys/lifecycle`);
    const { deletedOn, scheduledPurgeDate } = deleted.properties;
    assert.ok(deletedOn && scheduledPurgeDate);
    assert.equal(
      scheduledPurgeDate.getTime() - deletedOn.getTime(),
      7 * 86_400_000,
      'purge date is deletion + 7 days',
    );
  });
  await t.test('a deleted key is gone from /keys but readable under /deletedkeys', async () => {
    await rejectsKv(client.getKey('lifecycle'), 404, 'KeyNotFound');
    const deleted = await client.getDeletedKey('lifecycle');
    assert.equal(deleted.name, 'lifecycle');
    const listed = [];
    for await (const d of client.listDeletedKeys()) listed.push(d.name);
    assert.ok(listed.includes('lifecycle'));
    for await (const k of client.listPropertiesOfKeys()) assert.notEqual(k.name, 'lifecycle');
  });
  await t.test('create or import over a soft-deleted name → 409 ObjectIsDeletedButRecoverable', async () => {
    await rejectsKv(
      client.createKey('lifecycle', 'oct-HSM'),
      409,
      'Conflict',
      'ObjectIsDeletedButRecoverable',
      /Key lifecycle is currently in a deleted but recoverable state, and its name cannot be reused/,
    );
    await rejectsKv(
      client.importKey('lifecycle', { kty: 'oct-HSM', k: randomBytes(32) }),
      409,
      'Conflict',
      'ObjectIsDeletedButRecoverable',
    );
  });
  await t.test('beginRecoverDeletedKey brings every version back', async () => {
    const poller = await client.beginRecoverDeletedKey('lifecycle', { intervalInMs: 50 });
    const recovered = await poller.pollUntilDone();
    assert.equal(recovered.name, 'lifecycle');
    const versions = [];
    for await (const v of client.listPropertiesOfKeyVersions('lifecycle')) versions.push(v.version);
    assert.equal(versions.length, 2);
    const unwrapped = await tv.crypto(key.id ?? '', TOKENS.wrapper).unwrapKey('A256KW', wrapped.result);
    assert.deepEqual(Buffer.from(unwrapped.result), DEK);
  });
  await t.test('purge removes it for good; the name can then be reused', async () => {
    await (await client.beginDeleteKey('lifecycle', { intervalInMs: 50 })).pollUntilDone();
    await client.purgeDeletedKey('lifecycle');
    await rejectsKv(
      client.getDeletedKey('lifecycle'),
      404,
      'KeyNotFound',
      undefined,
      /Deleted Key not found/,
    );
    const fresh = await client.createKey('lifecycle', 'oct-HSM');
    const versions = [];
    for await (const v of client.listPropertiesOfKeyVersions('lifecycle')) versions.push(v.version);
    assert.deepEqual(versions, [fresh.properties.version]);
  });
  await t.test('recover or purge of a key that is not deleted → 404', async () => {
    await rejectsKv(client.purgeDeletedKey('lifecycle'), 404, 'KeyNotFound');
    await rejectsKv(client.getDeletedKey('never-existed'), 404, 'KeyNotFound');
  });
});

test('purge protection: purging a deleted key is 403', async () => {
  const protectedVault = await startTestVault({ purgeProtection: true, softDeleteRetentionDays: 90 });
  try {
    const client = protectedVault.keys();
    const key = await client.createKey('kept', 'oct-HSM');
    assert.equal(key.properties.recoveryLevel, 'Recoverable');
    await (await client.beginDeleteKey('kept', { intervalInMs: 20 })).pollUntilDone();
    await rejectsKv(
      client.purgeDeletedKey('kept'),
      403,
      'Forbidden',
      undefined,
      /purge protection is enabled/,
    );
    assert.equal((await client.getDeletedKey('kept')).name, 'kept');
    tv.records.push(...protectedVault.records);
  } finally {
    await protectedVault.close();
  }
});

test('rotation: rotate, default and custom rotation policies', async (t) => {
  const client = tv.keys();
  const first = await client.createRsaKey('rotating', {
    keySize: 2048,
    keyOps: ['wrapKey', 'unwrapKey'],
    tags: { app: 'x' },
  });
  const wrappedBefore = await tv.crypto(first.id ?? '', TOKENS.wrapper).wrapKey('RSA-OAEP-256', DEK);

  await t.test(
    'a key without a policy reports Key Vault’s default (notify 30 days before expiry)',
    async () => {
      const policy = await client.getKeyRotationPolicy('rotating');
      assert.deepEqual(policy.lifetimeActions, [
        { action: 'Notify', timeAfterCreate: undefined, timeBeforeExpiry: 'P30D' },
      ]);
      assert.equal(policy.id, `https://localhost:${tv.vault.port}/keys/rotating/rotationpolicy`);
    },
  );
  await t.test('set and read back a policy', async () => {
    const set = await client.updateKeyRotationPolicy('rotating', {
      lifetimeActions: [
        { action: 'Rotate', timeAfterCreate: 'P90D' },
        { action: 'Notify', timeBeforeExpiry: 'P7D' },
      ],
      expiresIn: 'P60D',
    });
    assert.equal(set.expiresIn, 'P60D');
    const got = await client.getKeyRotationPolicy('rotating');
    assert.deepEqual(
      got.lifetimeActions?.map((a) => a.action),
      ['Rotate', 'Notify'],
    );
    assert.equal(got.expiresIn, 'P60D');
  });
  await t.test(
    'rotate makes a new version with the old type, ops, tags and exp from the policy',
    async () => {
      const rotated = await client.rotateKey('rotating');
      assert.notEqual(rotated.id, first.id);
      assert.equal(modulusBits(rotated), 2048);
      assert.deepEqual(rotated.keyOperations, ['wrapKey', 'unwrapKey']);
      assert.deepEqual(rotated.properties.tags, { app: 'x' });
      const created = rotated.properties.createdOn?.getTime() ?? 0;
      assert.equal((rotated.properties.expiresOn?.getTime() ?? 0) - created, 60 * 86_400_000);
      assert.equal((await client.getKey('rotating')).id, rotated.id);
      const old = await tv
        .crypto(first.id ?? '', TOKENS.wrapper)
        .unwrapKey('RSA-OAEP-256', wrappedBefore.result);
      assert.deepEqual(Buffer.from(old.result), DEK, 'the old version still unwraps');
    },
  );
  const invalid: ReadonlyArray<{
    name: string;
    policy: Parameters<KeyClient['updateKeyRotationPolicy']>[1];
    message: RegExp;
  }> = [
    { name: 'expiry under 28 days', policy: { expiresIn: 'P10D' }, message: /at least 28 days/ },
    {
      name: 'not a duration',
      policy: { lifetimeActions: [{ action: 'Rotate', timeAfterCreate: '90 days' }] },
      message: /ISO 8601/,
    },
    {
      name: 'notify without timeBeforeExpiry',
      policy: { lifetimeActions: [{ action: 'Notify', timeAfterCreate: 'P1D' }] },
      message: /Notify action needs timeBeforeExpiry/,
    },
  ];
  for (const c of invalid) {
    await t.test(`rejects ${c.name}`, () =>
      expectKv(
        client.updateKeyRotationPolicy('rotating', c.policy),
        400,
        'BadParameter',
        undefined,
        c.message,
      ),
    );
  }
});

test('api-version: 2025-07-01, 7.6 and 7.5 are served; 7.4 is refused with Key Vault’s message', async (t) => {
  for (const serviceVersion of ['7.5', '7.6', '2025-07-01']) {
    await t.test(serviceVersion, async () => {
      const key = await tv.keys(TOKENS.admin, { serviceVersion }).getKey('oct-256');
      assert.equal(key.name, 'oct-256');
    });
  }
  await t.test('7.4', () =>
    expectKv(
      tv.keys(TOKENS.admin, { serviceVersion: '7.4', ...noRetries() }).getKey('oct-256'),
      400,
      'BadParameter',
      undefined,
      /^The specified version \(7\.4\) is not recognized\. Consider using the latest supported version \(2025-07-01\)\.$/,
    ),
  );
});

test('counters: per operation and per key name', async () => {
  tv.vault.resetCounters();
  const key = await tv.keys().getKey('oct-256');
  const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper);
  const wrapped = await crypto.wrapKey('A256KW', DEK);
  await crypto.unwrapKey('A256KW', wrapped.result);
  await crypto.unwrapKey('A256KW', wrapped.result);
  const counters = tv.vault.counters();
  assert.equal(
    counters['getKey'],
    2,
    'one explicit getKey, one from the CryptographyClient (refused: no get)',
  );
  assert.equal(counters['wrapKey/oct-256'], 1);
  assert.equal(counters['unwrapKey'], 2);
  assert.equal(counters['unwrapKey/oct-256'], 2);
});

test('every response body validates against the swagger and carries no private key material', () => {
  const swagger = keyVaultSwagger(join(VECTORS_DIR, 'keyvault'));
  const problems = tv.records.flatMap((r) =>
    swagger.validate(r.method, r.path, r.status, r.body, r.operationId),
  );
  assert.deepEqual(problems, []);
  const operations = new Set(tv.records.map((r) => r.operationId));
  for (const op of [
    'CreateKey',
    'ImportKey',
    'GetKey',
    'GetKeys',
    'GetKeyVersions',
    'UpdateKey',
    'DeleteKey',
    'GetDeletedKey',
    'GetDeletedKeys',
    'RecoverDeletedKey',
    'PurgeDeletedKey',
    'RotateKey',
    'GetKeyRotationPolicy',
    'UpdateKeyRotationPolicy',
    'wrapKey',
    'unwrapKey',
    'encrypt',
    'decrypt',
  ]) {
    assert.ok(operations.has(op), `${op} was exercised and validated`);
  }
  assertNoPrivateMaterial(tv.records);
});
