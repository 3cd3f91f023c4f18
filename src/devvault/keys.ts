/**
 * Key material and the cryptographic operations of the dev vault, on node:crypto only.
 *
 * Key types: RSA and RSA-HSM (2048, 3072, 4096 bits; "HSM" is a label here, the material lives in the same
 * process) and oct-HSM (AES 128, 192, 256 bits). Private material is kept as base64url JWK members (the
 * persisted form) and as node KeyObjects (the working form); only publicJwk() output ever leaves the vault.
 *
 * Algorithms:
 *   RSA      wrapKey/unwrapKey/encrypt/decrypt: RSA-OAEP (SHA-1, MGF1-SHA-1), RSA-OAEP-256 (SHA-256,
 *            MGF1-SHA-256), RSA1_5 (PKCS#1 v1.5; decryption needs a Node that allows it, see rsa15Decrypt).
 *   oct-HSM  wrapKey/unwrapKey: A128KW/A192KW/A256KW (RFC 3394, src/crypto/keywrap.ts);
 *            encrypt/decrypt: A128GCM…A256GCM, A128CBC…A256CBC, A128CBCPAD…A256CBCPAD.
 * The AES algorithm's size must equal the key's size, as on Managed HSM.
 */
import {
  createCipheriv,
  createDecipheriv,
  createPrivateKey,
  createPublicKey,
  constants as cryptoConstants,
  generateKeyPair,
  type KeyObject,
  privateDecrypt,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import { promisify } from 'node:util';
import { aesKeyUnwrap, aesKeyWrap } from '../crypto/keywrap';
import { KvError, kvErrors } from './errors';

const generateKeyPairAsync = promisify(generateKeyPair);

/** The key types this vault creates and imports (kty as Key Vault reports it). */
export type KeyType = 'RSA' | 'RSA-HSM' | 'oct-HSM';

/** The key-operation names of JsonWebKeyOperation that apply to the types above. */
export type KeyOperation =
  | 'encrypt'
  | 'decrypt'
  | 'sign'
  | 'verify'
  | 'wrapKey'
  | 'unwrapKey'
  | 'import'
  | 'export';

/** The four crypto operations the vault performs. */
export type CryptoOperation = 'encrypt' | 'decrypt' | 'wrapKey' | 'unwrapKey';

/** RSA modulus sizes Key Vault creates and imports, in bits. */
export const RSA_KEY_SIZES: readonly number[] = [2048, 3072, 4096];
/** AES key sizes of oct-HSM keys, in bits. */
export const OCT_KEY_SIZES: readonly number[] = [128, 192, 256];

/**
 * Operations a key of each type may list in key_ops. sign/verify are accepted on RSA keys because Key
 * Vault accepts them, even though this vault does not implement the sign and verify endpoints.
 */
const ALLOWED_OPS: Record<'RSA' | 'oct', readonly KeyOperation[]> = {
  RSA: ['encrypt', 'decrypt', 'sign', 'verify', 'wrapKey', 'unwrapKey', 'import'],
  oct: ['encrypt', 'decrypt', 'wrapKey', 'unwrapKey', 'import'],
};

/** key_ops Key Vault assigns when a create or import names none. */
const DEFAULT_OPS: Record<'RSA' | 'oct', readonly KeyOperation[]> = {
  RSA: ['encrypt', 'decrypt', 'sign', 'verify', 'wrapKey', 'unwrapKey'],
  oct: ['encrypt', 'decrypt', 'wrapKey', 'unwrapKey'],
};

/** Private key material as persisted: JWK members, base64url without padding. */
export type StoredMaterial =
  | {
      readonly n: string;
      readonly e: string;
      readonly d: string;
      readonly p: string;
      readonly q: string;
      readonly dp: string;
      readonly dq: string;
      readonly qi: string;
    }
  | { readonly k: string };

/** A key version's material ready for use. Never serialised: publicJwk() is the only outward view. */
export type LoadedKey =
  | {
      readonly family: 'RSA';
      readonly size: number;
      readonly privateKey: KeyObject;
      readonly publicKey: KeyObject;
    }
  | { readonly family: 'oct'; readonly size: number; readonly secret: Buffer };

/** The crypto operation parameters (swagger KeyOperationsParameters, decoded). */
export interface CryptoParams {
  readonly alg: string;
  readonly value: Buffer;
  readonly iv?: Buffer;
  readonly aad?: Buffer;
  readonly tag?: Buffer;
}

/** The crypto operation result (swagger KeyOperationResult, before encoding). */
export interface CryptoResult {
  readonly value: Buffer;
  readonly iv?: Buffer;
  readonly tag?: Buffer;
  readonly aad?: Buffer;
}

const BASE64URL = /^[A-Za-z0-9_-]*$/;

/** Decodes strict base64url (no padding, no other alphabet); undefined when `s` is not base64url. */
export function decodeBase64url(s: unknown): Buffer | undefined {
  if (typeof s !== 'string' || !BASE64URL.test(s) || s.length % 4 === 1) return undefined;
  return Buffer.from(s, 'base64url');
}

/** The family ('RSA' or 'oct') of a key type. */
export function familyOf(kty: KeyType): 'RSA' | 'oct' {
  return kty === 'oct-HSM' ? 'oct' : 'RSA';
}

/** Default key_ops for a new key of this type. */
export function defaultKeyOps(kty: KeyType): KeyOperation[] {
  return [...DEFAULT_OPS[familyOf(kty)]];
}

/**
 * Validates requested key_ops for a key type: a list of distinct, known operations that apply to the type.
 * Throws BadParameter naming the first offending entry.
 */
export function checkKeyOps(kty: KeyType, ops: unknown): KeyOperation[] {
  if (!Array.isArray(ops)) throw kvErrors.badParameter('key_ops must be an array of key operations.');
  const allowed = ALLOWED_OPS[familyOf(kty)];
  const seen = new Set<string>();
  for (const op of ops) {
    if (typeof op !== 'string' || !(allowed as readonly string[]).includes(op)) {
      throw kvErrors.badParameter(`Invalid key operation '${String(op)}' for key type ${kty}.`);
    }
    if (seen.has(op)) throw kvErrors.badParameter(`Key operation '${op}' is listed twice in key_ops.`);
    seen.add(op);
  }
  return [...seen] as KeyOperation[];
}

/** Generates new material for a key of `kty` and `size` bits (sizes already validated by the caller). */
export async function generateMaterial(kty: KeyType, size: number): Promise<StoredMaterial> {
  if (familyOf(kty) === 'oct') return { k: randomBytes(size / 8).toString('base64url') };
  const { privateKey } = await generateKeyPairAsync('rsa', { modulusLength: size, publicExponent: 0x10001 });
  return rsaMaterialFromJwk(privateKey.export({ format: 'jwk' }));
}

/** Pulls the eight RSA private JWK members out of a node JWK export or an imported JWK. */
function rsaMaterialFromJwk(jwk: Record<string, unknown>): StoredMaterial {
  const members = ['n', 'e', 'd', 'p', 'q', 'dp', 'dq', 'qi'] as const;
  const out: Record<string, string> = {};
  for (const m of members) {
    const decoded = decodeBase64url(jwk[m]);
    if (decoded === undefined || decoded.length === 0) {
      throw kvErrors.badParameter(
        `RSA private keys must include n, e, d, p, q, dp, dq and qi as base64url; '${m}' is missing or invalid.`,
      );
    }
    // Re-encode so the stored form is canonical whatever the caller sent.
    out[m] = decoded.toString('base64url');
  }
  return out as unknown as StoredMaterial;
}

/**
 * Validates an imported JWK (BYOK) and returns its type, size and material. RSA needs the full private
 * key (CRT members included) of 2048, 3072 or 4096 bits, and is checked for consistency with a test
 * encryption; oct needs a 16, 24 or 32-byte k. `hsm` is the request's Hsm flag.
 */
export function materialFromImport(
  jwk: Record<string, unknown>,
  hsm: boolean,
): { kty: KeyType; size: number; material: StoredMaterial } {
  const kty = jwk['kty'];
  if (kty === 'RSA' || kty === 'RSA-HSM') {
    const material = rsaMaterialFromJwk(jwk);
    let loaded: LoadedKey;
    try {
      loaded = loadMaterial('RSA', material);
    } catch {
      throw kvErrors.badParameter('The RSA key in the request is not a valid RSA private key.');
    }
    if (loaded.family !== 'RSA' || !RSA_KEY_SIZES.includes(loaded.size)) {
      throw kvErrors.badParameter(
        `RSA keys must be 2048, 3072 or 4096 bits; this key has ${loaded.size} bits.`,
      );
    }
    // OpenSSL decrypts with the CRT members and never looks at d, so a key whose members disagree
    // imports and even decrypts; check the algebra instead (what RSA_check_key does).
    if (!rsaConsistent(material))
      throw kvErrors.badParameter('The RSA key parameters in the request are inconsistent.');
    return { kty: hsm || kty === 'RSA-HSM' ? 'RSA-HSM' : 'RSA', size: loaded.size, material };
  }
  if (kty === 'oct' || kty === 'oct-HSM') {
    const k = decodeBase64url(jwk['k']);
    if (k === undefined || !OCT_KEY_SIZES.includes(k.length * 8)) {
      throw kvErrors.badParameter('Symmetric keys must have a base64url k of 16, 24 or 32 bytes.');
    }
    // Only Managed HSM holds symmetric keys, so every oct key here is oct-HSM.
    return { kty: 'oct-HSM', size: k.length * 8, material: { k: k.toString('base64url') } };
  }
  throw kvErrors.badParameter(`Key type '${String(kty)}' cannot be imported; use RSA, RSA-HSM or oct-HSM.`);
}

const big = (b64url: string): bigint =>
  BigInt(`0x${Buffer.from(b64url, 'base64url').toString('hex') || '0'}`);

function gcd(a: bigint, b: bigint): bigint {
  let [x, y] = [a, b];
  while (y !== 0n) [x, y] = [y, x % y];
  return x;
}

/**
 * True when RSA private members agree: n = p·q, d·e ≡ 1 (mod lcm(p−1, q−1)), dp = d mod (p−1),
 * dq = d mod (q−1) and qi·q ≡ 1 (mod p).
 */
export function rsaConsistent(material: StoredMaterial): boolean {
  if (!('n' in material)) return false;
  const [n, e, d, p, q, dp, dq, qi] = [
    material.n,
    material.e,
    material.d,
    material.p,
    material.q,
    material.dp,
    material.dq,
    material.qi,
  ].map(big) as [bigint, bigint, bigint, bigint, bigint, bigint, bigint, bigint];
  if (p <= 1n || q <= 1n || n !== p * q) return false;
  const lambda = ((p - 1n) * (q - 1n)) / gcd(p - 1n, q - 1n);
  return (d * e) % lambda === 1n && dp === d % (p - 1n) && dq === d % (q - 1n) && (qi * q) % p === 1n;
}

/**
 * Turns stored material into working key objects. Throws a plain Error saying what is wrong (the store
 * turns it into a message naming the file); callers handling requests map it to BadParameter.
 */
export function loadMaterial(family: 'RSA' | 'oct', material: StoredMaterial): LoadedKey {
  if (family === 'oct') {
    if (!('k' in material)) throw new Error('symmetric key material has no k');
    const secret = decodeBase64url(material.k);
    if (secret === undefined || !OCT_KEY_SIZES.includes(secret.length * 8)) {
      throw new Error('k must be 16, 24 or 32 bytes of base64url');
    }
    return { family: 'oct', size: secret.length * 8, secret };
  }
  if (!('n' in material)) throw new Error('RSA key material has no n');
  const privateKey = createPrivateKey({ key: { kty: 'RSA', ...material }, format: 'jwk' });
  const size = privateKey.asymmetricKeyDetails?.modulusLength ?? 0;
  return { family: 'RSA', size, privateKey, publicKey: createPublicKey(privateKey) };
}

/** The public JWK members of a key (n and e for RSA; nothing for symmetric keys, as Key Vault does). */
export function publicJwk(key: LoadedKey): { n?: string; e?: string } {
  if (key.family === 'oct') return {};
  const jwk = key.publicKey.export({ format: 'jwk' });
  return { n: String(jwk.n), e: String(jwk.e) };
}

/** OAEP hash by JOSE algorithm name; the MGF1 hash is the same (node uses oaepHash for both). */
const RSA_ALGORITHMS: Record<string, { padding: number; oaepHash?: string }> = {
  'RSA-OAEP': { padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha1' },
  'RSA-OAEP-256': { padding: cryptoConstants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' },
  RSA1_5: { padding: cryptoConstants.RSA_PKCS1_PADDING },
};

/**
 * Runs one crypto operation. Failures the caller caused (wrong algorithm for the key, bad sizes, a
 * ciphertext that does not decrypt) throw BadParameter; no failure reveals more than "did not decrypt".
 */
export function runCrypto(op: CryptoOperation, key: LoadedKey, params: CryptoParams): CryptoResult {
  return key.family === 'RSA' ? runRsa(op, key, params) : runAes(op, key, params);
}

function runRsa(
  op: CryptoOperation,
  key: Extract<LoadedKey, { family: 'RSA' }>,
  p: CryptoParams,
): CryptoResult {
  const alg = RSA_ALGORITHMS[p.alg];
  if (alg === undefined) throw kvErrors.badParameter(`Algorithm ${p.alg} is not valid for an RSA key.`);
  const options = { padding: alg.padding, ...(alg.oaepHash === undefined ? {} : { oaepHash: alg.oaepHash }) };
  if (op === 'encrypt' || op === 'wrapKey') {
    try {
      return { value: publicEncrypt({ key: key.publicKey, ...options }, p.value) };
    } catch {
      throw kvErrors.badParameter(`The value is too long for ${p.alg} with a ${key.size}-bit key.`);
    }
  }
  if (p.alg === 'RSA1_5') return { value: rsa15Decrypt(key.privateKey, p.value) };
  try {
    return { value: privateDecrypt({ key: key.privateKey, ...options }, p.value) };
  } catch {
    throw kvErrors.badParameter(`The value could not be decrypted with this key using ${p.alg}.`);
  }
}

/**
 * PKCS#1 v1.5 decryption. Node 20 refuses RSA_PKCS1_PADDING in privateDecrypt (CVE-2023-46809, the
 * Marvin timing attack) unless started with --security-revert=CVE-2023-46809, or unless its OpenSSL
 * offers implicit rejection. We do not hand-roll the unpadding (that would reintroduce the oracle the
 * fix removed); when Node refuses, the request fails with a BadParameter that says why.
 */
function rsa15Decrypt(privateKey: KeyObject, value: Buffer): Buffer {
  try {
    return privateDecrypt({ key: privateKey, padding: cryptoConstants.RSA_PKCS1_PADDING }, value);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ERR_INVALID_ARG_VALUE') {
      throw kvErrors.badParameter(
        'RSA1_5 decryption is not available in this dev vault: this Node.js refuses PKCS#1 v1.5 private ' +
          'decryption (CVE-2023-46809). Use RSA-OAEP-256, or run the vault with --security-revert=CVE-2023-46809.',
      );
    }
    throw kvErrors.badParameter('The value could not be decrypted with this key using RSA1_5.');
  }
}

/** Tells whether this Node performs RSA1_5 decryption (see rsa15Decrypt). */
export function rsa15DecryptAvailable(key: KeyObject): boolean {
  const ct = publicEncrypt({ key, padding: cryptoConstants.RSA_PKCS1_PADDING }, Buffer.alloc(16));
  try {
    privateDecrypt({ key, padding: cryptoConstants.RSA_PKCS1_PADDING }, ct);
    return true;
  } catch {
    return false;
  }
}

const AES = /^A(128|192|256)(KW|GCM|CBC|CBCPAD)$/;

function runAes(
  op: CryptoOperation,
  key: Extract<LoadedKey, { family: 'oct' }>,
  p: CryptoParams,
): CryptoResult {
  const m = AES.exec(p.alg);
  const wrapping = op === 'wrapKey' || op === 'unwrapKey';
  if (m === null || (m[2] === 'KW') !== wrapping) {
    throw kvErrors.badParameter(`Algorithm ${p.alg} is not valid for ${op} with a symmetric key.`);
  }
  if (Number(m[1]) !== key.size) {
    throw kvErrors.badParameter(`Algorithm ${p.alg} needs a ${m[1]}-bit key; this key has ${key.size} bits.`);
  }
  const mode = m[2] as 'KW' | 'GCM' | 'CBC' | 'CBCPAD';
  if (mode === 'KW') {
    if (op === 'wrapKey') {
      try {
        return { value: aesKeyWrap(key.secret, p.value) };
      } catch {
        throw kvErrors.badParameter('The key to wrap must be at least 16 bytes and a multiple of 8 bytes.');
      }
    }
    const unwrapped = aesKeyUnwrap(key.secret, p.value);
    if (unwrapped === undefined)
      throw kvErrors.badParameter(`The value could not be unwrapped using ${p.alg}.`);
    return { value: unwrapped };
  }
  if (mode === 'GCM') return aesGcm(op, key, p);
  return aesCbc(op, key, p, mode === 'CBCPAD');
}

function aesGcm(
  op: CryptoOperation,
  key: Extract<LoadedKey, { family: 'oct' }>,
  p: CryptoParams,
): CryptoResult {
  const cipherName = key.size === 128 ? 'aes-128-gcm' : key.size === 192 ? 'aes-192-gcm' : 'aes-256-gcm';
  if (op === 'encrypt') {
    // Managed HSM chooses the GCM nonce itself; a caller-chosen IV is refused rather than trusted.
    if (p.iv !== undefined)
      throw kvErrors.badParameter('The iv for AES-GCM is generated by the service; omit it.');
    const iv = randomBytes(12);
    const cipher = createCipheriv(cipherName, key.secret, iv, { authTagLength: 16 });
    if (p.aad !== undefined) cipher.setAAD(p.aad);
    const value = Buffer.concat([cipher.update(p.value), cipher.final()]);
    return { value, iv, tag: cipher.getAuthTag(), ...(p.aad === undefined ? {} : { aad: p.aad }) };
  }
  if (p.iv?.length !== 12 || p.tag?.length !== 16) {
    throw kvErrors.badParameter('AES-GCM decryption needs the 12-byte iv and 16-byte tag from encryption.');
  }
  try {
    const decipher = createDecipheriv(cipherName, key.secret, p.iv, { authTagLength: 16 });
    if (p.aad !== undefined) decipher.setAAD(p.aad);
    decipher.setAuthTag(p.tag);
    return { value: Buffer.concat([decipher.update(p.value), decipher.final()]) };
  } catch {
    throw kvErrors.badParameter(`The value could not be decrypted using ${p.alg}.`);
  }
}

function aesCbc(
  op: CryptoOperation,
  key: Extract<LoadedKey, { family: 'oct' }>,
  p: CryptoParams,
  pad: boolean,
): CryptoResult {
  if (p.iv?.length !== 16) throw kvErrors.badParameter('AES-CBC needs a 16-byte iv.');
  if (!pad && p.value.length % 16 !== 0) {
    throw kvErrors.badParameter(
      'AES-CBC without padding needs a multiple of 16 bytes; use the CBCPAD algorithm.',
    );
  }
  const name = `aes-${key.size}-cbc`;
  try {
    const c =
      op === 'encrypt' ? createCipheriv(name, key.secret, p.iv) : createDecipheriv(name, key.secret, p.iv);
    c.setAutoPadding(pad);
    const value = Buffer.concat([c.update(p.value), c.final()]);
    return op === 'encrypt' ? { value, iv: p.iv } : { value };
  } catch (err) {
    if (err instanceof KvError) throw err;
    throw kvErrors.badParameter(`The value could not be decrypted using ${p.alg}.`);
  }
}
