import { fstatSync, ftruncateSync, writeSync } from "node:fs";

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
