/**
 * Load generator for EncryptBatch / DecryptBatch, run in its own process (as bench/unary-client.ts,
 * whose window protocol it follows): keeps `--concurrency` batch calls in flight, each carrying
 * `--batch-size` records of `--record-bytes` bytes, and prints one JSON object (BatchClientResult).
 * When forked with IPC it sends {event:'window-start'|'window-end'} at the window's edges, so the
 * parent reads the server's CPU time at the same moments.
 *
 *   node batch-client.js --target unix:/path --mode encrypt|decrypt --batch-size N --record-bytes B
 *     [--concurrency C] --seconds S [--warmup W] [--key-alias A]
 *
 * encrypt: EncryptBatch of N random records, each with its own context {bench, row}.
 * decrypt: DecryptBatch of N ciphertexts made by one EncryptBatch before anything is measured, each
 *   with its expected context.
 * Every answer is checked: N results, no item errors, plaintexts (decrypt) of exactly B bytes.
 */
import './lib/watch-parent';
import { randomBytes } from 'node:crypto';
import { createHistogram } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { type ServiceError, status } from '@grpc/grpc-js';
import type { EnvelopeClient } from '../src/api/proto';
import { connectEnvelope } from '../src/client/client';
import type { DecryptBatchItem } from '../src/gen/sealbox/v1/DecryptBatchItem';
import type { EncryptBatchItem } from '../src/gen/sealbox/v1/EncryptBatchItem';

export interface BatchClientResult {
  readonly mode: 'encrypt' | 'decrypt';
  readonly batchSize: number;
  readonly recordBytes: number;
  readonly concurrency: number;
  readonly windowSeconds: number;
  /** Calls (batches) that completed inside the window, and their records. */
  readonly windowCalls: number;
  readonly windowRecords: number;
  readonly recordsPerSecond: number;
  /** Latency of one batch call (send → answer), window only. */
  readonly p50Ms: number | undefined;
  readonly p99Ms: number | undefined;
  readonly clientCpuSeconds: number;
  readonly failedCalls: number;
  readonly failedItems: number;
  readonly errors: Record<string, number>;
  readonly errorSamples: string[];
  /** Mean ciphertext bytes per record, and minus the plaintext: what the format adds per record. */
  readonly meanCiphertextBytes: number | undefined;
  readonly meanExpansionBytes: number | undefined;
  readonly verified: boolean;
  readonly error?: string;
}

function parse() {
  const { values } = parseArgs({
    options: {
      target: { type: 'string' },
      mode: { type: 'string', default: 'encrypt' },
      'batch-size': { type: 'string', default: '100' },
      'record-bytes': { type: 'string', default: '1024' },
      concurrency: { type: 'string', default: '2' },
      seconds: { type: 'string', default: '2' },
      warmup: { type: 'string', default: '0' },
      'key-alias': { type: 'string', default: 'bench' },
    },
  });
  const num = (name: keyof typeof values, min: number): number => {
    const n = Number(values[name]);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number ≥ ${min}`);
    return n;
  };
  if (!values.target) throw new Error('--target is required');
  if (values.mode !== 'encrypt' && values.mode !== 'decrypt') throw new Error('--mode is encrypt or decrypt');
  return {
    target: values.target,
    mode: values.mode as 'encrypt' | 'decrypt',
    batchSize: Math.floor(num('batch-size', 1)),
    recordBytes: Math.floor(num('record-bytes', 0)),
    concurrency: Math.floor(num('concurrency', 1)),
    seconds: num('seconds', 0.05),
    warmup: num('warmup', 0),
    keyAlias: values['key-alias']!,
  };
}

async function main(): Promise<BatchClientResult> {
  const args = parse();
  const client: EnvelopeClient = connectEnvelope(args.target);
  await new Promise<void>((resolve, reject) =>
    client.waitForReady(Date.now() + 20_000, (err) => (err ? reject(err) : resolve())),
  );
  const records: EncryptBatchItem[] = Array.from({ length: args.batchSize }, (_, i) => ({
    keyAlias: args.keyAlias,
    plaintext: randomBytes(args.recordBytes),
    context: { bench: 'batch', row: String(i) },
  }));
  const encryptOnce = () =>
    new Promise<Buffer[]>((resolve, reject) =>
      client.EncryptBatch({ items: records }, (err, res) =>
        err || !res
          ? reject(err)
          : resolve(res.results.map((r) => (r.errorCode ? Buffer.alloc(0) : r.ciphertext))),
      ),
    );
  // Made through the server before anything is measured; also gives the expansion per record.
  const sample = await encryptOnce();
  const meanCiphertextBytes = sample.reduce((n, c) => n + c.length, 0) / sample.length;
  let decryptItems: DecryptBatchItem[] = [];
  if (args.mode === 'decrypt') {
    decryptItems = sample.map((ciphertext, i) => ({ ciphertext, expectedContext: { row: String(i) } }));
  }

  const latency = createHistogram();
  let windowOpen = false;
  let stop = false;
  let windowCalls = 0;
  let failedCalls = 0;
  let failedItems = 0;
  let verified = sample.every((c) => c.length > args.recordBytes);
  const errors: Record<string, number> = {};
  const samples = new Set<string>();

  const once = () =>
    new Promise<void>((resolve) => {
      const sent = performance.now();
      const done = (
        err: ServiceError | null,
        results: Array<{ errorCode: string; plaintext?: Buffer }> = [],
      ) => {
        if (windowOpen) latency.record(Math.max(1, Math.round((performance.now() - sent) * 1000)));
        if (err) {
          failedCalls++;
          const name = status[err.code] ?? String(err.code);
          errors[name] = (errors[name] ?? 0) + 1;
          if (samples.size < 5) samples.add(`${name}: ${err.details}`.slice(0, 300));
        } else {
          if (results.length !== args.batchSize) verified = false;
          for (const r of results) {
            if (r.errorCode) {
              failedItems++;
              if (samples.size < 5) samples.add(`item ${r.errorCode}`);
            } else if (args.mode === 'decrypt' && r.plaintext!.length !== args.recordBytes) verified = false;
          }
          if (windowOpen) windowCalls++;
        }
        resolve();
      };
      if (args.mode === 'encrypt')
        client.EncryptBatch({ items: records }, (err, res) => done(err, res?.results));
      else client.DecryptBatch({ items: decryptItems }, (err, res) => done(err, res?.results));
    });

  let start = { at: 0, cpu: process.cpuUsage() };
  let end = start;
  const timers = [
    setTimeout(() => {
      process.send?.({ event: 'window-start' });
      windowOpen = true;
      start = { at: performance.now(), cpu: process.cpuUsage() };
    }, args.warmup * 1000),
    setTimeout(
      () => {
        end = { at: performance.now(), cpu: process.cpuUsage() };
        windowOpen = false;
        stop = true;
        process.send?.({ event: 'window-end' });
      },
      (args.warmup + args.seconds) * 1000,
    ),
  ];
  await Promise.all(
    Array.from({ length: args.concurrency }, async () => {
      while (!stop) await once();
    }),
  );
  for (const t of timers) clearTimeout(t);
  client.close();

  const windowSeconds = (end.at - start.at) / 1000;
  const windowRecords = windowCalls * args.batchSize;
  const ms = (us: number) => (latency.count > 0 ? us / 1000 : undefined);
  const errorSamples = [...samples];
  return {
    mode: args.mode,
    batchSize: args.batchSize,
    recordBytes: args.recordBytes,
    concurrency: args.concurrency,
    windowSeconds,
    windowCalls,
    windowRecords,
    recordsPerSecond: windowSeconds > 0 ? windowRecords / windowSeconds : 0,
    p50Ms: ms(latency.percentile(50)),
    p99Ms: ms(latency.percentile(99)),
    clientCpuSeconds: (end.cpu.user + end.cpu.system - start.cpu.user - start.cpu.system) / 1e6,
    failedCalls,
    failedItems,
    errors,
    errorSamples,
    meanCiphertextBytes,
    meanExpansionBytes: meanCiphertextBytes - args.recordBytes,
    verified,
    ...(failedCalls + failedItems > 0 || !verified
      ? { error: errorSamples[0] ?? 'an answer failed verification' }
      : {}),
  };
}

main().then(
  (result) => {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    process.exit(result.error ? 1 : 0);
  },
  (err: unknown) => {
    process.stderr.write(`batch-client: ${(err as Error)?.message ?? String(err)}\n`);
    process.exit(2);
  },
);
