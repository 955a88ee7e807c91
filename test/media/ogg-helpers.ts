/** Builders and readers shared by the Ogg tests. */
import type { ByteSource } from "../../src/media/byte-source.ts";
import type { FrameSource } from "../../src/media/frame-source.ts";
import { OggPacketReader } from "../../src/media/ogg-packet-reader.ts";
import { OggPageReader } from "../../src/media/ogg-page-reader.ts";
import { OggPageWriter, type OggPageWriterOptions } from "../../src/media/ogg-page-writer.ts";
import { concatBytes } from "../support/bytes.ts";

/** A page writer whose pages are collected as separate copies. */
export function collectingWriter(serial: number, options?: OggPageWriterOptions) {
  const pages: Uint8Array[] = [];
  const writer = new OggPageWriter(serial, (page) => pages.push(page.slice()), options);
  return { writer, pages };
}

export interface PageInfo {
  offset: number;
  size: number;
  flags: number;
  granule: number;
  serial: number;
  sequence: number;
  segments: number;
  crcValid: boolean;
  /** Lacing values. */
  table: number[];
}

export function pagesOf(bytes: Uint8Array): PageInfo[] {
  const reader = new OggPageReader();
  reader.push(bytes);
  const pages: PageInfo[] = [];
  for (let p = reader.next(); p; p = reader.next()) {
    pages.push({
      offset: p.streamOffset,
      size: p.size,
      flags: p.flags,
      granule: p.granule,
      serial: p.serial,
      sequence: p.sequence,
      segments: p.segments,
      crcValid: p.crcValid(),
      table: Array.from({ length: p.segments }, (_, i) => p.lacing(i)),
    });
  }
  reader.finish();
  return pages;
}

/** Every packet of every page, copied, in order (one logical stream). */
export function packetsOf(bytes: Uint8Array, capacity = 1 << 20): Uint8Array[] {
  const pages = new OggPageReader();
  const packets = new OggPacketReader(capacity);
  pages.push(bytes);
  const out: Uint8Array[] = [];
  for (let page = pages.next(); page; page = pages.next()) {
    packets.push(page);
    for (let p = packets.next(); p; p = packets.next()) out.push(p.data.slice());
  }
  pages.finish();
  return out;
}

/** Serves `bytes` in chunks of the given sizes, cycling through them. */
export function chunkedSource(bytes: Uint8Array, sizes: number[], name = "test"): ByteSource {
  let at = 0;
  let turn = 0;
  // One buffer reused for every read, as FileByteSource does, so a reader
  // that keeps a view into an old chunk sees it overwritten.
  const buffer = new Uint8Array(Math.max(...sizes));
  return {
    name,
    rewindable: true,
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
  frames: { payload: Uint8Array; timeMs: number }[];
  error?: Error;
}

/** Pulls a source to its end, copying every frame; an error ends the pull and is returned. */
export async function drain(source: FrameSource): Promise<Drained> {
  const frames: Drained["frames"] = [];
  try {
    for (;;) {
      const frame = source.next();
      if (frame) {
        frames.push({ payload: frame.payload.slice(), timeMs: frame.timeMs });
        continue;
      }
      if (!(await source.fill())) return { frames };
    }
  } catch (e) {
    return { frames, error: e as Error };
  }
}
