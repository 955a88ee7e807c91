/**
 * Helpers for the tests of the compiled executables: build a target once per
 * test process (with build.ts, into a temp dir removed at exit), run and
 * stream with the result, and check what arrived.
 */
import type { Subprocess } from "bun";
import { existsSync, mkdtempSync } from "node:fs";
import { join, resolve } from "node:path";

export const REPO = resolve(import.meta.dir, "../..");
const PINNED_BUN = join(REPO, "node_modules/.bin/bun");
export const BUN = existsSync(PINNED_BUN) ? PINNED_BUN : process.execPath;

export type Target = "x64" | "arm64" | "arm64-musl";

export interface Built {
  path: string;
  bytes: number;
  /** The commit build.ts baked in (from its first output line). */
  commit: string;
}

let outdir: string | undefined;
const builds = new Map<Target, Promise<Built>>();

/** The executable of `target`, built by `bun build.ts --target T --outdir <temp>` once per test process. */
export function built(target: Target): Promise<Built> {
  let build = builds.get(target);
  if (!build) {
    build = buildOnce(target);
    builds.set(target, build);
  }
  return build;
}

async function buildOnce(target: Target): Promise<Built> {
  if (!outdir) {
    outdir = mkdtempSync("/tmp/aa-dist-");
    removeWhenGone(outdir);
  }
  const result = await run([BUN, join(REPO, "build.ts"), "--target", target, "--outdir", outdir], { cwd: REPO, env: process.env as Record<string, string>, timeoutMs: 120_000 });
  if (result.code !== 0) throw new Error(`bun build.ts --target ${target} failed (${result.code}):\n${result.stdout}${result.stderr}`);
  const commit = /^audio-agent commit (\S+)$/m.exec(result.stdout)?.[1];
  const path = join(outdir, `audio-agent-linux-${target}`);
  const line = result.stdout.split("\n").find((l) => l.includes(`audio-agent-linux-${target} `));
  const bytes = Number(/(\d+) bytes/.exec(line ?? "")?.[1]);
  if (!commit || !existsSync(path) || !(bytes > 0)) throw new Error(`unexpected build output:\n${result.stdout}`);
  return { path, bytes, commit };
}

/**
 * The builds are shared by every file of the test run, and bun test has no
 * hook after the last file (nor does it emit "exit"): a small shell waits for
 * this process to end, then removes `dir` (~100 MB per target).
 */
function removeWhenGone(dir: string): void {
  const watcher = Bun.spawn(["sh", "-c", 'while kill -0 "$0" 2>/dev/null; do sleep 1; done; rm -rf "$1"', String(process.pid), dir], {
    stdio: ["ignore", "ignore", "ignore"],
  });
  watcher.unref();
}

/** The environment of a spawned agent: ours minus anything that would configure it (AUDIO_AGENT_*, JETKVM_AUDIO_*). */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || key.startsWith("AUDIO_AGENT_") || key.startsWith("JETKVM_AUDIO_")) continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** SIGKILL after this long (the result then has code -1). */
  timeoutMs?: number;
}

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** A running process whose output is collected as it comes (so pipes never fill). */
export class Running {
  stdout = "";
  stderr = "";
  readonly done: Promise<Result>;
  constructor(readonly proc: Subprocess<"ignore", "pipe", "pipe">, timeoutMs: number) {
    const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
    const text = async (stream: ReadableStream<Uint8Array>, add: (s: string) => void) => {
      const decoder = new TextDecoder();
      for await (const chunk of stream) add(decoder.decode(chunk, { stream: true }));
    };
    this.done = Promise.all([text(proc.stdout, (s) => (this.stdout += s)), text(proc.stderr, (s) => (this.stderr += s)), proc.exited]).then(
      ([, , code]) => {
        clearTimeout(timer);
        return { code: proc.signalCode ? -1 : code, stdout: this.stdout, stderr: this.stderr };
      },
    );
  }

  get pid(): number {
    return this.proc.pid;
  }
}

const started = new Set<Running>();

export function start(cmd: string[], options: RunOptions = {}): Running {
  const proc = Bun.spawn(cmd, {
    cwd: options.cwd ?? "/tmp",
    env: options.env ?? cleanEnv(),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const running = new Running(proc as Subprocess<"ignore", "pipe", "pipe">, options.timeoutMs ?? 60_000);
  started.add(running);
  running.done.finally(() => started.delete(running));
  return running;
}

export function run(cmd: string[], options: RunOptions = {}): Promise<Result> {
  return start(cmd, options).done;
}

/** SIGKILLs and reaps whatever start() began and is still running; for afterEach. */
export async function killStarted(): Promise<void> {
  const left = [...started];
  for (const r of left) r.proc.kill("SIGKILL");
  await Promise.all(left.map((r) => r.done.catch(() => {})));
}

/** Resident set size of `pid` in KiB (VmRSS in /proc/<pid>/status), or undefined once it is gone. */
export async function rssKiB(pid: number): Promise<number | undefined> {
  try {
    const status = await Bun.file(`/proc/${pid}/status`).text();
    const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1];
    return kib === undefined ? undefined : Number(kib);
  } catch {
    return undefined;
  }
}

/** Samples the VmRSS of `pid` every `everyMs` until `until` settles; resolves with the peak (KiB, 0 if never seen). */
export async function peakRss(pid: number, until: Promise<unknown>, everyMs = 10): Promise<number> {
  let peak = 0;
  let settled = false;
  until.finally(() => (settled = true)).catch(() => {});
  while (!settled) {
    const kib = await rssKiB(pid);
    if (kib !== undefined && kib > peak) peak = kib;
    await Bun.sleep(everyMs);
  }
  return peak;
}
