/**
 * The Azure Key Vault / Managed HSM KEK provider: one configured key (vault URL + key name), all its
 * versions. New DEKs are wrapped under the key's current (latest) version; a DEK wrapped under any
 * version unwraps with that exact version, so rotation never strands old ciphertexts.
 *
 * Key ids are the full versioned ids Key Vault returns, `https://{vault}/keys/{name}/{version}`,
 * and go into ciphertext headers as is. RSA / RSA-HSM keys wrap with RSA-OAEP-256; oct / oct-HSM
 * (Managed HSM, 256-bit) keys with A256KW.
 *
 * The provider talks to Key Vault through two narrow structural types, so unit tests pass object
 * literals: `Pick<KeyClient, 'getKey'>` (current version, status) and
 * `Pick<CryptographyClient, 'wrapKey' | 'unwrapKey'>`, one per key version, built by an injected
 * factory and cached. Every vault call goes through one `RetryPolicy` (./retry.ts); the SDK clients'
 * own retries are off. SDK errors become SealboxErrors in `mapVaultError`, keeping the SDK error as
 * `cause`. `createAzureProvider` builds the real clients from configuration (docs/azure.md).
 */
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import {
  DefaultAzureCredential,
  ManagedIdentityCredential,
  type TokenCredential,
  WorkloadIdentityCredential,
} from '@azure/identity';
import {
  CryptographyClient,
  type CryptographyClientOptions,
  KeyClient,
  type KeyVaultKey,
} from '@azure/keyvault-keys';
import { MAX_KEY_ID_BYTES, MAX_WRAPPED_DEK_BYTES } from '../crypto/format';
import { ErrorCode, isSealboxError, needs, SealboxError } from '../errors';
import { untilAborted } from '../util/abort';
import type { KekProvider, KeyStatus, WrapResult } from './provider';
import {
  CallAbortedError,
  DeadlineExceededError,
  defaultRetryDeps,
  type RetryDeps,
  RetryPolicy,
  type RetryPolicyOptions,
  TLS_VERIFY_ERROR_CODES,
} from './retry';

/** What the provider needs from a CryptographyClient (one per key version). */
export type AzureCryptoClient = Pick<CryptographyClient, 'wrapKey' | 'unwrapKey'>;
/** What the provider needs from a KeyClient. */
export type AzureKeyReader = Pick<KeyClient, 'getKey'>;
/** Builds the crypto client for one versioned key id; called once per version while it is cached. */
export type CryptoClientFactory = (keyId: string) => AzureCryptoClient;

/** The JOSE wrap algorithms this provider writes and reads. */
export type AzureWrapAlgorithm = 'RSA-OAEP-256' | 'A256KW';
export const AZURE_WRAP_ALGORITHMS: readonly AzureWrapAlgorithm[] = ['RSA-OAEP-256', 'A256KW'];

/** The wrap algorithm for each key type (JWK kty) that can wrap. */
const ALGORITHM_BY_KEY_TYPE: Readonly<Record<string, AzureWrapAlgorithm>> = {
  RSA: 'RSA-OAEP-256',
  'RSA-HSM': 'RSA-OAEP-256',
  oct: 'A256KW',
  'oct-HSM': 'A256KW',
};

/** The vault calls, as operation labels in messages and retry events. */
export type VaultOperation = 'getKey' | 'wrapKey' | 'unwrapKey';

/**
 * Told once per vault call, after all its attempts: how long it took and, when it failed, the code it
 * failed with (undefined: success). Labels only, never the error; must not throw (metrics).
 */
export type VaultCallObserver = (
  operation: VaultOperation,
  seconds: number,
  failure: ErrorCode | undefined,
) => void;

/** Key Vault key names (1-127 letters, digits, dashes). */
const KEY_NAME = /^[0-9A-Za-z-]{1,127}$/;
/** Key versions: Key Vault and Managed HSM use 32 hex digits; allow a little more for compatible vaults. */
const KEY_VERSION = /^[0-9A-Za-z_-]{1,64}$/;
/** `https://host[:port]/keys/{name}/{version}[/]`; the version part may be empty (caught later). */
const KEY_ID = /^https:\/\/([^/?#@\s]+)\/keys\/([^/?#\s]+)\/([^/?#\s]*?)\/?$/i;

export const DEFAULT_CURRENT_VERSION_TTL_MS = 60_000;
export const DEFAULT_MAX_CACHED_VERSIONS = 64;

/** A key id split into its parts; host lowercased, default port dropped. */
export interface ParsedKeyId {
  readonly host: string;
  readonly name: string;
  readonly version: string;
}

/** Parses a Key Vault key id (pure, no I/O); undefined when it is not one. */
export function parseKeyId(keyId: string): ParsedKeyId | undefined {
  if (keyId.length > MAX_KEY_ID_BYTES) return undefined;
  const match = KEY_ID.exec(keyId);
  if (!match) return undefined;
  let host = match[1]!.toLowerCase();
  if (host.endsWith(':443')) host = host.slice(0, -4);
  return { host, name: match[2]!, version: match[3]! };
}

/** Options for `AzureKekProvider`; `createAzureProvider` fills them from configuration. */
export interface AzureKekOptions {
  /** The vault or Managed HSM URL, e.g. https://myvault.vault.azure.net. */
  readonly vaultUrl: string;
  readonly keyName: string;
  readonly keyClient: AzureKeyReader;
  readonly cryptoClientFactory: CryptoClientFactory;
  readonly retry?: Partial<RetryPolicyOptions> | undefined;
  /** Clock, sleep, randomness and the retry event hook (tests; metrics later). */
  readonly deps?: Partial<RetryDeps> | undefined;
  /** How long the current version is reused before getKey is asked again. */
  readonly currentVersionTtlMs?: number | undefined;
  /** Crypto clients kept at most (least recently used are dropped); bounds forged-header growth. */
  readonly maxCachedVersions?: number | undefined;
  /** Told about every vault call's duration and outcome (metrics). */
  readonly onVaultCall?: VaultCallObserver | undefined;
}

interface VersionRef {
  /** `https://{host}/keys/{configured name}/{version}`: the cache key and the id the client is built for. */
  readonly canonical: string;
  readonly version: string;
}

interface VersionEntry {
  readonly client: AzureCryptoClient;
  /** The version's key type; undefined when the identity may not read the key (no pre-check then). */
  readonly keyType: string | undefined;
}

/** The current version as getKey(name) last returned it. */
interface Latest {
  readonly ref: VersionRef;
  /** The id exactly as Key Vault returned it; it goes into headers. */
  readonly keyId: string;
  readonly keyType: string | undefined;
  readonly enabled: boolean;
  readonly notBefore: Date | undefined;
  readonly expiresOn: Date | undefined;
  readonly fetchedAt: number;
}

/** The Azure Key Vault / Managed HSM provider for one key. */
export class AzureKekProvider implements KekProvider {
  readonly kind = 'azure';
  /** Lowercased host[:port] of the vault, default port dropped. */
  readonly host: string;
  readonly keyName: string;
  private readonly origin: string;
  private readonly nameLower: string;
  private readonly keys: AzureKeyReader;
  private readonly factory: CryptoClientFactory;
  private readonly retry: RetryPolicy;
  private readonly now: () => number;
  private readonly ttlMs: number;
  private readonly maxVersions: number;
  private readonly onVaultCall: VaultCallObserver | undefined;
  /** Per-version clients in least-recently-used order (Map iteration order). */
  private readonly versions = new Map<string, VersionEntry>();
  /** In-flight key-type look-ups, so concurrent first uses of a version build one client. */
  private readonly pending = new Map<string, Promise<VersionEntry>>();
  private latest: Latest | undefined;
  private latestFetch: Promise<Latest> | undefined;
  private fetchGeneration = 0;
  private installedGeneration = 0;
  private closed = false;
  /** Aborts the shared look-ups (which no single caller's signal governs) on close. */
  private readonly closing = new AbortController();

  constructor(options: AzureKekOptions) {
    this.host = vaultHost(options.vaultUrl);
    if (!KEY_NAME.test(options.keyName)) {
      throw new Error(`keyName "${options.keyName.slice(0, 200)}" must be 1-127 letters, digits or dashes`);
    }
    this.origin = `https://${this.host}`;
    this.keyName = options.keyName;
    this.nameLower = options.keyName.toLowerCase();
    this.keys = options.keyClient;
    this.factory = options.cryptoClientFactory;
    this.retry = new RetryPolicy(options.retry, options.deps);
    this.now = options.deps?.now ?? defaultRetryDeps.now;
    this.ttlMs = options.currentVersionTtlMs ?? DEFAULT_CURRENT_VERSION_TTL_MS;
    this.maxVersions = options.maxCachedVersions ?? DEFAULT_MAX_CACHED_VERSIONS;
    this.onVaultCall = options.onVaultCall;
    if (!(this.ttlMs >= 0)) throw new RangeError('currentVersionTtlMs must be >= 0');
    if (!Number.isInteger(this.maxVersions) || this.maxVersions < 1) {
      throw new RangeError('maxCachedVersions must be an integer >= 1');
    }
  }

  /**
   * True when `keyId` names a version of this key: same vault (host case-insensitive, :443
   * optional) and `/keys/{name}/`. Key names compare case-insensitively, as Key Vault treats them.
   */
  owns(keyId: string): boolean {
    const parsed = parseKeyId(keyId);
    return parsed !== undefined && parsed.host === this.host && parsed.name.toLowerCase() === this.nameLower;
  }

  /** How many per-version crypto clients are cached (tests, metrics). */
  get cachedVersions(): number {
    return this.versions.size;
  }

  async wrap(dek: Uint8Array, signal?: AbortSignal): Promise<WrapResult> {
    this.checkOpen();
    needs(
      dek.length >= 16 && dek.length <= 64 && dek.length % 8 === 0,
      ErrorCode.INVALID_ARGUMENT,
      `a data key to wrap must be 16-64 bytes and a multiple of 8, not ${dek.length} bytes`,
    );
    const latest = await this.currentVersion(signal);
    const algorithm = this.wrapAlgorithmOf(latest);
    const entry = await this.versionEntry(latest.ref, signal, { keyType: latest.keyType });
    let result: Awaited<ReturnType<AzureCryptoClient['wrapKey']>>;
    try {
      result = await this.call(
        'wrapKey',
        latest.keyId,
        (s) => entry.client.wrapKey(algorithm, dek, { abortSignal: s }),
        signal,
      );
    } catch (err) {
      // The version changed under us (disabled, deleted): ask getKey again on the next call.
      if (isSealboxError(err, ErrorCode.KEY_DISABLED) || isSealboxError(err, ErrorCode.KEY_NOT_FOUND)) {
        if (this.latest === latest) this.latest = undefined;
      }
      throw err;
    }
    const wrapped = asBuffer(result.result);
    needs(
      wrapped !== undefined && wrapped.length >= 1 && wrapped.length <= MAX_WRAPPED_DEK_BYTES,
      ErrorCode.INTERNAL,
      `Key Vault returned ${wrapped?.length ?? 'no'} wrapped bytes for ${latest.keyId}; ` +
        `sealbox stores at most ${MAX_WRAPPED_DEK_BYTES} (use an RSA key of at most 8192 bits)`,
    );
    return { keyId: latest.keyId, algorithm, wrapped };
  }

  async unwrap(keyId: string, algorithm: string, wrapped: Uint8Array, signal?: AbortSignal): Promise<Buffer> {
    this.checkOpen();
    const ref = this.refFor(keyId, ErrorCode.CIPHERTEXT_MALFORMED);
    needs(
      (AZURE_WRAP_ALGORITHMS as readonly string[]).includes(algorithm),
      ErrorCode.CIPHERTEXT_MALFORMED,
      `key ${keyId} unwraps with ${AZURE_WRAP_ALGORITHMS.join(' or ')}, but the header says ${algorithm.slice(0, 32)}`,
    );
    needs(
      wrapped.length >= 1 && wrapped.length <= MAX_WRAPPED_DEK_BYTES,
      ErrorCode.CIPHERTEXT_MALFORMED,
      `the wrapped data key is ${wrapped.length} bytes; it must be 1-${MAX_WRAPPED_DEK_BYTES}`,
    );
    const entry = await this.versionEntry(ref, signal);
    if (entry.keyType !== undefined) {
      const expected = ALGORITHM_BY_KEY_TYPE[entry.keyType];
      needs(
        expected === algorithm,
        ErrorCode.CIPHERTEXT_MALFORMED,
        expected
          ? `key ${keyId} is a ${entry.keyType} key and unwraps with ${expected}, but the header says ${algorithm}`
          : `key ${keyId} is a ${entry.keyType} key, which cannot unwrap data keys`,
      );
    }
    const result = await this.call(
      'unwrapKey',
      keyId,
      (s) => entry.client.unwrapKey(algorithm as AzureWrapAlgorithm, wrapped, { abortSignal: s }),
      signal,
    );
    const dek = asBuffer(result.result);
    needs(dek !== undefined, ErrorCode.INTERNAL, `Key Vault returned no data key for unwrapKey on ${keyId}`);
    /* Postcondition: `dek` is the SDK's own result buffer (or a view of it), not a copy, so the
       caller's fill(0) reaches the only copy sealbox controls. */
    return dek;
  }

  async status(keyId: string, signal?: AbortSignal): Promise<KeyStatus> {
    this.checkOpen();
    const ref = this.refFor(keyId, ErrorCode.INVALID_ARGUMENT);
    const key = await this.call(
      'getKey',
      keyId,
      (s) => this.keys.getKey(this.keyName, { version: ref.version, abortSignal: s }),
      signal,
    );
    const latest = await this.latestVersion(signal);
    return {
      keyId,
      enabled: key.properties.enabled !== false,
      notBefore: key.properties.notBefore,
      expiresOn: key.properties.expiresOn,
      latestKeyId: latest.keyId,
    };
  }

  /**
   * Asks Key Vault for the current version now, bypassing the TTL; new wraps use the answer. The key
   * watcher calls this on rotation events. Returns the current version's status.
   */
  async refreshCurrentVersion(signal?: AbortSignal): Promise<KeyStatus> {
    this.checkOpen();
    const latest = await this.fetchLatest(signal);
    return {
      keyId: latest.keyId,
      enabled: latest.enabled,
      notBefore: latest.notBefore,
      expiresOn: latest.expiresOn,
      latestKeyId: latest.keyId,
    };
  }

  async close(): Promise<void> {
    // Nothing here holds key material: the key never leaves the vault. Dropping the clients lets
    // their pipelines be collected; later calls fail with CANCELLED.
    this.closed = true;
    this.closing.abort();
    this.versions.clear();
    this.pending.clear();
    this.latest = undefined;
  }

  private checkOpen(): void {
    needs(
      !this.closed,
      ErrorCode.CANCELLED,
      `the Azure key ${this.origin}/keys/${this.keyName} is shut down`,
    );
  }

  /** Validates a key id from a header or a caller and returns its canonical form. */
  private refFor(keyId: string, malformed: ErrorCode): VersionRef {
    const parsed = parseKeyId(keyId);
    if (!parsed || parsed.host !== this.host || parsed.name.toLowerCase() !== this.nameLower) {
      throw new SealboxError(
        ErrorCode.KEY_NOT_FOUND,
        `key id ${keyId.slice(0, 256)} is not a version of ${this.origin}/keys/${this.keyName}`,
      );
    }
    needs(
      KEY_VERSION.test(parsed.version),
      malformed,
      `key id ${keyId.slice(0, 256)} does not name a key version (…/keys/{name}/{version})`,
    );
    return { canonical: `${this.origin}/keys/${this.keyName}/${parsed.version}`, version: parsed.version };
  }

  /**
   * The cached client for a version, built on first use. When the key type is not given, it is
   * read once with getKey(name, version) so a header whose algorithm does not fit the key fails as
   * CIPHERTEXT_MALFORMED before any unwrap call, and a forged version fails as KEY_NOT_FOUND before
   * a client is cached for it.
   */
  private async versionEntry(
    ref: VersionRef,
    signal: AbortSignal | undefined,
    known?: { keyType: string | undefined },
  ): Promise<VersionEntry> {
    const hit = this.versions.get(ref.canonical);
    if (hit) {
      this.versions.delete(ref.canonical);
      this.versions.set(ref.canonical, hit);
      return hit;
    }
    if (known) return this.install(ref, known.keyType);
    let lookup = this.pending.get(ref.canonical);
    if (!lookup) {
      // Shared by every caller waiting for this version, so it runs under the policy's deadline
      // (and close()) only; each caller still stops waiting when its own signal aborts.
      lookup = this.keyTypeOf(ref)
        .then((keyType) => this.install(ref, keyType))
        .finally(() => this.pending.delete(ref.canonical));
      this.pending.set(ref.canonical, lookup);
    }
    return raceAbort(lookup, signal, `unwrapKey on ${ref.canonical}`);
  }

  private async keyTypeOf(ref: VersionRef): Promise<string | undefined> {
    try {
      const key = await this.call(
        'getKey',
        ref.canonical,
        (s) => this.keys.getKey(this.keyName, { version: ref.version, abortSignal: s }),
        this.closing.signal,
      );
      return keyTypeOf(key);
    } catch (err) {
      // An identity allowed to unwrap but not to read the key: let the vault judge the algorithm.
      if (isSealboxError(err, ErrorCode.PERMISSION_DENIED)) return undefined;
      throw err;
    }
  }

  private install(ref: VersionRef, keyType: string | undefined): VersionEntry {
    const existing = this.versions.get(ref.canonical);
    if (existing) return existing;
    const entry: VersionEntry = { client: this.factory(ref.canonical), keyType };
    this.versions.set(ref.canonical, entry);
    const current = this.latest?.ref.canonical;
    for (const id of this.versions.keys()) {
      if (this.versions.size <= this.maxVersions) break;
      if (id !== current && id !== ref.canonical) this.versions.delete(id);
    }
    return entry;
  }

  /** The current version, usable for wrapping (enabled, within its validity dates). */
  private async currentVersion(signal: AbortSignal | undefined): Promise<Latest> {
    const latest = await this.latestVersion(signal);
    const now = this.now();
    const what = `the current version ${latest.keyId} of key ${this.keyName}`;
    needs(
      latest.enabled,
      ErrorCode.KEY_DISABLED,
      `${what} is disabled; enable it, or create a new enabled version, to encrypt`,
    );
    needs(
      !latest.notBefore || latest.notBefore.getTime() <= now,
      ErrorCode.KEY_DISABLED,
      `${what} is not valid before ${latest.notBefore?.toISOString()}; wait, or change its activation date`,
    );
    needs(
      !latest.expiresOn || latest.expiresOn.getTime() > now,
      ErrorCode.KEY_DISABLED,
      `${what} expired at ${latest.expiresOn?.toISOString()}; rotate the key (create a new version) or extend its expiry`,
    );
    return latest;
  }

  /**
   * The latest version from a cache that lives `currentVersionTtlMs`. Concurrent callers share one
   * getKey. When a refresh fails only because the vault is unavailable or throttling, the previous
   * answer is kept (wrapping under the previous version is safe; failing every encrypt is not).
   */
  private async latestVersion(signal: AbortSignal | undefined): Promise<Latest> {
    const cached = this.latest;
    if (cached && this.now() - cached.fetchedAt < this.ttlMs) return cached;
    if (!this.latestFetch) {
      const pending = this.fetchLatest(this.closing.signal).finally(() => {
        if (this.latestFetch === pending) this.latestFetch = undefined;
      });
      this.latestFetch = pending;
    }
    try {
      return await raceAbort(this.latestFetch, signal, `getKey on ${this.origin}/keys/${this.keyName}`);
    } catch (err) {
      const unavailable =
        isSealboxError(err, ErrorCode.VAULT_UNAVAILABLE) || isSealboxError(err, ErrorCode.VAULT_THROTTLED);
      if (cached && unavailable && !this.closed) return cached;
      throw err;
    }
  }

  private async fetchLatest(signal: AbortSignal | undefined): Promise<Latest> {
    const generation = ++this.fetchGeneration;
    const unversioned = `${this.origin}/keys/${this.keyName}`;
    const key = await this.call(
      'getKey',
      unversioned,
      (s) => this.keys.getKey(this.keyName, { abortSignal: s }),
      signal,
    );
    const keyId = key.id ?? key.key?.kid ?? '';
    const parsed = parseKeyId(keyId);
    // Precondition for writing headers: decrypt finds the provider by this id, so it must be ours.
    if (!parsed || !this.owns(keyId) || !KEY_VERSION.test(parsed.version)) {
      throw new SealboxError(
        ErrorCode.INTERNAL,
        `Key Vault returned key id "${keyId.slice(0, 256)}" for ${unversioned}, which is not a version of ` +
          `that key; set vaultUrl to the URL the vault uses in its key ids`,
      );
    }
    const latest: Latest = {
      ref: { canonical: `${this.origin}/keys/${this.keyName}/${parsed.version}`, version: parsed.version },
      keyId,
      keyType: keyTypeOf(key),
      enabled: key.properties.enabled !== false,
      notBefore: key.properties.notBefore,
      expiresOn: key.properties.expiresOn,
      fetchedAt: this.now(),
    };
    // A slow, older answer must not replace a newer one (a forced refresh racing a TTL refresh).
    if (generation > this.installedGeneration && !this.closed) {
      this.installedGeneration = generation;
      this.latest = latest;
    }
    return latest;
  }

  private wrapAlgorithmOf(latest: Latest): AzureWrapAlgorithm {
    const algorithm = latest.keyType === undefined ? undefined : ALGORITHM_BY_KEY_TYPE[latest.keyType];
    needs(
      algorithm,
      ErrorCode.INTERNAL,
      `key ${latest.keyId} is of type ${latest.keyType ?? 'unknown'}; sealbox wraps with RSA or RSA-HSM ` +
        `keys (RSA-OAEP-256) or 256-bit oct-HSM keys (A256KW)`,
    );
    return algorithm;
  }

  private async call<T>(
    operation: VaultOperation,
    keyId: string,
    attempt: (signal: AbortSignal) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<T> {
    const started = performance.now();
    try {
      const value = await this.retry.run(operation, attempt, signal);
      this.reportCall(operation, started, undefined);
      return value;
    } catch (err) {
      const mapped = mapVaultError(err, { operation, keyId, vault: this.host });
      this.reportCall(operation, started, mapped.code);
      throw mapped;
    }
  }

  private reportCall(operation: VaultOperation, started: number, failure: ErrorCode | undefined): void {
    if (!this.onVaultCall) return;
    try {
      this.onVaultCall(operation, (performance.now() - started) / 1000, failure);
    } catch {
      // Metrics must never change the outcome of a vault call.
    }
  }
}

function vaultHost(vaultUrl: string): string {
  let url: URL;
  try {
    url = new URL(vaultUrl);
  } catch {
    throw new Error(`vaultUrl "${vaultUrl.slice(0, 200)}" is not a URL`);
  }
  if (url.protocol !== 'https:') throw new Error(`vaultUrl ${vaultUrl} must use https`);
  if (
    url.username ||
    url.password ||
    url.search ||
    url.hash ||
    (url.pathname !== '/' && url.pathname !== '')
  ) {
    throw new Error(
      `vaultUrl ${vaultUrl} must be just https://host[:port], with no path, query or credentials`,
    );
  }
  // URL lowercases the host and drops the default port.
  return url.host;
}

function keyTypeOf(key: KeyVaultKey): string | undefined {
  return key.keyType ?? key.key?.kty;
}

/** A Buffer over the same memory as `bytes` (no copy), or undefined when there are no bytes. */
function asBuffer(bytes: unknown): Buffer | undefined {
  if (Buffer.isBuffer(bytes)) return bytes;
  if (bytes instanceof Uint8Array) return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return undefined;
}

/** Waits for a shared promise, but stops waiting (CANCELLED) when this caller's signal aborts. */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  // The shared promise may outlive every waiter; its rejection is then nobody's to report.
  promise.catch(() => {});
  if (!signal) return promise;
  return untilAborted(
    promise,
    signal,
    (s) =>
      new SealboxError(ErrorCode.CANCELLED, `the call was cancelled while waiting for Key Vault (${what})`, {
        cause: s.reason,
      }),
  );
}

/** Where a vault error happened, for the message. */
export interface VaultCallContext {
  readonly operation: VaultOperation;
  /** The (versioned, or for getKey of the current version unversioned) key id. */
  readonly keyId: string;
  /** The vault's host[:port]. */
  readonly vault: string;
}

/** The fields of the SDK's RestError (and @azure/identity errors) that the mapping reads. */
interface SdkErrorLike {
  readonly name?: unknown;
  readonly message?: unknown;
  readonly code?: unknown;
  readonly statusCode?: unknown;
  /** Key Vault's error body: `{ error: { code, message, innerError: { code, innerError? } } }`. */
  readonly details?: { readonly error?: ErrorBody };
}
interface ErrorBody {
  readonly code?: unknown;
  readonly innerError?: ErrorBody;
  /** The wire spelling, in case a body reaches us undeserialized. */
  readonly innererror?: ErrorBody;
}

const DISABLED_CODES = new Set(['KeyDisabled', 'KeyExpired', 'KeyNotYetValid', 'KeyNotActive']);
const PERMISSION_BY_OPERATION: Record<VaultOperation, string> = {
  getKey: 'get',
  wrapKey: 'wrapKey',
  unwrapKey: 'unwrapKey',
};

/**
 * Maps what a vault call threw to a SealboxError. Messages name the operation, the key id and
 * what to do; they carry status and error codes but never the vault's free-text message or key
 * material. The original error stays as `cause` (for logs).
 *
 * | error                                               | code               |
 * |-----------------------------------------------------|--------------------|
 * | 404 (KeyNotFound)                                   | KEY_NOT_FOUND      |
 * | 403 with KeyDisabled / KeyExpired / KeyNotYetValid  | KEY_DISABLED       |
 * | 403 otherwise (ForbiddenByRbac, ForbiddenByPolicy, AccessDenied, KeyOperationForbidden, ForbiddenByFirewall), 401 | PERMISSION_DENIED |
 * | 400 on unwrapKey                                    | CIPHERTEXT_CORRUPT |
 * | 429, or the deadline passed while throttled         | VAULT_THROTTLED    |
 * | 408, 5xx, network, TLS, timeout, deadline           | VAULT_UNAVAILABLE  |
 * | caller abort                                        | CANCELLED          |
 * | credential errors (no identity, token refused)      | PERMISSION_DENIED (VAULT_UNAVAILABLE when Entra ID is down) |
 * | anything else (other 4xx, bugs)                     | INTERNAL           |
 */
export function mapVaultError(err: unknown, context: VaultCallContext): SealboxError {
  if (err instanceof SealboxError) return err;
  const { operation, keyId, vault } = context;
  const what = `${operation} on ${keyId}`;
  // Vault verdicts name the key version they are about, so the cache can revoke it in-band.
  const fail = (code: ErrorCode, message: string) => new SealboxError(code, message, { cause: err, keyId });

  if (err instanceof CallAbortedError) {
    return fail(ErrorCode.CANCELLED, `the call was cancelled while waiting for Key Vault (${what})`);
  }
  if (err instanceof DeadlineExceededError) {
    const last = err.lastError;
    if (statusOf(last) === 429) {
      return fail(
        ErrorCode.VAULT_THROTTLED,
        `Key Vault kept throttling ${what} until the ${err.timeoutMs} ms deadline; reduce the request ` +
          'rate (enable the data-key cache) or raise the vault limit',
      );
    }
    return fail(
      ErrorCode.VAULT_UNAVAILABLE,
      `Key Vault did not complete ${what} within ${err.timeoutMs} ms (${err.attempts} attempt(s)` +
        `${last === undefined ? '' : `, last: ${describe(last)}`}); check the network path to ${vault}, ` +
        'or raise retry.timeoutMs',
    );
  }

  const e = (typeof err === 'object' && err !== null ? err : {}) as SdkErrorLike;
  const name = typeof e.name === 'string' ? e.name : '';
  const status = statusOf(err);
  const codes = vaultErrorCodes(e);
  const detail = [status, ...codes].filter((x) => x !== undefined).join(' ');
  const permission = PERMISSION_BY_OPERATION[operation];

  // @azure/identity: the token never reached Key Vault.
  if (name === 'CredentialUnavailableError' || name === 'AggregateAuthenticationError') {
    return fail(
      ErrorCode.PERMISSION_DENIED,
      `no Azure credential could get a token for ${what} (${name}); configure workload identity or a ` +
        'managed identity for this pod/VM, or check the credential settings of this key',
    );
  }
  if (name === 'AuthenticationError' || name === 'AuthenticationRequiredError') {
    if (status === undefined || status === 429 || status >= 500) {
      return fail(
        ErrorCode.VAULT_UNAVAILABLE,
        `Microsoft Entra ID did not issue a token for ${what} (${name}${status ? ` ${status}` : ''}); retry later`,
      );
    }
    return fail(
      ErrorCode.PERMISSION_DENIED,
      `Microsoft Entra ID refused a token for ${what} (${name} ${status}); check the identity's client id, ` +
        'tenant and federated credential',
    );
  }

  if (status !== undefined) {
    if (status === 404) {
      return fail(
        ErrorCode.KEY_NOT_FOUND,
        `Key Vault has no ${keyId} (${operation}: ${detail}); the key or version was deleted (recover it ` +
          'if soft-deleted) or the configured vaultUrl/keyName is wrong',
      );
    }
    if (status === 403) {
      if (codes.some((c) => DISABLED_CODES.has(c))) {
        return fail(
          ErrorCode.KEY_DISABLED,
          `key ${keyId} is disabled, expired or not yet valid (${operation}: ${detail}); enable the key ` +
            'version, or correct its activation and expiry dates',
        );
      }
      if (codes.includes('KeyOperationForbidden')) {
        return fail(
          ErrorCode.PERMISSION_DENIED,
          `key ${keyId} does not permit ${operation} (${detail}); add ${operation} to the key's permitted operations`,
        );
      }
      if (codes.includes('ForbiddenByFirewall') || codes.includes('ForbiddenByConnection')) {
        return fail(
          ErrorCode.PERMISSION_DENIED,
          `the vault's network rules refused ${what} (${detail}); allow this network in the vault firewall ` +
            'or reach it through its private endpoint',
        );
      }
      return fail(
        ErrorCode.PERMISSION_DENIED,
        `the identity may not ${what} (${detail}); grant ${permission} on the key to the identity ` +
          '(role "Key Vault Crypto Service Encryption User" or "Managed HSM Crypto Service Encryption User", ' +
          `or an access policy with keys/${permission})`,
      );
    }
    if (status === 401) {
      return fail(
        ErrorCode.PERMISSION_DENIED,
        `Key Vault did not accept the identity's token for ${what} (${detail}); check the credential's ` +
          "tenant and that it is allowed to sign in to the vault's tenant",
      );
    }
    if (status === 429) {
      return fail(
        ErrorCode.VAULT_THROTTLED,
        `Key Vault throttled ${what} (${detail}) on every attempt; reduce the request rate (enable the ` +
          'data-key cache) or raise the vault limit',
      );
    }
    if (status === 408 || status >= 500) {
      return fail(
        ErrorCode.VAULT_UNAVAILABLE,
        `Key Vault failed ${what} (${detail}) on every attempt; no verdict about the key, retry later`,
      );
    }
    if (status === 400 && operation === 'unwrapKey') {
      return fail(
        ErrorCode.CIPHERTEXT_CORRUPT,
        `Key Vault could not unwrap the data key under ${keyId} (${operation}: ${detail}): the wrapped key was modified ` +
          'or belongs to another key version',
      );
    }
    return fail(
      ErrorCode.INTERNAL,
      `Key Vault refused ${what} (${detail}); check that the key is an RSA key or a 256-bit oct-HSM key`,
    );
  }

  // Transport: the request did not get an HTTP answer.
  const code = typeof e.code === 'string' ? e.code : '';
  if (TLS_VERIFY_ERROR_CODES.has(code) || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_')) {
    return fail(
      ErrorCode.VAULT_UNAVAILABLE,
      `TLS verification of the vault at ${vault} failed during ${what} (${code}); if the vault uses a ` +
        'private CA (the dev vault), set caFile to that CA certificate (PEM)',
    );
  }
  if (name === 'AbortError' || name === 'TimeoutError') {
    return fail(ErrorCode.VAULT_UNAVAILABLE, `the request for ${what} timed out; retry later`);
  }
  if (name === 'RestError' || /^E[A-Z0-9_]+$/.test(code)) {
    return fail(
      ErrorCode.VAULT_UNAVAILABLE,
      `cannot reach Key Vault at ${vault} for ${what} (${code || name}); check DNS, network and proxy settings`,
    );
  }

  // The SDK's own checks of the cached key (CryptographyClient.ensureValid): plain Errors.
  const message = typeof e.message === 'string' ? e.message : '';
  if (/ expired at |can't be used before/.test(message)) {
    return fail(
      ErrorCode.KEY_DISABLED,
      `key ${keyId} is expired or not yet valid (${operation}); correct its activation and expiry dates`,
    );
  }
  if (/^Operation \w+ is not supported on key/.test(message)) {
    return fail(
      ErrorCode.PERMISSION_DENIED,
      `key ${keyId} does not permit ${operation}; add ${operation} to the key's permitted operations`,
    );
  }
  return fail(ErrorCode.INTERNAL, `unexpected failure during ${what} (${name || typeof err})`);
}

function statusOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const status = (err as SdkErrorLike).statusCode;
  return typeof status === 'number' ? status : undefined;
}

/** The error's code, then Key Vault's error and inner-error codes, outermost first, deduplicated. */
export function vaultErrorCodes(err: unknown): string[] {
  const codes: string[] = [];
  if (typeof err !== 'object' || err === null) return codes;
  const e = err as SdkErrorLike;
  const add = (code: unknown) => {
    if (typeof code === 'string' && code !== '' && !codes.includes(code)) codes.push(code.slice(0, 64));
  };
  add(e.code);
  let body = e.details?.error;
  for (let depth = 0; body && depth < 4; depth++) {
    add(body.code);
    body = body.innerError ?? body.innererror;
  }
  return codes;
}

/** A short label for an error: status and codes, or name and code; never its message. */
function describe(err: unknown): string {
  const e = (typeof err === 'object' && err !== null ? err : {}) as SdkErrorLike;
  const status = statusOf(err);
  const parts = [status, ...vaultErrorCodes(e)].filter((x) => x !== undefined);
  if (parts.length > 0) return parts.join(' ');
  return typeof e.name === 'string' ? e.name : typeof err;
}

// ---------------------------------------------------------------------------------------------------
// Construction from configuration

/** How the provider gets its Entra ID token. */
export interface AzureCredentialConfig {
  /**
   * default: DefaultAzureCredential (workload identity, then managed identity, then developer
   * logins). workload-identity / managed-identity: only that one. static-token: a fixed bearer
   * token, for the local dev vault only.
   */
  readonly kind: 'default' | 'workload-identity' | 'managed-identity' | 'static-token';
  /** The user-assigned managed identity's or the workload identity app's client id. */
  readonly clientId?: string | undefined;
  readonly tenantId?: string | undefined;
  /** workload-identity: the projected service-account token; static-token: a file holding the token. */
  readonly tokenFile?: string | undefined;
  /** static-token: the token itself (dev only; prefer tokenFile). */
  readonly token?: string | undefined;
}

/** One `keys.<alias>` entry with `provider: azure` (see the schema proposed in docs/azure.md). */
export interface AzureKeyConfig {
  readonly provider: 'azure';
  readonly vaultUrl: string;
  readonly keyName: string;
  readonly credential: AzureCredentialConfig;
  /** PEM file of the CA the vault's TLS certificate chains to (dev vault); added trust only for the vault. */
  readonly caFile?: string | undefined;
  readonly retry?: Partial<RetryPolicyOptions> | undefined;
}

/** What `createAzureProvider` lets callers (main.ts, tests) supply instead of building it. */
export interface AzureProviderDeps {
  /** A credential to use instead of building one from `config.credential` (share one per identity). */
  readonly credential?: TokenCredential;
  /** Reads caFile and static-token token files; defaults to fs.readFileSync(path, 'utf8'). */
  readonly readFile?: (path: string) => string;
  /** Clock, sleep, randomness and the retry event hook. */
  readonly retryDeps?: Partial<RetryDeps>;
  readonly currentVersionTtlMs?: number;
  /** Told about every vault call's duration and outcome (metrics). */
  readonly onVaultCall?: VaultCallObserver;
}

const readUtf8 = (path: string) => readFileSync(path, 'utf8');

/** Builds the credential a config asks for. Throws (at startup) when the config cannot work. */
export function createAzureCredential(
  config: AzureCredentialConfig,
  readFile: (path: string) => string = readUtf8,
): TokenCredential {
  switch (config.kind) {
    case 'default':
      return new DefaultAzureCredential({
        ...(config.clientId ? { managedIdentityClientId: config.clientId } : {}),
        ...(config.clientId ? { workloadIdentityClientId: config.clientId } : {}),
        ...(config.tenantId ? { tenantId: config.tenantId } : {}),
      });
    case 'workload-identity':
      // Unset fields fall back to AZURE_CLIENT_ID, AZURE_TENANT_ID and AZURE_FEDERATED_TOKEN_FILE,
      // which the AKS workload identity webhook injects; the SDK reads them, not sealbox.
      return new WorkloadIdentityCredential({
        ...(config.clientId ? { clientId: config.clientId } : {}),
        ...(config.tenantId ? { tenantId: config.tenantId } : {}),
        ...(config.tokenFile ? { tokenFilePath: config.tokenFile } : {}),
      });
    case 'managed-identity':
      return config.clientId
        ? new ManagedIdentityCredential({ clientId: config.clientId })
        : new ManagedIdentityCredential();
    case 'static-token': {
      const { token, tokenFile } = config;
      if (!token && !tokenFile) throw new Error('a static-token credential needs token or tokenFile');
      return staticTokenCredential(token ? () => token : () => readFile(tokenFile!));
    }
  }
}

/**
 * A credential that always presents the same bearer token: for the local dev vault only. The token
 * is read on each request for a token (the Key Vault policy caches it for a few minutes), so a
 * rewritten token file is picked up.
 */
export function staticTokenCredential(read: () => string): TokenCredential {
  return {
    async getToken() {
      const token = read().trim();
      if (!token) {
        const err = new Error('the static token is empty');
        err.name = 'CredentialUnavailableError';
        throw err;
      }
      return { token, expiresOnTimestamp: Date.now() + 5 * 60_000, tokenType: 'Bearer' };
    },
  };
}

/**
 * Options for every KeyClient and CryptographyClient sealbox builds. A new object per client: the
 * SDK writes into `userAgentOptions`. `tls` must be one shared object, because the HTTP client
 * caches one agent (connection pool) per TLS settings object.
 */
export function azureClientOptions(
  options: { tls?: { ca: string } | undefined; staticToken?: boolean } = {},
): CryptographyClientOptions {
  return {
    // Exactly one retry layer (retry.ts): SDK retries would multiply attempts past our deadline and
    // count nothing.
    retryOptions: { maxRetries: 0 },
    userAgentOptions: { userAgentPrefix: 'sealbox' },
    // core-rest-pipeline turns tlsOptions into its tlsPolicy, which sets PipelineRequest.tlsSettings
    // for each request; the Node HTTP client passes `ca` to https.Agent. Verification stays on.
    ...(options.tls ? { tlsOptions: options.tls } : {}),
    // A static token is not scoped by the challenge's resource, and the dev vault's host (localhost,
    // 127.0.0.1) can never match *.vault.azure.net. Real credentials keep the check.
    ...(options.staticToken ? { disableChallengeResourceVerification: true } : {}),
  };
}

/** Reads a PEM CA file; throws naming the file when it holds no certificate. */
export function readCaFile(path: string, readFile: (path: string) => string = readUtf8): string {
  let pem: string;
  try {
    pem = readFile(path);
  } catch (err) {
    throw new Error(`cannot read caFile ${path}: ${(err as Error).message}`);
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) {
    throw new Error(`caFile ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  }
  return pem;
}

/**
 * Builds the provider for one configured Azure key: the credential (or `deps.credential`), one
 * KeyClient, and a factory for one CryptographyClient per key version, all sharing the credential,
 * the TLS settings and `retryOptions: { maxRetries: 0 }`. No I/O beyond reading caFile.
 */
export function createAzureProvider(config: AzureKeyConfig, deps: AzureProviderDeps = {}): AzureKekProvider {
  const readFile = deps.readFile ?? readUtf8;
  const credential = deps.credential ?? createAzureCredential(config.credential, readFile);
  const tls = config.caFile ? { ca: readCaFile(config.caFile, readFile) } : undefined;
  const staticToken = config.credential.kind === 'static-token';
  const vaultUrl = `https://${vaultHost(config.vaultUrl)}`;
  return new AzureKekProvider({
    vaultUrl,
    keyName: config.keyName,
    keyClient: new KeyClient(vaultUrl, credential, azureClientOptions({ tls, staticToken })),
    cryptoClientFactory: (keyId) =>
      new CryptographyClient(keyId, credential, azureClientOptions({ tls, staticToken })),
    retry: config.retry,
    deps: deps.retryDeps,
    currentVersionTtlMs: deps.currentVersionTtlMs,
    onVaultCall: deps.onVaultCall,
  });
}
