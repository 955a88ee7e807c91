/**
 * Turns bench results into table rows: one figure per row, the agent beside
 * bare Bun doing the same job (the floor) and the native baseline, the agent
 * against its reference, the goal and PASS / MISS. Goals are not assertions;
 * a row without a goal is information.
 */
import type { DriverResult, HeapSample } from "./driver.ts";
import { STREAMING_RUNTIME_MODULES } from "./floor.ts";
import type { Footprint, LiveFigures, PairFigures } from "./live.ts";

export interface Row {
  scenario: string;
  metric: string;
  unit: string;
  agent: number | null;
  /** A bare Bun program doing the same job (on the "Bun floor" rows: Bun alone). */
  floor: number | null;
  native: number | null;
  /** The agent against its reference (the floor when there is one, else native), e.g. "1.31x bare", "+18.2 over bare". */
  versus: string;
  /** The goal in words, e.g. ">= 40% of native". */
  target: string;
  status: "PASS" | "MISS" | "";
}

interface PairLike {
  send: DriverResult;
  recv: DriverResult;
  rssKiB: { send: number; recv: number };
}

interface StartupLike {
  medianMs: number;
  minMs: number;
  appearMedianMs: number;
}

/** The live and start-up goals (TARGETS in bench.ts). */
export interface FootprintGoals {
  liveP99VsFloor: number;
  liveMaxMs: number;
  liveCpuVsFloor: number;
  liveWakeupsPerFrame: number;
  liveRssOverFloorMiB: number;
  liveServeRssOverFloorMiB: number;
  startupOverFloorMs: number;
}

const ratio = (a: number | null, n: number | null) => (a === null || n === null || n === 0 ? null : a / n);
const status = (ok: boolean | null): Row["status"] => (ok === null ? "" : ok ? "PASS" : "MISS");
const known = (...xs: (number | null | undefined)[]) => xs.every((x) => x !== null && x !== undefined);

/** Frames per second through the pair, as the receiver saw them (first frame of its window to the last). */
export function framesPerSecond(p: PairLike | undefined): number | null {
  if (!p || p.recv.windowMs <= 0) return null;
  return (p.recv.windowFrames / p.recv.windowMs) * 1000;
}

function cpuMicrosPerFrame(r: DriverResult | undefined): number | null {
  if (!r || r.windowFrames <= 0) return null;
  return (r.cpuSeconds / r.windowFrames) * 1e6;
}

/** The name of the bare floor that loads the streaming roles' runtime modules, where the agent is set against it. */
const WITH_MODULES = "bare + modules";

/**
 * What Bun's runtime modules that every streaming role loads cost on their
 * own: the waking floor with them, less the one without (measured in two
 * parts of the run, each alone with its own warm-up and window).
 */
function runtimeModulesMiB(live: LiveFigures | undefined): number | null {
  return live?.modules && live.tick ? live.modules.peakRssMiB - live.tick.peakRssMiB : null;
}

interface Figures {
  agent?: number | null;
  floor?: number | null;
  native?: number | null;
  /** What the floor is called where the agent is set against it; "bare" unless said. */
  floorName?: string;
}

/**
 * One row; the agent is set against the floor when there is one, else against
 * native: as a ratio, or as a difference where the goal is one (memory, time).
 */
function row(scenario: string, metric: string, unit: string, f: Figures, target = "", ok: boolean | null = null, by: "ratio" | "difference" = "ratio"): Row {
  const agent = f.agent ?? null;
  const floor = f.floor ?? null;
  const native = f.native ?? null;
  const [reference, name] = floor !== null ? [floor, f.floorName ?? "bare"] : [native, "native"];
  let versus = "-";
  if (agent !== null && reference !== null) {
    if (by === "difference") versus = `${agent >= reference ? "+" : ""}${formatNumber(agent - reference)} over ${name}`;
    else {
      const r = ratio(agent, reference);
      if (r !== null) versus = `${r >= 10 ? r.toFixed(0) : r >= 0.1 ? r.toFixed(2) : r.toFixed(3)}x ${name}`;
    }
  }
  return { scenario, metric, unit, agent, floor, native, versus, target, status: status(ok) };
}

/**
 * Heap of one side over the soak, after warm-up (the first 10% of frames:
 * JIT, socket buffers, and the adaptive optimizer growing the send queue
 * under flood pressure all settle there): the start (median of the first
 * third of the samples after it), the steady state (median of the last
 * third), their difference, and the trend in bytes per million frames (a
 * leak keeps climbing; a warm-up step does not).
 */
function heapGrowth(samples: HeapSample[] | undefined, totalFrames: number) {
  if (!samples || samples.length < 3) return null;
  const warm = samples.filter((s) => s.frames >= totalFrames * 0.1);
  const use = warm.length >= 3 ? warm : samples;
  const third = Math.max(1, Math.floor(use.length / 3));
  const med = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  const last = use.slice(-third);
  const steady = med(last.map((s) => s.heapSize));
  const first = use.slice(0, third);
  const start = med(first.map((s) => s.heapSize));
  // Least squares of heap bytes on frames.
  const n = use.length;
  const mx = use.reduce((a, s) => a + s.frames, 0) / n;
  const my = use.reduce((a, s) => a + s.heapSize, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (const s of use) {
    sxy += (s.frames - mx) * (s.heapSize - my);
    sxx += (s.frames - mx) ** 2;
  }
  return {
    startBytes: start,
    steadyBytes: steady,
    growthBytes: steady - start,
    objectGrowth: med(last.map((s) => s.objectCount)) - med(first.map((s) => s.objectCount)),
    bytesPerMillionFrames: sxx > 0 ? (sxy / sxx) * 1e6 : 0,
    samples: use.length,
    /** Before any traffic, for scale. */
    idleBytes: samples[0].heapSize,
  };
}

export const judge = {
  flood(
    label: string,
    agent: PairLike | undefined,
    native: PairLike | undefined,
    ratioGoal: number,
    mixed: { agentSender?: PairLike; agentReceiver?: PairLike } = {},
  ): Row[] {
    const a = framesPerSecond(agent);
    const n = framesPerSecond(native);
    const bytesPerFrame = (p: PairLike | undefined) => (p && p.recv.frames > 0 ? p.recv.bytes / p.recv.frames : 0);
    const mbs = (fps: number | null, p: PairLike | undefined) => (fps === null ? null : (fps * bytesPerFrame(p)) / 1e6);
    const r = ratio(a, n);
    return [
      row(label, "throughput", "frames/s", { agent: a, native: n }, `>= ${ratioGoal * 100}% of native`, r === null ? null : r >= ratioGoal),
      row(label, "throughput (wire bytes)", "MB/s", { agent: mbs(a, agent), native: mbs(n, native) }),
      row(label, "agent sender -> C receiver", "frames/s", { agent: framesPerSecond(mixed.agentSender), native: n }),
      row(label, "C sender -> agent receiver", "frames/s", { agent: framesPerSecond(mixed.agentReceiver), native: n }),
      row(label, "sender CPU per frame", "us", { agent: cpuMicrosPerFrame(agent?.send), native: cpuMicrosPerFrame(native?.send) }),
      row(label, "receiver CPU per frame", "us", { agent: cpuMicrosPerFrame(agent?.recv), native: cpuMicrosPerFrame(native?.recv) }),
    ];
  },

  /**
   * The agent's real roles at 50 frames/s against the bare Bun pair (the floor
   * for the same job) and native; then Bun alone, idle and waking 50 times a
   * second, which no Bun program goes below.
   */
  live(live: LiveFigures | undefined, goals: FootprintGoals): Row[] {
    const label = "live 50/s";
    const figure = (get: (p: PairFigures) => number | null | undefined): Figures => ({
      agent: live?.agent ? get(live.agent) : null,
      floor: live?.bare ? get(live.bare) : null,
      native: live?.native ? get(live.native) : null,
    });
    const latency = (k: "p50" | "p99" | "max") => figure((p) => p.latencyMs?.[k]);
    const p99 = latency("p99");
    const max = latency("max");
    const rows = [
      row(label, "one-way latency p50", "ms", latency("p50")),
      row(label, "one-way latency p99", "ms", p99, `<= ${goals.liveP99VsFloor}x bare`, known(p99.agent, p99.floor) ? p99.agent! <= goals.liveP99VsFloor * p99.floor! : null),
      row(label, "one-way latency max", "ms", max, `<= ${goals.liveMaxMs} ms`, known(max.agent) ? max.agent! <= goals.liveMaxMs : null),
    ];
    for (const side of ["send", "recv"] as const) {
      const who = side === "send" ? "sender" : "receiver";
      const cpu = figure((p) => p[side].cpuPercent);
      const wakeups = figure((p) => p[side].wakeupsPerFrame);
      const rss = figure((p) => p[side].peakRssMiB);
      rows.push(
        row(label, `${who} CPU`, "% core", cpu, `<= ${goals.liveCpuVsFloor}x bare`, known(cpu.agent, cpu.floor) ? cpu.agent! <= goals.liveCpuVsFloor * cpu.floor! : null),
        row(label, `${who} wake-ups per frame`, "switches", wakeups, `<= ${goals.liveWakeupsPerFrame}`, known(wakeups.agent) ? wakeups.agent! <= goals.liveWakeupsPerFrame : null),
        row(label, `${who} wake-ups per frame, main thread`, "switches", figure((p) => p[side].mainThreadWakeupsPerFrame)),
        row(label, `${who} RSS (max)`, "MiB", rss, `<= bare + ${goals.liveRssOverFloorMiB} MiB`, known(rss.agent, rss.floor) ? rss.agent! <= rss.floor! + goals.liveRssOverFloorMiB : null, "difference"),
        row(label, `${who} RSS (max), against the bare pair with the same runtime modules`, "MiB", { agent: rss.agent, floor: live?.bareModules?.[side].peakRssMiB, floorName: WITH_MODULES }, "", null, "difference"),
        row(label, `${who} working set (pages touched in the window)`, "MiB", figure((p) => p[side].workingSetMiB), "", null, "difference"),
        row(label, `${who} anonymous memory (heap, buffers)`, "MiB", figure((p) => p[side].anonymousMiB), "", null, "difference"),
      );
    }
    const bun = (what: string, f: Footprint | undefined, wakeups: "per second" | "per tick") => [
      row("Bun floor", `${what}: RSS (max)`, "MiB", { floor: f?.peakRssMiB }),
      row("Bun floor", `${what}: CPU`, "% core", { floor: f?.cpuPercent }),
      row("Bun floor", `${what}: wake-ups ${wakeups}`, "switches", { floor: wakeups === "per tick" ? f?.wakeupsPerFrame : f?.wakeupsPerSecond }),
      ...(wakeups === "per tick" ? [row("Bun floor", `${what}: wake-ups per tick, main thread`, "switches", { floor: f?.mainThreadWakeupsPerFrame })] : []),
    ];
    const modules = `waking 50/s + ${STREAMING_RUNTIME_MODULES.join(", ")}`;
    return [
      ...rows,
      ...this.both(live, goals),
      ...bun("idle", live?.idle, "per second"),
      ...bun("waking 50/s", live?.tick, "per tick"),
      row("Bun floor", `${modules}: RSS (max)`, "MiB", { floor: live?.modules?.peakRssMiB }),
      row("Bun floor", `${modules}: anonymous memory`, "MiB", { floor: live?.modules?.anonymousMiB }),
      row("Bun floor", "those runtime modules' own RSS (over waking 50/s)", "MiB", { floor: runtimeModulesMiB(live) }),
    ];
  },

  /**
   * Both channels streaming: `serve` in one process against the bare sender
   * (the floor one process pays), and the two-process way (output serve and
   * input serve) against two bare processes.
   */
  both(live: LiveFigures | undefined, goals: FootprintGoals): Row[] {
    const label = "live, both channels";
    const serve = live?.both?.serve;
    const rss = { agent: serve?.peakRssMiB, floor: live?.bare?.send.peakRssMiB };
    const apart = live?.both?.inputServe && live.agent ? live.agent.send.peakRssMiB + live.both.inputServe.peakRssMiB : null;
    const bareTwo = live?.bare ? live.bare.send.peakRssMiB + live.bare.recv.peakRssMiB : null;
    return [
      row(label, "serve RSS (max)", "MiB", rss, `<= bare + ${goals.liveServeRssOverFloorMiB} MiB`, known(rss.agent, rss.floor) ? rss.agent! <= rss.floor! + goals.liveServeRssOverFloorMiB : null, "difference"),
      row(label, "serve RSS (max), against the bare sender with the same runtime modules", "MiB", { agent: rss.agent, floor: live?.bareModules?.send.peakRssMiB, floorName: WITH_MODULES }, "", null, "difference"),
      row(label, "output serve + input serve RSS (max), two processes", "MiB", { agent: apart, floor: bareTwo }, "", null, "difference"),
      row(label, "serve working set (pages touched in the window)", "MiB", { agent: serve?.workingSetMiB, floor: live?.bare?.send.workingSetMiB }, "", null, "difference"),
      row(label, "serve anonymous memory (heap, buffers)", "MiB", { agent: serve?.anonymousMiB, floor: live?.bare?.send.anonymousMiB }, "", null, "difference"),
      row(label, "serve CPU", "% core", { agent: serve?.cpuPercent }),
      row(label, "serve wake-ups per frame (both channels' frames)", "switches", { agent: serve?.wakeupsPerFrame }),
      row(label, "serve frames", "frames/s", { agent: live?.both?.framesPerSecond }),
    ];
  },

  soak(agent: PairLike | undefined, native: PairLike | undefined, growthGoal: number): Row[] {
    const label = "soak";
    const rows = [row(label, "throughput (agent: full GC every 100 ms)", "frames/s", { agent: framesPerSecond(agent), native: framesPerSecond(native) })];
    for (const side of ["send", "recv"] as const) {
      const g = heapGrowth(agent?.[side].heap, agent?.[side].frames ?? 0);
      const who = side === "send" ? "sender" : "receiver";
      rows.push(
        row(label, `${who} heap growth (start -> steady)`, "KiB", { agent: g ? g.growthBytes / 1024 : null }, `<= ${growthGoal / 1024} KiB`, g ? g.growthBytes <= growthGoal : null),
        row(label, `${who} heap trend`, "KiB/M frames", { agent: g ? g.bytesPerMillionFrames / 1024 : null }),
        row(label, `${who} heap after GC (steady)`, "MiB", { agent: g ? g.steadyBytes / 2 ** 20 : null }),
      );
    }
    rows.push(
      row(label, "sender RSS (max)", "MiB", { agent: agent ? agent.rssKiB.send / 1024 : null, native: native ? native.rssKiB.send / 1024 : null }),
      row(label, "receiver RSS (max)", "MiB", { agent: agent ? agent.rssKiB.recv / 1024 : null, native: native ? native.rssKiB.recv / 1024 : null }),
    );
    return rows;
  },

  /**
   * Exec to a connectable socket: the agent's `output serve` against a bare `Bun.listen` program
   * and a C listener; and against the bare program that first loads the agent's runtime modules.
   */
  startup(agent: StartupLike | undefined, floor: StartupLike | undefined, native: StartupLike | undefined, goals: FootprintGoals, floorModules?: StartupLike): Row[] {
    const connect = { agent: agent?.medianMs, floor: floor?.medianMs, native: native?.medianMs };
    return [
      row(
        "start-up",
        "exec -> connectable (median)",
        "ms",
        connect,
        `<= bare + ${goals.startupOverFloorMs} ms`,
        known(connect.agent, connect.floor) ? connect.agent! <= connect.floor! + goals.startupOverFloorMs : null,
        "difference",
      ),
      row("start-up", "exec -> connectable (median), against the bare sender with the same runtime modules", "ms", { agent: agent?.medianMs, floor: floorModules?.medianMs, floorName: WITH_MODULES }, "", null, "difference"),
      row("start-up", "exec -> socket file (median)", "ms", { agent: agent?.appearMedianMs, floor: floor?.appearMedianMs, native: native?.appearMedianMs }, "", null, "difference"),
    ];
  },
};

/** Three significant digits, thousands grouped for large values. */
export function formatNumber(x: number | null): string {
  if (x === null || !Number.isFinite(x)) return "-";
  const abs = Math.abs(x);
  if (abs >= 1000) return Math.round(x).toLocaleString("en-US");
  if (abs >= 100) return x.toFixed(0);
  if (abs >= 10) return x.toFixed(1);
  if (abs >= 1) return x.toFixed(2);
  if (abs === 0) return "0";
  return x.toPrecision(2);
}

/** A Markdown table (readable as plain text too). */
export function formatTable(rows: Row[]): string {
  const head = ["scenario", "metric", "unit", "agent", "bare Bun", "native", "agent vs", "goal", ""];
  const body = rows.map((r) => [r.scenario, r.metric, r.unit, formatNumber(r.agent), formatNumber(r.floor), formatNumber(r.native), r.versus, r.target, r.status]);
  const numeric = (i: number) => i >= 3 && i <= 6;
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (numeric(i) ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (numeric(i) ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`;
  return [line(head), rule, ...body.map(line)].join("\n");
}
