/**
 * A/B for hot-path changes: runs the flood pair from several checkouts,
 * interleaved, and compares CPU per frame on each side and throughput.
 *
 *   bun bench/ab.ts [--frames N] [--size BYTES] [--runs R] [--mode flood|live] [--rate R]
 *                   base=/tmp/aa-base  try=/tmp/aa-try  small-buffers=.,socket-buffers=32k ...
 *
 * Each variant is LABEL=DIR[,OPTION=VALUE...]: DIR a copy of this repository
 * (src/ and bench/run.ts, with node_modules reachable) holding one variant
 * of the code, the options agent settings given to both drivers. Medians over R runs; CPU per
 * frame is the steadier figure on a shared machine (throughput also moves
 * with whatever else runs). Live mode (frames/s for frames/rate seconds)
 * compares CPU % of a core and one-way latency instead.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { median, Runner, type Pair } from "../src/bench/runner.ts";
import { framesPerSecond } from "../src/bench/report.ts";

const { values, positionals } = parseArgs({
  args: process.argv.slice(2),
  options: {
    frames: { type: "string", default: "1000000" },
    size: { type: "string", default: "160" },
    runs: { type: "string", default: "5" },
    mode: { type: "string", default: "flood" },
    rate: { type: "string", default: "50" },
  },
  allowPositionals: true,
});
const variants = positionals.map((arg) => {
  const at = arg.indexOf("=");
  const [dir, ...settings] = (at > 0 ? arg.slice(at + 1) : arg).split(",");
  return { label: at > 0 ? arg.slice(0, at) : arg, dir: resolve(dir), settings: settings.flatMap((s) => ["--set", s]) };
});
if (variants.length === 0) {
  console.error("usage: bun bench/ab.ts [--frames N] [--size BYTES] [--runs R] [--mode flood|live] LABEL=DIR ...");
  process.exit(2);
}
const frames = Number(values.frames);
const size = Number(values.size);
const runs = Number(values.runs);
const live = values.mode === "live";
const rate = Number(values.rate);
const work = mkdtempSync(join(tmpdir(), "aab-ab-"));
const runner = new Runner(work, (line) => console.error(line));
const results = new Map<string, Pair[]>(variants.map((v) => [v.label, []]));
try {
  for (let r = 0; r < runs; r++) {
    // Rotate the order, so no variant always runs first (or right after a warm cache).
    for (let k = 0; k < variants.length; k++) {
      const v = variants[(r + k) % variants.length];
      const socket = runner.socketPath();
      const driver = (role: string) => [
        process.execPath, join(v.dir, "bench/run.ts"), "bench", "--driver", role, "--socket", socket,
        "--mode", live ? "live" : "flood", "--frames", String(frames), "--size", String(size),
        ...(live ? ["--rate", String(rate), "--warmup", String(rate)] : []),
        ...v.settings,
      ];
      const pair = await runner.pair(driver("send"), driver("recv"), 300_000);
      results.get(v.label)!.push(pair);
      console.error(`run ${r + 1}/${runs} ${v.label}: ${summary(pair)}`);
    }
  }
} finally {
  runner.dispose();
  rmSync(work, { recursive: true, force: true });
}

function summary(p: Pair): string {
  const us = (side: "send" | "recv") => ((p[side].cpuSeconds / p[side].windowFrames) * 1e6).toFixed(3);
  if (live) {
    const pct = (side: "send" | "recv") => ((p[side].cpuSeconds / (p[side].windowMs / 1000)) * 100).toFixed(2);
    return `cpu send ${pct("send")}% recv ${pct("recv")}%, p50 ${p.recv.latencyMs?.p50.toFixed(3)} ms p99 ${p.recv.latencyMs?.p99.toFixed(3)} ms`;
  }
  return `${Math.round(framesPerSecond(p) ?? 0)} frames/s, send ${us("send")} us/frame, recv ${us("recv")} us/frame`;
}

const fmt = (xs: number[], digits: number) =>
  `${median(xs).toFixed(digits)} (${Math.min(...xs).toFixed(digits)}..${Math.max(...xs).toFixed(digits)})`;
console.log(`\n${live ? `live ${rate}/s, ${frames} frames` : `flood ${frames} x ${size} B`}, ${runs} runs, median (min..max)`);
for (const [label, pairs] of results) {
  const per = (side: "send" | "recv") => pairs.map((p) => (p[side].cpuSeconds / p[side].windowFrames) * 1e6);
  if (live) {
    const pct = (side: "send" | "recv") => pairs.map((p) => (p[side].cpuSeconds / (p[side].windowMs / 1000)) * 100);
    const lat = (k: "p50" | "p99") => pairs.map((p) => p.recv.latencyMs?.[k] ?? NaN);
    console.log(`${label.padEnd(14)} send ${fmt(pct("send"), 2)} %core  recv ${fmt(pct("recv"), 2)} %core  p50 ${fmt(lat("p50"), 3)} ms  p99 ${fmt(lat("p99"), 3)} ms`);
  } else {
    const fps = pairs.map((p) => framesPerSecond(p) ?? 0);
    console.log(`${label.padEnd(14)} ${fmt(fps, 0)} frames/s  send ${fmt(per("send"), 3)} us/frame  recv ${fmt(per("recv"), 3)} us/frame`);
  }
}
