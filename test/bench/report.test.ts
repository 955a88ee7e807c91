/**
 * The live rows set the agent's RSS against the bare pair and against the
 * bare pair that also loads the runtime modules the streaming roles load;
 * the Bun floor rows show idle, waking and waking with those modules, and
 * the modules' own cost (the floor with them less the floor without):
 * checked on figures made up here, so that each is exact.
 */
import { describe, expect, test } from "bun:test";
import type { Footprint, LiveFigures, PairFigures } from "../../src/bench/live.ts";
import { judge, type FootprintGoals } from "../../src/bench/report.ts";

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
