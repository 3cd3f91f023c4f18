/** `sealbox config print` (src/cli/print.ts): redaction by field name, YAML output. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parse } from 'yaml';
import { formatConfig, REDACTED, redactSecrets } from '../../../src/cli/print';
import { validateConfig } from '../../../src/config/config';

test('redactSecrets: secret fields at any depth; null stays null; paths and other fields stay', () => {
  const input = {
    keys: {
      a: { credential: { kind: 'static-token', token: 't0ken', tokenFile: '/run/t' }, caFile: '/ca.pem' },
      b: { credential: { kind: 'default' } },
    },
    webhook: { secret: 's3cret-s3cret-s3cret', secretFile: '/run/s' },
    list: [{ password: 'p' }, 'plain'],
    other: { Secret: 'x', clientSecret: 'y', token: null },
  };
  assert.deepEqual(redactSecrets(input), {
    keys: {
      a: { credential: { kind: 'static-token', token: REDACTED, tokenFile: '/run/t' }, caFile: '/ca.pem' },
      b: { credential: { kind: 'default' } },
    },
    webhook: { secret: REDACTED, secretFile: '/run/s' },
    list: [{ password: REDACTED }, 'plain'],
    other: { Secret: REDACTED, clientSecret: REDACTED, token: null },
  });
  assert.equal(input.keys.a.credential.token, 't0ken', 'the input is not modified');
});

test('formatConfig: YAML of the validated config, secrets redacted', () => {
  const config = validateConfig({
    keys: {
      pay: {
        provider: 'azure',
        vaultUrl: 'https://x.vault.azure.net',
        keyName: 'pay',
        credential: { kind: 'static-token', token: 'do-not-print-me' },
      },
    },
    webhook: { listen: { port: 9000 }, secret: 'also-do-not-print-me' },
  });
  const text = formatConfig(config);
  assert.ok(text.startsWith('# sealbox effective configuration (secrets redacted)\n'));
  assert.ok(!text.includes('do-not-print-me'));
  const back = parse(text) as typeof config;
  assert.equal(back.keys['pay']?.provider, 'azure');
  assert.equal((back.keys['pay'] as { credential: { token: string } }).credential.token, REDACTED);
  assert.equal(back.webhook.secret, REDACTED);
  assert.deepEqual(back.cache, config.cache, 'everything else round-trips');
});

test('formatConfig: pool.threads null shows the threads the pool would start; an explicit count as set', () => {
  const byDefault = parse(formatConfig(validateConfig({}), 2)) as { pool: { threads: unknown } };
  assert.equal(byDefault.pool.threads, 2, 'null: one per core sealbox may use');
  const explicit = parse(formatConfig(validateConfig({ pool: { threads: 3 } }), 2)) as {
    pool: { threads: unknown };
  };
  assert.equal(explicit.pool.threads, 3);
});
