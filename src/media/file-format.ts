import { closeSync, openSync, readSync, statSync } from "node:fs";
import { INPUT_MAGIC, OUTPUT_MAGIC, readUint32LE, write32LE, type Channel } from "../protocol/index.ts";
import { hasCapturePattern, MAX_PAGE_SIZE, type OggPage } from "./ogg-page.ts";
import { OggPageReader } from "./ogg-page-reader.ts";
import { isOpusHead, parseOpusHead, whyNotCarried } from "./opus-head.ts";

export type MediaFormat = "wire" | "ogg";

/**
 * A file that is not in the format asked for: a source's (read as another
 * format), or a sink's appended to (`--append` onto another format's file).
 * Bad usage (exit 2), told at start. The message names the format's flag as
 * `--format`; naming() gives it with the flag a command has for it (serve:
 * --output-format) and where the format was set when not by that flag
 * ("from environment X").
 */
export class FileFormatError extends Error {
  constructor(
    /** Which end of a role the file is: a command may read and write the same path (serve). */
    readonly end: "source" | "sink",
    readonly path: string,
    private readonly describe: (formatFlag: string, setAt: string, appendSetAt: string) => string,
  ) {
    super(describe("--format", "", ""));
    this.name = "FileFormatError";
  }

  /** `appendSetAt`: where a sink's --append was set when not by its flag. */
  naming(formatFlag: string, setAt = "", appendSetAt = ""): string {
    return this.describe(formatFlag, setAt, appendSetAt);
  }
}

/** Builds a FileFormatError for `path` read as `format`: "source PATH (--format FORMAT[, from ...]) <problem>". */
type Refusal = (problem: (formatFlag: string) => string) => FileFormatError;

/** What a file's first bytes (at least 12) look like: Ogg, WAV or a wire capture; undefined when none of these. */
function recognise(head: Uint8Array): MediaFormat | "wav" | undefined {
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
 * at start rather than when a client connects; an Ogg file must hold Opus
 * the wire can carry (checkOggOpus). A wire capture too short to tell
 * (empty: no frames) passes; its source judges it when read. With
 * `lenient`, bytes before an Ogg file's first page are damage its source
 * passes over, as it does later in the file: the check begins at that page,
 * which must begin within BOS_GROUP_BYTES, else the file is refused.
 */
export async function checkFileFormat(path: string, format: MediaFormat, lenient = false): Promise<void> {
  const refuse: Refusal = (problem) =>
    new FileFormatError("source", path, (flag, setAt) => `source ${path} (${flag} ${format}${setAt ? `, ${setAt}` : ""}) ${problem(flag)}`);
  const head = readHead(path, 12);
  if (format === "ogg" && head.length === 0) {
    throw refuse(() => `is empty: an Ogg Opus file begins with an OpusHead page`);
  }
  if (head.length < 4) {
    if (format === "ogg") throw refuse(() => `is not Ogg: it is ${head.length} byte(s) long, shorter than "OggS"`);
    return;
  }
  const seen = recognise(head);
  if (seen === format) {
    if (format === "ogg") checkOggOpus(path, refuse, 0, lenient);
    return;
  }
  if (seen === "wav") {
    throw refuse((flag) => `looks like WAV, uncompressed audio: encode it to Ogg Opus (e.g. opusenc) and use ${flag} ogg`);
  }
  if (seen) throw refuse((flag) => `looks like ${NAMES[seen]}: use ${flag} ${seen}`);
  if (format === "ogg" && lenient) {
    const window = readHead(path, BOS_GROUP_BYTES);
    const first = firstCapturePattern(window);
    if (first !== undefined) return checkOggOpus(path, refuse, first, lenient);
    const looked = window.length < BOS_GROUP_BYTES ? `its ${window.length} bytes` : `its first ${BOS_GROUP_BYTES} bytes`;
    throw refuse(() => `is not Ogg: it begins with "${escaped(head.subarray(0, 4))}", and no "OggS" follows in ${looked}`);
  }
  const expected = format === "ogg" ? '"OggS"' : `${magicBytes(OUTPUT_MAGIC)} or ${magicBytes(INPUT_MAGIC)} (the JKOU or JKMI magic, little-endian)`;
  throw refuse(() => `is not ${NAMES[format]}: it begins with "${escaped(head.subarray(0, 4))}", not ${expected}`);
}

/**
 * A sink file appended to (`--append`) must hold what the sink writes: Ogg
 * pages after a wire capture, a capture after Ogg, either after WAV, Ogg Opus
 * after Ogg of another codec, make a file no reader of either format reads to
 * its end. Told at start, the file left as it is. A file that is new, empty,
 * not a regular file, one the agent may write but not read (mode 0200), or of
 * no format it knows is added to as `>>` adds. A wire capture of the other
 * channel is refused too (given `channel`): a reader takes a capture's magic
 * from its first message, and stops at the first of the other's.
 */
export function checkAppendFormat(path: string, format: MediaFormat, channel?: Channel): void {
  if (!statSync(path, { throwIfNoEntry: false })?.isFile()) return;
  let head: Uint8Array;
  try {
    head = readHead(path, 12);
  } catch (e) {
    if ((e as NodeJS.ErrnoException)?.code !== undefined) return; // cannot tell
    throw e;
  }
  const seen = recognise(head);
  if (seen === "wire" && format === "wire" && channel !== undefined) {
    const own = channel === "output" ? OUTPUT_MAGIC : INPUT_MAGIC;
    const found = readUint32LE(head, 0);
    if (found === own) return;
    const other = channel === "output" ? "input" : "output";
    throw new FileFormatError("sink", path, (flag, setAt, appendSetAt) => {
      const append = appendFlag(flag, appendSetAt);
      return `sink ${path} (${flag} wire${setAt ? `, ${setAt}` : ""}) holds a capture of the ${other} channel (${magicBytes(found)}), and ${append} adds to one of the ${channel} channel (${magicBytes(own)}) only: use another file`;
    });
  }
  if (seen === "ogg" && format === "ogg") {
    // Ogg of another codec (Vorbis, FLAC): no Opus reader (opusdec, ffmpeg, the agent's source)
    // opens a chain whose first link holds no Opus stream, so what would be recorded is lost.
    const link = firstLink(path, 0, false);
    if (link === undefined || !("notOpus" in link)) return;
    throw new FileFormatError("sink", path, (flag, setAt, appendSetAt) => {
      const append = appendFlag(flag, appendSetAt);
      return `sink ${path} (${flag} ogg${setAt ? `, ${setAt}` : ""}) holds Ogg that is not Opus (${firstPacketSaid(link.notOpus)}), and ${append} adds to Ogg Opus only: use another file`;
    });
  }
  if (seen === undefined || seen === format) return;
  throw new FileFormatError("sink", path, (flag, setAt, appendSetAt) => {
    const append = appendFlag(flag, appendSetAt);
    const use = seen === "wav" ? "another file" : `${flag} ${seen}, or another file`;
    return `sink ${path} (${flag} ${format}${setAt ? `, ${setAt}` : ""}) holds ${NAMES[seen]}, and ${append} adds to a file of its own format only: use ${use}`;
  });
}

/** The append flag beside a format flag (--format: --append; --input-format: --input-append), with where it was set. */
export function appendFlag(formatFlag: string, setAt = ""): string {
  return `${formatFlag.replace(/format$/, "append")}${setAt ? ` (${setAt})` : ""}`;
}

/**
 * A magic as a capture's first bytes, spelt as the bytes found are: a u32
 * written little-endian, so OUTPUT_MAGIC ("JKOU") begins a capture "UOKJ".
 */
function magicBytes(magic: number): string {
  const bytes = new Uint8Array(4);
  write32LE(bytes, 0, magic);
  return `"${escaped(bytes)}"`;
}

/** Enough for the BOS pages of a few streams multiplexed together (each BOS page holds one header packet). */
const BOS_GROUP_BYTES = 4 * MAX_PAGE_SIZE;

/**
 * An Ogg file's BOS pages (RFC 3533: the streams it multiplexes all begin
 * before any other page) must include an OpusHead whose stream the wire can
 * carry: else the file is Ogg FLAC, Vorbis, Opus of more than 2 channels...,
 * told at start. Strict, damage (a bad CRC) is left to the source, which
 * tells it at its offset, as is a cut after the OpusHead. With `lenient`
 * the pages are read as the lenient source reads them: past bad pages and
 * bytes that begin none, so what it would stream is what is checked.
 */
function checkOggOpus(path: string, refuse: Refusal, from: number, lenient: boolean): void {
  const link = firstLink(path, from, lenient);
  if (link === undefined) return;
  if ("opusHead" in link) return checkOpusHead(link.opusHead, refuse);
  if ("notOpus" in link) throw refuse(() => `is Ogg but not Opus (${firstPacketSaid(link.notOpus)})`);
  throw refuse(() => link.fault);
}

/** What the BOS pages of an Ogg file's first link hold (firstLink). */
type FirstLink =
  /** The first OpusHead among them. */
  | { opusHead: Uint8Array }
  /** None of them begins an Opus stream: the first packet of the first. */
  | { notOpus: Uint8Array }
  /** There are none to read, and why: the message's end, after the file's name. */
  | { fault: string };

/**
 * Reads the BOS pages of the Ogg file at `path` from byte `from`: what its first link's streams
 * are. Undefined when that cannot be told from its first BOS_GROUP_BYTES: damage after the first
 * page (strict), or a group longer than that, left to the reader that meets it.
 */
function firstLink(path: string, from: number, lenient: boolean): FirstLink | undefined {
  const bytes = readHead(path, from + BOS_GROUP_BYTES).subarray(from);
  const whole = bytes.length < BOS_GROUP_BYTES; // the file ends inside what was read
  const pages = new OggPageReader(lenient);
  pages.push(bytes);
  let firstPacket: Uint8Array | undefined;
  for (let first = true; ; first = false) {
    let page: OggPage | undefined;
    try {
      page = pages.next();
    } catch (e) {
      // The first page (its "OggS" seen) of a version no reader knows (RFC 3533 defines 0): told now, not at the first client.
      if (first) return { fault: `is not Ogg this agent reads: ${(e as Error).message}` };
      return undefined; // strict: no capture pattern or an unknown version at a later page: damage
    }
    if (!page) {
      if (!whole) return undefined; // a BOS group longer than looked at: left to the source
      if (lenient && pages.finish()) continue; // bytes held for a page that never came whole: read again
      if (firstPacket) return { notOpus: firstPacket };
      return { fault: `is Ogg but ends inside its first page, before any OpusHead` };
    }
    if (!page.crcValid()) {
      if (!lenient) return undefined;
      pages.resync();
      continue;
    }
    if (!page.beginOfStream) {
      if (firstPacket) return { notOpus: firstPacket };
      // A capture cut mid-stream: its headers are gone, and the source would fail at byte 0.
      return { fault: `is Ogg but its first page does not begin a stream (no OpusHead: cut from the middle of a recording?)` };
    }
    const packet = firstPacketOf(page);
    if (isOpusHead(packet)) return { opusHead: packet };
    firstPacket ??= packet;
  }
}

/** How a file whose first link has no Opus stream is told by the first packet of its first stream. */
function firstPacketSaid(firstPacket: Uint8Array): string {
  return `its first packet begins "${escaped(firstPacket.subarray(0, 8))}"`;
}

function checkOpusHead(packet: Uint8Array, refuse: Refusal): void {
  let reason: string | undefined;
  try {
    reason = whyNotCarried(parseOpusHead(packet));
  } catch (e) {
    reason = (e as Error).message;
  }
  if (reason) throw refuse(() => `is Ogg Opus that cannot be sent: ${reason}`);
}

/** Where "OggS" first occurs in `bytes`, if anywhere. */
function firstCapturePattern(bytes: Uint8Array): number | undefined {
  for (let at = 0; at + 4 <= bytes.length; at++) if (hasCapturePattern(bytes, at)) return at;
  return undefined;
}

/** The first packet on a page (its lacing values up to the first below 255), or as much of it as the page holds. */
function firstPacketOf(page: OggPage): Uint8Array {
  let size = 0;
  for (let i = 0; i < page.segments; i++) {
    const lacing = page.lacing(i);
    size += lacing;
    if (lacing < 255) break;
  }
  return page.bytes.subarray(page.bodyOffset, page.bodyOffset + size);
}

/** Bytes as a JavaScript string literal's body ("\x7fFLAC"), so that a quote in a message stays one line and unbroken. */
export function escaped(bytes: Uint8Array): string {
  return Array.from(bytes, (b) =>
    b >= 0x20 && b < 0x7f && b !== 0x22 && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, "0")}`,
  ).join("");
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
