/**
 * Seeded fuzzing of the streaming FrameParser against an independent,
 * whole-buffer reference reading of the wire contract.
 *
 * Each case is a valid stream (random types, lengths at and around every
 * limit, payloads that themselves contain valid-looking headers, so a parser
 * that "resyncs" would be caught) that is then mutated or not: bit flips,
 * overwritten header fields (length 4097, 2^32-1, unknown types, the other
 * channel's magic), truncation, inserted and deleted bytes, splices of two
 * streams, duplicated ranges. It is fed in random chunks (one byte at a time,
 * small, large, cut at message boundaries, with empty chunks, as views into
 * the stream or as copies at odd byte offsets). The oracle:
 *
 * - every message the reference finds before the first violation comes out,
 *   identical (type, length, timestamp, payload, raw bytes, stream offset),
 *   as soon as its last byte has been pushed and not before;
 * - a violation is thrown as a ProtocolError of kind BadMagic, UnknownType or
 *   FrameTooLarge, with the right value and stream offset, while the chunk
 *   holding the header's 17th byte is being read (never waiting for a
 *   payload); afterwards every call throws the same error (no resync);
 * - a stream ending inside a message gives Truncated from finish(), naming
 *   how many bytes were missing and where the message started;
 * - nothing else is ever thrown, and no next() loop spins without progress.
 */
import {
  FrameParser,
  HEADER_SIZE,
  INPUT_MAGIC,
  MAX_PAYLOAD,
  OUTPUT_MAGIC,
  ProtocolError,
  type MessageType,
} from "../../src/protocol/index.ts";
import { concatBytes, sameBytes } from "../support/bytes.ts";
import { wireHeader } from "../support/wire.ts";
import { Rng } from "./rng.ts";

/** What the fuzzer drives: FrameParser, or a stand-in in the fuzzer's own self-test. */
export interface StreamParser {
  push(chunk: Uint8Array): void;
  next(): ParsedView | undefined;
  finish(): void;
  readonly pending: number;
  readonly streamOffset: number;
}

export interface ParsedView {
  type: MessageType | number;
  length: number;
  streamOffset: number;
  readonly payload: Uint8Array;
  readonly raw: Uint8Array;
  readonly timestampNs: bigint;
}

export type ParserFactory = (magic: number) => StreamParser;

export const frameParserFactory: ParserFactory = (magic) => new FrameParser(magic);

const ALLOWED_KINDS = new Set(["BadMagic", "UnknownType", "FrameTooLarge", "Truncated"]);

export interface RefMessage {
  offset: number;
  type: number;
  length: number;
  timestampNs: bigint;
}

export type RefEnd =
  | { kind: "ok" }
  | { kind: "Truncated"; value: number; offset: number }
  | { kind: "BadMagic" | "UnknownType" | "FrameTooLarge"; value: number; offset: number };

export interface RefParse {
  messages: RefMessage[];
  end: RefEnd;
  /** End offset of the last whole message. */
  consumed: number;
}

/** The protocol read straight from the wire contract, over the whole buffer at once. */
export function referenceParse(bytes: Uint8Array, magic: number): RefParse {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const messages: RefMessage[] = [];
  let at = 0;
  for (;;) {
    const left = bytes.length - at;
    if (left === 0) return { messages, end: { kind: "ok" }, consumed: at };
    if (left < HEADER_SIZE) return { messages, end: { kind: "Truncated", value: HEADER_SIZE - left, offset: at }, consumed: at };
    const m = view.getUint32(at, true);
    if (m !== magic) return { messages, end: { kind: "BadMagic", value: m, offset: at }, consumed: at };
    const type = view.getUint8(at + 4);
    if (type > 4) return { messages, end: { kind: "UnknownType", value: type, offset: at }, consumed: at };
    const length = view.getUint32(at + 5, true);
    if (length > MAX_PAYLOAD) return { messages, end: { kind: "FrameTooLarge", value: length, offset: at }, consumed: at };
    const total = HEADER_SIZE + length;
    if (left < total) return { messages, end: { kind: "Truncated", value: total - left, offset: at }, consumed: at };
    messages.push({ offset: at, type, length, timestampNs: view.getBigInt64(at + 9, true) });
    at += total;
  }
}

// ---------------------------------------------------------------- generation

const LENGTHS = [0, 1, 2, 3, 11, 12, 16, 17, 18, 100, 255, 256, 1000, 4095, 4096];

function pickLength(rng: Rng): number {
  switch (rng.int(0, 3)) {
    case 0:
      return rng.pick(LENGTHS);
    case 1:
      return rng.int(0, 64);
    case 2:
      return rng.int(0, 400);
    default:
      return rng.int(0, MAX_PAYLOAD);
  }
}

/** A header whose timestamp is given as its low and high 32-bit words. */
function header(magic: number, type: number, length: number, tsLo: number, tsHi: number): Uint8Array {
  return wireHeader(magic, type, length, (BigInt(tsHi >>> 0) << 32n) | BigInt(tsLo >>> 0));
}

/** A valid stream of random messages, at most about `budget` bytes. */
export function validStream(rng: Rng, magic: number, budget = 48 * 1024): Uint8Array {
  const count = rng.pick([0, 1, 1, 2, 3, 5, 8, 13, rng.int(0, 40)]);
  const parts: Uint8Array[] = [];
  let size = 0;
  for (let i = 0; i < count; i++) {
    const length = pickLength(rng);
    if (size + HEADER_SIZE + length > budget && i > 0) break;
    const type = rng.chance(0.6) ? 0 : rng.int(0, 4);
    const [lo, hi] = rng.chance(0.2)
      ? rng.pick([
          [0, 0],
          [0xffffffff, 0xffffffff],
          [0, 0x40000000],
          [0xffffffff, 0x7fffffff],
          [0, 0x80000000],
        ])
      : [rng.u32(), rng.u32()];
    const payload = rng.bytes(length);
    // A valid-looking header (or the other channel's) inside the payload: bait for resyncing parsers.
    if (length >= HEADER_SIZE && rng.chance(0.25)) {
      const bait = header(rng.chance(0.7) ? magic : otherMagic(magic), rng.int(0, 4), rng.int(0, 64), rng.u32(), rng.u32());
      payload.set(bait, rng.int(0, length - HEADER_SIZE));
    }
    parts.push(header(magic, type, length, lo!, hi!), payload);
    size += HEADER_SIZE + length;
  }
  return concatBytes(parts);
}

function otherMagic(magic: number): number {
  return magic === OUTPUT_MAGIC ? INPUT_MAGIC : OUTPUT_MAGIC;
}

// ----------------------------------------------------------------- mutation

type Mutation = (rng: Rng, bytes: Uint8Array, magic: number) => { bytes: Uint8Array; label: string };

function boundaries(bytes: Uint8Array, magic: number): number[] {
  return referenceParse(bytes, magic).messages.map((m) => m.offset);
}

const MUTATIONS: Record<string, Mutation> = {
  bitflips(rng, bytes) {
    if (bytes.length === 0) return { bytes, label: "bitflips(none)" };
    const out = bytes.slice();
    const n = rng.pick([1, 1, 1, 2, 3, 8]);
    const at: number[] = [];
    for (let i = 0; i < n; i++) {
      const pos = rng.int(0, out.length - 1);
      out[pos]! ^= 1 << rng.int(0, 7);
      at.push(pos);
    }
    return { bytes: out, label: `bitflips@${at.join(",")}` };
  },
  setByte(rng, bytes) {
    if (bytes.length === 0) return { bytes, label: "setByte(none)" };
    const out = bytes.slice();
    const pos = rng.int(0, out.length - 1);
    out[pos] = rng.pick([0, 0xff, 0x10, 0x11, 0x05, 0x04, rng.int(0, 255)]);
    return { bytes: out, label: `setByte@${pos}=${out[pos]}` };
  },
  header(rng, bytes, magic) {
    const starts = boundaries(bytes, magic);
    if (starts.length === 0) return { bytes, label: "header(none)" };
    const out = bytes.slice();
    const view = new DataView(out.buffer);
    const at = rng.pick(starts);
    switch (rng.int(0, 3)) {
      case 0: {
        const length = rng.pick([4097, 4098, 8192, 65535, 65536, 2 ** 31, 2 ** 32 - 1, 4096, 0, rng.u32()]);
        view.setUint32(at + 5, length >>> 0, true);
        return { bytes: out, label: `length@${at}=${length}` };
      }
      case 1: {
        const type = rng.pick([5, 6, 0x7f, 0x80, 0xff, rng.int(5, 255)]);
        view.setUint8(at + 4, type);
        return { bytes: out, label: `type@${at}=${type}` };
      }
      case 2: {
        const m = rng.pick([otherMagic(magic), 0, 0xffffffff, ((magic << 8) | (magic >>> 24)) >>> 0, rng.u32()]);
        view.setUint32(at, m >>> 0, true);
        return { bytes: out, label: `magic@${at}=0x${(m >>> 0).toString(16)}` };
      }
      default: {
        // A single byte of the magic.
        const pos = at + rng.int(0, 3);
        out[pos]! ^= 1 << rng.int(0, 7);
        return { bytes: out, label: `magicbit@${pos}` };
      }
    }
  },
  truncate(rng, bytes) {
    const cut = rng.int(0, bytes.length);
    return { bytes: bytes.subarray(0, cut).slice(), label: `truncate@${cut}` };
  },
  insert(rng, bytes, magic) {
    const starts = boundaries(bytes, magic);
    const pos = starts.length > 0 && rng.chance(0.5) ? rng.pick(starts) : rng.int(0, bytes.length);
    const extra = rng.chance(0.3)
      ? header(rng.chance(0.5) ? magic : otherMagic(magic), rng.int(0, 7), rng.pick([0, 5, 4097, 2 ** 32 - 1]), 0, 0)
      : rng.bytes(rng.int(1, 32));
    return {
      bytes: concatBytes([bytes.subarray(0, pos), extra, bytes.subarray(pos)]),
      label: `insert@${pos}+${extra.length}`,
    };
  },
  delete(rng, bytes) {
    if (bytes.length === 0) return { bytes, label: "delete(none)" };
    const from = rng.int(0, bytes.length - 1);
    const to = Math.min(bytes.length, from + rng.int(1, 40));
    return { bytes: concatBytes([bytes.subarray(0, from), bytes.subarray(to)]), label: `delete@${from}..${to}` };
  },
  splice(rng, bytes, magic) {
    const other = validStream(rng, magic, 16 * 1024);
    const a = rng.int(0, bytes.length);
    const b = rng.int(0, other.length);
    return { bytes: concatBytes([bytes.subarray(0, a), other.subarray(b)]), label: `splice@${a}|other@${b}` };
  },
  duplicate(rng, bytes) {
    if (bytes.length === 0) return { bytes, label: "duplicate(none)" };
    const from = rng.int(0, bytes.length - 1);
    const to = Math.min(bytes.length, from + rng.int(1, 200));
    const at = rng.int(0, bytes.length);
    return {
      bytes: concatBytes([bytes.subarray(0, at), bytes.subarray(from, to), bytes.subarray(at)]),
      label: `duplicate[${from}..${to}]@${at}`,
    };
  },
  random(rng) {
    const n = rng.int(0, 300);
    return { bytes: rng.bytes(n), label: `random(${n})` };
  },
};

const MUTATION_NAMES = Object.keys(MUTATIONS);

// ----------------------------------------------------------------- chunking

function chunkStream(rng: Rng, bytes: Uint8Array, magic: number): { chunks: Uint8Array[]; label: string } {
  const strategy = rng.pick(["whole", "bytes1", "small", "medium", "large", "boundary", "mixed"] as const);
  const sizes: number[] = [];
  const ends = referenceParse(bytes, magic).messages.map((m) => m.offset + HEADER_SIZE + m.length);
  let at = 0;
  while (at < bytes.length) {
    let size: number;
    switch (strategy) {
      case "whole":
        size = bytes.length;
        break;
      case "bytes1":
        size = 1;
        break;
      case "small":
        size = rng.int(1, 20);
        break;
      case "medium":
        size = rng.int(1, 600);
        break;
      case "large":
        size = rng.int(1, 20000);
        break;
      case "boundary": {
        const end = ends.find((e) => e > at);
        size = end === undefined ? bytes.length - at : Math.max(1, end - at + rng.int(-2, 2));
        break;
      }
      default:
        size = rng.chance(0.1) ? 0 : rng.pick([1, 2, 16, 17, 18, rng.int(1, 5000)]);
    }
    size = Math.min(size, bytes.length - at);
    sizes.push(size);
    at += size;
  }
  if (rng.chance(0.1)) sizes.splice(rng.int(0, sizes.length), 0, 0);
  const copy = rng.chance(0.3);
  const chunks: Uint8Array[] = [];
  at = 0;
  for (const size of sizes) {
    const piece = bytes.subarray(at, at + size);
    at += size;
    if (copy) {
      // The same bytes at an odd offset inside a larger buffer: DataViews must honour byteOffset.
      const pad = rng.int(1, 7);
      const buffer = new Uint8Array(pad + size + rng.int(0, 7)).fill(0xa5);
      buffer.set(piece, pad);
      chunks.push(buffer.subarray(pad, pad + size));
    } else {
      chunks.push(piece);
    }
  }
  return { chunks, label: `${strategy}${copy ? "+copied" : ""}(${chunks.length} chunks)` };
}

// -------------------------------------------------------------------- cases

export interface FuzzCase {
  seed: number;
  magic: number;
  bytes: Uint8Array;
  chunks: Uint8Array[];
  /** What was done to the stream, for the failure report. */
  labels: string[];
}

export function makeCase(seed: number): FuzzCase {
  const rng = new Rng(seed);
  const magic = rng.chance(0.5) ? OUTPUT_MAGIC : INPUT_MAGIC;
  const labels = [`magic=${magic === OUTPUT_MAGIC ? "JKOU" : "JKMI"}`];
  let bytes = validStream(rng, magic);
  const mutations = rng.pick([0, 0, 1, 1, 1, 2, 3]);
  for (let i = 0; i < mutations; i++) {
    const result = MUTATIONS[rng.pick(MUTATION_NAMES)]!(rng, bytes, magic);
    bytes = result.bytes;
    labels.push(result.label);
  }
  // Byte-at-a-time over a big stream is slow and finds nothing a smaller one would not.
  if (bytes.length > 40_000 && rng.chance(0.8)) {
    bytes = bytes.subarray(0, 40_000);
    labels.push("cut to 40000 bytes");
  }
  const { chunks, label } = chunkStream(rng, bytes, magic);
  labels.push(label);
  return { seed, magic, bytes, chunks, labels };
}

export class FuzzFailure extends Error {
  constructor(
    readonly caseSeed: number,
    readonly labels: string[],
    detail: string,
  ) {
    super(`${detail}\n  case seed: ${caseSeed}\n  stream: ${labels.join(", ")}`);
    this.name = "FuzzFailure";
  }
}

function describeError(e: unknown): string {
  if (e instanceof ProtocolError) return `ProtocolError(${e.kind}, value ${e.value}, offset ${e.offset}): ${e.message}`;
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return `non-Error ${String(e)}`;
}

export interface CaseResult {
  messages: number;
  /** "ok", or the error kind the stream ended with. */
  outcome: string;
}

/**
 * Runs one case through a parser from `factory`; throws FuzzFailure naming
 * the first difference from the reference.
 */
export function runCase(c: FuzzCase, factory: ParserFactory = frameParserFactory): CaseResult {
  const fail = (detail: string): never => {
    throw new FuzzFailure(c.seed, c.labels, detail);
  };
  const ref = referenceParse(c.bytes, c.magic);
  const parser = factory(c.magic);
  let got = 0;
  let pushed = 0;
  let thrown: unknown;
  let thrownAtChunkEnd = -1;
  let thrownAtChunkStart = -1;

  outer: for (const chunk of c.chunks) {
    const start = pushed;
    try {
      parser.push(chunk);
    } catch (e) {
      fail(`push() threw ${describeError(e)} after ${pushed} bytes`);
    }
    pushed += chunk.length;
    // Bounded: a chunk can complete at most one message per 17 bytes, plus one held across chunks.
    const cap = Math.floor(chunk.length / HEADER_SIZE) + 2;
    for (let k = 0; ; k++) {
      if (k > cap) fail(`next() returned more than ${cap} messages from a chunk of ${chunk.length} bytes (no progress?)`);
      let m: ParsedView | undefined;
      try {
        m = parser.next();
      } catch (e) {
        thrown = e;
        thrownAtChunkStart = start;
        thrownAtChunkEnd = pushed;
        break outer;
      }
      if (!m) break;
      const want = ref.messages[got];
      if (!want) fail(`message #${got} at stream offset ${m.streamOffset} does not exist in the reference (${ref.messages.length} messages, end ${JSON.stringify(ref.end)})`);
      const end = want!.offset + HEADER_SIZE + want!.length;
      if (end > pushed) fail(`message #${got} came out before its last byte (${end}) was pushed (${pushed})`);
      if (m.streamOffset !== want!.offset) fail(`message #${got}: streamOffset ${m.streamOffset}, expected ${want!.offset}`);
      if (m.type !== want!.type) fail(`message #${got}: type ${m.type}, expected ${want!.type}`);
      if (m.length !== want!.length) fail(`message #${got}: length ${m.length}, expected ${want!.length}`);
      if (m.timestampNs !== want!.timestampNs) fail(`message #${got}: timestamp ${m.timestampNs}, expected ${want!.timestampNs}`);
      if (!sameBytes(m.payload, c.bytes.subarray(want!.offset + HEADER_SIZE, end))) fail(`message #${got}: payload differs`);
      if (!sameBytes(m.raw, c.bytes.subarray(want!.offset, end))) fail(`message #${got}: raw bytes differ`);
      got++;
      if (parser.streamOffset !== end) fail(`after message #${got - 1}: parser.streamOffset ${parser.streamOffset}, expected ${end}`);
    }
    // Drained: everything complete within the bytes pushed so far has come out, nothing is held back.
    const complete = ref.messages.filter((m) => m.offset + HEADER_SIZE + m.length <= pushed).length;
    if (got !== complete) fail(`after ${pushed} bytes: ${got} messages out, but ${complete} were complete`);
    const lastEnd = got === 0 ? 0 : ref.messages[got - 1]!.offset + HEADER_SIZE + ref.messages[got - 1]!.length;
    if (parser.pending !== pushed - lastEnd) fail(`after ${pushed} bytes: pending ${parser.pending}, expected ${pushed - lastEnd}`);
  }

  const end = ref.end;
  if (thrown !== undefined) {
    if (!(thrown instanceof ProtocolError)) fail(`threw ${describeError(thrown)}, expected only ProtocolErrors`);
    const e = thrown as ProtocolError;
    if (!ALLOWED_KINDS.has(e.kind)) fail(`ProtocolError of kind ${e.kind}, allowed ${[...ALLOWED_KINDS].join("/")}`);
    if (end.kind === "ok" || end.kind === "Truncated") return fail(`threw ${describeError(e)} but the reference sees ${JSON.stringify(end)}`);
    if (e.kind !== end.kind || e.value !== end.value >>> 0 || e.offset !== end.offset) {
      fail(`threw ${describeError(e)}, expected ${end.kind} value ${end.value >>> 0} at ${end.offset}`);
    }
    if (got !== ref.messages.length) fail(`threw after ${got} messages; the reference has ${ref.messages.length} before the violation`);
    // Detected as soon as the header's 17th byte arrived, not later (no waiting for a payload).
    const headerLast = end.offset + HEADER_SIZE - 1;
    if (!(thrownAtChunkStart <= headerLast && headerLast < thrownAtChunkEnd)) {
      fail(`violation at ${end.offset} detected in the chunk [${thrownAtChunkStart}, ${thrownAtChunkEnd}), not in the one holding byte ${headerLast}`);
    }
    // No resync: it stays failed with the same error.
    for (const call of ["next", "finish"] as const) {
      try {
        if (call === "next") parser.next();
        else parser.finish();
        fail(`${call}() after a violation did not throw`);
      } catch (again) {
        if (again instanceof FuzzFailure) throw again;
        if (again !== e) fail(`${call}() after a violation threw ${describeError(again)}, not the same error`);
      }
    }
    return { messages: got, outcome: e.kind };
  }

  if (end.kind !== "ok" && end.kind !== "Truncated") fail(`no error thrown; the reference sees ${end.kind} value ${end.value} at ${end.offset}`);
  if (got !== ref.messages.length) fail(`${got} messages out, reference has ${ref.messages.length}`);
  try {
    parser.finish();
    if (end.kind === "Truncated") fail(`finish() did not throw; the stream ends ${end.value} byte(s) short of a message at ${end.offset}`);
  } catch (e) {
    if (e instanceof FuzzFailure) throw e;
    if (!(e instanceof ProtocolError)) fail(`finish() threw ${describeError(e)}`);
    const p = e as ProtocolError;
    if (end.kind !== "Truncated") return fail(`finish() threw ${describeError(p)} at a message boundary`);
    if (p.kind !== "Truncated" || p.value !== end.value || p.offset !== end.offset) {
      fail(`finish() threw ${describeError(p)}, expected Truncated value ${end.value} at ${end.offset}`);
    }
    return { messages: got, outcome: "Truncated" };
  }
  return { messages: got, outcome: "ok" };
}

export interface FuzzStats {
  cases: number;
  messages: number;
  outcomes: Record<string, number>;
  bytes: number;
}

export interface FuzzRun {
  seed: number;
  /** First case index (for replaying a single case). */
  from?: number;
  iterations: number;
  factory?: ParserFactory;
  /** Called before each case: progress for a watchdog. */
  onCase?: (index: number) => void;
}

/** Runs cases `from` .. `from + iterations - 1` of `seed`; throws FuzzFailure (with the run seed and case) on the first failure. */
export function runParserFuzz(run: FuzzRun): FuzzStats {
  const stats: FuzzStats = { cases: 0, messages: 0, outcomes: {}, bytes: 0 };
  const from = run.from ?? 0;
  for (let i = from; i < from + run.iterations; i++) {
    run.onCase?.(i);
    const c = makeCase(Rng.caseSeed(run.seed, i));
    try {
      const result = runCase(c, run.factory);
      stats.messages += result.messages;
      stats.outcomes[result.outcome] = (stats.outcomes[result.outcome] ?? 0) + 1;
    } catch (e) {
      const detail = e instanceof FuzzFailure ? e.message : `harness error ${describeError(e)}`;
      throw new Error(`parser fuzz failed: run seed ${run.seed}, case ${i} (replay: bun run fuzz -- --target parser --seed ${run.seed} --case ${i})\n${detail}`);
    }
    stats.cases++;
    stats.bytes += c.bytes.length;
  }
  return stats;
}
