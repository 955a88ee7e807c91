/**
 * Seeded fuzzing of the file sources: OggSource over mutated opusenc files,
 * and WireSource over mutated wire captures (reusing the parser fuzzer's
 * streams). What a hostile or damaged file may do to a source: make it fail
 * with one clean Error that names the source and the byte offset, after the
 * frames before the damage. What it may not: crash with anything else
 * (TypeError, RangeError...), return an impossible frame, answer differently
 * when the same bytes come in other chunks, or spin (the runner's watchdog
 * catches a hang: see fuzz.ts).
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { OggSource } from "../../src/media/ogg-source.ts";
import { PAGE_HEADER_SIZE } from "../../src/media/ogg-page.ts";
import { WireSource } from "../../src/media/wire-source.ts";
import { HEADER_SIZE, INPUT_MAGIC, MAX_PAYLOAD, MessageType, OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import { concatBytes } from "../support/bytes.ts";
import { sealPage } from "../support/ogg.ts";
import { chunkedSource } from "../support/sources.ts";
import { makeCase, referenceParse } from "./parser-fuzzer.ts";
import { Rng } from "./rng.ts";

export interface SourceFuzzRun {
  seed: number;
  from?: number;
  iterations: number;
  onCase?: (index: number) => void;
}

export interface SourceFuzzStats {
  cases: number;
  frames: number;
  outcomes: Record<string, number>;
}

function chunkSizes(rng: Rng): number[] {
  switch (rng.int(0, 4)) {
    case 0:
      return [1 << 20];
    case 1:
      return [rng.int(1, 7)];
    case 2:
      return Array.from({ length: 16 }, () => rng.int(1, 300));
    case 3:
      return [65536];
    default:
      return Array.from({ length: 16 }, () => rng.int(1, 70000));
  }
}

interface PageSpot {
  offset: number;
  size: number;
  segments: number;
  bodyOffset: number;
}

/** Pages as far as they can be walked from the start (stops at the first that does not fit). */
function walkPages(bytes: Uint8Array): PageSpot[] {
  const pages: PageSpot[] = [];
  let at = 0;
  while (at + PAGE_HEADER_SIZE <= bytes.length) {
    if (bytes[at] !== 0x4f || bytes[at + 1] !== 0x67 || bytes[at + 2] !== 0x67 || bytes[at + 3] !== 0x53) break;
    const segments = bytes[at + 26]!;
    if (at + PAGE_HEADER_SIZE + segments > bytes.length) break;
    let size = PAGE_HEADER_SIZE + segments;
    for (let i = 0; i < segments; i++) size += bytes[at + PAGE_HEADER_SIZE + i]!;
    if (at + size > bytes.length) break;
    pages.push({ offset: at, size, segments, bodyOffset: at + PAGE_HEADER_SIZE + segments });
    at += size;
  }
  return pages;
}

/** Recomputes every walkable page's CRC, so that damage reaches the packet and Opus layers. */
function fixCrcs(bytes: Uint8Array): void {
  for (const page of walkPages(bytes)) sealPage(bytes, page.offset, page.size);
}

type OggMutation = (rng: Rng, bytes: Uint8Array, others: Uint8Array[]) => { bytes: Uint8Array; label: string };

function somePage(rng: Rng, bytes: Uint8Array, skip = 0): PageSpot | undefined {
  const pages = walkPages(bytes).slice(skip);
  return pages.length > 0 ? rng.pick(pages) : undefined;
}

const OGG_MUTATIONS: Record<string, OggMutation> = {
  bitflips(rng, bytes) {
    const out = bytes.slice();
    const n = rng.int(1, 4);
    for (let i = 0; i < n && out.length > 0; i++) out[rng.int(0, out.length - 1)]! ^= 1 << rng.int(0, 7);
    return { bytes: out, label: `bitflips(${n})` };
  },
  truncate(rng, bytes) {
    const page = somePage(rng, bytes);
    const cut = page && rng.chance(0.5) ? Math.min(bytes.length, page.offset + rng.int(-2, 40)) : rng.int(0, bytes.length);
    return { bytes: bytes.slice(0, Math.max(0, cut)), label: `truncate@${cut}` };
  },
  insert(rng, bytes) {
    const page = somePage(rng, bytes);
    const at = page && rng.chance(0.5) ? page.offset : rng.int(0, bytes.length);
    const extra = page && rng.chance(0.5) ? bytes.slice(page.offset, page.offset + page.size) : rng.bytes(rng.int(1, 64));
    return { bytes: concatBytes([bytes.subarray(0, at), extra, bytes.subarray(at)]), label: `insert@${at}+${extra.length}` };
  },
  deletePage(rng, bytes) {
    const page = somePage(rng, bytes);
    if (!page) return { bytes, label: "deletePage(none)" };
    return { bytes: concatBytes([bytes.subarray(0, page.offset), bytes.subarray(page.offset + page.size)]), label: `deletePage@${page.offset}` };
  },
  swapPages(rng, bytes) {
    const pages = walkPages(bytes);
    if (pages.length < 2) return { bytes, label: "swapPages(none)" };
    const i = rng.int(0, pages.length - 2);
    const a = pages[i]!;
    const b = pages[i + 1]!;
    return {
      bytes: concatBytes([bytes.subarray(0, a.offset), bytes.subarray(b.offset, b.offset + b.size), bytes.subarray(a.offset, a.offset + a.size), bytes.subarray(b.offset + b.size)]),
      label: `swapPages@${a.offset}`,
    };
  },
  flags(rng, bytes) {
    const page = somePage(rng, bytes);
    if (!page) return { bytes, label: "flags(none)" };
    const out = bytes.slice();
    out[page.offset + 5] = rng.pick([0, 1, 2, 4, 5, 6, 7, rng.int(0, 255)]);
    return { bytes: out, label: `flags@${page.offset}=${out[page.offset + 5]}` };
  },
  version(rng, bytes) {
    const page = somePage(rng, bytes);
    if (!page) return { bytes, label: "version(none)" };
    const out = bytes.slice();
    out[page.offset + 4] = rng.int(1, 255);
    return { bytes: out, label: `version@${page.offset}` };
  },
  segments(rng, bytes) {
    const page = somePage(rng, bytes);
    if (!page) return { bytes, label: "segments(none)" };
    const out = bytes.slice();
    out[page.offset + 26] = rng.pick([0, 1, 255, Math.max(0, page.segments - 1), page.segments + 1, rng.int(0, 255)]) & 0xff;
    return { bytes: out, label: `segments@${page.offset}=${out[page.offset + 26]}` };
  },
  lacing(rng, bytes) {
    const page = somePage(rng, bytes);
    if (!page || page.segments === 0) return { bytes, label: "lacing(none)" };
    const out = bytes.slice();
    const at = page.offset + PAGE_HEADER_SIZE + rng.int(0, page.segments - 1);
    out[at] = rng.pick([0, 255, rng.int(0, 255)]);
    return { bytes: out, label: `lacing@${at}=${out[at]}` };
  },
  serial(rng, bytes) {
    const page = somePage(rng, bytes);
    if (!page) return { bytes, label: "serial(none)" };
    const out = bytes.slice();
    new DataView(out.buffer).setUint32(page.offset + 14, rng.u32(), true);
    return { bytes: out, label: `serial@${page.offset}` };
  },
  granule(rng, bytes) {
    const page = somePage(rng, bytes);
    if (!page) return { bytes, label: "granule(none)" };
    const out = bytes.slice();
    const view = new DataView(out.buffer);
    view.setUint32(page.offset + 6, rng.u32(), true);
    view.setUint32(page.offset + 10, rng.pick([0, 0xffffffff, 0x7fffffff, rng.u32()]), true);
    return { bytes: out, label: `granule@${page.offset}` };
  },
  opusHead(rng, bytes) {
    const page = walkPages(bytes)[0];
    if (!page) return { bytes, label: "opusHead(none)" };
    const out = bytes.slice();
    const body = page.bodyOffset;
    const field = rng.pick([
      [8, rng.pick([0x10, 0xff, 2])],
      [9, rng.pick([0, 3, 8, 255])],
      [18, rng.pick([1, 2, 255])],
      [0, 0x00],
    ] as const);
    if (body + field[0] < out.length) out[body + field[0]] = field[1];
    return { bytes: out, label: `opusHead[${field[0]}]=${field[1]}` };
  },
  opusTags(rng, bytes) {
    const page = walkPages(bytes)[1];
    if (!page) return { bytes, label: "opusTags(none)" };
    const out = bytes.slice();
    out[page.bodyOffset + rng.int(0, 7)] ^= 0x20;
    return { bytes: out, label: `opusTags@${page.offset}` };
  },
  toc(rng, bytes) {
    const page = somePage(rng, bytes, 2);
    if (!page || page.segments === 0 || page.bodyOffset + 1 >= bytes.length) return { bytes, label: "toc(none)" };
    const out = bytes.slice();
    const toc = rng.pick([0x03, 0x07, 0xfb, 0xff, rng.int(0, 255)]);
    out[page.bodyOffset] = toc;
    if ((toc & 3) === 3) out[page.bodyOffset + 1] = rng.pick([0, 1, 2, 48, 63, rng.int(0, 255)]);
    return { bytes: out, label: `toc@${page.bodyOffset}=${toc}` };
  },
  bigPacket(rng, bytes) {
    // A packet longer than 4096 bytes: lacing values of 255 across pages.
    const page = somePage(rng, bytes, 2);
    if (!page) return { bytes, label: "bigPacket(none)" };
    const body = new Uint8Array(255 * 20).fill(0xfc);
    const header = bytes.slice(page.offset, page.offset + PAGE_HEADER_SIZE);
    header[26] = 21;
    const table = new Uint8Array(21).fill(255);
    table[20] = 0;
    const big = concatBytes([header, table, body]);
    return { bytes: concatBytes([bytes.subarray(0, page.offset), big, bytes.subarray(page.offset)]), label: `bigPacket@${page.offset}` };
  },
  splice(rng, bytes, others) {
    const other = rng.pick(others);
    const a = rng.chance(0.5) ? (somePage(rng, bytes)?.offset ?? 0) : rng.int(0, bytes.length);
    const b = rng.chance(0.5) ? (somePage(rng, other)?.offset ?? 0) : rng.int(0, other.length);
    return { bytes: concatBytes([bytes.subarray(0, a), other.subarray(b)]), label: `splice@${a}|${b}` };
  },
};
const OGG_MUTATION_NAMES = Object.keys(OGG_MUTATIONS);

interface SourceResult {
  frames: string[];
  error: Error | undefined;
}

function hashFrame(payload: Uint8Array, timeMs: number): string {
  return `${payload.length}:${Bun.hash(payload).toString(36)}@${timeMs}`;
}

/** Reads a source to its end or its error; bounded, so a non-advancing source is caught. */
async function drain(
  source: { next(): { payload: Uint8Array; timeMs: number } | undefined; fill(): Promise<boolean> },
  limit: number,
  minPayload = 1,
  timed = true,
): Promise<SourceResult> {
  const frames: string[] = [];
  let steps = 0;
  try {
    for (;;) {
      if (++steps > limit) throw new SourceFuzzFailure(`source did not finish within ${limit} steps (no progress?)`);
      const frame = source.next();
      if (frame) {
        if (frame.payload.length < minPayload || frame.payload.length > MAX_PAYLOAD) {
          throw new SourceFuzzFailure(`frame of ${frame.payload.length} bytes (allowed ${minPayload}..${MAX_PAYLOAD})`);
        }
        frames.push(hashFrame(frame.payload, timed ? frame.timeMs : 0));
        continue;
      }
      if (!(await source.fill())) return { frames, error: undefined };
    }
  } catch (e) {
    if (e instanceof SourceFuzzFailure) throw e;
    return { frames, error: e as Error };
  }
}

class SourceFuzzFailure extends Error {}

const BUILTIN_ERRORS = [TypeError, RangeError, ReferenceError, SyntaxError, EvalError, URIError];

/** A clean error: a plain Error naming the source, and a byte offset within the file when it has one. */
function checkError(error: unknown, prefix: string, length: number, wholeStream: RegExp): void {
  if (!(error instanceof Error)) throw new SourceFuzzFailure(`threw a non-Error: ${String(error)}`);
  if (BUILTIN_ERRORS.some((cls) => error instanceof cls)) throw new SourceFuzzFailure(`crashed with ${error.name}: ${error.message}\n${error.stack}`);
  if (!error.message.startsWith(prefix)) throw new SourceFuzzFailure(`error does not name the source (${prefix}...): ${error.message}`);
  if (/\n/.test(error.message)) throw new SourceFuzzFailure(`error is not one line: ${JSON.stringify(error.message)}`);
  const at = /at byte (\d+)/.exec(error.message);
  if (at) {
    if (Number(at[1]) > length) throw new SourceFuzzFailure(`error names byte ${at[1]} of a ${length}-byte file: ${error.message}`);
  } else if (!wholeStream.test(error.message)) {
    throw new SourceFuzzFailure(`error names no byte offset: ${error.message}`);
  }
}

const OGG_WHOLE_STREAM = /is not an Ogg Opus stream|input ends inside the Opus headers/;

export async function runOggFuzz(run: SourceFuzzRun, bases: Uint8Array[]): Promise<SourceFuzzStats> {
  if (bases.length === 0) throw new Error("ogg fuzz: no base files");
  const stats: SourceFuzzStats = { cases: 0, frames: 0, outcomes: {} };
  const originals: string[][] = [];
  for (const base of bases) {
    const r = await drain(OggSource.from(chunkedSource(base, [65536], "base")), 1e7);
    if (r.error) throw new Error(`ogg fuzz: a base file does not read cleanly: ${r.error.message}`);
    originals.push(r.frames);
  }
  const from = run.from ?? 0;
  for (let i = from; i < from + run.iterations; i++) {
    run.onCase?.(i);
    const caseSeed = Rng.caseSeed(run.seed, i);
    const rng = new Rng(caseSeed);
    const which = rng.int(0, bases.length - 1);
    let bytes = bases[which]!;
    const labels = [`base ${which}`];
    const count = rng.pick([1, 1, 1, 2, 3]);
    for (let k = 0; k < count; k++) {
      const m = OGG_MUTATIONS[rng.pick(OGG_MUTATION_NAMES)]!(rng, bytes, bases);
      bytes = m.bytes;
      labels.push(m.label);
    }
    const truncateOnly = count === 1 && labels[1]!.startsWith("truncate");
    if (rng.chance(0.7)) {
      bytes = bytes.slice();
      fixCrcs(bytes);
      labels.push("CRCs fixed");
    }
    const lenient = rng.chance(0.3);
    if (lenient) labels.push("lenient");
    const name = `fuzz-${i}.opus`;
    const fail = (detail: string): never => {
      throw new Error(
        `ogg fuzz failed: run seed ${run.seed}, case ${i} (replay: bun run fuzz -- --target ogg --seed ${run.seed} --case ${i})\n${detail}\n  case seed: ${caseSeed}\n  input: ${labels.join(", ")} (${bytes.length} bytes)`,
      );
    };
    try {
      const limit = 4 * bytes.length + 1000;
      const sizesA = chunkSizes(rng);
      const sizesB = chunkSizes(rng);
      const source = OggSource.from(chunkedSource(bytes, sizesA, name), { lenient });
      const a = await drain(source, limit);
      if (a.error) checkError(a.error, `ogg source ${name}`, bytes.length, OGG_WHOLE_STREAM);
      // The same bytes in other chunks: the same frames, the same error.
      const b = await drain(OggSource.from(chunkedSource(bytes, sizesB, name), { lenient }), limit);
      if (a.frames.join() !== b.frames.join()) fail(`other chunking gave other frames: ${a.frames.length} vs ${b.frames.length}`);
      if (a.error?.message !== b.error?.message) fail(`other chunking gave another ending: ${a.error?.message} vs ${b.error?.message}`);
      if (truncateOnly) {
        const original = originals[which]!;
        const prefix = original.slice(0, a.frames.length);
        if (a.frames.length > original.length || prefix.join() !== a.frames.join()) fail("a truncated file gave frames that are not a prefix of the original's");
      }
      if (!a.error && rng.chance(0.3)) {
        // --loop: after a rewind the same frames again.
        if (!source.rewind()) fail("rewind() refused on a rewindable source");
        const again = await drain(source, limit);
        if (again.error || again.frames.join() !== a.frames.join()) fail(`after rewind(): ${again.error?.message ?? `${again.frames.length} frames vs ${a.frames.length}`}`);
      }
      stats.frames += a.frames.length;
      const outcome = a.error ? outcomeOf(a.error.message) : "ok";
      stats.outcomes[outcome] = (stats.outcomes[outcome] ?? 0) + 1;
    } catch (e) {
      if (e instanceof SourceFuzzFailure) fail(e.message);
      throw e;
    }
    stats.cases++;
  }
  return stats;
}

/** A short class of an error message for the summary ("bad CRC", "truncated", ...). */
function outcomeOf(message: string): string {
  const afterName = message.replace(/^(ogg|wire) source \S+( is)?:? ?/, "");
  return afterName.replace(/ at byte \d+.*$/, "").replace(/\d+/g, "N").slice(0, 60);
}

export async function runWireFuzz(run: SourceFuzzRun): Promise<SourceFuzzStats> {
  const stats: SourceFuzzStats = { cases: 0, frames: 0, outcomes: {} };
  const dir = mkdtempSync("/tmp/aa-wfz-");
  try {
    const from = run.from ?? 0;
    for (let i = from; i < from + run.iterations; i++) {
      run.onCase?.(i);
      const c = makeCase(Rng.caseSeed(run.seed, i));
      const path = join(dir, `case-${i}.wire`);
      writeFileSync(path, c.bytes);
      const fail = (detail: string): never => {
        throw new Error(
          `wire fuzz failed: run seed ${run.seed}, case ${i} (replay: bun run fuzz -- --target wire --seed ${run.seed} --case ${i})\n${detail}\n  stream: ${c.labels.join(", ")} (${c.bytes.length} bytes)`,
        );
      };
      // The source takes its channel from the first message's magic.
      const magic = c.bytes.length >= 4 && new DataView(c.bytes.buffer, c.bytes.byteOffset).getUint32(0, true) === INPUT_MAGIC ? INPUT_MAGIC : OUTPUT_MAGIC;
      const ref = referenceParse(c.bytes, magic);
      const wantFrames = ref.messages
        .filter((m) => m.type === MessageType.OpusFrame)
        .map((m) => hashFrame(c.bytes.subarray(m.offset + HEADER_SIZE, m.offset + HEADER_SIZE + m.length), 0));
      const source = await WireSource.open(path);
      try {
        // Empty OpusFrames are legal on the wire; timestamps are compared by the parser fuzz.
        const got = await drain(source, 4 * c.bytes.length + 1000, 0, false);
        if (got.frames.length !== wantFrames.length || got.frames.join() !== wantFrames.join()) {
          fail(`frames differ from the reference: ${got.frames.length} vs ${wantFrames.length}`);
        }
        if (ref.end.kind === "ok") {
          if (got.error) fail(`unexpected error: ${got.error.message}`);
        } else {
          if (!got.error) fail(`no error; the reference ends with ${ref.end.kind} at ${ref.end.offset}`);
          checkError(got.error, `wire source ${path}: ${ref.end.kind}`, c.bytes.length, /$^/);
          if (!got.error!.message.endsWith(`at byte ${ref.end.offset}`)) fail(`error does not name byte ${ref.end.offset}: ${got.error!.message}`);
        }
        stats.frames += got.frames.length;
        stats.outcomes[ref.end.kind] = (stats.outcomes[ref.end.kind] ?? 0) + 1;
      } catch (e) {
        if (e instanceof SourceFuzzFailure) fail(e.message);
        throw e;
      } finally {
        await source.close();
        rmSync(path, { force: true });
      }
      stats.cases++;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return stats;
}
