/**
 * What the tests of packaging/S95audio-agent share: the script, Debian's
 * BusyBox and its applets, a stand-in agent, and the processes a test left
 * running.
 */
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readlinkSync, realpathSync } from "node:fs";
import { join } from "node:path";
import { REPO, run } from "./processes.ts";
import { runningIn } from "./proc.ts";

export const SCRIPT = join(REPO, "packaging/S95audio-agent");
export const BUSYBOX = Bun.which("busybox");

/** A new directory holding every BusyBox applet as a symlink, to put first on PATH. */
export async function installApplets(prefix = "/tmp/aa-bb-"): Promise<string> {
  if (!BUSYBOX) throw new Error("busybox not found: install Debian's busybox package to test the init script");
  const dir = mkdtempSync(prefix);
  const installed = await run([BUSYBOX, "--install", "-s", dir]);
  if (installed.code !== 0 || !existsSync(join(dir, "start-stop-daemon"))) throw new Error(`busybox --install failed: ${installed.stderr}`);
  return dir;
}

/** The live agents serving from `dir`: processes running executable `exe` with `dir` on their command line. */
export function agentsIn(dir: string, exe: string): number[] {
  const real = realpathSync(exe);
  return runningIn(dir).filter((pid) => {
    try {
      return readlinkSync(`/proc/${pid}/exe`) === real;
    } catch {
      return false;
    }
  });
}

/** A stand-in agent at `path` that exits on TERM: a copy of sleep(1), run with AUDIO_AGENT_ARGS "300" (or of `program`). */
export function standInAgent(path: string, program = "sleep"): string {
  copyFileSync(realpathSync(Bun.which(program)!), path);
  chmodSync(path, 0o755);
  return path;
}

/**
 * A new directory (named from `prefix`) holding a stand-in agent, and the
 * settings that run the init script on it there: its pid file and log
 * inside, no FIFO, no settings file, TERM given `stopTimeout` seconds.
 */
export function standInService(prefix: string, stopTimeout: string): { dir: string; agent: string; env: Record<string, string> } {
  const dir = mkdtempSync(prefix);
  chmodSync(dir, 0o755);
  const agent = standInAgent(join(dir, "agent"));
  mkdirSync(join(dir, "run"));
  const env = {
    AUDIO_AGENT_BIN: agent,
    AUDIO_AGENT_ARGS: "300",
    AUDIO_AGENT_PIDFILE: join(dir, "run/audio-agent.pid"),
    AUDIO_AGENT_LOG_FILE: join(dir, "log/audio-agent.log"),
    AUDIO_AGENT_FIFO: "",
    AUDIO_AGENT_DEFAULTS: join(dir, "none"),
    AUDIO_AGENT_STOP_TIMEOUT: stopTimeout,
  };
  return { dir, agent, env };
}

/** A pid no process has now: one that just exited and was reaped. */
export function gonePid(): number {
  return Bun.spawnSync(["true"]).pid;
}
