/**
 * Runner.live's window, on programs whose use is known: what a program does
 * before it is ready and through the warm-up stays out of the window's
 * figures; its peak RSS is the most it ever held (VmHWM), not what it holds
 * as the window ends; and the frames counted are those the counter saw
 * within the window. The programs are small Python scripts, so the counts
 * are theirs alone.
 */
import { expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { Runner, type LiveProgram } from "../../src/bench/runner.ts";
import { useCleanup } from "../support/cleanup.ts";
import { runningIn } from "../support/proc.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

function setup() {
  const dir = socketDir(defer, "aaw-");
  const runner = new Runner(dir.dir, () => {});
  defer(() => runner.dispose());
  /** Runs `before`, writes `name`.ready, runs `after` and writes `name`.done, then sleeps without waking until SIGTERM. */
  const program = (name: string, before: string, after = ""): LiveProgram => ({
    name,
    cmd: [
      "python3",
      "-c",
      `import signal, sys, time\n${before}\nopen(sys.argv[1] + ".ready", "w").close()\n${after}\nopen(sys.argv[1] + ".done", "w").close()\nwhile True: signal.pause()`,
      dir.path(name),
    ],
    ready: () => existsSync(dir.path(`${name}.ready`)),
    ends: "signal",
  });
  return { dir, runner, program };
}

test("the warm-up is left out: sleeps before the window are not counted in it, and the peak RSS is the most the program ever held", async () => {
  const t = setup();
  const warmedBeforeTheWindow: boolean[] = [];
  const run = await t.runner.live(
    [
      // 64 MiB written and handed back to the system (a large block is unmapped when freed) before it is ready.
      t.program("peak", "held = b'\\x01' * (64 << 20)\ndel held"),
      // 100 sleeps woken from before it is ready, 50 after it (in the warm-up: it is the last to get ready).
      t.program("sleeper", "for _ in range(100): time.sleep(0.001)", "for _ in range(50): time.sleep(0.001)"),
    ],
    // The counter's first look is as the window opens: the warm-up's sleeps were over by then.
    { warmupMs: 1000, windowMs: 400, frames: () => (warmedBeforeTheWindow.push(existsSync(t.dir.path("sleeper.done"))), [0]) },
  );
  expect(run.failures).toEqual({});
  expect(warmedBeforeTheWindow[0]).toBe(true);
  // Asleep through the window: a wake-up or two of the interpreter at most, not the 150 before it.
  expect(run.processes.sleeper!.used.voluntarySwitches).toBeLessThan(20);
  expect(run.processes.sleeper!.used.mainThreadSwitches).toBe(run.processes.sleeper!.used.voluntarySwitches);
  // VmHWM: the 64 MiB counted though they are gone by the window's end.
  expect(run.processes.peak!.peakRssKiB).toBeGreaterThanOrEqual(64 * 1024);
  expect(run.processes.peak!.anonymousKiB!).toBeLessThan(32 * 1024);
  expect(runningIn(t.dir.dir)).toEqual([]);
});

test("the frames of each channel are those counted within the window: its count at the end less its count at the start", async () => {
  const t = setup();
  let looks = 0;
  // Each look counts 7 more on the first channel, none on the second.
  const run = await t.runner.live([t.program("a", "")], { warmupMs: 100, windowMs: 200, frames: () => [1000 + 7 * looks++, 40] });
  expect(looks).toBe(2);
  expect(run.windowFrames).toEqual([7, 0]);
  expect(run.windowMs).toBeGreaterThan(0);
});

test("a thread that ends within the window keeps what it used there: a runtime's helper thread may come and go", async () => {
  const t = setup();
  const name = t.dir.path("helper");
  // On SIGUSR1 (sent as the window opens) a thread sleeps 100 times and once more for a second, then
  // ends; the main thread sleeps throughout.
  const program: LiveProgram = {
    name: "helper",
    cmd: [
      "python3",
      "-c",
      `import os, signal, sys, threading, time
def helper():
    for _ in range(100): time.sleep(0.001)
    time.sleep(1)
    open(sys.argv[1] + ".ended", "w").close()
signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=helper).start())
open(sys.argv[1] + ".ready", "w").write(str(os.getpid()))
while True: signal.pause()`,
      name,
    ],
    ready: () => existsSync(`${name}.ready`),
    ends: "signal",
  };
  const endedInTheWindow: boolean[] = [];
  let looks = 0;
  const run = await t.runner.live([program], {
    warmupMs: 100,
    windowMs: 3000,
    frames: () => {
      if (looks++ === 0) process.kill(Number(readFileSync(`${name}.ready`, "utf8")), "SIGUSR1");
      else endedInTheWindow.push(existsSync(`${name}.ended`));
      return [0];
    },
  });
  expect(run.failures).toEqual({});
  expect(endedInTheWindow).toEqual([true]);
  // The helper's 100 sleeps (a few may fall before the window opens), though it was gone at the window's end.
  const used = run.processes.helper!.used;
  expect(used.voluntarySwitches - used.mainThreadSwitches).toBeGreaterThanOrEqual(90);
  expect(runningIn(t.dir.dir)).toEqual([]);
});
