/**
 * The Kubernetes KMS v2 face next to the envelope API's unary calls, in one run: Encrypt and Decrypt of
 * 32-byte seeds (what kube-apiserver sends) through v2.KeyManagementService on the KMS socket and
 * through sealbox.v1.Envelope Encrypt/Decrypt on the envelope socket, same sealbox process, two RSA
 * keys of the same size in one dev vault (its own process: 15 ms ± 5 ms per request, Azure's throttling
 * limits): the KMS face's key (alias "k8s"), which the envelope API serves to no one, and the
 * envelope callers' key.
 * Reports per case: calls/s, p50/p99 latency, server CPU µs per call (from /proc of the sealbox process
 * within the window) and vault calls per 1,000 operations (dev vault counters within the window).
 * Decrypts cycle over 64 ciphertexts made before the window (one sealbox DEK: the cache's case).
 * The load generator runs in this process (closed loop, `concurrency` calls in flight), so calls/s
 * is bounded by this process on a small machine; the server CPU per call is the comparable figure.
 * Writes bench/results/kms-<ts>.{json,svg}.
 *
 *   node <build>/bench/kms.js [--tiny|--quick|--full] [--seconds N] [--warmup N]
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { credentials } from '@grpc/grpc-js';
import {
  connectEnvelope,
  decrypt as envelopeDecrypt,
  encrypt as envelopeEncrypt,
} from '../src/client/client';
import { KMS_CONTEXT } from '../src/envelope/kms';
import { loadKmsApi } from '../src/server/kms';
import { writeRatioChart } from './lib/chart';
import { CpuWindow } from './lib/client-driver';
import { runMain, trackTempDir, waitForSocket } from './lib/proc';
import { numberFlag, PROFILE_OPTIONS, pickProfile } from './lib/profile';
import {
  environment,
  fixed,
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
import { BENCH_VAULT, spawnDevVault, vaultCalls } from './lib/vault';

/** The KMS face's alias: its own key, which the envelope API serves to no one (docs/kms.md). */
const KMS_ALIAS = 'k8s';

const SEED_BYTES = 32;
const CIPHERTEXTS = 64;

function options() {
  const { values } = parseArgs({
    options: { ...PROFILE_OPTIONS, seconds: { type: 'string' }, warmup: { type: 'string' } },
  });
  const profile = pickProfile(values);
  return {
    profile,
    concurrency: profile === 'tiny' ? [8] : [1, 16],
    seconds: numberFlag('seconds', values.seconds, { tiny: 0.5, quick: 2, full: 10 }[profile]),
    warmup: numberFlag('warmup', values.warmup, { tiny: 0.25, quick: 0.5, full: 2 }[profile]),
  };
}

type Face = 'kms' | 'envelope';
type Op = 'encrypt' | 'decrypt';
const CASES: ReadonlyArray<[Face, Op]> = [
  ['kms', 'encrypt'],
  ['envelope', 'encrypt'],
  ['kms', 'decrypt'],
  ['envelope', 'decrypt'],
];

interface CaseResult {
  readonly id: string;
  readonly face: Face;
  readonly op: Op;
  readonly concurrency: number;
  readonly calls: number;
  readonly failed: number;
  readonly callsPerSecond: number;
  readonly p50Ms: number | undefined;
  readonly p99Ms: number | undefined;
  readonly serverCpuUsPerCall: number | undefined;
  readonly vaultCallsPer1000: number;
  readonly vault: ReturnType<typeof vaultCalls>;
}

const percentile = (sorted: number[], p: number) =>
  sorted.length === 0
    ? undefined
    : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

/** Runs `call` with `concurrency` in flight for warm-up + window; latencies and counts of the window. */
async function closedLoop(
  call: (i: number) => Promise<void>,
  concurrency: number,
  warmupS: number,
  windowS: number,
  onWindowStart: () => Promise<void>,
): Promise<{ latencies: number[]; failed: number; seconds: number }> {
  const latencies: number[] = [];
  let failed = 0;
  let measuring = false;
  let stop = false;
  let i = 0;
  const worker = async () => {
    while (!stop) {
      const t0 = process.hrtime.bigint();
      const ok = await call(i++).then(
        () => true,
        () => false,
      );
      if (!measuring) continue;
      if (ok) latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
      else failed++;
    }
  };
  const workers = Array.from({ length: concurrency }, worker);
  await new Promise((r) => setTimeout(r, warmupS * 1000));
  await onWindowStart();
  const started = process.hrtime.bigint();
  measuring = true;
  await new Promise((r) => setTimeout(r, windowS * 1000));
  measuring = false;
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  stop = true;
  await Promise.all(workers);
  return { latencies, failed, seconds };
}

async function main(): Promise<number> {
  const opts = options();
  const env = environment();
  const started = Date.now();
  const stamp = timestamp();
  progress(
    `kms (${opts.profile}): ${opts.seconds} s windows after ${opts.warmup} s warm-up; ${SEED_BYTES}-byte seeds; concurrency ${opts.concurrency.join(', ')}`,
  );
  const vault = await spawnDevVault({ ...BENCH_VAULT, secondKey: true });
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-bench-kms-'));
  trackTempDir(dir);
  const kmsSocket = join(dir, 'kms.sock');
  const sealbox = await spawnSealbox({ kms: { socket: kmsSocket, alias: KMS_ALIAS } }, 'sealbox', {
    keys: {
      ...vault.sealboxKeys(BENCH_KEY_ALIAS),
      ...vault.sealboxKeys(KMS_ALIAS, vault.info.secondKey!.name),
    },
  });
  // spawnSealbox waited for the envelope socket; the KMS socket is bound a little later.
  await waitForSocket(kmsSocket, () => true);
  const KMS = loadKmsApi().v2.KeyManagementService;
  const kms = new KMS(`unix:${kmsSocket}`, credentials.createInsecure());
  const envelope = connectEnvelope(sealbox.target);
  const unary = <T>(fn: (cb: (err: Error | null, res?: T) => void) => void) =>
    new Promise<T>((resolve, reject) => fn((err, res) => (err || !res ? reject(err) : resolve(res))));
  const kmsEncrypt = (plaintext: Buffer) =>
    unary<{ ciphertext: Buffer; keyId: string; annotations: Record<string, Buffer> }>((cb) =>
      kms.Encrypt({ plaintext, uid: 'bench' }, cb),
    );
  const results: CaseResult[] = [];
  let status: { healthz: string; keyId: string } | undefined;
  try {
    // The key watcher's first read (at start) gives Status its key_id; wait for it.
    for (let i = 0; i < 100; i++) {
      status = await unary<{ healthz: string; keyId: string }>((cb) => kms.Status({}, cb));
      if (status.healthz === 'ok') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    if (status?.healthz !== 'ok') throw new Error(`the KMS plugin is not healthy: ${status?.healthz}`);
    const kmsCiphertexts = await Promise.all(
      Array.from({ length: CIPHERTEXTS }, () => kmsEncrypt(randomBytes(SEED_BYTES))),
    );
    const envelopeCiphertexts = await Promise.all(
      Array.from({ length: CIPHERTEXTS }, () =>
        envelopeEncrypt(envelope, BENCH_KEY_ALIAS, randomBytes(SEED_BYTES), KMS_CONTEXT),
      ),
    );
    const calls: Record<string, (i: number) => Promise<void>> = {
      'kms-encrypt': async () => {
        await kmsEncrypt(randomBytes(SEED_BYTES));
      },
      'envelope-encrypt': async () => {
        await envelopeEncrypt(envelope, BENCH_KEY_ALIAS, randomBytes(SEED_BYTES), KMS_CONTEXT);
      },
      'kms-decrypt': async (i) => {
        const c = kmsCiphertexts[i % CIPHERTEXTS]!;
        await unary((cb) =>
          kms.Decrypt(
            { ciphertext: c.ciphertext, keyId: c.keyId, annotations: c.annotations, uid: 'bench' },
            cb,
          ),
        );
      },
      'envelope-decrypt': async (i) => {
        await envelopeDecrypt(envelope, envelopeCiphertexts[i % CIPHERTEXTS]!.ciphertext, KMS_CONTEXT);
      },
    };
    for (const c of opts.concurrency) {
      for (const [face, op] of CASES) {
        const id = `${face}-${op}-c${c}`;
        progress(`${id}…`);
        const cpu = new CpuWindow({ server: sealbox.pid });
        let vault0: Record<string, number> = {};
        const run = await closedLoop(calls[`${face}-${op}`]!, c, opts.warmup, opts.seconds, async () => {
          vault0 = await vault.counters();
          cpu.open();
        });
        cpu.close();
        const serverCpu = cpu.seconds()['server'];
        const v = vaultCalls(await vault.counters(), vault0);
        const sorted = run.latencies.sort((a, b) => a - b);
        const n = run.latencies.length;
        const result: CaseResult = {
          id,
          face,
          op,
          concurrency: c,
          calls: n,
          failed: run.failed,
          callsPerSecond: n / run.seconds,
          p50Ms: percentile(sorted, 50),
          p99Ms: percentile(sorted, 99),
          serverCpuUsPerCall: serverCpu !== undefined && n > 0 ? (serverCpu / n) * 1e6 : undefined,
          vaultCallsPer1000: n > 0 ? (v.crypto / n) * 1000 : 0,
          vault: v,
        };
        results.push(result);
        progress(
          `  ${fixed(result.callsPerSecond, 0)} calls/s, p50 ${fixed(result.p50Ms)} ms, p99 ${fixed(result.p99Ms)} ms, ` +
            `server ${fixed(result.serverCpuUsPerCall, 0)} µs/call, vault ${fixed(result.vaultCallsPer1000)} per 1,000` +
            (result.failed > 0 ? `, ${result.failed} failed` : ''),
        );
      }
    }
  } finally {
    kms.close();
    envelope.close();
    await sealbox.stop();
    await vault.stop();
  }

  const byId = new Map(results.map((r) => [r.id, r]));
  const ratios: Ratio[] = [];
  const topC = Math.max(...opts.concurrency);
  for (const c of opts.concurrency) {
    for (const op of ['encrypt', 'decrypt'] as const) {
      const k = byId.get(`kms-${op}-c${c}`);
      const e = byId.get(`envelope-${op}-c${c}`);
      ratios.push({
        name: `${op} 32 B c${c}: KMS ÷ envelope calls/s`,
        value: ratioOf(k?.callsPerSecond, e?.callsPerSecond),
        main: c === topC,
      });
      ratios.push({
        name: `${op} 32 B c${c}: server CPU per call, KMS ÷ envelope`,
        value: ratioOf(k?.serverCpuUsPerCall, e?.serverCpuUsPerCall),
        main: c === topC && op === 'encrypt',
      });
    }
  }

  let out = `## KMS v2 vs envelope unary (${opts.profile}: ${opts.seconds} s windows after ${opts.warmup} s warm-up)\n\n`;
  out +=
    `One sealbox (DEK cache on), two Azure keys on the dev vault, the KMS face's and the envelope API's (RSA-${vault.info.keySize} each, ` +
    `${vault.info.latency.fixedMs}+[0,${vault.info.latency.jitterMs}] ms per request). 32-byte payloads; ` +
    'the KMS key_id at start: ' +
    `${status?.keyId}\n\n`;
  out += table(
    [
      'case',
      'concurrency',
      'calls/s',
      'p50 ms',
      'p99 ms',
      'server CPU µs/call',
      'vault calls / 1,000',
      'failed',
    ],
    results.map((r) => [
      `${r.face === 'kms' ? 'KMS' : 'envelope'} ${r.op === 'encrypt' ? 'Encrypt' : 'Decrypt'}`,
      r.concurrency,
      fixed(r.callsPerSecond, 0),
      fixed(r.p50Ms),
      fixed(r.p99Ms),
      fixed(r.serverCpuUsPerCall, 0),
      fixed(r.vaultCallsPer1000),
      r.failed,
    ]),
  );
  out += `\n${ratioTable(ratios)}`;
  out += `node ${env.node}, ${env.cpus} CPUs (${env.cpuModel}), load average at start ${(env.loadavgAtStart as number[]).join(' ')}\n`;
  process.stdout.write(out);

  const chart = await writeRatioChart(
    `kms-${stamp}`,
    ratios.filter((r) => r.main),
    {
      title: 'sealbox KMS v2 vs envelope unary, 32-byte seeds (same run)',
      subtitle: `${opts.profile} profile`,
    },
  );
  const path = writeRun(
    'kms',
    { started, environment: env, options: opts },
    {
      vault: { ...vault.settings, keyId: vault.info.keyId },
      serverConfig: redactTokens(sealbox.config),
      cases: results,
      ratios,
      chart,
    },
    stamp,
  );
  progress(`wrote ${path} and ${chart} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  return results.some((r) => r.calls === 0 || r.failed > 0) ? 1 : 0;
}

runMain(main);
