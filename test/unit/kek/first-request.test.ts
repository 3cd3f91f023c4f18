/**
 * The first request through a new crypto client runs alone (provider.ts `throughClient`): the Key
 * Vault SDK's challenge policy can drop the body of a client's first request when another request on
 * the same client completes the challenge first (test/integration/cache.test.ts found it as 400s).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { type AzureCryptoClient, AzureKekProvider } from '../../../src/kek/azure';

const VAULT = 'https://unit.vault.azure.net';
const KEY_ID = `${VAULT}/keys/kek/0123456789abcdef0123456789abcdef`;

test('concurrent unwraps on a new version: the first runs alone, the rest only after it completed', async () => {
  const starts: number[] = [];
  let inFlight = 0;
  let maxBeforeFirstDone = 0;
  let firstDone = false;
  const client: AzureCryptoClient = {
    async wrapKey() {
      throw new Error('not used');
    },
    async unwrapKey() {
      starts.push(Date.now());
      inFlight++;
      if (!firstDone) maxBeforeFirstDone = Math.max(maxBeforeFirstDone, inFlight);
      await sleep(starts.length === 1 ? 50 : 5);
      inFlight--;
      firstDone = true;
      return { result: new Uint8Array(32), algorithm: 'RSA-OAEP-256', keyID: KEY_ID };
    },
  } as unknown as AzureCryptoClient;
  const provider = new AzureKekProvider({
    vaultUrl: VAULT,
    keyName: 'kek',
    keyClient: {
      getKey: async () => ({ id: KEY_ID, name: 'kek', keyType: 'RSA', properties: { enabled: true } }),
    } as never,
    cryptoClientFactory: () => client,
  });
  const wrapped = new Uint8Array(256);
  await Promise.all(Array.from({ length: 8 }, () => provider.unwrap(KEY_ID, 'RSA-OAEP-256', wrapped)));
  assert.equal(starts.length, 8);
  assert.equal(maxBeforeFirstDone, 1, 'nothing ran beside the first request');
  assert.ok(inFlight === 0);
  // Once opened, requests run concurrently again.
  let concurrent = 0;
  let maxConcurrent = 0;
  (client as { unwrapKey: unknown }).unwrapKey = async () => {
    concurrent++;
    maxConcurrent = Math.max(maxConcurrent, concurrent);
    await sleep(10);
    concurrent--;
    return { result: new Uint8Array(32), algorithm: 'RSA-OAEP-256', keyID: KEY_ID };
  };
  await Promise.all(Array.from({ length: 8 }, () => provider.unwrap(KEY_ID, 'RSA-OAEP-256', wrapped)));
  assert.ok(maxConcurrent > 1, `concurrent after the first: ${maxConcurrent}`);
});
