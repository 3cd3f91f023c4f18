/**
 * Who may do what in a dev vault: the permission model of each vault kind, as Azure has it.
 *
 *   kind        model          what grants access                            refusal (errors.ts)
 *   vault       accessPolicy   keys permissions per principal                403 Forbidden / AccessDenied
 *   vault       rbac           Key Vault data-plane roles at vault or key     403 Forbidden / ForbiddenByRbac
 *   managedhsm  (local RBAC)   Managed HSM local roles at "/", "/keys" or     403 AccessDenied
 *                              "/keys/<name>"
 *
 * A vault uses access policies or RBAC, never both (Azure's enableRbacAuthorization switch); a Managed HSM
 * has local RBAC only, with its own roles (https://learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles).
 *
 * Principals are referred to by any of their names: the identity name of a static bearer token, or the
 * display name, object id or client id of an Entra principal (entra.ts). Changes made at run time can take
 * effect after a delay, so tests can stage "granted after a propagation delay" (Azure documents up to
 * ten minutes for RBAC changes) and "removed for good".
 */
import type { KeyPermission } from './server';

/** The two kinds of dev vault. */
export type VaultKind = 'vault' | 'managedhsm';

/** Permission model of a `vault` (a Managed HSM always has local RBAC). */
export type PermissionModel = 'accessPolicy' | 'rbac';

/** The caller of a request, however it authenticated. */
export interface Principal {
  /** Identity name (static tokens) or Entra display name. */
  readonly name: string;
  readonly objectId: string;
  readonly appId: string;
  readonly tenantId: string;
}

/** Key Vault (Azure RBAC) data-plane roles that touch keys, by display name. */
export const VAULT_ROLES = {
  'Key Vault Administrator': ['Microsoft.KeyVault/vaults/*'],
  'Key Vault Crypto Officer': [
    'Microsoft.KeyVault/vaults/keys/*',
    'Microsoft.KeyVault/vaults/deletedKeys/*',
    'Microsoft.KeyVault/vaults/keyrotationpolicies/*',
  ],
  'Key Vault Crypto User': [
    'Microsoft.KeyVault/vaults/keys/read',
    'Microsoft.KeyVault/vaults/keys/update/action',
    'Microsoft.KeyVault/vaults/keys/backup/action',
    'Microsoft.KeyVault/vaults/keys/encrypt/action',
    'Microsoft.KeyVault/vaults/keys/decrypt/action',
    'Microsoft.KeyVault/vaults/keys/wrap/action',
    'Microsoft.KeyVault/vaults/keys/unwrap/action',
    'Microsoft.KeyVault/vaults/keys/sign/action',
    'Microsoft.KeyVault/vaults/keys/verify/action',
  ],
  'Key Vault Crypto Service Encryption User': [
    'Microsoft.KeyVault/vaults/keys/read',
    'Microsoft.KeyVault/vaults/keys/wrap/action',
    'Microsoft.KeyVault/vaults/keys/unwrap/action',
  ],
  'Key Vault Reader': ['Microsoft.KeyVault/vaults/*/read'],
} as const satisfies Record<string, readonly string[]>;

/** Managed HSM local RBAC roles that touch keys, by display name (data actions without wildcards). */
export const MANAGED_HSM_ROLES = {
  'Managed HSM Crypto User': [
    'Microsoft.KeyVault/managedHsm/keys/read/action',
    'Microsoft.KeyVault/managedHsm/keys/write/action',
    'Microsoft.KeyVault/managedHsm/keys/create',
    'Microsoft.KeyVault/managedHsm/keys/import/action',
    'Microsoft.KeyVault/managedHsm/keys/delete',
    'Microsoft.KeyVault/managedHsm/keys/rotate/action',
    'Microsoft.KeyVault/managedHsm/keys/encrypt/action',
    'Microsoft.KeyVault/managedHsm/keys/decrypt/action',
    'Microsoft.KeyVault/managedHsm/keys/wrap/action',
    'Microsoft.KeyVault/managedHsm/keys/unwrap/action',
    'Microsoft.KeyVault/managedHsm/deletedKeys/read/action',
  ],
  'Managed HSM Crypto Officer': [
    'Microsoft.KeyVault/managedHsm/deletedKeys/read/action',
    'Microsoft.KeyVault/managedHsm/deletedKeys/recover/action',
    'Microsoft.KeyVault/managedHsm/deletedKeys/delete',
  ],
  'Managed HSM Crypto Service Encryption User': [
    'Microsoft.KeyVault/managedHsm/keys/read/action',
    'Microsoft.KeyVault/managedHsm/keys/wrap/action',
    'Microsoft.KeyVault/managedHsm/keys/unwrap/action',
  ],
  'Managed HSM Crypto Auditor': [
    'Microsoft.KeyVault/managedHsm/keys/read/action',
    'Microsoft.KeyVault/managedHsm/deletedKeys/read/action',
  ],
  'Managed HSM Administrator': [],
} as const satisfies Record<string, readonly string[]>;

/** A role name of either kind. */
export type RoleName = keyof typeof VAULT_ROLES | keyof typeof MANAGED_HSM_ROLES;

/** Every role name, for validation. */
export const ROLE_NAMES = [...Object.keys(VAULT_ROLES), ...Object.keys(MANAGED_HSM_ROLES)] as RoleName[];

/** Operation (counter name) → access-policy permission, vault data action, Managed HSM data action. */
const OPERATIONS: Record<string, { readonly vault: string; readonly hsm: string }> = {
  getKey: { vault: 'keys/read', hsm: 'keys/read/action' },
  getKeys: { vault: 'keys/read', hsm: 'keys/read/action' },
  getKeyVersions: { vault: 'keys/read', hsm: 'keys/read/action' },
  createKey: { vault: 'keys/create/action', hsm: 'keys/create' },
  importKey: { vault: 'keys/import/action', hsm: 'keys/import/action' },
  updateKey: { vault: 'keys/update/action', hsm: 'keys/write/action' },
  deleteKey: { vault: 'keys/delete', hsm: 'keys/delete' },
  getDeletedKey: { vault: 'deletedKeys/read', hsm: 'deletedKeys/read/action' },
  getDeletedKeys: { vault: 'deletedKeys/read', hsm: 'deletedKeys/read/action' },
  recoverDeletedKey: { vault: 'deletedKeys/recover/action', hsm: 'deletedKeys/recover/action' },
  purgeDeletedKey: { vault: 'deletedKeys/delete', hsm: 'deletedKeys/delete' },
  rotateKey: { vault: 'keys/rotate/action', hsm: 'keys/rotate/action' },
  getKeyRotationPolicy: { vault: 'keyrotationpolicies/read', hsm: 'keys/read/action' },
  updateKeyRotationPolicy: { vault: 'keyrotationpolicies/write', hsm: 'keys/write/action' },
  wrapKey: { vault: 'keys/wrap/action', hsm: 'keys/wrap/action' },
  unwrapKey: { vault: 'keys/unwrap/action', hsm: 'keys/unwrap/action' },
  encrypt: { vault: 'keys/encrypt/action', hsm: 'keys/encrypt/action' },
  decrypt: { vault: 'keys/decrypt/action', hsm: 'keys/decrypt/action' },
};

/** The data action an operation needs on this kind of vault. */
export function dataActionOf(kind: VaultKind, operation: string): string {
  const entry = OPERATIONS[operation];
  const suffix = entry === undefined ? 'keys/read' : kind === 'vault' ? entry.vault : entry.hsm;
  return `Microsoft.KeyVault/${kind === 'vault' ? 'vaults' : 'managedHsm'}/${suffix}`;
}

/** True when a role's action pattern (with `*` wildcards, as in Azure role definitions) covers `action`. */
export function actionMatches(pattern: string, action: string): boolean {
  const regex = new RegExp(
    `^${pattern
      .split('*')
      .map((p) => p.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
      .join('[^]*')}$`,
    'i',
  );
  return regex.test(action);
}

/** A role assignment: a principal reference, a role and a scope ("/", "/keys" or "/keys/<name>"). */
export interface RoleAssignment {
  readonly principal: string;
  readonly role: RoleName;
  readonly scope: string;
}

/** An access policy entry: a principal reference and its keys permissions. */
export interface AccessPolicy {
  readonly principal: string;
  readonly permissions: readonly KeyPermission[];
}

/** The outcome of an access check. */
export type AccessDecision =
  | { readonly allowed: true }
  | {
      readonly allowed: false;
      readonly model: 'accessPolicy' | 'rbac' | 'managedhsm';
      readonly action: string;
    };

/** A change waiting for its effective time. */
interface Pending {
  readonly at: number;
  readonly apply: () => void;
}

/**
 * The access state of one vault: access policies or role assignments, and changes scheduled to take effect
 * later. Pending changes are applied, in the order they were made, when a check finds their time reached.
 */
export class AccessControl {
  private readonly policies = new Map<string, readonly KeyPermission[]>();
  private assignments: RoleAssignment[] = [];
  private pending: Pending[] = [];

  constructor(
    readonly kind: VaultKind,
    readonly model: PermissionModel,
    private readonly now: () => number = Date.now,
  ) {}

  /** Sets (replaces) a principal's access policy; empty permissions remove it. Effective after `delayMs`. */
  setAccessPolicy(principal: string, permissions: readonly KeyPermission[], delayMs = 0): void {
    this.schedule(delayMs, () => {
      const key = principal.toLowerCase();
      if (permissions.length === 0) this.policies.delete(key);
      else this.policies.set(key, [...permissions]);
    });
  }

  /** Adds a role assignment, effective after `delayMs`. */
  assignRole(assignment: RoleAssignment, delayMs = 0): void {
    this.schedule(delayMs, () => {
      this.assignments = [...this.withoutAssignment(assignment), normalise(assignment)];
    });
  }

  /** Removes a role assignment (same principal, role and scope), effective after `delayMs`. */
  removeRoleAssignment(assignment: RoleAssignment, delayMs = 0): void {
    this.schedule(delayMs, () => {
      this.assignments = this.withoutAssignment(assignment);
    });
  }

  private withoutAssignment(a: RoleAssignment): RoleAssignment[] {
    const n = normalise(a);
    return this.assignments.filter(
      (x) => !(x.principal === n.principal && x.role === n.role && x.scope === n.scope),
    );
  }

  private schedule(delayMs: number, apply: () => void): void {
    if (delayMs <= 0) {
      this.settle();
      apply();
      return;
    }
    this.pending.push({ at: this.now() + delayMs, apply });
    // Stable: changes due at the same time apply in the order they were made.
    this.pending.sort((a, b) => a.at - b.at);
  }

  private settle(): void {
    const now = this.now();
    // Each change takes effect at its own time, as Azure propagates each change on its own.
    while (this.pending.length > 0 && (this.pending[0]?.at ?? Infinity) <= now) {
      this.pending.shift()?.apply();
    }
  }

  /** The current state, for the admin surface (pending changes are listed with their due time). */
  snapshot(): {
    model: string;
    accessPolicies: AccessPolicy[];
    roleAssignments: RoleAssignment[];
    pendingChanges: number;
  } {
    this.settle();
    return {
      model: this.kind === 'managedhsm' ? 'managedhsm' : this.model,
      accessPolicies: [...this.policies].map(([principal, permissions]) => ({ principal, permissions })),
      roleAssignments: [...this.assignments],
      pendingChanges: this.pending.length,
    };
  }

  /**
   * May `principal` run `operation` (a counter name) with `permission` (access-policy name) on key
   * `keyName` (undefined for vault-wide operations)?
   */
  check(
    principal: Principal,
    operation: string,
    permission: KeyPermission,
    keyName?: string,
  ): AccessDecision {
    this.settle();
    const refs = [principal.name, principal.objectId, principal.appId].map((r) => r.toLowerCase());
    if (this.kind === 'vault' && this.model === 'accessPolicy') {
      const allowed = refs.some((r) => this.policies.get(r)?.includes(permission) === true);
      return allowed ? { allowed: true } : { allowed: false, model: 'accessPolicy', action: permission };
    }
    const action = dataActionOf(this.kind, operation);
    const roles: Record<string, readonly string[]> = this.kind === 'vault' ? VAULT_ROLES : MANAGED_HSM_ROLES;
    const allowed = this.assignments.some(
      (a) =>
        refs.includes(a.principal) &&
        scopeCovers(a.scope, keyName) &&
        (roles[a.role] ?? []).some((pattern) => actionMatches(pattern, action)),
    );
    if (allowed) return { allowed: true };
    return { allowed: false, model: this.kind === 'vault' ? 'rbac' : 'managedhsm', action };
  }
}

function normalise(a: RoleAssignment): RoleAssignment {
  return { principal: a.principal.toLowerCase(), role: a.role, scope: normaliseScope(a.scope) };
}

/** "/", "/keys" and "/keys/<name>" (name lower-cased; Key Vault names are case-insensitive). */
export function normaliseScope(scope: string): string {
  const s = scope.trim().replace(/\/+$/, '');
  if (s === '' || s === '/') return '/';
  return s.toLowerCase().startsWith('/keys/') ? `/keys/${s.slice(6).toLowerCase()}` : s.toLowerCase();
}

/** True when an assignment at `scope` covers key `keyName` (vault-wide operations need "/" or "/keys"). */
function scopeCovers(scope: string, keyName: string | undefined): boolean {
  if (scope === '/' || scope === '/keys') return true;
  return keyName !== undefined && scope === `/keys/${keyName.toLowerCase()}`;
}
