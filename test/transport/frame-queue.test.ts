import { describe, expect, test } from "bun:test";
import {
  HEADER_SIZE,
  MAX_MESSAGE,
  MAX_PAYLOAD,
  MessageType,
  OUTPUT_MAGIC,
  readHeader,
} from "../../src/protocol/index.ts";
import { FrameQueue } from "../../src/transport/frame-queue.ts";
import { DropReason } from "../../src/transport/frame-stats.ts";
import { sameBytes } from "../support/bytes.ts";
import { payloadIndex, payloadOfSize } from "../support/payloads.ts";
import { parseWire } from "../support/wire.ts";

/** The bytes of the current contiguous run, parsed: must be exactly `n` whole messages. */
function readRun(queue: FrameQueue, maxBytes = Infinity) {
  const n = queue.contiguousRun(maxBytes);
  const start = queue.runStart;
  const bytes = queue.buffer.subarray(start, start + queue.runBytes);
  const parsed = parseWire(bytes);
  expect(parsed.error).toBeUndefined();
  expect(parsed.trailing).toBe(0);
  expect(parsed.messages.length).toBe(n);
  // The run lies inside the ring: it never wraps past the end.
  expect(start + queue.runBytes).toBeLessThanOrEqual(queue.buffer.length);
  let sizes = 0;
  for (let i = 0; i < n; i++) sizes += queue.sizeAt(i);
  expect(queue.runBytes).toBe(sizes);
  return { n, start, messages: parsed.messages };
}

/** Empties the queue run by run; returns the payloads (copies) in order. */
function drainAll(queue: FrameQueue): Uint8Array[] {
  const out: Uint8Array[] = [];
  while (queue.length > 0) {
    const run = readRun(queue);
    for (const m of run.messages) out.push(m.payload.slice());
    queue.shift(run.n);
  }
  expect(queue.byteLength).toBe(0);
  return out;
}

function indices(payloads: Uint8Array[]): number[] {
  return payloads.map(payloadIndex);
}

describe("FrameQueue push / shift / contiguousRun", () => {
  test("messages are encoded whole, header and payload, and come out in order", () => {
    const q = new FrameQueue(8, OUTPUT_MAGIC);
    const payloads = [payloadOfSize(0, 4), payloadOfSize(1, 100), new Uint8Array(0), payloadOfSize(3, MAX_PAYLOAD)];
    const tsMs = 1_700_000_000_123;
    payloads.forEach((p, i) => expect(q.push(MessageType.OpusFrame, p, tsMs + i, i)).toBe(true));
    q.push(MessageType.Heartbeat, new Uint8Array(0), tsMs + 9, 9);
    expect(q.length).toBe(5);
    expect(q.byteLength).toBe(5 * HEADER_SIZE + 4 + 100 + 0 + MAX_PAYLOAD);
    expect(q.typeAt(4)).toBe(MessageType.Heartbeat);
    expect(q.sizeAt(3)).toBe(MAX_MESSAGE);
    expect(q.enqueuedAtOf(2)).toBe(2);

    const run = readRun(q);
    expect(run.n).toBe(5);
    expect(run.start).toBe(0);
    const view = new DataView(q.buffer.buffer, q.buffer.byteOffset);
    const first = readHeader(view, 0);
    expect({ ...first, timestampNs: 0n }).toEqual({ magic: OUTPUT_MAGIC, type: MessageType.OpusFrame, length: 4, timestampNs: 0n });
    expect(run.messages.map((m) => m.type)).toEqual([0, 0, 0, 0, 3]);
    // Stamped from float ms: exact to well under a microsecond (the documented resolution).
    const stamps = run.messages.map((m) => m.timestampNs);
    [0, 1, 2, 3, 9].forEach((d, i) => {
      const error = stamps[i] - BigInt(tsMs + d) * 1_000_000n;
      expect(error < 1000n && error > -1000n).toBe(true);
    });
    payloads.forEach((p, i) => expect(sameBytes(run.messages[i].payload, p)).toBe(true));

    q.shift(2);
    expect(q.length).toBe(3);
    expect(q.byteLength).toBe(3 * HEADER_SIZE + 0 + MAX_PAYLOAD);
    expect(q.oldestEnqueuedAt()).toBe(2);
    expect(indices(drainAll(q).slice(1, 2))).toEqual([3]);
    expect(q.oldestEnqueuedAt()).toBeNaN();
    expect(q.stats.submitted).toBe(5);
    expect(q.stats.droppedTotal).toBe(0);
  });

  test("contiguousRun stops at maxBytes but always returns at least one message", () => {
    const q = new FrameQueue(8, OUTPUT_MAGIC);
    for (let i = 0; i < 4; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 100), 0, 0);
    expect(q.contiguousRun(2 * (HEADER_SIZE + 100))).toBe(2);
    expect(q.runBytes).toBe(2 * (HEADER_SIZE + 100));
    expect(q.contiguousRun(2 * (HEADER_SIZE + 100) - 1)).toBe(1);
    expect(q.contiguousRun(1)).toBe(1);
    expect(q.runBytes).toBe(HEADER_SIZE + 100);
    q.shift(4);
    expect(q.contiguousRun(1 << 20)).toBe(0);
    expect(q.runBytes).toBe(0);
  });

  test("a message never wraps: it goes to the ring start, and a run stops at the wrap", () => {
    // Capacity 3: the ring holds 4 largest messages.
    const q = new FrameQueue(3, OUTPUT_MAGIC);
    expect(q.buffer.length).toBe(4 * MAX_MESSAGE);
    for (let i = 0; i < 3; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, MAX_PAYLOAD), 0, 0);
    q.shift(2); // frame 2 at 2*MAX_MESSAGE, next write at 3*MAX_MESSAGE
    q.push(MessageType.OpusFrame, payloadOfSize(3, MAX_PAYLOAD), 0, 0); // fills the ring to its very end
    q.push(MessageType.OpusFrame, payloadOfSize(4, 100), 0, 0); // does not fit at the end: starts at 0
    expect(q.length).toBe(3);

    const before = readRun(q);
    expect(before.n).toBe(2); // frames 2 and 3, not 4: the run stops at the wrap
    expect(before.start).toBe(2 * MAX_MESSAGE);
    expect(indices(before.messages.map((m) => m.payload))).toEqual([2, 3]);
    q.shift(2);
    const after = readRun(q);
    expect(after.n).toBe(1);
    expect(after.start).toBe(0);
    expect(indices(after.messages.map((m) => m.payload))).toEqual([4]);
  });

  test("random pushes and partial consumption keep every message whole and in order (model check)", () => {
    let seed = 12345;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    for (const policy of ["oldest", "newest"] as const) {
      const q = new FrameQueue(7, OUTPUT_MAGIC, policy);
      const model: number[] = [];
      let next = 0;
      let wrapsSeen = 0;
      let dropped = 0;
      for (let step = 0; step < 20000; step++) {
        if (rand(3) !== 0) {
          const size = rand(2) === 0 ? MAX_PAYLOAD - rand(64) : 4 + rand(900);
          const i = next++;
          const accepted = q.push(MessageType.OpusFrame, payloadOfSize(i, size), 0, step);
          if (model.length === 7) {
            dropped++;
            if (policy === "oldest") model.shift();
          }
          if (accepted) model.push(i);
          else expect(policy).toBe("newest");
        } else if (q.length > 0) {
          const maxBytes = rand(2) === 0 ? Infinity : HEADER_SIZE + rand(3 * MAX_MESSAGE);
          const run = readRun(q, maxBytes);
          expect(indices(run.messages.map((m) => m.payload))).toEqual(model.slice(0, run.n));
          // A run that stopped although the next message would have fitted stopped at the wrap.
          const stoppedAtWrap = run.n < q.length && q.runBytes + q.sizeAt(run.n) <= maxBytes;
          q.shift(run.n);
          model.splice(0, run.n);
          if (stoppedAtWrap) {
            wrapsSeen++;
            expect(readRun(q).start).toBe(0);
          }
        }
        expect(q.length).toBe(model.length);
      }
      expect(wrapsSeen).toBeGreaterThan(10);
      expect(q.stats.dropped.queue_full).toBe(dropped);
      expect(q.stats.submitted).toBe(next);
      expect(indices(drainAll(q))).toEqual(model);
    }
  });
});

describe("FrameQueue drop policies", () => {
  test("drop-oldest keeps the newest and counts each drop as queue_full", () => {
    const q = new FrameQueue(3, OUTPUT_MAGIC, "oldest");
    const accepted = [0, 1, 2, 3, 4].map((i) => q.push(MessageType.OpusFrame, payloadOfSize(i, 10 + i), 0, i));
    expect(accepted).toEqual([true, true, true, true, true]);
    expect(q.length).toBe(3);
    expect(q.isFull).toBe(true);
    expect(q.stats.submitted).toBe(5);
    expect(q.stats.dropped.queue_full).toBe(2);
    expect(q.stats.droppedTotal).toBe(2);
    expect(q.byteLength).toBe(3 * HEADER_SIZE + 12 + 13 + 14);
    expect(indices(drainAll(q))).toEqual([2, 3, 4]);
  });

  test("drop-newest refuses the new frame and counts it as queue_full", () => {
    const q = new FrameQueue(3, OUTPUT_MAGIC, "newest");
    const accepted = [0, 1, 2, 3, 4].map((i) => q.push(MessageType.OpusFrame, payloadOfSize(i, 10 + i), 0, i));
    expect(accepted).toEqual([true, true, true, false, false]);
    expect(q.stats.dropped.queue_full).toBe(2);
    expect(q.stats.submitted).toBe(5);
    expect(indices(drainAll(q))).toEqual([0, 1, 2]);
  });

  test("the policy can be switched at run time", () => {
    const q = new FrameQueue(2, OUTPUT_MAGIC, "newest");
    for (let i = 0; i < 3; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 8), 0, i);
    q.policy = "oldest";
    q.push(MessageType.OpusFrame, payloadOfSize(3, 8), 0, 3);
    expect(q.stats.dropped.queue_full).toBe(2);
    expect(indices(drainAll(q))).toEqual([1, 3]);
  });

  test("an oversized payload is refused before anything is counted", () => {
    const q = new FrameQueue(2, OUTPUT_MAGIC);
    expect(() => q.push(MessageType.OpusFrame, new Uint8Array(MAX_PAYLOAD + 1), 0, 0)).toThrow("FrameTooLarge: 4097 > 4096");
    expect(q.stats.submitted).toBe(0);
    expect(q.length).toBe(0);
  });
});

describe("FrameQueue dropOlderThan / dropAll / resize", () => {
  test("dropOlderThan drops exactly the frames enqueued before the cutoff, oldest first", () => {
    const q = new FrameQueue(8, OUTPUT_MAGIC);
    [10, 20, 30, 40].forEach((t, i) => q.push(MessageType.OpusFrame, payloadOfSize(i, 50), 0, t));
    expect(q.dropOlderThan(10, DropReason.WriteDeadline)).toBe(0); // strictly older only
    expect(q.dropOlderThan(30, DropReason.WriteDeadline)).toBe(2);
    expect(q.stats.dropped.write_deadline).toBe(2);
    expect(q.length).toBe(2);
    expect(q.oldestEnqueuedAt()).toBe(30);
    expect(q.byteLength).toBe(2 * (HEADER_SIZE + 50));
    expect(q.dropOlderThan(1000, DropReason.ClientStuck)).toBe(2);
    expect(q.stats.dropped.client_stuck).toBe(2);
    expect(q.length).toBe(0);
    expect(q.dropOlderThan(1000, DropReason.WriteDeadline)).toBe(0);
    expect(q.stats.droppedTotal).toBe(4);
    expect(q.stats.submitted).toBe(4);
  });

  test("dropAll counts every queued frame under its reason and leaves a usable empty queue", () => {
    const q = new FrameQueue(4, OUTPUT_MAGIC);
    for (let i = 0; i < 6; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 200), 0, i); // 2 queue_full
    expect(q.dropAll(DropReason.Shutdown)).toBe(4);
    expect(q.length).toBe(0);
    expect(q.byteLength).toBe(0);
    expect(q.stats.dropped.shutdown).toBe(4);
    expect(q.stats.dropped.queue_full).toBe(2);
    expect(q.stats.submitted).toBe(q.stats.delivered + q.stats.droppedTotal);
    expect(q.dropAll(DropReason.NoClient)).toBe(0);
    expect(q.stats.dropped.no_client).toBe(0);
    q.push(MessageType.OpusFrame, payloadOfSize(9, 7), 0, 9);
    const run = readRun(q);
    expect(run.start).toBe(0);
    expect(indices(drainAll(q))).toEqual([9]);
  });

  test("resize up keeps every frame in order (also from a wrapped ring) and makes room", () => {
    const q = new FrameQueue(3, OUTPUT_MAGIC);
    for (let i = 0; i < 3; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, MAX_PAYLOAD), 0, i);
    q.shift(2);
    q.push(MessageType.OpusFrame, payloadOfSize(3, MAX_PAYLOAD), 0, 3);
    q.push(MessageType.OpusFrame, payloadOfSize(4, 100), 0, 4); // wrapped: 2, 3 at the end, 4 at the start
    expect(q.contiguousRun(Infinity)).toBe(2);
    q.resize(10);
    expect(q.capacity).toBe(10);
    expect(q.length).toBe(3);
    expect(q.byteLength).toBe(2 * MAX_MESSAGE + HEADER_SIZE + 100);
    expect(q.contiguousRun(Infinity)).toBe(3); // laid out contiguously again
    expect(q.enqueuedAtOf(0)).toBe(2);
    expect(q.enqueuedAtOf(2)).toBe(4);
    for (let i = 5; i < 12; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 300), 0, i);
    expect(q.stats.dropped.queue_full).toBe(0);
    expect(indices(drainAll(q))).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  });

  test("resize down keeps the newest in order and counts the rest as queue_full", () => {
    const q = new FrameQueue(10, OUTPUT_MAGIC);
    for (let i = 0; i < 8; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 40 + i), 0, i);
    q.shift(1);
    q.resize(3);
    expect(q.capacity).toBe(3);
    expect(q.length).toBe(3);
    expect(q.stats.dropped.queue_full).toBe(4);
    expect(q.byteLength).toBe(3 * HEADER_SIZE + 45 + 46 + 47);
    expect(q.isFull).toBe(true);
    q.push(MessageType.OpusFrame, payloadOfSize(8, 10), 0, 8); // drop-oldest at the new bound
    expect(q.stats.dropped.queue_full).toBe(5);
    expect(indices(drainAll(q))).toEqual([6, 7, 8]);
  });

  test("resize to the same capacity changes nothing", () => {
    const q = new FrameQueue(4, OUTPUT_MAGIC);
    for (let i = 0; i < 4; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 20), 0, i);
    q.resize(4);
    expect(q.stats.droppedTotal).toBe(0);
    expect(indices(drainAll(q))).toEqual([0, 1, 2, 3]);
  });

  test("an invalid capacity is refused and the queue is left as it was", () => {
    expect(() => new FrameQueue(0, OUTPUT_MAGIC)).toThrow(RangeError);
    expect(() => new FrameQueue(1.5, OUTPUT_MAGIC)).toThrow(RangeError);
    const q = new FrameQueue(4, OUTPUT_MAGIC);
    for (let i = 0; i < 3; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 20), 0, i);
    expect(() => q.resize(0)).toThrow(RangeError);
    expect(q.capacity).toBe(4);
    expect(q.stats.droppedTotal).toBe(0);
    expect(indices(drainAll(q))).toEqual([0, 1, 2]);
  });
});
