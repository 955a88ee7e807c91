/**
 * Header timestamps: i64 Unix nanoseconds, little-endian.
 *
 * The hot path works in float milliseconds (microsecond resolution) and
 * splits them into two u32 halves, so stamping a frame allocates nothing;
 * exact i64 values go through bigint.
 */

import { readInt32LE, readUint32LE, write32LE } from "./little-endian.ts";

const TWO_32 = 4294967296;

/** Where a WallClock reads the time (ms); injectable so that tests can step the wall clock. */
export interface ClockSources {
  /** A clock that never steps: performance.now(). */
  monotonicMs?: () => number;
  /** The system's wall clock (CLOCK_REALTIME): Date.now(). */
  realtimeMs?: () => number;
}

/**
 * Unix time in ms from one monotonic clock read: performance.now() plus an
 * offset to the wall clock. The offset is read again about once a second, so
 * timestamps follow a step of the system clock (a device setting its clock
 * after boot, or NTP stepping it) within a second, where
 * `performance.timeOrigin + performance.now()` keeps the start-up offset for
 * the life of the process.
 *
 * Every stamp taken at a re-read falls in the millisecond Date.now() reports
 * (it has only ms). A re-read that agrees with the offset leaves it as it is,
 * to the microsecond, so re-reading adds no jitter. After a step of the wall
 * clock by more than STEP_MS + 2 ms (the offset may have sat up to a ms from
 * the truth, and the truth anywhere in its reading's ms) the offset is within
 * half a millisecond of the truth; after a smaller one it may instead move
 * just inside the reading's millisecond, within a millisecond of the truth.
 * Linux slews its monotonic clock together with the wall clock
 * (clock_gettime(2)), so between steps the two keep their distance; where
 * they do drift apart, the offset follows in moves of at most a millisecond
 * plus the drift since the last re-read, and stamps never go back by a
 * millisecond.
 */
export class WallClock {
  private readonly monotonic: () => number;
  private readonly realtime: () => number;
  private offset = performance.timeOrigin;
  private checkedAt = -Infinity;
  /** Pairs of clock reads skipped in a row (see recheck). */
  private unpaired = 0;
  /** Steps of the wall clock followed (not the first reading, which only sets the offset). */
  steps = 0;
  /** The monotonic reading (ms) at which the last step was followed; -Infinity before any. */
  steppedAt = -Infinity;
  /** How far (ms) the last step moved the offset: forwards positive. */
  stepMs = 0;

  constructor(
    sources: ClockSources = {},
    /** How often (ms of monotonic time) the wall clock is read again. */
    readonly recheckMs = 1000,
  ) {
    this.monotonic = sources.monotonicMs ?? (() => performance.now());
    this.realtime = sources.realtimeMs ?? Date.now;
  }

  /** Unix ms now. */
  now(): number {
    return this.at(this.monotonic());
  }

  /** Unix ms at the monotonic reading `monotonicMs`, taken just now (the hot path's one clock read). */
  at(monotonicMs: number): number {
    if (monotonicMs - this.checkedAt >= this.recheckMs) this.recheck();
    return this.offset + monotonicMs;
  }

  /**
   * Reads the wall clock again now, for a reading that looks off (a peer's
   * stamp far from ours: the clock may have stepped since the last re-read),
   * at most every AGAIN_MS; true when that found a step.
   */
  checkAgain(): boolean {
    const steps = this.steps;
    if (this.monotonic() - this.checkedAt >= AGAIN_MS) this.recheck();
    return this.steps !== steps;
  }

  /** Ms of this clock's monotonic time since `monotonicMs` (Infinity since -Infinity: since steppedAt before any step). */
  sinceMs(monotonicMs: number): number {
    return this.monotonic() - monotonicMs;
  }

  private recheck(): void {
    // The wall clock is paired with monotonic reads of its own, just before and after: the
    // caller's may be older, and a thread taken off the CPU between two reads (a busy machine)
    // would shift the offset by as long as it was off, and take that for a step. Such a pair is
    // not used and the next stamp reads them again, but not for ever: on a machine where every
    // pair is that wide, a step of the clock is still followed, to within the pair's width.
    const monotonicMs = this.monotonic();
    const realtimeMs = this.realtime();
    const width = this.monotonic() - monotonicMs;
    if (width > PAIRED_WITHIN_MS && ++this.unpaired < UNPAIRED_TRIES) return;
    this.unpaired = 0;
    const first = this.checkedAt === -Infinity;
    this.checkedAt = monotonicMs;
    // Date.now() truncates to whole ms: the offsets that agree with this reading
    // are [low, low + 1). One that still agrees is kept (re-reading adds no
    // jitter). One that agreed a second ago may sit nearly a ms from the truth,
    // and the truth may have moved since (drift, or a small step), so up to
    // STEP_MS outside it moves just inside, toward the truth, by no more than
    // it must: a move back is a stamp going back. Further out the clock was
    // stepped and the offset goes to the middle, within half a ms of the truth.
    const low = realtimeMs - monotonicMs;
    if (!Number.isFinite(low)) return;
    const high = low + 1 - 1e-3;
    if (this.offset >= low && this.offset <= high) return;
    if (this.offset < low - STEP_MS || this.offset > high + STEP_MS) {
      // A wide pair used anyway may be off by its width: a move within that is the pair, not a step.
      if (!first && Math.abs(low + 0.5 - this.offset) > STEP_MS + width) {
        this.steps++;
        this.steppedAt = monotonicMs;
        this.stepMs = low + 0.5 - this.offset;
      }
      this.offset = low + 0.5;
    } else this.offset = this.offset < low ? low : high;
  }
}

/** How far (ms) outside the readings' window an offset must be to be taken for a step of the wall clock, not drift. */
const STEP_MS = 2;

/** The most (ms) the monotonic clock may move across a read of the wall clock for the two to be taken as one instant. */
const PAIRED_WITHIN_MS = 0.25;

/** The least time (ms) between two reads of the wall clock that checkAgain asks for: a flood of odd stamps reads it 100 times a second at most. */
const AGAIN_MS = 10;

/** How many pairs in a row may be skipped as too wide before the last of them is used anyway. */
const UNPAIRED_TRIES = 3;

/** The process's wall clock, shared by everything that stamps or ages messages. */
export const wallClock = new WallClock();

/** Wall-clock Unix time in ms with microsecond resolution (Date.now() has only ms). */
export function wallClockMs(): number {
  return wallClock.now();
}

/** Writes `ms` (Unix milliseconds, fractional) as i64 nanoseconds at `offset`. */
export function writeTimestampMs(bytes: Uint8Array, offset: number, ms: number): void {
  const ns = Math.round(ms * 1e6);
  const hi = Math.floor(ns / TWO_32);
  write32LE(bytes, offset, ns - hi * TWO_32);
  write32LE(bytes, offset + 4, hi);
}

/** Reads the i64 nanosecond timestamp at `offset` as Unix milliseconds (float). */
export function readTimestampMs(bytes: Uint8Array, offset: number): number {
  return (readInt32LE(bytes, offset + 4) * TWO_32 + readUint32LE(bytes, offset)) / 1e6;
}

export function writeTimestampNs(bytes: Uint8Array, offset: number, ns: bigint): void {
  const bits = BigInt.asUintN(64, ns);
  write32LE(bytes, offset, Number(bits & 0xffffffffn));
  write32LE(bytes, offset + 4, Number(bits >> 32n));
}

export function readTimestampNs(bytes: Uint8Array, offset: number): bigint {
  return (BigInt(readInt32LE(bytes, offset + 4)) << 32n) | BigInt(readUint32LE(bytes, offset));
}
