/**
 * Push revocation: an HTTP endpoint for Azure Event Grid webhooks about the Key Vault, in both the
 * Event Grid schema and CloudEvents 1.0, authenticated by a shared secret (the `secret` query
 * parameter of the subscription's endpoint URL, or `Authorization: Bearer <secret>`; compared in
 * constant time).
 *
 *   KeyNewVersionCreated                 → adopt the new version for new DEKs now
 *   KeyExpired, VaultAccessPolicyChanged → re-check every key version in use now
 *
 * Both re-check through the key watcher, so the vault, not the event, is the source of truth: a
 * forged event can at worst cause one extra status GET per key.
 *
 * Handshakes: Event Grid schema sends a SubscriptionValidationEvent, answered with its
 * validationCode; CloudEvents sends OPTIONS with WebHook-Request-Origin, answered with
 * WebHook-Allowed-Origin.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  createServer,
  type IncomingMessage,
  type RequestListener,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log/logger';
import { limitHttpServer, WEBHOOK_LIMITS } from './http-limits';

/** What the webhook triggers (the key watcher implements it). */
export interface WebhookTarget {
  checkNow(): Promise<void>;
}

const RECHECK_EVENTS = new Set([
  'Microsoft.KeyVault.KeyNewVersionCreated',
  'Microsoft.KeyVault.KeyExpired',
  'Microsoft.KeyVault.VaultAccessPolicyChanged',
]);
const VALIDATION_EVENT = 'Microsoft.EventGrid.SubscriptionValidationEvent';
/** Event Grid delivers batches of at most 1 MB. */
const MAX_BODY_BYTES = 1024 * 1024;

export interface WebhookServer {
  /** "http://host:port", or https:// with TLS */
  readonly url: string;
  stop(): Promise<void>;
}

export async function startWebhookServer(
  listen: { host: string; port: number },
  secret: string,
  target: WebhookTarget,
  log: Logger,
  /** PEM certificate chain and key files: serve HTTPS (what Event Grid requires of an endpoint). */
  tls?: { certFile: string; keyFile: string },
): Promise<WebhookServer> {
  const expected = digest(secret);
  const credentials = tls && {
    cert: readPem('certFile', tls.certFile),
    key: readPem('keyFile', tls.keyFile),
  };
  const listener: RequestListener = (req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error({ err }, 'webhook handler failed');
      if (!res.headersSent) reply(res, 500, { error: 'internal error' });
    });
  };
  const server: Server = credentials ? createHttpsServer(credentials, listener) : createServer(listener);

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://webhook');
    if (url.pathname !== '/eventgrid')
      return reply(res, 404, { error: 'not found; the endpoint is /eventgrid' });
    if (!authenticated(req, url)) {
      log.warn({ remote: req.socket.remoteAddress }, 'webhook call with a missing or wrong secret');
      return reply(res, 401, { error: 'missing or wrong secret' });
    }
    if (req.method === 'OPTIONS') {
      // CloudEvents 1.0 webhook abuse protection handshake.
      const origin = req.headers['webhook-request-origin'];
      if (typeof origin !== 'string')
        return reply(res, 400, { error: 'WebHook-Request-Origin header missing' });
      res.setHeader('WebHook-Allowed-Origin', origin);
      res.setHeader('WebHook-Allowed-Rate', '120');
      return reply(res, 200);
    }
    if (req.method !== 'POST') return reply(res, 405, { error: 'use POST (or OPTIONS for the handshake)' });
    let body: unknown;
    try {
      body = JSON.parse(await readBody(req));
    } catch (err) {
      return reply(res, 400, { error: `body is not JSON: ${(err as Error).message}` });
    }
    const events = (Array.isArray(body) ? body : [body]) as Array<Record<string, unknown>>;
    let recheck = false;
    for (const event of events) {
      // Event Grid schema uses eventType/data; CloudEvents uses type/data.
      const type = String(event?.['eventType'] ?? event?.['type'] ?? '');
      if (type === VALIDATION_EVENT) {
        const code = (event['data'] as { validationCode?: unknown } | undefined)?.validationCode;
        if (typeof code !== 'string')
          return reply(res, 400, { error: 'validation event without validationCode' });
        log.info('Event Grid subscription validated');
        return reply(res, 200, { validationResponse: code });
      }
      if (RECHECK_EVENTS.has(type)) recheck = true;
    }
    if (recheck) {
      log.info(
        { events: events.map((e) => e?.['eventType'] ?? e?.['type']) },
        'Key Vault event: re-checking keys now',
      );
      await target.checkNow();
    }
    reply(res, 200);
  }

  function authenticated(req: IncomingMessage, url: URL): boolean {
    const header = req.headers.authorization;
    const given =
      url.searchParams.get('secret') ?? (header?.startsWith('Bearer ') ? header.slice(7) : undefined);
    return given !== undefined && timingSafeEqual(digest(given), expected);
  }

  limitHttpServer(server, WEBHOOK_LIMITS);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(listen.port, listen.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `${tls ? 'https' : 'http'}://${host}:${address.port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function readPem(field: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new Error(`webhook.tls.${field}: cannot read ${path}: ${(err as Error).message}`);
  }
}

/** Fixed-length digests, so the comparison is constant-time whatever the lengths. */
function digest(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function reply(res: ServerResponse, status: number, body?: object): void {
  if (body) res.setHeader('content-type', 'application/json');
  res.writeHead(status).end(body ? JSON.stringify(body) : undefined);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const piece of req) {
    size += (piece as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new Error(`body exceeds ${MAX_BODY_BYTES} bytes`);
    parts.push(piece as Buffer);
  }
  return Buffer.concat(parts).toString('utf8');
}
