/** Binding grpc-js servers to Unix sockets with safe permissions, and to TCP. */
import { chmodSync, chownSync, lstatSync, mkdirSync, readFileSync, unlinkSync } from 'node:fs';
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
 * Binds a Unix socket that is never more open than `mode` for its final group: the umask makes the
 * file 0600 from the moment it exists, chown then sets the group (if any) and chmod only after it
 * applies the configured mode. No other file is created while the umask is narrowed (startup only).
 */
export async function bindUnixSocket(
  server: Server,
  path: string,
  access: { mode: number; group: number | string | null },
  credentials: ServerCredentials,
): Promise<void> {
  const gid = access.group === null ? undefined : resolveGroup(access.group);
  await prepareSocketPath(path);
  const previous = process.umask(0o177);
  try {
    await bind(server, `unix:${path}`, credentials);
  } finally {
    process.umask(previous);
  }
  try {
    if (gid !== undefined) {
      try {
        chownSync(path, -1, gid);
      } catch (err) {
        throw new Error(
          `cannot give socket ${path} group ${access.group} (gid ${gid}): ${(err as Error).message}; ` +
            'a non-root process can only choose a group it belongs to (e.g. its pod fsGroup)',
        );
      }
    }
    chmodSync(path, access.mode);
  } catch (err) {
    // The socket file is ours (bound just now): remove it; the caller shuts the server down.
    unlinkSync(path);
    throw err;
  }
}

/** A numeric gid, or the gid of a group name looked up in /etc/group. */
export function resolveGroup(group: number | string, groupFile = '/etc/group'): number {
  if (typeof group === 'number') return group;
  let text = '';
  try {
    text = readFileSync(groupFile, 'utf8');
  } catch {
    // No group database: only numeric groups work.
  }
  for (const line of text.split('\n')) {
    const [name, , gid] = line.split(':');
    if (name === group && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  throw new Error(`socket group "${group}" is not in ${groupFile}; use a numeric gid or an existing group`);
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
  if (await socketAccepts(path))
    throw new Error(`another process is listening on ${path}; stop it or choose another socket path`);
  unlinkSync(path);
}

/** Whether a process accepts connections on the Unix socket at `path` now. */
export function socketAccepts(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
}
