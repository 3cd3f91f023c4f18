/**
 * Crash-safe file writes for the dev vault's data directory. A write goes to a temporary file in the
 * same directory, is fsynced, renamed over the target and the directory is fsynced, so after a crash the
 * target holds either the old bytes or the new bytes, never a torn mix. Temporary files that a crash left
 * behind are recognisable by TEMP_MARKER and are never read as data.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/** Every temporary file's name contains this, so a store can tell them from committed files. */
export const TEMP_MARKER = '.tmp-';

/** Creates `dir` (and parents) with owner-only permissions when missing. */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
}

/**
 * Replaces `file` with `data` atomically and durably. `mode` applies to the new file (0600 for anything
 * holding private key material). Postcondition: on return the new contents and the directory entry are
 * on disk.
 */
export async function atomicWriteFile(file: string, data: string | Uint8Array, mode: number): Promise<void> {
  const dir = dirname(file);
  const temp = join(dir, `.${basename(file)}${TEMP_MARKER}${randomBytes(6).toString('hex')}`);
  // O_EXCL: a stale temp file with this random name would be a bug, never something to overwrite.
  const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
  try {
    await handle.writeFile(data);
    // Precondition for rename: the bytes are durable before the name points at them.
    await handle.sync();
  } catch (err) {
    await handle.close();
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await handle.close();
  try {
    await rename(temp, file);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dir);
}

/** Removes `file` (if present) and makes the removal durable. */
export async function durableUnlink(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return;
  }
  await fsyncDir(dirname(file));
}

/** fsyncs a directory so renames and unlinks in it survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
