/** The kms settings: off by default, the alias resolved or refused, the cache required, flags and env. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConfigError, kmsAlias, loadConfig, validateConfig } from '../../../src/config/config';

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
