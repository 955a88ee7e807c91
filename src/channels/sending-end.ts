import { MessageType, wallClockMs } from "../protocol/index.ts";
import { FrameQueue, type DropPolicy } from "../transport/frame-queue.ts";
import { FrameStats } from "../transport/frame-stats.ts";
import { FrameWriter, type FrameWriterOptions } from "../transport/frame-writer.ts";
import type { SocketBufferSizes } from "../transport/socket-options.ts";
import { NO_OBSERVER, type ChannelObserver } from "./channel-end.ts";

/** A source as a sending end reads it: what it left out of its input so far, by kind (media's FrameSource). */
export interface CountingSource {
  readonly counts?: Readonly<Record<string, number>>;
}

/** How a sending end queues, drops and writes: the options both ends take (a role's senderOptions). */
export interface SenderOptions {
  /** Send queue bound, in frames (the Go original starts at 500). */
  queueFrames: number;
  dropPolicy: DropPolicy;
  lossless: boolean;
  writeDeadlineMs: number;
  /** Live mode's latency budget in ms (FrameWriterOptions.maxLatencyMs); absent: none. */
  maxLatencyMs?: number;
  stuckFrames: number;
  /** SO_SNDBUF/SO_RCVBUF applied to every connection; none leaves the kernel defaults. */
  socketBuffers?: SocketBufferSizes;
}

/**
 * What the two sending ends (OutputServer, InputClient) share: the send queue
 * and the writer pumping it into the connection, built by each end with its
 * own options, and the target a source feeds (sendFrame, hasSpace,
 * waitForSpace; media/pump.ts).
 */
export abstract class SendingEnd {
  readonly stats = new FrameStats();
  protected abstract readonly queue: FrameQueue;
  protected abstract readonly writer: FrameWriter;
  protected observer: ChannelObserver = NO_OBSERVER;
  private source: CountingSource | undefined;

  /**
   * The send queue of `magic`'s messages and the writer pumping it, as `options` ask;
   * `hooks` are the end's own (what it does with a stuck peer, with a Heartbeat written).
   * The writer tells this end's observer of each write.
   */
  protected sendPath(
    magic: number,
    options: SenderOptions,
    hooks: Pick<FrameWriterOptions, "onStuck" | "onControlWritten" | "clock">,
  ): { queue: FrameQueue; writer: FrameWriter } {
    const queue = new FrameQueue(options.queueFrames, magic, options.dropPolicy, this.stats);
    const writer = new FrameWriter(queue, {
      lossless: options.lossless,
      writeDeadlineMs: options.writeDeadlineMs,
      maxLatencyMs: options.maxLatencyMs,
      stuckFrames: options.stuckFrames,
      onWritten: (messages, bytes, oldestWaitMs, writeCallMs) => this.observer.written(messages, bytes, oldestWaitMs, writeCallMs),
      ...hooks,
    });
    return { queue, writer };
  }

  /**
   * The source feeding this end: what it counts of its input (an Ogg
   * source's skipped pages, say) is part of this end's readings from now
   * on, as `source_<kind>` (the metrics read which there are when attached).
   */
  fedBy(source: CountingSource): void {
    this.source = source;
  }

  /** The feeding source's counts, named for it (`source_skipped_pages`). */
  protected sourceCounts(): Record<string, number> {
    const counts: Record<string, number> = {};
    for (const [kind, n] of Object.entries(this.source?.counts ?? {})) counts[`source_${kind}`] = n;
    return counts;
  }

  /** Sends this end's events to `observer` from now on. */
  observe(observer: ChannelObserver): void {
    this.observer = observer;
  }

  /** Queues one Opus frame, stamped `timestampMs` or now; false if it was dropped (and counted). */
  sendFrame(payload: Uint8Array, timestampMs?: number): boolean {
    const tap = this.observer.frameTap;
    if (tap) tap(payload, timestampMs ?? wallClockMs());
    const queued = this.writer.submit(MessageType.OpusFrame, payload, timestampMs);
    this.observer.submitted();
    return queued;
  }

  /** Is there room for one more frame without dropping one? */
  hasSpace(): boolean {
    return !this.queue.isFull;
  }

  /** True when nothing is queued or half-written. */
  get idle(): boolean {
    return this.writer.idle;
  }

  /** Resolves when the send queue has room (lossless sources wait here). */
  waitForSpace(): Promise<void> {
    return this.writer.waitForSpace();
  }

  /** Resolves when everything queued has been written (or dropped). */
  waitForIdle(): Promise<void> {
    return this.writer.waitForIdle();
  }

  /** Makes the send queue hold `frames` (the adaptive optimizer's decision). */
  resizeQueue(frames: number): void {
    this.queue.resize(frames);
  }
}
