/** The test suite's prerequisite step (scripts/prereqs.js): its table, its checks and its decisions. */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { REPO_ROOT } from '../../helpers/paths';

interface Row {
  readonly package: string;
  readonly check: string;
  readonly tests: readonly string[];
  readonly why: string;
}
type Plan =
  | { action: 'none' }
  | { action: 'install'; message: string; args: string[] }
  | { action: 'fail'; message: string };
interface Prereqs {
  PREREQUISITES: readonly Row[];
  neededByUnitTests(row: Row): boolean;
  findMissing(rows: readonly Row[], isPresent?: (row: Row) => boolean): Row[];
  plan(missing: readonly Row[], how: { isRoot: boolean; hasAptGet: boolean; checkOnly: boolean }): Plan;
  sudoCommand(rows: readonly Row[]): string;
}

// Plain CommonJS outside the TypeScript build: it runs before `npm run build`.
const prereqs = require(join(REPO_ROOT, 'scripts', 'prereqs.js')) as Prereqs;
const { PREREQUISITES, findMissing, neededByUnitTests, plan, sudoCommand } = prereqs;

const row = (name: string, check: string, tests = ['test/integration/x.test.ts']): Row => ({
  package: name,
  check,
  tests,
  why: `${name} is used`,
});

test('the table lists every Debian package the suite and the work in progress need, each once', () => {
  const names = PREREQUISITES.map((r) => r.package);
  for (const name of [
    'python3',
    'python3-cryptography',
    'openssl',
    'prometheus',
    'g++',
    'libclang-rt-16-dev',
    'python3-grpcio',
    'python3-grpc-tools',
    'buildah',
    'podman',
    'debootstrap',
  ]) {
    assert.ok(names.includes(name), `${name} is in scripts/prereqs.js`);
  }
  assert.equal(new Set(names).size, names.length, 'no package is listed twice');
  for (const r of PREREQUISITES) {
    assert.match(r.package, /^[a-z0-9][a-z0-9+.-]+$/, 'a Debian package name');
    assert.ok(r.check.length > 0 && r.why.length > 0 && r.tests.length > 0, r.package);
  }
});

test('every test file the table names exists (a renamed test must update the table)', () => {
  const files = PREREQUISITES.flatMap((r) => r.tests).filter((t) => /^test\/\S+\.test\.ts$/.test(t));
  assert.ok(files.length >= 4);
  for (const file of files) assert.ok(existsSync(join(REPO_ROOT, file)), `${file} exists`);
});

test('--unit selects exactly the rows a test under test/unit/ needs', () => {
  const unit = PREREQUISITES.filter(neededByUnitTests).map((r) => r.package);
  assert.deepEqual(unit, ['python3', 'python3-cryptography']);
});

test('checks run in /bin/sh: exit 0 is present, anything else is missing', () => {
  const rows = [row('yes', 'true'), row('no', 'false'), row('absent', 'command -v no-such-tool-sealbox')];
  assert.deepEqual(
    findMissing(rows).map((r) => r.package),
    ['no', 'absent'],
  );
});

test('nothing missing: nothing to do', () => {
  assert.deepEqual(plan([], { isRoot: false, hasAptGet: false, checkOnly: false }), { action: 'none' });
});

test('root with apt-get: installs the missing packages once each, saying why', () => {
  const missing = [row('a-pkg', 'false'), row('b-pkg', 'false'), row('a-pkg', 'false')];
  const decision = plan(missing, { isRoot: true, hasAptGet: true, checkOnly: false });
  assert.equal(decision.action, 'install');
  if (decision.action !== 'install') return;
  assert.deepEqual(decision.args, ['install', '-y', '--no-install-recommends', 'a-pkg', 'b-pkg']);
  assert.match(decision.message, /installing 3 Debian packages/);
  assert.match(decision.message, /a-pkg +a-pkg is used; needed by test\/integration\/x\.test\.ts/);
});

test('not root: fails with the exact command to run, and installs nothing', () => {
  const missing = [row('prometheus', 'false')];
  const decision = plan(missing, { isRoot: false, hasAptGet: true, checkOnly: false });
  assert.equal(decision.action, 'fail');
  if (decision.action !== 'fail') return;
  assert.match(decision.message, /1 Debian package the tests need is missing/);
  assert.match(decision.message, /Not root, so nothing was installed/);
  assert.ok(
    decision.message.endsWith(
      '  sudo apt-get update && sudo apt-get install -y --no-install-recommends prometheus',
    ),
    decision.message,
  );
  assert.equal(
    sudoCommand(missing),
    'sudo apt-get update && sudo apt-get install -y --no-install-recommends prometheus',
  );
});

test('--check as root: reports, never installs', () => {
  const decision = plan([row('g++', 'false')], { isRoot: true, hasAptGet: true, checkOnly: true });
  assert.equal(decision.action, 'fail');
  assert.match(
    (decision as { message: string }).message,
    /sudo apt-get install -y --no-install-recommends g\+\+/,
  );
});

test('no apt-get: fails, naming the packages and where the checks are', () => {
  const decision = plan([row('podman', 'false')], { isRoot: true, hasAptGet: false, checkOnly: false });
  assert.equal(decision.action, 'fail');
  assert.match((decision as { message: string }).message, /no apt-get:\n {2}podman .*scripts\/prereqs\.js/s);
});

test('one path: npm test and test:unit run the prerequisite step first, and .ci/run installs nothing itself', () => {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
    scripts: Record<string, string>;
  };
  assert.match(pkg.scripts['test']!, /^node scripts\/prereqs\.js && npm run build && /);
  assert.match(pkg.scripts['test:unit']!, /^node scripts\/prereqs\.js --unit && /);
  const ci = readFileSync(join(REPO_ROOT, '.ci', 'run'), 'utf8');
  assert.match(ci, /^npm ci && npm test$/m);
  assert.doesNotMatch(ci, /apt-get|dpkg/, '.ci/run leaves the Debian packages to npm test');
});
