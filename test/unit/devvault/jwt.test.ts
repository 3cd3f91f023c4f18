/**
 * The dev vault's JWS helpers: a signed token verifies; alg downgrades, unknown keys, tampered payloads
 * and malformed tokens do not.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { test } from 'node:test';
import { decodeJwt, signJwt, verifyJwt } from '../../../src/devvault/jwt';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
const keys = new Map([['k1', publicKey]]);
const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

test('a signed token verifies and decodes', () => {
  const token = signJwt({ sub: 'a', exp: 1 }, privateKey, 'k1');
  assert.deepEqual(verifyJwt(token, keys), { sub: 'a', exp: 1 });
  assert.deepEqual(decodeJwt(token)?.header, { typ: 'JWT', alg: 'RS256', kid: 'k1' });
});

test('refusals say why', () => {
  const good = signJwt({ sub: 'a' }, privateKey, 'k1');
  const [h, , sig] = good.split('.');
  const cases: ReadonlyArray<[string, string, RegExp]> = [
    ['alg none', `${b64({ alg: 'none', kid: 'k1' })}.${b64({ sub: 'a' })}.`, /alg none is not RS256/],
    ['HS256', `${b64({ alg: 'HS256', kid: 'k1' })}.${b64({ sub: 'a' })}.${sig}`, /alg HS256/],
    ['unknown kid', signJwt({ sub: 'a' }, privateKey, 'k2'), /signing key k2 is unknown/],
    ['other key', signJwt({ sub: 'a' }, other.privateKey, 'k1'), /signature is invalid/],
    ['tampered payload', `${h}.${b64({ sub: 'admin' })}.${sig}`, /signature is invalid/],
    ['not a JWT', 'opaque-token', /not a JWT/],
  ];
  for (const [name, token, reason] of cases) {
    const result = verifyJwt(token, keys);
    assert.equal(typeof result, 'string', name);
    assert.match(result as string, reason, name);
  }
});
