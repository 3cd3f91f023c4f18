import { ErrorCode, SealboxError } from '../errors';
import type { KekProvider } from './provider';

/** Maps configured key aliases to providers, and key ids found in headers back to their provider. */
export class KekRegistry {
  constructor(private readonly byAlias: ReadonlyMap<string, KekProvider>) {}

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

  /** The provider that owns a key id read from a ciphertext header. */
  forKeyId(keyId: string): KekProvider {
    for (const provider of this.byAlias.values()) if (provider.owns(keyId)) return provider;
    throw new SealboxError(
      ErrorCode.KEY_NOT_FOUND,
      `no configured key owns key id ${keyId.slice(0, 256)}; configure its key to decrypt this ciphertext`,
    );
  }

  /** Every alias whose key owns `keyId` (two aliases may name one key); empty if none does. */
  aliasesOf(keyId: string): string[] {
    return [...this.byAlias].filter(([, provider]) => provider.owns(keyId)).map(([alias]) => alias);
  }

  aliases(): string[] {
    return [...this.byAlias.keys()];
  }

  async close(): Promise<void> {
    await Promise.all([...new Set(this.byAlias.values())].map((p) => p.close()));
  }
}
