/**
 * A short seeded fuzz run of FrameParser (the long one is `bun run fuzz`):
 * valid streams, mutated streams and random chunkings against a reference
 * reading of the protocol; see test/long/parser-fuzzer.ts for the oracle.
 * PARSER_FUZZ_SEED / PARSER_FUZZ_ITERATIONS replay or widen the run.
 */
import { heapStats } from "bun:jsc";
import { describe, expect, test } from "bun:test";
import { FrameParser, HEADER_SIZE, MAX_MESSAGE, MAX_PAYLOAD, OUTPUT_MAGIC, ProtocolError, writeHeader } from "../../src/protocol/index.ts";
import { parseSeed } from "../long/rng.ts";
import { runParserFuzz, type ParsedView, type ParserFactory, type StreamParser } from "../long/parser-fuzzer.ts";

const SEED = parseSeed(process.env.PARSER_FUZZ_SEED ?? "0x5eed1234");
const ITERATIONS = Number(process.env.PARSER_FUZZ_ITERATIONS ?? 3000);

describe("FrameParser fuzzing", () => {
  test(`seed ${SEED}: ${ITERATIONS} valid and mutated streams in random chunks parse exactly as the reference`, () => {
    let stats;
    try {
      stats = runParserFuzz({ seed: SEED, iterations: ITERATIONS });
    } catch (e) {
      // The seed and case to replay, on the console as well as in the assertion.
      console.error(String((e as Error).message));
      throw e;
    }
    expect(stats.cases).toBe(ITERATIONS);
    // The run exercised every ending, not only the happy path.
    for (const outcome of ["ok", "BadMagic", "UnknownType", "FrameTooLarge", "Truncated"]) {
      expect(stats.outcomes[outcome] ?? 0).toBeGreaterThan(0);
    }
    expect(stats.messages).toBeGreaterThan(ITERATIONS);
  });

  test("memory held does not grow with the announced length: only the fixed reassembly buffer", () => {
    // Enough parsers that a difference of one reassembly buffer each (4 MB in all) towers over
    // whatever else the process allocates meanwhile.
    const PARSERS = 1000;
    /** JS heap plus memory outside it (typed array stores), after a full collection. */
    const heldBytes = () => {
      Bun.gc(true);
      Bun.gc(true);
      const h = heapStats();
      return h.heapSize + h.extraMemorySize;
    };
    /** Bytes held per parser when PARSERS parsers hold a header announcing `announced`. */
    const measure = (announced: number): number => {
      // The same input for every announced length: a header and some payload, in two pushes.
      const input = new Uint8Array(HEADER_SIZE + 100);
      writeHeader(input, 0, OUTPUT_MAGIC, 0, announced, 0);
      const parsers: FrameParser[] = [];
      const before = heldBytes();
      for (let k = 0; k < PARSERS; k++) {
        const parser = new FrameParser(OUTPUT_MAGIC);
        parser.push(input.subarray(0, 9));
        expect(parser.next()).toBeUndefined();
        // One byte short of a whole message (none short for length 0), up to 100 payload bytes.
        parser.push(input.subarray(9, HEADER_SIZE + Math.min(Math.max(announced - 1, 0), 100)));
        let outcome: unknown;
        try {
          outcome = parser.next();
        } catch (e) {
          outcome = e;
        }
        if (announced > MAX_PAYLOAD) expect((outcome as ProtocolError).kind).toBe("FrameTooLarge");
        else if (announced === 0) expect((outcome as { length: number }).length).toBe(0);
        else expect(outcome).toBeUndefined();
        parsers.push(parser);
      }
      const held = (heldBytes() - before) / PARSERS;
      expect(parsers.length).toBe(PARSERS);
      return held;
    };
    // Garbage left by earlier tests in this process is collected lazily: settle it first, and
    // take the median of three measurements so that one disturbed sample cannot decide.
    measure(0);
    const perParser: Record<string, number> = {};
    for (const announced of [0, 1, 100, MAX_PAYLOAD, MAX_PAYLOAD + 1, 65536, 2 ** 31, 2 ** 32 - 1]) {
      const samples = [measure(announced), measure(announced), measure(announced)].sort((a, b) => a - b);
      perParser[announced] = samples[1]!;
    }
    const sizes = Object.values(perParser);
    const report = JSON.stringify(perParser);
    // Each parser holds its one MAX_MESSAGE buffer and a few small objects, whatever a header
    // announces; a parser that also allocated by the announced length (even only up to the
    // legal 4096) would hold at least MAX_MESSAGE more for the larger ones.
    if (Math.max(...sizes) > 3 * MAX_MESSAGE) throw new Error(`bytes held per parser: ${report}`);
    if (Math.max(...sizes) - Math.min(...sizes) > MAX_MESSAGE / 2) throw new Error(`bytes held per parser vary: ${report}`);
  });
});

/**
 * Parsers with one classic defect each. The fuzzer must catch every one of
 * them quickly, or it proves nothing about the real parser.
 */
class FlawedParser implements StreamParser {
  private buffered = new Uint8Array(0);
  private consumed = 0;
  private failure: ProtocolError | undefined;
  private current: ParsedView | undefined;

  constructor(
    private readonly magic: number,
    private readonly flaw: "none" | "no-length-limit" | "resync" | "type-5-allowed" | "late-check" | "wrong-offset",
  ) {}

  get pending(): number {
    return this.buffered.length;
  }

  get streamOffset(): number {
    return this.consumed;
  }

  push(chunk: Uint8Array): void {
    const grown = new Uint8Array(this.buffered.length + chunk.length);
    grown.set(this.buffered);
    grown.set(chunk, this.buffered.length);
    this.buffered = grown;
  }

  next(): ParsedView | undefined {
    if (this.failure) throw this.failure;
    for (;;) {
      const b = this.buffered;
      if (b.length < HEADER_SIZE) return undefined;
      const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
      const length = view.getUint32(5, true);
      if (this.flaw === "late-check" && b.length < HEADER_SIZE + Math.min(length, 4096)) return undefined;
      const magic = view.getUint32(0, true);
      if (magic !== this.magic) {
        if (this.flaw === "resync") {
          this.buffered = b.subarray(1);
          this.consumed++;
          continue;
        }
        throw (this.failure = ProtocolError.badMagic(magic, this.magic, this.consumed));
      }
      const type = view.getUint8(4);
      if (type > (this.flaw === "type-5-allowed" ? 5 : 4)) throw (this.failure = ProtocolError.unknownType(type, this.consumed));
      if (this.flaw !== "no-length-limit" && length > MAX_PAYLOAD) throw (this.failure = ProtocolError.frameTooLarge(length, this.consumed));
      if (b.length < HEADER_SIZE + length) return undefined;
      const bytes = b.subarray(0, HEADER_SIZE + length);
      const offset = this.consumed + (this.flaw === "wrong-offset" && length === 0 ? 1 : 0);
      this.current = {
        type,
        length,
        streamOffset: offset,
        payload: bytes.subarray(HEADER_SIZE),
        raw: bytes,
        timestampNs: view.getBigInt64(9, true),
      };
      this.buffered = b.subarray(HEADER_SIZE + length);
      this.consumed += HEADER_SIZE + length;
      return this.current;
    }
  }

  finish(): void {
    if (this.failure) throw this.failure;
    if (this.buffered.length > 0) {
      const length = this.buffered.length >= HEADER_SIZE ? new DataView(this.buffered.buffer, this.buffered.byteOffset).getUint32(5, true) : 0;
      throw ProtocolError.truncated(HEADER_SIZE + length - this.buffered.length, this.consumed);
    }
  }
}

describe("the fuzzer itself", () => {
  for (const flaw of ["no-length-limit", "resync", "type-5-allowed", "late-check", "wrong-offset"] as const) {
    test(`catches a parser with the flaw "${flaw}"`, () => {
      const factory: ParserFactory = (magic) => new FlawedParser(magic, flaw);
      expect(() => runParserFuzz({ seed: SEED, iterations: 2000, factory })).toThrow(/parser fuzz failed: run seed \d+, case \d+/);
    });
  }

  test("the same stand-in without a flaw passes, so each failure above is its flaw's", () => {
    const factory: ParserFactory = (magic) => new FlawedParser(magic, "none");
    expect(runParserFuzz({ seed: SEED, iterations: 500, factory }).cases).toBe(500);
  });
});
