import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { LatencyMonitor } from "./latency-monitor.ts";
import { droppedTotal, reconnects, utilizationPercent, type ChannelReadings } from "./readings.ts";

export interface MetricsOptions {
  /** The channel end's readings, taken at scrape time. A sender counts frames_sent, a receiver frames_received. */
  read: () => ChannelReadings;
  latency: LatencyMonitor;
}

/** Latency buckets in seconds: 50 us .. 1 s, dense where live audio lives (1-50 ms). */
const LATENCY_BUCKETS = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1,
];

/**
 * Default process metrics that are right on Bun. Left out after checking a
 * real scrape: process_heap_bytes (reports the whole address space),
 * nodejs_heap_space_* (all zero), nodejs_active_* (always 0), the nodejs GC
 * histogram (never observed) and nodejs_version_info (Bun's emulated version).
 */
const PROCESS_METRICS = [
  "process_cpu_user_seconds_total",
  "process_cpu_system_seconds_total",
  "process_cpu_seconds_total",
  "process_start_time_seconds",
  "process_resident_memory_bytes",
  "process_virtual_memory_bytes",
  "process_open_fds",
  "process_max_fds",
  "nodejs_eventloop_lag_seconds",
  "nodejs_eventloop_lag_p50_seconds",
  "nodejs_eventloop_lag_p90_seconds",
  "nodejs_eventloop_lag_p99_seconds",
  "nodejs_eventloop_lag_max_seconds",
];

/** The operations the latency monitor tracks, as `source` label values. */
export const LATENCY_SOURCES = ["enqueue_to_write", "write_call", "frame_age", "heartbeat_rtt"] as const;
export type LatencySource = (typeof LATENCY_SOURCES)[number];

/**
 * All metrics of one agent process, in a private registry. JetKVM's names are
 * kept where they exist (jetkvm_audio_* for the output channel,
 * jetkvm_microphone_* for the input channel) so existing dashboards work;
 * what they lack is added under audio_agent_*.
 */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly component: string;
  readonly enqueueToWrite: Histogram;
  readonly writeCall: Histogram;
  readonly frameAge: Histogram;
  readonly roundTrip: Histogram;
  private readonly adaptiveBufferSize: Gauge;
  private readonly adaptiveQueueFrames: Gauge;
  private readonly adaptiveLevel: Gauge;
  private readonly adaptiveAdjustments: Counter;
  private readonly adaptiveDecisions: Counter<"decision">;
  private readonly latencyWarnings: Counter<"source" | "level">;

  constructor(private readonly options: MetricsOptions) {
    const { read, latency } = options;
    const { channel, direction } = read();
    const registers = [this.registry];
    const prefix = channel === "output" ? "jetkvm_audio" : "jetkvm_microphone";
    this.component = channel === "output" ? "audio-output" : "audio-input";
    const what = channel === "output" ? "audio" : "microphone";

    const counterFrom = (name: string, help: string, value: (r: ChannelReadings) => number) => {
      let seen = 0;
      new Counter({
        name,
        help,
        registers,
        collect() {
          const now = value(read());
          if (now > seen) this.inc(now - seen);
          seen = now;
        },
      });
    };
    const gaugeFrom = (name: string, help: string, value: (r: ChannelReadings) => number) => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(value(read()));
        },
      });
    };

    const frameVerb = direction === "send" ? "sent" : "received";
    counterFrom(`${prefix}_frames_${frameVerb}_total`, `Total number of ${what} frames ${frameVerb}`, (r) => r.frames);
    counterFrom(`${prefix}_frames_dropped_total`, `Total number of ${what} frames dropped`, (r) =>
      droppedTotal(r),
    );
    counterFrom(`${prefix}_bytes_processed_total`, `Total number of ${what} bytes processed`, (r) => r.bytes);
    counterFrom(`${prefix}_connection_drops_total`, `Total number of ${what} connection drops`, (r) => r.connectionDrops);
    gaugeFrom(
      `${prefix}_last_frame_timestamp_seconds`,
      `Timestamp of the last ${what} frame ${frameVerb}`,
      (r) => r.lastFrameUnixMs / 1000,
    );

    const droppedSeen: Record<string, number> = {};
    new Counter({
      name: "audio_agent_frames_dropped_by_reason_total",
      help: "Frames dropped, by reason",
      labelNames: ["channel", "reason"],
      registers,
      collect() {
        for (const [reason, now] of Object.entries(read().dropped)) {
          const seen = droppedSeen[reason] ?? 0;
          // Touch every reason so each shows up (at 0) before its first drop.
          this.inc({ channel, reason }, Math.max(0, now - seen));
          droppedSeen[reason] = now;
        }
      },
    });
    counterFrom("audio_agent_reconnects_total", "Connections after the first (clients) or clients accepted after the first (servers)", reconnects);
    counterFrom("audio_agent_protocol_errors_total", "Framing violations by the peer (connection closed)", (r) => r.protocolErrors);
    gaugeFrom("audio_agent_queue_depth_frames", "Frames waiting in the send queue", (r) => r.queueDepth);
    gaugeFrom("audio_agent_queue_capacity_frames", "Send queue bound in frames", (r) => r.queueCapacity);
    gaugeFrom("audio_agent_connected", "1 while a peer is connected", (r) => (r.connected ? 1 : 0));

    const histogram = (name: string, help: string) =>
      new Histogram({ name, help, buckets: LATENCY_BUCKETS, registers });
    this.enqueueToWrite = histogram(
      "audio_agent_enqueue_to_write_seconds",
      "Time the oldest frame of each write waited in the send queue",
    );
    this.writeCall = histogram("audio_agent_write_call_seconds", "Duration of each socket write call");
    this.frameAge = histogram(
      "audio_agent_frame_age_seconds",
      "Frame age at the receiver: arrival time minus the header timestamp (first frame of each read)",
    );
    this.roundTrip = histogram("audio_agent_heartbeat_rtt_seconds", "Heartbeat to Ack round trip");

    new Gauge({
      name: "jetkvm_audio_latency_percentile_seconds",
      help: "Audio latency percentiles in seconds",
      labelNames: ["source", "percentile"],
      registers,
      collect() {
        for (const source of latency.operations()) {
          const s = latency.snapshot(source);
          if (!s) continue;
          this.set({ source, percentile: "p50" }, s.p50);
          this.set({ source, percentile: "p95" }, s.p95);
          this.set({ source, percentile: "p99" }, s.p99);
          this.set({ source, percentile: "max" }, s.max);
          this.set({ source, percentile: "avg" }, s.ema);
        }
      },
    });
    new Gauge({
      name: "audio_agent_latency_jitter_seconds",
      help: "Latency jitter (smoothed difference between consecutive samples)",
      labelNames: ["source"],
      registers,
      collect() {
        for (const source of latency.operations()) this.set({ source }, latency.snapshot(source)?.jitter ?? 0);
      },
    });
    this.latencyWarnings = new Counter({
      name: "audio_agent_latency_warnings_total",
      help: "Latency samples above the target or the maximum (warnings are rate limited, this is not)",
      labelNames: ["source", "level"],
      registers,
    });

    const component = this.component;
    const buffers = ["send", "receive"] as const;
    new Gauge({
      name: "jetkvm_audio_socket_buffer_size_bytes",
      help: "Current socket buffer size in bytes (as the kernel reports it)",
      labelNames: ["component", "buffer_type"],
      registers,
      collect() {
        const { kernel } = read().socketBuffers;
        if (kernel.sendBytes === 0) return; // no connection yet
        this.set({ component, buffer_type: "send" }, kernel.sendBytes);
        this.set({ component, buffer_type: "receive" }, kernel.receiveBytes);
      },
    });
    new Gauge({
      name: "jetkvm_audio_socket_buffer_utilization_percent",
      help: "Socket buffer utilization percentage",
      labelNames: ["component", "buffer_type"],
      registers,
      collect() {
        const r = read();
        if (r.socketBuffers.kernel.sendBytes === 0) return;
        for (const buffer_type of buffers) this.set({ component, buffer_type }, utilizationPercent(r, buffer_type));
      },
    });
    // Writes the kernel did not take whole; a receive buffer never overflows on a stream socket.
    const overflows = { send: 0, receive: 0 };
    new Counter({
      name: "jetkvm_audio_socket_buffer_overflow_total",
      help: "Total number of socket buffer overflows (writes the kernel could not take whole)",
      labelNames: ["component", "buffer_type"],
      registers,
      collect() {
        const now = read().shortWrites;
        this.inc({ component, buffer_type: "send" }, Math.max(0, now - overflows.send));
        this.inc({ component, buffer_type: "receive" }, 0);
        overflows.send = now;
      },
    });
    const failuresSeen: Record<string, number> = {};
    new Counter({
      name: "audio_agent_socket_option_failures_total",
      help: "Socket option calls that failed (buffers left at the kernel default)",
      labelNames: ["component", "call"],
      registers,
      collect() {
        for (const [call, now] of Object.entries(read().socketBuffers.failures)) {
          this.inc({ component, call }, Math.max(0, now - (failuresSeen[call] ?? 0)));
          failuresSeen[call] = now;
        }
      },
    });

    this.adaptiveBufferSize = new Gauge({
      name: channel === "output" ? "jetkvm_adaptive_output_buffer_size_bytes" : "jetkvm_adaptive_input_buffer_size_bytes",
      help: "Current adaptive socket send buffer size in bytes",
      registers,
    });
    this.adaptiveQueueFrames = new Gauge({
      name: "audio_agent_adaptive_queue_frames",
      help: "Send queue bound chosen by the adaptive optimizer",
      registers,
    });
    this.adaptiveLevel = new Gauge({
      name: "audio_agent_adaptive_level",
      help: "Adaptive optimizer level: 0 default, higher after each escalation",
      registers,
    });
    this.adaptiveAdjustments = new Counter({
      name: "jetkvm_adaptive_buffer_adjustments_total",
      help: "Total number of adaptive buffer size adjustments",
      registers,
    });
    this.adaptiveDecisions = new Counter({
      name: "audio_agent_adaptive_decisions_total",
      help: "Adaptive optimizer decisions",
      labelNames: ["decision"],
      registers,
    });
    for (const decision of ["escalate", "relax"]) this.adaptiveDecisions.inc({ decision }, 0);

    this.addProcessMetrics();
  }

  latencyWarning(source: string, level: string): void {
    this.latencyWarnings.inc({ source, level });
  }

  adaptive(state: { level: number; sendBufferBytes: number; queueFrames: number }, decision?: "escalate" | "relax"): void {
    this.adaptiveLevel.set(state.level);
    this.adaptiveBufferSize.set(state.sendBufferBytes);
    this.adaptiveQueueFrames.set(state.queueFrames);
    if (decision) {
      this.adaptiveDecisions.inc({ decision });
      this.adaptiveAdjustments.inc();
    }
  }

  /** The Prometheus text exposition. */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  private addProcessMetrics(): void {
    const defaults = new Registry();
    // Lag sampled once a second, not every 10 ms: the default would wake an idle agent 100 times a second.
    collectDefaultMetrics({ register: defaults, eventLoopMonitoringPrecision: 1000 });
    for (const name of PROCESS_METRICS) {
      const metric = defaults.getSingleMetric(name);
      if (metric) this.registry.registerMetric(metric);
    }
    new Gauge({
      name: "audio_agent_heap_used_bytes",
      help: "JavaScript heap in use (JavaScriptCore)",
      registers: [this.registry],
      collect() {
        this.set(process.memoryUsage().heapUsed);
      },
    });
  }
}
