import { describe, expect, test } from "bun:test";
import { OggPacketReader } from "../../src/media/ogg-packet-reader.ts";
import { computePageCrc, NO_GRANULE, OggPage, PageFlag } from "../../src/media/ogg-page.ts";
import { OggPageReader } from "../../src/media/ogg-page-reader.ts";
import { concatBytes } from "../support/bytes.ts";
import { collectingWriter, packetsOf, pagesOf } from "../support/ogg.ts";

function packet(size: number, seed: number): Uint8Array {
  return Uint8Array.from({ length: size }, (_, i) => (i * 31 + seed * 7) & 0xff);
}

describe("OggPageWriter / OggPageReader", () => {
  test("lays packets out with RFC 3533 lacing and reads them back unchanged", () => {
    const sizes = [0, 1, 254, 255, 256, 510, 4000];
    const packets = sizes.map((s, i) => packet(s, i));
    const { writer, pages } = collectingWriter(7);
    packets.forEach((p, i) => writer.addPacket(p, 100 * (i + 1)));
    writer.flushPage();
    expect(pages.length).toBe(1);
    const [info] = pagesOf(pages[0]!);
    // 255 takes [255, 0] and 510 [255, 255, 0]; 4000 is 15 x 255 + 175.
    expect(info!.table).toEqual([0, 1, 254, 255, 0, 255, 1, 255, 255, 0, ...Array(15).fill(255), 175]);
    expect(info!.granule).toBe(700);
    expect(info!.flags).toBe(PageFlag.BeginOfStream);
    expect(packetsOf(pages[0]!)).toEqual(packets);
  });

  test("writes the header fields byte for byte, CRC included", () => {
    const { writer, pages } = collectingWriter(0xdeadbeef);
    writer.addPacket(Uint8Array.of(9, 8, 7), 2 ** 40 + 5);
    writer.flushPage();
    const page = pages[0]!;
    expect([...page.subarray(0, 27)]).toEqual([
      0x4f, 0x67, 0x67, 0x53, // "OggS"
      0, // version
      PageFlag.BeginOfStream,
      5, 0, 0, 0, 0, 1, 0, 0, // granule 2^40 + 5
      0xef, 0xbe, 0xad, 0xde, // serial
      0, 0, 0, 0, // sequence
      ...page.subarray(22, 26), // CRC, checked below
      1, // one segment
    ]);
    expect([...page.subarray(27)]).toEqual([3, 9, 8, 7]);
    const crc = new DataView(page.buffer).getUint32(22, true);
    expect(crc).toBe(computePageCrc(page, 0, page.length));
    expect(crc).not.toBe(0);
  });

  test("splits a packet too big for a page over continued pages, granule -1 until it ends", () => {
    const big = packet(4000, 3); // 16 segments
    const { writer, pages } = collectingWriter(1, { maxSegments: 5 });
    writer.addPacket(Uint8Array.of(0xaa), 480);
    writer.addPacket(big, 1440);
    writer.addPacket(Uint8Array.of(0xbb), 1920);
    writer.flushPage(true);
    const infos = pagesOf(concatBytes(pages));
    // The small first packet keeps its page; the big one starts a fresh page rather than being split early.
    expect(infos.map((p) => p.segments)).toEqual([1, 5, 5, 5, 2]);
    expect(infos.map((p) => p.flags)).toEqual([
      PageFlag.BeginOfStream,
      0,
      PageFlag.Continued,
      PageFlag.Continued,
      PageFlag.Continued | PageFlag.EndOfStream,
    ]);
    expect(infos.map((p) => p.granule)).toEqual([480, NO_GRANULE, NO_GRANULE, NO_GRANULE, 1920]);
    expect(infos.map((p) => p.sequence)).toEqual([0, 1, 2, 3, 4]);
    expect(infos.every((p) => p.crcValid && p.serial === 1)).toBe(true);
    expect(packetsOf(concatBytes(pages))).toEqual([Uint8Array.of(0xaa), big, Uint8Array.of(0xbb)]);
  });

  test("one segment per page is the smallest page allowed; zero and 256 are refused", () => {
    const { writer, pages } = collectingWriter(1, { maxSegments: 1 });
    const p = packet(300, 2); // [255] + [45]
    writer.addPacket(p, 960);
    writer.flushPage();
    expect(pagesOf(concatBytes(pages)).map((i) => i.table)).toEqual([[255], [45]]);
    expect(packetsOf(concatBytes(pages))).toEqual([p]);
    expect(() => collectingWriter(1, { maxSegments: 0 })).toThrow("maxSegments must be 1..255, got 0");
    expect(() => collectingWriter(1, { maxSegments: 256 })).toThrow("maxSegments must be 1..255, got 256");
  });

  test("a packet of a multiple of 255 bytes ending a page gets its 0 lacing on the next", () => {
    const { writer, pages } = collectingWriter(1, { maxSegments: 2 });
    const p = packet(510, 1);
    writer.addPacket(p, 960);
    writer.flushPage();
    const infos = pagesOf(concatBytes(pages));
    expect(infos.map((i) => i.table)).toEqual([[255, 255], [0]]);
    expect(infos[1]!.flags).toBe(PageFlag.Continued);
    expect(packetsOf(concatBytes(pages))).toEqual([p]);
  });

  test("a packet of 255 x k bytes needs k + 1 lacing values: with k left on the page it starts the next one whole; one that fills the page exactly stays on it", () => {
    for (const k of [1, 2, 3]) {
      const p = packet(255 * k, k);
      // Two small packets, then k + 1 segments left: the packet fills the page exactly.
      const exact = collectingWriter(1, { maxSegments: k + 3 });
      exact.writer.addPacket(Uint8Array.of(1), 1);
      exact.writer.addPacket(Uint8Array.of(2), 2);
      expect(exact.writer.fits(p.length)).toBe(true);
      exact.writer.addPacket(p, 3);
      exact.writer.flushPage();
      expect(pagesOf(concatBytes(exact.pages)).map((i) => i.table)).toEqual([[1, 1, ...Array(k).fill(255), 0]]);

      // Three small packets, only k segments left: not split, but on a fresh page with its 0 lacing.
      const short = collectingWriter(1, { maxSegments: k + 3 });
      for (const b of [1, 2, 3]) short.writer.addPacket(Uint8Array.of(b), b);
      expect(short.writer.fits(p.length)).toBe(false);
      short.writer.addPacket(p, 4);
      short.writer.flushPage();
      const infos = pagesOf(concatBytes(short.pages));
      expect(infos.map((i) => i.table)).toEqual([[1, 1, 1], [...Array(k).fill(255), 0]]);
      expect(infos.map((i) => [i.flags & PageFlag.Continued, i.granule])).toEqual([[0, 3], [0, 4]]);
      expect(packetsOf(concatBytes(short.pages)).at(-1)).toEqual(p);
    }
    // A shorter packet needs ceil(length / 255) values: 254 bytes fit one segment left.
    const one = collectingWriter(1, { maxSegments: 2 });
    one.writer.addPacket(Uint8Array.of(1), 1);
    expect(one.writer.fits(254)).toBe(true);
    expect(one.writer.fits(255)).toBe(false);
  });

  test("an EOS with nothing pending is an empty page with granule -1", () => {
    const { writer, pages } = collectingWriter(5);
    writer.addPacket(Uint8Array.of(1), 960);
    writer.flushPage();
    expect(writer.flushPage()).toBe(false); // nothing pending, nothing written
    expect(writer.flushPage(true)).toBe(true);
    const infos = pagesOf(concatBytes(pages));
    expect(infos.length).toBe(2);
    expect(infos[1]).toMatchObject({ size: 27, segments: 0, flags: PageFlag.EndOfStream, granule: NO_GRANULE, sequence: 1 });
    expect(infos[1]!.crcValid).toBe(true);
  });

  test("reads the same pages whatever the chunk boundaries", () => {
    const { writer, pages } = collectingWriter(2, { maxSegments: 3 });
    for (let i = 0; i < 20; i++) writer.addPacket(packet(100 + i * 61, i), i * 960);
    writer.flushPage(true);
    const stream = concatBytes(pages);
    const expected = pagesOf(stream);
    expect(expected.length).toBeGreaterThan(10);
    for (const size of [1, 2, 26, 27, 28, 300, 4096]) {
      const reader = new OggPageReader();
      const got: { offset: number; size: number; crc: boolean; first: number }[] = [];
      for (let at = 0; at < stream.length; at += size) {
        reader.push(stream.slice(at, at + size));
        for (let p = reader.next(); p; p = reader.next()) {
          got.push({ offset: p.streamOffset, size: p.size, crc: p.crcValid(), first: p.bytes[p.bodyOffset]! });
        }
      }
      reader.finish();
      expect(got.map((g) => [g.offset, g.size])).toEqual(expected.map((e) => [e.offset, e.size]));
      expect(got.every((g) => g.crc)).toBe(true);
    }
  });

  test("rejects a missing capture pattern or another version, naming the offset, and stays failed", () => {
    const { writer, pages } = collectingWriter(2);
    writer.addPacket(packet(50, 1), 1);
    writer.flushPage();
    const good = pages[0]!;
    const reader = new OggPageReader();
    reader.push(concatBytes([good, new TextEncoder().encode("OggX and more bytes here..")]));
    expect(reader.next()).toBeDefined();
    expect(() => reader.next()).toThrow(`no Ogg capture pattern "OggS" at byte ${good.length}`);
    expect(() => reader.next()).toThrow("capture pattern");

    // Exactly four bytes that are not "OggS" are refused at once, not held as a page still to come.
    const four = new OggPageReader();
    four.push(concatBytes([good, new TextEncoder().encode("OggX")]));
    expect(four.next()).toBeDefined();
    expect(() => four.next()).toThrow(`no Ogg capture pattern "OggS" at byte ${good.length}`);

    const v1 = good.slice();
    v1[4] = 1;
    const other = new OggPageReader();
    other.push(v1);
    expect(() => other.next()).toThrow("unsupported Ogg version 1 (RFC 3533 defines version 0 only) at byte 0");
  });

  test("finish() reports a stream cut inside a page", () => {
    const { writer, pages } = collectingWriter(2);
    writer.addPacket(packet(50, 1), 1);
    writer.flushPage();
    writer.addPacket(packet(50, 2), 2);
    writer.flushPage();
    const stream = concatBytes(pages);
    const reader = new OggPageReader();
    reader.push(stream.subarray(0, stream.length - 10));
    expect(reader.next()).toBeDefined();
    expect(reader.next()).toBeUndefined();
    expect(() => reader.finish()).toThrow(`truncated: input ends 10 byte(s) short of the page at byte ${pages[0]!.length}`);
  });

  test("crcValid() is false when any byte of the page changed: header, CRC field or body", () => {
    const { writer, pages } = collectingWriter(3);
    writer.addPacket(packet(300, 1), 960);
    writer.flushPage();
    const good = pages[0]!;
    // Inside a larger buffer, at an offset: the CRC covers exactly this page.
    const inside = (page: Uint8Array) => concatBytes([Uint8Array.of(1, 2, 3), page, Uint8Array.of(4)]);
    expect(new OggPage().at(inside(good), 3, 0).crcValid()).toBe(true);
    for (const at of [5, 6, 14, 18, 22, 25, 26, 27, good.length - 1]) {
      const bad = good.slice();
      bad[at]! ^= 0x01;
      expect({ at, valid: new OggPage().at(inside(bad), 3, 0).crcValid() }).toEqual({ at, valid: false });
    }
  });

  test("OggPage reads granule -1 and large granules exactly", () => {
    for (const granule of [NO_GRANULE, 0, 2 ** 32 - 1, 2 ** 32, 2 ** 52 + 3]) {
      const { writer, pages } = collectingWriter(2);
      writer.addPacket(Uint8Array.of(1), granule);
      writer.flushPage();
      expect(new OggPage().at(pages[0]!, 0, 0).granule).toBe(granule);
    }
  });
});

describe("OggPacketReader", () => {
  function pageAt(bytes: Uint8Array): OggPage {
    return new OggPage().at(bytes, 0, 0);
  }

  test("measures a packet larger than its capacity without storing past it", () => {
    const big = packet(5000, 4);
    const { writer, pages } = collectingWriter(1, { maxSegments: 4 });
    writer.addPacket(big, 1);
    writer.flushPage();
    const reader = new OggPacketReader(4096);
    let found: { size: number; data: Uint8Array; offset: number } | undefined;
    for (const p of pages) {
      reader.push(pageAt(p));
      const got = reader.next();
      if (got) found = { size: got.size, data: got.data.slice(), offset: got.streamOffset };
      expect(reader.next()).toBeUndefined();
    }
    expect(found!.size).toBe(5000);
    expect(found!.data).toEqual(big.subarray(0, 4096));
    expect(found!.offset).toBe(27 + 4); // first body byte of the first page
  });

  test("drops the tail of a packet no page began (RFC 7845 section 3), and rejects an open packet not continued", () => {
    const { writer, pages } = collectingWriter(1, { maxSegments: 2 });
    writer.addPacket(packet(600, 1), 1); // [255,255] + [90]
    writer.addPacket(packet(10, 2), 2);
    writer.flushPage();
    // OggPage.at was given stream offset 0 for each page here. Page 1 holds the 600-byte packet's
    // last 90 bytes, then the 10-byte packet: only that one is read.
    const fresh = new OggPacketReader(4096);
    fresh.push(pageAt(pages[1]!));
    expect(fresh.orphanTails).toBe(1);
    const read = fresh.next();
    expect(read?.size).toBe(10);
    expect([...read!.data]).toEqual([...packet(10, 2)]);
    expect(fresh.next()).toBeUndefined();

    // The open packet starts right after page 0's 27-byte header and 2 lacing values.
    const cut = new OggPacketReader(4096);
    cut.push(pageAt(pages[0]!));
    expect(cut.next()).toBeUndefined();
    expect(cut.open).toBe(true);
    const { writer: w2, pages: other } = collectingWriter(1);
    w2.addPacket(Uint8Array.of(5), 1);
    w2.flushPage();
    expect(() => cut.push(pageAt(other[0]!))).toThrow("packet begun at byte 29 is not continued on the next page at byte 0");
  });

  test("after a lost page, drops the open packet and the orphaned tail, then goes on", () => {
    const a = packet(600, 1);
    const b = packet(30, 2);
    const c = packet(40, 3);
    const { writer, pages } = collectingWriter(1, { maxSegments: 2 });
    writer.addPacket(a, 1); // pages 0 [255,255], 1 [90]
    writer.addPacket(b, 2); // page 1 [90, 30]
    writer.addPacket(c, 3); // page 2 [40]
    writer.flushPage();
    const infos = pagesOf(concatBytes(pages));
    expect(infos.map((i) => i.table)).toEqual([[255, 255], [90, 30], [40]]);

    // Lose page 0: the tail of `a` on page 1 must not come out as a packet.
    const reader = new OggPacketReader(4096);
    reader.lost();
    const out: Uint8Array[] = [];
    for (const p of pages.slice(1)) {
      reader.push(pageAt(p));
      for (let k = reader.next(); k; k = reader.next()) out.push(k.data.slice());
    }
    expect(out).toEqual([b, c]);
  });

  test("after a lost page, an orphaned tail whose end never comes is dropped, and the next page not continued begins afresh, its first packet kept", () => {
    const a = packet(1275, 1); // [255 x 5, 0]
    const b = packet(30, 2);
    const c = packet(40, 3);
    const { writer, pages } = collectingWriter(1, { maxSegments: 2 });
    writer.addPacket(a, 1);
    writer.flushPage();
    writer.addPacket(b, 2);
    writer.addPacket(c, 3);
    writer.flushPage();
    const infos = pagesOf(concatBytes(pages));
    expect(infos.map((i) => i.table)).toEqual([[255, 255], [255, 255], [255, 0], [30, 40]]);
    expect(infos.map((i) => i.flags & PageFlag.Continued)).toEqual([0, 1, 1, 0]);

    // Page 0 lost, then page 2 gone too without a trace (a writer that numbered the next page as if it
    // had never been): the tail on page 1 is dropped, and page 3 starts clean.
    const reader = new OggPacketReader(4096);
    reader.lost();
    const out: Uint8Array[] = [];
    for (const p of [pages[1]!, pages[3]!]) {
      reader.push(pageAt(p));
      for (let k = reader.next(); k; k = reader.next()) out.push(k.data.slice());
    }
    expect(out).toEqual([b, c]);
    expect(reader.open).toBe(false);

    // Without the lost page, the same cut is an error: the packet begun on page 0 is not continued.
    const strict = new OggPacketReader(4096);
    strict.push(pageAt(pages[0]!));
    expect(strict.next()).toBeUndefined();
    strict.push(pageAt(pages[1]!));
    expect(strict.next()).toBeUndefined();
    expect(() => strict.push(pageAt(pages[3]!))).toThrow("packet begun at byte 29 is not continued on the next page at byte 0");
  });

  // A rewind resets the reader after whatever the pass before it met: a page lost there must not
  // reach into the pass after it, whose pages are read as a new reader reads them.
  test("reset() after a lost page starts afresh: the first page's orphaned tail is counted as a new reader counts it, and nothing is taken as interrupted", () => {
    const { writer, pages } = collectingWriter(1, { maxSegments: 2 });
    writer.addPacket(packet(600, 1), 1); // pages 0 [255,255], 1 [90, 30]
    writer.addPacket(packet(30, 2), 2);
    writer.flushPage();
    const fresh = new OggPacketReader(4096);
    fresh.push(pageAt(pages[1]!));
    const reader = new OggPacketReader(4096);
    reader.lost();
    reader.reset();
    expect(reader.interrupted).toBe(false);
    reader.push(pageAt(pages[1]!));
    expect({ orphanTails: reader.orphanTails, size: reader.next()?.size }).toEqual({ orphanTails: fresh.orphanTails, size: 30 });
    expect(reader.orphanTails).toBe(1);
  });
});
