/**
 * The second private patch of grpc-js in sealbox (how both apply: ./grpc-patch.ts): large request
 * messages are reassembled into reused buffers instead of fresh ones.
 *
 * grpc-js 1.14.7 (`build/src/stream-decoder.js`, `StreamDecoder.write`) collects a message's HTTP/2
 * DATA pieces (16 KiB each by default) and joins them with `Buffer.concat` into a new buffer per
 * message: for EncryptStream / DecryptStream, one fresh byte per payload byte, in buffers of about a
 * segment (1 MiB by default) that live until the message has been sealed or opened. Here the join
 * copies into a buffer from a BufferRecycler (src/util/recycler.ts) instead; the stream handlers
 * (./envelope.ts) give a message's buffer back once neither their framer nor a pending segment holds
 * a view of it (RequestReturns). The copy itself stays: the crypto needs each chunk contiguous, and
 * chunks straddle DATA pieces.
 *
 * Scope: messages of REUSE_MIN_BYTES or more; smaller ones (most unary calls, init messages) take
 * grpc-js's own path, reproduced below line for line, and so does everything when grpc-js's function
 * is not the one this was written against (its source text is compared). A large message of any other
 * method (a big unary Encrypt, a batch) gets a recycler buffer too but is never given back: the GC
 * frees it, as before. test/unit/server/grpc-reassembly.test.ts fails when grpc-js changes under it.
 *
 * Gain (bench/README.md, "Stream allocation budget"): one fresh byte per payload byte fewer on
 * EncryptStream and DecryptStream; without it grpc-js works as it always did.
 */
import { Buffer } from 'node:buffer';
import { BufferRecycler } from '../util/recycler';
import { replaceVerified } from './grpc-patch';

/** grpc-js's StreamDecoder.write as of 1.14.7, whitespace collapsed; the patch reproduces it. */
export const EXPECTED_WRITE_SOURCE =
  'write(data) { let readHead = 0; let toRead; const result = []; while (readHead < data.length) { ' +
  'switch (this.readState) { case ReadState.NO_DATA: this.readCompressFlag = data.slice(readHead, readHead + 1); ' +
  'readHead += 1; this.readState = ReadState.READING_SIZE; this.readPartialSize.fill(0); ' +
  'this.readSizeRemaining = 4; this.readMessageSize = 0; this.readMessageRemaining = 0; ' +
  'this.readPartialMessage = []; break; case ReadState.READING_SIZE: ' +
  'toRead = Math.min(data.length - readHead, this.readSizeRemaining); ' +
  'data.copy(this.readPartialSize, 4 - this.readSizeRemaining, readHead, readHead + toRead); ' +
  'this.readSizeRemaining -= toRead; readHead += toRead; // readSizeRemaining >=0 here ' +
  'if (this.readSizeRemaining === 0) { this.readMessageSize = this.readPartialSize.readUInt32BE(0); ' +
  'if (this.maxReadMessageLength !== -1 && this.readMessageSize > this.maxReadMessageLength) { ' +
  // biome-ignore lint/suspicious/noTemplateCurlyInString: grpc-js's source text, compared as it is
  'throw new Error(`Received message larger than max (${this.readMessageSize} vs ${this.maxReadMessageLength})`); } ' +
  'this.readMessageRemaining = this.readMessageSize; if (this.readMessageRemaining > 0) { ' +
  'this.readState = ReadState.READING_MESSAGE; } else { ' +
  'const message = Buffer.concat([this.readCompressFlag, this.readPartialSize], 5); ' +
  'this.readState = ReadState.NO_DATA; result.push(message); } } break; case ReadState.READING_MESSAGE: ' +
  'toRead = Math.min(data.length - readHead, this.readMessageRemaining); ' +
  'this.readPartialMessage.push(data.slice(readHead, readHead + toRead)); ' +
  'this.readMessageRemaining -= toRead; readHead += toRead; // readMessageRemaining >=0 here ' +
  'if (this.readMessageRemaining === 0) { // At this point, we have read a full message ' +
  'const framedMessageBuffers = [ this.readCompressFlag, this.readPartialSize, ].concat(this.readPartialMessage); ' +
  'const framedMessage = Buffer.concat(framedMessageBuffers, this.readMessageSize + 5); ' +
  'this.readState = ReadState.NO_DATA; result.push(framedMessage); } break; ' +
  "default: throw new Error('Unexpected read state'); } } return result; }";

/** Framed messages (5-byte gRPC prefix included) at least this large are reassembled into reused buffers. */
export const REUSE_MIN_BYTES = 64 * 1024;

/**
 * At most 16 free buffers / 32 MiB are kept for reuse (a few default 1 MiB segments per busy stream,
 * as for the output buffers in ./envelope.ts); beyond that, given-back buffers are left to the GC.
 */
const requests = new BufferRecycler(16, 32 * 1024 * 1024);

/** grpc-js's ReadState values (stream-decoder.js). */
const NO_DATA = 0;
const READING_SIZE = 1;
const READING_MESSAGE = 2;

/** One framed message from its pieces: a reused buffer when large enough, else Buffer.concat as grpc-js. */
export function reassemble(pieces: readonly Buffer[], totalLength: number): Buffer {
  if (totalLength < REUSE_MIN_BYTES) return Buffer.concat(pieces, totalLength);
  const out = requests.take(totalLength);
  let at = 0;
  for (const piece of pieces) {
    out.set(piece, at);
    at += piece.length;
  }
  // As Buffer.concat does when the pieces fall short (they never do: grpc-js counts them).
  if (at < totalLength) out.fill(0, at);
  return out;
}

/**
 * Gives a request message's buffer back for reuse, through any view of it (e.g. the `data` field
 * protobuf decoded from it). Precondition: nothing reads any view of that buffer any more. Buffers
 * that did not come from `reassemble` are ignored.
 */
export function releaseRequest(view: Uint8Array): void {
  requests.give(view);
}

/** Whether `view` lies in a reused request buffer not yet given back (worth tracking for releaseRequest). */
export function isReusedRequest(view: Uint8Array): boolean {
  return requests.lends(view);
}

/** A request message waiting to be given back, and how many things still use it. */
export interface ReturnEntry {
  readonly view: Uint8Array;
  uses: number;
}

/**
 * A stream's request messages on their way back to reuse. A message's buffer is given back once its
 * push has returned, no segment that is a view of it is still waiting to be sealed or opened (on a
 * worker pool a job copies its bytes only when it is sent, maybe later), and the session's framer
 * holds no view of it. Oldest first: the framer consumes bytes in order, so a message still in use
 * keeps every newer one waiting too.
 *
 * Use: `const m = received(data)` before the push; `pushed(m, segments)` once it returned; each
 * segment's work through `settles(segment, work)`.
 */
export class RequestReturns {
  private readonly waiting: ReturnEntry[] = [];

  /** `held(memory)`: whether the stream's framer still holds a view of `memory` (a session's `holds`). */
  constructor(private readonly held: (memory: ArrayBufferLike) => boolean) {}

  /** A message about to be pushed: in use until `pushed`. Returns its entry (none if not reused). */
  received(data: Uint8Array | undefined): ReturnEntry | undefined {
    if (!data || !isReusedRequest(data)) return undefined;
    const entry = { view: data, uses: 1 };
    this.waiting.push(entry);
    return entry;
  }

  /** The push of `message` (from `received`) returned these segments: each is in use until it settles. */
  pushed(message: ReturnEntry | undefined, segments: readonly { readonly data: Uint8Array }[]): void {
    for (const segment of segments) {
      const entry = this.entryOf(segment.data);
      if (entry) entry.uses++;
    }
    if (message) message.uses--;
    this.flush();
  }

  /** `work` seals or opens `segment` (counted by `pushed`); once it settles, the segment is done with. */
  settles<T>(segment: { readonly data: Uint8Array }, work: Promise<T>): Promise<T> {
    const entry = this.entryOf(segment.data);
    if (!entry) return work;
    const release = () => {
      entry.uses--;
      this.flush();
    };
    work.then(release, release);
    return work;
  }

  private entryOf(data: Uint8Array): ReturnEntry | undefined {
    for (const entry of this.waiting) if (entry.view.buffer === data.buffer) return entry;
    return undefined;
  }

  private flush(): void {
    while (this.waiting.length > 0) {
      const oldest = this.waiting[0]!;
      if (oldest.uses > 0 || this.held(oldest.view.buffer)) return;
      this.waiting.shift();
      releaseRequest(oldest.view);
    }
  }
}

/** Free request buffers held, and how many request messages went into a reused buffer; for tests. */
export function requestBufferStats(): { buffers: number; bytes: number; reused: number } {
  return { ...requests.held, reused: requests.reused };
}

interface DecoderState {
  readState: number;
  readCompressFlag: Buffer;
  readPartialSize: Buffer;
  readSizeRemaining: number;
  readMessageSize: number;
  readPartialMessage: Buffer[];
  readMessageRemaining: number;
  maxReadMessageLength: number;
}

/** grpc-js's write, line for line, with reassemble() in place of the message's Buffer.concat. */
function write(this: DecoderState, data: Buffer): Buffer[] {
  let readHead = 0;
  let toRead: number;
  const result: Buffer[] = [];
  while (readHead < data.length) {
    switch (this.readState) {
      case NO_DATA:
        this.readCompressFlag = data.slice(readHead, readHead + 1);
        readHead += 1;
        this.readState = READING_SIZE;
        this.readPartialSize.fill(0);
        this.readSizeRemaining = 4;
        this.readMessageSize = 0;
        this.readMessageRemaining = 0;
        this.readPartialMessage = [];
        break;
      case READING_SIZE:
        toRead = Math.min(data.length - readHead, this.readSizeRemaining);
        data.copy(this.readPartialSize, 4 - this.readSizeRemaining, readHead, readHead + toRead);
        this.readSizeRemaining -= toRead;
        readHead += toRead;
        if (this.readSizeRemaining === 0) {
          this.readMessageSize = this.readPartialSize.readUInt32BE(0);
          if (this.maxReadMessageLength !== -1 && this.readMessageSize > this.maxReadMessageLength) {
            throw new Error(
              `Received message larger than max (${this.readMessageSize} vs ${this.maxReadMessageLength})`,
            );
          }
          this.readMessageRemaining = this.readMessageSize;
          if (this.readMessageRemaining > 0) {
            this.readState = READING_MESSAGE;
          } else {
            const message = Buffer.concat([this.readCompressFlag, this.readPartialSize], 5);
            this.readState = NO_DATA;
            result.push(message);
          }
        }
        break;
      case READING_MESSAGE:
        toRead = Math.min(data.length - readHead, this.readMessageRemaining);
        this.readPartialMessage.push(data.slice(readHead, readHead + toRead));
        this.readMessageRemaining -= toRead;
        readHead += toRead;
        if (this.readMessageRemaining === 0) {
          const framedMessageBuffers = [this.readCompressFlag, this.readPartialSize].concat(
            this.readPartialMessage,
          );
          const framedMessage = reassemble(framedMessageBuffers, this.readMessageSize + 5);
          this.readState = NO_DATA;
          result.push(framedMessage);
        }
        break;
      default:
        throw new Error('Unexpected read state');
    }
  }
  return result;
}

let installed: boolean | undefined;

/**
 * Applies the patch once per process (grpc-js's decoder class is shared by its servers and clients).
 * Returns whether large messages are reassembled into reused buffers: false when grpc-js's
 * StreamDecoder.write is not the expected one (then nothing was changed).
 */
export function installRequestReuse(): boolean {
  installed ??= replaceVerified(
    '@grpc/grpc-js/build/src/stream-decoder',
    'StreamDecoder',
    'write',
    EXPECTED_WRITE_SOURCE,
    write,
  );
  return installed;
}
