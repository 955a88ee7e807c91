import { describe, expect, test } from "bun:test";
import { describeMagic, INPUT_MAGIC, isMessageType, MessageType, OUTPUT_MAGIC } from "../../src/protocol/index.ts";

describe("message types", () => {
  test("0..4 are the five types, nothing else is", () => {
    expect([-1, 0, 1, 2, 3, 4, 5, 255].filter(isMessageType)).toEqual([0, 1, 2, 3, 4]);
    expect(Object.values(MessageType)).toEqual([0, 1, 2, 3, 4]);
  });
});

describe("describeMagic", () => {
  test("names a printable magic by its characters, first byte on the wire last", () => {
    expect(describeMagic(OUTPUT_MAGIC)).toBe('0x4a4b4f55 ("JKOU")');
    expect(describeMagic(INPUT_MAGIC)).toBe('0x4a4b4d49 ("JKMI")');
    // The printable range is 0x20 (space) .. 0x7e (~), both ends included.
    expect(describeMagic(0x207e2020)).toBe('0x207e2020 (" ~  ")');
  });

  test("a magic with any byte outside 0x20..0x7e is shown in hex only, unsigned, eight digits", () => {
    expect(describeMagic(0x7f4b4f55)).toBe("0x7f4b4f55");
    expect(describeMagic(0x4a4b4f1f)).toBe("0x4a4b4f1f");
    expect(describeMagic(0x4a004f55)).toBe("0x4a004f55");
    expect(describeMagic(0)).toBe("0x00000000");
    expect(describeMagic(-1)).toBe("0xffffffff");
    expect(describeMagic(0x8a4b4f55 | 0)).toBe("0x8a4b4f55");
  });
});
