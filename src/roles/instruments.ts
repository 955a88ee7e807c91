import type { ChannelEnd } from "../channels/channel-end.ts";
import { defaultOf, type Role, type Settings } from "../config.ts";
import { oneSocket } from "../observe/http-listen-error.ts";
import type { HttpConnectionBound } from "../observe/http-front.ts";
import type { AgentHttpServer, HealthReport } from "../observe/http-server.ts";
import { LatencyMonitor } from "../observe/latency-monitor.ts";
import type { Logger } from "../observe/logger.ts";
import type { AgentMetrics } from "../observe/metrics.ts";
import { MonitorHub, type MonitorIdentity, type RoleFigures } from "../observe/monitor/hub.ts";
import { healthFields } from "../observe/readings.ts";
import type { Report } from "../transport/report.ts";
import type { SocketFileIdentity } from "../transport/socket-file.ts";
import { ChannelInstruments, collectGarbage, thousandths, type AdaptiveSettings, type ChannelSettings } from "./channel-instruments.ts";
import { ConnectionBurst } from "./connection-burst.ts";
import { JitPolicy } from "./jit-policy.ts";
import { Sampler } from "./sampler.ts";

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
