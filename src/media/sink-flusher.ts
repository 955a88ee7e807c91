import type { FrameSink } from "./frame-sink.ts";

/**
 * Writes a sink out (an Ogg sink: closes its page) at most `everyMs`
 * (--page-ms) after data reached it, so a live listener downstream hears
 * audio promptly. While frames flow the flush rides on a write once `everyMs`
 * has passed since the last flush; a timer, armed `everyMs` after the oldest
 * write not yet flushed, only fires when the stream pauses. A steady stream
 * therefore costs no wake-ups of its own (a fixed interval timer woke the
 * process ten times a second, and a timer due exactly at the next flush
 * would race the frame that brings it).
 */
export class SinkFlusher {
  private lastFlush: number;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;
  private readonly onTimer = () => {
    this.timer = undefined;
    this.flush(this.now());
  };

  constructor(
    private readonly sink: FrameSink,
    private readonly everyMs: number,
    /** A sink that cannot be written (disk full) ends the run like a failed write does. */
    private readonly onError: (error: Error) => void,
    /** The monotonic clock in ms; a test steps its own to count flushes without timing them. */
    private readonly now: () => number = () => performance.now(),
  ) {
    this.lastFlush = this.now();
  }

  /** After each write to the sink. */
  wrote(): void {
    if (this.stopped) return;
    const now = this.now();
    const since = now - this.lastFlush;
    if (since >= this.everyMs) this.flush(now);
    else this.timer ??= setTimeout(this.onTimer, this.everyMs);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private flush(now: number): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.lastFlush = now;
    try {
      this.sink.flush();
    } catch (e) {
      this.stop();
      this.onError(e as Error);
    }
  }
}
