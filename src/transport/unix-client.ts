import type { Socket } from "bun";
import { statSync } from "node:fs";
import { backoffDelayMs, sessionBackoffMs } from "./backoff.ts";
import { fileKind, notAStreamSocket } from "./socket-file.ts";
import type { Report } from "./report.ts";

export interface ConnectionHandler {
  /** The connection is made, before any of its data and before the connect resolves. */
  open?(socket: Socket<unknown>): void;
  data(socket: Socket<unknown>, chunk: Uint8Array): void;
  drain(socket: Socket<unknown>): void;
  close(socket: Socket<unknown>, reason: string): void;
}

/** Connecting gave up: the deadline passed or the caller aborted. `problem` says so without the path, for a line that names it with its flag. */
export class ConnectTimeoutError extends Error {
  readonly problem: string;

  constructor(
    readonly path: string,
    readonly waitedMs: number,
    readonly lastError: string,
  ) {
    // In ms to the second: a tenth would read "within 0.0 s" for a timeout of 0.01.
    const within = `within ${Math.round(waitedMs) / 1000} s (last error: ${lastError})`;
    super(`could not connect to ${path} ${within}`);
    this.problem = `could not connect ${within}`;
    this.name = "ConnectTimeoutError";
  }
}

/** Connecting cannot succeed, ever: connect(2) failed for good, or the path can never be a server's socket. */
export class ConnectError extends Error {
  readonly problem: string;

  constructor(
    readonly path: string,
    why: string,
  ) {
    super(`cannot connect to ${path}: ${why}`);
    this.problem = `cannot connect: ${why}`;
    this.name = "ConnectError";
  }
}

export interface ConnectOptions {
  path: string;
  handler: ConnectionHandler;
  report: Report;
  /** Give up after this long without a connection; undefined waits forever. */
  timeoutMs?: number;
  /** Aborting stops the retries (resolves the pending attempt with an error). */
  signal?: AbortSignal;
  /** While no server answers: said at the first failed attempt, then again this often (ms); 30 s by default. */
  remindEveryMs?: number;
  /** Called at the first failed attempt: no server is there yet. */
  onWaiting?: () => void;
  /** A server accepted, then closed before the connection was made (see connectWithBackoff). */
  onReset?: () => void;
  /** Called just before each attempt's connect, to see what the path leads to as it is made. */
  beforeAttempt?: () => void;
  /** Called with each attempt's connect as it begins; it settles with the connection or connect(2)'s error. */
  onAttempt?: (connecting: Promise<Socket<unknown>>) => void;
}

/** How often a client still without a server says so. */
const WAITING_REMINDER_MS = 30_000;

const RETRYABLE = new Set(["ENOENT", "ECONNREFUSED", "ECONNRESET", "EAGAIN"]);

function code(e: unknown): string {
  return (e as NodeJS.ErrnoException)?.code ?? String((e as Error)?.message ?? e);
}

/**
 * Connects to a Unix socket server, retrying with the Go original's backoff
 * while the server is not there yet (ENOENT, ECONNREFUSED). Resolves with
 * the connected socket, rejects with ConnectTimeoutError after `timeoutMs`.
 * ECONNRESET is a server that accepted and closed before Bun saw the
 * connection made: Bun then fails the connect without reading what the
 * server sent on it. That is lost, so it is said and counted (onReset), and
 * the connect is tried again as after a session that ended at once: 50 ms
 * doubling per reset in a row, up to 5 s (sessionBackoffMs), so a server that
 * drops every client as it comes is not met 20 times a second.
 */
export async function connectWithBackoff(options: ConnectOptions): Promise<Socket<unknown>> {
  const { path, handler, report, timeoutMs, signal } = options;
  const remindEveryMs = options.remindEveryMs ?? WAITING_REMINDER_MS;
  const started = performance.now();
  let lastError = "none";
  let remindedAt = 0;
  /** Attempts that found no server: the backoff and the waiting lines count these, not resets. */
  let missed = 0;
  /** Attempts in a row a server closed as they were made: each a session ended at once, backed off as one. */
  let resets = 0;
  for (let attempt = 0; ; attempt++) {
    if (signal?.aborted) throw new ConnectTimeoutError(path, performance.now() - started, "aborted");
    options.beforeAttempt?.();
    try {
      const connecting = connectOnce(path, handler);
      options.onAttempt?.(connecting);
      const socket = await connecting;
      if (attempt > 0) report("debug", "connected after retries", { socket: path, attempts: attempt + 1 });
      return socket;
    } catch (e) {
      lastError = code(e);
      if (!RETRYABLE.has(lastError)) {
        throw new ConnectError(path, lastError);
      }
      // Bun reports most failures as ECONNREFUSED: a path that can never become a socket
      // (a regular file there, or a file where a directory should be) fails now, not at the timeout.
      const hopeless = neverASocket(path);
      if (hopeless) throw new ConnectError(path, hopeless);
    }
    const elapsed = performance.now() - started;
    const reset = lastError === "ECONNRESET";
    resets = reset ? resets + 1 : 0;
    if (reset) {
      // A server is there: no waiting for one, and the next attempt comes as soon as after a first miss.
      options.onReset?.();
      report("warn", "the server closed the connection as it was made: whatever it sent on it is lost", { socket: path });
    } else if (missed++ === 0) {
      report("info", "waiting for the server", { socket: path, error: lastError });
      options.onWaiting?.();
    } else if (elapsed - remindedAt >= remindEveryMs) {
      remindedAt = elapsed;
      report("info", "still waiting for the server", { socket: path, waited_s: +(elapsed / 1000).toFixed(1), error: lastError });
    }
    if (timeoutMs !== undefined && elapsed >= timeoutMs) throw new ConnectTimeoutError(path, elapsed, lastError);
    // The last wait is cut short so that the final attempt is made at the deadline.
    const delay = reset ? sessionBackoffMs(resets) : backoffDelayMs(missed - 1);
    await sleep(timeoutMs === undefined ? delay : Math.min(delay, timeoutMs - elapsed), signal);
  }
}

/** One connect to the server at `path`, its events passed to `handler`; rejects with connect(2)'s error. */
export function connectOnce(path: string, handler: ConnectionHandler): Promise<Socket<unknown>> {
  return Bun.connect({
    unix: path,
    socket: {
      binaryType: "uint8array",
      open: (s) => handler.open?.(s),
      data: (s, chunk) => handler.data(s, chunk),
      drain: (s) => handler.drain(s),
      close: (s, error) => handler.close(s, error ? `error: ${error.message}` : "server closed"),
      error: () => {},
    },
  });
}

/** Why `path` cannot be a socket a server will listen on, or undefined while it still may be. */
function neverASocket(path: string): string | undefined {
  try {
    // What connect(2) reaches: through a symbolic link, whose socket may be yet to come.
    // Synchronous: one stat per failed attempt, and node:fs/promises stays unloaded (see byte-source.ts).
    const stat = statSync(path);
    if (!stat.isSocket()) return `it is ${fileKind(stat)}, not a socket`;
    const other = notAStreamSocket(path);
    return other && `it is a ${other}; the protocol needs a stream socket (SOCK_STREAM)`;
  } catch (e) {
    return code(e) === "ENOTDIR" ? "a parent in the path is not a directory (ENOTDIR)" : undefined;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
