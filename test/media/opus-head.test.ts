import { describe, expect, test } from "bun:test";
import { buildOpusHead, isOpusHead, parseOpusHead, whyNotCarried } from "../../src/media/opus-head.ts";
import { buildOpusTags, isOpusTags } from "../../src/media/opus-tags.ts";

describe("OpusHead", () => {
  test("is built byte for byte per RFC 7845 5.1 and parsed back", () => {
    const head = buildOpusHead({ channels: 2, preSkip: 312, inputSampleRate: 44100, outputGain: -256 });
    expect([...head]).toEqual([
      ...new TextEncoder().encode("OpusHead"),
      1, // version
      2, // channels
      0x38, 0x01, // pre-skip 312
      0x44, 0xac, 0, 0, // 44100
      0x00, 0xff, // gain -256 (-1 dB in Q7.8)
      0, // mapping family
    ]);
    expect(parseOpusHead(head)).toEqual({
      version: 1,
      channels: 2,
      preSkip: 312,
      inputSampleRate: 44100,
      outputGain: -256,
      mappingFamily: 0,
    });
  });

  test("rejects what it cannot use", () => {
    const head = buildOpusHead({ channels: 1, preSkip: 0, inputSampleRate: 0 });
    expect(() => parseOpusHead(new TextEncoder().encode("OpusTags........"))).toThrow("not an OpusHead");
    expect(() => parseOpusHead(head.subarray(0, 18))).toThrow("too short");
    const v16 = head.slice();
    v16[8] = 16; // major version 1
    expect(() => parseOpusHead(v16)).toThrow("unsupported OpusHead version 16");
    const v15 = head.slice();
    v15[8] = 15; // minor versions stay readable
    expect(parseOpusHead(v15).version).toBe(15);
    const none = head.slice();
    none[9] = 0;
    expect(() => parseOpusHead(none)).toThrow("0 channels");
    const three = head.slice();
    three[9] = 3;
    expect(() => parseOpusHead(three)).toThrow("mapping family 0 with 3 channels");
    expect(() => buildOpusHead({ channels: 3, preSkip: 0, inputSampleRate: 0 })).toThrow("1 or 2 channels");
  });

  test("accepts mapping family 1 with its table", () => {
    const head = new Uint8Array(21 + 6);
    head.set(buildOpusHead({ channels: 2, preSkip: 312, inputSampleRate: 48000 }));
    head[9] = 6;
    head[18] = 1;
    expect(parseOpusHead(head)).toMatchObject({ channels: 6, mappingFamily: 1 });
    expect(() => parseOpusHead(head.subarray(0, 26))).toThrow("channel mapping table");
  });

  test("a family-1 head of 1 or 2 channels is carried only as one Opus stream, coupled when stereo, channels in order", () => {
    /** A mapping family 1 OpusHead: stream count, coupled count and mapping table as given. */
    const family1 = (channels: number, streams: number, coupled: number, mapping: number[]) => {
      const head = new Uint8Array(21 + channels);
      head.set(buildOpusHead({ channels: 2, preSkip: 312, inputSampleRate: 48000 }));
      head[9] = channels;
      head[18] = 1;
      head[19] = streams;
      head[20] = coupled;
      head.set(mapping, 21);
      return parseOpusHead(head);
    };
    const refusal = (channels: number) =>
      `OpusHead channel mapping family 1 with ${channels} channels cannot be carried: allowed is one Opus stream of 1 or 2 channels (family 0)`;
    // What ffmpeg -mapping_family 1 writes for mono and stereo: plain Opus packets.
    for (const head of [family1(1, 1, 0, [0]), family1(2, 1, 1, [0, 1])]) {
      expect(head.singleStream).toBe(true);
      expect(whyNotCarried(head)).toBeUndefined();
    }
    for (const [label, head] of [
      ["stereo, channels swapped", family1(2, 1, 1, [1, 0])],
      ["stereo, one uncoupled stream", family1(2, 1, 0, [0, 1])],
      ["stereo, two mono streams", family1(2, 2, 0, [0, 1])],
      ["stereo, both channels from the left", family1(2, 1, 1, [0, 0])],
    ] as const) {
      expect({ label, singleStream: head.singleStream, why: whyNotCarried(head) }).toEqual({ label, singleStream: false, why: refusal(2) });
    }
    expect(whyNotCarried(family1(1, 1, 1, [0]))).toBe(refusal(1)); // mono, yet "coupled"
  });
});

describe("OpusTags", () => {
  test("names the agent as vendor, with no comments by default", () => {
    const tags = buildOpusTags();
    expect(isOpusTags(tags)).toBe(true);
    expect(isOpusHead(tags)).toBe(false);
    const view = new DataView(tags.buffer);
    expect(new TextDecoder().decode(tags.subarray(0, 8))).toBe("OpusTags");
    expect(view.getUint32(8, true)).toBe(11);
    expect(new TextDecoder().decode(tags.subarray(12, 23))).toBe("audio-agent");
    expect(view.getUint32(23, true)).toBe(0);
    expect(tags.length).toBe(27);
  });

  test("is recognised by its 8-byte magic alone, and nothing else is", () => {
    const magic = new TextEncoder().encode("OpusTags");
    expect(isOpusTags(magic)).toBe(true);
    expect(isOpusTags(magic.subarray(0, 7))).toBe(false);
    expect(isOpusTags(new TextEncoder().encode("OpusTagz and more"))).toBe(false);
    expect(isOpusTags(buildOpusHead({ channels: 1, preSkip: 0, inputSampleRate: 48000 }))).toBe(false);
  });

  test("lays out comments as length-prefixed strings", () => {
    const tags = buildOpusTags("v", ["A=1", "TITLE=é"]);
    const view = new DataView(tags.buffer);
    expect(view.getUint32(13, true)).toBe(2);
    expect(view.getUint32(17, true)).toBe(3);
    expect(new TextDecoder().decode(tags.subarray(21, 24))).toBe("A=1");
    expect(view.getUint32(24, true)).toBe(8); // "é" is two UTF-8 bytes
    expect(new TextDecoder().decode(tags.subarray(28))).toBe("TITLE=é");
  });
});
