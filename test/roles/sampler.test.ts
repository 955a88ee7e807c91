/**
 * When the sampler ticks, on a clock the test steps by hand: frames arrive
 * at the gaps a test gives, timers fire when it passes them (each one a
 * wake-up of a real process), and the loop's next turn comes at once after
 * the frame that queued it.
 */
import { describe, expect, test } from "bun:test";
import { Sampler, type SamplerClock } from "../../src/roles/sampler.ts";

class SteppedClock implements SamplerClock {
  at = 0;
  /** When timers fired. */
  fired: number[] = [];
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
  /** Ticks queued for the loop's next turn. */
  get queued(): number {
    return this.turn.length;
  }
  /** Moves time to `to`, firing each timer due on the way at its own time, then the loop's queued turn. */
  advance(to: number): void {
    for (let guard = 0; guard < 100_000; guard++) {
      const next = [...this.timers.entries()].filter(([, t]) => t.due <= to).sort((a, b) => a[1].due - b[1].due)[0];
      if (!next) break;
      this.timers.delete(next[0]);
      this.at = next[1].due;
      this.fired.push(this.at);
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

/** A sampler of period `every` (1 s unless given), and the times it ticked at. */
function stepped(options: { every?: number; unsettled?: () => boolean; work?: (s: Sampler) => void } = {}) {
  const clock = new SteppedClock();
  const ticks: number[] = [];
  const sampler: Sampler = new Sampler(
    options.every ?? 1000,
    () => {
      ticks.push(clock.at);
      options.work?.(sampler);
    },
    options.unsettled ?? (() => false),
    clock,
  );
  /** `count` frames, one every `gap` ms from now on, each in a turn of its own. */
  const frames = (count: number, gap = 20) => {
    for (let i = 0; i < count; i++) {
      clock.advance(clock.at + gap);
      sampler.frame();
      clock.runTurn();
    }
  };
  return { clock, ticks, sampler, frames };
}

const gapsOf = (ticks: number[]) => ticks.slice(1).map((t, i) => t - ticks[i]!);

describe("Sampler", () => {
  test("while frames flow it ticks once a period on average, on their turns, and no timer fires", () => {
    const { clock, ticks, frames } = stepped();
    // Frames 21 ms apart: never on a period's edge.
    frames(50 * 60, 21);
    // 63 s of frames: a tick a second, not a tick every period and a frame (which gave 61).
    expect(ticks.length).toBe(63);
    for (const gap of gapsOf(ticks)) expect(gap).toBeLessThanOrEqual(1000 + 21);
    expect(clock.fired).toEqual([]);
    // The fallback is armed, and never reached while they flow.
    expect(clock.armed).toBe(1);
  });

  test("a frame that comes exactly when a tick is due brings it", () => {
    const { ticks, frames } = stepped();
    frames(100);
    expect(ticks).toEqual([1000, 2000]);
  });

  test("when frames stop with nothing unsettled it ticks once more, half a period after it was due, then sleeps", () => {
    const { clock, ticks, frames } = stepped();
    frames(200);
    expect(ticks.at(-1)).toBe(4000);
    clock.advance(clock.at + 60_000);
    expect(ticks.slice(4)).toEqual([5500]);
    expect(clock.armed).toBe(0);
  });

  test("while something is unsettled it ticks on without frames, a period apart, and stops when it settles", () => {
    let pressure = true;
    const { clock, ticks, frames } = stepped({ unsettled: () => pressure });
    frames(100);
    expect(ticks).toEqual([1000, 2000]);
    clock.advance(12_000);
    expect(ticks.slice(2)).toEqual([3500, 4500, 5500, 6500, 7500, 8500, 9500, 10500, 11500]);
    pressure = false;
    clock.advance(60_000);
    expect(ticks.slice(11)).toEqual([12_500]);
    expect(clock.armed).toBe(0);
  });

  test("frames after a pause bring a tick with the first, the next half a period on at the soonest; a stall then is acted on as soon", () => {
    const { clock, ticks, frames } = stepped();
    frames(100);
    clock.advance(30_000);
    const before = ticks.length;
    frames(10);
    expect(ticks.slice(before)).toEqual([30_020]);
    // They stop before the next is due (30 520): the fallback ticks half a period after that.
    clock.advance(60_000);
    expect(ticks.slice(before + 1)).toEqual([31_020]);
    for (const gap of gapsOf(ticks)) expect(gap).toBeGreaterThanOrEqual(500);
  });

  test("frames that resume after the fallback's tick and stop before theirs is due get one, half a period after it was due", () => {
    const { clock, ticks, frames } = stepped();
    frames(100);
    clock.advance(3500);
    expect(ticks).toEqual([1000, 2000, 3500]);
    expect(clock.armed).toBe(0);
    // Ten frames from 3520 to 3700; the next tick is due at 4000.
    frames(10);
    clock.advance(60_000);
    expect(ticks.slice(3)).toEqual([4500]);
    expect(clock.armed).toBe(0);
  });

  test("no tick follows another by less than half a period, a fallback's included", () => {
    let pressure = true;
    const { clock, ticks, frames } = stepped({ unsettled: () => pressure });
    frames(100);
    clock.advance(2000 + 3500);
    expect(ticks).toEqual([1000, 2000, 3500, 4500, 5500]);
    pressure = false;
    frames(100);
    expect(ticks[5]).toBe(6000);
    for (const gap of gapsOf(ticks)) expect(gap).toBeGreaterThanOrEqual(500);
  });

  test("frames a period or more apart: each brings a tick, so pressure that comes between them is seen at the next", () => {
    let pressure = false;
    const { clock, ticks, frames } = stepped({ unsettled: () => pressure });
    frames(12, 2500);
    expect(ticks).toEqual(Array.from({ length: 12 }, (_, i) => (i + 1) * 2500));
    pressure = true;
    const at = clock.at + 1200;
    clock.advance(at);
    frames(4, 2500);
    // Seen by each frame after it: none waits for a look every few frames, and no timer fires between them.
    expect(ticks.filter((t) => t > at)).toEqual([33_700, 36_200, 38_700, 41_200]);
    expect(clock.fired).toEqual([]);
  });

  test("a period shorter than a frame (a short --adaptive-window-ms): a tick with every frame, and no timer fires while they flow", () => {
    const { clock, ticks, frames } = stepped({ every: 10 });
    frames(500, 20);
    expect(ticks.length).toBe(500);
    expect(clock.fired).toEqual([]);
    // They stop: the fallback, twice their pace after the next tick was due, then sleep.
    clock.advance(clock.at + 1000);
    expect(clock.fired).toEqual([10_000 + 5 + 40]);
    expect(clock.armed).toBe(0);
  });

  test("frames further apart than periods (sparse frames, a short period): a tick with each, and no timer fires while they keep their pace", () => {
    for (const [every, gap] of [[10, 40], [10, 80], [100, 300], [1000, 2500], [1000, 3000]] as const) {
      const { clock, ticks, frames } = stepped({ every });
      frames(200, gap);
      expect({ every, gap, ticks: ticks.length, fired: clock.fired.length }).toEqual({ every, gap, ticks: 200, fired: 0 });
    }
  });

  test("frames of 80 ms at the default period: a tick a second, and no timer fires while they flow", () => {
    const { clock, ticks, frames } = stepped();
    frames(750, 80);
    expect(ticks.length).toBe(60);
    for (const gap of gapsOf(ticks)) expect(gap).toBeLessThanOrEqual(1080);
    expect(clock.fired).toEqual([]);
  });

  test("a period under a second: ticks on period, then the fallback, then half a period after a pause", () => {
    const { clock, ticks, frames } = stepped({ every: 100 });
    frames(50, 20);
    expect(ticks).toEqual(Array.from({ length: 10 }, (_, i) => (i + 1) * 100));
    clock.advance(5000);
    expect(ticks.slice(10)).toEqual([1150]);
    expect(clock.armed).toBe(0);
    frames(20, 10);
    expect(ticks.slice(11, 14)).toEqual([5010, 5060, 5160]);
  });

  test("frames in one long turn queue one tick; a fallback due in the same turn as a frame's tick adds none", () => {
    const { clock, ticks, sampler } = stepped({ every: 10 });
    clock.advance(10);
    sampler.frame();
    clock.at = 20; // the turn (a burst of frames) took 10 ms
    sampler.frame();
    expect(clock.queued).toBe(1);
    clock.runTurn();
    expect(ticks).toEqual([20]);

    const other = stepped();
    other.frames(10);
    // No frames until just before the fallback fires (1000 + 500), then one that is due; the fallback fires before its turn.
    other.clock.advance(1499);
    other.sampler.frame();
    other.clock.advance(1500);
    expect(other.ticks).toEqual([1500]);
  });

  test("an idle sampler arms nothing; stop() disarms at once, and after it frames arm nothing and a queued tick does not run", () => {
    const idle = stepped();
    idle.clock.advance(60_000);
    expect(idle.ticks).toEqual([]);
    expect(idle.clock.armed).toBe(0);

    const { clock, ticks, sampler, frames } = stepped();
    frames(60);
    expect(ticks).toEqual([1000]);
    expect(clock.armed).toBe(1);
    // A tick queued for the next turn, then stopped before that turn.
    clock.advance(2000);
    sampler.frame();
    sampler.stop();
    expect(clock.armed).toBe(0);
    clock.runTurn();
    frames(500);
    expect(clock.armed).toBe(0);
    clock.advance(clock.at + 60_000);
    expect(ticks).toEqual([1000]);
  });

  test("stop() from inside a tick's work leaves no timer armed", () => {
    const { clock, ticks, frames } = stepped({ work: (s) => s.stop() });
    frames(60);
    expect(ticks).toEqual([1000]);
    expect(clock.armed).toBe(0);
  });
});
