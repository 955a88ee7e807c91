/**
 * Why a frame was not delivered. Every frame a role submits ends up either
 * delivered (accepted whole by the kernel for the peer's socket; not
 * necessarily read by the peer) or dropped for one of these.
 */
export const DropReason = {
  /** The send queue was full (drop-oldest or drop-newest policy). */
  QueueFull: "queue_full",
  /** Live mode with no client connected. */
  NoClient: "no_client",
  /** The frame waited longer than the write deadline for room in the socket buffer. */
  WriteDeadline: "write_deadline",
  /**
   * Live mode: the frame grew older than the latency budget in the queue, held back
   * while what the client had not read yet already spanned the budget.
   */
  LatencyBudget: "latency_budget",
  /** Queued for a client that accepted nothing for too long and was disconnected. */
  ClientStuck: "client_stuck",
  /** Partly written to a client that then went away. */
  ClientGone: "client_gone",
  /** Still queued when the agent stopped and the bounded final flush ran out. */
  Shutdown: "shutdown",
} as const;
export type DropReason = (typeof DropReason)[keyof typeof DropReason];
export const DROP_REASONS: readonly DropReason[] = Object.values(DropReason);

/**
 * Plain counters for one send path, bumped on the hot path without allocation
 * and read by metrics on scrape.
 */
export class FrameStats {
  submitted = 0;
  delivered = 0;
  deliveredBytes = 0;
  /** write() calls, and those the kernel did not take whole (overflow). */
  writeCalls = 0;
  shortWrites = 0;
  /** Unix ms of the last write that completed a message; 0 before the first. */
  lastDeliveredUnixMs = 0;
  /** Of `delivered`, the OpusFrames (the rest are Heartbeats, Stop, Acks). */
  framesDelivered = 0;
  /** Unix ms of the last write that completed an OpusFrame; 0 before the first. */
  lastFrameUnixMs = 0;
  readonly dropped: Record<DropReason, number> = {
    queue_full: 0,
    no_client: 0,
    write_deadline: 0,
    latency_budget: 0,
    client_stuck: 0,
    client_gone: 0,
    shutdown: 0,
  };

  get droppedTotal(): number {
    let total = 0;
    for (const reason of DROP_REASONS) total += this.dropped[reason];
    return total;
  }
}
