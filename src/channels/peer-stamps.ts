import type { Report } from "../transport/report.ts";

/** How far (ms) ahead of this machine's clock a peer's stamp may lie and still give a frame age (of 0): clock reads a ms apart, a small step. */
const STAMP_AHEAD_MS = 1000;

/** How far (ms) behind it: an hour, far past any queue and socket buffer a live frame can wait in. */
const STAMP_BEHIND_MS = 3_600_000;

/** The warning about such stamps is written at most this often (ms), with how many came since the last. */
const TELL_EVERY_MS = 10_000;

/**
 * The header stamps of the frames a receiver takes from its peer. Both ends
 * of a channel stamp from the device's one clock, so a frame's age is the
 * latency it met; a stamp far outside what a queue and a socket can hold
 * (a peer's 0, or i64 max) is not of this clock: it gives no age, and is
 * counted and told of instead of warned about as a latency of decades.
 */
export class PeerStamps {
  /** Frames whose stamp gave no age. */
  unusable = 0;
  private told = 0;
  private toldAt = -Infinity;

  constructor(
    private readonly report: Report,
    /** Paces the warning; a test may drive it by hand. */
    private readonly monotonicMs: () => number = () => performance.now(),
  ) {}

  /**
   * The age (ms, at least 0) at `nowMs` (Unix ms) of a frame stamped
   * `stampMs`, or NaN when the stamp is not of this machine's clock.
   */
  age(nowMs: number, stampMs: number): number {
    const age = nowMs - stampMs;
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
}
