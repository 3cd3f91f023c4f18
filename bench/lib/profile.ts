/**
 * Run profiles shared by the benchmarks: `--tiny` (CI: proves the harness works, numbers are
 * meaningless), `--quick` (a few minutes for everything; what `npm run bench` runs) and `--full`
 * (longer windows). Scripts run standalone default to full, as throughput.ts always has.
 */
export type Profile = 'tiny' | 'quick' | 'full';

export const PROFILE_OPTIONS = {
  tiny: { type: 'boolean', default: false },
  quick: { type: 'boolean', default: false },
  full: { type: 'boolean', default: false },
} as const;

export function pickProfile(values: { tiny?: boolean; quick?: boolean; full?: boolean }): Profile {
  const chosen = (['tiny', 'quick', 'full'] as const).filter((p) => values[p]);
  if (chosen.length > 1)
    throw new Error(`give at most one of --tiny, --quick, --full (got ${chosen.join(', ')})`);
  return chosen[0] ?? 'full';
}

/** A non-negative number from a flag, or the profile's value. */
export function numberFlag(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isFinite(n) || n < 0) throw new Error(`--${name} must be a non-negative number`);
  return n;
}
