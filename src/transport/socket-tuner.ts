import type { Socket } from "bun";
import type { Report } from "./report.ts";
import {
  getSocketBuffers,
  receiveQueueBytes,
  sendQueueBytes,
  setSocketBuffers,
  type SocketBufferSizes,
  type SocketOptionCall,
} from "./socket-options.ts";

/** What the tuner knows of the current connection's socket buffers. */
export interface SocketBufferReadings {
  /** Sizes asked for with setsockopt (the preset, or the optimizer's choice); 0: kernel defaults. */
  requested: SocketBufferSizes;
  /** Sizes the kernel reports for the live connection (Linux doubles the request); 0 while there is none. */
  kernel: SocketBufferSizes;
  /** Bytes unread by the peer (TIOCOUTQ) and waiting for us (FIONREAD) at the last sample. */
  sendQueueBytes: number;
  receiveQueueBytes: number;
  /** Failed socket option calls, by call. */
  failures: Partial<Record<SocketOptionCall, number>>;
}

/**
 * The socket buffers of one channel's connection: applies the requested
 * SO_SNDBUF/SO_RCVBUF to every new connection and reads back what the kernel
 * holds, applies a new size to the live connection when asked, and samples
 * how full both buffers are. A failure is counted and reported, never thrown:
 * buffer tuning must not take the audio path down.
 */
export class SocketTuner {
  private socket: Socket<unknown> | undefined;
  private requested: SocketBufferSizes | undefined;
  private kernel: SocketBufferSizes = { sendBytes: 0, receiveBytes: 0 };
  private queued = { send: 0, receive: 0 };
  private readonly failures: Partial<Record<SocketOptionCall, number>> = {};

  /**
   * Without `sizes`, connections keep the kernel's defaults (they are still read back and sampled).
   * `resized` hears of each resize that reached the live connection (a writer waiting for room).
   */
  constructor(
    sizes: SocketBufferSizes | undefined,
    private readonly report: Report,
    private readonly resized?: () => void,
  ) {
    this.requested = sizes && { ...sizes };
  }

  /** A new connection: apply the sizes we promise and read back what the kernel holds. */
  attach(socket: Socket<unknown>): void {
    this.socket = socket;
    this.apply(socket);
  }

  /** Asks for new sizes from now on, applied at once to the live connection. */
  resize(sizes: SocketBufferSizes): void {
    this.requested = { ...sizes };
    if (!this.socket || this.socket.readyState <= 0) return;
    this.apply(this.socket);
    this.resized?.();
  }

  /** Samples the bytes queued in both directions on the live connection; none without one. */
  sample(): void {
    const fd = this.fd();
    if (fd === undefined) {
      // A connection gone has nothing queued: its last sample is not what this channel holds now.
      this.queued = { send: 0, receive: 0 };
      return;
    }
    const out = sendQueueBytes(fd);
    if (out.ok) this.queued.send = out.bytes;
    else this.failed(out.call);
    const inq = receiveQueueBytes(fd);
    if (inq.ok) this.queued.receive = inq.bytes;
    else this.failed(inq.call);
  }

  readings(): SocketBufferReadings {
    return {
      requested: this.requested ? { ...this.requested } : { sendBytes: 0, receiveBytes: 0 },
      // A connection gone holds no buffer: its sizes are not what this channel has now.
      kernel: this.fd() === undefined ? { sendBytes: 0, receiveBytes: 0 } : { ...this.kernel },
      sendQueueBytes: this.queued.send,
      receiveQueueBytes: this.queued.receive,
      failures: { ...this.failures },
    };
  }

  private fd(): number | undefined {
    const socket = this.socket;
    if (!socket || socket.readyState <= 0) return undefined;
    const fd = socket.fd;
    return typeof fd === "number" && fd >= 0 ? fd : undefined;
  }

  private apply(socket: Socket<unknown>): void {
    const fd = socket.fd;
    if (typeof fd !== "number" || fd < 0) return;
    const set = this.requested ? setSocketBuffers(fd, this.requested) : undefined;
    if (set && !set.ok) {
      this.failed(set.call);
      this.report("warn", "could not set socket buffers; kernel defaults stay", { error: set.message });
    }
    const got = getSocketBuffers(fd);
    if (!got.ok) {
      this.failed(got.call);
      return;
    }
    this.kernel = { sendBytes: got.sendBytes, receiveBytes: got.receiveBytes };
    this.report("debug", "socket buffers", { requested: this.requested, kernel: this.kernel });
  }

  private failed(call: SocketOptionCall): void {
    this.failures[call] = (this.failures[call] ?? 0) + 1;
  }
}
