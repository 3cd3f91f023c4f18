/**
 * How sealbox's server process is started: node flags and environment that must be in place before
 * node runs, so no config file can carry them. Each place that starts sealbox sets both: the image
 * (Dockerfile ENV and ENTRYPOINT, and so the Kubernetes manifests, which only set `args`),
 * `npm start` (package.json) and the `sealbox` command's shebang (src/cli.ts, through `env -S`).
 * test/unit/cli/launch.test.ts keeps those in step with this file; the benchmarks start their
 * servers — sealbox and the grpc-js echo alike — and their stream load generators with both, so
 * what they measure is what ships. `sealbox serve` says on stderr when either is missing.
 */

/**
 * `--initial-old-space-size=128` (node --v8-options: "initial old space size (in Mbytes)"). It
 * cannot come from NODE_OPTIONS: node refuses it there.
 *
 * Measured, not modelled (bench/README.md "Launch settings"): without it V8 starts the old
 * generation with a small allocation limit and keeps lowering it while the live heap stays small.
 * Buffers that outlive two scavenges (1 MiB stream messages waiting on HTTP/2 flow control, eight
 * streams' worth of them) are then reclaimed only by full GCs, and `--trace-incremental-marking`
 * shows one starting every few MiB on "allocation limit": 110–195 full GCs per GB and 3× the CPU per
 * GB of a fresh server, a state that outlasts the burst that caused it. With 128 MiB the same runs
 * show 0. 128 rather than 256: the flag applies to every isolate in the process, worker threads
 * included, and with 256 the 1 GiB stream's workers-mode RSS went over its 256 MiB bound (264–274
 * MiB; 242–246 with 128).
 */
export const SERVER_NODE_FLAGS: readonly string[] = ['--initial-old-space-size=128'];

/**
 * glibc keeps freed large buffers instead of trimming and re-faulting them on every 1 MiB message:
 * malloc's trim threshold 256 MiB, mmap threshold 32 MiB. Set through the environment variables the
 * glibc manual documents for them ("Malloc Tunable Parameters": M_TRIM_THRESHOLD and M_MMAP_THRESHOLD
 * "can also be set for the process at startup by setting the environment variable
 * MALLOC_TRIM_THRESHOLD_ / MALLOC_MMAP_THRESHOLD_"; glibc ≥ 2.26 reads them as aliases of the tunables
 * glibc.malloc.trim_threshold and glibc.malloc.mmap_threshold,
 * https://www.gnu.org/software/libc/manual/html_node/Memory-Allocation-Tunables.html). Not through
 * GLIBC_TUNABLES, which says the same in more bytes: the `sealbox` command's shebang carries these,
 * and kernels before 5.1 (RHEL 8's 4.18, Debian 10's 4.19) read only the first 127 bytes of a shebang
 * line; with GLIBC_TUNABLES it was 142 and node got a cut-off flag. The two spellings measured the
 * same on glibc 2.36 (Debian 12, the image's): node AES-GCM over 1 MiB buffers 533 MB/s without,
 * 3,211 with GLIBC_TUNABLES, 3,192 with these.
 *
 * What they buy, measured: node's AES-GCM on 1 MiB buffers 1.4 → 1.7 GB/s (bench/PERF-NOTES.md), and a
 * DecryptStream load generator's CPU 2.6–3.1 → 1.6–1.8 s/GB, most of it page faults under Buffer
 * copies. The 1 GiB stream stays under its RSS bound with them (147 MiB inline, 246 MiB workers).
 */
export const SERVER_ENV: Readonly<Record<string, string>> = {
  MALLOC_TRIM_THRESHOLD_: '268435456',
  MALLOC_MMAP_THRESHOLD_: '33554432',
};

/** What of the above this process was started without, as `--flag` or `NAME=value` strings. */
export function missingLaunchSettings(
  execArgv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): string[] {
  return [
    ...SERVER_NODE_FLAGS.filter((flag) => !execArgv.includes(flag)),
    ...Object.entries(SERVER_ENV)
      .filter(([name, value]) => env[name] !== value)
      .map(([name, value]) => `${name}=${value}`),
  ];
}
