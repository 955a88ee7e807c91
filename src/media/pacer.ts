export interface PacerOptions {
  /** Monotonic clock in ms; injectable for tests. */
  now?: () => number;
  /** Lateness beyond which the schedule restarts from now instead of bursting to catch up. */
  maxLateMs?: number;
  /** A step forward in the timeline beyond which the schedule goes on from the last frame instead of waiting it out. */
  maxGapMs?: number;
}

/**
 * Paces frames in real time for --realtime. Every frame is scheduled against
 * one anchor (clock time of a reference frame), never against the previous
 * frame, so sleep overshoots do not add up over a long file.
 *
 * A frame that is due goes at once. When the sender falls more than
 * `maxLateMs` behind (a stalled socket, a suspended process), the schedule is
 * re-anchored at that frame: the lag is dropped, not caught up in a burst.
 * A timeline that jumps backwards (a --loop restart, wire timestamps) also
 * re-anchors, the new frame due once the previous one has played: its
 * duration where the source knows it, else the step between the two before,
 * else Opus's default 20 ms. So does one that jumps forward by more than
 * `maxGapMs` (wire timestamps across a step of the clock that stamped them,
 * as NTP's first sync on a board that booted in 1970, or a capture appended
 * to after a restart): waited out, it would hold the stream for as long as
 * the step; a shorter gap (frames dropped where it was recorded) is kept.
 * A frame whose time does not advance (wire timestamps: a capture whose
 * sender stamped nothing, or stamped the frames of one read alike) is due
 * once the previous one has played too, but the schedule stays: due at once,
 * a capture stamped 0 throughout would go out as fast as it is read;
 * re-anchored, every pair stamped alike would push the stamps after it back
 * by a frame, and the capture would play ever later.
 */
/** What a frame plays for where neither its source nor the steps before tell: Opus's default frame. */
const DEFAULT_STEP_MS = 20;

export class Pacer {
  /** Times the schedule was restarted: too late, or the timeline went backwards. */
  reanchors = 0;

  private readonly now: () => number;
  private readonly maxLateMs: number;
  private readonly maxGapMs: number;
  private anchorClock = 0;
  private anchorTime = 0;
  private started = false;
  private lastTime = 0;
  private lastDue = 0;
  private lastStep = 0;
  /** The last frame's duration, where its source gave one. */
  private lastDuration: number | undefined;

  constructor(options: PacerOptions = {}) {
    this.now = options.now ?? (() => performance.now());
    this.maxLateMs = options.maxLateMs ?? 200;
    this.maxGapMs = options.maxGapMs ?? 1000;
  }

  /** Ms to wait before sending the frame at `timeMs` on the source timeline (playing `durationMs`, where known); 0 when it is due. */
  delayFor(timeMs: number, durationMs?: number): number {
    const now = this.now();
    /** When the frame before has played. */
    const played = this.lastDue + (this.lastDuration ?? (this.lastStep || DEFAULT_STEP_MS));
    const stays = this.started && timeMs === this.lastTime;
    if (!this.started) {
      this.started = true;
      this.anchor(now, timeMs);
    } else if (timeMs < this.lastTime || timeMs - this.lastTime > this.maxGapMs) {
      this.reanchors++;
      this.anchor(Math.max(now, played), timeMs);
    } else if (!stays) {
      this.lastStep = timeMs - this.lastTime;
    }
    this.lastTime = timeMs;
    this.lastDuration = durationMs;
    let due = stays ? played : this.anchorClock + (timeMs - this.anchorTime);
    if (now - due > this.maxLateMs) {
      this.reanchors++;
      this.anchor(now, timeMs);
      due = now;
    }
    this.lastDue = due;
    return Math.max(0, due - now);
  }

  private anchor(clock: number, timeMs: number): void {
    this.anchorClock = clock;
    this.anchorTime = timeMs;
  }
}
