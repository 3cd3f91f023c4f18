/**
 * docs/configuration.md against the config schema (src/config/config.ts): every setting the schema
 * has is documented, every documented setting exists, and every documented default is the schema's.
 * A setting added to the schema without a row here fails with its path named.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { isDeepStrictEqual } from 'node:util';
import { z } from 'zod';
import { configFlags, configSchema } from '../../../src/config/config';
import { REPO_ROOT } from '../../helpers/paths';
import { type SchemaPath, schemaPaths } from '../../helpers/schema-walk';

const DOC = 'docs/configuration.md';

/** One row of a `| setting | default | meaning |` table. */
interface DocRow {
  readonly path: string;
  readonly line: number;
  /** The default's code span, parsed; absent when the cell has no code (no default). */
  readonly defaultValue?: unknown;
  readonly hasDefault: boolean;
}

/** Defaults the schema computes on the machine it runs on, written as an expression in the doc. */
const MACHINE_DEFAULTS: Readonly<Record<string, unknown>> = {
  'availableParallelism()': availableParallelism(),
};

/** A default cell's code: JSON, an octal file mode such as 0o600, or a MACHINE_DEFAULTS expression. */
function parseDefault(code: string, where: string): unknown {
  if (Object.hasOwn(MACHINE_DEFAULTS, code)) return MACHINE_DEFAULTS[code];
  if (/^0o[0-7]+$/.test(code)) return Number(code);
  try {
    return JSON.parse(code);
  } catch {
    throw new Error(`${where}: cannot read the default \`${code}\`; write it as JSON (or 0o600 for a mode)`);
  }
}

/** The setting rows of every table whose header is `| setting | default | meaning |`. */
export function parseReference(text: string, name = DOC): DocRow[] {
  const rows: DocRow[] = [];
  let inTable = false;
  text.split('\n').forEach((line, i) => {
    if (/^\|\s*setting\s*\|\s*default\s*\|\s*meaning\s*\|$/.test(line)) {
      inTable = true;
      return;
    }
    if (!line.startsWith('|')) {
      inTable = false;
      return;
    }
    if (!inTable || /^\|[-\s|]+\|$/.test(line)) return;
    const cells = line.split(' | ');
    const path = /^\| `([^`]+)`$/.exec(cells[0] ?? '')?.[1];
    if (!path) throw new Error(`${name}:${i + 1}: a setting row must start with the path in backticks`);
    const code = /`([^`]+)`/.exec(cells[1] ?? '')?.[1];
    const where = `${name}:${i + 1} (${path})`;
    rows.push(
      code === undefined
        ? { path, line: i + 1, hasDefault: false }
        : { path, line: i + 1, hasDefault: true, defaultValue: parseDefault(code, where) },
    );
  });
  return rows;
}

const show = (v: unknown) => JSON.stringify(v);

/** Every disagreement between the schema's paths and the documented rows, one line each. */
export function compareReference(
  paths: readonly SchemaPath[],
  rows: readonly DocRow[],
  name = DOC,
): string[] {
  const problems: string[] = [];
  const schema = new Map(paths.map((p) => [p.path, p]));
  const documented = new Map<string, DocRow>();
  for (const row of rows) {
    if (documented.has(row.path)) problems.push(`${name}:${row.line}: ${row.path} is documented twice`);
    documented.set(row.path, row);
  }
  for (const p of paths) {
    if (p.leaf && !documented.has(p.path)) {
      problems.push(
        `setting ${p.path} (src/config/config.ts) is not documented in ${name}: add a row ` +
          `| \`${p.path}\` | ${p.hasDefault ? `\`${show(p.defaultValue)}\`` : '—'} | what it does |`,
      );
    }
  }
  for (const row of rows) {
    const p = schema.get(row.path);
    if (!p) {
      problems.push(
        `${name}:${row.line} documents ${row.path}, which src/config/config.ts does not have: remove or rename the row`,
      );
    } else if (p.hasDefault && !row.hasDefault) {
      problems.push(
        `${name}:${row.line}: ${row.path} has default ${show(p.defaultValue)} in the schema; write it in the default column`,
      );
    } else if (!p.hasDefault && row.hasDefault) {
      problems.push(
        `${name}:${row.line}: ${row.path} has no default in the schema, but the doc says ${show(row.defaultValue)}`,
      );
    } else if (p.hasDefault && !isDeepStrictEqual(row.defaultValue, p.defaultValue)) {
      problems.push(
        `${name}:${row.line}: ${row.path} defaults to ${show(p.defaultValue)} in the schema, but the doc says ${show(row.defaultValue)}`,
      );
    }
  }
  return problems;
}

const docText = () => readFileSync(join(REPO_ROOT, DOC), 'utf8');

test('docs/configuration.md documents every setting of the schema, with its default, and no other', () => {
  const problems = compareReference(schemaPaths(configSchema), parseReference(docText()));
  assert.deepEqual(problems, [], `\n${problems.join('\n')}`);
});

test('docs/configuration.md names every config flag', () => {
  const text = docText();
  for (const flag of configFlags) assert.ok(text.includes(`\`--${flag}`), `--${flag} is in ${DOC}`);
});

test('the schema walk sees groups, records, arrays of objects, unions and defaults', () => {
  const paths = new Map(schemaPaths(configSchema).map((p) => [p.path, p]));
  assert.deepEqual(paths.get('listen.socket'), {
    path: 'listen.socket',
    leaf: true,
    hasDefault: true,
    defaultValue: '/run/sealbox/sealbox.sock',
  });
  assert.equal(paths.get('listen.tcp')?.leaf, false);
  assert.equal(paths.get('listen.tcp')?.defaultValue, null);
  assert.equal(paths.get('listen.socketGroup')?.leaf, true, 'a union of number and string is one value');
  assert.equal(paths.get('keys.<alias>.file')?.leaf, true, 'the local variant');
  assert.equal(paths.get('keys.<alias>.retry.timeoutMs')?.defaultValue, 10_000, 'the azure variant');
  assert.equal(paths.get('access.identities.<name>.certificates[].uri')?.leaf, true);
  assert.equal(paths.get('cache.encrypt.maxBytes')?.defaultValue, 2 ** 36);
});

test('a missing, an extra, a wrong and an undocumented default are each reported by path', () => {
  const schema = z.object({
    a: z.number().default(1),
    b: z.object({ c: z.string(), d: z.boolean().default(true) }).optional(),
    mode: z.number().default(0o600),
  });
  const doc = [
    '| setting | default | meaning |',
    '|---|---|---|',
    '| `a` | `2` | wrong default |',
    '| `b.d` | yes | default not in code |',
    '| `mode` | `0o600` | octal |',
    '| `zzz` | — | not in the schema |',
  ].join('\n');
  assert.deepEqual(compareReference(schemaPaths(schema), parseReference(doc, 'x.md'), 'x.md'), [
    'setting b.c (src/config/config.ts) is not documented in x.md: add a row | `b.c` | — | what it does |',
    'x.md:3: a defaults to 1 in the schema, but the doc says 2',
    'x.md:4: b.d has default true in the schema; write it in the default column',
    'x.md:6 documents zzz, which src/config/config.ts does not have: remove or rename the row',
  ]);
});
