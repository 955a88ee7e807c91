/** Sources for tests: bytes in memory served in chosen chunks, and pulling a frame source (or an Ogg file) to its end. */
import type { ByteSource } from "../../src/media/byte-source.ts";
import type { FrameSource } from "../../src/media/frame-source.ts";
import { OggSource, type OggSourceOptions } from "../../src/media/ogg-source.ts";

/**
 * Serves `bytes` in chunks of the given sizes, cycling through them. `replaysSameBytes`: what
 * the source promises about its passes (a test that changes `bytes` between them can break it).
 */
export function chunkedSource(bytes: Uint8Array, sizes: number[], name = "test", replaysSameBytes = false): ByteSource {
  let at = 0;
  let turn = 0;
  // One buffer reused for every read, as FileByteSource does, so a reader
  // that keeps a view into an old chunk sees it overwritten.
  const buffer = new Uint8Array(Math.max(1, ...sizes));
  return {
    name,
    rewindable: true,
    replaysSameBytes,
    async read() {
      if (at >= bytes.length) return null;
      const size = Math.min(sizes[turn++ % sizes.length]!, bytes.length - at);
      buffer.set(bytes.subarray(at, at + size));
      at += size;
      return buffer.subarray(0, size);
    },
    rewind() {
      at = 0;
      turn = 0;
    },
    async close() {},
  };
}

export interface Drained {
  frames: { payload: Uint8Array; timeMs: number; durationMs?: number }[];
  error?: Error;
}

/** Pulls a source to its end, copying every frame; an error ends the pull and is returned. */
export async function drain(source: FrameSource): Promise<Drained> {
  const frames: Drained["frames"] = [];
  try {
    for (;;) {
      const frame = source.next();
      if (frame) {
        frames.push({ payload: frame.payload.slice(), timeMs: frame.timeMs, durationMs: frame.durationMs });
        continue;
      }
      if (!(await source.fill())) return { frames };
    }
  } catch (e) {
    return { frames, error: e as Error };
  }
}

/** Opens an Ogg Opus file, pulls it to its end (see drain) and closes it; `source` is kept for its header figures. */
export async function drainFile(path: string, options?: OggSourceOptions): Promise<Drained & { source: OggSource }> {
  const source = await OggSource.open(path, options);
  try {
    return { ...(await drain(source)), source };
  } finally {
    await source.close();
  }
}
