import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { LatencyMonitor } from "./latency-monitor.ts";
import { droppedTotal, reconnects, utilizationPercent, type ChannelReadings } from "./readings.ts";

/** A channel end the metrics read: its readings (taken at scrape time) and its latency monitor. */
export interface MetricsChannel {
  /** A sender counts frames_sent, a receiver frames_received. */
  read: () => ChannelReadings;
  /** Reads the socket's queues afresh (for utilization at scrape time). */
  sampleQueues?: () => void;
  latency: LatencyMonitor;
}

/** What one channel end's instruments record as it happens. */
export interface ChannelMetrics {
  readonly enqueueToWrite: Observer;
  readonly writeCall: Observer;
  readonly frameAge: Observer;
  readonly roundTrip: Observer;
  latencyWarning(source: string, level: string): void;
  /** The end's adaptive optimizer's state, from its start on, and each decision; its families are exported from the first call. */
  adaptive(state: { level: number; sendBufferBytes: number; queueFrames: number }, decision?: "escalate" | "relax"): void;
}

interface Observer {
  observe(value: number): void;
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

/** The help of each count a channel end keeps (ChannelReadings.counts), by its name there. */
const COUNT_HELP: Record<string, string> = {
  heartbeats: "Heartbeats received from the client",
  sessions: "Client connections served (sessions begun)",
  clean_sessions: "Sessions the client ended with Stop",
  acks_sent: "Acks written to the client (answers to Config and Heartbeat)",
  acks_dropped: "Acks dropped unwritten: oldest first while the client left them unread past the queue's room, or still queued when it left",
  acks: "Acks received from the server",
  ack_timeouts: "Heartbeats the server did not answer in time (the connection is then judged gone)",
  other_messages: "Messages of a type the channel's peer does not send here, ignored",
  connect_resets: "Connections the server reset as they were made",
  frame_stamps_unusable:
    "Frames received whose header timestamp lies more than a second ahead of this machine's clock or more than an hour behind it, or read within 2 s of a step of that clock: no frame age taken (frames a receiver drops after a session or a failed sink are not judged)",
  source_skipped_pages: "Source pages skipped for a bad CRC, their packets dropped (--lenient)",
  source_missing_pages: "Source pages missing from the stream by their sequence numbers, their packets lost (--lenient)",
  source_repeated_pages: "Source pages read again (the same sequence number and CRC) and dropped (--lenient)",
  source_other_stream_pages: "Source pages of another logical stream (multiplexed, or after the Opus stream's end), passed over",
  source_skipped_bytes: "Source bytes that begin no page, passed over (--lenient)",
};

/** The operations the latency monitor tracks, as `source` label values. */
export const LATENCY_SOURCES = ["enqueue_to_write", "write_call", "frame_age", "heartbeat_rtt"] as const;
export type LatencySource = (typeof LATENCY_SOURCES)[number];

/**
 * The latency sources a channel end records, by what it does: a sender times
 * its writes, a receiver its frames' age, the input client its Heartbeats'
 * round trips (the input server's Acks are not timed). Only these have
 * histograms: one that could never fill would read as a measurement of nothing.
 */
export function latencySourcesOf(r: Pick<ChannelReadings, "channel" | "direction">): readonly LatencySource[] {
  if (r.direction === "receive") return ["frame_age"];
  return r.channel === "input" ? ["enqueue_to_write", "write_call", "heartbeat_rtt"] : ["enqueue_to_write", "write_call"];
}

/** The observer of a histogram an end has none of (latencySourcesOf): never called, as the end never records it. */
const UNMEASURED: Observer = { observe() {} };

/**
 * All metrics of one agent process, in a private registry. JetKVM's names are
 * kept where they exist (jetkvm_audio_* for the output channel,
 * jetkvm_microphone_* for the input channel) so existing dashboards work;
 * what they lack is added under audio_agent_*. A process with both channels
 * (serve) has one registry: the families both channels share carry a
 * `channel` label there (the socket buffer families tell them apart by
 * `component` already); a single role's names and labels stay as they are.
 */
export class AgentMetrics {
  readonly registry = new Registry();
  /** One per channel end, in the order given. */
  readonly channels: ChannelMetrics[];

  constructor(ends: readonly MetricsChannel[]) {
    const registers = [this.registry];
    const several = ends.length > 1;
    const withChannel = (names: string[]) => (several ? [...names, "channel"] : names);
    const parts = ends.map(({ read, sampleQueues, latency }) => {
      const { channel, direction } = read();
      return {
        read,
        sampleQueues,
        latency,
        direction,
        labels: several ? { channel } : {},
        prefix: channel === "output" ? "jetkvm_audio" : "jetkvm_microphone",
        what: channel === "output" ? "audio" : "microphone",
        component: channel === "output" ? "audio-output" : "audio-input",
        channel,
      };
    });
    type Part = (typeof parts)[number];

    /** Labels of a series of a family over `of`: the channel, where the family has several (or `always`). */
    const seriesLabels = (of: Part[], part: Part, always = false) => (always || of.length > 1 ? { channel: part.channel } : {});
    /** A counter over `of` following a reading's running total; `always` labels it by channel even with one. */
    const counterFrom = (name: string, help: string, of: Part[], value: (r: ChannelReadings) => number, always = false) => {
      const seen = of.map(() => 0);
      new Counter({
        name,
        help,
        labelNames: always || of.length > 1 ? ["channel"] : [],
        registers,
        collect() {
          of.forEach((part, i) => {
            const now = value(part.read());
            this.inc(seriesLabels(of, part, always), Math.max(0, now - seen[i]!));
            seen[i] = Math.max(seen[i]!, now);
          });
        },
      });
    };
    /** A gauge of each part's `value`; a part whose value is undefined has no series (and `always` labels a lone part too). */
    const gaugeFrom = (name: string, help: string, of: Part[], value: (r: ChannelReadings) => number | undefined, always = false) => {
      new Gauge({
        name,
        help,
        labelNames: always || of.length > 1 ? ["channel"] : [],
        registers,
        collect() {
          // A series whose part has no value now is gone, not left at its last.
          this.reset();
          for (const part of of) {
            const v = value(part.read());
            if (v !== undefined) this.set(seriesLabels(of, part, always), v);
          }
        },
      });
    };

    // JetKVM's families: named per channel.
    for (const part of parts) {
      const { prefix, what } = part;
      const frameVerb = part.direction === "send" ? "sent" : "received";
      counterFrom(`${prefix}_frames_${frameVerb}_total`, `Total number of ${what} frames ${frameVerb}`, [part], (r) => r.frames);
      // Every frame a sender dropped, of any type (as by reason below): JetKVM's name, the agent's accounting.
      counterFrom(`${prefix}_frames_dropped_total`, `Total number of ${what} frames dropped`, [part], (r) => droppedTotal(r));
      counterFrom(`${prefix}_bytes_processed_total`, `Total number of ${what} bytes processed`, [part], (r) => r.bytes);
      counterFrom(`${prefix}_connection_drops_total`, `Total number of ${what} connection drops`, [part], (r) => r.connectionDrops);
      gaugeFrom(`${prefix}_last_frame_timestamp_seconds`, `Timestamp of the last ${what} frame ${frameVerb}`, [part], (r) => r.lastFrameUnixMs / 1000);
    }

    const droppedSeen = parts.map(() => ({}) as Record<string, number>);
    new Counter({
      name: "audio_agent_frames_dropped_by_reason_total",
      help: "Frames dropped (of every type a sender sends; a receiver's sink counts OpusFrames), by reason",
      labelNames: ["channel", "reason"],
      registers,
      collect() {
        parts.forEach(({ read, channel }, i) => {
          const seen = droppedSeen[i]!;
          for (const [reason, now] of Object.entries(read().dropped)) {
            // Touch every reason so each shows up (at 0) before its first drop.
            this.inc({ channel, reason }, Math.max(0, now - (seen[reason] ?? 0)));
            seen[reason] = now;
          }
        });
      },
    });
    // A sender's accounting, labelled like the drops by reason: submitted = delivered + their sum + the
    // queue depth (and the one frame part-written, if any) can be checked from /metrics too.
    const senders = parts.filter((part) => part.direction === "send");
    if (senders.length > 0) {
      counterFrom(
        "audio_agent_frames_submitted_total",
        "Frames a sender submitted (OpusFrames; on the input channel also Heartbeats, the Stop and a Config the source brings): each is delivered or dropped by reason",
        senders,
        (r) => r.submitted,
        true,
      );
      counterFrom("audio_agent_frames_delivered_total", "Frames of every type the kernel took whole for the peer", senders, (r) => r.delivered, true);
    }
    // Each count an end has of its own (Acks, sessions, a source's skipped pages, ...), named as
    // /healthz and the log lines name it: what the log's rate limit holds back is counted here.
    const countsAt = parts.map((part) => part.read().counts);
    for (const key of new Set(countsAt.flatMap((counts) => Object.keys(counts)))) {
      const having = parts.filter((_, i) => key in countsAt[i]!);
      counterFrom(`audio_agent_${key}_total`, COUNT_HELP[key] ?? `Count of ${key}`, having, (r) => r.counts[key] ?? 0, true);
    }
    counterFrom("audio_agent_reconnects_total", "Connections after the first (clients) or clients accepted after the first (servers)", parts, reconnects);
    counterFrom("audio_agent_protocol_errors_total", "Framing violations by the peer (connection closed)", parts, (r) => r.protocolErrors);
    gaugeFrom("audio_agent_queue_depth_frames", "Frames waiting in the send queue", parts, (r) => r.queueDepth);
    gaugeFrom("audio_agent_queue_capacity_frames", "Send queue bound in frames", parts, (r) => r.queueCapacity);
    gaugeFrom("audio_agent_queue_allocated_bytes", "Bytes the send queue holds allocated: grown with what it holds, given back once a lowered bound (the adaptive optimizer relaxing) has drained", parts, (r) => r.queueAllocatedBytes);
    gaugeFrom("audio_agent_connected", "1 while a peer is connected", parts, (r) => (r.connected ? 1 : 0));
    const servers = parts.filter((part) => part.read().listening !== undefined);
    if (servers.length > 0) {
      gaugeFrom("audio_agent_listening", "1 while a server's socket accepts clients; 0 once its channel has ended", servers, (r) => (r.listening ? 1 : 0));
    }
    const receivers = parts.filter((part) => part.direction === "receive");
    if (receivers.length > 0) {
      gaugeFrom(
        "audio_agent_sink_file_in_place",
        "1 while the regular file a receiver records into is at its sink path; 0 once it is found removed, moved away or replaced (the recording goes on into the file opened). No series for a pipe, a device or stdout",
        receivers,
        (r) => (r.sinkFile === undefined ? undefined : r.sinkFile === "in_place" ? 1 : 0),
        // Labelled even alone: a family with no label would show a series, at 0, where there is no file.
        true,
      );
    }

    /** A histogram family of `source`, and the series of each channel end that records it (at zero until its first sample); none if no end does. */
    const histogram = (source: LatencySource, name: string, help: string): Observer[] => {
      const measured = parts.map((part) => latencySourcesOf(part).includes(source));
      if (!measured.includes(true)) return parts.map(() => UNMEASURED);
      const family = new Histogram({ name, help, buckets: LATENCY_BUCKETS, labelNames: withChannel([]), registers });
      return parts.map(({ labels }, i) => {
        if (!measured[i]) return UNMEASURED;
        if (!several) return family;
        family.zero(labels);
        return family.labels(labels);
      });
    };
    const enqueueToWrite = histogram("enqueue_to_write", "audio_agent_enqueue_to_write_seconds", "Time the oldest frame of each write waited in the send queue");
    const writeCall = histogram("write_call", "audio_agent_write_call_seconds", "Duration of each socket write call");
    const frameAge = histogram(
      "frame_age",
      "audio_agent_frame_age_seconds",
      "Frame age at the receiver: arrival time minus the header timestamp (output: the first frame of each read; input: every frame)",
    );
    const roundTrip = histogram("heartbeat_rtt", "audio_agent_heartbeat_rtt_seconds", "Heartbeat to Ack round trip");

    new Gauge({
      name: "jetkvm_audio_latency_percentile_seconds",
      help: "Audio latency percentiles in seconds",
      labelNames: withChannel(["source", "percentile"]),
      registers,
      collect() {
        for (const { latency, labels } of parts) {
          for (const source of latency.operations()) {
            const s = latency.snapshot(source);
            if (!s) continue;
            this.set({ source, percentile: "p50", ...labels }, s.p50);
            this.set({ source, percentile: "p95", ...labels }, s.p95);
            this.set({ source, percentile: "p99", ...labels }, s.p99);
            this.set({ source, percentile: "max", ...labels }, s.max);
            this.set({ source, percentile: "avg", ...labels }, s.ema);
          }
        }
      },
    });
    new Gauge({
      name: "audio_agent_latency_jitter_seconds",
      help: "Latency jitter (smoothed difference between consecutive samples)",
      labelNames: withChannel(["source"]),
      registers,
      collect() {
        for (const { latency, labels } of parts) {
          for (const source of latency.operations()) this.set({ source, ...labels }, latency.snapshot(source)?.jitter ?? 0);
        }
      },
    });
    const latencyWarnings = new Counter({
      name: "audio_agent_latency_warnings_total",
      help: "Latency samples above the target or the maximum (warnings are rate limited, this is not)",
      labelNames: withChannel(["source", "level"]),
      registers,
    });

    const buffers = ["send", "receive"] as const;
    new Gauge({
      name: "jetkvm_audio_socket_buffer_size_bytes",
      help: "Current socket buffer size in bytes (as the kernel reports it)",
      labelNames: ["component", "buffer_type"],
      registers,
      collect() {
        // A series set while a connection was there goes with it.
        this.reset();
        for (const { read, component } of parts) {
          const { kernel } = read().socketBuffers;
          if (kernel.sendBytes === 0) continue; // no connection
          this.set({ component, buffer_type: "send" }, kernel.sendBytes);
          this.set({ component, buffer_type: "receive" }, kernel.receiveBytes);
        }
      },
    });
    new Gauge({
      name: "jetkvm_audio_socket_buffer_utilization_percent",
      help: "Socket buffer utilization percentage",
      labelNames: ["component", "buffer_type"],
      registers,
      collect() {
        for (const { read, sampleQueues, component } of parts) {
          // The queues now: the instruments' sampler runs only while frames flow.
          sampleQueues?.();
          const r = read();
          // None before the first connection; 0 while there is none after it (nothing is queued).
          if (r.socketBuffers.kernel.sendBytes === 0 && r.connects === 0) continue;
          for (const buffer_type of buffers) this.set({ component, buffer_type }, utilizationPercent(r, buffer_type));
        }
      },
    });
    // Writes the kernel did not take whole; a receive buffer never overflows on a stream socket.
    const overflowsSeen = parts.map(() => 0);
    new Counter({
      name: "jetkvm_audio_socket_buffer_overflow_total",
      help: "Total number of socket buffer overflows (writes the kernel could not take whole)",
      labelNames: ["component", "buffer_type"],
      registers,
      collect() {
        parts.forEach(({ read, component }, i) => {
          const now = read().shortWrites;
          this.inc({ component, buffer_type: "send" }, Math.max(0, now - overflowsSeen[i]!));
          this.inc({ component, buffer_type: "receive" }, 0);
          overflowsSeen[i] = now;
        });
      },
    });
    const failuresSeen = parts.map(() => ({}) as Record<string, number>);
    new Counter({
      name: "audio_agent_socket_option_failures_total",
      help: "Socket option calls that failed (buffers left at the kernel default)",
      labelNames: ["component", "call"],
      registers,
      collect() {
        parts.forEach(({ read, component }, i) => {
          const seen = failuresSeen[i]!;
          for (const [call, now] of Object.entries(read().socketBuffers.failures)) {
            this.inc({ component, call }, Math.max(0, now - (seen[call] ?? 0)));
            seen[call] = now;
          }
        });
      },
    });

    /**
     * The adaptive optimizer's families, made when an optimizer first reports
     * its state: an end that has none (a receiver, a sender with --adaptive
     * off) exports none of them. Its socket buffers as applied are in
     * jetkvm_audio_socket_buffer_size_bytes.
     */
    let optimizerFamilies: { queueFrames: Gauge; level: Gauge; adjustments: Counter; decisions: Counter } | undefined;
    const optimizer = () =>
      (optimizerFamilies ??= {
        queueFrames: new Gauge({
          name: "audio_agent_adaptive_queue_frames",
          help: "Send queue bound chosen by the adaptive optimizer",
          labelNames: withChannel([]),
          registers,
        }),
        level: new Gauge({
          name: "audio_agent_adaptive_level",
          help: "Adaptive optimizer level: 0 default, higher after each escalation",
          labelNames: withChannel([]),
          registers,
        }),
        adjustments: new Counter({
          name: "jetkvm_adaptive_buffer_adjustments_total",
          help: "Total number of adaptive buffer size adjustments",
          labelNames: withChannel([]),
          registers,
        }),
        decisions: new Counter({
          name: "audio_agent_adaptive_decisions_total",
          help: "Adaptive optimizer decisions",
          labelNames: withChannel(["decision"]),
          registers,
        }),
      });

    this.channels = parts.map(({ channel, labels }, i) => {
      /** This end's optimizer's own family, once it reports. */
      let bufferSize: Gauge | undefined;
      return {
        enqueueToWrite: enqueueToWrite[i]!,
        writeCall: writeCall[i]!,
        frameAge: frameAge[i]!,
        roundTrip: roundTrip[i]!,
        latencyWarning: (source, level) => latencyWarnings.inc({ source, level, ...labels }),
        adaptive: (state, decision) => {
          const families = optimizer();
          if (!bufferSize) {
            bufferSize = new Gauge({
              name: channel === "output" ? "jetkvm_adaptive_output_buffer_size_bytes" : "jetkvm_adaptive_input_buffer_size_bytes",
              help: "Current adaptive socket send buffer size in bytes",
              registers,
            });
            for (const decision of ["escalate", "relax"]) families.decisions.inc({ decision, ...labels }, 0);
            families.adjustments.inc(labels, 0);
          }
          families.level.set(labels, state.level);
          bufferSize.set(state.sendBufferBytes);
          families.queueFrames.set(labels, state.queueFrames);
          if (decision) {
            families.decisions.inc({ decision, ...labels });
            families.adjustments.inc(labels);
          }
        },
      };
    });

    this.addProcessMetrics();
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
