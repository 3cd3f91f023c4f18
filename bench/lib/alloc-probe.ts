/**
 * Loaded into a benchmarked server with `node --require …/alloc-probe.js` (never imported by sealbox
 * itself): counts fresh Buffer bytes and garbage collections, and writes a snapshot to the file named
 * by SEALBOX_BENCH_PROBE_FILE each time the process receives SIGUSR2 (lib/server-probe.ts asks at
 * the edges of the measured window).
 *
 * What counts as a fresh Buffer byte: the size of every new backing store a Buffer gets where
 * JavaScript can see it being made —
 *   - `alloc`: Buffer.alloc/allocUnsafe/allocUnsafeSlow (sealbox's own buffers; grpc-js's response
 *     frame in serializeMessage; protobufjs's encoder), attributed to `concat` when Buffer.concat made
 *     the call (grpc-js reassembles every request message with it) and to `from` for Buffer.from copies;
 *   - `cipher`: the output of every Cipher/Decipher `update`/`final` (Node 20 allocates it anew each
 *     call; there is no form that writes into a given buffer);
 *   - `http2-read`: the ArrayBuffers HTTP/2 DATA arrives in, counted once per ArrayBuffer however
 *     many chunks are views into it (Node's HTTP/2 session makes one per socket read).
 * Not counted: allocations that never become a Buffer (nghttp2's and OpenSSL's own, V8 objects), and
 * the 8 KiB pool Node carves small Buffers from counts each small request rather than each refill —
 * both are negligible next to 1 MiB payloads. This is a count of allocations, not of memory in use
 * (process.memoryUsage() deltas would net out whatever GC freed in between).
 *
 * Garbage collections come from a PerformanceObserver on 'gc' entries: kind major (V8's full
 * mark-compact), minor (scavenge), incremental marking steps and weak-callback passes, with their
 * durations on the main thread.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { Readable } from 'node:stream';

const file = process.env['SEALBOX_BENCH_PROBE_FILE'];

const bytes = { alloc: 0, concat: 0, from: 0, cipher: 0, 'http2-read': 0 };
const gc = { major: 0, minor: 0, incremental: 0, weakcb: 0, majorMs: 0, totalMs: 0 };
let seq = 0;

if (file) install(file);

function install(path: string): void {
  let site: 'alloc' | 'concat' | 'from' = 'alloc';
  for (const name of ['alloc', 'allocUnsafe', 'allocUnsafeSlow'] as const) {
    const original = Buffer[name] as (size: number, ...rest: unknown[]) => Buffer;
    (Buffer as unknown as Record<string, unknown>)[name] = function (
      this: unknown,
      size: number,
      ...rest: unknown[]
    ) {
      bytes[site] += size;
      return original.call(this, size, ...rest);
    };
  }
  const concat = Buffer.concat;
  Buffer.concat = function (this: unknown, ...args: Parameters<typeof Buffer.concat>) {
    site = 'concat';
    try {
      return concat.apply(this, args);
    } finally {
      site = 'alloc';
    }
  } as typeof Buffer.concat;
  const from = Buffer.from as (...args: unknown[]) => Buffer;
  (Buffer as unknown as { from: unknown }).from = function (this: unknown, ...args: unknown[]) {
    const out = from.apply(this, args);
    // Buffer.from(arrayBuffer, …) is a view, not a copy.
    if (!(args[0] instanceof ArrayBuffer) && !(args[0] instanceof SharedArrayBuffer))
      bytes.from += out.length;
    return out;
  };

  const key = Buffer.alloc(32);
  const iv = Buffer.alloc(12);
  for (const made of [createCipheriv('aes-256-gcm', key, iv), createDecipheriv('aes-256-gcm', key, iv)]) {
    let proto = Object.getPrototypeOf(made) as Record<string, unknown> | null;
    while (proto && !Object.hasOwn(proto, 'update')) proto = Object.getPrototypeOf(proto);
    if (!proto || (proto['update'] as { probed?: boolean }).probed) continue;
    for (const name of ['update', 'final'] as const) {
      const original = proto[name] as (...args: unknown[]) => unknown;
      const wrapped = function (this: unknown, ...args: unknown[]) {
        const out = original.apply(this, args);
        if (Buffer.isBuffer(out)) bytes.cipher += out.length;
        return out;
      };
      (wrapped as { probed?: boolean }).probed = true;
      proto[name] = wrapped;
    }
  }

  const seen = new WeakSet<ArrayBufferLike>();
  const push = Readable.prototype.push;
  Readable.prototype.push = function (this: Readable, chunk: unknown, ...rest: unknown[]) {
    if (
      chunk instanceof Uint8Array &&
      this.constructor.name.endsWith('Http2Stream') &&
      !seen.has(chunk.buffer)
    ) {
      seen.add(chunk.buffer);
      bytes['http2-read'] += chunk.buffer.byteLength;
    }
    return push.call(this, chunk, ...(rest as [BufferEncoding]));
  };

  const kinds: Record<number, 'major' | 'minor' | 'incremental' | 'weakcb'> = {
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
  };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      const kind =
        kinds[((entry as { detail?: unknown }).detail as { kind?: number } | undefined)?.kind ?? -1];
      if (kind) gc[kind]++;
      if (kind === 'major') gc.majorMs += entry.duration;
      gc.totalMs += entry.duration;
    }
  }).observe({ entryTypes: ['gc'] });

  process.on('SIGUSR2', () => {
    // Let the observer deliver GC entries queued so far before taking the snapshot.
    setImmediate(() => {
      seq++;
      writeFileSync(path, JSON.stringify({ seq, bytes, gc, pid: process.pid }));
    });
  });
}
