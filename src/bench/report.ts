/**
 * Turns bench results into table rows: one figure per row, agent and native
 * side by side, their ratio, the goal and PASS / MISS. Goals are not
 * assertions; a row without a goal is information.
 */
import type { DriverResult, HeapSample } from "./driver.ts";

export interface Row {
  scenario: string;
  metric: string;
  unit: string;
  agent: number | null;
  native: number | null;
  /** agent / native. */
  ratio: number | null;
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

const ratio = (a: number | null, n: number | null) => (a === null || n === null || n === 0 ? null : a / n);
const status = (ok: boolean | null): Row["status"] => (ok === null ? "" : ok ? "PASS" : "MISS");

/** Frames per second through the pair, as the receiver saw them (first frame of its window to the last). */
export function framesPerSecond(p: PairLike | undefined): number | null {
  if (!p || p.recv.windowMs <= 0) return null;
  return (p.recv.windowFrames / p.recv.windowMs) * 1000;
}

function cpuPercent(r: DriverResult | undefined): number | null {
  if (!r || r.windowMs <= 0) return null;
  return (r.cpuSeconds / (r.windowMs / 1000)) * 100;
}

/** Voluntary context switches per frame: how often the process slept and woke (every thread). */
function wakeupsPerFrame(r: DriverResult | undefined): number | null {
  if (!r?.usage || r.windowFrames <= 0) return null;
  return r.usage.voluntarySwitches / r.windowFrames;
}

function cpuMicrosPerFrame(r: DriverResult | undefined): number | null {
  if (!r || r.windowFrames <= 0) return null;
  return (r.cpuSeconds / r.windowFrames) * 1e6;
}

function row(
  scenario: string,
  metric: string,
  unit: string,
  agent: number | null,
  native: number | null,
  target = "",
  ok: boolean | null = null,
): Row {
  return { scenario, metric, unit, agent, native, ratio: ratio(agent, native), target, status: status(ok) };
}

/**
 * Heap of one side over the soak, after warm-up (the first 10% of frames:
 * JIT, socket buffers, and the adaptive optimizer growing the send queue
 * under flood pressure all settle there): the start (median of the first
 * third of the samples after it), the steady state (median of the last
 * third), their difference, and the trend in bytes per million frames (a
 * leak keeps climbing; a warm-up step does not).
 */
export function heapGrowth(samples: HeapSample[] | undefined, totalFrames: number) {
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
      row(label, "throughput", "frames/s", a, n, `>= ${ratioGoal * 100}% of native`, r === null ? null : r >= ratioGoal),
      row(label, "throughput (wire bytes)", "MB/s", mbs(a, agent), mbs(n, native)),
      row(label, "agent sender -> C receiver", "frames/s", framesPerSecond(mixed.agentSender), n),
      row(label, "C sender -> agent receiver", "frames/s", framesPerSecond(mixed.agentReceiver), n),
      row(label, "sender CPU per frame", "us", cpuMicrosPerFrame(agent?.send), cpuMicrosPerFrame(native?.send)),
      row(label, "receiver CPU per frame", "us", cpuMicrosPerFrame(agent?.recv), cpuMicrosPerFrame(native?.recv)),
    ];
  },

  live(
    agent: PairLike | undefined,
    native: PairLike | undefined,
    goals: { liveP99VsNative: number; liveCpuPercent: number; liveRssMiB: number },
  ): Row[] {
    const lat = (p: PairLike | undefined, k: "p50" | "p99" | "max") => p?.recv.latencyMs?.[k] ?? null;
    const label = "live 50/s";
    const ap99 = lat(agent, "p99");
    const np99 = lat(native, "p99");
    const mib = (kib: number | undefined) => (kib ? kib / 1024 : null);
    const cpu = (side: "send" | "recv") => {
      const a = cpuPercent(agent?.[side]);
      return row(label, `${side === "send" ? "sender" : "receiver"} CPU`, "% core", a, cpuPercent(native?.[side]), `<= ${goals.liveCpuPercent}%`, a === null ? null : a <= goals.liveCpuPercent);
    };
    const rss = (side: "send" | "recv") => {
      const a = mib(agent?.rssKiB[side]);
      return row(label, `${side === "send" ? "sender" : "receiver"} RSS (max)`, "MiB", a, mib(native?.rssKiB[side]), `<= ${goals.liveRssMiB} MiB`, a === null ? null : a <= goals.liveRssMiB);
    };
    return [
      row(label, "one-way latency p50", "ms", lat(agent, "p50"), lat(native, "p50")),
      row(label, "one-way latency p99", "ms", ap99, np99, `<= ${goals.liveP99VsNative}x native`, ap99 === null || np99 === null ? null : ap99 <= goals.liveP99VsNative * np99),
      row(label, "one-way latency max", "ms", lat(agent, "max"), lat(native, "max")),
      cpu("send"),
      cpu("recv"),
      row(label, "sender wake-ups per frame", "switches", wakeupsPerFrame(agent?.send), wakeupsPerFrame(native?.send)),
      row(label, "receiver wake-ups per frame", "switches", wakeupsPerFrame(agent?.recv), wakeupsPerFrame(native?.recv)),
      rss("send"),
      rss("recv"),
    ];
  },

  soak(agent: PairLike | undefined, native: PairLike | undefined, growthGoal: number): Row[] {
    const label = "soak";
    const rows = [row(label, "throughput (agent: full GC every 100 ms)", "frames/s", framesPerSecond(agent), framesPerSecond(native))];
    for (const side of ["send", "recv"] as const) {
      const g = heapGrowth(agent?.[side].heap, agent?.[side].frames ?? 0);
      const who = side === "send" ? "sender" : "receiver";
      rows.push(
        row(label, `${who} heap growth (start -> steady)`, "KiB", g ? g.growthBytes / 1024 : null, null, `<= ${growthGoal / 1024} KiB`, g ? g.growthBytes <= growthGoal : null),
        row(label, `${who} heap trend`, "KiB/M frames", g ? g.bytesPerMillionFrames / 1024 : null, null),
        row(label, `${who} heap after GC (steady)`, "MiB", g ? g.steadyBytes / 2 ** 20 : null, null),
      );
    }
    rows.push(
      row(label, "sender RSS (max)", "MiB", agent ? agent.rssKiB.send / 1024 : null, native ? native.rssKiB.send / 1024 : null),
      row(label, "receiver RSS (max)", "MiB", agent ? agent.rssKiB.recv / 1024 : null, native ? native.rssKiB.recv / 1024 : null),
    );
    return rows;
  },

  startup(agent: StartupLike | undefined, native: StartupLike | undefined, goalMs: number): Row[] {
    const a = agent?.medianMs ?? null;
    return [
      row("start-up", "exec -> connectable (median)", "ms", a, native?.medianMs ?? null, `<= ${goalMs} ms`, a === null ? null : a <= goalMs),
      row("start-up", "exec -> socket file (median)", "ms", agent?.appearMedianMs ?? null, native?.appearMedianMs ?? null),
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
  const head = ["scenario", "metric", "unit", "agent", "native", "agent/native", "goal", ""];
  const body = rows.map((r) => [
    r.scenario,
    r.metric,
    r.unit,
    formatNumber(r.agent),
    formatNumber(r.native),
    r.ratio === null ? "-" : `${r.ratio >= 10 ? r.ratio.toFixed(0) : r.ratio >= 0.1 ? r.ratio.toFixed(2) : r.ratio.toFixed(3)}x`,
    r.target,
    r.status,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (i >= 3 && i <= 5 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(" | ")} |`;
  const rule = `|${widths.map((w, i) => (i >= 3 && i <= 5 ? `${"-".repeat(w + 1)}:` : "-".repeat(w + 2))).join("|")}|`;
  return [line(head), rule, ...body.map(line)].join("\n");
}
