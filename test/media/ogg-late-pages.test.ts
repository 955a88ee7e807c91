/**
 * OggSource --lenient and page numbers that go back, on hand-built streams
 * whose packets carry their own number: a page that comes again or late is
 * dropped and counted (late_pages), so no packet is read twice or out of
 * order; a page numbered back onto other bytes than the page read under that
 * number is a writer counting again, read on from. Files made by opusenc are
 * in ogg-source.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { computePageCrc } from "../../src/media/ogg-page.ts";
import { LATE_PAGES, OggSource } from "../../src/media/ogg-source.ts";
import { concatBytes } from "../support/bytes.ts";
import { buildStream } from "../support/ogg.ts";
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
  const view = new DataView(copy.buffer);
  view.setUint32(18, sequence, true);
  view.setUint32(22, computePageCrc(copy, 0, copy.length), true);
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
const LATE = "dropped a page that came again or late";
const noDamage = { skipped_pages: 0, missing_pages: 0, late_pages: 0, other_stream_pages: 0, skipped_bytes: 0 };

describe("OggSource --lenient, pages that come again or late", () => {
  test("a run of pages written again, the header pages again (the BOS page among them), the end-of-stream page again and a page it overtook: each packet once, in order, every late page counted", async () => {
    const p = pagesOfStream(10); // packet k on page k + 2; page 12 ends the stream
    // Pages 4 and 5 again after 6; the header pages again after packet 1 (the BOS page alone, then with the tags).
    const runs = await read([...p.slice(0, 4), p[0]!, p[1]!, p[0]!, ...p.slice(4, 7), p[4]!, p[5]!, ...p.slice(7)]);
    expect(runs).toMatchObject({ numbers: upTo(10), error: undefined, counts: { ...noDamage, late_pages: 5 } });
    expect(runs.reports).toEqual(Array(5).fill(LATE));

    // Page 11 after the end-of-stream page 12, and page 12 again: late, not another stream's.
    const afterEnd = await read([...p.slice(0, 11), p[12]!, p[11]!, p[12]!]);
    expect(afterEnd).toMatchObject({ numbers: upTo(9), counts: { ...noDamage, missing_pages: 1, late_pages: 2 } });
  });

  test("a page written again inside a packet that runs across pages, and after a damaged page: the packet is whole, the damaged page explains the gap alone", async () => {
    // 600-byte packets, two lacing values a page: packet k begins on page 2 + 2k (255 + 255) and ends on the next (90).
    const p = pagesOfStream(6, { size: 600, maxSegments: 2 });
    expect(await read(p)).toMatchObject({ numbers: upTo(6), counts: noDamage });
    // Page 2 (packet 0's first part) again right after it: packet 0 is still read whole.
    expect(await read([...p.slice(0, 3), p[2]!, ...p.slice(3)])).toMatchObject({ numbers: upTo(6), counts: { ...noDamage, late_pages: 1 } });
    // Page 6 (packet 2's first part) damaged, then page 5 again, then 7: packet 2 is lost with the damaged page,
    // and the gap before 7 is that page, counted once (as skipped), not missing as well.
    const lost = await read([...p.slice(0, 6), damaged(p[6]!), p[5]!, ...p.slice(7)]);
    expect(lost.numbers).toEqual([0, 1, 3, 4, 5]);
    expect(lost.counts).toEqual({ ...noDamage, skipped_pages: 1, late_pages: 1, skipped_bytes: p[6]!.length });
  });

  test(`a page written again ${LATE_PAGES} pages later is late; one ${LATE_PAGES + 1} pages later is read as the writer counting again, then as a stray when the next page carries on`, async () => {
    const p = pagesOfStream(LATE_PAGES + 20);
    const at = LATE_PAGES + 10; // pages 0 .. at - 1 read first
    const edge = await read([...p.slice(0, at), p[at - LATE_PAGES]!, ...p.slice(at)]);
    expect(edge).toMatchObject({ numbers: upTo(LATE_PAGES + 20), counts: { ...noDamage, late_pages: 1 } });

    const stray = p[at - LATE_PAGES - 1]!;
    const beyond = await read([...p.slice(0, at), stray, ...p.slice(at)]);
    // Its packet is read again, out of place: nothing tells it from a new count until the page after it.
    const strayPacket = at - LATE_PAGES - 3;
    expect(beyond.numbers).toEqual([...upTo(at - 2), strayPacket, ...upTo(LATE_PAGES + 20).slice(at - 2)]);
    expect(beyond.counts).toEqual(noDamage);
    expect(beyond.reports).toEqual(["page numbers went back; reading on from this page", "page numbers came back: the page before was a stray"]);

    // Packets across pages (packet k on pages 2 + 2k and 3 + 2k): a stray ending an old packet comes while one is
    // open. The open packet is lost, not joined to the stray's piece; the rest is read.
    const q = pagesOfStream(LATE_PAGES / 2 + 10, { size: 600, maxSegments: 2 });
    const open = LATE_PAGES + 11; // pages 0 .. open - 1 read, the last of them a packet's first part
    const torn = await read([...q.slice(0, open), q[open - LATE_PAGES - 2]!, ...q.slice(open)]);
    const tornPacket = (open - 3) / 2;
    expect(torn.numbers).toEqual(upTo(LATE_PAGES / 2 + 10).filter((n) => n !== tornPacket));
    expect(torn.counts).toEqual(noDamage);
  });
});

describe("OggSource --lenient, a writer that counts its pages again", () => {
  test("pages numbered back onto other bytes are read on from, and pages late in the new count are told by it alone", async () => {
    const p = pagesOfStream(12);
    // After page 7, the writer numbers from 4 again: pages 8 .. 13 carry 4 .. 9, with its 6 and 7 swapped.
    const again = (i: number) => renumbered(p[i]!, i - 4);
    const runs = await read([...p.slice(0, 8), again(8), again(9), again(11), again(10), again(12), again(13)]);
    // The swapped 6 was missing when 7 came and is late after it; the pages first read under 6 and 7 do not count.
    expect(runs.numbers).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11]);
    expect(runs.counts).toEqual({ ...noDamage, missing_pages: 1, late_pages: 1 });
    expect(runs.reports).toEqual(["page numbers went back; reading on from this page", "pages missing from the stream", LATE]);
  });

  test("a second stream of the same serial after the first's end (cat a.opus b.opus) starts its own count: a page late in it is late, not a new count", async () => {
    const [a, b] = [pagesOfStream(8), pagesOfStream(8, { first: 100 })];
    const runs = await read([...a, ...b.slice(0, 5), b[6]!, b[5]!, ...b.slice(7)]);
    expect(runs.numbers).toEqual([...upTo(8), 100, 101, 102, 104, 105, 106, 107]);
    expect(runs.counts).toEqual({ ...noDamage, missing_pages: 1, late_pages: 1 });
  });
});
