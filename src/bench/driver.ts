/**
 * The agent side of `audio-agent bench`: one process per role, started by
 * the orchestrator (bench.ts) as `<self> bench --driver send|recv ...`.
 *
 * Each driver builds its role with the roles' own builders (src/roles/
 * output-serve.ts and output-recv.ts): settings resolved from the same option
 * table and defaults, an OutputServer or OutputClient, and its Instruments with
 * --metrics on (latency monitor, adaptive optimizer, Prometheus registry and its
 * HTTP endpoint). The sender feeds frames through the same pumpSource, from
 * an in-memory source instead of a file, so that what is measured is the
 * IPC path and not disk reads. Both print "LISTENING" / "RESULT {json}"
 * lines on stdout, like the native baseline.
 */
import type { OutputServer } from "../channels/output-server.ts";
import { FFIType, ptr } from "bun:ffi";
import { heapStats } from "bun:jsc";
import { readdirSync, readFileSync } from "node:fs";
import { resolveSettings } from "../config.ts";
import type { FrameSource, SourceFrame } from "../media/frame-source.ts";
import { Pacer } from "../media/pacer.ts";
import { pumpSource, type PumpTarget } from "../media/pump.ts";
import { Logger } from "../observe/logger.ts";
import { HEADER_SIZE, MessageType, readUint32LE, wallClockMs, type ParsedMessage } from "../protocol/index.ts";
import { startOutputClient } from "../roles/output-recv.ts";
import { startOutputServer } from "../roles/output-serve.ts";
import { NORMAL_JIT_POLICY } from "../roles/jit-policy.ts";
import { openLibc } from "../io/libc.ts";
import { statusKiB } from "./process-figures.ts";

export interface DriverArgs {
  role: "send" | "recv";
  socket: string;
  mode: "flood" | "live";
  frames: number;
  /** Payload bytes per frame; bytes 0..3 carry the sequence number. */
  size: number;
  /** Live: frames per second. */
  rate: number;
  /** Frames before the CPU (and latency) window opens. */
  warmup: number;
  /** > 0: force a GC and sample the heap this often (soak). */
  heapEveryMs: number;
  /** Agent settings as flags would give them (`--set socket-buffers=32k`), for experiments. */
  settings: Record<string, string>;
}

export interface HeapSample {
  /** ms since the driver started. */
  t: number;
  /** Frames sent or received so far. */
  frames: number;
  /** JavaScriptCore heap after a full GC (bun:jsc heapStats().heapSize). */
  heapSize: number;
  objectCount: number;
  rss: number;
}

export interface DriverResult {
  side: "send" | "recv";
  frames: number;
  bytes: number;
  windowMs: number;
  cpuSeconds: number;
  /** Frames inside the timing window. */
  windowFrames: number;
  /** The window's CPU split, page faults and context switches. */
  usage?: WindowUsage;
  /** CPU seconds in the window by thread name (JS thread, JIT, GC helpers, allocator, pools). */
  threads?: Record<string, number>;
  latencyMs?: { p50: number; p99: number; max: number; maxAll: number; frames: number };
  maxRssKiB: number;
  heap?: HeapSample[];
  /** What the role's own /metrics endpoint counted (frames sent or received). */
  metricsFrames?: number;
  writeCalls?: number;
  shortWrites?: number;
  /** Receiver: socket reads (the native baseline counts every read too). */
  reads?: number;
  /**
   * CLOCK_REALTIME minus the agent's clock (wallClockMs(): performance.now() plus an offset to the wall clock),
   * mean over 200 readings, in microseconds: how far the header timestamps can be off.
   */
  clockOffsetUs?: number;
  dropped?: number;
  errors?: string[];
}

const USAGE =
  "bench --driver send|recv --socket PATH --mode flood|live --frames N --size BYTES [--rate R] [--warmup N] [--heap-ms MS] [--set OPTION=VALUE]...";

export function parseDriverArgs(argv: string[]): DriverArgs {
  const get = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const int = (name: string, fallback?: number): number => {
    const text = get(name);
    const n = text === undefined ? fallback : Number(text);
    if (n === undefined || !Number.isInteger(n) || n < 0) throw new Error(`--${name}: need an integer >= 0 (${USAGE})`);
    return n;
  };
  const role = get("driver");
  const mode = get("mode") ?? "flood";
  const socket = get("socket");
  if ((role !== "send" && role !== "recv") || (mode !== "flood" && mode !== "live") || !socket) {
    throw new Error(`usage: ${USAGE}`);
  }
  const settings: Record<string, string> = {};
  argv.forEach((arg, i) => {
    if (arg !== "--set") return;
    const [key, ...rest] = (argv[i + 1] ?? "").split("=");
    if (!key || rest.length === 0) throw new Error(`--set needs OPTION=VALUE (${USAGE})`);
    settings[key] = rest.join("=");
  });
  const size = int("size", 160);
  if (size < 4 || size > 4096) throw new Error("--size: 4..4096 bytes");
  return {
    role,
    mode,
    socket,
    frames: int("frames"),
    size,
    rate: int("rate", 50),
    warmup: int("warmup", 0),
    heapEveryMs: int("heap-ms", 0),
    settings,
  };
}

export async function runDriver(args: DriverArgs): Promise<number> {
  // A flood measures the compiled hot path: in the compiled `audio-agent bench` it would otherwise
  // start at the executable's live thresholds and tier up only after the first sample.
  if (args.mode === "flood") Bun.unsafe.setJITPolicy(NORMAL_JIT_POLICY);
  const result = args.role === "send" ? await runSender(args) : await runReceiver(args);
  result.clockOffsetUs = clockOffsetUs();
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  return result.errors && result.errors.length > 0 ? 1 : 0;
}

/** N frames of `size` bytes, numbered in bytes 0..3, on a timeline of 1000/rate ms steps. */
class CountingSource implements FrameSource {
  readonly name = "bench";
  private index = 0;
  private readonly frame: SourceFrame;
  private readonly view: DataView;

  constructor(
    private readonly frames: number,
    size: number,
    private readonly stepMs: number,
  ) {
    const payload = new Uint8Array(size).fill(0xa5);
    this.view = new DataView(payload.buffer);
    this.frame = { payload, timeMs: 0 };
  }

  next(): SourceFrame | undefined {
    if (this.index >= this.frames) return undefined;
    this.view.setUint32(0, this.index, true);
    this.frame.timeMs = this.index * this.stepMs;
    this.index++;
    return this.frame;
  }

  async fill(): Promise<boolean> {
    return false;
  }

  rewind(): boolean {
    return false;
  }

  async close(): Promise<void> {}
}

/** See DriverResult.clockOffsetUs; undefined without a libc to ask. */
function clockOffsetUs(): number | undefined {
  const { library: libc } = openLibc({ clock_gettime: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 } });
  if (!libc) return undefined;
  const ts = new BigInt64Array(2);
  const at = ptr(ts);
  let sum = 0;
  const n = 200;
  for (let i = 0; i < n; i++) {
    const before = wallClockMs();
    libc.symbols.clock_gettime(0 /* CLOCK_REALTIME */, at);
    const after = wallClockMs();
    sum += Number(ts[0]) * 1e3 + Number(ts[1]) / 1e6 - (before + after) / 2;
  }
  libc.close();
  return +((sum / n) * 1000).toFixed(2);
}

/** Where this process's time and faults went within the window (getrusage). */
export interface WindowUsage {
  userSeconds: number;
  systemSeconds: number;
  minorFaults: number;
  voluntarySwitches: number;
  involuntarySwitches: number;
}

function usage(): WindowUsage {
  const u = process.resourceUsage();
  return {
    userSeconds: u.userCPUTime / 1e6,
    systemSeconds: u.systemCPUTime / 1e6,
    minorFaults: u.minorPageFault,
    voluntarySwitches: u.voluntaryContextSwitches,
    involuntarySwitches: u.involuntaryContextSwitches,
  };
}

/** Peak RSS of this process, from procfs or (without it) the current figure. */
function peakRssKiB(): number {
  return statusKiB("self", "VmHWM") || Math.round(process.memoryUsage().rss / 1024);
}

/** The timing window: wall time and CPU between two frames (calls kept off the per-frame path). */
/** CPU seconds so far by thread name, from /proc/self/task (10 ms ticks); empty without procfs. */
function threadCpu(): Record<string, number> {
  const out: Record<string, number> = {};
  try {
    for (const tid of readdirSync("/proc/self/task")) {
      try {
        const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
        const close = stat.lastIndexOf(")");
        const name = stat.slice(stat.indexOf("(") + 1, close);
        const fields = stat.slice(close + 2).split(" ");
        // Fields after the name: state is [0]; utime and stime are [11] and [12], in clock ticks.
        out[name] = (out[name] ?? 0) + (Number(fields[11]) + Number(fields[12])) / 100;
      } catch {
        // the thread ended
      }
    }
  } catch {
    // no procfs
  }
  return out;
}

class Window {
  startMs = NaN;
  start = usage();
  startThreads: Record<string, number> = {};
  endThreads: Record<string, number> = {};
  startFrames = 0;
  endMs = NaN;
  end = usage();
  endFrames = 0;

  open(frames: number): void {
    this.startThreads = threadCpu();
    this.startMs = performance.now();
    this.start = usage();
    this.startFrames = frames;
  }

  close(frames: number): void {
    this.endMs = performance.now();
    this.end = usage();
    this.endFrames = frames;
    this.endThreads = threadCpu();
  }

  get opened(): boolean {
    return !Number.isNaN(this.startMs);
  }

  figures(): { windowMs: number; cpuSeconds: number; windowFrames: number; usage?: WindowUsage; threads?: Record<string, number> } {
    if (!this.opened || Number.isNaN(this.endMs)) return { windowMs: 0, cpuSeconds: 0, windowFrames: 0 };
    const d = Object.fromEntries(
      Object.keys(this.end).map((k) => [k, this.end[k as keyof WindowUsage] - this.start[k as keyof WindowUsage]]),
    ) as unknown as WindowUsage;
    const threads: Record<string, number> = {};
    for (const [name, seconds] of Object.entries(this.endThreads)) {
      const used = seconds - (this.startThreads[name] ?? 0);
      if (used > 0) threads[name] = +used.toFixed(2);
    }
    return {
      windowMs: this.endMs - this.startMs,
      cpuSeconds: d.userSeconds + d.systemSeconds,
      windowFrames: this.endFrames - this.startFrames,
      usage: d,
      threads,
    };
  }
}

/** Samples the heap after a full GC every `everyMs` (soak); returns the stopper. */
function heapSampler(everyMs: number, frames: () => number): { samples: HeapSample[]; stop: () => void } {
  const samples: HeapSample[] = [];
  if (everyMs <= 0) return { samples, stop: () => {} };
  const started = performance.now();
  const sample = () => {
    Bun.gc(true);
    const h = heapStats();
    samples.push({
      t: Math.round(performance.now() - started),
      frames: frames(),
      heapSize: h.heapSize,
      objectCount: h.objectCount,
      rss: process.memoryUsage().rss,
    });
  };
  sample();
  const timer = setInterval(sample, everyMs);
  return { samples, stop: () => (clearInterval(timer), sample()) };
}

/** The Prometheus counter `name` as the role's own endpoint reports it. */
async function scrapeCounter(url: string | undefined, name: string): Promise<number | undefined> {
  if (!url) return undefined;
  try {
    const text = await (await fetch(new URL("/metrics", url))).text();
    const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** `output serve`, built by the role's own builder, fed from memory. */
async function runSender(args: DriverArgs): Promise<DriverResult> {
  const live = args.mode === "live";
  const logger = new Logger({ level: "warn", format: "text" });
  const settings = resolveSettings("output serve", {
    flags: { socket: args.socket, source: "-", realtime: live, metrics: "127.0.0.1:0", ...args.settings },
    env: {},
  });
  const { server, instruments } = await startOutputServer(settings, logger, live);
  const stats = server.stats;
  process.stdout.write("LISTENING\n");
  await server.waitForClient();

  const window = new Window();
  const heap = heapSampler(args.heapEveryMs, () => stats.submitted);
  let submitted = 0;
  // The server itself is the pump target, as in output serve; the window opens after warm-up.
  const target: PumpTarget = {
    sendFrame: (payload) => {
      if (submitted === args.warmup) window.open(submitted);
      submitted++;
      return server.sendFrame(payload);
    },
    hasSpace: () => server.hasSpace(),
    waitForSpace: () => server.waitForSpace(),
  };
  await pumpSource(new CountingSource(args.frames, args.size, 1000 / args.rate), target, {
    lossless: !live,
    pacer: live ? new Pacer() : undefined,
    loop: false,
    isStopped: () => false,
  });
  await server.waitForIdle();
  window.close(submitted);
  heap.stop();
  const maxRssKiB = peakRssKiB();
  const metricsFrames = await scrapeCounter(instruments.urls[0], "jetkvm_audio_frames_sent_total");
  // The receiver closes once it has every frame; the flush bound covers a receiver that died.
  await server.flush(1000);
  await Promise.race([closedByPeer(server), Bun.sleep(10_000)]);
  await server.stop();
  await instruments.stop();

  const errors: string[] = [];
  // Live mode may drop (write deadline, queue full): counted, not an error; every frame must be accounted for.
  const accounted = stats.delivered + (live ? stats.droppedTotal : 0);
  if (accounted !== args.frames) errors.push(`delivered ${stats.delivered} (dropped ${stats.droppedTotal}) of ${args.frames} frames`);
  return {
    side: "send",
    frames: stats.delivered,
    bytes: stats.deliveredBytes,
    ...window.figures(),
    maxRssKiB,
    heap: args.heapEveryMs > 0 ? heap.samples : undefined,
    metricsFrames,
    writeCalls: stats.writeCalls,
    shortWrites: stats.shortWrites,
    dropped: stats.droppedTotal,
    errors,
  };
}

function closedByPeer(server: OutputServer): Promise<void> {
  return new Promise((resolve) => {
    const poll = () => (server.connected ? setTimeout(poll, 5) : resolve());
    poll();
  });
}

/** `output recv`, built by the role's own builder, into a counting, validating sink. */
async function runReceiver(args: DriverArgs): Promise<DriverResult> {
  const live = args.mode === "live";
  const logger = new Logger({ level: "warn", format: "text" });
  const settings = resolveSettings("output recv", {
    flags: { socket: args.socket, sink: "-", metrics: "127.0.0.1:0", "connect-timeout": 30, ...args.settings },
    env: {},
  });
  const window = new Window();
  const latency = live ? new Float64Array(args.frames) : undefined;
  const errors: string[] = [];
  let received = 0;
  let nextSequence = 0;
  const heap = heapSampler(args.heapEveryMs, () => received);
  const { client, instruments } = await startOutputClient(settings, logger, (m: ParsedMessage) => {
    if (m.type !== MessageType.OpusFrame) return;
    if (latency) latency[received] = wallClockMs() - m.timestampMs;
    if (received === args.warmup) window.open(received);
    // Lossless floods deliver every frame in order; live mode may drop (counted by the sender), never reorder.
    const sequence = readUint32LE(m.bytes, m.offset + HEADER_SIZE);
    if (m.length !== args.size || sequence < nextSequence || (!live && sequence !== nextSequence)) {
      if (errors.length < 5) errors.push(`frame ${received}: length ${m.length}, sequence ${sequence}, expected ${nextSequence}`);
    }
    nextSequence = sequence + 1;
    received++;
    if (nextSequence >= args.frames) {
      window.close(received);
      client.stop();
    }
  });
  await client.run(true);
  heap.stop();
  const maxRssKiB = peakRssKiB();
  const metricsFrames = await scrapeCounter(instruments.urls[0], "jetkvm_audio_frames_received_total");
  await instruments.stop();

  // Live: the server went away before the last frame (it was dropped): the window ends here.
  if (live && window.opened && Number.isNaN(window.endMs)) window.close(received);
  if (live ? received === 0 : received !== args.frames) errors.push(`received ${received} of ${args.frames} frames`);
  if (client.protocolErrors > 0) errors.push(`${client.protocolErrors} protocol error(s)`);
  return {
    side: "recv",
    frames: received,
    bytes: client.bytesReceived,
    ...window.figures(),
    latencyMs: latency ? latencyFigures(latency.subarray(0, received), args.warmup) : undefined,
    maxRssKiB,
    heap: args.heapEveryMs > 0 ? heap.samples : undefined,
    metricsFrames,
    reads: client.reads,
    errors,
  };
}

/** Nearest-rank percentiles over the frames after warm-up; maxAll over every frame. */
function latencyFigures(all: Float64Array, warmup: number): NonNullable<DriverResult["latencyMs"]> {
  let maxAll = 0;
  for (const x of all) if (x > maxAll) maxAll = x;
  const from = warmup < all.length ? warmup : 0;
  const sorted = Float64Array.from(all.subarray(from)).sort();
  const rank = (p: number) => sorted[Math.max(1, Math.ceil((p * sorted.length) / 100)) - 1] ?? 0;
  return { p50: rank(50), p99: rank(99), max: sorted[sorted.length - 1] ?? 0, maxAll, frames: sorted.length };
}
