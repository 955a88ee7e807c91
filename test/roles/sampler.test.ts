/**
 * When the sampler ticks, on a clock the test steps by hand: frames arrive
 * every 20 ms of its time, timers fire when it passes them, and the loop's
 * next turn comes at once after the frame that queued it.
 */
import { describe, expect, test } from "bun:test";
import { FALLBACK_PERIODS, Sampler, type SamplerClock } from "../../src/roles/sampler.ts";

class SteppedClock implements SamplerClock {
  at = 0;
  private timers = new Map<number, { due: number; run: () => void }>();
  private nextId = 1;
  private turn: (() => void)[] = [];

  now(): number {
    return this.at;
  }
  setTimeout(run: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { due: this.at + ms, run });
    return id;
  }
  clearTimeout(timer: unknown): void {
    this.timers.delete(timer as number);
  }
  setImmediate(run: () => void): void {
    this.turn.push(run);
  }
  /** Timers armed now. */
  get armed(): number {
    return this.timers.size;
  }
  /** Moves time to `to`, firing each timer due on the way at its own time, then the loop's queued turn. */
  advance(to: number): void {
    for (;;) {
      const next = [...this.timers.entries()].filter(([, t]) => t.due <= to).sort((a, b) => a[1].due - b[1].due)[0];
      if (!next) break;
      this.timers.delete(next[0]);
      this.at = next[1].due;
      next[1].run();
      this.runTurn();
    }
    this.at = to;
    this.runTurn();
  }
  runTurn(): void {
    for (const run of this.turn.splice(0)) run();
  }
}

/** A sampler of a 1 s period looking every 10th frame, and the times it ticked at. */
function sampler(unsettled = () => false) {
  const clock = new SteppedClock();
  const ticks: number[] = [];
  const s = new Sampler(1000, 10, () => ticks.push(clock.at), unsettled, clock);
  /** `count` frames, one every `gap` ms from now on. */
  const frames = (count: number, gap = 20) => {
    for (let i = 0; i < count; i++) {
      clock.advance(clock.at + gap);
      s.frame();
      clock.runTurn();
    }
  };
  return { clock, ticks, sampler: s, frames };
}

describe("Sampler", () => {
  test("while frames flow it ticks once a period on average, on their turns, and no timer fires", () => {
    const { clock, ticks, frames } = sampler();
    // Frames 21 ms apart: a look every 210 ms, never on a period's edge.
    frames(50 * 60, 21);
    const span = ticks.at(-1)! - ticks[0]!;
    // 63 s of frames: a tick a second, not a tick every period and a look (which gave 53).
    expect(ticks.length).toBeGreaterThanOrEqual(62);
    expect(ticks.length).toBeLessThanOrEqual(63);
    expect(span / (ticks.length - 1)).toBeCloseTo(1000, -1);
    // Each tick came with a frame, a look's time after the one before at most.
    for (let i = 1; i < ticks.length; i++) expect(ticks[i]! - ticks[i - 1]!).toBeLessThanOrEqual(1000 + 210);
    // The fallback is armed but never reached while they flow.
    expect(clock.armed).toBe(1);
  });

  test("when frames stop with nothing unsettled it ticks once more, late by half a period at most, then sleeps", () => {
    const { clock, ticks, frames } = sampler();
    frames(200);
    const last = ticks.at(-1)!;
    const before = ticks.length;
    clock.advance(clock.at + 60_000);
    expect(ticks.length).toBe(before + 1);
    expect(ticks.at(-1)! - last).toBe(FALLBACK_PERIODS * 1000);
    expect(clock.armed).toBe(0);
  });

  test("while something is unsettled it ticks on without frames, every 1.5 periods, and stops when it settles", () => {
    let pressure = true;
    const { clock, ticks, frames } = sampler(() => pressure);
    frames(100);
    const last = ticks.at(-1)!;
    const before = ticks.length;
    clock.advance(last + 10 * 1500);
    expect(ticks.slice(before)).toEqual(Array.from({ length: 10 }, (_, i) => last + (i + 1) * 1500));
    pressure = false;
    clock.advance(clock.at + 1500);
    clock.advance(clock.at + 60_000);
    expect(ticks.length).toBe(before + 11);
    expect(clock.armed).toBe(0);
  });

  test("frames after a pause bring a tick on their first look, and the period after it", () => {
    const { clock, ticks, frames } = sampler();
    frames(100);
    clock.advance(clock.at + 30_000);
    const resumed = clock.at;
    const before = ticks.length;
    frames(100);
    // The first look (10 frames in) ticks; the next not sooner than half a period on.
    expect(ticks[before]).toBe(resumed + 200);
    expect(ticks[before + 1]! - ticks[before]!).toBeGreaterThanOrEqual(500);
  });

  test("an idle sampler arms nothing; after stop() frames arm nothing and a queued tick does not run", () => {
    const idle = sampler();
    idle.clock.advance(60_000);
    expect(idle.ticks).toEqual([]);
    expect(idle.clock.armed).toBe(0);

    const { clock, ticks, sampler: s, frames } = sampler();
    frames(60);
    const before = ticks.length;
    // A tick queued for the next turn, then stopped before that turn.
    clock.advance(clock.at + 1000);
    for (let i = 0; i < 10; i++) s.frame();
    s.stop();
    clock.runTurn();
    frames(500);
    expect(clock.armed).toBe(0);
    clock.advance(clock.at + 60_000);
    expect(ticks.length).toBe(before);
    expect(clock.armed).toBe(0);
  });

  test("a fallback due in the same turn as a frame's tick adds no second tick", () => {
    const { clock, ticks, sampler: s, frames } = sampler();
    frames(10);
    const first = ticks.length;
    // No frames for just under the fallback's delay, then a look that is due; the fallback fires before its turn.
    clock.advance(clock.at + FALLBACK_PERIODS * 1000 - 1);
    for (let i = 0; i < 10; i++) s.frame();
    clock.advance(clock.at + 1);
    expect(ticks.length - first).toBe(1);
  });
});
