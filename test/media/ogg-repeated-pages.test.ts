/**
 * OggSource --lenient and pages that come again, on hand-built streams whose
 * packets carry their own number: a page of our stream with the number and
 * the bytes of one of its last REPEAT_WINDOW pages read is dropped and
 * counted (repeated_pages), so no packet is sent twice; any other page
 * numbered back is read on from, as before. Files made by opusenc are in
 * ogg-source.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { OggSource, REPEAT_WINDOW } from "../../src/media/ogg-source.ts";
import { concatBytes } from "../support/bytes.ts";
import { buildOpusHead } from "../../src/media/opus-head.ts";
import { buildOpusTags } from "../../src/media/opus-tags.ts";
import { write32LE } from "../../src/protocol/index.ts";
import { buildStream, collectingWriter, sealPage } from "../support/ogg.ts";
import { chunkedSource, drain } from "../support/sources.ts";

/** A 20 ms CELT stereo packet (TOC 0xfc) whose bytes 1-2 hold `n`, and bytes after them that `n` sets too. */
function numbered(n: number, size = 40): Uint8Array {
  const p = Uint8Array.from({ length: size }, (_, i) => (n * 7 + i) & 0xff);
  p[0] = 0xfc;
  p[1] = n & 0xff;
  p[2] = n >> 8;
  return p;
}

/**
 * Pages of `count` numbered packets from `first`, each page one packet (or, with `maxSegments`,
 * packets of `size` bytes running across pages); pages 0 and 1 hold the headers, the last is an
 * empty end-of-stream page.
 */
function pagesOfStream(count: number, options: { first?: number; size?: number; maxSegments?: number } = {}): Uint8Array[] {
  const { first = 0, size = 40, maxSegments = 255 } = options;
  const packets = Array.from({ length: count }, (_, i) => numbered(first + i, size));
  return buildStream(packets, 1, maxSegments).pages.filter((p) => p.length > 0);
}

/** A copy of `page` numbered `sequence`, its CRC made anew. */
function renumbered(page: Uint8Array, sequence: number): Uint8Array {
  const copy = page.slice();
  write32LE(copy, 18, sequence);
  sealPage(copy);
  return copy;
}

/** A copy of `page` with its last byte changed: its CRC no longer matches. */
function damaged(page: Uint8Array): Uint8Array {
  const copy = page.slice();
  copy[copy.length - 1]! ^= 0x55;
  return copy;
}

/**
 * Reads `pages` leniently, in chunks of 7 bytes and whole: the numbers of the packets read, the
 * counts and the reports. Every packet read must be one of the stream's, whole: none spliced
 * from pieces of two.
 */
async function read(pages: Uint8Array[]) {
  const runs = [];
  for (const chunk of [7, 1 << 20]) {
    const reports: string[] = [];
    const src = OggSource.from(chunkedSource(concatBytes(pages), [chunk], "t.opus"), { lenient: true, report: (_, message) => void reports.push(message) });
    const { frames, error } = await drain(src);
    for (const { payload } of frames) expect(payload).toEqual(numbered(payload[1]! | (payload[2]! << 8), payload.length));
    runs.push({ numbers: frames.map((f) => f.payload[1]! | (f.payload[2]! << 8)), error: error?.message, counts: { ...src.counts }, reports });
  }
  expect(runs[0]).toEqual(runs[1]!);
  return runs[0]!;
}

const upTo = (n: number) => Array.from({ length: n }, (_, i) => i);
const REPEATED = "dropped a page that came again";
const noDamage = { skipped_pages: 0, missing_pages: 0, repeated_pages: 0, other_stream_pages: 0, skipped_bytes: 0 };

describe("OggSource --lenient, a page that comes again", () => {
  test("a page again, a run of pages again, the end-of-stream page and one before it again after the end: each packet once, in order, every copy counted", async () => {
    const p = pagesOfStream(10); // packet k on page k + 2; page 12 ends the stream
    const runs = await read([...p.slice(0, 5), p[4]!, ...p.slice(5, 8), p[5]!, p[6]!, p[7]!, ...p.slice(8), p[12]!, p[11]!]);
    expect(runs).toMatchObject({ numbers: upTo(10), error: undefined, counts: { ...noDamage, repeated_pages: 6 } });
    expect(runs.reports).toEqual(Array(6).fill(REPEATED));
    // After the end, a page of ours that is not one read is another stream's, as before.
    expect((await read([...p, renumbered(p[11]!, 13)])).counts).toEqual({ ...noDamage, other_stream_pages: 1 });
  });

  test("a page again inside a packet that runs across pages, and after a damaged page: the packet is whole, the damaged page explains the gap alone", async () => {
    // 600-byte packets, two lacing values a page: packet k begins on page 2 + 2k (255 + 255) and ends on the next (90).
    const p = pagesOfStream(6, { size: 600, maxSegments: 2 });
    expect(await read(p)).toMatchObject({ numbers: upTo(6), counts: noDamage });
    // Page 2 (packet 0's first part) again right after it: packet 0 is still read whole.
    expect(await read([...p.slice(0, 3), p[2]!, ...p.slice(3)])).toMatchObject({ numbers: upTo(6), counts: { ...noDamage, repeated_pages: 1 } });
    // Page 6 (packet 2's first part) damaged, then page 5 again, then 7: packet 2 is lost with the damaged page,
    // and the gap before 7 is that page, counted once (as skipped), not missing as well.
    const lost = await read([...p.slice(0, 6), damaged(p[6]!), p[5]!, ...p.slice(7)]);
    expect(lost.numbers).toEqual([0, 1, 3, 4, 5]);
    expect(lost.counts).toEqual({ ...noDamage, skipped_pages: 1, repeated_pages: 1, skipped_bytes: p[6]!.length });
    // A gap after the damaged one's is counted: page 6 damaged, 7 and 8, then 10 (9 never came).
    const gap = await read([...p.slice(0, 6), damaged(p[6]!), p[7]!, p[8]!, ...p.slice(10)]);
    expect(gap.numbers).toEqual([0, 1, 4, 5]);
    expect(gap.counts).toEqual({ ...noDamage, skipped_pages: 1, missing_pages: 1, skipped_bytes: p[6]!.length });
  });

  test("the input ending on a damaged page inside a packet: that packet is lost, the rest read, no error; cut there, it is truncated", async () => {
    const p = pagesOfStream(4, { size: 600, maxSegments: 2 }); // the last packet begins on page 8, ends on page 9 (the EOS page)
    const runs = await read([...p.slice(0, 9), damaged(p[9]!)]);
    expect(runs).toMatchObject({ numbers: [0, 1, 2], error: undefined, counts: { ...noDamage, skipped_pages: 1, skipped_bytes: p[9]!.length } });
    const cut = await read(p.slice(0, 9));
    expect(cut.numbers).toEqual([0, 1, 2]);
    expect(cut.error).toBe(`ogg source t.opus: truncated: input ends inside the packet that starts at byte ${concatBytes(p.slice(0, 8)).length + 27 + 2}`);
  });

  test("a damaged page inside a packet, then another writer's stream: the warning that our stream ended without its end-of-stream page names where the cut packet began", async () => {
    const p = pagesOfStream(4, { size: 600, maxSegments: 2 });
    const other = buildStream([numbered(100)], 1, 255, 0x4321).pages.filter((page) => page.length > 0);
    const reports: Record<string, unknown>[] = [];
    const src = OggSource.from(chunkedSource(concatBytes([...p.slice(0, 7), damaged(p[7]!), ...other]), [1 << 20], "t.opus"), {
      lenient: true,
      report: (_, message, fields = {}) => void reports.push({ message, ...fields }),
    });
    const { frames, error } = await drain(src);
    expect(error).toBeUndefined();
    expect(frames.map((f) => f.payload[1])).toEqual([0, 1, 100]);
    expect(reports.find((r) => String(r.message).startsWith("stream ended without"))).toMatchObject({ cut_packet_offset: concatBytes(p.slice(0, 6)).length + 27 + 2 });
  });

  test(`a page again ${REPEAT_WINDOW} pages later is dropped; ${REPEAT_WINDOW + 1} pages later it is read on from, as a page numbered back`, async () => {
    const p = pagesOfStream(REPEAT_WINDOW + 20);
    const at = REPEAT_WINDOW + 10; // pages 0 .. at - 1 read first
    const edge = await read([...p.slice(0, at), p[at - REPEAT_WINDOW]!, ...p.slice(at)]);
    expect(edge).toMatchObject({ numbers: upTo(REPEAT_WINDOW + 20), counts: { ...noDamage, repeated_pages: 1 } });

    const beyond = await read([...p.slice(0, at), p[at - REPEAT_WINDOW - 1]!, ...p.slice(at)]);
    expect(beyond.numbers).toEqual([...upTo(at - 2), at - REPEAT_WINDOW - 3, ...upTo(REPEAT_WINDOW + 20).slice(at - 2)]);
    expect(beyond.reports).toEqual(["pages out of order in the stream", "pages missing from the stream"]);
  });

  test("across the sequence number's wrap from 2^32 - 1 to 0: a page again is dropped", async () => {
    const base = 2 ** 32 - 4;
    const p = pagesOfStream(8).map((page, i) => renumbered(page, base + i));
    // Pages numbered 2^32 - 1 and 0 (packets 1 and 2) again after the page numbered 1.
    const runs = await read([...p.slice(0, 6), p[3]!, p[4]!, ...p.slice(6)]);
    expect(runs).toMatchObject({ numbers: upTo(8), counts: { ...noDamage, repeated_pages: 2 } });
  });
});

describe("OggSource, an Opus header packet among the audio", () => {
  test("strict fails on it, as an Opus packet of 960 ms; lenient skips it with a warning and reads on", async () => {
    const head = buildOpusHead({ channels: 2, preSkip: 312, inputSampleRate: 48000 });
    const { writer, pages } = collectingWriter(0x1234);
    for (const [i, packet] of [head, buildOpusTags(), numbered(0), buildOpusTags(), numbered(1), head, numbered(2)].entries()) {
      writer.addPacket(packet, Math.max(0, i - 1) * 960);
      writer.flushPage(i === 6);
    }
    const strict = await drain(OggSource.from(chunkedSource(concatBytes(pages), [1 << 20], "t.opus")));
    expect(strict.frames.length).toBe(1);
    expect(strict.error?.message).toStartWith("ogg source t.opus: Opus packet lasts 960 ms, more than 120 ms at byte ");
    const runs = await read(pages);
    expect(runs).toMatchObject({ numbers: [0, 1, 2], error: undefined, counts: noDamage });
    expect(runs.reports).toEqual(Array(2).fill("skipped an Opus header packet among the audio packets"));
  });
});

describe("OggSource --lenient, pages numbered back that did not come again", () => {
  test("a writer counting again from a number read, with other bytes: read on from, and a page again in the new count is dropped", async () => {
    const p = pagesOfStream(12);
    // After page 7, the writer numbers from 4 again: pages 8 .. 13 carry 4 .. 9; its 5 comes twice.
    const again = (i: number) => renumbered(p[i]!, i - 4);
    const runs = await read([...p.slice(0, 8), again(8), again(9), again(9), ...[10, 11, 12, 13].map(again)]);
    expect(runs.numbers).toEqual(upTo(12));
    expect(runs.counts).toEqual({ ...noDamage, repeated_pages: 1 });
    expect(runs.reports).toEqual(["pages out of order in the stream", REPEATED]);
    // The new count's first page, the one numbered back, twice.
    const first = await read([...p.slice(0, 8), again(8), again(8), ...[9, 10, 11, 12, 13].map(again)]);
    expect(first).toMatchObject({ numbers: upTo(12), counts: { ...noDamage, repeated_pages: 1 } });
  });

  test("our BOS page again before our end begins the stream again, as a stream chained after ours: a file cut short, played twice (cat cut.opus cut.opus), is read twice", async () => {
    const cut = pagesOfStream(6).slice(0, 6); // no end-of-stream page: packets 0 .. 3
    const runs = await read([...cut, ...cut]);
    expect(runs).toMatchObject({ numbers: [0, 1, 2, 3, 0, 1, 2, 3], error: undefined, counts: noDamage });
    expect(runs.reports).toEqual(["stream ended without its end-of-stream page; reading the stream chained after it"]);
  });

  test(`the OpusTags page again from further back than ${REPEAT_WINDOW} pages: skipped among the audio, the source does not fail`, async () => {
    const p = pagesOfStream(REPEAT_WINDOW + 10);
    const runs = await read([...p.slice(0, REPEAT_WINDOW + 5), p[1]!, ...p.slice(REPEAT_WINDOW + 5)]);
    expect(runs.error).toBeUndefined();
    expect(runs.numbers).toEqual(upTo(REPEAT_WINDOW + 10));
    expect(runs.reports).toEqual(["pages out of order in the stream", "skipped an Opus header packet among the audio packets", "pages missing from the stream"]);
  });

  test("a second stream of the same serial after the first's end (cat a.opus a.opus): its pages are its own, not copies of the first's", async () => {
    const a = pagesOfStream(8);
    // In the second copy, page 5 is missing and comes after 6: it is read, late, not dropped as the first copy's page 5 again.
    const runs = await read([...a, ...a.slice(0, 5), a[6]!, a[5]!, ...a.slice(7)]);
    expect(runs.numbers).toEqual([...upTo(8), 0, 1, 2, 4, 3, 5, 6, 7]);
    expect(runs.counts).toMatchObject({ repeated_pages: 0 });
  });
});
