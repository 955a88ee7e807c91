import type { Report } from "../transport/report.ts";
import { CounterRate } from "./counter-rate.ts";

/**
 * JavaScriptCore's tier-up thresholds, scaled, that the executable starts
 * with (build.ts bakes it in). At the device's rate (50 frames a second per
 * channel) the JIT's optimizing tiers cost more than they save: a streaming
 * process holds about 9 MiB more with them (their compilers' code and
 * output), and the compiling itself is most of the extra CPU of the first
 * minute (bench/FINDINGS.md). At this scale the per-frame code stays in the
 * interpreter for days; a flood tiers up again (see JitPolicy).
 */
export const LIVE_JIT_POLICY = 10_000;

/** JavaScriptCore's normal tier-up thresholds. */
export const NORMAL_JIT_POLICY = 1;

/**
 * Above this many OpusFrames a second, over all of a process's channels, the
 * process is flooding (a lossless file, a fast peer), not streaming live: a
 * device carries at most two channels of 2.5 ms frames (2 x 400 a second).
 */
export const FLOOD_FRAMES_PER_SECOND = 1000;

/**
 * The rate is judged over at least this long, however often the sampler
 * ticks (--adaptive-window-ms can make it 10 ms): a live sender catching up
 * after a stall sends up to 200 ms of frames at once, a burst, not a flood.
 */
export const FLOOD_JUDGED_OVER_MS = 1000;

/**
 * Hands the process back to the JIT's normal thresholds, once and for the
 * rest of its life, when a sample shows it flooding: live audio keeps the
 * lean start, bulk transfers get compiled code within a sample's interval.
 */
export class JitPolicy {
  private readonly frames: CounterRate;
  private normal = false;

  constructor(
    private readonly report: Report,
    frames: number,
    now = performance.now(),
    private readonly apply: (scale: number) => void = (scale) => Bun.unsafe.setJITPolicy(scale),
  ) {
    this.frames = new CounterRate(frames, now, FLOOD_JUDGED_OVER_MS);
  }

  /** Whether the process has been handed back to the normal thresholds. */
  get isNormal(): boolean {
    return this.normal;
  }

  /**
   * `frames`: the process's OpusFrames so far (delivered or received, over
   * all channels), read only when a rate is judged.
   */
  sample(frames: () => number, now = performance.now()): void {
    if (this.normal) return;
    const judged = this.frames.judge(frames, now);
    if (!judged) return;
    const rate = judged.fresh / judged.seconds;
    if (rate <= FLOOD_FRAMES_PER_SECOND) return;
    this.normal = true;
    this.apply(NORMAL_JIT_POLICY);
    this.report("info", "jit: normal thresholds from now on", { frames_per_second: Math.round(rate) });
  }
}
