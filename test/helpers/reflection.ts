/**
 * A gRPC server reflection client for tests, as grpcurl uses the protocol: one stream, requests
 * answered in order; built from the upstream reflection.proto that @grpc/reflection ships.
 */
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import {
  type ClientDuplexStream,
  credentials,
  type GrpcObject,
  loadPackageDefinition,
  type ServiceClientConstructor,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';

/** The reflection protocol versions sealbox serves. */
export const VERSIONS = ['v1', 'v1alpha'] as const;
export type Version = (typeof VERSIONS)[number];

/** The reflection protocol's messages as proto-loader decodes them (keepCase: false). */
interface ReflectionResponse {
  listServicesResponse?: { service: Array<{ name: string }> };
  fileDescriptorResponse?: { fileDescriptorProto: Buffer[] };
  errorResponse?: { errorCode: number; errorMessage: string };
}

/** A ServerReflection client for `version`, from the upstream reflection.proto @grpc/reflection ships. */
function reflectionClient(version: Version, target: string) {
  const root = join(dirname(require.resolve('@grpc/reflection/package.json')), 'build', 'proto');
  const definition = loadSync(`grpc/reflection/${version}/reflection.proto`, {
    includeDirs: [root],
    oneofs: true,
  });
  const pkg = loadPackageDefinition(definition) as GrpcObject;
  const Client = ((pkg['grpc'] as GrpcObject)['reflection'] as GrpcObject)[version] as GrpcObject;
  return new (Client['ServerReflection'] as ServiceClientConstructor)(target, credentials.createInsecure());
}

/** One reflection stream: ask() sends a request and waits for its answer; the server answers in order. */
export function openReflection(version: Version, target: string) {
  const client = reflectionClient(version, target);
  const call = (
    client as unknown as { ServerReflectionInfo(): ClientDuplexStream<object, ReflectionResponse> }
  ).ServerReflectionInfo();
  const waiting: Array<{ resolve(r: ReflectionResponse): void; reject(e: Error): void }> = [];
  let failure: Error | undefined;
  call.on('data', (response: ReflectionResponse) => waiting.shift()?.resolve(response));
  call.on('error', (err: Error) => {
    failure = err;
    for (const w of waiting.splice(0)) w.reject(err);
  });
  const ended = new Promise<ServiceError | undefined>((resolve) => {
    call.on('error', (err: ServiceError) => resolve(err));
    call.on('end', () => resolve(undefined));
  });
  return {
    ask(request: object): Promise<ReflectionResponse> {
      if (failure) return Promise.reject(failure);
      return new Promise((resolve, reject) => {
        waiting.push({ resolve, reject });
        call.write(request);
      });
    },
    /** Resolves with the stream's error, or undefined when it ended OK. */
    ended,
    close(): void {
      call.end();
      client.close();
    },
  };
}

export async function listServices(version: Version, target: string): Promise<string[]> {
  const stream = openReflection(version, target);
  try {
    const response = await stream.ask({ host: '', listServices: '*' });
    assert.equal(response.errorResponse, undefined, JSON.stringify(response.errorResponse));
    return response.listServicesResponse!.service.map((s) => s.name).sort();
  } finally {
    stream.close();
  }
}

/** The file descriptors for `symbol` (its file and that file's dependencies) as a FileDescriptorSet. */
export async function descriptorSetFor(version: Version, target: string, symbol: string): Promise<Buffer> {
  const stream = openReflection(version, target);
  try {
    const response = await stream.ask({ host: '', fileContainingSymbol: symbol });
    assert.equal(response.errorResponse, undefined, JSON.stringify(response.errorResponse));
    const files = response.fileDescriptorResponse!.fileDescriptorProto;
    assert.ok(files.length > 0, `descriptors for ${symbol}`);
    // FileDescriptorSet { repeated FileDescriptorProto file = 1; }: tag 0x0a, varint length, bytes.
    return Buffer.concat(files.flatMap((file) => [Buffer.from([0x0a]), varint(file.length), file]));
  } finally {
    stream.close();
  }
}

function varint(value: number): Buffer {
  const bytes: number[] = [];
  while (value >= 0x80) {
    bytes.push((value & 0x7f) | 0x80);
    value >>>= 7;
  }
  bytes.push(value);
  return Buffer.from(bytes);
}
