import { constants, fstatSync, openSync } from "node:fs";

/**
 * A description of its own, opened non-blocking through /proc/self/fd, of
 * the pipe or terminal `fd` is open on: a writer that must never wait for
 * its reader sets the flag there, where it reaches no one else who shares
 * `fd`'s description. Undefined for anything else (a file, a socket), and
 * when it cannot be opened again (another user's pipe: EACCES). O_NOCTTY: a
 * terminal opened again must not become the process's controlling one.
 */
export function ownNonBlockingDescription(fd: number): number | undefined {
  try {
    const kind = fstatSync(fd);
    if (!kind.isFIFO() && !kind.isCharacterDevice()) return undefined;
    return openSync(`/proc/self/fd/${fd}`, constants.O_WRONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch {
    return undefined;
  }
}
