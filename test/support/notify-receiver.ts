/**
 * A service manager's notification socket, as systemd holds one for a
 * Type=notify service: a Unix datagram socket bound at a path (or an
 * abstract "@name"), read without blocking (socket, bind, recv through libc).
 */
import { ptr } from "bun:ffi";
import { AF_UNIX, MSG_DONTWAIT, openLibc, SOCK_DGRAM, unixAddress } from "../../src/io/libc.ts";

export interface NotifyReceiver {
  /** The value for NOTIFY_SOCKET. */
  name: string;
  /** Every datagram received so far, in order (each read once, kept here). */
  messages(): string[];
  close(): void;
}

export function notifyReceiver(name: string): NotifyReceiver {
  const opened = openLibc({
    socket: { args: ["i32", "i32", "i32"], returns: "i32" },
    bind: { args: ["i32", "ptr", "u32"], returns: "i32" },
    recv: { args: ["i32", "ptr", "u64", "i32"], returns: "i64" },
    close: { args: ["i32"], returns: "i32" },
  });
  if (!opened.library) throw new Error(opened.detail);
  const libc = opened.library.symbols;
  const address = unixAddress(name);
  const fd = libc.socket(AF_UNIX, SOCK_DGRAM, 0);
  if (fd < 0 || libc.bind(fd, ptr(address), address.length) !== 0) throw new Error(`cannot bind a datagram socket at ${name}`);
  const got: string[] = [];
  const buffer = new Uint8Array(4096);
  return {
    name,
    messages: () => {
      for (let n = Number(libc.recv(fd, ptr(buffer), buffer.length, MSG_DONTWAIT)); n >= 0; n = Number(libc.recv(fd, ptr(buffer), buffer.length, MSG_DONTWAIT))) {
        got.push(Buffer.from(buffer.subarray(0, n)).toString());
      }
      return got;
    },
    close: () => {
      libc.close(fd);
      opened.library.close();
    },
  };
}
