/**
 * The dev vault's key store (src/devvault/store.ts) and crash-safe writes (src/devvault/fsutil.ts):
 * every kind of damage to a key file is reported naming the file and the field, a valid file round-trips,
 * writes leave 0600 files and no temporaries, stale temporaries are handed back, and per-key locks
 * serialise read-modify-write sequences.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { atomicWriteFile } from '../../../src/devvault/fsutil';
import { generateMaterial } from '../../../src/devvault/keys';
import {
  DevVaultStoreError,
  formatKeyFile,
  type KeyRecord,
  KeyStore,
  keyFileName,
  parseKeyFile,
} from '../../../src/devvault/store';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-dv-store-'));
  dirs.push(dir);
  return dir;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const version = () => randomBytes(16).toString('hex');

async function sampleRecord(): Promise<KeyRecord> {
  return {
    name: 'Sample-Key',
    versions: [
      {
        version: version(),
        kty: 'RSA',
        keyOps: ['wrapKey', 'unwrapKey'],
        enabled: true,
        created: 1_700_000_000,
        updated: 1_700_000_100,
        tags: { a: 'b' },
        material: await generateMaterial('RSA', 2048),
      },
      {
        version: version(),
        kty: 'oct-HSM',
        keyOps: ['wrapKey'],
        enabled: false,
        nbf: 1_700_000_000,
        exp: 1_800_000_000,
        created: 1_700_000_200,
        updated: 1_700_000_200,
        material: await generateMaterial('oct-HSM', 256),
      },
    ],
    deleted: { deletedDate: 1_700_001_000, scheduledPurgeDate: 1_707_777_000 },
    rotationPolicy: {
      lifetimeActions: [{ action: 'Rotate', timeAfterCreate: 'P30D' }],
      expiryTime: 'P90D',
      created: 1,
      updated: 2,
    },
  };
}

test('a valid file round-trips through formatKeyFile and parseKeyFile', async () => {
  const record = await sampleRecord();
  const { record: parsed, loaded } = parseKeyFile(keyFileName(record.name), formatKeyFile(record));
  assert.deepEqual(parsed, record);
  assert.equal(keyFileName(record.name), 'sample-key.json');
  assert.equal(loaded.size, 2);
});

test('every kind of damage is reported with the file and the field', async (t) => {
  const record = await sampleRecord();
  const file = keyFileName(record.name);
  const text = formatKeyFile(record);
  const parsed = JSON.parse(text);
  const [v0, v1] = parsed.key.versions;
  const withKey = (key: unknown) => JSON.stringify({ ...parsed, key });
  const withVersion0 = (patch: Record<string, unknown>) =>
    withKey({ ...parsed.key, versions: [{ ...v0, ...patch }, v1] });
  const otherRsa = await generateMaterial('RSA', 2048);
  const cases: ReadonlyArray<{ name: string; contents: string; problem: RegExp; fileName?: string }> = [
    { name: 'truncated', contents: text.slice(0, 100), problem: /not valid JSON/ },
    { name: 'not an object', contents: '[]', problem: /\(root\)/ },
    {
      name: 'wrong format marker',
      contents: JSON.stringify({ ...parsed, format: 'other' }),
      problem: /^.*format: /,
    },
    {
      name: 'newer format version',
      contents: JSON.stringify({ ...parsed, formatVersion: 2 }),
      problem: /formatVersion/,
    },
    {
      name: 'unknown field',
      contents: JSON.stringify({ ...parsed, extra: 1 }),
      problem: /extra|Unrecognized/i,
    },
    {
      name: 'invalid name',
      contents: withKey({ ...parsed.key, name: 'a_b' }),
      problem: /key\.name: must be 1-127/,
    },
    {
      name: 'name of another file',
      contents: text,
      fileName: 'other.json',
      problem: /belongs in sample-key\.json/,
    },
    {
      name: 'no versions',
      contents: withKey({ ...parsed.key, versions: [] }),
      problem: /key\.versions: a key needs at least one version/,
    },
    {
      name: 'bad version id',
      contents: withVersion0({ version: 'ABC' }),
      problem: /key\.versions\.0\.version: must be 32 lowercase hex/,
    },
    {
      name: 'duplicate version',
      contents: withKey({ ...parsed.key, versions: [v0, { ...v1, version: v0.version }] }),
      problem: /appears twice/,
    },
    { name: 'unknown kty', contents: withVersion0({ kty: 'EC' }), problem: /key\.versions\.0\.kty/ },
    {
      name: 'unknown key op',
      contents: withVersion0({ keyOps: ['fly'] }),
      problem: /key\.versions\.0\.keyOps\.0/,
    },
    { name: 'negative time', contents: withVersion0({ created: -1 }), problem: /key\.versions\.0\.created/ },
    {
      name: 'updated before created',
      contents: withVersion0({ updated: 1 }),
      problem: /updated is before created/,
    },
    {
      name: 'material not base64url',
      contents: withVersion0({ material: { ...v0.material, n: 'a+b' } }),
      problem: /key\.versions\.0\.material/,
    },
    {
      name: 'RSA members of two keys',
      contents: withVersion0({ material: { ...v0.material, d: 'n' in otherRsa ? otherRsa.d : '' } }),
      problem: /do not belong to one key/,
    },
    {
      name: 'symmetric material on an RSA version',
      contents: withVersion0({ material: v1.material }),
      problem: /not a usable RSA key/,
    },
    {
      name: 'AES key of 20 bytes',
      contents: withKey({
        ...parsed.key,
        versions: [v0, { ...v1, material: { k: randomBytes(20).toString('base64url') } }],
      }),
      problem: /key\.versions\.1\.material is not a usable oct-HSM key/,
    },
    {
      name: 'bad deletion record',
      contents: withKey({ ...parsed.key, deleted: { deletedDate: 'yesterday' } }),
      problem: /key\.deleted/,
    },
    {
      name: 'bad rotation action',
      contents: withKey({
        ...parsed.key,
        rotationPolicy: { ...parsed.key.rotationPolicy, lifetimeActions: [{ action: 'rotate' }] },
      }),
      problem: /key\.rotationPolicy\.lifetimeActions\.0\.action/,
    },
  ];
  for (const c of cases) {
    await t.test(c.name, () => {
      const name = c.fileName ?? file;
      assert.throws(
        () => parseKeyFile(name, c.contents),
        (err: unknown) => {
          assert.ok(err instanceof DevVaultStoreError, String(err));
          assert.equal(err.file, name);
          assert.match(err.problem, c.problem);
          assert.match(err.message, /left untouched/);
          return true;
        },
      );
    });
  }
});

test('KeyStore: save writes 0600 files atomically; open reloads them; remove deletes', async () => {
  const dir = tempDir();
  const store = await KeyStore.open(dir);
  const record = await sampleRecord();
  await store.save(record);
  const file = join(dir, 'keys', 'sample-key.json');
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.equal(statSync(join(dir, 'keys')).mode & 0o777, 0o700);
  assert.deepEqual(readdirSync(join(dir, 'keys')), ['sample-key.json'], 'no temporary file is left');
  const reopened = await KeyStore.open(dir);
  assert.deepEqual(reopened.get('SAMPLE-KEY'), record, 'lookups are case-insensitive');
  assert.equal(reopened.material(record.versions[0]?.version ?? '').family, 'RSA');
  await reopened.remove('sample-key');
  assert.equal(reopened.get('sample-key'), undefined);
  assert.deepEqual(readdirSync(join(dir, 'keys')), []);
});

test('KeyStore.open hands stale temporaries to the caller and refuses stray files', async () => {
  const dir = tempDir();
  const store = await KeyStore.open(dir);
  await store.save(await sampleRecord());
  const stale = join(dir, 'keys', '.sample-key.json.tmp-aaaaaaaaaaaa');
  writeFileSync(stale, 'partial');
  const seen: string[] = [];
  await KeyStore.open(dir, (f) => {
    seen.push(f);
  });
  assert.deepEqual(seen, [stale]);
  writeFileSync(join(dir, 'keys', 'notes.txt'), 'hello');
  await assert.rejects(KeyStore.open(dir), (err: unknown) => {
    assert.ok(err instanceof DevVaultStoreError);
    assert.match(err.message, /notes\.txt: unexpected file/);
    return true;
  });
});

test('atomicWriteFile replaces contents and applies the mode', async () => {
  const dir = tempDir();
  const file = join(dir, 'f.json');
  await atomicWriteFile(file, 'one', 0o600);
  await atomicWriteFile(file, 'two', 0o600);
  assert.equal(readFileSync(file, 'utf8'), 'two');
  assert.equal(statSync(file).mode & 0o777, 0o600);
  assert.deepEqual(readdirSync(dir), ['f.json']);
});

test('withLock runs sequences on the same name one at a time, other names in parallel', async () => {
  const store = await KeyStore.open(tempDir());
  const log: string[] = [];
  const step = (name: string, label: string, ms: number) =>
    store.withLock(name, async () => {
      log.push(`${label}:start`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`${label}:end`);
    });
  await Promise.all([step('k', 'a', 30), step('K', 'b', 1), step('other', 'c', 1)]);
  const a = log.indexOf('a:end');
  assert.ok(a < log.indexOf('b:start'), 'b waited for a (same name, any case)');
  assert.ok(log.indexOf('c:end') < a, 'c ran while a held its own lock');
});
