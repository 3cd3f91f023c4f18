/**
 * An embedded Microsoft Entra ID for the dev vault: what the real @azure/identity credential classes call,
 * so WorkloadIdentityCredential, ClientSecretCredential, ManagedIdentityCredential and
 * DefaultAzureCredential run unchanged against it, and the tokens they obtain are signed JWTs the dev vault
 * verifies (tenant, audience, expiry, object id), so access policies and role assignments bind to real
 * principals.
 *
 * Two listeners:
 *   HTTPS (the authority host, trusted through the dev vault's CA):
 *     GET  /{tenant}/v2.0/.well-known/openid-configuration   OIDC discovery, as MSAL fetches it
 *     GET  /{tenant}/discovery/v2.0/keys                     JWKS of the token-signing key
 *     POST /{tenant}/oauth2/v2.0/token                       client credentials: client_secret, or a
 *                                                            client_assertion (workload identity: a
 *                                                            federated service-account token)
 *   HTTP on loopback (managed identity endpoints are plain HTTP on Azure too):
 *     GET  /metadata/identity/oauth2/token                   IMDS (header Metadata: true; api-version
 *                                                            2018-02-01; MSAL uses it when
 *                                                            AZURE_POD_IDENTITY_AUTHORITY_HOST is set)
 *     GET  /msi/token                                        App Service (header X-IDENTITY-HEADER;
 *                                                            api-version 2019-08-01; MSAL uses it when
 *                                                            IDENTITY_ENDPOINT and IDENTITY_HEADER are set)
 *
 * Access tokens are v1.0 app tokens as Entra issues them for Key Vault (aud = the resource, iss =
 * https://sts.windows.net/{tenant}/, appid, oid, sub, tid, idtyp app, iat/nbf/exp), signed RS256 with a key
 * made at start. Workload identity: the embedded Entra is also the "cluster" OIDC issuer whose
 * service-account tokens a federated credential trusts (issueServiceAccountToken).
 *
 * Controls: token lifetime, and outages of the token endpoint and of the managed identity endpoint
 * (connection refused: the listener is closed and re-opened on the same port; or a 5xx answer).
 */
import { createHash, generateKeyPairSync, type KeyObject, randomUUID } from 'node:crypto';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { pino } from 'pino';
import type { Principal } from './access';
import { type JwtClaims, signJwt, verifyJwt } from './jwt';
import { DEV_TENANT_ID } from './server';

/** A principal (app registration + service principal, or a managed identity) of the embedded Entra ID. */
export interface DevEntraPrincipalOptions {
  /** Display name; access policies and role assignments may name it. */
  readonly name: string;
  /** Application (client) id; default: a GUID derived from the name. */
  readonly clientId?: string;
  /** Object id of the service principal; default: a GUID derived from the name. */
  readonly objectId?: string;
  /** Client secret for the client-credentials flow (ClientSecretCredential, EnvironmentCredential). */
  readonly clientSecret?: string;
  /**
   * Federated identity credentials (workload identity): a client assertion whose iss, sub and aud match
   * one of these is accepted. issuer defaults to DevEntra.serviceAccountIssuer, audience to
   * api://AzureADTokenExchange (Azure's default for AKS).
   */
  readonly federatedCredentials?: ReadonlyArray<{ subject: string; issuer?: string; audience?: string }>;
  /**
   * A managed identity served by the managed identity endpoint: `system` (the one a request without
   * client_id gets) or `user` (requested by client_id, object_id or mi_res_id).
   */
  readonly managedIdentity?: 'system' | 'user';
}

/** Options of startDevEntra. */
export interface DevEntraOptions {
  readonly principals?: readonly DevEntraPrincipalOptions[];
  /** Tenant id; default the dev vault's (the tenant its challenge names). */
  readonly tenantId?: string;
  /** Lifetime of issued access tokens in seconds; default 3600. */
  readonly tokenLifetimeSec?: number;
  /** Listen address; default 127.0.0.1. Ports default to 0 (free ones). */
  readonly host?: string;
  readonly port?: number;
  readonly managedIdentityPort?: number;
  readonly logger?: Logger;
}

/** How an endpoint is (un)available: up, refusing connections, or answering a 5xx. */
export type EndpointState = 'up' | 'refuse' | 500 | 503;

/** A running embedded Entra ID. */
export interface DevEntra {
  /** The authority host for credentials: `authorityHost` option or AZURE_AUTHORITY_HOST. */
  readonly authorityHost: string;
  readonly tenantId: string;
  /** IMDS host for AZURE_POD_IDENTITY_AUTHORITY_HOST (http://127.0.0.1:PORT). */
  readonly imdsHost: string;
  /** App Service endpoint for IDENTITY_ENDPOINT, and the secret for IDENTITY_HEADER. */
  readonly identityEndpoint: string;
  readonly identityHeader: string;
  /** Issuer of the service-account tokens that federated credentials trust by default. */
  readonly serviceAccountIssuer: string;
  /** A principal by name, client id or object id. */
  principal(ref: string): { name: string; clientId: string; objectId: string } | undefined;
  /** Adds a principal at run time. */
  addPrincipal(principal: DevEntraPrincipalOptions): void;
  /** A signed service-account token (what AKS projects into AZURE_FEDERATED_TOKEN_FILE). */
  issueServiceAccountToken(o: { subject: string; audience?: string; lifetimeSec?: number }): string;
  /** Verifies an access token for a resource: the principal, or an Error whose message the vault sends. */
  verify(token: string, resource: string): Principal | Error;
  /** Lifetime of tokens issued from now on. */
  setTokenLifetime(seconds: number): void;
  /** Makes the token endpoint and/or the managed identity endpoint unavailable, or brings them back. */
  setOutage(o: { tokenEndpoint?: EndpointState; managedIdentity?: EndpointState }): Promise<void>;
  /** Tokens issued, refused, outage answers (by endpoint). */
  counters(): Record<string, number>;
  close(): Promise<void>;
}

/** A GUID derived from a string (stable across starts, so configured references keep matching). */
export function guidOf(seed: string): string {
  const h = createHash('sha256').update(seed).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

interface Registered {
  readonly name: string;
  readonly clientId: string;
  readonly objectId: string;
  readonly clientSecret?: string;
  readonly federated: ReadonlyArray<{ subject: string; issuer: string; audience: string }>;
  readonly managedIdentity?: 'system' | 'user';
}

/** What the token endpoint answers on failure: an OAuth error as Entra shapes it. */
class EntraError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly aadsts: number,
    description: string,
  ) {
    super(description);
  }
}

/** Starts the embedded Entra ID with the dev vault's TLS material. */
export async function startDevEntra(
  tls: { readonly certPem: string; readonly keyPem: string },
  options: DevEntraOptions = {},
): Promise<DevEntra> {
  const tenantId = options.tenantId ?? DEV_TENANT_ID;
  const host = options.host ?? '127.0.0.1';
  const logger = options.logger ?? pino({ level: 'silent' });
  let lifetimeSec = options.tokenLifetimeSec ?? 3600;
  const signing = newKey();
  const serviceAccount = newKey();
  const principals: Registered[] = [];
  const counts = new Map<string, number>();
  const bump = (name: string) => counts.set(name, (counts.get(name) ?? 0) + 1);
  const identityHeader = randomUUID();
  let state: { tokenEndpoint: EndpointState; managedIdentity: EndpointState } = {
    tokenEndpoint: 'up',
    managedIdentity: 'up',
  };

  let tokenPort = options.port ?? 0;
  let miPort = options.managedIdentityPort ?? 0;
  const authorityHost = () => `https://localhost:${tokenPort}`;
  const serviceAccountIssuer = () => `https://localhost:${tokenPort}/serviceaccount`;

  const add = (p: DevEntraPrincipalOptions): void => {
    const clientId = p.clientId ?? guidOf(`client:${p.name}`);
    const objectId = p.objectId ?? guidOf(`object:${p.name}`);
    if (principals.some((x) => x.name === p.name || x.clientId === clientId || x.objectId === objectId)) {
      throw new Error(`dev Entra ID: principal ${p.name} (client id ${clientId}) is already registered`);
    }
    principals.push({
      name: p.name,
      clientId,
      objectId,
      ...(p.clientSecret === undefined ? {} : { clientSecret: p.clientSecret }),
      federated: (p.federatedCredentials ?? []).map((f) => ({
        subject: f.subject,
        issuer: f.issuer ?? serviceAccountIssuer(),
        audience: f.audience ?? 'api://AzureADTokenExchange',
      })),
      ...(p.managedIdentity === undefined ? {} : { managedIdentity: p.managedIdentity }),
    });
  };
  const find = (ref: string) => {
    const r = ref.toLowerCase();
    return principals.find(
      (p) => p.name.toLowerCase() === r || p.clientId.toLowerCase() === r || p.objectId.toLowerCase() === r,
    );
  };

  /** A v1.0 app access token for `resource`, as Entra issues for Key Vault. */
  const issue = (p: Registered, resource: string, appidacr: string) => {
    const now = Math.floor(Date.now() / 1000);
    const claims: JwtClaims = {
      aud: resource,
      iss: `https://sts.windows.net/${tenantId}/`,
      iat: now,
      nbf: now,
      exp: now + lifetimeSec,
      appid: p.clientId,
      appidacr,
      idp: `https://sts.windows.net/${tenantId}/`,
      idtyp: 'app',
      oid: p.objectId,
      sub: p.objectId,
      tid: tenantId,
      uti: randomUUID().replace(/-/g, ''),
      ver: '1.0',
    };
    bump('tokens.issued');
    return { token: signJwt(claims, signing.privateKey, signing.kid), expiresIn: lifetimeSec, now };
  };

  // ---- HTTPS: discovery and the token endpoint ----------------------------------------------------------

  const tokenServer = createHttpsServer(
    { cert: tls.certPem, key: tls.keyPem, minVersion: 'TLSv1.2' },
    (req, res) => {
      handleToken(req, res).catch((err: unknown) => {
        logger.error({ err }, 'dev Entra ID request failed');
        if (!res.headersSent) json(res, 500, { error: 'server_error', error_description: 'internal error' });
      });
    },
  );

  async function handleToken(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', authorityHost());
    const [tenant, ...rest] = url.pathname.split('/').slice(1);
    const path = rest.join('/');
    if (typeof state.tokenEndpoint === 'number') {
      bump(`outage.token.${state.tokenEndpoint}`);
      return json(res, state.tokenEndpoint, {
        error: 'temporarily_unavailable',
        error_description: 'AADSTS90033: A transient error has occurred. Please try again.',
      });
    }
    if (tenant !== tenantId && !(tenant === 'common' && path === 'discovery/v2.0/keys')) {
      return sendEntraError(
        res,
        new EntraError(400, 'invalid_request', 90002, `AADSTS90002: Tenant '${tenant}' not found.`),
      );
    }
    if (req.method === 'GET' && path === 'v2.0/.well-known/openid-configuration') {
      const base = `${authorityHost()}/${tenantId}`;
      return json(res, 200, {
        token_endpoint: `${base}/oauth2/v2.0/token`,
        token_endpoint_auth_methods_supported: [
          'client_secret_post',
          'private_key_jwt',
          'client_secret_basic',
        ],
        jwks_uri: `${base}/discovery/v2.0/keys`,
        response_modes_supported: ['query', 'fragment', 'form_post'],
        subject_types_supported: ['pairwise'],
        id_token_signing_alg_values_supported: ['RS256'],
        response_types_supported: ['code', 'id_token', 'code id_token', 'id_token token'],
        scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
        issuer: `${base}/v2.0`,
        authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
        end_session_endpoint: `${base}/oauth2/v2.0/logout`,
        tenant_region_scope: null,
        cloud_instance_name: 'localhost',
      });
    }
    if (req.method === 'GET' && path === 'discovery/v2.0/keys') {
      return json(res, 200, { keys: [signing.jwk] });
    }
    if (req.method === 'POST' && path === 'oauth2/v2.0/token') {
      const form = new URLSearchParams(await readBody(req));
      try {
        const { token, expiresIn } = tokenRequest(form);
        return json(res, 200, {
          token_type: 'Bearer',
          expires_in: expiresIn,
          ext_expires_in: expiresIn,
          access_token: token,
        });
      } catch (err) {
        if (!(err instanceof EntraError)) throw err;
        bump('tokens.refused');
        return sendEntraError(res, err);
      }
    }
    return json(res, 404, {
      error: 'not_found',
      error_description: `no Entra ID endpoint ${req.method} ${url.pathname}`,
    });
  }

  /** The client-credentials grant: who is asking, proven how, for which resource. */
  function tokenRequest(form: URLSearchParams): { token: string; expiresIn: number } {
    if (form.get('grant_type') !== 'client_credentials') {
      throw new EntraError(
        400,
        'unsupported_grant_type',
        70003,
        `AADSTS70003: The app requested an unsupported grant type '${form.get('grant_type') ?? ''}'. The dev Entra ID serves client_credentials only.`,
      );
    }
    const clientId = form.get('client_id') ?? '';
    const app = principals.find((p) => p.clientId.toLowerCase() === clientId.toLowerCase());
    if (app === undefined) {
      throw new EntraError(
        400,
        'unauthorized_client',
        700016,
        `AADSTS700016: Application with identifier '${clientId}' was not found in the directory '${tenantId}'. Register it as a principal of the dev Entra ID.`,
      );
    }
    const resource = resourceOfScope(form.get('scope') ?? '');
    const assertion = form.get('client_assertion');
    if (assertion !== null) {
      checkAssertion(app, assertion, form.get('client_assertion_type'));
      return issue(app, resource, '2');
    }
    const secret = form.get('client_secret');
    if (secret === null || app.clientSecret === undefined || secret !== app.clientSecret) {
      throw new EntraError(
        401,
        'invalid_client',
        7000215,
        `AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${app.clientId}'.`,
      );
    }
    return issue(app, resource, '1');
  }

  /** A federated service-account token: signed by the service-account issuer, matching a credential. */
  function checkAssertion(app: Registered, assertion: string, type: string | null): void {
    if (type !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
      throw new EntraError(400, 'invalid_request', 50027, 'AADSTS50027: Invalid client_assertion_type.');
    }
    const claims = verifyJwt(assertion, new Map([[serviceAccount.kid, serviceAccount.publicKey]]));
    if (typeof claims === 'string') {
      throw new EntraError(
        401,
        'invalid_client',
        700211,
        `AADSTS700211: No matching federated identity record found for presented assertion issuer: ${claims}.`,
      );
    }
    const now = Math.floor(Date.now() / 1000);
    if (typeof claims['exp'] !== 'number' || claims['exp'] <= now) {
      throw new EntraError(
        400,
        'invalid_client',
        700024,
        'AADSTS700024: Client assertion is not within its valid time range. Refresh the projected service-account token.',
      );
    }
    const aud = Array.isArray(claims['aud']) ? (claims['aud'] as unknown[]) : [claims['aud']];
    const match = app.federated.some(
      (f) => f.issuer === claims['iss'] && f.subject === claims['sub'] && aud.includes(f.audience),
    );
    if (!match) {
      throw new EntraError(
        400,
        'invalid_grant',
        70021,
        `AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: '${String(claims['iss'])}'. Assertion Subject: '${String(claims['sub'])}'. Assertion Audience: '${aud.join(',')}'.`,
      );
    }
  }

  // ---- HTTP: managed identity ---------------------------------------------------------------------------

  const miServer = createHttpServer((req, res) => {
    try {
      handleManagedIdentity(req, res);
    } catch (err) {
      logger.error({ err }, 'dev managed identity request failed');
      if (!res.headersSent) json(res, 500, { error: 'server_error' });
    }
  });

  function handleManagedIdentity(req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? '/', `http://127.0.0.1:${miPort}`);
    if (typeof state.managedIdentity === 'number') {
      bump(`outage.managedIdentity.${state.managedIdentity}`);
      return json(res, state.managedIdentity, {
        error: 'service_unavailable',
        error_description: 'managed identity endpoint unavailable',
      });
    }
    // MSAL's UrlString adds a trailing slash to the IMDS path; accept both forms.
    const path = url.pathname.replace(/\/$/, '');
    const imds = path === '/metadata/identity/oauth2/token';
    const appService = path === '/msi/token';
    if (!imds && !appService) return json(res, 404, { error: 'not_found' });
    if (imds && req.headers['metadata'] !== 'true') {
      // IMDS answers 400 without the Metadata header (what identity's availability probe relies on).
      return json(res, 400, {
        error: 'invalid_request',
        error_description: 'Required metadata header not specified',
      });
    }
    if (appService && req.headers['x-identity-header'] !== identityHeader) {
      return json(res, 401, {
        statusCode: 401,
        message: 'Unauthorized: X-IDENTITY-HEADER is missing or wrong.',
      });
    }
    const resource = url.searchParams.get('resource') ?? '';
    if (resource === '')
      return json(res, 400, { error: 'invalid_request', error_description: 'resource is required' });
    const id =
      url.searchParams.get('client_id') ??
      url.searchParams.get('object_id') ??
      url.searchParams.get('principal_id') ??
      url.searchParams.get('mi_res_id');
    const mi =
      id === null
        ? principals.find((p) => p.managedIdentity === 'system')
        : principals.find(
            (p) =>
              p.managedIdentity !== undefined && (p.clientId === id || p.objectId === id || p.name === id),
          );
    if (mi === undefined) {
      bump('tokens.refused');
      return json(res, 400, {
        error: 'invalid_request',
        error_description: `Identity not found${id === null ? ' (no system-assigned identity)' : ` for ${id}`}`,
      });
    }
    const { token, expiresIn, now } = issue(mi, resourceOfScope(resource), '2');
    // IMDS sends numbers as strings; App Service 2019-08-01 sends expires_on as epoch seconds too.
    return json(res, 200, {
      access_token: token,
      client_id: mi.clientId,
      expires_in: String(expiresIn),
      expires_on: String(now + expiresIn),
      ext_expires_in: String(expiresIn),
      not_before: String(now),
      resource,
      token_type: 'Bearer',
    });
  }

  // ---- listen, outages, close -----------------------------------------------------------------------------

  tokenPort = await listen(tokenServer, host, tokenPort);
  miPort = await listen(miServer, host, miPort);
  for (const p of options.principals ?? []) add(p);
  logger.info({ tokenPort, miPort }, 'dev Entra ID listening');

  const setEndpoint = async (server: Server, port: number, next: EndpointState, previous: EndpointState) => {
    if (next === 'refuse' && previous !== 'refuse') {
      // Connection refused: nothing listens on the port until the outage ends.
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    } else if (next !== 'refuse' && previous === 'refuse') {
      await listen(server, host, port);
    }
  };

  return {
    get authorityHost() {
      return authorityHost();
    },
    tenantId,
    imdsHost: `http://${host}:${miPort}`,
    identityEndpoint: `http://${host}:${miPort}/msi/token`,
    identityHeader,
    get serviceAccountIssuer() {
      return serviceAccountIssuer();
    },
    principal(ref) {
      const p = find(ref);
      return p === undefined ? undefined : { name: p.name, clientId: p.clientId, objectId: p.objectId };
    },
    addPrincipal: add,
    issueServiceAccountToken({ subject, audience = 'api://AzureADTokenExchange', lifetimeSec = 3600 }) {
      const now = Math.floor(Date.now() / 1000);
      return signJwt(
        {
          iss: serviceAccountIssuer(),
          sub: subject,
          aud: [audience],
          iat: now,
          nbf: now,
          exp: now + lifetimeSec,
        },
        serviceAccount.privateKey,
        serviceAccount.kid,
      );
    },
    verify(token, resource) {
      const claims = verifyJwt(token, new Map([[signing.kid, signing.publicKey]]));
      if (typeof claims === 'string') return new Error(`The bearer token could not be validated: ${claims}.`);
      const issuer = `https://sts.windows.net/${tenantId}/`;
      if (claims['iss'] !== issuer) {
        return new Error(
          `AKV10032: Invalid issuer. Expected one of ${issuer}, found ${String(claims['iss'])}.`,
        );
      }
      if (claims['aud'] !== resource) {
        return new Error(
          `AKV10022: Invalid audience. Expected ${resource}, found: ${String(claims['aud'])}.`,
        );
      }
      const now = Math.floor(Date.now() / 1000);
      if (typeof claims['exp'] !== 'number' || claims['exp'] <= now) {
        return new Error('The access token has expired; acquire a new one.');
      }
      if (typeof claims['nbf'] === 'number' && claims['nbf'] > now + 300) {
        return new Error('The access token is not valid yet.');
      }
      const p = principals.find((x) => x.objectId === claims['oid']);
      return {
        name: p?.name ?? String(claims['appid']),
        objectId: String(claims['oid']),
        appId: String(claims['appid']),
        tenantId: String(claims['tid']),
      };
    },
    setTokenLifetime(seconds) {
      if (!Number.isInteger(seconds) || seconds < 1)
        throw new Error('token lifetime must be a whole number of seconds ≥ 1');
      lifetimeSec = seconds;
    },
    async setOutage(o) {
      const next = { ...state, ...o };
      await setEndpoint(tokenServer, tokenPort, next.tokenEndpoint, state.tokenEndpoint);
      await setEndpoint(miServer, miPort, next.managedIdentity, state.managedIdentity);
      state = next;
    },
    counters: () => Object.fromEntries([...counts].sort(([a], [b]) => (a < b ? -1 : 1))),
    async close() {
      await Promise.all(
        [tokenServer, miServer].map(
          (s) =>
            new Promise<void>((resolve) => {
              if (!s.listening) return resolve();
              s.close(() => resolve());
              s.closeAllConnections();
            }),
        ),
      );
    },
  };
}

/** `https://x/.default` → `https://x`; a bare resource (managed identity) stays as it is. */
function resourceOfScope(scope: string): string {
  const first = scope.split(' ').find((s) => s.endsWith('/.default')) ?? scope.split(' ')[0] ?? '';
  return first.endsWith('/.default') ? first.slice(0, -'/.default'.length) : first;
}

function newKey(): {
  kid: string;
  privateKey: KeyObject;
  publicKey: KeyObject;
  jwk: Record<string, unknown>;
} {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const kid = randomUUID();
  return {
    kid,
    privateKey,
    publicKey,
    jwk: { ...publicKey.export({ format: 'jwk' }), kid, use: 'sig', kty: 'RSA' },
  };
}

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > 64 * 1024) throw new Error('request body too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res
    .writeHead(status, {
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': String(Buffer.byteLength(text)),
      'Cache-Control': 'no-store',
    })
    .end(text);
}

/** Entra's OAuth error body: error, error_description with trace and correlation ids, error_codes, … */
function sendEntraError(res: ServerResponse, err: EntraError): void {
  const trace = randomUUID();
  const correlation = randomUUID();
  const timestamp = new Date()
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');
  json(res, err.status, {
    error: err.error,
    error_description: `${err.message}\r\nTrace ID: ${trace}\r\nCorrelation ID: ${correlation}\r\nTimestamp: ${timestamp}`,
    error_codes: [err.aadsts],
    timestamp,
    trace_id: trace,
    correlation_id: correlation,
    error_uri: `https://login.microsoftonline.com/error?code=${err.aadsts}`,
  });
}
