import { MessageType, type ParsedMessage } from "../protocol/index.ts";
import { ByteSink, type ByteOutput } from "./byte-sink.ts";
import type { FrameSink } from "./frame-sink.ts";

/** Records every message exactly as received: the lossless wire capture format. */
export class WireSink implements FrameSink {
  private constructor(private readonly bytes: ByteOutput) {}

  static open(path: string): WireSink {
    return new WireSink(ByteSink.open(path));
  }

  /** A capture written to `bytes`, each message in one write. */
  static over(bytes: ByteOutput): WireSink {
    return new WireSink(bytes);
  }

  get name(): string {
    return this.bytes.name;
  }

  /** What the output dropped: a wire capture leaves out nothing itself. */
  get dropped(): Readonly<Record<string, number>> | undefined {
    return this.bytes.dropped;
  }

  write(message: ParsedMessage): void {
    this.bytes.write(message.raw, message.type === MessageType.OpusFrame ? 1 : 0);
  }

  flush(): void {
    this.bytes.flush();
  }

  close(): void | Promise<void> {
    return this.bytes.close();
  }

  /** While its output holds what its reader has not taken (FrameSink.waiting). */
  get waiting(): Promise<void> | undefined {
    return this.bytes.waiting;
  }
}
