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

  test("without a step the offset stays put: re-reading a whole-ms clock adds no jitter", () => {
    const { c, sources } = clocks(1_700_000_000_000.731);
    const clock = new WallClock(sources);
    const offset = clock.now() - c.monotonic;
    for (let i = 0; i < 100; i++) {
      c.monotonic += 1000.37;
      expect(clock.now() - c.monotonic).toBe(offset);
    }
  });

  test("the process clock agrees with Date.now() to a millisecond", () => {
    const before = Date.now();
    const now = wallClockMs();
    const after = Date.now();
    expect(now).toBeGreaterThanOrEqual(before - 1);
    expect(now).toBeLessThanOrEqual(after + 1);
  });
});
