/**
 * Jazzer.js target for the header parser (parseHeader, decodeContext, verifyHeader, rewrapHeader).
 * The input is the start of a ciphertext (the seeds in ../seeds are the v1 known-answer ciphertexts),
 * or a header spec that common.ts's fromFields turns into a correctly tagged header whose fields the
 * fuzzer chose.
 *
 * Properties, for every input:
 *  - parseHeader returns a header, returns undefined (wants more bytes) or throws
 *    CIPHERTEXT_MALFORMED, and allocates nothing beyond the input plus one maximal header;
 *  - it waits for more only while the input is shorter than the largest header the format allows,
 *    and padding such an input to MAX_HEADER_BYTES settles it;
 *  - a parsed header lies within the input and its fields within the format's bounds, and its
 *    context bytes are the canonical encoding of the decoded context;
 *  - verifyHeader with the stand-in KEK's keys passes or throws CIPHERTEXT_CORRUPT;
 *  - with a recomputed commitment and tag the header verifies, parses to the same fields, and
 *    rewrapHeader with the same envelope rebuilds it byte for byte (parse ∘ build = identity).
 */
import { encodeContext } from '../../../src/crypto/context';
import {
  COMMITMENT_BYTES,
  HEADER_TAG_BYTES,
  MAX_CHUNK_SIZE,
  MAX_HEADER_BYTES,
  MIN_CHUNK_SIZE,
  parseHeader,
  rewrapHeader,
  verifyHeader,
} from '../../../src/crypto/format';
import { zeroMessageKeys } from '../../../src/crypto/kdf';
import { ErrorCode } from '../../../src/errors';
import { LARGEST_HEADER } from '../../helpers/fuzzing';
import { check, fromFields, keysFor, preview, reauthenticate, underTest } from './common';

const MALFORMED = new Set([ErrorCode.CIPHERTEXT_MALFORMED]);
const CORRUPT = new Set([ErrorCode.CIPHERTEXT_CORRUPT]);
const NONE = new Set<ErrorCode>();

/** Checks one input; returns what happened (the corpus replay in the CI test tallies these). */
export function outcome(input: Buffer): string {
  const data = fromFields(input);
  const parsed = underTest('parseHeader', data, MALFORMED, () => parseHeader(data));
  if (!parsed.ok) return parsed.error.code;
  const header = parsed.value;

  if (!header) {
    check(data.length < LARGEST_HEADER, `parseHeader waits for more after ${data.length} bytes`);
    const padded = Buffer.concat([data, Buffer.alloc(MAX_HEADER_BYTES - data.length)]);
    const settled = underTest('parseHeader (padded)', padded, MALFORMED, () => parseHeader(padded));
    check(!settled.ok || settled.value, `still waiting after ${MAX_HEADER_BYTES} bytes: ${preview(data)}`);
    return 'wait';
  }

  check(header.length <= data.length, `header length ${header.length} > input ${data.length}`);
  check(header.length <= LARGEST_HEADER, `header length ${header.length}`);
  check(header.chunkSize >= MIN_CHUNK_SIZE && header.chunkSize <= MAX_CHUNK_SIZE, 'chunk size');
  check(header.authenticated.length === header.length - HEADER_TAG_BYTES, 'authenticated length');
  check(header.tag.length === HEADER_TAG_BYTES && header.commitment.length === COMMITMENT_BYTES, 'sizes');
  const contextLength = header.authenticated.readUInt16BE(42);
  const contextBytes = header.authenticated.subarray(44, 44 + contextLength);
  check(
    encodeContext(header.context).equals(contextBytes),
    `context ${preview(contextBytes)} decodes but is not canonical`,
  );

  const keys = keysFor(header);
  try {
    const verified = underTest('verifyHeader', data, CORRUPT, () => verifyHeader(header, keys));
    const bytes = data.subarray(0, header.length);
    const resigned = reauthenticate(bytes, header, keys);
    const again = underTest('parseHeader (re-signed)', resigned, NONE, () => parseHeader(resigned));
    check(again.ok && again.value, 're-signed header does not parse');
    const h2 = again.value;
    check(
      h2.length === header.length &&
        h2.chunkSize === header.chunkSize &&
        h2.keyId === header.keyId &&
        h2.wrapAlgorithm === header.wrapAlgorithm &&
        h2.messageId.equals(header.messageId) &&
        h2.wrappedDek.equals(header.wrappedDek),
      're-signed header parses to other fields',
    );
    underTest('verifyHeader (re-signed)', resigned, NONE, () => verifyHeader(h2, keys));
    const rebuilt = rewrapHeader(h2, keys, {
      keyId: h2.keyId,
      wrapAlgorithm: h2.wrapAlgorithm,
      wrappedDek: h2.wrappedDek,
    });
    check(
      rebuilt.equals(resigned),
      `rebuilding a parsed header changed it: ${preview(resigned)} → ${preview(rebuilt)}`,
    );
    return verified.ok ? 'verified' : 'header';
  } finally {
    zeroMessageKeys(keys);
  }
}

/** Jazzer.js entry point. */
export function fuzz(data: Buffer): void {
  outcome(data);
}
