#!/usr/bin/env node
/**
 * The test suite's system prerequisites: the first step of `npm test` (and, for the rows unit tests
 * need, of `npm run test:unit`), so that `npm ci && npm test` passes on a fresh Debian 12 machine.
 *
 * PREREQUISITES is the one table: a Debian package, a shell check that is true when what the tests
 * use is present, and the tests that need it. Nothing else in the repository lists these packages;
 * .ci/run only calls `npm ci && npm test`.
 *
 *   node scripts/prereqs.js            every row: install what is missing (root), or fail fast
 *   node scripts/prereqs.js --unit     only the rows a test under test/unit/ needs
 *   node scripts/prereqs.js --check    report only: never install; exit 1 when something is missing
 *
 * When something is missing and this process is root with apt-get, it runs
 * `apt-get update && apt-get install -y --no-install-recommends …`, saying what it installs and why.
 * Otherwise it exits 1 before anything else runs, printing the exact command to run. Plain CommonJS
 * with no dependencies: it runs before `npm run build`, on a machine that may have nothing but Node.
 */

const { spawnSync } = require('node:child_process');

/**
 * Debian package → shell check (exit 0 = present: what the tests actually use, not just the package's
 * name in dpkg) → the tests that need it. A row is part of `--unit` when one of its tests is under
 * test/unit/.
 */
const PREREQUISITES = [
  {
    package: 'python3',
    check: 'test -x /usr/bin/python3',
    tests: ['test/unit/crypto/interop.test.ts'],
    why: 'runs test/interop/decrypt_v1.py, the decryptor written from docs/FORMAT.md alone',
  },
  {
    package: 'python3-cryptography',
    check: "/usr/bin/python3 -c 'import cryptography'",
    tests: ['test/unit/crypto/interop.test.ts'],
    why: 'AES-GCM, HKDF and key unwrap for test/interop/decrypt_v1.py',
  },
  {
    package: 'openssl',
    check: 'command -v openssl',
    tests: ['test/integration/bench-harness.test.ts'],
    why: '`openssl speed`, the AES ceiling bench/throughput.ts compares against',
  },
  {
    package: 'prometheus',
    check: 'test -x /usr/bin/prometheus && test -x /usr/bin/promtool',
    tests: ['test/integration/prometheus.test.ts'],
    why: 'a real Prometheus scrapes sealbox; promtool checks /metrics and deploy/prometheus/alerts.yml',
  },
  {
    package: 'g++',
    check: 'command -v g++',
    tests: ['test/fuzz/fuzz-targets.test.ts'],
    why: 'compiles the Jazzer.js native addon (test/fuzz/addon.ts says why it is built here)',
  },
  {
    package: 'libclang-rt-16-dev',
    check: 'test -f "/usr/lib/llvm-16/lib/clang/16/lib/linux/libclang_rt.fuzzer_no_main-$(uname -m).a"',
    tests: ['test/fuzz/fuzz-targets.test.ts'],
    why: "Debian's stock libFuzzer, linked into the Jazzer.js addon",
  },
  {
    package: 'python3-grpcio',
    check: "/usr/bin/python3 -c 'import grpc'",
    tests: ['test/integration/python-example.test.ts'],
    why: 'gRPC runtime for the Python client example',
  },
  {
    package: 'python3-grpc-tools',
    check: "/usr/bin/python3 -c 'import grpc_tools.protoc'",
    tests: ['test/integration/python-example.test.ts'],
    why: 'generates the Python stubs from proto/sealbox/v1/sealbox.proto',
  },
  {
    package: 'buildah',
    check: 'command -v buildah',
    tests: ['test/integration/image.test.ts'],
    why: 'builds the image from Dockerfile without a Docker daemon',
  },
  {
    package: 'podman',
    check: 'command -v podman',
    tests: ['test/integration/image.test.ts'],
    why: 'runs the built image',
  },
  {
    package: 'debootstrap',
    check: 'test -x /usr/sbin/debootstrap || command -v debootstrap',
    tests: ['test/integration/image.test.ts'],
    why: 'builds the Debian base for the image locally',
  },
  {
    package: 'iproute2',
    check: 'test -x /usr/sbin/ip || test -x /sbin/ip || command -v ip',
    tests: ['test/integration/image.test.ts'],
    why: 'gives each run of the image its own network namespace',
  },
  {
    package: 'util-linux',
    check: 'command -v unshare && command -v nsenter',
    tests: ['test/integration/image.test.ts'],
    why: 'unshare and nsenter: the read-only root and the HEALTHCHECK run in the container namespaces',
  },
];

/** True when a row is needed by a test under test/unit/ (the `--unit` selection). */
function neededByUnitTests(row) {
  return row.tests.some((t) => t.startsWith('test/unit/'));
}

/** Runs a row's check with /bin/sh; true when it exits 0. */
function shellCheck(row) {
  return spawnSync('/bin/sh', ['-c', row.check], { stdio: 'ignore' }).status === 0;
}

/** The rows whose check fails, in table order. */
function findMissing(rows, isPresent = shellCheck) {
  return rows.filter((row) => !isPresent(row));
}

/** Package names, once each, in table order. */
function packagesOf(rows) {
  return [...new Set(rows.map((r) => r.package))];
}

/** The apt-get install arguments for rows (after `apt-get`). */
function installArgs(rows) {
  return ['install', '-y', '--no-install-recommends', ...packagesOf(rows)];
}

/** The command a person without root runs. */
function sudoCommand(rows) {
  return `sudo apt-get update && sudo apt-get ${installArgs(rows).join(' ')}`;
}

/** One line per missing package: what it is for and which tests need it. */
function describe(rows) {
  const width = Math.max(...rows.map((r) => r.package.length));
  return rows
    .map((r) => `  ${r.package.padEnd(width)}  ${r.why}; needed by ${r.tests.join(', ')}`)
    .join('\n');
}

/**
 * What to do about `missing`: nothing, install (root with apt-get, unless checkOnly), or fail with a
 * message that gives the exact command.
 */
function plan(missing, { isRoot, hasAptGet, checkOnly }) {
  if (missing.length === 0) return { action: 'none' };
  const list = describe(missing);
  const count = `${missing.length} Debian package${missing.length === 1 ? '' : 's'}`;
  if (!hasAptGet) {
    return {
      action: 'fail',
      message:
        `sealbox prerequisites: ${count} the tests need ${missing.length === 1 ? 'is' : 'are'} missing, ` +
        `and this machine has no apt-get:\n${list}\n` +
        `Install the equivalent with your system's package manager (the checks are in scripts/prereqs.js), ` +
        'or use Debian 12, then run the command again.',
    };
  }
  if (isRoot && !checkOnly) {
    return {
      action: 'install',
      message: `sealbox prerequisites: installing ${count} the tests need:\n${list}`,
      args: installArgs(missing),
    };
  }
  return {
    action: 'fail',
    message:
      `sealbox prerequisites: ${count} the tests need ${missing.length === 1 ? 'is' : 'are'} missing:\n${list}\n` +
      `${checkOnly ? 'Install them' : 'Not root, so nothing was installed. Install them'}, then run the command again:\n` +
      `  ${sudoCommand(missing)}`,
  };
}

/** Runs apt-get with output shown; waits for another apt/dpkg to release its lock instead of failing. */
function aptGet(args) {
  const full = ['-o', 'DPkg::Lock::Timeout=600', ...args];
  process.stderr.write(`+ apt-get ${args.join(' ')}\n`);
  const result = spawnSync('apt-get', full, {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  if (result.status !== 0) {
    throw new Error(`apt-get ${args.join(' ')} failed (exit ${result.status ?? result.signal})`);
  }
}

/** The command line's work; returns the exit code. */
function main(argv) {
  const unknown = argv.filter((a) => a !== '--unit' && a !== '--check');
  if (unknown.length > 0) {
    process.stderr.write(`scripts/prereqs.js: unknown argument ${unknown[0]}; use --unit and/or --check\n`);
    return 2;
  }
  const rows = argv.includes('--unit') ? PREREQUISITES.filter(neededByUnitTests) : PREREQUISITES;
  const missing = findMissing(rows);
  const decision = plan(missing, {
    isRoot: typeof process.getuid === 'function' && process.getuid() === 0,
    hasAptGet: spawnSync('/bin/sh', ['-c', 'command -v apt-get'], { stdio: 'ignore' }).status === 0,
    checkOnly: argv.includes('--check'),
  });
  if (decision.action === 'none') {
    process.stderr.write(`sealbox prerequisites: all ${packagesOf(rows).length} present\n`);
    return 0;
  }
  process.stderr.write(`${decision.message}\n`);
  if (decision.action === 'fail') return 1;
  aptGet(['update']);
  aptGet(decision.args);
  const still = findMissing(missing);
  if (still.length > 0) {
    process.stderr.write(
      `sealbox prerequisites: installed, but these checks still fail:\n${still.map((r) => `  ${r.package}: ${r.check}`).join('\n')}\n`,
    );
    return 1;
  }
  process.stderr.write(`sealbox prerequisites: installed ${packagesOf(missing).join(' ')}\n`);
  return 0;
}

module.exports = { PREREQUISITES, neededByUnitTests, findMissing, plan, sudoCommand, installArgs };

if (require.main === module) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`sealbox prerequisites: ${err.message}\n`);
    process.exitCode = 1;
  }
}
