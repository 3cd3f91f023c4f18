/**
 * Starts bench/dev-vault.ts in its own process and talks to its admin surface (/_sealbox/ over HTTPS,
 * trusting only the vault's CA): counters, counter reset, fault changes. Also builds the sealbox key
 * configuration for an Azure alias on that vault.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ConfigInput } from '../../src/config/config';
import { sealboxKeyConfig } from '../../src/devvault/client-options';
import type { DevVaultInfo } from '../dev-vault';
import { BENCH_LIB_DIR, stopChild, trackChild, trackTempDir } from './proc';

const DEV_VAULT_PATH = join(BENCH_LIB_DIR, '..', 'dev-vault.js');

export interface DevVaultSettings {
  /** Every Key Vault request waits fixedMs + uniform [0, jitterMs]; 10 + [0, 10] is 15 ms ± 5 ms. */
  readonly latency: { fixedMs: number; jitterMs: number };
  /** Azure's published limits (the dev vault's defaults). */
  readonly throttling: boolean;
  readonly keySize: 2048 | 3072 | 4096;
  /** Versions of the key (and of the HSM key) to create; default 1. */
  readonly versions?: number;
  /** Also create an RSA-HSM key of this size, `<key name>-hsm` (DevVaultInfo.hsmKey). */
  readonly hsmKeySize?: 2048 | 3072 | 4096;
  /** Also create a second RSA key of `keySize`, `<key name>-2` (DevVaultInfo.secondKey). */
  readonly secondKey?: boolean;
}

/** The benchmark's vault: 15 ms ± 5 ms per request, Azure's throttling limits, an RSA-2048 key. */
export const BENCH_VAULT: DevVaultSettings = {
  latency: { fixedMs: 10, jitterMs: 10 },
  throttling: true,
  keySize: 2048,
};

export interface DevVaultProcess {
  readonly pid: number;
  readonly info: DevVaultInfo;
  readonly settings: DevVaultSettings;
  /** Operation counters (docs/devvault.md "Faults and counters"). */
  counters(): Promise<Record<string, number>>;
  resetCounters(): Promise<void>;
  /** Re-applies the throttling setting, which starts a fresh 10 s window with nothing used. */
  restartThrottleWindow(): Promise<void>;
  /** Replaces the throttling setting (e.g. a shorter window); starts a fresh window with nothing used. */
  setThrottling(throttling: { enabled: boolean; windowMs?: number }): Promise<void>;
  /**
   * `keys` for a sealbox config: alias → Azure provider on this vault's key (or the key named
   * `keyName`, e.g. info.secondKey.name), static token, its CA.
   */
  sealboxKeys(alias: string, keyName?: string): NonNullable<ConfigInput['keys']>;
  stop(): Promise<void>;
}

export async function spawnDevVault(settings: DevVaultSettings = BENCH_VAULT): Promise<DevVaultProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-bench-vault-'));
  const removeDir = trackTempDir(dir);
  const child = spawn(
    process.execPath,
    [
      DEV_VAULT_PATH,
      `--data-dir=${join(dir, 'vault')}`,
      `--fixed-ms=${settings.latency.fixedMs}`,
      `--jitter-ms=${settings.latency.jitterMs}`,
      `--throttling=${settings.throttling ? 'on' : 'off'}`,
      `--key-size=${settings.keySize}`,
      ...(settings.versions === undefined ? [] : [`--versions=${settings.versions}`]),
      ...(settings.hsmKeySize === undefined ? [] : [`--hsm-key-size=${settings.hsmKeySize}`]),
      ...(settings.secondKey ? ['--second-key'] : []),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  trackChild(child); // the script imports lib/watch-parent itself
  child.stderr!.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) {
      if (line.trim()) process.stderr.write(`[dev-vault ${child.pid}] ${line}\n`);
    }
  });
  const stop = async () => {
    await stopChild(child);
    removeDir();
  };
  let info: DevVaultInfo;
  try {
    info = await new Promise<DevVaultInfo>((resolve, reject) => {
      let stdout = '';
      const timer = setTimeout(() => reject(new Error('the dev vault did not start within 60 s')), 60_000);
      child.stdout!.on('data', (chunk: Buffer) => {
        stdout += chunk.toString('utf8');
        const newline = stdout.indexOf('\n');
        if (newline >= 0) {
          clearTimeout(timer);
          try {
            resolve(JSON.parse(stdout.slice(0, newline)) as DevVaultInfo);
          } catch (err) {
            reject(err as Error);
          }
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`the dev vault exited with ${code} before it was ready`));
      });
    });
  } catch (err) {
    await stop();
    throw err;
  }
  const ca = readFileSync(info.caFile);

  const admin = (method: 'GET' | 'POST', path: string, body?: unknown) =>
    new Promise<string>((resolve, reject) => {
      const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = request(
        {
          host: 'localhost',
          port: info.port,
          method,
          path,
          ca,
          headers: {
            authorization: `Bearer ${info.adminToken}`,
            ...(payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {}),
          },
        },
        (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => {
            text += c;
          });
          res.on('end', () =>
            res.statusCode && res.statusCode < 300
              ? resolve(text)
              : reject(new Error(`dev vault admin ${method} ${path}: ${res.statusCode} ${text}`)),
          );
        },
      );
      req.once('error', reject);
      req.end(payload);
    });

  return {
    pid: child.pid!,
    info,
    settings,
    async counters() {
      return (JSON.parse(await admin('GET', '/_sealbox/counters')) as { counters: Record<string, number> })
        .counters;
    },
    async resetCounters() {
      await admin('POST', '/_sealbox/reset');
    },
    async restartThrottleWindow() {
      await admin('POST', '/_sealbox/faults', { throttling: { enabled: settings.throttling } });
    },
    async setThrottling(throttling) {
      await admin('POST', '/_sealbox/faults', { throttling });
    },
    sealboxKeys(alias, keyName = info.keyName) {
      return {
        [alias]: sealboxKeyConfig(info, keyName, info.sealboxToken),
      };
    },
    stop,
  };
}

/** Key Vault requests a counter snapshot shows, by kind (authenticated requests; see docs/devvault.md). */
export interface VaultCalls {
  readonly wrapKey: number;
  readonly unwrapKey: number;
  readonly getKey: number;
  /** 429 answers. */
  readonly throttled: number;
  /** wrapKey + unwrapKey: the calls a DEK cache exists to avoid. */
  readonly crypto: number;
}

export function vaultCalls(after: Record<string, number>, before: Record<string, number> = {}): VaultCalls {
  const d = (name: string) => (after[name] ?? 0) - (before[name] ?? 0);
  return {
    wrapKey: d('wrapKey'),
    unwrapKey: d('unwrapKey'),
    getKey: d('getKey'),
    throttled: d('throttled'),
    crypto: d('wrapKey') + d('unwrapKey'),
  };
}
