import { closeSync, openSync, readSync } from "node:fs";
import { INPUT_MAGIC, OUTPUT_MAGIC, readUint32LE } from "../protocol/index.ts";
import { hasCapturePattern } from "./ogg-page.ts";

export type MediaFormat = "wire" | "ogg";

/** A file source that is not in the format asked for: bad usage (exit 2), told at start. */
export class SourceFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SourceFormatError";
  }
}

/** What a file's first bytes (at least 12) look like: Ogg, WAV or a wire capture; undefined when none of these. */
export function recognise(head: Uint8Array): MediaFormat | "wav" | undefined {
  if (head.length < 4) return undefined;
  if (hasCapturePattern(head, 0)) return "ogg";
  const ascii = (from: number, to: number) => String.fromCharCode(...head.subarray(from, to));
  if ((ascii(0, 4) === "RIFF" || ascii(0, 4) === "RF64") && ascii(8, 12) === "WAVE") return "wav";
  const magic = readUint32LE(head, 0);
  if (magic === OUTPUT_MAGIC || magic === INPUT_MAGIC) return "wire";
  return undefined;
}

const NAMES: Record<MediaFormat | "wav", string> = { ogg: "Ogg", wav: "WAV", wire: "a wire capture" };

/**
 * Checks a regular file's first bytes against `format`, so a mistake is told
 * at start rather than when a client connects. A file too short to tell
 * (empty: no frames) passes; its source judges it when read.
 */
export async function checkFileFormat(path: string, format: MediaFormat): Promise<void> {
  const head = readHead(path, 12);
  if (head.length < 4) return;
  const seen = recognise(head);
  if (seen === format) return;
  const prefix = `source ${path} (--format ${format})`;
  if (seen === "wav") {
    throw new SourceFormatError(`${prefix} looks like WAV, uncompressed audio: encode it to Ogg Opus (e.g. opusenc) and use --format ogg`);
  }
  if (seen) throw new SourceFormatError(`${prefix} looks like ${NAMES[seen]}: use --format ${seen}`);
  const expected = format === "ogg" ? '"OggS"' : "the JKOU or JKMI magic";
  throw new SourceFormatError(`${prefix} is not ${NAMES[format]}: it begins with "${printable(head.subarray(0, 4))}", not ${expected}`);
}

/** Bytes as text, with a dot for each byte that is not printable ASCII. */
export function printable(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
}

/** The first `n` bytes of a file (fewer when it is shorter), read synchronously: this runs at start-up. */
function readHead(path: string, n: number): Uint8Array {
  const fd = openSync(path, "r");
  try {
    const head = new Uint8Array(n);
    return head.subarray(0, readSync(fd, head, 0, n, 0));
  } finally {
    closeSync(fd);
  }
}
