/**
 * A connected pair of Unix stream sockets (socketpair(2) through libc), for a
 * child's stdout that a player holds: Bun's own stdout pipe for a child is
 * read by Bun ahead of the test (about 256 KiB), so it cannot stand for a
 * player that stalls.
 */
import { ptr } from "bun:ffi";
import { closeSync, readSync } from "node:fs";
import { openLibc, setNonBlocking } from "../../src/transport/socket-options.ts";

const AF_UNIX = 1;
const SOCK_STREAM = 1;

/** Two connected descriptors: the child's end, and the player's (the test's). */
export function socketPair(): { childEnd: number; playerEnd: number } {
  const opened = openLibc({ socketpair: { args: ["i32", "i32", "i32", "ptr"], returns: "i32" } });
  if (!opened.library) throw new Error(opened.detail);
  try {
    const fds = new Int32Array(2);
    if (opened.library.symbols.socketpair(AF_UNIX, SOCK_STREAM, 0, ptr(fds)) !== 0) throw new Error("socketpair(AF_UNIX, SOCK_STREAM) failed");
    return { childEnd: fds[0]!, playerEnd: fds[1]! };
  } finally {
    opened.library.close();
  }
}

/**
 * Reads `fd` to its end (every writer gone) without blocking the test, and
 * closes it: the bytes it held. Fails after `timeoutMs`.
 */
export async function readToEnd(fd: number, timeoutMs = 30_000): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  const chunk = new Uint8Array(65536);
  const deadline = performance.now() + timeoutMs;
  try {
    const set = setNonBlocking(fd);
    if (!set.ok) throw new Error(set.message);
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, chunk);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EAGAIN") throw e;
        if (performance.now() > deadline) throw new Error(`fd ${fd} not at its end after ${timeoutMs} ms`);
        await Bun.sleep(10);
        continue;
      }
      if (n === 0) return Buffer.concat(chunks);
      chunks.push(chunk.slice(0, n));
    }
  } finally {
    closeSync(fd);
  }
}
