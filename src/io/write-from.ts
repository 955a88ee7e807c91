import { fstatSync, ftruncateSync, write, writeSync } from "node:fs";

/**
 * Writes `bytes` to `fd` from `at` on until all of it is written or a write
 * fails (a signal's EINTR is tried again): how far it got, and the errno name
 * ("EAGAIN", "EPIPE", ...) of the failure that stopped it short.
 */
export function writeFrom(fd: number, bytes: Uint8Array, at = 0, end = bytes.length): { at: number; code?: string } {
  while (at < end) {
    try {
      at += writeSync(fd, bytes, at, end - at);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? String(e);
      if (code !== "EINTR") return { at, code };
    }
  }
  return { at };
}

/**
 * writeFrom in the thread pool (fs.write), for a file on a disk that may
 * stop taking writes (frozen, a card stalled in its write, a hung mount):
 * that holds up a thread of the pool, not the event loop. `done` is told
 * how far it got and the errno name of the failure that stopped it short.
 */
export function writeFromOffLoop(fd: number, bytes: Uint8Array, at: number, end: number, done: (at: number, code?: string) => void): void {
  write(fd, bytes, at, end - at, null, (error, n) => {
    const code = error ? (error.code ?? String(error)) : undefined;
    if (code === "EINTR" || (code === undefined && at + n < end)) return writeFromOffLoop(fd, bytes, code ? at : at + n, end, done);
    done(code ? at : end, code);
  });
}

/**
 * The last `bytes` of the file `fd` is open on, which a write stopped
 * part-way by a failure had written, taken off again (best effort): whether
 * they were. The file is left as it is where they cannot be (fewer bytes
 * than that in it: someone else emptied it meanwhile).
 */
export function takeBack(fd: number, bytes: number): boolean {
  try {
    const size = fstatSync(fd).size;
    // ftruncate takes a negative length as 0: it would empty the file, taking off what others wrote.
    if (size < bytes) return false;
    ftruncateSync(fd, size - bytes);
    return true;
  } catch {
    return false;
  }
}
