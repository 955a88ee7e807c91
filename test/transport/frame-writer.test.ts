/**
 * FrameWriter behind a real OutputServer on a real Unix socket: accounting of
 * every submitted frame (delivered or dropped for a counted reason), frame
 * atomicity under short writes, the stuck-client cut-off, and lossless resend.
 */
import { describe, expect, test } from "bun:test";
import { OutputServer, type OutputServerOptions } from "../../src/channels/output-server.ts";
import { HEADER_SIZE, MAX_MESSAGE, WallClock } from "../../src/protocol/index.ts";
import { silent } from "../../src/transport/report.ts";
import { expectAccountedStats } from "../support/agent-log.ts";
import { sameBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { expectIntactInOrder, indexedPayload } from "../support/payloads.ts";
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

async function startServer(over: Partial<OutputServerOptions> = {}) {
  const dir = socketDir(defer, "fw-");
  const path = dir.path("out.sock");
  const server = await OutputServer.start({
    path,
    mode: 0o660,
    report: silent,
    queueFrames: 500,
    dropPolicy: "oldest",
    lossless: false,
    writeDeadlineMs: 20,
    stuckFrames: 50,
    ...over,
  });
  defer(() => server.stop());
  return { path, server };
}

/** Lets queued microtasks (the writer's pump) and pending I/O callbacks run. */
function tick(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
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
}

describe("FrameWriter live mode", () => {
  test("with nobody connected every frame is dropped as no_client, and none reaches a later client", async () => {
    const { path, server } = await startServer();
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
    const { path, server } = await startServer({ lossless: true });
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
    const { path, server } = await startServer({ writeDeadlineMs: 20, stuckFrames: 50 });
    const client = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");

    // Fill the kernel buffers until a write comes back short: the writer is now blocked.
    let next = 0;
    while (server.stats.shortWrites === 0) {
      server.sendFrame(indexedPayload(next++));
      await tick();
      if (next > 100_000) throw new Error("socket never filled");
    }
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
    const { path, server } = await startServer({
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

  test("a client that never reads is cut off after exactly 50 drops; a replacement then receives", async () => {
    const { path, server } = await startServer({
      writeDeadlineMs: 0,
      stuckFrames: 50,
      queueFrames: 20,
      socketBuffers: SMALL_SEND_BUFFER,
    });
    const stuck = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");

    let next = 0;
    while (server.stats.shortWrites === 0) {
      server.sendFrame(indexedPayload(next++));
      await tick();
      if (next > 100_000) throw new Error("socket never filled");
    }
    // The short write left the last frame either partly written (the tail) or not started (still queued).
    const queuedWhenBlocked = server.readings().queueDepth;
    expect(queuedWhenBlocked).toBeLessThanOrEqual(1);
    let sinceBlocked = 0;
    while (server.connected) {
      server.sendFrame(indexedPayload(next++));
      sinceBlocked++;
      await tick();
      if (sinceBlocked > 1000) throw new Error("stuck client never disconnected");
    }
    // The queue (20) absorbs the first frames; then each frame drops the oldest, and the 50th drop cuts it off.
    expect(sinceBlocked).toBe(20 - queuedWhenBlocked + 50);
    const s = server.stats;
    expect(s.dropped.queue_full).toBe(50);
    // The 20 frames still queued for it when it was cut off.
    expect(s.dropped.client_stuck).toBe(20);
    expect(s.dropped.no_client).toBe(0);
    expect(s.dropped.client_gone).toBeLessThanOrEqual(1);
    expectAccounted(server);
    const deliveredToStuck = s.delivered;

    // What the kernel took still reaches the stuck client: whole frames, then at most a cut one.
    stuck.socket.resume();
    await stuck.closed;
    expect(stuck.frames.length).toBe(deliveredToStuck);
    expect(stuck.pending > 0).toBe(s.dropped.client_gone === 1);
    expect(checkReceived(stuck)).toEqual([...Array(deliveredToStuck).keys()]);

    // The server keeps accepting: a replacement client gets the frames sent from now on.
    const replacement = await connectClient(defer, path);
    await until(() => server.connected, "replacement accepted");
    const first = next;
    for (let k = 0; k < 20; k++) server.sendFrame(indexedPayload(next++));
    await until(() => replacement.frames.length === 20, "20 frames");
    expect(checkReceived(replacement)).toEqual([...Array(20).keys()].map((k) => first + k));
    expect(server.stats.delivered).toBe(deliveredToStuck + 20);
    expect(server.listener.connections).toBe(2);
    expect(server.listener.replacements).toBe(0);
    expectAccounted(server);
  });
});

describe("FrameWriter latency budget", () => {
  test("a paused reader: writing holds once what it has not read spans the budget; older frames are dropped as latency_budget", async () => {
    const { path, server } = await startServer({ maxLatencyMs: 100, writeDeadlineMs: 50, stuckFrames: 100_000 });
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
    const { path, server } = await startServer({ maxLatencyMs: 1000, writeDeadlineMs: 0, stuckFrames: 100_000 });
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
    const { path, server } = await startServer({ maxLatencyMs: 100, writeDeadlineMs: 50, stuckFrames: 25 });
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
    const { path, server } = await startServer({ lossless: true, maxLatencyMs: 10, writeDeadlineMs: 0, queueFrames: 1000 });
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

describe("FrameWriter lossless mode", () => {
  test("a frame submitted by a waiter that the shutdown itself woke is counted as dropped (shutdown), not lost", async () => {
    const { server } = await startServer({ lossless: true, writeDeadlineMs: 0, queueFrames: 4 });
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
    const { path, server } = await startServer({ lossless: true, writeDeadlineMs: 0, queueFrames: 8, socketBuffers: SMALL_SEND_BUFFER });
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
    const { path, server } = await startServer({
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
    const { path, server } = await startServer({ clock });
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
