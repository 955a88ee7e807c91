import { ptr, type Library } from "bun:ffi";
import { AF_UNIX, ERRNO_LOCATION, lastErrnoName, MSG_DONTWAIT, openLibc, SOCK_CLOEXEC, SOCK_DGRAM, unixAddress } from "../io/libc.ts";

/** With MSG_DONTWAIT: never wait for a receiver whose queue is full (the message is lost, not the process's time), never SIGPIPE. */
const MSG_NOSIGNAL = 0x4000;
/** sockaddr_un: sa_family_t, then sun_path[108]. */
const SUN_PATH = 108;

const SYMBOLS = {
  socket: { args: ["i32", "i32", "i32"], returns: "i32" },
  // ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen)
  sendto: { args: ["i32", "ptr", "u64", "i32", "ptr", "u32"], returns: "i64" },
  close: { args: ["i32"], returns: "i32" },
  __errno_location: ERRNO_LOCATION,
} as const;

/**
 * The service manager's notification socket (systemd's NOTIFY_SOCKET, see
 * sd_notify(3)): a Unix datagram socket at a path, or in the abstract
 * namespace when the name begins with "@". Each send is one datagram of
 * newline-separated assignments ("READY=1").
 */
export class NotifySocket {
  private constructor(
    private readonly library: Library<typeof SYMBOLS>,
    private readonly fd: number,
    /** The sockaddr_un, as long as the address it names (socklen_t). */
    private readonly address: Uint8Array,
  ) {}

  /** A socket to send to `name`, or why there cannot be one (a one-line reason naming the value). */
  static open(name: string): NotifySocket | string {
    const abstract = name.startsWith("@");
    if (!abstract && !name.startsWith("/")) return `NOTIFY_SOCKET=${name} is neither a path nor an abstract name (@...)`;
    const address = unixAddress(name);
    // A path ends with its NUL inside sun_path; an abstract name begins with one and has none after.
    if (address.length - 2 > SUN_PATH) return `NOTIFY_SOCKET=${name} is longer than a Unix socket address holds (${SUN_PATH - 1} bytes)`;
    const opened = openLibc(SYMBOLS);
    if (!opened.library) return `NOTIFY_SOCKET: ${opened.detail}`;
    const fd = opened.library.symbols.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      const code = lastErrnoName(opened.library.symbols);
      opened.library.close();
      return `NOTIFY_SOCKET: socket(AF_UNIX, SOCK_DGRAM) failed: ${code}`;
    }
    return new NotifySocket(opened.library, fd, address);
  }

  /** Sends `text` as one datagram; the errno's name when it was not sent. */
  send(text: string): string | undefined {
    const bytes = Buffer.from(text);
    const sent = this.library.symbols.sendto(this.fd, ptr(bytes), bytes.length, MSG_DONTWAIT | MSG_NOSIGNAL, ptr(this.address), this.address.length);
    return Number(sent) === bytes.length ? undefined : lastErrnoName(this.library.symbols);
  }

  dispose(): void {
    this.library.symbols.close(this.fd);
    this.library.close();
  }
}
