/**
 * One collection once a burst of connections has subsided: the rule on its
 * own (counts and a clock given), then a spawned `output serve` whose audio
 * socket, or HTTP port, a peer connects to in a loop, read from its log line.
 */
import { describe, expect, test } from "bun:test";
import { BURST_CONNECTIONS, COLLECT_SPACING_MS, ConnectionBurst, QUIET_PER_SECOND } from "../../src/roles/connection-burst.ts";
import { allLogFields, expectAccountedLine } from "../support/agent-log.ts";
import { useCleanup } from "../support/cleanup.ts";
import { rawRequest } from "../support/http.ts";
import { REPO, spawnAgent, stopAgents, type Spawned } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();
const TONE = `${REPO}/examples/tone.opus`;

/** A ConnectionBurst fed by hand: `tick(fresh)` adds that many connections and samples a second later. */
function burstOf() {
  const collected: number[] = [];
  let connections = 0;
  let now = 0;
  const burst = new ConnectionBurst(connections, now, (n) => collected.push(n));
  const tick = (fresh: number, ms = 1000) => {
    connections += fresh;
    now += ms;
    burst.sample(() => connections, now);
  };
  return { burst, collected, tick };
}

describe("ConnectionBurst", () => {
  test("connections that keep coming are not collected after; once they subside, one collection, told the burst's connections", () => {
    const { burst, collected, tick } = burstOf();
    for (let i = 0; i < 30; i++) tick(20_000);
    expect(collected).toEqual([]);
    expect(burst.pending).toBe(true);
    tick(0);
    expect(collected).toEqual([600_000]);
    expect(burst.pending).toBe(false);
    for (let i = 0; i < 100; i++) tick(0);
    expect(collected).toEqual([600_000]);
  });

  test("a trickle (a collector's scrapes, a client reconnecting) and bursts too small are never collected after", () => {
    const { burst, collected, tick } = burstOf();
    // Nine connections a second for more than a day of ticks: each is quiet.
    for (let i = 0; i < 100_000; i++) tick(QUIET_PER_SECOND - 1);
    // Short bursts, each just short of a burst worth a collection, a quiet tick between them.
    for (let i = 0; i < 50; i++) {
      tick(BURST_CONNECTIONS - 1);
      tick(0);
    }
    expect(collected).toEqual([]);
    expect(burst.pending).toBe(false);
  });

  test(`exactly ${QUIET_PER_SECOND} connections a second is a burst, not quiet: ${BURST_CONNECTIONS} of them are collected after once they stop`, () => {
    const { burst, collected, tick } = burstOf();
    const seconds = BURST_CONNECTIONS / QUIET_PER_SECOND;
    for (let i = 0; i < seconds; i++) tick(QUIET_PER_SECOND);
    expect(collected).toEqual([]);
    expect(burst.pending).toBe(true);
    tick(QUIET_PER_SECOND - 1);
    expect(collected).toEqual([BURST_CONNECTIONS]);
  });

  test(`bursts closer than ${COLLECT_SPACING_MS / 1000} s: the second is collected after once the spacing has passed, pending until then`, () => {
    const { burst, collected, tick } = burstOf();
    tick(5000);
    tick(0);
    expect(collected).toEqual([5000]);
    tick(3000);
    tick(2000);
    tick(0);
    expect(collected).toEqual([5000]);
    expect(burst.pending).toBe(true);
    const quietTicksBefore = COLLECT_SPACING_MS / 1000 - 4;
    for (let i = 0; i < quietTicksBefore; i++) tick(0);
    expect(collected).toEqual([5000]);
    tick(0);
    expect(collected).toEqual([5000, 5000]);
    expect(burst.pending).toBe(false);
  });

  test("ticks closer than a second judge the rate over a second: a slow burst seen 10 ms at a time is still one", () => {
    const { collected, tick } = burstOf();
    // 20 connections a second (above the quiet rate), one every 50 ms, ticked every 10 ms, for 60 s.
    for (let i = 0; i < 6000; i++) tick(i % 5 === 0 ? 1 : 0, 10);
    expect(collected).toEqual([]);
    for (let i = 0; i < 100; i++) tick(0, 10);
    expect(collected).toEqual([1200]);
  });
});

/** The agent's collections after a burst so far. */
const collections = (agent: Spawned) => allLogFields(agent.stderr, "instruments", "connections subsided: collected");
const statsLines = (agent: Spawned) => allLogFields(agent.stderr, "instruments", "stats").length;

/** Frames flow through a few of the sampler's ticks (a stats line a second, `--stats-interval 1`). */
async function framesFlowFor(agent: Spawned, seconds: number): Promise<void> {
  const seen = statsLines(agent);
  await until(() => statsLines(agent) >= seen + seconds, `${seconds} more stats lines`, 30_000);
}

/**
 * Connects to the Unix socket `path` and closes at once, until `count` connections were made; a
 * connect refused (the agent's queue of connections full, ACCEPT_QUEUE) is tried again a moment later.
 */
async function churnUnix(path: string, count: number): Promise<void> {
  for (let made = 0; made < count; ) {
    const socket = await Bun.connect({ unix: path, socket: { data() {}, error() {}, close() {} } }).catch(() => undefined);
    if (!socket) {
      await Bun.sleep(1);
      continue;
    }
    made++;
    socket.end();
  }
}

/** Expects the one collection after a burst of `made` connections, and none before it: what the line tells. */
function expectOneCollection(agent: Spawned, made: number): void {
  const lines = collections(agent);
  expect(lines.length).toBe(1);
  const { connections, heap_used_bytes, collect_ms } = lines[0]!;
  // The burst's connections, all of them unless a tick found the loop paused for a second.
  expect(Number(connections)).toBeGreaterThanOrEqual(BURST_CONNECTIONS);
  expect(Number(connections)).toBeLessThanOrEqual(made);
  expect(Number(heap_used_bytes)).toBeGreaterThan(0);
  expect(Number(collect_ms)).toBeGreaterThan(0);
}

describe("the process collects once after a burst of connections", () => {
  test("a peer connecting to the audio socket in a loop: one collection once it stops, none while frames merely flow before or after it", async () => {
    const t = socketDir(defer, "aa-burst-");
    defer(() => stopAgents());
    const path = t.path("o.sock");
    const agent = spawnAgent(["output", "serve", "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--socket", path, "--stats-interval", "1"]);
    await agent.waitForStderr("listening");
    await framesFlowFor(agent, 3);
    expect(collections(agent)).toEqual([]);

    const made = 1500;
    await churnUnix(path, made);
    await agent.waitForStderr("connections subsided: collected", 30_000);
    await framesFlowFor(agent, 3);
    expectOneCollection(agent, made);

    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    const accounted = expectAccountedLine(agent.stderr);
    expect(accounted.submitted).toBeGreaterThan(0);
  }, 120_000);

  test("a peer connecting to --metrics in a loop (a request each, read to its end): one collection once it stops, none before", async () => {
    const t = socketDir(defer, "aa-burst-");
    defer(() => stopAgents());
    const path = t.path("o.sock");
    const agent = spawnAgent(["output", "serve", "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--socket", path, "--stats-interval", "1", "--metrics", "127.0.0.1:0"]);
    await agent.waitForStderr(/http listening url=http/);
    const port = Number(new URL(/http listening url=(\S+)/.exec(agent.stderr)![1]!).port);
    await framesFlowFor(agent, 3);
    expect(collections(agent)).toEqual([]);

    const made = 1500;
    for (let i = 0; i < made; i++) {
      const response = await rawRequest("127.0.0.1", port, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}`);
      expect(response.status).toBe(200);
    }
    await agent.waitForStderr("connections subsided: collected", 30_000);
    await framesFlowFor(agent, 3);
    expectOneCollection(agent, made);

    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
  }, 120_000);
});
