/** The shipped example configs stay valid: they are what operators copy. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { validateConfig } from '../../../src/config/config';
import { REPO_ROOT } from '../../helpers/paths';

for (const file of [
  'examples/config/azure-workload-identity.yaml',
  'examples/config/dev-vault.yaml',
  'examples/config/mtls-policy.yaml',
]) {
  test(`${file} is a valid config`, () => {
    const config = validateConfig(parse(readFileSync(join(REPO_ROOT, file), 'utf8')));
    assert.ok(Object.keys(config.keys).length > 0);
  });
}

test('the Kubernetes ConfigMap carries a valid config', () => {
  const configMap = parse(readFileSync(join(REPO_ROOT, 'deploy/kubernetes/configmap.yaml'), 'utf8')) as {
    data: Record<string, string>;
  };
  const config = validateConfig(parse(configMap.data['config.yaml']!));
  assert.equal(config.listen.socketMode, 0o660);
  assert.equal(config.keys['payments']?.provider, 'azure');
});

test('the mTLS policy example grants what its comments say', () => {
  const config = validateConfig(
    parse(readFileSync(join(REPO_ROOT, 'examples/config/mtls-policy.yaml'), 'utf8')),
  );
  const ids = config.access!.identities;
  assert.deepEqual(Object.keys(ids).sort(), ['app', 'billing', 'migrator', 'operator']);
  assert.equal(config.listen.socketMode, 0o660);
  assert.equal(config.listen.tcp?.tls?.clientCaFile, '/etc/sealbox/tls/client-ca.crt');
  assert.deepEqual(ids['app']!.keys, ['orders']);
  assert.equal(ids['operator']!.admin, true);
  assert.equal(ids['app']!.admin, false);
});
