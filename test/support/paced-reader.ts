/**
 * A client that reads as the Go original's AudioClient does under a real-time
 * consumer: a fixed number of bytes at a time, at a steady pace, through libc
 * (recv with MSG_DONTWAIT, so the loop the server under test runs on is never
 * blocked). Unlike a Bun socket, which takes whatever the kernel holds once
 * resumed, it leaves the server's socket buffer full and frees it a little at
 * a time, so the server sees the buffer writable again only late (a Unix
 * socket polls writable once a quarter of its send buffer is used).
 */
import { ptr } from "bun:ffi";
import { AF_INET, AF_UNIX, MSG_DONTWAIT, openLibc, SOCK_STREAM, unixAddress } from "../../src/io/libc.ts";
import { concatBytes } from "./bytes.ts";
import { until } from "./wait.ts";
import { loopbackAddress } from "./loopback-address.ts";

const opened = openLibc({
  socket: { args: ["i32", "i32", "i32"], returns: "i32" },
  connect: { args: ["i32", "ptr", "u32"], returns: "i32" },
  recv: { args: ["i32", "ptr", "u64", "i32"], returns: "i64" },
  setsockopt: { args: ["i32", "i32", "i32", "ptr", "u32"], returns: "i32" },
  bind: { args: ["i32", "ptr", "u32"], returns: "i32" },
  listen: { args: ["i32", "i32"], returns: "i32" },
  accept4: { args: ["i32", "ptr", "ptr", "i32"], returns: "i32" },
  close: { args: ["i32"], returns: "i32" },
});

export interface PacedReader {
  /** Everything read so far, in one buffer. */
  bytes(): Uint8Array;
  /** Reads up to `max` bytes now (what the kernel holds; none when it holds none); how many were read. */
  read(max: number): number;
  /** Stops the steady reads, leaving the connection open and what arrives unread. */
  pause(): void;
  /** Reads on at full speed until the server ends the connection. */
  readToEnd(timeoutMs?: number): Promise<Uint8Array>;
}

/**
 * Connects to `path` and reads `chunk` bytes every `everyMs` (with `everyMs` 0, only when
 * told: read()); `defer` (see useCleanup) closes it.
 */
export function pacedReader(defer: (cleanup: () => unknown) => void, path: string, chunk: number, everyMs: number): PacedReader {
  if (!opened.library) throw new Error(opened.detail);
  const libc = opened.library.symbols;
  const address = unixAddress(path);
  const fd = libc.socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0) throw new Error("socket() failed");
  if (libc.connect(fd, ptr(address), address.length) !== 0) {
    libc.close(fd);
    throw new Error(`connect to ${path} failed`);
  }
  return readerOn(defer, fd, chunk, everyMs);
}

/**
 * pacedReader over TCP to 127.0.0.1:`port`, its receive buffer set to
 * `receiveBytes` before it connects (SO_RCVBUF; the kernel doubles it), so
 * that the window it offers, and what it holds unread, stay that small.
 */
export function pacedTcpReader(defer: (cleanup: () => unknown) => void, port: number, receiveBytes: number, chunk: number, everyMs: number): PacedReader {
  if (!opened.library) throw new Error(opened.detail);
  const libc = opened.library.symbols;
  const [SOL_SOCKET, SO_RCVBUF] = [1, 8];
  const address = loopbackAddress(port);
  const fd = libc.socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw new Error("socket() failed");
  const size = new Int32Array([receiveBytes]);
  if (libc.setsockopt(fd, SOL_SOCKET, SO_RCVBUF, ptr(size), 4) !== 0 || libc.connect(fd, ptr(address), address.length) !== 0) {
    libc.close(fd);
    throw new Error(`cannot connect to 127.0.0.1:${port} with a ${receiveBytes}-byte receive buffer`);
  }
  return readerOn(defer, fd, chunk, everyMs);
}

/**
 * A Unix server at `path` whose one client is read as pacedReader reads:
 * `chunk` bytes every `everyMs`. accepted() resolves with the reader once a
 * client has connected; `defer` closes both.
 */
export function pacedServer(defer: (cleanup: () => unknown) => void, path: string, chunk: number, everyMs: number): { accepted(timeoutMs?: number): Promise<PacedReader> } {
  if (!opened.library) throw new Error(opened.detail);
  const libc = opened.library.symbols;
  const SOCK_NONBLOCK = 0o4000;
  const address = unixAddress(path);
  // Non-blocking, so that looking for a client never holds up the loop the front runs on.
  const listening = libc.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (listening < 0) throw new Error("socket() failed");
  defer(() => libc.close(listening));
  if (libc.bind(listening, ptr(address), address.length) !== 0 || libc.listen(listening, 1) !== 0) throw new Error(`cannot listen at ${path}`);
  return {
    async accepted(timeoutMs = 10_000) {
      let fd = -1;
      await until(() => (fd = libc.accept4(listening, null, null, 0)) >= 0, `a client at ${path}`, timeoutMs);
      return readerOn(defer, fd, chunk, everyMs);
    },
  };
}

/** The PacedReader of the connected socket `fd`. */
function readerOn(defer: (cleanup: () => unknown) => void, fd: number, chunk: number, everyMs: number): PacedReader {
  const libc = opened.library!.symbols;
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  let ended = false;
  let open = true;
  /** One recv of at most `max` bytes; false once nothing came (EAGAIN) or the peer ended. */
  const readOnce = (max: number): boolean => {
    if (ended) return false;
    const n = Number(libc.recv(fd, ptr(buffer), Math.min(max, buffer.length), MSG_DONTWAIT));
    if (n === 0) ended = true;
    if (n <= 0) return false;
    chunks.push(buffer.slice(0, n));
    return true;
  };
  let timer: ReturnType<typeof setInterval> | undefined = everyMs > 0 ? setInterval(() => readOnce(chunk), everyMs) : undefined;
  const close = () => {
    clearInterval(timer);
    timer = undefined;
    if (open) libc.close(fd);
    open = false;
  };
  defer(close);
  return {
    bytes: () => concatBytes(chunks),
    pause() {
      clearInterval(timer);
      timer = undefined;
    },
    read(max) {
      const before = chunks.length;
      readOnce(max);
      return chunks.length > before ? chunks[chunks.length - 1]!.length : 0;
    },
    async readToEnd(timeoutMs = 5000) {
      clearInterval(timer);
      timer = undefined;
      await until(() => {
        while (readOnce(buffer.length));
        return ended;
      }, "the server to end the connection", timeoutMs);
      close();
      return concatBytes(chunks);
    },
  };
}
