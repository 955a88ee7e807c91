/**
 * The benchmark's live scenario, on a short window: the compiled agent's real
 * roles and the bare Bun floor (built in the run, as `bun run bench` does) are
 * measured from outside, and every figure the table shows is there. Figures
 * are never judged here (the machine is shared); what is checked is that each
 * was measured: frames counted, latency read from the receivers' stopped
 * lines, CPU, wake-ups and memory read from /proc.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { buildBareBun } from "../../src/bench/floor.ts";
import { footprint, LIVE_RATE, oggPackets, runLive, writeGeneratedOpus, type Footprint, type LiveSetup } from "../../src/bench/live.ts";
import { Runner } from "../../src/bench/runner.ts";
import { OggSource } from "../../src/media/ogg-source.ts";
import { buildOpusHead } from "../../src/media/opus-head.ts";
import { buildOpusTags } from "../../src/media/opus-tags.ts";
import { concatBytes } from "../support/bytes.ts";
import { collectingWriter } from "../support/ogg.ts";
import { built } from "../support/binaries.ts";
import { BUN, REPO } from "../support/processes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { runningIn } from "../support/proc.ts";
import { shellScript, socketDir } from "../support/temp.ts";

const defer = useCleanup();

/** Frames the agent's own Ogg source reads from `path`. */
async function sourceFrames(path: string): Promise<number> {
  const source = await OggSource.open(path);
  let frames = 0;
  for (;;) {
    while (source.next()) frames++;
    if (!(await source.fill())) break;
  }
  await source.close();
  return frames;
}

/** `seconds` of 10 ms stereo Opus packets (a valid TOC, filler after it) as an Ogg Opus file: twice the live rate in real time. */
function writeTenMsOpus(path: string, seconds: number): string {
  const { writer, pages } = collectingWriter(0x74656e);
  writer.addPacket(buildOpusHead({ channels: 2, preSkip: 312, inputSampleRate: 48000 }), 0);
  writer.flushPage();
  writer.addPacket(buildOpusTags(), 0);
  writer.flushPage();
  const packet = new Uint8Array(80).fill(0xa5);
  packet[0] = 0xf4; // TOC: CELT fullband 10 ms, stereo, one frame
  const frames = seconds * 2 * LIVE_RATE;
  for (let i = 1; i <= frames; i++) {
    writer.addPacket(packet, i * 480);
    if (i % 10 === 0 || i === frames) writer.flushPage(i === frames);
  }
  writeFileSync(path, concatBytes(pages));
  return path;
}

/** runLive on `dir` with the parts given, every failing part collected instead of ending the run. */
async function runCollecting(dir: { dir: string; path: (name: string) => string }, setup: Pick<LiveSetup, "warmupMs" | "windowMs" | "agent" | "bareBun">, sourceSeconds: number) {
  const runner = new Runner(dir.dir, () => {});
  defer(() => runner.dispose());
  const failures: string[] = [];
  const { figures } = await runLive({
    runner,
    work: dir.dir,
    ...setup,
    source: writeGeneratedOpus(dir.path("g.opus"), sourceSeconds),
    attempt: async (what, run) => {
      try {
        return await run();
      } catch (e) {
        failures.push(`${what}: ${(e as Error).message}`);
        return undefined;
      }
    },
    log: () => {},
  });
  return { figures, failures };
}

/** A directory of its own, the compiled agent and the bare Bun floor built into it. */
async function agentAndFloor() {
  const dir = socketDir(defer, "aab-");
  const [agent, bareBun] = await Promise.all([built("x64"), buildBareBun(dir.dir)]);
  if (bareBun instanceof Error) throw bareBun;
  return { dir, agent: agent.path, bareBun };
}

/**
 * A line for a wrapper script: stops the script's process `afterS` seconds in and continues it 2 s
 * later. $$ is the wrapper's shell, which its `exec` then makes the agent.
 */
const stallsAfter = (afterS: number) => `(sleep ${afterS}; kill -STOP $$; sleep 2; kill -CONT $$) &`;

describe("counting frames in the receiver's recording", () => {
  test("oggPackets counts the audio packets the Ogg source reads; a page cut short is not counted", async () => {
    const dir = socketDir(defer, "aab-");
    const file = writeGeneratedOpus(dir.path("g.opus"), 3);
    expect(await sourceFrames(file)).toBe(3 * LIVE_RATE);
    expect(oggPackets(file)).toBe(3 * LIVE_RATE);

    // A recording being written: its last page (five packets here) is only partly there.
    const bytes = readFileSync(file);
    const cut = dir.path("cut.opus");
    writeFileSync(cut, bytes.subarray(0, bytes.length - 100));
    expect(oggPackets(cut)).toBe(3 * LIVE_RATE - 5);
    expect(oggPackets(dir.path("none.opus"))).toBe(0);
  });
});

describe("a process's footprint over the window", () => {
  test("CPU as a share of one core over the window, wake-ups per frame and per second, memory in MiB", () => {
    const process = {
      name: "serve",
      used: { cpuNs: 150_000_000, voluntarySwitches: 1560, mainThreadSwitches: 1530, threads: 2, byThread: { "audio-agent": { cpuMs: 150, voluntarySwitches: 1560 } } },
      peakRssKiB: 35_584,
      workingSetKiB: 7_680,
      anonymousKiB: 5_120,
      exitCode: 0,
      signal: null,
      stdout: "",
      stderr: "",
    };
    expect(footprint(process, 30_000, 1500)).toEqual({
      process: "serve",
      cpuPercent: 0.5,
      wakeupsPerFrame: 1.04,
      mainThreadWakeupsPerFrame: 1.02,
      wakeupsPerSecond: 52,
      peakRssMiB: 34.75,
      workingSetMiB: 7.5,
      anonymousMiB: 5,
      threads: 2,
      byThread: process.used.byThread,
    });
    // No frames (the idle floor): no per-frame figures; no smaps_rollup: no working set.
    expect(footprint({ ...process, workingSetKiB: null, anonymousKiB: null }, 30_000, null)).toMatchObject({
      wakeupsPerFrame: null,
      mainThreadWakeupsPerFrame: null,
      wakeupsPerSecond: 52,
      workingSetMiB: null,
      anonymousMiB: null,
    });
  });
});

describe("live scenario", () => {
  test("the compiled agent's roles (serve too), the bare Bun floor and its pair: every figure measured, the agent's roles stopped cleanly", async () => {
    const { dir, agent, bareBun } = await agentAndFloor();
    const { figures, failures } = await runCollecting(dir, { warmupMs: 500, windowMs: 1500, agent, bareBun }, 2);
    expect(failures).toEqual([]);

    const measured = (f: Footprint | undefined, perFrame: boolean) => {
      expect(f).toBeDefined();
      expect(f!.peakRssMiB).toBeGreaterThan(1);
      expect(f!.threads).toBeGreaterThanOrEqual(1);
      if (perFrame) {
        expect(f!.cpuPercent).toBeGreaterThan(0);
        expect(f!.wakeupsPerSecond).toBeGreaterThan(0);
        expect(f!.wakeupsPerFrame).toBeGreaterThan(0);
      } else {
        // Idle under the device's runtime settings, Bun may not wake, nor use a clock tick, in the window.
        expect(f!.cpuPercent).toBeGreaterThanOrEqual(0);
        expect(f!.wakeupsPerSecond).toBeGreaterThanOrEqual(0);
      }
    };
    measured(figures.idle, false);
    measured(figures.tick, true);
    // Loading node:fs, bun:ffi and the rest reaches megabytes of Bun's code that a bare program never touches.
    measured(figures.modules, true);
    expect(figures.modules!.peakRssMiB).toBeGreaterThan(figures.tick!.peakRssMiB + 1);
    // The bare pair that loads them too is the floor the agent's RSS is also set against.
    expect(figures.bareModules!.send.peakRssMiB).toBeGreaterThan(figures.bare!.send.peakRssMiB + 1);
    expect(figures.bareModules!.recv.peakRssMiB).toBeGreaterThan(figures.bare!.recv.peakRssMiB + 1);
    for (const pair of [figures.bare, figures.bareModules, figures.agent]) {
      measured(pair?.send, true);
      measured(pair?.recv, true);
      expect(pair!.windowFrames).toBeGreaterThan(0);
      const { p50, p99, max } = pair!.latencyMs!;
      expect([p50 > 0, p50 <= p99, p99 <= max]).toEqual([true, true, true]);
    }
    // Each figure is its own process's: the bare pairs', the agent's roles', and the agent's
    // latency is what its own receiver's stopped line says.
    const names = (pair: { send: Footprint; recv: Footprint } | undefined) => [pair?.send.process, pair?.recv.process];
    expect(names(figures.bare)).toEqual(["bare send", "bare recv"]);
    expect(names(figures.bareModules)).toEqual(["send", "recv"]);
    expect(names(figures.agent)).toEqual(["serve", "recv"]);
    expect([figures.idle?.process, figures.tick?.process, figures.modules?.process]).toEqual(["idle", "tick", "modules"]);
    expect([figures.both?.serve?.process, figures.both?.inputServe?.process]).toEqual(["serve", "serve"]);
    const age = (p: string) => Number(figures.agentStopped!.recv[`frame_age_${p}_ms`]);
    expect(figures.agent!.latencyMs).toEqual({ p50: age("p50"), p99: age("p99"), max: age("max") });
    // The agent's pair streams beside the bare pair, in one window: the machine's drift between
    // windows taken in turn is not in their ratio. The other floors have windows of their own.
    expect(figures.agent!.openedAtMs).toBeGreaterThan(0);
    expect(figures.agent!.openedAtMs).toBe(figures.bare!.openedAtMs);
    expect(figures.bareModules!.openedAtMs).toBeLessThan(figures.bare!.openedAtMs);
    // Both channels in one process, and the input channel's server alone for the two-process sum.
    measured(figures.both?.serve, true);
    measured(figures.both?.inputServe, true);
    expect(figures.both!.framesPerSecond).toBeGreaterThan(0);
    expect(figures.agentStopped?.serve.signal).toBe("SIGTERM");
    expect(figures.agentStopped?.recv).toMatchObject({ signal: "SIGTERM", protocol_errors: "0", connects: "1" });
  }, 60_000);

  test("a floor that does not load the modules it is given fails that part alone, naming what it left out", async () => {
    const dir = socketDir(defer, "aab-");
    // The floor from its source, except that its receiver leaves bun:ffi out.
    const floor = join(REPO, "src/bench/floors/bare-bun.js");
    const wrapper = shellScript(
      dir.path("bare-bun"),
      `if [ "$1" = recv ] && [ $# -gt 2 ]; then exec "${BUN}" "${floor}" recv "$2" node:fs node:path; fi\nexec "${BUN}" "${floor}" "$@"`,
    );
    const { figures, failures } = await runCollecting(dir, { warmupMs: 200, windowMs: 500, bareBun: wrapper }, 1);
    expect(failures).toEqual(["bare Bun with the runtime modules: the bare recv did not load bun:ffi (it says: node:fs, node:path)"]);
    expect(figures.bareModules).toBeUndefined();
    expect(figures.modules).toBeUndefined();
    expect([figures.idle, figures.tick, figures.bare?.send, figures.bare?.recv].every((f) => f !== undefined && f.peakRssMiB > 1)).toBe(true);
  }, 60_000);

  // Catches a stalled sender's figures judged as if it streamed: its CPU, the least of any run, read as a goal met.
  test("an agent sender stopped through most of the window fails its part, naming the frames it carried; the bare pair beside it is measured", async () => {
    const { dir, agent, bareBun } = await agentAndFloor();
    // The real agent; its `output serve` is stopped 0.5 s after it starts and continued 2 s later,
    // past the window's end (it then takes the SIGTERM waiting for it).
    const stalls = shellScript(dir.path("stalls"), `if [ "$1" = output ] && [ "$2" = serve ]; then ${stallsAfter(0.5)} fi\nexec "${agent}" "$@"`);
    const { figures, failures } = await runCollecting(dir, { warmupMs: 200, windowMs: 1000, agent: stalls, bareBun }, 1);
    expect(failures.filter((f) => f.startsWith("agent roles:"))).toHaveLength(1);
    const [, carried] = failures.find((f) => f.startsWith("agent roles:"))!.match(/^agent roles: the agent's pair carried (\d+) frames in the 1\.\d s window, not 5\d \(50\/s\): not measured at the live rate$/) ?? [];
    expect(Number(carried)).toBeLessThan(40);
    expect(figures.agent).toBeUndefined();
    // serve, which the wrapper leaves alone, and the bare pair are measured as ever.
    expect(failures.filter((f) => !f.startsWith("agent roles:"))).toEqual([]);
    expect(figures.both?.serve?.process).toBe("serve");
    expect(figures.bare!.windowFrames).toBeGreaterThan(0);
    expect(runningIn(dir.dir)).toEqual([]);
  }, 60_000);

  // The floor is the denominator of the CPU and latency goals and its wake-ups are taken per tick:
  // a bare pair that carried few frames in its window would set the agent against a floor that did
  // not do the job.
  test("a bare sender stopped through most of the window fails the bare pair's part, naming the frames it carried; the agent beside it is measured", async () => {
    const { dir, agent, bareBun } = await agentAndFloor();
    // The real floor, except that its plain sender (the side-by-side pair's; no modules after the
    // socket) is stopped 0.5 s after it starts and continued 2 s later, past the window's end.
    const stalls = shellScript(dir.path("stalls"), `if [ "$1" = send ] && [ $# -eq 2 ]; then ${stallsAfter(0.5)} fi\nexec "${bareBun}" "$@"`);
    const { figures, failures } = await runCollecting(dir, { warmupMs: 200, windowMs: 1000, agent, bareBun: stalls }, 1);
    const bare = failures.filter((f) => f.startsWith("bare Bun pair:"));
    expect(bare).toHaveLength(1);
    // The receiver's count from its first frame (in the warm-up) to the window's end.
    const [, carried, expected] = bare[0]!.match(/^bare Bun pair: the bare pair carried (\d+) frames in the 1\.\d s from its first frame to the window's end, not (\d+) \(50\/s\): not measured at the live rate$/) ?? [];
    expect(Number(carried)).toBeLessThan(40);
    expect(Number(expected)).toBeGreaterThanOrEqual(50);
    expect(figures.bare).toBeUndefined();
    // The agent's pair beside it, and the floors before it, are measured as ever.
    expect(failures.filter((f) => !f.startsWith("bare Bun pair:"))).toEqual([]);
    expect(figures.agent!.windowFrames).toBeGreaterThan(0);
    expect(figures.bareModules!.windowFrames).toBeGreaterThan(0);
    expect(runningIn(dir.dir)).toEqual([]);
  }, 60_000);

  // Catches a flooding sender passing, and a channel of serve, or input serve alone, off the rate unnoticed.
  test("an agent sender off the live rate the other way (10 ms packets in real time), serve with one channel stalled, input serve alone stalled: each fails its part, naming the channel", async () => {
    const { dir, agent, bareBun } = await agentAndFloor();
    // `input send` is serve's peer the first time it runs, input serve's the second: the one whose
    // turn is given is stopped as streaming begins, until past the window.
    const stallInputSend = (turn: number) =>
      `if [ "$1" = input ] && [ "$2" = send ]; then echo >> "${dir.path("sends")}"; ` +
      `if [ "$(wc -l < "${dir.path("sends")}")" -eq ${turn} ]; then ${stallsAfter(0.3)} fi; fi\n`;
    // output serve's source swapped for one of 10 ms packets: 100 frames a second in real time.
    const tenMs = writeTenMsOpus(dir.path("ten.opus"), 3);
    const floods = shellScript(
      dir.path("floods"),
      `if [ "$1" = output ] && [ "$2" = serve ]; then for a; do shift; [ "$after" = --source ] && a="${tenMs}"; set -- "$@" "$a"; after=$a; done; fi\n` +
        stallInputSend(1) +
        `exec "${agent}" "$@"`,
    );
    const stallsAlone = shellScript(dir.path("stalls-alone"), stallInputSend(2) + `exec "${agent}" "$@"`);
    const carried = /^(agent roles|serve|input serve): (the agent's pair|serve's input channel|input serve) carried (\d+) frames in the 1\.\d s window, not 5\d \(50\/s\): not measured at the live rate$/;

    const flooded = await runCollecting(dir, { warmupMs: 200, windowMs: 1000, agent: floods, bareBun }, 1);
    const [pair, serve] = [flooded.failures[0]?.match(carried), flooded.failures[1]?.match(carried)];
    expect(flooded.failures).toHaveLength(2);
    // input serve alone, measured after serve failed, keeps its figures.
    expect([flooded.figures.both?.serve, flooded.figures.both?.inputServe?.process]).toEqual([undefined, "serve"]);
    expect([pair?.[2], serve?.[2]]).toEqual(["the agent's pair", "serve's input channel"]);
    expect(Number(pair![3])).toBeGreaterThan(75);
    expect(Number(serve![3])).toBeLessThan(35);
    expect(flooded.figures.agent).toBeUndefined();

    // A directory of its own: a run leaves its socket files behind.
    rmSync(dir.path("sends"));
    const again = socketDir(defer, "aab-");
    const alone = await runCollecting(again, { warmupMs: 200, windowMs: 1000, agent: stallsAlone, bareBun }, 1);
    expect(alone.failures).toHaveLength(1);
    expect(alone.failures[0]).toMatch(carried);
    expect(alone.failures[0]!.match(carried)![2]).toBe("input serve");
    expect([alone.figures.both?.serve?.process, alone.figures.both?.inputServe]).toEqual(["serve", undefined]);
    expect(alone.figures.agent!.windowFrames).toBeGreaterThan(0);
    expect([...runningIn(dir.dir), ...runningIn(again.dir)]).toEqual([]);
  }, 90_000);

  // Catches a failing agent taking the bare pair's figures with it (they share one window), and a
  // part that fails leaving processes running into the scenarios after it.
  test("an agent that cannot start, or whose receiver dies in the window, fails its parts alone; the bare pair beside it is measured; nothing is left running", async () => {
    const { dir, agent, bareBun } = await agentAndFloor();
    const notExecutable = dir.path("not-executable");
    writeFileSync(notExecutable, "not a program\n");
    // The real agent, except that `output recv` ends on its own 0.4 s in, within the window.
    const dies = shellScript(
      dir.path("dies"),
      `if [ "$1" = output ] && [ "$2" = recv ]; then sleep 0.4; echo "recv gave up" >&2; exit 3; fi\nexec "${agent}" "$@"`,
    );

    for (const [binary, agentFailure] of [
      [notExecutable, /^agent roles: serve could not start: /],
      [dies, /^agent roles: recv ended within the window; serve \(exit SIGKILL\): [^|]* \| recv \(exit 3\): recv gave up$/],
    ] as const) {
      // A directory each: a run leaves its socket files behind.
      const run = socketDir(defer, "aab-");
      const { figures, failures } = await runCollecting(run, { warmupMs: 200, windowMs: 500, agent: binary, bareBun }, 1);
      expect(runningIn(run.dir)).toEqual([]);
      expect(failures.find((f) => f.startsWith("agent roles:"))).toMatch(agentFailure);
      expect(failures.filter((f) => !/^(agent roles|serve|input serve):/.test(f))).toEqual([]);
      expect(figures.agent).toBeUndefined();
      expect([figures.bare?.send.process, figures.bare?.recv.process]).toEqual(["bare send", "bare recv"]);
      expect(figures.bare!.windowFrames).toBeGreaterThan(0);
      expect(figures.bare!.latencyMs!.p99).toBeGreaterThan(0);
    }
  }, 60_000);
});
