/**
 * Test and benchmark controls of the dev vault: Key Vault–like throttling, injected latency, injected
 * 5xx errors and dropped connections, and per-operation call counters.
 *
 * Throttling follows Azure Key Vault's published service limits ("Azure Key Vault service limits",
 * https://learn.microsoft.com/azure/key-vault/general/service-limits, key transactions per vault per
 * region in 10 seconds):
 *
 *   key type       HSM CREATE   HSM other   software CREATE   software other
 *   RSA 2048-bit       10         2,000           20              4,000
 *   RSA 3072-bit       10           500           20              1,000
 *   RSA 4096-bit       10           250           20                500
 *   secrets, managed storage and vault transactions (list, deleted-key reads): 4,000
 *
 * "The throttling thresholds are weighted, and enforcement is on their sum": 250 RSA-HSM-4096 operations
 * use up the window exactly as 2,000 RSA-HSM-2048 ones do. We keep one weighted sum per class of limit
 * (key transactions, creates, vault transactions) over a fixed window that opens at the first counted
 * request. Requests answered 429 are not counted, as Key Vault documents.
 *
 * Symmetric (oct-HSM) keys exist only on Managed HSM, which publishes no per-10 s crypto limit (its scaling
 * guidance says it does not throttle crypto operations); we default `oct` to 2,000, the HSM-key figure, so
 * that throttling of symmetric keys can still be exercised.
 */

/** The throttling classes of key transactions (DevVaultOptions.throttling.limitsPer10s keys). */
export type ThrottleClass =
  | 'rsa2048'
  | 'rsa3072'
  | 'rsa4096'
  | 'rsaHsm2048'
  | 'rsaHsm3072'
  | 'rsaHsm4096'
  | 'oct';

/** Azure's published "all other transactions" limits per 10 s (see the module comment). */
export const AZURE_KEY_LIMITS_PER_10S: Readonly<Record<ThrottleClass, number>> = {
  rsa2048: 4000,
  rsa3072: 1000,
  rsa4096: 500,
  rsaHsm2048: 2000,
  rsaHsm3072: 500,
  rsaHsm4096: 250,
  oct: 2000,
};

/** Azure's CREATE key limits per 10 s (software keys, HSM keys); import and rotate count as creates. */
export const AZURE_CREATE_LIMITS_PER_10S = { software: 20, hsm: 10 } as const;

/** Azure's limit on vault transactions that name no single key (list, deleted-key listing) per 10 s. */
export const AZURE_VAULT_LIMIT_PER_10S = 4000;

/** Throttling settings (DevVaultOptions.throttling). */
export interface ThrottleSettings {
  readonly enabled: boolean;
  /** Overrides of AZURE_KEY_LIMITS_PER_10S, per class. */
  readonly limitsPer10s?: Partial<Record<ThrottleClass, number>>;
  /** Window length; 10 000 ms as in Azure. Shorter windows keep 429 + Retry-After tests fast. */
  readonly windowMs?: number;
  /**
   * Managed HSM figures (MANAGED_HSM_LIMITS_PER_10S, one budget per class and direction) instead of Key
   * Vault's weighted sum; set by the dev vault for kind managedhsm. limitsPer10s still overrides a class.
   */
  readonly managedHsm?: boolean;
}

/**
 * Managed HSM throughput per partition, in operations per 10 s, by key class and direction: the scaling
 * figures quoted in sealbox issue 13 from Microsoft's Managed HSM scaling guidance (RSA-2048 unwrap
 * ≈ 1,100/s, wrap ≈ 2,200/s; AES-256 key wrap ≈ 2,100/s). AES unwrap is taken equal to wrap, and RSA
 * 3072/4096 scale as Key Vault's HSM limits do (÷4, ÷8): inferred. "private" is unwrapKey/decrypt (the
 * private-key side), "public" wrapKey/encrypt; other operations on a key count as "public".
 */
export const MANAGED_HSM_LIMITS_PER_10S: Readonly<
  Record<'rsaHsm2048' | 'rsaHsm3072' | 'rsaHsm4096' | 'oct', { private: number; public: number }>
> = {
  rsaHsm2048: { private: 11_000, public: 22_000 },
  rsaHsm3072: { private: 2_750, public: 5_500 },
  rsaHsm4096: { private: 1_375, public: 2_750 },
  oct: { private: 21_000, public: 21_000 },
};

/** What one request costs: a key transaction of a class, a create, or a vault transaction. */
export type ThrottleCharge =
  | { readonly kind: 'key'; readonly cls: ThrottleClass; readonly op?: string }
  | { readonly kind: 'create'; readonly hsm: boolean }
  | { readonly kind: 'vault' };

/** The throttling class of a key version. */
export function throttleClassOf(kty: string, sizeBits: number): ThrottleClass {
  if (kty === 'oct-HSM' || kty === 'oct') return 'oct';
  const hsm = kty.endsWith('-HSM');
  const size = sizeBits >= 4096 ? 4096 : sizeBits >= 3072 ? 3072 : 2048;
  return `${hsm ? 'rsaHsm' : 'rsa'}${size}` as ThrottleClass;
}

/** Weighted fixed-window throttle; see the module comment. */
export class Throttle {
  private settings: ThrottleSettings = { enabled: false };
  private windowStart = 0;
  private readonly used = { key: 0, create: 0, vault: 0 };
  /** Managed HSM budgets by "class:direction". */
  private readonly hsmUsed = new Map<string, number>();

  constructor(
    settings: ThrottleSettings | undefined,
    private readonly now: () => number = Date.now,
  ) {
    if (settings !== undefined) this.configure(settings);
  }

  /** Replaces the settings and starts a fresh window. */
  configure(settings: ThrottleSettings): void {
    this.settings = settings;
    this.windowStart = 0;
    this.used.key = this.used.create = this.used.vault = 0;
    this.hsmUsed.clear();
  }

  /**
   * Charges `charge` against the current window. Returns undefined when the request may proceed, or the
   * whole seconds (at least 1) until the window ends when it must be answered 429.
   */
  admit(charge: ThrottleCharge): number | undefined {
    if (!this.settings.enabled) return undefined;
    const windowMs = this.settings.windowMs ?? 10_000;
    const now = this.now();
    if (now - this.windowStart >= windowMs) {
      this.windowStart = now;
      this.used.key = this.used.create = this.used.vault = 0;
      this.hsmUsed.clear();
    }
    if (this.settings.managedHsm === true && charge.kind === 'key') {
      const dir = charge.op === 'unwrapKey' || charge.op === 'decrypt' ? 'private' : 'public';
      const cls =
        charge.cls in MANAGED_HSM_LIMITS_PER_10S
          ? (charge.cls as keyof typeof MANAGED_HSM_LIMITS_PER_10S)
          : 'rsaHsm2048';
      const limit = this.settings.limitsPer10s?.[charge.cls] ?? MANAGED_HSM_LIMITS_PER_10S[cls][dir];
      const bucket = `${cls}:${dir}`;
      const used = this.hsmUsed.get(bucket) ?? 0;
      if (used + 1 > limit) return Math.max(1, Math.ceil((this.windowStart + windowMs - now) / 1000));
      this.hsmUsed.set(bucket, used + 1);
      return undefined;
    }
    const weight = 1 / this.limitOf(charge);
    // The epsilon keeps exactly-at-limit sums of 1/limit from failing on float rounding.
    if (this.used[charge.kind] + weight > 1 + 1e-9) {
      return Math.max(1, Math.ceil((this.windowStart + windowMs - now) / 1000));
    }
    this.used[charge.kind] += weight;
    return undefined;
  }

  private limitOf(charge: ThrottleCharge): number {
    switch (charge.kind) {
      case 'key':
        return this.settings.limitsPer10s?.[charge.cls] ?? AZURE_KEY_LIMITS_PER_10S[charge.cls];
      case 'create':
        return charge.hsm ? AZURE_CREATE_LIMITS_PER_10S.hsm : AZURE_CREATE_LIMITS_PER_10S.software;
      case 'vault':
        return AZURE_VAULT_LIMIT_PER_10S;
    }
  }
}

/** Injected latency: every Key Vault request waits fixedMs plus a uniform draw from [0, jitterMs]. */
export interface LatencySettings {
  readonly fixedMs: number;
  readonly jitterMs: number;
}

/** What the fault injector decided for one request. */
export type FaultDecision = 'none' | 'drop' | 500 | 503;

/** Latency, error and drop injection with a replaceable random source (for deterministic tests). */
export class Faults {
  latency: LatencySettings = { fixedMs: 0, jitterMs: 0 };
  /** Probability in [0, 1] of answering 500 or 503 (evenly) with a Key Vault error body. */
  errorRate = 0;
  /** Probability in [0, 1] of destroying the connection without an answer. */
  dropRate = 0;

  constructor(private readonly random: () => number = Math.random) {}

  /** Milliseconds this request should wait before it is handled. */
  delayMs(): number {
    const { fixedMs, jitterMs } = this.latency;
    return fixedMs + (jitterMs > 0 ? this.random() * jitterMs : 0);
  }

  /** Drop first, then error: a dropped connection never also counts as an error. */
  decide(): FaultDecision {
    if (this.dropRate > 0 && this.random() < this.dropRate) return 'drop';
    if (this.errorRate > 0 && this.random() < this.errorRate) return this.random() < 0.5 ? 500 : 503;
    return 'none';
  }
}

/** Per-operation call counters ("wrapKey", "wrapKey/<key name>", "throttled", …). */
export class Counters {
  private readonly counts = new Map<string, number>();

  /** Adds one to each of `names`. */
  bump(...names: string[]): void {
    for (const name of names) this.counts.set(name, (this.counts.get(name) ?? 0) + 1);
  }

  /** A snapshot, sorted by name. */
  snapshot(): Record<string, number> {
    return Object.fromEntries([...this.counts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  reset(): void {
    this.counts.clear();
  }
}

/**
 * Answers a test can force on the next requests of some operations, in place of normal handling: the
 * refusals a KEK client meets in production (network rules, access policy, RBAC, an unauthenticated
 * token). Bodies are built by the server with the caller's real identity, so a forced answer looks
 * exactly like the vault refusing on its own.
 */
export type ForcedAnswerKind =
  | 'ForbiddenByFirewall'
  | 'ForbiddenByConnection'
  | 'AccessDenied'
  | 'ForbiddenByPolicy'
  | 'ForbiddenByRbac'
  | 'Unauthorized';

/** Every ForcedAnswerKind, for validation. */
export const FORCED_ANSWER_KINDS: readonly ForcedAnswerKind[] = [
  'ForbiddenByFirewall',
  'ForbiddenByConnection',
  'AccessDenied',
  'ForbiddenByPolicy',
  'ForbiddenByRbac',
  'Unauthorized',
];

/** One step of a forced-answer script: the next `count` matching requests get `answer`. */
export interface ForcedAnswerStep {
  /** Operation names as the counters use them (wrapKey, unwrapKey, getKey, …); absent = every operation. */
  readonly operations?: readonly string[];
  /** Only requests naming this key (case-insensitive); absent = any key. */
  readonly keyName?: string;
  readonly count: number;
  readonly answer: ForcedAnswerKind;
}

/**
 * A script of forced answers. Steps are used in order: a request takes one use from the first step it
 * matches that has uses left; a step with none left is dropped. When no step matches, handling is normal.
 * Postcondition: after `count` matching requests, a step never answers again.
 */
export class ForcedAnswers {
  private steps: Array<{ step: ForcedAnswerStep; left: number }> = [];

  /** Replaces the script. */
  set(steps: readonly ForcedAnswerStep[]): void {
    this.steps = steps.map((step) => ({ step, left: step.count }));
  }

  /** Appends steps to the script. */
  add(steps: readonly ForcedAnswerStep[]): void {
    this.steps.push(...steps.map((step) => ({ step, left: step.count })));
  }

  /** The forced answer for this request, consuming one use, or undefined for normal handling. */
  take(operation: string, keyName: string | undefined): ForcedAnswerKind | undefined {
    const entry = this.steps.find(
      ({ step, left }) =>
        left > 0 &&
        (step.operations === undefined || step.operations.includes(operation)) &&
        (step.keyName === undefined || step.keyName.toLowerCase() === keyName?.toLowerCase()),
    );
    if (entry === undefined) return undefined;
    entry.left -= 1;
    this.steps = this.steps.filter((e) => e.left > 0);
    return entry.step.answer;
  }

  /** What is left of the script (for GET /_sealbox/faults). */
  remaining(): ForcedAnswerStep[] {
    return this.steps.map(({ step, left }) => ({ ...step, count: left }));
  }
}
