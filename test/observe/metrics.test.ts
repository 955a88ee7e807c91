import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { INPUT_MAGIC, MessageType, OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import { logFields } from "../support/agent-log.ts";
import { sameBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { families, healthz, metricsUrl, promtoolCheck, samples, scrapeUntil, value } from "../support/metrics.ts";
import { testPayload } from "../support/payloads.ts";
import { kernelBufferBytes, listeners } from "../support/proc.ts";
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

function expectPercentiles(text: string, source: string): void {
  for (const percentile of LATENCY_PERCENTILES) {
    const v = value(text, "jetkvm_audio_latency_percentile_seconds", { source, percentile });
    expect(v).toBeGreaterThanOrEqual(0);
    expect(v).toBeLessThan(60);
  }
}

function expectHistogram(text: string, name: string): number {
  expect(families(text).get(name)).toBe("histogram");
  const count = value(text, `${name}_count`);
  expect(value(text, `${name}_bucket`, { le: "+Inf" })).toBe(count);
  expect(value(text, `${name}_sum`)).toBeGreaterThanOrEqual(0);
  return count;
}

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
    // Utilization is sampled once a second while connected: wait for a sample of both buffers.
    const sampled = (t: string) => samples(t, "jetkvm_audio_socket_buffer_utilization_percent", { component: "audio-output" }).length === 2;
    const received = await scrapeUntil(
      clientUrl,
      (t) => value(t, "jetkvm_audio_frames_received_total") === N && sampled(t),
      "all frames received",
    );
    const sent = await scrapeUntil(serverUrl, sampled, "utilization sampled");

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
      expect(value(text, "jetkvm_adaptive_buffer_adjustments_total")).toBe(0);
      for (const buffer_type of ["send", "receive"]) {
        const labels = { component: "audio-output", buffer_type };
        const utilization = value(text, "jetkvm_audio_socket_buffer_utilization_percent", labels);
        expect(utilization).toBeGreaterThanOrEqual(0);
        expect(utilization).toBeLessThanOrEqual(100);
        expect(value(text, "jetkvm_audio_socket_buffer_overflow_total", labels)).toBeGreaterThanOrEqual(0);
      }
    }
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
      expect(value(text, "jetkvm_adaptive_output_buffer_size_bytes")).toBe(requested);
    }
    // The sender's queue and drop reasons: every reason shown, all zero.
    expect(value(sent, "audio_agent_queue_depth_frames")).toBe(0);
    expect(value(sent, "audio_agent_queue_capacity_frames")).toBe(5000);
    const reasons = samples(sent, "audio_agent_frames_dropped_by_reason_total", { channel: "output" });
    expect(reasons.map((s) => s.labels.reason).sort()).toEqual(
      ["client_gone", "client_stuck", "latency_budget", "no_client", "queue_full", "shutdown", "write_deadline"],
    );
    expect(reasons.every((s) => s.value === 0)).toBe(true);
    // Histograms and latency percentiles: the sender times its writes, the receiver frame ages.
    const writes = expectHistogram(sent, "audio_agent_enqueue_to_write_seconds");
    expect(writes).toBeGreaterThan(0);
    expect(writes).toBeLessThanOrEqual(N);
    expect(expectHistogram(sent, "audio_agent_write_call_seconds")).toBe(writes);
    const reads = expectHistogram(received, "audio_agent_frame_age_seconds");
    expect(reads).toBeGreaterThan(0);
    expect(reads).toBeLessThanOrEqual(N);
    expectPercentiles(sent, "enqueue_to_write");
    expectPercentiles(sent, "write_call");
    expectPercentiles(received, "frame_age");

    await expectPromtoolClean(sent);
    await expectPromtoolClean(received);

    const sentHealth = await healthz(serverUrl);
    expect(sentHealth).toMatchObject({ role: "output serve", channel: "output", connected: true, frames: N, drops: 0 });
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
    expect(value(after, "audio_agent_connected")).toBe(0);
    server.endStdin();
    expect(await server.exited).toBe(0);
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
    const received = await scrapeUntil(serverUrl, (t) => value(t, "jetkvm_microphone_frames_received_total") === N, "frames received");
    // The Config's Ack has come back by now: one round trip.
    const sent = await scrapeUntil(clientUrl, (t) => value(t, "audio_agent_heartbeat_rtt_seconds_count") === 1, "config round trip");

    expect(value(sent, "jetkvm_microphone_frames_sent_total")).toBe(N);
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
      expect(value(text, "jetkvm_audio_socket_buffer_overflow_total", { component: "audio-input", buffer_type: "send" })).toBeGreaterThanOrEqual(0);
    }
    expect(value(received, "jetkvm_audio_socket_buffer_size_bytes", { component: "audio-input", buffer_type: "receive" })).toBe(
      kernelBufferBytes(98304, "receive"),
    );
    expect(value(sent, "jetkvm_audio_socket_buffer_size_bytes", { component: "audio-input", buffer_type: "send" })).toBe(
      kernelBufferBytes(256 * 1024, "send"),
    );
    expect(value(sent, "jetkvm_adaptive_input_buffer_size_bytes")).toBe(256 * 1024);
    expect(value(sent, "audio_agent_queue_capacity_frames")).toBe(5000);
    expect(value(sent, "audio_agent_queue_depth_frames")).toBe(0);
    expectHistogram(sent, "audio_agent_heartbeat_rtt_seconds");
    expectPercentiles(sent, "heartbeat_rtt");
    expect(expectHistogram(received, "audio_agent_frame_age_seconds")).toBe(N);
    expectPercentiles(received, "frame_age");

    await expectPromtoolClean(sent);
    await expectPromtoolClean(received);

    expect(await healthz(serverUrl)).toMatchObject({ role: "input serve", channel: "input", connected: true, frames: N, drops: 0 });
    const sendHealth = await healthz(clientUrl);
    expect(sendHealth).toMatchObject({ role: "input send", channel: "input", connected: true, frames: N, drops: 0, acks: 1 });
    expect(sendHealth.uptime_seconds as number).toBeGreaterThan(0);

    client.endStdin();
    expect(await client.exited).toBe(0);
    const ended = await scrapeUntil(serverUrl, (t) => value(t, "audio_agent_connected") === 0, "session end");
    expect(value(ended, "jetkvm_microphone_frames_received_total")).toBe(N);
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
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
    expect(health).toMatchObject({ role: "input serve", channel: "input", connected: false, frames: 0, drops: 0 });
    expect(Object.keys(health)).toEqual(expect.arrayContaining(["role", "channel", "connected", "frames", "drops", "uptime_seconds"]));
    server.kill("SIGTERM");
    expect(await server.exited).toBe(0);
    await until(() => server.hasExited, "exit");
  });
});
