import type { ChannelEnd, ChannelObserver } from "../channels/channel-end.ts";
import { SOCKET_BUFFER_PRESETS, socketBufferSizes, type Settings } from "../config.ts";
import { AdaptiveOptimizer, DEFAULT_ADAPTIVE, type AdaptiveState } from "../observe/adaptive-optimizer.ts";
import type { LatencyMonitor, LatencyOperation } from "../observe/latency-monitor.ts";
import type { ChannelMetrics } from "../observe/metrics.ts";
import { monitorFigures, type ChannelFigures, type MonitorHub } from "../observe/monitor/hub.ts";
import { sinkFileField, summaryFields, type ChannelReadings } from "../observe/readings.ts";
import { DropReason } from "../transport/frame-stats.ts";
import type { Report } from "../transport/report.ts";

/** What a channel end's instruments read: its socket (a server's mode), buffers and optimizer. */
export type ChannelSettings = Settings<"socket" | "socket-buffers"> & { "socket-mode"?: number } & (AdaptiveSettings | { adaptive?: undefined });
/** A sending end's optimizer (a receiver has none: config.ts ADAPTIVE). */
export type AdaptiveSettings = Settings<"adaptive" | "adaptive-threshold" | "adaptive-window-ms" | "adaptive-calm-ms">;

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
  /**
   * The send buffer the optimizer relaxes to, as the kernel holds it: read back
   * from the connection when it first escalates, or twice the size asked for
   * (as Linux grants it) where there was none.
   */
  private baseSendBufferBytes = 0;
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
      this.baseSendBufferBytes = 2 * buffers.sendBytes;
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
   * socket queues are read here only while it is escalated and finds no
   * pressure (is the calm real?); /metrics and the monitor read them as they
   * are when asked.
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
    // A reader that keeps the escalated buffer filled past the base one's size is not calm, though
    // it makes no pressure now: relaxed, the writer would find no room, and its drops escalate again.
    else if (optimizer.state.level > 0 && this.holdsMoreThanBase()) optimizer.busy();
    optimizer.tick();
  }

  /** Whether what the peer has not read yet would fill the base send buffer. */
  private holdsMoreThanBase(): boolean {
    const tuner = this.end.tuner;
    tuner.sample();
    return tuner.readings().sendQueueBytes >= this.baseSendBufferBytes;
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
    // The base buffer as the kernel holds it (clamped to net.core.wmem_max, say), before it grows.
    const before = end.tuner.readings().kernel.sendBytes;
    if (decision === "escalate" && state.level === 1 && before > 0) this.baseSendBufferBytes = before;
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
export function collectGarbage(dropCode = false): { heapUsedBytes: number; ms: number } {
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
