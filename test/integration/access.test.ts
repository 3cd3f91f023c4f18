/**
 * Access control end to end: a real sealbox, real grpc-js clients over a real Unix socket, a real TLS
 * (mTLS) TCP listener and the admin socket. Certificates are made at test time with @peculiar/x509: a
 * CA, a server certificate for localhost/127.0.0.1, client certificates "billing" (URI SAN
 * spiffe://sealbox.test/billing), "ops" (CN=ops), "stranger" (CN=stranger, no identity), "both" (matches
 * billing and ops) and "rogue" (another CA).
 *
 * Every refusal is checked for its gRPC status, its `sealbox-error-code` trailer, and a message that
 * names the identity (or what the caller presented) and what to configure. That a refused caller caused
 * no unwrap is checked on the KEK audit log (one line per provider call, naming the caller's identity)
 * and the DEK cache's counters.
 */
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { randomBytes, webcrypto } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { type AddressInfo, connect, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  type ChannelCredentials,
  type ChannelOptions,
  credentials,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import * as x509 from '@peculiar/x509';
import { type EnvelopeClient, loadApi } from '../../src/api/proto';
import {
  CLIENT_CHANNEL_OPTIONS,
  decrypt,
  decryptStream,
  encrypt,
  encryptStream,
  errorCode,
  rewrap as rewrapCall,
  rewrapStream as rewrapStreamCall,
} from '../../src/client/client';
import { type ConfigInput, mergeConfigInput, validateConfig } from '../../src/config/config';
import type { AdminClient } from '../../src/gen/sealbox/v1/Admin';
import type { EncryptStreamResponse__Output } from '../../src/gen/sealbox/v1/EncryptStreamResponse';
import type { KeyStatusList__Output } from '../../src/gen/sealbox/v1/KeyStatusList';
import type { RewrapRequest } from '../../src/gen/sealbox/v1/RewrapRequest';
import { createLocalKeyFile } from '../../src/kek/local';
import { createLogger } from '../../src/log/logger';
import { type Sealbox, startSealbox } from '../../src/main';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ECDSA = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const DAY_MS = 86_400_000;
const BILLING_URI = 'spiffe://sealbox.test/billing';
/** Every call gets a deadline, so a hang fails one test instead of the whole file. */
const deadline = () => ({ deadline: Date.now() + 5000 });
/** The client's Rewrap helpers, with this file's deadline on every call. */
const rewrap = (client: EnvelopeClient, request: RewrapRequest) => rewrapCall(client, request, deadline());
const rewrapStream = (client: EnvelopeClient, requests: RewrapRequest[]) =>
  rewrapStreamCall(client, requests, deadline());

// ---------------------------------------------------------------------------------------------------
// Certificates

interface Issuer {
  readonly cert: x509.X509Certificate;
  readonly keys: webcrypto.CryptoKeyPair;
  readonly pem: string;
}

/** PEM certificate and key. */
interface Pem {
  readonly cert: string;
  readonly key: string;
}

async function newKeys(): Promise<webcrypto.CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(ECDSA, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
}

async function pemOfKey(key: webcrypto.CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await webcrypto.subtle.exportKey('pkcs8', key), 'PRIVATE KEY');
}

async function makeCa(name: string): Promise<Issuer> {
  const keys = await newKeys();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${name}`,
    keys,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + 30 * DAY_MS),
    signingAlgorithm: ECDSA,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys, pem: cert.toString('pem') };
}

async function issue(
  ca: Issuer,
  subject: string,
  usage: 'server' | 'client',
  names: x509.JsonGeneralName[] = [],
): Promise<Pem> {
  const keys = await newKeys();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    subject,
    issuer: ca.cert.subject,
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    serialNumber: randomBytes(8)
      .toString('hex')
      .replace(/^[89a-f]/, '1'),
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + 30 * DAY_MS),
    signingAlgorithm: ECDSA,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([
        usage === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth,
      ]),
      ...(names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return { cert: cert.toString('pem'), key: await pemOfKey(keys.privateKey) };
}

// ---------------------------------------------------------------------------------------------------
// Sealbox and clients

interface Box {
  readonly sealbox: Sealbox;
  readonly dir: string;
  readonly socket: string;
  readonly adminSocket: string;
  /** Every log line, parsed (the audit lines among them). */
  readonly logs: Array<Record<string, unknown>>;
  /** The TCP listener's "host:port", if any. */
  readonly tcp: string | undefined;
  close(): Promise<void>;
}

let root: string;
let ca: Issuer;
let files: { ca: string; serverCert: string; serverKey: string };
const clientCerts: Record<'billing' | 'ops' | 'stranger' | 'both' | 'rogue', Pem> = {} as never;

/**
 * Starts sealbox with local keys "orders" and "payments", the envelope socket and the admin socket in
 * a fresh directory; `overrides` are merged over that (objects deeply, arrays replaced).
 */
async function startBox(overrides: Record<string, unknown>): Promise<Box> {
  const dir = mkdtempSync(join(root, 'box-'));
  for (const alias of ['orders', 'payments']) createLocalKeyFile(join(dir, `${alias}.json`), alias);
  const socket = join(dir, 'sealbox.sock');
  const adminSocket = join(dir, 'admin.sock');
  const config = validateConfig(
    mergeConfigInput(
      {
        dataDir: dir,
        listen: { socket, adminSocket },
        keys: {
          orders: { provider: 'local', file: join(dir, 'orders.json') },
          payments: { provider: 'local', file: join(dir, 'payments.json') },
        },
        pool: { threads: 1 },
        log: { level: 'info' },
        shutdown: { graceMs: 1000 },
      },
      overrides,
    ) as ConfigInput,
  );
  const logs: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line));
      callback();
    },
  });
  const sealbox = await startSealbox(config, createLogger('info', sink));
  return {
    sealbox,
    dir,
    socket,
    adminSocket,
    logs,
    tcp: sealbox.server.addresses.find((a) => !a.startsWith('unix:')),
    async close() {
      await sealbox.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const closers: Array<{ close(): void }> = [];

/** An Envelope client; `tls` names the client certificate to present ("none": TLS without one). */
function envelopeClient(target: string, tls?: keyof typeof clientCerts | 'none'): EnvelopeClient {
  const { Envelope } = loadApi().sealbox.sealbox.v1;
  const client = new Envelope(target, channelCredentials(tls), {
    ...CLIENT_CHANNEL_OPTIONS,
    ...tlsName(tls),
  });
  closers.push(client);
  return client;
}

function adminClient(target: string, tls?: keyof typeof clientCerts | 'none'): AdminClient {
  const { Admin } = loadApi().sealbox.sealbox.v1;
  const client = new Admin(target, channelCredentials(tls), tlsName(tls));
  closers.push(client);
  return client;
}

/** Targets are 127.0.0.1:port; the name checked is the certificate's DNS name (no SNI with an IP). */
const tlsName = (tls?: string): ChannelOptions =>
  tls ? { 'grpc.ssl_target_name_override': 'localhost' } : {};

function channelCredentials(tls?: keyof typeof clientCerts | 'none'): ChannelCredentials {
  if (tls === undefined) return credentials.createInsecure();
  const caPem = Buffer.from(ca.pem);
  if (tls === 'none') return credentials.createSsl(caPem);
  const { cert, key } = clientCerts[tls];
  return credentials.createSsl(caPem, Buffer.from(key), Buffer.from(cert));
}

function keyStatus(admin: AdminClient): Promise<KeyStatusList__Output> {
  return new Promise((resolve, reject) =>
    admin.GetKeyStatus({}, deadline(), (err, res) => (err || !res ? reject(err) : resolve(res))),
  );
}

function flushCache(admin: AdminClient): Promise<{ encryptDeks: number; decryptDeks: number }> {
  return new Promise((resolve, reject) =>
    admin.FlushCache({}, deadline(), (err, res) => (err || !res ? reject(err) : resolve(res))),
  );
}

interface Refusal {
  readonly code: number;
  readonly details: string;
  readonly sealbox: string | undefined;
  /** Stream calls: bytes received before the error. */
  readonly received: Buffer | undefined;
}

/** The error a call must fail with. */
async function refusal(call: Promise<unknown>): Promise<Refusal> {
  const err = await call.then(
    () => assert.fail('the call must be refused'),
    (e: unknown) => e as ServiceError & { received?: Buffer },
  );
  return { code: err.code, details: err.details, sealbox: errorCode(err), received: err.received };
}

/** Asserts a refusal's status, trailer and message. */
async function refused(
  call: Promise<unknown>,
  code: status,
  sealboxCode: string | undefined,
  ...messages: RegExp[]
): Promise<Refusal> {
  const r = await refusal(call);
  assert.equal(r.code, code, `status ${r.code} (${r.details})`);
  assert.equal(r.sealbox, sealboxCode, `sealbox-error-code of: ${r.details}`);
  for (const m of messages) assert.match(r.details, m);
  return r;
}

const denied = (call: Promise<unknown>, ...messages: RegExp[]) =>
  refused(call, status.PERMISSION_DENIED, 'ACCESS_DENIED', ...messages);

/** Audit lines of KEK operations, optionally only one operation. */
function audits(box: Box, operation?: string): Array<Record<string, unknown>> {
  return box.logs.filter((l) => l.audit === 'kek' && (!operation || l.operation === operation));
}

async function until(what: string, condition: () => boolean, timeoutMs = 3000): Promise<void> {
  const started = Date.now();
  while (!condition()) {
    if (Date.now() - started > timeoutMs) assert.fail(`timed out waiting for: ${what}`);
    await sleep(10);
  }
}

/** An EncryptStream that has been admitted (its metadata arrived) and is held open. */
interface OpenStream {
  readonly call: ReturnType<EnvelopeClient['EncryptStream']>;
  /** Resolves with the ciphertext bytes when the stream ends, rejects with its error. */
  readonly done: Promise<Buffer>;
}

/** Opens an EncryptStream and waits for its metadata (it holds a stream slot from then on). */
async function openStream(client: EnvelopeClient, keyAlias: string): Promise<OpenStream> {
  const call = client.EncryptStream();
  const parts: Buffer[] = [];
  let admitted!: () => void;
  const started = new Promise<void>((resolve) => {
    admitted = resolve;
  });
  const done = new Promise<Buffer>((resolve, reject) => {
    call.on('data', (m: EncryptStreamResponse__Output) => {
      if (m.metadata) admitted();
      else if (m.data) parts.push(m.data);
    });
    call.on('error', reject);
    call.on('end', () => resolve(Buffer.concat(parts)));
  });
  call.write({ init: { keyAlias, context: {}, chunkSize: 0 } });
  await Promise.race([started, done]);
  return { call, done };
}

/**
 * A group for the envelope socket. As root: a group other than the process's, by name (gid 65534 —
 * nogroup or nobody — when /etc/group has it), so the name lookup and the chown are both exercised.
 * Otherwise chown can only choose the process's own group: its gid.
 */
function socketGroup(): { name?: string; gid: number } {
  const own = process.getgid!();
  if (process.getuid!() !== 0) return { gid: own };
  const groups = readFileSync('/etc/group', 'utf8')
    .split('\n')
    .map((line) => line.split(':'))
    .filter((f) => f.length >= 3 && /^\d+$/.test(f[2]!) && Number(f[2]) !== own)
    .map((f) => ({ name: f[0]!, gid: Number(f[2]) }));
  const chosen = groups.find((g) => g.gid === 65534) ?? groups[0];
  assert.ok(chosen, '/etc/group lists a group other than the process group');
  return chosen;
}

// ---------------------------------------------------------------------------------------------------

before(async () => {
  root = mkdtempSync(join(tmpdir(), 'sealbox-access-'));
  ca = await makeCa('sealbox test CA');
  const rogueCa = await makeCa('rogue CA');
  const server = await issue(ca, 'CN=localhost', 'server', [
    { type: 'dns', value: 'localhost' },
    { type: 'ip', value: '127.0.0.1' },
  ]);
  clientCerts.billing = await issue(ca, 'CN=billing-api', 'client', [{ type: 'url', value: BILLING_URI }]);
  clientCerts.ops = await issue(ca, 'CN=ops', 'client');
  clientCerts.stranger = await issue(ca, 'CN=stranger', 'client');
  clientCerts.both = await issue(ca, 'CN=ops', 'client', [{ type: 'url', value: BILLING_URI }]);
  clientCerts.rogue = await issue(rogueCa, 'CN=ops', 'client', [{ type: 'url', value: BILLING_URI }]);
  files = {
    ca: join(root, 'ca.pem'),
    serverCert: join(root, 'server.pem'),
    serverKey: join(root, 'server-key.pem'),
  };
  writeFileSync(files.ca, ca.pem);
  writeFileSync(files.serverCert, server.cert);
  writeFileSync(files.serverKey, server.key, { mode: 0o600 });
});

after(() => {
  for (const c of closers) c.close();
  rmSync(root, { recursive: true, force: true });
});

const tls = () => ({ certFile: files.serverCert, keyFile: files.serverKey, clientCaFile: files.ca });

describe('an explicit policy: app (socket), billing (URI SAN), ops (CN, admin), operator (admin socket)', {
  timeout: 30_000,
}, () => {
  let box: Box;
  let app: EnvelopeClient;
  let billing: EnvelopeClient;
  let ops: EnvelopeClient;
  /** Sealed by billing under payments, unary and streamed. */
  let paymentsCt: Buffer;
  let paymentsStreamCt: Buffer;
  /** Sealed by app under orders. */
  let ordersCt: Buffer;
  const secret = Buffer.from('card 4111 1111 1111 1111');
  const order = Buffer.from('order #42: 3 widgets');

  before(async () => {
    box = await startBox({
      listen: { tcp: { host: '127.0.0.1', port: 0, tls: tls() } },
      access: {
        identities: {
          app: { peers: ['socket'], keys: ['orders'], operations: ['encrypt', 'decrypt'] },
          billing: {
            certificates: [{ uri: BILLING_URI }],
            keys: ['payments'],
            operations: ['encrypt', 'decrypt', 'rewrap'],
          },
          ops: { certificates: [{ commonName: 'ops' }], admin: true },
          operator: { peers: ['admin-socket'], admin: true },
          // Unreachable with mTLS (every TCP caller presents a certificate); a certificate that matches
          // no rule must not fall back to it.
          tcp: { peers: ['tcp'], keys: ['orders'], operations: ['encrypt'] },
        },
      },
    });
    assert.ok(box.tcp, `a TCP address among ${box.sealbox.server.addresses.join(', ')}`);
    app = envelopeClient(`unix:${box.socket}`);
    billing = envelopeClient(box.tcp, 'billing');
    ops = envelopeClient(box.tcp, 'ops');
    paymentsCt = (await encrypt(billing, 'payments', secret)).ciphertext;
    paymentsStreamCt = (await encryptStream(billing, 'payments', [secret])).data;
    ordersCt = (await encrypt(app, 'orders', order)).ciphertext;
  });

  after(() => box.close());

  test('app on the socket: orders round-trips; payments is refused before any vault call', async () => {
    // Granted: orders, unary and streamed.
    assert.deepEqual((await decrypt(app, ordersCt)).plaintext, order);
    const streamed = await encryptStream(app, 'orders', [order.subarray(0, 5), order.subarray(5)]);
    assert.deepEqual((await decryptStream(app, [streamed.data])).data, order);

    // Encrypt under a key it is not granted.
    const what = [/identity "app" may not encrypt with key alias "payments"/, /access\.identities\.app/];
    await denied(encrypt(app, 'payments', secret), ...what);
    const s = await denied(encryptStream(app, 'payments', [secret]), ...what);
    assert.equal(s.received?.length, 0, 'no ciphertext bytes');

    // Decrypt a payments ciphertext: refused before the DEK is looked up, so nothing is unwrapped
    // (the cache is flushed first, so any lookup would have to unwrap).
    box.sealbox.flushCache();
    const cacheBefore = box.sealbox.stats().cache;
    const unwrapsBefore = audits(box, 'unwrapKey').length;
    const decryptWhat = [/identity "app" may not decrypt with key local:payments\//, /alias "payments"/];
    const d = await denied(decrypt(app, paymentsCt), ...decryptWhat);
    assert.equal(d.received, undefined);
    const ds = await denied(decryptStream(app, [paymentsStreamCt]), ...decryptWhat);
    assert.equal(ds.received?.length, 0, 'no plaintext bytes');
    const cacheAfter = box.sealbox.stats().cache;
    assert.deepEqual(cacheAfter.hits, cacheBefore.hits, 'the DEK cache was not asked');
    assert.deepEqual(cacheAfter.misses, cacheBefore.misses, 'the DEK cache was not asked');
    assert.deepEqual(cacheAfter.entries, { encrypt: 0, decrypt: 0 });
    assert.equal(audits(box, 'unwrapKey').length, unwrapsBefore, 'no unwrap for a refused caller');
    assert.equal(audits(box).filter((l) => l.identity === 'app' && l.alias === 'payments').length, 0);

    // The observable works: billing's decrypt of the same ciphertext unwraps once, audited as billing.
    assert.deepEqual((await decrypt(billing, paymentsCt)).plaintext, secret);
    const unwraps = audits(box, 'unwrapKey').slice(unwrapsBefore);
    assert.equal(unwraps.length, 1);
    assert.equal(unwraps[0]!.identity, 'billing');
    assert.equal(unwraps[0]!.alias, 'payments');
    assert.equal(unwraps[0]!.caller, 'Decrypt');

    // Rewrap: app has no rewrap grant, not even on orders.
    await denied(
      rewrap(app, { headerOrCiphertext: ordersCt }),
      /identity "app" may not rewrap with key local:orders\//,
      /access\.identities\.app \(keys and operations\)/,
    );
    // RewrapStream: admitted (a stream of items), each item refused in its own response.
    const { responses, error } = await rewrapStream(app, [
      { headerOrCiphertext: ordersCt },
      { headerOrCiphertext: paymentsCt },
      { headerOrCiphertext: ordersCt, keyAlias: 'payments' },
    ]);
    assert.equal(error, undefined, `stream error: ${error?.details}`);
    assert.equal(responses.length, 3);
    for (const [i, r] of responses.entries()) {
      assert.equal(r.errorCode, 'ACCESS_DENIED', `item ${i}: ${r.errorMessage}`);
      assert.match(r.errorMessage, /identity "app" may not rewrap/);
      assert.equal(r.header.length, 0);
      assert.equal(r.headerLengthBefore, 0);
      assert.equal(r.changed, false);
    }
    assert.equal(box.sealbox.stats().streamsOpen, 0);
  });

  test('billing over mTLS (URI SAN): payments for every operation; orders and Admin refused', async () => {
    assert.deepEqual((await decrypt(billing, paymentsCt)).plaintext, secret);
    assert.deepEqual((await decryptStream(billing, [paymentsStreamCt])).data, secret);
    const streamed = await encryptStream(billing, 'payments', [secret]);
    assert.deepEqual((await decrypt(billing, streamed.data)).plaintext, secret);

    // Already under payments' current version: verified and returned unchanged.
    const r = await rewrap(billing, { headerOrCiphertext: paymentsCt });
    assert.equal(r.changed, false);
    assert.equal(r.keyId, r.previousKeyId);
    assert.match(r.keyId, /^local:payments\//);
    const { responses, error } = await rewrapStream(billing, [
      { headerOrCiphertext: paymentsCt },
      { headerOrCiphertext: ordersCt },
    ]);
    assert.equal(error, undefined, `stream error: ${error?.details}`);
    assert.equal(responses[0]!.errorCode, '');
    assert.equal(responses[0]!.changed, false);
    assert.equal(responses[1]!.errorCode, 'ACCESS_DENIED');
    assert.match(responses[1]!.errorMessage, /identity "billing" may not rewrap with key local:orders\//);

    // orders: every operation refused, and moving payments data to orders too.
    const orders = [/identity "billing" may not (encrypt|decrypt|rewrap)/, /access\.identities\.billing/];
    await denied(encrypt(billing, 'orders', secret), ...orders);
    await denied(encryptStream(billing, 'orders', [secret]), ...orders);
    await denied(decrypt(billing, ordersCt), ...orders);
    const ds = await denied(decryptStream(billing, [ordersCt]), ...orders);
    assert.equal(ds.received?.length, 0);
    await denied(rewrap(billing, { headerOrCiphertext: ordersCt }), ...orders);
    await denied(
      rewrap(billing, { headerOrCiphertext: paymentsCt, keyAlias: 'orders' }),
      /identity "billing" may not rewrap with key alias "orders"/,
    );

    // Admin over TCP: billing is no admin.
    await denied(
      keyStatus(adminClient(box.tcp!, 'billing')),
      /identity "billing" may not call the Admin service/,
      /admin: true/,
    );
  });

  test('a vault call an Encrypt causes is audited with that call: method, peer and identity', async () => {
    // Flushed, so the next Encrypt under payments must wrap a fresh DEK (a blocking miss, in-band).
    box.sealbox.flushCache();
    const wrapsBefore = audits(box, 'wrapKey').length;
    assert.deepEqual(
      (await decrypt(billing, (await encrypt(billing, 'payments', secret)).ciphertext)).plaintext,
      secret,
    );
    const wraps = audits(box, 'wrapKey').slice(wrapsBefore);
    assert.equal(wraps.length, 1, JSON.stringify(wraps));
    assert.equal(wraps[0]!.caller, 'Encrypt');
    assert.equal(wraps[0]!.identity, 'billing');
    assert.equal(wraps[0]!.alias, 'payments');
    assert.equal(wraps[0]!.outcome, 'success');
    assert.equal(typeof wraps[0]!.peer, 'string');
    assert.notEqual(wraps[0]!.peer, '');

    // The same through a stream: its own method name, the same identity.
    box.sealbox.flushCache();
    await encryptStream(billing, 'payments', [secret]);
    const streamed = audits(box, 'wrapKey').slice(wrapsBefore + 1);
    assert.deepEqual(
      streamed.map((l) => [l.caller, l.identity, l.alias]),
      [['EncryptStream', 'billing', 'payments']],
    );
  });

  test('ops over mTLS (CN): Admin on the TCP listener; no key operations', async () => {
    const admin = adminClient(box.tcp!, 'ops');
    const status1 = await keyStatus(admin);
    assert.ok(
      status1.keys.some((k) => k.keyId.startsWith('local:payments/')),
      JSON.stringify(status1.keys.map((k) => k.keyId)),
    );
    const flushed = await flushCache(admin);
    assert.ok(flushed.encryptDeks >= 1, `flushed ${JSON.stringify(flushed)}`);
    assert.equal(box.sealbox.stats().cache.entries.encrypt, 0);

    await denied(
      encrypt(ops, 'orders', order),
      /identity "ops" may not encrypt with key alias "orders"/,
      /access\.identities\.ops/,
    );
    await denied(decrypt(ops, paymentsCt), /identity "ops" may not decrypt/);
    await denied(encryptStream(ops, 'payments', [order]), /identity "ops" may not encrypt/);
  });

  test('unknown and ambiguous certificates are refused; untrusted or missing ones never connect', async () => {
    const stranger = envelopeClient(box.tcp!, 'stranger');
    const unknown = [/client certificate \(CN=stranger\) is not an identity/, /add it to access\.identities/];
    await denied(encrypt(stranger, 'orders', order), ...unknown);
    await denied(encryptStream(stranger, 'orders', [order]), ...unknown);
    await denied(keyStatus(adminClient(box.tcp!, 'stranger')), ...unknown);

    // CN=ops and the billing URI: two identities, so neither.
    await denied(
      encrypt(envelopeClient(box.tcp!, 'both'), 'payments', order),
      /matches identities "billing" and "ops"/,
      /make the certificate rules in access\.identities distinct/,
    );
    await denied(keyStatus(adminClient(box.tcp!, 'both')), /matches identities "billing" and "ops"/);

    // Names that would match, from another CA; and no certificate at all: the handshake fails.
    for (const who of ['rogue', 'none'] as const) {
      const r = await refusal(encrypt(envelopeClient(box.tcp!, who), 'payments', order));
      assert.equal(r.code, status.UNAVAILABLE, `${who}: status ${r.code} (${r.details})`);
      assert.equal(r.sealbox, undefined, `${who}: no sealbox answered`);
      const a = await refusal(keyStatus(adminClient(box.tcp!, who)));
      assert.equal(a.code, status.UNAVAILABLE, `${who} Admin: status ${a.code} (${a.details})`);
    }
    // The TCP listener without TLS: no answer either.
    const plain = await refusal(encrypt(envelopeClient(box.tcp!), 'payments', order));
    assert.equal(plain.code, status.UNAVAILABLE, `plaintext: status ${plain.code} (${plain.details})`);
  });

  test('Admin: refused to app on the envelope socket, served to operator on the admin socket', async () => {
    await denied(
      keyStatus(adminClient(`unix:${box.socket}`)),
      /identity "app" may not call the Admin service/,
      /only identities with admin: true may/,
    );
    const operator = adminClient(`unix:${box.adminSocket}`);
    await encrypt(app, 'orders', order);
    const keys = await keyStatus(operator);
    assert.ok(keys.keys.some((k) => k.keyId.startsWith('local:orders/')));
    assert.equal((await flushCache(operator)).encryptDeks, 1);
  });
});

describe('a policy of certificate identities only, TLS on 0.0.0.0', { timeout: 30_000 }, () => {
  let box: Box;

  before(async () => {
    box = await startBox({
      listen: { tcp: { host: '0.0.0.0', port: 0, tls: tls() } },
      access: {
        identities: {
          billing: { certificates: [{ uri: BILLING_URI }], keys: ['payments'], operations: ['encrypt'] },
        },
      },
    });
  });

  after(() => box.close());

  test('serves mTLS on a non-loopback bind; plaintext there is a config error', async () => {
    assert.match(box.tcp!, /^0\.0\.0\.0:\d+$/);
    const port = box.tcp!.split(':')[1];
    const billing = envelopeClient(`127.0.0.1:${port}`, 'billing');
    const { ciphertext } = await encrypt(billing, 'payments', Buffer.from('x'));
    assert.ok(ciphertext.length > 1);
    const plain = await refusal(encrypt(envelopeClient(`127.0.0.1:${port}`), 'payments', Buffer.from('x')));
    assert.equal(plain.code, status.UNAVAILABLE);

    assert.throws(
      () => validateConfig({ listen: { socket: null, tcp: { host: '0.0.0.0', port: 0 } } }),
      /listen\.tcp\.host is not a loopback address/,
    );
  });

  test('callers that are no identity are refused: the envelope socket and the admin socket', async () => {
    await denied(
      encrypt(envelopeClient(`unix:${box.socket}`), 'payments', Buffer.from('x')),
      /a caller on the envelope socket is not an identity sealbox knows/,
      /access\.identities \(peers or certificates\)/,
    );
    await denied(
      encryptStream(envelopeClient(`unix:${box.socket}`), 'payments', [Buffer.from('x')]),
      /a caller on the envelope socket is not an identity/,
    );
    await denied(
      keyStatus(adminClient(`unix:${box.adminSocket}`)),
      /a caller on the admin socket is not an identity sealbox knows/,
    );
  });
});

describe('the default policy (no access section)', { timeout: 30_000 }, () => {
  let box: Box;
  const group = socketGroup();
  const expectedGid = group.gid;

  before(async () => {
    box = await startBox({
      listen: { socketMode: 0o660, socketGroup: group.name ?? group.gid, adminSocketMode: 0o600 },
      stream: { maxConcurrentStreams: 3 },
    });
  });

  after(() => box.close());

  test('socket callers use every key; Admin only on the admin socket', async () => {
    const client = envelopeClient(`unix:${box.socket}`);
    for (const alias of ['orders', 'payments']) {
      const data = Buffer.from(`for ${alias}`);
      assert.deepEqual(
        (await decrypt(client, (await encrypt(client, alias, data)).ciphertext)).plaintext,
        data,
      );
      const s = await encryptStream(client, alias, [data]);
      assert.deepEqual((await decryptStream(client, [s.data])).data, data);
    }
    const r = await rewrap(client, {
      headerOrCiphertext: (await encrypt(client, 'orders', Buffer.from('r'))).ciphertext,
      keyAlias: 'payments',
    });
    assert.equal(r.changed, true);
    assert.match(r.keyId, /^local:payments\//);

    await denied(
      keyStatus(adminClient(`unix:${box.socket}`)),
      /identity "default" may not call the Admin service/,
      /listen\.adminSocket/,
    );
    assert.ok((await keyStatus(adminClient(`unix:${box.adminSocket}`))).keys.length >= 2);
  });

  test('socket files get the configured mode and group', () => {
    const socket = statSync(box.socket);
    assert.equal(socket.mode & 0o777, 0o660);
    assert.equal(socket.gid, expectedGid);
    const admin = statSync(box.adminSocket);
    assert.equal(admin.mode & 0o777, 0o600);
    assert.equal(admin.gid, process.getgid!(), 'no adminSocketGroup: the process group');
  });

  test('stream.maxConcurrentStreams: the next stream is OVERLOADED until one ends', async () => {
    const client = envelopeClient(`unix:${box.socket}`);
    const open = [
      await openStream(client, 'orders'),
      await openStream(client, 'orders'),
      await openStream(client, 'orders'),
    ];
    assert.equal(box.sealbox.stats().streamsOpen, 3);
    await refused(
      encryptStream(client, 'orders', [Buffer.from('4th')]),
      status.RESOURCE_EXHAUSTED,
      'OVERLOADED',
      /3 streams are open, the server's limit \(stream\.maxConcurrentStreams\)/,
    );
    await refused(decryptStream(client, [Buffer.from('4th')]), status.RESOURCE_EXHAUSTED, 'OVERLOADED');
    // Unary calls are not streams.
    await encrypt(client, 'orders', Buffer.from('unary'));
    open[0]!.call.end();
    await open[0]!.done;
    await encryptStream(client, 'orders', [Buffer.from('now there is room')]);
    open[1]!.call.cancel();
    await assert.rejects(open[1]!.done, { code: status.CANCELLED });
    open[2]!.call.end();
    await open[2]!.done;
    await until('every stream slot released', () => box.sealbox.stats().streamsOpen === 0);
  });

  test('a socket group that does not exist stops the start, naming the group', async () => {
    const dir = mkdtempSync(join(root, 'nogroup-'));
    createLocalKeyFile(join(dir, 'k.json'), 'k');
    const config = validateConfig({
      dataDir: dir,
      listen: { socket: join(dir, 'sealbox.sock'), socketGroup: 'sealbox-no-such-group' },
      keys: { k: { provider: 'local', file: join(dir, 'k.json') } },
      log: { level: 'silent' },
    });
    await assert.rejects(startSealbox(config), /socket group "sealbox-no-such-group" is not in \/etc\/group/);
    assert.throws(() => statSync(join(dir, 'sealbox.sock')), { code: 'ENOENT' });
  });
});

describe('per-identity limits', { timeout: 30_000 }, () => {
  let box: Box;

  before(async () => {
    box = await startBox({
      listen: { tcp: { host: '127.0.0.1', port: 0 } },
      access: {
        identities: {
          app: {
            peers: ['socket'],
            keys: ['orders'],
            operations: ['encrypt', 'decrypt'],
            limits: { maxConcurrentStreams: 2 },
          },
          batch: {
            peers: ['tcp'],
            keys: ['orders'],
            operations: ['encrypt'],
            limits: { requestsPerSecond: 5, burst: 5 },
          },
        },
      },
    });
  });

  after(() => box.close());

  test('maxConcurrentStreams: a third stream is QUOTA_EXCEEDED until one ends', async () => {
    const client = envelopeClient(`unix:${box.socket}`);
    const first = await openStream(client, 'orders');
    const second = await openStream(client, 'orders');
    assert.equal(box.sealbox.stats().streamsOpen, 2);
    const quota = [
      /identity "app" has 2 streams open, its limit/,
      /access\.identities\.app\.limits\.maxConcurrentStreams/,
    ];
    await refused(
      encryptStream(client, 'orders', [Buffer.from('3rd')]),
      status.RESOURCE_EXHAUSTED,
      'QUOTA_EXCEEDED',
      ...quota,
    );
    assert.equal(box.sealbox.stats().streamsOpen, 2, 'a refused stream holds no slot');

    first.call.write({ data: Buffer.from('first') });
    first.call.end();
    const ct = await first.done;
    assert.deepEqual((await decrypt(client, ct)).plaintext, Buffer.from('first'));
    const third = await encryptStream(client, 'orders', [Buffer.from('third')]);
    assert.deepEqual((await decrypt(client, third.data)).plaintext, Buffer.from('third'));

    second.call.cancel();
    await assert.rejects(second.done, { code: status.CANCELLED });
    await until('every stream slot released', () => box.sealbox.stats().streamsOpen === 0);
    // Both slots are free again.
    const again = [await openStream(client, 'orders'), await openStream(client, 'orders')];
    for (const s of again) s.call.end();
    await Promise.all(again.map((s) => s.done));
    await until('every stream slot released', () => box.sealbox.stats().streamsOpen === 0);
  });

  test('requestsPerSecond/burst: the 6th call of a burst is QUOTA_EXCEEDED; tokens come back', async () => {
    const batch = envelopeClient(box.tcp!);
    const data = Buffer.from('rated');
    await Promise.all(Array.from({ length: 5 }, () => encrypt(batch, 'orders', data)));
    const r = await refused(
      encrypt(batch, 'orders', data),
      status.RESOURCE_EXHAUSTED,
      'QUOTA_EXCEEDED',
      /identity "batch" is over its request rate \(5\/s, burst 5; access\.identities\.batch\.limits\)/,
    );
    const wait = Number(/retry in (\d+) ms/.exec(r.details)?.[1]);
    assert.ok(wait > 0 && wait <= 200, `retry in ${wait} ms`);
    // A stream start is a request too.
    await refused(encryptStream(batch, 'orders', [data]), status.RESOURCE_EXHAUSTED, 'QUOTA_EXCEEDED');
    // Another identity's bucket is its own.
    const app = envelopeClient(`unix:${box.socket}`);
    await encrypt(app, 'orders', data);

    await sleep(1200);
    await Promise.all(Array.from({ length: 5 }, () => encrypt(batch, 'orders', data)));
    await refused(encrypt(batch, 'orders', data), status.RESOURCE_EXHAUSTED, 'QUOTA_EXCEEDED');
  });
});

test('a start that fails leaves nothing listening (regression: the envelope socket stayed bound)', {
  timeout: 30_000,
}, async () => {
  const dir = mkdtempSync(join(root, 'failed-start-'));
  createLocalKeyFile(join(dir, 'k.json'), 'k');
  const socket = join(dir, 'sealbox.sock');
  const start = (tcp: Record<string, unknown> | null, listen: Record<string, unknown> = {}) =>
    startSealbox(
      validateConfig({
        dataDir: dir,
        listen: { socket, tcp, ...listen },
        keys: { k: { provider: 'local', file: join(dir, 'k.json') } },
        log: { level: 'silent' },
      }),
    );
  const nothingListens = () =>
    new Promise<void>((resolve, reject) => {
      const probe = connect(socket);
      probe.once('connect', () => {
        probe.destroy();
        reject(new Error(`${socket} still accepts connections after the failed start`));
      });
      probe.once('error', () => resolve());
    });

  // An unreadable certificate, named.
  await assert.rejects(
    start({
      host: '127.0.0.1',
      port: 0,
      tls: { certFile: join(dir, 'missing.pem'), keyFile: files.serverKey },
    }),
    /listen\.tcp\.tls\.certFile: cannot read .*missing\.pem/,
  );
  await nothingListens();
  // A TCP port in use: the envelope socket was bound first.
  const blocker = createServer().listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  try {
    const { port } = blocker.address() as AddressInfo;
    await assert.rejects(start({ host: '127.0.0.1', port }), /EADDRINUSE/);
    await nothingListens();
  } finally {
    blocker.close();
  }
  // The admin socket fails after the envelope server, metrics and pool started: all of it stops.
  const adminSocket = join(dir, 'admin.sock');
  await assert.rejects(
    start(null, { adminSocket, adminSocketGroup: 'no-such-group-sealbox' }),
    /socket group "no-such-group-sealbox" is not in \/etc\/group/,
  );
  await nothingListens();
  assert.ok(!existsSync(socket) && !existsSync(adminSocket), 'no socket file left behind');
});
