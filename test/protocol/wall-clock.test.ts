/**
 * Header timestamps follow the wall clock: WallClock derives Unix time from
 * one monotonic read and reads the wall clock again about once a second, so
 * a step of the system clock shows in the stamps within a second. The wall
 * clock is injected; the machine's clock is never touched.
 */
import { describe, expect, test } from "bun:test";
import { WallClock, wallClockMs } from "../../src/protocol/index.ts";

/** A hand-driven monotonic clock and a wall clock that can be stepped, with Date.now()'s whole-ms resolution. */
function clocks(start = 1_700_000_000_000.25) {
  const c = { monotonic: 5000, offset: start - 5000 };
  const sources = {
    monotonicMs: () => c.monotonic,
    realtimeMs: () => Math.floor(c.offset + c.monotonic),
  };
  return { c, sources, truth: () => c.offset + c.monotonic };
}

/** clocks(), and a WallClock whose thread can be taken off the CPU for `ms` just before its next read of the wall clock. */
function preemptible() {
  const { c, sources, truth } = clocks();
  let preempted = 0;
  const clock = new WallClock({ ...sources, realtimeMs: () => ((c.monotonic += preempted), (preempted = 0), sources.realtimeMs()) });
  return { c, truth, clock, preemptNextRead: (ms: number) => void (preempted = ms) };
}

describe("WallClock", () => {
  test("follows a step of the wall clock within a second, forwards and backwards, to half a millisecond", () => {
    const { c, sources, truth } = clocks();
    const clock = new WallClock(sources);
    expect(Math.abs(clock.now() - truth())).toBeLessThanOrEqual(0.5);
    // The device sets its clock 10 minutes ahead: stamps keep the old offset for less than a second.
    c.offset += 600_000;
    c.monotonic += 400;
    expect(truth() - clock.now()).toBeCloseTo(600_000, 0);
    c.monotonic += 600;
    expect(Math.abs(clock.now() - truth())).toBeLessThanOrEqual(0.5);
    // And back by 3.5 s.
    c.offset -= 3_500;
    c.monotonic += 1000;
    expect(Math.abs(clock.now() - truth())).toBeLessThanOrEqual(0.5);
    // Every stamp in between is one monotonic read plus the offset: no other clock read per call.
    let realtimeReads = 0;
    const counted = new WallClock({ ...sources, realtimeMs: () => (realtimeReads++, sources.realtimeMs()) });
    for (let i = 0; i < 1000; i++) {
      c.monotonic += 0.02;
      counted.now();
    }
    expect(realtimeReads).toBe(1);
  });

  test("a step (more than a few ms) lands within half a millisecond of the truth, wherever in its millisecond the wall clock was", () => {
    for (const phase of [0.05, 0.25, 0.5, 0.75, 0.95]) {
      const { c, sources, truth } = clocks(1_700_000_000_000 + phase);
      const clock = new WallClock(sources);
      clock.now();
      // From an offset in the middle of its millisecond, even 3 ms lands more than STEP_MS outside: a step.
      for (const step of [600_000, -3_500, 4, 3, -3]) {
        c.offset += step;
        c.monotonic += 1000;
        expect({ phase, step, error: Math.abs(clock.now() - truth()) <= 0.5 }).toEqual({ phase, step, error: true });
      }
    }
  });

  test("any step of more than 4 ms (STEP_MS + 2) lands within half a millisecond, wherever the offset sat in its millisecond", () => {
    let seed = 11;
    const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
    let worst = 0;
    for (let trial = 0; trial < 2000; trial++) {
      const { c, sources, truth } = clocks(1_700_000_000_000 + random());
      const clock = new WallClock(sources);
      clock.now();
      // A few re-reads while the clocks drift apart, so the offset sits anywhere in the readings' window.
      const ppm = (random() - 0.5) * 1000;
      for (let i = 0; i < 1 + Math.floor(random() * 20); i++) {
        const dt = 1000 + random();
        c.monotonic += dt;
        c.offset += (ppm * dt) / 1e6;
        clock.now();
      }
      c.offset += (random() < 0.5 ? -1 : 1) * (4.001 + random() * 6);
      c.monotonic += 1000 + random();
      worst = Math.max(worst, Math.abs(clock.now() - truth()));
    }
    expect(worst).toBeLessThanOrEqual(0.5);
  });

  test("a small step (under 3 ms) moves the offset just inside the reading's millisecond: within a millisecond of the truth", () => {
    for (const phase of [0.05, 0.25, 0.5, 0.75, 0.95]) {
      for (const step of [0.6, -0.6, 1.5, -1.5, 2.5, -2.5]) {
        const { c, sources, truth } = clocks(1_700_000_000_000 + phase);
        const clock = new WallClock(sources);
        const before = clock.now() - c.monotonic;
        c.offset += step;
        c.monotonic += 1000;
        const stamp = clock.now();
        expect({ phase, step, within: Math.abs(stamp - truth()) < 1, dateNow: Math.floor(stamp) }).toEqual({ phase, step, within: true, dateNow: sources.realtimeMs() });
        // Up to 1.5 ms it is taken for drift: the offset moves no further than the clock did (to the microsecond the window's edge allows).
        const move = Math.abs(stamp - c.monotonic - before);
        if (Math.abs(step) <= 1.5) expect({ phase, step, leastMove: move <= Math.abs(step) + 2e-3 }).toEqual({ phase, step, leastMove: true });
      }
    }
  });

  test("without a step the offset only moves toward the truth, then stays put: re-reading a whole-ms clock adds no jitter", () => {
    for (const phase of [0.05, 0.231, 0.731]) {
      const { c, sources } = clocks(1_700_000_000_000 + phase);
      const clock = new WallClock(sources);
      let offset = clock.now() - c.monotonic;
      const moves: number[] = [];
      for (let i = 0; i < 200; i++) {
        c.monotonic += 1000.37;
        const next = clock.now() - c.monotonic;
        expect(Math.abs(next - c.offset)).toBeLessThanOrEqual(Math.abs(offset - c.offset));
        if (next !== offset) moves.push(i);
        offset = next;
      }
      // Each move is to the edge of a reading's millisecond: a handful early on, then none.
      expect(moves.length).toBeLessThanOrEqual(8);
      expect(moves.every((i) => i < 100)).toBe(true);
      expect(Math.abs(offset - c.offset)).toBeLessThan(0.01);
    }
  });

  test("while the wall clock drifts from the monotonic one, fast or slow, every stamp stays within the millisecond Date.now() reports, and the offset moves by at most a ms plus the drift", () => {
    for (const ppm of [300, -300, 500, -500]) {
      for (const interval of [1000, 1000.37]) {
        const { c, sources, truth } = clocks(1_700_000_000_000.731);
        const clock = new WallClock(sources);
        let offset = clock.now() - c.monotonic;
        let worstMove = 0;
        for (let i = 0; i < 400; i++) {
          c.monotonic += interval;
          c.offset += (ppm * interval) / 1e6;
          const stamp = clock.now();
          expect({ ppm, i, stamp: Math.floor(stamp) }).toEqual({ ppm, i, stamp: sources.realtimeMs() });
          expect(Math.abs(stamp - truth())).toBeLessThan(1);
          const next = stamp - c.monotonic;
          worstMove = Math.max(worstMove, Math.abs(next - offset) - Math.abs((ppm * interval) / 1e6));
          offset = next;
        }
        expect({ ppm, interval, moveWithinAMs: worstMove <= 1 }).toEqual({ ppm, interval, moveWithinAMs: true });
      }
    }
  });

  test("drift is not taken for a step: stamps a few microseconds to 20 ms apart never go back by a millisecond", () => {
    for (const ppm of [300, -300, -500]) {
      const { c, sources } = clocks(1_700_000_000_000.3);
      const clock = new WallClock(sources);
      let seed = 3;
      const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
      let previous = clock.now();
      let worst = 0;
      for (let i = 0; i < 200_000; i++) {
        // Frames every few ms, and calls a few tens of microseconds apart (stamped, then delivered).
        const dt = random() < 0.5 ? 0.01 + random() * 0.05 : random() * 20;
        c.monotonic += dt;
        c.offset += (ppm * dt) / 1e6;
        const stamp = clock.now();
        worst = Math.max(worst, previous - stamp);
        previous = stamp;
      }
      expect({ ppm, backOneMs: worst >= 1 }).toEqual({ ppm, backOneMs: false });
    }
  });

  test("a wall clock read that the thread was taken off the CPU around (a busy machine) moves nothing: the clocks are read again at the next stamp", () => {
    const { c, truth, clock, preemptNextRead } = preemptible();
    clock.now();
    c.monotonic += 1000;
    const at = c.monotonic;
    preemptNextRead(6);
    // Taken as one instant, the two reads would look like a step of 6 ms, and stamps would run 6 ms ahead for a second.
    expect(Math.abs(clock.at(at) - (c.offset + at))).toBeLessThanOrEqual(0.5);
    expect(Math.abs(clock.now() - truth())).toBeLessThanOrEqual(0.5);
    c.monotonic += 500;
    expect(Math.abs(clock.now() - truth())).toBeLessThanOrEqual(0.5);
  });

  test("a pair of reads skipped as preempted is tried again at the very next stamp, not a second later", () => {
    const { c, truth, clock, preemptNextRead } = preemptible();
    clock.now();
    // The clock is stepped, and the first re-read after it is preempted: that stamp still has the old offset.
    c.offset += 60_000;
    c.monotonic += 1000;
    preemptNextRead(6);
    clock.now();
    c.monotonic += 1;
    expect(Math.abs(clock.now() - truth())).toBeLessThanOrEqual(0.5);
  });

  test("on a machine where every pair of reads is wide, a step of the wall clock is still followed, after a few tries", () => {
    const { c, sources, truth } = clocks();
    // Every monotonic read finds 0.3 ms gone: no pair is ever within 0.25 ms.
    const clock = new WallClock({ ...sources, monotonicMs: () => (c.monotonic += 0.3) });
    for (let i = 0; i < 3; i++) clock.now();
    expect(Math.abs(clock.now() - truth())).toBeLessThanOrEqual(2);
    c.offset += 60_000;
    c.monotonic += 1000;
    for (let i = 0; i < 3; i++) clock.now();
    expect(Math.abs(clock.now() - truth())).toBeLessThanOrEqual(2);
  });

  test("a step is counted with when (monotonic) and how far it moved the offset; the first reading, drift and a step of a few ms are not", () => {
    const { c, sources } = clocks();
    const clock = new WallClock(sources);
    clock.now();
    expect([clock.steps, clock.steppedAt, clock.sinceMs(clock.steppedAt)]).toEqual([0, -Infinity, Infinity]);
    c.monotonic += 1000;
    c.offset += 1.5;
    clock.now();
    expect(clock.steps).toBe(0);
    c.offset -= 1_800_000;
    c.monotonic += 1000;
    clock.now();
    expect(clock.steps).toBe(1);
    expect(clock.steppedAt).toBe(c.monotonic);
    expect(clock.stepMs).toBeCloseTo(-1_800_000, -1);
    c.monotonic += 250;
    expect(clock.sinceMs(clock.steppedAt)).toBe(250);
  });

  test("a wide pair used anyway (every try preempted) moves the offset by its width but is no step; a step beyond the width still is", () => {
    const { c, clock, preemptNextRead } = preemptible();
    clock.now();
    c.monotonic += 1000;
    for (let i = 0; i < 3; i++) {
      preemptNextRead(6);
      clock.now();
      c.monotonic += 20;
    }
    expect(clock.steps).toBe(0);
    c.offset += 60_000;
    c.monotonic += 1000;
    for (let i = 0; i < 3; i++) {
      preemptNextRead(6);
      clock.now();
      c.monotonic += 20;
    }
    expect(clock.steps).toBe(1);
    expect(clock.stepMs).toBeGreaterThan(59_990);
  });

  test("a wide pair used anyway with the wall clock stepped by STEP_MS (2 ms) is no step; by more it is, as far as the offset moved", () => {
    // A 6 ms pair moves the offset by 6 ms of its own: up to STEP_MS beyond that is not taken for a step.
    const stepped = (ms: number) => {
      const { c, clock, preemptNextRead } = preemptible();
      clock.now();
      c.monotonic += 1000;
      c.offset += ms;
      for (let i = 0; i < 3; i++) {
        preemptNextRead(6);
        clock.now();
        c.monotonic += 20;
      }
      return { ms, steps: clock.steps, stepMs: clock.stepMs };
    };
    expect(stepped(2)).toEqual({ ms: 2, steps: 0, stepMs: 0 });
    expect(stepped(3)).toEqual({ ms: 3, steps: 1, stepMs: 9 });
  });

  test("checkAgain reads the wall clock at once, not a second later, and says whether it stepped; at most every 10 ms", () => {
    const { c, sources, truth } = clocks();
    let realtimeReads = 0;
    const clock = new WallClock({ ...sources, realtimeMs: () => (realtimeReads++, sources.realtimeMs()) });
    clock.now();
    c.monotonic += 5;
    expect(clock.checkAgain()).toBe(false);
    expect(realtimeReads).toBe(1);
    c.monotonic += 5;
    expect(clock.checkAgain()).toBe(false);
    expect(realtimeReads).toBe(2);
    c.offset += 600_000;
    c.monotonic += 10;
    expect(clock.checkAgain()).toBe(true);
    expect(Math.abs(clock.now() - truth())).toBeLessThanOrEqual(0.5);
    expect(clock.steps).toBe(1);
  });

  test("a wall clock that reads NaN (an injected source) leaves the offset as it was", () => {
    const { c, sources, truth } = clocks();
    let broken = false;
    const clock = new WallClock({ ...sources, realtimeMs: () => (broken ? NaN : sources.realtimeMs()) });
    clock.now();
    broken = true;
    c.monotonic += 1000;
    expect(Math.abs(clock.now() - truth())).toBeLessThanOrEqual(0.5);
  });

  test("on the machine's own clocks, a stamp falls in the millisecond Date.now() reports around it", () => {
    // A fresh clock, as the process's shared one starts: its first stamp re-reads the wall clock.
    // A busy machine can take this process off the CPU between the two reads it pairs (the pair is
    // then not used): of five fresh clocks, one read undisturbed must fall in the millisecond. A clock
    // whose offset is wrong falls outside it every time.
    const inTheMillisecond = () => {
      const clock = new WallClock();
      const before = Date.now();
      const now = clock.now();
      const after = Date.now();
      return now >= before && now < after + 1 ? true : `${now} outside [${before}, ${after + 1})`;
    };
    const tries = Array.from({ length: 5 }, inTheMillisecond);
    expect(tries).toContain(true);
    expect(Math.abs(wallClockMs() - Date.now())).toBeLessThan(60_000);
  });
});
