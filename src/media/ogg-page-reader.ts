import { OggError } from "./ogg-error.ts";
import { CAPTURE, hasCapturePattern, MAX_PAGE_SIZE, OggPage, PAGE_HEADER_SIZE } from "./ogg-page.ts";

/** What sizeOf() says of bytes that cannot begin a page (seeking only). */
const NOT_A_PAGE = -1;

/** The first `have` bytes at `offset` (up to 4) are those of "OggS". */
function startsCapture(bytes: Uint8Array, offset: number, have: number): boolean {
  if (have >= 4) return hasCapturePattern(bytes, offset);
  for (let i = 0; i < have; i++) if (bytes[offset + i] !== CAPTURE[i]) return false;
  return true;
}

/**
 * Cuts a byte stream, fed in chunks of any size, into Ogg pages.
 *
 * Usage: `push(chunk)`, then `next()` until it returns undefined, then push
 * the next chunk. Pages inside a chunk are viewed in place; only a page split
 * across chunks is copied, into one buffer of the largest page size. Checks
 * the capture pattern and version; the CRC is left to the caller, who decides
 * whether a bad page is fatal. Strict, a stream that is not a page where one
 * should begin is an error, and every later call throws it again. Seeking,
 * bytes that are not a page are passed over to the next capture pattern
 * (counted in `skippedBytes`), and `resync()` does the same for a page the
 * caller found bad: a damaged header or segment table gives a wrong length,
 * so the next page is looked for from the bad one's second byte, as libogg
 * does, never where its length says.
 */
export class OggPageReader {
  private chunk: Uint8Array = new Uint8Array(0);
  private pos = 0;
  private readonly partial = new Uint8Array(MAX_PAGE_SIZE);
  private held = 0;
  private consumed = 0;
  private failure: OggError | undefined;
  private readonly page = new OggPage();
  /** The page last returned: its offset and size, and whether it was read from `partial`. */
  private last: { offset: number; size: number; fromPartial: boolean } | undefined;
  /** Bytes passed over that began no page (seeking only). */
  skippedBytes = 0;

  constructor(private readonly seeking = false) {}

  /** Byte offset in the stream of the next page. */
  get streamOffset(): number {
    return this.consumed;
  }

  push(chunk: Uint8Array): void {
    if (this.pos < this.chunk.length) throw new Error("OggPageReader.push: previous chunk not fully consumed");
    this.chunk = chunk;
    this.pos = 0;
  }

  /** Starts afresh at stream offset 0 (for rewinding the input). */
  reset(): void {
    this.chunk = new Uint8Array(0);
    this.pos = 0;
    this.held = 0;
    this.consumed = 0;
    this.failure = undefined;
    this.last = undefined;
    this.skippedBytes = 0;
  }

  /** The next whole page (valid until the next call), or undefined when more bytes are needed. */
  next(): OggPage | undefined {
    if (this.failure) throw this.failure;
    for (;;) {
      // What `partial` holds was found to begin a page when it was put there.
      if (this.held > 0) return this.continuePartial(this.sizeOf(this.partial, 0, this.held));
      const available = this.available();
      if (available === 0) return undefined;
      const size = this.sizeOf(this.chunk, this.pos, available);
      if (size < 0) {
        this.skipToCapture();
        continue;
      }
      if (size > available) {
        this.partial.set(this.chunk.subarray(this.pos), 0);
        this.held = available;
        this.pos = this.chunk.length;
        continue;
      }
      const page = this.page.at(this.chunk, this.pos, this.consumed);
      this.last = { offset: this.consumed, size, fromPartial: false };
      this.pos += size;
      this.consumed += size;
      return page;
    }
  }

  /**
   * Seeking: the page last returned was bad (its CRC); the next page is
   * looked for from its second byte, and its bytes count as skipped.
   */
  resync(): void {
    const last = this.last;
    if (!this.seeking || !last) throw new Error("OggPageReader.resync: only while seeking, after a page");
    this.last = undefined;
    if (last.fromPartial) {
      this.consumed = last.offset;
      this.readAgainFrom(this.partial.slice(1, last.size));
    } else {
      this.pos -= last.size - 1;
      this.consumed = last.offset + 1;
      this.skippedBytes++;
    }
  }

  /**
   * Call at end of input. Strict, throws if the input stopped inside a page.
   * Seeking, bytes held for a page that can now never be whole (a damaged
   * length, a capture pattern cut off) are looked through again from their
   * second byte, and this returns true: call next() until it returns
   * undefined, then finish() again.
   */
  finish(): boolean {
    if (this.failure) throw this.failure;
    if (this.held === 0) return false;
    if (this.seeking) {
      this.readAgainFrom(this.partial.subarray(1, this.held));
      return true;
    }
    const size = this.sizeOf(this.partial, 0, this.held);
    this.failure = new OggError(`truncated: input ends ${size - this.held} byte(s) short of the page`, this.consumed);
    throw this.failure;
  }

  /** Adds what the chunk has of the page begun in `partial` (`size` bytes as far as known); the page once whole. */
  private continuePartial(size: number): OggPage | undefined {
    while (size > this.held) {
      const count = Math.min(size - this.held, this.available());
      if (count === 0) return undefined;
      this.partial.set(this.chunk.subarray(this.pos, this.pos + count), this.held);
      this.held += count;
      this.pos += count;
      size = this.sizeOf(this.partial, 0, this.held);
      if (size < 0) {
        this.readAgainFrom(this.partial.subarray(1, this.held));
        return this.next();
      }
    }
    const page = this.page.at(this.partial, 0, this.consumed);
    this.last = { offset: this.consumed, size: this.held, fromPartial: true };
    this.consumed += this.held;
    this.held = 0;
    return page;
  }

  private available(): number {
    return this.chunk.length - this.pos;
  }

  /**
   * Seeking: `bytes` (from the start of `partial`, or the page last
   * returned, less its first byte, which began no page) are read again,
   * ahead of the rest of the chunk.
   */
  private readAgainFrom(bytes: Uint8Array): void {
    const rest = this.chunk.subarray(this.pos);
    const again = new Uint8Array(bytes.length + rest.length);
    again.set(bytes, 0);
    again.set(rest, bytes.length);
    this.held = 0;
    this.chunk = again;
    this.pos = 0;
    this.consumed++;
    this.skippedBytes++;
  }

  /** Seeking: passes over the chunk's bytes up to the next "O" that may begin a capture pattern. */
  private skipToCapture(): void {
    const found = this.chunk.indexOf(CAPTURE[0]!, this.pos + 1);
    const to = found < 0 ? this.chunk.length : found;
    this.skippedBytes += to - this.pos;
    this.consumed += to - this.pos;
    this.pos = to;
  }

  /**
   * Bytes the page at `offset` needs, as far as the first `have` bytes tell:
   * the fixed header, then header and segment table, then the whole page;
   * NOT_A_PAGE (seeking) when they cannot begin one.
   */
  private sizeOf(bytes: Uint8Array, offset: number, have: number): number {
    if (!this.seeking) {
      if (have >= 4 && !hasCapturePattern(bytes, offset)) this.fail("no Ogg capture pattern \"OggS\"");
      if (have >= 5 && bytes[offset + 4] !== 0) this.fail(`unsupported Ogg version ${bytes[offset + 4]} (RFC 3533 defines version 0 only)`);
    } else if (!startsCapture(bytes, offset, have) || (have >= 5 && bytes[offset + 4] !== 0)) {
      return NOT_A_PAGE;
    }
    if (have < PAGE_HEADER_SIZE) return PAGE_HEADER_SIZE;
    const segments = bytes[offset + 26]!;
    const tableEnd = PAGE_HEADER_SIZE + segments;
    if (have < tableEnd) return tableEnd;
    let size = tableEnd;
    for (let i = offset + PAGE_HEADER_SIZE; i < offset + tableEnd; i++) size += bytes[i]!;
    return size;
  }

  private fail(message: string): never {
    this.failure = new OggError(message, this.consumed);
    throw this.failure;
  }
}
