/**
 * Key Vault's keys semantics, independent of HTTP: create, import, get, list, update, soft delete,
 * recover, purge, rotate, rotation policies and the crypto operations, each returning the JSON body Key
 * Vault would (swagger definitions KeyBundle, DeletedKeyBundle, KeyListResult, DeletedKeyListResult,
 * KeyRotationPolicy, KeyOperationResult) or throwing a KvError. Identifiers are built from a base URL the
 * caller passes per request ("https://localhost:PORT"), so ids follow the host the client used.
 *
 * Lifecycle of a key name: absent → live ⇄ (deleting →) deleted → absent (purge, or the scheduled purge
 * date passing). With lroDelayMs > 0, delete and recover stay "in progress" that long, so the SDK's
 * pollers see what they see against Azure: a 404 from getDeletedKey/getKey until the operation finishes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import { type ThrottleCharge, throttleClassOf } from './controls';
import { kvErrors } from './errors';
import {
  type CryptoOperation,
  checkKeyOps,
  decodeBase64url,
  defaultKeyOps,
  familyOf,
  generateMaterial,
  type KeyOperation,
  type KeyType,
  type LoadedKey,
  loadMaterial,
  materialFromImport,
  OCT_KEY_SIZES,
  publicJwk,
  RSA_KEY_SIZES,
  runCrypto,
  type StoredMaterial,
} from './keys';
import {
  KEY_NAME,
  type KeyRecord,
  type KeyStore,
  type LifetimeActionRecord,
  type VersionRecord,
} from './store';

/** Vault-wide settings. */
export interface VaultSettings {
  /** Soft-delete retention, 7..90 days. */
  readonly retentionDays: number;
  readonly purgeProtection: boolean;
  /** How long delete and recover stay in progress (ms). */
  readonly lroDelayMs: number;
  /** Clock in ms; replaceable for tests. */
  readonly now?: () => number;
  /** Vault kind; default 'vault'. */
  readonly kind?: 'vault' | 'managedhsm';
  /** SKU of a 'vault': Standard refuses HSM keys; default 'premium'. */
  readonly sku?: 'standard' | 'premium';
  /**
   * Compatibility with the dev vault before issue 13: a 'vault' that creates oct-HSM keys (Azure refuses
   * them). Default: true when `kind` is absent, else false.
   */
  readonly allowSymmetricKeys?: boolean;
  /**
   * Probability in [0, 1] that a list page is short (fewer items than maxresults, possibly none) while a
   * nextLink follows, as Key Vault's pages can be. Default 0: full pages.
   */
  readonly shortPageRate?: number;
}

const skiptokenSchema = z.strictObject({
  a: z.string().nullable(),
  n: z.number().int().min(0),
  e: z.boolean(),
});

function parseJson(text: string | undefined): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** Key Vault's page size cap and default for list operations. */
const MAX_RESULTS = 25;
/** Key Vault allows at most 15 tags per object. */
const MAX_TAGS = 15;
/** Key Vault requires a rotation policy's expiryTime to be at least 28 days. */
const MIN_EXPIRY_SECONDS = 28 * 86_400;

type Json = Record<string, unknown>;

const tagsSchema = z
  .record(z.string(), z.string())
  .refine((t) => Object.keys(t).length <= MAX_TAGS, `at most ${MAX_TAGS} tags are allowed`);

const attributesSchema = z.object({
  enabled: z.boolean().optional(),
  nbf: z.number().int().min(0).nullable().optional(),
  exp: z.number().int().min(0).nullable().optional(),
  exportable: z.boolean().optional(),
});

const createSchema = z.object({
  kty: z.string(),
  key_size: z.number().int().optional(),
  public_exponent: z.number().int().optional(),
  key_ops: z.array(z.string()).optional(),
  attributes: attributesSchema.optional(),
  tags: tagsSchema.optional(),
  crv: z.string().optional(),
  release_policy: z.unknown().optional(),
});

const importSchema = z.object({
  key: z.record(z.string(), z.unknown()),
  Hsm: z.boolean().optional(),
  attributes: attributesSchema.optional(),
  tags: tagsSchema.optional(),
  release_policy: z.unknown().optional(),
});

const updateSchema = z.object({
  key_ops: z.array(z.string()).optional(),
  attributes: attributesSchema.optional(),
  tags: tagsSchema.optional(),
  release_policy: z.unknown().optional(),
});

const policySchema = z.object({
  id: z.string().optional(),
  lifetimeActions: z
    .array(
      z.object({
        trigger: z.object({
          timeAfterCreate: z.string().optional(),
          timeBeforeExpiry: z.string().optional(),
        }),
        action: z.object({ type: z.string() }),
      }),
    )
    .max(2, 'at most two lifetime actions (one rotate, one notify) are allowed')
    .optional(),
  attributes: z.object({ expiryTime: z.string().optional() }).passthrough().optional(),
});

const cryptoSchema = z.object({
  alg: z.string(),
  value: z.string(),
  iv: z.string().optional(),
  aad: z.string().optional(),
  tag: z.string().optional(),
});

/** Parses a request body with `schema`, turning the first problem into Key Vault's BadParameter. */
function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body ?? {});
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const where = issue?.path.length ? `${issue.path.join('.')}: ` : '';
  throw kvErrors.badParameter(`Invalid request body: ${where}${issue?.message ?? 'invalid'}.`);
}

/**
 * Seconds in an ISO 8601 duration (PnYnMnWnDTnHnMnS), with Key Vault's calendar approximations (a year
 * is 365 days, a month 30). Undefined when `text` is not a duration.
 */
export function parseIsoDuration(text: string): number | undefined {
  const m = /^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$/.exec(
    text,
  );
  if (m === null || text === 'P' || text.endsWith('T')) return undefined;
  const [y, mo, w, d, h, mi, s] = m.slice(1).map((x) => Number(x ?? 0)) as number[];
  return (
    ((((y ?? 0) * 365 + (mo ?? 0) * 30 + (w ?? 0) * 7 + (d ?? 0)) * 24 + (h ?? 0)) * 60 + (mi ?? 0)) * 60 +
    (s ?? 0)
  );
}

/** A key name's lifecycle state (see the module comment). */
type NameState = 'absent' | 'live' | 'deleting' | 'deleted' | 'recovering';

/** The keys side of a Key Vault, over a KeyStore. */
export class Vault {
  private readonly now: () => number;
  /** In-flight delete/recover completions by lower-cased name (ms timestamps); never persisted. */
  private readonly pending = new Map<string, { kind: 'deleting' | 'recovering'; until: number }>();
  /** Seeds which list pages are short (see page()). */
  private readonly salt = randomBytes(8).toString('hex');

  constructor(
    private readonly store: KeyStore,
    private readonly settings: VaultSettings,
  ) {
    this.now = settings.now ?? Date.now;
  }

  private nowSeconds(): number {
    return Math.floor(this.now() / 1000);
  }

  /** The recovery level Key Vault reports for this vault's retention and purge protection. */
  private recoveryLevel(): string {
    const custom = this.settings.retentionDays < 90 ? 'CustomizedRecoverable' : 'Recoverable';
    return this.settings.purgeProtection ? custom : `${custom}+Purgeable`;
  }

  /** The state of a name, purging it first if its scheduled purge date has passed. */
  private async stateOf(name: string): Promise<{ state: NameState; record?: KeyRecord }> {
    const record = this.store.get(name);
    if (record === undefined) return { state: 'absent' };
    const id = name.toLowerCase();
    const pending = this.pending.get(id);
    if (pending !== undefined && pending.until <= this.now()) this.pending.delete(id);
    const inFlight = this.pending.get(id)?.kind;
    if (record.deleted === undefined)
      return { state: inFlight === 'recovering' ? 'recovering' : 'live', record };
    if (record.deleted.scheduledPurgeDate <= this.nowSeconds()) {
      // The service purges on its own once the retention period has passed. No lock here: callers may
      // already hold this name's lock, and removing an expired record twice is harmless.
      await this.store.remove(name);
      this.pending.delete(id);
      return { state: 'absent' };
    }
    return { state: inFlight === 'deleting' ? 'deleting' : 'deleted', record };
  }

  /** The live record for `name`, or Key Vault's 404. */
  private async live(name: string): Promise<KeyRecord> {
    const { state, record } = await this.stateOf(name);
    if (state !== 'live' || record === undefined) throw kvErrors.keyNotFound(name);
    return record;
  }

  /** A version of a live key ('' = the current one), or Key Vault's 404. */
  private async liveVersion(name: string, version: string): Promise<{ record: KeyRecord; v: VersionRecord }> {
    const record = await this.live(name);
    const v = version === '' ? record.versions.at(-1) : record.versions.find((x) => x.version === version);
    if (v === undefined) throw kvErrors.keyNotFound(`${name}/${version}`);
    return { record, v };
  }

  /**
   * What a request costs for throttling: creates (create, import, rotate) by whether the key is
   * HSM-backed, operations on a key by its type and size, everything else as a vault transaction.
   */
  chargeFor(operation: string, name: string | undefined, version: string, body: unknown): ThrottleCharge {
    if (operation === 'createKey' || operation === 'importKey' || operation === 'rotateKey') {
      const b = (body ?? {}) as { kty?: unknown; Hsm?: unknown; key?: { kty?: unknown } };
      const kty = operation === 'createKey' ? b.kty : operation === 'importKey' ? b.key?.kty : undefined;
      const latest = name === undefined ? undefined : this.store.get(name)?.versions.at(-1);
      const requested = typeof kty === 'string' ? kty : (latest?.kty ?? 'RSA');
      return { kind: 'create', hsm: b.Hsm === true || requested.endsWith('-HSM') || requested === 'oct' };
    }
    const record = name === undefined ? undefined : this.store.get(name);
    const v = version === '' ? record?.versions.at(-1) : record?.versions.find((x) => x.version === version);
    if (v === undefined) return { kind: 'vault' };
    return { kind: 'key', cls: throttleClassOf(v.kty, this.store.material(v.version).size), op: operation };
  }

  // ---- responses ------------------------------------------------------------------------------------

  private attributes(v: VersionRecord): Json {
    return {
      enabled: v.enabled,
      ...(v.nbf === undefined ? {} : { nbf: v.nbf }),
      ...(v.exp === undefined ? {} : { exp: v.exp }),
      created: v.created,
      updated: v.updated,
      recoveryLevel: this.recoveryLevel(),
      recoverableDays: this.settings.retentionDays,
      exportable: false,
    };
  }

  private bundle(base: string, record: KeyRecord, v: VersionRecord): Json {
    return {
      key: {
        kid: `${base}/keys/${record.name}/${v.version}`,
        kty: v.kty,
        key_ops: [...v.keyOps],
        // Public members only: private material never leaves the vault.
        ...publicJwk(this.store.material(v.version)),
      },
      attributes: this.attributes(v),
      ...(v.tags === undefined ? {} : { tags: { ...v.tags } }),
    };
  }

  /** A key in a list (GetKeys, GetDeletedKeys): kid without a version, the current version's attributes and tags. */
  private listItem(base: string, record: KeyRecord): Json {
    const v = this.latest(record);
    return {
      kid: `${base}/keys/${record.name}`,
      attributes: this.attributes(v),
      ...(v.tags === undefined ? {} : { tags: { ...v.tags } }),
    };
  }

  private deletedInfo(base: string, record: KeyRecord): Json {
    const deleted = record.deleted;
    if (deleted === undefined) return {};
    return {
      recoveryId: `${base}/deletedkeys/${record.name}`,
      scheduledPurgeDate: deleted.scheduledPurgeDate,
      deletedDate: deleted.deletedDate,
    };
  }

  private latest(record: KeyRecord): VersionRecord {
    const v = record.versions.at(-1);
    if (v === undefined) throw new Error(`key ${record.name} has no versions`);
    return v;
  }

  /**
   * One page of `items` in `sortKey` order, as Key Vault pages: at most `maxresults` (default and cap 25)
   * values and a nextLink with an opaque $skiptoken while more remain; and, like Key Vault, pages may be
   * short or even empty while a nextLink follows (the service stops a page early, e.g. when it skips
   * items it will not return). Which pages are short is decided by a PRNG seeded by the vault's salt, the
   * listing and the page number, so a listing is reproducible within a run but not across vaults. An empty
   * page is never followed by another empty one, so every listing ends. nextLink is omitted on the last
   * page (Key Vault sends null there, which the swagger's string type does not allow).
   */
  private page<T>(
    items: T[],
    sortKey: (item: T) => string,
    render: (item: T) => Json,
    query: { maxresults?: string | null; skiptoken?: string | null; apiVersion: string; link: string },
  ): Json {
    let max = MAX_RESULTS;
    if (query.maxresults !== undefined && query.maxresults !== null) {
      max = Number(query.maxresults);
      if (!Number.isInteger(max) || max < 1 || max > MAX_RESULTS) {
        throw kvErrors.badParameter(`maxresults must be an integer from 1 to ${MAX_RESULTS}.`);
      }
    }
    let cursor: { a: string | null; n: number; e: boolean } = { a: null, n: 0, e: false };
    if (query.skiptoken !== undefined && query.skiptoken !== null) {
      const parsed = skiptokenSchema.safeParse(parseJson(decodeBase64url(query.skiptoken)?.toString('utf8')));
      if (!parsed.success) throw kvErrors.badParameter('Invalid $skiptoken.');
      cursor = parsed.data;
    }
    const after = cursor.a;
    const sorted = items
      .map((item) => ({ item, key: sortKey(item) }))
      .sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))
      .filter((x) => after === null || x.key > after);
    const size = Math.min(max, this.pageSize(query.link, cursor.n, max, cursor.e));
    const pageItems = sorted.slice(0, size);
    const body: Json = { value: pageItems.map((x) => render(x.item)) };
    if (sorted.length > size) {
      const token = Buffer.from(
        JSON.stringify({ a: pageItems.at(-1)?.key ?? after, n: cursor.n + 1, e: size === 0 }),
      ).toString('base64url');
      body['nextLink'] =
        `${query.link}?api-version=${encodeURIComponent(query.apiVersion)}&$skiptoken=${token}&maxresults=${max}`;
    }
    return body;
  }

  /** How many items page `n` of a listing holds (see page()); `max` when pages are never short. */
  private pageSize(link: string, n: number, max: number, previousEmpty: boolean): number {
    const rate = this.settings.shortPageRate ?? 0;
    if (rate <= 0) return max;
    const h = createHash('sha256').update(`${this.salt}|${link}|${n}`).digest();
    if (h.readUInt32BE(0) / 2 ** 32 >= rate) return max;
    // A third of short pages are empty, the rest hold 0 … max-1 items.
    const short = h.readUInt32BE(8) % 3 === 0 ? 0 : h.readUInt32BE(4) % max;
    return short === 0 && previousEmpty ? 1 : short;
  }

  // ---- attributes from requests ----------------------------------------------------------------------

  /** Applies request attributes (enabled/nbf/exp) onto a version; `exportable: true` is refused. */
  private withAttributes<T extends Pick<VersionRecord, 'enabled' | 'nbf' | 'exp'>>(
    v: T,
    attrs: z.infer<typeof attributesSchema> | undefined,
  ): T {
    if (attrs?.exportable === true) {
      throw kvErrors.badParameter(
        'Exportable keys need a release policy, which the sealbox dev vault does not support.',
      );
    }
    const out: Record<string, unknown> = { ...v };
    if (attrs?.enabled !== undefined) out['enabled'] = attrs.enabled;
    // null clears a date, a number sets it, absent leaves it.
    for (const field of ['nbf', 'exp'] as const) {
      const value = attrs?.[field];
      if (value === null) delete out[field];
      else if (value !== undefined) out[field] = value;
    }
    return out as T;
  }

  private async addVersion(
    name: string,
    build: (existing: KeyRecord | undefined) => Promise<{ version: VersionRecord; key: LoadedKey }>,
  ): Promise<{ record: KeyRecord; v: VersionRecord }> {
    if (!KEY_NAME.test(name))
      throw kvErrors.badParameter(`The key name '${name}' is invalid: use 1-127 letters, digits and dashes.`);
    return this.store.withLock(name, async () => {
      const { state, record } = await this.stateOf(name);
      if (state === 'deleted') throw kvErrors.deletedButRecoverable(name);
      if (state === 'deleting') throw kvErrors.beingDeleted(name);
      if (state === 'recovering') throw kvErrors.beingRecovered(name);
      const { version, key } = await build(record);
      const next: KeyRecord = {
        ...(record ?? {}),
        name: record?.name ?? name,
        versions: [...(record?.versions ?? []), version],
      };
      await this.store.save(next, new Map([[version.version, key]]));
      return { record: next, v: version };
    });
  }

  private newVersionId(): string {
    return randomBytes(16).toString('hex');
  }

  /**
   * The key type this kind of vault stores for a request, or Azure's refusal: a vault holds RSA (and
   * RSA-HSM on Premium, 403 "Hardware key operation not allowed on standard vault" on Standard) and no
   * symmetric keys (400 BadParameter / KeyTypeNotSupported "Invalid kty value: oct"); a Managed HSM holds
   * HSM keys only (RSA-HSM, oct-HSM; software types refused the same way, inferred).
   */
  private admitKty(kty: KeyType, requested: string): KeyType {
    const kind = this.settings.kind ?? 'vault';
    if (kind === 'managedhsm') {
      if (requested === 'RSA' || requested === 'oct') throw kvErrors.keyTypeNotSupported(requested);
      return kty;
    }
    // Settings without a kind are the pre-issue-13 vault, which held symmetric keys.
    if (kty === 'oct-HSM' && !(this.settings.allowSymmetricKeys ?? this.settings.kind === undefined))
      throw kvErrors.keyTypeNotSupported(requested);
    if (kty === 'RSA-HSM' && this.settings.sku === 'standard') throw kvErrors.hardwareKeyOnStandard();
    return kty;
  }

  // ---- operations ------------------------------------------------------------------------------------

  /** CreateKey: POST /keys/{name}/create. */
  async createKey(base: string, name: string, body: unknown): Promise<Json> {
    const req = parseBody(createSchema, body);
    if (req.release_policy !== undefined)
      throw kvErrors.badParameter('Release policies are not supported by the sealbox dev vault.');
    const kty = this.admitKty(normaliseKty(req.kty), req.kty);
    const family = familyOf(kty);
    const size = req.key_size ?? (family === 'RSA' ? 2048 : 256);
    const sizes = family === 'RSA' ? RSA_KEY_SIZES : OCT_KEY_SIZES;
    if (!sizes.includes(size)) {
      throw kvErrors.badParameter(
        `key_size ${size} is not valid for ${kty}; use one of ${sizes.join(', ')}.`,
      );
    }
    if (req.public_exponent !== undefined && req.public_exponent !== 65537) {
      throw kvErrors.badParameter('public_exponent must be 65537.');
    }
    const keyOps = req.key_ops === undefined ? defaultKeyOps(kty) : checkKeyOps(kty, req.key_ops);
    const material = await generateMaterial(kty, size);
    const { record, v } = await this.addVersion(name, async () =>
      this.versionFrom(kty, keyOps, material, req),
    );
    return this.bundle(base, record, v);
  }

  /** ImportKey: PUT /keys/{name} (BYOK: the private JWK in the body). */
  async importKey(base: string, name: string, body: unknown): Promise<Json> {
    const req = parseBody(importSchema, body);
    if (req.release_policy !== undefined)
      throw kvErrors.badParameter('Release policies are not supported by the sealbox dev vault.');
    const imported = materialFromImport(req.key, req.Hsm === true || this.settings.kind === 'managedhsm');
    const { material } = imported;
    const kty = this.admitKty(imported.kty, imported.kty);
    const keyOps =
      req.key['key_ops'] === undefined ? defaultKeyOps(kty) : checkKeyOps(kty, req.key['key_ops']);
    const { record, v } = await this.addVersion(name, async () =>
      this.versionFrom(kty, keyOps, material, req),
    );
    return this.bundle(base, record, v);
  }

  private versionFrom(
    kty: KeyType,
    keyOps: KeyOperation[],
    material: StoredMaterial,
    req: { attributes?: z.infer<typeof attributesSchema>; tags?: Record<string, string> },
  ): { version: VersionRecord; key: LoadedKey } {
    const now = this.nowSeconds();
    const base: VersionRecord = {
      version: this.newVersionId(),
      kty,
      keyOps,
      enabled: true,
      created: now,
      updated: now,
      ...(req.tags === undefined ? {} : { tags: req.tags }),
      material,
    };
    return { version: this.withAttributes(base, req.attributes), key: loadMaterial(familyOf(kty), material) };
  }

  /** GetKey: GET /keys/{name}/{version} ('' = current version). */
  async getKey(base: string, name: string, version: string): Promise<Json> {
    const { record, v } = await this.liveVersion(name, version);
    return this.bundle(base, record, v);
  }

  /** GetKeys: GET /keys — one item per live key, kid without a version, attributes of the current version. */
  async getKeys(
    base: string,
    query: { maxresults?: string | null; skiptoken?: string | null; apiVersion: string },
  ) {
    const live = await this.recordsIn('live');
    return this.page(
      live,
      (r) => r.name.toLowerCase(),
      (r) => this.listItem(base, r),
      { ...query, link: `${base}/keys` },
    );
  }

  /** GetKeyVersions: GET /keys/{name}/versions — one item per version, in no promised order. */
  async getKeyVersions(
    base: string,
    name: string,
    query: { maxresults?: string | null; skiptoken?: string | null; apiVersion: string },
  ): Promise<Json> {
    const record = await this.live(name);
    // Key Vault promises no order of versions; the dev vault lists them by version id, which is random,
    // so a client that takes the last listed version for the newest one is caught.
    return this.page(
      [...record.versions],
      (v) => v.version,
      (v) => ({
        kid: `${base}/keys/${record.name}/${v.version}`,
        attributes: this.attributes(v),
        ...(v.tags === undefined ? {} : { tags: { ...v.tags } }),
      }),
      { ...query, link: `${base}/keys/${record.name}/versions` },
    );
  }

  /** UpdateKey: PATCH /keys/{name}/{version} — enabled, nbf, exp, key_ops, tags of one version. */
  async updateKey(base: string, name: string, version: string, body: unknown): Promise<Json> {
    const req = parseBody(updateSchema, body);
    if (req.release_policy !== undefined)
      throw kvErrors.badParameter('Release policies are not supported by the sealbox dev vault.');
    return this.store.withLock(name, async () => {
      const { record, v } = await this.liveVersion(name, version);
      let next: VersionRecord = this.withAttributes(v, req.attributes);
      if (req.key_ops !== undefined) next = { ...next, keyOps: checkKeyOps(v.kty, req.key_ops) };
      if (req.tags !== undefined) next = { ...next, tags: req.tags };
      next = { ...next, updated: Math.max(this.nowSeconds(), v.created) };
      const updated: KeyRecord = {
        ...record,
        versions: record.versions.map((x) => (x.version === v.version ? next : x)),
      };
      await this.store.save(updated);
      return this.bundle(base, updated, next);
    });
  }

  /** DeleteKey: DELETE /keys/{name} — soft delete of every version; returns the deleted current version. */
  async deleteKey(base: string, name: string): Promise<Json> {
    return this.store.withLock(name, async () => {
      const record = await this.live(name);
      const now = this.nowSeconds();
      const deleted: KeyRecord = {
        ...record,
        deleted: { deletedDate: now, scheduledPurgeDate: now + this.settings.retentionDays * 86_400 },
      };
      await this.store.save(deleted);
      this.markPending(name, 'deleting');
      return { ...this.bundle(base, deleted, this.latest(deleted)), ...this.deletedInfo(base, deleted) };
    });
  }

  private markPending(name: string, kind: 'deleting' | 'recovering'): void {
    if (this.settings.lroDelayMs > 0) {
      this.pending.set(name.toLowerCase(), { kind, until: this.now() + this.settings.lroDelayMs });
    }
  }

  /** GetDeletedKey: GET /deletedkeys/{name}. */
  async getDeletedKey(base: string, name: string): Promise<Json> {
    const { state, record } = await this.stateOf(name);
    if (state !== 'deleted' || record === undefined) throw kvErrors.deletedKeyNotFound();
    return { ...this.bundle(base, record, this.latest(record)), ...this.deletedInfo(base, record) };
  }

  /** GetDeletedKeys: GET /deletedkeys. */
  async getDeletedKeys(
    base: string,
    query: { maxresults?: string | null; skiptoken?: string | null; apiVersion: string },
  ): Promise<Json> {
    const deleted = await this.recordsIn('deleted');
    return this.page(
      deleted,
      (r) => r.name.toLowerCase(),
      (r) => ({ ...this.listItem(base, r), ...this.deletedInfo(base, r) }),
      { ...query, link: `${base}/deletedkeys` },
    );
  }

  /** RecoverDeletedKey: POST /deletedkeys/{name}/recover — back to live with every version. */
  async recoverDeletedKey(base: string, name: string): Promise<Json> {
    return this.store.withLock(name, async () => {
      const { state, record } = await this.stateOf(name);
      if (state === 'deleting') throw kvErrors.beingDeleted(name);
      if (state !== 'deleted' || record === undefined) throw kvErrors.deletedKeyNotFound();
      const { deleted: _dropped, ...rest } = record;
      const recovered: KeyRecord = rest;
      await this.store.save(recovered);
      this.markPending(name, 'recovering');
      return this.bundle(base, recovered, this.latest(recovered));
    });
  }

  /** PurgeDeletedKey: DELETE /deletedkeys/{name} — gone for good; 403 under purge protection. */
  async purgeDeletedKey(name: string): Promise<void> {
    await this.store.withLock(name, async () => {
      const { state } = await this.stateOf(name);
      if (state === 'deleting') throw kvErrors.beingDeleted(name);
      if (state !== 'deleted') throw kvErrors.deletedKeyNotFound();
      if (this.settings.purgeProtection) throw kvErrors.purgeProtected();
      await this.store.remove(name);
      this.pending.delete(name.toLowerCase());
    });
  }

  /**
   * RotateKey: POST /keys/{name}/rotate — a new version with fresh material of the current version's
   * type and size, its key_ops and tags, and exp from the rotation policy's expiryTime when set.
   */
  async rotateKey(base: string, name: string): Promise<Json> {
    const { record: current } = await this.liveVersion(name, '');
    const latest = this.latest(current);
    const size = this.store.material(latest.version).size;
    const material = await generateMaterial(latest.kty, size);
    const { record, v } = await this.addVersion(name, async (existing) => {
      if (existing === undefined) throw kvErrors.keyNotFound(name);
      const last = this.latest(existing);
      const now = this.nowSeconds();
      const expiry = existing.rotationPolicy?.expiryTime;
      const lifetime = expiry === undefined ? undefined : parseIsoDuration(expiry);
      const version: VersionRecord = {
        version: this.newVersionId(),
        kty: last.kty,
        keyOps: [...last.keyOps],
        enabled: true,
        created: now,
        updated: now,
        ...(lifetime === undefined ? {} : { exp: now + lifetime }),
        ...(last.tags === undefined ? {} : { tags: { ...last.tags } }),
        material,
      };
      return { version, key: loadMaterial(familyOf(last.kty), material) };
    });
    return this.bundle(base, record, v);
  }

  /** GetKeyRotationPolicy: GET /keys/{name}/rotationpolicy — Key Vault's default when none was set. */
  async getKeyRotationPolicy(base: string, name: string): Promise<Json> {
    const record = await this.live(name);
    const id = `${base}/keys/${record.name}/rotationpolicy`;
    const policy = record.rotationPolicy;
    if (policy === undefined) {
      return {
        id,
        lifetimeActions: [{ trigger: { timeBeforeExpiry: 'P30D' }, action: { type: 'Notify' } }],
        attributes: {},
      };
    }
    return renderPolicy(id, policy.lifetimeActions, policy.expiryTime, policy.created, policy.updated);
  }

  /** UpdateKeyRotationPolicy: PUT /keys/{name}/rotationpolicy — replaces the policy. */
  async updateKeyRotationPolicy(base: string, name: string, body: unknown): Promise<Json> {
    const req = parseBody(policySchema, body);
    const actions: LifetimeActionRecord[] = (req.lifetimeActions ?? []).map((a, i) => {
      const type = a.action.type.toLowerCase();
      if (type !== 'rotate' && type !== 'notify') {
        throw kvErrors.badParameter(`lifetimeActions.${i}.action.type must be Rotate or Notify.`);
      }
      const { timeAfterCreate, timeBeforeExpiry } = a.trigger;
      if ((timeAfterCreate === undefined) === (timeBeforeExpiry === undefined)) {
        throw kvErrors.badParameter(
          `lifetimeActions.${i}.trigger needs exactly one of timeAfterCreate and timeBeforeExpiry.`,
        );
      }
      for (const d of [timeAfterCreate, timeBeforeExpiry]) {
        if (d !== undefined && parseIsoDuration(d) === undefined) {
          throw kvErrors.badParameter(`lifetimeActions.${i}.trigger: '${d}' is not an ISO 8601 duration.`);
        }
      }
      if (type === 'notify' && timeBeforeExpiry === undefined) {
        throw kvErrors.badParameter(`lifetimeActions.${i}: a Notify action needs timeBeforeExpiry.`);
      }
      return {
        action: type === 'rotate' ? 'Rotate' : 'Notify',
        ...(timeAfterCreate === undefined ? {} : { timeAfterCreate }),
        ...(timeBeforeExpiry === undefined ? {} : { timeBeforeExpiry }),
      };
    });
    const expiryTime = req.attributes?.expiryTime;
    if (expiryTime !== undefined) {
      const seconds = parseIsoDuration(expiryTime);
      if (seconds === undefined)
        throw kvErrors.badParameter(`attributes.expiryTime '${expiryTime}' is not an ISO 8601 duration.`);
      if (seconds < MIN_EXPIRY_SECONDS)
        throw kvErrors.badParameter('attributes.expiryTime must be at least 28 days.');
    }
    return this.store.withLock(name, async () => {
      const record = await this.live(name);
      const now = this.nowSeconds();
      const created = record.rotationPolicy?.created ?? now;
      const policy = {
        lifetimeActions: actions,
        ...(expiryTime === undefined ? {} : { expiryTime }),
        created,
        updated: now,
      };
      await this.store.save({ ...record, rotationPolicy: policy });
      return renderPolicy(`${base}/keys/${record.name}/rotationpolicy`, actions, expiryTime, created, now);
    });
  }

  /**
   * wrapKey, unwrapKey, encrypt, decrypt: POST /keys/{name}/{version}/{op}. Checks, in order: the key
   * version exists, is enabled, lists the operation in key_ops, and (for encrypt and wrapKey only, as Key
   * Vault documents: decrypt, unwrap and verify stay allowed so data is never locked out) is inside
   * nbf/exp. Then the algorithm runs; see keys.ts.
   */
  async crypto(
    base: string,
    op: CryptoOperation,
    name: string,
    version: string,
    body: unknown,
  ): Promise<Json> {
    const { record, v } = await this.liveVersion(name, version);
    if (!v.enabled) throw kvErrors.keyDisabled(op);
    if (!v.keyOps.includes(op)) throw kvErrors.keyOperationForbidden(op);
    if (op === 'encrypt' || op === 'wrapKey') {
      const now = this.nowSeconds();
      if (v.nbf !== undefined && now < v.nbf) throw kvErrors.keyNotYetValid(op);
      if (v.exp !== undefined && now >= v.exp) throw kvErrors.keyExpired(op);
    }
    const req = parseBody(cryptoSchema, body);
    const decode = (field: 'value' | 'iv' | 'aad' | 'tag'): Buffer | undefined => {
      const text = req[field];
      if (text === undefined) return undefined;
      const bytes = decodeBase64url(text);
      if (bytes === undefined) throw kvErrors.badParameter(`${field} must be base64url.`);
      return bytes;
    };
    const value = decode('value') ?? Buffer.alloc(0);
    const iv = decode('iv');
    const aad = decode('aad');
    const tag = decode('tag');
    const result = runCrypto(op, this.store.material(v.version), {
      alg: req.alg,
      value,
      ...(iv === undefined ? {} : { iv }),
      ...(aad === undefined ? {} : { aad }),
      ...(tag === undefined ? {} : { tag }),
    });
    return {
      kid: `${base}/keys/${record.name}/${v.version}`,
      value: result.value.toString('base64url'),
      ...(result.iv === undefined ? {} : { iv: result.iv.toString('base64url') }),
      ...(result.tag === undefined ? {} : { tag: result.tag.toString('base64url') }),
      ...(result.aad === undefined ? {} : { aad: result.aad.toString('base64url') }),
    };
  }

  private async recordsIn(wanted: 'live' | 'deleted'): Promise<KeyRecord[]> {
    const out: KeyRecord[] = [];
    for (const record of [...this.store.all()]) {
      const { state, record: current } = await this.stateOf(record.name);
      if (state === wanted && current !== undefined) out.push(current);
    }
    return out;
  }
}

/** Maps a requested kty to what this vault stores; oct is only ever HSM-backed (Managed HSM). */
function normaliseKty(kty: string): KeyType {
  switch (kty) {
    case 'RSA':
    case 'RSA-HSM':
    case 'oct-HSM':
      return kty;
    case 'oct':
      return 'oct-HSM';
    case 'EC':
    case 'EC-HSM':
      throw kvErrors.badParameter('EC keys are not supported by the sealbox dev vault.');
    default:
      throw kvErrors.badParameter(`kty '${kty}' is not a valid key type.`);
  }
}

function renderPolicy(
  id: string,
  actions: readonly LifetimeActionRecord[],
  expiryTime: string | undefined,
  created: number,
  updated: number,
): Json {
  return {
    id,
    lifetimeActions: actions.map((a) => ({
      trigger: {
        ...(a.timeAfterCreate === undefined ? {} : { timeAfterCreate: a.timeAfterCreate }),
        ...(a.timeBeforeExpiry === undefined ? {} : { timeBeforeExpiry: a.timeBeforeExpiry }),
      },
      action: { type: a.action },
    })),
    attributes: { ...(expiryTime === undefined ? {} : { expiryTime }), created, updated },
  };
}
