/**
 * The Kubernetes KMS v2 plugin's use cases (proto/k8s/kms/v2/api.proto; docs/kms.md), transport-free:
 * server/kms.ts adapts them to gRPC. They run over the same core as the envelope API — the envelope
 * service and its DEK cache for the crypto, the key watcher's last verdicts and the key-state model
 * for health and revocation — bound to one configured key alias.
 *
 * What kube-apiserver relies on (kubernetes staging/src/k8s.io/apiserver/pkg/storage/value/encrypt/
 * envelope/kmsv2/envelope.go and pkg/server/options/encryptionconfig/config.go; KEP-3299):
 * - Status: `version` "v2", `healthz` "ok" or a reason, `key_id` non-empty and ≤ 1 KiB
 *   (isKMSv2ProviderHealthyAndMaybeRotateDEK, ValidateKeyID). Polled every minute, every 10 s while
 *   unhealthy; a key_id different from the last one makes the apiserver call Encrypt with a new seed.
 * - Encrypt: its key_id must equal the key_id of the Status call that triggered it, or the apiserver
 *   keeps its old seed and reports the plugin unhealthy (rotateDEKOnKeyIDChange); ciphertext ≤ 1 KiB
 *   (validateEncryptedDEKSource); annotation keys fully qualified DNS names, keys + values ≤ 32 KiB
 *   (validateAnnotations).
 * - Decrypt: gets back the ciphertext, key_id and annotations exactly as Encrypt returned them.
 *
 * Ciphertext: a sealbox v1 message (docs/FORMAT.md) over the seed — header (with the KEK key id, the
 * wrapped DEK and the encryption context `KMS_CONTEXT`) and one final chunk. The DEK cache makes one
 * wrap serve many seeds and one unwrap open them, and concurrent Decrypts of one DEK share one unwrap.
 *
 * key_id is the versioned KEK key id: the watcher's current version of the alias. It changes exactly
 * when the key rotates in the vault (a DEK-cache refresh wraps under the same version, so it does not
 * change it). Encrypt answers only with the key_id Status reports at that moment: see `encrypt`.
 */

import { ErrorCode, SealboxError } from '../errors';
import type { AuditCaller } from '../kek/audit';
import type { KeyAccess } from './access';
import type { EnvelopeService } from './service';

/** The KMS API version sealbox speaks (StatusResponse.version). */
export const KMS_API_VERSION = 'v2';
/** Largest key_id and ciphertext the apiserver accepts (envelope.go KeyIDMaxSize, encryptedDEKSourceMaxSize). */
export const KMS_MAX_KEY_ID_BYTES = 1024;
export const KMS_MAX_CIPHERTEXT_BYTES = 1024;
/** Largest sum of annotation key and value bytes the apiserver accepts (envelope.go annotationsMaxSize). */
export const KMS_MAX_ANNOTATION_BYTES = 32 * 1024;
/**
 * Largest plaintext Encrypt takes. The apiserver sends a 32-byte seed (HKDF_SHA256_XNONCE_AES_GCM_SEED)
 * or a 32-byte AES key (AES_GCM_KEY); 64 leaves room and keeps the ciphertext under 1 KiB with an
 * RSA-4096 wrapped DEK and a long key id.
 */
export const KMS_MAX_PLAINTEXT_BYTES = 64;
/** The one annotation sealbox sets: which ciphertext layout this is (a DNS name, as the apiserver requires). */
export const KMS_FORMAT_ANNOTATION = 'format.sealbox.dev';
export const KMS_FORMAT_VALUE = 'sealbox-v1';
/**
 * The encryption context of every KMS ciphertext: Decrypt requires it, so a sealbox ciphertext made
 * through the envelope API is not opened through the KMS socket.
 */
export const KMS_CONTEXT: Readonly<Record<string, string>> = Object.freeze({ 'sealbox.kms': 'v2' });

/** What the KMS use cases need from the core (main.ts wires them to the watcher, key states and cache). */
export interface KmsDeps {
  /** The configured key alias every KMS call uses. */
  readonly alias: string;
  readonly service: EnvelopeService;
  /** The watcher's last verdict about the alias's current version; undefined until it has read it. */
  current(): { readonly keyId: string; readonly lastError?: string } | undefined;
  /** The key-state model's check (KeyStates.check): throws while `keyId` may not be used for `use`. */
  check(keyId: string, use: 'encrypt' | 'decrypt'): void;
  /** Retires the alias's encrypt-side DEKs, so the next wrap reads the current version (cache.invalidate). */
  invalidate(): void;
  /** Has the watcher read the current version now (watcher.checkNow; one vault read per alias). */
  refresh(): Promise<void>;
  /** Key aliases owning a key id (registry.aliasesOf): no I/O. */
  aliasesOf(keyId: string): string[];
}

export interface KmsStatus {
  readonly version: string;
  readonly healthz: string;
  readonly keyId: string;
}

export interface KmsEncrypted {
  readonly ciphertext: Buffer;
  readonly keyId: string;
  readonly annotations: Record<string, Buffer>;
}

/** Encrypt attempts before a key_id that will not settle is refused (see `encrypt`). */
const ENCRYPT_ATTEMPTS = 3;

export class KmsPlugin {
  constructor(private readonly deps: KmsDeps) {}

  /** Status from the watcher's and key-state model's last verdicts: never a vault call. */
  status(): KmsStatus {
    const current = this.deps.current();
    if (!current) {
      return {
        version: KMS_API_VERSION,
        healthz: `key alias "${this.deps.alias}": the key watcher has not read its current version yet`,
        keyId: '',
      };
    }
    try {
      this.deps.check(current.keyId, 'encrypt');
    } catch (err) {
      return { version: KMS_API_VERSION, healthz: reasonOf(err), keyId: current.keyId };
    }
    return { version: KMS_API_VERSION, healthz: 'ok', keyId: current.keyId };
  }

  /**
   * Encrypts a seed. The ciphertext's key id is compared, after the work and right before the answer,
   * with the key_id Status reports at that moment (both read `deps.current()`; nothing runs between the
   * comparison and the return). They differ only around a rotation: the cached DEK was wrapped under the
   * previous version (the watcher has seen the new one but the DEK was wrapped before), or the provider
   * has read a newer version than the watcher. The first retry retires the alias's cached DEK (a new
   * wrap under the current version); the second first has the watcher read the current version. If
   * they still differ the call fails UNAVAILABLE, and the apiserver, which keeps its previous seed,
   * tries again after its next Status poll — it never receives a key_id Status does not report.
   */
  async encrypt(plaintext: Buffer, signal?: AbortSignal, caller?: AuditCaller): Promise<KmsEncrypted> {
    if (plaintext.length === 0 || plaintext.length > KMS_MAX_PLAINTEXT_BYTES) {
      throw new SealboxError(
        ErrorCode.INVALID_ARGUMENT,
        `plaintext is ${plaintext.length} bytes; the KMS plugin encrypts 1-${KMS_MAX_PLAINTEXT_BYTES} bytes ` +
          '(kube-apiserver sends a 32-byte seed or key)',
      );
    }
    let wrappedUnder = '';
    for (let attempt = 0; attempt < ENCRYPT_ATTEMPTS; attempt++) {
      if (attempt === 1) this.deps.invalidate();
      if (attempt === 2) await this.deps.refresh();
      this.writeKeyId();
      const { ciphertext, keyId } = await this.deps.service.encrypt(
        this.deps.alias,
        plaintext,
        KMS_CONTEXT,
        signal,
        undefined,
        caller,
      );
      wrappedUnder = keyId;
      // Postcondition: key_id === what Status reports now (same source, compared synchronously).
      const now = this.deps.current()?.keyId;
      if (keyId === now) {
        if (ciphertext.length > KMS_MAX_CIPHERTEXT_BYTES) {
          throw new SealboxError(
            ErrorCode.LIMIT_EXCEEDED,
            `the ciphertext is ${ciphertext.length} bytes, over kube-apiserver's ${KMS_MAX_CIPHERTEXT_BYTES}-byte ` +
              `limit (key id ${keyId.length} bytes); use a key with a shorter id or a smaller wrapped key (RSA-2048/3072, or an oct key on Managed HSM)`,
          );
        }
        if (Buffer.byteLength(keyId) > KMS_MAX_KEY_ID_BYTES) {
          throw new SealboxError(
            ErrorCode.LIMIT_EXCEEDED,
            `the key id is over kube-apiserver's ${KMS_MAX_KEY_ID_BYTES}-byte limit`,
          );
        }
        return {
          ciphertext,
          keyId,
          annotations: { [KMS_FORMAT_ANNOTATION]: Buffer.from(KMS_FORMAT_VALUE, 'ascii') },
        };
      }
    }
    throw new SealboxError(
      ErrorCode.VAULT_UNAVAILABLE,
      `key alias "${this.deps.alias}" is rotating: Status reports ${this.deps.current()?.keyId ?? 'no version'} ` +
        `but the data key was wrapped under ${wrappedUnder}; retry after the next Status poll`,
    );
  }

  /**
   * Decrypts what `encrypt` returned. The request's key_id must be the ciphertext's own key id and
   * belong to the KMS alias — both checked from the header before any vault call — and the annotation
   * must name the layout. Revoked versions are refused by the key-state model, as for the envelope API.
   */
  async decrypt(
    ciphertext: Buffer,
    keyId: string,
    annotations: Record<string, Buffer>,
    signal?: AbortSignal,
    caller?: AuditCaller,
  ): Promise<Buffer> {
    if (ciphertext.length === 0 || ciphertext.length > KMS_MAX_CIPHERTEXT_BYTES) {
      throw new SealboxError(
        ErrorCode.INVALID_ARGUMENT,
        `ciphertext is ${ciphertext.length} bytes; a KMS ciphertext is 1-${KMS_MAX_CIPHERTEXT_BYTES} bytes`,
      );
    }
    if (keyId.length === 0 || Buffer.byteLength(keyId) > KMS_MAX_KEY_ID_BYTES) {
      throw new SealboxError(
        ErrorCode.INVALID_ARGUMENT,
        `key_id must be 1-${KMS_MAX_KEY_ID_BYTES} bytes: pass the key_id Encrypt returned`,
      );
    }
    checkAnnotations(annotations);
    const access: KeyAccess = {
      checkAlias: () => {},
      checkKeyId: (_operation, headerKeyId) => {
        if (headerKeyId !== keyId) {
          throw new SealboxError(
            ErrorCode.INVALID_ARGUMENT,
            `key_id ${keyId.slice(0, 256)} is not the key id this ciphertext was encrypted under; pass the ` +
              'key_id Encrypt returned with it',
          );
        }
        if (!this.deps.aliasesOf(headerKeyId).includes(this.deps.alias)) {
          throw new SealboxError(
            ErrorCode.ACCESS_DENIED,
            `key id ${headerKeyId.slice(0, 256)} is not a version of the KMS key alias "${this.deps.alias}"`,
          );
        }
      },
    };
    const { plaintext } = await this.deps.service.decrypt(ciphertext, KMS_CONTEXT, signal, access, caller);
    return plaintext;
  }

  /** The key_id Status reports now; throws while there is none or it may not encrypt. */
  private writeKeyId(): string {
    const current = this.deps.current();
    if (!current) {
      throw new SealboxError(
        ErrorCode.VAULT_UNAVAILABLE,
        `key alias "${this.deps.alias}": the key watcher has not read its current version yet; retry`,
      );
    }
    this.deps.check(current.keyId, 'encrypt');
    return current.keyId;
  }
}

/** The annotations sealbox's Encrypt returns, and nothing else. */
function checkAnnotations(annotations: Record<string, Buffer>): void {
  const keys = Object.keys(annotations);
  const value = annotations[KMS_FORMAT_ANNOTATION];
  if (keys.length !== 1 || value === undefined || value.toString('latin1') !== KMS_FORMAT_VALUE) {
    throw new SealboxError(
      ErrorCode.INVALID_ARGUMENT,
      `annotations must be exactly {"${KMS_FORMAT_ANNOTATION}": "${KMS_FORMAT_VALUE}"} as Encrypt returned them; ` +
        `got keys [${keys
          .slice(0, 8)
          .map((k) => JSON.stringify(k.slice(0, 64)))
          .join(', ')}]`,
    );
  }
}

/** A short healthz reason from a key-state refusal (the apiserver shows it on its /healthz). */
function reasonOf(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.length > 300 ? `${message.slice(0, 297)}...` : message;
}
