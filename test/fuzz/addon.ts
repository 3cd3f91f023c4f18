/**
 * Builds the Jazzer.js native addon on this machine.
 *
 * Why: @jazzer.js/core 4.x ships a prebuilt addon that needs glibc 2.38 (Debian 12 has 2.36), and
 * 2.x's install script downloads a prebuilt binary or a patched LLVM from GitHub, which this
 * project's machines cannot reach (package.json denies that script in `allowScripts`). 2.1.0 does
 * ship the addon's C++ sources in its npm package, so we compile them here with g++ and link them
 * against Debian's stock libFuzzer (libclang-rt-16-dev, installed by .ci/run) through the small
 * compatibility layer in test/fuzz/jazzer-addon/. The result goes where the package looks for it
 * (node_modules/@jazzer.js/fuzzer/build/Release/jazzerjs.node) and is rebuilt only when an input
 * changes.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { REPO_ROOT } from '../helpers/paths';

/** Debian package that provides libFuzzer; .ci/run installs it. */
export const LIBFUZZER_PACKAGE = 'libclang-rt-16-dev';

const COMPAT_DIR = join(REPO_ROOT, 'test', 'fuzz', 'jazzer-addon');

function resolvePackageDir(name: string, from: string): string {
  return dirname(require.resolve(`${name}/package.json`, { paths: [from] }));
}

/** The newest stock libFuzzer (without main) that an installed LLVM provides, if any. */
function findLibFuzzer(): string | undefined {
  const arch = process.arch === 'x64' ? 'x86_64' : process.arch === 'arm64' ? 'aarch64' : process.arch;
  const found: Array<{ version: number; path: string }> = [];
  const lib = '/usr/lib';
  for (const entry of existsSync(lib) ? readdirSync(lib) : []) {
    const m = /^llvm-(\d+)$/.exec(entry);
    if (!m) continue;
    const clang = join(lib, entry, 'lib', 'clang');
    for (const version of existsSync(clang) ? readdirSync(clang) : []) {
      const path = join(clang, version, 'lib', 'linux', `libclang_rt.fuzzer_no_main-${arch}.a`);
      if (existsSync(path)) found.push({ version: Number(m[1]), path });
    }
  }
  found.sort((a, b) => b.version - a.version);
  return found[0]?.path;
}

function findNodeHeaders(): string | undefined {
  const candidates = [
    join(dirname(process.execPath), '..', 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ];
  return candidates.find((dir) => existsSync(join(dir, 'node_api.h')));
}

/**
 * Makes sure the addon exists and matches its inputs; returns its path. Throws with what to install
 * when the toolchain is missing.
 */
export function ensureJazzerAddon(): string {
  const fuzzerDir = resolvePackageDir('@jazzer.js/fuzzer', REPO_ROOT);
  const addonApiDir = resolvePackageDir('node-addon-api', fuzzerDir);
  const out = join(fuzzerDir, 'build', 'Release', 'jazzerjs.node');
  const stampPath = join(fuzzerDir, 'build', 'Release', 'sealbox-build.json');

  const libFuzzer = findLibFuzzer();
  const nodeHeaders = findNodeHeaders();
  if (!libFuzzer || !nodeHeaders) {
    throw new Error(
      `cannot build the Jazzer.js addon: ${libFuzzer ? '' : `stock libFuzzer not found (apt-get install ${LIBFUZZER_PACKAGE}) `}` +
        `${nodeHeaders ? '' : "Node's headers (node_api.h) not found"}`.trim(),
    );
  }

  const cppDirs = [fuzzerDir, join(fuzzerDir, 'shared')];
  const sources = [
    ...cppDirs.flatMap((dir) =>
      readdirSync(dir)
        .filter((f) => f.endsWith('.cpp'))
        .sort()
        .map((f) => join(dir, f)),
    ),
    join(COMPAT_DIR, 'compat.cpp'),
  ];
  const inputs = [...sources, join(COMPAT_DIR, 'fuzzer', 'FuzzerDefs.h'), libFuzzer];
  const hash = createHash('sha256');
  for (const input of inputs) hash.update(input).update(readFileSync(input));
  hash.update(process.version);
  const stamp = JSON.stringify({ inputs: hash.digest('hex') });
  if (existsSync(out) && existsSync(stampPath) && readFileSync(stampPath, 'utf8') === stamp) return out;

  mkdirSync(dirname(out), { recursive: true });
  const args = [
    '-shared',
    '-fPIC',
    '-O2',
    '-std=c++17',
    '-fexceptions',
    // What the package's CMakeLists.txt and node-addon-api's C++-exceptions mode set.
    '-DNAPI_VERSION=4',
    '-DNAPI_CPP_EXCEPTIONS',
    `-I${nodeHeaders}`,
    `-I${addonApiDir}`,
    `-I${COMPAT_DIR}`,
    `-I${fuzzerDir}`,
    ...sources,
    '-Wl,--whole-archive',
    libFuzzer,
    '-Wl,--no-whole-archive',
    '-lpthread',
    '-o',
    out,
  ];
  try {
    execFileSync('g++', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString() ?? '';
    throw new Error(`building the Jazzer.js addon failed: g++ ${args.join(' ')}\n${stderr}`);
  }
  writeFileSync(stampPath, stamp);
  return out;
}
