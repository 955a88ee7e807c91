import type { FrameSink } from "./frame-sink.ts";
import type { FrameSource, SourceFrame } from "./frame-source.ts";
import { OggSink } from "./ogg-sink.ts";
import { OggSource } from "./ogg-source.ts";
import { WireSink } from "./wire-sink.ts";
import { WireSource } from "./wire-source.ts";

export type MediaFormat = "wire" | "ogg";

export interface SourceOptions {
  /** Ogg: skip (and count) pages with a bad CRC instead of failing. */
  lenient: boolean;
}

export interface SinkOptions {
  /** Ogg: OpusHead pre-skip (48 kHz samples) and the longest a page is held back (ms). */
  preSkip: number;
  pageMs: number;
}

export async function openSource(format: MediaFormat, path: string, options: SourceOptions): Promise<FrameSource> {
  switch (format) {
    case "wire":
      return WireSource.open(path);
    case "ogg":
      return OggSource.open(path, { lenient: options.lenient });
  }
}

export function openSink(format: MediaFormat, path: string, options: SinkOptions): FrameSink {
  switch (format) {
    case "wire":
      return WireSink.open(path);
    case "ogg":
      return OggSink.open(path, { preSkip: options.preSkip, pageMs: options.pageMs });
  }
}

/** Is the source a live stream (stdin, a FIFO) rather than a file that can be read at leisure? */
export async function isLiveSource(path: string): Promise<boolean> {
  if (path === "-") return true;
  const { stat } = await import("node:fs/promises");
  return !(await stat(path)).isFile();
}

/**
 * Reads `source` up to its first frame (parsing any header on the way, so an
 * Ogg source knows its OpusHead and frame size), and returns a source that
 * yields that frame first, then the rest.
 */
export async function readUpToFirstFrame(source: FrameSource): Promise<FrameSource> {
  let first: SourceFrame | undefined;
  for (;;) {
    const frame = source.next();
    if (frame) {
      first = { payload: frame.payload.slice(), timeMs: frame.timeMs };
      break;
    }
    if (!(await source.fill())) break;
  }
  return {
    get name() {
      return source.name;
    },
    get audioConfig() {
      return source.audioConfig;
    },
    get preSkip() {
      return source.preSkip;
    },
    next() {
      if (!first) return source.next();
      const frame = first;
      first = undefined;
      return frame;
    },
    fill: () => source.fill(),
    rewind: () => source.rewind(),
    close: () => source.close(),
  };
}
