/**
 * The start-up check of an Ogg file with --lenient and bytes before its first
 * page (checkFileFormat(path, "ogg", true)): it must still judge the Ogg that
 * follows (Opus the wire can carry), at the right offset, in exactly the
 * window it names, and --lenient must not rescue a file of another format.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { checkFileFormat } from "../../src/media/file-format.ts";
import { MAX_PAGE_SIZE, PageFlag } from "../../src/media/ogg-page.ts";
import { write32LE } from "../../src/protocol/index.ts";
import { concatBytes } from "../support/bytes.ts";
import { pagesOf, sealPage } from "../support/ogg.ts";
import { useCleanup } from "../support/cleanup.ts";
import { encodeWith, ffmpegFrom } from "../support/opus-fixtures.ts";
import { runAgent } from "../support/processes.ts";
import { drainFile } from "../support/sources.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();
/** How far the check looks for the first "OggS" (4 x MAX_PAGE_SIZE). */
const WINDOW = 4 * MAX_PAGE_SIZE;
const ascii = (s: string) => new TextEncoder().encode(s);
const read = (path: string) => new Uint8Array(readFileSync(path));

function setup() {
  const t = socketDir(defer, "aa-lead-");
  const opus = read(encodeWith(t.dir, "voice", []));
  const write = (name: string, parts: Uint8Array[]) => {
    const path = t.path(name);
    writeFileSync(path, concatBytes(parts));
    return path;
  };
  const ffmpeg = (name: string, input: string, args: string[]) => read(ffmpegFrom(t.path(name), input, args));
  return { ...t, opus, write, ffmpeg };
}

/** The check's refusal of `path` (its message after the "source PATH (--format F) " prefix), or "ok". */
async function verdict(path: string, format: "ogg" | "wire" = "ogg", lenient = true): Promise<string> {
  return checkFileFormat(path, format, lenient).then(
    () => "ok",
    (e: Error) => e.message.replace(`source ${path} (--format ${format}) `, ""),
  );
}

/** A BOS page of stream `serial` holding 255 segments of 255 bytes (the largest page there is), CRC right. */
function largestBosPage(serial: number): Uint8Array {
  const page = new Uint8Array(MAX_PAGE_SIZE);
  page.set(ascii("OggS"), 0);
  page[5] = PageFlag.BeginOfStream;
  write32LE(page, 14, serial);
  page[26] = 255;
  page.fill(255, 27, 27 + 255);
  page.set(ascii("\x80notopus"), 27 + 255);
  sealPage(page);
  return page;
}

describe("--lenient: the Ogg after bytes that begin no page is still checked at start", () => {
  // Catches a check that ignores the offset of the first "OggS" (from 0, from first + 1, no
  // subarray) or skips checkOggOpus: the strict page reader then throws on the junk and the
  // check gives up, passing a file the source must refuse once a client has come.
  test("Ogg FLAC, Ogg Vorbis and 6-channel Opus after junk are refused, naming what they are", async () => {
    const t = setup();
    const flac = t.ffmpeg("f.ogg", "sine=duration=0.3", ["-c:a", "flac"]);
    const vorbis = t.ffmpeg("v.ogg", "sine=duration=0.3", ["-c:a", "libvorbis", "-f", "ogg"]);
    const six = read(encodeWith(t.dir, "six", [], { channels: 6 }));
    const junk = ascii("ID3 junk in front of the first page");
    expect(await verdict(t.write("flac", [junk, flac]))).toBe('is Ogg but not Opus (its first packet begins "\\x7fFLAC\\x01\\x00\\x00")');
    expect(await verdict(t.write("vorbis", [junk, vorbis]))).toBe('is Ogg but not Opus (its first packet begins "\\x01vorbis\\x00")');
    expect(await verdict(t.write("six", [junk, six]))).toStartWith("is Ogg Opus that cannot be sent: OpusHead channel mapping family 1 with 6 channels");
    expect(await verdict(t.write("opus", [junk, t.opus]))).toBe("ok");
  });

  // Catches a lenient check that starts past byte 0 when the file does begin with "OggS".
  test("a file that begins with a page is checked from that page, lenient or not", async () => {
    const t = setup();
    const flac = t.write("flac.ogg", [t.ffmpeg("f.ogg", "sine=duration=0.3", ["-c:a", "flac"])]);
    expect(await verdict(flac, "ogg", true)).toStartWith("is Ogg but not Opus");
    expect(await verdict(flac, "ogg", false)).toStartWith("is Ogg but not Opus");
  });

  // Catches --lenient turning a WAV, or a file asked for as a wire capture, into "look for OggS".
  test("--lenient rescues neither a WAV with Ogg after it nor a wire source", async () => {
    const t = setup();
    const wav = t.write("riff", [ascii("RIFF\x10\x00\x00\x00WAVEjunk"), t.opus]);
    expect(await verdict(wav)).toStartWith("looks like WAV, uncompressed audio");
    const notes = t.write("notes", [ascii("hello, world\n"), t.opus]);
    expect(await verdict(notes, "wire", true)).toBe('is not a wire capture: it begins with "hell", not "UOKJ" or "IMKJ" (the JKOU or JKMI magic, little-endian)');
  });

  // Catches a refusal that quotes the file's first bytes raw: a quote, a backslash or a control
  // byte among them would break the quoted text, or put a dot where the byte was.
  test("the first bytes a refusal quotes are escaped, as the not-Opus refusal escapes them", async () => {
    const t = setup();
    const quoted = t.write("quoted", [ascii('"\\\x01x')]);
    expect(await verdict(quoted, "ogg", false)).toBe('is not Ogg: it begins with "\\x22\\x5c\\x01x", not "OggS"');
    expect(await verdict(quoted, "wire", false)).toBe('is not a wire capture: it begins with "\\x22\\x5c\\x01x", not "UOKJ" or "IMKJ" (the JKOU or JKMI magic, little-endian)');
  });

  // Catches an off-by-one at the window's end (at + 4 < length, reading WINDOW - 1 bytes), a
  // wider window than the message names, a page read only up to WINDOW rather than from + WINDOW,
  // and a message naming another number.
  test('"OggS" ending exactly at the window passes and streams; one byte later is refused, naming the window', async () => {
    const t = setup();
    const inside = t.write("inside", [new Uint8Array(WINDOW - 4).fill(0x41), t.opus]);
    expect(await verdict(inside)).toBe("ok");
    const drained = await drainFile(inside, { lenient: true });
    expect(drained.error).toBeUndefined();
    expect(drained.source.counts.skipped_bytes).toBe(WINDOW - 4);
    expect(drained.frames.length).toBe((await drainFile(t.write("plain", [t.opus]))).frames.length);

    const outside = t.write("outside", [new Uint8Array(WINDOW - 3).fill(0x41), t.opus]);
    expect(await verdict(outside)).toBe(`is not Ogg: it begins with "AAAA", and no "OggS" follows in its first ${WINDOW} bytes`);
  });

  // Catches `whole` counted as "read no more than the window" (<=): a BOS group filling the
  // window exactly is longer than looked at and left to the source, not "not Opus".
  test("junk, then other streams' BOS pages filling the window exactly, then Opus: left to the source, which reads it", async () => {
    const t = setup();
    const others = [1, 2, 3, 4].map(largestBosPage);
    const path = t.write("crowded", [ascii("junk"), ...others, t.opus]);
    expect(await verdict(path)).toBe("ok");
    const drained = await drainFile(path, { lenient: true });
    expect(drained.error).toBeUndefined();
    expect(drained.source.counts).toMatchObject({ skipped_bytes: 4, other_stream_pages: 4 });
  });

  test("through the CLI: exit 2 at start and one line, for output serve and input send", async () => {
    const t = setup();
    const flac = t.write("flac", [ascii("junk"), t.ffmpeg("f.ogg", "sine=duration=0.3", ["-c:a", "flac"])]);
    for (const role of [
      ["output", "serve"],
      ["input", "send"],
    ]) {
      const run = await runAgent([...role, "--socket", t.path("s.sock"), "--source", flac, "--format", "ogg", "--lenient"], { timeoutMs: 20_000 });
      expect({ role, code: run.code }).toEqual({ role, code: 2 });
      expect(run.stderr).toBe(`audio-agent: source ${flac} (--format ogg) is Ogg but not Opus (its first packet begins "\\x7fFLAC\\x01\\x00\\x00")\n`);
    }
  }, 60_000);
});

describe("--lenient: the start-up check reads pages as the lenient source does", () => {
  // A false "OggS" whose header claims more bytes than the file holds (as a killed encoder's first
  // 9..26 bytes before `cat`'s next file can): a strict reader stopped there with "ends inside its
  // first page", though the lenient source reads on from the false page's second byte.
  test("junk, a false page header claiming more than the file holds, then a short Opus file: accepted, as its source reads it", async () => {
    const t = setup();
    const short = read(encodeWith(t.dir, "short", [], { samples: 4800 }));
    const falseHeader = new Uint8Array(27 + 255).fill(255); // 255 segments of 255 bytes: a whole MAX_PAGE_SIZE page
    falseHeader.set(ascii("OggS"), 0);
    falseHeader.fill(0, 4, 26); // version 0, flags, granule, serial, sequence, CRC
    expect(short.length).toBeLessThan(MAX_PAGE_SIZE);
    const plain = (await drainFile(t.write("plain", [short]))).frames.length;
    const strictly = { cut: 'is not Ogg: it begins with "junk", not "OggS"', "cut-at-0": "is Ogg but ends inside its first page, before any OpusHead" };
    for (const [name, lead] of [["cut", [ascii("junk"), falseHeader]], ["cut-at-0", [falseHeader]]] as const) {
      const path = t.write(name, [...lead, short]);
      const drained = await drainFile(path, { lenient: true });
      expect(drained.error).toBeUndefined();
      expect(drained.frames.length).toBe(plain);
      expect({ name, verdict: await verdict(path) }).toEqual({ name, verdict: "ok" });
      // Strict, the same file is still refused at start.
      expect(await verdict(path, "ogg", false)).toBe(strictly[name]);
    }
  });

  // A false page (a bad CRC) before the real first page: a check that gave up at the damage passed
  // a Vorbis file that then failed only once a client had come.
  test("junk, a page with a bad CRC, then Ogg Vorbis: refused at start, naming it", async () => {
    const t = setup();
    const vorbis = t.ffmpeg("v.ogg", "sine=duration=0.3", ["-c:a", "libvorbis", "-f", "ogg"]);
    const damaged = largestBosPage(7);
    damaged[300]! ^= 1;
    expect(await verdict(t.write("damaged-vorbis", [ascii("junk"), damaged, vorbis]))).toBe('is Ogg but not Opus (its first packet begins "\\x01vorbis\\x00")');
    expect(await verdict(t.write("damaged-opus", [ascii("junk"), damaged, t.opus]))).toBe("ok");
  });

  // A bad page's length may be what was damaged: read on from where it says it ends, the check
  // passed over the real first page and refused, as cut mid-stream, a file the source streams.
  test("a page with a bad CRC whose length runs over the real first pages: the next page is sought from its second byte, as the source seeks it, and the Opus after it passes", async () => {
    const t = setup();
    // A page header whose one segment of 255 bytes takes in the OpusHead page after it (47 bytes) and more; CRC 0, so bad.
    const damaged = new Uint8Array(28);
    damaged.set(ascii("OggS"), 0);
    damaged[26] = 1;
    damaged[27] = 255;
    const path = t.write("overlong", [damaged, t.opus]);
    expect(pagesOf(t.opus)[0]!.size).toBeLessThan(255);
    const drained = await drainFile(path, { lenient: true });
    expect(drained.error).toBeUndefined();
    expect(drained.source.counts).toMatchObject({ skipped_pages: 1, skipped_bytes: damaged.length });
    expect(drained.frames.length).toBe((await drainFile(t.write("plain", [t.opus]))).frames.length);
    expect(await verdict(path)).toBe("ok");
  });

  test("a file of junk shorter than the window names its own length", async () => {
    const t = setup();
    const junk = t.write("junk", [new Uint8Array(27).fill(0x41)]);
    expect(await verdict(junk)).toBe('is not Ogg: it begins with "AAAA", and no "OggS" follows in its 27 bytes');
  });
});
