import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { LatencyMonitor } from "../../src/observe/latency-monitor.ts";
import { AgentMetrics } from "../../src/observe/metrics.ts";
import { encodeConfigPayload, encodeMessage, INPUT_MAGIC, MessageType, OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import { logFields } from "../support/agent-log.ts";
import { sameBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { families, healthz, metricsUrl, promtoolCheck, samples, scrape, scrapeUntil, value } from "../support/metrics.ts";
import { startOutputServer } from "../support/output-server.ts";
import { testPayload } from "../support/payloads.ts";
import { connectClient } from "../support/peer.ts";
import { kernelBufferBytes, listeners } from "../support/proc.ts";
import { idleSenderReadings } from "../support/readings.ts";
import { spawnAgent, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { parseWire, wireBytes } from "../support/wire.ts";

const defer = useCleanup();

function setup() {
  const t = socketDir(defer, "aam-");
  defer(() => stopAgents());
  return t;
}

/** Live sources on stdin, made loss-free for the counts to be exact: room for everything, no deadline or latency budget, no stuck check. */
const LOSSLESS_LIVE = ["--source", "-", "--queue-frames", "5000", "--write-deadline-ms", "0", "--max-latency-ms", "60000", "--stuck-frames", "100000"];
/** A burst overflows the socket buffer now and then: keep the optimizer on but out of reach, so sizes stay as set. */
const NO_ESCALATION = ["--adaptive-threshold", "100000"];

function waitConnected(base: string): Promise<void> {
  return until(async () => (await healthz(base)).connected === true, `${base} to connect`, 20000, 10);
}

async function expectPromtoolClean(text: string): Promise<void> {
  const { code, output } = await promtoolCheck(text);
  expect(output).toBe("");
  expect(code).toBe(0);
}

const LATENCY_PERCENTILES = ["p50", "p95", "p99", "max", "avg"];

/** The latency figures of `source`, by percentile label (p50, p95, p99, max, avg). */
function percentiles(text: string, source: string): Record<string, number> {
  return Object.fromEntries(
    LATENCY_PERCENTILES.map((percentile) => [percentile, value(text, "jetkvm_audio_latency_percentile_seconds", { source, percentile })]),
  );
}

/** Percentiles of real measurements: each label holds its own figure (ordered), none is empty or absurd. */
function expectPercentiles(text: string, source: string): Record<string, number> {
  const p = percentiles(text, source);
  expect(p.p50).toBeGreaterThan(0);
  expect(p.p95).toBeGreaterThanOrEqual(p.p50);
  expect(p.p99).toBeGreaterThanOrEqual(p.p95);
  expect(p.max).toBeGreaterThanOrEqual(p.p99);
  expect(p.max).toBeLessThan(60);
  expect(p.avg).toBeGreaterThan(0);
  return p;
}

/** A histogram of real measurements: cumulative buckets ending at the count, a positive sum; returns count and sum. */
function expectHistogram(text: string, name: string): { count: number; sum: number } {
  expect(families(text).get(name)).toBe("histogram");
  const count = value(text, `${name}_count`);
  const buckets = samples(text, `${name}_bucket`).map((b) => b.value);
  expect(buckets.every((n, k) => k === 0 || n >= buckets[k - 1]!)).toBe(true);
  expect(value(text, `${name}_bucket`, { le: "+Inf" })).toBe(count);
  const sum = value(text, `${name}_sum`);
  if (count > 0) expect(sum).toBeGreaterThan(0);
  return { count, sum };
}

const overflowTotal = (text: string, component: string, buffer_type: string) =>
  value(text, "jetkvm_audio_socket_buffer_overflow_total", { component, buffer_type });
const utilization = (text: string, component: string, buffer_type: string) =>
  value(text, "jetkvm_audio_socket_buffer_utilization_percent", { component, buffer_type });

/** Both buffers sampled, and the last sample found nothing left unread either way. */
function drained(text: string, component: string): boolean {
  return (
    samples(text, "jetkvm_audio_socket_buffer_utilization_percent", { component }).length === 2 &&
    utilization(text, component, "send") === 0 &&
    utilization(text, component, "receive") === 0
  );
}

/** An output server with small socket buffers and a client that reads nothing, accepted. */
async function serverWithPausedReader() {
  const { path, server } = await startOutputServer(defer, {
    queueFrames: 1000,
    writeDeadlineMs: 0,
    stuckFrames: 100_000,
    socketBuffers: { sendBytes: 8192, receiveBytes: 16384 },
  });
  const reader = await connectClient(defer, path, { paused: true });
  await until(() => server.connected, "client accepted");
  return { server, reader };
}

/** The latency histogram families of a scrape (audio_agent_<source>_seconds), by source, sorted. */
const latencyHistograms = (text: string) =>
  [...families(text)].flatMap(([name, type]) => (type === "histogram" ? (/^audio_agent_(\w+)_seconds$/.exec(name)?.[1] ?? []) : [])).sort();

describe("metrics read exactly what the channel end counts", () => {
  test("a paused reader: overflows are the writes that came back short, utilization and sizes are the kernel's; percentiles are the monitor's", async () => {
    const { server, reader } = await serverWithPausedReader();
    // A burst larger than the kernel takes: the write comes back short and the writer waits.
    let next = 0;
    const burst = async () => {
      for (let k = 0; k < 8; k++) server.sendFrame(testPayload(next++));
      await new Promise((resolve) => setImmediate(resolve));
    };
    while (server.stats.shortWrites === 0) {
      await burst();
      if (next > 100_000) throw new Error("the socket never filled");
    }
    server.tuner.sample();

    const latency = new LatencyMonitor({ alpha: 1 });
    // 1/1024 .. 100/1024 s: binary fractions, so every figure below is exact.
    for (let k = 1; k <= 100; k++) latency.record("enqueue_to_write", k / 1024);
    const metrics = new AgentMetrics([{ read: () => server.readings(), latency }]);
    const text = await metrics.text();
    const r = server.readings();

    const send = { component: "audio-output", buffer_type: "send" };
    const receive = { component: "audio-output", buffer_type: "receive" };
    expect(r.shortWrites).toBeGreaterThan(0);
    expect(value(text, "jetkvm_audio_socket_buffer_overflow_total", send)).toBe(r.shortWrites);
    expect(value(text, "jetkvm_audio_socket_buffer_overflow_total", receive)).toBe(0);
    expect(value(text, "jetkvm_audio_socket_buffer_size_bytes", send)).toBe(kernelBufferBytes(8192, "send"));
    expect(value(text, "jetkvm_audio_socket_buffer_size_bytes", receive)).toBe(kernelBufferBytes(16384, "receive"));
    // What the paused reader left unread, as a share of the kernel's send buffer; nothing comes the other way.
    expect(r.socketBuffers.sendQueueBytes).toBeGreaterThan(0);
    const sendUtilization = Math.min(100, (r.socketBuffers.sendQueueBytes / kernelBufferBytes(8192, "send")) * 100);
    expect(value(text, "jetkvm_audio_socket_buffer_utilization_percent", send)).toBe(sendUtilization);
    expect(value(text, "jetkvm_audio_socket_buffer_utilization_percent", receive)).toBe(0);
    expect(value(text, "jetkvm_audio_frames_sent_total")).toBe(r.frames);
    expect(value(text, "audio_agent_queue_depth_frames")).toBe(r.queueDepth);
    expect(r.queueDepth).toBeGreaterThan(0);

    const percentile = (p: string) => value(text, "jetkvm_audio_latency_percentile_seconds", { source: "enqueue_to_write", percentile: p });
    expect(percentile("p50")).toBe(50 / 1024);
    expect(percentile("p95")).toBe(95 / 1024);
    expect(percentile("p99")).toBe(99 / 1024);
    expect(percentile("max")).toBe(100 / 1024);
    expect(percentile("avg")).toBe(100 / 1024); // alpha 1: the last sample
    expect(value(text, "audio_agent_latency_jitter_seconds", { source: "enqueue_to_write" })).toBe(1 / 1024);

    // The reader reads again; bursts still come back short now and then. A later scrape adds only
    // what is new: the counter is still exactly the channel's count.
    reader.socket.resume();
    const before = r.shortWrites;
    while (server.stats.shortWrites < before + 2) {
      await burst();
      if (next > 100_000) throw new Error("no further short writes");
    }
    await until(() => server.idle, "everything written");
    const again = await metrics.text();
    expect(value(again, "jetkvm_audio_socket_buffer_overflow_total", send)).toBe(server.readings().shortWrites);
    expect(value(again, "jetkvm_audio_frames_sent_total")).toBe(next);
  });
});

describe("socket buffer gauges", () => {
  test("no series before the first connection (a size of 0 would be a lie), the kernel's sizes once a client is accepted", async () => {
    const { path, server } = await startOutputServer(defer, { socketBuffers: { sendBytes: 8192, receiveBytes: 16384 } });
    const metrics = new AgentMetrics([{ read: () => server.readings(), latency: new LatencyMonitor() }]);
    const before = await metrics.text();
    expect(server.readings().socketBuffers.kernel.sendBytes).toBe(0);
    for (const name of ["jetkvm_audio_socket_buffer_size_bytes", "jetkvm_audio_socket_buffer_utilization_percent"]) {
      expect(families(before).get(name)).toBe("gauge");
      expect(samples(before, name)).toEqual([]);
    }

    await connectClient(defer, path);
    await until(() => server.connected, "client accepted");
    const after = await metrics.text();
    const size = (buffer_type: string) => value(after, "jetkvm_audio_socket_buffer_size_bytes", { component: "audio-output", buffer_type });
    expect(size("send")).toBe(kernelBufferBytes(8192, "send"));
    expect(size("receive")).toBe(kernelBufferBytes(16384, "receive"));
    expect(samples(after, "jetkvm_audio_socket_buffer_utilization_percent", { component: "audio-output" }).length).toBe(2);
  });
});

describe("the sink file gauge", () => {
  test("1 while a receiver's recording is at its path, 0 once it is not; no series for a sink that is no file", async () => {
    let readings = idleSenderReadings({ direction: "receive", sinkFile: "in_place" });
    const metrics = new AgentMetrics([{ read: () => readings, latency: new LatencyMonitor() }]);
    const gauge = async () => samples(await metrics.registry.metrics(), "audio_agent_sink_file_in_place").map((s) => s.value);
    expect(await gauge()).toEqual([1]);
    readings = { ...readings, sinkFile: "moved" };
    expect(await gauge()).toEqual([0]);
    readings = { ...readings, sinkFile: undefined };
    expect(await gauge()).toEqual([]);
  });
});

describe("metrics over HTTP from real roles", () => {
  test("output serve -> output recv: counters match the frames and bytes that flowed; promtool is happy", async () => {
    const { path } = setup();
    const sock = path("out.sock");
    const started = Date.now() / 1000;
    const server = spawnAgent(
      ["output", "serve", "--socket", sock, ...LOSSLESS_LIVE, ...NO_ESCALATION, "--metrics", "0", "--socket-buffers", "65536"],
      { stdin: "pipe" },
    );
    const serverUrl = await metricsUrl(server);
    const client = spawnAgent([
      "output", "recv", "--socket", sock, "--sink", path("recv.wire"), "--metrics", "127.0.0.1:0", "--socket-buffers", "48k",
    ]);
    const clientUrl = await metricsUrl(client);
    await waitConnected(serverUrl);
    await waitConnected(clientUrl);

    const N = 2000;
    const bytes = wireBytes(0, N, testPayload, OUTPUT_MAGIC);
    await server.writeStdin(bytes);
    // Utilization is sampled once a second while connected: once everything is read, a sample
    // finds both kernel buffers empty at both ends (a wrong reading never settles at 0).
    const received = await scrapeUntil(
      clientUrl,
      (t) => value(t, "jetkvm_audio_frames_received_total") === N && drained(t, "audio-output"),
      "all frames received, buffers empty",
    );
    const sent = await scrapeUntil(serverUrl, (t) => drained(t, "audio-output"), "server buffers empty");

    // What flowed: frames and bytes (headers included) agree on both ends and with what the test wrote.
    expect(value(sent, "jetkvm_audio_frames_sent_total")).toBe(N);
    expect(value(sent, "jetkvm_audio_bytes_processed_total")).toBe(bytes.length);
    expect(value(received, "jetkvm_audio_frames_received_total")).toBe(N);
    expect(value(received, "jetkvm_audio_bytes_processed_total")).toBe(bytes.length);
    for (const text of [sent, received]) {
      expect(value(text, "jetkvm_audio_frames_dropped_total")).toBe(0);
      expect(value(text, "jetkvm_audio_connection_drops_total")).toBe(0);
      expect(value(text, "audio_agent_reconnects_total")).toBe(0);
      expect(value(text, "audio_agent_connected")).toBe(1);
      const last = value(text, "jetkvm_audio_last_frame_timestamp_seconds");
      expect(last).toBeGreaterThanOrEqual(started - 1);
      expect(last).toBeLessThanOrEqual(Date.now() / 1000 + 1);
      expect(value(text, "process_resident_memory_bytes")).toBeGreaterThan(1 << 20);
      // The process metrics README names (CPU, RSS, open fds, event loop lag), each once.
      for (const name of ["process_cpu_seconds_total", "process_start_time_seconds", "process_open_fds", "process_max_fds", "nodejs_eventloop_lag_seconds"]) {
        expect([name, samples(text, name).length]).toEqual([name, 1]);
      }
      for (const p of ["p50", "p90", "p99"]) expect([p, samples(text, `nodejs_eventloop_lag_${p}_seconds`).length]).toEqual([p, 1]);
    }
    // A server says whether it listens; a client has nothing to say.
    expect(value(sent, "audio_agent_listening")).toBe(1);
    expect(samples(received, "audio_agent_listening")).toEqual([]);
    // The sender's optimizer has made no adjustment; the receiver has none.
    expect(value(sent, "jetkvm_adaptive_buffer_adjustments_total")).toBe(0);
    expect(families(received).has("jetkvm_adaptive_buffer_adjustments_total")).toBe(false);
    // A stream socket's receive buffer never overflows.
    for (const text of [sent, received]) expect(overflowTotal(text, "audio-output", "receive")).toBe(0);
    // The client never writes on the output channel; the server's count is checked against its final line below.
    expect(overflowTotal(received, "audio-output", "send")).toBe(0);
    // Linux doubles the requested SO_SNDBUF / SO_RCVBUF.
    for (const [text, requested] of [
      [sent, 65536],
      [received, 48 * 1024],
    ] as const) {
      expect(value(text, "jetkvm_audio_socket_buffer_size_bytes", { component: "audio-output", buffer_type: "send" })).toBe(
        kernelBufferBytes(requested, "send"),
      );
      expect(value(text, "jetkvm_audio_socket_buffer_size_bytes", { component: "audio-output", buffer_type: "receive" })).toBe(
        kernelBufferBytes(requested, "receive"),
      );
    }
    expect(value(sent, "jetkvm_adaptive_output_buffer_size_bytes")).toBe(65536);
    // The sender's queue and drop reasons: every reason shown, all zero.
    expect(value(sent, "audio_agent_queue_depth_frames")).toBe(0);
    expect(value(sent, "audio_agent_queue_capacity_frames")).toBe(5000);
    const reasons = samples(sent, "audio_agent_frames_dropped_by_reason_total", { channel: "output" });
    expect(reasons.map((s) => s.labels.reason).sort()).toEqual(
      ["client_gone", "client_stuck", "latency_budget", "no_client", "queue_full", "shutdown", "write_deadline"],
    );
    expect(reasons.every((s) => s.value === 0)).toBe(true);
    // Histograms and latency percentiles: the sender times its writes, the receiver frame ages.
    const waited = expectHistogram(sent, "audio_agent_enqueue_to_write_seconds");
    expect(waited.count).toBeGreaterThan(0);
    expect(waited.count).toBeLessThanOrEqual(N);
    // One sample of each per write; a frame waits at least as long as the write call that sends it.
    const calls = expectHistogram(sent, "audio_agent_write_call_seconds");
    expect(calls.count).toBe(waited.count);
    expect(calls.sum).toBeLessThanOrEqual(waited.sum);
    const reads = expectHistogram(received, "audio_agent_frame_age_seconds");
    expect(reads.count).toBeGreaterThan(0);
    expect(reads.count).toBeLessThanOrEqual(N);
    const wait = expectPercentiles(sent, "enqueue_to_write");
    const call = expectPercentiles(sent, "write_call");
    for (const p of LATENCY_PERCENTILES) expect(call[p]).toBeLessThanOrEqual(wait[p]!);
    expectPercentiles(received, "frame_age");
    // Only what an end records has a histogram: none that would stay empty.
    expect(latencyHistograms(sent)).toEqual(["enqueue_to_write", "write_call"]);
    expect(latencyHistograms(received)).toEqual(["frame_age"]);

    await expectPromtoolClean(sent);
    await expectPromtoolClean(received);

    const sentHealth = await healthz(serverUrl);
    expect(sentHealth).toMatchObject({ role: "output serve", channel: "output", connected: true, frames: N, drops: 0, connection_drops: 0 });
    expect(typeof sentHealth.uptime_seconds).toBe("number");
    expect(sentHealth.uptime_seconds as number).toBeGreaterThan(0);
    const receivedHealth = await healthz(clientUrl);
    expect(receivedHealth).toMatchObject({ role: "output recv", channel: "output", connected: true, frames: N, drops: 0 });
    expect(receivedHealth.uptime_seconds as number).toBeGreaterThan(0);

    // The client leaves: the server counts one connection drop, and the sink holds exactly what was sent.
    client.kill("SIGTERM");
    expect(await client.exited).toBe(0);
    // The server stamps frames when it sends them: same payloads and sizes, fresh timestamps.
    const recorded = new Uint8Array(readFileSync(path("recv.wire")));
    expect(recorded.length).toBe(bytes.length);
    const wire = parseWire(recorded, OUTPUT_MAGIC);
    expect(wire.error).toBeUndefined();
    expect(wire.messages.length).toBe(N);
    expect(wire.messages.every((m, i) => m.type === MessageType.OpusFrame && sameBytes(m.payload, testPayload(i)))).toBe(true);
    const after = await scrapeUntil(serverUrl, (t) => value(t, "jetkvm_audio_connection_drops_total") === 1, "connection drop");
    expect(await healthz(serverUrl)).toMatchObject({ connected: false, connects: 1, connection_drops: 1 });
    expect(value(after, "audio_agent_connected")).toBe(0);
    server.endStdin();
    expect(await server.exited).toBe(0);
    // Nothing was written after the last scrape: the overflow counter is exactly the writes that came back short.
    const stopped = logFields(server.stderr, "output-server", "stopped");
    expect(overflowTotal(after, "audio-output", "send")).toBe(Number(stopped.short_writes));
    expect(Number(stopped.write_calls)).toBeGreaterThanOrEqual(calls.count);
  });

  test("input send -> input serve: jetkvm_microphone_* counters match; heartbeat RTT observed; promtool is happy", async () => {
    const { path } = setup();
    const sock = path("in.sock");
    const server = spawnAgent([
      "input", "serve", "--socket", sock, "--sink", path("in.wire"), "--metrics", "0", "--socket-buffers", "98304",
    ]);
    const serverUrl = await metricsUrl(server);
    const client = spawnAgent(
      // No Heartbeat during the test: the byte counts are then frames (+ the Config at the server).
      ["input", "send", "--socket", sock, ...LOSSLESS_LIVE, ...NO_ESCALATION, "--heartbeat-ms", "60000", "--metrics", "0", "--socket-buffers", "high-load"],
      { stdin: "pipe" },
    );
    const clientUrl = await metricsUrl(client);
    await waitConnected(serverUrl);
    await waitConnected(clientUrl);

    const N = 1500;
    const bytes = wireBytes(0, N, testPayload, INPUT_MAGIC);
    await client.writeStdin(bytes);
    const received = await scrapeUntil(
      serverUrl,
      (t) => value(t, "jetkvm_microphone_frames_received_total") === N && drained(t, "audio-input"),
      "frames received, buffers empty",
    );
    // The Config's Ack has come back by now: one round trip.
    const sent = await scrapeUntil(
      clientUrl,
      (t) => value(t, "audio_agent_heartbeat_rtt_seconds_count") === 1 && drained(t, "audio-input"),
      "config round trip, buffers empty",
    );

    expect(value(sent, "jetkvm_microphone_frames_sent_total")).toBe(N);
    // The sender's accounting, as its bytes: the Config each connection opens with is the client's own, not submitted.
    expect(value(sent, "audio_agent_frames_submitted_total", { channel: "input" })).toBe(N);
    expect(value(sent, "audio_agent_frames_delivered_total", { channel: "input" })).toBe(N);
    expect(families(received).has("audio_agent_frames_submitted_total")).toBe(false);
    expect(value(sent, "jetkvm_microphone_bytes_processed_total")).toBe(bytes.length);
    expect(value(received, "jetkvm_microphone_frames_received_total")).toBe(N);
    // The server counts every byte it read: the frames and the 29-byte Config.
    expect(value(received, "jetkvm_microphone_bytes_processed_total")).toBe(bytes.length + 29);
    expect(families(sent).has("jetkvm_audio_frames_sent_total")).toBe(false);
    for (const text of [sent, received]) {
      expect(value(text, "jetkvm_microphone_frames_dropped_total")).toBe(0);
      expect(value(text, "jetkvm_microphone_connection_drops_total")).toBe(0);
      expect(value(text, "jetkvm_microphone_last_frame_timestamp_seconds")).toBeGreaterThan(1.7e9);
      expect(value(text, "audio_agent_protocol_errors_total")).toBe(0);
      expect(value(text, "audio_agent_reconnects_total")).toBe(0);
      expect(value(text, "process_resident_memory_bytes")).toBeGreaterThan(1 << 20);
      expect(overflowTotal(text, "audio-input", "receive")).toBe(0);
    }
    // The server writes one Ack, into an empty buffer; the client's count is checked against its final line below.
    expect(overflowTotal(received, "audio-input", "send")).toBe(0);
    expect(value(received, "jetkvm_audio_socket_buffer_size_bytes", { component: "audio-input", buffer_type: "receive" })).toBe(
      kernelBufferBytes(98304, "receive"),
    );
    expect(value(sent, "jetkvm_audio_socket_buffer_size_bytes", { component: "audio-input", buffer_type: "send" })).toBe(
      kernelBufferBytes(256 * 1024, "send"),
    );
    expect(value(sent, "jetkvm_adaptive_input_buffer_size_bytes")).toBe(256 * 1024);
    expect(value(sent, "audio_agent_queue_capacity_frames")).toBe(5000);
    expect(value(sent, "audio_agent_queue_depth_frames")).toBe(0);
    // One round trip: its histogram sample and its percentiles are the same figure.
    const rtt = expectHistogram(sent, "audio_agent_heartbeat_rtt_seconds");
    expect(rtt.count).toBe(1);
    const trip = expectPercentiles(sent, "heartbeat_rtt");
    for (const p of LATENCY_PERCENTILES) expect(trip[p]).toBe(rtt.sum);
    expect(expectHistogram(received, "audio_agent_frame_age_seconds").count).toBe(N);
    expectPercentiles(received, "frame_age");
    // Only what an end records has a histogram: the input server's Acks are not timed.
    expect(latencyHistograms(sent)).toEqual(["enqueue_to_write", "heartbeat_rtt", "write_call"]);
    expect(latencyHistograms(received)).toEqual(["frame_age"]);

    await expectPromtoolClean(sent);
    await expectPromtoolClean(received);

    expect(await healthz(serverUrl)).toMatchObject({ role: "input serve", channel: "input", connected: true, frames: N, drops: 0 });
    const sendHealth = await healthz(clientUrl);
    expect(sendHealth).toMatchObject({ role: "input send", channel: "input", connected: true, frames: N, drops: 0, acks: 1 });
    expect(sendHealth.uptime_seconds as number).toBeGreaterThan(0);

    client.endStdin();
    expect(await client.exited).toBe(0);
    // After the last scrape only the Stop went out, into an empty buffer.
    expect(overflowTotal(sent, "audio-input", "send")).toBe(Number(logFields(client.stderr, "input-client", "stopped").short_writes));
    const ended = await scrapeUntil(serverUrl, (t) => value(t, "audio_agent_connected") === 0, "session end");
    expect(value(ended, "jetkvm_microphone_frames_received_total")).toBe(N);
    // Each count an end keeps of its own is a counter under the name /healthz and the log give it.
    const endHealth = await healthz(serverUrl);
    for (const key of ["sessions", "clean_sessions", "heartbeats", "acks_sent", "acks_dropped", "frame_stamps_unusable"]) {
      expect(value(ended, `audio_agent_${key}_total`, { channel: "input" }), key).toBe(endHealth[key] as number);
    }
    expect(endHealth).toMatchObject({ sessions: 1, clean_sessions: 1, acks_sent: 1 });
    for (const key of ["acks", "ack_timeouts", "other_messages", "connect_resets"]) {
      expect(value(sent, `audio_agent_${key}_total`, { channel: "input" }), key).toBe(sendHealth[key] as number);
    }
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
  });

  test("where no optimizer runs (a receiver, --adaptive off) none of its families is exported, the socket buffers applied are; serve has the output channel's alone", async () => {
    const { path } = setup();
    /** The optimizer's families, as README's Metrics names them. */
    const OPTIMIZER = [
      "audio_agent_adaptive_level",
      "audio_agent_adaptive_queue_frames",
      "audio_agent_adaptive_decisions_total",
      "jetkvm_adaptive_buffer_adjustments_total",
      "jetkvm_adaptive_output_buffer_size_bytes",
      "jetkvm_adaptive_input_buffer_size_bytes",
    ];
    const optimizerFamilies = (text: string) => OPTIMIZER.filter((name) => families(text).has(name));
    const [out, inp] = [path("out.sock"), path("in.sock")];
    const outputServe = spawnAgent(["output", "serve", "--socket", out, "--source", "-", "--adaptive", "off", "--socket-buffers", "65536", "--metrics", "0"], { stdin: "pipe" });
    const outputRecv = spawnAgent(["output", "recv", "--socket", out, "--sink", path("out.wire"), "--socket-buffers", "high-load", "--metrics", "0"]);
    const inputServe = spawnAgent(["input", "serve", "--socket", inp, "--sink", path("in.wire"), "--socket-buffers", "48k", "--metrics", "0"]);
    const inputSend = spawnAgent(["input", "send", "--socket", inp, "--source", "-", ...NO_ESCALATION, "--metrics", "0"], { stdin: "pipe" });
    const serve = spawnAgent(
      ["serve", "--output-socket", path("so.sock"), "--output-source", "-", "--input-socket", path("si.sock"), "--input-sink", path("si.wire"), "--metrics", "0"],
      { stdin: "pipe" },
    );
    // The receivers connected: their socket buffers, as the kernel holds them, are there under their own name.
    const [outputRecvUrl, inputServeUrl] = [await metricsUrl(outputRecv), await metricsUrl(inputServe)];
    await waitConnected(outputRecvUrl);
    await waitConnected(inputServeUrl);
    const [recvText, inServeText] = [await scrape(outputRecvUrl), await scrape(inputServeUrl)];
    expect(value(recvText, "jetkvm_audio_socket_buffer_size_bytes", { component: "audio-output", buffer_type: "receive" })).toBe(kernelBufferBytes(256 * 1024, "receive"));
    expect(value(inServeText, "jetkvm_audio_socket_buffer_size_bytes", { component: "audio-input", buffer_type: "receive" })).toBe(kernelBufferBytes(48 * 1024, "receive"));
    for (const [role, text] of [
      ["output recv", recvText],
      ["input serve", inServeText],
      ["output serve --adaptive off", await scrape(await metricsUrl(outputServe))],
    ]) {
      expect({ role, exported: optimizerFamilies(text) }).toEqual({ role, exported: [] });
    }
    // A sender with its optimizer: every family, at level 0 with the sizes set.
    const sendText = await scrape(await metricsUrl(inputSend));
    expect(optimizerFamilies(sendText)).toEqual(OPTIMIZER.filter((name) => name !== "jetkvm_adaptive_output_buffer_size_bytes"));
    expect(value(sendText, "audio_agent_adaptive_level")).toBe(0);
    expect(value(sendText, "jetkvm_adaptive_input_buffer_size_bytes")).toBe(128 * 1024);
    // serve: the output channel's optimizer, labelled by channel; the input channel has no series of any.
    const serveText = await scrape(await metricsUrl(serve));
    expect(optimizerFamilies(serveText)).toEqual(OPTIMIZER.filter((name) => name !== "jetkvm_adaptive_input_buffer_size_bytes"));
    for (const name of OPTIMIZER.filter((name) => name.startsWith("audio_agent_") || name.includes("adjustments"))) {
      expect({ name, channels: [...new Set(samples(serveText, name).map((s) => s.labels.channel))] }).toEqual({ name, channels: ["output"] });
    }
    expect(value(serveText, "audio_agent_adaptive_queue_frames", { channel: "output" })).toBe(500);
    for (const agent of [outputServe, outputRecv, inputServe, inputSend, serve]) agent.kill("SIGTERM");
    for (const agent of [outputServe, outputRecv, inputServe, inputSend, serve]) expect(await agent.exited).toBe(0);
  });

  test("--realtime with no client: dropped-by-reason no_client equals the count the server logs; metrics bind loopback", async () => {
    const { path } = setup();
    const sock = path("out.sock");
    const server = spawnAgent(["output", "serve", "--socket", sock, "--source", "-", "--realtime", "--metrics", "0"], { stdin: "pipe" });
    const base = await metricsUrl(server);
    // Only a port was given: loopback, in the URL and in the kernel's table of listening sockets.
    const url = new URL(base);
    expect(url.hostname).toBe("127.0.0.1");
    expect(listeners(Number(url.port))[0]).toBe("0100007F"); // 127.0.0.1

    const N = 120;
    // 1 ms apart on the source timeline: --realtime paces them over ~0.1 s.
    await server.writeStdin(wireBytes(0, N, (i) => testPayload(i, 200), OUTPUT_MAGIC, 1));
    const text = await scrapeUntil(
      base,
      (t) => value(t, "audio_agent_frames_dropped_by_reason_total", { channel: "output", reason: "no_client" }) === N,
      "no_client drops",
    );
    expect(value(text, "jetkvm_audio_frames_dropped_total")).toBe(N);
    expect(value(text, "jetkvm_audio_frames_sent_total")).toBe(0);
    // submitted = delivered + dropped, from /metrics alone.
    expect(value(text, "audio_agent_frames_submitted_total", { channel: "output" })).toBe(N);
    expect(value(text, "audio_agent_frames_delivered_total", { channel: "output" })).toBe(0);
    expect(value(text, "jetkvm_audio_bytes_processed_total")).toBe(0);
    expect(value(text, "audio_agent_connected")).toBe(0);
    expect(value(text, "jetkvm_audio_last_frame_timestamp_seconds")).toBe(0);
    for (const reason of ["queue_full", "write_deadline", "client_stuck", "client_gone", "shutdown"]) {
      expect(value(text, "audio_agent_frames_dropped_by_reason_total", { channel: "output", reason })).toBe(0);
    }
    await expectPromtoolClean(text);
    expect(await healthz(base)).toMatchObject({ role: "output serve", connected: false, frames: 0, drops: N });

    server.endStdin();
    expect(await server.exited).toBe(0);
    const stopped = logFields(server.stderr, "output-server", "stopped");
    expect(Number(stopped.dropped_no_client)).toBe(N);
    expect(Number(stopped.dropped)).toBe(N);
    expect(Number(stopped.delivered)).toBe(0);
  });

  test("frames stamped 1.5 s and 120 ms ago: the frame age histogram holds them in seconds, and each counts as a latency warning, though the log tells of one per 10 s", async () => {
    const { path } = setup();
    const sock = path("in.sock");
    const server = spawnAgent(["input", "serve", "--socket", sock, "--sink", path("in.wire"), "--metrics", "0"]);
    const base = await metricsUrl(server);
    await server.waitForStderr("listening socket=");
    const stamp = (behindMs: number) => (BigInt(Date.now()) - BigInt(behindMs)) * 1_000_000n;
    const config = encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 }), stamp(0));
    // Five frames 1.5 s old (above the 200 ms maximum), then five 120 ms old (above the 50 ms target only).
    const frames = [1500, 1500, 1500, 1500, 1500, 120, 120, 120, 120, 120].map((behind, i) =>
      encodeMessage(INPUT_MAGIC, MessageType.OpusFrame, new Uint8Array([0xfc, i]), stamp(behind)),
    );
    const client = await Bun.connect({ unix: sock, socket: { data() {}, error() {} } });
    defer(() => client.end());
    client.write(Buffer.concat([config, ...frames]));
    const text = await scrapeUntil(base, (t) => value(t, "jetkvm_microphone_frames_received_total") === 10, "10 frames received");
    expect(value(text, "audio_agent_frame_age_seconds_count")).toBe(10);
    // In seconds: the 120 ms ones above 0.1 and (with room for a slow machine) below 0.5, the others above 1
    // (the test's clock and the agent's may read a millisecond apart).
    expect(value(text, "audio_agent_frame_age_seconds_bucket", { le: "0.1" })).toBe(0);
    expect(value(text, "audio_agent_frame_age_seconds_bucket", { le: "0.5" })).toBe(5);
    expect(value(text, "audio_agent_frame_age_seconds_bucket", { le: "1" })).toBe(5);
    expect(value(text, "audio_agent_frame_age_seconds_sum")).toBeGreaterThan(5 * 1.5 + 5 * 0.12 - 0.01);
    expect(value(text, "audio_agent_frame_age_seconds_sum")).toBeLessThan(10);
    // The log's rate limit holds back all but the first of each level...
    await server.waitForStderr("latency above maximum");
    await server.waitForStderr("latency above target");
    expect(server.stderr.split("\n").filter((l) => l.includes("latency above")).length).toBe(2);
    // ...the counter, by its own help, is not rate limited.
    expect(value(text, "audio_agent_latency_warnings_total", { source: "frame_age", level: "max" })).toBe(5);
    expect(value(text, "audio_agent_latency_warnings_total", { source: "frame_age", level: "target" })).toBe(5);
  });

  test("/healthz and /metrics only: other paths are 404", async () => {
    const { path } = setup();
    const server = spawnAgent(["input", "serve", "--socket", path("in.sock"), "--sink", path("in.wire"), "--metrics", ":0"]);
    const base = await metricsUrl(server);
    expect(new URL(base).hostname).toBe("127.0.0.1");
    const response = await fetch(`${base}/nope`);
    expect(response.status).toBe(404);
    await response.text();
    const metrics = await fetch(`${base}/metrics`);
    expect(metrics.headers.get("content-type")).toStartWith("text/plain");
    const text = await metrics.text();
    expect(value(text, "jetkvm_microphone_frames_received_total")).toBe(0);
    const health = await healthz(base);
    expect(health).toMatchObject({ role: "input serve", channel: "input", listening: true, connected: false, frames: 0, drops: 0 });
    expect(value(text, "audio_agent_listening")).toBe(1);
    expect(Object.keys(health)).toEqual(expect.arrayContaining(["role", "channel", "connected", "frames", "drops", "uptime_seconds"]));
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    await until(() => server.hasExited, "exit");
  });
});

describe("socket buffer gauges once the peer has gone", () => {
  test("a reader that left its buffer full and then disconnected: no connection, so the utilization is not the dead socket's last sample", async () => {
    const { server, reader } = await serverWithPausedReader();
    let next = 0;
    while (server.stats.shortWrites === 0) {
      for (let k = 0; k < 8; k++) server.sendFrame(testPayload(next++));
      await new Promise((resolve) => setImmediate(resolve));
      if (next > 100_000) throw new Error("the socket never filled");
    }
    const metrics = new AgentMetrics([{ read: () => server.readings(), sampleQueues: () => server.tuner.sample(), latency: new LatencyMonitor() }]);
    const send = { component: "audio-output", buffer_type: "send" };
    const full = await metrics.text();
    expect(value(full, "jetkvm_audio_socket_buffer_utilization_percent", send)).toBeGreaterThan(0);

    // The reader leaves: nothing is queued in any socket of this channel any more.
    reader.socket.end();
    await until(() => !server.connected, "client gone");
    const gone = await metrics.text();
    expect(value(gone, "audio_agent_connected")).toBe(0);
    const left = samples(gone, "jetkvm_audio_socket_buffer_utilization_percent", send);
    // Either no series (as before the first connection) or an empty buffer: never the dead socket's figure.
    expect(left.map((s) => s.value)).toEqual(left.map(() => 0));
  });
});
