/**
 * The live rows set the agent's RSS against bare Bun and against bare Bun
 * plus the runtime modules the streaming roles load, whose own cost is the
 * floor with them less the floor without: checked on figures made up here,
 * so that each sum is exact.
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
  return { send: footprint(send), recv: footprint(recv), windowFrames: 50, framesPerSecond: 50 };
}

const live = (modules?: number): LiveFigures => ({
  warmupSeconds: 1,
  windowSeconds: 1,
  source: "tone.opus",
  tick: footprint(22),
  ...(modules === undefined ? {} : { modules: footprint(modules) }),
  bare: pair(24, 25),
  agent: pair(35, 33),
  both: { serve: footprint(36), inputServe: footprint(34), framesPerSecond: 100 },
});

const find = (rows: ReturnType<typeof judge.live>, metric: string) => rows.find((r) => r.metric === metric);

describe("RSS against bare Bun with the streaming roles' runtime modules", () => {
  test("adds the modules' own cost (floor with them less floor without) to each bare figure", () => {
    const rows = judge.live(live(27.5), GOALS);
    expect(find(rows, "those runtime modules' own RSS (over waking 50/s)")?.floor).toBe(5.5);
    expect(find(rows, "sender RSS (max)")).toMatchObject({ agent: 35, floor: 24, status: "MISS" });
    expect(find(rows, "sender RSS (max), bare Bun + the same runtime modules")).toMatchObject({ agent: 35, floor: 29.5, versus: "+5.50 over bare", status: "" });
    expect(find(rows, "receiver RSS (max), bare Bun + the same runtime modules")).toMatchObject({ agent: 33, floor: 30.5, versus: "+2.50 over bare" });
    expect(find(rows, "serve RSS (max), bare Bun + the same runtime modules")).toMatchObject({ agent: 36, floor: 29.5, versus: "+6.50 over bare" });
  });

  test("without that floor measured, the rows have no bare figure", () => {
    const rows = judge.live(live(), GOALS);
    expect(find(rows, "those runtime modules' own RSS (over waking 50/s)")?.floor).toBeNull();
    expect(find(rows, "sender RSS (max), bare Bun + the same runtime modules")).toMatchObject({ agent: 35, floor: null, versus: "-" });
    expect(find(rows, "serve RSS (max), bare Bun + the same runtime modules")).toMatchObject({ agent: 36, floor: null });
  });
});
