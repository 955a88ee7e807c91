import type { Socket } from "bun";
import {
  encodeConfigPayload,
  FrameParser,
  INPUT_MAGIC,
  MessageType,
  ProtocolError,
  wallClockMs,
  encodeMessage,
  type AudioConfig,
} from "../protocol/index.ts";
import { FrameQueue, type DropPolicy } from "../transport/frame-queue.ts";
import { DropReason, FrameStats } from "../transport/frame-stats.ts";
import { FrameWriter, type FrameWriterOptions } from "../transport/frame-writer.ts";
import type { Report } from "../transport/report.ts";
import { connectWithBackoff } from "../transport/unix-client.ts";

export interface InputClientOptions {
  path: string;
  report: Report;
  config: AudioConfig;
  heartbeatMs: number;
  /** No Ack for this long after a Config/Heartbeat went out: the server is gone; reconnect. */
  ackTimeoutMs: number;
  connectTimeoutMs?: number;
  queueFrames: number;
  dropPolicy: DropPolicy;
  lossless: boolean;
  writeDeadlineMs: number;
  stuckFrames: number;
  onConnect?: (socket: Socket<unknown>) => void;
  /** A connection ended, with the reason. */
  onDisconnect?: (reason: string) => void;
  /** Round trip of a Heartbeat (or Config) to its Ack, in ms. */
  onRoundTrip?: (ms: number, type: MessageType) => void;
  onShortWrite?: FrameWriterOptions["onShortWrite"];
  onWritten?: FrameWriterOptions["onWritten"];
}

/**
 * The main-app side of the input channel: sends Config on every connection,
 * then microphone frames, a Heartbeat every `heartbeatMs`, and Stop before
 * leaving. Unlike the Go original it reads the server's Acks: each Ack
 * answers the oldest Config/Heartbeat written, giving a round-trip time, and
 * a server that stops acking is treated as gone.
 */
export class InputClient {
  readonly stats = new FrameStats();
  readonly queue: FrameQueue;
  readonly writer: FrameWriter;
  acks = 0;
  unexpectedMessages = 0;
  protocolErrors = 0;
  connects = 0;
  ackTimeouts = 0;
  /** Heartbeats and Stops written (the rest of stats.delivered are OpusFrames). */
  controlDelivered = 0;
  private socket: Socket<unknown> | undefined;
  private parser = new FrameParser(INPUT_MAGIC);
  /** Monotonic times at which Config/Heartbeats were written, oldest first, awaiting Acks. */
  private awaiting: { type: MessageType; at: number }[] = [];
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private closedWaiter: ((reason: string) => void) | undefined;
  private connectedWaiters: (() => void)[] = [];
  private readonly abort = new AbortController();
  private stopping = false;
  private finishing = false;
  private finished: Promise<void> | undefined;
  private lastWriteUnixMs = 0;
  private lastFrameAt = 0;
  private framesSettled = 0;
  private readonly empty = new Uint8Array(0);
  private running: Promise<void> | undefined;

  constructor(private readonly options: InputClientOptions) {
    this.queue = new FrameQueue(options.queueFrames, INPUT_MAGIC, options.dropPolicy, this.stats);
    this.writer = new FrameWriter(this.queue, {
      lossless: options.lossless,
      writeDeadlineMs: options.writeDeadlineMs,
      stuckFrames: options.stuckFrames,
      onStuck: (socket) => this.drop(socket, "server stuck: took nothing while frames kept coming"),
      onShortWrite: options.onShortWrite,
      onWritten: (messages, bytes, oldestWaitMs, writeCallMs) => {
        // The previous write's Heartbeats/Stop are counted by now; this one's come right after.
        this.settleLastFrame(this.stats.delivered - messages);
        this.lastWriteUnixMs = this.stats.lastDeliveredUnixMs;
        options.onWritten?.(messages, bytes, oldestWaitMs, writeCallMs);
      },
      onControlWritten: (type) => {
        this.controlDelivered++;
        if (type === MessageType.Heartbeat) this.awaiting.push({ type, at: performance.now() });
      },
    });
  }

  get connected(): boolean {
    return this.socket !== undefined;
  }

  /**
   * Unix ms of the last write that completed an OpusFrame; 0 before the first.
   * Unlike stats.lastDeliveredUnixMs, Heartbeats and the Stop do not move it.
   */
  get lastFrameUnixMs(): number {
    this.settleLastFrame(this.stats.delivered);
    return this.lastFrameAt;
  }

  /** `delivered` messages are fully accounted for: if frames are among the new ones, the last write carried one. */
  private settleLastFrame(delivered: number): void {
    const frames = delivered - this.controlDelivered;
    if (frames > this.framesSettled) {
      this.framesSettled = frames;
      this.lastFrameAt = this.lastWriteUnixMs;
    }
  }

  /** Connects and keeps a connection up (reconnecting) until finish()/stop(). Rejects on connect timeout. */
  start(): Promise<void> {
    this.running ??= this.maintain();
    this.heartbeatTimer = setInterval(() => this.tick(), this.options.heartbeatMs);
    return this.running;
  }

  waitForConnection(): Promise<void> {
    if (this.socket) return Promise.resolve();
    return new Promise((resolve) => this.connectedWaiters.push(resolve));
  }

  sendFrame(payload: Uint8Array): boolean {
    return this.writer.submit(MessageType.OpusFrame, payload, wallClockMs());
  }

  /**
   * Sends Stop after everything queued, waits for it to be written, and closes.
   * Calling it again (a signal and the end of the source) returns the same promise: one Stop.
   */
  finish(): Promise<void> {
    this.finished ??= this.sendStop();
    return this.finished;
  }

  private async sendStop(): Promise<void> {
    // Stop is the last message of a session: no Heartbeat may follow it.
    this.finishing = true;
    // A full queue would make room for the Stop by dropping a frame (or the Stop itself).
    if (this.queue.isFull) await this.writer.waitForSpace();
    this.writer.submit(MessageType.Stop, this.empty, wallClockMs());
    await this.writer.waitForIdle();
    this.stop();
  }

  /** Closes at once; anything still queued is counted as dropped at shutdown. */
  stop(): void {
    this.stopping = true;
    this.abort.abort();
    clearInterval(this.heartbeatTimer);
    this.writer.discard(DropReason.Shutdown);
    const socket = this.socket;
    if (socket) {
      this.closed(socket, "stopped");
      socket.end();
    }
  }

  private async maintain(): Promise<void> {
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
            drain: (s) => this.writer.onDrain(s),
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
      this.open(socket);
      const reason = await ended;
      report("info", "disconnected", { socket: path, reason });
      this.options.onDisconnect?.(reason);
    }
  }

  private open(socket: Socket<unknown>): void {
    this.socket = socket;
    this.parser = new FrameParser(INPUT_MAGIC);
    this.awaiting = [];
    this.connects++;
    this.options.onConnect?.(socket);
    // Config goes first on every connection, ahead of anything queued meanwhile.
    const config = encodeMessage(
      INPUT_MAGIC,
      MessageType.Config,
      encodeConfigPayload(this.options.config),
      BigInt(Math.round(wallClockMs() * 1e6)),
    );
    if (socket.write(config) !== config.length) {
      this.drop(socket, "could not write Config to a fresh connection");
      return;
    }
    this.awaiting.push({ type: MessageType.Config, at: performance.now() });
    this.options.report("info", this.connects === 1 ? "connected" : "reconnected", {
      socket: this.options.path,
      ...this.options.config,
    });
    this.writer.attach(socket);
    for (const wake of this.connectedWaiters.splice(0)) wake();
  }

  private tick(): void {
    if (!this.socket) return;
    const oldest = this.awaiting[0];
    if (oldest && performance.now() - oldest.at > this.options.ackTimeoutMs) {
      this.ackTimeouts++;
      this.drop(this.socket, `no Ack within ${this.options.ackTimeoutMs} ms`);
      return;
    }
    // Frames are flowing but queued: a Heartbeat now would only push one out (or be dropped itself).
    if (this.queue.isFull || this.finishing) return;
    this.writer.submit(MessageType.Heartbeat, this.empty, wallClockMs());
  }

  private receive(socket: Socket<unknown>, chunk: Uint8Array): void {
    if (socket !== this.socket) return;
    const parser = this.parser;
    try {
      parser.push(chunk);
      for (let m = parser.next(); m; m = parser.next()) {
        if (m.type !== MessageType.Ack) {
          this.unexpectedMessages++;
          continue;
        }
        this.acks++;
        const answered = this.awaiting.shift();
        if (answered) this.options.onRoundTrip?.(performance.now() - answered.at, answered.type);
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.protocolErrors++;
      this.drop(socket, `protocol error: ${e.message}`);
    }
  }

  /** Gives up on this connection; the maintain loop reconnects. */
  private drop(socket: Socket<unknown>, reason: string): void {
    this.options.report("warn", "dropping connection", { socket: this.options.path, reason });
    this.closed(socket, reason);
    socket.terminate();
  }

  private closed(socket: Socket<unknown>, reason: string): void {
    if (socket !== this.socket) return;
    this.socket = undefined;
    this.writer.detach(DropReason.NoClient);
    const wake = this.closedWaiter;
    this.closedWaiter = undefined;
    wake?.(reason);
  }
}
