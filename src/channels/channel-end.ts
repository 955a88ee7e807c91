import type { FilePlacement } from "../io/file-placement.ts";
import type { AudioConfig, Channel } from "../protocol/index.ts";
import type { FrameQueue } from "../transport/frame-queue.ts";
import type { FrameStats } from "../transport/frame-stats.ts";
import type { SocketFileIdentity } from "../transport/socket-file.ts";
import type { SocketTuner } from "../transport/socket-tuner.ts";

/**
 * What a channel end tells whoever watches it (the role's instruments). Every
 * hook is cheap; `frameTap` is set only while someone listens to the audio.
 */
export interface ChannelObserver {
  /** After each write that completed messages: how many, and how long the oldest waited (ms). */
  written(messages: number, bytes: number, oldestWaitMs: number, writeCallMs: number): void;
  /** A sender: an OpusFrame was given to it (queued or dropped). */
  submitted(): void;
  /** A receiver: arrival time minus the header timestamp of a frame (ms); NaN when the stamp gave none (PeerStamps). */
  frameAge(ms: number): void;
  /** The input client: a Heartbeat's (or Config's) round trip to its Ack (ms). */
  roundTrip(ms: number): void;
  /** A connection came or went, with the peer's socket or the reason. */
  connection(kind: "connected" | "disconnected", detail: string): void;
  /** Every OpusFrame sent or received, while set. */
  readonly frameTap: ((payload: Uint8Array, timestampMs: number) => void) | undefined;
}

export const NO_OBSERVER: ChannelObserver = {
  written() {},
  submitted() {},
  frameAge() {},
  roundTrip() {},
  connection() {},
  frameTap: undefined,
};

/** One end of a channel, as the role's instruments see it. */
export interface ChannelEnd {
  readonly tuner: SocketTuner;
  /** Everything the end counts, in the one shape metrics, /healthz, the monitor and the logs read. */
  readings(): ReturnType<typeof endReadings>;
  /** Sends this end's events to `observer` from now on. */
  observe(observer: ChannelObserver): void;
  /** A sender: makes its send queue hold `frames` (the adaptive optimizer's decision). */
  resizeQueue?(frames: number): void;
  /** A server: the socket file it bound, once listening (the path may lead elsewhere since). */
  socketFile?(): SocketFileIdentity | undefined;
}

interface EndParts {
  channel: Channel;
  direction: "send" | "receive";
  connected: boolean;
  /** A server: its socket accepts clients (not yet, or no longer: false). */
  listening?: boolean;
  connects: number;
  connectionDrops: number;
  protocolErrors: number;
  tuner: SocketTuner;
  /** A sender's counters and queue. */
  stats?: FrameStats;
  queue?: FrameQueue;
  /** A sender's messages neither delivered nor dropped yet: queued, or half-written (FrameWriter.inHand). */
  inHand?: number;
  /** A receiver's counts, and the frames it received and then dropped (by its sink), by reason. */
  received?: { frames: number; bytes: number; lastFrameUnixMs: number };
  dropped?: Readonly<Record<string, number>>;
  /** A receiver whose sink records into a regular file: where that file stands against the sink's path. */
  sinkFile?: FilePlacement;
  counts?: Record<string, number>;
  config?: AudioConfig;
}

/** The readings of a channel end from its parts: the one place their shape is built. */
export function endReadings(parts: EndParts) {
  const { stats, queue, received } = parts;
  return {
    channel: parts.channel,
    direction: parts.direction,
    connected: parts.connected,
    listening: parts.listening,
    frames: received?.frames ?? stats?.framesDelivered ?? 0,
    bytes: received?.bytes ?? stats?.deliveredBytes ?? 0,
    submitted: stats?.submitted ?? 0,
    delivered: stats?.delivered ?? 0,
    dropped: { ...(stats?.dropped ?? parts.dropped) } as Record<string, number>,
    connects: parts.connects,
    connectionDrops: parts.connectionDrops,
    protocolErrors: parts.protocolErrors,
    queueDepth: queue?.length ?? 0,
    inHand: parts.inHand ?? 0,
    queueCapacity: queue?.capacity ?? 0,
    queueAllocatedBytes: queue?.allocatedBytes ?? 0,
    lastFrameUnixMs: received?.lastFrameUnixMs ?? stats?.lastFrameUnixMs ?? 0,
    writeCalls: stats?.writeCalls ?? 0,
    shortWrites: stats?.shortWrites ?? 0,
    socketBuffers: parts.tuner.readings(),
    counts: parts.counts ?? {},
    config: parts.config,
    // Only where there is one: an end with no file sink has no such reading.
    ...(parts.sinkFile !== undefined ? { sinkFile: parts.sinkFile } : {}),
  };
}
