/**
 * Walks the vault-error table (src/kek/azure/verdicts.ts) row by row: one real-shaped error per row,
 * checking that exactly that row decides it, with its code and verdict — and that every row has a
 * case here, so a new row cannot land untested.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createHttpHeaders, createPipelineRequest, RestError } from '@azure/core-rest-pipeline';
import { ErrorCode, type Verdict } from '../../../src/errors';
import {
  mapVaultError,
  VAULT_VERDICTS,
  type VaultOperation,
  verdictRow,
} from '../../../src/kek/azure/verdicts';
import { CallAbortedError, DeadlineExceededError } from '../../../src/kek/retry';

const KEY_ID = 'https://unit.vault.azure.net/keys/kek/0123456789abcdef0123456789abcdef';

/** A RestError as @azure/keyvault-keys throws it: status, the body's error code and inner code. */
function vaultError(status: number, code?: string, inner?: string): RestError {
  const request = createPipelineRequest({ url: KEY_ID });
  const err = new RestError(`vault said ${status}`, {
    statusCode: status,
    request,
    response: { status, headers: createHttpHeaders({}), request },
  });
  if (code) {
    (err as { details?: unknown }).details = {
      error: { code, message: 'x', ...(inner ? { innerError: { code: inner } } : {}) },
    };
  }
  return err;
}
const named = (name: string, extra: object = {}) => Object.assign(new Error('m'), { name, ...extra });
const deadline = (last: unknown) =>
  Object.assign(Object.create(DeadlineExceededError.prototype), {
    timeoutMs: 1000,
    attempts: 3,
    lastError: last,
    message: 'deadline',
  });

/** Row (by its `when`) → a sample error, the operation, and what must come out. */
const cases: Array<{ when: string; err: unknown; op?: VaultOperation; code: ErrorCode; verdict: Verdict }> = [
  {
    when: 'the caller cancelled (its deadline or its client)',
    err: Object.create(CallAbortedError.prototype),
    code: ErrorCode.CANCELLED,
    verdict: 'outage',
  },
  {
    when: 'retry deadline passed while the vault answered 429',
    err: deadline(vaultError(429, 'Throttled')),
    code: ErrorCode.VAULT_THROTTLED,
    verdict: 'outage',
  },
  {
    when: 'retry deadline passed (network, 5xx, timeouts)',
    err: deadline(vaultError(503)),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
  },
  {
    when: '@azure/identity CredentialUnavailableError "not configured to acquire tokens for tenant" (tenant mismatch)',
    // The message @azure/identity 4.13 processMultiTenantRequest builds.
    err: Object.assign(
      new Error(
        'The current credential is not configured to acquire tokens for tenant 5ea1b0c0-de00-4000-8000-000000000001. ' +
          'To enable acquiring tokens for this tenant add it to the AdditionallyAllowedTenants on the credential options',
      ),
      { name: 'CredentialUnavailableError' },
    ),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'outage',
  },
  {
    when: '@azure/identity CredentialUnavailableError / AggregateAuthenticationError (no token could be had)',
    err: named('CredentialUnavailableError'),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
  },
  {
    when: '@azure/identity AuthenticationRequiredError carrying an OAuth refusal (invalid_grant, invalid_client, …)',
    // MSAL's message for a federated assertion Entra ID does not accept, as identity wraps it.
    err: named('AuthenticationRequiredError', {
      message: 'invalid_grant: Error(s): 700212 - AADSTS700212: No matching federated identity record found',
    }),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'outage',
  },
  {
    when: '@azure/identity AuthenticationError without status, 429 or 5xx (Entra ID unavailable)',
    err: named('AuthenticationError', { statusCode: 503 }),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
  },
  {
    when: '@azure/identity AuthenticationError 4xx (Entra ID refused the token request)',
    err: named('AuthenticationError', { statusCode: 400 }),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'outage',
  },
  {
    when: '404 (KeyNotFound)',
    err: vaultError(404, 'KeyNotFound'),
    code: ErrorCode.KEY_NOT_FOUND,
    verdict: 'not-found',
  },
  {
    when: '403 with inner code KeyDisabled',
    err: vaultError(403, 'Forbidden', 'KeyDisabled'),
    code: ErrorCode.KEY_DISABLED,
    verdict: 'disabled',
  },
  {
    when: '403 with inner code KeyExpired, KeyNotYetValid or KeyNotActive',
    err: vaultError(403, 'Forbidden', 'KeyExpired'),
    op: 'wrapKey',
    code: ErrorCode.KEY_DISABLED,
    verdict: 'out-of-window',
  },
  {
    when: '403 with inner code ForbiddenByFirewall or ForbiddenByConnection (network rules)',
    err: vaultError(403, 'Forbidden', 'ForbiddenByConnection'),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
  },
  {
    when: "403 with inner code KeyOperationForbidden (the key's key_ops lack the operation)",
    err: vaultError(403, 'Forbidden', 'KeyOperationForbidden'),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'refused',
  },
  {
    when: '403 otherwise (AccessDenied, ForbiddenByPolicy, ForbiddenByRbac, no inner code)',
    err: vaultError(403, 'Forbidden', 'ForbiddenByRbac'),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'refused',
  },
  {
    when: '401 (the vault did not accept the token)',
    err: vaultError(401, 'Unauthorized'),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'outage',
  },
  {
    when: '429 on every attempt',
    err: vaultError(429, 'Throttled'),
    code: ErrorCode.VAULT_THROTTLED,
    verdict: 'outage',
  },
  {
    when: '408 or 5xx on every attempt',
    err: vaultError(500, 'InternalServerError'),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
  },
  {
    when: '400 on unwrapKey (the wrapped key does not unwrap)',
    err: vaultError(400, 'BadParameter'),
    op: 'unwrapKey',
    code: ErrorCode.CIPHERTEXT_CORRUPT,
    verdict: 'outage',
  },
  {
    when: 'any other HTTP status',
    err: vaultError(400, 'BadParameter'),
    op: 'wrapKey',
    code: ErrorCode.INTERNAL,
    verdict: 'outage',
  },
  {
    when: 'TLS verification failed',
    err: Object.assign(new Error('self-signed'), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
  },
  {
    when: 'the request timed out (AbortError, TimeoutError)',
    err: named('AbortError'),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
  },
  {
    when: 'no HTTP answer (RestError without status, ECONNREFUSED, ENOTFOUND…)',
    err: new RestError('connect ECONNREFUSED', { code: 'ECONNREFUSED' }),
    code: ErrorCode.VAULT_UNAVAILABLE,
    verdict: 'outage',
  },
  {
    when: 'the SDK\'s own date check of a cached key ("expired at", "can\'t be used before")',
    err: new Error(`Key ${KEY_ID} expired at 2020-01-01T00:00:00.000Z`),
    code: ErrorCode.KEY_DISABLED,
    verdict: 'outage',
  },
  {
    when: 'the SDK\'s own key_ops check of a cached key ("Operation … is not supported on key")',
    err: new Error(`Operation unwrapKey is not supported on key ${KEY_ID}`),
    code: ErrorCode.PERMISSION_DENIED,
    verdict: 'outage',
  },
  {
    when: 'anything else (a bug)',
    err: new TypeError('x is undefined'),
    code: ErrorCode.INTERNAL,
    verdict: 'outage',
  },
];

test('every row of the table has a case here', () => {
  assert.deepEqual(
    cases.map((c) => c.when),
    VAULT_VERDICTS.map((r) => r.when),
  );
});

for (const c of cases) {
  test(`row "${c.when}" → ${c.code} / ${c.verdict}`, () => {
    const op = c.op ?? 'unwrapKey';
    assert.equal(verdictRow(c.err, op).when, c.when, 'this row, not an earlier one, decides');
    const mapped = mapVaultError(c.err, { operation: op, keyId: KEY_ID, vault: 'unit.vault.azure.net' });
    assert.equal(mapped.code, c.code);
    assert.equal(mapped.verdict, c.verdict);
    assert.equal(mapped.keyId, KEY_ID);
    assert.equal(mapped.cause, c.err);
    assert.doesNotMatch(mapped.message, /vault said|AADSTS/, 'never the vault or Entra ID free text');
  });
}

test('an outage is never a revoking verdict: credential, token, network and throttling rows', () => {
  const revoking = new Set<Verdict>(['disabled', 'not-found', 'refused']);
  for (const c of cases.filter((x) =>
    /identity|429|5xx|network|TLS|timed out|firewall|network rules|401/i.test(x.when),
  ))
    assert.ok(!revoking.has(c.verdict), `${c.when} must not revoke`);
});
