import type { Socket } from "bun";
import { MAX_MESSAGE, MessageType, wallClock, type WallClock } from "../protocol/index.ts";
import type { FrameQueue } from "./frame-queue.ts";
import { DropReason } from "./frame-stats.ts";
import { InFlight } from "./in-flight.ts";
import { getSocketBuffers, sendQueueBytesNow } from "./socket-options.ts";

/** Largest single write: several frames coalesced, one syscall (the high-load SO_SNDBUF size; measured in the benchmark). */
export const COALESCE_BYTES = 256 * 1024;

/** While writing is held by the latency budget, look again this often (a new frame looks at once). */
const HOLD_RECHECK_MS = 10;

/**
 * While the socket is full, look this often whether the client has read
 * anything (the kernel's unread count, ioctl TIOCOUTQ, fell), besides waiting
 * for `drain`, where waiting costs: in live mode (frames age) and while a stop
 * finishes a begun message. A Unix socket reports room (`drain`) only once
 * three quarters of its send buffer are free again: a client that reads
 * steadily but slowly (a real-time one) has made room for more long before.
 * Room found so (the unread count fell below the send buffer's size, as the
 * kernel judges room) is taken as a drain is.
 */
const ROOM_RECHECK_MS = 10;

export interface FrameWriterOptions {
  /**
   * Lossless: nothing is ever dropped; a message cut short by a vanished
   * client is sent again, whole, to the next one. Live: stale and unsendable
   * frames are dropped (and counted) so that audio stays current.
   */
  lossless: boolean;
  /** Live mode: drop a frame that waited longer than this (ms) for room in the socket buffer; 0 = never. */
  writeDeadlineMs: number;
  /**
   * Live mode's latency budget (ms; 0 or absent: none): writing holds while
   * what the client has not read yet was enqueued longer ago than this, and
   * queued frames older than this are dropped (latency_budget).
   */
  maxLatencyMs?: number;
  /** Live mode: disconnect a client that took nothing while this many frames were dropped for it. */
  stuckFrames: number;
  /** Called (at most once per client) when the client is judged stuck; the owner disconnects it. */
  onStuck?: (socket: Socket<unknown>) => void;
  /** After each write that completed messages: how many, and how long the oldest waited (ms). */
  onWritten?: (messages: number, bytes: number, oldestWaitMs: number, writeCallMs: number) => void;
  /** Each message other than OpusFrame, once it is written whole (e.g. a Heartbeat awaiting its Ack). */
  onControlWritten?: (type: MessageType) => void;
  /** Stamps messages; the process's wall clock unless a test injects one. */
  clock?: WallClock;
}

/**
 * Moves messages from a FrameQueue to the current client socket, frame-atomic:
 * a message is written whole or not started. Runs of queued messages go out
 * in one write; a short write keeps the started message aside (the tail) and
 * resumes it from `drain` before anything else.
 */
export class FrameWriter {
  private socket: Socket<unknown> | undefined;
  /** The one started-but-unfinished message: its bytes, size, and how much is out. */
  private readonly tail = new Uint8Array(MAX_MESSAGE);
  private tailSize = 0;
  private tailSent = 0;
  private tailEnqueuedAt = 0;
  private tailType: MessageType = MessageType.OpusFrame;
  /** The kernel took less than asked: wait for `drain`. */
  private blocked = false;
  /** Set by discard(): the writer is finished, submits are dropped for this reason. */
  private closedFor: DropReason | undefined;
  /** The latency budget holds writing: the client has not read what is in flight. */
  private held = false;
  private holdTimer: ReturnType<typeof setTimeout> | undefined;
  private roomTimer: ReturnType<typeof setInterval> | undefined;
  /** The client's socket, and what it held unread when the writer blocked (-1: cannot tell). */
  private fd = -1;
  private unreadWhenBlocked = -1;
  private readonly inFlight = new InFlight();
  /** Live mode's limits in ms (0: none); lossless mode has none. */
  private readonly deadlineMs: number;
  private readonly budgetMs: number;
  /** Age at which dropStale drops a queued message: the tighter live limit (Infinity: none). */
  private readonly staleAfterMs: number;
  private scheduled = false;
  /** Pressure drops (queue full, deadline, budget) counted when the client last took bytes. */
  private dropsAtProgress = 0;
  private stuckReported = false;
  /** Everyone waiting for queue room, and for the queue to empty: each is woken once. */
  private readonly spaceWaiters: (() => void)[] = [];
  private readonly idleWaiters: (() => void)[] = [];
  private readonly clock: WallClock;
  private readonly pumpTask = () => {
    this.scheduled = false;
    this.pump();
  };
  private readonly recheckTask = () => {
    this.holdTimer = undefined;
    this.pump();
  };
  private readonly roomTask = () => {
    const socket = this.socket;
    if (!socket || !this.blocked || !this.roomWorthFinding()) return this.stopRoomChecks();
    const unread = sendQueueBytesNow(this.fd);
    if (unread >= this.unreadWhenBlocked) return;
    this.takeRoom(socket, unread);
  };

  constructor(
    readonly queue: FrameQueue,
    private readonly options: FrameWriterOptions,
  ) {
    this.clock = options.clock ?? wallClock;
    this.deadlineMs = options.lossless ? 0 : options.writeDeadlineMs;
    this.budgetMs = options.lossless ? 0 : (options.maxLatencyMs ?? 0);
    this.staleAfterMs = Math.min(...[this.deadlineMs, this.budgetMs].filter((ms) => ms > 0));
  }

  get connected(): boolean {
    return this.socket !== undefined;
  }

  /** Messages in its hands, neither delivered nor dropped yet: those queued, and one half-written. */
  get inHand(): number {
    return this.queue.length + (this.tailSize > 0 ? 1 : 0);
  }

  /** True when nothing is queued or half-written. */
  get idle(): boolean {
    return this.inHand === 0;
  }

  /** Starts writing to `socket` (replacing any previous client). */
  attach(socket: Socket<unknown>): void {
    if (this.socket) this.release(false);
    this.socket = socket;
    this.blocked = false;
    const fd = socket.fd;
    this.fd = typeof fd === "number" ? fd : -1;
    this.inFlight.reset(this.fd);
    this.dropsAtProgress = this.pressureDrops();
    this.stuckReported = false;
    this.schedule();
  }

  /**
   * The client is gone. Live mode drops what was queued for it (no_client),
   * and a half-written message as client_gone; lossless keeps everything for
   * the next client.
   */
  detach(reason: DropReason = DropReason.NoClient): void {
    if (!this.socket) return;
    this.release(!this.options.lossless, reason);
    this.socket = undefined;
  }

  /**
   * The end (shutdown): drops everything queued or half-written, and
   * whatever is submitted from now on, counted under `reason`. With
   * `keepStarted`, a message the client has begun to read is left to finish
   * (waitForIdle tells when); a later discard drops it if it has not.
   * (Lossless keeps a message cut by a vanished client for the next, from
   * its start: no client has begun it.)
   */
  discard(reason: DropReason, keepStarted = false): void {
    this.closedFor = reason;
    const begun = this.socket !== undefined && this.tailSent > 0;
    if (this.tailSize > 0 && !(keepStarted && begun)) {
      this.queue.stats.dropped[reason]++;
      this.tailSize = 0;
      this.tailSent = 0;
    }
    this.queue.dropAll(reason);
    if (this.tailSize === 0) this.stopRoomChecks();
    else if (this.blocked) this.watchRoom();
    this.wake();
  }

  /**
   * Queues a message stamped `timestampMs` (Unix ms; now when omitted) for the
   * client, or counts it as no_client in live mode without one.
   */
  submit(type: Parameters<FrameQueue["push"]>[0], payload: Uint8Array, timestampMs?: number): boolean {
    // One clock read per frame: the header timestamp (wall clock) derives from the monotonic one.
    const now = performance.now();
    timestampMs ??= this.clock.at(now);
    const live = !this.options.lossless;
    // After the final discard nothing can go out: a late submit (a waiter woken by that very
    // discard) is counted under the same reason, not left in the queue uncounted.
    if (this.closedFor) {
      this.queue.stats.submitted++;
      this.queue.stats.dropped[this.closedFor]++;
      return false;
    }
    // A full queue the socket can still take (a burst submitted at once, as the Acks of the
    // Heartbeats one read brings) goes out first: only what the client leaves unread is dropped.
    if (live && this.queue.isFull && this.socket && !this.blocked) this.pump();
    if (!this.socket && live) {
      this.queue.stats.submitted++;
      this.queue.stats.dropped[DropReason.NoClient]++;
      return false;
    }
    if (this.blocked && live) this.dropStale(now);
    const accepted = this.queue.push(type, payload, timestampMs, now);
    if (this.blocked) this.watchRoom();
    // Stuck: the client took nothing while `stuckFrames` frames were dropped for it. Counting
    // drops, not arrivals, lets a healthy client ride out a burst the queue can absorb.
    if ((this.blocked || this.held) && live && !this.stuckReported && this.socket) {
      if (this.pressureDrops() - this.dropsAtProgress >= this.options.stuckFrames) {
        this.stuckReported = true;
        this.options.onStuck?.(this.socket);
      }
    }
    this.schedule();
    return accepted;
  }

  /** Resolves when the queue has room (lossless sources wait here). */
  waitForSpace(): Promise<void> {
    if (!this.queue.isFull) return Promise.resolve();
    return new Promise((resolve) => this.spaceWaiters.push(resolve));
  }

  /** Resolves when everything queued has been written (or dropped). */
  waitForIdle(): Promise<void> {
    if (this.idle) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Socket `drain` handler: the kernel has room again. */
  onDrain(socket: Socket<unknown>): void {
    if (socket !== this.socket) return;
    this.blocked = false;
    this.dropStale(performance.now());
    this.pump();
  }

  /**
   * The connection's send buffer was resized (the adaptive optimizer): a
   * blocked writer takes the room a larger one made at once. The kernel wakes
   * no `drain` for it, only for what the client reads, so a client that
   * stalls would leave the larger buffer unused for as long as it stalls.
   */
  sendBufferResized(): void {
    const socket = this.socket;
    if (!socket || !this.blocked) return;
    const unread = sendQueueBytesNow(this.fd);
    if (unread >= 0) this.takeRoom(socket, unread);
  }

  /** Writes as much as the kernel takes now (live mode: as the latency budget allows). */
  pump(): void {
    const socket = this.socket;
    if (!socket || this.blocked) return;
    if (this.budgetMs > 0 && this.overBudget()) return;
    if (this.tailSize > 0 && !this.writeTail(socket)) return;
    const queue = this.queue;
    const stats = queue.stats;
    const tracking = this.budgetMs > 0;
    while (queue.length > 0) {
      const n = queue.contiguousRun(COALESCE_BYTES);
      if (n === 0) break;
      const start = queue.runStart;
      const size = queue.runBytes;
      const oldest = queue.oldestEnqueuedAt();
      // Read right around the call: write_call is the time in the kernel's write, nothing else.
      const before = performance.now();
      const written = socket.write(queue.buffer, start, size);
      const after = performance.now();
      stats.writeCalls++;
      if (written < 0) {
        this.gone(socket);
        return;
      }
      if (written > 0) {
        this.dropsAtProgress = this.pressureDrops();
        if (tracking) this.inFlight.wrote(written, oldest);
      }
      if (written === size) {
        this.delivered(n, this.framesAmong(n), size, after - oldest, after - before, after);
        queue.shift(n);
        continue;
      }
      // Short write: count the whole messages that went out, set the started one aside.
      stats.shortWrites++;
      let whole = 0;
      let wholeBytes = 0;
      while (whole < n && wholeBytes + queue.sizeAt(whole) <= written) wholeBytes += queue.sizeAt(whole++);
      if (whole > 0) {
        this.delivered(whole, this.framesAmong(whole), wholeBytes, after - oldest, after - before, after);
      }
      if (written > wholeBytes) {
        const tailStart = start + wholeBytes;
        this.tailType = queue.typeAt(whole);
        this.tailSize = queue.sizeAt(whole);
        this.tailSent = written - wholeBytes;
        this.tailEnqueuedAt = queue.enqueuedAtOf(whole);
        this.tail.set(queue.buffer.subarray(tailStart, tailStart + this.tailSize));
        whole++;
      }
      queue.shift(whole);
      this.block();
      break;
    }
    this.wake();
  }

  private writeTail(socket: Socket<unknown>): boolean {
    const remaining = this.tailSize - this.tailSent;
    const written = socket.write(this.tail, this.tailSent, remaining);
    this.queue.stats.writeCalls++;
    if (written < 0) {
      this.gone(socket);
      return false;
    }
    if (written > 0) {
      this.dropsAtProgress = this.pressureDrops();
      if (this.budgetMs > 0) this.inFlight.wrote(written, this.tailEnqueuedAt);
    }
    this.tailSent += written;
    if (written < remaining) {
      this.queue.stats.shortWrites++;
      this.block();
      return false;
    }
    const now = performance.now();
    const isFrame = this.tailType === MessageType.OpusFrame;
    if (!isFrame) this.options.onControlWritten?.(this.tailType);
    this.delivered(1, isFrame ? 1 : 0, this.tailSize, now - this.tailEnqueuedAt, 0, now);
    this.tailSize = 0;
    this.tailSent = 0;
    return true;
  }

  /** Messages fully written at `atMs` (monotonic), `frames` of them OpusFrames. */
  private delivered(messages: number, frames: number, bytes: number, oldestWaitMs: number, writeCallMs: number, atMs: number): void {
    const stats = this.queue.stats;
    const now = this.clock.at(atMs);
    stats.delivered += messages;
    stats.deliveredBytes += bytes;
    stats.lastDeliveredUnixMs = now;
    if (frames > 0) {
      stats.framesDelivered += frames;
      stats.lastFrameUnixMs = now;
    }
    this.options.onWritten?.(messages, bytes, oldestWaitMs, writeCallMs);
  }

  /**
   * The latency budget, checked before each pump: drops what grew older than
   * the budget in the queue, and holds writing while data the client has not
   * read yet is that old, since whatever is written now would reach it later
   * still. Looked at again by the next frame, or after HOLD_RECHECK_MS.
   */
  private overBudget(): boolean {
    const cutoff = performance.now() - this.budgetMs;
    this.queue.dropOlderThan(cutoff, DropReason.LatencyBudget);
    const inFlight = this.inFlight;
    if (!inFlight.olderThan(cutoff)) {
      this.held = false;
      return false;
    }
    if (inFlight.clientRead) this.dropsAtProgress = this.pressureDrops();
    this.held = true;
    if (!this.idle) this.holdTimer ??= setTimeout(this.recheckTask, HOLD_RECHECK_MS);
    this.wake();
    return true;
  }

  /** Live mode, while the socket buffer is full: what waited too long for room is stale (lossless: nothing). */
  private dropStale(now: number): void {
    if (this.budgetMs > 0) this.queue.dropOlderThan(now - this.budgetMs, DropReason.LatencyBudget);
    if (this.deadlineMs > 0) this.queue.dropOlderThan(now - this.deadlineMs, DropReason.WriteDeadline);
  }

  private pressureDrops(): number {
    const dropped = this.queue.stats.dropped;
    return dropped[DropReason.QueueFull] + dropped[DropReason.WriteDeadline] + dropped[DropReason.LatencyBudget];
  }

  /** Counts the OpusFrames among the `n` oldest queued messages (just written) and reports the others. */
  private framesAmong(n: number): number {
    const report = this.options.onControlWritten;
    let frames = 0;
    for (let i = 0; i < n; i++) {
      const type = this.queue.typeAt(i);
      if (type === MessageType.OpusFrame) frames++;
      else report?.(type);
    }
    return frames;
  }

  /** write() returned -1: the socket closed under us. */
  private gone(socket: Socket<unknown>): void {
    if (socket === this.socket) this.detach(DropReason.NoClient);
  }

  private release(dropQueued: boolean, reason: DropReason = DropReason.NoClient): void {
    if (this.tailSize > 0) {
      if (this.options.lossless) {
        this.tailSent = 0; // resend whole to the next client
      } else {
        this.queue.stats.dropped[DropReason.ClientGone]++;
        this.tailSize = 0;
        this.tailSent = 0;
      }
    }
    if (dropQueued) this.queue.dropAll(reason);
    this.blocked = false;
    this.held = false;
    clearTimeout(this.holdTimer);
    this.holdTimer = undefined;
    this.stopRoomChecks();
    this.fd = -1;
    this.inFlight.reset(-1);
    this.wake();
  }

  /**
   * The kernel took less than asked: wait for `drain`. What the client has not
   * read is noted now, in every mode: whatever it reads from here on is room,
   * also when the room checks start later (a stop finishing a begun message).
   */
  private block(): void {
    this.blocked = true;
    this.unreadWhenBlocked = sendQueueBytesNow(this.fd);
    this.watchRoom();
  }

  /**
   * Whether room found now would let something go that waiting for `drain`
   * would not: a stop finishing its begun frame, or a queued message that
   * dropStale would keep (the newest is within the live limits, or the Stop).
   * Otherwise the checks stop, and a submit starts them again: a client that
   * reads nothing while nothing new comes costs no wake-ups.
   */
  private roomWorthFinding(): boolean {
    if (this.closedFor) return true;
    const queue = this.queue;
    const newest = queue.length - 1;
    if (newest < 0) return false;
    if (queue.typeAt(newest) === MessageType.Stop) return true;
    return performance.now() - queue.enqueuedAtOf(newest) < this.staleAfterMs;
  }

  /**
   * Blocked, with `unread` bytes the client has not read (-1: cannot tell):
   * room found is taken as a drain is. The kernel takes a write while what is
   * unread is under the send buffer's size; the last write may have taken it
   * well past that, and the client may have freed less than that.
   */
  private takeRoom(socket: Socket<unknown>, unread: number): void {
    if (unread >= 0) {
      const buffers = getSocketBuffers(this.fd);
      if (buffers.ok && unread >= buffers.sendBytes) {
        this.unreadWhenBlocked = unread;
        return;
      }
    }
    this.stopRoomChecks();
    if (unread >= 0) this.onDrain(socket);
  }

  /** Blocked: look for room on a timer too where waiting for `drain` costs (see ROOM_RECHECK_MS). */
  private watchRoom(): void {
    if (this.roomTimer || !(this.deadlineMs > 0 || this.budgetMs > 0 || this.closedFor)) return;
    if (this.unreadWhenBlocked > 0) this.roomTimer = setInterval(this.roomTask, ROOM_RECHECK_MS);
  }

  private stopRoomChecks(): void {
    clearInterval(this.roomTimer);
    this.roomTimer = undefined;
  }

  private schedule(): void {
    if (this.scheduled || !this.socket || this.blocked) return;
    this.scheduled = true;
    queueMicrotask(this.pumpTask);
  }

  private wake(): void {
    if (this.spaceWaiters.length > 0 && !this.queue.isFull) release(this.spaceWaiters);
    if (this.idleWaiters.length > 0 && this.idle) release(this.idleWaiters);
  }
}

/** Resolves every waiter (their callbacks run later, as microtasks, so none can join meanwhile) and forgets them. */
function release(waiters: (() => void)[]): void {
  for (const resolve of waiters) resolve();
  waiters.length = 0;
}
