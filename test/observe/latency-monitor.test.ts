import { describe, expect, test } from "bun:test";
import { heapStats } from "bun:jsc";
import { LatencyMonitor, type LatencyMonitorOptions, type LatencyWarningLevel } from "../../src/observe/latency-monitor.ts";

/** Deterministic order-scrambling without randomness: i -> (i * 37) mod n visits all of 0..n-1 when gcd(37, n) = 1. */
function scrambled(n: number): number[] {
  return Array.from({ length: n }, (_, i) => ((i * 37) % n) + 1);
}

describe("EMA and jitter", () => {
  test("exact values with alpha 0.5 (dyadic samples, so no rounding)", () => {
    const m = new LatencyMonitor({ alpha: 0.5 });
    m.record("write_call", 1);
    expect(m.snapshot("write_call")).toMatchObject({ count: 1, ema: 1, jitter: 0 });
    m.record("write_call", 3);
    // ema 1 + .5*(3-1) = 2; jitter 0 + .5*(|3-1| - 0) = 1
    expect(m.snapshot("write_call")).toMatchObject({ count: 2, ema: 2, jitter: 1 });
    m.record("write_call", 7);
    // ema 2 + .5*(7-2) = 4.5; jitter 1 + .5*(|7-3| - 1) = 2.5
    expect(m.snapshot("write_call")).toMatchObject({ count: 3, ema: 4.5, jitter: 2.5 });
    m.record("write_call", 7);
    // a repeated sample pulls jitter halfway back towards 0
    expect(m.snapshot("write_call")).toMatchObject({ count: 4, ema: 5.75, jitter: 1.25 });
  });

  test("jitter smooths the size of each change, down as well as up, and never goes negative", () => {
    const m = new LatencyMonitor({ alpha: 0.5 });
    const jitters: number[] = [];
    for (const v of [8, 4, 6, 2, 2]) {
      m.record("frame_age", v);
      jitters.push(m.snapshot("frame_age")!.jitter);
    }
    // |4-8| = 4: 0 + .5*4 = 2; |6-4| = 2: stays 2; |2-6| = 4: 2 + .5*(4-2) = 3; no change: 1.5
    expect(jitters).toEqual([0, 2, 2, 3, 1.5]);
    expect(jitters.every((j) => j >= 0)).toBe(true);
  });

  test("default alpha is 0.1", () => {
    const m = new LatencyMonitor();
    expect(m.alpha).toBe(0.1);
    m.record("frame_age", 0.01);
    m.record("frame_age", 0.02);
    const s = m.snapshot("frame_age")!;
    expect(s.ema).toBeCloseTo(0.011, 12);
    expect(s.jitter).toBeCloseTo(0.001, 12);
  });

  test("a constant stream has zero jitter and EMA equal to the value", () => {
    const m = new LatencyMonitor();
    for (let i = 0; i < 50; i++) m.record("heartbeat_rtt", 0.004);
    const s = m.snapshot("heartbeat_rtt")!;
    expect(s.ema).toBeCloseTo(0.004, 15);
    expect(s.jitter).toBe(0);
  });
});

describe("percentiles and max (nearest rank)", () => {
  test("1..100 in scrambled order", () => {
    const m = new LatencyMonitor();
    for (const v of scrambled(100)) m.record("enqueue_to_write", v / 1000);
    expect(m.snapshot("enqueue_to_write")).toMatchObject({
      count: 100,
      p50: 0.05,
      p95: 0.095,
      p99: 0.099,
      max: 0.1,
    });
  });

  test("1..1024 fills the default window exactly", () => {
    const m = new LatencyMonitor({ targetSeconds: 1e6, maxSeconds: 1e6 });
    for (const v of scrambled(1024)) m.record("op", v);
    // ranks: ceil(.5*1024)=512, ceil(.95*1024)=973, ceil(.99*1024)=1014
    expect(m.snapshot("op")).toMatchObject({ count: 1024, p50: 512, p95: 973, p99: 1014, max: 1024 });
  });

  test("ten samples: p95 and p99 are the largest, p50 the fifth", () => {
    const m = new LatencyMonitor();
    for (const v of [9, 2, 7, 4, 10, 1, 8, 3, 6, 5]) m.record("op", v / 100);
    expect(m.snapshot("op")).toMatchObject({ p50: 0.05, p95: 0.1, p99: 0.1, max: 0.1 });
  });

  test("a single sample is every percentile", () => {
    const m = new LatencyMonitor();
    m.record("op", 0.003);
    expect(m.snapshot("op")).toEqual({ count: 1, ema: 0.003, jitter: 0, p50: 0.003, p95: 0.003, p99: 0.003, max: 0.003 });
  });

  test("snapshot does not disturb the ring (recording continues in arrival order)", () => {
    const m = new LatencyMonitor({ windowSize: 3 });
    m.record("op", 3);
    m.record("op", 1);
    m.record("op", 2);
    m.snapshot("op"); // sorts a copy only
    m.record("op", 0.5); // must evict 3, the oldest, not whatever sorted first
    expect(m.snapshot("op")).toMatchObject({ max: 2, p50: 1 });
  });
});

describe("hot path", () => {
  test("record() allocates nothing once the operation exists, warnings included", () => {
    const m = new LatencyMonitor({ windowSize: 64, now: () => 0, warn: () => {} });
    for (let i = 0; i < 1_000; i++) m.record("write_call", (i % 300) / 1000);
    Bun.gc(true);
    // Live-object counts miss short-lived garbage; heap capacity has to grow to hold it.
    // One small object per call adds ~16 MB over 500k calls; no allocation adds ~0. The
    // margin is wide so that whatever else the process does meanwhile cannot decide.
    const before = heapStats().heapCapacity;
    for (let i = 0; i < 500_000; i++) m.record("write_call", (i % 300) / 1000);
    expect(heapStats().heapCapacity - before).toBeLessThan(1024 * 1024);
  });

  test("a held recorder allocates nothing either", () => {
    const m = new LatencyMonitor({ windowSize: 64, now: () => 0, warn: () => {} });
    const op = m.operation("write_call");
    for (let i = 0; i < 1_000; i++) op.record((i % 300) / 1000);
    Bun.gc(true);
    const before = heapStats().heapCapacity;
    for (let i = 0; i < 500_000; i++) op.record((i % 300) / 1000);
    expect(heapStats().heapCapacity - before).toBeLessThan(1024 * 1024);
  });
});

describe("window eviction", () => {
  test("only the last windowSize samples count for percentiles and max", () => {
    const m = new LatencyMonitor({ windowSize: 4, targetSeconds: 1e6, maxSeconds: 1e6 });
    for (const v of [10, 20, 30, 40]) m.record("op", v);
    expect(m.snapshot("op")).toMatchObject({ count: 4, p50: 20, max: 40 });

    m.record("op", 1);
    m.record("op", 2); // evicts 10 and 20: window is {30, 40, 1, 2}
    expect(m.snapshot("op")).toMatchObject({ count: 6, p50: 2, p95: 40, p99: 40, max: 40 });

    m.record("op", 3);
    m.record("op", 4); // evicts 30 and 40: window is {1, 2, 3, 4}
    expect(m.snapshot("op")).toMatchObject({ count: 8, p50: 2, p95: 4, max: 4 });
  });

  test("many wraps of the ring keep exactly the last window", () => {
    const m = new LatencyMonitor({ windowSize: 5, targetSeconds: 1e9, maxSeconds: 1e9 });
    for (let i = 1; i <= 1003; i++) m.record("op", i);
    // window holds 999..1003
    expect(m.snapshot("op")).toMatchObject({ count: 1003, p50: 1001, p95: 1003, max: 1003 });
  });
});

describe("the latest samples only", () => {
  test("percentiles over the newest n samples, before and after the ring wraps; recorded() counts all", () => {
    const m = new LatencyMonitor({ windowSize: 8 });
    for (const x of [5, 1, 2]) m.record("write_call", x);
    expect(m.snapshot("write_call", 2)).toMatchObject({ count: 3, p50: 1, p99: 2, max: 2 });
    // 4..14, eleven samples: the ring of 8 holds 7..14 and has wrapped; the newest 5 are 10..14.
    for (let x = 4; x <= 11; x++) m.record("frame_age", x);
    for (const x of [1, 2, 3]) m.record("enqueue_to_write", x);
    expect(m.recorded("frame_age")).toBe(8);
    m.record("frame_age", 12);
    m.record("frame_age", 13);
    m.record("frame_age", 14);
    expect(m.recorded("frame_age")).toBe(11);
    expect(m.snapshot("frame_age", 5)).toMatchObject({ p50: 12, p99: 14, max: 14 });
    expect(m.snapshot("frame_age", 3)).toMatchObject({ p50: 13, max: 14 });
    expect(m.snapshot("frame_age", 4)).toMatchObject({ p50: 12, max: 14 });
    // More than the window asks for the whole window: 7..14.
    expect(m.snapshot("frame_age", 100)).toMatchObject({ p50: 10, max: 14 });
    expect(m.snapshot("frame_age")).toMatchObject({ p50: 10, max: 14 });
    expect(m.recorded("heartbeat_rtt")).toBe(0);
  });
});

describe("operations", () => {
  test("are tracked independently and listed in first-seen order", () => {
    const m = new LatencyMonitor({ alpha: 0.5 });
    expect(m.operations()).toEqual([]);
    expect(m.snapshot("write_call")).toBeUndefined();
    m.record("write_call", 1);
    m.record("heartbeat_rtt", 4);
    m.record("write_call", 3);
    expect(m.operations()).toEqual(["write_call", "heartbeat_rtt"]);
    expect(m.snapshot("write_call")).toMatchObject({ count: 2, ema: 2, max: 3 });
    expect(m.snapshot("heartbeat_rtt")).toMatchObject({ count: 1, ema: 4, max: 4 });
  });

  test("a held recorder records into its operation; one named but never recorded is not listed", () => {
    const m = new LatencyMonitor({ alpha: 0.5 });
    const rtt = m.operation("heartbeat_rtt");
    const write = m.operation("write_call");
    expect(m.operation("write_call")).toBe(write);
    expect(m.operations()).toEqual([]);
    expect(m.snapshot("write_call")).toBeUndefined();
    expect(m.recorded("write_call")).toBe(0);
    // Listed in the order of their first samples, not of their naming.
    expect(write.record(1)).toBe(true);
    m.record("write_call", 3);
    expect(write.record(-1)).toBe(false);
    expect(m.operations()).toEqual(["write_call"]);
    expect(rtt.record(4)).toBe(true);
    expect(m.operations()).toEqual(["write_call", "heartbeat_rtt"]);
    expect(m.snapshot("write_call")).toMatchObject({ count: 2, ema: 2, max: 3 });
    expect(m.snapshot("heartbeat_rtt")).toMatchObject({ count: 1, ema: 4, max: 4 });
    expect(m.recorded("write_call")).toBe(2);
  });

  test("negative and non-finite samples are ignored", () => {
    const m = new LatencyMonitor();
    expect(m.record("op", -0.001)).toBe(false);
    expect(m.record("op", Number.NaN)).toBe(false);
    expect(m.record("op", Infinity)).toBe(false);
    expect(m.operations()).toEqual([]);
    // A name that got no valid sample holds no window (8 KiB at the default size).
    expect(m.operation("op").window.byteLength).toBe(0);
    expect(m.record("op", 0)).toBe(true);
    expect(m.snapshot("op")).toMatchObject({ count: 1, ema: 0, max: 0 });
    expect(m.operation("op").window.length).toBe(1024);
  });

  test("bad options are rejected at construction", () => {
    expect(() => new LatencyMonitor({ alpha: 0 })).toThrow(RangeError);
    expect(() => new LatencyMonitor({ alpha: 1.5 })).toThrow(RangeError);
    expect(() => new LatencyMonitor({ windowSize: 0 })).toThrow(RangeError);
    expect(() => new LatencyMonitor({ windowSize: 2.5 })).toThrow(RangeError);
    expect(() => new LatencyMonitor({ targetSeconds: 0.3, maxSeconds: 0.2 })).toThrow(RangeError);
    expect(() => new LatencyMonitor({ warnIntervalMs: -1 })).toThrow(RangeError);
  });
});

describe("warnings", () => {
  type Call = [string, LatencyWarningLevel, number, number];

  function setup(options: Pick<LatencyMonitorOptions, "warnIntervalMs" | "crossed"> = {}) {
    let clock = 1_000_000;
    const calls: Call[] = [];
    const m = new LatencyMonitor({
      ...options,
      now: () => clock,
      warn: (...args) => calls.push(args),
    });
    return { m, calls, advance: (ms: number) => (clock += ms) };
  }

  test("a held recorder warns under its operation's name, rate limited like record()", () => {
    const { m, calls, advance } = setup();
    const age = m.operation("frame_age");
    age.record(0.06);
    m.record("frame_age", 0.07);
    age.record(0.25);
    advance(10_000);
    age.record(0.08);
    expect(calls).toEqual([
      ["frame_age", "target", 0.06, 0.05],
      ["frame_age", "max", 0.25, 0.2],
      ["frame_age", "target", 0.08, 0.05],
    ]);
  });

  test("defaults: target 50 ms, max 200 ms, interval 10 s", () => {
    const m = new LatencyMonitor();
    expect([m.targetSeconds, m.maxSeconds, m.warnIntervalMs]).toEqual([0.05, 0.2, 10_000]);
  });

  test("at or below target is silent; above target warns 'target'; above max warns only 'max'", () => {
    const { m, calls } = setup();
    m.record("frame_age", 0.01);
    m.record("frame_age", 0.05); // equal to target: not a crossing
    expect(calls).toEqual([]);
    m.record("frame_age", 0.06);
    expect(calls).toEqual([["frame_age", "target", 0.06, 0.05]]);
    m.record("frame_age", 0.2); // equal to max: still only above target, and rate-limited
    m.record("frame_age", 0.25);
    expect(calls).toEqual([
      ["frame_age", "target", 0.06, 0.05],
      ["frame_age", "max", 0.25, 0.2],
    ]);
  });

  test("rate limited per operation and level, with the injected clock", () => {
    const { m, calls, advance } = setup();
    m.record("write_call", 0.06); // target #1
    m.record("write_call", 0.07); // suppressed
    m.record("write_call", 0.3); // max #1 (its own limit)
    m.record("write_call", 0.4); // suppressed
    m.record("heartbeat_rtt", 0.08); // other operation: target #1
    m.record("heartbeat_rtt", 0.5); // other operation: max #1
    expect(calls.length).toBe(4);

    advance(9_999);
    m.record("write_call", 0.09); // 9.999 s later: still suppressed
    m.record("write_call", 0.9);
    expect(calls.length).toBe(4);

    advance(1);
    m.record("write_call", 0.1); // exactly 10 s: target #2
    m.record("write_call", 0.11); // suppressed again
    m.record("write_call", 0.6); // max #2
    expect(calls).toEqual([
      ["write_call", "target", 0.06, 0.05],
      ["write_call", "max", 0.3, 0.2],
      ["heartbeat_rtt", "target", 0.08, 0.05],
      ["heartbeat_rtt", "max", 0.5, 0.2],
      ["write_call", "target", 0.1, 0.05],
      ["write_call", "max", 0.6, 0.2],
    ]);
  });

  test("a sustained overload warns once per interval, not once per sample", () => {
    const { m, calls, advance } = setup({ warnIntervalMs: 1_000 });
    // 50 frames/s of 20 ms Opus, 60 ms late each, for 5 s
    for (let i = 0; i < 250; i++) {
      m.record("enqueue_to_write", 0.06);
      advance(20);
    }
    expect(calls.length).toBe(5);
    expect(calls.every(([, level]) => level === "target")).toBe(true);
  });

  test("crossed hears of every sample above the target or the maximum, at its level, however the warnings are rate limited; one equal to the maximum is above the target only", () => {
    const crossings: [string, LatencyWarningLevel][] = [];
    const { m, calls } = setup({ crossed: (operation, level) => crossings.push([operation, level]) });
    for (const v of [0.01, 0.06, 0.3, 0.06, 0.3, 0.05, 0.2]) m.record("frame_age", v);
    expect(calls.length).toBe(2);
    expect(crossings).toEqual([
      ["frame_age", "target"],
      ["frame_age", "max"],
      ["frame_age", "target"],
      ["frame_age", "max"],
      ["frame_age", "target"],
    ]);
  });

  test("samples are recorded even when no warn callback is given", () => {
    const m = new LatencyMonitor();
    m.record("op", 5);
    expect(m.snapshot("op")).toMatchObject({ count: 1, max: 5 });
  });
});
