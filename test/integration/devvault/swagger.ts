/**
 * Validates dev vault responses against Key Vault's swagger (test/vectors/keyvault/keys.json, swagger
 * 2.0, API version 2025-07-01). The swagger's definitions are turned into JSON Schema for ajv:
 *
 *   - `$ref: "#/definitions/X"` becomes `<file>#/definitions/X`; a `$ref` into another file
 *     ("./common.json#/definitions/Y") loads that file from the same directory and registers it too;
 *   - `x-nullable: true` allows null; other `x-*` extensions and descriptions are dropped;
 *   - formats: unixtime (non-negative integer seconds), base64url (unpadded), int32 (ajv-formats);
 *   - every object schema with properties and no additionalProperties gets `additionalProperties: false`,
 *     so a response field the swagger does not define (a typo, a leaked private member) fails. Swagger
 *     itself is open by default; the dev vault is held to the stricter reading on purpose.
 *
 * A response is matched to its operation independently of the dev vault (method + path against the
 * swagger's path templates, literal segments first), the operationId the vault claimed is cross-checked,
 * and the body is validated against the schema of that status (or `default`, which is KeyVaultError).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Ajv, { type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';

interface SwaggerResponse {
  readonly schema?: unknown;
}

interface SwaggerOperation {
  readonly operationId: string;
  readonly responses: Record<string, SwaggerResponse>;
}

interface SwaggerDoc {
  readonly paths: Record<string, Record<string, SwaggerOperation>>;
  readonly definitions?: Record<string, unknown>;
}

/** Reads a sibling swagger file by name (for $refs into other files). */
export type SwaggerLoader = (file: string) => unknown;

/**
 * Converts one swagger schema node to JSON Schema. `file` is the $id of the document the node is in;
 * `refFiles` collects other documents the node refers to.
 */
export function toJsonSchema(node: unknown, file: string, refFiles: Set<string>): unknown {
  if (Array.isArray(node)) return node.map((n) => toJsonSchema(n, file, refFiles));
  if (node === null || typeof node !== 'object') return node;
  const src = node as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(src)) {
    if (key.startsWith('x-') || key === 'description' || key === 'example') continue;
    if (key === '$ref' && typeof value === 'string') {
      out[key] = rewriteRef(value, file, refFiles);
    } else if (key === 'properties' || key === 'definitions') {
      // Property names are data, not keywords: convert each value, keep each name.
      out[key] = Object.fromEntries(
        Object.entries(value as Record<string, unknown>).map(([k, v]) => [
          k,
          toJsonSchema(v, file, refFiles),
        ]),
      );
    } else {
      out[key] = toJsonSchema(value, file, refFiles);
    }
  }
  if (
    out['properties'] !== undefined &&
    out['additionalProperties'] === undefined &&
    out['allOf'] === undefined
  ) {
    out['additionalProperties'] = false;
  }
  if (src['x-nullable'] === true) return { anyOf: [out, { type: 'null' }] };
  return out;
}

function rewriteRef(ref: string, file: string, refFiles: Set<string>): string {
  const hash = ref.indexOf('#');
  const target = hash === -1 ? ref : ref.slice(0, hash);
  const pointer = hash === -1 ? '' : ref.slice(hash);
  if (target === '') return `${file}${pointer}`;
  const name = target.replace(/^\.\//, '');
  if (name.includes('/'))
    throw new Error(`$ref ${ref} leaves the swagger directory; copy that file next to ${file}`);
  refFiles.add(name);
  return `${name}${pointer}`;
}

/** One swagger operation with a matcher for request paths. */
interface Matcher {
  readonly method: string;
  readonly template: string;
  readonly regex: RegExp;
  readonly literals: number;
  readonly op: SwaggerOperation;
}

/** Validates response bodies against a swagger document and the documents it refers to. */
export class SwaggerValidator {
  private readonly ajv: Ajv;
  private readonly matchers: Matcher[] = [];
  private readonly compiled = new Map<string, ValidateFunction>();

  /** `mainFile` is read through `loader`, as is every file it refers to. */
  constructor(
    private readonly mainFile: string,
    private readonly loader: SwaggerLoader,
  ) {
    this.ajv = new Ajv({ allErrors: true, strict: true, strictTypes: false });
    addFormats(this.ajv);
    this.ajv.addFormat('unixtime', {
      type: 'number',
      validate: (n: number) => Number.isInteger(n) && n >= 0,
    });
    this.ajv.addFormat('base64url', { type: 'string', validate: /^[A-Za-z0-9_-]*$/ });
    const doc = this.register(mainFile) as SwaggerDoc;
    for (const [template, methods] of Object.entries(doc.paths)) {
      for (const [method, op] of Object.entries(methods)) {
        const segments = template.split('/').slice(1);
        const pattern = segments
          .map((s) =>
            s === '{key-version}'
              ? '[^/]*'
              : s.startsWith('{')
                ? '[^/]+'
                : s.replace(/[.*+?^$()|[\]\\]/g, '\\$&'),
          )
          .join('/');
        this.matchers.push({
          method: method.toUpperCase(),
          template,
          regex: new RegExp(`^/${pattern}$`, 'i'),
          literals: segments.filter((s) => !s.startsWith('{')).length,
          op,
        });
      }
    }
    // Literal segments beat parameters: /keys/{key-name}/versions before /keys/{key-name}/{key-version}.
    this.matchers.sort((a, b) => b.literals - a.literals);
  }

  /** Loads, converts and registers a swagger file (and, recursively, the files it refers to). */
  private register(file: string, seen = new Set<string>()): unknown {
    seen.add(file);
    const doc = this.loader(file) as SwaggerDoc;
    const refFiles = new Set<string>();
    const definitions = Object.fromEntries(
      Object.entries(doc.definitions ?? {}).map(([name, schema]) => [
        name,
        toJsonSchema(schema, file, refFiles),
      ]),
    );
    this.ajv.addSchema({ $id: file, definitions }, file);
    for (const other of refFiles) if (!seen.has(other)) this.register(other, seen);
    return doc;
  }

  /** The swagger operation for a request, matched by method and path. */
  operationFor(method: string, path: string): { operationId: string; template: string } | undefined {
    const m = this.matchers.find((x) => x.method === method && x.regex.test(path));
    return m === undefined ? undefined : { operationId: m.op.operationId, template: m.template };
  }

  /**
   * Problems with one response (empty when it validates). A body is required exactly when the swagger
   * response has a schema; `claimedOperationId` is what the vault said it routed to.
   */
  validate(
    method: string,
    path: string,
    status: number,
    body: unknown,
    claimedOperationId?: string,
  ): string[] {
    const m = this.matchers.find((x) => x.method === method && x.regex.test(path));
    const where = `${method} ${path} → ${status}`;
    if (m === undefined) {
      // Not a keys operation (the vault's 404/405): it must still be a KeyVaultError.
      return this.check(`${this.mainFile}#/definitions/KeyVaultError`, body, where);
    }
    const problems: string[] = [];
    if (claimedOperationId !== undefined && claimedOperationId !== m.op.operationId) {
      problems.push(`${where}: vault routed to ${claimedOperationId}, swagger says ${m.op.operationId}`);
    }
    const response = m.op.responses[String(status)] ?? m.op.responses['default'];
    if (response === undefined)
      return [...problems, `${where}: status not in the swagger for ${m.op.operationId}`];
    if (response.schema === undefined) {
      if (body !== undefined) problems.push(`${where}: ${m.op.operationId} defines no body for ${status}`);
      return problems;
    }
    const ref = (response.schema as { $ref?: string }).$ref;
    if (ref === undefined) return [...problems, `${where}: inline response schemas are not supported`];
    return [
      ...problems,
      ...this.check(rewriteRef(ref, this.mainFile, new Set()), body, `${where} (${m.op.operationId})`),
    ];
  }

  private check(ref: string, body: unknown, where: string): string[] {
    let fn = this.compiled.get(ref);
    if (fn === undefined) {
      fn = this.ajv.compile({ $ref: ref });
      this.compiled.set(ref, fn);
    }
    if (body === undefined) return [`${where}: no body, expected ${ref}`];
    if (fn(body)) return [];
    return (fn.errors ?? []).map(
      (e) => `${where}: ${e.instancePath || '(body)'} ${e.message ?? ''} ${JSON.stringify(e.params)}`,
    );
  }
}

/** A validator over the copied keys.json in `dir` (test/vectors/keyvault). */
export function keyVaultSwagger(dir: string): SwaggerValidator {
  return new SwaggerValidator('keys.json', (file) => JSON.parse(readFileSync(join(dir, file), 'utf8')));
}
