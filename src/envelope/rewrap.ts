/**
 * Rewrap: moves a ciphertext's data key to the current version of its key-encryption key (after a
 * rotation) by rewriting the header only. The body is never read or changed.
 *
 * Why this works (docs/FORMAT.md): the chunks bind the message id, never the key id or the wrapped
 * DEK, and the AES key is derived from the DEK and the message id. With the DEK in hand, the header's
 * key id, wrap algorithm and wrapped DEK can be replaced and its tag recomputed; message id, context,
 * commitment and every body byte stay as they were.
 *
 * How a client uses it:
 *
 *   1. Send the stored ciphertext, or only its first bytes as long as they hold the whole header (a
 *      v1 header is at most 10,385 bytes; the first 16 KiB always suffice).
 *   2. If `changed`, store `header ‖ ciphertext[header_length_before:]` in place of the ciphertext.
 *      (When `changed` is false the header comes back as it was, so the same splice is a no-op; a
 *      failed RewrapStream item has an empty header and length 0, so it is a no-op too.)
 *   3. Disable the old key version only once every ciphertext under it has been replaced: until then
 *      the old ciphertext still needs it.
 *
 * What one rewrap does, in order:
 *
 *   parse the header (CIPHERTEXT_MALFORMED / CIPHERTEXT_TRUNCATED)
 *   → target = the key_alias's key, or the key that owns the header's key id
 *   → the header's version revoked, or known not to exist? Refused before any vault call
 *     (DataKeySource.check; every vault answer below is reported back to it: `reported`)
 *   → already under the target's current version? Verify the header through the DataKeySource (the
 *     DEK cache's decrypt path; derived keys suffice to verify) and return it unchanged: no wrap
 *   → else unwrap the DEK with the header's exact key version (KekProvider.unwrap, the DataKeySource
 *     only ever hands out derived keys), derive the message keys, verify commitment and header tag
 *     (CIPHERTEXT_CORRUPT) and the expected context (CONTEXT_MISMATCH) — all before anything is wrapped
 *   → wrap the DEK under the target's current version and rebuild the header (format.ts rewrapHeader)
 *   → zero the message keys; the DEK is zeroed when the session ends.
 *
 * A session serves one call (one item for Rewrap, many for RewrapStream). Within it, items whose
 * headers carry the same wrapped DEK — every message the DEK cache sealed under one DEK — share one
 * unwrap and one wrap, and the target's current version is asked once per key version. Rewrapping a
 * batch of cached-DEK messages therefore costs about one unwrap and one wrap per DEK, not per message.
 * Sharing the new wrapped DEK between those messages is what the encrypt cache already does: each
 * message still derives its own keys from its own message id.
 *
 * The unwrap here goes to the KEK provider directly, not through the DEK cache (which never releases a
 * DEK), so it is not bounded by the cache's vault fan-out limit; RewrapStream bounds it by processing
 * at most `stream.maxInFlightSegments` items at a time.
 */
import { createHash } from 'node:crypto';
import { type DataKeySource, DEK_BYTES, type VaultAnswer } from '../cache/data-keys';
import type { KeyOperationName } from '../cache/key-states';
import { checkExpectedContext, type EncryptionContext } from '../crypto/context';
import { type Header, MAX_HEADER_BYTES, parseHeader, rewrapHeader, verifyHeader } from '../crypto/format';
import { deriveMessageKeys, zeroMessageKeys } from '../crypto/kdf';
import { ErrorCode, SealboxError } from '../errors';
import type { AuditCaller } from '../kek/audit';
import type { KekProvider, WrapResult } from '../kek/provider';
import type { KekRegistry } from '../kek/registry';
import { ALLOW_ALL, type KeyAccess } from './access';

/** What Rewrap needs from the KEK registry (tests pass a real registry over fake providers). */
export type RewrapKeys = Pick<KekRegistry, 'forAlias' | 'forKeyId'>;

/** Bytes a client may send instead of the whole ciphertext: always enough for a v1 header. */
export const REWRAP_PREFIX_BYTES = 16 * 1024;

/** Distinct wrapped DEKs one session keeps unwrapped for sharing; beyond it, items are handled alone. */
export const MAX_SHARED_DEKS = 256;

/** A Rewrap request as it arrives (the generated RewrapRequest__Output fits). */
export interface RewrapRequestFields {
  readonly headerOrCiphertext: Buffer;
  readonly keyAlias: string;
  readonly expectedContext: EncryptionContext;
}

/** A request whose header has been parsed (not yet verified). Holds no reference to the request bytes. */
export interface RewrapItem {
  readonly header: Header;
  readonly keyAlias: string;
  readonly expectedContext: EncryptionContext;
}

export interface RewrapResult {
  /** The header to store in place of the first `headerLengthBefore` bytes. */
  readonly header: Buffer;
  /** The versioned key id the DEK is wrapped under now. */
  readonly keyId: string;
  readonly previousKeyId: string;
  readonly headerLengthBefore: number;
  /** True when `header` differs from the stored one and must be written back. */
  readonly changed: boolean;
}

/**
 * Checks a request's shape and parses its header. Synchronous, so a stream can drop the request's
 * bytes (possibly a whole ciphertext) before the item waits on the vault.
 */
export function readRewrapRequest(request: RewrapRequestFields): RewrapItem {
  const bytes = request.headerOrCiphertext;
  if (!Buffer.isBuffer(bytes) || bytes.length === 0) {
    throw new SealboxError(
      ErrorCode.INVALID_ARGUMENT,
      'header_or_ciphertext is required: send the stored ciphertext, or at least its header',
    );
  }
  if (typeof request.keyAlias !== 'string') {
    throw new SealboxError(ErrorCode.INVALID_ARGUMENT, 'key_alias must be a string (or empty)');
  }
  // Bounded: parseHeader stops at the header's end, and no v1 header reaches MAX_HEADER_BYTES.
  const header = parseHeader(bytes.length > MAX_HEADER_BYTES ? bytes.subarray(0, MAX_HEADER_BYTES) : bytes);
  if (!header) {
    throw new SealboxError(
      ErrorCode.CIPHERTEXT_TRUNCATED,
      `the ${bytes.length} bytes sent end inside the ciphertext header; send the whole ciphertext, ` +
        `or at least its first ${REWRAP_PREFIX_BYTES} bytes`,
    );
  }
  return { header, keyAlias: request.keyAlias, expectedContext: request.expectedContext ?? {} };
}

/**
 * Errors about one item (its bytes, its context, its key) rather than about the service. RewrapStream
 * reports these in the item's response and goes on; anything else (vault unavailable or throttling,
 * overload, cancellation, internal) ends the stream. Codes added later end the stream until listed.
 */
const ITEM_ERROR_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  ErrorCode.INVALID_ARGUMENT,
  ErrorCode.CONTEXT_INVALID,
  ErrorCode.CONTEXT_MISMATCH,
  ErrorCode.CIPHERTEXT_MALFORMED,
  ErrorCode.CIPHERTEXT_CORRUPT,
  ErrorCode.CIPHERTEXT_TRUNCATED,
  ErrorCode.KEY_NOT_FOUND,
  ErrorCode.KEY_DISABLED,
  ErrorCode.PERMISSION_DENIED,
  ErrorCode.ACCESS_DENIED,
]);

/** True when `err` is about one RewrapStream item, so the stream reports it and continues. */
export function isItemError(err: unknown): err is SealboxError {
  return err instanceof SealboxError && ITEM_ERROR_CODES.has(err.code);
}

/** One unwrapped DEK shared by the session's items whose headers carry the same wrapped DEK. */
interface SharedDek {
  readonly dek: Promise<Buffer>;
  /** New wraps of this DEK, one per target provider; started only after a header verified under it. */
  readonly wraps: Map<KekProvider, Promise<WrapResult>>;
}

/**
 * Rewraps the items of one call. Call `dispose` when the call ends: it zeroes every DEK the session
 * holds, and DEKs that vault calls still in flight bring back later are zeroed on arrival.
 */
export class RewrapSession {
  private readonly shared = new Map<string, SharedDek>();
  /** Every DEK buffer this session owns (shared ones until dispose, single-use ones until done). */
  private readonly held = new Set<Buffer>();
  /** The target's current key id, asked once per (provider, key version) per session. */
  private readonly latest = new Map<KekProvider, Map<string, Promise<string>>>();
  private disposed = false;

  constructor(
    private readonly kek: RewrapKeys,
    private readonly dataKeys: DataKeySource,
    /** The call's signal: vault calls shared between items may only stop when the whole call does. */
    private readonly signal?: AbortSignal,
    /** The caller's grants: rewrap on the ciphertext's key and on the target alias. */
    private readonly access: KeyAccess = ALLOW_ALL,
    /** Who the session's vault calls are made for (the audit line). */
    private readonly caller?: AuditCaller,
  ) {}

  /** Rewraps one item; see the module comment for the order of checks. */
  async rewrap(item: RewrapItem): Promise<RewrapResult> {
    this.throwIfDisposed();
    const { header } = item;
    this.access.checkKeyId('rewrap', header.keyId);
    if (item.keyAlias) this.access.checkAlias('rewrap', item.keyAlias);
    const source = this.kek.forKeyId(header.keyId);
    const target = item.keyAlias ? this.kek.forAlias(item.keyAlias) : source;
    // Before the vault is asked anything about the header's version (isCurrent reads it): a version
    // the key-state model has revoked, or one the vault said does not exist (the bounded negative
    // cache), is refused here, so a forged key id costs one lookup however often it is sent.
    this.dataKeys.check?.(header.keyId, 'decrypt');
    if (await this.isCurrent(target, header.keyId)) return this.unchanged(item);

    // Again, now that the version's attributes were read: a revocation they (or anything else)
    // caused meanwhile stops the unwrap too; the unchanged path gets the same check inside forDecrypt.
    this.dataKeys.check?.(header.keyId, 'decrypt');
    const { dek, shared } = await this.dekFor(source, header);
    const keys = deriveMessageKeys(dek, header.messageId);
    try {
      // Precondition for wrapping: the header is authentic and meant for the caller's context.
      verifyHeader(header, keys);
      checkExpectedContext(header.context, item.expectedContext);
      const wrapped = await this.wrap(target, dek, shared);
      this.throwIfDisposed();
      this.dataKeys.check?.(wrapped.keyId, 'encrypt');
      return {
        header: rewrapHeader(header, keys, {
          keyId: wrapped.keyId,
          wrapAlgorithm: wrapped.algorithm,
          wrappedDek: wrapped.wrapped,
        }),
        keyId: wrapped.keyId,
        previousKeyId: header.keyId,
        headerLengthBefore: header.length,
        changed: true,
      };
    } finally {
      zeroMessageKeys(keys);
      if (!shared) this.release(dek);
    }
  }

  /** Zeroes every DEK held; later rewraps fail with CANCELLED. Idempotent. */
  dispose(): void {
    this.disposed = true;
    for (const dek of this.held) dek.fill(0);
    this.held.clear();
    this.shared.clear();
    this.latest.clear();
  }

  /** True when `keyId` is the version `target` wraps new DEKs under (no wrap call to find out). */
  private async isCurrent(target: KekProvider, keyId: string): Promise<boolean> {
    // A key id the target does not own is never its current version (moving to another key).
    if (!target.owns(keyId)) return false;
    let perKey = this.latest.get(target);
    if (!perKey) {
      perKey = new Map();
      this.latest.set(target, perKey);
    }
    let latest = perKey.get(keyId);
    if (!latest) {
      const asked = this.reported(
        target.status(keyId, this.signal, undefined, this.caller),
        'getKey',
        keyId,
        (s) => ({
          keyId,
          attributes: { enabled: s.enabled, notBefore: s.notBefore, expiresOn: s.expiresOn },
        }),
      ).then((s) => s.latestKeyId);
      latest = asked;
      perKey.set(keyId, asked);
      // A failure is not reused: the next item asks again.
      asked.catch(() => {
        if (perKey.get(keyId) === asked) perKey.delete(keyId);
      });
    }
    return (await latest) === keyId;
  }

  /**
   * The header as it is, after verifying it: a caller told `changed: false` may rely on the header
   * being authentic and matching its expected context. The DataKeySource's derived keys are enough to
   * verify, and its cache usually answers without a vault call.
   */
  private async unchanged(item: RewrapItem): Promise<RewrapResult> {
    const { header } = item;
    const keys = await this.dataKeys.forDecrypt(header, this.signal, this.caller);
    try {
      verifyHeader(header, keys);
      checkExpectedContext(header.context, item.expectedContext);
    } finally {
      zeroMessageKeys(keys);
    }
    return {
      header: Buffer.concat([header.authenticated, header.tag]),
      keyId: header.keyId,
      previousKeyId: header.keyId,
      headerLengthBefore: header.length,
      changed: false,
    };
  }

  /** The header's DEK: shared with other items carrying the same wrapped DEK while the session has room. */
  private async dekFor(source: KekProvider, header: Header): Promise<{ dek: Buffer; shared?: SharedDek }> {
    const id = `${header.keyId}\n${header.wrapAlgorithm}\n${createHash('sha256').update(header.wrappedDek).digest('hex')}`;
    let shared = this.shared.get(id);
    if (!shared) {
      if (this.shared.size >= MAX_SHARED_DEKS) return { dek: await this.unwrap(source, header) };
      const started: SharedDek = { dek: this.unwrap(source, header), wraps: new Map() };
      shared = started;
      this.shared.set(id, started);
      // A failed unwrap is not reused: the next item with this wrapped DEK asks the vault again.
      started.dek.catch(() => {
        if (this.shared.get(id) === started) this.shared.delete(id);
      });
    }
    const dek = await shared.dek;
    this.throwIfDisposed();
    return { dek, shared };
  }

  /** Unwraps with the header's exact key version into a buffer this session owns. */
  private async unwrap(source: KekProvider, header: Header): Promise<Buffer> {
    const dek = await this.reported(
      source.unwrap(header.keyId, header.wrapAlgorithm, header.wrappedDek, this.signal, this.caller),
      'unwrapKey',
      header.keyId,
      () => ({
        keyId: header.keyId,
        sample: { algorithm: header.wrapAlgorithm, wrapped: header.wrappedDek },
      }),
    );
    if (this.disposed) {
      dek.fill(0);
      throw cancelled();
    }
    if (dek.length !== DEK_BYTES) {
      dek.fill(0);
      throw new SealboxError(
        ErrorCode.CIPHERTEXT_CORRUPT,
        `the wrapped data key unwrapped to ${dek.length} bytes, not ${DEK_BYTES}: the header was modified`,
      );
    }
    this.held.add(dek);
    return dek;
  }

  /** Wraps `dek` under the target's current version; items sharing the DEK share the wrap. */
  private wrap(target: KekProvider, dek: Buffer, shared: SharedDek | undefined): Promise<WrapResult> {
    const call = () =>
      this.reported(target.wrap(dek, this.signal, this.caller), 'wrapKey', undefined, (result) => ({
        keyId: result.keyId,
      }));
    if (!shared) return call();
    let wrapped = shared.wraps.get(target);
    if (!wrapped) {
      const started = call();
      wrapped = started;
      shared.wraps.set(target, started);
      started.catch(() => {
        if (shared.wraps.get(target) === started) shared.wraps.delete(target);
      });
    }
    return wrapped;
  }

  /**
   * Passes a vault call's outcome to the key-state model (DataKeySource.vaultAnswered): these calls
   * bypass the DEK cache, but what the vault says about a version is evidence all the same — a
   * disabled version seen here (its attributes, or a refused unwrap) revokes its cached DEKs as one
   * seen by Decrypt would, and a 404 for a forged version goes to the same negative cache. A call
   * this session cancelled says nothing about the key and is not reported.
   */
  private reported<T>(
    call: Promise<T>,
    operation: KeyOperationName,
    keyId: string | undefined,
    success: (value: T) => Omit<Extract<VaultAnswer, { sample?: unknown }>, 'operation'>,
  ): Promise<T> {
    const answered = this.dataKeys.vaultAnswered?.bind(this.dataKeys);
    if (!answered) return call;
    return call.then(
      (value) => {
        answered({ operation, ...success(value) });
        return value;
      },
      (error: unknown) => {
        if (!this.signal?.aborted) answered({ keyId, operation, error });
        throw error;
      },
    );
  }

  private release(dek: Buffer): void {
    dek.fill(0);
    this.held.delete(dek);
  }

  private throwIfDisposed(): void {
    if (this.disposed) throw cancelled();
  }
}

function cancelled(): SealboxError {
  return new SealboxError(ErrorCode.CANCELLED, 'the call ended while its headers were being rewrapped');
}
