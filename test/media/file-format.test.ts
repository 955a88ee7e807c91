/**
 * A file source in the wrong format is told at start (exit 2, naming what the
 * file looks like), before the agent listens or waits for anyone: a WAV made
 * by ffmpeg, an .opus made by opusenc, a wire capture, and bytes of nothing known.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { concatBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { collectingWriter, pagesOf } from "../support/ogg.ts";
import { checkFileFormat } from "../../src/media/file-format.ts";
import { INPUT_MAGIC } from "../../src/protocol/index.ts";
import { encodeWith, ffmpegFrom, requireTool, runTool } from "../support/opus-fixtures.ts";
import { agentEnv, spawnAgent, stopAgents } from "../support/processes.ts";
import { drainFile } from "../support/sources.ts";
import { socketDir } from "../support/temp.ts";
import { indexedWire, writeWireFile } from "../support/wire.ts";

const defer = useCleanup();

function setup() {
  const t = socketDir(defer, "aa-fmt-");
  defer(() => stopAgents());
  const wav = t.path("tone.wav");
  const made = runTool([requireTool("ffmpeg", "ffmpeg"), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.2", "-ar", "48000", wav]);
  expect(made.exitCode, made.stderr).toBe(0);
  return { ...t, wav, opus: encodeWith(t.dir, "voice", []), sock: t.path("a.sock") };
}

/** Runs the agent; a run still going after 20 s (waiting for a client: the old behaviour) is killed and reported as such. */
async function runBounded(args: string[], env: Record<string, string> = {}): Promise<{ code: number | "still running"; stderr: string }> {
  const agent = spawnAgent(args, { env: agentEnv(env) });
  const code = await Promise.race([agent.exited, Bun.sleep(20_000).then(() => "still running" as const)]);
  agent.kill("SIGKILL");
  await agent.exited;
  return { code, stderr: agent.stderr };
}

describe("a file source is checked at start", () => {
  test("the wrong format exits 2 at once, naming what the file looks like; nothing listens", async () => {
    const t = setup();
    const wire = t.path("capture.wire");
    await writeWireFile(wire, 3);
    const unknown = t.path("notes.txt");
    writeFileSync(unknown, "hello, world\n");
    const cases: [string[], string][] = [
      [["output", "serve", "--source", t.opus], `source ${t.opus} (--format wire) looks like Ogg: use --format ogg`],
      [["output", "serve", "--source", t.opus, "--realtime"], `source ${t.opus} (--format wire) looks like Ogg: use --format ogg`],
      [["output", "serve", "--source", t.wav, "--format", "ogg"], `source ${t.wav} (--format ogg) looks like WAV, uncompressed audio: encode it to Ogg Opus (e.g. opusenc) and use --format ogg`],
      [["output", "serve", "--source", t.wav], `source ${t.wav} (--format wire) looks like WAV`],
      [["output", "serve", "--source", wire, "--format", "ogg"], `source ${wire} (--format ogg) looks like a wire capture: use --format wire`],
      [["output", "serve", "--source", unknown], `source ${unknown} (--format wire) is not a wire capture: it begins with "hell", not "UOKJ" or "IMKJ" (the JKOU or JKMI magic, little-endian)`],
      [["output", "serve", "--source", unknown, "--format", "ogg"], `source ${unknown} (--format ogg) is not Ogg: it begins with "hell", not "OggS"`],
      [["input", "send", "--source", t.opus], `source ${t.opus} (--format wire) looks like Ogg: use --format ogg`],
      [["input", "send", "--source", t.wav, "--format", "ogg"], `source ${t.wav} (--format ogg) looks like WAV`],
    ];
    const results = await Promise.all(cases.map(([args]) => runBounded([...args, "--socket", t.sock])));
    results.forEach((result, k) => {
      const [args, message] = cases[k]!;
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(result.stderr.trim().split("\n")).toEqual([expect.stringContaining(`audio-agent: ${message}`)]);
    });
    expect(existsSync(t.sock)).toBe(false);
  }, 60_000);

  test("in serve, the message names serve's own flag for the format (--output-format); nothing listens", async () => {
    const t = setup();
    const sockets = ["--output-socket", t.path("o.sock"), "--input-socket", t.path("i.sock"), "--input-sink", t.path("in.wire")];
    const cases: [string[], string][] = [
      [["--output-source", t.opus], `source ${t.opus} (--output-format wire) looks like Ogg: use --output-format ogg`],
      [["--output-source", t.wav, "--output-format", "ogg"], `source ${t.wav} (--output-format ogg) looks like WAV, uncompressed audio: encode it to Ogg Opus (e.g. opusenc) and use --output-format ogg`],
    ];
    for (const [args, message] of cases) {
      const result = await runBounded(["serve", ...args, ...sockets]);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(result.stderr.trim().split("\n")).toEqual([`audio-agent: ${message}`]);
    }
    expect(readdirSync(t.dir).filter((name) => name.endsWith(".sock") || name === "in.wire")).toEqual([]);
  }, 60_000);

  test("a format the user never typed is told by where it was set: the environment, the config file's key", async () => {
    const t = setup();
    const config = t.path("agent.json");
    writeFileSync(config, JSON.stringify({ output: { format: "wire" } }));
    const cases: [string[], Record<string, string>, string][] = [
      [["output", "serve", "--source", t.opus, "--socket", t.sock], { AUDIO_AGENT_FORMAT: "wire" }, `source ${t.opus} (--format wire, from environment AUDIO_AGENT_FORMAT) looks like Ogg: use --format ogg`],
      [["output", "serve", "--source", t.opus, "--socket", t.sock, "--config", config], {}, `source ${t.opus} (--format wire, from config "output.format" in ${config}) looks like Ogg: use --format ogg`],
      [["serve", "--output-source", t.opus, "--output-socket", t.sock, "--input-socket", t.path("i.sock"), "--input-sink", t.path("in.wire")], { AUDIO_AGENT_OUTPUT_FORMAT: "wire" }, `source ${t.opus} (--output-format wire, from environment AUDIO_AGENT_OUTPUT_FORMAT) looks like Ogg: use --output-format ogg`],
    ];
    for (const [args, env, message] of cases) {
      const result = await runBounded(args, env);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(result.stderr.trim().split("\n")).toEqual([`audio-agent: ${message}`]);
    }
  }, 60_000);

  test("the right format still streams (an .opus with --format ogg, a wire capture with the default)", async () => {
    const t = setup();
    const wire = t.path("capture.wire");
    await writeWireFile(wire, 3);
    for (const [source, format, frames] of [
      [t.opus, "ogg", 10],
      [wire, "wire", 3],
    ] as const) {
      const serve = spawnAgent(["output", "serve", "--source", source, "--format", format, "--socket", t.sock]);
      await serve.waitForStderr("listening");
      const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", t.path("out.wire"), "--count", String(frames)]);
      expect(await recv.exited, recv.stderr).toBe(0);
      expect(await serve.exited, serve.stderr).toBe(0);
    }
  }, 60_000);

  test("a capture of either channel passes as wire, and a file too short to tell is left to its source; as Ogg it is refused", async () => {
    const t = socketDir(defer, "aa-fmt-");
    const input = t.path("input.wire");
    writeFileSync(input, indexedWire(0, 3, 200, INPUT_MAGIC));
    await checkFileFormat(input, "wire");
    for (const [name, bytes, message] of [
      ["empty", "", "is empty: an Ogg Opus file begins with an OpusHead page"],
      ["three", "Ogg", 'is not Ogg: it is 3 byte(s) long, shorter than "OggS"'],
    ] as const) {
      writeFileSync(t.path(name), bytes);
      await checkFileFormat(t.path(name), "wire");
      await expect(checkFileFormat(t.path(name), "ogg")).rejects.toThrow(`source ${t.path(name)} (--format ogg) ${message}`);
    }
  });
});

describe("a wire capture whose magic is written the other way round", () => {
  // The magic is a little-endian u32 (PROTOCOL.md): "JKOU" is 55 4F 4B 4A on the wire, "UOKJ" read as text.
  // A capture that begins with the name's bytes, "JKOU" (the u32 written big-endian), is refused; the line
  // must then say what the first bytes should have been in the terms it tells what they are, not that
  // "JKOU" is not the JKOU magic.
  test("the refusal tells the bytes that were expected, in the spelling it shows the bytes found", async () => {
    const t = socketDir(defer, "aa-fmt-");
    for (const [name, bytes, expected] of [
      ["big-endian-output.wire", "JKOU", /UOKJ|55 4f 4b 4a/i],
      ["big-endian-input.wire", "JKMI", /IMKJ|49 4d 4b 4a/i],
    ] as const) {
      const path = t.path(name);
      writeFileSync(path, concatBytes([new TextEncoder().encode(bytes), new Uint8Array(13)]));
      const refused = await checkFileFormat(path, "wire").then(
        () => undefined,
        (e: Error) => e.message,
      );
      expect(refused).toStartWith(`source ${path} (--format wire) is not a wire capture: it begins with "${bytes}"`);
      expect({ name, refused }).toEqual({ name, refused: expect.stringMatching(expected) });
    }
  });
});

describe("an Ogg file source must hold Opus the wire can carry", () => {
  test("Ogg FLAC, Ogg Vorbis, an empty file, headers cut short and Opus of more than 2 channels exit 2 at once, naming what they are; nothing listens", async () => {
    const t = setup();
    const flac = ffmpegFrom(t.path("flac.ogg"), "sine=duration=1", ["-c:a", "flac"]);
    const vorbis = ffmpegFrom(t.path("vorbis.ogg"), "sine=duration=0.5", ["-c:a", "libvorbis", "-f", "ogg"]);
    const family255 = ffmpegFrom(t.path("quad.opus"), "sine=duration=0.2", ["-ac", "4", "-c:a", "libopus", "-mapping_family", "255"]);
    const family1 = encodeWith(t.dir, "six", [], { channels: 6 });
    const empty = t.path("empty.ogg");
    writeFileSync(empty, "");
    // The FLAC file's first page alone (its headers, without the rest): still not Opus.
    const flacBytes = new Uint8Array(readFileSync(flac));
    const flacHeaders = t.path("flac-headers.ogg");
    writeFileSync(flacHeaders, flacBytes.subarray(0, pagesOf(flacBytes)[0]!.size));
    // Cut inside the first page: no OpusHead to look at.
    const cut = t.path("cut.opus");
    writeFileSync(cut, new Uint8Array(readFileSync(t.opus)).subarray(0, 30));
    // Cut from the middle of a recording: its first page is audio, not a stream's beginning.
    const opusBytes = new Uint8Array(readFileSync(t.opus));
    const headless = t.path("headless.opus");
    writeFileSync(headless, opusBytes.subarray(pagesOf(opusBytes).slice(0, 2).reduce((n, p) => n + p.size, 0)));
    // An Ogg version no reader knows on its first page (RFC 3533 defines 0): it exited 1 at the first client.
    const version1 = t.path("version1.opus");
    writeFileSync(version1, opusBytes.map((b, i) => (i === 4 ? 1 : b)));
    const notOpus = (path: string, begins: string) => `source ${path} (--format ogg) is Ogg but not Opus (its first packet begins "${begins}")`;
    const cannot = (path: string, family: number, channels: number) =>
      `source ${path} (--format ogg) is Ogg Opus that cannot be sent: OpusHead channel mapping family ${family} with ${channels} channels cannot be carried: allowed is one Opus stream of 1 or 2 channels (family 0)`;
    const cases: [string[], string][] = [
      [["output", "serve", "--source", flac, "--format", "ogg"], notOpus(flac, "\\x7fFLAC\\x01\\x00\\x00")],
      [["output", "serve", "--source", flacHeaders, "--format", "ogg"], notOpus(flacHeaders, "\\x7fFLAC\\x01\\x00\\x00")],
      [["output", "serve", "--source", vorbis, "--format", "ogg", "--realtime"], notOpus(vorbis, "\\x01vorbis\\x00")],
      [["output", "serve", "--source", empty, "--format", "ogg"], `source ${empty} (--format ogg) is empty: an Ogg Opus file begins with an OpusHead page`],
      [["output", "serve", "--source", cut, "--format", "ogg"], `source ${cut} (--format ogg) is Ogg but ends inside its first page, before any OpusHead`],
      [["output", "serve", "--source", headless, "--format", "ogg"], `source ${headless} (--format ogg) is Ogg but its first page does not begin a stream (no OpusHead: cut from the middle of a recording?)`],
      [["output", "serve", "--source", version1, "--format", "ogg"], `source ${version1} (--format ogg) is not Ogg this agent reads: unsupported Ogg version 1 (RFC 3533 defines version 0 only) at byte 0`],
      [["output", "serve", "--source", family1, "--format", "ogg"], cannot(family1, 1, 6)],
      [["output", "serve", "--source", family255, "--format", "ogg"], cannot(family255, 255, 4)],
      [["input", "send", "--source", flac, "--format", "ogg"], notOpus(flac, "\\x7fFLAC\\x01\\x00\\x00")],
      [["input", "send", "--source", family1, "--format", "ogg"], cannot(family1, 1, 6)],
    ];
    const results = await Promise.all(cases.map(([args]) => runBounded([...args, "--socket", t.sock])));
    results.forEach((result, k) => {
      const [args, message] = cases[k]!;
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(result.stderr.trim().split("\n")).toEqual([`audio-agent: ${message}`]);
    });
    expect(existsSync(t.sock)).toBe(false);
  }, 60_000);

  test("mapping family 1 of a mono or stereo source (one stream, channels in order: plain Opus packets) passes", async () => {
    const t = setup();
    for (const channels of [1, 2]) {
      const made = ffmpegFrom(t.path(`family1-${channels}.opus`), "sine=duration=0.2", ["-ac", String(channels), "-c:a", "libopus", "-mapping_family", "1"]);
      await checkFileFormat(made, "ogg");
      const { frames, error } = await drainFile(made);
      expect(error).toBeUndefined();
      expect(frames.length).toBeGreaterThan(5);
    }
  });

  test("a non-Opus stream multiplexed ahead of the Opus one passes: the Opus stream is in the BOS group", async () => {
    const t = socketDir(defer, "aa-fmt-");
    const { writer, pages: other } = collectingWriter(77);
    writer.addPacket(new TextEncoder().encode("\x80theora-ish"), 0);
    writer.flushPage();
    const opus = new Uint8Array(readFileSync(encodeWith(t.dir, "voice", [])));
    const mixed = t.path("mixed.ogg");
    writeFileSync(mixed, concatBytes([other[0]!, opus]));
    await checkFileFormat(mixed, "ogg");
  });
});
