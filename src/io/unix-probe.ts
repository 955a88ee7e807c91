import { ptr, type Library } from "bun:ffi";
import { AF_UNIX, ERRNO_LOCATION, lastErrnoName, LIBC_CANDIDATES, openLibc, SOCK_CLOEXEC, SOCK_STREAM, unixAddress } from "./libc.ts";
import { within } from "./within.ts";

/** O_NONBLOCK as a socket() flag: the same on x86-64 and aarch64. */
const SOCK_NONBLOCK = 0o4000;

const SYMBOLS = {
  socket: { args: ["i32", "i32", "i32"], returns: "i32" },
  connect: { args: ["i32", "ptr", "u32"], returns: "i32" },
  close: { args: ["i32"], returns: "i32" },
  __errno_location: ERRNO_LOCATION,
} as const;

/** libc once loaded, or why it could not be: then the probe asks through Bun.connect. */
let libc: Library<typeof SYMBOLS> | string | undefined;

/**
 * Loads libc for the probe from `candidates` in place of the one loaded (by
 * default from LIBC_CANDIDATES, on first use): lets tests exercise the probe
 * where no libc can be loaded.
 */
export function useProbeLibc(candidates: readonly string[] = LIBC_CANDIDATES): Library<typeof SYMBOLS> | string {
  if (typeof libc === "object") libc.close();
  const opened = openLibc(SYMBOLS, candidates);
  return (libc = opened.library ?? opened.detail);
}

/**
 * Whether a server listens at the Unix socket `path`, asked by connecting
 * (and closing at once): true if it accepts, or its accept queue is full (a
 * server stopped or busy is still alive); false if the connection is
 * refused or there is no such file; for any other failure (EACCES,
 * EPROTOTYPE: a live socket of another type, ...) its errno code, which
 * tells neither. Asked of libc with a non-blocking connect, which on a Unix
 * socket answers at once; where libc cannot be loaded, through Bun.connect,
 * which reports a full queue as refused and is given `timeoutMs` (no answer
 * by then: true, a server that accepts slowly).
 */
export async function probeUnixSocket(path: string, timeoutMs: number): Promise<boolean | string> {
  const library = libc ?? useProbeLibc();
  return typeof library === "string" ? probeWithBun(path, timeoutMs) : connectOnce(library, path);
}

function connectOnce(library: Library<typeof SYMBOLS>, path: string): boolean | string {
  const { socket, connect, close } = library.symbols;
  const fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return lastErrnoName(library.symbols);
  try {
    // A relative path beginning with "@" is a file, not an abstract name: "./" keeps it one.
    const address = unixAddress(path.startsWith("@") ? `./${path}` : path);
    if (connect(fd, ptr(address), address.length) === 0) return true;
    const code = lastErrnoName(library.symbols);
    // EAGAIN (named EWOULDBLOCK too, one number): the server's accept queue is full. EINPROGRESS:
    // Linux never answers it for a Unix socket, another kernel would for a connection the server
    // has yet to complete. Alive, both.
    if (code === "EAGAIN" || code === "EWOULDBLOCK" || code === "EINPROGRESS") return true;
    return code === "ECONNREFUSED" || code === "ENOENT" ? false : code;
  } finally {
    close(fd);
  }
}

function probeWithBun(path: string, timeoutMs: number): Promise<boolean | string> {
  const attempt = Bun.connect({ unix: path, socket: { open: (socket) => void socket.end(), data() {} } }).then(
    () => true,
    (e: NodeJS.ErrnoException) => (e?.code === "ECONNREFUSED" || e?.code === "ENOENT" ? false : (e?.code ?? String(e))),
  );
  return within(attempt, timeoutMs, true);
}
