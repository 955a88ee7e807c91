/**
 * RFC 7845 section 5.1, OpusHead 'Output Channel Count' C: "This is the number of output
 * channels. This might be different than the number of encoded channels, which can change on a
 * packet-by-packet basis." A stereo libopus encoder codes its packets mono (TOC stereo bit 0,
 * RFC 6716 section 3.1) whenever its bitrate is low; the stream stays stereo. The output channel
 * carries no Config, and `output recv --format ogg` takes the OpusHead's channel count from the
 * first packet's stereo bit: a stereo stream is recorded as a mono file.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseOpusHead } from "../../src/media/opus-head.ts";
import { packetsOf } from "../support/ogg.ts";
import { decodedSamples, encodeWith, opusinfo } from "../support/opus-fixtures.ts";
import { agentEnv, spawnAgent, stopAgents } from "../support/processes.ts";
import { tempDir } from "../support/temp.ts";

let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  tmp = tempDir("aa-ogg-channels-");
});
afterAll(() => tmp?.cleanup());
afterEach(stopAgents);

describe("OpusHead channel count of what output recv --format ogg writes", () => {
  test("a stereo opusenc file at 16 kbit/s (every packet coded mono): the recording's OpusHead still says 2 channels, as the original's", async () => {
    const original = encodeWith(tmp.dir, "low-rate", ["--bitrate", "16", "--framesize", "20"], { channels: 2, samples: 48000 });
    const packets = packetsOf(new Uint8Array(readFileSync(original)));
    expect(parseOpusHead(packets[0]!).channels).toBe(2);
    // What libopus does at this rate: every packet's TOC stereo bit is 0.
    expect(packets.slice(2).filter((p) => (p[0]! & 0x04) !== 0).length).toBe(0);

    const socket = join(tmp.dir, "low-rate.sock");
    const received = join(tmp.dir, "low-rate-received.opus");
    const server = spawnAgent(["output", "serve", "--socket", socket, "--source", original, "--format", "ogg"]);
    const client = spawnAgent(["output", "recv", "--socket", socket, "--sink", received, "--format", "ogg", "--once"]);
    expect(await client.exited).toBe(0);
    expect(await server.exited).toBe(0);

    const copy = packetsOf(new Uint8Array(readFileSync(received)));
    expect(copy.slice(2)).toEqual(packets.slice(2));
    expect(opusinfo(original).stdout).toContain("Channels: 2");
    expect(parseOpusHead(copy[0]!).channels).toBe(2);
    expect(opusinfo(received).stdout).toContain("Channels: 2");
  }, 60_000);

  test("output recv --channels 1 (or AUDIO_AGENT_CHANNELS=1, or the config file's \"output\" section) writes a mono OpusHead over the same packets; opusdec plays them as mono, every sample", async () => {
    const original = fx1();
    const packets = packetsOf(new Uint8Array(readFileSync(original)));
    const config = join(tmp.dir, "mono-config.json");
    writeFileSync(config, JSON.stringify({ output: { channels: 1 } }));
    const ways: [string, string[], Record<string, string>][] = [
      ["flag", ["--channels", "1"], {}],
      ["env", [], { AUDIO_AGENT_CHANNELS: "1" }],
      ["config", ["--config", config], {}],
    ];
    for (const [way, flags, env] of ways) {
      const socket = join(tmp.dir, `mono-${way}.sock`);
      const received = join(tmp.dir, `mono-${way}.opus`);
      const server = spawnAgent(["output", "serve", "--socket", socket, "--source", original, "--format", "ogg"]);
      const client = spawnAgent(["output", "recv", "--socket", socket, "--sink", received, "--format", "ogg", "--once", ...flags], { env: agentEnv(env) });
      expect(await client.exited, client.stderr).toBe(0);
      expect(await server.exited).toBe(0);
      const copy = packetsOf(new Uint8Array(readFileSync(received)));
      expect(copy.slice(2)).toEqual(packets.slice(2));
      expect({ way, channels: parseOpusHead(copy[0]!).channels }).toEqual({ way, channels: 1 });
      expect(opusinfo(received).stdout).toContain("Channels: 1");
      expect(decodedSamples(received, tmp.dir)).toBe((packets.length - 2) * 960 - 312);
    }
  }, 60_000);
});

/** A mono opusenc file, 20 ms packets. */
function fx1(): string {
  return encodeWith(tmp.dir, "mono", ["--framesize", "20"], { channels: 1, samples: 48000 });
}
