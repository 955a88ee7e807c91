/**
 * Ogg Opus files for tests: the repository's example, and real files made by
 * a real encoder (opus-tools' opusenc) from a synthetic WAV written here,
 * into a temp dir. The tests that use the latter need opus-tools (opusenc,
 * opusinfo, opusdec) on PATH, and ffmpeg for the independent demuxer and the
 * Vorbis file; a missing tool fails loudly.
 */
import { expect } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

/** examples/tone.opus: stereo, 20 ms packets. */
export const TONE = resolve(import.meta.dir, "../../examples/tone.opus");

/**
 * 25 x 60 ms minus opusenc's 312-sample pre-skip: every frame size used
 * (10/20/60 ms) then ends exactly on a packet boundary, so the last page needs
 * no end trimming and a file rewritten by our sink decodes to the same number
 * of samples as the original.
 */
export const FIXTURE_SAMPLES = 25 * 2880 - 312;
export const FRAME_MS = [10, 20, 60] as const;
export const CHANNELS = [1, 2] as const;

export function requireTool(name: string, pkg: string): string {
  const path = Bun.which(name);
  if (!path) throw new Error(`${name} not found on PATH: the media tests need ${pkg} installed`);
  return path;
}

/** Runs a media tool to completion. */
export function runTool(cmd: string[]): { exitCode: number; stdout: string; stderr: string } {
  const p = Bun.spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  return { exitCode: p.exitCode ?? -1, stdout: p.stdout.toString(), stderr: p.stderr.toString() };
}

/** What opusinfo says of a file: its verdict (stderr, exit code, the WARNING/ERROR words of its report, null when none) and the report. */
export function opusinfo(path: string): { verdict: { stderr: string; warnings: RegExpMatchArray | null; code: number }; stdout: string } {
  const info = runTool([requireTool("opusinfo", "opus-tools"), path]);
  return { verdict: { stderr: info.stderr, warnings: info.stdout.match(/WARNING|ERROR/g), code: info.exitCode }, stdout: info.stdout };
}

/** liboggz's validator accepts the file without a word: every page and packet as the Ogg and Ogg Opus specs have them. */
export function expectOggzValid(path: string): void {
  const validated = runTool([requireTool("oggz-validate", "oggz-tools"), path]);
  expect({ code: validated.exitCode, output: validated.stdout + validated.stderr }).toEqual({ code: 0, output: "" });
}

/** opusinfo's verdict on a file it accepts without a word against it. */
export const OPUSINFO_CLEAN = { stderr: "", warnings: null, code: 0 };

function runOk(cmd: string[]): string {
  const r = runTool(cmd);
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} exited ${r.exitCode}: ${r.stderr}`);
  return r.stdout;
}

/** 16-bit PCM WAV (48 kHz unless `rate` says): a sweep per channel plus a little noise, so packet sizes vary. */
export function wav(channels: number, samples: number, rate = 48000): Uint8Array {
  const dataSize = samples * channels * 2;
  const bytes = new Uint8Array(44 + dataSize);
  const view = new DataView(bytes.buffer);
  const ascii = (at: number, s: string) => bytes.set(new TextEncoder().encode(s), at);
  ascii(0, "RIFF");
  view.setUint32(4, 36 + dataSize, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  view.setUint32(16, 16, true);
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, channels, true);
  view.setUint32(24, rate, true);
  view.setUint32(28, rate * channels * 2, true);
  view.setUint16(32, channels * 2, true);
  view.setUint16(34, 16, true);
  ascii(36, "data");
  view.setUint32(40, dataSize, true);
  let seed = 12345;
  for (let i = 0; i < samples; i++) {
    for (let c = 0; c < channels; c++) {
      const t = i / rate;
      const f = 220 * (c + 1) * (1 + t);
      seed = (seed * 1103515245 + 12345) >>> 0;
      const noise = ((seed >>> 16) / 65536 - 0.5) * 0.05;
      const v = 0.5 * Math.sin(2 * Math.PI * f * t) + noise;
      view.setInt16(44 + (i * channels + c) * 2, Math.round(v * 32767), true);
    }
  }
  return bytes;
}

export interface Fixtures {
  dir: string;
  /** `${channels}ch-${frameMs}ms` -> path of the .opus file. */
  opus: Map<string, string>;
  cleanup(): void;
}

export const key = (channels: number, frameMs: number) => `${channels}ch-${frameMs}ms`;

/** Encodes the 6 fixtures: `opusenc --quiet --framesize F in.wav out.opus`, mono and stereo. */
export function makeFixtures(): Fixtures {
  const opusenc = requireTool("opusenc", "opus-tools");
  const dir = mkdtempSync(join(tmpdir(), "audio-agent-ogg-"));
  const opus = new Map<string, string>();
  for (const channels of CHANNELS) {
    const input = join(dir, `${channels}ch.wav`);
    writeFileSync(input, wav(channels, FIXTURE_SAMPLES));
    for (const frameMs of FRAME_MS) {
      const out = join(dir, `${key(channels, frameMs)}.opus`);
      runOk([opusenc, "--quiet", "--framesize", String(frameMs), input, out]);
      opus.set(key(channels, frameMs), out);
    }
  }
  return { dir, opus, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Encodes `samples` of wav(channels, samples, rate) into DIR/NAME.opus with extra opusenc arguments (e.g. a huge
 * comment, a frame size); opusenc keeps the WAV's rate as OpusHead's input rate.
 */
export function encodeWith(dir: string, name: string, args: string[], { channels = 2, samples = 9600, rate = 48000 } = {}): string {
  const opusenc = requireTool("opusenc", "opus-tools");
  const input = join(dir, `${name}.wav`);
  writeFileSync(input, wav(channels, samples, rate));
  const out = join(dir, `${name}.opus`);
  runOk([opusenc, "--quiet", ...args, input, out]);
  return out;
}

/** Runs ffmpeg from a lavfi input (`sine=duration=0.3`) into `out` with `args`; `out`. */
export function ffmpegFrom(out: string, input: string, args: string[]): string {
  const made = runTool([requireTool("ffmpeg", "ffmpeg"), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i", input, ...args, out]);
  if (made.exitCode !== 0) throw new Error(`ffmpeg into ${out} failed: ${made.stderr}`);
  return out;
}

/** Packets as ffmpeg's own Ogg demuxer sees them: size and MD5 of each, in order. */
export function ffmpegPackets(path: string): { size: number; md5: string }[] {
  const ffmpeg = requireTool("ffmpeg", "ffmpeg");
  const out = runOk([ffmpeg, "-hide_banner", "-loglevel", "error", "-i", path, "-c:a", "copy", "-f", "framemd5", "-"]);
  return out
    .split("\n")
    .filter((line) => /^0,/.test(line))
    .map((line) => {
      const fields = line.split(",").map((f) => f.trim());
      return { size: Number(fields[4]), md5: fields[5]! };
    });
}

export function md5(bytes: Uint8Array): string {
  return new Bun.CryptoHasher("md5").update(bytes).digest("hex");
}

/** Samples per channel in the WAV opusdec writes (`opusdec --quiet --rate 48000 in out.wav`). */
export function decodedSamples(path: string, dir: string): number {
  const opusdec = requireTool("opusdec", "opus-tools");
  const out = join(dir, `decoded-${Math.random().toString(36).slice(2)}.wav`);
  runOk([opusdec, "--quiet", "--rate", "48000", path, out]);
  const bytes = new Uint8Array(readFileSync(out));
  const view = new DataView(bytes.buffer, bytes.byteOffset);
  const channels = view.getUint16(22, true);
  // walk the chunks to "data": opusdec may write others before it
  for (let at = 12; at + 8 <= bytes.length; ) {
    const id = new TextDecoder().decode(bytes.subarray(at, at + 4));
    const size = view.getUint32(at + 4, true);
    if (id === "data") return size / (2 * channels);
    at += 8 + size + (size & 1);
  }
  throw new Error(`no data chunk in ${out}`);
}
