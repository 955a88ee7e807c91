import { describe, expect, test } from "bun:test";
import {
  encodeMessage,
  HEADER_SIZE,
  INPUT_MAGIC,
  MessageType,
  OUTPUT_MAGIC,
  readHeader,
  validateHeader,
  writeHeader,
} from "../../src/protocol/index.ts";
import { wireHeader } from "../support/wire.ts";

describe("header", () => {
  test("writeHeader (the hot path) writes at its offset exactly the header encodeMessage builds, and nothing else", () => {
    for (const [magic, type, length, ms] of [
      [OUTPUT_MAGIC, MessageType.OpusFrame, 4096, 1_700_000_000_123.456],
      [INPUT_MAGIC, MessageType.Ack, 0, -1e-6],
      [INPUT_MAGIC, MessageType.Config, 12, 0],
      [OUTPUT_MAGIC, MessageType.Heartbeat, 0x01020304, 2 ** 40],
    ] as const) {
      const bytes = new Uint8Array(HEADER_SIZE + 10).fill(0xa5);
      writeHeader(bytes, 5, magic, type, length, ms);
      const want = wireHeader(magic, type, length, BigInt(Math.round(ms * 1e6)));
      expect([...bytes.subarray(5, 5 + HEADER_SIZE)]).toEqual([...want]);
      expect([...bytes.subarray(0, 5), ...bytes.subarray(5 + HEADER_SIZE)]).toEqual(Array(10).fill(0xa5));
    }
  });

  test("readHeader reads every field at its offset", () => {
    const bytes = new Uint8Array(3 + HEADER_SIZE);
    bytes.set(wireHeader(INPUT_MAGIC, MessageType.Stop, 0x0a0b0c0d, -5n), 3);
    expect(readHeader(bytes, 3)).toEqual({
      magic: INPUT_MAGIC,
      type: MessageType.Stop,
      length: 0x0a0b0c0d,
      timestampNs: -5n,
    });
  });

  test("validateHeader: the largest legal length passes, one more is FrameTooLarge; the offset is passed on", () => {
    const ok = wireHeader(OUTPUT_MAGIC, MessageType.OpusFrame, 4096);
    expect(validateHeader(ok, 0, OUTPUT_MAGIC, 7)).toBeUndefined();
    const large = wireHeader(OUTPUT_MAGIC, MessageType.OpusFrame, 4097);
    const error = validateHeader(large, 0, OUTPUT_MAGIC, 7);
    expect(error?.message).toBe("FrameTooLarge: 4097 > 4096 at byte 7");
    expect(encodeMessage(OUTPUT_MAGIC, MessageType.Ack).length).toBe(HEADER_SIZE);
  });
});
