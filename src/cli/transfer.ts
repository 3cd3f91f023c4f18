/**
 * `sealbox encrypt` / `sealbox decrypt`: a file or stdin through a running sidecar to a file or stdout,
 * streamed with backpressure end to end (stream.pipeline over the client's EnvelopeDuplex, whose
 * writes wait for gRPC flow control).
 *
 * Invariant: `--out FILE` exists only after the whole stream succeeded. Output goes to FILE.partial
 * (mode 0600: it may be plaintext), is fsynced, and is renamed over FILE on success; on any failure or
 * signal the .partial file is deleted and FILE is left as it was. Decrypt releases verified chunks
 * before it has seen the end of the stream, so without this a truncated or tampered ciphertext would
 * leave a plausible-looking prefix of the plaintext behind.
 */

import { createReadStream, createWriteStream } from 'node:fs';
import { open, rename, rm, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type ServiceError, status } from '@grpc/grpc-js';
import {
  type Context,
  connectEnvelope,
  createDecryptStream,
  createEncryptStream,
  errorCode,
} from '../client/client';
import { ExitCode, exitCodeFor, UsageError } from './exit';
import { ProgressMeter, type ProgressOutput } from './progress';

/** The default --target: where `sealbox dev` listens, relative to the working directory. */
export function defaultTarget(cwd = process.cwd()): string {
  return `unix:${resolve(cwd, '.sealbox', 'sealbox.sock')}`;
}

/** What encrypt/decrypt do. */
export interface TransferOptions {
  readonly mode: 'encrypt' | 'decrypt';
  /** unix:/path or host:port. */
  readonly target: string;
  /** encrypt: key alias. */
  readonly alias?: string;
  /** encrypt: the encryption context. */
  readonly context?: Context;
  /** encrypt: plaintext bytes per chunk; 0 or absent = the sidecar's default. */
  readonly chunkSize?: number;
  /** decrypt: pairs the ciphertext's context must contain. */
  readonly expectedContext?: Context;
  /** Input file; stdin when absent. */
  readonly inFile?: string | undefined;
  /** Output file; stdout when absent. */
  readonly outFile?: string | undefined;
}

/** The process streams a transfer uses; injectable for tests. */
export interface TransferIo {
  readonly stdin: Readable & { isTTY?: boolean };
  readonly stdout: Writable & { isTTY?: boolean };
  readonly stderr: ProgressOutput & { isTTY?: boolean };
  /** Aborts the transfer (the CLI wires SIGINT/SIGTERM here). */
  readonly signal?: AbortSignal;
}

/** The result of a transfer: an exit code and, on failure, the message for stderr. */
export interface TransferResult {
  readonly exitCode: ExitCode;
  readonly message?: string;
}

/** Runs one encrypt or decrypt. Never throws for transfer failures; usage errors throw UsageError. */
export async function runTransfer(options: TransferOptions, io: TransferIo): Promise<TransferResult> {
  const { mode, inFile, outFile } = options;
  if (inFile !== undefined && outFile !== undefined && resolve(inFile) === resolve(outFile))
    throw new UsageError(`--in and --out name the same file (${outFile})`);
  if (inFile === undefined && io.stdin.isTTY)
    throw new UsageError(`${mode}: no input; pass --in FILE or pipe data to stdin`);
  if (mode === 'encrypt' && outFile === undefined && io.stdout.isTTY)
    throw new UsageError('encrypt: refusing to write ciphertext to a terminal; pass --out FILE or redirect');

  let total: number | undefined;
  if (inFile !== undefined) {
    const info = await stat(inFile).catch((err: NodeJS.ErrnoException) => {
      throw new UsageError(`cannot read --in ${inFile}: ${err.code ?? err.message}`);
    });
    if (info.isDirectory()) throw new UsageError(`--in ${inFile} is a directory`);
    if (info.isFile()) total = info.size;
  }

  const meter = io.stderr.isTTY
    ? new ProgressMeter(io.stderr, { label: mode === 'encrypt' ? 'encrypting' : 'decrypting', total })
    : undefined;
  const partial = outFile === undefined ? undefined : `${outFile}.partial`;
  // A stale .partial (a killed run) would keep its old mode when truncated: start from nothing.
  if (partial !== undefined) await rm(partial, { force: true });
  const client = connectEnvelope(options.target);
  let callError: Error | undefined;
  let keyId: string | undefined;
  try {
    const duplex =
      mode === 'encrypt'
        ? createEncryptStream(client, options.alias ?? 'dev', {
            context: options.context ?? {},
            chunkSize: options.chunkSize ?? 0,
          })
        : createDecryptStream(
            client,
            options.expectedContext && Object.keys(options.expectedContext).length > 0
              ? { expectedContext: options.expectedContext }
              : {},
          );
    // The call's own error is the one worth reporting; pipeline may surface a premature close instead.
    duplex.once('error', (err: Error) => {
      callError ??= err;
    });
    duplex.once('metadata', (m: { keyId: string }) => {
      keyId = m.keyId;
    });
    const input = inFile === undefined ? io.stdin : createReadStream(inFile);
    const output =
      partial === undefined ? io.stdout : createWriteStream(partial, { flags: 'w', mode: 0o600 });
    const stages: Array<Readable | Writable> = [input];
    if (meter) stages.push(meter.counter());
    stages.push(duplex, output);
    await (io.signal ? pipeline(stages, { signal: io.signal }) : pipeline(stages));
    if (partial !== undefined && outFile !== undefined) {
      await fsync(partial);
      await rename(partial, outFile);
    }
    meter?.finish(keyId ? `  (${mode === 'encrypt' ? 'sealed under' : 'key'} ${keyId})` : '');
    return { exitCode: ExitCode.OK };
  } catch (err) {
    if (partial !== undefined) await rm(partial, { force: true });
    meter?.clear();
    if (io.signal?.aborted) {
      const notWritten = outFile === undefined ? '' : `; ${outFile} was not written`;
      return {
        exitCode: io.signal.reason === 'SIGTERM' ? ExitCode.SIGTERM : ExitCode.SIGINT,
        message: `${mode} interrupted${notWritten}`,
      };
    }
    return describeFailure(mode, options.target, callError ?? err, outFile);
  } finally {
    client.close();
  }
}

async function fsync(path: string): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Turns what failed into an exit code and a message naming the gRPC status and sealbox error code. */
export function describeFailure(
  mode: 'encrypt' | 'decrypt',
  target: string,
  err: unknown,
  outFile: string | undefined,
): TransferResult {
  const notWritten = outFile === undefined ? '' : `; ${outFile} was not written`;
  const e = err as Partial<ServiceError> & { code?: unknown };
  if (typeof e?.code === 'number' && e.metadata !== undefined) {
    const grpcName = status[e.code] ?? String(e.code);
    const code = errorCode(err);
    const details = e.details ?? '';
    if (code === undefined && e.code === status.UNAVAILABLE) {
      return {
        exitCode: ExitCode.SIDECAR_UNAVAILABLE,
        message:
          `cannot reach sealbox at ${target} (gRPC ${grpcName}: ${details}); is it running? ` +
          `Start one with "sealbox dev", or pass --target${notWritten}`,
      };
    }
    const expired = /expired|not (yet )?valid/i.test(details) && !/disabled/i.test(details);
    return {
      exitCode: code === undefined ? ExitCode.FAILURE : exitCodeFor(code, expired),
      message: `${mode} failed: gRPC ${grpcName} (${e.code}), sealbox error ${code ?? '(none)'}: ${details}${notWritten}`,
    };
  }
  const message = err instanceof Error ? err.message : String(err);
  return { exitCode: ExitCode.FAILURE, message: `${mode} failed: ${message}${notWritten}` };
}
