/**
 * `npm run fuzz [-- [--seconds N] [TARGET…]]`: longer local fuzzing runs, one target after another
 * (default: every target, 600 s each). The corpus grows in .fuzz/corpus/<target> across runs; findings
 * go to .fuzz/artifacts/<target>/.
 *
 * `npm run fuzz -- TARGET --repro FILE…` runs the target once on each file (e.g. a crash-* file).
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../helpers/paths';
import { runFuzzer, summary, TARGETS, type TargetName } from './runner';

async function main(): Promise<number> {
  const { values, positionals } = parseArgs({
    options: {
      seconds: { type: 'string', default: '600' },
      repro: { type: 'string', multiple: true },
    },
    allowPositionals: true,
  });
  const seconds = Number(values.seconds);
  if (!Number.isInteger(seconds) || seconds <= 0) throw new Error('--seconds must be a positive integer');
  for (const name of positionals) {
    if (!(TARGETS as readonly string[]).includes(name)) {
      throw new Error(`unknown target ${name}; the targets are ${TARGETS.join(', ')}`);
    }
  }
  const targets = (positionals.length > 0 ? positionals : TARGETS) as TargetName[];
  if (values.repro && targets.length !== 1) throw new Error('--repro needs exactly one target');

  const base = join(REPO_ROOT, '.fuzz');
  let failed = 0;
  for (const target of targets) {
    const run = await runFuzzer({
      target,
      seconds,
      corpusDir: join(base, 'corpus', target),
      artifactDir: join(base, 'artifacts', target),
      ...(values.repro ? { inputs: values.repro } : {}),
      echo: true,
    });
    process.stderr.write(`\n${summary(run)}\nlog: ${run.logPath}\n`);
    if (run.exitCode !== 0) {
      failed++;
      for (const a of run.artifacts) process.stderr.write(`finding: ${a}\n`);
    }
  }
  return failed === 0 ? 0 : 1;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 2;
  },
);
