import { readInt32LE, readUint32LE } from "../protocol/index.ts";
import { oggCrc } from "./ogg-crc.ts";

/**
 * The Ogg page (RFC 3533 section 6), all fields little-endian:
 *   0 "OggS" | 4 version u8 (0) | 5 header type flags u8 | 6 granule i64
 *   14 serial u32 | 18 sequence u32 | 22 CRC u32 | 26 segment count u8
 *   27 segment table (lacing values) | body
 */
export const PAGE_HEADER_SIZE = 27;
export const MAX_SEGMENTS = 255;
/** Header, a full segment table and 255 segments of 255 bytes. */
export const MAX_PAGE_SIZE = PAGE_HEADER_SIZE + MAX_SEGMENTS + MAX_SEGMENTS * 255;

export const PageFlag = {
  /** The page starts with the rest of a packet begun on an earlier page. */
  Continued: 0x01,
  BeginOfStream: 0x02,
  EndOfStream: 0x04,
} as const;

/** Granule position of a page on which no packet ends. */
export const NO_GRANULE = -1;

export const CAPTURE = [0x4f, 0x67, 0x67, 0x53]; // "OggS"
/** Where the header's flags are, and where its CRC ends: a page's flags marked anew change the bytes between, and only those. */
export const FLAGS_OFFSET = 5;
const CRC_OFFSET = 22;
export const CRC_END = CRC_OFFSET + 4;
const ZERO_CRC = new Uint8Array(4);
const TWO_32 = 4294967296;

export function hasCapturePattern(bytes: Uint8Array, offset: number): boolean {
  return (
    bytes[offset] === CAPTURE[0] &&
    bytes[offset + 1] === CAPTURE[1] &&
    bytes[offset + 2] === CAPTURE[2] &&
    bytes[offset + 3] === CAPTURE[3]
  );
}

/** The CRC a page of `size` bytes at `offset` should carry (its CRC field counted as zero). */
export function computePageCrc(bytes: Uint8Array, offset: number, size: number): number {
  let crc = oggCrc(bytes, 0, offset, offset + CRC_OFFSET);
  crc = oggCrc(ZERO_CRC, crc);
  return oggCrc(bytes, crc, offset + CRC_OFFSET + 4, offset + size);
}

/**
 * A page viewed in place inside some buffer: no copy. Readers reuse one
 * instance, so it is valid until they produce the next page.
 */
export class OggPage {
  bytes: Uint8Array = new Uint8Array(0);
  offset = 0;
  /** Byte offset of the page in the whole stream (for error messages). */
  streamOffset = 0;
  version = 0;
  flags = 0;
  /**
   * Granule position; a JS number is exact up to 2^53 (thousands of years
   * of 48 kHz samples), which spares bigint on every page.
   */
  granule = 0;
  serial = 0;
  sequence = 0;
  crc = 0;
  segments = 0;
  headerSize = 0;
  bodySize = 0;

  /** Reads the header at `offset`; the segment table must already be in `bytes`. */
  at(bytes: Uint8Array, offset: number, streamOffset: number): this {
    this.bytes = bytes;
    this.offset = offset;
    this.streamOffset = streamOffset;
    this.version = bytes[offset + 4]!;
    this.flags = bytes[offset + FLAGS_OFFSET]!;
    this.granule = readInt32LE(bytes, offset + 10) * TWO_32 + readUint32LE(bytes, offset + 6);
    this.serial = readUint32LE(bytes, offset + 14);
    this.sequence = readUint32LE(bytes, offset + 18);
    this.crc = readUint32LE(bytes, offset + CRC_OFFSET);
    this.segments = bytes[offset + 26]!;
    this.headerSize = PAGE_HEADER_SIZE + this.segments;
    this.bodySize = 0;
    const table = offset + PAGE_HEADER_SIZE;
    for (let i = 0; i < this.segments; i++) this.bodySize += bytes[table + i]!;
    return this;
  }

  get size(): number {
    return this.headerSize + this.bodySize;
  }

  get continued(): boolean {
    return (this.flags & PageFlag.Continued) !== 0;
  }

  get beginOfStream(): boolean {
    return (this.flags & PageFlag.BeginOfStream) !== 0;
  }

  get endOfStream(): boolean {
    return (this.flags & PageFlag.EndOfStream) !== 0;
  }

  lacing(index: number): number {
    return this.bytes[this.offset + PAGE_HEADER_SIZE + index]!;
  }

  /** Index in `bytes` where the body starts. */
  get bodyOffset(): number {
    return this.offset + this.headerSize;
  }

  crcValid(): boolean {
    return computePageCrc(this.bytes, this.offset, this.size) === this.crc;
  }
}

/** Writes a page header (with its CRC, computed over header and body) for a page already laid out in `page`. */
export function sealPage(
  page: Uint8Array,
  size: number,
  flags: number,
  granule: number,
  serial: number,
  sequence: number,
): void {
  const view = new DataView(page.buffer, page.byteOffset, PAGE_HEADER_SIZE);
  page.set(CAPTURE, 0);
  view.setUint8(4, 0);
  view.setUint8(FLAGS_OFFSET, flags);
  const hi = Math.floor(granule / TWO_32);
  view.setUint32(6, granule - hi * TWO_32, true);
  view.setInt32(10, hi, true);
  view.setUint32(14, serial, true);
  view.setUint32(18, sequence, true);
  view.setUint32(CRC_OFFSET, computePageCrc(page, 0, size), true);
}

/** Adds `flag` to the flags of `page` (one whole page) and seals its CRC anew. */
export function flagPage(page: Uint8Array, flag: number): void {
  page[FLAGS_OFFSET]! |= flag;
  new DataView(page.buffer, page.byteOffset, PAGE_HEADER_SIZE).setUint32(CRC_OFFSET, computePageCrc(page, 0, page.length), true);
}
