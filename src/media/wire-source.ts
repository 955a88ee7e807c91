import {
  FrameParser,
  INPUT_MAGIC,
  MessageType,
  OUTPUT_MAGIC,
  ProtocolError,
  readUint32LE,
} from "../protocol/index.ts";
import { openByteSource, type ByteSource } from "./byte-source.ts";
import type { FrameSource, SourceFrame } from "./frame-source.ts";
import { opusPacketSamples } from "./opus-toc.ts";

/**
 * Reads a wire capture (README, Formats: "wire") and yields the payloads of
 * its OpusFrame messages; other message types are skipped. The channel is
 * taken from the first message's magic, so a capture of either channel can
 * feed either role.
 */
export class WireSource implements FrameSource {
  private parser: FrameParser | undefined;
  /** The first bytes, while fewer than a magic's 4: a pipe may deliver 2, then the rest. */
  private head: Uint8Array | undefined;
  private readonly frame: SourceFrame = { payload: new Uint8Array(0), timeMs: 0 };
  private ended = false;

  private constructor(private readonly bytes: ByteSource) {}

  get name(): string {
    return this.bytes.name;
  }

  static async open(path: string): Promise<WireSource> {
    return new WireSource(await openByteSource(path));
  }

  /** Reads from any ByteSource (one writer's stream on a FIFO, chunks cut by a test). */
  static from(bytes: ByteSource): WireSource {
    return new WireSource(bytes);
  }

  next(): SourceFrame | undefined {
    const parser = this.parser;
    if (!parser) return undefined;
    for (let m = this.parse(parser); m; m = this.parse(parser)) {
      if (m.type !== MessageType.OpusFrame) continue;
      this.frame.payload = m.payload;
      this.frame.timeMs = m.timestampMs;
      this.frame.durationMs = playedMs(m.payload);
      return this.frame;
    }
    return undefined;
  }

  async fill(): Promise<boolean> {
    if (this.ended) return false;
    const chunk = await this.bytes.read();
    if (chunk === null) {
      this.ended = true;
      // Fewer than 4 bytes in all: the parser tells them as a message cut short.
      if (!this.parser && this.head) this.start(this.head);
      if (this.parser) this.checkEnd();
      return false;
    }
    if (this.parser) this.parser.push(chunk);
    else this.gather(chunk);
    return true;
  }

  /** Holds the first bytes until the magic is whole, then starts the parser on them. */
  private gather(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    // Copied: the byte source may reuse its buffer for the next read.
    const bytes = this.head ? concat(this.head, chunk) : chunk;
    if (bytes.length < 4) {
      this.head = bytes.slice();
      return;
    }
    this.head = undefined;
    this.start(bytes);
  }

  private start(bytes: Uint8Array): void {
    this.parser = new FrameParser(this.detectMagic(bytes));
    this.parser.push(bytes);
  }

  rewind(): boolean {
    if (!this.bytes.rewindable) return false;
    this.bytes.rewind();
    this.parser = undefined;
    this.head = undefined;
    this.ended = false;
    return true;
  }

  async close(): Promise<void> {
    await this.bytes.close();
  }

  private parse(parser: FrameParser) {
    try {
      return parser.next();
    } catch (e) {
      throw this.located(e);
    }
  }

  private checkEnd(): void {
    try {
      this.parser!.finish();
    } catch (e) {
      throw this.located(e);
    }
  }

  private located(e: unknown): Error {
    if (e instanceof ProtocolError) return new Error(`wire source ${this.name}: ${e.message}`);
    return e as Error;
  }

  /** The channel of the first 4 bytes (fewer only at the end of input: a message cut short either way). */
  private detectMagic(bytes: Uint8Array): number {
    if (bytes.length >= 4 && readUint32LE(bytes, 0) === INPUT_MAGIC) return INPUT_MAGIC;
    return OUTPUT_MAGIC;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/** How long an Opus payload plays (its TOC), for --realtime; none for one whose TOC cannot be valid: the wire carries any payload. */
function playedMs(payload: Uint8Array): number | undefined {
  try {
    return opusPacketSamples(payload) / 48;
  } catch {
    return undefined;
  }
}
