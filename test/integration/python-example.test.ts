/**
 * examples/python against a real sealbox over a real Unix socket: stubs generated as its README says
 * (into a temporary directory), health SERVING, unary and streamed round trips, the error trailer;
 * and the ciphertext it got decrypts through the Node client to the same bytes. Also: protoc (from
 * grpc_tools) accepts the file descriptors sealbox's server reflection serves.
 *
 * Needs Debian's python3-grpcio and python3-grpc-tools for /usr/bin/python3 (PyPI is not used).
 */
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { decrypt } from '../../src/client/client';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';
import { REPO_ROOT } from '../helpers/paths';
import { descriptorSetFor } from '../helpers/reflection';

const EXAMPLE = join(REPO_ROOT, 'examples', 'python', 'sealbox_client.py');
const INSTALL = 'apt-get install python3-grpcio python3-grpc-tools';

/** `/usr/bin/python3` (where Debian's packages go) or python3 on PATH, whichever has grpc and grpc_tools. */
function python(): string {
  for (const interpreter of ['/usr/bin/python3', 'python3']) {
    const probe = spawnSync(interpreter, ['-c', 'import grpc, grpc_tools.protoc'], { stdio: 'ignore' });
    if (probe.error === undefined && probe.status === 0) return interpreter;
  }
  return assert.fail(
    'no Python 3 interpreter can `import grpc, grpc_tools.protoc` (tried /usr/bin/python3 and python3 on ' +
      `PATH); install Debian's packages with \`${INSTALL}\``,
  );
}

/** Runs a command without blocking the event loop (the server under test runs in this process). */
function run(command: string, args: string[], cwd = REPO_ROOT) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(command, args, { cwd, encoding: 'utf8', timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
      resolve({ code, stdout, stderr: stderr || (err && typeof err.code !== 'number' ? String(err) : '') });
    });
  });
}

describe('examples/python', () => {
  let box: TestSealbox;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'sealbox-python-'));
    box = await startTestSealbox();
  });
  after(async () => {
    await box.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('with stubs generated as the README says: health, round trips, error trailer, Node decrypts its ciphertext', async () => {
    const py = python();
    const stubs = join(dir, 'stubs');
    // The README's command, word for word (run from the repository root).
    const generated = await run('/bin/sh', [
      '-c',
      `mkdir -p ${stubs} && ${py} -m grpc_tools.protoc -Iproto -Igrpc_health/v1=proto/grpc/health/v1 ` +
        `--python_out=${stubs} --grpc_python_out=${stubs} sealbox/v1/sealbox.proto grpc_health/v1/health.proto`,
    ]);
    assert.equal(generated.code, 0, generated.stderr);
    for (const module of [
      'sealbox/v1/sealbox_pb2.py',
      'sealbox/v1/sealbox_pb2_grpc.py',
      'grpc_health/v1/health_pb2_grpc.py',
    ]) {
      assert.ok(existsSync(join(stubs, module)), `${module} generated`);
    }

    const message = `python ${randomBytes(12).toString('hex')}`;
    const saved = join(dir, 'ciphertext.bin');
    const { code, stdout, stderr } = await run(py, [
      EXAMPLE,
      '--stubs',
      stubs,
      '--target',
      box.target,
      '--alias',
      box.alias,
      '--message',
      message,
      '--save-ciphertext',
      saved,
    ]);
    assert.equal(code, 0, `the example failed:\n${stdout}${stderr}`);
    const lines = stdout.trim().split('\n');
    assert.deepEqual(lines.slice(0, 2), ['health "": SERVING', 'health "sealbox.v1.Envelope": SERVING']);
    assert.match(lines[2]!, new RegExp(`^encrypt: ${message.length} bytes -> \\d+ bytes under local:test/`));
    assert.equal(lines[3], `decrypt: round trip OK (${message.length} bytes, context {'example': 'python'})`);
    assert.equal(lines[4], 'stream: round trip OK (300000 bytes in 5 messages)');
    assert.equal(lines[5], 'wrong context: FAILED_PRECONDITION CONTEXT_MISMATCH');
    assert.equal(lines.length, 6, stdout);

    // What Python got is a real sealbox ciphertext: the Node client opens it.
    const opened = await decrypt(box.client, readFileSync(saved));
    assert.equal(opened.plaintext.toString(), message);
    assert.deepEqual({ ...opened.context }, { example: 'python' });
  });

  test("protoc accepts the descriptors reflection serves (grpcurl's Go runtime checks the same)", async () => {
    // protoc and Go's protodesc both refuse a map whose entry message is not <CamelCase field>Entry,
    // which is how proto-loader names them unfixed (src/api/descriptors.ts).
    const set = join(dir, 'reflected.binpb');
    const parts: Buffer[] = [];
    const seen = new Set<string>();
    for (const symbol of ['sealbox.v1.Envelope', 'sealbox.v1.Admin', 'grpc.health.v1.Health']) {
      const files = await descriptorSetFor('v1', box.target, symbol);
      if (!seen.has(files.toString('base64'))) parts.push(files);
      seen.add(files.toString('base64'));
    }
    writeFileSync(set, Buffer.concat(parts));
    const out = join(dir, 'from-reflection');
    mkdirSync(out);
    const script =
      'import sys\nfrom grpc_tools import protoc\n' +
      `sys.exit(protoc.main(["protoc", "--descriptor_set_in=${set}", "--python_out=${out}", ` +
      '"sealbox/v1/sealbox.proto", "grpc/health/v1/health.proto"]))';
    const { code, stdout, stderr } = await run(python(), ['-c', script]);
    assert.equal(code, 0, `protoc refused the reflected descriptors:\n${stdout}${stderr}`);
    assert.ok(existsSync(join(out, 'sealbox', 'v1', 'sealbox_pb2.py')));
  });

  test('without --stubs it generates them itself and runs the same', async () => {
    const { code, stdout, stderr } = await run(python(), [
      EXAMPLE,
      '--target',
      box.target,
      '--alias',
      box.alias,
    ]);
    assert.equal(code, 0, `the example failed:\n${stdout}${stderr}`);
    assert.match(stdout, /^decrypt: round trip OK \(17 bytes/m);
    assert.match(stdout, /^stream: round trip OK/m);
  });
});
