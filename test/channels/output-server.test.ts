/**
 * OutputServer as its owner sees it: what it tells its observer, what
 * happens to frames queued for a client that leaves, a queue resized by the
 * optimizer, and the bounded flush at shutdown.
 */
import { describe, expect, test } from "bun:test";
import { useCleanup } from "../support/cleanup.ts";
import { startOutputServer } from "../support/output-server.ts";
import { expectIntactInOrder, indexedPayload } from "../support/payloads.ts";
import { pacedReader, type PacedReader } from "../support/paced-reader.ts";
import { connectClient, connectOutcome } from "../support/peer.ts";
import { kernelBufferBytes } from "../support/proc.ts";
import { recordingObserver, recordingReport } from "../support/reports.ts";
import { until } from "../support/wait.ts";
import { encodeMessage, FrameParser, INPUT_MAGIC, MessageType, OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import type { OutputServer } from "../../src/channels/output-server.ts";
import { within } from "../../src/io/within.ts";

const defer = useCleanup();

/** Lets the writer's pump and pending I/O callbacks run. */
const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("OutputServer", () => {
  test("its observer sees each client come and go, with the socket and the reason, and every write", async () => {
    const { path, server } = await startOutputServer(defer);
    const { events, observer } = recordingObserver();
    server.observe(observer);
    const first = await connectClient(defer, path);
    await until(() => server.connected, "first client");
    server.sendFrame(indexedPayload(0, 100));
    await until(() => first.frames.length === 1, "a frame");
    first.close();
    await until(() => !server.connected, "first client gone");
    await connectClient(defer, path);
    await until(() => server.connected, "second client");
    expect(events).toEqual([
      `connected ${path}`,
      `written 1 ${17 + indexedPayload(0, 100).length}`,
      "disconnected peer closed",
      `connected ${path}`,
    ]);
  });

  test("a client whose bytes break the framing (the input channel's magic) is disconnected, counted and told of; the next client is served", async () => {
    const { reports, report } = recordingReport();
    const { path, server } = await startOutputServer(defer, { report });
    const broken = await connectClient(defer, path);
    await until(() => server.connected, "the client accepted");
    broken.socket.write(encodeMessage(INPUT_MAGIC, MessageType.Heartbeat, new Uint8Array(0)));
    await until(() => server.protocolErrors === 1, "the framing violation counted");
    await within(broken.closed, 5000, undefined);
    expect(broken.isClosed).toBe(true);
    expect(reports.filter((r) => r.level === "warn").map((r) => r.message)).toEqual(["framing violation from client; disconnecting"]);
    const next = await connectClient(defer, path);
    await until(() => server.connected, "the next client accepted");
    server.sendFrame(indexedPayload(0, 100));
    await until(() => next.frames.length === 1, "a frame to the next client");
    expect(server.protocolErrors).toBe(1);
  });

  test("its observer hears of every frame given to it, queued or dropped, as the stats count it submitted", async () => {
    const { path, server } = await startOutputServer(defer, { queueFrames: 2 });
    let submitted = 0;
    server.observe({ ...recordingObserver().observer, submitted: () => void submitted++ });
    // No client yet: live, nothing is kept for one, and a queue of 2 drops the oldest of three anyway.
    for (let i = 0; i < 3; i++) server.sendFrame(indexedPayload(i, 100));
    expect(submitted).toBe(3);
    const client = await connectClient(defer, path);
    await until(() => server.connected, "the client accepted");
    server.sendFrame(indexedPayload(3, 100));
    await until(() => client.frames.length > 0, "a frame to the client");
    expect(submitted).toBe(4);
    expect(server.stats.submitted).toBe(4);
    expect(server.stats.droppedTotal).toBe(3);
  });

  test("waitForClient() waits for a client to connect, and resolves at once while one is connected", async () => {
    const { path, server } = await startOutputServer(defer);
    let waited = false;
    const waiting = server.waitForClient().then(() => (waited = true));
    // Turns of the event loop with no client: it still waits.
    for (let i = 0; i < 10; i++) await tick();
    expect(waited).toBe(false);
    await connectClient(defer, path);
    await waiting;
    expect(server.connected).toBe(true);
    expect(await within(server.waitForClient().then(() => true), 5000, false)).toBe(true);
  });

  test("live: frames queued for a client that leaves are dropped at once as no_client; the next client gets only new ones", async () => {
    const { path, server } = await startOutputServer(defer, { writeDeadlineMs: 0, stuckFrames: 100_000, socketBuffers: { sendBytes: 8192, receiveBytes: 8192 } });
    const leaving = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    let next = 0;
    while (server.stats.shortWrites === 0) {
      server.sendFrame(indexedPayload(next++));
      await tick();
    }
    for (let k = 0; k < 10; k++) server.sendFrame(indexedPayload(next++));
    const queued = server.readings().queueDepth;
    expect(queued).toBeGreaterThanOrEqual(10);

    leaving.close();
    await until(() => !server.connected, "the server saw the client go");
    expect(server.readings().queueDepth).toBe(0);
    expect(server.stats.dropped.no_client).toBe(queued);

    const staying = await connectClient(defer, path);
    await until(() => server.connected, "next client");
    const first = next;
    for (let k = 0; k < 5; k++) server.sendFrame(indexedPayload(next++));
    await until(() => staying.frames.length === 5, "5 frames");
    expect(expectIntactInOrder(staying.frames, 4096)).toEqual([0, 1, 2, 3, 4].map((k) => first + k));
    expect(server.stats.submitted).toBe(server.stats.delivered + server.stats.droppedTotal);
  });

  test("resizeQueue changes the bound the queue keeps, queued frames included", async () => {
    const { path, server } = await startOutputServer(defer, { queueFrames: 20, writeDeadlineMs: 0, stuckFrames: 100_000 });
    const reader = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    server.resizeQueue(40);
    expect(server.readings().queueCapacity).toBe(40);
    // With the reader paused, the queue now takes 40 before the first queue_full drop.
    let next = 0;
    while (server.stats.dropped.queue_full === 0) {
      server.sendFrame(indexedPayload(next++));
      await tick();
    }
    expect(server.readings().queueDepth).toBe(40);
    reader.socket.resume();
    await until(() => server.idle && reader.bytes === server.stats.deliveredBytes, "written out and read");
    expect(expectIntactInOrder(reader.frames, 4096).length).toBe(server.stats.delivered);
  });

  test("flush(ms) is true once everything went out, false when a reader that does not read keeps it from going out in time", async () => {
    const { path, server } = await startOutputServer(defer, { lossless: true, writeDeadlineMs: 0, socketBuffers: { sendBytes: 8192, receiveBytes: 8192 } });
    expect(await server.flush(10)).toBe(true); // nothing queued
    const reader = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    for (let i = 0; i < 200; i++) server.sendFrame(indexedPayload(i));
    expect(await server.flush(100)).toBe(false);
    expect(server.idle).toBe(false);
    reader.socket.resume();
    expect(await server.flush(20_000)).toBe(true);
    await until(() => reader.frames.length === 200, "every frame read");
    expect(server.stats.delivered).toBe(200);
  });

  test("each client's socket gets the buffers asked for, as the readings show", async () => {
    const { path, server } = await startOutputServer(defer, { socketBuffers: { sendBytes: 40 * 1024, receiveBytes: 72 * 1024 } });
    await connectClient(defer, path);
    await until(() => server.connected, "client accepted");
    expect(server.readings().socketBuffers.kernel).toEqual({
      sendBytes: kernelBufferBytes(40 * 1024, "send"),
      receiveBytes: kernelBufferBytes(72 * 1024, "receive"),
    });
  });

  test("lossless: what stop() finds still queued is counted as shutdown, so every frame is accounted for", async () => {
    const { path, server } = await startOutputServer(defer, { lossless: true, writeDeadlineMs: 0, socketBuffers: { sendBytes: 8192, receiveBytes: 8192 } });
    await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    for (let i = 0; i < 100; i++) server.sendFrame(indexedPayload(i));
    await tick();
    expect(server.idle).toBe(false);
    await server.stop();
    const s = server.stats;
    expect(s.dropped.shutdown).toBeGreaterThan(0);
    expect(s.submitted).toBe(100);
    expect(s.submitted).toBe(s.delivered + s.droppedTotal);
    expect(server.idle).toBe(true);
  });

  test("stop(): a frame the client has begun to read is finished, not cut; what was not started is dropped as shutdown", async () => {
    for (const lossless of [true, false]) {
      const { path, server } = await startOutputServer(defer, { lossless, writeDeadlineMs: 0, socketBuffers: { sendBytes: 8192, receiveBytes: 8192 } });
      const reader = await connectClient(defer, path, { paused: true });
      await until(() => server.connected, "client accepted");
      // 4000-byte frames: the buffers fill part-way through one, which is then half-written.
      for (let i = 0; i < 40; i++) server.sendFrame(indexedPayload(i, 4000));
      await until(() => server.stats.shortWrites > 0, "a short write");
      const stopped = server.stop();
      // A client coming meanwhile is refused: it would replace the reader and cut its frame.
      expect(await connectOutcome(defer, path)).toBe("refused");
      expect(server.readings().listening).toBe(false);
      reader.socket.resume();
      await stopped;
      await within(reader.closed, 5000, undefined);
      const s = server.stats;
      expect({ lossless, partial: reader.pending }).toEqual({ lossless, partial: 0 });
      expect(reader.frames.length).toBe(s.delivered);
      expectIntactInOrder(reader.frames, 4000);
      expect(s.dropped.shutdown).toBeGreaterThan(0);
      expect(s.submitted).toBe(s.delivered + s.droppedTotal);
    }
  });

  test("stop(): a client reading steadily but slowly (4 KiB every 20 ms, as a real-time Go client) gets the frame it has begun whole", async () => {
    for (const lossless of [true, false]) {
      const { server, reader } = await pacedClientOf({ lossless }, 4113, 20);
      for (let i = 0; i < 300; i++) server.sendFrame(indexedPayload(i, 4096));
      await until(() => server.stats.shortWrites > 0, "a short write");
      // The client took bytes all along: the frame it had begun is finished, not cut.
      await expectWholeAfterStop(server, reader, lossless);
    }
  });

  test("stop(): a client that read part of its full socket buffer before the stop, and nothing after, gets the frame it has begun whole: the kernel has room for its rest", async () => {
    for (const lossless of [true, false]) {
      const { server, reader } = await pacedClientOf({ lossless }, 0, 0);
      for (let i = 0; i < 300; i++) server.sendFrame(indexedPayload(i, 4096));
      await until(() => server.stats.shortWrites > 0, "a short write");
      // 40 KiB of the 128 KiB the kernel holds for it (twice the 64 KiB asked for): room, but no drain yet.
      let read = 0;
      for (let n = -1; n !== 0 && read < 40_000; read += n) n = reader.read(40_000 - read);
      expect(read).toBe(40_000);
      await expectWholeAfterStop(server, reader, lossless);
    }
  });

  test("live: a client that reads one small frame behind a full socket buffer makes no write the kernel takes nothing of (no short write, no overflow): what it freed is less than the buffer is over", async () => {
    const { server, reader } = await pacedClientOf({ maxLatencyMs: 60_000 }, 0, 0);
    // Small frames one write each (a small buffer charge each), then a burst in one write
    // whose last piece takes the kernel's count past the buffer's size.
    for (let i = 0; i < 20; i++) {
      server.sendFrame(indexedPayload(i, 100));
      await tick();
    }
    for (let i = 20; i < 320; i++) server.sendFrame(indexedPayload(i, 4096));
    await until(() => server.stats.shortWrites > 0, "a short write");
    const { shortWrites, writeCalls } = server.stats;
    // The first small frame: the unread count falls, by less than the buffer is over its size.
    const first = 17 + indexedPayload(0, 100).length;
    expect(reader.read(first)).toBe(first);
    await Bun.sleep(200);
    expect(server.stats.shortWrites).toBe(shortWrites);
    expect(server.stats.writeCalls).toBe(writeCalls);
  });

  test("live: a client that stalled until its socket buffer filled, then read half of it, gets the frames queued meanwhile without waiting for a drain (which comes only at three quarters free)", async () => {
    const { server, reader } = await pacedClientOf({ writeDeadlineMs: 50, maxLatencyMs: 60_000 }, 0, 0);
    let next = 0;
    while (server.stats.shortWrites === 0) {
      if (next > 10_000) throw new Error("the socket never filled");
      server.sendFrame(indexedPayload(next++, 4096));
      await tick();
    }
    for (let k = 0; k < 5; k++) server.sendFrame(indexedPayload(next++, 4096));
    // Half of what the kernel holds for it (twice the 64 KiB asked for): no drain yet.
    let read = 0;
    for (let n = -1; n !== 0 && read < 65536; read += n) n = reader.read(65536 - read);
    expect(read).toBeGreaterThan(32 * 1024);
    // The kernel now has room for the frames queued (5 of at most 4113 bytes) and the one begun.
    await until(() => server.idle, "the queued frames to go out", 2000);
    const s = server.stats;
    expect(s.dropped.write_deadline).toBe(0);
    expect(s.submitted).toBe(next);
    expect(s.delivered).toBe(next);
  });

  test("live: while the socket is full, a new frame drops what waited past the write deadline at once, without waiting for a drain", async () => {
    const { path, server } = await startOutputServer(defer, { writeDeadlineMs: 50, stuckFrames: 1_000_000, queueFrames: 500, socketBuffers: { sendBytes: 8192, receiveBytes: 8192 } });
    await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    for (let i = 0; server.stats.shortWrites === 0; i++) {
      if (i > 10_000) throw new Error("the socket never filled");
      server.sendFrame(indexedPayload(i, 4000));
      await tick();
    }
    for (let i = 0; i < 5; i++) server.sendFrame(indexedPayload(i, 4000));
    await Bun.sleep(120);
    expect(server.stats.dropped.write_deadline).toBe(0);
    server.sendFrame(indexedPayload(0, 4000));
    expect(server.stats.dropped.write_deadline).toBeGreaterThanOrEqual(5);
  });

  test("lossless: a frame half-written to a client that is replaced goes whole to the next; between them every frame once, whole, in order", async () => {
    const N = 60;
    const { path, server } = await startOutputServer(defer, { lossless: true, writeDeadlineMs: 0, socketBuffers: { sendBytes: 8192, receiveBytes: 8192 } });
    const first = await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "first client accepted");
    for (let i = 0; i < N; i++) server.sendFrame(indexedPayload(i, 4000));
    await until(() => server.stats.shortWrites > 0, "a half-written frame");
    const second = await connectClient(defer, path);
    await until(() => server.stats.delivered === N && server.idle, "every frame out", 10_000);
    first.socket.resume();
    await within(first.closed, 5000, undefined);
    await until(() => first.frames.length + second.frames.length === N, "the second client to read its frames");
    // The first read whole frames and then part of one; the second begins with that one, whole.
    expect(first.pending).toBeGreaterThan(0);
    const got = [...first.frames, ...second.frames];
    expect(got.length).toBe(N);
    expect(expectIntactInOrder(got, 4000)).toEqual(Array.from({ length: N }, (_, i) => i));
    expect(server.stats.delivered).toBe(N);
  });

  test("a stuck client is cut off: the frames queued for it count as client_stuck, and the reason is logged", async () => {
    const { reports, report } = recordingReport();
    const { path, server } = await startOutputServer(defer, { report, writeDeadlineMs: 0, stuckFrames: 10, queueFrames: 5, socketBuffers: { sendBytes: 8192, receiveBytes: 8192 } });
    await connectClient(defer, path, { paused: true });
    await until(() => server.connected, "client accepted");
    for (let i = 0; server.connected; i++) {
      if (i > 100_000) throw new Error("never cut off");
      server.sendFrame(indexedPayload(i));
      await tick();
    }
    expect(server.stats.dropped.client_stuck).toBe(5);
    expect(server.stats.dropped.no_client).toBe(0);
    // Cut off at the 10th frame dropped for it, not the 11th.
    expect(server.stats.dropped.queue_full).toBe(10);
    expect(reports.find((r) => r.message.startsWith("client stuck"))?.level).toBe("warn");
    expect(reports.find((r) => r.message === "client disconnected")?.fields?.reason).toBe("stuck: accepted nothing for 10 frames");
  });

  test("the next client that gets stuck is cut off too: each client is judged afresh", async () => {
    const { path, server } = await startOutputServer(defer, { writeDeadlineMs: 0, stuckFrames: 10, queueFrames: 5, socketBuffers: { sendBytes: 8192, receiveBytes: 8192 } });
    for (let client = 1; client <= 2; client++) {
      await connectClient(defer, path, { paused: true });
      await until(() => server.connected, `client ${client} accepted`);
      for (let i = 0; server.connected; i++) {
        if (i > 100_000) throw new Error(`client ${client} never cut off`);
        server.sendFrame(indexedPayload(i));
        await tick();
      }
      expect(server.stats.dropped.client_stuck).toBe(5 * client);
    }
  });
});

/**
 * A server with 64 KiB socket buffers (no write deadline, no stuck cut-off
 * unless `options` say) and its client, accepted: a libc reader taking
 * `chunk` bytes every `everyMs` (0: only when the test reads).
 */
async function pacedClientOf(options: Parameters<typeof startOutputServer>[1], chunk: number, everyMs: number) {
  const { path, server } = await startOutputServer(defer, { writeDeadlineMs: 0, stuckFrames: 100_000, socketBuffers: { sendBytes: 65536, receiveBytes: 65536 }, ...options });
  const reader = pacedReader(defer, path, chunk, everyMs);
  await until(() => server.connected, "client accepted");
  return { server, reader };
}

/** Stops `server`: its client gets whole frames only (the begun one finished), each delivered one intact and in order, every frame accounted. */
async function expectWholeAfterStop(server: OutputServer, reader: PacedReader, lossless: boolean): Promise<void> {
  await server.stop();
  const parser = new FrameParser(OUTPUT_MAGIC);
  parser.push(await reader.readToEnd());
  const frames: Uint8Array[] = [];
  for (let m = parser.next(); m; m = parser.next()) frames.push(m.payload.slice());
  expect({ lossless, partial: parser.pending }).toEqual({ lossless, partial: 0 });
  const s = server.stats;
  expect(frames.length).toBe(s.delivered);
  expectIntactInOrder(frames, 4096);
  expect(s.submitted).toBe(s.delivered + s.droppedTotal);
}
