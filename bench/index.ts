/**
 * `npm run bench`: every benchmark, each in its own process, one after the other, then a summary of
 * their main ratios (bench/results/summary-<ts>.{json,svg} and a table on stdout).
 *
 *   node <build>/bench/index.js [--tiny | --quick | --full] [--only a,b,…]
 *
 * --quick (the default; about 6–7 minutes on 2 cores, plus 4–5 for pool): throughput, unary, cache,
 *   storm, esdk with short windows, the fleet-budget simulation (about 2.5 minutes), the 1 GiB
 *   bounded-memory check (rss-1gib), a 20 s soak, then workers vs inline (pool).
 * --full: the same with longer windows and a 60 s soak (about fourteen minutes).
 * kms (every profile): the Kubernetes KMS v2 face beside the envelope API's unary calls, 32-byte seeds.
 * --tiny: CI smoke run (a minute or so): every benchmark except rss-1gib with minimal windows and
 *   cases (the soak: 1 s of load), to prove the harness and its outputs work; its numbers mean nothing.
 * Exits non-zero if any benchmark fails (the summary is written anyway).
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeRatioChart } from './lib/chart';
import { runMain, trackChild, trackTempDir } from './lib/proc';
import { PROFILE_OPTIONS, type Profile, pickProfile } from './lib/profile';
import { environment, fixed, progress, type Ratio, table, timestamp, writeResults } from './lib/report';

const BENCHMARKS = [
  'throughput',
  'unary',
  'batch',
  'cache',
  'storm',
  'esdk',
  'fleet',
  'rss-1gib',
  'soak',
  'pool',
  'kms',
] as const;
type Benchmark = (typeof BENCHMARKS)[number];

function argsFor(bench: Benchmark, profile: Profile): string[] {
  if (bench === 'rss-1gib') return [];
  return profile === 'full' ? ['--full'] : [`--${profile}`];
}

function run(script: string, args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const child = spawn(process.execPath, [join(__dirname, script), ...args], { stdio: 'inherit', env });
  trackChild(child);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
}

interface ScriptOutcome {
  readonly bench: Benchmark;
  readonly exitCode: number;
  readonly seconds: number;
  readonly results: string[];
}

interface SummaryRatio extends Ratio {
  readonly bench: string;
}

/** The main ratios of one result file (throughput keeps its own ratio shape; see chartRatios). */
function mainRatios(bench: string, data: Record<string, unknown>): SummaryRatio[] {
  const list = (bench === 'throughput' ? data['chartRatios'] : data['ratios']) as Ratio[] | undefined;
  return Array.isArray(list) ? list.filter((r) => r.main).map((r) => ({ ...r, bench })) : [];
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { ...PROFILE_OPTIONS, only: { type: 'string' } } });
  const profile = values.tiny || values.full ? pickProfile(values) : 'quick';
  const only = values.only?.split(',').map((s) => s.trim());
  for (const name of only ?? []) {
    if (!(BENCHMARKS as readonly string[]).includes(name))
      throw new Error(`--only: unknown benchmark ${name} (one of ${BENCHMARKS.join(', ')})`);
  }
  const selected = BENCHMARKS.filter(
    (b) => (only ? only.includes(b) : true) && !(profile === 'tiny' && b === 'rss-1gib'),
  );
  const started = Date.now();
  const stamp = timestamp();
  const env = environment();
  const logDir = mkdtempSync(join(tmpdir(), 'sealbox-bench-log-'));
  trackTempDir(logDir);
  const log = join(logDir, 'results.log');
  progress(`bench (${profile}): ${selected.join(', ')}`);

  const outcomes: ScriptOutcome[] = [];
  for (const bench of selected) {
    const seen = readLog(log).length;
    const t0 = Date.now();
    progress(`\n=== ${bench} ===`);
    const exitCode = await run(`${bench}.js`, argsFor(bench, profile), {
      ...process.env,
      SEALBOX_BENCH_RESULTS_LOG: log,
    });
    const results = readLog(log).slice(seen);
    outcomes.push({ bench, exitCode, seconds: (Date.now() - t0) / 1000, results });
    if (exitCode !== 0) progress(`${bench} exited with ${exitCode}`);
  }

  const ratios: SummaryRatio[] = [];
  for (const o of outcomes) {
    for (const path of o.results.filter((p) => p.endsWith('.json'))) {
      try {
        ratios.push(
          ...mainRatios(o.bench, JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>),
        );
      } catch (err) {
        progress(`could not read ${path}: ${(err as Error).message}`);
      }
    }
  }

  let out = `\n## Summary (${profile}): main ratios, each measured within one run\n\n`;
  out += table(
    ['benchmark', 'ratio', 'value'],
    ratios.map((r) => [r.bench, r.name, fixed(r.value)]),
  );
  out += '\n';
  out += table(
    ['benchmark', 'exit code', 'seconds', 'results'],
    outcomes.map((o) => [
      o.bench,
      o.exitCode,
      fixed(o.seconds, 0),
      o.results.map((p) => basename(p)).join(', '),
    ]),
  );
  process.stdout.write(out);

  const chart = await writeRatioChart(
    `summary-${stamp}`,
    ratios.map((r) => ({ ...r, name: `${r.bench}: ${r.name}` })),
    { title: 'sealbox benchmark: main ratios (each from one run)', subtitle: `${profile} profile` },
  );
  const path = writeResults(
    'summary',
    {
      name: 'summary',
      profile,
      startedAt: new Date(started).toISOString(),
      durationSeconds: (Date.now() - started) / 1000,
      environment: env,
      benchmarks: outcomes,
      ratios,
      chart,
    },
    stamp,
  );
  progress(`wrote ${path} and ${chart} (${((Date.now() - started) / 1000).toFixed(0)} s in total)`);
  return outcomes.find((o) => o.exitCode !== 0)?.exitCode ?? 0;
}

function readLog(path: string): string[] {
  try {
    return readFileSync(path, 'utf8').split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

runMain(main);
