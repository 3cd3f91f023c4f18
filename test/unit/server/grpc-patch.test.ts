import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { normalize, replaceVerified } from '../../../src/server/grpc-patch';

/** A module exporting class `C` with method `m` (a stand-in for a grpc-js build file). */
function moduleWith(body: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'sealbox-patch-')), 'mod.js');
  writeFileSync(file, `exports.C = class C {\n  m(x) {\n    ${body}\n  }\n};\n`);
  return file;
}

test('replaces the method only when its source is the expected one', () => {
  const file = moduleWith('return x + 1;');
  const C = (require(file) as { C: new () => { m(x: number): number } }).C;
  assert.equal(
    replaceVerified(file, 'C', 'm', 'm(x) { return x + 2; }', () => 0),
    false,
    'other source',
  );
  assert.equal(new C().m(1), 2, 'left as it was');
  assert.equal(
    replaceVerified(file, 'C', 'missing', 'm(x) { return x + 1; }', () => 0),
    false,
  );
  assert.equal(
    replaceVerified(file, 'D', 'm', 'm(x) { return x + 1; }', () => 0),
    false,
  );
  assert.equal(
    replaceVerified(join(file, 'nope.js'), 'C', 'm', '', () => 0),
    false,
    'no such module',
  );
  assert.equal(
    replaceVerified(file, 'C', 'm', normalize('m(x) {\n    return x + 1;\n  }'), (x: number) => x * 10),
    true,
  );
  assert.equal(new C().m(3), 30, 'replaced');
});
