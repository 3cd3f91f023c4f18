import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadSync } from '@grpc/proto-loader';
import { PROTO_DIR } from '../../../src/api/proto';
import { encodeDataResponse, RESPONSE_HEADROOM } from '../../../src/server/wire';

const definition = loadSync('sealbox/v1/sealbox.proto', { includeDirs: [PROTO_DIR], oneofs: true });

const service = definition['sealbox.v1.Envelope'] as Record<
  string,
  { responseDeserialize: (b: Buffer) => { data?: Buffer; msg?: string } }
>;

for (const typeName of ['EncryptStream', 'DecryptStream']) {
  // The real protobuf decoder of the method's response type is the judge of our hand encoding.
  const method = service[typeName]!;

  for (const length of [1, 127, 128, 300, 16383, 16384, 65536 + 16, 1048576 + 256, 2097151, 2097152]) {
    test(`${typeName}: a pre-encoded data response of ${length} bytes decodes as { data }`, () => {
      const buffer = Buffer.alloc(RESPONSE_HEADROOM + length);
      for (let i = 0; i < length; i += 997) buffer[RESPONSE_HEADROOM + i] = i & 0xff;
      buffer[buffer.length - 1] = 0xab;
      const encoded = encodeDataResponse(buffer);
      const decoded = method.responseDeserialize(encoded.bytes);
      assert.equal(decoded.msg, 'data');
      assert.ok(decoded.data?.equals(buffer.subarray(RESPONSE_HEADROOM)));
    });
  }
}
