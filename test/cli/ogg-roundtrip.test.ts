/**
 * Ogg Opus through the whole agent: an opusenc file -> `output serve --format ogg`
 * -> Unix socket -> `output recv --format ogg` -> a new file, and the same on the
 * input channel (`input send` -> `input serve`). Every packet must arrive
 * byte-identical and in order, opusinfo must accept the result, and opusdec
 * must decode it to as many samples as the original.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import {
  CHANNELS,
  decodedSamples,
  FIXTURE_SAMPLES,
  FRAME_MS,
  key,
  makeFixtures,
  requireTool,
  runTool,
  type Fixtures,
} from "../support/opus-fixtures.ts";
import { spawnAgent, stopAgents } from "../support/processes.ts";
import { drainFile } from "../support/sources.ts";
import { tempDir } from "../support/temp.ts";

let fx: Fixtures;
let tmp: ReturnType<typeof tempDir>;
beforeAll(() => {
  fx = makeFixtures();
  tmp = tempDir("aa-ogg-");
});
afterAll(() => {
  fx?.cleanup();
  tmp?.cleanup();
});
afterEach(stopAgents);

async function packets(path: string) {
  const drained = await drainFile(path);
  expect(drained.error).toBeUndefined();
  return drained;
}

async function expectSameAudio(original: string, received: string, channels: number) {
  const before = await packets(original);
  const after = await packets(received);
  expect(after.frames.length).toBe(before.frames.length);
  after.frames.forEach((f, i) => expect(f.payload).toEqual(before.frames[i]!.payload));

  const info = runTool([requireTool("opusinfo", "opus-tools"), received]);
  expect(info.exitCode).toBe(0);
  expect(info.stdout).toContain(`Channels: ${channels}`);
  expect(decodedSamples(received, tmp.dir)).toBe(FIXTURE_SAMPLES);
}

describe("Ogg Opus round trip through the agent", () => {
  for (const channels of CHANNELS) {
    for (const frameMs of FRAME_MS) {
      const name = key(channels, frameMs);

      test(`output channel, ${name}: serve -> socket -> recv keeps every packet`, async () => {
        const socket = join(tmp.dir, `o-${name}.sock`);
        const received = join(tmp.dir, `out-${name}.opus`);
        const server = spawnAgent(["output", "serve", "--socket", socket, "--source", fx.opus.get(name)!, "--format", "ogg"]);
        const client = spawnAgent(["output", "recv", "--socket", socket, "--sink", received, "--format", "ogg", "--once"]);
        expect(await client.exited).toBe(0);
        expect(await server.exited).toBe(0);
        await expectSameAudio(fx.opus.get(name)!, received, channels);
      });

      test(`input channel, ${name}: send -> socket -> serve keeps every packet, Config from the OpusHead`, async () => {
        const socket = join(tmp.dir, `i-${name}.sock`);
        const received = join(tmp.dir, `in-${name}.opus`);
        const server = spawnAgent(["input", "serve", "--socket", socket, "--sink", received, "--format", "ogg", "--once"]);
        await server.waitForStderr("listening");
        const client = spawnAgent(["input", "send", "--socket", socket, "--source", fx.opus.get(name)!, "--format", "ogg"]);
        expect(await client.exited).toBe(0);
        expect(await server.exited).toBe(0);
        expect(server.stderr).toContain(`channels=${channels} frameSize=${frameMs * 48}`);
        await expectSameAudio(fx.opus.get(name)!, received, channels);
      });
    }
  }
});
