/**
 * The dev vault's TLS material: a private CA and a server certificate it signs, made on first start with
 * @peculiar/x509 on node's WebCrypto and kept in `<dataDir>/tls/`:
 *
 *   ca.pem            CA certificate (what clients trust; mode 0644)
 *   ca-key.pem        CA private key (PKCS#8, mode 0600)
 *   server.pem        server certificate (mode 0644)
 *   server-key.pem    server private key (PKCS#8, mode 0600)
 *
 * Keys are ECDSA P-256 (fast to make, accepted by every TLS client here). The server certificate names
 * DNS localhost, DNS sealbox.localhost, DNS sealbox.managedhsm.localhost, IP 127.0.0.1 and IP ::1. Later starts reuse the files, so a
 * client that trusts ca.pem keeps working; a server certificate that is near expiry or lacks a required
 * name is re-issued under the same CA. Unreadable or inconsistent files stop the start with an error
 * naming the file: they are never silently replaced, because a new CA would break every client that
 * trusts the old one.
 */
import 'reflect-metadata';
import { createPrivateKey, webcrypto, X509Certificate } from 'node:crypto';
import { access, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';
import { atomicWriteFile, ensurePrivateDir } from './fsutil';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** The extra DNS name under localhost, for clients that keep the SDK's challenge-resource check on. */
export const VAULT_SUBDOMAIN = 'sealbox.localhost';

/** The Managed HSM–shaped name under localhost (challenge resource https://managedhsm.localhost). */
export const MANAGED_HSM_SUBDOMAIN = 'sealbox.managedhsm.localhost';

const DNS_NAMES = ['localhost', VAULT_SUBDOMAIN, MANAGED_HSM_SUBDOMAIN];
const IP_ADDRESSES = ['127.0.0.1', '::1'];
const ECDSA = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;

/** PEM material the HTTPS server and its clients need. */
export interface DevVaultTls {
  readonly caFile: string;
  readonly caPem: string;
  readonly certPem: string;
  readonly keyPem: string;
}

/** A TLS file that cannot be used, and why. */
export class DevVaultTlsError extends Error {
  override readonly name = 'DevVaultTlsError';
  constructor(file: string, problem: string) {
    super(
      `dev vault TLS material is unusable: ${file}: ${problem}. Remove the tls/ directory to make a new CA ` +
        '(clients must then trust the new ca.pem).',
    );
  }
}

/** Loads the TLS material from `<dataDir>/tls`, creating or renewing it as the module comment says. */
export async function loadOrCreateTls(dataDir: string, now: Date = new Date()): Promise<DevVaultTls> {
  const dir = join(dataDir, 'tls');
  await ensurePrivateDir(dir);
  const files = {
    ca: join(dir, 'ca.pem'),
    caKey: join(dir, 'ca-key.pem'),
    server: join(dir, 'server.pem'),
    serverKey: join(dir, 'server-key.pem'),
  };
  const present = await Promise.all(Object.values(files).map(exists));
  if (present.every((p) => !p)) {
    await createAll(files, now);
  } else if (!present[0] || !present[1]) {
    throw new DevVaultTlsError(present[0] ? files.caKey : files.ca, 'missing while other TLS files exist');
  }
  const caPem = await readFile(files.ca, 'utf8');
  const caKeyPem = await readFile(files.caKey, 'utf8');
  const ca = parseCertificate(files.ca, caPem);
  checkKeyMatches(files.caKey, caKeyPem, ca);
  if (!ca.ca) throw new DevVaultTlsError(files.ca, 'not a CA certificate');
  if (Date.parse(ca.validTo) <= now.getTime())
    throw new DevVaultTlsError(files.ca, `expired on ${ca.validTo}`);

  if (!(await serverUsable(files, ca, now))) {
    await issueServer(files, caPem, caKeyPem, now);
  }
  const certPem = await readFile(files.server, 'utf8');
  const keyPem = await readFile(files.serverKey, 'utf8');
  return { caFile: files.ca, caPem, certPem, keyPem };
}

async function exists(file: string): Promise<boolean> {
  try {
    await access(file);
    return true;
  } catch {
    return false;
  }
}

function parseCertificate(file: string, pem: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (err) {
    throw new DevVaultTlsError(file, `not a PEM certificate (${(err as Error).message})`);
  }
}

function checkKeyMatches(file: string, keyPem: string, cert: X509Certificate): void {
  let matches: boolean;
  try {
    matches = cert.checkPrivateKey(createPrivateKey(keyPem));
  } catch (err) {
    throw new DevVaultTlsError(file, `not a PEM private key (${(err as Error).message})`);
  }
  if (!matches) throw new DevVaultTlsError(file, 'does not match its certificate');
}

/**
 * True when the server certificate and key exist, match, were issued by `ca`, name every required host
 * and stay valid for at least a day. A missing or stale server certificate is re-issued; a present but
 * unreadable one is an error.
 */
async function serverUsable(files: Record<'server' | 'serverKey', string>, ca: X509Certificate, now: Date) {
  const [hasCert, hasKey] = await Promise.all([exists(files.server), exists(files.serverKey)]);
  if (!hasCert && !hasKey) return false;
  if (!hasCert || !hasKey) throw new DevVaultTlsError(hasCert ? files.serverKey : files.server, 'missing');
  const cert = parseCertificate(files.server, await readFile(files.server, 'utf8'));
  checkKeyMatches(files.serverKey, await readFile(files.serverKey, 'utf8'), cert);
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw new DevVaultTlsError(files.server, 'was not issued by the CA in ca.pem');
  }
  const names = cert.subjectAltName ?? '';
  const required = [...DNS_NAMES.map((d) => `DNS:${d}`), 'IP Address:127.0.0.1'];
  const namesAll =
    required.every((n) => names.split(', ').includes(n)) && /IP Address:(0:){7}1|::1/.test(names);
  return namesAll && Date.parse(cert.validTo) - now.getTime() > DAY_MS;
}

async function pemOfPrivateKey(key: webcrypto.CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

async function createAll(files: Record<'ca' | 'caKey' | 'server' | 'serverKey', string>, now: Date) {
  const keys = (await webcrypto.subtle.generateKey(ECDSA, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    name: 'CN=sealbox dev vault CA',
    keys,
    notBefore: new Date(now.getTime() - DAY_MS),
    notAfter: new Date(now.getTime() + 3650 * DAY_MS),
    signingAlgorithm: ECDSA,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  // Key first: a CA certificate on disk without its key would be an error on the next start.
  await atomicWriteFile(files.caKey, await pemOfPrivateKey(keys.privateKey), 0o600);
  await atomicWriteFile(files.ca, ca.toString('pem'), 0o644);
}

async function issueServer(
  files: Record<'server' | 'serverKey', string>,
  caPem: string,
  caKeyPem: string,
  now: Date,
): Promise<void> {
  const ca = new x509.X509Certificate(caPem);
  const caKey = await webcrypto.subtle.importKey(
    'pkcs8',
    x509.PemConverter.decodeFirst(caKeyPem),
    ECDSA,
    false,
    ['sign'],
  );
  const keys = (await webcrypto.subtle.generateKey(ECDSA, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    subject: 'CN=localhost',
    issuer: ca.subject,
    publicKey: keys.publicKey,
    signingKey: caKey,
    notBefore: new Date(now.getTime() - DAY_MS),
    notAfter: new Date(now.getTime() + 825 * DAY_MS),
    signingAlgorithm: ECDSA,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([
        ...DNS_NAMES.map((value) => ({ type: 'dns' as const, value })),
        ...IP_ADDRESSES.map((value) => ({ type: 'ip' as const, value })),
      ]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca),
    ],
  });
  await atomicWriteFile(files.serverKey, await pemOfPrivateKey(keys.privateKey), 0o600);
  await atomicWriteFile(files.server, cert.toString('pem'), 0o644);
}
