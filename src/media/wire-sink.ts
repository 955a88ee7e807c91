import type { ParsedMessage } from "../protocol/index.ts";
import { ByteSink } from "./byte-sink.ts";
import type { FrameSink } from "./frame-sink.ts";

/** Records every message exactly as received: the lossless wire capture format. */
export class WireSink implements FrameSink {
  private constructor(private readonly bytes: ByteSink) {}

  static open(path: string): WireSink {
    return new WireSink(ByteSink.open(path));
  }

  get name(): string {
    return this.bytes.name;
  }

  write(message: ParsedMessage): void {
    this.bytes.write(message.raw);
  }

  flush(): void {
    this.bytes.flush();
  }

  close(): void {
    this.bytes.close();
  }
}
