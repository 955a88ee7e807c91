import { describe, expect, test } from "bun:test";
import { PeerStamps } from "../../src/channels/peer-stamps.ts";
import { WallClock } from "../../src/protocol/index.ts";
import { recordingReport } from "../support/reports.ts";

const NOW = 1_800_000_000_000;
const HOUR = 3_600_000;

describe("PeerStamps", () => {
  test("an age up to an hour is taken as it is; up to a second ahead is an age of 0; further either way is none (NaN), counted", () => {
    const { report } = recordingReport();
    const stamps = new PeerStamps(report, () => 0);
    expect(stamps.age(NOW, NOW - 12.5)).toBe(12.5);
    expect(stamps.age(NOW, NOW - HOUR)).toBe(HOUR);
    expect(stamps.age(NOW, NOW)).toBe(0);
    expect(stamps.age(NOW, NOW + 1000)).toBe(0);
    expect(stamps.unusable).toBe(0);
    expect(stamps.age(NOW, NOW - HOUR - 1)).toBeNaN();
    expect(stamps.age(NOW, NOW + 1001)).toBeNaN();
    expect(stamps.age(NOW, 0)).toBeNaN();
    expect(stamps.age(NOW, 2 ** 63 / 1e6)).toBeNaN();
    expect(stamps.age(NOW, -(2 ** 63) / 1e6)).toBeNaN();
    expect(stamps.unusable).toBe(5);
  });

  test("the warning comes with the first such stamp, then at most every 10 s, naming how many came since the last", () => {
    const { reports, report } = recordingReport();
    let clock = 0;
    const stamps = new PeerStamps(report, () => clock);
    for (let i = 0; i < 500; i++, clock += 10) stamps.age(NOW, 0);
    // 5 s of them: one line, for the first.
    expect(reports).toEqual([{ level: "warn", message: "frame stamp not of this machine's clock: no age taken", fields: { age_ms: NOW, frames: 1 } }]);
    // Nor a moment short of 10 s after it.
    clock = 9_999;
    stamps.age(NOW, 0);
    expect(reports).toHaveLength(1);
    clock = 10_000;
    stamps.age(NOW, NOW + 5000);
    expect(reports.at(-1)?.fields).toEqual({ age_ms: -5000, frames: 501 });
    expect(reports).toHaveLength(2);
    // Good stamps meanwhile tell nothing.
    clock = 30_000;
    stamps.age(NOW, NOW - 20);
    expect(reports).toHaveLength(2);
    expect(stamps.unusable).toBe(502);
  });

  describe("a step of this machine's wall clock, sender and receiver each following it within a second", () => {
    /** A receiver's clock on a hand-driven monotonic clock and a wall clock that steps; the sender's stamps are made by hand. */
    function receiver() {
      const c = { monotonic: 10_000, offset: NOW - 10_000 };
      const clock = new WallClock({ monotonicMs: () => c.monotonic, realtimeMs: () => Math.floor(c.offset + c.monotonic) });
      const { reports, report } = recordingReport();
      const stamps = new PeerStamps(report, () => c.monotonic, clock);
      const read = (sentAgoMs: number, senderOffset: number) => stamps.age(clock.now(), senderOffset + c.monotonic - sentAgoMs);
      return { c, clock, stamps, reports, read };
    }

    test("the receiver follows first (the sender's stamps still of before): no age of the step's size, counted, one warning naming the step", () => {
      const r = receiver();
      const before = r.c.offset;
      expect(Math.abs(r.read(2, before) - 2)).toBeLessThanOrEqual(1);
      // 10 minutes forward; the receiver's next re-read (a second on) finds it.
      r.c.offset += 600_000;
      r.c.monotonic += 1000;
      const ages = [];
      for (let i = 0; i < 25; i++, r.c.monotonic += 20) ages.push(r.read(2, before));
      expect(ages.filter((a) => a === a)).toEqual([]);
      // The sender follows too: once the step's 2 s are over, ages are taken again.
      r.c.monotonic += 1500;
      expect(Math.abs(r.read(2, r.c.offset) - 2)).toBeLessThanOrEqual(1);
      expect(r.stamps.unusable).toBe(25);
      expect(r.reports).toEqual([{ level: "warn", message: "this machine's clock stepped: frames stamped across the step give no age", fields: { step_ms: 600_000, for_ms: 2000, steps: 1 } }]);
    });

    test("the sender follows first (a step back of half an hour): the first stamp far from ours has the receiver read its clock at once, and gives no age", () => {
      const r = receiver();
      r.read(2, r.c.offset);
      r.c.monotonic += 400;
      r.c.offset -= 1_800_000;
      // Stamped after the step, aged on the receiver's clock of before: 30 minutes, unless it looks again.
      expect(r.read(2, r.c.offset)).toBeNaN();
      expect(r.clock.steps).toBe(1);
      for (let i = 0; i < 50; i++, r.c.monotonic += 20) expect(r.read(2, r.c.offset)).toBeNaN();
      r.c.monotonic += 1000;
      expect(Math.abs(r.read(3, r.c.offset) - 3)).toBeLessThanOrEqual(1);
      expect(r.stamps.unusable).toBe(51);
      expect(r.reports).toHaveLength(1);
    });

    test("small steps every second (a clock disciplined by steps of 3 to 9 ms): every frame keeps its age, off by no more than the step, and nothing is told", () => {
      const r = receiver();
      const ages: number[] = [r.read(5, r.c.offset)];
      for (let second = 0; second < 60; second++) {
        const before = r.c.offset;
        r.c.offset += second % 2 ? -(3 + (second % 7)) : 3 + (second % 7);
        // The sender follows half a second later than the receiver, or earlier: its stamps are of either side.
        for (let i = 0; i < 50; i++, r.c.monotonic += 20) ages.push(r.read(5, i < 25 ? before : r.c.offset));
      }
      expect(r.clock.steps).toBeGreaterThan(50);
      expect(ages.filter((a) => !(Math.abs(a - 5) <= 9 + 1))).toEqual([]);
      expect(r.stamps.unusable).toBe(0);
      expect(r.reports).toEqual([]);
    });

    test("large steps every second: told at most every 10 s with how many came since, not at every step", () => {
      const r = receiver();
      r.read(5, r.c.offset);
      for (let second = 0; second < 60; second++) {
        const before = r.c.offset;
        r.c.offset += second % 2 ? -60_000 : 60_000;
        for (let i = 0; i < 50; i++, r.c.monotonic += 20) r.read(5, i < 25 ? before : r.c.offset);
      }
      expect(r.clock.steps).toBeGreaterThan(50);
      expect(r.reports.length).toBeGreaterThanOrEqual(5);
      expect(r.reports.length).toBeLessThanOrEqual(7);
      expect(r.reports[0]!.fields).toEqual({ step_ms: 60_000, for_ms: 2000, steps: 1 });
      // Every step told of, in the counts of the lines after the first.
      expect(r.reports.reduce((sum, { fields }) => sum + (fields!.steps as number), 0)).toBeLessThanOrEqual(r.clock.steps);
      expect(r.reports.reduce((sum, { fields }) => sum + (fields!.steps as number), 0)).toBeGreaterThan(r.clock.steps - 11);
    });

    test("a small step soon after a large one neither ends the large one's 2 s nor starts 2 s of its own", () => {
      const r = receiver();
      const before = r.c.offset;
      expect(Math.abs(r.read(2, before) - 2)).toBeLessThanOrEqual(1);
      r.c.offset += 600_000;
      r.c.monotonic += 1000;
      expect(r.read(2, before)).toBeNaN();
      r.c.offset += 4;
      r.c.monotonic += 1000;
      // The receiver's re-read finds the small step; the sender has not followed the large one yet.
      expect(r.read(2, before)).toBeNaN();
      expect(r.clock.steps).toBe(2);
      // The large step's 2 s are over (the small one's are not: it counts for nothing).
      r.c.monotonic += 1500;
      expect(Math.abs(r.read(2, r.c.offset) - 2)).toBeLessThanOrEqual(1);
    });

    test("a large step and then a small one, both found by other reads of the clock (no frame between): the frames after them give no age", () => {
      const r = receiver();
      const before = r.c.offset;
      expect(Math.abs(r.read(2, before) - 2)).toBeLessThanOrEqual(1);
      r.c.offset += 600_000;
      r.c.monotonic += 1000;
      r.clock.now();
      r.c.offset += 4;
      r.c.monotonic += 1000;
      r.clock.now();
      expect(r.clock.steps).toBe(2);
      // The sender has not followed yet: of the two steps, only the last one's size is known to the receiver.
      expect(r.read(2, before + 4)).toBeNaN();
      expect(r.reports.map(({ fields }) => fields)).toEqual([{ step_ms: 4, for_ms: 2000, steps: 2 }]);
    });

    test("once a step's 2 s are over, a frame's age reads no clock: the hot path costs what it did before any step", () => {
      const c = { monotonic: 10_000, offset: NOW - 10_000 };
      let monotonicReads = 0;
      const clock = new WallClock({ monotonicMs: () => (monotonicReads++, c.monotonic), realtimeMs: () => Math.floor(c.offset + c.monotonic) });
      const stamps = new PeerStamps(recordingReport().report, () => (monotonicReads++, c.monotonic), clock);
      const readsPerFrame = () => {
        const now = clock.now();
        const before = monotonicReads;
        stamps.age(now, now - 5);
        return monotonicReads - before;
      };
      expect(readsPerFrame()).toBe(0);
      c.offset += 600_000;
      c.monotonic += 1000;
      for (let i = 0; i < 150; i++, c.monotonic += 20) readsPerFrame();
      expect(clock.steps).toBe(1);
      const reads = [];
      for (let i = 0; i < 100; i++, c.monotonic += 1) reads.push(readsPerFrame());
      expect(reads.filter((n) => n !== 0)).toEqual([]);
    });

    test("without a step a late frame (a backlog, a second) keeps its age, and the wall clock is read again at most every 10 ms for it", () => {
      let realtimeReads = 0;
      const c = { monotonic: 10_000 };
      const clock = new WallClock({ monotonicMs: () => c.monotonic, realtimeMs: () => (realtimeReads++, Math.floor(NOW - 10_000 + c.monotonic)) });
      const stamps = new PeerStamps(recordingReport().report, () => c.monotonic, clock);
      for (let i = 0; i < 100; i++, c.monotonic += 1) expect(stamps.age(clock.now(), clock.now() - 1000)).toBeCloseTo(1000, 0);
      expect(realtimeReads).toBeLessThanOrEqual(11);
      expect(stamps.unusable).toBe(0);
    });
  });
});
