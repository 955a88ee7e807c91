import { afterEach, describe, expect, test } from "bun:test";
import { clearReferenced, residentKiB, statusKiB, used, withEnded } from "../../src/bench/process-figures.ts";
import { useCleanup } from "../support/cleanup.ts";
import { BUN, copyOfBun, start, type Spawned } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();
const running: Spawned[] = [];
afterEach(() => {
  for (const p of running.splice(0)) p.kill("SIGKILL");
});

/**
 * A copy of Bun's binary that no other process maps. A page of a file counts as referenced in every
 * process that maps it once any of them touches it, and each Bun process starting on the machine
 * touches some 20 MiB of Bun's binary: a process counted from the shared binary showed them.
 */
function ownBun(): string {
  return copyOfBun(socketDir(defer, "pf-").path("bun"));
}

/**
 * A Bun process holding 16 MiB it wrote once. With `onRequest`, it writes all of it again for each
 * line on its stdin and answers `touched N` on stderr, so a count covers a touch whatever the
 * machine's load (a process on a timer may not run at all in a busy 300 ms).
 */
async function holder(onRequest: boolean, bun = BUN): Promise<Spawned> {
  const script = `
    const held = new Uint8Array(16 << 20).fill(1);
    let n = 0;
    ${
      onRequest
        ? "process.stdin.on('data', () => { held.fill(++n & 0xff); console.error('touched ' + n); });"
        : "setInterval(() => (n += held.length), 20);"
    }
    console.error("ready");`;
  const p = start([bun, "-e", script], { stdin: onRequest ? "pipe" : "ignore" });
  running.push(p);
  await p.waitForStderr("ready");
  return p;
}

test("the working set counts the pages touched since the count began, not those touched once before", async () => {
  const idle = await holder(false, ownBun());
  const busy = await holder(true);
  // Counts of 300 ms, at least three and up to ten, the idle one's the least of them: the libraries
  // it shares with other processes are still marked when they touch them; the busy one touches all
  // of its 16 MiB in every count.
  const idleReferenced: number[] = [];
  let a, b;
  for (let count = 1; count <= 10 && (count <= 3 || Math.min(...idleReferenced) >= 8 * 1024); count++) {
    expect(clearReferenced(idle.pid)).toBe(true);
    expect(clearReferenced(busy.pid)).toBe(true);
    await Bun.sleep(300);
    // Read as soon as the touch is done: the kernel's own work (a huge page collapsed, say) may
    // clear the bits of pages touched a while ago, which a longer wait would count as untouched.
    await busy.writeStdin(new TextEncoder().encode("touch\n"));
    await busy.waitForStderr(`touched ${count}\n`);
    [a, b] = [residentKiB(idle.pid)!, residentKiB(busy.pid)!];
    expect(b.referenced).toBeGreaterThanOrEqual(16 * 1024);
    idleReferenced.push(a.referenced);
  }
  a = a!;
  // Both hold the 16 MiB as anonymous memory; only the busy one touched it within the counts.
  expect(a.anonymous).toBeGreaterThanOrEqual(16 * 1024);
  expect(b!.anonymous).toBeGreaterThanOrEqual(16 * 1024);
  expect(Math.min(...idleReferenced)).toBeLessThan(8 * 1024);
  // Anonymous is what the kernel's own status line calls RssAnon, not the whole RSS.
  expect(Math.abs(a.anonymous - statusKiB(idle.pid, "RssAnon"))).toBeLessThan(512);
  expect(statusKiB(idle.pid, "VmRSS") - a.anonymous).toBeGreaterThan(4 * 1024); // Bun's own code, file-backed
});

test("a process that is gone has no figures", async () => {
  const p = await holder(false);
  p.kill("SIGKILL");
  await p.exited;
  expect(clearReferenced(p.pid)).toBe(false);
  expect(residentKiB(p.pid)).toBeUndefined();
});

describe("what a process used between two samples", () => {
  const thread = (name: string, main: boolean, cpuNs: number, voluntarySwitches: number) => ({ name, main, cpuNs, voluntarySwitches });

  test("each thread's CPU and sleeps since the first sample, the main thread's apart; one born in between counts from zero, one gone takes its share", () => {
    const before = new Map([
      ["100", thread("audio-agent", true, 5_000_000, 40)],
      ["101", thread("JITWorker", false, 2_000_000, 7)],
      ["102", thread("HeapHelper", false, 1_000_000, 3)],
    ]);
    const after = new Map([
      ["100", thread("audio-agent", true, 35_000_000, 1540)],
      ["101", thread("JITWorker", false, 2_500_000, 9)],
      // A second JITWorker, born within the window: all it used counts.
      ["103", thread("JITWorker", false, 750_000, 4)],
    ]);
    expect(used(before, after)).toEqual({
      cpuNs: 30_000_000 + 500_000 + 750_000,
      voluntarySwitches: 1500 + 2 + 4,
      mainThreadSwitches: 1500,
      threads: 3,
      byThread: { "audio-agent": { cpuMs: 30, voluntarySwitches: 1500 }, JITWorker: { cpuMs: 1.25, voluntarySwitches: 6 } },
    });
  });

  test("a thread gone by the later sample keeps what it had used when last seen in between (withEnded)", () => {
    const before = new Map([
      ["100", thread("audio-agent", true, 5_000_000, 40)],
      ["102", thread("JSCWarmUp", false, 1_000_000, 3)],
    ]);
    // Seen along the way: the helper had slept 4 more times; then it ended.
    const between = withEnded(before, new Map([...before, ["102", thread("JSCWarmUp", false, 3_000_000, 7)]]));
    const after = new Map([["100", thread("audio-agent", true, 35_000_000, 1540)]]);
    expect(used(before, withEnded(between, after))).toMatchObject({ cpuNs: 32_000_000, voluntarySwitches: 1504, mainThreadSwitches: 1500, threads: 2 });
    // A thread seen now is taken as it is now.
    expect(withEnded(between, new Map([["102", thread("JSCWarmUp", false, 4_000_000, 9)]])).get("102")!.voluntarySwitches).toBe(9);
  });
});
