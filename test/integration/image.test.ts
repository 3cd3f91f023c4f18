/**
 * The container image, built from the project's Dockerfile and run as users run it: as the image's
 * non-root user, on a read-only root filesystem, with the socket and state directories as volumes and
 * the config mounted read-only at /etc/sealbox/config.yaml, where the image's CMD expects it.
 *
 * No Docker engine or registry here: Debian's buildah builds the Dockerfile (chroot isolation, vfs
 * storage in a temporary directory) on a locally assembled stand-in for its base image
 * (test/helpers/image.ts), and `buildah run --isolation chroot` runs the image's ENTRYPOINT + CMD, its
 * HEALTHCHECK command and `sealbox check`, each in a private network namespace (the HEALTHCHECK joins
 * the sidecar's, as a container engine runs it) so port 9464 never meets another process's.
 *
 * Read-only root: buildah's chroot isolation has no --read-only and binds the container's root
 * read-write. Every run therefore gets a private mount namespace in which the container's rootfs is
 * bind-mounted at a separate path (with /dev and /sys read-only and /proc, as buildah binds them) and
 * handed to buildah as a read-only mount on "/" (`-v VIEW:/:ro`). The kernel then refuses writes
 * outside the volumes for every process in the container, root included (EROFS, checked below, and
 * the sidecar's own /proc/PID/mountinfo shows "/" ro). Mount points a runtime creates in the container's
 * writable layer before it makes the root read-only (/etc/sealbox, and buildah's /run/.containerenv
 * marker) are created in the working container, never in the image.
 *
 * The key is a local key file (the `local` KEK provider) in the mounted config directory: the image
 * needs nothing outside itself and its mounts, so the test says something about the image alone.
 *
 * Skipped, with the install command, only where buildah cannot run (missing tools, not root); under
 * SEALBOX_CI=1 that is a failure instead.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, type TestContext, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { EnvelopeClient } from '../../src/api/proto';
import { SERVER_ENV, SERVER_NODE_FLAGS } from '../../src/cli/launch';
import { connectEnvelope, decrypt, encrypt } from '../../src/client/client';
import { createLocalKeyFile } from '../../src/kek/local';
import {
  BASE_IMAGE,
  ensureBaseTarball,
  onPath,
  type Run,
  removeStaleWorkDirs,
  run,
  runOk,
  tail,
  toolEnv,
} from '../helpers/image';
import { REPO_ROOT } from '../helpers/paths';

const IN_CI = process.env['SEALBOX_CI'] === '1';
const IMAGE = 'localhost/sealbox:image-test';
const ALIAS = 'app';

/** What the test runs, and the Debian package each comes from. */
const TOOLS: ReadonlyArray<readonly [binary: string, pkg: string]> = [
  ['buildah', 'buildah'],
  ['podman', 'podman'], // `podman import` tags the stand-in base; buildah has no import
  ['debootstrap', 'debootstrap'],
  ['unshare', 'util-linux'],
  ['nsenter', 'util-linux'],
  ['mount', 'mount'],
  ['ip', 'iproute2'],
  ['chroot', 'coreutils'],
  ['tar', 'tar'],
];

/** Why buildah cannot run here, or undefined when it can. */
function unavailableBecause(): string | undefined {
  const missing = TOOLS.filter(([binary]) => !onPath(binary));
  if (missing.length > 0) {
    const packages = [...new Set(missing.map(([, pkg]) => pkg))].join(' ');
    return `missing ${missing.map(([binary]) => binary).join(', ')}; install with: apt-get install -y ${packages}`;
  }
  if (process.getuid?.() !== 0) {
    return 'needs root (buildah --isolation chroot with vfs storage, and bind mounts for the read-only root)';
  }
  return undefined;
}
const UNAVAILABLE = unavailableBecause();

/** The parts of the image's config (docker format) the test runs and checks. */
interface ImageConfig {
  User: string;
  Env: string[] | null;
  Entrypoint: string[] | null;
  Cmd: string[] | null;
  WorkingDir: string;
  Volumes: Record<string, unknown> | null;
  Healthcheck?: { Test: string[]; Interval?: number; Timeout?: number; Retries?: number };
}

/**
 * Runs in a private mount namespace before buildah: makes VIEW a read-only copy of the container's
 * rootfs with /dev (read-only, nosuid, noexec), /proc and /sys (read-only) under it, as buildah's chroot
 * isolation binds them; buildah then mounts VIEW on "/" read-only. With LOOPBACK=up (a fresh network
 * namespace) it brings up lo, which a new namespace starts with down.
 */
const SETUP_SCRIPT = `set -eu
rootfs=$1 view=$2
shift 2
if [ "$LOOPBACK" = up ]; then ip link set lo up; fi
# buildah bind-mounts its /run/.containerenv marker here and deletes it after each run.
: > "$rootfs/run/.containerenv"
mount --bind "$rootfs" "$view"
mount -o remount,bind,ro "$view"
mount --rbind /dev "$view/dev"
mount -o remount,bind,ro,nosuid,noexec "$view/dev"
mount --rbind /proc "$view/proc"
mount --rbind /sys "$view/sys"
mount -o remount,bind,ro,nosuid,nodev,noexec "$view/sys"
exec "$@"
`;

/** Tries to create and remove a file in each directory given; prints {uid, writes: {dir: "ok" | errno}}. */
const WRITE_PROBE = `const fs = require('node:fs');
const result = { uid: process.getuid(), writes: {} };
for (const dir of process.argv.slice(1)) {
  const file = dir.replace(/\\/$/, '') + '/.sealbox-write-probe';
  try { fs.writeFileSync(file, 'x'); fs.unlinkSync(file); result.writes[dir] = 'ok'; }
  catch (err) { result.writes[dir] = err.code; }
}
console.log(JSON.stringify(result));`;

describe('the container image (Dockerfile → buildah → run read-only as its user)', {
  skip: UNAVAILABLE && !IN_CI ? `buildah cannot run here: ${UNAVAILABLE}` : false,
}, () => {
  let work: string;
  let storage: string[];
  /** For buildah and podman: their temporary files (image copies, run bundles) inside `work`. */
  let env: NodeJS.ProcessEnv;
  let container: string | undefined;
  let rootfs: string;
  let view: string;
  let socketDir: string;
  let stateDir: string;
  let configDir: string;
  let config: ImageConfig;
  let user: { uid: number; gid: number };
  const timings: string[] = [];

  const buildah = (args: string[], timeoutMs?: number) =>
    runOk('buildah', [...storage, ...args], { env, ...(timeoutMs ? { timeoutMs } : {}) });

  /** The command line, after the mount set-up, that runs `command` in the container. */
  function containerCommand(command: readonly string[], asUser?: string): string[] {
    return [
      'sh',
      '-c',
      SETUP_SCRIPT,
      'sh',
      rootfs,
      view,
      'buildah',
      ...storage,
      'run',
      '--isolation',
      'chroot',
      ...(asUser === undefined ? [] : ['--user', asUser]),
      '-v',
      `${view}:/:ro`,
      '-v',
      `${socketDir}:/run/sealbox`,
      '-v',
      `${stateDir}:/var/lib/sealbox`,
      '-v',
      `${configDir}:/etc/sealbox:ro`,
      container!,
      '--',
      ...command,
    ];
  }

  /**
   * Spawns `command` in the container: in a fresh network namespace, or in the one of process
   * `netnsOf` (how a HEALTHCHECK runs beside the sidecar). Without `asUser`, the image's USER.
   */
  function spawnInContainer(
    command: readonly string[],
    options: { asUser?: string; netnsOf?: number } = {},
  ): { file: string; args: string[]; env: NodeJS.ProcessEnv } {
    const inner = containerCommand(command, options.asUser);
    return options.netnsOf === undefined
      ? {
          file: 'unshare',
          args: ['--mount', '--net', '--', ...inner],
          env: { ...env, LOOPBACK: 'up' },
        }
      : {
          file: 'nsenter',
          args: [`--net=/proc/${options.netnsOf}/ns/net`, '--', 'unshare', '--mount', '--', ...inner],
          env: { ...env, LOOPBACK: 'keep' },
        };
  }

  /** Runs `command` in the container to completion. */
  function runInContainer(
    command: readonly string[],
    options: { asUser?: string; netnsOf?: number; timeoutMs?: number } = {},
  ): Promise<Run> {
    const { file, args, env } = spawnInContainer(command, options);
    return run(file, args, { env, timeoutMs: options.timeoutMs ?? 120_000 });
  }

  /** The image's HEALTHCHECK as an argv. */
  function healthcheckCommand(): string[] {
    const check = config.Healthcheck?.Test ?? [];
    if (check[0] === 'CMD') return check.slice(1);
    if (check[0] === 'CMD-SHELL') return ['/bin/sh', '-c', check[1]!];
    throw new Error(`the image has no runnable HEALTHCHECK: ${JSON.stringify(config.Healthcheck)}`);
  }

  before(
    async () => {
      if (UNAVAILABLE) throw new Error(`SEALBOX_CI=1 and buildah cannot run: ${UNAVAILABLE}`);
      const started = Date.now();
      const base = await ensureBaseTarball();
      timings.push(
        `stand-in base ${base.built ? 'built (debootstrap)' : 'from cache'} in ${base.seconds.toFixed(1)} s`,
      );

      removeStaleWorkDirs(tmpdir(), 'sealbox-image-');
      work = mkdtempSync(join(tmpdir(), `sealbox-image-${process.pid}-`));
      storage = [
        '--root',
        join(work, 'storage'),
        '--runroot',
        join(work, 'runroot'),
        '--storage-driver',
        'vfs',
      ];
      mkdirSync(join(work, 'tmp'));
      env = toolEnv({ TMPDIR: join(work, 'tmp') });
      let t = Date.now();
      await runOk(
        'podman',
        [
          ...storage,
          'import',
          '--change',
          'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
          '--change',
          'CMD ["node"]',
          base.path,
          BASE_IMAGE,
        ],
        { env },
      );
      timings.push(`base imported in ${((Date.now() - t) / 1000).toFixed(1)} s`);

      t = Date.now();
      // docker format: the OCI image config has no HEALTHCHECK, and buildah drops it from OCI images.
      await buildah(
        ['bud', '--isolation', 'chroot', '--pull=never', '--format', 'docker', '-t', IMAGE, REPO_ROOT],
        20 * 60_000,
      );
      timings.push(`Dockerfile built in ${((Date.now() - t) / 1000).toFixed(1)} s`);

      const inspected = JSON.parse((await buildah(['inspect', '--type', 'image', IMAGE])).stdout) as {
        Docker: { config: ImageConfig };
      };
      config = inspected.Docker.config;

      container = (
        await buildah(['from', '--pull=never', '--name', `sealbox-image-test-${process.pid}`, IMAGE])
      ).stdout.trim();
      // buildah gives each VOLUME of the image an anonymous volume, and in 1.28 it may pick that over
      // an explicit -v for the same path (it sorts mounts unstably). Dropping them from the working
      // container (never the image) leaves the explicit volumes, as `docker run -v` would.
      for (const volume of Object.keys(config.Volumes ?? {})) {
        await buildah(['config', '--volume', `${volume}-`, container]);
      }
      rootfs = (await buildah(['mount', container])).stdout.trim();
      mkdirSync(join(rootfs, 'etc', 'sealbox'), { recursive: true }); // the config's mount point

      user = imageUser(rootfs, config.User);

      view = join(work, 'view');
      mkdirSync(view);
      // Volumes as a pod gives them: empty directories the image's user can write.
      socketDir = join(work, 'run-sealbox');
      stateDir = join(work, 'var-lib-sealbox');
      for (const dir of [socketDir, stateDir]) {
        mkdirSync(dir);
        chownSync(dir, user.uid, user.gid);
      }
      configDir = join(work, 'etc-sealbox');
      mkdirSync(configDir);
      const keyFile = join(configDir, 'kek.json');
      createLocalKeyFile(keyFile, 'image-test');
      chownSync(keyFile, user.uid, user.gid); // mode 0600, readable by the image's user only
      writeFileSync(
        join(configDir, 'config.yaml'),
        [
          '# Mounted read-only at /etc/sealbox; socket, data dir and metrics come from the image.',
          'keys:',
          `  ${ALIAS}:`,
          '    provider: local',
          '    file: /etc/sealbox/kek.json',
          'log:',
          '  level: info',
          '',
        ].join('\n'),
      );
      chmodSync(join(configDir, 'config.yaml'), 0o644);

      const du = await run('du', ['-sm', work]);
      timings.push(
        `set-up ${((Date.now() - started) / 1000).toFixed(1)} s; ${du.stdout.split('\t')[0]} MiB in ${work}`,
      );
    },
    { timeout: 40 * 60_000 },
  );

  after(async () => {
    if (!work) return;
    if (container) await run('buildah', [...storage, 'rm', container], { env });
    await run('buildah', [...storage, 'rmi', '--all', '--force'], { env });
    // Every mount the runs made lived in their own mount namespaces, gone with them.
    rmSync(work, { recursive: true, force: true });
  });

  test("the image's config: a non-root USER, both volumes, ENTRYPOINT + CMD, a HEALTHCHECK", (t: TestContext) => {
    for (const line of timings) t.diagnostic(line);
    assert.notEqual(user.uid, 0, `the image runs as root (USER "${config.User}")`);
    assert.deepEqual(Object.keys(config.Volumes ?? {}).sort(), ['/run/sealbox', '/var/lib/sealbox']);
    assert.deepEqual(config.Entrypoint, ['node', ...SERVER_NODE_FLAGS, 'dist/src/cli.js']);
    assert.deepEqual(config.Cmd, ['serve', '--config', '/etc/sealbox/config.yaml']);
    assert.match(healthcheckCommand().join(' '), /http:\/\/127\.0\.0\.1:9464\/readyz/);
    assert.ok(config.Env?.includes('SEALBOX_METRICS=0.0.0.0:9464'), JSON.stringify(config.Env));
    for (const [name, value] of Object.entries(SERVER_ENV)) {
      assert.ok(config.Env?.includes(`${name}=${value}`), `${name}: ${JSON.stringify(config.Env)}`);
    }
  });

  test('outside the volumes every write fails with EROFS, for the image user and for root', async () => {
    const dirs = ['/', '/app', '/etc', '/tmp', '/var/tmp', '/home/node', '/etc/sealbox'];
    const volumes = ['/run/sealbox', '/var/lib/sealbox'];
    for (const asUser of [undefined, 'root']) {
      const probe = await runInContainer(
        ['node', '-e', WRITE_PROBE, ...dirs, ...volumes],
        asUser ? { asUser } : {},
      );
      assert.equal(probe.code, 0, probe.stderr);
      const result = JSON.parse(probe.stdout.trim().split('\n').at(-1)!) as {
        uid: number;
        writes: Record<string, string>;
      };
      assert.equal(result.uid, asUser === 'root' ? 0 : user.uid);
      for (const dir of dirs) assert.equal(result.writes[dir], 'EROFS', `${dir} as uid ${result.uid}`);
      // The volumes stay writable: the probe can tell a write that works from one that does not.
      for (const dir of volumes) assert.equal(result.writes[dir], 'ok', `${dir} as uid ${result.uid}`);
    }
  });

  test('sealbox check on the mounted config: the local key passes get, wrapKey and unwrapKey', async () => {
    const check = await runInContainer([
      ...config.Entrypoint!,
      'check',
      '--config',
      '/etc/sealbox/config.yaml',
    ]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
    assert.match(
      check.stdout,
      new RegExp(
        `^✓ ${ALIAS} \\(local:image-test/[0-9a-f]{32}\\): get, wrapKey, unwrapKey ok \\(A256KW\\)`,
        'm',
      ),
    );
  });

  describe("the image's ENTRYPOINT + CMD (the sidecar)", () => {
    let sidecar: ChildProcess;
    let exited: Promise<number | null>;
    let logs = '';
    let client: EnvelopeClient;
    let serverPid: number;

    before(
      async () => {
        const { file, args, env } = spawnInContainer([...config.Entrypoint!, ...config.Cmd!]);
        sidecar = spawn(file, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
        sidecar.stdout!.on('data', (b: Buffer) => (logs += b.toString()));
        sidecar.stderr!.on('data', (b: Buffer) => (logs += b.toString()));
        exited = new Promise((resolve) => sidecar.once('exit', (code) => resolve(code)));
        const socket = join(socketDir, 'sealbox.sock');
        const deadline = Date.now() + 120_000;
        while (!existsSync(socket)) {
          assert.equal(sidecar.exitCode, null, `the sidecar exited early:\n${tail(logs)}`);
          assert.ok(Date.now() < deadline, `no socket at ${socket} after 120 s:\n${tail(logs)}`);
          await sleep(100);
        }
        serverPid = sidecarProcess(sidecar.pid!);
        client = connectEnvelope(`unix:${socket}`);
      },
      { timeout: 180_000 },
    );

    after(async () => {
      client?.close();
      if (sidecar && sidecar.exitCode === null && sidecar.signalCode === null) {
        for (const pid of [...descendants(sidecar.pid!), sidecar.pid!].reverse()) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {}
        }
        await exited;
      }
    });

    test("the sidecar's node runs with sealbox's flags and environment (src/cli/launch.ts)", () => {
      const argv = readFileSync(`/proc/${serverPid}/cmdline`, 'utf8').split('\0');
      const script = argv.indexOf('dist/src/cli.js');
      for (const flag of SERVER_NODE_FLAGS) {
        const at = argv.indexOf(flag);
        assert.ok(at > 0 && at < script, `${flag} before the script in ${JSON.stringify(argv)}`);
      }
      // And its environment, from the image's ENV (also checked in "the image's config" above).
      const environ = readFileSync(`/proc/${serverPid}/environ`, 'utf8').split('\0');
      for (const [name, value] of Object.entries(SERVER_ENV)) {
        assert.ok(environ.includes(`${name}=${value}`), `${name}=${value} in the sidecar's environment`);
      }
    });

    test('encrypt then decrypt through the socket in the mounted volume: the bytes come back', async () => {
      const plaintext = randomBytes(256 * 1024 + 7);
      const sealed = await encrypt(client, ALIAS, plaintext, { test: 'image' });
      assert.match(sealed.keyId, /^local:image-test\/[0-9a-f]{32}$/);
      assert.ok(
        !sealed.ciphertext.includes(plaintext.subarray(0, 64)),
        'the ciphertext is not the plaintext',
      );
      const opened = await decrypt(client, sealed.ciphertext, { test: 'image' });
      assert.ok(opened.plaintext.equals(plaintext));
      assert.deepEqual(opened.context, { test: 'image' });
      // The socket was created by the image's user, in the volume.
      assert.equal(statSync(join(socketDir, 'sealbox.sock')).uid, user.uid);
    });

    test("the sidecar runs as the image's user on a root mounted read-only", () => {
      const status = readFileSync(`/proc/${serverPid}/status`, 'utf8');
      const uids = /^Uid:\s+(.*)$/m.exec(status)![1]!.split(/\s+/).map(Number);
      const gids = /^Gid:\s+(.*)$/m.exec(status)![1]!.split(/\s+/).map(Number);
      assert.deepEqual(uids, [user.uid, user.uid, user.uid, user.uid]);
      assert.deepEqual(gids, [user.gid, user.gid, user.gid, user.gid]);
      // mountinfo fields: id parent dev root mountpoint options …; the last "/" is the one it sees.
      const roots = readFileSync(`/proc/${serverPid}/mountinfo`, 'utf8')
        .split('\n')
        .map((l) => l.split(' '))
        .filter((f) => f[4] === '/');
      assert.ok(roots.length > 0);
      assert.ok(roots.at(-1)![5]!.split(',').includes('ro'), `root mount: ${roots.at(-1)!.join(' ')}`);
    });

    test("the Dockerfile's HEALTHCHECK passes beside the sidecar, and fails where no sidecar listens", async () => {
      const command = healthcheckCommand();
      let health: Run | undefined;
      for (let attempt = 0; attempt < 10; attempt++) {
        health = await runInContainer(command, { netnsOf: sidecar.pid! });
        if (health.code === 0) break;
        await sleep(1000);
      }
      assert.equal(health!.code, 0, `HEALTHCHECK failed 10 times:\n${health!.stderr}\n${tail(logs)}`);
      const alone = await runInContainer(command);
      assert.equal(alone.code, 1, `HEALTHCHECK in a namespace without sealbox must fail:\n${alone.stderr}`);
    });

    test('SIGTERM to the sidecar: it drains and exits 0', async () => {
      client.close();
      process.kill(serverPid, 'SIGTERM');
      const code = await exited;
      assert.equal(code, 0, tail(logs));
      assert.match(logs, /shutting down/);
    });
  });
});

/**
 * The uid and gid the image's USER runs as, from the image's /etc/passwd: "" (no USER) is root; "name"
 * or "uid", optionally ":group" (the gid then still comes from passwd, which is all the test needs).
 */
function imageUser(rootfs: string, spec: string): { uid: number; gid: number } {
  const name = spec.split(':')[0] ?? '';
  if (name === '') return { uid: 0, gid: 0 };
  const entry = readFileSync(join(rootfs, 'etc', 'passwd'), 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => line.split(':'))
    .find((f) => f[0] === name || f[2] === name);
  if (entry) return { uid: Number(entry[2]), gid: Number(entry[3]) };
  if (/^\d+$/.test(name)) return { uid: Number(name), gid: Number(name) };
  throw new Error(`the image's USER ${spec} is not in its /etc/passwd`);
}

/** All descendants of `root`, parents before children. */
function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
  }
  const found: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      found.push(child);
      queue.push(child);
    }
  }
  return found;
}

/** The pid of the sealbox process (node …/cli.js serve) under the buildah run started as `root`. */
function sidecarProcess(root: number): number {
  for (const pid of descendants(root)) {
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    } catch {
      continue;
    }
    if (/(^|\/)node$/.test(argv[0]!) && argv.includes('dist/src/cli.js') && argv.includes('serve'))
      return pid;
  }
  throw new Error(`no "node dist/src/cli.js serve" process under pid ${root}`);
}
