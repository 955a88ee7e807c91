import { describe, expect, test } from "bun:test";
import { HEADER_SIZE, MAX_MESSAGE, MAX_PAYLOAD, MessageType, OUTPUT_MAGIC, readHeader } from "../../src/protocol/index.ts";
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
    const first = readHeader(q.buffer, 0);
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
    // A ring of 4 largest messages.
    const q = new FrameQueue(3, OUTPUT_MAGIC, "oldest", undefined, 4 * MAX_MESSAGE);
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
      // A ring of 9 largest messages: the frame bound (7) is reached before the byte bound.
      const q = new FrameQueue(7, OUTPUT_MAGIC, policy, undefined, 9 * MAX_MESSAGE);
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

  test("resize up makes room for more frames, keeping every frame in order", () => {
    const q = new FrameQueue(3, OUTPUT_MAGIC);
    for (let i = 0; i < 3; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 300), 0, i);
    expect(q.isFull).toBe(true);
    q.resize(10);
    expect(q.capacity).toBe(10);
    expect(q.isFull).toBe(false);
    for (let i = 3; i < 10; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 300), 0, i);
    expect(q.stats.dropped.queue_full).toBe(0);
    expect(q.isFull).toBe(true);
    expect(indices(drainAll(q))).toEqual([...Array(10).keys()]);
  });

  test("resize down drops nothing: the queue is full until it has drained below the new bound", () => {
    const q = new FrameQueue(10, OUTPUT_MAGIC);
    for (let i = 0; i < 8; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 40 + i), 0, i);
    q.shift(1);
    q.resize(3);
    expect(q.capacity).toBe(3);
    expect(q.length).toBe(7);
    expect(q.stats.droppedTotal).toBe(0);
    // Drained one by one (as a writer does), it stays full until fewer than 3 are left.
    const full: boolean[] = [];
    for (let i = 0; i < 5; i++) {
      full.push(q.isFull);
      q.shift(1);
    }
    expect(full).toEqual([true, true, true, true, true]);
    expect(q.length).toBe(2);
    expect(q.isFull).toBe(false);
    q.push(MessageType.OpusFrame, payloadOfSize(8, 10), 0, 8);
    expect(q.isFull).toBe(true);
    expect(q.stats.droppedTotal).toBe(0);
    expect(indices(drainAll(q))).toEqual([6, 7, 8]);
  });

  test("after a shrink, a drop-oldest push drops the excess oldest at once (queue_full); drop-newest refuses until drained", () => {
    const oldest = new FrameQueue(10, OUTPUT_MAGIC, "oldest");
    for (let i = 0; i < 8; i++) oldest.push(MessageType.OpusFrame, payloadOfSize(i, 20), 0, i);
    oldest.resize(3);
    expect(oldest.push(MessageType.OpusFrame, payloadOfSize(8, 20), 0, 8)).toBe(true);
    expect(oldest.stats.dropped.queue_full).toBe(6);
    expect(oldest.length).toBe(3);
    expect(oldest.stats.submitted).toBe(9);
    expect(indices(drainAll(oldest))).toEqual([6, 7, 8]);

    const newest = new FrameQueue(10, OUTPUT_MAGIC, "newest");
    for (let i = 0; i < 8; i++) newest.push(MessageType.OpusFrame, payloadOfSize(i, 20), 0, i);
    newest.resize(3);
    expect(newest.push(MessageType.OpusFrame, payloadOfSize(8, 20), 0, 8)).toBe(false);
    expect(newest.stats.dropped.queue_full).toBe(1);
    expect(indices(drainAll(newest))).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  test("resize to the same capacity changes nothing", () => {
    const q = new FrameQueue(4, OUTPUT_MAGIC);
    for (let i = 0; i < 4; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 20), 0, i);
    q.resize(4);
    expect(q.stats.droppedTotal).toBe(0);
    expect(indices(drainAll(q))).toEqual([0, 1, 2, 3]);
  });

  test("an invalid capacity is refused and the queue is left as it was", () => {
    expect(() => new FrameQueue(4, OUTPUT_MAGIC, "oldest", undefined, 4 * MAX_MESSAGE - 1)).toThrow(RangeError);
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

describe("FrameQueue: a Config is never dropped with stale audio", () => {
  // The frames after a Config are audio of it: dropping it with older frames would have them played as the one before.
  const config = (tag: number) => new Uint8Array([tag, 0, 0, 0, 2, 0, 0, 0, 0xc0, 3, 0, 0]);
  const kinds = (q: FrameQueue) => drainAll2(q).map((m) => (m.type === MessageType.Config ? `C${m.payload[0]}` : `F${payloadIndex(m.payload)}`));
  /** Empties the queue run by run: the messages (type, payload copy) in order. */
  function drainAll2(q: FrameQueue) {
    const out: { type: number; payload: Uint8Array }[] = [];
    while (q.length > 0) {
      const run = readRun(q);
      for (const m of run.messages) out.push({ type: m.type, payload: m.payload.slice() });
      q.shift(run.n);
    }
    expect(q.byteLength).toBe(0);
    return out;
  }

  test("dropOlderThan keeps the newest Config among what it drops, at the head, with the frames after it", () => {
    const q = new FrameQueue(16, OUTPUT_MAGIC);
    q.push(MessageType.OpusFrame, payloadOfSize(0, 100), 0, 10);
    q.push(MessageType.Config, config(1), 0, 20);
    q.push(MessageType.OpusFrame, payloadOfSize(1, 100), 0, 30);
    q.push(MessageType.Config, config(2), 0, 40);
    q.push(MessageType.OpusFrame, payloadOfSize(2, 100), 0, 50);
    q.push(MessageType.OpusFrame, payloadOfSize(3, 100), 0, 60);
    expect(q.dropOlderThan(55, DropReason.LatencyBudget)).toBe(4);
    expect(q.stats.dropped.latency_budget).toBe(4);
    expect(q.length).toBe(2);
    // Timed as the frame it goes ahead of: not stale again itself.
    expect(q.oldestEnqueuedAt()).toBe(60);
    expect(q.dropOlderThan(55, DropReason.LatencyBudget)).toBe(0);
    // Room after it is used as before; every message is whole and in order.
    q.push(MessageType.OpusFrame, payloadOfSize(4, 100), 0, 70);
    expect(kinds(q)).toEqual(["C2", "F3", "F4"]);
    expect(q.stats.submitted).toBe(q.stats.droppedTotal + 3);
  });

  test("dropOlderThan never drops the Stop: the session's end has no age, and the frames after it wait", () => {
    const q = new FrameQueue(16, OUTPUT_MAGIC);
    q.push(MessageType.OpusFrame, payloadOfSize(0, 100), 0, 10);
    q.push(MessageType.OpusFrame, payloadOfSize(1, 100), 0, 20);
    q.push(MessageType.Stop, new Uint8Array(0), 0, 30);
    q.push(MessageType.OpusFrame, payloadOfSize(2, 100), 0, 40);
    expect(q.dropOlderThan(1000, DropReason.LatencyBudget)).toBe(2);
    expect(q.stats.dropped.latency_budget).toBe(2);
    expect(q.length).toBe(2);
    expect(q.typeAt(0)).toBe(MessageType.Stop);
    expect(q.dropOlderThan(1000, DropReason.WriteDeadline)).toBe(0);
    expect(q.length).toBe(2);
  });

  test("everything stale: the Config alone is left, and the queue goes on from it", () => {
    const q = new FrameQueue(16, OUTPUT_MAGIC);
    q.push(MessageType.OpusFrame, payloadOfSize(0, 100), 0, 10);
    q.push(MessageType.Config, config(7), 0, 20);
    q.push(MessageType.OpusFrame, payloadOfSize(1, 100), 0, 30);
    expect(q.dropOlderThan(1000, DropReason.WriteDeadline)).toBe(2);
    expect(q.length).toBe(1);
    for (let i = 2; i < 6; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 100), 0, 1000 + i);
    expect(kinds(q)).toEqual(["C7", "F2", "F3", "F4", "F5"]);
  });

  test("drop-newest, full: a Config is never refused; it takes the place of the newest queued frame, and frames after it are refused as before", () => {
    const q = new FrameQueue(3, OUTPUT_MAGIC, "newest");
    for (let i = 0; i < 3; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 100), 0, i);
    expect(q.push(MessageType.Config, config(5), 0, 3)).toBe(true);
    expect(q.push(MessageType.OpusFrame, payloadOfSize(3, 100), 0, 4)).toBe(false);
    expect(q.stats.dropped.queue_full).toBe(2);
    expect(q.stats.submitted).toBe(5);
    // It goes where the dropped frame began: the three are one contiguous run, one write.
    expect(q.contiguousRun(Infinity)).toBe(3);
    expect(q.runBytes).toBe(q.byteLength);
    expect(kinds(q)).toEqual(["F0", "F1", "C5"]);
    // Once drained, the frames after it are its audio; the ring's room is used as before.
    for (let i = 4; i < 7; i++) expect(q.push(MessageType.OpusFrame, payloadOfSize(i, 100), 0, i)).toBe(true);
    expect(kinds(q)).toEqual(["F4", "F5", "F6"]);
  });

  test("drop-oldest, full, with a Config at the head: the frame after it goes, the Config stays", () => {
    const q = new FrameQueue(3, OUTPUT_MAGIC);
    q.push(MessageType.Config, config(3), 0, 1);
    q.push(MessageType.OpusFrame, payloadOfSize(1, 100), 0, 2);
    q.push(MessageType.OpusFrame, payloadOfSize(2, 100), 0, 3);
    expect(q.push(MessageType.OpusFrame, payloadOfSize(3, 100), 0, 4)).toBe(true);
    expect(q.stats.dropped.queue_full).toBe(1);
    expect(kinds(q)).toEqual(["C3", "F2", "F3"]);
    // A queue of one cannot hold a Config beside a frame: the Config goes.
    const one = new FrameQueue(1, OUTPUT_MAGIC);
    one.push(MessageType.Config, config(4), 0, 1);
    expect(one.push(MessageType.OpusFrame, payloadOfSize(1, 100), 0, 2)).toBe(true);
    expect(kinds(one)).toEqual(["F1"]);
  });
});

describe("FrameQueue: Configs kept through drops, against a model", () => {
  test("pushes of every size, writes and stale drops in any order, the ring wrapping and growing: whole messages, in order, the model's", () => {
    let seed = 42;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    const q = new FrameQueue(64, OUTPUT_MAGIC);
    // The model: what the queue holds, oldest first, with each one's enqueue time.
    let model: { kind: string; at: number }[] = [];
    let now = 0;
    for (let step = 0; step < 5000; step++) {
      now += 1;
      const op = random(10);
      if (op < 6 && !q.isFull) {
        const config = random(8) === 0;
        const id = step;
        q.push(config ? MessageType.Config : MessageType.OpusFrame, config ? new Uint8Array(12).fill(id & 0xff) : payloadOfSize(id, 4 + random(4000)), 0, now);
        model.push({ kind: `${config ? "C" : "F"}${id & 0xff}`, at: now });
      } else if (op < 8 && q.length > 0) {
        const run = readRun(q);
        const got = run.messages.map((m) => `${m.type === MessageType.Config ? "C" : "F"}${m.type === MessageType.Config ? m.payload[0] : payloadIndex(m.payload) & 0xff}`);
        expect(got).toEqual(model.slice(0, run.n).map((m) => m.kind));
        q.shift(run.n);
        model = model.slice(run.n);
      } else {
        const cutoff = now - random(40);
        let n = 0;
        while (n < model.length && model[n]!.at < cutoff) n++;
        const configs = model.slice(0, n).filter((m) => m.kind.startsWith("C"));
        const kept = configs.at(-1);
        q.dropOlderThan(cutoff, DropReason.LatencyBudget);
        model = model.slice(n);
        if (kept) model.unshift({ kind: kept.kind, at: model[0]?.at ?? kept.at });
      }
      expect(q.length).toBe(model.length);
    }
  });
});

describe("FrameQueue: drop-newest keeps every Config, against a model", () => {
  test("pushes into a full queue, writes of any run, the ring wrapping: frames refused, Configs in place of the newest, whole messages in order", () => {
    let seed = 7;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    const q = new FrameQueue(16, OUTPUT_MAGIC, "newest");
    let model: string[] = [];
    let dropped = 0;
    for (let step = 0; step < 5000; step++) {
      if (random(10) < 7) {
        const config = random(6) === 0;
        const kind = `${config ? "C" : "F"}${step & 0xff}`;
        const full = q.isFull;
        const accepted = q.push(config ? MessageType.Config : MessageType.OpusFrame, config ? new Uint8Array(12).fill(step & 0xff) : payloadOfSize(step, 300), 0, step);
        expect(accepted).toBe(!full || config);
        if (full) dropped++;
        if (full && config) model.pop();
        if (!full || config) model.push(kind);
      } else if (q.length > 0) {
        const run = readRun(q, 300 * (1 + random(8)));
        const got = run.messages.map((m) => `${m.type === MessageType.Config ? "C" : "F"}${m.type === MessageType.Config ? m.payload[0] : payloadIndex(m.payload) & 0xff}`);
        expect(got).toEqual(model.slice(0, run.n));
        q.shift(run.n);
        model = model.slice(run.n);
      }
      expect(q.length).toBe(model.length);
      expect(q.stats.dropped.queue_full).toBe(dropped);
    }
  });
});

describe("FrameQueue memory: sized by the bytes it holds", () => {
  test("the ring starts small and grows with the bytes queued, never reserving room for largest messages", () => {
    const q = new FrameQueue(100_000, OUTPUT_MAGIC);
    expect(q.buffer.length).toBe(64 * 1024);
    // 500 frames of 160 bytes (the default queue, typical Opus frames): 88,500 bytes, a 128 KiB ring.
    for (let i = 0; i < 500; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 160), 0, i);
    expect(q.byteLength).toBe(500 * (HEADER_SIZE + 160));
    expect(q.buffer.length).toBe(128 * 1024);
    expect(indices(drainAll(q))).toEqual([...Array(500).keys()]);
  });

  test("the byte bound holds whatever the frame bound: full below it, never larger", () => {
    const maxBytes = 64 * 1024;
    const q = new FrameQueue(100_000, OUTPUT_MAGIC, "oldest", undefined, maxBytes);
    let pushed = 0;
    while (!q.isFull) q.push(MessageType.OpusFrame, payloadOfSize(pushed++, MAX_PAYLOAD), 0, 0);
    // Full once fewer than two largest messages' worth of ring is left.
    expect(pushed).toBe(Math.floor((maxBytes - 2 * MAX_MESSAGE) / MAX_MESSAGE) + 1);
    expect(q.byteLength).toBeLessThanOrEqual(maxBytes);
    // Live pushes beyond it drop the oldest; the ring stays within the bound.
    for (let i = 0; i < 100; i++) q.push(MessageType.OpusFrame, payloadOfSize(pushed++, 4 + ((i * 997) % (MAX_PAYLOAD - 4))), 0, 0);
    expect(q.buffer.length).toBeLessThanOrEqual(maxBytes);
    expect(q.byteLength).toBeLessThanOrEqual(maxBytes);
    expect(q.stats.submitted).toBe(pushed);
    expect(q.stats.submitted).toBe(q.length + q.stats.dropped.queue_full);
    const out = indices(drainAll(q));
    expect(out.at(-1)).toBe(pushed - 1);
    expect(out.every((v, k) => k === 0 || v === out[k - 1] + 1)).toBe(true);
  });

  test("growing a wrapped ring lays its messages out in order from the start", () => {
    const q = new FrameQueue(1000, OUTPUT_MAGIC, "oldest", undefined, 256 * 1024);
    expect(q.buffer.length).toBe(64 * 1024);
    for (let i = 0; i < 15; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, MAX_PAYLOAD), 0, i);
    q.shift(10);
    // No room at the end: frames 15..24 go to the start of the ring, before the oldest.
    for (let i = 15; i < 25; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, MAX_PAYLOAD), 0, i);
    expect(q.buffer.length).toBe(64 * 1024);
    expect(q.contiguousRun(Infinity)).toBe(5);
    // One more does not fit anywhere: the ring doubles and the queue is contiguous again.
    q.push(MessageType.OpusFrame, payloadOfSize(25, 100), 0, 25);
    expect(q.buffer.length).toBe(128 * 1024);
    expect(q.contiguousRun(Infinity)).toBe(16);
    expect(q.runStart).toBe(0);
    expect(q.enqueuedAtOf(0)).toBe(10);
    expect(q.enqueuedAtOf(15)).toBe(25);
    expect(q.stats.droppedTotal).toBe(0);
    expect(indices(drainAll(q))).toEqual([...Array(16).keys()].map((k) => 10 + k));
  });

  test("random pushes, growth and partial consumption keep every message whole and in order (model check)", () => {
    let seed = 777;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const q = new FrameQueue(400, OUTPUT_MAGIC, "oldest", undefined, 256 * 1024);
    const model: number[] = [];
    const delivered: number[] = [];
    let next = 0;
    let largest = 0;
    for (let step = 0; step < 20000; step++) {
      if (rand(10) !== 0) {
        // Mostly small frames with bursts of large ones; now and then a resize.
        const size = rand(8) === 0 ? MAX_PAYLOAD - rand(64) : 4 + rand(300);
        if (rand(200) === 0) q.resize(1 + rand(500));
        const i = next++;
        q.push(MessageType.OpusFrame, payloadOfSize(i, size), 0, step);
        model.push(i);
      } else if (q.length > 0) {
        const run = readRun(q, HEADER_SIZE + rand(3 * MAX_MESSAGE));
        delivered.push(...indices(run.messages.map((m) => m.payload)));
        q.shift(run.n);
      }
      largest = Math.max(largest, q.buffer.length);
      expect(q.byteLength).toBeLessThanOrEqual(256 * 1024);
    }
    expect(largest).toBeLessThanOrEqual(256 * 1024);
    expect(largest).toBeGreaterThan(64 * 1024);
    const left = indices(drainAll(q));
    // What is left is the newest, in order; everything else was delivered, in order, or counted as queue_full.
    expect(left).toEqual(model.slice(model.length - left.length));
    const out = [...delivered, ...left];
    expect(out.filter((v, k) => k > 0 && v <= out[k - 1]).length).toBe(0);
    expect(q.stats.submitted).toBe(out.length + q.stats.dropped.queue_full);
    expect(q.stats.submitted).toBe(next);
  });
});

describe("FrameQueue memory: a lowered bound gives back what a higher one grew", () => {
  /** An escalated queue: bound 100, raised to 400 and filled with 400 frames of 2 KB (a 1 MiB ring). */
  function escalated() {
    const q = new FrameQueue(100, OUTPUT_MAGIC);
    const first = q.allocatedBytes;
    q.resize(400);
    for (let i = 0; i < 400; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 2048), 0, i);
    expect(q.buffer.length).toBe(1024 * 1024);
    return { q, first };
  }

  test("lowered while full: nothing is given back while it holds more than half a smaller ring; as it drains, the ring halves with every frame still whole and in order; empty, it is at its first size", () => {
    const { q, first } = escalated();
    q.resize(100);
    // 400 queued frames (over 800 KB) need the ring they are in.
    expect(q.buffer.length).toBe(1024 * 1024);
    expect(q.length).toBe(400);
    const out: number[] = [];
    const lengths = new Set<number>();
    while (q.length > 0) {
      const run = readRun(q, 16 * 1024);
      out.push(...indices(run.messages.map((m) => m.payload)));
      q.shift(run.n);
      lengths.add(q.buffer.length);
      // What it holds fills at most half of a ring smaller than the one it has.
      expect(q.byteLength * 4 > q.buffer.length || q.buffer.length === 64 * 1024).toBe(true);
    }
    expect(out).toEqual([...Array(400).keys()]);
    expect([...lengths]).toEqual([1024 * 1024, 512 * 1024, 256 * 1024, 128 * 1024, 64 * 1024]);
    expect(q.allocatedBytes).toBe(first);
    expect(q.stats.droppedTotal).toBe(0);
  });

  test("lowered while empty, or dropped empty: at once back to its first size, and it grows again from there as it fills", () => {
    const { q, first } = escalated();
    expect(q.dropAll(DropReason.ClientGone)).toBe(400);
    q.resize(100);
    expect(q.allocatedBytes).toBe(first);
    for (let i = 0; i < 100; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 2048), 0, i);
    expect(q.buffer.length).toBe(256 * 1024);
    expect(indices(drainAll(q))).toEqual([...Array(100).keys()]);

    const again = escalated();
    again.q.resize(100);
    expect(again.q.dropAll(DropReason.ClientGone)).toBe(400);
    expect(again.q.allocatedBytes).toBe(again.first);
  });

  test("lowered with a wrapped ring: what it holds is laid out in order in the smaller one", () => {
    const { q } = escalated();
    // Drain most, refill past the ring's end (the newest go to its start, before the oldest), drain again.
    const out = indices(drainFirst(q, 380));
    for (let i = 400; i < 520; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 2048), 0, i);
    out.push(...indices(drainFirst(q, 100)));
    expect(q.buffer.length).toBe(1024 * 1024);
    expect(q.length).toBe(40);
    expect(q.contiguousRun(Infinity)).toBeLessThan(40);
    q.resize(100);
    // 40 frames (about 80 KB): a 256 KiB ring, contiguous from its start.
    expect(q.buffer.length).toBe(256 * 1024);
    expect(q.contiguousRun(Infinity)).toBe(40);
    expect(q.runStart).toBe(0);
    out.push(...indices(drainAll(q)));
    expect(out).toEqual([...Array(520).keys()]);
  });

  test("frames flowing steadily at the lowered bound: given back once, then no allocation, the ring is the same one", () => {
    const { q } = escalated();
    drainFirst(q, 350);
    q.resize(100);
    // 50 frames held: a 256 KiB ring. Now 10,000 frames in and out, about 50 held.
    const ring = q.buffer;
    expect(ring.length).toBe(256 * 1024);
    for (let i = 400; i < 10_400; i++) {
      q.push(MessageType.OpusFrame, payloadOfSize(i, 2048), 0, i);
      q.shift(1);
      expect(q.buffer).toBe(ring);
    }
    expect(indices(drainAll(q))).toEqual([...Array(50).keys()].map((k) => 10_350 + k));
  });

  test("a bound that grew its ring keeps it while it stays (the room is needed again); raised again, nothing is given back", () => {
    const q = new FrameQueue(400, OUTPUT_MAGIC);
    for (let i = 0; i < 400; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 2048), 0, i);
    drainAll(q);
    expect(q.buffer.length).toBe(1024 * 1024);
    q.resize(800);
    expect(q.buffer.length).toBe(1024 * 1024);
    // Lowered and grown again under the lower bound: the ring is needed, and kept once drained.
    q.resize(200);
    expect(q.buffer.length).toBe(64 * 1024);
    for (let i = 0; i < 200; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 2048), 0, i);
    const grown = q.buffer.length;
    expect(grown).toBe(512 * 1024);
    drainAll(q);
    expect(q.buffer.length).toBe(grown);
  });

  test("frames gone stale after the bound was lowered are dropped with their room: at once at its first size, the Config and the Stop kept whole, each message's type and enqueue time kept through every new layout", () => {
    const config = new Uint8Array([9, 0, 0, 0, 2, 0, 0, 0, 0xc0, 3, 0, 0]);
    const q = new FrameQueue(100, OUTPUT_MAGIC);
    const first = q.allocatedBytes;
    q.resize(400);
    // Frames, a Config at 300 (its audio after it), and the Stop last; each enqueued at its index.
    for (let i = 0; i < 400; i++) {
      const type = i === 300 ? MessageType.Config : i === 399 ? MessageType.Stop : MessageType.OpusFrame;
      q.push(type, type === MessageType.Config ? config : type === MessageType.Stop ? new Uint8Array(0) : payloadOfSize(i, 2048), 0, i);
    }
    q.resize(100);
    // 120 left: the ring and the per-message arrays are laid out anew, smaller.
    q.shift(280);
    expect(q.buffer.length).toBe(512 * 1024);
    expect(q.allocatedBytes).toBeLessThan(1024 * 1024);
    const kinds = Array.from({ length: q.length }, (_, k) => [q.typeAt(k), q.enqueuedAtOf(k)]);
    expect(kinds).toEqual(Array.from({ length: 120 }, (_, k) => [k === 20 ? MessageType.Config : k === 119 ? MessageType.Stop : MessageType.OpusFrame, 280 + k]));

    // All stale but the Stop: the Config goes ahead of it, and nothing else is left to need the room.
    expect(q.dropOlderThan(1000, DropReason.LatencyBudget)).toBe(118);
    expect(q.length).toBe(2);
    expect(q.allocatedBytes).toBe(first);
    expect([q.typeAt(0), q.typeAt(1)]).toEqual([MessageType.Config, MessageType.Stop]);
    const run = readRun(q);
    expect(run.messages.map((m) => m.type)).toEqual([MessageType.Config, MessageType.Stop]);
    expect(sameBytes(run.messages[0]!.payload, config)).toBe(true);
    expect(q.stats.submitted).toBe(400);
    expect(q.stats.dropped.latency_budget).toBe(118);
  });

  test("lowered, a backlog drained one by one while a lossless source adds a frame for every two out, once there is room: given back all the way, to its first size, every frame in order", () => {
    const { q, first } = escalated();
    q.resize(100);
    const out: number[] = [];
    let next = 400;
    for (let step = 0; q.length > 0; step++) {
      out.push(...indices(drainFirst(q, 1)));
      if (step % 2 === 0 && next < 1000 && !q.isFull) q.push(MessageType.OpusFrame, payloadOfSize(next, 2048), 0, next++);
    }
    expect(out).toEqual([...Array(next).keys()]);
    expect(q.allocatedBytes).toBe(first);
  });

  test("lowered while full, a live push that drops the excess gives its room back at once (drop-oldest, and drop-newest for a Config)", () => {
    const config = new Uint8Array([9, 0, 0, 0, 2, 0, 0, 0, 0xc0, 3, 0, 0]);
    for (const policy of ["oldest", "newest"] as const) {
      const { q } = escalated();
      q.policy = policy;
      q.resize(100);
      expect(q.buffer.length).toBe(1024 * 1024);
      // The reader takes nothing: only the push's own drops make room.
      expect(q.push(MessageType.Config, config, 0, 400)).toBe(true);
      expect(q.stats.dropped.queue_full).toBe(301);
      expect(q.length).toBe(100);
      // 99 frames of 2 KB and the Config (about 200 KB): a 512 KiB ring.
      expect(q.buffer.length).toBe(512 * 1024);
      const kept = drainAll(q);
      expect(indices(kept.slice(0, 99))).toEqual([...Array(99).keys()].map((k) => (policy === "oldest" ? 301 + k : k)));
      expect(sameBytes(kept[99]!, config)).toBe(true);
    }
  });

  test("lowered below the first per-message arrays (to 16, to 1): drained, the queue is the size of a new one at that bound", () => {
    for (const bound of [16, 1]) {
      const q = new FrameQueue(bound, OUTPUT_MAGIC);
      const first = q.allocatedBytes;
      q.resize(400);
      for (let i = 0; i < 400; i++) q.push(MessageType.OpusFrame, payloadOfSize(i, 2048), 0, i);
      q.resize(bound);
      expect(indices(drainAll(q))).toEqual([...Array(400).keys()]);
      expect(q.allocatedBytes).toBe(first);
    }
  });

  test("per-message arrays that grow again under the lowered bound are kept: a length that swings up and down allocates once, not per swing", () => {
    // Tiny frames: the ring stays at its first size; only the per-message arrays are owed back.
    const q = new FrameQueue(200, OUTPUT_MAGIC);
    q.resize(800);
    let next = 0;
    for (; next < 800; next++) q.push(MessageType.OpusFrame, payloadOfSize(next, 10), 0, next);
    q.resize(200);
    const out = indices(drainFirst(q, 760));
    expect(q.buffer.length).toBe(64 * 1024);
    const sizes = [q.allocatedBytes];
    for (let cycle = 0; cycle < 50; cycle++) {
      // 40 -> 130 (past the arrays given back) -> 40.
      for (let k = 0; k < 90; k++, next++) q.push(MessageType.OpusFrame, payloadOfSize(next, 10), 0, next);
      if (q.allocatedBytes !== sizes.at(-1)) sizes.push(q.allocatedBytes);
      out.push(...indices(drainFirst(q, 90)));
      if (q.allocatedBytes !== sizes.at(-1)) sizes.push(q.allocatedBytes);
    }
    expect(sizes.length).toBe(2);
    out.push(...indices(drainAll(q)));
    expect(out).toEqual([...Array(next).keys()]);
  });

  test("a ring that grows again under the lowered bound is kept: bytes that swing up and down allocate a few times, not per swing", () => {
    // 60 tiny frames keep per-message arrays owed back; 35 frames of 4 KB at a time grow the ring.
    const q = new FrameQueue(100, OUTPUT_MAGIC);
    q.resize(400);
    let next = 0;
    for (; next < 400; next++) q.push(MessageType.OpusFrame, payloadOfSize(next, 10), 0, next);
    q.resize(100);
    const out = indices(drainFirst(q, 340));
    expect(q.buffer.length).toBe(64 * 1024);
    let rings = 0;
    let ring = q.buffer;
    const seen = () => {
      if (q.buffer !== ring) rings++;
      ring = q.buffer;
    };
    for (let cycle = 0; cycle < 50; cycle++) {
      for (let k = 0; k < 35; k++, next++) q.push(MessageType.OpusFrame, payloadOfSize(next, MAX_PAYLOAD), 0, next);
      seen();
      out.push(...indices(drainFirst(q, 60)));
      seen();
      for (let k = 0; k < 60; k++, next++) q.push(MessageType.OpusFrame, payloadOfSize(next, 10), 0, next);
      seen();
      out.push(...indices(drainFirst(q, 35)));
      seen();
    }
    expect(rings).toBeLessThanOrEqual(3);
    out.push(...indices(drainAll(q)));
    expect(out).toEqual([...Array(next).keys()]);
    expect(q.stats.droppedTotal).toBe(0);
  });
});

/** Takes the `n` oldest messages out, whatever their sizes, run by run; returns their payloads (copies) in order. */
function drainFirst(queue: FrameQueue, n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  while (out.length < n) {
    const run = readRun(queue, Infinity);
    const take = Math.min(run.n, n - out.length);
    for (const m of run.messages.slice(0, take)) out.push(m.payload.slice());
    queue.shift(take);
  }
  return out;
}
