/**
 * packaging/S95audio-agent under Debian's BusyBox, as on the device: `busybox
 * sh` runs it with every applet (start-stop-daemon, logger, sleep, ...) first
 * on PATH, against a temp dir, starting the compiled x64 agent.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, realpathSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DEVICE_RUNTIME_ENV } from "../../src/bench/device-runtime.ts";
import { built } from "../support/binaries.ts";
import { makeFifo, writeIntoFifo } from "../support/fifo.ts";
import { packetsOf } from "../support/ogg.ts";
import { canFreeze, freezer } from "../support/machine.ts";
import { canSwitchUser, NOBODY } from "../support/nobody.ts";
import { encodeWith } from "../support/opus-fixtures.ts";
import { testPayload } from "../support/payloads.ts";
import { agentsIn, BUSYBOX, gonePid, installApplets, SCRIPT, standInAgent } from "../support/init-script.ts";
import { alive, childrenOf, openingFifo, runningIn, startTimeOf, unixListeners } from "../support/proc.ts";
import { cleanEnv, type Result, run, start } from "../support/processes.ts";
import { until } from "../support/wait.ts";
import { INPUT_MAGIC, MessageType } from "../../src/protocol/index.ts";
import { wholeWireFrames, wholeWireMessages, writeWireFile } from "../support/wire.ts";

let agentBin: string;
let applets: string;
/** The applets of a BusyBox built without logger, logread and syslogd, as on many boards. */
let appletsWithoutSyslog: string;
/** The applets of a BusyBox with logger but a syslogd without its log buffer (no logread). */
let appletsWithoutLogread: string;
let t: { dir: string; path: (name: string) => string };
const daemons = new Set<number>();

beforeAll(async () => {
  applets = await installApplets();
  appletsWithoutSyslog = await installApplets("/tmp/aa-bb-nolog-");
  for (const applet of ["logger", "logread", "syslogd"]) unlinkSync(join(appletsWithoutSyslog, applet));
  appletsWithoutLogread = await installApplets("/tmp/aa-bb-noread-");
  unlinkSync(join(appletsWithoutLogread, "logread"));
  agentBin = (await built("x64")).path;
}, 120_000);

afterAll(() => {
  for (const dir of [applets, appletsWithoutSyslog, appletsWithoutLogread]) if (dir) rmSync(dir, { recursive: true, force: true });
});

afterEach(() => {
  // Whatever a failed test left running, the pid file's or not (a start that lost its pid file).
  for (const pid of [...daemons, ...(t ? runningIn(t.dir) : [])]) if (alive(pid)) process.kill(pid, "SIGKILL");
  daemons.clear();
  if (t) rmSync(t.dir, { recursive: true, force: true });
});

/** The live agents serving from `dir`. */
function agentsOf(dir: string): number[] {
  return agentsIn(dir, agentBin);
}

function tempDir(): void {
  const dir = mkdtempSync("/tmp/aa-init-");
  t = { dir, path: (name) => join(dir, name) };
}

/** The script's settings pointing into the temp dir: a looping realtime stream of a wire capture. */
function settings(extra: Record<string, string> = {}): Record<string, string> {
  return {
    AUDIO_AGENT_BIN: agentBin,
    AUDIO_AGENT_ARGS: `output serve --source ${t.path("in.wire")} --realtime --loop --socket ${t.path("o.sock")}`,
    AUDIO_AGENT_PIDFILE: t.path("run/audio-agent.pid"),
    AUDIO_AGENT_LOG_FILE: t.path("log/audio-agent.log"),
    AUDIO_AGENT_FIFO: "",
    AUDIO_AGENT_DEFAULTS: t.path("default/audio-agent"),
    ...extra,
  };
}

/**
 * In a new temp dir, a device's settings for `serve`: the role and the input
 * sink from the settings file, the capture FIFO, the sockets at JetKVM's
 * variables; the rest are the script's defaults (no AUDIO_AGENT_ARGS).
 */
function deviceServeSettings(): { fifo: string; out: string; input: string; sink: string; env: Record<string, string> } {
  tempDir();
  const fifo = t.path("capture/capture.ogg");
  const [out, input, sink] = [t.path("o.sock"), t.path("i.sock"), t.path("mic.wire")];
  const { AUDIO_AGENT_ARGS: _, ...env } = settings({ AUDIO_AGENT_FIFO: fifo, JETKVM_AUDIO_OUTPUT_SOCKET: out, JETKVM_AUDIO_INPUT_SOCKET: input });
  mkdirSync(t.path("default"));
  writeFileSync(env.AUDIO_AGENT_DEFAULTS, `AUDIO_AGENT_ROLE=serve\nAUDIO_AGENT_INPUT_SINK=${sink}\n`);
  return { fifo, out, input, sink, env };
}

/** Runs the script's `action`; `prefix` runs it through a command first (setpriv, as another user or with fewer capabilities). */
async function initScript(action: string, env: Record<string, string>, prefix: string[] = [], timeoutMs = 20_000): Promise<Result> {
  const result = await run([...prefix, BUSYBOX!, "sh", SCRIPT, action], {
    cwd: t.dir,
    env: { ...cleanEnv(), PATH: `${applets}:${process.env.PATH}`, ...env },
    timeoutMs,
  });
  const pid = pidIn(env);
  if (pid) daemons.add(pid);
  return result;
}

/**
 * Settings whose "agent" ignores TERM: busybox running a shell script (the
 * script checks the pid's /proc/PID/exe against AUDIO_AGENT_BIN, which a
 * script as AUDIO_AGENT_BIN would never pass).
 */
function stubbornSettings(extra: Record<string, string> = {}): Record<string, string> {
  const stubborn = t.path("stubborn");
  writeFileSync(stubborn, "trap '' TERM\nwhile :; do sleep 0.1; done\n");
  return settings({ AUDIO_AGENT_BIN: BUSYBOX!, AUDIO_AGENT_ARGS: `sh ${stubborn}`, ...extra });
}

/** The pid file's pid: its first line (the second says when that process started). */
function pidIn(env: Record<string, string>): number | undefined {
  try {
    return Number(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8").split("\n")[0]!.trim()) || undefined;
  } catch {
    return undefined;
  }
}

/**
 * `start` with AUDIO_AGENT_ARGS `args` and a --config FIFO that the agent
 * waits on before it listens: written 1.5 s in with a setting the agent
 * refuses, so that it exits (2) well after half a second, before it listens.
 */
async function startFailingLate(args: string): Promise<{ env: Record<string, string>; started: Result }> {
  const config = makeFifo(t.path("config.json"));
  const env = settings({ AUDIO_AGENT_ARGS: `${args} --config ${config}` });
  const starting = initScript("start", env);
  await Bun.sleep(1500);
  // Opening the FIFO waits for the agent to open it; the write then ends its read with a setting it refuses.
  writeFileSync(config, '{"bogus": 1}\n');
  return { env, started: await starting };
}

/**
 * `start` with `env`, then a `stop` ended (SIGTERM, as Ctrl-C or a
 * supervisor's timeout ends it) once the agent has its TERM, which the
 * stand-in agent tells by making `termed`: the pid file is left `stopping`.
 * Resolves with the agent's pid.
 */
async function startThenCutStopShort(env: Record<string, string>): Promise<number> {
  expect((await initScript("start", env)).code).toBe(0);
  const agent = pidIn(env)!;
  const stopping = start([BUSYBOX!, "sh", SCRIPT, "stop"], { cwd: t.dir, env: { ...cleanEnv(), PATH: `${applets}:${process.env.PATH}`, ...env }, timeoutMs: 20_000 });
  await until(() => existsSync(t.path("termed")), "the agent's TERM", 10_000);
  stopping.kill("SIGTERM");
  expect(await stopping.exited).toBe(1);
  return agent;
}

/** After an upgrade: status still finds agent `pid` running (0), and stop stops it. */
async function expectStillTheAgent(env: Record<string, string>, pid: number): Promise<void> {
  const status = await initScript("status", env);
  expect(status.code, status.stdout).toBe(0);
  expect(status.stdout).toContain(`running (pid ${pid})`);
  const stopped = await initScript("stop", env);
  expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
  expect(stopped.stdout).toContain("stopped");
  expect(alive(pid)).toBe(false);
}

describe("S95audio-agent under busybox sh", () => {
  test("start, status, stop, status, restart: a daemon that serves, and nothing left behind", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings();

    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    const pid = pidIn(env)!;
    expect(pid).toBeGreaterThan(1);
    expect(alive(pid)).toBe(true);
    // The pid file names the agent itself (the wrapper shell exec'd it), not a shell.
    expect(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0]).toBe(agentBin);
    // The pid alone on its first line (what start-stop-daemon -p, systemd's PIDFile= read), then when it started and what it runs.
    const startTime = readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ")[19]!;
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8")).toBe(`${pid}\nstarttime=${startTime}\nexe=${realpathSync(agentBin)}\n`);
    // Started means listening: the socket is there for a client as start returns.
    expect(statSync(t.path("o.sock")).isSocket()).toBe(true);

    // It really serves: a client receives frames of the capture.
    const recv = await run([agentBin, "output", "recv", "--socket", t.path("o.sock"), "--sink", t.path("out.wire"), "--count", "5", "--connect-timeout", "5"], { cwd: t.dir, timeoutMs: 15_000 });
    expect(recv.code, recv.stderr).toBe(0);
    const frames = wholeWireFrames(t.path("out.wire"));
    expect(frames.length).toBe(5);
    const known = Array.from({ length: 50 }, (_, i) => testPayload(i).join(","));
    for (const frame of frames) expect(known).toContain(frame.join(","));

    const status = await initScript("status", env);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(`running (pid ${pid})`);

    const again = await initScript("start", env);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("already running");
    expect(pidIn(env)).toBe(pid);

    const stopped = await initScript("stop", env);
    expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
    // TERM was enough: the agent exited cleanly on it (logged below), no KILL followed.
    expect(stopped.stdout).not.toContain("KILL");
    expect(alive(pid)).toBe(false);
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
    expect(existsSync(t.path("o.sock"))).toBe(false);
    // A clean exit on TERM, logged to the log file.
    expect(readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8")).toContain("stopped signal=SIGTERM");

    const statusStopped = await initScript("status", env);
    expect(statusStopped.code).toBe(3);
    expect(statusStopped.stdout).toContain("not running");
    expect((await initScript("stop", env)).code).toBe(0); // stopping a stopped service is fine

    expect((await initScript("start", env)).code).toBe(0);
    const first = pidIn(env)!;
    const restarted = await initScript("restart", env);
    expect(restarted.code, restarted.stdout + restarted.stderr).toBe(0);
    const second = pidIn(env)!;
    expect(second).not.toBe(first);
    expect(alive(first)).toBe(false);
    expect(alive(second)).toBe(true);
    await until(() => existsSync(t.path("o.sock")), "the socket after restart", 10_000);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(alive(second)).toBe(false);
    expect(existsSync(t.path("o.sock"))).toBe(false);
  }, 60_000);

  test("settings come from the defaults file, exported to the agent too", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const { AUDIO_AGENT_ARGS, ...env } = settings();
    mkdirSync(t.path("default"));
    writeFileSync(
      env.AUDIO_AGENT_DEFAULTS,
      `# sourced by the init script\nAUDIO_AGENT_ARGS="${AUDIO_AGENT_ARGS}"\nAUDIO_AGENT_LOG_FORMAT=json\n`,
    );
    expect((await initScript("start", env)).code).toBe(0);
    await until(() => existsSync(t.path("o.sock")), "the socket", 10_000);
    expect((await initScript("stop", env)).code).toBe(0);
    const lines = readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8").trim().split("\n");
    expect(lines.length).toBeGreaterThan(0);
    for (const line of lines) expect(() => JSON.parse(line)).not.toThrow();
  }, 30_000);

  test("a log file is kept under AUDIO_AGENT_LOG_MAX_BYTES by the agent (1 MiB unless set; empty: never), its older lines in FILE.1; to syslog or a device the agent is given no size", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const environ = (pid: number) => readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
    // By default: the agent is given 1 MiB.
    const env = settings();
    expect((await initScript("start", env)).code).toBe(0);
    await until(() => existsSync(t.path("o.sock")), "the socket", 10_000);
    expect(environ(pidIn(env)!)).toContain("AUDIO_AGENT_LOG_MAX_BYTES=1048576");
    expect((await initScript("stop", env)).code).toBe(0);
    // Set: at that size the file turns, shared by the agent's stdout and stderr as it is.
    const small = settings({ AUDIO_AGENT_LOG_MAX_BYTES: "4096", AUDIO_AGENT_STATS_INTERVAL: "0.1" });
    expect((await initScript("start", small)).code).toBe(0);
    await until(() => existsSync(`${small.AUDIO_AGENT_LOG_FILE}.1`), "the log's first turn", 20_000);
    expect((await initScript("stop", small)).code).toBe(0);
    expect(readFileSync(`${small.AUDIO_AGENT_LOG_FILE}.1`, "utf8")).toContain("instruments: stats seconds=0.1");
    expect(readFileSync(small.AUDIO_AGENT_LOG_FILE, "utf8")).toContain("stopped signal=SIGTERM");
    expect(readFileSync(small.AUDIO_AGENT_LOG_FILE, "utf8")).not.toContain("not rotated");
    // Empty: none.
    const never = settings({ AUDIO_AGENT_LOG_MAX_BYTES: "" });
    expect((await initScript("start", never)).code).toBe(0);
    await until(() => existsSync(t.path("o.sock")), "the socket", 10_000);
    expect(environ(pidIn(never)!)).toContain("AUDIO_AGENT_LOG_MAX_BYTES=");
    expect((await initScript("stop", never)).code).toBe(0);
    // To syslog (a pipe to logger), or to a log file that is a device (/dev/console, /dev/null): not given, so
    // the agent has nothing to warn of ("the log (stderr) is a terminal or device; it is not rotated").
    for (const log of ["", "/dev/null"]) {
      const elsewhere = settings({ AUDIO_AGENT_LOG_FILE: log });
      expect((await initScript("start", elsewhere)).code).toBe(0);
      await until(() => existsSync(t.path("o.sock")), "the socket", 10_000);
      expect({ log, given: environ(pidIn(elsewhere)!).filter((v) => v.startsWith("AUDIO_AGENT_LOG_MAX_BYTES")) }).toEqual({ log, given: [] });
      expect((await initScript("stop", elsewhere)).code).toBe(0);
    }
  }, 90_000);

  test("the agent runs without Bun's timer-woken helper threads and with its slower collection timer (device-runtime.ts's settings), and the defaults file can bring Bun's own back", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings();
    const threads = (pid: number) => readdirSync(`/proc/${pid}/task`).map((tid) => readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim());
    const environ = (pid: number) => readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");

    expect((await initScript("start", env)).code).toBe(0);
    await until(() => existsSync(t.path("o.sock")), "the socket", 10_000);
    const pid = pidIn(env)!;
    // A second of streaming to a client: allocations freed, collections run.
    const recv = await run([agentBin, "output", "recv", "--socket", t.path("o.sock"), "--sink", t.path("out.wire"), "--count", "50", "--connect-timeout", "5"], { cwd: t.dir, timeoutMs: 15_000 });
    expect(recv.code, recv.stderr).toBe(0);
    expect(environ(pid)).toEqual(expect.arrayContaining(Object.entries(DEVICE_RUNTIME_ENV).map(([key, value]) => `${key}=${value}`)));
    expect(threads(pid)).not.toContain("mi-scavenger");
    expect(threads(pid)).not.toContain("HeapHelper");
    expect((await initScript("stop", env)).code).toBe(0);

    mkdirSync(t.path("default"));
    writeFileSync(env.AUDIO_AGENT_DEFAULTS, "MIMALLOC_SCAVENGER=1\nBUN_JSC_numberOfGCMarkers=2\nBUN_GC_TIMER_INTERVAL=1000\n");
    expect((await initScript("start", env)).code).toBe(0);
    const back = pidIn(env)!;
    await until(() => threads(back).includes("mi-scavenger") && threads(back).includes("HeapHelper"), "Bun's helper threads", 10_000);
    expect(environ(back)).toContain("BUN_GC_TIMER_INTERVAL=1000");
    expect((await initScript("stop", env)).code).toBe(0);
  }, 60_000);

  test("AUDIO_AGENT_ROLE=serve: one process serves the capture FIFO on the output socket and the input socket into its sink", async () => {
    const { fifo, out, input, sink, env } = deviceServeSettings();

    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    const pid = pidIn(env)!;
    expect(statSync(fifo).isFIFO()).toBe(true);
    await until(() => existsSync(out) && existsSync(input), "both sockets", 10_000);
    expect(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(0, 2)).toEqual([agentBin, "serve"]);

    // The output channel: an encoder's Ogg stream through the FIFO, to a client.
    const opus = encodeWith(t.dir, "encoder", ["--max-delay", "20"]);
    const packets = packetsOf(new Uint8Array(readFileSync(opus))).slice(2);
    const recv = start([agentBin, "output", "recv", "--socket", out, "--sink", t.path("out.wire"), "--count", String(packets.length), "--connect-timeout", "5"], { cwd: t.dir, timeoutMs: 30_000 });
    await until(() => readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8").includes("output-server: client connected"), "the output client");
    // The input channel at the same time: a sender's frames into the sink.
    await writeWireFile(t.path("send.wire"), 30);
    const send = start([agentBin, "input", "send", "--socket", input, "--source", t.path("send.wire"), "--connect-timeout", "5"], { cwd: t.dir, timeoutMs: 30_000 });
    expect(await writeIntoFifo(fifo, opus)).toBe(0);
    const [received, sent] = await Promise.all([recv.done, send.done]);
    expect(received.code, received.stderr).toBe(0);
    expect(sent.code, sent.stderr).toBe(0);
    expect(wholeWireFrames(t.path("out.wire")).map((f) => f.join(","))).toEqual(packets.map((p) => p.join(",")));
    await until(() => readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8").includes("input-server: session ended by Stop"), "the input session's end");
    const micFrames = wholeWireMessages(sink, INPUT_MAGIC).filter((m) => m.type === MessageType.OpusFrame);
    expect(micFrames.map((m) => m.payload.join(","))).toEqual(Array.from({ length: 30 }, (_, i) => testPayload(i).join(",")));

    const stopped = await initScript("stop", env);
    expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
    expect(alive(pid)).toBe(false);
    expect(existsSync(out) || existsSync(input)).toBe(false);
    const log = readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8");
    expect(log).toContain("output-server: stopped signal=SIGTERM");
    expect(log).toContain("input-server: stopped signal=SIGTERM");
  }, 60_000);

  test("AUDIO_AGENT_ROLE=serve with AUDIO_AGENT_ARGS naming its own serve command: the role's defaults stay out of it, its wire capture (the agent's default format) reaches a client", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 20);
    const [out, input] = [t.path("o.sock"), t.path("i.sock")];
    const env = settings({
      AUDIO_AGENT_ROLE: "serve",
      AUDIO_AGENT_ARGS: `serve --output-source ${t.path("in.wire")} --output-socket ${out} --input-socket ${input} --input-sink ${t.path("mic.wire")}`,
    });

    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    const pid = pidIn(env)!;
    const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").map((entry) => entry.split("=")[0]);
    for (const name of ["AUDIO_AGENT_OUTPUT_SOURCE", "AUDIO_AGENT_OUTPUT_FORMAT", "AUDIO_AGENT_INPUT_SINK", "AUDIO_AGENT_SOURCE", "AUDIO_AGENT_FORMAT"]) {
      expect(environ).not.toContain(name);
    }
    const received = await run([agentBin, "output", "recv", "--socket", out, "--sink", t.path("out.wire"), "--count", "20", "--connect-timeout", "5"], { cwd: t.dir, timeoutMs: 15_000 });
    expect(received.code, received.stderr).toBe(0);
    expect(wholeWireFrames(t.path("out.wire")).map((f) => f.join(","))).toEqual(Array.from({ length: 20 }, (_, i) => testPayload(i).join(",")));
    expect((await initScript("stop", env)).code).toBe(0);
  }, 60_000);

  test("an unknown AUDIO_AGENT_ROLE: start fails (6, not configured) naming it and the roles allowed", async () => {
    tempDir();
    const { AUDIO_AGENT_ARGS: _, ...env } = settings({ AUDIO_AGENT_ROLE: "both" });
    const started = await initScript("start", env);
    expect(started.code).toBe(6);
    expect(started.stdout).toContain("AUDIO_AGENT_ROLE=both is not a role here; allowed: output, serve");
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
  });

  test("start fails (6, not configured) when the agent exits at once on a flag it does not know, and leaves no pid file, whether its command line serves a socket or not", async () => {
    tempDir();
    const env = settings({ AUDIO_AGENT_ARGS: `output serve --source ${t.path("in.wire")} --bogus-flag` });
    const started = await initScript("start", env);
    expect(started.code).toBe(6);
    expect(started.stdout).toContain("exited before it listened, with exit code 2 (a bad setting)");
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
    expect(readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8")).toContain("--bogus-flag");
    expect((await initScript("status", env)).code).toBe(3);

    // A command line that serves no socket is up once it has run half a second: one that exits before fails so.
    const client = settings({ AUDIO_AGENT_ARGS: `output recv --socket ${t.path("o.sock")} --bogus-flag` });
    const failed = await initScript("start", client);
    expect(failed.code).toBe(6);
    expect(failed.stdout).toContain("exited right after start, with exit code 2 (a bad setting)");
    expect(existsSync(client.AUDIO_AGENT_PIDFILE)).toBe(false);
  }, 30_000);

  test("an agent that exits after half a second, before it listens (a slow board; here its --config is a FIFO written late), is a failed start (6, for its exit code 2): no pid file, the reason in the log", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const { env, started } = await startFailingLate(settings().AUDIO_AGENT_ARGS);
    expect(started.code, started.stdout).toBe(6);
    expect(started.stdout).toContain("exited before it listened, with exit code 2 (a bad setting); see " + env.AUDIO_AGENT_LOG_FILE);
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
    expect(readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8")).toContain('unknown key "bogus"');
    expect((await initScript("status", env)).code).toBe(3);
  }, 30_000);

  test("AUDIO_AGENT_ARGS with blanks around its command words is still a role that listens: start waits for its socket (here, an agent failing before it does)", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const { started } = await startFailingLate(`  output   serve --source ${t.path("in.wire")} --socket ${t.path("o.sock")}`);
    expect(started.code, started.stdout).toBe(6);
    expect(started.stdout).toContain("exited before it listened");
  }, 30_000);

  test("with --metrics (its HTTP server's own socket listening first), start says started only once the channel's socket listens", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings({ AUDIO_AGENT_ARGS: `${settings().AUDIO_AGENT_ARGS} --metrics 127.0.0.1:0 --monitor 127.0.0.1:0` });
    const started = await initScript("start", env);
    expect(started.code, started.stdout).toBe(0);
    expect(statSync(t.path("o.sock")).isSocket()).toBe(true);
    expect((await initScript("stop", env)).code).toBe(0);
  }, 30_000);

  // The agent binds its channel's socket under a hidden name, listens, then links it at its path; its HTTP
  // servers listen first, on sockets of their own in a private directory. Each step is held up here for
  // 2 s: strace -D runs the wrapper shell that execs the agent (the traced process keeps its pid, which
  // start-stop-daemon records) and delays one of the agent's calls.
  test("start says started only once each channel's socket is at its path: not while only the HTTP servers' sockets (--metrics) listen, nor while the channel's listens but is not linked there yet", async () => {
    const strace = Bun.which("strace");
    if (!strace) throw new Error("strace is missing: this test holds up the agent's calls with it (apt-get install strace)");
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    mkdirSync(t.path("shims"));
    const sock = t.path("o.sock");
    // The front's TCP listener and the HTTP server's own Unix socket listen first: the channel's is the third listen.
    for (const [held, extra] of [
      ["listen:delay_enter=2000000:when=3", "--metrics 127.0.0.1:0"],
      ["link:delay_enter=2000000", ""],
    ] as const) {
      const syscall = held.split(":")[0];
      writeFileSync(t.path("shims/sh"), `#!${BUSYBOX} sh\nexec ${strace} -D -f -qq -o /dev/null -e trace=${syscall} -e inject=${held} -- ${BUSYBOX} sh "$@"\n`);
      chmodSync(t.path("shims/sh"), 0o755);
      const env = settings({ AUDIO_AGENT_ARGS: `${settings().AUDIO_AGENT_ARGS} ${extra}`, PATH: `${t.path("shims")}:${applets}:${process.env.PATH}` });
      const started = await initScript("start", env);
      const there = existsSync(sock) && statSync(sock).isSocket();
      expect({ held, code: started.code, there }, started.stdout + started.stderr).toEqual({ held, code: 0, there: true });
      expect(started.stdout).toContain(`started (pid ${pidIn(env)})`);
      expect((await initScript("stop", env)).code).toBe(0);
      expect(agentsOf(t.dir)).toEqual([]);
    }
  }, 60_000);

  test("an agent that does not listen within AUDIO_AGENT_START_TIMEOUT: start fails (1) saying so, the agent left running under its pid file for stop", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    // A config FIFO no one writes: the agent waits on it, alive and not listening.
    const config = makeFifo(t.path("config.json"));
    const env = settings({ AUDIO_AGENT_ARGS: `${settings().AUDIO_AGENT_ARGS} --config ${config}`, AUDIO_AGENT_START_TIMEOUT: "1" });
    const started = await initScript("start", env);
    expect(started.code, started.stdout).toBe(1);
    const pid = pidIn(env)!;
    expect(started.stdout).toContain(`pid ${pid} runs but does not listen after 1 s; see ${env.AUDIO_AGENT_LOG_FILE}`);
    expect(alive(pid)).toBe(true);
    expect((await initScript("status", env)).code).toBe(0);
    const stopped = await initScript("stop", env);
    expect(stopped.code, stopped.stdout).toBe(0);
    expect(alive(pid)).toBe(false);
  }, 30_000);

  // A loaded board: each tick's sleep takes longer than the tenth it asks for. Counted in ticks, the wait
  // lasted as many ticks as it has tenths (20 here, 10 s); by the clock it ends after its 2 s.
  test("a wait lasts its time by the clock, not by the ticks it sleeps: with each tick's sleep taking half a second, a 2 s start timeout sleeps a handful of times, not 20", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    mkdirSync(t.path("shims"));
    const sleeps = t.path("sleeps");
    writeFileSync(t.path("shims/sleep"), `#!${BUSYBOX} sh\necho "$*" >>${sleeps}\nexec ${BUSYBOX} sleep 0.5\n`);
    chmodSync(t.path("shims/sleep"), 0o755);
    const config = makeFifo(t.path("config.json"));
    const env = settings({ AUDIO_AGENT_ARGS: `${settings().AUDIO_AGENT_ARGS} --config ${config}`, AUDIO_AGENT_START_TIMEOUT: "2", PATH: `${t.path("shims")}:${applets}:${process.env.PATH}` });
    const started = await initScript("start", env);
    expect(started.code, started.stdout).toBe(1);
    expect(started.stdout).toContain(`runs but does not listen after 2 s`);
    expect(readFileSync(sleeps, "utf8").split("\n").filter((line) => line === "0.1").length).toBeLessThan(15);
    expect((await initScript("stop", env)).code).toBe(0);
  }, 60_000);

  // The stop with the start's settings, and with a START_TIMEOUT of 0 (its own turn then 23 s): it reckoned
  // how long the start could hold the turn from its own settings, gave up first ("still holds", 1) and
  // left the agent running.
  test("a stop while a start waits out a longer AUDIO_AGENT_START_TIMEOUT (a slow board) takes its turn after it and stops the agent, whether its own START_TIMEOUT is that or shorter", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    // A config FIFO no one writes: the agent waits on it, alive and not listening, so the start holds its turn for 30 s.
    const config = makeFifo(t.path("config.json"));
    const env = settings({ AUDIO_AGENT_ARGS: `${settings().AUDIO_AGENT_ARGS} --config ${config}`, AUDIO_AGENT_START_TIMEOUT: "30", AUDIO_AGENT_STOP_TIMEOUT: "2" });
    // TERM ends the agent waiting on its config (2 s to die in, where none would race the kernel's delivery).
    for (const stopStartTimeout of ["30", "0"]) {
      const starting = initScript("start", env, [], 60_000);
      await until(() => pidIn(env) !== undefined, "the pid file", 10_000);
      const stopped = await initScript("stop", { ...env, AUDIO_AGENT_START_TIMEOUT: stopStartTimeout }, [], 60_000);
      const started = await starting;
      expect(started.code, started.stdout).toBe(1);
      expect({ stopStartTimeout, code: stopped.code, stdout: stopped.stdout }).toEqual({ stopStartTimeout, code: 0, stdout: "audio-agent: stopped\n" });
      expect(agentsOf(t.dir)).toEqual([]);
    }
  }, 150_000);

  test("stop sends KILL only after the timeout when TERM is ignored", async () => {
    tempDir();
    const env = stubbornSettings({ AUDIO_AGENT_STOP_TIMEOUT: "1" });
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env)!;
    const t0 = Date.now();
    const stopped = await initScript("stop", env);
    const took = Date.now() - t0;
    expect(stopped.code, stopped.stdout).toBe(0);
    // After the configured 1 s, not the default 5 s; and never before it (a slow machine only makes it later).
    expect(stopped.stdout).toContain("still running 1 s after TERM; sending KILL");
    expect(took).toBeGreaterThanOrEqual(1000);
    expect(alive(pid)).toBe(false);
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
  }, 30_000);

  // A stop that sent TERM and then ended before the agent did (Ctrl-C, a supervisor's timeout): a start
  // right after took the agent on its way out for running, said "already running" (0), and then none ran.
  test("a stop ended after it sent TERM, before the agent exited: a start finishes that stop and starts another", async () => {
    tempDir();
    // The agent takes 2 s to exit on TERM; it tells the test as that begins.
    const slow = t.path("slow-exit");
    writeFileSync(slow, `trap ': >${t.path("termed")}; sleep 2; exit 0' TERM\nwhile :; do sleep 0.1; done\n`);
    const env = settings({ AUDIO_AGENT_BIN: BUSYBOX!, AUDIO_AGENT_ARGS: `sh ${slow}` });
    const first = await startThenCutStopShort(env);

    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(started.stdout).not.toContain("already running");
    const second = pidIn(env)!;
    expect(second).not.toBe(first);
    expect(alive(first)).toBe(false);
    expect(alive(second)).toBe(true);
    const status = await initScript("status", env);
    expect(status.stdout).toContain(`running (pid ${second})`);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(readdirSync(t.path("run"))).toEqual([]);
  }, 60_000);

  // The agent takes a second TERM as "now": it ends at once, without the rest of its orderly stop.
  // A start (or stop) finishing a stop that had sent TERM sent another right away, and cut the
  // agent's orderly stop short.
  for (const action of ["start", "stop"]) {
    test(`a stop ended after it sent TERM, during the agent's orderly stop: ${action} lets that stop finish before it sends another`, async () => {
      tempDir();
      // The agent's orderly stop takes 2 s, in steps that a second TERM cuts short; it tells the test as it begins.
      const slow = t.path("slow-exit");
      const log = t.path("exits");
      writeFileSync(
        slow,
        `trap 'trap "echo now >>${log}; exit 3" TERM; : >${t.path("termed")}; n=0; while [ $n -lt 20 ]; do sleep 0.1; n=$((n + 1)); done; echo orderly >>${log}; exit 0' TERM\nwhile :; do sleep 0.1; done\n`,
      );
      const env = settings({ AUDIO_AGENT_BIN: BUSYBOX!, AUDIO_AGENT_ARGS: `sh ${slow}`, AUDIO_AGENT_STOP_TIMEOUT: "20" });
      const first = await startThenCutStopShort(env);

      const finished = await initScript(action, env, [], 40_000);
      expect(finished.code, finished.stdout + finished.stderr).toBe(0);
      expect(alive(first)).toBe(false);
      expect(readFileSync(log, "utf8")).toBe("orderly\n");
      if (action === "start") {
        expect(pidIn(env)).not.toBe(first);
        expect((await initScript("stop", env, [], 40_000)).code).toBe(0);
      }
      expect(readdirSync(t.path("run"))).toEqual([]);
    }, 90_000);
  }

  test("status is 1 for a pid file whose process is gone; stop clears it", async () => {
    tempDir();
    const env = settings();
    mkdirSync(t.path("run"));
    const gone = gonePid(); // exited and reaped
    writeFileSync(env.AUDIO_AGENT_PIDFILE, `${gone}\n`);
    const status = await initScript("status", env);
    expect(status.code).toBe(1);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
  });

  test("logs to syslog through logger when no log file is set; creates the capture FIFO", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const fifo = t.path("capture/capture.ogg");
    const env = settings({ AUDIO_AGENT_LOG_FILE: "", AUDIO_AGENT_FIFO: fifo });
    const started = await initScript("start", env);
    expect(started.code).toBe(0);
    expect(started.stdout).toContain("; logs: the system log (logread)");
    expect(statSync(fifo).isFIFO()).toBe(true);
    const pid = pidIn(env)!;
    await until(() => existsSync(t.path("o.sock")), "the socket", 10_000);
    // The agent's stdout/stderr is a pipe read by `logger -t audio-agent`.
    expect(existsSync(t.path("run/audio-agent.log-pipe"))).toBe(true);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(alive(pid)).toBe(false);
    expect(existsSync(t.path("run/audio-agent.log-pipe"))).toBe(false);
    expect(existsSync(t.path("log"))).toBe(false);
  }, 30_000);

  // The wrapper shell opens the log file for the agent: one it cannot open ended it before its first
  // line, and start said "exited before it listened; see" that file, which held nothing.
  test("a log file that cannot be written (a directory in its place), set or the fallback: start fails (1) with one line naming it and why, nothing started", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    for (const env of [settings(), settings({ AUDIO_AGENT_LOG_FILE: "", AUDIO_AGENT_LOG_FALLBACK: t.path("log/fallback.log"), PATH: appletsWithoutSyslog })]) {
      const log = env.AUDIO_AGENT_LOG_FILE || env.AUDIO_AGENT_LOG_FALLBACK!;
      mkdirSync(log, { recursive: true });
      const started = await initScript("start", env);
      expect(started.code, started.stdout + started.stderr).toBe(1);
      expect(started.stdout).toContain(`audio-agent: cannot write the log file ${log}: Is a directory\n`);
      expect(agentsOf(t.dir)).toEqual([]);
      expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
    }
  }, 30_000);

  test("a BusyBox with logger but no logread: the start line points at the system log, not at logread", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings({ AUDIO_AGENT_LOG_FILE: "", PATH: appletsWithoutLogread });
    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(started.stdout).toContain("; logs: the system log\n");
    expect(started.stdout).not.toContain("logread");
    expect((await initScript("stop", env)).code).toBe(0);
  }, 30_000);

  test("a BusyBox without logger: logs to the fallback file and says so; serves the FIFO before and after an encoder run", async () => {
    tempDir();
    const fifo = t.path("capture/capture.ogg");
    const sock = t.path("o.sock");
    const fallback = t.path("log/fallback.log");
    const env = settings({
      AUDIO_AGENT_ARGS: `output serve --source ${fifo} --format ogg --socket ${sock} --write-deadline-ms 0`,
      AUDIO_AGENT_FIFO: fifo,
      AUDIO_AGENT_LOG_FILE: "",
      AUDIO_AGENT_LOG_FALLBACK: fallback,
      // Only these applets: no logger, logread or syslogd anywhere on PATH (nor util-linux's in /usr/bin).
      PATH: appletsWithoutSyslog,
    });
    const log = () => (existsSync(fallback) ? readFileSync(fallback, "utf8") : "");

    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(started.stdout).toContain(`no logger for syslog here: logging to ${fallback}`);
    expect(started.stdout).toContain(`; logs: ${fallback}`);
    const pid = pidIn(env)!;
    expect(statSync(fifo).isFIFO()).toBe(true);
    // Listening before any encoder opened the FIFO.
    await until(() => existsSync(sock), "the socket");
    await until(() => log().includes("source: waiting for a writer"), "the agent's log lines in the fallback file");

    const opus = encodeWith(t.dir, "encoder", ["--max-delay", "20"]);
    const packets = packetsOf(new Uint8Array(readFileSync(opus))).slice(2);
    const sink = t.path("out.wire");
    const recv = start([agentBin, "output", "recv", "--socket", sock, "--sink", sink, "--count", String(packets.length), "--connect-timeout", "5"], { cwd: t.dir, timeoutMs: 30_000 });
    await until(() => log().includes("client connected"), "the client");
    expect(await writeIntoFifo(fifo, opus)).toBe(0);
    const received = await recv.done;
    expect(received.code, received.stderr).toBe(0);
    const frames = wholeWireFrames(sink);
    expect(frames.map((f) => f.join(","))).toEqual(packets.map((p) => p.join(",")));

    // The encoder closed the FIFO: the service keeps running, waiting for the next one.
    await until(() => log().includes("source: writer closed the stream"), "the end of the encoder's stream");
    const status = await initScript("status", env);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(`running (pid ${pid})`);

    const stopped = await initScript("stop", env);
    expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
    expect(alive(pid)).toBe(false);
    expect(existsSync(sock)).toBe(false);
    expect(existsSync(t.path("run/audio-agent.log-pipe"))).toBe(false);
    expect(log()).toContain("stopped signal=SIGTERM");
  }, 60_000);

  test("a pid file naming another program (its pid reused): status 1, start starts the agent, stop signals nothing but the agent", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings();
    const other = Bun.spawn(["sleep", "300"], { stdout: "ignore", stderr: "ignore" });
    daemons.add(other.pid);
    mkdirSync(t.path("run"));
    writeFileSync(env.AUDIO_AGENT_PIDFILE, `${other.pid}\n`);

    const status = await initScript("status", env);
    expect(status.code, status.stdout).toBe(1);
    expect(status.stdout).toContain(`not running, but ${env.AUDIO_AGENT_PIDFILE} exists`);

    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(started.stdout).not.toContain("already running");
    const pid = pidIn(env)!;
    expect(pid).not.toBe(other.pid);
    expect(agentsOf(t.dir)).toEqual([pid]);
    await until(() => existsSync(t.path("o.sock")), "the socket", 10_000);
    const stopped = await initScript("stop", env);
    expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
    expect(alive(pid)).toBe(false);

    // A stale pid file alone: stop removes it and leaves the process alone.
    writeFileSync(env.AUDIO_AGENT_PIDFILE, `${other.pid}\n`);
    const stale = await initScript("stop", env);
    expect(stale.code, stale.stdout + stale.stderr).toBe(0);
    expect(stale.stdout).toContain("not running (removing stale pid file)");
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
    await Bun.sleep(200);
    expect(alive(other.pid)).toBe(true);
    other.kill("SIGKILL");
  }, 30_000);

  test("an agent killed (OOM, KILL) whose pid was reused by a role run by hand from the same binary: start starts the service, stop leaves the hand-run one alone", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings();
    const first = await initScript("start", env);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    const killed = pidIn(env)!;
    process.kill(killed, "SIGKILL");
    await until(() => !alive(killed), "the killed agent gone", 10_000);
    // The README's "a role run by hand on the device beside the service": the kernel handed it the dead agent's pid.
    const byHand = Bun.spawn([agentBin, "output", "recv", "--socket", t.path("elsewhere.sock"), "--sink", "/dev/null", "--metrics", "off", "--monitor", "off"], {
      stdout: "ignore",
      stderr: "ignore",
    });
    daemons.add(byHand.pid);
    await until(() => alive(byHand.pid), "the hand-run recv", 10_000);
    // The pid file as the start left it, but for the pid: the killed agent's start time stays.
    const left = readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8");
    expect(left).toStartWith(`${killed}\nstarttime=`);
    writeFileSync(env.AUDIO_AGENT_PIDFILE, left.replace(`${killed}\n`, `${byHand.pid}\n`));

    const status = await initScript("status", env);
    expect(status.stdout).not.toContain(`running (pid ${byHand.pid})`);
    expect(status.code, status.stdout).toBe(1);

    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(started.stdout).not.toContain("already running");
    const pid = pidIn(env)!;
    expect(pid).not.toBe(byHand.pid);
    await until(() => existsSync(t.path("o.sock")), "the service's socket", 10_000);

    const stopped = await initScript("stop", env);
    expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
    expect(alive(pid)).toBe(false);
    await Bun.sleep(200);
    expect(alive(byHand.pid)).toBe(true);
    byHand.kill("SIGKILL");
  }, 60_000);

  test("an older script's pid file (the pid alone) naming the running agent: status 0, start finds it running, stop stops it", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings();
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env)!;
    writeFileSync(env.AUDIO_AGENT_PIDFILE, `${pid}\n`);
    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(started.stdout).toContain(`already running (pid ${pid})`);
    await expectStillTheAgent(env, pid);
  }, 30_000);

  test("a pid file that names no pid (garbage, empty): stop removes it, and status then says not running (3)", async () => {
    tempDir();
    const env = settings();
    mkdirSync(t.path("run"));
    for (const content of ["abc\n", "", "12x\n"]) {
      writeFileSync(env.AUDIO_AGENT_PIDFILE, content);
      expect((await initScript("status", env)).code).toBe(1);
      const stopped = await initScript("stop", env);
      expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
      expect(stopped.stdout).toContain("not running (removing unreadable pid file)");
      expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
      const status = await initScript("status", env);
      expect(status.code, status.stdout).toBe(3);
    }
  }, 30_000);

  test("an agent whose executable an upgrade replaced is still the agent: status 0, stop stops it", async () => {
    tempDir();
    // The stand-in agent, replaced by another copy as a package upgrade would.
    mkdirSync(t.path("bin"));
    const bin = standInAgent(t.path("bin/agent"));
    const env = settings({ AUDIO_AGENT_BIN: bin, AUDIO_AGENT_ARGS: "300" });
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env)!;
    copyFileSync(bin, `${bin}.new`);
    renameSync(`${bin}.new`, bin);
    expect(readlinkSync(`/proc/${pid}/exe`)).toBe(`${bin} (deleted)`);
    await expectStillTheAgent(env, pid);
  }, 30_000);

  test("an agent whose symlinked executable an upgrade pointed at a new build is still the agent: status 0, stop stops it", async () => {
    tempDir();
    // The stand-in agent reached through a symlink, as /usr/bin/audio-agent -> a build.
    mkdirSync(t.path("bin"));
    const bin = t.path("bin/agent");
    symlinkSync(standInAgent(t.path("bin/agent-1")), bin);
    standInAgent(t.path("bin/agent-2"));
    const env = settings({ AUDIO_AGENT_BIN: bin, AUDIO_AGENT_ARGS: "300" });
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env)!;
    unlinkSync(bin);
    symlinkSync(t.path("bin/agent-2"), bin);
    await expectStillTheAgent(env, pid);
  }, 30_000);

  // The pid file's process was checked against the AUDIO_AGENT_BIN of the moment: changed while the
  // agent ran, it made the agent stale, and restart dropped the pid file and started a second one
  // beside the first (the real agent's fails on its socket in use, 6), the first one left untracked.
  test("AUDIO_AGENT_BIN changed in the settings file while the agent runs: status finds it, restart stops it and starts the new one, stop stops that", async () => {
    tempDir();
    mkdirSync(t.path("bin"));
    const before = standInAgent(t.path("bin/agent-1"));
    const after = standInAgent(t.path("bin/agent-2"));
    const env = settings({ AUDIO_AGENT_BIN: before, AUDIO_AGENT_ARGS: "300" });
    expect((await initScript("start", env)).code).toBe(0);
    const first = pidIn(env)!;
    mkdirSync(t.path("default"));
    writeFileSync(env.AUDIO_AGENT_DEFAULTS, `AUDIO_AGENT_BIN=${after}\n`);

    const status = await initScript("status", env);
    expect({ code: status.code, stdout: status.stdout }).toEqual({ code: 0, stdout: `audio-agent: running (pid ${first})\n` });
    const restarted = await initScript("restart", env);
    expect(restarted.code, restarted.stdout + restarted.stderr).toBe(0);
    expect(restarted.stdout).toContain("stopped");
    const second = pidIn(env)!;
    expect({ before: agentsIn(t.dir, before), after: agentsIn(t.dir, after) }).toEqual({ before: [], after: [second] });
    const stopped = await initScript("stop", env);
    expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
    expect(agentsIn(t.dir, after)).toEqual([]);
    expect(readdirSync(t.path("run"))).toEqual([]);
  }, 30_000);

  // The executable the pid file records is one more the agent may run, not a pass: a process that
  // its pid and start time name is still not the agent when it runs another program (a /var/run that
  // outlived a reboot, whose boot gave the same pid at the same tick to another program).
  test("a pid file whose pid and start time name a process running neither the executable it records nor AUDIO_AGENT_BIN: status 1, stop leaves it alone", async () => {
    tempDir();
    const other = Bun.spawn([standInAgent(t.path("other")), "300"], { stdout: "ignore", stderr: "ignore" });
    daemons.add(other.pid);
    await until(() => alive(other.pid), "the other program", 5_000);
    const startTime = readFileSync(`/proc/${other.pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ")[19]!;
    const env = settings();
    mkdirSync(t.path("run"));
    writeFileSync(env.AUDIO_AGENT_PIDFILE, `${other.pid}\nstarttime=${startTime}\nexe=${t.path("agent-before")}\n`);

    const status = await initScript("status", env);
    expect({ code: status.code, stdout: status.stdout }).toEqual({ code: 1, stdout: `audio-agent: not running, but ${env.AUDIO_AGENT_PIDFILE} exists\n` });
    const stopped = await initScript("stop", env);
    expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
    expect(stopped.stdout).toContain("not running (removing stale pid file)");
    await Bun.sleep(200);
    expect(alive(other.pid)).toBe(true);
    other.kill("SIGKILL");
  }, 30_000);

  test("two starts at once: one agent, which status reports and stop stops", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    // The FIFO too, which both starts would make.
    const env = settings({ AUDIO_AGENT_FIFO: t.path("capture/capture.ogg") });
    // A few rounds: without turns, which start's pid file survives is up to the scheduler.
    for (let round = 0; round < 3; round++) {
      const both = await Promise.all([initScript("start", env), initScript("start", env)]);
      for (const started of both) expect(started.code, started.stdout + started.stderr).toBe(0);
      expect(both.map((r) => (r.stdout.includes("already running") ? "already" : "started")).sort()).toEqual(["already", "started"]);
      const status = await initScript("status", env);
      expect(status.code, status.stdout).toBe(0);
      const pid = pidIn(env)!;
      expect(status.stdout).toContain(`running (pid ${pid})`);
      expect(agentsOf(t.dir)).toEqual([pid]);
      const stopped = await initScript("stop", env);
      expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
      expect(agentsOf(t.dir)).toEqual([]);
      expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
    }
    // Nothing of the turns left behind.
    expect(readdirSync(t.path("run"))).toEqual([]);
  }, 60_000);

  test("a lock left by a start that was killed before it could unlock does not block the next", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings();
    mkdirSync(t.path("run"));
    const gone = gonePid(); // exited and reaped
    writeFileSync(t.path("run/audio-agent.lock"), `${gone}\n`);
    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(alive(pidIn(env)!)).toBe(true);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(readdirSync(t.path("run"))).toEqual([]);
  }, 30_000);

  test("several starts at once that find a stale lock: one breaks it, one agent starts, the others find it running", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings();
    mkdirSync(t.path("run"));
    const gone = gonePid(); // exited and reaped
    // A few rounds: two that break the lock at once, and each take the turn, is up to the scheduler.
    for (let round = 0; round < 4; round++) {
      writeFileSync(t.path("run/audio-agent.lock"), `${gone} 1\n`);
      const all = await Promise.all([0, 1, 2, 3].map(() => initScript("start", env)));
      for (const started of all) expect(started.code, started.stdout + started.stderr).toBe(0);
      expect(all.map((r) => (r.stdout.includes("already running") ? "already" : "started")).sort()).toEqual(["already", "already", "already", "started"]);
      expect(agentsOf(t.dir)).toEqual([pidIn(env)!]);
      expect((await initScript("stop", env)).code).toBe(0);
      expect(agentsOf(t.dir)).toEqual([]);
      expect(readdirSync(t.path("run"))).toEqual([]);
    }
  }, 120_000);

  test("an empty lock (a file system that lost it in a power cut), one naming the script's own pid, and a stale lock's breaker killed meanwhile do not block a start", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings();
    mkdirSync(t.path("run"));
    const lockFile = t.path("run/audio-agent.lock");
    writeFileSync(lockFile, "");
    // And the marker a start takes while it breaks it, left by one killed at that moment.
    writeFileSync(`${lockFile}.break.unreadable`, `${gonePid()} 1\n`);
    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(alive(pidIn(env)!)).toBe(true);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(readdirSync(t.path("run"))).toEqual([]);

    // The lock's pid is the script's own (exec keeps the pid), in the old form without a start time.
    const own = await run(["sh", "-c", `echo $$ >"$0"; exec "$1" sh "$2" start`, lockFile, BUSYBOX!, SCRIPT], {
      cwd: t.dir,
      env: { ...cleanEnv(), PATH: `${applets}:${process.env.PATH}`, ...env },
      timeoutMs: 20_000,
    });
    const pid = pidIn(env);
    if (pid) daemons.add(pid);
    expect(own.code, own.stdout + own.stderr).toBe(0);
    expect(alive(pid!)).toBe(true);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(readdirSync(t.path("run"))).toEqual([]);
  }, 60_000);

  test("a lock names its holder by pid and start time: one whose pid now runs another program (a /var/run that outlived a reboot) is broken, one whose holder still runs is not", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings({ AUDIO_AGENT_STOP_TIMEOUT: "0" });
    mkdirSync(t.path("run"));
    const lockFile = t.path("run/audio-agent.lock");
    const other = start(["sleep", "60"]);
    // /proc/PID/stat's field 22, after the command name in parentheses.
    const startTime = readFileSync(`/proc/${other.pid}/stat`, "utf8").replace(/^.*\) /s, "").split(" ")[19]!;

    // The holder's start time is this process's own: it holds the turn, and a start waits for it
    // (up to 33 s). Stopped while waiting, by a signal to it alone or to its whole process group
    // (Ctrl-C, timeout(1), a supervisor), that start leaves nothing of its own behind.
    writeFileSync(lockFile, `${other.pid} ${startTime}\n`);
    for (const [round, group] of [[0, false], [1, true], [2, true], [3, true]] as const) {
      // setsid: the script leads a process group of its own, its tick subshells in it.
      const waiting = start(["setsid", BUSYBOX!, "sh", SCRIPT, "start"], { cwd: t.dir, env: { ...cleanEnv(), PATH: `${applets}:${process.env.PATH}`, ...env }, timeoutMs: 20_000 });
      // Signalled once it waits for its turn (its own name for the lock is written after its traps are set), a while into that wait.
      await until(() => existsSync(`${lockFile}.${waiting.pid}`), "the start waiting for its turn", 10_000);
      await Bun.sleep(round === 0 ? 2000 : 300 + 70 * round);
      expect(waiting.hasExited).toBe(false);
      expect(pidIn(env)).toBeUndefined();
      process.kill(group ? -waiting.pid : waiting.pid, "SIGTERM");
      expect(await waiting.exited).toBe(1);
      expect({ group, left: readdirSync(t.path("run")) }).toEqual({ group, left: ["audio-agent.lock"] });
      expect(waiting.stderr + waiting.stdout).not.toContain("syntax error");
    }

    // A start that began at boot tick 1 held it: the pid is now a process that started later.
    writeFileSync(lockFile, `${other.pid} 1\n`);
    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(alive(pidIn(env)!)).toBe(true);
    expect(alive(other.pid)).toBe(true);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(readdirSync(t.path("run"))).toEqual([]);
    other.kill("SIGKILL");
  }, 60_000);

  // An encoder started before the service, writing to the FIFO's path, makes a regular file there: the
  // agent then served that file as a lossless one to the first client and exited, after start said started.
  test("AUDIO_AGENT_FIFO naming a file that is not a FIFO (an encoder that wrote there first): start fails (1) naming it, nothing started", async () => {
    tempDir();
    const fifo = t.path("capture/capture.ogg");
    mkdirSync(t.path("capture"));
    copyFileSync(encodeWith(t.dir, "encoder", ["--max-delay", "20"]), fifo);
    const { AUDIO_AGENT_ARGS: _, ...env } = settings({ AUDIO_AGENT_FIFO: fifo, JETKVM_AUDIO_OUTPUT_SOCKET: t.path("o.sock") });
    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(1);
    expect(started.stdout).toContain(`AUDIO_AGENT_FIFO=${fifo} is not a FIFO; remove it, or name another path (empty: none)\n`);
    expect(agentsOf(t.dir)).toEqual([]);
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
  }, 30_000);

  test("the default output role serves AUDIO_AGENT_FIFO", async () => {
    tempDir();
    const fifo = t.path("capture/capture.ogg");
    const out = t.path("o.sock");
    const { AUDIO_AGENT_ARGS: _, ...env } = settings({ AUDIO_AGENT_FIFO: fifo, JETKVM_AUDIO_OUTPUT_SOCKET: out });
    const log = () => readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8");

    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    const pid = pidIn(env)!;
    expect(statSync(fifo).isFIFO()).toBe(true);
    // The role on the command line; its source and format in the agent's own variables, which the settings file may set.
    expect(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(0, -1)).toEqual([agentBin, "output", "serve"]);
    const environ = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
    expect(environ).toContain(`AUDIO_AGENT_SOURCE=${fifo}`);
    expect(environ).toContain("AUDIO_AGENT_FORMAT=ogg");
    await until(() => existsSync(out), "the socket", 10_000);

    const opus = encodeWith(t.dir, "encoder", ["--max-delay", "20"]);
    const packets = packetsOf(new Uint8Array(readFileSync(opus))).slice(2);
    const recv = start([agentBin, "output", "recv", "--socket", out, "--sink", t.path("out.wire"), "--count", String(packets.length), "--connect-timeout", "5"], { cwd: t.dir, timeoutMs: 30_000 });
    await until(() => log().includes("client connected"), "the client", 10_000);
    expect(await writeIntoFifo(fifo, opus)).toBe(0);
    const received = await recv.done;
    expect(received.code, received.stderr).toBe(0);
    expect(wholeWireFrames(t.path("out.wire")).map((f) => f.join(","))).toEqual(packets.map((p) => p.join(",")));
    expect((await initScript("stop", env)).code).toBe(0);
    expect(alive(pid)).toBe(false);
  }, 60_000);

  test("a bad AUDIO_AGENT_STOP_TIMEOUT or AUDIO_AGENT_START_TIMEOUT: one line each naming it and what is allowed, then stop works with 5 s", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings({ AUDIO_AGENT_STOP_TIMEOUT: "abc", AUDIO_AGENT_START_TIMEOUT: "08" });
    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(started.stdout).toContain("AUDIO_AGENT_STOP_TIMEOUT=abc is not a whole number of seconds 0..9999; using 5\n");
    expect(started.stdout).toContain("AUDIO_AGENT_START_TIMEOUT=08 is not a whole number of seconds 0..9999; using 10\n");
    const pid = pidIn(env)!;
    await until(() => existsSync(t.path("o.sock")), "the socket", 10_000);
    const stopped = await initScript("stop", env);
    expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
    expect(stopped.stdout.trim().split("\n")).toEqual([
      "audio-agent: AUDIO_AGENT_STOP_TIMEOUT=abc is not a whole number of seconds 0..9999; using 5",
      "audio-agent: AUDIO_AGENT_START_TIMEOUT=08 is not a whole number of seconds 0..9999; using 10",
      "audio-agent: stopped",
    ]);
    expect(alive(pid)).toBe(false);
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
    expect(readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8")).toContain("stopped signal=SIGTERM");

    // A fraction: TERM ignored, KILL after the default 5 s, and the stop completes.
    const stubborn = stubbornSettings({ AUDIO_AGENT_STOP_TIMEOUT: "1.5" });
    expect((await initScript("start", stubborn)).code).toBe(0);
    const held = pidIn(stubborn)!;
    const t0 = Date.now();
    const killed = await initScript("stop", stubborn);
    expect(killed.code, killed.stdout + killed.stderr).toBe(0);
    expect(killed.stdout).toContain("AUDIO_AGENT_STOP_TIMEOUT=1.5 is not a whole number of seconds 0..9999; using 5");
    expect(killed.stdout).toContain("still running 5 s after TERM; sending KILL");
    expect(Date.now() - t0).toBeGreaterThanOrEqual(5000);
    expect(alive(held)).toBe(false);
    expect(existsSync(stubborn.AUDIO_AGENT_PIDFILE)).toBe(false);
  }, 30_000);

  test("AUDIO_AGENT_ARGS is not globbed: an argument with * reaches the agent as written", async () => {
    tempDir();
    // A capture whose name has a *, and another file the pattern matches.
    const source = t.path("in*.wire");
    await writeWireFile(source, 50);
    await writeWireFile(t.path("in1.wire"), 50);
    const env = settings({ AUDIO_AGENT_ARGS: `output serve --source ${source} --realtime --loop --socket ${t.path("o.sock")}` });
    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    const pid = pidIn(env)!;
    expect(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(1, 5)).toEqual(["output", "serve", "--source", source]);
    await until(() => existsSync(t.path("o.sock")), "the socket", 10_000);
    expect((await initScript("stop", env)).code).toBe(0);
  }, 30_000);

  test.skipIf(!canSwitchUser)("restart fails (1) and starts nothing when stop cannot stop the agent (one it may not signal)", async () => {
    tempDir();
    // The "agent" runs as nobody; the script runs as root without CAP_KILL: it may look at it, not signal it.
    const sleep = realpathSync(Bun.which("sleep")!);
    const setpriv = Bun.which("setpriv")!;
    const agent = Bun.spawn([setpriv, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--", sleep, "300"], { stdout: "ignore", stderr: "ignore" });
    daemons.add(agent.pid);
    await until(() => readlinkSync(`/proc/${agent.pid}/exe`) === sleep, "the stand-in agent", 5_000);
    const env = settings({ AUDIO_AGENT_BIN: sleep, AUDIO_AGENT_ARGS: "300", AUDIO_AGENT_STOP_TIMEOUT: "1" });
    mkdirSync(t.path("run"));
    writeFileSync(env.AUDIO_AGENT_PIDFILE, `${agent.pid}\n`);

    const restarted = await initScript("restart", env, [setpriv, "--bounding-set=-kill", "--"]);
    expect(restarted.code, restarted.stdout + restarted.stderr).toBe(1);
    expect(restarted.stdout).toContain(`pid ${agent.pid} does not die`);
    expect(restarted.stdout).not.toContain("already running");
    expect(restarted.stdout).not.toContain("started");
    expect(alive(agent.pid)).toBe(true);
    // Neither signal reached it: it is not on its way out, and the pid file does not say so.
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8")).not.toContain("stopping");
    expect(pidIn(env)).toBe(agent.pid);
    agent.kill("SIGKILL");
  }, 30_000);

  // An agent the kernel holds (a write to a dead SD card or USB stick; here the cgroup freezer) has its
  // KILL and ends once it returns. Stop said it "does not die" and wrote the pid file again without its
  // stopping line: status said running, and a start "already running" (0) of an agent about to end.
  test.skipIf(!canFreeze)("an agent that has its KILL but is held in the kernel: stop fails (1) and leaves it stopping; status says so, a start does not take it for running, and starts another once it has gone", async () => {
    tempDir();
    const env = settings({ AUDIO_AGENT_BIN: standInAgent(t.path("agent")), AUDIO_AGENT_ARGS: "300", AUDIO_AGENT_STOP_TIMEOUT: "1" });
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env)!;
    const held = freezer()!;
    try {
      held.admit(pid);
      await held.freeze();
      const stopped = await initScript("stop", env);
      expect(stopped.code, stopped.stdout).toBe(1);
      expect(stopped.stdout).toContain(`pid ${pid} does not die`);
      expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8").split("\n").slice(-2)).toEqual(["stopping", ""]);
      const status = await initScript("status", env);
      expect({ code: status.code, stdout: status.stdout }).toEqual({ code: 0, stdout: `audio-agent: stopping (pid ${pid})\n` });
      // Still held: the start finishes the stop, which fails again.
      const again = await initScript("start", env);
      expect(again.stdout).not.toContain("already running");
      expect(again.code, again.stdout).toBe(1);
      expect(pidIn(env)).toBe(pid);
    } finally {
      held.release();
    }
    await until(() => !alive(pid), "the agent gone once thawed", 5_000);
    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(started.stdout).toContain("started");
    expect(pidIn(env)).not.toBe(pid);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(readdirSync(t.path("run"))).toEqual([]);
  }, 60_000);

  test.skipIf(!canSwitchUser)("as a user who may not look at the agent's /proc/PID/exe: status 4 (cannot tell), and stop leaves it running", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings();
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env)!;
    // nobody may read the pid file and run the applets.
    chmodSync(t.dir, 0o755);
    chmodSync(applets, 0o755);
    const nobody = [Bun.which("setpriv")!, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--"];

    const status = await initScript("status", env, nobody);
    expect(status.code, status.stdout + status.stderr).toBe(4);
    expect(status.stdout).toContain(`cannot tell whether pid ${pid} in ${env.AUDIO_AGENT_PIDFILE} is ${agentBin}`);
    const stopped = await initScript("stop", env, nobody);
    expect(stopped.code).not.toBe(0);
    expect(alive(pid)).toBe(true);
    expect(pidIn(env)).toBe(pid);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(alive(pid)).toBe(false);
  }, 30_000);
});

describe("S95audio-agent run, for a supervisor that starts the agent again whenever it ends", () => {
  const scriptEnv = (env: Record<string, string>) => ({ ...cleanEnv(), PATH: `${applets}:${process.env.PATH}`, ...env });

  /** `run` as a supervisor starts it: the script's process, with `env`, this test's process its parent. */
  function supervised(env: Record<string, string>) {
    return start([BUSYBOX!, "sh", SCRIPT, "run"], { cwd: t.dir, env: scriptEnv(env), timeoutMs: 30_000 });
  }

  /** A fresh directory with a file to serve, and the agent run under this test's process as its supervisor, serving: its settings, its process, and the supervisor's name. */
  async function supervisedServing(overrides: Record<string, string> = {}) {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings(overrides);
    const agent = supervised(env);
    daemons.add(agent.pid);
    await until(() => existsSync(t.path("o.sock")), "the agent's socket", 15_000);
    return { env, agent, name: readFileSync(`/proc/${process.pid}/comm`, "utf8").trim() };
  }

  /** A supervisor that starts `run` again whenever it ends, as BusyBox init's respawn line does: a shell loop (comm "busybox"). */
  function respawning(env: Record<string, string>) {
    const loop = start([BUSYBOX!, "sh", "-c", 'while :; do "$0" sh "$1" run; sleep 0.2; done', BUSYBOX!, SCRIPT], { cwd: t.dir, env: scriptEnv(env), timeoutMs: 60_000 });
    daemons.add(loop.pid);
    return loop;
  }

  /** The pid file run writes for agent `pid` whose parent, the supervisor, is `supervisor`. */
  function supervisedPidFile(pid: number, supervisor: number): string {
    const name = readFileSync(`/proc/${supervisor}/comm`, "utf8").trim();
    return `${pid}\nstarttime=${startTimeOf(pid)}\nexe=${realpathSync(agentBin)}\nsupervisor=${supervisor} ${startTimeOf(supervisor)} ${name}\n`;
  }

  test("the agent takes the script's place (the supervisor's pid is the agent's) with the script's settings, serves, logs to the log file, and ends 0 on the supervisor's TERM", async () => {
    const { env, agent } = await supervisedServing();
    expect(readlinkSync(`/proc/${agent.pid}/exe`)).toBe(realpathSync(agentBin));
    const environ = readFileSync(`/proc/${agent.pid}/environ`, "utf8").split("\0");
    for (const setting of ["MIMALLOC_SCAVENGER=0", "AUDIO_AGENT_LOG_MAX_BYTES=1048576"]) expect(environ).toContain(setting);
    const recv = await run([agentBin, "output", "recv", "--socket", t.path("o.sock"), "--sink", t.path("out.wire"), "--count", "5", "--connect-timeout", "5"], { cwd: t.dir, timeoutMs: 15_000 });
    expect(recv.code, recv.stderr).toBe(0);
    expect(wholeWireFrames(t.path("out.wire")).length).toBe(5);
    agent.kill("SIGTERM");
    expect((await agent.done).code).toBe(0);
    expect(readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8")).toContain("stopped signal=SIGTERM");
  }, 60_000);

  test("the agent is in the pid file (pid, start time, executable) with its supervisor (its parent): status says who runs it (0), and once it is gone, that its pid file is left (1)", async () => {
    const { env, agent, name } = await supervisedServing();
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8")).toBe(supervisedPidFile(agent.pid, process.pid));
    // The turn given back before the exec: no lock held in the agent's name.
    expect(readdirSync(t.path("run"))).toEqual(["audio-agent.pid"]);
    const status = await initScript("status", env);
    expect(status.code, status.stdout).toBe(0);
    expect(status.stdout).toBe(`audio-agent: running (pid ${agent.pid}), supervised by ${name} (pid ${process.pid})\n`);
    agent.kill("SIGKILL");
    await agent.done;
    const dead = await initScript("status", env);
    expect(dead.code, dead.stdout).toBe(1);
    expect(dead.stdout).toContain(`not running, but ${env.AUDIO_AGENT_PIDFILE} exists`);
  }, 60_000);

  test("start while a supervised agent runs says it runs under its supervisor (0) and starts nothing; a second run (another supervisor) is refused (1)", async () => {
    const { env, agent, name } = await supervisedServing();
    const pidFile = readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8");
    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(started.stdout).toBe(`audio-agent: already running (pid ${agent.pid}), supervised by ${name} (pid ${process.pid})\n`);
    const second = await supervised(env).done;
    expect(second.code, second.stdout + second.stderr).toBe(1);
    expect(second.stdout).toContain(`already running (pid ${agent.pid}), supervised by ${name} (pid ${process.pid})`);
    expect(agentsOf(t.dir)).toEqual([agent.pid]);
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8")).toBe(pidFile);
    agent.kill("SIGTERM");
    expect((await agent.done).code).toBe(0);
  }, 60_000);

  test("stop while a supervisor runs the agent is refused (1) in one line naming the supervisor and where to stop it; the agent runs on, its pid file as it was", async () => {
    const { env, agent, name } = await supervisedServing();
    const pidFile = readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8");
    const stopped = await initScript("stop", env);
    expect(stopped.code, stopped.stdout + stopped.stderr).toBe(1);
    const lines = stopped.stdout.trimEnd().split("\n");
    expect(lines.length, stopped.stdout).toBe(1);
    expect(lines[0]).toStartWith(`audio-agent: pid ${agent.pid} is supervised by ${name} (pid ${process.pid}), which would start it again: stop it there (`);
    expect(lines[0]).toContain("sv down");
    expect(alive(agent.pid)).toBe(true);
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8")).toBe(pidFile);
    agent.kill("SIGTERM");
    expect((await agent.done).code).toBe(0);
  }, 60_000);

  test("an agent whose supervisor is gone (nothing starts it again): status says so (0), a run under another supervisor is refused (1) naming the one gone, and stop stops it", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings();
    // The supervisor is a shell whose child is run; the shell is KILLed, the agent runs on, orphaned.
    const shell = start([BUSYBOX!, "sh", "-c", '"$0" sh "$1" run & wait', BUSYBOX!, SCRIPT], { cwd: t.dir, env: scriptEnv(env), timeoutMs: 30_000 });
    daemons.add(shell.pid);
    await until(() => existsSync(t.path("o.sock")), "the agent's socket", 15_000);
    const pid = pidIn(env)!;
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8")).toBe(supervisedPidFile(pid, shell.pid));
    shell.kill("SIGKILL");
    await shell.done;
    const status = await initScript("status", env);
    expect(status.code, status.stdout).toBe(0);
    expect(status.stdout).toBe(`audio-agent: running (pid ${pid}), but its supervisor busybox (pid ${shell.pid}) is gone: nothing starts it again when it ends\n`);
    // A new supervisor (the old one started again) finds it running: no start started it.
    const pidFile = readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8");
    const refused = await supervised(env).done;
    expect(refused.code, refused.stdout + refused.stderr).toBe(1);
    expect(refused.stdout).toBe(`audio-agent: already running (pid ${pid}), run by a supervisor that is gone, busybox (pid ${shell.pid}): stop it first, so that only this supervisor starts it\n`);
    expect(agentsOf(t.dir)).toEqual([pid]);
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8")).toBe(pidFile);
    const stopped = await initScript("stop", env);
    expect(stopped.code, stopped.stdout + stopped.stderr).toBe(0);
    expect(stopped.stdout).toContain("stopped");
    expect(alive(pid)).toBe(false);
    expect(existsSync(env.AUDIO_AGENT_PIDFILE)).toBe(false);
  }, 60_000);

  test("a run caught between its pid file and its exec (the same process, the shell still): start waits for it to become the agent, and finds it running under its supervisor (0), starting no other", async () => {
    tempDir();
    const agent = standInAgent(t.path("agent"));
    const env = settings({ AUDIO_AGENT_BIN: agent, AUDIO_AGENT_ARGS: "300" });
    // What run does, held between the two until the test says go: the pid file names the shell, which then execs the agent.
    const shell = start([BUSYBOX!, "sh", "-c", 'until [ -e "$1" ]; do sleep 0.1; done; exec "$0" 300', agent, t.path("go")], { cwd: t.dir, env: scriptEnv(env), timeoutMs: 30_000 });
    daemons.add(shell.pid);
    mkdirSync(t.path("run"));
    writeFileSync(env.AUDIO_AGENT_PIDFILE, supervisedPidFile(shell.pid, process.pid).replace(realpathSync(agentBin), realpathSync(agent)));
    const starting = start([BUSYBOX!, "sh", SCRIPT, "start"], { cwd: t.dir, env: scriptEnv(env), timeoutMs: 20_000 });
    await until(() => childrenOf(starting.pid).some((child) => child.comm === "sleep"), "the start's wait", 10_000);
    writeFileSync(t.path("go"), "");
    const started = await starting.done;
    const name = readFileSync(`/proc/${process.pid}/comm`, "utf8").trim();
    expect(started.stdout).toBe(`audio-agent: already running (pid ${shell.pid}), supervised by ${name} (pid ${process.pid})\n`);
    expect(started.code).toBe(0);
    expect(agentsIn(t.dir, agent)).toEqual([shell.pid]);
  }, 60_000);

  for (const action of ["restart", "force-reload"]) {
    test(`${action} of a supervised agent TERMs it and waits for the one its supervisor starts next to record itself and listen (0); the pid file names that one`, async () => {
      tempDir();
      await writeWireFile(t.path("in.wire"), 50);
      const env = settings();
      const supervisor = respawning(env);
      await until(() => unixListeners(t.path("o.sock")) === 1 && pidIn(env) !== undefined, "the agent's socket", 15_000);
      const first = pidIn(env)!;
      const restarted = await initScript(action, env, [], 40_000);
      expect(restarted.code, restarted.stdout + restarted.stderr).toBe(0);
      const next = pidIn(env)!;
      expect(next).not.toBe(first);
      expect(alive(first)).toBe(false);
      expect(restarted.stdout).toBe(`audio-agent: stopped\naudio-agent: started (pid ${next}) by its supervisor busybox (pid ${supervisor.pid})\n`);
      // Recorded and listening by the time it said so.
      expect(unixListeners(t.path("o.sock"))).toBe(1);
      expect(agentsOf(t.dir)).toEqual([next]);
      expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8")).toBe(supervisedPidFile(next, supervisor.pid));
      expect(readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8")).toContain("stopped signal=SIGTERM");
      supervisor.kill("SIGKILL");
      await supervisor.done;
    }, 90_000);
  }

  // restart gives the turn back for the supervisor's run; a start that took it first started an agent of
  // its own, which restart reported as its supervisor's, while the supervisor's run was refused.
  test("restart of a supervised agent where a start takes the turn before the supervisor's run: it says the agent is not the supervisor's (1), whose run is then refused", async () => {
    tempDir();
    const agent = standInAgent(t.path("agent"));
    const env = settings({ AUDIO_AGENT_BIN: agent, AUDIO_AGENT_ARGS: "300", AUDIO_AGENT_START_TIMEOUT: "30" });
    // A supervisor that starts run again only once the test says go.
    const loop = start([BUSYBOX!, "sh", "-c", 'while :; do "$0" sh "$1" run; until [ -e "$2" ]; do sleep 0.1; done; rm "$2"; done', BUSYBOX!, SCRIPT, t.path("go")], { cwd: t.dir, env: scriptEnv(env), timeoutMs: 60_000 });
    daemons.add(loop.pid);
    await until(() => agentsIn(t.dir, agent).length === 1 && pidIn(env) !== undefined, "the supervised agent", 15_000);
    const first = pidIn(env)!;
    const restarting = start([BUSYBOX!, "sh", SCRIPT, "restart"], { cwd: t.dir, env: scriptEnv(env), timeoutMs: 50_000 });
    await until(() => !alive(first) && readdirSync(t.path("run")).length === 0, "the agent stopped, the turn given back", 15_000);
    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    const second = pidIn(env)!;
    const restarted = await restarting.done;
    expect(restarted.code, restarted.stdout + restarted.stderr).toBe(1);
    expect(restarted.stdout).toBe(`audio-agent: stopped\naudio-agent: pid ${second} was started meanwhile, not by its supervisor busybox (pid ${loop.pid}), whose run is refused while it runs\n`);
    writeFileSync(t.path("go"), "");
    await until(() => loop.stdout.includes(`already running (pid ${second}), started by start`), "the supervisor's next run refused", 15_000);
    expect(agentsIn(t.dir, agent)).toEqual([second]);
    loop.kill("SIGKILL");
    await loop.done;
  }, 90_000);

  test("restart of a supervised agent whose supervisor starts no other: it says so (1) within AUDIO_AGENT_START_TIMEOUT", async () => {
    const { env, agent, name } = await supervisedServing({ AUDIO_AGENT_START_TIMEOUT: "2" });
    const restarted = await initScript("restart", env, [], 40_000);
    expect(restarted.code, restarted.stdout + restarted.stderr).toBe(1);
    expect(restarted.stdout).toBe(`audio-agent: stopped\naudio-agent: its supervisor ${name} (pid ${process.pid}) started no agent within 2 s\n`);
    expect((await agent.done).code).toBe(0);
    expect(agentsOf(t.dir)).toEqual([]);
  }, 60_000);

  test("run again as the supervisor does, after the agent was killed (its socket file and pid file left behind): the new one serves and takes over the pid file", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings();
    const first = supervised(env);
    daemons.add(first.pid);
    await until(() => existsSync(t.path("o.sock")), "the agent's socket", 15_000);
    first.kill("SIGKILL");
    await first.done;
    expect(existsSync(t.path("o.sock"))).toBe(true);
    expect(pidIn(env)).toBe(first.pid);
    const second = supervised(env);
    daemons.add(second.pid);
    const recv = await run([agentBin, "output", "recv", "--socket", t.path("o.sock"), "--sink", t.path("out.wire"), "--count", "5", "--connect-timeout", "10"], { cwd: t.dir, timeoutMs: 20_000 });
    expect(recv.code, recv.stderr).toBe(0);
    expect(wholeWireFrames(t.path("out.wire")).length).toBe(5);
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8")).toBe(supervisedPidFile(second.pid, process.pid));
    expect((await initScript("status", env)).code).toBe(0);
    second.kill("SIGTERM");
    expect((await second.done).code).toBe(0);
  }, 60_000);

  // The device's settings (the role from the settings file, the capture FIFO, the sockets at JetKVM's
  // variables): two sockets for the next agent to take over after a KILL, hidden names beside them.
  test("AUDIO_AGENT_ROLE=serve with the capture FIFO: run makes the FIFO and serves both channels; run again after a KILL, the new agent takes over both sockets, and after its TERM only the FIFO is left", async () => {
    const { fifo, out, input, sink, env } = deviceServeSettings();
    const bothListen = () => unixListeners(out) === 1 && unixListeners(input) === 1;
    const first = supervised(env);
    daemons.add(first.pid);
    await until(bothListen, "both sockets", 15_000);
    expect(statSync(fifo).isFIFO()).toBe(true);
    first.kill("SIGKILL");
    await first.done;

    const second = supervised(env);
    daemons.add(second.pid);
    await until(bothListen, "both sockets, taken over", 15_000);
    expect(readFileSync(`/proc/${second.pid}/cmdline`, "utf8").split("\0").slice(0, 2)).toEqual([agentBin, "serve"]);
    await writeWireFile(t.path("send.wire"), 10);
    const sent = await run([agentBin, "input", "send", "--socket", input, "--source", t.path("send.wire"), "--connect-timeout", "5"], { cwd: t.dir, timeoutMs: 20_000 });
    expect(sent.code, sent.stderr).toBe(0);
    await until(() => readFileSync(env.AUDIO_AGENT_LOG_FILE, "utf8").includes("input-server: session ended by Stop"), "the input session's end");
    expect(wholeWireMessages(sink, INPUT_MAGIC).filter((m) => m.type === MessageType.OpusFrame).length).toBe(10);
    second.kill("SIGTERM");
    expect((await second.done).code).toBe(0);
    expect(readdirSync(t.dir).filter((name) => name.includes(".sock"))).toEqual([]);
  }, 60_000);

  test("without a log file, the agent's lines go to the supervisor's stderr", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings({ AUDIO_AGENT_LOG_FILE: "" });
    const agent = supervised(env);
    daemons.add(agent.pid);
    await agent.waitForStderr("listening socket=");
    agent.kill("SIGTERM");
    const done = await agent.done;
    expect(done.code).toBe(0);
    expect(done.stderr).toContain("stopped signal=SIGTERM");
  }, 60_000);

  // Its log a FIFO that nothing reads yet: run wrote the pid file and gave the turn back, then blocked in
  // the exec's open of the log. A start, or another supervisor's run, took the blocked shell for no agent
  // after 5 s and went on; once something read the FIFO, each blocked shell ran an agent, none of them
  // the one the pid file named.
  test("a log file that is a FIFO nothing reads yet: run waits for a reader before it takes the turn, so a start and a second run meanwhile leave no agent behind; once it is read, one agent runs, the pid file naming it", async () => {
    tempDir();
    const agent = standInAgent(t.path("agent"));
    const log = makeFifo(t.path("log.fifo"));
    const env = settings({ AUDIO_AGENT_BIN: agent, AUDIO_AGENT_ARGS: "300", AUDIO_AGENT_LOG_FILE: log });
    // One run, then another (a second supervisor), each once it waits to open the FIFO.
    const runs: ReturnType<typeof supervised>[] = [];
    while (runs.length < 2) {
      const r = supervised(env);
      runs.push(r);
      daemons.add(r.pid);
      await until(() => openingFifo(r.pid), "the run's open of the log FIFO", 20_000);
    }
    // Its own wrapper shell blocks on the FIFO as well: start gives up (1) and ends it.
    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(1);
    expect(started.stdout).toContain("its log file is a FIFO: does anything read it?");
    const reader = start(["cat", log], { timeoutMs: 30_000 });
    daemons.add(reader.pid);
    const isAgent = (pid: number) => agentsIn(t.dir, agent).includes(pid);
    await until(() => runs.every((r) => !alive(r.pid) || isAgent(r.pid)), "each run the agent or gone", 20_000);
    const [ran, refused] = isAgent(runs[0]!.pid) ? runs : [runs[1]!, runs[0]!];
    expect(agentsIn(t.dir, agent)).toEqual([ran!.pid]);
    expect(pidIn(env)).toBe(ran!.pid);
    const done = await refused!.done;
    expect(done.code, done.stdout + done.stderr).toBe(1);
    expect(done.stdout).toContain(`already running (pid ${ran!.pid}), supervised by`);
    ran!.kill("SIGTERM");
    await ran!.done;
    reader.kill("SIGKILL");
  }, 60_000);

  test("refused (1) while an agent start started runs, which it leaves as it is; and (5) where start would refuse the executable", async () => {
    tempDir();
    await writeWireFile(t.path("in.wire"), 50);
    const env = settings();
    expect((await initScript("start", env)).code).toBe(0);
    const pid = pidIn(env)!;
    const refused = await supervised(env).done;
    expect(refused.code, refused.stdout + refused.stderr).toBe(1);
    expect(refused.stdout).toContain(`already running (pid ${pid}), started by start`);
    expect(agentsOf(t.dir)).toEqual([pid]);
    expect((await initScript("stop", env)).code).toBe(0);
    const missing = await supervised(settings({ AUDIO_AGENT_BIN: t.path("nothing-here") })).done;
    expect(missing.code).toBe(5);
    expect(missing.stdout).toContain("is not executable");
  }, 60_000);
});
