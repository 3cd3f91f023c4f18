/**
 * Jazzer.js target for the chunk side of a ciphertext: the stream reader (CiphertextReader), chunk
 * opening (openChunks) and whole-message opening (openMessage). The input is a ciphertext (the seeds
 * in ../seeds are the v1 known-answer ciphertexts), or a header spec followed by a body, which
 * common.ts's fromFields turns into a ciphertext with a correctly tagged header.
 *
 * A fuzzer cannot forge the header's HMAC or a chunk's GCM tag, so on its own it would stop at
 * CIPHERTEXT_CORRUPT. When the header parses, the target therefore re-signs it with the stand-in
 * KEK's keys (common.ts; the seeds' own DEKs for the seeds' message ids), so openMessage goes on to
 * the chunks, and also opens a second, "re-sealed" variant in which every chunk record the fuzzer laid
 * out is sealed afresh at its position: that reaches the checks that run after a tag verifies (the
 * canonical final chunk, the chunk count) with any layout of record lengths.
 *
 * Properties, for every input:
 *  - only SealboxErrors with a ciphertext code (or KEY_NOT_FOUND, CONTEXT_MISMATCH) escape, and no
 *    allocation exceeds the input plus one maximal header;
 *  - the reader is split-invariant: whole, or pushed in awkward pieces with one chunk per segment and
 *    segments that may be views, it yields the same header, the same records with contiguous indexes,
 *    or the same error code, and it never holds more than one header or one record;
 *  - whatever opens is canonical: sealing its plaintext again with the header's fields gives back the
 *    same bytes (so no two ciphertexts open to the same message).
 */

import { gcmSealInto } from '../../../src/crypto/aead';
import { CHUNK_OVERHEAD, chunkAad, chunkNonce } from '../../../src/crypto/chunk';
import { type Header, MAX_CHUNKS, parseHeader } from '../../../src/crypto/format';
import { CiphertextReader } from '../../../src/crypto/framing';
import { zeroMessageKeys } from '../../../src/crypto/kdf';
import { openMessage, sealMessage } from '../../../src/crypto/message';
import { ErrorCode, SealboxError } from '../../../src/errors';
import { LARGEST_HEADER } from '../../helpers/fuzzing';
import { check, dekFor, fromFields, keysFor, preview, reauthenticate, underTest } from './common';

const OPEN_CODES: ReadonlySet<ErrorCode> = new Set([
  ErrorCode.CIPHERTEXT_MALFORMED,
  ErrorCode.CIPHERTEXT_CORRUPT,
  ErrorCode.CIPHERTEXT_TRUNCATED,
  ErrorCode.CONTEXT_MISMATCH,
  ErrorCode.KEY_NOT_FOUND,
]);
const READ_CODES: ReadonlySet<ErrorCode> = new Set([
  ErrorCode.CIPHERTEXT_MALFORMED,
  ErrorCode.CIPHERTEXT_TRUNCATED,
]);

/** Piece sizes for the split read: around the fixed header part and a 4 KiB record. */
const PIECES = [1, 2, 3, 43, 44, 45, 97, 4111, 4112, 4113, 5];

/** What a reader made of a ciphertext, in a form that does not depend on how it was split. */
interface ReadResult {
  readonly error?: string;
  readonly headerLength?: number;
  readonly records?: Buffer;
  readonly chunks?: number;
}

/** Reads the reader's private queue length; the invariant is about memory the reader holds. */
function held(reader: CiphertextReader): number {
  return (reader as unknown as { queue: { length: number } }).queue.length;
}

function read(bytes: Buffer, split: boolean): ReadResult {
  // Split: one chunk per segment, and segments may be views into the pushed pieces (the other
  // ByteQueue path). Whole: as openMessage reads.
  const reader = split
    ? new CiphertextReader(
        () => 1,
        () => false,
      )
    : new CiphertextReader(() => MAX_CHUNKS);
  const parts: Buffer[] = [];
  let nextIndex = 0;
  const take = (segments: ReadonlyArray<{ firstIndex: number; final: boolean; data: Buffer }>) => {
    for (const s of segments) {
      check(s.firstIndex === nextIndex, `segment starts at chunk ${s.firstIndex}, expected ${nextIndex}`);
      const record = reader.header!.chunkSize + CHUNK_OVERHEAD;
      check(
        s.final || (s.data.length > 0 && s.data.length % record === 0),
        'a non-final segment ends inside a record',
      );
      nextIndex += s.final ? 1 : s.data.length / record;
      parts.push(s.data);
    }
  };
  let at = 0;
  for (let i = 0; at < bytes.length || i === 0; i++) {
    const size = split ? PIECES[i % PIECES.length]! : bytes.length;
    const piece = bytes.subarray(at, at + size);
    at += piece.length;
    const pushed = underTest('CiphertextReader.push', bytes, READ_CODES, () => reader.push(piece));
    if (!pushed.ok) return { error: pushed.error.code };
    take(pushed.value.segments);
    const header = reader.header;
    if (header) {
      const limit = header.chunkSize + CHUNK_OVERHEAD;
      check(held(reader) <= limit, `reader holds ${held(reader)} bytes after the header (record ${limit})`);
    } else {
      check(held(reader) < LARGEST_HEADER, `reader holds ${held(reader)} bytes waiting for a header`);
    }
  }
  const finished = underTest('CiphertextReader.finish', bytes, READ_CODES, () => reader.finish());
  if (!finished.ok) return { error: finished.error.code };
  take([finished.value]);
  const headerLength = reader.header!.length;
  const records = Buffer.concat(parts);
  check(headerLength + records.length === bytes.length, 'every byte is accounted for');
  return { headerLength, records, chunks: nextIndex };
}

function sameRead(a: ReadResult, b: ReadResult): boolean {
  if (a.error !== undefined || b.error !== undefined) return a.error === b.error;
  return a.headerLength === b.headerLength && a.chunks === b.chunks && a.records!.equals(b.records!);
}

/** Opens `bytes`; when they open, checks that sealing the plaintext again reproduces them. */
function open(bytes: Buffer, what: string): string {
  const unwrap = (header: Header) => dekFor(header.messageId);
  const opened = underTest(what, bytes, OPEN_CODES, () => openMessage(bytes, unwrap));
  if (!opened.ok) return opened.error.code;
  const { header, plaintext } = opened.value;
  let resealed: Buffer;
  try {
    resealed = sealMessage(plaintext, {
      dek: dekFor(header.messageId),
      messageId: header.messageId,
      wrapped: { keyId: header.keyId, wrapAlgorithm: header.wrapAlgorithm, wrappedDek: header.wrappedDek },
      context: header.context,
      chunkSize: header.chunkSize,
    });
  } catch (err) {
    if (err instanceof SealboxError) {
      check(false, `${what}: opened, but sealing its plaintext again fails with ${err.code}: ${err.message}`);
    }
    throw err;
  }
  check(
    resealed.equals(bytes),
    `${what}: a non-canonical ciphertext opened (${preview(bytes)}); sealed again it is ${preview(resealed)}`,
  );
  return 'opened';
}

/**
 * The header followed by the body's records, each sealed afresh at its index (the last as final)
 * with its first length − 16 bytes as plaintext. A last record shorter than a tag stays as it is.
 */
function resealRecords(bytes: Buffer, header: Header): Buffer {
  const keys = keysFor(header);
  try {
    const out = Buffer.from(bytes);
    const record = header.chunkSize + CHUNK_OVERHEAD;
    for (let at = header.length, index = 0; at < out.length; at += record, index++) {
      const end = Math.min(at + record, out.length);
      if (end - at < CHUNK_OVERHEAD) break;
      const final = end === out.length;
      const plaintext = Buffer.from(out.subarray(at, end - CHUNK_OVERHEAD));
      gcmSealInto(
        keys.encryptionKey,
        chunkNonce(index, final),
        chunkAad(header.messageId, index, final),
        plaintext,
        out,
        at,
      );
    }
    return out;
  } finally {
    zeroMessageKeys(keys);
  }
}

/** Checks one input; returns what happened (the corpus replay in the CI test tallies these). */
export function outcome(raw: Buffer): string {
  const data = fromFields(raw);
  let input = data;
  let header: Header | undefined;
  try {
    header = parseHeader(data);
  } catch (err) {
    if (!(err instanceof SealboxError)) throw err;
  }
  if (header) {
    const keys = keysFor(header);
    input = reauthenticate(data, header, keys);
    zeroMessageKeys(keys);
  }

  const whole = read(input, false);
  const pieces = read(input, true);
  check(
    sameRead(whole, pieces),
    `the reader's result depends on how the input is split: whole ${JSON.stringify(whole.error ?? whole.chunks)}, ` +
      `in pieces ${JSON.stringify(pieces.error ?? pieces.chunks)}`,
  );

  const result = open(input, 'openMessage');
  if (!header) return result;
  const resealed = open(resealRecords(input, header), 'openMessage (records re-sealed)');
  return `${result} / resealed ${resealed}`;
}

/** Jazzer.js entry point. */
export function fuzz(data: Buffer): void {
  outcome(data);
}
