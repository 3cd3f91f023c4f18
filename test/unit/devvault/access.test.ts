/**
 * AccessControl: access policies, Key Vault RBAC and Managed HSM local RBAC decisions, role wildcards,
 * scopes, and changes that take effect after a delay (on a fake clock).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  AccessControl,
  actionMatches,
  dataActionOf,
  normaliseScope,
  type Principal,
} from '../../../src/devvault/access';
import { ForcedAnswers } from '../../../src/devvault/controls';

const app: Principal = { name: 'app', objectId: 'OID-1', appId: 'CLIENT-1', tenantId: 't' };

test('data actions per kind and operation', () => {
  const cases: ReadonlyArray<[Parameters<typeof dataActionOf>[0], string, string]> = [
    ['vault', 'unwrapKey', 'Microsoft.KeyVault/vaults/keys/unwrap/action'],
    ['vault', 'getKey', 'Microsoft.KeyVault/vaults/keys/read'],
    ['vault', 'purgeDeletedKey', 'Microsoft.KeyVault/vaults/deletedKeys/delete'],
    ['managedhsm', 'wrapKey', 'Microsoft.KeyVault/managedHsm/keys/wrap/action'],
    ['managedhsm', 'createKey', 'Microsoft.KeyVault/managedHsm/keys/create'],
  ];
  for (const [kind, op, action] of cases) assert.equal(dataActionOf(kind, op), action);
});

test('role action patterns: wildcards span segments, matching is case-insensitive', () => {
  assert.ok(actionMatches('Microsoft.KeyVault/vaults/*', 'Microsoft.KeyVault/vaults/keys/wrap/action'));
  assert.ok(actionMatches('Microsoft.KeyVault/vaults/*/read', 'microsoft.keyvault/vaults/keys/read'));
  assert.ok(!actionMatches('Microsoft.KeyVault/vaults/*/read', 'Microsoft.KeyVault/vaults/keys/wrap/action'));
  assert.ok(!actionMatches('Microsoft.KeyVault/vaults/keys/read', 'Microsoft.KeyVault/vaults/keys/readx'));
});

test('scopes normalise to "/", "/keys" and "/keys/<lower-case name>"', () => {
  assert.equal(normaliseScope(''), '/');
  assert.equal(normaliseScope('/keys/'), '/keys');
  assert.equal(normaliseScope('/keys/KEK'), '/keys/kek');
});

test('access policies: any of name, object id or client id; permissions are exact', () => {
  const ac = new AccessControl('vault', 'accessPolicy');
  ac.setAccessPolicy('client-1', ['get', 'unwrapKey']);
  assert.deepEqual(ac.check(app, 'unwrapKey', 'unwrapKey', 'kek'), { allowed: true });
  assert.deepEqual(ac.check(app, 'wrapKey', 'wrapKey', 'kek'), {
    allowed: false,
    model: 'accessPolicy',
    action: 'wrapKey',
  });
});

test('vault RBAC: role and scope must both cover the request', () => {
  const ac = new AccessControl('vault', 'rbac');
  ac.assignRole({ principal: 'app', role: 'Key Vault Crypto Service Encryption User', scope: '/keys/kek' });
  assert.ok(ac.check(app, 'unwrapKey', 'unwrapKey', 'KEK').allowed);
  assert.equal(ac.check(app, 'unwrapKey', 'unwrapKey', 'other').allowed, false);
  assert.equal(ac.check(app, 'createKey', 'create', 'kek').allowed, false);
  assert.equal(ac.check(app, 'getKeys', 'list').allowed, false, 'listing needs a vault-wide scope');
  ac.assignRole({ principal: 'OID-1', role: 'Key Vault Reader', scope: '/' });
  assert.ok(ac.check(app, 'getKeys', 'list').allowed);
});

test('Managed HSM: Crypto User at /keys may not purge; Crypto Officer may', () => {
  const ac = new AccessControl('managedhsm', 'accessPolicy');
  ac.assignRole({ principal: 'app', role: 'Managed HSM Crypto User', scope: '/keys' });
  assert.ok(ac.check(app, 'wrapKey', 'wrapKey', 'k').allowed);
  const refused = ac.check(app, 'purgeDeletedKey', 'purge', 'k');
  assert.deepEqual(refused, {
    allowed: false,
    model: 'managedhsm',
    action: 'Microsoft.KeyVault/managedHsm/deletedKeys/delete',
  });
  ac.assignRole({ principal: 'app', role: 'Managed HSM Crypto Officer', scope: '/' });
  assert.ok(ac.check(app, 'purgeDeletedKey', 'purge', 'k').allowed);
});

test('delayed changes apply at their own time; removal is immediate unless delayed', () => {
  let now = 1000;
  const ac = new AccessControl('vault', 'rbac', () => now);
  const a = { principal: 'app', role: 'Key Vault Crypto User', scope: '/' } as const;
  ac.assignRole(a, 500);
  assert.equal(ac.check(app, 'wrapKey', 'wrapKey', 'k').allowed, false);
  assert.equal(ac.snapshot().pendingChanges, 1);
  now = 1499;
  assert.equal(ac.check(app, 'wrapKey', 'wrapKey', 'k').allowed, false);
  now = 1500;
  assert.ok(ac.check(app, 'wrapKey', 'wrapKey', 'k').allowed);
  ac.removeRoleAssignment(a);
  assert.equal(ac.check(app, 'wrapKey', 'wrapKey', 'k').allowed, false);
});

test('forced answers: steps in order, per operation and key, each used count times', () => {
  const f = new ForcedAnswers();
  f.set([
    { operations: ['unwrapKey'], keyName: 'KEK', count: 2, answer: 'ForbiddenByRbac' },
    { count: 1, answer: 'Unauthorized' },
  ]);
  assert.equal(f.take('unwrapKey', 'kek'), 'ForbiddenByRbac');
  assert.equal(f.take('wrapKey', 'kek'), 'Unauthorized', 'the catch-all step matches other operations');
  assert.equal(f.take('wrapKey', 'kek'), undefined);
  assert.equal(f.take('unwrapKey', 'other'), undefined);
  assert.equal(f.take('unwrapKey', 'kek'), 'ForbiddenByRbac');
  assert.equal(f.take('unwrapKey', 'kek'), undefined);
  assert.deepEqual(f.remaining(), []);
});
