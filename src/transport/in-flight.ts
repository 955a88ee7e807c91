import { sendQueueBytesNow } from "./socket-options.ts";

/** Writes remembered per connection; beyond this the two oldest are merged (their age kept: never too young). */
const RECORDS = 256;

/**
 * What a connection's writes may still hold unread in the kernel, so that the
 * writer can bound how old live audio reaching the client is. Each write is
 * recorded with its bytes and when its oldest message was enqueued; the
 * kernel's count of unread data (ioctl TIOCOUTQ) then tells which writes the
 * client has certainly read.
 *
 * On a Unix socket TIOCOUTQ counts buffer memory, never less than the bytes
 * unread (a 177-byte write holds 768): the newest writes that many bytes can
 * cover include every unread one, and maybe a few read ones. So the age found
 * is never too young; with small frames it can be too old, and the writer
 * then pauses a little early, never late.
 *
 * Cost: one ioctl per check, and a check only when some remembered write is
 * older than the cutoff: with a client that keeps up, about once per budget
 * (every 100 ms by default); with a stalled one, once per pump.
 */
export class InFlight {
  private readonly bytes = new Float64Array(RECORDS);
  private readonly enqueuedAt = new Float64Array(RECORDS);
  private head = 0;
  private count = 0;
  private fd = -1;
  private lastUnread = Infinity;
  /** The last check saw less unread than the one before (or a write came between): the client is reading. */
  clientRead = false;

  /** A new connection (or none: -1): nothing of it is in flight yet. */
  reset(fd: number): void {
    this.fd = fd;
    this.head = 0;
    this.count = 0;
    this.lastUnread = Infinity;
    this.clientRead = false;
  }

  /** `bytes` went to the kernel; the oldest message among them was enqueued at `enqueuedAt` (monotonic ms). */
  wrote(bytes: number, enqueuedAt: number): void {
    if (this.count === RECORDS) {
      const second = this.slot(1);
      this.bytes[second] += this.bytes[this.head];
      this.enqueuedAt[second] = this.enqueuedAt[this.head];
      this.forget(1);
    }
    const slot = this.slot(this.count);
    this.bytes[slot] = bytes;
    this.enqueuedAt[slot] = enqueuedAt;
    this.count++;
    // Unread data grew: only a check with no write since it can show the client reading.
    this.lastUnread = Infinity;
  }

  /**
   * True while data the client may not have read yet includes a message
   * enqueued before `cutoff` (monotonic ms). False too when the kernel cannot
   * be asked: then only the queue's own age bound applies.
   */
  olderThan(cutoff: number): boolean {
    if (this.count === 0 || this.enqueuedAt[this.head] >= cutoff) return false;
    const unread = sendQueueBytesNow(this.fd);
    if (unread < 0) return false;
    this.clientRead = unread < this.lastUnread;
    this.lastUnread = unread;
    // Walk back from the newest write until `unread` bytes are covered; the older ones were read.
    let covered = 0;
    let keep = 0;
    while (keep < this.count && covered < unread) {
      covered += this.bytes[this.slot(this.count - 1 - keep)];
      keep++;
    }
    this.forget(this.count - keep);
    return this.count > 0 && this.enqueuedAt[this.head] < cutoff;
  }

  private slot(i: number): number {
    return (this.head + i) % RECORDS;
  }

  private forget(n: number): void {
    this.head = (this.head + n) % RECORDS;
    this.count -= n;
  }
}
