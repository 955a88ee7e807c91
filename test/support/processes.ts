/**
 * Child processes of the tests: the agent (by default `bun src/main.ts` with
 * the repository's pinned Bun; set AUDIO_AGENT_BIN to a compiled binary to
 * run the same tests against it) or any other command, with its output
 * collected as it comes; stopAgents() kills whatever is left after a test.
 */
import type { FileSink, Subprocess } from "bun";
import { chmodSync, copyFileSync, existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { signalPending } from "./proc.ts";
import { until } from "./wait.ts";

export const REPO = resolve(import.meta.dir, "../..");
const PINNED_BUN = join(REPO, "node_modules/.bin/bun");

/** The Bun that runs helper child processes (and the agent from source). */
export const BUN = existsSync(PINNED_BUN) ? PINNED_BUN : process.execPath;

/**
 * A copy of BUN at `path`, executable by everyone: for a process another user runs (BUN may sit
 * in a directory they cannot enter) or one that must not share the binary's pages with others.
 */
export function copyOfBun(path: string): string {
  copyFileSync(BUN, path);
  chmodSync(path, 0o755);
  return path;
}

/** The benchmark's bare Bun floor program, run from its source by the tests. */
export const BARE_BUN_FLOOR = join(REPO, "src/bench/floors/bare-bun.js");

/** The command that starts the agent; arguments follow. */
export const AGENT: string[] = process.env.AUDIO_AGENT_BIN
  ? [resolve(process.env.AUDIO_AGENT_BIN)]
  : [BUN, join(REPO, "src/main.ts")];

/** An empty config file, so that a spawned agent never reads the machine's /etc/audio-agent.json. */
const EMPTY_CONFIG = join(import.meta.dir, "empty-config.json");

/**
 * The test's own environment minus anything that would configure the agent
 * behind the test's back (AUDIO_AGENT_*, the JetKVM socket variables), plus
 * `extra`. Without INVOCATION_ID either: tests run by a systemd service would
 * pass it on, and the agent would take itself for the audio-agent unit's.
 */
export function cleanEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || key.startsWith("AUDIO_AGENT_") || key.startsWith("JETKVM_AUDIO_") || key === "INVOCATION_ID") continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

/** The environment of a spawned agent: cleanEnv, and no default config file either. */
export function agentEnv(extra: Record<string, string> = {}): Record<string, string> {
  return cleanEnv({ AUDIO_AGENT_CONFIG: EMPTY_CONFIG, ...extra });
}

export interface SpawnOptions {
  /** Working directory (default /tmp); a test's temp dir keeps stray .env / bunfig.toml files out. */
  cwd?: string;
  /** A descriptor number: the child reads it as its stdin (a file or directory the test opened). */
  stdin?: "pipe" | "ignore" | Blob | number;
  env?: Record<string, string>;
  /** SIGKILL after this long (the result then has code -1). */
  timeoutMs?: number;
  /**
   * A descriptor the child writes its stdout into (one end of socketPair(), a
   * player the test holds), instead of a pipe the test collects from.
   */
  stdout?: number;
}

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** How long a process's pipes may stay open after it exited before its waiters stop waiting for them. */
const PIPES_CLOSE_MS = 10_000;

/** A running process whose stdout and stderr are collected as they come (so pipes never fill). */
export class Spawned {
  stdout = "";
  stderr = "";
  /** Its exit code, once it has exited and all its output is in. */
  readonly exited: Promise<number>;
  /** Exit code (-1 when a signal ended it) and output, once it has exited. */
  readonly done: Promise<Result>;
  private readonly collected: Promise<void>;

  constructor(
    readonly proc: Subprocess<"pipe" | "ignore", "pipe", "pipe">,
    readonly cmd: string[],
    timeoutMs?: number,
    /** Its stdout is the test's pipe, collected (not a descriptor given to it). */
    ownStdout = true,
  ) {
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => this.kill("SIGKILL"), timeoutMs);
    this.collected = Promise.all([
      ownStdout ? collect(proc.stdout, (text) => (this.stdout += text)) : undefined,
      collect(proc.stderr, (text) => (this.stderr += text)),
    ]).then(() => {});
    this.exited = proc.exited.then(async (code) => {
      clearTimeout(timer);
      // A process it started and left running may hold its pipes open for good: wait a while, then
      // say so in its stderr rather than leave every waiter hanging.
      let held: ReturnType<typeof setTimeout> | undefined;
      const holding = new Promise<void>((resolve) => {
        held = setTimeout(() => {
          this.stderr += `\n[its stdout or stderr still open ${PIPES_CLOSE_MS / 1000} s after it exited: held by a process it started]\n`;
          resolve();
        }, PIPES_CLOSE_MS);
      });
      await Promise.race([this.collected, holding]);
      clearTimeout(held);
      return code;
    });
    this.done = this.exited.then((code) => ({ code: proc.signalCode ? -1 : code, stdout: this.stdout, stderr: this.stderr }));
  }

  get pid(): number {
    return this.proc.pid;
  }

  get hasExited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  kill(signal: NodeJS.Signals = "SIGTERM"): void {
    if (!this.hasExited) this.proc.kill(signal);
  }

  /**
   * Sends `signal` and resolves once the process has taken it (the kernel no longer holds it pending),
   * or has exited: the next one of the same kind is then its own, not merged into this one, however
   * long a busy machine keeps the process off the CPU.
   */
  async signalTaken(signal: NodeJS.Signals, timeoutMs = 20000): Promise<void> {
    this.kill(signal);
    await until(() => this.hasExited || !signalPending(this.pid, signal), `${signal} taken by ${this.cmd.join(" ")}`, timeoutMs, 1);
  }

  /** Resolves once stderr contains `pattern` (e.g. a log line); rejects if the process exits first. */
  async waitForStderr(pattern: RegExp | string, timeoutMs = 20000): Promise<void> {
    const matches = () => (typeof pattern === "string" ? this.stderr.includes(pattern) : pattern.test(this.stderr));
    const start = Date.now();
    while (!matches()) {
      if (this.hasExited) {
        await this.collected;
        if (matches()) return;
        throw new Error(`${this.cmd.join(" ")} exited (${this.proc.exitCode}) before logging ${pattern}:\n${this.stderr}`);
      }
      if (Date.now() - start > timeoutMs) throw new Error(`${this.cmd.join(" ")} did not log ${pattern} in time:\n${this.stderr}`);
      await Bun.sleep(5);
    }
  }

  /** Writes `bytes` to its stdin (spawned with stdin "pipe") and waits until the pipe took them. */
  async writeStdin(bytes: Uint8Array): Promise<void> {
    this.stdinSink.write(bytes);
    await this.stdinSink.flush();
  }

  /** Closes its stdin: the process sees end of input. */
  endStdin(): number | Promise<number> {
    return this.stdinSink.end();
  }

  private get stdinSink(): FileSink {
    return this.proc.stdin as unknown as FileSink;
  }
}

async function collect(stream: ReadableStream<Uint8Array>, into: (text: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  for await (const chunk of stream) into(decoder.decode(chunk, { stream: true }));
  into(decoder.decode());
}

const running = new Set<Spawned>();

/** Starts `cmd` (by default in /tmp, with cleanEnv(), no stdin, SIGKILLed after 60 s); stopAgents() kills it if still running. */
export function start(cmd: string[], options: SpawnOptions = {}): Spawned {
  return spawn(cmd, { ...options, env: options.env ?? cleanEnv(), timeoutMs: options.timeoutMs ?? 60_000 });
}

/** Runs `cmd` to completion (see start()). */
export function run(cmd: string[], options: SpawnOptions = {}): Promise<Result> {
  return start(cmd, options).done;
}

/** Starts the agent with `args` (with agentEnv(), no time limit unless given); stopAgents() kills it if still running. */
export function spawnAgent(args: string[], options: SpawnOptions = {}): Spawned {
  return spawn([...AGENT, ...args], { ...options, env: options.env ?? agentEnv() });
}

/** Runs the agent to completion. */
export function runAgent(args: string[], options: SpawnOptions = {}): Promise<Result> {
  return spawnAgent(args, options).done;
}

function spawn(cmd: string[], options: SpawnOptions): Spawned {
  const proc = Bun.spawn(cmd, {
    cwd: options.cwd ?? "/tmp",
    env: options.env,
    stdin: options.stdin ?? "ignore",
    stdout: options.stdout ?? "pipe",
    stderr: "pipe",
  });
  const spawned = new Spawned(proc as Subprocess<"pipe" | "ignore", "pipe", "pipe">, cmd, options.timeoutMs, options.stdout === undefined);
  running.add(spawned);
  spawned.exited.finally(() => running.delete(spawned));
  return spawned;
}

/** Kills (SIGKILL) and reaps every process start() or spawnAgent() began that is still running; for afterEach. */
export async function stopAgents(): Promise<void> {
  const left = [...running];
  for (const child of left) {
    if (child.proc.stdin && typeof child.proc.stdin === "object") {
      try {
        child.endStdin();
      } catch {
        // already closed
      }
    }
    child.kill("SIGKILL");
  }
  await Promise.all(left.map((child) => child.exited.catch(() => {})));
}

/**
 * A child process listening on `bindName` (resolved against `cwd`, so a
 * relative name binds the way another program started elsewhere would).
 * Resolves once it listens; `events` is what it saw since, in order: "open"
 * for each connection, "data N" for each read of N bytes. With `sendEveryMs`,
 * it writes one byte (1) to each connection that often: a server that keeps
 * talking however long the test's own process is kept off the CPU. Kill it
 * with the returned function.
 */
export async function spawnListener(bindName: string, cwd = "/tmp", sendEveryMs?: number): Promise<{ kill: () => Promise<void>; events: () => string[] }> {
  const talk = sendEveryMs === undefined ? "" : `setInterval(() => s.write(Uint8Array.of(1)), ${sendEveryMs});`;
  const child = Bun.spawn(
    [
      BUN,
      "-e",
      `Bun.listen({ unix: ${JSON.stringify(bindName)}, socket: { open(s) { console.log("open"); ${talk} }, data(_s, chunk) { console.log("data " + chunk.length); } } }); console.log("listening");`,
    ],
    { cwd, stdout: "pipe", stderr: "pipe", env: agentEnv() },
  );
  const kill = async () => {
    child.kill("SIGKILL");
    await child.exited;
  };
  const reader = child.stdout.getReader();
  const decoder = new TextDecoder();
  let seen = "";
  /** Reads on; false at the end of its output. */
  const more = async () => {
    const { value, done } = await reader.read();
    if (!done) seen += decoder.decode(value, { stream: true });
    return !done;
  };
  try {
    while (!seen.includes("listening\n")) {
      if (!(await more())) throw new Error(`listener child exited early: ${await new Response(child.stderr).text()}`);
    }
  } catch (e) {
    await kill();
    throw e;
  }
  void (async () => {
    while (await more());
  })().catch(() => {});
  const start = seen.indexOf("listening\n") + "listening\n".length;
  return { kill, events: () => seen.slice(start).split("\n").filter((line) => line !== "") };
}

/**
 * Leaves a stale socket at `path`: a child process listens there and is
 * SIGKILLed, so the file stays but nothing answers on it.
 */
export async function makeStaleSocket(path: string): Promise<void> {
  const listener = await spawnListener(path);
  await listener.kill();
}
