/**
 * EncryptBatch / DecryptBatch use case (src/envelope/batch.ts) over the real DEK cache and a working
 * fake KEK (real AES key wrap, counts calls, can be disabled or made unavailable): limits, order,
 * per-item errors, context binding, one DEK lookup per key, DEK message budgets, cancellation, and
 * that every item is an ordinary ciphertext that decrypts alone (openMessage, EnvelopeService).
 * The gRPC side is test/integration/batch.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { CachedDataKeys } from '../../../src/cache/cached-data-keys';
import { UncachedDataKeys } from '../../../src/cache/data-keys';
import { parseHeader } from '../../../src/crypto/format';
import { aesKeyUnwrap, aesKeyWrap } from '../../../src/crypto/keywrap';
import type { KeyAccess } from '../../../src/envelope/access';
import {
  BatchEnvelope,
  type DecryptBatchResult,
  type EncryptBatchResult,
  isItemFailure,
  SLICE_ITEMS,
} from '../../../src/envelope/batch';
import { EnvelopeService } from '../../../src/envelope/service';
import { ErrorCode, SealboxError } from '../../../src/errors';
import type { KekProvider, KeyStatus, WrapResult } from '../../../src/kek/provider';
import { KekRegistry } from '../../../src/kek/registry';
import { ChunkPool } from '../../../src/pool/pool';

/** A fake KEK that really wraps (AES-KW) and counts calls; `fail` makes the next calls throw it. */
class FakeKek implements KekProvider {
  readonly kind = 'fake';
  readonly keyRef: string;
  private readonly key = randomBytes(32);
  readonly keyId: string;
  wraps = 0;
  unwraps = 0;
  fail: SealboxError | undefined;

  constructor(name: string) {
    this.keyRef = `fake:${name}`;
    this.keyId = `fake:${name}/1`;
  }
  owns(keyId: string): boolean {
    return keyId === this.keyId;
  }
  async wrap(dek: Uint8Array): Promise<WrapResult> {
    this.wraps++;
    if (this.fail) throw this.fail;
    return { keyId: this.keyId, algorithm: 'A256KW', wrapped: aesKeyWrap(this.key, dek) };
  }
  async unwrap(keyId: string, _algorithm: string, wrapped: Uint8Array): Promise<Buffer> {
    this.unwraps++;
    if (this.fail) throw this.fail;
    const dek = aesKeyUnwrap(this.key, wrapped);
    if (!dek || keyId !== this.keyId) throw new SealboxError(ErrorCode.CIPHERTEXT_CORRUPT, 'bad wrapped DEK');
    return dek;
  }
  async status(keyId: string): Promise<KeyStatus> {
    return { keyId, enabled: true, latestKeyId: this.keyId };
  }
  async refreshCurrentVersion(): Promise<KeyStatus> {
    return this.status(this.keyId);
  }
  async close(): Promise<void> {}
}

const OPTIONS = { defaultChunkSize: 4096, batchMaxItems: 1000, batchMaxBytes: 1024 * 1024 };

function setup(
  options: Partial<typeof OPTIONS> = {},
  cacheOptions: { maxMessages?: number; cached?: boolean } = {},
) {
  const a = new FakeKek('a');
  const b = new FakeKek('b');
  const registry = new KekRegistry(
    new Map<string, KekProvider>([
      ['a', a],
      ['b', b],
    ]),
  );
  const cache = new CachedDataKeys(registry, {
    maxConcurrentVaultCalls: 4,
    encrypt: {
      maxAgeMs: 3_600_000,
      maxMessages: cacheOptions.maxMessages ?? 1_000_000,
      maxBytes: 2 ** 40,
      refreshAhead: 0,
    },
    decrypt: { maxEntries: 100, ttlMs: 3_600_000 },
  });
  const dataKeys = cacheOptions.cached === false ? new UncachedDataKeys(registry) : cache;
  const pool = new ChunkPool({ mode: 'inline', maxQueue: 16, inlineBelowBytes: 1 << 30 });
  const batch = new BatchEnvelope(dataKeys, pool, { ...OPTIONS, ...options });
  const service = new EnvelopeService(dataKeys, pool, {
    defaultChunkSize: 4096,
    unaryMaxBytes: 4 * 1024 * 1024,
    batchBytes: 1024 * 1024,
  });
  return { a, b, cache, batch, service, pool };
}

function ok<T extends EncryptBatchResult | DecryptBatchResult>(
  result: T | undefined,
): Exclude<T, { errorCode: string }> {
  assert.ok(result, 'a result');
  if (isItemFailure(result)) assert.fail(`item failed: ${result.errorCode} ${result.errorMessage}`);
  return result as Exclude<T, { errorCode: string }>;
}

function failed(result: EncryptBatchResult | DecryptBatchResult | undefined, code: ErrorCode): string {
  assert.ok(result && isItemFailure(result), `expected ${code}, got ${JSON.stringify(result)}`);
  assert.equal(result.errorCode, code, result.errorMessage);
  return result.errorMessage;
}

async function rejects(promise: Promise<unknown>, code: ErrorCode, message?: RegExp): Promise<SealboxError> {
  const err = await promise.then(
    () => assert.fail('must reject'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof SealboxError, String(err));
  assert.equal(err.code, code, err.message);
  if (message) assert.match(err.message, message);
  return err;
}

describe('EncryptBatch / DecryptBatch use case', () => {
  test('round trip in order, each item its own message (id, keys, context), one wrap and one unwrap per key', async () => {
    const { a, b, cache, batch, service } = setup();
    const records = Array.from({ length: 150 }, (_, i) => ({
      keyAlias: i % 3 === 0 ? 'b' : 'a',
      plaintext: randomBytes(i % 7 === 0 ? 0 : 1 + ((i * 37) % 5000)),
      context: { row: String(i), table: 'users' },
    }));
    const sealed = await batch.encrypt(records);
    assert.equal(sealed.length, records.length);
    const ids = new Set<string>();
    for (const [i, result] of sealed.entries()) {
      const { ciphertext, keyId } = ok(result);
      assert.equal(keyId, records[i]!.keyAlias === 'b' ? b.keyId : a.keyId);
      const header = parseHeader(ciphertext)!;
      assert.deepEqual(header.context, records[i]!.context);
      assert.equal(header.chunkSize, 4096);
      ids.add(header.messageId.toString('hex'));
      // Each item decrypts alone through the unary path.
      const alone = await service.decrypt(ciphertext, { row: String(i) });
      assert.deepEqual(alone.plaintext, records[i]!.plaintext);
    }
    assert.equal(ids.size, records.length, 'every item has its own message id');
    assert.deepEqual([a.wraps, b.wraps], [1, 1], 'one wrap per key for the whole batch');
    // One cache lookup per alias per slice of items, not one per item.
    const lookups = () => {
      const { hits, misses } = cache.stats();
      return { encrypt: hits.encrypt + misses.encrypt, decrypt: hits.decrypt + misses.decrypt };
    };
    const slices = Math.ceil(records.length / SLICE_ITEMS);
    assert.ok(lookups().encrypt <= 2 * slices, JSON.stringify(lookups()));

    const opened = await batch.decrypt(
      sealed.map((r, i) => ({ ciphertext: ok(r).ciphertext, expectedContext: { row: String(i) } })),
    );
    for (const [i, result] of opened.entries()) {
      const { plaintext, context } = ok(result);
      assert.deepEqual(plaintext, records[i]!.plaintext);
      assert.deepEqual(context, records[i]!.context);
    }
    // The encrypt side's cache holds the DEK for encryption only; decryption unwrapped once per key.
    assert.deepEqual([a.unwraps, b.unwraps], [1, 1]);
    // The 150 unary decrypts above made 150 lookups; the batch at most one per key per slice.
    assert.ok(lookups().decrypt <= records.length + 2 * slices, JSON.stringify(lookups()));
  });

  test('a ciphertext from unary Encrypt decrypts in a batch, and a batch item through unary Decrypt', async () => {
    const { batch, service } = setup();
    const unary = await service.encrypt('a', Buffer.from('from unary'), { k: 'v' });
    const [opened] = await batch.decrypt([{ ciphertext: unary.ciphertext, expectedContext: { k: 'v' } }]);
    assert.equal(ok(opened).plaintext.toString(), 'from unary');
  });

  test('the limits: too many items, too many bytes, both before any work', async () => {
    const { a, batch } = setup({ batchMaxItems: 3, batchMaxBytes: 100 });
    const item = (n: number) => ({ keyAlias: 'a', plaintext: Buffer.alloc(n), context: {} });
    await rejects(
      batch.encrypt([item(1), item(1), item(1), item(1)]),
      ErrorCode.LIMIT_EXCEEDED,
      /4 items; at most 3.*batchMaxItems/,
    );
    await rejects(
      batch.encrypt([item(60), item(41)]),
      ErrorCode.LIMIT_EXCEEDED,
      /101 plaintext bytes.*at most 100.*batchMaxBytes/,
    );
    assert.equal(a.wraps, 0);
    assert.equal(ok((await batch.encrypt([item(60), item(40)]))[1]).keyId, a.keyId);
    const ct = { ciphertext: Buffer.alloc(10), expectedContext: {} };
    await rejects(batch.decrypt([ct, ct, ct, ct]), ErrorCode.LIMIT_EXCEEDED, /DecryptBatch has 4 items/);
    const tooBig = { ciphertext: Buffer.alloc(batch.decryptByteLimit(1) + 1), expectedContext: {} };
    await rejects(batch.decrypt([tooBig]), ErrorCode.LIMIT_EXCEEDED, /ciphertext bytes/);
    assert.deepEqual(await batch.encrypt([]), []);
  });

  test('DecryptBatch accepts whatever an EncryptBatch at the byte limit answered', async () => {
    const { batch } = setup({ batchMaxItems: 4, batchMaxBytes: 20_000 });
    const records = [0, 1, 2, 3].map(() => ({
      keyAlias: 'a',
      plaintext: randomBytes(5000),
      context: { big: 'x'.repeat(2000) },
    }));
    const sealed = await batch.encrypt(records);
    const opened = await batch.decrypt(
      sealed.map((r) => ({ ciphertext: ok(r).ciphertext, expectedContext: {} })),
    );
    assert.deepEqual(
      opened.map((r) => ok(r).plaintext),
      records.map((r) => r.plaintext),
    );
  });

  test('per-item errors do not fail the other items', async () => {
    const { batch } = setup();
    const good = { keyAlias: 'a', plaintext: Buffer.from('good'), context: { t: '1' } };
    const results = await batch.encrypt([
      good,
      { keyAlias: '', plaintext: Buffer.from('x'), context: {} },
      { keyAlias: 'nope', plaintext: Buffer.from('x'), context: {} },
      { keyAlias: 'a', plaintext: Buffer.from('x'), context: { '': 'empty key' } },
      {
        keyAlias: 'a',
        plaintext: Buffer.from('x'),
        context: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v'])),
      },
      good,
    ]);
    ok(results[0]);
    assert.match(failed(results[1], ErrorCode.INVALID_ARGUMENT), /key_alias is required/);
    assert.match(failed(results[2], ErrorCode.KEY_NOT_FOUND), /nope/);
    failed(results[3], ErrorCode.CONTEXT_INVALID);
    assert.match(failed(results[4], ErrorCode.CONTEXT_INVALID), /65 pairs/);
    ok(results[5]);

    const c0 = ok(results[0]).ciphertext;
    const flipped = Buffer.from(c0);
    flipped[flipped.length - 1]! ^= 1;
    const badHeader = Buffer.from(c0);
    badHeader[51]! ^= 1; // the context value "1" becomes "0"
    const opened = await batch.decrypt([
      { ciphertext: c0, expectedContext: { t: '1' } },
      { ciphertext: c0, expectedContext: { t: '2' } },
      { ciphertext: flipped, expectedContext: {} },
      { ciphertext: c0.subarray(0, c0.length - 20), expectedContext: {} },
      { ciphertext: c0.subarray(0, 30), expectedContext: {} },
      { ciphertext: Buffer.from('not a sealbox ciphertext'), expectedContext: {} },
      { ciphertext: Buffer.alloc(0), expectedContext: {} },
      { ciphertext: badHeader, expectedContext: {} },
      { ciphertext: c0, expectedContext: {} },
    ]);
    assert.equal(ok(opened[0]).plaintext.toString(), 'good');
    assert.match(failed(opened[1], ErrorCode.CONTEXT_MISMATCH), /"t"/);
    assert.match(failed(opened[2], ErrorCode.CIPHERTEXT_CORRUPT), /chunk 0/);
    failed(opened[3], ErrorCode.CIPHERTEXT_TRUNCATED);
    assert.match(failed(opened[4], ErrorCode.CIPHERTEXT_TRUNCATED), /inside the header/);
    failed(opened[5], ErrorCode.CIPHERTEXT_MALFORMED);
    assert.match(failed(opened[6], ErrorCode.CIPHERTEXT_TRUNCATED), /empty/);
    failed(opened[7], ErrorCode.CIPHERTEXT_CORRUPT);
    assert.equal(ok(opened[8]).plaintext.toString(), 'good');
  });

  test('truncation errors match the stream reader for the same bytes', async () => {
    const { batch, service } = setup();
    // Three chunks of 4096: cut exactly after chunk 1, and 5 bytes past it.
    const [result] = await batch.encrypt([{ keyAlias: 'a', plaintext: randomBytes(3 * 4096), context: {} }]);
    const ciphertext = ok(result).ciphertext;
    const headerLength = parseHeader(ciphertext)!.length;
    for (const cut of [
      headerLength,
      headerLength + 2 * 4112,
      headerLength + 2 * 4112 + 5,
      headerLength + 10,
    ]) {
      const [batchResult] = await batch.decrypt([
        { ciphertext: ciphertext.subarray(0, cut), expectedContext: {} },
      ]);
      const unary = await service.decrypt(ciphertext.subarray(0, cut), {}).then(
        () => assert.fail('must fail'),
        (e: SealboxError) => e,
      );
      assert.equal(failed(batchResult, unary.code as ErrorCode), unary.message, `cut at ${cut}`);
    }
  });

  test('access: a forbidden key fails its items only, asked once per alias or key id', async () => {
    const { batch } = setup();
    let asked = 0;
    const access: KeyAccess = {
      checkAlias(_op, alias) {
        asked++;
        if (alias === 'b') throw new SealboxError(ErrorCode.ACCESS_DENIED, 'may not use b');
      },
      checkKeyId(_op, keyId) {
        asked++;
        if (keyId.includes('/b/') || keyId.startsWith('fake:b'))
          throw new SealboxError(ErrorCode.ACCESS_DENIED, 'may not use b');
      },
    };
    const items = Array.from({ length: 10 }, (_, i) => ({
      keyAlias: i % 2 ? 'b' : 'a',
      plaintext: Buffer.from([i]),
      context: {},
    }));
    const results = await batch.encrypt(items, undefined, access);
    for (const [i, r] of results.entries()) {
      if (i % 2) failed(r, ErrorCode.ACCESS_DENIED);
      else ok(r);
    }
    assert.equal(asked, 2, 'one verdict per alias');
    const underB = ok(
      (await batch.encrypt([{ keyAlias: 'b', plaintext: Buffer.from('b'), context: {} }]))[0],
    ).ciphertext;
    const underA = ok(results[0]).ciphertext;
    asked = 0;
    const opened = await batch.decrypt(
      [underA, underB, underA, underB].map((ciphertext) => ({ ciphertext, expectedContext: {} })),
      undefined,
      access,
    );
    ok(opened[0]);
    failed(opened[1], ErrorCode.ACCESS_DENIED);
    ok(opened[2]);
    failed(opened[3], ErrorCode.ACCESS_DENIED);
    assert.equal(asked, 2, 'one verdict per key id');
  });

  test('a disabled key fails its items; an unavailable vault fails the whole call naming the item', async () => {
    const { b, batch } = setup();
    b.fail = new SealboxError(ErrorCode.KEY_DISABLED, 'b is disabled', {
      keyId: b.keyId,
      verdict: 'disabled',
    });
    const results = await batch.encrypt([
      { keyAlias: 'a', plaintext: Buffer.from('1'), context: {} },
      { keyAlias: 'b', plaintext: Buffer.from('2'), context: {} },
    ]);
    ok(results[0]);
    failed(results[1], ErrorCode.KEY_DISABLED);
    // A fresh cache: the wrap must reach the vault, which is down.
    const cold = setup();
    cold.a.fail = new SealboxError(ErrorCode.VAULT_UNAVAILABLE, 'vault down');
    const err = await rejects(
      cold.batch.encrypt([
        { keyAlias: '', plaintext: Buffer.from('bad'), context: {} },
        { keyAlias: 'a', plaintext: Buffer.from('x'), context: {} },
      ]),
      ErrorCode.VAULT_UNAVAILABLE,
    );
    assert.match(err.message, /^EncryptBatch item 1: vault down/);
  });

  test('a DEK message budget splits a batch into runs under several DEKs, each item still decrypting', async () => {
    const { a, batch } = setup({}, { maxMessages: 7 });
    const items = Array.from({ length: 30 }, (_, i) => ({
      keyAlias: 'a',
      plaintext: Buffer.from(`r${i}`),
      context: {},
    }));
    const sealed = await batch.encrypt(items);
    const deks = new Set(sealed.map((r) => parseHeader(ok(r).ciphertext)!.wrappedDek.toString('hex')));
    assert.equal(deks.size, Math.ceil(30 / 7), 'at most maxMessages messages per DEK');
    assert.equal(a.wraps, deks.size);
    const opened = await batch.decrypt(
      sealed.map((r) => ({ ciphertext: ok(r).ciphertext, expectedContext: {} })),
    );
    assert.deepEqual(
      opened.map((r) => ok(r).plaintext.toString()),
      items.map((i) => i.plaintext.toString()),
    );
    assert.equal(a.unwraps, deks.size, 'one unwrap per DEK');
  });

  test('without the cache: one wrap per item, as unary Encrypt', async () => {
    const { a, batch } = setup({}, { cached: false });
    const sealed = await batch.encrypt(
      Array.from({ length: 5 }, () => ({ keyAlias: 'a', plaintext: Buffer.from('x'), context: {} })),
    );
    assert.equal(a.wraps, 5);
    const opened = await batch.decrypt(
      sealed.map((r) => ({ ciphertext: ok(r).ciphertext, expectedContext: {} })),
    );
    assert.equal(opened.filter((r) => !isItemFailure(r)).length, 5);
    assert.equal(a.unwraps, 5);
  });

  test("each item sealed or opened inline counts as one of the pool's completed batches, as a unary message does", async () => {
    const { batch, service, pool } = setup();
    const completed = () => pool.stats.completed;
    await service.encrypt('a', Buffer.from('one segment'), {});
    assert.equal(completed(), 1, 'a unary message of one segment');
    // More than one slice, items of one and two chunks (4 KiB chunks), the first one empty.
    const items = Array.from({ length: SLICE_ITEMS + 5 }, (_, i) => ({
      keyAlias: 'a',
      plaintext: randomBytes(i * 100),
      context: {},
    }));
    const sealed = await batch.encrypt([
      ...items,
      { keyAlias: 'nope', plaintext: Buffer.from('x'), context: {} },
    ]);
    failed(sealed[items.length], ErrorCode.KEY_NOT_FOUND);
    assert.equal(
      completed(),
      1 + items.length,
      'one per item sealed; none for an item refused before sealing',
    );

    const ciphertexts = sealed.slice(0, items.length).map((r) => ok(r).ciphertext);
    const flipped = Buffer.from(ciphertexts[1]!);
    flipped[flipped.length - 1]! ^= 1;
    const opened = await batch.decrypt([
      ...ciphertexts.map((ciphertext) => ({ ciphertext, expectedContext: {} })),
      { ciphertext: flipped, expectedContext: {} },
      { ciphertext: Buffer.from('not a sealbox ciphertext'), expectedContext: {} },
    ]);
    failed(opened[items.length], ErrorCode.CIPHERTEXT_CORRUPT);
    failed(opened[items.length + 1], ErrorCode.CIPHERTEXT_MALFORMED);
    assert.equal(
      completed(),
      1 + 2 * items.length + 1,
      'one per item opened, one that failed authentication included (as on a worker); none for bytes that are no ciphertext',
    );
  });

  test('cancellation stops the batch between slices', async () => {
    const { batch } = setup();
    const abort = new AbortController();
    const items = Array.from({ length: SLICE_ITEMS * 3 }, () => ({
      keyAlias: 'a',
      plaintext: Buffer.from('x'),
      context: {},
    }));
    const running = batch.encrypt(items, abort.signal);
    abort.abort(new SealboxError(ErrorCode.CANCELLED, 'call cancelled'));
    await rejects(running, ErrorCode.CANCELLED);
  });
});
