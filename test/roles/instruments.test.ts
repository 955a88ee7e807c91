/**
 * The --stats-interval summary line of a running agent: each line tells what
 * happened since the previous one, so the lines add up exactly to the totals
 * of the final "stopped" line, drops by reason included. A spawned `output
 * serve` on a FIFO, fed by writer processes, with a short interval.
 */
import { describe, expect, test } from "bun:test";
import { statSync } from "node:fs";
import { join } from "node:path";
import { DEVICE_RUNTIME_ENV } from "../../src/bench/device-runtime.ts";
import { encodeConfigPayload, encodeMessage, INPUT_MAGIC, MessageType } from "../../src/protocol/index.ts";
import type { ChannelEnd } from "../../src/channels/channel-end.ts";
import { LatencyMonitor } from "../../src/observe/latency-monitor.ts";
import { ChannelInstruments, thousandths } from "../../src/roles/channel-instruments.ts";
import { samplePeriodMs } from "../../src/roles/instruments.ts";
import { SocketTuner } from "../../src/transport/socket-tuner.ts";
import { expectAccountedLine, logFields } from "../support/agent-log.ts";
import { useCleanup } from "../support/cleanup.ts";
import { connectClient } from "../support/peer.ts";
import { idleSenderReadings } from "../support/readings.ts";
import { makeFifo, writeIntoFifo } from "../support/fifo.ts";
import { wakeUps } from "../support/proc.ts";
import { agentEnv, REPO, runAgent, spawnAgent, type Spawned, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { writeWireFile } from "../support/wire.ts";

const defer = useCleanup();

/** The fields of every "instruments: stats" line so far, numbers as numbers. */
function statsLines(agent: Spawned): Record<string, number | string>[] {
  return agent.stderr
    .split("\n")
    .filter((line) => line.includes(" instruments: stats "))
    .map((line) => {
      const fields = logFields(line, "instruments", "stats")!;
      return Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, Number.isNaN(Number(v)) ? v : Number(v)]));
    });
}

function sum(lines: Record<string, number | string>[], key: string): number {
  return lines.reduce((total, line) => total + (typeof line[key] === "number" ? (line[key] as number) : 0), 0);
}

describe("--stats-interval", () => {
  test("one line per interval with the changes since the last; the lines add up to the totals", async () => {
    const t = socketDir(defer, "aa-stats-");
    defer(() => stopAgents());
    const fifo = makeFifo(t.path("capture.wire"));
    const unheard = t.path("unheard.wire");
    const heard = t.path("heard.wire");
    await writeWireFile(unheard, 30);
    await writeWireFile(heard, 200);
    const sock = t.path("o.sock");
    const serve = spawnAgent(["output", "serve", "--source", fifo, "--socket", sock, "--stats-interval", "0.2", "--write-deadline-ms", "0"]);
    await serve.waitForStderr("source: waiting for a writer");

    // No client yet: every frame of the first writer is dropped, no_client.
    expect(await writeIntoFifo(fifo, unheard)).toBe(0);
    await until(() => sum(statsLines(serve), "dropped_no_client") === 30, "30 no_client drops in the stats lines");
    const recv = spawnAgent(["output", "recv", "--socket", sock, "--sink", t.path("out.wire"), "--count", "200"]);
    await serve.waitForStderr("client connected");
    expect(await writeIntoFifo(fifo, heard)).toBe(0);
    expect(await recv.exited, recv.stderr).toBe(0);
    await until(() => sum(statsLines(serve), "frames") === 200, "200 frames in the stats lines");
    // Another line after it all: nothing new, so zeros (and no drop reasons).
    const before = statsLines(serve).length;
    await until(() => statsLines(serve).length > before, "one more stats line");

    serve.kill("SIGTERM");
    expect(await serve.exited, serve.stderr).toBe(0);
    const lines = statsLines(serve);
    const totals = expectAccountedLine(serve.stderr);
    expect(totals).toMatchObject({ submitted: 230, delivered: 200, dropped: 30, byReason: { no_client: 30 } });
    // Changes, not running totals: they add up to what the final line says.
    expect(sum(lines, "submitted")).toBe(230);
    expect(sum(lines, "delivered")).toBe(200);
    expect(sum(lines, "dropped")).toBe(30);
    expect(sum(lines, "dropped_no_client")).toBe(30);
    expect(sum(lines, "connects")).toBe(1);
    expect(sum(lines, "bytes")).toBe(statSync(heard).size);
    expect(lines.at(-1)).toMatchObject({ submitted: 0, delivered: 0, frames: 0, bytes: 0, connects: 0 });
    // Whether a client is connected: not while the first writer's frames were dropped.
    expect(lines[0]!.connected).toBe("false");
    expect(Object.keys(lines.at(-1)!).some((key) => key.startsWith("dropped_"))).toBe(false);
    // Latency p99 where frames were written in the interval, and only there.
    for (const line of lines) {
      expect({ line, has: "p99_enqueue_to_write_ms" in line }).toEqual({ line, has: (line.delivered as number) > 0 });
      if ((line.delivered as number) > 0) expect(line.p99_enqueue_to_write_ms as number).toBeGreaterThanOrEqual(0);
      expect(line.seconds as number).toBeGreaterThan(0);
    }
    // README's example line has the fields of a line with frames written, in their order.
    const example = (await Bun.file(join(REPO, "README.md")).text()).match(/`instruments: stats ([^`]*)`/)![1]!;
    const written = lines.find((line) => (line.delivered as number) > 0 && !("dropped_no_client" in line))!;
    expect(Object.keys(written)).toEqual(example.split(" ").map((field) => field.split("=")[0]));
  }, 60_000);

  test("each line adds up on its own: submitted = delivered + dropped + queued less the line before's queued, while a reader that reads nothing holds frames in the queue", async () => {
    const t = socketDir(defer, "aa-stats-");
    defer(() => stopAgents());
    const source = t.path("capture.wire");
    await writeWireFile(source, 20_000);
    const sock = t.path("o.sock");
    // Lossless: the queue stays full while the reader reads nothing (more frames than the socket holds),
    // so the lines end with frames in it.
    const serve = spawnAgent(["output", "serve", "--source", source, "--socket", sock, "--stats-interval", "0.1"]);
    await serve.waitForStderr("listening");
    // Paused from its connection on: a reader stopped only once it is seen connected may have read all by then.
    const reader = await connectClient(defer, sock, { paused: true });
    await serve.waitForStderr("client connected");
    const stoppedAt = statsLines(serve).length;
    await until(() => statsLines(serve).length >= stoppedAt + 3, "lines while the reader reads nothing");
    reader.socket.resume();
    await until(() => reader.frames.length === 20_000, "every frame read", 30_000);
    reader.close();
    expect(await serve.exited, serve.stderr).toBe(0);
    const lines = statsLines(serve);
    let queued = 0;
    for (const line of lines) {
      const { submitted, delivered, dropped } = line as Record<string, number>;
      expect({ line, balance: submitted - delivered - dropped }).toEqual({ line, balance: (line.queued as number) - queued });
      queued = line.queued as number;
    }
    expect(lines.filter((line) => (line.queued as number) > 0).length).toBeGreaterThanOrEqual(3);
    expect(expectAccountedLine(serve.stderr)).toMatchObject({ submitted: 20_000, delivered: 20_000, dropped: 0 });
  }, 60_000);

  test("lines closer together than the log's rate limit allows are all written: none is held back", async () => {
    const t = socketDir(defer, "aa-stats-");
    defer(() => stopAgents());
    const serve = spawnAgent(["output", "serve", "--source", makeFifo(t.path("capture.wire")), "--socket", t.path("o.sock"), "--stats-interval", "0.1"]);
    // Three times the 10 lines of one kind the limit lets through in 10 s.
    await until(() => statsLines(serve).length >= 30, "30 stats lines", 20_000);
    serve.kill("SIGTERM");
    expect(await serve.exited).toBe(0);
    expect(serve.stderr).not.toContain('"stats" lines');
  }, 60_000);

  test("0 turns it off; a bad value exits 2 naming what is allowed", async () => {
    const t = socketDir(defer, "aa-stats-");
    const source = t.path("capture.wire");
    await writeWireFile(source, 50);
    const sock = t.path("o.sock");
    const serve = spawnAgent(["output", "serve", "--source", source, "--socket", sock, "--stats-interval", "0", "--realtime", "--loop"]);
    await serve.waitForStderr("listening");
    // 50 frames paced at 20 ms: a second of streaming, five times the shortest interval tested above.
    const recv = await runAgent(["output", "recv", "--socket", sock, "--sink", t.path("out.wire"), "--count", "50"]);
    expect(recv.code, recv.stderr).toBe(0);
    serve.kill("SIGTERM");
    expect(await serve.exited).toBe(0);
    expect(serve.stderr).toContain("stopped signal=SIGTERM");
    expect(serve.stderr).not.toContain("instruments: stats");

    // A negative interval, and one so short its lines would flood the log and the audio thread.
    for (const value of ["-1", "0.001"]) {
      const bad = await runAgent(["output", "serve", "--source", source, "--socket", sock, "--stats-interval", value]);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toBe(`audio-agent: --stats-interval "${value}" is not allowed: 0 (off) or seconds 0.1..86400\n`);
    }
  }, 60_000);

  test("frames whose stamp gave no age are in the stats lines too: they add up to the stopped line's frame_stamps_unusable", async () => {
    const t = socketDir(defer, "aa-stats-");
    defer(() => stopAgents());
    const sock = t.path("i.sock");
    const server = spawnAgent(["input", "serve", "--socket", sock, "--sink", t.path("sink.wire"), "--format", "wire", "--stats-interval", "0.2"]);
    await server.waitForStderr("listening socket=");
    const now = () => BigInt(Date.now()) * 1_000_000n;
    const config = encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 }), now());
    // A peer stamping 0: three frames that give no age, then one that does.
    const frames = [0n, 0n, 0n, now()].map((stamp, i) => encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, new Uint8Array([i]), stamp));
    const client = await Bun.connect({ unix: sock, socket: { data() {}, error() {} } });
    client.write(Buffer.concat([config, ...frames, encodeMessage(INPUT_MAGIC, MessageType.Stop, new Uint8Array(0), now())]));
    await until(() => sum(statsLines(server), "frames") === 4, "4 frames in the stats lines");
    server.kill("SIGTERM");
    expect(await server.exited, server.stderr).toBe(0);
    client.end();
    const stopped = logFields(server.stderr, "input-server", "stopped");
    expect(stopped).toMatchObject({ frames: "4", frame_stamps_unusable: "3" });
    expect(sum(statsLines(server), "frame_stamps_unusable")).toBe(3);
  }, 60_000);
});

describe("the stats line's latency", () => {
  test("each line's p99 is of the samples taken in its interval alone: a slow interval does not stay in the next one's figure, and an interval without samples has none", () => {
    const readings = idleSenderReadings({ connected: true });
    const end: ChannelEnd = { tuner: new SocketTuner(undefined, () => {}), readings: () => ({ listening: undefined, config: undefined, ...readings }), observe() {} };
    const lines: Record<string, unknown>[] = [];
    const channel = new ChannelInstruments(end, { socket: "/run/x.sock", "socket-buffers": "default" }, {
      latency: new LatencyMonitor(),
      report: () => {},
      stats: (fields) => lines.push(fields),
      shown: false,
      onFrame: () => {},
    });
    // Writes whose oldest frame waited 500 ms, then 2 ms; the write calls themselves 0.25 ms.
    for (let k = 0; k < 20; k++) channel.written(1, 100, 500, 0.25);
    channel.logStats();
    for (let k = 0; k < 20; k++) channel.written(1, 100, 2, 0.25);
    channel.logStats();
    channel.logStats();
    expect(lines.map((line) => line.p99_enqueue_to_write_ms)).toEqual([500, 2, undefined]);
    expect(lines.map((line) => line.p99_write_call_ms)).toEqual([0.25, 0.25, undefined]);
  });
});

describe("thousandths", () => {
  test("rounds to three decimals and prints as at most three: the stats line's seconds and milliseconds", () => {
    expect([0, 0.0004, 0.0005, 1.23449, 1.2345, 60.0004999, 0.3, 12.0706].map(thousandths)).toEqual([0, 0, 0.001, 1.234, 1.235, 60, 0.3, 12.071]);
    // As +x.toFixed(3) printed them, never a binary tail such as 0.30000000000000004.
    for (let i = 0; i < 20_000; i++) {
      const value = i * 0.0137 + i / 7;
      expect(String(thousandths(value))).toMatch(/^\d+(\.\d{1,3})?$/);
      expect(Math.abs(thousandths(value) - value)).toBeLessThanOrEqual(0.0005 + 1e-9);
    }
  });
});

describe("the sampler", () => {
  test("runs on the frames' own wake-ups, not a timer: an agent with nothing to carry sleeps", async () => {
    const t = socketDir(defer, "aa-sampler-");
    defer(() => stopAgents());
    // Bun as the device's service runs it, so that none of its own timers wakes the process either.
    const agent = spawnAgent(["input", "serve", "--socket", t.path("in.sock"), "--sink", "/dev/null"], { env: agentEnv(DEVICE_RUNTIME_ENV) });
    await agent.waitForStderr("listening");
    await Bun.sleep(500);
    const before = wakeUps(agent.pid);
    // A timer sampling once a second would have woken it three times.
    await Bun.sleep(3200);
    expect(wakeUps(agent.pid) - before).toBeLessThanOrEqual(1);
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
  });
});

describe("the optimizer fed from a channel end's readings", () => {
  /** A sending end whose readings the test sets, and the instruments on it (threshold 3; no window or calm runs out). */
  function instrumented() {
    let readings = idleSenderReadings({ connected: true, queueCapacity: 100, dropped: { write_deadline: 0 } });
    const end: ChannelEnd = {
      tuner: new SocketTuner(undefined, () => {}),
      readings: () => ({ listening: undefined, config: undefined, ...readings }),
      observe() {},
      resizeQueue: (frames) => {
        readings = { ...readings, queueCapacity: frames };
      },
    };
    const decisions: Record<string, unknown>[] = [];
    const settings = { socket: "/run/x.sock", "socket-buffers": "default", adaptive: "on", "adaptive-threshold": 3, "adaptive-window-ms": 60_000, "adaptive-calm-ms": 3_600_000 } as const;
    const channel = new ChannelInstruments(end, settings, {
      latency: new LatencyMonitor(),
      report: (_level, message, fields) => {
        if (message.startsWith("adaptive:")) decisions.push({ message, ...fields });
      },
      stats: () => {},
      shown: false,
      onFrame: () => {},
    });
    /** Pressure since the last tick: writes that came back short, frames dropped for the deadline. */
    const pressure = (shortWrites: number, deadlineDrops: number) => {
      readings = { ...readings, shortWrites: readings.shortWrites + shortWrites, dropped: { write_deadline: readings.dropped.write_deadline! + deadlineDrops } };
    };
    return { channel, decisions, pressure, capacity: () => readings.queueCapacity };
  }

  test("what one tick finds, of one kind or both, escalates one level however many thresholds' worth it holds; the next level needs pressure at a later tick", () => {
    for (const [shortWrites, deadlineDrops, measured] of [
      [0, 500, "500 deadline drop"],
      [40, 0, "40 overflow"],
      [40, 500, "40 overflow and 500 deadline drop"],
    ] as const) {
      const { channel, decisions, pressure, capacity } = instrumented();
      // A reader that stalled: one burst of pressure, seen at one tick.
      pressure(shortWrites, deadlineDrops);
      channel.sample();
      expect(channel.optimizer!.state.level).toBe(1);
      expect(capacity()).toBe(200);
      // The line tells all that the tick found, beside the rule.
      expect(decisions.map((d) => [d.message, d.adaptive_level, d.queue_frames, d.why])).toEqual([
        ["adaptive: escalate", 1, 200, `${measured} events within 60000 ms (rule: 3)`],
      ]);
      // Nothing new: nothing more.
      channel.sample();
      expect(channel.optimizer!.state.level).toBe(1);
      // More at a later tick: the next level.
      pressure(shortWrites, deadlineDrops);
      channel.sample();
      expect(channel.optimizer!.state.level).toBe(2);
      expect(capacity()).toBe(400);
      expect(decisions.length).toBe(2);
    }
  });
});

describe("the sampler's period", () => {
  const adaptive = (on: "on" | "off" | undefined, windowMs: number, calmMs: number) => ({ adaptive: on, "adaptive-window-ms": windowMs, "adaptive-calm-ms": calmMs });

  test("a second, or an optimizer's shorter window or calm period; where no optimizer runs (--adaptive off, a receiver) its settings do not count", () => {
    expect(samplePeriodMs([adaptive("on", 5_000, 30_000)])).toBe(1000);
    expect(samplePeriodMs([adaptive("on", 200, 300)])).toBe(200);
    expect(samplePeriodMs([adaptive("off", 200, 300)])).toBe(1000);
    expect(samplePeriodMs([adaptive(undefined, 200, 300)])).toBe(1000);
    // serve: the channel whose optimizer runs sets it.
    expect(samplePeriodMs([adaptive("off", 100, 100), adaptive("on", 5_000, 400)])).toBe(400);
  });
});
