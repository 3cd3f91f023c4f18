/**
 * Revocation latency: from "key disabled in the vault" to the first refused request, for the three
 * ways sealbox learns of it — polling (revocation.pollIntervalMs, default here 1 s), an Event Grid
 * webhook event, and the Admin RevokeKey call. A client keeps decrypting a message whose DEK is cached
 * (so without revocation it would keep succeeding) and notes when the first call is refused.
 *
 *   node <build>/bench/revocation.js [--runs N] [--poll-ms MS]
 *
 * Runs the dev vault and sealbox in this process (the latency measured is sealbox's, not the IPC's).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { KeyClient } from '@azure/keyvault-keys';
import { credentials } from '@grpc/grpc-js';
import { loadApi } from '../src/api/proto';
import { connectEnvelope, decrypt, encrypt, errorCode } from '../src/client/client';
import { validateConfig } from '../src/config/config';
import {
  devVaultClientOptions,
  sealboxKeyConfig,
  startDevVault,
  staticTokenCredential,
} from '../src/devvault';
import { createLogger } from '../src/log/logger';
import { startSealbox } from '../src/main';
import { median, table, writeResults } from './lib/report';

type Mode = 'poll' | 'webhook' | 'admin';
const TOKEN = 'revocation-bench';
const SECRET = 'revocation-bench-webhook-secret';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { runs: { type: 'string', default: '5' }, 'poll-ms': { type: 'string', default: '1000' } },
  });
  const runs = Math.max(1, Number(values.runs));
  const pollMs = Math.max(1000, Number(values['poll-ms']));
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-bench-revocation-'));
  const vault = await startDevVault({
    dataDir: join(dir, 'vault'),
    identities: {
      [TOKEN]: { name: 'bench', permissions: ['get', 'create', 'update', 'wrapKey', 'unwrapKey'] },
    },
  });
  const keys = new KeyClient(vault.url, staticTokenCredential(TOKEN), devVaultClientOptions(vault));
  const results: Record<Mode, number[]> = { poll: [], webhook: [], admin: [] };
  try {
    for (let run = 0; run < runs; run++) {
      for (const mode of ['poll', 'webhook', 'admin'] as const) {
        process.stderr.write(`revocation: ${mode} run ${run + 1}/${runs}…\n`);
        results[mode].push(await measure(mode, `${mode}-${run}`));
      }
    }
  } finally {
    await vault.close();
    rmSync(dir, { recursive: true, force: true });
  }

  async function measure(mode: Mode, keyName: string): Promise<number> {
    await keys.createRsaKey(keyName, { keySize: 2048 });
    const adminSocket = join(dir, `${keyName}-admin.sock`);
    const config = validateConfig({
      dataDir: dir,
      listen: { socket: join(dir, `${keyName}.sock`), adminSocket },
      log: { level: 'silent' },
      revocation: { pollIntervalMs: mode === 'poll' ? pollMs : 3_600_000 },
      webhook: { listen: { host: '127.0.0.1', port: 0 }, secret: SECRET },
      keys: {
        pay: sealboxKeyConfig(vault, keyName, TOKEN),
      },
    });
    const sealbox = await startSealbox(config, createLogger('silent'));
    const client = connectEnvelope(`unix:${config.listen.socket}`);
    const admin = new (loadApi().sealbox.sealbox.v1.Admin)(
      `unix:${adminSocket}`,
      credentials.createInsecure(),
    );
    try {
      const { ciphertext } = await encrypt(client, 'pay', Buffer.from('revocation'));
      await decrypt(client, ciphertext); // cached from here on
      // Poll mode: start at a random point of the poll cycle, as a real disable would.
      if (mode === 'poll') await sleep(Math.random() * pollMs);
      const disabledAt = performance.now();
      await keys.updateKeyProperties(keyName, { enabled: false });
      if (mode === 'webhook') {
        await fetch(`${sealbox.webhookUrl}?secret=${SECRET}`, {
          method: 'POST',
          body: JSON.stringify([
            { id: '1', eventType: 'Microsoft.KeyVault.VaultAccessPolicyChanged', data: {} },
          ]),
        });
      } else if (mode === 'admin') {
        await new Promise((resolve, reject) =>
          admin.RevokeKey({ keyAlias: 'pay' }, (err, res) => (err ? reject(err) : resolve(res))),
        );
      }
      for (;;) {
        const refused = await decrypt(client, ciphertext).then(
          () => false,
          (e: unknown) => errorCode(e) === 'KEY_DISABLED',
        );
        if (refused) return performance.now() - disabledAt;
        if (performance.now() - disabledAt > 10 * pollMs + 10_000) throw new Error(`${mode}: never refused`);
        await sleep(5);
      }
    } finally {
      admin.close();
      client.close();
      await sealbox.close();
    }
  }

  const rows = (['poll', 'webhook', 'admin'] as const).map((mode) => {
    const values = results[mode];
    return [
      mode === 'poll'
        ? `poll (interval ${pollMs} ms)`
        : mode === 'webhook'
          ? 'Event Grid webhook'
          : 'Admin RevokeKey',
      values.length,
      (median(values) ?? 0).toFixed(0),
      Math.min(...values).toFixed(0),
      Math.max(...values).toFixed(0),
    ];
  });
  process.stdout.write(
    `## Revocation latency: key disabled in the vault → first refused request (ms)\n\n${table(
      ['trigger', 'runs', 'median', 'min', 'max'],
      rows,
    )}\n`,
  );
  writeResults('revocation', { pollMs, runs, latencyMs: results });
}

main().catch((err: unknown) => {
  process.stderr.write(`revocation: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
