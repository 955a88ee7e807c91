import { describe, expect, test } from "bun:test";
import { oggCrc } from "../../src/media/ogg-crc.ts";

describe("oggCrc", () => {
  test("matches the catalogued check value", () => {
    // CRC-32/CKSUM (poly 0x04c11db7, init 0, unreflected) checks "123456789" to
    // 0x765e7680 after its final xor with 0xffffffff; Ogg's CRC has no final xor.
    const check = new TextEncoder().encode("123456789");
    expect(oggCrc(check)).toBe((0x765e7680 ^ 0xffffffff) >>> 0);
  });

  test("of nothing is 0, and of one byte is its table entry", () => {
    expect(oggCrc(new Uint8Array(0))).toBe(0);
    expect(oggCrc(Uint8Array.of(1))).toBe(0x04c11db7);
    expect(oggCrc(Uint8Array.of(0x80))).toBe(0x690ce0ee);
  });

  test("continues across pieces as if over the whole", () => {
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 37 + 11) & 0xff);
    const whole = oggCrc(bytes);
    for (const cut of [0, 1, 22, 500, 999, 1000]) {
      expect(oggCrc(bytes, oggCrc(bytes, 0, 0, cut), cut)).toBe(whole);
    }
  });

  test("agrees with a bit-at-a-time CRC at every alignment, length and starting value", () => {
    // The polynomial division itself, one bit at a time: shares nothing with the tables.
    const reference = (bytes: Uint8Array, crc: number) => {
      let c = crc;
      for (const byte of bytes) {
        c ^= byte << 24;
        for (let bit = 0; bit < 8; bit++) c = c & 0x80000000 ? (c << 1) ^ 0x04c11db7 : c << 1;
      }
      return c >>> 0;
    };
    const buffer = Uint8Array.from({ length: 300 }, (_, i) => (i * 151 + 7) ^ (i >> 3));
    for (let offset = 0; offset < 8; offset++) {
      for (const length of [0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 64, 100, 255]) {
        const bytes = buffer.subarray(offset, offset + length);
        for (const start of [0, 0x12345678, 0xffffffff]) expect(oggCrc(bytes, start)).toBe(reference(bytes, start));
      }
    }
  });

  test("a start below 0 or between bytes is refused, not read from before the view in its buffer or misread", () => {
    const buffer = new Uint8Array(64).fill(0x5a);
    const view = buffer.subarray(16, 48);
    expect(() => oggCrc(view, 0, -8)).toThrow("oggCrc: start must be an integer >= 0, got -8");
    expect(() => oggCrc(view, 0, 2.5)).toThrow("oggCrc: start must be an integer >= 0, got 2.5");
    expect(() => oggCrc(view, 0, Number.NaN)).toThrow(RangeError);
    expect(oggCrc(view, 0, 0)).toBe(oggCrc(view.slice()));
  });
});
