import { wallClock, type WallClock } from "../protocol/index.ts";
import type { Report } from "../transport/report.ts";

/** How far (ms) ahead of this machine's clock a peer's stamp may lie and still give a frame age (of 0): clock reads a ms apart, a small step. */
const STAMP_AHEAD_MS = 1000;

/** How far (ms) behind it: an hour, far past any queue and socket buffer a live frame can wait in. */
const STAMP_BEHIND_MS = 3_600_000;

/**
 * How long (ms) after a step of this machine's wall clock a stamp may be of
 * either side of it: a sender of ours follows a step within a second (its
 * WallClock re-reads the clock that often), and its frames stamped before
 * then wait in its queue and the socket a little longer.
 */
const ACROSS_STEP_MS = 2000;

/**
 * A step of the clock smaller than this (ms) gives frames stamped across it
 * an age off by less than the spacing of the age buckets where live audio
 * lives: they keep it, and the step is not told of. A clock kept by small
 * steps (a few ms every second, where it is not slewed) would otherwise leave
 * no frame an age at all, and a warning every second.
 */
const SMALL_STEP_MS = 10;

/**
 * An age outside [-AHEAD_MS, LATE_MS] sends this machine's clock to be read
 * again first: the sender may have followed a step that we have not yet.
 * AHEAD_MS: two clocks each within half a ms of the truth; LATE_MS: the
 * latency target.
 */
const AHEAD_MS = 1;
const LATE_MS = 50;

/** The warning about such stamps is written at most this often (ms), with how many came since the last. */
const TELL_EVERY_MS = 10_000;

/**
 * The header stamps of the frames a receiver takes from its peer. Both ends
 * of a channel stamp from the device's one clock, so a frame's age is the
 * latency it met; a stamp far outside what a queue and a socket can hold
 * (a peer's 0, or i64 max) is not of this clock: it gives no age, and is
 * counted and told of instead of warned about as a latency of decades.
 * Nor does a frame read within ACROSS_STEP_MS of a step of the clock: its
 * stamp may be of the other side of the step, and its age off by the step
 * (minutes, or years), a latency no frame met.
 */
export class PeerStamps {
  /** Frames whose stamp gave no age. */
  unusable = 0;
  private told = 0;
  private toldAt = -Infinity;
  /** The clock's steps counted when it was last looked at. */
  private stepsSeen = 0;
  /** The last step not small (SMALL_STEP_MS): its steppedAt, and how far it moved the clock. */
  private largeStepAt = -Infinity;
  private largeStepMs = 0;
  /** Steps not small since the last warning about them, and when (monotonicMs) that was. */
  private stepsUntold = 0;
  private stepToldAt = -Infinity;
  /** A step whose ACROSS_STEP_MS are over (its steppedAt): no need to look at the clock for it again. */
  private settledStep = -Infinity;

  constructor(
    private readonly report: Report,
    /** Paces the warning; a test may drive it by hand. */
    private readonly monotonicMs: () => number = () => performance.now(),
    /** The clock `nowMs` is read from, whose steps are followed. */
    private readonly clock: WallClock = wallClock,
  ) {}

  /**
   * The age (ms, at least 0) at `nowMs` (Unix ms) of a frame stamped
   * `stampMs`, or NaN when the stamp is not of this machine's clock.
   */
  age(nowMs: number, stampMs: number): number {
    const age = nowMs - stampMs;
    if (age < -AHEAD_MS || age > LATE_MS) this.clock.checkAgain();
    if (this.clock.steps !== this.stepsSeen) this.sawSteps();
    if (this.largeStepAt !== this.settledStep) {
      // Since the large step: a small one may have come after it.
      if (this.clock.sinceMs(this.largeStepAt) < ACROSS_STEP_MS) return this.acrossStep();
      this.settledStep = this.largeStepAt;
    }
    if (age >= 0 && age <= STAMP_BEHIND_MS) return age;
    if (age < 0 && age >= -STAMP_AHEAD_MS) return 0;
    this.unusable++;
    const at = this.monotonicMs();
    if (at - this.toldAt >= TELL_EVERY_MS) {
      this.report("warn", "frame stamp not of this machine's clock: no age taken", { age_ms: Math.round(age), frames: this.unusable - this.told });
      this.told = this.unusable;
      this.toldAt = at;
    }
    return Number.NaN;
  }

  /** The clock counted steps since it was last looked at: the last of them, unless small, starts ACROSS_STEP_MS without ages. */
  private sawSteps(): void {
    const steps = this.clock.steps - this.stepsSeen;
    this.stepsSeen = this.clock.steps;
    // Of several steps found at once only the last one's size is known: the others may have been large.
    if (steps === 1 && Math.abs(this.clock.stepMs) < SMALL_STEP_MS) return;
    this.largeStepAt = this.clock.steppedAt;
    this.largeStepMs = this.clock.stepMs;
    this.stepsUntold += steps;
  }

  /** A frame read within ACROSS_STEP_MS of a step: no age; the steps told of at most every TELL_EVERY_MS, as a clock may step every second. */
  private acrossStep(): number {
    this.unusable++;
    const at = this.monotonicMs();
    if (this.stepsUntold > 0 && at - this.stepToldAt >= TELL_EVERY_MS) {
      this.report("warn", "this machine's clock stepped: frames stamped across the step give no age", { step_ms: Math.round(this.largeStepMs), for_ms: ACROSS_STEP_MS, steps: this.stepsUntold });
      this.stepsUntold = 0;
      this.stepToldAt = at;
    }
    return Number.NaN;
  }
}
