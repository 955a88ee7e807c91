/**
 * A process measured from outside, through /proc, so the agent's roles run
 * exactly as shipped (no instrumentation of their own) and every program in
 * the benchmark is measured the same way. Linux only; without procfs the
 * figures are empty.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs";

/** What one thread has used so far. */
interface ThreadUse {
  name: string;
  /** The process's first thread, where its JavaScript runs. */
  main: boolean;
  /** Time on a CPU, ns (/proc/PID/task/TID/schedstat; the tick-based utime/stime are 10 ms coarse). */
  cpuNs: number;
  /** Voluntary context switches: each is a sleep the thread woke from. */
  voluntarySwitches: number;
}

/** Every live thread of a process at one moment, by thread id. */
export type ProcessSample = Map<string, ThreadUse>;

/** What a process used between two samples: in all, and by thread name (JS thread, mimalloc's scavenger, GC helpers...). */
export interface ProcessUse {
  cpuNs: number;
  voluntarySwitches: number;
  /** Those of the main (JavaScript) thread alone. */
  mainThreadSwitches: number;
  /** Threads in the later sample (with withEnded, those seen within the window). */
  threads: number;
  byThread: Record<string, { cpuMs: number; voluntarySwitches: number }>;
}

/** The `NAME:  N kB` line of a /proc file's text (status, smaps_rollup), in KiB; undefined when it has none. */
function kibField(text: string, name: string): number | undefined {
  const match = new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text);
  return match ? Number(match[1]) : undefined;
}

/** A `/proc/PID/status` field in KiB (VmRSS, VmHWM, RssAnon), 0 when the process is gone or has no procfs. */
export function statusKiB(pid: number | "self", field: "VmRSS" | "VmHWM" | "RssAnon"): number {
  try {
    return kibField(readFileSync(`/proc/${pid}/status`, "utf8"), field) ?? 0;
  } catch {
    return 0;
  }
}

/**
 * Starts counting `pid`'s working set: clears the referenced bits of its
 * pages (/proc/PID/clear_refs, owner-writable); false when it cannot.
 */
export function clearReferenced(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "1");
    return true;
  } catch {
    return false;
  }
}

/**
 * What `pid` holds resident (KiB, /proc/PID/smaps_rollup): `referenced`, the
 * pages it touched since clearReferenced (its working set over that time:
 * what it needs, where RSS also counts pages touched once at start-up), and
 * `anonymous`, what no file backs (heap and buffers, which without swap can
 * never be reclaimed). Undefined when the process is gone or unreadable.
 */
export function residentKiB(pid: number): { referenced: number; anonymous: number } | undefined {
  try {
    const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
    const referenced = kibField(rollup, "Referenced");
    const anonymous = kibField(rollup, "Anonymous");
    return referenced === undefined || anonymous === undefined ? undefined : { referenced, anonymous };
  } catch {
    return undefined;
  }
}

/** CPU time and voluntary switches of every live thread of `pid`; undefined when the process is gone. */
export function sampleProcess(pid: number): ProcessSample | undefined {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  const sample: ProcessSample = new Map();
  for (const tid of tids) {
    try {
      const task = `/proc/${pid}/task/${tid}`;
      const status = readFileSync(`${task}/status`, "utf8");
      sample.set(tid, {
        main: tid === String(pid),
        name: /^Name:\s+(.*)$/m.exec(status)?.[1] ?? "?",
        cpuNs: Number(readFileSync(`${task}/schedstat`, "utf8").split(" ")[0]),
        voluntarySwitches: Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0),
      });
    } catch {
      // the thread ended while we read
    }
  }
  return sample;
}

/**
 * `now` with the threads of `seen` that have ended since, as they were last
 * seen: samples taken through a window, each folded into the last this way,
 * keep the share of a thread that ends within it (a JavaScriptCore helper
 * that Bun lets go) up to its last sample, where `now` alone would lose it.
 */
export function withEnded(seen: ProcessSample, now: ProcessSample): ProcessSample {
  const all = new Map(now);
  for (const [tid, use] of seen) if (!all.has(tid)) all.set(tid, use);
  return all;
}

/**
 * What a process used between two samples, thread by thread: a thread born
 * in between counts from zero; one that ended in between takes its share
 * with it, unless `after` keeps it (withEnded).
 */
export function used(before: ProcessSample, after: ProcessSample): ProcessUse {
  const use: ProcessUse = { cpuNs: 0, voluntarySwitches: 0, mainThreadSwitches: 0, threads: after.size, byThread: {} };
  for (const [tid, now] of after) {
    const then = before.get(tid);
    const cpuNs = now.cpuNs - (then?.cpuNs ?? 0);
    const switches = now.voluntarySwitches - (then?.voluntarySwitches ?? 0);
    use.cpuNs += cpuNs;
    use.voluntarySwitches += switches;
    if (now.main) use.mainThreadSwitches += switches;
    const named = (use.byThread[now.name] ??= { cpuMs: 0, voluntarySwitches: 0 });
    named.cpuMs = +(named.cpuMs + cpuNs / 1e6).toFixed(3);
    named.voluntarySwitches += switches;
  }
  return use;
}
