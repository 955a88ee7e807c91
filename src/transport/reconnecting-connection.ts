import type { Socket } from "bun";
import type { Report } from "./report.ts";
import { connectWithBackoff } from "./unix-client.ts";

export interface ReconnectingConnectionOptions {
  path: string;
  report: Report;
  /** Give up with ConnectTimeoutError after this long without a server; undefined waits forever. */
  connectTimeoutMs?: number;
  data: (socket: Socket<unknown>, chunk: Uint8Array) => void;
  drain: (socket: Socket<unknown>) => void;
  /** A connection is up; it may already be closed again from here (close()). */
  onOpen: (socket: Socket<unknown>) => void;
  /**
   * The connection ended (the peer left, close() or stop() was called), before
   * any reconnect. May return a more precise reason to log.
   */
  onClose: (socket: Socket<unknown>, reason: string) => string | void;
}

/**
 * A client connection that comes back: connects with the Go original's
 * backoff, and after each disconnect connects again, until stop(). Both
 * clients (output recv, input send) keep their protocol logic and share this.
 */
export class ReconnectingConnection {
  /** Connections made so far. */
  connects = 0;
  /** Connections that ended other than by stop(): the server left, or we gave up on it. */
  connectionDrops = 0;
  private current: Socket<unknown> | undefined;
  private closedWaiter: ((reason: string) => void) | undefined;
  private readonly abort = new AbortController();
  private stopping = false;

  constructor(private readonly options: ReconnectingConnectionOptions) {}

  get socket(): Socket<unknown> | undefined {
    return this.current;
  }

  get stopped(): boolean {
    return this.stopping;
  }

  /**
   * Keeps a connection up until stop() (or, with `once`, until the first one
   * ends). Rejects with ConnectTimeoutError when no server appears in time.
   */
  async run(once = false): Promise<void> {
    const { path, report } = this.options;
    while (!this.stopping) {
      let socket: Socket<unknown>;
      try {
        socket = await connectWithBackoff({
          path,
          report,
          timeoutMs: this.options.connectTimeoutMs,
          signal: this.abort.signal,
          handler: {
            data: (s, chunk) => {
              if (s === this.current) this.options.data(s, chunk);
            },
            drain: (s) => {
              if (s === this.current) this.options.drain(s);
            },
            close: (s, reason) => this.closed(s, reason),
          },
        });
      } catch (e) {
        if (this.stopping) return;
        throw e;
      }
      if (this.stopping) {
        socket.end();
        return;
      }
      const ended = new Promise<string>((resolve) => (this.closedWaiter = resolve));
      this.current = socket;
      this.connects++;
      this.options.onOpen(socket);
      const reason = await ended;
      report("info", "disconnected", { socket: path, reason });
      if (once) return;
    }
  }

  /** Ends this connection (the peer misbehaved, or it is stuck); run() connects again. */
  close(socket: Socket<unknown>, reason: string, graceful = false): void {
    if (!this.closed(socket, reason)) return;
    if (graceful) socket.end();
    else socket.terminate();
  }

  /** Stops for good: closes the connection gracefully and ends run(). */
  stop(): void {
    this.stopping = true;
    this.abort.abort();
    const socket = this.current;
    if (socket) this.close(socket, "stopped", true);
  }

  private closed(socket: Socket<unknown>, reason: string): boolean {
    if (socket !== this.current) return false;
    this.current = undefined;
    if (!this.stopping) this.connectionDrops++;
    const precise = this.options.onClose(socket, reason) ?? reason;
    const wake = this.closedWaiter;
    this.closedWaiter = undefined;
    wake?.(precise);
    return true;
  }
}
