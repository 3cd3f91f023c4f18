/**
 * The dev vault's key material and crypto operations (src/devvault/keys.ts): every algorithm round-trips,
 * every misuse is Key Vault's BadParameter, imports are validated (including the RSA algebra that
 * OpenSSL never checks), only public members are exposed, and RSA1_5 decryption follows what this Node
 * allows.
 */
import assert from 'node:assert/strict';
import { constants, generateKeyPairSync, privateDecrypt, publicEncrypt, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { KvError } from '../../../src/devvault/errors';
import {
  type CryptoOperation,
  checkKeyOps,
  decodeBase64url,
  generateMaterial,
  type LoadedKey,
  loadMaterial,
  materialFromImport,
  publicJwk,
  rsa15DecryptAvailable,
  rsaConsistent,
  runCrypto,
} from '../../../src/devvault/keys';

/** Asserts `fn` throws Key Vault's 400 BadParameter with a message matching `message`. */
function throwsBadParameter(fn: () => unknown, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof KvError, String(err));
    assert.equal(err.status, 400);
    assert.equal(err.code, 'BadParameter');
    if (message) assert.match(err.message, message);
    return true;
  });
}

const rsaJwk = (bits: number) =>
  generateKeyPairSync('rsa', { modulusLength: bits }).privateKey.export({ format: 'jwk' }) as Record<
    string,
    string
  >;

const RSA2048 = loadMaterial('RSA', materialFromImport(rsaJwk(2048), false).material);
const octKey = (bits: number): LoadedKey =>
  loadMaterial('oct', { k: randomBytes(bits / 8).toString('base64url') });

test('decodeBase64url accepts only unpadded base64url', () => {
  const cases: ReadonlyArray<[unknown, string | undefined]> = [
    ['', ''],
    ['AQAB', '010001'],
    ['-_8', 'fbff'],
    ['AQAB=', undefined],
    ['a+b/', undefined],
    ['A', undefined],
    [42, undefined],
  ];
  for (const [input, hex] of cases) assert.equal(decodeBase64url(input)?.toString('hex'), hex, String(input));
});

test('checkKeyOps accepts distinct operations that apply to the key type', () => {
  assert.deepEqual(checkKeyOps('RSA', ['wrapKey', 'sign']), ['wrapKey', 'sign']);
  assert.deepEqual(checkKeyOps('oct-HSM', []), []);
  const bad: ReadonlyArray<[Parameters<typeof checkKeyOps>[0], unknown, RegExp]> = [
    ['oct-HSM', ['sign'], /Invalid key operation 'sign' for key type oct-HSM/],
    ['RSA', ['wrapkey'], /Invalid key operation 'wrapkey'/],
    ['RSA', ['wrapKey', 'wrapKey'], /listed twice/],
    ['RSA', 'wrapKey', /must be an array/],
  ];
  for (const [kty, ops, message] of bad) throwsBadParameter(() => checkKeyOps(kty, ops), message);
});

test('wrap/unwrap and encrypt/decrypt round-trip for every algorithm', async (t) => {
  const rsa3072 = loadMaterial('RSA', await generateMaterial('RSA', 3072));
  const cases: ReadonlyArray<{
    alg: string;
    key: LoadedKey;
    ops: [CryptoOperation, CryptoOperation];
    iv?: Buffer;
  }> = [
    { alg: 'RSA-OAEP', key: RSA2048, ops: ['wrapKey', 'unwrapKey'] },
    { alg: 'RSA-OAEP-256', key: RSA2048, ops: ['wrapKey', 'unwrapKey'] },
    { alg: 'RSA-OAEP-256', key: rsa3072, ops: ['encrypt', 'decrypt'] },
    { alg: 'A128KW', key: octKey(128), ops: ['wrapKey', 'unwrapKey'] },
    { alg: 'A192KW', key: octKey(192), ops: ['wrapKey', 'unwrapKey'] },
    { alg: 'A256KW', key: octKey(256), ops: ['wrapKey', 'unwrapKey'] },
    { alg: 'A128GCM', key: octKey(128), ops: ['encrypt', 'decrypt'] },
    { alg: 'A256GCM', key: octKey(256), ops: ['encrypt', 'decrypt'] },
    { alg: 'A192CBC', key: octKey(192), ops: ['encrypt', 'decrypt'], iv: randomBytes(16) },
    { alg: 'A256CBCPAD', key: octKey(256), ops: ['encrypt', 'decrypt'], iv: randomBytes(16) },
  ];
  const value = randomBytes(32);
  for (const c of cases) {
    await t.test(`${c.alg} ${c.ops.join('/')}`, () => {
      const out = runCrypto(c.ops[0], c.key, { alg: c.alg, value, ...(c.iv ? { iv: c.iv } : {}) });
      assert.notDeepEqual(out.value, value);
      const back = runCrypto(c.ops[1], c.key, {
        alg: c.alg,
        value: out.value,
        ...(out.iv ? { iv: out.iv } : {}),
        ...(out.tag ? { tag: out.tag } : {}),
      });
      assert.deepEqual(back.value, value);
    });
  }
});

test('RSA-OAEP interoperates with node: vault wraps, node decrypts with the same hash', () => {
  const jwk = rsaJwk(2048);
  const key = loadMaterial('RSA', materialFromImport(jwk, false).material);
  if (key.family !== 'RSA') throw new Error('expected RSA');
  for (const [alg, hash] of [
    ['RSA-OAEP', 'sha1'],
    ['RSA-OAEP-256', 'sha256'],
  ] as const) {
    const value = randomBytes(32);
    const wrapped = runCrypto('wrapKey', key, { alg, value }).value;
    const plain = privateDecrypt(
      { key: key.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash },
      wrapped,
    );
    assert.deepEqual(plain, value, alg);
  }
});

test('misuse is BadParameter, never a crash', () => {
  const aes128 = octKey(128);
  const cases: ReadonlyArray<{ name: string; run: () => unknown; message: RegExp }> = [
    {
      name: 'AES algorithm on RSA',
      run: () => runCrypto('wrapKey', RSA2048, { alg: 'A256KW', value: randomBytes(32) }),
      message: /not valid for an RSA key/,
    },
    {
      name: 'RSA algorithm on AES',
      run: () => runCrypto('wrapKey', aes128, { alg: 'RSA-OAEP', value: randomBytes(32) }),
      message: /not valid for wrapKey/,
    },
    {
      name: 'KW for encrypt',
      run: () => runCrypto('encrypt', aes128, { alg: 'A128KW', value: randomBytes(32) }),
      message: /not valid for encrypt/,
    },
    {
      name: 'GCM for wrapKey',
      run: () => runCrypto('wrapKey', aes128, { alg: 'A128GCM', value: randomBytes(32) }),
      message: /not valid for wrapKey/,
    },
    {
      name: 'size mismatch',
      run: () => runCrypto('wrapKey', aes128, { alg: 'A256KW', value: randomBytes(32) }),
      message: /needs a 256-bit key/,
    },
    {
      name: 'KW input not a multiple of 8',
      run: () => runCrypto('wrapKey', aes128, { alg: 'A128KW', value: randomBytes(20) }),
      message: /multiple of 8/,
    },
    {
      name: 'KW unwrap integrity failure',
      run: () => runCrypto('unwrapKey', aes128, { alg: 'A128KW', value: randomBytes(40) }),
      message: /could not be unwrapped/,
    },
    {
      name: 'OAEP value too long',
      run: () => runCrypto('wrapKey', RSA2048, { alg: 'RSA-OAEP-256', value: randomBytes(200) }),
      message: /too long/,
    },
    {
      name: 'OAEP garbage',
      run: () => runCrypto('unwrapKey', RSA2048, { alg: 'RSA-OAEP', value: randomBytes(256) }),
      message: /could not be decrypted/,
    },
    {
      name: 'OAEP short ciphertext',
      run: () => runCrypto('unwrapKey', RSA2048, { alg: 'RSA-OAEP', value: Buffer.alloc(0) }),
      message: /could not be decrypted/,
    },
    {
      name: 'GCM caller IV',
      run: () => runCrypto('encrypt', aes128, { alg: 'A128GCM', value: randomBytes(8), iv: randomBytes(12) }),
      message: /generated by the service/,
    },
    {
      name: 'GCM decrypt without tag',
      run: () => runCrypto('decrypt', aes128, { alg: 'A128GCM', value: randomBytes(8), iv: randomBytes(12) }),
      message: /12-byte iv and 16-byte tag/,
    },
    {
      name: 'CBC without IV',
      run: () => runCrypto('encrypt', aes128, { alg: 'A128CBC', value: randomBytes(16) }),
      message: /16-byte iv/,
    },
    {
      name: 'CBC unpadded length',
      run: () =>
        runCrypto('encrypt', aes128, { alg: 'A128CBC', value: randomBytes(15), iv: randomBytes(16) }),
      message: /multiple of 16/,
    },
    {
      name: 'CBCPAD bad padding',
      // Unpadded CBC of zero bytes decrypts to a last byte of 0x00: never valid PKCS#7 padding. (Random
      // bytes would pass the padding check about once in 256 runs.)
      run: () => {
        const iv = randomBytes(16);
        const unpadded = runCrypto('encrypt', aes128, { alg: 'A128CBC', value: Buffer.alloc(32), iv }).value;
        return runCrypto('decrypt', aes128, { alg: 'A128CBCPAD', value: unpadded, iv });
      },
      message: /could not be decrypted|A128CBCPAD/,
    },
    {
      name: 'unknown algorithm',
      run: () => runCrypto('wrapKey', RSA2048, { alg: 'RSA-OAEP-512', value: randomBytes(8) }),
      message: /not valid/,
    },
  ];
  for (const c of cases) throwsBadParameter(c.run, c.message);
});

test('GCM: a flipped tag, ciphertext or AAD bit fails authentication', () => {
  const key = octKey(256);
  const aad = Buffer.from('aad');
  const enc = runCrypto('encrypt', key, { alg: 'A256GCM', value: randomBytes(40), aad });
  assert.deepEqual(enc.aad, aad, 'AAD is echoed');
  const flip = (b: Buffer | undefined) => {
    const c = Buffer.from(b ?? []);
    c[0] = (c[0] ?? 0) ^ 1;
    return c;
  };
  const base = {
    alg: 'A256GCM',
    value: enc.value,
    iv: enc.iv ?? Buffer.alloc(0),
    tag: enc.tag ?? Buffer.alloc(0),
    aad,
  };
  for (const tampered of [
    { ...base, tag: flip(base.tag) },
    { ...base, value: flip(base.value) },
    { ...base, aad: flip(aad) },
  ]) {
    throwsBadParameter(() => runCrypto('decrypt', key, tampered), /could not be decrypted/);
  }
});

test('RSA1_5: wrap always works; unwrap works exactly when this Node allows PKCS#1 v1.5 decryption', () => {
  if (RSA2048.family !== 'RSA') throw new Error('expected RSA');
  const value = randomBytes(32);
  const wrapped = runCrypto('wrapKey', RSA2048, { alg: 'RSA1_5', value }).value;
  assert.equal(wrapped.length, 256);
  if (rsa15DecryptAvailable(RSA2048.privateKey)) {
    assert.deepEqual(runCrypto('unwrapKey', RSA2048, { alg: 'RSA1_5', value: wrapped }).value, value);
  } else {
    throwsBadParameter(
      () => runCrypto('unwrapKey', RSA2048, { alg: 'RSA1_5', value: wrapped }),
      /CVE-2023-46809/,
    );
  }
});

test('materialFromImport validates BYOK keys', async (t) => {
  const jwk = rsaJwk(2048);
  await t.test('RSA keeps kty unless Hsm or RSA-HSM; oct is always oct-HSM', () => {
    assert.equal(materialFromImport(jwk, false).kty, 'RSA');
    assert.equal(materialFromImport(jwk, true).kty, 'RSA-HSM');
    assert.equal(materialFromImport({ ...jwk, kty: 'RSA-HSM' }, false).kty, 'RSA-HSM');
    const oct = materialFromImport({ kty: 'oct', k: randomBytes(24).toString('base64url') }, false);
    assert.deepEqual([oct.kty, oct.size], ['oct-HSM', 192]);
  });
  const other = rsaJwk(2048);
  const cases: ReadonlyArray<{ name: string; jwk: Record<string, unknown>; message: RegExp }> = [
    { name: 'missing qi', jwk: { ...jwk, qi: undefined }, message: /'qi' is missing/ },
    { name: 'padded base64', jwk: { ...jwk, e: 'AQAB=' }, message: /'e' is missing or invalid/ },
    { name: 'RSA 1024', jwk: rsaJwk(1024), message: /this key has 1024 bits/ },
    { name: 'd of another key', jwk: { ...jwk, d: other['d'] }, message: /inconsistent/ },
    { name: 'swapped dp/dq', jwk: { ...jwk, dp: jwk['dq'], dq: jwk['dp'] }, message: /inconsistent/ },
    {
      name: 'oct of 20 bytes',
      jwk: { kty: 'oct', k: randomBytes(20).toString('base64url') },
      message: /16, 24 or 32 bytes/,
    },
    { name: 'EC', jwk: { kty: 'EC', crv: 'P-256' }, message: /cannot be imported/ },
  ];
  for (const c of cases)
    await t.test(`rejects ${c.name}`, () =>
      throwsBadParameter(() => materialFromImport(c.jwk, false), c.message),
    );
});

test('rsaConsistent accepts node-generated keys and rejects any altered member', () => {
  const m = materialFromImport(rsaJwk(2048), false).material;
  assert.ok(rsaConsistent(m));
  const bump = (b64: string) => {
    const b = Buffer.from(b64, 'base64url');
    b[b.length - 1] = (b[b.length - 1] ?? 0) ^ 2;
    return b.toString('base64url');
  };
  if (!('n' in m)) throw new Error('expected RSA');
  for (const member of ['n', 'd', 'p', 'q', 'dp', 'dq', 'qi'] as const) {
    assert.equal(rsaConsistent({ ...m, [member]: bump(m[member]) }), false, member);
  }
  assert.equal(rsaConsistent({ k: 'AAAA' }), false);
});

test('publicJwk exposes n and e only; symmetric keys expose nothing', () => {
  assert.deepEqual(Object.keys(publicJwk(RSA2048)).sort(), ['e', 'n']);
  assert.deepEqual(publicJwk(octKey(256)), {});
  if (RSA2048.family !== 'RSA') throw new Error('expected RSA');
  const ct = publicEncrypt(
    { key: RSA2048.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING },
    Buffer.from('x'),
  );
  assert.equal(ct.length, 256);
});

test('loadMaterial refuses material that is not a key of its family', () => {
  assert.throws(
    () => loadMaterial('oct', { k: randomBytes(10).toString('base64url') }),
    /16, 24 or 32 bytes/,
  );
  assert.throws(() => loadMaterial('oct', materialFromImport(rsaJwk(2048), false).material), /no k/);
  assert.throws(() => loadMaterial('RSA', { k: 'AAAA' }), /no n/);
});
