#!/usr/bin/env node
/**
 * The sealbox command line. `sealbox serve` runs the sidecar from a config; `sealbox dev` (what
 * `npm start` runs) creates a local development key on first start and serves with it.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ConfigError, configFlags, loadConfig } from './config/config';
import { createLocalKeyFile } from './kek/local';
import { installShutdown, startSealbox } from './main';

const HELP: Record<string, string> = {
  main: `Usage: sealbox <command> [flags]

Commands:
  serve      run the sidecar from a config file, environment and flags
  dev        run the sidecar for development, with a local key created on first start

Flags for serve and dev:
  --config FILE         config file (JSON or YAML); also SEALBOX_CONFIG
  --socket PATH         Unix socket to listen on ("none" to disable); also SEALBOX_SOCKET
  --tcp HOST:PORT       also listen on TCP (loopback by default); also SEALBOX_TCP
  --data-dir DIR        sealbox's state directory; also SEALBOX_DATA_DIR
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent; also SEALBOX_LOG_LEVEL
  --pool-mode MODE      workers|inline; also SEALBOX_POOL_MODE
  --pool-threads N      worker threads; also SEALBOX_POOL_THREADS
  -h, --help            this help
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
      return dev(flags);
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

async function dev(flags: Record<string, string | undefined>): Promise<number> {
  const dataDir = resolve(flags['data-dir'] ?? process.env['SEALBOX_DATA_DIR'] ?? './.sealbox');
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
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

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    const message = err instanceof ConfigError || err instanceof Error ? err.message : String(err);
    process.stderr.write(`sealbox: ${message}\n`);
    process.exit(err instanceof ConfigError ? 2 : 1);
  },
);
