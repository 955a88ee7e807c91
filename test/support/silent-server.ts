/**
 * A raw fake server that records every byte each connection sends and never
 * answers (no Ack): what a hung or foreign playback process looks like to an
 * input client.
 */
import type { Socket, UnixSocketListener } from "bun";

export interface SilentServer {
  listener: UnixSocketListener<{ index: number }>;
  /** Bytes received, per connection, in connection order. */
  received: Uint8Array[][];
  /** Connections accepted so far. */
  readonly connections: number;
  /** Everything connection `n` sent, in one buffer. */
  bytesOf(n: number): Uint8Array;
  stop(): void;
}

export function silentServer(path: string): SilentServer {
  const received: Uint8Array[][] = [];
  const sockets: Socket<{ index: number }>[] = [];
  const listener = Bun.listen<{ index: number }>({
    unix: path,
    data: { index: -1 },
    socket: {
      binaryType: "uint8array",
      open: (socket) => {
        socket.data = { index: received.length };
        received.push([]);
        sockets.push(socket);
      },
      data: (socket, chunk) => {
        received[socket.data.index].push(chunk.slice());
      },
      drain: () => {},
      close: () => {},
      error: () => {},
    },
  });
  return {
    listener,
    received,
    get connections() {
      return received.length;
    },
    bytesOf(n) {
      const chunks = received[n] ?? [];
      const out = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
      let at = 0;
      for (const c of chunks) {
        out.set(c, at);
        at += c.length;
      }
      return out;
    },
    stop() {
      for (const s of sockets) s.terminate();
      listener.stop(true);
    },
  };
}
