#!/usr/bin/env node
/**
 * The sealbox command line. `sealbox serve` runs the sidecar from a config; `sealbox dev` (what
 * `npm start` runs) creates a local development key on first start and serves with it.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { KeyClient } from '@azure/keyvault-keys';
import { ConfigError, configFlags, loadConfig } from './config/config';
import { devVaultClientOptions, startDevVault, staticTokenCredential } from './devvault';
import { createLocalKeyFile } from './kek/local';
import { installShutdown, startSealbox } from './main';

/** Default dev vault port and key name for `sealbox dev`. */
const DEV_VAULT_PORT = 47443;
const DEV_KEY_NAME = 'sealbox-dev';

const HELP: Record<string, string> = {
  main: `Usage: sealbox <command> [flags]

Commands:
  serve      run the sidecar from a config file, environment and flags
  dev        run the sidecar for development: starts the embedded dev vault (HTTPS, Key Vault API)
             with an RSA-2048 key created on first start, and serves with it through the Azure SDK
  dev-vault  run only the embedded dev vault (for tests, benchmarks, or a sealbox elsewhere)

Flags for serve and dev:
  --config FILE         config file (JSON or YAML); also SEALBOX_CONFIG
  --socket PATH         Unix socket to listen on ("none" to disable); also SEALBOX_SOCKET
  --tcp HOST:PORT       also listen on TCP (loopback by default); also SEALBOX_TCP
  --data-dir DIR        sealbox's state directory; also SEALBOX_DATA_DIR
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent; also SEALBOX_LOG_LEVEL
  --pool-mode MODE      auto|workers|inline; also SEALBOX_POOL_MODE
  --pool-threads N      worker threads; also SEALBOX_POOL_THREADS
  -h, --help            this help

Flags for dev and dev-vault:
  --vault-port PORT     dev vault HTTPS port (default 47443; key ids embed it, so keep it stable)
  --local-kek           dev only: use a local key file instead of the dev vault
  --version             print the version`,
};

function version(): string {
  const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean' },
      'vault-port': { type: 'string' },
      'local-kek': { type: 'boolean' },
      ...Object.fromEntries(configFlags.map((f) => [f, { type: 'string' as const }])),
    },
  });
  if (values.version) {
    process.stdout.write(`sealbox ${version()}\n`);
    return 0;
  }
  const command = positionals[0];
  if (values.help || !command) {
    process.stdout.write(`${HELP.main}\n`);
    return command || values.help ? 0 : 2;
  }
  const flags = values as Record<string, string | undefined>;
  switch (command) {
    case 'serve':
      return serve(flags, {});
    case 'dev':
      return values['local-kek'] ? devLocal(flags) : dev(flags);
    case 'dev-vault':
      return devVault(flags);
    default:
      process.stderr.write(`sealbox: unknown command "${command}"\n\n${HELP.main}\n`);
      return 2;
  }
}

async function serve(flags: Record<string, string | undefined>, base: object): Promise<number> {
  const config = loadConfig({ flags, env: process.env, base });
  if (Object.keys(config.keys).length === 0) {
    throw new ConfigError(
      'no keys are configured: add at least one entry under "keys" (see docs/configuration.md)',
    );
  }
  const sealbox = await startSealbox(config);
  installShutdown(sealbox);
  process.stdout.write(
    `sealbox ${version()} listening on ${sealbox.server.addresses.join(', ')} with keys: ${Object.keys(config.keys).join(', ')}\n`,
  );
  return new Promise<number>(() => {}); // runs until a signal
}

function devDataDir(flags: Record<string, string | undefined>): string {
  const dataDir = resolve(flags['data-dir'] ?? process.env['SEALBOX_DATA_DIR'] ?? './.sealbox');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  return dataDir;
}

/** The dev vault's port: stable by default, because key ids (and so ciphertext headers) embed it. */
function vaultPort(flags: Record<string, string | undefined>): number {
  const text = flags['vault-port'] ?? process.env['SEALBOX_VAULT_PORT'] ?? String(DEV_VAULT_PORT);
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw new ConfigError(`--vault-port: ${text} is not a port`);
  return port;
}

async function dev(flags: Record<string, string | undefined>): Promise<number> {
  const dataDir = devDataDir(flags);
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
      dev: {
        provider: 'azure',
        vaultUrl: vault.url,
        keyName: DEV_KEY_NAME,
        credential: { kind: 'static-token', token },
        caFile: vault.caFile,
      },
    },
  });
}

async function devLocal(flags: Record<string, string | undefined>): Promise<number> {
  const dataDir = devDataDir(flags);
  const keyFile = join(dataDir, 'dev-kek.json');
  if (!existsSync(keyFile)) {
    createLocalKeyFile(keyFile, 'dev');
    process.stdout.write(`created a local development key in ${keyFile}\n`);
  }
  return serve(flags, {
    dataDir,
    listen: { socket: join(dataDir, 'sealbox.sock') },
    keys: { dev: { provider: 'local', file: keyFile } },
  });
}

async function devVault(flags: Record<string, string | undefined>): Promise<number> {
  const dataDir = join(devDataDir(flags), 'vault');
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

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    const message = err instanceof ConfigError || err instanceof Error ? err.message : String(err);
    process.stderr.write(`sealbox: ${message}\n`);
    process.exit(err instanceof ConfigError ? 2 : 1);
  },
);
