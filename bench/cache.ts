/**
 * The DEK cache on vs off, in one run against one dev vault (its own process: 15 ms ± 5 ms per
 * request, Azure's throttling limits, an RSA-2048 key): unary Encrypt of 1 KiB at concurrency 64, a
 * fresh sealbox per case, the vault's counters and throttling window reset before each. Reports
 * req/s (and on ÷ off), vault calls per 1,000 operations (the dev vault's wrapKey + unwrapKey
 * counters), throttling errors (RESOURCE_EXHAUSTED / UNAVAILABLE answers at the client, and the
 * vault's own 'throttled' count of 429s). Writes bench/results/cache-<ts>.{json,svg}.
 *
 * The quick profile's window is 10 s — one whole Key Vault throttling window — because with the cache
 * off the 4,000-per-10-s budget of an RSA-2048 key lasts a few seconds only: shorter windows would
 * never show what happens after it runs out.
 *
 *   node <build>/bench/cache.js [--tiny|--quick|--full] [--seconds N] [--warmup N] [--concurrency C]
 *     [--payload-bytes B]
 */
import { parseArgs } from 'node:util';
import { writeRatioChart } from './lib/chart';
import { runMain } from './lib/proc';
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
import { runUnaryClient, type UnaryRun } from './lib/unary-driver';
import { spawnDevVault, type VaultCalls, vaultCalls } from './lib/vault';

function options() {
  const { values } = parseArgs({
    options: {
      ...PROFILE_OPTIONS,
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      concurrency: { type: 'string', default: '64' },
      'payload-bytes': { type: 'string', default: '1024' },
    },
  });
  const profile = pickProfile(values);
  return {
    profile,
    seconds: numberFlag('seconds', values.seconds, { tiny: 1.5, quick: 10, full: 30 }[profile]),
    warmup: numberFlag('warmup', values.warmup, { tiny: 0.5, quick: 1, full: 2 }[profile]),
    concurrency: Math.max(1, Math.floor(numberFlag('concurrency', values.concurrency, 64))),
    payloadBytes: Math.max(1, Math.floor(numberFlag('payload-bytes', values['payload-bytes'], 1024))),
  };
}

interface CaseResult {
  readonly cache: 'on' | 'off';
  readonly reqPerSecond: number | undefined;
  readonly p50Ms: number | undefined;
  readonly p99Ms: number | undefined;
  readonly p999Ms: number | undefined;
  readonly serverCpuUsPerCall: number | undefined;
  /** Operations the client saw answered over the whole run (warm-up and drain included). */
  readonly operations: number;
  /** Vault requests over the whole run (counters reset before the sealbox started). */
  readonly vault: VaultCalls;
  /** Vault requests inside the measured window (counter snapshots at its edges). */
  readonly vaultInWindow: VaultCalls | undefined;
  /** wrapKey + unwrapKey per 1,000 operations, whole run. */
  readonly vaultCallsPer1000: number | undefined;
  /** wrapKey + unwrapKey per 1,000 operations answered inside the window. */
  readonly vaultCallsPer1000InWindow: number | undefined;
  /** RESOURCE_EXHAUSTED + UNAVAILABLE answers at the client, whole run. */
  readonly throttlingErrors: number;
  readonly errors: Record<string, number>;
  readonly sealboxErrors: Record<string, number>;
  readonly run: UnaryRun<Record<string, number>>;
}

async function main(): Promise<number> {
  const opts = options();
  const env = environment();
  const started = Date.now();
  const stamp = timestamp();
  progress(
    `cache (${opts.profile}): Encrypt ${opts.payloadBytes} B at concurrency ${opts.concurrency}, ${opts.seconds} s window after ${opts.warmup} s warm-up; load average ${(env.loadavgAtStart as number[]).join(' ')}`,
  );
  const vault = await spawnDevVault();
  progress(
    `dev vault pid ${vault.pid}, RSA-${vault.info.keySize}, throttling ${vault.info.throttling.enabled}`,
  );

  const results: CaseResult[] = [];
  const configs: Record<string, unknown> = {};
  try {
    for (const cache of ['on', 'off'] as const) {
      progress(`cache ${cache}…`);
      await vault.restartThrottleWindow();
      await vault.resetCounters();
      const sealbox = await spawnSealbox({ cache: { enabled: cache === 'on' } }, `sealbox-cache-${cache}`, {
        keys: vault.sealboxKeys(BENCH_KEY_ALIAS),
      });
      configs[cache] = redactTokens(sealbox.config);
      let run: UnaryRun<Record<string, number>>;
      try {
        run = await runUnaryClient(
          {
            target: sealbox.target,
            mode: 'encrypt',
            concurrency: opts.concurrency,
            payloadBytes: opts.payloadBytes,
            seconds: opts.seconds,
            warmup: opts.warmup,
            keyAlias: BENCH_KEY_ALIAS,
            drainSeconds: 3,
          },
          { server: sealbox.pid },
          { snapshot: () => vault.counters() },
        );
      } finally {
        await sealbox.stop();
      }
      const whole = vaultCalls(await vault.counters());
      const c = run.client;
      const operations = (c?.totalOk ?? 0) + (c?.totalFailed ?? 0);
      const windowOps = (c?.windowOk ?? 0) + (c?.windowFailed ?? 0);
      const inWindow = run.atStart && run.atEnd ? vaultCalls(run.atEnd, run.atStart) : undefined;
      const errors = c?.errors ?? {};
      const result: CaseResult = {
        cache,
        reqPerSecond: c?.reqPerSecond,
        p50Ms: c?.latency.p50Ms,
        p99Ms: c?.latency.p99Ms,
        p999Ms: c?.latency.p999Ms,
        serverCpuUsPerCall:
          run.cpuSeconds['server'] !== undefined && windowOps > 0
            ? (run.cpuSeconds['server'] / windowOps) * 1e6
            : undefined,
        operations,
        vault: whole,
        vaultInWindow: inWindow,
        vaultCallsPer1000: operations > 0 ? (whole.crypto / operations) * 1000 : undefined,
        vaultCallsPer1000InWindow:
          inWindow && windowOps > 0 ? (inWindow.crypto / windowOps) * 1000 : undefined,
        throttlingErrors: (errors['RESOURCE_EXHAUSTED'] ?? 0) + (errors['UNAVAILABLE'] ?? 0),
        errors,
        sealboxErrors: c?.sealboxErrors ?? {},
        run,
      };
      results.push(result);
      progress(
        `  ${fixed(result.reqPerSecond, 0)} req/s, ${operations} operations, vault ${JSON.stringify(whole)}, ` +
          `${result.throttlingErrors} throttling errors${run.client?.errorSamples.length ? ` (${run.client.errorSamples[0]})` : ''}`,
      );
    }
  } finally {
    await vault.stop();
  }

  const on = results.find((r) => r.cache === 'on');
  const off = results.find((r) => r.cache === 'off');
  const ratios: Ratio[] = [
    {
      name: 'cache on ÷ off: Encrypt req/s',
      value: ratioOf(on?.reqPerSecond, off?.reqPerSecond),
      main: true,
    },
    {
      // Not in the summary chart: tens of thousands, it would flatten every other bar.
      name: 'cache off ÷ on: vault calls per operation',
      value: ratioOf(off?.vaultCallsPer1000, on?.vaultCallsPer1000),
    },
    {
      name: 'cache on ÷ off: server CPU per call',
      value: ratioOf(on?.serverCpuUsPerCall, off?.serverCpuUsPerCall),
    },
    { name: 'cache off ÷ on: p99 latency', value: ratioOf(off?.p99Ms, on?.p99Ms) },
  ];

  let out =
    `## DEK cache on vs off (${opts.profile}: unary Encrypt ${opts.payloadBytes} B, concurrency ${opts.concurrency}, ` +
    `${opts.seconds} s window after ${opts.warmup} s warm-up)\n\n`;
  out +=
    `Dev vault: RSA-${vault.info.keySize} (Azure limit ${vault.info.keySize === 2048 ? '4,000' : vault.info.keySize === 3072 ? '1,000' : '500'} per 10 s), ` +
    `${vault.info.latency.fixedMs}+[0,${vault.info.latency.jitterMs}] ms per request; a fresh sealbox, throttling window and counters per case. ` +
    'Vault calls = wrapKey + unwrapKey (getKey separately); "whole run" includes warm-up and drain. Throttling errors = ' +
    "RESOURCE_EXHAUSTED + UNAVAILABLE answers; 429s = the vault's own count.\n\n";
  out += table(
    [
      'cache',
      'req/s',
      'p50 ms',
      'p99 ms',
      'p99.9 ms',
      'server CPU µs/call',
      'operations (whole run)',
      'vault calls / 1,000 ops (whole run)',
      'vault calls / 1,000 ops (window)',
      'getKey',
      'throttling errors',
      'vault 429s',
    ],
    results.map((r) => [
      r.cache,
      fixed(r.reqPerSecond, 0),
      fixed(r.p50Ms),
      fixed(r.p99Ms),
      fixed(r.p999Ms),
      fixed(r.serverCpuUsPerCall, 0),
      r.operations,
      fixed(r.vaultCallsPer1000, 2),
      fixed(r.vaultCallsPer1000InWindow, 2),
      r.vault.getKey,
      r.throttlingErrors,
      r.vault.throttled,
    ]),
  );
  out += `\n${ratioTable(ratios)}`;
  for (const r of results) {
    if (Object.keys(r.errors).length > 0)
      out += `\ncache ${r.cache} errors: ${JSON.stringify(r.errors)} ${JSON.stringify(r.sealboxErrors)}; e.g. ${r.run.client?.errorSamples[0] ?? ''}`;
  }
  out += `\nnode ${env.node}, ${env.cpus} CPUs, load average at start ${(env.loadavgAtStart as number[]).join(' ')}\n`;
  process.stdout.write(out);

  const chart = await writeRatioChart(`cache-${stamp}`, ratios, {
    title: 'DEK cache on vs off (same run)',
    subtitle: `unary Encrypt ${opts.payloadBytes} B, concurrency ${opts.concurrency}, ${opts.profile} profile`,
  });
  const path = writeRun(
    'cache',
    { started, environment: env, options: opts },
    {
      vault: { ...vault.settings, keyId: vault.info.keyId },
      serverConfigs: configs,
      cases: Object.fromEntries(results.map((r) => [r.cache, r])),
      ratios,
      chart,
    },
    stamp,
  );
  progress(`wrote ${path} and ${chart} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  return results.length === 2 && results.every((r) => r.run.client !== undefined) ? 0 : 1;
}

runMain(main);
