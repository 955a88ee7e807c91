/**
 * Faults of the environment around spawned agents: a full disk, a source
 * that ends mid-page or mid-message, a socket path that cannot be used,
 * signals in the middle of a burst (SIGTERM into an Ogg sink, SIGHUP, a
 * stop while a lossless source waits for queue room). Each ends with the
 * documented exit code and one clear line, and the senders' final lines
 * account for every frame.
 */
import { describe, expect, test } from "bun:test";
import { closeSync, constants, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { join, resolve } from "node:path";
import { OggSource } from "../../src/media/ogg-source.ts";
import { DEFAULT_AUDIO_CONFIG, encodeConfigPayload, encodeMessage, INPUT_MAGIC, MessageType } from "../../src/protocol/index.ts";
import { SOCK_DGRAM } from "../../src/io/libc.ts";
import { setPipeSize } from "../../src/transport/socket-options.ts";
import { expectAccountedLine, failureLine, logFields } from "../support/agent-log.ts";
import { bindSocket } from "../support/bound-socket.ts";
import { concatBytes, sameBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { StdinFeeder } from "../support/feeder.ts";
import { makeFifo, readAvailableText } from "../support/fifo.ts";
import { canFreezeDisk, canUnshare, freezableDisk, smallDisk } from "../support/machine.ts";
import { threadInWrite } from "../support/proc.ts";
import { healthz, metricsUrl, scrapeValue } from "../support/metrics.ts";
import { pagesOf } from "../support/ogg.ts";
import { decodedSamples, opusinfo, TONE } from "../support/opus-fixtures.ts";
import { expectIntactInOrder, payloadIndex, testPayload } from "../support/payloads.ts";
import { closeConnections, queueConnections } from "../support/queued-connections.ts";
import { connectClient, connectOutcome, expectServesThenStops, fakeServer, goStyleServerThatMoves, markedAfterRefusal, RecordingClient, writeInPieces } from "../support/peer.ts";
import { AGENT, agentEnv, BUN, makeStaleSocket, runAgent, spawnAgent, spawnListener, type Spawned, start, stopAgents } from "../support/processes.ts";
import { drain, drainFile } from "../support/sources.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { indexedWire, parseWire, wireFileFrames, writeWireFile } from "../support/wire.ts";

const defer = useCleanup();

/** Whether this machine can freeze a disk for a test (freezableDisk). */
const freezable = await canFreezeDisk();

function setup(prefix = "env-") {
  const dir = socketDir(defer, prefix);
  defer(stopAgents);
  return dir;
}

/**
 * A lossless `output serve` of 20,000 frames whose client is connected and
 * not reading (paused): socket buffers full, then the queue (500), so the
 * source waits for room.
 */
async function losslessServerWaitingForRoom(): Promise<{ server: Spawned; client: RecordingClient }> {
  const dir = setup();
  const path = dir.path("out.sock");
  const source = dir.path("src.wire");
  writeFileSync(source, indexedWire(0, 20_000));
  const server = spawnAgent(["output", "serve", "--socket", path, "--source", source, "--metrics", "0", "--adaptive", "off"]);
  const url = await metricsUrl(server);
  await server.waitForStderr("listening socket=");
  const client = await connectClient(defer, path, { paused: true });
  let depth = 0;
  for (const start = Date.now(); depth < 500 && Date.now() - start < 20_000; await Bun.sleep(20)) {
    depth = await scrapeValue(url, "audio_agent_queue_depth_frames");
  }
  expect(depth).toBe(500);
  return { server, client };
}

describe("a sink that cannot be written", () => {
  test("`output recv --sink /dev/full`: one line naming the sink and ENOSPC, exit 1; the server accounts for every frame", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    const source = dir.path("src.wire");
    writeFileSync(source, indexedWire(0, 3000));
    const server = spawnAgent(["output", "serve", "--socket", path, "--source", source]);
    await server.waitForStderr("listening");
    const recv = spawnAgent(["output", "recv", "--socket", path, "--sink", "/dev/full"]);
    expect(await recv.exited).toBe(1);
    const line = failureLine(recv.stderr);
    expect(line).toContain("/dev/full");
    expect(line).toContain("ENOSPC");
    // Not one byte reached the sink: every frame received is counted as dropped by it.
    const stopped = logFields(recv.stderr, "output-client", "stopped");
    expect(Number(stopped.frames)).toBeGreaterThan(0);
    expect(stopped).toMatchObject({ dropped: stopped.frames, dropped_sink_write_failed: stopped.frames });

    // The lossless server waits for the next client; stopped, it accounts for what it read.
    await server.waitForStderr("client disconnected");
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    const acc = expectAccountedLine(server.stderr);
    expect(acc.delivered).toBeGreaterThan(0);
  });

  test("`output recv --sink /dev/full --count N`, the sink failing in the read that holds frame N: exit 1, no more than N frames taken, each counted", async () => {
    const dir = setup();
    const path = dir.path("raw.sock");
    // 300 frames in one write: the 64 KiB sink buffer fills, and fails, long before the 250th.
    const server = fakeServer(path, (socket) => void writeInPieces(socket, indexedWire(0, 300), 1 << 20));
    defer(server.stop);
    const recv = spawnAgent(["output", "recv", "--socket", path, "--sink", "/dev/full", "--count", "250", "--once"]);
    expect(await recv.exited).toBe(1);
    expect(failureLine(recv.stderr)).toContain("ENOSPC");
    const stopped = logFields(recv.stderr, "output-client", "stopped");
    expect(Number(stopped.frames)).toBeGreaterThan(0);
    expect(Number(stopped.frames)).toBeLessThanOrEqual(250);
    expect(stopped.dropped).toBe(stopped.frames);
  });

  test("`output recv --format ogg --sink /dev/full`: exit 1, and every frame received is counted as dropped, those on the last page too", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    const server = spawnAgent(["output", "serve", "--socket", path, "--source", TONE, "--format", "ogg"]);
    await server.waitForStderr("listening");
    const recv = spawnAgent(["output", "recv", "--socket", path, "--sink", "/dev/full", "--format", "ogg", "--once"]);
    expect(await recv.exited).toBe(1);
    expect(failureLine(recv.stderr)).toContain("ENOSPC");
    const stopped = logFields(recv.stderr, "output-client", "stopped");
    expect(Number(stopped.frames)).toBeGreaterThan(0);
    expect(stopped).toMatchObject({ dropped: stopped.frames, dropped_sink_write_failed: stopped.frames });
    expect(await server.exited).toBe(0);
  });

  test("`input serve --sink /dev/full`: one line naming the sink and ENOSPC, exit 1; the sender accounts for every frame", async () => {
    const dir = setup();
    const path = dir.path("in.sock");
    const source = dir.path("src.wire");
    writeFileSync(source, indexedWire(0, 3000));
    const server = spawnAgent(["input", "serve", "--socket", path, "--sink", "/dev/full"]);
    await server.waitForStderr("listening");
    const send = spawnAgent(["input", "send", "--socket", path, "--source", source]);
    expect(await server.exited).toBe(1);
    const line = failureLine(server.stderr);
    expect(line).toContain("/dev/full");
    expect(line).toContain("ENOSPC");
    // Not one byte reached the sink: every frame the server read is counted as dropped, as the sink's
    // failure, those read after it (as the run stopped) too: they were counted session_ended.
    const stopped = logFields(server.stderr, "input-server", "stopped");
    expect(Number(stopped.frames)).toBeGreaterThan(0);
    expect(stopped).toMatchObject({ dropped: stopped.frames, dropped_sink_write_failed: stopped.frames });
    send.kill("SIGTERM");
    expect(await send.exited).toBe(0);
    expectAccountedLine(send.stderr, "input-client");
  });
});

describe("a sink on a disk that stops taking writes", () => {
  test.skipIf(!freezable)("`serve --input-sink FILE` on a frozen file system (fsfreeze: a card stalled in its write): the sink's write waits in a thread of its own, while the output channel streams on, /healthz answers and SIGTERM is taken; once thawed, every frame is in the file, those received while the write was held too", async () => {
    const dir = setup();
    mkdirSync(dir.path("disk"));
    const disk = await freezableDisk(dir.path("disk"));
    defer(disk.release);
    const rec = join(dir.path("disk"), "mic.wire");
    const [out, mic] = [dir.path("o.sock"), dir.path("i.sock")];
    const agent = start(
      disk.run([...AGENT, "serve", "--output-socket", out, "--output-source", TONE, "--output-format", "ogg", "--output-realtime", "--output-loop", "--input-socket", mic, "--input-sink", rec, "--input-page-ms", "20", "--metrics", "127.0.0.1:0"]),
      { env: agentEnv() },
    );
    const base = await metricsUrl(agent);
    await agent.waitForStderr("input-server: listening");
    const listener = await connectClient(defer, out);
    const client = await connectClient(defer, mic, { magic: INPUT_MAGIC });
    const micFrames = (from: number, to: number) => concatBytes(Array.from({ length: to - from }, (_, i) => encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, testPayload(from + i))));
    client.socket.write(concatBytes([encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(DEFAULT_AUDIO_CONFIG)), micFrames(0, 20)]));
    // What the file holds of the microphone's frames (a capture of the input channel); none before the sink has opened it.
    const recorded = () =>
      existsSync(disk.path("mic.wire"))
        ? parseWire(new Uint8Array(readFileSync(disk.path("mic.wire"))), INPUT_MAGIC).messages.filter((m) => m.type === MessageType.OpusFrame).map((m) => m.payload)
        : [];
    await until(() => recorded().length === 20, "the first frames in the file");

    disk.freeze();
    client.socket.write(micFrames(20, 40));
    await until(() => threadInWrite(agent.pid) !== undefined, "the sink's write held by the frozen disk");
    // Received while that write is under way: buffered after it, and written by the write that follows it, before the close.
    client.socket.write(micFrames(40, 45));
    await until(async () => (await scrapeValue(base, "jetkvm_microphone_frames_received_total")) === 45, "the frames sent during the held write received");
    // Before, the event loop itself waited in that write: nothing more of either channel, no answer, no signal taken.
    const heard = listener.messages.length;
    await until(() => listener.messages.length >= heard + 25, "the output channel's frames while the disk is frozen", 10_000);
    expect(threadInWrite(agent.pid)).not.toBe(agent.pid);
    expect(await healthz(base)).toMatchObject({ healthy: true });
    agent.kill("SIGTERM");
    await until(() => listener.isClosed, "the output channel stopped by SIGTERM while the disk is frozen", 10_000);

    disk.thaw();
    expect(await agent.exited, agent.stderr).toBe(0);
    expect(recorded()).toEqual(Array.from({ length: 45 }, (_, i) => testPayload(i)));
    expect(logFields(agent.stderr, "input-server", "stopped")).toMatchObject({ signal: "SIGTERM", frames: "45", dropped: "0" });
  }, 60_000);
});

describe("a log file on a disk that stops taking writes", () => {
  /** `output serve` streaming the tone in real time, its stderr appended to agent.log on a disk that can be frozen, once it is listening. */
  async function servingWithLogOnDisk(extra: string[] = []) {
    const dir = setup();
    mkdirSync(dir.path("disk"));
    const disk = await freezableDisk(dir.path("disk"));
    defer(disk.release);
    const out = dir.path("o.sock");
    const agent = start(
      disk.run(["sh", "-c", 'exec "$@" 2>>"$0"', join(dir.path("disk"), "agent.log"), ...AGENT, "output", "serve", "--socket", out, "--source", TONE, "--format", "ogg", "--realtime", "--loop", ...extra]),
      { env: agentEnv() },
    );
    const log = () => (existsSync(disk.path("agent.log")) ? readFileSync(disk.path("agent.log"), "utf8") : "");
    await until(() => / output-server: listening /.test(log()) && (!extra.includes("--metrics") || /http listening url=/.test(log())), "the agent listening, in its log");
    return { disk, agent, out, log };
  }

  /** The log's lines each whole and once, in time order. */
  function expectWholeInOrder(lines: string[]): void {
    const times = lines.map((l) => l.split(" ")[0]!);
    expect(times).toEqual([...times].sort());
    expect(new Set(lines).size).toBe(lines.length);
  }

  test.skipIf(!freezable)("`output serve 2>>FILE` on a frozen file system: the log's write waits in a thread of its own, while the audio streams on to a client that connects meanwhile (a line of the log), /healthz answers and SIGTERM is taken; once thawed every line is in the log, the stop's last", async () => {
    const { disk, agent, out, log } = await servingWithLogOnDisk(["--metrics", "127.0.0.1:0"]);
    const base = /http listening url=(http:\/\/[^\s"]+)/.exec(log())![1]!.replace(/\/$/, "");
    const first = await connectClient(defer, out);
    await until(() => first.messages.length >= 5, "the first client's frames");
    await until(() => (log().match(/ client connected /g) ?? []).length === 1, "the first client's line in the log");

    disk.freeze();
    // Its "client connected" line (and the first client's "replaced") wait for the disk; the audio does not.
    const second = await connectClient(defer, out);
    await until(() => second.messages.length >= 25, "frames to the client that connected while the log's disk is frozen", 10_000);
    const writer = threadInWrite(agent.pid);
    expect(writer).toBeDefined();
    expect(writer).not.toBe(agent.pid);
    expect(await healthz(base)).toMatchObject({ healthy: true });
    expect((log().match(/ client connected /g) ?? []).length).toBe(1);
    agent.kill("SIGTERM");
    await until(() => second.isClosed, "the output channel stopped by SIGTERM while the log's disk is frozen", 10_000);

    disk.thaw();
    expect(await agent.exited, log()).toBe(0);
    const lines = log().trimEnd().split("\n");
    expect(lines.filter((l) => / client connected /.test(l)).length).toBe(2);
    expect(lines.at(-1)).toMatch(/ stopped /);
    expectWholeInOrder(lines);
  }, 60_000);

  test.skipIf(!freezable)("`output serve 2>>FILE` stopped by SIGTERM while the log's disk is frozen waits for its last lines: a SIGHUP meanwhile is ignored, a second SIGTERM exits 143, the log's last line saying so once thawed", async () => {
    const { disk, agent, out, log } = await servingWithLogOnDisk();
    disk.freeze();
    // Its "client connected" line waits for the disk, and the stop's lines after it.
    const client = await connectClient(defer, out);
    await until(() => client.messages.length >= 5, "frames to the client that connected while the log's disk is frozen", 10_000);
    agent.kill("SIGTERM");
    await until(() => client.isClosed, "the output channel stopped by SIGTERM", 10_000);
    // The run has ended; the process waits for its log's disk.
    await Bun.sleep(200);
    agent.kill("SIGHUP");
    await Bun.sleep(200);
    agent.kill("SIGTERM");
    await Bun.sleep(200);
    disk.thaw();
    expect(await agent.exited, log()).toBe(143);
    const lines = log().trimEnd().split("\n");
    expect(lines.filter((l) => / stopped signal=SIGTERM /.test(l)).length).toBe(1);
    expect(lines.filter((l) => / SIGHUP ignored/.test(l)).length).toBe(1);
    expect(lines.at(-1)).toMatch(/ SIGTERM again during the stop: exiting at once exit_code=143$/);
    expectWholeInOrder(lines);
  }, 60_000);

  test.skipIf(!freezable)("`output serve 2>>FILE` given a second SIGTERM during its stop while the log's disk stays frozen: the log's waiting lines get their second and are given up, and the exit removes the socket file then, not once the disk is thawed", async () => {
    const { disk, agent, out, log } = await servingWithLogOnDisk();
    disk.freeze();
    // Not reading: the stop waits for it to take the queued frames and close, the socket file still there meanwhile.
    const client = await connectClient(defer, out, { paused: true });
    await until(() => threadInWrite(agent.pid) !== undefined, "the client's line held by the frozen disk");
    agent.kill("SIGTERM");
    await Bun.sleep(100);
    expect(existsSync(out)).toBe(true);
    agent.kill("SIGTERM");
    // Before, the exit wrote the waiting lines on the event loop, into the frozen disk: the socket file stayed until the thaw.
    await until(() => !existsSync(out), "the socket file removed by the exit while the log's disk is frozen", 10_000);
    client.close();

    disk.thaw();
    expect(await agent.exited).toBe(143);
    // Those given up are not begun: the log ends with a whole line.
    expect(log()).toMatch(/ output-server: [^\n]*\n$/);
  }, 60_000);
});

describe("a sink on a file system that is full", () => {
  // The room a file's last block has left is all a full tmpfs takes: for the tone, 1510 bytes, room for a
  // stream's OpusHead and OpusTags pages (102 bytes), not for a page of 2 s of audio.
  test.skipIf(!canUnshare("--mount"))("`output recv --append` to an Ogg recording: exit 1 naming ENOSPC, each frame received recorded or counted, and the recording left as players open it: the next stream's header pages, all that fit, taken off again", async () => {
    const dir = setup();
    mkdirSync(dir.path("disk"));
    const disk = await smallDisk(dir.path("disk"), 64 * 1024);
    defer(disk.release);
    copyFileSync(TONE, disk.path("rec.opus"));
    disk.fill();
    const path = dir.path("out.sock");
    const server = spawnAgent(["output", "serve", "--socket", path, "--source", TONE, "--format", "ogg"]);
    await server.waitForStderr("listening");
    const rec = join(dir.path("disk"), "rec.opus");
    const recv = start(disk.run([...AGENT, "output", "recv", "--socket", path, "--sink", rec, "--format", "ogg", "--append", "--page-ms", "2000", "--once"]), { env: agentEnv() });
    expect(await recv.exited).toBe(1);
    expect(failureLine(recv.stderr)).toBe(`audio-agent: cannot write to sink ${rec}: ENOSPC`);

    const kept = disk.path("rec.opus");
    const tone = new Uint8Array(readFileSync(TONE));
    expect(sameBytes(new Uint8Array(readFileSync(kept)).subarray(0, tone.length), tone)).toBe(true);
    // The agent's own source reads it to its end; opusdec opens it and plays at least what it held.
    const [before, after] = [await drainFile(TONE), await drainFile(kept)];
    expect(after.error).toBeUndefined();
    expect(decodedSamples(kept, dir.dir)).toBeGreaterThanOrEqual(decodedSamples(TONE, dir.dir));
    const stopped = logFields(recv.stderr, "output-client", "stopped");
    expect(after.frames.length - before.frames.length + Number(stopped.dropped_sink_write_failed)).toBe(Number(stopped.frames));
    expect(Number(stopped.frames)).toBe(before.frames.length);
  });
});

describe("a sink on a file system that is full, failing in the thread pool", () => {
  test.skipIf(!canUnshare("--mount"))("`serve --input-sink FILE`, a client that leaves without Stop: the session's last write, failing after its flush returned, still ends the run (exit 1 naming ENOSPC), every frame counted", async () => {
    const dir = setup();
    mkdirSync(dir.path("disk"));
    const disk = await smallDisk(dir.path("disk"), 64 * 1024);
    defer(disk.release);
    disk.fill();
    const rec = join(dir.path("disk"), "mic.wire");
    const path = dir.path("in.sock");
    // Nothing is written while the session lasts: the file's one write is the session end's, and nothing calls on the sink after
    // it but the write-out --page-ms later (10 s, past this test's time), which raised the failure before it was told as found.
    const server = start(
      disk.run([...AGENT, "serve", "--output-socket", dir.path("out.sock"), "--output-source", TONE, "--output-format", "ogg", "--input-socket", path, "--input-sink", rec, "--input-page-ms", "10000"]),
      { env: agentEnv() },
    );
    await server.waitForStderr("input-server: listening");
    const client = await connectClient(defer, path, { magic: INPUT_MAGIC });
    client.socket.write(
      concatBytes([
        encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(DEFAULT_AUDIO_CONFIG)),
        ...Array.from({ length: 20 }, (_, i) => encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, testPayload(i))),
      ]),
    );
    await server.waitForStderr("config");
    client.close();
    expect(await server.exited).toBe(1);
    expect(failureLine(server.stderr)).toBe(`audio-agent: cannot write to sink ${rec}: ENOSPC`);
    expect(logFields(server.stderr, "input-server", "stopped")).toMatchObject({ frames: "20", dropped_sink_write_failed: "20" });
  }, 8000);
});

describe("a sink that fails when a session ends (flushed from the connection's close, not a read)", () => {
  const session = (from: number, to: number, stop: boolean) =>
    concatBytes([
      encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(DEFAULT_AUDIO_CONFIG)),
      ...Array.from({ length: to - from }, (_, i) => encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, testPayload(from + i))),
      ...(stop ? [encodeMessage(INPUT_MAGIC, MessageType.Stop, new Uint8Array(0))] : []),
    ]);

  for (const ending of ["leaves without Stop", "is replaced by a new client"] as const) {
    test(`\`input serve --sink /dev/full\`, a client that ${ending}: exit 1 naming ENOSPC, every frame read counted as dropped`, async () => {
      const dir = setup();
      const path = dir.path("in.sock");
      // Nothing is flushed while the session lasts: the sink first fails at the session's end.
      const server = spawnAgent(["input", "serve", "--socket", path, "--sink", "/dev/full", "--page-ms", "10000"]);
      await server.waitForStderr("listening");
      const first = await connectClient(defer, path, { magic: INPUT_MAGIC });
      first.socket.write(session(0, 20, false));
      await server.waitForStderr("config");
      const next = () => connectClient(defer, path, { magic: INPUT_MAGIC }).then((c) => c.socket.write(session(20, 50, true)), () => 0);
      if (ending === "leaves without Stop") {
        first.close();
        await server.waitForStderr("session ended without Stop");
        // The failure ends the run at once: the server no longer serves anyone.
        await next();
      } else {
        await next();
      }
      expect(await server.exited).toBe(1);
      expect(failureLine(server.stderr)).toContain("ENOSPC");
      // A replacing client is still taken on (the failure no longer breaks off its accept half-way); a later one is not.
      expect(/client connected .*client=2/.test(server.stderr)).toBe(ending === "is replaced by a new client");
      const stopped = logFields(server.stderr, "input-server", "stopped");
      expect(Number(stopped.frames)).toBeGreaterThanOrEqual(20);
      expect(stopped.dropped).toBe(stopped.frames);
    });
  }
});

describe("a source that ends in the middle", () => {
  test("an Ogg file cut inside a page: exit 1 naming the page's byte offset; every frame before it arrives", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    const tone = new Uint8Array(readFileSync(TONE));
    const page = pagesOf(tone)[4]!;
    const cut = dir.path("cut.opus");
    writeFileSync(cut, tone.subarray(0, page.offset + Math.floor(page.size / 2)));
    const expected = await drainFile(cut);
    expect(expected.error?.message).toContain(`at byte ${page.offset}`);
    expect(expected.frames.length).toBeGreaterThan(0);

    const got = dir.path("got.wire");
    const server = spawnAgent(["output", "serve", "--socket", path, "--source", cut, "--format", "ogg"]);
    await server.waitForStderr("listening");
    const recv = spawnAgent(["output", "recv", "--socket", path, "--sink", got, "--once"]);
    expect(await server.exited).toBe(1);
    const line = failureLine(server.stderr);
    expect(line).toContain(cut);
    expect(line).toContain(`at byte ${page.offset}`);
    expect(await recv.exited).toBe(0);

    const acc = expectAccountedLine(server.stderr);
    const received = wireFileFrames(got);
    expect(received.trailing).toBe(0);
    expect(received.frames.length).toBe(expected.frames.length);
    expect(received.frames.every((p, i) => sameBytes(p, expected.frames[i]!.payload))).toBe(true);
    expect(acc.delivered).toBe(expected.frames.length);
  });

  test("a wire file cut inside a message, the client reading late: exit 1 naming the message's offset; every frame before it still arrives", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    // More than the socket buffers hold (about 800 kB in 400 frames), fewer frames than the
    // queue holds: the whole file is read, and frames are still queued when the source fails.
    const frames = 400;
    const before = indexedWire(0, frames, 4096).length;
    const next = indexedWire(frames, frames + 1, 4096);
    const cut = dir.path("cut.wire");
    writeFileSync(cut, concatBytes([indexedWire(0, frames, 4096), next.subarray(0, 20)]));
    const server = spawnAgent(["output", "serve", "--socket", path, "--source", cut]);
    await server.waitForStderr("listening");
    const client = await connectClient(defer, path, { paused: true });
    await server.waitForStderr("client connected");
    // Not reading yet while the server runs into the cut (setup only: if it were later, the test
    // would merely check less).
    await Bun.sleep(300);
    client.socket.resume();
    expect(await server.exited).toBe(1);
    expect(failureLine(server.stderr)).toBe(
      `audio-agent: wire source ${cut}: Truncated: stream ended ${next.length - 20} byte(s) short of a whole message at byte ${before}`,
    );
    await client.closed;

    const acc = expectAccountedLine(server.stderr);
    expect(acc.submitted).toBe(frames);
    expect(acc.delivered).toBe(frames);
    expect(expectIntactInOrder(client.frames, 4096)).toEqual([...Array(frames).keys()]);
    expect(client.pending).toBe(0);
  });
});

describe("a socket path that cannot be used", () => {
  for (const role of ["output serve", "input serve"] as const) {
    const args = (socket: string, dir: string) =>
      role === "output serve"
        ? ["output", "serve", "--socket", socket, "--source", writeSource(dir)]
        : ["input", "serve", "--socket", socket, "--sink", join(dir, "sink.wire")];

    test(`${role}: a directory that does not exist: exit 2, naming it`, async () => {
      const dir = setup();
      const missing = dir.path("no/such/dir");
      const agent = spawnAgent(args(join(missing, "s.sock"), dir.dir));
      expect(await agent.exited).toBe(2);
      const line = failureLine(agent.stderr);
      expect(line).toContain(missing);
      expect(line).toContain("does not exist");
    });

    // The default sockets live in /var/run, a symbolic link to /run on Debian and Buildroot alike.
    test(`${role}: a socket directory reached through a symbolic link (/var/run -> /run) is used as the directory it leads to; the socket goes at stop`, async () => {
      const dir = setup();
      mkdirSync(dir.path("run"));
      symlinkSync("run", dir.path("varrun"));
      const socket = dir.path("varrun/s.sock");
      const agent = spawnAgent(args(socket, dir.dir));
      await agent.waitForStderr("listening socket=");
      expect(statSync(dir.path("run/s.sock")).isSocket()).toBe(true);
      const client = await connectClient(defer, socket, { magic: role === "input serve" ? INPUT_MAGIC : undefined });
      client.socket.end();
      agent.kill("SIGTERM");
      const done = await agent.done;
      expect(done.code, done.stderr).toBe(0);
      expect(existsSync(dir.path("run/s.sock"))).toBe(false);
    });

    test(`${role}: a regular file at the path is refused (exit 2) and left as it was`, async () => {
      const dir = setup();
      const file = dir.path("s.sock");
      writeFileSync(file, "precious\n");
      const mtime = statSync(file).mtimeMs;
      const agent = spawnAgent(args(file, dir.dir));
      expect(await agent.exited).toBe(2);
      expect(failureLine(agent.stderr)).toContain(`${file} is a regular file`);
      expect(readFileSync(file, "utf8")).toBe("precious\n");
      expect(statSync(file).mtimeMs).toBe(mtime);
    });
  }

  test("a socket a live server answers on is refused (exit 2), and that server keeps serving", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    const live = spawnAgent(["output", "serve", "--socket", path, "--source", "-"], { stdin: "pipe" });
    await live.waitForStderr("listening");
    const feed = new StdinFeeder(live);
    const intruder = spawnAgent(["output", "serve", "--socket", path, "--source", writeSource(dir.dir)]);
    expect(await intruder.exited).toBe(2);
    expect(failureLine(intruder.stderr)).toContain("in use by a live server");

    const accepted = () => (live.stderr.match(/client connected/g) ?? []).length;
    const before = accepted();
    const client = await connectClient(defer, path);
    await until(() => accepted() === before + 1, "client accepted");
    await feed.send(100);
    await until(() => client.frames.length === 100, "100 frames");
    await feed.end();
    expect(await live.exited).toBe(0);
    const acc = expectAccountedLine(live.stderr);
    expect(acc.submitted).toBe(100);
    expect(acc.delivered).toBe(100);
    expect(expectIntactInOrder(client.frames)).toEqual([...Array(100).keys()]);
  });

  test("a live Go-style server bound through a symlinked directory (/var/run -> /run) is refused without a probe: the client it serves is not replaced", async () => {
    // JetKVM's Go server binds /var/run/audio_output.sock; /var/run is a symlink to /run, where the
    // agent's own unit puts sockets. Like the Go original, this server takes every new connection as
    // its client and closes the one it served, so a probe connection would cut its client off.
    const dir = setup();
    mkdirSync(dir.path("run"));
    symlinkSync(dir.path("run"), dir.path("varrun"));
    const events: string[] = [];
    let current: import("bun").Socket<undefined> | undefined;
    let opened = 0;
    const goStyle = Bun.listen({
      unix: dir.path("varrun/out.sock"),
      socket: {
        open: (socket) => {
          events.push(`open ${++opened}`);
          current?.end();
          current = socket;
        },
        data: (_socket, chunk) => void events.push(`data ${chunk.length}`),
        close: () => {},
      },
    });
    defer(() => goStyle.stop(true));
    const served = await connectClient(defer, dir.path("varrun/out.sock"));
    await until(() => events.length === 1, "the served client accepted");

    const intruder = await runAgent(["output", "serve", "--socket", dir.path("run/out.sock"), "--source", writeSource(dir.dir)]);
    // The served client was replaced by the marker, and by nothing before it.
    expect(await markedAfterRefusal(defer, intruder, dir.path("run/out.sock"), events)).toEqual(["open 1", "open 2", "data 3"]);
    await served.closed;
  });

  // /proc/net/unix lists a socket bound by a relative name as given ("s.sock"), relative to the
  // directory its own process ran in, which says nothing of where the agent runs: that listing is not
  // another name of the agent's stale socket file, however that file is named in the agent's directory.
  test("a stale socket is removed and served on, though a live server elsewhere bound the same basename by a relative name, whatever the agent's directory", async () => {
    const dir = await staleBesideRelativeListener();
    const path = dir.path("here/s.sock");
    const agent = spawnAgent(["output", "serve", "--socket", path, "--source", writeSource(dir.dir)], { cwd: dir.path("here") });
    await agent.waitForStderr("listening");
    await expectServesThenStops(defer, agent, path);
  });

  test("a stale socket named by a relative --socket is removed and served on, though a live server in another directory bound the same relative name", async () => {
    // /proc/net/unix lists both "s.sock": the other server's, bound from its own directory, says nothing of
    // the file "s.sock" names in the agent's directory, which nothing answers on (stale: README, removed).
    const dir = await staleBesideRelativeListener();
    const agent = spawnAgent(["output", "serve", "--socket", "s.sock", "--source", writeSource(dir.dir)], { cwd: dir.path("here") });
    await agent.waitForStderr(/listening|audio-agent: /);
    expect(agent.stderr).not.toContain("in use by a live server");
    await expectServesThenStops(defer, agent, dir.path("here/s.sock"));
  });

  test("a client on a relative --socket whose server is down (a stale stream socket) waits for it, though a datagram socket elsewhere was bound by the same relative name", async () => {
    const dir = setup();
    mkdirSync(dir.path("elsewhere"));
    mkdirSync(dir.path("here"));
    // Bound from its own directory, as another program started there binds: listed as "d.sock".
    const cwd = process.cwd();
    process.chdir(dir.path("elsewhere"));
    try {
      defer(bindSocket("d.sock", SOCK_DGRAM));
    } finally {
      process.chdir(cwd);
    }
    await makeStaleSocket(dir.path("here/d.sock"));
    const out = dir.path("here/out.wire");
    const recv = spawnAgent(["output", "recv", "--socket", "d.sock", "--sink", out, "--once"], { cwd: dir.path("here") });
    await recv.waitForStderr(/waiting for the server|audio-agent: /);
    expect(recv.stderr).not.toContain("datagram");
    // The server comes back: the client connects and takes every frame.
    const source = writeSource(dir.dir);
    spawnAgent(["output", "serve", "--socket", dir.path("here/d.sock"), "--source", source]);
    const done = await recv.done;
    expect(done.code, done.stderr).toBe(0);
    expect(wireFileFrames(out).frames.length).toBe(wireFileFrames(source).frames.length);
  });
});

// Which /proc/net/unix listing is the socket file at --socket: the listing's name, asked of the
// process that bound it (its root or working directory), must lead to the file. These are the cases
// where that process's view no longer tells, or tells of a process that is not the binder.
describe("a live server whose process no longer sees its socket by the name it bound", () => {
  test("a Go-style server bound by relative name in the socket's directory, that then changed directory: the agent given that same relative --socket refuses it (exit 2) without a probe connection", async () => {
    // The listing "s.sock", asked of its process's current directory, leads nowhere: it counts by its
    // name, equal to the agent's --socket. Dropped, the agent would probe, and the Go-style server
    // would take the probe for its new client (its real client cut off).
    const dir = setup();
    mkdirSync(dir.path("here"));
    mkdirSync(dir.path("later"));
    const events = await goStyleServerThatMoves(defer, "s.sock", dir.path("here"), dir.path("later"));

    const intruder = await runAgent(["output", "serve", "--socket", "s.sock", "--source", writeSource(dir.dir)], { cwd: dir.path("here") });
    // Had the agent probed, the server would have seen that connection before the marker.
    expect(await markedAfterRefusal(defer, intruder, dir.path("here/s.sock"), events)).toEqual(["listening", "open 1", "data 3"]);
  });
});

describe("a live server bound by a relative name", () => {
  test("a Go-style server bound by relative name in the socket's directory, still there: the agent given the absolute --socket from elsewhere refuses it (exit 2) without a probe connection", async () => {
    const dir = setup();
    mkdirSync(dir.path("here"));
    mkdirSync(dir.path("elsewhere"));
    const events = await goStyleServerThatMoves(defer, "s.sock", dir.path("here"), dir.path("here"));

    const intruder = await runAgent(["output", "serve", "--socket", dir.path("here/s.sock"), "--source", writeSource(dir.dir)], { cwd: dir.path("elsewhere") });
    expect(await markedAfterRefusal(defer, intruder, dir.path("here/s.sock"), events)).toEqual(["listening", "open 1", "data 3"]);
  });
});

describe("a socket path another mount namespace also uses", () => {
  // /proc/net/unix lists every socket of the network namespace by the name it was bound by, whatever the
  // mount namespace of its process: a service with a private /tmp (systemd's PrivateTmp=, a container on
  // the host's network) may list /tmp/x.sock for a file that is not the agent's /tmp/x.sock at all.
  test.skipIf(!canUnshare("--mount"))("a stale socket is removed and served on, though a server in another mount namespace listens by the same absolute name", async () => {
    const dir = setup();
    mkdirSync(dir.path("shared"));
    const path = dir.path("shared/s.sock");
    await makeStaleSocket(path);
    // The other service's own view of the directory: a tmpfs over it, in its mount namespace only.
    const script = `mount -t tmpfs none "$0" && exec "$1" -e 'Bun.listen({ unix: process.argv[1], socket: { data() {} } }); console.log("listening")' "$2"`;
    const other = Bun.spawn(["unshare", "-m", "sh", "-c", script, dir.path("shared"), BUN, path], { stdout: "pipe", stderr: "pipe", env: agentEnv() });
    defer(async () => {
      other.kill("SIGKILL");
      await other.exited;
    });
    const reader = other.stdout.getReader();
    let seen = "";
    while (!seen.includes("listening")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`listener exited: ${await new Response(other.stderr).text()}`);
      seen += new TextDecoder().decode(value);
    }
    // Our file is still the stale socket: nothing answers on it here.
    expect(lstatSync(path).isSocket()).toBe(true);
    const agent = spawnAgent(["output", "serve", "--socket", path, "--source", writeSource(dir.dir)]);
    await agent.waitForStderr(/listening|audio-agent: /);
    expect(agent.stderr).not.toContain("in use by a live server");
    await expectServesThenStops(defer, agent, path);
  });
});

describe("a live server in another network namespace", () => {
  // /proc/net/unix lists only this network namespace's sockets: a server in another (a container,
  // systemd's PrivateNetwork=) reached through a shared directory is found only by connecting, and
  // while its accept queue is full (the server stopped or busy) the kernel turns that connect away
  // with EAGAIN, as it turns a dead socket's away with ECONNREFUSED.
  test.skipIf(!canUnshare("--net"))("`output serve` stopped there, its accept queue full: another at its path refuses it (exit 2) and leaves its socket, which takes connections again once it resumes", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    const live = start(["unshare", "--net", ...AGENT, "output", "serve", "--socket", path, "--source", "-"], { env: agentEnv(), stdin: "pipe" });
    await live.waitForStderr("listening");
    const socket = lstatSync(path);
    expect(readFileSync("/proc/net/unix", "utf8")).not.toContain(path);
    live.kill("SIGSTOP");
    defer(() => live.kill("SIGCONT"));
    const queued = queueConnections(path, 1000);
    defer(() => closeConnections(queued));
    // Turned away before 1000: the queue is full.
    expect(queued.length).toBeLessThan(1000);

    // Bounded: one that took the path serves it until killed.
    const intruder = await runAgent(["output", "serve", "--socket", path, "--source", writeSource(dir.dir)], { timeoutMs: 30_000 });
    expect(intruder.code, intruder.stderr).toBe(2);
    expect(failureLine(intruder.stderr)).toBe(`audio-agent: --socket: socket ${path} is in use by a live server; stop it first`);
    expect(lstatSync(path)).toMatchObject({ dev: socket.dev, ino: socket.ino });

    closeConnections(queued);
    live.kill("SIGCONT");
    // Refused until it has taken those queued (closed, but queued until taken).
    await until(async () => (await connectOutcome(defer, path)) === "accepted", "a connection to the resumed server");
    live.kill("SIGTERM");
    const done = await live.done;
    expect(done.code, done.stderr).toBe(0);
  }, 90_000);
});

/** A stale socket at here/s.sock, and a live server elsewhere/ bound by the relative name "s.sock". */
async function staleBesideRelativeListener(): Promise<ReturnType<typeof setup>> {
  const dir = setup();
  mkdirSync(dir.path("elsewhere"));
  mkdirSync(dir.path("here"));
  const other = await spawnListener("s.sock", dir.path("elsewhere"));
  defer(other.kill);
  await makeStaleSocket(dir.path("here/s.sock"));
  return dir;
}

function writeSource(dir: string): string {
  const source = join(dir, "src.wire");
  if (!existsSync(source)) writeFileSync(source, indexedWire(0, 10));
  return source;
}

/** Audio packets in an Ogg Opus file, and whether its last page is flagged end-of-stream. */
async function oggSummary(path: string): Promise<{ packets: number; eos: boolean; error?: Error }> {
  const bytes = new Uint8Array(readFileSync(path));
  const pages = pagesOf(bytes);
  const read = await drainFile(path);
  // The frames recorded, as the source reads them: not the silence an end after the last flush trims whole.
  return { packets: read.frames.length, eos: (pages.at(-1)!.flags & 4) !== 0, error: read.error };
}

describe("an address or path the system refuses: one line naming the option, the value and the errno; nothing left behind", () => {
  /** A port held by another listener for the length of the test. */
  /** A loopback port nothing holds just now (held for a moment by the kernel's pick, then let go). */
  function freePort(): number {
    const picked = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = picked.port;
    picked.stop(true);
    return port;
  }

  function busyPort(): number {
    const holder = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("taken") });
    defer(() => holder.stop(true));
    return holder.port!;
  }

  // The HTTP servers listen in a directory of their own, in TMPDIR or /tmp: with neither writable there is none.
  test.skipIf(!canUnshare("--mount") || !existsSync("/dev/shm"))("--metrics with neither TMPDIR nor /tmp writable: exit 1 naming both and their errno, no socket file, the sink untouched", async () => {
    const dir = mkdtempSync("/dev/shm/aa-env-");
    defer(() => rmSync(dir, { recursive: true, force: true }));
    const sink = join(dir, "kept.wire");
    writeFileSync(sink, "an earlier recording\n");
    // /tmp made read-only where it is (the checkout may be in it), in a mount namespace of its own.
    const script = `mount --bind /tmp /tmp && mount -o remount,ro,bind /tmp && exec "$@"`;
    const agent = start(["unshare", "-m", "sh", "-c", script, "sh", ...AGENT, "input", "serve", "--socket", join(dir, "s.sock"), "--sink", sink, "--metrics", "0"], {
      env: { ...agentEnv(), TMPDIR: join(dir, "missing") },
    });
    expect(await agent.exited).toBe(1);
    expect(failureLine(agent.stderr)).toBe(
      `audio-agent: cannot make a directory for the sockets of the HTTP servers (--metrics, --monitor) in ${join(dir, "missing")} (ENOENT) or /tmp (EROFS): set TMPDIR to a directory the agent may write`,
    );
    expect(readdirSync(dir)).toEqual(["kept.wire"]);
    expect(readFileSync(sink, "utf8")).toBe("an earlier recording\n");
  });

  for (const role of ["output serve", "input serve"] as const) {
    test(`${role} --metrics on a port in use: exit 2, no socket file, the sink untouched`, async () => {
      const dir = setup();
      const port = busyPort();
      const socket = dir.path("s.sock");
      const sink = dir.path("kept.wire");
      writeFileSync(sink, "an earlier recording\n");
      const args = role === "output serve" ? ["output", "serve", "--source", writeSource(dir.dir)] : ["input", "serve", "--sink", sink];
      const agent = spawnAgent([...args, "--socket", socket, "--metrics", String(port)]);
      expect(await agent.exited).toBe(2);
      expect(failureLine(agent.stderr)).toBe(`audio-agent: --metrics 127.0.0.1:${port}: cannot listen: address in use (EADDRINUSE)`);
      expect(readdirSync(dir.dir).sort()).toEqual(["kept.wire", "src.wire"].filter((name) => existsSync(dir.path(name))).sort());
      expect(existsSync(socket)).toBe(false);
      expect(readFileSync(sink, "utf8")).toBe("an earlier recording\n");
    });
  }

  test("--monitor and --metrics sharing a port in use name both", async () => {
    const dir = setup();
    const port = busyPort();
    const agent = spawnAgent(["output", "serve", "--source", writeSource(dir.dir), "--socket", dir.path("s.sock"), "--metrics", `${port}`, "--monitor", `127.0.0.1:${port}`]);
    expect(await agent.exited).toBe(2);
    expect(failureLine(agent.stderr)).toBe(`audio-agent: --metrics and --monitor 127.0.0.1:${port}: cannot listen: address in use (EADDRINUSE)`);
    expect(existsSync(dir.path("s.sock"))).toBe(false);
  });

  // A command run by hand beside the service reads the service's config file, whose addresses the service holds.
  test("a config file's --metrics and --monitor on a port in use: off, by flag or variable, runs without them", async () => {
    const dir = setup();
    const port = busyPort();
    const config = dir.path("audio-agent.json");
    writeFileSync(config, JSON.stringify({ metrics: port, monitor: port }));
    const args = ["output", "serve", "--source", writeSource(dir.dir), "--socket", dir.path("s.sock"), "--config", config];
    const taken = spawnAgent(args);
    expect(await taken.exited).toBe(2);
    expect(failureLine(taken.stderr)).toBe(
      `audio-agent: --metrics and --monitor 127.0.0.1:${port} (from config "metrics" and "monitor" in ${config}; --metrics off --monitor off runs without them): cannot listen: address in use (EADDRINUSE)`,
    );
    // One after the other: they share the socket path.
    for (const [how, spawn] of [
      ["flags", () => spawnAgent([...args, "--metrics", "off", "--monitor", "off"])],
      ["variables", () => spawnAgent(args, { env: agentEnv({ AUDIO_AGENT_METRICS: "off", AUDIO_AGENT_MONITOR: "off" }) })],
    ] as const) {
      const agent = spawn();
      await agent.waitForStderr("output-server: listening");
      agent.kill("SIGTERM");
      expect({ how, code: await agent.exited }).toEqual({ how, code: 0 });
      expect(agent.stderr).not.toContain("http listening");
    }
  });

  test("--metrics PORT and --monitor localhost:PORT name one socket: one server answers both", async () => {
    const dir = setup();
    const port = freePort();
    const agent = spawnAgent(["output", "serve", "--source", writeSource(dir.dir), "--socket", dir.path("s.sock"), "--metrics", `${port}`, "--monitor", `localhost:${port}`]);
    await agent.waitForStderr("output-server: listening");
    for (const path of ["/metrics", "/healthz", "/figures"]) {
      expect([path, (await fetch(`http://127.0.0.1:${port}${path}`)).status]).toEqual([path, 200]);
    }
    expect(agent.stderr.match(/http listening/g)).toEqual(["http listening"]);
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
  });

  test("--metrics and --monitor on one port of two loopback addresses (127.0.0.1, 127.0.0.2) are two servers, each at its own", async () => {
    const dir = setup();
    const port = freePort();
    const agent = spawnAgent(["output", "serve", "--source", writeSource(dir.dir), "--socket", dir.path("s.sock"), "--metrics", `127.0.0.1:${port}`, "--monitor", `127.0.0.2:${port}`]);
    await agent.waitForStderr("output-server: listening");
    expect(agent.stderr.match(/http listening url=\S+/g)).toEqual([`http listening url=http://127.0.0.1:${port}/`, `http listening url=http://127.0.0.2:${port}/`]);
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
  });

  // Bun's error then carries whatever errno was left over: ENOENT, or EINVAL after reading a config file.
  test("--metrics on a host name that resolves to nothing: exit 2 saying so, not 'no such file'", async () => {
    const dir = setup();
    const agent = spawnAgent(["output", "serve", "--source", writeSource(dir.dir), "--socket", dir.path("s.sock"), "--metrics", "no-such-host.invalid:9"]);
    expect(await agent.exited).toBe(2);
    expect(failureLine(agent.stderr)).toBe("audio-agent: --metrics no-such-host.invalid:9: cannot listen: the host resolves to no address (ENOTFOUND)");
  });

  test("a socket path under /proc: exit 2 naming --socket, the path and the errno", async () => {
    const dir = setup();
    const socket = "/proc/audio-agent-test.sock";
    const agent = spawnAgent(["output", "serve", "--source", writeSource(dir.dir), "--socket", socket, "--metrics", "0"]);
    expect(await agent.exited).toBe(2);
    expect(failureLine(agent.stderr)).toMatch(new RegExp(`^audio-agent: --socket ${socket}: cannot listen: .* \\(E[A-Z]+\\)$`));
    expect(existsSync(socket)).toBe(false);
  });

});

describe("signals", () => {
  for (const mode of ["flood", "realtime"] as const) {
    test(`SIGTERM while an Ogg sink records a ${mode} stream: exit 0, a complete file opusinfo accepts, every received frame in it`, async () => {
      const dir = setup();
      const path = dir.path("out.sock");
      const out = dir.path("got.opus");
      const pacing = mode === "realtime" ? ["--realtime"] : [];
      const server = spawnAgent(["output", "serve", "--socket", path, "--source", TONE, "--format", "ogg", "--loop", ...pacing]);
      await server.waitForStderr("listening");
      const recv = spawnAgent(["output", "recv", "--socket", path, "--sink", out, "--format", "ogg"]);
      // Pages reach the file as audio arrives (every 100 ms at the latest).
      await until(() => existsSync(out) && statSync(out).size > (mode === "flood" ? 200_000 : 4_000), "audio in the file");
      recv.kill("SIGTERM");
      expect(await recv.exited).toBe(0);
      server.kill("SIGTERM");
      expect(await server.exited).toBe(0);

      expect(opusinfo(out).verdict.code).toBe(0);
      const summary = await oggSummary(out);
      expect(summary.error).toBeUndefined();
      expect(summary.eos).toBe(true);
      const stopped = logFields(recv.stderr, "output-client", "stopped");
      expect(stopped.signal).toBe("SIGTERM");
      expect(summary.packets).toBe(Number(stopped.frames));
      expectAccountedLine(server.stderr);
    });
  }

  test("SIGHUP, SIGUSR1 and SIGUSR2 are logged and ignored by both ends: frames keep flowing; SIGTERM then exits 0 with every frame accounted", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    const sink = dir.path("got.wire");
    const server = spawnAgent(["output", "serve", "--socket", path, "--source", "-"], { stdin: "pipe" });
    await server.waitForStderr("listening");
    const feed = new StdinFeeder(server);
    const recv = spawnAgent(["output", "recv", "--socket", path, "--sink", sink]);
    await server.waitForStderr("client connected");
    await feed.send(200);
    await until(() => existsSync(sink) && wireFileFrames(sink).frames.length === 200, "200 frames recorded");

    // A log rotation's kill -USR1 meant for another daemon among them.
    for (const signal of ["SIGHUP", "SIGUSR1", "SIGUSR2"] as const) {
      server.kill(signal);
      recv.kill(signal);
      await server.waitForStderr(`${signal} ignored`);
      await recv.waitForStderr(`${signal} ignored`);
    }
    await feed.send(200);
    await until(() => wireFileFrames(sink).frames.length === 400, "200 more frames after SIGHUP");
    expect(server.hasExited || recv.hasExited).toBe(false);

    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    recv.kill("SIGTERM");
    expect(await recv.exited).toBe(0);
    const acc = expectAccountedLine(server.stderr);
    expect(acc.submitted).toBe(400);
    expect(acc.delivered).toBe(400);
    expect(expectIntactInOrder(wireFileFrames(sink).frames)).toEqual([...Array(400).keys()]);
  });

  test("SIGTERM while a stdin source is open and idle: exit 0, every frame read accounted", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    const server = spawnAgent(["output", "serve", "--socket", path, "--source", "-"], { stdin: "pipe" });
    await server.waitForStderr("listening");
    const client = await connectClient(defer, path);
    await server.waitForStderr("client connected");
    const feed = new StdinFeeder(server);
    await feed.send(100);
    await until(() => client.frames.length === 100, "100 frames");
    server.kill("SIGTERM"); // stdin still open, nothing more coming
    expect(await server.exited).toBe(0);
    const acc = expectAccountedLine(server.stderr);
    expect(acc.submitted).toBe(100);
    expect(acc.delivered).toBe(100);
  });

  test("SIGTERM while a lossless file source waits for queue room (client not reading): every frame read is accounted", async () => {
    const { server } = await losslessServerWaitingForRoom();
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    const acc = expectAccountedLine(server.stderr);
    expect(acc.byReason.shutdown ?? 0).toBeGreaterThan(0);
  });
});

describe("a log reader that stops reading", () => {
  test("stderr on a terminal whose output is stopped (Ctrl-S): the audio flows and SIGTERM stops the agent (exit 0)", async () => {
    const dir = setup();
    const sock = dir.path("out.sock");
    // python3 opens a pty, stops its output as Ctrl-S does, and runs the agent with stderr on it.
    const onStoppedTerminal = [
      "import pty, subprocess, sys, termios",
      "master, slave = pty.openpty()",
      "termios.tcflow(slave, termios.TCOOFF)",
      "p = subprocess.Popen(sys.argv[1:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave)",
      "print(p.pid, flush=True)",
      "print('exit', p.wait(), flush=True)",
    ].join("\n");
    const wrapper = start(["python3", "-c", onStoppedTerminal, ...AGENT, "output", "serve", "--socket", sock, "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--stats-interval", "0.1"], {
      env: agentEnv(),
      timeoutMs: 30_000,
    });
    await until(() => existsSync(sock) && /^\d+\n/.test(wrapper.stdout), "the socket");
    const agentPid = Number(wrapper.stdout.split("\n")[0]);
    defer(() => {
      try {
        process.kill(agentPid, "SIGKILL"); // one that hung: not left behind
      } catch {
        // gone, as it should be
      }
    });
    const recv = await runAgent(["output", "recv", "--socket", sock, "--sink", dir.path("out.ogg"), "--format", "ogg", "--count", "25", "--connect-timeout", "10"], { timeoutMs: 15_000 });
    expect(recv.code, recv.stderr).toBe(0);
    process.kill(agentPid, "SIGTERM");
    expect(await wrapper.exited).toBe(0);
    expect(wrapper.stdout).toContain("exit 0\n");
  });

  test("stderr on /dev/full: every line fails to write, and the agent streams on and stops on SIGTERM with exit 0", async () => {
    const dir = setup();
    const sock = dir.path("out.sock");
    const agent = start(["sh", "-c", 'exec "$@" 2>/dev/full', "sh", ...AGENT, "output", "serve", "--socket", sock, "--source", TONE, "--format", "ogg", "--realtime", "--loop"], {
      env: agentEnv(),
    });
    await until(() => existsSync(sock), "the socket");
    const recv = await runAgent(["output", "recv", "--socket", sock, "--sink", dir.path("out.ogg"), "--format", "ogg", "--count", "25", "--connect-timeout", "10"]);
    expect(recv.code, recv.stderr).toBe(0);
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
  });


  test("stderr on a FIFO already full and not read: the audio flows and SIGTERM stops the agent (exit 0); the reader, back, gets whole lines to the last", async () => {
    const dir = setup();
    const sock = dir.path("out.sock");
    const fifo = makeFifo(dir.path("log"));
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    defer(() => closeSync(reader));
    // Full before the agent's first line: 4 KiB of filler nobody reads yet.
    const filler = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    expect(setPipeSize(filler, 4096)).toMatchObject({ ok: true, bytes: 4096 });
    const dots = new Uint8Array(4096).fill(0x2e);
    expect(writeSync(filler, dots)).toBe(4096);
    closeSync(filler);
    const agent = start(
      ["sh", "-c", 'log=$1; shift; exec "$@" 2>"$log"', "sh", fifo, ...AGENT, "output", "serve", "--socket", sock, "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--stats-interval", "0.1"],
      { env: agentEnv() },
    );
    await until(() => existsSync(sock), "the socket");
    const recv = await runAgent(["output", "recv", "--socket", sock, "--sink", dir.path("out.ogg"), "--format", "ogg", "--count", "50", "--connect-timeout", "10"]);
    expect(recv.code, recv.stderr).toBe(0);
    expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: "50" });

    // The reader comes back: the filler, then the lines that waited, then the rest as they come.
    let read = "";
    const readNow = () => void (read += readAvailableText(reader));
    await until(() => (readNow(), read.includes("output-server: listening")), "the first line that waited", 10_000);
    agent.kill("SIGTERM");
    await until(() => (readNow(), read.includes("output-server: stopped")), "the last line", 10_000);
    expect(await agent.exited).toBe(0);
    readNow();
    expect(read.startsWith(".".repeat(4096))).toBe(true);
    const lines = read.slice(4096).split("\n");
    expect(lines.pop()).toBe("");
    for (const text of lines) expect(text).toMatch(/^\d{4}-\d\d-\d\dT\S+Z (INFO |WARN |DEBUG|ERROR) [a-z-]+: /);
    expect(lines.some((text) => text.includes("stats"))).toBe(true);
  });
});

describe("stderr a pipe the agent can open again", () => {
  test("is written through a non-blocking description of the agent's own: the description it shares with whoever handed it down is never made non-blocking", async () => {
    const dir = setup();
    const sock = dir.path("out.sock");
    const fifo = makeFifo(dir.path("log"));
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    defer(() => closeSync(reader));
    const agent = start(["sh", "-c", 'log=$1; shift; exec "$@" 2>"$log"', "sh", fifo, ...AGENT, "output", "serve", "--socket", sock, "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--stats-interval", "0.1"], {
      env: agentEnv(),
    });
    await until(() => existsSync(sock), "the socket");
    const flagsOf = (fd: string) => parseInt(/flags:\s+([0-7]+)/.exec(readFileSync(`/proc/${agent.pid}/fdinfo/${fd}`, "latin1"))![1]!, 8);
    // A descriptor listed may close before it is read (the agent opens and closes others meanwhile).
    const linkOf = (fd: string) => {
      try {
        return readlinkSync(`/proc/${agent.pid}/fd/${fd}`);
      } catch {
        return undefined;
      }
    };
    const onFifo = () => readdirSync(`/proc/${agent.pid}/fd`).filter((fd) => linkOf(fd) === fifo);
    // The log's own description: a second descriptor on the FIFO, non-blocking.
    await until(() => onFifo().length === 2, "the log's own description");
    expect(onFifo().filter((fd) => fd !== "2").map((fd) => flagsOf(fd) & 0o4000)).toEqual([0o4000]);
    // The shared description stays as it was handed down.
    expect(flagsOf("2") & 0o4000).toBe(0);
    agent.kill("SIGTERM");
    readAvailableText(reader);
    expect(await agent.exited).toBe(0);
  });
});

describe("a log reader that is not reading as the agent exits", () => {
  test("a second signal's exit (143, no orderly stop) still offers the lines waiting to the reader: one that reads again at once gets them, whole", async () => {
    const dir = setup();
    const sock = dir.path("out.sock");
    const fifo = makeFifo(dir.path("log"));
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    defer(() => closeSync(reader));
    // Full before the agent's first line: 4 KiB of filler nobody reads yet, so every line the agent logs waits.
    const filler = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    expect(setPipeSize(filler, 4096)).toMatchObject({ ok: true, bytes: 4096 });
    expect(writeSync(filler, new Uint8Array(4096).fill(0x2e))).toBe(4096);
    closeSync(filler);
    // Lossless, 8 MB for a client that never reads: the first SIGTERM's stop is still flushing when the second comes.
    await writeWireFile(dir.path("queued.wire"), 2000, () => new Uint8Array(4096));
    const agent = start(["sh", "-c", 'log=$1; shift; exec "$@" 2>"$log"', "sh", fifo, ...AGENT, "output", "serve", "--socket", sock, "--source", dir.path("queued.wire")], {
      env: agentEnv(),
    });
    await until(() => existsSync(sock), "the socket");
    // Accepted once its first frames come; then it reads no more. (A count of the agent's descriptors
    // cannot tell: one of its own, open for a moment as the count is taken, hides the client's.)
    const client = await connectClient(defer, sock);
    client.onChunk = () => client.socket.pause();
    await until(() => client.bytes > 0, "the client accepted");
    await agent.signalTaken("SIGTERM");
    agent.kill("SIGTERM");
    // The reader is back at once; the agent, exiting, has a second to hand it what waits.
    let read = "";
    await until(() => ((read += readAvailableText(reader)), read.includes("client connected")), "the lines that waited", 5000, 1).catch(() => {});
    expect(await agent.exited).toBe(143);
    read += readAvailableText(reader);
    expect(read.startsWith(".".repeat(4096))).toBe(true);
    expect(read).toContain("output-server: listening");
    expect(read).toContain("output-server: client connected");
    const lines = read.slice(4096).split("\n");
    expect(lines.pop()).toBe("");
    for (const text of lines) expect(text).toMatch(/^\d{4}-\d\d-\d\dT\S+Z (INFO |WARN |DEBUG|ERROR) [a-z-]+: /);
  });
});

describe("what a clean exit still owes", () => {
  test("SIGTERM to a lossless output serve whose client had stopped reading and reads again 200 ms later: the final flush delivers what was queued, nothing dropped", async () => {
    const { server, client } = await losslessServerWaitingForRoom();
    server.kill("SIGTERM");
    // Back a moment later, well within the second a shutdown gives the queue.
    await Bun.sleep(200);
    client.socket.resume();
    expect(await server.exited).toBe(0);
    const acc = expectAccountedLine(server.stderr);
    expect(acc.byReason).toEqual({});
    expect(acc.delivered).toBe(acc.submitted);
    await until(() => client.frames.length === acc.delivered, "every frame delivered to reach the client", 10_000);
    expect(client.frames.map(payloadIndex)).toEqual(Array.from({ length: acc.delivered }, (_, i) => i));
  });

  test("lines held back by the rate limit are summed up at a clean exit, before the stopped line, not lost with it", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    const server = spawnAgent(["output", "serve", "--socket", path, "--source", TONE, "--format", "ogg", "--realtime", "--loop"]);
    await server.waitForStderr("listening socket=");
    // 15 clients in quick succession: 15 "client connected" lines in one window of 10 s, which logs 10.
    for (let i = 0; i < 15; i++) {
      const client = await connectClient(defer, path);
      if (i < 10) await server.waitForStderr(`client connected socket=${path} client=${i + 1}\n`);
      else await Bun.sleep(50);
      client.socket.end();
    }
    await Bun.sleep(100);
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    expect(server.stderr.match(/client connected socket=/g)?.length).toBe(10);
    expect(server.stderr).toMatch(/output-server: 5 more "client connected" lines in the last \d+(\.\d)? s suppressed=5\n/);
    // Before the "stopped" line, which ends the channel's log: not after it.
    expect(server.stderr.indexOf('5 more "client connected" lines')).toBeLessThan(server.stderr.indexOf("output-server: stopped"));
  });

  // Each way a role stops, waiting where it waits: the lines held back are summed up before every stopped line.
  test.each([
    ["input serve", ["input", "serve", "--socket", "i.sock", "--sink", "/dev/null"], "listening socket=", ["input-server"]],
    ["output recv waiting for a reader of its FIFO sink", ["output", "recv", "--socket", "none.sock", "--sink", "sink.fifo"], "waiting for a reader of the sink FIFO", ["output-client"]],
    ["output recv waiting for its server", ["output", "recv", "--socket", "none.sock", "--sink", "out.wire"], "waiting for the server", ["output-client"]],
    ["input send waiting for a writer of its FIFO source", ["input", "send", "--socket", "none.sock", "--source", "source.fifo", "--format", "ogg"], "waiting for a writer", ["input-client"]],
    ["input send waiting for its server", ["input", "send", "--socket", "none.sock", "--source", TONE, "--format", "ogg"], "waiting for the server", ["input-client"]],
    ["serve", ["serve", "--output-socket", "o.sock", "--output-source", TONE, "--output-format", "ogg", "--output-realtime", "--output-loop", "--input-socket", "i.sock", "--input-sink", "/dev/null"], "input-server: listening", ["output-server", "input-server"]],
  ] as const)("%s: lines held back (15 SIGHUPs, 10 logged) are summed up before its stopped line", async (_, args, waiting, channels) => {
    const dir = setup();
    makeFifo(dir.path("sink.fifo"));
    makeFifo(dir.path("source.fifo"));
    const agent = spawnAgent(args.map((arg) => (/\.(sock|fifo|wire)$/.test(arg) ? dir.path(arg) : arg)));
    await agent.waitForStderr(waiting);
    // Each SIGHUP taken before the next is sent: two pending at once would be one.
    for (let i = 0; i < 15; i++) {
      await agent.signalTaken("SIGHUP");
      if (i < 10) await until(() => agent.stderr.split("SIGHUP ignored").length === i + 2, `SIGHUP line ${i + 1}`);
    }
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    const summary = agent.stderr.indexOf('agent: 5 more "SIGHUP ignored; use SIGTERM to stop" lines');
    expect(summary).toBeGreaterThan(0);
    const after = (channel: string) => agent.stderr.indexOf(`${channel}: stopped signal=SIGTERM`) > summary;
    expect(channels.map((channel) => [channel, after(channel)])).toEqual(channels.map((channel) => [channel, true]));
  });
});
