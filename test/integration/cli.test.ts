/**
 * The sealbox CLI as a child process: `check` against the embedded dev vault (real Azure SDK, real
 * HTTPS, identities with limited permissions), `encrypt`/`decrypt` through a real sidecar on a Unix
 * socket, `config print`, help, version and flag errors. Exit codes are asserted per failure class.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeyClient } from '@azure/keyvault-keys';
import { credentials } from '@grpc/grpc-js';
import { parse } from 'yaml';
import { loadApi } from '../../src/api/proto';
import {
  type DevVault,
  devVaultClientOptions,
  sealboxKeyConfig,
  startDevVault,
  staticTokenCredential,
} from '../../src/devvault';
import { createLocalKeyFile } from '../../src/kek/local';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';

/** The CLI in the same build directory as this test (dist/, .build-cli/, …). */
const CLI = join(__dirname, '..', '..', 'src', 'cli.js');

const FULL = 'cli-full-access-token';
const NO_UNWRAP = 'cli-no-unwrap-token';

let dir: string;

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'sealbox-cli-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

interface Run {
  readonly code: number | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

/** Runs the CLI with `args`, feeding `stdin`, with SEALBOX_* variables removed from the environment. */
function cli(args: string[], stdin?: Buffer): Promise<Run> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SEALBOX_')));
  const child = spawn(process.execPath, [CLI, ...args], { env, cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => out.push(b));
  child.stderr.on('data', (b: Buffer) => err.push(b));
  child.stdin.on('error', () => {}); // the CLI may exit before reading all of stdin
  child.stdin.end(stdin ?? Buffer.alloc(0));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) =>
      resolve({ code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString('utf8') }),
    );
  });
}

let configCount = 0;
/** Writes a JSON config file and returns its path. */
function configFile(config: object): string {
  const file = join(dir, `config-${++configCount}.json`);
  writeFileSync(file, JSON.stringify(config));
  return file;
}

describe('sealbox check against the dev vault', () => {
  let vault: DevVault;
  let keys: KeyClient;

  /** One azure key entry on the dev vault. */
  const azureKey = (keyName: string, token = FULL, extra: object = {}) => ({
    ...sealboxKeyConfig(vault, keyName, token),
    retry: { maxAttempts: 1, timeoutMs: 5000 },
    ...extra,
  });
  const check = (keyConfigs: Record<string, object>) =>
    cli(['check', '--config', configFile({ keys: keyConfigs })]);

  before(async () => {
    vault = await startDevVault({
      dataDir: join(dir, 'vault'),
      identities: {
        [FULL]: { name: 'sealbox', permissions: ['get', 'create', 'update', 'wrapKey', 'unwrapKey'] },
        [NO_UNWRAP]: { name: 'no-unwrap', permissions: ['get', 'wrapKey'] },
      },
    });
    keys = new KeyClient(vault.url, staticTokenCredential(FULL), devVaultClientOptions(vault));
    const hour = 3600_000;
    await Promise.all([
      keys.createRsaKey('cli-good', { keySize: 2048 }),
      keys.createRsaKey('cli-perm', { keySize: 2048 }),
      keys.createRsaKey('cli-disabled', { keySize: 2048, enabled: false }),
      keys.createRsaKey('cli-expired', { keySize: 2048, expiresOn: new Date(Date.now() - hour) }),
      keys.createRsaKey('cli-not-yet', { keySize: 2048, notBefore: new Date(Date.now() + 24 * hour) }),
      keys.createRsaKey('cli-soon', { keySize: 2048, expiresOn: new Date(Date.now() + 3 * 24 * hour) }),
    ]);
  });
  after(() => vault.close());

  test('a good key: ✓, exit 0, get, then exactly one wrapKey and one unwrapKey', async () => {
    vault.resetCounters();
    const run = await check({ pay: azureKey('cli-good') });
    const out = run.stdout.toString();
    assert.equal(run.code, 0, out + run.stderr);
    assert.match(
      out,
      /^✓ pay \(https:\/\/localhost:\d+\/keys\/cli-good\/[0-9a-f]{32}\): get, wrapKey, unwrapKey ok \(RSA-OAEP-256\); enabled, no expiry$/m,
    );
    assert.match(out, /all 1 key\(s\) passed/);
    const counters = vault.counters();
    // The SDK's CryptographyClient may read the key itself once; wrap and unwrap go to the vault once each.
    assert.ok((counters['getKey/cli-good'] ?? 0) >= 1, JSON.stringify(counters));
    assert.equal(counters['wrapKey/cli-good'], 1);
    assert.equal(counters['unwrapKey/cli-good'], 1);
  });

  test('an identity without unwrapKey: exit 3, names the operation and the identity to grant it to', async () => {
    const run = await check({ orders: azureKey('cli-perm', NO_UNWRAP) });
    const out = run.stdout.toString();
    assert.equal(run.code, 3, out);
    assert.match(
      out,
      /^✗ orders \(https:\/\/localhost:\d+\/keys\/cli-perm\/[0-9a-f]{32}\): unwrapKey denied/m,
    );
    assert.match(
      out,
      /grant unwrapKey to identity appid=no-unwrap;oid=[0-9a-f-]+ on key cli-perm in vault https:\/\/localhost:\d+/,
    );
    assert.match(out, /exit code 3 \(permission denied\)/);
  });

  test('a disabled key: exit 4, "enable the key version"', async () => {
    const run = await check({ billing: azureKey('cli-disabled') });
    const out = run.stdout.toString();
    assert.equal(run.code, 4, out);
    assert.match(
      out,
      /^✗ billing \(https:\/\/localhost:\d+\/keys\/cli-disabled\/[0-9a-f]{32}\): key version \S+ is disabled; enable the key version/m,
    );
  });

  test('an expired key: exit 5, "expired at …; rotate or extend"', async () => {
    const run = await check({ archive: azureKey('cli-expired') });
    const out = run.stdout.toString();
    assert.equal(run.code, 5, out);
    assert.match(
      out,
      /^✗ archive \(\S+\/keys\/cli-expired\/[0-9a-f]{32}\): key \S+ expired at \d{4}-\d\d-\d\dT[\d:.]+Z; rotate \(create a new version\) or extend its expiry/m,
    );
  });

  test('a key not valid yet: exit 5, names its activation date', async () => {
    const run = await check({ future: azureKey('cli-not-yet') });
    assert.equal(run.code, 5, run.stdout.toString());
    assert.match(run.stdout.toString(), /is not valid before \d{4}-\d\d-\d\dT[\d:.]+Z; wait until then/);
  });

  test('a key expiring within 30 days passes with a reminder', async () => {
    const run = await check({ soon: azureKey('cli-soon') });
    assert.equal(run.code, 0, run.stdout.toString());
    assert.match(run.stdout.toString(), /^✓ soon .*expires \S+, in 2 day\(s\): rotate or extend it soon$/m);
  });

  test('a missing key: exit 6, "not found in vault …"', async () => {
    const run = await check({ ghost: azureKey('cli-missing') });
    const out = run.stdout.toString();
    assert.equal(run.code, 6, out);
    assert.match(
      out,
      /^✗ ghost \(https:\/\/localhost:\d+\/keys\/cli-missing\): get: key cli-missing not found in vault https:\/\/localhost:\d+ \(404 KeyNotFound\); check keyName and vaultUrl/m,
    );
  });

  test('an unreachable vault: exit 7', async () => {
    const port = await closedPort();
    const run = await check({
      far: { ...azureKey('cli-good'), vaultUrl: `https://localhost:${port}` },
    });
    const out = run.stdout.toString();
    assert.equal(run.code, 7, out);
    assert.match(
      out,
      new RegExp(
        `^✗ far \\(https://localhost:${port}/keys/cli-good\\): get: vault https://localhost:${port} unreachable`,
        'm',
      ),
    );
  });

  test("several keys: every key gets a line, in config order; the exit code is the first failure's", async () => {
    const run = await check({
      a: azureKey('cli-good'),
      b: azureKey('cli-missing'),
      c: azureKey('cli-disabled'),
    });
    const lines = run.stdout.toString().trim().split('\n');
    assert.equal(run.code, 6, lines.join('\n'));
    assert.equal(lines.length, 4);
    assert.match(lines[0]!, /^✓ a /);
    assert.match(lines[1]!, /^✗ b /);
    assert.match(lines[2]!, /^✗ c /);
    assert.match(
      lines[3]!,
      /^2 of 3 key\(s\) failed; exit code 6 \(key not found\) from the first failing key, "b"$/,
    );
  });

  test('a local key file passes; an unreadable CA file is a configuration error (exit 2) on that key', async () => {
    const keyFile = join(dir, 'local-kek.json');
    if (!existsSync(keyFile)) createLocalKeyFile(keyFile, 'clitest');
    const run = await check({
      local: { provider: 'local', file: keyFile },
      broken: { ...azureKey('cli-good'), caFile: join(dir, 'no-such-ca.pem') },
    });
    const out = run.stdout.toString();
    assert.equal(run.code, 2, out);
    assert.match(out, /^✓ local \(local:clitest\/[0-9a-f]{32}\): get, wrapKey, unwrapKey ok \(A256KW\)/m);
    assert.match(
      out,
      /^✗ broken \(\S+\/keys\/cli-good\): cannot set up the key from its configuration: .*no-such-ca\.pem/m,
    );
  });

  test('config errors exit 2: a missing config file, no keys', async () => {
    const missing = await cli(['check', '--config', join(dir, 'nope.json')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read config file .*nope\.json/);
    const none = await cli(['check', '--config', configFile({})]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no keys are configured/);
  });
});

describe('sealbox encrypt / decrypt through a running sidecar', () => {
  let box: TestSealbox;
  before(async () => {
    box = await startTestSealbox();
  });
  after(() => box.close());

  test('a file round-trips; outputs appear only under their final names', async () => {
    const plain = join(dir, 'plain.bin');
    const sealed = join(dir, 'plain.bin.sbx');
    const opened = join(dir, 'plain.bin.out');
    const data = randomBytes(3 * 1024 * 1024 + 17);
    writeFileSync(plain, data);
    const target = ['--target', box.target];
    const enc = await cli([
      'encrypt',
      ...target,
      '--alias',
      box.alias,
      '--context',
      'file=plain.bin',
      '--context',
      'team=a=b',
      '--in',
      plain,
      '--out',
      sealed,
    ]);
    assert.equal(enc.code, 0, enc.stderr);
    assert.equal(enc.stderr, '', 'no progress output when stderr is not a terminal');
    assert.equal(enc.stdout.length, 0);
    assert.ok(!readFileSync(sealed).includes(data.subarray(0, 64)), 'the output is not the plaintext');
    const dec = await cli([
      'decrypt',
      ...target,
      '--expect-context',
      'team=a=b',
      '--in',
      sealed,
      '--out',
      opened,
    ]);
    assert.equal(dec.code, 0, dec.stderr);
    assert.ok(readFileSync(opened).equals(data));
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.endsWith('.partial')),
      [],
      'no .partial files remain',
    );
  });

  test('age/gpg habits: encrypt -o OUT IN, decrypt --output OUT IN, and "-" for stdin/stdout', async () => {
    const plain = join(dir, 'habit.txt');
    const data = randomBytes(100_000);
    writeFileSync(plain, data);
    const sealed = join(dir, 'habit.txt.sbx');
    const enc = await cli(['encrypt', '--target', box.target, '--alias', box.alias, '-o', sealed, plain]);
    assert.equal(enc.code, 0, enc.stderr);
    assert.equal(enc.stdout.length, 0, 'the ciphertext went to the -o file, not stdout');
    const opened = join(dir, 'habit.out');
    const dec = await cli(['decrypt', '--target', box.target, '--output', opened, sealed]);
    assert.equal(dec.code, 0, dec.stderr);
    assert.ok(readFileSync(opened).equals(data));
    const piped = await cli(['decrypt', '--target', box.target, '-o', '-', '-'], readFileSync(sealed));
    assert.equal(piped.code, 0, piped.stderr);
    assert.ok(piped.stdout.equals(data), '"-" is stdin and stdout');
    const twice = await cli(['decrypt', '--target', box.target, '-o', opened, '--out', opened, sealed]);
    assert.equal(twice.code, 2);
    assert.match(twice.stderr, /the output is given twice/);
  });

  test('stdin → encrypt → stdout → decrypt → stdout', async () => {
    const data = randomBytes(200_000);
    const enc = await cli(
      ['encrypt', '--target', box.target, '--alias', box.alias, '--chunk-size', '4096'],
      data,
    );
    assert.equal(enc.code, 0, enc.stderr);
    assert.ok(enc.stdout.length > data.length);
    const dec = await cli(['decrypt', '--target', box.target], enc.stdout);
    assert.equal(dec.code, 0, dec.stderr);
    assert.ok(dec.stdout.equals(data));
  });

  test('tampered input: exit 8 with gRPC status and sealbox code, and no output file (not even .partial)', async () => {
    const data = randomBytes(2 * 1024 * 1024);
    const enc = await cli(
      ['encrypt', '--target', box.target, '--alias', box.alias, '--chunk-size', '4096'],
      data,
    );
    assert.equal(enc.code, 0, enc.stderr);
    const sealedFile = join(dir, 'tampered.sbx');
    const tampered = Buffer.from(enc.stdout);
    const at = Math.floor(tampered.length * 0.9); // late: earlier chunks verify and are released first
    tampered[at]! ^= 0x01;
    writeFileSync(sealedFile, tampered);
    const out = join(dir, 'tampered.out');
    const dec = await cli(['decrypt', '--target', box.target, '--in', sealedFile, '--out', out]);
    assert.equal(dec.code, 8, dec.stderr);
    assert.match(
      dec.stderr,
      /^sealbox decrypt: decrypt failed: gRPC DATA_LOSS \(15\), sealbox error CIPHERTEXT_CORRUPT: .*; \S+tampered\.out was not written$/m,
    );
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.partial`), false);

    // Truncated: cut inside the last chunk.
    writeFileSync(sealedFile, enc.stdout.subarray(0, enc.stdout.length - 100));
    const cut = await cli(['decrypt', '--target', box.target, '--in', sealedFile, '--out', out]);
    assert.equal(cut.code, 8, cut.stderr);
    assert.match(cut.stderr, /sealbox error CIPHERTEXT_(TRUNCATED|CORRUPT)/);
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.partial`), false);
  });

  test('an existing --out file is left untouched when decrypt fails', async () => {
    const enc = await cli(
      ['encrypt', '--target', box.target, '--alias', box.alias, '--context', 'k=v'],
      Buffer.from('secret'),
    );
    const sealedFile = join(dir, 'ctx.sbx');
    writeFileSync(sealedFile, enc.stdout);
    const out = join(dir, 'ctx.out');
    writeFileSync(out, 'previous');
    const dec = await cli([
      'decrypt',
      '--target',
      box.target,
      '--expect-context',
      'k=other',
      '--in',
      sealedFile,
      '--out',
      out,
    ]);
    assert.equal(dec.code, 8, dec.stderr);
    assert.match(dec.stderr, /gRPC FAILED_PRECONDITION \(9\), sealbox error CONTEXT_MISMATCH/);
    assert.equal(readFileSync(out, 'utf8'), 'previous');
    assert.equal(existsSync(`${out}.partial`), false);
  });

  test('SIGINT mid-stream: exit 130, the plaintext already released is deleted with the .partial file', async () => {
    const data = randomBytes(4 * 1024 * 1024);
    const enc = await cli(
      ['encrypt', '--target', box.target, '--alias', box.alias, '--chunk-size', '4096'],
      data,
    );
    assert.equal(enc.code, 0, enc.stderr);
    const out = join(dir, 'interrupted.out');
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SEALBOX_')));
    const child = spawn(process.execPath, [CLI, 'decrypt', '--target', box.target, '--out', out], {
      env,
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    const stderr: Buffer[] = [];
    child.stderr.on('data', (b: Buffer) => stderr.push(b));
    const closed = new Promise<number | null>((resolve) => child.once('close', resolve));
    // The child is killed while part of this write may still be queued: that part fails with EPIPE.
    child.stdin.on('error', () => {});
    // Half the ciphertext, and stdin stays open: the stream cannot finish by itself.
    child.stdin.write(enc.stdout.subarray(0, enc.stdout.length / 2));
    // Wait, however long it takes, for verified plaintext in the .partial file, or for the child to
    // end (which it must not: its input is still open).
    const released = () => existsSync(`${out}.partial`) && statSync(`${out}.partial`).size > 0;
    const running = () => child.exitCode === null && child.signalCode === null;
    while (!released() && running()) await sleep(20);
    assert.ok(running(), `decrypt is still waiting for input: ${Buffer.concat(stderr)}`);
    assert.ok(released(), 'verified plaintext reaches the .partial file');
    child.kill('SIGINT');
    const code = await closed;
    assert.equal(code, 130, Buffer.concat(stderr).toString());
    assert.match(
      Buffer.concat(stderr).toString(),
      /decrypt interrupted; \S+interrupted\.out was not written/,
    );
    assert.equal(existsSync(out), false);
    assert.equal(existsSync(`${out}.partial`), false);
  });

  test('an unknown alias exits 6; no sidecar at --target exits 9', async () => {
    const alias = await cli(['encrypt', '--target', box.target, '--alias', 'nope'], Buffer.from('x'));
    assert.equal(alias.code, 6, alias.stderr);
    assert.match(
      alias.stderr,
      /gRPC NOT_FOUND \(5\), sealbox error KEY_NOT_FOUND: no key is configured with alias "nope"/,
    );
    const gone = await cli(
      ['decrypt', '--target', `unix:${join(dir, 'nobody.sock')}`, '--out', join(dir, 'gone.out')],
      Buffer.from('x'),
    );
    assert.equal(gone.code, 9, gone.stderr);
    assert.match(gone.stderr, /cannot reach sealbox at unix:\S+nobody\.sock/);
    assert.equal(existsSync(join(dir, 'gone.out.partial')), false);
  });
});

describe('sealbox dev', () => {
  test('says where it serves Envelope and Admin, and Admin answers on <data-dir>/admin.sock', async () => {
    const data = join(dir, 'dev-data');
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SEALBOX_')));
    const child = spawn(
      process.execPath,
      [CLI, 'dev', '--data-dir', data, '--vault-port', '0', '--log-level', 'silent'],
      { env, cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString('utf8');
    });
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString('utf8');
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    try {
      const started = Date.now();
      while (!stdout.includes('listening on')) {
        assert.ok(Date.now() - started < 60_000 && child.exitCode === null, `sealbox dev started: ${stderr}`);
        await sleep(50);
      }
      const adminSocket = join(data, 'admin.sock');
      assert.match(
        stdout,
        new RegExp(
          `^sealbox \\S+ listening on unix:${escapeRegExp(join(data, 'sealbox.sock'))} with keys: dev; Admin on unix:${escapeRegExp(adminSocket)}$`,
          'm',
        ),
      );
      const { Admin } = loadApi().sealbox.sealbox.v1;
      const admin = new Admin(`unix:${adminSocket}`, credentials.createInsecure());
      try {
        const status = await new Promise<{ keys: unknown[] }>((resolve, reject) =>
          admin.GetKeyStatus({}, (err, res) => (err || !res ? reject(err) : resolve(res))),
        );
        assert.ok(Array.isArray(status.keys));
      } finally {
        admin.close();
      }
    } finally {
      child.kill('SIGTERM');
      await exited;
    }
  });
});

/** `text` with regular-expression metacharacters escaped. */
function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('sealbox config print, help, version, flags', () => {
  test('config print: effective config as YAML with credential.token and webhook.secret redacted', async () => {
    const file = configFile({
      keys: {
        pay: {
          provider: 'azure',
          vaultUrl: 'https://example.vault.azure.net',
          keyName: 'pay',
          credential: { kind: 'static-token', token: 'super-secret-token-value' },
          caFile: '/etc/ca.pem',
        },
      },
      webhook: { listen: { port: 9000 }, secret: 'webhook-secret-0123456789' },
    });
    const run = await cli(['config', 'print', '--config', file, '--log-level', 'warn']);
    const out = run.stdout.toString();
    assert.equal(run.code, 0, run.stderr);
    assert.ok(!out.includes('super-secret-token-value'), out);
    assert.ok(!out.includes('webhook-secret-0123456789'), out);
    const printed = parse(out) as {
      keys: { pay: { credential: { token: string }; caFile: string; retry: { maxAttempts: number } } };
      webhook: { secret: string; secretFile: null };
      log: { level: string };
    };
    assert.equal(printed.keys.pay.credential.token, '[redacted]');
    assert.equal(printed.webhook.secret, '[redacted]');
    assert.equal(printed.webhook.secretFile, null);
    assert.equal(printed.keys.pay.caFile, '/etc/ca.pem', 'file paths are shown');
    assert.equal(printed.keys.pay.retry.maxAttempts, 3, 'defaults are filled in');
    assert.equal(printed.log.level, 'warn', 'flags apply');
  });

  test("--version; --help on every command exits 0 with that command's usage", async () => {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'package.json'), 'utf8')) as {
      version: string;
    };
    const version = await cli(['--version']);
    assert.equal(version.code, 0);
    assert.equal(version.stdout.toString(), `sealbox ${pkg.version}\n`);
    const main = await cli(['--help']);
    assert.equal(main.code, 0);
    assert.match(main.stdout.toString(), /Exit codes:/);
    for (const [args, usage] of [
      [['serve', '--help'], 'Usage: sealbox serve'],
      [['dev', '--help'], 'Usage: sealbox dev '],
      [['dev-vault', '-h'], 'Usage: sealbox dev-vault'],
      [['check', '--help'], 'Usage: sealbox check'],
      [['encrypt', '--help'], 'Usage: sealbox encrypt'],
      [['decrypt', '--help'], 'Usage: sealbox decrypt'],
      [['config', 'print', '--help'], 'Usage: sealbox config print'],
    ] as const) {
      const run = await cli([...args]);
      assert.equal(run.code, 0, args.join(' '));
      assert.ok(run.stdout.toString().startsWith(usage), `${args.join(' ')}: ${run.stdout}`);
    }
  });

  test('unknown flags, commands and malformed values exit 2 with a clear message', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['check', '--bogus'], /^sealbox check: unknown flag --bogus; see "sealbox check --help"$/m],
      [['encrypt', '--expect-context', 'a=b'], /^sealbox encrypt: unknown flag --expect-context/m],
      [['frobnicate'], /unknown command "frobnicate"/],
      [['config', 'show'], /unknown subcommand "config show"/],
      [['decrypt', '--in'], /sealbox decrypt: .*--in/],
      [['encrypt', '--context', 'novalue'], /--context "novalue": expected key=value/],
      [['encrypt', '--chunk-size', 'big'], /--chunk-size big: expected a positive number/],
    ];
    for (const [args, message] of cases) {
      const run = await cli(args);
      assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, message);
    }
    const bare = await cli([]);
    assert.equal(bare.code, 2);
    assert.match(bare.stderr, /^Usage: sealbox <command>/);
  });
});

/** A TCP port nothing listens on (bound, then released). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
