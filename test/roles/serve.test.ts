/**
 * `audio-agent serve`: output serve and input serve in one process, as real
 * processes with real peers (`output recv`, `input send`) on real sockets.
 * Both channels carry their frames at once, one /metrics and /healthz cover
 * both, a channel that ends stops alone, a channel that fails stops the
 * other and ends the run with its failure.
 */
import { describe, expect, test } from "bun:test";
import { closeSync, constants, existsSync, mkdirSync, openSync, readFileSync, readlinkSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { basename, join } from "node:path";
import { READER_LOOK_MS } from "../../src/media/fifo-sink.ts";
import { DEFAULT_AUDIO_CONFIG, encodeConfigPayload, encodeMessage, INPUT_MAGIC, MessageType, OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import { expectAccountedLine, failureLine, logFields } from "../support/agent-log.ts";
import { sameBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { HELD_READER, makeFifo, releaseReader, writeIntoFifo } from "../support/fifo.ts";
import { healthz, metricsUrl, parseSamples, promtoolCheck, samples, scrape, scrapeUntil, scrapeValue, value } from "../support/metrics.ts";
import { audioPacketsOf, pagesOf } from "../support/ogg.ts";
import { encodeWith } from "../support/opus-fixtures.ts";
import { expectIntactInOrder, firstMismatch, indexedPayload, testPayload } from "../support/payloads.ts";
import { connectClient, connectOutcome } from "../support/peer.ts";
import { readToEnd, resetOnClose, socketPair } from "../support/player-sockets.ts";
import { canSlowWrites, slowWrites } from "../support/machine.ts";
import { outOfDescriptors, threadInSync } from "../support/proc.ts";
import { AGENT, agentEnv, runAgent, spawnAgent, start, stopAgents, type Spawned } from "../support/processes.ts";
import { drainFile } from "../support/sources.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { indexedWire, wholeWireFrames, wholeWireMessages, wireFileFrames, wireHeader, writeWireFile } from "../support/wire.ts";

const defer = useCleanup();

function setup() {
  const t = socketDir(defer, "aasv-");
  defer(() => stopAgents());
  return { ...t, out: t.path("o.sock"), in: t.path("i.sock") };
}

/** The line /proc/self/fdinfo gives a descriptor's open flags (octal), at the end of a file. */
const FLAGS_AT_END = /flags:\s+([0-7]+)\n$/;

/** The microphone frames: told apart from the output channel's by their payloads. */
const micPayload = (i: number) => testPayload(i + 10_000);

/** The OpusFrame payloads of an input sink in wire format, after checking it holds whole sessions (Config first, Stop last). */
function sinkFrames(path: string): { frames: Uint8Array[]; sessions: number } {
  const messages = wholeWireMessages(path, INPUT_MAGIC);
  const sessions = messages.filter((m) => m.type === MessageType.Config).length;
  expect(messages[0]?.type).toBe(MessageType.Config);
  expect(messages.at(-1)?.type).toBe(MessageType.Stop);
  return { frames: messages.filter((m) => m.type === MessageType.OpusFrame).map((m) => m.payload), sessions };
}

/**
 * One `input send` session of 200 large frames (4096 bytes, which fill a pipe
 * fast), told apart by their indices: session k carries k*1000 + 0..199.
 */
async function micSession(t: ReturnType<typeof setup>, k: number): Promise<void> {
  const file = t.path(`mic-${k}.wire`);
  await writeWireFile(file, 200, (i) => indexedPayload(k * 1000 + i, 4096));
  const sent = await runAgent(["input", "send", "--socket", t.in, "--source", file, "--max-latency-ms", "60000", "--write-deadline-ms", "0"]);
  expect(sent.code, sent.stderr).toBe(0);
}

/**
 * One `input send` session into `agent` (its input channel on t.in, sink "-"), then SIGTERM: exit 0,
 * and stdout was written as a file is, not as a player's pipe.
 */
async function sessionWrittenBlocking(t: ReturnType<typeof setup>, agent: Spawned): Promise<void> {
  await agent.waitForStderr("input-server: listening");
  await micSession(t, 0);
  await agent.waitForStderr("input-server: session ended by Stop");
  agent.kill("SIGTERM");
  expect(await agent.exited, agent.stderr).toBe(0);
  expect(agent.stderr).not.toContain("without blocking");
}

/**
 * A hand-written microphone client on the input socket that never reads (the Acks it is sent stay
 * unread in its socket); `send` writes one message stamped `ms` (Unix ms, now unless given), `write` any bytes.
 */
/** serve with a source on stdin (nothing sent unless written), a wire microphone sink and /metrics, both channels listening. */
async function serveWithMetrics(t: ReturnType<typeof setup>): Promise<{ agent: Spawned; base: string }> {
  const agent = spawnAgent(["serve", "--output-socket", t.out, "--output-source", "-", "--input-socket", t.in, "--input-sink", t.path("mic.wire"), "--metrics", "127.0.0.1:0"], {
    stdin: "pipe",
  });
  const base = await metricsUrl(agent);
  await agent.waitForStderr("input-server: listening");
  return { agent, base };
}

async function rawMic(path: string): Promise<{ send: (type: MessageType, payload?: Uint8Array, ms?: number) => void; write: (bytes: Uint8Array) => void }> {
  const client = await connectClient(defer, path, { paused: true, magic: INPUT_MAGIC });
  const write = (bytes: Uint8Array) => expect(client.socket.write(bytes)).toBe(bytes.length);
  return {
    send: (type, payload, ms = Date.now()) => write(encodeMessage(INPUT_MAGIC, type, payload, BigInt(Math.round(ms)) * 1_000_000n)),
    write,
  };
}

/** The fields of every "<component>: stats" line so far, numbers as numbers. */
function statsLines(stderr: string, component: string): Record<string, number | string>[] {
  return stderr
    .split("\n")
    .filter((line) => line.includes(` ${component}: stats `))
    .map((line) => {
      const fields = logFields(line, component, "stats");
      return Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, Number.isNaN(Number(v)) ? v : Number(v)]));
    });
}

function sum(lines: Record<string, number | string>[], key: string): number {
  return lines.reduce((total, line) => total + (typeof line[key] === "number" ? (line[key] as number) : 0), 0);
}

function expectFrames(frames: Uint8Array[], count: number, payloadOf: (i: number) => Uint8Array): void {
  expect(frames.length).toBe(count);
  expect(frames.findIndex((frame, i) => !sameBytes(frame, payloadOf(i)))).toBe(-1);
}

describe("serve: both channels in one process", () => {
  test(
    "an encoder's FIFO reaches output recv while input send's frames land in the sink, both at once; metrics and /healthz cover both; SIGTERM exits 0 and removes both sockets",
    async () => {
      const t = setup();
      const fifo = makeFifo(t.path("capture.wire"));
      const capture = t.path("capture-file.wire");
      const mic = t.path("mic.wire");
      const sink = t.path("sink.wire");
      await writeWireFile(capture, 300);
      await writeWireFile(mic, 150, micPayload);
      // A live FIFO source: a queue that holds the encoder's burst, no deadline or budget, so nothing is dropped.
      const spawned = performance.now();
      const agent = spawnAgent([
        "serve",
        "--output-socket", t.out, "--output-source", fifo, "--output-queue-frames", "1000", "--output-write-deadline-ms", "0", "--output-max-latency-ms", "60000",
        "--input-socket", t.in, "--input-sink", sink,
        "--metrics", "127.0.0.1:0",
      ]);
      const base = await metricsUrl(agent);
      await agent.waitForStderr("input-server: listening");
      expect(agent.stderr).toContain("output-server: listening");

      const recv = spawnAgent(["output", "recv", "--socket", t.out, "--sink", t.path("out.wire"), "--count", "300"]);
      await agent.waitForStderr("output-server: client connected");
      // Both channels at once: the encoder writes the FIFO while input send streams its file in real time (3 s).
      // No deadline or budget on the sender: a loaded machine pausing the agent for over 100 ms would
      // otherwise drop (and count) frames, which is not what this test is about.
      const send = spawnAgent(["input", "send", "--socket", t.in, "--source", mic, "--realtime", "--heartbeat-ms", "200", "--max-latency-ms", "60000", "--write-deadline-ms", "0"]);
      await agent.waitForStderr("input-server: client connected");
      const [written, received, sent] = await Promise.all([writeIntoFifo(fifo, capture), recv.exited, send.exited]);
      expect(written).toBe(0);
      expect(received, recv.stderr).toBe(0);
      expect(sent, send.stderr).toBe(0);
      expect(logFields(send.stderr, "input-client", "stopped")).toMatchObject({ frames: "150", dropped: "0" });
      await agent.waitForStderr("input-server: session ended by Stop");

      expectFrames(wholeWireFrames(t.path("out.wire")), 300, testPayload);
      const input = sinkFrames(sink);
      expect(input.sessions).toBe(1);
      expectFrames(input.frames, 150, micPayload);

      // One registry: both channels' families, the process metrics once; promtool is happy.
      const text = await scrape(base);
      const { code, output } = await promtoolCheck(text);
      expect(output).toBe("");
      expect(code).toBe(0);
      expect(value(text, "jetkvm_audio_frames_sent_total")).toBe(300);
      expect(value(text, "jetkvm_microphone_frames_received_total")).toBe(150);
      expect(value(text, "audio_agent_frames_dropped_by_reason_total", { channel: "output", reason: "no_client" })).toBe(0);
      // The input channel's reasons are there from the first scrape, at 0: its own and its file sink's.
      const inputDrops = samples(text, "audio_agent_frames_dropped_by_reason_total", { channel: "input" });
      expect(inputDrops.map((s) => [s.labels.reason, s.value]).sort()).toEqual([
        ["session_ended", 0],
        ["sink_no_reader", 0],
        ["sink_reader_slow", 0],
        ["sink_write_failed", 0],
      ]);
      expect(value(text, "audio_agent_queue_capacity_frames", { channel: "output" })).toBe(1000);
      // The receiving channel's series from the first scrape, at 0 (input send stamps from this machine's
      // clock); the output channel sends here and receives no stamps.
      expect(samples(text, "audio_agent_frame_stamps_unusable_total").map((s) => [s.labels.channel, s.value])).toEqual([["input", 0]]);
      expect(value(text, "audio_agent_frame_age_seconds_count", { channel: "input" })).toBeGreaterThan(0);
      expect(value(text, "audio_agent_enqueue_to_write_seconds_count", { channel: "output" })).toBeGreaterThan(0);
      // Each channel has the histograms of what it records: the input server's Acks are not timed, the output server receives no frames.
      expect(samples(text, "audio_agent_enqueue_to_write_seconds_count", { channel: "input" })).toEqual([]);
      expect(samples(text, "audio_agent_frame_age_seconds_count", { channel: "output" })).toEqual([]);
      expect(samples(text, "audio_agent_heartbeat_rtt_seconds_count")).toEqual([]);
      expect(samples(text, "process_resident_memory_bytes").length).toBe(1);
      expect(samples(text, "audio_agent_connected").map((s) => s.labels.channel).sort()).toEqual(["input", "output"]);
      expect([value(text, "audio_agent_listening", { channel: "output" }), value(text, "audio_agent_listening", { channel: "input" })]).toEqual([1, 1]);

      const health = await healthz(base);
      expect(health).toMatchObject({
        role: "serve",
        channels: {
          output: { listening: true, frames: 300, drops: 0, connects: 1 },
          input: { listening: true, frames: 150, sessions: 1, clean_sessions: 1, config: { sampleRate: 48000, channels: 2, frameSize: 960 } },
        },
      });
      expect(health.uptime_seconds as number).toBeGreaterThan(0);
      // Seconds: no more than the test has waited since it started the agent.
      expect(health.uptime_seconds as number).toBeLessThanOrEqual((performance.now() - spawned) / 1000);

      agent.kill("SIGTERM");
      expect(await agent.exited, agent.stderr).toBe(0);
      expect(existsSync(t.out)).toBe(false);
      expect(existsSync(t.in)).toBe(false);
      // Each channel's own final line, its accounting whole.
      expect(expectAccountedLine(agent.stderr)).toMatchObject({ submitted: 300, delivered: 300, dropped: 0 });
      expect(logFields(agent.stderr, "output-server", "stopped").signal).toBe("SIGTERM");
      expect(logFields(agent.stderr, "input-server", "stopped")).toMatchObject({ signal: "SIGTERM", frames: "150", sessions: "1" });
    },
    60_000,
  );

  test(
    "an input sink FIFO with no reader, then a reader that reads nothing, never holds up the output channel; every microphone frame reaches the reader or is counted dropped by reason",
    async () => {
      const t = setup();
      const micFifo = makeFifo(t.path("mic.fifo"));
      const got = t.path("got.wire");
      await writeWireFile(t.path("capture.wire"), 150);
      const session = (k: number) => micSession(t, k);
      const agent = spawnAgent([
        "serve",
        "--output-socket", t.out, "--output-source", t.path("capture.wire"), "--output-realtime",
        "--input-socket", t.in, "--input-sink", micFifo,
        "--metrics", "127.0.0.1:0",
      ]);
      const base = await metricsUrl(agent);
      await agent.waitForStderr("input-server: listening");
      // 150 frames in real time: 3 s of output while the input channel's sink goes nowhere.
      const recv = spawnAgent(["output", "recv", "--socket", t.out, "--sink", t.path("out.wire")]);

      // Nobody reads the FIFO: the session is served, its frames counted as dropped.
      await session(0);
      expect(await scrapeValue(base, "audio_agent_frames_dropped_by_reason_total", { channel: "input", reason: "sink_no_reader" })).toBe(200);

      // A player that opens the FIFO and reads nothing until told: the pipe fills, and then frames are dropped, not waited for.
      const reader = start(["sh", "-c", HELD_READER, micFifo, got]);
      const slow = () => scrapeValue(base, "audio_agent_frames_dropped_by_reason_total", { channel: "input", reason: "sink_reader_slow" });
      let k = 1;
      for (; k < 20 && (await slow()) === 0; k++) await session(k);
      expect(await slow()).toBeGreaterThan(0);
      expect(agent.stderr).toContain("input-server: sink FIFO opened by a reader");

      // The output channel played its file out meanwhile, the reader still stalled: every frame delivered
      // is in the client's file, in order (live: those before the client came are dropped, and counted).
      await agent.waitForStderr("output-server: stopped");
      const output = expectAccountedLine(agent.stderr);
      expect(output.submitted).toBe(150);
      expect(output.dropped).toBe(output.byReason.no_client ?? 0);
      await until(() => wireFileFrames(t.path("out.wire")).frames.length === output.delivered, "the client to have every frame delivered");
      expect(firstMismatch(wholeWireFrames(t.path("out.wire")), 150 - output.delivered)).toBe(-1);
      expect(reader.hasExited).toBe(false);
      recv.kill("SIGTERM");
      expect(await recv.exited, recv.stderr).toBe(0);

      releaseReader(got);
      agent.kill("SIGTERM");
      expect(await agent.exited, agent.stderr).toBe(0);
      expect(await reader.exited, reader.stderr).toBe(0);

      // The reader got whole messages, intact and in order; with what was dropped they are every frame received.
      const frames = wholeWireMessages(got, INPUT_MAGIC).filter((m) => m.type === MessageType.OpusFrame).map((m) => m.payload);
      expectIntactInOrder(frames, 4096);
      const stopped = logFields(agent.stderr, "input-server", "stopped");
      expect(Number(stopped.frames)).toBe(k * 200);
      expect(Number(stopped.dropped_sink_no_reader)).toBeGreaterThanOrEqual(200);
      expect(Number(stopped.dropped_sink_reader_slow)).toBeGreaterThan(0);
      expect(Number(stopped.dropped)).toBe(Number(stopped.dropped_sink_no_reader) + Number(stopped.dropped_sink_reader_slow));
      expect(frames.length + Number(stopped.dropped)).toBe(k * 200);
    },
    60_000,
  );

  test("settings from the config file's sections; a channel that ends stops alone, and the run ends when both have", async () => {
    const t = setup();
    const capture = t.path("capture.wire");
    const sink = t.path("sink.wire");
    await writeWireFile(capture, 50);
    await writeWireFile(t.path("mic.wire"), 20, micPayload);
    const config = t.path("agent.json");
    writeFileSync(
      config,
      JSON.stringify({
        "stats-interval": 0,
        output: { socket: t.out, source: capture },
        input: { socket: t.in, sink, once: true },
      }),
    );
    const agent = spawnAgent(["serve", "--config", config]);
    await agent.waitForStderr("input-server: listening");

    // A file without --output-realtime is lossless: once a client has it all, the output channel ends...
    const recv = spawnAgent(["output", "recv", "--socket", t.out, "--sink", t.path("out.wire"), "--count", "50"]);
    expect(await recv.exited, recv.stderr).toBe(0);
    expectFrames(wholeWireFrames(t.path("out.wire")), 50, testPayload);
    await agent.waitForStderr("output-server: stopped");
    await until(() => !existsSync(t.out), "the output socket to go");
    expect(agent.hasExited).toBe(false);
    expect(expectAccountedLine(agent.stderr)).toMatchObject({ submitted: 50, delivered: 50, dropped: 0 });

    // ...and the input channel keeps serving; its first session ends it (once), and with it the run.
    const send = spawnAgent(["input", "send", "--socket", t.in, "--source", t.path("mic.wire")]);
    expect(await send.exited, send.stderr).toBe(0);
    expect(await agent.exited, agent.stderr).toBe(0);
    expect(existsSync(t.in)).toBe(false);
    expectFrames(sinkFrames(sink).frames, 20, micPayload);
    expect(logFields(agent.stderr, "input-server", "stopped")).toMatchObject({ frames: "20", sessions: "1" });
  }, 60_000);

  for (const stdout of ["pipe", "socket"] as const) {
    test(
      `--input-sink - into a ${stdout} whose player stalls never holds up the output channel: written without blocking, what it cannot take counted dropped`,
      async () => {
        const t = setup();
        const got = t.path("got.wire");
        await writeWireFile(t.path("capture.wire"), 150);
        const args = [
          "serve",
          "--output-socket", t.out, "--output-source", t.path("capture.wire"), "--output-realtime",
          "--input-socket", t.in, "--input-sink", "-",
          "--metrics", "127.0.0.1:0",
        ];
        // A pipe: `serve ... > >(player)`, bash's exec keeping the agent's pid; the player holds its
        // end and reads nothing until told (and holds none of the test's pipes, which would keep the
        // agent's exit from being seen). A socket: one end of a pair the test holds, read only after the stop.
        const pair = stdout === "socket" ? socketPair() : undefined;
        const agent =
          stdout === "pipe"
            ? start(["bash", "-c", `exec "$@" > >(exec sh -c '${HELD_READER}' /dev/stdin '${got}' >/dev/null 2>&1)`, "bash", ...AGENT, ...args], { env: agentEnv() })
            : spawnAgent(args, { stdout: pair!.childEnd });
        if (pair) closeSync(pair.childEnd);
        // The pipe's player is no child of the test's: let go at the end whatever happens, it reads to the end and exits.
        if (stdout === "pipe") defer(() => releaseReader(got));
        const base = await metricsUrl(agent);
        await agent.waitForStderr("input-server: listening");
        // 150 frames in real time: 3 s of output while the input channel's player reads nothing.
        const recv = spawnAgent(["output", "recv", "--socket", t.out, "--sink", t.path("out.wire")]);
        const slow = () => scrapeValue(base, "audio_agent_frames_dropped_by_reason_total", { channel: "input", reason: "sink_reader_slow" });
        let k = 0;
        for (; k < 20 && (await slow()) === 0; k++) await micSession(t, k);
        expect(await slow()).toBeGreaterThan(0);
        // A pipe is sized to 8 KiB; a socket's send buffer to 8 KiB, which the kernel doubles for its bookkeeping.
        const pipeBytes = stdout === "pipe" ? 8192 : 16384;
        expect(agent.stderr).toContain(`input-server: sink written to its reader without blocking sink=stdout reader=1 pipe_bytes=${pipeBytes}\n`);
        expect(agent.stderr).not.toContain("cannot size");

        // The output channel played its file out meanwhile, every frame delivered in the client's file.
        await agent.waitForStderr("output-server: stopped");
        const output = expectAccountedLine(agent.stderr);
        expect(output.submitted).toBe(150);
        expect(output.dropped).toBe(output.byReason.no_client ?? 0);
        await until(() => wireFileFrames(t.path("out.wire")).frames.length === output.delivered, "the client to have every frame delivered");
        recv.kill("SIGTERM");
        expect(await recv.exited, recv.stderr).toBe(0);

        // The player reads again from the stop on, so its stream ends whole (it would otherwise end
        // part-way through a message after the stop's 1 s linger, as a stalled FIFO reader's does).
        if (stdout === "pipe") releaseReader(got);
        agent.kill("SIGTERM");
        if (pair) writeFileSync(got, await readToEnd(pair.playerEnd));
        expect(await agent.exited, agent.stderr).toBe(0);
        const stopped = logFields(agent.stderr, "input-server", "stopped");
        expect(Number(stopped.frames)).toBe(k * 200);
        expect(Number(stopped.dropped)).toBe(Number(stopped.dropped_sink_reader_slow));
        // How far behind the stalled player fell: what its pipe or socket held, a few of these 4 KiB messages
        // (the kernel's sizes would hold 15 in a pipe, about 40 in a socket).
        // The player reads to its end: whole messages, intact and in order; with what was dropped, every frame received.
        const received = () => wholeWireMessages(got, INPUT_MAGIC).filter((m) => m.type === MessageType.OpusFrame).map((m) => m.payload);
        // Read while the pipe's player still writes it: a message cut short there is not yet the whole file.
        const whole = () => {
          try {
            return received().length + Number(stopped.dropped) === k * 200;
          } catch {
            return false;
          }
        };
        await until(whole, "the player to have read what its pipe or socket took");
        expectIntactInOrder(received(), 4096);
        // How far behind the stalled player fell: what its pipe or socket held, the message begun and
        // the Config (the kernel's sizes would have held about 64 KiB in a pipe, 200 KiB in a socket).
        expect(statSync(got).size).toBeLessThanOrEqual(pipeBytes + 2 * 4113);
      },
      60_000,
    );
  }

  test("input serve alone writes --sink - as a file is, at its reader's pace (no other channel waits): a session into a socket stdout loses nothing", async () => {
    const t = setup();
    const agent = spawnAgent(["input", "serve", "--socket", t.in, "--sink", "-"]);
    await sessionWrittenBlocking(t, agent);
    const stopped = logFields(agent.stderr, "input-server", "stopped");
    expect(stopped.frames).toBe("200");
    expect(stopped.dropped ?? "0").toBe("0");
  }, 60_000);

  test("--input-sink - into a file, or into a pipe stderr shares (2>&1): written as a file is, nothing dropped; stdout's flags are as they were after the exit", async () => {
    const t = setup();
    const file = t.path("sink.wire");
    const args = ["serve", "--output-socket", t.out, "--output-source", "-", "--input-socket", t.in, "--input-sink", "-"];
    // A file: stdout is not a player's pipe.
    await sessionWrittenBlocking(t, start(["bash", "-c", `exec "$@" > '${file}'`, "bash", ...AGENT, ...args], { env: agentEnv(), stdin: "pipe" }));
    expect(wholeWireMessages(file, INPUT_MAGIC).filter((m) => m.type === MessageType.OpusFrame).length).toBe(200);

    // A pipe, shared by stderr (2>&1) or not: shared, the log's lines must not be what waits and is
    // lost, so stdout is written as a file is (every frame kept); not, it is written as a player's pipe. Either way the next command
    // on the pipe after the agent's exit finds its flags without O_NONBLOCK (04000).
    for (const [k, shares] of [[1, true], [2, false]] as const) {
      const log = t.path(`pipe-${k}.log`);
      const errors = shares ? "&1" : ` '${t.path(`stderr-${k}.log`)}'`;
      const cmd = `{ "$@" 2>${errors}; grep ^flags /proc/self/fdinfo/1; } > >(exec cat > '${log}')`;
      const run = start(["bash", "-c", cmd, "bash", ...AGENT, ...args, "--input-once"], { env: agentEnv(), stdin: "pipe" });
      const logged = () => readFileSync(shares ? log : t.path(`stderr-${k}.log`), "latin1");
      await until(() => existsSync(shares ? log : t.path(`stderr-${k}.log`)) && logged().includes("input-server: listening"), "the agent to listen");
      await micSession(t, k);
      await until(() => logged().includes("session ended by Stop"), "the session's end");
      run.endStdin(); // the output channel's source ends; with --input-once the run is over
      expect(await run.exited).toBe(0);
      // The pipe holds the sink's bytes first (no line of their own), then grep's line.
      await until(() => FLAGS_AT_END.test(readFileSync(log, "latin1")), "the next command's look at the pipe");
      expect(logged().includes("stderr shares stdout's pipe")).toBe(shares);
      expect(logged().includes("without blocking")).toBe(!shares);
      expect(parseInt(FLAGS_AT_END.exec(readFileSync(log, "latin1"))![1]!, 8) & 0o4000).toBe(0);
    }
  }, 60_000);

  test("a channel that has ended (--input-once) shows as no longer listening in /healthz (answered 503) and /metrics, while the other serves on", async () => {
    const t = setup();
    const agent = spawnAgent(
      ["serve", "--output-socket", t.out, "--output-source", "-", "--input-socket", t.in, "--input-sink", t.path("mic.wire"), "--input-once", "--metrics", "127.0.0.1:0"],
      { stdin: "pipe" },
    );
    const base = await metricsUrl(agent);
    await agent.waitForStderr("input-server: listening");
    expect(await healthz(base)).toMatchObject({ healthy: true, channels: { output: { listening: true }, input: { listening: true } } });
    await micSession(t, 0);
    await agent.waitForStderr("input-server: stopped");
    // A probe that reads only the status code sees it; the body is the same report.
    const response = await fetch(`${base}/healthz`);
    expect(response.status).toBe(503);
    expect(await response.json()).toMatchObject({ healthy: false, channels: { output: { listening: true }, input: { listening: false, sessions: 1 } } });
    const text = await scrape(base);
    expect([value(text, "audio_agent_listening", { channel: "output" }), value(text, "audio_agent_listening", { channel: "input" })]).toEqual([1, 0]);
    expect(existsSync(t.in)).toBe(false);
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
  }, 30_000);

  test("/healthz gives each channel's connection drops, as /metrics counts them: an output client and a microphone client each gone without Stop; a client still there and a session ended by Stop are none", async () => {
    const t = setup();
    const { agent, base } = await serveWithMetrics(t);
    expect(await healthz(base)).toMatchObject({ channels: { output: { connection_drops: 0 }, input: { connection_drops: 0 } } });
    (await connectClient(defer, t.out)).close();
    const mic = await connectClient(defer, t.in, { magic: INPUT_MAGIC });
    mic.socket.write(encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(DEFAULT_AUDIO_CONFIG), 0n));
    await agent.waitForStderr("input-server: client connected");
    mic.close();
    const drops = (text: string) => [value(text, "jetkvm_audio_connection_drops_total"), value(text, "jetkvm_microphone_connection_drops_total")];
    const text = await scrapeUntil(base, (text) => drops(text).join() === "1,1", "each channel's drop");
    const health = (await healthz(base)) as { channels: Record<string, Record<string, unknown>> };
    expect([health.channels.output!.connection_drops, health.channels.input!.connection_drops]).toEqual(drops(text));
    // Connections that are no drop: an output client still there, a microphone session ended by Stop.
    await connectClient(defer, t.out);
    await micSession(t, 0);
    await agent.waitForStderr("input-server: session ended by Stop");
    const after = (await healthz(base)) as { channels: Record<string, Record<string, unknown>> };
    expect([after.channels.output!.connects, after.channels.input!.connects]).toEqual([2, 2]);
    expect([after.channels.output!.connection_drops, after.channels.input!.connection_drops]).toEqual([1, 1]);
    expect(drops(await scrape(base))).toEqual([1, 1]);
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
  }, 30_000);

  test("from the first scrape, before any client, each channel's latency histograms are there at 0: the ones it records (the output's writes, the input's frame ages), no others", async () => {
    const t = setup();
    const { agent, base } = await serveWithMetrics(t);
    const text = await scrape(base);
    const counts = parseSamples(text).filter((s) => /^audio_agent_\w+_seconds_count$/.test(s.name)).map((s) => [s.name, s.labels.channel, s.value]);
    expect(counts.sort()).toEqual([
      ["audio_agent_enqueue_to_write_seconds_count", "output", 0],
      ["audio_agent_frame_age_seconds_count", "input", 0],
      ["audio_agent_write_call_seconds_count", "output", 0],
    ]);
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
  }, 30_000);

  test("a peer that breaks the framing is counted on its own channel: audio_agent_protocol_errors_total and /healthz's protocol_errors, one each, the other channel's untouched", async () => {
    const t = setup();
    const { agent, base } = await serveWithMetrics(t);
    const errors = (text: string) => [value(text, "audio_agent_protocol_errors_total", { channel: "output" }), value(text, "audio_agent_protocol_errors_total", { channel: "input" })];
    expect(errors(await scrape(base))).toEqual([0, 0]);
    // A microphone client announcing a payload over 4096 bytes: disconnected, counted on the input channel alone.
    const mic = await connectClient(defer, t.in, { magic: INPUT_MAGIC });
    mic.socket.write(wireHeader(INPUT_MAGIC, MessageType.OpusFrame, 4097));
    await scrapeUntil(base, (text) => errors(text).join() === "0,1", "the input channel's violation");
    // An output client writing the other channel's magic: counted on the output channel.
    const reader = await connectClient(defer, t.out);
    reader.socket.write(wireHeader(INPUT_MAGIC, MessageType.Heartbeat, 0));
    const text = await scrapeUntil(base, (text) => errors(text).join() === "1,1", "the output channel's violation");
    const health = (await healthz(base)) as { channels: Record<string, Record<string, unknown>> };
    expect([health.channels.output!.protocol_errors, health.channels.input!.protocol_errors]).toEqual(errors(text));
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
  }, 30_000);

  test("a socket file removed while the agent runs is put back as it is found; one replaced by another file is left alone: told once, shown as no longer listening in /healthz (answered 503) and /metrics", async () => {
    const t = setup();
    const agent = spawnAgent(["serve", "--output-socket", t.out, "--output-source", "-", "--input-socket", t.in, "--input-sink", "/dev/null", "--metrics", "127.0.0.1:0"], { stdin: "pipe" });
    const base = await metricsUrl(agent);
    await agent.waitForStderr("input-server: listening");
    expect(await healthz(base)).toMatchObject({ healthy: true, channels: { output: { listening: true }, input: { listening: true } } });
    const bound = statSync(t.in);
    // A cleanup of the runtime directory, an operator's rm; a regular file made in the output socket's place.
    rmSync(t.in);
    rmSync(t.out);
    writeFileSync(t.out, "");
    const response = await fetch(`${base}/healthz`);
    expect(response.status).toBe(503);
    expect(await response.json()).toMatchObject({ healthy: false, channels: { output: { listening: false }, input: { listening: true } } });
    await agent.waitForStderr(/WARN +input-server: the socket file was removed; put back/);
    // The same socket, its mode too: a client reaches the agent there.
    expect(statSync(t.in)).toMatchObject({ ino: bound.ino, mode: bound.mode });
    expect(await connectOutcome(defer, t.in)).toBe("accepted");
    await agent.waitForStderr("input-server: client connected");
    const text = await scrape(base);
    expect([value(text, "audio_agent_listening", { channel: "output" }), value(text, "audio_agent_listening", { channel: "input" })]).toEqual([0, 1]);
    await agent.waitForStderr(/WARN +output-server: the socket file is gone/);
    // Told once, however often it is asked.
    await fetch(`${base}/healthz`);
    expect(agent.stderr.match(/output-server: the socket file is gone/g)).toHaveLength(1);
    expect(agent.stderr).not.toContain("input-server: the socket file is gone");
    // The file in the output socket's place is not the agent's: left alone at the stop; the input socket is removed.
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    expect(existsSync(t.out)).toBe(true);
    expect(existsSync(t.in)).toBe(false);
  }, 30_000);

  test("a socket directory renamed away and back while the agent runs: not listening while it is away, listening again (/healthz 200, audio_agent_listening 1) once clients can reach it again", async () => {
    const t = setup();
    const dir = t.path("run");
    mkdirSync(dir);
    const input = join(dir, "i.sock");
    const agent = spawnAgent(["serve", "--output-socket", t.out, "--output-source", "-", "--input-socket", input, "--input-sink", "/dev/null", "--metrics", "127.0.0.1:0"], { stdin: "pipe" });
    const base = await metricsUrl(agent);
    await agent.waitForStderr("input-server: listening");
    // An operator's mv of the directory aside and back: the name it was bound by went with it, nothing to put back.
    renameSync(dir, t.path("aside"));
    expect((await fetch(`${base}/healthz`)).status).toBe(503);
    await agent.waitForStderr(/WARN +input-server: the socket file is gone/);
    renameSync(t.path("aside"), dir);
    expect(await connectOutcome(defer, input)).toBe("accepted");
    await agent.waitForStderr("input-server: client connected");
    // The same socket, at its path again: clients reach it, so it is listening.
    const response = await fetch(`${base}/healthz`);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ healthy: true, channels: { output: { listening: true }, input: { listening: true } } });
    expect(value(await scrape(base), "audio_agent_listening", { channel: "input" })).toBe(1);
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    // Still the agent's own file: removed at the stop.
    expect(existsSync(input)).toBe(false);
  }, 30_000);

  test("--input-sink - to a terminal: written as a file, blocking, nothing dropped; the terminal's flags are as they were after the exit", async () => {
    const t = setup();
    const errors = t.path("stderr.log");
    const args = [...AGENT, "serve", "--output-socket", t.out, "--output-source", "/dev/null", "--input-socket", t.in, "--input-sink", "-", "--input-once"];
    // script(1) runs the agent with a pseudo-terminal as stdout (and the test reads what script copies
    // out of it); the terminal's flags are read after the agent's exit, as the next command would find them.
    const cmd = `${args.map((a) => `'${a}'`).join(" ")} 2>'${errors}'; grep ^flags /proc/self/fdinfo/1 >'${t.path("flags")}'`;
    const run = start(["script", "-qec", cmd, "/dev/null"], { env: agentEnv() });
    await until(() => existsSync(errors) && readFileSync(errors, "latin1").includes("input-server: listening"), "the agent to listen");
    await micSession(t, 0);
    expect(await run.exited, run.stderr).toBe(0);
    const logged = readFileSync(errors, "latin1");
    expect(logged).not.toContain("without blocking");
    const stopped = logFields(logged, "input-server", "stopped");
    expect(stopped.frames).toBe("200");
    expect(stopped.dropped ?? "0").toBe("0");
    expect(parseInt(FLAGS_AT_END.exec(readFileSync(t.path("flags"), "latin1"))![1]!, 8) & 0o4000).toBe(0);
  }, 60_000);

  test("--input-sink - whose player quits: the rest is counted sink_no_reader, one warning, no look for another; the run goes on and stops with exit 0", async () => {
    const t = setup();
    const agent = start(["bash", "-c", `exec "$@" > >(exec head -c 1000 >/dev/null 2>&1)`, "bash", ...AGENT, "serve", "--output-socket", t.out, "--output-source", "-", "--input-socket", t.in, "--input-sink", "-"], { env: agentEnv(), stdin: "pipe" });
    await agent.waitForStderr("input-server: listening");
    await micSession(t, 0);
    // Longer apart than the sink's looks for a FIFO's next reader: stdout's is never looked for.
    await Bun.sleep(READER_LOOK_MS * 2);
    await micSession(t, 1);
    await until(() => agent.stderr.split("session ended by Stop").length === 3, "both sessions to end");
    expect(agent.stderr.split("WARN  input-server: sink's reader has gone").length - 1).toBe(1);
    expect(agent.stderr.split("without blocking sink=stdout").length - 1).toBe(1);
    // Stdout is left open: a descriptor the next connection could otherwise be given.
    expect(readlinkSync(`/proc/${agent.pid}/fd/1`)).toStartWith("pipe:");
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    const stopped = logFields(agent.stderr, "input-server", "stopped");
    expect(Number(stopped.frames)).toBe(400);
    // The second session's all, and what of the first head did not take; slow drops only if the pipe
    // filled before head quit. Every frame is counted.
    expect(Number(stopped.dropped_sink_no_reader)).toBeGreaterThanOrEqual(200);
    expect(Number(stopped.dropped)).toBe(Number(stopped.dropped_sink_no_reader) + Number(stopped.dropped_sink_reader_slow ?? 0));
    expect(Number(stopped.dropped)).toBeGreaterThan(390);
  }, 60_000);

  test("--input-sink - to a socket stderr shares (2>&1): written as a file is, with a warning, nothing dropped", async () => {
    const t = setup();
    const pair = socketPair();
    const args = ["serve", "--output-socket", t.out, "--output-source", "/dev/null", "--input-socket", t.in, "--input-sink", "-", "--input-once"];
    const agent = start(["bash", "-c", 'exec "$@" 2>&1', "bash", ...AGENT, ...args], { env: agentEnv(), stdout: pair.childEnd });
    closeSync(pair.childEnd);
    // The player reads all along (the log's lines come through it): a session of 270 KB is more than the socket holds.
    const heard = readToEnd(pair.playerEnd);
    const text = async () => Buffer.from(await heard).toString("latin1");
    await until(() => existsSync(t.in), "the input socket");
    await micSession(t, 0);
    expect(await agent.exited).toBe(0);
    const out = await text();
    expect(out).toContain("WARN  input-server: stderr shares stdout's socket: stdout is written as a file is, every frame kept");
    expect(out).not.toContain("without blocking");
    const stopped = logFields(out, "input-server", "stopped");
    expect(stopped.frames).toBe("200");
    expect(stopped.dropped ?? "0").toBe("0");
  }, 60_000);

  test("--input-sink - to a socket stderr shares (2>&1) whose player stalls: the input channel waits, the output channel plays on, SIGTERM exits 0", async () => {
    const t = setup();
    const pair = socketPair();
    await writeWireFile(t.path("capture.wire"), 50);
    const args = ["serve", "--output-socket", t.out, "--output-source", t.path("capture.wire"), "--output-realtime", "--output-loop", "--input-socket", t.in, "--input-sink", "-"];
    const agent = start(["bash", "-c", 'exec "$@" 2>&1', "bash", ...AGENT, ...args], { env: agentEnv(), stdout: pair.childEnd });
    closeSync(pair.childEnd);
    await until(() => existsSync(t.in) && existsSync(t.out), "both sockets");
    const out = t.path("out.wire");
    const recv = spawnAgent(["output", "recv", "--socket", t.out, "--sink", out]);
    // 4 MB of microphone frames: far more than the player's socket holds, which it does not read.
    await writeWireFile(t.path("mic.wire"), 1000, (i) => indexedPayload(i, 4096));
    const mic = spawnAgent(["input", "send", "--socket", t.in, "--source", t.path("mic.wire"), "--max-latency-ms", "60000", "--write-deadline-ms", "0"]);
    const played = () => (existsSync(out) ? wireFileFrames(out).frames.length : 0);
    await until(() => played() > 0, "the output channel's first frames");
    // Two seconds of output after the input channel's player filled its socket (within milliseconds).
    const before = played();
    await until(() => played() >= before + 100, "the output channel to play on", 30_000);
    agent.kill("SIGTERM");
    const heard = Buffer.from(await readToEnd(pair.playerEnd)).toString("latin1");
    expect(await agent.exited).toBe(0);
    mic.kill("SIGTERM");
    recv.kill("SIGTERM");
    await Promise.all([mic.exited, recv.exited]);
    expect(heard).toContain("WARN  input-server: stderr shares stdout's socket: stdout is written as a file is, every frame kept");
    const stopped = logFields(heard, "input-server", "stopped");
    expect(Number(stopped.frames)).toBeGreaterThan(0);
    expect(Number(stopped.dropped ?? 0)).toBe(Number(stopped.dropped_sink_reader_slow ?? 0) + Number(stopped.dropped_session_ended ?? 0));
  }, 60_000);

  test("--input-sink - to a packet socket (SOCK_SEQPACKET): its send buffer is left as it is, with one warning saying why; Ogg pages larger than --input-sink-pipe-bytes reach the player whole", async () => {
    const t = setup();
    // 256 kbit/s in pages of up to a second: pages of tens of KB, more than a send buffer of 8 KiB could ever take as one message.
    const loud = encodeWith(t.dir, "loud", ["--bitrate", "256"], { samples: 2 * 48000 });
    const packets = (await drainFile(loud, { lenient: false })).frames.length;
    const pair = socketPair("seqpacket");
    const agent = spawnAgent(
      ["serve", "--output-socket", t.out, "--output-source", "/dev/null", "--input-socket", t.in, "--input-sink", "-", "--input-format", "ogg", "--input-page-ms", "1000", "--input-once"],
      { stdout: pair.childEnd },
    );
    closeSync(pair.childEnd);
    await agent.waitForStderr("input-server: listening");
    const sent = await runAgent(["input", "send", "--socket", t.in, "--source", loud, "--format", "ogg"]);
    expect(sent.code, sent.stderr).toBe(0);
    const heard = await readToEnd(pair.playerEnd);
    expect(await agent.exited, agent.stderr).toBe(0);
    expect(agent.stderr).toContain("WARN  input-server: cannot size the sink's pipe; a slow reader may fall as far behind as the size it has allows sink=stdout error=\"a packet socket (SOCK_SEQPACKET), whose send buffer bounds each message: left as it is\"\n");
    expect(Math.max(...pagesOf(heard).map((p) => p.size))).toBeGreaterThan(16384);
    expect(audioPacketsOf(heard).length).toBe(packets);
    expect(logFields(agent.stderr, "input-server", "stopped")).toMatchObject({ frames: String(packets) });
  }, 60_000);

  test("--input-sink - to a TCP socket whose player resets the connection: counted sink_no_reader after one warning, not a failure; the run stops with exit 0", async () => {
    const t = setup();
    let accepted = 0;
    // The player takes the connection and drops it at once with an RST: the agent's next write gets ECONNRESET.
    const player = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open(socket) {
          accepted++;
          resetOnClose(socket.fd);
          socket.terminate();
        },
        data() {},
      },
    });
    defer(() => player.stop(true));
    const args = ["serve", "--output-socket", t.out, "--output-source", "-", "--input-socket", t.in, "--input-sink", "-"];
    const agent = start(["bash", "-c", `exec "$@" 1<>/dev/tcp/127.0.0.1/${player.port}`, "bash", ...AGENT, ...args], { env: agentEnv(), stdin: "pipe" });
    await agent.waitForStderr("input-server: listening");
    expect(accepted).toBe(1);
    await micSession(t, 0);
    await agent.waitForStderr("session ended by Stop");
    expect(agent.stderr.split("WARN  input-server: sink's reader has gone").length - 1).toBe(1);
    expect(agent.stderr).not.toContain("cannot write to sink");
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    const stopped = logFields(agent.stderr, "input-server", "stopped");
    expect(stopped.frames).toBe("200");
    expect(stopped.dropped_sink_no_reader).toBe("200");
    expect(stopped.dropped).toBe("200");
  }, 60_000);

  test("a peer connecting to the output socket again and again, holding each connection, under a small descriptor limit: the input channel's FIFO sink goes on looking for its reader, every frame counted, exit 0 at SIGTERM", async () => {
    const t = setup();
    const sink = makeFifo(t.path("mic.fifo"));
    await writeWireFile(t.path("capture.wire"), 50);
    const args = ["serve", "--output-socket", t.out, "--output-source", t.path("capture.wire"), "--output-realtime", "--output-loop", "--input-socket", t.in, "--input-sink", sink];
    const agent = start(["sh", "-c", 'ulimit -n 64 && exec "$@"', "sh", ...AGENT, ...args], { env: agentEnv() });
    await agent.waitForStderr("input-server: listening");
    // A microphone client reading nothing; what it writes is not checked here: an agent out of
    // descriptors fails the sink's open (EMFILE) and ends the run, which the wait below tells.
    const mic = await connectClient(defer, t.in, { paused: true, magic: INPUT_MAGIC });
    const send = (type: MessageType, payload?: Uint8Array) => mic.socket.write(encodeMessage(INPUT_MAGIC, type, payload, BigInt(Date.now()) * 1_000_000n));
    send(MessageType.Config, encodeConfigPayload(DEFAULT_AUDIO_CONFIG));
    // Each one replaces the one before, which is let go: more than the agent has descriptors. (One the
    // kernel's queue has no room for is refused at once: it tries again, as a peer in a loop does.)
    for (let i = 0; i < 100; i++) {
      await until(() => connectClient(defer, t.out, { paused: true }).then(() => true, () => false), "a connection", 10_000, 1);
    }
    // No reader: a frame is a look for one (at most every READER_LOOK_MS), an open of the FIFO; 10 looks in 2 s.
    const frames = 20;
    for (let i = 0; i < frames; i++) {
      send(MessageType.OpusFrame, micPayload(i));
      await Bun.sleep(READER_LOOK_MS / 2);
    }
    send(MessageType.Stop);
    await agent.waitForStderr("input-server: session ended by Stop");
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    const stopped = logFields(agent.stderr, "input-server", "stopped");
    expect([stopped.frames, stopped.dropped_sink_no_reader]).toEqual([String(frames), String(frames)]);
  }, 60_000);

  test("out of descriptors (EMFILE) while its FIFO sink looks for its reader: the input channel goes on looking, the frames meanwhile counted sink_open_failed; once descriptors are free the reader gets the rest, every frame accounted for, exit 0", async () => {
    const t = setup();
    const fifo = makeFifo(t.path("mic.fifo"));
    const got = t.path("got.wire");
    await writeWireFile(t.path("capture.wire"), 50);
    const args = ["serve", "--output-socket", t.out, "--output-source", t.path("capture.wire"), "--output-realtime", "--output-loop", "--input-socket", t.in, "--input-sink", fifo];
    const agent = spawnAgent(args);
    await agent.waitForStderr("input-server: listening");
    const mic = await connectClient(defer, t.in, { magic: INPUT_MAGIC });
    const send = (type: MessageType, payload?: Uint8Array) => mic.socket.write(encodeMessage(INPUT_MAGIC, type, payload, BigInt(Date.now()) * 1_000_000n));
    /** Every message sent so far has been taken by the agent: the Ack of a Heartbeat sent after them is back (or the agent let go). */
    const taken = async () => {
      const acks = mic.messages.length;
      send(MessageType.Heartbeat);
      await until(() => mic.messages.length > acks || mic.isClosed, "the Heartbeat's Ack");
    };
    // The Config is a look for a reader (none yet); the first frame, past READER_LOOK_MS, is the next.
    send(MessageType.Config, encodeConfigPayload(DEFAULT_AUDIO_CONFIG));
    await taken();
    await Bun.sleep(READER_LOOK_MS);
    const frames = 10;
    let i = 0;
    const sendFrames = async (count: number) => {
      for (const end = i + count; i < end; i++) {
        send(MessageType.OpusFrame, indexedPayload(i));
        await Bun.sleep(READER_LOOK_MS / 2);
      }
      await taken();
    };
    // The reader comes when the agent has no descriptor to open the FIFO with: each look for it fails
    // (a frame is a look, at most every READER_LOOK_MS).
    const giveBack = outOfDescriptors(agent.pid);
    const player = start(["sh", "-c", 'exec cat "$0" > "$1"', fifo, got]);
    await sendFrames(frames);
    giveBack();
    await sendFrames(frames);
    send(MessageType.Stop);
    await agent.waitForStderr("input-server: session ended by Stop");
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    expect(await player.exited).toBe(0);
    expect(agent.stderr.split("WARN  input-server: cannot open the sink FIFO (EMFILE)").length - 1).toBe(1);
    const stopped = logFields(agent.stderr, "input-server", "stopped");
    const heard = wholeWireMessages(got, INPUT_MAGIC).filter((m) => m.type === MessageType.OpusFrame).map((m) => m.payload);
    // The reader hears the last ones, whole and in order, from where the sink could open its FIFO again.
    const indices = expectIntactInOrder(heard, 4096);
    expect(heard.length).toBeGreaterThan(0);
    expect(indices).toEqual(Array.from({ length: heard.length }, (_, k) => 2 * frames - heard.length + k));
    expect(Number(stopped.frames)).toBe(2 * frames);
    expect(Number(stopped.dropped_sink_open_failed)).toBeGreaterThanOrEqual(frames);
    expect(heard.length + Number(stopped.dropped_sink_open_failed)).toBe(2 * frames);
    expect(stopped.dropped).toBe(stopped.dropped_sink_open_failed);
  }, 60_000);

  test("out of descriptors (EMFILE) as its FIFO source opens the FIFO for the next writer: the output channel tries again until it can, and that writer's frames reach the client after the first's, all delivered, exit 0", async () => {
    const t = setup();
    const fifo = makeFifo(t.path("capture.wire"));
    const frames = 20;
    writeFileSync(t.path("second.wire"), indexedWire(frames, 2 * frames));
    const agent = spawnAgent(["serve", "--output-socket", t.out, "--output-source", fifo, "--input-socket", t.in, "--input-sink", t.path("mic.wire")]);
    await agent.waitForStderr("source: waiting for a writer");
    const recv = spawnAgent(["output", "recv", "--socket", t.out, "--sink", t.path("out.wire"), "--count", String(2 * frames)]);
    await agent.waitForStderr("output-server: client connected");
    // The first writer: its frames go out; it leaves when the agent has no descriptor to open the FIFO again with.
    const writer = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    writeSync(writer, indexedWire(0, frames));
    await until(() => existsSync(t.path("out.wire")) && wholeWireFrames(t.path("out.wire")).length === frames, "the first writer's frames");
    const giveBack = outOfDescriptors(agent.pid);
    closeSync(writer);
    await agent.waitForStderr("WARN  source: cannot open the FIFO (EMFILE)");
    // Tried again meanwhile (every 20 ms), told once.
    await Bun.sleep(200);
    giveBack();
    expect(await writeIntoFifo(fifo, t.path("second.wire"))).toBe(0);
    expect(await recv.exited, recv.stderr).toBe(0);
    expect(expectIntactInOrder(wholeWireFrames(t.path("out.wire")))).toEqual(Array.from({ length: 2 * frames }, (_, i) => i));
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    expect(agent.stderr.split("WARN  source: cannot open the FIFO (EMFILE)").length - 1).toBe(1);
    expect(expectAccountedLine(agent.stderr)).toMatchObject({ submitted: 2 * frames, delivered: 2 * frames, dropped: 0 });
  }, 60_000);

  test.skipIf(!canSlowWrites("/tmp"))("--input-once into a file on a slow disk: the sink's sync at close runs off the event loop, so output frames keep reaching the client while it is pending; the input channel's stopped line waits for it", async () => {
    const t = setup();
    const sink = t.path("mic.wire");
    await writeWireFile(t.path("capture.wire"), 50);
    const agent = spawnAgent(["serve", "--output-socket", t.out, "--output-source", t.path("capture.wire"), "--output-realtime", "--output-loop", "--input-socket", t.in, "--input-sink", sink, "--input-once"]);
    await agent.waitForStderr("input-server: listening");
    // The session's 800 KB land in the page cache at once; its sync at close writes them at 128 KiB/s, a few seconds.
    const slow = slowWrites(t.dir, 128 * 1024)!;
    defer(() => slow.release());
    slow.admit(agent.pid);
    const client = await connectClient(defer, t.out);
    await micSession(t, 0);
    let syncing: number | undefined;
    await until(() => (syncing = threadInSync(agent.pid)) !== undefined || agent.stderr.includes("input-server: stopped"), "the sink's sync");
    expect(syncing).toBeDefined();
    // The event loop's thread is not the one waiting on the disk.
    expect(syncing).not.toBe(agent.pid);
    const heard = client.messages.length;
    await until(() => client.messages.length > heard || threadInSync(agent.pid) === undefined, "an output frame, or the sync's end");
    // An output frame came while the sync was still pending (one on the event loop holds every frame until it ends).
    expect(threadInSync(agent.pid)).toBe(syncing);
    expect(client.messages.length).toBeGreaterThan(heard);
    // The channel ends once the sync has: its stopped line comes after it.
    await agent.waitForStderr("input-server: stopped");
    expect(threadInSync(agent.pid)).toBeUndefined();
    expect(sinkFrames(sink)).toMatchObject({ sessions: 1 });
    expect(sinkFrames(sink).frames.length).toBe(200);
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
  }, 60_000);

  test("a channel that fails stops the other cleanly: the input sink on a full disk ends the run with exit 1 naming it", async () => {
    const t = setup();
    const fifo = makeFifo(t.path("capture.wire"));
    await writeWireFile(t.path("mic.wire"), 200, micPayload);
    const agent = spawnAgent(["serve", "--output-socket", t.out, "--output-source", fifo, "--input-socket", t.in, "--input-sink", "/dev/full"]);
    await agent.waitForStderr("input-server: listening");
    const recv = spawnAgent(["output", "recv", "--socket", t.out, "--sink", "/dev/null"]);
    await agent.waitForStderr("output-server: client connected");
    const send = spawnAgent(["input", "send", "--socket", t.in, "--source", t.path("mic.wire")]);

    expect(await agent.exited).toBe(1);
    const line = failureLine(agent.stderr);
    expect(line).toContain("/dev/full");
    expect(line).toContain("ENOSPC");
    // The output channel stopped as on a signal: its final line, its client told, its socket gone.
    expect(agent.stderr).toContain("agent: input channel failed; stopping the other");
    expectAccountedLine(agent.stderr);
    expect(logFields(agent.stderr, "input-server", "stopped")).toBeDefined();
    expect(existsSync(t.out)).toBe(false);
    expect(existsSync(t.in)).toBe(false);
    await recv.waitForStderr("output-client: disconnected");
    recv.kill("SIGTERM");
    send.kill("SIGTERM");
    expect(await recv.exited).toBe(0);
    expect(await send.exited).toBe(0);
  }, 60_000);

  test("an input sink that cannot be opened (a directory): exit 1 naming it, after each channel's own stopped line; both sockets removed", async () => {
    const t = setup();
    const dir = t.path("adir");
    mkdirSync(dir);
    await writeWireFile(t.path("capture.wire"), 5);
    const result = await spawnAgent(["serve", "--output-socket", t.out, "--output-source", t.path("capture.wire"), "--input-socket", t.in, "--input-sink", dir]).done;
    expect(result.code).toBe(1);
    expect(failureLine(result.stderr)).toBe(`audio-agent: --input-sink ${dir}: is a directory (EISDIR)`);
    expect(logFields(result.stderr, "output-server", "stopped")).toBeDefined();
    expect(logFields(result.stderr, "input-server", "stopped")).toMatchObject({ frames: "0", sessions: "0" });
    expect(existsSync(t.out) || existsSync(t.in)).toBe(false);
  });

  test("SIGTERM while the output channel's client reads nothing (a lossless file, its queue full): the channel takes no more frames from its source, and every one it took is delivered or counted dropped", async () => {
    const t = setup();
    const capture = t.path("capture.wire");
    // Frames of 4 KiB into a queue of 10 and small socket buffers: the source waits for room after a few dozen.
    await writeWireFile(capture, 200, (i) => indexedPayload(i, 4096));
    const agent = spawnAgent([
      "serve",
      "--output-socket", t.out, "--output-source", capture, "--output-queue-frames", "10", "--output-socket-buffers", "32k", "--output-adaptive", "off",
      "--input-socket", t.in, "--input-sink", t.path("sink.wire"),
      "--metrics", "127.0.0.1:0",
    ]);
    const base = await metricsUrl(agent);
    await agent.waitForStderr("input-server: listening");
    await connectClient(defer, t.out, { paused: true });
    const output = { channel: "output" };
    const text = await scrapeUntil(base, (text) => value(text, "audio_agent_queue_depth_frames", output) === 10, "the output queue to fill");
    const submitted = value(text, "audio_agent_frames_submitted_total", output);
    expect(submitted).toBeLessThan(200);

    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    // What the source gave before the signal, and not a frame more: the stop discards the queue once, and nothing refills it.
    const stopped = expectAccountedLine(agent.stderr);
    expect(stopped.submitted).toBe(submitted);
    expect(stopped.byReason.shutdown).toBeGreaterThanOrEqual(10);
    expect(Object.keys(stopped.byReason)).toEqual(["shutdown"]);
  }, 60_000);

  test("both channels fail: the run ends with the first failure, told once; the second (the input sink's close on a full disk) is not reported over it", async () => {
    const t = setup();
    // The output channel fails once a client comes: --output-loop over a file without an audio frame.
    const empty = t.path("empty.wire");
    writeFileSync(empty, "");
    // The input channel fails only as it closes: an Ogg sink writes its headers (and a stream with no audio its
    // silence) then, and /dev/full refuses them; with no frame before, nothing is flushed earlier.
    const agent = spawnAgent([
      "serve",
      "--output-socket", t.out, "--output-source", empty, "--output-loop",
      "--input-socket", t.in, "--input-sink", "/dev/full", "--input-format", "ogg",
    ]);
    await agent.waitForStderr("input-server: listening");
    expect(agent.stderr).not.toContain("channel failed");

    const recv = spawnAgent(["output", "recv", "--socket", t.out, "--sink", "/dev/null"]);
    expect(await agent.exited).toBe(1);
    expect(failureLine(agent.stderr)).toBe(`audio-agent: source ${empty} has no audio frames to loop`);
    expect(agent.stderr.split("channel failed; stopping the other").length - 1).toBe(1);
    expect(agent.stderr).toContain("agent: output channel failed; stopping the other");
    expect(logFields(agent.stderr, "input-server", "stopped")).toBeDefined();
    expect(existsSync(t.out) || existsSync(t.in)).toBe(false);
    recv.kill("SIGTERM");
    await recv.exited;
  }, 60_000);

  test("an Ogg input sink on a full disk fails as it closes even with no audio (its headers): exit 1 naming ENOSPC", async () => {
    const t = setup();
    const agent = spawnAgent(["input", "serve", "--socket", t.in, "--sink", "/dev/full", "--format", "ogg"]);
    await agent.waitForStderr("input-server: listening");
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(1);
    expect(failureLine(agent.stderr)).toBe("audio-agent: cannot write to sink /dev/full: ENOSPC");
  });

  test("an input socket path that cannot be used: exit 2 naming it, the output socket removed again, the sink untouched", async () => {
    const t = setup();
    writeFileSync(t.in, "not a socket");
    writeFileSync(t.path("sink.wire"), "keep");
    await writeWireFile(t.path("capture.wire"), 5);
    const result = await spawnAgent([
      "serve", "--output-socket", t.out, "--output-source", t.path("capture.wire"), "--input-socket", t.in, "--input-sink", t.path("sink.wire"),
    ]).done;
    expect(result.code).toBe(2);
    expect(failureLine(result.stderr)).toBe(`audio-agent: --input-socket: socket path ${t.in} is a regular file; refusing to replace it`);
    expect(existsSync(t.out)).toBe(false);
    expect(await Bun.file(t.path("sink.wire")).text()).toBe("keep");
    expect(await Bun.file(t.in).text()).toBe("not a socket");
  });

  test("an input socket that cannot be bound: exit 2 naming --input-socket and the errno; the output socket removed again", async () => {
    const t = setup();
    const refused = "/proc/audio-agent-serve-test.sock";
    await writeWireFile(t.path("capture.wire"), 5);
    const result = await spawnAgent(["serve", "--output-socket", t.out, "--output-source", t.path("capture.wire"), "--input-socket", refused, "--input-sink", t.path("sink")]).done;
    expect(result.code).toBe(2);
    expect(failureLine(result.stderr)).toMatch(new RegExp(`^audio-agent: --input-socket ${refused}: cannot listen: .* \\(E[A-Z]+\\)$`));
    expect(existsSync(t.out) || existsSync(t.path("sink"))).toBe(false);
  });

  test("one socket for both channels: exit 2 naming both flags (and the config file's top-level key when it set them), before anything listens", async () => {
    const t = setup();
    writeFileSync(t.path("sink"), "keep");
    const base = ["serve", "--output-source", "/dev/null", "--input-sink", t.path("sink")];
    // The same file however spelled: through "." or a symbolic link to its directory.
    const link = t.path("link");
    symlinkSync(t.dir, link);
    for (const other of [`${t.dir}/./${basename(t.out)}`, join(link, basename(t.out))]) {
      const flags = await spawnAgent([...base, "--output-socket", t.out, "--input-socket", other]).done;
      expect(flags.code).toBe(2);
      expect(failureLine(flags.stderr)).toBe(`audio-agent: --output-socket and --input-socket are both ${t.out}: each channel needs a socket of its own`);
    }
    // ".." after a link to a directory is the link target's parent, as the kernel reads it: one file here...
    mkdirSync(t.path("real/sub"), { recursive: true });
    mkdirSync(t.path("base"));
    symlinkSync(t.path("real/sub"), t.path("base/link"));
    // (Written out: join() would take the ".." away as text.)
    const afterLink = `${t.dir}/base/link/../a.sock`;
    const viaLink = await spawnAgent([...base, "--output-socket", t.path("real/a.sock"), "--input-socket", afterLink]).done;
    expect(viaLink.code, viaLink.stderr).toBe(2);
    expect(failureLine(viaLink.stderr)).toContain("each channel needs a socket of its own");
    // ...and two files here, which serve takes.
    const two = spawnAgent([...base, "--output-socket", t.path("base/a.sock"), "--input-socket", afterLink]);
    await two.waitForStderr("input-server: listening");
    two.kill("SIGTERM");
    expect(await two.exited).toBe(0);
    const config = t.path("top.json");
    writeFileSync(config, JSON.stringify({ socket: t.out }));
    const top = await spawnAgent([...base, "--config", config]).done;
    expect(top.code).toBe(2);
    expect(failureLine(top.stderr)).toBe(
      `audio-agent: --output-socket (from config "socket") and --input-socket (from config "socket") are both ${t.out}: each channel needs a socket of its own (the config file's top-level "socket" applies to both channels: give it in "output" and "input")`,
    );
    // Each flag is named with where its value came from: the environment, a section, or the flag itself.
    writeFileSync(config, JSON.stringify({ input: { socket: t.out } }));
    const mixed = await spawnAgent([...base, "--config", config], { env: agentEnv({ JETKVM_AUDIO_OUTPUT_SOCKET: t.out }) }).done;
    expect(mixed.code).toBe(2);
    expect(failureLine(mixed.stderr)).toBe(
      `audio-agent: --output-socket (from environment JETKVM_AUDIO_OUTPUT_SOCKET) and --input-socket (from config "input.socket") are both ${t.out}: each channel needs a socket of its own`,
    );
    // A top-level "socket" that is not the one both got, or that both sections override, is not blamed.
    for (const file of [{ socket: t.path("elsewhere.sock") }, { socket: t.out, output: { socket: t.path("o2.sock") }, input: { socket: t.path("i2.sock") } }]) {
      writeFileSync(config, JSON.stringify(file));
      const flagsBoth = await spawnAgent([...base, "--config", config, "--output-socket", t.out, "--input-socket", t.out]).done;
      expect(failureLine(flagsBoth.stderr)).toBe(`audio-agent: --output-socket and --input-socket are both ${t.out}: each channel needs a socket of its own`);
    }
    expect(existsSync(t.out)).toBe(false);
  });

  test("bad settings exit 2 naming the prefixed flag or variable, before anything listens", async () => {
    const t = setup();
    const base = ["serve", "--output-socket", t.out, "--output-source", "/dev/null", "--input-socket", t.in, "--input-sink", t.path("sink")];
    const flag = await spawnAgent([...base, "--output-queue-frames", "0"]).done;
    expect(flag.code).toBe(2);
    expect(failureLine(flag.stderr)).toBe('audio-agent: --output-queue-frames "0" is not allowed: an integer 1..100000');
    const env = await spawnAgent(base, { env: agentEnv({ AUDIO_AGENT_INPUT_FORMAT: "mp3" }) }).done;
    expect(env.code).toBe(2);
    expect(failureLine(env.stderr)).toBe('audio-agent: environment AUDIO_AGENT_INPUT_FORMAT="mp3" is not allowed: wire, ogg');
    const missing = await spawnAgent(["serve", "--output-source", "/dev/null"]).done;
    expect(missing.code).toBe(2);
    expect(failureLine(missing.stderr)).toBe('audio-agent: serve: --input-sink is required (a path or "-")');
    expect(existsSync(t.out) || existsSync(t.in) || existsSync(t.path("sink"))).toBe(false);
  });
});

/**
 * Both channels carry frames through `agent` (serve on t.out and t.in, with --stats-interval 0.2 and
 * --metrics): the 50 frames of a file to `output recv`, lossless, until the output channel stops;
 * then 20 microphone frames stamped 5 s ago, so that their age (and only theirs) is far above the
 * 200 ms maximum, in one session ended by Stop. Returns the metrics URL.
 */
async function bothChannelsCarry(t: ReturnType<typeof setup>): Promise<{ agent: Spawned; base: string }> {
  const capture = t.path("capture.wire");
  await writeWireFile(capture, 50);
  const agent = spawnAgent([
    "serve",
    "--output-socket", t.out, "--output-source", capture,
    "--input-socket", t.in, "--input-sink", t.path("sink.wire"),
    "--stats-interval", "0.2", "--metrics", "127.0.0.1:0",
  ]);
  const base = await metricsUrl(agent);
  await agent.waitForStderr("input-server: listening");
  const recv = spawnAgent(["output", "recv", "--socket", t.out, "--sink", t.path("out.wire"), "--count", "50"]);
  expect(await recv.exited, recv.stderr).toBe(0);
  await agent.waitForStderr("output-server: stopped");
  const mic = await rawMic(t.in);
  mic.send(MessageType.Config, encodeConfigPayload(DEFAULT_AUDIO_CONFIG));
  for (let i = 0; i < 20; i++) mic.send(MessageType.OpusFrame, micPayload(i), Date.now() - 5000);
  mic.send(MessageType.Stop);
  await agent.waitForStderr("input-server: session ended by Stop");
  return { agent, base };
}

const outputStats = (agent: Spawned) => statsLines(agent.stderr, "output-instruments");
const inputStats = (agent: Spawned) => statsLines(agent.stderr, "input-instruments");

describe("serve: each channel's instruments", () => {
  test("--stats-interval: a stats line per channel per interval, named by its channel (output-instruments, input-instruments), each adding up to its own channel's totals", async () => {
    const t = setup();
    const { agent } = await bothChannelsCarry(t);
    await until(() => sum(outputStats(agent), "frames") === 50 && sum(inputStats(agent), "frames") === 20, "both channels' frames in their stats lines");
    // Not the single roles' unprefixed component: which channel a line is would not show.
    expect(agent.stderr).not.toContain(" instruments: stats ");
    // As many lines of the one as of the other, give or take the interval the test stopped in.
    const [outputs, inputs] = [outputStats(agent).length, inputStats(agent).length];
    expect(Math.abs(outputs - inputs)).toBeLessThanOrEqual(1);
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    // Each channel's lines add up to its own stopped line.
    const output = expectAccountedLine(agent.stderr);
    expect(sum(outputStats(agent), "submitted")).toBe(output.submitted);
    expect(sum(outputStats(agent), "delivered")).toBe(output.delivered);
    expect(outputStats(agent).every((line) => !("sessions" in line))).toBe(true);
    const input = logFields(agent.stderr, "input-server", "stopped");
    expect(input).toMatchObject({ frames: "20", sessions: "1", clean_sessions: "1" });
    expect(sum(inputStats(agent), "frames")).toBe(20);
    expect(sum(inputStats(agent), "sessions")).toBe(1);
    expect(sum(inputStats(agent), "clean_sessions")).toBe(1);
    expect(inputStats(agent).every((line) => !("submitted" in line))).toBe(true);
  }, 60_000);

  test("each channel's latency is its own: frame age on the input channel, the writes' on the output channel, in the stats lines, the warnings, /metrics and the stopped lines", async () => {
    const t = setup();
    const { agent, base } = await bothChannelsCarry(t);
    await until(() => sum(outputStats(agent), "frames") === 50 && sum(inputStats(agent), "frames") === 20, "both channels' frames in their stats lines");
    expect(Math.max(...inputStats(agent).map((line) => (line.p99_frame_age_ms as number | undefined) ?? 0))).toBeGreaterThanOrEqual(5000);
    expect(inputStats(agent).some((line) => "p99_enqueue_to_write_ms" in line)).toBe(false);
    expect(outputStats(agent).some((line) => "p99_enqueue_to_write_ms" in line)).toBe(true);
    expect(outputStats(agent).some((line) => "p99_frame_age_ms" in line)).toBe(false);

    // The frame age warning is the input channel's.
    expect(logFields(agent.stderr, "input-instruments", "latency above maximum")).toMatchObject({ operation: "frame_age" });
    expect(agent.stderr).not.toMatch(/output-instruments: latency above \w+ operation=frame_age/);
    // /metrics: each channel's percentiles under its own label (README: source="frame_age", channel="input").
    const text = await scrape(base);
    const percentile = "jetkvm_audio_latency_percentile_seconds";
    expect(value(text, percentile, { source: "frame_age", percentile: "p99", channel: "input" })).toBeGreaterThanOrEqual(5);
    expect(value(text, percentile, { source: "enqueue_to_write", percentile: "p99", channel: "output" })).toBeGreaterThanOrEqual(0);
    expect(samples(text, percentile, { channel: "output", source: "frame_age" })).toEqual([]);
    expect(samples(text, percentile, { channel: "input", source: "enqueue_to_write" })).toEqual([]);

    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    // Each stopped line carries its own channel's latency fields.
    const latencyKeys = (fields: Record<string, string>) => Object.keys(fields).filter((key) => key.endsWith("_ms")).sort();
    expect(latencyKeys(logFields(agent.stderr, "output-server", "stopped"))).toEqual(
      ["enqueue_to_write", "write_call"].flatMap((op) => [`${op}_max_ms`, `${op}_p50_ms`, `${op}_p99_ms`]).sort(),
    );
    const input = logFields(agent.stderr, "input-server", "stopped");
    expect(latencyKeys(input)).toEqual(["frame_age_max_ms", "frame_age_p50_ms", "frame_age_p99_ms"]);
    expect(Number(input.frame_age_p99_ms)).toBeGreaterThanOrEqual(5000);
  }, 60_000);

  test("/metrics reads the input channel's socket queues as they are: the Acks a microphone client leaves unread while it is there, none once it has gone", async () => {
    const t = setup();
    // No frames on the output channel: a FIFO without a writer.
    const agent = spawnAgent([
      "serve",
      "--output-socket", t.out, "--output-source", makeFifo(t.path("capture.wire")),
      "--input-socket", t.in, "--input-sink", t.path("sink.wire"),
      "--metrics", "127.0.0.1:0",
    ]);
    const base = await metricsUrl(agent);
    await agent.waitForStderr("input-server: listening");
    // A client that reads nothing: the Acks of its Config and Heartbeats stay in its socket.
    const mic = await rawMic(t.in);
    mic.send(MessageType.Config, encodeConfigPayload(DEFAULT_AUDIO_CONFIG));
    for (let i = 0; i < 60; i++) {
      mic.send(MessageType.OpusFrame, micPayload(i));
      if (i % 5 === 0) mic.send(MessageType.Heartbeat);
    }
    const send = { component: "audio-input", buffer_type: "send" };
    await scrapeUntil(base, (text) => value(text, "jetkvm_microphone_frames_received_total") === 60, "the frames");
    expect(value(await scrape(base), "jetkvm_audio_socket_buffer_utilization_percent", send)).toBeGreaterThan(0);
    // Then broken framing: the server cuts the connection at once; what was queued in it went with it.
    mic.write(encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, new Uint8Array([9, 9, 9]), 1n));
    await agent.waitForStderr("input-server: framing violation from client; disconnecting");
    const text = await scrape(base);
    expect(value(text, "audio_agent_connected", { channel: "input" })).toBe(0);
    expect(value(text, "jetkvm_audio_socket_buffer_utilization_percent", send)).toBe(0);
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
  }, 60_000);
});
