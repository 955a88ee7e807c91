import { describe, expect, test } from "bun:test";
import { decodeConfigPayload, encodeConfigPayload, isOpusConfig, sameAudioConfig } from "../../src/protocol/index.ts";
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

describe("isOpusConfig", () => {
  test("a decoder's rate, 1 or 2 channels, a frame of one of Opus's durations at that rate", () => {
    const cases = {
      opus: [
        { sampleRate: 48000, channels: 2, frameSize: 960 },
        { sampleRate: 48000, channels: 1, frameSize: 120 },
        { sampleRate: 48000, channels: 2, frameSize: 5760 },
        { sampleRate: 16000, channels: 1, frameSize: 320 },
        { sampleRate: 8000, channels: 2, frameSize: 20 },
        { sampleRate: 12000, channels: 1, frameSize: 720 },
        { sampleRate: 48000, channels: 2, frameSize: 3840 },
        { sampleRate: 48000, channels: 2, frameSize: 4800 },
      ],
      "not opus": [
        { sampleRate: 0, channels: 0, frameSize: 0 },
        { sampleRate: 44100, channels: 2, frameSize: 882 },
        { sampleRate: 48000, channels: 3, frameSize: 960 },
        { sampleRate: 48000, channels: 0, frameSize: 960 },
        { sampleRate: 48000, channels: 2, frameSize: 1000 },
        { sampleRate: 48000, channels: 2, frameSize: 0 },
        { sampleRate: 48000, channels: 2, frameSize: 6720 },
        { sampleRate: 2 ** 32 - 1, channels: 7, frameSize: 5 },
      ],
    };
    for (const [kind, configs] of Object.entries(cases)) {
      for (const config of configs) expect([config, isOpusConfig(config)]).toEqual([config, kind === "opus"]);
    }
  });
});

describe("sameAudioConfig", () => {
  // The input client sends a Config again only when this says the audio changed.
  test("the same rate, channels and frame size are the same audio; a difference in any one field is not", () => {
    const config = { sampleRate: 48000, channels: 2, frameSize: 960 };
    expect(sameAudioConfig(config, { ...config })).toBe(true);
    for (const change of [{ sampleRate: 16000 }, { channels: 1 }, { frameSize: 480 }]) {
      expect([change, sameAudioConfig(config, { ...config, ...change })]).toEqual([change, false]);
      expect([change, sameAudioConfig({ ...config, ...change }, config)]).toEqual([change, false]);
    }
    // Two fields changed, one kept: still different audio.
    expect(sameAudioConfig(config, { sampleRate: 48000, channels: 1, frameSize: 480 })).toBe(false);
  });
});
