import { describe, expect, test } from "bun:test";
import { PeerStamps } from "../../src/channels/peer-stamps.ts";
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
});
