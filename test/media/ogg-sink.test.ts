import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { openSink } from "../../src/media/open.ts";
import { TAIL_BYTES } from "../../src/media/byte-sink.ts";
import { OggSink, wholeOggLength, type OggSinkOptions } from "../../src/media/ogg-sink.ts";
import { OggPacketReader } from "../../src/media/ogg-packet-reader.ts";
import { OggPageReader } from "../../src/media/ogg-page-reader.ts";
import { PageFlag } from "../../src/media/ogg-page.ts";
import { buildOpusHead, parseOpusHead } from "../../src/media/opus-head.ts";
import { buildOpusTags } from "../../src/media/opus-tags.ts";
import { opusPacketSamples } from "../../src/media/opus-toc.ts";
import {
  encodeConfigPayload,
  encodeMessage,
  FrameParser,
  INPUT_MAGIC,
  MessageType,
} from "../../src/protocol/index.ts";
import {
  CHANNELS,
  decodedSamples,
  expectOggzValid,
  FIXTURE_SAMPLES,
  FRAME_MS,
  key,
  makeFixtures,
  opusinfo,
  OPUSINFO_CLEAN,
  TONE,
  type Fixtures,
} from "../support/opus-fixtures.ts";
import { drainFile } from "../support/sources.ts";
import { buildStream, collectingWriter, packetsOf, pagesOf, sealPage } from "../support/ogg.ts";
import { concatBytes, sameBytes } from "../support/bytes.ts";
import { openFiles } from "../support/proc.ts";

let fx: Fixtures;
let count = 0;
beforeAll(() => {
  fx = makeFixtures();
});
afterAll(() => fx.cleanup());

const outPath = () => join(fx.dir, `out-${count++}.opus`);
const read = (path: string) => new Uint8Array(readFileSync(path));

/** Hands the sink a real ParsedMessage, as the input channel's parser produces it. */
function send(sink: OggSink, type: MessageType, payload: Uint8Array = new Uint8Array(0)): void {
  const parser = new FrameParser(INPUT_MAGIC);
  parser.push(encodeMessage(INPUT_MAGIC, type, payload, 1n));
  sink.write(parser.next()!);
}

interface PageSummary {
  flags: number;
  granule: number;
  sequence: number;
  serial: number;
  crcValid: boolean;
  /** Durations of the packets that end on the page. */
  samples: number[];
  first?: Uint8Array;
}

/** Pages with the packets ending on each (header packets kept whole in `first`). */
function summarize(bytes: Uint8Array): PageSummary[] {
  const pages = new OggPageReader();
  const packets = new OggPacketReader(1 << 16);
  pages.push(bytes);
  const out: PageSummary[] = [];
  let index = 0;
  for (let page = pages.next(); page; page = pages.next()) {
    const s: PageSummary = {
      flags: page.flags,
      granule: page.granule,
      sequence: page.sequence,
      serial: page.serial,
      crcValid: page.crcValid(),
      samples: [],
    };
    packets.push(page);
    for (let p = packets.next(); p; p = packets.next()) {
      if (index++ < 2) s.first = p.data.slice();
      else s.samples.push(opusPacketSamples(p.data));
    }
    out.push(s);
  }
  pages.finish();
  return out;
}

/** Copies every frame of `input` into a new OggSink; calls flush() every `flushEvery` frames. */
async function rewrite(input: string, options: OggSinkOptions = {}, flushEvery = 0): Promise<string> {
  const path = outPath();
  const sink = OggSink.open(path, options);
  const { frames, error } = await drainFile(input);
  expect(error).toBeUndefined();
  frames.forEach((f, i) => {
    send(sink, MessageType.OpusFrame, f.payload);
    if (flushEvery && (i + 1) % flushEvery === 0) sink.flush();
  });
  sink.close();
  return path;
}

describe("OggSink writing what opusenc made", () => {
  for (const channels of CHANNELS) {
    for (const frameMs of FRAME_MS) {
      test(`${key(channels, frameMs)}: byte-identical packets, accepted by opusinfo, same length from opusdec`, async () => {
        const original = fx.opus.get(key(channels, frameMs))!;
        // The channels as the file's head says: the wire carries none, and the sink's own default is stereo.
        const copy = await rewrite(original, { channels }, 7);

        const before = await drainFile(original);
        const after = await drainFile(copy);
        expect(after.error).toBeUndefined();
        expect(after.frames.length).toBe(before.frames.length);
        expect(after.frames).toEqual(before.frames);
        expect(after.source.audioConfig).toEqual(before.source.audioConfig);
        expect(after.source.preSkip).toBe(312);

        const info = opusinfo(copy);
        expect(info.verdict.stderr).toBe("");
        expect(info.verdict.code).toBe(0);
        expect(info.stdout).toContain("Encoded with audio-agent");
        expect(info.stdout).toContain(`Channels: ${channels}`);

        expect(decodedSamples(original, fx.dir)).toBe(FIXTURE_SAMPLES);
        expect(decodedSamples(copy, fx.dir)).toBe(FIXTURE_SAMPLES);
      });

      test(`${key(channels, frameMs)}: --page-ms 1000 closes a page once it holds 1 s of audio at 48 kHz; opusinfo and opusdec agree`, async () => {
        const copy = await rewrite(fx.opus.get(key(channels, frameMs))!, { channels, pageMs: 1000 });
        const audio = summarize(read(copy)).slice(2);
        // 72000 samples decoded: a page closes at the first packet that brings it to 48000 or more, then the rest.
        const perPage = Math.ceil(1000 / frameMs);
        expect(audio.map((p) => p.granule)).toEqual([perPage * 48 * frameMs, 72000]);
        expect(audio.map((p) => p.samples.length)).toEqual([perPage, 72000 / (48 * frameMs) - perPage]);
        expect(opusinfo(copy).verdict).toEqual(OPUSINFO_CLEAN);
        expect(decodedSamples(copy, fx.dir)).toBe(FIXTURE_SAMPLES);
      });

      test(`${key(channels, frameMs)}: granule = samples decoded so far, pages of >= 100 ms`, async () => {
        const copy = await rewrite(fx.opus.get(key(channels, frameMs))!, { channels, serial: 42 });
        const pages = summarize(read(copy));
        expect(pages.every((p) => p.crcValid && p.serial === 42)).toBe(true);
        expect(pages.map((p) => p.sequence)).toEqual(pages.map((_, i) => i));

        const [head, tags, ...audio] = pages;
        expect(head!.flags).toBe(PageFlag.BeginOfStream);
        expect(head!.granule).toBe(0);
        expect(parseOpusHead(head!.first!)).toEqual({
          version: 1,
          channels,
          preSkip: 312,
          inputSampleRate: 48000,
          outputGain: 0,
          mappingFamily: 0,
        });
        expect(tags!.granule).toBe(0);
        expect(tags!.flags).toBe(0);

        const frame = 48 * frameMs;
        const perPage = Math.ceil(100 / frameMs);
        let decoded = 0;
        audio.forEach((page, i) => {
          decoded += page.samples.reduce((a, b) => a + b, 0);
          expect(page.granule).toBe(decoded);
          const last = i === audio.length - 1;
          expect(page.flags).toBe(last ? PageFlag.EndOfStream : 0);
          if (!last) expect(page.samples).toEqual(Array(perPage).fill(frame));
        });
        // 72000 samples: the 312 of pre-skip are among the decoded ones, not added to them.
        expect(decoded).toBe(FIXTURE_SAMPLES + 312);
      });
    }
  }
});

describe("OggSink", () => {
  const stereo20 = Uint8Array.of(0xfc, 1, 2, 3); // CELT FB 20 ms, stereo, one frame
  const mono10 = Uint8Array.of(0xf0, 4, 5); // CELT FB 10 ms, mono, one frame

  test("a Config before the first audio sets channels and input rate; one with the same audio after it changes nothing", () => {
    const path = outPath();
    const sink = OggSink.open(path, { serial: 1 });
    send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 16000, channels: 1, frameSize: 320 }));
    send(sink, MessageType.OpusFrame, stereo20);
    send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 16000, channels: 1, frameSize: 160 }));
    send(sink, MessageType.Heartbeat);
    send(sink, MessageType.Stop);
    sink.close();
    const pages = summarize(read(path));
    expect(parseOpusHead(pages[0]!.first!)).toMatchObject({ channels: 1, inputSampleRate: 16000 });
    expect(pages.slice(2).flatMap((p) => p.samples)).toEqual([960]);
    expect(sink.packets).toBe(1);
  });

  test("a Config with other audio after the first packet ends the stream and begins the next, chained: its own serial, head and timeline; opusinfo reads both", async () => {
    const path = outPath();
    const sink = OggSink.open(path, { serial: 1 });
    send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 16000, channels: 1, frameSize: 160 }));
    for (let i = 0; i < 3; i++) send(sink, MessageType.OpusFrame, mono10);
    send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 }));
    for (let i = 0; i < 2; i++) send(sink, MessageType.OpusFrame, stereo20);
    sink.close();
    const reader = new OggPageReader();
    reader.push(read(path));
    const links = new Map<number, { bos: number; eos: number; last: { sequence: number; granule: number }; head?: Uint8Array }>();
    for (let page = reader.next(); page; page = reader.next()) {
      const link = links.get(page.serial) ?? { bos: 0, eos: 0, last: { sequence: -1, granule: 0 } };
      if (page.beginOfStream) {
        link.bos++;
        const packets = new OggPacketReader(1 << 16);
        packets.push(page);
        link.head = packets.next()!.data.slice();
      }
      if (page.flags & PageFlag.EndOfStream) link.eos++;
      expect(page.sequence).toBe(link.last.sequence + 1);
      link.last = { sequence: page.sequence, granule: page.granule };
      links.set(page.serial, link);
    }
    const [first, second] = [...links.values()];
    expect(links.size).toBe(2);
    expect([first!.bos, first!.eos, second!.bos, second!.eos]).toEqual([1, 1, 1, 1]);
    expect(parseOpusHead(first!.head!)).toMatchObject({ channels: 1, inputSampleRate: 16000 });
    expect(parseOpusHead(second!.head!)).toMatchObject({ channels: 2, inputSampleRate: 48000 });
    // Each link's timeline from 0: 3 x 10 ms, then 2 x 20 ms, at 48 kHz.
    expect([first!.last.granule, second!.last.granule]).toEqual([1440, 1920]);
    const info = opusinfo(path);
    expect(info.verdict.stderr).toBe("");
    expect(info.verdict.code).toBe(0);
    expect(info.stdout.match(/New logical stream/g)?.length).toBe(2);
  });

  test("a Config with another sample rate alone (same channels) after audio also begins a chained stream, whose OpusHead names the new rate", () => {
    const path = outPath();
    const sink = OggSink.open(path, { serial: 1 });
    send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 }));
    for (let i = 0; i < 2; i++) send(sink, MessageType.OpusFrame, stereo20);
    send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 16000, channels: 2, frameSize: 320 }));
    for (let i = 0; i < 3; i++) send(sink, MessageType.OpusFrame, stereo20);
    sink.close();
    const pages = pagesOf(read(path));
    const serials = [...new Set(pages.map((p) => p.serial))];
    expect(serials.length).toBe(2);
    const heads = packetsOf(read(path)).filter((p) => new TextDecoder().decode(p.subarray(0, 8)) === "OpusHead");
    expect(heads.map((h) => parseOpusHead(h))).toMatchObject([
      { channels: 2, inputSampleRate: 48000 },
      { channels: 2, inputSampleRate: 16000 },
    ]);
    // Each link's end-of-stream page: its own timeline from 0.
    expect(pages.filter((p) => p.flags & PageFlag.EndOfStream).map((p) => [p.serial, p.granule])).toEqual([
      [serials[0], 2 * 960],
      [serials[1], 3 * 960],
    ]);
    const info = opusinfo(path);
    expect({ stderr: info.verdict.stderr, code: info.verdict.code, links: info.stdout.match(/New logical stream/g)?.length }).toEqual({ stderr: "", code: 0, links: 2 });
    expect(info.stdout).toContain("Original sample rate: 16000 Hz");
  });

  test("a Config naming channels family 0 cannot carry (6) changes nothing: before audio the TOC gives the channels, after it the stream goes on", () => {
    const path = outPath();
    const sink = OggSink.open(path, { serial: 1 });
    send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 6, frameSize: 960 }));
    for (let i = 0; i < 3; i++) send(sink, MessageType.OpusFrame, stereo20);
    send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 6, frameSize: 960 }));
    for (let i = 0; i < 2; i++) send(sink, MessageType.OpusFrame, stereo20);
    sink.close();
    const pages = summarize(read(path));
    expect(new Set(pages.map((p) => p.serial)).size).toBe(1);
    expect(parseOpusHead(pages[0]!.first!)).toMatchObject({ channels: 2, inputSampleRate: 48000, mappingFamily: 0 });
    expect(pages.slice(2).flatMap((p) => p.samples)).toEqual(Array(5).fill(960));
    expect(pages.at(-1)).toMatchObject({ flags: PageFlag.EndOfStream, granule: 5 * 960 });
    expect(sink.packets).toBe(5);
    const info = opusinfo(path);
    expect(info.verdict).toEqual(OPUSINFO_CLEAN);
    expect(info.stdout).toContain("Channels: 2");
  });

  test("without a Config, the head says 2 channels whatever the first packet's stereo bit (RFC 7845 5.1: output channels, not the packet's coding)", () => {
    for (const packet of [mono10, stereo20]) {
      const path = outPath();
      const sink = OggSink.open(path);
      send(sink, MessageType.OpusFrame, packet);
      sink.close();
      expect(parseOpusHead(summarize(read(path))[0]!.first!).channels).toBe(2);
    }
  });

  test("flush() puts the pending audio on disk at once, as a closed page", () => {
    const path = outPath();
    const sink = OggSink.open(path, { pageMs: 1000 });
    for (let i = 0; i < 3; i++) send(sink, MessageType.OpusFrame, stereo20);
    expect(existsSync(path) ? read(path).length : 0).toBe(0); // still buffered
    sink.flush();
    const live = summarize(read(path)); // read while the sink is still open
    expect(live.length).toBe(3);
    expect(live[2]).toMatchObject({ granule: 2880, flags: 0, samples: [960, 960, 960] });
    send(sink, MessageType.OpusFrame, mono10);
    sink.close();
    const done = summarize(read(path));
    expect(done.length).toBe(4);
    expect(done[3]).toMatchObject({ granule: 2880 + 480, flags: PageFlag.EndOfStream, samples: [480] });
  });

  test("close() after a flush took the last audio ends the stream with a packet of silence trimmed whole: a page that ends a packet, the last granule kept (RFC 7845 4, 4.4)", async () => {
    const path = outPath();
    const sink = OggSink.open(path);
    for (let i = 0; i < 50; i++) send(sink, MessageType.OpusFrame, stereo20);
    sink.flush();
    sink.close();
    const pages = summarize(read(path));
    // Headers, ten pages of 100 ms, and the end.
    expect(pages.length).toBe(13);
    // Not an empty page (granule -1, which validators refuse): opusenc's silence, its samples all trimmed.
    expect(pages[12]).toMatchObject({ flags: PageFlag.EndOfStream, granule: 50 * 960, samples: [960] });
    expect(sameBytes(packetsOf(read(path)).at(-1)!, Uint8Array.of(0xfc, 0xff, 0xfe))).toBe(true);
    expect(sink.packets).toBe(50);
    expect(opusinfo(path).verdict).toEqual(OPUSINFO_CLEAN);
    expectOggzValid(path);
    // A player plays what was received, and not the silence: 50 packets less the pre-skip.
    expect(decodedSamples(path, fx.dir)).toBe(50 * 960 - 312);
  });

  test("with no audio at all, close() writes a stream players open: headers, then opusenc's silence for empty input, all of it trimmed", async () => {
    for (const [channels, preSkip] of [[1, 312], [2, 312], [2, 3000], [1, 960]] as const) {
      const path = outPath();
      const sink = OggSink.open(path, { channels, inputSampleRate: 44100, preSkip });
      sink.flush();
      sink.close();
      const pages = summarize(read(path));
      expect(pages.map((p) => p.flags)).toEqual([PageFlag.BeginOfStream, 0, PageFlag.EndOfStream]);
      expect(parseOpusHead(pages[0]!.first!)).toMatchObject({ channels, inputSampleRate: 44100, preSkip });
      // 20 ms packets covering the pre-skip; the granule is the pre-skip: nothing is left to play.
      expect(pages[2]!.granule).toBe(preSkip);
      expect(pages[2]!.samples).toEqual(Array(Math.max(1, Math.ceil(preSkip / 960))).fill(960));
      // opusenc's own bytes for it: CELT 20 ms, the head's channels in the TOC, then silence.
      const audio = packetsOf(read(path)).slice(2);
      expect(audio.length).toBe(pages[2]!.samples.length);
      expect(audio.every((p) => sameBytes(p, Uint8Array.of(channels === 1 ? 0xf8 : 0xfc, 0xff, 0xfe)))).toBe(true);
      expect(sink.packets).toBe(0);
      const info = opusinfo(path);
      expect({ channels, preSkip, ...info.verdict }).toEqual({ channels, preSkip, ...OPUSINFO_CLEAN });
      expect(info.stdout).toContain("Encoded with audio-agent");
      expect(info.stdout).toContain("Playback length: 0m:00.000s");
      // opusdec opens it (it refused a stream with no audio packet) and plays nothing.
      expect(decodedSamples(path, fx.dir)).toBe(0);
    }
  });

  test("with no audio, nothing is added where a recording is already there: a file appended to (a service started and stopped with no session) is left byte for byte; a link begun by a Config after the last audio ends with no link of silence after it", async () => {
    const tone = read(TONE);
    const path = outPath();
    writeFileSync(path, tone);
    for (let run = 0; run < 3; run++) {
      const sink = openSink("ogg", path, { append: true, channel: "input", preSkip: 312, pageMs: 100 });
      send(sink as OggSink, MessageType.Config, encodeConfigPayload({ sampleRate: 16000, channels: 1, frameSize: 320 }));
      await sink.close();
    }
    expect(sameBytes(read(path), tone)).toBe(true);
    // An append onto a file cut back to nothing is a recording's start: it gets its stream, as a new file does.
    const cut = outPath();
    writeFileSync(cut, tone.subarray(0, 30));
    await openSink("ogg", cut, { append: true, channel: "input", preSkip: 312, pageMs: 100 }).close();
    expect(summarize(read(cut)).map((p) => p.flags)).toEqual([PageFlag.BeginOfStream, 0, PageFlag.EndOfStream]);

    const chained = outPath();
    const sink = OggSink.open(chained, { serial: 1 });
    send(sink, MessageType.OpusFrame, stereo20);
    send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 16000, channels: 1, frameSize: 320 }));
    sink.close();
    const pages = summarize(read(chained));
    expect(new Set(pages.map((p) => p.serial))).toEqual(new Set([1]));
    expect(pages.at(-1)!.flags).toBe(PageFlag.EndOfStream);
    expectOggzValid(chained);
  });

  test("a stream that ends before its pre-skip is over gets silence up to it, so the end granule is not before the pre-skip (RFC 7845), and players open it", async () => {
    const stereo2_5 = Uint8Array.of(0xe4, 0xff, 0xfe); // CELT FB 2.5 ms, stereo, one frame
    for (const [packet, count, preSkip, silence] of [
      [stereo2_5, 2, 312, 1], // 240 samples, 312 to skip: opusinfo said "negative duration 240-0-312"
      [stereo20, 3, 3000, 1], // 2880 samples, 3000 to skip
      [stereo2_5, 1, 3000, 3], // 120 + 3 x 960 reaches 3000
    ] as const) {
      const path = outPath();
      const sink = OggSink.open(path, { preSkip });
      for (let i = 0; i < count; i++) send(sink, MessageType.OpusFrame, packet);
      sink.close();
      const pages = summarize(read(path));
      expect(pages.at(-1)!.granule).toBe(preSkip);
      expect(packetsOf(read(path)).slice(2).length).toBe(count + silence);
      expect(sink.packets).toBe(count);
      expect({ preSkip, ...opusinfo(path).verdict }).toEqual({ preSkip, ...OPUSINFO_CLEAN });
      expect(decodedSamples(path, fx.dir)).toBe(0);
    }
  });

  test("the silence's edges: pre-skip 0 with no audio still gets one packet (granule 0); audio ending exactly at the pre-skip gets none", () => {
    const empty = outPath();
    const none = OggSink.open(empty, { preSkip: 0 });
    none.close();
    const pages = summarize(read(empty));
    expect(pages.at(-1)).toMatchObject({ granule: 0, samples: [960] });
    const exact = outPath();
    const sink = OggSink.open(exact, { preSkip: 3000 });
    const stereo2_5 = Uint8Array.of(0xe4, 0xff, 0xfe);
    for (let i = 0; i < 25; i++) send(sink, MessageType.OpusFrame, stereo2_5); // 25 x 120 = 3000
    sink.close();
    expect(summarize(read(exact)).at(-1)!.granule).toBe(3000);
    expect(packetsOf(read(exact)).slice(2).length).toBe(25);
  });

  test("a chained link that ends before its pre-skip is over gets the same silence before its end-of-stream page", () => {
    const path = outPath();
    const sink = OggSink.open(path, { preSkip: 3000 });
    send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 }));
    send(sink, MessageType.OpusFrame, stereo20);
    send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 1, frameSize: 480 }));
    for (let i = 0; i < 10; i++) send(sink, MessageType.OpusFrame, mono10);
    sink.close();
    const ends = pagesOf(read(path)).filter((p) => p.flags & PageFlag.EndOfStream);
    expect(ends.map((p) => p.granule)).toEqual([3000, 4800]);
    expect(opusinfo(path).verdict).toEqual(OPUSINFO_CLEAN);
  });

  test("a Config with other audio before every frame: each link's pages come from the one page buffer, not one of 64 KiB allocated per link; each link is numbered from 0 under a serial other than the one before", () => {
    const LINKS = 200;
    const buffers = new Set<ArrayBufferLike>();
    const pages: Uint8Array[] = [];
    const sink = OggSink.over({
      name: "pages",
      write: (page) => {
        buffers.add(page.buffer);
        pages.push(page.slice());
        return true;
      },
      flush: () => {},
      close: () => {},
    });
    for (let i = 0; i < LINKS; i++) {
      send(sink, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 1 + (i % 2), frameSize: 960 }));
      send(sink, MessageType.OpusFrame, i % 2 ? stereo20 : mono10);
    }
    sink.close();
    const summary = pagesOf(concatBytes(pages));
    const begins = summary.filter((p) => p.flags & PageFlag.BeginOfStream);
    expect(begins.length).toBe(LINKS);
    expect(begins.every((p) => p.sequence === 0)).toBe(true);
    expect(begins.every((p, k) => k === 0 || p.serial !== begins[k - 1]!.serial)).toBe(true);
    expect(summary.filter((p) => p.flags & PageFlag.EndOfStream).length).toBe(LINKS);
    expect(buffers.size).toBe(1);
  });

  test("drops and counts packets that cannot be timed or decoded; writes nothing after close", () => {
    const path = outPath();
    const sink = OggSink.open(path);
    send(sink, MessageType.OpusFrame, new Uint8Array(0));
    send(sink, MessageType.OpusFrame, Uint8Array.of(0xff)); // code 3 without its count byte
    send(sink, MessageType.OpusFrame, Uint8Array.of(0xfd, 5)); // code 1: one byte cannot be two equal frames
    send(sink, MessageType.OpusFrame, stereo20);
    sink.close();
    const size = read(path).length;
    send(sink, MessageType.OpusFrame, stereo20);
    sink.flush();
    sink.close();
    expect(sink.invalidPackets).toBe(3);
    expect(sink.packets).toBe(1);
    expect(read(path).length).toBe(size);
  });

  /** 16 lacing values, 20 ms: CELT FB 2.5 ms stereo, code 3, 8 frames of 500 bytes (a frame holds at most 1275). */
  const sixteenSegments = new Uint8Array(4002);
  sixteenSegments.set([0xe7, 8]);

  test("starts a new page rather than overflow the segment table", () => {
    const path = outPath();
    const sink = OggSink.open(path, { pageMs: 10_000 });
    for (let i = 0; i < 40; i++) send(sink, MessageType.OpusFrame, sixteenSegments);
    sink.close();
    const audio = summarize(read(path)).slice(2);
    // 15 packets x 16 segments = 240 <= 255 per page
    expect(audio.map((p) => p.samples.length)).toEqual([15, 15, 10]);
    expect(audio.map((p) => p.granule)).toEqual([15 * 960, 30 * 960, 40 * 960]);
  });

  test("a page closed early because the next packet does not fit starts the count of its page's audio afresh", () => {
    const path = outPath();
    // 20 ms a packet, 400 ms a page by time (20 packets), but only 15 packets of 16 lacing values fit a page.
    const sink = OggSink.open(path, { pageMs: 400 });
    for (let i = 0; i < 40; i++) send(sink, MessageType.OpusFrame, sixteenSegments);
    sink.close();
    const audio = summarize(read(path)).slice(2);
    expect(audio.map((p) => p.samples.length)).toEqual([15, 15, 10]);
    expect(audio.map((p) => p.granule)).toEqual([15 * 960, 30 * 960, 40 * 960]);
  });

  test("pages close once they hold pageMs of audio counted at 48 kHz", () => {
    const stereo2_5 = Uint8Array.of(0xe4, 1, 2); // CELT FB 2.5 ms, stereo, one frame
    for (const [pageMs, packet, samples, count, perPage] of [
      [100, stereo2_5, 120, 100, 40], // 4800 samples a page
      [1000, stereo20, 960, 120, 50], // 48000
      [7.5, stereo2_5, 120, 10, 3], // 360
    ] as const) {
      const path = outPath();
      const sink = OggSink.open(path, { pageMs });
      for (let i = 0; i < count; i++) send(sink, MessageType.OpusFrame, packet);
      sink.close();
      const audio = summarize(read(path)).slice(2);
      const sizes = Array.from({ length: Math.ceil(count / perPage) }, (_, i) => Math.min(perPage, count - i * perPage));
      expect({ pageMs, sizes: audio.map((p) => p.samples.length) }).toEqual({ pageMs, sizes });
      expect(audio.map((p) => p.granule)).toEqual(sizes.map((_, i) => Math.min((i + 1) * perPage, count) * samples));
    }
  });

  test("rejects bad options before creating the file", () => {
    const path = join(fx.dir, "never.opus");
    expect(() => OggSink.open(path, { channels: 6 })).toThrow("channels must be 1 or 2, got 6");
    expect(() => OggSink.open(path, { preSkip: 70000 })).toThrow("preSkip must be an integer 0..65535");
    expect(() => OggSink.open(path, { preSkip: 65536 })).toThrow("preSkip must be an integer 0..65535, got 65536");
    expect(() => OggSink.open(path, { preSkip: -1 })).toThrow("preSkip must be an integer 0..65535, got -1");
    expect(() => OggSink.open(path, { pageMs: 0 })).toThrow("pageMs must be > 0");
    expect(existsSync(path)).toBe(false);
  });

  test("writes the pre-skip and input rate it is given, up to the largest pre-skip", () => {
    for (const preSkip of [3840, 65535]) {
      const path = outPath();
      const sink = OggSink.open(path, { preSkip, inputSampleRate: 44100 });
      send(sink, MessageType.OpusFrame, stereo20);
      sink.close();
      expect(parseOpusHead(summarize(read(path))[0]!.first!)).toMatchObject({ preSkip, inputSampleRate: 44100 });
    }
  });
});

describe("wholeOggLength: where an Ogg file appended to is cut back to", () => {
  const tone = new Uint8Array(readFileSync(TONE));
  const pages = pagesOf(tone);
  const last = pages.at(-1)!;
  const lengthOf = (bytes: Uint8Array) => {
    const path = outPath();
    writeFileSync(path, bytes);
    return wholeOggLength(path)?.length;
  };
  const withBadCrc = (bytes: Uint8Array, at: number) => {
    const copy = bytes.slice();
    copy[at + 22]! ^= 0xff;
    return copy;
  };

  test("whole pages end to end: the file's length; a last page cut short, at any point in it: where it begins", () => {
    expect(lengthOf(tone)).toBe(tone.length);
    for (const keep of [1, 3, 4, 26, 27, 30, last.size - 1]) expect(lengthOf(tone.subarray(0, last.offset + keep))).toBe(last.offset);
  });

  test("zero bytes to the end (a power loss that kept the file's length, not its last blocks) are cut as a tail cut short: after whole pages, half a page, a page they fail the CRC of, or alone", () => {
    for (const zeros of [1, 3, 27, 4096]) {
      expect({ zeros, at: lengthOf(concatBytes([tone, new Uint8Array(zeros)])) }).toEqual({ zeros, at: tone.length });
      expect({ zeros, at: lengthOf(concatBytes([tone.subarray(0, last.offset + 30), new Uint8Array(zeros)])) }).toEqual({ zeros, at: last.offset });
    }
    const zeroedBody = tone.slice();
    zeroedBody.fill(0, last.offset + 40);
    expect(lengthOf(concatBytes([zeroedBody, new Uint8Array(4096)]))).toBe(last.offset);
    expect(lengthOf(new Uint8Array(4096))).toBe(0);
    // A last page whose body ends in zeros, sealed (its CRC proves it whole), is kept before the zeros after it.
    const zeroEnded = tone.slice();
    zeroEnded.fill(0, tone.length - 8);
    sealPage(zeroEnded, last.offset, last.size);
    for (const zeros of [1, 3, 27, 4096]) expect({ zeros, at: lengthOf(concatBytes([zeroEnded, new Uint8Array(zeros)])) }).toEqual({ zeros, at: tone.length });
  });

  test("a chain of several MiB ending in zero bytes of any length, across the chunks the look reads (64 KiB back from the end), is kept whole; half a page before them is cut", () => {
    const chain = concatBytes(Array.from({ length: 100 }, () => tone));
    expect(chain.length).toBeGreaterThan(3 << 20);
    const half = tone.subarray(0, pages[3]!.offset + 100);
    for (const zeros of [65535, 65536, 65537, (1 << 20) + 1, 3 << 20]) {
      expect({ zeros, at: lengthOf(concatBytes([chain, new Uint8Array(zeros)])) }).toEqual({ zeros, at: chain.length });
      expect({ zeros, at: lengthOf(concatBytes([chain, half, new Uint8Array(zeros)])) }).toEqual({ zeros, at: chain.length + pages[3]!.offset });
    }
  });

  test("a last page whose CRC fails (its bytes never all reached the disk) is cut; one before other pages, or bytes that begin no page, leave the file as it is", () => {
    expect(lengthOf(withBadCrc(tone, last.offset))).toBe(last.offset);
    expect(lengthOf(withBadCrc(tone, pages[2]!.offset))).toBeUndefined();
    expect(lengthOf(concatBytes([tone, Uint8Array.of(0x4f, 0x67, 0x58)]))).toBeUndefined();
    expect(lengthOf(concatBytes([tone, new Uint8Array(64), tone.subarray(0, pages[1]!.offset)]))).toBeUndefined();
    expect(lengthOf(new TextEncoder().encode("not Ogg at all, a text file"))).toBeUndefined();
  });

  test("a recording cut before its first page past the headers' first (inside OpusTags, or just after the OpusHead page; in a chain, the last link's): that OpusHead page is cut too, where a stream appended would begin in its group (RFC 3533: multiplexed with it) and no reader would play it", async () => {
    const tags = pages[1]!;
    for (const keep of [0, 1, 30, tags.size - 1]) expect(lengthOf(tone.subarray(0, tags.offset + keep))).toBe(0);
    const chain = concatBytes([tone, tone]);
    expect(lengthOf(chain.subarray(0, tone.length + tags.offset + 30))).toBe(tone.length);
    // Appended to, the file reads whole: strict, the agent's source; opusdec plays both streams.
    const sent = (await drainFile(TONE)).frames;
    const path = outPath();
    writeFileSync(path, chain.subarray(0, tone.length + tags.offset + 30));
    const alone = outPath();
    for (const [file, append] of [[path, true], [alone, false]] as const) {
      const sink = openSink("ogg", file, { append, channel: "input", preSkip: 312, pageMs: 100 });
      for (const frame of sent) send(sink as OggSink, MessageType.OpusFrame, frame.payload);
      await sink.close();
    }
    const read = await drainFile(path);
    expect(read.error).toBeUndefined();
    expect(read.frames.map((f) => f.payload)).toEqual([...sent, ...sent].map((f) => f.payload));
    expect(decodedSamples(path, fx.dir)).toBe(decodedSamples(TONE, fx.dir) + decodedSamples(alone, fx.dir));
  });

  test("a recording cut inside its very first page (the OpusHead's) is appended to, not refused as Ogg of another codec: that page is cut, and the stream appended is the whole file", async () => {
    const sent = (await drainFile(TONE)).frames;
    for (const keep of [4, 30]) {
      const path = outPath();
      writeFileSync(path, tone.subarray(0, keep));
      const sink = openSink("ogg", path, { append: true, channel: "input", preSkip: 312, pageMs: 100 });
      for (const frame of sent) send(sink as OggSink, MessageType.OpusFrame, frame.payload);
      await sink.close();
      const read = await drainFile(path);
      expect(read.error).toBeUndefined();
      expect(read.frames.map((f) => f.payload)).toEqual(sent.map((f) => f.payload));
    }
  });

  test("a recording with no end-of-stream page (its writer killed, the power lost): its last page is marked as its stream's end, its CRC sealed anew, in each link of a chain, through a descriptor closed once it is; appended to, oggz-validate accepts the file, whose bytes are otherwise the same", async () => {
    const unended = tone.subarray(0, last.offset);
    const end = pages.at(-2)!;
    const endingAt = (bytes: Uint8Array) => {
      const path = outPath();
      writeFileSync(path, bytes);
      return wholeOggLength(path)?.endings?.map((ending) => ending.at);
    };
    expect(endingAt(tone)).toEqual([]);
    expect(endingAt(unended)).toEqual([end.offset + 5]);
    // Cut short after it, or zeros after it: the same page. A last link cut whole (no audio): the one before it ends the file.
    expect(endingAt(tone.subarray(0, last.offset + 30))).toEqual([end.offset + 5]);
    expect(endingAt(concatBytes([unended, new Uint8Array(4096)]))).toEqual([end.offset + 5]);
    expect(endingAt(concatBytes([unended, tone.subarray(0, pages[2]!.offset)]))).toEqual([end.offset + 5]);
    expect(endingAt(concatBytes([unended, unended]))).toEqual([end.offset + 5, unended.length + end.offset + 5]);
    expect(endingAt(concatBytes([unended, tone]))).toEqual([end.offset + 5]);

    const path = outPath();
    const before = concatBytes([unended, unended]);
    writeFileSync(path, before);
    const sent = (await drainFile(TONE)).frames;
    const sink = openSink("ogg", path, { append: true, channel: "input", preSkip: 312, pageMs: 100 });
    // The endings are written through a descriptor of their own, closed once they are: the sink's alone is left.
    expect(openFiles(process.pid).filter((file) => file === path)).toHaveLength(1);
    for (const frame of sent) send(sink as OggSink, MessageType.OpusFrame, frame.payload);
    await sink.close();
    expect(openFiles(process.pid)).not.toContain(path);
    expectOggzValid(path);
    const after = read(path);
    const marked = pagesOf(after).filter((page) => page.offset < before.length && (page.flags & PageFlag.EndOfStream) !== 0);
    expect(marked.map((page) => [page.offset, page.crcValid])).toEqual([
      [end.offset, true],
      [unended.length + end.offset, true],
    ]);
    for (const page of marked) after.set(before.subarray(page.offset + 5, page.offset + 26), page.offset + 5);
    expect(sameBytes(after.subarray(0, before.length), before)).toBe(true);
    const kept = packetsOf(unended).slice(2);
    const got = await drainFile(path);
    expect(got.error).toBeUndefined();
    expect(got.frames.map((f) => f.payload)).toEqual([...kept, ...kept, ...sent.map((f) => f.payload)]);
  });

  test("a stream whose last page ends inside a packet (one running on to a page never written) is not marked: its end would fall inside the packet", () => {
    // 600-byte packets, two lacing values a page: packet k begins on page 2 + 2k (255 + 255) and ends on the next (90).
    const stream = buildStream(Array.from({ length: 4 }, () => new Uint8Array(600).fill(0xfc, 0, 1)), 1, 2);
    const kept = (pageCount: number) => {
      const path = outPath();
      writeFileSync(path, stream.bytes.subarray(0, stream.offsets[pageCount]));
      return wholeOggLength(path)?.endings?.map((ending) => ending.at);
    };
    expect(kept(6)).toEqual([stream.offsets[5]! + 5]);
    expect(kept(7)).toEqual([]);
  });

  test("a file longer than the tail looked at (its last 256 KiB) is read from the first whole page there: damage before it is not read, and its tail is cut and its last stream marked ended as a short file's", () => {
    const chain = concatBytes(Array.from({ length: 64 }, () => tone));
    expect(chain.length).toBeGreaterThan(2 << 20);
    // A page early in the file fails its CRC: read from the start, the file would be left as it is.
    const damaged = withBadCrc(chain, pages[3]!.offset);
    expect(lengthOf(damaged.subarray(0, tone.length * 2))).toBeUndefined();
    const lastLink = chain.length - tone.length;
    const end = pages.at(-2)!;
    const path = outPath();
    writeFileSync(path, concatBytes([damaged.subarray(0, lastLink + last.offset), tone.subarray(last.offset, last.offset + 30)]));
    expect(wholeOggLength(path)).toEqual({ length: lastLink + last.offset, endings: [{ at: lastLink + end.offset + 5, bytes: expect.any(Uint8Array) }] });
    // A last link cut right after its headers is cut whole, its OpusHead in the tail.
    expect(lengthOf(concatBytes([damaged, tone.subarray(0, pages[2]!.offset)]))).toBe(chain.length);
  });

  test("a file whose tail looked at lies inside the last link's headers (OpusTags of 2 MiB) is read from its start: where that link begins decides that it is cut whole", () => {
    const { writer, pages: headers } = collectingWriter(0x5151);
    writer.addPacket(buildOpusHead({ channels: 2, preSkip: 312, inputSampleRate: 48000 }), 0);
    writer.flushPage();
    writer.addPacket(buildOpusTags("a vendor", ["COMMENT=" + "x".repeat(2 << 20)]), 0);
    writer.flushPage();
    const link = concatBytes(headers);
    expect(link.length - headers[0]!.length).toBeGreaterThan(2 << 20);
    expect(lengthOf(concatBytes([tone, link]))).toBe(tone.length);
    expect(lengthOf(concatBytes([tone, link.subarray(0, link.length - 100)]))).toBe(tone.length);
  });

  test("a file whose tail looked at begins inside the first of a last link's BOS pages (two streams multiplexed, OpusTags filling the tail, no audio): that link is cut whole from its first BOS page, not from the next one, and a stream appended follows the link before it", async () => {
    const link = (comment: number) => {
      const [a, b] = [collectingWriter(0xa1), collectingWriter(0xb2)];
      for (const { writer } of [a, b]) {
        writer.addPacket(buildOpusHead({ channels: 2, preSkip: 312, inputSampleRate: 48000 }), 0);
        writer.flushPage();
      }
      a.writer.addPacket(buildOpusTags("a vendor", ["COMMENT=" + "x".repeat(comment)]), 0);
      a.writer.flushPage();
      b.writer.addPacket(buildOpusTags("a vendor", []), 0);
      b.writer.flushPage();
      return { first: a.pages[0]!, rest: concatBytes([b.pages[0]!, ...a.pages.slice(1), ...b.pages.slice(1)]) };
    };
    // The tail begins 10 bytes into the first BOS page: the second is the first whole page there.
    let comment = TAIL_BYTES;
    let made = link(comment);
    while (made.rest.length !== TAIL_BYTES - 10) made = link((comment += TAIL_BYTES - 10 - made.rest.length));
    const bytes = concatBytes([tone, made.first, made.rest]);
    expect(lengthOf(bytes)).toBe(tone.length);
    await expectToneAppendedPlays(bytes);
  });

  /**
   * A file of `bytes` (a recording of the tone, then a link cut off) appended
   * to with the tone's frames: it reads whole, both streams' frames, and
   * opusdec plays both.
   */
  async function expectToneAppendedPlays(bytes: Uint8Array): Promise<void> {
    const sent = (await drainFile(TONE)).frames;
    const path = outPath();
    writeFileSync(path, bytes);
    const sink = openSink("ogg", path, { append: true, channel: "input", preSkip: 312, pageMs: 100 });
    for (const frame of sent) send(sink as OggSink, MessageType.OpusFrame, frame.payload);
    await sink.close();
    const got = await drainFile(path);
    expect(got.error).toBeUndefined();
    expect(got.frames.map((f) => f.payload)).toEqual([...sent, ...sent].map((f) => f.payload));
    expect(decodedSamples(path, fx.dir)).toBeGreaterThan(decodedSamples(TONE, fx.dir));
  }

  test("a recording cut right after its OpusTags page (its headers whole, no audio page; in a chain, the last link's): that link is cut whole, since opusdec refuses a file holding a link without audio, the links appended after it too", async () => {
    const audio = pages[2]!;
    expect(audio.granule).toBeGreaterThan(0);
    expect(lengthOf(tone.subarray(0, audio.offset))).toBe(0);
    const chain = concatBytes([tone, tone]);
    const bare = chain.subarray(0, tone.length + audio.offset);
    expect(lengthOf(bare)).toBe(tone.length);
    expect(lengthOf(concatBytes([bare, new Uint8Array(4096)]))).toBe(tone.length);
    await expectToneAppendedPlays(bare);
  });

  test("a recording whose last link's audio ends within its pre-skip (none of it played): that link is cut whole too, since opusdec refuses a file holding a link that ends before its pre-skip is over, the links appended after it too; one past its pre-skip is kept", async () => {
    const sent = (await drainFile(TONE)).frames;
    // --pre-skip 3840 with a page per 20 ms packet: the first four audio pages end within it.
    const recorded = outPath();
    const sink = OggSink.open(recorded, { preSkip: 3840, pageMs: 20 });
    for (const frame of sent.slice(0, 8)) send(sink, MessageType.OpusFrame, frame.payload);
    await sink.close();
    const pages = pagesOf(read(recorded));
    expect(pages.slice(2, 7).map((p) => p.granule)).toEqual([960, 1920, 2880, 3840, 4800]);
    const cutAfter = (page: number) => concatBytes([tone, read(recorded).subarray(0, pages[page + 1]!.offset)]);
    for (const page of [2, 3, 4, 5]) expect({ page, at: lengthOf(cutAfter(page)) }).toEqual({ page, at: tone.length });
    expect(lengthOf(cutAfter(6))).toBe(cutAfter(6).length);

    await expectToneAppendedPlays(cutAfter(3));
  });
});
