/**
 * A FIFO source, as the packaged service uses it: the agent listens before
 * any encoder opens the FIFO, and when an encoder closes it the agent waits
 * for the next one and carries on with its new Ogg stream (new OpusHead, new
 * serial). Real processes: the agent, `cat FILE > FIFO` writers, opusenc files.
 */
import { describe, expect, test } from "bun:test";
import { closeSync, constants, existsSync, openSync, readFileSync, statSync, unlinkSync, writeFileSync } from "node:fs";
import { openSource } from "../../src/media/open.ts";
import { INPUT_MAGIC, MessageType } from "../../src/protocol/index.ts";
import { expectAccountedLine, failureLine, logFields } from "../support/agent-log.ts";
import { sameBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { churnFifo, makeFifo, writeIntoFifo } from "../support/fifo.ts";
import { healthz, metricsUrl, scrape, value } from "../support/metrics.ts";
import { packetsOf, pagesOf } from "../support/ogg.ts";
import { encodeWith } from "../support/opus-fixtures.ts";
import { spawnAgent, type Spawned, stopAgents } from "../support/processes.ts";
import { drain } from "../support/sources.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { parseWire, wireFileFrames } from "../support/wire.ts";

const defer = useCleanup();
/** Longer than the agent takes to look at its path again while it waits for a writer (once a second). */
const PATH_CHECK_WAIT_MS = 1500;

function setup() {
  const t = socketDir(defer, "aa-fifo-");
  defer(() => stopAgents());
  // Two encoder runs: different frame sizes, and opusenc picks a new serial each time; pages
  // every 20 ms, as a live encoder writes them.
  const first = encodeWith(t.dir, "first", ["--framesize", "20", "--max-delay", "20"]);
  const second = encodeWith(t.dir, "second", ["--framesize", "10", "--max-delay", "20"]);
  return { ...t, fifo: makeFifo(t.path("capture.ogg")), sock: t.path("o.sock"), first, second };
}

/** The FIFO's source, opened and read from now on: what it reported ("level message"), and how many frames it gave so far. */
async function countingReader(t: ReturnType<typeof setup>) {
  const reports: string[] = [];
  const source = await openSource("ogg", t.fifo, { lenient: false, report: (level, message) => reports.push(`${level} ${message}`) });
  defer(() => source.close());
  let frames = 0;
  const reading = (async () => {
    for (;;) {
      if (source.next()) frames++;
      else if (!(await source.fill())) return;
    }
  })();
  return { source, reports, reading, frames: () => frames };
}

/**
 * The FIFO's source, opened and read while each of `files` is written into
 * the FIFO in turn; once the last writer's stream has been read to its end
 * ("writer closed"), closed. The frames it gave, and what it reported.
 */
async function readWriters(t: ReturnType<typeof setup>, files: string[]): Promise<{ frames: Uint8Array[]; reports: string[] }> {
  const reports: string[] = [];
  const source = await openSource("ogg", t.fifo, { lenient: false, report: (level, message, fields) => reports.push(`${level} ${message} ${JSON.stringify(fields)}`) });
  const writers = (async () => {
    for (const file of files) expect(await writeIntoFifo(t.fifo, file)).toBe(0);
  })();
  const frames: Uint8Array[] = [];
  const reading = (async () => {
    for (;;) {
      const frame = source.next();
      if (frame) frames.push(frame.payload.slice());
      else if (!(await source.fill())) return;
    }
  })();
  await writers;
  await until(() => reports.filter((r) => r.startsWith("info writer closed")).length === 1, "the good stream's end");
  await source.close();
  await reading;
  return { frames, reports };
}

/** `output serve` from the FIFO, once it waits for the first writer. */
async function serveFifo(t: ReturnType<typeof setup>): Promise<Spawned> {
  const serve = spawnAgent(["output", "serve", "--source", t.fifo, "--format", "ogg", "--socket", t.sock]);
  await serve.waitForStderr("source: waiting for a writer");
  return serve;
}

/** The audio packets of an Ogg Opus file (after OpusHead and OpusTags). */
function audioPackets(path: string): Uint8Array[] {
  return packetsOf(new Uint8Array(readFileSync(path))).slice(2);
}

function count(text: string, part: string): number {
  return text.split(part).length - 1;
}

/**
 * The second encoder run written into the FIFO by a new writer; waits until
 * `serve` has read its stream to the end (its `nth` writer), all of it.
 */
async function feedSecond(t: ReturnType<typeof setup>, serve: Spawned, nth: number): Promise<void> {
  expect(await writeIntoFifo(t.fifo, t.second, 20_000)).toBe(0);
  await until(() => count(serve.stderr, "source: writer closed the stream") === nth, `writer ${nth}'s end`);
  expect(logFields(serve.stderr, "source", "writer closed the stream")?.frames).toBe(String(audioPackets(t.second).length));
}

describe("output serve --source FIFO --format ogg", () => {
  test("listens before any writer, serves two encoder runs one after the other, stays up, exits 0 on SIGTERM", async () => {
    const t = setup();
    const streams = [audioPackets(t.first), audioPackets(t.second)];
    const serials = [t.first, t.second].map((f) => pagesOf(new Uint8Array(readFileSync(f)))[0]!.serial);
    expect(serials[0]).not.toBe(serials[1]);
    const total = streams[0]!.length + streams[1]!.length;

    const serve = spawnAgent(["output", "serve", "--source", t.fifo, "--format", "ogg", "--socket", t.sock, "--metrics", "0", "--write-deadline-ms", "0"]);
    // Nothing has opened the FIFO for writing yet: the socket and /metrics already answer.
    const base = await metricsUrl(serve);
    await serve.waitForStderr("listening socket=");
    expect(statSync(t.sock).isSocket()).toBe(true);
    expect(value(await scrape(base), "jetkvm_audio_frames_sent_total")).toBe(0);
    await serve.waitForStderr("source: waiting for a writer");

    const sink = t.path("out.wire");
    const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", sink, "--count", String(total)]);
    await serve.waitForStderr("client connected");

    expect(await writeIntoFifo(t.fifo, t.first)).toBe(0);
    await until(() => count(serve.stderr, "source: writer closed the stream") === 1, "the first writer's end");
    expect(serve.hasExited).toBe(false);
    expect(await writeIntoFifo(t.fifo, t.second)).toBe(0);

    expect(await recv.exited, recv.stderr).toBe(0);
    const got = wireFileFrames(sink);
    expect(got.error).toBeUndefined();
    const expected = [...streams[0]!, ...streams[1]!];
    expect(got.frames.length).toBe(expected.length);
    expect(got.frames.findIndex((frame, i) => !sameBytes(frame, expected[i]!))).toBe(-1);

    await until(() => count(serve.stderr, "source: writer closed the stream") === 2, "the second writer's end");
    expect(logFields(serve.stderr, "source", "writer closed the stream")?.frames).toBe(String(streams[1]!.length));
    // Still running, waiting for the next encoder.
    expect(serve.hasExited).toBe(false);
    expect((await healthz(base)).frames).toBe(total);

    serve.kill("SIGTERM");
    expect(await serve.exited, serve.stderr).toBe(0);
    const accounting = expectAccountedLine(serve.stderr);
    expect(accounting.delivered).toBe(total);
  }, 60_000);

  test("a SIGTERM while no writer ever came stops it at once, exit 0, socket removed", async () => {
    const t = setup();
    const serve = await serveFifo(t);
    serve.kill("SIGTERM");
    expect(await serve.exited, serve.stderr).toBe(0);
    expect(serve.stderr).toContain("stopped signal=SIGTERM");
    expect(existsSync(t.sock)).toBe(false);
  }, 30_000);
});

describe("output serve --source FIFO: the FIFO itself replaced or removed", () => {
  test("a new FIFO made at the path (a restarted capture pipeline) is followed: its writer is read, not left blocked", async () => {
    const t = setup();
    const serve = await serveFifo(t);
    expect(await writeIntoFifo(t.fifo, t.first)).toBe(0);
    await until(() => count(serve.stderr, "source: writer closed the stream") === 1, "the first writer's end");
    // The agent holds the old FIFO open for its next writer before the path changes.
    await until(() => count(serve.stderr, "source: waiting for a writer") === 2, "the wait for the next writer");
    unlinkSync(t.fifo);
    makeFifo(t.fifo);
    // Without a reader on the new FIFO this writer would wait for ever: 20 s is far more than the agent needs.
    await feedSecond(t, serve, 2);
    expect(serve.stderr).toContain("the FIFO at the path was replaced or removed");
    // Letting go of the old FIFO, where no byte came, is no stream that failed.
    expect(serve.stderr).not.toContain("stream failed");
    expect(serve.hasExited).toBe(false);
  }, 60_000);

  test("a FIFO removed and made again a moment later (rm; mkfifo) is followed: the path being gone for a moment ends nothing", async () => {
    const t = setup();
    const serve = await serveFifo(t);
    unlinkSync(t.fifo);
    // The agent lets go of the old FIFO and finds the path gone: it waits for it instead of ending the run.
    await serve.waitForStderr("the FIFO is gone; waiting for it to be made again");
    await Bun.sleep(1000);
    expect(serve.hasExited).toBe(false);
    makeFifo(t.fifo);
    await feedSecond(t, serve, 1);
    expect(serve.hasExited).toBe(false);
  }, 60_000);

  test("a FIFO removed and made again over and over, as fast as it goes: the agent never finds it gone for good, and then reads the next writer", async () => {
    const t = setup();
    const serve = await serveFifo(t);
    // The path vanishes for microseconds at a time, between any stat and open of the agent's.
    expect(churnFifo(t.fifo, 4000)).toBeGreaterThan(1000);
    await Bun.sleep(PATH_CHECK_WAIT_MS);
    expect(serve.hasExited, serve.stderr).toBe(false);
    await feedSecond(t, serve, 1);
  }, 60_000);

  test("SIGTERM while the agent waits for its path to be made again: exit 0, its stopped line, socket removed", async () => {
    const t = setup();
    const serve = await serveFifo(t);
    unlinkSync(t.fifo);
    await serve.waitForStderr("the FIFO is gone; waiting for it to be made again");
    serve.kill("SIGTERM");
    expect(await serve.exited, serve.stderr).toBe(0);
    expect(serve.stderr).toContain("stopped signal=SIGTERM");
    expect(serve.stderr).not.toContain("ENOENT");
    expect(existsSync(t.sock)).toBe(false);
  }, 60_000);

  test("the path made again as a regular file: exit 1, naming the source and what it is no longer", async () => {
    const t = setup();
    const serve = await serveFifo(t);
    unlinkSync(t.fifo);
    writeFileSync(t.fifo, "");
    expect(await serve.exited, serve.stderr).toBe(1);
    expect(failureLine(serve.stderr)).toBe(`audio-agent: source ${t.fifo} is no longer a named pipe (FIFO)`);
    expect(existsSync(t.sock)).toBe(false);
  }, 60_000);

  test("the path made again as a Unix socket, which cannot be opened: exit 1, naming what it is no longer, not the open's ENXIO", async () => {
    const t = setup();
    const serve = await serveFifo(t);
    unlinkSync(t.fifo);
    const listener = Bun.listen({ unix: t.fifo, socket: { data() {} } });
    defer(() => listener.stop(true));
    expect(await serve.exited, serve.stderr).toBe(1);
    expect(failureLine(serve.stderr)).toBe(`audio-agent: source ${t.fifo} is no longer a named pipe (FIFO)`);
  }, 60_000);

  test("the FIFO removed while the agent waits for a writer: exit 1 naming --source and ENOENT, socket removed", async () => {
    const t = setup();
    const serve = await serveFifo(t);
    unlinkSync(t.fifo);
    const code = await Promise.race([serve.exited, Bun.sleep(20_000).then(() => "still waiting on a FIFO nobody can open")]);
    expect(code).toBe(1);
    // It waited for the path to come back before giving up, and said so once.
    expect(count(serve.stderr, "the FIFO is gone; waiting for it to be made again")).toBe(1);
    expect(failureLine(serve.stderr)).toBe(`audio-agent: --source ${t.fifo}: no such file (ENOENT)`);
    expect(existsSync(t.sock)).toBe(false);
  }, 60_000);
});

describe("input send --source FIFO --format ogg", () => {
  test("the input channel carries on across encoder runs too", async () => {
    const t = setup();
    const streams = [audioPackets(t.first), audioPackets(t.second)];
    const total = streams[0]!.length + streams[1]!.length;
    const sock = t.path("i.sock");
    const sink = t.path("in.wire");
    const server = spawnAgent(["input", "serve", "--socket", sock, "--sink", sink, "--metrics", "0"]);
    const serverBase = await metricsUrl(server);
    // With the Config from the flags nothing waits for the first writer: /metrics is up before it.
    const send = spawnAgent(["input", "send", "--source", t.fifo, "--format", "ogg", "--socket", sock, "--metrics", "0", "--write-deadline-ms", "0", "--sample-rate", "48000", "--channels", "2", "--frame-size", "960"]);
    const base = await metricsUrl(send);
    expect((await healthz(base)).frames).toBe(0);
    await server.waitForStderr("connected");

    expect(await writeIntoFifo(t.fifo, t.first)).toBe(0);
    await until(() => count(send.stderr, "source: writer closed the stream") === 1, "the first writer's end");
    expect(await writeIntoFifo(t.fifo, t.second)).toBe(0);
    await until(() => count(send.stderr, "source: writer closed the stream") === 2, "the second writer's end");
    const deadline = Date.now() + 20_000;
    while ((await healthz(serverBase)).frames !== total && Date.now() < deadline) await Bun.sleep(20);
    expect(send.hasExited).toBe(false);
    send.kill("SIGTERM");
    expect(await send.exited, send.stderr).toBe(0);
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);
    const wire = parseWire(new Uint8Array(readFileSync(sink)), INPUT_MAGIC);
    expect(wire.error).toBeUndefined();
    const got = wire.messages.filter((m) => m.type === MessageType.OpusFrame).map((m) => m.payload);
    const expected = [...streams[0]!, ...streams[1]!];
    expect(got.length).toBe(expected.length);
    expect(got.findIndex((frame, i) => !sameBytes(frame, expected[i]!))).toBe(-1);
  }, 60_000);
});

describe("input send --source FIFO --format ogg, its Config from the first writer", () => {
  test("/metrics and /healthz are up while it waits for the first writer; SIGTERM then: exit 0, and the stopped line accounts for no frames", async () => {
    const t = setup();
    const send = spawnAgent(["input", "send", "--source", t.fifo, "--format", "ogg", "--socket", t.path("i.sock"), "--metrics", "0"]);
    const base = await metricsUrl(send);
    await send.waitForStderr("source: waiting for a writer");
    expect(await healthz(base)).toMatchObject({ role: "input send", frames: 0, connected: false });
    expect(value(await scrape(base), "jetkvm_microphone_frames_sent_total")).toBe(0);
    expect(send.stderr).not.toContain("config changed");
    send.kill("SIGTERM");
    expect(await send.exited, send.stderr).toBe(0);
    expect(send.stderr).toContain("stopped signal=SIGTERM");
    expect(expectAccountedLine(send.stderr, "input-client")).toEqual({ submitted: 0, delivered: 0, dropped: 0, byReason: {} });
  }, 30_000);
});

describe("FifoSource", () => {
  test("a writer's malformed or cut-short stream is discarded whole (the writer is not left blocked); the next stream follows", async () => {
    const t = setup();
    // More garbage than a pipe holds (64 KiB): the writer finishes only if it is read to its end.
    writeFileSync(t.path("garbage"), new Uint8Array(300_000).fill(0x41));
    const whole = new Uint8Array(readFileSync(t.second));
    writeFileSync(t.path("cut.opus"), whole.subarray(0, whole.length - 100));
    const { frames, reports } = await readWriters(t, [t.path("garbage"), t.path("cut.opus"), t.first]);

    const warnings = reports.filter((r) => r.startsWith("warn"));
    expect(warnings.length).toBe(2);
    expect(warnings[0]).toContain('no Ogg capture pattern \\"OggS\\" at byte 0');
    expect(warnings[1]).toMatch(/truncated: input ends/);
    // The faults name the FIFO's path, not the descriptor it was read through.
    expect(warnings.join("\n")).not.toContain("/proc/self/fd");
    // The cut stream's whole packets went out before its fault; then all of the next stream.
    const expected = audioPackets(t.first);
    const cut = audioPackets(t.second);
    const tail = frames.slice(frames.length - expected.length);
    expect(tail.findIndex((frame, i) => !sameBytes(frame, expected[i]!))).toBe(-1);
    const head = frames.slice(0, frames.length - expected.length);
    expect(head.length).toBeGreaterThan(0);
    expect(head.findIndex((frame, i) => !sameBytes(frame, cut[i]!))).toBe(-1);
  }, 60_000);

  test("a writer whose Opus has more than 2 channels (mapping family 1) is refused like any bad stream, naming it; the next writer follows", async () => {
    const t = setup();
    const six = encodeWith(t.dir, "six", ["--max-delay", "20"], { channels: 6, samples: 48000 });
    const { frames, reports } = await readWriters(t, [six, t.first]);

    const warnings = reports.filter((r) => r.startsWith("warn"));
    expect(warnings.length).toBe(1);
    expect(warnings[0]).toContain("stream failed; discarding the rest of it");
    expect(warnings[0]).toContain("OpusHead channel mapping family 1 with 6 channels cannot be carried: allowed is one Opus stream of 1 or 2 channels (family 0) at byte 28");
    const expected = audioPackets(t.first);
    expect(frames.length).toBe(expected.length);
    expect(frames.findIndex((frame, i) => !sameBytes(frame, expected[i]!))).toBe(-1);
  }, 60_000);

  // A writer already waiting for a reader is woken by the source's open: it may write and leave
  // before the stream's own descriptor is opened, which must still see its end.
  test("a writer that was there first, and writes and leaves at once: its stream is read to its end", async () => {
    const t = setup();
    // A thread of this process, so that it writes within microseconds of its open's return: blocked in
    // its open (no reader yet), then the whole file (less than a pipe holds) at once, and closed.
    const code = t.path("writer.js");
    writeFileSync(code, `const fs = require("node:fs"); const fd = fs.openSync(${JSON.stringify(t.fifo)}, "w"); fs.writeSync(fd, fs.readFileSync(${JSON.stringify(t.first)})); fs.closeSync(fd); postMessage("done");`);
    const thread = new Worker(code);
    defer(() => thread.terminate());
    const writer = new Promise((resolve) => (thread.onmessage = (e) => resolve(e.data)));
    await Bun.sleep(200);
    const { source, reports, reading, frames } = await countingReader(t);
    expect(await writer).toBe("done");
    await until(() => reports.includes("info writer closed the stream"), "the writer's end");
    expect(frames()).toBe(audioPackets(t.first).length);
    await source.close();
    await reading;
  });

  test("lenient: what each writer's stream left out adds up across writers, from 0 before the first", async () => {
    const t = setup();
    // Each encoder run with one page damaged (its last byte flipped: a bad CRC), skipped and counted.
    const damaged = (file: string, name: string) => {
      const bytes = new Uint8Array(readFileSync(file));
      const page = pagesOf(bytes)[3]!;
      bytes[page.offset + page.size - 1]! ^= 0xff;
      writeFileSync(t.path(name), bytes);
      return t.path(name);
    };
    const reports: string[] = [];
    const source = await openSource("ogg", t.fifo, { lenient: true, report: (level, message) => reports.push(`${level} ${message}`) });
    defer(() => source.close());
    expect(source.counts).toMatchObject({ skipped_pages: 0, missing_pages: 0 });
    const reading = (async () => {
      for (;;) if (!source.next() && !(await source.fill())) return;
    })();
    const files = [damaged(t.first, "a.opus"), damaged(t.second, "b.opus")];
    for (const [i, file] of files.entries()) {
      expect(await writeIntoFifo(t.fifo, file)).toBe(0);
      await until(() => reports.filter((r) => r === "info writer closed the stream").length === i + 1, `writer ${i + 1}'s end`);
      expect(source.counts).toMatchObject({ skipped_pages: i + 1, missing_pages: 0 });
    }
    await source.close();
    await reading;
  }, 60_000);

  test("the same FIFO still at its path while it waits for a writer is kept: no look at the path tells it replaced, and the writer's stream is read whole", async () => {
    const t = setup();
    const { source, reports, reading, frames } = await countingReader(t);
    await until(() => reports.includes("info waiting for a writer"), "the wait for a writer");
    // Long enough for the path to be looked at more than once, the FIFO there unchanged.
    await Bun.sleep(2 * PATH_CHECK_WAIT_MS);
    expect(reports).toEqual(["info waiting for a writer"]);
    expect(await writeIntoFifo(t.fifo, t.first)).toBe(0);
    await until(() => reports.includes("info writer closed the stream"), "the writer's end");
    expect(frames()).toBe(audioPackets(t.first).length);
    expect(reports.filter((r) => r.startsWith("warn"))).toEqual([]);
    await source.close();
    await reading;
  });

  test("closed while waiting for a writer: fill resolves false, and no reader is left on the FIFO", async () => {
    const t = setup();
    const source = await openSource("wire", t.fifo, { lenient: false, report: () => {} });
    const filling = source.fill();
    await Bun.sleep(50);
    await source.close();
    expect(await filling).toBe(false);
    expect(await drain(source)).toEqual({ frames: [] });
    // A writer finds no reader left behind (ENXIO), so it cannot be swallowed by a closed source.
    expect(() => closeSync(openSync(t.fifo, constants.O_WRONLY | constants.O_NONBLOCK))).toThrow(/ENXIO/);
  });

  test("closed while waiting for its path to be made again: fill resolves false, with no error", async () => {
    const t = setup();
    const reports: string[] = [];
    const source = await openSource("wire", t.fifo, { lenient: false, report: (level, message) => reports.push(`${level} ${message}`) });
    // As a pump fills: letting go of the old FIFO ends one fill, the next opens the path again.
    const filling = (async () => {
      while (await source.fill());
      return "ended";
    })();
    await until(() => reports.includes("info waiting for a writer"), "the wait for a writer");
    unlinkSync(t.fifo);
    await until(() => reports.includes("warn the FIFO is gone; waiting for it to be made again"), "the wait for the path");
    await source.close();
    expect(await filling).toBe("ended");
    expect(reports.filter((r) => r.includes("is gone")).length).toBe(1);
  });
});
