/**
 * packaging/S95audio-agent against the LSB init script actions and exit
 * codes its header promises ("Exit codes (LSB)"), under `busybox sh` with a
 * stand-in agent (a copy of sleep(1), run as "300"), as
 * init-script-lock.test.ts runs it.
 *
 * LSB Core, "Init Script Actions": every init script accepts start, stop,
 * restart, force-reload and status; reload is optional. The exit status of
 * an action other than status is 0 success, 1 generic failure, 2 invalid or
 * excess arguments, 3 unimplemented feature (for example, "reload"), 4 user
 * had insufficient privilege.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync, writeSync, closeSync } from "node:fs";
import { dirname, join } from "node:path";
import { agentsIn, BUSYBOX, installApplets, SCRIPT, standInAgent, standInService } from "../support/init-script.ts";
import { makeFifo } from "../support/fifo.ts";
import { alive, childrenOf, inSession, runningIn, sessionOf } from "../support/proc.ts";
import { canChoosePid, spawnAt } from "../support/machine.ts";
import { canSwitchUser, NOBODY } from "../support/nobody.ts";
import { cleanEnv, type Result, run, start } from "../support/processes.ts";
import { until } from "../support/wait.ts";

let applets: string;
let dir: string;
let agent: string;

beforeAll(async () => {
  applets = await installApplets();
  chmodSync(applets, 0o755);
}, 30_000);

afterAll(() => {
  if (applets) rmSync(applets, { recursive: true, force: true });
});

afterEach(() => {
  // Every agent a test left running, the stand-in's or another executable's.
  for (const pid of dir ? runningIn(dir) : []) process.kill(pid, "SIGKILL");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function setup(): Record<string, string> {
  let env: Record<string, string>;
  ({ dir, agent, env } = standInService("/tmp/aa-lsb-", "1"));
  return env;
}

function initScript(action: string, env: Record<string, string>, prefix: string[] = []): Promise<Result> {
  return run([...prefix, BUSYBOX!, "sh", SCRIPT, action], {
    cwd: dir,
    env: { ...cleanEnv(), PATH: `${applets}:${process.env.PATH}`, ...env },
    timeoutMs: 30_000,
  });
}

/** The pid file's pid: its first line (the second says when that process started). */
const pidIn = (env: Record<string, string>) => Number(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8").split("\n")[0]!.trim());

describe("S95audio-agent: LSB actions", () => {
  // force-reload is one of the five actions every LSB init script must accept. The agent reloads
  // nothing on a signal (SIGHUP is ignored), so force-reload is a restart of a running agent.
  test("force-reload (mandatory in LSB) restarts a running agent: exit 0, a new agent under the pid file", async () => {
    const env = setup();
    expect((await initScript("start", env)).code).toBe(0);
    const first = pidIn(env);
    expect(alive(first)).toBe(true);

    const reloaded = await initScript("force-reload", env);
    expect(reloaded.code, reloaded.stdout + reloaded.stderr).toBe(0);
    const second = pidIn(env);
    expect(second).not.toBe(first);
    expect(alive(first)).toBe(false);
    expect(alive(second)).toBe(true);
    expect((await initScript("stop", env)).code).toBe(0);
  }, 60_000);

  // try-restart (and so force-reload) on a stopped service: LSB's success, and nothing started.
  test("try-restart and force-reload of a stopped agent: exit 0, nothing started", async () => {
    const env = setup();
    for (const action of ["try-restart", "force-reload"]) {
      const r = await initScript(action, env);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toContain("not running; nothing to restart");
      expect(agentsIn(dir, agent)).toEqual([]);
    }
  }, 60_000);

  // reload is optional; a script that does not implement it answers 3 (unimplemented feature), which
  // tells a caller (service(8), a package's postinst "reload || restart") to fall back, not 2 (a usage error).
  test("reload, which the agent has nothing for: exit 3 (unimplemented), the agent left running", async () => {
    const env = setup();
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env);

    const reloaded = await initScript("reload", env);
    expect(reloaded.code, reloaded.stdout + reloaded.stderr).toBe(3);
    expect(alive(pid)).toBe(true);
    expect((await initScript("stop", env)).code).toBe(0);
  }, 60_000);
});

/** What start says of an AUDIO_AGENT_BIN that is a script, after its path. */
const NOT_A_BINARY = "is not a binary (a script, say): install the agent's executable there";

/** Paths for the agent with a newline in them, in a directory's name and in the file's own (that directory made). */
function newlinePaths(): string[] {
  const paths = [join(dir, "a\nb", "agent"), join(dir, "agent\nstopping")];
  mkdirSync(dirname(paths[0]!), { recursive: true });
  return paths;
}

/** What start says of an AUDIO_AGENT_BIN whose path holds a newline. */
const newlinePathLine = (path: string) =>
  `AUDIO_AGENT_BIN=${path.replace("\n", "\\n")}: a path with a newline in it, which the pid file cannot hold; install the agent at a path without one`;

/** A shell script that execs the stand-in agent, as a wrapper would: its path. */
function wrapperScript(): string {
  const path = join(dir, "wrapper");
  writeFileSync(path, `#!/bin/sh\nexec ${agent} "$@"\n`);
  chmodSync(path, 0o755);
  return path;
}

describe("S95audio-agent: LSB exit codes for a start that fails", () => {
  // LSB's 6 for start is "program is not configured". The agent exits 2 on a setting or an argument
  // it refuses, before it is up: start answered 1, a generic failure, as for an agent that failed.
  test("an agent that exits 2 before it is up (a setting it refuses) and a role the script does not know: 6; an agent that exits 1: 1", async () => {
    const env = setup();
    // Stand-ins that exit as the agent does: ls exits 2 on an option it does not know, sleep 1 on a duration it cannot read.
    const refusing = { ...env, AUDIO_AGENT_BIN: standInAgent(join(dir, "refusing"), "ls"), AUDIO_AGENT_ARGS: "--bogus" };
    const refused = await initScript("start", refusing);
    expect(refused.code, refused.stdout + refused.stderr).toBe(6);
    expect(refused.stdout).toContain(`exited right after start, with exit code 2 (a bad setting); see ${env.AUDIO_AGENT_LOG_FILE}\n`);
    const failed = await initScript("start", { ...env, AUDIO_AGENT_ARGS: "abc" });
    expect(failed.code, failed.stdout + failed.stderr).toBe(1);
    expect(failed.stdout).toContain(`exited right after start, with exit code 1; see ${env.AUDIO_AGENT_LOG_FILE}\n`);
    const unknown = await initScript("start", { ...env, AUDIO_AGENT_ARGS: "", AUDIO_AGENT_ROLE: "both" });
    expect(unknown.code, unknown.stdout + unknown.stderr).toBe(6);
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
    expect(agentsIn(dir, agent)).toEqual([]);
  }, 60_000);

  // LSB's 5 for start is "program is not installed": it answered 1, a generic failure. A directory
  // (AUDIO_AGENT_BIN=/opt/audio-agent/, the file's name left out) passed as executable, and the agent
  // "exited right after start, with exit code 126" (1). A script that execs the agent ran it as
  // another executable: start waited 5 s for one running the script, answered 1 ("still does not
  // run"), and left that agent running without a pid file.
  test("an agent executable that is not there, not executable, a directory or a script: 5, naming it, nothing left running", async () => {
    const env = setup();
    const missing = join(dir, "no-such-agent");
    const absent = await initScript("start", { ...env, AUDIO_AGENT_BIN: missing });
    expect(absent.code, absent.stdout + absent.stderr).toBe(5);
    expect(absent.stdout).toContain(`${missing} is not executable`);
    const directory = await initScript("start", { ...env, AUDIO_AGENT_BIN: dir });
    expect({ code: directory.code, stdout: directory.stdout, stderr: directory.stderr }).toEqual({ code: 5, stdout: `audio-agent: ${dir} is not executable\n`, stderr: "" });
    const script = await initScript("start", { ...env, AUDIO_AGENT_BIN: wrapperScript() });
    expect({ code: script.code, stdout: script.stdout, stderr: script.stderr }).toEqual({ code: 5, stdout: `audio-agent: ${wrapperScript()} ${NOT_A_BINARY}\n`, stderr: "" });
    expect(agentsIn(dir, agent)).toEqual([]);
    chmodSync(env.AUDIO_AGENT_BIN, 0o644);
    const plain = await initScript("start", env);
    expect(plain.code, plain.stdout + plain.stderr).toBe(5);
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
    expect(agentsIn(dir, agent)).toEqual([]);
  }, 60_000);

  // /proc/PID/exe and the process name in /proc/PID/stat carry a newline of the path as it is: the pid
  // file's exe= line broke in two, and its start time too (the name ends in it), so status, stop and
  // start went by the pid and a shortened executable, and a path whose last line read "stopping"
  // marked a running agent stopping.
  // (A restart with such a path: with the others that cannot start an agent, below.)
  test("an agent executable whose path holds a newline, in a directory's name or its own: start fails (1) with one line naming it, nothing started", async () => {
    const env = setup();
    for (const path of newlinePaths()) {
      const started = await initScript("start", { ...env, AUDIO_AGENT_BIN: standInAgent(path) });
      expect({ code: started.code, stdout: started.stdout, stderr: started.stderr }).toEqual({ code: 1, stdout: `audio-agent: ${newlinePathLine(path)}\n`, stderr: "" });
      expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
      expect(agentsIn(dir, path)).toEqual([]);
    }
  }, 60_000);

  // A symbolic link without one to a path with one: the pid file names where it leads.
  test("AUDIO_AGENT_BIN a link to an executable whose path holds a newline: start fails (1) naming both", async () => {
    const env = setup();
    const target = join(dir, "a\nb", "agent");
    mkdirSync(dirname(target));
    standInAgent(target);
    symlinkSync(target, join(dir, "link"));
    const started = await initScript("start", { ...env, AUDIO_AGENT_BIN: join(dir, "link") });
    expect({ code: started.code, stdout: started.stdout }).toEqual({
      code: 1,
      stdout: `audio-agent: AUDIO_AGENT_BIN=${join(dir, "link")} (which is ${target.replace("\n", "\\n")}): a path with a newline in it, which the pid file cannot hold; install the agent at a path without one\n`,
    });
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
    expect(agentsIn(dir, target)).toEqual([]);
  }, 30_000);

  // The x64 build installed on an ARM board: the kernel cannot run it (ENOEXEC), so the shell that
  // execs it reads it as a script, as POSIX has it, and exits 2 on its bytes: start answered 6,
  // "exited right after start, with exit code 2 (a bad setting)", and the log held a syntax error.
  test("an agent executable built for another machine: 5, naming it, nothing started", async () => {
    const env = setup();
    // The stand-in's ELF header made aarch64's (e_machine 183) or x86-64's (62), whichever this is not.
    const header = readFileSync(env.AUDIO_AGENT_BIN).subarray(0, 20);
    const other = header.readUInt16LE(18) === 62 ? 183 : 62;
    const fd = openSync(env.AUDIO_AGENT_BIN, "r+");
    writeSync(fd, Buffer.from([other & 0xff, other >> 8]), 0, 2, 18);
    closeSync(fd);
    const started = await initScript("start", env);
    expect({ code: started.code, stdout: started.stdout, stderr: started.stderr }).toEqual({
      code: 5,
      stdout: `audio-agent: ${env.AUDIO_AGENT_BIN} is an executable for another machine than this one: install the build for this one\n`,
      stderr: "",
    });
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
    expect(agentsIn(dir, agent)).toEqual([]);
  }, 30_000);

  // restart (and try-restart, force-reload) stopped the agent first, then found it could not start
  // another: a role it does not know, or no executable for this machine, left no agent at all.
  test("restart, try-restart and force-reload that could not start an agent (6, 5, 1) leave the running one running", async () => {
    const env = setup();
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env);
    // An upgrade gone wrong: the executable moved away (the agent still runs it) or made another machine's.
    const moved = `${env.AUDIO_AGENT_BIN}.moved`;
    const cases = [
      [{ AUDIO_AGENT_ARGS: "", AUDIO_AGENT_ROLE: "both" }, 6, "AUDIO_AGENT_ROLE=both is not a role here", () => {}],
      [{ AUDIO_AGENT_BIN: dir }, 5, `${dir} is not executable`, () => {}],
      [{ AUDIO_AGENT_BIN: join(dir, "wrapper") }, 5, `${join(dir, "wrapper")} ${NOT_A_BINARY}`, wrapperScript],
      ...newlinePaths().map((path) => [{ AUDIO_AGENT_BIN: path }, 1, newlinePathLine(path), () => standInAgent(path)] as const),
      [{}, 5, `${env.AUDIO_AGENT_BIN} is not executable`, () => renameSync(env.AUDIO_AGENT_BIN, moved)],
    ] as const;
    for (const [changed, code, line, upgrade] of cases) {
      upgrade();
      for (const action of ["restart", "try-restart", "force-reload"]) {
        const r = await initScript(action, { ...env, ...changed });
        expect({ action, code: r.code }).toEqual({ action, code });
        // One line, the reason: nothing "stopped".
        expect(r.stdout).toStartWith(`audio-agent: ${line}`);
        expect(r.stdout.split("\n").length, r.stdout).toBe(2);
        expect(alive(pid), action).toBe(true);
        expect(pidIn(env), action).toBe(pid);
      }
    }
    renameSync(moved, env.AUDIO_AGENT_BIN);
    expect((await initScript("stop", env)).code).toBe(0);
  }, 60_000);
});

/**
 * A directory to put first on PATH holding a stand-in for command `name` that stalls: it starts a
 * child (a copy of sleep(1) at `child`, in the test's directory) and waits for it, whatever its arguments.
 */
function stalledCommand(name: string): { bin: string; child: string } {
  const bin = join(dir, "stalled");
  mkdirSync(bin, { recursive: true });
  const child = standInAgent(join(dir, "child"));
  writeFileSync(join(bin, name), `#!${BUSYBOX} sh\n${child} 60 &\nwait\n`);
  chmodSync(join(bin, name), 0o755);
  return { bin, child };
}

/**
 * `start` with `env` and command `name` stalled (stalledCommand); the session the stalled command is in,
 * read while the start waits: the one start made, which the stalled command leads.
 */
async function startStalled(env: Record<string, string>, name: string): Promise<{ started: Result; session: number }> {
  const { bin, child } = stalledCommand(name);
  const starting = initScript("start", { ...env, PATH: `${bin}:${applets}:${process.env.PATH}` });
  await until(() => agentsIn(dir, child).length === 1, "the stalled command's child", 10_000);
  const session = sessionOf(agentsIn(dir, child)[0]!)!;
  expect(inSession(session).length).toBe(2);
  return { started: await starting, session };
}

describe("S95audio-agent: a start that gives up leaves nothing it started running", () => {
  // The log file a FIFO nothing reads: the script's own check that it can write the log opened it, and
  // blocked there for good, holding the turn. Once past that check, the wrapper shell blocked opening it,
  // and start, which saw no agent 5 s later, failed and left it there: once something read the FIFO, it
  // would run the agent with no pid file naming it.
  test("a log file that is a FIFO nothing reads: start fails (1) saying so, nothing it started runs on, nothing of it is left; a start with a log file then starts", async () => {
    const env = setup();
    const fifo = makeFifo(join(dir, "log.fifo"));
    const starting = initScript("start", { ...env, AUDIO_AGENT_LOG_FILE: fifo });
    await until(() => existsSync(env.AUDIO_AGENT_PIDFILE) && pidIn(env) > 0, "the wrapper shell's pid file", 10_000);
    const wrapper = pidIn(env);
    const session = sessionOf(wrapper)!;
    expect(inSession(session)).toEqual([wrapper]);
    const started = await starting;
    expect({ code: started.code, stdout: started.stdout, stderr: started.stderr }).toEqual({
      code: 1,
      stdout: `audio-agent: pid ${wrapper} still does not run ${agent} after 5 s (its log file is a FIFO: does anything read it?); see ${fifo}\n`,
      stderr: "",
    });
    expect(inSession(session)).toEqual([]);
    expect(runningIn(dir)).toEqual([]);
    expect(readdirSync(join(dir, "run"))).toEqual([]);

    const again = await initScript("start", env);
    expect(again.code, again.stdout + again.stderr).toBe(0);
    expect(agentsIn(dir, agent)).toEqual([pidIn(env)]);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(readdirSync(join(dir, "run"))).toEqual([]);
  }, 60_000);

  // The wrapper shell (here a stand-in that never execs the agent, with a child of its own) still not the
  // agent after 5 s: start failed and left it and its child running, the pid file and syslog pipe gone.
  test("a wrapper shell that has not exec'd the agent within the wait, logging to syslog: start fails (1), and neither it nor its child runs on; no syslog pipe left", async () => {
    const env: Record<string, string> = { ...setup(), AUDIO_AGENT_LOG_FILE: "" };
    const { started, session } = await startStalled(env, "sh");
    expect({ code: started.code, stdout: started.stdout, stderr: started.stderr }).toEqual({
      code: 1,
      stdout: `audio-agent: pid ${session} still does not run ${agent} after 5 s; see the system log (logread)\n`,
      stderr: "",
    });
    expect(inSession(session)).toEqual([]);
    expect(readdirSync(join(dir, "run"))).toEqual([]);
  }, 60_000);

  // start-stop-daemon (here a stand-in that never writes the pid file, with a child of its own) still
  // without a pid file after 5 s: start failed, left it running, to write the pid file and run the
  // agent after start had said it failed, and left the syslog pipe.
  test("start-stop-daemon without a pid file within the wait, logging to syslog: start fails (1), and neither it nor its child runs on; no syslog pipe left", async () => {
    const env: Record<string, string> = { ...setup(), AUDIO_AGENT_LOG_FILE: "" };
    const { started, session } = await startStalled(env, "start-stop-daemon");
    expect({ code: started.code, stdout: started.stdout, stderr: started.stderr }).toEqual({ code: 1, stdout: `audio-agent: no pid file ${env.AUDIO_AGENT_PIDFILE} after 5 s\n`, stderr: "" });
    expect(inSession(session)).toEqual([]);
    expect(readdirSync(join(dir, "run"))).toEqual([]);
  }, 60_000);

  // A start ended by a signal gave up its turn alone: the wrapper shell waiting to open the log FIFO ran on,
  // its pid file naming no agent (status 1, and the next start started another), and ran the agent with
  // no pid file naming it once something read the FIFO.
  test("a start TERMed, INTed or HUPed while its wrapper shell waits to open a log FIFO nothing reads: exit 1, nothing it started runs on, nothing of it is left", async () => {
    const env = setup();
    env.AUDIO_AGENT_LOG_FILE = makeFifo(join(dir, "log.fifo"));
    for (const signal of ["SIGTERM", "SIGINT", "SIGHUP"] as const) {
      const starting = start([BUSYBOX!, "sh", SCRIPT, "start"], { cwd: dir, env: { ...cleanEnv(), PATH: `${applets}:${process.env.PATH}`, ...env }, timeoutMs: 30_000 });
      await until(() => existsSync(env.AUDIO_AGENT_PIDFILE) && pidIn(env) > 0, "the wrapper shell's pid file", 10_000);
      const session = sessionOf(pidIn(env))!;
      expect(inSession(session)).toEqual([pidIn(env)]);
      starting.kill(signal);
      expect({ signal, code: await starting.exited }).toEqual({ signal, code: 1 });
      expect({ signal, running: inSession(session), left: readdirSync(join(dir, "run")) }).toEqual({ signal, running: [], left: [] });
    }
  }, 60_000);

  // The shell reaps a child that has exited as it waits for a command of its own (here a tick's sleep):
  // its pid is free then, for the kernel to give again once its pids wrap around. Start asked only whether
  // a process had that pid: a start-stop-daemon that had failed without a pid file was taken for one still
  // starting, and 5 s later the pid's new owner, leading a session of its own, was ended with that session.
  test.skipIf(!canChoosePid)("start-stop-daemon exits without a pid file and its pid goes to another session's leader before start looks again: start says it failed (1) and signals nothing", async () => {
    const env: Record<string, string> = { ...setup(), AUDIO_AGENT_LOG_FILE: "" };
    const at = (name: string) => join(dir, name);
    const bin = at("held");
    mkdirSync(bin);
    // start-stop-daemon fails once the start ticks; that tick's sleep lasts until the start has reaped it and the test says so.
    writeFileSync(join(bin, "start-stop-daemon"), `#!${BUSYBOX} sh\necho $$ >${at("ssd.pid")}\nuntil [ -e ${at("ticking")} ]; do ${BUSYBOX} sleep 0.01; done\nexit 1\n`);
    writeFileSync(
      join(bin, "sleep"),
      `#!${BUSYBOX} sh\nif [ -e ${at("ssd.pid")} ] && [ ! -e ${at("ticking")} ]; then\n: >${at("ticking")}\nwhile [ -e /proc/$(cat ${at("ssd.pid")}) ]; do ${BUSYBOX} sleep 0.01; done\n: >${at("reaped")}\nuntil [ -e ${at("go")} ]; do ${BUSYBOX} sleep 0.01; done\nfi\nexec ${BUSYBOX} sleep "$@"\n`,
    );
    for (const shim of ["start-stop-daemon", "sleep"]) chmodSync(join(bin, shim), 0o755);
    const starting = initScript("start", { ...env, PATH: `${bin}:${applets}:${process.env.PATH}` });
    await until(() => existsSync(at("reaped")), "start-stop-daemon's end, reaped by the start", 10_000);
    const freed = Number(readFileSync(at("ssd.pid"), "utf8"));
    const leader = spawnAt(freed, ["setsid", standInAgent(at("leader")), "60"]);
    expect(leader?.pid).toBe(freed);
    await until(() => sessionOf(freed) === freed, "the new owner of the pid leading its session", 10_000);
    writeFileSync(at("go"), "");
    const started = await starting;
    expect({ code: started.code, stdout: started.stdout, stderr: started.stderr }).toEqual({ code: 1, stdout: "audio-agent: start-stop-daemon failed (1)\n", stderr: "" });
    expect(alive(freed)).toBe(true);
    expect(readdirSync(join(dir, "run"))).toEqual([]);
  }, 60_000);
});

describe("S95audio-agent: a settings file the shell cannot read", () => {
  // A quote left open, a stray "fi": the shell ended the script (2, LSB's "invalid arguments") with a
  // line that named the script's own line of the eval, not the file nor its line.
  test("start, stop and restart: 6 (not configured), status: 4 (unknown), with one line naming the file and its line; the agent left running", async () => {
    const env = setup();
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env);
    for (const [settings, line, reason] of [
      ['AUDIO_AGENT_LOG_LEVEL=debug\nAUDIO_AGENT_ARGS="300\n', 3, "unterminated quoted string"],
      ["AUDIO_AGENT_LOG_LEVEL=debug\nfi\n", 2, 'unexpected "fi"'],
    ] as const) {
      writeFileSync(env.AUDIO_AGENT_DEFAULTS, settings);
      for (const [action, code] of [["start", 6], ["restart", 6], ["stop", 6], ["status", 4]] as const) {
        const r = await initScript(action, env);
        expect({ action, code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({
          action,
          code,
          stdout: `audio-agent: ${env.AUDIO_AGENT_DEFAULTS}: line ${line}: syntax error: ${reason}\n`,
          stderr: "",
        });
        expect(alive(pid), action).toBe(true);
      }
    }
    rmSync(env.AUDIO_AGENT_DEFAULTS);
    expect((await initScript("stop", env)).code).toBe(0);
  }, 60_000);
});

describe("S95audio-agent: LSB exit codes for a user who may not act", () => {
  // The header: "Exit codes (LSB): ... 4 cannot tell whether the pid file's process is the agent
  // (no access ...: not root)". LSB's 4 for start, stop and restart is "user had insufficient
  // privilege"; a user who may not take the script's turn (the lock next to a root-owned pid file)
  // is that user, and gets 1, a generic failure, instead.
  test.skipIf(!canSwitchUser)("start and stop as a user who may not write the run directory: exit 4, nothing started or stopped", async () => {
    const env = setup();
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env);
    const nobody = [Bun.which("setpriv")!, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--"];

    const stopped = await initScript("stop", env, nobody);
    expect(stopped.code, stopped.stdout + stopped.stderr).toBe(4);
    expect(alive(pid)).toBe(true);

    expect((await initScript("stop", env)).code).toBe(0);
    const started = await initScript("start", env, nobody);
    expect(started.code, started.stdout + started.stderr).toBe(4);
    expect(agentsIn(dir, agent)).toEqual([]);
  }, 60_000);
});

describe("S95audio-agent: every action that takes the turn answers 4 to a user who may not act", () => {
  // The header: "4 not privileged: cannot take the turn (the lock next to the pid file) ...". restart,
  // try-restart and force-reload take the turn as start and stop do, and must pass its 4 on, not 1.
  test.skipIf(!canSwitchUser)("restart, try-restart and force-reload as a user who may not write the run directory: exit 4, the agent left running", async () => {
    const env = setup();
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env);
    const nobody = [Bun.which("setpriv")!, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--"];
    for (const action of ["restart", "try-restart", "force-reload"]) {
      const r = await initScript(action, env, nobody);
      expect(r.code, `${action}: ${r.stdout}${r.stderr}`).toBe(4);
      expect(alive(pid), action).toBe(true);
      expect(pidIn(env), action).toBe(pid);
    }
    expect((await initScript("stop", env)).code).toBe(0);
  }, 60_000);

  // A user who may take the turn (a run directory anyone writes) but cannot tell whether the pid file's
  // process is the agent (root's: no access to its /proc/PID/exe) cannot restart it either: 4, as stop
  // answers it, not LSB's 0 of "not running" (the agent runs), nor 1.
  test.skipIf(!canSwitchUser)("restart, try-restart and force-reload as a user who cannot tell whether root's agent runs: exit 4, the agent left running", async () => {
    const env = setup();
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env);
    chmodSync(join(dir, "run"), 0o1777);
    const nobody = [Bun.which("setpriv")!, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--"];
    for (const action of ["restart", "try-restart", "force-reload"]) {
      const r = await initScript(action, env, nobody);
      expect(r.code, `${action}: ${r.stdout}${r.stderr}`).toBe(4);
      expect(r.stdout + r.stderr, action).not.toContain("nothing to restart");
      expect(alive(pid), action).toBe(true);
      expect(pidIn(env), action).toBe(pid);
    }
    expect((await initScript("stop", env)).code).toBe(0);
  }, 60_000);
});

describe("S95audio-agent: status of an agent whose logger is gone", () => {
  // Logging to syslog, the agent writes into a pipe that logger reads. With logger gone (killed, OOM) each
  // line the agent wrote was lost, and status said "running" as before: nothing told of the loss.
  test("logging to syslog, its logger killed: status says the agent runs and its log lines are lost (0)", async () => {
    const env: Record<string, string> = { ...setup(), AUDIO_AGENT_LOG_FILE: "" };
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env);
    const loggers = childrenOf(pid).filter((child) => child.comm === "logger");
    expect(loggers.length).toBe(1);
    const before = await initScript("status", env);
    expect({ code: before.code, stdout: before.stdout }).toEqual({ code: 0, stdout: `audio-agent: running (pid ${pid})\n` });

    process.kill(loggers[0]!.pid, "SIGKILL");
    await until(() => !alive(loggers[0]!.pid), "the logger gone", 5_000);
    const status = await initScript("status", env);
    expect({ code: status.code, stdout: status.stdout }).toEqual({
      code: 0,
      stdout: `audio-agent: running (pid ${pid}), but its logger is gone: its log lines are lost until a restart\n`,
    });
    expect((await initScript("stop", env)).code).toBe(0);
  }, 30_000);
});

describe("S95audio-agent: status of an agent that logs to a file", () => {
  // An agent that died (KILL, OOM) while logging to syslog leaves the syslog pipe; one started then to
  // log to a file left it there, and status took the pipe for the new agent's and its logger for gone.
  test("started to log to a file after one that logged to syslog died: status says running, no word of a logger", async () => {
    const env = setup();
    expect((await initScript("start", { ...env, AUDIO_AGENT_LOG_FILE: "" })).code).toBe(0);
    const first = pidIn(env);
    process.kill(first, "SIGKILL");
    await until(() => !alive(first), "the agent gone", 5_000);

    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    const status = await initScript("status", env);
    expect({ code: status.code, stdout: status.stdout }).toEqual({ code: 0, stdout: `audio-agent: running (pid ${pidIn(env)})\n` });
    expect(readdirSync(join(dir, "run"))).toEqual(["audio-agent.pid"]);
    expect((await initScript("stop", env)).code).toBe(0);
  }, 30_000);
});

describe("S95audio-agent: an action whose output nobody reads", () => {
  // Its stdout a pipe whose reader has gone (| head -n 0, a closed ssh channel, a caller that timed
  // out): a line written there raises SIGPIPE, which ended the script at its first line. A restart
  // then stopped the agent, said so, and died: no agent, its lock and the pid file left, exit 141.
  test("restart with its stdout a pipe no one reads: exit 0, a new agent, nothing of the turn left", async () => {
    const env = setup();
    expect((await initScript("start", env)).code).toBe(0);
    const first = pidIn(env);
    // A FIFO opened for reading and writing, then for writing, then its reader closed: a pipe without a reader.
    const unread = ["sh", "-c", 'mkfifo "$0" && exec 3<>"$0" 4>"$0" 3<&- && rm "$0" && exec "$@" >&4 4>&-', join(dir, "out")];
    const restarted = await initScript("restart", env, unread);
    expect(restarted.code, restarted.stderr).toBe(0);
    const second = pidIn(env);
    expect(alive(first)).toBe(false);
    expect(second).not.toBe(first);
    expect(alive(second)).toBe(true);
    expect(readdirSync(join(dir, "run"))).toEqual(["audio-agent.pid"]);
    expect((await initScript("stop", env)).code).toBe(0);
  }, 60_000);
});

describe("S95audio-agent: what the agent inherits from whoever ran the script", () => {
  // A caller that runs the script with a pipe open beyond stdio (a supervisor, a web UI's popen, a
  // `$(...)` in a shell that had one) waits for that pipe's end: an agent left holding it, running
  // for months, kept that caller waiting too. stdio is /dev/null or the log; 3-9 are closed.
  for (const log of ["a log file", "syslog"]) {
    test(`descriptors 3-9 the caller had open are not the agent's (${log}) nor its logger's`, async () => {
      const env = setup();
      if (log === "syslog") env.AUDIO_AGENT_LOG_FILE = "";
      const marker = join(dir, "held-open");
      const started = await initScript("start", env, ["sh", "-c", 'exec 5>>"$0" 9>>"$0"; exec "$@"', marker]);
      expect(started.code, started.stdout + started.stderr).toBe(0);
      const held = [pidIn(env), ...childrenOf(pidIn(env)).map((child) => child.pid)].flatMap((pid) =>
        readdirSync(`/proc/${pid}/fd`).filter((fd) => {
          try {
            return readlinkSync(`/proc/${pid}/fd/${fd}`) === marker;
          } catch {
            return false;
          }
        }),
      );
      expect(held).toEqual([]);
      const stopped = await initScript("stop", env);
      expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
    }, 60_000);
  }
});
