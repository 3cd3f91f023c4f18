/**
 * File descriptors of the public API for server reflection, as protoc would write them.
 *
 * proto-loader gets its descriptors from protobufjs, which writes them differently from protoc in
 * ways reflection clients reject or show wrongly:
 * - a map field's entry message is named after the field ("Context", "Expected_context") where
 *   protoc, and the Go protobuf runtime behind grpcurl, require `<CamelCase field>Entry`
 *   ("ContextEntry", "ExpectedContextEntry"); grpcurl refuses the whole file ("is an invalid map:
 *   incorrect implicit map entry name", fullstorydev/grpcurl#519);
 * - message and enum type names are relative ("StreamMetadata"); protoc writes fully qualified ones;
 * - json_name is missing; protoc always sets it;
 * - the file is named after its package ("sealbox_v1.proto"), not its path under proto/.
 * Field names stay as written in the .proto only when loaded with keepCase (the servers load with
 * camelCase names, so reflection gets its own load).
 *
 * The fix is applied to the decoded FileDescriptorProto; the wire format the descriptors describe
 * does not change (a map is a repeated entry message on the wire, whatever the entry is called).
 */
import { loadSync, type Options, type PackageDefinition } from '@grpc/proto-loader';
import {
  FileDescriptorProto,
  type IDescriptorProto,
  type IEnumDescriptorProto,
  type IFieldDescriptorProto,
  type IFileDescriptorProto,
} from 'protobufjs/ext/descriptor';
import { API_FILES, PROTO_DIR } from './proto';

const TYPE_MESSAGE = 11;
const TYPE_ENUM = 14;

/** protoc's json_name: underscores dropped, the letter after each one upper-cased. */
export function jsonName(field: string): string {
  return field.replace(/_+([a-z0-9]?)/g, (_, next: string) => next.toUpperCase());
}

/** protoc's name for the entry message of map field `field`: "expected_context" → "ExpectedContextEntry". */
export function mapEntryName(field: string): string {
  const camel = jsonName(field);
  return `${camel.charAt(0).toUpperCase()}${camel.slice(1)}Entry`;
}

/** Rewrites one file descriptor (see the module comment); returns the encoded result. */
export function fixFileDescriptor(encoded: Uint8Array, fileName?: string): Uint8Array {
  const file = FileDescriptorProto.toObject(FileDescriptorProto.decode(encoded)) as IFileDescriptorProto;
  const pkg = file.package ? `.${file.package}` : '';

  // Every type the file declares, by fully qualified name (map entries under protobufjs's names:
  // nothing but their own field refers to them).
  const declared = new Set<string>();
  const collect = (scope: string, messages: IDescriptorProto[] = [], enums: IEnumDescriptorProto[] = []) => {
    for (const e of enums) declared.add(`${scope}.${e.name}`);
    for (const message of messages) {
      const name = `${scope}.${message.name}`;
      declared.add(name);
      collect(name, message.nestedType, message.enumType);
    }
  };
  collect(pkg, file.messageType, file.enumType);

  /** Resolves a relative type name as protoc does: innermost scope first, then outwards. */
  const resolve = (scope: string, ref: string): string => {
    if (ref.startsWith('.')) return ref;
    for (let at = scope; ; at = at.slice(0, Math.max(0, at.lastIndexOf('.')))) {
      const candidate = `${at}.${ref}`;
      if (declared.has(candidate)) return candidate;
      if (at === '') return ref; // declared elsewhere: leave it for the client to resolve
    }
  };

  const fixMessage = (scope: string, message: IDescriptorProto) => {
    const name = `${scope}.${message.name}`;
    const nested = new Map((message.nestedType ?? []).map((n) => [n.name, n]));
    for (const field of message.field ?? []) fixField(name, field, nested);
    for (const inner of message.nestedType ?? []) fixMessage(name, inner);
  };

  const fixField = (scope: string, field: IFieldDescriptorProto, nested: Map<unknown, IDescriptorProto>) => {
    field.jsonName ??= jsonName(field.name ?? '');
    if ((field.type !== TYPE_MESSAGE && field.type !== TYPE_ENUM) || !field.typeName) return;
    const entry = field.typeName.startsWith('.') ? undefined : nested.get(field.typeName);
    if (entry?.options?.mapEntry) {
      entry.name = mapEntryName(field.name ?? '');
      field.typeName = `${scope}.${entry.name}`;
      return;
    }
    field.typeName = resolve(scope, field.typeName);
  };

  for (const message of file.messageType ?? []) fixMessage(pkg, message);
  if (fileName) file.name = fileName;
  return FileDescriptorProto.encode(FileDescriptorProto.fromObject(file)).finish();
}

let cached: PackageDefinition | undefined;

/**
 * The API's package definition with protoc-shaped file descriptors (field names as in the .proto),
 * for @grpc/reflection. Not for serving calls: its message types use the .proto's field names.
 */
export function loadReflectionDefinition(): PackageDefinition {
  if (cached) return cached;
  const options: Options = { keepCase: true, includeDirs: [PROTO_DIR] };
  const definition = loadSync([...API_FILES], options);
  // proto-loader merges a package's files into one; each package here has exactly one file, whose
  // path follows its package (buf's PACKAGE_DIRECTORY_MATCH), so the path can be given back.
  const pathOf = new Map(API_FILES.map((path) => [path.split('/').slice(0, -1).join('.'), path]));
  const fixed = new Map<Buffer, Buffer>();
  const fix = (encoded: Buffer): Buffer => {
    let out = fixed.get(encoded);
    if (!out) {
      const pkg = FileDescriptorProto.decode(encoded) as IFileDescriptorProto;
      out = Buffer.from(fixFileDescriptor(encoded, pathOf.get(pkg.package ?? '')));
      fixed.set(encoded, out);
    }
    return out;
  };
  cached = Object.fromEntries(
    Object.entries(definition).map(([name, value]) => {
      const files = (value as { fileDescriptorProtos?: Buffer[] }).fileDescriptorProtos;
      return [name, files ? { ...value, fileDescriptorProtos: files.map(fix) } : value];
    }),
  ) as PackageDefinition;
  return cached;
}
