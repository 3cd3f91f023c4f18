/**
 * Persistence of the dev vault's keys: one JSON file per key name under `<dataDir>/keys/`, named by the
 * lower-cased key name (Key Vault names are case-insensitive), mode 0600 because it holds private
 * material. A file holds every version of the key, its soft-delete state and its rotation policy:
 *
 *   { "format": "sealbox-devvault-key", "formatVersion": 1,
 *     "key": { "name": "Kek", "versions": [ { "version": "<32 hex>", "kty": "RSA", "keyOps": [...],
 *              "enabled": true, "nbf"?: <unix s>, "exp"?: <unix s>, "created": <unix s>, "updated": <unix s>,
 *              "tags"?: {...}, "material": { "n","e","d","p","q","dp","dq","qi" } | { "k" } } ],
 *              "deleted"?: { "deletedDate": <unix s>, "scheduledPurgeDate": <unix s> },
 *              "rotationPolicy"?: { "lifetimeActions": [...], "expiryTime"?: "P90D", "created", "updated" } } }
 *
 * Versions are oldest first; the last is the current version. Writes are atomic and durable
 * (fsutil.atomicWriteFile). Opening a store validates every file completely and refuses to start on the
 * first problem with a DevVaultStoreError naming the file and what is wrong: a corrupt store is never
 * silently repaired or replaced.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { atomicWriteFile, durableUnlink, ensurePrivateDir, TEMP_MARKER } from './fsutil';
import {
  familyOf,
  type KeyOperation,
  type KeyType,
  type LoadedKey,
  loadMaterial,
  OCT_KEY_SIZES,
  RSA_KEY_SIZES,
  rsaConsistent,
  type StoredMaterial,
} from './keys';

const FORMAT = 'sealbox-devvault-key';
const FORMAT_VERSION = 1;

/** Key Vault's key-name rule: 1-127 letters, digits and dashes. */
export const KEY_NAME = /^[0-9a-zA-Z-]{1,127}$/;

/** One key version as stored. */
export interface VersionRecord {
  readonly version: string;
  readonly kty: KeyType;
  readonly keyOps: readonly KeyOperation[];
  readonly enabled: boolean;
  readonly nbf?: number;
  readonly exp?: number;
  readonly created: number;
  readonly updated: number;
  readonly tags?: Readonly<Record<string, string>>;
  readonly material: StoredMaterial;
}

/** One lifetime action of a rotation policy, action names normalised to Key Vault's casing. */
export interface LifetimeActionRecord {
  readonly action: 'Rotate' | 'Notify';
  readonly timeAfterCreate?: string;
  readonly timeBeforeExpiry?: string;
}

/** A key's rotation policy as stored. */
export interface RotationPolicyRecord {
  readonly lifetimeActions: readonly LifetimeActionRecord[];
  readonly expiryTime?: string;
  readonly created: number;
  readonly updated: number;
}

/** Everything stored about one key name. */
export interface KeyRecord {
  readonly name: string;
  /** Oldest first; never empty. */
  readonly versions: readonly VersionRecord[];
  readonly deleted?: { readonly deletedDate: number; readonly scheduledPurgeDate: number };
  readonly rotationPolicy?: RotationPolicyRecord;
}

/** A store file that cannot be used, and why. The store is left exactly as found. */
export class DevVaultStoreError extends Error {
  override readonly name = 'DevVaultStoreError';
  constructor(
    readonly file: string,
    readonly problem: string,
  ) {
    super(
      `dev vault store is corrupt: ${file}: ${problem}. The file was left untouched; restore it from a backup, ` +
        'or move it out of the data directory to drop that key.',
    );
  }
}

const unixTime = z.number().int().min(0);
const b64url = z.string().regex(/^[A-Za-z0-9_-]+$/, 'must be base64url');

const materialSchema = z.union([
  z.strictObject({
    n: b64url,
    e: b64url,
    d: b64url,
    p: b64url,
    q: b64url,
    dp: b64url,
    dq: b64url,
    qi: b64url,
  }),
  z.strictObject({ k: b64url }),
]);

const versionSchema = z.strictObject({
  version: z.string().regex(/^[0-9a-f]{32}$/, 'must be 32 lowercase hex digits'),
  kty: z.enum(['RSA', 'RSA-HSM', 'oct-HSM']),
  keyOps: z.array(
    z.enum(['encrypt', 'decrypt', 'sign', 'verify', 'wrapKey', 'unwrapKey', 'import', 'export']),
  ),
  enabled: z.boolean(),
  nbf: unixTime.optional(),
  exp: unixTime.optional(),
  created: unixTime,
  updated: unixTime,
  tags: z.record(z.string(), z.string()).optional(),
  material: materialSchema,
});

const fileSchema = z.strictObject({
  format: z.literal(FORMAT),
  formatVersion: z.literal(FORMAT_VERSION),
  key: z.strictObject({
    name: z.string().regex(KEY_NAME, 'must be 1-127 letters, digits or dashes'),
    versions: z.array(versionSchema).min(1, 'a key needs at least one version'),
    deleted: z.strictObject({ deletedDate: unixTime, scheduledPurgeDate: unixTime }).optional(),
    rotationPolicy: z
      .strictObject({
        lifetimeActions: z.array(
          z.strictObject({
            action: z.enum(['Rotate', 'Notify']),
            timeAfterCreate: z.string().optional(),
            timeBeforeExpiry: z.string().optional(),
          }),
        ),
        expiryTime: z.string().optional(),
        created: unixTime,
        updated: unixTime,
      })
      .optional(),
  }),
});

/** The file name that holds a key (names are case-insensitive, so the lower-cased name). */
export function keyFileName(name: string): string {
  return `${name.toLowerCase()}.json`;
}

/**
 * Parses and fully checks one store file: JSON, schema, file name, unique versions, and that every
 * version's material loads as a key of its type and size. Returns the record and its loaded keys.
 */
export function parseKeyFile(
  fileName: string,
  text: string,
): { record: KeyRecord; loaded: Map<string, LoadedKey> } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new DevVaultStoreError(fileName, `not valid JSON (${(err as Error).message})`);
  }
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = issue === undefined ? '(root)' : issue.path.join('.') || '(root)';
    throw new DevVaultStoreError(fileName, `${path}: ${issue?.message ?? 'invalid'}`);
  }
  const record = parsed.data.key as KeyRecord;
  if (keyFileName(record.name) !== fileName) {
    throw new DevVaultStoreError(
      fileName,
      `key.name is '${record.name}', which belongs in ${keyFileName(record.name)}`,
    );
  }
  const loaded = new Map<string, LoadedKey>();
  record.versions.forEach((v, i) => {
    const where = `key.versions.${i}`;
    if (loaded.has(v.version))
      throw new DevVaultStoreError(fileName, `${where}.version ${v.version} appears twice`);
    let key: LoadedKey;
    try {
      key = loadMaterial(familyOf(v.kty), v.material);
    } catch (err) {
      throw new DevVaultStoreError(
        fileName,
        `${where}.material is not a usable ${v.kty} key (${(err as Error).message})`,
      );
    }
    if (key.family === 'RSA' && !rsaConsistent(v.material)) {
      throw new DevVaultStoreError(fileName, `${where}.material: the RSA members do not belong to one key`);
    }
    const sizes = key.family === 'RSA' ? RSA_KEY_SIZES : OCT_KEY_SIZES;
    if (!sizes.includes(key.size)) {
      throw new DevVaultStoreError(
        fileName,
        `${where}.material is a ${key.size}-bit key, not a size Key Vault supports`,
      );
    }
    if (v.updated < v.created) throw new DevVaultStoreError(fileName, `${where}.updated is before created`);
    loaded.set(v.version, key);
  });
  return { record, loaded };
}

/** Serialises a record in the store format. */
export function formatKeyFile(record: KeyRecord): string {
  return `${JSON.stringify({ format: FORMAT, formatVersion: FORMAT_VERSION, key: record }, null, 2)}\n`;
}

/** The key files of a data directory, loaded and validated. */
export class KeyStore {
  private readonly records = new Map<string, KeyRecord>();
  private readonly loaded = new Map<string, LoadedKey>();
  private readonly locks = new Map<string, Promise<void>>();

  private constructor(readonly dir: string) {}

  /**
   * Opens (creating if needed) `<dataDir>/keys`, validates every key file and loads its material.
   * Leftover temporary files from an interrupted write are handed to `onStaleTemp` (which may remove
   * them) and never read: their rename never happened, so the committed file is intact.
   */
  static async open(
    dataDir: string,
    onStaleTemp: (file: string) => Promise<void> | void = () => {},
  ): Promise<KeyStore> {
    const store = new KeyStore(join(dataDir, 'keys'));
    await ensurePrivateDir(store.dir);
    const names = (await readdir(store.dir)).sort();
    for (const file of names) {
      if (file.includes(TEMP_MARKER)) {
        await onStaleTemp(join(store.dir, file));
        continue;
      }
      const path = join(store.dir, file);
      if (!file.endsWith('.json')) throw new DevVaultStoreError(path, 'unexpected file in the key store');
      let parsed: ReturnType<typeof parseKeyFile>;
      try {
        parsed = parseKeyFile(file, await readFile(path, 'utf8'));
      } catch (err) {
        // parseKeyFile names the file; the caller needs the full path to find it.
        if (err instanceof DevVaultStoreError) throw new DevVaultStoreError(path, err.problem);
        throw err;
      }
      const { record, loaded } = parsed;
      store.records.set(record.name.toLowerCase(), record);
      for (const [version, key] of loaded) store.loaded.set(version, key);
    }
    return store;
  }

  /** All records (live and soft-deleted). */
  all(): IterableIterator<KeyRecord> {
    return this.records.values();
  }

  /** The record for a key name (case-insensitive), if any. */
  get(name: string): KeyRecord | undefined {
    return this.records.get(name.toLowerCase());
  }

  /** The working key for a stored version. Every stored version has one. */
  material(version: string): LoadedKey {
    const key = this.loaded.get(version);
    if (key === undefined) throw new Error(`no loaded material for version ${version}`);
    return key;
  }

  /**
   * Writes `record` durably, then makes it (and any `newKeys` material) visible. Postcondition: memory
   * never shows a state the disk does not have.
   */
  async save(record: KeyRecord, newKeys: ReadonlyMap<string, LoadedKey> = new Map()): Promise<void> {
    await atomicWriteFile(join(this.dir, keyFileName(record.name)), formatKeyFile(record), 0o600);
    this.records.set(record.name.toLowerCase(), record);
    for (const [version, key] of newKeys) this.loaded.set(version, key);
  }

  /** Removes a key name and all its versions for good (purge). */
  async remove(name: string): Promise<void> {
    const record = this.get(name);
    await durableUnlink(join(this.dir, keyFileName(name)));
    this.records.delete(name.toLowerCase());
    for (const v of record?.versions ?? []) this.loaded.delete(v.version);
  }

  /**
   * Runs `fn` while holding the lock of one key name, so read-modify-write sequences on the same key
   * (create a version, update, delete) never interleave across awaits.
   */
  async withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const id = name.toLowerCase();
    const previous = this.locks.get(id) ?? Promise.resolve();
    let release!: () => void;
    const current = new Promise<void>((resolve) => {
      release = resolve;
    });
    const chained = previous.then(() => current);
    this.locks.set(id, chained);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(id) === chained) this.locks.delete(id);
    }
  }
}
