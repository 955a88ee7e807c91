import type { Socket } from "bun";
import {
  encodeConfigPayload,
  sameAudioConfig,
  FrameParser,
  INPUT_MAGIC,
  MessageType,
  ProtocolError,
  wallClockMs,
  encodeMessage,
  type AudioConfig,
} from "../protocol/index.ts";
import type { FrameQueue } from "../transport/frame-queue.ts";
import { DropReason } from "../transport/frame-stats.ts";
import type { FrameWriter } from "../transport/frame-writer.ts";
import type { Report } from "../transport/report.ts";
import { ReconnectingConnection, SERVER_LOOK_MS } from "../transport/reconnecting-connection.ts";
import { SocketTuner } from "../transport/socket-tuner.ts";
import { receiveQueueBytes } from "../transport/socket-options.ts";
import { within } from "../io/within.ts";
import { endReadings, type ChannelEnd } from "./channel-end.ts";
import { SendingEnd, type SenderOptions } from "./sending-end.ts";

/** At most this long after the Stop for the Ack still owed (a server on the same board answers in well under a ms). */
const LAST_ACK_MS = 500;

/** An overdue Ack with the server's bytes still unread is looked for again this soon, once they are read. */
const UNREAD_ACK_RECHECK_MS = 5;

export interface InputClientOptions extends SenderOptions {
  path: string;
  report: Report;
  config: AudioConfig;
  heartbeatMs: number;
  /**
   * No Ack for this long after a Config/Heartbeat went out: the server is gone; reconnect. (A
   * live server that takes nothing is found by `stuckFrames`: its Heartbeats never go out.)
   */
  ackTimeoutMs: number;
  connectTimeoutMs?: number;
  /** A connection ended, with the reason. */
  onDisconnect?: (reason: string) => void;
  /** Round trip of a Heartbeat (or Config) to its Ack, in ms. */
  onRoundTrip?: (ms: number, type: MessageType) => void;
}

/**
 * The main-app side of the input channel: sends Config on every connection,
 * then microphone frames, a Heartbeat every `heartbeatMs`, and Stop before
 * leaving. Unlike the Go original it reads the server's Acks. An Ack does
 * not say what it answers, and a server under load may skip some, so any Ack
 * proves the server alive and answers everything outstanding; a round trip
 * is measured only when exactly one Config/Heartbeat was outstanding. A
 * server that leaves the oldest unanswered one for `ackTimeoutMs` is gone.
 * A Heartbeat counts once it is written: one dropped as stale (live) never
 * reached the server, and a server reading through a backlog or pausing
 * briefly is not gone; a live server that takes nothing at all is found by
 * the writer's `stuckFrames` instead, lossless one is waited for. The Stop is
 * never dropped as stale; under a latency budget it is waited for at most the
 * budget and `ackTimeoutMs`, then counted shutdown.
 */
export class InputClient extends SendingEnd implements ChannelEnd {
  readonly tuner: SocketTuner;
  protected readonly queue: FrameQueue;
  protected readonly writer: FrameWriter;
  acks = 0;
  otherMessages = 0;
  protocolErrors = 0;
  ackTimeouts = 0;
  private parser = new FrameParser(INPUT_MAGIC);
  /** Config/Heartbeats written since the last Ack, when the oldest of them was written (monotonic ms), and its type. */
  private unacked = 0;
  private oldestUnackedAt = 0;
  private oldestUnackedType: MessageType = MessageType.Config;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  /** Fires when the oldest Config/Heartbeat awaiting an Ack is overdue. */
  private ackDeadline: ReturnType<typeof setTimeout> | undefined;
  /** The overdue Ack was looked for again once, the server's bytes then unread (ackOverdue). */
  private ackLookedAgain = false;
  private connectedWaiters: (() => void)[] = [];
  /** Woken when nothing awaits an Ack any more, or the connection closes. */
  private ackWaiters: (() => void)[] = [];
  private finishing = false;
  private finished: Promise<void> | undefined;
  private readonly empty = new Uint8Array(0);
  /** Live mode's latency budget (ms; 0: none, lossless among them): with one, the Stop is waited for at most it and ackTimeoutMs. */
  private readonly budgetMs: number;
  private running: Promise<void> | undefined;
  private readonly connection: ReconnectingConnection;
  /** What every connection starts with; setConfig() changes it mid-run. */
  private currentConfig: AudioConfig;

  constructor(private readonly options: InputClientOptions) {
    super();
    this.currentConfig = { ...options.config };
    this.budgetMs = options.lossless ? 0 : (options.maxLatencyMs ?? 0);
    // A larger send buffer is room the writer takes at once (the kernel tells no drain of it).
    this.tuner = new SocketTuner(options.socketBuffers, options.report, () => this.writer.sendBufferResized());
    this.connection = new ReconnectingConnection({
      path: options.path,
      report: options.report,
      connectTimeoutMs: options.connectTimeoutMs,
      // A lossless sender waits for a server behind its backlog, Acks and all: one hung, with
      // another started at its path, is found by looking at the path once its Acks have stopped.
      serverLookMs: SERVER_LOOK_MS,
      data: (socket, chunk) => this.receive(socket, chunk),
      drain: (socket) => this.writer.onDrain(socket),
      onOpen: (socket) => this.open(socket),
      onClose: (_socket, reason) => {
        this.writer.detach(DropReason.NoClient);
        clearTimeout(this.ackDeadline);
        this.wakeAckWaiters();
        this.observer.connection("disconnected", reason);
        options.onDisconnect?.(reason);
      },
    });
    const { queue, writer } = this.sendPath(INPUT_MAGIC, options, {
      onStuck: (socket) => this.drop(socket, "server stuck: took nothing while frames kept coming"),
      onControlWritten: (type) => {
        if (type === MessageType.Heartbeat || type === MessageType.Config) this.awaitAck(type);
      },
    });
    this.queue = queue;
    this.writer = writer;
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
   * Unix ms of the last write that completed an OpusFrame; 0 before the first.
   * Unlike stats.lastDeliveredUnixMs, Heartbeats and the Stop do not move it.
   */
  get lastFrameUnixMs(): number {
    return this.stats.lastFrameUnixMs;
  }

  /** Heartbeats and Stops written (the rest of stats.delivered are OpusFrames). */
  get controlDelivered(): number {
    return this.stats.delivered - this.stats.framesDelivered;
  }

  /** Connects and keeps a connection up (reconnecting) until finish()/stop(). Rejects on connect timeout. */
  start(): Promise<void> {
    this.running ??= this.connection.run();
    this.heartbeatTimer = setInterval(() => this.tick(), this.options.heartbeatMs);
    return this.running;
  }

  /** Resolves once the first connection attempt is decided: connected, or no server there yet. */
  firstAttempt(): Promise<void> {
    return this.connection.firstAttempt;
  }

  /** Resolves once no connect is under way: made (its Config written) or failed (see ReconnectingConnection.attemptDecided). */
  connectDecided(): Promise<void> {
    return this.connection.attemptDecided();
  }

  waitForConnection(): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve) => this.connectedWaiters.push(resolve));
  }

  /** The Config the server has (or gets first on the next connection). */
  get config(): AudioConfig {
    return this.currentConfig;
  }

  /**
   * The audio changed mid-run (a FIFO's next writer, a chained Ogg stream):
   * a Config goes out in order, ahead of the frames queued after it, and every
   * later connection starts with it. Without a connection only the latter.
   */
  setConfig(config: AudioConfig): void {
    if (sameAudioConfig(config, this.currentConfig)) return;
    this.currentConfig = { ...config };
    // Before start() it is the Config the run begins with, not a change.
    if (this.running) this.options.report("info", "config changed", { ...config });
    if (this.connected) this.writer.submit(MessageType.Config, encodeConfigPayload(config));
  }

  readings() {
    return endReadings({
      channel: "input",
      direction: "send",
      connected: this.connected,
      connects: this.connects,
      connectionDrops: this.connectionDrops,
      protocolErrors: this.protocolErrors,
      tuner: this.tuner,
      stats: this.stats,
      queue: this.queue,
      inHand: this.writer.inHand,
      counts: {
        acks: this.acks,
        ack_timeouts: this.ackTimeouts,
        other_messages: this.otherMessages,
        connect_resets: this.connection.connectResets,
        ...this.sourceCounts(),
      },
    });
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
    const sent = this.sendStopAfterQueued();
    // Never dropped as stale: under a budget, a server that takes nothing for as long as an Ack may take is left.
    const out = await (this.budgetMs > 0 ? within(sent, this.budgetMs + this.options.ackTimeoutMs, false) : sent);
    // The Ack of what went out last (a short file's Config, often) is read before closing, so the
    // run's acks and round trip say whether the server heard it; a server that does not answer is not waited for long.
    if (out && this.unacked > 0 && this.connected) {
      await within(new Promise<void>((resolve) => this.ackWaiters.push(resolve)), Math.min(this.options.ackTimeoutMs, LAST_ACK_MS), undefined);
    }
    this.stop();
  }

  /** Queues the Stop after what is queued, and resolves true once all of it is written. */
  private async sendStopAfterQueued(): Promise<boolean> {
    // A full queue would make room for the Stop by dropping a frame (or the Stop itself).
    if (this.queue.isFull) await this.writer.waitForSpace();
    this.writer.submit(MessageType.Stop, this.empty);
    await this.writer.waitForIdle();
    return true;
  }

  private wakeAckWaiters(): void {
    for (const wake of this.ackWaiters.splice(0)) wake();
  }

  /** Closes at once; anything still queued is counted as dropped at shutdown. */
  stop(): void {
    clearInterval(this.heartbeatTimer);
    clearTimeout(this.ackDeadline);
    this.writer.discard(DropReason.Shutdown);
    this.connection.stop();
  }

  private open(socket: Socket<unknown>): void {
    this.parser = new FrameParser(INPUT_MAGIC);
    this.unacked = 0;
    this.tuner.attach(socket);
    this.observer.connection("connected", this.options.path);
    // Said before the Config is written: a connection that cannot take it is then
    // seen made, then dropped, never dropped unannounced.
    this.options.report("info", this.connects === 1 ? "connected" : "reconnected", {
      socket: this.options.path,
      ...this.currentConfig,
    });
    // Config goes first on every connection, ahead of anything queued meanwhile.
    const config = encodeMessage(
      INPUT_MAGIC,
      MessageType.Config,
      encodeConfigPayload(this.currentConfig),
      BigInt(Math.round(wallClockMs() * 1e6)),
    );
    if (socket.write(config) !== config.length) {
      this.drop(socket, "could not write Config to a fresh connection");
      return;
    }
    this.awaitAck(MessageType.Config);
    this.writer.attach(socket);
    for (const wake of this.connectedWaiters.splice(0)) wake();
  }

  /**
   * A Config or Heartbeat was written whole: it awaits an Ack, and the server
   * is judged gone when none comes within ackTimeoutMs, whenever the next
   * Heartbeat is due.
   */
  private awaitAck(type: MessageType): void {
    if (this.unacked++ === 0) {
      this.oldestUnackedAt = performance.now();
      this.ackLookedAgain = false;
      this.oldestUnackedType = type;
      clearTimeout(this.ackDeadline);
      this.ackDeadline = setTimeout(() => this.ackOverdue(), this.options.ackTimeoutMs + 1);
      this.ackDeadline.unref();
    }
  }

  /** True (and the connection dropped) when the oldest Config/Heartbeat has waited longer than ackTimeoutMs. */
  private ackOverdue(): boolean {
    const socket = this.connection.socket;
    if (!socket || this.unacked === 0 || performance.now() - this.oldestUnackedAt <= this.options.ackTimeoutMs) return false;
    // The server's bytes wait unread: it answered while this process was held up (stopped, starved of the CPU),
    // and after such a hold the timers due may run before the socket is read. Judge once they are read: once,
    // as a server that keeps the socket full of anything but Acks would otherwise never be judged.
    const unread = this.ackLookedAgain ? undefined : receiveQueueBytes(socket.fd);
    if (unread?.ok && unread.bytes > 0) {
      this.ackLookedAgain = true;
      clearTimeout(this.ackDeadline);
      this.ackDeadline = setTimeout(() => this.ackOverdue(), UNREAD_ACK_RECHECK_MS);
      this.ackDeadline.unref();
      return false;
    }
    this.ackTimeouts++;
    this.drop(socket, `no Ack within ${this.options.ackTimeoutMs} ms`);
    return true;
  }

  private tick(): void {
    // Once the unread bytes were looked at, the recheck due in a moment judges, after they are read: a tick
    // due with the overdue deadline (Heartbeats further apart than the Ack timeout) would judge before the read.
    if (!this.connection.socket || (!this.ackLookedAgain && this.ackOverdue())) return;
    // Frames are flowing but queued: a Heartbeat now would only push one out (or be dropped itself).
    if (this.queue.isFull || this.finishing) return;
    this.writer.submit(MessageType.Heartbeat, this.empty);
  }

  private receive(socket: Socket<unknown>, chunk: Uint8Array): void {
    const parser = this.parser;
    try {
      parser.push(chunk);
      for (let m = parser.next(); m; m = parser.next()) {
        if (m.type !== MessageType.Ack) {
          this.otherMessages++;
          continue;
        }
        this.acks++;
        if (this.unacked === 1) {
          const ms = performance.now() - this.oldestUnackedAt;
          this.observer.roundTrip(ms);
          this.options.onRoundTrip?.(ms, this.oldestUnackedType);
        }
        this.unacked = 0;
        clearTimeout(this.ackDeadline);
        this.wakeAckWaiters();
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.protocolErrors++;
      this.drop(socket, `protocol error: ${e.message}`);
    }
  }

  /** Gives up on this connection; the connection loop reconnects. */
  private drop(socket: Socket<unknown>, reason: string): void {
    this.options.report("warn", "dropping connection", { socket: this.options.path, reason });
    this.connection.close(socket, reason);
  }
}
