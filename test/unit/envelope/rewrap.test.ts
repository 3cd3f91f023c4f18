/**
 * Rewrap against a working fake KEK with versions (real AES key wrap; rotate, disable, count, hold):
 * the order of checks, what is and is not wrapped, header-only input, sharing within a session,
 * zeroization, and the EnvelopeService entry point. The gRPC side is test/integration/rewrap.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { CachedDataKeys } from '../../../src/cache/cached-data-keys';
import { type DataKeySource, UncachedDataKeys } from '../../../src/cache/data-keys';
import { MESSAGE_ID_BYTES, parseHeader } from '../../../src/crypto/format';
import { zeroMessageKeys } from '../../../src/crypto/kdf';
import { aesKeyUnwrap, aesKeyWrap } from '../../../src/crypto/keywrap';
import { openMessage, sealMessage } from '../../../src/crypto/message';
import {
  isItemError,
  MAX_SHARED_DEKS,
  REWRAP_PREFIX_BYTES,
  type RewrapRequestFields,
  RewrapSession,
  readRewrapRequest,
} from '../../../src/envelope/rewrap';
import { EnvelopeService } from '../../../src/envelope/service';
import { ErrorCode, SealboxError } from '../../../src/errors';
import type { KekProvider, KeyStatus, WrapResult } from '../../../src/kek/provider';
import { KekRegistry } from '../../../src/kek/registry';
import { ChunkPool } from '../../../src/pool/pool';

const CHUNK = 4096;
const CONTEXT = { tenant: 'acme', purpose: 'rewrap' };

/** A fake KEK with versions that really wraps (AES-KW), counts calls, and can hold them open. */
class VersionedKek implements KekProvider {
  readonly kind = 'fake';
  get keyRef(): string {
    return `fake:${this.name}`;
  }
  private readonly versions = new Map<string, { key: Buffer; enabled: boolean }>();
  current = '';
  wraps = 0;
  unwraps = 0;
  statuses = 0;
  /** Every DEK buffer handed out by unwrap (the caller owns and must zero it). */
  readonly handedOut: Buffer[] = [];
  /** When set, unwrap waits for it. */
  gate: Promise<void> | undefined;
  /** When set, the next unwrap throws it. */
  failNext: Error | undefined;

  constructor(private readonly name: string) {
    this.rotate();
  }

  /** Adds a new version and makes it current; returns its key id. */
  rotate(): string {
    const id = `fake:${this.name}/${this.versions.size + 1}`;
    this.versions.set(id, { key: randomBytes(32), enabled: true });
    this.current = id;
    return id;
  }

  disable(keyId: string): void {
    this.versions.get(keyId)!.enabled = false;
  }

  owns(keyId: string): boolean {
    return keyId.startsWith(`fake:${this.name}/`);
  }
  async refreshCurrentVersion() {
    return this.status(this.current);
  }

  async wrap(dek: Uint8Array): Promise<WrapResult> {
    this.wraps++;
    const version = this.usable(this.current);
    return { keyId: this.current, algorithm: 'A256KW', wrapped: aesKeyWrap(version.key, dek) };
  }

  async unwrap(keyId: string, algorithm: string, wrapped: Uint8Array): Promise<Buffer> {
    this.unwraps++;
    if (this.gate) await this.gate;
    const failure = this.failNext;
    this.failNext = undefined;
    if (failure) throw failure;
    const version = this.usable(keyId);
    if (algorithm !== 'A256KW') throw new SealboxError(ErrorCode.CIPHERTEXT_MALFORMED, 'wrong algorithm');
    const dek = aesKeyUnwrap(version.key, wrapped);
    if (!dek)
      throw new SealboxError(ErrorCode.CIPHERTEXT_CORRUPT, `wrapped DEK fails to unwrap under ${keyId}`);
    this.handedOut.push(dek);
    return dek;
  }

  async status(keyId: string): Promise<KeyStatus> {
    this.statuses++;
    const version = this.versions.get(keyId);
    if (!version)
      throw new SealboxError(ErrorCode.KEY_NOT_FOUND, `no version ${keyId}`, { keyId, verdict: 'not-found' });
    return { keyId, enabled: version.enabled, latestKeyId: this.current };
  }

  async close(): Promise<void> {}

  calls(): { wraps: number; unwraps: number } {
    return { wraps: this.wraps, unwraps: this.unwraps };
  }

  private usable(keyId: string) {
    const version = this.versions.get(keyId);
    if (!version)
      throw new SealboxError(ErrorCode.KEY_NOT_FOUND, `no version ${keyId}`, { keyId, verdict: 'not-found' });
    // As the Azure provider reports it (kek/azure/verdicts.ts): about this version, which is disabled.
    if (!version.enabled)
      throw new SealboxError(ErrorCode.KEY_DISABLED, `${keyId} is disabled`, { keyId, verdict: 'disabled' });
    return version;
  }
}

function setup() {
  const a = new VersionedKek('a');
  const b = new VersionedKek('b');
  const registry = new KekRegistry(
    new Map<string, KekProvider>([
      ['a', a],
      ['b', b],
    ]),
  );
  const dataKeys = new UncachedDataKeys(registry);
  /** Seals `plaintext` under `kek`'s current version with a fresh DEK, or with `dek` when given. */
  async function seal(kek: VersionedKek, plaintext: Buffer, dek: Buffer = randomBytes(32)) {
    const w = await kek.wrap(dek);
    return sealMessage(plaintext, {
      dek,
      wrapped: { keyId: w.keyId, wrapAlgorithm: w.algorithm, wrappedDek: w.wrapped },
      context: CONTEXT,
      chunkSize: CHUNK,
    });
  }
  /** Opens a ciphertext through the registry, as the decrypt path would. */
  async function open(ciphertext: Buffer) {
    const header = parseHeader(ciphertext)!;
    const dek = await registry
      .forKeyId(header.keyId)
      .unwrap(header.keyId, header.wrapAlgorithm, header.wrappedDek);
    return openMessage(ciphertext, () => dek, CONTEXT);
  }
  function session() {
    return new RewrapSession(registry, dataKeys);
  }
  async function rewrap(bytes: Buffer, fields: Partial<RewrapRequestFields> = {}) {
    const s = session();
    try {
      return await s.rewrap(
        readRewrapRequest({ headerOrCiphertext: bytes, keyAlias: '', expectedContext: {}, ...fields }),
      );
    } finally {
      s.dispose();
    }
  }
  return { a, b, registry, dataKeys, seal, open, session, rewrap };
}

async function rejectsWith(promise: Promise<unknown>, code: ErrorCode): Promise<SealboxError> {
  const err = await promise.then(
    () => assert.fail(`expected ${code}`),
    (e: unknown) => e,
  );
  assert.ok(err instanceof SealboxError, `a SealboxError, not ${String(err)}`);
  assert.equal(err.code, code, err.message);
  return err;
}

describe('Rewrap', () => {
  test('an old-version header moves to the current version; the body bytes do not change', async () => {
    const { a, seal, open, rewrap } = setup();
    const plaintext = randomBytes(3 * CHUNK + 17);
    const old = await seal(a, plaintext);
    const oldHeader = parseHeader(old)!;
    const v2 = a.rotate();
    a.wraps = 0;

    const result = await rewrap(old);
    assert.equal(result.changed, true);
    assert.equal(result.previousKeyId, oldHeader.keyId);
    assert.equal(result.keyId, v2);
    assert.equal(result.headerLengthBefore, oldHeader.length);
    assert.deepEqual(a.calls(), { wraps: 1, unwraps: 1 });

    const rewrapped = Buffer.concat([result.header, old.subarray(result.headerLengthBefore)]);
    const newHeader = parseHeader(rewrapped)!;
    assert.equal(newHeader.length, result.header.length);
    assert.ok(rewrapped.subarray(newHeader.length).equals(old.subarray(oldHeader.length)), 'same body');
    assert.equal(newHeader.keyId, v2);
    assert.ok(newHeader.messageId.equals(oldHeader.messageId));
    assert.ok(newHeader.commitment.equals(oldHeader.commitment));
    assert.deepEqual(newHeader.context, oldHeader.context);
    assert.equal(newHeader.chunkSize, oldHeader.chunkSize);
    assert.ok((await open(rewrapped)).plaintext.equals(plaintext));
    assert.ok((await open(old)).plaintext.equals(plaintext), 'the old ciphertext still opens');
  });

  test('header-only input gives a header as good as the whole ciphertext', async () => {
    const { a, seal, open, rewrap } = setup();
    const plaintext = randomBytes(5 * CHUNK);
    const old = await seal(a, plaintext);
    const length = parseHeader(old)!.length;
    a.rotate();
    for (const prefix of [length, length + 1, REWRAP_PREFIX_BYTES, old.length]) {
      const result = await rewrap(old.subarray(0, prefix));
      assert.equal(result.changed, true);
      assert.equal(result.headerLengthBefore, length);
      const rewrapped = Buffer.concat([result.header, old.subarray(result.headerLengthBefore)]);
      assert.ok((await open(rewrapped)).plaintext.equals(plaintext), `prefix ${prefix}`);
    }
    await rejectsWith(rewrap(old.subarray(0, length - 1)), ErrorCode.CIPHERTEXT_TRUNCATED);
  });

  test('a header already under the current version comes back as it was, verified, with no wrap', async () => {
    const { a, seal, rewrap } = setup();
    const ct = await seal(a, Buffer.from('current'));
    const header = parseHeader(ct)!;
    a.wraps = 0;
    const result = await rewrap(ct);
    assert.equal(result.changed, false);
    assert.ok(result.header.equals(ct.subarray(0, header.length)));
    assert.equal(result.keyId, header.keyId);
    assert.equal(result.previousKeyId, header.keyId);
    assert.equal(result.headerLengthBefore, header.length);
    assert.deepEqual(a.calls(), { wraps: 0, unwraps: 1 }, 'verified through the data keys, not wrapped');
  });

  describe('a modified header fails CIPHERTEXT_CORRUPT before anything is wrapped', () => {
    // Offsets into the header; fields of fixed position (format.ts).
    const edits: Array<[string, (length: number, contextLength: number) => number]> = [
      ['message id', () => 6],
      ['chunk size', () => 40],
      ['context', () => 50],
      ['commitment', (_l, lc) => 44 + lc + 5],
      ['header tag', (l) => l - 1],
    ];
    for (const rotated of [true, false]) {
      for (const [field, offset] of edits) {
        test(`${field}, header ${rotated ? 'under an old' : 'under the current'} version`, async () => {
          const { a, seal, rewrap } = setup();
          const ct = await seal(a, Buffer.from('x'));
          const header = parseHeader(ct)!;
          if (rotated) a.rotate();
          const tampered = Buffer.from(ct);
          tampered[offset(header.length, header.authenticated.readUInt16BE(42))]! ^= 0x01;
          a.wraps = 0;
          await rejectsWith(rewrap(tampered), ErrorCode.CIPHERTEXT_CORRUPT);
          assert.equal(a.wraps, 0, 'nothing wrapped');
        });
      }
    }
  });

  test('the expected context is checked before wrapping', async () => {
    const { a, seal, rewrap } = setup();
    const ct = await seal(a, Buffer.from('x'));
    a.rotate();
    a.wraps = 0;
    await rejectsWith(rewrap(ct, { expectedContext: { tenant: 'other' } }), ErrorCode.CONTEXT_MISMATCH);
    await rejectsWith(rewrap(ct, { expectedContext: { missing: 'x' } }), ErrorCode.CONTEXT_MISMATCH);
    assert.equal(a.wraps, 0);
    assert.equal((await rewrap(ct, { expectedContext: { tenant: 'acme' } })).changed, true);
    assert.equal(a.wraps, 1);
  });

  test('input that is not a header fails without any vault call', async () => {
    const { a, seal, rewrap } = setup();
    const ct = await seal(a, Buffer.from('x'));
    a.rotate();
    a.wraps = 0;
    const cases: Array<[string, Buffer, ErrorCode]> = [
      ['empty', Buffer.alloc(0), ErrorCode.INVALID_ARGUMENT],
      ['not sealbox', Buffer.from('PK\x03\x04 not a ciphertext'), ErrorCode.CIPHERTEXT_MALFORMED],
      ['inside the header', ct.subarray(0, 60), ErrorCode.CIPHERTEXT_TRUNCATED],
      [
        'bad version',
        Buffer.concat([Buffer.from('SBX\x02'), ct.subarray(4)]),
        ErrorCode.CIPHERTEXT_MALFORMED,
      ],
    ];
    for (const [name, bytes, code] of cases) {
      await rejectsWith(rewrap(bytes), code).catch((err) => assert.fail(`${name}: ${err}`));
    }
    assert.deepEqual(a.calls(), { wraps: 0, unwraps: 0 });
  });

  test('key_alias moves a ciphertext to another configured key; an unknown alias is KEY_NOT_FOUND', async () => {
    const { a, b, seal, open, rewrap } = setup();
    const plaintext = Buffer.from('move me');
    const ct = await seal(a, plaintext);
    const result = await rewrap(ct, { keyAlias: 'b' });
    assert.equal(result.changed, true, 'a header under another key is never current for the target');
    assert.equal(result.keyId, b.current);
    assert.equal(a.wraps, 1, 'only the seal wrapped under a');
    assert.equal(b.wraps, 1);
    const moved = Buffer.concat([result.header, ct.subarray(result.headerLengthBefore)]);
    assert.ok((await open(moved)).plaintext.equals(plaintext));
    await rejectsWith(rewrap(ct, { keyAlias: 'nope' }), ErrorCode.KEY_NOT_FOUND);
  });

  test('a disabled old version fails KEY_DISABLED, which RewrapStream reports per item', async () => {
    const { a, seal, rewrap } = setup();
    const ct = await seal(a, Buffer.from('x'));
    const v1 = parseHeader(ct)!.keyId;
    a.rotate();
    a.disable(v1);
    const err = await rejectsWith(rewrap(ct), ErrorCode.KEY_DISABLED);
    assert.equal(isItemError(err), true);
  });

  test('a key version the DataKeySource has revoked is refused before the vault is asked', async () => {
    const { a, registry, dataKeys, seal } = setup();
    const ct = await seal(a, Buffer.from('x'));
    const v1 = parseHeader(ct)!.keyId;
    a.rotate();
    a.wraps = 0;
    const revoking: DataKeySource = {
      forEncrypt: (...args) => dataKeys.forEncrypt(...args),
      forDecrypt: (...args) => dataKeys.forDecrypt(...args),
      check(keyId) {
        if (keyId === v1) throw new SealboxError(ErrorCode.KEY_DISABLED, `${keyId} is revoked`);
      },
    };
    const s = new RewrapSession(registry, revoking);
    try {
      const item = readRewrapRequest({ headerOrCiphertext: ct, keyAlias: '', expectedContext: {} });
      await rejectsWith(s.rewrap(item), ErrorCode.KEY_DISABLED);
      assert.deepEqual(a.calls(), { wraps: 0, unwraps: 0 });
    } finally {
      s.dispose();
    }
  });

  test('isItemError: item faults continue a stream, service faults end it', () => {
    const item = [
      'INVALID_ARGUMENT',
      'CONTEXT_INVALID',
      'CONTEXT_MISMATCH',
      'CIPHERTEXT_MALFORMED',
      'CIPHERTEXT_CORRUPT',
      'CIPHERTEXT_TRUNCATED',
      'KEY_NOT_FOUND',
      'KEY_DISABLED',
      'PERMISSION_DENIED',
      'ACCESS_DENIED',
    ];
    for (const code of Object.values(ErrorCode)) {
      assert.equal(isItemError(new SealboxError(code, 'x')), item.includes(code), code);
    }
    assert.equal(isItemError(new Error('boom')), false);
  });
});

describe('RewrapSession', () => {
  test('headers sharing one wrapped DEK share one unwrap, one wrap and one status look-up', async () => {
    const { a, seal, open, session } = setup();
    const dek = randomBytes(32);
    const plaintexts = Array.from({ length: 20 }, (_, i) => randomBytes(100 + i));
    const sealed = [];
    for (const p of plaintexts) sealed.push(await seal(a, p, dek)); // as the DEK cache does: one DEK
    const other = await seal(a, Buffer.from('own DEK'));
    a.rotate();
    a.wraps = 0;
    a.unwraps = 0;
    a.statuses = 0;
    const s = session();
    try {
      const results = await Promise.all(
        [...sealed, other].map((ct) =>
          s.rewrap(readRewrapRequest({ headerOrCiphertext: ct, keyAlias: '', expectedContext: {} })),
        ),
      );
      assert.deepEqual(a.calls(), { wraps: 2, unwraps: 2 }, 'one per distinct DEK');
      assert.equal(a.statuses, 1, 'one key version asked about once');
      for (const [i, r] of results.slice(0, 20).entries()) {
        const ct = sealed[i]!;
        const rewrapped = Buffer.concat([r.header, ct.subarray(r.headerLengthBefore)]);
        assert.ok((await open(rewrapped)).plaintext.equals(plaintexts[i]!));
      }
      const wrappedDeks = new Set(
        results.slice(0, 20).map((r) => parseHeader(r.header)!.wrappedDek.toString('hex')),
      );
      assert.equal(wrappedDeks.size, 1, 'the shared DEK was wrapped once');
    } finally {
      s.dispose();
    }
  });

  test('a tampered header sharing a DEK with good ones fails alone', async () => {
    const { a, seal, session } = setup();
    const dek = randomBytes(32);
    const good = await seal(a, Buffer.from('good'), dek);
    const bad = Buffer.from(await seal(a, Buffer.from('bad'), dek));
    bad[10]! ^= 0x80; // message id
    a.rotate();
    const s = session();
    try {
      const item = (ct: Buffer) =>
        readRewrapRequest({ headerOrCiphertext: ct, keyAlias: '', expectedContext: {} });
      const [r1, r2] = await Promise.allSettled([s.rewrap(item(bad)), s.rewrap(item(good))]);
      assert.equal(r1.status, 'rejected');
      assert.equal((r1 as PromiseRejectedResult).reason.code, ErrorCode.CIPHERTEXT_CORRUPT);
      assert.equal(r2.status, 'fulfilled');
    } finally {
      s.dispose();
    }
  });

  test('dispose zeroes every DEK it holds, including one that arrives after it', async () => {
    const { a, seal, session } = setup();
    const cts = [await seal(a, Buffer.from('1')), await seal(a, Buffer.from('2'))];
    a.rotate();
    const s = session();
    const item = (ct: Buffer) =>
      readRewrapRequest({ headerOrCiphertext: ct, keyAlias: '', expectedContext: {} });
    await s.rewrap(item(cts[0]!));
    let open!: () => void;
    a.gate = new Promise((resolve) => {
      open = resolve;
    });
    const late = s.rewrap(item(cts[1]!));
    await sleep(5);
    s.dispose();
    open();
    await rejectsWith(late, ErrorCode.CANCELLED);
    assert.equal(a.handedOut.length, 2);
    for (const dek of a.handedOut)
      assert.ok(
        dek.every((b) => b === 0),
        'zeroed',
      );
    await rejectsWith(s.rewrap(item(cts[0]!)), ErrorCode.CANCELLED);
  });

  test(`beyond ${MAX_SHARED_DEKS} distinct DEKs, items are handled alone and their DEKs zeroed at once`, async () => {
    const { a, seal, session } = setup();
    const cts = [];
    for (let i = 0; i < MAX_SHARED_DEKS + 3; i++) cts.push(await seal(a, Buffer.from([i & 0xff])));
    a.rotate();
    const s = session();
    try {
      for (const ct of cts) {
        await s.rewrap(readRewrapRequest({ headerOrCiphertext: ct, keyAlias: '', expectedContext: {} }));
      }
      const zeroed = a.handedOut.filter((dek) => dek.every((b) => b === 0)).length;
      assert.equal(zeroed, 3, 'the unshared ones');
    } finally {
      s.dispose();
    }
    assert.ok(a.handedOut.every((dek) => dek.every((b) => b === 0)));
  });
});

describe('Rewrap feeds the key-state model (its vault calls bypass the DEK cache)', () => {
  /** setup() with the real DEK cache, a v1 message, and v1's DEK in the cache. */
  async function cachedV1() {
    const { a, registry, seal } = setup();
    const cache = new CachedDataKeys(registry, {
      maxConcurrentVaultCalls: 4,
      encrypt: { maxAgeMs: 60_000, maxMessages: 1_000_000, maxBytes: 2 ** 36, refreshAhead: 0 },
      decrypt: { maxEntries: 100, ttlMs: 60_000 },
    });
    const ct = await seal(a, Buffer.from('x'));
    const header = parseHeader(ct)!;
    zeroMessageKeys(await cache.forDecrypt(header));
    const v1 = header.keyId;
    a.rotate();
    const rewrap = async () => {
      const s = new RewrapSession(registry, cache);
      try {
        return await s.rewrap(
          readRewrapRequest({ headerOrCiphertext: ct, keyAlias: '', expectedContext: {} }),
        );
      } finally {
        s.dispose();
      }
    };
    return { a, registry, cache, header, v1, rewrap };
  }

  test("the old version's attributes read as disabled revoke its cached DEKs at once", async () => {
    const { a, cache, header, v1, rewrap } = await cachedV1();
    a.disable(v1);
    // Nothing has told the cache yet: it still serves v1's DEK without asking the vault.
    zeroMessageKeys(await cache.forDecrypt(header));
    const before = { statuses: a.statuses, unwraps: a.unwraps };
    await rejectsWith(rewrap(), ErrorCode.KEY_DISABLED);
    assert.equal(cache.states.stateOf(v1), 'disabled');
    await rejectsWith(cache.forDecrypt(header), ErrorCode.KEY_DISABLED);
    // Rewrap read v1 once (is it current?), learned it is disabled, and never unwrapped.
    assert.deepEqual(
      { statuses: a.statuses, unwraps: a.unwraps },
      { ...before, statuses: before.statuses + 1 },
    );
  });

  test('an unwrap refused as disabled (after a read that found it enabled) revokes too', async () => {
    const { a, cache, header, v1, rewrap } = await cachedV1();
    a.failNext = new SealboxError(ErrorCode.KEY_DISABLED, `${v1} is disabled`, {
      keyId: v1,
      verdict: 'disabled',
    });
    await rejectsWith(rewrap(), ErrorCode.KEY_DISABLED);
    assert.equal(cache.states.stateOf(v1), 'disabled');
    await rejectsWith(cache.forDecrypt(header), ErrorCode.KEY_DISABLED);
  });

  test('a forged version costs one vault lookup: the 404 is remembered for the next Rewrap', async () => {
    const { a, cache, registry } = await cachedV1();
    const forged = sealMessage(Buffer.from('x'), {
      dek: randomBytes(32),
      wrapped: { keyId: 'fake:a/99', wrapAlgorithm: 'A256KW', wrappedDek: randomBytes(40) },
      context: CONTEXT,
      chunkSize: CHUNK,
    });
    const calls = () => ({ statuses: a.statuses, unwraps: a.unwraps, wraps: a.wraps });
    const before = calls();
    for (let i = 0; i < 3; i++) {
      const s = new RewrapSession(registry, cache);
      try {
        const item = readRewrapRequest({ headerOrCiphertext: forged, keyAlias: '', expectedContext: {} });
        await rejectsWith(s.rewrap(item), ErrorCode.KEY_NOT_FOUND);
      } finally {
        s.dispose();
      }
    }
    assert.deepEqual(calls(), { ...before, statuses: before.statuses + 1 });
    assert.equal(cache.states.sizes.unknown, 1);
  });

  test('an outage seen by Rewrap is recorded, and revokes nothing', async () => {
    const { a, cache, header, v1, rewrap } = await cachedV1();
    a.failNext = new SealboxError(ErrorCode.VAULT_UNAVAILABLE, 'the vault did not answer', { keyId: v1 });
    await rejectsWith(rewrap(), ErrorCode.VAULT_UNAVAILABLE);
    const view = cache.states.describe().find((v) => v.keyId === v1);
    assert.equal(view?.lastError, 'the vault did not answer');
    assert.equal(view?.state, 'enabled', 'as its attributes were read: the outage changed nothing');
    zeroMessageKeys(await cache.forDecrypt(header));
  });

  test('a successful rewrap vouches for the version it wrapped under', async () => {
    const { a, cache, rewrap } = await cachedV1();
    const tracked = () => cache.states.describe().find((v) => v.keyId === a.current);
    assert.equal(tracked(), undefined);
    const result = await rewrap();
    assert.equal(result.keyId, a.current);
    assert.ok(tracked()?.checkedAt, 'tracked, with the time of the vault call');
  });
});

describe('EnvelopeService.rewrap', () => {
  test('without the KEK registry Rewrap is unavailable; with it, it works', async () => {
    const { a, registry, dataKeys, seal } = setup();
    const pool = new ChunkPool({ mode: 'inline', maxQueue: 1, inlineBelowBytes: 0 });
    const options = { defaultChunkSize: CHUNK, unaryMaxBytes: 1 << 20, batchBytes: 1 << 16 };
    try {
      const without = new EnvelopeService(dataKeys, pool, options);
      assert.equal(without.canRewrap, false);
      const ct = await seal(a, Buffer.from('x'));
      await rejectsWith(
        without.rewrap({ headerOrCiphertext: ct, keyAlias: '', expectedContext: {} }),
        ErrorCode.INTERNAL,
      );
      const service = new EnvelopeService(dataKeys, pool, options, registry);
      assert.equal(service.canRewrap, true);
      a.rotate();
      const result = await service.rewrap({ headerOrCiphertext: ct, keyAlias: '', expectedContext: {} });
      assert.equal(result.changed, true);
      assert.equal(result.keyId, a.current);
      assert.equal(parseHeader(result.header)!.messageId.length, MESSAGE_ID_BYTES);
    } finally {
      await pool.close();
    }
  });
});
