/**
 * Servers under test, each in its own process on a Unix socket in a fresh temp dir: the real sealbox
 * CLI (`sealbox serve --config FILE`) from the same build as this file, and a plain grpc-js echo server.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, openSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SERVER_ENV, SERVER_NODE_FLAGS } from '../../src/cli/launch';
import { type ConfigInput, mergeConfigInput } from '../../src/config/config';
import { createLocalKeyFile } from '../../src/kek/local';
import { BENCH_LIB_DIR, stopChild, trackChild, trackTempDir, WATCH_PARENT, waitForSocket } from './proc';
import { ALLOC_PROBE, ServerProbe } from './server-probe';

/** `<build>/src/cli.js`, next to `<build>/bench/lib`. */
export const CLI_PATH = join(BENCH_LIB_DIR, '..', '..', 'src', 'cli.js');
const ECHO_SERVER_PATH = join(BENCH_LIB_DIR, '..', 'echo-server.js');

/** The key alias every benchmark sealbox is configured with. */
export const BENCH_KEY_ALIAS = 'bench';

export interface SpawnedServer {
  readonly pid: number;
  /** "unix:/tmp/…/x.sock" */
  readonly target: string;
  /** The effective config file contents (sealbox only). */
  readonly config?: Record<string, unknown>;
  /** Allocation and GC counters inside the server, when started with `probe: true`. */
  readonly probe?: ServerProbe;
  /** Stops the server (SIGTERM, SIGKILL after 5 s) and removes its temp dir. */
  stop(): Promise<void>;
}

/**
 * Starts `sealbox serve` with a local key and a Unix socket in a temp dir, `overrides` deep-merged
 * into the config (e.g. `{ pool: { mode: 'inline' } }`). `options.keys` replaces the local key
 * altogether (e.g. an Azure alias on the dev vault, lib/vault.ts). Resolves once the socket accepts
 * connections.
 */
export interface SpawnOptions {
  /** Load lib/alloc-probe.js into the server (fresh Buffer bytes, GC counts; see server-probe.ts). */
  readonly probe?: boolean;
  /** Extra node arguments before the script (e.g. V8 heap flags to measure); they come last, so win. */
  readonly nodeArgs?: readonly string[];
  /**
   * Start node without the flags and environment sealbox ships with (src/cli/launch.ts), to show
   * what they buy. By default every server — sealbox and the echo alike — runs with them, as deployed.
   */
  readonly stockNode?: boolean;
  /** Added to the server's environment (e.g. the protobuf echo's response shape). */
  readonly env?: Readonly<Record<string, string>>;
}

/** Node arguments and env for `options`; the probe file lives in the server's temp dir. */
function nodeArgsFor(
  dir: string,
  options: SpawnOptions,
): { args: string[]; env: NodeJS.ProcessEnv; file?: string } {
  const args = [
    ...(options.stockNode ? [] : SERVER_NODE_FLAGS),
    ...serverNodeArgs(),
    ...(options.nodeArgs ?? []),
  ];
  const env: NodeJS.ProcessEnv = { ...process.env, ...(options.stockNode ? {} : SERVER_ENV), ...options.env };
  if (options.stockNode) for (const name of Object.keys(SERVER_ENV)) delete env[name];
  if (!options.probe) return { args, env };
  const file = join(dir, 'probe.json');
  args.push('--require', ALLOC_PROBE);
  return { args, env: { ...env, SEALBOX_BENCH_PROBE_FILE: file }, file };
}

export async function spawnSealbox(
  overrides: ConfigInput = {},
  label = 'sealbox',
  options: { keys?: ConfigInput['keys'] } & SpawnOptions = {},
): Promise<SpawnedServer> {
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-bench-'));
  const removeDir = trackTempDir(dir);
  let keys = options.keys as ConfigInput['keys'];
  if (keys === undefined) {
    const keyFile = join(dir, 'kek.json');
    createLocalKeyFile(keyFile, BENCH_KEY_ALIAS);
    keys = { [BENCH_KEY_ALIAS]: { provider: 'local', file: keyFile } };
  }
  const socketPath = join(dir, 'sealbox.sock');
  const config = mergeConfigInput(
    {
      dataDir: dir,
      listen: { socket: socketPath },
      keys,
      log: { level: 'warn' },
      shutdown: { graceMs: 2000 },
    },
    overrides,
  );
  const configFile = join(dir, 'config.json');
  writeFileSync(configFile, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
  const node = nodeArgsFor(dir, options);
  const child = spawn(
    process.execPath,
    [...node.args, '--require', WATCH_PARENT, CLI_PATH, 'serve', '--config', configFile],
    { stdio: ['ignore', serverStdout(label), 'pipe'], env: node.env },
  );
  return started(child, socketPath, label, removeDir, config, node.file);
}

/**
 * Extra node flags for the servers under test (sealbox and the echo), not for the bench or its load
 * generators: SEALBOX_BENCH_SERVER_NODE_ARGS, space-separated, e.g. "--cpu-prof --cpu-prof-dir=/tmp/p"
 * or "--trace-gc" (profiling a server child; bench/README.md "Unary per-call cost").
 */
function serverNodeArgs(): string[] {
  return (process.env['SEALBOX_BENCH_SERVER_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
}

/**
 * Where a server's stdout goes: discarded, or with SEALBOX_BENCH_SERVER_STDOUT_DIR set, a file
 * `<label>-<ms>.log` there (--trace-gc writes to stdout).
 */
function serverStdout(label: string): 'ignore' | number {
  const dir = process.env['SEALBOX_BENCH_SERVER_STDOUT_DIR'];
  return dir ? openSync(join(dir, `${label}-${Date.now()}.log`), 'w') : 'ignore';
}

/** Starts the echo server (bench/echo-server.ts) on a Unix socket in a temp dir. */
export async function spawnEcho(label = 'echo', options: SpawnOptions = {}): Promise<SpawnedServer> {
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-bench-echo-'));
  const removeDir = trackTempDir(dir);
  const socketPath = join(dir, 'echo.sock');
  const node = nodeArgsFor(dir, options);
  const child = spawn(process.execPath, [...node.args, ECHO_SERVER_PATH, socketPath], {
    stdio: ['ignore', serverStdout(label), 'pipe'],
    env: node.env,
  });
  return started(child, socketPath, label, removeDir, undefined, node.file);
}

async function started(
  child: ChildProcess,
  socketPath: string,
  label: string,
  removeDir: () => void,
  config?: Record<string, unknown>,
  probeFile?: string,
): Promise<SpawnedServer> {
  trackChild(child);
  child.stderr?.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim()) process.stderr.write(`[${label} ${child.pid}] ${line}\n`);
    }
  });
  const stop = async () => {
    await stopChild(child);
    removeDir();
  };
  try {
    await waitForSocket(socketPath, () => child.exitCode === null && child.signalCode === null);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    pid: child.pid!,
    target: `unix:${socketPath}`,
    ...(config ? { config } : {}),
    ...(probeFile ? { probe: new ServerProbe(child.pid!, probeFile) } : {}),
    stop,
  };
}
