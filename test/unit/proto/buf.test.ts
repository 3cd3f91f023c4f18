/**
 * The protos pass buf's lint (buf.yaml: STANDARD, with the wire-compatibility exceptions it
 * explains), are buf-formatted and build; sealbox.v1 carries the options other languages'
 * generators need; and the gRPC paths clients call stay exactly what they were.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { after, test } from 'node:test';
import { REPO_ROOT } from '../../helpers/paths';

/** @bufbuild/buf's launcher: a Node script that runs the binary from its platform package. */
const BUF = join(dirname(require.resolve('@bufbuild/buf/package.json')), 'bin', 'buf');
const cache = mkdtempSync(join(tmpdir(), 'sealbox-buf-'));
after(() => rmSync(cache, { recursive: true, force: true }));

function buf(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  assert.ok(existsSync(BUF), `${BUF} is missing; run npm ci (@bufbuild/buf is a devDependency)`);
  const result = spawnSync(process.execPath, [BUF, ...args], {
    cwd: REPO_ROOT,
    encoding: 'utf8',
    env: { ...process.env, BUF_CACHE_DIR: cache },
    maxBuffer: 64 * 1024 * 1024,
  });
  if (result.error) throw result.error;
  if (/Unsupported platform|Failed to find package/.test(result.stderr)) {
    assert.fail(
      `buf has no binary for this platform (${process.platform} ${process.arch}): npm installs it from ` +
        `the optional dependency @bufbuild/buf-<platform>; check npm ci did not omit optional packages.\n${result.stderr}`,
    );
  }
  return result;
}

test('buf lint finds nothing', () => {
  const { status, stdout, stderr } = buf('lint', '--error-format=text');
  assert.equal(
    status,
    0,
    `buf lint findings (fix them, or except a rule in buf.yaml saying why):\n${stdout}${stderr}`,
  );
  assert.equal(stdout.trim(), '');
});

test('the protos are buf-formatted (upstream grpc/health and k8s/kms excepted)', () => {
  const { status, stdout, stderr } = buf(
    'format',
    '--diff',
    '--exit-code',
    '--exclude-path',
    'proto/grpc',
    '--exclude-path',
    'proto/k8s',
  );
  assert.equal(
    status,
    0,
    `run \`npx buf format -w --exclude-path proto/grpc\` to apply:\n${stdout}${stderr}`,
  );
});

interface Image {
  file: Array<{
    name: string;
    package?: string;
    options?: Record<string, unknown>;
    service?: Array<{ name: string; method: Array<{ name: string }> }>;
  }>;
}

test('buf builds every proto; sealbox.v1 has generator options and unchanged gRPC paths', () => {
  const { status, stdout, stderr } = buf('build', '--exclude-source-info', '-o', '-#format=json');
  assert.equal(status, 0, `buf build failed:\n${stderr}`);
  const image = JSON.parse(stdout) as Image;
  assert.deepEqual(image.file.map((f) => f.name).sort(), [
    'grpc/health/v1/health.proto',
    'k8s/kms/v2/api.proto',
    'sealbox/v1/sealbox.proto',
  ]);
  const sealbox = image.file.find((f) => f.name === 'sealbox/v1/sealbox.proto')!;
  // protoc-gen-go refuses a file without go_package; Java and C# would fall back to the proto package.
  assert.equal(sealbox.options?.['goPackage'], 'sealbox/v1;sealboxv1');
  assert.equal(sealbox.options?.['javaPackage'], 'com.sealbox.v1');
  assert.equal(sealbox.options?.['csharpNamespace'], 'Sealbox.V1');
  // The wire API: clients call these paths. A rename (e.g. buf's SERVICE_SUFFIX) breaks every one.
  const paths = (sealbox.service ?? []).flatMap((s) =>
    s.method.map((m) => `/${sealbox.package}.${s.name}/${m.name}`),
  );
  assert.deepEqual(paths.sort(), [
    '/sealbox.v1.Admin/FlushCache',
    '/sealbox.v1.Admin/GetKeyStatus',
    '/sealbox.v1.Admin/RevokeKey',
    '/sealbox.v1.Envelope/Decrypt',
    '/sealbox.v1.Envelope/DecryptBatch',
    '/sealbox.v1.Envelope/DecryptStream',
    '/sealbox.v1.Envelope/Encrypt',
    '/sealbox.v1.Envelope/EncryptBatch',
    '/sealbox.v1.Envelope/EncryptStream',
    '/sealbox.v1.Envelope/Rewrap',
    '/sealbox.v1.Envelope/RewrapStream',
  ]);
});
