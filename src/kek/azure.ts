/**
 * The Azure Key Vault / Managed HSM KEK provider, split by concern:
 * - ./azure/key-id.ts     key ids and vault URLs (pure parsing of attacker-controllable text);
 * - ./azure/verdicts.ts   the one table from vault errors to sealbox codes and key-state verdicts;
 * - ./azure/provider.ts   AzureKekProvider: wrap, unwrap, status over narrow SDK types;
 * - ./azure/construct.ts  credentials, TLS trust and SDK clients from configuration.
 */
export * from './azure/construct';
export * from './azure/key-id';
export * from './azure/provider';
export * from './azure/verdicts';
