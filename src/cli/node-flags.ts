/**
 * The V8 flags sealbox's server is started with. They cannot come from NODE_OPTIONS (node refuses
 * `--initial-old-space-size` there), so they are on node's command line in each place that starts
 * it: the image's ENTRYPOINT (Dockerfile, and so the Kubernetes manifests, which only set `args`),
 * `npm start` (package.json) and the `sealbox` command's shebang (src/cli.ts, through `env -S`).
 * test/unit/cli/node-flags.test.ts keeps those three in step with this list; the benchmarks start
 * their servers — sealbox and the grpc-js echo alike — and their load generators with it.
 *
 * `--initial-old-space-size=128` (node --v8-options: "initial old space size (in Mbytes)").
 * Measured, not modelled (bench/README.md "V8 heap flag"): without it V8 starts the old generation
 * with a small allocation limit and keeps lowering it while the live heap stays small. Buffers
 * that outlive two scavenges (1 MiB stream messages waiting on HTTP/2 flow control, eight streams'
 * worth of them) are then reclaimed only by full GCs, and `--trace-incremental-marking` shows one
 * starting every few MiB on "allocation limit": 110–195 full GCs per GB, 3× the CPU per GB of a
 * fresh server, and the state persists after the burst that caused it. With 128 MiB the same runs
 * show ~0 full GCs per GB. 128 rather than 256: the 1 GiB stream's server RSS in workers mode stays
 * under its 256 MiB bound (242 MiB measured; 256 took it to 264–274 MiB), because the flag applies
 * to every isolate in the process, worker threads included.
 */
export const SERVER_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=128'];

/** The flags of SERVER_NODE_FLAGS that `execArgv` (node's own arguments) lacks. */
export function missingNodeFlags(execArgv: readonly string[]): string[] {
  return SERVER_NODE_FLAGS.filter((flag) => !execArgv.includes(flag));
}
