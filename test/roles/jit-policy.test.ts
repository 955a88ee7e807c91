import { expect, test } from "bun:test";
import { FLOOD_FRAMES_PER_SECOND, JitPolicy, NORMAL_JIT_POLICY } from "../../src/roles/jit-policy.ts";
import { recordingReport } from "../support/reports.ts";

test("a process streaming at live rates keeps its thresholds; the first flooding sample returns them to normal, once", () => {
  const applied: number[] = [];
  const { report, reports } = recordingReport();
  const policy = new JitPolicy(report, 0, 0, (scale) => applied.push(scale));
  // Two channels of 2.5 ms frames for a second, then exactly the bound: still live.
  policy.sample(800, 1000);
  policy.sample(800 + FLOOD_FRAMES_PER_SECOND, 2000);
  expect(applied).toEqual([]);
  expect(policy.isNormal).toBe(false);
  // Half a second at 2,400 frames a second is a flood, however few frames that is.
  policy.sample(1800 + 1200, 2500);
  expect(applied).toEqual([NORMAL_JIT_POLICY]);
  expect(policy.isNormal).toBe(true);
  expect(reports.map((e) => [e.message, e.fields?.frames_per_second])).toEqual([["jit: normal thresholds from now on", 2400]]);
  // Later samples change nothing, whatever the rate.
  policy.sample(1e9, 3000);
  expect(applied).toEqual([NORMAL_JIT_POLICY]);
  expect(reports).toHaveLength(1);
});
