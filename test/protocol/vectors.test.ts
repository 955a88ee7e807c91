import { describe, expect, test } from "bun:test";
import {
  decodeConfigPayload,
  encodeConfigPayload,
  encodeMessage,
  FrameParser,
  INPUT_MAGIC,
  MessageType,
  OUTPUT_MAGIC,
} from "../../src/protocol/index.ts";
import { protocolErrorOf } from "../support/wire.ts";

const hex = (s: string) => Uint8Array.from(s.trim().split(/\s+/).map((b) => parseInt(b, 16)));

// The wire contract's test vectors, checked in both directions.
const vectors = [
  {
    name: "OpusFrame, output, len 3",
    magic: OUTPUT_MAGIC,
    type: MessageType.OpusFrame,
    ts: 1700000000123456789n,
    payload: Uint8Array.of(1, 2, 3),
    bytes: "55 4f 4b 4a 00 03 00 00 00 15 cd 85 3d fe 9c 97 17 01 02 03",
  },
  {
    name: "Heartbeat, input, ts 1",
    magic: INPUT_MAGIC,
    type: MessageType.Heartbeat,
    ts: 1n,
    payload: new Uint8Array(0),
    bytes: "49 4d 4b 4a 03 00 00 00 00 01 00 00 00 00 00 00 00",
  },
  {
    name: "Config, input, 48000/2/960",
    magic: INPUT_MAGIC,
    type: MessageType.Config,
    ts: 0n,
    payload: encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 }),
    bytes: "49 4d 4b 4a 01 0c 00 00 00 00 00 00 00 00 00 00 00 80 bb 00 00 02 00 00 00 c0 03 00 00",
  },
  {
    name: "Ack, input, ts -1",
    magic: INPUT_MAGIC,
    type: MessageType.Ack,
    ts: -1n,
    payload: new Uint8Array(0),
    bytes: "49 4d 4b 4a 04 00 00 00 00 ff ff ff ff ff ff ff ff",
  },
];

describe("the wire contract's test vectors", () => {
  for (const v of vectors) {
    test(`encode: ${v.name}`, () => {
      expect(encodeMessage(v.magic, v.type, v.payload, v.ts)).toEqual(hex(v.bytes));
    });
    test(`decode: ${v.name}`, () => {
      const parser = new FrameParser(v.magic);
      parser.push(hex(v.bytes));
      const m = parser.next()!;
      expect(m).toBeDefined();
      expect(m.type).toBe(v.type);
      expect(m.timestampNs).toBe(v.ts);
      expect(m.payload).toEqual(v.payload);
      expect(parser.next()).toBeUndefined();
      expect(parser.pending).toBe(0);
    });
  }

  test("Config payload decodes to 48000/2/960", () => {
    expect(decodeConfigPayload(hex("80 bb 00 00 02 00 00 00 c0 03 00 00"))).toEqual({
      sampleRate: 48000,
      channels: 2,
      frameSize: 960,
    });
  });

  test("OpusFrame len 4096 (largest legal), ts 2^62", () => {
    const header = hex("55 4f 4b 4a 00 00 10 00 00 00 00 00 00 00 00 00 40");
    const payload = new Uint8Array(4096).fill(7);
    expect(encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, payload, 2n ** 62n).subarray(0, 17)).toEqual(
      header,
    );
    const parser = new FrameParser(OUTPUT_MAGIC);
    const bytes = new Uint8Array(17 + 4096);
    bytes.set(header);
    bytes.set(payload, 17);
    parser.push(bytes);
    const m = parser.next()!;
    expect(m.length).toBe(4096);
    expect(m.timestampNs).toBe(2n ** 62n);
  });

  test("header announcing 4097 is rejected as FrameTooLarge naming 4097", () => {
    const parser = new FrameParser(OUTPUT_MAGIC);
    parser.push(hex("55 4f 4b 4a 00 01 10 00 00 00 00 00 00 00 00 00 00"));
    const error = protocolErrorOf(() => parser.next());
    expect(error.message).toBe("FrameTooLarge: 4097 > 4096 at byte 0");
    expect(error.kind).toBe("FrameTooLarge");
    expect(error.value).toBe(4097);
    // No resync: the parser stays failed with the same error.
    expect(protocolErrorOf(() => parser.next())).toBe(error);
  });

  test("encodeMessage refuses a payload over 4096", () => {
    expect(() => encodeMessage(OUTPUT_MAGIC, 0, new Uint8Array(4097))).toThrow("FrameTooLarge: 4097 > 4096");
  });
});
