import { MAX_PAGE_SIZE, MAX_SEGMENTS, NO_GRANULE, PAGE_HEADER_SIZE, PageFlag, sealPage } from "./ogg-page.ts";

export interface OggPageWriterOptions {
  /** Segments per page, 1..255; fewer forces packets across pages (tests). */
  maxSegments?: number;
}

/**
 * Packs packets of one logical stream into pages (RFC 3533): lacing values,
 * continued packets, BOS on the first page, sequence numbers, CRC. A page is
 * emitted when its segment table is full or on `flushPage()`; the caller
 * decides when a page is long enough.
 *
 * The page is built in one reused buffer: the body is laid out at a fixed
 * place after room for a full segment table, and at flush time header and
 * table are written just in front of it, so each packet is copied once.
 */
export class OggPageWriter {
  private readonly buffer = new Uint8Array(MAX_PAGE_SIZE);
  private readonly table = new Uint8Array(MAX_SEGMENTS);
  private readonly maxSegments: number;
  private segments = 0;
  private bodySize = 0;
  /** Granule of the last packet that ends on the pending page. */
  private granule = NO_GRANULE;
  private continued = false;
  /** Sequence number of the next page. */
  sequence = 0;
  private streamSerial: number;

  constructor(
    serial: number,
    private readonly emit: (page: Uint8Array) => void,
    options: OggPageWriterOptions = {},
  ) {
    this.streamSerial = serial;
    this.maxSegments = options.maxSegments ?? MAX_SEGMENTS;
    if (!(this.maxSegments >= 1 && this.maxSegments <= MAX_SEGMENTS)) {
      throw new Error(`maxSegments must be 1..${MAX_SEGMENTS}, got ${this.maxSegments}`);
    }
  }

  /** The logical stream's serial number. */
  get serial(): number {
    return this.streamSerial;
  }

  /**
   * Begins the next logical stream, `serial`, after this one's end (a chained
   * link, RFC 7845 section 3): its pages numbered from 0, the first flagged
   * BOS. The page buffer is kept, so a peer changing the audio before every
   * frame costs no 64 KiB a link. Called once the end-of-stream page is out,
   * with nothing pending (flushPage leaves none).
   */
  begin(serial: number): void {
    this.streamSerial = serial;
    this.sequence = 0;
  }

  /** Segments held for the page not yet emitted. */
  get pendingSegments(): number {
    return this.segments;
  }

  /** Whether a packet of `length` bytes fits the pending page whole. */
  fits(length: number): boolean {
    return Math.floor(length / 255) + 1 <= this.maxSegments - this.segments;
  }

  /**
   * Adds one packet; `granule` is the stream position after it. A packet that
   * does not fit the pending page starts a fresh one rather than being split,
   * unless it is too big for any page.
   */
  addPacket(packet: Uint8Array, granule: number): void {
    if (this.segments > 0 && !this.fits(packet.length)) this.flushPage();
    const bodyStart = PAGE_HEADER_SIZE + MAX_SEGMENTS;
    let at = 0;
    for (let first = true; ; first = false) {
      if (this.segments === this.maxSegments) {
        this.flushPage();
        this.continued = !first;
      }
      const n = Math.min(255, packet.length - at);
      this.table[this.segments++] = n;
      this.buffer.set(packet.subarray(at, at + n), bodyStart + this.bodySize);
      this.bodySize += n;
      at += n;
      if (n < 255) break; // a lacing value below 255 ends the packet
    }
    this.granule = granule;
  }

  /**
   * Emits the pending page, if any. With `endOfStream` it is flagged EOS, and
   * an empty EOS page is emitted when nothing is pending; like any page on
   * which no packet ends it carries granule -1 (opusinfo warns about an empty
   * page claiming a position). Returns whether a page was emitted.
   */
  flushPage(endOfStream = false): boolean {
    if (this.segments === 0 && !endOfStream) return false;
    const start = MAX_SEGMENTS - this.segments;
    const size = PAGE_HEADER_SIZE + this.segments + this.bodySize;
    const page = this.buffer.subarray(start, start + size);
    page[26] = this.segments;
    page.set(this.table.subarray(0, this.segments), PAGE_HEADER_SIZE);
    let flags = 0;
    if (this.continued) flags |= PageFlag.Continued;
    if (this.sequence === 0) flags |= PageFlag.BeginOfStream;
    if (endOfStream) flags |= PageFlag.EndOfStream;
    sealPage(page, size, flags, this.granule, this.serial, this.sequence);
    this.sequence = (this.sequence + 1) >>> 0;
    this.segments = 0;
    this.bodySize = 0;
    this.granule = NO_GRANULE;
    this.continued = false;
    this.emit(page);
    return true;
  }
}
