import type { ServerWebSocket } from "bun";
import type { LatencyMonitor } from "../latency-monitor.ts";
import { utilizationPercent, type ChannelReadings } from "../readings.ts";

/** One second of what a channel end is doing: the same numbers the Prometheus metrics hold. */
export interface ChannelFigures {
  connected: boolean;
  frames: number;
  bytes: number;
  dropped: Record<string, number>;
  queueDepth: number;
  queueCapacity: number;
  /** Socket buffer utilization in percent, and the sizes the kernel holds. */
  sendUtilization: number;
  receiveUtilization: number;
  sendBufferBytes: number;
  receiveBufferBytes: number;
  /** Per latency source (frame_age, enqueue_to_write, ...): seconds. */
  latency: Record<string, { p50: number; p95: number; p99: number; max: number }>;
  /** The adaptive optimizer's level; none where no optimizer runs (a receiver, --adaptive off). */
  adaptiveLevel?: number;
  /** What only this end counts (acks, heartbeats, sessions, other_messages, ...), as /healthz names them. */
  counts: Record<string, number>;
}

/** What the page gets each second: the figures of the channel it shows (and listens to), and of any other channel of the process. */
export type RoleFigures = ChannelFigures & { channels?: Record<string, ChannelFigures> };

export interface MonitorFigures extends RoleFigures {
  /** Unix ms when the figures were taken (shown as a time of day; it steps with the wall clock). */
  t: number;
  /** When, in ms of the agent's monotonic clock (performance.now()): what the page measures intervals by, as a step of the wall clock does not move it. */
  at: number;
  /** Frames the browser listeners missed because they could not keep up. */
  listenerDrops: number;
  listeners: number;
}

/** The page's figures from a channel end's readings, its latency monitor and the optimizer's level (if one runs). */
export function monitorFigures(r: ChannelReadings, latency: LatencyMonitor, adaptiveLevel: number | undefined): ChannelFigures {
  const percentiles: ChannelFigures["latency"] = {};
  for (const source of latency.operations()) {
    const s = latency.snapshot(source);
    if (s) percentiles[source] = { p50: s.p50, p95: s.p95, p99: s.p99, max: s.max };
  }
  return {
    connected: r.connected,
    frames: r.frames,
    bytes: r.bytes,
    dropped: { ...r.dropped },
    queueDepth: r.queueDepth,
    queueCapacity: r.queueCapacity,
    sendUtilization: utilizationPercent(r, "send"),
    receiveUtilization: utilizationPercent(r, "receive"),
    sendBufferBytes: r.socketBuffers.kernel.sendBytes,
    receiveBufferBytes: r.socketBuffers.kernel.receiveBytes,
    latency: percentiles,
    ...(adaptiveLevel === undefined ? {} : { adaptiveLevel }),
    counts: { ...r.counts },
  };
}

export interface ConnectionEvent {
  /** Unix ms (shown as a time of day). */
  t: number;
  /** Ms of the agent's monotonic clock, as MonitorFigures.at. */
  at: number;
  kind: "connected" | "disconnected";
  detail: string;
  /** Set for a channel other than the one the page shows. */
  channel?: string;
}

export interface MonitorIdentity {
  role: string;
  /** The channel the page shows and listens to, and its socket. */
  channel: string;
  socket: string;
  /** The process's other channels (serve), by name: their sockets. */
  channels?: Record<string, { socket: string }>;
}

interface Viewer {
  listening: boolean;
  dropped: number;
  /** When it was last heard from (performance.now()): a pong, a message, its opening. */
  heard?: number;
}

/** Five minutes of one-second figures for the charts of a newly opened page. */
const HISTORY = 300;
const EVENTS = 100;
/** A listener further behind than this (bytes queued in its WebSocket) misses frames. */
const LISTENER_BACKLOG_BYTES = 64 * 1024;
/** A judgement this many idle timeouts after the viewers were last asked (the next check runs half of one after) comes late: the agent was held up. */
const LATE_CHECK = 0.75;
/**
 * A check judges its viewers this long after it runs, once the loop has read
 * their sockets: after a hold shorter than a late check's, the timers due run
 * before the sockets are read, and the pongs to the last pings wait unread.
 */
export const JUDGE_AFTER_READ_MS = 5;

/**
 * What one viewer may cost. The page sends only `{"listen":true|false}`, so
 * a longer message is refused by Bun before it is read whole (let alone
 * parsed on the thread that carries the audio); each viewer holds at most
 * `backlogBytes` queued (frames stop at LISTENER_BACKLOG_BYTES, the hello
 * and figures go on) and is closed past it; a peer that answers no ping for
 * `idleSeconds` is closed; and only `viewers` pages are served at once.
 */
export interface ViewerLimits {
  viewers: number;
  messageBytes: number;
  backlogBytes: number;
  idleSeconds: number;
}

export const VIEWER_LIMITS: ViewerLimits = { viewers: 16, messageBytes: 1024, backlogBytes: 1024 * 1024, idleSeconds: 30 };

/** Binary message kind for an audio frame: [u8 kind][f64 timestamp ms][Opus packet]. */
export const MONITOR_FRAME = 1;

/**
 * The live monitor behind `--monitor`: a page, figures once a second over a
 * WebSocket, connection history, and the live Opus frames for browsers that
 * pressed Listen. Nothing here runs on the frame path unless someone
 * listens: `frameTap` is undefined without listeners, and a slow browser has
 * frames dropped for it alone (counted), never back-pressuring the socket.
 */
export class MonitorHub {
  private readonly viewers = new Set<ServerWebSocket<Viewer>>();
  private readonly history: MonitorFigures[] = [];
  private readonly events: ConnectionEvent[] = [];
  private listening = 0;
  private listenerDrops = 0;
  /** The hello as sent, made for the history and events as they are now (hello()); undefined once a tick or an event changes them. */
  private helloText: string | undefined;
  private timer: ReturnType<typeof setInterval> | undefined;
  /**
   * The liveness check's next step, a check or its judgement: one at a time, each timed from the one
   * before, so that after a hold no check left due meanwhile judges at once what was just asked.
   */
  private liveness: ReturnType<typeof setTimeout> | undefined;
  /** When the viewers were last asked (pinged) by the liveness check (performance.now()). */
  private lastAsked = performance.now();
  private frameBuffer = new Uint8Array(9 + 4096);
  private frameView = new DataView(this.frameBuffer.buffer);
  /** Set while at least one browser listens; roles call it for every frame. */
  frameTap: ((payload: Uint8Array, timestampMs: number) => void) | undefined;

  constructor(
    readonly identity: MonitorIdentity,
    private readonly figures: () => RoleFigures,
    intervalMs = 1000,
    private readonly limits: ViewerLimits = VIEWER_LIMITS,
  ) {
    this.timer = setInterval(() => this.tick(), intervalMs);
    // Bun's own idle timeout is put off by every send, and the figures go to every viewer each
    // second: a peer that answers nothing would never be closed by it.
    this.checkLater();
    this.websocket = this.handlers();
  }

  event(kind: ConnectionEvent["kind"], detail: string, channel?: string): void {
    const e: ConnectionEvent = { t: Date.now(), at: performance.now(), kind, detail, ...(channel ? { channel } : {}) };
    this.events.push(e);
    if (this.events.length > EVENTS) this.events.shift();
    this.helloText = undefined;
    this.broadcast(JSON.stringify({ type: "event", event: e }));
  }

  /** WebSocket handlers and limits for Bun.serve. */
  readonly websocket: ReturnType<MonitorHub["handlers"]>;

  private handlers() {
    return {
      maxPayloadLength: this.limits.messageBytes,
      backpressureLimit: this.limits.backlogBytes,
      closeOnBackpressureLimit: true,
      idleTimeout: this.limits.idleSeconds,
      sendPings: true,
      open: (ws: ServerWebSocket<Viewer>) => {
        // Upgrades are refused once full; this catches several completing at once.
        if (this.viewers.size >= this.limits.viewers) {
          ws.close(1013, "too many monitor viewers");
          return;
        }
        this.viewers.add(ws);
        ws.data.heard = performance.now();
        ws.send(this.hello());
      },
      message: (ws: ServerWebSocket<Viewer>, message: string | Uint8Array) => {
        if (!this.viewers.has(ws)) return;
        ws.data.heard = performance.now();
        if (typeof message !== "string") return;
        let listen: unknown;
        try {
          // Any JSON at all may come: null has no fields to read.
          listen = (JSON.parse(message) as { listen?: unknown } | null)?.listen;
        } catch {
          return;
        }
        if (typeof listen === "boolean" && listen !== ws.data.listening) {
          ws.data.listening = listen;
          this.listening += listen ? 1 : -1;
          this.updateTap();
        }
      },
      pong: (ws: ServerWebSocket<Viewer>) => {
        ws.data.heard = performance.now();
      },
      close: (ws: ServerWebSocket<Viewer>) => {
        if (!this.viewers.delete(ws)) return;
        if (ws.data.listening) {
          ws.data.listening = false;
          this.listening--;
          this.updateTap();
        }
      },
    };
  }

  /** Upgrades a request for /ws; returns undefined when it was upgraded, 503 when enough pages are open. */
  upgrade(request: Request, server: Bun.Server<Viewer>): Response | undefined {
    if (this.viewers.size >= this.limits.viewers) {
      return new Response(`too many monitor viewers (at most ${this.limits.viewers} at once)\n`, { status: 503 });
    }
    if (server.upgrade(request, { data: { listening: false, dropped: 0 } })) return undefined;
    return new Response("expected a WebSocket upgrade", { status: 400 });
  }

  /** Pages connected now. */
  get viewerCount(): number {
    return this.viewers.size;
  }

  get listeners(): number {
    return this.listening;
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    clearTimeout(this.liveness);
    this.liveness = undefined;
    this.frameTap = undefined;
    for (const ws of this.viewers) ws.close(1001, "agent stopping");
  }

  current(): MonitorFigures {
    return { t: Date.now(), at: performance.now(), ...this.figures(), listenerDrops: this.listenerDrops, listeners: this.listening };
  }

  private tick(): void {
    const figures = this.current();
    this.history.push(figures);
    if (this.history.length > HISTORY) this.history.shift();
    this.helloText = undefined;
    if (this.viewers.size > 0) this.broadcast(JSON.stringify({ type: "figures", figures }));
    // Each listening page hears how many frames it alone missed (figures.listenerDrops sums them all).
    for (const ws of this.viewers) {
      if (ws.data.listening) ws.send(JSON.stringify({ type: "listener", dropped: ws.data.dropped }));
    }
  }

  /**
   * What a viewer is sent as it opens: its identity, five minutes of figures
   * and the last events, 0.3-0.5 MB of JSON (serve's two channels), made
   * once until a tick or an event changes them: made for each viewer, it
   * took a millisecond of the thread that paces the audio (x86; more on the
   * device) every time, and the viewers' bound is on how many at once, not
   * how often, so a peer opening viewers in a loop had it made 200 times a
   * second.
   */
  private hello(): string {
    this.helloText ??= JSON.stringify({ type: "hello", identity: this.identity, history: this.history, events: this.events });
    return this.helloText;
  }

  /** The next liveness check, half an idle timeout from now. */
  private checkLater(): void {
    this.liveness = setTimeout(() => this.checkLiveness(), (this.limits.idleSeconds * 1000) / 2);
    this.liveness.unref?.();
  }

  private checkLiveness(): void {
    this.liveness = setTimeout(() => this.judgeViewers(), JUDGE_AFTER_READ_MS);
    this.liveness.unref?.();
  }

  /**
   * A viewer not heard from (no pong, no message) for the idle timeout is
   * cut off (it answers no close either); the others are pinged, and a page
   * answers each ping with a pong.
   */
  private judgeViewers(): void {
    const now = performance.now();
    // Asked long ago: the agent was held up (stopped, starved of the CPU) since, before the check or after
    // it, so it asked no viewer anything meanwhile, and their answers to the last pings may wait unread
    // (the judgement then runs before the loop reads them). Ask again; judge next time.
    const heldUp = now - this.lastAsked > this.limits.idleSeconds * 1000 * LATE_CHECK;
    this.lastAsked = now;
    for (const ws of this.viewers) {
      if (!heldUp && now - (ws.data.heard ?? now) >= this.limits.idleSeconds * 1000) ws.terminate();
      else ws.ping();
    }
    this.checkLater();
  }

  private broadcast(text: string): void {
    for (const ws of this.viewers) ws.send(text);
  }

  private updateTap(): void {
    this.frameTap = this.listening > 0 ? this.sendFrame : undefined;
  }

  private readonly sendFrame = (payload: Uint8Array, timestampMs: number): void => {
    const size = 9 + payload.length;
    this.frameView.setUint8(0, MONITOR_FRAME);
    this.frameView.setFloat64(1, timestampMs, true);
    this.frameBuffer.set(payload, 9);
    const message = this.frameBuffer.subarray(0, size);
    for (const ws of this.viewers) {
      if (!ws.data.listening) continue;
      if (ws.getBufferedAmount() > LISTENER_BACKLOG_BYTES) {
        ws.data.dropped++;
        this.listenerDrops++;
        continue;
      }
      // 0: the socket dropped it (closing or over its own limit).
      if (ws.sendBinary(message) === 0) {
        ws.data.dropped++;
        this.listenerDrops++;
      }
    }
  };
}
