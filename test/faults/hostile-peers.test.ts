/**
 * Peers that break the framing, against real servers and clients on real
 * sockets: a client sending a bad magic, an unknown type, or a length of
 * 4097 or 2^32-1 to the input server; a server sending the same to a
 * spawned `output recv`; a header cut off by a close; a stream written one
 * byte at a time. Each time: the offender is disconnected with a logged,
 * counted reason, the frames before the fault arrive whole and in order, and
 * the next peer is served normally, every frame accounted for.
 */
import { describe, expect, test } from "bun:test";
import { type Socket } from "bun";
import { InputClient } from "../../src/channels/input-client.ts";
import { InputServer } from "../../src/channels/input-server.ts";
import { sampleProcess, used } from "../../src/bench/process-figures.ts";
import { healthFields, summaryFields } from "../../src/observe/readings.ts";
import { startOutputServer } from "../support/output-server.ts";
import { silent } from "../../src/transport/report.ts";
import { sendQueueBytes } from "../../src/transport/socket-options.ts";
import { readFileSync } from "node:fs";
import { expectAccountedStats, logFields } from "../support/agent-log.ts";
import { concatBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { expectIntactInOrder, FEED_MAX_SIZE, indexedPayload } from "../support/payloads.ts";
import { connectClient, fakeServer, writeInPieces } from "../support/peer.ts";
import { spawnAgent, stopAgents } from "../support/processes.ts";
import { recordingReport } from "../support/reports.ts";
import { TONE } from "../support/opus-fixtures.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { indexedWire, parseWire, protocolErrorOf, wireFileFrames, wireHeader } from "../support/wire.ts";
import {
  DEFAULT_AUDIO_CONFIG,
  encodeConfigPayload,
  encodeMessage,
  FrameParser,
  INPUT_MAGIC,
  MessageType,
  OUTPUT_MAGIC,
  type ProtocolErrorKind,
} from "../../src/protocol/index.ts";

const defer = useCleanup();

interface Violation {
  name: string;
  kind: ProtocolErrorKind;
  /** A header that breaks the framing on a channel with `magic`. */
  header(magic: number): Uint8Array;
}

const VIOLATIONS: Violation[] = [
  { name: "bad magic (the other channel's)", kind: "BadMagic", header: (m) => wireHeader(m === INPUT_MAGIC ? OUTPUT_MAGIC : INPUT_MAGIC, 0, 3) },
  { name: "unknown type 5", kind: "UnknownType", header: (m) => wireHeader(m, 5, 3) },
  { name: "length 4097", kind: "FrameTooLarge", header: (m) => wireHeader(m, 0, 4097) },
  { name: "length 2^32-1", kind: "FrameTooLarge", header: (m) => wireHeader(m, 0, 2 ** 32 - 1) },
];

const configMessage = () => encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(DEFAULT_AUDIO_CONFIG), 1n);

/** An input server recording what reaches its sink and how sessions end. */
async function startInputServer() {
  const dir = socketDir(defer, "hp-");
  const path = dir.path("in.sock");
  const frames: Uint8Array[] = [];
  const sessions: { reason: string; clean: boolean }[] = [];
  const { reports, report } = recordingReport();
  const failures: Error[] = [];
  const server = await InputServer.start({
    path,
    mode: 0o660,
    report,
    onMessage: (m) => {
      if (m.type === MessageType.OpusFrame) frames.push(m.payload.slice());
    },
    onSessionEnd: (reason, clean) => sessions.push({ reason, clean }),
    onFailure: (e) => failures.push(e),
  });
  defer(() => server.stop());
  return { path, server, frames, sessions, reports, failures };
}

/**
 * A well-behaved main app (the real InputClient) sending frames `from` ..
 * `from + count - 1` losslessly, then Stop. Checks its own accounting.
 */
async function cleanSession(path: string, from: number, count: number): Promise<InputClient> {
  const client = new InputClient({
    path,
    report: silent,
    config: DEFAULT_AUDIO_CONFIG,
    heartbeatMs: 1000,
    ackTimeoutMs: 10_000,
    connectTimeoutMs: 10_000,
    queueFrames: 64,
    dropPolicy: "oldest",
    lossless: true,
    writeDeadlineMs: 0,
    stuckFrames: 50,
  });
  defer(() => client.stop());
  const running = client.start();
  await client.waitForConnection();
  for (let i = from; i < from + count; i++) {
    await client.waitForSpace();
    client.sendFrame(indexedPayload(i, FEED_MAX_SIZE));
  }
  await client.finish();
  await running;
  expectAccountedStats(client.stats);
  expect(client.stats.droppedTotal).toBe(0);
  expect(client.stats.delivered - client.controlDelivered).toBe(count);
  return client;
}

/** Resolves once `check` holds, polling on every turn of the event loop (for byte-by-byte exchanges). */
async function soon(check: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * Closes `socket` once the client has read everything written to it
 * (TIOCOUTQ is 0). Closing at once races the client's connect: Bun.connect
 * rejects with ECONNRESET when the peer has already hung up by the time the
 * connection completes, and the bytes waiting for it are lost.
 */
async function endOnceRead(socket: Socket<undefined>): Promise<void> {
  const fd = (socket as unknown as { fd: number }).fd;
  await soon(() => {
    const q = sendQueueBytes(fd);
    return q.ok && q.bytes === 0;
  }, "the client to read everything");
  socket.end();
}

describe("a client breaking the framing, against the input server", () => {
  for (const violation of VIOLATIONS) {
    test(`${violation.name}: disconnected, counted and logged; frames before it kept; the next client is served`, async () => {
      const { path, server, frames, sessions, reports, failures } = await startInputServer();
      const peer = await connectClient(defer, path, { magic: INPUT_MAGIC });
      // Config, three frames, the violation, and bytes after it that must never be read as frames.
      const garbage = indexedWire(1000, 1003, FEED_MAX_SIZE, INPUT_MAGIC);
      await writeInPieces(peer.socket, concatBytes([configMessage(), indexedWire(0, 3, FEED_MAX_SIZE, INPUT_MAGIC), violation.header(INPUT_MAGIC), garbage]), 1 << 16);
      await peer.closed;

      expect(server.protocolErrors).toBe(1);
      expect(expectIntactInOrder(frames)).toEqual([0, 1, 2]);
      // The Config's Ack was still queued when the violation came: written or dropped, never lost.
      expectAccountedStats(server.ackStats);
      expect(server.ackStats.submitted).toBe(1);
      expect(peer.messages.map((m) => m.type)).toEqual(Array(server.ackStats.delivered).fill(MessageType.Ack));
      const warning = reports.find((r) => r.message === "framing violation from client; disconnecting");
      expect(warning?.level).toBe("warn");
      expect(String(warning?.fields?.error)).toStartWith(`${violation.kind}: `);
      expect(sessions).toEqual([{ reason: expect.stringContaining(`protocol error: ${violation.kind}`), clean: false }]);

      // The server keeps serving: a real client's whole session arrives.
      await cleanSession(path, 3, 200);
      await until(() => sessions.length === 2, "second session ended");
      expect(sessions[1]).toEqual({ reason: "stop", clean: true });
      expect(expectIntactInOrder(frames)).toEqual([...Array(203).keys()]);
      expect(server.protocolErrors).toBe(1);
      expect(server.sessions).toBe(2);
      expect(failures).toEqual([]);
      expectAccountedStats(server.ackStats);
      expect(server.ackStats.submitted).toBeGreaterThanOrEqual(2); // and the second session's Config was acked
    });
  }

  test("a header cut off by a close: the session ends unclean, nothing half is delivered, the next client is served", async () => {
    const { path, server, frames, sessions } = await startInputServer();
    const peer = await connectClient(defer, path, { magic: INPUT_MAGIC });
    const cut = indexedWire(3, 4, FEED_MAX_SIZE, INPUT_MAGIC).subarray(0, 9);
    await writeInPieces(peer.socket, concatBytes([configMessage(), indexedWire(0, 3, FEED_MAX_SIZE, INPUT_MAGIC), cut]), 1 << 16);
    peer.socket.end();
    await peer.closed;
    await until(() => sessions.length === 1, "session ended");
    expect(sessions[0]!.clean).toBe(false);
    expect(server.protocolErrors).toBe(0);
    expect(expectIntactInOrder(frames)).toEqual([0, 1, 2]);

    await cleanSession(path, 3, 50);
    await until(() => sessions.length === 2, "second session ended");
    expect(expectIntactInOrder(frames)).toEqual([...Array(53).keys()]);
  });

  test("one byte per read: every frame arrives intact, Config and Heartbeat are acked, Stop ends the session cleanly", async () => {
    const { path, server, frames, sessions } = await startInputServer();
    const peer = await connectClient(defer, path, { magic: INPUT_MAGIC });
    const stream = concatBytes([
      configMessage(),
      indexedWire(0, 20, 64, INPUT_MAGIC),
      encodeMessage(INPUT_MAGIC, MessageType.Heartbeat, undefined, 2n),
      indexedWire(20, 25, 64, INPUT_MAGIC),
      encodeMessage(INPUT_MAGIC, MessageType.Stop, undefined, 3n),
    ]);
    for (let at = 0; at < stream.length; at++) {
      expect(peer.socket.write(stream, at, 1)).toBe(1);
      // The server has read this byte on its own before the next one is written.
      await soon(() => server.bytesReceived === at + 1, `byte ${at} read`);
    }
    await peer.closed;
    expect(sessions).toEqual([{ reason: "stop", clean: true }]);
    expect(server.protocolErrors).toBe(0);
    expect(expectIntactInOrder(frames, 64)).toEqual([...Array(25).keys()]);
    expect(peer.messages.map((m) => m.type)).toEqual([MessageType.Ack, MessageType.Ack]);
    expect(server.heartbeats).toBe(1);
  });
});

describe("a client breaking the framing, against the output server", () => {
  for (const violation of VIOLATIONS) {
    test(`${violation.name}: disconnected, counted and logged; what it framed well is ignored; the next client is served`, async () => {
      const { reports, report } = recordingReport();
      const { path, server } = await startOutputServer(defer, { report });
      const peer = await connectClient(defer, path);
      await until(() => server.connected, "the client accepted");
      for (let i = 0; i < 3; i++) server.sendFrame(indexedPayload(i, 100));
      await until(() => peer.frames.length === 3, "the first frames");
      // Messages the protocol has no use for on this channel are let be; the violation is not.
      await writeInPieces(peer.socket, concatBytes([indexedWire(0, 3, 100, OUTPUT_MAGIC), violation.header(OUTPUT_MAGIC), indexedWire(1000, 1003, 100, OUTPUT_MAGIC)]), 7);
      await peer.closed;

      expect(server.protocolErrors).toBe(1);
      expect(server.readings().protocolErrors).toBe(1);
      const warning = reports.find((r) => r.message === "framing violation from client; disconnecting");
      expect(warning?.level).toBe("warn");
      expect(String(warning?.fields?.error)).toStartWith(`${violation.kind}: `);
      expect(reports.find((r) => r.message === "client disconnected")?.fields?.reason).toStartWith(`protocol error: ${violation.kind}`);

      // The stopped line and /healthz count it too.
      expect(summaryFields(server.readings()).protocol_errors).toBe(1);
      expect(healthFields(server.readings()).protocol_errors).toBe(1);

      // The next client, its bytes read afresh, gets the frames from now on, and is judged on its own bytes.
      const next = await connectClient(defer, path);
      await until(() => server.connected, "the next client accepted");
      next.socket.write(indexedWire(0, 3, 100, OUTPUT_MAGIC));
      for (let i = 3; i < 6; i++) server.sendFrame(indexedPayload(i, 100));
      await until(() => next.frames.length === 3, "the next client's frames");
      expect(expectIntactInOrder(next.frames, 100)).toEqual([3, 4, 5]);
      expect(server.protocolErrors).toBe(1);
      next.socket.write(violation.header(OUTPUT_MAGIC));
      await next.closed;
      expect(server.protocolErrors).toBe(2);
    });
  }
});

describe("a server breaking the framing, against `output recv`", () => {
  async function recvAgainstFakeServer(script: (socket: Socket<undefined>, n: number) => void | Promise<void>) {
    const dir = socketDir(defer, "hp-");
    const path = dir.path("out.sock");
    const sink = dir.path("got.wire");
    const fake = fakeServer(path, (socket, n) => void script(socket, n));
    defer(() => fake.stop());
    const recv = spawnAgent(["output", "recv", "--socket", path, "--sink", sink, "--format", "wire", "--log-level", "debug"]);
    defer(stopAgents);
    return { path, sink, fake, recv };
  }

  test("a server hanging up on every connection: `output recv` reconnects each time, backing off; every connection is logged or counted in a summary", async () => {
    const { fake, recv } = await recvAgainstFakeServer((socket) => void socket.end());
    await until(() => fake.connections.length >= 3, "3 connections", 30_000);
    await Bun.sleep(8000);
    recv.kill("SIGTERM");
    expect(await recv.exited).toBe(0);
    const stopped = logFields(recv.stderr, "output-client", "stopped")!;
    // A connection the server ends at once is, to the client, one made and then ended, or one reset as it
    // was made (the end came before its connect completed): which depends on how soon each side ran, so
    // a loaded machine turns many into resets. Both back off alike; each the server took is one of them.
    const connects = Number(stopped.connects);
    const resets = Number(stopped.connect_resets ?? 0);
    // Short sessions back off (50 ms doubling, up to 5 s): a few connections, not thousands.
    expect(connects + resets).toBeGreaterThanOrEqual(3);
    expect(connects + resets).toBeLessThanOrEqual(fake.connections.length);
    expect(fake.connections.length).toBeLessThanOrEqual(40);
    const said = (message: string) => recv.stderr.split("\n").filter((l) => l.endsWith(`output-client: ${message}`) || l.includes(`output-client: ${message} `));
    const heldBack = (message: string) =>
      [...recv.stderr.matchAll(new RegExp(`output-client: (\\d+) more "${message}" lines`, "g"))].reduce((sum, m) => sum + Number(m[1]), 0);
    // Each connection is one "reconnected" (the first one "connected") and one "disconnected", each reset
    // its own warning: logged or held back and counted.
    expect(said("reconnected").length + heldBack("reconnected")).toBe(Math.max(0, connects - 1));
    const reset = "the server closed the connection as it was made: whatever it sent on it is lost";
    expect(said(reset).length + heldBack(reset)).toBe(resets);
    expect(said("disconnected").length + heldBack("disconnected")).toBeGreaterThanOrEqual(connects - 1);
    expect(recv.stderr.trimEnd().split("\n").length).toBeLessThanOrEqual(100);
  }, 60_000);

  for (const violation of VIOLATIONS) {
    test(`${violation.name}: the client disconnects, counts it, reconnects and receives the next server's frames`, async () => {
      const { sink, fake, recv } = await recvAgainstFakeServer((socket, n) => {
        if (n === 0) socket.write(concatBytes([indexedWire(0, 3), violation.header(OUTPUT_MAGIC), indexedWire(1000, 1003)]));
        else if (n === 1) {
          socket.write(indexedWire(3, 8));
          return endOnceRead(socket);
        }
      });
      await recv.waitForStderr("framing violation from server; disconnecting");
      await until(() => fake.connections.length >= 3, "reconnected after the good server closed");
      // The third connection taken by the client too, not only accepted by the server: a stop that comes
      // before the client has run since its connect ends that connection uncounted.
      await until(() => (recv.stderr.match(/ output-client: reconnected /g) ?? []).length === 2, "the client's third connection");
      recv.kill("SIGTERM");
      expect(await recv.exited).toBe(0);

      const warning = logFields(recv.stderr, "output-client", "framing violation from server; disconnecting");
      expect(warning.error).toStartWith(`${violation.kind}: `);
      const stopped = logFields(recv.stderr, "output-client", "stopped");
      expect(stopped.protocol_errors).toBe("1");
      expect(stopped.frames).toBe("8");
      expect(Number(stopped.connects)).toBeGreaterThanOrEqual(3);
      // The offending connection was closed by the client, not by the server.
      expect(fake.closedCount()).toBeGreaterThanOrEqual(2);
      const got = wireFileFrames(sink);
      expect(got.trailing).toBe(0);
      expect(expectIntactInOrder(got.frames)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    });
  }

  test("a header cut off by the server's close: reported as a lost partial message, then the next connection's frames arrive", async () => {
    const { sink, fake, recv } = await recvAgainstFakeServer((socket, n) => {
      if (n === 0) {
        socket.write(concatBytes([indexedWire(0, 3), indexedWire(3, 4).subarray(0, 9)]));
        return endOnceRead(socket);
      }
      if (n === 1) {
        socket.write(indexedWire(3, 8));
        return endOnceRead(socket);
      }
    });
    await recv.waitForStderr("server closed mid-message (9 byte(s) of a message lost)");
    await until(() => fake.connections.length >= 3, "reconnected twice");
    recv.kill("SIGTERM");
    expect(await recv.exited).toBe(0);
    const stopped = logFields(recv.stderr, "output-client", "stopped");
    expect(stopped.protocol_errors).toBe("0");
    expect(stopped.frames).toBe("8");
    const got = wireFileFrames(sink);
    expect(got.trailing).toBe(0);
    expect(expectIntactInOrder(got.frames)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  test("one byte per write (each read by the client before the next): every frame arrives intact", async () => {
    const stream = indexedWire(0, 30, 64);
    let written = 0;
    const { sink, recv } = await recvAgainstFakeServer(async (socket, n) => {
      if (n !== 0) return;
      const fd = (socket as unknown as { fd: number }).fd;
      for (let at = 0; at < stream.length; at++) {
        if (socket.write(stream, at, 1) !== 1) throw new Error(`byte ${at} not taken`);
        written++;
        // TIOCOUTQ: bytes the client has not read yet.
        await soon(() => {
          const q = sendQueueBytes(fd);
          return q.ok && q.bytes === 0;
        }, `byte ${at} read`);
      }
      socket.end();
    });
    await until(() => written === stream.length, "stream written", 30_000);
    await recv.waitForStderr(/reconnected|disconnected/);
    recv.kill("SIGTERM");
    expect(await recv.exited).toBe(0);
    expect(logFields(recv.stderr, "output-client", "stopped").frames).toBe("30");
    const got = wireFileFrames(sink);
    expect(got.trailing).toBe(0);
    expect(expectIntactInOrder(got.frames, 64)).toEqual([...Array(30).keys()]);
  });
});

describe("a server hanging up on every connection at once, against `input send`", () => {
  test("each connection is said connected (the first) or reconnected before it is dropped, even when its Config could not be written", async () => {
    const dir = socketDir(defer, "hp-");
    const path = dir.path("in.sock");
    // Closed as soon as accepted: the client's Config write often meets the closed connection.
    const fake = fakeServer(path, (socket) => socket.terminate());
    defer(() => fake.stop());
    const send = spawnAgent(["input", "send", "--socket", path, "--source", TONE, "--format", "ogg", "--realtime", "--loop"]);
    defer(stopAgents);
    await until(() => fake.connections.length >= 6, "6 connections", 30_000);
    send.kill("SIGTERM");
    expect(await send.exited).toBe(0);
    const lines = send.stderr.split("\n").filter((l) => / input-client: (connected|reconnected|disconnected)( |$)/.test(l));
    const kinds = lines.map((l) => l.match(/ input-client: (\w+)/)![1]);
    expect(kinds[0]).toBe("connected");
    // Connections alternate with their ends: none ends unannounced.
    for (let i = 0; i < kinds.length; i++) expect(kinds[i]).toBe(i % 2 === 0 ? (i === 0 ? "connected" : "reconnected") : "disconnected");
  }, 60_000);
});

describe("a server that sends a bad magic and closes, again and again", () => {
  const clients = [
    { role: "output recv", args: (sock: string, dir: string) => ["output", "recv", "--socket", sock, "--sink", `${dir}/got.wire`], magic: INPUT_MAGIC },
    { role: "input send", args: (sock: string, dir: string) => ["input", "send", "--socket", sock, "--source", `${dir}/src.wire`, "--realtime", "--loop"], magic: OUTPUT_MAGIC },
  ];
  for (const client of clients) {
    test(`\`${client.role}\` backs off: at most 40 connections in 5 s, and waits between them asleep`, async () => {
      const dir = socketDir(defer, "hp-");
      const path = dir.path("bad.sock");
      await Bun.write(dir.path("src.wire"), indexedWire(0, 50));
      // The other channel's magic: a framing violation for either client.
      const fake = fakeServer(path, (socket) => {
        socket.write(wireHeader(client.magic, 0, 3));
        socket.end();
      });
      defer(() => fake.stop());
      const agent = spawnAgent(client.args(path, dir.dir));
      defer(stopAgents);
      await Bun.sleep(1000);
      // Past its start-up: from here the agent only waits between connections (and paces its source).
      const before = sampleProcess(agent.pid)!;
      const from = performance.now();
      await Bun.sleep(4000);
      const cpuMs = used(before, sampleProcess(agent.pid)!).cpuNs / 1e6;
      const wallMs = performance.now() - from;
      const connections = fake.connections.length;
      agent.kill("SIGTERM");
      expect(await agent.exited).toBe(0);
      expect(connections).toBeGreaterThanOrEqual(3);
      expect(connections).toBeLessThanOrEqual(40);
      expect(agent.stderr).toContain("reconnect_in_ms=");
      // A wait that polled (a turn of the loop after another) would keep a core busy all along.
      expect(cpuMs).toBeLessThan(wallMs / 2);
    });
  }
});

test("the violations used here really are violations (the parser rejects each with its kind)", () => {
  for (const v of VIOLATIONS) {
    for (const magic of [INPUT_MAGIC, OUTPUT_MAGIC]) {
      const parser = new FrameParser(magic);
      parser.push(v.header(magic));
      expect(protocolErrorOf(() => parser.next()).kind).toBe(v.kind);
    }
  }
});

describe("a flood of bad peers against a spawned `input serve`", () => {
  test("1000 connections with a bad magic write at most 200 log lines, every one counted; a good client is served afterwards", async () => {
    const dir = socketDir(defer, "hp-");
    defer(stopAgents);
    const path = dir.path("in.sock");
    const sink = dir.path("in.wire");
    const server = spawnAgent(["input", "serve", "--socket", path, "--sink", sink]);
    await server.waitForStderr("listening");
    const bad = wireHeader(OUTPUT_MAGIC, 0, 3);
    for (let n = 0; n < 1000; n++) {
      let closed!: () => void;
      const gone = new Promise<void>((resolve) => (closed = resolve));
      const socket = await Bun.connect({ unix: path, socket: { data() {}, drain() {}, close: () => closed(), error() {} } });
      socket.write(bad);
      await gone;
    }

    const source = dir.path("good.wire");
    await Bun.write(source, indexedWire(0, 100, FEED_MAX_SIZE, INPUT_MAGIC));
    const send = spawnAgent(["input", "send", "--socket", path, "--source", source]);
    expect(await send.exited).toBe(0);
    await server.waitForStderr("session ended by Stop");
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);

    const received = parseWire(new Uint8Array(readFileSync(sink)), INPUT_MAGIC).messages.filter((m) => m.type === MessageType.OpusFrame);
    expect(expectIntactInOrder(received.map((m) => m.payload))).toEqual([...Array(100).keys()]);
    const stopped = logFields(server.stderr, "input-server", "stopped")!;
    expect(stopped.protocol_errors).toBe("1000");
    expect(stopped.connects).toBe("1001");
    const lines = server.stderr.trimEnd().split("\n");
    expect(lines.length).toBeLessThanOrEqual(200);
    // What was held back is said, by kind.
    expect(server.stderr).toMatch(/input-server: \d+ more "framing violation from client; disconnecting" lines in the last/);
  }, 60_000);
});
