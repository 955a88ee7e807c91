import type { Socket } from "bun";
import {
  FrameParser,
  MessageType,
  OUTPUT_MAGIC,
  ProtocolError,
  wallClockMs,
  type ParsedMessage,
} from "../protocol/index.ts";
import type { Report } from "../transport/report.ts";
import { connectWithBackoff } from "../transport/unix-client.ts";

export interface OutputClientOptions {
  path: string;
  report: Report;
  /** Every valid message received, OpusFrame or not (a wire sink records them all). */
  onMessage: (message: ParsedMessage) => void;
  /** Give up with ConnectTimeoutError after this long without a server; undefined waits forever. */
  connectTimeoutMs?: number;
  /** Connected: e.g. apply socket buffer sizes to its fd. */
  onConnect?: (socket: Socket<unknown>) => void;
  /** A connection ended, with the reason. */
  onDisconnect?: (reason: string) => void;
  /** Age (ms) of the first OpusFrame of each read: arrival minus header timestamp. */
  onFrameAge?: (ms: number) => void;
}

/**
 * The main-app side of the output channel: connects (with the Go original's
 * backoff), receives OpusFrames, and reconnects whenever the server goes away.
 * Heartbeat/Ack/Config/Stop from a server are tolerated and passed on; a
 * framing violation ends that connection (no resync) and a new one is made.
 */
export class OutputClient {
  framesReceived = 0;
  bytesReceived = 0;
  otherMessages = 0;
  protocolErrors = 0;
  connects = 0;
  /** Unix ms of the last read that brought an OpusFrame; 0 before the first. */
  lastFrameUnixMs = 0;
  private socket: Socket<unknown> | undefined;
  private parser = new FrameParser(OUTPUT_MAGIC);
  private closedWaiter: ((reason: string) => void) | undefined;
  private readonly abort = new AbortController();
  private stopping = false;
  private failure: Error | undefined;

  constructor(private readonly options: OutputClientOptions) {}

  get connected(): boolean {
    return this.socket !== undefined;
  }

  /**
   * Receives until stop() (or, with `once`, until the first connection ends).
   * Rejects with ConnectTimeoutError when no server appears in time.
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
            data: (s, chunk) => this.receive(s, chunk),
            drain: () => {},
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
      this.socket = socket;
      this.parser = new FrameParser(OUTPUT_MAGIC);
      this.connects++;
      report("info", this.connects === 1 ? "connected" : "reconnected", { socket: path });
      this.options.onConnect?.(socket);
      const reason = await ended;
      if (this.failure) throw this.failure;
      report("info", "disconnected", { socket: path, reason });
      this.options.onDisconnect?.(reason);
      if (once) return;
    }
  }

  /** Stops receiving and closes the connection. */
  stop(): void {
    this.stopping = true;
    this.abort.abort();
    const socket = this.socket;
    if (socket) {
      this.closed(socket, "stopped");
      socket.end();
    }
  }

  private receive(socket: Socket<unknown>, chunk: Uint8Array): void {
    if (socket !== this.socket) return;
    this.bytesReceived += chunk.length;
    const parser = this.parser;
    const before = this.framesReceived;
    try {
      parser.push(chunk);
      for (let m = parser.next(); m; m = parser.next()) {
        if (m.type === MessageType.OpusFrame) {
          // The first frame of a read is its oldest: one age sample per read keeps floods cheap.
          if (this.framesReceived++ === before) {
            const now = wallClockMs();
            this.lastFrameUnixMs = now;
            this.options.onFrameAge?.(now - m.timestampMs);
          }
        } else this.otherMessages++;
        this.options.onMessage(m);
        if (this.socket !== socket) return; // onMessage stopped us
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) {
        // The sink failed (e.g. disk full): that ends the run, not just this connection.
        this.failure = e as Error;
        this.stop();
        return;
      }
      this.protocolErrors++;
      this.options.report("warn", "framing violation from server; disconnecting", {
        socket: this.options.path,
        error: e.message,
      });
      this.end(socket, `protocol error: ${e.message}`);
    }
  }

  private end(socket: Socket<unknown>, reason: string): void {
    this.closed(socket, reason);
    socket.terminate();
  }

  private closed(socket: Socket<unknown>, reason: string): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    if (reason === "server closed" && this.parser.pending > 0) {
      reason = `server closed mid-message (${this.parser.pending} byte(s) of a message lost)`;
    }
    const wake = this.closedWaiter;
    this.closedWaiter = undefined;
    wake?.(reason);
  }
}
