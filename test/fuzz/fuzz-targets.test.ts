/**
 * Bounded coverage-guided fuzzing in CI: each Jazzer.js target (targets/) runs for FUZZ_SECONDS from
 * the committed seeds, both at once (CI has two cores). A run passes when the fuzzer stops on its time
 * bound without a finding; a crash, a hang past the per-input timeout or memory past the RSS limit
 * fails it, and the message carries the input (file and base64) to reproduce it with
 * `npm run fuzz -- TARGET --repro FILE`.
 *
 * Afterwards the corpus the run grew is replayed here through the same checks, and the outcomes are
 * tallied: that shows (and asserts) that the fuzzer got past the header's MAC to the chunks.
 * Longer runs: `npm run fuzz` (docs/SECURITY.md).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ensureJazzerAddon } from './addon';
import { type FuzzRun, runFuzzer, SEEDS_DIR, summary, type TargetName } from './runner';
import * as chunks from './targets/chunks';
import * as header from './targets/header';

/** Time bound per target; both run at once, so the file takes about this long plus start-up. */
const FUZZ_SECONDS = 30;

const outcomes: Record<TargetName, (data: Buffer) => string> = {
  header: header.outcome,
  chunks: chunks.outcome,
};

/** What the target made of every input in the corpus, counted. */
function replay(target: TargetName, dirs: readonly string[]): Map<string, number> {
  const tally = new Map<string, number>();
  for (const dir of dirs) {
    for (const file of readdirSync(dir)) {
      const what = outcomes[target](readFileSync(join(dir, file)));
      tally.set(what, (tally.get(what) ?? 0) + 1);
    }
  }
  return tally;
}

function show(tally: Map<string, number>): string {
  return [...tally]
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k}: ${v}`)
    .join(', ');
}

function failureReport(run: FuzzRun): string {
  const findings = run.artifacts.map((path) => {
    const bytes = readFileSync(path);
    return `${basename(path)} (${bytes.length} bytes, base64 ${bytes.toString('base64')})`;
  });
  const tail = run.log.split('\n').slice(-40).join('\n');
  return `${summary(run)}\nfindings: ${findings.join('; ') || 'none written'}\nlog ${run.logPath}:\n${tail}`;
}

describe('coverage-guided fuzzing (Jazzer.js), bounded', { concurrency: true }, () => {
  const work = mkdtempSync(join(tmpdir(), 'sealbox-fuzz-'));
  let keep = false;

  before(() => {
    // Builds the native addon once (about 10 s) before the targets start in parallel.
    ensureJazzerAddon();
  });
  after(() => {
    if (!keep) rmSync(work, { recursive: true, force: true });
  });

  const expectations: Record<TargetName, (tally: Map<string, number>) => void> = {
    header: (tally) => {
      // The seeds verify under their own DEKs; mutations must reach past the fixed fields.
      for (const what of ['verified', 'header', 'wait', 'CIPHERTEXT_MALFORMED']) {
        assert.ok((tally.get(what) ?? 0) > 0, `no corpus input ended in "${what}": ${show(tally)}`);
      }
    },
    chunks: (tally) => {
      const count = (pattern: RegExp) =>
        [...tally].filter(([k]) => pattern.test(k)).reduce((sum, [, v]) => sum + v, 0);
      // Seeds open; re-signed mutants fail in the chunks (a re-signed header always verifies, so
      // CORRUPT and TRUNCATED here come from chunk opening); re-sealed layouts open.
      assert.ok(count(/^opened /) > 0, `nothing opened: ${show(tally)}`);
      assert.ok(count(/^CIPHERTEXT_CORRUPT /) > 0, `no chunk failed authentication: ${show(tally)}`);
      assert.ok(count(/^CIPHERTEXT_TRUNCATED /) > 0, `no truncation found: ${show(tally)}`);
      assert.ok(
        count(/resealed opened$/) > count(/^opened /),
        `re-sealed layouts rarely open: ${show(tally)}`,
      );
    },
  };

  for (const target of ['header', 'chunks'] as const) {
    test(`${target} target: ${FUZZ_SECONDS} s without a finding`, async (t) => {
      const corpusDir = join(work, 'corpus', target);
      const run = await runFuzzer({
        target,
        seconds: FUZZ_SECONDS,
        corpusDir,
        artifactDir: join(work, 'artifacts', target),
      });
      t.diagnostic(summary(run));
      if (run.exitCode !== 0) keep = true;
      assert.equal(run.exitCode, 0, failureReport(run));
      assert.ok((run.runs ?? 0) > 1000, `only ${run.runs} executions: ${summary(run)}`);

      const tally = replay(target, [SEEDS_DIR, corpusDir]);
      t.diagnostic(`corpus outcomes: ${show(tally)}`);
      expectations[target](tally);
    });
  }
});
