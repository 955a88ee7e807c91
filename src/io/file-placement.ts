import { fstatSync, readlinkSync, statSync, type Stats } from "node:fs";

/**
 * Where a file open for writing stands against the path it was opened by:
 * still there (`in_place`); left with no name at all (`removed`: an rm, its
 * directory removed; its blocks are freed only once its descriptors close);
 * with a name elsewhere and no file at the path (`moved`: renamed aside, its
 * directory renamed); or another file at the path (`replaced`).
 */
export type FilePlacement = "in_place" | "removed" | "moved" | "replaced";

/**
 * Where the file open on `fd` stands against `path`: the descriptor's link
 * count (0: removed), then the (device, inode) the path leads to now,
 * symbolic links followed as the open followed them. One fstat and at most
 * one stat; throws as fstat does (EBADF: nothing open there), and as stat
 * does where it cannot tell what the path leads to (EACCES: a directory on
 * the way no longer searchable; EIO).
 */
export function filePlacement(fd: number, path: string): FilePlacement {
  const file = fstatSync(fd);
  if (file.nlink === 0) return "removed";
  const at = statOrNothing(path);
  if (at === undefined) return "moved";
  return at.dev === file.dev && at.ino === file.ino ? "in_place" : "replaced";
}

/** Errors of a stat that say the path leads to no file: nothing there, a file where a directory should be, a loop of symbolic links. */
const NOTHING_THERE = new Set(["ENOENT", "ENOTDIR", "ELOOP"]);

/** What `path` leads to; undefined where it leads to nothing (missing, its directory gone); throws where that cannot be told. */
function statOrNothing(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (e) {
    if (NOTHING_THERE.has((e as NodeJS.ErrnoException).code ?? "")) return undefined;
    throw e;
  }
}

/** The name the file open on `fd` has now; undefined once it has none (removed) or is not a file of a path. */
export function fileName(fd: number): string | undefined {
  const target = readlinkSync(`/proc/self/fd/${fd}`);
  return target.startsWith("/") && !target.endsWith(" (deleted)") ? target : undefined;
}
