/**
 * A Unix socket bound at a path through libc, for tests of what a client or
 * server does when it finds one there: of another type than the protocol's
 * (SOCK_DGRAM, or a listening SOCK_SEQPACKET), or a listening SOCK_STREAM
 * that never accepts (a server stopped or busy).
 */
import { ptr } from "bun:ffi";
import { AF_UNIX, openLibc, SOCK_STREAM, unixAddress } from "../../src/io/libc.ts";

export const SOCK_SEQPACKET = 5;

/**
 * A socket of `type` bound at `path` (relative to this process's directory,
 * or absolute), listening with `backlog` if SOCK_SEQPACKET or SOCK_STREAM
 * (unless `backlog` is "not listening": a server bound and yet to listen);
 * returns its close.
 */
export function bindSocket(path: string, type: number, backlog: number | "not listening" = 4): () => void {
  const opened = openLibc({
    socket: { args: ["i32", "i32", "i32"], returns: "i32" },
    bind: { args: ["i32", "ptr", "u32"], returns: "i32" },
    listen: { args: ["i32", "i32"], returns: "i32" },
    close: { args: ["i32"], returns: "i32" },
  });
  if (!opened.library) throw new Error(opened.detail);
  const libc = opened.library.symbols;
  const address = unixAddress(path);
  const fd = libc.socket(AF_UNIX, type, 0);
  if (fd < 0 || libc.bind(fd, ptr(address), address.length) !== 0 || ((type === SOCK_SEQPACKET || type === SOCK_STREAM) && backlog !== "not listening" && libc.listen(fd, backlog) !== 0)) {
    throw new Error(`cannot bind a socket of type ${type} at ${path}`);
  }
  return () => {
    libc.close(fd);
    opened.library.close();
  };
}
