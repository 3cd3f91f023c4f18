/** Binding grpc-js servers to Unix sockets with safe permissions, and to TCP. */
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import type { Server, ServerCredentials } from '@grpc/grpc-js';

/** Binds `target` ("unix:/path", "host:port"); resolves with the bound port. */
export function bind(server: Server, target: string, credentials: ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(target, credentials, (err, port) => (err ? reject(err) : resolve(port)));
  });
}

/**
 * Binds a Unix socket that is never more open than `mode`: the umask makes the file 0600 from the
 * moment it exists, chmod then applies the configured mode. No other file is created while the umask
 * is narrowed (this runs at startup only).
 */
export async function bindUnixSocket(
  server: Server,
  path: string,
  mode: number,
  credentials: ServerCredentials,
): Promise<void> {
  await prepareSocketPath(path);
  const previous = process.umask(0o177);
  try {
    await bind(server, `unix:${path}`, credentials);
  } finally {
    process.umask(previous);
  }
  chmodSync(path, mode);
}

/**
 * Creates the socket's directory if needed and removes a stale socket file left by a crashed
 * process. Refuses to start if another process is listening there.
 */
async function prepareSocketPath(path: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  let isSocket = false;
  try {
    const stat = lstatSync(path);
    if (!stat.isSocket()) {
      throw new Error(`${path} exists and is not a socket; choose another socket path or remove the file`);
    }
    isSocket = true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (!isSocket) return;
  const alive = await new Promise<boolean>((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (alive)
    throw new Error(`another process is listening on ${path}; stop it or choose another socket path`);
  unlinkSync(path);
}
