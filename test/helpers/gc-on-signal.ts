/**
 * Test-only preload for a sealbox child process (`node --expose-gc --require <this> cli.js serve …`):
 * on SIGUSR2 it runs two full garbage collections, then writes the line "sealbox-test: gc done" to
 * stderr (test/integration/memory.test.ts waits for it). An idle process may go minutes without a
 * major GC, so its heap and external-memory figures would otherwise include whatever garbage the last
 * load left; after this they count only what is still reachable. sealbox itself never needs it.
 *
 * Two collections, because the first frees the Buffers' JS objects and their backing stores are
 * released only afterwards (V8 sweeps array buffers concurrently); the second makes
 * process.memoryUsage().external — sealbox_nodejs_external_memory_bytes — show the release.
 */
export {};

const gc = (globalThis as { gc?: () => void }).gc;
if (typeof gc !== 'function') throw new Error('gc-on-signal needs node --expose-gc');
process.on('SIGUSR2', () => {
  gc();
  setTimeout(() => {
    gc();
    process.stderr.write('sealbox-test: gc done\n');
  }, 50);
});
