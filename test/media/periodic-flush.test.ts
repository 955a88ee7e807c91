import { describe, expect, test } from "bun:test";
import type { FrameSink } from "../../src/media/frame-sink.ts";
import { flushPeriodically } from "../../src/media/periodic-flush.ts";
import { until } from "../support/wait.ts";

/** A sink counting its flushes; the `failAt`-th one throws. */
function countingSink(failAt = Infinity): FrameSink & { flushes: number } {
  return {
    name: "counting",
    flushes: 0,
    write() {},
    flush() {
      if (++this.flushes === failAt) throw new Error("cannot write to sink counting: ENOSPC");
    },
    close() {},
  };
}

describe("flushPeriodically", () => {
  test("flushes the sink again and again until stopped", async () => {
    const sink = countingSink();
    const stop = flushPeriodically(sink, 5, (e) => {
      throw e;
    });
    await until(() => sink.flushes >= 3, "three flushes", 5000);
    stop();
    const flushes = sink.flushes;
    await Bun.sleep(50);
    expect(sink.flushes).toBe(flushes);
  });

  test("a flush that fails is reported once and ends the flushing", async () => {
    const sink = countingSink(2);
    const errors: string[] = [];
    flushPeriodically(sink, 5, (e) => errors.push(e.message));
    await until(() => errors.length === 1, "the error", 5000);
    await Bun.sleep(50);
    expect(errors).toEqual(["cannot write to sink counting: ENOSPC"]);
    expect(sink.flushes).toBe(2);
  });
});
