import { ErrorCode, SealboxError } from '../errors';
import type { KekProvider } from './provider';

/** Two aliases configured for one key: each would own the other's key ids. */
export class KeyOwnershipError extends Error {
  override readonly name = 'KeyOwnershipError';
}

/** The one alias (and its provider) that owns a key id. */
export interface KeyOwner {
  readonly alias: string;
  readonly provider: KekProvider;
}

/**
 * Maps configured key aliases to providers, and key ids found in headers back to the one alias that
 * owns them. Ownership is resolved once and used for both the access check and the unwrap, so a caller
 * granted one alias can never reach another alias's key through a header.
 */
export class KekRegistry {
  constructor(private readonly byAlias: ReadonlyMap<string, KekProvider>) {
    // Precondition for single ownership: no two aliases serve the same key (config validation catches
    // the same vault+key name or key file; this also catches two key files with one name inside).
    const byRef = new Map<string, string>();
    for (const [alias, provider] of byAlias) {
      const other = byRef.get(provider.keyRef);
      if (other !== undefined) {
        throw new KeyOwnershipError(
          `keys.${other} and keys.${alias} are the same key (${provider.keyRef}), so both would own its key ids ` +
            'and a grant on one would reach the other; configure each key under one alias (for local keys, ' +
            'give each file its own "name")',
        );
      }
      byRef.set(provider.keyRef, alias);
    }
  }

  /** The provider for an alias; NOT_FOUND names the configured aliases so the caller can fix it. */
  forAlias(alias: string): KekProvider {
    const provider = this.byAlias.get(alias);
    if (!provider) {
      const known = [...this.byAlias.keys()].join(', ') || '(none)';
      throw new SealboxError(
        ErrorCode.KEY_NOT_FOUND,
        `no key is configured with alias "${alias.slice(0, 128)}"; configured aliases: ${known}`,
      );
    }
    return provider;
  }

  /** The alias and provider owning a key id, or undefined. Pure string checks, no I/O. */
  ownerOf(keyId: string): KeyOwner | undefined {
    for (const [alias, provider] of this.byAlias) if (provider.owns(keyId)) return { alias, provider };
    return undefined;
  }

  /** The provider that owns a key id read from a ciphertext header. */
  forKeyId(keyId: string): KekProvider {
    const owner = this.ownerOf(keyId);
    if (owner) return owner.provider;
    throw new SealboxError(
      ErrorCode.KEY_NOT_FOUND,
      `no configured key owns key id ${keyId.slice(0, 256)}; configure its key to decrypt this ciphertext`,
    );
  }

  /** The alias whose key owns `keyId` (at most one, by construction); empty if none does. */
  aliasesOf(keyId: string): string[] {
    const owner = this.ownerOf(keyId);
    return owner ? [owner.alias] : [];
  }

  aliases(): string[] {
    return [...this.byAlias.keys()];
  }

  async close(): Promise<void> {
    await Promise.all([...new Set(this.byAlias.values())].map((p) => p.close()));
  }
}
