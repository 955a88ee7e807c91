import { expect, test } from "bun:test";
import { FLOOD_FRAMES_PER_SECOND, FLOOD_JUDGED_OVER_MS, JitPolicy, NORMAL_JIT_POLICY } from "../../src/roles/jit-policy.ts";
import { recordingReport } from "../support/reports.ts";

function policy() {
  const applied: number[] = [];
  const { report, reports } = recordingReport();
  return { jit: new JitPolicy(report, 0, 0, (scale) => applied.push(scale)), applied, reports };
}

test("a process streaming at live rates keeps its thresholds; the first flooding second returns them to normal, once", () => {
  const { jit, applied, reports } = policy();
  // Two channels of 2.5 ms frames for a second, then exactly the bound: still live.
  jit.sample(() => 800, 1000);
  jit.sample(() => 800 + FLOOD_FRAMES_PER_SECOND, 2000);
  expect(applied).toEqual([]);
  expect(jit.isNormal).toBe(false);
  // A second at 2,400 frames a second is a flood.
  jit.sample(() => 1800 + 2400, 3000);
  expect(applied).toEqual([NORMAL_JIT_POLICY]);
  expect(jit.isNormal).toBe(true);
  expect(reports.map((r) => [r.message, r.fields?.frames_per_second])).toEqual([["jit: normal thresholds from now on", 2400]]);
  // Later samples change nothing, whatever the rate.
  jit.sample(() => 1e9, 4000);
  expect(applied).toEqual([NORMAL_JIT_POLICY]);
  expect(reports).toHaveLength(1);
});

test("sampled every 10 ms, a live sender's catch-up burst after a stall is no flood; a sustained flood still is", () => {
  const { jit, applied } = policy();
  let frames = 0;
  let now = 0;
  const tick = (framesPerTick: number) => {
    frames += framesPerTick;
    now += 10;
    jit.sample(() => frames, now);
  };
  // 2.5 ms frames (400 a second), a 200 ms stall each second, then the 80 frames it owed in one tick
  // (8,000 a second over that tick): for a few seconds, every 10 ms.
  for (let second = 0; second < 3; second++) {
    for (let t = 0; t < 100; t++) tick(t >= 30 && t < 50 ? 0 : t === 50 ? 84 : 4);
  }
  expect(applied).toEqual([]);
  // A flood of 5,000 a second: judged once a whole second of it has been seen.
  for (let t = 0; t < FLOOD_JUDGED_OVER_MS / 10; t++) tick(50);
  expect(applied).toEqual([NORMAL_JIT_POLICY]);
});
