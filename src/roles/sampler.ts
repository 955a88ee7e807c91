/**
 * When a process's sampler ticks (socket queues read, the optimizer fed and
 * ticked, the JIT's flood check): on the frames' own wake-ups while they
 * flow, never on a timer of its own, which woke a streaming process once
 * more a second and set off runtime timers after it (bench/FINDINGS.md).
 *
 * Every `framesPerLook`-th frame looks at the clock; once a tick is due it
 * runs on the loop's next turn, never inside a write. The ticks keep to
 * their period on average: the next is due a period after this one was due,
 * so a look that falls just short does not stretch every period by a look.
 *
 * When frames stop, a fallback timer ticks instead, `FALLBACK_PERIODS`
 * periods after the last tick, and on while something is left to adapt or to
 * write out (a stalled peer is pressure the optimizer must see). An idle
 * process sleeps.
 */
export class Sampler {
  private dueAt: number;
  private framesUnlooked = 0;
  private stopped = false;
  /** A tick is queued for the loop's next turn, brought by a frame (not the fallback). */
  private tickQueued = false;
  private byFrames = false;
  private fallback: unknown;
  private readonly clock: SamplerClock;

  constructor(
    /** The period (ms). */
    private readonly every: number,
    /** Frames between two looks at the clock. */
    private readonly framesPerLook: number,
    /** The tick's work. */
    private readonly work: () => void,
    /** Something the sampler must keep ticking for without frames. */
    private readonly unsettled: () => boolean,
    clock?: SamplerClock,
  ) {
    this.clock = clock ?? LOOP_CLOCK;
    this.dueAt = this.clock.now() + every;
  }

  /** An OpusFrame went through one of the channels. */
  frame(): void {
    if (this.stopped || ++this.framesUnlooked < this.framesPerLook) return;
    this.framesUnlooked = 0;
    // Frames flow: should they stop before they bring a tick, the fallback ticks.
    this.fallback ??= this.clock.setTimeout(this.onFallback, FALLBACK_PERIODS * this.every);
    if (this.tickQueued) return;
    const now = this.clock.now();
    if (now < this.dueAt) return;
    this.schedule(now);
    this.tickQueued = true;
    this.byFrames = true;
    this.clock.setImmediate(this.tick);
  }

  stop(): void {
    this.stopped = true;
    this.disarm();
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
    // While frames flow, each tick they bring puts the fallback off again: it never wakes the
    // process. Once they stop it ticks on as long as something is left to adapt or write out.
    this.disarm();
    if (this.byFrames || this.unsettled()) this.fallback = this.clock.setTimeout(this.onFallback, FALLBACK_PERIODS * this.every);
  };

  private disarm(): void {
    if (this.fallback === undefined) return;
    this.clock.clearTimeout(this.fallback);
    this.fallback = undefined;
  }
}

/**
 * Periods after the last tick at which the fallback ticks: more than a period
 * and a look apart (the longest gap between two ticks frames bring, 1.2 s at
 * 50 frames a second), so that it never fires while they flow, and soon
 * enough that a stall's pressure is acted on half a period late at most.
 */
export const FALLBACK_PERIODS = 1.5;

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
