import type { FrameSink } from "../media/frame-sink.ts";
import type { FrameSource } from "../media/frame-source.ts";
import { WireSink } from "../media/wire-sink.ts";
import { WireSource } from "../media/wire-source.ts";

export type MediaFormat = "wire" | "ogg";

export interface SourceOptions {
  lenient: boolean;
}

export async function openSource(format: MediaFormat, path: string, _options: SourceOptions): Promise<FrameSource> {
  switch (format) {
    case "wire":
      return WireSource.open(path);
    case "ogg":
      throw new Error("ogg sources are not available yet");
  }
}

export function openSink(format: MediaFormat, path: string): FrameSink {
  switch (format) {
    case "wire":
      return WireSink.open(path);
    case "ogg":
      throw new Error("ogg sinks are not available yet");
  }
}

/** Is the source a live stream (stdin, a FIFO) rather than a file that can be read at leisure? */
export async function isLiveSource(path: string): Promise<boolean> {
  if (path === "-") return true;
  const { stat } = await import("node:fs/promises");
  return !(await stat(path)).isFile();
}

/** How often buffered sink output is pushed out, so a live listener hears it promptly. */
export const SINK_FLUSH_MS = 100;

/** Flushes `sink` every SINK_FLUSH_MS; returns the function that stops it. */
export function flushPeriodically(sink: FrameSink): () => void {
  const timer = setInterval(() => sink.flush(), SINK_FLUSH_MS);
  return () => clearInterval(timer);
}
