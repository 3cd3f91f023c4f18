/**
 * Command-line parsing: which command runs, and its flags, checked strictly against that command's
 * own flag list (an unknown or misplaced flag is a UsageError, exit 2). Each command has its help text
 * here, next to its flags, so the two stay in step.
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { configFlags } from '../config/config';
import { EXIT_CODES_HELP, UsageError } from './exit';

type Options = NonNullable<ParseArgsConfig['options']>;

/** Flags every command takes. */
const COMMON: Options = {
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean' },
};

/** The flags loadConfig reads (--config, --socket, …). */
const CONFIG: Options = Object.fromEntries(configFlags.map((f) => [f, { type: 'string' as const }]));

const CONFIG_FLAGS_HELP = `  --config FILE         config file (JSON or YAML); also SEALBOX_CONFIG
  --socket PATH         Unix socket to listen on ("none" to disable); also SEALBOX_SOCKET
  --tcp HOST:PORT       also listen on TCP (loopback by default); also SEALBOX_TCP
  --data-dir DIR        sealbox's state directory; also SEALBOX_DATA_DIR
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent; also SEALBOX_LOG_LEVEL
  --pool-mode MODE      auto|workers|inline; also SEALBOX_POOL_MODE
  --pool-threads N      worker threads; also SEALBOX_POOL_THREADS
  --kms-socket PATH     also serve the Kubernetes KMS v2 plugin there (docs/kms.md); also SEALBOX_KMS_SOCKET
  --kms-alias ALIAS     the key alias the KMS plugin uses (default: the only key); also SEALBOX_KMS_ALIAS`;

/**
 * encrypt and decrypt take their files the way age, gpg and openssl users expect: the input as a
 * positional argument or --in, the output as -o/--output or --out; "-" is stdin or stdout.
 */
const TRANSFER: Options = {
  target: { type: 'string' },
  in: { type: 'string' },
  out: { type: 'string' },
  output: { type: 'string', short: 'o' },
};

const TRANSFER_FLAGS_HELP = `  --target TARGET       the sidecar: unix:/path or host:port (default unix:.sealbox/sealbox.sock,
                        where \`sealbox dev\` listens)
  FILE, --in FILE       read from FILE (default, or "-": stdin)
  -o, --output FILE     write to FILE (default, or "-": stdout; mode 0600); also --out FILE. Written as
                        FILE.partial and renamed into place only when the whole stream succeeded, so a
                        failure never leaves a partial FILE (an existing FILE is kept). stdout cannot be
                        taken back: check the exit code.`;

/** One command: its flags and its help. */
export interface CommandSpec {
  /** "check", "config print", … */
  readonly name: string;
  readonly summary: string;
  readonly options: Options;
  /** Takes one positional input file (encrypt, decrypt); other commands take no arguments. */
  readonly inputArgument?: boolean;
  readonly help: string;
}

export const COMMANDS: Readonly<Record<string, CommandSpec>> = {
  serve: {
    name: 'serve',
    summary: 'run the sidecar from a config file, environment and flags',
    options: { ...COMMON, ...CONFIG },
    help: `Usage: sealbox serve [flags]

Runs the sidecar. Configuration comes from defaults, the config file, SEALBOX_* environment variables
and flags, in increasing precedence (docs: README "Configuration").

Flags:
${CONFIG_FLAGS_HELP}
  -h, --help            this help`,
  },
  dev: {
    name: 'dev',
    summary: 'run the sidecar for development on the embedded dev vault (or a local key file)',
    options: { ...COMMON, ...CONFIG, 'vault-port': { type: 'string' }, 'local-kek': { type: 'boolean' } },
    help: `Usage: sealbox dev [flags]

Runs the sidecar for development: starts the embedded dev vault (HTTPS, Key Vault API) with an
RSA-2048 key "sealbox-dev" created on first start, and serves alias "dev" with it through the Azure
SDK. Listens on <data-dir>/sealbox.sock (default .sealbox/sealbox.sock) for Envelope and Health, and on
<data-dir>/admin.sock for the Admin service (RevokeKey, FlushCache, GetKeyStatus); both mode 0600.
With --local-kek there is no dev vault and no admin socket.

Flags:
${CONFIG_FLAGS_HELP}
  --vault-port PORT     dev vault HTTPS port (default 47443; key ids embed it, so keep it stable)
  --local-kek           use a local key file (<data-dir>/dev-kek.json) instead of the dev vault
  -h, --help            this help`,
  },
  'dev-vault': {
    name: 'dev-vault',
    summary: 'run only the embedded dev vault (for tests, benchmarks, or a sealbox elsewhere)',
    options: { ...COMMON, 'data-dir': { type: 'string' }, 'vault-port': { type: 'string' } },
    help: `Usage: sealbox dev-vault [flags]

Runs only the embedded dev vault and prints its URL, CA file and token files.

Flags:
  --data-dir DIR        state directory (the vault uses DIR/vault; default .sealbox); also SEALBOX_DATA_DIR
  --vault-port PORT     HTTPS port (default 47443)
  -h, --help            this help`,
  },
  check: {
    name: 'check',
    summary: 'preflight every configured key: get, wrapKey, unwrapKey, enabled, in date',
    options: { ...COMMON, ...CONFIG },
    help: `Usage: sealbox check [flags]

For every configured key: reads the current version (get) and checks that it is enabled and within
its activation (nbf) and expiry (exp) dates, wraps a random 32-byte data key (wrapKey), unwraps it
(unwrapKey) and compares the result. Prints one line per key, ✓ or ✗ with what failed and what to do.
Keys are checked concurrently; nothing is cached or written.

Flags (the same configuration sources as serve):
${CONFIG_FLAGS_HELP}
  -h, --help            this help

${EXIT_CODES_HELP}`,
  },
  encrypt: {
    name: 'encrypt',
    summary: 'encrypt a file or stdin through a running sidecar',
    options: {
      ...COMMON,
      ...TRANSFER,
      alias: { type: 'string' },
      context: { type: 'string', multiple: true },
      'chunk-size': { type: 'string' },
    },
    inputArgument: true,
    help: `Usage: sealbox encrypt [--alias NAME] [--context k=v ...] [-o OUTPUT] [INPUT] [flags]

  sealbox encrypt --alias dev -o report.pdf.sbx report.pdf
  tar c dir | sealbox encrypt --alias dev > dir.tar.sbx

Streams plaintext through the sidecar's EncryptStream and writes the ciphertext. A progress line is
shown on stderr when stderr is a terminal.

Flags:
  --alias NAME          key alias to encrypt under (default dev)
  --context k=v         encryption context pair, bound to the ciphertext; repeatable
  --chunk-size BYTES    plaintext bytes per chunk (default: the sidecar's envelope.defaultChunkSize)
${TRANSFER_FLAGS_HELP}
  -h, --help            this help

${EXIT_CODES_HELP}`,
  },
  decrypt: {
    name: 'decrypt',
    summary: 'decrypt a file or stdin through a running sidecar',
    options: { ...COMMON, ...TRANSFER, 'expect-context': { type: 'string', multiple: true } },
    inputArgument: true,
    help: `Usage: sealbox decrypt [--expect-context k=v ...] [-o OUTPUT] [INPUT] [flags]

  sealbox decrypt -o report.pdf report.pdf.sbx

Streams ciphertext through the sidecar's DecryptStream and writes the verified plaintext. On failure
the gRPC status and the sealbox error code are printed and the exit code is non-zero; the output
file is then not created (its .partial file is deleted). A progress line is shown on stderr when
stderr is a terminal.

Flags:
  --expect-context k=v  a pair the ciphertext's encryption context must contain; repeatable
${TRANSFER_FLAGS_HELP}
  -h, --help            this help

${EXIT_CODES_HELP}`,
  },
  'config print': {
    name: 'config print',
    summary: 'print the effective configuration as YAML, secrets redacted',
    options: { ...COMMON, ...CONFIG },
    help: `Usage: sealbox config print [flags]

Prints the effective configuration (defaults, config file, environment and flags merged and
validated) as YAML. Secrets (credential tokens, the webhook secret) are shown as "[redacted]"; file
paths are shown as they are.

Flags (the same configuration sources as serve):
${CONFIG_FLAGS_HELP}
  -h, --help            this help`,
  },
};

/** `sealbox --help`. */
export const MAIN_HELP = `Usage: sealbox <command> [flags]

Commands:
${Object.values(COMMANDS)
  .map((c) => `  ${c.name.padEnd(14)}${c.summary}`)
  .join('\n')}

Run "sealbox <command> --help" for a command's flags.

Flags:
  -h, --help     this help
  --version      print the version

${EXIT_CODES_HELP}`;

/** What the command line asks for. */
export type Invocation =
  /** Print `text`; on stdout with exit 0 when asked for, on stderr with exit 2 when no command was given. */
  | { readonly kind: 'help'; readonly text: string; readonly asked: boolean }
  | { readonly kind: 'version' }
  | {
      readonly kind: 'run';
      readonly command: string;
      readonly values: Readonly<Record<string, string | boolean | string[] | undefined>>;
    };

/** Every flag any command knows, to find the command word before knowing which command it is. */
const ALL_OPTIONS: Options = Object.assign({}, ...Object.values(COMMANDS).map((c) => c.options));

/**
 * Parses argv (without node and the script). The command is the first positional argument, so flags
 * may come before it (`sealbox --config x check`); flags are then checked against that command only.
 * Throws UsageError for an unknown command, flag or stray argument.
 */
export function parseCommandLine(argv: readonly string[]): Invocation {
  const { tokens } = parseArgs({
    args: [...argv],
    options: ALL_OPTIONS,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const words = tokens.filter((t) => t.kind === 'positional');
  const first = words[0];
  if (!first) {
    const flags = new Set(tokens.flatMap((t) => (t.kind === 'option' ? [t.name] : [])));
    if (flags.has('version')) return { kind: 'version' };
    return { kind: 'help', text: MAIN_HELP, asked: flags.has('help') };
  }
  let name = first.value;
  const consumed = new Set([first.index]);
  if (name === 'config') {
    const sub = words[1];
    if (!sub) {
      if (argv.includes('--help') || argv.includes('-h'))
        return { kind: 'help', text: COMMANDS['config print']!.help, asked: true };
      throw new UsageError('"sealbox config" needs a subcommand: print');
    }
    if (sub.value !== 'print')
      throw new UsageError(`unknown subcommand "config ${sub.value}"; try: config print`);
    name = 'config print';
    consumed.add(sub.index);
  }
  const spec = COMMANDS[name];
  if (!spec) throw new UsageError(`unknown command "${name}"`);
  const rest = argv.filter((_, i) => !consumed.has(i));
  const who = `sealbox ${spec.name}`;
  const helpHint = `sealbox ${spec.name} --help`;
  const parsed = parseOrExplain(rest, spec, who, helpHint);
  if (parsed.values['help']) return { kind: 'help', text: spec.help, asked: true };
  if (parsed.values['version']) return { kind: 'version' };
  const values = spec.inputArgument
    ? transferFiles(parsed.values, parsed.positionals, who, helpHint)
    : parsed.values;
  return { kind: 'run', command: name, values };
}

type Values = Record<string, string | boolean | string[] | undefined>;

/**
 * Folds the file spellings of encrypt/decrypt into `in` and `out`: a positional INPUT or --in, and
 * -o/--output or --out; "-" (stdin/stdout) leaves them unset. Two spellings of one file are a
 * UsageError, even when they agree, so a typo cannot pick a file silently.
 */
function transferFiles(
  values: Values,
  positionals: readonly string[],
  who: string,
  helpHint: string,
): Values {
  const out: Values = { ...values };
  if (positionals.length > 1) {
    throw new UsageError(
      `${who}: unexpected argument ${positionals[1]}: one input file at most (the output goes in -o FILE); see "${helpHint}"`,
    );
  }
  const input = positionals[0];
  if (input !== undefined && values['in'] !== undefined) {
    throw new UsageError(`${who}: the input is given twice (${input} and --in ${values['in']}); keep one`);
  }
  if (values['output'] !== undefined && values['out'] !== undefined) {
    throw new UsageError(
      `${who}: the output is given twice (-o/--output ${values['output']} and --out ${values['out']}); keep one`,
    );
  }
  const inFile = input ?? (values['in'] as string | undefined);
  const outFile = (values['output'] ?? values['out']) as string | undefined;
  delete out['output'];
  delete out['in'];
  delete out['out'];
  if (inFile !== undefined && inFile !== '-') out['in'] = inFile;
  if (outFile !== undefined && outFile !== '-') out['out'] = outFile;
  return out;
}

function parseOrExplain(
  args: readonly string[],
  spec: CommandSpec,
  who: string,
  helpHint: string,
): { values: Values; positionals: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args: [...args],
      options: spec.options,
      strict: true,
      allowPositionals: spec.inputArgument === true,
    });
    return { values: values as Values, positionals };
  } catch (err) {
    const e = err as { code?: string; message?: string };
    const quoted = /'([^']+)'/.exec(e.message ?? '')?.[1];
    switch (e.code) {
      case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
        throw new UsageError(`${who}: unknown flag ${quoted ?? ''}; see "${helpHint}"`);
      case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
        throw new UsageError(`${who}: ${e.message}; see "${helpHint}"`);
      case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
        throw new UsageError(`${who}: unexpected argument ${quoted ?? ''}; see "${helpHint}"`);
      default:
        throw err;
    }
  }
}

/** Parses repeated `k=v` flags into a context map. The key is up to the first "="; values may contain "=". */
export function parsePairs(flag: string, pairs: readonly string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of pairs ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new UsageError(`--${flag} ${JSON.stringify(pair)}: expected key=value`);
    const key = pair.slice(0, eq);
    if (Object.hasOwn(out, key)) throw new UsageError(`--${flag}: key "${key}" is given twice`);
    out[key] = pair.slice(eq + 1);
  }
  return out;
}
