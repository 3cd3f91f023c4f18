/**
 * Access control on the gRPC surface: who a caller is, what it may do, and how much.
 *
 * Who: a caller that presents a client certificate (mTLS on the TCP listener) is the identity one of
 * whose `certificates` rules matches it; any other caller is the identity that lists how it arrived
 * (`peers`: the envelope socket, TCP, the admin socket). Without an `access` section sealbox behaves
 * as a single-tenant sidecar: every caller of the envelope socket and TCP listener is "default" (every
 * key, every operation), and callers of the admin socket are "admin". A caller that is no identity,
 * or matches two, is refused (fail closed).
 *
 * What: an identity is granted key aliases × operations (encrypt, decrypt, rewrap), checked before
 * any vault call is made for the key (EnvelopeService asks KeyAccess), and Admin only if `admin`.
 * The Kubernetes KMS plugin's alias (kms.alias) is never granted here, not even by `*` or the
 * single-tenant default: its ciphertexts are the API server's seeds (docs/kms.md).
 * Server reflection (./reflection.ts) needs no grant, only that the caller is an identity: it reveals
 * the public schema and nothing of the policy or the keys.
 *
 * How much: per identity, a request rate (token bucket over calls: unary calls and stream starts)
 * and a number of open streams; across all callers, stream.maxConcurrentStreams. Refusals are
 * RESOURCE_EXHAUSTED with QUOTA_EXCEEDED (the identity's own limit) or OVERLOADED (the server's).
 */
import { performance } from 'node:perf_hooks';
import type { PeerCertificate } from 'node:tls';
import {
  type AccessIdentity,
  type CertificateMatch,
  type Config,
  KEY_OPERATIONS,
  type KeyOperation,
  kmsAlias,
  type PeerKind,
} from '../config/config';
import type { KeyAccess } from '../envelope/access';
import { ErrorCode, SealboxError } from '../errors';
import type { Logger } from '../log/logger';

/** What access control needs of a call (grpc-js server calls have both). */
export interface CallPeer {
  getPeer(): string;
  getAuthContext(): { sslPeerCertificate?: PeerCertificate | undefined };
}

/** A caller admitted for one call. */
export interface Admitted {
  readonly identity: string;
  /** Its grants, for the envelope service. */
  readonly keys: KeyAccess;
  /** Gives back the call's stream slots; idempotent. */
  release(): void;
}

/** The certificate identity fields rules can match. */
interface CertificateNames {
  readonly uris: readonly string[];
  readonly dnsNames: readonly string[];
  readonly commonNames: readonly string[];
}

/** The policy when config has no `access` section; see the module comment. */
const SINGLE_TENANT: Record<string, AccessIdentity> = {
  default: {
    peers: ['socket', 'tcp'],
    certificates: [],
    keys: ['*'],
    operations: [...KEY_OPERATIONS],
    admin: false,
    limits: { maxConcurrentStreams: null, requestsPerSecond: null, burst: null },
  },
  admin: {
    peers: ['admin-socket'],
    certificates: [],
    keys: [],
    operations: [],
    admin: true,
    limits: { maxConcurrentStreams: null, requestsPerSecond: null, burst: null },
  },
};

/** A token bucket: `rate` tokens per second, holding at most `burst`. */
class TokenBucket {
  private tokens: number;
  private updated: number;

  constructor(
    readonly rate: number,
    readonly burst: number,
    private readonly now: () => number,
  ) {
    this.tokens = burst;
    this.updated = now();
  }

  /** Takes one token; otherwise returns the milliseconds until one is there. */
  take(): number | undefined {
    const now = this.now();
    // A clock that went back must not take tokens away (a wall-clock step would lock callers out).
    const elapsed = Math.max(0, now - this.updated);
    this.tokens = Math.min(this.burst, this.tokens + (elapsed / 1000) * this.rate);
    this.updated = now;
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return undefined;
    }
    // The epsilon keeps float residue (0.998 tokens → 1.0000000000000009 ms) from adding a millisecond.
    return Math.max(1, Math.ceil(((1 - this.tokens) / this.rate) * 1000 - 1e-6));
  }
}

/** One identity of the policy, with its live counters. */
class Identity {
  readonly allKeys: boolean;
  readonly keys: ReadonlySet<string>;
  readonly operations: ReadonlySet<KeyOperation>;
  readonly rate: TokenBucket | undefined;
  openStreams = 0;

  constructor(
    readonly name: string,
    readonly spec: AccessIdentity,
    now: () => number,
  ) {
    this.allKeys = spec.keys.includes('*');
    this.keys = new Set(spec.keys);
    this.operations = new Set(spec.operations);
    const { requestsPerSecond, burst } = spec.limits;
    this.rate = requestsPerSecond
      ? new TokenBucket(requestsPerSecond, burst ?? Math.max(1, Math.ceil(requestsPerSecond)), now)
      : undefined;
  }

  may(operation: KeyOperation, alias: string): boolean {
    return this.operations.has(operation) && (this.allKeys || this.keys.has(alias));
  }
}

export class AccessControl {
  private readonly identities: Identity[];
  private readonly byPeer = new Map<PeerKind, Identity>();
  /** True when config has an access section (certificate callers must then match a rule). */
  private readonly explicit: boolean;
  private openStreams = 0;

  /** The KMS plugin's alias (kms.alias): no envelope caller may use it, whatever its grants. */
  private readonly reserved: string | undefined;

  constructor(
    config: Pick<Config, 'access' | 'stream'> & Partial<Pick<Config, 'kms' | 'keys'>>,
    /** The aliases whose key owns a key id (KekRegistry.aliasesOf). */
    private readonly aliasesOf: (keyId: string) => string[],
    private readonly log: Logger,
    /** Milliseconds on a monotonic clock: rates must not follow wall-clock steps (NTP, manual). */
    now: () => number = () => performance.now(),
  ) {
    this.reserved = config.kms && config.keys ? kmsAlias({ kms: config.kms, keys: config.keys }) : undefined;
    this.explicit = config.access !== null;
    const policy = config.access?.identities ?? SINGLE_TENANT;
    this.identities = Object.entries(policy).map(([name, spec]) => new Identity(name, spec, now));
    for (const identity of this.identities) {
      for (const peer of identity.spec.peers) this.byPeer.set(peer, identity);
    }
    this.maxStreams = config.stream.maxConcurrentStreams;
  }

  private readonly maxStreams: number;

  /** Streaming calls open now, across all callers. */
  get streamsOpen(): number {
    return this.openStreams;
  }

  /**
   * Admits one Envelope call, or throws: ACCESS_DENIED (no identity), QUOTA_EXCEEDED (the identity's
   * rate or stream limit), OVERLOADED (the server's stream limit). A stream holds its slots until
   * `release()`.
   */
  admit(call: CallPeer, peer: PeerKind, method: string, stream: boolean): Admitted {
    const identity = this.identify(call, peer, method);
    if (stream) {
      if (this.openStreams >= this.maxStreams) {
        throw new SealboxError(
          ErrorCode.OVERLOADED,
          `${this.openStreams} streams are open, the server's limit (stream.maxConcurrentStreams); ` +
            'retry with backoff, or finish streams before starting more',
        );
      }
      const limit = identity.spec.limits.maxConcurrentStreams;
      if (limit !== null && identity.openStreams >= limit) {
        throw new SealboxError(
          ErrorCode.QUOTA_EXCEEDED,
          `identity "${identity.name}" has ${identity.openStreams} streams open, its limit ` +
            `(access.identities.${identity.name}.limits.maxConcurrentStreams); finish streams before starting more`,
        );
      }
    }
    this.takeToken(identity);
    if (!stream) return { identity: identity.name, keys: this.keyAccess(identity, method), release() {} };
    identity.openStreams++;
    this.openStreams++;
    let released = false;
    return {
      identity: identity.name,
      keys: this.keyAccess(identity, method),
      release: () => {
        if (released) return;
        released = true;
        identity.openStreams--;
        this.openStreams--;
      },
    };
  }

  /** Admits one Admin call: the caller's identity must have `admin: true`. Returns the identity's name. */
  admitAdmin(call: CallPeer, peer: PeerKind, method: string): string {
    const identity = this.identify(call, peer, method);
    if (!identity.spec.admin) {
      this.log.warn({ identity: identity.name, method, peer: call.getPeer() }, 'access denied: not an admin');
      throw new SealboxError(
        ErrorCode.ACCESS_DENIED,
        `identity "${identity.name}" may not call the Admin service; only identities with admin: true may ` +
          '(access.identities), e.g. callers of listen.adminSocket',
      );
    }
    this.takeToken(identity);
    return identity.name;
  }

  /**
   * The caller's identity; see the module comment. `peer` is the listener that took the call: each
   * listener has its own grpc-js server (server.ts), so it is known, never guessed from the call.
   * Throws ACCESS_DENIED naming what the caller presented.
   */
  identify(call: CallPeer, peer: PeerKind, method: string): Identity {
    const certificate = call.getAuthContext().sslPeerCertificate;
    let identity: Identity | undefined;
    let presented: string;
    if (certificate && this.explicit) {
      const names = certificateNames(certificate);
      const matched = this.identities.filter((i) =>
        i.spec.certificates.some((rule) => ruleMatches(rule, names)),
      );
      presented = `client certificate ${describeCertificate(names)}`;
      if (matched.length > 1) {
        this.log.warn(
          { identities: matched.map((i) => i.name), method, presented },
          'access denied: ambiguous',
        );
        throw new SealboxError(
          ErrorCode.ACCESS_DENIED,
          `the ${presented} matches identities ${matched.map((i) => `"${i.name}"`).join(' and ')}; ` +
            'a caller must be exactly one identity: make the certificate rules in access.identities distinct',
        );
      }
      identity = matched[0];
    } else {
      presented = `a caller on ${peer === 'socket' ? 'the envelope socket' : peer === 'tcp' ? 'TCP' : 'the admin socket'}`;
      identity = this.byPeer.get(peer);
    }
    if (!identity) {
      this.log.warn({ method, peer: call.getPeer(), presented }, 'access denied: unknown caller');
      throw new SealboxError(
        ErrorCode.ACCESS_DENIED,
        `${presented} is not an identity sealbox knows; add it to access.identities (peers or certificates)`,
      );
    }
    return identity;
  }

  private takeToken(identity: Identity): void {
    const wait = identity.rate?.take();
    if (wait === undefined) return;
    const { rate, burst } = identity.rate!;
    throw new SealboxError(
      ErrorCode.QUOTA_EXCEEDED,
      `identity "${identity.name}" is over its request rate (${rate}/s, burst ${burst}; ` +
        `access.identities.${identity.name}.limits); retry in ${wait} ms`,
    );
  }

  private keyAccess(identity: Identity, method: string): KeyAccess {
    const deny = (operation: KeyOperation, what: string): never => {
      this.log.warn({ identity: identity.name, method, operation, key: what }, 'access denied: key');
      throw new SealboxError(
        ErrorCode.ACCESS_DENIED,
        `identity "${identity.name}" may not ${operation} with ${what}; grant it in ` +
          `access.identities.${identity.name} (keys and operations)`,
      );
    };
    const refuseKmsKey = (operation: KeyOperation, what: string): never => {
      this.log.warn({ identity: identity.name, method, operation, key: what }, 'access denied: KMS key');
      throw new SealboxError(
        ErrorCode.ACCESS_DENIED,
        `${what} belongs to the Kubernetes KMS plugin (kms.alias "${this.reserved}"); the envelope API ` +
          "never uses it, for anyone: whoever could decrypt under it could open the API server's seeds. " +
          'Use a key of your own',
      );
    };
    return {
      checkAlias: (operation, alias) => {
        if (alias === this.reserved) refuseKmsKey(operation, `key alias "${alias}"`);
        if (!identity.may(operation, alias)) deny(operation, `key alias "${alias.slice(0, 64)}"`);
      },
      checkKeyId: (operation, keyId) => {
        // A key id no configured key owns is refused later with KEY_NOT_FOUND; only the operation
        // can be checked here.
        const aliases = this.aliasesOf(keyId);
        if (this.reserved !== undefined && aliases.includes(this.reserved))
          refuseKmsKey(operation, `key ${keyId.slice(0, 256)}`);
        const granted =
          aliases.length === 0
            ? identity.operations.has(operation)
            : aliases.some((alias) => identity.may(operation, alias));
        if (!granted) {
          deny(
            operation,
            `key ${keyId.slice(0, 256)}${aliases.length > 0 ? ` (alias ${aliases.map((a) => `"${a}"`).join(', ')})` : ''}`,
          );
        }
      },
    };
  }
}

function ruleMatches(rule: CertificateMatch, names: CertificateNames): boolean {
  if (rule.uri !== undefined) return names.uris.includes(rule.uri);
  if (rule.dns !== undefined) return names.dnsNames.includes(rule.dns);
  if (rule.commonName !== undefined) return names.commonNames.includes(rule.commonName);
  return false;
}

/** The URI and DNS subject alternative names and the subject CNs of a verified peer certificate. */
export function certificateNames(certificate: PeerCertificate): CertificateNames {
  const uris: string[] = [];
  const dnsNames: string[] = [];
  for (const entry of splitAltNames(certificate.subjectaltname ?? '')) {
    const colon = entry.indexOf(':');
    if (colon < 0) continue;
    const kind = entry.slice(0, colon);
    let value = entry.slice(colon + 1);
    // Node quotes (JSON-style) values that contain a comma or a quote.
    if (value.startsWith('"')) {
      try {
        value = JSON.parse(value) as string;
      } catch {
        continue;
      }
    }
    if (kind === 'URI') uris.push(value);
    else if (kind === 'DNS') dnsNames.push(value);
  }
  const cn = certificate.subject?.CN as string | string[] | undefined;
  const commonNames = cn === undefined ? [] : Array.isArray(cn) ? cn : [cn];
  return { uris, dnsNames, commonNames };
}

/** Splits Node's "DNS:a, URI:b" list, keeping quoted values (which may contain ", ") whole. */
function splitAltNames(text: string): string[] {
  const entries: string[] = [];
  let current = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === '"' && text[i - 1] !== '\\') quoted = !quoted;
    if (!quoted && ch === ',' && text[i + 1] === ' ') {
      entries.push(current);
      current = '';
      i++;
      continue;
    }
    current += ch;
  }
  if (current) entries.push(current);
  return entries;
}

function describeCertificate(names: CertificateNames): string {
  const parts = [
    ...names.commonNames.map((n) => `CN=${n}`),
    ...names.uris.map((n) => `URI:${n}`),
    ...names.dnsNames.map((n) => `DNS:${n}`),
  ];
  return parts.length > 0 ? `(${parts.join(', ').slice(0, 300)})` : '(no CN or SAN)';
}
