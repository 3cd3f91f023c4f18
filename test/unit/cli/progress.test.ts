/** The progress line (src/cli/progress.ts). */
import assert from 'node:assert/strict';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { formatBytes, formatProgress, ProgressMeter } from '../../../src/cli/progress';

test('formatBytes: decimal units', () => {
  const table: Array<[number, string]> = [
    [0, '0 B'],
    [999, '999 B'],
    [1000, '1.0 kB'],
    [1_500_000, '1.5 MB'],
    [2_000_000_000, '2.0 GB'],
    [3e15, '3000.0 TB'],
  ];
  for (const [bytes, text] of table) assert.equal(formatBytes(bytes), text);
});

test('formatProgress: with and without a total; rate in MB/s; clipped to the terminal width', () => {
  assert.equal(
    formatProgress({ label: 'decrypting', bytes: 50_000_000, total: 100_000_000, elapsedMs: 2000 }),
    'decrypting  [##########..........]   50%  50.0 MB / 100.0 MB  25.0 MB/s',
  );
  assert.equal(
    formatProgress({ label: 'encrypting', bytes: 3_000_000, elapsedMs: 1000 }),
    'encrypting  3.0 MB  3.0 MB/s',
  );
  assert.equal(formatProgress({ label: 'x', bytes: 0, elapsedMs: 0 }), 'x  0 B  0.0 MB/s');
  assert.equal(formatProgress({ label: 'x', bytes: 10, total: 5, elapsedMs: 1 }).includes('100%'), true);
  assert.equal(
    formatProgress({ label: 'encrypting', bytes: 3_000_000, elapsedMs: 1000, width: 12 }).length,
    11,
  );
});

test('ProgressMeter: counts what flows through, redraws at most once per interval, ends the line', async () => {
  let clock = 0;
  const writes: string[] = [];
  const meter = new ProgressMeter(
    { write: (t: string) => writes.push(t), columns: 200 },
    { label: 'encrypting', total: 4_000_000, intervalMs: 100, now: () => clock },
  );
  const chunks = [1_000_000, 1_000_000, 1_000_000, 1_000_000].map((n) => Buffer.alloc(n));
  const source = Readable.from(
    (async function* () {
      for (const c of chunks) {
        clock += 50;
        yield c;
      }
    })(),
  );
  const received: number[] = [];
  await pipeline(
    source,
    meter.counter(),
    new Writable({
      write(chunk: Buffer, _e, cb) {
        received.push(chunk.length);
        cb();
      },
    }),
  );
  assert.deepEqual(received, [1_000_000, 1_000_000, 1_000_000, 1_000_000], 'bytes pass unchanged');
  assert.equal(meter.count, 4_000_000);
  assert.equal(writes.length, 2, `drawn at t=50 and t=150 only: ${JSON.stringify(writes)}`);
  meter.finish('  (done)');
  assert.equal(writes.at(-2), '\rencrypting  [####################]  100%  4.0 MB / 4.0 MB  20.0 MB/s\x1b[K');
  assert.equal(writes.at(-1), '  (done)\n');
  meter.clear();
  assert.equal(writes.at(-1), '\r\x1b[K');
});
