import { accessSync, chmodSync, closeSync, constants, fstatSync, linkSync, lstatSync, openSync, readdirSync, readFileSync, readlinkSync, statSync, unlinkSync, type Stats } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { MAX_SOCKET_DIRECTORY, MAX_SOCKET_PATH } from "../protocol/index.ts";
import { SOCK_STREAM } from "../io/libc.ts";
import { O_PATH } from "../io/open-flags.ts";
import { probeUnixSocket } from "../io/unix-probe.ts";

export type SocketPathProblem = "NotASocket" | "InUse" | "BadDirectory" | "TooLong" | "CannotListen";

/** The socket path cannot be used; nothing at the path was touched. */
export class SocketPathError extends Error {
  constructor(
    readonly problem: SocketPathProblem,
    readonly path: string,
    message: string,
    /** The errno of the system call that failed, when one did. */
    readonly code?: string,
  ) {
    super(message);
    this.name = "SocketPathError";
  }
}

function errno(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? String(e);
}

/** Does a live server answer on the socket at `path`? One that cannot be asked is taken for one. */
async function answers(path: string, timeoutMs: number): Promise<boolean> {
  const answer = await probeUnixSocket(path, timeoutMs);
  if (answer === "EPROTOTYPE") {
    // Bound by a live process all the same: a datagram or packet server, not ours to replace.
    throw new SocketPathError("InUse", path, `socket ${path} is a live ${notAStreamSocket(path) ?? "socket of another type than a stream (EPROTOTYPE)"}; refusing to replace it`);
  }
  if (typeof answer === "string") throw new SocketPathError("InUse", path, `socket ${path} cannot be probed (${answer}); refusing to replace it`);
  return answer;
}

/** __SO_ACCEPTCON in the Flags column of /proc/net/unix: the socket is listening. */
const SO_ACCEPTCON = 0x10000;

/**
 * Is the socket file at `path` (`file`, its lstat) listed as listening in
 * Linux's /proc/net/unix? This finds a live server without connecting to
 * it: a probe connection would be accepted by that server as its new client
 * and so replace (disconnect) the client it is serving. False when the
 * table cannot be read or does not list it (in another network namespace,
 * or bound by a name its process can no longer be asked about); the
 * connect probe then decides.
 */
function listedAsListening(listings: readonly Listing[]): boolean {
  return listings.some(({ flags }) => (flags & SO_ACCEPTCON) !== 0);
}

/** The St column of /proc/net/unix for a socket that is not connected: a listener, or one bound and yet to listen. */
const SS_UNCONNECTED = 1;

/**
 * Is a stream socket listed as bound to the file and neither listening nor
 * connected: a server bound there and yet to call listen() (its connect is
 * refused as at a stale socket, for a moment or for as long as it waits)?
 * A dead process's socket is not listed at all, and a connection its server
 * accepted is listed connected.
 */
function listedAsBoundOnly(listings: readonly Listing[]): boolean {
  return listings.some(({ flags, type, state }) => type === SOCK_STREAM && state === SS_UNCONNECTED && (flags & SO_ACCEPTCON) === 0);
}

/** /proc/net/unix's socket types that are not a stream, by their number there. */
const OTHER_SOCKET_TYPES: Record<number, string> = { 2: "datagram socket (SOCK_DGRAM)", 5: "packet socket (SOCK_SEQPACKET)" };

/**
 * What a socket bound at `path` is when it is not a stream socket (a
 * datagram or packet server there, which a stream connect can never reach:
 * Bun reports ECONNREFUSED as for a server not yet up), read from
 * /proc/net/unix; undefined for a stream socket, or one not listed.
 */
export function notAStreamSocket(path: string): string | undefined {
  // Followed: a client connects through a symbolic link.
  const file = statSync(path, { throwIfNoEntry: false });
  // Only a sure one: a client told wrongly that its path is no stream socket fails, where one not
  // told waits for its server.
  for (const { type, surely } of listingsOf(path, file)) {
    const other = surely ? OTHER_SOCKET_TYPES[type] : undefined;
    if (other) return other;
  }
  return undefined;
}

/** A socket as /proc/net/unix lists it: Flags, Type, its socket inode and the name it was bound by. */
interface Listing {
  flags: number;
  type: number;
  /** St: 1 not connected, 3 connected, ... */
  state: number;
  inode: number;
  name: string;
}

/**
 * The sockets /proc/net/unix lists as bound to the socket file at `path`
 * (`file`, its lstat, when known). The table lists the name each was bound
 * by, as its process gave it: `path` itself, another name of the same file
 * (the hidden name bindSocketFile binds in the same directory; the path
 * through a symbolic link, as the Go original's /var/run/audio_output.sock,
 * /var/run a link to /run), or a name that is not this file at all (bound
 * relative to another process's directory, or in another mount namespace:
 * systemd's PrivateTmp=). A listing whose name may be this file's is asked
 * of its process: the name seen from that process's root or working
 * directory must lead to this file (device and inode). One whose process
 * cannot be seen (another user's, not root), or whose name leads nowhere
 * from it (bound relative, the directory left since), counts when its name
 * is `path` or leads to this file here: surely so for an absolute name.
 * A live server is taken for one on any listing (a probe would replace its
 * client); a socket's type only from a sure one.
 */
function listingsOf(path: string, file: SocketFileIdentity | undefined): (Listing & { surely: boolean })[] {
  const names = new Set([path, resolve(path)]);
  const base = basename(path);
  const here = (name: string) => names.has(name) || (file !== undefined && name.startsWith("/") && sameFile(name, file));
  // Not asked: it counts by its name, surely so only for an absolute name that leads here.
  const byName = (listing: Listing) => (here(listing.name) ? [{ ...listing, surely: listing.name.startsWith("/") }] : []);
  const candidates = boundSockets().filter(({ name }) => here(name) || (!name.startsWith("/") && basename(name) === base));
  if (candidates.length === 0 || file === undefined) return candidates.flatMap(byName);
  const owners = ownersOf(new Set(candidates.map(({ inode }) => inode)));
  return candidates.flatMap((listing) => {
    const owner = owners.get(listing.inode);
    const { name } = listing;
    // Seen from its process, the name leads to a file (ours, or another), or nowhere: a process
    // that bound it relative and then left its directory (a daemon's chdir("/")); then as if not asked.
    const seen = owner === undefined ? undefined : identityOf(name.startsWith("/") ? `/proc/${owner}/root${name}` : `/proc/${owner}/cwd/${name}`);
    if (seen === undefined) return byName(listing);
    return sameIdentity(seen, file) ? [{ ...listing, surely: true }] : [];
  });
}

/** The process holding each socket inode of `inodes`, by its descriptors (/proc/PID/fd); those of processes this one may not look into are left out. */
function ownersOf(inodes: Set<number>): Map<number, number> {
  const owners = new Map<number, number>();
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((entry) => /^[0-9]+$/.test(entry));
  } catch {
    return owners;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue; // gone, or another user's
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      const inode = target.startsWith("socket:[") ? Number(target.slice(8, -1)) : NaN;
      if (inodes.has(inode) && !owners.has(inode)) owners.set(inode, Number(pid));
    }
    if (owners.size === inodes.size) break;
  }
  return owners;
}

/** The Unix sockets Linux's /proc/net/unix lists with a name; none when it cannot be read. */
function boundSockets(): Listing[] {
  let table: string;
  try {
    table = readFileSync("/proc/net/unix", "utf8");
  } catch {
    return [];
  }
  const sockets: Listing[] = [];
  for (const line of table.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 8) continue;
    sockets.push({ flags: parseInt(fields[3]!, 16), type: parseInt(fields[4]!, 16), state: parseInt(fields[5]!, 16), inode: Number(fields[6]), name: fields.slice(7).join(" ") });
  }
  return sockets;
}

function sameFile(path: string, file: SocketFileIdentity): boolean {
  const seen = identityOf(path);
  return seen !== undefined && sameIdentity(seen, file);
}

/** Whether two identities are one file. */
export function sameIdentity(a: SocketFileIdentity, b: SocketFileIdentity): boolean {
  return a.dev === b.dev && a.ino === b.ino;
}

/** The socket file a connect to `path` reaches (links followed), or undefined where there is none: nothing, or a file of another kind. */
export function socketReachedBy(path: string): SocketFileIdentity | undefined {
  try {
    const stat = statSync(path);
    return stat.isSocket() ? stat : undefined;
  } catch {
    return undefined;
  }
}

/** The file at `path` itself (not followed), or undefined where there is none. */
function identityOf(path: string): SocketFileIdentity | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/** The other names of a dead socket file in its directory (the hidden name it was bound by), removed with it. */
function removeOtherLinks(path: string, file: SocketFileIdentity): void {
  const dir = dirname(path);
  for (const name of readdirSync(dir)) {
    const other = join(dir, name);
    if (other !== join(dir, basename(path)) && sameFile(other, file)) {
      try {
        unlinkSync(other);
      } catch {
        // already gone
      }
    }
  }
}

/** What a path that is not a socket holds, for a line that refuses it ("a regular file"). */
export function fileKind(stat: Stats): string {
  return stat.isDirectory() ? "a directory" : stat.isFile() ? "a regular file" : stat.isFIFO() ? "a FIFO" : stat.isSymbolicLink() ? "a symbolic link" : "a device";
}

/**
 * Makes `path` ready for listen(): a stale socket (nothing answers) is
 * removed; a regular file, a directory, anything else that is not a socket,
 * or a socket a live server answers on is refused and left as it is. Unlike
 * the Go original, this never deletes anything that is not a dead socket.
 * Returns true when a stale socket was removed (false when there was none,
 * or it went while it was checked). The file system calls are
 * synchronous: at start-up they are quicker than hops through the thread pool.
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
    // Asked, not caught: the path is usually free, and an error at every start costs the process resident code.
    stat = lstatSync(path, { throwIfNoEntry: false });
  } catch (e) {
    throw new SocketPathError("BadDirectory", path, `socket path ${path}: ${errno(e)}`);
  }
  if (!stat) {
    checkDirectory(path);
    return false;
  }
  if (stat.isSymbolicLink()) {
    throw new SocketPathError("NotASocket", path, `socket path ${path} is a symbolic link; refusing to follow or replace it`);
  }
  if (!stat.isSocket()) {
    throw new SocketPathError("NotASocket", path, `socket path ${path} is ${fileKind(stat)}; refusing to replace it`);
  }
  if (await live(path, stat, probeTimeoutMs)) {
    // A packet server is found listening by its listing, before any probe could say EPROTOTYPE.
    const other = notAStreamSocket(path);
    throw new SocketPathError("InUse", path, other ? `socket ${path} is a live ${other}; refusing to replace it` : `socket ${path} is in use by a live server; stop it first`);
  }
  // The probe took a while: the stale socket may have gone since (its server removed it as it stopped:
  // the path is free), or another file taken the path (another server starting there), which is not ours to remove.
  if (!lstatSync(path, { throwIfNoEntry: false })) return false;
  if (!unchanged(path, stat)) {
    throw new SocketPathError("InUse", path, `socket path ${path} was taken by another file while it was checked (another server starting there?); left alone`);
  }
  let removed = true;
  try {
    unlinkSync(path);
  } catch (e) {
    // Gone meanwhile (its server removed it as it stopped): the path is free all the same.
    if (errno(e) !== "ENOENT") throw e;
    removed = false;
  }
  if (stat.nlink > 1) removeOtherLinks(path, stat);
  return removed;
}

/**
 * Does a live server listen or answer on the socket file at `path` (`stat`,
 * its lstat)? Listed first: a probe would replace its client. One bound and
 * yet to listen is refused.
 */
async function live(path: string, stat: SocketFileIdentity, probeTimeoutMs: number): Promise<boolean> {
  const listings = listingsOf(path, stat);
  if (listedAsListening(listings) || (await answers(path, probeTimeoutMs))) return true;
  if (listedAsBoundOnly(listings)) {
    throw new SocketPathError("InUse", path, `socket ${path} is bound by a live process that does not listen on it yet (a server starting?); refusing to replace it`);
  }
  return false;
}

/**
 * Removes the hidden names (bindSocketFile) that earlier servers at `path`
 * left behind. A server killed at once leaves its socket under both names;
 * prepareSocketPath removes the hidden one with the path, but once the path
 * itself was removed by hand, nothing leads to it, and each such restart
 * left one more. Only what a server at `path` could have bound is removed,
 * with the care prepareSocketPath takes of the path: a name of the hidden
 * pattern for this path exactly (isHiddenNameOf), a socket (nothing is
 * followed: a symbolic link, a regular file or a directory is left alone),
 * this user's, and stale (nothing listens or answers on it; one that cannot
 * be probed, EACCES say, is left, as such a path is refused). Returns how
 * many were removed; a directory that cannot be read gives none.
 */
export async function removeStaleHiddenNames(path: string, probeTimeoutMs = 1000): Promise<number> {
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return 0;
  }
  let removed = 0;
  for (const name of names) {
    if (!isHiddenNameOf(path, name)) continue;
    const hidden = inDirectoryOf(path, name);
    const stat = lstatSync(hidden, { throwIfNoEntry: false });
    if (!stat?.isSocket() || stat.uid !== process.geteuid?.()) continue;
    if (await live(hidden, stat, probeTimeoutMs).catch(() => true)) continue;
    try {
      // Still the file judged stale: the probe took a while.
      if (!unchanged(hidden, stat)) continue;
      unlinkSync(hidden);
      removed++;
    } catch {
      // gone meanwhile, or not ours to remove after all
    }
  }
  return removed;
}

/**
 * Whether the file at `path` (not followed) is still the one `before` saw.
 * Device and inode alone do not tell: a file made at the name once that one
 * was removed often gets its inode back (ext4 gives a freed one at once), and
 * a new file's inode change time is the moment it was made.
 */
function unchanged(path: string, before: Stats): boolean {
  const now = lstatSync(path, { throwIfNoEntry: false });
  return now !== undefined && sameIdentity(now, before) && now.mode === before.mode && now.ctimeMs === before.ctimeMs;
}

function checkDirectory(path: string): void {
  const dir = dirname(path);
  let stat;
  try {
    // Followed, as bind() follows it: /var/run, where the default sockets go, is a link to /run on most systems.
    stat = statSync(dir);
  } catch (e) {
    const reason = errno(e) === "ENOENT" ? "does not exist" : `cannot be read (${errno(e)})`;
    throw new SocketPathError("BadDirectory", path, `socket directory ${dir} ${reason}`);
  }
  if (!stat.isDirectory()) throw new SocketPathError("BadDirectory", path, `socket directory ${dir} is not a directory`);
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw new SocketPathError("BadDirectory", path, `socket directory ${dir} is not writable (${errno(e)})`);
  }
}

/** Which file a socket is: it is still ours while the path leads to the same device and inode. */
export interface SocketFileIdentity {
  dev: number;
  ino: number;
  /** The hidden name it was bound by, which stays while its listener lives (bindSocketFile). */
  hidden?: string;
}

function replaced(path: string, hidden: string): SocketPathError {
  return new SocketPathError("InUse", path, `socket path ${path}: the name it was bound by (${hidden}) was replaced by another process while binding; refusing to go on`);
}

/** Attempts at a fresh hidden name before giving up (another file taking the same random name). */
const BIND_ATTEMPTS = 8;

/** A hidden name ends with this many characters drawn at random from HIDDEN_ALPHABET. */
const HIDDEN_RANDOM = 8;
const HIDDEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";

/**
 * Binds a listening socket at `path` (made ready by prepareSocketPath) so
 * that it is never reachable with a wider mode than `mode`, never replaces
 * anything, and can later be told apart from a socket someone else bound
 * there. `listen` binds the name it is given and returns the listener.
 *
 * The socket is bound under a hidden random name beside `path`, under a
 * umask that leaves exactly `mode` (process-wide, so it is restored before
 * any other code runs: listen is synchronous; Linux applies the umask to a
 * socket even under a default ACL), and chmod-ed to `mode` as well: a
 * directory's default ACL can narrow it further (the group could not
 * connect), never widen it. It is then
 * hard-linked to `path`: link fails rather than replace anything that
 * appeared there meanwhile, and never follows a symlink. The hidden name
 * stays while the listener lives: Bun's listener.stop() unlinks the name
 * it bound, so it removes that name, never `path`, which removeSocketFile
 * removes only while it is still ours. Synchronous throughout, so no client
 * is accepted before the caller holds the listener.
 */
export function bindSocketFile<L extends { stop(closeActive?: boolean): void }>(
  path: string,
  mode: number,
  listen: (name: string) => L,
): { listener: L; identity: SocketFileIdentity } {
  for (let attempt = 1; ; attempt++) {
    const hidden = hiddenName(path);
    let listener: L;
    const umask = process.umask(0o777 & ~mode);
    try {
      listener = listen(hidden);
    } catch (e) {
      if (errno(e) === "EADDRINUSE" && attempt < BIND_ATTEMPTS) continue;
      throw new SocketPathError("CannotListen", path, `socket path ${path}: cannot listen (${errno(e)})`, errno(e));
    } finally {
      process.umask(umask);
    }
    let held: number | undefined;
    try {
      // The file bound, held by a descriptor that stays on it whatever becomes of the name (not
      // followed): in a directory another user may write, that user could replace the name with a
      // symbolic link, which a chmod by name would follow to any file.
      held = openSync(hidden, O_PATH | constants.O_NOFOLLOW);
      const stat = fstatSync(held);
      if (!stat.isSocket() || stat.uid !== process.geteuid?.()) throw replaced(path, hidden);
      chmodSync(`/proc/self/fd/${held}`, mode);
      linkSync(hidden, path);
      // Linked by name: the path must now be the file bound, not what took the hidden name meanwhile.
      if (!sameFile(path, stat)) {
        unlinkSync(path);
        throw replaced(path, hidden);
      }
      return { listener, identity: { dev: stat.dev, ino: stat.ino, hidden } };
    } catch (e) {
      // Unlinks the hidden name too.
      listener.stop(true);
      if (e instanceof SocketPathError) throw e;
      if (errno(e) === "EEXIST") {
        throw new SocketPathError("InUse", path, `socket path ${path} was taken by another process while binding; refusing to replace it`);
      }
      throw new SocketPathError("CannotListen", path, `socket path ${path}: cannot listen (${errno(e)})`, errno(e));
    } finally {
      if (held !== undefined) closeSync(held);
    }
  }
}

/**
 * A random hidden name in the socket's own directory that fits sun_path:
 * `.NAME.XXXXXXXX` beside NAME, or `.XXXXXXXX` where the path is near the
 * limit. Absolute where it fits: /proc/net/unix lists the name a socket was
 * bound by, and only an absolute one lets another process starting at the
 * same path find this server there (listedAsListening) instead of probing it.
 */
function hiddenName(path: string): string {
  const prefixes = [resolve(path), path].flatMap((p) => [inDirectoryOf(p, `.${basename(p)}.`), inDirectoryOf(p, ".")]);
  const prefix = prefixes.find((p) => Buffer.byteLength(p) + HIDDEN_RANDOM <= MAX_SOCKET_PATH) ?? prefixes[prefixes.length - 1]!;
  const room = Math.min(HIDDEN_RANDOM, MAX_SOCKET_PATH - Buffer.byteLength(prefix));
  if (room < 1) {
    throw new SocketPathError("TooLong", path, `socket directory ${dirname(path)} leaves no room in sun_path for a name to bind; allowed at most ${MAX_SOCKET_DIRECTORY} bytes`);
  }
  return prefix + Array.from(crypto.getRandomValues(new Uint8Array(room)), (b) => HIDDEN_ALPHABET[b % HIDDEN_ALPHABET.length]).join("");
}

/**
 * Whether `name`, an entry of the socket's directory, is a hidden name that
 * hiddenName gives `path`: `.NAME.` and HIDDEN_RANDOM characters of its
 * alphabet, exactly. The shorter `.XXXXXXXX` of a path near the sun_path
 * limit names no path, so it is never taken for this one's.
 */
function isHiddenNameOf(path: string, name: string): boolean {
  const prefix = `.${basename(path)}.`;
  if (name.length !== prefix.length + HIDDEN_RANDOM || !name.startsWith(prefix)) return false;
  for (let i = prefix.length; i < name.length; i++) if (!HIDDEN_ALPHABET.includes(name[i]!)) return false;
  return true;
}

/** `name` in the directory of `path`, as text (path.join would fold a name of "." into the directory itself). */
function inDirectoryOf(path: string, name: string): string {
  const dir = dirname(path);
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

/** Whether `path` still leads to the socket file we bound (`ours`): not removed, nor replaced by another file. */
export function socketFileInPlace(path: string, ours: SocketFileIdentity): boolean {
  return sameFile(path, ours);
}

/**
 * Puts the socket file we bound (`ours`) back at `path` where it was
 * removed (a cleanup of the runtime directory, an operator's rm), linked
 * again from the hidden name it was bound by, while that is still it; true
 * once it is in place again. Anything at `path` (another server's socket, a
 * file) is left alone, as is a socket whose hidden name is gone too (its
 * directory removed): link never replaces nor follows.
 */
export function restoreSocketFile(path: string, ours: SocketFileIdentity): boolean {
  if (ours.hidden === undefined || !sameFile(ours.hidden, ours)) return false;
  try {
    linkSync(ours.hidden, path);
  } catch {
    return false;
  }
  // Linked by name: the hidden name may have been taken by another file since it was looked at.
  if (sameFile(path, ours)) return true;
  try {
    unlinkSync(path);
  } catch {}
  return false;
}

/**
 * Removes the socket at `path` if it is still the one we bound (same device
 * and inode): a socket another instance bound there since, after ours was
 * moved or removed, is left alone, as is anything that is not a socket.
 */
export function removeSocketFile(path: string, ours: SocketFileIdentity): void {
  try {
    const stat = lstatSync(path);
    if (stat.isSocket() && sameIdentity(stat, ours)) unlinkSync(path);
  } catch {
    // already gone
  }
}
