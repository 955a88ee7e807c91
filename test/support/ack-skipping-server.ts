/**
 * A raw input server that answers Config and Heartbeats with an Ack but
 * skips the Ack of every `skipEvery`-th Heartbeat, as a Go input server
 * under load may: what an input client must ride out.
 */
import type { UnixSocketListener } from "bun";
import { encodeMessage, FrameParser, INPUT_MAGIC, MessageType } from "../../src/protocol/index.ts";

export interface AckSkippingServer {
  listener: UnixSocketListener<undefined>;
  /** Connections accepted so far. */
  readonly connections: number;
  heartbeats: number;
  acks: number;
  /** OpusFrame payloads received (copies), across connections. */
  frames: Uint8Array[];
  /** A Stop arrived. */
  stopped: boolean;
  stop(): void;
}

export function ackSkippingServer(path: string, skipEvery = 3): AckSkippingServer {
  let parser = new FrameParser(INPUT_MAGIC);
  const state = {
    connections: 0,
    heartbeats: 0,
    acks: 0,
    frames: [] as Uint8Array[],
    stopped: false,
  };
  const listener = Bun.listen({
    unix: path,
    socket: {
      binaryType: "uint8array",
      open: () => {
        state.connections++;
        parser = new FrameParser(INPUT_MAGIC);
      },
      data: (socket, chunk) => {
        parser.push(chunk);
        for (let m = parser.next(); m; m = parser.next()) {
          if (m.type === MessageType.OpusFrame) state.frames.push(m.payload.slice());
          if (m.type === MessageType.Stop) state.stopped = true;
          if (m.type === MessageType.Heartbeat && ++state.heartbeats % skipEvery === 0) continue;
          if (m.type === MessageType.Config || m.type === MessageType.Heartbeat) {
            socket.write(encodeMessage(INPUT_MAGIC, MessageType.Ack, undefined, BigInt(Date.now()) * 1_000_000n));
            state.acks++;
          }
        }
      },
      drain: () => {},
      close: () => {},
      error: () => {},
    },
  });
  return Object.assign(state, {
    listener,
    stop: () => listener.stop(true),
  });
}
