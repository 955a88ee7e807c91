import type { Socket } from "bun";
import type { FilePlacement } from "../io/file-placement.ts";
import {
  FrameParser,
  MessageType,
  OUTPUT_MAGIC,
  ProtocolError,
  wallClockMs,
  type ParsedMessage,
} from "../protocol/index.ts";
import { ReconnectingConnection, SERVER_LOOK_MS, SERVER_REPLACED } from "../transport/reconnecting-connection.ts";
import type { Report } from "../transport/report.ts";
import type { SocketBufferSizes } from "../transport/socket-options.ts";
import { SocketTuner } from "../transport/socket-tuner.ts";
import { endReadings, NO_OBSERVER, type ChannelEnd, type ChannelObserver } from "./channel-end.ts";
import { PeerStamps } from "./peer-stamps.ts";

export interface OutputClientOptions {
  path: string;
  report: Report;
  /**
   * Every valid message received, OpusFrame or not (`output recv` records the
   * OpusFrames and counts the rest as other messages). A promise returned says the sink is holding what its reader has not
   * taken: the connection is not read again until it settles (backpressure),
   * and a rejection (the sink failed) ends the run.
   */
  onMessage: (message: ParsedMessage) => void | Promise<void>;
  /** Give up with ConnectTimeoutError after this long without a server; undefined waits forever. */
  connectTimeoutMs?: number;
  /** SO_SNDBUF/SO_RCVBUF applied to every connection; none leaves the kernel defaults. */
  socketBuffers?: SocketBufferSizes;
  /** A connection ended, with the reason. */
  onDisconnect?: (reason: string) => void;
  /** OpusFrames received and then left out by the sink (an Ogg sink's invalid packets), by reason: part of the readings. */
  droppedBySink?: () => Readonly<Record<string, number>> | undefined;
  /** Where the file the sink records into stands against its path (a regular file's only): part of the readings. */
  sinkFile?: () => FilePlacement | undefined;
}

/**
 * The main-app side of the output channel: connects (with the Go original's
 * backoff), receives OpusFrames, and reconnects whenever the server goes away.
 * Heartbeat/Ack/Config/Stop from a server are tolerated and passed on; a
 * framing violation ends that connection (no resync) and a new one is made.
 */
export class OutputClient implements ChannelEnd {
  readonly tuner: SocketTuner;
  framesReceived = 0;
  bytesReceived = 0;
  /** Socket reads (data events): bytes per read shows how well the sender coalesces. */
  reads = 0;
  otherMessages = 0;
  protocolErrors = 0;
  /** How the server last cut its stream short (broken framing, a close mid-message): a run with `once` fails with it. */
  private cutShort: string | undefined;
  /** Unix ms of the last read that brought an OpusFrame; 0 before the first. */
  lastFrameUnixMs = 0;
  private parser = new FrameParser(OUTPUT_MAGIC);
  private failure: Error | undefined;
  /** stop() was called (by the owner, not a failure): nothing more is taken, not even for a failed sink. */
  private stopped = false;
  private observer: ChannelObserver = NO_OBSERVER;
  private readonly connection: ReconnectingConnection;
  private readonly stamps: PeerStamps;

  constructor(private readonly options: OutputClientOptions) {
    this.tuner = new SocketTuner(options.socketBuffers, options.report);
    this.stamps = new PeerStamps(options.report);
    this.connection = new ReconnectingConnection({
      path: options.path,
      report: options.report,
      connectTimeoutMs: options.connectTimeoutMs,
      // The output channel has no Acks to time out: a server hung in place, and another started
      // at its path, is found by looking at the path once frames have stopped.
      serverLookMs: SERVER_LOOK_MS,
      data: (socket, chunk) => this.receive(socket, chunk),
      drain: () => {},
      onOpen: (socket) => {
        this.parser = new FrameParser(OUTPUT_MAGIC);
        options.report("info", this.connects === 1 ? "connected" : "reconnected", { socket: options.path });
        this.tuner.attach(socket);
        this.observer.connection("connected", options.path);
      },
      onClose: (_socket, reason) => {
        if (reason === "server closed" && this.parser.pending > 0) {
          reason = `server closed mid-message (${this.parser.pending} byte(s) of a message lost)`;
          this.cutShort = `the ${reason}`;
        }
        // Its stream did not end: the server hung, and another took its place.
        if (reason === SERVER_REPLACED) this.cutShort = reason;
        this.observer.connection("disconnected", reason);
        options.onDisconnect?.(reason);
        return reason;
      },
    });
  }

  observe(observer: ChannelObserver): void {
    this.observer = observer;
  }

  get connected(): boolean {
    return this.connection.socket !== undefined;
  }

  get connects(): number {
    return this.connection.connects;
  }

  get connectionDrops(): number {
    return this.connection.connectionDrops;
  }

  /**
   * Receives until stop() (or, with `once`, until the first connection ends).
   * Rejects with ConnectTimeoutError when no server appears in time, with
   * the sink's error when the sink fails, and, with `once`, when the server
   * broke the framing or closed mid-message: that one connection's stream
   * did not come whole.
   */
  async run(once = false): Promise<void> {
    await this.connection.run(once);
    if (this.failure) throw this.failure;
    if (once && this.cutShort) throw new Error(`${this.cutShort}; the stream ends there`);
  }

  /** Stops receiving and closes the connection. */
  stop(): void {
    this.stopped = true;
    this.connection.stop();
  }

  /**
   * Stops receiving once what the server has written is read and passed on
   * (ReconnectingConnection.finish): the server counts it as delivered.
   * Resolves once the connection is closed; stop() meanwhile ends it at once.
   */
  finish(): Promise<void> {
    return this.connection.finish();
  }

  /** Ends the run with `error` (e.g. the sink failed): run() rejects with it. */
  fail(error: Error): void {
    this.failure ??= error;
    this.connection.stop();
  }

  readings() {
    return endReadings({
      channel: "output",
      direction: "receive",
      connected: this.connected,
      connects: this.connects,
      connectionDrops: this.connectionDrops,
      protocolErrors: this.protocolErrors,
      tuner: this.tuner,
      received: { frames: this.framesReceived, bytes: this.bytesReceived, lastFrameUnixMs: this.lastFrameUnixMs },
      counts: { other_messages: this.otherMessages, connect_resets: this.connection.connectResets, frame_stamps_unusable: this.stamps.unusable },
      dropped: this.options.droppedBySink?.(),
      sinkFile: this.options.sinkFile?.(),
    });
  }

  /**
   * The rest of the read in which the sink failed: received, and given to the
   * failed sink all the same, which counts each frame as dropped (FrameSink),
   * so that none is left uncounted. A stop (the owner's --count reached), a
   * second failure or broken framing ends it.
   */
  private toFailedSink(parser: FrameParser): void {
    try {
      while (!this.stopped) {
        const m = parser.next();
        if (!m) break;
        if (m.type === MessageType.OpusFrame) this.framesReceived++;
        else this.otherMessages++;
        this.options.onMessage(m);
      }
    } catch {
      // The run is already ending with the first failure.
    }
  }

  /**
   * Reads no more until the sink's reader has taken what it holds (the rest
   * of this read still goes to the sink; ReconnectingConnection.hold): the
   * process stays free to act on a signal. A sink that fails meanwhile ends
   * the run.
   */
  private holdWhile(waiting: Promise<void>): void {
    if (this.connection.holding) return;
    this.connection.hold(waiting);
    waiting.catch((e: Error) => this.fail(e));
  }

  private receive(socket: Socket<unknown>, chunk: Uint8Array): void {
    this.bytesReceived += chunk.length;
    this.reads++;
    const parser = this.parser;
    const before = this.framesReceived;
    let now = 0;
    let aged = false;
    try {
      parser.push(chunk);
      for (let m = parser.next(); m; m = parser.next()) {
        if (m.type === MessageType.OpusFrame) {
          // One age sample per read keeps floods cheap: from its first (oldest) frame whose stamp
          // gives one. Every frame's stamp is judged against the read's one clock reading.
          if (this.framesReceived++ === before) {
            now = wallClockMs();
            this.lastFrameUnixMs = now;
          }
          const age = this.stamps.age(now, m.timestampMs);
          if (!aged && age === age) {
            aged = true;
            this.observer.frameAge(age);
          }
          const tap = this.observer.frameTap;
          if (tap) tap(m.payload, m.timestampMs);
        } else this.otherMessages++;
        const waiting = this.options.onMessage(m);
        if (waiting) this.holdWhile(waiting);
        if (this.connection.socket !== socket) {
          // onMessage stopped us, or failed the run (a sink flushed on the way): then the rest goes to it, counted.
          if (this.failure && !this.stopped) this.toFailedSink(parser);
          return;
        }
      }
      // No frame of the read gave an age: the observer still hears of the read (the sampler runs on it).
      if (!aged && this.framesReceived > before) this.observer.frameAge(Number.NaN);
    } catch (e) {
      if (!(e instanceof ProtocolError)) {
        // The sink failed (e.g. disk full): that ends the run, not just this connection.
        this.fail(e as Error);
        this.toFailedSink(parser);
        return;
      }
      this.protocolErrors++;
      this.cutShort = `the server broke the framing (${e.message})`;
      this.options.report("warn", "framing violation from server; disconnecting", {
        socket: this.options.path,
        error: e.message,
      });
      this.connection.close(socket, `protocol error: ${e.message}`);
    }
  }
}
