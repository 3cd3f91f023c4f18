/**
 * End to end with a real kube-apiserver (issue 16): etcd + kube-apiserver with an EncryptionConfiguration
 * whose kms v2 provider is sealbox's KMS socket; a Secret written through the apiserver's HTTPS API
 * is stored in etcd as `k8s:enc:kms:v2:sealbox:…` and reads back. Everything listens on 127.0.0.1.
 *
 * Needs KUBE_APISERVER_BIN (no package registry here ships kube-apiserver) and `etcd` on PATH (Debian's
 * etcd-server). Without them the test is skipped with a message saying so; the same protocol is covered
 * by test/integration/kms.test.ts against the apiserver stand-in.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { mergeConfigInput, validateConfig } from '../../src/config/config';
import { sealboxKeyConfig } from '../../src/devvault';
import { createLogger } from '../../src/log/logger';
import { startSealbox } from '../../src/main';
import { startTokenVault } from '../helpers/token-vault';

const APISERVER = process.env['KUBE_APISERVER_BIN'];
const ETCD = spawnSync('sh', ['-c', 'command -v etcd'], { encoding: 'utf8' }).stdout.trim();
const TOKEN = 'kms-e2e';
const ADMIN_TOKEN = 'sealbox-e2e-admin-token';

/** A free loopback port (bound and released; the child binds it right after). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** One HTTPS call to the apiserver (its serving certificate is self-signed: loopback only). */
function api(
  port: number,
  method: string,
  path: string,
  body?: object,
): Promise<{ status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        rejectUnauthorized: false,
        headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => {
          let json: unknown = text;
          try {
            json = JSON.parse(text);
          } catch {}
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    req.on('error', reject);
    req.end(body ? JSON.stringify(body) : undefined);
  });
}

test('kube-apiserver stores a Secret as k8s:enc:kms:v2:sealbox: in etcd through sealbox', async (t) => {
  if (!APISERVER || !ETCD) {
    t.skip(
      `set KUBE_APISERVER_BIN to a kube-apiserver binary (≥ 1.29) and put etcd on PATH (apt-get install ` +
        `etcd-server) to run this end-to-end test (missing: ${[!APISERVER && 'KUBE_APISERVER_BIN', !ETCD && 'etcd'].filter(Boolean).join(', ')})`,
    );
    return;
  }
  const vault = await startTokenVault('kms-e2e', TOKEN, ['get', 'create', 'wrapKey', 'unwrapKey']);
  const children: ChildProcess[] = [];
  const output: string[] = [];
  const run = (cmd: string, args: string[]) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (d) => output.push(String(d)));
    child.stderr?.on('data', (d) => output.push(String(d)));
    children.push(child);
    return child;
  };
  const dir = vault.dir;
  await vault.keys.createRsaKey('k8s-secrets', { keySize: 2048 });
  const kmsSocket = join(dir, 'kms', 'kms.sock');
  const sealbox = await startSealbox(
    validateConfig(
      mergeConfigInput(
        {},
        {
          dataDir: dir,
          listen: { socket: join(dir, 'sealbox.sock') },
          keys: { k8s: sealboxKeyConfig(vault.vault, 'k8s-secrets', TOKEN) },
          kms: { socket: kmsSocket },
          log: { level: 'silent' },
        },
      ),
    ),
    createLogger('silent'),
  );
  try {
    const [etcdPort, peerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
    run(ETCD, [
      '--data-dir',
      join(dir, 'etcd'),
      '--listen-client-urls',
      `http://127.0.0.1:${etcdPort}`,
      '--advertise-client-urls',
      `http://127.0.0.1:${etcdPort}`,
      '--listen-peer-urls',
      `http://127.0.0.1:${peerPort}`,
      '--initial-advertise-peer-urls',
      `http://127.0.0.1:${peerPort}`,
      '--initial-cluster',
      `default=http://127.0.0.1:${peerPort}`,
    ]);
    // docs/kms.md shows the same file for a real control plane (deploy/kubernetes/kms/).
    const encryption = join(dir, 'encryption.yaml');
    writeFileSync(
      encryption,
      [
        'apiVersion: apiserver.config.k8s.io/v1',
        'kind: EncryptionConfiguration',
        'resources:',
        '  - resources: [secrets]',
        '    providers:',
        '      - kms:',
        '          apiVersion: v2',
        '          name: sealbox',
        `          endpoint: unix://${kmsSocket}`,
        '          timeout: 3s',
        '      - identity: {}',
        '',
      ].join('\n'),
    );
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    writeFileSync(join(dir, 'sa.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }));
    writeFileSync(join(dir, 'sa.pub'), publicKey.export({ type: 'spki', format: 'pem' }));
    writeFileSync(join(dir, 'tokens.csv'), `${ADMIN_TOKEN},admin,admin,"system:masters"\n`);
    run(APISERVER, [
      `--etcd-servers=http://127.0.0.1:${etcdPort}`,
      `--encryption-provider-config=${encryption}`,
      `--secure-port=${apiPort}`,
      '--bind-address=127.0.0.1',
      '--advertise-address=127.0.0.1',
      `--cert-dir=${join(dir, 'certs')}`,
      `--token-auth-file=${join(dir, 'tokens.csv')}`,
      '--authorization-mode=AlwaysAllow',
      `--service-account-key-file=${join(dir, 'sa.pub')}`,
      `--service-account-signing-key-file=${join(dir, 'sa.key')}`,
      '--service-account-issuer=https://kubernetes.default.svc',
      '--service-cluster-ip-range=10.96.0.0/24',
    ]);
    let ready = false;
    for (let i = 0; i < 240 && !ready; i++) {
      ready = await api(apiPort, 'GET', '/readyz').then(
        (r) => r.status === 200,
        () => false,
      );
      if (!ready) await sleep(500);
    }
    assert.ok(ready, `kube-apiserver did not become ready:\n${output.join('').slice(-4000)}`);

    const created = await api(apiPort, 'POST', '/api/v1/namespaces/default/secrets', {
      apiVersion: 'v1',
      kind: 'Secret',
      metadata: { name: 'sealed' },
      stringData: { password: 'hunter2' },
    });
    assert.equal(created.status, 201, JSON.stringify(created.json));
    // etcd's v3 JSON gateway: the raw value stored under the Secret's key.
    const range = await fetch(`http://127.0.0.1:${etcdPort}/v3/kv/range`, {
      method: 'POST',
      body: JSON.stringify({ key: Buffer.from('/registry/secrets/default/sealed').toString('base64') }),
    }).then((r) => r.json() as Promise<{ kvs?: Array<{ value: string }> }>);
    const raw = Buffer.from(range.kvs?.[0]?.value ?? '', 'base64');
    assert.ok(raw.subarray(0, 23).toString() === 'k8s:enc:kms:v2:sealbox:', raw.subarray(0, 40).toString());
    assert.equal(raw.includes(Buffer.from('hunter2')), false, 'the value is not in plaintext');
    const read = await api(apiPort, 'GET', '/api/v1/namespaces/default/secrets/sealed');
    const secret = read.json as { data: { password: string } };
    assert.equal(Buffer.from(secret.data.password, 'base64').toString(), 'hunter2');
  } finally {
    for (const child of children.reverse()) child.kill('SIGTERM');
    await sleep(500);
    await sealbox.close();
    await vault.close();
  }
});
