import { constants } from "node:fs";
import { access, lstat, readFile, unlink } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { within } from "./within.ts";

/** sun_path holds 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH = 107;

export type SocketPathProblem = "NotASocket" | "InUse" | "BadDirectory" | "TooLong";

/** The socket path cannot be used; nothing at the path was touched. */
export class SocketPathError extends Error {
  constructor(
    readonly problem: SocketPathProblem,
    readonly path: string,
    message: string,
  ) {
    super(message);
    this.name = "SocketPathError";
  }
}

function errno(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? String(e);
}

/** Does a live server answer on the socket at `path`? */
async function answers(path: string, timeoutMs: number): Promise<boolean> {
  const attempt = Bun.connect({ unix: path, socket: { data() {} } }).then(
    (socket) => {
      socket.end();
      return true;
    },
    (e) => {
      if (errno(e) === "ECONNREFUSED" || errno(e) === "ENOENT") return false;
      throw new SocketPathError("InUse", path, `socket ${path} cannot be probed (${errno(e)}); refusing to replace it`);
    },
  );
  // A server that accepts slowly is still alive.
  return within(attempt, timeoutMs, true);
}

/** __SO_ACCEPTCON in the Flags column of /proc/net/unix: the socket is listening. */
const SO_ACCEPTCON = 0x10000;

/**
 * Is `path` listed as a listening socket in Linux's /proc/net/unix? This
 * finds a live server without connecting to it: a probe connection would be
 * accepted by that server as its new client and so replace (disconnect) the
 * client it is serving. False when the table cannot be read or does not list
 * the path (bound by a relative name, or in another network namespace); the
 * connect probe then decides.
 */
async function listedAsListening(path: string): Promise<boolean> {
  let table: string;
  try {
    table = await readFile("/proc/net/unix", "utf8");
  } catch {
    return false;
  }
  const names = new Set([path, resolve(path)]);
  for (const line of table.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 8 || (parseInt(fields[3], 16) & SO_ACCEPTCON) === 0) continue;
    if (names.has(fields.slice(7).join(" "))) return true;
  }
  return false;
}

/**
 * Makes `path` ready for listen(): a stale socket (nothing answers) is
 * removed; a regular file, a directory, anything else that is not a socket,
 * or a socket a live server answers on is refused and left as it is. Unlike
 * the Go original, this never deletes anything that is not a dead socket.
 * Returns true when a stale socket was removed.
 */
export async function prepareSocketPath(path: string, probeTimeoutMs = 1000): Promise<boolean> {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new SocketPathError(
      "TooLong",
      path,
      `socket path ${path} is ${Buffer.byteLength(path)} bytes; allowed at most ${MAX_SOCKET_PATH}`,
    );
  }
  let stat;
  try {
    stat = await lstat(path);
  } catch (e) {
    if (errno(e) !== "ENOENT") throw new SocketPathError("BadDirectory", path, `socket path ${path}: ${errno(e)}`);
    await checkDirectory(path);
    return false;
  }
  if (!stat.isSocket()) {
    const kind = stat.isDirectory() ? "a directory" : stat.isFile() ? "a regular file" : "not a socket";
    throw new SocketPathError("NotASocket", path, `socket path ${path} is ${kind}; refusing to replace it`);
  }
  if ((await listedAsListening(path)) || (await answers(path, probeTimeoutMs))) {
    throw new SocketPathError("InUse", path, `socket ${path} is in use by a live server; stop it first`);
  }
  await unlink(path);
  return true;
}

async function checkDirectory(path: string): Promise<void> {
  const dir = dirname(path);
  let stat;
  try {
    stat = await lstat(dir);
  } catch (e) {
    const reason = errno(e) === "ENOENT" ? "does not exist" : `cannot be read (${errno(e)})`;
    throw new SocketPathError("BadDirectory", path, `socket directory ${dir} ${reason}`);
  }
  if (!stat.isDirectory()) throw new SocketPathError("BadDirectory", path, `socket directory ${dir} is not a directory`);
  try {
    await access(dir, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw new SocketPathError("BadDirectory", path, `socket directory ${dir} is not writable (${errno(e)})`);
  }
}

/** Removes the socket at `path` if it is still a socket (clean shutdown). */
export async function removeSocketFile(path: string): Promise<void> {
  try {
    if ((await lstat(path)).isSocket()) await unlink(path);
  } catch {
    // already gone
  }
}
