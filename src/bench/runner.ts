/**
 * Runs the benchmark's processes: a sender and a receiver as a pair (the
 * agent's drivers or the native baseline), programs measured from outside
 * over a window while they stream (live), and start-up probes that time exec
 * to a connectable socket. Everything lives in one private temp dir.
 */
import { existsSync, watch } from "node:fs";
import { join } from "node:path";
import { within } from "../io/within.ts";
import { wallClockMs } from "../protocol/index.ts";
import { DEVICE_RUNTIME_ENV } from "./device-runtime.ts";
import type { DriverResult } from "./driver.ts";
import { clearReferenced, residentKiB, sampleProcess, statusKiB, used, withEnded, type ProcessSample, type ProcessUse } from "./process-figures.ts";

/** How often a live run samples its programs' threads within the window (withEnded). */
const WINDOW_SAMPLE_MS = 250;

export interface Pair {
  send: DriverResult;
  recv: DriverResult;
  /** Peak RSS (KiB): the VmHWM each side reported at its end, or the largest VmRSS sampled from outside where that is more. */
  rssKiB: { send: number; recv: number };
  wallMs: number;
}

/** One program of a live run. */
export interface LiveProgram {
  name: string;
  cmd: string[];
  /** The next program starts once this holds (e.g. this one's socket file exists). */
  ready?: () => boolean;
  /** "signal": SIGTERM after the window (its final log lines follow); "exit": it ends by itself. */
  ends: "signal" | "exit";
  /**
   * Programs of one group stand or fall together: one that cannot start, never gets ready, ends
   * before the window is over or outlives its SIGTERM fails its group alone (the group's programs
   * killed, the later ones not started, the reason in the run's `failures`), and the other groups
   * are measured on. Programs given no group form one group together.
   */
  group?: string;
}

/** One program of a live run, measured from outside. */
export interface LiveProcess {
  /** Its program's name. */
  name: string;
  /** CPU time, voluntary switches and threads within the window. */
  used: ProcessUse;
  /** VmHWM at the end of the window: the most it was resident since it started. */
  peakRssKiB: number;
  /** Resident pages it touched within the window, and its anonymous memory at the end (residentKiB); null when unknown. */
  workingSetKiB: number | null;
  anonymousKiB: number | null;
  exitCode: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export interface LiveRun {
  /** When the window opened (Unix ms): programs measured in one run share it. */
  openedAtMs: number;
  windowMs: number;
  /** Frames the run's counter saw within the window on each channel it counts, when it has one. */
  windowFrames?: number[];
  /** The programs of groups that did not fail, by name. */
  processes: Record<string, LiveProcess>;
  /** Why each failed group failed, by group; the run throws only when every group failed. */
  failures: Record<string, string>;
}

export interface StartupFigures {
  runs: number[];
  medianMs: number;
  minMs: number;
  appearMedianMs: number;
}

/**
 * Environment for children: ours without anything that configures the agent
 * behind the bench's back, with the log the bench reads (text lines at info:
 * `stats`, `stopped`) and no HTTP endpoints (what the live rows measure; two
 * children would also compete for one port), whatever a device's config file
 * (/etc/audio-agent.json) says; the rest of that file applies, as on the device.
 * Bun runs as the device's service runs it (DEVICE_RUNTIME_ENV), unless the
 * caller sets one of those variables itself (to compare with Bun's defaults).
 */
export function childEnv(parent: Record<string, string | undefined> = process.env): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(parent)) {
    if (value === undefined || key.startsWith("AUDIO_AGENT_") || key.startsWith("JETKVM_AUDIO_")) continue;
    env[key] = value;
  }
  env.AUDIO_AGENT_LOG_LEVEL = "info";
  env.AUDIO_AGENT_LOG_FORMAT = "text";
  env.AUDIO_AGENT_METRICS = "off";
  env.AUDIO_AGENT_MONITOR = "off";
  for (const [key, value] of Object.entries(DEVICE_RUNTIME_ENV)) env[key] ??= value;
  return env;
}

/** Reads a child's stdout as lines; `seen(text)` resolves when a line equal to `text` arrives. */
class LineReader {
  readonly lines: string[] = [];
  readonly done: Promise<void>;
  private waiters: { text: string; resolve: () => void }[] = [];

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = this.read(stream);
  }

  seen(text: string): Promise<void> {
    if (this.lines.includes(text)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ text, resolve }));
  }

  result(): DriverResult | undefined {
    const line = this.lines.findLast((l) => l.startsWith("RESULT "));
    return line ? (JSON.parse(line.slice("RESULT ".length)) as DriverResult) : undefined;
  }

  private async read(stream: ReadableStream<Uint8Array>): Promise<void> {
    const decoder = new TextDecoder();
    let pending = "";
    for await (const chunk of stream) {
      pending += decoder.decode(chunk, { stream: true });
      let at: number;
      while ((at = pending.indexOf("\n")) >= 0) {
        const line = pending.slice(0, at);
        pending = pending.slice(at + 1);
        this.lines.push(line);
        for (const w of this.waiters.filter((w) => w.text === line)) w.resolve();
        this.waiters = this.waiters.filter((w) => w.text !== line);
      }
    }
    if (pending) this.lines.push(pending);
  }
}

/** Runs pairs of processes and start-up probes in a private temp dir. */
export class Runner {
  private next = 0;
  private readonly running = new Set<Bun.Subprocess>();

  constructor(
    private readonly work: string,
    private readonly log: (line: string) => void,
  ) {}

  socketPath(): string {
    return join(this.work, `s${this.next++}.sock`);
  }

  /** Starts the sender, waits for LISTENING, starts the receiver, waits for both results. */
  async pair(sendCmd: string[], recvCmd: string[], timeoutMs: number): Promise<Pair> {
    const started = performance.now();
    const sender = this.spawn(sendCmd);
    const senderOut = new LineReader(sender.stdout);
    const senderErr = new Response(sender.stderr).text();
    const ready = await Promise.race([
      senderOut.seen("LISTENING").then(() => true),
      sender.exited.then(() => false),
      Bun.sleep(30_000).then(() => false),
    ]);
    if (!ready) {
      this.kill(sender);
      throw new Error(`sender never listened: ${tail(await senderErr)}`);
    }
    let receiver: Bun.Subprocess<"ignore", "pipe", "pipe">;
    try {
      receiver = this.spawn(recvCmd);
    } catch (e) {
      this.kill(sender);
      throw new Error(`receiver could not start: ${(e as Error).message}`);
    }
    const receiverOut = new LineReader(receiver.stdout);
    const receiverErr = new Response(receiver.stderr).text();
    const rss = { send: 0, recv: 0 };
    const sampler = setInterval(() => {
      rss.send = Math.max(rss.send, statusKiB(sender.pid, "VmRSS"));
      rss.recv = Math.max(rss.recv, statusKiB(receiver.pid, "VmRSS"));
    }, 250);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<true>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs)));
    const finished = await Promise.race([Promise.all([sender.exited, receiver.exited]).then(() => false), timedOut]);
    clearTimeout(timer);
    clearInterval(sampler);
    if (finished) {
      this.kill(sender);
      this.kill(receiver);
      throw new Error(`timed out after ${Math.round(timeoutMs / 1000)} s`);
    }
    await Promise.all([senderOut.done, receiverOut.done]);
    this.running.delete(sender);
    this.running.delete(receiver);
    const send = senderOut.result();
    const recv = receiverOut.result();
    const problems: string[] = [];
    if (!send || sender.exitCode !== 0) problems.push(`sender exit ${sender.exitCode}: ${send?.errors?.join("; ") ?? ""} ${tail(await senderErr)}`);
    if (!recv || receiver.exitCode !== 0) problems.push(`receiver exit ${receiver.exitCode}: ${recv?.errors?.join("; ") ?? ""} ${tail(await receiverErr)}`);
    if (problems.length > 0 || !send || !recv) throw new Error(problems.join(" | "));
    // The peak each reported at its end (VmHWM) holds every sample's RSS and what came and went
    // between them (a soak's garbage before each collection); a report read without procfs is only
    // its RSS of that moment, which a sample may top.
    rss.send = Math.max(rss.send, send.maxRssKiB);
    rss.recv = Math.max(rss.recv, recv.maxRssKiB);
    return { send, recv, rssKiB: rss, wallMs: performance.now() - started };
  }

  /**
   * Starts `programs` in order, lets them run `warmupMs`, then measures each
   * from outside over `windowMs` (and `frames()`, each channel's count, at both ends, when given);
   * then SIGTERMs the "signal" programs, the last started first, and waits
   * up to `stopMs` for every program to end. A group that fails is left out
   * (see LiveProgram.group): at once when it fails to start or get ready, at
   * the window's end when one of its programs ended early. The run throws
   * when no group is left.
   */
  async live(programs: LiveProgram[], options: { warmupMs: number; windowMs: number; frames?: () => number[]; stopMs?: number }): Promise<LiveRun> {
    type Started = { program: LiveProgram; group: string; proc: Bun.Subprocess<"ignore", "pipe", "pipe">; out: Promise<string>; err: Promise<string> };
    const groupOf = (program: LiveProgram) => program.group ?? "";
    const groups = [...new Set(programs.map(groupOf))];
    let started: Started[] = [];
    const failures: Record<string, string> = {};
    const left = () => groups.filter((group) => failures[group] === undefined);
    const throwIfNoneLeft = () => {
      if (left().length === 0) throw new Error(groups.map((group) => (group ? `${group}: ${failures[group]}` : failures[group])).join(" || "));
    };
    /** Kills `group`'s programs and records why, with the last lines each wrote. */
    const fail = async (group: string, what: string) => {
      const members = started.filter((s) => s.group === group);
      started = started.filter((s) => s.group !== group);
      for (const { proc } of members) this.kill(proc);
      await within(Promise.all(members.map((s) => s.proc.exited)), 1000, []);
      const tails = await Promise.all(
        members.map(async (s) => `${s.program.name} (exit ${s.proc.exitCode ?? s.proc.signalCode}): ${tail(await within(s.err, 1000, ""), 3)}`),
      );
      failures[group] = tails.length > 0 ? `${what}; ${tails.join(" | ")}` : what;
    };
    for (const program of programs) {
      const group = groupOf(program);
      if (failures[group] !== undefined) continue;
      let proc: Started["proc"];
      try {
        proc = this.spawn(program.cmd);
      } catch (e) {
        await fail(group, `${program.name} could not start: ${(e as Error).message}`);
        continue;
      }
      started.push({ program, group, proc, out: new Response(proc.stdout).text(), err: new Response(proc.stderr).text() });
      const t0 = performance.now();
      while (program.ready && !program.ready()) {
        if (proc.exitCode !== null || performance.now() - t0 > 10_000) {
          await fail(group, `${program.name} ${proc.exitCode !== null ? "exited before it was ready" : "never got ready"}`);
          break;
        }
        await Bun.sleep(2);
      }
    }
    throwIfNoneLeft();
    await Bun.sleep(options.warmupMs);
    const framesBefore = options.frames?.();
    const before = started.map((s) => sampleProcess(s.proc.pid));
    const counting = started.map((s) => clearReferenced(s.proc.pid));
    const t0 = performance.now();
    // The wall clock now, as the programs' own stamps read it: this process may have run for
    // minutes (a test run), and its start-up offset (performance.timeOrigin) no longer holds once
    // the system clock has been stepped (a virtual machine resumed, NTP).
    const openedAtMs = wallClockMs();
    // Sampled along the way too, so that a thread that ends within the window keeps its share of it.
    const seen: (ProcessSample | undefined)[] = [...before];
    while (options.windowMs - (performance.now() - t0) > WINDOW_SAMPLE_MS) {
      await Bun.sleep(WINDOW_SAMPLE_MS);
      started.forEach((s, i) => {
        const now = sampleProcess(s.proc.pid);
        if (now && seen[i]) seen[i] = withEnded(seen[i]!, now);
      });
    }
    await Bun.sleep(Math.max(0, options.windowMs - (performance.now() - t0)));
    const after = started.map((s) => sampleProcess(s.proc.pid));
    const windowMs = performance.now() - t0;
    const framesAfter = options.frames?.();
    const measured = started.map((s, i) => ({
      ...s,
      before: before[i],
      after: after[i],
      seen: seen[i],
      counting: counting[i],
      peakKiB: statusKiB(s.proc.pid, "VmHWM"),
      resident: residentKiB(s.proc.pid),
    }));
    for (const m of measured) {
      if (failures[m.group] !== undefined || (m.before && m.after)) continue;
      await fail(m.group, `${m.program.name} ended ${m.before ? "within" : "before"} the window`);
    }
    throwIfNoneLeft();

    // `started` holds the groups still standing.
    for (const { program, proc } of [...started].reverse()) if (program.ends === "signal") proc.kill("SIGTERM");
    const stopMs = options.stopMs ?? 15_000;
    const stopped = await Promise.all(
      left().map(async (group) => {
        const exits = Promise.all(started.filter((s) => s.group === group).map((s) => s.proc.exited));
        return { group, ended: await within(exits.then(() => true), stopMs, false) };
      }),
    );
    for (const { group, ended } of stopped) if (!ended) await fail(group, `still running ${stopMs / 1000} s after the window`);
    throwIfNoneLeft();
    const kept = measured.filter((m) => failures[m.group] === undefined);

    const processes: Record<string, LiveProcess> = {};
    for (const m of kept) {
      this.running.delete(m.proc);
      processes[m.program.name] = {
        name: m.program.name,
        used: used(m.before!, withEnded(m.seen!, m.after!)),
        peakRssKiB: m.peakKiB,
        workingSetKiB: m.counting ? (m.resident?.referenced ?? null) : null,
        anonymousKiB: m.resident?.anonymous ?? null,
        exitCode: m.proc.exitCode,
        signal: m.proc.signalCode === null ? null : String(m.proc.signalCode),
        // A child it left behind may hold its pipes open: what it wrote before it ended is what counts.
        stdout: await within(m.out, 5000, ""),
        stderr: await within(m.err, 5000, ""),
      };
    }
    const windowFrames = framesBefore && framesAfter?.map((n, i) => n - framesBefore[i]!);
    return { openedAtMs, windowMs, windowFrames, processes, failures };
  }

  /**
   * Exec -> socket connectable for each program, `runs` rounds after one
   * discarded (cold: page cache, first exec of the file); the programs take
   * turns within a round, so each meets the same background load. One that
   * fails is left out of the rounds after (its reason in `failures`); the
   * others keep their figures.
   */
  async startup<Name extends string>(
    commands: Partial<Record<Name, (socket: string) => string[]>>,
    runs: number,
  ): Promise<{ figures: Partial<Record<Name, StartupFigures>>; failures: Partial<Record<Name, string>> }> {
    const names = (Object.keys(commands) as Name[]).filter((name) => commands[name]);
    const times = new Map(names.map((name) => [name, { connect: [] as number[], appear: [] as number[] }]));
    const failures: Partial<Record<Name, string>> = {};
    for (let round = 0; round <= runs; round++) {
      for (const name of names) {
        if (failures[name] !== undefined) continue;
        const socket = this.socketPath();
        let t: { appearMs: number; connectMs: number };
        try {
          t = await this.timeToListen(commands[name]!(socket), socket);
        } catch (e) {
          failures[name] = (e as Error).message;
          continue;
        }
        if (round === 0) continue;
        times.get(name)!.connect.push(t.connectMs);
        times.get(name)!.appear.push(t.appearMs);
      }
    }
    const figures: Partial<Record<Name, StartupFigures>> = {};
    for (const [name, { connect, appear }] of times) {
      if (failures[name] !== undefined) continue;
      figures[name] = { runs: connect, medianMs: median(connect), minMs: Math.min(...connect), appearMedianMs: median(appear) };
    }
    return { figures, failures };
  }

  dispose(): void {
    for (const proc of this.running) this.kill(proc);
  }

  private async timeToListen(cmd: string[], socket: string): Promise<{ appearMs: number; connectMs: number }> {
    // inotify on the directory wakes us when the socket file appears; a 1 ms poll covers a missed event.
    let wake: () => void = () => {};
    const watcher = watch(this.work, () => wake());
    const t0 = performance.now();
    const proc = this.spawn(cmd, "ignore");
    const errText = new Response(proc.stderr).text();
    let appearMs = NaN;
    try {
      for (;;) {
        if (proc.exitCode !== null) throw new Error(`exited ${proc.exitCode} before listening: ${tail(await errText)}`);
        if (performance.now() - t0 > 10_000) throw new Error("not listening after 10 s");
        if (Number.isNaN(appearMs) && existsSync(socket)) appearMs = performance.now() - t0;
        if (!Number.isNaN(appearMs) && (await canConnect(socket))) break;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 1);
          wake = () => (clearTimeout(timer), resolve());
        });
      }
      const connectMs = performance.now() - t0;
      return { appearMs, connectMs };
    } finally {
      watcher.close();
      // Measured: the program's work is done. SIGTERM ends each of them (the agent cleanly).
      if (proc.exitCode === null) proc.kill("SIGTERM");
      if (!(await Promise.race([proc.exited.then(() => true), Bun.sleep(5000).then(() => false)]))) this.kill(proc);
      this.running.delete(proc);
    }
  }

  private spawn(cmd: string[], stdout: "pipe" | "ignore" = "pipe") {
    const proc = Bun.spawn(cmd, { cwd: this.work, env: childEnv(), stdin: "ignore", stdout, stderr: "pipe" });
    this.running.add(proc);
    return proc as Bun.Subprocess<"ignore", "pipe", "pipe">;
  }

  private kill(proc: Bun.Subprocess): void {
    try {
      proc.kill("SIGKILL");
    } catch {
      // already gone
    }
    this.running.delete(proc);
    this.log(`killed pid ${proc.pid}`);
  }
}

function canConnect(path: string): Promise<boolean> {
  return Bun.connect({
    unix: path,
    socket: { data() {}, open() {}, close() {}, error() {} },
  }).then(
    (socket) => {
      socket.end();
      return true;
    },
    () => false,
  );
}

function tail(text: string, lines = 6): string {
  return text.trim().split("\n").slice(-lines).join("\n");
}

export function median(values: number[]): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
