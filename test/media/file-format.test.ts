/**
 * A file source in the wrong format is told at start (exit 2, naming what the
 * file looks like), before the agent listens or waits for anyone: a WAV made
 * by ffmpeg, an .opus made by opusenc, a wire capture, and bytes of nothing known.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { useCleanup } from "../support/cleanup.ts";
import { checkFileFormat } from "../../src/media/file-format.ts";
import { INPUT_MAGIC } from "../../src/protocol/index.ts";
import { encodeWith, requireTool, runTool } from "../support/opus-fixtures.ts";
import { spawnAgent, stopAgents } from "../support/processes.ts";
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
async function runBounded(args: string[]): Promise<{ code: number | "still running"; stderr: string }> {
  const agent = spawnAgent(args);
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
      [["output", "serve", "--source", unknown], `source ${unknown} (--format wire) is not a wire capture: it begins with "hell", not the JKOU or JKMI magic`],
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

  test("a capture of either channel passes as wire, and a file too short to tell is left to its source", async () => {
    const t = socketDir(defer, "aa-fmt-");
    const input = t.path("input.wire");
    writeFileSync(input, indexedWire(0, 3, 200, INPUT_MAGIC));
    await checkFileFormat(input, "wire");
    for (const [name, bytes] of [["empty", ""], ["three", "Ogg"]] as const) {
      writeFileSync(t.path(name), bytes);
      await checkFileFormat(t.path(name), "wire");
      await checkFileFormat(t.path(name), "ogg");
    }
  });
});
