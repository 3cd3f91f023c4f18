/** The kms settings: off by default, the alias resolved or refused, the cache required, flags and env. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { ConfigError, kmsAlias, loadConfig, validateConfig } from '../../../src/config/config';
import { REPO_ROOT } from '../../helpers/paths';

const local = (file: string) => ({ provider: 'local' as const, file });

test('kms is off by default and npm start behaviour is unchanged', () => {
  const config = validateConfig({ keys: { a: local('/k/a.json') } });
  assert.equal(config.kms.socket, null);
  assert.equal(kmsAlias(config), undefined);
});

test('kms.alias: the only key by default; named among several; must exist', () => {
  const one = validateConfig({ keys: { a: local('/k/a.json') }, kms: { socket: '/run/kms.sock' } });
  assert.equal(kmsAlias(one), 'a');
  assert.equal(one.kms.socketMode, 0o600);
  const keys = { a: local('/k/a.json'), b: local('/k/b.json') };
  assert.throws(
    () => validateConfig({ keys, kms: { socket: '/run/kms.sock' } }),
    /kms\.alias: .*name the one/,
  );
  assert.equal(kmsAlias(validateConfig({ keys, kms: { socket: '/run/kms.sock', alias: 'b' } })), 'b');
  assert.throws(
    () => validateConfig({ keys, kms: { socket: '/run/kms.sock', alias: 'c' } }),
    (e) => e instanceof ConfigError && /kms\.alias: "c" is not a configured key alias/.test(e.message),
  );
});

test('kms needs the DEK cache (the key watcher answers Status)', () => {
  assert.throws(
    () =>
      validateConfig({ keys: { a: local('/k/a.json') }, kms: { socket: '/s' }, cache: { enabled: false } }),
    /kms\.socket: the KMS plugin needs cache\.enabled: true/,
  );
});

test('--kms-socket / --kms-alias and their environment variables', () => {
  const base = { keys: { a: local('/k/a.json'), b: local('/k/b.json') } };
  const fromFlags = loadConfig({ base, flags: { 'kms-socket': '/run/k.sock', 'kms-alias': 'a' } });
  assert.equal(fromFlags.kms.socket, '/run/k.sock');
  assert.equal(kmsAlias(fromFlags), 'a');
  const fromEnv = loadConfig({ base, env: { SEALBOX_KMS_SOCKET: '/run/e.sock', SEALBOX_KMS_ALIAS: 'b' } });
  assert.equal(kmsAlias(fromEnv), 'b');
  assert.equal(loadConfig({ base, flags: { 'kms-socket': 'none' } }).kms.socket, null);
});

test('deploy/kubernetes/kms: a valid config, and the socket the EncryptionConfiguration and both pods name is one', () => {
  const read = (f: string) => parse(readFileSync(join(REPO_ROOT, 'deploy/kubernetes/kms', f), 'utf8'));
  const config = validateConfig(read('config.yaml'));
  assert.equal(kmsAlias(config), 'k8s-secrets');
  assert.equal(config.kms.socketMode, 0o600);
  assert.equal(config.keys['k8s-secrets']?.provider, 'azure');
  const encryption = read('encryption-config.yaml') as {
    apiVersion: string;
    kind: string;
    resources: Array<{ resources: string[]; providers: Array<Record<string, Record<string, unknown>>> }>;
  };
  assert.equal(encryption.apiVersion, 'apiserver.config.k8s.io/v1');
  assert.equal(encryption.kind, 'EncryptionConfiguration');
  const [kms, identity] = encryption.resources[0]!.providers;
  assert.equal(kms!['kms']!['apiVersion'], 'v2');
  assert.equal(kms!['kms']!['endpoint'], `unix://${config.kms.socket}`);
  assert.deepEqual(identity, { identity: {} });
  const dir = dirname(config.kms.socket!);
  const hostPaths = (f: string) =>
    (read(f) as { spec: { volumes: Array<{ hostPath?: { path: string } }> } }).spec.volumes.map(
      (v) => v.hostPath?.path,
    );
  assert.ok(hostPaths('sealbox-kms.yaml').includes(dir));
  assert.ok(hostPaths('kube-apiserver-patch.yaml').includes(dir));
});
