import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  ConfigError,
  configuredAuthorityHost,
  instanceDiscoveryDisabled,
  loadConfig,
  validateConfig,
  vaultCloud,
} from '../../../src/config/config';

const dir = mkdtempSync(join(tmpdir(), 'sealbox-config-'));

test('defaults: Unix socket 0600 with reflection, no TCP, 64 KiB chunks, 4 MiB unary limit, auto pool', () => {
  const config = loadConfig();
  assert.equal(config.listen.socket, '/run/sealbox/sealbox.sock');
  assert.equal(config.listen.socketMode, 0o600);
  assert.equal(config.listen.tcp, null);
  assert.equal(config.listen.reflection, true);
  assert.equal(config.envelope.defaultChunkSize, 65536);
  assert.equal(config.envelope.unaryMaxBytes, 4 * 1024 * 1024);
  assert.equal(config.pool.mode, 'auto');
  // null: one thread per core sealbox may use, resolved where the pool is built (pool/cores.ts).
  assert.equal(config.pool.threads, null);
  assert.equal(loadConfig({ env: { SEALBOX_POOL_THREADS: '3' } }).pool.threads, 3);
});

test('precedence: defaults < file < environment < flags', () => {
  const file = join(dir, 'precedence.yaml');
  writeFileSync(file, 'listen:\n  socket: /from/file.sock\nlog:\n  level: debug\npool:\n  mode: inline\n');
  const config = loadConfig({
    flags: { config: file, 'log-level': 'error' },
    env: { SEALBOX_LOG_LEVEL: 'warn', SEALBOX_SOCKET: '/from/env.sock' },
  });
  assert.equal(config.listen.socket, '/from/env.sock');
  assert.equal(config.log.level, 'error');
  assert.equal(config.pool.mode, 'inline');
});

test('SEALBOX_CONFIG names the file when no flag does; JSON files work too', () => {
  const file = join(dir, 'c.json');
  writeFileSync(file, JSON.stringify({ envelope: { defaultChunkSize: 8192 } }));
  assert.equal(loadConfig({ env: { SEALBOX_CONFIG: file } }).envelope.defaultChunkSize, 8192);
});

test('TCP listener parsing: host:port, [v6]:port, bare port, none', () => {
  assert.deepEqual(loadConfig({ flags: { tcp: '127.0.0.1:7000' } }).listen.tcp, {
    host: '127.0.0.1',
    port: 7000,
    tls: null,
    reflection: false,
  });
  assert.deepEqual(loadConfig({ flags: { tcp: '[::1]:7001' } }).listen.tcp, {
    host: '::1',
    port: 7001,
    tls: null,
    reflection: false,
  });
  assert.deepEqual(loadConfig({ flags: { tcp: '127.0.0.2:7003' } }).listen.tcp, {
    host: '127.0.0.2',
    port: 7003,
    tls: null,
    reflection: false,
  });
  assert.deepEqual(loadConfig({ flags: { tcp: '7002' } }).listen.tcp, {
    host: '127.0.0.1',
    port: 7002,
    tls: null,
    reflection: false,
  });
  assert.equal(loadConfig({ flags: { tcp: 'none' } }).listen.tcp, null);
});

test("a TCP listener beyond loopback is accepted with TLS, and --tcp keeps the file's tls settings", () => {
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-config-'));
  const file = join(dir, 'c.json');
  const tls = { certFile: '/tls/cert.pem', keyFile: '/tls/key.pem', clientCaFile: '/tls/ca.pem' };
  writeFileSync(
    file,
    JSON.stringify({ listen: { tcp: { host: '0.0.0.0', port: 7443, tls, reflection: true } } }),
  );
  assert.deepEqual(loadConfig({ flags: { config: file } }).listen.tcp, {
    host: '0.0.0.0',
    port: 7443,
    tls,
    reflection: true,
  });
  assert.deepEqual(loadConfig({ flags: { config: file, tcp: '10.0.0.5:8443' } }).listen.tcp, {
    host: '10.0.0.5',
    port: 8443,
    tls,
    reflection: true,
  });
});

test('access policy: defaults filled in, a group by name or gid', () => {
  const config = validateConfig({
    keys: { orders: { provider: 'local', file: 'k' } },
    listen: { socketGroup: 'app', adminSocketGroup: 1001 },
    access: { identities: { app: { peers: ['socket'], keys: ['orders'], operations: ['decrypt'] } } },
  });
  assert.equal(config.listen.socketGroup, 'app');
  assert.equal(config.listen.adminSocketGroup, 1001);
  assert.equal(config.listen.adminSocketMode, 0o600);
  assert.deepEqual(config.access?.identities['app'], {
    peers: ['socket'],
    certificates: [],
    keys: ['orders'],
    operations: ['decrypt'],
    admin: false,
    limits: { maxConcurrentStreams: null, requestsPerSecond: null, burst: null },
  });
  assert.equal(validateConfig({}).access, null);
  assert.equal(validateConfig({}).stream.maxConcurrentStreams, 1024);
});

const bad: Array<[string, unknown, RegExp]> = [
  [
    'chunk size below the format minimum',
    { envelope: { defaultChunkSize: 100 } },
    /envelope\.defaultChunkSize/,
  ],
  [
    'chunk size above the format maximum',
    { envelope: { defaultChunkSize: 8 * 1024 * 1024 } },
    /envelope\.defaultChunkSize/,
  ],
  ['unknown pool mode', { pool: { mode: 'gpu' } }, /pool\.mode.*(auto|workers|inline)/s],
  ['zero threads', { pool: { threads: 0 } }, /pool\.threads/],
  ['no listener at all', { listen: { socket: null, tcp: null } }, /listen needs a socket or a tcp listener/],
  ['port out of range', { listen: { tcp: { port: 70000 } } }, /listen\.tcp\.port/],
  [
    'a gRPC TCP listener beyond loopback (no TLS)',
    { listen: { tcp: { host: '0.0.0.0', port: 7000 } } },
    /listen\.tcp\.host.*loopback/s,
  ],
  [
    'a gRPC TCP listener on a LAN address',
    { listen: { tcp: { host: '10.1.2.3', port: 7000 } } },
    /listen\.tcp\.tls: .*refuses to serve keys in plaintext beyond this machine/,
  ],
  ['bad log level', { log: { level: 'loud' } }, /log\.level/],
  [
    'a socket group that is not a name or gid',
    { listen: { socketGroup: 'no group!' } },
    /listen\.socketGroup/,
  ],
  [
    'an unknown field in listen.tcp.tls (a typo must not silently drop mTLS)',
    { listen: { tcp: { host: '0.0.0.0', port: 1, tls: { certFile: 'c', keyFile: 'k', clientCA: 'x' } } } },
    /listen\.tcp\.tls.*clientCA/s,
  ],
  [
    'an access identity granted an alias that is not configured',
    { access: { identities: { app: { peers: ['socket'], keys: ['orders'], operations: ['encrypt'] } } } },
    /access\.identities\.app\.keys: "orders" is not a configured key alias/,
  ],
  [
    'an unknown operation',
    { access: { identities: { app: { peers: ['socket'], operations: ['sign'] } } } },
    /access\.identities\.app\.operations/,
  ],
  [
    'a misspelt identity field (strict: it would silently grant nothing or everything)',
    { access: { identities: { app: { peers: ['socket'], operation: ['encrypt'] } } } },
    /access\.identities\.app.*operation/s,
  ],
  [
    'one peer kind given to two identities',
    { access: { identities: { a: { peers: ['socket'] }, b: { peers: ['socket'] } } } },
    /access\.identities\.b\.peers: peer "socket" is already identity "a"/,
  ],
  [
    'an identity no caller can be',
    { access: { identities: { ghost: { keys: ['*'] } } } },
    /access\.identities\.ghost\.peers: an identity needs peers or certificates/,
  ],
  [
    'a certificate rule with two fields',
    {
      listen: { tcp: { port: 1, tls: { certFile: 'c', keyFile: 'k', clientCaFile: 'ca' } } },
      access: { identities: { a: { certificates: [{ uri: 'spiffe://x', dns: 'x' }] } } },
    },
    /access\.identities\.a\.certificates\.0: a certificate rule has exactly one of uri, dns, commonName/,
  ],
  [
    'certificate identities without a client CA to verify them',
    { access: { identities: { a: { certificates: [{ commonName: 'ops' }] } } } },
    /listen\.tcp\.tls\.clientCaFile: access\.identities match client certificates/,
  ],
  [
    'a burst without a rate',
    { access: { identities: { a: { peers: ['socket'], limits: { burst: 5 } } } } },
    /access\.identities\.a\.limits\.burst: burst needs requestsPerSecond/,
  ],
  ['alias with a slash', { keys: { 'a/b': { provider: 'local', file: 'x' } } }, /keys/],
  ['key without a provider', { keys: { a: { file: 'x' } } }, /keys\.a\.provider/],
  [
    'string where a number belongs',
    { stream: { maxInFlightSegments: 'four' } },
    /stream\.maxInFlightSegments/,
  ],
];

for (const [name, raw, message] of bad) {
  test(`rejected with the field named: ${name}`, () => {
    assert.throws(
      () => validateConfig(raw),
      (err: unknown) => err instanceof ConfigError && message.test(err.message),
    );
  });
}

test('bad flag values and unreadable files are ConfigErrors that say where', () => {
  assert.throws(() => loadConfig({ flags: { tcp: 'localhost' } }), /flag --tcp: expected host:port/);
  assert.throws(() => loadConfig({ env: { SEALBOX_TCP: 'x:y' } }), /environment variable SEALBOX_TCP/);
  assert.throws(
    () => loadConfig({ flags: { config: join(dir, 'missing.yaml') } }),
    /cannot read config file/,
  );
  const broken = join(dir, 'broken.json');
  writeFileSync(broken, '{ not json');
  assert.throws(() => loadConfig({ flags: { config: broken } }), /is not valid JSON/);
});

const azureBase = { provider: 'azure', vaultUrl: 'https://v.vault.azure.net', keyName: 'payments' };

test('an Azure key: defaults to DefaultAzureCredential and bounded retries', () => {
  const config = validateConfig({ keys: { pay: azureBase } });
  const key = config.keys['pay'];
  assert.ok(key && key.provider === 'azure');
  assert.equal(key.credential.kind, 'default');
  assert.equal(key.retry.maxAttempts, 3);
});

const badAzure: Array<[string, unknown, RegExp]> = [
  [
    'a vault URL with a path',
    { ...azureBase, vaultUrl: 'https://v.vault.azure.net/keys' },
    /keys\.k\.vaultUrl/,
  ],
  ['a plain-http vault URL', { ...azureBase, vaultUrl: 'http://v.vault.azure.net' }, /keys\.k\.vaultUrl/],
  ['a key name with a slash', { ...azureBase, keyName: 'a/b' }, /keys\.k\.keyName/],
  [
    'static-token without a token',
    { ...azureBase, credential: { kind: 'static-token' } },
    /static-token credential needs token/,
  ],
  [
    'a token on DefaultAzureCredential',
    { ...azureBase, credential: { token: 't' } },
    /only allowed with kind: static-token/,
  ],
  [
    'a public-cloud vault with the China cloud',
    { ...azureBase, credential: { kind: 'workload-identity', cloud: 'china' } },
    /keys\.k\.credential\.cloud: the credential signs in at cloud china \(https:\/\/login\.chinacloudapi\.cn\), but vaultUrl https:\/\/v\.vault\.azure\.net is a vault of the public cloud, whose Entra ID is https:\/\/login\.microsoftonline\.com/,
  ],
  [
    'a China vault with the public authority host',
    {
      ...azureBase,
      vaultUrl: 'https://v.vault.azure.cn',
      credential: { kind: 'workload-identity', authorityHost: 'https://login.microsoftonline.com/' },
    },
    /authorityHost https:\/\/login\.microsoftonline\.com, but vaultUrl https:\/\/v\.vault\.azure\.cn is a vault of the china cloud, whose Entra ID is https:\/\/login\.chinacloudapi\.cn/,
  ],
  [
    'a US Government Managed HSM with a custom authority',
    {
      ...azureBase,
      vaultUrl: 'https://h.managedhsm.usgovcloudapi.net',
      credential: { kind: 'default', authorityHost: 'https://localhost:8443' },
    },
    /vault of the usgov cloud, whose Entra ID is https:\/\/login\.microsoftonline\.us/,
  ],
  [
    'cloud and authorityHost together',
    { ...azureBase, credential: { cloud: 'public', authorityHost: 'https://login.microsoftonline.com' } },
    /set cloud or authorityHost, not both/,
  ],
  [
    'an authority host with a path',
    { ...azureBase, credential: { authorityHost: 'https://login.microsoftonline.com/tenant' } },
    /authorityHost must be https:\/\/host\[:port\]/,
  ],
  [
    'a cloud on a static token',
    { ...azureBase, credential: { kind: 'static-token', token: 't', cloud: 'public' } },
    /need an Entra ID credential, not static-token/,
  ],
  [
    'an authority CA without an authority host',
    { ...azureBase, credential: { cloud: 'public', authorityCaFile: '/ca.pem' } },
    /authorityCaFile needs authorityHost/,
  ],
  [
    'max delay below base delay',
    { ...azureBase, retry: { baseDelayMs: 500, maxDelayMs: 100 } },
    /maxDelayMs/,
  ],
];

for (const [name, key, message] of badAzure) {
  test(`Azure key rejected with the field named: ${name}`, () => {
    assert.throws(
      () => validateConfig({ keys: { k: key } }),
      (err: unknown) => err instanceof ConfigError && message.test(err.message),
    );
  });
}

test('clouds: each vault suffix names its cloud; matching clouds and dev-vault authorities are accepted', () => {
  const cases: Array<[string, string | undefined]> = [
    ['https://v.vault.azure.net', 'public'],
    ['https://h.managedhsm.azure.net', 'public'],
    ['https://v.vault.azure.cn', 'china'],
    ['https://v.vault.usgovcloudapi.net', 'usgov'],
    ['https://localhost:8443', 'dev'],
    ['https://sealbox.managedhsm.localhost:8443', 'dev'],
    ['https://127.0.0.1:8443', 'dev'],
    ['https://vault.example.internal', undefined],
  ];
  for (const [url, cloud] of cases) assert.equal(vaultCloud(url), cloud, url);
  const ok: Array<Record<string, unknown>> = [
    { ...azureBase, credential: { kind: 'workload-identity', cloud: 'public' } },
    { ...azureBase, vaultUrl: 'https://v.vault.azure.cn', credential: { cloud: 'china' } },
    {
      ...azureBase,
      vaultUrl: 'https://v.vault.usgovcloudapi.net',
      credential: { kind: 'managed-identity', authorityHost: 'https://login.microsoftonline.us' },
    },
    {
      ...azureBase,
      vaultUrl: 'https://localhost:8443',
      credential: {
        kind: 'workload-identity',
        authorityHost: 'https://localhost:9443',
        authorityCaFile: '/ca.pem',
      },
    },
    // A host of no known cloud (custom DNS) is not checked.
    { ...azureBase, vaultUrl: 'https://vault.example.internal', credential: { cloud: 'china' } },
  ];
  for (const key of ok) assert.doesNotThrow(() => validateConfig({ keys: { k: key } }), JSON.stringify(key));
});

test('authority host and instance discovery: from cloud or authorityHost; discovery off only for non-cloud hosts', () => {
  assert.equal(configuredAuthorityHost({}), undefined, 'unset: the SDK default or AZURE_AUTHORITY_HOST');
  assert.equal(configuredAuthorityHost({ cloud: 'china' }), 'https://login.chinacloudapi.cn');
  assert.equal(
    configuredAuthorityHost({ authorityHost: 'https://localhost:9443/' }),
    'https://localhost:9443',
  );
  assert.equal(instanceDiscoveryDisabled({}), false);
  assert.equal(instanceDiscoveryDisabled({ authorityHost: 'https://login.microsoftonline.us' }), false);
  assert.equal(instanceDiscoveryDisabled({ authorityHost: 'https://localhost:9443' }), true);
  assert.equal(
    instanceDiscoveryDisabled({ authorityHost: 'https://localhost:9443', disableInstanceDiscovery: false }),
    false,
  );
  assert.equal(instanceDiscoveryDisabled({ disableInstanceDiscovery: true }), true);
});
