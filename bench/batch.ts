/**
 * Many small records: EncryptBatch / DecryptBatch against one unary call per record, in one run on
 * one sealbox (default config, DEK cache on, an Azure key alias on the dev vault in its own process).
 * For 100 B and 1 KiB records: records/s of unary Encrypt and Decrypt at concurrency 64 (the load
 * generator of bench/unary.ts), then of batches of 100 and 1,000 records (bench/batch-client.ts, a
 * few batches in flight); server CPU µs per record (all of the server's threads, /proc, within each
 * window); the ciphertext expansion per record (ciphertext − plaintext bytes: the header and a tag);
 * and vault calls per batch over the whole run. The main ratio is batch ÷ unary records/s.
 * Writes bench/results/batch-<ts>.{json,svg}.
 *
 *   node <build>/bench/batch.js [--tiny|--quick|--full] [--seconds N] [--warmup N] [--config JSON]
 *     [--in-flight N] [--only id,id]   (--only runs just those cases, e.g. batch-encrypt-1024b-x1000,
 *     for profiling; ratios whose cases did not run are left out)
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { BatchClientResult } from './batch-client';
import { writeRatioChart } from './lib/chart';
import { type ClientRun, driveClient } from './lib/client-driver';
import { BENCH_LIB_DIR, runMain } from './lib/proc';
import { numberFlag, PROFILE_OPTIONS, pickProfile } from './lib/profile';
import {
  environment,
  fixed,
  parseConfig,
  progress,
  type Ratio,
  ratioOf,
  ratioTable,
  redactTokens,
  table,
  timestamp,
  writeRun,
} from './lib/report';
import { BENCH_KEY_ALIAS, spawnSealbox } from './lib/servers';
import { runUnaryClient } from './lib/unary-driver';
import { spawnDevVault, vaultCalls } from './lib/vault';

const BATCH_CLIENT_PATH = join(BENCH_LIB_DIR, '..', 'batch-client.js');

function options() {
  const { values } = parseArgs({
    options: {
      ...PROFILE_OPTIONS,
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      config: { type: 'string', default: '{}' },
      'in-flight': { type: 'string' },
      only: { type: 'string' },
    },
  });
  const profile = pickProfile(values);
  const tiny = profile === 'tiny';
  return {
    profile,
    recordBytes: tiny ? [100] : [100, 1024],
    batchSizes: tiny ? [100] : [100, 1000],
    unaryConcurrency: tiny ? 16 : 64,
    batchConcurrency: Math.max(1, Math.floor(numberFlag('in-flight', values['in-flight'], 2))),
    seconds: numberFlag('seconds', values.seconds, { tiny: 0.5, quick: 3, full: 10 }[profile]),
    warmup: numberFlag('warmup', values.warmup, { tiny: 0.25, quick: 1, full: 2 }[profile]),
    config: parseConfig(values.config ?? '{}'),
    only: values.only?.split(','),
  };
}

type Op = 'encrypt' | 'decrypt';
const OPS: readonly Op[] = ['encrypt', 'decrypt'];

interface CaseResult {
  readonly id: string;
  readonly op: Op;
  /** "unary" or "batch". */
  readonly api: 'unary' | 'batch';
  readonly recordBytes: number;
  /** Records per call: 1 for unary. */
  readonly batchSize: number;
  /** Calls in flight. */
  readonly concurrency: number;
  readonly recordsPerSecond: number | undefined;
  readonly serverCpuUsPerRecord: number | undefined;
  readonly clientCpuUsPerRecord: number | undefined;
  /** Latency of one call (one record for unary, one batch for batch). */
  readonly p50Ms: number | undefined;
  readonly p99Ms: number | undefined;
  /** Ciphertext − plaintext bytes per record (batch cases; the format is the same for unary). */
  readonly expansionBytes: number | undefined;
  readonly failed: number;
  readonly error?: string;
}

const sizeLabel = (bytes: number) => (bytes % 1024 === 0 ? `${bytes / 1024} KiB` : `${bytes} B`);
const caseId = (api: string, op: Op, bytes: number, n: number) => `${api}-${op}-${bytes}b-x${n}`;

/** Runs bench/batch-client in its own process; CPU of `watch` is read at the client's window edges. */
function runBatchClient(
  args: {
    target: string;
    mode: Op;
    batchSize: number;
    recordBytes: number;
    concurrency: number;
    seconds: number;
    warmup: number;
  },
  watch: Record<string, number>,
): Promise<ClientRun<BatchClientResult>> {
  return driveClient<BatchClientResult>(
    BATCH_CLIENT_PATH,
    [
      `--target=${args.target}`,
      `--mode=${args.mode}`,
      `--batch-size=${args.batchSize}`,
      `--record-bytes=${args.recordBytes}`,
      `--concurrency=${args.concurrency}`,
      `--seconds=${args.seconds}`,
      `--warmup=${args.warmup}`,
      `--key-alias=${BENCH_KEY_ALIAS}`,
    ],
    // batch-client has no drain setting: it stops calling at the window's end.
    { watch, expectedSeconds: args.seconds + args.warmup },
  );
}

async function main(): Promise<number> {
  const opts = options();
  const env = environment();
  const started = Date.now();
  const stamp = timestamp();
  progress(
    `batch (${opts.profile}): ${opts.seconds} s windows after ${opts.warmup} s warm-up; records ${opts.recordBytes.map(sizeLabel).join(', ')}; ` +
      `batches of ${opts.batchSizes.join(', ')} vs unary c${opts.unaryConcurrency}; load average ${(env.loadavgAtStart as number[]).join(' ')}`,
  );
  const vault = await spawnDevVault();
  const sealbox = await spawnSealbox(opts.config, 'sealbox', { keys: vault.sealboxKeys(BENCH_KEY_ALIAS) });
  progress(`sealbox pid ${sealbox.pid}, dev vault pid ${vault.pid}`);

  const results: CaseResult[] = [];
  let vaultTotals: ReturnType<typeof vaultCalls> | undefined;
  let batchCalls = 0;
  try {
    await vault.resetCounters();
    const total = opts.recordBytes.length * OPS.length * (1 + opts.batchSizes.length);
    const wanted = (id: string) => opts.only === undefined || opts.only.includes(id);
    const per = (s: number | undefined, n: number) => (s !== undefined && n > 0 ? (s / n) * 1e6 : undefined);
    let step = 0;
    for (const bytes of opts.recordBytes) {
      for (const op of OPS) {
        step++;
        const unaryId = caseId('unary', op, bytes, 1);
        if (wanted(unaryId)) {
          progress(`[${step}/${total}] ${unaryId}…`);
          const run = await runUnaryClient(
            {
              target: sealbox.target,
              mode: op,
              concurrency: opts.unaryConcurrency,
              payloadBytes: bytes,
              seconds: opts.seconds,
              warmup: opts.warmup,
              keyAlias: BENCH_KEY_ALIAS,
              drainSeconds: 5,
            },
            { server: sealbox.pid },
          );
          const calls = (run.client?.windowOk ?? 0) + (run.client?.windowFailed ?? 0);
          results.push({
            id: unaryId,
            op,
            api: 'unary',
            recordBytes: bytes,
            batchSize: 1,
            concurrency: opts.unaryConcurrency,
            recordsPerSecond: run.error ? undefined : run.client?.reqPerSecond,
            serverCpuUsPerRecord: per(run.cpuSeconds['server'], calls),
            clientCpuUsPerRecord: per(run.client?.clientCpuSeconds, calls),
            p50Ms: run.client?.latency.p50Ms,
            p99Ms: run.client?.latency.p99Ms,
            expansionBytes: undefined,
            failed: run.client?.totalFailed ?? 0,
            ...(run.error ? { error: run.error } : {}),
          });
          report(results.at(-1)!);
        }
        for (const n of opts.batchSizes) {
          step++;
          const id = caseId('batch', op, bytes, n);
          if (!wanted(id)) continue;
          progress(`[${step}/${total}] ${id}…`);
          const b = await runBatchClient(
            {
              target: sealbox.target,
              mode: op,
              batchSize: n,
              recordBytes: bytes,
              concurrency: opts.batchConcurrency,
              seconds: opts.seconds,
              warmup: opts.warmup,
            },
            { server: sealbox.pid },
          );
          const records = b.client?.windowRecords ?? 0;
          batchCalls += (b.client?.windowCalls ?? 0) + 1;
          results.push({
            id,
            op,
            api: 'batch',
            recordBytes: bytes,
            batchSize: n,
            concurrency: opts.batchConcurrency,
            recordsPerSecond: b.error ? undefined : b.client?.recordsPerSecond,
            serverCpuUsPerRecord: per(b.cpuSeconds['server'], records),
            clientCpuUsPerRecord: per(b.client?.clientCpuSeconds, records),
            p50Ms: b.client?.p50Ms,
            p99Ms: b.client?.p99Ms,
            expansionBytes: b.client?.meanExpansionBytes,
            failed: (b.client?.failedCalls ?? 0) + (b.client?.failedItems ?? 0),
            ...(b.error ? { error: b.error } : {}),
          });
          report(results.at(-1)!);
        }
      }
    }
    vaultTotals = vaultCalls(await vault.counters());
  } finally {
    await sealbox.stop();
    await vault.stop();
  }

  const byId = new Map(results.map((r) => [r.id, r]));
  const ratios: Ratio[] = [];
  const topBatch = Math.max(...opts.batchSizes);
  const topBytes = Math.max(...opts.recordBytes);
  for (const bytes of opts.recordBytes) {
    for (const op of OPS) {
      const unary = byId.get(caseId('unary', op, bytes, 1));
      for (const n of opts.batchSizes) {
        const batch = byId.get(caseId('batch', op, bytes, n));
        ratios.push({
          name: `${op} ${sizeLabel(bytes)} records: batch of ${n} ÷ unary c${opts.unaryConcurrency}, records/s`,
          value: ratioOf(batch?.recordsPerSecond, unary?.recordsPerSecond),
          main: n === topBatch && bytes === topBytes,
        });
        ratios.push({
          name: `${op} ${sizeLabel(bytes)} records: server CPU per record, unary ÷ batch of ${n}`,
          value: ratioOf(unary?.serverCpuUsPerRecord, batch?.serverCpuUsPerRecord),
        });
      }
    }
  }

  let out = `## Batch vs unary for small records (${opts.profile}: ${opts.seconds} s windows after ${opts.warmup} s warm-up)\n\n`;
  out +=
    `sealbox: default config (DEK cache on), Azure alias on the dev vault (RSA-${vault.info.keySize}). ` +
    `Unary: one Encrypt/Decrypt per record, ${opts.unaryConcurrency} calls in flight (bench/unary-client). ` +
    `Batch: ${opts.batchConcurrency} EncryptBatch/DecryptBatch calls in flight (bench/batch-client), each record with ` +
    'its own context. CPU µs per record counts all threads of the process within the window; expansion = ' +
    'ciphertext − plaintext bytes per record.\n\n';
  out += table(
    [
      'case',
      'record',
      'records/call',
      'in flight',
      'records/s',
      'server CPU µs/record',
      'client CPU µs/record',
      'p50 ms/call',
      'p99 ms/call',
      'expansion B/record',
      'failed',
    ],
    results.map((r) => [
      `${r.api} ${r.op}`,
      sizeLabel(r.recordBytes),
      r.batchSize,
      r.concurrency,
      r.error ? `⚠ ${r.error.slice(0, 60)}` : fixed(r.recordsPerSecond, 0),
      fixed(r.serverCpuUsPerRecord, 1),
      fixed(r.clientCpuUsPerRecord, 1),
      fixed(r.p50Ms),
      fixed(r.p99Ms),
      fixed(r.expansionBytes, 0),
      r.failed,
    ]),
  );
  out += `\n${ratioTable(ratios)}`;
  out += `\nvault calls over the whole run (${batchCalls} batch calls, unary calls besides): ${JSON.stringify(vaultTotals)}\n`;
  out += `node ${env.node}, ${env.cpus} CPUs (${env.cpuModel}), load average at start ${(env.loadavgAtStart as number[]).join(' ')}\n`;
  process.stdout.write(out);

  const chart = await writeRatioChart(
    `batch-${stamp}`,
    ratios.filter((r) => r.name.includes('records/s')),
    {
      title: 'sealbox batch RPCs vs one unary call per record (same run)',
      subtitle: `${opts.profile} profile`,
    },
  );
  const path = writeRun(
    'batch',
    { started, environment: env, options: opts },
    {
      vault: { ...vault.settings, keyId: vault.info.keyId },
      serverConfig: redactTokens(sealbox.config),
      vaultCallsWholeRun: vaultTotals,
      cases: results,
      ratios,
      chart,
    },
    stamp,
  );
  progress(`wrote ${path} and ${chart} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  return results.some((r) => r.error) ? 1 : 0;
}

function report(r: CaseResult): void {
  progress(
    r.error
      ? `  FAILED: ${r.error}`
      : `  ${fixed(r.recordsPerSecond, 0)} records/s, server ${fixed(r.serverCpuUsPerRecord, 1)} µs/record, ` +
          `client ${fixed(r.clientCpuUsPerRecord, 1)} µs/record, p50 ${fixed(r.p50Ms)} ms/call` +
          (r.expansionBytes !== undefined ? `, +${fixed(r.expansionBytes, 0)} B/record` : ''),
  );
}

runMain(main);
