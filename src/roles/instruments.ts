import type { ChannelEnd, ChannelObserver } from "../channels/channel-end.ts";
import { SOCKET_BUFFER_PRESETS, socketBufferSizes, type Role, type Settings } from "../config.ts";
import { AdaptiveOptimizer, DEFAULT_ADAPTIVE, type AdaptiveState } from "../observe/adaptive-optimizer.ts";
import type { ListenAddress } from "../observe/http-listen-error.ts";
import type { AgentHttpServer, HealthReport } from "../observe/http-server.ts";
import { LatencyMonitor } from "../observe/latency-monitor.ts";
import type { Logger } from "../observe/logger.ts";
import type { AgentMetrics } from "../observe/metrics.ts";
import { MonitorHub, monitorFigures } from "../observe/monitor/hub.ts";
import { healthFields, summaryFields, type ChannelReadings } from "../observe/readings.ts";
import type { Report } from "../transport/report.ts";
import { DropReason } from "../transport/frame-stats.ts";

type InstrumentSettings = Settings<
  | "socket"
  | "socket-buffers"
  | "adaptive"
  | "adaptive-threshold"
  | "adaptive-window-ms"
  | "adaptive-calm-ms"
  | "metrics"
  | "monitor"
  | "stats-interval"
  | "http-allow-host"
>;

export interface InstrumentsOptions {
  role: Role;
  settings: InstrumentSettings;
  logger: Logger;
}

/** Socket buffers are sampled, and the optimizer fed and ticked, this often (or faster for short windows). */
const SAMPLE_MS = 1000;

/**
 * Everything a role measures and adapts, attached to its channel end: the
 * latency monitor, socket buffer sampling, the adaptive optimizer, and (with
 * --metrics / --monitor) the Prometheus registry, the monitor and their HTTP
 * server. The channel reports through the observer hooks, each cheap; the
 * optimizer is fed from the channel's readings and its decisions are applied
 * on the sampler's tick, never from inside a write.
 */
export class Instruments implements ChannelObserver {
  readonly latency: LatencyMonitor;
  readonly metrics: AgentMetrics | undefined;
  readonly optimizer: AdaptiveOptimizer | undefined;
  readonly monitor: MonitorHub | undefined;
  private servers: AgentHttpServer[] = [];
  private readonly sampler: ReturnType<typeof setInterval>;
  /** The --stats-interval timer, and what the last summary line had seen. */
  private readonly statsTimer: ReturnType<typeof setInterval> | undefined;
  private statsSeen: { at: number; counts: Record<string, number>; samples: Map<string, number> };
  /** Pressure already fed to the optimizer: short writes and deadline drops. */
  private pressureSeen = { shortWrites: 0, deadlineDrops: 0 };
  private readonly report: Report;
  private readonly started = performance.now();

  /**
   * Builds the instruments of a role and attaches them to its channel end.
   * prom-client is loaded only when --metrics asks for it: it costs tens of
   * milliseconds of start-up and megabytes.
   */
  static async attach(end: ChannelEnd, options: InstrumentsOptions): Promise<Instruments> {
    const metricsModule = options.settings.metrics ? await import("../observe/metrics.ts") : undefined;
    const instruments = new Instruments(end, options, metricsModule?.AgentMetrics);
    end.observe(instruments);
    return instruments;
  }

  private constructor(
    private readonly end: ChannelEnd,
    private readonly options: InstrumentsOptions,
    Metrics: typeof AgentMetrics | undefined,
  ) {
    const { settings, logger } = options;
    this.report = logger.for("instruments");
    const read = (): ChannelReadings => end.readings();
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
    if (Metrics) this.metrics = new Metrics({ read, latency: this.latency });
    const first = read();
    if (settings.monitor) {
      this.monitor = new MonitorHub({ role: options.role, channel: first.channel, socket: settings.socket }, () =>
        monitorFigures(read(), this.latency, this.optimizer?.state.level ?? 0),
      );
    }
    if (settings.adaptive === "on") {
      const buffers = socketBufferSizes(settings["socket-buffers"]);
      const high = SOCKET_BUFFER_PRESETS["high-load"];
      const baseQueue = first.queueCapacity;
      this.optimizer = new AdaptiveOptimizer({
        base: { sendBufferBytes: buffers.sendBytes, receiveBufferBytes: buffers.receiveBytes, queueFrames: baseQueue },
        highLoad: {
          sendBufferBytes: Math.max(high.sendBytes, buffers.sendBytes),
          receiveBufferBytes: Math.max(high.receiveBytes, buffers.receiveBytes),
        },
        maxQueueFrames: baseQueue * DEFAULT_ADAPTIVE.queueGrowth,
        threshold: settings["adaptive-threshold"],
        windowMs: settings["adaptive-window-ms"],
        calmMs: settings["adaptive-calm-ms"],
        apply: (state, decision, why) => this.adapt(state, decision, why),
      });
      this.metrics?.adaptive(this.optimizer.state);
    }
    const every = Math.min(SAMPLE_MS, settings["adaptive-calm-ms"], settings["adaptive-window-ms"]);
    this.sampler = setInterval(() => this.sample(), every);
    this.statsSeen = { at: this.started, counts: statsCounts(first), samples: new Map() };
    const statsMs = settings["stats-interval"] * 1000;
    if (statsMs > 0) this.statsTimer = setInterval(() => this.logStats(), statsMs);
  }

  /** Starts the HTTP endpoints --metrics and --monitor asked for (one server when they share an address). */
  async start(): Promise<void> {
    const { metrics: metricsAt, monitor: monitorAt, "http-allow-host": allowHosts } = this.options.settings;
    const health = (): HealthReport => {
      const r = this.end.readings();
      return {
        role: this.options.role,
        channel: r.channel,
        ...healthFields(r),
        uptime_seconds: +((performance.now() - this.started) / 1000).toFixed(3),
      };
    };
    const metrics = this.metrics && { registry: this.metrics, health };
    if (!metricsAt && !monitorAt) return;
    // Loaded only when asked for: the HTTP server (and the monitor page) cost memory.
    const { AgentHttpServer } = await import("../observe/http-server.ts");
    const same = (a?: ListenAddress, b?: ListenAddress) => !!a && !!b && a.host === b.host && a.port === b.port;
    try {
      if (metricsAt && same(metricsAt, monitorAt)) {
        this.servers.push(AgentHttpServer.start(metricsAt, { metrics, monitor: this.monitor }, allowHosts));
      } else {
        if (metricsAt) this.servers.push(AgentHttpServer.start(metricsAt, { metrics }, allowHosts));
        if (monitorAt) this.servers.push(AgentHttpServer.start(monitorAt, { monitor: this.monitor }, allowHosts));
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    for (const server of this.servers) this.report("info", "http listening", { url: server.url });
  }

  /**
   * Starts the HTTP endpoints, then `listen` (the channel end's socket): a
   * port in use fails before any socket file exists, and a socket that
   * cannot be bound stops the endpoints again.
   */
  async startThen(listen: () => Promise<void>): Promise<void> {
    await this.start();
    try {
      await listen();
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  /** The URLs the HTTP endpoints listen on (the first serves /metrics when there is one). */
  get urls(): string[] {
    return this.servers.map((s) => s.url);
  }

  /** Set only while a browser listens on the monitor: the channel passes every frame to it. */
  get frameTap(): ((payload: Uint8Array, timestampMs: number) => void) | undefined {
    return this.monitor?.frameTap;
  }

  connection(kind: "connected" | "disconnected", detail: string): void {
    this.monitor?.event(kind, detail);
  }

  written(_messages: number, _bytes: number, oldestWaitMs: number, writeCallMs: number): void {
    this.latency.record("enqueue_to_write", oldestWaitMs / 1000);
    this.latency.record("write_call", writeCallMs / 1000);
    this.metrics?.enqueueToWrite.observe(oldestWaitMs / 1000);
    this.metrics?.writeCall.observe(writeCallMs / 1000);
  }

  frameAge(ms: number): void {
    this.latency.record("frame_age", ms / 1000);
    this.metrics?.frameAge.observe(ms / 1000);
  }

  roundTrip(ms: number): void {
    this.latency.record("heartbeat_rtt", ms / 1000);
    this.metrics?.roundTrip.observe(ms / 1000);
  }

  /**
   * Latency of every operation the monitor has seen, for a role's final "stopped" line:
   * `<operation>_p50_ms`, `_p99_ms` and `_max_ms` over the monitor's window, its last 1024
   * samples (about 20 s of frames at 50 a second), to the microsecond.
   */
  latencyFields(): Record<string, number> {
    const fields: Record<string, number> = {};
    const ms = (seconds: number) => +(seconds * 1000).toFixed(3);
    for (const operation of this.latency.operations()) {
      const s = this.latency.snapshot(operation)!;
      fields[`${operation}_p50_ms`] = ms(s.p50);
      fields[`${operation}_p99_ms`] = ms(s.p99);
      fields[`${operation}_max_ms`] = ms(s.max);
    }
    return fields;
  }

  async stop(): Promise<void> {
    clearInterval(this.sampler);
    clearInterval(this.statsTimer);
    this.monitor?.stop();
    await Promise.all(this.servers.splice(0).map((s) => s.stop()));
  }

  /** The sampler's tick: socket buffers sampled, the optimizer fed with new pressure and ticked. */
  private sample(): void {
    this.end.tuner.sample();
    const optimizer = this.optimizer;
    if (!optimizer) return;
    const r = this.end.readings();
    const seen = this.pressureSeen;
    const deadlineDrops = r.dropped[DropReason.WriteDeadline] ?? 0;
    // More than a threshold's worth at once escalates once, like a burst noted event by event.
    const overflows = Math.min(r.shortWrites - seen.shortWrites, optimizer.threshold);
    const late = Math.min(deadlineDrops - seen.deadlineDrops, optimizer.threshold);
    this.pressureSeen = { shortWrites: r.shortWrites, deadlineDrops };
    for (let i = 0; i < overflows; i++) optimizer.note("overflow");
    for (let i = 0; i < late; i++) optimizer.note("deadline drop");
    optimizer.tick();
  }

  /**
   * The --stats-interval line: what happened since the last one (frames,
   * bytes, drops by reason, connects, the end's own counts) and each
   * latency's p99 over the samples taken since (as far as the window holds).
   * Runs on its own timer; nothing is added to the audio path.
   */
  private logStats(): void {
    const r = this.end.readings();
    const now = performance.now();
    const counts = statsCounts(r);
    const seen = this.statsSeen;
    const fields: Record<string, unknown> = { seconds: +((now - seen.at) / 1000).toFixed(3) };
    for (const [key, value] of Object.entries(counts)) {
      const delta = value - (seen.counts[key] ?? 0);
      // Reasons nothing was dropped for in this interval are left out, as in the final line.
      if (delta === 0 && key.startsWith("dropped_")) continue;
      fields[key] = delta;
    }
    fields.connected = r.connected;
    const samples = new Map<string, number>();
    for (const operation of this.latency.operations()) {
      const count = this.latency.recorded(operation);
      const fresh = count - (seen.samples.get(operation) ?? 0);
      samples.set(operation, count);
      if (fresh > 0) fields[`p99_${operation}_ms`] = +(this.latency.snapshot(operation, fresh)!.p99 * 1000).toFixed(3);
    }
    this.statsSeen = { at: now, counts, samples };
    this.options.logger.periodic("instruments", "stats", fields);
  }

  private adapt(state: AdaptiveState, decision: "escalate" | "relax", why: string): void {
    const end = this.end;
    end.tuner.resize({ sendBytes: state.sendBufferBytes, receiveBytes: state.receiveBufferBytes });
    if (state.queueFrames > 0) end.resizeQueue?.(state.queueFrames);
    this.metrics?.adaptive(state, decision);
    this.report("info", `adaptive: ${decision}`, {
      why,
      adaptive_level: state.level,
      send_buffer: state.sendBufferBytes,
      kernel_send_buffer: end.tuner.readings().kernel.sendBytes,
      queue_frames: state.queueFrames,
    });
  }
}

/** The counters a summary line reports the change of: the final line's accounting, and bytes. */
function statsCounts(r: ChannelReadings): Record<string, number> {
  return { ...summaryFields(r), bytes: r.bytes };
}
