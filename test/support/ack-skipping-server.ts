/**
 * A raw input server that answers Config and Heartbeats with an Ack but
 * skips the Ack of every `skipEvery`-th Heartbeat, as a Go input server
 * under load may: what an input client must ride out. With `skipEvery`
 * Infinity it answers every one; pause() makes it stop reading, like a
 * playback process that stalls with its socket open; holdAcks() makes it
 * read on but keep its Acks until releaseAcks() writes them.
 */
import type { Socket, UnixSocketListener } from "bun";
import { encodeMessage, FrameParser, INPUT_MAGIC, MessageType } from "../../src/protocol/index.ts";

export interface AckSkippingServer {
  listener: UnixSocketListener<undefined>;
  /** Connections accepted so far. */
  readonly connections: number;
  /** Connections closed so far: all a closed one sent has been read. */
  readonly closed: number;
  heartbeats: number;
  acks: number;
  /** OpusFrame payloads received (copies), across connections. */
  frames: Uint8Array[];
  /** For each of `frames`: its header timestamp and Date.now() when it arrived (Unix ms). */
  arrivals: { timestampMs: number; receivedAtMs: number }[];
  /** A Stop arrived. */
  stopped: boolean;
  /** Stops and resumes reading the current connection. */
  pause(): void;
  resume(): void;
  /** Keeps the Acks owed from now on; releaseAcks() writes them all. */
  holdAcks(): void;
  releaseAcks(): void;
  stop(): void;
}

export function ackSkippingServer(path: string, skipEvery = 3): AckSkippingServer {
  let parser = new FrameParser(INPUT_MAGIC);
  let current: Socket<undefined> | undefined;
  let holding = false;
  let held = 0;
  const ack = (socket: Socket<undefined>) => {
    socket.write(encodeMessage(INPUT_MAGIC, MessageType.Ack, undefined, BigInt(Date.now()) * 1_000_000n));
    state.acks++;
  };
  const state = {
    connections: 0,
    closed: 0,
    heartbeats: 0,
    acks: 0,
    frames: [] as Uint8Array[],
    arrivals: [] as { timestampMs: number; receivedAtMs: number }[],
    stopped: false,
  };
  const listener = Bun.listen({
    unix: path,
    socket: {
      binaryType: "uint8array",
      open: (socket) => {
        state.connections++;
        current = socket;
        parser = new FrameParser(INPUT_MAGIC);
      },
      data: (socket, chunk) => {
        const receivedAtMs = Date.now();
        parser.push(chunk);
        for (let m = parser.next(); m; m = parser.next()) {
          if (m.type === MessageType.OpusFrame) {
            state.frames.push(m.payload.slice());
            state.arrivals.push({ timestampMs: m.timestampMs, receivedAtMs });
          }
          if (m.type === MessageType.Stop) state.stopped = true;
          if (m.type === MessageType.Heartbeat && ++state.heartbeats % skipEvery === 0) continue;
          if (m.type === MessageType.Config || m.type === MessageType.Heartbeat) {
            if (holding) held++;
            else ack(socket);
          }
        }
      },
      drain: () => {},
      close: () => {
        state.closed++;
      },
      error: () => {},
    },
  });
  return Object.assign(state, {
    listener,
    pause: () => current?.pause(),
    resume: () => current?.resume(),
    holdAcks: () => {
      holding = true;
    },
    releaseAcks: () => {
      holding = false;
      for (; held > 0; held--) if (current) ack(current);
    },
    stop: () => listener.stop(true),
  });
}
