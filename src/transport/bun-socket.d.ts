// Bun's sockets carry their file descriptor (`socket.fd`, seen on 1.4.x), which
// the socket-buffer code hands to setsockopt/getsockopt/ioctl through bun:ffi;
// the type declarations do not list it yet.
import "bun";

declare module "bun" {
  interface Socket<Data = undefined> {
    readonly fd: number;
  }
  // A listener's too (the listening socket's), on 1.4.x.
  interface SocketListener<Data = undefined> {
    readonly fd: number;
  }
}
