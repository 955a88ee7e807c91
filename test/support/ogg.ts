/** Ogg pages and packets for tests: a page writer that collects its pages, and the pages and packets of a stream. */
import { computePageCrc } from "../../src/media/ogg-page.ts";
import { OggPacketReader } from "../../src/media/ogg-packet-reader.ts";
import { OggPageReader } from "../../src/media/ogg-page-reader.ts";
import { OggPageWriter, type OggPageWriterOptions } from "../../src/media/ogg-page-writer.ts";
import { buildOpusHead } from "../../src/media/opus-head.ts";
import { buildOpusTags } from "../../src/media/opus-tags.ts";
import { opusPacketSamples } from "../../src/media/opus-toc.ts";
import { write32LE } from "../../src/protocol/index.ts";
import { concatBytes } from "./bytes.ts";

/** Writes into the page at `offset` in `bytes` (the whole of `bytes` by default) the CRC its bytes now call for: an edit that reads as the writer's own. */
export function sealPage(bytes: Uint8Array, offset = 0, size = bytes.length - offset): void {
  write32LE(bytes, offset + 22, computePageCrc(bytes, offset, size));
}

/** A page writer whose pages are collected as separate copies. */
export function collectingWriter(serial: number, options?: OggPageWriterOptions) {
  const pages: Uint8Array[] = [];
  const writer = new OggPageWriter(serial, (page) => pages.push(page.slice()), options);
  return { writer, pages };
}

export interface PageInfo {
  offset: number;
  size: number;
  flags: number;
  granule: number;
  serial: number;
  sequence: number;
  segments: number;
  crcValid: boolean;
  /** Lacing values. */
  table: number[];
}

export function pagesOf(bytes: Uint8Array): PageInfo[] {
  const reader = new OggPageReader();
  reader.push(bytes);
  const pages: PageInfo[] = [];
  for (let p = reader.next(); p; p = reader.next()) {
    pages.push({
      offset: p.streamOffset,
      size: p.size,
      flags: p.flags,
      granule: p.granule,
      serial: p.serial,
      sequence: p.sequence,
      segments: p.segments,
      crcValid: p.crcValid(),
      table: Array.from({ length: p.segments }, (_, i) => p.lacing(i)),
    });
  }
  reader.finish();
  return pages;
}

/**
 * Packets on a stream's end-of-stream page that its granule trims whole (the
 * sink's silence when the last audio went out before the end): 0 when that
 * page's granule is past the page before's. One logical stream, whole pages.
 */
export function trimmedWhole(bytes: Uint8Array): number {
  const pages = pagesOf(bytes);
  const [before, last] = [pages.at(-2), pages.at(-1)];
  if (!before || !last || (last.flags & 4) === 0 || last.granule !== before.granule) return 0;
  return last.table.filter((lacing) => lacing < 255).length;
}

/**
 * The audio packets of one logical stream, as a player plays them: those
 * after OpusHead and OpusTags, less the silence its end trims whole.
 */
export function audioPacketsOf(bytes: Uint8Array): Uint8Array[] {
  const packets = packetsOf(bytes);
  return packets.slice(2, packets.length - trimmedWhole(bytes));
}

/** The logical streams of a chain (each link's pages, by serial), in the order they begin. */
export function linksOf(bytes: Uint8Array): Uint8Array[] {
  const pages = pagesOf(bytes);
  return [...new Set(pages.map((p) => p.serial))].map((serial) =>
    concatBytes(pages.filter((p) => p.serial === serial).map((p) => bytes.subarray(p.offset, p.offset + p.size))),
  );
}

/** Every packet of every page, copied, in order (one logical stream). */
export function packetsOf(bytes: Uint8Array, capacity = 1 << 20): Uint8Array[] {
  const pages = new OggPageReader();
  const packets = new OggPacketReader(capacity);
  pages.push(bytes);
  const out: Uint8Array[] = [];
  for (let page = pages.next(); page; page = pages.next()) {
    packets.push(page);
    for (let p = packets.next(); p; p = packets.next()) out.push(p.data.slice());
  }
  pages.finish();
  return out;
}

/**
 * An Ogg Opus stream built with our page writer: headers on their own pages,
 * then `packets` grouped `perPage` to a page, at most `maxSegments` lacing
 * values per page. Returns the bytes, the pages and each page's offset.
 */
export function buildStream(packets: Uint8Array[], perPage: number, maxSegments = 255, serial = 0x1234, inputSampleRate = 48000) {
  const { writer, pages } = collectingWriter(serial, { maxSegments });
  writer.addPacket(buildOpusHead({ channels: 2, preSkip: 312, inputSampleRate }), 0);
  writer.flushPage();
  writer.addPacket(buildOpusTags(), 0);
  writer.flushPage();
  let granule = 0;
  packets.forEach((p, i) => {
    granule += opusPacketSamples(p);
    writer.addPacket(p, granule);
    if ((i + 1) % perPage === 0) writer.flushPage();
  });
  writer.flushPage(true);
  const offsets = pages.map((_, i) => pages.slice(0, i).reduce((n, p) => n + p.length, 0));
  return { bytes: concatBytes(pages), pages, offsets };
}
