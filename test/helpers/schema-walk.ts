/**
 * Walks a zod 4 schema into the dotted setting paths docs/configuration.md documents: `listen.socket`,
 * `keys.<alias>.vaultUrl` (a record's key is written `<name>`, after the record), and
 * `access.identities.<name>.certificates[].uri` (`[]` is an array's element). Wrappers (default,
 * prefault, nullable, optional, pipe) are looked through; a default on any wrapper is recorded.
 */
import type { z } from 'zod';

/** One setting (or a group of settings) in the schema. */
export interface SchemaPath {
  /** Dotted path, e.g. `cache.encrypt.maxAgeMs`. */
  readonly path: string;
  /** True when nothing is below it: a value, not an object, record or array of objects. */
  readonly leaf: boolean;
  /** Whether the schema gives it a default, and which. */
  readonly hasDefault: boolean;
  readonly defaultValue?: unknown;
}

interface Def {
  readonly type: string;
  readonly innerType?: z.ZodType;
  readonly in?: z.ZodType;
  readonly shape?: Record<string, z.ZodType>;
  readonly valueType?: z.ZodType;
  readonly element?: z.ZodType;
  readonly options?: readonly z.ZodType[];
  readonly defaultValue?: unknown;
}

const def = (schema: z.ZodType): Def => (schema as unknown as { _zod: { def: Def } })._zod.def;

const WRAPPERS = new Set(['default', 'prefault', 'nullable', 'optional', 'readonly', 'catch', 'nonoptional']);

/** The schema under all wrappers, and the outermost default on the way (if any). */
function unwrap(schema: z.ZodType): { core: z.ZodType; hasDefault: boolean; defaultValue?: unknown } {
  let node = schema;
  let found: { defaultValue: unknown } | undefined;
  for (;;) {
    const d = def(node);
    if (d.type === 'default' && !found) found = { defaultValue: d.defaultValue };
    if (WRAPPERS.has(d.type) && d.innerType) node = d.innerType;
    else if (d.type === 'pipe' && d.in) node = d.in;
    else break;
  }
  return found
    ? { core: node, hasDefault: true, defaultValue: found.defaultValue }
    : { core: node, hasDefault: false };
}

/** The object shapes a node holds: one for an object, one per object option of a union. */
function shapesOf(core: z.ZodType): Array<Record<string, z.ZodType>> {
  const d = def(core);
  if (d.type === 'object' && d.shape) return [d.shape];
  if (d.type === 'union' && d.options) {
    const options = d.options.map((o) => unwrap(o).core);
    if (options.every((o) => def(o).type === 'object')) return options.map((o) => def(o).shape!);
  }
  return [];
}

/** Every path in `schema`, groups and leaves, each once (the first occurrence wins). */
export function schemaPaths(schema: z.ZodType): SchemaPath[] {
  const out = new Map<string, SchemaPath>();
  const visit = (node: z.ZodType, path: string) => {
    const { core, hasDefault, defaultValue } = unwrap(node);
    const d = def(core);
    const add = (leaf: boolean) => {
      if (path && !out.has(path)) out.set(path, { path, leaf, hasDefault, defaultValue });
    };
    const shapes = shapesOf(core);
    if (shapes.length > 0) {
      add(false);
      for (const shape of shapes) {
        for (const [key, child] of Object.entries(shape)) visit(child, path ? `${path}.${key}` : key);
      }
    } else if (d.type === 'record' && d.valueType) {
      add(false);
      const name = path.endsWith('keys') ? '<alias>' : '<name>';
      visit(d.valueType, `${path}.${name}`);
    } else if (d.type === 'array' && d.element && shapesOf(unwrap(d.element).core).length > 0) {
      add(false);
      visit(d.element, `${path}[]`);
    } else {
      add(true);
    }
  };
  visit(schema, '');
  return [...out.values()];
}
