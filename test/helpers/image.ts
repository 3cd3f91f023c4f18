/**
 * Building and running the project's container image without a Docker engine or a registry:
 * Debian's buildah (chroot isolation, vfs storage) builds the Dockerfile on a stand-in for its base
 * image, assembled here from a debootstrap'd Debian bookworm plus the Node binary and npm that run the
 * tests, and tagged as the Dockerfile's base (docker.io/library/node:20-bookworm-slim).
 *
 * The stand-in carries two additions the real base does not have, both needed only because package
 * traffic on these machines is TLS-inspected: the host's CA bundle and an npm `cafile` in npm's global
 * npmrc. They live in the stand-in only; the Dockerfile stays as users need it.
 *
 * The base is a tarball cached under `.cache/image-base/`, named by a hash of everything it contains
 * (suite, variant, mirror, Node binary, npm, CA bundle, this recipe), so a second run skips debootstrap.
 */
import { type SpawnOptions, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { REPO_ROOT } from './paths';

/** The Dockerfile's base image name, which the stand-in is tagged as. */
export const BASE_IMAGE = 'docker.io/library/node:20-bookworm-slim';
/** Where stand-in bases are cached between runs (gitignored, dockerignored). */
export const BASE_CACHE_DIR = join(REPO_ROOT, '.cache', 'image-base');

/** Bump when the recipe below changes what ends up in the tarball. */
const RECIPE_VERSION = 1;
const SUITE = 'bookworm';
const VARIANT = 'minbase';
const HOST_CA_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';

export interface Run {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
}

/** The sbin directories, where Debian puts debootstrap, chroot, useradd and ip, whatever PATH says. */
const SBIN = ['/usr/local/sbin', '/usr/sbin', '/sbin'];

/** PATH with the sbin directories appended: what the commands run here (and their children) get. */
export function toolPath(path = process.env['PATH'] ?? ''): string {
  const dirs = path.split(delimiter).filter((d) => d !== '');
  return [...dirs, ...SBIN.filter((d) => !dirs.includes(d))].join(delimiter);
}

/** The environment for the commands run here: this process's, with `toolPath()`, plus `extra`. */
export function toolEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return { ...process.env, PATH: toolPath(), ...extra };
}

/**
 * Runs a command to completion, capturing its output; kills it (SIGKILL) after `timeoutMs`.
 * Without `env`, it gets `toolEnv()`, and the command is looked up on that PATH.
 * Never rejects for a non-zero exit: callers assert on `code` and show the output.
 */
export function run(
  command: string,
  args: readonly string[],
  options: SpawnOptions & { timeoutMs?: number } = {},
): Promise<Run> {
  const { timeoutMs = 10 * 60_000, ...spawnOptions } = options;
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: toolEnv(),
      ...spawnOptions,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({
        code,
        signal,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
  });
}

/** Runs a command and throws, with the tail of its output, unless it exits 0. */
export async function runOk(
  command: string,
  args: readonly string[],
  options: SpawnOptions & { timeoutMs?: number } = {},
): Promise<Run> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(
      `${command} ${args.join(' ')} exited ${result.code ?? result.signal}:\n${tail(result.stdout)}\n${tail(result.stderr)}`,
    );
  }
  return result;
}

/** The last `lines` lines of `text`. */
export function tail(text: string, lines = 40): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n');
}

/** Whether an executable named `name` is on `toolPath()`. */
export function onPath(name: string): boolean {
  return toolPath()
    .split(delimiter)
    .some((dir) => {
      try {
        accessSync(join(dir, name), constants.X_OK);
        return true;
      } catch {
        return false;
      }
    });
}

/** The Debian mirror apt already uses (deb822 `URIs:` or one-line `deb` entries), else deb.debian.org. */
export function debianMirror(): string {
  const files = ['/etc/apt/sources.list'];
  const dir = '/etc/apt/sources.list.d';
  if (existsSync(dir)) {
    for (const f of readdirSync(dir)) if (/\.(list|sources)$/.test(f)) files.push(join(dir, f));
  }
  for (const file of files) {
    if (!existsSync(file)) continue;
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const m = /^\s*(?:URIs:\s*|deb\s+(?:\[[^\]]*\]\s+)?)(\S+\/debian)\/?(?:\s|$)/.exec(line);
      if (m) return m[1]!;
    }
  }
  return 'http://deb.debian.org/debian';
}

/** npm as installed beside the Node binary that runs the tests (prefix/lib/node_modules/npm). */
function hostNpmDir(): string {
  return join(dirname(dirname(process.execPath)), 'lib', 'node_modules', 'npm');
}

function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** What the stand-in base contains; its hash names the cached tarball. */
export function baseRecipe(): Record<string, string | number> {
  const npmDir = hostNpmDir();
  return {
    recipe: RECIPE_VERSION,
    suite: SUITE,
    variant: VARIANT,
    mirror: debianMirror(),
    node: `${process.version} ${sha256File(process.execPath)}`,
    npm: (JSON.parse(readFileSync(join(npmDir, 'package.json'), 'utf8')) as { version: string }).version,
    caBundle: existsSync(HOST_CA_BUNDLE) ? sha256File(HOST_CA_BUNDLE) : 'none',
  };
}

/**
 * Removes `dir` unless something is mounted inside it (debootstrap mounts /proc and /sys in its target
 * and may leave them when killed); returns whether it did. Deleting through a mount would reach the
 * mounted filesystem.
 */
export function removeUnlessMounted(dir: string): boolean {
  const prefix = `${dir}/`;
  const mounted = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => {
      const mountPoint = line.split(' ')[4];
      return mountPoint !== undefined && (mountPoint === dir || mountPoint.startsWith(prefix));
    });
  if (mounted) return false;
  rmSync(dir, { recursive: true, force: true });
  return true;
}

/**
 * Removes the directories `<parent>/<prefix><pid>-…` left by runs whose process is gone (killed before
 * their cleanup), so an interrupted run does not leave hundreds of MiB behind for good.
 */
export function removeStaleWorkDirs(parent: string, prefix: string): void {
  if (!existsSync(parent)) return;
  for (const name of readdirSync(parent)) {
    if (!name.startsWith(prefix)) continue;
    const pid = Number(name.slice(prefix.length).split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0 || existsSync(`/proc/${pid}`)) continue;
    removeUnlessMounted(join(parent, name));
  }
}

export interface BaseTarball {
  readonly path: string;
  /** false when the tarball came from the cache. */
  readonly built: boolean;
  readonly seconds: number;
}

/**
 * Returns the stand-in base as a rootfs tarball, building it (debootstrap + Node + npm + user `node`,
 * uid/gid 1000 as in the official image) unless the cache already holds one for the same recipe.
 * Older tarballs in the cache are removed. The tarball appears under its final name only when complete.
 */
export async function ensureBaseTarball(): Promise<BaseTarball> {
  const started = Date.now();
  const recipe = baseRecipe();
  const key = createHash('sha256').update(JSON.stringify(recipe)).digest('hex').slice(0, 16);
  const path = join(BASE_CACHE_DIR, `node-${process.version}-${SUITE}-${key}.tar`);
  if (existsSync(path)) return { path, built: false, seconds: (Date.now() - started) / 1000 };

  mkdirSync(BASE_CACHE_DIR, { recursive: true });
  removeStaleWorkDirs(BASE_CACHE_DIR, 'tmp-');
  const work = join(BASE_CACHE_DIR, `tmp-${process.pid}-${Date.now()}`);
  const rootfs = join(work, 'rootfs');
  mkdirSync(rootfs, { recursive: true });
  try {
    await runOk('debootstrap', [`--variant=${VARIANT}`, SUITE, rootfs, String(recipe['mirror'])], {
      timeoutMs: 15 * 60_000,
    });
    const script = [
      'set -eu',
      'R=$1 NODE=$2 NPM=$3 CA=$4 OUT=$5',
      // The official image's layout: node and npm under /usr/local.
      'install -D -m 0755 "$NODE" "$R/usr/local/bin/node"',
      'mkdir -p "$R/usr/local/lib/node_modules"',
      'cp -a "$NPM" "$R/usr/local/lib/node_modules/npm"',
      'ln -s ../lib/node_modules/npm/bin/npm-cli.js "$R/usr/local/bin/npm"',
      'ln -s ../lib/node_modules/npm/bin/npx-cli.js "$R/usr/local/bin/npx"',
      'chroot "$R" groupadd --gid 1000 node',
      'chroot "$R" useradd --uid 1000 --gid node --shell /bin/bash --create-home node',
      // Stand-in only: trust the TLS-inspecting proxy in front of the npm registry.
      'if [ -f "$CA" ]; then',
      '  install -D -m 0644 "$CA" "$R/etc/ssl/certs/ca-certificates.crt"',
      '  mkdir -p "$R/usr/local/etc"',
      '  echo "cafile=/etc/ssl/certs/ca-certificates.crt" > "$R/usr/local/etc/npmrc"',
      'fi',
      'rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*',
      'chroot "$R" /usr/local/bin/node --version >/dev/null',
      // Built inside the work directory, renamed into place only once complete.
      'tar -C "$R" -cf "$R.tar" .',
      'mv "$R.tar" "$OUT"',
    ].join('\n');
    await runOk('sh', ['-c', script, 'sh', rootfs, process.execPath, hostNpmDir(), HOST_CA_BUNDLE, path]);
  } finally {
    removeUnlessMounted(work);
  }
  for (const f of readdirSync(BASE_CACHE_DIR)) {
    const stale = join(BASE_CACHE_DIR, f);
    if (stale !== path && f.endsWith('.tar')) rmSync(stale, { force: true });
  }
  return { path, built: true, seconds: (Date.now() - started) / 1000 };
}
