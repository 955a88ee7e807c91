import type { FrameSink } from "../media/frame-sink.ts";
import type { FrameSource } from "../media/frame-source.ts";
import { OggSink } from "../media/ogg-sink.ts";
import { OggSource } from "../media/ogg-source.ts";
import { WireSink } from "../media/wire-sink.ts";
import { WireSource } from "../media/wire-source.ts";

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
 * Flushes `sink` every `everyMs` (--page-ms), so a live listener downstream
 * hears audio promptly: an Ogg sink closes its page, a wire sink writes out its
 * buffer. Returns the function that stops it.
 */
export function flushPeriodically(sink: FrameSink, everyMs: number, onError: (error: Error) => void): () => void {
  const timer = setInterval(() => {
    try {
      sink.flush();
    } catch (e) {
      // A sink that cannot be written (disk full) ends the run like a failed write does.
      clearInterval(timer);
      onError(e as Error);
    }
  }, everyMs);
  return () => clearInterval(timer);
}
