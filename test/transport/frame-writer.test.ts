/**
 * FrameWriter behind a real OutputServer on a real Unix socket: accounting of
 * every submitted frame (delivered or dropped for a counted reason), frame
 * atomicity under short writes, the stuck-client cut-off, and lossless resend.
 */
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { OutputServer, type OutputServerOptions } from "../../src/channels/output-server.ts";
import { encodeMessage, HEADER_SIZE, MAX_MESSAGE, MAX_PAYLOAD, MessageType, OUTPUT_MAGIC, WallClock } from "../../src/protocol/index.ts";
import { FrameQueue } from "../../src/transport/frame-queue.ts";
import { FrameWriter } from "../../src/transport/frame-writer.ts";
import { silent } from "../../src/transport/report.ts";
import { setSocketBuffers } from "../../src/transport/socket-options.ts";
import { within } from "../../src/io/within.ts";
import { expectAccountedStats } from "../support/agent-log.ts";
import { concatBytes, sameBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { startOutputServer } from "../support/output-server.ts";
import { expectIntactInOrder, indexedPayload, payloadOfSize } from "../support/payloads.ts";
import { pacedReader, type PacedReader } from "../support/paced-reader.ts";
import { connectClient, RecordingClient } from "../support/peer.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

/**
 * Unix stream sockets take a write whole or not at all while it fits in half
 * the send buffer (one skb), so with default buffers a 64 KiB coalesced write
 * never ends inside a frame. An 8 KiB send buffer (16 KiB effective) splits
 * writes at arbitrary bytes, which is what the frame-atomic tail logic is for.
 */
const SMALL_SEND_BUFFER = { sendBytes: 8192, receiveBytes: 8192 };

/** Lets queued microtasks (the writer's pump) and pending I/O callbacks run. */
function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Sends frames 0, 1, ... one per pump until a write comes back short: the
 * kernel's buffers are full and the writer waits. Returns the next index.
 */
async function fillUntilBlocked(server: OutputServer): Promise<number> {
  let next = 0;
  while (server.stats.shortWrites === 0) {
    server.sendFrame(indexedPayload(next++));
    await tick();
    if (next > 100_000) throw new Error("socket never filled");
  }
  return next;
}

/**
 * What a client must have seen: whole, uncorrupted frames with strictly
 * increasing indices (drops only ever remove whole frames). Returns the indices.
 */
function checkReceived(client: RecordingClient, maxSize = 4096): number[] {
  expect(client.error).toBeUndefined();
  return expectIntactInOrder(client.frames, maxSize);
}

function expectAccounted(server: OutputServer): void {
  expect(server.idle).toBe(true);
  expectAccountedStats(server.stats);
  // The output channel carries OpusFrames only: every message delivered is a frame.
  expect(server.stats.framesDelivered).toBe(server.stats.delivered);
}

describe("FrameWriter live mode", () => {
  test("with nobody connected every frame is dropped as no_client, and none reaches a later client", async () => {
    const { path, server } = await startOutputServer(defer);
    for (let i = 0; i < 7; i++) expect(server.sendFrame(indexedPayload(i))).toBe(false);
    expect(server.stats.dropped.no_client).toBe(7);
    expect(server.readings().queueDepth).toBe(0);

    const client = await connectClient(defer, path);
    await until(() => server.connected, "client accepted");
    for (let i = 7; i < 10; i++) expect(server.sendFrame(indexedPayload(i))).toBe(true);
    await until(() => client.frames.length === 3, "3 frames");
    expect(checkReceived(client)).toEqual([7, 8, 9]);

    client.close();
    await until(() => !server.connected, "client gone");
    for (let i = 10; i < 12; i++) expect(server.sendFrame(indexedPayload(i))).toBe(false);
    expect(server.stats.dropped.no_client).toBe(9);
    expect(server.stats.delivered).toBe(3);
    expectAccounted(server);
  });

  test("queued frames go out coalesced: a burst of small frames is one write", async () => {
    const { path, server } = await startOutputServer(defer, { lossless: true });
    const client = await connectClient(defer, path);
    await until(() => server.connected, "client accepted");
    // Submitted in one synchronous burst: the pump runs once, afterwards.
    for (let i = 0; i < 100; i++) server.sendFrame(indexedPayload(i, 200));
    await until(() => client.frames.length === 100, "100 frames");
    expect(server.stats.writeCalls).toBe(1);
    expect(server.stats.delivered).toBe(100);
    expect(checkReceived(client, 200)).toEqual([...Array(100).keys()]);
  });

  test("a paused reader: stale frames are dropped whole (write_deadline), the rest arrive whole and in order", async () => {
    const { path, server } = await startOutputServer(defer, { writeDeadlineMs: 20, stuckFrames: 50 });
    const client = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");

    let next = await fillUntilBlocked(server);
    // Two batches of 10, each after the queued frames are past the 20 ms deadline:
    // the second batch's first submit drops the whole first batch. 20 frames < 50: not stuck.
    for (let batch = 0; batch < 2; batch++) {
      await Bun.sleep(30);
      for (let k = 0; k < 10; k++) server.sendFrame(indexedPayload(next++));
    }
    expect(server.stats.dropped.write_deadline).toBeGreaterThanOrEqual(10);

    client.socket.resume();
    await until(() => server.idle && client.bytes === server.stats.deliveredBytes, "queue written out");
    // Reading again: more frames flow.
    for (let k = 0; k < 50; k++) {
      server.sendFrame(indexedPayload(next++));
      await tick();
    }
    await until(() => server.idle && client.bytes === server.stats.deliveredBytes, "queue written out");

    const s = server.stats;
    expect(s.submitted).toBe(next);
    expect(s.submitted).toBe(s.delivered + s.droppedTotal);
    expect(s.dropped.client_stuck).toBe(0);
    expect(server.connected).toBe(true);
    expect(client.frames.length).toBe(s.delivered);
    expect(client.pending).toBe(0);
    const indices = checkReceived(client);
    expect(indices.at(-1)).toBe(next - 1);
    expect(s.delivered).toBeLessThan(next);
  });

  test("a reader that keeps pausing: submitted = delivered + dropped exactly, received frames whole and in order", async () => {
    const { path, server } = await startOutputServer(defer, {
      writeDeadlineMs: 20,
      stuckFrames: 50,
      queueFrames: 100,
      socketBuffers: SMALL_SEND_BUFFER,
    });
    const client = await connectClient(defer, path);
    await until(() => server.connected, "client accepted");
    // Read 5 ms, pause 40 ms, over and over, while a frame comes about every millisecond.
    let paused = false;
    let toggler: ReturnType<typeof setTimeout> | undefined;
    const toggle = () => {
      paused = !paused;
      if (paused) client.socket.pause();
      else client.socket.resume();
      toggler = setTimeout(toggle, paused ? 40 : 5);
    };
    toggle();
    defer(() => clearTimeout(toggler));
    const N = 800;
    for (let i = 0; i < N; i++) {
      server.sendFrame(indexedPayload(i));
      await Bun.sleep(1);
    }
    clearTimeout(toggler);
    clearInterval(toggler);
    client.socket.resume();
    await until(() => server.idle || !server.connected, "queue written out");
    await server.stop();
    await client.closed;

    const s = server.stats;
    expect(s.submitted).toBe(N);
    expect(s.submitted).toBe(s.delivered + s.droppedTotal);
    expect(s.droppedTotal).toBeGreaterThan(0);
    expect(s.delivered).toBeGreaterThan(0);
    // The client read to the end of the stream: it got exactly what was delivered.
    expect(client.frames.length).toBe(s.delivered);
    expect(client.pending).toBeLessThan(MAX_MESSAGE);
    checkReceived(client);
  });

  test("frames that went stale while the writer was blocked are dropped when it can write again, not sent late", async () => {
    const { path, server } = await startOutputServer(defer, { writeDeadlineMs: 20, stuckFrames: 1000, socketBuffers: SMALL_SEND_BUFFER });
    const client = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    let next = await fillUntilBlocked(server);
    // Ten more wait in the queue behind the blocked write; nothing is submitted after them.
    const lastTen = next;
    for (let k = 0; k < 10; k++) server.sendFrame(indexedPayload(next++));
    const stale = server.readings().queueDepth;
    expect(stale).toBeGreaterThanOrEqual(10);
    const droppedBefore = server.stats.dropped.write_deadline;
    const deliveredWhenBlocked = server.stats.delivered;
    await Bun.sleep(60); // three deadlines: every queued frame is stale now

    client.socket.resume();
    await until(() => server.idle && client.bytes === server.stats.deliveredBytes, "writer idle");
    const s = server.stats;
    // A single frame fits one piece of the small send buffer, so the write that came back short
    // took nothing: no frame was started, every queued one was stale and dropped at write time.
    expect(s.dropped.write_deadline - droppedBefore).toBe(stale);
    expect(s.delivered).toBe(deliveredWhenBlocked);
    expect(s.submitted).toBe(next);
    expectAccounted(server);
    const indices = checkReceived(client);
    expect(indices.length).toBe(s.delivered);
    expect(indices.filter((i) => i >= lastTen)).toEqual([]);
  });

  test("a client that leaves wakes whoever waits for the queue to empty: its frames were dropped", async () => {
    const { path, server } = await startOutputServer(defer, { writeDeadlineMs: 0, stuckFrames: 100_000, socketBuffers: SMALL_SEND_BUFFER });
    const client = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    const next = await fillUntilBlocked(server);
    for (let k = 0; k < 10; k++) server.sendFrame(indexedPayload(next + k));
    let idle = false;
    const waiting = server.waitForIdle().then(() => (idle = true));
    await tick();
    expect(idle).toBe(false);
    client.close();
    // Without a wake-up this would wait for ever: nothing is left to write, and nothing writes.
    expect(await within(waiting, 10_000, false)).toBe(true);
    expect(server.stats.dropped.no_client).toBeGreaterThanOrEqual(10);
    expectAccounted(server);
  });

  test("a client that never reads is cut off after exactly 50 drops; its half-written frame is dropped as client_gone; a replacement then receives", async () => {
    const { path, server } = await startOutputServer(defer, {
      writeDeadlineMs: 0,
      stuckFrames: 50,
      queueFrames: 20,
      socketBuffers: SMALL_SEND_BUFFER,
    });
    const stuck = await connectClient(defer, path, { paused: true, keepRaw: true });
    await until(() => server.connected, "client accepted");

    // Frames of 4113 bytes on the wire, four at a time: each write is larger than the kernel
    // takes in one piece, so the one that comes back short ends inside a frame (4113 shares no
    // factor with the kernel's power-of-two piece sizes).
    const frame = (i: number) => payloadOfSize(i, MAX_PAYLOAD);
    let next = 0;
    while (server.stats.shortWrites === 0) {
      for (let k = 0; k < 4; k++) server.sendFrame(frame(next++));
      await tick();
      if (next > 100_000) throw new Error("socket never filled");
    }
    const deliveredWhenBlocked = server.stats.delivered;
    // The frame the short write started is out of the queue (set aside, half-written), not in it.
    const queuedWhenBlocked = server.readings().queueDepth;
    expect(queuedWhenBlocked).toBe(next - deliveredWhenBlocked - 1);
    let sinceBlocked = 0;
    while (server.connected) {
      server.sendFrame(frame(next++));
      sinceBlocked++;
      await tick();
      if (sinceBlocked > 1000) throw new Error("stuck client never disconnected");
    }
    // The queue (20) absorbs the first frames; then each frame drops the oldest, and the 50th drop cuts it off.
    expect(sinceBlocked).toBe(20 - queuedWhenBlocked + 50);
    const s = server.stats;
    expect(s.delivered).toBe(deliveredWhenBlocked);
    expect(s.dropped.queue_full).toBe(50);
    // The 20 frames still queued for it when it was cut off, and the half-written one.
    expect(s.dropped.client_stuck).toBe(20);
    expect(s.dropped.client_gone).toBe(1);
    expect(s.dropped.no_client).toBe(0);
    expectAccounted(server);

    // What the kernel took still reaches the stuck client: the whole frames, then the start of the next.
    stuck.socket.resume();
    await stuck.closed;
    expect(stuck.error).toBeUndefined();
    expect(stuck.frames.length).toBe(deliveredWhenBlocked);
    expect(stuck.frames.every((p, k) => sameBytes(p, frame(k)))).toBe(true);
    const cut = encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, frame(deliveredWhenBlocked));
    expect(stuck.pending).toBeGreaterThan(0);
    expect(stuck.pending).toBeLessThan(cut.length);
    const raw = stuck.rawBytes();
    const partial = raw.subarray(raw.length - stuck.pending);
    // The header's timestamp is the server's; everything else is the frame's own bytes.
    expect(sameBytes(partial.subarray(0, 9), cut.subarray(0, 9))).toBe(true);
    expect(sameBytes(partial.subarray(HEADER_SIZE), cut.subarray(HEADER_SIZE, partial.length))).toBe(true);

    // The server keeps accepting: a replacement gets the frames sent from now on, never the cut one.
    const replacement = await connectClient(defer, path);
    await until(() => server.connected, "replacement accepted");
    const first = next;
    for (let k = 0; k < 20; k++) server.sendFrame(indexedPayload(next++));
    await until(() => replacement.frames.length === 20, "20 frames");
    expect(checkReceived(replacement)).toEqual([...Array(20).keys()].map((k) => first + k));
    expect(server.stats.delivered).toBe(deliveredWhenBlocked + 20);
    expect(server.listener.connections).toBe(2);
    expect(server.listener.replacements).toBe(0);
    expectAccounted(server);
  });
});

describe("FrameWriter latency budget", () => {
  test("a paused reader: writing holds once what it has not read spans the budget; older frames are dropped as latency_budget", async () => {
    const { path, server } = await startOutputServer(defer, { maxLatencyMs: 100, writeDeadlineMs: 50, stuckFrames: 100_000 });
    const client = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    // 20 ms frames for 1.5 s, none read: the kernel would hold them all (seconds of audio).
    let next = 0;
    for (; next < 75; next++) {
      server.sendFrame(indexedPayload(next, 160));
      await Bun.sleep(20);
    }
    const s = server.stats;
    // Written: what spanned the budget before the hold (a 100 ms budget: a handful of 20 ms frames).
    expect(s.delivered).toBeLessThanOrEqual(10);
    expect(s.dropped.latency_budget).toBeGreaterThan(50);
    expect(s.shortWrites).toBe(0);
    expect(server.readings().queueDepth).toBeLessThanOrEqual(10);
    // The reader comes back: what was held goes out, then every new frame.
    client.socket.resume();
    for (let k = 0; k < 10; k++, next++) {
      server.sendFrame(indexedPayload(next, 160));
      await Bun.sleep(20);
    }
    await until(() => server.idle && client.frames.length === s.delivered, "queue written out");
    expect(s.submitted).toBe(next);
    expect(s.submitted).toBe(s.delivered + s.droppedTotal);
    const indices = checkReceived(client, 160);
    expect(indices.slice(-5)).toEqual([next - 5, next - 4, next - 3, next - 2, next - 1]);
  });

  test("frames held by the budget go out once the reader is back, with no new frame to prompt the writer", async () => {
    const { path, server } = await startOutputServer(defer, { maxLatencyMs: 1000, writeDeadlineMs: 0, stuckFrames: 100_000 });
    const client = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    // 20 ms frames for 1.3 s, none read: after about a second what is in flight spans the budget.
    let next = 0;
    for (const started = performance.now(); performance.now() - started < 1300; next++) {
      server.sendFrame(indexedPayload(next, 160));
      await Bun.sleep(20);
    }
    const s = server.stats;
    const deliveredWhileHeld = s.delivered;
    expect(server.idle).toBe(false);
    // The source has gone quiet; the reader comes back. Nothing else happens on the server's side.
    client.socket.resume();
    await until(() => server.idle, "the held frames written or dropped");
    await until(() => client.frames.length === s.delivered, "the client to read what was written");
    expect(s.delivered).toBeGreaterThan(deliveredWhileHeld);
    expect(s.submitted).toBe(next);
    expect(s.submitted).toBe(s.delivered + s.droppedTotal);
    expect(checkReceived(client, 160).at(-1)).toBe(next - 1);
  });

  test("a reader that stops is cut off as stuck by the frames dropped under the budget alone", async () => {
    const { path, server } = await startOutputServer(defer, { maxLatencyMs: 100, writeDeadlineMs: 50, stuckFrames: 25 });
    const client = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    // Paced 20 ms frames: the queue never fills and the socket buffer never does either, so
    // latency_budget is the only pressure there is.
    let next = 0;
    while (server.connected) {
      server.sendFrame(indexedPayload(next++, 160));
      await Bun.sleep(20);
      if (next > 500) throw new Error("a client that reads nothing was never cut off");
    }
    const s = server.stats;
    expect(s.dropped.queue_full).toBe(0);
    expect(s.dropped.write_deadline).toBe(0);
    expect(s.dropped.latency_budget).toBeGreaterThanOrEqual(25);
    expect(s.submitted).toBe(next);
    expectAccounted(server);
    client.socket.resume();
    await client.closed;
    expect(client.frames.length).toBe(s.delivered);
  });

  test("lossless mode is not limited by the budget: a paused reader gets every frame once it reads", async () => {
    const { path, server } = await startOutputServer(defer, { lossless: true, maxLatencyMs: 10, writeDeadlineMs: 0, queueFrames: 1000 });
    const client = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    for (let i = 0; i < 300; i++) {
      server.sendFrame(indexedPayload(i, 160));
      if (i % 50 === 0) await Bun.sleep(20);
    }
    await Bun.sleep(50);
    client.socket.resume();
    await until(() => client.frames.length === 300, "every frame");
    expect(server.stats.droppedTotal).toBe(0);
    expect(checkReceived(client, 160)).toEqual([...Array(300).keys()]);
  });
});

describe("FrameWriter looking for room while the socket is full (a Unix socket drains only at three quarters free)", () => {
  /** A server with 64 KiB socket buffers and a libc reader that reads only when told, accepted; its buffer filled, `queued` frames waiting behind it. */
  async function fullClientOf(options: Partial<OutputServerOptions>, queued: number) {
    const { path, server } = await startOutputServer(defer, { stuckFrames: 100_000, socketBuffers: { sendBytes: 65536, receiveBytes: 65536 }, ...options });
    const reader = pacedReader(defer, path, 0, 0);
    await until(() => server.connected, "client accepted");
    let next = 0;
    while (server.stats.shortWrites === 0) {
      if (next > 10_000) throw new Error("the socket never filled");
      server.sendFrame(indexedPayload(next++, 4096));
      await tick();
    }
    for (let k = 0; k < queued; k++) server.sendFrame(indexedPayload(next++, 4096));
    return { server, reader, next };
  }

  /** Reads half of what the kernel holds for the client (twice the 64 KiB asked for): room, and no drain yet. */
  function readHalf(reader: PacedReader): void {
    let read = 0;
    for (let n = -1; n !== 0 && read < 65536; read += n) n = reader.read(65536 - read);
    expect(read).toBeGreaterThan(32 * 1024);
  }

  test("live with a latency budget and no write deadline: frames queued behind a full socket go out once the client reads half of it, without a drain", async () => {
    const { server, reader, next } = await fullClientOf({ writeDeadlineMs: 0, maxLatencyMs: 60_000 }, 5);
    readHalf(reader);
    await until(() => server.idle, "the queued frames to go out");
    const s = server.stats;
    expect(s.droppedTotal).toBe(0);
    expect(s.submitted).toBe(next);
    expect(s.delivered).toBe(next);
  });

  test("a resize that leaves the client's unread data at or over the send buffer (the kernel's cap holding both sizes alike) makes no write: the queued frames wait for the client to read", async () => {
    const { server, reader, next } = await fullClientOf({ writeDeadlineMs: 0, maxLatencyMs: 60_000 }, 5);
    const { writeCalls, shortWrites } = server.stats;
    const waiting = server.readings().queueDepth;
    // The same sizes again: applied to the live connection and told to the writer, with no room made.
    server.tuner.resize({ sendBytes: 65536, receiveBytes: 65536 });
    await tick();
    expect(server.stats.writeCalls).toBe(writeCalls);
    expect(server.stats.shortWrites).toBe(shortWrites);
    expect(server.readings().queueDepth).toBe(waiting);
    readHalf(reader);
    await until(() => server.idle, "the queued frames to go out");
    expect(server.stats.droppedTotal).toBe(0);
    expect(server.stats.delivered).toBe(next);
  });

  test("live: once the queued frames are past the write deadline the writer stops looking; room the client makes then waits for a new frame, which drops them and goes out", async () => {
    const deadlineMs = 50;
    const { server, reader, next } = await fullClientOf({ writeDeadlineMs: deadlineMs }, 5);
    // Past the deadline: the next look finds nothing worth sending and the looks stop (each comes before this sleep ends).
    await Bun.sleep(4 * deadlineMs);
    const { writeCalls } = server.stats;
    // The 5, and the one that found the socket full where it took none of it.
    const waiting = server.readings().queueDepth;
    expect(waiting).toBeGreaterThanOrEqual(5);
    readHalf(reader);
    await Bun.sleep(4 * deadlineMs);
    expect(server.stats.writeCalls).toBe(writeCalls);
    expect(server.stats.dropped.write_deadline).toBe(0);
    expect(server.idle).toBe(false);

    // A new frame goes out at the next look for room, unless the process is kept off the CPU until
    // it is past the deadline first: then it waits, stale in turn, and the next new frame drops it
    // and goes out in its place.
    let fresh = 0;
    while (!server.idle) {
      if (fresh === 20) throw new Error(`none of ${fresh} new frames went out`);
      server.sendFrame(indexedPayload(next + fresh++, 4096));
      const submittedAt = performance.now();
      expect(server.stats.dropped.write_deadline).toBe(waiting + fresh - 1);
      await until(() => server.idle || performance.now() - submittedAt > deadlineMs, "the new frame to go out or go stale");
    }
    const s = server.stats;
    expect(s.submitted).toBe(next + fresh);
    expect(s.delivered).toBe(next + 1 - waiting);
    expect(s.droppedTotal).toBe(waiting + fresh - 1);
  });
});

describe("FrameWriter lossless mode", () => {
  test("a frame submitted by a waiter that the shutdown itself woke is counted as dropped (shutdown), not lost", async () => {
    const { server } = await startOutputServer(defer, { lossless: true, writeDeadlineMs: 0, queueFrames: 4 });
    for (let i = 0; i < 4; i++) server.sendFrame(indexedPayload(i));
    expect(server.hasSpace()).toBe(false);
    // A source waiting for room: the discard at stop makes room, and it submits one more.
    const late = server.waitForSpace().then(() => server.sendFrame(indexedPayload(4)));
    await server.stop();
    expect(await late).toBe(false);
    const s = server.stats;
    expect(s.submitted).toBe(5);
    expect(s.dropped.shutdown).toBe(5);
    expectAccountedStats(s);
  });

  test("every waiter is woken: two waiting for room and two waiting for idle all resolve", async () => {
    const { path, server } = await startOutputServer(defer, { lossless: true, writeDeadlineMs: 0, queueFrames: 8, socketBuffers: SMALL_SEND_BUFFER });
    const client = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    let next = 0;
    while (server.hasSpace()) {
      server.sendFrame(indexedPayload(next++));
      await tick();
    }
    const woken: string[] = [];
    const waits = [
      server.waitForSpace().then(() => woken.push("space 1")),
      server.waitForSpace().then(() => woken.push("space 2")),
      server.waitForIdle().then(() => woken.push("idle 1")),
      server.waitForIdle().then(() => woken.push("idle 2")),
    ];
    await Bun.sleep(20);
    expect(woken).toEqual([]);
    client.socket.resume();
    await Promise.all(waits);
    expect(woken.sort()).toEqual(["idle 1", "idle 2", "space 1", "space 2"]);
    await until(() => client.frames.length === next, "every frame");
    expect(checkReceived(client)).toEqual([...Array(next).keys()]);
  });

  test("a frame cut short by a vanished client is resent whole to the next; together they get every frame once", async () => {
    const { path, server } = await startOutputServer(defer, {
      lossless: true,
      writeDeadlineMs: 0,
      queueFrames: 32,
      socketBuffers: SMALL_SEND_BUFFER,
    });
    const first = await connectClient(defer, path, { keepRaw: true });
    await until(() => server.connected, "client accepted");

    const N = 4000;
    let produced = 0;
    const producer = (async () => {
      for (; produced < N; produced++) {
        await server.waitForSpace();
        server.sendFrame(indexedPayload(produced));
      }
    })();

    // Kill the first client at a moment when it has read everything the server
    // wrote, including the start of a frame whose rest the server could not write yet.
    first.onChunk = (c) => {
      if (c.frames.length > 100 && c.bytes > server.stats.deliveredBytes) {
        c.onChunk = undefined;
        c.socket.terminate();
      }
    };
    for (let attempt = 0; !first.isClosed; attempt++) {
      if (attempt > 200 || produced === N) throw new Error("never caught a half-written frame");
      // Stop reading until the writer is blocked with its queue full, then read again.
      first.socket.pause();
      await until(() => !server.hasSpace() || produced === N, "writer blocked");
      await Bun.sleep(2);
      first.socket.resume();
      await Bun.sleep(2);
    }
    await until(() => !server.connected, "server saw the client go");

    const second = await connectClient(defer, path, { keepRaw: true });
    await producer;
    await until(() => server.idle && second.bytes === server.stats.deliveredBytes - first.bytes + first.pending, "all written");

    const s = server.stats;
    expect(s.submitted).toBe(N);
    expect(s.delivered).toBe(N);
    expect(s.framesDelivered).toBe(N);
    expect(s.droppedTotal).toBe(0);

    const a = checkReceived(first);
    const b = checkReceived(second);
    const cut = a.length;
    expect(a).toEqual([...Array(cut).keys()]);
    expect(b).toEqual([...Array(N - cut).keys()].map((k) => cut + k));
    expect(second.pending).toBe(0);

    // The first client holds the start of frame `cut`; the second got that same frame whole.
    expect(first.pending).toBeGreaterThan(0);
    const raw = first.rawBytes();
    const partial = raw.subarray(raw.length - first.pending);
    const resent = second.rawBytes().subarray(0, HEADER_SIZE + second.frames[0].length);
    expect(partial.length).toBeLessThan(resent.length);
    expect(sameBytes(partial, resent.subarray(0, partial.length))).toBe(true);
  });
});

describe("FrameWriter timestamps", () => {
  test("header timestamps follow a step of the wall clock within a second (injected clock)", async () => {
    let step = 0;
    const clock = new WallClock({ realtimeMs: () => Date.now() + step });
    const { path, server } = await startOutputServer(defer, { clock });
    const client = await connectClient(defer, path);
    await until(() => server.connected, "client accepted");
    // A frame every 10 ms for 2.5 s; 0.5 s in, the wall clock is set a minute ahead. Each send
    // is bracketed by readings of the (stepped) wall clock, so a pause in between cannot matter.
    const sent: { i: number; from: number; to: number; monotonicMs: number }[] = [];
    let steppedAt = Infinity;
    const started = performance.now();
    for (let i = 0; performance.now() - started < 2500; i++) {
      if (step === 0 && performance.now() - started >= 500) {
        step = 60_000;
        steppedAt = performance.now();
      }
      const payload = indexedPayload(i, 100);
      const monotonicMs = performance.now();
      const from = Date.now() + step;
      server.sendFrame(payload);
      sent.push({ i, from, to: Date.now() + step, monotonicMs });
      await Bun.sleep(10);
    }
    await until(() => client.frames.length === sent.length, "every frame");
    const stamps = client.messages.map((m) => m.timestampMs);
    // Frames sent a second or more after the step carry the stepped time (within 2 ms: Date.now() has
    // whole milliseconds, and after a step the offset is exact to half of one).
    const after = sent.filter((s) => s.monotonicMs - steppedAt >= 1000);
    const before = sent.filter((s) => s.monotonicMs < steppedAt);
    expect(after.length).toBeGreaterThan(10);
    expect(before.length).toBeGreaterThan(10);
    const off = (s: (typeof sent)[number]) => stamps[s.i] < s.from - 2 || stamps[s.i] > s.to + 2;
    expect(after.filter(off)).toEqual([]);
    expect(before.filter(off)).toEqual([]);
  });
});

describe("FrameWriter attached to another socket", () => {
  test("lossless: what was queued for the old socket goes to the new one, the frame it had started resent whole", async () => {
    const path = socketDir(defer, "fw-").path("w.sock");
    const queue = new FrameQueue(64, OUTPUT_MAGIC);
    const writer = new FrameWriter(queue, { lossless: true, writeDeadlineMs: 0, stuckFrames: 50 });
    const accepted: Socket<undefined>[] = [];
    const listener = Bun.listen({
      unix: path,
      socket: { open: (socket) => void accepted.push(socket), data() {}, drain: (socket) => writer.onDrain(socket), close() {} },
    });
    defer(() => listener.stop(true));
    const frame = (i: number) => payloadOfSize(i, MAX_PAYLOAD);

    const first = await connectClient(defer, path, { paused: true });
    await until(() => accepted.length === 1, "first accepted");
    expect(setSocketBuffers(accepted[0]!.fd, SMALL_SEND_BUFFER).ok).toBe(true);
    writer.attach(accepted[0]!);
    // One write larger than the small buffer takes: it comes back short, inside a 4113-byte frame.
    for (let i = 0; i < 8; i++) writer.submit(MessageType.OpusFrame, frame(i));
    await until(() => queue.stats.shortWrites === 1, "a short write", 5000);
    const whole = queue.stats.delivered;
    expect(queue.length).toBe(8 - whole - 1);

    const second = await connectClient(defer, path);
    await until(() => accepted.length === 2, "second accepted");
    writer.attach(accepted[1]!);
    await until(() => second.frames.length === 8 - whole, "the rest at the new socket", 5000);
    expect(second.frames.every((p, k) => sameBytes(p, frame(whole + k)))).toBe(true);
    expect(second.pending).toBe(0);
    expect(queue.stats.delivered).toBe(8);
    expect(queue.stats.droppedTotal).toBe(0);
    expect(writer.idle).toBe(true);

    // The old socket got the whole frames and the start of the next, nothing after.
    first.socket.resume();
    await until(() => first.frames.length === whole && first.pending > 0, "the old socket's bytes", 5000);
  });
});

describe("FrameWriter short writes at chosen bytes (a socket that takes what it is told)", () => {
  /**
   * Where a real socket ends a short write cannot be chosen; these edges are
   * reached with a stand-in whose write() takes, call by call, the bytes
   * `takes` lists (then everything asked), and keeps them.
   */
  function scriptedSocket(takes: number[]) {
    const received: number[] = [];
    const socket = {
      fd: undefined,
      write(bytes: Uint8Array, start = 0, size = bytes.length - start) {
        const n = Math.min(size, takes.shift() ?? size);
        for (let i = start; i < start + n; i++) received.push(bytes[i]!);
        return n;
      },
    };
    return { socket: socket as unknown as Socket<unknown>, received };
  }
  const FRAME = HEADER_SIZE + 100;

  test("a short write that ends exactly where a message ends delivers that message at once: no tail is set aside", () => {
    const queue = new FrameQueue(16, OUTPUT_MAGIC);
    const writer = new FrameWriter(queue, { lossless: true, writeDeadlineMs: 0, stuckFrames: 50 });
    const { socket, received } = scriptedSocket([FRAME]);
    writer.attach(socket);
    writer.submit(MessageType.OpusFrame, payloadOfSize(0, 100));
    writer.submit(MessageType.OpusFrame, payloadOfSize(1, 100));
    writer.pump();
    expect(queue.stats.shortWrites).toBe(1);
    expect(queue.stats.delivered).toBe(1);
    expect(queue.stats.framesDelivered).toBe(1);
    expect(queue.length).toBe(1);
    expect(received.length).toBe(FRAME);
    writer.onDrain(socket);
    expect(queue.stats.delivered).toBe(2);
    expect(queue.stats.deliveredBytes).toBe(2 * FRAME);
    expect(received.length).toBe(2 * FRAME);
    expect(writer.idle).toBe(true);
  });

  test("a Heartbeat cut by a short write is reported written (onControlWritten) once its last byte goes out", () => {
    const queue = new FrameQueue(16, OUTPUT_MAGIC);
    const controls: MessageType[] = [];
    const writer = new FrameWriter(queue, {
      lossless: true,
      writeDeadlineMs: 0,
      stuckFrames: 50,
      onControlWritten: (type) => void controls.push(type),
    });
    const { socket, received } = scriptedSocket([FRAME + 5]);
    writer.attach(socket);
    writer.submit(MessageType.OpusFrame, payloadOfSize(0, 100));
    writer.submit(MessageType.Heartbeat, new Uint8Array(0));
    writer.pump();
    expect(queue.stats.delivered).toBe(1);
    expect(controls).toEqual([]);
    writer.onDrain(socket);
    expect(received.length).toBe(FRAME + HEADER_SIZE);
    expect(queue.stats.delivered).toBe(2);
    expect(queue.stats.framesDelivered).toBe(1);
    expect(controls).toEqual([MessageType.Heartbeat]);
  });

  test("a message set aside cut short again is a short write again, counted each time; it goes out whole", () => {
    const queue = new FrameQueue(16, OUTPUT_MAGIC);
    const writer = new FrameWriter(queue, { lossless: true, writeDeadlineMs: 0, stuckFrames: 50 });
    const { socket, received } = scriptedSocket([FRAME + 5, 3]);
    writer.attach(socket);
    writer.submit(MessageType.OpusFrame, payloadOfSize(0, 100), 0);
    writer.submit(MessageType.OpusFrame, payloadOfSize(1, 100), 0);
    writer.pump();
    expect(queue.stats.shortWrites).toBe(1);
    writer.onDrain(socket);
    expect(queue.stats.shortWrites).toBe(2);
    expect(queue.stats.delivered).toBe(1);
    expect(received.length).toBe(FRAME + 8);
    writer.onDrain(socket);
    expect(queue.stats.shortWrites).toBe(2);
    expect(queue.stats.delivered).toBe(2);
    const sent = [0, 1].map((i) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, payloadOfSize(i, 100)));
    expect(sameBytes(new Uint8Array(received), concatBytes(sent))).toBe(true);
    expect(writer.idle).toBe(true);
  });

  test("live: a write the socket takes nothing of is no progress: the client is judged stuck at exactly stuckFrames drops, a begun message's write and a fresh run's alike", () => {
    // Each take list: the first write, then what every write after it takes (nothing).
    for (const takes of [[FRAME + 5, 0, 0], [0, 0, 0]]) {
      const queue = new FrameQueue(4, OUTPUT_MAGIC);
      const stuck: Socket<unknown>[] = [];
      const writer = new FrameWriter(queue, { lossless: false, writeDeadlineMs: 0, stuckFrames: 3, onStuck: (s) => void stuck.push(s) });
      const { socket } = scriptedSocket(takes);
      writer.attach(socket);
      let next = 0;
      for (; next < 4; next++) writer.submit(MessageType.OpusFrame, payloadOfSize(next, 100));
      writer.pump();
      expect(queue.stats.shortWrites).toBe(1);
      // The queue (4) fills, then two frames are dropped for the client: not yet stuck.
      while (queue.stats.dropped.queue_full < 2) writer.submit(MessageType.OpusFrame, payloadOfSize(next++, 100));
      expect(stuck).toEqual([]);
      // The kernel says there is room, and then takes nothing.
      writer.onDrain(socket);
      expect(queue.stats.shortWrites).toBe(2);
      writer.submit(MessageType.OpusFrame, payloadOfSize(next, 100));
      expect(queue.stats.dropped.queue_full).toBe(3);
      expect(stuck).toEqual([socket]);
    }
  });
});

describe("FrameWriter while the queue gives back the room a higher bound grew", () => {
  test("lossless: the ring laid out anew under short writes that cut frames, the bound lowered mid-drain; every frame arrives whole and in order, and the queue ends at its first size", async () => {
    const { path, server } = await startOutputServer(defer, {
      lossless: true,
      writeDeadlineMs: 0,
      queueFrames: 100,
      socketBuffers: SMALL_SEND_BUFFER,
    });
    const first = server.readings().queueAllocatedBytes;
    const client = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");

    // Escalated: 400 frames of up to 4 KB (about 800 KB, a 1 MiB ring) wait behind a reader that reads nothing.
    server.resizeQueue(400);
    let next = 0;
    while (server.hasSpace()) server.sendFrame(indexedPayload(next++));
    await tick();
    expect(server.stats.shortWrites).toBeGreaterThan(0);
    const grown = server.readings().queueAllocatedBytes;
    expect(grown).toBeGreaterThan(first);

    // Relaxed while full; the reader reads in bursts, so that the writer keeps setting cut frames aside.
    server.resizeQueue(100);
    const sizes = new Set<number>([grown]);
    for (let round = 0; !server.idle; round++) {
      if (round > 10_000) throw new Error("queue never drained");
      client.socket.resume();
      await Bun.sleep(1);
      client.socket.pause();
      sizes.add(server.readings().queueAllocatedBytes);
      await tick();
    }
    client.socket.resume();
    await until(() => client.bytes === server.stats.deliveredBytes, "every byte read");

    // Given back in steps as it drained, and at its first size once empty.
    expect(sizes.size).toBeGreaterThan(2);
    expect(server.readings().queueAllocatedBytes).toBe(first);
    expect(server.stats.shortWrites).toBeGreaterThan(10);
    expect(server.stats.delivered).toBe(next);
    expect(server.stats.droppedTotal).toBe(0);
    expect(client.pending).toBe(0);
    expect(checkReceived(client)).toEqual([...Array(next).keys()]);
  });
});
