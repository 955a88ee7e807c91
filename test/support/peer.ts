/** Raw socket peers for tests, all plain Bun sockets: a recording client, a scripted fake server, a silent server. */
import type { Socket, UnixSocketListener } from "bun";
import { expect } from "bun:test";
import { FrameParser, OUTPUT_MAGIC, ProtocolError } from "../../src/protocol/index.ts";
import { failureLine } from "./agent-log.ts";
import { concatBytes } from "./bytes.ts";
import { agentEnv, BUN, type Result, type Spawned } from "./processes.ts";
import { socketDir } from "./temp.ts";
import { until } from "./wait.ts";

export interface ReceivedMessage {
  type: number;
  /** A copy of the payload. */
  payload: Uint8Array;
  /** The header timestamp, Unix ms. */
  timestampMs: number;
  /** Date.now() when the chunk that completed it arrived. */
  receivedAtMs: number;
}

/**
 * A client that parses what it receives into whole messages (payload copies)
 * and counts bytes; `pending` is how many bytes of an unfinished message it
 * holds. A framing violation is recorded, not thrown.
 */
export class RecordingClient {
  readonly messages: ReceivedMessage[] = [];
  bytes = 0;
  isClosed = false;
  error: ProtocolError | undefined;
  readonly parser: FrameParser;
  readonly closed: Promise<void>;
  socket!: Socket<undefined>;
  /** Called after each chunk has been parsed (e.g. to pause or terminate at a chosen point). */
  onChunk: ((client: RecordingClient) => void) | undefined;
  private readonly chunks: Uint8Array[] | undefined;
  private markClosed!: () => void;

  private constructor(magic: number, keepRaw: boolean) {
    this.parser = new FrameParser(magic);
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
    this.chunks = keepRaw ? [] : undefined;
  }

  /**
   * Connects to `path`; with `paused`, reading is paused from the start
   * (nothing is read until resume()); with `keepRaw`, every byte received is
   * kept for rawBytes().
   */
  static async connect(path: string, options: { paused?: boolean; magic?: number; keepRaw?: boolean } = {}): Promise<RecordingClient> {
    const client = new RecordingClient(options.magic ?? OUTPUT_MAGIC, options.keepRaw ?? false);
    client.socket = await Bun.connect({
      unix: path,
      socket: {
        binaryType: "uint8array",
        open: (socket) => {
          if (options.paused) socket.pause();
        },
        data: (_socket, chunk) => client.receive(chunk),
        drain: () => {},
        close: () => {
          client.isClosed = true;
          client.markClosed();
        },
        error: () => {},
      },
    });
    return client;
  }

  get pending(): number {
    return this.parser.pending;
  }

  /** Payload copies of the OpusFrames received whole. */
  get frames(): Uint8Array[] {
    return this.messages.filter((m) => m.type === 0).map((m) => m.payload);
  }

  /** Everything received, in one buffer (needs `keepRaw`). */
  rawBytes(): Uint8Array {
    if (!this.chunks) throw new Error("RecordingClient: connect with keepRaw to keep the bytes");
    return concatBytes(this.chunks);
  }

  close(): void {
    if (!this.isClosed) this.socket.terminate();
  }

  private receive(chunk: Uint8Array): void {
    this.bytes += chunk.length;
    this.chunks?.push(chunk.slice());
    if (!this.error) {
      const receivedAtMs = Date.now();
      try {
        this.parser.push(chunk);
        for (let m = this.parser.next(); m; m = this.parser.next()) {
          this.messages.push({ type: m.type, payload: m.payload.slice(), timestampMs: m.timestampMs, receivedAtMs });
        }
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        this.error = e;
      }
    }
    this.onChunk?.(this);
  }
}

/** RecordingClient.connect, the client closed by `defer` (see useCleanup) after the test. */
export async function connectClient(
  defer: (cleanup: () => unknown) => void,
  path: string,
  options: Parameters<typeof RecordingClient.connect>[1] = {},
): Promise<RecordingClient> {
  const client = await RecordingClient.connect(path, options);
  defer(() => client.close());
  return client;
}

/** Whether a client connecting to `path` now is accepted or refused (one accepted is closed by `defer`). */
export async function connectOutcome(defer: (cleanup: () => unknown) => void, path: string): Promise<"accepted" | "refused"> {
  return RecordingClient.connect(path).then(
    (client) => (defer(() => client.close()), "accepted" as const),
    () => "refused" as const,
  );
}

export interface FakeServer {
  listener: UnixSocketListener<undefined>;
  /** Every connection accepted, in order. */
  connections: Socket<undefined>[];
  /** How many of them have closed. */
  closedCount: () => number;
  stop: () => void;
}

/**
 * A scripted server speaking raw bytes: `onOpen(socket, n)` runs for the n-th
 * connection (0-based) and writes whatever the test wants; `onData(socket, n)`,
 * if given, each time that connection's bytes are read (what they are is not kept).
 */
export function fakeServer(
  path: string,
  onOpen: (socket: Socket<undefined>, n: number) => void,
  onData?: (socket: Socket<undefined>, n: number) => void,
): FakeServer {
  const connections: Socket<undefined>[] = [];
  let closed = 0;
  const listener = Bun.listen({
    unix: path,
    socket: {
      binaryType: "uint8array",
      open: (socket) => {
        connections.push(socket);
        onOpen(socket, connections.length - 1);
      },
      data: (socket) => onData?.(socket, connections.indexOf(socket)),
      drain: () => {},
      close: () => {
        closed++;
      },
      error: () => {},
    },
  });
  return {
    listener,
    connections,
    closedCount: () => closed,
    stop: () => {
      for (const socket of connections) socket.terminate();
      listener.stop(true);
    },
  };
}

/**
 * Writes `bytes` in pieces of `piece` bytes with a short pause between, to
 * split headers across reads. Resolves true when all was written, false when
 * the peer closed first (which a test may well expect).
 */
export async function writeInPieces(socket: Socket<undefined>, bytes: Uint8Array, piece: number): Promise<boolean> {
  for (let at = 0; at < bytes.length; at += piece) {
    const end = Math.min(bytes.length, at + piece);
    let written = 0;
    while (written < end - at) {
      const n = socket.write(bytes, at + written, end - at - written);
      if (n < 0) return false;
      written += n;
      if (n === 0) await Bun.sleep(1);
    }
    await Bun.sleep(1);
  }
  return true;
}

export interface SilentServer {
  listener: UnixSocketListener<{ index: number }>;
  /** Bytes received, per connection, in connection order. */
  received: Uint8Array[][];
  /** Connections accepted so far. */
  readonly connections: number;
  /** Connections closed so far: all a closed one sent is in received. */
  readonly closed: number;
  /** Everything connection `n` sent, in one buffer. */
  bytesOf(n: number): Uint8Array;
  stop(): void;
}

/**
 * A raw fake server that records every byte each connection sends and never
 * answers (no Ack): what a hung or foreign playback process looks like to an
 * input client.
 */
export function silentServer(path: string): SilentServer {
  const received: Uint8Array[][] = [];
  const sockets: Socket<{ index: number }>[] = [];
  let closed = 0;
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
      close: () => {
        closed++;
      },
      error: () => {},
    },
  });
  return {
    listener,
    received,
    get connections() {
      return received.length;
    },
    get closed() {
      return closed;
    },
    bytesOf(n) {
      return concatBytes(received[n] ?? []);
    },
    stop() {
      for (const s of sockets) s.terminate();
      listener.stop(true);
    },
  };
}

export interface UnixPair {
  listener: UnixSocketListener<undefined>;
  /** The connecting side and the accepted side. */
  client: Socket<undefined>;
  server: Socket<undefined>;
  /** Bytes the server side has seen through its data handler. */
  received: () => number;
}

/**
 * A connected Unix socket pair in its own short temp dir (sun_path is 108
 * bytes), closed by `defer` (see useCleanup); with `pauseServer` the accepted
 * side reads nothing until resumed.
 */
export async function unixPair(defer: (cleanup: () => unknown) => void, opts: { pauseServer?: boolean } = {}): Promise<UnixPair> {
  const { dir } = socketDir(defer, "pair-");
  let received = 0;
  const { promise: accepted, resolve } = Promise.withResolvers<Socket<undefined>>();
  const listener = Bun.listen({
    unix: `${dir}/s.sock`,
    socket: {
      open(socket) {
        // Paused before any data arrives, so everything the client writes stays queued.
        if (opts.pauseServer) socket.pause();
        resolve(socket);
      },
      data(_socket, chunk) {
        received += chunk.length;
      },
      drain() {},
    },
  });
  defer(() => listener.stop(true));
  const client = await Bun.connect({
    unix: `${dir}/s.sock`,
    socket: { data() {}, drain() {} },
  });
  defer(() => client.terminate());
  const server = await accepted;
  defer(() => server.terminate());
  return { listener, client, server, received: () => received };
}

/**
 * A Go-style server (each new connection becomes its client; the one before is closed) in a
 * process of its own, bound by the name `name` from `cwd`, which then changes its working
 * directory to `later`. Its events ("listening", "open N", "data N"), in order, as they come.
 */
export async function goStyleServerThatMoves(defer: (cleanup: () => unknown) => void, name: string, cwd: string, later: string): Promise<string[]> {
  const script = `
    let current, opened = 0;
    Bun.listen({ unix: ${JSON.stringify(name)}, socket: {
      open(s) { console.log("open " + ++opened); current?.end(); current = s; },
      data(_s, chunk) { console.log("data " + chunk.length); },
    } });
    process.chdir(${JSON.stringify(later)});
    console.log("listening");`;
  const child = Bun.spawn([BUN, "-e", script], { cwd, stdout: "pipe", stderr: "pipe", env: agentEnv() });
  defer(async () => {
    child.kill("SIGKILL");
    await child.exited;
  });
  const events: string[] = [];
  let text = "";
  void (async () => {
    for await (const chunk of child.stdout) {
      text += new TextDecoder().decode(chunk);
      const lines = text.split("\n");
      text = lines.pop()!;
      events.push(...lines);
    }
  })();
  await until(() => events.includes("listening"), "the server listening");
  return events;
}

/**
 * An agent refused a live Go-style server's socket at `path` (exit 2, "in use by a live server"):
 * a marker connection made now writes 3 bytes, and once the server tells them ("data 3") its
 * `events` show whether anything connected before the marker, as a probe by the agent would have.
 */
export async function markedAfterRefusal(defer: (cleanup: () => unknown) => void, refused: Result, path: string, events: string[]): Promise<string[]> {
  expect(refused.code).toBe(2);
  expect(failureLine(refused.stderr)).toContain("in use by a live server");
  const marker = await connectClient(defer, path);
  marker.socket.write(new Uint8Array(3));
  await until(() => events.includes("data 3"), "the marker's bytes");
  return events;
}

/** A server agent serving at `path`: a client connects, and SIGTERM then stops it with exit 0. */
export async function expectServesThenStops(defer: (cleanup: () => unknown) => void, agent: Spawned, path: string, options: Parameters<typeof RecordingClient.connect>[1] = {}): Promise<RecordingClient> {
  const client = await connectClient(defer, path, options);
  expect(client).toBeDefined();
  agent.kill("SIGTERM");
  const done = await agent.done;
  expect(done.code, done.stderr).toBe(0);
  return client;
}
