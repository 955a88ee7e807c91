import { HEADER_SIZE, MAX_MESSAGE, MAX_PAYLOAD, MessageType, writeHeader } from "../protocol/index.ts";
import { DropReason, FrameStats } from "./frame-stats.ts";

export type DropPolicy = "oldest" | "newest";

/**
 * The most bytes a send queue's ring ever takes, whatever its bound in frames: 8 MiB, which the
 * default queue (500 frames, 2000 at the adaptive optimizer's top level) never reaches even
 * with the largest frames.
 */
export const QUEUE_MAX_BYTES = 8 * 1024 * 1024;

/** The ring and the per-message arrays start this small and double as messages need room. */
const FIRST_RING_BYTES = 64 * 1024;
const FIRST_SLOTS = 64;

/**
 * A bounded send queue of whole, encoded messages in one byte ring.
 *
 * Messages are stored header-and-payload, back to back, so a run of queued
 * messages is one contiguous region that the writer hands to the kernel in a
 * single write (coalescing) without copying again. Only whole, unstarted
 * messages live here: the writer takes a message out as soon as any of its
 * bytes reach the socket, so dropping from the queue can never cut a frame.
 *
 * Two bounds: `capacity` messages, and `maxBytes` of ring (8 MiB by
 * default). The ring is sized by what it holds: it starts at 64 KiB and
 * doubles only when a message finds no room, up to `maxBytes`, so a queue of
 * small Opus frames never reserves room for 4 KiB ones. A message never wraps:
 * it goes at the end of the data or, when the end has no room, at the start
 * of the ring. The queue counts as full while it holds more than
 * `maxBytes - 2 x MAX_MESSAGE`: below that a largest message always fits.
 * After its bound in messages is lowered (the adaptive optimizer relaxing),
 * the ring and the per-message arrays give back the room a higher bound grew
 * them to, as they drain (see giveBack).
 */
export class FrameQueue {
  private ring: Uint8Array;
  private starts: Int32Array;
  private sizes: Int32Array;
  private types: Uint8Array;
  private enqueuedAt: Float64Array;
  private head = 0;
  private count = 0;
  private writeAt = 0;
  private bytes = 0;
  private capacityFrames = 0;
  /** A lowered bound owes back room, until the ring and per-message arrays are at their first sizes or grow again. */
  private roomOwed = false;

  constructor(
    capacity: number,
    readonly magic: number,
    public policy: DropPolicy = "oldest",
    readonly stats: FrameStats = new FrameStats(),
    readonly maxBytes: number = QUEUE_MAX_BYTES,
  ) {
    checkCapacity(capacity);
    if (!Number.isInteger(maxBytes) || maxBytes < 4 * MAX_MESSAGE) {
      throw new RangeError(`queue bytes ${maxBytes}: must be an integer >= ${4 * MAX_MESSAGE}`);
    }
    this.capacityFrames = capacity;
    this.ring = new Uint8Array(Math.min(maxBytes, FIRST_RING_BYTES));
    const slots = Math.min(capacity, FIRST_SLOTS);
    this.starts = new Int32Array(slots);
    this.sizes = new Int32Array(slots);
    this.types = new Uint8Array(slots);
    this.enqueuedAt = new Float64Array(slots);
  }

  get capacity(): number {
    return this.capacityFrames;
  }

  get length(): number {
    return this.count;
  }

  get byteLength(): number {
    return this.bytes;
  }

  /** Bytes the queue holds allocated: its ring and its per-message arrays. */
  get allocatedBytes(): number {
    return this.ring.byteLength + this.starts.byteLength + this.sizes.byteLength + this.types.byteLength + this.enqueuedAt.byteLength;
  }

  get isFull(): boolean {
    return this.count >= this.capacityFrames || this.bytes > this.maxBytes - 2 * MAX_MESSAGE;
  }

  /**
   * Encodes and queues one message stamped with `timestampMs` (Unix ms).
   * When full, applies the drop policy and counts the drop as queue_full:
   * drop-oldest removes the oldest until the queue is within its bounds again
   * (more than one only after a shrink), drop-newest refuses the new message,
   * unless it is a Config: the frames after it are its audio, so it takes the
   * place of the newest queued messages instead.
   * Returns false when the new message itself was dropped.
   */
  push(type: MessageType, payload: Uint8Array, timestampMs: number, nowMs: number): boolean {
    if (payload.length > MAX_PAYLOAD) throw new RangeError(`FrameTooLarge: ${payload.length} > ${MAX_PAYLOAD}`);
    this.stats.submitted++;
    if (this.isFull) {
      if (this.policy === "newest" && type !== MessageType.Config) {
        this.stats.dropped[DropReason.QueueFull]++;
        return false;
      }
      if (this.policy === "newest") {
        while (this.isFull) this.dropNewest(DropReason.QueueFull);
      }
      while (this.isFull) {
        // A Config at the head stays (see dropOldest): the frame after it goes instead.
        if (this.dropOldest(1, DropReason.QueueFull) > 0 || this.dropOldest(Math.min(2, this.count), DropReason.QueueFull) > 0) continue;
        // A queue of one message holds the Config alone, and cannot hold a frame beside it.
        this.stats.dropped[DropReason.QueueFull]++;
        this.remove(1);
      }
      // What left is a drop as any other: a lowered bound's room is owed back now, not at the next write.
      if (this.roomOwed) this.giveBack();
    }
    const size = HEADER_SIZE + payload.length;
    let at = this.place(size);
    if (at < 0) {
      this.grow(size);
      at = this.place(size);
    }
    if (this.count === this.starts.length) this.growSlots();
    writeHeader(this.ring, at, this.magic, type, payload.length, timestampMs);
    this.ring.set(payload, at + HEADER_SIZE);
    let slot = this.head + this.count;
    if (slot >= this.starts.length) slot -= this.starts.length;
    this.starts[slot] = at;
    this.sizes[slot] = size;
    this.types[slot] = type;
    this.enqueuedAt[slot] = nowMs;
    this.count++;
    this.bytes += size;
    this.writeAt = at + size;
    return true;
  }

  /** Monotonic time (ms) the oldest queued message was enqueued; NaN when empty. */
  oldestEnqueuedAt(): number {
    return this.count === 0 ? NaN : this.enqueuedAt[this.head];
  }

  /** Type of the i-th queued message (0 = oldest). */
  typeAt(i: number): MessageType {
    return this.types[this.slotOf(i)] as MessageType;
  }

  /** Size in bytes of the i-th queued message. */
  sizeAt(i: number): number {
    return this.sizes[this.slotOf(i)];
  }

  enqueuedAtOf(i: number): number {
    return this.enqueuedAt[this.slotOf(i)];
  }

  /**
   * The longest run of oldest messages that sits contiguously in the ring,
   * up to `maxBytes` (always at least one message). Returns the number of
   * messages; `runStart` / `runBytes` describe the region.
   */
  contiguousRun(maxBytes: number): number {
    if (this.count === 0) {
      this.runBytes = 0;
      return 0;
    }
    const slots = this.starts.length;
    let slot = this.head;
    const start = this.starts[slot];
    let end = start + this.sizes[slot];
    let n = 1;
    while (n < this.count) {
      slot = slot + 1 === slots ? 0 : slot + 1;
      if (this.starts[slot] !== end || end - start + this.sizes[slot] > maxBytes) break;
      end += this.sizes[slot];
      n++;
    }
    this.runStart = start;
    this.runBytes = end - start;
    return n;
  }
  runStart = 0;
  runBytes = 0;

  /** The ring buffer itself, for writes of a contiguous run (replaced when the ring grows). */
  get buffer(): Uint8Array {
    return this.ring;
  }

  /** Removes the `n` oldest messages (they were written, or are being dropped by the caller). */
  shift(n: number): void {
    this.remove(n);
    if (this.roomOwed) this.giveBack();
  }

  private remove(n: number): void {
    const slots = this.starts.length;
    for (let i = 0; i < n; i++) {
      this.bytes -= this.sizes[this.head];
      this.head = this.head + 1 === slots ? 0 : this.head + 1;
    }
    this.count -= n;
    if (this.count === 0) {
      this.head = 0;
      this.writeAt = 0;
    }
  }

  /** Drops every queued message, counting each under `reason`. */
  dropAll(reason: DropReason): number {
    const n = this.count;
    this.stats.dropped[reason] += n;
    this.remove(n);
    if (this.roomOwed) this.giveBack();
    return n;
  }

  /**
   * Drops queued messages enqueued before `cutoffMs` (monotonic), oldest first, but for a Config
   * (see dropOldest) and the Stop: the session's end has no age (it is the last message queued).
   */
  dropOlderThan(cutoffMs: number, reason: DropReason): number {
    let n = 0;
    while (n < this.count && this.enqueuedAt[this.slotOf(n)] < cutoffMs && this.types[this.slotOf(n)] !== MessageType.Stop) n++;
    if (n === 0) return 0;
    const dropped = this.dropOldest(n, reason);
    if (this.roomOwed) this.giveBack();
    return dropped;
  }

  /**
   * Drops the `n` oldest messages, counting them under `reason`, but for the
   * newest Config among them, which stays at the head, its bytes where they
   * are: the frames after it are audio of that Config, and a drop of stale
   * audio must not have them played as the one before. Returns how many
   * were dropped.
   */
  private dropOldest(n: number, reason: DropReason): number {
    let kept = -1;
    for (let i = n - 1; i >= 0 && kept < 0; i--) if (this.types[this.slotOf(i)] === MessageType.Config) kept = this.slotOf(i);
    const dropped = kept < 0 ? n : n - 1;
    if (dropped === 0) return 0;
    this.stats.dropped[reason] += dropped;
    if (kept < 0) {
      this.remove(n);
      return n;
    }
    const start = this.starts[kept];
    const size = this.sizes[kept];
    this.remove(n);
    // Timed as the first message it goes ahead of, so that it does not read as stale again itself.
    const enqueuedAt = this.count > 0 ? this.enqueuedAt[this.head] : this.enqueuedAt[kept];
    // The slot before the new head was the last one dropped: free (an emptied queue starts at slot 0).
    if (this.count === 0) this.writeAt = start + size;
    else this.head = this.head === 0 ? this.starts.length - 1 : this.head - 1;
    this.starts[this.head] = start;
    this.sizes[this.head] = size;
    this.types[this.head] = MessageType.Config;
    this.enqueuedAt[this.head] = enqueuedAt;
    this.count++;
    this.bytes += size;
    return dropped;
  }

  /** Drops the newest queued message, counting it under `reason`; the room it took is the next message's. */
  private dropNewest(reason: DropReason): void {
    const slot = this.slotOf(this.count - 1);
    this.stats.dropped[reason]++;
    this.count--;
    this.bytes -= this.sizes[slot];
    // It was placed last: where it began is where the next goes (an emptied queue starts over).
    this.writeAt = this.count === 0 ? 0 : this.starts[slot];
    if (this.count === 0) this.head = 0;
  }

  /**
   * Changes the bound in messages. Nothing queued is ever dropped here: after
   * a shrink below the current length the queue counts as full until it has
   * drained below the new bound, so a lossless source waits, and a live push
   * drops the excess oldest (drop-oldest) or itself (drop-newest). A lower
   * bound owes back the room a higher one grew (giveBack); a higher one may
   * need that room again, and owes nothing.
   */
  resize(capacity: number): void {
    checkCapacity(capacity);
    if (capacity !== this.capacityFrames) this.roomOwed = capacity < this.capacityFrames;
    this.capacityFrames = capacity;
    if (this.roomOwed) this.giveBack();
  }

  /**
   * What a lowered bound owes, given back as messages leave: the ring laid
   * out anew at the smallest size (its first, doubling) that what is queued
   * fills at most half, and the per-message arrays likewise, each only when
   * that is smaller than now. Queued messages are copied whole and in order,
   * so nothing is lost or reordered. Owed no more once both are at their
   * first sizes, or once the ring grows again under this bound (it needs the
   * room): so the queue never swings between shrinking and growing, and
   * allocates at most a few times per lowered bound, never per message.
   */
  private giveBack(): void {
    const firstRing = Math.min(this.maxBytes, FIRST_RING_BYTES);
    let length = firstRing;
    while (length < 2 * this.bytes && length < this.maxBytes) length = Math.min(this.maxBytes, length * 2);
    if (length < this.ring.length) this.layOut(length);
    const firstSlots = Math.min(this.capacityFrames, FIRST_SLOTS);
    let slots = firstSlots;
    while (slots < 2 * this.count) slots *= 2;
    if (slots < this.starts.length) this.resizeSlots(slots);
    if (this.ring.length <= firstRing && this.starts.length <= firstSlots) this.roomOwed = false;
  }

  private slotOf(i: number): number {
    const slot = this.head + i;
    return slot < this.starts.length ? slot : slot - this.starts.length;
  }

  /** Where a message of `size` bytes goes without wrapping, or -1 when the ring has no room for it. */
  private place(size: number): number {
    if (this.count === 0) return 0;
    const headAt = this.starts[this.head];
    if (this.writeAt > headAt) {
      if (this.writeAt + size <= this.ring.length) return this.writeAt;
      return size <= headAt ? 0 : -1;
    }
    return this.writeAt + size <= headAt ? this.writeAt : -1;
  }

  /** Doubles the ring (up to maxBytes) until `size` more bytes fit, and lays the messages out from its start. */
  private grow(size: number): void {
    let length = this.ring.length;
    while (length < this.bytes + size) length *= 2;
    length = Math.min(this.maxBytes, Math.max(length, this.ring.length * 2));
    if (length < this.bytes + size) throw new RangeError(`FrameQueue: no room for ${size} bytes within ${this.maxBytes}`);
    this.layOut(length);
    // The bound needs this room: nothing is owed back until it is lowered again.
    this.roomOwed = false;
  }

  /** A ring of `length` bytes, the queued messages laid out in order from its start. */
  private layOut(length: number): void {
    const ring = new Uint8Array(length);
    let at = 0;
    for (let i = 0; i < this.count; i++) {
      const slot = this.slotOf(i);
      const start = this.starts[slot];
      const bytes = this.sizes[slot];
      ring.set(this.ring.subarray(start, start + bytes), at);
      this.starts[slot] = at;
      at += bytes;
    }
    this.ring = ring;
    this.writeAt = at;
  }

  /** Doubles the per-message arrays; as for the ring, nothing is owed back until the bound is lowered again. */
  private growSlots(): void {
    this.resizeSlots(this.starts.length * 2);
    this.roomOwed = false;
  }

  /** Per-message arrays of `slots` (at least as many as are queued), oldest message first. */
  private resizeSlots(slots: number): void {
    const starts = new Int32Array(slots);
    const sizes = new Int32Array(slots);
    const types = new Uint8Array(slots);
    const enqueuedAt = new Float64Array(slots);
    for (let i = 0; i < this.count; i++) {
      const slot = this.slotOf(i);
      starts[i] = this.starts[slot];
      sizes[i] = this.sizes[slot];
      types[i] = this.types[slot];
      enqueuedAt[i] = this.enqueuedAt[slot];
    }
    this.starts = starts;
    this.sizes = sizes;
    this.types = types;
    this.enqueuedAt = enqueuedAt;
    this.head = 0;
  }
}

function checkCapacity(capacity: number): void {
  if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`queue capacity ${capacity}: must be >= 1`);
}
