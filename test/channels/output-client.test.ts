/**
 * OutputClient against a real OutputServer (restarts) and against a raw fake
 * server writing encoded bytes: tolerated control messages, framing
 * violations that end the connection (then a reconnect), and how run() ends.
 */
import type { Socket } from "bun";
import { describe, expect, test } from "bun:test";
import { unlinkSync } from "node:fs";
import { join } from "node:path";
import { OutputClient, type OutputClientOptions } from "../../src/channels/output-client.ts";
import { OutputServer } from "../../src/channels/output-server.ts";
import {
  encodeConfigPayload,
  encodeMessage,
  INPUT_MAGIC,
  MessageType,
  OUTPUT_MAGIC,
  type ParsedMessage,
} from "../../src/protocol/index.ts";
import { silent } from "../../src/transport/report.ts";
import { within } from "../../src/io/within.ts";
import { ConnectTimeoutError } from "../../src/transport/unix-client.ts";
import { concatBytes } from "../support/bytes.ts";
import { logFields } from "../support/agent-log.ts";
import { useCleanup } from "../support/cleanup.ts";
import { hookConnects } from "../support/connect-hooks.ts";
import { indexedPayload, isIntactIndexedPayload, payloadIndex } from "../support/payloads.ts";
import { fakeServer, writeInPieces } from "../support/peer.ts";
import { BUN, spawnAgent, start, stopAgents } from "../support/processes.ts";
import { recordingObserver, recordingReport } from "../support/reports.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { indexedWire, wireHeader, writeWireFile } from "../support/wire.ts";

const defer = useCleanup();

/** Payloads here are small: many messages split into many small writes stay quick. */
const MAX_SIZE = 300;
const payload = (i: number) => indexedPayload(i, MAX_SIZE);

interface Seen {
  type: number;
  index: number;
  intact: boolean;
}

/** An OutputClient recording what it receives and why its connections ended; stopped after the test. */
function recordingClient(path: string, over: Partial<OutputClientOptions> = {}) {
  const seen: Seen[] = [];
  const disconnects: string[] = [];
  const client = new OutputClient({
    path,
    report: silent,
    onMessage: (m: ParsedMessage) => {
      const payload = m.payload;
      seen.push({ type: m.type, index: m.type === 0 ? payloadIndex(payload) : -1, intact: m.type !== 0 || isIntactIndexedPayload(payload, MAX_SIZE) });
    },
    onDisconnect: (reason) => disconnects.push(reason),
    ...over,
  });
  defer(() => client.stop());
  return { client, seen, disconnects, frames: () => seen.filter((s) => s.type === 0).map((s) => s.index) };
}

async function startOutputServer(path: string) {
  const server = await OutputServer.start({
    path,
    mode: 0o660,
    report: silent,
    queueFrames: 100,
    dropPolicy: "oldest",
    lossless: true,
    writeDeadlineMs: 0,
    stuckFrames: 50,
  });
  defer(() => server.stop());
  return server;
}

/** The OpusFrame message of frame i. */
function frame(i: number): Uint8Array {
  return indexedWire(i, i + 1, MAX_SIZE);
}

describe("OutputClient reconnects", () => {
  test("after a server restart it reconnects and receives from the new server", async () => {
    const path = socketDir(defer, "oc-").path("out.sock");
    const first = await startOutputServer(path);
    const { client, disconnects, frames } = recordingClient(path);
    const running = client.run();
    await first.waitForClient();
    for (let i = 0; i < 10; i++) first.sendFrame(payload(i));
    await until(() => frames().length === 10, "10 frames from the first server");

    await first.stop();
    await until(() => !client.connected, "client noticed");
    await Bun.sleep(200); // no server at all for a while: the client keeps trying
    const second = await startOutputServer(path);
    await second.waitForClient();
    for (let i = 10; i < 20; i++) second.sendFrame(payload(i));
    await until(() => frames().length === 20, "10 frames from the second server");

    expect(frames()).toEqual([...Array(20).keys()]);
    expect(client.connects).toBe(2);
    expect(disconnects).toEqual(["server closed"]);
    client.stop();
    await running;
  });

  test("a silent server that speaks as the look's connect begins, then an output server that sends all it has and leaves: every frame that server counts as delivered is received", async () => {
    const dir = socketDir(defer, "oc-");
    const path = dir.path("out.sock");
    const silentOne = fakeServer(path, () => {});
    defer(silentOne.stop);
    const { client, frames } = recordingClient(path);
    const running = client.run();
    await until(() => client.connects === 1 && silentOne.connections.length === 1, "connected to the first server");
    // Its one frame waits in the kernel as the look's connection to the next server is made.
    let spoke = false;
    hookConnects(defer, { before: () => void (spoke || ((spoke = true), silentOne.connections[0]!.write(frame(1000)))) });
    // The next server at the path: a lossless output serve, which writes its 50 frames at once on the connection it takes.
    await writeWireFile(dir.path("in.wire"), 50, payload);
    unlinkSync(path);
    defer(() => stopAgents());
    const serve = spawnAgent(["output", "serve", "--source", dir.path("in.wire"), "--socket", path], { timeoutMs: 30_000 });
    expect(await serve.exited, serve.stderr).toBe(0);
    expect(logFields(serve.stderr, "output-server", "stopped").delivered).toBe("50");
    expect(serve.stderr.match(/client connected/g)).toHaveLength(1);
    await until(() => frames().length === 51, "the first server's frame and the 50 the next one delivered", 10_000);
    expect(frames()).toEqual([1000, ...Array(50).keys()]);
    expect(client.connects).toBe(2);
    client.stop();
    await running;
  }, 30_000);

  test("it says connected, then reconnected; its observer sees each connection, each end, and frame ages", async () => {
    const path = socketDir(defer, "oc-").path("raw.sock");
    // The first connection brings frames 0 and 1 and ends; the second brings frame 2 and stays.
    const server = fakeServer(path, (socket, n) => {
      if (n === 0) {
        socket.write(concatBytes([frame(0), frame(1)]));
        socket.end();
      } else socket.write(frame(2));
    });
    defer(server.stop);
    const { reports, report } = recordingReport();
    const { client, frames } = recordingClient(path, { report });
    const { events, ages, observer } = recordingObserver();
    client.observe(observer);
    void client.run();
    await until(() => frames().length === 3, "3 frames");
    expect(reports.filter((r) => r.message.endsWith("connected")).map((r) => r.message)).toEqual(["connected", "disconnected", "reconnected"]);
    expect(events.filter((e) => e !== "frame age")).toEqual([`connected ${path}`, "disconnected server closed", `connected ${path}`]);
    // One age per read that brought frames: the frames' stamps are from 2023, years before this
    // machine's clock, so each gives none (NaN), and every frame's stamp is counted.
    expect(ages.length).toBeGreaterThanOrEqual(2);
    expect(ages.length).toBeLessThanOrEqual(3);
    expect(ages.every((ms) => Number.isNaN(ms))).toBe(true);
    expect(client.readings().counts.frame_stamps_unusable).toBe(3);
    // Every read counts, those that brought frames and any others.
    expect(client.reads).toBeGreaterThanOrEqual(ages.length);
  });

  test("a read whose first frame's stamp gives no age is still aged, by its first frame whose stamp does", async () => {
    const path = socketDir(defer, "oc-").path("mixed.sock");
    const now = () => BigInt(Date.now()) * 1_000_000n;
    // One write, one read: a frame stamped 0 (a peer's glitch), then two of this machine's clock.
    const server = fakeServer(path, (socket) => {
      socket.write(concatBytes([0n, now(), now()].map((stamp, i) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, payload(i), stamp))));
    });
    defer(server.stop);
    const { client, frames } = recordingClient(path);
    const { ages, observer } = recordingObserver();
    client.observe(observer);
    void client.run();
    await until(() => frames().length === 3, "3 frames");
    expect(client.reads).toBe(1);
    expect(client.readings().counts.frame_stamps_unusable).toBe(1);
    const usable = ages.filter((ms) => !Number.isNaN(ms));
    expect(usable).toHaveLength(1);
    expect(usable[0]).toBeGreaterThanOrEqual(0);
    expect(usable[0]).toBeLessThan(1000);
  });

  test("a read that brings no frame (a server's Heartbeat alone) gives the observer no frame age; the next read's frame gives one", async () => {
    const path = socketDir(defer, "oc-").path("hb.sock");
    const server = fakeServer(path, (socket) => socket.write(wireHeader(OUTPUT_MAGIC, MessageType.Heartbeat, 0)));
    defer(server.stop);
    const { client, frames } = recordingClient(path);
    const { ages, observer } = recordingObserver();
    client.observe(observer);
    void client.run();
    await until(() => client.readings().counts.other_messages === 1, "the Heartbeat");
    server.connections[0]!.write(encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, payload(0), BigInt(Date.now()) * 1_000_000n));
    await until(() => frames().length === 1, "the frame");
    expect(client.reads).toBe(2);
    expect(ages).toHaveLength(1);
    expect(ages[0]).toBeGreaterThanOrEqual(0);
  });

  test("started before any server, it waits for one and then receives", async () => {
    const path = socketDir(defer, "oc-").path("out.sock");
    const { client, frames } = recordingClient(path);
    const running = client.run();
    await Bun.sleep(150);
    expect(client.connects).toBe(0);
    const server = await startOutputServer(path);
    await server.waitForClient();
    for (let i = 0; i < 3; i++) server.sendFrame(payload(i));
    await until(() => frames().length === 3, "3 frames");
    expect(frames()).toEqual([0, 1, 2]);
    client.stop();
    await running;
  });
});

describe("OutputClient against a raw server", () => {
  test("tolerates Heartbeat, Ack, Config and Stop between frames, split at odd places", async () => {
    const path = socketDir(defer, "oc-").path("raw.sock");
    const stream = concatBytes([
      frame(0),
      encodeMessage(OUTPUT_MAGIC, MessageType.Heartbeat, undefined, 1n),
      frame(1),
      encodeMessage(OUTPUT_MAGIC, MessageType.Ack, undefined, -1n),
      encodeMessage(OUTPUT_MAGIC, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 })),
      frame(2),
      encodeMessage(OUTPUT_MAGIC, MessageType.Stop),
      frame(3),
    ]);
    const server = fakeServer(path, (socket) => void writeInPieces(socket, stream, 7));
    defer(server.stop);
    const { client, seen, frames } = recordingClient(path);
    const running = client.run();
    await until(() => seen.length === 8, "8 messages");

    expect(seen.map((s) => s.type)).toEqual([0, 3, 0, 4, 1, 0, 2, 0]);
    expect(frames()).toEqual([0, 1, 2, 3]);
    expect(seen.every((s) => s.intact)).toBe(true);
    expect(client.framesReceived).toBe(4);
    expect(client.otherMessages).toBe(4);
    expect(client.protocolErrors).toBe(0);
    expect(client.bytesReceived).toBe(stream.length);
    expect(client.connected).toBe(true);
    expect(client.connects).toBe(1);
    expect(server.closedCount()).toBe(0);
    client.stop();
    await running;
  });

  const violations = [
    { name: "bad magic (the input channel's)", bytes: wireHeader(INPUT_MAGIC, 0, 3), reason: 'BadMagic: 0x4a4b4d49 ("JKMI"), expected 0x4a4b4f55 ("JKOU")' },
    { name: "unknown type 5", bytes: wireHeader(OUTPUT_MAGIC, 5, 0), reason: "UnknownType: 5, allowed 0..4" },
    { name: "length 4097", bytes: wireHeader(OUTPUT_MAGIC, 0, 4097), reason: "FrameTooLarge: 4097 > 4096" },
  ];
  for (const violation of violations) {
    test(`disconnects on ${violation.name}, then reconnects and receives again`, async () => {
      const path = socketDir(defer, "oc-").path("raw.sock");
      const server = fakeServer(path, (socket, n) => {
        // First connection: a good frame, then the violation (header split across writes). Later: a good frame.
        if (n === 0) void writeInPieces(socket, concatBytes([frame(0), violation.bytes, new Uint8Array(64)]), 9);
        else socket.write(frame(n));
      });
      defer(server.stop);
      const { client, disconnects, frames, seen } = recordingClient(path);
      const running = client.run();
      await until(() => frames().length === 2, "a frame from each connection");

      expect(frames()).toEqual([0, 1]);
      expect(seen.every((s) => s.intact)).toBe(true);
      expect(client.protocolErrors).toBe(1);
      expect(client.connects).toBe(2);
      expect(disconnects).toEqual([`protocol error: ${violation.reason} at byte ${frame(0).length}`]);
      // The client, not the server, ended the first connection.
      await until(() => server.closedCount() === 1, "first connection closed");
      expect(server.connections.length).toBe(2);
      client.stop();
      await running;
    });
  }
});

describe("OutputClient run() endings", () => {
  test("with once, run() returns when the server closes the connection", async () => {
    const path = socketDir(defer, "oc-").path("raw.sock");
    const server = fakeServer(path, (socket) => {
      socket.write(concatBytes([frame(0), frame(1)]));
      socket.end();
    });
    defer(server.stop);
    const { client, frames, disconnects } = recordingClient(path);
    await client.run(true);
    expect(frames()).toEqual([0, 1]);
    expect(disconnects).toEqual(["server closed"]);
    expect(client.connects).toBe(1);
    expect(server.connections.length).toBe(1);
  });

  test("a server that closes inside a message is reported with the bytes lost, and ends a run with `once` in error", async () => {
    const path = socketDir(defer, "oc-").path("raw.sock");
    const cut = frame(1).subarray(0, 30);
    const server = fakeServer(path, (socket) => {
      socket.write(concatBytes([frame(0), cut]));
      socket.end();
    });
    defer(server.stop);
    const { client, frames, disconnects } = recordingClient(path);
    // With `once`, that one stream did not come whole: run() says so.
    const error = await client.run(true).catch((e) => e);
    expect((error as Error).message).toBe("the server closed mid-message (30 byte(s) of a message lost); the stream ends there");
    expect(frames()).toEqual([0]);
    expect(disconnects).toEqual(["server closed mid-message (30 byte(s) of a message lost)"]);
  });

  test("a server that closes one byte into a message (the least that can be cut short) ends a run with `once` in error too", async () => {
    const path = socketDir(defer, "oc-").path("raw.sock");
    const cut = frame(1).subarray(0, 1);
    const server = fakeServer(path, (socket) => {
      socket.write(concatBytes([frame(0), cut]));
      setTimeout(() => socket.end(), 50);
    });
    defer(server.stop);
    const { client, frames, disconnects } = recordingClient(path);
    const error = (await client.run(true).catch((e) => e)) as Error;
    expect(error).toBeInstanceOf(Error);
    expect(error.message).toBe("the server closed mid-message (1 byte(s) of a message lost); the stream ends there");
    expect(frames()).toEqual([0]);
    expect(disconnects).toEqual(["server closed mid-message (1 byte(s) of a message lost)"]);
  });

  test("without `once`, a connection cut mid-message is followed by the next and the run ends as stopped, not in error", async () => {
    const path = socketDir(defer, "oc-").path("raw.sock");
    const server = fakeServer(path, (socket, n) => {
      if (n === 0) {
        socket.write(concatBytes([frame(0), frame(1).subarray(0, 30)]));
        socket.end();
      } else socket.write(concatBytes([frame(1), frame(2)]));
    });
    defer(server.stop);
    const { client, frames } = recordingClient(path);
    const running = client.run();
    await until(() => frames().length === 3, "the second connection's frames");
    client.stop();
    expect(await running).toBeUndefined();
    expect(frames()).toEqual([0, 1, 2]);
  });

  test("a server that closes each connection as it is made: those Bun fails at connect are counted and told, the rest delivered whole", async () => {
    const t = socketDir(defer);
    // Rounds of 6 connections until one is reset at connect (about 4 in 10 are, on an idle machine).
    for (let round = 0; round < 5; round++) {
      const path = t.path(`quick-${round}.sock`);
      const server = start([BUN, join(import.meta.dir, "../support/quick-close-server.ts"), path, "6", "3"], { timeoutMs: 30_000 });
      defer(() => server.kill("SIGKILL"));
      await until(() => server.stdout.includes("listening"), "the server to listen");
      const report = recordingReport();
      const { client, frames } = recordingClient(path, { report: report.report });
      const run = client.run();
      expect(await server.exited).toBe(0);
      await until(() => client.readings().connects + client.readings().counts.connect_resets! === 6, "every connection made or reset");
      client.stop();
      await run;
      const { connects, counts } = client.readings();
      // Each connection the client made brought all 3 frames; the others are told, one line each.
      expect(frames().length).toBe(3 * connects);
      const told = report.reports.filter((r) => r.level === "warn" && r.message.startsWith("the server closed the connection as it was made"));
      expect(told.length).toBe(counts.connect_resets!);
      // A server was there all along: never taken for a missing one.
      expect(report.reports.filter((r) => r.message.includes("waiting for the server"))).toEqual([]);
      if (counts.connect_resets! > 0) return;
    }
    throw new Error("no connection was reset at connect in 30: Bun may no longer fail such a connect");
  }, 60_000);

  test("with no server within connectTimeoutMs, run() rejects with ConnectTimeoutError", async () => {
    const path = socketDir(defer, "oc-").path("none.sock");
    const { client } = recordingClient(path, { connectTimeoutMs: 200 });
    const error = await client.run().catch((e) => e);
    expect(error).toBeInstanceOf(ConnectTimeoutError);
    expect(error.path).toBe(path);
    expect(client.connects).toBe(0);
  });

  test("stop() while waiting for a server ends run() without an error", async () => {
    const path = socketDir(defer, "oc-").path("none.sock");
    const { client } = recordingClient(path);
    const running = client.run();
    await Bun.sleep(60);
    client.stop();
    await running;
    expect(client.connects).toBe(0);
  });

  test("a sink that holds up the reading and then fails (its promise rejects) ends run() with that error, though the server sends nothing more", async () => {
    const path = socketDir(defer, "oc-").path("raw.sock");
    const server = fakeServer(path, (socket) => socket.write(concatBytes([frame(0), frame(1)])));
    defer(server.stop);
    let fail!: (e: Error) => void;
    const held = new Promise<void>((_, reject) => (fail = reject));
    let calls = 0;
    const client = new OutputClient({ path, report: silent, onMessage: () => (calls++, held) });
    defer(() => client.stop());
    const running = client.run().then(() => "ended without an error", (e: Error) => e.message);
    await until(() => calls === 2, "both frames given to the sink");
    fail(new Error("cannot write to sink stdout: EPIPE"));
    // Nothing more comes from the server: only the sink's rejection can end the run.
    expect(await within(running, 10_000, "still running")).toBe("cannot write to sink stdout: EPIPE");
    expect(client.readings().frames).toBe(2);
    expect(client.connects).toBe(1);
  });

  test("a sink whose reader is behind holds up the reading: what the server sends meanwhile is read only once the sink has caught up", async () => {
    const path = socketDir(defer, "oc-").path("raw.sock");
    let serverSide!: Socket<undefined>;
    const server = fakeServer(path, (socket) => {
      serverSide = socket;
      socket.write(frame(0));
    });
    defer(server.stop);
    let caughtUp!: () => void;
    const behind = new Promise<void>((resolve) => (caughtUp = resolve));
    let isCaughtUp = false;
    // For each frame, whether the sink had caught up when it came.
    const given: boolean[] = [];
    const client = new OutputClient({ path, report: silent, onMessage: () => (given.push(isCaughtUp), isCaughtUp ? undefined : behind) });
    defer(() => client.stop());
    void client.run();
    await until(() => given.length === 1, "the first frame given to the sink");
    serverSide.write(concatBytes([frame(1), frame(2)]));
    // Long enough for a client that reads on to take both; this one reads nothing until the sink catches up.
    await Bun.sleep(300);
    expect(given).toEqual([false]);
    isCaughtUp = true;
    caughtUp();
    await until(() => given.length === 3, "the frames sent while the sink was behind");
    expect(given).toEqual([false, true, true]);
    expect(client.readings().frames).toBe(3);
  });

  test("a failing onMessage (e.g. the sink) ends run() with that error instead of reconnecting; the rest of that read still goes to it, received, for the failed sink to count", async () => {
    const path = socketDir(defer, "oc-").path("raw.sock");
    const heartbeat = wireHeader(OUTPUT_MAGIC, MessageType.Heartbeat, 0);
    const server = fakeServer(path, (socket) => socket.write(concatBytes([frame(0), frame(1), frame(2), heartbeat, frame(3)])));
    defer(server.stop);
    const types: number[] = [];
    const client = new OutputClient({
      path,
      report: silent,
      onMessage: (m) => {
        types.push(m.type);
        if (types.length === 2) throw new Error("cannot write to sink out.wire: ENOSPC");
      },
    });
    defer(() => client.stop());
    const error = await client.run().catch((e) => e);
    expect(error).toBeInstanceOf(Error);
    expect(error.message).toBe("cannot write to sink out.wire: ENOSPC");
    // Every message of the read went to it, the ones after the failure too, each counted as what it is.
    expect(types).toEqual([MessageType.OpusFrame, MessageType.OpusFrame, MessageType.OpusFrame, MessageType.Heartbeat, MessageType.OpusFrame]);
    expect(client.readings().frames).toBe(4);
    expect(client.readings().counts.other_messages).toBe(1);
    expect(client.connects).toBe(1);
    expect(client.protocolErrors).toBe(0);
    await Bun.sleep(100);
    expect(server.connections.length).toBe(1);
  });

  test("after the sink failed, a stop (the owner's --count reached) ends what goes to it; a failure without a throw (a flush on the way) sends it the rest too", async () => {
    for (const [how, expected] of [
      ["stop at the third", 3],
      ["fail without a throw at the second", 5],
    ] as const) {
      const path = socketDir(defer, "oc-").path("raw.sock");
      const server = fakeServer(path, (socket) => socket.write(concatBytes([frame(0), frame(1), frame(2), frame(3), frame(4)])));
      defer(server.stop);
      let calls = 0;
      const client: OutputClient = new OutputClient({
        path,
        report: silent,
        onMessage: () => {
          calls++;
          if (how === "stop at the third") {
            if (calls === 3) client.stop();
            if (calls === 2) throw new Error("ENOSPC");
          } else if (calls === 2) client.fail(new Error("ENOSPC"));
        },
      });
      defer(() => client.stop());
      expect(((await client.run().catch((e) => e)) as Error).message).toBe("ENOSPC");
      expect({ how, calls, frames: client.readings().frames }).toEqual({ how, calls: expected, frames: expected });
    }
  });
});
