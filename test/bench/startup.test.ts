/**
 * The start-up probe (Runner.startup): each program timed from exec to a
 * connectable socket, taking turns; one that fails loses its own figures
 * only, with its reason, as the benchmark reports it.
 */
import { afterEach, expect, test } from "bun:test";
import { median, Runner } from "../../src/bench/runner.ts";
import { useCleanup } from "../support/cleanup.ts";
import { TONE } from "../support/opus-fixtures.ts";
import { AGENT, BARE_BUN_FLOOR, BUN, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();
afterEach(stopAgents);

test("a program that exits before it listens is left out with its reason; the others keep their figures", async () => {
  const dir = socketDir(defer, "aas-");
  const runner = new Runner(dir.dir, () => {});
  defer(() => runner.dispose());
  const { figures, failures } = await runner.startup(
    {
      floor: (socket: string) => [BUN, BARE_BUN_FLOOR, "send", socket],
      broken: (socket: string) => [BUN, BARE_BUN_FLOOR, "send", socket, "node:nope"],
      withPath: (socket: string) => [BUN, BARE_BUN_FLOOR, "send", socket, "node:path"],
    },
    2,
  );
  expect(Object.keys(figures).sort()).toEqual(["floor", "withPath"]);
  expect(figures.floor!.runs.length).toBe(2);
  expect(figures.withPath!.medianMs).toBeGreaterThan(0);
  expect(failures).toEqual({ broken: expect.stringContaining("bare-bun: cannot load node:nope") });
  expect(failures.broken).toStartWith("exited 1 before listening");
});

test("the programs run in the benchmark's environment, not the caller's: an agent variable that the agent would refuse does not reach it", async () => {
  const dir = socketDir(defer, "aas-");
  // As a caller's shell might have it; the agent exits 2 on it (tested in test/cli/config.test.ts).
  process.env.AUDIO_AGENT_QUEUE_FRAMES = "many";
  defer(() => delete process.env.AUDIO_AGENT_QUEUE_FRAMES);
  const runner = new Runner(dir.dir, () => {});
  defer(() => runner.dispose());
  const { figures, failures } = await runner.startup(
    { agent: (socket: string) => [...AGENT, "output", "serve", "--socket", socket, "--source", TONE, "--format", "ogg", "--realtime", "--loop"] },
    1,
  );
  expect(failures).toEqual({});
  expect(figures.agent!.runs.length).toBe(1);
});

test("the median is taken of the rounds in order of time, not in the order they ran; of an even count, the mean of the middle two", () => {
  expect(median([14.2, 11.8, 30.5, 12.1, 11.9, 12.4, 11.7, 13.0, 12.0])).toBe(12.1);
  expect(median([9, 3, 7, 1])).toBe(5);
  expect(median([4])).toBe(4);
  expect(median([])).toBeNaN();
});
