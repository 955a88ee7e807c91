import { describe, expect, test } from "bun:test";
import { healthFields, summaryFields, utilizationPercent } from "../../src/observe/readings.ts";
import { idleSenderReadings } from "../support/readings.ts";

describe("summaryFields: the accounting of the stopped line", () => {
  test("a sender: submitted, delivered, dropped and each reason that dropped any, its writes, then the frames, errors, connects and its own counts", () => {
    const r = idleSenderReadings({ submitted: 10, delivered: 7, dropped: { queue_full: 3, no_client: 0 }, writeCalls: 4, shortWrites: 1, frames: 7, connects: 2, counts: { acks_sent: 5 } });
    expect(summaryFields(r)).toEqual({ submitted: 10, delivered: 7, dropped: 3, dropped_queue_full: 3, write_calls: 4, short_writes: 1, frames: 7, protocol_errors: 0, connects: 2, acks_sent: 5 });
  });

  test("a receiver: its drops only where its sink names reasons (a FIFO's), even none yet", () => {
    const plain = idleSenderReadings({ direction: "receive", frames: 3, connects: 1 });
    expect(summaryFields(plain)).toEqual({ frames: 3, protocol_errors: 0, connects: 1 });
    const fifo = idleSenderReadings({ direction: "receive", frames: 3, connects: 1, dropped: { sink_no_reader: 0 } });
    expect(summaryFields(fifo)).toEqual({ dropped: 0, frames: 3, protocol_errors: 0, connects: 1 });
    expect(healthFields(fifo)).toMatchObject({ drops: 0, dropped: { sink_no_reader: 0 } });
    expect(healthFields(plain)).not.toHaveProperty("dropped");
  });
});

describe("healthFields: what /healthz says of a channel end", () => {
  test("a recording's file where it stands, in place too (the stopped line tells it only while away); nothing for an end without one", () => {
    for (const sinkFile of ["in_place", "removed", "moved", "replaced"] as const) {
      expect(healthFields(idleSenderReadings({ direction: "receive", sinkFile }))).toMatchObject({ sink_file: sinkFile });
    }
    expect(healthFields(idleSenderReadings({ direction: "receive" }))).not.toHaveProperty("sink_file");
  });
});

describe("utilizationPercent: how full a kernel socket buffer was", () => {
  const buffers = (sendQueueBytes: number, receiveQueueBytes: number) =>
    idleSenderReadings({
      socketBuffers: { requested: { sendBytes: 0, receiveBytes: 0 }, kernel: { sendBytes: 1000, receiveBytes: 4000 }, sendQueueBytes, receiveQueueBytes, failures: {} },
    });

  test("each buffer's queued bytes against its own size", () => {
    expect(utilizationPercent(buffers(250, 1000), "send")).toBe(25);
    expect(utilizationPercent(buffers(250, 1000), "receive")).toBe(25);
    expect(utilizationPercent(buffers(500, 1000), "send")).toBe(50);
  });

  test("never past 100 (the kernel counts more than the size it reports), and 0 before the first connection (no size)", () => {
    expect(utilizationPercent(buffers(1500, 0), "send")).toBe(100);
    expect(utilizationPercent(idleSenderReadings(), "send")).toBe(0);
  });
});
