import { OggError } from "./ogg-error.ts";
import { hasCapturePattern, MAX_PAGE_SIZE, OggPage, PAGE_HEADER_SIZE } from "./ogg-page.ts";

/**
 * Cuts a byte stream, fed in chunks of any size, into Ogg pages.
 *
 * Usage: `push(chunk)`, then `next()` until it returns undefined, then push
 * the next chunk. Pages inside a chunk are viewed in place; only a page split
 * across chunks is copied, into one buffer of the largest page size. Checks
 * the capture pattern and version (no resync after a failure: every later
 * call throws the same error); the CRC is left to the caller, who decides
 * whether a bad page is fatal.
 */
export class OggPageReader {
  private chunk: Uint8Array = new Uint8Array(0);
  private pos = 0;
  private readonly partial = new Uint8Array(MAX_PAGE_SIZE);
  private held = 0;
  private consumed = 0;
  private failure: OggError | undefined;
  private readonly page = new OggPage();

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
  }

  /** The next whole page (valid until the next call), or undefined when more bytes are needed. */
  next(): OggPage | undefined {
    if (this.failure) throw this.failure;
    if (this.held > 0) return this.continuePartial();
    const available = this.chunk.length - this.pos;
    if (available === 0) return undefined;
    const size = this.sizeOf(this.chunk, this.pos, available);
    if (size > available) {
      this.partial.set(this.chunk.subarray(this.pos), 0);
      this.held = available;
      this.pos = this.chunk.length;
      return undefined;
    }
    const page = this.page.at(this.chunk, this.pos, this.consumed);
    this.pos += size;
    this.consumed += size;
    return page;
  }

  /** Call at end of input: throws if the input stopped inside a page. */
  finish(): void {
    if (this.failure) throw this.failure;
    if (this.held === 0) return;
    const size = this.sizeOf(this.partial, 0, this.held);
    this.failure = new OggError(`truncated: input ends ${size - this.held} byte(s) short of the page`, this.consumed);
    throw this.failure;
  }

  private continuePartial(): OggPage | undefined {
    for (;;) {
      const size = this.sizeOf(this.partial, 0, this.held);
      if (size <= this.held) break;
      const count = Math.min(size - this.held, this.chunk.length - this.pos);
      if (count === 0) return undefined;
      this.partial.set(this.chunk.subarray(this.pos, this.pos + count), this.held);
      this.held += count;
      this.pos += count;
    }
    const page = this.page.at(this.partial, 0, this.consumed);
    this.consumed += this.held;
    this.held = 0;
    return page;
  }

  /**
   * Bytes the page at `offset` needs, as far as the first `have` bytes tell:
   * the fixed header, then header and segment table, then the whole page.
   */
  private sizeOf(bytes: Uint8Array, offset: number, have: number): number {
    if (have >= 4 && !hasCapturePattern(bytes, offset)) this.fail("no Ogg capture pattern \"OggS\"");
    if (have >= 5 && bytes[offset + 4] !== 0) this.fail(`unsupported Ogg version ${bytes[offset + 4]}`);
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
