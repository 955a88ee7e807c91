import { HEADER_SIZE, MAX_MESSAGE, MAX_PAYLOAD, writeHeader, type MessageType } from "../protocol/index.ts";
import { DropReason, FrameStats } from "./frame-stats.ts";

export type DropPolicy = "oldest" | "newest";

/**
 * A bounded send queue of whole, encoded messages in one byte ring.
 *
 * Messages are stored header-and-payload, back to back, so a run of queued
 * messages is one contiguous region that the writer hands to the kernel in a
 * single write (coalescing) without copying again. Only whole, unstarted
 * messages live here: the writer takes a message out as soon as any of its
 * bytes reach the socket, so dropping from the queue can never cut a frame.
 *
 * The ring holds (capacity + 1) largest messages: with fewer than `capacity`
 * queued, either the end or the start of the ring always has room for one
 * more, so a message never needs to wrap.
 */
export class FrameQueue {
  private ring!: Uint8Array;
  private ringView!: DataView;
  private starts!: Int32Array;
  private sizes!: Int32Array;
  private types!: Uint8Array;
  private enqueuedAt!: Float64Array;
  private head = 0;
  private count = 0;
  private writeAt = 0;
  private bytes = 0;
  private capacityFrames = 0;

  constructor(
    capacity: number,
    readonly magic: number,
    public policy: DropPolicy = "oldest",
    readonly stats: FrameStats = new FrameStats(),
  ) {
    this.allocate(capacity);
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

  get isFull(): boolean {
    return this.count >= this.capacityFrames;
  }

  /**
   * Encodes and queues one message stamped with `timestampMs` (Unix ms).
   * When full, applies the drop policy and counts the drop as queue_full.
   * Returns false when the new message itself was dropped.
   */
  push(type: MessageType, payload: Uint8Array, timestampMs: number, nowMs: number): boolean {
    if (payload.length > MAX_PAYLOAD) throw new RangeError(`FrameTooLarge: ${payload.length} > ${MAX_PAYLOAD}`);
    this.stats.submitted++;
    if (this.count >= this.capacityFrames) {
      this.stats.dropped[DropReason.QueueFull]++;
      if (this.policy === "newest") return false;
      this.shift(1);
    }
    const size = HEADER_SIZE + payload.length;
    let at = this.count === 0 ? 0 : this.writeAt;
    if (at + size > this.ring.length) at = 0;
    writeHeader(this.ringView, at, this.magic, type, payload.length, timestampMs);
    this.ring.set(payload, at + HEADER_SIZE);
    const slot = (this.head + this.count) % this.capacityFrames;
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
    return this.types[(this.head + i) % this.capacityFrames] as MessageType;
  }

  /** Size in bytes of the i-th queued message. */
  sizeAt(i: number): number {
    return this.sizes[(this.head + i) % this.capacityFrames];
  }

  enqueuedAtOf(i: number): number {
    return this.enqueuedAt[(this.head + i) % this.capacityFrames];
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
    let slot = this.head;
    const start = this.starts[slot];
    let end = start + this.sizes[slot];
    let n = 1;
    while (n < this.count) {
      slot = slot + 1 === this.capacityFrames ? 0 : slot + 1;
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

  /** The ring buffer itself, for writes of a contiguous run. */
  get buffer(): Uint8Array {
    return this.ring;
  }

  /** Removes the `n` oldest messages (they were written, or are being dropped by the caller). */
  shift(n: number): void {
    for (let i = 0; i < n; i++) {
      this.bytes -= this.sizes[this.head];
      this.head = this.head + 1 === this.capacityFrames ? 0 : this.head + 1;
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
    this.shift(n);
    return n;
  }

  /** Drops queued messages enqueued before `cutoffMs` (monotonic), oldest first. */
  dropOlderThan(cutoffMs: number, reason: DropReason): number {
    let n = 0;
    while (n < this.count && this.enqueuedAt[(this.head + n) % this.capacityFrames] < cutoffMs) n++;
    if (n > 0) {
      this.stats.dropped[reason] += n;
      this.shift(n);
    }
    return n;
  }

  /**
   * Changes the capacity, keeping queued messages in order. Shrinking below
   * the current length keeps the newest and drops the rest as queue_full.
   */
  resize(capacity: number): void {
    if (capacity === this.capacityFrames) return;
    checkCapacity(capacity); // before anything is dropped
    if (this.count > capacity) {
      this.stats.dropped[DropReason.QueueFull] += this.count - capacity;
      this.shift(this.count - capacity);
    }
    const old = {
      ring: this.ring,
      starts: this.starts,
      sizes: this.sizes,
      types: this.types,
      enqueuedAt: this.enqueuedAt,
      head: this.head,
      count: this.count,
      capacity: this.capacityFrames,
    };
    this.allocate(capacity);
    let at = 0;
    for (let i = 0; i < old.count; i++) {
      const slot = (old.head + i) % old.capacity;
      const size = old.sizes[slot];
      this.ring.set(old.ring.subarray(old.starts[slot], old.starts[slot] + size), at);
      this.starts[i] = at;
      this.sizes[i] = size;
      this.types[i] = old.types[slot];
      this.enqueuedAt[i] = old.enqueuedAt[slot];
      at += size;
    }
    this.count = old.count;
    this.writeAt = at;
    this.bytes = at; // allocate() zeroed it; the same messages are still queued
  }

  private allocate(capacity: number): void {
    checkCapacity(capacity);
    this.capacityFrames = capacity;
    this.ring = new Uint8Array((capacity + 1) * MAX_MESSAGE);
    this.ringView = new DataView(this.ring.buffer);
    this.starts = new Int32Array(capacity);
    this.sizes = new Int32Array(capacity);
    this.types = new Uint8Array(capacity);
    this.enqueuedAt = new Float64Array(capacity);
    this.head = 0;
    this.count = 0;
    this.writeAt = 0;
    this.bytes = 0;
  }
}

function checkCapacity(capacity: number): void {
  if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`queue capacity ${capacity}: must be >= 1`);
}
