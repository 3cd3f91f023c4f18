/**
 * encrypt/decrypt failure reporting and argument checks (src/cli/transfer.ts), and the exit-code
 * mapping (src/cli/exit.ts). The streaming itself is covered end to end in test/integration/cli.test.ts.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { Metadata, status } from '@grpc/grpc-js';
import { ExitCode, exitCodeFor, UsageError } from '../../../src/cli/exit';
import { defaultTarget, describeFailure, runTransfer, type TransferIo } from '../../../src/cli/transfer';
import { ErrorCode } from '../../../src/errors';

function serviceError(code: status, details: string, sealboxCode?: string): object {
  const metadata = new Metadata();
  if (sealboxCode) metadata.set('sealbox-error-code', sealboxCode);
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata });
}

test('exitCodeFor: every sealbox error code has a class', () => {
  const expected: Record<string, ExitCode> = {
    INVALID_ARGUMENT: ExitCode.USAGE,
    CONTEXT_INVALID: ExitCode.USAGE,
    CONTEXT_MISMATCH: ExitCode.CIPHERTEXT_REJECTED,
    CIPHERTEXT_MALFORMED: ExitCode.CIPHERTEXT_REJECTED,
    CIPHERTEXT_CORRUPT: ExitCode.CIPHERTEXT_REJECTED,
    CIPHERTEXT_TRUNCATED: ExitCode.CIPHERTEXT_REJECTED,
    KEY_NOT_FOUND: ExitCode.KEY_NOT_FOUND,
    KEY_DISABLED: ExitCode.KEY_DISABLED,
    PERMISSION_DENIED: ExitCode.PERMISSION_DENIED,
    ACCESS_DENIED: ExitCode.PERMISSION_DENIED,
    VAULT_UNAVAILABLE: ExitCode.VAULT_UNAVAILABLE,
    VAULT_THROTTLED: ExitCode.VAULT_UNAVAILABLE,
    LIMIT_EXCEEDED: ExitCode.FAILURE,
    OVERLOADED: ExitCode.FAILURE,
    QUOTA_EXCEEDED: ExitCode.FAILURE,
    IDLE_TIMEOUT: ExitCode.FAILURE,
    CANCELLED: ExitCode.FAILURE,
    INTERNAL: ExitCode.FAILURE,
  };
  assert.deepEqual(
    Object.keys(expected).sort(),
    Object.keys(ErrorCode).sort(),
    'the table covers every code',
  );
  for (const [code, exit] of Object.entries(expected)) assert.equal(exitCodeFor(code), exit, code);
  assert.equal(exitCodeFor('KEY_DISABLED', true), ExitCode.KEY_NOT_IN_DATE);
  assert.equal(exitCodeFor(undefined), ExitCode.FAILURE);
});

test('describeFailure: gRPC status and sealbox code in the message; the exit code by class', () => {
  const table: Array<[object, ExitCode, RegExp]> = [
    [
      serviceError(status.DATA_LOSS, 'chunk 3 failed authentication', 'CIPHERTEXT_CORRUPT'),
      ExitCode.CIPHERTEXT_REJECTED,
      /^decrypt failed: gRPC DATA_LOSS \(15\), sealbox error CIPHERTEXT_CORRUPT: chunk 3 failed authentication; out\.bin was not written$/,
    ],
    [
      serviceError(status.FAILED_PRECONDITION, 'the current version … expired at 2026-01-01', 'KEY_DISABLED'),
      ExitCode.KEY_NOT_IN_DATE,
      /KEY_DISABLED/,
    ],
    [
      serviceError(status.FAILED_PRECONDITION, 'key … is disabled', 'KEY_DISABLED'),
      ExitCode.KEY_DISABLED,
      /disabled/,
    ],
    [
      serviceError(status.PERMISSION_DENIED, 'grant unwrapKey', 'PERMISSION_DENIED'),
      ExitCode.PERMISSION_DENIED,
      /PERMISSION_DENIED \(7\)/,
    ],
    [
      serviceError(status.UNAVAILABLE, 'Key Vault failed', 'VAULT_UNAVAILABLE'),
      ExitCode.VAULT_UNAVAILABLE,
      /VAULT_UNAVAILABLE/,
    ],
    [
      serviceError(status.UNAVAILABLE, 'No connection established'),
      ExitCode.SIDECAR_UNAVAILABLE,
      /^cannot reach sealbox at unix:\/s\.sock \(gRPC UNAVAILABLE: No connection established\); is it running\?/,
    ],
    [
      serviceError(status.INTERNAL, 'internal error (reference E1)'),
      ExitCode.FAILURE,
      /sealbox error \(none\)/,
    ],
    [
      new Error('EACCES: permission denied, open out.bin.partial'),
      ExitCode.FAILURE,
      /^decrypt failed: EACCES/,
    ],
  ];
  for (const [err, exit, message] of table) {
    const result = describeFailure('decrypt', 'unix:/s.sock', err, 'out.bin');
    assert.equal(result.exitCode, exit, result.message);
    assert.match(result.message ?? '', message);
  }
  assert.doesNotMatch(
    describeFailure('encrypt', 't', new Error('x'), undefined).message ?? '',
    /not written/,
  );
});

test('runTransfer refuses: --in equal to --out, no input on a terminal, ciphertext to a terminal, a missing --in', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-transfer-'));
  const file = join(dir, 'f');
  writeFileSync(file, 'x');
  const io = (tty: { stdin?: boolean; stdout?: boolean }): TransferIo => ({
    stdin: Object.assign(new PassThrough(), { isTTY: tty.stdin ?? false }),
    stdout: Object.assign(new PassThrough(), { isTTY: tty.stdout ?? false }),
    stderr: { write: () => true, isTTY: false },
  });
  const table: Array<[Parameters<typeof runTransfer>[0], TransferIo, RegExp]> = [
    [
      { mode: 'decrypt', target: 't', inFile: file, outFile: `${dir}/../${dir.split('/').at(-1)}/f` },
      io({}),
      /name the same file/,
    ],
    [
      { mode: 'encrypt', target: 't', outFile: join(dir, 'o') },
      io({ stdin: true }),
      /no input; pass --in FILE or pipe data/,
    ],
    [
      { mode: 'encrypt', target: 't', inFile: file },
      io({ stdout: true }),
      /refusing to write ciphertext to a terminal/,
    ],
    [
      { mode: 'encrypt', target: 't', inFile: join(dir, 'missing'), outFile: join(dir, 'o') },
      io({}),
      /cannot read --in .*missing: ENOENT/,
    ],
    [{ mode: 'encrypt', target: 't', inFile: dir, outFile: join(dir, 'o') }, io({}), /is a directory/],
  ];
  for (const [options, streams, message] of table) {
    await assert.rejects(
      runTransfer(options, streams),
      (err: unknown) => err instanceof UsageError && message.test(err.message),
    );
  }
});

test('defaultTarget: the dev socket under the working directory', () => {
  assert.equal(defaultTarget('/srv/app'), 'unix:/srv/app/.sealbox/sealbox.sock');
});
