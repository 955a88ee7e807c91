/**
 * `output serve` and `output recv` as real processes (AUDIO_AGENT_BIN runs a
 * compiled binary instead of `bun src/main.ts`): end-to-end streaming, exit
 * codes and one-line messages, signals, socket file mode and clean-up.
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, chownSync, closeSync, constants, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, statSync, truncateSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DEVICE_RUNTIME_ENV } from "../../src/bench/device-runtime.ts";
import { opusPacketSamples } from "../../src/media/opus-toc.ts";
import { encodeConfigPayload, encodeMessage, MAX_MESSAGE, MessageType, OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import { expectAccountedLine, failureLine, logFields } from "../support/agent-log.ts";
import { heldUp, metricsUrl, scrape, scrapeUntil, value } from "../support/metrics.ts";
import { monitorViewer } from "../support/monitor-viewer.ts";
import { notifyReceiver } from "../support/notify-receiver.ts";
import { useCleanup } from "../support/cleanup.ts";
import { fullFifo, HELD_READER, heldPlayer, makeFifo, releaseReader, writeIntoFifo } from "../support/fifo.ts";
import { asNobody, NOBODY } from "../support/nobody.ts";
import { outOfDescriptors, wakeUps } from "../support/proc.ts";
import { heldSocketPlayer, readToEnd, socketPair } from "../support/player-sockets.ts";
import { packetsOf, pagesOf } from "../support/ogg.ts";
import { decodedSamples, ffmpegFrom, TONE } from "../support/opus-fixtures.ts";
import { firstMismatch, indexedPayload, isTestPayload, payloadIndex, testPayload } from "../support/payloads.ts";
import { connectClient, connectOutcome, fakeServer, RecordingClient } from "../support/peer.ts";
import { AGENT, agentEnv, BUN, REPO, runAgent, spawnAgent, type Spawned, start, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { parseWire, scanWireFile, wholeWireFrames, wireBytes, wireFileFrames, type WireMessage, writeWireFile } from "../support/wire.ts";

const defer = useCleanup();

function setup() {
  const dir = socketDir(defer, "aao-");
  defer(() => stopAgents());
  return { ...dir, sock: dir.path("out.sock"), source: dir.path("in.wire"), sink: dir.path("out.wire") };
}

/** `output serve` of a wire file of `frames` test frames, lossless, once it waits for a client. */
async function servingFile(t: ReturnType<typeof setup>, frames: number): Promise<Spawned> {
  await writeWireFile(t.source, frames);
  const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock]);
  await serve.waitForStderr("waiting for a client");
  return serve;
}

/**
 * Streams through a (large) capture that must hold whole OpusFrames only,
 * whose k-th payload must be testPayload(indexOf(k)); returns the count and
 * the first k that did not match (-1 if none).
 */
function scanFrames(path: string, indexOf: (k: number) => number = (k) => k): { count: number; mismatch: number; sizes: Set<number> } {
  let mismatch = -1;
  const sizes = new Set<number>();
  const scan = scanWireFile(path, (m, k) => {
    sizes.add(m.length);
    if (mismatch < 0 && (m.type !== MessageType.OpusFrame || !isTestPayload(indexOf(k), m.payload))) mismatch = k;
  });
  expect(scan.error).toBeUndefined();
  expect(scan.trailing).toBe(0);
  return { count: scan.messages, mismatch, sizes };
}

/** The agent with `args` run as another user (asNobody), its stdout on `stdout`; through bash with `redirect` ("2>&1", ...) when given. */
function agentAsNobody(dir: string, args: string[], stdout: number, redirect?: string): Spawned {
  const command = asNobody(dir, [...AGENT, ...args]);
  return start(redirect ? ["bash", "-c", `exec "$@" ${redirect}`, "bash", ...command] : command, { env: agentEnv({ HOME: "/tmp" }), stdout, timeoutMs: 30_000 });
}

/** stderr must be exactly one line, starting with the program name (nothing ran, nothing logged). */
function oneLine(stderr: string): string {
  const lines = stderr.trimEnd().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toStartWith("audio-agent: ");
  return lines[0];
}

/** A role that ran may have logged first; its failure is one last line starting with the program name. */
function errorLine(stderr: string): string {
  const line = failureLine(stderr);
  expect(stderr.trimEnd().split("\n").at(-1)).toBe(line);
  return line;
}

describe("output serve -> output recv", () => {
  test("100k frames of sizes 1..4096 arrive byte-identical and in order; both exit 0; the socket is removed", async () => {
    const t = setup();
    const N = 100_000;
    await writeWireFile(t.source, N);
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock]);
    const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", t.sink, "--once", "--connect-timeout", "20"]);
    const [served, received] = await Promise.all([serve.exited, recv.exited]);
    expect(served, serve.stderr).toBe(0);
    expect(received, recv.stderr).toBe(0);
    expect(existsSync(t.sock)).toBe(false);

    const source = scanFrames(t.source);
    const sink = scanFrames(t.sink);
    expect(source).toMatchObject({ count: N, mismatch: -1 });
    expect(sink).toMatchObject({ count: N, mismatch: -1 });
    expect(sink.sizes.has(1)).toBe(true);
    expect(sink.sizes.has(4096)).toBe(true);
  }, 60_000);

  test("the final stopped lines carry latency p50 <= p99 <= max in ms: frame_age at recv, enqueue_to_write and write_call at serve", async () => {
    const t = setup();
    await writeWireFile(t.source, 2000);
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock]);
    const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", t.sink, "--once", "--connect-timeout", "20"]);
    expect(await serve.exited, serve.stderr).toBe(0);
    expect(await recv.exited, recv.stderr).toBe(0);
    const ordered = (fields: Record<string, string> | undefined, operation: string) => {
      const [p50, p99, max] = ["p50", "p99", "max"].map((p) => Number(fields?.[`${operation}_${p}_ms`]));
      expect([operation, p50 >= 0, p50 <= p99, p99 <= max]).toEqual([operation, true, true, true]);
    };
    const received = logFields(recv.stderr, "output-client", "stopped");
    expect(received?.frames).toBe("2000");
    ordered(received, "frame_age");
    const served = logFields(serve.stderr, "output-server", "stopped");
    ordered(served, "enqueue_to_write");
    ordered(served, "write_call");
  }, 30_000);

  test("recv --count N exits 0 after exactly N frames; the file source keeps the rest for the next client", async () => {
    const t = setup();
    const N = 2000;
    const serve = await servingFile(t, N);
    const first = await runAgent(["output", "recv", "--socket", t.sock, "--sink", t.sink, "--count", "300"]);
    expect(first.code, first.stderr).toBe(0);
    const got = wholeWireFrames(t.sink);
    expect(got.length).toBe(300);
    expect(firstMismatch(got)).toBe(-1);

    // Whatever the first client left unread in its socket is gone with it; from the
    // first frame the server had not yet handed to the kernel on, the next client gets everything.
    const rest = t.path("rest.wire");
    const second = await runAgent(["output", "recv", "--socket", t.sock, "--sink", rest, "--once"]);
    expect(second.code, second.stderr).toBe(0);
    expect(await serve.exited).toBe(0);
    const tail = wholeWireFrames(rest);
    expect(tail.length).toBeGreaterThan(0);
    const from = N - tail.length;
    expect(from).toBeGreaterThanOrEqual(300);
    expect(firstMismatch(tail, from)).toBe(-1);
    expect(existsSync(t.sock)).toBe(false);
  }, 30_000);
});

describe("output recv: frames stamped off this machine's clock", () => {
  test("a stamp of 0 or i64 max gives no frame age: every frame recorded, the unusable ones counted in the stopped line and logged, no latency warning", async () => {
    const t = setup();
    const now = () => BigInt(Date.now()) * 1_000_000n;
    const stamps = [() => now(), () => 0n, () => (1n << 63n) - 1n, () => now()];
    // One frame a read: the client takes the age of a read's first frame.
    const server = fakeServer(t.sock, async (socket) => {
      for (const [i, stamp] of stamps.entries()) {
        socket.write(encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, testPayload(i), stamp()));
        await Bun.sleep(50);
      }
      socket.end();
    });
    defer(() => server.stop());
    const recv = await runAgent(["output", "recv", "--socket", t.sock, "--sink", t.sink, "--once"]);
    expect(recv.code, recv.stderr).toBe(0);
    expect(wholeWireFrames(t.sink).map((payload, i) => isTestPayload(i, payload))).toEqual([true, true, true, true]);
    const stopped = logFields(recv.stderr, "output-client", "stopped");
    expect(stopped).toMatchObject({ frames: "4", frame_stamps_unusable: "2" });
    expect(Number(stopped.frame_age_max_ms)).toBeLessThan(60_000);
    expect(recv.stderr).toContain("frame stamp not of this machine's clock");
    expect(recv.stderr).not.toContain("latency above");
  }, 30_000);

  test("frames stamped 0 that arrive together in one read are each counted as unusable, not only the read's first (the count is of frames, as its help and the README say)", async () => {
    const t = setup();
    const now = () => BigInt(Date.now()) * 1_000_000n;
    const server = fakeServer(t.sock, async (socket) => {
      // One write, one read at the client: a good frame, then two stamped 0.
      socket.write(Buffer.concat([now(), 0n, 0n].map((stamp, i) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, testPayload(i), stamp))));
      await Bun.sleep(100);
      // And another read of three stamped 0.
      socket.write(Buffer.concat([3, 4, 5].map((i) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, testPayload(i), 0n))));
      await Bun.sleep(100);
      socket.end();
    });
    defer(() => server.stop());
    const recv = await runAgent(["output", "recv", "--socket", t.sock, "--sink", t.sink, "--once"]);
    expect(recv.code, recv.stderr).toBe(0);
    expect(wholeWireFrames(t.sink).map((payload, i) => isTestPayload(i, payload))).toEqual([true, true, true, true, true, true]);
    expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: "6", frame_stamps_unusable: "5" });
  }, 30_000);
});

describe("output recv into an Ogg sink", () => {
  test("OpusFrames no decoder takes (empty; code 1 with an odd length) are left out of the recording and counted: frames = packets recorded + dropped, and opusdec decodes it all", async () => {
    const t = setup();
    const tone = packetsOf(new Uint8Array(readFileSync(TONE))).slice(2);
    // Code 1 splits the bytes after its TOC into two equal frames: one byte cannot be (RFC 6716 section 3.4, R3).
    const unsplittable = Uint8Array.of((tone[0]![0]! & ~3) | 1, 5);
    const payloadOf = (i: number) => (i % 10 === 9 ? (i % 20 === 9 ? new Uint8Array(0) : unsplittable) : tone[i % tone.length]!);
    await writeWireFile(t.source, 60, payloadOf);
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock]);
    await serve.waitForStderr("waiting for a client");
    const recv = await runAgent(["output", "recv", "--socket", t.sock, "--sink", t.path("out.opus"), "--format", "ogg", "--count", "60"]);
    expect(recv.code, recv.stderr).toBe(0);
    expect(await serve.exited).toBe(0);
    const recorded = packetsOf(new Uint8Array(readFileSync(t.path("out.opus")))).slice(2);
    expect(recorded.length).toBe(54);
    expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: "60", dropped: "6", dropped_sink_invalid_packet: "6" });
    // Every recorded packet decodes: the samples of all 54, less the pre-skip the OpusHead gives.
    const head = packetsOf(new Uint8Array(readFileSync(t.path("out.opus"))))[0]!;
    const preSkip = head[10]! | (head[11]! << 8);
    const total = recorded.reduce((n, p) => n + opusPacketSamples(p), 0);
    expect(decodedSamples(t.path("out.opus"), t.dir)).toBe(total - preSkip);
  });
});

describe("output recv: the Ogg sink's settings reach the recording", () => {
  test("--pre-skip and --channels are its OpusHead's, --page-ms its pages' length: a page closes once it holds that much audio", async () => {
    const t = setup();
    const tone = packetsOf(new Uint8Array(readFileSync(TONE))).slice(2, 62);
    expect(tone.every((packet) => opusPacketSamples(packet) === 960)).toBe(true);
    await writeWireFile(t.source, tone.length, (i) => tone[i]!);
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock]);
    await serve.waitForStderr("waiting for a client");
    const sink = t.path("out.opus");
    const recv = await runAgent(["output", "recv", "--socket", t.sock, "--sink", sink, "--format", "ogg", "--count", "60", "--pre-skip", "1000", "--channels", "1", "--page-ms", "1000"]);
    expect(recv.code, recv.stderr).toBe(0);
    expect(await serve.exited).toBe(0);
    const bytes = new Uint8Array(readFileSync(sink));
    const head = new DataView(packetsOf(bytes)[0]!.buffer, packetsOf(bytes)[0]!.byteOffset);
    expect({ channels: head.getUint8(9), preSkip: head.getUint16(10, true) }).toEqual({ channels: 1, preSkip: 1000 });
    // Head, tags, then 1 s of 20 ms packets (granule 48000), then the other 10 on the end-of-stream page.
    expect(pagesOf(bytes).map((page) => page.granule)).toEqual([0, 0, 48_000, 57_600]);
    expect(packetsOf(bytes).slice(2)).toEqual(tone);
  });
});

describe("output recv from a server that sends more than OpusFrames", () => {
  test("a Config (or Heartbeat) from the server is ignored: the Ogg recording's head is the stream's own (tone.opus: stereo, 48 kHz), every frame recorded", async () => {
    const t = setup();
    const tone = packetsOf(new Uint8Array(readFileSync(TONE))).slice(2, 52);
    const messages = [
      encodeMessage(OUTPUT_MAGIC, MessageType.Config, encodeConfigPayload({ sampleRate: 8000, channels: 1, frameSize: 160 }), 1n),
      encodeMessage(OUTPUT_MAGIC, MessageType.Heartbeat, undefined, 2n),
      ...tone.map((packet, i) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, packet, BigInt(i + 3))),
    ];
    const server = Bun.listen({ unix: t.sock, socket: { open: (socket) => void socket.write(Buffer.concat(messages)), data() {} } });
    defer(() => server.stop(true));
    const recv = await runAgent(["output", "recv", "--socket", t.sock, "--sink", t.path("out.opus"), "--format", "ogg", "--count", "50"]);
    expect(recv.code, recv.stderr).toBe(0);
    const recorded = packetsOf(new Uint8Array(readFileSync(t.path("out.opus"))));
    const head = new DataView(recorded[0]!.buffer, recorded[0]!.byteOffset);
    expect({ channels: head.getUint8(9), rate: head.getUint32(12, true) }).toEqual({ channels: 2, rate: 48000 });
    expect(recorded.slice(2)).toEqual(tone);
  });
});

describe("output serve from stdin that is a directory", () => {
  test("exit 1 naming the source as stdin, where the first read gave an errno naming neither", async () => {
    const t = setup();
    const dir = openSync(t.dir, "r");
    defer(() => closeSync(dir));
    const serve = await spawnAgent(["output", "serve", "--source", "-", "--socket", t.sock], { stdin: dir }).done;
    expect(serve.code).toBe(1);
    expect(failureLine(serve.stderr)).toBe("audio-agent: source - (stdin) is a directory, expected a file or a pipe");
    expect(existsSync(t.sock)).toBe(false);
  });

  test("a directory as the source is told by its option and where it was set, as a sink's is", async () => {
    const t = setup();
    const typed = await runAgent(["output", "serve", "--source", t.dir, "--socket", t.sock]);
    expect(typed.code).toBe(1);
    expect(failureLine(typed.stderr)).toBe(`audio-agent: --source ${t.dir}: is a directory (EISDIR)`);
    const fromEnv = await runAgent(["output", "serve", "--socket", t.sock], { env: agentEnv({ AUDIO_AGENT_SOURCE: t.dir }) });
    expect(fromEnv.code).toBe(1);
    expect(failureLine(fromEnv.stderr)).toBe(`audio-agent: --source (from environment AUDIO_AGENT_SOURCE) ${t.dir}: is a directory (EISDIR)`);
    expect(existsSync(t.sock)).toBe(false);
  });
});

describe("--loop over a source that is a stream", () => {
  test("stdin by another name (/dev/stdin on a pipe) ends the run with exit 1 naming --loop once played, not 0 as if looped", async () => {
    const t = setup();
    writeFileSync(t.source, wireBytes(0, 5));
    // A shell's pipe (Bun gives a child's stdin as a socket, which /dev/stdin cannot open).
    const run = await start(["sh", "-c", 'cat "$0" | "$@"', t.source, ...AGENT, "output", "serve", "--source", "/dev/stdin", "--socket", t.sock, "--realtime", "--loop"], { env: agentEnv() }).done;
    expect(run.code).toBe(1);
    expect(failureLine(run.stderr)).toBe("audio-agent: source /dev/stdin is a stream, read once: --loop replays a file");
    expect(logFields(run.stderr, "output-server", "stopped")).toMatchObject({ submitted: "5" });
  });
});

describe("output recv --once from a server that breaks the framing or closes mid-message", () => {
  test("exit 1 naming the violation, the frames before it recorded: the one connection's stream did not come whole", async () => {
    const t = setup();
    const good = Array.from({ length: 3 }, (_, i) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, testPayload(i), BigInt(i + 1)));
    const bad = encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, testPayload(3), 4n);
    bad[0] = 0x58; // "X": not the output channel's magic
    const server = Bun.listen({ unix: t.sock, socket: { open: (socket) => void socket.write(Buffer.concat([...good, bad])), data() {} } });
    defer(() => server.stop(true));
    const recv = await runAgent(["output", "recv", "--socket", t.sock, "--sink", t.sink, "--once"]);
    expect(recv.code).toBe(1);
    expect(failureLine(recv.stderr)).toStartWith("audio-agent: the server broke the framing (");
    expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: "3", protocol_errors: "1" });
    expect(wholeWireFrames(t.sink).length).toBe(3);
  });

  test("exit 1 too when the server closes mid-message", async () => {
    const t = setup();
    const good = Array.from({ length: 3 }, (_, i) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, testPayload(i), BigInt(i + 1)));
    const cut = encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, testPayload(3), 4n).subarray(0, 20);
    const server = Bun.listen({
      unix: t.sock,
      socket: {
        open: (socket) => {
          socket.write(Buffer.concat([...good, cut]));
          setTimeout(() => socket.end(), 100);
        },
        data() {},
      },
    });
    defer(() => server.stop(true));
    const recv = await runAgent(["output", "recv", "--socket", t.sock, "--sink", t.sink, "--once"]);
    expect(recv.code).toBe(1);
    expect(failureLine(recv.stderr)).toBe("audio-agent: the server closed mid-message (20 byte(s) of a message lost); the stream ends there");
    expect(wholeWireFrames(t.sink).length).toBe(3);
  });
});

describe("output serve: a lossless file served to a client slow to see its connect", () => {
  /**
   * A client that connects and then keeps its event loop busy, for a number
   * of ms or until the file at a path has bytes, so the server writes to it
   * and lets it go before the client's runtime has seen the connection
   * complete; then it counts the bytes it gets until the end.
   */
  const SLOW_CLIENT = `
    const { statSync } = require("node:fs");
    let bytes = 0;
    const [busy, socket] = process.argv.slice(-2);
    const connecting = Bun.connect({ unix: socket, socket: { data(_s, chunk) { bytes += chunk.length; }, close() { console.log(bytes); process.exit(0); } } });
    const end = performance.now() + Number(busy);
    const done = /^[0-9]+$/.test(busy) ? () => performance.now() >= end : () => (statSync(busy, { throwIfNoEntry: false })?.size ?? 0) > 0;
    while (!done());
    connecting.catch((e) => { console.log("connect failed " + e.code); process.exit(1); });
  `;

  test("gets every frame: the stopping server half-closes and waits for it, rather than resetting its connect", async () => {
    const t = setup();
    const N = 50;
    const serve = await servingFile(t, N);
    const client = start([BUN, "-e", SLOW_CLIENT, "300", t.sock]);
    const result = await client.done;
    expect(result.stdout.trim()).toBe(String(wireBytes(0, N).length));
    expect(result.code).toBe(0);
    expect(await serve.exited, serve.stderr).toBe(0);
    expect(expectAccountedLine(serve.stderr).delivered).toBe(N);
  }, 30_000);

  test("one replaced by the next client as it connects still reads what was written to it, then the next gets the rest", async () => {
    const t = setup();
    const N = 3000;
    const serve = await servingFile(t, N);
    // Busy until the next client has frames in its sink, so replaced by then however long the next took to start;
    // it sees them at once, well within the second the server leaves a client it let go.
    const slow = start([BUN, "-e", SLOW_CLIENT, t.sink, t.sock]);
    await serve.waitForStderr("client=1");
    const next = await runAgent(["output", "recv", "--socket", t.sock, "--sink", t.sink, "--once", "--page-ms", "1"]);
    expect(next.code, next.stderr).toBe(0);
    expect(serve.stderr).toContain('client=1 reason="replaced by a new client"');
    const first = await slow.done;
    // Not "connect failed ECONNRESET": the bytes the server handed to its socket were there to read.
    expect(first.stdout.trim()).toMatch(/^[1-9][0-9]*$/);
    expect(await serve.exited, serve.stderr).toBe(0);
    const rest = wholeWireFrames(t.sink);
    expect(rest.length).toBeGreaterThan(0);
    expect(firstMismatch(rest, N - rest.length)).toBe(-1);
  }, 30_000);
});

describe("output serve: a lossless file queued whole while its client reads nothing", () => {
  test("every frame still reaches it once it reads: the server waits for its queue to drain however long that takes, not only the second its final flush is given", async () => {
    const t = setup();
    const N = 1000;
    await writeWireFile(t.source, N);
    // A queue that holds the whole file (about 2 MB, far more than the socket's buffers): the source is read to its end at once.
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--queue-frames", String(N), "--metrics", "127.0.0.1:0"]);
    const base = await metricsUrl(serve);
    await serve.waitForStderr("waiting for a client");
    const client = await connectClient(defer, t.sock, { paused: true });
    await scrapeUntil(base, (text) => value(text, "audio_agent_frames_submitted_total") === N, "the whole file queued");
    // Longer than the final flush's second: a server gone on to its stop would drop by then what its client did not take.
    await Bun.sleep(2000);
    client.socket.resume();
    await client.closed;
    expect(await serve.exited, serve.stderr).toBe(0);
    expect(client.frames.length).toBe(N);
    expect(firstMismatch(client.frames)).toBe(-1);
    expect(expectAccountedLine(serve.stderr)).toMatchObject({ delivered: N, dropped: 0 });
  }, 30_000);
});

describe("output serve: a lossless file waiting for its first client", () => {
  test("is not read until one connects: no frame queued, and stamped, while none is there; the one that comes gets every frame", async () => {
    const t = setup();
    const N = 50;
    await writeWireFile(t.source, N);
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--metrics", "127.0.0.1:0"]);
    const base = await metricsUrl(serve);
    await serve.waitForStderr("waiting for a client");
    // Time enough for a server that read on without a client to have queued the whole file (it fits the queue).
    await Bun.sleep(1000);
    expect(value(await scrape(base), "audio_agent_frames_submitted_total")).toBe(0);
    const client = await connectClient(defer, t.sock);
    await client.closed;
    expect(await serve.exited, serve.stderr).toBe(0);
    expect(client.frames.length).toBe(N);
    expect(firstMismatch(client.frames)).toBe(-1);
  }, 30_000);
});

describe("output serve live: a client that stops reading while nothing new comes", () => {
  test("once what is queued for it is past the latency budget, the server sleeps: it looks for the client's room only while something could still go", async () => {
    const t = setup();
    // The device's runtime settings, so that none of Bun's own timers wakes the process either.
    const serve = spawnAgent(["output", "serve", "--socket", t.sock, "--source", "-", "--socket-buffers", "32k", "--max-latency-ms", "400", "--stuck-frames", "100000"], {
      stdin: "pipe",
      env: agentEnv(DEVICE_RUNTIME_ENV),
    });
    await serve.waitForStderr("listening");
    await connectClient(defer, t.sock, { paused: true });
    await serve.waitForStderr("client connected");
    // More than the socket holds (64 KiB): the writer blocks with frames queued, stale 400 ms later.
    await serve.writeStdin(wireBytes(0, 60, (i) => testPayload(i, 4000), OUTPUT_MAGIC, 1));
    await Bun.sleep(1500);
    const before = wakeUps(serve.pid);
    await Bun.sleep(2000);
    // Looking for room every 10 ms would have woken it some 200 times; the sampler ticks about once a second.
    expect(wakeUps(serve.pid) - before).toBeLessThanOrEqual(10);
    serve.kill("SIGTERM");
    expect(await serve.exited).toBe(0);
    const stopped = expectAccountedLine(serve.stderr);
    expect(stopped.submitted).toBe(60);
  }, 30_000);
});

describe("output serve: readers that shut down their sending side", () => {
  // The readers README names, run as it writes them: each must really shut down its sending side
  // (seen by strace) and then get every frame that comes after, to the server's clean stop.
  const readme = readFileSync(join(REPO, "README.md"), "utf8").replace(/\s+/g, " ");
  const named = /A client that shuts down its sending side \(([^)]*)\)/.exec(readme)?.[1] ?? "";
  const readers = [...named.matchAll(/`((?:nc|socat) [^`]*)`/g)].map((m) => m[1]!);

  test("README names two such readers", () => {
    expect(readers.length).toBe(2);
  });

  for (const reader of readers) {
    test(`\`${reader}\` shuts down its sending side, then gets every frame to the end`, async () => {
      const t = setup();
      const fifo = makeFifo(t.path("capture.wire"));
      const frames = t.path("frames.wire");
      await writeWireFile(frames, 50);
      // No budget or deadline drops on a slow machine: every frame written must reach the reader.
      const serve = spawnAgent(["output", "serve", "--source", fifo, "--socket", t.sock, "--max-latency-ms", "60000", "--write-deadline-ms", "0"]);
      await serve.waitForStderr("source: waiting for a writer");
      // Debian's OpenBSD netcat, whatever `nc` names here.
      const command = reader.replace(/^nc /, "nc.openbsd ").replace(/\bsock\b/, t.sock);
      const trace = t.path("reader.trace");
      const client = start(["strace", "-f", "-e", "trace=shutdown", "-o", trace, "sh", "-c", `${command} > ${t.sink}`]);
      await serve.waitForStderr("client connected");
      await until(() => existsSync(trace) && /shutdown\(\d+, SHUT_WR\) += 0/.test(readFileSync(trace, "utf8")), "the reader's end of sending", 10_000);
      expect(await writeIntoFifo(fifo, frames)).toBe(0);
      await until(() => wireFileFrames(t.sink).frames.length === 50, "50 frames at the reader");
      serve.kill("SIGTERM");
      expect(await serve.exited, serve.stderr).toBe(0);
      // It read to the end the server's stop made, and left of itself.
      expect(await client.exited, client.stderr).toBe(0);
      expect(firstMismatch(wholeWireFrames(t.sink), 0)).toBe(-1);
      expect(wholeWireFrames(t.sink).length).toBe(50);
      expect(expectAccountedLine(serve.stderr)).toMatchObject({ submitted: 50, delivered: 50, dropped: 0 });
      expect(serve.stderr).toContain('reason="server stopping"');
    }, 30_000);
  }
});

describe("exit codes and messages", () => {
  test("bad usage exits 2 with one line naming the problem", async () => {
    const t = setup();
    writeFileSync(t.source, wireBytes(0, 3));
    const cases: [string[], RegExp][] = [
      [["output", "serve", "--source", t.source, "--bogus"], /^audio-agent: output serve: unknown option --bogus \(see audio-agent output serve --help\)$/],
      [["output", "serve", "--source", t.source, "--drop", "sideways"], /--drop "sideways" is not allowed: oldest, newest$/],
      [["output", "serve", "--source", t.source, "--queue-frames", "0"], /--queue-frames "0" is not allowed: an integer 1\.\.100000$/],
      [["output", "serve", "--source", t.source, "--socket-mode", "999"], /--socket-mode "999" is not allowed: octal/],
      [["output", "recv", "--sink", t.sink, "--count", "many"], /--count "many" is not allowed: an integer/],
      [["output", "recv", "--sink", t.sink, "--format", "mp3"], /--format "mp3" is not allowed: wire, ogg/],
      [["output", "serve", "--socket", t.sock], /output serve: --source is required/],
      [["output", "recv", "--socket", t.sock], /output recv: --sink is required/],
      [["output", "serve", "--source", t.source, "stray"], /unexpected argument "stray"/],
      [["output", "listen"], /unknown output command "listen"; allowed: serve, recv/],
      [["outptu"], /unknown command "outptu"/],
    ];
    const results = await Promise.all(cases.map(([args]) => runAgent([...args])));
    results.forEach((result, k) => {
      const [args, pattern] = cases[k];
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(oneLine(result.stderr)).toMatch(pattern);
      expect(result.stdout).toBe("");
    });
    expect(existsSync(t.sock)).toBe(false);
    expect(existsSync(t.sink)).toBe(false);
  });

  test("no server within --connect-timeout exits 1 with one line", async () => {
    const t = setup();
    const result = await runAgent(["output", "recv", "--socket", t.sock, "--sink", t.sink, "--connect-timeout", "0.3"]);
    expect(result.code).toBe(1);
    expect(errorLine(result.stderr)).toMatch(new RegExp(`^audio-agent: --socket ${t.sock}: could not connect within \\d+(\\.\\d+)? s \\(last error: ENOENT\\)$`));
  });

  test("a client's socket path that can never be a server's (a regular file, a directory) exits 1 at once with one line naming the option, where it was set and what the path is", async () => {
    const t = setup();
    writeFileSync(t.sock, "not a socket\n");
    const fromEnv = await runAgent(["output", "recv", "--sink", t.sink], { env: agentEnv({ JETKVM_AUDIO_OUTPUT_SOCKET: t.sock }) });
    expect(fromEnv.code).toBe(1);
    expect(errorLine(fromEnv.stderr)).toBe(`audio-agent: --socket (from environment JETKVM_AUDIO_OUTPUT_SOCKET) ${t.sock}: cannot connect: it is a regular file, not a socket`);
    await writeWireFile(t.source, 3);
    const send = await runAgent(["input", "send", "--socket", t.dir, "--source", t.source]);
    expect(send.code).toBe(1);
    expect(errorLine(send.stderr)).toBe(`audio-agent: --socket ${t.dir}: cannot connect: it is a directory, not a socket`);
  });

  test("a socket path that is a regular file exits 2 and the file is left intact", async () => {
    const t = setup();
    writeFileSync(t.source, wireBytes(0, 3));
    writeFileSync(t.sock, "do not delete\n");
    const ino = statSync(t.sock).ino;
    const result = await runAgent(["output", "serve", "--source", t.source, "--socket", t.sock]);
    expect(result.code).toBe(2);
    expect(errorLine(result.stderr)).toBe(`audio-agent: --socket: socket path ${t.sock} is a regular file; refusing to replace it`);
    expect(readFileSync(t.sock, "utf8")).toBe("do not delete\n");
    expect(statSync(t.sock).ino).toBe(ino);
  });

  test("a socket in a missing directory exits 2 naming the directory", async () => {
    const t = setup();
    writeFileSync(t.source, wireBytes(0, 3));
    const result = await runAgent(["output", "serve", "--source", t.source, "--socket", t.path("gone/out.sock")]);
    expect(result.code).toBe(2);
    expect(errorLine(result.stderr)).toBe(`audio-agent: --socket: socket directory ${t.path("gone")} does not exist`);
  });

  test("--loop over a source without an audio frame exits 1 naming it, rather than looping over nothing", async () => {
    const t = setup();
    const sources = {
      empty: t.path("empty.wire"),
      // Well-formed, but no OpusFrame among its messages.
      heartbeats: t.path("heartbeats.wire"),
    };
    writeFileSync(sources.empty, "");
    writeFileSync(sources.heartbeats, Buffer.concat([1n, 2n, 3n].map((ns) => encodeMessage(OUTPUT_MAGIC, MessageType.Heartbeat, undefined, ns))));
    for (const source of Object.values(sources)) {
      const result = await runAgent(["output", "serve", "--source", source, "--socket", t.sock, "--realtime", "--loop"], { timeoutMs: 20_000 });
      expect({ source, code: result.code }).toEqual({ source, code: 1 });
      expect(errorLine(result.stderr)).toBe(`audio-agent: source ${source} has no audio frames to loop`);
    }
  });

  test("a missing source file exits 1", async () => {
    const t = setup();
    const result = await runAgent(["output", "serve", "--source", t.path("missing.wire"), "--socket", t.sock]);
    expect(result.code).toBe(1);
    expect(errorLine(result.stderr)).toContain(t.path("missing.wire"));
    expect(existsSync(t.sock)).toBe(false);
  });
});

describe("output serve --realtime of a wire capture", () => {
  test("--realtime of a capture whose stamps jump 56 years ahead half-way (its recorder's clock set by NTP's first sync) goes on past the jump", async () => {
    const t = setup();
    const stampNs = (i: number) => (i < 50 ? 10_000_000_000n : 1_796_000_000_000_000_000n) + BigInt(i) * 20_000_000n;
    writeFileSync(t.source, Buffer.concat([...Array(100).keys()].map((i) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, testPayload(i), stampNs(i)))));
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--realtime", "--loop"], { timeoutMs: 20_000 });
    await serve.waitForStderr("listening");
    const client = await connectClient(defer, t.sock);
    // A frame from after the jump, whichever pass of the loop the client joined in.
    await until(() => client.frames.some((p) => Buffer.from(p).equals(testPayload(99))), "the last frame, after the jump, at the client", 10_000);
    serve.kill("SIGTERM");
    expect(await serve.exited, serve.stderr).toBe(0);
    expectAccountedLine(serve.stderr);
  });

  test("--realtime of a capture stamped 0 throughout is paced by its frames' Opus durations, not sent as fast as it is read", async () => {
    const t = setup();
    // Ten 20 ms CELT frames (TOC 0xfc), every stamp 0, looped.
    writeFileSync(t.source, Buffer.concat([...Array(10).keys()].map((i) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, Uint8Array.of(0xfc, i), 0n))));
    const began = performance.now();
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--realtime", "--loop"], { timeoutMs: 20_000 });
    await serve.waitForStderr("listening");
    const client = await connectClient(defer, t.sock);
    await until(() => client.frames.length >= 10, "a pass of the file at the client", 10_000);
    serve.kill("SIGTERM");
    expect(await serve.exited, serve.stderr).toBe(0);
    // However slow the machine, no more than one frame per 20 ms of the agent's whole life (unpaced: millions).
    const { submitted } = expectAccountedLine(serve.stderr);
    expect(submitted).toBeLessThanOrEqual((performance.now() - began) / 20 + 2);
  });
});

describe("signals", () => {
  test("SIGTERM to output serve reading stdin (pipe still open) exits 0 and removes the socket", async () => {
    const t = setup();
    const serve = spawnAgent(["output", "serve", "--source", "-", "--socket", t.sock], { stdin: "pipe" });
    await serve.waitForStderr("listening");
    const client = await connectClient(defer, t.sock);
    await serve.waitForStderr("client connected");
    // Live from stdin: what arrives on stdin goes to the connected client.
    await serve.writeStdin(wireBytes(0, 50));
    await until(() => client.frames.length === 50, "50 frames through stdin");

    serve.kill("SIGTERM");
    expect(await serve.exited, serve.stderr).toBe(0);
    expect(existsSync(t.sock)).toBe(false);
    await client.closed;
    expect(client.pending).toBe(0);
    expect(client.frames.every((p, i) => Buffer.from(p).equals(testPayload(i)))).toBe(true);
  });

  test("SIGTERM stops a --realtime --loop whose frames all carry one timestamp", async () => {
    const t = setup();
    writeFileSync(t.source, Buffer.concat([...Array(50).keys()].map((i) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, testPayload(i), 0n))));
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--realtime", "--loop"], { timeoutMs: 20_000 });
    await serve.waitForStderr("listening");
    const client = await connectClient(defer, t.sock);
    await until(() => client.frames.length >= 50, "frames at the client");
    serve.kill("SIGTERM");
    expect(await serve.exited, serve.stderr).toBe(0);
    expect(existsSync(t.sock)).toBe(false);
    expectAccountedLine(serve.stderr);
  });

  test("SIGTERM to a lossless output serve: a client coming meanwhile is refused, and the one reading gets whole frames only", async () => {
    const t = setup();
    await writeWireFile(t.source, 300);
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--socket-buffers", "32k", "--metrics", "127.0.0.1:0"]);
    const base = await metricsUrl(serve);
    await serve.waitForStderr("listening socket=");
    const reader = await connectClient(defer, t.sock, { paused: true });
    await serve.waitForStderr("client connected");
    await Bun.sleep(200);
    serve.kill("SIGTERM");
    // Once the stop has begun (the agent says it no longer accepts), not a fixed while after the
    // signal: a busy machine can keep the agent from handling it for longer than any such while.
    // It began while the reader, still paused, was being served (its last frames get a second).
    const stopping = await scrapeUntil(base, (text) => value(text, "audio_agent_listening") === 0, "the stop to begin");
    expect(value(stopping, "audio_agent_connected")).toBe(1);
    expect(await connectOutcome(defer, t.sock)).toBe("refused");
    reader.socket.resume();
    expect(await serve.exited, serve.stderr).toBe(0);
    await reader.closed;
    expect(serve.stderr).not.toContain("replaced by a new client");
    expect(reader.pending).toBe(0);
    const stopped = logFields(serve.stderr, "output-server", "stopped");
    expect(reader.frames.length).toBe(Number(stopped.delivered));
    expect(firstMismatch(reader.frames)).toBe(-1);
  });

  test("SIGTERM to a lossless output serve whose client is not reading: from the moment it tells its manager STOPPING=1, a client coming is not let in to replace the one taking the last frames", async () => {
    const t = setup();
    await writeWireFile(t.source, 300);
    const notify = notifyReceiver(t.path("notify"));
    defer(() => notify.close());
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--socket-buffers", "32k"], { env: agentEnv({ NOTIFY_SOCKET: notify.name }) });
    await until(() => notify.messages().includes("READY=1"), "READY=1");
    const reader = await connectClient(defer, t.sock, { paused: true });
    await serve.waitForStderr("client connected");
    serve.kill("SIGTERM");
    // Told in the signal's own turn; the stop of accepting follows before any connection is taken,
    // while the paused reader still holds the last frames for up to a second.
    await until(() => notify.messages().includes("STOPPING=1"), "STOPPING=1", 20_000, 1);
    // Refused, or (the agent kept off the CPU between the two) completed by the kernel into the
    // listener's queue just before the listener closed, and reset with it: never taken.
    const late = await RecordingClient.connect(t.sock).catch(() => undefined);
    reader.socket.resume();
    expect(await serve.exited, serve.stderr).toBe(0);
    expect(serve.stderr).not.toContain("replaced by a new client");
    expect(serve.stderr.match(/output-server: client connected /g)?.length).toBe(1);
    if (late) {
      await late.closed;
      expect(late.messages.length).toBe(0);
    }
  });

  test("a SIGTERM sent the moment the server logs that it stopped on its own (its file played out to its one client) leaves its exit code 0, round after round: caught to the end, not ended 143 by the default action", async () => {
    const t = setup();
    await writeWireFile(t.source, 50);
    const codes: number[] = [];
    // The stop races the exit: a round lands in the gap only now and then, so many rounds.
    for (let round = 0; round < 20; round++) {
      const serve = Bun.spawn([...AGENT, "output", "serve", "--source", t.source, "--socket", t.sock], { env: agentEnv(), stdin: "ignore", stdout: "ignore", stderr: "pipe" });
      defer(() => serve.kill("SIGKILL"));
      // Its log read as it comes, not polled: the signal follows the line at once.
      const lines = serve.stderr.getReader();
      let log = "";
      const logged = async (text: string) => {
        while (!log.includes(text)) {
          const { value, done } = await lines.read();
          if (done) throw new Error(`the server exited before logging "${text}":\n${log}`);
          log += new TextDecoder().decode(value);
        }
      };
      await logged("waiting for a client");
      const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", "/dev/null", "--count", "50"]);
      await logged("INFO  output-server: stopped");
      serve.kill("SIGTERM");
      codes.push(await serve.exited);
      expect(await recv.exited, recv.stderr).toBe(0);
    }
    expect(codes).toEqual(codes.map(() => 0));
  }, 60_000);

  test("SIGTERM to output recv exits 0 and leaves a sink of whole messages", async () => {
    const t = setup();
    const N = 500;
    await writeWireFile(t.source, N);
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--loop"]);
    await serve.waitForStderr("listening");
    const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", t.sink]);
    // The sink is flushed every 100 ms: wait until it has a good amount in it.
    await until(() => existsSync(t.sink) && statSync(t.sink).size > 4 << 20, "sink filling");
    recv.kill("SIGTERM");
    expect(await recv.exited, recv.stderr).toBe(0);

    const got = scanFrames(t.sink, (k) => k % N);
    expect(got.count).toBeGreaterThan(N);
    expect(got.mismatch).toBe(-1);

    serve.kill("SIGTERM");
    expect(await serve.exited, serve.stderr).toBe(0);
    expect(existsSync(t.sock)).toBe(false);
  });

  test("SIGTERM to output recv while its socket is full: every frame its server counts delivered is in the sink, what the socket held as the signal came too", async () => {
    const t = setup();
    const N = 2000;
    await writeWireFile(t.source, N, (i) => indexedPayload(i));
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--loop", "--metrics", "127.0.0.1:0"]);
    const base = await metricsUrl(serve);
    const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", t.sink]);
    await recv.waitForStderr("connected");
    // Held off the CPU, the receiver reads nothing: the lossless server fills the socket's buffers and waits.
    recv.kill("SIGSTOP");
    await heldUp(base, "jetkvm_audio_frames_sent_total", Infinity);
    recv.kill("SIGTERM");
    recv.kill("SIGCONT");
    expect(await recv.exited, recv.stderr).toBe(0);
    // Lossless, the server now waits for another client: what it delivered stays as it was.
    serve.kill("SIGTERM");
    expect(await serve.exited, serve.stderr).toBe(0);

    const frames = wholeWireFrames(t.sink);
    expect(frames.map((f) => payloadIndex(f)).findIndex((index, k) => index !== k % N)).toBe(-1);
    expect(logFields(recv.stderr, "output-client", "stopped").frames).toBe(String(frames.length));
    expect(logFields(serve.stderr, "output-server", "stopped").delivered).toBe(String(frames.length));
  });
});

/** `output recv` with a monitor page open on it, waiting for a reader of its sink FIFO. */
async function waitingForFifoReader() {
  const t = setup();
  const fifo = makeFifo(t.path("player"));
  const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", fifo, "--monitor", "127.0.0.1:0"]);
  const { closed } = await monitorViewer(recv, defer);
  await recv.waitForStderr("waiting for a reader of the sink FIFO");
  return { fifo, recv, closed };
}

describe("output recv to a FIFO", () => {
  test("no reader yet: it says it waits, SIGTERM stops it (exit 0); a reader that comes gets every frame, whole", async () => {
    const t = setup();
    const fifo = makeFifo(t.path("player"));
    const waiting = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", fifo]);
    await waiting.waitForStderr("waiting for a reader of the sink FIFO");
    waiting.kill("SIGTERM");
    expect(await waiting.exited, waiting.stderr).toBe(0);
    expect(logFields(waiting.stderr, "output-client", "stopped")).toMatchObject({ signal: "SIGTERM", frames: "0" });

    const N = 300;
    await writeWireFile(t.source, N);
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock]);
    await serve.waitForStderr("listening");
    const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", fifo, "--count", String(N)]);
    await recv.waitForStderr("waiting for a reader of the sink FIFO");
    // A pipeline making the FIFO again meanwhile: no regular file appears at the path, and the wait goes on.
    unlinkSync(fifo);
    await Bun.sleep(500);
    expect(existsSync(fifo)).toBe(false);
    makeFifo(fifo);
    expect(recv.stderr.split("waiting for a reader of the sink FIFO").length - 1).toBe(1);
    const heard = t.path("heard.wire");
    const player = start(["sh", "-c", 'exec cat "$1" > "$2"', "sh", fifo, heard]);
    expect(await recv.exited, recv.stderr).toBe(0);
    expect(await player.exited).toBe(0);
    expect(scanFrames(heard)).toMatchObject({ count: N, mismatch: -1 });
    // Its file played out to its one client, the server ends alone, maybe before this: exit 0 either way.
    serve.kill("SIGTERM");
    expect(await serve.exited).toBe(0);
  }, 30_000);

  test("a signal while it waits for the FIFO's reader stops its HTTP endpoints: a monitor page is told the agent stops (1001), not cut off; exit 0", async () => {
    const { recv, closed } = await waitingForFifoReader();
    recv.kill("SIGTERM");
    expect(await recv.exited, recv.stderr).toBe(0);
    // The process exits either way; only a stop of its endpoints gives the page the hub's close, else 1006.
    expect(await closed).toBe("1001 agent stopping");
    expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ signal: "SIGTERM", frames: "0" });
  });

  test("the FIFO it waits at replaced by a directory: the sink's own open fails, exit 1 with one line naming the path after its stopped line, its HTTP endpoints stopped first: a monitor page is told the agent stops (1001), not cut off", async () => {
    const { fifo, recv, closed } = await waitingForFifoReader();
    unlinkSync(fifo);
    mkdirSync(fifo);
    expect(await recv.exited, recv.stderr).toBe(1);
    expect(failureLine(recv.stderr)).toContain(fifo);
    expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: "0", connects: "0" });
    // The process exits either way; only a stop of its endpoints gives the page the hub's close, else 1006.
    expect(await closed).toBe("1001 agent stopping");
  });

  test("out of descriptors (EMFILE) while it waits for the FIFO's reader: it goes on waiting, says why once; once descriptors are free the reader that came gets every frame, exit 0", async () => {
    const t = setup();
    const fifo = makeFifo(t.path("player"));
    const N = 100;
    const serve = await servingFile(t, N);
    const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", fifo, "--count", String(N)]);
    await recv.waitForStderr("waiting for a reader of the sink FIFO");
    const giveBack = outOfDescriptors(recv.pid);
    await until(() => recv.stderr.includes("EMFILE"), "a look that finds no descriptor free");
    // The reader comes while the agent still has none: its looks go on failing until it has.
    const heard = t.path("heard.wire");
    const player = start(["sh", "-c", 'exec cat "$1" > "$2"', "sh", fifo, heard]);
    await Bun.sleep(500);
    giveBack();
    expect(await recv.exited, recv.stderr).toBe(0);
    expect(await player.exited).toBe(0);
    expect(recv.stderr.split("WARN  output-client: cannot open the sink FIFO (EMFILE)").length - 1).toBe(1);
    expect(scanFrames(heard)).toMatchObject({ count: N, mismatch: -1 });
    // Its file played out to its one client, the server ends alone, maybe before this: exit 0 either way.
    serve.kill("SIGTERM");
    expect(await serve.exited).toBe(0);
  }, 30_000);

  test("the FIFO is written through the one descriptor its reader was found with, non-blocking", async () => {
    const t = setup();
    const fifo = makeFifo(t.path("player"));
    await writeWireFile(t.source, 50);
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--realtime", "--loop"]);
    await serve.waitForStderr("listening");
    const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", fifo]);
    await recv.waitForStderr("waiting for a reader of the sink FIFO");
    const heard = t.path("heard.wire");
    start(["sh", "-c", 'exec cat "$1" > "$2"', "sh", fifo, heard]);
    await until(() => existsSync(heard) && statSync(heard).size > 0, "audio through the FIFO");
    const fds = readdirSync(`/proc/${recv.pid}/fd`).filter((fd) => readlinkSync(`/proc/${recv.pid}/fd/${fd}`) === fifo);
    expect(fds.length).toBe(1);
    const flags = parseInt(/flags:\s+([0-7]+)/.exec(readFileSync(`/proc/${recv.pid}/fdinfo/${fds[0]}`, "latin1"))![1]!, 8);
    expect(flags & 0o4000).toBe(0o4000); // O_NONBLOCK
    recv.kill("SIGTERM");
    expect(await recv.exited, recv.stderr).toBe(0);
    serve.kill("SIGTERM");
    expect(await serve.exited).toBe(0);
  }, 30_000);

  test("a reader that stops reading holds up the channel, not the process: SIGTERM exits 0, and each frame is in the pipe whole or counted sink_reader_slow", async () => {
    await stalledReaderStopped("fifo");
  }, 60_000);
});

describe("output recv to stdout", () => {
  test("a pipe's reader that stops reading holds up the channel, not the process: SIGTERM exits 0, and each frame is in the pipe whole or counted sink_reader_slow", async () => {
    await stalledReaderStopped("stdout");
  }, 60_000);

  test("a socket's reader (a parent with socketpair stdio) that stops reading holds up the channel, not the process: SIGTERM exits 0, and each frame is in the socket whole or counted sink_reader_slow", async () => {
    await stalledReaderStopped("socket");
  }, 60_000);

  test("a terminal whose output is stopped (Ctrl-S) holds up the channel, not the process: SIGTERM exits 0, what the terminal did not take counted sink_reader_slow", async () => {
    const t = setup();
    const serve = await servingFile(t, 20_000);
    const log = t.path("recv.log");
    // python3 opens a pty, stops its output as Ctrl-S does, and runs output recv with stdout on it (its log in a file).
    const onStoppedTerminal = [
      "import pty, subprocess, sys, termios",
      "master, slave = pty.openpty()",
      "termios.tcflow(slave, termios.TCOOFF)",
      "p = subprocess.Popen(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=slave, stderr=open(sys.argv[1], 'w'))",
      "print(p.pid, flush=True)",
      "print('exit', p.wait(), flush=True)",
    ].join("\n");
    const wrapper = start(["python3", "-c", onStoppedTerminal, log, ...AGENT, "output", "recv", "--socket", t.sock, "--sink", "-"], { env: agentEnv(), timeoutMs: 40_000 });
    await until(() => /^\d+\n/.test(wrapper.stdout), "output recv started");
    const pid = Number(wrapper.stdout.split("\n")[0]);
    defer(() => {
      try {
        process.kill(pid, "SIGKILL"); // one that hung: not left behind
      } catch {
        // gone, as it should be
      }
    });
    await until(() => existsSync(log) && readFileSync(log, "latin1").includes("output-client: connected"), "output recv connected", 10_000);
    // The frames go on coming: far more than the terminal's buffer takes while stopped.
    await Bun.sleep(1000);
    process.kill(pid, "SIGTERM");
    await until(() => wrapper.stdout.includes("exit "), "output recv's exit", 15_000).catch(() => {});
    expect(wrapper.stdout, readFileSync(log, "latin1")).toContain("exit 0\n");
    const stopped = logFields(readFileSync(log, "latin1"), "output-client", "stopped");
    expect(Number(stopped.dropped_sink_reader_slow)).toBeGreaterThan(0);
    serve.kill("SIGTERM");
    await serve.exited;
  }, 60_000);

  test("a socket (a parent with socketpair stdio) finds its flags as they were after the exit, a clean one and a failure's: no O_NONBLOCK left for the parent", async () => {
    const t = setup();
    // Frames the player's socket holds whole (about 40 KB): the player reads them after the exit.
    const serve = await servingFile(t, 20);
    // The parent's own descriptor of the child's end: it shares the child's open description (and its flags).
    const flagsOf = (fd: number) => parseInt(/flags:\s+([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "latin1"))![1]!, 8);
    const runs: [string[], number][] = [
      [["--socket", t.sock, "--once"], 0],
      // No server there: the run fails after the sink is opened on stdout.
      [["--socket", t.path("none.sock"), "--connect-timeout", "1"], 1],
    ];
    for (const [args, code] of runs) {
      const pair = socketPair();
      const recv = spawnAgent(["output", "recv", "--sink", "-", ...args], { stdout: pair.childEnd });
      expect(await recv.exited, recv.stderr).toBe(code);
      expect(flagsOf(pair.childEnd) & 0o4000).toBe(0); // O_NONBLOCK
      closeSync(pair.childEnd);
      const heard = await readToEnd(pair.playerEnd);
      if (code === 0) expect(parseWire(heard, OUTPUT_MAGIC).messages.length).toBe(20);
    }
    expect(await serve.exited, serve.stderr).toBe(0);
  }, 60_000);

  test("a file past its size limit (ulimit -f: EFBIG after a short write): exit 1, and each frame is in the file whole or counted sink_write_failed", async () => {
    const t = setup();
    const serve = await servingFile(t, 2000);
    const file = t.path("stdout.wire");
    // 100 KiB: the write that reaches it is cut short (the frame across it with it), and the next one fails.
    const cmd = `trap '' XFSZ; ulimit -f 100; exec "$@" > '${file}'`;
    const recv = start(["bash", "-c", cmd, "bash", ...AGENT, "output", "recv", "--socket", t.sock, "--sink", "-"], { env: agentEnv() });
    expect(await recv.exited, recv.stderr).toBe(1);
    expect(failureLine(recv.stderr)).toBe("audio-agent: cannot write to sink stdout: EFBIG");
    expect(statSync(file).size).toBe(100 * 1024);
    const stopped = logFields(recv.stderr, "output-client", "stopped");
    expect(Number(stopped.dropped)).toBe(Number(stopped.dropped_sink_write_failed));
    const { frames: whole, error } = wireFileFrames(file);
    expect(error).toBeUndefined();
    whole.forEach((payload, k) => expect(isTestPayload(k, payload)).toBe(true));
    expect(whole.length + Number(stopped.dropped)).toBe(Number(stopped.frames));
    serve.kill("SIGTERM");
    await serve.exited;
  }, 60_000);

  test("a sink file past its size limit is trimmed back to its last whole frame, and a run with --append adds to it, where one without starts it afresh", async () => {
    const t = setup();
    const file = t.path("sink.wire");
    let serve = await servingFile(t, 2000);
    // 100 KiB: the write that reaches it is cut short (the frame across it with it), and the next one fails (EFBIG, as ENOSPC).
    const cmd = `trap '' XFSZ; ulimit -f 100; exec "$@"`;
    const recv = start(["bash", "-c", cmd, "bash", ...AGENT, "output", "recv", "--socket", t.sock, "--sink", file], { env: agentEnv() });
    expect(await recv.exited, recv.stderr).toBe(1);
    expect(failureLine(recv.stderr)).toBe(`audio-agent: cannot write to sink ${file}: EFBIG`);
    const cut = wireFileFrames(file);
    expect([cut.error, cut.trailing]).toEqual([undefined, 0]);
    expect(statSync(file).size).toBeLessThan(100 * 1024);
    const stopped = logFields(recv.stderr, "output-client", "stopped");
    expect(cut.frames.length + Number(stopped.dropped_sink_write_failed)).toBe(Number(stopped.frames));
    cut.frames.forEach((payload, k) => expect(isTestPayload(k, payload)).toBe(true));
    serve.kill("SIGTERM");
    await serve.exited;

    // Started again on it (a restarted service): with --append what it had is kept and the new run follows it.
    serve = await servingFile(t, 20);
    expect(await runAgent(["output", "recv", "--socket", t.sock, "--sink", file, "--append", "--count", "20"])).toMatchObject({ code: 0 });
    const appended = wholeWireFrames(file);
    expect(appended.length).toBe(cut.frames.length + 20);
    appended.forEach((payload, k) => expect(isTestPayload(k < cut.frames.length ? k : k - cut.frames.length, payload)).toBe(true));
    await serve.exited;
    // Without it, the file is started afresh, as a shell's > does.
    serve = await servingFile(t, 20);
    expect(await runAgent(["output", "recv", "--socket", t.sock, "--sink", file, "--count", "20"])).toMatchObject({ code: 0 });
    expect(wholeWireFrames(file).length).toBe(20);
    serve.kill("SIGTERM");
    await serve.exited;
  }, 60_000);

  test("--append to a capture whose last message was cut short (the agent killed mid-write, the power lost): what the new run records follows the last whole message, and the file reads whole", async () => {
    const t = setup();
    const file = t.path("sink.wire");
    let serve = await servingFile(t, 30);
    expect(await runAgent(["output", "recv", "--socket", t.sock, "--sink", file, "--count", "30"])).toMatchObject({ code: 0 });
    await serve.exited;
    // The last message's last bytes never reached the disk.
    truncateSync(file, statSync(file).size - 5);
    serve = await servingFile(t, 20);
    expect(await runAgent(["output", "recv", "--socket", t.sock, "--sink", file, "--append", "--count", "20"])).toMatchObject({ code: 0 });
    await serve.exited;
    const appended = wireFileFrames(file);
    expect([appended.error?.message, appended.trailing]).toEqual([undefined, 0]);
    expect(appended.frames.length).toBe(29 + 20);
    appended.frames.forEach((payload, k) => expect(isTestPayload(k < 29 ? k : k - 29, payload)).toBe(true));
  });

  test("--append onto a file of another format (an Ogg recording, a WAV file under an Ogg sink) exits 2 before connecting, with one line naming the file, what it holds and where the format was set; the file left as it was", async () => {
    const t = setup();
    const ogg = t.path("recorded.opus");
    writeFileSync(ogg, readFileSync(TONE));
    const wav = t.path("take.wav");
    writeFileSync(wav, Buffer.concat([Buffer.from("RIFF\x24\x00\x00\x00WAVEfmt ", "latin1"), Buffer.alloc(28)]));
    const before = [readFileSync(ogg), readFileSync(wav)];
    const fromEnv = await runAgent(["output", "recv", "--socket", t.sock, "--sink", ogg, "--append"], { env: agentEnv({ AUDIO_AGENT_FORMAT: "wire" }) });
    expect(fromEnv.code).toBe(2);
    expect(failureLine(fromEnv.stderr)).toBe(
      `audio-agent: sink ${ogg} (--format wire, from environment AUDIO_AGENT_FORMAT) holds Ogg, and --append adds to a file of its own format only: use --format ogg, or another file`,
    );
    const wave = await runAgent(["output", "recv", "--socket", t.sock, "--sink", wav, "--format", "ogg", "--append"]);
    expect(wave.code).toBe(2);
    expect(failureLine(wave.stderr)).toBe(`audio-agent: sink ${wav} (--format ogg) holds WAV, and --append adds to a file of its own format only: use another file`);
    // --append from the environment too: the line says where, as for the format.
    const appendFromEnv = await runAgent(["output", "recv", "--socket", t.sock, "--sink", wav, "--format", "ogg"], { env: agentEnv({ AUDIO_AGENT_APPEND: "1" }) });
    expect(appendFromEnv.code).toBe(2);
    expect(failureLine(appendFromEnv.stderr)).toBe(
      `audio-agent: sink ${wav} (--format ogg) holds WAV, and --append (from environment AUDIO_AGENT_APPEND) adds to a file of its own format only: use another file`,
    );
    expect([readFileSync(ogg), readFileSync(wav)]).toEqual(before);
  });

  test("--append onto Ogg that is not Opus (Vorbis, FLAC) under an Ogg sink exits 2 before connecting, naming the file and its first packet, the file left as it was: no Opus reader opens a chain whose first link holds no Opus stream", async () => {
    const t = setup();
    const vorbis = ffmpegFrom(t.path("take.ogg"), "sine=duration=0.3", ["-c:a", "libvorbis", "-f", "ogg"]);
    const flac = ffmpegFrom(t.path("take.oga"), "sine=duration=0.3", ["-c:a", "flac", "-f", "ogg"]);
    const before = [readFileSync(vorbis), readFileSync(flac)];
    const refused = (path: string, begins: string) =>
      `audio-agent: sink ${path} (--format ogg) holds Ogg that is not Opus (its first packet begins "${begins}"), and --append adds to Ogg Opus only: use another file`;
    for (const [path, begins] of [
      [vorbis, "\\x01vorbis\\x00"],
      [flac, "\\x7fFLAC\\x01\\x00\\x00"],
    ] as const) {
      const recv = await runAgent(["output", "recv", "--socket", t.sock, "--sink", path, "--format", "ogg", "--append", "--connect-timeout", "1"]);
      expect({ path, code: recv.code }).toEqual({ path, code: 2 });
      expect(failureLine(recv.stderr)).toBe(refused(path, begins));
    }
    expect([readFileSync(vorbis), readFileSync(flac)]).toEqual(before);
  });

  test("--append to a file the agent may write but not read (mode 0200, the agent another user): added to as >> adds, exit 0; the run did not fail on the look for a message cut short", async () => {
    const t = setup();
    chmodSync(t.dir, 0o777);
    await writeWireFile(t.source, 20);
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--socket-mode", "0666"]);
    await serve.waitForStderr("waiting for a client");
    const file = t.path("sink.wire");
    const before = wireBytes(0, 10);
    writeFileSync(file, before);
    chownSync(file, NOBODY, NOBODY);
    chmodSync(file, 0o200);
    const out = openSync("/dev/null", "w");
    const recv = agentAsNobody(t.dir, ["output", "recv", "--socket", t.sock, "--sink", file, "--append", "--count", "20"], out);
    closeSync(out);
    expect(await recv.exited, recv.stderr).toBe(0);
    await serve.exited;
    const appended = wireFileFrames(file);
    expect([appended.error?.message, appended.trailing, appended.frames.length]).toEqual([undefined, 0, 10 + 20]);
  });

  test("a pipe the agent cannot open again (it runs as another user than the pipe's: sudo -u, start-stop-daemon --chuid), whose reader stops reading, holds up the channel, not the process: SIGTERM exits 0", async () => {
    const t = setup();
    // The agent runs as nobody: it reaches the directory and the server's socket, not the root's pipe by /proc/self/fd/1 (EACCES).
    chmodSync(t.dir, 0o777);
    await writeWireFile(t.source, 20_000);
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--socket-mode", "0666", "--metrics", "127.0.0.1:0"]);
    await serve.waitForStderr("waiting for a client");
    const fifo = makeFifo(t.path("player"));
    const heard = t.path("heard.wire");
    const player = start(["sh", "-c", HELD_READER, fifo, heard]);
    const out = openSync(fifo, "w");
    const args = ["output", "recv", "--socket", t.sock, "--sink", "-"];
    const recv = agentAsNobody(t.dir, args, out);
    closeSync(out);
    // The lossless server sends only what the client reads (the client's own /metrics would stop answering if it were held).
    await heldUp(await metricsUrl(serve), "jetkvm_audio_frames_sent_total", 20_000);
    await recv.waitForStderr("output-client: connected");
    recv.kill("SIGTERM");
    // Not held inside a blocking write() until the reader reads (or the test's SIGKILL: 137).
    expect(await recv.exited, recv.stderr).toBe(0);
    releaseReader(heard);
    expect(await player.exited).toBe(0);
    const stopped = logFields(recv.stderr, "output-client", "stopped");
    expect(Number(stopped.dropped_sink_reader_slow)).toBeGreaterThan(0);
    const { frames: whole } = wireFileFrames(heard);
    expect(whole.length + Number(stopped.dropped)).toBe(Number(stopped.frames));
    serve.kill("SIGTERM");
    await serve.exited;
  }, 60_000);

  test("a reader that stalls and then reads on loses nothing: the lossless server waits, every frame arrives once, in order", async () => {
    const t = setup();
    const N = 20_000;
    const serve = await servingFile(t, N);
    const heard = t.path("heard.wire");
    const { player, agentOnIt } = heldPlayer(t.path("player"), heard);
    const recv = agentOnIt(["output", "recv", "--socket", t.sock, "--sink", "-", "--once", "--metrics", "127.0.0.1:0"]);
    await heldUp(await metricsUrl(recv), "jetkvm_audio_frames_received_total", N);
    releaseReader(heard);
    expect(await recv.exited, recv.stderr).toBe(0);
    expect(await player.exited).toBe(0);
    expect(scanFrames(heard)).toMatchObject({ count: N, mismatch: -1 });
    expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: String(N), dropped: "0" });
    expect(await serve.exited, serve.stderr).toBe(0);
  }, 60_000);
});

describe("output recv's log to a pipe it cannot open again", () => {
  test("stderr a pipe of another user's (EACCES by /proc/self/fd/2) whose reader has stopped reading never holds up the audio: every frame reaches the sink, exit 0", async () => {
    const t = setup();
    chmodSync(t.dir, 0o777);
    const serve = await servingFile(t, 200);
    chmodSync(t.sock, 0o666);
    // The log's reader (an init script's logger) holds the pipe open and reads nothing: it is full already.
    const { reader, writer: log } = fullFifo(t.path("log"));
    const sink = t.path("sink.wire");
    const recv = agentAsNobody(t.dir, ["output", "recv", "--socket", t.sock, "--sink", sink, "--once"], log, "2>&1 >/dev/null");
    closeSync(log);
    // --once: the client ends with the lossless server, once it has read every frame (not held in a write of its log until the test's SIGKILL: 137).
    expect(await recv.exited).toBe(0);
    expect(await serve.exited, serve.stderr).toBe(0);
    expect(logFields(serve.stderr, "output-server", "stopped").delivered).toBe("200");
    expect(wholeWireFrames(sink).length).toBe(200);
    closeSync(reader);
  }, 60_000);

  test("stdout and stderr on one pipe of another user's (2>&1, --sink -): its flags are as they were after the exit, a clean one and a failure's: no O_NONBLOCK left for the pipe's owner", async () => {
    const t = setup();
    chmodSync(t.dir, 0o777);
    const serve = await servingFile(t, 20);
    chmodSync(t.sock, 0o666);
    // The test's own descriptor of the pipe's write end: the agent's stdout and stderr share its open description (and its flags).
    const flagsOf = (fd: number) => parseInt(/flags:\s+([0-7]+)/.exec(readFileSync(`/proc/self/fdinfo/${fd}`, "latin1"))![1]!, 8);
    const runs: [string[], number][] = [
      [["--socket", t.sock, "--once"], 0],
      // No server there: the run fails after stdout and stderr were both made non-blocking.
      [["--socket", t.path("none.sock"), "--connect-timeout", "1"], 1],
    ];
    for (const [args, code] of runs) {
      const fifo = makeFifo(t.path(`pipe-${code}`));
      // The reader holds the pipe (about 40 KB of frames and a few log lines fit in it) and reads after the exit.
      const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
      const pipe = openSync(fifo, constants.O_WRONLY);
      const recv = agentAsNobody(t.dir, ["output", "recv", "--sink", "-", ...args], pipe, "2>&1");
      expect(await recv.exited).toBe(code);
      // Each of stdout's and stderr's exit handlers put back the flags it found: stdout's found stderr's O_NONBLOCK already set (one description).
      expect(flagsOf(pipe) & 0o4000).toBe(0); // O_NONBLOCK
      closeSync(pipe);
      closeSync(reader);
    }
    expect(await serve.exited, serve.stderr).toBe(0);
  }, 60_000);
});

describe("output serve's log to a pipe it cannot open again", () => {
  test("stderr a pipe of another user's, full (its reader stopped), a client connected: a second SIGTERM exits at once (143), not held in a write of a line logged at exit after the pipe was made blocking again; the lines held since the pipe filled reach a reader that reads again as it exits", async () => {
    const t = setup();
    chmodSync(t.dir, 0o777);
    await writeWireFile(t.source, 20_000);
    // The log's reader (an init script's logger) holds the pipe open and reads nothing: it is full already.
    const { reader, writer: log } = fullFifo(t.path("log"));
    const args = ["output", "serve", "--source", t.source, "--socket", t.sock, "--socket-mode", "0666"];
    const serve = agentAsNobody(t.dir, args, log, "2>&1 >/dev/null");
    closeSync(log);
    await until(() => existsSync(t.sock), "the socket to listen", 20_000);
    // A client that reads nothing: the first signal's stop waits for it.
    await connectClient(defer, t.sock, { paused: true });
    await Bun.sleep(500);
    await serve.signalTaken("SIGTERM");
    serve.kill("SIGTERM");
    // The reader reads again once the agent waits in its exit for the log's reader (a sleep: its loop no longer
    // turns): the lines held since the pipe filled are offered then, before the pipe is given up.
    const inExitWait = () => {
      try {
        return readFileSync(`/proc/${serve.pid}/wchan`, "latin1") === "hrtimer_nanosleep";
      } catch {
        return false;
      }
    };
    await until(() => inExitWait() || serve.hasExited, "the agent's exit", 20_000, 1);
    const heard = Buffer.from(await readToEnd(reader)).toString("latin1");
    // Not 137 (the test's SIGKILL after 30 s): the listener's stop at exit logs the client's disconnection after
    // stderr's exit handler made the pipe blocking again, and that write waits for the reader for good.
    expect(await serve.exited).toBe(143);
    expect(heard).toContain("INFO  output-server: client connected ");
  }, 60_000);
});

describe("output recv to stdout with stderr on it (2>&1)", () => {
  test("a socket stderr shares, whose reader stops reading: a second SIGTERM exits at once (143), its log lines waiting or not", async () => {
    const t = setup();
    await writeWireFile(t.source, 20_000);
    const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, "--metrics", "127.0.0.1:0"], { timeoutMs: 30_000 });
    await serve.waitForStderr("waiting for a client");
    const pair = socketPair();
    // A stats line a second: once the socket is full, the log's lines wait in the agent for the reader too.
    const args = ["output", "recv", "--socket", t.sock, "--sink", "-", "--stats-interval", "1"];
    const recv = start(["bash", "-c", 'exec "$@" 2>&1', "bash", ...AGENT, ...args], { env: agentEnv(), stdout: pair.childEnd, timeoutMs: 30_000 });
    closeSync(pair.childEnd);
    // The server sends only what the client reads: its count stops once the player's socket is full.
    await heldUp(await metricsUrl(serve), "jetkvm_audio_frames_sent_total", 20_000);
    // A stats line comes due while the reader reads nothing: it waits in the agent's log.
    await Bun.sleep(1500);
    await recv.signalTaken("SIGTERM");
    recv.kill("SIGTERM");
    // The second signal exits at once (README: 143), not held at exit writing the waiting log lines into a
    // socket made blocking again (stdout's flags put back first): a parent waiting on it would wait forever.
    expect(await recv.exited).toBe(143);
    await readToEnd(pair.playerEnd);
    serve.kill("SIGTERM");
    // Its client gone, the server stops at once (not 137: the SIGKILL after 30 s).
    expect(await serve.exited, serve.stderr).toBe(0);
  }, 60_000);
});

/**
 * A lossless server floods output recv, whose sink (a FIFO, or stdout on
 * one, or stdout on a socket) has a reader that opened it and reads nothing;
 * once the channel is held up, SIGTERM: exit 0 all the same. The reader, let
 * go afterwards, finds whole messages (the last perhaps cut short), and the
 * frames not among them are the ones the stopped line counts as dropped for
 * the slow reader.
 */
async function stalledReaderStopped(sink: "fifo" | "stdout" | "socket"): Promise<void> {
  const t = setup();
  const serve = await servingFile(t, 20_000);
  const fifo = t.path("player");
  const heard = t.path("heard.wire");
  const { player, agentOnIt, release } = sink === "socket" ? heldSocketPlayer(heard) : heldPlayer(fifo, heard);
  const args = ["output", "recv", "--socket", t.sock, "--metrics", "127.0.0.1:0", "--sink"];
  const recv = sink === "fifo" ? spawnAgent([...args, fifo]) : agentOnIt([...args, "-"]);
  await heldUp(await metricsUrl(recv), "jetkvm_audio_frames_received_total", 20_000);
  recv.kill("SIGTERM");
  expect(await recv.exited, recv.stderr).toBe(0);
  release();
  expect(await player.exited).toBe(0);
  const stopped = logFields(recv.stderr, "output-client", "stopped");
  expect(Number(stopped.dropped_sink_reader_slow)).toBeGreaterThan(0);
  expect(Number(stopped.dropped)).toBe(Number(stopped.dropped_sink_reader_slow));
  // The last message may be cut short (a non-blocking write takes what fits): its frame is one of those counted.
  const { frames: whole, trailing, error } = wireFileFrames(heard);
  expect(error).toBeUndefined();
  expect(trailing).toBeLessThan(MAX_MESSAGE);
  whole.forEach((payload, k) => expect(isTestPayload(k, payload)).toBe(true));
  expect(whole.length + Number(stopped.dropped)).toBe(Number(stopped.frames));
  serve.kill("SIGTERM");
  expect(await serve.exited, serve.stderr).toBe(0);
}

describe("socket file mode", () => {
  test("0660 by default, --socket-mode when given", async () => {
    const t = setup();
    writeFileSync(t.source, wireBytes(0, 3));
    for (const [extra, mode] of [[[], 0o660], [["--socket-mode", "0600"], 0o600]] as const) {
      const serve = spawnAgent(["output", "serve", "--source", t.source, "--socket", t.sock, ...extra]);
      await serve.waitForStderr("listening");
      expect(statSync(t.sock).mode & 0o777).toBe(mode);
      serve.kill("SIGTERM");
      expect(await serve.exited, serve.stderr).toBe(0);
      expect(existsSync(t.sock)).toBe(false);
    }
  });
});

describe("help and version", () => {
  test("--help on every level exits 0 and prints usage on stdout", async () => {
    const levels = [["--help"], ["-h"], ["help"], ["output", "--help"], ["output", "serve", "--help"], ["output", "recv", "--help"]];
    const results = await Promise.all(levels.map((args) => runAgent(args)));
    results.forEach((result, k) => {
      expect({ args: levels[k], code: result.code }).toEqual({ args: levels[k], code: 0 });
      expect(result.stdout).toContain("audio-agent");
      expect(result.stderr).toBe("");
    });
    expect(results[0].stdout).toContain("output serve --source PATH|-");
    expect(results[4].stdout).toContain("--socket-mode");
    expect(results[5].stdout).toContain("--connect-timeout");
  });

  test("without a command it prints the usage on stderr and exits 2", async () => {
    const result = await runAgent([]);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toContain("Usage:");
  });

  test("--version prints one version line and exits 0", async () => {
    const version = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")).version;
    for (const flag of ["--version", "-V"]) {
      const result = await runAgent([flag]);
      expect(result.code).toBe(0);
      expect(result.stdout).toMatch(new RegExp(`^audio-agent ${version.replace(/\./g, "\\.")} \\(commit \\S+, bun \\S+\\)\\n$`));
    }
  });
});
