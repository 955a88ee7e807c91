/**
 * Faults of whole peers against spawned agents: a client that never reads,
 * a client SIGKILLed while a flood is coming in, a server SIGKILLed and
 * restarted under a reconnecting client, and a storm of connections. The
 * server is `output serve --source -` fed indexed frames through its stdin
 * (a live source), so every frame can be traced: its final "stopped" line
 * must account for every frame it read (submitted = delivered + dropped by
 * reason), and what the clients got must be whole, uncorrupted, unrepeated
 * frames in order.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, lstatSync, renameSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { DEVICE_RUNTIME_ENV } from "../../src/bench/device-runtime.ts";
import { OPTIONS } from "../../src/config.ts";
import { SERVER_LOOK_MS, SERVER_REPLACED } from "../../src/transport/reconnecting-connection.ts";
import { DEFAULT_AUDIO_CONFIG, encodeConfigPayload, encodeMessage, INPUT_MAGIC, MessageType } from "../../src/protocol/index.ts";
import { ackSkippingServer } from "../support/ack-skipping-server.ts";
import { allLogFields, expectAccountedLine, failureLine, logFields } from "../support/agent-log.ts";
import { useCleanup } from "../support/cleanup.ts";
import { startFedServer } from "../support/feeder.ts";
import { expectIntactInOrder, indexedPayload, payloadIndex } from "../support/payloads.ts";
import { connectClient, fakeServer } from "../support/peer.ts";
import { metricsUrl, parseSamples } from "../support/metrics.ts";
import { fdCount, rssKiB, wakeUps, wakeUpsOver } from "../support/proc.ts";
import { agentEnv, spawnAgent, type Spawned, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { indexedWire, wholeWireMessages, wireFileFrames, writeWireFile } from "../support/wire.ts";

const defer = useCleanup();

function setup(prefix: string) {
  const dir = socketDir(defer, prefix);
  defer(stopAgents);
  return dir;
}

/** `output serve --realtime --loop` over one second of 20 ms indexed frames: live audio. */
async function startLiveServer(dir: { path: (name: string) => string }, socket: string, extra: string[] = []): Promise<Spawned> {
  const source = dir.path("second.wire");
  await writeWireFile(source, 50, (i) => indexedPayload(i, 160));
  const server = spawnAgent(["output", "serve", "--socket", socket, "--source", source, "--realtime", "--loop", ...extra]);
  await server.waitForStderr("listening socket=");
  return server;
}

/** The live latency budget the stalled readers' tests run with: the default. */
const BUDGET_MS = OPTIONS["max-latency-ms"].default;

/**
 * What a live reader gets once it reads again after a 3 s stall (each frame's header
 * timestamp, in arrival order): old audio first, then current audio only. Old: sent
 * more than 300 ms before the reader came back, the header timestamp on this
 * machine's wall clock, not the age at arrival, which a busy machine holding the test
 * process off the CPU would lengthen for frames sent on time. The old ones are what
 * the kernel held when the reader stopped: the writer stops writing once what the
 * reader has not read spans the budget, so their timestamps span no more than it.
 * Not a count of frames: a sender held off the CPU just before the stall catches up
 * with up to 200 ms of frames at once (the pacer), stamped together, and fifteen old
 * frames then still span under the budget.
 */
function expectOldAudioWithinBudget(resumed: { timestampMs: number }[], resumedAt: number): void {
  const isOld = (m: { timestampMs: number }) => m.timestampMs < resumedAt - 300;
  const old = resumed.filter(isOld);
  expect(resumed.slice(old.length).filter(isOld).length).toBe(0);
  // The hold goes by monotonic enqueue times, the stamps by the wall clock, whose offset a re-read may move by up to a ms.
  if (old.length > 0) expect(old.at(-1)!.timestampMs - old[0]!.timestampMs).toBeLessThanOrEqual(BUDGET_MS + 1);
}

/** Frames in a wire sink written by a running `output recv` (it flushes every 100 ms). */
function framesIn(path: string): number {
  return existsSync(path) ? wireFileFrames(path).frames.length : 0;
}

/** A fed `output serve` at `out.sock` in `dir`, its `output recv` writing `got.wire`, once `count` frames have reached the sink. */
async function recvFromFedServer(dir: ReturnType<typeof setup>, count: number) {
  const path = dir.path("out.sock");
  const sink = dir.path("got.wire");
  const first = await startFedServer(path);
  const recv = spawnAgent(["output", "recv", "--socket", path, "--sink", sink]);
  await first.server.waitForStderr("client connected");
  await first.feed.send(count);
  await until(() => framesIn(sink) === count, `${count} frames from the first server`);
  return { path, sink, first, recv };
}

describe("a client that connects and never reads", () => {
  test("the server keeps reading its source, cuts the client off after 50 frames without progress, serves a replacement; whole frames only", async () => {
    const dir = setup("pf-");
    const path = dir.path("out.sock");
    const { server, feed } = await startFedServer(path, ["--stuck-frames", "50"]);
    const stuck = await connectClient(defer, path, { paused: true });
    await server.waitForStderr("client connected");
    feed.flood(20, 2);
    // Its socket buffers fill, then 50 frames come with no progress: disconnected as stuck.
    await server.waitForStderr("client stuck: accepted nothing while frames kept coming; disconnecting");
    const stuckLine = logFields(server.stderr, "output-server", "client stuck: accepted nothing while frames kept coming; disconnecting");
    expect(stuckLine.frames).toBe("50");

    const replacement = await connectClient(defer, path);
    await until(() => replacement.frames.length >= 500, "the replacement to receive 500 frames");
    await feed.end();
    expect(await server.exited).toBe(0);

    // What the kernel held for the stuck client is still readable, then EOF.
    stuck.socket.resume();
    await stuck.closed;
    await replacement.closed;

    const acc = expectAccountedLine(server.stderr);
    expect(acc.submitted).toBe(feed.next); // the source was read to its end throughout
    expect(acc.byReason.client_stuck ?? 0).toBeGreaterThan(0);
    // Every delivered frame is in one of the two clients, whole; a cut one was counted client_gone.
    expect(stuck.frames.length + replacement.frames.length).toBe(acc.delivered);
    const cut = (stuck.pending > 0 ? 1 : 0) + (replacement.pending > 0 ? 1 : 0);
    expect(acc.byReason.client_gone ?? 0).toBeGreaterThanOrEqual(cut);
    expect(stuck.error).toBeUndefined();
    expect(replacement.error).toBeUndefined();
    const a = expectIntactInOrder(stuck.frames);
    const b = expectIntactInOrder(replacement.frames);
    expect(a.length).toBeGreaterThan(0);
    expect(b[0]!).toBeGreaterThan(a.at(-1)!);
  });

  test("while it is still connected (no cut-off configured), a new client replaces it at once and receives", async () => {
    const dir = setup("pf-");
    const path = dir.path("out.sock");
    const { server, feed } = await startFedServer(path, ["--stuck-frames", "100000"]);
    const stuck = await connectClient(defer, path, { paused: true });
    await server.waitForStderr("client connected");
    // Far more than its socket buffers hold: the writer is blocked on it, dropping stale frames.
    await feed.send(3000);
    const replacement = await connectClient(defer, path);
    await server.waitForStderr('reason="replaced by a new client"');
    await feed.send(300);
    await until(() => replacement.frames.some((p) => payloadIndex(p) === 3299), "the last frame at the replacement");
    await feed.end();
    expect(await server.exited).toBe(0);
    stuck.socket.resume();
    await stuck.closed;
    await replacement.closed;

    const acc = expectAccountedLine(server.stderr);
    expect(acc.submitted).toBe(3300);
    expect(acc.byReason.client_stuck ?? 0).toBe(0);
    expect(stuck.frames.length).toBeLessThan(3000); // it really was blocked
    expect(stuck.frames.length + replacement.frames.length).toBe(acc.delivered);
    const a = expectIntactInOrder(stuck.frames);
    const b = expectIntactInOrder(replacement.frames);
    expect(b[0]!).toBeGreaterThan(a.at(-1)!);
    expect(b.at(-1)).toBe(3299);
    expect(replacement.pending).toBe(0);
  });
});

describe("a live client that stalls for 3 s with its socket open", () => {
  test("after it resumes it gets old audio spanning at most the latency budget, then current audio; every frame is accounted for", async () => {
    const dir = setup("pf-");
    const path = dir.path("out.sock");
    // A 3 s stall drops far more than 50 frames for the client: it must not be cut off as stuck here.
    const server = await startLiveServer(dir, path);
    const client = await connectClient(defer, path);
    await Bun.sleep(1000);
    client.socket.pause();
    await Bun.sleep(3000);
    const beforeStall = client.messages.length;
    const resumedAt = Date.now();
    client.socket.resume();
    await Bun.sleep(2000);
    client.close();
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);

    expect(beforeStall).toBeGreaterThan(20);
    const resumed = client.messages.slice(beforeStall);
    expect(resumed.length).toBeGreaterThan(50);
    expectOldAudioWithinBudget(resumed, resumedAt);
    expect(client.error).toBeUndefined();

    const acc = expectAccountedLine(server.stderr);
    expect(acc.byReason.latency_budget ?? 0).toBeGreaterThan(0);
    expect(acc.byReason.client_stuck ?? 0).toBe(0);
  });
});

/** A server answering every Config and Heartbeat, and `input send --realtime` (`args` besides) fed a second of 160-byte frames. */
async function liveInputSender(args: string[]) {
  const dir = setup("pf-");
  const path = dir.path("in.sock");
  const server = ackSkippingServer(path, Infinity);
  defer(() => server.stop());
  const source = dir.path("second.wire");
  await writeWireFile(source, 50, (i) => indexedPayload(i, 160));
  const sender = spawnAgent(["input", "send", "--socket", path, "--source", source, "--realtime", ...args]);
  return { server, sender };
}

describe("a live input server that stalls for 3 s with its socket open", () => {
  test("`input send` then delivers old audio spanning at most the latency budget, then current audio; every frame is accounted for", async () => {
    // An Ack timeout longer than the stall: the budget is under test here, not giving up on a server.
    const { server, sender } = await liveInputSender(["--loop", "--ack-timeout-ms", "10000"]);
    await until(() => server.frames.length > 0, "the first frame");
    await Bun.sleep(1000);
    server.pause();
    await Bun.sleep(3000);
    const beforeStall = server.arrivals.length;
    const resumedAt = Date.now();
    server.resume();
    await Bun.sleep(2000);
    sender.kill("SIGTERM");
    expect(await sender.exited).toBe(0);

    expect(beforeStall).toBeGreaterThan(20);
    const resumed = server.arrivals.slice(beforeStall);
    expect(resumed.length).toBeGreaterThan(50);
    expectOldAudioWithinBudget(resumed, resumedAt);
    expect(server.connections).toBe(1);

    const acc = expectAccountedLine(sender.stderr, "input-client", true);
    expect(acc.byReason.latency_budget ?? 0).toBeGreaterThan(0);
    expect(acc.byReason.client_stuck ?? 0).toBe(0);
  });
});

describe("a live input server that stops reading and acking", () => {
  // Its Heartbeats are dropped as stale before they go out, so none awaits an Ack: the Ack timeout judges a
  // server that reads and does not answer, and one that takes nothing is found by --stuck-frames (help, README).
  test("`input send` finds it by --stuck-frames, not the Ack timeout: it connects again, and every frame is accounted for", async () => {
    // 1 s to answer; the stall below is 3 s, 150 frames: over --stuck-frames' 100.
    const { server, sender } = await liveInputSender(["--loop", "--ack-timeout-ms", "1000", "--stuck-frames", "100"]);
    // Stalls right after answering a Heartbeat: the server has answered everything it was sent.
    await until(() => server.heartbeats >= 2, "the second Heartbeat answered");
    server.pause();
    await Bun.sleep(3000);
    server.resume();
    await until(() => server.connections >= 2, "the sender connected again");
    sender.kill("SIGTERM");
    expect(await sender.exited).toBe(0);

    const stopped = logFields(sender.stderr, "input-client", "stopped");
    expect(sender.stderr).toContain("server stuck");
    expect(Number(stopped.ack_timeouts)).toBe(0);
    expectAccountedLine(sender.stderr, "input-client", true);
  });
});

describe("`input send` stopped (SIGSTOP) while its server's Ack waits unread for it", () => {
  // The server answered in time; the sender's own stall kept it from reading the Ack. On SIGCONT the Ack
  // deadline fell due before the socket was read, and the connection was dropped for a server that had answered.
  // Which comes first after SIGCONT, the due timers or the socket's read, depends on where the stop caught the
  // event loop: eight stalls, each with an Ack waiting, give the timers first turn at least once as a rule.
  test("once it goes on it reads the Ack before judging the server: eight stalls, no Ack timeout, one connection, every frame accounted for", async () => {
    const { server, sender } = await liveInputSender(["--loop", "--heartbeat-ms", "100", "--ack-timeout-ms", "400"]);
    defer(() => sender.kill("SIGCONT"));
    await until(() => server.acks >= 2 && server.frames.length > 0, "the Config and a Heartbeat answered");
    for (let stall = 0; stall < 8; stall++) {
      server.holdAcks();
      const heard = server.heartbeats;
      await until(() => server.heartbeats > heard, "a Heartbeat awaiting its Ack");
      sender.kill("SIGSTOP");
      server.releaseAcks();
      // Over twice the Ack timeout: the Heartbeat's Ack waits in the stopped sender's socket all along.
      await Bun.sleep(1000);
      const beforeResume = server.frames.length;
      sender.kill("SIGCONT");
      await until(() => server.frames.length >= beforeResume + 10, "audio after the stall");
    }
    sender.kill("SIGTERM");
    expect(await sender.exited, sender.stderr).toBe(0);

    expect(sender.stderr).not.toContain("no Ack within");
    expect(logFields(sender.stderr, "input-client", "stopped").ack_timeouts).toBe("0");
    expect(server.connections).toBe(1);
    expect(server.stopped).toBe(true);
    expectAccountedLine(sender.stderr, "input-client", true);
  });
});

describe("an input server restarted again and again under a live `input send`", () => {
  test("each connection's Heartbeats end with it: on the last of 12 servers they come at their own pace among the frames, and the sender holds no more descriptors than on the first", async () => {
    const dir = setup("pf-");
    const path = dir.path("in.sock");
    const source = dir.path("second.wire");
    await writeWireFile(source, 50, (i) => indexedPayload(i, 160));
    // A Heartbeat every 200 ms: ten 20 ms frames apart.
    const sender = spawnAgent(["input", "send", "--socket", path, "--source", source, "--realtime", "--loop", "--heartbeat-ms", "200"]);
    let fdsOnFirst = 0;
    // Sessions over a second each: the sender connects again at once.
    for (let n = 0; n < 11; n++) {
      const server = ackSkippingServer(path, Infinity);
      await until(() => server.connections === 1 && server.frames.length > 0, `server ${n + 1}'s first frame`);
      if (n === 0) fdsOnFirst = fdCount(sender.pid);
      await Bun.sleep(1100);
      server.stop();
    }
    const last = ackSkippingServer(path, Infinity);
    defer(() => last.stop());
    await until(() => last.frames.length >= 100, "100 frames on the last server", 20_000);
    const { frames, heartbeats } = { frames: last.frames.length, heartbeats: last.heartbeats };
    expect(fdCount(sender.pid)).toBeLessThanOrEqual(fdsOnFirst);
    sender.kill("SIGTERM");
    expect(await sender.exited).toBe(0);
    // One per ten frames, give or take one at each end; a Heartbeat timer left by each connection made 12 per ten.
    expect(heartbeats).toBeLessThanOrEqual(frames / 10 + 2);
    expect(logFields(sender.stderr, "input-client", "stopped").connects).toBe("12");
    expectAccountedLine(sender.stderr, "input-client", true);
  }, 60_000);
});

describe("a live input server that stalls for 1.5 s as the source ends", () => {
  test("`input send` still ends the session with Stop (PROTOCOL: 'Stop before it disconnects'): the Stop is not dropped as stale audio", async () => {
    // One second of live audio, not looped: the source ends while the server stalls.
    const { server, sender } = await liveInputSender([]);
    await until(() => server.frames.length >= 25, "half of the frames");
    server.pause();
    await Bun.sleep(1500);
    server.resume();
    expect(await sender.exited).toBe(0);
    // The server, alive all along, reads to the end of the connection: the session's last message is its Stop.
    await until(() => server.closed === server.connections, "the last connection's end, all it sent read");
    expect(server.stopped).toBe(true);
    expectAccountedLine(sender.stderr, "input-client", true);
  });
});

describe("clients that cannot keep a connection", () => {
  test("two `output recv` competing for one server back off: at most 40 connections in 5 s", async () => {
    const dir = setup("pf-");
    const path = dir.path("out.sock");
    const server = await startLiveServer(dir, path);
    const recv = (name: string) => spawnAgent(["output", "recv", "--socket", path, "--sink", dir.path(name)]);
    const clients = [recv("a.wire"), recv("b.wire")];
    await Bun.sleep(5000);
    for (const client of clients) client.kill("SIGTERM");
    for (const client of clients) expect(await client.exited).toBe(0);
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    const connects = Number(logFields(server.stderr, "output-server", "stopped")?.connects);
    expect(connects).toBeGreaterThanOrEqual(3); // they really did replace each other
    expect(connects).toBeLessThanOrEqual(40);
    expectAccountedLine(server.stderr);
  });

  for (const role of ["output recv", "input send"] as const) {
    test(`\`${role}\` without a server says at once that it waits, naming the socket`, async () => {
      const dir = setup("pf-");
      const path = dir.path("absent.sock");
      await Bun.write(dir.path("src.wire"), "");
      const args = role === "output recv" ? ["--sink", dir.path("got.wire")] : ["--source", dir.path("src.wire")];
      const agent = spawnAgent([...role.split(" "), "--socket", path, ...args]);
      await agent.waitForStderr("waiting for the server");
      expect(logFields(agent.stderr, role === "output recv" ? "output-client" : "input-client", "waiting for the server")).toEqual({
        socket: path,
        error: "ENOENT",
      });
      agent.kill("SIGTERM");
      expect(await agent.exited).toBe(0);
    });
  }
});

describe("a lossless server whose client never reads", () => {
  test("its memory is bounded in bytes: --queue-frames 100000 of 4 KiB frames stays under 100 MiB RSS", async () => {
    const dir = setup("pf-");
    const path = dir.path("out.sock");
    const source = dir.path("big.wire");
    // 40,000 frames of 4096 bytes: 164 MB, far more than the queue may hold.
    const payload = new Uint8Array(4096);
    await writeWireFile(source, 40_000, (i) => {
      new DataView(payload.buffer).setUint32(0, i, true);
      return payload;
    });
    const server = spawnAgent(["output", "serve", "--socket", path, "--source", source, "--queue-frames", "100000"]);
    await server.waitForStderr("waiting for a client");
    const client = await connectClient(defer, path, { paused: true });
    await server.waitForStderr("client connected");
    // The server reads its file until the queue is full, then waits: RSS climbs, then stays.
    let largest = 0;
    let lastGrowth = Date.now();
    while (Date.now() - lastGrowth < 2000) {
      const rss = rssKiB(server.pid) * 1024;
      if (rss > largest + 1024 * 1024) lastGrowth = Date.now();
      largest = Math.max(largest, rss);
      await Bun.sleep(100);
    }
    expect(largest).toBeLessThan(100 * 1024 * 1024);
    expect(client.frames.length).toBe(0);
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    const acc = expectAccountedLine(server.stderr);
    // Lossless until the signal: nothing was dropped but what was queued at shutdown.
    expect(acc.dropped).toBe(acc.byReason.shutdown ?? 0);
  });
});

describe("a client killed with SIGKILL while receiving a flood", () => {
  test("the server keeps going, counts what had no client, and the next client gets whole frames", async () => {
    const dir = setup("pf-");
    const path = dir.path("out.sock");
    const first = dir.path("first.wire");
    const second = dir.path("second.wire");
    // Small socket buffers: writes come back short, so frames are often half-written when the client dies.
    const { server, feed } = await startFedServer(path, ["--socket-buffers", "32768"]);
    const recv1 = spawnAgent(["output", "recv", "--socket", path, "--sink", first]);
    await server.waitForStderr("client connected");
    feed.flood(20, 1);
    await until(() => existsSync(first) && statSync(first).size > 200_000, "the first client to record 200 kB");
    recv1.kill("SIGKILL");
    await recv1.exited;
    expect(recv1.proc.signalCode).toBe("SIGKILL");
    await server.waitForStderr(/client disconnected socket=\S+ client=1 /);
    // Frames keep coming with nobody connected: counted, not queued.
    const noClientFrom = feed.next;
    await until(() => feed.next > noClientFrom + 500, "500 frames with no client");

    const recv2 = spawnAgent(["output", "recv", "--socket", path, "--sink", second]);
    await until(() => framesIn(second) >= 1000, "the second client to record 1000 frames");
    await feed.end();
    expect(await server.exited).toBe(0);
    recv2.kill("SIGTERM");
    expect(await recv2.exited).toBe(0);

    const acc = expectAccountedLine(server.stderr);
    expect(acc.submitted).toBe(feed.next);
    expect(acc.byReason.no_client ?? 0).toBeGreaterThan(0);
    // The killed client's file: whole frames in order (at most a cut message at its very end).
    const a = wireFileFrames(first);
    expect(a.error).toBeUndefined();
    const ia = expectIntactInOrder(a.frames);
    // The next client: whole frames only, in order, all after the first client's, and its own count agrees.
    const b = wireFileFrames(second);
    expect(b.trailing).toBe(0);
    expect(b.error).toBeUndefined();
    const ib = expectIntactInOrder(b.frames);
    expect(ib[0]!).toBeGreaterThan(ia.at(-1)!);
    expect(logFields(recv2.stderr, "output-client", "stopped").frames).toBe(String(b.frames.length));
    // Frames the kernel held for the killed client died with it; nothing else is missing.
    expect(a.frames.length + b.frames.length).toBeLessThanOrEqual(acc.delivered);
  });
});

describe("a server killed with SIGKILL and restarted", () => {
  test("`output recv` reconnects to the new server and records its frames; the stale socket is removed", async () => {
    const { path, sink, first, recv } = await recvFromFedServer(setup("pf-"), 300);

    first.server.kill("SIGKILL");
    await first.server.exited;
    expect(lstatSync(path).isSocket()).toBe(true); // left behind, nothing answers on it
    await recv.waitForStderr("disconnected");

    const second = await startFedServer(path);
    expect(second.server.stderr).toContain("removed stale socket");
    await second.server.waitForStderr("client connected");
    second.feed.next = 100_000;
    await second.feed.send(300);
    await until(() => framesIn(sink) === 600, "300 frames from the second server");
    await second.feed.end();
    expect(await second.server.exited).toBe(0);
    recv.kill("SIGTERM");
    expect(await recv.exited).toBe(0);

    const acc = expectAccountedLine(second.server.stderr);
    expect(acc.submitted).toBe(300);
    const got = wireFileFrames(sink);
    expect(got.trailing).toBe(0);
    const indices = expectIntactInOrder(got.frames);
    expect(indices.slice(0, 300)).toEqual([...Array(300).keys()]);
    // Everything the second server delivered reached the sink.
    expect(indices.filter((i) => i >= 100_000).length).toBe(acc.delivered);
    expect(acc.delivered).toBe(300);
    const stopped = logFields(recv.stderr, "output-client", "stopped");
    expect(stopped.frames).toBe("600");
    // 2, or 3 when it reconnected once more while the second server was stopping (accepted, then reset).
    expect(Number(stopped.connects)).toBeGreaterThanOrEqual(2);
    expect(existsSync(path)).toBe(false); // the second server removed its socket on a clean stop
  });
});

describe("a server hung with its connection open, and another started at its path", () => {
  // A capture process stuck in its driver cannot be killed; its supervisor starts another, which
  // (as the Go original does) removes the socket file and binds the path anew.
  test("`output recv` gives up the silent connection for the server now at the path, and records its frames", async () => {
    const { path, sink, first, recv } = await recvFromFedServer(setup("pf-"), 50);
    first.server.kill("SIGSTOP");

    unlinkSync(path);
    const second = fakeServer(path, (socket) => void socket.write(indexedWire(100_000, 100_050)));
    defer(() => second.stop());
    // The first look that finds it silent gives it up, 2 s after its last frame (README): given four times that, which a look every 10 s misses.
    await until(() => second.connections.length === 1, "the client to reach the second server", 4 * 2000);
    await until(() => framesIn(sink) === 100, "50 frames from the second server");
    recv.kill("SIGTERM");
    expect(await recv.exited).toBe(0);

    expect(allLogFields(recv.stderr, "output-client", "disconnected")[0]!.reason).toBe(SERVER_REPLACED);
    const indices = expectIntactInOrder(wireFileFrames(sink).frames);
    expect(indices).toEqual([...Array(50).keys(), ...Array.from({ length: 50 }, (_, i) => 100_000 + i)]);
    expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: "100", connects: "2" });
  }, 60_000);

  test("each connection's look ends with it: after eight servers' sessions, a silent `output recv` wakes no more often than one look's worth", async () => {
    const dir = setup("pf-");
    const path = dir.path("out.sock");
    // Eight healthy sessions (over a second each: reconnected at once), each ended by the server; the ninth stays silent.
    const server = fakeServer(path, (socket, n) => {
      socket.write(indexedWire(n, n + 1));
      if (n < 8) setTimeout(() => socket.end(), 1100);
    });
    defer(() => server.stop());
    // The device's runtime settings: none of Bun's own timers wakes the process either.
    const recv = spawnAgent(["output", "recv", "--socket", path, "--sink", dir.path("got.wire")], { env: agentEnv(DEVICE_RUNTIME_ENV) });
    await until(() => server.connections.length === 9, "the ninth connection", 30_000);
    await Bun.sleep(500);
    const before = wakeUps(recv.pid);
    await Bun.sleep(2 * SERVER_LOOK_MS + 200);
    // About a dozen here (the look twice, the runtime's own); a look left behind by each ended connection made some 30.
    expect(wakeUps(recv.pid) - before).toBeLessThanOrEqual(18);
    recv.kill("SIGTERM");
    expect(await recv.exited).toBe(0);
    expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: "9", connects: "9" });
  }, 60_000);

  test("a regular file put at the path is no server: `output recv` keeps the silent connection, and the server's frames come on it once it resumes", async () => {
    const { path, sink, first, recv } = await recvFromFedServer(setup("pf-"), 50);
    first.server.kill("SIGSTOP");
    unlinkSync(path);
    writeFileSync(path, "not a socket");
    // Two of the client's looks at the path.
    await Bun.sleep(2 * SERVER_LOOK_MS + 500);
    first.server.kill("SIGCONT");
    await first.feed.send(50);
    await until(() => framesIn(sink) === 100, "50 more frames from the resumed server", 10_000);
    recv.kill("SIGTERM");
    expect(await recv.exited).toBe(0);
    expect(allLogFields(recv.stderr, "output-client", "disconnected").map((f) => f.reason)).toEqual(["stopped"]);
    expect(expectIntactInOrder(wireFileFrames(sink).frames)).toEqual([...Array(100).keys()]);
    expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: "100", connects: "1" });
    await first.feed.end();
    expect(await first.server.exited).toBe(0);
    expectAccountedLine(first.server.stderr);
  }, 60_000);

  test("`output recv --once`: the stream given up so did not come whole: exit 1, naming why, the frames before kept", async () => {
    const dir = setup("pf-");
    const path = dir.path("out.sock");
    const sink = dir.path("got.wire");
    const first = fakeServer(path, (socket) => void socket.write(indexedWire(0, 5)));
    defer(() => first.stop());
    const recv = spawnAgent(["output", "recv", "--socket", path, "--sink", sink, "--once"]);
    await until(() => framesIn(sink) === 5, "the first server's frames");
    const aside = dir.path("aside.sock");
    const second = fakeServer(aside, () => {});
    defer(() => second.stop());
    renameSync(aside, path);
    expect(await recv.exited).toBe(1);
    expect(failureLine(recv.stderr)).toBe(`audio-agent: ${SERVER_REPLACED}; the stream ends there`);
    expect(expectIntactInOrder(wireFileFrames(sink).frames)).toEqual([0, 1, 2, 3, 4]);
    // The connect that found the new server answering (a socket left by a dead one would not) is ended with the run.
    expect(second.connections.length).toBe(1);
    await until(() => second.closedCount() === 1, "the new server's connection ended");
  }, 60_000);

  test("a connection that still brings frames is kept, whatever is at the path; once they stop it is given up", async () => {
    const dir = setup("pf-");
    const path = dir.path("out.sock");
    const sink = dir.path("got.wire");
    let next = 0;
    let streaming = true;
    const first = fakeServer(path, (socket) => {
      const timer = setInterval(() => {
        if (!streaming) return clearInterval(timer);
        socket.write(indexedWire(next, next + 1));
        next++;
      }, 20);
    });
    defer(() => first.stop());
    const recv = spawnAgent(["output", "recv", "--socket", path, "--sink", sink]);
    await until(() => framesIn(sink) >= 10, "the first server's frames");

    // Bound aside and renamed onto the path: the first server's listener stays, its connection streams on.
    const aside = dir.path("aside.sock");
    const second = fakeServer(aside, (socket) => void socket.write(indexedWire(100_000, 100_010)));
    defer(() => second.stop());
    renameSync(aside, path);
    // Three of the client's looks at the path.
    await Bun.sleep(3 * SERVER_LOOK_MS);
    expect(second.connections.length).toBe(0);
    expect(first.closedCount()).toBe(0);

    streaming = false;
    await until(() => second.connections.length === 1, "the client to reach the second server once the first fell silent", 30_000);
    const sent = next;
    await until(() => framesIn(sink) === sent + 10, "the second server's frames");
    recv.kill("SIGTERM");
    expect(await recv.exited).toBe(0);
    const indices = expectIntactInOrder(wireFileFrames(sink).frames);
    expect(indices).toEqual([...Array(sent).keys(), ...Array.from({ length: 10 }, (_, i) => 100_000 + i)]);
  }, 60_000);
});

describe("an input server hung with its connection open, and another started at its path", () => {
  test("a lossless `input send` (a file), which waits for a server behind its backlog, gives the hung one up for the one now at the path: its Config first, then the rest of the file", async () => {
    const dir = setup("pf-");
    const path = dir.path("in.sock");
    const N = 3000;
    const source = dir.path("big.wire");
    await writeWireFile(source, N, (i) => indexedPayload(i, 4000));
    // It acks the Config, then hangs: reads nothing more, answers nothing.
    const first = ackSkippingServer(path, Number.MAX_SAFE_INTEGER);
    defer(() => first.stop());
    const sender = spawnAgent(["input", "send", "--socket", path, "--source", source]);
    await until(() => first.acks === 1, "the first server's Ack of the Config");
    first.pause();

    const aside = dir.path("aside.sock");
    const second = ackSkippingServer(aside, Number.MAX_SAFE_INTEGER);
    defer(() => second.stop());
    renameSync(aside, path);
    await until(() => second.connections === 1, "the sender to reach the second server", 4 * SERVER_LOOK_MS);
    expect(await sender.exited).toBe(0);
    await until(() => second.closed === 1, "the second connection's end, all it sent read");

    expect(allLogFields(sender.stderr, "input-client", "disconnected")[0]!.reason).toBe(SERVER_REPLACED);
    expect(second.stopped).toBe(true);
    expect(second.acks - second.heartbeats).toBe(1); // the Config
    // What the hung server never read is lost with it; the rest of the file reached the second, in order.
    const indices = second.frames.map((p) => payloadIndex(p));
    expect(indices.length).toBeGreaterThan(0);
    expect(indices).toEqual(Array.from({ length: indices.length }, (_, k) => indices[0]! + k));
    expect(indices.at(-1)).toBe(N - 1);
    expectAccountedLine(sender.stderr, "input-client", true);
    expect(logFields(sender.stderr, "input-client", "stopped")).toMatchObject({ frames: String(N), connects: "2" });
  }, 60_000);
});

describe("a client replaced while what it sent is still unread", () => {
  // The new connection and the old client's last bytes can reach the server in one turn of its
  // loop, the connection first: held up (SIGSTOP) while B connects and then A sends, it sees them so.
  test("input serve reads it first: its frames and Stop land, its session ends by Stop, and the next client is served", async () => {
    const dir = setup("pf-");
    const path = dir.path("in.sock");
    const sink = dir.path("sink.wire");
    const server = spawnAgent(["input", "serve", "--socket", path, "--sink", sink]);
    await server.waitForStderr("input-server: listening");
    const session = (first: number, count: number) => {
      const parts = [encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(DEFAULT_AUDIO_CONFIG), 1n)];
      for (let i = first; i < first + count; i++) parts.push(encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, indexedPayload(i, 1000), BigInt(i + 2)));
      parts.push(encodeMessage(INPUT_MAGIC, MessageType.Stop, undefined, BigInt(first + count + 2)));
      return Buffer.concat(parts);
    };
    const connect = () => Bun.connect({ unix: path, socket: { data() {}, close() {}, error() {} } });
    const a = await connect();
    defer(() => a.terminate());
    await server.waitForStderr("client connected socket=" + path + " client=1");
    process.kill(server.pid, "SIGSTOP");
    let b;
    try {
      b = await connect();
      defer(() => b!.terminate());
      // 150 KB: more than one read of the server's takes.
      expect(a.write(session(0, 150))).toBe(session(0, 150).length);
      a.end();
      // A's bytes are in the server's socket now (a Unix socket's write is its peer's read queue).
      await Bun.sleep(50);
    } finally {
      process.kill(server.pid, "SIGCONT");
    }
    await server.waitForStderr("client=2");
    b.write(session(150, 10));
    await until(() => server.stderr.split("session ended by Stop").length === 3, "both sessions to end by Stop");
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    expect(server.stderr).not.toContain("without Stop");
    const frames = wholeWireMessages(sink, INPUT_MAGIC).filter((m) => m.type === MessageType.OpusFrame);
    expect(frames.map((m) => payloadIndex(m.payload))).toEqual(Array.from({ length: 160 }, (_, i) => i));
    expect(logFields(server.stderr, "input-server", "stopped")).toMatchObject({ frames: "160", sessions: "2", clean_sessions: "2" });
  });
});

describe("a client that left while the server was held up, before the next came", () => {
  // The input channel: there a client's end of data is its leaving. (An output client's is only the
  // end of its sending, a half-close the server cannot tell from a close: it is counted as replaced.)
  test("input serve says it closed, not that it was replaced, and serves the next client", async () => {
    const dir = setup("pf-");
    const path = dir.path("in.sock");
    const server = spawnAgent(["input", "serve", "--socket", path, "--sink", dir.path("sink.wire")]);
    await server.waitForStderr("input-server: listening");
    const connect = () => Bun.connect({ unix: path, socket: { data() {}, close() {}, error() {} } });
    const a = await connect();
    defer(() => a.terminate());
    await server.waitForStderr("client connected socket=" + path + " client=1");
    process.kill(server.pid, "SIGSTOP");
    try {
      // B's connection reaches the listener first; then A's end reaches A's socket.
      const b = await connect();
      defer(() => b.terminate());
      a.end();
      await Bun.sleep(50);
    } finally {
      process.kill(server.pid, "SIGCONT");
    }
    await server.waitForStderr("client connected socket=" + path + " client=2");
    await until(() => server.stderr.includes("client=1 reason="), "client 1's line");
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    expect(server.stderr).toContain("client disconnected socket=" + path + " client=1 reason=\"peer closed\"");
    expect(server.stderr).not.toContain("replaced by a new client");
  });
});

describe("a storm of connections", () => {
  /**
   * Opens and closes `cycles` connections, `parallel` at a time; half end
   * gracefully, half are cut. A connect refused because the listen backlog
   * is full (Bun reports EAGAIN as ECONNREFUSED) is tried again. With several
   * at once the server replaces one client by the next, and a connection it
   * closed that fast can fail on our side with ECONNRESET (Bun.connect sees
   * the hang-up first): the server accepted it all the same.
   */
  async function storm(path: string, cycles: number, parallel: number, greeting?: Uint8Array): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < cycles) {
        const n = next++;
        let done!: () => void;
        const closed = new Promise<void>((resolve) => (done = resolve));
        let socket;
        for (;;) {
          try {
            socket = await Bun.connect({
              unix: path,
              socket: { data() {}, drain() {}, close: () => done(), error() {} },
            });
            break;
          } catch (e) {
            const code = (e as NodeJS.ErrnoException).code;
            if (code === "ECONNREFUSED") {
              await Bun.sleep(1);
              continue;
            }
            if (code === "ECONNRESET") break;
            throw e;
          }
        }
        if (!socket) continue;
        if (greeting && n % 2 === 0) socket.write(greeting);
        if (n % 2 === 0) socket.end();
        else socket.terminate();
        await closed;
      }
    };
    await Promise.all(Array.from({ length: parallel }, worker));
  }

  /** How long an idle server's wake-ups are counted, before and after a storm. */
  const WAKE_WINDOW_MS = 3000;

  /** GET `path` of the agent's HTTP server with Connection: close, so that no HTTP connection is left open to count among its fds. */
  async function get(server: Spawned, path: string): Promise<Response> {
    return fetch(`${await metricsUrl(server)}${path}`, { headers: { connection: "close" } });
  }

  /** What the agent's /healthz says (its log is rate-limited: the counters are what counts). */
  async function health(server: Spawned): Promise<{ connects: number; connected: boolean; [field: string]: unknown }> {
    return (await get(server, "/healthz")).json();
  }

  /** The series its /metrics has now. */
  async function series(server: Spawned): Promise<string[]> {
    return parseSamples(await (await get(server, "/metrics")).text()).map(({ name, labels }) => `${name}${JSON.stringify(labels)}`);
  }

  /**
   * What a storm may leave behind in a server left running, measured once the
   * first clients have opened whatever opens lazily, and again after the
   * storm: descriptors, metric series, and the wake-ups of its idle main
   * thread over WAKE_WINDOW_MS (a timer left by each connection, even one a
   * second, adds thousands).
   */
  async function leftBehind(server: Spawned): Promise<{ fds: number; series: string[]; wakeUps: number }> {
    const figures = { fds: fdCount(server.pid), series: await series(server) };
    return { ...figures, wakeUps: await wakeUpsOver(server.pid, WAKE_WINDOW_MS) };
  }

  /** After the storm: no more descriptors (once the last close is seen), the same series, and no more wake-ups than a few. */
  async function expectNothingLeft(server: Spawned, before: Awaited<ReturnType<typeof leftBehind>>): Promise<void> {
    await until(() => fdCount(server.pid) <= before.fds, `fd count back to ${before.fds}`).catch(() => {
      throw new Error(`server fds: ${before.fds} before the storm, ${fdCount(server.pid)} after`);
    });
    const after = await leftBehind(server);
    expect(after.fds).toBeLessThanOrEqual(before.fds);
    expect(after.series).toEqual(before.series);
    // A handful over the window, idle (the runtime's own, the HTTP requests' ends).
    expect(after.wakeUps).toBeLessThanOrEqual(before.wakeUps + 10);
  }

  /** Waits until the server has accepted `cycles` clients in all and every one of them is gone. */
  async function allClosed(server: Spawned, cycles: number): Promise<void> {
    let last = await health(server);
    const start = Date.now();
    while (!(last.connects === cycles && !last.connected)) {
      if (Date.now() - start > 20_000) throw new Error(`${cycles} connections made; the server says ${JSON.stringify(last)}`);
      await Bun.sleep(20);
      last = await health(server);
    }
  }

  test("1000 connect/disconnect cycles against `output serve` leave no file descriptor, metric series or timer behind, and it still serves", async () => {
    const dir = setup("pf-");
    const path = dir.path("out.sock");
    // The device's runtime settings: none of Bun's own timers wakes the idle process either.
    const { server, feed } = await startFedServer(path, ["--metrics", "127.0.0.1:0", "--stats-interval", "0"], agentEnv(DEVICE_RUNTIME_ENV));
    await storm(path, 10, 1); // anything opened lazily on the first connections is open now
    await allClosed(server, 10);
    const before = await leftBehind(server);

    await storm(path, 1000, 10);
    await allClosed(server, 1010);
    await expectNothingLeft(server, before);

    const client = await connectClient(defer, path);
    for (let h = await health(server); !(h.connects === 1011 && h.connected); h = await health(server)) await Bun.sleep(20);
    await feed.send(200);
    await until(() => client.frames.length === 200, "200 frames");
    await feed.end();
    expect(await server.exited).toBe(0);
    const acc = expectAccountedLine(server.stderr);
    expect(acc.submitted).toBe(200);
    expect(acc.delivered).toBe(200);
    expect(expectIntactInOrder(client.frames)).toEqual([...Array(200).keys()]);
  });

  test("1000 connect/disconnect cycles against `input serve` (half sending Config and Stop) leave no file descriptor, metric series or timer behind", async () => {
    const dir = setup("pf-");
    const path = dir.path("in.sock");
    const server = spawnAgent(["input", "serve", "--socket", path, "--sink", dir.path("in.wire"), "--metrics", "127.0.0.1:0", "--stats-interval", "0"], { env: agentEnv(DEVICE_RUNTIME_ENV) });
    await server.waitForStderr("listening socket=");
    const greeting = new Uint8Array([
      ...encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(DEFAULT_AUDIO_CONFIG), 1n),
      ...encodeMessage(INPUT_MAGIC, MessageType.Stop, undefined, 2n),
    ]);
    await storm(path, 10, 1, greeting);
    await allClosed(server, 10);
    const before = await leftBehind(server);
    await storm(path, 1000, 10, greeting);
    await allClosed(server, 1010);
    await expectNothingLeft(server, before);
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    const stopped = logFields(server.stderr, "input-server", "stopped");
    expect(stopped.sessions).toBe("1010");
    expect(stopped.protocol_errors).toBe("0");
  });
});
