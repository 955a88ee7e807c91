/**
 * The agent's per-frame JavaScript cost without the kernel: the real send
 * path (pumpSource -> OutputServer.sendFrame -> FrameWriter -> FrameQueue ->
 * FrameWriter.pump, the Instruments' hooks with metrics) into a socket
 * stand-in that takes every write whole, and the real receive path
 * (OutputClient's read handler -> FrameParser -> onMessage, frame age into
 * the Instruments) over a prepared byte
 * stream cut into 64 KiB reads. Single process, CPU-bound, best of R runs:
 * steady enough on a shared machine to compare variants of src/transport
 * and src/protocol, which the two-process flood cannot resolve.
 *
 *   bun bench/hot-path.ts [--frames N] [--runs R] [--root DIR] [--no-metrics] [--no-hooks] [--read BYTES]
 *
 * --root runs another copy of the repository (a variant under test);
 * --no-metrics leaves the Prometheus registry out, --no-hooks the
 * Instruments and their hooks (to price them); --read sets the read size.
 */
import { resolve } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    frames: { type: "string", default: "2000000" },
    runs: { type: "string", default: "7" },
    root: { type: "string", default: resolve(import.meta.dir, "..") },
    "no-metrics": { type: "boolean", default: false },
    "no-hooks": { type: "boolean", default: false },
    read: { type: "string", default: String(64 * 1024) },
  },
});
const root = resolve(values.root!);
const FRAMES = Number(values.frames);
const RUNS = Number(values.runs);
const READ_BYTES = Number(values.read);

const { OutputServer } = await import(`${root}/src/channels/output-server.ts`);
const { OutputClient } = await import(`${root}/src/channels/output-client.ts`);
const { pumpSource } = await import(`${root}/src/media/pump.ts`);
const { Instruments } = await import(`${root}/src/roles/instruments.ts`);
const { Logger } = await import(`${root}/src/observe/logger.ts`);
const { resolveSettings, socketBufferSizes } = await import(`${root}/src/config.ts`);
const protocol = await import(`${root}/src/protocol/index.ts`);
const { MessageType, OUTPUT_MAGIC, HEADER_SIZE, wallClockMs, encodeMessage } = protocol;

const metrics = values["no-metrics"] ? {} : { metrics: "127.0.0.1:0" };
const logger = new Logger({ level: "error", format: "text" });

/** A connected socket as far as the writer and the Instruments can tell; takes every write whole. */
function fakeSocket() {
  return { write: (_b: Uint8Array, _o?: number, len?: number) => len ?? _b.length, fd: -1, readyState: 1, end() {}, terminate() {} };
}

function cpu(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e3;
}

async function sendRun(size: number): Promise<number> {
  const settings = resolveSettings("output serve", { flags: { source: "-", ...metrics }, env: {} });
  const server = new OutputServer({
    path: "/nonexistent",
    mode: 0o600,
    report: () => {},
    queueFrames: settings["queue-frames"],
    dropPolicy: settings.drop,
    lossless: true,
    writeDeadlineMs: settings["write-deadline-ms"],
    stuckFrames: settings["stuck-frames"],
    socketBuffers: socketBufferSizes(settings["socket-buffers"]),
  });
  const instruments = values["no-hooks"] ? undefined : await Instruments.attach(server, { role: "output serve", settings, logger });
  attachWriterSocket(server, fakeSocket());
  const payload = new Uint8Array(size).fill(0xa5);
  const view = new DataView(payload.buffer);
  let i = 0;
  const frame = { payload, timeMs: 0 };
  const source = {
    name: "hot-path",
    next: () => (i < FRAMES ? (view.setUint32(0, i++, true), frame) : undefined),
    fill: async () => false,
    rewind: () => false,
    close: async () => {},
  };
  const t0 = cpu();
  await pumpSource(source, server, { lossless: true, loop: false, isStopped: () => false });
  await server.waitForIdle();
  const ms = cpu() - t0;
  await instruments?.stop();
  if (server.stats.delivered !== FRAMES) throw new Error(`send: delivered ${server.stats.delivered}`);
  return (ms * 1e6) / FRAMES;
}

/**
 * Hands the server's writer a socket without a listener. Like attachFakeSocket
 * below, this reaches into internals on purpose: when they change, fix it here.
 */
function attachWriterSocket(server: object, socket: object): void {
  const writer = (server as { writer?: { attach?: (s: unknown) => void } }).writer;
  if (!writer?.attach) throw new Error("hot-path.ts: OutputServer internals changed; update attachWriterSocket()");
  writer.attach(socket);
}

/**
 * Makes the client believe `socket` is its connection, so its private read
 * handler can be fed directly. This reaches into internals on purpose (it is
 * a benchmark of exactly that handler): when they change, fix it here.
 */
function attachFakeSocket(client: object, socket: object): void {
  const c = client as { connection?: { current?: unknown }; socket?: unknown };
  if (c.connection && "current" in c.connection) c.connection.current = socket; // ReconnectingConnection
  else if ("socket" in c) c.socket = socket; // the first OutputClient
  else throw new Error("hot-path.ts: OutputClient internals changed; update attachFakeSocket()");
}

/** The wire bytes of `frames` frames, numbered, as one stream. */
function stream(frames: number, size: number): Uint8Array {
  const one = encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, new Uint8Array(size).fill(0xa5), BigInt(Math.round(wallClockMs() * 1e6)));
  const out = new Uint8Array(one.length * frames);
  for (let k = 0; k < frames; k++) {
    out.set(one, k * one.length);
    new DataView(out.buffer, k * one.length + HEADER_SIZE, 4).setUint32(0, k, true);
  }
  return out;
}

async function recvRun(size: number, bytes: Uint8Array, framesInStream: number): Promise<number> {
  const settings = resolveSettings("output recv", { flags: { sink: "-", ...metrics }, env: {} });
  let received = 0;
  const client = new OutputClient({
    path: "/nonexistent",
    report: () => {},
    socketBuffers: socketBufferSizes(settings["socket-buffers"]),
    onMessage: (m: { type: number; length: number }) => {
      if (m.type === MessageType.OpusFrame && m.length === size) received++;
    },
  });
  const instruments = values["no-hooks"] ? undefined : await Instruments.attach(client, { role: "output recv", settings, logger });
  const socket = fakeSocket();
  attachFakeSocket(client, socket);
  const receive = (client as unknown as { receive(s: unknown, c: Uint8Array): void }).receive.bind(client);
  const passes = Math.ceil(FRAMES / framesInStream);
  const t0 = cpu();
  for (let p = 0; p < passes; p++) {
    for (let at = 0; at < bytes.length; at += READ_BYTES) {
      // Bun hands every read over in a fresh Uint8Array: copy, as it does.
      receive(socket, bytes.slice(at, Math.min(at + READ_BYTES, bytes.length)));
    }
  }
  const ms = cpu() - t0;
  await instruments?.stop();
  if (received !== passes * framesInStream) throw new Error(`recv: ${received} of ${passes * framesInStream}`);
  return (ms * 1e6) / received;
}

console.log(`hot path, ${root}, ${FRAMES} frames, best of ${RUNS}, metrics ${values["no-metrics"] ? "off" : "on"}, hooks ${values["no-hooks"] ? "off" : "on"}, reads of ${READ_BYTES} B`);
for (const size of [160, 4096]) {
  const framesInStream = Math.floor((4 * 1024 * 1024) / (HEADER_SIZE + size));
  const bytes = stream(framesInStream, size);
  const send: number[] = [];
  const recv: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    send.push(await sendRun(size));
    recv.push(await recvRun(size, bytes, framesInStream));
  }
  const best = (xs: number[]) => Math.min(...xs).toFixed(0);
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1].toFixed(0);
  console.log(`${String(size).padStart(4)} B  send ${best(send)} ns/frame (median ${med(send)})  recv ${best(recv)} ns/frame (median ${med(recv)})`);
}
process.exit(0);
