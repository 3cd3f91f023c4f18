/**
 * Loaded into every process a benchmark starts (`node --require …/watch-parent.js` for sealbox, an
 * import for the bench's own scripts): when the parent goes away without stopping us (SIGKILL, a
 * crash), terminate instead of lingering as an orphan. Checks twice a second on an unref'd timer,
 * so it neither keeps a process alive nor costs measurable time.
 */
const parent = process.ppid;
let orphanedAt = 0;

const timer = setInterval(() => {
  if (process.ppid === parent) return;
  if (orphanedAt === 0) {
    orphanedAt = Date.now();
    process.kill(process.pid, 'SIGTERM'); // sealbox drains and exits; plain scripts exit at once
  } else if (Date.now() - orphanedAt > 5000) {
    process.kill(process.pid, 'SIGKILL');
  }
}, 500);
timer.unref();
