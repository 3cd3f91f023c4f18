/**
 * Every place that starts sealbox's server passes node the same V8 flags (src/cli/node-flags.ts):
 * the image's ENTRYPOINT, `npm start`, and the `sealbox` command's shebang in the source and in the
 * build. A flag added in one place and forgotten in another would make the image, the README's first
 * command and an installed `sealbox` behave differently under load.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { missingNodeFlags, SERVER_NODE_FLAGS } from '../../../src/cli/node-flags';
import { REPO_ROOT } from '../../helpers/paths';

const read = (...path: string[]) => readFileSync(join(REPO_ROOT, ...path), 'utf8');

describe('the V8 flags sealbox is started with', () => {
  test('there is at least one, and each is a node/V8 option node accepts on its command line', () => {
    assert.ok(SERVER_NODE_FLAGS.length > 0);
    const known = new Set(process.allowedNodeEnvironmentFlags);
    for (const flag of SERVER_NODE_FLAGS) {
      assert.match(flag, /^--[a-z0-9-]+(=\S+)?$/);
      // NODE_OPTIONS refuses these (why they are on the command line): keep it that way on purpose.
      assert.ok(!known.has(flag.split('=')[0]!), `${flag} is allowed in NODE_OPTIONS; use that instead`);
    }
  });

  test("the Dockerfile's ENTRYPOINT", () => {
    const line = read('Dockerfile')
      .split('\n')
      .find((l) => l.startsWith('ENTRYPOINT '));
    assert.ok(line, 'the Dockerfile has an ENTRYPOINT');
    assert.deepEqual(JSON.parse(line.slice('ENTRYPOINT '.length)), [
      'node',
      ...SERVER_NODE_FLAGS,
      'dist/src/cli.js',
    ]);
  });

  test('npm start', () => {
    const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
    assert.ok(
      scripts['start']!.includes(`node ${SERVER_NODE_FLAGS.join(' ')} dist/src/cli.js dev`),
      scripts['start'],
    );
  });

  test("the sealbox command's shebang, in the source and in the build", () => {
    const shebang = `#!/usr/bin/env -S node ${SERVER_NODE_FLAGS.join(' ')}`;
    assert.equal(read('src', 'cli.ts').split('\n')[0], shebang);
    assert.equal(
      readFileSync(join(__dirname, '..', '..', '..', 'src', 'cli.js'), 'utf8').split('\n')[0],
      shebang,
    );
  });

  test('missingNodeFlags names the flags node was started without, and only those', () => {
    assert.deepEqual(missingNodeFlags([]), [...SERVER_NODE_FLAGS]);
    assert.deepEqual(missingNodeFlags(['--enable-source-maps', ...SERVER_NODE_FLAGS]), []);
    // A different value is not the flag sealbox ships with.
    assert.deepEqual(missingNodeFlags(['--initial-old-space-size=64']), [...SERVER_NODE_FLAGS]);
  });
});
