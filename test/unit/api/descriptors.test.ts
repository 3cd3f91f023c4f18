/** protoc's naming rules that reflection descriptors must follow (grpcurl checks map entry names). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { jsonName, mapEntryName } from '../../../src/api/descriptors';

test('jsonName and mapEntryName follow protoc', () => {
  const cases: Array<[field: string, json: string, entry: string]> = [
    ['context', 'context', 'ContextEntry'],
    ['expected_context', 'expectedContext', 'ExpectedContextEntry'],
    ['header_or_ciphertext', 'headerOrCiphertext', 'HeaderOrCiphertextEntry'],
    ['a_1b', 'a1b', 'A1bEntry'],
    ['already_', 'already', 'AlreadyEntry'],
    ['Upper', 'Upper', 'UpperEntry'],
  ];
  for (const [field, json, entry] of cases) {
    assert.equal(jsonName(field), json, field);
    assert.equal(mapEntryName(field), entry, field);
  }
});
