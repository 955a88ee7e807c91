import { describe, expect, test } from "bun:test";
import { dlopen, FFIType, ptr } from "bun:ffi";
import { checkOpusFraming, opusFrameSamples, opusPacketSamples } from "../../src/media/opus-toc.ts";

const toc = (config: number, stereo: boolean, code: number) => (config << 3) | (stereo ? 4 : 0) | code;

/** As an Ogg sink takes a packet: its duration, and its frames fitting its bytes. */
function decodable(packet: Uint8Array): number {
  const samples = opusPacketSamples(packet);
  checkOpusFraming(packet);
  return samples;
}

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
    expect(() => opusPacketSamples(new Uint8Array(0))).toThrow("empty Opus packet (one has at least its TOC byte, RFC 6716 3.1)");
    expect(() => opusPacketSamples(Uint8Array.of(toc(31, false, 3)))).toThrow("lacks its frame count");
    expect(() => opusPacketSamples(Uint8Array.of(toc(31, false, 3), 0))).toThrow("0 frames");
    // 7 x 20 ms = 140 ms > 120 ms
    expect(() => opusPacketSamples(Uint8Array.of(toc(31, false, 3), 7))).toThrow("more than 120 ms");
    // SILK 60 ms x 2 = 120 ms is the limit and allowed
    expect(opusPacketSamples(Uint8Array.of(toc(3, false, 1)))).toBe(5760);
  });

  test("checkOpusFraming refuses packets whose frames do not fit their bytes (RFC 6716 section 3.4, R2-R7)", () => {
    const celt20 = toc(31, false, 0);
    const bytes = (n: number) => new Uint8Array(n).fill(1);
    const packet = (...parts: (number | Uint8Array)[]) => Uint8Array.from(parts.flatMap((p) => (typeof p === "number" ? [p] : [...p])));
    // R2: one frame of 1276 bytes.
    expect(() => decodable(packet(celt20, bytes(1276)))).toThrow("a frame of 1276 bytes, more than 1275");
    expect(decodable(packet(celt20, bytes(1275)))).toBe(960);
    // R3: code 1 splits what follows the TOC in two.
    expect(() => decodable(packet(celt20 | 1, 5))).toThrow("code 1 (two frames of one size) has an odd 1 bytes after its TOC");
    expect(() => decodable(packet(celt20 | 1, bytes(2552)))).toThrow("a frame of 1276 bytes");
    // R4: code 2's first frame must fit; its two-byte length is 252 + 4 x the second byte.
    expect(() => decodable(packet(celt20 | 2))).toThrow("lacks a frame length");
    expect(() => decodable(packet(celt20 | 2, 2, 0xff))).toThrow("its first frame of 2 bytes runs past the packet's end");
    expect(() => decodable(packet(celt20 | 2, 252))).toThrow("two-byte frame length runs past");
    expect(decodable(packet(celt20 | 2, 253, 1, bytes(257)))).toBe(1920);
    expect(() => decodable(packet(celt20 | 2, 253, 1, bytes(256)))).toThrow("its first frame of 257 bytes runs past");
    // R6: CBR code 3 splits its bytes into equal frames; padding (255: 254 bytes and another length byte) comes off first.
    expect(() => decodable(packet(celt20 | 3, 3, bytes(4)))).toThrow("has 4 bytes of frames, not a multiple of 3");
    expect(decodable(packet(celt20 | 3, 0x40 | 2, 255, 1, bytes(4), bytes(255)))).toBe(1920);
    expect(() => decodable(packet(celt20 | 3, 0x40 | 2, 255, 1, bytes(3), bytes(255)))).toThrow("not a multiple of 2");
    expect(() => decodable(packet(celt20 | 3, 0x40 | 2, 255))).toThrow("padding length runs past");
    expect(() => decodable(packet(celt20 | 3, 0x40 | 2, 10, bytes(9)))).toThrow("padding runs past");
    // R7: VBR code 3 gives every frame's length but the last's.
    expect(decodable(packet(celt20 | 3, 0x80 | 3, 2, 0, bytes(5)))).toBe(3 * 960);
    expect(() => decodable(packet(celt20 | 3, 0x80 | 3, 2, 4, bytes(5)))).toThrow("frame 2 of 4 bytes runs past");
    expect(() => decodable(packet(celt20 | 3, 0x80 | 3))).toThrow("lacks a frame length");
  });

  test("with opusPacketSamples, takes and refuses exactly the packets libopus's own parser does, with its frame count", () => {
    // The decoder every player uses, through its public opus_packet_parse (libopus0, installed with opus-tools).
    const libopus = dlopen("libopus.so.0", {
      opus_packet_parse: { args: [FFIType.ptr, FFIType.i32, FFIType.ptr, FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 },
    });
    const tocOut = new Uint8Array(1);
    const frames = new BigUint64Array(48);
    const sizes = new Int16Array(48);
    const offset = new Int32Array(1);
    // Packets shaped to reach every rule: a random TOC, a count byte and frame lengths from the values that matter.
    let seed = 12345;
    const random = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    const pick = <T>(values: T[]) => values[random(values.length)]!;
    const disagreements: string[] = [];
    let taken = 0;
    for (let i = 0; i < 20_000 && disagreements.length < 5; i++) {
      const head = [random(256), pick([random(256), 0x80 | random(64), 0x40 | random(64), 0xc0 | random(4), random(8)])];
      const shaped = Array.from({ length: random(4) }, () => pick([0, 1, 2, 251, 252, 253, 254, 255, random(256)]));
      const packet = Uint8Array.from([...head, ...shaped, ...new Uint8Array(pick([0, 1, 2, 3, random(16), random(1300), random(2600)]))]).subarray(0, pick([1, 2, 3, 4, 1 << 16]));
      const count = libopus.symbols.opus_packet_parse(ptr(packet), packet.length, ptr(tocOut), ptr(frames), ptr(sizes), ptr(offset));
      let ours: number;
      try {
        ours = decodable(packet) / opusFrameSamples(packet[0]!);
      } catch {
        ours = -1;
      }
      if ((count < 0 ? -1 : count) !== ours) disagreements.push(`[${[...packet.subarray(0, 8)]}... ${packet.length} bytes]: libopus ${count}, ours ${ours}`);
      if (count > 0) taken++;
    }
    libopus.close();
    expect(disagreements).toEqual([]);
    // Both kinds were tried in numbers.
    expect(taken).toBeGreaterThan(2000);
    expect(taken).toBeLessThan(18_000);
  });
});
