/**
 * Round trips through a real sealbox over a real Unix socket: unary and streamed, across chunk
 * boundaries, both pool modes, random client split points, the largest chunk size, streams larger
 * than the in-flight byte budget, a 100 MiB stream, bad requests, health and the socket's permissions.
 */
import assert from 'node:assert/strict';
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { type ClientDuplexStream, credentials, type ServiceError, status } from '@grpc/grpc-js';
import * as fc from 'fast-check';
import { loadApi } from '../../src/api/proto';
import {
  type Context,
  decrypt,
  decryptStream,
  encrypt,
  encryptStream,
  errorCode,
} from '../../src/client/client';
import type { ConfigInput } from '../../src/config/config';
import { CHUNK_OVERHEAD } from '../../src/crypto/chunk';
import { DEFAULT_CHUNK_SIZE, parseHeader } from '../../src/crypto/format';
import type { StreamMetadata__Output } from '../../src/gen/sealbox/v1/StreamMetadata';
import { requestBufferStats } from '../../src/server/grpc-reassembly';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';

const KiB = 1024;
const MiB = 1024 * KiB;

const POOLS: ReadonlyArray<{ name: string; config: ConfigInput }> = [
  { name: 'inline pool', config: { pool: { mode: 'inline' } } },
  // inlineBelowBytes 0 sends even one-chunk batches to the workers.
  { name: 'worker pool', config: { pool: { mode: 'workers', inlineBelowBytes: 0 } } },
];

/** One describe per pool, each with a sealbox of its own for the tests `body` declares. */
function perPool(body: (sealbox: () => TestSealbox) => void): void {
  for (const pool of POOLS) {
    describe(pool.name, () => {
      let sb: TestSealbox;
      before(async () => {
        sb = await startTestSealbox(pool.config);
      });
      after(() => sb.close());
      body(() => sb);
    });
  }
}

/** Sizes around the chunk boundaries for chunk size `c`. */
function sizesAround(c: number): number[] {
  return [0, 1, c - 1, c, c + 1, 2 * c, 3 * c + 5];
}

/** Exact ciphertext length: header, then every chunk plus its tag (an empty message has one chunk). */
function expectedCiphertextLength(headerLength: number, plaintextLength: number, chunkSize: number): number {
  const chunks = Math.max(1, Math.ceil(plaintextLength / chunkSize));
  return headerLength + plaintextLength + chunks * CHUNK_OVERHEAD;
}

/** Checks the ciphertext's header and length say what the call asked for. */
function assertShape(ciphertext: Buffer, plaintextLength: number, chunkSize: number, context: Context): void {
  const header = parseHeader(ciphertext);
  assert.ok(header, 'ciphertext starts with a complete header');
  assert.equal(header.chunkSize, chunkSize);
  assert.deepEqual({ ...header.context }, context);
  assert.match(header.keyId, /^local:test\//);
  assert.equal(
    ciphertext.length,
    expectedCiphertextLength(header.length, plaintextLength, chunkSize),
    `ciphertext length for ${plaintextLength} plaintext bytes in ${chunkSize}-byte chunks`,
  );
}

/** Asserts that `promise` rejects with the gRPC status, the sealbox code and (optionally) a message. */
async function rejectsWith(
  promise: Promise<unknown>,
  grpcCode: status,
  sealboxCode: string,
  details?: RegExp,
): Promise<ServiceError> {
  let caught: ServiceError | undefined;
  await assert.rejects(promise, (err: ServiceError) => {
    caught = err;
    return true;
  });
  const err = caught!;
  assert.equal(err.code, grpcCode, `status ${err.code} (${err.details})`);
  assert.equal(errorCode(err), sealboxCode, err.details);
  if (details) assert.match(err.details, details);
  return err;
}

/** Cuts `data` at `offsets` (clamped, sorted, duplicates kept, so repeated offsets give empty pieces). */
function cutAt(data: Buffer, offsets: readonly number[]): Buffer[] {
  const cuts = offsets.map((o) => Math.max(0, Math.min(data.length, o))).sort((a, b) => a - b);
  const pieces: Buffer[] = [];
  let from = 0;
  for (const cut of cuts) {
    pieces.push(data.subarray(from, cut));
    from = cut;
  }
  pieces.push(data.subarray(from));
  return pieces;
}

/** Inserts empty pieces at the given positions (clamped). */
function withEmpties(pieces: Buffer[], positions: readonly number[]): Buffer[] {
  const out = [...pieces];
  for (const p of positions) out.splice(Math.min(p, out.length), 0, Buffer.alloc(0));
  return out;
}

/** Deterministic pseudo-random bytes (AES-CTR keystream), far faster than generating them byte by byte. */
function pseudoRandomBytes(seed: number, length: number): Buffer {
  const key = Buffer.alloc(16);
  key.writeUInt32BE(seed >>> 0, 0);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(length));
}

/** mulberry32: a small seeded PRNG for piece sizes. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type StreamResponse = { metadata?: StreamMetadata__Output | null; data?: Buffer };

/**
 * Drives a raw streaming call: writes `first`, then each piece as a data message (waiting for
 * 'drain' when asked), half-closes, and hands every data response to `onData` without collecting it.
 */
function drive<Req>(
  call: ClientDuplexStream<Req, StreamResponse>,
  first: Req[],
  pieces: Iterable<Buffer>,
  onData: (data: Buffer) => void,
): Promise<StreamMetadata__Output | undefined> {
  let failed = false;
  const finished = new Promise<StreamMetadata__Output | undefined>((resolve, reject) => {
    let metadata: StreamMetadata__Output | undefined;
    call.on('data', (message: StreamResponse) => {
      if (message.metadata) metadata = message.metadata;
      else if (message.data) onData(message.data);
    });
    call.on('error', (err) => {
      failed = true;
      reject(err);
    });
    call.on('end', () => resolve(metadata));
  });
  (async () => {
    for (const message of first) call.write(message);
    for (const data of pieces) {
      if (failed) return;
      if (!call.write({ data } as Req)) {
        await new Promise<void>((resolve) => {
          const done = () => {
            call.off('drain', done);
            call.off('error', done);
            call.off('close', done);
            resolve();
          };
          call.once('drain', done);
          call.once('error', done);
          call.once('close', done);
        });
      }
    }
    call.end();
  })().catch(() => {});
  return finished;
}

/** Writes raw request messages (anything, including malformed sequences) and collects the answer. */
function rawCall<Req>(call: ClientDuplexStream<Req, StreamResponse>, messages: Req[]): Promise<Buffer> {
  const parts: Buffer[] = [];
  const finished = drive(call, messages, [], (d) => parts.push(d));
  return finished.then(() => Buffer.concat(parts));
}

/**
 * Rejects if `promise` has not settled after `ms`: a hung call fails its test instead of the run. A
 * give-up, not a speed bound (issue 14): `ms` must be far beyond what a loaded machine needs.
 */
async function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms (hung)`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

for (const pool of POOLS) {
  for (const chunkSize of [4096, DEFAULT_CHUNK_SIZE]) {
    const isDefault = chunkSize === DEFAULT_CHUNK_SIZE;
    describe(`round trips: ${pool.name}, chunk size ${chunkSize}${isDefault ? ' (default)' : ''}`, () => {
      let sb: TestSealbox;
      const context = { tenant: 'acme', purpose: 'round-trip', 'ünïcødé-🔑': 'välue ✓' };

      before(async () => {
        // Unary calls always use the server's default chunk size, so the 4096 run changes it.
        sb = await startTestSealbox(
          isDefault ? pool.config : { ...pool.config, envelope: { defaultChunkSize: chunkSize } },
        );
      });
      after(() => sb.close());

      for (const size of sizesAround(chunkSize)) {
        test(`unary Encrypt → Decrypt, ${size} bytes`, async () => {
          const plaintext = randomBytes(size);
          const { ciphertext, keyId } = await encrypt(sb.client, sb.alias, plaintext, context);
          assert.match(keyId, /^local:test\/[0-9a-f]{32}$/);
          assertShape(ciphertext, size, chunkSize, context);

          const opened = await decrypt(sb.client, ciphertext);
          assert.ok(opened.plaintext.equals(plaintext));
          assert.equal(opened.keyId, keyId);
          assert.deepEqual({ ...opened.context }, context);

          const checked = await decrypt(sb.client, ciphertext, { tenant: 'acme' });
          assert.ok(checked.plaintext.equals(plaintext));
        });

        test(`EncryptStream → DecryptStream, ${size} bytes`, async () => {
          const plaintext = randomBytes(size);
          // Explicit chunk size for 4096; 0 asks for the server default.
          const sealed = await encryptStream(
            sb.client,
            sb.alias,
            cutAt(plaintext, [1, chunkSize, size - 1]),
            {
              context,
              chunkSize: isDefault ? 0 : chunkSize,
            },
          );
          assert.match(sealed.keyId, /^local:test\/[0-9a-f]{32}$/);
          assert.deepEqual({ ...sealed.context }, context);
          assertShape(sealed.data, size, chunkSize, context);

          const opened = await decryptStream(sb.client, cutAt(sealed.data, [7, 100, chunkSize + 3]));
          assert.ok(opened.data.equals(plaintext));
          assert.equal(opened.keyId, sealed.keyId);
          assert.deepEqual({ ...opened.context }, context);

          const checked = await decryptStream(sb.client, [sealed.data], { purpose: 'round-trip' });
          assert.ok(checked.data.equals(plaintext));
        });
      }

      test('a unary ciphertext decrypts through DecryptStream and a stream ciphertext through Decrypt', async () => {
        const plaintext = randomBytes(3 * chunkSize + 5);
        const unary = await encrypt(sb.client, sb.alias, plaintext, context);
        const viaStream = await decryptStream(sb.client, cutAt(unary.ciphertext, [1, 50, chunkSize]), {
          tenant: 'acme',
        });
        assert.ok(viaStream.data.equals(plaintext));
        assert.equal(viaStream.keyId, unary.keyId);

        const streamed = await encryptStream(sb.client, sb.alias, [plaintext], { context });
        const viaUnary = await decrypt(sb.client, streamed.data, { tenant: 'acme' });
        assert.ok(viaUnary.plaintext.equals(plaintext));
        assert.deepEqual({ ...viaUnary.context }, context);
      });

      test('a wrong or missing expected context fails with FAILED_PRECONDITION / CONTEXT_MISMATCH', async () => {
        const plaintext = randomBytes(chunkSize + 1);
        const { ciphertext } = await encrypt(sb.client, sb.alias, plaintext, context);
        const wrong: Context[] = [{ tenant: 'other' }, { tenant: 'acme', region: 'eu' }, { Tenant: 'acme' }];
        for (const expected of wrong) {
          await rejectsWith(
            decrypt(sb.client, ciphertext, expected),
            status.FAILED_PRECONDITION,
            'CONTEXT_MISMATCH',
          );
          const err = await rejectsWith(
            decryptStream(sb.client, cutAt(ciphertext, [10, chunkSize]), expected),
            status.FAILED_PRECONDITION,
            'CONTEXT_MISMATCH',
          );
          // The mismatch is reported before any plaintext is released.
          assert.equal((err as ServiceError & { received: Buffer }).received.length, 0);
        }
        // The value is never echoed, only the key.
        const err = await rejectsWith(
          decrypt(sb.client, ciphertext, { tenant: 'secret-value-xyz' }),
          status.FAILED_PRECONDITION,
          'CONTEXT_MISMATCH',
          /tenant/,
        );
        assert.doesNotMatch(err.details, /secret-value-xyz/);
      });
    });
  }
}

describe('random split points (property)', () => {
  const MAX_LENGTH = 300 * KiB;
  const CHUNK_SIZES = [4096, 8192, 65536] as const;
  const cutArb = fc.array(fc.integer({ min: 0, max: 1_000_000 }), { maxLength: 24 });
  const emptiesArb = fc.array(fc.nat(40), { maxLength: 3 });

  perPool((sealbox) => {
    test('EncryptStream → DecryptStream returns the plaintext for any split of input and ciphertext', async () => {
      await fc.assert(
        fc.asyncProperty(
          fc.record({
            seed: fc.nat(),
            chunkSize: fc.constantFrom(...CHUNK_SIZES),
            length: fc.oneof(
              fc.integer({ min: 0, max: MAX_LENGTH }).map((n) => ({ n })),
              // Near a chunk boundary: k·C + d.
              fc.record({ k: fc.integer({ min: 0, max: 4 }), d: fc.integer({ min: -2, max: 2 }) }),
            ),
            plainCuts: cutArb,
            plainEmpties: emptiesArb,
            cipherCuts: cutArb,
            // Cuts at header / record boundaries ± 1.
            cipherBoundaryCuts: fc.array(
              fc.record({ record: fc.integer({ min: 0, max: 5 }), d: fc.integer({ min: -1, max: 1 }) }),
              { maxLength: 4 },
            ),
            cipherEmpties: emptiesArb,
          }),
          async (p) => {
            const c = p.chunkSize;
            const length =
              'n' in p.length ? p.length.n : Math.max(0, Math.min(MAX_LENGTH, p.length.k * c + p.length.d));
            const plaintext = pseudoRandomBytes(p.seed, length);
            const scale = (x: number, total: number) => Math.floor((x * total) / 1_000_000);

            const plainPieces = withEmpties(
              cutAt(
                plaintext,
                p.plainCuts.map((x) => scale(x, length)),
              ),
              p.plainEmpties,
            );
            const sealed = await encryptStream(sealbox().client, sealbox().alias, plainPieces, {
              chunkSize: c,
            });
            const header = parseHeader(sealed.data);
            assert.ok(header);
            assert.equal(header.chunkSize, c);
            assert.equal(sealed.data.length, expectedCiphertextLength(header.length, length, c));

            const recordCuts = p.cipherBoundaryCuts.map(
              ({ record, d }) => header.length + record * (c + CHUNK_OVERHEAD) + d,
            );
            const cipherPieces = withEmpties(
              cutAt(sealed.data, [...p.cipherCuts.map((x) => scale(x, sealed.data.length)), ...recordCuts]),
              p.cipherEmpties,
            );
            const opened = await decryptStream(sealbox().client, cipherPieces);
            assert.equal(opened.data.length, length);
            assert.ok(opened.data.equals(plaintext), 'decrypted plaintext differs');
          },
        ),
        { numRuns: 40 },
      );
    });
  });
});

describe('largest chunk size', () => {
  perPool((sealbox) => {
    test('4 MiB chunks round-trip around the chunk boundary', async () => {
      const C = 4 * MiB;
      for (const size of [C - 1, C, C + 1]) {
        const plaintext = randomBytes(size);
        // Pieces stay under the server's 8 MiB message limit.
        const sealed = await encryptStream(
          sealbox().client,
          sealbox().alias,
          cutAt(plaintext, [MiB, 3 * MiB]),
          {
            chunkSize: C,
          },
        );
        assertShape(sealed.data, size, C, {});
        const opened = await decryptStream(sealbox().client, cutAt(sealed.data, [5, 2 * MiB, C + 16]));
        assert.ok(opened.data.equals(plaintext), `${size} bytes`);
      }
    });
  });
});

/**
 * stream.maxInFlightBytes is the byte budget shared by all calls; 1 MiB is its smallest allowed value
 * and equals the default batch size, so a stream's next segment waits for its previous one to be
 * written. The same waiting happens under load with larger budgets (many concurrent streams).
 */
describe('streams larger than the in-flight byte budget', () => {
  for (const pool of POOLS) {
    describe(pool.name, () => {
      for (const size of [MiB - 1, MiB + 1, 2 * MiB + 5]) {
        test(`EncryptStream → DecryptStream of ${size} bytes completes, untruncated`, async () => {
          // A fresh server per case: a stuck call would hold budget and stall the next case.
          const sb = await startTestSealbox({ ...pool.config, stream: { maxInFlightBytes: MiB } });
          try {
            const plaintext = randomBytes(size);
            const sealed = await withDeadline(
              encryptStream(sb.client, sb.alias, [plaintext]),
              60_000,
              'EncryptStream',
            );
            assertShape(sealed.data, size, DEFAULT_CHUNK_SIZE, {});
            const opened = await withDeadline(
              decryptStream(sb.client, [sealed.data]),
              60_000,
              'DecryptStream',
            );
            assert.equal(opened.data.length, size, 'DecryptStream ended OK with missing plaintext');
            assert.ok(opened.data.equals(plaintext));
          } finally {
            await sb.close();
          }
        });
      }
    });
  }
});

/**
 * The server reassembles large request messages into reused buffers (src/server/grpc-reassembly.ts)
 * and gives each back once neither its framer nor a pending segment holds a view of it. Messages
 * smaller than a chunk are the risky case for the framer (it queues several before it seals a chunk),
 * and the worker pool for segments (a job reads its segment when it is sent, maybe later): a buffer
 * given back too early would be overwritten by a later message while its bytes still wait.
 */
describe('request buffers reused by the server', () => {
  /** `data` cut into pieces whose sizes cycle through `sizes`. */
  const cutCycling = (data: Buffer, sizes: readonly number[]): Buffer[] => {
    const pieces: Buffer[] = [];
    for (let at = 0, i = 0; at < data.length; i++) {
      const n = sizes[i % sizes.length]!;
      pieces.push(data.subarray(at, at + n));
      at += n;
    }
    return pieces;
  };

  perPool((sealbox) => {
    for (const chunkSize of [256 * KiB, DEFAULT_CHUNK_SIZE]) {
      test(`round trips of messages smaller and larger than a ${chunkSize / KiB} KiB chunk stay intact`, async () => {
        const before = requestBufferStats().reused;
        for (let round = 0; round < 3; round++) {
          const plaintext = randomBytes(6 * MiB + round);
          const sealed = await encryptStream(
            sealbox().client,
            sealbox().alias,
            cutCycling(plaintext, [70 * KiB + 1, 65 * KiB, 200 * KiB + 7, MiB, 90 * KiB]),
            { chunkSize },
          );
          assertShape(sealed.data, plaintext.length, chunkSize, {});
          const opened = await decryptStream(
            sealbox().client,
            cutCycling(sealed.data, [70 * KiB + 3, 66 * KiB, MiB + 5, 300 * KiB]),
          );
          assert.equal(opened.data.length, plaintext.length);
          assert.ok(opened.data.equals(plaintext), `round ${round}: plaintext differs`);
        }
        assert.ok(requestBufferStats().reused > before, 'request buffers were reused (the patch is active)');
      });
    }
  });
});

describe('100 MiB stream', () => {
  let sb: TestSealbox;
  before(async () => {
    sb = await startTestSealbox();
  });
  after(() => sb.close());

  test('encrypts and decrypts 100 MiB split at arbitrary points', { timeout: 60_000 }, async (t) => {
    const TOTAL = 100 * MiB;
    const BLOCK = 1 * MiB;
    const seed = Number(process.env['SEALBOX_TEST_SEED'] ?? Math.floor(Math.random() * 2 ** 32));
    t.diagnostic(`seed ${seed} (set SEALBOX_TEST_SEED to replay)`);
    const random = prng(seed);
    const base = randomBytes(BLOCK);

    /** Block i: the base block with (i, offset) stamped every 4 KiB, so no two chunks are alike. */
    const block = (i: number): Buffer => {
      const out = Buffer.from(base);
      for (let at = 0; at < BLOCK; at += 4096) {
        out.writeUInt32BE(i, at);
        out.writeUInt32BE(at, at + 4);
      }
      return out;
    };

    /** A piece size: mostly 1 byte..3 MiB, sometimes tiny, sometimes empty. */
    const pieceSize = (): number => {
      const r = random();
      if (r < 0.05) return 0;
      if (r < 0.2) return 1 + Math.floor(random() * 64);
      return 1 + Math.floor(random() * 3 * MiB);
    };

    /** Yields `source` (an array of buffers, read in order) re-cut into pieces of `pieceSize()` bytes. */
    function* recut(source: Iterable<Buffer>, total: number): Generator<Buffer> {
      const iterator = source[Symbol.iterator]();
      let current: Buffer = Buffer.alloc(0);
      let left = total;
      while (left > 0) {
        const want = Math.min(pieceSize(), left);
        const parts: Buffer[] = [];
        let have = 0;
        while (have < want) {
          if (current.length === 0) {
            const next = iterator.next();
            assert.ok(!next.done, 'source ended early');
            current = next.value;
            continue;
          }
          const take = Math.min(current.length, want - have);
          parts.push(current.subarray(0, take));
          current = current.subarray(take);
          have += take;
        }
        left -= want;
        yield parts.length === 1 ? parts[0]! : Buffer.concat(parts, want);
      }
    }

    const plainHash = createHash('sha256');
    function* plaintextBlocks(): Generator<Buffer> {
      for (let i = 0; i < TOTAL / BLOCK; i++) {
        const b = block(i);
        plainHash.update(b);
        yield b;
      }
    }

    const started = Date.now();
    const ciphertext: Buffer[] = [];
    let ciphertextLength = 0;
    const encryptCall = sb.client.EncryptStream();
    const sealedMetadata = await drive(
      encryptCall,
      [{ init: { keyAlias: sb.alias, context: { size: '100MiB' }, chunkSize: 0 } }],
      recut(plaintextBlocks(), TOTAL),
      (data) => {
        ciphertext.push(data);
        ciphertextLength += data.length;
      },
    );
    const encrypted = Date.now();
    assert.match(sealedMetadata?.keyId ?? '', /^local:test\//);
    const header = parseHeader(Buffer.concat(ciphertext.slice(0, 2)));
    assert.ok(header);
    assert.equal(ciphertextLength, expectedCiphertextLength(header.length, TOTAL, DEFAULT_CHUNK_SIZE));

    const openedHash = createHash('sha256');
    let openedLength = 0;
    const decryptCall = sb.client.DecryptStream();
    const openedMetadata = await drive(
      decryptCall,
      [{ init: { expectedContext: { size: '100MiB' } } }],
      recut(ciphertext, ciphertextLength),
      (data) => {
        openedHash.update(data);
        openedLength += data.length;
      },
    );
    const decrypted = Date.now();
    t.diagnostic(`encrypt ${encrypted - started} ms, decrypt ${decrypted - encrypted} ms`);
    assert.equal(openedMetadata?.keyId, sealedMetadata?.keyId);
    assert.equal(openedLength, TOTAL);
    assert.equal(openedHash.digest('hex'), plainHash.digest('hex'));
  });
});

describe('bad requests', () => {
  let sb: TestSealbox;
  let small: TestSealbox;
  before(async () => {
    sb = await startTestSealbox();
    small = await startTestSealbox({ envelope: { unaryMaxBytes: 1024 } });
  });
  after(async () => {
    await sb.close();
    await small.close();
  });

  test('EncryptStream that starts with data is INVALID_ARGUMENT and names init', async () => {
    await rejectsWith(
      rawCall(sb.client.EncryptStream(), [{ data: Buffer.from('no init first') }]),
      status.INVALID_ARGUMENT,
      'INVALID_ARGUMENT',
      /init/,
    );
  });

  test('EncryptStream with no message at all is INVALID_ARGUMENT and names init', async () => {
    await rejectsWith(
      rawCall(sb.client.EncryptStream(), []),
      status.INVALID_ARGUMENT,
      'INVALID_ARGUMENT',
      /init/,
    );
  });

  test('EncryptStream with a second init is INVALID_ARGUMENT', async () => {
    const init = { init: { keyAlias: sb.alias, context: {}, chunkSize: 0 } };
    await rejectsWith(
      rawCall(sb.client.EncryptStream(), [init, { data: Buffer.from('x') }, init]),
      status.INVALID_ARGUMENT,
      'INVALID_ARGUMENT',
    );
  });

  test('DecryptStream with init after data is INVALID_ARGUMENT', async () => {
    const { ciphertext } = await encrypt(sb.client, sb.alias, Buffer.from('hello'));
    await rejectsWith(
      rawCall(sb.client.DecryptStream(), [
        { data: ciphertext.subarray(0, 10) },
        { init: { expectedContext: {} } },
      ]),
      status.INVALID_ARGUMENT,
      'INVALID_ARGUMENT',
    );
  });

  test('an unknown alias is NOT_FOUND / KEY_NOT_FOUND and lists the configured aliases', async () => {
    const listing = /configured aliases: test\b/;
    await rejectsWith(
      encrypt(sb.client, 'no-such-key', Buffer.from('x')),
      status.NOT_FOUND,
      'KEY_NOT_FOUND',
      listing,
    );
    await rejectsWith(
      encryptStream(sb.client, 'no-such-key', [Buffer.from('x')]),
      status.NOT_FOUND,
      'KEY_NOT_FOUND',
      listing,
    );
  });

  test('an empty alias is INVALID_ARGUMENT', async () => {
    await rejectsWith(encrypt(sb.client, '', Buffer.from('x')), status.INVALID_ARGUMENT, 'INVALID_ARGUMENT');
  });

  test('chunk sizes outside 4096..4194304 are INVALID_ARGUMENT', async () => {
    for (const chunkSize of [100, 4095, 4 * MiB + 1]) {
      await rejectsWith(
        encryptStream(sb.client, sb.alias, [Buffer.from('x')], { chunkSize }),
        status.INVALID_ARGUMENT,
        'INVALID_ARGUMENT',
        /chunk_size/,
      );
    }
  });

  test('a unary plaintext above the limit is RESOURCE_EXHAUSTED and points to EncryptStream', async () => {
    await rejectsWith(
      encrypt(small.client, small.alias, Buffer.alloc(1025)),
      status.RESOURCE_EXHAUSTED,
      'LIMIT_EXCEEDED',
      /EncryptStream/,
    );
    // At the limit it works, and the stream has no such limit.
    const { ciphertext } = await encrypt(small.client, small.alias, Buffer.alloc(1024, 7));
    assert.ok((await decrypt(small.client, ciphertext)).plaintext.equals(Buffer.alloc(1024, 7)));
    const streamed = await encryptStream(small.client, small.alias, [Buffer.alloc(10 * KiB, 9)]);
    assert.equal((await decryptStream(small.client, [streamed.data])).data.length, 10 * KiB);
  });

  test('a context with 65 pairs is INVALID_ARGUMENT / CONTEXT_INVALID; 64 pairs work', async () => {
    const pairs = (n: number): Context =>
      Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, `v${i}`]));
    await rejectsWith(
      encrypt(sb.client, sb.alias, Buffer.from('x'), pairs(65)),
      status.INVALID_ARGUMENT,
      'CONTEXT_INVALID',
      /65 pairs/,
    );
    await rejectsWith(
      encryptStream(sb.client, sb.alias, [Buffer.from('x')], { context: pairs(65) }),
      status.INVALID_ARGUMENT,
      'CONTEXT_INVALID',
    );
    const { ciphertext } = await encrypt(sb.client, sb.alias, Buffer.from('x'), pairs(64));
    assert.deepEqual({ ...(await decrypt(sb.client, ciphertext)).context }, pairs(64));
  });

  test('a DecryptStream message with neither init nor data is INVALID_ARGUMENT', async () => {
    const { ciphertext } = await encrypt(sb.client, sb.alias, Buffer.from('hello'));
    for (const messages of [[{}], [{}, { data: ciphertext }], [{ data: ciphertext.subarray(0, 10) }, {}]]) {
      await rejectsWith(
        rawCall(sb.client.DecryptStream(), messages),
        status.INVALID_ARGUMENT,
        'INVALID_ARGUMENT',
      );
    }
  });

  test('an EncryptStream message with neither init nor data is INVALID_ARGUMENT', async () => {
    const init = { init: { keyAlias: sb.alias, context: {}, chunkSize: 0 } };
    for (const messages of [[{}], [init, {}]]) {
      await rejectsWith(
        rawCall(sb.client.EncryptStream(), messages),
        status.INVALID_ARGUMENT,
        'INVALID_ARGUMENT',
      );
    }
  });

  test('garbage, an empty stream and a truncated ciphertext are rejected', async () => {
    await rejectsWith(
      decrypt(sb.client, Buffer.from('definitely not sealbox')),
      status.INVALID_ARGUMENT,
      'CIPHERTEXT_MALFORMED',
    );
    await rejectsWith(decryptStream(sb.client, []), status.DATA_LOSS, 'CIPHERTEXT_TRUNCATED');
    const { ciphertext } = await encrypt(sb.client, sb.alias, randomBytes(3 * DEFAULT_CHUNK_SIZE));
    await rejectsWith(
      decrypt(sb.client, ciphertext.subarray(0, ciphertext.length - 1)),
      status.DATA_LOSS,
      'CIPHERTEXT_CORRUPT',
    );
    await rejectsWith(
      decryptStream(sb.client, [
        ciphertext.subarray(0, ciphertext.length - DEFAULT_CHUNK_SIZE - CHUNK_OVERHEAD),
      ]),
      status.DATA_LOSS,
      'CIPHERTEXT_TRUNCATED',
    );
  });
});

describe('health and socket', () => {
  let sb: TestSealbox;
  before(async () => {
    sb = await startTestSealbox();
  });
  after(() => sb.close());

  test('grpc.health.v1.Health/Check answers SERVING for "" and sealbox.v1.Envelope', async () => {
    const { Health } = loadApi().health.grpc.health.v1;
    const health = new Health(sb.target, credentials.createInsecure());
    try {
      for (const service of ['', 'sealbox.v1.Envelope']) {
        const answer = await new Promise<string>((resolve, reject) =>
          health.Check({ service }, (err, res) => (err || !res ? reject(err) : resolve(res.status))),
        );
        assert.equal(answer, 'SERVING', `service "${service}"`);
      }
    } finally {
      health.close();
    }
  });

  test('the socket file is mode 0600', () => {
    const stat = statSync(sb.socketPath);
    assert.ok(stat.isSocket());
    assert.equal(stat.mode & 0o777, 0o600);
  });
});
