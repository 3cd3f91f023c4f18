/**
 * EncryptBatch / DecryptBatch end to end: the bundled client → real grpc-js server on a real Unix
 * socket → sealbox → the Azure provider over HTTPS → the embedded dev vault (alias "pay") and a local
 * key file (alias "test", from the harness). Vault traffic is checked with the dev vault's own
 * counters. Per-item error logic is covered in test/unit/envelope/batch.test.ts; here: the wire, the
 * independence of each item's ciphertext (Decrypt, DecryptStream), per-item errors as the server
 * reports them, the limits, access policy, revocation, and cancellation.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { KeyClient } from '@azure/keyvault-keys';
import { type ServiceError, status } from '@grpc/grpc-js';
import {
  connectEnvelope,
  decrypt,
  decryptBatch,
  decryptStream,
  encrypt,
  encryptBatch,
  errorCode,
} from '../../src/client/client';
import { type ConfigInput, mergeConfigInput, validateConfig } from '../../src/config/config';
import { parseHeader } from '../../src/crypto/format';
import {
  type DevVault,
  devVaultClientOptions,
  sealboxKeyConfig,
  startDevVault,
  staticTokenCredential,
} from '../../src/devvault';
import type { DecryptBatchResult__Output } from '../../src/gen/sealbox/v1/DecryptBatchResult';
import type { EncryptBatchResult__Output } from '../../src/gen/sealbox/v1/EncryptBatchResult';
import { createLogger } from '../../src/log/logger';
import { startSealbox } from '../../src/main';
import { startTestSealbox, type TestSealbox } from '../helpers/harness';

const TOKEN = 'batch-tests';
let dir: string;
let vault: DevVault;
let keys: KeyClient;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'sealbox-batch-'));
  vault = await startDevVault({
    dataDir: join(dir, 'vault'),
    identities: {
      [TOKEN]: { name: 'sealbox', permissions: ['get', 'create', 'update', 'wrapKey', 'unwrapKey'] },
    },
  });
  keys = new KeyClient(vault.url, staticTokenCredential(TOKEN), devVaultClientOptions(vault));
  await keys.createRsaKey('batch-pay', { keySize: 2048 });
  await keys.createRsaKey('batch-rev', { keySize: 2048 });
});

after(async () => {
  await vault.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Alias "pay" (and "rev") on the dev vault, beside the harness's local alias "test". */
function config(extra: ConfigInput = {}): ConfigInput {
  return {
    revocation: { pollIntervalMs: 1000 },
    keys: {
      pay: sealboxKeyConfig(vault, 'batch-pay', TOKEN),
      rev: { ...sealboxKeyConfig(vault, 'batch-rev', TOKEN), retry: { maxAttempts: 1, timeoutMs: 2000 } },
    },
    ...extra,
  };
}

async function withSealbox(extra: ConfigInput, fn: (box: TestSealbox) => Promise<void>): Promise<void> {
  const box = await startTestSealbox(config(extra));
  try {
    await fn(box);
  } finally {
    await box.close();
  }
}

function sealed(result: EncryptBatchResult__Output | undefined): Buffer {
  assert.ok(result, 'a result');
  assert.equal(result.errorCode, '', `item failed: ${result.errorCode} ${result.errorMessage}`);
  assert.ok(result.ciphertext.length > 0);
  return result.ciphertext;
}

function opened(result: DecryptBatchResult__Output | undefined): Buffer {
  assert.ok(result, 'a result');
  assert.equal(result.errorCode, '', `item failed: ${result.errorCode} ${result.errorMessage}`);
  return result.plaintext;
}

function itemError(
  result: EncryptBatchResult__Output | DecryptBatchResult__Output | undefined,
  code: string,
  message?: RegExp,
): void {
  assert.ok(result, 'a result');
  assert.equal(result.errorCode, code, result.errorMessage);
  if (message) assert.match(result.errorMessage, message);
  assert.equal('ciphertext' in result ? result.ciphertext.length : result.plaintext.length, 0);
  assert.equal(result.keyId, '');
}

async function refused(call: Promise<unknown>): Promise<ServiceError> {
  return call.then(
    () => assert.fail('the call must fail'),
    (err: unknown) => err as ServiceError,
  );
}

describe('batch RPCs over the socket', { timeout: 120_000 }, () => {
  test('round trip under an Azure and a local key; every item decrypts alone; one vault call per key', async () => {
    await withSealbox({}, async (box) => {
      const records = Array.from({ length: 400 }, (_, i) => ({
        keyAlias: i % 4 === 0 ? 'test' : 'pay',
        plaintext: randomBytes(i % 2 ? 100 : 1024),
        context: { table: 'users', row: String(i) },
      }));
      vault.resetCounters();
      const results = await encryptBatch(box.client, records);
      assert.equal(results.length, records.length);
      const ciphertexts = results.map(sealed);
      assert.equal(
        vault.counters()['wrapKey'] ?? 0,
        1,
        `one wrap for 300 items: ${JSON.stringify(vault.counters())}`,
      );
      for (const [i, ciphertext] of ciphertexts.entries()) {
        const header = parseHeader(ciphertext)!;
        assert.deepEqual(header.context, records[i]!.context);
        assert.equal(results[i]!.keyId, header.keyId);
        assert.match(header.keyId, records[i]!.keyAlias === 'pay' ? /batch-pay/ : /^local:/);
      }
      assert.equal(new Set(ciphertexts.map((c) => parseHeader(c)!.messageId.toString('hex'))).size, 400);

      // Each item alone: unary Decrypt and DecryptStream (split anywhere).
      for (const i of [0, 1, 2, 199, 399]) {
        const one = await decrypt(box.client, ciphertexts[i]!, { row: String(i) });
        assert.deepEqual(one.plaintext, records[i]!.plaintext);
        const c = ciphertexts[i]!;
        const streamed = await decryptStream(
          box.client,
          [c.subarray(0, 7), c.subarray(7, 300), c.subarray(300)],
          {
            row: String(i),
          },
        );
        assert.deepEqual(streamed.data, records[i]!.plaintext);
      }
      // And a unary ciphertext decrypts in a batch.
      const unary = await encrypt(box.client, 'pay', Buffer.from('unary'), { row: 'u' });

      // A fresh cache: the whole DecryptBatch costs one unwrap under the Azure key.
      box.sealbox.flushCache();
      vault.resetCounters();
      const back = await decryptBatch(box.client, [
        ...ciphertexts.map((ciphertext, i) => ({ ciphertext, expectedContext: { row: String(i) } })),
        unary.ciphertext,
      ]);
      assert.deepEqual(
        back.slice(0, 400).map(opened),
        records.map((r) => r.plaintext),
      );
      assert.equal(opened(back[400]).toString(), 'unary');
      // The unary ciphertext came from the same cached encrypt DEK: still one unwrap.
      assert.equal(vault.counters()['unwrapKey'] ?? 0, 1, JSON.stringify(vault.counters()));
      assert.deepEqual(back[1]!.context, records[1]!.context);
      assert.equal(box.sealbox.stats().bytesInFlight, 0);
    });
  });

  test('per-item errors: bad context, corrupt and truncated items, unknown alias; the rest succeed', async () => {
    await withSealbox({}, async (box) => {
      const results = await encryptBatch(box.client, [
        { keyAlias: 'pay', plaintext: Buffer.from('one'), context: { t: '1' } },
        { keyAlias: 'nope', plaintext: Buffer.from('x') },
        { keyAlias: '', plaintext: Buffer.from('x') },
        { keyAlias: 'test', plaintext: Buffer.from('x'), context: { big: 'v'.repeat(9000) } },
        { keyAlias: 'test', plaintext: Buffer.from('two'), context: { t: '2' } },
      ]);
      const one = sealed(results[0]);
      itemError(results[1], 'KEY_NOT_FOUND', /nope.*(pay|test)/);
      itemError(results[2], 'INVALID_ARGUMENT', /key_alias is required/);
      itemError(results[3], 'CONTEXT_INVALID', /8192/);
      const two = sealed(results[4]);

      const flipped = Buffer.from(one);
      flipped[flipped.length - 3]! ^= 0x40;
      const back = await decryptBatch(box.client, [
        { ciphertext: one, expectedContext: { t: '1' } },
        { ciphertext: two, expectedContext: { t: '1' } },
        flipped,
        one.subarray(0, one.length - 17),
        Buffer.from('plain text, not sealed'),
        two,
      ]);
      assert.equal(opened(back[0]).toString(), 'one');
      itemError(back[1], 'CONTEXT_MISMATCH', /"t"/);
      itemError(back[2], 'CIPHERTEXT_CORRUPT', /chunk 0/);
      itemError(back[3], 'CIPHERTEXT_TRUNCATED', /ends after the header/);
      itemError(back[4], 'CIPHERTEXT_MALFORMED', /magic/);
      assert.equal(opened(back[5]).toString(), 'two');
    });
  });

  test('limits: too many items, too many bytes — RESOURCE_EXHAUSTED before any work', async () => {
    await withSealbox({ envelope: { batchMaxItems: 50, batchMaxBytes: 64 * 1024 } }, async (box) => {
      vault.resetCounters();
      const many = Array.from({ length: 51 }, () => ({ keyAlias: 'pay', plaintext: Buffer.from('x') }));
      const e1 = await refused(encryptBatch(box.client, many));
      assert.equal(e1.code, status.RESOURCE_EXHAUSTED);
      assert.equal(errorCode(e1), 'LIMIT_EXCEEDED');
      assert.match(e1.details, /51 items; at most 50 .*envelope\.batchMaxItems.*split the batch/);
      const big = [0, 1].map(() => ({ keyAlias: 'pay', plaintext: randomBytes(40 * 1024) }));
      const e2 = await refused(encryptBatch(box.client, big));
      assert.equal(e2.code, status.RESOURCE_EXHAUSTED);
      assert.match(e2.details, /81920 plaintext bytes.*at most 65536.*envelope\.batchMaxBytes/);
      const e3 = await refused(
        decryptBatch(
          box.client,
          Array.from({ length: 51 }, () => Buffer.from('x')),
        ),
      );
      assert.equal(errorCode(e3), 'LIMIT_EXCEEDED');
      assert.match(e3.details, /DecryptBatch has 51 items/);
      assert.equal(vault.counters()['wrapKey'] ?? 0, 0, 'no work was done');
      // At the limits exactly: served.
      const fits = await encryptBatch(
        box.client,
        Array.from({ length: 50 }, () => ({ keyAlias: 'test', plaintext: randomBytes(1024) })),
      );
      assert.equal(fits.map(sealed).length, 50);
      assert.deepEqual(
        (await decryptBatch(box.client, fits.map(sealed))).map((r) => opened(r).length),
        Array(50).fill(1024),
      );
    });
  });

  test('access policy: an item under a key the caller may not use gets ACCESS_DENIED, alone', async () => {
    await withSealbox(
      {
        access: {
          identities: {
            app: { peers: ['socket'], keys: ['test', 'rev'], operations: ['encrypt', 'decrypt'] },
          },
        },
      },
      async (box) => {
        vault.resetCounters();
        const results = await encryptBatch(box.client, [
          { keyAlias: 'test', plaintext: Buffer.from('allowed') },
          { keyAlias: 'pay', plaintext: Buffer.from('forbidden') },
          { keyAlias: 'test', plaintext: Buffer.from('allowed too') },
        ]);
        const allowed = sealed(results[0]);
        itemError(results[1], 'ACCESS_DENIED', /identity "app" may not encrypt with key alias "pay"/);
        sealed(results[2]);
        assert.equal(vault.counters()['wrapKey/batch-pay'] ?? 0, 0, 'no vault call for the forbidden key');
        // A ciphertext under "pay" (made by a caller that may) cannot be decrypted in the batch either.
        const other = await startTestSealbox(config());
        try {
          const underPay = await encrypt(other.client, 'pay', Buffer.from('not yours'));
          const back = await decryptBatch(box.client, [underPay.ciphertext, allowed]);
          itemError(back[0], 'ACCESS_DENIED', /may not decrypt/);
          assert.equal(opened(back[1]).toString(), 'allowed');
        } finally {
          await other.close();
        }
      },
    );
  });

  test('a revoked key fails its items only; the other keys serve', async () => {
    await withSealbox({}, async (box) => {
      const before = await encryptBatch(box.client, [
        { keyAlias: 'rev', plaintext: Buffer.from('under rev') },
        { keyAlias: 'pay', plaintext: Buffer.from('under pay') },
      ]);
      const underRev = sealed(before[0]);
      const underPay = sealed(before[1]);
      await keys.updateKeyProperties('batch-rev', { enabled: false });
      try {
        const deadline = Date.now() + 10_000;
        for (;;) {
          const [probe] = await decryptBatch(box.client, [underRev]);
          if (probe!.errorCode === 'KEY_DISABLED') break;
          assert.ok(Date.now() < deadline, `the key watcher revokes the version: ${JSON.stringify(probe)}`);
          await sleep(200);
        }
        const results = await encryptBatch(box.client, [
          { keyAlias: 'rev', plaintext: Buffer.from('x') },
          { keyAlias: 'pay', plaintext: Buffer.from('y') },
          { keyAlias: 'test', plaintext: Buffer.from('z') },
        ]);
        itemError(results[0], 'KEY_DISABLED', /batch-rev/);
        sealed(results[1]);
        sealed(results[2]);
        const back = await decryptBatch(box.client, [underRev, underPay]);
        itemError(back[0], 'KEY_DISABLED', /disabled/);
        assert.equal(opened(back[1]).toString(), 'under pay');
      } finally {
        await keys.updateKeyProperties('batch-rev', { enabled: true });
      }
    });
  });

  test('audit: the vault calls a batch causes name the caller as for Encrypt', async () => {
    const home = mkdtempSync(join(tmpdir(), 'sealbox-batch-audit-'));
    const lines: Array<Record<string, unknown>> = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line));
        done();
      },
    });
    const cfg = validateConfig(
      mergeConfigInput(
        {
          dataDir: home,
          listen: { socket: join(home, 's.sock') },
          pool: { threads: 1 },
          shutdown: { graceMs: 1000 },
        },
        config({ log: { level: 'info' } }) as Record<string, unknown>,
      ),
    );
    const sealbox = await startSealbox(cfg, createLogger('info', sink));
    const client = connectEnvelope(`unix:${join(home, 's.sock')}`);
    try {
      const [result] = await encryptBatch(client, [{ keyAlias: 'pay', plaintext: Buffer.from('audited') }]);
      sealbox.flushCache();
      opened((await decryptBatch(client, [sealed(result)]))[0]);
      await sleep(100); // pino writes asynchronously
      const audit = lines.filter((l) => l['audit'] === 'kek' && l['alias'] === 'pay');
      const by = (operation: string) => audit.find((l) => l['operation'] === operation);
      assert.equal(by('wrapKey')?.['caller'], 'EncryptBatch', JSON.stringify(audit));
      assert.equal(by('unwrapKey')?.['caller'], 'DecryptBatch', JSON.stringify(audit));
      for (const op of ['wrapKey', 'unwrapKey']) {
        assert.equal(by(op)?.['identity'], 'default');
        assert.match(String(by(op)?.['peer']), /./);
      }
    } finally {
      client.close();
      await sealbox.close();
      rmSync(home, { recursive: true, force: true });
    }
  });

  test('a cancelled batch releases its budget; the server goes on serving', async () => {
    await withSealbox({}, async (box) => {
      const records = Array.from({ length: 1000 }, () => ({
        keyAlias: 'test',
        plaintext: randomBytes(4000),
      }));
      for (const delayMs of [0, 2, 10, 30]) {
        const call = box.client.EncryptBatch(
          { items: records.map((r) => ({ ...r, context: {} })) },
          () => {},
        );
        const ended = new Promise<ServiceError | null>((resolve) => {
          call.on('status', (s: { code: number }) =>
            resolve(s.code === status.OK ? null : (s as ServiceError)),
          );
        });
        await sleep(delayMs);
        call.cancel();
        const outcome = await ended;
        assert.ok(outcome === null || outcome.code === status.CANCELLED, String(outcome?.details));
      }
      const deadline = Date.now() + 10_000;
      while (box.sealbox.stats().bytesInFlight > 0) {
        assert.ok(Date.now() < deadline, `budget released: ${box.sealbox.stats().bytesInFlight} bytes held`);
        await sleep(20);
      }
      const [after] = await encryptBatch(box.client, [{ keyAlias: 'pay', plaintext: Buffer.from('after') }]);
      sealed(after);
    });
  });
});
