/**
 * docs/API.md against proto/sealbox/v1/sealbox.proto (loaded with protobufjs, the parser under
 * @grpc/proto-loader) and the error-code table (src/server/status.ts): every service, RPC, message and
 * field is documented with its shape, number and type, and nothing documented is gone.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { status } from '@grpc/grpc-js';
import * as protobuf from 'protobufjs';
import { PROTO_DIR } from '../../../src/api/proto';
import { ErrorCode } from '../../../src/errors';
import { grpcStatusFor } from '../../../src/server/status';
import { REPO_ROOT } from '../../helpers/paths';

const DOC = 'docs/API.md';
const PACKAGE = 'sealbox.v1';

/** What the proto (or the doc) says: services with RPC shapes, messages with field number and type. */
interface ApiShape {
  /** Service full name → RPC name → "Req → Resp", "stream Req → stream Resp". */
  readonly services: Map<string, Map<string, string>>;
  /** Message name → field name → "3 map<string, string>". */
  readonly messages: Map<string, Map<string, string>>;
}

/** The shape of one protobufjs field, as the doc writes its type. */
function fieldType(field: protobuf.Field): string {
  if (field instanceof protobuf.MapField) return `map<${field.keyType}, ${field.type}>`;
  return field.repeated ? `repeated ${field.type}` : field.type;
}

/** Services and messages of the sealbox.v1 package, from the proto file. */
export function protoShape(): ApiShape {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => join(PROTO_DIR, target);
  root.loadSync('sealbox/v1/sealbox.proto', { keepCase: true });
  const ns = root.lookup(PACKAGE) as protobuf.Namespace;
  const services = new Map<string, Map<string, string>>();
  const messages = new Map<string, Map<string, string>>();
  for (const item of ns.nestedArray) {
    if (item instanceof protobuf.Service) {
      const rpcs = new Map<string, string>();
      for (const m of item.methodsArray) {
        rpcs.set(
          m.name,
          `${m.requestStream ? 'stream ' : ''}${m.requestType} → ${m.responseStream ? 'stream ' : ''}${m.responseType}`,
        );
      }
      services.set(`${PACKAGE}.${item.name}`, rpcs);
    } else if (item instanceof protobuf.Type) {
      messages.set(item.name, new Map(item.fieldsArray.map((f) => [f.name, `${f.id} ${fieldType(f)}`])));
    }
  }
  return { services, messages };
}

/** Services, RPCs, messages and fields as docs/API.md documents them. Throws on a row it cannot read. */
export function docShape(text: string, name = DOC): ApiShape {
  const services = new Map<string, Map<string, string>>();
  const messages = new Map<string, Map<string, string>>();
  let table: Map<string, string> | undefined;
  let kind: 'rpc' | 'field' | undefined;
  let section: Map<string, string> | undefined;
  text.split('\n').forEach((line, i) => {
    const where = `${name}:${i + 1}`;
    const service = /^## Service `([\w.]+)`$/.exec(line);
    const message = /^### `(\w+)`$/.exec(line);
    if (service) {
      section = new Map();
      services.set(service[1]!, section);
      kind = 'rpc';
    } else if (message) {
      section = new Map();
      messages.set(message[1]!, section);
      kind = 'field';
    } else if (line.startsWith('## ')) {
      section = undefined;
      kind = undefined;
    }
    if (!line.startsWith('|')) {
      table = undefined;
      return;
    }
    if (/^\|\s*(RPC|field)\s*\|/.test(line)) {
      table = section;
      return;
    }
    if (!table || /^\|[-\s|]+\|$/.test(line)) return;
    const cells = line.split(' | ');
    const first = /^\| `(\w+)`$/.exec(cells[0] ?? '')?.[1];
    if (!first) throw new Error(`${where}: a row must start with a name in backticks`);
    if (table.has(first)) throw new Error(`${where}: ${first} is documented twice`);
    if (kind === 'rpc') {
      const shape = /^(stream )?`(\w+)` → (stream )?`(\w+)`$/.exec(cells[1] ?? '');
      if (!shape) throw new Error(`${where}: write the RPC's shape as [stream ]\`Req\` → [stream ]\`Resp\``);
      table.set(first, `${shape[1] ?? ''}${shape[2]} → ${shape[3] ?? ''}${shape[4]}`);
    } else {
      const type = /^`([^`]+)`$/.exec(cells[2] ?? '')?.[1];
      if (!/^\d+$/.test(cells[1] ?? '') || !type) {
        throw new Error(`${where}: a field row is | \`name\` | number | \`type\` | meaning |`);
      }
      table.set(first, `${cells[1]} ${type}`);
    }
  });
  return { services, messages };
}

/** Every difference between the proto and the doc, one sentence each. */
export function compareApi(proto: ApiShape, doc: ApiShape, name = DOC): string[] {
  const problems: string[] = [];
  const compare = (
    what: string,
    member: string,
    inProto: Map<string, Map<string, string>>,
    inDoc: Map<string, Map<string, string>>,
  ) => {
    for (const [owner, members] of inProto) {
      const documented = inDoc.get(owner);
      if (!documented) {
        problems.push(`${what} ${owner} is in the proto but not in ${name}: add a section for it`);
        continue;
      }
      for (const [m, shape] of members) {
        const docShape = documented.get(m);
        if (docShape === undefined) {
          problems.push(`${member} ${owner}.${m} (${shape}) is in the proto but not in ${name}`);
        } else if (docShape !== shape) {
          problems.push(`${member} ${owner}.${m} is ${shape} in the proto, but ${name} says ${docShape}`);
        }
      }
      for (const m of documented.keys()) {
        if (!members.has(m))
          problems.push(`${name} documents ${member} ${owner}.${m}, which the proto does not have`);
      }
    }
    for (const owner of inDoc.keys()) {
      if (!inProto.has(owner))
        problems.push(`${name} documents ${what} ${owner}, which the proto does not have`);
    }
  };
  compare('service', 'RPC', proto.services, doc.services);
  compare('message', 'field', proto.messages, doc.messages);
  return problems;
}

const docText = () => readFileSync(join(REPO_ROOT, DOC), 'utf8');

test('docs/API.md documents every service, RPC, message and field of sealbox.v1, and nothing else', () => {
  const proto = protoShape();
  assert.ok(proto.services.size >= 2 && proto.messages.size >= 15, 'the proto loaded');
  const problems = compareApi(proto, docShape(docText()));
  assert.deepEqual(problems, [], `\n${problems.join('\n')}`);
});

test('docs/API.md lists every error code with its gRPC status', () => {
  const text = docText();
  const statusName = (code: number) => Object.entries(status).find(([, v]) => v === code)?.[0];
  for (const code of Object.values(ErrorCode)) {
    const row = new RegExp(`^\\| \`${code}\` \\| ${statusName(grpcStatusFor[code])} \\| `, 'm');
    assert.match(text, row, `${code} → ${statusName(grpcStatusFor[code])} in ${DOC}'s error table`);
  }
});

test('a missing RPC, a stale field and a changed field number are each reported', () => {
  const proto: ApiShape = {
    services: new Map([
      [
        'p.S',
        new Map([
          ['A', 'X → Y'],
          ['B', 'stream X → Y'],
        ]),
      ],
    ]),
    messages: new Map([['X', new Map([['a', '1 string']])]]),
  };
  const doc = docShape(
    [
      '## Service `p.S`',
      '| RPC | request → response | what |',
      '|---|---|---|',
      '| `A` | `X` → `Y` | ok |',
      '### `X`',
      '| field | # | type | meaning |',
      '|---|---|---|---|',
      '| `a` | 2 | `string` | renumbered |',
      '| `gone` | 3 | `bytes` | removed from the proto |',
    ].join('\n'),
    'x.md',
  );
  assert.deepEqual(compareApi(proto, doc, 'x.md'), [
    'RPC p.S.B (stream X → Y) is in the proto but not in x.md',
    'field X.a is 1 string in the proto, but x.md says 2 string',
    'x.md documents field X.gone, which the proto does not have',
  ]);
});
