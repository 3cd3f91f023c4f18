/**
 * Project Wycheproof vectors (test/vectors/wycheproof, see its README) against sealbox's AES-256-GCM,
 * HKDF-SHA256 and AES key wrap primitives. One subtest per vector, named by its tcId, so a failure says
 * which vector broke; each parent test also checks that it really ran vectors of every kind it expects.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { gcmOpen, gcmOpenInto, gcmSeal } from '../../../src/crypto/aead';
import { dekKeyObject, hkdfSha256 } from '../../../src/crypto/kdf';
import { aesKeyUnwrap, aesKeyWrap } from '../../../src/crypto/keywrap';
import { VECTORS_DIR } from '../../helpers/paths';

type Result = 'valid' | 'invalid' | 'acceptable';

interface VectorTest {
  readonly tcId: number;
  readonly comment: string;
  readonly flags: readonly string[];
  readonly result: Result;
}

interface VectorGroup<T extends VectorTest> {
  readonly tests: readonly T[];
}

interface VectorFile<G> {
  readonly algorithm: string;
  readonly numberOfTests: number;
  readonly testGroups: readonly G[];
}

interface AeadTest extends VectorTest {
  readonly key: string;
  readonly iv: string;
  readonly aad: string;
  readonly msg: string;
  readonly ct: string;
  readonly tag: string;
}

interface AeadGroup extends VectorGroup<AeadTest> {
  readonly keySize: number;
  readonly ivSize: number;
  readonly tagSize: number;
}

interface HkdfTest extends VectorTest {
  readonly ikm: string;
  readonly salt: string;
  readonly info: string;
  readonly size: number;
  readonly okm: string;
}

interface KeywrapTest extends VectorTest {
  readonly key: string;
  readonly msg: string;
  readonly ct: string;
}

/** Reads one vector file from the source tree and checks it is whole and is the algorithm expected. */
function loadGroups<G extends VectorGroup<VectorTest>>(file: string, algorithm: string): readonly G[] {
  const parsed = JSON.parse(readFileSync(join(VECTORS_DIR, 'wycheproof', file), 'utf8')) as VectorFile<G>;
  assert.equal(parsed.algorithm, algorithm, `${file}: unexpected algorithm`);
  // A truncated or hand-edited copy would quietly test less than it claims to.
  const present = parsed.testGroups.reduce((n, group) => n + group.tests.length, 0);
  assert.equal(present, parsed.numberOfTests, `${file}: numberOfTests does not match the tests present`);
  return parsed.testGroups;
}

const hex = (s: string): Buffer => Buffer.from(s, 'hex');

/** Names a vector for subtest titles and assertion messages. */
function label(tc: VectorTest): string {
  const comment = tc.comment === '' ? '' : ` ${tc.comment}`;
  return `tcId ${tc.tcId} (${tc.result})${comment} [${tc.flags.join(', ')}]`;
}

/** Counts checked vectors per outcome, for t.diagnostic and the non-vacuity assertions. */
class Tally {
  private readonly counts = new Map<string, number>();

  add(outcome: string): void {
    this.counts.set(outcome, this.get(outcome) + 1);
  }

  get(outcome: string): number {
    return this.counts.get(outcome) ?? 0;
  }

  toString(): string {
    return [...this.counts].map(([outcome, n]) => `${outcome}: ${n}`).join(', ');
  }
}

/** The only AES-GCM parameters sealbox implements (src/crypto/aead.ts). */
const GCM_KEY_BITS = 256;
const GCM_IV_BITS = 96;
const GCM_TAG_BITS = 128;

/** gcmOpenInto writes at this offset, with this many guard bytes after the region, all pre-filled. */
const GUARD_BYTES = 7;
/** Non-zero, so an all-zero region after a failed open proves it was wiped, not merely left alone. */
const FILL = 0xa5;

/** Asserts gcmOpenInto wrote nothing outside [GUARD_BYTES, GUARD_BYTES + length). */
function assertGuardsIntact(out: Buffer, length: number, id: string): void {
  const filled = (n: number): string => Buffer.alloc(n, FILL).toString('hex');
  assert.equal(
    out.subarray(0, GUARD_BYTES).toString('hex'),
    filled(GUARD_BYTES),
    `${id}: wrote before offset`,
  );
  assert.equal(
    out.subarray(GUARD_BYTES + length).toString('hex'),
    filled(GUARD_BYTES),
    `${id}: wrote past the plaintext`,
  );
}

test('Wycheproof aes_gcm_test.json: gcmSeal, gcmOpen, gcmOpenInto', async (t) => {
  const tally = new Tally();
  for (const group of loadGroups<AeadGroup>('aes_gcm_test.json', 'AES-GCM')) {
    const sizes = `${group.keySize}-bit key, ${group.ivSize}-bit nonce, ${group.tagSize}-bit tag`;
    for (const tc of group.tests) {
      const id = `${label(tc)} ${sizes}`;
      await t.test(id, () => {
        const key = hex(tc.key);
        const iv = hex(tc.iv);
        const aad = hex(tc.aad);
        const msg = hex(tc.msg);
        const ct = hex(tc.ct);
        const sealed = Buffer.concat([ct, hex(tc.tag)]);
        const out = Buffer.alloc(GUARD_BYTES + ct.length + GUARD_BYTES, FILL);

        // Parameters sealbox does not implement must be refused, never quietly used: whatever the
        // vector's result, a key or nonce of another size must throw RangeError from every entry point.
        if (group.keySize !== GCM_KEY_BITS || group.ivSize !== GCM_IV_BITS) {
          const refused = (what: string) => `${id}: ${what} accepted ${sizes} instead of throwing RangeError`;
          assert.throws(() => gcmSeal(key, iv, aad, msg), RangeError, refused('gcmSeal'));
          assert.throws(() => gcmOpen(key, iv, aad, sealed), RangeError, refused('gcmOpen'));
          assert.throws(
            () => gcmOpenInto(key, iv, aad, sealed, out, GUARD_BYTES),
            RangeError,
            refused('gcmOpenInto'),
          );
          tally.add(group.keySize !== GCM_KEY_BITS ? 'refused (key size)' : 'refused (nonce size)');
          return;
        }
        // The tag length is fixed at 16 bytes and not a parameter, so a shorter tag cannot be refused with
        // a RangeError; it must simply never verify. (aes_gcm_test.json at dac1dd4 has only 128-bit tags.)
        if (group.tagSize !== GCM_TAG_BITS) {
          assert.equal(gcmOpen(key, iv, aad, sealed), undefined, `${id}: gcmOpen accepted a ${sizes}`);
          tally.add('refused (tag size)');
          return;
        }

        switch (tc.result) {
          case 'valid': {
            assert.equal(gcmSeal(key, iv, aad, msg).toString('hex'), tc.ct + tc.tag, `${id}: gcmSeal`);
            const opened = gcmOpen(key, iv, aad, sealed);
            assert.ok(opened !== undefined, `${id}: gcmOpen rejected a valid ciphertext`);
            assert.equal(opened.toString('hex'), tc.msg, `${id}: gcmOpen`);
            const end = gcmOpenInto(key, iv, aad, sealed, out, GUARD_BYTES);
            assert.equal(end, GUARD_BYTES + msg.length, `${id}: gcmOpenInto end offset`);
            assert.equal(out.subarray(GUARD_BYTES, end).toString('hex'), tc.msg, `${id}: gcmOpenInto`);
            assertGuardsIntact(out, ct.length, id);
            tally.add('valid');
            return;
          }
          case 'invalid': {
            assert.equal(
              gcmOpen(key, iv, aad, sealed),
              undefined,
              `${id}: gcmOpen accepted an invalid ciphertext`,
            );
            assert.equal(gcmOpenInto(key, iv, aad, sealed, out, GUARD_BYTES), -1, `${id}: gcmOpenInto`);
            // Postcondition of gcmOpenInto: no unverified plaintext survives in the caller's buffer.
            assert.equal(
              out.subarray(GUARD_BYTES, GUARD_BYTES + ct.length).toString('hex'),
              '00'.repeat(ct.length),
              `${id}: gcmOpenInto left unverified bytes in its output`,
            );
            assertGuardsIntact(out, ct.length, id);
            assert.notEqual(
              gcmSeal(key, iv, aad, msg).toString('hex'),
              tc.ct + tc.tag,
              `${id}: gcmSeal produced the invalid ciphertext`,
            );
            tally.add('invalid');
            if (ct.length > 0) tally.add('invalid with wipe checked');
            return;
          }
          case 'acceptable':
            // None in this file; a future one needs a decision, not a silent pass.
            assert.fail(`${id}: unexpected "acceptable" AES-GCM vector; decide how sealbox should treat it`);
        }
      });
    }
  }
  t.diagnostic(`AES-GCM vectors checked: ${tally}`);
  assert.ok(tally.get('valid') > 0, 'no valid AES-256-GCM vectors were checked');
  assert.ok(tally.get('invalid') > 0, 'no invalid AES-256-GCM vectors were checked');
  assert.ok(tally.get('invalid with wipe checked') > 0, 'gcmOpenInto wiping was never checked');
  assert.ok(tally.get('refused (key size)') > 0, 'no vectors with other key sizes were checked');
  assert.ok(tally.get('refused (nonce size)') > 0, 'no vectors with other nonce sizes were checked');
});

test('Wycheproof hkdf_sha256_test.json: hkdfSha256', async (t) => {
  const tally = new Tally();
  for (const group of loadGroups<VectorGroup<HkdfTest>>('hkdf_sha256_test.json', 'HKDF-SHA-256')) {
    for (const tc of group.tests) {
      const id = label(tc);
      await t.test(id, () => {
        const derive = () => hkdfSha256(hex(tc.ikm), hex(tc.salt), hex(tc.info), tc.size);
        // The cache derives through a KeyObject made once per DEK (kdf.ts DekInput): same bytes.
        const viaKeyObject = () => hkdfSha256(dekKeyObject(hex(tc.ikm)), hex(tc.salt), hex(tc.info), tc.size);
        switch (tc.result) {
          case 'valid':
            assert.equal(derive().toString('hex'), tc.okm, `${id}: okm`);
            assert.equal(viaKeyObject().toString('hex'), tc.okm, `${id}: okm via a KeyObject`);
            break;
          case 'invalid':
            assert.throws(derive, Error, `${id}: derived ${tc.size} bytes instead of throwing`);
            assert.throws(viaKeyObject, Error, `${id}: derived ${tc.size} bytes via a KeyObject`);
            break;
          case 'acceptable':
            assert.fail(`${id}: unexpected "acceptable" HKDF vector; decide how sealbox should treat it`);
        }
        tally.add(tc.result);
      });
    }
  }
  t.diagnostic(`HKDF-SHA256 vectors checked: ${tally}`);
  assert.ok(tally.get('valid') > 0, 'no valid HKDF vectors were checked');
  assert.ok(tally.get('invalid') > 0, 'no invalid HKDF vectors were checked');
});

/** RFC 3394 wraps n ≥ 2 64-bit blocks; aesKeyWrap refuses anything else with RangeError. */
const isWrappable = (keyData: Buffer): boolean => keyData.length >= 16 && keyData.length % 8 === 0;

test('Wycheproof aes_wrap_test.json: aesKeyWrap, aesKeyUnwrap', async (t) => {
  const tally = new Tally();
  for (const group of loadGroups<VectorGroup<KeywrapTest>>('aes_wrap_test.json', 'AES-WRAP')) {
    for (const tc of group.tests) {
      const id = label(tc);
      await t.test(id, () => {
        const kek = hex(tc.key);
        const msg = hex(tc.msg);
        const ct = hex(tc.ct);
        switch (tc.result) {
          case 'valid': {
            assert.equal(aesKeyWrap(kek, msg).toString('hex'), tc.ct, `${id}: aesKeyWrap`);
            const unwrapped = aesKeyUnwrap(kek, ct);
            assert.ok(unwrapped !== undefined, `${id}: aesKeyUnwrap rejected a valid wrapping`);
            assert.equal(unwrapped.toString('hex'), tc.msg, `${id}: aesKeyUnwrap`);
            tally.add('valid');
            return;
          }
          case 'invalid': {
            assert.equal(
              aesKeyUnwrap(kek, ct),
              undefined,
              `${id}: aesKeyUnwrap accepted an invalid wrapping`,
            );
            // msg is a placeholder (often empty) when the vector is about a malformed ct; a msg of a
            // length RFC 3394 cannot wrap must be refused, and a wrappable one must not give this ct.
            if (isWrappable(msg)) {
              assert.notEqual(
                aesKeyWrap(kek, msg).toString('hex'),
                tc.ct,
                `${id}: aesKeyWrap gave the invalid ct`,
              );
            } else {
              assert.throws(
                () => aesKeyWrap(kek, msg),
                RangeError,
                `${id}: aesKeyWrap wrapped ${msg.length} bytes`,
              );
            }
            tally.add('invalid');
            return;
          }
          case 'acceptable': {
            // The acceptable vectors wrap an 8-byte key: RFC 3394 §2 wraps it as one AES block, NIST SP
            // 800-38F does not define it. sealbox only wraps 32-byte DEKs, so either outcome is fine, but
            // it must be a clean one: wrap either refuses with RangeError or returns exactly ct, and unwrap
            // either returns undefined or returns exactly msg. Anything else (another error, a wrong
            // answer) fails the test.
            let wrapped: Buffer | undefined;
            try {
              wrapped = aesKeyWrap(kek, msg);
            } catch (err) {
              assert.ok(err instanceof RangeError, `${id}: aesKeyWrap threw ${String(err)}, not RangeError`);
            }
            if (wrapped !== undefined) assert.equal(wrapped.toString('hex'), tc.ct, `${id}: aesKeyWrap`);
            const unwrapped = aesKeyUnwrap(kek, ct);
            if (unwrapped !== undefined)
              assert.equal(unwrapped.toString('hex'), tc.msg, `${id}: aesKeyUnwrap`);
            tally.add(`acceptable (wrap ${wrapped === undefined ? 'refused' : 'matched'})`);
            tally.add(`acceptable (unwrap ${unwrapped === undefined ? 'refused' : 'matched'})`);
            return;
          }
        }
      });
    }
  }
  t.diagnostic(`AES key wrap vectors checked: ${tally}`);
  assert.ok(tally.get('valid') > 0, 'no valid key wrap vectors were checked');
  assert.ok(tally.get('invalid') > 0, 'no invalid key wrap vectors were checked');
});
