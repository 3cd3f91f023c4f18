/**
 * EncryptBatch and DecryptBatch: many small records in one call, for field-level encryption of
 * database rows and the like (Vault transit's `batch_input` is the prior art).
 *
 * Every item is an ordinary, independent sealbox message (docs/FORMAT.md): its own random message id,
 * its own HKDF-derived keys, its own header with its own context, sealed at the default chunk size —
 * exactly what unary Encrypt produces, so each item decrypts alone through any API. What a batch
 * shares is everything around the crypto:
 *
 *   - one call: admission, budget, rate token and gRPC framing once, not once per record;
 *   - one DEK lookup per key alias (encrypt) or per wrapped DEK (decrypt) per slice of items, through
 *     DataKeySource.forEncryptMany / forDecryptMany (the DEK cache), so a batch under one alias costs
 *     at most one vault call, and usually none;
 *   - one random draw per slice for all its message ids, one encoding for runs of equal contexts, one
 *     access verdict per alias or key id;
 *   - small items are sealed and opened synchronously (ChunkPool.sealInline/openInline, counted in the
 *     pool's completed batches like any other), no promise per item; items too large to run inline go
 *     to the worker pool as a unary call's would.
 *
 * Items are processed in slices (at most SLICE_ITEMS items or about SLICE_BYTES bytes); between slices
 * the event loop runs other calls, and a cancelled call stops there.
 *
 * Errors: an item that fails for a reason of its own gets a result with its error code and message
 * (the same codes RewrapStream reports per item: envelope/rewrap.ts isItemError) and the others go on.
 * Anything else — vault unavailable or throttling, overload, cancellation, a bug — fails the whole
 * call, its message naming the item it hit. The limits (items, bytes) are checked before any work.
 */
import { randomBytes } from 'node:crypto';
import type { DataKeySource, EncryptKeyRun } from '../cache/data-keys';
import { CHUNK_OVERHEAD, type OpenResult } from '../crypto/chunk';
import {
  checkExpectedContext,
  type EncryptionContext,
  encodeContext,
  MAX_CONTEXT_BYTES,
} from '../crypto/context';
import {
  COMMITMENT_BYTES,
  HEADER_TAG_BYTES,
  type Header,
  type HeaderFields,
  headerLayout,
  MAX_KEY_ID_BYTES,
  MAX_WRAP_ALG_BYTES,
  MAX_WRAPPED_DEK_BYTES,
  MESSAGE_ID_BYTES,
  MIN_CHUNK_SIZE,
  parseHeader,
  verifyHeader,
  writeHeader,
} from '../crypto/format';
import { type MessageKeys, zeroMessageKeys } from '../crypto/kdf';
import { openFailure } from '../crypto/message';
import { ErrorCode, SealboxError } from '../errors';
import type { AuditCaller } from '../kek/audit';
import type { ChunkPool } from '../pool/pool';
import { type Cancellation, signalOf } from '../util/abort';
import { SlabAllocator } from '../util/slab';
import { ALLOW_ALL, type KeyAccess } from './access';
import { isItemError } from './rewrap';

export interface BatchOptions {
  /** Chunk size of every item's ciphertext (unary Encrypt uses the same). */
  readonly defaultChunkSize: number;
  /** Items per call at most. */
  readonly batchMaxItems: number;
  /** EncryptBatch: plaintext bytes per call at most; DecryptBatch: see decryptByteLimit. */
  readonly batchMaxBytes: number;
}

/** Items handled between two turns of the event loop at most. */
export const SLICE_ITEMS = 64;
/** A slice ends once its items hold this many bytes (at least one item per slice). */
export const SLICE_BYTES = 256 * 1024;
/**
 * Items' outputs (ciphertexts, plaintexts) are views of slabs of this size, one slab after another
 * per call (util/slab.ts); an item whose output is larger gets a buffer of its own.
 */
const OUTPUT_SLAB_BYTES = 64 * 1024;

/** The largest version 1 header (format.ts): what DecryptBatch allows per item beyond the plaintext. */
export const MAX_V1_HEADER_BYTES =
  44 +
  MAX_CONTEXT_BYTES +
  COMMITMENT_BYTES +
  2 +
  MAX_KEY_ID_BYTES +
  1 +
  MAX_WRAP_ALG_BYTES +
  2 +
  MAX_WRAPPED_DEK_BYTES +
  HEADER_TAG_BYTES;

export interface EncryptBatchItem {
  readonly keyAlias: string;
  readonly plaintext: Buffer;
  readonly context: EncryptionContext;
}

export interface DecryptBatchItem {
  readonly ciphertext: Buffer;
  readonly expectedContext: EncryptionContext;
}

/** An item that failed for a reason of its own (the wire's error fields). */
export interface ItemError {
  readonly errorCode: ErrorCode;
  readonly errorMessage: string;
}

export type EncryptBatchResult = { readonly ciphertext: Buffer; readonly keyId: string } | ItemError;
export type DecryptBatchResult =
  | { readonly plaintext: Buffer; readonly keyId: string; readonly context: EncryptionContext }
  | ItemError;

/** True when a result is an item's failure. */
export function isItemFailure(result: EncryptBatchResult | DecryptBatchResult): result is ItemError {
  return 'errorCode' in result;
}

/** Items of one slice that share a DEK lookup. */
interface Group {
  readonly indexes: number[];
}

export class BatchEnvelope {
  constructor(
    private readonly keys: DataKeySource,
    private readonly pool: ChunkPool,
    readonly options: BatchOptions,
  ) {}

  /**
   * Throws LIMIT_EXCEEDED when an EncryptBatch has too many items or plaintext bytes; returns the
   * plaintext bytes. The server asks this before admitting the call.
   */
  checkEncrypt(items: readonly { readonly plaintext?: Buffer }[]): number {
    this.checkCount('EncryptBatch', items.length);
    let bytes = 0;
    for (const item of items) bytes += item.plaintext?.length ?? 0;
    const limit = this.options.batchMaxBytes;
    if (bytes > limit) {
      throw new SealboxError(
        ErrorCode.LIMIT_EXCEEDED,
        `EncryptBatch items hold ${bytes} plaintext bytes in all; at most ${limit} are allowed per call ` +
          '(envelope.batchMaxBytes): split the batch, or send large records through Encrypt or EncryptStream',
      );
    }
    return bytes;
  }

  /** As checkEncrypt for a DecryptBatch (ciphertext bytes, limit decryptByteLimit). */
  checkDecrypt(items: readonly { readonly ciphertext?: Buffer }[]): number {
    this.checkCount('DecryptBatch', items.length);
    let bytes = 0;
    for (const item of items) bytes += item.ciphertext?.length ?? 0;
    const limit = this.decryptByteLimit(items.length);
    if (bytes > limit) {
      throw new SealboxError(
        ErrorCode.LIMIT_EXCEEDED,
        `DecryptBatch items hold ${bytes} ciphertext bytes in all; at most ${limit} are allowed for ` +
          `${items.length} items (envelope.batchMaxBytes plus each item's header and tags): split the batch, ` +
          'or send large ciphertexts through Decrypt or DecryptStream',
      );
    }
    return bytes;
  }

  /**
   * Ciphertext bytes a DecryptBatch of `items` items may carry: batchMaxBytes of plaintext plus the
   * largest possible header per item and a tag per chunk at the smallest chunk size, so whatever an
   * EncryptBatch answered always decrypts as one DecryptBatch.
   */
  decryptByteLimit(items: number): number {
    const max = this.options.batchMaxBytes;
    return (
      max + items * (MAX_V1_HEADER_BYTES + CHUNK_OVERHEAD) + Math.ceil(max / MIN_CHUNK_SIZE) * CHUNK_OVERHEAD
    );
  }

  /** Encrypts every item into its own ciphertext; one result per item, in order. */
  async encrypt(
    items: readonly EncryptBatchItem[],
    cancellation?: Cancellation,
    access: KeyAccess = ALLOW_ALL,
    caller?: AuditCaller,
  ): Promise<EncryptBatchResult[]> {
    this.checkEncrypt(items);
    // One AbortSignal per batch (not per item): slices check it between turns.
    const signal = signalOf(cancellation);
    const results = new Array<EncryptBatchResult>(items.length);
    const verdicts = new Map<string, SealboxError | null>();
    const chunkSize = this.options.defaultChunkSize;
    const outputs = new SlabAllocator(OUTPUT_SLAB_BYTES);
    for (let start = 0; start < items.length; ) {
      const end = sliceEnd(items, start, (item) => item.plaintext?.length ?? 0);
      // Shape, access and context, item by item; valid items grouped by alias.
      const groups = new Map<string, Group>();
      const contexts = new Array<Buffer>(end - start);
      let valid = 0;
      let lastContext: EncryptionContext | undefined;
      let lastEncoded: Buffer | undefined;
      for (let i = start; i < end; i++) {
        const item = items[i]!;
        try {
          const alias = item.keyAlias;
          if (typeof alias !== 'string' || alias.length === 0) {
            throw new SealboxError(
              ErrorCode.INVALID_ARGUMENT,
              'key_alias is required: name a configured key',
            );
          }
          if (!Buffer.isBuffer(item.plaintext)) {
            throw new SealboxError(ErrorCode.INVALID_ARGUMENT, 'plaintext must be bytes');
          }
          checkOnce(verdicts, alias, () => access.checkAlias('encrypt', alias));
          const context = item.context ?? {};
          // Rows of one table usually carry the same context: encode a run of equal ones once.
          if (!lastContext || !sameContext(context, lastContext)) {
            lastEncoded = encodeContext(context);
            lastContext = context;
          }
          contexts[i - start] = lastEncoded!;
          let group = groups.get(alias);
          if (!group) {
            group = { indexes: [] };
            groups.set(alias, group);
          }
          group.indexes.push(i);
          valid++;
        } catch (err) {
          results[i] = itemFailure('EncryptBatch', i, err);
        }
      }
      // One random draw for the slice's message ids.
      const ids = randomBytes(valid * MESSAGE_ID_BYTES);
      const messageIds = new Array<Buffer>(end - start);
      let at = 0;
      for (const group of groups.values()) {
        for (const i of group.indexes) {
          messageIds[i - start] = ids.subarray(at, at + MESSAGE_ID_BYTES);
          at += MESSAGE_ID_BYTES;
        }
      }
      // Key lookups for every alias at once (a cold key's vault call need not wait for another's).
      const lookups = [...groups].map(([alias, group]) => ({
        group,
        runs: settle(
          this.encryptKeys(
            alias,
            group.indexes.map((i) => messageIds[i - start]!),
            signal,
            caller,
          ),
        ),
      }));
      try {
        for (const lookup of lookups) {
          const outcome = await lookup.runs;
          if (!outcome.ok) {
            failGroup('EncryptBatch', results, lookup.group, outcome.error);
            continue;
          }
          let k = 0;
          for (const run of outcome.value) {
            let sealed = 0;
            for (let j = 0; j < run.keys.length; j++, k++) {
              const i = lookup.group.indexes[k]!;
              const keys = run.keys[j]!;
              const plaintext = items[i]!.plaintext;
              try {
                const sealing = this.seal(
                  keys,
                  {
                    messageId: messageIds[i - start]!,
                    chunkSize,
                    contextBytes: contexts[i - start]!,
                    ...run.wrapped,
                  },
                  plaintext,
                  run,
                  outputs,
                  signal,
                );
                // No promise per item unless the item went to a worker.
                const ciphertext = Buffer.isBuffer(sealing) ? sealing : await sealing;
                results[i] = { ciphertext, keyId: run.wrapped.keyId };
                sealed += plaintext.length;
              } catch (err) {
                results[i] = itemFailure('EncryptBatch', i, err);
              } finally {
                zeroMessageKeys(keys);
              }
            }
            run.account(sealed);
          }
        }
      } finally {
        // On a whole-call failure, keys of lookups not yet used are zeroed whenever they arrive.
        for (const lookup of lookups) {
          void lookup.runs.then((outcome) => {
            if (outcome.ok)
              for (const run of outcome.value) for (const keys of run.keys) zeroMessageKeys(keys);
          });
        }
      }
      start = end;
      if (start < items.length) await nextTurn(signal);
    }
    return results;
  }

  /** Decrypts every item on its own; one result per item, in order. */
  async decrypt(
    items: readonly DecryptBatchItem[],
    cancellation?: Cancellation,
    access: KeyAccess = ALLOW_ALL,
    caller?: AuditCaller,
  ): Promise<DecryptBatchResult[]> {
    this.checkDecrypt(items);
    const signal = signalOf(cancellation);
    const results = new Array<DecryptBatchResult>(items.length);
    const verdicts = new Map<string, SealboxError | null>();
    const outputs = new SlabAllocator(OUTPUT_SLAB_BYTES);
    for (let start = 0; start < items.length; ) {
      const end = sliceEnd(items, start, (item) => item.ciphertext?.length ?? 0);
      // Parse and check each header; group items by the DEK they need (key id, algorithm, wrapped DEK).
      const groups = new Map<string, Group>();
      const headers = new Array<Header>(end - start);
      // Items of one batch usually share a DEK, a key id and often a context: each header is parsed
      // with the one before it, so equal fields are compared, not decoded again (format.ts), and
      // an item with the same DEK as the one before it joins its group without a map lookup.
      let last: { header: Header; group: Group } | undefined;
      for (let i = start; i < end; i++) {
        try {
          const header = readHeader(items[i]!.ciphertext, last?.header);
          // Before the vault is asked: a caller must not cause unwraps under keys it is not granted.
          checkOnce(verdicts, header.keyId, () => access.checkKeyId('decrypt', header.keyId));
          headers[i - start] = header;
          let group = last && sameDek(header, last.header) ? last.group : undefined;
          if (!group) {
            const id = `${header.keyId}\n${header.wrapAlgorithm}\n${header.wrappedDek.toString('latin1')}`;
            group = groups.get(id);
            if (!group) {
              group = { indexes: [] };
              groups.set(id, group);
            }
          }
          group.indexes.push(i);
          last = { header, group };
        } catch (err) {
          results[i] = itemFailure('DecryptBatch', i, err);
        }
      }
      const lookups = [...groups.values()].map((group) => ({
        group,
        keys: settle(
          this.decryptKeys(
            group.indexes.map((i) => headers[i - start]!),
            signal,
            caller,
          ),
        ),
      }));
      try {
        for (const lookup of lookups) {
          const outcome = await lookup.keys;
          if (!outcome.ok) {
            failGroup('DecryptBatch', results, lookup.group, outcome.error);
            continue;
          }
          for (let k = 0; k < lookup.group.indexes.length; k++) {
            const i = lookup.group.indexes[k]!;
            const header = headers[i - start]!;
            const keys = outcome.value[k]!;
            try {
              verifyHeader(header, keys);
              checkExpectedContext(header.context, items[i]!.expectedContext ?? {});
              const opening = this.open(keys, header, items[i]!.ciphertext, outputs, signal);
              const plaintext = Buffer.isBuffer(opening) ? opening : await opening;
              results[i] = { plaintext, keyId: header.keyId, context: header.context };
            } catch (err) {
              results[i] = itemFailure('DecryptBatch', i, err);
            } finally {
              zeroMessageKeys(keys);
            }
          }
        }
      } finally {
        for (const lookup of lookups) {
          void lookup.keys.then((outcome) => {
            if (outcome.ok) for (const keys of outcome.value) zeroMessageKeys(keys);
          });
        }
      }
      start = end;
      if (start < items.length) await nextTurn(signal);
    }
    return results;
  }

  /** Keys for new messages under `alias`: one lookup through the cache, or (without it) one per message. */
  private async encryptKeys(
    alias: string,
    messageIds: readonly Uint8Array[],
    signal?: AbortSignal,
    caller?: AuditCaller,
  ): Promise<EncryptKeyRun[]> {
    if (this.keys.forEncryptMany) return this.keys.forEncryptMany(alias, messageIds, signal, caller);
    // cache.enabled: false — one DEK and one wrap per message, as for unary Encrypt.
    const each = await allOrZero(
      messageIds.map((id) => this.keys.forEncrypt(alias, id, signal, caller)),
      (k) => zeroMessageKeys(k.keys),
    );
    return each.map((k) => ({ wrapped: k.wrapped, keys: [k.keys], account: k.account }));
  }

  /** Keys for messages whose headers carry one wrapped DEK. */
  private async decryptKeys(
    headers: readonly Header[],
    signal?: AbortSignal,
    caller?: AuditCaller,
  ): Promise<MessageKeys[]> {
    if (this.keys.forDecryptMany) {
      return this.keys.forDecryptMany(
        headers[0]!,
        headers.map((h) => h.messageId),
        signal,
        caller,
      );
    }
    return allOrZero(
      headers.map((h) => this.keys.forDecrypt(h, signal, caller)),
      zeroMessageKeys,
    );
  }

  /**
   * One item's ciphertext: header ‖ chunks in one buffer, sealed synchronously into a view of the
   * call's slab with the header written into its headroom, or on a worker when the item is too large
   * to run inline.
   */
  private seal(
    keys: MessageKeys,
    fields: HeaderFields,
    plaintext: Buffer,
    run: EncryptKeyRun,
    outputs: SlabAllocator,
    signal?: AbortSignal,
  ): Buffer | Promise<Buffer> {
    // Checks the fields (RangeError) before any sealing.
    const layout = headerLayout(fields);
    const inline = this.pool.runsInline(plaintext.length);
    const batch = {
      key: keys.encryptionKey,
      messageId: fields.messageId,
      chunkSize: fields.chunkSize,
      firstIndex: 0,
      final: true,
      // A worker gets a buffer of its own to transfer.
      data: inline ? plaintext : Buffer.from(plaintext),
      headroom: layout.size,
      allocate: inline ? outputs.allocate : undefined,
    };
    if (inline) {
      const out = this.pool.sealInline(batch);
      writeHeader(fields, keys, out, layout);
      return out;
    }
    // Time passes on a worker, so the key version is checked again.
    this.keys.check?.(run.wrapped.keyId, 'encrypt');
    return this.pool.seal(batch, signal).then((out) => {
      writeHeader(fields, keys, out, layout);
      return out;
    });
  }

  /** One item's plaintext (synchronously when inline); never plaintext of a chunk that failed authentication. */
  private open(
    keys: MessageKeys,
    header: Header,
    ciphertext: Buffer,
    outputs: SlabAllocator,
    signal?: AbortSignal,
  ): Buffer | Promise<Buffer> {
    const body = ciphertext.subarray(header.length);
    const inline = this.pool.runsInline(body.length);
    const batch = {
      key: keys.encryptionKey,
      messageId: header.messageId,
      chunkSize: header.chunkSize,
      firstIndex: 0,
      final: true,
      // A worker gets a buffer of its own to transfer.
      data: inline ? body : Buffer.from(body),
      allocate: inline ? outputs.allocate : undefined,
    };
    if (inline) return opened(this.pool.openInline(batch));
    this.keys.check?.(header.keyId, 'decrypt');
    return this.pool.open(batch, signal).then(opened);
  }

  private checkCount(method: string, count: number): void {
    const limit = this.options.batchMaxItems;
    if (count > limit) {
      throw new SealboxError(
        ErrorCode.LIMIT_EXCEEDED,
        `${method} has ${count} items; at most ${limit} are allowed per call (envelope.batchMaxItems): ` +
          'split the batch',
      );
    }
  }
}

/** The plaintext of an opened item, or the error naming the chunk that failed. */
function opened(result: OpenResult): Buffer {
  if (result.ok) return result.plaintext;
  throw openFailure(result.failedIndex, result.truncated);
}

/**
 * Parses a whole ciphertext's header and checks that a body follows, with the same errors as the
 * stream reader (crypto/framing.ts CiphertextReader.finish) for the same bytes. The header's binary
 * fields are views of `ciphertext`: an item is a view of the call's request, which stays unchanged
 * until the call has answered (request buffers are reused only by streams: server/grpc-reassembly.ts).
 */
function readHeader(ciphertext: Buffer, previous: Header | undefined): Header {
  if (!Buffer.isBuffer(ciphertext))
    throw new SealboxError(ErrorCode.INVALID_ARGUMENT, 'ciphertext must be bytes');
  const header = parseHeader(ciphertext, { views: true, previous });
  if (!header) {
    throw new SealboxError(
      ErrorCode.CIPHERTEXT_TRUNCATED,
      ciphertext.length === 0
        ? 'ciphertext is empty; expected a sealbox header'
        : `ciphertext ends inside the header after ${ciphertext.length} bytes`,
    );
  }
  const body = ciphertext.length - header.length;
  const recordSize = header.chunkSize + CHUNK_OVERHEAD;
  const tail = body % recordSize;
  if (body < CHUNK_OVERHEAD) {
    throw new SealboxError(
      ErrorCode.CIPHERTEXT_TRUNCATED,
      'ciphertext ends after the header; the chunks are missing',
    );
  }
  if (body > recordSize && tail > 0 && tail < CHUNK_OVERHEAD) {
    throw new SealboxError(
      ErrorCode.CIPHERTEXT_TRUNCATED,
      `ciphertext is truncated after chunk ${Math.floor(body / recordSize) - 1}; the final chunk is missing or cut short`,
    );
  }
  return header;
}

/** Where the slice starting at `start` ends: SLICE_ITEMS items, or fewer once they hold SLICE_BYTES. */
function sliceEnd<T>(items: readonly T[], start: number, bytesOf: (item: T) => number): number {
  let end = start;
  let bytes = 0;
  while (end < items.length && end - start < SLICE_ITEMS && (end === start || bytes < SLICE_BYTES)) {
    bytes += bytesOf(items[end]!);
    end++;
  }
  return end;
}

/** Runs an access check once per alias or key id per call; later items get the same verdict. */
function checkOnce(verdicts: Map<string, SealboxError | null>, what: string, check: () => void): void {
  const known = verdicts.get(what);
  if (known === null) return;
  if (known) throw known;
  try {
    check();
    verdicts.set(what, null);
  } catch (err) {
    if (err instanceof SealboxError) verdicts.set(what, err);
    throw err;
  }
}

/** Both headers name the same wrapped DEK (so the same unwrap and cache entry). */
function sameDek(a: Header, b: Header): boolean {
  return a.keyId === b.keyId && a.wrapAlgorithm === b.wrapAlgorithm && a.wrappedDek.equals(b.wrappedDek);
}

/** Equal contexts (same pairs), without encoding either. */
function sameContext(a: EncryptionContext, b: EncryptionContext): boolean {
  if (a === b) return true;
  let count = 0;
  for (const key in a) {
    if (!Object.hasOwn(a, key)) continue;
    if (!Object.hasOwn(b, key) || a[key] !== b[key]) return false;
    count++;
  }
  let other = 0;
  for (const key in b) if (Object.hasOwn(b, key)) other++;
  return count === other;
}

/** The item's failure as its result, or (not the item's fault) the whole call's error naming it. */
function itemFailure(method: string, index: number, err: unknown): ItemError {
  if (isItemError(err)) return { errorCode: err.code, errorMessage: err.message };
  if (err instanceof SealboxError) {
    throw new SealboxError(err.code, `${method} item ${index}: ${err.message}`, { cause: err });
  }
  throw err;
}

/** Every item of a group failed its DEK lookup. */
function failGroup(
  method: string,
  results: Array<EncryptBatchResult | DecryptBatchResult>,
  group: Group,
  err: unknown,
): void {
  for (const i of group.indexes) results[i] = itemFailure(method, i, err);
}

type Settled<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: unknown };

/** A promise that never rejects, so lookups started together can be awaited one by one. */
function settle<T>(promise: Promise<T>): Promise<Settled<T>> {
  return promise.then(
    (value) => ({ ok: true, value }),
    (error: unknown) => ({ ok: false, error }),
  );
}

/** Promise.all that zeroes whatever succeeded when anything failed. */
async function allOrZero<T>(promises: Promise<T>[], zero: (value: T) => void): Promise<T[]> {
  const settled = await Promise.allSettled(promises);
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (!failed) return settled.map((s) => (s as PromiseFulfilledResult<T>).value);
  for (const s of settled) if (s.status === 'fulfilled') zero(s.value);
  throw failed.reason;
}

/** Lets the event loop run other calls between slices; a call cancelled meanwhile stops here. */
async function nextTurn(signal?: AbortSignal): Promise<void> {
  await new Promise<void>((resolve) => setImmediate(resolve));
  if (signal?.aborted) {
    throw signal.reason instanceof SealboxError
      ? signal.reason
      : new SealboxError(ErrorCode.CANCELLED, 'call cancelled');
  }
}
