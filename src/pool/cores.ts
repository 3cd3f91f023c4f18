/**
 * How many cores sealbox may use, and what the pool makes of it. Apart from pool.ts (which loads
 * piscina) so that `sealbox config print` can show the resolved thread count without starting
 * anything: this module reads two cgroup files and nothing else.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';

/**
 * Worker threads for a `pool.threads` setting: the number given, or — null or absent, the default —
 * one per core sealbox may use (effectiveCores), at least 1. A pod limited to 2 CPUs on a 64-core
 * node gets 2 workers, not 64 (each with its slab of shared memory, competing for the same quota).
 */
export function poolThreads(configured: number | null | undefined, cores?: number): number {
  return configured ?? Math.max(1, cores ?? effectiveCores());
}

/**
 * Cores this process can use: the CPUs it may run on (os.availableParallelism(), which honours
 * taskset and cpusets), lowered to its cgroup CPU quota rounded up when one is set — a Kubernetes CPU
 * limit is enforced as a CFS quota (https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/#how-pods-with-resource-limits-are-run),
 * read from cgroup v2 `cpu.max` ("$MAX $PERIOD" or "max $PERIOD",
 * https://docs.kernel.org/admin-guide/cgroup-v2.html#cpu-interface-files) or v1
 * `cpu.cfs_quota_us` / `cpu.cfs_period_us`. Node 20's availableParallelism ignores quotas, so a pod
 * limited to 1 CPU on a 16-core node would otherwise count 16. Only the container's own cgroup root
 * is read (a container sees its own limits there); no quota found means none. `read` and `cpus` are
 * there for tests.
 */
export function effectiveCores(
  read: (path: string) => string = (path) => readFileSync(path, 'utf8'),
  cpus: number = availableParallelism(),
): number {
  const quota = cgroupQuota(read);
  return quota === undefined ? cpus : Math.max(1, Math.min(cpus, Math.ceil(quota)));
}

/** The cgroup CPU quota in CPUs, or undefined when there is none (or it cannot be read). */
function cgroupQuota(read: (path: string) => string): number | undefined {
  const attempt = (f: () => number | undefined) => {
    try {
      return f();
    } catch {
      return undefined;
    }
  };
  const v2 = attempt(() => {
    const [max, period] = read('/sys/fs/cgroup/cpu.max').trim().split(/\s+/);
    return max === 'max' || !max || !period ? undefined : Number(max) / Number(period);
  });
  if (v2 !== undefined) return Number.isFinite(v2) && v2 > 0 ? v2 : undefined;
  const v1 = attempt(() => {
    const quota = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_quota_us').trim());
    const period = Number(read('/sys/fs/cgroup/cpu/cpu.cfs_period_us').trim());
    return quota > 0 && period > 0 ? quota / period : undefined;
  });
  return v1 !== undefined && Number.isFinite(v1) && v1 > 0 ? v1 : undefined;
}
