import type { ChannelEnd, ChannelObserver } from "../channels/channel-end.ts";
import { defaultOf, SOCKET_BUFFER_PRESETS, socketBufferSizes, type Role, type Settings } from "../config.ts";
import { AdaptiveOptimizer, DEFAULT_ADAPTIVE, type AdaptiveState } from "../observe/adaptive-optimizer.ts";
import { oneSocket } from "../observe/http-listen-error.ts";
import type { HttpConnectionBound } from "../observe/http-front.ts";
import type { AgentHttpServer, HealthReport } from "../observe/http-server.ts";
import { LatencyMonitor, type LatencyOperation } from "../observe/latency-monitor.ts";
import type { Logger } from "../observe/logger.ts";
import type { AgentMetrics, ChannelMetrics } from "../observe/metrics.ts";
import { MonitorHub, monitorFigures, type ChannelFigures, type MonitorIdentity, type RoleFigures } from "../observe/monitor/hub.ts";
import { healthFields, sinkFileField, summaryFields, type ChannelReadings } from "../observe/readings.ts";
import type { Report } from "../transport/report.ts";
import type { SocketFileIdentity } from "../transport/socket-file.ts";
import { DropReason } from "../transport/frame-stats.ts";
import { ConnectionBurst } from "./connection-burst.ts";
import { JitPolicy } from "./jit-policy.ts";
import { Sampler } from "./sampler.ts";

/** What a channel end's instruments read: its socket (a server's mode), buffers and optimizer. */
type ChannelSettings = Settings<"socket" | "socket-buffers"> & { "socket-mode"?: number } & (AdaptiveSettings | { adaptive?: undefined });
/** A sending end's optimizer (a receiver has none: config.ts ADAPTIVE). */
type AdaptiveSettings = Settings<"adaptive" | "adaptive-threshold" | "adaptive-window-ms" | "adaptive-calm-ms">;
/** What the whole process's instruments read: its HTTP endpoints and stats lines. */
type ProcessSettings = Settings<"metrics" | "monitor" | "stats-interval" | "http-allow-host">;

export interface InstrumentsOptions {
  role: Role;
  settings: ChannelSettings & ProcessSettings;
  logger: Logger;
}

/** One channel end of a process and its settings. */
export interface InstrumentedEnd {
  end: ChannelEnd;
  settings: ChannelSettings;
}

/** The optimizer is fed and ticked this often (or faster for short windows). */
const SAMPLE_MS = 1000;

/** How often the sampler ticks for these channels: SAMPLE_MS, or faster for an optimizer's short window or calm period (only where one runs). */
export function samplePeriodMs(channels: readonly Partial<AdaptiveSettings>[]): number {
  return Math.min(SAMPLE_MS, ...channels.flatMap((s) => (s.adaptive === "on" ? [s["adaptive-calm-ms"]!, s["adaptive-window-ms"]!] : [])));
}

/**
 * Everything a process measures and adapts, attached to its channel ends
 * (one, or both in serve): per end the latency monitor, socket buffer
 * sampling and the adaptive optimizer (ChannelInstruments); for the process
 * one sampler tick (which also watches for a flood, see JitPolicy), the
 * --stats-interval timer and, with --metrics / --monitor, one Prometheus
 * registry, the monitor and their HTTP server. The
 * channels report through the observer hooks, each cheap; the optimizer is
 * fed from the channel's readings and its decisions are applied on the
 * sampler's tick, never from inside a write.
 */
export class Instruments {
  /** One per channel end, in the order given; the first is the one the monitor shows. */
  readonly channels: ChannelInstruments[];
  readonly metrics: AgentMetrics | undefined;
  readonly monitor: MonitorHub | undefined;
  private servers: AgentHttpServer[] = [];
  /** When the channels are sampled and the optimizer ticked: on the frames' wake-ups. */
  private readonly sampler: Sampler;
  /** Hands the process back to the JIT's normal thresholds when it floods. */
  private readonly jit: JitPolicy;
  /** Collects once after a burst of connections has subsided. */
  private readonly burst: ConnectionBurst;
  /** The HTTP endpoints' bound, which counts their connections; once started. */
  private httpBound: HttpConnectionBound | undefined;
  /** The --stats-interval timer. */
  private readonly statsTimer: ReturnType<typeof setInterval> | undefined;
  private readonly report: Report;
  private readonly started = performance.now();
  /** Each channel end's socket (its path, its mode as bound, and the file bound once listening): a client end, which makes no socket, as a server's default would be. */
  private readonly sockets: { path?: string; mode: number; bound?: () => SocketFileIdentity | undefined }[];

  /** The instruments of a role with one channel end. */
  static attach(end: ChannelEnd, { role, settings, logger }: InstrumentsOptions): Promise<Instruments> {
    return Instruments.attachAll([{ end, settings }], { role, settings, logger });
  }

  /**
   * Builds the instruments of a process and attaches them to its channel
   * ends. prom-client is loaded only when --metrics asks for it: it costs
   * tens of milliseconds of start-up and megabytes.
   */
  static async attachAll(ends: InstrumentedEnd[], options: { role: string; settings: ProcessSettings; logger: Logger }): Promise<Instruments> {
    const metricsModule = options.settings.metrics ? await import("../observe/metrics.ts") : undefined;
    const instruments = new Instruments(ends, options, metricsModule?.AgentMetrics);
    instruments.channels.forEach((channel, i) => ends[i]!.end.observe(channel));
    return instruments;
  }

  private constructor(
    ends: InstrumentedEnd[],
    private readonly options: { role: string; settings: ProcessSettings; logger: Logger },
    Metrics: typeof AgentMetrics | undefined,
  ) {
    const { settings, logger } = options;
    const several = ends.length > 1;
    this.sockets = ends.map(({ end, settings: s }) =>
      s["socket-mode"] === undefined ? { mode: defaultOf("socket-mode") as number } : { path: s.socket, mode: s["socket-mode"], bound: () => end.socketFile?.() },
    );
    this.report = logger.for("instruments");
    const latencies = ends.map(
      (_, i) =>
        new LatencyMonitor({
          warn: (operation, level, value, threshold) => this.channels[i]!.latencyWarned(operation, level, value, threshold),
          crossed: (operation, level) => this.metrics?.channels[i]!.latencyWarning(operation, level),
        }),
    );
    this.metrics =
      Metrics && new Metrics(ends.map(({ end }, i) => ({ read: () => end.readings(), sampleQueues: () => end.tuner.sample(), latency: latencies[i]! })));
    if (settings.monitor) this.monitor = new MonitorHub(this.identity(ends), () => this.figures());
    this.channels = ends.map(({ end, settings: channelSettings }, i) => {
      const channel = end.readings().channel;
      const component = several ? `${channel}-instruments` : "instruments";
      return new ChannelInstruments(end, channelSettings, {
        latency: latencies[i]!,
        metrics: this.metrics?.channels[i],
        report: logger.for(component),
        // Never held back by the log's rate limit, so the stats lines always add up to the totals.
        stats: (fields) => logger.periodic(component, "stats", fields),
        monitor: this.monitor,
        shown: i === 0,
        onFrame: () => this.sampler.frame(),
      });
    });
    const every = samplePeriodMs(ends.map(({ settings: s }) => s));
    const counted = this.counts();
    this.jit = new JitPolicy(this.report, counted.frames);
    this.burst = new ConnectionBurst(counted.connections, performance.now(), (connections) => this.collectAfterBurst(connections));
    this.sampler = new Sampler(every, () => this.tick(), () => this.burst.pending || this.channels.some((c) => c.unsettled()));
    const statsMs = settings["stats-interval"] * 1000;
    if (statsMs > 0) {
      this.statsTimer = setInterval(() => {
        for (const channel of this.channels) channel.logStats();
      }, statsMs);
    }
  }

  /** Starts the HTTP endpoints --metrics and --monitor asked for (one server when they share an address). */
  async start(): Promise<void> {
    const { metrics: metricsAt, monitor: monitorAt, "http-allow-host": allowHosts } = this.options.settings;
    const metrics = this.metrics && { registry: this.metrics, health: () => this.health() };
    if (!metricsAt && !monitorAt) return;
    // The monitor plays the audio: to the users every channel's socket lets connect, and root.
    const { mayConnect, peerLookupUnavailable, socketAccess } = await import("../observe/local-peer.ts");
    const audience = (uid: number) => this.sockets.every(({ path, mode, bound }) => mayConnect(uid, ...socketAccess(path, mode, bound?.())));
    const monitor = this.monitor && { monitor: this.monitor, audience };
    const unasked = monitorAt && peerLookupUnavailable();
    if (unasked) this.report("warn", "the kernel has no socket diagnostics to ask who connects to the monitor: each connection's user is found in /proc/net/tcp, read whole (a moment for every socket on the machine)", { why: unasked });
    // Loaded only when asked for: the HTTP server (and the monitor page) cost memory.
    const { AgentHttpServer, descriptorLimit, HttpConnectionBound, MAX_HTTP_CONNECTIONS } = await import("../observe/http-server.ts");
    // One bound for the process: two addresses do not double the connections (and descriptors) a peer may hold.
    const bound = HttpConnectionBound.within();
    this.httpBound = bound;
    if (bound.cap < MAX_HTTP_CONNECTIONS) {
      this.report("warn", `the descriptor limit leaves room for fewer HTTP connections at once than ${MAX_HTTP_CONNECTIONS}`, { limit: descriptorLimit(), connections: bound.cap });
    }
    try {
      if (metricsAt && monitorAt && (await oneSocket(metricsAt, monitorAt))) {
        // One server for both, bound at the metrics address: it answers to the monitor address's names too.
        const { allowedHosts } = await import("../observe/host-check.ts");
        const names = [...(allowHosts ?? []), ...allowedHosts(monitorAt)];
        this.servers.push(await AgentHttpServer.start(metricsAt, { metrics, ...monitor }, names, bound));
      } else {
        if (metricsAt) this.servers.push(await AgentHttpServer.start(metricsAt, { metrics }, allowHosts, bound));
        if (monitorAt) this.servers.push(await AgentHttpServer.start(monitorAt, { ...monitor }, allowHosts, bound));
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    for (const server of this.servers) {
      this.report("info", "http listening", { url: server.url });
      const why = server.acceptQueueUnbounded;
      if (why) this.report("warn", "the HTTP port's queue of connections not yet taken is left at Bun's 512: a peer connecting and closing in a loop can hold the audio for a moment each time it fills", { url: server.url, why });
    }
  }

  /**
   * Starts the HTTP endpoints, then `listen` (the channel ends' sockets): a
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

  /** Latency of every operation of a single role's channel end (see ChannelInstruments.latencyFields). */
  latencyFields(): Record<string, number> {
    return this.channels[0]!.latencyFields();
  }

  /** The sampler's tick: every channel's optimizer, the JIT's flood check, and the connections' bursts. */
  private tick(): void {
    for (const channel of this.channels) channel.sample();
    // Read when a rate is judged, and then once for both (each judges a second apart, mostly in the same tick).
    let counted: { frames: number; connections: number } | undefined;
    const counts = () => (counted ??= this.counts());
    this.jit.sample(() => counts().frames);
    this.burst.sample(() => counts().connections);
  }

  /**
   * A burst of connections has subsided: what they left (their objects, and
   * the pages freed with them) goes back to the system now, not at Bun's next
   * collection, up to BUN_GC_TIMER_INTERVAL later (30 s on the device), and
   * the code they compiled with it.
   */
  private collectAfterBurst(connections: number): void {
    const collected = collectGarbage(true);
    this.report("info", "connections subsided: collected", { connections, heap_used_bytes: collected.heapUsedBytes, collect_ms: collected.ms });
  }

  async stop(): Promise<void> {
    this.sampler.stop();
    clearInterval(this.statsTimer);
    this.monitor?.stop();
    await Promise.all(this.servers.splice(0).map((s) => s.stop()));
  }

  /**
   * OpusFrames so far over all channel ends (delivered or received), and
   * connections: every channel end's (accepted, or made) and the HTTP
   * endpoints'. Each end's readings read once.
   */
  private counts(): { frames: number; connections: number } {
    let frames = 0;
    let connections = this.httpBound?.connections ?? 0;
    for (const channel of this.channels) {
      const r = channel.end.readings();
      frames += r.frames;
      connections += r.connects;
    }
    return { frames, connections };
  }

  /**
   * /healthz: the role and its channel with its readings; with several channels, each under `channels`.
   * Healthy while every server's socket accepts clients (not before it listens, nor once its channel
   * has ended, which serve outlives); a client is healthy while it runs, connected or trying to.
   */
  private health(): HealthReport {
    const uptime_seconds = thousandths((performance.now() - this.started) / 1000);
    const readings = this.channels.map((c) => c.end.readings());
    const head = { role: this.options.role, healthy: readings.every((r) => r.listening !== false) };
    if (readings.length === 1) return { ...head, channel: readings[0]!.channel, ...healthFields(readings[0]!), uptime_seconds };
    return { ...head, channels: Object.fromEntries(readings.map((r) => [r.channel, healthFields(r)])), uptime_seconds };
  }

  /** The monitor's identity: the first channel is the one the page shows and listens to. */
  private identity(ends: InstrumentedEnd[]): MonitorIdentity {
    const [shown, ...others] = ends.map(({ end, settings }) => ({ channel: end.readings().channel, socket: settings.socket }));
    const identity: MonitorIdentity = { role: this.options.role, channel: shown!.channel, socket: shown!.socket };
    if (others.length > 0) identity.channels = Object.fromEntries(others.map(({ channel, socket }) => [channel, { socket }]));
    return identity;
  }

  private figures(): RoleFigures {
    const [shown, ...others] = this.channels;
    const figures: RoleFigures = shown!.figures();
    if (others.length > 0) figures.channels = Object.fromEntries(others.map((c) => [c.end.readings().channel, c.figures()]));
    return figures;
  }
}

/**
 * The instruments of one channel end: its latency monitor (fed by the
 * observer hooks), socket buffer sampling, its adaptive optimizer (whose
 * decisions it applies on the process's sampler tick), its metrics, its
 * stats lines and its part of the monitor.
 */
export class ChannelInstruments implements ChannelObserver {
  readonly latency: LatencyMonitor;
  readonly optimizer: AdaptiveOptimizer | undefined;
  private readonly metrics: ChannelMetrics | undefined;
  private readonly report: Report;
  private readonly stats: (fields: Record<string, unknown>) => void;
  private readonly monitor: MonitorHub | undefined;
  /** The channel the monitor shows: its connection events and frames go to the page as they are. */
  private readonly shown: boolean;
  private readonly channel: string;
  /** What the last summary line had seen. */
  private statsSeen: { at: number; counts: Record<string, number>; samples: Map<string, number> };
  /** Pressure already fed to the optimizer: short writes and deadline drops. */
  private pressureSeen = { shortWrites: 0, deadlineDrops: 0 };
  /** The per-frame operations' recorders, held so that a sample needs no look-up. */
  private readonly enqueueToWrite: LatencyOperation;
  private readonly writeCall: LatencyOperation;
  private readonly frameAgeLatency: LatencyOperation;
  private readonly roundTripLatency: LatencyOperation;
  private readonly onFrame: () => void;

  constructor(
    readonly end: ChannelEnd,
    settings: ChannelSettings,
    parts: {
      latency: LatencyMonitor;
      metrics?: ChannelMetrics;
      report: Report;
      stats: (fields: Record<string, unknown>) => void;
      monitor?: MonitorHub;
      shown: boolean;
      /** Each OpusFrame through this end: the process's sampler runs on them. */
      onFrame: () => void;
    },
  ) {
    ({ latency: this.latency, metrics: this.metrics, report: this.report, stats: this.stats, monitor: this.monitor, shown: this.shown, onFrame: this.onFrame } = parts);
    this.enqueueToWrite = this.latency.operation("enqueue_to_write");
    this.writeCall = this.latency.operation("write_call");
    this.frameAgeLatency = this.latency.operation("frame_age");
    this.roundTripLatency = this.latency.operation("heartbeat_rtt");
    const first = end.readings();
    this.channel = first.channel;
    if (settings.adaptive === "on") {
      const buffers = socketBufferSizes(settings["socket-buffers"]);
      // The sizes as set: where the optimizer starts from.
      const base = { sendBufferBytes: buffers.sendBytes, receiveBufferBytes: buffers.receiveBytes, queueFrames: first.queueCapacity };
      const high = SOCKET_BUFFER_PRESETS["high-load"];
      this.optimizer = new AdaptiveOptimizer({
        base,
        highLoad: {
          sendBufferBytes: Math.max(high.sendBytes, buffers.sendBytes),
          receiveBufferBytes: Math.max(high.receiveBytes, buffers.receiveBytes),
        },
        maxQueueFrames: base.queueFrames * DEFAULT_ADAPTIVE.queueGrowth,
        threshold: settings["adaptive-threshold"],
        windowMs: settings["adaptive-window-ms"],
        calmMs: settings["adaptive-calm-ms"],
        apply: (state, decision, why) => this.adapt(state, decision, why),
      });
    }
    // Where no optimizer runs (a receiver, --adaptive off) the metrics have none of its families.
    if (this.optimizer) this.metrics?.adaptive(this.optimizer.state);
    this.statsSeen = { at: performance.now(), counts: statsCounts(first), samples: new Map() };
  }

  /** Set only while a browser listens on the monitor to this channel: the channel passes every frame to it. */
  get frameTap(): ((payload: Uint8Array, timestampMs: number) => void) | undefined {
    return this.shown ? this.monitor?.frameTap : undefined;
  }

  connection(kind: "connected" | "disconnected", detail: string): void {
    this.monitor?.event(kind, detail, this.shown ? undefined : this.channel);
  }

  written(_messages: number, _bytes: number, oldestWaitMs: number, writeCallMs: number): void {
    this.enqueueToWrite.record(oldestWaitMs / 1000);
    this.writeCall.record(writeCallMs / 1000);
    this.metrics?.enqueueToWrite.observe(oldestWaitMs / 1000);
    this.metrics?.writeCall.observe(writeCallMs / 1000);
  }

  submitted(): void {
    this.onFrame();
  }

  frameAge(ms: number): void {
    this.onFrame();
    // NaN: a stamp not of this machine's clock, counted by the channel end.
    if (ms !== ms) return;
    this.frameAgeLatency.record(ms / 1000);
    this.metrics?.frameAge.observe(ms / 1000);
  }

  roundTrip(ms: number): void {
    this.roundTripLatency.record(ms / 1000);
    this.metrics?.roundTrip.observe(ms / 1000);
  }

  /** A latency sample crossed the target or the maximum: the warning, rate limited by the monitor (the metric counts every one). */
  latencyWarned(operation: string, level: "target" | "max", value: number, threshold: number): void {
    this.report("warn", `latency above ${level === "max" ? "maximum" : "target"}`, {
      operation,
      ms: thousandths(value * 1000),
      threshold_ms: threshold * 1000,
    });
  }

  /**
   * Latency of every operation the monitor has seen, for a role's final "stopped" line:
   * `<operation>_p50_ms`, `_p99_ms` and `_max_ms` over the monitor's window, its last 1024
   * samples (about 20 s of frames at 50 a second), to the microsecond.
   */
  latencyFields(): Record<string, number> {
    const fields: Record<string, number> = {};
    const ms = (seconds: number) => thousandths(seconds * 1000);
    for (const operation of this.latency.operations()) {
      const s = this.latency.snapshot(operation)!;
      fields[`${operation}_p50_ms`] = ms(s.p50);
      fields[`${operation}_p99_ms`] = ms(s.p99);
      fields[`${operation}_max_ms`] = ms(s.max);
    }
    return fields;
  }

  figures(): ChannelFigures {
    // The queues as they are now: the sampler runs only while frames flow.
    this.end.tuner.sample();
    return monitorFigures(this.end.readings(), this.latency, this.optimizer?.state.level);
  }

  /** Something the sampler must keep ticking for without frames: an escalated optimizer, frames still queued. */
  unsettled(): boolean {
    return (this.optimizer?.state.level ?? 0) > 0 || this.end.readings().queueDepth > 0;
  }

  /**
   * The sampler's tick: the optimizer fed with new pressure and ticked. The
   * socket queues are not read here: /metrics and the monitor read them as
   * they are when asked.
   */
  sample(): void {
    const optimizer = this.optimizer;
    if (!optimizer) return;
    const r = this.end.readings();
    const seen = this.pressureSeen;
    const deadlineDrops = r.dropped[DropReason.WriteDeadline] ?? 0;
    const overflows = r.shortWrites - seen.shortWrites;
    const late = deadlineDrops - seen.deadlineDrops;
    this.pressureSeen = { shortWrites: r.shortWrites, deadlineDrops };
    // What one tick finds is one burst: it escalates once, however many events it holds.
    if (overflows + late > 0) optimizer.note({ overflow: overflows, "deadline drop": late });
    optimizer.tick();
  }

  /**
   * The --stats-interval line: what happened since the last one (frames,
   * bytes, drops by reason, connects, the end's own counts), a sender's
   * messages still in its hands (queued), and each
   * latency's p99 over the samples taken since (as far as the window holds).
   * Runs on its own timer; nothing is added to the audio path.
   */
  logStats(): void {
    const r = this.end.readings();
    const now = performance.now();
    const counts = statsCounts(r);
    const seen = this.statsSeen;
    const fields: Record<string, unknown> = { seconds: thousandths((now - seen.at) / 1000) };
    for (const [key, value] of Object.entries(counts)) {
      const delta = value - (seen.counts[key] ?? 0);
      // Reasons nothing was dropped for in this interval are left out, as in the final line.
      if (delta === 0 && key.startsWith("dropped_")) continue;
      fields[key] = delta;
    }
    // A level, not a change: a sender's line adds up as submitted = delivered + dropped + (queued - the last line's queued).
    if (r.direction === "send") fields.queued = r.inHand;
    fields.connected = r.connected;
    Object.assign(fields, sinkFileField(r));
    const samples = new Map<string, number>();
    for (const operation of this.latency.operations()) {
      const count = this.latency.recorded(operation);
      const fresh = count - (seen.samples.get(operation) ?? 0);
      samples.set(operation, count);
      if (fresh > 0) fields[`p99_${operation}_ms`] = thousandths(this.latency.snapshot(operation, fresh)!.p99 * 1000);
    }
    this.statsSeen = { at: now, counts, samples };
    this.stats(fields);
  }

  private adapt(state: AdaptiveState, decision: "escalate" | "relax", why: string): void {
    const end = this.end;
    end.tuner.resize({ sendBytes: state.sendBufferBytes, receiveBytes: state.receiveBufferBytes });
    if (state.queueFrames > 0) end.resizeQueue?.(state.queueFrames);
    // Relaxed, what the escalation left behind (the ring the queue just gave back, if it had
    // drained; the frames and reads of the pressure) goes back to the system now, not at Bun's
    // next collection, up to BUN_GC_TIMER_INTERVAL later (30 s on the device). A full collection
    // takes a few ms, once per relax, never per frame (bench/FINDINGS.md).
    const collected = decision === "relax" ? collectGarbage() : undefined;
    this.metrics?.adaptive(state, decision);
    // What the kernel holds now, read back from the live connection; without one, the next is given the sizes.
    const kernel = end.tuner.readings().kernel.sendBytes;
    this.report("info", `adaptive: ${decision}`, {
      why,
      adaptive_level: state.level,
      send_buffer: state.sendBufferBytes,
      ...(kernel > 0 ? { kernel_send_buffer: kernel } : {}),
      queue_frames: state.queueFrames,
      ...(collected ? { heap_used_bytes: collected.heapUsedBytes, collect_ms: collected.ms } : {}),
    });
  }
}

/**
 * `value` rounded to three decimals, as a number. Not `+value.toFixed(3)`:
 * the stats line is the first thing a streaming process formats, and
 * toFixed's code stayed resident in it, about 0.35 MiB (bench/FINDINGS.md).
 */
export function thousandths(value: number): number {
  return Math.round(value * 1000) / 1000;
}

/**
 * A full, synchronous collection (JavaScriptCore's heap, then mimalloc's
 * freed pages back to the system): the JavaScript heap in use after it, as
 * audio_agent_heap_used_bytes reads it, and how long it held the thread.
 * With `dropCode`, the compiled code goes too (Bun.shrink): 1.5-2 MiB that a
 * burst of connections compiled and a collection alone leaves; the frames'
 * own code is compiled again as they come (bench/FINDINGS.md). Bun's types
 * call Bun.shrink deprecated: a Bun without it gets the collection alone.
 */
function collectGarbage(dropCode = false): { heapUsedBytes: number; ms: number } {
  const start = performance.now();
  Bun.gc(true);
  const shrink = (Bun as { shrink?: unknown }).shrink;
  if (dropCode && typeof shrink === "function") shrink.call(Bun);
  const ms = thousandths(performance.now() - start);
  return { heapUsedBytes: process.memoryUsage().heapUsed, ms };
}

/** The counters a summary line reports the change of: the final line's accounting, and bytes. */
function statsCounts(r: ChannelReadings): Record<string, number> {
  return { ...summaryFields(r), bytes: r.bytes };
}
