/**
 * Where messages get their keys. The envelope service asks for a message's derived keys; the DEK
 * itself never leaves this module, so it has exactly one owner that can zero it.
 *
 * Issue 4 adds a cached implementation behind the same interface; `UncachedDataKeys` stays as the
 * `cache.enabled: false` mode and the benchmark's baseline (one vault call per message).
 */
import { randomBytes } from 'node:crypto';
import type { Header } from '../crypto/format';
import { deriveMessageKeys, type MessageKeys } from '../crypto/kdf';
import type { WrappedKey } from '../crypto/message';
import { ErrorCode, SealboxError } from '../errors';
import type { AuditCaller } from '../kek/audit';
import type { KekRegistry } from '../kek/registry';
import { type Cancellation, signalOf } from '../util/abort';
import type { KeyAttributes, KeyOperationName } from './key-states';

/** AES-256 data keys. */
export const DEK_BYTES = 32;

export interface EncryptKeys {
  readonly wrapped: WrappedKey;
  readonly keys: MessageKeys;
  /** Counts plaintext sealed under this DEK (streams call it as bytes pass), for byte budgets. */
  account(bytes: number): void;
}

/** Keys for a run of new messages sealed under one DEK (forEncryptMany). */
export interface EncryptKeyRun {
  readonly wrapped: WrappedKey;
  /** One per message id, in order. */
  readonly keys: MessageKeys[];
  /** As EncryptKeys.account, for all of the run's messages together. */
  account(bytes: number): void;
}

export interface DataKeySource {
  /**
   * Keys for a new message under `alias`, derived for `messageId`. `caller` names, in the audit line,
   * whoever a vault call this needs is made for.
   */
  forEncrypt(
    alias: string,
    messageId: Uint8Array,
    signal?: Cancellation,
    caller?: AuditCaller,
  ): Promise<EncryptKeys>;
  /** Keys for the message whose (parsed, unverified) header is given. */
  forDecrypt(header: Header, signal?: Cancellation, caller?: AuditCaller): Promise<MessageKeys>;
  /**
   * Optional, for batches: keys for many new messages under `alias` with one DEK lookup per DEK used.
   * Returns runs covering `messageIds` in order (more than one only when a DEK's message budget ran
   * out part-way). Without it, callers ask forEncrypt once per message.
   */
  forEncryptMany?(
    alias: string,
    messageIds: readonly Uint8Array[],
    signal?: Cancellation,
    caller?: AuditCaller,
  ): Promise<EncryptKeyRun[]>;
  /**
   * Optional, for batches: keys for several messages whose headers all carry `header`'s key id, wrap
   * algorithm and wrapped DEK (the caller checked), one DEK lookup for all, in `messageIds` order.
   */
  forDecryptMany?(
    header: Header,
    messageIds: readonly Uint8Array[],
    signal?: Cancellation,
    caller?: AuditCaller,
  ): Promise<MessageKeys[]>;
  /**
   * Throws KEY_DISABLED if `keyId` has been revoked since the message started; sessions call it before
   * every segment, so streams in flight stop promptly. Optional: without a cache every operation asks
   * the vault anyway.
   */
  check?(keyId: string, use: 'encrypt' | 'decrypt'): void;
  /**
   * Optional: the outcome of a wrap or unwrap made outside this source — Rewrap unwraps and wraps
   * through the KEK providers directly (envelope/rewrap.ts) — so the key-state model learns from it as
   * from the source's own vault calls (cache/key-states.ts): a disabled or deleted version is revoked
   * at once, a permission refusal is a suspicion to confirm, an outage changes nothing, a success
   * clears a suspicion. `sample` (an unwrap's success) is the wrapped DEK the vault opened;
   * `attributes` (a key read's success) are the version's state as the vault reports it: they may
   * refuse a version, never restore a refused one (only the key watcher's reads do).
   */
  vaultAnswered?(answer: VaultAnswer): void;
}

/** What a vault call made outside the DataKeySource reports (DataKeySource.vaultAnswered). */
export type VaultAnswer =
  | {
      /** The version the call used (an unwrap: the header's; a wrap: the one the vault wrapped under). */
      readonly keyId: string;
      readonly operation: KeyOperationName;
      readonly sample?: { readonly algorithm: string; readonly wrapped: Uint8Array };
      readonly attributes?: KeyAttributes;
    }
  | {
      /** The version the call was about, when known; the error's own keyId (set by providers) wins. */
      readonly keyId?: string;
      readonly operation: KeyOperationName;
      readonly error: unknown;
    };

/** One fresh DEK and one wrap call per encrypted message; one unwrap call per decrypted message. */
export class UncachedDataKeys implements DataKeySource {
  constructor(private readonly registry: KekRegistry) {}

  async forEncrypt(
    alias: string,
    messageId: Uint8Array,
    signal?: Cancellation,
    caller?: AuditCaller,
  ): Promise<EncryptKeys> {
    const provider = this.registry.forAlias(alias);
    const dek = randomBytes(DEK_BYTES);
    try {
      const result = await provider.wrap(dek, signalOf(signal), caller);
      return {
        wrapped: { keyId: result.keyId, wrapAlgorithm: result.algorithm, wrappedDek: result.wrapped },
        keys: deriveMessageKeys(dek, messageId),
        account: () => {},
      };
    } finally {
      dek.fill(0);
    }
  }

  async forDecrypt(header: Header, signal?: Cancellation, caller?: AuditCaller): Promise<MessageKeys> {
    const provider = this.registry.forKeyId(header.keyId);
    const dek = await provider.unwrap(
      header.keyId,
      header.wrapAlgorithm,
      header.wrappedDek,
      signalOf(signal),
      caller,
    );
    try {
      if (dek.length !== DEK_BYTES) {
        throw new SealboxError(
          ErrorCode.CIPHERTEXT_CORRUPT,
          `the wrapped data key unwrapped to ${dek.length} bytes, not ${DEK_BYTES}: the header was modified`,
        );
      }
      return deriveMessageKeys(dek, header.messageId);
    } finally {
      dek.fill(0);
    }
  }
}
