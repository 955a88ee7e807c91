import type { FilePlacement } from "../io/file-placement.ts";
import type { ParsedMessage } from "../protocol/index.ts";
import type { SourceReport } from "./frame-source.ts";

/** How a sink tells the role what it met on the way (the role's logger), as a source does. */
export type SinkReport = SourceReport;

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
  /**
   * While it holds what its reader has not taken yet (a pipe's, full):
   * settles once it has written it, and rejects if that write fails. The
   * caller stops reading its socket meanwhile (backpressure); what it writes
   * anyway is held in memory. Undefined while writes go straight through.
   */
  readonly waiting?: Promise<void>;
  /**
   * A sink recording into a regular file: where that file stands against the
   * sink's path (removed, moved away, replaced), looked at no more often than
   * once every SINK_LOOK_MS however often it is asked, and told on the sink's
   * report as it changes (SinkFileWatch). Undefined for a pipe, a device or
   * stdout, which are never looked at so.
   */
  filePlacement?(): FilePlacement | undefined;
  /** Completes the stream (an Ogg sink writes its end-of-stream page) and closes it; a FIFO's settles once its reader took what was begun. */
  close(): void | Promise<void>;
}
