import { ProtocolError } from "./errors.ts";
import { validateHeader } from "./header.ts";
import { HEADER_SIZE, MAX_MESSAGE } from "./limits.ts";
import { readUint32LE } from "./little-endian.ts";
import type { MessageType } from "./message-type.ts";
import { readTimestampMs, readTimestampNs } from "./timestamp.ts";

/**
 * One parsed message, viewed in place (no copy). The parser reuses this
 * object: it is valid until the next call to `next()`.
 */
export class ParsedMessage {
  /** Buffer holding the whole message; `offset` is where its header starts. */
  bytes: Uint8Array = new Uint8Array(0);
  offset = 0;
  type: MessageType = 0;
  /** Payload length in bytes. */
  length = 0;
  /** Byte offset of this message in the whole stream. */
  streamOffset = 0;

  get payload(): Uint8Array {
    const start = this.offset + HEADER_SIZE;
    return this.bytes.subarray(start, start + this.length);
  }

  /** Header and payload exactly as they were on the wire. */
  get raw(): Uint8Array {
    return this.bytes.subarray(this.offset, this.offset + HEADER_SIZE + this.length);
  }

  get timestampMs(): number {
    return readTimestampMs(this.bytes, this.offset + 9);
  }

  get timestampNs(): bigint {
    return readTimestampNs(this.bytes, this.offset + 9);
  }
}

/**
 * Streaming parser: reassembles messages from arbitrary chunk boundaries.
 *
 * Usage: `push(chunk)`, then call `next()` until it returns undefined, then
 * push the next chunk. Whole messages inside a chunk are viewed in place; only
 * a message split across chunks is copied, into one fixed buffer of the
 * largest legal size, so a peer can never make it allocate more. A header is
 * validated as soon as its 17 bytes are present, before any payload is
 * awaited. After a violation every call throws the same ProtocolError: a
 * broken stream is never resynchronised.
 */
export class FrameParser {
  private chunk: Uint8Array = new Uint8Array(0);
  private pos = 0;
  private readonly partial = new Uint8Array(MAX_MESSAGE);
  private held = 0;
  private partialTotal = 0;
  private consumed = 0;
  private failure: ProtocolError | undefined;
  private readonly message = new ParsedMessage();

  constructor(readonly magic: number) {}

  /** Byte offset in the stream of the first byte not yet returned in a message. */
  get streamOffset(): number {
    return this.consumed;
  }

  /** Bytes held of a message not yet complete (0 at a message boundary). */
  get pending(): number {
    return this.held + (this.chunk.length - this.pos);
  }

  get failed(): ProtocolError | undefined {
    return this.failure;
  }

  push(chunk: Uint8Array): void {
    if (this.pos < this.chunk.length) {
      throw new Error("FrameParser.push: previous chunk not fully consumed");
    }
    this.chunk = chunk;
    this.pos = 0;
  }

  /** The next whole message, or undefined when more bytes are needed. Throws ProtocolError. */
  next(): ParsedMessage | undefined {
    if (this.failure) throw this.failure;
    if (this.held > 0) return this.continuePartial();

    const available = this.chunk.length - this.pos;
    if (available < HEADER_SIZE) {
      this.hold(available);
      return undefined;
    }
    this.check(this.chunk, this.pos);
    const total = HEADER_SIZE + readUint32LE(this.chunk, this.pos + 5);
    if (available < total) {
      this.partialTotal = total;
      this.hold(available);
      return undefined;
    }
    const message = this.fill(this.chunk, this.pos);
    this.pos += total;
    this.consumed += total;
    return message;
  }

  /** Call at end of stream: throws Truncated if it stopped inside a message. */
  finish(): void {
    if (this.failure) throw this.failure;
    const pending = this.pending;
    if (pending === 0) return;
    const total = this.partialTotal || HEADER_SIZE;
    this.failure = ProtocolError.truncated(total - pending, this.consumed);
    throw this.failure;
  }

  private continuePartial(): ParsedMessage | undefined {
    if (this.held < HEADER_SIZE) {
      this.take(HEADER_SIZE - this.held);
      if (this.held < HEADER_SIZE) return undefined;
      this.check(this.partial, 0);
      this.partialTotal = HEADER_SIZE + readUint32LE(this.partial, 5);
    }
    this.take(this.partialTotal - this.held);
    if (this.held < this.partialTotal) return undefined;
    const message = this.fill(this.partial, 0);
    this.consumed += this.partialTotal;
    this.held = 0;
    this.partialTotal = 0;
    return message;
  }

  private hold(count: number): void {
    if (count > 0) this.partial.set(this.chunk.subarray(this.pos, this.pos + count), 0);
    this.held = count;
    this.pos += count;
  }

  private take(wanted: number): void {
    const count = Math.min(wanted, this.chunk.length - this.pos);
    if (count <= 0) return;
    this.partial.set(this.chunk.subarray(this.pos, this.pos + count), this.held);
    this.held += count;
    this.pos += count;
  }

  private check(bytes: Uint8Array, offset: number): void {
    const error = validateHeader(bytes, offset, this.magic, this.consumed);
    if (error) {
      this.failure = error;
      throw error;
    }
  }

  private fill(bytes: Uint8Array, offset: number): ParsedMessage {
    const m = this.message;
    m.bytes = bytes;
    m.offset = offset;
    m.type = bytes[offset + 4]! as MessageType;
    m.length = readUint32LE(bytes, offset + 5);
    m.streamOffset = this.consumed;
    return m;
  }
}
