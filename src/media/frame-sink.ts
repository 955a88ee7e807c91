import type { ParsedMessage } from "../protocol/index.ts";

/** Where received messages go: a wire capture or an Ogg Opus stream. */
export interface FrameSink {
  readonly name: string;
  /** A sink that may drop what it is given (a FIFO's): the OpusFrames it dropped, by reason. */
  readonly dropped?: Readonly<Record<string, number>>;
  /**
   * Every message received on the channel; a sink picks what it records. A
   * write that fails throws once; from then on the sink takes what it is
   * given without throwing and counts its OpusFrames as dropped.
   */
  write(message: ParsedMessage): void;
  /** Pushes what is buffered to the file or pipe (an Ogg sink closes its page). */
  flush(): void;
  /** Completes the stream (an Ogg sink writes its end-of-stream page) and closes it; a FIFO's settles once its reader took what was begun. */
  close(): void | Promise<void>;
}
