/**
 * Starts a real sealbox (real grpc-js server on a real Unix socket, real worker pool, local KEK in a
 * temporary directory) for integration tests, and a client connected to it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EnvelopeClient } from '../../src/api/proto';
import { connectEnvelope } from '../../src/client/client';
import { type Config, type ConfigInput, mergeConfigInput, validateConfig } from '../../src/config/config';
import { createLocalKeyFile } from '../../src/kek/local';
import { createLogger } from '../../src/log/logger';
import { type Sealbox, type SealboxHooks, startSealbox } from '../../src/main';

export interface TestSealbox {
  readonly sealbox: Sealbox;
  readonly client: EnvelopeClient;
  /** "unix:/…/sealbox.sock" */
  readonly target: string;
  readonly socketPath: string;
  readonly dir: string;
  /** The key alias configured for tests. */
  readonly alias: string;
  readonly config: Config;
  close(): Promise<void>;
}

/** Deep-merges `overrides` into the test defaults. */
export async function startTestSealbox(
  overrides: ConfigInput = {},
  hooks: SealboxHooks = {},
): Promise<TestSealbox> {
  const dir = mkdtempSync(join(tmpdir(), 'sealbox-test-'));
  const keyFile = join(dir, 'kek.json');
  createLocalKeyFile(keyFile, 'test');
  const socketPath = join(dir, 'sealbox.sock');
  const base: Record<string, unknown> = {
    dataDir: dir,
    listen: { socket: socketPath },
    keys: { test: { provider: 'local', file: keyFile } },
    pool: { threads: 2 },
    log: { level: 'silent' },
    shutdown: { graceMs: 2000 },
  };
  const config = validateConfig(mergeConfigInput(base, overrides));
  const sealbox = await startSealbox(config, createLogger(config.log.level), hooks);
  const target = `unix:${socketPath}`;
  const client = connectEnvelope(target);
  return {
    sealbox,
    client,
    target,
    socketPath,
    dir,
    alias: 'test',
    config,
    async close() {
      client.close();
      await sealbox.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Splits `data` at the given offsets (sorted, deduplicated, clamped). */
export function splitAt(data: Buffer, offsets: number[]): Buffer[] {
  const cuts = [...new Set(offsets.map((o) => Math.max(0, Math.min(data.length, o))))].sort((x, y) => x - y);
  const pieces: Buffer[] = [];
  let from = 0;
  for (const cut of cuts) {
    pieces.push(data.subarray(from, cut));
    from = cut;
  }
  pieces.push(data.subarray(from));
  return pieces;
}
