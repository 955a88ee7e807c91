/**
 * `audio-agent bench` (and `bun run bench`): measures the real agent against
 * Bun's own floor and a native C baseline, all built and run on the same
 * machine in the same run.
 *
 * Every scenario runs a sender and a receiver in two processes over a Unix
 * socket. Flood and soak: the agent's pair is this same program re-entered as
 * `<self> bench --driver send|recv` (driver.ts: the roles' own builders of
 * OutputServer / OutputClient with their Instruments, metrics on, fed from
 * memory). Live and start-up: the compiled agent runs its real roles, beside
 * the bare Bun program (floors/bare-bun.js, compiled in the run like the
 * agent; floor.ts) and measured from outside (live.ts). The native pair is
 * native-baseline.c (beside this file) compiled with the machine's `cc -O2`
 * into a temp dir (the sources are embedded, so a compiled binary carries
 * them; with no `cc` the native column stays empty). Figures are goals, not
 * assertions: each line says PASS or MISS and the exit code stays 0 unless a
 * scenario itself failed (lost frames, a crash, a live pair off the live rate).
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir, totalmem } from "node:os";
import { basename, join } from "node:path";
import { ConfigError, readFlags, shownValue, type FlagSpecs } from "../config.ts";
import { DEVICE_RUNTIME_ENV } from "./device-runtime.ts";
import { parseDriverArgs, runDriver, type HeapSample } from "./driver.ts";
import { buildBareBun, floorModuleArgs } from "./floor.ts";
import { LIVE_RATE, runLive, writeGeneratedOpus } from "./live.ts";
import NATIVE_SOURCE from "./native-baseline.c" with { type: "text" };
import { dropPageCache } from "./page-cache.ts";
import { formatTable, framesPerSecond, judge, type Row } from "./report.ts";
import { childEnv, Runner, type Pair, type StartupFigures } from "./runner.ts";

export interface BenchHost {
  /** The command that re-enters `bench` in a child process (the agent drivers). */
  self?: string[];
  /** What bench prints as its result (help, the table): the command line's stdout, which throws where it is lost. */
  out?: (text: string) => void;
  /** Where `<timestamp>.json` and `latest.md` are written; none: print only. */
  resultsDir?: string;
  /** The compiled agent for the live and start-up scenarios (built into `workDir`, removed after the run, or found). */
  agentBinary?: (log: (line: string) => void, workDir: string) => Promise<string | undefined>;
  /** An Ogg Opus file of 20 ms packets for the agent to loop over live; else one is generated. */
  opusSource?: string;
}

/** Whether the run is the quick one: `--quick` (or `--no-quick`) as given, else AUDIO_AGENT_BENCH_QUICK. */
export function isQuick(flag: boolean | undefined, variable: string | undefined): boolean {
  return flag ?? ["1", "true", "yes"].includes(variable ?? "");
}

/** Sizes of one run; `--quick` is the smoke version. */
export interface BenchPlan {
  name: "full" | "quick";
  flood160: number;
  flood4096: number;
  /** Live: each program's measured window, after a warm-up (start-up, connecting, the JIT settling). */
  liveSeconds: number;
  liveWarmupSeconds: number;
  soakFrames: number;
  startupRuns: number;
  /** Flood runs per side; the best counts (a shared machine only ever makes a run slower). */
  floodRepeats: number;
}

const PLANS: Record<BenchPlan["name"], BenchPlan> = {
  full: { name: "full", flood160: 2_000_000, flood4096: 300_000, liveSeconds: 30, liveWarmupSeconds: 5, soakFrames: 5_000_000, startupRuns: 9, floodRepeats: 3 },
  quick: { name: "quick", flood160: 200_000, flood4096: 30_000, liveSeconds: 3, liveWarmupSeconds: 1, soakFrames: 500_000, startupRuns: 3, floodRepeats: 1 },
};

/** Heap sampling period of the soak (each sample is a full GC, which slows the flood a little). */
const SOAK_SAMPLE_MS = 100;

const SCENARIOS = ["flood160", "flood4096", "live", "soak", "startup"] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

/**
 * Goals (PASS/MISS), in one place. The live and start-up ones are set against
 * the bare Bun program doing the same job ("bare"), measured in the same run.
 */
export const TARGETS = {
  flood160Ratio: 0.4,
  flood4096Ratio: 0.7,
  /** Live one-way latency p99, as a multiple of the bare pair's; and its max, in ms. */
  liveP99VsFloor: 1.5,
  liveMaxMs: 5,
  /** CPU per side, as a multiple of the bare sender's or receiver's. */
  liveCpuVsFloor: 1.5,
  /** Voluntary context switches per frame, on each side. */
  liveWakeupsPerFrame: 1.1,
  /** Peak RSS per side above the bare sender's or receiver's. */
  liveRssOverFloorMiB: 6,
  /** Peak RSS of serve (both channels streaming in one process) above the bare sender's. */
  liveServeRssOverFloorMiB: 8,
  /** Heap growth from the start of the soak to its steady state that still counts as "none". */
  soakHeapGrowthBytes: 1024 * 1024,
  /** Exec to a connectable socket, above a bare `Bun.listen` program's. */
  startupOverFloorMs: 10,
} as const;

const HELP = `usage: audio-agent bench [--quick] [--only LIST] [--no-native] [--binary PATH] [--out DIR]

Measures the agent (sender and receiver in separate processes) against
Bun's own floor (a bare Bun program compiled in the same run) and a native
C baseline compiled with cc -O2, and prints a table. Flood and soak drive
the OutputServer/OutputClient paths from memory with metrics on; live and
start-up run the compiled agent's real output serve and output recv (live
also both channels in one serve process, beside input serve alone).

  --quick        short smoke run (small N, 3 s live); also AUDIO_AGENT_BENCH_QUICK=1
  --only LIST    comma-separated subset of: ${SCENARIOS.join(", ")}
  --no-native    skip the C baseline (agent figures only)
  --binary PATH  compiled agent for the live and start-up scenarios
  --out DIR      write <timestamp>.json and latest.md there
`;

export interface BenchReport {
  version: 1;
  date: string;
  plan: BenchPlan;
  machine: Record<string, string | number>;
  scenarios: Partial<Record<ScenarioName, object>>;
  rows: Row[];
  failures: string[];
  /** What was skipped or looked off, and why. */
  notes: string[];
}

const OPTIONS: FlagSpecs = {
  quick: { type: "boolean" },
  only: { type: "string", allowed: `a comma-separated list of ${SCENARIOS.join(", ")}` },
  "no-native": { type: "boolean" },
  binary: { type: "string", allowed: "a path" },
  out: { type: "string", allowed: "a directory" },
  help: { type: "boolean", short: "h" },
};

interface BenchOptions {
  quick?: boolean;
  only?: string;
  "no-native"?: boolean;
  binary?: string;
  out?: string;
  help?: boolean;
}

/** The orchestrator's options, or an Error to print. */
export function parseOptions(argv: string[]): { values: BenchOptions; only: string[] } | Error {
  try {
    const { values: read, positionals } = readFlags(argv, OPTIONS, "bench");
    if (positionals.length > 0) throw new Error(`unexpected argument ${shownValue(positionals[0])} (see audio-agent bench --help)`);
    const values = read as BenchOptions;
    // Empty is no value ("--only=$LIST" with LIST unset would run every scenario), as for every flag of the agent's.
    for (const [name, value] of Object.entries(read)) {
      if (value === "") throw new ConfigError(`bench: --${name} "" is not allowed: ${OPTIONS[name]!.allowed}`);
    }
    const only = values.only ? values.only.split(",").map((s) => s.trim()) : [...SCENARIOS];
    for (const name of only) {
      if (!(SCENARIOS as readonly string[]).includes(name)) throw new Error(`--only: unknown scenario ${shownValue(name)}; allowed: ${SCENARIOS.join(", ")}`);
    }
    return { values, only };
  } catch (e) {
    return e as Error;
  }
}

/** `audio-agent bench ...`; resolves with the exit code (2: bad arguments, 1: a scenario broke). */
export async function bench(argv: string[], host: BenchHost = {}): Promise<number> {
  const usage = (e: Error) => {
    // readFlags' errors name the command already.
    process.stderr.write(`audio-agent: ${e instanceof ConfigError ? e.message : `bench: ${e.message}`}\n`);
    return 2;
  };
  if (argv.includes("--driver")) {
    let driver: ReturnType<typeof parseDriverArgs>;
    try {
      driver = parseDriverArgs(argv);
    } catch (e) {
      return usage(e as Error);
    }
    return runDriver(driver);
  }
  const parsed = parseOptions(argv);
  if (parsed instanceof Error) return usage(parsed);
  const { values, only } = parsed;
  const out = host.out ?? ((text: string) => void process.stdout.write(text));
  if (values.help) {
    out(HELP);
    return 0;
  }
  const plan = PLANS[isQuick(values.quick, process.env.AUDIO_AGENT_BENCH_QUICK) ? "quick" : "full"];
  const log = (line: string) => process.stderr.write(`bench: ${line}\n`);
  const self = host.self ?? selfCommand();
  const work = mkdtempSync(join(tmpdir(), "aab-"));
  const runner = new Runner(work, log);
  const report: BenchReport = {
    version: 1,
    date: new Date().toISOString(),
    plan,
    machine: machine(),
    scenarios: {},
    rows: [],
    failures: [],
    notes: [],
  };
  const started = performance.now();
  try {
    const native = values["no-native"] ? undefined : prepareNative(work, log);
    if (!native?.path) report.notes.push(values["no-native"] ? "native baseline skipped (--no-native)" : "native baseline skipped: no working cc");
    if (native?.cc) report.machine.cc = native.cc;
    const nativeBin = native?.path;
    // The live and start-up scenarios run compiled programs: the agent, and the bare Bun floor built here by this same Bun.
    const compiled = only.includes("live") || only.includes("startup");
    const agentBin = compiled ? (values.binary ?? (await findAgentBinary(host, log, work))) : undefined;
    if (compiled && !agentBin) report.notes.push("live and start-up: no compiled agent (bun run build, or pass --binary); its figures are missing");
    if (agentBin) report.machine.agentBinary = agentBin;
    let bareBunBin: string | undefined;
    if (compiled) {
      log("building the bare Bun floor (floors/bare-bun.js, compile + bytecode)");
      const built = await buildBareBun(work);
      if (built instanceof Error) report.notes.push(`bare Bun floor skipped: it could not be built here (${built.message.split("\n")[0]})`);
      else bareBunBin = built;
    }
    // As a device runs them: from disk, not from the page cache of the build that wrote them (page-cache.ts).
    for (const program of [agentBin, bareBunBin]) {
      const kept = program && dropPageCache(program);
      if (kept) report.notes.push(`${program} was run from the page cache (${kept}): its resident memory may read several MiB high`);
    }
    const opus = compiled ? (host.opusSource ?? writeGeneratedOpus(join(work, "generated.opus"), 10)) : "";
    if (compiled && !host.opusSource) report.notes.push("live and start-up: no Opus file given; the agent's source was generated (160-byte 20 ms packets)");
    log(`${plan.name} run; agent drivers: ${self.join(" ")}; compiled agent: ${agentBin ?? "none"}; native: ${nativeBin ?? "skipped"}`);
    const load = loadAverage();
    if (load !== null && load > cpus().length / 2) {
      log(`load average ${load} on ${cpus().length} cores: other work shares this machine, figures will be noisy`);
    }

    const agentDriver = (role: "send" | "recv", socket: string, extra: Record<string, number | string>) => [
      ...self, "--driver", role, "--socket", socket,
      ...Object.entries(extra).flatMap(([k, v]) => [`--${k}`, String(v)]),
    ];
    const failed = (message: string) => {
      report.failures.push(message);
      log(`FAILED ${message}`);
    };
    const attempt = async <T>(name: string, what: string, run: () => Promise<T>): Promise<T | undefined> => {
      try {
        return await run();
      } catch (e) {
        failed(`${name} (${what}): ${(e as Error).message}`);
        return undefined;
      }
    };

    const flood = async (name: "flood160" | "flood4096" | "soak", frames: number, size: number, heapMs = 0) => {
      const timeout = 60_000 + frames / 1000; // generous: a stuck pair is killed, not waited on forever
      const repeats = name === "soak" ? 1 : plan.floodRepeats;
      type Kind = "native" | "agent" | "agentToNative" | "nativeToAgent";
      const runs: Record<Kind, (number | null)[]> = { native: [], agent: [], agentToNative: [], nativeToAgent: [] };
      const bestOf: Partial<Record<Kind, Pair>> = {};
      const sender = (kind: "native" | "agent", socket: string) =>
        kind === "native"
          ? [nativeBin!, "send", socket, "flood", String(frames), String(size)]
          : agentDriver("send", socket, { mode: "flood", frames, size, "heap-ms": heapMs });
      const receiver = (kind: "native" | "agent", socket: string) =>
        kind === "native"
          ? [nativeBin!, "recv", socket, String(frames), String(size), "0"]
          : agentDriver("recv", socket, { mode: "flood", frames, size, "heap-ms": heapMs });
      const one = async (kind: Kind, send: "native" | "agent", recv: "native" | "agent") => {
        const socket = runner.socketPath();
        const p = await attempt(name, kind, () => runner.pair(sender(send, socket), receiver(recv, socket), timeout * (kind === "native" ? 1 : 4)));
        runs[kind].push(framesPerSecond(p));
        if ((framesPerSecond(p) ?? 0) > (framesPerSecond(bestOf[kind]) ?? 0)) bestOf[kind] = p;
      };
      // Alternating runs, so every kind meets the same background load; the mixed pairs
      // (agent sender -> C receiver, C sender -> agent receiver) show which agent side limits.
      for (let i = 0; i < repeats; i++) {
        if (nativeBin) await one("native", "native", "native");
        await one("agent", "agent", "agent");
        if (nativeBin && name !== "soak") {
          await one("agentToNative", "agent", "native");
          await one("nativeToAgent", "native", "agent");
        }
      }
      report.scenarios[name] = { ...bestOf, runs };
      return { agentPair: bestOf.agent, nativePair: bestOf.native, mixed: { agentSender: bestOf.agentToNative, agentReceiver: bestOf.nativeToAgent } };
    };

    if (only.includes("flood160")) {
      log(`flood: ${plan.flood160} frames of 160 B`);
      const { agentPair, nativePair, mixed } = await flood("flood160", plan.flood160, 160);
      report.rows.push(...judge.flood("flood 160 B", agentPair, nativePair, TARGETS.flood160Ratio, mixed));
    }
    if (only.includes("flood4096")) {
      log(`flood: ${plan.flood4096} frames of 4096 B`);
      const { agentPair, nativePair, mixed } = await flood("flood4096", plan.flood4096, 4096);
      report.rows.push(...judge.flood("flood 4096 B", agentPair, nativePair, TARGETS.flood4096Ratio, mixed));
    }
    if (only.includes("soak")) {
      log(`soak: ${plan.soakFrames} frames of 160 B, heap sampled after a full GC every ${SOAK_SAMPLE_MS} ms`);
      const { agentPair, nativePair } = await flood("soak", plan.soakFrames, 160, SOAK_SAMPLE_MS);
      report.rows.push(...judge.soak(agentPair, nativePair, TARGETS.soakHeapGrowthBytes));
    }
    if (only.includes("live")) {
      const { figures, notes } = await runLive({
        runner,
        work,
        warmupMs: plan.liveWarmupSeconds * 1000,
        windowMs: plan.liveSeconds * 1000,
        agent: agentBin,
        bareBun: bareBunBin,
        native: nativeBin,
        source: opus,
        attempt: (what, run) => attempt("live", what, run),
        log,
      });
      report.scenarios.live = figures;
      report.notes.push(...notes);
      report.rows.push(...judge.live(figures, TARGETS));
    }
    if (only.includes("startup")) {
      log(`start-up: exec -> connectable, ${plan.startupRuns} warm rounds after one discarded, the programs taking turns`);
      const commands: Partial<Record<"agent" | "floor" | "floorModules" | "native", (socket: string) => string[]>> = {};
      // The device's command: a real Ogg source, paced in real time.
      if (agentBin) commands.agent = (socket) => [agentBin, "output", "serve", "--source", opus, "--format", "ogg", "--realtime", "--loop", "--socket", socket];
      if (bareBunBin) commands.floor = (socket) => [bareBunBin, "send", socket];
      // The bare sender that first loads the runtime modules the agent's roles load, as the live scenario's second pair.
      if (bareBunBin) commands.floorModules = (socket) => [bareBunBin, "send", socket, ...floorModuleArgs()];
      if (nativeBin) commands.native = (socket) => [nativeBin, "listen", socket];
      const measured = await attempt("startup", Object.keys(commands).join(", "), () => runner.startup(commands, plan.startupRuns));
      // A program that failed loses its own figures only.
      for (const [name, why] of Object.entries(measured?.failures ?? {})) failed(`startup (${name}): ${why}`);
      const { agent, floor, floorModules, native: nativeStartup } = measured?.figures ?? {};
      report.scenarios.startup = { agent, floor, floorModules, native: nativeStartup };
      report.rows.push(...judge.startup(agent, floor, nativeStartup, TARGETS, floorModules));
    }
  } finally {
    runner.dispose();
    rmSync(work, { recursive: true, force: true });
  }
  report.machine.benchSeconds = Math.round((performance.now() - started) / 1000);
  report.machine.loadAverageAtEnd = loadAverage() ?? "unknown";

  const table = formatTable(report.rows);
  const printed = [`\n${describeMachine(report)}\n\n${table}\n`, ...report.notes.map((note) => `note: ${note}\n`), ...report.failures.map((failure) => `FAILED: ${failure}\n`)];
  // A stdout that did not take the table fails the run, once the results are written: they are not lost with it.
  let lost: unknown;
  try {
    out(printed.join(""));
  } catch (e) {
    lost = e;
  }
  const outDir = values.out ?? host.resultsDir;
  if (outDir) {
    mkdirSync(outDir, { recursive: true });
    const stamp = report.date.replace(/[:.]/g, "-");
    const json = join(outDir, `${stamp}-${plan.name}.json`);
    writeFileSync(json, JSON.stringify(report, null, 2) + "\n");
    if (plan.name === "full" && only.length === SCENARIOS.length && report.failures.length === 0) {
      // Only a complete full run replaces the committed summary; smoke runs leave it alone.
      writeFileSync(join(outDir, "latest.md"), markdownReport(report, table));
      log(`wrote ${json} and ${join(outDir, "latest.md")}`);
    } else log(`wrote ${json} (latest.md is only written by a complete full run of every scenario)`);
  }
  if (lost !== undefined) throw lost;
  return report.failures.length > 0 ? 1 : 0;
}

/** How to start this program again as a bench driver. */
function selfCommand(): string[] {
  const compiled = Bun.main.startsWith("/$bunfs/") || import.meta.path.startsWith("/$bunfs/");
  // Compiled: argv is [binary, ...args]. From source: [bun, entry script, ...args]; both entries take "bench" first.
  return compiled ? [process.execPath, "bench"] : [process.execPath, Bun.main, "bench"];
}

async function findAgentBinary(host: BenchHost, log: (line: string) => void, work: string): Promise<string | undefined> {
  // Inside a compiled agent: the binary running now is the one to measure.
  const compiled = Bun.main.startsWith("/$bunfs/");
  if (!compiled) {
    if (host.agentBinary) return host.agentBinary(log, work);
    // From source without a host that builds one: a binary from `bun run build`, if there is one.
    const dist = join(import.meta.dir, "../../dist", `audio-agent-linux-${process.arch === "arm64" ? "arm64" : "x64"}`);
    return existsSync(dist) ? dist : undefined;
  }
  const check = Bun.spawnSync([process.execPath, "--version"], { stdout: "pipe", stderr: "ignore" });
  return check.exitCode === 0 && check.stdout.toString().startsWith("audio-agent") ? process.execPath : undefined;
}

interface NativeBaseline {
  path?: string;
  cc?: string;
}

/** Compiles the embedded baseline with `cc -O2`; without cc, says so and returns no path. */
function prepareNative(work: string, log: (line: string) => void): NativeBaseline | undefined {
  const cc = Bun.which("cc");
  if (!cc) {
    log("no cc on PATH: native baseline skipped, agent figures only");
    return undefined;
  }
  const source = join(work, "native-baseline.c");
  const binary = join(work, "native-baseline");
  writeFileSync(source, NATIVE_SOURCE);
  const built = Bun.spawnSync([cc, "-O2", "-o", binary, source], { stdout: "pipe", stderr: "pipe" });
  if (built.exitCode !== 0) {
    log(`cc -O2 failed, native baseline skipped:\n${built.stderr.toString()}`);
    return undefined;
  }
  const version = Bun.spawnSync([cc, "--version"], { stdout: "pipe", stderr: "ignore" }).stdout.toString().split("\n")[0];
  return { path: binary, cc: version };
}

/** CPU, cores, memory, kernel, Bun: enough to compare two result files. */
function machine(): Record<string, string | number> {
  const info: Record<string, string | number> = {};
  const list = cpus();
  info.cpu = list[0]?.model?.trim() || "unknown";
  info.cores = list.length;
  info.memoryGiB = +(totalmem() / 2 ** 30).toFixed(1);
  try {
    info.kernel = readFileSync("/proc/sys/kernel/osrelease", "utf8").trim();
  } catch {
    info.kernel = process.platform;
  }
  info.arch = process.arch;
  info.bun = Bun.version;
  info.loadAverageAtStart = loadAverage() ?? "unknown";
  return info;
}

/** 1-minute load average, null without procfs. */
function loadAverage(): number | null {
  try {
    return Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
  } catch {
    return null;
  }
}

function describeMachine(report: BenchReport): string {
  const m = report.machine;
  const parts = [`${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB`, `Linux ${m.kernel} ${m.arch}`, `bun ${m.bun}`];
  if (m.cc) parts.push(String(m.cc));
  parts.push(`load average ${m.loadAverageAtStart} at start, ${m.loadAverageAtEnd} at end`);
  return `${report.plan.name} run ${report.date} on ${parts.join("; ")} (${m.benchSeconds} s)`;
}

/** Bun's settings the run's processes had (childEnv): the device's, or what the caller set instead. */
function runtimeSettings(): string {
  const env = childEnv();
  return Object.keys(DEVICE_RUNTIME_ENV).map((key) => `${key}=${env[key]}`).join(" ");
}

function markdownReport(report: BenchReport, table: string): string {
  const p = report.plan;
  const live = report.scenarios.live as { source?: string; bare?: unknown; agent?: unknown } | undefined;
  return [
    "# audio-agent benchmark: latest run",
    "",
    `Written by \`bun run bench\` (src/bench/bench.ts). ${describeMachine(report)}.`,
    "",
    `Plan (${p.name}): flood ${p.flood160} x 160 B and ${p.flood4096} x 4096 B, soak ${p.soakFrames} x 160 B (in-memory drivers` +
      " through OutputServer/FrameQueue/FrameWriter and OutputClient/FrameParser with their Instruments and --metrics on);" +
      ` live ${LIVE_RATE} frames/s, a ${p.liveSeconds} s window after ${p.liveWarmupSeconds} s of warm-up: the compiled agent's` +
      ` \`output serve --source ${live?.source ? basename(live.source) : "FILE"} --format ogg --realtime --loop\` -> \`output recv --sink FILE --format ogg\`` +
      `${live?.bare && live.agent ? " side by side with the bare Bun pair, in one window" : ""} (no --metrics; a stats line every ${p.liveWarmupSeconds} s, the first as the window opens, as a long-running process writes one every 60 s), each process measured from outside (/proc: schedstat, voluntary switches, VmHWM), latency over` +
      ` each receiver's last 1024 reads (one age a read, its first frame's); start-up median of ${p.startupRuns} warm rounds. Bare Bun: src/bench/floors/bare-bun.js, compiled in the run like the agent.` +
      " Native: src/bench/native-baseline.c, cc -O2. \"agent vs\" sets the agent against bare Bun where there is a figure, else native." +
      ` Every process the run starts has ${runtimeSettings()}, as the device's service starts the agent (src/bench/device-runtime.ts).`,
    "",
    table,
    "",
    ...(report.notes.length > 0 ? ["Notes:", ...report.notes.map((n) => `- ${n}`), ""] : []),
    ...(report.failures.length > 0 ? ["Failures:", ...report.failures.map((f) => `- ${f}`), ""] : []),
  ].join("\n");
}

export type { HeapSample, Pair, StartupFigures };
