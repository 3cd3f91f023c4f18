/**
 * Cold-start storm: 1,000 Decrypts sent at once to a sealbox that has just started (empty DEK cache),
 * once for 1,000 ciphertexts under 1 DEK and once for 1,000 ciphertexts under 100 DEKs (10 each).
 * Reports the dev vault's calls (unwrapKey, getKey, 429s; counters reset before each storm) and the
 * time to drain (first send → last answer, at the client), next to the same storm of 1,000 unary
 * echoes on the grpc-js echo server. The ciphertexts are sealed beforehand by other sealbox
 * processes (1 DEK: the default cache; 100 DEKs: cache.encrypt.maxMessages 10, refreshAhead 0).
 * Each storm runs `--repeat` times on a fresh sealbox; medians are reported.
 * Writes bench/results/storm-<ts>.{json,svg}.
 *
 *   node <build>/bench/storm.js [--tiny|--quick|--full] [--requests N] [--deks D] [--repeat R]
 *     [--payload-bytes B] [--config JSON]
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeRatioChart } from './lib/chart';
import { runMain, trackTempDir } from './lib/proc';
import { numberFlag, PROFILE_OPTIONS, pickProfile } from './lib/profile';
import {
  environment,
  fixed,
  median,
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
import { spawnDevVault, type VaultCalls, vaultCalls } from './lib/vault';

function options() {
  const { values } = parseArgs({
    options: {
      ...PROFILE_OPTIONS,
      requests: { type: 'string', default: '1000' },
      deks: { type: 'string', default: '100' },
      repeat: { type: 'string' },
      'payload-bytes': { type: 'string', default: '1024' },
      config: { type: 'string', default: '{}' },
    },
  });
  const profile = pickProfile(values);
  const requests = Math.max(1, Math.floor(numberFlag('requests', values.requests, 1000)));
  const deks = Math.max(1, Math.floor(numberFlag('deks', values.deks, 100)));
  if (requests % deks !== 0) throw new Error('--requests must be a multiple of --deks');
  return {
    profile,
    requests,
    deks,
    repeat: Math.max(
      1,
      Math.floor(numberFlag('repeat', values.repeat, { tiny: 1, quick: 3, full: 5 }[profile])),
    ),
    payloadBytes: Math.max(1, Math.floor(numberFlag('payload-bytes', values['payload-bytes'], 1024))),
    /** Extra sealbox config for the storm sealbox (not the sealing ones). */
    config: parseConfig(values.config ?? '{}'),
  };
}

interface StormRun {
  readonly drainSeconds: number | undefined;
  readonly vault: VaultCalls | undefined;
  readonly vaultCounters: Record<string, number> | undefined;
  readonly serverCpuSeconds: number | undefined;
  readonly vaultCpuSeconds: number | undefined;
  readonly ok: number;
  readonly failed: number;
  readonly errors: Record<string, number>;
  readonly p50Ms: number | undefined;
  readonly p99Ms: number | undefined;
  readonly maxMs: number | undefined;
  readonly run: UnaryRun;
}

interface StormCase {
  readonly id: string;
  readonly label: string;
  /** Distinct wrapped DEKs among the ciphertexts (checked from their headers). */
  readonly distinctDeks: number | undefined;
  readonly runs: StormRun[];
  readonly drainSeconds: number | undefined;
  readonly unwrapKey: number | undefined;
  readonly getKey: number | undefined;
  readonly throttled: number | undefined;
  readonly failed: number;
}

async function main(): Promise<number> {
  const opts = options();
  const env = environment();
  const started = Date.now();
  const stamp = timestamp();
  progress(
    `storm (${opts.profile}): ${opts.requests} concurrent Decrypts of ${opts.payloadBytes} B over 1 and ${opts.deks} DEKs, ` +
      `${opts.repeat} repeat(s); load average ${(env.loadavgAtStart as number[]).join(' ')}`,
  );
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-bench-storm-'));
  trackTempDir(dir);
  const vault = await spawnDevVault();
  const keys = vault.sealboxKeys(BENCH_KEY_ALIAS);
  progress(`dev vault pid ${vault.pid}, RSA-${vault.info.keySize}`);

  const cases: StormCase[] = [];
  let stormConfig: unknown;
  try {
    // 1. Seal the ciphertexts, each set on a sealbox of its own.
    const sets = [
      { id: '1-dek', label: '1 DEK', deks: 1, cache: {} },
      {
        id: `${opts.deks}-deks`,
        label: `${opts.deks} DEKs`,
        deks: opts.deks,
        cache: { encrypt: { maxMessages: opts.requests / opts.deks, refreshAhead: 0 } },
      },
    ];
    const sealedFiles = new Map<string, { file: string; distinctDeks: number | undefined }>();
    for (const set of sets) {
      const file = join(dir, `${set.id}.bin`);
      await vault.restartThrottleWindow();
      const sealer = await spawnSealbox({ cache: set.cache }, `sealbox-seal-${set.id}`, { keys });
      try {
        const run = await runUnaryClient(
          {
            target: sealer.target,
            mode: 'seal',
            concurrency: 64,
            payloadBytes: opts.payloadBytes,
            requests: opts.requests,
            keyAlias: BENCH_KEY_ALIAS,
            out: file,
          },
          { server: sealer.pid },
        );
        if (run.error || run.client?.totalOk !== opts.requests)
          throw new Error(`sealing ${set.label} failed: ${run.error ?? JSON.stringify(run.client?.errors)}`);
        sealedFiles.set(set.id, { file, distinctDeks: run.client?.distinctDeks });
        progress(`sealed ${opts.requests} messages under ${run.client?.distinctDeks} DEK(s) (${set.id})`);
      } finally {
        await sealer.stop();
      }
    }

    // 2. The storms: a fresh sealbox each time, counters and throttling window reset before it.
    for (const set of sets) {
      const sealed = sealedFiles.get(set.id)!;
      const runs: StormRun[] = [];
      for (let r = 1; r <= opts.repeat; r++) {
        await vault.restartThrottleWindow();
        const sealbox = await spawnSealbox(opts.config, `sealbox-storm-${set.id}`, { keys });
        stormConfig = redactTokens(sealbox.config);
        await vault.resetCounters();
        try {
          const run = await runUnaryClient(
            {
              target: sealbox.target,
              mode: 'decrypt',
              concurrency: opts.requests,
              payloadBytes: opts.payloadBytes,
              requests: opts.requests,
              ciphertexts: sealed.file,
            },
            { server: sealbox.pid, vault: vault.pid },
          );
          const counters = await vault.counters();
          const c = run.client;
          runs.push({
            drainSeconds: run.error ? undefined : c?.drainSeconds,
            vault: vaultCalls(counters),
            vaultCounters: counters,
            serverCpuSeconds: run.cpuSeconds['server'],
            vaultCpuSeconds: run.cpuSeconds['vault'],
            ok: c?.totalOk ?? 0,
            failed: c?.totalFailed ?? 0,
            errors: c?.errors ?? {},
            p50Ms: c?.latency.p50Ms,
            p99Ms: c?.latency.p99Ms,
            maxMs: c?.latency.maxMs,
            run,
          });
          progress(
            `storm ${set.label} #${r}: drained in ${fixed((c?.drainSeconds ?? 0) * 1000, 0)} ms, ` +
              `vault ${JSON.stringify(vaultCalls(counters))}${c?.totalFailed ? `, ${c.totalFailed} failed ${JSON.stringify(c.errors)}` : ''}`,
          );
        } finally {
          await sealbox.stop();
        }
      }
      cases.push(summarize(set.id, set.label, sealed.distinctDeks, runs));
    }
  } finally {
    await vault.stop();
  }

  // 3. The same storm of unary echoes: what 1,000 concurrent calls cost this transport and client.
  const echoRuns: StormRun[] = [];
  const echo = await spawnEcho();
  try {
    for (let r = 1; r <= opts.repeat; r++) {
      const run = await runUnaryClient(
        {
          target: echo.target,
          mode: 'echo',
          concurrency: opts.requests,
          payloadBytes: opts.payloadBytes,
          requests: opts.requests,
        },
        { server: echo.pid },
      );
      const c = run.client;
      echoRuns.push({
        drainSeconds: run.error ? undefined : c?.drainSeconds,
        vault: undefined,
        vaultCounters: undefined,
        serverCpuSeconds: run.cpuSeconds['server'],
        vaultCpuSeconds: undefined,
        ok: c?.totalOk ?? 0,
        failed: c?.totalFailed ?? 0,
        errors: c?.errors ?? {},
        p50Ms: c?.latency.p50Ms,
        p99Ms: c?.latency.p99Ms,
        maxMs: c?.latency.maxMs,
        run,
      });
      progress(`echo storm #${r}: drained in ${fixed((c?.drainSeconds ?? 0) * 1000, 0)} ms`);
    }
  } finally {
    await echo.stop();
  }
  cases.push(summarize('echo', 'echo (EchoUnary)', undefined, echoRuns));

  const byId = new Map(cases.map((c) => [c.id, c]));
  const one = byId.get('1-dek');
  const many = byId.get(`${opts.deks}-deks`);
  const echoCase = byId.get('echo');
  const ratios: Ratio[] = [
    {
      name: `storm drain time: ${opts.deks} DEKs ÷ 1 DEK`,
      value: ratioOf(many?.drainSeconds, one?.drainSeconds),
      main: true,
    },
    {
      name: 'storm drain time: 1 DEK ÷ echo',
      value: ratioOf(one?.drainSeconds, echoCase?.drainSeconds),
      main: true,
    },
    {
      name: `storm drain time: ${opts.deks} DEKs ÷ echo`,
      value: ratioOf(many?.drainSeconds, echoCase?.drainSeconds),
    },
    {
      name: `storm unwrapKey calls: ${opts.deks} DEKs ÷ 1 DEK`,
      value: ratioOf(many?.unwrapKey, one?.unwrapKey),
    },
  ];

  let out = `## Cold-start storm (${opts.profile}: ${opts.requests} concurrent Decrypts of ${opts.payloadBytes} B on a fresh sealbox, median of ${opts.repeat})\n\n`;
  out +=
    `Dev vault: RSA-${vault.info.keySize}, ${vault.info.latency.fixedMs}+[0,${vault.info.latency.jitterMs}] ms per request, ` +
    'Azure throttling limits; counters reset after the sealbox started. Drain = first send → last answer at the client ' +
    `(one load-generator process, one channel). Storm sealbox config: cache.maxConcurrentVaultCalls ` +
    `${(stormConfig as { cache?: { maxConcurrentVaultCalls?: number } } | undefined)?.cache?.maxConcurrentVaultCalls ?? 'default (16)'}.\n\n`;
  out += table(
    [
      'storm',
      'DEKs',
      'drain ms',
      'min–max ms',
      'p50 ms',
      'p99 ms',
      'unwrapKey',
      'getKey',
      'vault 429s',
      'failed',
    ],
    cases.map((c) => {
      const drains = c.runs.map((r) => r.drainSeconds).filter((v): v is number => v !== undefined);
      return [
        c.label,
        c.distinctDeks ?? '—',
        fixed((c.drainSeconds ?? Number.NaN) * 1000, 0),
        drains.length
          ? `${fixed(Math.min(...drains) * 1000, 0)}–${fixed(Math.max(...drains) * 1000, 0)}`
          : 'n/a',
        fixed(median(c.runs.map((r) => r.p50Ms).filter((v): v is number => v !== undefined))),
        fixed(median(c.runs.map((r) => r.p99Ms).filter((v): v is number => v !== undefined))),
        c.unwrapKey ?? '—',
        c.getKey ?? '—',
        c.throttled ?? '—',
        c.failed,
      ];
    }),
  );
  out += `\n${ratioTable(ratios)}`;
  out += `\nnode ${env.node}, ${env.cpus} CPUs, load average at start ${(env.loadavgAtStart as number[]).join(' ')}\n`;
  process.stdout.write(out);

  const chart = await writeRatioChart(`storm-${stamp}`, ratios, {
    title: 'Cold-start storm (same run)',
    subtitle: `${opts.requests} concurrent Decrypts on a fresh sealbox, ${opts.profile} profile`,
  });
  const path = writeRun(
    'storm',
    { started, environment: env, options: opts },
    {
      vault: { ...vault.settings, keyId: vault.info.keyId },
      serverConfig: stormConfig,
      cases: Object.fromEntries(cases.map((c) => [c.id, c])),
      ratios,
      chart,
    },
    stamp,
  );
  progress(`wrote ${path} and ${chart} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  return cases.some((c) => c.failed > 0 || c.drainSeconds === undefined) ? 1 : 0;
}

function summarize(id: string, label: string, distinctDeks: number | undefined, runs: StormRun[]): StormCase {
  const med = (f: (r: StormRun) => number | undefined) =>
    median(runs.map(f).filter((v): v is number => v !== undefined));
  return {
    id,
    label,
    distinctDeks,
    runs,
    drainSeconds: med((r) => r.drainSeconds),
    unwrapKey: med((r) => r.vault?.unwrapKey),
    getKey: med((r) => r.vault?.getKey),
    throttled: med((r) => r.vault?.throttled),
    failed: runs.reduce((n, r) => n + r.failed, 0),
  };
}

runMain(main);
