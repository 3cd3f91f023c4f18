/**
 * AccessControl alone, with fake calls and a fake clock: who a caller is, what its grants allow, and
 * the rate and stream limits. The wire (grpc-js, TLS, sockets) is covered by
 * test/integration/access.test.ts.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { PeerCertificate } from 'node:tls';
import { type ConfigInput, type PeerKind, validateConfig } from '../../../src/config/config';
import { ErrorCode, SealboxError } from '../../../src/errors';
import { createLogger } from '../../../src/log/logger';
import { AccessControl, type CallPeer, certificateNames } from '../../../src/server/access';

const log = createLogger('silent');

const KEYS = {
  orders: { provider: 'local', file: 'orders.json' },
  payments: { provider: 'local', file: 'payments.json' },
} as const;

/** Key ids look like "<alias>/v1" here; "stray/v1" belongs to no configured key. */
const aliasesOf = (keyId: string) => {
  const alias = keyId.split('/')[0]!;
  return alias in KEYS ? [alias] : [];
};

function control(input: ConfigInput, now: () => number = Date.now): AccessControl {
  return new AccessControl(validateConfig({ keys: KEYS, ...input }), aliasesOf, log, now);
}

const socketCall: CallPeer = { getPeer: () => 'unknown', getAuthContext: () => ({}) };
const tcpCall: CallPeer = { getPeer: () => '127.0.0.1:40000', getAuthContext: () => ({}) };

function certCall(fields: { cn?: string | string[]; san?: string }): CallPeer {
  const certificate = {
    subject: fields.cn === undefined ? {} : { CN: fields.cn },
    subjectaltname: fields.san,
  } as unknown as PeerCertificate;
  return { getPeer: () => '127.0.0.1:40001', getAuthContext: () => ({ sslPeerCertificate: certificate }) };
}

function refused(fn: () => unknown, code: ErrorCode, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof SealboxError, `expected a SealboxError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (message) assert.match(err.message, message);
    return true;
  });
}

const TLS = { host: '127.0.0.1', port: 0, tls: { certFile: 'c', keyFile: 'k', clientCaFile: 'ca' } };

describe('certificateNames', () => {
  test('reads URI and DNS SANs (quoted ones too) and every CN', () => {
    const names = certificateNames({
      subject: { CN: ['ops', 'ops-2'] },
      subjectaltname:
        'DNS:api.example, URI:spiffe://cluster/ns/a/sa/b, IP Address:127.0.0.1, URI:"spiffe://x/with, comma"',
    } as unknown as PeerCertificate);
    assert.deepEqual(names, {
      uris: ['spiffe://cluster/ns/a/sa/b', 'spiffe://x/with, comma'],
      dnsNames: ['api.example'],
      commonNames: ['ops', 'ops-2'],
    });
  });

  test('a certificate without SANs or CN has no names', () => {
    assert.deepEqual(certificateNames({ subject: {} } as unknown as PeerCertificate), {
      uris: [],
      dnsNames: [],
      commonNames: [],
    });
  });
});

describe('who the caller is', () => {
  test('without an access section: socket and TCP callers are "default" (everything), admin-socket callers "admin"', () => {
    const access = control({});
    const callers: Array<[CallPeer, PeerKind]> = [
      [socketCall, 'socket'],
      [tcpCall, 'tcp'],
      [certCall({ cn: 'anyone' }), 'tcp'],
    ];
    for (const [call, peer] of callers) {
      const admitted = access.admit(call, peer, 'Encrypt', false);
      assert.equal(admitted.identity, 'default');
      admitted.keys.checkAlias('encrypt', 'payments');
      admitted.keys.checkKeyId('rewrap', 'orders/v1');
      refused(() => access.admitAdmin(call, peer, 'GetKeyStatus'), ErrorCode.ACCESS_DENIED, /"default"/);
    }
    access.admitAdmin(socketCall, 'admin-socket', 'GetKeyStatus');
    assert.equal(access.identify(socketCall, 'admin-socket', 'FlushCache').name, 'admin');
  });

  test('peers and certificate rules name identities; a caller that is none is refused', () => {
    const access = control({
      listen: { tcp: TLS },
      access: {
        identities: {
          app: { peers: ['socket'], keys: ['orders'], operations: ['encrypt'] },
          billing: {
            certificates: [{ uri: 'spiffe://t/billing' }],
            keys: ['payments'],
            operations: ['decrypt'],
          },
          ops: { certificates: [{ commonName: 'ops' }, { dns: 'ops.example' }], admin: true },
        },
      },
    });
    assert.equal(access.identify(socketCall, 'socket', 'Encrypt').name, 'app');
    assert.equal(
      access.identify(certCall({ san: 'URI:spiffe://t/billing' }), 'tcp', 'Decrypt').name,
      'billing',
    );
    assert.equal(access.identify(certCall({ cn: 'ops' }), 'tcp', 'FlushCache').name, 'ops');
    assert.equal(access.identify(certCall({ san: 'DNS:ops.example' }), 'tcp', 'FlushCache').name, 'ops');
    // Not listed: plain TCP, the admin socket, an unknown certificate, a near-miss URI.
    refused(() => access.identify(tcpCall, 'tcp', 'Encrypt'), ErrorCode.ACCESS_DENIED, /on TCP/);
    refused(
      () => access.identify(socketCall, 'admin-socket', 'GetKeyStatus'),
      ErrorCode.ACCESS_DENIED,
      /admin socket/,
    );
    refused(
      () => access.identify(certCall({ cn: 'mallory' }), 'tcp', 'Encrypt'),
      ErrorCode.ACCESS_DENIED,
      /CN=mallory.*access\.identities/,
    );
    refused(
      () => access.identify(certCall({ san: 'URI:spiffe://t/billing/extra' }), 'tcp', 'Encrypt'),
      ErrorCode.ACCESS_DENIED,
    );
  });

  test('a certificate that matches two identities is refused, not given either', () => {
    const access = control({
      listen: { tcp: TLS },
      access: {
        identities: {
          a: { certificates: [{ commonName: 'svc' }], keys: ['*'], operations: ['encrypt'] },
          b: { certificates: [{ uri: 'spiffe://t/svc' }], admin: true },
        },
      },
    });
    refused(
      () => access.identify(certCall({ cn: 'svc', san: 'URI:spiffe://t/svc' }), 'tcp', 'Encrypt'),
      ErrorCode.ACCESS_DENIED,
      /matches identities "a" and "b"/,
    );
  });
});

describe('what the caller may do', () => {
  const access = control({
    access: {
      identities: {
        app: { peers: ['socket'], keys: ['orders'], operations: ['encrypt', 'decrypt'] },
        all: { peers: ['tcp'], keys: ['*'], operations: ['rewrap'] },
        operator: { peers: ['admin-socket'], admin: true },
      },
    },
  });

  test('granted aliases × operations only, by alias and by key id', () => {
    const app = access.admit(socketCall, 'socket', 'Encrypt', false).keys;
    app.checkAlias('encrypt', 'orders');
    app.checkKeyId('decrypt', 'orders/v7');
    refused(
      () => app.checkAlias('encrypt', 'payments'),
      ErrorCode.ACCESS_DENIED,
      /identity "app" may not encrypt with key alias "payments"; grant it in access\.identities\.app/,
    );
    refused(() => app.checkKeyId('decrypt', 'payments/v1'), ErrorCode.ACCESS_DENIED, /alias "payments"/);
    refused(() => app.checkAlias('rewrap', 'orders'), ErrorCode.ACCESS_DENIED, /may not rewrap/);
    // A key id no configured key owns: only the operation is checked here (KEY_NOT_FOUND comes later).
    app.checkKeyId('decrypt', 'stray/v1');
    refused(() => app.checkKeyId('rewrap', 'stray/v1'), ErrorCode.ACCESS_DENIED);

    const all = access.admit(tcpCall, 'tcp', 'Rewrap', false).keys;
    all.checkAlias('rewrap', 'payments');
    all.checkKeyId('rewrap', 'orders/v1');
    refused(() => all.checkAlias('decrypt', 'orders'), ErrorCode.ACCESS_DENIED);
  });

  test('Admin: admin identities only', () => {
    access.admitAdmin(socketCall, 'admin-socket', 'RevokeKey');
    refused(
      () => access.admitAdmin(socketCall, 'socket', 'RevokeKey'),
      ErrorCode.ACCESS_DENIED,
      /identity "app" may not call the Admin service/,
    );
  });
});

describe("the KMS plugin's key (kms.alias) is no envelope caller's", () => {
  const KMS = { kms: { socket: '/run/sealbox-kms/kms.sock', alias: 'payments' } };
  const KMS_KEY = /belongs to the Kubernetes KMS plugin \(kms\.alias "payments"\)/;

  test('not by the single-tenant default: by alias and by key id, for every operation', () => {
    const keys = control(KMS).admit(socketCall, 'socket', 'Decrypt', false).keys;
    keys.checkAlias('encrypt', 'orders');
    keys.checkKeyId('decrypt', 'orders/v1');
    for (const operation of ['encrypt', 'decrypt', 'rewrap'] as const) {
      refused(() => keys.checkAlias(operation, 'payments'), ErrorCode.ACCESS_DENIED, KMS_KEY);
      refused(() => keys.checkKeyId(operation, 'payments/v3'), ErrorCode.ACCESS_DENIED, KMS_KEY);
    }
  });

  test('not by "*"; and naming it in an identity is a configuration error', () => {
    const star = control({
      ...KMS,
      access: { identities: { app: { peers: ['socket'], keys: ['*'], operations: ['decrypt'] } } },
    });
    const keys = star.admit(socketCall, 'socket', 'Decrypt', false).keys;
    keys.checkAlias('decrypt', 'orders');
    refused(() => keys.checkKeyId('decrypt', 'payments/v1'), ErrorCode.ACCESS_DENIED, KMS_KEY);
    assert.throws(
      () =>
        control({
          ...KMS,
          access: { identities: { app: { peers: ['socket'], keys: ['payments'], operations: ['decrypt'] } } },
        }),
      /access\.identities\.app\.keys.*"payments" is the Kubernetes KMS plugin's key \(kms\.alias\)/s,
    );
  });

  test('without the KMS face every alias is grantable as before', () => {
    control({}).admit(socketCall, 'socket', 'Decrypt', false).keys.checkAlias('decrypt', 'payments');
  });
});

describe('how much', () => {
  test('request rate: a burst, then one call per 1/rate seconds, per identity', () => {
    let now = 1_000_000;
    const access = control(
      {
        access: {
          identities: {
            slow: {
              peers: ['socket'],
              keys: ['*'],
              operations: ['encrypt'],
              limits: { requestsPerSecond: 2, burst: 3 },
            },
            free: { peers: ['tcp'], keys: ['*'], operations: ['encrypt'] },
          },
        },
      },
      () => now,
    );
    for (let i = 0; i < 3; i++) access.admit(socketCall, 'socket', 'Encrypt', false);
    refused(
      () => access.admit(socketCall, 'socket', 'Encrypt', false),
      ErrorCode.QUOTA_EXCEEDED,
      /identity "slow" is over its request rate \(2\/s, burst 3; .*\); retry in 500 ms/,
    );
    // Another identity is not affected.
    for (let i = 0; i < 50; i++) access.admit(tcpCall, 'tcp', 'Encrypt', false);
    now += 499;
    refused(
      () => access.admit(socketCall, 'socket', 'Encrypt', false),
      ErrorCode.QUOTA_EXCEEDED,
      /retry in 1 ms/,
    );
    now += 1;
    access.admit(socketCall, 'socket', 'Encrypt', false);
    refused(() => access.admit(socketCall, 'socket', 'Encrypt', false), ErrorCode.QUOTA_EXCEEDED);
    // A long pause refills to the burst, not beyond.
    now += 60_000;
    for (let i = 0; i < 3; i++) access.admit(socketCall, 'socket', 'Encrypt', false);
    refused(() => access.admit(socketCall, 'socket', 'Encrypt', false), ErrorCode.QUOTA_EXCEEDED);
  });

  test('a clock that steps back does not empty a bucket (regression: "retry in 3600000 ms")', () => {
    let now = 1_000_000;
    const access = control(
      {
        access: {
          identities: {
            a: { peers: ['socket'], operations: ['encrypt'], limits: { requestsPerSecond: 5, burst: 5 } },
          },
        },
      },
      () => now,
    );
    for (let i = 0; i < 5; i++) access.admit(socketCall, 'socket', 'Encrypt', false);
    refused(
      () => access.admit(socketCall, 'socket', 'Encrypt', false),
      ErrorCode.QUOTA_EXCEEDED,
      /retry in 200 ms/,
    );
    now -= 3_600_000;
    refused(
      () => access.admit(socketCall, 'socket', 'Encrypt', false),
      ErrorCode.QUOTA_EXCEEDED,
      /retry in 200 ms/,
    );
    now += 200;
    access.admit(socketCall, 'socket', 'Encrypt', false);
  });

  test('burst defaults to one second of the rate', () => {
    const access = control(
      {
        access: {
          identities: { a: { peers: ['socket'], operations: ['encrypt'], limits: { requestsPerSecond: 4 } } },
        },
      },
      () => 0,
    );
    for (let i = 0; i < 4; i++) access.admit(socketCall, 'socket', 'Encrypt', false);
    refused(() => access.admit(socketCall, 'socket', 'Encrypt', false), ErrorCode.QUOTA_EXCEEDED, /burst 4/);
  });

  test('streams: the identity limit, then the server limit; release gives the slot back once', () => {
    const access = control({
      stream: { maxConcurrentStreams: 3 },
      access: {
        identities: {
          capped: { peers: ['socket'], operations: ['encrypt'], limits: { maxConcurrentStreams: 2 } },
          open: { peers: ['tcp'], operations: ['encrypt'] },
        },
      },
    });
    const a = access.admit(socketCall, 'socket', 'EncryptStream', true);
    access.admit(socketCall, 'socket', 'EncryptStream', true);
    refused(
      () => access.admit(socketCall, 'socket', 'EncryptStream', true),
      ErrorCode.QUOTA_EXCEEDED,
      /identity "capped" has 2 streams open, its limit/,
    );
    // Unary calls are not streams.
    access.admit(socketCall, 'socket', 'Encrypt', false);
    access.admit(tcpCall, 'tcp', 'EncryptStream', true);
    assert.equal(access.streamsOpen, 3);
    refused(
      () => access.admit(tcpCall, 'tcp', 'EncryptStream', true),
      ErrorCode.OVERLOADED,
      /3 streams are open, the server's limit \(stream\.maxConcurrentStreams\)/,
    );
    a.release();
    a.release();
    assert.equal(access.streamsOpen, 2);
    access.admit(socketCall, 'socket', 'EncryptStream', true);
    assert.equal(access.streamsOpen, 3);
  });

  test('a refused stream takes no rate token and no slot', () => {
    const access = control(
      {
        stream: { maxConcurrentStreams: 1 },
        access: {
          identities: {
            a: { peers: ['socket'], operations: ['encrypt'], limits: { requestsPerSecond: 1, burst: 2 } },
          },
        },
      },
      () => 0,
    );
    access.admit(socketCall, 'socket', 'EncryptStream', true);
    refused(() => access.admit(socketCall, 'socket', 'EncryptStream', true), ErrorCode.OVERLOADED);
    assert.equal(access.streamsOpen, 1);
    // The refused stream did not spend the second token.
    access.admit(socketCall, 'socket', 'Encrypt', false);
    refused(() => access.admit(socketCall, 'socket', 'Encrypt', false), ErrorCode.QUOTA_EXCEEDED);
  });
});
