/**
 * Runner.live's groups: programs of one group stand or fall together, and a
 * group that fails (cannot start, never ready, ends early, outlives its
 * SIGTERM) is killed and left out while the others are measured on. Programs
 * given no group are one group: all or nothing. Whatever fails, nothing the
 * run started is left running. The programs are small shell scripts in the
 * test's directory, so /proc tells which are still alive.
 */
import { expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { Runner, type LiveProgram } from "../../src/bench/runner.ts";
import { useCleanup } from "../support/cleanup.ts";
import { runningIn } from "../support/proc.ts";
import { shellScript, socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();
const WINDOW = { warmupMs: 200, windowMs: 400 };

function setup() {
  const dir = socketDir(defer, "aal-");
  const runner = new Runner(dir.dir, () => {});
  defer(() => runner.dispose());
  /** A script in the test's directory; `tail -f` on a file there keeps the directory on its command line. */
  const script = (name: string, body: string) => shellScript(dir.path(`${name}.sh`), body);
  const hold = dir.path("hold");
  writeFileSync(hold, "");
  /** Runs until SIGTERM (or, with `ignoresTerm`, SIGKILL); writes `name`.ready first. */
  const streams = (name: string, group?: string, ignoresTerm = false): LiveProgram => ({
    name,
    cmd: [script(name, `${ignoresTerm ? "trap '' TERM\n" : ""}touch "${dir.path(`${name}.ready`)}"\nexec tail -f "${hold}"`)],
    ready: () => existsSync(dir.path(`${name}.ready`)),
    ends: "signal",
    group,
  });
  /** Says why on stderr and exits 3 after `seconds`. */
  const exits = (name: string, seconds: number, group?: string): LiveProgram => ({
    name,
    cmd: [script(name, `sleep ${seconds}\necho "${name} gave up" >&2\nexit 3`)],
    ends: "signal",
    group,
  });
  const started = (name: string) => existsSync(dir.path(`${name}.ready`));
  return { dir, runner, script, hold, streams, exits, started };
}

test("a group whose program ends within the window fails alone and is killed; the other is measured over the window", async () => {
  const t = setup();
  const run = await t.runner.live([t.streams("a1", "a"), t.streams("a2", "a"), t.streams("b1", "b"), t.exits("b2", 0.4, "b")], WINDOW);
  expect(runningIn(t.dir.dir)).toEqual([]);
  expect(Object.keys(run.processes).sort()).toEqual(["a1", "a2"]);
  expect(run.processes.a1!.name).toBe("a1");
  expect(run.processes.a1!.signal).toBe("SIGTERM");
  expect(run.failures).toEqual({ b: "b2 ended within the window; b1 (exit SIGKILL):  | b2 (exit 3): b2 gave up" });
});

test("a program that exits before it is ready fails its group at once: the group's later programs never start", async () => {
  const t = setup();
  const early: LiveProgram = { ...t.exits("b1", 0, "b"), ready: () => false };
  const run = await t.runner.live([t.streams("a1", "a"), early, t.streams("b2", "b"), t.streams("a2", "a")], WINDOW);
  expect(runningIn(t.dir.dir)).toEqual([]);
  expect(t.started("b2")).toBe(false);
  expect(Object.keys(run.processes).sort()).toEqual(["a1", "a2"]);
  expect(run.failures).toEqual({ b: "b1 exited before it was ready; b1 (exit 3): b1 gave up" });
});

test("a program that cannot be started fails its group; one that dies before the window is told from one that dies in it", async () => {
  const t = setup();
  const missing: LiveProgram = { name: "b1", cmd: [t.dir.path("no-such-program")], ends: "signal", group: "b" };
  const run = await t.runner.live([missing, t.streams("b2", "b"), t.streams("a1", "a"), t.exits("c1", 0, "c")], WINDOW);
  expect(runningIn(t.dir.dir)).toEqual([]);
  expect(t.started("b2")).toBe(false);
  expect(Object.keys(run.processes)).toEqual(["a1"]);
  expect(run.failures.b).toStartWith("b1 could not start: ");
  expect(run.failures.b).not.toContain(";");
  expect(run.failures.c).toBe("c1 ended before the window; c1 (exit 3): c1 gave up");
});

test("a group that outlives its SIGTERM fails alone; the one that stopped keeps its figures", async () => {
  const t = setup();
  const run = await t.runner.live([t.streams("a1", "a"), t.streams("b1", "b", true)], { ...WINDOW, stopMs: 500 });
  expect(runningIn(t.dir.dir)).toEqual([]);
  expect(Object.keys(run.processes)).toEqual(["a1"]);
  expect(run.failures).toEqual({ b: "still running 0.5 s after the window; b1 (exit SIGKILL): " });
});

test("programs given no group are all or nothing; when every group failed the run throws, naming each", async () => {
  const t = setup();
  await expect(t.runner.live([t.streams("p1"), t.exits("p2", 0.3), t.streams("p3")], WINDOW)).rejects.toThrow(
    "p2 ended within the window; p1 (exit SIGKILL):  | p2 (exit 3): p2 gave up | p3 (exit SIGKILL): ",
  );
  expect(runningIn(t.dir.dir)).toEqual([]);
  const both = t.runner.live([t.exits("a1", 0.3, "a"), t.exits("b1", 0.3, "b")], WINDOW);
  await expect(both).rejects.toThrow("a: a1 ended within the window; a1 (exit 3): a1 gave up || b: b1 ended within the window; b1 (exit 3): b1 gave up");
  expect(runningIn(t.dir.dir)).toEqual([]);
});

test("Runner.pair kills its sender when the receiver cannot be started", async () => {
  const t = setup();
  const sender = t.script("sender", `echo LISTENING\nexec tail -f "${t.hold}"`);
  await expect(t.runner.pair([sender], [t.dir.path("no-such-program")], 10_000)).rejects.toThrow("receiver could not start: ");
  await until(() => runningIn(t.dir.dir).length === 0, "the sender to be gone", 2000);
});
