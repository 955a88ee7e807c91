/**
 * Connections a listener's kernel queue holds because nobody takes them:
 * what fills a stopped or busy server's accept queue.
 */
import { ptr } from "bun:ffi";
import { AF_UNIX, openLibc, SOCK_STREAM, unixAddress } from "../../src/io/libc.ts";

const SOCK_NONBLOCK = 0o4000;
const opened = openLibc({
  socket: { args: ["i32", "i32", "i32"], returns: "i32" },
  connect: { args: ["i32", "ptr", "u32"], returns: "i32" },
  close: { args: ["i32"], returns: "i32" },
});

/**
 * Non-blocking connects to `path`, made without yielding to the loop (so a
 * listener in this process accepts none), until one is refused or `atMost`
 * are held: the descriptors of those the kernel completed, for
 * closeConnections. Once one is refused the queue is full.
 */
export function queueConnections(path: string, atMost: number): number[] {
  if (!opened.library) throw new Error(opened.detail);
  const libc = opened.library.symbols;
  const address = unixAddress(path);
  const held: number[] = [];
  while (held.length < atMost) {
    const fd = libc.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) {
      closeConnections(held);
      throw new Error("socket() failed");
    }
    if (libc.connect(fd, ptr(address), address.length) !== 0) {
      libc.close(fd);
      break;
    }
    held.push(fd);
  }
  return held;
}

/** Closes what queueConnections held. */
export function closeConnections(fds: number[]): void {
  for (const fd of fds.splice(0)) opened.library?.symbols.close(fd);
}
