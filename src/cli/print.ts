/**
 * `sealbox config print`: the effective configuration as YAML with secrets redacted, so it can be
 * pasted into an issue or a log. Redaction works on field names, at any depth, so a secret field
 * added to the schema later is covered as long as it is named like one; file paths (tokenFile,
 * secretFile, caFile, file) are not secrets and are shown.
 */
import { stringify } from 'yaml';
import type { Config } from '../config/config';
import { poolThreads } from '../pool/cores';

/** What a redacted value prints as. */
export const REDACTED = '[redacted]';

/** Field names whose values are secrets (credential.token, webhook.secret, and the like). */
const SECRET_FIELDS = new Set(['token', 'secret', 'password', 'clientsecret', 'apikey', 'privatekey']);

/**
 * A deep copy of `value` with every secret field's value replaced by REDACTED. Unset secrets (null,
 * undefined) stay as they are, so the output still tells whether one is configured.
 */
export function redactSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(redactSecrets);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(value)) {
    out[key] =
      SECRET_FIELDS.has(key.toLowerCase()) && field !== null && field !== undefined
        ? REDACTED
        : redactSecrets(field);
  }
  return out;
}

/**
 * The effective configuration as YAML, secrets redacted. `pool.threads` left at null ("one per core
 * sealbox may use") shows the number that comes to on this machine, as the pool would start it.
 */
export function formatConfig(config: Config, cores?: number): string {
  const effective = { ...config, pool: { ...config.pool, threads: poolThreads(config.pool.threads, cores) } };
  return `# sealbox effective configuration (secrets redacted)\n${stringify(redactSecrets(effective))}`;
}
