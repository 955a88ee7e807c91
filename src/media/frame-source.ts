import type { AudioConfig } from "../protocol/index.ts";

/** How a source tells the role what it met on the way (the role's logger): a writer come or gone, a page skipped. */
export type SourceReport = (level: "info" | "warn", message: string, fields?: Record<string, unknown>) => void;

/** One audio frame from a source. Reused by the source: valid until its next `next()`. */
export interface SourceFrame {
  /** The Opus packet, at most MAX_PAYLOAD bytes. */
  payload: Uint8Array;
  /** Position on the source's own timeline in ms (drives --realtime pacing). */
  timeMs: number;
  /** How long it plays (ms), where the source knows (an Ogg packet's samples; the wire carries none). */
  durationMs?: number;
}

/**
 * A pull source of Opus frames. `next()` returns a buffered frame or
 * undefined when it needs input; `fill()` reads more and resolves false at
 * the end of input. Malformed input throws an Error naming the byte offset;
 * frames returned before it stay valid.
 */
export interface FrameSource {
  readonly name: string;
  /** What the source knows of the stream (an Ogg OpusHead), if anything. */
  readonly audioConfig?: Partial<AudioConfig>;
  /** Pre-skip from an OpusHead, when the source has one. */
  readonly preSkip?: number;
  /**
   * What the source left out of its input so far, by kind (an Ogg source's
   * `skipped_pages`), part of the sending end's readings (as
   * `source_skipped_pages`); absent when it leaves nothing out (a wire
   * source fails instead). Every kind is there from the start, at 0.
   */
  readonly counts?: Readonly<Record<string, number>>;
  next(): SourceFrame | undefined;
  fill(): Promise<boolean>;
  /** Starts again from the beginning (for --loop); false when the input is a stream. */
  rewind(): boolean;
  close(): Promise<void>;
}
