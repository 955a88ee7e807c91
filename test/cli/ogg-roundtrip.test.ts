/**
 * Ogg Opus through the whole agent: an opusenc file -> `output serve --format ogg`
 * -> Unix socket -> `output recv --format ogg` -> a new file, and the same on the
 * input channel (`input send` -> `input serve`). Every packet must arrive
 * byte-identical and in order, opusinfo must accept the result, and opusdec
 * must decode it to as many samples as the original.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { failureLine, logFields } from "../support/agent-log.ts";
import { metricsUrl, parseSamples, promtoolCheck, samples, scrape, scrapeUntil } from "../support/metrics.ts";
import { makeFifo, writeIntoFifo } from "../support/fifo.ts";
import { concatBytes } from "../support/bytes.ts";
import { packetsOf, pagesOf, trimmedWhole } from "../support/ogg.ts";
import {
  CHANNELS,
  decodedSamples,
  encodeWith,
  expectOggzValid,
  FIXTURE_SAMPLES,
  FRAME_MS,
  key,
  makeFixtures,
  opusinfo,
  OPUSINFO_CLEAN,
  requireTool,
  type Fixtures,
} from "../support/opus-fixtures.ts";
import { AGENT, agentEnv, runAgent, spawnAgent, start, stopAgents, type Spawned } from "../support/processes.ts";
import { drainFile } from "../support/sources.ts";
import { until } from "../support/wait.ts";
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

const payloads = (frames: { payload: Uint8Array }[]) => frames.map((f) => f.payload);

/** One session of a service: input serve (with `flags`, such as --append) on `received`, an input send of the Ogg file `source`, ended by Stop, then SIGTERM. */
async function stoppedSession(socket: string, received: string, source: string, ...flags: string[]): Promise<void> {
  const server = spawnAgent(["input", "serve", "--socket", socket, "--sink", received, "--format", "ogg", ...flags]);
  await server.waitForStderr("listening");
  const client = spawnAgent(["input", "send", "--socket", socket, "--source", source, "--format", "ogg"]);
  expect(await client.exited).toBe(0);
  await until(() => server.stderr.includes("session ended by Stop"), "the session ended");
  server.kill("SIGTERM");
  expect(await server.exited).toBe(0);
}

async function expectSameAudio(original: string, received: string, channels: number) {
  const before = await packets(original);
  const after = await packets(received);
  expect(after.frames.length).toBe(before.frames.length);
  after.frames.forEach((f, i) => expect(f.payload).toEqual(before.frames[i]!.payload));

  const info = opusinfo(received);
  expect(info.verdict.code).toBe(0);
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
        // The output channel carries no Config: the recording's channels are told (stereo unless).
        const told = channels === 2 ? [] : ["--channels", String(channels)];
        const client = spawnAgent(["output", "recv", "--socket", socket, "--sink", received, "--format", "ogg", "--once", ...told]);
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

describe("damaged Ogg Opus files through the agent", () => {
  const read = (path: string) => new Uint8Array(readFileSync(path));
  /** As a live encoder writes them: a page every 20 ms, one packet a page. */
  const live = (name: string, channels = 2) => encodeWith(tmp.dir, name, ["--framesize", "20", "--max-delay", "20"], { channels, samples: 48000 });

  test("--lenient with one byte flipped in a page body: the page is skipped with a warning, and counted in the stopped line of output serve and input send", async () => {
    const original = live("flip");
    const bytes = read(original);
    const page = pagesOf(bytes)[5]!;
    bytes[page.offset + page.size - 3]! ^= 0x40;
    const flipped = join(tmp.dir, "flipped.opus");
    writeFileSync(flipped, bytes);
    const all = (await packets(original)).frames.length;

    const socket = join(tmp.dir, "lenient-o.sock");
    const server = spawnAgent(["output", "serve", "--socket", socket, "--source", flipped, "--format", "ogg", "--lenient"]);
    const client = spawnAgent(["output", "recv", "--socket", socket, "--sink", join(tmp.dir, "lenient.wire"), "--once"]);
    expect(await client.exited).toBe(0);
    expect(await server.exited, server.stderr).toBe(0);
    expect(logFields(server.stderr, "source", "skipped a page with a bad CRC")).toMatchObject({ offset: String(page.offset), skipped_pages: "1" });
    expect(logFields(server.stderr, "output-server", "stopped")).toMatchObject({
      delivered: String(all - 1),
      source_skipped_pages: "1",
      source_missing_pages: "0",
      source_other_stream_pages: "0",
    });

    const inSocket = join(tmp.dir, "lenient-i.sock");
    const inServer = spawnAgent(["input", "serve", "--socket", inSocket, "--sink", "/dev/null", "--once"]);
    await inServer.waitForStderr("listening");
    const sender = spawnAgent(["input", "send", "--socket", inSocket, "--source", flipped, "--format", "ogg", "--lenient"]);
    expect(await sender.exited, sender.stderr).toBe(0);
    expect(await inServer.exited).toBe(0);
    expect(sender.stderr).toContain("WARN  source: skipped a page with a bad CRC");
    expect(logFields(sender.stderr, "input-client", "stopped")).toMatchObject({ frames: String(all - 1), dropped: "0", source_skipped_pages: "1" });
  }, 60_000);

  // README, Security: log lines of one kind are cut to 10 per 10 s "while every event still counts in the
  // metrics" (and the Logs section: "The counters in /metrics miss nothing"). A --lenient source's skipped
  // pages are such events: a warning each, held back after 10, yet counted only in the final stopped line,
  // so while the agent runs (a FIFO source never ends) /metrics and /healthz have no count of them at all.
  test("--lenient skipping bad pages, more than the log's rate limit tells: the skipped pages are counted in /metrics while the agent runs", async () => {
    const bytes = read(live("many-flips"));
    // Every other audio page from the fifth on is damaged: dozens of skips per pass of --loop.
    const pages = pagesOf(bytes);
    for (let i = 4; i < pages.length - 1; i += 2) bytes[pages[i]!.offset + pages[i]!.size - 3]! ^= 0x40;
    const flipped = join(tmp.dir, "many-flipped.opus");
    writeFileSync(flipped, bytes);

    const socket = join(tmp.dir, "lenient-m.sock");
    const server = spawnAgent(["output", "serve", "--socket", socket, "--source", flipped, "--format", "ogg", "--lenient", "--loop", "--metrics", "0"]);
    const base = await metricsUrl(server);
    spawnAgent(["output", "recv", "--socket", socket, "--sink", "/dev/null"]);
    // The log has given up telling them one by one.
    await server.waitForStderr(/more "skipped a page with a bad CRC" lines/, 30_000);

    const text = await scrape(base);
    const skipped = parseSamples(text).filter((s) => s.name === "audio_agent_source_skipped_pages_total" && s.labels.channel === "output");
    expect(skipped.length, "a counter of the source's skipped pages in /metrics").toBe(1);
    const counted = skipped[0]!.value;
    expect(counted).toBeGreaterThan(10);
    // The stopped line counts them too, and no fewer than the scrape before it.
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    expect(Number(logFields(server.stderr, "output-server", "stopped").source_skipped_pages)).toBeGreaterThanOrEqual(counted);
  }, 60_000);

  // A FIFO source (the device's encoder pipe) never ends: /metrics is where its skipped pages are counted.
  // The counter is there from the first scrape (before the first writer), belongs to the output channel only
  // in serve (both channels, one registry), adds up every writer's stream, and the stopped line says the same.
  test("serve with a --lenient Ogg FIFO source: its skipped pages are an output counter from the start, added up over writers", async () => {
    const bytes = read(live("fifo-flip"));
    const page = pagesOf(bytes)[5]!;
    bytes[page.offset + page.size - 3]! ^= 0x40;
    const flipped = join(tmp.dir, "fifo-flipped.opus");
    writeFileSync(flipped, bytes);
    const fifo = makeFifo(join(tmp.dir, "encoder.fifo"));
    const agent = spawnAgent([
      "serve", "--output-source", fifo, "--output-format", "ogg", "--output-lenient", "--input-sink", "/dev/null",
      "--output-socket", join(tmp.dir, "fo.sock"), "--input-socket", join(tmp.dir, "fi.sock"), "--metrics", "0",
    ]);
    const base = await metricsUrl(agent);
    const skipped = (text: string) => samples(text, "audio_agent_source_skipped_pages_total");

    const before = await scrape(base);
    expect(skipped(before)).toEqual([{ name: "audio_agent_source_skipped_pages_total", labels: { channel: "output" }, value: 0 }]);
    // The input channel has no source; the output channel no sessions of the input server.
    expect(parseSamples(before).filter((s) => s.name.startsWith("audio_agent_source_") && s.labels.channel !== "output")).toEqual([]);
    expect(samples(before, "audio_agent_heartbeats_total").map((s) => s.labels)).toEqual([{ channel: "input" }]);
    const { code, output } = await promtoolCheck(before);
    expect(output).toBe("");
    expect(code).toBe(0);

    expect(await writeIntoFifo(fifo, flipped)).toBe(0);
    await scrapeUntil(base, (t) => skipped(t)[0]?.value === 1, "the first writer's skipped page");
    expect(await writeIntoFifo(fifo, flipped)).toBe(0);
    await scrapeUntil(base, (t) => skipped(t)[0]?.value === 2, "both writers' skipped pages");

    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    const stopped = agent.stderr.split("\n").find((l) => l.includes("output-server: stopped"))!;
    expect(stopped.match(/source_skipped_pages=/g), stopped).toHaveLength(1);
    expect(logFields(agent.stderr, "output-server", "stopped").source_skipped_pages).toBe("2");
  }, 60_000);

  test("input send with a --lenient Ogg FIFO source: its skipped pages are an input counter from the start, while it waits for its first writer", async () => {
    const bytes = read(live("fifo-flip-in"));
    const page = pagesOf(bytes)[5]!;
    bytes[page.offset + page.size - 3]! ^= 0x40;
    const flipped = join(tmp.dir, "fifo-flipped-in.opus");
    writeFileSync(flipped, bytes);
    const fifo = makeFifo(join(tmp.dir, "mic.fifo"));
    const socket = join(tmp.dir, "fifo-in.sock");
    const server = spawnAgent(["input", "serve", "--socket", socket, "--sink", "/dev/null"]);
    await server.waitForStderr("listening");
    const sender = spawnAgent(["input", "send", "--socket", socket, "--source", fifo, "--format", "ogg", "--lenient", "--metrics", "0"]);
    const base = await metricsUrl(sender);
    const skipped = (text: string) => samples(text, "audio_agent_source_skipped_pages_total");
    expect(skipped(await scrape(base))).toEqual([{ name: "audio_agent_source_skipped_pages_total", labels: { channel: "input" }, value: 0 }]);
    expect(await writeIntoFifo(fifo, flipped)).toBe(0);
    await scrapeUntil(base, (t) => skipped(t)[0]?.value === 1, "the writer's skipped page");
    sender.kill("SIGTERM");
    expect(await sender.exited).toBe(0);
    expect(logFields(sender.stderr, "input-client", "stopped").source_skipped_pages).toBe("1");
  }, 60_000);

  test("--lenient with bytes before the first page (a file a tool wrote a header in front of): told and passed over, every frame sent; strict refuses it at start", async () => {
    const original = live("lead");
    const all = (await packets(original)).frames.length;
    const led = join(tmp.dir, "led.opus");
    writeFileSync(led, concatBytes([new TextEncoder().encode("ID3 junk in front of the first page"), read(original)]));
    const socket = join(tmp.dir, "led.sock");

    const strict = await runAgent(["output", "serve", "--socket", socket, "--source", led, "--format", "ogg"]);
    expect(strict.code).toBe(2);
    expect(strict.stderr).toBe(`audio-agent: source ${led} (--format ogg) is not Ogg: it begins with "ID3 ", not "OggS"\n`);

    const server = spawnAgent(["output", "serve", "--socket", socket, "--source", led, "--format", "ogg", "--lenient"]);
    const client = spawnAgent(["output", "recv", "--socket", socket, "--sink", join(tmp.dir, "led.wire"), "--once"]);
    expect(await client.exited, client.stderr).toBe(0);
    expect(await server.exited, server.stderr).toBe(0);
    expect(logFields(server.stderr, "source", "passed over bytes that begin no page")).toMatchObject({ offset: "0", bytes: "35" });
    expect(logFields(server.stderr, "output-server", "stopped")).toMatchObject({ delivered: String(all), source_skipped_bytes: "35", source_skipped_pages: "0" });

    // Junk and no page in the bytes a start-up check reads: still refused, naming how far it looked.
    const junk = join(tmp.dir, "junk.opus");
    writeFileSync(junk, new Uint8Array(300_000).fill(0x41));
    const refused = await runAgent(["output", "serve", "--socket", socket, "--source", junk, "--format", "ogg", "--lenient"]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^audio-agent: source .*junk\.opus \(--format ogg\) is not Ogg: it begins with "AAAA", and no "OggS" follows in its first \d+ bytes\n$/);
  }, 60_000);

  test("a killed encoder's file (no end-of-stream page) with the next encoder's stream after it (cat): both are sent, with a warning", async () => {
    const first = read(live("killed"));
    const second = live("restarted", 1);
    const cut = first.subarray(0, pagesOf(first).at(-3)!.offset);
    const joined = join(tmp.dir, "joined.opus");
    writeFileSync(joined, concatBytes([cut, read(second)]));
    const frames = pagesOf(cut).length - 2 + (await packets(second)).frames.length;

    const socket = join(tmp.dir, "chained.sock");
    const server = spawnAgent(["output", "serve", "--socket", socket, "--source", joined, "--format", "ogg"]);
    const client = spawnAgent(["output", "recv", "--socket", socket, "--sink", join(tmp.dir, "chained.wire"), "--once"]);
    expect(await client.exited).toBe(0);
    expect(await server.exited, server.stderr).toBe(0);
    expect(server.stderr).toContain("WARN  source: stream ended without its end-of-stream page; reading the stream chained after it");
    expect(logFields(server.stderr, "output-server", "stopped")).toMatchObject({ delivered: String(frames), dropped: "0" });
  }, 60_000);

  test("a file that ends part-way through a page header fails as truncated, naming the offset (exit 1), after its frames went out", async () => {
    const whole = read(fx.opus.get(key(2, 20))!);
    const cut = join(tmp.dir, "header-cut.opus");
    writeFileSync(cut, concatBytes([whole, whole.subarray(0, 20)]));
    const socket = join(tmp.dir, "cut.sock");
    const server = spawnAgent(["output", "serve", "--socket", socket, "--source", cut, "--format", "ogg"]);
    const client = spawnAgent(["output", "recv", "--socket", socket, "--sink", join(tmp.dir, "cut.wire"), "--once"]);
    expect(await client.exited).toBe(0);
    expect(await server.exited).toBe(1);
    expect(failureLine(server.stderr)).toBe(`audio-agent: ogg source ${cut}: truncated: input ends 7 byte(s) short of the page at byte ${whole.length}`);
    expect(logFields(server.stderr, "output-server", "stopped").delivered).toBe(String((await packets(fx.opus.get(key(2, 20))!)).frames.length));
  }, 60_000);
});

/**
 * Two `input send` sessions into the listening `server` at `socket`, a stereo file's and then a
 * mono one's (whose Config begins a chained stream with other channels), then SIGTERM to the
 * server: the packets each file sent.
 */
async function stereoThenMono(server: Spawned, socket: string): Promise<number[]> {
  const sources = [fx.opus.get(key(2, 20))!, fx.opus.get(key(1, 20))!];
  for (const [n, source] of sources.entries()) {
    const client = spawnAgent(["input", "send", "--socket", socket, "--source", source, "--format", "ogg"]);
    expect(await client.exited).toBe(0);
    await until(() => (server.stderr.match(/session ended by Stop/g) ?? []).length === n + 1, "the session ended");
  }
  server.kill("SIGTERM");
  expect(await server.exited).toBe(0);
  return Promise.all(sources.map(async (source) => (await packets(source)).frames.length));
}

describe("the end of what the Ogg sink writes", () => {
  // RFC 7845 section 4 (and 4.4, end trimming): the page flagged end-of-stream gives the stream's
  // last granule position, the end of its audio; RFC 3533: granule -1 says no packet ends on the
  // page. A daemon `input serve --format ogg` (no --once) flushes at each session's end, which closes
  // the page of the last packets; stopped later (SIGTERM), close() then writes its end-of-stream
  // flag on a page of its own with no packet and granule -1. liboggz's validator rejects the
  // file ("eos marked on page with no completed packets"), and the stream's end is stated nowhere.
  test("input serve (a daemon, no --once), a session ended by Stop, then SIGTERM: the end-of-stream page ends a packet and carries the last granule; oggz-validate accepts the file", async () => {
    const source = fx.opus.get(key(2, 20))!;
    const socket = join(tmp.dir, "eos-daemon.sock");
    const received = join(tmp.dir, "eos-daemon.opus");
    await stoppedSession(socket, received, source);

    // Every packet arrived, in order (read back, the silence the end trims whole is not audio) ...
    const sent = (await packets(source)).frames;
    const recorded = (await packets(received)).frames;
    expect(recorded).toEqual(sent);
    const samples = sent.length * 20 * 48;
    // ... and the stream's last page ends it: a packet on it (silence, trimmed whole), and the granule of the last sample.
    const bytes = new Uint8Array(readFileSync(received));
    expect(packetsOf(bytes).length).toBe(2 + sent.length + 1);
    expect(trimmedWhole(bytes)).toBe(1);
    const last = pagesOf(bytes).at(-1)!;
    expect(last.flags & 0x04).toBe(0x04);
    expect({ segments: last.segments > 0, granule: last.granule }).toEqual({ segments: true, granule: samples });
    expect(decodedSamples(received, tmp.dir)).toBe(samples - 312);

    expectOggzValid(received);
  }, 60_000);

  test("input serve (a daemon): a session ended by Stop, then one whose Config has other channels (a chained stream begun after the flush), then SIGTERM: each stream's end-of-stream page ends a packet at its last granule; oggz-validate accepts the file, opusdec plays exactly what was received", async () => {
    const socket = join(tmp.dir, "eos-chain.sock");
    const received = join(tmp.dir, "eos-chain.opus");
    const server = spawnAgent(["input", "serve", "--socket", socket, "--sink", received, "--format", "ogg"]);
    await server.waitForStderr("listening");
    const counts = await stereoThenMono(server, socket);
    const pages = pagesOf(new Uint8Array(readFileSync(received)));
    const serials = [...new Set(pages.map((p) => p.serial))];
    expect(serials.length).toBe(2);
    serials.forEach((serial, i) => {
      const last = pages.filter((p) => p.serial === serial).at(-1)!;
      expect({ stream: i, eos: last.flags & 0x04, ends: last.table.some((lacing) => lacing < 255), granule: last.granule }).toEqual({ stream: i, eos: 0x04, ends: true, granule: counts[i]! * 960 });
    });
    expectOggzValid(received);
    expect(decodedSamples(received, tmp.dir)).toBe(counts[0]! * 960 - 312 + counts[1]! * 960 - 312);
  }, 60_000);

  test("input serve --sink - into `opusdec --force-stereo - -` (README's player pipeline): a stereo session, then a mono one (a chained stream with other channels), both decoded", async () => {
    const socket = join(tmp.dir, "player.sock");
    const wav = join(tmp.dir, "player.raw");
    const opusdec = requireTool("opusdec", "opus-tools");
    // The agent is the process signalled (exec); opusdec reads its stdout to the end and writes what it decoded.
    const cmd = `exec "$@" > >(exec '${opusdec}' --force-stereo - - > '${wav}' 2>/dev/null)`;
    const server = start(["bash", "-c", cmd, "bash", ...AGENT, "input", "serve", "--socket", socket, "--sink", "-", "--format", "ogg"], { env: agentEnv() });
    await server.waitForStderr("listening");
    const counts = await stereoThenMono(server, socket);
    const expected = counts[0]! * 960 - 312 + counts[1]! * 960 - 312;
    // To stdout opusdec writes raw samples: two channels of 16 bits.
    const decoded = () => readFileSync(wav).length / 4;
    await until(() => decoded() === expected, `opusdec's ${expected} samples`).catch(() => {});
    expect(decoded()).toBe(expected);
  }, 60_000);

  test("input serve --append, started again on its recording (a restarted service): the next run's stream follows the last one's end, chained; oggz-validate accepts the file, opusdec plays both", async () => {
    const source = fx.opus.get(key(2, 20))!;
    const socket = join(tmp.dir, "append.sock");
    const received = join(tmp.dir, "append.opus");
    for (let run = 0; run < 2; run++) await stoppedSession(socket, received, source, "--append");
    const sent = (await packets(source)).frames;
    expect(payloads((await packets(received)).frames)).toEqual([...payloads(sent), ...payloads(sent)]);
    const pages = pagesOf(new Uint8Array(readFileSync(received)));
    expect(new Set(pages.map((p) => p.serial)).size).toBe(2);
    expectOggzValid(received);
    expect(decodedSamples(received, tmp.dir)).toBe(2 * (sent.length * 960 - 312));
  }, 60_000);

  test("input serve --append, started and stopped with no session in between (a service restarted while nobody speaks): the recording is left byte for byte", async () => {
    const source = fx.opus.get(key(2, 20))!;
    const socket = join(tmp.dir, "append-idle.sock");
    const received = join(tmp.dir, "append-idle.opus");
    await stoppedSession(socket, received, source, "--append");
    const recorded = readFileSync(received);
    for (let run = 0; run < 2; run++) {
      const server = spawnAgent(["input", "serve", "--socket", socket, "--sink", received, "--format", "ogg", "--append"]);
      await server.waitForStderr("listening");
      server.kill("SIGTERM");
      expect(await server.exited).toBe(0);
    }
    expect(readFileSync(received).equals(recorded)).toBe(true);
  }, 60_000);

  test("input serve --append, killed (SIGKILL) after a session and started again on its recording: the first stream's last page is marked as its end first, so oggz-validate accepts the file; opusdec plays both", async () => {
    const source = fx.opus.get(key(2, 20))!;
    const socket = join(tmp.dir, "append-killed.sock");
    const received = join(tmp.dir, "append-killed.opus");
    const server = spawnAgent(["input", "serve", "--socket", socket, "--sink", received, "--format", "ogg", "--append"]);
    await server.waitForStderr("listening");
    const client = spawnAgent(["input", "send", "--socket", socket, "--source", source, "--format", "ogg"]);
    expect(await client.exited).toBe(0);
    await until(() => server.stderr.includes("session ended by Stop"), "the session ended");
    // The session's end writes its last page in the thread pool: killed once the file holds it all.
    const sent = (await packets(source)).frames;
    await until(async () => (await drainFile(received)).frames.length === sent.length, "the session's audio in the file");
    server.kill("SIGKILL");
    await server.exited;
    const killed = pagesOf(new Uint8Array(readFileSync(received)));
    expect(killed.some((page) => (page.flags & 4) !== 0)).toBe(false);
    await stoppedSession(socket, received, source, "--append");
    expect(payloads((await packets(received)).frames)).toEqual([...payloads(sent), ...payloads(sent)]);
    const pages = pagesOf(new Uint8Array(readFileSync(received)));
    expect(pages.filter((page) => (page.flags & 4) !== 0).map((page) => page.offset)).toEqual([killed.at(-1)!.offset, pages.at(-1)!.offset]);
    expectOggzValid(received);
    expect(opusinfo(received).verdict).toEqual(OPUSINFO_CLEAN);
    expect(decodedSamples(received, tmp.dir)).toBe(2 * (sent.length * 960 - 312));
  }, 60_000);

  test("--append to a recording whose last page was cut short (the agent killed mid-write, the power lost): the half page is cut away first, so the agent's own source reads the file strict, both streams", async () => {
    const source = fx.opus.get(key(2, 20))!;
    const socket = join(tmp.dir, "append-cut.sock");
    const received = join(tmp.dir, "append-cut.opus");
    await stoppedSession(socket, received, source, "--append");
    const first = new Uint8Array(readFileSync(received));
    const lastPage = pagesOf(first).at(-1)!;
    // The end-of-stream page's last 10 bytes never reached the disk.
    writeFileSync(received, first.subarray(0, first.length - 10));
    await stoppedSession(socket, received, source, "--append");
    const pages = pagesOf(new Uint8Array(readFileSync(received)));
    expect(pages.every((page) => page.crcValid)).toBe(true);
    expect(pages.filter((page) => page.offset < lastPage.offset).length).toBe(pagesOf(first.subarray(0, lastPage.offset)).length);
    expect(new Set(pages.map((p) => p.serial)).size).toBe(2);
    // Strict, the agent's source reads the first stream's whole pages, then every packet of the second.
    const sent = (await packets(source)).frames;
    const keptFile = join(tmp.dir, "append-cut-kept.opus");
    writeFileSync(keptFile, first.subarray(0, lastPage.offset));
    const kept = (await packets(keptFile)).frames;
    expect(payloads((await packets(received)).frames)).toEqual([...payloads(kept), ...payloads(sent)]);
  }, 60_000);
});
