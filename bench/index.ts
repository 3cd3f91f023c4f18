/**
 * `npm run bench`: the throughput table, then the 1 GiB bounded-memory check, each in its own process.
 * Arguments go to throughput (e.g. `npm run bench -- --quick`). Exits non-zero if either fails.
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { runMain, trackChild } from './lib/proc';

function run(script: string, args: string[]): Promise<number> {
  const child = spawn(process.execPath, [join(__dirname, script), ...args], { stdio: 'inherit' });
  trackChild(child);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code ?? 1)));
}

runMain(async () => {
  const throughput = await run('throughput.js', process.argv.slice(2));
  const rss = await run('rss-1gib.js', []);
  return throughput !== 0 ? throughput : rss;
});
