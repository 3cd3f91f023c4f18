/**
 * A stand-in for kube-apiserver's KMS v2 client side, as its source behaves toward a plugin, over a
 * real grpc-js client on the plugin's real socket. What it mirrors, and from where (kubernetes
 * staging/src/k8s.io/apiserver/pkg/…):
 * - server/options/encryptionconfig/config.go: Status polled every `kmsv2PluginHealthzPositiveInterval`
 *   (1 min) while healthy and `kmsv2PluginHealthzNegativeInterval` (10 s) while not (both configurable
 *   here); isKMSv2ProviderHealthyAndMaybeRotateDEK — healthz must be "ok", version "v2", key_id valid;
 *   rotateDEKOnKeyIDChange — an unchanged key_id keeps the seed, a changed one makes a new 32-byte seed
 *   and calls Encrypt, whose key_id must equal Status's or the old state is kept and the probe fails.
 * - storage/value/encrypt/envelope/kmsv2/envelope.go: ValidateEncryptedObject (encrypted DEK source
 *   1..1024 bytes, key_id 1..1024 bytes, annotation keys fully qualified DNS names and keys + values ≤
 *   32 KiB); TransformFromStorage caches the decrypting transformer under generateCacheKey(type,
 *   encrypted DEK source, key_id, annotations) and calls Decrypt only on a miss; data whose key_id differs
 *   from the current write state's is "stale".
 * - apimachinery pkg/util/validation/validation.go: IsFullyQualifiedDomainName, IsDNS1123Subdomain/Label.
 * Simplified (sealbox cannot tell): the data cipher is AES-256-GCM under HKDF-SHA256(seed, random info)
 * rather than the apiserver's exact extended-nonce construction; the write-state expiry
 * (kmsv2PluginWriteDEKSourceMaxTTL) is not modelled.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, randomUUID } from 'node:crypto';
import { credentials, type ServiceError } from '@grpc/grpc-js';
import type { KeyManagementServiceClient } from '../../src/gen/v2/KeyManagementService';
import { loadKmsApi } from '../../src/server/kms';

export const KEY_ID_MAX_SIZE = 1024;
export const ENCRYPTED_DEK_SOURCE_MAX_SIZE = 1024;
export const ANNOTATIONS_MAX_SIZE = 32 * 1024;

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** apimachinery's IsFullyQualifiedDomainName: errors, empty when valid. */
export function fullyQualifiedDomainNameErrors(input: string): string[] {
  if (input.length === 0) return ['Required value'];
  const name = input.endsWith('.') ? input.slice(0, -1) : input;
  if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) return [`${input}: not a DNS-1123 subdomain`];
  const labels = name.split('.');
  if (labels.length < 2) return [`${input}: should be a domain with at least two segments separated by dots`];
  for (const label of labels) {
    if (label.length > 63 || !DNS1123_LABEL.test(label)) return [`${label}: not a DNS-1123 label`];
  }
  return [];
}

/** envelope.go ValidateKeyID. */
export function keyIdErrors(keyId: string): string[] {
  if (keyId.length === 0) return ['keyID is empty'];
  if (Buffer.byteLength(keyId) > KEY_ID_MAX_SIZE) return [`keyID exceeds ${KEY_ID_MAX_SIZE} bytes`];
  return [];
}

/** envelope.go validateAnnotations. */
export function annotationErrors(annotations: Record<string, Buffer>): string[] {
  const errors: string[] = [];
  let total = 0;
  for (const [key, value] of Object.entries(annotations)) {
    errors.push(...fullyQualifiedDomainNameErrors(key));
    total += Buffer.byteLength(key) + value.length;
  }
  if (total > ANNOTATIONS_MAX_SIZE) errors.push(`total size of annotations is ${total}`);
  return errors;
}

/** envelope.go validateEncryptedDEKSource. */
export function encryptedDekSourceErrors(ciphertext: Buffer): string[] {
  if (ciphertext.length === 0) return ['encrypted DEK source is empty'];
  if (ciphertext.length > ENCRYPTED_DEK_SOURCE_MAX_SIZE)
    return [`encrypted DEK source is ${ciphertext.length} bytes`];
  return [];
}

/** What the apiserver stores in etcd for one object (kmstypes.EncryptedObject, with the data cipher's fields). */
export interface StoredObject {
  readonly keyId: string;
  readonly encryptedDekSource: Buffer;
  readonly annotations: Record<string, Buffer>;
  readonly info: Buffer;
  readonly nonce: Buffer;
  readonly data: Buffer;
}

interface WriteState {
  readonly seed: Buffer;
  readonly keyId: string;
  readonly encryptedDekSource: Buffer;
  readonly annotations: Record<string, Buffer>;
  readonly cacheKey: string;
}

export interface SimOptions {
  /** Status poll interval while healthy (apiserver: 60 s). */
  readonly healthyIntervalMs: number;
  /** Status poll interval while unhealthy (apiserver: 10 s). */
  readonly unhealthyIntervalMs: number;
  /** Per-call deadline (EncryptionConfiguration kms.timeout; apiserver default 3 s). */
  readonly timeoutMs?: number;
}

/** One poll's result, as the apiserver's healthz would report it. */
export interface PollResult {
  /** Which poll this was (1, 2, …): polls are numbered as they start. */
  readonly index: number;
  readonly healthy: boolean;
  readonly statusKeyId: string;
  /** Why the probe failed (healthz text, validation or rotation error). */
  readonly error?: string;
  /** True when this poll rotated the seed (called Encrypt successfully). */
  readonly rotated: boolean;
}

export class KubeApiserverSim {
  readonly client: KeyManagementServiceClient;
  private state: WriteState | undefined;
  /** Decrypting seeds by cache key (envelope.go simpleCache); cleared by restart(). */
  private cache = new Map<string, Buffer>();
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private readonly waiters: Array<(r: PollResult) => void> = [];
  readonly calls = { status: 0, encrypt: 0, decrypt: 0 };
  polls = 0;
  last: PollResult | undefined;
  readonly uids: string[] = [];

  constructor(
    target: string,
    private readonly options: SimOptions,
  ) {
    const Client = loadKmsApi().v2.KeyManagementService;
    this.client = new Client(target, credentials.createInsecure());
  }

  /** The current write key_id (undefined before a successful Encrypt). */
  get writeKeyId(): string | undefined {
    return this.state?.keyId;
  }

  /** One Status poll and, if its key_id changed, one Encrypt (config.go check). */
  async poll(): Promise<PollResult> {
    const index = ++this.polls;
    let result: PollResult;
    try {
      result = { index, ...(await this.probe()) };
    } catch (err) {
      result = { index, healthy: false, statusKeyId: '', error: (err as Error).message, rotated: false };
    }
    this.last = result;
    for (const w of this.waiters.splice(0)) w(result);
    return result;
  }

  /** Polls on the apiserver's cadence until stop(). */
  start(): void {
    this.running = true;
    const loop = async () => {
      const result = await this.poll();
      if (!this.running) return;
      this.timer = setTimeout(
        loop,
        result.healthy ? this.options.healthyIntervalMs : this.options.unhealthyIntervalMs,
      );
    };
    this.timer = setTimeout(loop, 0);
  }

  stop(): void {
    this.running = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Resolves with the next poll's result. */
  nextPoll(): Promise<PollResult> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  /** Resolves with the result of the first poll that starts after this call (the polling loop runs). */
  async pollAfterNow(): Promise<PollResult> {
    const now = this.polls;
    for (;;) {
      const result = await this.nextPoll();
      if (result.index > now) return result;
    }
  }

  /** A new apiserver process: empty DEK cache, no write state; the first poll makes a new seed. */
  restart(): void {
    this.cache = new Map();
    this.state = undefined;
  }

  /** TransformToStorage: seals `data` under the current seed, bound to `name` (the etcd key). */
  write(name: string, data: Buffer): StoredObject {
    const state = this.state;
    if (!state) throw new Error('no write state: the KMS plugin has not given the apiserver a seed yet');
    this.cache.set(state.cacheKey, state.seed);
    const info = randomBytes(32);
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', dataKey(state.seed, info), nonce);
    cipher.setAAD(Buffer.from(name));
    const sealed = Buffer.concat([cipher.update(data), cipher.final(), cipher.getAuthTag()]);
    return {
      keyId: state.keyId,
      encryptedDekSource: state.encryptedDekSource,
      annotations: state.annotations,
      info,
      nonce,
      data: sealed,
    };
  }

  /** TransformFromStorage: Decrypt on a cache miss only; `stale` when key_id is not the write key's. */
  async read(name: string, stored: StoredObject): Promise<{ data: Buffer; stale: boolean }> {
    const errors = [
      ...encryptedDekSourceErrors(stored.encryptedDekSource),
      ...keyIdErrors(stored.keyId),
      ...annotationErrors(stored.annotations),
    ];
    if (errors.length > 0) throw new Error(`invalid encrypted object: ${errors.join('; ')}`);
    const key = cacheKey(stored.encryptedDekSource, stored.keyId, stored.annotations);
    let seed = this.cache.get(key);
    if (!seed) {
      const uid = randomUUID();
      this.calls.decrypt++;
      const response = await this.unary<{ plaintext: Buffer }>('Decrypt', {
        ciphertext: stored.encryptedDekSource,
        uid,
        keyId: stored.keyId,
        annotations: stored.annotations,
      });
      this.uids.push(uid);
      seed = response.plaintext;
      this.cache.set(key, seed);
    }
    const decipher = createDecipheriv('aes-256-gcm', dataKey(seed, stored.info), stored.nonce);
    decipher.setAAD(Buffer.from(name));
    decipher.setAuthTag(stored.data.subarray(stored.data.length - 16));
    const data = Buffer.concat([
      decipher.update(stored.data.subarray(0, stored.data.length - 16)),
      decipher.final(),
    ]);
    return { data, stale: stored.keyId !== this.state?.keyId };
  }

  close(): void {
    this.stop();
    this.client.close();
  }

  private async probe(): Promise<Omit<PollResult, 'index'>> {
    this.calls.status++;
    const status = await this.unary<{ version: string; healthz: string; keyId: string }>('Status', {});
    const errors: string[] = [];
    if (status.healthz !== 'ok') errors.push(`got unexpected healthz status: ${status.healthz}`);
    if (status.version !== 'v2') errors.push(`expected KMSv2 API version v2, got ${status.version}`);
    const keyErrors = keyIdErrors(status.keyId);
    errors.push(...keyErrors);
    let rotated = false;
    if (keyErrors.length === 0 && this.state?.keyId !== status.keyId) {
      // rotateDEKOnKeyIDChange: a new seed for the new key_id; on any error the old state stays.
      const seed = randomBytes(32);
      const uid = randomUUID();
      this.calls.encrypt++;
      try {
        const response = await this.unary<{
          ciphertext: Buffer;
          keyId: string;
          annotations: Record<string, Buffer>;
        }>('Encrypt', { plaintext: Buffer.from(seed), uid });
        this.uids.push(uid);
        const invalid = [
          ...encryptedDekSourceErrors(response.ciphertext),
          ...keyIdErrors(response.keyId),
          ...annotationErrors(response.annotations),
        ];
        if (invalid.length > 0) errors.push(`invalid encrypted object: ${invalid.join('; ')}`);
        else if (response.keyId !== status.keyId) {
          errors.push(`mismatched key ID: Status ${status.keyId}, Encrypt ${response.keyId}`);
        } else {
          this.state = {
            seed,
            keyId: response.keyId,
            encryptedDekSource: response.ciphertext,
            annotations: response.annotations,
            cacheKey: cacheKey(response.ciphertext, response.keyId, response.annotations),
          };
          rotated = true;
        }
      } catch (err) {
        errors.push(`failed to encrypt DEK: ${(err as Error).message}`);
      }
    }
    return {
      healthy: errors.length === 0,
      statusKeyId: status.keyId,
      ...(errors.length > 0 ? { error: errors.join('; ') } : {}),
      rotated,
    };
  }

  private unary<T>(method: 'Status' | 'Encrypt' | 'Decrypt', request: object): Promise<T> {
    const deadline = new Date(Date.now() + (this.options.timeoutMs ?? 10_000));
    return new Promise<T>((resolve, reject) => {
      const fn = this.client[method].bind(this.client) as unknown as (
        req: object,
        options: { deadline: Date },
        cb: (err: ServiceError | null, res?: T) => void,
      ) => void;
      fn(request, { deadline }, (err, res) => (err ? reject(err) : resolve(res as T)));
    });
  }
}

/** envelope.go generateCacheKey's inputs, as one string (type is always the seed type here). */
function cacheKey(source: Buffer, keyId: string, annotations: Record<string, Buffer>): string {
  const sorted = Object.keys(annotations)
    .sort()
    .map((k) => `${k}=${annotations[k]!.toString('hex')}`);
  return [source.toString('hex'), keyId, sorted.join(',')].join('\n');
}

function dataKey(seed: Buffer, info: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', seed, Buffer.alloc(0), info, 32));
}
