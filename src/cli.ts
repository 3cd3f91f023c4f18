#!/usr/bin/env -S MALLOC_TRIM_THRESHOLD_=268435456 MALLOC_MMAP_THRESHOLD_=33554432 node --initial-old-space-size=128
/**
 * The sealbox command line. `sealbox serve` runs the sidecar from a config; `sealbox dev` (what
 * `npm start` runs) creates a local development key on first start and serves with it; `check`,
 * `encrypt`, `decrypt` and `config print` are the operator tools (src/cli/). Flags and help texts live
 * in src/cli/args.ts, exit codes in src/cli/exit.ts.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseCommandLine, parsePairs } from './cli/args';
import { checkAll, checkExitCode, formatReport } from './cli/check';
import { ExitCode, UsageError } from './cli/exit';
import { missingLaunchSettings } from './cli/launch';
import { formatConfig } from './cli/print';
import { ConfigError, loadConfig } from './config/config';

// The sidecar, the dev vault, the Azure SDK and gRPC load only in the commands that use them, so
// --help, --version and `config print` start quickly.
const lazy = {
  main: (): typeof import('./main') => require('./main'),
  devvault: (): typeof import('./devvault') => require('./devvault'),
  keyvault: (): typeof import('@azure/keyvault-keys') => require('@azure/keyvault-keys'),
  localKek: (): typeof import('./kek/local') => require('./kek/local'),
  transfer: (): typeof import('./cli/transfer') => require('./cli/transfer'),
};

/** Default dev vault port and key name for `sealbox dev`. */
const DEV_VAULT_PORT = 47443;
const DEV_KEY_NAME = 'sealbox-dev';

type Flags = Record<string, string | undefined>;
type Values = Readonly<Record<string, string | boolean | string[] | undefined>>;

function version(): string {
  const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** The string-valued flags, as loadConfig and the dev commands read them. */
function stringFlags(values: Values): Flags {
  const flags: Flags = {};
  for (const [name, value] of Object.entries(values)) if (typeof value === 'string') flags[name] = value;
  return flags;
}

async function main(argv: string[]): Promise<number> {
  const invocation = parseCommandLine(argv);
  switch (invocation.kind) {
    case 'version':
      process.stdout.write(`sealbox ${version()}\n`);
      return ExitCode.OK;
    case 'help':
      (invocation.asked ? process.stdout : process.stderr).write(`${invocation.text}\n`);
      return invocation.asked ? ExitCode.OK : ExitCode.USAGE;
  }
  const { command, values } = invocation;
  const flags = stringFlags(values);
  switch (command) {
    case 'serve':
      return serve(flags, {});
    case 'dev':
      return values['local-kek'] ? devLocal(flags) : dev(flags);
    case 'dev-vault':
      return devVault(flags);
    case 'check':
      return check(flags);
    case 'encrypt':
    case 'decrypt':
      return transfer(command, values);
    case 'config print':
      process.stdout.write(formatConfig(loadConfig({ flags, env: process.env })));
      return ExitCode.OK;
    default:
      throw new UsageError(`unknown command "${command}"`);
  }
}

/** `sealbox check`: every key through the sidecar's own providers; see src/cli/check.ts. */
async function check(flags: Flags): Promise<number> {
  const config = loadConfig({ flags, env: process.env });
  if (Object.keys(config.keys).length === 0) {
    throw new ConfigError('no keys are configured: nothing to check (add entries under "keys")');
  }
  const { buildProviders } = lazy.main();
  const checks = await checkAll(config, (alias, whole) => {
    const key = whole.keys[alias]!;
    const registry = buildProviders({ ...whole, keys: { [alias]: key } });
    return { provider: registry.forAlias(alias), close: () => registry.close() };
  });
  process.stdout.write(formatReport(checks));
  return checkExitCode(checks);
}

/** `sealbox encrypt|decrypt`; SIGINT/SIGTERM abort the stream and remove the partial output. */
async function transfer(mode: 'encrypt' | 'decrypt', values: Values): Promise<number> {
  const text = (name: string) => values[name] as string | undefined;
  const list = (name: string) => values[name] as string[] | undefined;
  let chunkSize: number | undefined;
  const chunkText = text('chunk-size');
  if (chunkText !== undefined) {
    chunkSize = Number(chunkText);
    if (!Number.isInteger(chunkSize) || chunkSize <= 0)
      throw new UsageError(`--chunk-size ${chunkText}: expected a positive number of bytes`);
  }
  const { defaultTarget, runTransfer } = lazy.transfer();
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => abort.abort(signal);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const result = await runTransfer(
      {
        mode,
        target: text('target') ?? defaultTarget(),
        alias: text('alias') ?? 'dev',
        context: parsePairs('context', list('context')),
        expectedContext: parsePairs('expect-context', list('expect-context')),
        ...(chunkSize === undefined ? {} : { chunkSize }),
        inFile: text('in'),
        outFile: text('out'),
      },
      { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, signal: abort.signal },
    );
    if (result.message) process.stderr.write(`sealbox ${mode}: ${result.message}\n`);
    return result.exitCode;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

async function serve(flags: Flags, base: object): Promise<number> {
  const config = loadConfig({ flags, env: process.env, base });
  if (Object.keys(config.keys).length === 0) {
    throw new ConfigError(
      'no keys are configured: add at least one entry under "keys" (see docs/configuration.md)',
    );
  }
  const { installShutdown, startSealbox } = lazy.main();
  const sealbox = await startSealbox(config);
  installShutdown(sealbox);
  const admin = config.listen.adminSocket ? `; Admin on unix:${config.listen.adminSocket}` : '';
  process.stdout.write(
    `sealbox ${version()} listening on ${sealbox.server.addresses.join(', ')} with keys: ${Object.keys(config.keys).join(', ')}${admin}\n`,
  );
  const missing = missingLaunchSettings(process.execArgv, process.env);
  if (missing.length > 0) {
    process.stderr.write(
      `sealbox: started without ${missing.join(' ')} (src/cli/launch.ts says why): sustained streams ` +
        'will spend more CPU on garbage collection and page faults. The image, `npm start` and the ' +
        'sealbox command set them; when starting node yourself, set them the same way.\n',
    );
  }
  return new Promise<number>(() => {}); // runs until a signal
}

function devDataDir(flags: Flags): string {
  const dataDir = resolve(flags['data-dir'] ?? process.env['SEALBOX_DATA_DIR'] ?? './.sealbox');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  return dataDir;
}

/** The dev vault's port: stable by default, because key ids (and so ciphertext headers) embed it. */
function vaultPort(flags: Flags): number {
  const text = flags['vault-port'] ?? process.env['SEALBOX_VAULT_PORT'] ?? String(DEV_VAULT_PORT);
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new ConfigError(`--vault-port: ${text} is not a port`);
  return port;
}

async function dev(flags: Flags): Promise<number> {
  const dataDir = devDataDir(flags);
  const { devVaultClientOptions, sealboxKeyConfig, startDevVault, staticTokenCredential } = lazy.devvault();
  const { KeyClient } = lazy.keyvault();
  const vault = await startDevVault({ dataDir: join(dataDir, 'vault'), port: vaultPort(flags) });
  const token = vault.devToken!;
  const keys = new KeyClient(vault.url, staticTokenCredential(token), devVaultClientOptions(vault));
  const existing = await keys.getKey(DEV_KEY_NAME).catch((err: { statusCode?: number }) => {
    if (err.statusCode === 404) return undefined;
    throw err;
  });
  if (!existing) {
    await keys.createRsaKey(DEV_KEY_NAME, { keySize: 2048 });
    process.stdout.write(`created RSA-2048 key "${DEV_KEY_NAME}" in the dev vault\n`);
  }
  process.stdout.write(
    `dev vault at ${vault.url} (CA ${vault.caFile}, token in ${join(dataDir, 'vault', 'dev-token')})\n`,
  );
  process.once('exit', () => void vault.close());
  return serve(flags, {
    dataDir,
    listen: { socket: join(dataDir, 'sealbox.sock'), adminSocket: join(dataDir, 'admin.sock') },
    keys: {
      dev: sealboxKeyConfig(vault, DEV_KEY_NAME, token),
    },
  });
}

async function devLocal(flags: Flags): Promise<number> {
  const dataDir = devDataDir(flags);
  const keyFile = join(dataDir, 'dev-kek.json');
  if (!existsSync(keyFile)) {
    const { createLocalKeyFile, uniqueLocalKeyName } = lazy.localKek();
    createLocalKeyFile(keyFile, uniqueLocalKeyName('dev'));
    process.stdout.write(`created a local development key in ${keyFile}\n`);
  }
  return serve(flags, {
    dataDir,
    listen: { socket: join(dataDir, 'sealbox.sock') },
    keys: { dev: { provider: 'local', file: keyFile } },
  });
}

async function devVault(flags: Flags): Promise<number> {
  const dataDir = join(devDataDir(flags), 'vault');
  const { startDevVault } = lazy.devvault();
  const vault = await startDevVault({ dataDir, port: vaultPort(flags) });
  process.stdout.write(
    [
      `dev vault listening at ${vault.url}`,
      `  CA file:      ${vault.caFile}`,
      `  dev token:    ${join(dataDir, 'dev-token')}`,
      `  admin token:  ${join(dataDir, 'admin-token')} (counters and faults under ${vault.url}/_sealbox/)`,
      '',
    ].join('\n'),
  );
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => {
      vault.close().then(() => process.exit(0));
    });
  }
  return new Promise<number>(() => {});
}

/** Exits once everything already written to stdout is flushed. */
function exit(code: number): void {
  process.stdout.write('', () => process.exit(code));
}

main(process.argv.slice(2)).then(exit, (err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof UsageError) {
    const hint = message.includes('--help') ? '' : '; see "sealbox --help" or "sealbox <command> --help"';
    process.stderr.write(`${message.startsWith('sealbox ') ? '' : 'sealbox: '}${message}${hint}\n`);
    exit(ExitCode.USAGE);
  } else {
    process.stderr.write(`sealbox: ${message}\n`);
    exit(err instanceof ConfigError ? ExitCode.USAGE : ExitCode.FAILURE);
  }
});
