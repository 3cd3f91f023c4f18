/**
 * The envelope service: turns requests into headers and chunk batches, and batches into bytes.
 * Transport-free — server/ adapts it to gRPC calls, owning backpressure and the wire.
 *
 * Flow of one encrypted message: keys (DataKeySource: DEK → wrapped DEK + per-message keys) →
 * header → PlaintextFramer splits input into chunk-aligned segments → ChunkPool seals each segment.
 * Decryption mirrors it: CiphertextReader → header → keys → verify header and expected context →
 * ChunkPool opens each segment, releasing plaintext only for chunks whose tags verified.
 * Rewrap (rewrap.ts) rewrites only a header: unwrap the DEK under its version, verify, wrap it under
 * the current version; it needs the KEK registry, since the DataKeySource never hands out a DEK.
 */
import type { DataKeySource } from '../cache/data-keys';
import { checkExpectedContext, type EncryptionContext, encodeContext } from '../crypto/context';
import {
  buildHeader,
  type Header,
  isValidChunkSize,
  MAX_CHUNK_SIZE,
  MESSAGE_ID_BYTES,
  MIN_CHUNK_SIZE,
  verifyHeader,
} from '../crypto/format';
import { CiphertextReader, PlaintextFramer, type Segment } from '../crypto/framing';
import { type MessageKeys, zeroMessageKeys } from '../crypto/kdf';
import { openFailure } from '../crypto/message';
import { messageIds } from '../crypto/random-pool';
import { ErrorCode, SealboxError } from '../errors';
import type { AuditCaller } from '../kek/audit';
import type { ChunkPool } from '../pool/pool';
import { type Cancellation, signalOf } from '../util/abort';
import { ALLOW_ALL, type KeyAccess } from './access';
import {
  type RewrapKeys,
  type RewrapRequestFields,
  type RewrapResult,
  RewrapSession,
  readRewrapRequest,
} from './rewrap';

export interface EnvelopeOptions {
  /** Chunk size used when a request does not choose one. */
  readonly defaultChunkSize: number;
  /** Largest plaintext (Encrypt) or ciphertext (Decrypt) a unary call accepts. */
  readonly unaryMaxBytes: number;
  /** Target bytes per pool task; a segment holds as many whole chunks as fit (at least one). */
  readonly batchBytes: number;
}

/** Metadata a caller sees before any data. */
export interface MessageInfo {
  readonly keyId: string;
  readonly context: EncryptionContext;
}

export class EnvelopeService {
  constructor(
    private readonly keys: DataKeySource,
    private readonly pool: ChunkPool,
    readonly options: EnvelopeOptions,
    /** The KEK registry, for Rewrap (it needs the DEK itself); without it Rewrap is unavailable. */
    private readonly kek?: RewrapKeys,
  ) {}

  /** True when Rewrap can run (the service was given the KEK registry). */
  get canRewrap(): boolean {
    return this.kek !== undefined;
  }

  /** Rewraps one ciphertext's header under its key's current version (unary Rewrap). */
  async rewrap(
    request: RewrapRequestFields,
    signal?: AbortSignal,
    access: KeyAccess = ALLOW_ALL,
    caller?: AuditCaller,
  ): Promise<RewrapResult> {
    const item = readRewrapRequest(request);
    const session = this.beginRewrap(signal, access, caller);
    try {
      return await session.rewrap(item);
    } finally {
      session.dispose();
    }
  }

  /** Starts a rewrap session for one call; dispose it when the call ends (it zeroes the DEKs it holds). */
  beginRewrap(signal?: AbortSignal, access: KeyAccess = ALLOW_ALL, caller?: AuditCaller): RewrapSession {
    if (!this.kek) {
      throw new SealboxError(
        ErrorCode.INTERNAL,
        'Rewrap is not available: the envelope service was built without the KEK registry',
      );
    }
    return new RewrapSession(this.kek, this.keys, signal, access, caller);
  }

  /**
   * Encrypts a whole message (unary). `signal` may be a LazySignal: it is only made into an
   * AbortSignal if the call has to wait (a DEK-cache miss, a worker task).
   */
  async encrypt(
    alias: string,
    plaintext: Buffer,
    context: EncryptionContext,
    signal?: Cancellation,
    access: KeyAccess = ALLOW_ALL,
    caller?: AuditCaller,
  ): Promise<{ ciphertext: Buffer; keyId: string }> {
    this.checkUnarySize('plaintext', plaintext.length);
    const session = await this.beginEncrypt(alias, context, 0, signal, access, caller);
    try {
      const segments = session.push(plaintext);
      const last = session.finish();
      const header = session.header;
      if (segments.length === 0) {
        // One segment (every message up to batchBytes): sealed after room for the header, which is
        // written in place — no concatenation, one buffer for the whole ciphertext.
        const ciphertext = await session.seal(last, signal, header.length);
        header.copy(ciphertext, 0);
        return { ciphertext, keyId: session.info.keyId };
      }
      segments.push(last);
      const body = await Promise.all(segments.map((s) => session.seal(s, signal)));
      return { ciphertext: Buffer.concat([header, ...body]), keyId: session.info.keyId };
    } finally {
      session.dispose();
    }
  }

  /** Decrypts a whole message (unary). */
  async decrypt(
    ciphertext: Buffer,
    expectedContext: EncryptionContext,
    signal?: Cancellation,
    access: KeyAccess = ALLOW_ALL,
    caller?: AuditCaller,
  ): Promise<{ plaintext: Buffer; info: MessageInfo }> {
    this.checkUnarySize('ciphertext', ciphertext.length);
    const session = this.beginDecrypt(expectedContext, signal, access, caller);
    try {
      const { info, segments } = await session.push(ciphertext);
      segments.push(session.finish());
      // `info` is set by the push that completed the header; finish() threw if none did.
      if (segments.length === 1) {
        // One segment: its plaintext is the answer as it is (Buffer.concat would copy it).
        return { plaintext: await session.open(segments[0]!, signal), info: info ?? session.info! };
      }
      const parts = await Promise.all(segments.map((s) => session.open(s, signal)));
      return { plaintext: Buffer.concat(parts), info: info ?? session.info! };
    } finally {
      session.dispose();
    }
  }

  /**
   * Throws LIMIT_EXCEEDED when a unary Encrypt's plaintext or Decrypt's ciphertext is over the unary
   * limit. The server asks this before admitting the call, so an oversized request never waits.
   */
  checkUnarySize(kind: 'plaintext' | 'ciphertext', bytes: number): void {
    const limit =
      kind === 'plaintext'
        ? this.options.unaryMaxBytes
        : this.options.unaryMaxBytes + this.unaryOverheadAllowance();
    if (bytes > limit) {
      throw new SealboxError(
        ErrorCode.LIMIT_EXCEEDED,
        `${kind} of ${bytes} bytes exceeds the unary limit of ${limit} bytes (envelope.unaryMaxBytes); use ` +
          `${kind === 'plaintext' ? 'EncryptStream' : 'DecryptStream'} for large data`,
      );
    }
  }

  /**
   * Starts an encrypted message: resolves the key, derives message keys and builds the header.
   * `caller` (here and below) names the call in the audit line of any vault call it causes.
   */
  async beginEncrypt(
    alias: string,
    context: EncryptionContext,
    chunkSize: number,
    signal?: Cancellation,
    access: KeyAccess = ALLOW_ALL,
    caller?: AuditCaller,
    consumesInOrder = false,
  ): Promise<EncryptSession> {
    if (typeof alias !== 'string' || alias.length === 0) {
      throw new SealboxError(ErrorCode.INVALID_ARGUMENT, 'key_alias is required: name a configured key');
    }
    access.checkAlias('encrypt', alias);
    const size = chunkSize === 0 ? this.options.defaultChunkSize : chunkSize;
    if (!isValidChunkSize(size)) {
      throw new SealboxError(
        ErrorCode.INVALID_ARGUMENT,
        `chunk_size ${chunkSize} is out of range; use ${MIN_CHUNK_SIZE}..${MAX_CHUNK_SIZE} or 0 for the default`,
      );
    }
    const contextBytes = encodeContext(context);
    const messageId = messageIds.take(MESSAGE_ID_BYTES);
    const { wrapped, keys, account } = await this.keys.forEncrypt(alias, messageId, signal, caller);
    try {
      const header = buildHeader({ messageId, chunkSize: size, contextBytes, ...wrapped }, keys);
      return new EncryptSession(
        this.pool,
        keys,
        messageId,
        header,
        { keyId: wrapped.keyId, context: { ...context } },
        new PlaintextFramer(
          size,
          this.chunksPerSegment(size),
          this.mustOwn,
          this.reuseCopies(consumesInOrder),
        ),
        account,
        () => this.keys.check?.(wrapped.keyId, 'encrypt'),
      );
    } catch (err) {
      zeroMessageKeys(keys);
      throw err;
    }
  }

  /** Starts decrypting a message whose bytes will be pushed as they arrive. */
  beginDecrypt(
    expectedContext: EncryptionContext,
    signal?: Cancellation,
    access: KeyAccess = ALLOW_ALL,
    caller?: AuditCaller,
    consumesInOrder = false,
  ): DecryptSession {
    return new DecryptSession(
      this.keys,
      this.pool,
      expectedContext,
      (size) => this.chunksPerSegment(size),
      this.mustOwn,
      this.reuseCopies(consumesInOrder),
      signal,
      access,
      caller,
    );
  }

  /**
   * Whether a session's framer may copy straddling chunks into one reused buffer (PlaintextFramer's
   * `reuseCopies`): only when its caller promised (`consumesInOrder`) to seal or open every segment of
   * a push before the next push or finish, and sealing and opening are synchronous (no worker pool,
   * where a queued job would read its segment later).
   */
  private reuseCopies(consumesInOrder: boolean): boolean {
    return consumesInOrder && this.pool.alwaysInline;
  }

  /** Whether segments must own their memory: the pool says (it copies views into reused buffers). */
  private readonly mustOwn = (bytes: number): boolean => this.pool.needsOwnedBuffer(bytes);

  private chunksPerSegment(chunkSize: number): number {
    return Math.max(1, Math.floor(this.options.batchBytes / chunkSize));
  }

  /** Header plus per-chunk tags for a unary-sized message at the smallest chunk size. */
  private unaryOverheadAllowance(): number {
    return 64 * 1024 + Math.ceil(this.options.unaryMaxBytes / MIN_CHUNK_SIZE) * 16;
  }
}

/** `{ allocate }` when the pool runs the segment inline (a function cannot be sent to a worker). */
function inlineOnly(
  pool: ChunkPool,
  segment: Segment,
  allocate: ((bytes: number) => Buffer) | undefined,
): { allocate?: (bytes: number) => Buffer } {
  return allocate && pool.runsInline(segment.data.length) ? { allocate } : {};
}

/** One message being encrypted. Call `dispose` when done to zero its keys. */
export class EncryptSession {
  constructor(
    private readonly pool: ChunkPool,
    private readonly keys: MessageKeys,
    private readonly messageId: Buffer,
    /** The complete header; send it before any chunk. */
    readonly header: Buffer,
    readonly info: MessageInfo,
    private readonly framer: PlaintextFramer,
    /** Tells the DEK's owner how many plaintext bytes this message sealed (byte budgets). */
    private readonly account: (bytes: number) => void,
    /** Throws if the message's key version was revoked meanwhile. */
    private readonly checkKey: () => void = () => {},
  ) {}

  /** Accepts plaintext; returns the whole non-final segments it completed, in order. */
  push(plaintext: Buffer): Segment[] {
    this.account(plaintext.length);
    return this.framer.push(plaintext);
  }

  /** Ends the plaintext; returns the final segment. */
  /** Whether the plaintext held back includes a view of `memory` (PlaintextFramer.holds). */
  holds(memory: ArrayBufferLike): boolean {
    return this.framer.holds(memory);
  }

  finish(): Segment {
    return this.framer.finish();
  }

  /**
   * Seals a segment into chunk records, after `headroom` reserved bytes. The segment's buffer is
   * consumed. `allocate` provides the output buffer when the segment is sealed inline.
   */
  seal(
    segment: Segment,
    signal?: Cancellation,
    headroom = 0,
    allocate?: (bytes: number) => Buffer,
  ): Promise<Buffer> {
    try {
      this.checkKey();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.pool.seal(
      {
        key: this.keys.encryptionKey,
        messageId: this.messageId,
        chunkSize: this.framer.chunkSize,
        headroom,
        ...inlineOnly(this.pool, segment, allocate),
        ...segment,
      },
      // Only a worker task takes the signal; an inline one runs to completion at once.
      this.pool.runsInline(segment.data.length) ? undefined : signalOf(signal),
    );
  }

  dispose(): void {
    zeroMessageKeys(this.keys);
  }
}

/** One message being decrypted from bytes that arrive split anywhere. */
export class DecryptSession {
  private readonly reader: CiphertextReader;
  private keys: MessageKeys | undefined;
  private header: Header | undefined;
  private disposed = false;
  /** Set once the header has been read, its key unwrapped and the header verified. */
  info: MessageInfo | undefined;

  constructor(
    private readonly dataKeys: DataKeySource,
    private readonly pool: ChunkPool,
    private readonly expected: EncryptionContext,
    chunksPerSegment: (chunkSize: number) => number,
    mustOwn: (bytes: number) => boolean,
    reuseCopies: boolean,
    private readonly signal?: Cancellation,
    private readonly access: KeyAccess = ALLOW_ALL,
    private readonly caller?: AuditCaller,
  ) {
    this.reader = new CiphertextReader(chunksPerSegment, mustOwn, reuseCopies);
  }

  /**
   * Accepts ciphertext. When this push completes the header, the header is verified (and the
   * expected context checked) before it returns `info`; segments are only ever returned after that.
   */
  async push(ciphertext: Buffer): Promise<{ info?: MessageInfo; segments: Segment[] }> {
    const { header, segments } = this.reader.push(ciphertext);
    if (!header) return { segments };
    // Before the vault is asked: a caller must not cause unwraps under keys it is not granted.
    this.access.checkKeyId('decrypt', header.keyId);
    const keys = await this.dataKeys.forDecrypt(header, this.signal, this.caller);
    if (this.disposed) {
      zeroMessageKeys(keys);
      throw new SealboxError(ErrorCode.CANCELLED, 'call ended while its key was being unwrapped');
    }
    this.keys = keys;
    verifyHeader(header, keys);
    checkExpectedContext(header.context, this.expected);
    this.header = header;
    this.info = { keyId: header.keyId, context: header.context };
    return { info: this.info, segments };
  }

  /** Whether the ciphertext held back includes a view of `memory` (CiphertextReader.holds). */
  holds(memory: ArrayBufferLike): boolean {
    return this.reader.holds(memory);
  }

  /** Ends the ciphertext; returns the final segment or throws CIPHERTEXT_TRUNCATED. */
  finish(): Segment {
    return this.reader.finish();
  }

  /**
   * Opens a segment (plaintext after `headroom` reserved bytes); rejects with CIPHERTEXT_CORRUPT or
   * CIPHERTEXT_TRUNCATED naming the chunk that failed.
   */
  async open(
    segment: Segment,
    signal?: Cancellation,
    headroom = 0,
    allocate?: (bytes: number) => Buffer,
  ): Promise<Buffer> {
    const header = this.header;
    const keys = this.keys;
    if (!header || !keys) throw new Error('open before the header was verified');
    this.dataKeys.check?.(header.keyId, 'decrypt');
    const result = await this.pool.open(
      {
        key: keys.encryptionKey,
        messageId: header.messageId,
        chunkSize: header.chunkSize,
        headroom,
        ...inlineOnly(this.pool, segment, allocate),
        ...segment,
      },
      this.pool.runsInline(segment.data.length) ? undefined : signalOf(signal),
    );
    if (result.ok) return result.plaintext;
    throw openFailure(result.failedIndex, result.truncated);
  }

  dispose(): void {
    this.disposed = true;
    if (this.keys) zeroMessageKeys(this.keys);
  }
}
