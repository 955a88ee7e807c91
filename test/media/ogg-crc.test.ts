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
});
