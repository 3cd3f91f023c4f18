/**
 * The Grafana dashboard only queries metrics sealbox exports: every metric name in every panel's
 * PromQL appears in a real /metrics exposition of SealboxMetrics.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { SealboxMetrics } from '../../../src/metrics/metrics';
import { REPO_ROOT } from '../../helpers/paths';

test('every metric the Grafana dashboard queries is exported', async () => {
  const dashboard = JSON.parse(
    readFileSync(join(REPO_ROOT, 'deploy/grafana/sealbox-dashboard.json'), 'utf8'),
  ) as {
    panels: Array<{ title: string; targets: Array<{ expr: string }> }>;
  };
  const exposition = await new SealboxMetrics().registry.metrics();
  const exported = new Set(
    [...exposition.matchAll(/^# TYPE (\S+) (\w+)$/gm)].flatMap(([, name, type]) =>
      type === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name!],
    ),
  );
  let checked = 0;
  for (const panel of dashboard.panels) {
    for (const { expr } of panel.targets) {
      for (const [name] of expr.matchAll(/\bsealbox_[a-z0-9_]+/g)) {
        assert.ok(
          exported.has(name),
          `panel "${panel.title}" queries ${name}, which sealbox does not export`,
        );
        checked++;
      }
    }
  }
  assert.ok(checked >= 20, `checked ${checked} metric references`);
});
