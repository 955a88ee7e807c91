import type { FilePlacement } from "../io/file-placement.ts";
import type { AudioConfig, Channel } from "../protocol/index.ts";

/** Socket buffer sizes as asked for and as the kernel holds them (bytes). */
export interface BufferSizes {
  sendBytes: number;
  receiveBytes: number;
}

/**
 * What one channel end counts, in one shape: read by the metrics on scrape,
 * by /healthz, by the monitor, and by the final "stopped" log line. Plain
 * numbers, so reading costs the audio path nothing.
 */
export interface ChannelReadings {
  channel: Channel;
  /** A sender (output serve, input send) or a receiver (output recv, input serve). */
  direction: "send" | "receive";
  connected: boolean;
  /**
   * A server: its socket accepts clients. False before it listens and once its channel has
   * ended (serve keeps the other channel running); a client has none.
   */
  listening?: boolean;
  /** OpusFrames delivered (a sender) or received (a receiver). */
  frames: number;
  /** Bytes delivered or received, headers included. */
  bytes: number;
  /** A sender's accounting: messages submitted = delivered + dropped (by reason). */
  submitted: number;
  delivered: number;
  dropped: Record<string, number>;
  /** Connections made (clients) or accepted (servers). */
  connects: number;
  /** Connections that ended other than by our own stop or the peer's clean Stop. */
  connectionDrops: number;
  /** Framing violations by the peer (each ended its connection). */
  protocolErrors: number;
  queueDepth: number;
  /** A sender's messages in its hands, neither delivered nor dropped yet (queued, or half-written): what submitted less delivered and dropped leaves. */
  inHand: number;
  queueCapacity: number;
  /** Bytes the send queue holds allocated (its ring, grown under pressure, given back after a lowered bound). */
  queueAllocatedBytes: number;
  /** Unix ms of the last OpusFrame delivered or received; 0 before the first. */
  lastFrameUnixMs: number;
  /** write() calls, and those the kernel did not take whole (socket buffer overflows). */
  writeCalls: number;
  shortWrites: number;
  socketBuffers: {
    requested: BufferSizes;
    kernel: BufferSizes;
    /** Bytes queued unread in the kernel at the last sample, each way. */
    sendQueueBytes: number;
    receiveQueueBytes: number;
    /** Failed socket option calls, by call ("setsockopt(SO_SNDBUF)", ...). */
    failures: Record<string, number>;
  };
  /** Counts only this channel end has (acks, heartbeats, sessions, ...), named as they are logged. */
  counts: Record<string, number>;
  /** The input channel's Config, as the server last received it. */
  config?: AudioConfig;
  /**
   * A receiver whose sink records into a regular file: where that file stands
   * against the sink's path (removed, moved away, replaced: the recording goes
   * on into the file opened, no longer at that path). None for a pipe, a
   * device or stdout, nor before the sink is opened.
   */
  sinkFile?: FilePlacement;
}

export function droppedTotal(r: ChannelReadings): number {
  let total = 0;
  for (const n of Object.values(r.dropped)) total += n;
  return total;
}

/** A sender, or a receiver whose sink can drop frames (it names its reasons from the start). */
function canDrop(r: ChannelReadings): boolean {
  return r.direction === "send" || Object.keys(r.dropped).length > 0;
}

/** Connections after the first. */
export function reconnects(r: ChannelReadings): number {
  return Math.max(0, r.connects - 1);
}

/** How full a kernel socket buffer was at the last sample, in percent (0 before the first connection). */
export function utilizationPercent(r: ChannelReadings, buffer: "send" | "receive"): number {
  const size = buffer === "send" ? r.socketBuffers.kernel.sendBytes : r.socketBuffers.kernel.receiveBytes;
  const queued = buffer === "send" ? r.socketBuffers.sendQueueBytes : r.socketBuffers.receiveQueueBytes;
  return size > 0 ? Math.min(100, (queued / size) * 100) : 0;
}

/**
 * The accounting as log fields (the final "stopped" line's, each stats
 * line's as a change): a sender's
 * submitted, delivered, dropped and dropped_<reason> for each reason seen,
 * write_calls and short_writes; a receiver's dropped ones where its sink can
 * drop (a FIFO's); the frames and the peer's protocol errors; then connects
 * and the end's own counts.
 */
export function summaryFields(r: ChannelReadings): Record<string, number> {
  const fields: Record<string, number> = {};
  if (r.direction === "send") {
    fields.submitted = r.submitted;
    fields.delivered = r.delivered;
  }
  if (canDrop(r)) {
    fields.dropped = droppedTotal(r);
    for (const [reason, n] of Object.entries(r.dropped)) if (n > 0) fields[`dropped_${reason}`] = n;
  }
  if (r.direction === "send") {
    // How often the peer fell behind: writes the kernel did not take whole (the overflow metric).
    fields.write_calls = r.writeCalls;
    fields.short_writes = r.shortWrites;
  }
  fields.frames = r.frames;
  fields.protocol_errors = r.protocolErrors;
  fields.connects = r.connects;
  return Object.assign(fields, r.counts);
}

/**
 * Where a recording's file stands, as a log field, while it is not at its
 * path (removed, moved away, replaced): the stats lines and the final
 * "stopped" line say so for as long as it lasts, beside the one warning
 * told as it changed. Nothing while it is in place, or for no file.
 */
export function sinkFileField(r: ChannelReadings): { sink_file?: FilePlacement } {
  return r.sinkFile !== undefined && r.sinkFile !== "in_place" ? { sink_file: r.sinkFile } : {};
}

/** The final "stopped" line's fields: the accounting, and where a recording's file stands if not at its path. */
export function stoppedFields(r: ChannelReadings): Record<string, number | string> {
  return { ...summaryFields(r), ...sinkFileField(r) };
}

/** What /healthz says of a channel end. */
export function healthFields(r: ChannelReadings): Record<string, unknown> {
  return {
    ...(r.listening !== undefined ? { listening: r.listening } : {}),
    connected: r.connected,
    frames: r.frames,
    drops: droppedTotal(r),
    ...(canDrop(r) ? { dropped: { ...r.dropped } } : {}),
    ...(r.direction === "send" ? { queue_depth: r.queueDepth } : {}),
    // A sender reads too: Acks (input send), or whatever an output client sends that breaks the framing.
    protocol_errors: r.protocolErrors,
    connects: r.connects,
    // The count /metrics has as _connection_drops_total: a peer that keeps dropping shows per channel here too.
    connection_drops: r.connectionDrops,
    ...r.counts,
    ...(r.config ? { config: r.config } : {}),
    ...(r.sinkFile !== undefined ? { sink_file: r.sinkFile } : {}),
  };
}
