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

/**
 * Reads a wire capture (PROTOCOL.md "wire" format) and yields the payloads of
 * its OpusFrame messages; other message types are skipped. The channel is
 * taken from the first message's magic, so a capture of either channel can
 * feed either role.
 */
export class WireSource implements FrameSource {
  private parser: FrameParser | undefined;
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
      return this.frame;
    }
    return undefined;
  }

  async fill(): Promise<boolean> {
    if (this.ended) return false;
    const chunk = await this.bytes.read();
    if (chunk === null) {
      this.ended = true;
      if (this.parser) this.checkEnd();
      return false;
    }
    if (!this.parser && chunk.length > 0) this.parser = new FrameParser(this.detectMagic(chunk));
    this.parser?.push(chunk);
    return true;
  }

  rewind(): boolean {
    if (!this.bytes.rewindable) return false;
    this.bytes.rewind();
    this.parser = undefined;
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

  private detectMagic(chunk: Uint8Array): number {
    if (chunk.length >= 4) {
      const magic = readUint32LE(chunk, 0);
      if (magic === INPUT_MAGIC) return INPUT_MAGIC;
    }
    return OUTPUT_MAGIC;
  }
}
