import { describe, expect, test } from "bun:test";
import {
  encodeMessage,
  FrameParser,
  INPUT_MAGIC,
  MessageType,
  OUTPUT_MAGIC,
  ProtocolError,
} from "../../src/protocol/index.ts";
import { concatBytes } from "../support/bytes.ts";
import { protocolErrorOf, wireHeader } from "../support/wire.ts";

function drain(parser: FrameParser, into: { type: number; payload: number[]; ts: bigint }[]) {
  for (let m = parser.next(); m; m = parser.next()) {
    into.push({ type: m.type, payload: [...m.payload], ts: m.timestampNs });
  }
}

const messages = [
  encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, Uint8Array.of(1, 2, 3), 11n),
  encodeMessage(OUTPUT_MAGIC, MessageType.Heartbeat, undefined, 12n),
  encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, new Uint8Array(40).map((_, i) => i), 13n),
  encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, new Uint8Array(0), 14n),
  encodeMessage(OUTPUT_MAGIC, MessageType.Ack, undefined, -5n),
];
const whole = concatBytes(messages);

function expected() {
  const parser = new FrameParser(OUTPUT_MAGIC);
  parser.push(whole);
  const out: { type: number; payload: number[]; ts: bigint }[] = [];
  drain(parser, out);
  return out;
}

describe("FrameParser", () => {
  test("many messages in one chunk", () => {
    const out = expected();
    expect(out.map((m) => m.type)).toEqual([0, 3, 0, 0, 4]);
    expect(out.map((m) => m.ts)).toEqual([11n, 12n, 13n, 14n, -5n]);
    expect(out[2].payload).toEqual([...new Uint8Array(40).map((_, i) => i)]);
  });

  test("every split point of a multi-message stream, in two chunks", () => {
    const want = expected();
    for (let cut = 0; cut <= whole.length; cut++) {
      const parser = new FrameParser(OUTPUT_MAGIC);
      const got: typeof want = [];
      parser.push(whole.subarray(0, cut));
      drain(parser, got);
      parser.push(whole.subarray(cut));
      drain(parser, got);
      expect(got).toEqual(want);
      expect(parser.pending).toBe(0);
      expect(parser.streamOffset).toBe(whole.length);
    }
  });

  test("every pair of split points, in three chunks", () => {
    const want = expected();
    for (let a = 0; a <= whole.length; a += 3) {
      for (let b = a; b <= whole.length; b += 2) {
        const parser = new FrameParser(OUTPUT_MAGIC);
        const got: typeof want = [];
        for (const piece of [whole.subarray(0, a), whole.subarray(a, b), whole.subarray(b)]) {
          parser.push(piece);
          drain(parser, got);
        }
        expect(got).toEqual(want);
      }
    }
  });

  test("one byte at a time", () => {
    const parser = new FrameParser(OUTPUT_MAGIC);
    const got: ReturnType<typeof expected> = [];
    for (let i = 0; i < whole.length; i++) {
      parser.push(whole.subarray(i, i + 1));
      drain(parser, got);
    }
    expect(got).toEqual(expected());
  });

  test("a bad magic is rejected naming the value and its stream offset", () => {
    const parser = new FrameParser(OUTPUT_MAGIC);
    const bad = concatBytes([messages[0], encodeMessage(INPUT_MAGIC, 0, Uint8Array.of(9))]);
    parser.push(bad);
    expect(parser.next()).toBeDefined();
    expect(() => parser.next()).toThrow('BadMagic: 0x4a4b4d49 ("JKMI"), expected 0x4a4b4f55 ("JKOU") at byte 20');
    // no resync: the parser stays failed
    expect(() => parser.next()).toThrow(ProtocolError);
  });

  test("an unknown type is rejected naming the type", () => {
    const parser = new FrameParser(OUTPUT_MAGIC);
    const m = encodeMessage(OUTPUT_MAGIC, 0, Uint8Array.of(1));
    m[4] = 5;
    parser.push(m);
    expect(() => parser.next()).toThrow("UnknownType: 5, allowed 0..4");
  });

  test("a length over 4096 is rejected before the payload arrives, even when split", () => {
    for (const length of [4097, 2 ** 32 - 1]) {
      const header = wireHeader(OUTPUT_MAGIC, MessageType.OpusFrame, length);
      const parser = new FrameParser(OUTPUT_MAGIC);
      parser.push(header.subarray(0, 9));
      expect(parser.next()).toBeUndefined();
      parser.push(header.subarray(9));
      const error = protocolErrorOf(() => parser.next());
      expect(error.kind).toBe("FrameTooLarge");
      expect(error.value).toBe(length);
    }
  });

  test("finish() reports a message cut off by the end of stream", () => {
    const parser = new FrameParser(OUTPUT_MAGIC);
    parser.push(whole.subarray(0, 25)); // message 1 whole (20 bytes) + 5 bytes of the next header
    expect(parser.next()).toBeDefined();
    expect(parser.next()).toBeUndefined();
    expect(() => parser.finish()).toThrow("Truncated: stream ended 12 byte(s) short of a whole message at byte 20");
  });

  test("finish() at a boundary is fine", () => {
    const parser = new FrameParser(OUTPUT_MAGIC);
    parser.push(whole);
    while (parser.next());
    expect(() => parser.finish()).not.toThrow();
  });

  test("a message whole inside a chunk is viewed in place; only one split across chunks is copied", () => {
    const parser = new FrameParser(OUTPUT_MAGIC);
    // Message 1 (20 bytes) whole in the first chunk, the Heartbeat (17) split at byte 30, the rest whole in the second.
    const first = whole.subarray(0, 30);
    const second = whole.subarray(30);
    const seen: { stream: number; inPlace: boolean; at: number }[] = [];
    const look = (chunk: Uint8Array, chunkStart: number) => {
      parser.push(chunk);
      for (let m = parser.next(); m; m = parser.next()) {
        const inPlace = m.raw.buffer === whole.buffer;
        seen.push({ stream: m.streamOffset, inPlace, at: inPlace ? m.raw.byteOffset - chunk.byteOffset + chunkStart : -1 });
      }
    };
    look(first, 0);
    look(second, 30);
    expect(seen).toEqual([
      { stream: 0, inPlace: true, at: 0 },
      { stream: 20, inPlace: false, at: -1 },
      { stream: 37, inPlace: true, at: 37 },
      { stream: 94, inPlace: true, at: 94 },
      { stream: 111, inPlace: true, at: 111 },
    ]);
  });

  test("raw gives the message exactly as on the wire", () => {
    const parser = new FrameParser(OUTPUT_MAGIC);
    parser.push(whole.subarray(0, 30));
    const got: Uint8Array[] = [];
    for (let m = parser.next(); m; m = parser.next()) got.push(m.raw.slice());
    parser.push(whole.subarray(30));
    for (let m = parser.next(); m; m = parser.next()) got.push(m.raw.slice());
    expect(concatBytes(got)).toEqual(whole);
  });
});
