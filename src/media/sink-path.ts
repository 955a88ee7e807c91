import { closeSync, constants, fstatSync, ftruncateSync, lstatSync, openSync, readlinkSync, statSync, type Stats } from "node:fs";
import { dirname, isAbsolute, join } from "node:path";

/* Sink paths another user could have pointed elsewhere or made theirs: in a sticky directory others may write, as /tmp. */

/**
 * Opens the file at `path` to write (created 0644, truncated unless
 * `append`). In a directory that keeps its files to their owners (sticky)
 * and that others may write to, it does what the kernel's
 * fs.protected_symlinks=1 and fs.protected_regular=2 do where they are on,
 * whatever they are set to: a symbolic link in one anyone may write (mode
 * 1777, as /tmp) is followed only when it is this process's or the
 * directory owner's, and a regular file in one anyone or its group may
 * write (1777, 1770) that another user owns is neither truncated nor
 * written into. Otherwise another user could point the path of an agent run
 * as root at any file, or place a file of their own there and read the
 * audio. A link made there after the look is not followed (O_NOFOLLOW). A
 * file reached through a link that is followed is judged by the directory
 * it is in, as the kernel judges it.
 */
export function openForWriting(path: string, append: boolean): number {
  const flags = constants.O_WRONLY | constants.O_CREAT | (append ? constants.O_APPEND : 0);
  const { linked, follow } = lookedAt(path);
  const dir = stickyShared(dirname(path));
  if (dir === undefined) return openSync(path, flags | (append ? 0 : constants.O_TRUNC), 0o644);
  let fd: number;
  try {
    fd = openSync(path, flags | follow, 0o644);
  } catch (e) {
    throw refusedIfLinked(path, e);
  }
  const file = fstatSync(fd);
  // Through a link: the directory the file itself is in (undefined: not one that keeps files to their
  // owners); the link's own when that cannot be told.
  const real = linked ? directoryOfOpenFile(fd) : undefined;
  const home = real === undefined ? dir : stickyShared(real);
  if (file.isFile() && home !== undefined && !trustedIn(home, file.uid)) {
    closeSync(fd);
    throw refused(path, "a file", file.uid, home.path, home.kind);
  }
  // A file of ours with another name too: where fs.protected_hardlinks is 0 (the kernel's default)
  // another user may have linked any file of ours there, which would be written over.
  if (file.isFile() && home !== undefined && file.nlink > 1) {
    closeSync(fd);
    throw new UnsafeSinkError(path, `a file with ${file.nlink} names (hard links) in the ${home.kind} directory ${home.path}; refusing to write through it`);
  }
  if (!append && file.isFile()) ftruncateSync(fd, 0);
  return fd;
}

/** Links a path may pass through before the kernel gives up (ELOOP), as its own walk counts them. */
const MAX_LINKS = 40;

/**
 * The directories on the way to `path` (not its last name, which its open
 * judges), walked as the kernel walks them: a symbolic link among them in a
 * directory anyone may write that keeps files to their owners is followed
 * only when it is this process's or the directory owner's, as
 * fs.protected_symlinks follows any link of a path, whatever it is set to.
 * Throws UnsafeSinkError for another user's; a name that is missing is left
 * for the open to tell.
 */
function linksOnTheWay(path: string): void {
  const names = (isAbsolute(path) ? path : join(process.cwd(), path)).split("/").filter((name) => name !== "");
  names.pop();
  let at = "/";
  for (let links = 0; names.length > 0; ) {
    const name = names.shift()!;
    if (name === ".") continue;
    if (name === "..") {
      at = dirname(at);
      continue;
    }
    const next = join(at, name);
    const entry = lstatOrNothing(next);
    if (!entry?.isSymbolicLink()) {
      if (entry === undefined) return;
      at = next;
      continue;
    }
    const dir = stickyWorldWritable(at);
    if (dir !== undefined && !trustedIn(dir, entry.uid)) throw refused(path, `reached through ${next}, a symbolic link`, entry.uid, at);
    if (++links > MAX_LINKS) return;
    let target: string;
    try {
      target = readlinkSync(next);
    } catch {
      return; // gone since: the open tells
    }
    names.unshift(...target.split("/").filter((part) => part !== ""));
    if (isAbsolute(target)) at = "/";
  }
}

/** The entry at `path` itself; undefined where there is none to look at (missing, not a directory on the way, not searchable: the open tells). */
function lstatOrNothing(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/** A directory that keeps its files to their owners (sticky) and that others may write to. */
interface SharedDirectory {
  path: string;
  uid: number;
  kind: "world-writable" | "group-writable";
}

/** A directory anyone may write to that keeps its files to their owners (mode 1777, as /tmp), with its owner; undefined for any other. */
function stickyWorldWritable(path: string): SharedDirectory | undefined {
  const dir = stickyShared(path);
  return dir?.kind === "world-writable" ? dir : undefined;
}

/** A directory anyone or its group may write to that keeps its files to their owners (1777, 1770: protected_regular=2's), with its owner; undefined for any other. */
function stickyShared(path: string): SharedDirectory | undefined {
  const dir = statSync(path, { throwIfNoEntry: false });
  if (dir === undefined || (dir.mode & 0o1000) === 0) return undefined;
  if (dir.mode & 0o002) return { path, uid: dir.uid, kind: "world-writable" };
  return dir.mode & 0o020 ? { path, uid: dir.uid, kind: "group-writable" } : undefined;
}

/** Whether a file there that `uid` owns is trusted: this process's, or the directory owner's. */
function trustedIn(dir: { uid: number }, uid: number): boolean {
  return uid === process.geteuid?.() || uid === dir.uid;
}

/** The directory of the file open on `fd` (where a followed link led); undefined when it cannot be told. */
function directoryOfOpenFile(fd: number): string | undefined {
  try {
    return dirname(readlinkSync(`/proc/self/fd/${fd}`));
  } catch {
    return undefined;
  }
}

function refused(path: string, what: string, uid: number, dir: string, kind = "world-writable"): UnsafeSinkError {
  return new UnsafeSinkError(path, `${what} of another user (uid ${uid}) in the ${kind} directory ${dir}; refusing to write through it`);
}

/**
 * The flag an open of the sink at `path` takes (a FIFO's too, which is
 * opened apart from openForWriting) so that it follows no symbolic link
 * openForWriting would refuse: O_NOFOLLOW in a world-writable sticky
 * directory, unless a link there is this process's or the directory
 * owner's; 0 elsewhere. Throws UnsafeSinkError for another user's link
 * there now; an open that meets one made since fails with ELOOP
 * (refusedIfLinked tells it).
 */
export function sinkFollowFlag(path: string): number {
  return lookedAt(path).follow;
}

/**
 * The sink path as its open finds it: the world-writable sticky directory
 * it is in (undefined: none), whether a symbolic link of this process's or
 * the directory owner's is at the path (`linked`), and the flag the open
 * takes (see sinkFollowFlag). Throws UnsafeSinkError for another user's link
 * there or on the way.
 */
function lookedAt(path: string): { dir: SharedDirectory | undefined; linked: boolean; follow: number } {
  linksOnTheWay(path);
  const dir = stickyWorldWritable(dirname(path));
  if (dir === undefined) return { dir, linked: false, follow: 0 };
  const link = lstatSync(path, { throwIfNoEntry: false });
  if (!link?.isSymbolicLink()) return { dir, linked: false, follow: constants.O_NOFOLLOW };
  if (!trustedIn(dir, link.uid)) throw refused(path, "a symbolic link", link.uid, dir.path);
  return { dir, linked: true, follow: 0 };
}

/** What an open of the sink at `path` with sinkFollowFlag failing as `e` tells: ELOOP, another user's link made meanwhile, refused as such; anything else as it is. */
export function refusedIfLinked(path: string, e: unknown): unknown {
  if ((e as NodeJS.ErrnoException)?.code !== "ELOOP") return e;
  return refused(path, "a symbolic link", lstatSync(path, { throwIfNoEntry: false })?.uid ?? -1, dirname(path));
}

/** A sink path another user could have pointed elsewhere or made theirs (openForWriting): refused, `problem` telling why. */
export class UnsafeSinkError extends Error {
  readonly code = "EACCES";
  constructor(
    readonly path: string,
    readonly problem: string,
  ) {
    super(`sink ${path} is ${problem}`);
    this.name = "UnsafeSinkError";
  }
}
