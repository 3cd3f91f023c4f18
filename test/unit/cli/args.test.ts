/** Command-line parsing (src/cli/args.ts): commands, per-command flags, help, errors. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { COMMANDS, MAIN_HELP, parseCommandLine, parsePairs } from '../../../src/cli/args';
import { UsageError } from '../../../src/cli/exit';

test('commands and their flags', () => {
  const table: Array<[string[], string, Record<string, unknown>]> = [
    [['check', '--config', 'c.yaml'], 'check', { config: 'c.yaml' }],
    [['--config', 'c.yaml', 'check'], 'check', { config: 'c.yaml' }],
    [['config', 'print', '--socket', 'none'], 'config print', { socket: 'none' }],
    [['dev', '--local-kek', '--data-dir', '/tmp/x'], 'dev', { 'local-kek': true, 'data-dir': '/tmp/x' }],
    [
      ['encrypt', '--alias', 'pay', '--context', 'a=1', '--context', 'b=2', '--in', 'f'],
      'encrypt',
      { alias: 'pay', context: ['a=1', 'b=2'], in: 'f' },
    ],
    [
      ['decrypt', '--expect-context', 'a=1', '--out', 'o'],
      'decrypt',
      { 'expect-context': ['a=1'], out: 'o' },
    ],
  ];
  for (const [argv, command, values] of table) {
    const parsed = parseCommandLine(argv);
    assert.equal(parsed.kind, 'run', argv.join(' '));
    if (parsed.kind !== 'run') continue;
    assert.equal(parsed.command, command);
    assert.deepEqual({ ...parsed.values }, values, argv.join(' '));
  }
});

test('encrypt and decrypt take files as age, gpg and openssl do: INPUT, -o/--output, "-"', () => {
  const table: Array<[string[], Record<string, unknown>]> = [
    [
      ['encrypt', '--alias', 'dev', '-o', 'out.sbx', 'in.txt'],
      { alias: 'dev', in: 'in.txt', out: 'out.sbx' },
    ],
    [['decrypt', '--output', 'plain', 'c.sbx'], { in: 'c.sbx', out: 'plain' }],
    [['decrypt', '--output=plain', '--in', 'c.sbx'], { in: 'c.sbx', out: 'plain' }],
    [['encrypt', 'in.txt', '--out', 'o'], { in: 'in.txt', out: 'o' }],
    [['encrypt', '-o', 'o'], { out: 'o' }],
    [['encrypt', 'in.txt'], { in: 'in.txt' }],
    [['decrypt', '-o', '-', '-'], {}],
    [['encrypt', '--in', '-', '--out', '-'], {}],
    [['decrypt', '--', '-o'], { in: '-o' }],
  ];
  for (const [argv, values] of table) {
    const parsed = parseCommandLine(argv);
    assert.equal(parsed.kind, 'run', argv.join(' '));
    if (parsed.kind !== 'run') continue;
    assert.equal(parsed.command, argv[0]);
    assert.deepEqual({ ...parsed.values }, values, argv.join(' '));
  }
  for (const name of ['encrypt', 'decrypt']) {
    assert.match(COMMANDS[name]!.help, /^ {2}-o, --output FILE +write to FILE/m, `${name} --help names -o`);
    assert.match(COMMANDS[name]!.help, /^ {2}FILE, --in FILE +read from FILE/m, `${name} --help names INPUT`);
    assert.match(COMMANDS[name]!.help, new RegExp(`^Usage: sealbox ${name} .*\\[-o OUTPUT\\] \\[INPUT\\]`));
  }
});

test('sealbox dev --help names both sockets', () => {
  assert.match(COMMANDS['dev']!.help, /<data-dir>\/sealbox\.sock/);
  assert.match(COMMANDS['dev']!.help, /<data-dir>\/admin\.sock for the Admin service/);
});

test('help and version', () => {
  assert.deepEqual(parseCommandLine(['--version']), { kind: 'version' });
  assert.deepEqual(parseCommandLine(['--help']), { kind: 'help', text: MAIN_HELP, asked: true });
  assert.deepEqual(parseCommandLine([]), { kind: 'help', text: MAIN_HELP, asked: false });
  for (const [name, spec] of Object.entries(COMMANDS)) {
    const parsed = parseCommandLine([...name.split(' '), '--help']);
    assert.deepEqual(parsed, { kind: 'help', text: spec.help, asked: true }, name);
    assert.ok(spec.help.startsWith(`Usage: sealbox ${name}`), name);
  }
  assert.equal((parseCommandLine(['config', '-h']) as { text: string }).text, COMMANDS['config print']!.help);
  assert.match(MAIN_HELP, /Exit codes:\n {2}0 /);
});

test('usage errors', () => {
  const table: Array<[string[], RegExp]> = [
    [['check', '--bogus'], /^sealbox check: unknown flag --bogus; see "sealbox check --help"$/],
    [['dev-vault', '--log-level', 'info'], /^sealbox dev-vault: unknown flag --log-level/],
    [['encrypt', '--expect-context', 'a=b'], /^sealbox encrypt: unknown flag --expect-context/],
    [['decrypt', '--alias', 'x'], /^sealbox decrypt: unknown flag --alias/],
    [['check', 'extra'], /^sealbox check: unexpected argument extra/],
    [['serve', 'config.yaml'], /^sealbox serve: unexpected argument config\.yaml/],
    [
      ['encrypt', 'a', 'b'],
      /^sealbox encrypt: unexpected argument b: one input file at most \(the output goes in -o FILE\)/,
    ],
    [['encrypt', 'a', '--in', 'b'], /^sealbox encrypt: the input is given twice \(a and --in b\); keep one$/],
    [
      ['decrypt', '-o', 'a', '--out', 'b'],
      /^sealbox decrypt: the output is given twice \(-o\/--output a and --out b\)/,
    ],
    [['decrypt', '-o'], /^sealbox decrypt: .*-o/],
    [['check', '-o', 'x'], /^sealbox check: unknown flag -o/],
    [['check', '--config'], /^sealbox check: .*--config/],
    [['nope'], /^unknown command "nope"$/],
    [['config'], /needs a subcommand: print/],
    [['config', 'dump'], /unknown subcommand "config dump"/],
  ];
  for (const [argv, message] of table) {
    assert.throws(
      () => parseCommandLine(argv),
      (err: unknown) => err instanceof UsageError && message.test(err.message),
      argv.join(' '),
    );
  }
});

test('parsePairs: key=value, "=" in values, empty values; no key or a repeated key is an error', () => {
  assert.deepEqual(parsePairs('context', ['a=1', 'b=x=y', 'c=']), { a: '1', b: 'x=y', c: '' });
  assert.deepEqual(parsePairs('context', undefined), {});
  assert.throws(() => parsePairs('context', ['novalue']), /--context "novalue": expected key=value/);
  assert.throws(() => parsePairs('context', ['=v']), /expected key=value/);
  assert.throws(
    () => parsePairs('expect-context', ['a=1', 'a=2']),
    /--expect-context: key "a" is given twice/,
  );
});
