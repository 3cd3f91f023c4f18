/**
 * How sealbox patches grpc-js privately (src/server/grpc-frame.ts, src/server/grpc-reassembly.ts):
 * one method of one exported class is replaced, and only when its source text is exactly the one the
 * replacement was written against. Otherwise nothing is changed and grpc-js runs as it always did.
 */

/** Source text with runs of whitespace collapsed, for comparing function bodies. */
export function normalize(source: string): string {
  return source.replace(/\s+/g, ' ').trim();
}

/**
 * Replaces `method` on the prototype of `className`, exported by grpc-js's build file `modulePath`,
 * when its normalized source equals `expectedSource`. Returns whether it did.
 */
export function replaceVerified(
  modulePath: string,
  className: string,
  method: string,
  expectedSource: string,
  replacement: (...args: never[]) => unknown,
): boolean {
  let proto: Record<string, unknown> | undefined;
  try {
    // grpc-js has no "exports" map, so its build files can be required; the classes are exported there.
    const module = require(modulePath) as Record<string, { prototype?: Record<string, unknown> } | undefined>;
    proto = module[className]?.prototype;
  } catch {
    proto = undefined;
  }
  const original = proto?.[method];
  if (!proto || typeof original !== 'function' || normalize(original.toString()) !== expectedSource) {
    return false;
  }
  proto[method] = replacement;
  return true;
}
