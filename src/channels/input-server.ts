import type { Socket } from "bun";
import type { FilePlacement } from "../io/file-placement.ts";
import {
  decodeConfigPayload,
  FrameParser,
  INPUT_MAGIC,
  isOpusConfig,
  MessageType,
  ProtocolError,
  wallClockMs,
  type AudioConfig,
  type ParsedMessage,
} from "../protocol/index.ts";
import { FrameQueue } from "../transport/frame-queue.ts";
import { DropReason, FrameStats } from "../transport/frame-stats.ts";
import { FrameWriter } from "../transport/frame-writer.ts";
import type { Report } from "../transport/report.ts";
import type { SocketFileIdentity } from "../transport/socket-file.ts";
import type { SocketBufferSizes } from "../transport/socket-options.ts";
import { SocketTuner } from "../transport/socket-tuner.ts";
import { UnixServer } from "../transport/unix-server.ts";
import { endReadings, NO_OBSERVER, type ChannelEnd, type ChannelObserver } from "./channel-end.ts";
import { PeerStamps } from "./peer-stamps.ts";

export interface InputServerOptions {
  path: string;
  mode: number;
  report: Report;
  /**
   * Every valid message of a session (OpusFrame, Config, ...): the sink picks
   * what it records. A promise returned says the sink is holding what its
   * reader has not taken: the client is not read again until it settles
   * (backpressure); a rejection is a failure (onFailure).
   */
  onMessage: (message: ParsedMessage) => void | Promise<void>;
  /** A session ended: by Stop (clean), a disconnect, or a framing violation. */
  onSessionEnd?: (reason: string, clean: boolean) => void;
  /** SO_SNDBUF/SO_RCVBUF applied to every client connection; none leaves the kernel defaults. */
  socketBuffers?: SocketBufferSizes;
  /** Something other than the peer failed (e.g. the sink): the role should stop. */
  onFailure: (error: Error) => void;
  /** OpusFrames received and then dropped by the sink (a FIFO's with no reader, say), by reason: part of the readings. */
  droppedBySink?: () => Readonly<Record<string, number>> | undefined;
  /** Where the file the sink records into stands against its path (a regular file's only): part of the readings. */
  sinkFile?: () => FilePlacement | undefined;
}

/** Enough room for the Acks of a burst of Heartbeats from a client that reads slowly. */
const ACK_QUEUE_FRAMES = 64;

/**
 * The playback side of the input channel: receives Config, OpusFrames,
 * Heartbeats and Stop from the one main-app client; answers Config and
 * Heartbeat with an Ack (a bare header stamped now).
 */
export class InputServer implements ChannelEnd {
  readonly tuner: SocketTuner;
  framesReceived = 0;
  bytesReceived = 0;
  heartbeats = 0;
  sessions = 0;
  cleanSessions = 0;
  protocolErrors = 0;
  config: AudioConfig | undefined;
  /** Unix ms of the last OpusFrame; 0 before the first. */
  lastFrameUnixMs = 0;
  /**
   * OpusFrames a client sent after its session ended (after its Stop, or once replaced): received
   * (in framesReceived, so that received = taken by the sink + dropped holds) and dropped.
   */
  framesAfterSession = 0;
  readonly ackStats = new FrameStats();
  private readonly acks: FrameWriter;
  /** Each client's parser: one let go can still send, and what it sends is counted, not mixed into the next session. */
  private readonly parsers = new WeakMap<Socket<unknown>, FrameParser>();
  /** Clients whose framing broke after their session: nothing more of them is read. */
  private readonly unreadable = new WeakSet<Socket<unknown>>();
  private server: UnixServer | undefined;
  private readonly empty = new Uint8Array(0);
  private observer: ChannelObserver = NO_OBSERVER;
  private readonly stamps: PeerStamps;
  /** The sink failed: what is read from now on is its to count (sink_write_failed), not session_ended. */
  private failedSink = false;

  /** Builds the server; `listen()` opens the socket. */
  constructor(private readonly options: InputServerOptions) {
    this.tuner = new SocketTuner(options.socketBuffers, options.report);
    this.stamps = new PeerStamps(options.report);
    const queue = new FrameQueue(ACK_QUEUE_FRAMES, INPUT_MAGIC, "oldest", this.ackStats);
    this.acks = new FrameWriter(queue, { lossless: false, writeDeadlineMs: 0, stuckFrames: Infinity });
  }

  static async start(options: InputServerOptions): Promise<InputServer> {
    const input = new InputServer(options);
    await input.listen();
    return input;
  }

  async listen(): Promise<void> {
    const options = this.options;
    this.server = await UnixServer.listen({
      path: options.path,
      mode: options.mode,
      report: options.report,
      handler: {
        open: (socket) => {
          this.parsers.set(socket, new FrameParser(INPUT_MAGIC));
          this.sessions++;
          this.tuner.attach(socket);
          this.observer.connection("connected", options.path);
          this.acks.attach(socket);
        },
        data: (socket, chunk) => this.receive(socket, chunk),
        late: (socket, chunk) => this.receiveLate(socket, chunk),
        drain: (socket) => this.acks.onDrain(socket),
        close: (_socket, reason) => {
          this.acks.detach(DropReason.NoClient);
          this.observer.connection("disconnected", reason === "session stopped" ? "Stop" : reason);
          if (reason !== "session stopped") options.onSessionEnd?.(reason, false);
        },
      },
    });
  }

  /**
   * The sink failed (a write, a flush; the run ends): every OpusFrame read
   * from now on, a client's let go too, goes to it, which counts what it can
   * no longer write (README: the frames received after a write failed).
   */
  sinkFailed(): void {
    this.failedSink = true;
  }

  observe(observer: ChannelObserver): void {
    this.observer = observer;
  }

  get connected(): boolean {
    return this.acks.connected;
  }

  get listener(): UnixServer {
    return this.server!;
  }

  socketFile(): SocketFileIdentity | undefined {
    return this.server?.file;
  }

  async stop(): Promise<void> {
    await this.server?.stop();
  }

  readings() {
    const listener = this.server;
    return endReadings({
      channel: "input",
      direction: "receive",
      connected: this.connected,
      listening: listener?.listening ?? false,
      connects: listener?.connections ?? 0,
      connectionDrops: listener?.connectionDrops ?? 0,
      protocolErrors: this.protocolErrors,
      tuner: this.tuner,
      received: { frames: this.framesReceived, bytes: this.bytesReceived, lastFrameUnixMs: this.lastFrameUnixMs },
      counts: {
        heartbeats: this.heartbeats,
        sessions: this.sessions,
        clean_sessions: this.cleanSessions,
        // Acks a client left unread past the queue's room are dropped, oldest first.
        acks_sent: this.ackStats.delivered,
        acks_dropped: this.ackStats.droppedTotal,
        frame_stamps_unusable: this.stamps.unusable,
      },
      // Every reason from the start, at 0 until its first drop (a series a dashboard can rate from the first scrape).
      dropped: { ...this.options.droppedBySink?.(), session_ended: this.framesAfterSession },
      config: this.config,
      sinkFile: this.options.sinkFile?.(),
    });
  }

  private receive(socket: Socket<unknown>, chunk: Uint8Array): void {
    this.bytesReceived += chunk.length;
    const parser = this.parsers.get(socket)!;
    try {
      parser.push(chunk);
      for (let m = parser.next(); m; m = parser.next()) {
        switch (m.type) {
          case MessageType.OpusFrame:
            this.framesReceived++;
            this.lastFrameUnixMs = wallClockMs();
            this.observer.frameAge(this.stamps.age(this.lastFrameUnixMs, m.timestampMs));
            if (this.observer.frameTap) this.observer.frameTap(m.payload, m.timestampMs);
            break;
          case MessageType.Config:
            this.config = decodeConfigPayload(m.payload);
            this.ack();
            this.options.report("info", "config", { ...this.config });
            // Taken as it is (the Go original checks nothing either), but a sink or player cannot use it.
            if (!isOpusConfig(this.config)) {
              this.options.report("warn", "config names audio Opus does not have (rates 8000, 12000, 16000, 24000, 48000; 1 or 2 channels; frames of 2.5 to 120 ms)", { ...this.config });
            }
            break;
          case MessageType.Heartbeat:
            this.heartbeats++;
            this.ack();
            break;
          case MessageType.Stop:
            this.options.onMessage(m);
            // Acks of the Config and Heartbeats read with the Stop go out before the session ends:
            // they were only queued (written on the next microtask), and ending it drops the queue.
            this.acks.pump();
            this.endSession(socket);
            // Whatever came in the same read after the Stop is not the session's.
            this.countLate(socket, parser);
            return;
        }
        const waiting = this.options.onMessage(m);
        if (waiting) this.holdWhile(waiting);
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) {
        this.failedSink = true;
        this.options.onFailure(e as Error);
        // The sink failed: the rest of this read still goes to it, which counts its frames (as
        // output recv does), and the parser is left empty for what the client sends while let go.
        this.toFailedSink(socket, parser);
        return;
      }
      this.protocolErrors++;
      this.options.report("warn", "framing violation from client; disconnecting", { error: e.message });
      this.server?.disconnect(socket, `protocol error: ${e.message}`, "terminate");
    }
  }

  /**
   * A client let go still sent: its OpusFrames are counted dropped, and
   * nothing else is read. One let go before it was served (it waited while
   * the sink was held) gets a parser of its own here.
   */
  private receiveLate(socket: Socket<unknown>, chunk: Uint8Array): void {
    this.bytesReceived += chunk.length;
    if (this.unreadable.has(socket)) return;
    let parser = this.parsers.get(socket);
    if (!parser) this.parsers.set(socket, (parser = new FrameParser(INPUT_MAGIC)));
    this.countLate(socket, parser, chunk);
  }

  /** Counts the OpusFrames left in `parser`, and in `chunk` when given, as sent after the session (after a failed sink's, as its). */
  private countLate(socket: Socket<unknown>, parser: FrameParser, chunk?: Uint8Array): void {
    this.restOf(socket, parser, this.failedSink ? this.options.onMessage : () => this.framesAfterSession++, chunk);
  }

  /** The OpusFrames left in `parser` go to the owner's sink that failed, which counts them. */
  private toFailedSink(socket: Socket<unknown>, parser: FrameParser): void {
    this.restOf(socket, parser, this.options.onMessage);
  }

  /**
   * What is left of a client whose session is over: each OpusFrame in
   * `parser` (and in `chunk` when given) is received and handed to `each`;
   * nothing else is acted on. Broken framing, or `each` throwing (a failed
   * sink again), ends it: nothing more of that client is read.
   */
  private restOf(socket: Socket<unknown>, parser: FrameParser, each: (m: ParsedMessage) => void, chunk?: Uint8Array): void {
    try {
      if (chunk) parser.push(chunk);
      for (let m = parser.next(); m; m = parser.next()) {
        if (m.type !== MessageType.OpusFrame) continue;
        this.framesReceived++;
        each(m);
      }
    } catch {
      this.parsers.delete(socket);
      this.unreadable.add(socket);
    }
  }

  /**
   * Reads no more of any client until the sink's reader has taken what it
   * holds (the rest of this slice of a read still goes to the sink; UnixServer.hold):
   * the client sees a full socket, as from any slow reader, and the process
   * stays free to act on a signal.
   */
  private holdWhile(waiting: Promise<void>): void {
    const server = this.server;
    if (!server || server.holding) return;
    server.hold(waiting);
    waiting.catch((e: Error) => this.options.onFailure(e));
  }

  private ack(): void {
    this.acks.submit(MessageType.Ack, this.empty);
  }

  /** Stop: the client is leaving; the session ends cleanly and the server waits for the next one. */
  private endSession(socket: Socket<unknown>): void {
    this.cleanSessions++;
    this.options.onSessionEnd?.("stop", true);
    this.server?.disconnect(socket, "session stopped", "end", true);
  }
}
