/**
 * Live streams while the wall clock steps (NTP's first sync, `date -s`), under
 * libfaketime, sender and receiver on the one stepped clock as on a device:
 * a frame stamped on one side of a step and aged on the other is no
 * latency, and never shows as one (an age of the step's size, minutes or
 * hours, in the percentiles and the warnings); every frame still arrives.
 */
import { describe, expect, test } from "bun:test";
import { allLogFields, expectAccountedLine, logFields } from "../support/agent-log.ts";
import { useCleanup } from "../support/cleanup.ts";
import { faketimeMissing, SteppedClock } from "../support/faketime.ts";
import { TONE } from "../support/opus-fixtures.ts";
import { agentEnv, spawnAgent, type Spawned, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { scanWireFile } from "../support/wire.ts";

const defer = useCleanup();

/** Steps of minutes to an hour each way: each leaves a gap the age of a real frame never comes near. */
const STEPS = ["+600", "+0", "-1800", "+0"];

/** Half the smallest step (ms): an age this large came from the step, not from a queue or a socket. */
const STEP_SIZED_MS = 300_000;

function setup() {
  const dir = socketDir(defer, "aac-");
  defer(() => stopAgents());
  const clock = new SteppedClock(dir.path("clock"));
  return { ...dir, clock, env: agentEnv(clock.env()) };
}

/** Resolves once every one of `agents` has logged `n` more stats lines: frames flowed, and each re-read its clock. */
async function statsLines(agents: Spawned[], n: number): Promise<void> {
  const count = (a: Spawned) => a.stderr.split(" stats seconds=").length;
  const targets = agents.map((a) => count(a) + n);
  await until(() => agents.every((a, i) => count(a) >= targets[i]!), `${n} stats lines from each agent`, 60_000);
}

/** Steps the clock through STEPS, letting the stream run on each side of every step. */
async function stepThrough(clock: SteppedClock, agents: Spawned[]): Promise<void> {
  await statsLines(agents, 3);
  for (const to of STEPS) {
    clock.step(to);
    await statsLines(agents, 4);
  }
}

describe.skipIf(faketimeMissing !== undefined)(`a step of the wall clock mid-stream${faketimeMissing ? ` (skipped: ${faketimeMissing})` : ""}`, () => {
  test("`output serve --realtime` -> `output recv`: no frame age of the step's size; the frames across a step counted as giving none; every frame delivered", async () => {
    const t = setup();
    const sock = t.path("o.sock");
    const sink = t.path("rx.wire");
    const serve = spawnAgent(["output", "serve", "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--socket", sock, "--stats-interval", "0.5"], { env: t.env });
    await serve.waitForStderr("listening");
    const recv = spawnAgent(["output", "recv", "--socket", sock, "--sink", sink, "--stats-interval", "0.5"], { env: t.env });
    await recv.waitForStderr("connected");
    await stepThrough(t.clock, [serve, recv]);
    serve.kill();
    expect(await serve.exited).toBe(0);
    await recv.waitForStderr("disconnected");
    recv.kill();
    expect(await recv.exited).toBe(0);

    const stopped = logFields(recv.stderr, "output-client", "stopped");
    expect(Number(stopped.frame_age_max_ms)).toBeLessThan(STEP_SIZED_MS);
    expect(allLogFields(recv.stderr, "instruments", "latency above maximum").filter((f) => Number(f.ms) >= STEP_SIZED_MS)).toEqual([]);
    // Four steps, each with a second or so of frames stamped on its far side: some gave no age.
    expect(Number(stopped.frame_stamps_unusable)).toBeGreaterThan(0);
    const sent = expectAccountedLine(serve.stderr);
    expect(Number(stopped.frames)).toBe(sent.delivered);
    expect(scanWireFile(sink, () => {}).messages).toBe(sent.delivered);
  }, 120_000);

  test("steps of a few ms every half second (a clock kept by small steps): every frame keeps its age, no step is told of, every frame delivered", async () => {
    const t = setup();
    const sock = t.path("o.sock");
    const serve = spawnAgent(["output", "serve", "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--socket", sock, "--stats-interval", "0.5"], { env: t.env });
    await serve.waitForStderr("listening");
    const recv = spawnAgent(["output", "recv", "--socket", sock, "--sink", t.path("rx.wire"), "--stats-interval", "0.5"], { env: t.env });
    await recv.waitForStderr("connected");
    await statsLines([serve, recv], 3);
    for (let i = 0; i < 20; i++) {
      t.clock.step(i % 2 ? "+0" : "+0.006");
      await Bun.sleep(500);
    }
    await statsLines([serve, recv], 2);
    serve.kill();
    expect(await serve.exited).toBe(0);
    await recv.waitForStderr("disconnected");
    recv.kill();
    expect(await recv.exited).toBe(0);

    const stopped = logFields(recv.stderr, "output-client", "stopped");
    expect(recv.stderr).not.toContain("clock stepped");
    expect(Number(stopped.frame_stamps_unusable)).toBe(0);
    expect(Number(stopped.frames)).toBe(expectAccountedLine(serve.stderr).delivered);
  }, 120_000);

  test("`input send --realtime` -> `input serve`: no frame age of the step's size; Heartbeats answered throughout, no Ack timeout; every frame delivered", async () => {
    const t = setup();
    const sock = t.path("i.sock");
    const sink = t.path("in.wire");
    const serve = spawnAgent(["input", "serve", "--socket", sock, "--sink", sink, "--stats-interval", "0.5"], { env: t.env });
    await serve.waitForStderr("listening");
    const send = spawnAgent(["input", "send", "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--socket", sock, "--heartbeat-ms", "200", "--stats-interval", "0.5"], { env: t.env });
    await serve.waitForStderr("config");
    await stepThrough(t.clock, [serve, send]);
    send.kill();
    expect(await send.exited).toBe(0);
    await serve.waitForStderr("session ended by Stop");
    serve.kill();
    expect(await serve.exited).toBe(0);

    const stopped = logFields(serve.stderr, "input-server", "stopped");
    expect(Number(stopped.frame_age_max_ms)).toBeLessThan(STEP_SIZED_MS);
    expect(allLogFields(serve.stderr, "instruments", "latency above maximum").filter((f) => Number(f.ms) >= STEP_SIZED_MS)).toEqual([]);
    expect(Number(stopped.frame_stamps_unusable)).toBeGreaterThan(0);
    const sent = logFields(send.stderr, "input-client", "stopped");
    expect(sent.ack_timeouts).toBe("0");
    expect(Number(sent.acks)).toBeGreaterThan(STEPS.length * 4);
    expect(Number(stopped.frames)).toBe(Number(sent.frames));
    expect(Number(sent.dropped)).toBe(0);
  }, 120_000);
});
