/**
 * Executables measured as a device runs them: read from disk, not straight
 * from the page cache of the build that just wrote them. A freshly written
 * file sits in the page cache in large folios, and a process that maps it
 * gets whole folios mapped around each page it touches: the same binary then
 * shows about 6 MiB more resident memory than once its pages have been read
 * back from disk (bench/FINDINGS.md). So the benchmark writes each program it
 * runs back to disk and drops its cached pages first.
 */
import { FFIType } from "bun:ffi";
import { closeSync, fsyncSync, openSync, realpathSync, statfsSync } from "node:fs";
import { openLibc } from "../io/libc.ts";

const POSIX_FADV_DONTNEED = 4;
/** statfs f_type of tmpfs: its page cache is the file's only storage. */
const TMPFS_MAGIC = 0x01021994;

/**
 * Writes the executable at `path` back to disk and drops its pages from the
 * page cache. Returns why it could not (undefined when done): on tmpfs the
 * cache is the file; the running executable's mapped pages stay (the
 * compiled `audio-agent bench` measuring itself); or no libc.
 */
export function dropPageCache(path: string): string | undefined {
  try {
    if (statfsSync(path).type === TMPFS_MAGIC) return "it is on tmpfs, whose page cache is the file itself";
    if (realpathSync(path) === realpathSync(process.execPath)) return "it is the running benchmark, whose pages stay mapped";
    const fd = openSync(path, "r");
    try {
      fsyncSync(fd);
      return fadviseDontNeed(fd);
    } finally {
      closeSync(fd);
    }
  } catch (e) {
    return (e as Error).message;
  }
}

function fadviseDontNeed(fd: number): string | undefined {
  const { library, detail } = openLibc({ posix_fadvise: { args: [FFIType.i32, FFIType.i64, FFIType.i64, FFIType.i32], returns: FFIType.i32 } });
  if (!library) return `posix_fadvise cannot be called: ${detail}`;
  try {
    // posix_fadvise returns the error number itself (0: done), not -1 and errno.
    const error = library.symbols.posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    return error === 0 ? undefined : `posix_fadvise failed with error ${error}`;
  } finally {
    library.close();
  }
}
