/**
 * gRPC server reflection over a real Unix socket, with a reflection client written here (as grpcurl
 * would use it): list_services, file_containing_symbol, and a call made from the reflected
 * descriptors alone; both grpc.reflection.v1 and v1alpha; the admin socket; listen.reflection false
 * and TCP's default (UNIMPLEMENTED); access control (an unknown caller learns nothing) and stream
 * limits (a reflection stream holds a slot until it ends, and idles out).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import {
  credentials,
  type GrpcObject,
  loadPackageDefinition,
  type ServiceClientConstructor,
  type ServiceError,
  status,
} from '@grpc/grpc-js';
import { loadFileDescriptorSetFromBuffer } from '@grpc/proto-loader';
import { FileDescriptorSet, type IFileDescriptorSet } from 'protobufjs/ext/descriptor';
import type { ConfigInput } from '../../src/config/config';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';
import {
  descriptorSetFor,
  listServices,
  openReflection,
  VERSIONS,
  type Version,
} from '../helpers/reflection';

/** The RPC names of `service` in the reflected descriptors. */
function methodsOf(descriptorSet: Buffer, service: string): string[] {
  const definition = loadFileDescriptorSetFromBuffer(descriptorSet);
  const methods = definition[service];
  assert.ok(
    methods,
    `${service} is in the reflected descriptors (got ${Object.keys(definition).join(', ')})`,
  );
  return Object.values(methods as Record<string, { path: string }>)
    .map((m) => m.path)
    .sort();
}

/** Asserts that the first reflection request on a stream fails with `code`. */
async function assertRefused(version: Version, target: string, code: status, details?: RegExp) {
  const stream = openReflection(version, target);
  try {
    await assert.rejects(stream.ask({ host: '', listServices: '*' }), (err: ServiceError) => {
      assert.equal(err.code, code, `status ${err.code} (${err.details})`);
      if (details) assert.match(err.details, details);
      return true;
    });
  } finally {
    stream.close();
  }
}

describe('server reflection, defaults (Unix socket and admin socket)', () => {
  let box: TestSealbox;
  let adminDir: string;
  let adminTarget: string;
  before(async () => {
    adminDir = mkdtempSync(join(tmpdir(), 'sealbox-reflection-'));
    adminTarget = `unix:${join(adminDir, 'admin.sock')}`;
    box = await startTestSealbox({ listen: { adminSocket: join(adminDir, 'admin.sock') } });
  });
  after(async () => {
    await box.close();
    rmSync(adminDir, { recursive: true, force: true });
  });

  for (const version of VERSIONS) {
    test(`${version}: list_services names Envelope, Admin and Health`, async () => {
      assert.deepEqual(await listServices(version, box.target), [
        'grpc.health.v1.Health',
        'sealbox.v1.Admin',
        'sealbox.v1.Envelope',
      ]);
    });

    test(`${version}: file_containing_symbol sealbox.v1.Envelope gives descriptors naming every RPC`, async () => {
      const set = await descriptorSetFor(version, box.target, 'sealbox.v1.Envelope');
      assert.deepEqual(methodsOf(set, 'sealbox.v1.Envelope'), [
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

    test(`${version}: a symbol nobody serves is NOT_FOUND in the response, and the stream goes on`, async () => {
      const stream = openReflection(version, box.target);
      try {
        const missing = await stream.ask({ host: '', fileContainingSymbol: 'sealbox.v1.Nope' });
        assert.equal(missing.errorResponse?.errorCode, status.NOT_FOUND);
        const health = await stream.ask({ host: '', fileContainingSymbol: 'grpc.health.v1.Health' });
        assert.ok(health.fileDescriptorResponse!.fileDescriptorProto.length > 0);
      } finally {
        stream.close();
      }
    });
  }

  test('descriptors are shaped as protoc writes them: field names, map entries, qualified types', async () => {
    const set = await descriptorSetFor('v1', box.target, 'sealbox.v1.Envelope');
    const files =
      (FileDescriptorSet.toObject(FileDescriptorSet.decode(set)) as IFileDescriptorSet).file ?? [];
    const file = files.find((f) => f.package === 'sealbox.v1');
    assert.equal(file?.name, 'sealbox/v1/sealbox.proto');
    const message = (name: string) => file!.messageType!.find((m) => m.name === name)!;
    const decrypt = message('DecryptRequest');
    const field = decrypt.field!.find((f) => f.number === 2)!;
    assert.equal(field.name, 'expected_context', 'field names as in the .proto');
    assert.equal(field.jsonName, 'expectedContext');
    // Go's protodesc (grpcurl) refuses a map whose entry is not named <CamelCase field>Entry.
    assert.equal(field.typeName, '.sealbox.v1.DecryptRequest.ExpectedContextEntry');
    const entry = decrypt.nestedType!.find((n) => n.name === 'ExpectedContextEntry');
    assert.equal(entry?.options?.mapEntry, true);
    const metadata = message('EncryptStreamResponse').field!.find((f) => f.name === 'metadata')!;
    assert.equal(metadata.typeName, '.sealbox.v1.StreamMetadata');
  });

  test('a client built from reflected descriptors alone encrypts, decrypts and checks health', async () => {
    const set = await descriptorSetFor('v1', box.target, 'sealbox.v1.Envelope');
    const pkg = loadPackageDefinition(loadFileDescriptorSetFromBuffer(set, { oneofs: true })) as GrpcObject;
    const v1 = (pkg['sealbox'] as GrpcObject)['v1'] as GrpcObject;
    const client = new (v1['Envelope'] as ServiceClientConstructor)(box.target, credentials.createInsecure());
    type Unary = (req: object, cb: (err: ServiceError | null, res: Record<string, unknown>) => void) => void;
    const call = (method: string, request: object) =>
      new Promise<Record<string, unknown>>((resolve, reject) =>
        (client as unknown as Record<string, Unary>)[method]!.call(client, request, (err, res) =>
          err ? reject(err) : resolve(res),
        ),
      );
    try {
      const plaintext = Buffer.from('described, not compiled');
      // protobufjs rebuilds a map from descriptors as its repeated entry message (the same bytes on
      // the wire), so the context goes as entries here.
      const sealed = await call('Encrypt', {
        key_alias: box.alias,
        plaintext,
        context: [{ key: 'via', value: 'reflection' }],
      });
      const opened = await call('Decrypt', { ciphertext: sealed['ciphertext'] });
      assert.deepEqual(opened['plaintext'], plaintext);
      assert.deepEqual(opened['context'], [{ key: 'via', value: 'reflection' }]);
    } finally {
      client.close();
    }
    const healthSet = await descriptorSetFor('v1alpha', box.target, 'grpc.health.v1.Health');
    assert.deepEqual(methodsOf(healthSet, 'grpc.health.v1.Health'), [
      '/grpc.health.v1.Health/Check',
      '/grpc.health.v1.Health/Watch',
    ]);
  });

  test('the admin socket describes only sealbox.v1.Admin, which it serves', async () => {
    for (const version of VERSIONS)
      assert.deepEqual(await listServices(version, adminTarget), ['sealbox.v1.Admin']);
    const set = await descriptorSetFor('v1', adminTarget, 'sealbox.v1.Admin');
    assert.deepEqual(methodsOf(set, 'sealbox.v1.Admin'), [
      '/sealbox.v1.Admin/FlushCache',
      '/sealbox.v1.Admin/GetKeyStatus',
      '/sealbox.v1.Admin/RevokeKey',
    ]);
  });
});

describe('server reflection, switched off and on', () => {
  const started: TestSealbox[] = [];
  const dirs: string[] = [];
  const start = async (config: ConfigInput) => {
    const box = await startTestSealbox(config);
    started.push(box);
    return box;
  };
  after(async () => {
    for (const box of started) await box.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  test('listen.reflection false: UNIMPLEMENTED on the socket and the admin socket, both versions', async () => {
    const adminDir = mkdtempSync(join(tmpdir(), 'sealbox-reflection-'));
    const adminSocket = join(adminDir, 'admin.sock');
    const box = await start({ listen: { reflection: false, adminSocket } });
    dirs.push(adminDir);
    for (const version of VERSIONS) {
      await assertRefused(version, box.target, status.UNIMPLEMENTED);
      await assertRefused(version, `unix:${adminSocket}`, status.UNIMPLEMENTED);
    }
  });

  test('TCP: off by default, on with listen.tcp.reflection', async () => {
    const off = await start({ listen: { tcp: { host: '127.0.0.1', port: 0 } } });
    const offTcp = off.sealbox.server.addresses.find((a) => !a.startsWith('unix:'))!;
    for (const version of VERSIONS) await assertRefused(version, offTcp, status.UNIMPLEMENTED);
    // The socket of the same server still has it.
    assert.ok((await listServices('v1', off.target)).includes('sealbox.v1.Envelope'));

    const on = await start({ listen: { tcp: { host: '127.0.0.1', port: 0, reflection: true } } });
    const onTcp = on.sealbox.server.addresses.find((a) => !a.startsWith('unix:'))!;
    for (const version of VERSIONS) {
      assert.ok((await listServices(version, onTcp)).includes('sealbox.v1.Envelope'));
    }
  });

  test('a caller that is no identity gets PERMISSION_DENIED and not even the service list', async () => {
    const box = await start({
      access: { identities: { app: { peers: ['tcp'], keys: ['*'], operations: ['encrypt'] } } },
    });
    for (const version of VERSIONS) {
      await assertRefused(version, box.target, status.PERMISSION_DENIED, /not an identity sealbox knows/);
    }
  });

  test('any identity may reflect, with no grant: an identity with no keys and no operations', async () => {
    const box = await start({ access: { identities: { prober: { peers: ['socket'] } } } });
    assert.ok((await listServices('v1', box.target)).includes('sealbox.v1.Envelope'));
  });

  test('a reflection stream holds a stream slot until it ends, and idles out', async () => {
    const box = await start({ stream: { maxConcurrentStreams: 1, idleTimeoutMs: 1000 } });
    const first = openReflection('v1', box.target);
    await first.ask({ host: '', listServices: '*' });
    await assertRefused('v1alpha', box.target, status.RESOURCE_EXHAUSTED, /stream\.maxConcurrentStreams/);
    first.close();
    assert.equal(await first.ended, undefined, 'a half-closed reflection stream ends OK');
    // The slot came back.
    const second = openReflection('v1alpha', box.target);
    await second.ask({ host: '', listServices: '*' });
    const idle = await second.ended;
    assert.equal(idle?.code, status.DEADLINE_EXCEEDED, `idle stream ends (${idle?.details})`);
    // The configured 1000 ms cut it, not the 300 s default: the message names the timeout that fired.
    assert.match(idle!.details, /no request for 1000 ms \(stream\.idleTimeoutMs\)/);
    second.close();
    assert.ok((await listServices('v1', box.target)).includes('sealbox.v1.Envelope'));
  });
});
