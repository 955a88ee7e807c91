/**
 * The live scenario: what the agent costs at the device's rate. The compiled
 * agent runs its real roles the way a device runs them (no --metrics):
 * `output serve --source FILE --format ogg --realtime --loop` ->
 * `output recv --sink FILE --format ogg`, side by side with the bare Bun pair
 * (a sender and receiver doing the same job with nothing else) in one
 * window; before and after it, in turn, for the same warm-up and window:
 * Bun's own floor (the bare Bun program idle, waking 50 times a second, and
 * with the runtime modules the roles load), both channels in one process,
 * and the native baseline.
 * Every process is measured from outside (process-figures.ts); latency comes
 * from each receiver's own account (the agent's and the bare pair's final
 * "stopped" line, the native RESULT line).
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { OggPageReader } from "../media/ogg-page-reader.ts";
import { OggPageWriter } from "../media/ogg-page-writer.ts";
import { buildOpusHead } from "../media/opus-head.ts";
import { buildOpusTags } from "../media/opus-tags.ts";
import type { DriverResult } from "./driver.ts";
import { floorModuleArgs, STREAMING_RUNTIME_MODULES } from "./floor.ts";
import type { ProcessUse } from "./process-figures.ts";
import type { LiveProcess, LiveProgram, LiveRun, Runner } from "./runner.ts";

/** The device's rate: 20 ms Opus frames. The bare Bun program and the generated source are fixed at it. */
export const LIVE_RATE = 50;
/** Payload of the bare pair's and the native pair's frames (the agent sends the source's packets). */
const FRAME_BYTES = 160;

/** What one process cost within the window. */
export interface Footprint {
  /** The program it was, by its name in the run: which process a figure came from. */
  process: string;
  /** CPU time as a share of one core. */
  cpuPercent: number;
  /** Voluntary context switches (sleeps woken from) per frame, or per tick of the waking floor. */
  wakeupsPerFrame: number | null;
  /** The same, of the main (JavaScript) thread alone: the other threads are the runtime's. */
  mainThreadWakeupsPerFrame: number | null;
  wakeupsPerSecond: number;
  /** VmHWM: the most it held resident since it started. */
  peakRssMiB: number;
  /** Resident pages touched within the window: what streaming needs, without pages touched once at start-up. */
  workingSetMiB: number | null;
  /** Anonymous memory at the end of the window (heap, buffers): what no file backs. */
  anonymousMiB: number | null;
  threads: number;
  /** CPU ms and voluntary switches within the window by thread name: who wakes the process. */
  byThread: ProcessUse["byThread"];
}

export interface LatencyFigures {
  p50: number;
  p99: number;
  max: number;
}

export interface PairFigures {
  /** When its window opened (Unix ms): the bare pair and the agent's share one. */
  openedAtMs: number;
  send: Footprint;
  recv: Footprint;
  /** One-way, ms: arrival minus header timestamp. */
  latencyMs?: LatencyFigures;
  /** Frames within the window, and per second. */
  windowFrames: number;
  framesPerSecond: number;
}

export interface LiveFigures {
  warmupSeconds: number;
  windowSeconds: number;
  /** The Ogg Opus file the agent's sender loops over. */
  source: string;
  idle?: Footprint;
  tick?: Footprint;
  /** Waking 50 times a second with Bun's runtime modules that the streaming roles load (STREAMING_RUNTIME_MODULES). */
  modules?: Footprint;
  bare?: PairFigures;
  /** The bare pair with those modules loaded too: the floor of a program that streams and needs them. */
  bareModules?: PairFigures;
  agent?: PairFigures;
  native?: PairFigures;
  /** The agent roles' final "stopped" lines, as fields. */
  agentStopped?: { serve: Record<string, string>; recv: Record<string, string> };
  /** Both channels streaming: in one process (serve), and the input channel's server alone (beside `agent.send`, the two-process way). */
  both?: BothChannels;
}

/** Each part measured alone: one that fails leaves the other. */
export interface BothChannels {
  /** `serve`; wake-ups per frame count the frames of both channels. */
  serve?: Footprint;
  /** Frames per second through serve, both channels together. */
  framesPerSecond?: number;
  /** `input serve` on its own, fed the same way. */
  inputServe?: Footprint;
}

export interface LiveSetup {
  runner: Runner;
  work: string;
  warmupMs: number;
  windowMs: number;
  /** The compiled agent, the compiled bare Bun program, the native baseline: each optional. */
  agent?: string;
  bareBun?: string;
  native?: string;
  /** The Ogg Opus file of 20 ms packets the agent's sender loops over. */
  source: string;
  /** Runs one part; a part that throws is recorded as a failure and the rest goes on. */
  attempt: <T>(what: string, run: () => Promise<T>) => Promise<T | undefined>;
  log: (line: string) => void;
}

export async function runLive(setup: LiveSetup): Promise<{ figures: LiveFigures; notes: string[] }> {
  const { runner, work, warmupMs, windowMs, attempt, log } = setup;
  const { agent, bareBun: bare } = setup;
  const notes: string[] = [];
  const window = { warmupMs, windowMs };
  const source = setup.source;
  const figures: LiveFigures = { warmupSeconds: warmupMs / 1000, windowSeconds: windowMs / 1000, source };
  const socketReady = (socket: string) => () => existsSync(socket);
  // The bare Bun programs and the native sender pace against one anchor, so their frames are the window's ticks.
  const ticks = (run: LiveRun) => Math.round((run.windowMs / 1000) * LIVE_RATE);
  /**
   * The agent's processes write their first stats line as the warm-up ends,
   * and one per warm-up's length after: a process left running reaches that
   * code at its first line (60 s by default), which touches more of Bun than
   * streaming alone (about 0.5 MiB resident): the window must hold it.
   */
  const stats = ["--stats-interval", String(warmupMs / 1000)];
  /**
   * The frames the run's window carried over its channels (named `channels`, in the order the
   * run's counter gives them). Each must be at the live rate, within a quarter of a second or a
   * twentieth of the window, whichever is more (the recordings grow a page, 5 frames, at a time):
   * a process that stalled, or flooded, was measured at another rate, and a stalled one's low CPU
   * would read as a goal met.
   */
  const atLiveRate = (run: LiveRun, ...channels: string[]) => {
    const counted = run.windowFrames ?? [];
    const expected = ticks(run);
    const slack = Math.max(LIVE_RATE / 4, expected / 20);
    channels.forEach((who, i) => {
      const frames = counted[i] ?? 0;
      if (Math.abs(frames - expected) > slack) {
        throw new Error(`${who} carried ${frames} frames in the ${(run.windowMs / 1000).toFixed(1)} s window, not ${expected} (${LIVE_RATE}/s): not measured at the live rate`);
      }
    });
    return counted.reduce((sum, n) => sum + n, 0);
  };
  /**
   * A bare Bun pair's figures, its processes named `prefix`send and `prefix`recv; its latency from the
   * receiver's stopped line. Its figures are taken per tick of the window, so the pair must have
   * streamed at the live rate from before the window opened to its end: the frames its receiver
   * counted from its first to its stop, at 50 a second from that first frame, within the slack
   * atLiveRate gives. (The sender paces against one anchor: a stall it recovers from is caught up.)
   */
  const barePair = (run: LiveRun, prefix: string, who: string, receiver: string) => {
    const [send, recv] = [run.processes[`${prefix}send`]!, run.processes[`${prefix}recv`]!];
    const stopped = stoppedFields(recv);
    if (!(Number(stopped.frames) > 0)) throw new Error(`${receiver} got no frames`);
    const streamedMs = run.openedAtMs + run.windowMs - Number(stopped.first_frame_unix_ms);
    if (!(streamedMs >= run.windowMs)) throw new Error(`${receiver} got its first frame after the window opened: not measured streaming`);
    const expected = Math.floor((streamedMs / 1000) * LIVE_RATE) + 1;
    const frames = Number(stopped.frames);
    if (Math.abs(frames - expected) > Math.max(LIVE_RATE / 4, expected / 20)) {
      throw new Error(`${who} carried ${frames} frames in the ${(streamedMs / 1000).toFixed(1)} s from its first frame to the window's end, not ${expected} (${LIVE_RATE}/s): not measured at the live rate`);
    }
    return pair(send, recv, run, ticks(run), latencyFrom(stopped));
  };

  if (bare) {
    log(`live: Bun's floor, idle and waking ${LIVE_RATE} times a second, ${windowMs / 1000} s`);
    const run = await attempt("bare Bun idle/tick", () =>
      runner.live(
        [
          { name: "idle", cmd: [bare, "idle"], ends: "signal" },
          { name: "tick", cmd: [bare, "tick"], ends: "signal" },
        ],
        window,
      ),
    );
    if (run) {
      figures.idle = footprint(run.processes.idle!, run.windowMs, null);
      figures.tick = footprint(run.processes.tick!, run.windowMs, ticks(run));
    }
    const modules = floorModuleArgs();
    log(`live: Bun's floor with ${STREAMING_RUNTIME_MODULES.join(", ")}: waking ${LIVE_RATE} times a second, and as the bare pair`);
    await attempt("bare Bun with the runtime modules", async () => {
      const socket = runner.socketPath();
      const run = await runner.live(
        [
          { name: "modules", cmd: [bare, "modules", ...modules], ends: "signal" },
          { name: "send", cmd: [bare, "send", socket, ...modules], ready: socketReady(socket), ends: "signal" },
          { name: "recv", cmd: [bare, "recv", socket, ...modules], ends: "signal" },
        ],
        window,
      );
      for (const name of ["modules", "send", "recv"]) {
        const loaded = loadedModules(run.processes[name]!);
        const missing = STREAMING_RUNTIME_MODULES.filter((m) => !loaded.includes(m));
        if (missing.length > 0) throw new Error(`the bare ${name} did not load ${missing.join(", ")} (it says: ${loaded.join(", ") || "nothing"})`);
      }
      figures.modules = footprint(run.processes.modules!, run.windowMs, ticks(run));
      figures.bareModules = barePair(run, "", "the bare pair with the runtime modules", "the bare receiver with the runtime modules");
    });
  }

  // The bare pair and the agent's pair stream side by side, in one window. The ratio of two
  // windows taken in turn carries whatever the machine did between them: the same agent sender
  // measured alone used from 76 to 199 ms of CPU in 20 s windows a minute apart, while beside the
  // bare pair the two moved together (bench/FINDINGS.md, 2026-12-04).
  // Each pair is a group of its own: one that fails leaves the other measured.
  const programs: LiveProgram[] = [];
  if (bare) {
    const socket = runner.socketPath();
    programs.push(
      { name: "bare send", cmd: [bare, "send", socket], ready: socketReady(socket), ends: "signal", group: "bare" },
      { name: "bare recv", cmd: [bare, "recv", socket], ends: "signal", group: "bare" },
    );
  }
  const sink = join(work, `received-${Date.now()}.opus`);
  if (agent) {
    const socket = runner.socketPath();
    const serve = [agent, "output", "serve", "--source", source, "--format", "ogg", "--realtime", "--loop", "--socket", socket, ...stats];
    const recv = [agent, "output", "recv", "--sink", sink, "--format", "ogg", "--socket", socket, ...stats];
    programs.push(
      { name: "serve", cmd: serve, ready: socketReady(socket), ends: "signal", group: "agent" },
      { name: "recv", cmd: recv, ends: "signal", group: "agent" },
    );
  }
  if (programs.length > 0) {
    const pairs = [
      ...(bare ? ["the bare Bun pair (Bun.listen -> Bun.connect, 17-byte header + 160 bytes every 20 ms)"] : []),
      ...(agent ? [`the agent, output serve --source ${source} --format ogg --realtime --loop -> output recv --sink FILE --format ogg`] : []),
    ];
    log(`live: ${pairs.join(", beside it ")}`);
    const part = bare && agent ? "bare Bun pair and agent roles, side by side" : bare ? "bare Bun pair" : "agent roles";
    // Frames are counted in the agent's recording, which its receiver flushes every 100 ms: a few frames' slack at each end.
    const run = await attempt(part, () => runner.live(programs, { ...window, frames: agent ? () => [oggPackets(sink)] : undefined }));
    /** A group that failed while the other was measured fails its own part here. */
    const survived = (r: LiveRun, group: string) => {
      if (r.failures[group] !== undefined) throw new Error(r.failures[group]);
    };
    if (run && bare) {
      figures.bare = await attempt("bare Bun pair", async () => {
        survived(run, "bare");
        return barePair(run, "bare ", "the bare pair", "the bare receiver");
      });
    }
    if (run && agent) {
      figures.agent = await attempt("agent roles", async () => {
        survived(run, "agent");
        const [serve, recv] = [run.processes.serve!, run.processes.recv!];
        stoppedCleanly("output serve", serve);
        stoppedCleanly("output recv", recv);
        const stopped = { serve: stoppedFields(serve), recv: stoppedFields(recv) };
        figures.agentStopped = stopped;
        const lost = Object.entries(stopped.serve).filter(([k, v]) => k.startsWith("dropped_") && k !== "dropped_no_client" && v !== "0");
        if (lost.length > 0) notes.push(`live: output serve dropped frames while streaming (${lost.map(([k, v]) => `${k}=${v}`).join(", ")})`);
        const frames = atLiveRate(run, "the agent's pair");
        return pair(serve, recv, run, frames, latencyFrom(stopped.recv, "frame_age"));
      });
    }
  }

  if (agent) {
    log("live: both channels in one process (serve: output as above, input from input send --realtime --loop), then input serve alone");
    const [out, input, alone] = [runner.socketPath(), runner.socketPath(), runner.socketPath()];
    const sinks = ["serve-out", "serve-in", "input-alone"].map((name) => join(work, `${name}-${Date.now()}.opus`));
    const recv = (socket: string) => [agent, "output", "recv", "--sink", sinks[0]!, "--format", "ogg", "--socket", socket, ...stats];
    const send = (socket: string) => [agent, "input", "send", "--source", source, "--format", "ogg", "--realtime", "--loop", "--socket", socket, ...stats];
    const both = await attempt("serve", async () => {
      const serve = [
        agent, "serve", "--output-source", source, "--output-format", "ogg", "--output-realtime", "--output-loop", "--output-socket", out,
        "--input-sink", sinks[1]!, "--input-format", "ogg", "--input-socket", input, ...stats,
      ];
      const run = await runner.live(
        [
          { name: "serve", cmd: serve, ready: () => existsSync(out) && existsSync(input), ends: "signal" },
          { name: "recv", cmd: recv(out), ends: "signal" },
          { name: "send", cmd: send(input), ends: "signal" },
        ],
        { ...window, frames: () => [oggPackets(sinks[0]!), oggPackets(sinks[1]!)] },
      );
      stoppedCleanly("serve", run.processes.serve!);
      wroteStats("output recv (serve's peer)", run.processes.recv!);
      wroteStats("input send (serve's peer)", run.processes.send!);
      const frames = atLiveRate(run, "serve's output channel", "serve's input channel");
      return { serve: footprint(run.processes.serve!, run.windowMs, frames), framesPerSecond: frames / (run.windowMs / 1000) };
    });
    const inputServe = await attempt("input serve", async () => {
      const inputServe = [agent, "input", "serve", "--sink", sinks[2]!, "--format", "ogg", "--socket", alone, ...stats];
      const run = await runner.live(
        [
          { name: "serve", cmd: inputServe, ready: socketReady(alone), ends: "signal" },
          { name: "send", cmd: send(alone), ends: "signal" },
        ],
        { ...window, frames: () => [oggPackets(sinks[2]!)] },
      );
      stoppedCleanly("input serve", run.processes.serve!);
      return footprint(run.processes.serve!, run.windowMs, atLiveRate(run, "input serve"));
    });
    if (both || inputServe) figures.both = { ...both, inputServe };
  }

  if (setup.native) {
    const native = setup.native;
    log("live: the native baseline");
    figures.native = await attempt("native pair", async () => {
      const socket = runner.socketPath();
      // It ends by itself: a second past the window.
      const seconds = Math.ceil((warmupMs + windowMs) / 1000) + 1;
      const frames = seconds * LIVE_RATE;
      const run = await runner.live(
        [
          { name: "send", cmd: [native, "send", socket, "live", String(LIVE_RATE), String(seconds), String(FRAME_BYTES)], ready: socketReady(socket), ends: "exit" },
          { name: "recv", cmd: [native, "recv", socket, String(frames), String(FRAME_BYTES), String((warmupMs / 1000) * LIVE_RATE), "live"], ends: "exit" },
        ],
        window,
      );
      const result = resultLine(run.processes.recv!);
      if (run.processes.recv!.exitCode !== 0 || !result) throw new Error(`native receiver exited ${run.processes.recv!.exitCode}`);
      return pair(run.processes.send!, run.processes.recv!, run, ticks(run), result.latencyMs);
    });
  }
  return { figures, notes };
}

/** What `p` used over a window of `windowMs`, per frame of the `frames` it carried (none: per-frame figures are null). */
export function footprint(p: LiveProcess, windowMs: number, frames: number | null): Footprint {
  const seconds = windowMs / 1000;
  return {
    process: p.name,
    cpuPercent: (p.used.cpuNs / 1e9 / seconds) * 100,
    wakeupsPerFrame: frames ? p.used.voluntarySwitches / frames : null,
    mainThreadWakeupsPerFrame: frames ? p.used.mainThreadSwitches / frames : null,
    wakeupsPerSecond: p.used.voluntarySwitches / seconds,
    peakRssMiB: p.peakRssKiB / 1024,
    workingSetMiB: p.workingSetKiB === null ? null : p.workingSetKiB / 1024,
    anonymousMiB: p.anonymousKiB === null ? null : p.anonymousKiB / 1024,
    threads: p.used.threads,
    byThread: p.used.byThread,
  };
}

function pair(send: LiveProcess, recv: LiveProcess, run: LiveRun, frames: number, latencyMs: LatencyFigures | undefined): PairFigures {
  return {
    openedAtMs: run.openedAtMs,
    send: footprint(send, run.windowMs, frames),
    recv: footprint(recv, run.windowMs, frames),
    latencyMs,
    windowFrames: frames,
    framesPerSecond: frames / (run.windowMs / 1000),
  };
}

/** Throws unless the agent's process `name` exited 0 on its SIGTERM and wrote a stats line. */
function stoppedCleanly(name: string, p: LiveProcess): void {
  if (p.exitCode !== 0) throw new Error(`${name} exited ${p.exitCode ?? p.signal} after SIGTERM: ${p.stderr.trim().split("\n").at(-1)}`);
  wroteStats(name, p);
}

/** Throws unless the agent's process `name` wrote a stats line: its figures would leave out what a long-running one reaches. */
function wroteStats(name: string, p: LiveProcess): void {
  // The text log's own stats line (time, level, component), not a value that happens to hold ": stats".
  if (!p.stderr.split("\n").some((l) => /^\S+ INFO +[\w-]+: stats( |$)/.test(l))) throw new Error(`${name} wrote no stats line before it stopped`);
}

/** The fields of a process's last "stopped" log line (`key=value ...`). */
export function stoppedFields(p: LiveProcess): Record<string, string> {
  const line = p.stderr.split("\n").findLast((l) => / stopped( |$)/.test(l));
  if (!line) {
    const ended = p.signal ? `killed by ${p.signal}` : `exit ${p.exitCode}`;
    throw new Error(`no "stopped" line in its log (${ended}): ${p.stderr.trim().split("\n").slice(-3).join(" | ")}`);
  }
  return Object.fromEntries([...line.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, m[2]!]));
}

/** The modules the bare Bun program says it loaded at start ("bare-bun: loaded node:fs, bun:ffi (libc.so.6)"), by name. */
function loadedModules(p: LiveProcess): string[] {
  const line = p.stderr.split("\n").find((l) => l.startsWith("bare-bun: loaded "));
  return line ? line.slice("bare-bun: loaded ".length).split(", ").map((m) => m.split(" ")[0]!) : [];
}

function latencyFrom(fields: Record<string, string>, operation = "frame_age"): LatencyFigures {
  const get = (p: string) => {
    const value = Number(fields[`${operation}_${p}_ms`]);
    if (!Number.isFinite(value)) throw new Error(`the stopped line has no ${operation}_${p}_ms`);
    return value;
  };
  return { p50: get("p50"), p99: get("p99"), max: get("max") };
}

function resultLine(p: LiveProcess): DriverResult | undefined {
  const line = p.stdout.split("\n").findLast((l) => l.startsWith("RESULT "));
  return line ? (JSON.parse(line.slice("RESULT ".length)) as DriverResult) : undefined;
}

/** Audio packets in an Ogg Opus file being written (its two header packets left out); 0 before it exists. */
export function oggPackets(path: string): number {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch {
    return 0;
  }
  const reader = new OggPageReader();
  reader.push(bytes);
  let packets = 0;
  // A page still being written stays in the reader: only whole pages count.
  for (let page = reader.next(); page; page = reader.next()) {
    for (let i = 0; i < page.segments; i++) if (page.lacing(i) < 255) packets++;
  }
  return Math.max(0, packets - 2);
}

/** Writes `seconds` of 20 ms stereo Opus packets (a valid TOC, filler after it) as an Ogg Opus file. */
export function writeGeneratedOpus(path: string, seconds: number): string {
  const pages: Uint8Array[] = [];
  const writer = new OggPageWriter(0x61756469, (page) => pages.push(page.slice()));
  writer.addPacket(buildOpusHead({ channels: 2, preSkip: 312, inputSampleRate: 48000 }), 0);
  writer.flushPage();
  writer.addPacket(buildOpusTags(), 0);
  writer.flushPage();
  const packet = new Uint8Array(FRAME_BYTES).fill(0xa5);
  packet[0] = 0xfc; // TOC: CELT fullband 20 ms, stereo, one frame
  const frames = seconds * LIVE_RATE;
  for (let i = 1; i <= frames; i++) {
    writer.addPacket(packet, i * 960);
    if (i % 5 === 0 || i === frames) writer.flushPage(i === frames);
  }
  writeFileSync(path, Buffer.concat(pages));
  return path;
}
