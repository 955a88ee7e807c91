import type { FrameSink } from "./frame-sink.ts";

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
