import { describe, expect, test } from "bun:test";
import { decodeConfigPayload, encodeConfigPayload } from "../../src/protocol/index.ts";
import { protocolErrorOf } from "../support/wire.ts";

describe("Config payload", () => {
  test("round-trips every field as a little-endian u32", () => {
    const config = { sampleRate: 0x01020304, channels: 0xffffffff, frameSize: 7 };
    const bytes = encodeConfigPayload(config);
    expect([...bytes]).toEqual([4, 3, 2, 1, 0xff, 0xff, 0xff, 0xff, 7, 0, 0, 0]);
    expect(decodeConfigPayload(bytes)).toEqual(config);
    // A view into a larger buffer decodes from its own offset.
    const inside = new Uint8Array(20);
    inside.set(bytes, 5);
    expect(decodeConfigPayload(inside.subarray(5, 17))).toEqual(config);
  });

  test("any length but 12 is BadConfig naming the length", () => {
    for (const length of [0, 11, 13]) {
      const error = protocolErrorOf(() => decodeConfigPayload(new Uint8Array(length)));
      expect(error.kind).toBe("BadConfig");
      expect(error.value).toBe(length);
      expect(error.message).toBe(`BadConfig: payload is ${length} bytes, expected 12`);
    }
  });
});
