/**
 * Executables measured as a device runs them: read from disk, not straight
 * from the page cache of the build that just wrote them. A freshly written
 * file sits in the page cache in large folios, and a process that maps it
 * gets whole folios mapped around each page it touches: the same binary then
 * shows about 6 MiB more resident memory than once its pages have been read
 * back from disk (bench/FINDINGS.md). So the benchmark writes each program it
 * runs back to disk and drops its cached pages first.
 */
import { dlopen, FFIType } from "bun:ffi";
import { closeSync, fsyncSync, openSync } from "node:fs";
import { LIBC_CANDIDATES } from "../transport/socket-options.ts";

const POSIX_FADV_DONTNEED = 4;

/** Writes `path` back to disk and drops its pages from the page cache; false (nothing dropped) where libc cannot be had. */
export function dropPageCache(path: string): boolean {
  const fd = openSync(path, "r");
  try {
    fsyncSync(fd);
    for (const name of LIBC_CANDIDATES) {
      try {
        const libc = dlopen(name, { posix_fadvise: { args: [FFIType.i32, FFIType.i64, FFIType.i64, FFIType.i32], returns: FFIType.i32 } });
        try {
          return libc.symbols.posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) === 0;
        } finally {
          libc.close();
        }
      } catch {
        // Not this libc: the next one.
      }
    }
    return false;
  } finally {
    closeSync(fd);
  }
}
