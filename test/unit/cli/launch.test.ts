/**
 * Every place that starts sealbox's server does it the same way (src/cli/launch.ts): the image's ENV
 * and ENTRYPOINT, `npm start`, and the `sealbox` command's shebang in the source and in the build. A
 * setting added in one place and forgotten in another would make the image, the README's first
 * command and an installed `sealbox` behave differently under load.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { missingLaunchSettings, SERVER_ENV, SERVER_NODE_FLAGS } from '../../../src/cli/launch';
import { REPO_ROOT } from '../../helpers/paths';

const read = (...path: string[]) => readFileSync(join(REPO_ROOT, ...path), 'utf8');
const assignments = Object.entries(SERVER_ENV).map(([name, value]) => `${name}=${value}`);

describe('how sealbox is started', () => {
  test('node flags: at least one, each an option node refuses in NODE_OPTIONS (why they are on its command line)', () => {
    assert.ok(SERVER_NODE_FLAGS.length > 0);
    const allowed = process.allowedNodeEnvironmentFlags;
    for (const flag of SERVER_NODE_FLAGS) {
      assert.match(flag, /^--[a-z0-9-]+(=\S+)?$/);
      assert.ok(!allowed.has(flag.split('=')[0]!), `${flag} is allowed in NODE_OPTIONS: use that instead`);
    }
  });

  test("the Dockerfile's ENV and ENTRYPOINT", () => {
    const dockerfile = read('Dockerfile');
    const entrypoint = dockerfile.split('\n').find((l) => l.startsWith('ENTRYPOINT '));
    assert.ok(entrypoint, 'the Dockerfile has an ENTRYPOINT');
    assert.deepEqual(JSON.parse(entrypoint.slice('ENTRYPOINT '.length)), [
      'node',
      ...SERVER_NODE_FLAGS,
      'dist/src/cli.js',
    ]);
    // The runtime stage's ENV block: `NAME=value \` lines after `ENV`.
    const runtime = dockerfile.slice(dockerfile.indexOf('AS runtime'));
    for (const assignment of assignments) {
      assert.ok(
        new RegExp(`^\\s*(ENV )?${assignment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}( \\\\)?$`, 'm').test(
          runtime,
        ),
        assignment,
      );
    }
  });

  test('npm start', () => {
    const scripts = (JSON.parse(read('package.json')) as { scripts: Record<string, string> }).scripts;
    const command = `${assignments.join(' ')} node ${SERVER_NODE_FLAGS.join(' ')} dist/src/cli.js dev`;
    assert.ok(scripts['start']!.endsWith(command), scripts['start']);
  });

  test("the sealbox command's shebang, in the source and in the build", () => {
    const shebang = `#!/usr/bin/env -S ${assignments.join(' ')} node ${SERVER_NODE_FLAGS.join(' ')}`;
    assert.equal(read('src', 'cli.ts').split('\n')[0], shebang);
    const built = readFileSync(join(__dirname, '..', '..', '..', 'src', 'cli.js'), 'utf8');
    assert.equal(built.split('\n')[0], shebang);
    // Linux before 5.1 reads only the first 127 bytes of a shebang line (BINPRM_BUF_SIZE was 128;
    // 256 since): RHEL 8 (4.18) and Debian 10 (4.19) would hand node a cut-off flag.
    assert.ok(Buffer.byteLength(shebang) <= 127, `${Buffer.byteLength(shebang)} bytes`);
  });

  test('missingLaunchSettings names what the process was started without, and only that', () => {
    const all = [...SERVER_NODE_FLAGS, ...assignments];
    assert.deepEqual(missingLaunchSettings([], {}), all);
    assert.deepEqual(
      missingLaunchSettings(['--enable-source-maps', ...SERVER_NODE_FLAGS], { ...SERVER_ENV }),
      [],
    );
    assert.deepEqual(missingLaunchSettings([...SERVER_NODE_FLAGS], {}), assignments);
    // Another value is not the setting sealbox ships with.
    const other = Object.fromEntries(Object.keys(SERVER_ENV).map((name) => [name, 'something else']));
    assert.deepEqual(missingLaunchSettings(['--initial-old-space-size=64'], other), all);
  });
});
