import type { Socket } from "bun";
import type { Settings } from "../config.ts";
import { AdaptiveOptimizer, DEFAULT_ADAPTIVE, type AdaptiveState } from "../observe/adaptive-optimizer.ts";
import { AgentHttpServer, type HealthFigures, type HealthReport, type ListenAddress } from "../observe/http-server.ts";
import { MonitorHub, type ConnectionEvent } from "../observe/monitor-hub.ts";
import { LatencyMonitor } from "../observe/latency-monitor.ts";
import type { Logger } from "../observe/logger.ts";
import type { AgentMetrics, ChannelReadings } from "../observe/metrics.ts";
import type { Channel } from "../protocol/index.ts";
import type { FrameQueue } from "../transport/frame-queue.ts";
import type { Report } from "../transport/report.ts";
import {
  getSocketBuffers,
  MAX_SOCKET_BUFFER_BYTES,
  receiveQueueBytes,
  sendQueueBytes,
  setSocketBuffers,
  SOCKET_BUFFER_PRESETS,
  type SocketBufferSizes,
} from "../transport/socket-options.ts";

type TelemetrySettings = Settings<
  | "socket"
  | "socket-buffers"
  | "adaptive"
  | "adaptive-threshold"
  | "adaptive-window-ms"
  | "adaptive-calm-ms"
  | "metrics"
  | "monitor"
>;

export interface TelemetryOptions {
  role: string;
  channel: Channel;
  direction: "send" | "receive";
  settings: TelemetrySettings;
  logger: Logger;
  read: () => ChannelReadings;
  /** A sender's queue: the optimizer resizes it. */
  queue?: FrameQueue;
}

/** Socket buffer utilization is sampled this often, and on short writes at most this often. */
const SAMPLE_MS = 1000;
const SHORT_WRITE_SAMPLE_MS = 100;
/** The adaptive optimizer grows the queue at most this many times its configured size. */
const MAX_QUEUE_GROWTH = DEFAULT_ADAPTIVE.queueGrowth;

function bufferSizes(setting: TelemetrySettings["socket-buffers"]): SocketBufferSizes {
  return typeof setting === "number" ? { sendBytes: setting, receiveBytes: setting } : SOCKET_BUFFER_PRESETS[setting];
}

/**
 * Everything a role measures and adapts, wired in one place: socket buffer
 * sizes applied to every connection, utilization sampling, the latency
 * monitor, the adaptive optimizer, and (with --metrics) the Prometheus
 * registry and its HTTP server. Roles call the hooks; each hook is cheap.
 */
export class Telemetry {
  readonly latency: LatencyMonitor;
  readonly metrics: AgentMetrics | undefined;
  readonly optimizer: AdaptiveOptimizer | undefined;
  readonly monitor: MonitorHub | undefined;
  private servers: AgentHttpServer[] = [];
  private utilization = { send: 0, receive: 0 };
  private socket: Socket<unknown> | undefined;
  private buffers: SocketBufferSizes;
  private kernelBuffers: SocketBufferSizes = { sendBytes: 0, receiveBytes: 0 };
  private readonly sampler: ReturnType<typeof setInterval>;
  private lastShortWriteSample = 0;
  private deadlineDropsSeen = 0;
  private readonly report: Report;
  private readonly started = performance.now();

  /**
   * Builds the telemetry of a role. prom-client is loaded only when --metrics
   * asks for it: it costs tens of milliseconds of start-up and megabytes.
   */
  static async create(options: TelemetryOptions): Promise<Telemetry> {
    const metricsModule = options.settings.metrics ? await import("../observe/metrics.ts") : undefined;
    return new Telemetry(options, metricsModule?.AgentMetrics);
  }

  private constructor(
    private readonly options: TelemetryOptions,
    Metrics: typeof AgentMetrics | undefined,
  ) {
    const { settings, logger } = options;
    this.report = logger.for("telemetry");
    this.buffers = bufferSizes(settings["socket-buffers"]);
    this.latency = new LatencyMonitor({
      warn: (operation, level, value, threshold) => {
        this.metrics?.latencyWarning(operation, level);
        this.report("warn", `latency above ${level === "max" ? "maximum" : "target"}`, {
          operation,
          ms: +(value * 1000).toFixed(3),
          threshold_ms: threshold * 1000,
        });
      },
    });
    if (Metrics) {
      this.metrics = new Metrics({
        role: options.role,
        channel: options.channel,
        direction: options.direction,
        read: options.read,
        latency: this.latency,
      });
    }
    if (settings.monitor) {
      this.monitor = new MonitorHub(
        { role: options.role, channel: options.channel, socket: settings.socket },
        () => this.monitorFigures(),
      );
    }
    const queue = options.queue;
    if (settings.adaptive === "on") {
      const high = SOCKET_BUFFER_PRESETS["high-load"];
      const baseQueue = queue?.capacity ?? 0;
      this.optimizer = new AdaptiveOptimizer({
        base: { sendBufferBytes: this.buffers.sendBytes, receiveBufferBytes: this.buffers.receiveBytes, queueFrames: baseQueue },
        highLoad: {
          sendBufferBytes: Math.max(high.sendBytes, this.buffers.sendBytes),
          receiveBufferBytes: Math.max(high.receiveBytes, this.buffers.receiveBytes),
        },
        maxQueueFrames: baseQueue * MAX_QUEUE_GROWTH,
        threshold: settings["adaptive-threshold"],
        windowMs: settings["adaptive-window-ms"],
        calmMs: settings["adaptive-calm-ms"],
        apply: (state, decision, why) => this.adapt(state, decision, why),
      });
      this.metrics?.adaptive(this.optimizer.state);
    }
    this.sampler = setInterval(() => this.sample(), Math.min(SAMPLE_MS, settings["adaptive-calm-ms"]));
  }

  /** Starts the HTTP endpoints --metrics and --monitor asked for (one server when they share an address). */
  async start(health: () => HealthFigures): Promise<void> {
    const { metrics: metricsAt, monitor: monitorAt } = this.options.settings;
    const healthReport = (): HealthReport => ({
      role: this.options.role,
      channel: this.options.channel,
      ...health(),
      uptime_seconds: +((performance.now() - this.started) / 1000).toFixed(3),
    });
    const metrics = this.metrics && { registry: this.metrics, health: healthReport };
    const same = (a?: ListenAddress, b?: ListenAddress) => !!a && !!b && a.host === b.host && a.port === b.port;
    if (metricsAt && same(metricsAt, monitorAt)) {
      this.servers.push(AgentHttpServer.start(metricsAt, { metrics, monitor: this.monitor }));
    } else {
      if (metricsAt) this.servers.push(AgentHttpServer.start(metricsAt, { metrics }));
      if (monitorAt) this.servers.push(AgentHttpServer.start(monitorAt, { monitor: this.monitor }));
    }
    for (const server of this.servers) this.report("info", "http listening", { url: server.url });
  }

  /** The URLs the HTTP endpoints listen on (the first serves /metrics when there is one). */
  get urls(): string[] {
    return this.servers.map((s) => s.url);
  }

  /** Set only while a browser listens on the monitor: roles pass every frame to it. */
  get frameTap(): ((payload: Uint8Array, timestampMs: number) => void) | undefined {
    return this.monitor?.frameTap;
  }

  connectionEvent(kind: ConnectionEvent["kind"], detail: string): void {
    this.monitor?.event(kind, detail);
  }

  /** A new connection: apply the socket buffers we promise, read back what the kernel holds. */
  onSocket = (socket: Socket<unknown>): void => {
    this.socket = socket;
    this.applyBuffers(socket, this.buffers);
    this.connectionEvent("connected", this.options.settings.socket);
  };

  onWritten = (_messages: number, _bytes: number, oldestWaitMs: number, writeCallMs: number): void => {
    this.latency.record("enqueue_to_write", oldestWaitMs / 1000);
    this.latency.record("write_call", writeCallMs / 1000);
    this.metrics?.enqueueToWrite.observe(oldestWaitMs / 1000);
    this.metrics?.writeCall.observe(writeCallMs / 1000);
  };

  onShortWrite = (socket: Socket<unknown>): void => {
    this.metrics?.overflow("send");
    this.optimizer?.note("overflow");
    const now = performance.now();
    if (now - this.lastShortWriteSample >= SHORT_WRITE_SAMPLE_MS) {
      this.lastShortWriteSample = now;
      this.sampleSocket(socket);
    }
  };

  frameAge(ms: number): void {
    this.latency.record("frame_age", ms / 1000);
    this.metrics?.frameAge.observe(ms / 1000);
  }

  roundTrip(ms: number): void {
    this.latency.record("heartbeat_rtt", ms / 1000);
    this.metrics?.roundTrip.observe(ms / 1000);
  }

  async stop(): Promise<void> {
    clearInterval(this.sampler);
    this.monitor?.stop();
    await Promise.all(this.servers.map((s) => s.stop()));
  }

  private monitorFigures() {
    const r = this.options.read();
    const latency: Record<string, { p50: number; p95: number; p99: number; max: number }> = {};
    for (const source of this.latency.operations()) {
      const s = this.latency.snapshot(source);
      if (s) latency[source] = { p50: s.p50, p95: s.p95, p99: s.p99, max: s.max };
    }
    return {
      connected: r.connected,
      frames: r.frames,
      bytes: r.bytes,
      dropped: { ...r.dropped },
      queueDepth: r.queueDepth,
      queueCapacity: r.queueCapacity,
      sendUtilization: this.utilization.send,
      receiveUtilization: this.utilization.receive,
      sendBufferBytes: this.kernelBuffers.sendBytes,
      receiveBufferBytes: this.kernelBuffers.receiveBytes,
      latency,
      adaptiveLevel: this.optimizer?.state.level ?? 0,
    };
  }

  private applyBuffers(socket: Socket<unknown>, sizes: SocketBufferSizes): void {
    const fd = socket.fd;
    if (typeof fd !== "number" || fd < 0) return;
    const set = setSocketBuffers(fd, sizes);
    if (!set.ok) {
      this.metrics?.socketOptionFailure(set.call);
      this.report("warn", "could not set socket buffers; kernel defaults stay", { error: set.message });
    }
    const got = getSocketBuffers(fd);
    if (got.ok) {
      this.kernelBuffers = { sendBytes: got.sendBytes, receiveBytes: got.receiveBytes };
      this.metrics?.socketBuffers(got.sendBytes, got.receiveBytes);
      this.report("debug", "socket buffers", { requested: sizes, kernel: this.kernelBuffers });
    } else {
      this.metrics?.socketOptionFailure(got.call);
    }
  }

  private sample(): void {
    if (this.socket && this.socket.readyState > 0) this.sampleSocket(this.socket);
    const queue = this.options.queue;
    if (queue && this.optimizer) {
      const drops = queue.stats.dropped.write_deadline;
      const fresh = Math.min(drops - this.deadlineDropsSeen, this.optimizer.threshold);
      this.deadlineDropsSeen = drops;
      for (let i = 0; i < fresh; i++) this.optimizer.note("deadline drop");
    }
    this.optimizer?.tick();
  }

  private sampleSocket(socket: Socket<unknown>): void {
    const fd = socket.fd;
    if (typeof fd !== "number" || fd < 0) return;
    const out = sendQueueBytes(fd);
    if (out.ok && this.kernelBuffers.sendBytes > 0) {
      this.utilization.send = Math.min(100, (out.bytes / this.kernelBuffers.sendBytes) * 100);
      this.metrics?.utilization("send", this.utilization.send);
    }
    const inq = receiveQueueBytes(fd);
    if (inq.ok && this.kernelBuffers.receiveBytes > 0) {
      this.utilization.receive = Math.min(100, (inq.bytes / this.kernelBuffers.receiveBytes) * 100);
      this.metrics?.utilization("receive", this.utilization.receive);
    }
  }

  private adapt(state: AdaptiveState, decision: "escalate" | "relax", why: string): void {
    const sizes = {
      sendBytes: Math.min(state.sendBufferBytes, MAX_SOCKET_BUFFER_BYTES),
      receiveBytes: Math.min(state.receiveBufferBytes, MAX_SOCKET_BUFFER_BYTES),
    };
    this.buffers = sizes;
    if (this.socket && this.socket.readyState > 0) this.applyBuffers(this.socket, sizes);
    if (this.options.queue && state.queueFrames > 0) this.options.queue.resize(state.queueFrames);
    this.metrics?.adaptive(state, decision);
    this.report("info", `adaptive: ${decision}`, {
      why,
      level: state.level,
      send_buffer: sizes.sendBytes,
      kernel_send_buffer: this.kernelBuffers.sendBytes,
      queue_frames: state.queueFrames,
    });
  }
}
