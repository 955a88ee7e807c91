/**
 * A FIFO sink, as a live player sees it: the agent writes the named pipe
 * without ever blocking, whether or not a player has it open, however slowly
 * the player reads, and however often it comes and goes. Real FIFOs (mkfifo)
 * and real reader processes (sh, cat, head); messages built as the input
 * channel's parser hands them over.
 */
import { describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { closeSync, constants, existsSync, openSync, readdirSync, readFileSync, readSync, statSync, unlinkSync, writeFileSync, writeSync } from "node:fs";
import { FifoSink, KEPT_BYTES, READER_LOOK_MS, type PipeSizer } from "../../src/media/fifo-sink.ts";
import { RETRY_MS } from "../../src/media/byte-sink.ts";
import { OggSink } from "../../src/media/ogg-sink.ts";
import { WireSink } from "../../src/media/wire-sink.ts";
import { PageFlag } from "../../src/media/ogg-page.ts";
import { openSink, type MediaFormat } from "../../src/media/open.ts";
import { parseOpusHead } from "../../src/media/opus-head.ts";
import { opusPacketSamples } from "../../src/media/opus-toc.ts";
import { encodeConfigPayload, encodeMessage, FrameParser, INPUT_MAGIC, MessageType } from "../../src/protocol/index.ts";
import { getPipeSize, receiveQueueBytes, sizedPipe } from "../../src/transport/socket-options.ts";
import { sameBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { HELD_READER, makeFifo, releaseReader } from "../support/fifo.ts";
import { audioPacketsOf, linksOf, packetsOf, pagesOf, trimmedWhole, type PageInfo } from "../support/ogg.ts";
import { expectOggzValid, OPUSINFO_CLEAN, opusinfo, TONE } from "../support/opus-fixtures.ts";
import { payloadOfSize } from "../support/payloads.ts";
import { runAgent, spawnAgent, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { parseWire, wholeWireMessages, writeWireFile } from "../support/wire.ts";

const defer = useCleanup();

/** Real Opus packets (stereo, 20 ms, ~160 bytes): what an encoder hands the channel. */
const TONE_PACKETS = packetsOf(new Uint8Array(readFileSync(TONE))).slice(2);
const tonePacket = (i: number) => TONE_PACKETS[i % TONE_PACKETS.length]!;

/** Config of a mono 16 kHz stream, 20 ms frames. */
const MONO_16K = encodeConfigPayload({ sampleRate: 16000, channels: 1, frameSize: 320 });

function setup() {
  const t = socketDir(defer, "aa-fsink-");
  return { ...t, fifo: makeFifo(t.path("play")) };
}

/** A FIFO sink through openSink, as `input serve --sink FIFO` opens it; what it reports, as lines. */
function openFifoSink(format: MediaFormat, path: string, pageMs = 100, sizePipe?: PipeSizer) {
  const lines: string[] = [];
  const sink = openSink(format, path, {
    preSkip: 312,
    pageMs,
    fifoReaders: (level, message, fields) => lines.push(`${level} ${message}${fields ? ` ${JSON.stringify(fields)}` : ""}`),
    sizePipe,
  });
  expect(sink).toBeInstanceOf(FifoSink);
  return { sink: sink as FifoSink, lines };
}

/**
 * Hands the sink a real ParsedMessage, as the input channel's parser produces
 * it: one parser for all, whose message (and the bytes it views) the next
 * message reuses, so a sink that keeps one must copy it.
 */
const parser = new FrameParser(INPUT_MAGIC);
function send(sink: FifoSink, type: MessageType, payload: Uint8Array = new Uint8Array(0), timestampNs = 1n): void {
  parser.push(encodeMessage(INPUT_MAGIC, type, payload, timestampNs));
  sink.write(parser.next()!);
}

/** A reader process: `sh -c SCRIPT FIFO OUT`; killed at the end of the test if still there. */
function reader(script: string, fifo: string, out: string): Subprocess {
  const proc = Bun.spawn(["sh", "-c", script, fifo, out], { stdin: "ignore", stdout: "ignore", stderr: "inherit" });
  defer(async () => {
    proc.kill("SIGKILL");
    await proc.exited;
  });
  return proc;
}

/**
 * The test as a player that stalls: its own read end of the FIFO, held open
 * and read only by readNow(), which takes all the pipe holds at once, with
 * no process to schedule first (one slow to come back outstays LINGER_MS),
 * until it leaves (closes it); its pipe's size and what waits in it.
 */
function heldPlayer(fifo: string) {
  const fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  let open = true;
  // Closed once only: a number closed twice may by then be another descriptor's.
  const leave = () => {
    if (open) closeSync(fd);
    open = false;
  };
  defer(leave);
  const size = () => {
    const got = getPipeSize(fd);
    if (!got.ok) throw new Error(got.message);
    return got.bytes;
  };
  const waiting = () => {
    const got = receiveQueueBytes(fd);
    if (!got.ok) throw new Error(got.message);
    return got.bytes;
  };
  const chunks: Uint8Array[] = [];
  const chunk = new Uint8Array(65536);
  /** Reads what the pipe holds; whether the writer has closed it (end of file). */
  const readNow = (): boolean => {
    for (;;) {
      let n: number;
      try {
        n = readSync(fd, chunk);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === "EAGAIN") return false;
        throw e;
      }
      if (n === 0) return true;
      chunks.push(chunk.slice(0, n));
    }
  };
  return { size, waiting, leave, readNow, heard: () => new Uint8Array(Buffer.concat(chunks)) };
}

/** Reads until the sink has nothing more waiting for the reader: its pipe empty, and nothing more come after RETRY_MS and more. */
async function takeAllWaiting(player: ReturnType<typeof heldPlayer>): Promise<void> {
  let heard = -1;
  await until(
    () => {
      player.readNow();
      const now = player.heard().length;
      const done = now === heard && player.waiting() === 0;
      heard = now;
      return done;
    },
    "the reader to take what waited",
    15_000,
    5 * RETRY_MS,
  );
}

/** Holds the FIFO open and reads nothing for `seconds`, then reads it to its end into OUT. */
const STALLED = (seconds: number) => `exec 3<"$0"; sleep ${seconds}; cat <&3 > "$1"`;
/** Reads the FIFO to its end into OUT. */
const CAT = `exec cat "$0" > "$1"`;

const count = (lines: string[], part: string) => lines.filter((l) => l.includes(part)).length;
const OPENED = "sink FIFO opened by a reader";
const GONE = "sink FIFO's reader has gone";
const sizeOf = (path: string) => (existsSync(path) ? statSync(path).size : 0);
const read = (path: string) => new Uint8Array(readFileSync(path));

/**
 * Writes a frame every 10 ms or so (as a live channel does) until `done`: the
 * sink looks for a reader only when it is written to.
 */
async function writeUntil(done: () => boolean, what: string, frame: () => void): Promise<void> {
  await until(
    () => {
      if (done()) return true;
      frame();
      return done();
    },
    what,
    15_000,
    10,
  );
}

/** Checks that `bytes` is one whole Ogg Opus stream as a FifoSink writes it for a reader; returns its pages. */
function expectWholeStream(bytes: Uint8Array): PageInfo[] {
  const pages = pagesOf(bytes);
  expect(pages.length).toBeGreaterThanOrEqual(3);
  // Whole pages only: together they are every byte the reader got.
  expect(pages.reduce((n, p) => n + p.size, 0)).toBe(bytes.length);
  expect(pages.every((p) => p.crcValid)).toBe(true);
  expect(new Set(pages.map((p) => p.serial)).size).toBe(1);
  const packets = packetsOf(bytes);
  expect(pages[0]!.flags).toBe(PageFlag.BeginOfStream);
  expect(pages[0]!.granule).toBe(0);
  expect(new TextDecoder().decode(packets[0]!.subarray(0, 8))).toBe("OpusHead");
  expect(pages[1]!.flags).toBe(0);
  expect(new TextDecoder().decode(packets[1]!.subarray(0, 8))).toBe("OpusTags");
  expect(pages.at(-1)!.flags & PageFlag.EndOfStream).toBe(PageFlag.EndOfStream);
  expect(pages.slice(0, -1).every((p) => (p.flags & PageFlag.EndOfStream) === 0)).toBe(true);
  return pages;
}

describe("FifoSink with no reader", () => {
  test("every OpusFrame is counted sink_no_reader, nothing blocks, nothing is created: the path stays a FIFO", async () => {
    const t = setup();
    const { sink, lines } = openFifoSink("ogg", t.fifo);
    send(sink, MessageType.Config, MONO_16K);
    for (let i = 0; i < 500; i++) {
      send(sink, MessageType.OpusFrame, tonePacket(i));
      if (i % 10 === 0) send(sink, MessageType.Heartbeat);
      if (i % 5 === 4) sink.flush();
    }
    // Some more, each after READER_LOOK_MS: each looks for a reader again, and finds none.
    for (let i = 0; i < 3; i++) {
      await Bun.sleep(READER_LOOK_MS + 20);
      send(sink, MessageType.Heartbeat);
      for (let j = 0; j < 5; j++) send(sink, MessageType.OpusFrame, tonePacket(j));
      sink.flush();
    }
    sink.flush();
    await sink.close();
    // Nothing after close is counted (nor written anywhere).
    send(sink, MessageType.OpusFrame, tonePacket(0));
    // Every reason an Ogg FIFO sink counts is named before its first reader, at 0 if none applied.
    expect(sink.dropped).toEqual({ sink_no_reader: 515, sink_open_failed: 0, sink_reader_slow: 0, sink_invalid_packet: 0 });
    expect(sink.readers).toBe(0);
    expect(lines).toEqual([]);
    expect(statSync(t.fifo).isFIFO()).toBe(true);
    expect(readdirSync(t.dir)).toEqual(["play"]);
  });
});

/** The first packet of an Ogg stream (one page, one packet: an OpusHead) and its serial, read from the bytes alone: a stream cut short is fine. */
function firstPage(bytes: Uint8Array): { packet: Uint8Array; serial: number; flags: number } {
  const segments = bytes[26]!;
  const size = Array.from(bytes.subarray(27, 27 + segments)).reduce((a, b) => a + b, 0);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  expect(new TextDecoder().decode(bytes.subarray(0, 4))).toBe("OggS");
  return { packet: bytes.subarray(27 + segments, 27 + segments + size), serial: view.getUint32(14, true), flags: bytes[5]! };
}

/** The packets that end on each page (lacing values under 255 end one). */
const packetsEnding = (page: PageInfo) => page.table.filter((v) => v < 255).length;

/**
 * A session whose reader holds the FIFO open and reads nothing for 2 s, then
 * reads to its end: 10 frames before any reader, frames until the sink finds
 * it, 3000 frames while it stalls (far more than a pipe holds), 100 once it
 * has emptied the pipe (~17 KB: they fit), then close. Frames are real Opus
 * packets; the sink is flushed a page (`pageMs`) apart, as the SinkFlusher does.
 */
async function stalledOggSession(pageMs = 100) {
  const t = setup();
  const out = t.path("heard.opus");
  const { sink, lines } = openFifoSink("ogg", t.fifo, pageMs);
  let written = 0;
  // Flushed a page's worth of 20 ms frames apart, as the SinkFlusher does.
  const frame = () => {
    send(sink, MessageType.OpusFrame, tonePacket(written++));
    if (written % (pageMs / 20) === 0) sink.flush();
  };
  for (let i = 0; i < 10; i++) frame();
  const player = reader(STALLED(2), t.fifo, out);
  await writeUntil(() => sink.readers === 1, "the reader", frame);
  // Every frame before the one that found the reader had nobody to go to.
  const firstHeard = written - 1;
  expect(sink.dropped).toEqual({ sink_no_reader: firstHeard, sink_open_failed: 0, sink_reader_slow: 0, sink_invalid_packet: 0 });
  for (let i = 0; i < 3000; i++) frame();
  const slowWhileStalled = sink.dropped.sink_reader_slow;
  // The reader's first read empties the pipe (it takes all there is).
  await until(() => sizeOf(out) > 0, "the reader to read");
  for (let i = 0; i < 100; i++) frame();
  await sink.close();
  expect(await player.exited).toBe(0);
  return { out, bytes: read(out), sink, lines, written, firstHeard, slowWhileStalled };
}

/**
 * A wire sink whose one reader holds the pipe full (HELD_READER, until
 * releaseReader(out)): after `before` (a Config, say), frames of `size`
 * payload bytes carrying timestamps 1, 2, ... until the reader comes, then
 * `n` more, some of which the full pipe has dropped.
 */
async function heldWireReader(size: number, n: number, before: (sink: FifoSink) => void = () => {}) {
  const t = setup();
  const out = t.path("heard.wire");
  const { sink } = openFifoSink("wire", t.fifo);
  const player = reader(HELD_READER, t.fifo, out);
  let written = 0;
  const frame = () => send(sink, MessageType.OpusFrame, payloadOfSize(written, size), BigInt(++written));
  before(sink);
  await writeUntil(() => sink.readers === 1, "the reader", frame);
  for (let i = 0; i < n; i++) frame();
  expect(sink.dropped.sink_reader_slow).toBeGreaterThan(0);
  return { out, sink, player, frame, written: () => written };
}

describe("FifoSink, Ogg", () => {
  test("a reader that stalls, then reads: whole pages with valid CRCs from OpusHead to EOS, every frame accounted for", async () => {
    const s = await stalledOggSession();
    expect(s.slowWhileStalled).toBeGreaterThan(0);
    const pages = expectWholeStream(s.bytes);
    const heard = audioPacketsOf(s.bytes);
    expect(heard.length).toBeGreaterThan(0);
    expect(pages.slice(2).reduce((n, p) => n + packetsEnding(p), 0)).toBe(heard.length + trimmedWhole(s.bytes));
    // Every OpusFrame written is heard or counted dropped, once.
    expect(heard.length + s.sink.dropped.sink_reader_slow + s.sink.dropped.sink_no_reader).toBe(s.written);
    // No drop once the reader reads again.
    expect(s.sink.dropped.sink_reader_slow).toBe(s.slowWhileStalled);
    expect(parseOpusHead(packetsOf(s.bytes)[0]!)).toMatchObject({ channels: 2, preSkip: 312, inputSampleRate: 48000 });
    // The reader hears the frames from the one that found it on, in order; and the last 100 all.
    expect(sameBytes(heard[0]!, tonePacket(s.firstHeard))).toBe(true);
    const tail = heard.slice(-100);
    expect(tail.findIndex((p, i) => !sameBytes(p, tonePacket(s.written - 100 + i)))).toBe(-1);
    // The granule only goes forward.
    const granules = pages.slice(2, -1).map((p) => p.granule);
    expect(granules.every((g, i) => i === 0 || g > granules[i - 1]!)).toBe(true);
    expect(s.lines).toEqual([`info ${OPENED} ${JSON.stringify({ sink: s.sink.name, reader: 1 })}`]);

    // opusinfo reads it to its end as one Opus stream.
    const info = opusinfo(s.out);
    expect(info.stdout).toContain("Encoded with audio-agent");
    expect(info.stdout).toContain("Channels: 2");
    expect(info.stdout).toContain("Logical stream 1 ended");
    expect(info.stdout).not.toContain("ERROR");
  }, 20_000);

  // Pages dropped for a reader that fell behind leave no hole: the stream goes on as if they had
  // never been (page numbers and granule), so opusinfo and players take it as one clean stream.
  test("a reader that stalls, then reads: its stream has no gap in page numbers or granule, and opusinfo accepts it (exit 0)", async () => {
    const s = await stalledOggSession();
    expect(s.slowWhileStalled).toBeGreaterThan(0);
    const pages = expectWholeStream(s.bytes);
    expect(pages.map((p) => p.sequence)).toEqual(pages.map((_, i) => i));
    // Each audio page's granule is the samples (960 per packet) the reader got up to its last packet.
    let decoded = 0;
    for (const page of pages.slice(2, -1)) {
      decoded += 960 * packetsEnding(page);
      expect(page.granule).toBe(decoded);
    }
    const info = opusinfo(s.out);
    expect(info.stdout).not.toContain("WARNING");
    expect(info.verdict.code).toBe(0);
  }, 20_000);

  test("pages larger than the pipe writes whole (2 s of audio a page): each begun page is finished intact, though the page writer reuses its buffer for the next", async () => {
    const s = await stalledOggSession(2000);
    expect(s.slowWhileStalled).toBeGreaterThan(0);
    // Pages of 100 packets, over 4 KiB: the full pipe took some only in part.
    const pages = expectWholeStream(s.bytes);
    expect(pages.some((p) => p.size > 4096)).toBe(true);
    expect(pages.map((p) => p.sequence)).toEqual(pages.map((_, i) => i));
    const heard = audioPacketsOf(s.bytes);
    expect(heard.length + s.sink.dropped.sink_reader_slow + s.sink.dropped.sink_no_reader).toBe(s.written);
    expect(opusinfo(s.out).verdict.code).toBe(0);
  }, 20_000);

  test("closed while the reader stalls with the pipe full: the stream's end waits for it, and a reader back within LINGER_MS gets every page to the end-of-stream one", async () => {
    const t = setup();
    const out = t.path("heard.opus");
    const { sink } = openFifoSink("ogg", t.fifo);
    const player = heldPlayer(t.fifo);
    let written = 0;
    const frame = () => {
      send(sink, MessageType.OpusFrame, tonePacket(written++));
      if (written % 5 === 0) sink.flush();
    };
    await writeUntil(() => sink.readers === 1, "the reader", frame);
    const firstHeard = written - 1;
    // Far more than the pipe holds: it is full, and pages are being dropped.
    for (let i = 0; i < 3000; i++) frame();
    // Up to a flush, wherever the reader came in (how many frames that took depends on timing): the
    // 3 frames after it are then the only ones on the page still being filled, which close() writes
    // with the end-of-stream flag.
    while (written % 5 !== 0) frame();
    for (let i = 0; i < 3; i++) frame();
    const slow = sink.dropped.sink_reader_slow;
    expect(slow).toBeGreaterThan(0);
    const closing = sink.close();
    expect(Bun.peek.status(closing)).toBe("pending");
    // Back at once: what the pipe holds is read, leaving room for the end of the stream.
    expect(player.readNow()).toBe(false);
    await closing;
    expect(player.readNow()).toBe(true);

    const bytes = player.heard();
    writeFileSync(out, bytes);
    const pages = expectWholeStream(bytes);
    expect(pages.map((p) => p.sequence)).toEqual(pages.map((_, i) => i));
    const heard = audioPacketsOf(bytes);
    // The last page's frames were not dropped: they waited for the reader, as the end of the stream.
    expect(sink.dropped).toEqual({ sink_no_reader: firstHeard, sink_open_failed: 0, sink_reader_slow: slow, sink_invalid_packet: 0 });
    expect(heard.length + slow + firstHeard).toBe(written);
    expect(heard.slice(-3).findIndex((p, i) => !sameBytes(p, tonePacket(written - 3 + i)))).toBe(-1);
    expect(opusinfo(out).verdict.code).toBe(0);
  }, 20_000);

  test("a Config with other audio while the reader's pipe is full: the reader still gets the first stream's end-of-stream page and the next one's OpusHead and OpusTags, and opusinfo reads both", async () => {
    const t = setup();
    const out = t.path("heard.opus");
    // Pages of 2 s (over 4 KiB): the full pipe takes one in part, and what comes after it waits or is dropped.
    const { sink } = openFifoSink("ogg", t.fifo, 2000);
    // The session's Config comes before any reader: a reader there already would be found by it, not by a frame.
    send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 }));
    const player = reader(HELD_READER, t.fifo, out);
    let written = 0;
    const frame = () => {
      send(sink, MessageType.OpusFrame, tonePacket(written++));
      if (written % 100 === 0) sink.flush();
    };
    await writeUntil(() => sink.readers === 1, "the reader", frame);
    const firstHeard = written - 1;
    for (let i = 0; i < 1000; i++) frame();
    expect(sink.dropped.sink_reader_slow).toBeGreaterThan(0);
    // The session's audio changes while the reader takes nothing: the stream ends, the next begins.
    send(sink, MessageType.Config, MONO_16K);
    for (let i = 0; i < 300; i++) frame();
    releaseReader(out);
    await until(() => sizeOf(out) > 0, "the reader to read");
    for (let i = 0; i < 50; i++) frame();
    await sink.close();
    expect(await player.exited).toBe(0);

    const bytes = read(out);
    const links = linksOf(bytes);
    expect(links.length).toBe(2);
    // Each link whole: BOS OpusHead, OpusTags, audio, end-of-stream page; page numbers without a gap.
    const heads = links.map((link) => {
      const pages = expectWholeStream(link);
      expect(pages.map((p) => p.sequence)).toEqual(pages.map((_, i) => i));
      return parseOpusHead(packetsOf(link)[0]!);
    });
    expect(heads.map((h) => [h.channels, h.inputSampleRate])).toEqual([[2, 48000], [1, 16000]]);
    const heard = links.reduce((n, link) => n + audioPacketsOf(link).length, 0);
    expect(heard + sink.dropped.sink_reader_slow! + sink.dropped.sink_no_reader!).toBe(written);
    expect(sink.dropped.sink_no_reader).toBe(firstHeard);
    const info = opusinfo(out);
    expect(info.verdict).toEqual(OPUSINFO_CLEAN);
    expect(info.stdout).toContain("Logical stream 2 ended");
  }, 20_000);

  test(`a session whose audio changes again and again while the reader takes nothing: past its pipe, at most ${KEPT_BYTES} bytes of stream ends and heads wait for it, the rest is dropped and counted; the reader's chain stays valid, and once it reads its stream begins again`, async () => {
    const t = setup();
    const { sink } = openFifoSink("ogg", t.fifo);
    const player = heldPlayer(t.fifo);
    let written = 0;
    const frame = () => send(sink, MessageType.OpusFrame, tonePacket(written++));
    await writeUntil(() => sink.readers === 1, "the reader", frame);
    const firstHeard = written - 1;
    const stereo = encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 });
    // Each Config ends a stream (its end-of-stream page holds the frame before) and the next frame begins one.
    for (let i = 0; i < 3000; i++) {
      send(sink, MessageType.Config, i % 2 === 0 ? MONO_16K : stereo);
      frame();
    }
    expect(sink.dropped.sink_reader_slow).toBeGreaterThan(0);
    // What the pipe held, and what waited beyond it: heads up to the bound, the end of the last stream begun.
    await takeAllWaiting(player);
    const waited = player.heard().length;
    expect(waited).toBeLessThanOrEqual(player.size() + KEPT_BYTES + 4096);
    // The audio stays as it is now: the reader, reading, hears it again.
    const before = written;
    for (let i = 0; i < 50; i++) {
      frame();
      if (i % 5 === 4) sink.flush();
      player.readNow();
    }
    const closing = sink.close();
    await until(() => player.readNow(), "the reader to read to the end");
    await closing;

    const out = t.path("heard.opus");
    writeFileSync(out, player.heard());
    expect(opusinfo(out).verdict).toEqual(OPUSINFO_CLEAN);
    expectOggzValid(out);
    const heard = linksOf(player.heard()).flatMap((link) => audioPacketsOf(link));
    expect(heard.length + sink.dropped.sink_reader_slow! + sink.dropped.sink_no_reader!).toBe(written);
    expect(sink.dropped.sink_no_reader).toBe(firstHeard);
    // Every frame after the changes stopped reached it, as the last of its stream.
    expect(heard.slice(-(written - before)).map((p, k) => sameBytes(p, tonePacket(before + k)))).toEqual(Array(written - before).fill(true));
  }, 20_000);

  test("OpusFrames no page can place (empty, or an impossible TOC) are counted sink_invalid_packet, those of readers gone too", async () => {
    const t = setup();
    const first = t.path("r1.opus");
    const second = t.path("r2.opus");
    const { sink, lines } = openFifoSink("ogg", t.fifo);
    let written = 0;
    const frame = () => {
      // Every 10th frame empty: nothing to decode, no duration.
      send(sink, MessageType.OpusFrame, written % 10 === 9 ? new Uint8Array(0) : tonePacket(written));
      written++;
      if (written % 5 === 0) sink.flush();
    };
    const r1 = reader(`exec head -c 3000 "$0" > "$1"`, t.fifo, first);
    await writeUntil(() => sink.readers === 1, "the first reader", frame);
    const r1Found = written - 1;
    await writeUntil(() => count(lines, GONE) === 1, "the first reader to leave", frame);
    // Frames from the one that found reader 1 up to here went to its stream; then none until reader 2.
    const r1Gone = written;
    expect(await r1.exited).toBe(0);
    const r2 = reader(CAT, t.fifo, second);
    await writeUntil(() => sink.readers === 2, "the second reader", frame);
    const r2Found = written - 1;
    for (let i = 0; i < 40; i++) frame();
    await sink.close();
    expect(await r2.exited).toBe(0);

    const invalidIn = (from: number, to: number) => Array.from({ length: to - from }, (_, k) => from + k).filter((i) => i % 10 === 9).length;
    expect(invalidIn(r2Found, written)).toBeGreaterThan(0);
    // Counted for both readers' streams, the one gone included.
    expect(sink.dropped.sink_invalid_packet).toBe(invalidIn(r1Found, r1Gone) + invalidIn(r2Found, written));
    // Reader 2 heard every other frame from the one that found it.
    const heard = audioPacketsOf(read(second));
    expect(heard.length).toBe(written - r2Found - invalidIn(r2Found, written));
    expect(heard.every((p) => p.length > 0)).toBe(true);
  }, 20_000);

  test("a reader that leaves: every frame given is heard by it or counted sink_no_reader, those on the page its stream ended with too", () => {
    const t = setup();
    const player = heldPlayer(t.fifo);
    const { sink, lines } = openFifoSink("ogg", t.fifo);
    let given = 0;
    const frame = () => send(sink, MessageType.OpusFrame, tonePacket(given++));
    // Two pages' worth (5 packets a page at 100 ms), written out and read: the pipe is empty.
    for (let i = 0; i < 7; i++) frame();
    sink.flush();
    expect(player.readNow()).toBe(false);
    // Three more wait on the page being filled; the reader leaves before it is written.
    for (let i = 0; i < 3; i++) frame();
    player.leave();
    // The next page written finds it gone; its stream then ends with the page being filled.
    while (count(lines, GONE) === 0 && given < 100) frame();
    expect(count(lines, GONE)).toBe(1);
    const heard = audioPacketsOf(player.heard()).length;
    expect(heard).toBe(7);
    expect(sink.dropped).toMatchObject({ sink_no_reader: given - heard, sink_reader_slow: 0 });
  });

  test("a reader's descriptor that fails otherwise than by the reader leaving (ENOSPC): raised once, naming it, and every frame given is counted", () => {
    for (const format of ["ogg", "wire"] as const) {
      const fd = openSync("/dev/full", constants.O_WRONLY | constants.O_NONBLOCK);
      defer(() => closeSync(fd));
      const sink = new FifoSink("full", (pipe) => (format === "ogg" ? OggSink.over(pipe) : WireSink.over(pipe)), () => {}, { fd });
      const errors: string[] = [];
      let given = 0;
      for (let i = 0; i < 20; i++) {
        try {
          send(sink, MessageType.OpusFrame, tonePacket(given++));
          if (i % 5 === 4) sink.flush();
        } catch (e) {
          errors.push((e as Error).message);
        }
      }
      expect({ format, errors }).toEqual({ format, errors: ["cannot write to sink full: ENOSPC"] });
      expect({ format, dropped: sink.dropped.sink_no_reader }).toEqual({ format, dropped: given });
    }
  });

  test("a reader's descriptor that fails only as the stream ends (an Ogg stream with no audio writes its first bytes then): close rejects with the failure", async () => {
    const fd = openSync("/dev/full", constants.O_WRONLY | constants.O_NONBLOCK);
    defer(() => closeSync(fd));
    const sink = new FifoSink("full", (pipe) => OggSink.over(pipe), () => {}, { fd });
    send(sink, MessageType.Heartbeat);
    await expect(sink.close()).rejects.toThrow("cannot write to sink full: ENOSPC");
  });

  test("readers one after another: the sink notices one leave (EPIPE); the next gets a stream of its own (OpusHead from the session's Config, granule from 0, a new serial)", async () => {
    const t = setup();
    const first = t.path("r1.opus");
    const second = t.path("r2.opus");
    const { sink, lines } = openFifoSink("ogg", t.fifo);
    let written = 0;
    const frame = () => {
      send(sink, MessageType.OpusFrame, tonePacket(written++));
      if (written % 5 === 0) sink.flush();
    };
    // The session's Config comes before any reader.
    send(sink, MessageType.Config, MONO_16K);
    send(sink, MessageType.Heartbeat);
    // Reader 1 takes 2000 bytes and leaves; the sink finds out on its next write.
    const r1 = reader(`exec head -c 2000 "$0" > "$1"`, t.fifo, first);
    await writeUntil(() => count(lines, GONE) === 1, "the first reader to leave", frame);
    expect(await r1.exited).toBe(0);
    expect(sink.readers).toBe(1);

    const r2 = reader(CAT, t.fifo, second);
    await writeUntil(() => sink.readers === 2, "the second reader", frame);
    const firstHeard = written - 1;
    const dropped = { ...sink.dropped };
    // Reader 1 read all it got: what it did not get (it left, then no reader) is no reader's, none a slow one's.
    expect(dropped.sink_reader_slow).toBe(0);
    expect(dropped.sink_no_reader).toBeGreaterThan(0);
    for (let i = 0; i < 60; i++) {
      frame();
      if (i % 7 === 0) send(sink, MessageType.Heartbeat);
    }
    await sink.close();
    expect(await r2.exited).toBe(0);
    expect(sink.readers).toBe(2);
    expect(sink.dropped).toEqual(dropped);

    const one = read(first);
    expect(one.length).toBe(2000);
    const head1 = firstPage(one);
    expect(head1.flags).toBe(PageFlag.BeginOfStream);
    expect(parseOpusHead(head1.packet)).toMatchObject({ channels: 1, inputSampleRate: 16000 });

    const two = read(second);
    const pages = expectWholeStream(two);
    expect(pages[0]!.serial).not.toBe(head1.serial);
    expect(pages.map((p) => p.sequence)).toEqual(pages.map((_, i) => i));
    const packets = packetsOf(two);
    // The Config written before reader 1 came, replayed to reader 2.
    expect(parseOpusHead(packets[0]!)).toEqual({ version: 1, channels: 1, preSkip: 312, inputSampleRate: 16000, outputGain: 0, mappingFamily: 0 });
    // Granule from 0: each audio page's is the samples (960 per packet) up to its last packet.
    let decoded = 0;
    for (const page of pages.slice(2, -1)) {
      decoded += 960 * packetsEnding(page);
      expect(page.granule).toBe(decoded);
    }
    expect(pages[2]!.granule).toBeLessThanOrEqual(5 * 960);
    const last = pages.at(-1)!;
    // The end's page ends the packets on it, or (its audio flushed before) one of silence trimmed whole.
    expect(last.granule === decoded + 960 * packetsEnding(last) || (trimmedWhole(two) === 1 && last.granule === decoded)).toBe(true);
    // Every frame from the one that found reader 2, in order, nothing else.
    const heard = audioPacketsOf(two);
    expect(heard.length).toBe(written - firstHeard);
    expect(heard.findIndex((p, i) => !sameBytes(p, tonePacket(firstHeard + i)))).toBe(-1);
    expect(opusPacketSamples(heard[0]!)).toBe(960);

    expect(lines.map((l) => l.split(" {")[0])).toEqual([`info ${OPENED}`, `info ${GONE}; waiting for the next`, `info ${OPENED}`]);
  }, 20_000);
});

describe("FifoSink, wire", () => {
  test("a reader that came mid-session and stalls: the session's Config first, whole messages only, drops counted per OpusFrame", async () => {
    const t = setup();
    const out = t.path("heard.wire");
    const { sink, lines } = openFifoSink("wire", t.fifo);
    /** The payload size of each frame written; frame i carries timestamp i + 1. */
    const sizes: number[] = [];
    let heartbeats = 0;
    const frame = (size: number) => {
      const i = sizes.length;
      sizes.push(size);
      send(sink, MessageType.OpusFrame, payloadOfSize(i, size), BigInt(i + 1));
      if (i % 4 === 3) sink.flush();
    };
    // Sizes up to the largest message (4113 bytes: more than a pipe writes whole, PIPE_BUF = 4096), and Heartbeats.
    const mixed = () => {
      frame(sizes.length % 3 === 0 ? 4096 : 1 + ((sizes.length * 389) % 1500));
      if (sizes.length % 7 === 0) {
        send(sink, MessageType.Heartbeat, undefined, BigInt(sizes.length));
        heartbeats++;
      }
    };
    send(sink, MessageType.Config, MONO_16K);
    for (let i = 0; i < 20; i++) mixed();
    expect(sink.dropped).toEqual({ sink_no_reader: 20, sink_open_failed: 0, sink_reader_slow: 0 });

    const player = reader(STALLED(1.5), t.fifo, out);
    await writeUntil(() => sink.readers === 1, "the reader", () => frame(4096));
    const firstHeard = sizes.length - 1;
    // The largest messages only, at first: Linux fills the pipe up with the first part of one
    // (its header), which must be finished before anything after it goes.
    for (let i = 0; i < 30; i++) frame(4096);
    for (let i = 0; i < 1000; i++) mixed();
    const slowWhileStalled = sink.dropped.sink_reader_slow;
    expect(slowWhileStalled).toBeGreaterThan(0);
    await until(() => sizeOf(out) > 0, "the reader to read");
    // Small ones now (~20 KB with their Heartbeats): they fit in the emptied pipe.
    for (let i = 0; i < 40; i++) {
      frame(400);
      if (i % 9 === 0) {
        send(sink, MessageType.Heartbeat);
        heartbeats++;
      }
    }
    await sink.close();
    expect(await player.exited).toBe(0);

    const messages = wholeWireMessages(out, INPUT_MAGIC);
    // The Config, once, before anything else.
    expect(messages[0]!.type).toBe(MessageType.Config);
    expect(sameBytes(messages[0]!.payload, MONO_16K)).toBe(true);
    expect(messages.filter((m) => m.type === MessageType.Config).length).toBe(1);
    const frames = messages.filter((m) => m.type === MessageType.OpusFrame);
    // Heartbeats reach the reader too, and are never counted as frames (the sum below holds).
    const beats = messages.filter((m) => m.type === MessageType.Heartbeat).length;
    expect(beats).toBeGreaterThan(0);
    expect(beats).toBeLessThanOrEqual(heartbeats);
    expect(frames.length + sink.dropped.sink_reader_slow + sink.dropped.sink_no_reader).toBe(sizes.length);
    expect(sink.dropped.sink_no_reader).toBe(firstHeard);
    expect(sink.dropped.sink_reader_slow).toBe(slowWhileStalled);
    // Each frame heard is one written, whole, in order (its index is its timestamp - 1).
    const indices = frames.map((m) => Number(m.timestampNs) - 1);
    expect(indices[0]).toBe(firstHeard);
    expect(indices.every((n, k) => k === 0 || n > indices[k - 1]!)).toBe(true);
    expect(frames.findIndex((m, k) => !sameBytes(m.payload, payloadOfSize(indices[k]!, sizes[indices[k]!]!)))).toBe(-1);
    // All of the last 40, written once the reader read again.
    expect(indices.slice(-40)).toEqual(Array.from({ length: 40 }, (_, k) => sizes.length - 40 + k));
    expect(lines).toEqual([`info ${OPENED} ${JSON.stringify({ sink: t.fifo, reader: 1 })}`]);
  }, 20_000);

  test("a new Config while the pipe is full is not lost: it reaches the reader ahead of every frame sent after it", async () => {
    const { out, sink, player, frame, written } = await heldWireReader(1000, 100, (first) => send(first, MessageType.Config, MONO_16K));
    // The session's stream changes while the reader cannot take anything.
    const stereo = encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 });
    send(sink, MessageType.Config, stereo);
    const firstAfter = written();
    for (let i = 0; i < 20; i++) frame();
    releaseReader(out);
    // Frames keep coming while the reader empties the pipe; the new Config goes once there is room.
    const configsHeard = () => parseWire(read(out), INPUT_MAGIC).messages.filter((m) => m.type === MessageType.Config).length;
    await writeUntil(() => sizeOf(out) > 0 && configsHeard() === 2, "the new Config to reach the reader", frame);
    for (let i = 0; i < 20; i++) frame();
    await sink.close();
    expect(await player.exited).toBe(0);

    const messages = wholeWireMessages(out, INPUT_MAGIC);
    const configs = messages.flatMap((m, k) => (m.type === MessageType.Config ? [k] : []));
    expect(configs.length).toBe(2);
    expect(sameBytes(messages[configs[1]!]!.payload, stereo)).toBe(true);
    // No frame sent after the new Config comes before it.
    const firstLater = messages.findIndex((m) => m.type === MessageType.OpusFrame && Number(m.timestampNs) > firstAfter);
    expect(firstLater).toBeGreaterThan(configs[1]!);
    const early = messages.slice(configs[1]!).filter((m) => m.type === MessageType.OpusFrame && Number(m.timestampNs) <= firstAfter);
    expect(early.length).toBe(0);
    const frames = messages.filter((m) => m.type === MessageType.OpusFrame).length;
    expect(frames + sink.dropped.sink_reader_slow! + sink.dropped.sink_no_reader!).toBe(written());
  }, 20_000);

  test(`Configs again and again while the reader takes nothing, past the ${KEPT_BYTES} bytes that wait for it: every frame the reader gets follows the Config it was sent after`, async () => {
    const t = setup();
    const { sink } = openFifoSink("wire", t.fifo);
    const player = heldPlayer(t.fifo);
    const stereo = encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 });
    /** The Config each frame was sent after; frame i carries timestamp i + 1. */
    const after: Uint8Array[] = [];
    let config = stereo;
    const frame = () => send(sink, MessageType.OpusFrame, payloadOfSize(after.length, 100), BigInt(after.push(config)));
    send(sink, MessageType.Config, config);
    await writeUntil(() => sink.readers === 1, "the reader", frame);
    for (let i = 0; i < 5000; i++) {
      config = i % 2 === 0 ? MONO_16K : stereo;
      send(sink, MessageType.Config, config);
      frame();
    }
    expect(sink.dropped.sink_reader_slow).toBeGreaterThan(0);
    await takeAllWaiting(player);
    expect(player.heard().length).toBeLessThanOrEqual(player.size() + KEPT_BYTES + 4096);
    const before = after.length;
    for (let i = 0; i < 50; i++) {
      frame();
      player.readNow();
    }
    const closing = sink.close();
    await until(() => player.readNow(), "the reader to read to the end");
    await closing;

    const messages = parseWire(player.heard(), INPUT_MAGIC).messages;
    let last: Uint8Array | undefined;
    const wrong: number[] = [];
    for (const m of messages) {
      if (m.type === MessageType.Config) last = m.payload;
      else if (m.type === MessageType.OpusFrame && !(last && sameBytes(last, after[Number(m.timestampNs) - 1]!))) wrong.push(Number(m.timestampNs) - 1);
    }
    expect(wrong).toEqual([]);
    const frames = messages.filter((m) => m.type === MessageType.OpusFrame).map((m) => Number(m.timestampNs) - 1);
    expect(frames.length + sink.dropped.sink_reader_slow + sink.dropped.sink_no_reader).toBe(after.length);
    // Every frame after the changes stopped reached it.
    expect(frames.slice(-(after.length - before))).toEqual(Array.from({ length: after.length - before }, (_, k) => before + k));
  }, 20_000);

  test("closed while the stalled reader's pipe holds part of a message: close settles once the reader has taken it, and the reader gets whole messages only", async () => {
    // 4113-byte messages, more than the pipe holds: it fills up with the first part of one.
    const { out, sink, player, written } = await heldWireReader(4096, 40);
    const closing = sink.close();
    expect(Bun.peek.status(closing)).toBe("pending");
    releaseReader(out);
    await closing;
    expect(await player.exited).toBe(0);

    const frames = wholeWireMessages(out, INPUT_MAGIC);
    expect(frames.every((m) => m.type === MessageType.OpusFrame)).toBe(true);
    expect(frames.length + sink.dropped.sink_reader_slow + sink.dropped.sink_no_reader).toBe(written());
    expect(sink.dropped.sink_no_reader).toBe(written() - 41);
    const indices = frames.map((m) => Number(m.timestampNs) - 1);
    expect(indices.every((n, k) => k === 0 || n > indices[k - 1]!)).toBe(true);
    expect(frames.findIndex((m, k) => !sameBytes(m.payload, payloadOfSize(indices[k]!, 4096)))).toBe(-1);
  }, 20_000);

  test("a reader that leaves while part of a message waits for its pipe: that message is counted sink_no_reader, as what comes after; only the one the full pipe refused is sink_reader_slow", () => {
    const t = setup();
    const player = heldPlayer(t.fifo);
    const { sink, lines } = openFifoSink("wire", t.fifo, 100, (fd) => sizedPipe(fd, 4096));
    let written = 0;
    const frame = () => send(sink, MessageType.OpusFrame, payloadOfSize(written, 4096), BigInt(++written));
    // The first message (4113 bytes) fills the pipe with all but its last 17 bytes; the second finds no room.
    frame();
    frame();
    expect(player.waiting()).toBe(4096);
    expect(sink.dropped).toMatchObject({ sink_reader_slow: 1, sink_no_reader: 0 });
    // The reader leaves without reading: the next write finds it gone, and the first message's tail can never reach it.
    player.leave();
    frame();
    expect(count(lines, GONE)).toBe(1);
    expect(sink.dropped).toMatchObject({ sink_reader_slow: 1, sink_no_reader: 2 });
  });

  test("closed while the reader stalls for longer than LINGER_MS with part of a message in the pipe: close settles after LINGER_MS, and that message is counted as dropped (the reader was slow)", async () => {
    const { out, sink, player, written } = await heldWireReader(4096, 40);
    const before = { ...sink.dropped };
    // The reader never reads while the sink closes: it gives up on the rest after LINGER_MS, without blocking.
    await sink.close();
    expect(sink.dropped).toEqual({ ...before, sink_reader_slow: before.sink_reader_slow + 1 });
    releaseReader(out);
    expect(await player.exited).toBe(0);
    const wire = parseWire(read(out), INPUT_MAGIC);
    expect(wire.error).toBeUndefined();
    // What the reader finds at the end is the part of that message the pipe took: less than a message.
    expect(wire.trailing).toBeGreaterThan(0);
    expect(wire.trailing).toBeLessThan(17 + 4096);
    expect(wire.messages.length + sink.dropped.sink_reader_slow + sink.dropped.sink_no_reader).toBe(written());
  }, 20_000);
});

describe("FifoSink, the path changed under it", () => {
  test("the FIFO removed while no reader: one warning, frames counted sink_no_reader, nothing created; made again and opened by a reader: that reader gets a stream", async () => {
    const t = setup();
    const out = t.path("heard.opus");
    const { sink, lines } = openFifoSink("ogg", t.fifo);
    let written = 0;
    const frame = () => {
      send(sink, MessageType.OpusFrame, tonePacket(written++));
      if (written % 5 === 0) sink.flush();
    };
    send(sink, MessageType.Config, MONO_16K);
    frame();
    unlinkSync(t.fifo);
    // Each of these writes comes after READER_LOOK_MS: each looks for a reader and finds the path gone.
    for (let i = 0; i < 5; i++) {
      await Bun.sleep(READER_LOOK_MS + 20);
      for (let j = 0; j < 10; j++) frame();
    }
    expect(lines).toEqual([`warn the sink FIFO is gone; dropping frames until it is made again and read ${JSON.stringify({ sink: t.fifo })}`]);
    expect(sink.dropped).toEqual({ sink_no_reader: written, sink_open_failed: 0, sink_reader_slow: 0, sink_invalid_packet: 0 });
    expect(readdirSync(t.dir)).toEqual([]);

    makeFifo(t.fifo);
    const player = reader(CAT, t.fifo, out);
    await writeUntil(() => sink.readers === 1, "the reader of the new FIFO", frame);
    const firstHeard = written - 1;
    for (let i = 0; i < 30; i++) frame();
    await sink.close();
    expect(await player.exited).toBe(0);

    const bytes = read(out);
    expectWholeStream(bytes);
    const packets = packetsOf(bytes);
    expect(parseOpusHead(packets[0]!)).toMatchObject({ channels: 1, inputSampleRate: 16000 });
    const heard = audioPacketsOf(bytes);
    expect(heard.length).toBe(written - firstHeard);
    expect(heard.findIndex((p, i) => !sameBytes(p, tonePacket(firstHeard + i)))).toBe(-1);
    expect(sink.dropped).toEqual({ sink_no_reader: firstHeard, sink_open_failed: 0, sink_reader_slow: 0, sink_invalid_packet: 0 });
    expect(lines.filter((l) => l.startsWith("warn")).length).toBe(1);
    expect(count(lines, OPENED)).toBe(1);
    expect(statSync(t.fifo).isFIFO()).toBe(true);
  }, 20_000);

  test("the path replaced by a regular file: the next look throws, naming the path and what it is no longer; the file is not written into", async () => {
    const t = setup();
    const { sink } = openFifoSink("ogg", t.fifo);
    send(sink, MessageType.Config, MONO_16K);
    send(sink, MessageType.OpusFrame, tonePacket(0));
    unlinkSync(t.fifo);
    const content = "a regular file, not a pipe\n";
    writeFileSync(t.fifo, content);
    const before = statSync(t.fifo);
    let error: unknown;
    await until(
      () => {
        try {
          send(sink, MessageType.OpusFrame, tonePacket(1));
          sink.flush();
        } catch (e) {
          error = e;
          return true;
        }
        return false;
      },
      "the sink's next look",
      15_000,
      10,
    );
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toContain(t.fifo);
    expect((error as Error).message).toMatch(/no longer a FIFO/);
    expect(readFileSync(t.fifo, "utf8")).toBe(content);
    const after = statSync(t.fifo);
    expect(after.isFile()).toBe(true);
    expect(after.size).toBe(before.size);
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(sink.readers).toBe(0);
    // Failed for good: close raises it again, and touches nothing.
    await expect(sink.close()).rejects.toThrow(/no longer a FIFO/);
    expect(readFileSync(t.fifo, "utf8")).toBe(content);
  }, 20_000);

  test("the frame whose look finds the path no longer a FIFO is counted, as is every frame after; flush and close raise the failure again", async () => {
    const t = setup();
    const { sink } = openFifoSink("wire", t.fifo);
    send(sink, MessageType.Config, MONO_16K); // looked: no reader
    unlinkSync(t.fifo);
    writeFileSync(t.fifo, "not a pipe\n");
    await Bun.sleep(READER_LOOK_MS + 50);
    expect(() => send(sink, MessageType.OpusFrame, tonePacket(0))).toThrow(/no longer a FIFO/);
    expect(sink.dropped).toMatchObject({ sink_no_reader: 1, sink_reader_slow: 0 });
    // Taken without throwing, and counted.
    for (let i = 1; i <= 3; i++) send(sink, MessageType.OpusFrame, tonePacket(i));
    // Only OpusFrames are counted: a Config is not a frame dropped.
    send(sink, MessageType.Config, MONO_16K);
    expect(sink.dropped).toMatchObject({ sink_no_reader: 4, sink_reader_slow: 0 });
    expect(() => sink.flush()).toThrow(/no longer a FIFO/);
    // Failed for good, as a ByteSink is: every close raises it.
    await expect(sink.close()).rejects.toThrow(/no longer a FIFO/);
    await expect(sink.close()).rejects.toThrow(/no longer a FIFO/);
    expect(readFileSync(t.fifo, "utf8")).toBe("not a pipe\n");
  }, 20_000);

  // A Unix socket at the path fails open() with ENXIO, as a FIFO with no reader does: told apart.
  test("the path replaced by a Unix socket: the next look throws, naming the path and what it is no longer", async () => {
    const t = setup();
    const { sink, lines } = openFifoSink("ogg", t.fifo);
    send(sink, MessageType.OpusFrame, tonePacket(0));
    unlinkSync(t.fifo);
    const listener = Bun.listen({ unix: t.fifo, socket: { data() {} } });
    defer(() => listener.stop(true));
    let error: unknown;
    for (let i = 0; i < 3 && !error; i++) {
      await Bun.sleep(READER_LOOK_MS + 20);
      try {
        send(sink, MessageType.OpusFrame, tonePacket(1));
      } catch (e) {
        error = e;
      }
    }
    expect(lines).toEqual([]);
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).message).toContain(t.fifo);
    expect((error as Error).message).toMatch(/no longer a FIFO/);
  }, 20_000);
});

describe("the reader's pipe, sized", () => {
  /**
   * Three players one after another, each the test's own read end (found by
   * the sink, given 10 frames, then left). The next opens only once the sink
   * has noticed the last one gone and closed its end: with no end open the
   * kernel frees the pipe, so each reader's is a new one, of the kernel's
   * size until the sink sizes it. Each one's pipe size and the bytes that
   * reached it.
   */
  async function readersInTurn(sizePipe: PipeSizer) {
    const t = setup();
    const { sink, lines } = openFifoSink("wire", t.fifo, 100, sizePipe);
    send(sink, MessageType.Config, MONO_16K);
    let written = 0;
    const frame = () => send(sink, MessageType.OpusFrame, tonePacket(written), BigInt(++written));
    const seen: { size: number; waiting: number }[] = [];
    for (let n = 1; n <= 3; n++) {
      const player = heldPlayer(t.fifo);
      await writeUntil(() => sink.readers === n, `reader ${n}`, frame);
      for (let i = 0; i < 10; i++) frame();
      sink.flush();
      seen.push({ size: player.size(), waiting: player.waiting() });
      player.leave();
      await writeUntil(() => count(lines, GONE) === n, `reader ${n} to leave`, frame);
    }
    await sink.close();
    return { sink, lines, seen, name: t.fifo };
  }

  for (const bytes of [4096, 16384]) {
    test(`a pipe of ${bytes} bytes: a player that stalls falls at most that far behind; what does not fit is dropped whole and counted`, async () => {
      const t = setup();
      const player = heldPlayer(t.fifo);
      const { sink, lines } = openFifoSink("wire", t.fifo, 100, (fd) => sizedPipe(fd, bytes));
      send(sink, MessageType.Config, MONO_16K);
      // 200 frames of about 177 bytes each: 35 KB, more than either pipe holds, less than the kernel's 64 KiB.
      for (let i = 0; i < 200; i++) send(sink, MessageType.OpusFrame, tonePacket(i), BigInt(i + 1));
      sink.flush();
      expect(player.size()).toBe(bytes);
      expect(player.waiting()).toBeLessThanOrEqual(bytes);
      expect(player.waiting()).toBeGreaterThan(bytes - 4113);
      expect(sink.dropped.sink_reader_slow).toBeGreaterThan(200 - Math.ceil(bytes / 177));
      expect(lines).toEqual([`info ${OPENED} ${JSON.stringify({ sink: t.fifo, reader: 1, pipe_bytes: bytes })}`]);
      await sink.close();
    });
  }

  for (const [flag, expected] of [[[], 8192], [["--sink-pipe-bytes", "16384"], 16384], [["--sink-pipe-bytes", "0"], 65536]] as const) {
    test(`input serve --sink FIFO ${flag.join(" ") || "(default)"}: each reader's pipe is ${expected} bytes`, async () => {
      const t = setup();
      const sock = t.path("i.sock");
      const server = spawnAgent(["input", "serve", "--socket", sock, "--sink", t.fifo, ...flag]);
      defer(() => stopAgents());
      await server.waitForStderr("input-server: listening");
      const player = heldPlayer(t.fifo);
      await writeWireFile(t.path("mic.wire"), 5);
      const sent = await runAgent(["input", "send", "--socket", sock, "--source", t.path("mic.wire")]);
      expect(sent.code, sent.stderr).toBe(0);
      await server.waitForStderr("sink FIFO opened by a reader");
      expect(player.size()).toBe(expected);
      expect(server.stderr.includes(`pipe_bytes=${expected}`)).toBe(expected !== 65536);
    });
  }

  // Each reader's pipe is a new one: sizing only the first would leave every later reader 64 KiB behind.
  test("readers one after another: each one's pipe is sized (8192 bytes, seen from its end), and each one's line says so", async () => {
    const { lines, seen, name } = await readersInTurn((fd) => sizedPipe(fd, 8192));
    expect(seen.map((r) => r.size)).toEqual([8192, 8192, 8192]);
    expect(seen.every((r) => r.waiting > 0 && r.waiting <= 8192)).toBe(true);
    expect(lines).toEqual(
      [1, 2, 3].flatMap((reader) => [
        `info ${OPENED} ${JSON.stringify({ sink: name, reader, pipe_bytes: 8192 })}`,
        `info ${GONE}; waiting for the next ${JSON.stringify({ sink: name, reader })}`,
      ]),
    );
  }, 20_000);

  test("not sized: the kernel's pipe (64 KiB) takes all 35 KB, nothing dropped", async () => {
    const t = setup();
    const player = heldPlayer(t.fifo);
    const { sink, lines } = openFifoSink("wire", t.fifo);
    send(sink, MessageType.Config, MONO_16K);
    for (let i = 0; i < 200; i++) send(sink, MessageType.OpusFrame, tonePacket(i), BigInt(i + 1));
    sink.flush();
    expect(player.size()).toBe(65536);
    expect(sink.dropped.sink_reader_slow).toBe(0);
    expect(lines).toEqual([`info ${OPENED} ${JSON.stringify({ sink: t.fifo, reader: 1 })}`]);
    await sink.close();
  });

  test("a size the kernel refuses: a warning naming why; the reader is still served", async () => {
    const t = setup();
    heldPlayer(t.fifo);
    // A closed descriptor: the kernel's own EBADF, for every reader.
    const { sink, lines } = openFifoSink("wire", t.fifo, 100, () => sizedPipe(2 ** 30, 8192));
    send(sink, MessageType.Config, MONO_16K);
    send(sink, MessageType.OpusFrame, tonePacket(0));
    expect(sink.readers).toBe(1);
    expect(lines).toEqual([
      `warn cannot size the sink's pipe; a slow reader may fall as far behind as the size it has allows ${JSON.stringify({ sink: t.fifo, error: `fcntl(F_SETPIPE_SZ) on fd ${2 ** 30} failed: EBADF` })}`,
      `info ${OPENED} ${JSON.stringify({ sink: t.fifo, reader: 1 })}`,
    ]);
    await sink.close();
  });

  // A writer before the agent's (here the test) left more in the pipe than the size asked: the kernel
  // will not shrink it (EBUSY). The reader is served, and its line gives the size its pipe kept.
  test("a pipe that already holds more than the size asked: one warning naming EBUSY; the reader's line gives the size the pipe kept", async () => {
    const t = setup();
    const player = heldPlayer(t.fifo);
    const before = openSync(t.fifo, constants.O_WRONLY | constants.O_NONBLOCK);
    expect(writeSync(before, new Uint8Array(20000))).toBe(20000);
    closeSync(before);
    const { sink, lines } = openFifoSink("wire", t.fifo, 100, (fd) => sizedPipe(fd, 8192));
    send(sink, MessageType.Config, MONO_16K);
    send(sink, MessageType.OpusFrame, tonePacket(0));
    expect(sink.readers).toBe(1);
    expect(player.size()).toBe(65536);
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^warn cannot size the sink's pipe; .*"error":"fcntl\(F_SETPIPE_SZ\) on fd \d+ failed: EBUSY"/);
    expect(lines[1]).toBe(`info ${OPENED} ${JSON.stringify({ sink: t.fifo, reader: 1, pipe_bytes: 65536 })}`);
    expect(player.waiting()).toBeGreaterThan(20000);
    await sink.close();
  });

  // The reason would be the same for every reader: a player that comes and goes all day must not fill the log with it.
  test("a size that cannot be set, for readers one after another: the warning is said once, and every reader is still served", async () => {
    const { sink, lines, seen, name } = await readersInTurn(() => ({ error: "no size for this pipe" }));
    expect(sink.readers).toBe(3);
    // Each reader's pipe is the kernel's, and the stream reached it.
    expect(seen.map((r) => r.size)).toEqual([65536, 65536, 65536]);
    expect(seen.every((r) => r.waiting > 0)).toBe(true);
    expect(lines.filter((l) => l.startsWith("warn"))).toEqual([
      `warn cannot size the sink's pipe; a slow reader may fall as far behind as the size it has allows ${JSON.stringify({ sink: name, error: "no size for this pipe" })}`,
    ]);
    expect(lines.filter((l) => l.startsWith("info"))).toEqual(
      [1, 2, 3].flatMap((reader) => [
        `info ${OPENED} ${JSON.stringify({ sink: name, reader })}`,
        `info ${GONE}; waiting for the next ${JSON.stringify({ sink: name, reader })}`,
      ]),
    );
  }, 20_000);
});
