/**
 * When a process's sampler ticks (the optimizer fed and ticked, the JIT's
 * flood check): on the frames' own wake-ups while they
 * flow, never on a timer of its own, which woke a streaming process once
 * more a second and set off runtime timers after it (bench/FINDINGS.md).
 *
 * Each frame looks at the clock; once a tick is due it runs on the loop's
 * next turn, never inside a write. The ticks keep to their period on
 * average: the next is due a period after this one was due, so a frame that
 * comes just short of it does not stretch every period by a frame.
 *
 * When frames stop, a fallback timer ticks instead, a little after the tick
 * was due (see arm), and on, a period apart, while something is left to
 * adapt or to write out (a stalled peer is pressure the optimizer must see).
 * An idle process sleeps.
 */
export class Sampler {
  private dueAt: number;
  private lastFrameAt: number;
  /** The last two gaps between frames (ms). */
  private gap: number;
  private previousGap: number;
  private stopped = false;
  /** A tick is queued for the loop's next turn, brought by a frame (not the fallback). */
  private tickQueued = false;
  private byFrames = false;
  private fallback: unknown;
  private readonly clock: SamplerClock;

  constructor(
    /** The period (ms). */
    private readonly every: number,
    /** The tick's work. */
    private readonly work: () => void,
    /** Something the sampler must keep ticking for without frames. */
    private readonly unsettled: () => boolean,
    clock?: SamplerClock,
  ) {
    this.clock = clock ?? LOOP_CLOCK;
    this.lastFrameAt = this.clock.now();
    this.dueAt = this.lastFrameAt + every;
    // None yet: the pace is the first gap measured.
    this.gap = this.previousGap = Infinity;
  }

  /** An OpusFrame went through one of the channels. */
  frame(): void {
    if (this.stopped) return;
    const now = this.clock.now();
    this.previousGap = this.gap;
    this.gap = now - this.lastFrameAt;
    this.lastFrameAt = now;
    // Frames flow: should they stop before they bring a tick, the fallback ticks.
    if (this.fallback === undefined) this.arm(now);
    if (this.tickQueued || now < this.dueAt) return;
    this.schedule(now);
    this.tickQueued = true;
    this.byFrames = true;
    this.clock.setImmediate(this.tick);
  }

  stop(): void {
    this.stopped = true;
    this.disarm();
  }

  /**
   * Arms the fallback for a little after the next tick is due: half a period,
   * or twice the frames' pace when that is longer. Frames bring a due tick a
   * gap after it was due at most, so it does not fire while they keep their
   * pace, and a stall's pressure is acted on half a period late at 50 frames
   * a second (two gaps late for frames further apart). The pace is the
   * shorter of the last two gaps: the one a pause makes, before the first
   * frame after it, does not count.
   */
  private arm(now: number): void {
    const pace = Math.min(this.gap, this.previousGap);
    const delay = Math.max(this.dueAt - now, 0) + Math.max(this.every / 2, 2 * pace);
    this.fallback = this.clock.setTimeout(this.onFallback, delay);
  }

  /** The next tick is due a period after this one was due, but after a pause not sooner than half a period away. */
  private schedule(now: number): void {
    this.dueAt = Math.max(this.dueAt + this.every, now + this.every / 2);
  }

  private readonly onFallback = () => {
    this.fallback = undefined;
    // A frame's tick is already on its way: it re-arms the fallback itself.
    if (this.tickQueued) return;
    this.schedule(this.clock.now());
    this.byFrames = false;
    this.tick();
  };

  private readonly tick = () => {
    this.tickQueued = false;
    if (this.stopped) return;
    this.work();
    if (this.stopped) return;
    // While frames flow, each tick they bring puts the fallback off again: it never wakes the
    // process. Once they stop it ticks on as long as something is left to adapt or write out.
    this.disarm();
    if (this.byFrames || this.unsettled()) this.arm(this.clock.now());
  };

  private disarm(): void {
    if (this.fallback === undefined) return;
    this.clock.clearTimeout(this.fallback);
    this.fallback = undefined;
  }
}

/** The clock and timers a Sampler runs on: the event loop's, or a test's. */
export interface SamplerClock {
  now(): number;
  setTimeout(run: () => void, ms: number): unknown;
  clearTimeout(timer: unknown): void;
  /** Runs `run` on the loop's next turn. */
  setImmediate(run: () => void): void;
}

const LOOP_CLOCK: SamplerClock = {
  now: () => performance.now(),
  setTimeout: (run, ms) => setTimeout(run, ms),
  clearTimeout: (timer) => clearTimeout(timer as ReturnType<typeof setTimeout>),
  setImmediate: (run) => void setImmediate(run),
};
