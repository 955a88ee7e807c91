import { within } from "./within.ts";

/**
 * Whether a server listens at the Unix socket `path`, asked by connecting
 * (and closing at once): true if it accepts, or has not answered within
 * `timeoutMs` (a server that accepts slowly is still alive); false if the
 * connection is refused or there is no such file; for any other failure
 * (EACCES, ENOTSOCK, ...) its errno code, which tells neither.
 */
export async function probeUnixSocket(path: string, timeoutMs: number): Promise<boolean | string> {
  const attempt = Bun.connect({ unix: path, socket: { open: (socket) => void socket.end(), data() {} } }).then(
    () => true,
    (e: NodeJS.ErrnoException) => (e?.code === "ECONNREFUSED" || e?.code === "ENOENT" ? false : (e?.code ?? String(e))),
  );
  return within(attempt, timeoutMs, true);
}
