/** The shipped example configs stay valid: they are what operators copy. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parse } from 'yaml';
import { validateConfig } from '../../../src/config/config';
import { REPO_ROOT } from '../../helpers/paths';

for (const file of ['examples/config/azure-workload-identity.yaml', 'examples/config/dev-vault.yaml']) {
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
