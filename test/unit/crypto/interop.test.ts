/**
 * Interop: the independent Python decryptor in test/interop/decrypt_v1.py (written from
 * docs/FORMAT.md alone) must accept the known-answer vectors and everything the TypeScript
 * encryptor produces, and must reject any single-bit modification without releasing plaintext.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes, randomInt } from 'node:crypto';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { sealMessage } from '../../../src/crypto/message';
import { REPO_ROOT } from '../../helpers/paths';

const SCRIPT = join(REPO_ROOT, 'test', 'interop', 'decrypt_v1.py');
const VECTORS = join(REPO_ROOT, 'test', 'vectors', 'sealbox-v1.json');
const MAX_BUFFER = 64 * 1024 * 1024;

function canImportCryptography(interpreter: string): boolean {
  const r = spawnSync(interpreter, ['-c', 'import cryptography'], { stdio: 'ignore' });
  return r.error === undefined && r.status === 0;
}

let cachedPython: string | null | undefined;

/** `/usr/bin/python3` if it has `cryptography`, else `python3` on PATH; null if neither does. */
function findPython(): string | null {
  if (cachedPython === undefined) {
    cachedPython = ['/usr/bin/python3', 'python3'].find(canImportCryptography) ?? null;
  }
  return cachedPython;
}

function python(): string {
  const interpreter = findPython();
  if (interpreter === null) {
    assert.fail(
      'no Python 3 interpreter can `import cryptography` (tried /usr/bin/python3 and python3 on PATH); ' +
        'install it with `apt-get install python3-cryptography`',
    );
  }
  return interpreter;
}

function pyDecrypt(ciphertext: Buffer, dek: Uint8Array) {
  return spawnSync(python(), [SCRIPT, 'decrypt', '--dek', Buffer.from(dek).toString('hex')], {
    input: ciphertext,
    maxBuffer: MAX_BUFFER,
  });
}

/** Characters whose UTF-8 encodings have 1, 2, 3 and 4 bytes, including a pair whose UTF-8 byte
 * order (U+FF21 < U+1F510) differs from its UTF-16 code-unit order (0xD83D < 0xFF21). */
const ALPHABET = [...'abcxyzABZ019-_.:/ éüßЖ中文鍵\uFF21🔐😀𝄞'];

function randomString(min: number, max: number): string {
  const len = randomInt(min, max + 1);
  let out = '';
  for (let i = 0; i < len; i++) out += ALPHABET[randomInt(ALPHABET.length)];
  return out;
}

function randomContext(): Record<string, string> {
  const context: Record<string, string> = {};
  const pairs = randomInt(0, 9);
  for (let i = 0; i < pairs; i++) context[randomString(1, 12)] = randomString(0, 20);
  return context;
}

interface Case {
  readonly size: number;
  readonly chunkSize: number;
  readonly context: Record<string, string>;
}

const CASES: Case[] = [
  { size: 0, chunkSize: 4096, context: {} },
  { size: 1, chunkSize: 4096, context: { tenant: 'acme' } },
  { size: 4095, chunkSize: 4096, context: randomContext() },
  { size: 4096, chunkSize: 4096, context: randomContext() },
  { size: 4097, chunkSize: 4096, context: randomContext() },
  { size: 3 * 4096, chunkSize: 4096, context: { '\uFF21': 'fullwidth', '🔐': 'astral', région: 'Zürich ✓' } },
  { size: 100000, chunkSize: 4096, context: randomContext() },
  { size: 100000, chunkSize: 65536, context: randomContext() },
  { size: 65536, chunkSize: 65536, context: randomContext() },
  { size: randomInt(0, 200001), chunkSize: 65536, context: randomContext() },
  { size: randomInt(0, 20001), chunkSize: 4096, context: randomContext() },
];

function seal(c: Case) {
  const plaintext = randomBytes(c.size);
  const dek = randomBytes(32);
  const ciphertext = sealMessage(plaintext, {
    dek,
    wrapped: {
      keyId: `local:interop/${randomBytes(16).toString('hex')}`,
      wrapAlgorithm: 'A256KW',
      wrappedDek: randomBytes(40),
    },
    context: c.context,
    chunkSize: c.chunkSize,
  });
  return { plaintext, dek, ciphertext };
}

function describeCase(c: Case): string {
  return `size ${c.size}, chunk size ${c.chunkSize}, ${Object.keys(c.context).length} context pair(s)`;
}

/** The smallest header sealed here: 44 + Lc(>= 2) + 32 + 2 + Lk(46) + 1 + La(6) + 2 + Lw(40) + 32. */
const MIN_HEADER_BYTES = 207;

function flipBit(ciphertext: Buffer, bit: number): Buffer {
  const out = Buffer.from(ciphertext);
  out[bit >> 3]! ^= 1 << (bit & 7);
  return out;
}

describe('interop with the independent Python decryptor (docs/FORMAT.md)', () => {
  test('a Python interpreter with the cryptography package is available', () => {
    python();
  });

  test('decrypt_v1.py accepts every known-answer vector', () => {
    const r = spawnSync(python(), [SCRIPT, 'vectors', VECTORS], { encoding: 'utf8', maxBuffer: MAX_BUFFER });
    assert.equal(r.error, undefined);
    assert.equal(r.status, 0, `decrypt_v1.py vectors failed:\n${r.stdout}\n${r.stderr}`);
  });

  for (const c of CASES) {
    test(`round trip, then single-bit flips: ${describeCase(c)}`, () => {
      const { plaintext, dek, ciphertext } = seal(c);
      const where = `context ${JSON.stringify(c.context)}`;

      const ok = pyDecrypt(ciphertext, dek);
      assert.equal(ok.error, undefined);
      assert.equal(
        ok.status,
        0,
        `Python rejected a TypeScript ciphertext (${where}): ${ok.stderr.toString()}`,
      );
      assert.equal(ok.stdout.length, plaintext.length, where);
      assert.ok(ok.stdout.equals(plaintext), `Python decrypted a different plaintext (${where})`);

      // One random bit anywhere, plus one certainly in the header and one certainly in the final chunk.
      const bits = [
        randomInt(ciphertext.length * 8),
        randomInt(MIN_HEADER_BYTES * 8),
        (ciphertext.length - 16) * 8 + randomInt(16 * 8),
      ];
      for (const bit of bits) {
        const bad = pyDecrypt(flipBit(ciphertext, bit), dek);
        const why = `flipping bit ${bit} of ${ciphertext.length * 8} (${where}): ${bad.stderr.toString()}`;
        assert.equal(bad.error, undefined);
        assert.equal(bad.status, 2, `not rejected with exit 2: ${why}`);
        assert.equal(bad.stdout.length, 0, `plaintext written for a tampered ciphertext: ${why}`);
        assert.match(bad.stderr.toString(), /^error: .+\n$/, why);
      }
    });
  }
});
