const strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/**
 * The UTF-8 text in `bytes[start, end)`, or undefined when it is not valid UTF-8 (strict: no
 * replacement characters, no BOM stripping).
 *
 * Why not just TextDecoder: header text fields (key ids, context keys and values) are short and
 * almost always ASCII, and a TextDecoder call on a fresh view costs more than the scan that proves a
 * run ASCII (ASCII is valid UTF-8 and decodes byte for byte, as latin1 does).
 */
export function utf8Text(bytes: Buffer, start: number, end: number): string | undefined {
  for (let i = start; i < end; i++) {
    if (bytes[i]! >= 0x80) {
      try {
        return strict.decode(bytes.subarray(start, end));
      } catch {
        return undefined;
      }
    }
  }
  return bytes.toString('latin1', start, end);
}
