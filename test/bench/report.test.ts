/**
 * The live rows set the agent's RSS against the bare pair and against the
 * bare pair that also loads the runtime modules the streaming roles load;
 * the Bun floor rows show idle, waking and waking with those modules, and
 * the modules' own cost (the floor with them less the floor without):
 * checked on figures made up here, so that each is exact.
 */
import { describe, expect, test } from "bun:test";
import type { Footprint, LiveFigures, PairFigures } from "../../src/bench/live.ts";
import { formatNumber, formatTable, judge, type FootprintGoals } from "../../src/bench/report.ts";

const GOALS: FootprintGoals = {
  liveP99VsFloor: 1.5,
  liveMaxMs: 5,
  liveCpuVsFloor: 1.5,
  liveWakeupsPerFrame: 1.1,
  liveRssOverFloorMiB: 6,
  liveServeRssOverFloorMiB: 8,
  startupOverFloorMs: 10,
};

function footprint(peakRssMiB: number): Footprint {
  return {
    process: "p",
    cpuPercent: 1,
    wakeupsPerFrame: 1,
    mainThreadWakeupsPerFrame: 1,
    wakeupsPerSecond: 50,
    peakRssMiB,
    workingSetMiB: 1,
    anonymousMiB: 1,
    threads: 3,
    byThread: {},
  };
}

function pair(send: number, recv: number): PairFigures {
  return { openedAtMs: 0, send: footprint(send), recv: footprint(recv), windowFrames: 50, framesPerSecond: 50 };
}

const live = (modules?: number): LiveFigures => ({
  warmupSeconds: 1,
  windowSeconds: 1,
  source: "tone.opus",
  idle: footprint(21),
  tick: footprint(22),
  ...(modules === undefined ? {} : { modules: footprint(modules), bareModules: pair(28.5, 29.25) }),
  bare: pair(24, 25),
  agent: pair(35, 33),
  both: { serve: footprint(36), inputServe: footprint(34), framesPerSecond: 100 },
});

const find = (rows: ReturnType<typeof judge.live>, metric: string) => rows.find((r) => r.metric === metric);

describe("RSS against the bare pair with the streaming roles' runtime modules", () => {
  test("each side and serve are set against that pair as measured, by difference, with no goal", () => {
    const rows = judge.live(live(27.5), GOALS);
    expect(find(rows, "sender RSS (max)")).toMatchObject({ agent: 35, floor: 24, versus: "+11.0 over bare", status: "MISS" });
    expect(find(rows, "sender RSS (max), against the bare pair with the same runtime modules")).toMatchObject({ agent: 35, floor: 28.5, versus: "+6.50 over bare + modules", status: "" });
    expect(find(rows, "receiver RSS (max), against the bare pair with the same runtime modules")).toMatchObject({ agent: 33, floor: 29.25, versus: "+3.75 over bare + modules" });
    expect(find(rows, "serve RSS (max), against the bare sender with the same runtime modules")).toMatchObject({ agent: 36, floor: 28.5, versus: "+7.50 over bare + modules" });
  });

  test("without that pair measured, the rows have no floor figure", () => {
    const rows = judge.live(live(), GOALS);
    expect(find(rows, "sender RSS (max), against the bare pair with the same runtime modules")).toMatchObject({ agent: 35, floor: null, versus: "-" });
    expect(find(rows, "serve RSS (max), against the bare sender with the same runtime modules")).toMatchObject({ agent: 36, floor: null });
  });
});

describe("Bun floor rows", () => {
  const modules = "waking 50/s + node:fs, node:path, bun:ffi";

  test("idle, waking, and waking with the runtime modules each show their own figure; the modules' own cost is the difference", () => {
    const rows = judge.live(live(27.5), GOALS);
    expect(find(rows, "idle: RSS (max)")?.floor).toBe(21);
    expect(find(rows, "waking 50/s: RSS (max)")?.floor).toBe(22);
    expect(find(rows, `${modules}: RSS (max)`)?.floor).toBe(27.5);
    expect(find(rows, `${modules}: anonymous memory`)?.floor).toBe(1);
    expect(find(rows, "those runtime modules' own RSS (over waking 50/s)")?.floor).toBe(5.5);
  });

  test("without the floor with modules, its rows are empty", () => {
    const rows = judge.live(live(), GOALS);
    expect(find(rows, `${modules}: RSS (max)`)?.floor).toBeNull();
    expect(find(rows, "those runtime modules' own RSS (over waking 50/s)")?.floor).toBeNull();
  });
});

describe("start-up rows", () => {
  const figure = (medianMs: number) => ({ medianMs, minMs: medianMs - 1, appearMedianMs: medianMs - 0.5 });

  test("the agent against bare Bun (the goal) and, without a goal, against the bare sender with the runtime modules", () => {
    const rows = judge.startup(figure(33), figure(19), figure(2.5), GOALS, figure(25));
    expect(rows.find((r) => r.metric === "exec -> connectable (median)")).toMatchObject({ agent: 33, floor: 19, native: 2.5, versus: "+14.0 over bare", status: "MISS" });
    expect(rows.find((r) => r.metric === "exec -> connectable (median), against the bare sender with the same runtime modules")).toMatchObject({ agent: 33, floor: 25, versus: "+8.00 over bare + modules", status: "" });
    expect(rows.find((r) => r.metric === "exec -> socket file (median)")).toMatchObject({ agent: 32.5, floor: 18.5 });
  });

  test("without the floor with the modules, that row is empty and the others keep their figures", () => {
    const rows = judge.startup(figure(28), figure(19), undefined, GOALS);
    expect(rows.find((r) => r.metric === "exec -> connectable (median)")).toMatchObject({ agent: 28, floor: 19, status: "PASS" });
    expect(rows.find((r) => r.metric.endsWith("with the same runtime modules"))).toMatchObject({ agent: 28, floor: null, versus: "-" });
  });
});

describe("the live goals, judged on the figures as measured", () => {
  /** A side with the CPU and wake-ups given (the main thread's apart), the rest as anywhere else. */
  const side = (cpuPercent: number, wakeupsPerFrame: number, mainThreadWakeupsPerFrame: number, peakRssMiB: number): Footprint => ({
    ...footprint(peakRssMiB),
    cpuPercent,
    wakeupsPerFrame,
    mainThreadWakeupsPerFrame,
  });
  const measured = (send: Footprint, recv: Footprint, latencyMs: PairFigures["latencyMs"]): PairFigures => ({ ...pair(0, 0), send, recv, latencyMs });
  const figures = (agent: PairFigures, bare: PairFigures, serveRssMiB: number): LiveFigures => ({ ...live(), agent, bare, both: { serve: footprint(serveRssMiB), framesPerSecond: 100 } });

  test("CPU and p99 are set against the bare pair's as a multiple, RSS as a difference, each PASS at its goal and MISS just past it", () => {
    const bare = measured(side(0.5, 1.02, 1.01, 24), side(0.25, 1.03, 1.02, 25), { p50: 0.125, p99: 0.25, max: 0.5 });
    const atGoal = figures(measured(side(0.75, 1.1, 1.05, 30), side(0.375, 1.0, 1.0, 31), { p50: 0.25, p99: 0.375, max: 5 }), bare, 32);
    const past = figures(measured(side(0.76, 1.11, 1.0, 30.5), side(0.38, 1.2, 1.05, 31.25), { p50: 0.25, p99: 0.38, max: 5.01 }), bare, 32.5);
    const at = judge.live(atGoal, GOALS);
    const over = judge.live(past, GOALS);
    const status = (rows: ReturnType<typeof judge.live>, metric: string) => [find(rows, metric)?.status, find(rows, metric)?.versus];
    expect(status(at, "one-way latency p99")).toEqual(["PASS", "1.50x bare"]);
    expect(status(over, "one-way latency p99")).toEqual(["MISS", "1.52x bare"]);
    expect([find(at, "one-way latency max")?.status, find(over, "one-way latency max")?.status]).toEqual(["PASS", "MISS"]);
    expect(status(at, "sender CPU")).toEqual(["PASS", "1.50x bare"]);
    expect(status(over, "sender CPU")).toEqual(["MISS", "1.52x bare"]);
    expect(status(at, "receiver CPU")).toEqual(["PASS", "1.50x bare"]);
    expect(status(over, "receiver CPU")).toEqual(["MISS", "1.52x bare"]);
    expect(status(at, "sender RSS (max)")).toEqual(["PASS", "+6.00 over bare"]);
    expect(status(over, "sender RSS (max)")).toEqual(["MISS", "+6.50 over bare"]);
    expect(status(over, "receiver RSS (max)")).toEqual(["MISS", "+6.25 over bare"]);
    expect(status(at, "serve RSS (max)")).toEqual(["PASS", "+8.00 over bare"]);
    expect(status(over, "serve RSS (max)")).toEqual(["MISS", "+8.50 over bare"]);
    // The figures themselves, each from its own side.
    expect(find(over, "receiver CPU")).toMatchObject({ agent: 0.38, floor: 0.25 });
    expect(find(over, "one-way latency p50")).toMatchObject({ agent: 0.25, floor: 0.125, versus: "2.00x bare", status: "" });
  });

  test("wake-ups are judged over all the threads of each side, not the main thread's alone, and not against the floor", () => {
    const bare = measured(side(0.5, 1.5, 1.0, 24), side(0.25, 1.5, 1.0, 25), { p50: 0.1, p99: 0.2, max: 0.3 });
    const rows = judge.live(figures(measured(side(0.6, 1.1, 1.0, 30), side(0.3, 1.11, 1.0, 30), { p50: 0.1, p99: 0.2, max: 0.3 }), bare, 30), GOALS);
    expect(find(rows, "sender wake-ups per frame")).toMatchObject({ agent: 1.1, floor: 1.5, status: "PASS" });
    expect(find(rows, "receiver wake-ups per frame")).toMatchObject({ agent: 1.11, floor: 1.5, status: "MISS" });
    expect(find(rows, "receiver wake-ups per frame, main thread")).toMatchObject({ agent: 1.0, floor: 1.0, status: "" });
  });

  test("without the bare pair the ratios have no goal to judge; without the agent, no row is judged", () => {
    const agent = measured(side(0.6, 1.0, 1.0, 30), side(0.3, 1.0, 1.0, 30), { p50: 0.1, p99: 0.2, max: 6 });
    const rows = judge.live({ ...live(), agent, bare: undefined }, GOALS);
    expect([find(rows, "sender CPU")?.status, find(rows, "one-way latency p99")?.status, find(rows, "sender RSS (max)")?.status]).toEqual(["", "", ""]);
    // The max has a goal of its own.
    expect(find(rows, "one-way latency max")?.status).toBe("MISS");
    const none = judge.live({ ...live(), agent: undefined, both: undefined }, GOALS);
    expect(none.filter((r) => r.status !== "")).toEqual([]);
  });
});

describe("the table", () => {
  test("three significant figures, thousands grouped; numbers right-aligned and every line as wide as the rule", () => {
    expect([1234567.8, 613.56, 34.65, 1.494, 0.0413, 0, null, NaN].map(formatNumber)).toEqual(["1,234,568", "614", "34.6", "1.49", "0.041", "0", "-", "-"]);
    const rows = judge.startup({ medianMs: 11.8, minMs: 11, appearMedianMs: 11.7 }, { medianMs: 5.39, minMs: 5, appearMedianMs: 5.33 }, undefined, GOALS);
    const lines = formatTable(rows).split("\n");
    expect(lines[0]).toMatch(/^\| scenario +\| metric +\| unit +\| +agent \| bare Bun \| native \| +agent vs \| goal +\| +\|$/);
    expect(lines[1]).toMatch(/^\|-+\|-+\|-+\|-+:\|-+:\|-+:\|-+:\|-+\|-+\|$/);
    expect(lines[2]).toMatch(/^\| start-up +\| exec -> connectable \(median\) +\| ms +\| +11\.8 \| +5\.39 \| +- \| +\+6\.41 over bare \| <= bare \+ 10 ms +\| PASS \|$/);
    expect(new Set(lines.map((l) => l.length)).size).toBe(1);
  });
});
