/**
 * A client that connects, writes and leaves within one synchronous call
 * (socket, connect, write, close through libc): a server in the same process
 * sees none of it until the caller yields to the loop, so the connection
 * waits in the kernel's accept queue meanwhile.
 */
import { ptr } from "bun:ffi";
import { AF_INET, AF_UNIX, openLibc, SOCK_STREAM, unixAddress } from "../../src/io/libc.ts";
import { loopbackAddress } from "./loopback-address.ts";

const opened = openLibc({
  socket: { args: ["i32", "i32", "i32"], returns: "i32" },
  connect: { args: ["i32", "ptr", "u32"], returns: "i32" },
  write: { args: ["i32", "ptr", "u64"], returns: "i64" },
  setsockopt: { args: ["i32", "i32", "i32", "ptr", "u32"], returns: "i32" },
  close: { args: ["i32"], returns: "i32" },
});

/**
 * Connects to 127.0.0.1:`port` over TCP and resets the connection at once
 * (SO_LINGER 0, then close): a server in the same process accepts it only
 * once the caller yields to the loop, by then reset, its peer's address gone.
 */
export function connectAndReset(port: number): void {
  if (!opened.library) throw new Error(opened.detail);
  const libc = opened.library.symbols;
  const [SOL_SOCKET, SO_LINGER] = [1, 13];
  const address = loopbackAddress(port);
  const fd = libc.socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw new Error("socket() failed");
  try {
    if (libc.connect(fd, ptr(address), address.length) !== 0) throw new Error(`cannot connect to 127.0.0.1:${port}`);
    const linger = new Int32Array([1, 0]);
    if (libc.setsockopt(fd, SOL_SOCKET, SO_LINGER, ptr(linger), linger.byteLength) !== 0) throw new Error("setsockopt(SO_LINGER) failed");
  } finally {
    libc.close(fd);
  }
}

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
