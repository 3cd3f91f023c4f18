/**
 * The swagger → JSON Schema conversion and response validation used by the devvault integration suites
 * (test/integration/devvault/swagger.ts). A validator that accepted everything would make those suites
 * meaningless, so this checks it rejects what it must: wrong types, unknown fields, bad formats, a body
 * where none is defined, a wrong operation, plus $refs into other files and x-nullable.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { VECTORS_DIR } from '../../helpers/paths';
import { assertNoPrivateMaterial } from '../../integration/devvault/harness';
import { keyVaultSwagger, SwaggerValidator, toJsonSchema } from '../../integration/devvault/swagger';

const swagger = keyVaultSwagger(join(VECTORS_DIR, 'keyvault'));

const bundle = {
  key: {
    kid: 'https://localhost:1/keys/k/0123456789abcdef0123456789abcdef',
    kty: 'RSA',
    key_ops: ['wrapKey'],
    n: 'AQAB',
    e: 'AQAB',
  },
  attributes: {
    enabled: true,
    created: 1,
    updated: 2,
    recoveryLevel: 'Recoverable+Purgeable',
    recoverableDays: 90,
    exportable: false,
  },
  tags: { a: 'b' },
};

test('path templates map to operationIds, literal segments first', () => {
  const cases: ReadonlyArray<[string, string, string | undefined]> = [
    ['GET', '/keys', 'GetKeys'],
    ['GET', '/keys/k/versions', 'GetKeyVersions'],
    ['GET', '/keys/k/', 'GetKey'],
    ['GET', '/keys/k/0123', 'GetKey'],
    ['PATCH', '/keys/k/', 'UpdateKey'],
    ['POST', '/keys/k/create', 'CreateKey'],
    ['POST', '/keys/k//wrapkey', 'wrapKey'],
    ['POST', '/keys/k/v/unwrapkey', 'unwrapKey'],
    ['PUT', '/keys/k/rotationpolicy', 'UpdateKeyRotationPolicy'],
    ['DELETE', '/deletedkeys/k', 'PurgeDeletedKey'],
    ['POST', '/deletedkeys/k/recover', 'RecoverDeletedKey'],
    ['GET', '/secrets/s', undefined],
  ];
  for (const [method, path, op] of cases)
    assert.equal(swagger.operationFor(method, path)?.operationId, op, `${method} ${path}`);
});

test('a Key Vault KeyBundle validates; broken ones do not', () => {
  assert.deepEqual(swagger.validate('GET', '/keys/k/', 200, bundle, 'GetKey'), []);
  const broken: ReadonlyArray<[string, unknown]> = [
    ['unknown top-level field', { ...bundle, extra: 1 }],
    ['key_ops not an array', { ...bundle, key: { ...bundle.key, key_ops: 'wrapKey' } }],
    ['kty outside the enum', { ...bundle, key: { ...bundle.key, kty: 'DSA' } }],
    ['n not base64url', { ...bundle, key: { ...bundle.key, n: 'a+b=' } }],
    ['created not unixtime', { ...bundle, attributes: { ...bundle.attributes, created: 1.5 } }],
    [
      'recoveryLevel outside the enum',
      { ...bundle, attributes: { ...bundle.attributes, recoveryLevel: 'Maybe' } },
    ],
    ['tag value not a string', { ...bundle, tags: { a: 1 } }],
  ];
  for (const [name, body] of broken)
    assert.notDeepEqual(swagger.validate('GET', '/keys/k/', 200, body, 'GetKey'), [], name);
});

test('private JWK members are allowed by the swagger (imports share the model), so a separate check rejects them', () => {
  const leaked = { ...bundle, key: { ...bundle.key, d: 'AQAB' } };
  assert.deepEqual(swagger.validate('GET', '/keys/k/', 200, leaked, 'GetKey'), []);
  const exchange = { method: 'GET', path: '/keys/k/', status: 200 };
  assert.throws(() => assertNoPrivateMaterial([{ ...exchange, body: leaked }]), /private member d/);
  assert.throws(
    () => assertNoPrivateMaterial([{ ...exchange, body: { value: [{ k: 'x' }] } }]),
    /private member k/,
  );
  assert.doesNotThrow(() => assertNoPrivateMaterial([{ ...exchange, body: bundle }]));
});

test('errors, empty bodies and operation cross-checks', () => {
  const kvError = { error: { code: 'Forbidden', message: 'no', innererror: { code: 'KeyDisabled' } } };
  assert.deepEqual(swagger.validate('POST', '/keys/k//unwrapkey', 403, kvError, 'unwrapKey'), []);
  assert.deepEqual(
    swagger.validate('GET', '/nothing', 404, { error: { code: 'NotFound', message: 'x' } }),
    [],
  );
  assert.deepEqual(swagger.validate('DELETE', '/deletedkeys/k', 204, undefined, 'PurgeDeletedKey'), []);
  assert.notDeepEqual(
    swagger.validate('DELETE', '/deletedkeys/k', 204, {}, 'PurgeDeletedKey'),
    [],
    'no body allowed on 204',
  );
  assert.notDeepEqual(
    swagger.validate('GET', '/keys/k/', 200, undefined, 'GetKey'),
    [],
    'a body is required',
  );
  assert.notDeepEqual(
    swagger.validate('GET', '/keys/k/', 200, bundle, 'UpdateKey'),
    [],
    'wrong operation claimed',
  );
  assert.notDeepEqual(swagger.validate('POST', '/keys/k//wrapkey', 500, { message: 'x' }, 'wrapKey'), []);
  // KeyVaultError's "error" is x-nullable.
  assert.deepEqual(swagger.validate('POST', '/keys/k//wrapkey', 500, { error: null }, 'wrapKey'), []);
});

test('toJsonSchema rewrites $refs (local and into other files) and closes objects', () => {
  const files = new Set<string>();
  const out = toJsonSchema(
    {
      type: 'object',
      description: 'dropped',
      'x-ms-client-name': 'dropped',
      properties: {
        a: { $ref: '#/definitions/A' },
        b: { $ref: './common.json#/definitions/B' },
        description: { type: 'string' },
      },
      'x-nullable': true,
    },
    'main.json',
    files,
  );
  assert.deepEqual(out, {
    anyOf: [
      {
        type: 'object',
        properties: {
          a: { $ref: 'main.json#/definitions/A' },
          b: { $ref: 'common.json#/definitions/B' },
          description: { type: 'string' },
        },
        additionalProperties: false,
      },
      { type: 'null' },
    ],
  });
  assert.deepEqual([...files], ['common.json']);
  assert.throws(
    () => toJsonSchema({ $ref: '../elsewhere/x.json#/definitions/C' }, 'main.json', files),
    /leaves the swagger directory/,
  );
});

test('a validator follows $refs into sibling files', () => {
  const docs: Record<string, unknown> = {
    'main.json': {
      paths: {
        '/things/{key-name}': {
          get: { operationId: 'GetThing', responses: { '200': { schema: { $ref: '#/definitions/Thing' } } } },
        },
      },
      definitions: {
        Thing: { type: 'object', properties: { common: { $ref: './common.json#/definitions/Common' } } },
      },
    },
    'common.json': {
      definitions: { Common: { type: 'object', properties: { id: { type: 'integer', format: 'int32' } } } },
    },
  };
  const v = new SwaggerValidator('main.json', (f) => docs[f]);
  assert.deepEqual(v.validate('GET', '/things/x', 200, { common: { id: 5 } }), []);
  assert.notDeepEqual(v.validate('GET', '/things/x', 200, { common: { id: 'five' } }), []);
  assert.notDeepEqual(v.validate('GET', '/things/x', 200, { common: { id: 2 ** 40 } }), [], 'int32 range');
});
