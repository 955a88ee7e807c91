import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { OggSource } from "../../src/media/ogg-source.ts";
import { buildOpusHead } from "../../src/media/opus-head.ts";
import { buildOpusTags } from "../../src/media/opus-tags.ts";
import { opusPacketSamples } from "../../src/media/opus-toc.ts";
import { concatBytes, sameBytes } from "../support/bytes.ts";
import { write32LE } from "../../src/protocol/index.ts";
import { buildStream, collectingWriter, pagesOf, sealPage } from "../support/ogg.ts";
import {
  CHANNELS,
  encodeWith,
  FIXTURE_SAMPLES,
  ffmpegPackets,
  FRAME_MS,
  key,
  makeFixtures,
  md5,
  requireTool,
  runTool,
  type Fixtures,
} from "../support/opus-fixtures.ts";
import { chunkedSource, drain, drainFile } from "../support/sources.ts";
import { tempDir } from "../support/temp.ts";

let fx: Fixtures;
beforeAll(() => {
  fx = makeFixtures();
});
afterAll(() => fx.cleanup());

const read = (path: string) => new Uint8Array(readFileSync(path));

/** A CELT 20 ms stereo TOC (config 31, code 0), then filler: a valid packet of `size` bytes. */
function audioPacket(size: number, seed: number): Uint8Array {
  const p = Uint8Array.from({ length: size }, (_, i) => (i * 13 + seed) & 0xff);
  p[0] = 0xfc;
  return p;
}

function source(bytes: Uint8Array, options: { lenient?: boolean } = {}, chunks = [65536]) {
  return OggSource.from(chunkedSource(bytes, chunks, "t.opus"), options);
}

describe("OggSource on files made by opusenc", () => {
  for (const channels of CHANNELS) {
    for (const frameMs of FRAME_MS) {
      test(`${key(channels, frameMs)}: same packets as ffmpeg's demuxer, timed by their TOC`, async () => {
        const path = fx.opus.get(key(channels, frameMs))!;
        const { frames, error, source: src } = await drainFile(path);
        expect(error).toBeUndefined();

        const reference = ffmpegPackets(path);
        expect(reference.length).toBe((FIXTURE_SAMPLES + 312) / (48 * frameMs));
        expect(frames.map((f) => ({ size: f.payload.length, md5: md5(f.payload) }))).toEqual(reference);
        expect(frames.map((f) => f.timeMs)).toEqual(frames.map((_, i) => i * frameMs));
        expect(frames.every((f) => f.durationMs === frameMs)).toBe(true);
        expect(src.audioConfig).toEqual({ sampleRate: 48000, channels, frameSize: 48 * frameMs });
        expect(src.preSkip).toBe(312);

        // The sum of the TOC durations is the last granule position opusenc wrote.
        const total = frames.reduce((n, f) => n + opusPacketSamples(f.payload), 0);
        expect(total).toBe(pagesOf(read(path)).at(-1)!.granule);
      });
    }
  }

  test("a file cut with `ffmpeg -ss 1.3 -c copy` (granules that begin below zero): every packet ffmpeg's demuxer reads is sent, the end's page trimmed from the granule of the page before it", async () => {
    const whole = encodeWith(fx.dir, "to-cut", ["--framesize", "20"], { channels: 2, samples: 120000 });
    const cut = join(fx.dir, "cut.opus");
    const made = runTool([requireTool("ffmpeg", "ffmpeg"), "-hide_banner", "-loglevel", "error", "-y", "-ss", "1.3", "-i", whole, "-c", "copy", cut]);
    expect(made.exitCode).toBe(0);
    // The shape: ffmpeg keeps the whole page it seeked into, its packets before the cut timed below
    // zero, and the end's page holds many packets, the last trimmed in part only.
    const pages = pagesOf(read(cut));
    const [firstAudio, beforeEnd, end] = [pages[2]!, pages.at(-2)!, pages.at(-1)!];
    expect(firstAudio.granule).toBeLessThan(firstAudio.table.filter((l) => l < 255).length * 960);
    const onEnd = end.table.filter((l) => l < 255).length;
    expect(onEnd).toBeGreaterThan(10);
    expect(beforeEnd.granule + onEnd * 960 - end.granule).toBeLessThan(960);

    const { frames, error } = await drainFile(cut);
    expect(error).toBeUndefined();
    expect(frames.map((f) => ({ size: f.payload.length, md5: md5(f.payload) }))).toEqual(ffmpegPackets(cut));
  });

  test("chunk boundaries anywhere give the same frames", async () => {
    const bytes = read(fx.opus.get(key(2, 20))!);
    const whole = await drain(source(bytes));
    for (const chunks of [[1], [7, 3000], [27, 28, 255], [4096]]) {
      const got = await drain(source(bytes, {}, chunks));
      expect(got.error).toBeUndefined();
      expect(got.frames).toEqual(whole.frames);
    }
  });

  test("skips an OpusTags packet spread over several pages", async () => {
    const path = encodeWith(fx.dir, "bigtags", ["--comment", `NOTE=${"x".repeat(70000)}`]);
    const pages = pagesOf(read(path));
    expect(pages[2]!.flags & 1).toBe(1); // the tags really do continue onto a second page
    const { frames, error } = await drainFile(path);
    expect(error).toBeUndefined();
    expect(frames.map((f) => md5(f.payload))).toEqual(ffmpegPackets(path).map((p) => p.md5));
  });

  test("the Config names OpusHead's input rate when Opus decodes at it, with the frame size counted at that rate; any other rate gives 48 kHz", async () => {
    // opusenc keeps the WAV's rate as OpusHead's input rate; a 44.1 kHz source (a CD's) is common, and no Opus decoder runs at it.
    const cases = [
      { rate: 16000, channels: 1, frameMs: 20, config: { sampleRate: 16000, channels: 1, frameSize: 320 } },
      { rate: 8000, channels: 2, frameMs: 10, config: { sampleRate: 8000, channels: 2, frameSize: 80 } },
      { rate: 12000, channels: 1, frameMs: 40, config: { sampleRate: 12000, channels: 1, frameSize: 480 } },
      { rate: 24000, channels: 2, frameMs: 2.5, config: { sampleRate: 24000, channels: 2, frameSize: 60 } },
      { rate: 44100, channels: 2, frameMs: 60, config: { sampleRate: 48000, channels: 2, frameSize: 2880 } },
    ];
    const paths = cases.map(({ rate, channels, frameMs }) => encodeWith(fx.dir, `rate-${rate}`, ["--framesize", String(frameMs)], { channels, samples: rate / 5, rate }));
    for (const [k, { config }] of cases.entries()) {
      const { frames, error, source: src } = await drainFile(paths[k]!);
      expect(error).toBeUndefined();
      expect(frames.length).toBeGreaterThan(0);
      expect(src.audioConfig).toEqual(config);
    }

    // Chained (an encoder restarted into a FIFO at another rate): each stream's Config at its own rate.
    const src = source(concatBytes([read(paths[1]!), read(paths[0]!)]));
    const configs: unknown[] = [];
    for (;;) {
      for (let f = src.next(); f; f = src.next()) {
        if (JSON.stringify(configs.at(-1)) !== JSON.stringify(src.audioConfig)) configs.push({ ...src.audioConfig });
      }
      if (!(await src.fill())) break;
    }
    expect(configs).toEqual([cases[1]!.config, cases[0]!.config]);

    // An OpusHead whose input rate is 0 (unknown, RFC 7845 5.1): 48 kHz.
    const unknown = source(buildStream([audioPacket(40, 1)], 1, 255, 0x1234, 0).bytes);
    expect((await drain(unknown)).frames.length).toBe(1);
    expect(unknown.audioConfig).toEqual({ sampleRate: 48000, channels: 2, frameSize: 960 });
  });

  test("rewind() starts again from the first frame", async () => {
    const src = await OggSource.open(fx.opus.get(key(1, 10))!);
    const first = await drain(src);
    expect(src.rewind()).toBe(true);
    const second = await drain(src);
    await src.close();
    expect(second.frames).toEqual(first.frames);
  });

  test("rewind() in the middle of a page, even mid-chunk, starts cleanly", async () => {
    const bytes = read(fx.opus.get(key(2, 60))!);
    const src = source(bytes, {}, [1000]);
    const whole = await drain(source(bytes));
    let got = 0;
    while (got < 3) {
      if (src.next()) got++;
      else await src.fill();
    }
    expect(src.rewind()).toBe(true);
    expect((await drain(src)).frames).toEqual(whole.frames);
  });
});

/** A writer of a stereo 48 kHz stream whose two header pages (OpusHead, OpusTags) are written: the audio pages are the test's. */
function headersWritten() {
  const { writer, pages } = collectingWriter(7);
  writer.addPacket(buildOpusHead({ channels: 2, preSkip: 312, inputSampleRate: 48000 }), 0);
  writer.flushPage();
  writer.addPacket(buildOpusTags(), 0);
  writer.flushPage();
  return { writer, pages };
}

describe("OggSource on hand-built streams", () => {
  test("packets the end-of-stream page's granule trims whole are not sent; one trimmed in part is (RFC 7845 4.4)", async () => {
    const packets = [audioPacket(100, 1), audioPacket(100, 2), audioPacket(100, 3), audioPacket(100, 4)];
    const samples = opusPacketSamples(packets[0]!);
    // The last two on the end's page, its granule ending half-way into the third: the fourth is trimmed whole.
    const { writer, pages } = headersWritten();
    writer.addPacket(packets[0]!, samples);
    writer.addPacket(packets[1]!, 2 * samples);
    writer.flushPage();
    writer.addPacket(packets[2]!, 2 * samples + samples / 2);
    writer.addPacket(packets[3]!, 2 * samples + samples / 2);
    writer.flushPage(true);
    const { frames, error } = await drain(source(concatBytes(pages)));
    expect(error).toBeUndefined();
    expect(frames.map((f) => f.payload)).toEqual(packets.slice(0, 3));
    // Read again from the top (--loop), the same.
    const again = source(concatBytes(pages));
    await drain(again);
    expect(again.rewind()).toBe(true);
    expect((await drain(again)).frames.map((f) => f.payload)).toEqual(packets.slice(0, 3));
  });

  test("reassembles a packet spread over several pages", async () => {
    const packets = [audioPacket(100, 1), audioPacket(4000, 2), audioPacket(300, 3)];
    const { bytes, pages } = buildStream(packets, 1, 4);
    expect(pages.length).toBeGreaterThanOrEqual(2 + 1 + 4 + 2); // headers, small, 16 segments over 4 pages, ...
    const { frames, error } = await drain(source(bytes, {}, [333]));
    expect(error).toBeUndefined();
    expect(frames.map((f) => f.payload)).toEqual(packets);
    expect(frames.map((f) => f.timeMs)).toEqual([0, 20, 40]);
  });

  test("a packet over 4096 bytes is an error naming its offset, after the frames before it", async () => {
    const packets = [audioPacket(100, 1), audioPacket(5000, 2), audioPacket(100, 3)];
    const { bytes, pages } = buildStream(packets, 1);
    const bigPage = pages[0]!.length + pages[1]!.length + pages[2]!.length;
    const bigPacket = bigPage + 27 + 20; // its page's header and 20 lacing values
    const { frames, error } = await drain(source(bytes));
    expect(frames.map((f) => f.payload)).toEqual([packets[0]!]);
    expect(error?.message).toBe(`ogg source t.opus: audio packet of 5000 bytes exceeds 4096 at byte ${bigPacket}`);
  });

  test("a packet over 4096 bytes spread over several pages is an error naming the offset of its first byte, on the first of them", async () => {
    const packets = [audioPacket(100, 1), audioPacket(5000, 2)];
    // 4 lacing values a page: the 5000-byte packet's 20 segments begin on page 3 (after the headers and the first packet).
    const { bytes, offsets } = buildStream(packets, 1, 4);
    const infos = pagesOf(bytes);
    expect(infos[3]!.table).toEqual([255, 255, 255, 255]);
    expect(infos[4]!.flags & 1).toBe(1);
    const { frames, error } = await drain(source(bytes, {}, [333]));
    expect(frames.map((f) => f.payload)).toEqual([packets[0]!]);
    expect(error?.message).toBe(`ogg source t.opus: audio packet of 5000 bytes exceeds 4096 at byte ${offsets[3]! + 27 + 4}`);
  });

  test("a packet that begins where the end-of-stream page's granule ends is trimmed whole and not sent: the silence the sink ends a recording with", async () => {
    const packets = [audioPacket(100, 1), audioPacket(100, 2), audioPacket(100, 3)];
    const samples = opusPacketSamples(packets[0]!);
    const { writer, pages } = headersWritten();
    writer.addPacket(packets[0]!, samples);
    writer.addPacket(packets[1]!, 2 * samples);
    writer.flushPage();
    // The end's page: one packet, whose granule is the page before's: every sample of it trimmed.
    writer.addPacket(packets[2]!, 2 * samples);
    writer.flushPage(true);
    const { frames, error } = await drain(source(concatBytes(pages)));
    expect(error).toBeUndefined();
    expect(frames.map((f) => f.payload)).toEqual(packets.slice(0, 2));
  });

  test("a stream that starts at a granule past zero (joined mid-broadcast): the end's page is trimmed from the granule of the page before it, so its silence trimmed whole is not sent", async () => {
    const packets = [audioPacket(100, 1), audioPacket(100, 2), audioPacket(100, 3)];
    const samples = opusPacketSamples(packets[0]!);
    const start = 48000 * 3600;
    const { writer, pages } = headersWritten();
    writer.addPacket(packets[0]!, start + samples);
    writer.addPacket(packets[1]!, start + 2 * samples);
    writer.flushPage();
    writer.addPacket(packets[2]!, start + 2 * samples);
    writer.flushPage(true);
    const { frames, error } = await drain(source(concatBytes(pages)));
    expect(error).toBeUndefined();
    expect(frames.map((f) => f.payload)).toEqual(packets.slice(0, 2));
  });

  test("an end-of-stream page's granule below zero other than -1 trims nothing: read unsigned, as libopusfile does, it is past every sample, and the page's packets are sent", async () => {
    const packets = [audioPacket(100, 1), audioPacket(100, 2), audioPacket(100, 3)];
    const samples = opusPacketSamples(packets[0]!);
    const { writer, pages } = headersWritten();
    writer.addPacket(packets[0]!, samples);
    writer.flushPage();
    writer.addPacket(packets[1]!, -5);
    writer.addPacket(packets[2]!, -5);
    writer.flushPage(true);
    expect(pagesOf(concatBytes(pages)).at(-1)!.granule).toBe(-5);
    const { frames, error } = await drain(source(concatBytes(pages)));
    expect(error).toBeUndefined();
    expect(frames.map((f) => f.payload)).toEqual(packets);
  });

  test("an audio packet of 4096 bytes, the wire's largest, is taken; one of 4097 is refused, naming its offset", async () => {
    const packets = [audioPacket(100, 1), audioPacket(4096, 2), audioPacket(4097, 3), audioPacket(100, 4)];
    const { bytes } = buildStream(packets, 1);
    const infos = pagesOf(bytes);
    // Headers, then a page a packet: the 4097-byte one is on page 4, after its header and 17 lacing values.
    expect(infos[4]!.table).toEqual([...Array(16).fill(255), 17]);
    for (const lenient of [false, true]) {
      const { frames, error } = await drain(source(bytes, { lenient }));
      expect(frames.map((f) => f.payload)).toEqual([packets[0]!, packets[1]!]);
      expect(error?.message).toBe(`ogg source t.opus: audio packet of 4097 bytes exceeds 4096 at byte ${infos[4]!.offset + 27 + 17}`);
    }
  });

  test("a bad CRC is an error naming the page; lenient skips the page and counts it", async () => {
    const packets = Array.from({ length: 12 }, (_, i) => audioPacket(50 + i, i));
    const { bytes, offsets } = buildStream(packets, 3);
    const bad = bytes.slice();
    bad[offsets[3]! + 40] ^= 0x01; // a body byte of the second audio page (packets 3..5)

    const strict = await drain(source(bad));
    expect(strict.frames.length).toBe(3);
    expect(strict.error?.message).toBe(`ogg source t.opus: bad CRC in page at byte ${offsets[3]}`);

    const src = source(bad, { lenient: true });
    const lenient = await drain(src);
    expect(lenient.error).toBeUndefined();
    expect(src.skippedPages).toBe(1);
    expect(lenient.frames.map((f) => f.payload)).toEqual([...packets.slice(0, 3), ...packets.slice(6)]);
  });

  test("--loop over bytes replayed unchanged checks each page's CRC on the first pass only, up to the first bad page", async () => {
    const packets = Array.from({ length: 12 }, (_, i) => audioPacket(50 + i, i));
    const { bytes, offsets } = buildStream(packets, 3);
    const played = bytes.slice();
    played[offsets[4]! + 40] ^= 0x01; // bad from the start: the third audio page (packets 6..8)
    const src = OggSource.from(chunkedSource(played, [65536], "t.opus", true), { lenient: true });
    const first = await drain(src);
    expect(src.skippedPages).toBe(1);
    // A source that breaks its promise shows what is trusted on the next pass: the second
    // audio page, before the bad one, is taken unchecked; the last one, after it, is checked.
    played[offsets[3]! + 40] ^= 0x01;
    played[offsets[5]! + 40] ^= 0x01;
    expect(src.rewind()).toBe(true);
    const second = await drain(src);
    expect(second.error).toBeUndefined();
    expect(src.skippedPages).toBe(1 + 2);
    expect(first.frames.map((f) => f.payload)).toEqual([...packets.slice(0, 6), ...packets.slice(9)]);
    const changed = packets[3]!.slice();
    changed[40 - (27 + 3)]! ^= 0x01; // after the page header and its three lacing values
    expect(second.frames.map((f) => f.payload)).toEqual([...packets.slice(0, 3), changed, ...packets.slice(4, 6)]);
  });

  test("with two bad pages, every pass skips both and yields the same frames", async () => {
    const packets = Array.from({ length: 15 }, (_, i) => audioPacket(50 + i, i));
    const { bytes, offsets } = buildStream(packets, 3);
    const played = bytes.slice();
    played[offsets[3]! + 40] ^= 0x01; // packets 3..5
    played[offsets[5]! + 40] ^= 0x01; // packets 9..11
    const src = OggSource.from(chunkedSource(played, [65536], "t.opus", true), { lenient: true });
    const good = [...packets.slice(0, 3), ...packets.slice(6, 9), ...packets.slice(12)];
    for (let pass = 1; pass <= 3; pass++) {
      if (pass > 1) expect(src.rewind()).toBe(true);
      expect((await drain(src)).frames.map((f) => f.payload)).toEqual(good);
      expect(src.skippedPages).toBe(2 * pass);
    }
  });

  test("a looped file on disk: a small one is held and replayed, a large one is read, and checked, again", async () => {
    const { path, cleanup } = tempDir("aa-loop-");
    try {
      const small = buildStream(Array.from({ length: 6 }, (_, i) => audioPacket(50 + i, i)), 3);
      writeFileSync(path("small.opus"), small.bytes);
      // Over the 1 MiB a source holds in memory: 300 packets of 4000 bytes.
      const large = buildStream(Array.from({ length: 300 }, (_, i) => audioPacket(4000, i)), 3);
      writeFileSync(path("large.opus"), large.bytes);
      for (const [name, stream, replayed] of [["small.opus", small, true], ["large.opus", large, false]] as const) {
        const src = await OggSource.open(path(name));
        try {
          const first = await drain(src);
          expect(first.error).toBeUndefined();
          // The file changes on disk between passes: a body byte of the second audio page.
          const offsets = stream.offsets;
          const changed = stream.bytes.slice();
          changed[offsets[3]! + 40] ^= 0x01;
          writeFileSync(path(name), changed);
          expect(src.rewind()).toBe(true);
          const second = await drain(src);
          if (replayed) {
            expect(second.error).toBeUndefined(); // held at open: the change is not seen
            expect(second.frames).toEqual(first.frames);
          } else {
            expect(second.frames.length).toBe(3);
            expect(second.error?.message).toBe(`ogg source ${path(name)}: bad CRC in page at byte ${offsets[3]}`);
          }
        } finally {
          await src.close();
        }
      }
    } finally {
      cleanup();
    }
  });

  test("bytes read again from their file are checked again on every pass", async () => {
    const packets = Array.from({ length: 6 }, (_, i) => audioPacket(50 + i, i));
    const { bytes, offsets } = buildStream(packets, 3);
    const played = bytes.slice();
    const src = OggSource.from(chunkedSource(played, [65536], "t.opus", false));
    expect((await drain(src)).frames.length).toBe(6);
    played[offsets[3]! + 40] ^= 0x01; // the file changed between passes
    expect(src.rewind()).toBe(true);
    const second = await drain(src);
    expect(second.frames.length).toBe(3);
    expect(second.error?.message).toBe(`ogg source t.opus: bad CRC in page at byte ${offsets[3]}`);
  });

  test("lenient: a packet that spanned the bad page is dropped, not returned half", async () => {
    const packets = [audioPacket(100, 1), audioPacket(2000, 2), audioPacket(100, 3), audioPacket(120, 4)];
    const { bytes, pages } = buildStream(packets, 1, 4); // the 2000-byte packet spans 2 full pages
    const infos = pagesOf(bytes);
    const continued = infos.findIndex((p) => p.flags & 1);
    const bad = bytes.slice();
    bad[infos[continued]!.offset + 27 + 4 + 10] ^= 0xff; // a body byte, past header and lacing
    const src = source(bad, { lenient: true });
    const { frames, error } = await drain(src);
    expect(error).toBeUndefined();
    expect(src.skippedPages).toBe(1);
    expect(frames.map((f) => f.payload)).toEqual([packets[0]!, packets[2]!, packets[3]!]);
  });

  test("lenient: a bad page anywhere in a packet spread over 6 pages drops that packet alone; its continued pages after the bad one are passed over", async () => {
    // 1275 bytes = 5 x 255: lacing [255 x 5, 0], one value a page.
    const packets = [audioPacket(100, 1), audioPacket(1275, 2), audioPacket(100, 3), audioPacket(120, 4)];
    const { bytes } = buildStream(packets, 1, 1);
    const infos = pagesOf(bytes);
    // Headers, the first packet, then the big one's 6 pages, the first not continued.
    const big = infos.slice(3, 9);
    expect(big.map((p) => p.table)).toEqual([[255], [255], [255], [255], [255], [0]]);
    expect(big.map((p) => p.flags & 1)).toEqual([0, 1, 1, 1, 1, 1]);
    expect(infos[9]!.flags & 1).toBe(0);
    for (const [k, page] of big.entries()) {
      const bad = bytes.slice();
      bad[page.offset + 6] ^= 0x01; // a granule byte: the page's CRC no longer matches
      for (const chunks of [[7], [65536]]) {
        const src = source(bad, { lenient: true }, chunks);
        const { frames, error } = await drain(src);
        const label = `page ${k + 1} of 6 bad, chunks of ${chunks}`;
        expect(error?.message, label).toBeUndefined();
        expect(frames.map((f) => f.payload), label).toEqual([packets[0]!, packets[2]!, packets[3]!]);
        expect(frames.map((f) => f.timeMs), label).toEqual([0, 20, 40]);
        expect(src.counts, label).toEqual({ skipped_pages: 1, missing_pages: 0, repeated_pages: 0, other_stream_pages: 0, skipped_bytes: page.size });
      }
    }
  });

  test("a file cut inside a page is an error naming the page, after the frames before it", async () => {
    const path = fx.opus.get(key(2, 20))!;
    const bytes = read(path);
    const pages = pagesOf(bytes);
    const last = pages.at(-1)!;
    const cut = bytes.subarray(0, last.offset + 100);
    const framesBefore = ffmpegPackets(path).length - last.table.filter((l) => l < 255).length;
    const { frames, error } = await drain(source(cut));
    expect(frames.length).toBe(framesBefore);
    expect(error?.message).toBe(
      `ogg source t.opus: truncated: input ends ${last.size - 100} byte(s) short of the page at byte ${last.offset}`,
    );
  });

  test("a file cut between pages inside a packet is an error naming the packet", async () => {
    const packets = [audioPacket(100, 1), audioPacket(2000, 2)];
    const { bytes, pages } = buildStream(packets, 1, 4);
    const upTo = pages.slice(0, 4).reduce((n, p) => n + p.length, 0); // headers, packet 0, first piece of packet 1
    const packetStart = upTo - pages[3]!.length + 27 + 4;
    const { frames, error } = await drain(source(bytes.subarray(0, upTo)));
    expect(frames.map((f) => f.payload)).toEqual([packets[0]!]);
    expect(error?.message).toBe(
      `ogg source t.opus: truncated: input ends inside the packet that starts at byte ${packetStart}`,
    );
  });

  test("a file that ends after its OpusHead, before the OpusTags, is cut inside the headers, strict or lenient", async () => {
    const bytes = read(fx.opus.get(key(2, 20))!);
    const pages = pagesOf(bytes);
    const headOnly = bytes.subarray(0, pages[1]!.offset);
    expect(pagesOf(headOnly).length).toBe(1);
    // The OpusHead page flagged end-of-stream too: the input still ends before the headers do.
    const { writer, pages: eos } = collectingWriter(3);
    writer.addPacket(buildOpusHead({ channels: 1, preSkip: 312, inputSampleRate: 48000 }), 0);
    writer.flushPage(true);
    for (const [label, cut] of [["opusenc's first page", headOnly], ["a lone OpusHead page with EOS", eos[0]!]] as const) {
      for (const lenient of [false, true]) {
        const { frames, error } = await drain(source(cut, { lenient }));
        expect({ label, lenient, frames: frames.length, error: error?.message }).toEqual({
          label,
          lenient,
          frames: 0,
          error: "ogg source t.opus: input ends inside the Opus headers",
        });
      }
    }
    // With its OpusTags too, the headers are whole: a stream without audio, no error.
    const headers = await drain(source(bytes.subarray(0, pages[2]!.offset)));
    expect({ frames: headers.frames.length, error: headers.error }).toEqual({ frames: 0, error: undefined });
  });

  test("a Vorbis file is not an Ogg Opus stream", async () => {
    const ffmpeg = requireTool("ffmpeg", "ffmpeg");
    const path = join(fx.dir, "vorbis.ogg");
    const r = runTool([ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.5",
      "-c:a", "libvorbis", "-f", "ogg", path]);
    expect(r.exitCode).toBe(0);
    const { frames, error } = await drainFile(path);
    expect(frames.length).toBe(0);
    expect(error?.message).toBe(
      `ogg source ${path} is not an Ogg Opus stream: its first stream (at byte 0) begins with "\\x01vorbis\\x00"`,
    );
  });

  test("a one-page stream whose packet is not OpusHead is not an Ogg Opus stream", async () => {
    const { writer, pages } = collectingWriter(9);
    writer.addPacket(new TextEncoder().encode("hello, world"), 0);
    writer.flushPage(true);
    const { error } = await drain(source(pages[0]!));
    expect(error?.message).toBe(
      `ogg source t.opus is not an Ogg Opus stream: its first stream (at byte 0) begins with "hello, w"`,
    );
    const empty = await drain(source(new Uint8Array(0)));
    expect(empty.error?.message).toBe("ogg source t.opus is not an Ogg Opus stream: it holds no OpusHead");
  });

  test("reads only the first Opus stream and counts the other stream's pages", async () => {
    const ours = buildStream([audioPacket(60, 1), audioPacket(70, 2), audioPacket(80, 3)], 1, 255, 1);
    const theirs = buildStream([audioPacket(90, 4), audioPacket(99, 5)], 1, 255, 2);
    // BOS pages first (ours, theirs), then the rest interleaved page by page.
    const mixed: Uint8Array[] = [ours.pages[0]!, theirs.pages[0]!];
    for (let i = 1; i < Math.max(ours.pages.length, theirs.pages.length); i++) {
      if (ours.pages[i]) mixed.push(ours.pages[i]!);
      if (theirs.pages[i]) mixed.push(theirs.pages[i]!);
    }
    const src = source(concatBytes(mixed));
    const { frames, error } = await drain(src);
    expect(error).toBeUndefined();
    expect(frames.map((f) => f.payload[1])).toEqual([1, 2, 3].map((s) => audioPacket(10, s)[1]));
    expect(src.otherStreamPages).toBe(theirs.pages.length);
  });

  test("streams chained one after another (an encoder restarted into one FIFO) are read in turn, the Config following each OpusHead", async () => {
    const [mono, stereo] = [fx.opus.get(key(1, 20))!, fx.opus.get(key(2, 60))!];
    const each = await Promise.all([mono, stereo].map(async (path) => (await drainFile(path)).frames.map((f) => f.payload)));
    const chained = concatBytes([readFileSync(mono), readFileSync(stereo)]);
    const src = source(chained, {}, [4096]);
    const configs: unknown[] = [];
    const times: number[] = [];
    const payloads: Uint8Array[] = [];
    for (;;) {
      for (let f = src.next(); f; f = src.next()) {
        payloads.push(f.payload.slice());
        times.push(f.timeMs);
        if (configs.length === 0 || JSON.stringify(configs.at(-1)) !== JSON.stringify(src.audioConfig)) configs.push({ ...src.audioConfig });
      }
      if (!(await src.fill())) break;
    }
    expect(configs).toEqual([
      { sampleRate: 48000, channels: 1, frameSize: 960 },
      { sampleRate: 48000, channels: 2, frameSize: 2880 },
    ]);
    const expected = [...each[0]!, ...each[1]!];
    expect(payloads.length).toBe(expected.length);
    expect(payloads.findIndex((p, i) => !sameBytes(p, expected[i]!))).toBe(-1);
    // One timeline across the join, for pacing.
    expect(times.every((t, i) => i === 0 || t > times[i - 1]!)).toBe(true);
    expect(src.otherStreamPages).toBe(0);
  });

  test("a non-Opus stream before the Opus one in the BOS group is skipped", async () => {
    const { writer, pages: other } = collectingWriter(77);
    writer.addPacket(new TextEncoder().encode("\x80theora-ish"), 0);
    writer.flushPage();
    const ours = buildStream([audioPacket(60, 1)], 1);
    const src = source(concatBytes([other[0]!, ...ours.pages]));
    const { frames, error } = await drain(src);
    expect(error).toBeUndefined();
    expect(frames.length).toBe(1);
    expect(src.otherStreamPages).toBe(1);
  });
});

/** The bytes of `path` with page `index` (as pagesOf counts them) left out. */
function withoutPage(bytes: Uint8Array, index: number): Uint8Array {
  const page = pagesOf(bytes)[index]!;
  return concatBytes([bytes.subarray(0, page.offset), bytes.subarray(page.offset + page.size)]);
}

/** The source's reports, as "level message" with the fields kept apart. */
function reporting() {
  const reports: { level: string; message: string; fields: Record<string, unknown> }[] = [];
  const report = (level: string, message: string, fields: Record<string, unknown> = {}) => void reports.push({ level, message, fields });
  return { reports, report };
}

/** Pulls every frame as a copy, noting each Config change (a chained stream's OpusHead). */
async function framesAndConfigs(src: OggSource) {
  const payloads: Uint8Array[] = [];
  const configs: unknown[] = [];
  let error: Error | undefined;
  try {
    for (;;) {
      for (let f = src.next(); f; f = src.next()) {
        payloads.push(f.payload.slice());
        if (JSON.stringify(configs.at(-1)) !== JSON.stringify(src.audioConfig)) configs.push({ ...src.audioConfig });
      }
      if (!(await src.fill())) break;
    }
  } catch (e) {
    error = e as Error;
  }
  return { payloads, configs, error };
}

describe("OggSource: what the wire cannot carry, and damage", () => {
  /** As a live encoder writes them: a page every 20 ms, 1 s of stereo or mono. */
  const live = (name: string, channels: number, frameMs = 20) =>
    encodeWith(fx.dir, name, ["--framesize", String(frameMs), "--max-delay", "20"], { channels, samples: 48000 });

  test("an OpusHead of channel mapping family 1 (opusenc, 6 channels) or 255 (ffmpeg) is refused, naming the family and the channels", async () => {
    const family1 = encodeWith(fx.dir, "six", [], { channels: 6 });
    const family255 = join(fx.dir, "family255.opus");
    const made = runTool([requireTool("ffmpeg", "ffmpeg"), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=duration=0.2",
      "-ac", "4", "-c:a", "libopus", "-mapping_family", "255", family255]);
    expect(made.exitCode, made.stderr).toBe(0);
    for (const [path, family, channels] of [[family1, 1, 6], [family255, 255, 4]] as const) {
      expect(pagesOf(read(path))[0]!.offset).toBe(0);
      const { frames, error } = await drainFile(path);
      expect(frames.length).toBe(0);
      // The OpusHead packet starts after its page's 27-byte header and one lacing value.
      expect(error?.message).toBe(
        `ogg source ${path}: OpusHead channel mapping family ${family} with ${channels} channels cannot be carried: allowed is one Opus stream of 1 or 2 channels (family 0) at byte 28`,
      );
    }
    // Chained after a stereo stream (an encoder restarted with other settings): the first plays, then the refusal.
    const stereo = fx.opus.get(key(2, 20))!;
    const { payloads, error } = await framesAndConfigs(source(concatBytes([read(stereo), read(family1)])));
    expect(payloads.length).toBe((await drainFile(stereo)).frames.length);
    expect(error?.message).toBe(
      `ogg source t.opus: OpusHead channel mapping family 1 with 6 channels cannot be carried: allowed is one Opus stream of 1 or 2 channels (family 0) at byte ${read(stereo).length + 28}`,
    );
  });

  test("--lenient on an opusenc file with one byte flipped in a page body: the page is skipped, counted and reported", async () => {
    const bytes = read(live("flipped", 2));
    const whole = (await drain(source(bytes))).frames;
    const pages = pagesOf(bytes);
    expect(pages.length).toBeGreaterThan(20);
    const bad = bytes.slice();
    bad[pages[3]!.offset + pages[3]!.size - 10]! ^= 0x20; // a body byte of the second audio page
    const { reports, report } = reporting();
    const src = OggSource.from(chunkedSource(bad, [65536], "t.opus"), { lenient: true, report });
    const { frames, error } = await drain(src);
    expect(error).toBeUndefined();
    // A page every packet: the bad page held the second audio packet, alone.
    expect(pages[3]!.table.length).toBe(1);
    expect(frames.map((f) => f.payload)).toEqual(whole.filter((_, i) => i !== 1).map((f) => f.payload));
    // Its bytes are passed over too, looking for the next page from its second byte.
    expect(src.counts).toEqual({ skipped_pages: 1, missing_pages: 0, repeated_pages: 0, other_stream_pages: 0, skipped_bytes: pages[3]!.size });
    // The gap the skipped page leaves in the page numbers is that page: not counted again.
    expect(reports).toEqual([{ level: "warn", message: "skipped a page with a bad CRC", fields: { source: "t.opus", offset: pages[3]!.offset, skipped_pages: 1 } }]);
  });

  test("--lenient, a page whose length is what was damaged (a lacing value): the next page is sought from its second byte, and all after it is read", async () => {
    const bytes = read(live("lacing", 2));
    const whole = (await drain(source(bytes))).frames;
    const pages = pagesOf(bytes);
    expect(pages[5]!.table.length).toBe(1);
    // Longer than it is (it would swallow the next page's header), and shorter (its last bytes would look like a page's).
    for (const change of [+37, -37]) {
      const bad = bytes.slice();
      bad[pages[5]!.offset + 27] = pages[5]!.table[0]! + change;
      expect((await drain(source(bad))).error?.message).toBe(`ogg source t.opus: bad CRC in page at byte ${pages[5]!.offset}`);
      // Chunks of 1 and 7 bytes put every page, the bad one's bytes read again among them, across chunks.
      for (const chunk of [1, 7, 65536]) {
        const { reports, report } = reporting();
        const src = OggSource.from(chunkedSource(bad, [chunk], "t.opus"), { lenient: true, report });
        const { frames, error } = await drain(src);
        expect(error, `${change} in chunks of ${chunk}`).toBeUndefined();
        // The bad page held the fourth audio packet, alone.
        expect(frames.map((f) => f.payload)).toEqual(whole.filter((_, i) => i !== 3).map((f) => f.payload));
        expect(src.counts).toEqual({ skipped_pages: 1, missing_pages: 0, repeated_pages: 0, other_stream_pages: 0, skipped_bytes: pages[5]!.size });
        expect(reports.map((r) => r.message)).toEqual(["skipped a page with a bad CRC"]);
      }
    }
  });

  test("--lenient, bytes between pages that begin none (a capture pattern's start, one of another version): passed over, counted and told once; strict fails there", async () => {
    const bytes = read(live("inserted", 1));
    const whole = (await drain(source(bytes))).frames;
    const pages = pagesOf(bytes);
    const at = pages[6]!.offset;
    const junk = new TextEncoder().encode("no page here Og Ogg OggS\x01 still none O");
    const bad = concatBytes([bytes.subarray(0, at), junk, bytes.subarray(at)]);
    expect((await drain(source(bad))).error?.message).toBe(`ogg source t.opus: no Ogg capture pattern "OggS" at byte ${at}`);
    for (const chunk of [1, 3, 65536]) {
      const { reports, report } = reporting();
      const src = OggSource.from(chunkedSource(bad, [chunk], "t.opus"), { lenient: true, report });
      const { frames, error } = await drain(src);
      expect(error, `chunks of ${chunk}`).toBeUndefined();
      expect(frames.map((f) => f.payload)).toEqual(whole.map((f) => f.payload));
      expect(src.counts).toEqual({ skipped_pages: 0, missing_pages: 0, repeated_pages: 0, other_stream_pages: 0, skipped_bytes: junk.length });
      expect(reports).toEqual([
        { level: "warn", message: "passed over bytes that begin no page", fields: { source: "t.opus", offset: at, bytes: junk.length, skipped_bytes: junk.length } },
      ]);
    }
  });

  test("a page missing from the middle: strict fails naming the stream and the gap; lenient reads on, counts and reports the missing pages", async () => {
    const bytes = read(live("gap", 1));
    const pages = pagesOf(bytes);
    expect(pages.length).toBeGreaterThan(20);
    const serial = pages[0]!.serial.toString(16).padStart(8, "0");
    const cut = withoutPage(bytes, 3);
    const whole = (await drain(source(bytes))).frames;

    const strict = await drain(source(cut));
    expect(strict.frames.length).toBeGreaterThan(0);
    expect(strict.frames).toEqual(whole.slice(0, strict.frames.length));
    expect(strict.error?.message).toBe(`ogg source t.opus: page sequence jumps from 2 to 4 in stream ${serial} (1 page(s) missing) at byte ${pages[3]!.offset}`);

    const { reports, report } = reporting();
    const src = OggSource.from(chunkedSource(cut, [65536], "t.opus"), { lenient: true, report });
    const lenient = await drain(src);
    expect(lenient.error).toBeUndefined();
    // A page every packet: what is missing is the second audio packet, alone.
    expect(lenient.frames.map((f) => f.payload)).toEqual(whole.filter((_, i) => i !== 1).map((f) => f.payload));
    expect(src.counts).toEqual({ skipped_pages: 0, missing_pages: 1, repeated_pages: 0, other_stream_pages: 0, skipped_bytes: 0 });
    expect(reports).toEqual([
      {
        level: "warn",
        message: "pages missing from the stream",
        fields: { source: "t.opus", serial, offset: pages[3]!.offset, expected_sequence: 3, sequence: 4, missing: 1, missing_pages: 1 },
      },
    ]);
  });

  test("--lenient, multiplexed: a bad page of the other stream does not stand for a page missing from ours; one whose serial no stream has (damaged there) still may, and so does one of a stream of ours chained after that took the other's serial", async () => {
    const ours = buildStream([1, 2, 3, 4, 5].map((s) => audioPacket(60, s)), 1, 255, 1);
    const theirs = buildStream([6, 7, 8, 9, 10].map((s) => audioPacket(90, s)), 1, 255, 2);
    /** BOS pages first, then the rest interleaved page by page: ours, theirs (`edit` may change or leave out a page). */
    const mixed = (edit: (page: Uint8Array, serial: number, index: number) => Uint8Array | undefined) => {
      const pages: (Uint8Array | undefined)[] = [edit(ours.pages[0]!, 1, 0), edit(theirs.pages[0]!, 2, 0)];
      for (let i = 1; i < ours.pages.length; i++) pages.push(edit(ours.pages[i]!, 1, i), edit(theirs.pages[i]!, 2, i));
      return concatBytes(pages.filter((p) => p !== undefined));
    };
    const damaged = (page: Uint8Array, at: number) => page.map((b, k) => (k === at ? b ^ 0xff : b));
    const run = async (bytes: Uint8Array) => {
      const { reports, report } = reporting();
      const src = OggSource.from(chunkedSource(bytes, [65536], "t.opus"), { lenient: true, report });
      const { frames, error } = await drain(src);
      expect(error).toBeUndefined();
      return { sent: frames.map((f) => f.payload[1]), counts: src.counts, missing: reports.filter((r) => r.message === "pages missing from the stream").length };
    };
    const sent = (...seeds: number[]) => seeds.map((s) => audioPacket(10, s)[1]);
    // Theirs' page 3 damaged in its body, ours' page 4 (audio packet 3) lost on the way: two pages, two counts.
    const otherBad = mixed((page, serial, i) => (serial === 2 && i === 3 ? damaged(page, page.length - 1) : serial === 1 && i === 4 ? undefined : page));
    expect(await run(otherBad)).toEqual({
      sent: sent(1, 2, 4, 5),
      counts: { skipped_pages: 1, missing_pages: 1, repeated_pages: 0, other_stream_pages: theirs.pages.length - 1, skipped_bytes: expect.any(Number) },
      missing: 1,
    });
    // Ours' page 4 damaged in its serial (read as no stream's): it is the page missing, counted once.
    const oursBad = mixed((page, serial, i) => (serial === 1 && i === 4 ? damaged(page, 15) : page));
    expect(await run(oursBad)).toEqual({
      sent: sent(1, 2, 4, 5),
      counts: { skipped_pages: 1, missing_pages: 0, repeated_pages: 0, other_stream_pages: theirs.pages.length, skipped_bytes: expect.any(Number) },
      missing: 0,
    });
    // A link chained after, its Opus stream serial 2 as theirs was: its page 4 damaged in its body is ours, counted once.
    const next = buildStream([11, 12, 13, 14, 15].map((s) => audioPacket(60, s)), 1, 255, 2);
    const reused = concatBytes([mixed((page) => page), ...next.pages.map((page, i) => (i === 4 ? damaged(page, page.length - 1) : page))]);
    expect(await run(reused)).toEqual({
      sent: sent(1, 2, 3, 4, 5, 11, 12, 14, 15),
      counts: { skipped_pages: 1, missing_pages: 0, repeated_pages: 0, other_stream_pages: theirs.pages.length, skipped_bytes: expect.any(Number) },
      missing: 0,
    });
  });

  // Before, a page written twice had its packets sent twice.
  test("--lenient, a page written twice: the second copy is dropped and counted, each packet read once; strict fails there", async () => {
    const bytes = read(live("twice", 1));
    const pages = pagesOf(bytes);
    const serial = pages[0]!.serial.toString(16).padStart(8, "0");
    const whole = (await drain(source(bytes))).frames.map((f) => f.payload);
    // A page every packet: pages 0 and 1 are the headers, page 4 holds audio packet 2.
    expect(pages[4]!.table.length).toBe(1);
    const at = pages[5]!.offset;
    const twice = concatBytes([bytes.subarray(0, at), bytes.subarray(pages[4]!.offset, at), bytes.subarray(at)]);
    expect((await drain(source(twice))).error?.message).toBe(`ogg source t.opus: page sequence jumps from 4 to 4 in stream ${serial} (out of order) at byte ${at}`);
    for (const chunk of [7, 65536]) {
      const { reports, report } = reporting();
      const src = OggSource.from(chunkedSource(twice, [chunk], "t.opus"), { lenient: true, report });
      const { frames, error } = await drain(src);
      expect(error).toBeUndefined();
      expect(frames.map((f) => f.payload)).toEqual(whole);
      expect(src.counts).toEqual({ skipped_pages: 0, missing_pages: 0, repeated_pages: 1, other_stream_pages: 0, skipped_bytes: 0 });
      expect(reports).toEqual([
        { level: "warn", message: "dropped a page that came again", fields: { source: "t.opus", serial, offset: at, sequence: 4, repeated_pages: 1 } },
      ]);
    }
  });

  test("--lenient, page numbers that go back onto pages read with other bytes (a writer that began counting again): read on from there, nothing dropped", async () => {
    const bytes = read(live("renumbered", 1));
    const pages = pagesOf(bytes);
    const whole = (await drain(source(bytes))).frames.map((f) => f.payload);
    // From page 10 on, numbered again from 2 (the first audio page's number), each page's CRC made anew.
    const renumbered = bytes.slice();
    for (const [i, page] of pages.entries()) {
      if (i < 10) continue;
      write32LE(renumbered, page.offset + 18, i - 8);
      sealPage(renumbered, page.offset, page.size);
    }
    const { reports, report } = reporting();
    const src = OggSource.from(chunkedSource(renumbered, [65536], "t.opus"), { lenient: true, report });
    const { frames, error } = await drain(src);
    expect(error).toBeUndefined();
    expect(frames.map((f) => f.payload)).toEqual(whole);
    expect(src.counts).toEqual({ skipped_pages: 0, missing_pages: 0, repeated_pages: 0, other_stream_pages: 0, skipped_bytes: 0 });
    expect(reports.map((r) => [r.message, r.fields.expected_sequence, r.fields.sequence])).toEqual([["pages out of order in the stream", 10, 2]]);
  });

  test("a stream cut off without its end-of-stream page (a killed encoder), then a new encoder's stream: both are read, with a warning", async () => {
    const [first, second] = [live("killed", 2), live("restarted", 1, 60)];
    const firstBytes = read(first);
    const pages = pagesOf(firstBytes);
    // Cut at a page boundary before the last two pages, the EOS page among them.
    const keep = pages.at(-2)!.offset;
    const killed = firstBytes.subarray(0, keep);
    const kept = (await drain(source(killed))).frames;
    expect(kept.length).toBeGreaterThan(0);
    const next = (await drainFile(second)).frames;

    const { reports, report } = reporting();
    const src = OggSource.from(chunkedSource(concatBytes([killed, read(second)]), [4096], "t.opus"), { report });
    const { payloads, configs, error } = await framesAndConfigs(src);
    expect(error).toBeUndefined();
    expect(payloads).toEqual([...kept, ...next].map((f) => f.payload));
    expect(configs).toEqual([
      { sampleRate: 48000, channels: 2, frameSize: 960 },
      { sampleRate: 48000, channels: 1, frameSize: 2880 },
    ]);
    expect(src.counts).toEqual({ skipped_pages: 0, missing_pages: 0, repeated_pages: 0, other_stream_pages: 0, skipped_bytes: 0 });
    expect(reports.map((r) => `${r.level} ${r.message}`)).toEqual(["warn stream ended without its end-of-stream page; reading the stream chained after it"]);
    expect(reports[0]!.fields).toMatchObject({ source: "t.opus", serial: pages[0]!.serial.toString(16).padStart(8, "0"), offset: keep });
  });

  test("a file that ends part-way through a page header is truncated, naming the page", async () => {
    const bytes = read(fx.opus.get(key(2, 20))!);
    const whole = (await drain(source(bytes))).frames;
    const { frames, error } = await drain(source(concatBytes([bytes, bytes.subarray(0, 10)])));
    expect(frames).toEqual(whole);
    expect(error?.message).toBe(`ogg source t.opus: truncated: input ends 17 byte(s) short of the page at byte ${bytes.length}`);
  });

  test("a stream whose second packet is not OpusTags fails there, without taking that packet for audio", async () => {
    const { writer, pages } = collectingWriter(5);
    writer.addPacket(buildOpusHead({ channels: 2, preSkip: 312, inputSampleRate: 48000 }), 0);
    writer.flushPage();
    writer.addPacket(audioPacket(80, 1), 960);
    writer.addPacket(audioPacket(90, 2), 1920);
    writer.flushPage(true);
    const { frames, error } = await drain(source(concatBytes(pages)));
    expect(frames).toEqual([]);
    expect(error?.message).toBe(`ogg source t.opus: expected an OpusTags packet at byte ${pages[0]!.length + 27 + 2}`);
  });
});
