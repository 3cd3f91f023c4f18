/**
 * The one typed, validated configuration. Defaults live here and only here; no other module reads
 * process.env. Sources, lowest precedence first: defaults, a config file (JSON or YAML), environment
 * variables, command-line flags. Errors name the field and what is allowed.
 */
import { readFileSync } from 'node:fs';
import { extname, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';

const KiB = 1024;
const MiB = 1024 * KiB;

const size = (min: number, max: number) => z.number().int().min(min).max(max);

const localKey = z.object({
  provider: z.literal('local'),
  /** Path of the local key file (see src/kek/local.ts). */
  file: z.string().min(1),
});

/** True for https://host[:port] with nothing after it (a trailing slash is fine). */
function isVaultOrigin(text: string): boolean {
  try {
    const url = new URL(text);
    return (
      url.protocol === 'https:' &&
      !url.username &&
      !url.password &&
      !url.search &&
      !url.hash &&
      (url.pathname === '/' || url.pathname === '')
    );
  } catch {
    return false;
  }
}

/**
 * Microsoft Entra ID authority hosts of the Azure clouds, and the vault host suffixes each cloud serves.
 * Authority hosts: @azure/identity 4.13 `AzureAuthorityHosts` (src/constants.ts). Suffixes: Azure CLI's
 * built-in clouds (azure-cli-core `cloud.py`, `HARD_CODED_CLOUD_LIST`: `active_directory`, `keyvault_dns`,
 * `mhsm_dns` per cloud); Key Vault object ids (learn.microsoft.com/azure/key-vault/general/about-keys-secrets-and-certificates)
 * for the public cloud; "Access Azure Key Vault behind a firewall" on docs.azure.cn for China
 * (`*.vault.azure.cn` with `login.chinacloudapi.cn`). docs/azure.md "Clouds" lists them.
 */
export const AZURE_CLOUDS = {
  public: {
    authorityHost: 'https://login.microsoftonline.com',
    vaultSuffixes: ['.vault.azure.net', '.managedhsm.azure.net'],
  },
  china: {
    authorityHost: 'https://login.chinacloudapi.cn',
    vaultSuffixes: ['.vault.azure.cn', '.managedhsm.azure.cn'],
  },
  usgov: {
    authorityHost: 'https://login.microsoftonline.us',
    vaultSuffixes: ['.vault.usgovcloudapi.net', '.managedhsm.usgovcloudapi.net'],
  },
} as const;
export type AzureCloud = keyof typeof AZURE_CLOUDS;

/** The cloud a vault URL's host belongs to; 'dev' for loopback (the dev vault); undefined when unknown. */
export function vaultCloud(vaultUrl: string): AzureCloud | 'dev' | undefined {
  let host: string;
  try {
    host = new URL(vaultUrl).hostname.toLowerCase().replace(/^\[|\]$/g, '');
  } catch {
    return undefined;
  }
  if (isLoopback(host) || host.endsWith('.localhost')) return 'dev';
  for (const [cloud, { vaultSuffixes }] of Object.entries(AZURE_CLOUDS)) {
    if (vaultSuffixes.some((suffix) => host.endsWith(suffix))) return cloud as AzureCloud;
  }
  return undefined;
}

/** An https origin (no path other than "/", no query, no credentials), normalized: "https://host[:port]". */
function httpsOrigin(text: string): string | undefined {
  return isVaultOrigin(text) ? new URL(text).origin : undefined;
}

/** The cloud whose authority host `origin` is, if any. */
function cloudOfAuthority(origin: string): AzureCloud | undefined {
  const found = Object.entries(AZURE_CLOUDS).find(([, c]) => c.authorityHost === origin);
  return found?.[0] as AzureCloud | undefined;
}

const azureCredential = z
  .object({
    /** default: DefaultAzureCredential (workload identity, then managed identity, …); static-token: dev vault only. */
    kind: z.enum(['default', 'workload-identity', 'managed-identity', 'static-token']).default('default'),
    clientId: z.string().min(1).optional(),
    tenantId: z.string().min(1).optional(),
    /** workload-identity: the projected token file; static-token: a file holding the token. */
    tokenFile: z.string().min(1).optional(),
    /** static-token only; prefer tokenFile. */
    token: z.string().min(1).optional(),
    /** The Azure cloud whose Entra ID signs in; checked against the vault URL. */
    cloud: z.enum(['public', 'china', 'usgov']).optional(),
    /** An explicit Entra ID authority host (https://host[:port]); instead of cloud. */
    authorityHost: z
      .string()
      .refine(
        (t) => httpsOrigin(t) !== undefined,
        'authorityHost must be https://host[:port], nothing after it',
      )
      .optional(),
    /**
     * Skip MSAL's instance discovery (a request to login.microsoftonline.com about the authority). Unset:
     * skipped exactly when authorityHost is not one of the Azure clouds' hosts (the dev vault, Azure Stack),
     * which discovery would refuse as an untrusted authority.
     */
    disableInstanceDiscovery: z.boolean().optional(),
    /** PEM CA the authority host's TLS certificate chains to (the dev vault's Entra ID); replaces the default CAs for Entra ID only. */
    authorityCaFile: z.string().min(1).optional(),
  })
  .refine((c) => c.kind !== 'static-token' || c.token !== undefined || c.tokenFile !== undefined, {
    message: 'a static-token credential needs token or tokenFile',
    path: ['token'],
  })
  .refine((c) => c.kind === 'static-token' || c.token === undefined, {
    message: 'token is only allowed with kind: static-token (the local dev vault)',
    path: ['token'],
  })
  .refine((c) => c.cloud === undefined || c.authorityHost === undefined, {
    message: 'set cloud or authorityHost, not both (cloud names the authority host)',
    path: ['authorityHost'],
  })
  .refine(
    (c) =>
      c.kind !== 'static-token' ||
      (c.cloud === undefined &&
        c.authorityHost === undefined &&
        c.authorityCaFile === undefined &&
        c.disableInstanceDiscovery === undefined),
    {
      message:
        'cloud, authorityHost, authorityCaFile and disableInstanceDiscovery need an Entra ID credential, not static-token',
      path: ['kind'],
    },
  )
  .refine((c) => c.authorityCaFile === undefined || c.authorityHost !== undefined, {
    message: "authorityCaFile needs authorityHost: the Azure clouds' authorities use public CAs",
    path: ['authorityCaFile'],
  });

/** The authority host a credential config names (cloud or authorityHost), normalized; undefined: the SDK's default. */
export function configuredAuthorityHost(c: {
  readonly cloud?: AzureCloud | undefined;
  readonly authorityHost?: string | undefined;
}): string | undefined {
  if (c.authorityHost !== undefined) return httpsOrigin(c.authorityHost);
  return c.cloud === undefined ? undefined : AZURE_CLOUDS[c.cloud].authorityHost;
}

/** Whether MSAL's instance discovery is skipped for this credential config (see disableInstanceDiscovery). */
export function instanceDiscoveryDisabled(c: {
  readonly authorityHost?: string | undefined;
  readonly disableInstanceDiscovery?: boolean | undefined;
}): boolean {
  if (c.disableInstanceDiscovery !== undefined) return c.disableInstanceDiscovery;
  const origin = c.authorityHost === undefined ? undefined : httpsOrigin(c.authorityHost);
  return origin !== undefined && cloudOfAuthority(origin) === undefined;
}

/**
 * The cloud check: the authority a key's credential signs in to must be the cloud its vault is in
 * (a public-cloud token is refused by a China vault, and the other way round). Returns the problem, or
 * undefined. Loopback (dev vault) URLs accept any explicit authorityHost; hosts of no known cloud
 * (custom DNS) are not checked.
 */
export function cloudMismatch(
  vaultUrl: string,
  credential: { readonly cloud?: AzureCloud | undefined; readonly authorityHost?: string | undefined },
): string | undefined {
  const authority = configuredAuthorityHost(credential);
  if (authority === undefined) return undefined;
  const vault = vaultCloud(vaultUrl);
  if (vault === undefined || vault === 'dev') return undefined;
  if (authority === AZURE_CLOUDS[vault].authorityHost) return undefined;
  const named =
    credential.cloud !== undefined
      ? `cloud ${credential.cloud} (${authority})`
      : `authorityHost ${authority}`;
  return (
    `the credential signs in at ${named}, but vaultUrl ${vaultUrl} is a vault of the ${vault} cloud, whose ` +
    `Entra ID is ${AZURE_CLOUDS[vault].authorityHost}: set credential.cloud: ${vault} (or remove cloud/authorityHost), ` +
    'or correct vaultUrl'
  );
}

const azureKey = z
  .object({
    provider: z.literal('azure'),
    /** https://{name}.vault.azure.net, https://{name}.managedhsm.azure.net, or the dev vault's URL. */
    vaultUrl: z
      .string()
      .refine(isVaultOrigin, 'vaultUrl must be https://host[:port], with no path, query or credentials'),
    keyName: z.string().regex(/^[0-9A-Za-z-]{1,127}$/, 'keyName must be 1-127 letters, digits or dashes'),
    credential: azureCredential.prefault({}),
    /** PEM CA the vault's TLS certificate chains to (dev vault); replaces the default CAs for this vault only. */
    caFile: z.string().min(1).optional(),
    retry: z
      .object({
        maxAttempts: size(1, 10).default(3),
        baseDelayMs: size(0, 60_000).default(250),
        maxDelayMs: size(0, 120_000).default(4_000),
        /** Deadline per vault call, all attempts and waits included. */
        timeoutMs: size(100, 300_000).default(10_000),
      })
      .refine((r) => r.maxDelayMs >= r.baseDelayMs, {
        message: 'must be >= retry.baseDelayMs',
        path: ['maxDelayMs'],
      })
      .prefault({}),
  })
  .superRefine((key, ctx) => {
    const problem = cloudMismatch(key.vaultUrl, key.credential);
    if (problem) ctx.addIssue({ code: 'custom', path: ['credential', 'cloud'], message: problem });
  });

/** True for addresses that never leave the machine. */
function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

const tcpListener = z.object({
  host: z.string().min(1).default('127.0.0.1'),
  port: z.number().int().min(0).max(65535),
});

/** TLS for the gRPC TCP listener; with clientCaFile, clients must present a certificate (mTLS). */
const grpcTls = z.strictObject({
  /** PEM certificate chain the server presents. */
  certFile: z.string().min(1),
  /** PEM private key of that certificate. */
  keyFile: z.string().min(1),
  /**
   * PEM CA bundle client certificates must chain to. When set, a client without a valid certificate
   * cannot connect, and access.identities can match callers by their certificate.
   */
  clientCaFile: z.string().min(1).nullable().default(null),
});

const grpcTcpListener = tcpListener
  .extend({
    tls: grpcTls.nullable().default(null),
    /**
     * Serve gRPC server reflection on this listener too (see listen.reflection). Off by default: a TCP
     * listener is the one reachable from beyond the pod, where an API that describes itself to anyone
     * who connects is what scanners flag, and clients there can ship proto/ instead.
     */
    reflection: z.boolean().default(false),
  })
  .refine((t) => t.tls !== null || isLoopback(t.host), {
    message:
      'listen.tcp.host is not a loopback address (127.0.0.0/8, ::1, localhost), so listen.tcp.tls is required: ' +
      'sealbox refuses to serve keys in plaintext beyond this machine — set tls.certFile and tls.keyFile ' +
      '(and tls.clientCaFile for mTLS), or keep TCP on loopback',
    path: ['tls'],
  });

/** A Unix socket's group: a numeric gid or a group name from /etc/group; null keeps the process's group. */
const socketGroup = z
  .union([
    z
      .number()
      .int()
      .min(0)
      .max(2 ** 32 - 2),
    z.string().regex(/^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$/, 'a group name or a numeric gid'),
  ])
  .nullable()
  .default(null);

const KEY_ALIAS = /^[A-Za-z0-9._-]{1,64}$/;

/** What an access policy can grant on a key alias. */
export const KEY_OPERATIONS = ['encrypt', 'decrypt', 'rewrap'] as const;
export type KeyOperation = (typeof KEY_OPERATIONS)[number];

/**
 * How a caller without a client certificate arrives: on the envelope Unix socket, over TCP (loopback,
 * or TLS without a client certificate), or on the admin socket. A caller that presents a certificate is
 * matched by `certificates` rules only: if none matches, it is refused, never taken for peer "tcp".
 */
export const PEER_KINDS = ['socket', 'tcp', 'admin-socket'] as const;
export type PeerKind = (typeof PEER_KINDS)[number];

/** One client-certificate rule: exactly one field, compared exactly. */
const certificateMatch = z
  .strictObject({
    /** A URI subject alternative name, e.g. a SPIFFE id spiffe://cluster.local/ns/billing/sa/api. */
    uri: z.string().min(1).optional(),
    /** A DNS subject alternative name. */
    dns: z.string().min(1).optional(),
    /** The subject's common name (CN). */
    commonName: z.string().min(1).optional(),
  })
  .refine((m) => Object.values(m).filter((v) => v !== undefined).length === 1, {
    message: 'a certificate rule has exactly one of uri, dns, commonName',
  });
export type CertificateMatch = z.infer<typeof certificateMatch>;

const identity = z
  .strictObject({
    /** Callers without a client certificate that arrive this way are this identity. */
    peers: z.array(z.enum(PEER_KINDS)).default([]),
    /** Callers whose client certificate matches any of these are this identity. */
    certificates: z.array(certificateMatch).default([]),
    /** Key aliases the identity may use; "*" for all. */
    keys: z.array(z.string().refine((k) => k === '*' || KEY_ALIAS.test(k), 'a key alias or "*"')).default([]),
    /** What it may do with those keys. */
    operations: z.array(z.enum(KEY_OPERATIONS)).default([]),
    /** May call the Admin service (cache flush, key revocation, key status). */
    admin: z.boolean().default(false),
    limits: z
      .strictObject({
        /** Streaming calls this identity may have open at once; beyond it, RESOURCE_EXHAUSTED. */
        maxConcurrentStreams: size(1, 1_000_000).nullable().default(null),
        /** Calls (unary calls and stream starts) per second, sustained; beyond it, RESOURCE_EXHAUSTED. */
        requestsPerSecond: z.number().positive().max(1_000_000).nullable().default(null),
        /** Calls allowed in a burst above the rate; default: one second's worth. */
        burst: size(1, 10_000_000).nullable().default(null),
      })
      .refine((l) => l.burst === null || l.requestsPerSecond !== null, {
        message: 'burst needs requestsPerSecond',
        path: ['burst'],
      })
      .prefault({}),
  })
  .refine((i) => i.peers.length > 0 || i.certificates.length > 0, {
    message: 'an identity needs peers or certificates: otherwise no caller can be it',
    path: ['peers'],
  });
export type AccessIdentity = z.infer<typeof identity>;

export const configSchema = z
  .object({
    /** Directory for sealbox's own state (dev keys, sockets in dev mode). */
    dataDir: z.string().min(1).default('./.sealbox'),
    listen: z
      .object({
        /** Unix socket path; null disables it. */
        socket: z.string().min(1).nullable().default('/run/sealbox/sealbox.sock'),
        /** Permission bits of the socket file (0660 with socketGroup shares it with one group). */
        socketMode: z.number().int().min(0).max(0o777).default(0o600),
        /** Group of the socket file. */
        socketGroup,
        /**
         * Serve gRPC server reflection (grpc.reflection.v1 and v1alpha: the services' schema, for
         * grpcurl list/describe without the proto files) on the Unix sockets, the envelope socket and
         * the admin socket. On by default: only processes that can open the socket reach it, and they
         * may call the services anyway. Callers must still be an identity (access.identities). The TCP
         * listener has its own switch, listen.tcp.reflection, off by default.
         */
        reflection: z.boolean().default(true),
        /** Optional TCP listener: loopback without TLS, any address with TLS. */
        tcp: grpcTcpListener.nullable().default(null),
        /** Unix socket of the Admin service (cache flush, key revocation); null disables it. */
        adminSocket: z.string().min(1).nullable().default(null),
        adminSocketMode: z.number().int().min(0).max(0o777).default(0o600),
        adminSocketGroup: socketGroup,
      })
      .prefault({})
      .refine((l) => l.socket !== null || l.tcp !== null, 'listen needs a socket or a tcp listener'),
    /** Key aliases callers may name, each bound to a KEK provider. */
    keys: z
      .record(
        z.string().regex(KEY_ALIAS, 'key aliases are 1-64 of A-Z a-z 0-9 . _ -'),
        z.discriminatedUnion('provider', [localKey, azureKey]),
      )
      .default({}),
    envelope: z
      .object({
        defaultChunkSize: size(4 * KiB, 4 * MiB).default(64 * KiB),
        unaryMaxBytes: size(1, 64 * MiB).default(4 * MiB),
        /**
         * Bytes of unary requests allowed to wait for the in-flight budget (stream.maxInFlightBytes);
         * beyond it a unary call is refused at once with RESOURCE_EXHAUSTED (OVERLOADED) so its
         * already-decoded request is freed, not held. Memory for unary calls is bounded by
         * maxInFlightBytes + this.
         */
        unaryQueueBytes: size(0, 4096 * MiB).default(32 * MiB),
        /**
         * Unary requests received at once: further calls wait, paused, before grpc-js reads their
         * request (server/admission.ts); their memory is bounded by this × stream.maxMessageBytes.
         */
        unaryReadConcurrency: size(1, 4096).default(16),
        /**
         * Unary calls waiting for a read slot at most; beyond it RESOURCE_EXHAUSTED / OVERLOADED at once.
         * A waiting call holds its headers and at most one HTTP/2 stream window of request data (64 KiB
         * unless stream.http2WindowBytes), so this bounds what bursts of waiting calls can hold; a burst
         * of 10,000 small records must fit.
         */
        unaryReadQueue: size(0, 1_000_000).default(16_384),
        /** Target plaintext bytes per pool task. */
        batchBytes: size(4 * KiB, 16 * MiB).default(1 * MiB),
        /**
         * EncryptBatch / DecryptBatch: items per call at most; beyond it the call is refused with
         * RESOURCE_EXHAUSTED (LIMIT_EXCEEDED) before any work.
         */
        batchMaxItems: size(1, 100_000).default(1000),
        /**
         * EncryptBatch: plaintext bytes per call at most (all items together). DecryptBatch takes this
         * many ciphertext bytes plus each item's header and tags (envelope/batch.ts).
         */
        batchMaxBytes: size(1, 64 * MiB).default(4 * MiB),
      })
      .prefault({}),
    stream: z
      .object({
        /** Segments (pool tasks) one stream may have in flight before it stops reading. */
        maxInFlightSegments: size(1, 256).default(4),
        /** Bytes in flight across all calls before calls wait. */
        maxInFlightBytes: size(1 * MiB, 4096 * MiB).default(128 * MiB),
        /** Largest gRPC message the server accepts (unary requests and stream messages). */
        maxMessageBytes: size(64 * KiB, 256 * MiB).default(8 * MiB),
        /**
         * HTTP/2 flow-control window the server advertises (per stream and per connection); 0 keeps
         * grpc-js's 64 KiB. Capped at 128 KiB: larger windows stalled Node-to-Node HTTP/2 on Unix
         * sockets in testing (bench/PERF-NOTES.md).
         */
        http2WindowBytes: size(0, 128 * KiB).default(0),
        /** Largest data message the server sends; longer output is split. */
        writeMessageBytes: size(4 * KiB, 4 * MiB).default(2 * MiB),
        /** Streaming calls open at once across all callers; beyond it, new streams get RESOURCE_EXHAUSTED. */
        maxConcurrentStreams: size(1, 1_000_000).default(1024),
        /**
         * A stream that neither receives nor sends a message for this long ends with DEADLINE_EXCEEDED,
         * releasing what it holds (a client that went away without closing); 0 = no idle limit.
         */
        idleTimeoutMs: size(0, 24 * 3600_000).default(300_000),
      })
      .prefault({}),
    /**
     * Who may do what. null (the default): every caller of the envelope socket and TCP listener may use
     * every key for every operation, and only admin-socket callers may call Admin — the file mode of the
     * sockets is the access control. With identities, a caller that is none of them is refused, and each
     * identity gets only the keys, operations and limits listed.
     */
    access: z
      .object({
        identities: z.record(
          z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'identity names are 1-64 of A-Z a-z 0-9 . _ -'),
          identity,
        ),
      })
      .nullable()
      .default(null),
    cache: z
      .object({
        /** false: one vault call per operation (the benchmark's baseline). */
        enabled: z.boolean().default(true),
        /** Distinct vault calls in flight at once; beyond that callers queue (with their deadline). */
        maxConcurrentVaultCalls: size(1, 1024).default(16),
        encrypt: z
          .object({
            /** Required bound on how long one DEK seals new messages. */
            maxAgeMs: size(100, 24 * 3600_000).default(300_000),
            maxMessages: size(1, 2 ** 32).default(1_000_000),
            /** Plaintext bytes sealed under one DEK (streams count as they pass). */
            maxBytes: size(1 * MiB, 2 ** 40).default(2 ** 36),
            /** Fraction of any budget at which a replacement DEK is wrapped in the background; 0 = off. */
            refreshAhead: z
              .number()
              .refine((v) => v === 0 || (v >= 0.5 && v <= 0.95), 'refreshAhead is 0 (off) or 0.5..0.95')
              .default(0.75),
          })
          .prefault({}),
        decrypt: z
          .object({
            maxEntries: size(1, 1_000_000).default(10_000),
            ttlMs: size(100, 24 * 3600_000).default(300_000),
          })
          .prefault({}),
      })
      .prefault({}),
    /** Azure Event Grid webhook (push revocation); off unless `listen` is set. */
    webhook: z
      .object({
        listen: tcpListener.nullable().default(null),
        /** Shared secret: the `secret` query parameter of the subscription URL (or a Bearer token). */
        secret: z.string().min(16, 'webhook.secret must be at least 16 characters').nullable().default(null),
        secretFile: z.string().min(1).nullable().default(null),
        /**
         * Serve HTTPS with this certificate: Event Grid delivers only to https:// endpoints, so without
         * it TLS must be terminated in front of sealbox (ingress, mesh).
         */
        tls: z
          .strictObject({ certFile: z.string().min(1), keyFile: z.string().min(1) })
          .nullable()
          .default(null),
      })
      .refine((w) => w.listen === null || w.secret !== null || w.secretFile !== null, {
        message: 'webhook.listen needs webhook.secret or webhook.secretFile',
        path: ['secret'],
      })
      .refine((w) => w.listen === null || w.tls !== null || isLoopback(w.listen.host), {
        message:
          'webhook.listen.host is not a loopback address, so webhook.tls is required: the shared secret would ' +
          'cross the network in cleartext — set webhook.tls.certFile and keyFile (Event Grid delivers only to ' +
          'https:// endpoints anyway), or keep the webhook on loopback behind a TLS terminator',
        path: ['tls'],
      })
      .prefault({}),
    /**
     * Prometheus metrics and HTTP probes: one plain-HTTP listener serving /metrics, /healthz (the process
     * is up) and /readyz (200 while the gRPC health status of "" is SERVING). null (the default) turns
     * metrics off: no listener, no RPC interceptor. Enable with e.g. `{ port: 9464 }` (loopback unless a
     * host is given; set host 0.0.0.0 for a scrape from outside the pod), flag --metrics or SEALBOX_METRICS.
     */
    metrics: z.object({ listen: tcpListener.nullable().default(null) }).prefault({}),
    /** The key watcher and the key-state model (docs/SECURITY.md "Key state", docs/operations.md "Fleet budget"). */
    revocation: z
      .object({
        /** How often the key watcher reads the versions that matter (jittered ±10 %); it also reads them once at start. */
        pollIntervalMs: size(1000, 24 * 3600_000).default(30_000),
        /**
         * A 403 naming a missing permission revokes only if the same operation is still refused this long
         * after the first refusal (a confirming check runs then), with no success in between: Azure sends
         * transient 403s while access policies and RBAC assignments propagate.
         */
        refusalConfirmMs: size(0, 3600_000).default(60_000),
        /** Vault requests per second the key watcher makes at most (polls and confirming checks). */
        maxChecksPerSecond: z.number().positive().max(10_000).default(5),
        /** Vault requests the key watcher has in flight at most. */
        maxConcurrentChecks: size(1, 256).default(4),
        /** Key versions whose state is tracked at most (only versions the vault vouched for are tracked). */
        maxTrackedVersions: size(16, 1_000_000).default(4096),
        /** Versions the vault said do not exist: answered KEY_NOT_FOUND without another vault call. */
        unknownVersions: z
          .object({
            maxEntries: size(1, 1_000_000).default(4096),
            ttlMs: size(1000, 24 * 3600_000).default(60_000),
          })
          .prefault({}),
        /**
         * Also refuse decryption under a version outside its nbf/exp window. Key Vault allows unwrap
         * outside the window so data stays recoverable; sealbox does the same unless this is true.
         */
        refuseDecryptOutsideValidity: z.boolean().default(false),
      })
      .prefault({}),
    pool: z
      .object({
        /**
         * Where AES runs. "workers": batches go to piscina threads, the main thread does I/O only.
         * "inline": on the main thread. "auto" (default): inline when sealbox may use ≤ 2 cores
         * (CPU affinity and cgroup quota, pool.ts effectiveCores), where workers lost to inline
         * (client, main thread and workers compete for the same cores; bench/pool.ts); workers above.
         */
        mode: z.enum(['auto', 'workers', 'inline']).default('auto'),
        /**
         * Worker threads. null (default): one per core sealbox may use — CPU affinity lowered to the
         * cgroup CPU quota (pool/cores.ts poolThreads) — resolved where the pool is built, since this
         * module reads no files.
         */
        threads: size(1, 256).nullable().default(null),
        maxQueue: size(1, 1_000_000).default(1024),
        inlineBelowBytes: size(0, 64 * MiB).default(64 * KiB),
      })
      .prefault({}),
    log: z
      .object({
        level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      })
      .prefault({}),
    shutdown: z.object({ graceMs: size(0, 600_000).default(15_000) }).prefault({}),
    /** The Kubernetes KMS v2 plugin face (docs/kms.md): off unless `socket` is set. */
    kms: z
      .object({
        /** Unix socket kube-apiserver's EncryptionConfiguration names (endpoint unix://…); null: off. */
        socket: z.string().min(1).nullable().default(null),
        socketMode: z.number().int().min(0).max(0o777).default(0o600),
        socketGroup,
        /** The key alias Secrets are encrypted under; null: the only configured key. */
        alias: z.string().min(1).nullable().default(null),
      })
      .prefault({}),
  })
  .superRefine((config, ctx) => {
    // One owner per key id: two aliases naming one key would both own its key ids, and a grant on
    // one alias would decrypt the other's data. (Two local files with the same "name" inside are
    // caught when the files are read, kek/registry.ts.)
    const keyOwner = new Map<string, string>();
    for (const [alias, key] of Object.entries(config.keys)) {
      const ref =
        key.provider === 'azure'
          ? `azure ${new URL(key.vaultUrl).host}/keys/${key.keyName.toLowerCase()}`
          : `local file ${resolve(key.file)}`;
      const owner = keyOwner.get(ref);
      if (owner !== undefined) {
        ctx.addIssue({
          code: 'custom',
          path: ['keys', alias],
          message:
            `keys.${owner} and keys.${alias} name the same key (${ref}); each key may have one alias, or a ` +
            'grant on one alias would reach the data of the other',
        });
      }
      keyOwner.set(ref, alias);
    }
    const access = config.access;
    if (!access) return;
    const peerOwner = new Map<string, string>();
    const certificateOwner = new Map<string, string>();
    for (const [name, id] of Object.entries(access.identities)) {
      const path = ['access', 'identities', name];
      for (const alias of id.keys) {
        if (alias !== '*' && !(alias in config.keys)) {
          ctx.addIssue({
            code: 'custom',
            path: [...path, 'keys'],
            message: `"${alias}" is not a configured key alias (keys: ${Object.keys(config.keys).join(', ') || 'none'})`,
          });
        }
      }
      for (const peer of id.peers) {
        const owner = peerOwner.get(peer);
        if (owner) {
          ctx.addIssue({
            code: 'custom',
            path: [...path, 'peers'],
            message: `peer "${peer}" is already identity "${owner}"; a caller must be exactly one identity`,
          });
        }
        peerOwner.set(peer, name);
      }
      for (const rule of id.certificates) {
        const key = JSON.stringify(rule);
        const owner = certificateOwner.get(key);
        if (owner) {
          ctx.addIssue({
            code: 'custom',
            path: [...path, 'certificates'],
            message: `certificate rule ${key} already belongs to identity "${owner}"`,
          });
        }
        certificateOwner.set(key, name);
      }
    }
    if (certificateOwner.size > 0 && !config.listen.tcp?.tls?.clientCaFile) {
      ctx.addIssue({
        code: 'custom',
        path: ['listen', 'tcp', 'tls', 'clientCaFile'],
        message:
          'access.identities match client certificates, but no listener asks for one: set listen.tcp.tls.clientCaFile',
      });
    }
  })
  .superRefine((config, ctx) => {
    if (config.kms.socket === null) return;
    const aliases = Object.keys(config.keys);
    if (config.kms.alias === null && aliases.length !== 1) {
      ctx.addIssue({
        code: 'custom',
        path: ['kms', 'alias'],
        message: `kms.socket is set and ${aliases.length} keys are configured: name the one Kubernetes uses in kms.alias (keys: ${aliases.join(', ') || 'none'})`,
      });
    }
    if (config.kms.alias !== null && !(config.kms.alias in config.keys)) {
      ctx.addIssue({
        code: 'custom',
        path: ['kms', 'alias'],
        message: `"${config.kms.alias}" is not a configured key alias (keys: ${aliases.join(', ') || 'none'})`,
      });
    }
    const reserved = kmsAlias(config);
    for (const [name, id] of Object.entries(config.access?.identities ?? {})) {
      if (reserved !== undefined && id.keys.includes(reserved)) {
        ctx.addIssue({
          code: 'custom',
          path: ['access', 'identities', name, 'keys'],
          message:
            `"${reserved}" is the Kubernetes KMS plugin's key (kms.alias); envelope callers never get it: ` +
            "whoever could decrypt under it could open the API server's seeds. Give them a key of their own",
        });
      }
    }
    if (!config.cache.enabled) {
      ctx.addIssue({
        code: 'custom',
        path: ['kms', 'socket'],
        message:
          'the KMS plugin needs cache.enabled: true (its Status answers from the key watcher, which runs with the cache)',
      });
    }
  });

/** The key alias the KMS plugin uses (kms.alias, or the only configured key); undefined when it is off. */
export function kmsAlias(config: Pick<Config, 'kms' | 'keys'>): string | undefined {
  if (config.kms.socket === null) return undefined;
  return config.kms.alias ?? Object.keys(config.keys)[0];
}

export type Config = z.infer<typeof configSchema>;
export type ConfigInput = z.input<typeof configSchema>;

/** A configuration error; the message names the field. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

/** Flags and environment variables that set a field, and how their text becomes a value. */
const overrides: Array<{ flag: string; env: string; path: string[]; parse: (s: string) => unknown }> = [
  { flag: 'data-dir', env: 'SEALBOX_DATA_DIR', path: ['dataDir'], parse: String },
  {
    flag: 'socket',
    env: 'SEALBOX_SOCKET',
    path: ['listen', 'socket'],
    parse: (s) => (s === '' || s === 'none' ? null : s),
  },
  { flag: 'tcp', env: 'SEALBOX_TCP', path: ['listen', 'tcp'], parse: parseHostPort },
  { flag: 'log-level', env: 'SEALBOX_LOG_LEVEL', path: ['log', 'level'], parse: String },
  { flag: 'pool-mode', env: 'SEALBOX_POOL_MODE', path: ['pool', 'mode'], parse: String },
  { flag: 'pool-threads', env: 'SEALBOX_POOL_THREADS', path: ['pool', 'threads'], parse: Number },
  { flag: 'metrics', env: 'SEALBOX_METRICS', path: ['metrics', 'listen'], parse: parseHostPort },
  {
    flag: 'kms-socket',
    env: 'SEALBOX_KMS_SOCKET',
    path: ['kms', 'socket'],
    parse: (s) => (s === '' || s === 'none' ? null : s),
  },
  { flag: 'kms-alias', env: 'SEALBOX_KMS_ALIAS', path: ['kms', 'alias'], parse: String },
];

/** The flags loadConfig understands, for CLI help and parseArgs. */
export const configFlags = ['config', ...overrides.map((o) => o.flag)];

export interface ConfigSources {
  /** Parsed flag values by flag name (strings), e.g. from util.parseArgs. */
  readonly flags?: Readonly<Record<string, string | undefined>>;
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Values the calling command sets before the file (e.g. `sealbox dev` defaults). */
  readonly base?: ConfigInput;
}

/** Builds the effective Config from all sources. Throws ConfigError naming the bad field. */
export function loadConfig(sources: ConfigSources = {}): Config {
  const env = sources.env ?? {};
  const flags = sources.flags ?? {};
  const raw: Record<string, unknown> = structuredClone((sources.base ?? {}) as Record<string, unknown>);
  const file = flags['config'] ?? env['SEALBOX_CONFIG'];
  if (file) deepMerge(raw, readConfigFile(file));
  for (const o of overrides) {
    const fromEnv = env[o.env];
    if (fromEnv !== undefined)
      setPath(raw, o.path, parseOrThrow(o.parse, fromEnv, `environment variable ${o.env}`));
  }
  for (const o of overrides) {
    const fromFlag = flags[o.flag];
    if (fromFlag !== undefined) setPath(raw, o.path, parseOrThrow(o.parse, fromFlag, `flag --${o.flag}`));
  }
  return validateConfig(raw);
}

/** Validates a raw object against the schema. */
export function validateConfig(raw: unknown): Config {
  const result = configSchema.safeParse(raw);
  if (result.success) return result.data;
  const lines = result.error.issues.map((issue) => {
    const path = issue.path.join('.') || '(root)';
    return `${path}: ${issue.message}`;
  });
  throw new ConfigError(`invalid configuration:\n  ${lines.join('\n  ')}`);
}

function readConfigFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${path}: ${(err as Error).message}`);
  }
  try {
    const value = ['.yaml', '.yml'].includes(extname(path)) ? parseYaml(text) : JSON.parse(text);
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw new Error('top level must be an object');
    return value as Record<string, unknown>;
  } catch (err) {
    throw new ConfigError(
      `config file ${path} is not valid ${extname(path) === '.json' ? 'JSON' : 'YAML/JSON'}: ${(err as Error).message}`,
    );
  }
}

function parseHostPort(text: string): unknown {
  if (text === '' || text === 'none') return null;
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(text) ?? /^()()(\d+)$/.exec(text);
  if (!match) throw new Error('expected host:port or port');
  return { host: match[1] || match[2] || '127.0.0.1', port: Number(match[3]) };
}

function parseOrThrow(parse: (s: string) => unknown, text: string, where: string): unknown {
  try {
    return parse(text);
  } catch (err) {
    throw new ConfigError(`${where}: ${(err as Error).message}`);
  }
}

/** Sets `path` to `value`; an object value is merged into an object already there (--tcp keeps tls). */
function setPath(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (next === null || typeof next !== 'object') node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  const last = path[path.length - 1]!;
  const existing = node[last];
  if (isPlainObject(value) && isPlainObject(existing)) deepMerge(existing, value);
  else node[last] = value;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * `base` with `overrides` deep-merged over it (objects merge key by key, anything else replaces);
 * neither argument changes. For callers that layer config inputs (tests, benchmarks, `sealbox dev`).
 */
export function mergeConfigInput(base: ConfigInput, overrides: ConfigInput): ConfigInput {
  const out = structuredClone(base) as Record<string, unknown>;
  deepMerge(out, structuredClone(overrides) as Record<string, unknown>);
  return out as ConfigInput;
}

function deepMerge(target: Record<string, unknown>, source: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(source)) {
    const existing = target[key];
    if (
      value &&
      typeof value === 'object' &&
      !Array.isArray(value) &&
      existing &&
      typeof existing === 'object'
    ) {
      deepMerge(existing as Record<string, unknown>, value as Record<string, unknown>);
    } else {
      target[key] = value;
    }
  }
}
