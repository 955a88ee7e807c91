/**
 * Lenient Ogg reading past damage (OggPageReader seeking, OggSource
 * --lenient) on real opusenc files: damaged lengths and headers, false
 * capture patterns, garbage between, before and after pages, under every
 * chunking and over --loop passes. Pages are found at their real offsets,
 * every byte passed over is counted and told, and strict reading is left to
 * ogg-source.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { OggPageReader } from "../../src/media/ogg-page-reader.ts";
import { OggSource } from "../../src/media/ogg-source.ts";
import { concatBytes } from "../support/bytes.ts";
import { pagesOf } from "../support/ogg.ts";
import { encodeWith } from "../support/opus-fixtures.ts";
import { chunkedSource, drain } from "../support/sources.ts";
import { tempDir } from "../support/temp.ts";

const CHUNKINGS = [[1], [2], [3], [7], [27], [28], [4096], [1 << 20], [5, 300, 1, 4000]];
const ascii = (s: string) => new TextEncoder().encode(s);
const insert = (bytes: Uint8Array, at: number, what: Uint8Array) => concatBytes([bytes.subarray(0, at), what, bytes.subarray(at)]);

let tmp: ReturnType<typeof tempDir>;
/** A page every 20 ms (one packet a page), 2 s stereo: ~100 pages, ~30 kB. */
let live: Uint8Array;
beforeAll(() => {
  tmp = tempDir("rev1-");
  live = new Uint8Array(readFileSync(encodeWith(tmp.dir, "live", ["--framesize", "20", "--max-delay", "20"], { channels: 2, samples: 96000 })));
});
afterAll(() => tmp.cleanup());

function reporting() {
  const reports: { level: string; message: string; fields: Record<string, unknown> }[] = [];
  return { reports, report: (level: string, message: string, fields: Record<string, unknown> = {}) => void reports.push({ level, message, fields }) };
}

async function lenient(bytes: Uint8Array, chunks = [1 << 20]) {
  const { reports, report } = reporting();
  const src = OggSource.from(chunkedSource(bytes, chunks, "t.opus"), { lenient: true, report });
  const got = await drain(src);
  return { frames: got.frames.map((f) => f.payload), error: got.error?.message, counts: { ...src.counts }, reports };
}

/** Every page the reader gives (resync() after each bad one, as OggSource does), and how it ends. */
function readPages(Reader: new (seeking?: boolean) => OggPageReader, bytes: Uint8Array, chunks: number[], seeking: boolean) {
  const reader = new Reader(seeking);
  const out: string[] = [];
  let at = 0;
  let turn = 0;
  const buffer = new Uint8Array(Math.max(...chunks));
  try {
    for (let guard = 0; guard < 10_000_000; guard++) {
      const page = reader.next();
      if (page) {
        const real = bytes.subarray(page.streamOffset, page.streamOffset + page.size);
        const inPlace = real.length === page.size && real.every((b, i) => b === page.bytes[page.offset + i]);
        out.push(`${page.streamOffset}+${page.size}${page.crcValid() ? "" : " bad"}${inPlace ? "" : " NOT-AT-ITS-OFFSET"}`);
        if (seeking && !page.crcValid()) reader.resync();
        continue;
      }
      if (at >= bytes.length) {
        reader.finish();
        return { out, skipped: reader.skippedBytes };
      }
      const size = Math.min(chunks[turn++ % chunks.length]!, bytes.length - at);
      buffer.set(bytes.subarray(at, at + size)); // one buffer reused, as FileByteSource does
      at += size;
      reader.push(buffer.subarray(0, size));
    }
    throw new Error("no end");
  } catch (e) {
    out.push(`error ${(e as Error).message} at ${(e as { offset?: number }).offset}`);
    return { out, skipped: reader.skippedBytes };
  }
}

/** Damaged copies of `live`: lengths, false headers, garbage with capture-pattern starts. */
function damaged(): { name: string; bytes: Uint8Array }[] {
  const pages = pagesOf(live);
  const mid = pages[20]!;
  const cases: { name: string; bytes: Uint8Array }[] = [];
  for (const change of [+37, -37, +200]) {
    const b = live.slice();
    b[mid.offset + 27] = (mid.table[0]! + change) & 0xff;
    cases.push({ name: `lacing ${change}`, bytes: b });
  }
  for (const at of [4, 5, 14, 22]) {
    const b = live.slice();
    b[mid.offset + at] ^= 0xff;
    cases.push({ name: `header byte ${at}`, bytes: b });
  }
  for (const x of [1, 2]) {
    const b = live.slice();
    b[mid.offset + 26] ^= x; // segment count, a claimed length still inside the input (one past its end is tested below)
    cases.push({ name: `segment count ^${x}`, bytes: b });
  }
  const falseHeader = new Uint8Array(27 + 255).fill(255);
  falseHeader.set(ascii("OggS\0"), 0);
  falseHeader[26] = 30;
  cases.push({ name: "false OggS claiming 7.7 kB, mid-file", bytes: insert(live, pages[10]!.offset, falseHeader.subarray(0, 27 + 30)) });
  cases.push({ name: "garbage with O, Og, OggS\\x01", bytes: insert(live, pages[30]!.offset, ascii("xxO Og Ogg OggS\x01 OggSO O")) });
  cases.push({ name: "a page's bytes twice, second copy cut", bytes: insert(live, pages[40]!.offset, live.subarray(pages[41]!.offset, pages[41]!.offset + 100)) });
  return cases;
}

describe("the lenient page reader", () => {
  test("gives the same pages, at their real offsets, and the same skipped bytes, under every chunking", () => {
    for (const { name, bytes } of damaged()) {
      const whole = readPages(OggPageReader, bytes, [bytes.length], true);
      expect(whole.out.join("\n"), name).not.toContain("NOT-AT-ITS-OFFSET");
      expect(whole.out.join("\n"), name).not.toContain("error");
      for (const chunks of CHUNKINGS) {
        expect(readPages(OggPageReader, bytes, chunks, true), `${name} in chunks of ${chunks}`).toEqual(whole);
      }
    }
  });
});

describe("OggSource --lenient", () => {
  test("--loop: every pass over garbage and a bad page gives the same frames, counts and reports (bytes replayed or read again)", async () => {
    const pages = pagesOf(live);
    let bad = live.slice();
    bad[pages[40]!.offset + 27] += 37; // a damaged length
    bad = insert(bad, pages[60]!.offset, ascii("junk O Og"));
    bad = insert(bad, pages[10]!.offset, ascii("early junk")); // before any bad page: in the part trusted on a replayed pass
    for (const replays of [true, false]) {
      for (const chunks of [[1], [7], [4096]]) {
        const { reports, report } = reporting();
        const src = OggSource.from(chunkedSource(bad, chunks, "t.opus", replays), { lenient: true, report });
        let before = { ...src.counts };
        const passes = [];
        for (let pass = 0; pass < 3; pass++) {
          if (pass) expect(src.rewind()).toBe(true);
          const told = reports.length;
          const got = await drain(src);
          const counts = src.counts;
          passes.push({
            frames: got.frames.map((f) => f.payload),
            error: got.error?.message,
            delta: Object.fromEntries(Object.entries(counts).map(([k, n]) => [k, n - (before as Record<string, number>)[k]!])),
            // Less the running totals, which go on growing pass after pass.
            reports: reports.slice(told).map(({ fields: { skipped_bytes, skipped_pages, ...fields }, ...r }) => ({ ...r, fields })),
          });
          before = { ...counts };
        }
        const label = `replays ${replays}, chunks of ${chunks}`;
        expect(passes[0]!.error, label).toBeUndefined();
        expect(passes[0]!.delta, label).toEqual({ skipped_pages: 1, missing_pages: 0, repeated_pages: 0, other_stream_pages: 0, skipped_bytes: 10 + pages[40]!.size + 9 });
        expect(passes[1], label).toEqual(passes[0]!);
        expect(passes[2], label).toEqual(passes[0]!);
      }
    }
  });

  test("--loop: garbage at the very start is told on every pass, even after a pass that ended on a bad page", async () => {
    const last = pagesOf(live).at(-1)!;
    const bad = live.slice();
    bad[last.offset + last.size - 3] ^= 1;
    const { reports, report } = reporting();
    const src = OggSource.from(chunkedSource(concatBytes([ascii("lead"), bad]), [4096], "t.opus", true), { lenient: true, report });
    for (let pass = 0; pass < 2; pass++) {
      if (pass) expect(src.rewind()).toBe(true);
      const told = reports.length;
      expect((await drain(src)).error).toBeUndefined();
      expect(reports.slice(told).map((r) => r.message)).toEqual(["passed over bytes that begin no page", "skipped a page with a bad CRC"]);
    }
  });

  test("two runs of garbage are each told, and counted together; garbage after a bad page is told once a good page has come between", async () => {
    const pages = pagesOf(live);
    let bad = live.slice();
    bad[pages[5]!.offset + 40] ^= 1; // bad CRC
    bad = insert(bad, pages[30]!.offset, ascii("abc"));
    bad = insert(bad, pages[20]!.offset, ascii("defgh"));
    for (const chunks of CHUNKINGS) {
      const got = await lenient(bad, chunks);
      expect(got.error).toBeUndefined();
      expect(got.counts.skipped_bytes).toBe(pages[5]!.size + 5 + 3);
      expect(got.reports.filter((r) => r.message === "passed over bytes that begin no page").map((r) => [r.fields.offset, r.fields.bytes])).toEqual([
        [pages[20]!.offset, 5],
        [pages[30]!.offset + 5, 3],
      ]);
    }
  });

  test("bytes after the last page that cannot begin one ('Ox', 'OgX', 'xyz') end the file without an error", async () => {
    const whole = (await lenient(live)).frames;
    for (const tail of ["Ox", "OgX", "xyz", "OggS\x01"]) {
      for (const chunks of [[1], [2], [3], [1 << 20]]) {
        const got = await lenient(concatBytes([live, ascii(tail)]), chunks);
        expect(got.error, `${JSON.stringify(tail)} in chunks of ${chunks}`).toBeUndefined();
        expect(got.frames).toEqual(whole);
      }
    }
  });

  test("bytes after the last page that begin a page's header but end before it ('O', 'OggS', a cut header) end the file without an error, as 'x' does", async () => {
    const whole = (await lenient(live)).frames;
    for (const tail of ["O", "Og", "OggS", "OggS\0\0\0"]) {
      const got = await lenient(concatBytes([live, ascii(tail)]));
      expect(got.error, JSON.stringify(tail)).toBeUndefined();
      expect(got.frames).toEqual(whole);
    }
  });

  test("a damaged length that runs past the end of the input (any page in the last ~65 kB) loses that page alone: the pages held for it are read again", async () => {
    const pages = pagesOf(live);
    const whole = (await lenient(live)).frames;
    const k = pages.length - 10;
    const bad = live.slice();
    bad[pages[k]!.offset + 26] = 255; // segment count: the page now claims ~65 kB
    for (const chunks of [[1], [4096], [1 << 20]]) {
      const got = await lenient(bad, chunks);
      expect(got.error, `chunks of ${chunks}`).toBeUndefined();
      expect(got.frames.length).toBe(whole.length - 1);
    }
  });

  test("bytes passed over after the last good page (trailing garbage, a last page with a damaged capture pattern, a bad last page) are counted and told", async () => {
    const pages = pagesOf(live);
    const last = pages.at(-1)!;
    const lastDamaged = live.slice();
    lastDamaged[last.offset] = 0x6f; // "oggS": the end-of-stream page vanishes
    for (const [bytes, skipped] of [[concatBytes([live, ascii("trailing junk")]), 13], [lastDamaged, last.size]] as const) {
      const got = await lenient(bytes);
      expect(got.error).toBeUndefined();
      expect(got.counts.skipped_bytes).toBe(skipped);
      expect(got.reports.map((r) => r.message)).toContain("passed over bytes that begin no page");
    }
    // A bad-CRC last page: its bytes in skipped_bytes, as every other bad page's.
    const badLast = live.slice();
    badLast[last.offset + last.size - 3] ^= 1;
    expect((await lenient(badLast)).counts.skipped_bytes).toBe(last.size);
  });

  test("garbage right before a bad page is told as well as the bad page", async () => {
    const pages = pagesOf(live);
    const bad = live.slice();
    bad[pages[20]!.offset + 40] ^= 1;
    const got = await lenient(insert(bad, pages[20]!.offset, ascii("inserted garbage")));
    expect(got.error).toBeUndefined();
    expect(got.counts.skipped_bytes).toBe(16 + pages[20]!.size);
    expect(got.reports.map((r) => r.message)).toEqual(["passed over bytes that begin no page", "skipped a page with a bad CRC"]);
  });

  test("a damaged OpusTags page: strict fails there; lenient skips it, says so, and reads every audio packet", async () => {
    const whole = (await lenient(live)).frames;
    const pages = pagesOf(live);
    const bad = live.slice();
    bad[pages[1]!.offset + pages[1]!.size - 2] ^= 1;
    const strict = await drain(OggSource.from(chunkedSource(bad, [4096], "t.opus")));
    expect(strict.error?.message).toBe(`ogg source t.opus: bad CRC in page at byte ${pages[1]!.offset}`);
    for (const chunks of [[1], [4096]]) {
      const got = await lenient(bad, chunks);
      expect(got.error).toBeUndefined();
      expect(got.frames).toEqual(whole);
      expect(got.counts).toMatchObject({ skipped_pages: 1, missing_pages: 0 });
      expect(got.reports.map((r) => r.message)).toEqual(["skipped a page with a bad CRC", "no OpusTags packet after the OpusHead; reading on from the audio"]);
      expect(got.reports[1]!.fields).toEqual({ source: "t.opus", offset: pages[2]!.offset + 27 + pages[2]!.table.length });
    }
  });
});
