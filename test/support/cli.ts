/**
 * Spawning the agent as a real process. By default `bun src/main.ts` with the
 * repository's pinned Bun; set AUDIO_AGENT_BIN to a compiled binary to run
 * the same tests against it.
 */
import type { Subprocess } from "bun";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";

const REPO = resolve(import.meta.dir, "../..");
const PINNED_BUN = join(REPO, "node_modules/.bin/bun");

/** The Bun that runs helper child processes (and the agent from source). */
export const BUN = existsSync(PINNED_BUN) ? PINNED_BUN : process.execPath;

/** The command that starts the agent; arguments follow. */
export const AGENT: string[] = process.env.AUDIO_AGENT_BIN
  ? [resolve(process.env.AUDIO_AGENT_BIN)]
  : [BUN, join(REPO, "src/main.ts")];

/** An empty config file, so that a spawned agent never reads the machine's /etc/audio-agent.json. */
const EMPTY_CONFIG = join(import.meta.dir, "empty-config.json");

/**
 * The environment of a spawned agent: the test's own, minus anything that
 * would configure the agent behind the test's back (AUDIO_AGENT_*, the
 * JetKVM socket variables, the default config file), plus `extra`.
 */
export function agentEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined) continue;
    if (key.startsWith("AUDIO_AGENT_") || key.startsWith("JETKVM_AUDIO_")) continue;
    env[key] = value;
  }
  return { ...env, AUDIO_AGENT_CONFIG: EMPTY_CONFIG, ...extra };
}

export interface AgentOptions {
  /** Working directory; a test's temp dir keeps stray .env / bunfig.toml files out. */
  cwd?: string;
  stdin?: "pipe" | "ignore" | Blob;
  env?: Record<string, string>;
}

/** A running agent whose stdout and stderr are collected as they come (so pipes never fill). */
export class AgentProcess {
  stdout = "";
  stderr = "";
  readonly exited: Promise<number>;
  private readonly collected: Promise<void>;

  constructor(
    readonly proc: Subprocess<"pipe" | "ignore", "pipe", "pipe">,
    readonly args: string[],
  ) {
    this.collected = Promise.all([
      collect(proc.stdout, (text) => (this.stdout += text)),
      collect(proc.stderr, (text) => (this.stderr += text)),
    ]).then(() => {});
    this.exited = proc.exited.then(async (code) => {
      await this.collected;
      return code;
    });
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

  /** Resolves once stderr contains `pattern` (e.g. a log line); rejects if the process exits first. */
  async waitForStderr(pattern: RegExp | string, timeoutMs = 20000): Promise<void> {
    const matches = () => (typeof pattern === "string" ? this.stderr.includes(pattern) : pattern.test(this.stderr));
    const start = Date.now();
    while (!matches()) {
      if (this.hasExited) {
        await this.collected;
        if (matches()) return;
        throw new Error(`agent ${this.args.join(" ")} exited (${this.proc.exitCode}) before logging ${pattern}:\n${this.stderr}`);
      }
      if (Date.now() - start > timeoutMs) throw new Error(`agent did not log ${pattern} in time:\n${this.stderr}`);
      await Bun.sleep(5);
    }
  }
}

async function collect(stream: ReadableStream<Uint8Array>, into: (text: string) => void): Promise<void> {
  const decoder = new TextDecoder();
  for await (const chunk of stream) into(decoder.decode(chunk, { stream: true }));
  into(decoder.decode());
}

const running = new Set<AgentProcess>();

/** Starts the agent with `args`; it is SIGKILLed by stopAgents() if still running. */
export function spawnAgent(args: string[], options: AgentOptions = {}): AgentProcess {
  const proc = Bun.spawn([...AGENT, ...args], {
    cwd: options.cwd ?? "/tmp",
    env: options.env ?? agentEnv(),
    stdin: options.stdin ?? "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const agent = new AgentProcess(proc as Subprocess<"pipe" | "ignore", "pipe", "pipe">, args);
  running.add(agent);
  agent.exited.finally(() => running.delete(agent));
  return agent;
}

/** Runs the agent to completion. */
export async function runAgent(args: string[], options: AgentOptions = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const agent = spawnAgent(args, options);
  const code = await agent.exited;
  return { code, stdout: agent.stdout, stderr: agent.stderr };
}

/** Kills (SIGKILL) and reaps every agent still running; for afterEach. */
export async function stopAgents(): Promise<void> {
  const left = [...running];
  for (const agent of left) {
    if (agent.proc.stdin && typeof agent.proc.stdin === "object") {
      try {
        (agent.proc.stdin as import("bun").FileSink).end();
      } catch {
        // already closed
      }
    }
    agent.kill("SIGKILL");
  }
  await Promise.all(left.map((agent) => agent.exited.catch(() => {})));
}

/**
 * A child process listening on `bindName` (resolved against `cwd`, so a
 * relative name binds the way another program started elsewhere would).
 * Resolves once it listens; kill it with the returned function.
 */
export async function spawnListener(bindName: string, cwd = "/tmp"): Promise<{ kill: () => Promise<void> }> {
  const child = Bun.spawn(
    [BUN, "-e", `Bun.listen({ unix: ${JSON.stringify(bindName)}, socket: { data() {} } }); console.log("listening");`],
    { cwd, stdout: "pipe", stderr: "pipe", env: agentEnv() },
  );
  const kill = async () => {
    child.kill("SIGKILL");
    await child.exited;
  };
  try {
    const reader = child.stdout.getReader();
    let seen = "";
    while (!seen.includes("listening")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`listener child exited early: ${await new Response(child.stderr).text()}`);
      seen += new TextDecoder().decode(value);
    }
    reader.releaseLock();
  } catch (e) {
    await kill();
    throw e;
  }
  return { kill };
}

/**
 * Leaves a stale socket at `path`: a child process listens there and is
 * SIGKILLed, so the file stays but nothing answers on it.
 */
export async function makeStaleSocket(path: string): Promise<void> {
  const listener = await spawnListener(path);
  await listener.kill();
}
