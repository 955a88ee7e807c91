/**
 * OutputServer as its owner sees it: what it tells its observer, what
 * happens to frames queued for a client that leaves, a queue resized by the
 * optimizer, and the bounded flush at shutdown.
 */
import { describe, expect, test } from "bun:test";
import { useCleanup } from "../support/cleanup.ts";
import { startOutputServer } from "../support/output-server.ts";
import { expectIntactInOrder, indexedPayload } from "../support/payloads.ts";
import { connectClient } from "../support/peer.ts";
import { recordingObserver } from "../support/reports.ts";
import { until } from "../support/wait.ts";

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
});
