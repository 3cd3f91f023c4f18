/**
 * Mutated real ciphertexts fed to Decrypt and DecryptStream over the real socket (issue 7's parser
 * fuzzing, end to end). fast-check mutates ciphertexts sealed by this sealbox — bit flips, byte
 * overwrites, insertions, deletions, truncations, duplicated ranges, splices of two ciphertexts — and,
 * for streams, splits the result at random points. For every input:
 *  - the call ends (each has a deadline) with OK exactly when the bytes are a real ciphertext (unchanged,
 *    or spliced into another whole one), with that one's plaintext; otherwise with a
 *    ciphertext or context status (INVALID_ARGUMENT, DATA_LOSS, FAILED_PRECONDITION, NOT_FOUND) and a
 *    sealbox-error-code trailer — never INTERNAL, UNKNOWN or a dropped connection;
 *  - a stream releases only plaintext that is a prefix of a genuine message's: nothing from a chunk
 *    that failed, nothing invented;
 *  - the server keeps serving, and holds no bytes or streams for ended calls.
 * The per-function fuzzing (many more inputs, allocation bounds) is test/unit/crypto/fuzz.test.ts;
 * coverage-guided fuzzing is test/fuzz/.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type ServiceError, status } from '@grpc/grpc-js';
import * as fc from 'fast-check';
import { decrypt, decryptStream, encrypt, encryptStream, errorCode } from '../../src/client/client';
import { MIN_CHUNK_SIZE } from '../../src/crypto/format';
import { fraction, type Mutation, mutate, mutationArb } from '../helpers/fuzzing';
import { splitAt, startTestSealbox, type TestSealbox } from '../helpers/harness';

/** Statuses a bad ciphertext may get (README error table). */
const REFUSALS = new Set([
  status.INVALID_ARGUMENT,
  status.DATA_LOSS,
  status.FAILED_PRECONDITION,
  status.NOT_FOUND,
]);
const CALL_DEADLINE_MS = 10_000;

let box: TestSealbox;
/** Real ciphertexts and their plaintexts: small chunks, so mutations land in many chunks. */
const corpus: Array<{ plaintext: Buffer; ciphertext: Buffer }> = [];

before(async () => {
  box = await startTestSealbox({ envelope: { defaultChunkSize: MIN_CHUNK_SIZE } });
  for (const size of [0, 1, 100, MIN_CHUNK_SIZE, 3 * MIN_CHUNK_SIZE + 17]) {
    const plaintext = randomBytes(size);
    const { ciphertext } = await encrypt(box.client, box.alias, plaintext, { fuzz: String(size) });
    corpus.push({ plaintext, ciphertext });
  }
  // One sealed through the stream API, with the default (larger) chunk size.
  const plaintext = randomBytes(70_000);
  const { data } = await encryptStream(box.client, box.alias, [plaintext], { chunkSize: 16 * 1024 });
  corpus.push({ plaintext, ciphertext: data });
});
after(() => box.close());

/** The shared byte mutations, plus a splice into another corpus ciphertext (a plausible forgery). */
type Splice = { kind: 'splice'; at: number; other: number; from: number };
const splice: fc.Arbitrary<Splice> = fc.record({
  kind: fc.constant('splice' as const),
  at: fraction,
  other: fc.nat(),
  from: fraction,
});

function apply(bytes: Buffer, m: Mutation | Splice): Buffer {
  if (m.kind !== 'splice') return mutate(bytes, m);
  const other = corpus[m.other % corpus.length]!.ciphertext;
  const at = Math.floor(m.at * bytes.length);
  return Buffer.concat([bytes.subarray(0, at), other.subarray(Math.floor(m.from * other.length))]);
}

const input = fc.record({
  entry: fc.nat(),
  mutations: fc.array(fc.oneof(mutationArb, splice), { minLength: 1, maxLength: 3 }),
  cuts: fc.array(fraction, { maxLength: 6 }),
});

/** The corpus entry whose ciphertext these bytes are, if any (a splice can rebuild another whole one). */
function genuine(bytes: Buffer): { plaintext: Buffer } | undefined {
  return corpus.find((c) => c.ciphertext.equals(bytes));
}

function checkRefusal(err: unknown, what: string): void {
  const e = err as ServiceError;
  assert.ok(REFUSALS.has(e.code), `${what}: status ${e.code} (${e.details})`);
  assert.ok(errorCode(e), `${what}: a sealbox-error-code trailer`);
}

async function released(): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const { bytesInFlight, streamsOpen } = box.sealbox.stats();
    if (bytesInFlight === 0 && streamsOpen === 0) return;
    await sleep(10);
  }
  assert.deepEqual(box.sealbox.stats().bytesInFlight, 0, 'no bytes held for ended calls');
}

test('Decrypt: mutated ciphertexts fail with a ciphertext status, unchanged ones decrypt', async (t) => {
  let refused = 0;
  await fc.assert(
    fc.asyncProperty(input, async ({ entry, mutations }) => {
      const { ciphertext } = corpus[entry % corpus.length]!;
      const mutated = mutations.reduce(apply, ciphertext);
      const real = genuine(mutated);
      const deadline = Date.now() + CALL_DEADLINE_MS;
      try {
        const result = await decrypt(box.client, mutated, {}, { deadline });
        assert.ok(real, 'only real ciphertexts decrypt');
        assert.ok(result.plaintext.equals(real.plaintext));
      } catch (err) {
        assert.ok(!real, `a real ciphertext was refused: ${String(err)}`);
        checkRefusal(err, 'Decrypt');
        refused++;
      }
    }),
    { numRuns: 600 },
  );
  // fast-check favours edge values (position 0, empty swaps), so many inputs come out unchanged and
  // serve as positive controls; enough must be real mutations for the property to mean something.
  t.diagnostic(`${refused} of 600 inputs were mutated and refused; the rest were genuine and decrypted`);
  assert.ok(refused >= 150, `only ${refused} of 600 inputs were real mutations`);
  await released();
});

test('DecryptStream: split anywhere; only a prefix of the plaintext is ever released', async () => {
  await fc.assert(
    fc.asyncProperty(input, async ({ entry, mutations, cuts }) => {
      const { ciphertext } = corpus[entry % corpus.length]!;
      const mutated = mutations.reduce(apply, ciphertext);
      const real = genuine(mutated);
      const pieces = splitAt(
        mutated,
        cuts.map((c) => Math.floor(c * mutated.length)),
      );
      try {
        const result = await decryptStream(box.client, pieces, undefined, {
          deadline: Date.now() + CALL_DEADLINE_MS,
        });
        assert.ok(real, 'only real ciphertexts decrypt');
        assert.ok(result.data.equals(real.plaintext));
      } catch (err) {
        assert.ok(!real, `a real ciphertext was refused: ${String(err)}`);
        checkRefusal(err, 'DecryptStream');
        // A splice keeps a prefix of this ciphertext and continues with another's bytes: released
        // plaintext may only come from chunks of one genuine message, read in order from its start.
        const received = (err as { received?: Buffer }).received ?? Buffer.alloc(0);
        assert.ok(
          corpus.some((c) => received.equals(c.plaintext.subarray(0, received.length))),
          'plaintext released before the failure is a prefix of a genuine plaintext',
        );
      }
    }),
    { numRuns: 300 },
  );
  await released();
  // Still serving after it all.
  const plaintext = randomBytes(5000);
  const { ciphertext } = await encrypt(box.client, box.alias, plaintext, {});
  assert.ok((await decrypt(box.client, ciphertext)).plaintext.equals(plaintext));
});
