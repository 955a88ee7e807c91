import { OggError } from "./ogg-error.ts";
import type { OggPage } from "./ogg-page.ts";

/** One packet, reused by the reader: valid until its next `next()` or `push()`. */
export interface OggPacket {
  /** The packet bytes, or only the first `capacity` of them when `size` is larger. */
  data: Uint8Array;
  /** The packet's real size in bytes. */
  size: number;
  /** Byte offset in the stream of the packet's first byte. */
  streamOffset: number;
}

/**
 * Reassembles the packets of one logical stream from its pages (RFC 3533
 * lacing: segments of 255 continue a packet, a shorter one ends it; a packet
 * still open at the end of a page goes on in the next, flagged "continued").
 *
 * A packet inside one page is viewed in place; one spanning pages is copied
 * into a fixed buffer of `capacity` bytes. A larger packet is not stored
 * beyond that, only measured, so a hostile stream cannot make it allocate;
 * the caller sees `size > data.length` and decides (a big OpusTags is fine,
 * a big audio packet is not).
 */
export class OggPacketReader {
  private page: OggPage | undefined;
  private segment = 0;
  /** Body index (in page.bytes) of the end of the segments read so far. */
  private bodyPos = 0;
  /** Body index where the current packet's bytes on this page begin. */
  private pieceStart = 0;
  private readonly buffer: Uint8Array;
  /** Bytes of a packet carried over from earlier pages, or -1 when none is open. */
  private carried = -1;
  private carriedOffset = 0;
  /** After a lost page: drop the tail of a packet whose start was lost. */
  private resync = false;
  private dropping = false;
  /** Pages that continued a packet none had begun: each one's first (partial) packet dropped. */
  orphanTails = 0;
  private readonly packet: OggPacket = { data: new Uint8Array(0), size: 0, streamOffset: 0 };

  constructor(readonly capacity: number) {
    this.buffer = new Uint8Array(capacity);
  }

  /** True when a packet was begun and its end has not been seen yet. */
  get open(): boolean {
    return this.carried >= 0;
  }

  /** Byte offset of the open packet's first byte. */
  get openOffset(): number {
    return this.carriedOffset;
  }

  /** Starts on the next page of the stream; the previous one must have been read to its end. */
  push(page: OggPage): void {
    if (this.page) throw new Error("OggPacketReader.push: previous page not fully read");
    if (this.resync) {
      // A page went missing: whatever was open is incomplete, and a continued
      // tail here belongs to a packet whose start was lost.
      this.resync = false;
      this.carried = -1;
      this.dropping = page.continued;
    } else if (page.continued) {
      // RFC 7845 section 3: the tail of a packet whose start is not in the stream (one joined
      // mid-broadcast, headers pasted on the front) must not be decoded: dropped, read on after it.
      if (this.carried < 0 && !this.dropping) {
        this.dropping = true;
        this.orphanTails++;
      }
    } else {
      if (this.carried >= 0) {
        throw new OggError(
          `packet begun at byte ${this.carriedOffset} is not continued on the next page`,
          page.streamOffset,
        );
      }
      this.dropping = false;
    }
    this.page = page;
    this.segment = 0;
    this.bodyPos = page.bodyOffset;
    this.pieceStart = this.bodyPos;
  }

  /** Call when a page of the stream was skipped (bad CRC): drops the packets it touched. */
  lost(): void {
    this.resync = true;
  }

  /** A page was lost since the last one pushed: the open packet, if any, is incomplete and will be dropped. */
  get interrupted(): boolean {
    return this.resync;
  }

  /** Starts afresh (for rewinding the input). */
  reset(): void {
    this.page = undefined;
    this.carried = -1;
    this.resync = false;
    this.dropping = false;
  }

  /** The next packet ending on the current page, or undefined when the page is used up. */
  next(): OggPacket | undefined {
    const page = this.page;
    if (!page) return undefined;
    while (this.segment < page.segments) {
      const lacing = page.lacing(this.segment++);
      this.bodyPos += lacing;
      if (lacing === 255) continue;
      const start = this.pieceStart;
      this.pieceStart = this.bodyPos;
      if (this.dropping) {
        this.dropping = false;
        continue;
      }
      const p = this.packet;
      if (this.carried < 0) {
        p.data = page.bytes.subarray(start, this.bodyPos);
        p.size = this.bodyPos - start;
        p.streamOffset = this.offsetOf(page, start);
      } else {
        this.carry(page, start);
        p.data = this.buffer.subarray(0, Math.min(this.carried, this.capacity));
        p.size = this.carried;
        p.streamOffset = this.carriedOffset;
        this.carried = -1;
      }
      return p;
    }
    // The page is used up; a packet still open goes on in the next page.
    if (this.pieceStart < this.bodyPos && !this.dropping) {
      if (this.carried < 0) {
        this.carried = 0;
        this.carriedOffset = this.offsetOf(page, this.pieceStart);
      }
      this.carry(page, this.pieceStart);
    }
    this.page = undefined;
    return undefined;
  }

  private carry(page: OggPage, start: number): void {
    const room = this.capacity - this.carried;
    if (room > 0) this.buffer.set(page.bytes.subarray(start, start + Math.min(room, this.bodyPos - start)), this.carried);
    this.carried += this.bodyPos - start;
  }

  private offsetOf(page: OggPage, index: number): number {
    return page.streamOffset + (index - page.offset);
  }
}
