/**
 * A client that connects, writes and leaves within one synchronous call
 * (socket, connect, write, close through libc): a server in the same process
 * sees none of it until the caller yields to the loop, so the connection
 * waits in the kernel's accept queue meanwhile.
 */
import { ptr } from "bun:ffi";
import { AF_UNIX, openLibc, SOCK_STREAM, unixAddress } from "../../src/io/libc.ts";

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
