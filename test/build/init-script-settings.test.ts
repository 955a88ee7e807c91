/**
 * packaging/README.md: settings go in /etc/default/audio-agent, "all
 * assignments are exported, so the agent's own AUDIO_AGENT_* settings work
 * there too". In the default output role the script passes --source FIFO and
 * --format ogg as flags, which win over the environment: the settings file's
 * AUDIO_AGENT_FORMAT (and AUDIO_AGENT_SOURCE) are dropped without a word,
 * while the serve role fills in its channel's defaults only where the file
 * left them out. Run under Debian's BusyBox against the compiled agent.
 */
import { afterAll, afterEach, beforeAll, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { built } from "../support/binaries.ts";
import { writeIntoFifo } from "../support/fifo.ts";
import { BUSYBOX, installApplets, SCRIPT } from "../support/init-script.ts";
import { testPayload } from "../support/payloads.ts";
import { alive, runningIn } from "../support/proc.ts";
import { cleanEnv, run, start } from "../support/processes.ts";
import { until } from "../support/wait.ts";
import { wholeWireFrames, writeWireFile } from "../support/wire.ts";

let agentBin: string;
let applets: string;
let dir: string | undefined;

beforeAll(async () => {
  applets = await installApplets();
  agentBin = (await built("x64")).path;
}, 120_000);

afterAll(() => {
  if (applets) rmSync(applets, { recursive: true, force: true });
});

afterEach(() => {
  if (!dir) return;
  for (const pid of runningIn(dir)) if (alive(pid)) process.kill(pid, "SIGKILL");
  rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/**
 * A service in a new temp dir whose settings file holds `settings`: the
 * default role's FIFO, socket, pid file and log inside it; `script` runs an
 * action of the init script on it.
 */
function service(settings: string) {
  dir = mkdtempSync("/tmp/aa-initset-");
  const path = (name: string) => join(dir!, name);
  const env = {
    AUDIO_AGENT_BIN: agentBin,
    AUDIO_AGENT_PIDFILE: path("run/audio-agent.pid"),
    AUDIO_AGENT_LOG_FILE: path("log/audio-agent.log"),
    AUDIO_AGENT_FIFO: path("capture/capture.wire"),
    AUDIO_AGENT_DEFAULTS: path("default/audio-agent"),
    JETKVM_AUDIO_OUTPUT_SOCKET: path("o.sock"),
    JETKVM_AUDIO_INPUT_SOCKET: path("i.sock"),
  };
  mkdirSync(path("default"));
  writeFileSync(env.AUDIO_AGENT_DEFAULTS, settings);
  const script = (action: string) =>
    run([BUSYBOX!, "sh", SCRIPT, action], { cwd: dir, env: { ...cleanEnv(), PATH: `${applets}:${process.env.PATH}`, ...env }, timeoutMs: 20_000 });
  return { env, path, script };
}

/** The command line of the pid file's process, without the executable. */
const argsOf = (pidFile: string) => readFileSync(`/proc/${readFileSync(pidFile, "utf8").split("\n")[0]}/cmdline`, "utf8").split("\0").slice(1, -1);

test("the default output role takes AUDIO_AGENT_FORMAT from the settings file: a wire capture written into the FIFO reaches the client", async () => {
  // The device's settings file: the agent's own variable, as packaging/README.md invites.
  const { env, path, script } = service("AUDIO_AGENT_FORMAT=wire\n");

  const started = await script("start");
  expect(started.code, started.stdout + started.stderr).toBe(0);
  await until(() => existsSync(env.JETKVM_AUDIO_OUTPUT_SOCKET), "the socket", 10_000);

  await writeWireFile(path("send.wire"), 20);
  const recv = start([agentBin, "output", "recv", "--socket", env.JETKVM_AUDIO_OUTPUT_SOCKET, "--sink", path("out.wire"), "--count", "20", "--connect-timeout", "5"], { cwd: dir, timeoutMs: 15_000 });
  await until(() => readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8").includes("client connected"), "the client", 10_000);
  expect(await writeIntoFifo(env.AUDIO_AGENT_FIFO, path("send.wire"))).toBe(0);
  const received = await recv.done;
  const log = readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8");
  expect((await script("stop")).code).toBe(0);

  expect(received.code, log).toBe(0);
  expect(wholeWireFrames(path("out.wire")).map((f) => f.join(","))).toEqual(Array.from({ length: 20 }, (_, i) => testPayload(i).join(",")));
}, 60_000);

// Blanks alone name no command: the agent was run with none (exit 2) and start failed.
test("AUDIO_AGENT_ARGS of blanks only is taken as unset: the role's defaults run", async () => {
  const { env, script } = service('AUDIO_AGENT_ARGS=" \t "\n');
  const started = await script("start");
  expect(started.code, started.stdout + started.stderr).toBe(0);
  expect(argsOf(env.AUDIO_AGENT_PIDFILE)).toEqual(["output", "serve"]);
  expect(statSync(env.AUDIO_AGENT_FIFO).isFIFO()).toBe(true);
  expect((await script("stop")).code).toBe(0);
}, 30_000);

// A settings file edited on Windows: each value ended in a CR, and the role's ("serve\r") was refused
// in a garbled line. systemd's EnvironmentFile= ends a line at a CR, as the script now reads it too.
test("a settings file with CRLF line ends is read as with LF: its role and its values, without the CRs", async () => {
  const { env, path, script } = service(["# edited on Windows", "AUDIO_AGENT_ROLE=serve", "", 'AUDIO_AGENT_INPUT_SINK="/dev/null"', "AUDIO_AGENT_LOG_LEVEL=debug", ""].join("\r\n"));
  const started = await script("start");
  expect(started.code, started.stdout + started.stderr).toBe(0);
  expect(started.stderr).toBe("");
  expect(argsOf(env.AUDIO_AGENT_PIDFILE)).toEqual(["serve"]);
  const environ = readFileSync(`/proc/${readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8").split("\n")[0]}/environ`, "utf8").split("\0");
  expect(environ).toEqual(expect.arrayContaining(["AUDIO_AGENT_ROLE=serve", "AUDIO_AGENT_INPUT_SINK=/dev/null", "AUDIO_AGENT_LOG_LEVEL=debug"]));
  expect(existsSync(path("i.sock"))).toBe(true);
  expect((await script("stop")).code).toBe(0);
}, 30_000);

// A script that a systemd unit runs (systemd-sysv-generator's, a unit of its own) passed the unit's INVOCATION_ID on, and
// the agent, which takes it for the audio-agent unit's, told the script's own settings to be ignored, where the script read them.
test("run by a systemd unit (INVOCATION_ID), the script's agent does not take itself for the unit's: no word of the script's settings, a misspelt one still warned of", async () => {
  const { env, script } = service("AUDIO_AGENT_ROLE=serve\nAUDIO_AGENT_QUEUE_FRAME=250\n");
  const started = await run([BUSYBOX!, "sh", SCRIPT, "start"], {
    cwd: dir,
    env: { ...cleanEnv(), PATH: `${applets}:${process.env.PATH}`, ...env, INVOCATION_ID: "0123456789abcdef0123456789abcdef" },
    timeoutMs: 20_000,
  });
  expect(started.code, started.stdout + started.stderr).toBe(0);
  expect(argsOf(env.AUDIO_AGENT_PIDFILE)).toEqual(["serve"]);
  // Read once stopped: written in the thread pool (a log file), its lines follow the sockets' listening, not before them.
  expect((await script("stop")).code).toBe(0);
  const log = readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8");
  expect(log).toContain("WARN  agent: environment AUDIO_AGENT_QUEUE_FRAME is no setting of the agent's, ignored: did you mean AUDIO_AGENT_QUEUE_FRAMES?\n");
  expect(log).not.toContain("init script's");
}, 30_000);

// LSB's 6, "program is not configured", for a setting the agent refuses (it exits 2): start answered 1.
test("a setting the agent refuses (AUDIO_AGENT_FORMAT=mp3): start fails with 6, the agent's reason in its log", async () => {
  const { env, script } = service("AUDIO_AGENT_FORMAT=mp3\n");
  const started = await script("start");
  expect(started.code, started.stdout + started.stderr).toBe(6);
  expect(started.stdout).toContain(`exited before it listened, with exit code 2 (a bad setting); see ${env.AUDIO_AGENT_LOG_FILE}\n`);
  expect(readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8")).toContain("mp3");
  expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
}, 30_000);

// systemd's style, a value with blanks unquoted: the shell ran "serve" as a command (not found), with
// AUDIO_AGENT_ARGS=output for it alone, and the default role started without a word. The unit reads it whole.
test("a value with unquoted blanks in the settings file: start and restart fail (6) naming the file and the line, a running agent left running", async () => {
  const { env, path, script } = service("AUDIO_AGENT_LOG_LEVEL=info\n");
  expect((await script("start")).code).toBe(0);
  const pid = readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8").split("\n")[0];
  const line = `AUDIO_AGENT_ARGS=output serve --source ${path("in.wire")} --socket ${path("o.sock")}`;
  writeFileSync(env.AUDIO_AGENT_DEFAULTS, `# systemd's way\nAUDIO_AGENT_LOG_LEVEL=info\n${line}\n`);
  for (const action of ["restart", "start"]) {
    const r = await script(action);
    expect(r.code, `${action}: ${r.stdout}${r.stderr}`).toBe(6);
    expect(r.stdout).toBe(`audio-agent: ${env.AUDIO_AGENT_DEFAULTS} line 3: ${line}: a value with blanks must be quoted ("..."), for the shell to read it whole as systemd does\n`);
    expect(r.stderr).toBe("");
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8").split("\n")[0]).toBe(pid);
  }
  // Quoted, it is read alike by both.
  const quoted = `output serve --source ${env.AUDIO_AGENT_FIFO} --socket ${path("o.sock")}`;
  writeFileSync(env.AUDIO_AGENT_DEFAULTS, `AUDIO_AGENT_LOG_LEVEL=info\nAUDIO_AGENT_ARGS="${quoted}"\n`);
  const restarted = await script("restart");
  expect(restarted.code, restarted.stdout + restarted.stderr).toBe(0);
  expect(argsOf(env.AUDIO_AGENT_PIDFILE)).toEqual(quoted.split(" "));
  expect((await script("stop")).code).toBe(0);
}, 30_000);

// Only what would start the agent refused it: stop and status read the file all the same, and the
// shell ran the value's second word as a command ("serve: not found", or any command named there).
test("a value with unquoted blanks in the settings file: stop refuses it (6) and status (4), naming the file and the line, the agent left running", async () => {
  const { env, path, script } = service("AUDIO_AGENT_LOG_LEVEL=info\n");
  expect((await script("start")).code).toBe(0);
  const pid = Number(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8").split("\n")[0]);
  const line = "AUDIO_AGENT_ARGS=output serve";
  writeFileSync(env.AUDIO_AGENT_DEFAULTS, `AUDIO_AGENT_LOG_LEVEL=info\n${line}\n`);
  const said = `audio-agent: ${env.AUDIO_AGENT_DEFAULTS} line 2: ${line}: a value with blanks must be quoted ("..."), for the shell to read it whole as systemd does\n`;
  for (const [action, code] of [["stop", 6], ["status", 4]] as const) {
    const r = await script(action);
    expect({ action, code: r.code, stdout: r.stdout, stderr: r.stderr }).toEqual({ action, code, stdout: said, stderr: "" });
    expect(alive(pid)).toBe(true);
  }
  writeFileSync(env.AUDIO_AGENT_DEFAULTS, `AUDIO_AGENT_LOG_LEVEL=info\nAUDIO_AGENT_ARGS="output serve"\n`);
  expect((await script("stop")).code).toBe(0);
  expect(alive(pid)).toBe(false);
  expect(existsSync(path("run/audio-agent.pid"))).toBe(false);
}, 30_000);

// An "export" line escaped the check: "export NAME=a b" exported NAME=a (and b), and one with a flag in its
// value ended the script (2) in a line naming the script's own line ("--source: bad variable name").
test("an export line with a value whose blanks are unquoted: start fails (6) naming its line; quoted, it is read whole", async () => {
  const { env, path, script } = service("");
  const line = `export AUDIO_AGENT_ARGS=output serve --source ${env.AUDIO_AGENT_FIFO} --socket ${path("o.sock")}`;
  writeFileSync(env.AUDIO_AGENT_DEFAULTS, `AUDIO_AGENT_LOG_LEVEL=info\n${line}\n`);
  const refused = await script("start");
  expect({ code: refused.code, stdout: refused.stdout, stderr: refused.stderr }).toEqual({
    code: 6,
    stdout: `audio-agent: ${env.AUDIO_AGENT_DEFAULTS} line 2: ${line}: a value with blanks must be quoted ("..."), for the shell to read it whole as systemd does\n`,
    stderr: "",
  });
  expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
  const quoted = `output serve --source ${env.AUDIO_AGENT_FIFO} --socket ${path("o.sock")}`;
  writeFileSync(env.AUDIO_AGENT_DEFAULTS, `\texport  AUDIO_AGENT_ARGS="${quoted}"\n`);
  const started = await script("start");
  expect(started.code, started.stdout + started.stderr).toBe(0);
  expect(argsOf(env.AUDIO_AGENT_PIDFILE)).toEqual(quoted.split(" "));
  expect((await script("stop")).code).toBe(0);
}, 30_000);

// Read by eval, a "return" in the settings file ended the script: start answered 0 and started nothing,
// without a word. Sourced, as the file was before, it ends the file alone, as it does now.
test("a settings file that returns early: what it set before is read, the rest not, and start starts the agent", async () => {
  const { env, script } = service('AUDIO_AGENT_LOG_LEVEL=debug\n[ -n "$AUDIO_AGENT_LOG_LEVEL" ] && return\nAUDIO_AGENT_ROLE=serve\n');
  const started = await script("start");
  expect(started.code, started.stdout + started.stderr).toBe(0);
  expect(started.stdout).toContain("started (pid ");
  expect(argsOf(env.AUDIO_AGENT_PIDFILE)).toEqual(["output", "serve"]);
  const environ = readFileSync(`/proc/${readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8").split("\n")[0]}/environ`, "utf8").split("\0");
  expect(environ).toContain("AUDIO_AGENT_LOG_LEVEL=debug");
  expect((await script("stop")).code).toBe(0);
}, 30_000);
