import { describe, expect, test } from "bun:test";
import { closeSync, constants, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import {
  decodeConfigPayload,
  encodeConfigPayload,
  encodeMessage,
  INPUT_MAGIC,
  MAX_MESSAGE,
  MessageType,
  OUTPUT_MAGIC,
  type AudioConfig,
} from "../../src/protocol/index.ts";
import { PageFlag } from "../../src/media/ogg-page.ts";
import { ackSkippingServer } from "../support/ack-skipping-server.ts";
import { failureLine, findLogFields, logFields } from "../support/agent-log.ts";
import { sameBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { HELD_READER, heldPlayer, makeFifo, readAvailable, releaseReader, writeIntoFifo } from "../support/fifo.ts";
import { heldSocketPlayer } from "../support/player-sockets.ts";
import { monitorViewer } from "../support/monitor-viewer.ts";
import { healthz, heldUp, metricsUrl, scrape, scrapeUntil, value } from "../support/metrics.ts";
import { audioPacketsOf, packetsOf, pagesOf } from "../support/ogg.ts";
import { encodeWith, requireTool, runTool, TONE, wav } from "../support/opus-fixtures.ts";
import { payloadOfSize, testPayload } from "../support/payloads.ts";
import { agentEnv, spawnAgent, start, stopAgents, type Spawned } from "../support/processes.ts";
import { silentServer, writeInPieces } from "../support/peer.ts";
import { drainFile } from "../support/sources.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { parseWire, wholeWireMessages, wireBytes, writeWireFile, type WireMessage } from "../support/wire.ts";

const defer = useCleanup();
const DEFAULT_CONFIG: AudioConfig = { sampleRate: 48000, channels: 2, frameSize: 960 };

function setup() {
  const t = socketDir(defer, "aai-");
  defer(() => stopAgents());
  return { ...t, sock: t.path("in.sock"), sink: t.path("sink.wire") };
}

async function serve(sock: string, sink: string, extra: string[] = []): Promise<Spawned> {
  const agent = spawnAgent(["input", "serve", "--socket", sock, "--sink", sink, "--format", "wire", ...extra]);
  await agent.waitForStderr("listening socket=");
  return agent;
}

/** input serve --sink - into a FIFO whose HELD_READER reads nothing until released (releaseReader(heard)). */
async function heldServer(path: (name: string) => string, sock: string, extra: string[] = [], over: "pipe" | "socket" = "pipe") {
  const heard = path("heard.wire");
  const { player, agentOnIt, release } = over === "socket" ? heldSocketPlayer(heard) : heldPlayer(path("player"), heard);
  const server = agentOnIt(["input", "serve", "--socket", sock, "--sink", "-", "--metrics", "127.0.0.1:0", ...extra]);
  const base = await metricsUrl(server);
  return { server, player, heard, base, release };
}

/** Splits a sink's messages into sessions, each starting at a Config. */
function sessions(messages: WireMessage[]): WireMessage[][] {
  const out: WireMessage[][] = [];
  for (const m of messages) {
    if (m.type === MessageType.Config) out.push([]);
    if (out.length === 0) throw new Error(`sink starts with type ${m.type}, not a Config`);
    out[out.length - 1].push(m);
  }
  return out;
}

/** Config first (with `config`), then frames payloadOf(0..frames-1) in order, Heartbeats anywhere, Stop last. */
function checkSession(
  session: WireMessage[],
  config: AudioConfig,
  frames: number,
  payloadOf: (i: number) => Uint8Array = testPayload,
): { heartbeats: number } {
  expect(session[0].type).toBe(MessageType.Config);
  expect(decodeConfigPayload(session[0].payload)).toEqual(config);
  expect(session[session.length - 1].type).toBe(MessageType.Stop);
  let n = 0;
  let heartbeats = 0;
  let mismatch = -1;
  for (const m of session.slice(1, -1)) {
    if (m.type === MessageType.Heartbeat) {
      heartbeats++;
      continue;
    }
    expect(m.type).toBe(MessageType.OpusFrame);
    if (mismatch < 0 && !sameBytes(m.payload, payloadOf(n))) mismatch = n;
    n++;
  }
  expect(mismatch).toBe(-1);
  expect(n).toBe(frames);
  return { heartbeats };
}

describe("input serve / input send as processes", () => {
  test("a session of Config, 10k frames, Heartbeats and Stop lands in the wire sink exactly", async () => {
    const { sock, sink } = setup();
    const server = await serve(sock, sink, ["--once"]);
    // stdin is a live source: a queue that holds everything and no deadline keep it lossless.
    // Everything means in bytes too: 5000 frames of at most 1 KiB stay far below the queue's 8 MiB.
    const payloadOf = (i: number) => testPayload(i, 1024);
    const sender = spawnAgent(
      ["input", "send", "--socket", sock, "--source", "-", "--heartbeat-ms", "10", "--queue-frames", "20000", "--write-deadline-ms", "0", "--max-latency-ms", "60000", "--stuck-frames", "100000"],
      { stdin: "pipe" },
    );
    await sender.waitForStderr("connected");
    await sender.writeStdin(wireBytes(0, 5000, payloadOf, INPUT_MAGIC));
    // A pause mid-stream: Heartbeats go out and reach the sink between the two halves.
    await until(() => {
      try {
        return parseWire(new Uint8Array(readFileSync(sink)), INPUT_MAGIC).messages.filter((m) => m.type === MessageType.Heartbeat).length >= 3;
      } catch {
        return false;
      }
    }, "heartbeats in the sink");
    await sender.writeStdin(wireBytes(5000, 10_000, payloadOf, INPUT_MAGIC));
    sender.endStdin();

    expect(await sender.exited).toBe(0);
    expect(await server.exited).toBe(0);
    const all = sessions(wholeWireMessages(sink, INPUT_MAGIC));
    expect(all.length).toBe(1);
    const { heartbeats } = checkSession(all[0], DEFAULT_CONFIG, 10_000, payloadOf);
    expect(heartbeats).toBeGreaterThanOrEqual(3);
    const stopped = logFields(server.stderr, "input-server", "stopped");
    expect(stopped).toMatchObject({ frames: "10000", heartbeats: String(heartbeats), sessions: "1", clean_sessions: "1", protocol_errors: "0" });
    expect(server.stderr).toContain("session ended by Stop");
    const sent = logFields(sender.stderr, "input-client", "stopped");
    // delivered = frames + Heartbeats + Stop; the Config is written apart.
    expect(sent).toMatchObject({ dropped: "0", delivered: String(10_000 + heartbeats + 1), connects: "1", ack_timeouts: "0" });
    expect(Number(sent.acks)).toBeGreaterThanOrEqual(1);
    // The latency monitor's percentiles (ms) close both lines: Ack round trips at the sender, frame age at the server.
    expect(Number(sent.heartbeat_rtt_p99_ms)).toBeGreaterThanOrEqual(Number(sent.heartbeat_rtt_p50_ms));
    expect(Number(sent.write_call_max_ms)).toBeGreaterThanOrEqual(Number(sent.write_call_p99_ms));
    expect(Number(stopped.frame_age_max_ms)).toBeGreaterThanOrEqual(Number(stopped.frame_age_p50_ms));
  });

  test("two clients one after another: the server keeps serving, both sessions in the sink", async () => {
    const { sock, sink, path } = setup();
    const server = await serve(sock, sink);
    const first = (i: number) => testPayload(i);
    const second = (i: number) => testPayload(i + 500);
    await writeWireFile(path("a.wire"), 500, first);
    await writeWireFile(path("b.wire"), 700, second);
    for (const source of ["a.wire", "b.wire"]) {
      const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path(source), "--heartbeat-ms", "10"]);
      expect(await sender.exited).toBe(0);
      expect(sender.stderr).toContain("dropped=0");
    }
    await until(() => (server.stderr.match(/session ended by Stop/g) ?? []).length === 2, "two sessions ended");
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    const all = sessions(wholeWireMessages(sink, INPUT_MAGIC));
    expect(all.length).toBe(2);
    checkSession(all[0], DEFAULT_CONFIG, 500, first);
    checkSession(all[1], DEFAULT_CONFIG, 700, second);
    expect(logFields(server.stderr, "input-server", "stopped")).toMatchObject({
      frames: "1200",
      sessions: "2",
      clean_sessions: "2",
      protocol_errors: "0",
      signal: "SIGTERM",
    });
  });

  test("a service started again on its sink file with --append (restart, Restart=on-failure after a full disk) keeps what the sink recorded before and adds the next session", async () => {
    const { sock, sink, path } = setup();
    await writeWireFile(path("a.wire"), 500);
    const session = async (extra: string[]) => {
      const server = await serve(sock, sink, extra);
      const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("a.wire"), "--heartbeat-ms", "10"]);
      expect(await sender.exited).toBe(0);
      await until(() => server.stderr.includes("session ended by Stop"), "the session ended");
      server.kill("SIGTERM");
      expect(await server.exited).toBe(0);
    };
    await session([]);
    const recorded = new Uint8Array(readFileSync(sink));
    // The same command line again, as the init script's restart or systemd's Restart=on-failure runs it.
    await session(["--append"]);
    const now = new Uint8Array(readFileSync(sink));
    expect(sameBytes(now.subarray(0, recorded.length), recorded)).toBe(true);
    const both = sessions(wholeWireMessages(sink, INPUT_MAGIC));
    expect(both.length).toBe(2);
    for (const one of both) checkSession(one, DEFAULT_CONFIG, 500);
  });

  test("--append onto a file of the other format (an Ogg recording under a wire sink, a wire capture under an Ogg one, in serve too) exits 2 at start with one line naming the file, what it holds and the flags, the file left as it was", async () => {
    const { sock, path, dir } = setup();
    const ogg = path("recorded.opus");
    writeFileSync(ogg, readFileSync(TONE));
    const wire = path("recorded.wire");
    await writeWireFile(wire, 20);
    const before = [readFileSync(ogg), readFileSync(wire)];
    const runs: [string[], string][] = [
      [["input", "serve", "--socket", sock, "--sink", ogg, "--format", "wire", "--append"], `sink ${ogg} (--format wire) holds Ogg, and --append adds to a file of its own format only: use --format ogg, or another file`],
      [["input", "serve", "--socket", sock, "--sink", wire, "--format", "ogg", "--append"], `sink ${wire} (--format ogg) holds a wire capture, and --append adds to a file of its own format only: use --format wire, or another file`],
      [
        ["serve", "--output-source", wire, "--output-socket", path("out.sock"), "--input-socket", sock, "--input-sink", ogg, "--input-append"],
        `sink ${ogg} (--input-format wire) holds Ogg, and --input-append adds to a file of its own format only: use --input-format ogg, or another file`,
      ],
    ];
    for (const [args, line] of runs) {
      const agent = spawnAgent(args);
      expect(await agent.exited, agent.stderr).toBe(2);
      expect(failureLine(agent.stderr)).toBe(`audio-agent: ${line}`);
      // Refused before any socket listened: no client was let in for nothing.
      expect(agent.stderr).not.toContain("listening");
    }
    expect([readFileSync(ogg), readFileSync(wire)]).toEqual(before);
    expect(readdirSync(dir).sort()).toEqual(["recorded.opus", "recorded.wire"]);
  });

  test("--append onto a wire capture of the other channel (output frames under an input sink, in serve too; input frames under `output recv`) exits 2 at start naming both channels' magic, and where --append was set when not by its flag (environment, config key), the file left as it was", async () => {
    const { sock, path, dir } = setup();
    const outputCapture = path("output.wire");
    writeFileSync(outputCapture, wireBytes(0, 5));
    const inputCapture = path("input.wire");
    writeFileSync(inputCapture, wireBytes(0, 5, testPayload, INPUT_MAGIC));
    const before = [readFileSync(outputCapture), readFileSync(inputCapture)];
    const ofOutput = `holds a capture of the output channel ("UOKJ"), and`;
    const runs: [string[], string][] = [
      [["input", "serve", "--socket", sock, "--sink", outputCapture, "--append"], `sink ${outputCapture} (--format wire) ${ofOutput} --append adds to one of the input channel ("IMKJ") only: use another file`],
      [
        ["serve", "--output-source", outputCapture, "--output-socket", path("out.sock"), "--input-socket", sock, "--input-sink", outputCapture, "--input-format", "wire", "--input-append"],
        `sink ${outputCapture} (--input-format wire) ${ofOutput} --input-append adds to one of the input channel ("IMKJ") only: use another file`,
      ],
      [
        ["output", "recv", "--socket", sock, "--sink", inputCapture, "--append"],
        `sink ${inputCapture} (--format wire) holds a capture of the input channel ("IMKJ"), and --append adds to one of the output channel ("UOKJ") only: use another file`,
      ],
    ];
    for (const [args, line] of runs) {
      const agent = spawnAgent(args);
      expect(await agent.exited, agent.stderr).toBe(2);
      expect(failureLine(agent.stderr)).toBe(`audio-agent: ${line}`);
      // Refused before any socket listened: no client was let in for nothing.
      expect(agent.stderr).not.toContain("listening");
    }
    // --append set elsewhere than by its flag: the line says where, as it says for the format.
    const config = path("append.json");
    writeFileSync(config, JSON.stringify({ input: { append: true } }));
    const elsewhere: [string[], Record<string, string>, string][] = [
      [
        ["input", "serve", "--socket", sock, "--sink", outputCapture],
        { AUDIO_AGENT_APPEND: "1" },
        `sink ${outputCapture} (--format wire) ${ofOutput} --append (from environment AUDIO_AGENT_APPEND) adds to one of the input channel ("IMKJ") only: use another file`,
      ],
      [
        ["serve", "--config", config, "--output-source", outputCapture, "--output-socket", path("out.sock"), "--input-socket", sock, "--input-sink", outputCapture, "--input-format", "wire"],
        {},
        `sink ${outputCapture} (--input-format wire) ${ofOutput} --input-append (from config "input.append" in ${config}) adds to one of the input channel ("IMKJ") only: use another file`,
      ],
    ];
    for (const [args, env, line] of elsewhere) {
      const agent = spawnAgent(args, { env: agentEnv(env) });
      expect(await agent.exited, agent.stderr).toBe(2);
      expect(failureLine(agent.stderr)).toBe(`audio-agent: ${line}`);
    }
    expect([readFileSync(outputCapture), readFileSync(inputCapture)]).toEqual(before);
    expect(readdirSync(dir).sort()).toEqual(["append.json", "input.wire", "output.wire"]);
  });

  test("a short file sent lossless: the Config's Ack, which comes after the last frame is written, is read before the sender leaves", async () => {
    const { sock, sink, path } = setup();
    const server = await serve(sock, sink);
    await writeWireFile(path("short.wire"), 5, testPayload);
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("short.wire")]);
    expect(await sender.exited).toBe(0);
    const sent = logFields(sender.stderr, "input-client", "stopped");
    expect(sent).toMatchObject({ delivered: "6", dropped: "0", acks: "1", ack_timeouts: "0" });
    expect(Number(sent.heartbeat_rtt_max_ms)).toBeGreaterThan(0);
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
  });

  test("a server that never acks: the lossless sender still ends its session with Stop and exits 0, with acks=0", async () => {
    const { sock, path } = setup();
    const silent = silentServer(sock);
    defer(() => silent.stop());
    await writeWireFile(path("short.wire"), 5, testPayload);
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("short.wire")]);
    expect(await sender.exited).toBe(0);
    expect(logFields(sender.stderr, "input-client", "stopped")).toMatchObject({ delivered: "6", dropped: "0", acks: "0", ack_timeouts: "0" });
    // Its exit may be seen before its bytes are read (a sender done within one turn of the test's loop): its connection's close comes after them.
    await until(() => silent.closed === 1, "the sender's connection to close");
    const types = parseWire(silent.bytesOf(0), INPUT_MAGIC).messages.map((m) => m.type);
    expect(types.filter((t) => t === MessageType.Stop).length).toBe(1);
    expect(types.at(-1)).toBe(MessageType.Stop);
  });

  test("a server that acks the Config and then reads nothing: SIGTERM to the lossless sender it holds up (full socket, full queue) exits 0, each frame delivered or counted shutdown", async () => {
    const { sock, path } = setup();
    const listener = Bun.listen({
      unix: sock,
      socket: {
        open(socket) {
          socket.write(encodeMessage(INPUT_MAGIC, MessageType.Ack)); // the Config's Ack: the server is alive
          socket.pause(); // and never reads again
        },
        data() {},
      },
    });
    defer(() => listener.stop(true));
    const N = 2000;
    await writeWireFile(path("big.wire"), N, (i) => payloadOfSize(i, 4000));
    // Killed (code -1) if the signal is not acted on within the bounded final flush, long before 60 s.
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("big.wire"), "--metrics", "127.0.0.1:0"], { timeoutMs: 20_000 });
    const sent = await heldUp(await metricsUrl(sender), "jetkvm_microphone_frames_sent_total", N);
    sender.kill("SIGTERM");
    expect(await sender.exited, sender.stderr).toBe(0);
    const stopped = logFields(sender.stderr, "input-client", "stopped");
    expect(Number(stopped.frames)).toBe(sent);
    expect(Number(stopped.dropped_shutdown)).toBeGreaterThan(0);
    expect(Number(stopped.submitted)).toBe(Number(stopped.delivered) + Number(stopped.dropped));
    expect(stopped.dropped).toBe(stopped.dropped_shutdown);
  }, 60_000);

  test("Stop mid-stream: SIGTERM to input send after N frames ends the session with Stop; serve --once exits 0 with a flushed sink", async () => {
    const { sock, sink } = setup();
    const server = await serve(sock, sink, ["--once", "--metrics", "127.0.0.1:0"]);
    const base = await metricsUrl(server);
    const sender = spawnAgent(
      // Lossless enough for a burst on stdin (see the first test); the stuck check counts frames, not time.
      ["input", "send", "--socket", sock, "--source", "-", "--heartbeat-ms", "20", "--write-deadline-ms", "0", "--max-latency-ms", "60000", "--stuck-frames", "100000"],
      { stdin: "pipe" },
    );
    await sender.waitForStderr("connected");
    const N = 300;
    await sender.writeStdin(wireBytes(0, N, testPayload, INPUT_MAGIC));
    await until(
      async () =>
        (
          await healthz(base).catch((e) => {
            throw new Error(`${e}\nserver:\n${server.stderr}\nsender:\n${sender.stderr}`);
          })
        ).frames === N,
      "the server to receive the frames",
      20000,
      10,
    );
    // The source is still open: the sender is mid-stream when the signal comes.
    sender.kill("SIGTERM");
    expect(await sender.exited).toBe(0);
    expect(await server.exited).toBe(0);
    expect(server.stderr).toContain("session ended by Stop");
    const all = sessions(wholeWireMessages(sink, INPUT_MAGIC));
    expect(all.length).toBe(1);
    checkSession(all[0], DEFAULT_CONFIG, N);
    expect(logFields(server.stderr, "input-server", "stopped")).toMatchObject({ frames: String(N), clean_sessions: "1" });
  });

  test("garbage after a valid Config: the server drops that client with a logged reason and serves the next", async () => {
    const { sock, sink, path } = setup();
    const server = await serve(sock, sink);
    let closed = false;
    const raw = await Bun.connect({
      unix: sock,
      socket: { data() {}, drain() {}, close: () => void (closed = true), error() {} },
    });
    defer(() => raw.terminate());
    const mono: AudioConfig = { sampleRate: 48000, channels: 1, frameSize: 960 };
    raw.write(encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(mono), 1n));
    await server.waitForStderr("input-server: config");
    raw.write(encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, new Uint8Array([9, 9, 9]), 2n));
    await until(() => closed, "garbage client disconnected");
    await server.waitForStderr("framing violation from client; disconnecting");
    const violation = logFields(server.stderr, "input-server", "framing violation from client; disconnecting");
    expect(violation.error).toContain("BadMagic");
    expect(server.stderr).toMatch(/session ended without Stop reason="protocol error: BadMagic/);

    await writeWireFile(path("a.wire"), 100);
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("a.wire")]);
    expect(await sender.exited).toBe(0);
    await server.waitForStderr("session ended by Stop");
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);

    const all = sessions(wholeWireMessages(sink, INPUT_MAGIC));
    expect(all.length).toBe(2);
    // The bad client's valid Config was recorded, nothing after it.
    expect(all[0].length).toBe(1);
    expect(decodeConfigPayload(all[0][0].payload)).toEqual(mono);
    checkSession(all[1], DEFAULT_CONFIG, 100);
    expect(logFields(server.stderr, "input-server", "stopped")).toMatchObject({
      frames: "100",
      sessions: "2",
      clean_sessions: "1",
      protocol_errors: "1",
    });
  });

  test("Config from an Ogg source's OpusHead (opusenc mono), and flags that override it", async () => {
    const { sock, path } = setup();
    const opusenc = requireTool("opusenc", "opus-tools");
    writeFileSync(path("mono.wav"), wav(1, 48000));
    const encoded = runTool([opusenc, "--quiet", "--framesize", "60", path("mono.wav"), path("mono.opus")]);
    expect(encoded.exitCode).toBe(0);
    // The packets our Ogg reader finds: what the server must receive, in order.
    const read = await drainFile(path("mono.opus"), { lenient: false });
    expect(read.error).toBeUndefined();
    const packets = read.frames.map((f) => f.payload);
    expect(packets.length).toBeGreaterThan(10);

    const cases: [string[], AudioConfig][] = [
      [[], { sampleRate: 48000, channels: 1, frameSize: 2880 }],
      [["--channels", "2", "--sample-rate", "16000", "--frame-size", "480"], { sampleRate: 16000, channels: 2, frameSize: 480 }],
    ];
    for (const [flags, config] of cases) {
      const sink = path(`sink-${flags.length}.wire`);
      const server = await serve(sock, sink, ["--once"]);
      const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("mono.opus"), "--format", "ogg", ...flags]);
      expect(await sender.exited).toBe(0);
      expect(await server.exited).toBe(0);
      expect(logFields(server.stderr, "input-server", "config")).toMatchObject({
        sampleRate: String(config.sampleRate),
        channels: String(config.channels),
        frameSize: String(config.frameSize),
      });
      const all = sessions(wholeWireMessages(sink, INPUT_MAGIC));
      expect(all.length).toBe(1);
      checkSession(all[0], config, packets.length, (i) => packets[i]);
    }
  });

  test("a FIFO's next writer with other audio: a new Config goes ahead of its frames, acked, in one session", async () => {
    const { sock, sink, path, dir } = setup();
    encodeWith(dir, "mono", ["--framesize", "20"], { channels: 1, samples: 48000 });
    encodeWith(dir, "stereo", ["--framesize", "60"], { channels: 2, samples: 48000 });
    const streams = await Promise.all(["mono.opus", "stereo.opus"].map(async (f) => (await drainFile(path(f), { lenient: false })).frames.map((x) => x.payload)));
    const fifo = makeFifo(path("mic.fifo"));

    const server = await serve(sock, sink, ["--once"]);
    // A FIFO is live: frames that wait over 100 ms for a server (a loaded machine's) are dropped by
    // default, and with them maybe a Config; this test is about the Configs, so the budget is off.
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", fifo, "--format", "ogg", "--max-latency-ms", "60000", "--write-deadline-ms", "0"]);
    expect(await writeIntoFifo(fifo, path("mono.opus"))).toBe(0);
    // The next writer once the agent has seen this one go: one opening the FIFO before that would
    // continue the same byte stream (a chained Ogg stream, which is not read).
    await sender.waitForStderr("source: writer closed the stream");
    expect(await writeIntoFifo(fifo, path("stereo.opus"))).toBe(0);
    const total = streams[0]!.length + streams[1]!.length;
    // Read while the server writes it: a message being written just then may be there in part.
    const frames = () => parseWire(new Uint8Array(readFileSync(sink)), INPUT_MAGIC).messages.filter((m) => m.type === MessageType.OpusFrame).length;
    await until(() => frames() >= total, `${total} frames in the sink`);
    sender.kill("SIGTERM");
    expect(await sender.exited).toBe(0);
    expect(await server.exited).toBe(0);

    // One session: the first writer's Config, its frames, the second writer's Config, its frames, Stop.
    const messages = wholeWireMessages(sink, INPUT_MAGIC).filter((m) => m.type !== MessageType.Heartbeat);
    const configs = messages.flatMap((m, i) => (m.type === MessageType.Config ? [[i, decodeConfigPayload(m.payload)] as const] : []));
    expect(configs.map(([, c]) => c)).toEqual([
      { sampleRate: 48000, channels: 1, frameSize: 960 },
      { sampleRate: 48000, channels: 2, frameSize: 2880 },
    ]);
    const [first, second] = [messages.slice(1, configs[1]![0]), messages.slice(configs[1]![0] + 1, -1)];
    expect(first.map((m) => m.type === MessageType.OpusFrame && sameBytes(m.payload, streams[0]![first.indexOf(m)]!))).toEqual(first.map(() => true));
    expect(second.map((m) => m.type === MessageType.OpusFrame && sameBytes(m.payload, streams[1]![second.indexOf(m)]!))).toEqual(second.map(() => true));
    expect(messages.at(-1)!.type).toBe(MessageType.Stop);
    // Both Configs were acked: no Ack timed out, no reconnect.
    expect(logFields(sender.stderr, "input-client", "config changed")).toMatchObject({ channels: "2", frameSize: "2880" });
    expect(logFields(sender.stderr, "input-client", "stopped")).toMatchObject({ connects: "1", ack_timeouts: "0", dropped: "0" });
  });

  test("a FIFO's first writer with audio other than the defaults (mono, 60 ms): the session starts with its Config, and the sender logs no change", async () => {
    const { sock, sink, path, dir } = setup();
    // Not 48000/2/960 (tone.opus is just that): a Config left at the defaults would show.
    encodeWith(dir, "mono", ["--framesize", "60"], { channels: 1, samples: 48000 });
    const packets = (await drainFile(path("mono.opus"), { lenient: false })).frames.map((f) => f.payload);
    const mono: AudioConfig = { sampleRate: 48000, channels: 1, frameSize: 2880 };
    const fifo = makeFifo(path("mic.fifo"));

    const server = await serve(sock, sink, ["--once"]);
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", fifo, "--format", "ogg"]);
    expect(await writeIntoFifo(fifo, path("mono.opus"))).toBe(0);
    // Read while the server still writes the file: a message cut short at its end is not counted yet
    // (the file is checked whole once the server has exited).
    const frames = () => parseWire(new Uint8Array(readFileSync(sink)), INPUT_MAGIC).messages.filter((m) => m.type === MessageType.OpusFrame).length;
    await until(() => frames() >= packets.length, `${packets.length} frames in the sink`);
    sender.kill("SIGTERM");
    expect(await sender.exited).toBe(0);
    expect(await server.exited).toBe(0);

    // The only Config the server got is the writer's: the first connection was made with it.
    expect(server.stderr.match(/ input-server: config sampleRate=/g)?.length).toBe(1);
    expect(logFields(server.stderr, "input-server", "config")).toMatchObject({ sampleRate: "48000", channels: "1", frameSize: "2880" });
    const all = sessions(wholeWireMessages(sink, INPUT_MAGIC));
    expect(all.length).toBe(1);
    checkSession(all[0], mono, packets.length, (i) => packets[i]);
    // Known before connecting, it is where the run starts, not a change.
    expect(logFields(sender.stderr, "input-client", "connected")).toMatchObject({ sampleRate: "48000", channels: "1", frameSize: "2880" });
    expect(findLogFields(sender.stderr, "input-client", "config changed")).toBeUndefined();
  });

  test("Ogg streams at 16 then 24 kHz, chained: each Config counts its frame at its own rate (320 for 20 ms, 240 for 10 ms), and a rate given by flag counts the same durations at that rate", async () => {
    const { sock, sink, path, dir } = setup();
    const chained = path("chained.opus");
    writeFileSync(chained, Buffer.concat([
      readFileSync(encodeWith(dir, "mono16k", ["--framesize", "20"], { channels: 1, samples: 16000, rate: 16000 })),
      readFileSync(encodeWith(dir, "stereo24k", ["--framesize", "10"], { channels: 2, samples: 24000, rate: 24000 })),
    ]));
    for (const [flags, configs] of [
      [[], ["16000/1/320", "24000/2/240"]],
      [["--sample-rate", "48000"], ["48000/1/960", "48000/2/480"]],
      [["--sample-rate", "8000"], ["8000/1/160", "8000/2/80"]],
      [["--sample-rate", "8000", "--frame-size", "40"], ["8000/1/40", "8000/2/40"]],
    ] as const) {
      const server = await serve(sock, sink, ["--once"]);
      const sender = spawnAgent(["input", "send", "--socket", sock, "--source", chained, "--format", "ogg", ...flags]);
      expect(await sender.exited, sender.stderr).toBe(0);
      expect(await server.exited, server.stderr).toBe(0);
      const got = [...server.stderr.matchAll(/ input-server: config sampleRate=(\d+) channels=(\d+) frameSize=(\d+)\n/g)].map((m) => m.slice(1).join("/"));
      expect({ flags, configs: got }).toEqual({ flags, configs: [...configs] });
    }
  });

  test("a chained Ogg file sent lossless: each stream under its own Config, every packet in order, nothing dropped", async () => {
    const { sock, sink, path, dir } = setup();
    encodeWith(dir, "mono", ["--framesize", "20"], { channels: 1, samples: 96000 });
    encodeWith(dir, "stereo", ["--framesize", "10"], { channels: 2, samples: 96000 });
    writeFileSync(path("chained.opus"), Buffer.concat([readFileSync(path("mono.opus")), readFileSync(path("stereo.opus"))]));
    const [mono, stereo] = await Promise.all(["mono.opus", "stereo.opus"].map((f) => drainFile(path(f), { lenient: false })));
    const packets = [...mono!.frames, ...stereo!.frames];

    const server = await serve(sock, sink, ["--once"]);
    // A small queue: the change comes while it holds frames of the first stream.
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("chained.opus"), "--format", "ogg", "--queue-frames", "4"]);
    expect(await sender.exited).toBe(0);
    expect(await server.exited).toBe(0);
    const messages = wholeWireMessages(sink, INPUT_MAGIC).filter((m) => m.type !== MessageType.Heartbeat);
    const configAt = messages.flatMap((m, i) => (m.type === MessageType.Config ? [i] : []));
    expect(configAt.map((i) => decodeConfigPayload(messages[i]!.payload))).toEqual([
      { sampleRate: 48000, channels: 1, frameSize: 960 },
      { sampleRate: 48000, channels: 2, frameSize: 480 },
    ]);
    // Every packet of both streams, in order, the second Config right before the stereo ones.
    const frames = messages.filter((m) => m.type === MessageType.OpusFrame);
    expect(frames.length).toBe(packets.length);
    expect(frames.findIndex((m, i) => !sameBytes(m.payload, packets[i]!.payload))).toBe(-1);
    expect(messages.slice(1, configAt[1]).filter((m) => m.type === MessageType.OpusFrame).length).toBe(mono!.frames.length);
    expect(logFields(sender.stderr, "input-client", "stopped")).toMatchObject({ dropped: "0", ack_timeouts: "0" });
  });

  test("an input server that skips the Ack of every third Heartbeat keeps its one connection and gets frames to the end", async () => {
    const { sock, path } = setup();
    const server = ackSkippingServer(sock);
    defer(() => server.stop());
    // 6 s of 20 ms frames, sent in real time. The server is this test process: on a loaded machine
    // it may not read for over 100 ms, which the default latency budget and write deadline would
    // answer by dropping (and counting) frames; neither is what this test is about, so both are off.
    await writeWireFile(path("six.wire"), 300);
    const sender = spawnAgent([
      "input", "send", "--socket", sock, "--source", path("six.wire"), "--realtime", "--heartbeat-ms", "200", "--ack-timeout-ms", "700",
      "--max-latency-ms", "60000", "--write-deadline-ms", "0",
    ]);
    expect(await sender.exited).toBe(0);
    // Its exit may be seen before its last bytes are read: its connection's close comes after them.
    await until(() => server.closed === 1, "the sender's connection to close");
    expect(server.connections).toBe(1);
    expect(server.heartbeats).toBeGreaterThanOrEqual(20);
    expect(server.stopped).toBe(true);
    // Every frame, whole and in order, up to the very last.
    expect(server.frames.length).toBe(300);
    expect(server.frames.every((p, k) => sameBytes(p, testPayload(k)))).toBe(true);
    expect(logFields(sender.stderr, "input-client", "stopped")).toMatchObject({ connects: "1", ack_timeouts: "0", dropped: "0" });
  });

  test("an Ogg file sink leaves out OpusFrames with nothing to place on the timeline (empty), and counts them: frames = packets recorded + dropped", async () => {
    const { sock, path } = setup();
    const tone = packetsOf(new Uint8Array(readFileSync(TONE))).slice(2);
    const payloadOf = (i: number) => (i % 10 === 9 ? new Uint8Array(0) : tone[i % tone.length]!);
    await writeWireFile(path("mic.wire"), 60, payloadOf);
    const server = spawnAgent(["input", "serve", "--socket", sock, "--sink", path("mic.opus"), "--format", "ogg", "--once"]);
    await server.waitForStderr("listening socket=");
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("mic.wire"), "--max-latency-ms", "60000", "--write-deadline-ms", "0"]);
    expect(await sender.exited, sender.stderr).toBe(0);
    expect(await server.exited, server.stderr).toBe(0);
    expect(audioPacketsOf(new Uint8Array(readFileSync(path("mic.opus")))).length).toBe(54);
    expect(logFields(server.stderr, "input-server", "stopped")).toMatchObject({ frames: "60", dropped: "6", dropped_sink_invalid_packet: "6" });
  });

  test("an Ogg sink on a FIFO feeds a player: opusdec reading it decodes every packet it was given, and the stream ends when the server stops", async () => {
    const { sock, path } = setup();
    const opusenc = requireTool("opusenc", "opus-tools");
    const opusdec = requireTool("opusdec", "opus-tools");
    writeFileSync(path("two.wav"), wav(2, 96_000));
    expect(runTool([opusenc, "--quiet", path("two.wav"), path("two.opus")]).exitCode).toBe(0);
    const packets = (await drainFile(path("two.opus"), { lenient: false })).frames.length;
    const fifo = makeFifo(path("player.opus"));
    // The player first, as on a device: it waits in its open of the FIFO for the agent. Raw PCM out: 4 bytes a stereo sample.
    const player = start([opusdec, "--quiet", fifo, path("played.raw")]);

    const server = spawnAgent(["input", "serve", "--socket", sock, "--sink", fifo, "--format", "ogg", "--once"]);
    await server.waitForStderr("listening socket=");
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("two.opus"), "--format", "ogg", "--realtime", "--max-latency-ms", "60000", "--write-deadline-ms", "0"]);
    expect(await sender.exited, sender.stderr).toBe(0);
    expect(await server.exited, server.stderr).toBe(0);
    expect(await player.exited, player.stderr).toBe(0);

    const stopped = logFields(server.stderr, "input-server", "stopped");
    expect(Number(stopped.frames)).toBe(packets);
    // Only a player slower to reach its open than the first frames loses any, and those are counted.
    expect(stopped.dropped_sink_reader_slow).toBeUndefined();
    const delivered = packets - Number(stopped.dropped);
    expect(delivered).toBeGreaterThan(packets / 2);
    expect(server.stderr).toContain("input-server: sink FIFO opened by a reader");
    // Every packet given decoded, less the OpusHead's pre-skip (the stream carries no end trimming).
    expect(readFileSync(path("played.raw")).length / 4).toBe(delivered * 960 - 312);
  });

  test("SIGTERM mid-session while a FIFO's reader stalls with the pipe full: a reader back within 1 s gets the frames still pending on the end-of-stream page", async () => {
    const { sock, path } = setup();
    const fifo = makeFifo(path("player.opus"));
    // Large packets (TOC: 20 ms, code 0), so that real-time streaming fills the pipe in about a second.
    const packet = (i: number) => {
      const bytes = payloadOfSize(i, 1000);
      bytes[0] = 0xfc;
      return bytes;
    };
    await writeWireFile(path("mic.wire"), 500, packet);
    const heard = path("heard.opus");
    const player = start(["sh", "-c", HELD_READER, fifo, heard]);
    const server = spawnAgent(["input", "serve", "--socket", sock, "--sink", fifo, "--format", "ogg", "--page-ms", "10000", "--metrics", "127.0.0.1:0"]);
    const base = await metricsUrl(server);
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("mic.wire"), "--realtime", "--loop", "--max-latency-ms", "60000", "--write-deadline-ms", "0"]);
    await scrapeUntil(base, (text) => value(text, "audio_agent_frames_dropped_by_reason_total", { reason: "sink_reader_slow" }) > 0, "the pipe to fill");
    // A page is being filled (10 s of pages): the stop must not drop it as the pipe is full.
    server.kill("SIGTERM");
    releaseReader(heard);
    expect(await server.exited, server.stderr).toBe(0);
    expect(await player.exited).toBe(0);
    sender.kill("SIGTERM");
    await sender.exited;

    const pages = pagesOf(new Uint8Array(readFileSync(heard)));
    const last = pages.at(-1)!;
    expect(last.flags & PageFlag.EndOfStream).toBe(PageFlag.EndOfStream);
    expect(last.table.filter((v) => v < 255).length).toBeGreaterThan(0);
    const stopped = logFields(server.stderr, "input-server", "stopped");
    const packets = audioPacketsOf(new Uint8Array(readFileSync(heard))).length;
    expect(packets + Number(stopped.dropped)).toBe(Number(stopped.frames));
  });

  test.each(["pipe", "socket"] as const)("--sink - to a %s whose reader stops reading holds up the client, not the process: SIGTERM exits 0, and each frame is in it whole or counted sink_reader_slow", async (over) => {
    const { sock, path } = setup();
    const N = 20_000;
    await writeWireFile(path("mic.wire"), N);
    const { server, player, heard, base, release } = await heldServer(path, sock, [], over);
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("mic.wire")]);
    await heldUp(base, "jetkvm_microphone_frames_received_total", N);
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);
    release();
    expect(await player.exited).toBe(0);
    sender.kill("SIGTERM");
    await sender.exited;

    const stopped = logFields(server.stderr, "input-server", "stopped");
    expect(Number(stopped.dropped_sink_reader_slow)).toBeGreaterThan(0);
    // The last message may be cut short (a non-blocking write takes what fits): its frame is one of those counted.
    const wire = parseWire(new Uint8Array(readFileSync(heard)), INPUT_MAGIC);
    expect(wire.error).toBeUndefined();
    expect(wire.trailing).toBeLessThan(MAX_MESSAGE);
    const frames = wire.messages.filter((m) => m.type === MessageType.OpusFrame);
    frames.forEach((m, k) => expect(sameBytes(m.payload, testPayload(k))).toBe(true));
    // What the client had sent that the server, held up, had not read when it stopped is read as the client
    // leaves, counted as sent after its session (session_ended), as at any stop.
    expect(Number(stopped.dropped)).toBe(Number(stopped.dropped_sink_reader_slow) + Number(stopped.dropped_session_ended ?? 0));
    expect(frames.length + Number(stopped.dropped)).toBe(Number(stopped.frames));
  }, 60_000);

  test("--realtime delivers every packet of a 2 s opusenc file to a server that is up, the first one too", async () => {
    const { sock, sink, path } = setup();
    const opusenc = requireTool("opusenc", "opus-tools");
    writeFileSync(path("two.wav"), wav(2, 96_000));
    expect(runTool([opusenc, "--quiet", path("two.wav"), path("two.opus")]).exitCode).toBe(0);
    const read = await drainFile(path("two.opus"), { lenient: false });
    expect(read.error).toBeUndefined();
    const packets = read.frames.map((f) => f.payload);
    expect(packets.length).toBeGreaterThanOrEqual(100); // 2 s of 20 ms packets (and one for the encoder delay)

    const server = await serve(sock, sink, ["--once"]);
    // No deadline or budget: a loaded machine pausing the server would drop (and count) frames, which this test is not about.
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("two.opus"), "--format", "ogg", "--realtime", "--max-latency-ms", "60000", "--write-deadline-ms", "0"]);
    expect(await sender.exited).toBe(0);
    expect(await server.exited).toBe(0);
    const all = sessions(wholeWireMessages(sink, INPUT_MAGIC));
    expect(all.length).toBe(1);
    checkSession(all[0], DEFAULT_CONFIG, packets.length, (i) => packets[i]);
    expect(logFields(sender.stderr, "input-client", "stopped")).toMatchObject({ dropped: "0" });
  });
});

describe("input serve: the Ogg sink's settings reach the recording", () => {
  test("--pre-skip is its OpusHead's, --page-ms its pages' length: a page closes once it holds that much audio", async () => {
    const { sock, path } = setup();
    const tone = packetsOf(new Uint8Array(readFileSync(TONE))).slice(2, 62);
    await writeWireFile(path("tone.wire"), tone.length, (i) => tone[i]!);
    const sink = path("mic.opus");
    const server = await serve(sock, sink, ["--format", "ogg", "--once", "--pre-skip", "0", "--page-ms", "1000"]);
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("tone.wire")]);
    expect(await sender.exited, sender.stderr).toBe(0);
    expect(await server.exited, server.stderr).toBe(0);
    const bytes = new Uint8Array(readFileSync(sink));
    const head = packetsOf(bytes)[0]!;
    expect(new DataView(head.buffer, head.byteOffset).getUint16(10, true)).toBe(0);
    // Head, tags, then 1 s of 20 ms packets (granule 48000), then the other 10 on the end-of-stream page.
    expect(pagesOf(bytes).map((page) => page.granule)).toEqual([0, 0, 48_000, 57_600]);
    expect(audioPacketsOf(bytes)).toEqual(tone);
  });
});

describe("input serve: a session that ends without Stop", () => {
  test("--once: a first session cut short (the client gone, no Stop) ends the run too, exit 0, its frames kept", async () => {
    const { sock, sink } = setup();
    const server = await serve(sock, sink, ["--once"]);
    const client = await Bun.connect({ unix: sock, socket: { data() {}, error() {} } });
    const config = encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 }));
    client.write(Buffer.concat([config, ...[0, 1, 2].map((i) => encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, testPayload(i)))]));
    await server.waitForStderr("config ");
    client.end();
    expect(await server.exited, server.stderr).toBe(0);
    expect(logFields(server.stderr, "input-server", "stopped")).toMatchObject({ frames: "3", sessions: "1", clean_sessions: "0" });
    const frames = parseWire(new Uint8Array(readFileSync(sink)), INPUT_MAGIC).messages.filter((m) => m.type === MessageType.OpusFrame);
    expect(frames.map((m, i) => sameBytes(m.payload, testPayload(i)))).toEqual([true, true, true]);
  }, 30_000);

  test("a client gone without Stop is a connection drop; one that sent Stop is not (jetkvm_microphone_connection_drops_total)", async () => {
    const { sock, sink } = setup();
    const server = await serve(sock, sink, ["--metrics", "127.0.0.1:0"]);
    const base = await metricsUrl(server);
    const config = encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 }));
    const stop = encodeMessage(INPUT_MAGIC, MessageType.Stop, new Uint8Array(0));
    for (const [k, bytes] of [[1, Buffer.concat([config, stop])], [2, config], [3, Buffer.concat([config, stop])]] as const) {
      const client = await Bun.connect({ unix: sock, socket: { data() {}, error() {} } });
      client.write(bytes);
      await Bun.sleep(50);
      client.end();
      await until(() => server.stderr.split("client disconnected").length - 1 === k, `client ${k} gone`);
    }
    const drops = await scrapeUntil(base, (text) => value(text, "audio_agent_reconnects_total") === 2, "the three sessions counted");
    expect(value(drops, "jetkvm_microphone_connection_drops_total")).toBe(1);
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
  }, 30_000);
});

describe("input serve: frames stamped off this machine's clock", () => {
  /** A header stamp (ns) `offsetMs` from now, on this machine's clock. */
  const stampAt = (offsetMs = 0) => BigInt(Date.now() + offsetMs) * 1_000_000n;

  /** One session: a Config, a frame (testPayload(i)) stamped each of `stamps`, and Stop, written whole; resolves once `server` has seen its client go. */
  async function stampedSession(sock: string, server: Spawned, stamps: bigint[]): Promise<void> {
    const frames = stamps.map((stamp, i) => encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, testPayload(i), stamp));
    const session = Buffer.concat([
      encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(DEFAULT_CONFIG), stampAt()),
      ...frames,
      encodeMessage(INPUT_MAGIC, MessageType.Stop, new Uint8Array(0), stampAt()),
    ]);
    const client = await Bun.connect({ unix: sock, socket: { data() {}, error() {} } });
    defer(() => client.end());
    expect(await writeInPieces(client, session, session.length)).toBe(true);
    await until(() => server.stderr.includes("client disconnected"), "the session ended");
  }

  test("a stamp of 0, i64 max or i64 min gives no frame age: the frame lands in the sink, counted as unusable and logged, with no latency warning", async () => {
    const { sock, sink } = setup();
    const server = await serve(sock, sink, ["--metrics", "127.0.0.1:0"]);
    const base = await metricsUrl(server);
    await stampedSession(sock, server, [stampAt(), 0n, (1n << 63n) - 1n, -(1n << 63n), stampAt()]);
    const text = await scrape(base);
    expect(value(text, "audio_agent_frame_stamps_unusable_total")).toBe(3);
    expect(value(text, "audio_agent_frame_age_seconds_count")).toBe(2);
    expect(value(text, "audio_agent_frame_age_seconds_sum")).toBeLessThan(60);
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);

    const stopped = logFields(server.stderr, "input-server", "stopped");
    expect(stopped).toMatchObject({ frames: "5", frame_stamps_unusable: "3" });
    expect(Number(stopped.frame_age_max_ms)).toBeLessThan(60_000);
    expect(server.stderr).toContain("frame stamp not of this machine's clock");
    expect(server.stderr).not.toContain("latency above");
    const received = parseWire(new Uint8Array(readFileSync(sink)), INPUT_MAGIC).messages.filter((m) => m.type === MessageType.OpusFrame);
    expect(received.map((m, i) => sameBytes(m.payload, testPayload(i)))).toEqual([true, true, true, true, true]);
  }, 30_000);

  test("the bounds: 10 s and 59 min behind give an age (a latency), 5 s ahead and 61 min behind do not, half a second ahead is not unusable; the count is 0 from the first scrape", async () => {
    const { sock, sink } = setup();
    const server = await serve(sock, sink, ["--metrics", "127.0.0.1:0"]);
    const base = await metricsUrl(server);
    expect(value(await scrape(base), "audio_agent_frame_stamps_unusable_total")).toBe(0);
    await stampedSession(sock, server, [stampAt(-10_000), stampAt(5_000), stampAt(-3_590_000), stampAt(-3_610_000), stampAt(500)]);
    expect(value(await scrape(base), "audio_agent_frame_stamps_unusable_total")).toBe(2);
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);
    const stopped = logFields(server.stderr, "input-server", "stopped");
    expect(stopped).toMatchObject({ frames: "5", frame_stamps_unusable: "2" });
    // The frame 59 min 50 s late is the slowest aged.
    expect(Number(stopped.frame_age_max_ms)).toBeGreaterThan(3_580_000);
    expect(Number(stopped.frame_age_max_ms)).toBeLessThan(3_600_000);
    expect(logFields(server.stderr, "instruments", "latency above maximum")).toMatchObject({ operation: "frame_age" });
  }, 30_000);

  test("a frame stamped half a second ahead (within the bound) gives no negative sample to the frame age histogram: its sum never goes down", async () => {
    const { sock, sink } = setup();
    const server = await serve(sock, sink, ["--metrics", "127.0.0.1:0"]);
    const base = await metricsUrl(server);
    await stampedSession(sock, server, [stampAt(500), stampAt()]);
    const text = await scrape(base);
    expect(value(text, "audio_agent_frame_stamps_unusable_total")).toBe(0);
    expect(value(text, "audio_agent_frame_age_seconds_sum")).toBeGreaterThanOrEqual(0);
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);
  }, 30_000);

  test("a peer that stamps every frame 0 costs the log no more than the latency warning it replaces: one line, not ten and a summary", async () => {
    const { sock, sink } = setup();
    const server = await serve(sock, sink);
    // 4 s of a 50 frames/s peer that stamps 0, sent at once.
    await stampedSession(sock, server, Array.from({ length: 200 }, () => 0n));
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);
    expect(logFields(server.stderr, "input-server", "stopped")).toMatchObject({ frames: "200", frame_stamps_unusable: "200" });
    const told = server.stderr.split("\n").filter((line) => line.includes("frame stamp not of this machine's clock"));
    expect(told.length, told.join("\n")).toBeLessThanOrEqual(1);
  }, 30_000);
});

describe("input serve: a flood stamped off this machine's clock", () => {
  test("frames whose stamp gives no age still tick the process's sampler: a flood of them hands the JIT back its normal thresholds", async () => {
    const { sock, sink } = setup();
    const server = await serve(sock, sink);
    const client = await Bun.connect({ unix: sock, socket: { data() {}, error() {} } });
    client.write(encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(DEFAULT_CONFIG), BigInt(Date.now()) * 1_000_000n));
    // 3000 frames a second for 2.5 s, every one stamped 0.
    const burst = Buffer.concat(Array.from({ length: 300 }, (_, i) => encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, new Uint8Array([i & 255]), 0n)));
    for (let round = 0; round < 25; round++) {
      expect(await writeInPieces(client, burst, burst.length)).toBe(true);
      await Bun.sleep(100);
    }
    await server.waitForStderr("jit: normal thresholds from now on", 5000);
    client.end();
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);
    expect(Number(logFields(server.stderr, "input-server", "stopped").frame_stamps_unusable)).toBe(7500);
  }, 30_000);
});

describe("input send stops its HTTP endpoints on every way out: a monitor page is told the agent stops (1001), not cut off", () => {
  // The process exits (main.ts) whether or not they were stopped, with the same code: what shows
  // is the page, which gets the hub's close (1001) only from a stop, else a dropped connection (1006).
  test("a signal while waiting for a FIFO's first writer: exit 0, nothing sent", async () => {
    const { sock, path } = setup();
    const fifo = makeFifo(path("mic.fifo"));
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", fifo, "--format", "ogg", "--monitor", "127.0.0.1:0"]);
    const { closed } = await monitorViewer(sender, defer);
    await sender.waitForStderr("source: waiting for a writer");
    sender.kill("SIGTERM");
    expect(await sender.exited).toBe(0);
    expect(await closed).toBe("1001 agent stopping");
    expect(logFields(sender.stderr, "input-client", "stopped")).toMatchObject({ signal: "SIGTERM", submitted: "0", connects: "0" });
  });

  test("a source that is not Ogg, found before its first frame: exit 1 with one line saying so, after its stopped line", async () => {
    const { sock } = setup();
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", "-", "--format", "ogg", "--monitor", "127.0.0.1:0"], { stdin: "pipe" });
    const { closed } = await monitorViewer(sender, defer);
    await sender.writeStdin(new TextEncoder().encode("not an Ogg stream\n"));
    sender.endStdin();
    expect(await sender.exited).toBe(1);
    expect(await closed).toBe("1001 agent stopping");
    expect(failureLine(sender.stderr)).toBe('audio-agent: ogg source stdin: no Ogg capture pattern "OggS" at byte 0');
    expect(logFields(sender.stderr, "input-client", "stopped")).toMatchObject({ submitted: "0", connects: "0" });
  });

  test("a file sent to its end: exit 0, every packet delivered", async () => {
    const { sock, sink } = setup();
    const packets = packetsOf(new Uint8Array(readFileSync(TONE))).length - 2;
    // A file waits for the server: the page is up before the run can end.
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", TONE, "--format", "ogg", "--monitor", "127.0.0.1:0"]);
    const { closed } = await monitorViewer(sender, defer);
    const server = await serve(sock, sink, ["--once"]);
    expect(await sender.exited).toBe(0);
    expect(await server.exited).toBe(0);
    expect(await closed).toBe("1001 agent stopping");
    expect(logFields(sender.stderr, "input-client", "stopped")).toMatchObject({ frames: String(packets), dropped: "0" });
  });
});

/**
 * A raw input client in python (to know exactly which bytes the kernel took
 * on which connection): prints one JSON line per step. `fill` connects, sends
 * a Config and then 1017-byte OpusFrames (payload: the frame's index, u32 LE,
 * then zeros) until the socket takes no more, the last one completed blocking
 * so that every frame counted is whole in the kernel.
 */
const RAW_INPUT_PEER = String.raw`
import json, socket, struct, sys, time
path, plan = sys.argv[1], sys.argv[2]
MAGIC = 0x4a4b4d49
def msg(t, payload): return struct.pack('<IBIq', MAGIC, t, len(payload), time.time_ns()) + payload
sent = 0
def frame():
    global sent
    m = msg(0, struct.pack('<I', sent) + bytes(996)); sent += 1; return m
def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(path)
    s.sendall(msg(1, struct.pack('<III', 48000, 2, 960))); return s
def fill(s):
    n = 0
    while True:
        m = frame()
        try:
            k = s.send(m, socket.MSG_DONTWAIT)
        except BlockingIOError:
            global sent
            sent -= 1; return n
        n += 1
        if k < len(m):
            s.setblocking(True); s.sendall(m[k:]); return n
def out(**kw): print(json.dumps(kw), flush=True)
if plan.startswith('many:'):
    # Clients one after another, each replacing the last while the server is held up.
    counts = []
    for _ in range(int(plan[5:])):
        s = connect(); counts.append(fill(s)); s.close(); time.sleep(0.02)
    out(counts=counts)
elif plan.startswith('session:'):
    # One whole session: Config, N frames and Stop, all taken by the kernel; then it leaves.
    a = connect(); n = int(plan[8:])
    for _ in range(n): a.sendall(frame())
    a.sendall(msg(2, b'')); a.close()
    out(sent=n)
elif plan == 'hold':
    # A fills its socket until the server reads no more of it (held up), says so, and stays.
    a = connect(); before = 0; idle = 0
    while idle < 5:
        n = fill(a); before += n; idle = 0 if n else idle + 1; time.sleep(0.2)
    out(before=before)
    time.sleep(60)
elif plan == 'burst-behind':
    # A connects and is served; once sys.argv[3] exists, B connects (a whole session: Config, 10 frames,
    # Stop, taken by the kernel) and then A sends a burst, so that the server sees B's connection first.
    import os
    a = connect()
    out(a='connected')
    while not os.path.exists(sys.argv[3]): time.sleep(0.01)
    b = connect()
    for _ in range(10): b.sendall(frame())
    b.sendall(msg(2, b''))
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    n = fill(a)
    out(a=n, b=10)
    b.close()
    time.sleep(60)
elif plan == 'late':
    # A fills its socket until the server reads no more of it (held up); B replaces it; once the server
    # has let A go (A reads its end), A fills its socket again.
    a = connect(); before = 0; idle = 0
    while idle < 5:
        n = fill(a); before += n; idle = 0 if n else idle + 1; time.sleep(0.2)
    b = connect()
    out(before=before)
    while a.recv(65536): pass
    late = fill(a)
    out(late=late)
    time.sleep(3)
`;

describe("input serve --sink - to a pipe whose reader is behind", () => {
  test("a reader that stalls and then reads on loses nothing: the client is read again once it catches up, every message arrives once, in order", async () => {
    const { sock, path } = setup();
    const N = 20_000;
    await writeWireFile(path("mic.wire"), N);
    const { server, player, heard, base } = await heldServer(path, sock, ["--once"]);
    // No Ack comes while the server is held up: the sender must not take it for gone meanwhile.
    const sender = spawnAgent(["input", "send", "--socket", sock, "--source", path("mic.wire"), "--ack-timeout-ms", "600000"]);
    await heldUp(base, "jetkvm_microphone_frames_received_total", N);
    releaseReader(heard);
    expect(await sender.exited, sender.stderr).toBe(0);
    expect(await server.exited, server.stderr).toBe(0);
    expect(await player.exited).toBe(0);
    const all = sessions(wholeWireMessages(heard, INPUT_MAGIC));
    expect(all.length).toBe(1);
    checkSession(all[0]!, DEFAULT_CONFIG, N);
    expect(logFields(server.stderr, "input-server", "stopped")).toMatchObject({ frames: String(N), dropped: "0" });
  }, 60_000);

  test("a client that connects while the reader is behind waits: once the reader catches up, the held one's frames are read as its session's, and the new one's whole session follows", async () => {
    const { sock, path } = setup();
    const N = 2_000;
    await writeWireFile(path("mic.wire"), N);
    const { server, player, heard } = await heldServer(path, sock);
    const first = start(["python3", "-c", RAW_INPUT_PEER, sock, "hold"]);
    await until(() => first.stdout.includes("before"), "the first client to be held up");
    const second = spawnAgent(["input", "send", "--socket", sock, "--source", path("mic.wire"), "--ack-timeout-ms", "600000"]);
    await second.waitForStderr("connected");
    releaseReader(heard);
    expect(await second.exited, second.stderr).toBe(0);
    await server.waitForStderr("session ended by Stop");
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);
    expect(await player.exited).toBe(0);
    first.kill("SIGTERM");
    await first.exited;
    const all = sessions(wholeWireMessages(heard, INPUT_MAGIC));
    expect(all.length).toBe(2);
    // Every frame the held one sent before the new one came is its session's.
    expect(all[0]!.filter((m) => m.type === MessageType.OpusFrame).length).toBe(JSON.parse(first.stdout.trim()).before);
    checkSession(all[1]!, DEFAULT_CONFIG, N);
    expect(logFields(second.stderr, "input-client", "stopped")).toMatchObject({ connects: "1", dropped: "0" });
  }, 60_000);

  test("clients replacing one another while the reader reads nothing: what the sink holds does not grow with their number (each frame held is one the stop counts sink_reader_slow)", async () => {
    const { sock, path } = setup();
    const { server, player, heard, base } = await heldServer(path, sock);
    // The first client fills the pipe, the sink and its socket: the server is held up.
    const first = start(["python3", "-c", RAW_INPUT_PEER, sock, "many:1"]);
    expect(await first.exited, first.stderr).toBe(0);
    const held = await heldUp(base, "jetkvm_microphone_frames_received_total", Infinity);
    // 100 more, each filling its own socket and leaving as the next comes.
    const many = start(["python3", "-c", RAW_INPUT_PEER, sock, "many:100"]);
    expect(await many.exited, many.stderr).toBe(0);
    const counts: number[] = JSON.parse(many.stdout.trim()).counts;
    expect(counts.length).toBe(100);
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);
    releaseReader(heard);
    expect(await player.exited).toBe(0);

    const stopped = logFields(server.stderr, "input-server", "stopped");
    // The last message may be cut short (a non-blocking write takes what fits): its frame is one of those counted.
    const wire = parseWire(new Uint8Array(readFileSync(heard)), INPUT_MAGIC);
    expect(wire.error).toBeUndefined();
    expect(wire.trailing).toBeLessThan(MAX_MESSAGE);
    const whole = wire.messages.filter((m) => m.type === MessageType.OpusFrame);
    expect(whole.length + Number(stopped.dropped)).toBe(Number(stopped.frames));
    // Held at the stop (in the pipe, or in memory and counted): at most what the first brought and all of
    // the one that took over before the hold began (its close hands whatever was read of it; how much it
    // sent depends on how fast it was read meanwhile), not what the 99 after it brought.
    const sinkHeld = whole.length + Number(stopped.dropped_sink_reader_slow ?? 0);
    expect(sinkHeld).toBeLessThanOrEqual(held + Math.max(...counts));
    expect(counts.reduce((a, b) => a + b)).toBeGreaterThan(10 * (held + Math.max(...counts)));
  }, 60_000);

  test("a client let go while the reader is behind: the frames it sends after its session ended are counted session_ended, none lost uncounted", async () => {
    const { sock, path } = setup();
    // --once: the first session's end (its client replaced) ends the run, which lets that client go and waits for it to close.
    const { server, player, heard } = await heldServer(path, sock, ["--once"]);
    const peer = start(["python3", "-c", RAW_INPUT_PEER, sock, "late"]);
    // B has connected and waits: once the reader reads, A's frames are read as its session's, and A is let go.
    await until(() => peer.stdout.includes("before"), "A to be held up and B to connect");
    releaseReader(heard);
    expect(await peer.exited, peer.stderr).toBe(0);
    const [{ before }, { late }] = peer.stdout.trim().split("\n").map((line) => JSON.parse(line));
    expect(await server.exited, server.stderr).toBe(0);
    expect(await player.exited).toBe(0);
    const stopped = logFields(server.stderr, "input-server", "stopped");
    // Sent by the peer and taken by the kernel: each is received, and the late ones counted as such.
    expect({ frames: Number(stopped.frames), session_ended: Number(stopped.dropped_session_ended ?? 0) }).toEqual({ frames: before + late, session_ended: late });
    const whole = wholeWireMessages(heard, INPUT_MAGIC).filter((m) => m.type === MessageType.OpusFrame);
    expect(whole.length + Number(stopped.dropped)).toBe(Number(stopped.frames));
  }, 60_000);

  test("the reader leaves (EPIPE) while the server is held up: exit 1, and each frame the kernel took from the client is in what the reader read whole or counted", async () => {
    const { sock, path } = setup();
    const fifo = makeFifo(path("player"));
    // The test is the reader: it reads nothing while the client fills everything.
    const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const out = openSync(fifo, "w");
    const server = spawnAgent(["input", "serve", "--socket", sock, "--sink", "-", "--metrics", "127.0.0.1:0"], { stdout: out });
    closeSync(out);
    const base = await metricsUrl(server);
    const client = start(["python3", "-c", RAW_INPUT_PEER, sock, "hold"]);
    await until(() => client.stdout.includes("before"), "the client to be held up");
    const { before } = JSON.parse(client.stdout.trim());
    await heldUp(base, "jetkvm_microphone_frames_received_total", Infinity);
    // Stopped, the server writes nothing while the reader takes all the pipe holds and leaves.
    server.proc.kill("SIGSTOP");
    const heard = readAvailable(reader);
    closeSync(reader);
    server.proc.kill("SIGCONT");
    expect(await server.exited, server.stderr).toBe(1);
    client.kill("SIGTERM");
    await client.exited;

    const stopped = logFields(server.stderr, "input-server", "stopped");
    expect(Number(stopped.frames)).toBe(before);
    expect(Number(stopped.dropped_sink_no_reader)).toBeGreaterThan(0);
    // The reader left mid-message, maybe: what it read whole counts.
    const whole = parseWire(heard, INPUT_MAGIC).messages.filter((m) => m.type === MessageType.OpusFrame);
    expect(whole.length + Number(stopped.dropped)).toBe(before);
  }, 60_000);

  test("a client that sent its whole session and Stop and left while the reader was behind is not replaced by the next one: its session arrives, clean", async () => {
    const { sock, path } = setup();
    const { server, player, heard } = await heldServer(path, sock);
    // H fills the pipe, the sink and its socket: the server is held up, and stays so until the reader reads.
    const holder = start(["python3", "-c", RAW_INPUT_PEER, sock, "hold"]);
    await until(() => holder.stdout.includes("before"), "the first client to be held up");
    // A: a whole session, Stop included, taken by the kernel; A leaves. It waits for H (held) to be read first.
    const a = start(["python3", "-c", RAW_INPUT_PEER, sock, "session:50"]);
    expect(await a.exited, a.stderr).toBe(0);
    // B comes after A has left.
    const b = start(["python3", "-c", RAW_INPUT_PEER, sock, "session:10"]);
    expect(await b.exited, b.stderr).toBe(0);
    releaseReader(heard);
    // H's, A's and B's sessions have ended (B's by its Stop, once the reader has caught up).
    await until(() => (server.stderr.match(/session ended/g) ?? []).length >= 3, "three sessions to end");
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);
    expect(await player.exited).toBe(0);
    holder.kill("SIGTERM");
    await holder.exited;

    const stopped = logFields(server.stderr, "input-server", "stopped");
    const all = sessions(wholeWireMessages(heard, INPUT_MAGIC));
    // H's session (cut by A), then A's and B's, each whole with its Stop.
    expect(all.length).toBe(3);
    expect(all[1]!.filter((m) => m.type === MessageType.OpusFrame).length).toBe(50);
    expect(all[1]!.at(-1)!.type).toBe(MessageType.Stop);
    expect(stopped).toMatchObject({ sessions: "3", clean_sessions: "2" });
    const whole = wholeWireMessages(heard, INPUT_MAGIC).filter((m) => m.type === MessageType.OpusFrame);
    expect(whole.length + Number(stopped.dropped)).toBe(Number(stopped.frames));
  }, 60_000);
});

describe("input serve --sink - : a hold that begins while a client is being replaced", () => {
  test("a client that connects as the served one's unread burst fills the sink is served once the reader catches up, its session whole: not read, dropped and left uncounted", async () => {
    const { sock, path } = setup();
    const { server, player, heard } = await heldServer(path, sock);
    const peer = start(["python3", "-c", RAW_INPUT_PEER, sock, "burst-behind", path("go")]);
    await until(() => peer.stdout.includes("connected"), "A to connect");
    await server.waitForStderr("client connected");
    // Stopped, the server sees B's connection and A's burst in the same turn of its loop, B's first.
    server.proc.kill("SIGSTOP");
    writeFileSync(path("go"), "");
    await until(() => peer.stdout.includes('"b"'), "B's session and A's burst to be sent");
    server.proc.kill("SIGCONT");
    const { a, b } = JSON.parse(peer.stdout.trim().split("\n").at(-1)!);
    await Bun.sleep(500);
    releaseReader(heard);
    // B's whole session (it ended with Stop) once the reader has caught up.
    await until(() => server.stderr.includes("session ended by Stop"), "B's session to end by its Stop", 3000).catch(() => {});
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);
    expect(await player.exited).toBe(0);
    peer.kill("SIGTERM");
    await peer.exited;

    const stopped = logFields(server.stderr, "input-server", "stopped");
    const whole = wholeWireMessages(heard, INPUT_MAGIC).filter((m) => m.type === MessageType.OpusFrame);
    // Every frame the kernel took, from A and from B, is received: written whole or counted.
    expect({ frames: Number(stopped.frames), connects: Number(stopped.connects) }).toEqual({ frames: a + b, connects: 2 });
    expect(whole.length + Number(stopped.dropped)).toBe(a + b);
  }, 60_000);
});

describe("input serve --once --sink - : clients waiting while the reader is behind", () => {
  test("the first session's end ends the channel: the sessions of clients that waited behind it are not written to the sink after it", async () => {
    const { sock, path } = setup();
    const { server, player, heard } = await heldServer(path, sock, ["--once"]);
    const holder = start(["python3", "-c", RAW_INPUT_PEER, sock, "hold"]);
    await until(() => holder.stdout.includes("before"), "the first client to be held up");
    // Two whole sessions, each taken by the kernel, wait behind it.
    for (const frames of [50, 10]) {
      const c = start(["python3", "-c", RAW_INPUT_PEER, sock, `session:${frames}`]);
      expect(await c.exited, c.stderr).toBe(0);
    }
    releaseReader(heard);
    expect(await server.exited, server.stderr).toBe(0);
    expect(await player.exited).toBe(0);
    holder.kill("SIGTERM");
    await holder.exited;
    const stopped = logFields(server.stderr, "input-server", "stopped");
    // One session ended, one written: the holder's (cut by the first that waited).
    expect((server.stderr.match(/session ended/g) ?? []).length).toBe(1);
    expect(sessions(wholeWireMessages(heard, INPUT_MAGIC)).length).toBe(1);
    const whole = wholeWireMessages(heard, INPUT_MAGIC).filter((m) => m.type === MessageType.OpusFrame);
    expect(whole.length + Number(stopped.dropped)).toBe(Number(stopped.frames));
  }, 60_000);
});

describe("input serve --sink - : more clients wait than may", () => {
  test("30 whole sessions wait while the reader is behind: the 16 last are served in turn, the 14 first let go unserved, their frames counted session_ended; none lost, no descriptor left", async () => {
    const { sock, path } = setup();
    const { server, player, heard, base } = await heldServer(path, sock);
    const holder = start(["python3", "-c", RAW_INPUT_PEER, sock, "hold"]);
    await until(() => holder.stdout.includes("before"), "the client to be held up");
    const { before } = JSON.parse(holder.stdout.trim());
    // Scraped once before counting: the scrape's own connection is among the descriptors counted.
    await scrape(base);
    const fds = () => readdirSync(`/proc/${server.proc.pid}/fd`).length;
    const fdsHeld = fds();
    for (let i = 0; i < 30; i++) {
      const c = start(["python3", "-c", RAW_INPUT_PEER, sock, "session:10"]);
      expect(await c.exited, c.stderr).toBe(0);
    }
    await Bun.sleep(1500);
    // 16 wait (and H is held): no more descriptors than those.
    expect(fds()).toBeLessThanOrEqual(fdsHeld + 16);
    releaseReader(heard);
    await scrapeUntil(base, (t) => value(t, "jetkvm_microphone_frames_received_total") === before + 300, "every frame received", 5000);
    holder.kill("SIGTERM");
    await holder.exited;
    // Once the agent has seen it go (a leak holds its descriptor for good), not a fixed while after.
    await until(() => fds() <= fdsHeld - 1, "the holder's descriptor closed", 10_000).catch(() => {});
    expect(fds()).toBeLessThanOrEqual(fdsHeld - 1);
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);
    expect(await player.exited).toBe(0);
    const stopped = logFields(server.stderr, "input-server", "stopped");
    const all = sessions(wholeWireMessages(heard, INPUT_MAGIC));
    expect(all.length).toBe(17);
    for (const session of all.slice(1)) {
      expect(session.filter((m) => m.type === MessageType.OpusFrame).length).toBe(10);
      expect(session.at(-1)!.type).toBe(MessageType.Stop);
    }
    expect(stopped).toMatchObject({ frames: String(before + 300), dropped_session_ended: "140", sessions: "17", clean_sessions: "16" });
    // Every client accepted counts, served or not.
    expect(stopped.connects).toBe("31");
    const whole = all.flat().filter((m) => m.type === MessageType.OpusFrame);
    expect(whole.length + Number(stopped.dropped)).toBe(Number(stopped.frames));
  }, 60_000);
});
