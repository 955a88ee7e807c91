import { describe, expect, test } from "bun:test";
import { opusFrameSamples, opusPacketChannels, opusPacketSamples } from "../../src/media/opus-toc.ts";

const toc = (config: number, stereo: boolean, code: number) => (config << 3) | (stereo ? 4 : 0) | code;

describe("Opus TOC", () => {
  test("frame durations per config follow RFC 6716 table 2", () => {
    const ms = Array.from({ length: 32 }, (_, config) => opusFrameSamples(toc(config, false, 0)) / 48);
    expect(ms).toEqual([
      10, 20, 40, 60, 10, 20, 40, 60, 10, 20, 40, 60, // SILK NB, MB, WB
      10, 20, 10, 20, // Hybrid SWB, FB
      2.5, 5, 10, 20, 2.5, 5, 10, 20, 2.5, 5, 10, 20, 2.5, 5, 10, 20, // CELT NB, WB, SWB, FB
    ]);
  });

  test("the code gives the frame count; code 3 reads it from the second byte", () => {
    const celt20 = 31;
    expect(opusPacketSamples(Uint8Array.of(toc(celt20, false, 0), 0xff))).toBe(960);
    expect(opusPacketSamples(Uint8Array.of(toc(celt20, false, 1)))).toBe(1920);
    expect(opusPacketSamples(Uint8Array.of(toc(celt20, false, 2), 1))).toBe(1920);
    // code 3: the count is the low 6 bits; the top two (VBR, padding) do not count
    expect(opusPacketSamples(Uint8Array.of(toc(celt20, false, 3), 0xc0 | 6))).toBe(6 * 960);
    expect(opusPacketSamples(Uint8Array.of(toc(16, true, 3), 48))).toBe(48 * 120);
  });

  test("rejects packets no decoder would accept", () => {
    expect(() => opusPacketSamples(new Uint8Array(0))).toThrow("empty Opus packet");
    expect(() => opusPacketSamples(Uint8Array.of(toc(31, false, 3)))).toThrow("lacks its frame count");
    expect(() => opusPacketSamples(Uint8Array.of(toc(31, false, 3), 0))).toThrow("0 frames");
    // 7 x 20 ms = 140 ms > 120 ms
    expect(() => opusPacketSamples(Uint8Array.of(toc(31, false, 3), 7))).toThrow("more than 120 ms");
    // SILK 60 ms x 2 = 120 ms is the limit and allowed
    expect(opusPacketSamples(Uint8Array.of(toc(3, false, 1)))).toBe(5760);
  });

  test("channels come from the stereo bit", () => {
    expect(opusPacketChannels(Uint8Array.of(toc(31, true, 0)))).toBe(2);
    expect(opusPacketChannels(Uint8Array.of(toc(31, false, 0)))).toBe(1);
  });
});
