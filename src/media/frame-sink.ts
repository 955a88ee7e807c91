import type { ParsedMessage } from "../protocol/index.ts";

/** Where received messages go: a wire capture or an Ogg Opus stream. */
export interface FrameSink {
  readonly name: string;
  /** Every message received on the channel; a sink picks what it records. */
  write(message: ParsedMessage): void;
  /** Pushes what is buffered to the file or pipe (an Ogg sink closes its page). */
  flush(): void;
  /** Completes the stream (an Ogg sink writes its end-of-stream page) and closes it. */
  close(): void;
}
