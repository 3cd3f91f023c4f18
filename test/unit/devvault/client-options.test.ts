/**
 * Client options for the dev vault (src/devvault/client-options.ts) and Key Vault's error bodies
 * (src/devvault/errors.ts): the policy attaches one CA-trusting agent, challenge verification is off only
 * unless asked for, *.localhost resolves to the vault's address, and every error builder produces the
 * swagger's KeyVaultError shape.
 */
import assert from 'node:assert/strict';
import type { Agent } from 'node:https';
import { test } from 'node:test';
import { devVaultClientOptions, staticTokenCredential } from '../../../src/devvault/client-options';
import { kvErrors } from '../../../src/devvault/errors';

const CA = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

/** Runs the options' pipeline policy on a fake request and returns the agent it attached. */
async function agentOf(options: ReturnType<typeof devVaultClientOptions>): Promise<Agent> {
  const [config] = options.additionalPolicies ?? [];
  assert.ok(config, 'one additional policy');
  assert.equal(config.position, 'perCall');
  const request = {} as { agent?: Agent };
  await config.policy.sendRequest(request as never, async () => ({}) as never);
  assert.ok(request.agent, 'the policy sets PipelineRequest.agent');
  return request.agent;
}

test('the agent trusts the vault CA and keeps verification on', async () => {
  const agent = await agentOf(devVaultClientOptions({ caPem: CA }));
  assert.equal(agent.options.ca, CA);
  assert.notEqual(agent.options.rejectUnauthorized, false);
  assert.equal(agent.options.keepAlive, true);
  assert.equal(
    (await agentOf(devVaultClientOptions({ caPem: CA }))) === agent,
    false,
    'each options object has its own agent',
  );
});

test('challenge verification: disabled by default (bare localhost), kept when asked', () => {
  assert.equal(devVaultClientOptions({ caPem: CA }).disableChallengeResourceVerification, true);
  assert.equal(
    devVaultClientOptions({ caPem: CA }, { verifyChallengeResource: true })
      .disableChallengeResourceVerification,
    false,
  );
  assert.deepEqual(devVaultClientOptions({ caPem: CA }, { retryOptions: { maxRetries: 0 } }).retryOptions, {
    maxRetries: 0,
  });
});

test('*.localhost resolves to the vault address without DNS; other names go to DNS', async () => {
  const agent = await agentOf(devVaultClientOptions({ caPem: CA, host: '127.0.0.2' }));
  const lookup = agent.options.lookup;
  assert.ok(lookup);
  const resolve = (host: string, all: boolean) =>
    new Promise<unknown>((ok, fail) =>
      lookup(host, { all }, (err, address, family) =>
        err ? fail(err) : ok(all ? address : [address, family]),
      ),
    );
  assert.deepEqual(await resolve('sealbox.localhost', false), ['127.0.0.2', 4]);
  assert.deepEqual(await resolve('localhost', true), [{ address: '127.0.0.2', family: 4 }]);
  await assert.rejects(resolve('no-such-host.invalid', false));
  const wildcard = await agentOf(devVaultClientOptions({ caPem: CA, host: '0.0.0.0' }));
  const viaWildcard = await new Promise((ok) =>
    wildcard.options.lookup?.('a.localhost', {}, (_e, a) => ok(a)),
  );
  assert.equal(viaWildcard, '127.0.0.1', 'a wildcard bind address is reached over 127.0.0.1');
});

test('staticTokenCredential returns its token for any scope, valid for an hour', async () => {
  const token = await staticTokenCredential('tok').getToken(['https://localhost/.default'], {
    tenantId: 'x',
  });
  assert.equal(token?.token, 'tok');
  assert.ok((token?.expiresOnTimestamp ?? 0) > Date.now() + 3_500_000);
});

test('every error builder produces Key Vault’s body shape', () => {
  const cases: ReadonlyArray<
    [ReturnType<(typeof kvErrors)['badParameter']>, number, string, string | undefined]
  > = [
    [kvErrors.keyNotFound('k'), 404, 'KeyNotFound', undefined],
    [kvErrors.deletedKeyNotFound(), 404, 'KeyNotFound', undefined],
    [kvErrors.keyDisabled('unwrapKey'), 403, 'Forbidden', 'KeyDisabled'],
    [kvErrors.keyOperationForbidden('decrypt'), 403, 'Forbidden', 'KeyOperationForbidden'],
    [kvErrors.keyNotYetValid('wrapKey'), 403, 'Forbidden', 'KeyNotYetValid'],
    [kvErrors.keyExpired('encrypt'), 403, 'Forbidden', 'KeyExpired'],
    [kvErrors.forbiddenByPolicy('appid=a', 'get', 'v'), 403, 'Forbidden', 'ForbiddenByPolicy'],
    [kvErrors.deletedButRecoverable('k'), 409, 'Conflict', 'ObjectIsDeletedButRecoverable'],
    [kvErrors.beingDeleted('k'), 409, 'Conflict', 'ObjectIsBeingDeleted'],
    [kvErrors.purgeProtected(), 403, 'Forbidden', undefined],
    [kvErrors.unsupportedApiVersion('7.4', '2025-07-01'), 400, 'BadParameter', undefined],
    [kvErrors.throttled(3), 429, 'Throttled', undefined],
    [kvErrors.serverError(503), 503, 'ServiceUnavailable', undefined],
    [kvErrors.serverError(500), 500, 'InternalServerError', undefined],
  ];
  for (const [err, status, code, inner] of cases) {
    assert.equal(err.status, status, code);
    assert.deepEqual(err.body(), {
      error: { code, message: err.message, ...(inner === undefined ? {} : { innererror: { code: inner } }) },
    });
  }
  assert.equal(kvErrors.throttled(3).headers['Retry-After'], '3');
  assert.equal(
    kvErrors.keyDisabled('unwrapKey').message,
    'Operation unwrapKey is not allowed on a disabled key.',
  );
  assert.match(kvErrors.unauthorized('m', 'Bearer x').headers['WWW-Authenticate'] ?? '', /^Bearer/);
});
