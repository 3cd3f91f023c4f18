/**
 * Compact JWS (RFC 7515) with RS256, on node:crypto only: what the embedded Entra ID signs its access
 * tokens with and what the dev vault verifies. Verification checks the header's alg (RS256 only, so a
 * token cannot downgrade itself to "none" or to HMAC with the public key), the key id and the
 * signature; claims (iss, aud, exp, nbf) are the caller's to check, because what they must be depends
 * on who verifies.
 */
import { createSign, createVerify, type KeyObject } from 'node:crypto';

/** Claims of a token, as decoded. */
export type JwtClaims = Record<string, unknown>;

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** Signs `claims` with `key` (RSA private), header {alg: RS256, typ: JWT, kid}. */
export function signJwt(claims: JwtClaims, key: KeyObject, kid: string): string {
  const input = `${b64({ typ: 'JWT', alg: 'RS256', kid })}.${b64(claims)}`;
  const signature = createSign('RSA-SHA256').update(input).sign(key).toString('base64url');
  return `${input}.${signature}`;
}

/** Decodes a token without verifying it (for messages); undefined when it is not a compact JWS. */
export function decodeJwt(token: string): { header: JwtClaims; claims: JwtClaims } | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  try {
    const header = JSON.parse(Buffer.from(parts[0] ?? '', 'base64url').toString('utf8')) as unknown;
    const claims = JSON.parse(Buffer.from(parts[1] ?? '', 'base64url').toString('utf8')) as unknown;
    if (header === null || typeof header !== 'object' || claims === null || typeof claims !== 'object')
      return undefined;
    return { header: header as JwtClaims, claims: claims as JwtClaims };
  } catch {
    return undefined;
  }
}

/**
 * Verifies the signature of `token` against the key named by its kid in `keys`. Returns the claims, or a
 * string saying what is wrong.
 */
export function verifyJwt(token: string, keys: ReadonlyMap<string, KeyObject>): JwtClaims | string {
  const decoded = decodeJwt(token);
  if (decoded === undefined) return 'the token is not a JWT';
  if (decoded.header['alg'] !== 'RS256')
    return `the token's alg ${String(decoded.header['alg'])} is not RS256`;
  const key = keys.get(String(decoded.header['kid']));
  if (key === undefined) return `the token's signing key ${String(decoded.header['kid'])} is unknown`;
  const [header, payload, signature] = token.split('.');
  const ok = createVerify('RSA-SHA256')
    .update(`${header}.${payload}`)
    .verify(key, Buffer.from(signature ?? '', 'base64url'));
  return ok ? decoded.claims : 'the token signature is invalid';
}
