import type { Socket } from "bun";
import { MessageType, OUTPUT_MAGIC } from "../protocol/index.ts";
import { FrameQueue, type DropPolicy } from "../transport/frame-queue.ts";
import { DropReason, FrameStats } from "../transport/frame-stats.ts";
import { FrameWriter, type FrameWriterOptions } from "../transport/frame-writer.ts";
import type { Report } from "../transport/report.ts";
import { UnixServer } from "../transport/unix-server.ts";
import { within } from "../transport/within.ts";

export interface OutputServerOptions {
  path: string;
  mode: number;
  report: Report;
  /** Send queue bound, in frames (the Go original starts at 500). */
  queueFrames: number;
  dropPolicy: DropPolicy;
  lossless: boolean;
  writeDeadlineMs: number;
  stuckFrames: number;
  /** A client connected: e.g. apply socket buffer sizes to its fd. */
  onClient?: (socket: Socket<unknown>) => void;
  /** The client went away, with the reason (peer closed, replaced, stuck, ...). */
  onClientGone?: (reason: string) => void;
  onShortWrite?: FrameWriterOptions["onShortWrite"];
  onWritten?: FrameWriterOptions["onWritten"];
}

/**
 * The capture side of the output channel: streams OpusFrame messages (and
 * nothing else, so an unchanged Go client accepts them) to the one connected
 * main-app client.
 */
export class OutputServer {
  readonly stats = new FrameStats();
  readonly queue: FrameQueue;
  readonly writer: FrameWriter;
  private clientWaiters: (() => void)[] = [];

  private server: UnixServer | undefined;

  /** Builds the queue and writer; `listen()` opens the socket (so hooks can be wired in between). */
  constructor(private readonly options: OutputServerOptions) {
    this.queue = new FrameQueue(options.queueFrames, OUTPUT_MAGIC, options.dropPolicy, this.stats);
    this.writer = new FrameWriter(this.queue, {
      lossless: options.lossless,
      writeDeadlineMs: options.writeDeadlineMs,
      stuckFrames: options.stuckFrames,
      onStuck: (socket) => this.dropStuckClient(socket),
      onShortWrite: options.onShortWrite,
      onWritten: options.onWritten,
    });
  }

  static async start(options: OutputServerOptions): Promise<OutputServer> {
    const output = new OutputServer(options);
    await output.listen();
    return output;
  }

  async listen(): Promise<void> {
    const options = this.options;
    this.server = await UnixServer.listen({
      path: options.path,
      mode: options.mode,
      report: options.report,
      handler: {
        open: (socket) => {
          options.onClient?.(socket);
          this.writer.attach(socket);
          for (const wake of this.clientWaiters.splice(0)) wake();
        },
        // The protocol has a client send nothing on this channel; an unchanged Go client never does.
        data: () => {},
        drain: (socket) => this.writer.onDrain(socket),
        close: (_socket, reason) => {
          this.writer.detach(DropReason.NoClient);
          options.onClientGone?.(reason);
        },
      },
    });
  }

  get connected(): boolean {
    return this.writer.connected;
  }

  get listener(): UnixServer {
    return this.server!;
  }

  /** Queues one Opus frame stamped now; false if it was dropped (and counted). */
  sendFrame(payload: Uint8Array, timestampMs?: number): boolean {
    return this.writer.submit(MessageType.OpusFrame, payload, timestampMs);
  }

  waitForClient(): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve) => this.clientWaiters.push(resolve));
  }

  /** Writes out what is queued, waiting at most `timeoutMs`; true if everything went out. */
  async flush(timeoutMs: number): Promise<boolean> {
    if (this.writer.idle) return true;
    return within(this.writer.waitForIdle().then(() => true), timeoutMs, false);
  }

  /** Stops listening, closes the client gracefully, removes the socket file. */
  async stop(): Promise<void> {
    // Whatever flush() could not write out in time never reaches a client.
    this.writer.discard(DropReason.Shutdown);
    this.writer.detach(DropReason.Shutdown);
    await this.server?.stop();
  }

  private dropStuckClient(socket: Socket<unknown>): void {
    this.options.report("warn", "client stuck: accepted nothing while frames kept coming; disconnecting", {
      socket: this.options.path,
      frames: this.options.stuckFrames,
    });
    this.writer.detach(DropReason.ClientStuck);
    this.server?.disconnect(socket, `stuck: accepted nothing for ${this.options.stuckFrames} frames`, false);
  }
}
