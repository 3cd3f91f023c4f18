/**
 * The dev vault's HTTPS request handling: Key Vault's keys REST surface and the `/_sealbox/` admin
 * surface on one server.
 *
 * A Key Vault request goes through, in order:
 *   1. injected latency, then an injected drop (socket destroyed) or 500/503;
 *   2. routing (404/405 for anything that is not a keys operation);
 *   3. api-version (2025-07-01, 7.6 or 7.5; anything else is Key Vault's BadParameter);
 *   4. bearer challenge: no token → 401 with Key Vault's WWW-Authenticate challenge; a static identity
 *      token, or a JWT of the embedded Entra ID (verified: signature, issuer, audience, expiry), names the
 *      principal; anything else → 401 as well;
 *   5. a forced answer scripted for this operation (controls.ts ForcedAnswers), if any;
 *   6. the principal's permission under the vault's model (access.ts): access policy → 403
 *      Forbidden/AccessDenied, Azure RBAC → 403 Forbidden/ForbiddenByRbac, Managed HSM → 403 AccessDenied;
 *   7. throttling (429 + Retry-After; 429s are not counted against the window);
 *   8. the operation itself (vault.ts).
 * Counters count requests per operation (and per operation and key name) once they pass step 4.
 *
 * Admin requests (`/_sealbox/counters`, `/_sealbox/reset`, `/_sealbox/faults`, `/_sealbox/access`,
 * `/_sealbox/entra`) need the admin token, skip
 * faults, throttling and counters, and can never collide with a Key Vault path.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { z } from 'zod';
import { type AccessControl, dataActionOf, type Principal, type VaultKind } from './access';
import {
  type Counters,
  type Faults,
  FORCED_ANSWER_KINDS,
  type ForcedAnswerKind,
  type ForcedAnswers,
  type Throttle,
  type ThrottleSettings,
} from './controls';
import { KvError, kvErrors } from './errors';
import type { CryptoOperation } from './keys';
import type { Vault } from './vault';

/** Access-policy key permissions (what an identity may do). */
export type KeyPermission =
  | 'get'
  | 'list'
  | 'create'
  | 'import'
  | 'update'
  | 'delete'
  | 'recover'
  | 'purge'
  | 'rotate'
  | 'wrapKey'
  | 'unwrapKey'
  | 'encrypt'
  | 'decrypt'
  | 'getrotationpolicy'
  | 'setrotationpolicy';

/** Every key permission, for identities that may do everything. */
export const ALL_KEY_PERMISSIONS: readonly KeyPermission[] = [
  'get',
  'list',
  'create',
  'import',
  'update',
  'delete',
  'recover',
  'purge',
  'rotate',
  'wrapKey',
  'unwrapKey',
  'encrypt',
  'decrypt',
  'getrotationpolicy',
  'setrotationpolicy',
];

/** An identity a bearer token stands for. */
export interface Identity {
  readonly name: string;
  readonly permissions: readonly KeyPermission[];
}

/** One answered Key Vault request, for the test-only response hook. */
export interface DevVaultExchange {
  readonly method: string;
  /** The request path as sent (percent-encoded, with any empty version segment). */
  readonly path: string;
  /** The swagger operationId the dev vault routed the request to, when it routed it. */
  readonly operationId?: string;
  readonly status: number;
  /** The parsed JSON body sent, or undefined for an empty body. */
  readonly body?: unknown;
}

/** The api-versions this vault speaks; the first is the latest, used in error messages. */
export const API_VERSIONS = ['2025-07-01', '7.6', '7.5'] as const;

/** The tenant named in the challenge; any GUID-shaped value works, the SDK passes it to the credential. */
export const DEV_TENANT_ID = '5ea1b0c0-de00-4000-8000-000000000001';

/**
 * The challenge resource of a `vault`. The SDK asks its credential for `<resource>/.default` and, unless
 * disableChallengeResourceVerification is set, requires the request host to end with "." + the
 * resource's host. "https://localhost" therefore matches sealbox.localhost (as vault.azure.net matches
 * myvault.vault.azure.net) but can never match the bare host "localhost"; see client-options.ts.
 */
export const CHALLENGE_RESOURCE = 'https://localhost';

/**
 * The challenge resource of a `managedhsm`: Managed HSM's is https://managedhsm.azure.net, so the dev
 * one is the same shape under localhost; `sealbox.managedhsm.localhost` passes the SDK's check against it.
 */
export const MANAGED_HSM_CHALLENGE_RESOURCE = 'https://managedhsm.localhost';

/** The challenge resource of a vault kind. */
export function challengeResourceOf(kind: VaultKind): string {
  return kind === 'managedhsm' ? MANAGED_HSM_CHALLENGE_RESOURCE : CHALLENGE_RESOURCE;
}

/** The WWW-Authenticate challenge a vault of `kind` sends. */
export function challengeOf(kind: VaultKind): string {
  return `Bearer authorization="https://login.microsoftonline.com/${DEV_TENANT_ID}", resource="${challengeResourceOf(kind)}"`;
}

/** Largest request body accepted (JWK imports of RSA-4096 are about 4 KiB). */
const MAX_BODY_BYTES = 1024 * 1024;

/** Host names (without port) whose requests get ids under that same host. */
const ID_HOSTS = new Set([
  'localhost',
  'sealbox.localhost',
  'sealbox.managedhsm.localhost',
  '127.0.0.1',
  '[::1]',
]);

interface Route {
  /** swagger operationId */
  readonly operationId: string;
  /** counter and permission-table name */
  readonly op: string;
  readonly permission?: KeyPermission;
  readonly name?: string;
  readonly version: string;
  readonly run?: (ctx: RunContext) => Promise<unknown>;
}

interface RunContext {
  readonly base: string;
  readonly body: unknown;
  readonly apiVersion: string;
  readonly query: URLSearchParams;
}

/** Everything the handler needs, wired by index.ts. */
export interface HandlerDeps {
  readonly vault: Vault;
  readonly identities: ReadonlyMap<string, Identity>;
  /** Vault kind, its name (in 403 messages) and who may do what. */
  readonly kind: VaultKind;
  readonly vaultName: string;
  readonly access: AccessControl;
  readonly forced: ForcedAnswers;
  /**
   * Verifies a bearer token that is not a static identity token (a JWT from the embedded Entra ID):
   * the principal, or the KvError (401) to answer. Undefined when no Entra ID is attached.
   */
  readonly verifyToken?: (token: string) => Principal | KvError;
  readonly adminToken: string;
  readonly faults: Faults;
  readonly throttle: Throttle;
  readonly counters: Counters;
  readonly logger: Logger;
  /** Applies a run-time access change (unvalidated JSON); returns a problem to report, or undefined. */
  readonly changeAccess: (change: unknown) => string | undefined;
  readonly getAccess: () => unknown;
  /** Applies POST /_sealbox/entra (unvalidated JSON) when an Entra ID is embedded; returns a problem or undefined. */
  readonly controlEntra?: (raw: unknown) => Promise<string | undefined>;
  /** Applies a validated fault update (shared with DevVault.setFaults). */
  readonly setFaults: (f: FaultUpdate) => void;
  readonly getFaults: () => unknown;
  readonly onResponse?: (exchange: DevVaultExchange) => void;
  /** The port clients reach, for ids. */
  port(): number;
}

const latencySchema = z.strictObject({
  fixedMs: z.number().min(0).max(600_000),
  jitterMs: z.number().min(0).max(600_000),
});

const limitsSchema = z.strictObject({
  rsa2048: z.number().int().min(1).optional(),
  rsa3072: z.number().int().min(1).optional(),
  rsa4096: z.number().int().min(1).optional(),
  rsaHsm2048: z.number().int().min(1).optional(),
  rsaHsm3072: z.number().int().min(1).optional(),
  rsaHsm4096: z.number().int().min(1).optional(),
  oct: z.number().int().min(1).optional(),
});

/** Throttling settings as accepted from options, setFaults and the admin surface. */
export const throttlingSchema = z.strictObject({
  enabled: z.boolean(),
  limitsPer10s: limitsSchema.optional(),
  windowMs: z.number().int().min(100).max(600_000).optional(),
});

/** One step of a forced-answer script (controls.ts ForcedAnswerStep). */
export const forcedAnswerSchema = z.strictObject({
  operations: z.array(z.string().min(1)).min(1).optional(),
  keyName: z.string().min(1).optional(),
  count: z.number().int().min(1).max(1_000_000),
  answer: z.enum(FORCED_ANSWER_KINDS as [ForcedAnswerKind, ...ForcedAnswerKind[]]),
});

/** A fault update: fields present replace the current setting, absent fields stay. */
export const faultUpdateSchema = z.strictObject({
  latency: latencySchema.optional(),
  errorRate: z.number().min(0).max(1).optional(),
  dropRate: z.number().min(0).max(1).optional(),
  throttling: throttlingSchema.optional(),
  /** Replaces the forced-answer script; [] clears it. */
  forcedAnswers: z.array(forcedAnswerSchema).optional(),
});

/** A validated fault update. */
export type FaultUpdate = z.infer<typeof faultUpdateSchema> & { throttling?: ThrottleSettings };

/** Formats the first zod issue as "field: message". */
export function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (issue === undefined) return 'invalid';
  return `${issue.path.length > 0 ? `${issue.path.join('.')}: ` : ''}${issue.message}`;
}

/** Builds the request listener for the HTTPS server. */
export function createHandler(deps: HandlerDeps): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    handle(deps, req, res).catch((err: unknown) => {
      deps.logger.error({ err }, 'dev vault request failed');
      if (!res.headersSent) send(deps, req, res, undefined, kvErrors.serverError(500));
      else res.destroy();
    });
  };
}

async function handle(deps: HandlerDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'https://localhost');
  if (url.pathname === '/_sealbox' || url.pathname.startsWith('/_sealbox/'))
    return admin(deps, req, res, url);

  const delay = deps.faults.delayMs();
  if (delay > 0) await sleep(delay);
  const decision = deps.faults.decide();
  if (decision === 'drop') {
    deps.counters.bump('faults.dropped');
    req.socket.destroy();
    return;
  }
  if (decision !== 'none') {
    deps.counters.bump('faults.errors');
    return send(deps, req, res, undefined, kvErrors.serverError(decision));
  }

  let route: Route | undefined;
  try {
    route = routeOf(deps.vault, req.method ?? 'GET', url.pathname);
    const apiVersion = url.searchParams.get('api-version');
    if (apiVersion === null || apiVersion === '') {
      throw kvErrors.badParameter('The api-version query parameter is missing.');
    }
    if (!(API_VERSIONS as readonly string[]).includes(apiVersion)) {
      throw kvErrors.unsupportedApiVersion(apiVersion, API_VERSIONS[0]);
    }
    const principal = authenticate(deps, req);
    deps.counters.bump(
      route.op,
      ...(route.name === undefined ? [] : [`${route.op}/${route.name.toLowerCase()}`]),
    );
    const forced = deps.forced.take(route.op, route.name);
    if (forced !== undefined) {
      deps.counters.bump(`forced.${forced}`);
      throw forcedError(deps, req, forced, principal, route);
    }
    if (route.permission !== undefined) {
      const decision = deps.access.check(principal, route.op, route.permission, route.name);
      if (!decision.allowed) throw refusal(deps, decision.model, decision.action, principal, route.name);
    }
    if (route.run === undefined) throw kvErrors.notImplemented(route.operationId);
    const body = await readJson(req);
    const retryAfter = deps.throttle.admit(deps.vault.chargeFor(route.op, route.name, route.version, body));
    if (retryAfter !== undefined) {
      deps.counters.bump('throttled');
      throw kvErrors.throttled(retryAfter);
    }
    const result = await route.run({
      base: baseUrl(req, deps.port()),
      body,
      apiVersion,
      query: url.searchParams,
    });
    send(deps, req, res, route.operationId, result === undefined ? 204 : 200, result);
  } catch (err) {
    if (!(err instanceof KvError)) throw err;
    if (err.status === 401) deps.counters.bump('challenges');
    send(deps, req, res, route?.operationId, err);
  }
}

/** Resolves the bearer token to a principal, or throws Key Vault's 401 challenge. */
function authenticate(deps: HandlerDeps, req: IncomingMessage): Principal {
  const challenge = challengeOf(deps.kind);
  const header = req.headers.authorization;
  if (header === undefined || header === '') {
    throw kvErrors.unauthorized('AKV10000: Request is missing a Bearer or PoP token.', challenge);
  }
  const token = /^Bearer (\S+)$/i.exec(header)?.[1];
  const identity = token === undefined ? undefined : deps.identities.get(token);
  if (identity !== undefined) return principalOfIdentity(identity);
  if (token !== undefined && deps.verifyToken !== undefined) {
    const verified = deps.verifyToken(token);
    if (!(verified instanceof KvError)) return verified;
    throw kvErrors.unauthorized(verified.message, challenge);
  }
  throw kvErrors.unauthorized(
    'The bearer token does not belong to any identity of this dev vault.',
    challenge,
  );
}

/**
 * The principal of a static-token identity: client id = the identity name, object id derived from it,
 * so access policies and role assignments may name either.
 */
export function principalOfIdentity(identity: Identity): Principal {
  const h = createHash('sha256').update(identity.name).digest('hex');
  const objectId = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
  return { name: identity.name, objectId, appId: identity.name, tenantId: DEV_TENANT_ID };
}

/** The caller string of Key Vault's 403 messages ("appid=…;oid=…;iss=https://sts.windows.net/<tenant>/"). */
function callerOf(principal: Principal): string {
  return `appid=${principal.appId};oid=${principal.objectId};iss=https://sts.windows.net/${principal.tenantId}/`;
}

/** "<name>;location=local", as Key Vault names itself in 403 messages. */
function vaultRefOf(deps: HandlerDeps): string {
  return `${deps.vaultName};location=local`;
}

/** The resource string of an RBAC refusal: the vault's (or key's) ARM id, lower case as Azure prints it. */
function rbacResourceOf(deps: HandlerDeps, keyName: string | undefined): string {
  const vault = `/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups/sealbox-dev/providers/microsoft.keyvault/vaults/${deps.vaultName}`;
  return (keyName === undefined ? vault : `${vault}/keys/${keyName}`).toLowerCase();
}

/** The 403 a permission model answers when `principal` lacks `action` (a permission or a data action). */
function refusal(
  deps: HandlerDeps,
  model: 'accessPolicy' | 'rbac' | 'managedhsm',
  action: string,
  principal: Principal,
  keyName: string | undefined,
): KvError {
  switch (model) {
    case 'accessPolicy':
      return kvErrors.accessDenied(callerOf(principal), action, vaultRefOf(deps));
    case 'rbac':
      return kvErrors.forbiddenByRbac(
        callerOf(principal),
        action,
        rbacResourceOf(deps, keyName),
        vaultRefOf(deps),
      );
    case 'managedhsm':
      return kvErrors.managedHsmAccessDenied(
        action,
        keyName === undefined ? '/keys' : `/keys/${keyName}`,
        randomUUID(),
      );
  }
}

/** The error of a forced answer, with this request's caller, permission and key. */
function forcedError(
  deps: HandlerDeps,
  req: IncomingMessage,
  kind: ForcedAnswerKind,
  principal: Principal,
  route: Route,
): KvError {
  const permission = route.permission ?? 'get';
  switch (kind) {
    case 'ForbiddenByFirewall':
      return kvErrors.forbiddenByFirewall(
        (req.socket.remoteAddress ?? '127.0.0.1').replace(/^::ffff:/, ''),
        callerOf(principal),
        vaultRefOf(deps),
      );
    case 'ForbiddenByConnection':
      return kvErrors.forbiddenByConnection();
    case 'AccessDenied':
      return kvErrors.accessDenied(callerOf(principal), permission, vaultRefOf(deps));
    case 'ForbiddenByPolicy':
      return kvErrors.forbiddenByPolicy(callerOf(principal), permission, deps.vaultName);
    case 'ForbiddenByRbac':
      return deps.kind === 'managedhsm'
        ? kvErrors.managedHsmAccessDenied(
            dataActionOf(deps.kind, route.op),
            `/keys/${route.name ?? ''}`,
            randomUUID(),
          )
        : kvErrors.forbiddenByRbac(
            callerOf(principal),
            dataActionOf(deps.kind, route.op),
            rbacResourceOf(deps, route.name),
            vaultRefOf(deps),
          );
    case 'Unauthorized':
      return kvErrors.unauthorized(
        'AKV10000: Request is missing a Bearer or PoP token.',
        challengeOf(deps.kind),
      );
  }
}

/** The id base URL: the host the client used when it is one of ours, else localhost. */
function baseUrl(req: IncomingMessage, port: number): string {
  const host = (req.headers.host ?? '').toLowerCase();
  const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : (host.split(':')[0] ?? '');
  return `https://${ID_HOSTS.has(name) ? name : 'localhost'}:${port}`;
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw kvErrors.badParameter('The request path is not valid percent-encoding.');
  }
}

/** Maps method and path to a keys operation; see the swagger paths in test/vectors/keyvault/keys.json. */
function routeOf(vault: Vault, method: string, pathname: string): Route {
  const parts = pathname.split('/').slice(1).map(decodeSegment);
  const [root, name, third, fourth] = parts;
  const n = parts.length;
  const noMethod = (): never => {
    throw kvErrors.methodNotAllowed(method);
  };
  if (root === 'keys' && n === 1) {
    if (method !== 'GET') noMethod();
    return {
      operationId: 'GetKeys',
      op: 'getKeys',
      permission: 'list',
      version: '',
      run: (c) => vault.getKeys(c.base, listQuery(c)),
    };
  }
  if (root === 'keys' && name === 'restore' && n === 2 && method === 'POST') {
    return { operationId: 'RestoreKey', op: 'restoreKey', version: '' };
  }
  if (root === 'keys' && name !== undefined && name !== '' && n === 2) {
    switch (method) {
      case 'PUT':
        return {
          operationId: 'ImportKey',
          op: 'importKey',
          permission: 'import',
          name,
          version: '',
          run: (c) => vault.importKey(c.base, name, c.body),
        };
      case 'DELETE':
        return {
          operationId: 'DeleteKey',
          op: 'deleteKey',
          permission: 'delete',
          name,
          version: '',
          run: (c) => vault.deleteKey(c.base, name),
        };
      case 'GET':
        return getKeyRoute(vault, name, '');
      default:
        return noMethod();
    }
  }
  if (root === 'keys' && name !== undefined && name !== '' && n === 3 && third !== undefined) {
    const sub = third.toLowerCase();
    if (sub === 'create' && method === 'POST') {
      return {
        operationId: 'CreateKey',
        op: 'createKey',
        permission: 'create',
        name,
        version: '',
        run: (c) => vault.createKey(c.base, name, c.body),
      };
    }
    if (sub === 'rotate' && method === 'POST') {
      return {
        operationId: 'RotateKey',
        op: 'rotateKey',
        permission: 'rotate',
        name,
        version: '',
        run: (c) => vault.rotateKey(c.base, name),
      };
    }
    if (sub === 'backup' && method === 'POST')
      return { operationId: 'BackupKey', op: 'backupKey', name, version: '' };
    if (sub === 'rotationpolicy') {
      if (method === 'GET') {
        return {
          operationId: 'GetKeyRotationPolicy',
          op: 'getKeyRotationPolicy',
          permission: 'getrotationpolicy',
          name,
          version: '',
          run: (c) => vault.getKeyRotationPolicy(c.base, name),
        };
      }
      if (method === 'PUT') {
        return {
          operationId: 'UpdateKeyRotationPolicy',
          op: 'updateKeyRotationPolicy',
          permission: 'setrotationpolicy',
          name,
          version: '',
          run: (c) => vault.updateKeyRotationPolicy(c.base, name, c.body),
        };
      }
      return noMethod();
    }
    if (sub === 'versions' && method === 'GET') {
      return {
        operationId: 'GetKeyVersions',
        op: 'getKeyVersions',
        permission: 'list',
        name,
        version: '',
        run: (c) => vault.getKeyVersions(c.base, name, listQuery(c)),
      };
    }
    if (method === 'GET') return getKeyRoute(vault, name, third);
    if (method === 'PATCH') {
      return {
        operationId: 'UpdateKey',
        op: 'updateKey',
        permission: 'update',
        name,
        version: third,
        run: (c) => vault.updateKey(c.base, name, third, c.body),
      };
    }
    return noMethod();
  }
  if (
    root === 'keys' &&
    name !== undefined &&
    name !== '' &&
    n === 4 &&
    third !== undefined &&
    fourth !== undefined
  ) {
    const version = third;
    const crypto: Record<string, CryptoOperation> = {
      wrapkey: 'wrapKey',
      unwrapkey: 'unwrapKey',
      encrypt: 'encrypt',
      decrypt: 'decrypt',
    };
    const op = crypto[fourth.toLowerCase()];
    if (op !== undefined) {
      if (method !== 'POST') noMethod();
      return {
        operationId: op,
        op,
        permission: op,
        name,
        version,
        run: (c) => vault.crypto(c.base, op, name, version, c.body),
      };
    }
    const unimplemented: Record<string, string> = {
      sign: 'sign',
      verify: 'verify',
      release: 'release',
      attestation: 'GetKeyAttestation',
    };
    const operationId = unimplemented[fourth.toLowerCase()];
    if (operationId !== undefined) return { operationId, op: operationId, name, version };
  }
  if (root === 'deletedkeys' && n === 1) {
    if (method !== 'GET') noMethod();
    return {
      operationId: 'GetDeletedKeys',
      op: 'getDeletedKeys',
      permission: 'list',
      version: '',
      run: (c) => vault.getDeletedKeys(c.base, listQuery(c)),
    };
  }
  if (root === 'deletedkeys' && name !== undefined && name !== '' && n === 2) {
    if (method === 'GET') {
      return {
        operationId: 'GetDeletedKey',
        op: 'getDeletedKey',
        permission: 'get',
        name,
        version: '',
        run: (c) => vault.getDeletedKey(c.base, name),
      };
    }
    if (method === 'DELETE') {
      return {
        operationId: 'PurgeDeletedKey',
        op: 'purgeDeletedKey',
        permission: 'purge',
        name,
        version: '',
        run: async () => {
          await vault.purgeDeletedKey(name);
          return undefined;
        },
      };
    }
    return noMethod();
  }
  if (
    root === 'deletedkeys' &&
    name !== undefined &&
    name !== '' &&
    n === 3 &&
    third?.toLowerCase() === 'recover'
  ) {
    if (method !== 'POST') noMethod();
    return {
      operationId: 'RecoverDeletedKey',
      op: 'recoverDeletedKey',
      permission: 'recover',
      name,
      version: '',
      run: (c) => vault.recoverDeletedKey(c.base, name),
    };
  }
  if (root === 'rng' && n === 1 && method === 'POST')
    return { operationId: 'GetRandomBytes', op: 'getRandomBytes', version: '' };
  throw kvErrors.notFound();
}

function getKeyRoute(vault: Vault, name: string, version: string): Route {
  return {
    operationId: 'GetKey',
    op: 'getKey',
    permission: 'get',
    name,
    version,
    run: (c) => vault.getKey(c.base, name, version),
  };
}

function listQuery(c: RunContext) {
  return {
    maxresults: c.query.get('maxresults'),
    skiptoken: c.query.get('$skiptoken'),
    apiVersion: c.apiVersion,
  };
}

/** Reads a JSON request body (empty → undefined), refusing bodies over MAX_BODY_BYTES. */
async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES)
      throw kvErrors.badParameter(`The request body exceeds ${MAX_BODY_BYTES} bytes.`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return undefined;
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw kvErrors.badParameter('The request body is not valid JSON.');
  }
}

/** Sends a Key Vault response (a KvError, or a status and optional JSON body) and records it. */
function send(
  deps: HandlerDeps,
  req: IncomingMessage,
  res: ServerResponse,
  operationId: string | undefined,
  statusOrError: number | KvError,
  payload?: unknown,
): void {
  const isError = statusOrError instanceof KvError;
  const status = isError ? statusOrError.status : statusOrError;
  const body = isError ? statusOrError.body() : payload;
  const headers: Record<string, string> = {
    'Cache-Control': 'no-cache',
    'x-ms-request-id': randomUUID(),
    'x-ms-keyvault-region': 'local',
    'x-ms-keyvault-service-version': 'sealbox-devvault',
    ...(isError ? statusOrError.headers : {}),
  };
  const clientRequestId = req.headers['x-ms-client-request-id'];
  if (typeof clientRequestId === 'string') headers['x-ms-client-request-id'] = clientRequestId;
  // Paths carry key names and versions only; bodies (which may carry key material) are never logged.
  deps.logger.debug(
    { method: req.method, path: req.url?.split('?')[0], status, operationId },
    'dev vault request',
  );
  deps.onResponse?.({
    method: req.method ?? 'GET',
    path: (req.url ?? '/').split('?')[0] ?? '/',
    ...(operationId === undefined ? {} : { operationId }),
    status,
    ...(body === undefined ? {} : { body }),
  });
  if (body === undefined) {
    res.writeHead(status, headers).end();
    return;
  }
  const text = JSON.stringify(body);
  res
    .writeHead(status, {
      ...headers,
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(text)),
    })
    .end(text);
}

/** True when `header` carries exactly the admin token (compared in constant time). */
function isAdmin(header: string | undefined, token: string): boolean {
  const given = /^Bearer (\S+)$/i.exec(header ?? '')?.[1] ?? '';
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b) && given.length > 0;
}

/** The `/_sealbox/` admin surface; see docs/devvault.md. */
async function admin(deps: HandlerDeps, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const reply = (status: number, body?: unknown) => {
    if (body === undefined) {
      res.writeHead(status, { 'Cache-Control': 'no-cache' }).end();
      return;
    }
    const text = JSON.stringify(body);
    res
      .writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Cache-Control': 'no-cache' })
      .end(text);
  };
  const fail = (status: number, code: string, message: string) => reply(status, { error: { code, message } });
  if (!isAdmin(req.headers.authorization, deps.adminToken)) {
    res.setHeader('WWW-Authenticate', 'Bearer realm="sealbox-devvault-admin"');
    return fail(401, 'Unauthorized', 'The admin surface needs "Authorization: Bearer <admin token>".');
  }
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'GET /_sealbox/counters':
      return reply(200, { counters: deps.counters.snapshot() });
    case 'POST /_sealbox/reset':
      deps.counters.reset();
      return reply(204);
    case 'GET /_sealbox/faults':
      return reply(200, deps.getFaults());
    case 'POST /_sealbox/faults': {
      let raw: unknown;
      try {
        raw = await readJson(req);
      } catch (err) {
        return fail(400, 'BadParameter', (err as Error).message);
      }
      const parsed = faultUpdateSchema.safeParse(raw ?? {});
      if (!parsed.success) return fail(400, 'BadParameter', `invalid faults: ${firstIssue(parsed.error)}`);
      deps.setFaults(parsed.data);
      return reply(204);
    }
    case 'GET /_sealbox/access':
      return reply(200, deps.getAccess());
    case 'POST /_sealbox/access': {
      let raw: unknown;
      try {
        raw = await readJson(req);
      } catch (err) {
        return fail(400, 'BadParameter', (err as Error).message);
      }
      const problem = deps.changeAccess(raw ?? {});
      if (problem !== undefined) return fail(400, 'BadParameter', problem);
      return reply(204);
    }
    case 'POST /_sealbox/entra': {
      if (deps.controlEntra === undefined)
        return fail(
          404,
          'NotFound',
          'this dev vault has no embedded Entra ID (start it with the entra option)',
        );
      let raw: unknown;
      try {
        raw = await readJson(req);
      } catch (err) {
        return fail(400, 'BadParameter', (err as Error).message);
      }
      const problem = await deps.controlEntra(raw ?? {});
      if (problem !== undefined) return fail(400, 'BadParameter', problem);
      return reply(204);
    }
    default:
      return fail(404, 'NotFound', `no admin operation ${route}; see docs/devvault.md`);
  }
}
