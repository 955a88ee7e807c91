/**
 * packaging/S95audio-agent's lock under `busybox sh`, with the interleavings
 * that break it forced rather than left to the scheduler: shims first on PATH
 * delay one applet (ln, rm, start-stop-daemon) for the process whose
 * environment asks, then exec BusyBox's own. The agent is a stand-in (a copy
 * of sleep(1), run as "300"); two holders of the turn show as two agents,
 * since the start-stop-daemon shim keeps both starts from seeing the other's
 * pid file in time.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { canUnshare } from "../support/machine.ts";
import { startTimeOf } from "../support/proc.ts";
import { canSwitchUser, NOBODY } from "../support/nobody.ts";
import { agentsIn, BUSYBOX, gonePid, installApplets, SCRIPT, standInService } from "../support/init-script.ts";
import { cleanEnv, type Result, run, start } from "../support/processes.ts";
import { until } from "../support/wait.ts";

let applets: string;
let shims: string;
let dir: string;
let agent: string;

/**
 * The wait of a shim's `slowed DELAY`: DELAY seconds, or (an absolute path) until that file exists,
 * for a step to wait for another process's rather than for time. With SLEEPING, it makes that file as it begins.
 */
const SLOWED = `slowed() { [ -z "$SLEEPING" ] || : >"$SLEEPING"; case $1 in /*) until [ -e "$1" ]; do sleep 0.01; done ;; *) sleep "$1" ;; esac; }`;

/** A shim for applet `name` in the shims directory: `body` (sh, which may call slowed) runs first, then BusyBox's own applet. */
function shim(name: string, body: string): void {
  writeFileSync(join(shims, name), `#!${BUSYBOX} sh\n${SLOWED}\n${body}\nexec ${BUSYBOX} ${name} "$@"\n`);
  chmodSync(join(shims, name), 0o755);
}

beforeAll(async () => {
  applets = await installApplets();
  shims = mkdtempSync("/tmp/aa-shims-");
  // ln SRC DST: SLOW_LOCK_LN before taking the lock, SLOW_BREAK_LN before taking a marker to break a
  // stale lock (each a slowed DELAY).
  shim("ln", 'case $2 in *.lock) delay=$SLOW_LOCK_LN ;; *.lock.break.*) delay=$SLOW_BREAK_LN ;; *) delay= ;; esac; [ -n "$delay" ] && slowed "$delay"');
  // rm -f FILE...: SLOW_LOCK_RM before removing the lock, SLOW_BREAK_RM before removing a marker,
  // SLOW_TMP_RM before removing the temp name the lock is linked from (once written: not the rm
  // before it is), SLOW_PIPE_RM before removing the syslog pipe (a stop's last step before it
  // unlocks), by the first operand that names one (each a slowed DELAY).
  shim("rm", 'for f; do case $f in *.lock) delay=$SLOW_LOCK_RM ;; *.lock.break.*) delay=$SLOW_BREAK_RM ;; *.lock.[0-9]*) delay=; [ -e "$f" ] && delay=$SLOW_TMP_RM ;; *.log-pipe) delay=$SLOW_PIPE_RM ;; *) continue ;; esac; [ -n "$delay" ] && slowed "$delay"; break; done');
  // mv -f SRC DST: SLOW_PID_MV before putting the pid file's new version in place, SLOW_PID_MV_DONE
  // after (an mv ended by a signal once it has renamed the file: it fails, its work done).
  shim("mv", `case $3 in *.pid) [ -n "$SLOW_PID_MV" ] && slowed "$SLOW_PID_MV"; if [ -n "$SLOW_PID_MV_DONE" ]; then ${BUSYBOX} mv "$@" || exit; slowed "$SLOW_PID_MV_DONE"; exit 0; fi ;; esac`);
  // A start holds its turn for a while before the pid file appears.
  shim("start-stop-daemon", 'sleep "${SLOW_SSD:-1}"');
  // nobody runs them in one test.
  chmodSync(applets, 0o755);
  chmodSync(shims, 0o755);
}, 30_000);

afterAll(() => {
  for (const d of [applets, shims]) if (d) rmSync(d, { recursive: true, force: true });
});

afterEach(() => {
  for (const pid of agents()) process.kill(pid, "SIGKILL");
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function setup(): Record<string, string> {
  let env: Record<string, string>;
  ({ dir, agent, env } = standInService("/tmp/aa-lock-", "0"));
  return env;
}

const lockFile = () => join(dir, "run/audio-agent.lock");

function scriptEnv(env: Record<string, string>, extra: Record<string, string> = {}): Record<string, string> {
  return { ...cleanEnv(), PATH: `${shims}:${applets}:${process.env.PATH}`, ...env, ...extra };
}

function initScript(action: string, env: Record<string, string>, extra: Record<string, string> = {}, timeoutMs = 30_000): Promise<Result> {
  return run([BUSYBOX!, "sh", SCRIPT, action], { cwd: dir, env: scriptEnv(env, extra), timeoutMs });
}

/** Live processes running the stand-in agent. */
function agents(): number[] {
  return agent ? agentsIn(dir, agent) : [];
}

/** A slowed step of termedOnceSlowed's that waits until the signal has been sent, however long the test takes to send it. */
const UNTIL_TERMED = "until termed";

/**
 * The script's `action` run with `slow` (the shims' settings) and SLEEPING, signalled with TERM
 * (or `signal`), alone or with its whole process group, once that wait has begun (`meanwhile`
 * started just before the signal); its exit code.
 */
async function termedOnceSlowed(action: string, env: Record<string, string>, slow: Record<string, string>, group = false, meanwhile?: () => void, signal: NodeJS.Signals = "SIGTERM"): Promise<number> {
  const sleeping = join(dir, "sleeping");
  const termed = join(dir, "termed");
  const slowed = Object.fromEntries(Object.entries(slow).map(([name, delay]) => [name, delay === UNTIL_TERMED ? termed : delay]));
  const running = start(["setsid", BUSYBOX!, "sh", SCRIPT, action], { cwd: dir, env: scriptEnv(env, { ...slowed, SLEEPING: sleeping }), timeoutMs: 30_000 });
  await until(() => existsSync(sleeping), "the slowed step to wait", 10_000);
  meanwhile?.();
  process.kill(group ? -running.pid : running.pid, signal);
  writeFileSync(termed, "");
  return running.exited;
}

/** The outcome the turns promise: all 0, exactly one started, one agent; after stop, an empty run dir. */
async function expectOneAgent(results: Result[], env: Record<string, string>): Promise<void> {
  const outcome = results.map((r) => `${r.code} ${r.stdout.includes("already running") ? "already" : r.stdout.includes("started") ? "started" : r.stdout + r.stderr}`);
  expect({ outcome: outcome.sort(), agents: agents().length }).toEqual({ outcome: [...results.slice(1).map(() => "0 already"), "0 started"], agents: 1 });
  expect((await initScript("stop", env)).code).toBe(0);
  expect(readdirSync(join(dir, "run"))).toEqual([]);
}

describe("S95audio-agent's lock: forced interleavings", () => {
  // Catches: break_lock removing the lock without re-reading it (or comparing what it re-read
  // with itself), and reading it before taking the marker.
  test("a start that gets the marker only after another broke the stale lock and took the turn leaves that turn alone", async () => {
    const env = setup();
    writeFileSync(lockFile(), `${gonePid()} 1\n`);
    const both = await Promise.all([initScript("start", env, { SLOW_BREAK_LN: "0.2", SLOW_SSD: "2" }), initScript("start", env, { SLOW_BREAK_LN: "0.8" })]);
    await expectOneAgent(both, env);
  }, 30_000);

  // Catches: a waiter passing a marker without checking that its holder is stale (or checking
  // the lock instead).
  test("a start that finds the marker held by a live breaker waits instead of passing it", async () => {
    const env = setup();
    writeFileSync(lockFile(), `${gonePid()} 1\n`);
    const both = await Promise.all([initScript("start", env, { SLOW_BREAK_LN: "0.1", SLOW_LOCK_RM: "1.2" }), initScript("start", env, { SLOW_BREAK_LN: "0.25", SLOW_SSD: "3" })]);
    await expectOneAgent(both, env);
  }, 30_000);

  // Catches: break_lock comparing only the pid. The lock names the first start's own pid (exec
  // keeps it) with another start time: the first breaks it and takes the turn under the same
  // pid; the second, which found it stale too, must see the start time changed.
  test("a lock re-taken under the same pid is not the stale one that was found", async () => {
    const env = setup();
    // The first breaks the lock once the second has found it stale too and waits to take a marker.
    const secondFound = join(dir, "second-found");
    const first = start(["sh", "-c", `echo "$$ 1" >"$0"; exec "$1" sh "$2" start`, lockFile(), BUSYBOX!, SCRIPT], {
      cwd: dir,
      env: scriptEnv(env, { SLOW_BREAK_LN: secondFound, SLOW_SSD: "2" }),
      timeoutMs: 30_000,
    });
    await until(() => existsSync(lockFile()) && readFileSync(lockFile(), "utf8") === `${first.pid} 1\n`, "the lock naming the first start", 5_000);
    const second = initScript("start", env, { SLOW_BREAK_LN: "1.5", SLEEPING: secondFound });
    const firstCode = await first.exited;
    const results = [{ code: firstCode, stdout: first.stdout, stderr: first.stderr } as Result, await second];
    await expectOneAgent(results, env);
  }, 30_000);
});

describe("S95audio-agent's lock: what a crash or a power cut leaves", () => {
  // A marker left by a start that died while it broke the lock: were it broken as a stale lock is
  // (read, then rm), one waiter's late rm could remove the marker another took meanwhile, both
  // would break at once, and the later one remove the turn the earlier took.
  test("a stale lock and the marker of a start that died breaking it, two starts: one agent", async () => {
    const env = setup();
    const gone = gonePid();
    writeFileSync(lockFile(), `${gone} 1\n`);
    writeFileSync(`${lockFile()}.break.${gone}.1`, `${gonePid()} 1\n`);
    const both = await Promise.all([
      initScript("start", env, { SLOW_BREAK_LN: "0.1", SLOW_LOCK_RM: "0.8", SLOW_SSD: "3" }),
      initScript("start", env, { SLOW_BREAK_RM: "0.6", SLOW_LOCK_RM: "0.8" }),
    ]);
    await expectOneAgent(both, env);
  }, 30_000);

  // A stale lock that cannot be removed (a sticky run dir, the lock another user's): the wait
  // ticks and ends at its timeout, not a loop without a tick that never reaches it.
  test.skipIf(!canSwitchUser)("a stale lock the start may not remove: it gives up after its timeout, ticking meanwhile", async () => {
    const env = { ...setup(), AUDIO_AGENT_START_TIMEOUT: "0" };
    chmodSync(join(dir, "run"), 0o1777);
    writeFileSync(lockFile(), `${gonePid()} 1\n`);
    const setpriv = Bun.which("setpriv", { PATH: "/usr/bin:/bin" })!;
    const waiting = start([setpriv, `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "--", BUSYBOX!, "sh", SCRIPT, "start"], { cwd: dir, env: scriptEnv(env), timeoutMs: 40_000 });
    // The wait's timeout: 23 s with a stop and a start timeout of 0.
    expect(await waiting.exited).toBe(1);
    expect(waiting.stdout + waiting.stderr).toContain(`cannot break the stale lock ${lockFile()} (its holder is gone): remove it by hand`);
    // Ticking: at most one attempt a tenth of a second (a loop without a tick made thousands).
    expect(waiting.stderr.split("\n").filter((l) => l.includes("can't remove")).length).toBeLessThan(300);
    expect(readdirSync(join(dir, "run"))).toEqual(["audio-agent.lock"]);
  }, 60_000);

  // A run KILLed while it waited for the turn left the name it wrote the lock under ($LOCK.PID), and one
  // KILLed as it broke a stale lock its marker: nothing ever removed them. Removed once stale as a lock
  // is (pid and start time), or naming no pid with no process at the pid in the name; kept otherwise.
  test("the names runs KILLed before they could unlock left (waiting, breaking a lock): the next run that takes the turn removes them, not one naming a live process", async () => {
    const env = setup();
    const holding = initScript("start", env, { SLOW_SSD: "3" });
    await until(() => existsSync(lockFile()), "the start's turn", 10_000);
    const waiter = start([BUSYBOX!, "sh", SCRIPT, "stop"], { cwd: dir, env: scriptEnv(env), timeoutMs: 30_000 });
    const waiterName = `${lockFile()}.${waiter.pid}`;
    await until(() => existsSync(waiterName) && /^\d+ \d+\nturn=\d+\n$/.test(readFileSync(waiterName, "utf8")), "the waiting stop's name for the lock", 10_000);
    waiter.kill("SIGKILL");
    expect(await waiter.exited).toBe(137);
    // Live processes: one named by pid and start time, as a waiting run names itself; one named with
    // another start time, as a run that had its pid before it did; one named by no pid, as a run that
    // was writing the name.
    const [live, reused, writing] = [start(["sleep", "30"]), start(["sleep", "30"]), start(["sleep", "30"])];
    try {
      const kept = { [`${lockFile()}.${live.pid}`]: `${live.pid} ${startTimeOf(live.pid)}\nturn=23\n`, [`${lockFile()}.${writing.pid}`]: "" };
      const gone = gonePid();
      const removed = {
        [`${lockFile()}.${gone}`]: `${gone} 1\nturn=23\n`,
        [`${lockFile()}.${reused.pid}`]: `${reused.pid} 1\nturn=23\n`,
        [`${lockFile()}.${gonePid()}`]: "",
        [`${lockFile()}.break.${gonePid()}.1`]: `${gonePid()} 1\nturn=23\n`,
      };
      for (const [path, content] of Object.entries({ ...kept, ...removed })) writeFileSync(path, content);
      expect((await holding).code).toBe(0);
      // The pid file's new version, which only the turn's holder writes, of a holder KILLed as it wrote it.
      writeFileSync(`${env.AUDIO_AGENT_PIDFILE}.new`, "1\n");
      expect(readdirSync(join(dir, "run")).sort()).toEqual(["audio-agent.pid", "audio-agent.pid.new", ...[waiterName, ...Object.keys({ ...kept, ...removed })].map((p) => p.replace(/.*\//, ""))].sort());

      expect((await initScript("stop", env)).code).toBe(0);
      expect(Object.fromEntries(readdirSync(join(dir, "run")).map((name) => [join(dir, "run", name), readFileSync(join(dir, "run", name), "utf8")]))).toEqual(kept);
    } finally {
      for (const sleeping of [live, reused, writing]) sleeping.kill("SIGKILL");
    }
  }, 30_000);

  // A holder clearing those can remove a live waiter's name (written anew under a reused pid between its
  // read and its rm): the waiter's ln had nothing to link, and it waited until its timeout, "still holds" (1).
  test("a waiting run whose name for the lock is removed under it writes it again and takes its turn", async () => {
    const env = { ...setup(), AUDIO_AGENT_START_TIMEOUT: "0" };
    const holding = initScript("start", env, { SLOW_SSD: "2" });
    await until(() => existsSync(lockFile()), "the start's turn", 10_000);
    const waiter = start([BUSYBOX!, "sh", SCRIPT, "start"], { cwd: dir, env: scriptEnv(env), timeoutMs: 30_000 });
    const waiterName = `${lockFile()}.${waiter.pid}`;
    await until(() => existsSync(waiterName), "the waiting start's name for the lock", 10_000);
    rmSync(waiterName);
    const results = [await holding, await waiter.done];
    await expectOneAgent(results, env);
  }, 40_000);

  // A power cut can leave a lock of the right size full of NUL bytes, not only an empty one.
  test("a lock full of NUL bytes, or of anything but a pid, does not block a start", async () => {
    const env = setup();
    for (const content of [Buffer.alloc(12), "  \n", "x1 2\n"]) {
      writeFileSync(lockFile(), content);
      const started = await initScript("start", env, {}, 5_000);
      expect(started.code, started.stdout + started.stderr).toBe(0);
      expect(agents().length).toBe(1);
      expect((await initScript("stop", env)).code).toBe(0);
      expect(readdirSync(join(dir, "run"))).toEqual([]);
    }
  }, 30_000);

  // TERM while breaking: the trap removes the marker too (a hard link of $LOCK.$$).
  test("a start TERMed while it breaks a stale lock leaves no marker behind", async () => {
    const env = setup();
    writeFileSync(lockFile(), `${gonePid()} 1\n`);
    // Its removal of the lock held up far longer than the test takes, and TERM sent once that wait
    // has begun (sent as the shim is forked, the signal can be lost on its way through exec).
    const markers = () => readdirSync(join(dir, "run")).filter((name) => name.startsWith("audio-agent.lock.break.")).length;
    let held = 0;
    expect(await termedOnceSlowed("start", env, { SLOW_LOCK_RM: "20" }, true, () => (held = markers()))).toBe(1);
    expect(held).toBe(1);
    expect(readdirSync(join(dir, "run"))).toEqual(["audio-agent.lock"]);
  }, 30_000);
});

describe("S95audio-agent's lock: one that cannot be written", () => {
  // Root refused the lock's temp file (a read-only /var/run): the line said which file, not why.
  test.skipIf(!canUnshare("--mount"))("a read-only run directory: start fails (1) with one line naming the lock's file and why, nothing started", async () => {
    const env = setup();
    const readOnly = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"';
    const started = await run(["unshare", "-m", "sh", "-c", readOnly, join(dir, "run"), BUSYBOX!, "sh", SCRIPT, "start"], { cwd: dir, env: scriptEnv(env), timeoutMs: 30_000 });
    expect(started.code, started.stdout + started.stderr).toBe(1);
    const lines = started.stdout.trim().split("\n");
    expect(lines.length, started.stdout).toBe(1);
    expect(lines[0]).toStartWith(`audio-agent: cannot write ${lockFile()}.`);
    expect(lines[0]).toEndWith(": Read-only file system");
    expect(agents()).toEqual([]);
  }, 30_000);
});

describe("S95audio-agent's lock: a lock naming no pid, a chain of markers", () => {
  // Catches: break_lock removing an unreadable lock without comparing what it re-read (the
  // "unreadable" key names every garbage lock alike, but the re-read must still match).
  test("an empty lock: a start that gets the unreadable marker only after another broke it and took the turn leaves that turn alone", async () => {
    const env = setup();
    writeFileSync(lockFile(), "");
    const both = await Promise.all([initScript("start", env, { SLOW_BREAK_LN: "0.2", SLOW_SSD: "2" }), initScript("start", env, { SLOW_BREAK_LN: "0.8" })]);
    await expectOneAgent(both, env);
  }, 30_000);

  // Catches: the cleanup removing only the first marker and its own, not the whole chain: with two
  // takers dead in a row, the middle marker would stay in the run dir for good.
  test("a stale lock with a chain of two markers whose takers died: one start breaks it and leaves no marker", async () => {
    const env = setup();
    const gone = gonePid();
    const [a, b] = [gonePid(), gonePid()];
    writeFileSync(lockFile(), `${gone} 1\n`);
    writeFileSync(`${lockFile()}.break.${gone}.1`, `${a} 1\n`);
    writeFileSync(`${lockFile()}.break.${gone}.1.${a}.1`, `${b} 1\n`);
    await expectOneAgent([await initScript("start", env, {}, 10_000)], env);
  }, 30_000);
});

describe("S95audio-agent's lock: a holder killed or stopped at the wrong moment", () => {
  // A holder kill -9ed between its ln and its rm leaves $LOCK.PID linked to the lock; a start that gets
  // PID later (here: exec keeps it) truncates and rewrites that inode, so the stale lock's contents change
  // under a breaker that already compared them: the breaker's rm removes the new start's turn.
  test("a leftover $LOCK.PID hard-linked to a stale lock, PID reused by a start: one agent", async () => {
    const env = setup();
    // The start under the reused pid begins once the breaker has compared the stale lock and waits to remove it.
    const compared = join(dir, "compared");
    const reused = start(["sh", "-c", 'until [ -e "$2" ]; do sleep 0.01; done; exec "$0" sh "$1" start', BUSYBOX!, SCRIPT, compared], {
      cwd: dir,
      env: scriptEnv(env, { SLOW_SSD: "2" }),
      timeoutMs: 30_000,
    });
    writeFileSync(lockFile(), `${reused.pid} 1\n`);
    linkSync(lockFile(), `${lockFile()}.${reused.pid}`);
    const breaker = initScript("start", env, { SLOW_LOCK_RM: "1.5", SLOW_SSD: "2", SLEEPING: compared });
    const results = [{ code: await reused.exited, stdout: reused.stdout, stderr: reused.stderr } as Result, await breaker];
    await expectOneAgent(results, env);
  }, 30_000);

  // A TERM while the stop removes the syslog pipe: the signal's trap removes the lock, and no
  // EXIT trap after it removes it again (some BusyBox ash runs it), by then the turn of the start
  // that was waiting.
  test("a holder TERMed while it stops: it removes its lock once", async () => {
    const env = setup();
    let second!: Promise<Result>;
    // TERMed as the stop's removal of the syslog pipe waits, a start waiting for its turn.
    expect(await termedOnceSlowed("stop", env, { SLOW_PIPE_RM: UNTIL_TERMED, SLOW_LOCK_RM: "0.6" }, false, () => (second = initScript("start", env, { SLOW_SSD: "2" })))).toBe(1);
    const third = initScript("start", env, { SLOW_SSD: "2" });
    await expectOneAgent([await second, await third], env);
  }, 30_000);

  // A TERM while the EXIT trap removes the lock: the signal's trap ran after that removal and
  // removed the lock again, the turn the waiting start had taken in between.
  test("a holder TERMed while its EXIT trap removes the lock: it removes it once", async () => {
    const env = setup();
    let second!: Promise<Result>;
    // TERMed as the EXIT trap's removal of the lock waits, a start waiting for its turn.
    await termedOnceSlowed("stop", env, { SLOW_LOCK_RM: "1.5" }, false, () => (second = initScript("start", env, { SLOW_SSD: "2" })));
    const third = initScript("start", env, { SLOW_SSD: "2" });
    await expectOneAgent([await second, await third], env);
  }, 30_000);
});

describe("S95audio-agent: a stop cut short between its marks", () => {
  // TERMed after it wrote "stopping" into the pid file, before it sent the agent TERM: it ended there,
  // and the start that finished its stop waited STOP_TIMEOUT for an agent no one had told to stop.
  test("a stop TERMed as it marks the pid file stopping sends the agent its TERM before it ends: a start then starts another without waiting for it", async () => {
    const env: Record<string, string> = { ...setup(), AUDIO_AGENT_STOP_TIMEOUT: "3" };
    expect((await initScript("start", env)).code).toBe(0);
    const first = agents();
    expect(first.length).toBe(1);
    expect(await termedOnceSlowed("stop", env, { SLOW_PID_MV: UNTIL_TERMED })).toBe(1);
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8").split("\n")).toEqual([String(first[0]), expect.stringMatching(/^starttime=\d+$/), `exe=${agent}`, "stopping", ""]);
    await until(() => agents().length === 0, "the agent's TERM", 5_000);

    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(started.stdout).not.toContain("stopping");
    expect(agents().length).toBe(1);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(readdirSync(join(dir, "run"))).toEqual([]);
  }, 30_000);

  // Its whole group TERMed as it marks: the mark's mv dies with it, and an agent sent TERM without the
  // mark would be taken for running by a start while on its way out.
  test("a stop whose group is TERMed as it marks the pid file stopping sends no TERM: the agent runs on, unmarked", async () => {
    const env = setup();
    expect((await initScript("start", env)).code).toBe(0);
    const first = agents();
    expect(await termedOnceSlowed("stop", env, { SLOW_PID_MV: UNTIL_TERMED }, true)).toBe(1);
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8")).not.toContain("stopping");
    const status = await initScript("status", env);
    expect({ code: status.code, stdout: status.stdout }).toEqual({ code: 0, stdout: `audio-agent: running (pid ${first[0]})\n` });
    expect(agents()).toEqual(first);
    expect(readdirSync(join(dir, "run"))).toEqual(["audio-agent.pid"]);
    expect((await initScript("stop", env)).code).toBe(0);
  }, 30_000);

  // Its whole group TERMed once the mark's mv has renamed the file, before it exits: the mark is made,
  // the mv fails. The stop took it for not made and sent no TERM: the agent ran on, marked stopping, and
  // a start waited STOP_TIMEOUT for it to end.
  test("a stop whose group is TERMed as the mark's mv ends, the pid file marked: the agent has its TERM", async () => {
    const env = setup();
    expect((await initScript("start", env)).code).toBe(0);
    const first = agents();
    expect(await termedOnceSlowed("stop", env, { SLOW_PID_MV_DONE: UNTIL_TERMED }, true)).toBe(1);
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8").split("\n")).toEqual([String(first[0]), expect.stringMatching(/^starttime=\d+$/), `exe=${agent}`, "stopping", ""]);
    await until(() => agents().length === 0, "the agent's TERM", 5_000);
    expect(readdirSync(join(dir, "run"))).toEqual(["audio-agent.pid"]);
  }, 30_000);

  // A mark that cannot be written with no signal come (a /var/run out of room) does not keep the TERM
  // back: the agent, unmarked, still gets its orderly stop before any KILL.
  test("a stop that cannot write its mark (here a directory in the way of the pid file's new version) still sends TERM first", async () => {
    const env: Record<string, string> = { ...setup(), AUDIO_AGENT_STOP_TIMEOUT: "3" };
    expect((await initScript("start", env)).code).toBe(0);
    mkdirSync(`${env.AUDIO_AGENT_PIDFILE}.new`);
    const stopped = await initScript("stop", env);
    expect({ code: stopped.code, stdout: stopped.stdout }).toEqual({ code: 0, stdout: "audio-agent: stopped\n" });
    expect(agents()).toEqual([]);
  }, 30_000);

  // KILLed there, it can send nothing: a start finishes its stop (STOP_TIMEOUT for a TERM it may have
  // sent, then TERM) and starts another. It waited STOP_TIMEOUT + 2 s and failed "stop it first".
  test("a stop KILLed after it marked the pid file stopping, before its TERM: start stops that agent and starts another", async () => {
    const env = setup();
    expect((await initScript("start", env)).code).toBe(0);
    const first = agents();
    expect(first.length).toBe(1);
    expect(await termedOnceSlowed("stop", env, { SLOW_PID_MV: UNTIL_TERMED }, false, undefined, "SIGKILL")).toBe(137);
    await until(() => existsSync(env.AUDIO_AGENT_PIDFILE) && readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8").endsWith("stopping\n"), "the mark the killed stop's mv makes", 5_000);
    expect(agents()).toEqual(first);

    const started = await initScript("start", env);
    expect(started.code, started.stdout + started.stderr).toBe(0);
    expect(started.stdout).toContain(`pid ${first[0]} was left stopping by a stop that did not finish: stopping it\n`);
    const second = agents();
    expect(second.length).toBe(1);
    expect(second).not.toEqual(first);
    expect(readFileSync(env.AUDIO_AGENT_PIDFILE, "utf8").split("\n")[0]).toBe(String(second[0]));
    expect((await initScript("stop", env)).code).toBe(0);
    expect(readdirSync(join(dir, "run"))).toEqual([]);
  }, 30_000);
});

describe("S95audio-agent's lock: a signal as a file of the turn is made or removed", () => {
  const startTermed = (env: Record<string, string>, slow: Record<string, string>, group: boolean) => termedOnceSlowed("start", env, slow, group);

  // TERM to the script alone while ln runs: the shell runs the trap once ln is done, and ln took the
  // lock, or a marker, before the script could note it held it.
  test("a start TERMed as its ln takes the lock: exit 1, no lock left", async () => {
    const env = setup();
    expect(await startTermed(env, { SLOW_LOCK_LN: UNTIL_TERMED }, false)).toBe(1);
    expect(agents()).toEqual([]);
    expect(readdirSync(join(dir, "run"))).toEqual([]);
  }, 30_000);

  test("a start TERMed as its ln takes a marker to break a stale lock: exit 1, no marker left", async () => {
    const env = setup();
    writeFileSync(lockFile(), `${gonePid()} 1\n`);
    expect(await startTermed(env, { SLOW_BREAK_LN: UNTIL_TERMED }, false)).toBe(1);
    expect(readdirSync(join(dir, "run"))).toEqual(["audio-agent.lock"]);
  }, 30_000);

  // TERM to the whole group while rm runs: rm dies with it, and the script had already stopped
  // counting the name as its own.
  test("a start whose group is TERMed as it removes the temp name it took the lock from: exit 1, neither left", async () => {
    const env = setup();
    expect(await startTermed(env, { SLOW_TMP_RM: UNTIL_TERMED }, true)).toBe(1);
    expect(agents()).toEqual([]);
    expect(readdirSync(join(dir, "run"))).toEqual([]);
  }, 30_000);

  test("a start whose group is TERMed as it removes its marker after breaking a stale lock: exit 1, nothing left", async () => {
    const env = setup();
    writeFileSync(lockFile(), `${gonePid()} 1\n`);
    expect(await startTermed(env, { SLOW_BREAK_RM: UNTIL_TERMED }, true)).toBe(1);
    expect(agents()).toEqual([]);
    expect(readdirSync(join(dir, "run"))).toEqual([]);
  }, 30_000);

  // The pid file is written anew under the turn (its start time; "stopping"), then moved in place.
  test("a start whose group is TERMed as it moves the pid file's new version in place: exit 1, the agent under its pid file, no temp file left", async () => {
    const env = setup();
    expect(await startTermed(env, { SLOW_PID_MV: UNTIL_TERMED }, true)).toBe(1);
    expect(agents().length).toBe(1);
    expect(readdirSync(join(dir, "run"))).toEqual(["audio-agent.pid"]);
    expect((await initScript("stop", env)).code).toBe(0);
    expect(agents()).toEqual([]);
    expect(readdirSync(join(dir, "run"))).toEqual([]);
  }, 30_000);
});
