/**
 * pumpSource from a real capture file into a recording target: every frame
 * once and in order, waiting for room when lossless, looping, pacing, and
 * nothing submitted once stopped.
 */
import { describe, expect, test } from "bun:test";
import type { FrameSource } from "../../src/media/frame-source.ts";
import { Pacer } from "../../src/media/pacer.ts";
import { pumpSource, type PumpTarget } from "../../src/media/pump.ts";
import { WireSource } from "../../src/media/wire-source.ts";
import { OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import { useCleanup } from "../support/cleanup.ts";
import { payloadIndex } from "../support/payloads.ts";
import { socketDir } from "../support/temp.ts";
import { indexedWire, wireBytes } from "../support/wire.ts";

const defer = useCleanup();

async function source(bytes: Uint8Array): Promise<WireSource> {
  const path = socketDir(defer, "pump-").path("in.wire");
  await Bun.write(path, bytes);
  const opened = await WireSource.open(path);
  defer(() => opened.close());
  return opened;
}

/**
 * A send queue of `room` frames that the test empties by hand: records the
 * index of each frame it is given, and whether it had room when it was.
 */
function target(room = Infinity) {
  const sent: number[] = [];
  let queued = 0;
  let overfull = 0;
  let waiter: (() => void) | undefined;
  const t: PumpTarget & { sent: number[]; overfull: () => number; take: () => void } = {
    sent,
    sendFrame(payload) {
      if (queued >= room) overfull++;
      queued++;
      sent.push(payloadIndex(payload));
      return true;
    },
    hasSpace: () => queued < room,
    waitForSpace: () => new Promise<void>((resolve) => (waiter = resolve)),
    overfull: () => overfull,
    /** Takes every queued frame out and wakes a waiting pump. */
    take() {
      queued = 0;
      waiter?.();
      waiter = undefined;
    },
  };
  return t;
}

const running = { lossless: false, loop: false, isStopped: () => false };

/** A pacer whose clock stands at 0: each frame's wait is its whole time on the source's timeline. */
const stillPacer = () => new Pacer({ now: () => 0 });

describe("pumpSource", () => {
  test("sends every frame of the source once, in order, and returns the count", async () => {
    const to = target();
    const n = await pumpSource(await source(indexedWire(0, 300)), to, running);
    expect(n).toBe(300);
    expect(to.sent).toEqual([...Array(300).keys()]);
  });

  test("lossless: waits for room before each frame, so a full queue is never pushed", async () => {
    const to = target(8);
    const pumping = pumpSource(await source(indexedWire(0, 50)), to, { ...running, lossless: true });
    for (let k = 0; to.sent.length < 50; k++) {
      if (k > 10_000) throw new Error(`the pump stopped after ${to.sent.length} frames`);
      await Bun.sleep(1);
      to.take();
    }
    expect(await pumping).toBe(50);
    expect(to.overfull()).toBe(0);
    expect(to.sent).toEqual([...Array(50).keys()]);
  });

  test("live: a full queue does not hold the source back (the queue's drop policy decides)", async () => {
    const to = target(8);
    expect(await pumpSource(await source(indexedWire(0, 50)), to, running)).toBe(50);
    expect(to.overfull()).toBe(42);
  });

  test("loop starts the source again at its end, until stopped", async () => {
    const to = target();
    const n = await pumpSource(await source(indexedWire(0, 3)), to, { ...running, loop: true, isStopped: () => to.sent.length >= 8 });
    expect(n).toBe(8);
    expect(to.sent).toEqual([0, 1, 2, 0, 1, 2, 0, 1]);
  });

  test("loop over a stream that ended (it cannot rewind) is an error; a stream stopped meanwhile is not", async () => {
    let stopped = false;
    // A stream of two frames: stdin's kind, which ends and cannot be read again; `stopAtEnd`: the role
    // stops while the read that finds the end is pending (a signal closing the source, say).
    const stream = async (stopAtEnd: boolean): Promise<FrameSource> => {
      const file = await source(indexedWire(0, 2));
      const fill = async () => {
        const more = await file.fill();
        if (!more && stopAtEnd) stopped = true;
        return more;
      };
      return { name: "stdin", next: () => file.next(), fill, rewind: () => false, close: () => file.close() };
    };
    const to = target();
    const ended = await pumpSource(await stream(false), to, { ...running, loop: true }).catch((e) => e);
    expect((ended as Error).message).toBe("source stdin is a stream, read once: --loop replays a file");
    expect(to.sent).toEqual([0, 1]);
    expect(await pumpSource(await stream(true), target(), { ...running, loop: true, isStopped: () => stopped })).toBe(2);
  });

  test("nothing is sent once stopped, even a frame already read", async () => {
    const to = target();
    let checks = 0;
    // Stopped at the check between reading the fourth frame and sending it.
    const n = await pumpSource(await source(indexedWire(0, 10)), to, { ...running, isStopped: () => ++checks > 7 });
    expect(n).toBe(3);
    expect(to.sent).toEqual([0, 1, 2]);
  });

  test("a stop while the pacer waits: the frame waited for is not sent", async () => {
    const to = target();
    let stopped = false;
    const sendFrame = to.sendFrame;
    // Frames 100 ms apart; 10 ms after the second is sent, during the wait for the third, the role stops.
    // The pacer's clock stands still, so the wait for the third is its whole 200 ms however late the
    // second went out: a stall past the third's time on a real clock made it due, and sent it.
    to.sendFrame = (payload) => {
      if (to.sent.length === 1) setTimeout(() => (stopped = true), 10);
      return sendFrame(payload);
    };
    const wire = await source(wireBytes(0, 5, (i) => Uint8Array.of(i, 0, 0, 0), OUTPUT_MAGIC, 100));
    expect(await pumpSource(wire, to, { ...running, pacer: stillPacer(), isStopped: () => stopped })).toBe(2);
    expect(to.sent).toEqual([0, 1]);
  });

  test("with a pacer, frames go out at their times on the source's timeline, not at once", async () => {
    const to = target();
    const started = performance.now();
    // Five frames 40 ms apart: the last is due 160 ms after the first (a slow machine only adds to it;
    // each of the four sleeps may end up to a millisecond before its fractional due time).
    const n = await pumpSource(await source(wireBytes(0, 5, (i) => Uint8Array.of(i, 0, 0, 0), OUTPUT_MAGIC, 40)), to, { ...running, pacer: new Pacer() });
    expect(n).toBe(5);
    expect(performance.now() - started).toBeGreaterThanOrEqual(155);
  });

  /** A source over `n` frames `intervalMs` apart that logs each read, and a target whose writer, a microtask as FrameWriter's, writes all it was given at once. */
  async function logged(n: number, intervalMs: number) {
    const events: string[] = [];
    const wire = await source(wireBytes(0, n, (i) => Uint8Array.of(i, 0, 0, 0), OUTPUT_MAGIC, intervalMs));
    const reading: FrameSource = {
      name: wire.name,
      next: () => {
        const frame = wire.next();
        if (frame) events.push(`read ${payloadIndex(frame.payload)}`);
        return frame;
      },
      fill: () => wire.fill(),
      rewind: () => wire.rewind(),
      close: () => wire.close(),
    };
    let queued: number[] = [];
    const writing: PumpTarget = {
      sendFrame(payload) {
        if (queued.length === 0) {
          queueMicrotask(() => {
            events.push(`write ${queued.join(",")}`);
            queued = [];
          });
        }
        queued.push(payloadIndex(payload));
        return true;
      },
      hasSpace: () => true,
      waitForSpace: () => Promise.resolve(),
    };
    return { events, reading, writing };
  }

  test("with a pacer, a frame waited for is written (the writer's microtask) before the next frame is read", async () => {
    const { events, reading, writing } = await logged(3, 5);
    // A pacer whose clock stands still: the second and third are waited for whatever the machine's
    // stalls (on a real clock a stall of 5 ms between the first two reads made the second due at once).
    expect(await pumpSource(reading, writing, { ...running, pacer: stillPacer() })).toBe(3);
    // The first frame is due at once (written while the pacer waits for the second); the next two are waited for.
    expect(events).toEqual(["read 0", "read 1", "write 0", "write 1", "read 2", "write 2"]);
  });

  // A chunk read after a turn of the event loop only sets an immediate; the pump waits for a turn
  // only once chunks came PUMP_TURN_MS without one. Waiting at every chunk doubled the turns here.
  test("a short file looped (held in memory, each read at once): the event loop turns once a pass, the turn after its chunk taken with the pass's own", async () => {
    const passes = 2000;
    const wire = await source(indexedWire(0, 5));
    const to = target();
    let ticks = 0;
    let ticking = true;
    const tick = () => {
      ticks++;
      if (ticking) setImmediate(tick);
    };
    setImmediate(tick);
    const n = await pumpSource(wire, to, { lossless: false, loop: true, isStopped: () => to.sent.length >= passes * 5 });
    ticking = false;
    expect(n).toBe(passes * 5);
    expect(to.sent.slice(-5)).toEqual([0, 1, 2, 3, 4]);
    // One turn for each start again (passes - 1), give or take the ticker's first and last.
    expect(ticks).toBeGreaterThanOrEqual(passes - 1);
    expect(ticks).toBeLessThanOrEqual(passes + 2);
  });

  test("frames already due, paced or not, are queued together and go out in one write", async () => {
    // Frames 10 ms apart, the pacer's clock 150 ms on from the first: all of them due by then (a burst after a stall).
    let calls = 0;
    const behind = new Pacer({ now: () => 1000 + (calls++ === 0 ? 0 : 150) });
    for (const pacer of [behind, undefined]) {
      const { events, reading, writing } = await logged(10, 10);
      expect(await pumpSource(reading, writing, { ...running, pacer })).toBe(10);
      expect(events.filter((e) => e.startsWith("write"))).toEqual(["write 0,1,2,3,4,5,6,7,8,9"]);
    }
  });
});
