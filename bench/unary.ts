/**
 * Unary Encrypt and Decrypt next to two echoes, in one run: a plain grpc-js unary echo (EchoUnary:
 * Buffers in and out, no protobuf) and a protobuf-shaped echo (sealbox.v1.Envelope Encrypt/Decrypt
 * decoded and answered with the real codec at sealbox's response sizes, no crypto; lib/echo-service.ts).
 * 1 KiB and 64 KiB payloads
 * at concurrency 1, 16 and 64, each case a measured window after a warm-up, from a load generator in
 * its own process (bench/unary-client.ts). sealbox runs with its default config (DEK cache on) and an
 * Azure key alias on the dev vault (its own process: 15 ms ± 5 ms per request, Azure's throttling
 * limits). Reports req/s, p50/p99/p99.9 latency, and server CPU per call (µs, from /proc of the
 * server within the window) — a Node load generator saturates first on this box, so server CPU per
 * call is the figure that says what sealbox costs; its ratio to the protobuf echo's is what sealbox's
 * own path costs over grpc-js + protobuf. Writes bench/results/unary-<ts>.{json,svg}.
 * Read gate off: --config '{"envelope":{"unaryReadConcurrency":4096}}'.
 *
 *   node <build>/bench/unary.js [--tiny|--quick|--full] [--seconds N] [--warmup N] [--channels K]
 *     [--config JSON] [--sizes B,B…] [--concurrency C,C…] [--ops echo,pb-echo-encrypt,encrypt,…]
 */

import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { connectEnvelope } from '../src/client/client';
import { writeRatioChart } from './lib/chart';
import { PB_ECHO_ENV, type PbEchoShape } from './lib/echo-service';
import { cpuTime, runMain } from './lib/proc';
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
import { BENCH_KEY_ALIAS, spawnEcho, spawnSealbox } from './lib/servers';
import { runUnaryClient, type UnaryRun } from './lib/unary-driver';
import { spawnDevVault, vaultCalls } from './lib/vault';

const KiB = 1024;

function options() {
  const { values } = parseArgs({
    options: {
      ...PROFILE_OPTIONS,
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      channels: { type: 'string', default: '1' },
      config: { type: 'string', default: '{}' },
      sizes: { type: 'string' },
      concurrency: { type: 'string' },
      ops: { type: 'string' },
    },
  });
  const ops = values.ops === undefined ? OPS : (values.ops.split(',') as Op[]);
  const unknown = ops.filter((op) => !OPS.includes(op));
  if (unknown.length > 0) throw new Error(`--ops takes some of ${OPS.join(',')}; not ${unknown.join(',')}`);
  const list = (name: string, text: string | undefined, fallback: number[]): number[] => {
    if (text === undefined) return fallback;
    const values = text.split(',').map((v) => Math.floor(numberFlag(name, v, 1)));
    if (values.some((v) => v < 1)) throw new Error(`--${name} takes positive integers, e.g. 1024,65536`);
    return values;
  };
  const profile = pickProfile(values);
  const tiny = profile === 'tiny';
  return {
    profile,
    sizes: list('sizes', values.sizes, tiny ? [KiB] : [KiB, 64 * KiB]),
    concurrency: list('concurrency', values.concurrency, tiny ? [16] : [1, 16, 64]),
    seconds: numberFlag('seconds', values.seconds, { tiny: 0.5, quick: 2, full: 10 }[profile]),
    warmup: numberFlag('warmup', values.warmup, { tiny: 0.25, quick: 1, full: 2 }[profile]),
    ops,
    channels: Math.max(1, Math.floor(numberFlag('channels', values.channels, 1))),
    config: parseConfig(values.config ?? '{}'),
  };
}

type Op = 'echo' | 'pb-echo-encrypt' | 'pb-echo-decrypt' | 'encrypt' | 'decrypt';
/** Each sealbox case right after its protobuf echo twin, all after the raw echo, per size × concurrency. */
const OPS: readonly Op[] = ['echo', 'pb-echo-encrypt', 'encrypt', 'pb-echo-decrypt', 'decrypt'];
/** The load generator's mode for an op (the protobuf echo is driven exactly like sealbox). */
const CLIENT_MODE = {
  echo: 'echo',
  'pb-echo-encrypt': 'encrypt',
  'pb-echo-decrypt': 'decrypt',
  encrypt: 'encrypt',
  decrypt: 'decrypt',
} as const;
const OP_LABEL: Record<Op, string> = {
  echo: 'echo (EchoUnary, no protobuf)',
  'pb-echo-encrypt': 'protobuf echo (Encrypt shape)',
  'pb-echo-decrypt': 'protobuf echo (Decrypt shape)',
  encrypt: 'sealbox Encrypt',
  decrypt: 'sealbox Decrypt',
};
/** The context unary-client.ts seals with: the probe uses it too, so header sizes match. */
const CONTEXT = { bench: 'unary' };

/**
 * The protobuf echo's response shape, read off the sealbox under test: one Encrypt per payload size
 * (outside any window) gives the ciphertext overhead and the key id.
 */
async function probeShape(target: string, sizes: readonly number[]): Promise<PbEchoShape> {
  const client = connectEnvelope(target);
  try {
    const overheads: Record<string, number> = {};
    let keyId = '';
    for (const size of sizes) {
      const res = await new Promise<{ ciphertext: Buffer; keyId: string }>((resolve, reject) =>
        client.Encrypt(
          { keyAlias: BENCH_KEY_ALIAS, plaintext: randomBytes(size), context: CONTEXT },
          (err, r) => (err || !r ? reject(err ?? new Error('no response')) : resolve(r)),
        ),
      );
      overheads[String(size)] = res.ciphertext.length - size;
      keyId = res.keyId;
    }
    return { overheads, defaultOverhead: Math.max(...Object.values(overheads)), keyId };
  } finally {
    client.close();
  }
}

interface CaseResult {
  readonly id: string;
  readonly op: Op;
  readonly payloadBytes: number;
  readonly concurrency: number;
  readonly reqPerSecond: number | undefined;
  readonly p50Ms: number | undefined;
  readonly p99Ms: number | undefined;
  readonly p999Ms: number | undefined;
  readonly serverCpuUsPerCall: number | undefined;
  readonly clientCpuUsPerCall: number | undefined;
  /** Dev vault CPU per call (µs); sealbox cases only. */
  readonly vaultCpuUsPerCall: number | undefined;
  readonly failed: number;
  readonly errors: Record<string, number>;
  readonly run: UnaryRun;
}

const sizeLabel = (bytes: number) => (bytes % KiB === 0 ? `${bytes / KiB} KiB` : `${bytes} B`);
const caseId = (op: Op, size: number, c: number) => `${op}-${size / KiB}k-c${c}`;

async function main(): Promise<number> {
  const opts = options();
  const env = environment();
  const started = Date.now();
  const stamp = timestamp();
  progress(
    `unary (${opts.profile}): ${opts.seconds} s windows after ${opts.warmup} s warm-up; sizes ${opts.sizes.map(sizeLabel).join(', ')}; ` +
      `concurrency ${opts.concurrency.join(', ')}; load average ${(env.loadavgAtStart as number[]).join(' ')}`,
  );

  const vault = await spawnDevVault();
  progress(
    `dev vault pid ${vault.pid} (${vault.info.url}), RSA-${vault.info.keySize} key, latency ${vault.info.latency.fixedMs}+[0,${vault.info.latency.jitterMs}] ms, throttling ${vault.info.throttling.enabled ? 'on (Azure limits)' : 'off'}`,
  );
  const sealbox = await spawnSealbox(opts.config, 'sealbox', { keys: vault.sealboxKeys(BENCH_KEY_ALIAS) });
  const shape = await probeShape(sealbox.target, opts.sizes);
  const echo = await spawnEcho('echo', { env: { [PB_ECHO_ENV]: JSON.stringify(shape) } });
  progress(
    `sealbox pid ${sealbox.pid}, echo pid ${echo.pid} (protobuf echo overheads ${JSON.stringify(shape.overheads)})`,
  );

  const results: CaseResult[] = [];
  let vaultTotals: ReturnType<typeof vaultCalls> | undefined;
  try {
    await vault.resetCounters();
    const total = opts.sizes.length * opts.concurrency.length * opts.ops.length;
    let step = 0;
    for (const size of opts.sizes) {
      for (const c of opts.concurrency) {
        for (const op of opts.ops) {
          step++;
          const id = caseId(op, size, c);
          progress(`[${step}/${total}] ${id}…`);
          const sealboxCase = op === 'encrypt' || op === 'decrypt';
          const server = sealboxCase ? sealbox : echo;
          const run = await runUnaryClient(
            {
              target: server.target,
              mode: CLIENT_MODE[op],
              concurrency: c,
              payloadBytes: size,
              seconds: opts.seconds,
              warmup: opts.warmup,
              keyAlias: BENCH_KEY_ALIAS,
              channels: opts.channels,
              drainSeconds: 5,
            },
            { server: server.pid, vault: vault.pid },
          );
          const calls = (run.client?.windowOk ?? 0) + (run.client?.windowFailed ?? 0);
          const perCall = (s: number | undefined) =>
            s !== undefined && calls > 0 ? (s / calls) * 1e6 : undefined;
          const result: CaseResult = {
            id,
            op,
            payloadBytes: size,
            concurrency: c,
            reqPerSecond: run.error ? undefined : run.client?.reqPerSecond,
            p50Ms: run.client?.latency.p50Ms,
            p99Ms: run.client?.latency.p99Ms,
            p999Ms: run.client?.latency.p999Ms,
            serverCpuUsPerCall: perCall(run.cpuSeconds['server']),
            clientCpuUsPerCall: perCall(run.client?.clientCpuSeconds),
            vaultCpuUsPerCall: sealboxCase ? perCall(run.cpuSeconds['vault']) : undefined,
            failed: run.client?.totalFailed ?? 0,
            errors: run.client?.errors ?? {},
            run,
          };
          results.push(result);
          progress(
            run.error
              ? `  FAILED: ${run.error}`
              : `  ${fixed(result.reqPerSecond, 0)} req/s, p50 ${fixed(result.p50Ms)} ms, p99 ${fixed(result.p99Ms)} ms, ` +
                  `server ${fixed(result.serverCpuUsPerCall, 0)} µs/call, client ${fixed(result.clientCpuUsPerCall, 0)} µs/call` +
                  (result.failed > 0 ? `, ${result.failed} failed ${JSON.stringify(result.errors)}` : ''),
          );
        }
      }
    }
    vaultTotals = vaultCalls(await vault.counters());
  } finally {
    const cpu = cpuTime(sealbox.pid);
    await Promise.all([sealbox.stop(), echo.stop()]);
    await vault.stop();
    progress(`servers stopped (sealbox ${fixed(cpu, 1)} CPU s in total)`);
  }

  const byId = new Map(results.map((r) => [r.id, r]));
  const get = (op: Op, size: number, c: number) => byId.get(caseId(op, size, c));
  const ratios: Ratio[] = [];
  const topC = Math.max(...opts.concurrency);
  // Per case, both baselines: the raw echo (transport alone) and the protobuf echo (transport +
  // protobuf at sealbox's sizes). Main: at the top concurrency, req/s against the raw echo (as before),
  // and for the smallest size server CPU per call against the protobuf echo (what sealbox's own path
  // costs) and p99 against the raw echo's (the tail).
  for (const size of opts.sizes) {
    for (const c of opts.concurrency) {
      const echoCase = get('echo', size, c);
      for (const op of ['encrypt', 'decrypt'] as const) {
        const s = get(op, size, c);
        const pb = get(op === 'encrypt' ? 'pb-echo-encrypt' : 'pb-echo-decrypt', size, c);
        const first = c === topC && size === opts.sizes[0];
        const name = (what: string) => `unary ${op} ${sizeLabel(size)} c${c}: ${what}`;
        ratios.push(
          {
            name: name('sealbox ÷ echo req/s'),
            value: ratioOf(s?.reqPerSecond, echoCase?.reqPerSecond),
            main: c === topC,
          },
          {
            name: name('sealbox ÷ protobuf echo req/s'),
            value: ratioOf(s?.reqPerSecond, pb?.reqPerSecond),
          },
          {
            name: name('server CPU per call, sealbox ÷ echo'),
            value: ratioOf(s?.serverCpuUsPerCall, echoCase?.serverCpuUsPerCall),
            main: first && op === 'encrypt',
          },
          {
            name: name('server CPU per call, sealbox ÷ protobuf echo'),
            value: ratioOf(s?.serverCpuUsPerCall, pb?.serverCpuUsPerCall),
            main: first,
          },
          {
            name: name('p99 latency, sealbox ÷ echo'),
            value: ratioOf(s?.p99Ms, echoCase?.p99Ms),
            main: first,
          },
          {
            name: name('p99.9 latency, sealbox ÷ echo'),
            value: ratioOf(s?.p999Ms, echoCase?.p999Ms),
          },
        );
      }
    }
  }

  const windowNote = `${opts.seconds} s window after ${opts.warmup} s warm-up, ${opts.channels} channel(s), one load-generator process`;
  let out = `## Unary (${opts.profile}: ${windowNote})\n\n`;
  out +=
    `sealbox: default config (DEK cache on), Azure alias on the dev vault (RSA-${vault.info.keySize}, ` +
    `${vault.info.latency.fixedMs}+[0,${vault.info.latency.jitterMs}] ms per request, throttling ${vault.info.throttling.enabled ? 'on' : 'off'}). ` +
    'echo: grpc-js EchoUnary, no protobuf, no crypto. protobuf echo: sealbox.v1.Envelope Encrypt/Decrypt ' +
    "decoded and answered with the real codec at sealbox's response sizes, no crypto, same server options " +
    'and socket type. Latency = send → answer at the client; CPU µs per call ' +
    'counts all threads of that process within the window.\n\n';
  out += table(
    [
      'case',
      'payload',
      'concurrency',
      'req/s',
      'p50 ms',
      'p99 ms',
      'p99.9 ms',
      'server CPU µs/call',
      'client CPU µs/call',
      'failed',
    ],
    results.map((r) => [
      OP_LABEL[r.op],
      sizeLabel(r.payloadBytes),
      r.concurrency,
      r.run.error ? `⚠ ${r.run.error.slice(0, 60)}` : fixed(r.reqPerSecond, 0),
      fixed(r.p50Ms),
      fixed(r.p99Ms),
      fixed(r.p999Ms),
      fixed(r.serverCpuUsPerCall, 0),
      fixed(r.clientCpuUsPerCall, 0),
      r.failed > 0 ? `${r.failed} ${JSON.stringify(r.errors)}` : 0,
    ]),
  );
  out += `\n${ratioTable(ratios)}`;
  out += `\nvault calls over the whole run: ${JSON.stringify(vaultTotals)}\n`;
  out += `node ${env.node}, ${env.cpus} CPUs (${env.cpuModel}), load average at start ${(env.loadavgAtStart as number[]).join(' ')}\n`;
  process.stdout.write(out);

  const chart = await writeRatioChart(
    `unary-${stamp}`,
    ratios.filter((r) => r.main),
    {
      title: 'sealbox unary vs grpc-js echo and protobuf echo (same run)',
      subtitle: `${opts.profile} profile, concurrency ${topC}`,
    },
  );
  const path = writeRun(
    'unary',
    { started, environment: env, options: opts },
    {
      vault: { ...vault.settings, keyId: vault.info.keyId },
      serverConfig: redactTokens(sealbox.config),
      pbEchoShape: shape,
      vaultCallsWholeRun: vaultTotals,
      cases: results,
      ratios,
      chart,
    },
    stamp,
  );
  progress(`wrote ${path} and ${chart} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  return results.some((r) => r.run.error) ? 1 : 0;
}

runMain(main);
