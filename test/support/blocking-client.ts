/**
 * A client that connects, writes and leaves within one synchronous call
 * (socket, connect, write, close through libc): a server in the same process
 * sees none of it until the caller yields to the loop, so the connection
 * waits in the kernel's accept queue meanwhile.
 */
import { ptr } from "bun:ffi";
import { openLibc } from "../../src/io/libc.ts";

export const AF_UNIX = 1;
export const SOCK_STREAM = 1;

const opened = openLibc({
  socket: { args: ["i32", "i32", "i32"], returns: "i32" },
  connect: { args: ["i32", "ptr", "u32"], returns: "i32" },
  write: { args: ["i32", "ptr", "u64"], returns: "i64" },
  close: { args: ["i32"], returns: "i32" },
});

/** Connects to `path`, writes `bytes` and closes; false when the connection was refused (nothing written). */
export function connectWriteClose(path: string, bytes: Uint8Array): boolean {
  if (!opened.library) throw new Error(opened.detail);
  const libc = opened.library.symbols;
  const address = unixAddress(path);
  const fd = libc.socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) throw new Error("socket() failed");
  try {
    if (libc.connect(fd, ptr(address), address.length) !== 0) return false;
    if (Number(libc.write(fd, ptr(bytes), bytes.length)) !== bytes.length) throw new Error(`write to ${path} fell short`);
    return true;
  } finally {
    libc.close(fd);
  }
}

/** A struct sockaddr_un naming `path`, for connect(2) through libc. */
export function unixAddress(path: string): Uint8Array {
  const address = new Uint8Array(110);
  address[0] = AF_UNIX;
  address.set(Buffer.from(path), 2);
  return address;
}
