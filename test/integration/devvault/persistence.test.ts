/**
 * Persistence across restarts and refusal of a corrupt store, through the real SDK: a vault is filled,
 * closed and started again on the same data directory (on a new port); every key, version, soft-deleted
 * key and rotation policy is still there, DEKs wrapped before the restart still unwrap, the CA is reused,
 * and private files are 0600. A store file damaged on disk stops the next start with an error that names
 * the file and the problem, and the file is left byte for byte as it was.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { DevVaultStoreError, startDevVault } from '../../../src/devvault';
import { VECTORS_DIR } from '../../helpers/paths';
import { assertNoPrivateMaterial, IDENTITIES, keyIdOf, startTestVault, TOKENS } from './harness';
import { keyVaultSwagger } from './swagger';

const DEK = randomBytes(32);

test('restart on the same data directory keeps every key, version, deletion and policy', async (t) => {
  const first = await startTestVault({ softDeleteRetentionDays: 30 });
  const client = first.keys();
  const rsa1 = await client.createRsaKey('kek', { keySize: 2048 });
  const rsa2 = await client.rotateKey('kek');
  const oct = await client.createKey('aes', 'oct-HSM', { keySize: 256, tags: { team: 'a' } });
  await client.createKey('gone', 'oct-HSM');
  await (await client.beginDeleteKey('gone', { intervalInMs: 20 })).pollUntilDone();
  await client.updateKeyRotationPolicy('kek', {
    lifetimeActions: [{ action: 'Rotate', timeAfterCreate: 'P30D' }],
    expiresIn: 'P90D',
  });
  await client.updateKeyProperties('aes', oct.properties.version ?? '', { keyOps: ['wrapKey', 'unwrapKey'] });
  const wrapped = {
    rsa1: (await first.crypto(rsa1.id ?? '', TOKENS.wrapper).wrapKey('RSA-OAEP-256', DEK)).result,
    rsa2: (await first.crypto(rsa2.id ?? '', TOKENS.wrapper).wrapKey('RSA-OAEP-256', DEK)).result,
    oct: (await first.crypto(oct.id ?? '', TOKENS.wrapper).wrapKey('A256KW', DEK)).result,
  };
  const caPem = first.vault.caPem;
  const oldPort = first.vault.port;
  await first.close(true);

  const second = await startTestVault({ softDeleteRetentionDays: 30 }, first.dir);
  try {
    const again = second.keys();
    await t.test('the CA is reused, so clients keep trusting the vault', () => {
      assert.equal(second.vault.caPem, caPem);
      assert.notEqual(second.vault.port, oldPort);
    });
    await t.test('keys, versions and attributes are back', async () => {
      const names = [];
      for await (const p of again.listPropertiesOfKeys()) names.push(p.name);
      assert.deepEqual(names.sort(), ['aes', 'kek']);
      const versions = [];
      for await (const v of again.listPropertiesOfKeyVersions('kek')) versions.push(v.version);
      // Key Vault promises no order of versions (nor does the dev vault): compare as sets.
      assert.deepEqual(versions.sort(), [rsa1.properties.version, rsa2.properties.version].sort());
      const aes = await again.getKey('aes');
      assert.deepEqual(aes.keyOperations, ['wrapKey', 'unwrapKey']);
      assert.deepEqual(aes.properties.tags, { team: 'a' });
      assert.equal((await again.getKey('kek')).properties.version, rsa2.properties.version);
    });
    await t.test('the soft-deleted key and the rotation policy are back', async () => {
      const gone = await again.getDeletedKey('gone');
      assert.equal(gone.properties.recoverableDays, 30);
      const policy = await again.getKeyRotationPolicy('kek');
      assert.equal(policy.expiresIn, 'P90D');
    });
    await t.test('every version still unwraps what it wrapped before the restart', async () => {
      const cases = [
        {
          id: keyIdOf(second.vault, 'kek', rsa1.properties.version ?? ''),
          alg: 'RSA-OAEP-256',
          wrapped: wrapped.rsa1,
        },
        {
          id: keyIdOf(second.vault, 'kek', rsa2.properties.version ?? ''),
          alg: 'RSA-OAEP-256',
          wrapped: wrapped.rsa2,
        },
        {
          id: keyIdOf(second.vault, 'aes', oct.properties.version ?? ''),
          alg: 'A256KW',
          wrapped: wrapped.oct,
        },
      ] as const;
      for (const c of cases) {
        const out = await second.crypto(c.id, TOKENS.wrapper).unwrapKey(c.alg, c.wrapped);
        assert.deepEqual(Buffer.from(out.result), DEK, c.id);
      }
    });
    await t.test('private files are 0600 and directories 0700', () => {
      const mode = (p: string) => statSync(join(second.dir, p)).mode & 0o777;
      for (const f of readdirSync(join(second.dir, 'keys'))) assert.equal(mode(join('keys', f)), 0o600, f);
      for (const f of ['tls/ca-key.pem', 'tls/server-key.pem', 'admin-token'])
        assert.equal(mode(f), 0o600, f);
      for (const d of ['.', 'keys', 'tls']) assert.equal(mode(d), 0o700, d);
      assert.equal(mode('tls/ca.pem'), 0o644);
    });
    await t.test('responses before and after the restart validate against the swagger', () => {
      const swagger = keyVaultSwagger(join(VECTORS_DIR, 'keyvault'));
      const all = [...first.records, ...second.records];
      assert.deepEqual(
        all.flatMap((r) => swagger.validate(r.method, r.path, r.status, r.body, r.operationId)),
        [],
      );
      assertNoPrivateMaterial(all);
    });
  } finally {
    await second.close();
  }
});

test('a corrupt store is reported naming the file and the problem, and is not touched', async (t) => {
  const seeded = await startTestVault();
  await seeded.keys().createKey('victim', 'oct-HSM');
  await seeded.keys().createKey('bystander', 'oct-HSM');
  await seeded.close(true);
  const file = join(seeded.dir, 'keys', 'victim.json');
  const good = readFileSync(file, 'utf8');
  const record = JSON.parse(good) as { key: { versions: Array<Record<string, unknown>> } };

  const cases: ReadonlyArray<{ name: string; contents: string; problem: RegExp }> = [
    { name: 'truncated JSON', contents: good.slice(0, good.length / 2), problem: /not valid JSON/ },
    { name: 'empty file', contents: '', problem: /not valid JSON/ },
    {
      name: 'a version id that is not 32 hex digits',
      contents: JSON.stringify({
        ...record,
        key: { ...record.key, versions: [{ ...record.key.versions[0], version: 'xyz' }] },
      }),
      problem: /key\.versions\.0\.version: must be 32 lowercase hex digits/,
    },
    {
      name: 'key material of the wrong size',
      contents: JSON.stringify({
        ...record,
        key: {
          ...record.key,
          versions: [{ ...record.key.versions[0], material: { k: randomBytes(20).toString('base64url') } }],
        },
      }),
      problem: /key\.versions\.0\.material is not a usable oct-HSM key/,
    },
  ];
  try {
    for (const c of cases) {
      await t.test(c.name, async () => {
        writeFileSync(file, c.contents);
        await assert.rejects(startDevVault({ dataDir: seeded.dir, identities: IDENTITIES }), (err: Error) => {
          assert.ok(err instanceof DevVaultStoreError, `${err.name}: ${err.message}`);
          assert.ok(err.message.includes(file), 'the message names the file');
          assert.match(err.message, c.problem);
          return true;
        });
        assert.equal(readFileSync(file, 'utf8'), c.contents, 'the corrupt file was left as it was');
      });
    }
    await t.test('once the file is repaired the vault starts and serves both keys', async () => {
      writeFileSync(file, good);
      const repaired = await startTestVault({}, seeded.dir);
      try {
        assert.equal((await repaired.keys().getKey('victim')).name, 'victim');
        assert.equal((await repaired.keys().getKey('bystander')).name, 'bystander');
      } finally {
        await repaired.close();
      }
    });
  } finally {
    await seeded.close();
  }
});

test('a temporary file left by an interrupted write is removed and ignored', async () => {
  const seeded = await startTestVault();
  await seeded.keys().createKey('kept', 'oct-HSM');
  await seeded.close(true);
  const stale = join(seeded.dir, 'keys', '.kept.json.tmp-0123456789ab');
  writeFileSync(stale, '{"half": ');
  const again = await startTestVault({}, seeded.dir);
  try {
    assert.equal((await again.keys().getKey('kept')).name, 'kept');
    assert.deepEqual(readdirSync(join(seeded.dir, 'keys')), ['kept.json']);
  } finally {
    await again.close();
  }
});
