import type { Socket } from "bun";
import { FrameParser, OUTPUT_MAGIC, ProtocolError, type WallClock } from "../protocol/index.ts";
import type { FrameQueue } from "../transport/frame-queue.ts";
import { DropReason } from "../transport/frame-stats.ts";
import type { FrameWriter } from "../transport/frame-writer.ts";
import type { Report } from "../transport/report.ts";
import type { SocketFileIdentity } from "../transport/socket-file.ts";
import { SocketTuner } from "../transport/socket-tuner.ts";
import { UnixServer } from "../transport/unix-server.ts";
import { within } from "../io/within.ts";
import { endReadings, type ChannelEnd } from "./channel-end.ts";
import { SendingEnd, type SenderOptions } from "./sending-end.ts";

export interface OutputServerOptions extends SenderOptions {
  path: string;
  mode: number;
  report: Report;
  /** Stamps frames; the process's wall clock unless a test injects one. */
  clock?: WallClock;
}

/** At stop, how long a client has to take the rest of a frame it has begun to read (at most 4113 bytes). */
const FINISH_STARTED_MS = 250;

/**
 * The capture side of the output channel: streams OpusFrame messages (and
 * nothing else, so an unchanged Go client accepts them) to the one connected
 * main-app client. A source feeds it through sendFrame / hasSpace / waitForSpace.
 */
export class OutputServer extends SendingEnd implements ChannelEnd {
  readonly tuner: SocketTuner;
  protected readonly queue: FrameQueue;
  protected readonly writer: FrameWriter;
  private clientWaiters: (() => void)[] = [];
  private server: UnixServer | undefined;
  /** What the client sends, which the protocol says is nothing: framed, or it is disconnected. */
  private parser = new FrameParser(OUTPUT_MAGIC);
  protocolErrors = 0;

  /** Builds the queue and writer; `listen()` opens the socket. */
  constructor(private readonly options: OutputServerOptions) {
    super();
    // A larger send buffer is room the writer takes at once (the kernel tells no drain of it).
    this.tuner = new SocketTuner(options.socketBuffers, options.report, () => this.writer.sendBufferResized());
    const { queue, writer } = this.sendPath(OUTPUT_MAGIC, options, {
      onStuck: (socket) => this.dropStuckClient(socket),
      clock: options.clock,
    });
    this.queue = queue;
    this.writer = writer;
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
      // The client only reads: one that shuts down its sending side still gets the frames.
      halfOpen: true,
      handler: {
        open: (socket) => {
          this.parser = new FrameParser(OUTPUT_MAGIC);
          this.tuner.attach(socket);
          this.observer.connection("connected", options.path);
          this.writer.attach(socket);
          for (const wake of this.clientWaiters.splice(0)) wake();
        },
        data: (socket, chunk) => this.receive(socket, chunk),
        drain: (socket) => this.writer.onDrain(socket),
        close: (_socket, reason) => {
          this.writer.detach(DropReason.NoClient);
          this.observer.connection("disconnected", reason);
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

  socketFile(): SocketFileIdentity | undefined {
    return this.server?.file;
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

  /** Refuses new clients from now on (a stop's first step); the current one is served on. */
  stopAccepting(): void {
    this.server?.stopAccepting();
  }

  /** Stops listening, closes the client gracefully, removes the socket file. */
  async stop(): Promise<void> {
    // Whatever flush() could not write out in time never reaches a client, but a frame the
    // client has begun to read is finished if it takes it in time: written whole or not started.
    // No new client meanwhile: it would replace this one and cut that frame.
    this.stopAccepting();
    this.writer.discard(DropReason.Shutdown, true);
    await this.flush(FINISH_STARTED_MS);
    this.writer.discard(DropReason.Shutdown);
    this.writer.detach(DropReason.Shutdown);
    await this.server?.stop();
  }

  readings() {
    const listener = this.server;
    return endReadings({
      channel: "output",
      direction: "send",
      connected: this.connected,
      listening: listener?.listening ?? false,
      connects: listener?.connections ?? 0,
      connectionDrops: listener?.connectionDrops ?? 0,
      protocolErrors: this.protocolErrors,
      tuner: this.tuner,
      stats: this.stats,
      queue: this.queue,
      inHand: this.writer.inHand,
      counts: this.sourceCounts(),
    });
  }

  /**
   * The protocol has a client send nothing on this channel, and an unchanged
   * Go client never does. Messages one does send are ignored; bytes that
   * break the framing disconnect it, as on the input channel.
   */
  private receive(socket: Socket<unknown>, chunk: Uint8Array): void {
    const parser = this.parser;
    try {
      parser.push(chunk);
      while (parser.next());
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.protocolErrors++;
      this.options.report("warn", "framing violation from client; disconnecting", { error: e.message });
      this.server?.disconnect(socket, `protocol error: ${e.message}`, "terminate");
    }
  }

  private dropStuckClient(socket: Socket<unknown>): void {
    this.options.report("warn", "client stuck: accepted nothing while frames kept coming; disconnecting", {
      socket: this.options.path,
      frames: this.options.stuckFrames,
    });
    this.writer.detach(DropReason.ClientStuck);
    this.server?.disconnect(socket, `stuck: accepted nothing for ${this.options.stuckFrames} frames`, "terminate");
  }
}
