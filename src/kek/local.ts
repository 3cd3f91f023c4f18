/**
 * The local KEK provider: an AES-256 key-encryption key kept in a JSON file (mode 0600), wrapping
 * DEKs with AES key wrap (RFC 3394, JOSE "A256KW"). For development, tests and single-host setups
 * where no vault exists; production keys belong in Azure Key Vault or Managed HSM.
 *
 * File shape (versions oldest first; the last enabled one wraps new DEKs):
 *   { "name": "dev", "versions": [ { "version": "<32 hex>", "key": "<base64, 32 bytes>", "enabled": true } ] }
 *
 * Key ids look like "local:dev/<version>".
 */
import { randomBytes } from 'node:crypto';
import { closeSync, constants, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { z } from 'zod';
import { aesKeyUnwrap, aesKeyWrap } from '../crypto/keywrap';
import { ErrorCode, SealboxError } from '../errors';
import type { KekProvider, KeyStatus, WrapResult } from './provider';

export const LOCAL_WRAP_ALGORITHM = 'A256KW';

const fileSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9-]{1,127}$/, 'name must be 1-127 letters, digits or dashes'),
  versions: z
    .array(
      z.object({
        version: z.string().regex(/^[0-9a-f]{32}$/, 'version must be 32 lowercase hex digits'),
        key: z
          .string()
          .refine((k) => Buffer.from(k, 'base64').length === 32, 'key must be 32 bytes in base64'),
        enabled: z.boolean().default(true),
      }),
    )
    .min(1, 'a local key file needs at least one version'),
});

export type LocalKeyFile = z.infer<typeof fileSchema>;

/**
 * A fresh key name, `{prefix}-{12 hex}`. Key ids embed the name (`local:{name}/{version}`), so two
 * generated files never claim the same key ids — if both were configured, one alias would own the
 * other's data (kek/registry.ts refuses that, but unique names keep it from arising).
 */
export function uniqueLocalKeyName(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

/** Creates a new local key file with one fresh version; refuses to overwrite an existing file. */
export function createLocalKeyFile(path: string, name: string): void {
  const body: LocalKeyFile = {
    name,
    versions: [
      { version: randomBytes(16).toString('hex'), key: randomBytes(32).toString('base64'), enabled: true },
    ],
  };
  const tmp = `${path}.${process.pid}.tmp`;
  const fd = openSync(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  try {
    writeSync(fd, `${JSON.stringify(body, null, 2)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  // link-then-rename semantics are not needed: O_EXCL on the target would race anyway; callers
  // create the file once, at first start, before serving.
  renameSync(tmp, path);
}

/** Reads and validates a local key file. Errors name the file and the field. */
export function readLocalKeyFile(path: string): LocalKeyFile {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read local key file ${path}: ${(err as Error).message}`);
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(
      `local key file ${path} is invalid at ${issue.path.join('.') || '(root)'}: ${issue.message}`,
    );
  }
  return parsed.data;
}

interface Version {
  readonly keyId: string;
  readonly key: Buffer;
  readonly enabled: boolean;
}

export class LocalKekProvider implements KekProvider {
  readonly kind = 'local';
  /** `local:{name}`: the name in the file, which every key id of this key starts with. */
  readonly keyRef: string;
  private readonly versions = new Map<string, Version>();
  private readonly current: Version;
  private readonly prefix: string;

  constructor(file: LocalKeyFile) {
    this.keyRef = `local:${file.name}`;
    this.prefix = `${this.keyRef}/`;
    let current: Version | undefined;
    for (const v of file.versions) {
      const version = {
        keyId: this.prefix + v.version,
        key: Buffer.from(v.key, 'base64'),
        enabled: v.enabled,
      };
      this.versions.set(version.keyId, version);
      if (version.enabled) current = version;
    }
    if (!current) throw new Error(`local key ${file.name} has no enabled version`);
    this.current = current;
  }

  static fromFile(path: string): LocalKekProvider {
    return new LocalKekProvider(readLocalKeyFile(path));
  }

  owns(keyId: string): boolean {
    return keyId.startsWith(this.prefix);
  }

  async wrap(dek: Uint8Array): Promise<WrapResult> {
    return {
      keyId: this.current.keyId,
      algorithm: LOCAL_WRAP_ALGORITHM,
      wrapped: aesKeyWrap(this.current.key, dek),
    };
  }

  async unwrap(keyId: string, algorithm: string, wrapped: Uint8Array): Promise<Buffer> {
    const version = this.usable(keyId);
    // The header's algorithm is honoured, as Azure's provider does: a local key unwraps A256KW only.
    if (algorithm !== LOCAL_WRAP_ALGORITHM) {
      throw new SealboxError(
        ErrorCode.CIPHERTEXT_MALFORMED,
        `key ${keyId} wraps with ${LOCAL_WRAP_ALGORITHM}, but the header says ${algorithm.slice(0, 32)}`,
      );
    }
    const dek = aesKeyUnwrap(version.key, wrapped);
    if (!dek) {
      throw new SealboxError(
        ErrorCode.CIPHERTEXT_CORRUPT,
        `the wrapped data key failed to unwrap under ${keyId}: the header was modified or names the wrong key`,
      );
    }
    return dek;
  }

  async status(keyId: string): Promise<KeyStatus> {
    const version = this.versions.get(keyId);
    if (!version) throw notFound(keyId);
    return { keyId, enabled: version.enabled, latestKeyId: this.current.keyId };
  }

  /** The version that wraps new DEKs (the file is read once, at start: no I/O here). */
  async refreshCurrentVersion(): Promise<KeyStatus> {
    return this.status(this.current.keyId);
  }

  async close(): Promise<void> {
    for (const v of this.versions.values()) v.key.fill(0);
  }

  private usable(keyId: string): Version {
    const version = this.versions.get(keyId);
    if (!version) throw notFound(keyId);
    if (!version.enabled) {
      throw new SealboxError(
        ErrorCode.KEY_DISABLED,
        `key ${keyId} is disabled; enable the version to decrypt its data`,
        { keyId, verdict: 'disabled' },
      );
    }
    return version;
  }
}

function notFound(keyId: string): SealboxError {
  return new SealboxError(
    ErrorCode.KEY_NOT_FOUND,
    `key version ${keyId.slice(0, 256)} is not in the local key file`,
    { keyId, verdict: 'not-found' },
  );
}
