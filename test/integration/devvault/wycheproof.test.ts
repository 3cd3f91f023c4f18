/**
 * Project Wycheproof vectors against the dev vault's unwrap paths, through the real SDK: each vector
 * group's key is imported with KeyClient.importKey (the private key as a JWK), and every test's
 * ciphertext is unwrapped with CryptographyClient.unwrapKey. Valid vectors must give back msg; invalid
 * ones must fail with Key Vault's 400 BadParameter, never a 5xx or a dropped connection.
 *
 * Coverage (all vectors, nothing sampled; the whole file runs in a few seconds):
 *   rsa_oaep_2048_sha1_mgf1sha1   RSA-OAEP       36 vectors
 *   rsa_oaep_2048_sha256_mgf1sha256 RSA-OAEP-256 37 vectors
 *   rsa_oaep_3072_sha256_mgf1sha256 RSA-OAEP-256 37 vectors
 *   rsa_oaep_4096_sha256_mgf1sha256 RSA-OAEP-256 37 vectors
 *   aes_wrap                      A128KW/A192KW/A256KW 165 vectors, one imported key per distinct key
 * Key Vault's RSA-OAEP has no label, so vectors encrypted under a non-empty label must be rejected too.
 * For AES, valid vectors are also wrapped by the vault and must give exactly ct (AES-KW is
 * deterministic); for RSA, valid messages are wrapped by the vault and unwrapped again.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { JsonWebKey } from '@azure/keyvault-keys';
import { VECTORS_DIR } from '../../helpers/paths';
import { assertNoPrivateMaterial, rejectsKv, startTestVault, type TestVault, TOKENS } from './harness';
import { keyVaultSwagger } from './swagger';

type Result = 'valid' | 'invalid' | 'acceptable';

interface VectorTest {
  readonly tcId: number;
  readonly comment: string;
  readonly flags: readonly string[];
  readonly result: Result;
  readonly msg: string;
  readonly ct: string;
}

interface OaepTest extends VectorTest {
  readonly label: string;
}

interface OaepGroup {
  readonly sha: string;
  readonly mgfSha: string;
  readonly privateKeyJwk: Record<string, string>;
  readonly tests: readonly OaepTest[];
}

interface WrapTest extends VectorTest {
  readonly key: string;
}

interface WrapGroup {
  readonly keySize: number;
  readonly tests: readonly WrapTest[];
}

/** Reads one vector file and checks it is whole and is the algorithm expected. */
function loadGroups<G extends { tests: readonly unknown[] }>(file: string, algorithm: string): readonly G[] {
  const parsed = JSON.parse(readFileSync(join(VECTORS_DIR, 'wycheproof', file), 'utf8')) as {
    algorithm: string;
    numberOfTests: number;
    testGroups: G[];
  };
  assert.equal(parsed.algorithm, algorithm, `${file}: unexpected algorithm`);
  const present = parsed.testGroups.reduce((n, g) => n + g.tests.length, 0);
  assert.equal(present, parsed.numberOfTests, `${file}: numberOfTests does not match the tests present`);
  return parsed.testGroups;
}

const hex = (s: string): Buffer => Buffer.from(s, 'hex');

function label(tc: VectorTest): string {
  return `tcId ${tc.tcId} (${tc.result})${tc.comment === '' ? '' : ` ${tc.comment}`} [${tc.flags.join(', ')}]`;
}

let tv: TestVault;

before(async () => {
  tv = await startTestVault();
});

after(async () => {
  await tv?.close();
});

const OAEP_FILES: ReadonlyArray<{ file: string; alg: 'RSA-OAEP' | 'RSA-OAEP-256'; sha: string }> = [
  { file: 'rsa_oaep_2048_sha1_mgf1sha1_test.json', alg: 'RSA-OAEP', sha: 'SHA-1' },
  { file: 'rsa_oaep_2048_sha256_mgf1sha256_test.json', alg: 'RSA-OAEP-256', sha: 'SHA-256' },
  { file: 'rsa_oaep_3072_sha256_mgf1sha256_test.json', alg: 'RSA-OAEP-256', sha: 'SHA-256' },
  { file: 'rsa_oaep_4096_sha256_mgf1sha256_test.json', alg: 'RSA-OAEP-256', sha: 'SHA-256' },
];

for (const { file, alg, sha } of OAEP_FILES) {
  test(`${file}: unwrapKey ${alg}`, async (t) => {
    const groups = loadGroups<OaepGroup>(file, 'RSAES-OAEP');
    let ran = 0;
    for (const [g, group] of groups.entries()) {
      // The JOSE algorithm fixes both hashes; a group with other parameters would be a copying mistake.
      assert.equal(group.sha, sha);
      assert.equal(group.mgfSha, sha);
      const jwk: Record<string, unknown> = { kty: 'RSA', keyOps: ['wrapKey', 'unwrapKey'] };
      for (const m of ['n', 'e', 'd', 'p', 'q', 'dp', 'dq', 'qi']) {
        jwk[m] = Buffer.from(group.privateKeyJwk[m] ?? '', 'base64url');
      }
      const name = `wp-${file.replace(/_test\.json$/, '').replace(/_/g, '-')}-${g}`;
      const key = await tv.keys().importKey(name, jwk as JsonWebKey);
      const crypto = tv.crypto(key.id ?? '', TOKENS.wrapper);
      for (const tc of group.tests) {
        ran++;
        await t.test(label(tc), async () => {
          const ct = hex(tc.ct);
          if (tc.result === 'valid' && tc.label === '') {
            const out = await crypto.unwrapKey(alg, ct);
            assert.equal(Buffer.from(out.result).toString('hex'), tc.msg);
            const rewrapped = await crypto.wrapKey(alg, hex(tc.msg));
            assert.equal(
              Buffer.from((await crypto.unwrapKey(alg, rewrapped.result)).result).toString('hex'),
              tc.msg,
            );
          } else {
            // Invalid, or valid only under a label Key Vault cannot pass: must be refused, cleanly.
            await rejectsKv(crypto.unwrapKey(alg, ct), 400, 'BadParameter');
          }
        });
      }
    }
    assert.ok(ran >= 36, `${file}: ran ${ran} vectors`);
  });
}

test('aes_wrap_test.json: unwrapKey and wrapKey A128KW/A192KW/A256KW', async (t) => {
  const groups = loadGroups<WrapGroup>('aes_wrap_test.json', 'AES-WRAP');
  const imported = new Map<string, string>();
  const counts = { valid: 0, invalid: 0, acceptable: 0 };
  for (const group of groups) {
    const alg = `A${group.keySize}KW` as 'A128KW' | 'A192KW' | 'A256KW';
    for (const tc of group.tests) {
      counts[tc.result]++;
      let id = imported.get(tc.key);
      if (id === undefined) {
        const key = await tv.keys().importKey(`wp-aes-${imported.size}`, {
          kty: 'oct-HSM',
          k: hex(tc.key),
          keyOps: ['wrapKey', 'unwrapKey'],
        });
        id = key.id ?? '';
        imported.set(tc.key, id);
      }
      const crypto = tv.crypto(id, TOKENS.wrapper);
      await t.test(`${alg} ${label(tc)}`, async () => {
        const ct = hex(tc.ct);
        if (tc.result === 'valid') {
          assert.equal(Buffer.from((await crypto.unwrapKey(alg, ct)).result).toString('hex'), tc.msg);
          assert.equal(Buffer.from((await crypto.wrapKey(alg, hex(tc.msg))).result).toString('hex'), tc.ct);
        } else if (tc.result === 'invalid') {
          await rejectsKv(crypto.unwrapKey(alg, ct), 400, 'BadParameter');
        } else {
          // "acceptable" (an 8-byte key, below RFC 3394's two blocks): either answer, never a crash.
          try {
            assert.equal(Buffer.from((await crypto.unwrapKey(alg, ct)).result).toString('hex'), tc.msg);
          } catch (err) {
            assert.equal((err as { statusCode?: number }).statusCode, 400);
          }
        }
      });
    }
  }
  assert.deepEqual(counts, { valid: 36, invalid: 126, acceptable: 3 });
});

test('every response validates against the swagger and carries no private key material', () => {
  const swagger = keyVaultSwagger(join(VECTORS_DIR, 'keyvault'));
  assert.deepEqual(
    tv.records.flatMap((r) => swagger.validate(r.method, r.path, r.status, r.body, r.operationId)),
    [],
  );
  assertNoPrivateMaterial(tv.records);
  assert.equal(tv.records.filter((r) => r.status >= 500).length, 0, 'no vector made the vault fail');
});
