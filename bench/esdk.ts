/**
 * sealbox next to the AWS Encryption SDK for JavaScript (@aws-crypto/client-node) on the same
 * payloads, in one run: 1 MiB messages. The ESDK runs in this process, one message at a time, with a
 * RawAesKeyringNode (AES-256-GCM wrapping) behind a NodeCachingMaterialsManager over
 * getLocalCryptographicMaterialsCache — the ESDK's own data-key cache, given sealbox's default
 * budgets (5 min, 1,000,000 messages, 2^36 bytes) — and commitment policy
 * REQUIRE_ENCRYPT_REQUIRE_DECRYPT. Three ESDK configurations:
 *   - its default suite (committing, ECDSA P-384 signature per message) and default 4 KiB frames;
 *   - the committing suite without signature (what sealbox's format is closest to), 4 KiB frames;
 *   - the same with 64 KiB frames (sealbox's default chunk size).
 * sealbox: EncryptStream, 1 stream, 1 MiB data messages, over gRPC on a Unix socket (the throughput
 * machinery: bench/stream-client.ts in its own process), default config with a local key. Reports
 * MB/s and CPU s/GB, and sealbox ÷ ESDK. The ESDK figure is one core in one process with no
 * transport; sealbox's spends two processes and a gRPC hop. Writes bench/results/esdk-<ts>.{json,svg}.
 *
 *   node <build>/bench/esdk.js [--tiny|--quick|--full] [--seconds N] [--warmup N] [--message-bytes B]
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import {
  AlgorithmSuiteIdentifier,
  buildClient,
  CommitmentPolicy,
  getLocalCryptographicMaterialsCache,
  NodeCachingMaterialsManager,
  NodeDefaultCryptographicMaterialsManager,
  type NodeMaterialsManager,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
} from '@aws-crypto/client-node';
import { writeRatioChart } from './lib/chart';
import { runStreamClient } from './lib/driver';
import { runMain } from './lib/proc';
import { numberFlag, PROFILE_OPTIONS, pickProfile } from './lib/profile';
import {
  environment,
  fixed,
  mbps,
  progress,
  type Ratio,
  ratioOf,
  ratioTable,
  table,
  timestamp,
  writeRun,
} from './lib/report';
import { BENCH_KEY_ALIAS, spawnSealbox } from './lib/servers';

const MiB = 1024 * 1024;

function options() {
  const { values } = parseArgs({
    options: {
      ...PROFILE_OPTIONS,
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      'message-bytes': { type: 'string', default: String(MiB) },
    },
  });
  const profile = pickProfile(values);
  return {
    profile,
    seconds: numberFlag('seconds', values.seconds, { tiny: 0.5, quick: 3, full: 10 }[profile]),
    warmup: numberFlag('warmup', values.warmup, { tiny: 0.2, quick: 1, full: 2 }[profile]),
    messageBytes: Math.max(1, Math.floor(numberFlag('message-bytes', values['message-bytes'], MiB))),
  };
}

interface EsdkCase {
  readonly id: string;
  readonly label: string;
  readonly suiteId: AlgorithmSuiteIdentifier;
  readonly frameLength: number;
}

const CASES: EsdkCase[] = [
  {
    id: 'esdk-default',
    label: 'ESDK default: committing + ECDSA P-384, 4 KiB frames',
    suiteId: AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY_ECDSA_P384,
    frameLength: 4096,
  },
  {
    id: 'esdk-unsigned-4k',
    label: 'ESDK committing, no signature, 4 KiB frames',
    suiteId: AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY,
    frameLength: 4096,
  },
  {
    id: 'esdk-unsigned-64k',
    label: 'ESDK committing, no signature, 64 KiB frames',
    suiteId: AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY,
    frameLength: 64 * 1024,
  },
];

interface EsdkResult {
  readonly id: string;
  readonly label: string;
  readonly frameLength: number;
  readonly suiteId: number;
  readonly bytesPerSecond: number;
  readonly cpuSecondsPerGB: number;
  readonly messages: number;
  /** Data-key generations the caching CMM asked its backing CMM for (1 = the cache served the rest). */
  readonly backingMaterialsCalls: number;
  readonly ciphertextOverheadBytes: number;
  /** One ciphertext decrypted back to the input (outside the window). */
  readonly verified: boolean;
}

async function runEsdk(
  c: EsdkCase,
  seconds: number,
  warmup: number,
  messageBytes: number,
): Promise<EsdkResult> {
  const { encrypt, decrypt } = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT);
  const keyring = new RawAesKeyringNode({
    keyName: 'bench-key',
    keyNamespace: 'sealbox-bench',
    unencryptedMasterKey: randomBytes(32),
    wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
  });
  // Counts what reaches the keyring through the cache: one generation per cache entry.
  const backing = new NodeDefaultCryptographicMaterialsManager(keyring);
  let backingMaterialsCalls = 0;
  const counting: NodeMaterialsManager = {
    getEncryptionMaterials: (request) => {
      backingMaterialsCalls++;
      return backing.getEncryptionMaterials(request);
    },
    decryptMaterials: (request) => backing.decryptMaterials(request),
  };
  const cmm = new NodeCachingMaterialsManager({
    backingMaterials: counting,
    cache: getLocalCryptographicMaterialsCache(100),
    maxAge: 300_000,
    maxMessagesEncrypted: 1_000_000,
    maxBytesEncrypted: 2 ** 36,
  });
  const plaintext = randomBytes(messageBytes);
  const encryptionContext = { bench: 'esdk' };
  const once = () =>
    encrypt(cmm, plaintext, { encryptionContext, suiteId: c.suiteId, frameLength: c.frameLength });

  const warmEnd = performance.now() + warmup * 1000;
  let last = await once();
  while (performance.now() < warmEnd) last = await once();
  let bytes = 0;
  let messages = 0;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1000 || messages === 0) {
    last = await once();
    bytes += plaintext.length;
    messages++;
  }
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const opened = await decrypt(cmm, last.result);
  return {
    id: c.id,
    label: c.label,
    frameLength: c.frameLength,
    suiteId: c.suiteId,
    bytesPerSecond: bytes / elapsed,
    cpuSecondsPerGB: (cpu.user + cpu.system) / 1e6 / (bytes / 1e9),
    messages,
    backingMaterialsCalls,
    ciphertextOverheadBytes: last.result.length - plaintext.length,
    verified:
      opened.plaintext.equals(plaintext) && opened.messageHeader.encryptionContext['bench'] === 'esdk',
  };
}

async function main(): Promise<number> {
  const opts = options();
  const env = environment();
  const started = Date.now();
  const stamp = timestamp();
  progress(
    `esdk (${opts.profile}): ${opts.messageBytes} B messages, ${opts.seconds} s windows after ${opts.warmup} s warm-up; load average ${(env.loadavgAtStart as number[]).join(' ')}`,
  );

  const esdk: EsdkResult[] = [];
  for (const c of CASES) {
    progress(`${c.label}…`);
    const r = await runEsdk(c, opts.seconds, opts.warmup, opts.messageBytes);
    esdk.push(r);
    progress(
      `  ${mbps(r.bytesPerSecond)} MB/s, ${fixed(r.cpuSecondsPerGB)} CPU s/GB, ${r.messages} messages, ` +
        `${r.backingMaterialsCalls} data-key generation(s), verified ${r.verified}`,
    );
  }

  progress('sealbox EncryptStream, 1 stream…');
  const sealbox = await spawnSealbox({}, 'sealbox');
  let sealboxRun: Awaited<ReturnType<typeof runStreamClient>>;
  try {
    sealboxRun = await runStreamClient(
      {
        target: sealbox.target,
        mode: 'encrypt',
        streams: 1,
        messageBytes: opts.messageBytes,
        seconds: opts.seconds,
        warmup: opts.warmup,
        keyAlias: BENCH_KEY_ALIAS,
      },
      sealbox.pid,
    );
  } finally {
    await sealbox.stop();
  }
  const gb = (sealboxRun.client?.windowBytes ?? 0) / 1e9;
  const sealboxResult = {
    bytesPerSecond: sealboxRun.error ? undefined : sealboxRun.client?.bytesPerSecond,
    serverCpuSecondsPerGB:
      gb > 0 && sealboxRun.serverCpuSeconds !== undefined ? sealboxRun.serverCpuSeconds / gb : undefined,
    clientCpuSecondsPerGB: gb > 0 && sealboxRun.client ? sealboxRun.client.clientCpuSeconds / gb : undefined,
    run: sealboxRun,
  };
  progress(
    sealboxRun.error
      ? `  FAILED: ${sealboxRun.error}`
      : `  ${mbps(sealboxResult.bytesPerSecond)} MB/s, server ${fixed(sealboxResult.serverCpuSecondsPerGB)} CPU s/GB`,
  );

  const ratios: Ratio[] = esdk.map((r) => ({
    name: `sealbox EncryptStream (gRPC) ÷ ${r.label}`,
    value: ratioOf(sealboxResult.bytesPerSecond, r.bytesPerSecond),
    main: r.id === 'esdk-default' || r.id === 'esdk-unsigned-64k',
  }));

  let out = `## sealbox vs AWS Encryption SDK (${opts.profile}: ${opts.messageBytes} B messages, ${opts.seconds} s windows after ${opts.warmup} s warm-up)\n\n`;
  out +=
    'ESDK: @aws-crypto/client-node in-process, one message at a time, RawAesKeyringNode behind a NodeCachingMaterialsManager ' +
    '(local cache; 5 min / 1,000,000 messages / 2^36 bytes), REQUIRE_ENCRYPT_REQUIRE_DECRYPT. sealbox: EncryptStream over gRPC on a ' +
    'Unix socket, 1 stream, default config, local key, load generator in its own process. MB = 10^6 plaintext bytes.\n\n';
  out += table(
    ['encryptor', 'MB/s', 'CPU s/GB', 'data-key generations', 'overhead bytes/message'],
    [
      ...esdk.map((r) => [
        r.label,
        mbps(r.bytesPerSecond),
        fixed(r.cpuSecondsPerGB),
        r.backingMaterialsCalls,
        r.ciphertextOverheadBytes,
      ]),
      [
        'sealbox EncryptStream, 1 stream, 64 KiB chunks',
        mbps(sealboxResult.bytesPerSecond),
        `${fixed(sealboxResult.serverCpuSecondsPerGB)} server + ${fixed(sealboxResult.clientCpuSecondsPerGB)} client`,
        '—',
        '—',
      ],
    ],
  );
  out += `\n${ratioTable(ratios)}`;
  out += `\nnode ${env.node}, ${env.cpus} CPUs, load average at start ${(env.loadavgAtStart as number[]).join(' ')}\n`;
  process.stdout.write(out);

  const chart = await writeRatioChart(`esdk-${stamp}`, ratios, {
    title: 'sealbox over gRPC ÷ AWS Encryption SDK in-process (same run)',
    subtitle: `${opts.messageBytes} B messages, encrypt, ${opts.profile} profile`,
  });
  const path = writeRun(
    'esdk',
    { started, environment: env, options: opts },
    {
      esdkVersion: require('@aws-crypto/client-node/package.json').version as string,
      esdk: Object.fromEntries(esdk.map((r) => [r.id, r])),
      sealbox: sealboxResult,
      ratios,
      chart,
    },
    stamp,
  );
  progress(`wrote ${path} and ${chart} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  return sealboxRun.error || esdk.some((r) => !r.verified) ? 1 : 0;
}

runMain(main);
