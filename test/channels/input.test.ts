import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { NO_OBSERVER } from "../../src/channels/channel-end.ts";
import { InputClient, type InputClientOptions } from "../../src/channels/input-client.ts";
import { InputServer, type InputServerOptions } from "../../src/channels/input-server.ts";
import {
  decodeConfigPayload,
  encodeConfigPayload,
  encodeMessage,
  FrameParser,
  INPUT_MAGIC,
  MessageType,
  OUTPUT_MAGIC,
  wallClockMs,
  type AudioConfig,
} from "../../src/protocol/index.ts";
import { within } from "../../src/io/within.ts";
import { type Report, type ReportLevel } from "../../src/transport/report.ts";
import { ackSkippingServer } from "../support/ack-skipping-server.ts";
import { expectAccountedStats } from "../support/agent-log.ts";
import { concatBytes, sameBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { payloadOfSize, testPayload } from "../support/payloads.ts";
import { connectClient, fakeServer, silentServer, writeInPieces } from "../support/peer.ts";
import { BUN, start, stopAgents } from "../support/processes.ts";
import { kernelBufferBytes } from "../support/proc.ts";
import { recordingObserver, recordingReport, type Reported } from "../support/reports.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { parseWire } from "../support/wire.ts";

const defer = useCleanup();

interface Recorded {
  type: number;
  payload: Uint8Array;
}

interface ServerUnderTest {
  server: InputServer;
  /** Every message onMessage saw, payloads copied, across all sessions. */
  messages: Recorded[];
  /** onSessionEnd calls in order. */
  ends: { reason: string; clean: boolean }[];
  logs: Reported[];
}

async function startServer(path: string, over: Partial<InputServerOptions> = {}): Promise<ServerUnderTest> {
  const messages: Recorded[] = [];
  const ends: { reason: string; clean: boolean }[] = [];
  const { reports: logs, report } = recordingReport();
  const server = await InputServer.start({
    path,
    mode: 0o660,
    report,
    onMessage: (m) => void messages.push({ type: m.type, payload: m.payload.slice() }),
    onSessionEnd: (reason, clean) => ends.push({ reason, clean }),
    onFailure: (e) => {
      throw e;
    },
    ...over,
  });
  defer(() => server.stop());
  return { server, messages, ends, logs };
}

const NO_DROPS = { queue_full: 0, no_client: 0, write_deadline: 0, latency_budget: 0, client_stuck: 0, client_gone: 0, shutdown: 0 };

/** How far a stamp of the process's wall clock may sit from Date.now() read around it, on a busy machine. */
const WALL_CLOCK_SLACK_MS = 50;

const MONO: AudioConfig = { sampleRate: 48000, channels: 1, frameSize: 960 };

function newClient(path: string, over: Partial<InputClientOptions> = {}): InputClient & { logs: Reported[] } {
  const { reports: logs, report } = recordingReport();
  const client = new InputClient({
    path,
    report,
    config: MONO,
    heartbeatMs: 5,
    ackTimeoutMs: 10_000,
    connectTimeoutMs: 10_000,
    queueFrames: 64,
    dropPolicy: "oldest",
    lossless: true,
    writeDeadlineMs: 0,
    stuckFrames: 50,
    ...over,
  });
  defer(() => client.stop());
  return Object.assign(client, { logs });
}

/** Sends frames `from` .. `to - 1` (testPayload) losslessly: waits for queue room, never drops. */
async function sendFrames(client: InputClient, from: number, to: number): Promise<void> {
  for (let i = from; i < to; i++) {
    if (!client.hasSpace()) await client.waitForSpace();
    client.sendFrame(testPayload(i));
    // Let timers run now and then, so Heartbeats fall between frames.
    if (i % 500 === 0) await Bun.sleep(1);
  }
}

/** Checks one session's messages: Config first, `frames` in order, Heartbeats anywhere, Stop last. */
function checkSession(messages: Recorded[], config: AudioConfig, firstFrame: number, frames: number): { heartbeats: number } {
  expect(messages.length).toBeGreaterThan(1);
  expect(messages[0].type).toBe(MessageType.Config);
  expect(decodeConfigPayload(messages[0].payload)).toEqual(config);
  expect(messages[messages.length - 1].type).toBe(MessageType.Stop);
  expect(messages[messages.length - 1].payload.length).toBe(0);
  let next = firstFrame;
  let heartbeats = 0;
  let mismatch = -1;
  for (const m of messages.slice(1, -1)) {
    if (m.type === MessageType.Heartbeat) {
      expect(m.payload.length).toBe(0);
      heartbeats++;
      continue;
    }
    expect(m.type).toBe(MessageType.OpusFrame);
    if (mismatch < 0 && !sameBytes(m.payload, testPayload(next))) mismatch = next;
    next++;
  }
  expect(mismatch).toBe(-1);
  expect(next - firstFrame).toBe(frames);
  return { heartbeats };
}

/** Splits recorded messages into sessions, each starting with a Config. */
function sessions(messages: Recorded[]): Recorded[][] {
  const out: Recorded[][] = [];
  for (const m of messages) {
    if (m.type === MessageType.Config) out.push([]);
    out[out.length - 1]?.push(m);
  }
  return out;
}

describe("input channel in-process", () => {
  test("a session: Config, 10k frames byte-identical in order, Heartbeats counted both sides, Stop last", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    const { server, messages, ends } = await startServer(sock);
    const client = newClient(sock, { heartbeatMs: 5 });
    const running = client.start();
    await client.waitForConnection();
    const N = 10_000;
    await sendFrames(client, 0, N);
    // Keep the session open until at least a few Heartbeats went out.
    await until(() => client.controlDelivered >= 3, "heartbeats written");
    await client.finish();
    await running;
    await until(() => ends.length === 1, "session end");

    // Lossless: nothing dropped (a Heartbeat must never push a frame out of a full queue).
    expect(client.stats.dropped).toEqual(NO_DROPS);
    const { heartbeats } = checkSession(messages, MONO, 0, N);
    expect(heartbeats).toBeGreaterThanOrEqual(3);
    expect(ends).toEqual([{ reason: "stop", clean: true }]);
    expect(server.sessions).toBe(1);
    expect(server.cleanSessions).toBe(1);
    expect(server.protocolErrors).toBe(0);
    // A session the client ended with Stop is not a dropped connection.
    expect(server.readings().connectionDrops).toBe(0);
    expect(server.framesReceived).toBe(N);
    expect(server.config).toEqual(MONO);
    // Every Heartbeat the client wrote reached the server: controlDelivered = Heartbeats + the Stop.
    expect(server.heartbeats).toBe(heartbeats);
    expect(client.controlDelivered).toBe(heartbeats + 1);
    // Lossless: nothing dropped, every frame delivered (Heartbeats must never push frames out).
    expect(client.stats.droppedTotal).toBe(0);
    expect(client.stats.delivered - client.controlDelivered).toBe(N);
    expect(client.acks).toBeGreaterThanOrEqual(1);
    expect(client.connects).toBe(1);
    expect(client.ackTimeouts).toBe(0);
  });

  test("Stop after a full queue does not push out the last frames", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    const { server, messages, ends } = await startServer(sock);
    // Heartbeats out of the way: only the Stop competes with frames for queue room.
    const client = newClient(sock, { heartbeatMs: 60_000, queueFrames: 8 });
    const running = client.start();
    await client.waitForConnection();
    const N = 2000;
    // Fill the queue to the brim without yielding after the last frame, then finish at once.
    for (let i = 0; i < N; i++) {
      if (!client.hasSpace()) await client.waitForSpace();
      client.sendFrame(testPayload(i));
    }
    expect(client.readings().queueDepth).toBeGreaterThan(0);
    await client.finish();
    await running;
    await until(() => ends.length === 1, "session end");
    expect(client.stats.dropped).toEqual(NO_DROPS);
    checkSession(messages, MONO, 0, N);
    expect(server.framesReceived).toBe(N);
    expect(client.stats.droppedTotal).toBe(0);
  });

  test("no Heartbeat follows the Stop, however long the Stop waits to be written", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    // A server that reads nothing until told to, and never acks.
    const chunks: Uint8Array[] = [];
    let peer: Socket<undefined> | undefined;
    const listener = Bun.listen({
      unix: sock,
      socket: {
        binaryType: "uint8array",
        open: (socket) => {
          socket.pause();
          peer = socket;
        },
        data: (_socket, chunk) => void chunks.push(chunk.slice()),
        drain: () => {},
        close: () => {},
        error: () => {},
      },
    });
    defer(() => listener.stop(true));
    const client = newClient(sock, { heartbeatMs: 5, ackTimeoutMs: 60_000, socketBuffers: { sendBytes: 8192, receiveBytes: 8192 } });
    const running = client.start();
    await client.waitForConnection();
    // Frames until the kernel takes no more: the writer is blocked, its queue far from full.
    let i = 0;
    while (client.stats.shortWrites === 0) {
      client.sendFrame(testPayload(i++));
      await new Promise((resolve) => setImmediate(resolve));
      if (i > 10_000) throw new Error("the socket never filled");
    }
    expect(client.hasSpace()).toBe(true);

    const finished = client.finish(); // the Stop is queued behind the frames
    const submitted = client.stats.submitted;
    // Twenty Heartbeat periods (timers run in deadline order: the client's ticks run meanwhile).
    await Bun.sleep(100);
    expect(client.stats.submitted).toBe(submitted);

    peer!.resume();
    await finished;
    await running;
    await until(() => chunks.reduce((n, c) => n + c.length, 0) === client.stats.deliveredBytes + 29, "everything read");
    const types = parseWire(concatBytes(chunks), INPUT_MAGIC).messages.map((m) => m.type);
    expect(types.filter((t) => t === MessageType.OpusFrame).length).toBe(i);
    expect(types.indexOf(MessageType.Stop)).toBe(types.length - 1);
    expect(client.stats.dropped).toEqual(NO_DROPS);
  });

  test("both ends apply their socket buffers, report to their observers, and the client's queue resizes", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    const { server } = await startServer(sock, { socketBuffers: { sendBytes: 40 * 1024, receiveBytes: 72 * 1024 } });
    const serverSeen = recordingObserver();
    server.observe(serverSeen.observer);
    const client = newClient(sock, { heartbeatMs: 60_000, socketBuffers: { sendBytes: 48 * 1024, receiveBytes: 56 * 1024 } });
    const clientSeen = recordingObserver();
    client.observe(clientSeen.observer);
    const running = client.start();
    await client.waitForConnection();
    expect(client.connected).toBe(true);
    // Connected already: it resolves at once.
    expect(await within(client.waitForConnection().then(() => true), 5000, false)).toBe(true);
    await until(() => server.connected, "the server accepted");
    expect(client.readings().socketBuffers.kernel).toEqual({ sendBytes: kernelBufferBytes(48 * 1024, "send"), receiveBytes: kernelBufferBytes(56 * 1024, "receive") });
    expect(server.readings().socketBuffers.kernel).toEqual({ sendBytes: kernelBufferBytes(40 * 1024, "send"), receiveBytes: kernelBufferBytes(72 * 1024, "receive") });
    client.resizeQueue(128);
    expect(client.readings().queueCapacity).toBe(128);

    await client.finish();
    await running;
    await until(() => server.readings().counts.clean_sessions === 1, "the session end");
    expect(clientSeen.events.filter((e) => !e.startsWith("written") && e !== "round trip")).toEqual([`connected ${sock}`, "disconnected stopped"]);
    expect(serverSeen.events.filter((e) => !e.startsWith("written"))).toEqual([`connected ${sock}`, "disconnected Stop"]);
  });

  test("a Stop right after connecting: the Config's Ack is read before the connection closes, and gives the Config's round trip", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    const { server, ends } = await startServer(sock);
    const trips: MessageType[] = [];
    const client = newClient(sock, { heartbeatMs: 60_000, onRoundTrip: (_ms, type) => trips.push(type) });
    const running = client.start();
    await client.waitForConnection();
    // The Config is written, its Ack not yet read: the Stop follows at once (a source with nothing in it).
    await client.finish();
    await running;
    await until(() => ends.length === 1, "the session's end");
    expect(server.ackStats.delivered).toBe(1);
    expect(client.acks).toBe(1);
    expect(trips).toEqual([MessageType.Config]);
    expect(client.ackTimeouts).toBe(0);
  });

  test("the sink file's placement is in a receiver's readings where its owner gives one, and absent where it gives none", async () => {
    const { path } = socketDir(defer);
    const { server: withFile } = await startServer(path("file.sock"), { sinkFile: () => "moved" });
    const { server: withoutFile } = await startServer(path("none.sock"));
    expect(withFile.readings().sinkFile).toBe("moved");
    expect("sinkFile" in withoutFile.readings()).toBe(false);
  });

  test("a message the server's owner cannot take (the sink failed) is reported through onFailure", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    const failures: string[] = [];
    await startServer(sock, {
      onMessage: (m) => {
        if (m.type === MessageType.OpusFrame) throw new Error("cannot write to sink in.wire: ENOSPC");
      },
      onFailure: (e) => failures.push(e.message),
    });
    const client = newClient(sock, { heartbeatMs: 60_000 });
    void client.start();
    await client.waitForConnection();
    client.sendFrame(testPayload(0));
    await until(() => failures.length === 1, "the failure");
    expect(failures).toEqual(["cannot write to sink in.wire: ENOSPC"]);
  });

  test("a sink that holds up the reading for several frames of one read and then fails is reported through onFailure once", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    let fail!: (e: Error) => void;
    const held = new Promise<void>((_, reject) => (fail = reject));
    const failures: string[] = [];
    let frames = 0;
    await startServer(sock, {
      // Every frame returns the one promise of the sink's hold, as a sink whose reader is behind does.
      onMessage: (m) => (m.type === MessageType.OpusFrame ? (frames++, held) : undefined),
      onFailure: (e) => failures.push(e.message),
    });
    const client = await connectClient(defer, sock, { magic: INPUT_MAGIC });
    client.socket.write(concatBytes([0, 1, 2].map((i) => encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, testPayload(i)))));
    await until(() => frames === 3, "the read's three frames given to the sink");
    fail(new Error("cannot write to sink stdout: EPIPE"));
    await until(() => failures.length > 0, "the failure");
    await Bun.sleep(50);
    expect(failures).toEqual(["cannot write to sink stdout: EPIPE"]);
  });

  test("Ack round trip: every Config/Heartbeat is acked; a round trip for each Ack that answers the one message outstanding", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    const { server } = await startServer(sock);
    const trips: { ms: number; type: number }[] = [];
    const client = newClient(sock, { heartbeatMs: 10, onRoundTrip: (ms, type) => trips.push({ ms, type }) });
    void client.start();
    await client.waitForConnection();
    // A quiet moment when every Heartbeat written has been answered.
    await until(
      () => server.heartbeats >= 5 && client.controlDelivered === server.heartbeats && client.acks === server.heartbeats + 1,
      "5 heartbeats acked",
    );
    const acks = client.acks;
    const heartbeats = server.heartbeats;
    expect(acks).toBe(heartbeats + 1);
    // An Ack that came after the next Heartbeat went out is ambiguous: no round trip from it.
    expect(trips.length).toBeGreaterThan(0);
    expect(trips.length).toBeLessThanOrEqual(acks);
    expect(trips.filter((t) => t.type === MessageType.Config).length).toBeLessThanOrEqual(1);
    expect(trips.slice(1).every((t) => t.type === MessageType.Heartbeat)).toBe(true);
    expect(trips.every((t) => t.ms >= 0 && Number.isFinite(t.ms))).toBe(true);
    expect(client.otherMessages).toBe(0);
    expect(server.ackStats.delivered).toBeGreaterThanOrEqual(acks);
    expect(client.ackTimeouts).toBe(0);
  });

  test("lastFrameUnixMs marks the last OpusFrame written: Heartbeats do not move it", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    const { server } = await startServer(sock);
    const client = newClient(sock, { heartbeatMs: 10 });
    void client.start();
    await client.waitForConnection();
    // Heartbeats only: no frame yet.
    await until(() => server.heartbeats >= 2, "heartbeats before any frame");
    expect(client.lastFrameUnixMs).toBe(0);
    const before = Date.now();
    await sendFrames(client, 0, 20);
    await until(() => server.framesReceived === 20, "frames received");
    const last = client.lastFrameUnixMs;
    // A wall-clock time of then: the process's clock pairs Date.now() (whole ms) with the
    // monotonic one, to within a ms and, on a busy machine, the width of a wide pair.
    expect(last).toBeGreaterThan(before - WALL_CLOCK_SLACK_MS);
    expect(last).toBeLessThan(Date.now() + WALL_CLOCK_SLACK_MS);
    // More Heartbeats, written later than the frames: the mark stays on the last frame.
    const heartbeats = server.heartbeats;
    await until(() => server.heartbeats >= heartbeats + 3 && client.stats.lastDeliveredUnixMs > last, "later heartbeats");
    expect(client.lastFrameUnixMs).toBe(last);
  });

  test("a server that never acks but keeps the client's socket full of other messages: still given up after ack-timeout (bytes waiting unread are no Ack)", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    // Heartbeats, not Acks, from a process of its own whose send buffer (which bounds what waits in
    // the client's socket) is set far above what the client takes in one read, so that a backlog
    // can build up in it.
    const heartbeat = encodeMessage(INPUT_MAGIC, MessageType.Heartbeat, new Uint8Array(0));
    const flooder = start(["python3", "-c", String.raw`
import socket, sys
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(sys.argv[1]); server.listen(1)
sys.stderr.write("listening\n"); sys.stderr.flush()
conn, _ = server.accept()
# SO_SNDBUFFORCE (32) passes the system's bound, for root; SO_SNDBUF (capped at wmem_max) otherwise.
try: conn.setsockopt(socket.SOL_SOCKET, 32, 32 << 20)
except OSError: conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 << 20)
sys.stderr.write("sndbuf %d\n" % conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)); sys.stderr.flush()
flood = bytes.fromhex(sys.argv[2]) * 4096
try:
    while True: conn.sendall(flood)
except OSError: pass
`, sock, Buffer.from(heartbeat).toString("hex")]);
    defer(() => flooder.kill());
    await flooder.waitForStderr("listening");
    // A second to answer: time enough for the flood to be under way on a busy machine.
    const disconnects: string[] = [];
    const client = newClient(sock, { heartbeatMs: 10, ackTimeoutMs: 1000, onDisconnect: (r) => disconnects.push(r) });
    void client.start();
    await flooder.waitForStderr("sndbuf");
    // The client's process busy four fifths of the time, as on a loaded device: it reads slower
    // than the flooder writes, so every look finds bytes unread, not only the first.
    const busy = setInterval(() => {
      const until = performance.now() + 4;
      while (performance.now() < until);
    }, 1);
    defer(() => clearInterval(busy));
    await until(() => client.ackTimeouts >= 1, "the server given up for its missing Acks", 10_000);
    expect(disconnects[0]).toBe("no Ack within 1000 ms");
    expect(client.acks).toBe(0);
    client.stop();
  });

  test("a server that never acks: the client gives up after ack-timeout, reconnects and sends a fresh Config", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    const silent = silentServer(sock);
    defer(() => silent.stop());
    const disconnects: string[] = [];
    const client = newClient(sock, { heartbeatMs: 10, ackTimeoutMs: 100, onDisconnect: (r) => disconnects.push(r) });
    void client.start();
    await until(() => silent.connections >= 2 && silent.bytesOf(1).length >= 29, "a second connection with its Config");

    expect(client.ackTimeouts).toBeGreaterThanOrEqual(1);
    expect(client.connects).toBeGreaterThanOrEqual(2);
    expect(client.acks).toBe(0);
    expect(disconnects[0]).toBe("no Ack within 100 ms");
    expect(client.logs.some((l) => l.message === "dropping connection" && l.fields?.reason === "no Ack within 100 ms")).toBe(true);
    for (const n of [0, 1]) {
      const wire = parseWire(silent.bytesOf(n), INPUT_MAGIC);
      expect(wire.error).toBeUndefined();
      expect(wire.messages[0].type).toBe(MessageType.Config);
      expect(decodeConfigPayload(wire.messages[0].payload)).toEqual(MONO);
      // After the Config only Heartbeats: no frames were sent.
      expect(wire.messages.slice(1).every((m) => m.type === MessageType.Heartbeat)).toBe(true);
    }
    // The first connection carried Heartbeats while waiting (ack timeout 100 ms, heartbeat 10 ms).
    expect(parseWire(silent.bytesOf(0), INPUT_MAGIC).messages.length).toBeGreaterThan(1);
  });

  test("an Ack overdue is found when it is overdue, not at the next Heartbeat: a minute between Heartbeats, 100 ms to answer", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    const silent = silentServer(sock);
    defer(() => silent.stop());
    const disconnects: string[] = [];
    const client = newClient(sock, { heartbeatMs: 60_000, ackTimeoutMs: 100, onDisconnect: (r) => disconnects.push(r) });
    defer(() => client.stop());
    void client.start();
    // Without a deadline of its own, the Config's missing Ack would be noticed a minute later.
    await until(() => client.ackTimeouts === 1, "the Config's Ack found overdue", 5000);
    expect(disconnects[0]).toBe("no Ack within 100 ms");
    // A fresh connection starts its own wait: its Config is sent again, not taken as overdue at once.
    await until(() => silent.connections >= 2 && silent.bytesOf(1).length >= 29, "a second connection with its Config", 5000);
    expect(parseWire(silent.bytesOf(1), INPUT_MAGIC).messages.map((m) => m.type)).toEqual([MessageType.Config]);
    // ... and is judged by that Config's own deadline.
    await until(() => client.ackTimeouts === 2, "the second Config's Ack found overdue", 5000);
  });

  test("a server that skips every third Heartbeat's Ack keeps its one connection; round trips are not inflated by the skips", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    const server = ackSkippingServer(sock);
    defer(() => server.stop());
    const trips: number[] = [];
    const client = newClient(sock, { heartbeatMs: 100, ackTimeoutMs: 700, onRoundTrip: (ms) => trips.push(ms) });
    void client.start();
    await client.waitForConnection();
    // 30 Heartbeats, 10 Acks skipped. Matched in order, each skip would shift every later match
    // by a Heartbeat interval, until the oldest unmatched one looked 700 ms old.
    await until(() => server.heartbeats >= 30, "30 heartbeats", 30_000);
    expect(server.connections).toBe(1);
    expect(client.connects).toBe(1);
    expect(client.ackTimeouts).toBe(0);
    expect(client.acks).toBe(server.acks);
    // Every round trip measured is one Heartbeat's own: well under the interval between them.
    expect(trips.length).toBeGreaterThan(5);
    expect(trips.filter((ms) => ms >= 100)).toEqual([]);
  });

  test("a server that answers with bad framing: the client counts it, drops that connection and reconnects; other types are tolerated", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    let connections = 0;
    const listener = Bun.listen({
      unix: sock,
      socket: {
        binaryType: "uint8array",
        open: (socket) => {
          connections++;
          // First connection: a Heartbeat (not an Ack: tolerated), then a message with the output channel's magic.
          if (connections === 1) {
            socket.write(encodeMessage(INPUT_MAGIC, MessageType.Heartbeat));
            socket.write(encodeMessage(OUTPUT_MAGIC, MessageType.Ack));
          } else {
            socket.write(encodeMessage(INPUT_MAGIC, MessageType.Ack)); // the Config's Ack
          }
        },
        data: () => {},
        drain: () => {},
        close: () => {},
        error: () => {},
      },
    });
    defer(() => listener.stop(true));
    const disconnects: string[] = [];
    const client = newClient(sock, { heartbeatMs: 1000, ackTimeoutMs: 10_000, onDisconnect: (r) => disconnects.push(r) });
    void client.start();
    await until(() => client.acks === 1, "the second connection's Ack");

    expect(client.protocolErrors).toBe(1);
    expect(client.otherMessages).toBe(1);
    // Counted where the stopped line, /healthz and the monitor read it, as the output client's.
    expect(client.readings().counts.other_messages).toBe(1);
    expect(connections).toBe(2);
    expect(client.connects).toBe(2);
    expect(client.connectionDrops).toBe(1);
    expect(disconnects[0]).toStartWith("protocol error: BadMagic: 0x4a4b4f55");
    expect(client.connected).toBe(true);
  });

  test("a server that closes inside an Ack: the next connection's Acks are read afresh, not joined to the bytes left of it", async () => {
    const sock = socketDir(defer).path("in.sock");
    const ack = encodeMessage(INPUT_MAGIC, MessageType.Ack);
    // First connection: the Config's Ack cut off after its magic and type, then a close. Later: an Ack for each read.
    const server = fakeServer(sock, () => {}, (socket, n) => {
      if (n > 0) socket.write(ack);
      else {
        socket.write(ack.subarray(0, 5));
        socket.end();
      }
    });
    defer(() => server.stop());
    const disconnects: string[] = [];
    const client = newClient(sock, { heartbeatMs: 10, onDisconnect: (r) => disconnects.push(r) });
    void client.start();
    await until(() => client.acks >= 3, "Acks on a later connection");

    expect(client.connects).toBe(2);
    expect(disconnects).toEqual(["server closed"]);
    expect(client.protocolErrors).toBe(0);
    expect(client.otherMessages).toBe(0);
    expect(client.connected).toBe(true);
    expect(server.connections.length).toBe(2);
  });

  test("a server that answers with anything but an Ack (a Heartbeat, an OpusFrame, a Config, a Stop) is gone after the Ack timeout: none of them counts as an Ack", async () => {
    const sock = socketDir(defer).path("in.sock");
    const answers = concatBytes([
      encodeMessage(INPUT_MAGIC, MessageType.Heartbeat),
      encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, new Uint8Array([1, 2, 3])),
      encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(MONO)),
      encodeMessage(INPUT_MAGIC, MessageType.Stop),
    ]);
    // Each read (a Config, Heartbeats) is answered with every type but an Ack.
    const server = fakeServer(sock, () => {}, (socket) => void socket.write(answers));
    defer(() => server.stop());
    const disconnects: string[] = [];
    const client = newClient(sock, { heartbeatMs: 10, ackTimeoutMs: 200, onDisconnect: (r) => disconnects.push(r) });
    void client.start();
    await until(() => client.ackTimeouts === 1 || client.acks > 0, "the Ack timeout");

    expect(disconnects[0]).toBe("no Ack within 200 ms");
    expect(client.acks).toBe(0);
    expect(client.otherMessages).toBeGreaterThanOrEqual(4);
    expect(client.protocolErrors).toBe(0);
  });

  test("two clients one after another: the server keeps serving, both sessions recorded", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    const { server, messages, ends } = await startServer(sock);
    const stereo: AudioConfig = { sampleRate: 16000, channels: 2, frameSize: 320 };
    for (const [config, from, to] of [
      [MONO, 0, 300],
      [stereo, 300, 700],
    ] as const) {
      const client = newClient(sock, { config, heartbeatMs: 10 });
      const running = client.start();
      await client.waitForConnection();
      await sendFrames(client, from, to);
      await client.finish();
      await running;
      await until(() => ends.length === (from === 0 ? 1 : 2), "session end");
    }
    const [first, second] = sessions(messages);
    expect(sessions(messages).length).toBe(2);
    checkSession(first, MONO, 0, 300);
    checkSession(second, stereo, 300, 400);
    expect(ends).toEqual([
      { reason: "stop", clean: true },
      { reason: "stop", clean: true },
    ]);
    expect(server.sessions).toBe(2);
    expect(server.cleanSessions).toBe(2);
    expect(server.framesReceived).toBe(700);
    expect(server.config).toEqual(stereo);
  });

  test("a Config whose payload is not 12 bytes: disconnected as a framing violation, never acked or taken", async () => {
    const sock = socketDir(defer).path("in.sock");
    const { server, messages } = await startServer(sock);
    let closed = false;
    let answered = 0;
    const raw = await Bun.connect({
      unix: sock,
      socket: { data: (_s, chunk) => void (answered += chunk.length), close: () => void (closed = true), drain: () => {}, error: () => {} },
    });
    defer(() => raw.terminate());
    const short = encodeMessage(INPUT_MAGIC, MessageType.Config, new Uint8Array(5), 1n);
    expect(raw.write(short)).toBe(short.length);
    await until(() => closed, "the client disconnected");
    const { acks_sent, acks_dropped } = server.readings().counts;
    expect({ protocolErrors: server.protocolErrors, config: server.config, answered, messages: messages.length, acks_sent, acks_dropped }).toEqual({
      protocolErrors: 1,
      config: undefined,
      answered: 0,
      messages: 0,
      acks_sent: 0,
      acks_dropped: 0,
    });
  });

  test("garbage after a valid Config: disconnected with a logged reason, next client served", async () => {
    const { path } = socketDir(defer);
    const sock = path("in.sock");
    const { server, messages, ends, logs } = await startServer(sock);

    let closed = false;
    let answered = 0;
    const raw = await Bun.connect({
      unix: sock,
      socket: {
        binaryType: "uint8array",
        data: (_s, chunk) => void (answered += chunk.length),
        close: () => void (closed = true),
        drain: () => {},
        error: () => {},
      },
    });
    defer(() => raw.terminate());
    const config = encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(MONO), 1n);
    // A whole OpusFrame of the wrong channel: bad magic.
    const garbage = encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, new Uint8Array([1, 2, 3]), 2n);
    expect(raw.write(config)).toBe(config.length);
    await until(() => server.config !== undefined, "config received");
    expect(raw.write(garbage)).toBe(garbage.length);
    await until(() => closed, "garbage client disconnected");

    expect(server.protocolErrors).toBe(1);
    const warn = logs.find((l) => l.message === "framing violation from client; disconnecting");
    expect(warn?.level).toBe("warn");
    expect(String(warn?.fields?.error)).toContain("BadMagic");
    expect(ends.length).toBe(1);
    expect(ends[0].clean).toBe(false);
    expect(ends[0].reason).toContain("protocol error: BadMagic");
    expect(messages.map((m) => m.type)).toEqual([MessageType.Config]);
    expect(server.framesReceived).toBe(0);

    // The server keeps serving: a proper client has a clean session.
    const client = newClient(sock, { heartbeatMs: 10 });
    const running = client.start();
    await client.waitForConnection();
    await sendFrames(client, 0, 50);
    await client.finish();
    await running;
    await until(() => ends.length === 2, "second session end");
    checkSession(messages.slice(1), MONO, 0, 50);
    expect(ends[1]).toEqual({ reason: "stop", clean: true });
    expect(server.sessions).toBe(2);
    expect(server.cleanSessions).toBe(1);
    expect(server.protocolErrors).toBe(1);
  });
});

describe("Acks read together with the Stop", () => {
  test("Config and Heartbeat in the same write as the Stop are still acked before the session ends", async () => {
    const path = socketDir(defer, "in-").path("in.sock");
    const { server, ends } = await startServer(path);
    const client = await connectClient(defer, path, { magic: INPUT_MAGIC });
    const empty = new Uint8Array(0);
    client.socket.write(
      concatBytes([
        encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(MONO)),
        encodeMessage(INPUT_MAGIC, MessageType.Heartbeat, empty),
        encodeMessage(INPUT_MAGIC, MessageType.Heartbeat, empty),
        encodeMessage(INPUT_MAGIC, MessageType.Stop, empty),
      ]),
    );
    await within(client.closed, 5000, undefined);
    expect(ends).toEqual([{ reason: "stop", clean: true }]);
    expect(client.messages.map((m) => m.type)).toEqual([MessageType.Ack, MessageType.Ack, MessageType.Ack]);
    // Nothing came after the Stop: session_ended is there from the start, at 0.
    expect(server.readings().dropped).toEqual({ session_ended: 0 });
    expect([server.ackStats.delivered, server.ackStats.droppedTotal]).toEqual([3, 0]);
  });
});


describe("what a client sends once its session has ended is counted, never read into the next", () => {
  const empty = new Uint8Array(0);
  const config = () => encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(MONO));
  const opus = (i: number) => encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, testPayload(i));
  const stop = () => encodeMessage(INPUT_MAGIC, MessageType.Stop, empty);
  const heartbeat = () => encodeMessage(INPUT_MAGIC, MessageType.Heartbeat, empty);
  /** A client that goes on writing after the server's end (as a Go client can): Bun's own would close at it. */
  async function halfOpenClient(path: string): Promise<Socket<undefined>> {
    const socket = await Bun.connect({ unix: path, allowHalfOpen: true, socket: { data() {}, end() {}, error() {} } });
    defer(() => socket.terminate());
    return socket;
  }
  /** A server at a fresh path, and a halfOpenClient whose session (a Config, an OpusFrame, a Stop) it has ended: the client is let go. */
  async function clientLetGo() {
    const path = socketDir(defer, "in-").path("in.sock");
    const { server, ends } = await startServer(path);
    const client = await halfOpenClient(path);
    const session = concatBytes([config(), opus(0), stop()]);
    client.write(session);
    await until(() => ends.length === 1, "the session's end");
    return { server, client, session };
  }

  test("OpusFrames after a Stop in the same write: dropped as session_ended, not lost uncounted", async () => {
    const path = socketDir(defer, "in-").path("in.sock");
    const { server, messages, ends } = await startServer(path);
    const client = await connectClient(defer, path, { magic: INPUT_MAGIC });
    // After the Stop, a Config and a Stop too: only the OpusFrames are counted.
    client.socket.write(concatBytes([config(), opus(0), stop(), opus(1), config(), opus(2), stop()]));
    await until(() => ends.length === 1, "the session's end");
    await until(() => server.readings().dropped.session_ended === 2, "the frames after the Stop counted");
    await Bun.sleep(20);
    expect(server.readings().dropped.session_ended).toBe(2);
    expect(ends).toEqual([{ reason: "stop", clean: true }]);
    // Received: the session's one, taken, and the two after it, dropped.
    expect(server.readings().frames).toBe(3);
    expect(messages.map((m) => m.type)).toEqual([MessageType.Config, MessageType.OpusFrame, MessageType.Stop]);
  });

  test("OpusFrames written after the Stop, while the server lets the client go: dropped as session_ended", async () => {
    const { server, client, session } = await clientLetGo();
    const late = concatBytes([opus(1), opus(2), heartbeat(), opus(3)]);
    client.write(late);
    await until(() => server.readings().dropped.session_ended === 3, "the late frames counted");
    expect(server.readings().frames).toBe(4);
    expect(server.heartbeats).toBe(0);
    // Late bytes are received bytes too.
    expect(server.readings().bytes).toBe(session.length + late.length);
  });

  test("a replaced client that goes on sending: its frames are counted dropped, and the new session is whole", async () => {
    const path = socketDir(defer, "in-").path("in.sock");
    const { server, messages } = await startServer(path);
    const first = await halfOpenClient(path);
    first.write(concatBytes([config(), opus(0)]));
    await until(() => server.readings().frames === 1, "the first client's frame");
    const second = await connectClient(defer, path, { magic: INPUT_MAGIC });
    await until(() => server.readings().connects === 2, "the second client");
    // Half a frame, then the rest: the first client's parser keeps its own state.
    const late = concatBytes([opus(1), opus(2)]);
    first.write(late.subarray(0, 30));
    second.socket.write(concatBytes([config(), opus(10), opus(11), stop()]));
    await Bun.sleep(50);
    first.write(late.subarray(30));
    await until(() => server.readings().dropped.session_ended === 2, "the replaced client's frames counted");
    await until(() => server.cleanSessions === 1, "the second session's Stop");
    expect(server.readings().frames).toBe(5);
    expect(server.protocolErrors).toBe(0);
    const frames = messages.filter((m) => m.type === MessageType.OpusFrame).map((m) => m.payload);
    expect(frames.map((p, i) => sameBytes(p, testPayload([0, 10, 11][i]!)))).toEqual([true, true, true]);
  });

  test("a sink that fails inside a read: the rest of the read goes to it, and what the client sends while let go too (its to count, as received after its failure), nothing throws", async () => {
    const path = socketDir(defer, "in-").path("in.sock");
    const failures: Error[] = [];
    let taken = 0;
    const given: MessageType[] = [];
    const { server } = await startServer(path, {
      onMessage: (m) => {
        given.push(m.type);
        if (m.type === MessageType.OpusFrame && ++taken === 3) throw new Error("ENOSPC");
      },
      onFailure: (e) => {
        failures.push(e);
        // As the role does: the server stops, letting the client go.
        void server.stop();
      },
    });
    const client = await halfOpenClient(path);
    client.write(concatBytes([config(), opus(0), opus(1), opus(2), opus(3), heartbeat(), opus(4)]));
    await until(() => failures.length === 1, "the sink's failure");
    // The failed sink counts the rest of the read's frames; the Heartbeat after the failure is not acted on.
    expect(given).toEqual([MessageType.Config, ...Array(5).fill(MessageType.OpusFrame)]);
    expect(server.readings().dropped.session_ended).toBe(0);
    expect(server.heartbeats).toBe(0);
    client.write(concatBytes([opus(5), opus(6)]));
    // Received after the sink failed: the sink's to count (sink_write_failed), where they were counted session_ended.
    await until(() => given.length === 8, "the frames sent while let go, given to the failed sink");
    expect(server.readings().dropped.session_ended).toBe(0);
    expect(failures.map((e) => e.message)).toEqual(["ENOSPC"]);
    // The five the sink was given (the third failed it), and the two after.
    expect(server.readings().frames).toBe(7);
  });

  test("a client let go that breaks the framing is read no more: a whole frame it sends after is not taken up afresh (no resync)", async () => {
    const { server, client, session } = await clientLetGo();
    // The other channel's magic: broken framing.
    const broken = encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, testPayload(1));
    client.write(broken);
    await until(() => server.readings().bytes === session.length + broken.length, "the broken message read");
    const whole = opus(2);
    client.write(whole);
    await until(() => server.readings().bytes === session.length + broken.length + whole.length, "the frame after it read");
    expect(server.readings().frames).toBe(1);
    expect(server.readings().dropped.session_ended).toBe(0);
  });

  test("a sink that failed outside a read (its flush at a session's end): what the client sends while let go is given to it to count, not counted session_ended", async () => {
    const path = socketDir(defer, "in-").path("in.sock");
    const given: MessageType[] = [];
    const { server, ends } = await startServer(path, { onMessage: (m) => void given.push(m.type) });
    const client = await halfOpenClient(path);
    client.write(concatBytes([config(), opus(0), stop()]));
    await until(() => ends.length === 1, "the session's end");
    // As the role does when the sink's flush at the session's end throws.
    server.sinkFailed();
    client.write(concatBytes([opus(1), heartbeat(), opus(2)]));
    await until(() => server.readings().frames === 3, "the frames sent while let go, received");
    expect(given).toEqual([MessageType.Config, MessageType.OpusFrame, MessageType.Stop, MessageType.OpusFrame, MessageType.OpusFrame]);
    expect(server.readings().dropped.session_ended).toBe(0);
  });

  test("a Config naming audio Opus does not have is taken, acked and warned of; an Opus one is not warned of", async () => {
    const path = socketDir(defer, "in-").path("in.sock");
    const { server, logs } = await startServer(path);
    const client = await connectClient(defer, path, { magic: INPUT_MAGIC });
    const odd = { sampleRate: 0, channels: 7, frameSize: 5 };
    client.socket.write(concatBytes([config(), encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(odd)), stop()]));
    await until(() => server.cleanSessions === 1, "the session's end");
    expect(server.config).toEqual(odd);
    const warned = logs.filter((l) => l.level === "warn" && l.message.startsWith("config names audio Opus does not have"));
    expect(warned.map((l) => l.fields)).toEqual([odd]);
    await until(() => client.messages.length === 2, "both Acks");
  });

  test("a client that reads gets an Ack for each of 1000 Heartbeats sent in one write: the queue of 64 drops only what it leaves unread", async () => {
    const path = socketDir(defer, "in-").path("in.sock");
    const { server } = await startServer(path);
    const client = await connectClient(defer, path, { magic: INPUT_MAGIC });
    const HEARTBEATS = 1000;
    const beat = heartbeat();
    // 17 KiB: the socket buffers take it all at once, and every Ack with it.
    client.socket.write(concatBytes(Array.from({ length: HEARTBEATS }, () => beat)));
    await until(() => server.heartbeats === HEARTBEATS && client.messages.length === HEARTBEATS, "an Ack for every Heartbeat");
    const counts = server.readings().counts;
    expect({ sent: counts.acks_sent, dropped: counts.acks_dropped }).toEqual({ sent: HEARTBEATS, dropped: 0 });
    expect(client.messages.every((m) => m.type === MessageType.Ack)).toBe(true);
  });

  test("Acks a client leaves unread beyond the queue are counted dropped: sent + dropped = Config + Heartbeats", async () => {
    const path = socketDir(defer, "in-").path("in.sock");
    const { server, ends } = await startServer(path);
    const client = await connectClient(defer, path, { magic: INPUT_MAGIC, paused: true });
    const HEARTBEATS = 40_000;
    const beat = heartbeat();
    const burst = concatBytes([config(), ...Array.from({ length: HEARTBEATS }, () => beat), stop()]);
    expect(await writeInPieces(client.socket, burst, 65536)).toBe(true);
    await until(() => ends.length === 1, "the session's end", 10_000);
    const counts = server.readings().counts;
    expect(server.heartbeats).toBe(HEARTBEATS);
    expect(counts.acks_dropped!).toBeGreaterThan(0);
    expect(counts.acks_sent! + counts.acks_dropped!).toBe(HEARTBEATS + 1);
  });

  test("with the Ack queue full, the oldest Ack is dropped: the Ack of the latest Heartbeat reaches a client that reads again", async () => {
    const path = socketDir(defer, "in-").path("in.sock");
    // A small send buffer: a client that does not read blocks the Acks after a few writes.
    const { server } = await startServer(path, { socketBuffers: { sendBytes: 4096, receiveBytes: 4096 } });
    const client = await connectClient(defer, path, { magic: INPUT_MAGIC, paused: true });
    const HEARTBEATS = 40_000;
    const beat = heartbeat();
    const queued = () => {
      const counts = server.readings().counts;
      return server.heartbeats + 1 - counts.acks_sent! - counts.acks_dropped!;
    };
    expect(await writeInPieces(client.socket, concatBytes([config(), ...Array.from({ length: HEARTBEATS }, () => beat)]), 65536)).toBe(true);
    await until(() => server.heartbeats === HEARTBEATS && queued() === 64, "the burst read, its Acks' queue full");
    // Every Ack of the burst was stamped before this; only the last Heartbeat's comes after.
    await Bun.sleep(5);
    const before = wallClockMs();
    client.socket.write(beat);
    await until(() => server.heartbeats === HEARTBEATS + 1, "the last Heartbeat read");
    client.socket.resume();
    await until(() => queued() === 0 && client.messages.length === server.readings().counts.acks_sent, "every Ack sent read");
    expect(client.messages.at(-1)!.timestampMs).toBeGreaterThanOrEqual(before);
  });
});

describe("frame stamps across sessions", () => {
  test("frames stamped off this machine's clock are counted over every session, not from each new client's (the counter never goes back)", async () => {
    const path = socketDir(defer, "in-").path("in.sock");
    const { server, ends } = await startServer(path);
    const session = () =>
      concatBytes([
        encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(MONO)),
        encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, testPayload(0), 0n),
        encodeMessage(INPUT_MAGIC, MessageType.Stop, new Uint8Array(0)),
      ]);
    for (let i = 1; i <= 2; i++) {
      const client = await connectClient(defer, path, { magic: INPUT_MAGIC });
      client.socket.write(session());
      await until(() => ends.length === i, `session ${i}'s end`);
      expect(server.readings().counts.frame_stamps_unusable).toBe(i);
    }
  });
});

/**
 * A raw input server in python that reads its client a little at a time, steadily (`piece`
 * bytes every `every` s, as a playback process paced by its device does), answers each Config
 * and Heartbeat with an Ack as soon as it reads it (or `delay` s later, where given), and lets a
 * new client replace the last (PROTOCOL.md). Once a client that sent Stop has left, it prints
 * what it got as JSON.
 */
const STEADY_INPUT_SERVER = String.raw`
import json, socket, struct, sys, time
path, piece, every = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
MAGIC = 0x4a4b4d49
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); srv.bind(path); srv.listen(8); srv.setblocking(False)
print(json.dumps({"listening": True}), flush=True)
got = {"connections": 0, "frames": [], "stops": 0}
conn, buf, owed = None, b"", []
while True:
    try:
        c, _ = srv.accept()
        if conn: conn.close()
        conn, buf, owed = c, b"", []; conn.setblocking(False); got["connections"] += 1; got["frames"].append(0)
    except BlockingIOError: pass
    if conn:
        try: data = conn.recv(piece)
        except BlockingIOError: data = None
        except OSError: data = b""
        if data == b"":
            conn.close(); conn = None
            if got["stops"]: break
        elif data:
            buf += data
            while len(buf) >= 17:
                magic, kind, n, ts = struct.unpack("<IBIq", buf[:17])
                if len(buf) < 17 + n: break
                buf = buf[17 + n:]
                if kind == 0: got["frames"][-1] += 1
                if kind == 2: got["stops"] += 1
                if kind in (1, 3): owed.append(time.time() + delay)
    while conn and owed and owed[0] <= time.time():
        owed.pop(0)
        # A client gone meanwhile (it gave up on us) is no end of the server: the next one is served.
        try: conn.sendall(struct.pack("<IBIq", MAGIC, 4, 0, time.time_ns()))
        except OSError: pass
    time.sleep(every)
print(json.dumps(got), flush=True)
`;

/**
 * A lossless client (Heartbeats a minute apart, so that only the Stop asks anything of the server;
 * 300 ms to answer) queues `frames` frames of 160 bytes and its Stop behind a backlog that
 * STEADY_INPUT_SERVER reads `piece` bytes every `every` s: kept on one connection, every frame and
 * the Stop in it (what sat unread in a connection given up on is lost, though counted delivered).
 */
async function expectBacklogReadThrough(piece: string, every: string, frames: number): Promise<void> {
  defer(() => stopAgents());
  const sock = socketDir(defer, "in-").path("in.sock");
  const server = start(["python3", "-c", STEADY_INPUT_SERVER, sock, piece, every]);
  await until(() => server.stdout.includes("listening"), "the server to listen");
  const client = newClient(sock, { heartbeatMs: 60_000, ackTimeoutMs: 300, queueFrames: 4000 });
  const running = client.start();
  await client.waitForConnection();
  await until(() => client.acks === 1, "the Config's Ack");
  // Far more than the socket holds: the Stop waits in the queue behind the rest while the server reads on.
  for (let i = 0; i < frames; i++) client.sendFrame(payloadOfSize(i, 160));
  await client.finish();
  await running;
  expect(await server.exited).toBe(0);
  const got = JSON.parse(server.stdout.trim().split("\n").at(-1)!);
  expect({ ackTimeouts: client.ackTimeouts, connects: client.connects }).toEqual({ ackTimeouts: 0, connects: 1 });
  expect(got).toEqual({ connections: 1, frames: [frames], stops: 1 });
  expect(client.stats.dropped).toEqual(NO_DROPS);
}

/** Live mode with a 100 ms budget, never judged stuck: only the Ack clock and the Stop's bound act. */
const LIVE: Partial<InputClientOptions> = { lossless: false, maxLatencyMs: 100, stuckFrames: 100_000 };

/** A client (`newClient(over)`, Heartbeats a minute apart unless told) whose server answered its Config and then stopped reading. */
async function serverPausedAfterConfig(over: Partial<InputClientOptions>) {
  const sock = socketDir(defer, "in-").path("in.sock");
  const server = ackSkippingServer(sock, Infinity);
  defer(() => server.stop());
  const client = newClient(sock, { heartbeatMs: 60_000, ...over });
  void client.start();
  await client.waitForConnection();
  await until(() => client.acks === 1, "the Config's Ack");
  server.pause();
  return { server, client };
}

describe("a server that reads steadily, slower than a lossless client writes", () => {
  test("the Stop queued behind a backlog the server is reading through: one connection, no Ack timeout, every frame and the Stop in it", async () => {
    // 2 KiB every 10 ms, about 200 KB/s (some 20 times what live Opus needs): it takes a message every 10 ms.
    await expectBacklogReadThrough("2048", "0.01", 3000);
  });
});

describe("a live client whose server answers the Config and then takes nothing", () => {
  test("the Stop waits for it as long as an Ack may take (the budget and the Ack timeout), not for good: the run ends with it counted shutdown; every message accounted", async () => {
    const { server, client } = await serverPausedAfterConfig({ ...LIVE, ackTimeoutMs: 200, queueFrames: 4000 });
    // More than the socket holds: the Stop waits in the queue, behind frames that go stale.
    for (let i = 0; i < 3000; i++) client.sendFrame(payloadOfSize(i, 160));
    await client.finish();
    const r = client.readings();
    // Still queued at the end, with frames not yet found stale (the process-faults suite has it kept from stale drops).
    expect(r.dropped.shutdown).toBeGreaterThan(0);
    expectAccountedStats(client.stats);
    expect(server.stopped).toBe(false);
  });
});

describe("the Stop queued behind a backlog the server reads through", () => {
  test("a server that reads all it has every 100 ms, through a backlog longer than --ack-timeout-ms: kept, every frame and the Stop on one connection", async () => {
    const sock = socketDir(defer, "in-").path("in.sock");
    let frames = 0;
    let stops = 0;
    let connections = 0;
    const parser = new FrameParser(INPUT_MAGIC);
    const listener = Bun.listen({
      unix: sock,
      socket: {
        binaryType: "uint8array",
        open: () => void connections++,
        data: (socket, chunk) => {
          parser.push(chunk);
          for (let m = parser.next(); m; m = parser.next()) {
            if (m.type === MessageType.OpusFrame) frames++;
            if (m.type === MessageType.Stop) stops++;
            if (m.type === MessageType.Config || m.type === MessageType.Heartbeat) {
              socket.write(encodeMessage(INPUT_MAGIC, MessageType.Ack, undefined, BigInt(Date.now()) * 1_000_000n));
            }
          }
          // Takes what there is, then rests 100 ms: a steady reader, a fraction of the 400 ms the client gives it.
          socket.pause();
          setTimeout(() => socket.resume(), 100);
        },
        drain: () => {},
        close: () => {},
        error: () => {},
      },
    });
    defer(() => listener.stop(true));
    const client = newClient(sock, { heartbeatMs: 60_000, ackTimeoutMs: 400, queueFrames: 20_000 });
    const running = client.start();
    await client.waitForConnection();
    await until(() => client.acks === 1, "the Config's Ack");
    // About 1.8 MB: several times what the socket holds, taken a socketful every 100 ms.
    const N = 10_000;
    for (let i = 0; i < N; i++) client.sendFrame(payloadOfSize(i, 160));
    await client.finish();
    await running;
    await until(() => stops === 1, "the Stop");
    expect({ ackTimeouts: client.ackTimeouts, connects: client.connects, connections, frames }).toEqual({ ackTimeouts: 0, connects: 1, connections: 1, frames: N });
  });
});

describe("a server reading through a backlog slower than a socket buffer's piece per --ack-timeout-ms", () => {
  test("the Stop queued behind a backlog a server reads at 50 KB/s (5 times live Opus): one connection, no Ack timeout, every frame and the Stop in it", async () => {
    // 512 bytes every 10 ms: it reads all the time, but the kernel's unread count (TIOCOUTQ: buffer
    // memory, freed a whole buffer of some 36 KB at a time) falls only every 0.7 s or so.
    await expectBacklogReadThrough("512", "0.01", 2000);
  });
});

describe("a server that has read and answered everything, while the source sends nothing", () => {
  test("Heartbeats further apart than --ack-timeout-ms, each acked: one connection, no Ack timeout", async () => {
    const sock = socketDir(defer, "in-").path("in.sock");
    const { messages } = await startServer(sock);
    const disconnects: string[] = [];
    // A Heartbeat a second, 200 ms to answer it (a server on the same board answers in well under a ms).
    const client = newClient(sock, { heartbeatMs: 1000, ackTimeoutMs: 200, onDisconnect: (r) => disconnects.push(r) });
    void client.start();
    await client.waitForConnection();
    for (let i = 0; i < 10; i++) client.sendFrame(testPayload(i));
    // A pause in the audio (a FIFO between writers): three Heartbeats, each written whole and acked.
    await until(() => messages.filter((m) => m.type === MessageType.Heartbeat).length >= 3 && client.acks >= 4, "three Heartbeats acked", 10_000);
    expect({ ackTimeouts: client.ackTimeouts, connects: client.connects, disconnects }).toEqual({ ackTimeouts: 0, connects: 1, disconnects: [] });
  });

  test("a Config change mid-run, acked, then a pause in the audio: one connection, no Ack timeout", async () => {
    const sock = socketDir(defer, "in-").path("in.sock");
    const { messages } = await startServer(sock);
    const disconnects: string[] = [];
    const client = newClient(sock, { heartbeatMs: 60_000, ackTimeoutMs: 200, onDisconnect: (r) => disconnects.push(r) });
    void client.start();
    await client.waitForConnection();
    for (let i = 0; i < 10; i++) client.sendFrame(testPayload(i));
    client.setConfig({ ...MONO, channels: 2 });
    for (let i = 10; i < 20; i++) client.sendFrame(testPayload(i));
    await until(() => messages.length === 22 && client.acks === 2, "both Configs and the frames taken, both Configs acked");
    // Five times the Ack timeout with nothing to send: the server owes nothing.
    await Bun.sleep(1000);
    expect({ ackTimeouts: client.ackTimeouts, connects: client.connects, disconnects }).toEqual({ ackTimeouts: 0, connects: 1, disconnects: [] });
  });
});

/**
 * A client (Heartbeats `heartbeatMs` apart, 300 ms to answer) whose server, a process of its own,
 * answers each Heartbeat 150 ms after reading it; this process is stopped (SIGSTOP) from outside
 * straight after writing one, for over three Ack timeouts, eight times. On SIGCONT the Ack deadline,
 * long due, may run before the socket is read: the client is to look at what waits unread first, and
 * find the Ack there. Which comes first depends on where the stop caught the event loop: eight stops
 * give the deadline first turn at least once as a rule.
 */
async function expectStopsRiddenOut(heartbeatMs: number): Promise<void> {
  defer(() => stopAgents());
  const sock = socketDir(defer, "in-").path("in.sock");
  const server = start(["python3", "-c", STEADY_INPUT_SERVER, sock, "4096", "0.001", "0.15"]);
  await until(() => server.stdout.includes("listening"), "the server to listen");
  const disconnects: string[] = [];
  const client = newClient(sock, { heartbeatMs, ackTimeoutMs: 300, onDisconnect: (r) => disconnects.push(r) });
  const stops: Promise<number>[] = [];
  // Every write after the Config (written apart) is a Heartbeat's: its Ack deadline is set as it goes out.
  client.observe({
    ...NO_OBSERVER,
    written: () => {
      if (stops.length >= 8) return;
      const pid = process.pid;
      stops.push(Bun.spawn(["sh", "-c", `kill -STOP ${pid}; sleep 1; kill -CONT ${pid}`]).exited);
    },
  });
  void client.start();
  await until(() => stops.length === 8 && client.acks >= 10, "eight stops, and Acks after them", 60_000);
  expect(await Promise.all(stops)).toEqual(Array(8).fill(0));
  expect({ ackTimeouts: client.ackTimeouts, connects: client.connects, disconnects }).toEqual({ ackTimeouts: 0, connects: 1, disconnects: [] });
}

describe("a client stopped (SIGSTOP) while its server's Ack waits unread for it", () => {
  test("eight stops, each past the Ack timeout: the Ack waiting unread is read before the server is judged: one connection, no Ack timeout", async () => {
    await expectStopsRiddenOut(100);
  });

  test("Heartbeats further apart than the Ack timeout, so that the next one falls due with the overdue Ack: it too waits for the read, one connection, no Ack timeout", async () => {
    await expectStopsRiddenOut(500);
  });
});

describe("a live client whose server answers the Config and then takes nothing, the queue full at the end", () => {
  test("the Stop's wait is bounded though the queue is full when the source ends: the run ends, every message accounted", async () => {
    const { client } = await serverPausedAfterConfig({ ...LIVE, ackTimeoutMs: 200, queueFrames: 64 });
    // More than the socket and the queue hold: the queue is full when the source ends.
    for (let i = 0; i < 3000; i++) client.sendFrame(payloadOfSize(i, 160));
    // The budget and the Ack timeout are 300 ms: ten seconds is far past any bounded wait.
    const ended = await within(client.finish().then(() => "ended"), 10_000, "still waiting");
    expect(ended).toBe("ended");
    expectAccountedStats(client.stats);
  });
});

describe("a live client whose server reads steadily through a socketful written in one burst", () => {
  test("Heartbeats dropped as stale while the server reads on: one connection, no Ack timeout, every message accounted", async () => {
    defer(() => stopAgents());
    const sock = socketDir(defer, "in-").path("in.sock");
    // 512 bytes every 10 ms, about 50 KB/s (5 times live Opus): it reads all the time, never stalls.
    const server = start(["python3", "-c", STEADY_INPUT_SERVER, sock, "512", "0.01"]);
    await until(() => server.stdout.includes("listening"), "the server to listen");
    const disconnects: string[] = [];
    const client = newClient(sock, {
      lossless: false,
      maxLatencyMs: 100,
      stuckFrames: 100_000,
      heartbeatMs: 100,
      ackTimeoutMs: 300,
      queueFrames: 4000,
      onDisconnect: (r) => disconnects.push(r),
    });
    void client.start();
    await client.waitForConnection();
    await until(() => client.acks === 1, "the Config's Ack");
    // A burst (a source catching up): a socketful goes out at once, the rest goes stale in the queue.
    for (let i = 0; i < 3000; i++) client.sendFrame(payloadOfSize(i, 160));
    // The server reads through the socketful, then the next Heartbeat reaches it and is acked.
    await until(() => client.acks >= 2 || client.ackTimeouts > 0, "a Heartbeat acked, or the server judged gone", 30_000);
    expect({ ackTimeouts: client.ackTimeouts, connects: client.connects, disconnects }).toEqual({ ackTimeouts: 0, connects: 1, disconnects: [] });
    await client.finish();
    expectAccountedStats(client.stats);
  });
});

describe("a live client whose server pauses for less than --ack-timeout-ms, Heartbeats further apart than that", () => {
  test("the Heartbeat that fell in the pause is dropped as stale, the server reads on: one connection, no Ack timeout", async () => {
    const sock = socketDir(defer, "in-").path("in.sock");
    const server = ackSkippingServer(sock, Infinity);
    defer(() => server.stop());
    const disconnects: string[] = [];
    // A Heartbeat a second, 500 ms to answer it, a budget of 100 ms.
    const client = newClient(sock, {
      lossless: false,
      maxLatencyMs: 100,
      stuckFrames: 100_000,
      heartbeatMs: 1000,
      ackTimeoutMs: 500,
      onDisconnect: (r) => disconnects.push(r),
    });
    void client.start();
    await client.waitForConnection();
    await until(() => server.heartbeats === 1 && client.acks === 2, "the Config's and the first Heartbeat's Acks", 10_000);
    // Some 200 ms before the next Heartbeat the server stops reading, with a few frames unread.
    await Bun.sleep(800);
    server.pause();
    for (let i = 0; i < 5; i++) client.sendFrame(payloadOfSize(i, 160));
    // The next Heartbeat waits behind them and goes stale 100 ms later; then the server reads on
    // (a pause of some 300 ms, well within the 500 ms it has to answer).
    await until(() => client.readings().dropped.latency_budget === 1, "the Heartbeat dropped as stale", 10_000);
    server.resume();
    await until(() => server.heartbeats === 2 || client.ackTimeouts > 0, "the next Heartbeat read, or the server judged gone", 10_000);
    expect({ ackTimeouts: client.ackTimeouts, connects: client.connects, disconnects }).toEqual({ ackTimeouts: 0, connects: 1, disconnects: [] });
    expectAccountedStats(client.stats);
  });
});

describe("a live client's Ack bookkeeping under a latency budget", () => {
  test("a Heartbeat is counted once: each one acked alone gives a Heartbeat round trip", async () => {
    const sock = socketDir(defer, "in-").path("in.sock");
    const { server } = await startServer(sock);
    const trips: { ms: number; type: number }[] = [];
    const client = newClient(sock, { lossless: false, maxLatencyMs: 100, heartbeatMs: 50, ackTimeoutMs: 10_000, onRoundTrip: (ms, type) => trips.push({ ms, type }) });
    void client.start();
    await client.waitForConnection();
    await until(() => server.heartbeats >= 5 && client.acks >= 6, "5 Heartbeats acked", 10_000);
    // 50 ms apart, answered at once: each Heartbeat is the one outstanding when its Ack comes.
    expect(trips.filter((t) => t.type === MessageType.Heartbeat).length).toBeGreaterThan(0);
    expect(client.ackTimeouts).toBe(0);
  });

  test("the Stop behind a full socket waits the budget and the Ack timeout: a server paused longer than the Ack timeout alone still gets it", async () => {
    const { server, client } = await serverPausedAfterConfig({ ...LIVE, maxLatencyMs: 2000, ackTimeoutMs: 200, queueFrames: 4000 });
    // More than the socket holds: the Stop waits in the queue behind frames not yet stale.
    for (let i = 0; i < 3000; i++) client.sendFrame(payloadOfSize(i, 160));
    const finished = client.finish();
    await Bun.sleep(600);
    server.resume();
    await finished;
    const r = client.readings();
    expect(r.dropped.shutdown).toBe(0);
    await until(() => server.stopped, "the Stop read", 10_000);
    expectAccountedStats(client.stats);
  });

  test("a server that stalls after a Config change is found gone when the Config's Ack is overdue, Heartbeats a minute apart", async () => {
    const { client } = await serverPausedAfterConfig({ ...LIVE, ackTimeoutMs: 100 });
    client.setConfig({ ...MONO, channels: 2 });
    await until(() => client.ackTimeouts === 1, "the server judged gone", 10_000);
  });

  test("lossless with a latency budget set (as the CLI always passes one): the Stop waits for a server paused longer than the budget and the Ack timeout", async () => {
    const { server, client } = await serverPausedAfterConfig({ lossless: true, maxLatencyMs: 100, ackTimeoutMs: 200, queueFrames: 4000 });
    for (let i = 0; i < 3000; i++) client.sendFrame(payloadOfSize(i, 160));
    const finished = client.finish();
    await Bun.sleep(600);
    server.resume();
    await finished;
    await until(() => server.stopped, "the Stop read", 10_000);
    expect(client.stats.dropped).toEqual(NO_DROPS);
  });
});
