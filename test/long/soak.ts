/**
 * The soak run: `bun run soak [-- options]`.
 *
 *   --seconds N       length of each memory scenario (default 60)
 *   --frames N        frames in the accounting run (default 3000000)
 *   --seed N          seed of the accounting run's random client behaviour (default random, printed)
 *   --slack-mb N      RSS growth allowed beyond the send queue's bound (default 24)
 *   --only memory|accounting
 *
 * 1. Bounded memory. A spawned `output serve` with a slow consumer: a client
 *    that reads in short bursts between long pauses (and reconnects when the
 *    server cuts it off as stuck). Two sources: `--realtime --loop` over the
 *    example Ogg file (with 32 KiB socket buffers so that the slow client
 *    really backs up), and a live flood through stdin. The server's VmRSS
 *    is sampled throughout; start (after a warm-up), max and end are
 *    reported, and the run fails if it grew by more than the send queue can
 *    hold at its largest (queue-frames x adaptive growth x largest message,
 *    at most the queue's byte bound)
 *    plus slack. Every frame the client got must be whole and in order, and
 *    the server's final line must account for every frame.
 *
 * 2. Long accounting. An in-process OutputServer in live mode takes millions
 *    of frames in random bursts while clients come and go at random: a new
 *    client replaces the current one, the current one pauses (and may be cut
 *    off as stuck), or hangs up by itself. At the end submitted = delivered +
 *    dropped exactly, every frame any client got is whole and in order across
 *    all clients, and clients that read to the end of their connection got
 *    every frame delivered to them.
 */
import type { Socket } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { OutputServer } from "../../src/channels/output-server.ts";
import { DEFAULT_ADAPTIVE } from "../../src/observe/adaptive-optimizer.ts";
import { FrameParser, MAX_MESSAGE, MessageType, OUTPUT_MAGIC, ProtocolError } from "../../src/protocol/index.ts";
import { QUEUE_MAX_BYTES } from "../../src/transport/frame-queue.ts";
import { DROP_REASONS } from "../../src/transport/frame-stats.ts";
import { silent } from "../../src/transport/report.ts";
import { findLogFields } from "../support/agent-log.ts";
import { StdinFeeder } from "../support/feeder.ts";
import { TONE } from "../support/opus-fixtures.ts";
import { indexedPayload, isIntactIndexedPayload, payloadIndex, FEED_MAX_SIZE } from "../support/payloads.ts";
import { rssKiB } from "../support/proc.ts";
import { spawnAgent, stopAgents } from "../support/processes.ts";
import { parseSeed, randomSeed, Rng } from "./rng.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: {
    seconds: { type: "string", default: "60" },
    frames: { type: "string", default: "3000000" },
    seed: { type: "string" },
    "slack-mb": { type: "string", default: "24" },
    only: { type: "string" },
  },
  strict: true,
});
const SECONDS = Number(values.seconds);
const FRAMES = Number(values.frames);
const SLACK = Number(values["slack-mb"]) * 1024 * 1024;
const seed = values.seed === undefined ? randomSeed() : parseSeed(values.seed);
const QUEUE_FRAMES = 500; // the agent's default --queue-frames
const QUEUE_BOUND = Math.min((QUEUE_FRAMES * DEFAULT_ADAPTIVE.queueGrowth + 1) * MAX_MESSAGE, QUEUE_MAX_BYTES);
const mb = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MB`;

const failures: string[] = [];
function check(ok: boolean, what: string): void {
  if (!ok) {
    failures.push(what);
    console.error(`  FAIL: ${what}`);
  }
}

/**
 * A client that checks every frame as it parses it (whole, uncorrupted,
 * indices increasing across all its connections), without keeping them.
 */
class VerifyingClient {
  frames = 0;
  connections = 0;
  corrupt = 0;
  outOfOrder = 0;
  protocolErrors = 0;
  lastIndex = -1;
  socket: Socket<undefined> | undefined;
  /** Frames of the connection in progress, and whether it ended at EOF from the server. */
  current = 0;
  pending = 0;
  private parser = new FrameParser(OUTPUT_MAGIC);

  constructor(private readonly maxSize: number) {}

  /** Index of the first frame received, -1 before any. */
  firstIndex = -1;
  private closedByUs = false;

  async connect(path: string, onClose: (client: VerifyingClient, byServer: boolean) => void): Promise<boolean> {
    this.parser = new FrameParser(OUTPUT_MAGIC);
    this.current = 0;
    this.closedByUs = false;
    try {
      this.socket = await Bun.connect({
        unix: path,
        socket: {
          binaryType: "uint8array",
          data: (_s, chunk) => this.receive(chunk),
          close: () => {
            this.pending = this.parser.pending;
            this.socket = undefined;
            onClose(this, !this.closedByUs);
          },
          error() {},
        },
      });
    } catch {
      return false;
    }
    this.connections++;
    return true;
  }

  /** Hangs up from this side: whatever is still in flight to it is lost. */
  hangUp(): void {
    this.closedByUs = true;
    this.socket?.terminate();
  }

  private receive(chunk: Uint8Array): void {
    try {
      this.parser.push(chunk);
      for (let m = this.parser.next(); m; m = this.parser.next()) {
        if (m.type !== MessageType.OpusFrame) continue;
        const payload = m.payload;
        if (this.maxSize > 0 && !isIntactIndexedPayload(payload, this.maxSize)) this.corrupt++;
        const index = this.maxSize > 0 ? payloadIndex(payload) : this.lastIndex + 1;
        if (index <= this.lastIndex) this.outOfOrder++;
        if (this.firstIndex < 0) this.firstIndex = index;
        this.lastIndex = index;
        this.frames++;
        this.current++;
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      this.protocolErrors++;
      this.hangUp();
    }
  }
}

// ------------------------------------------------------------------ memory

interface MemoryResult {
  start: number;
  max: number;
  end: number;
}

async function memoryScenario(name: string, dir: string, mode: "realtime" | "flood"): Promise<void> {
  const path = join(dir, `${name}.sock`);
  const args =
    mode === "realtime"
      ? ["output", "serve", "--socket", path, "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--socket-buffers", "32768"]
      : ["output", "serve", "--socket", path, "--source", "-"];
  const server = spawnAgent(args, { stdin: mode === "flood" ? "pipe" : "ignore" });
  await server.waitForStderr("listening");
  const feed = mode === "flood" ? new StdinFeeder(server) : undefined;
  feed?.flood(50, 2);

  // The slow consumer: paused most of the time, a short read now and then (every 10 s at the
  // realtime rate, enough for 32 KiB buffers to fill), back when cut off.
  const client = new VerifyingClient(mode === "flood" ? FEED_MAX_SIZE : 0);
  let running = true;
  let closedByServer = 0;
  const reconnect = async () => {
    while (running && !(await client.connect(path, (_c, byServer) => {
      if (byServer) closedByServer++;
      if (running) setTimeout(reconnect, 100);
    }))) await Bun.sleep(100);
  };
  await reconnect();
  let paused = false;
  const toggler = setInterval(() => {
    const socket = client.socket;
    if (!socket) return;
    paused = !paused;
    if (paused) socket.pause();
    else {
      socket.resume();
      setTimeout(() => client.socket === socket && socket.pause(), 5);
    }
  }, mode === "realtime" ? 5000 : 700);

  const samples: number[] = [];
  const started = performance.now();
  const warmup = Math.min(5, SECONDS / 4) * 1000;
  const result: MemoryResult = { start: 0, max: 0, end: 0 };
  while (performance.now() - started < SECONDS * 1000) {
    await Bun.sleep(250);
    const rss = rssKiB(server.pid) * 1024;
    samples.push(rss);
    if (performance.now() - started < warmup) continue;
    if (result.start === 0) result.start = rss;
    result.max = Math.max(result.max, rss);
    result.end = rss;
  }
  running = false;
  clearInterval(toggler);
  await feed?.end();
  server.kill("SIGTERM");
  const code = await server.exited;
  client.socket?.terminate();

  const stopped = findLogFields(server.stderr, "output-server", "stopped");
  const growth = result.max - result.start;
  console.log(
    `memory/${name}: ${SECONDS} s, RSS start ${mb(result.start)} max ${mb(result.max)} end ${mb(result.end)} (growth ${mb(growth)}, allowed ${mb(QUEUE_BOUND)} queue + ${mb(SLACK)} slack); ` +
      `client got ${client.frames} frames over ${client.connections} connection(s), ${closedByServer} closed by the server (stuck, or at the end)`,
  );
  if (stopped) {
    const dropped = Object.entries(stopped).filter(([k]) => k.startsWith("dropped_")).map(([k, v]) => `${k.slice(8)}=${v}`);
    console.log(`  server: submitted ${stopped.submitted}, delivered ${stopped.delivered}, dropped ${stopped.dropped} (${dropped.join(", ") || "none"})`);
  }
  check(code === 0, `memory/${name}: server exit code ${code}`);
  check(growth <= QUEUE_BOUND + SLACK, `memory/${name}: RSS grew by ${mb(growth)} > ${mb(QUEUE_BOUND + SLACK)}`);
  check(stopped !== undefined && Number(stopped.submitted) === Number(stopped.delivered) + Number(stopped.dropped), `memory/${name}: server accounting ${JSON.stringify(stopped)}`);
  check(client.corrupt === 0 && client.outOfOrder === 0 && client.protocolErrors === 0, `memory/${name}: client saw ${client.corrupt} corrupt, ${client.outOfOrder} out of order, ${client.protocolErrors} protocol errors`);
  check(client.frames > 0, `memory/${name}: the slow client received nothing`);
}

// -------------------------------------------------------------- accounting

async function accountingRun(dir: string): Promise<void> {
  const rng = new Rng(seed);
  const path = join(dir, "acc.sock");
  const MAX = 256;
  const server = await OutputServer.start({
    path,
    mode: 0o600,
    report: silent,
    queueFrames: QUEUE_FRAMES,
    dropPolicy: "oldest",
    lossless: false,
    writeDeadlineMs: 20,
    stuckFrames: 50,
    // Small buffers: short writes and half-written frames happen all the time.
    socketBuffers: { sendBytes: 16384, receiveBytes: 16384 },
  });
  const clients: VerifyingClient[] = [];
  /** Frames delivered to connections the client hung up itself (in flight ones are lost, legitimately). */
  let selfClosed = 0;
  let byServer = 0;
  let cutShort = 0;
  let cutShortByServer = 0;
  let live = 0;
  const openClient = async () => {
    const client = new VerifyingClient(MAX);
    clients.push(client);
    live++;
    await client.connect(path, (c, closedByServer) => {
      live--;
      if (closedByServer) byServer++;
      else selfClosed++;
      if (c.pending > 0) cutShort++;
      if (c.pending > 0 && closedByServer) cutShortByServer++;
    });
    return client;
  };

  let current = await openClient();
  const started = performance.now();
  let submitted = 0;
  let lastReport = started;
  while (submitted < FRAMES) {
    const burst = Math.min(FRAMES - submitted, rng.int(1, 300));
    for (let k = 0; k < burst; k++) server.sendFrame(indexedPayload(submitted++, MAX));
    // Now and then, the client side does something.
    const roll = rng.int(0, 999);
    if (roll < 3) {
      // A new client replaces the current one, which reads on to the end of its stream.
      current.socket?.resume();
      current = await openClient();
    } else if (roll < 6 && current.socket) {
      // Stops reading for a while (the server may judge it stuck and cut it off).
      const socket = current.socket;
      socket.pause();
      setTimeout(() => socket.resume(), rng.int(1, 150));
    } else if (roll < 7 && current.socket) {
      current.hangUp(); // what was in flight to it is lost with it
      current = await openClient();
    } else if (!current.socket) {
      current = await openClient(); // cut off by the server: come back
    }
    await new Promise((r) => setImmediate(r));
    if (performance.now() - lastReport > 5000) {
      lastReport = performance.now();
      console.log(`  accounting: ${submitted} frames submitted, ${clients.length} connections so far`);
    }
  }
  for (const c of clients) c.socket?.resume();
  await server.flush(2000);
  await server.stop();
  for (let i = 0; i < 200 && live > 0; i++) await Bun.sleep(10);
  const seconds = (performance.now() - started) / 1000;

  const s = server.stats;
  const received = clients.reduce((n, c) => n + c.frames, 0);
  const corrupt = clients.reduce((n, c) => n + c.corrupt, 0);
  const outOfOrder = clients.reduce((n, c) => n + c.outOfOrder, 0);
  const protocolErrors = clients.reduce((n, c) => n + c.protocolErrors, 0);
  // Across connections, in the order they were made: each one's frames come after the last one's.
  const served = clients.filter((c) => c.frames > 0);
  const overlaps = served.filter((c, k) => k > 0 && c.firstIndex <= served[k - 1]!.lastIndex).length;
  const reasons = DROP_REASONS.filter((r) => s.dropped[r] > 0).map((r) => `${r}=${s.dropped[r]}`);
  console.log(
    `accounting: seed ${seed}, ${s.submitted} frames in ${seconds.toFixed(1)} s over ${clients.length} connections ` +
      `(${byServer} closed by the server, ${selfClosed} by the client, ${cutShort} ending inside a frame)`,
  );
  console.log(`  server: delivered ${s.delivered}, dropped ${s.droppedTotal} (${reasons.join(", ") || "none"}); clients received ${received} whole frames`);
  check(s.submitted === FRAMES, `accounting: submitted ${s.submitted}, expected ${FRAMES}`);
  check(s.submitted === s.delivered + s.droppedTotal, `accounting: submitted ${s.submitted} != delivered ${s.delivered} + dropped ${s.droppedTotal}`);
  check(corrupt === 0 && outOfOrder === 0 && protocolErrors === 0, `accounting: ${corrupt} corrupt, ${outOfOrder} out of order or repeated, ${protocolErrors} protocol errors`);
  check(overlaps === 0, `accounting: ${overlaps} connection(s) got frames not after the previous connection's`);
  check(received <= s.delivered, `accounting: clients received ${received} > delivered ${s.delivered}`);
  if (selfClosed === 0) check(received === s.delivered, `accounting: clients received ${received} != delivered ${s.delivered}`);
  else console.log(`  ${s.delivered - received} delivered frames were still in flight when a client hung up itself (allowed)`);
  check(live === 0, `accounting: ${live} client connection(s) never closed`);
  // A frame cut short by the server closing a connection was counted client_gone; so, at most, was
  // one per connection the client hung up itself.
  const gone = s.dropped.client_gone;
  check(gone >= cutShortByServer && gone <= cutShortByServer + selfClosed, `accounting: client_gone ${gone}, but ${cutShortByServer} server-closed connections ended inside a frame (and ${selfClosed} were hung up by the client)`);
}

// --------------------------------------------------------------------- main

const dir = mkdtempSync("/tmp/aa-soak-");
console.log(`soak: seed ${seed} (replay: bun run soak -- --seed ${seed}), ${SECONDS} s per memory scenario, ${FRAMES} frames of accounting`);
try {
  if (values.only !== "accounting") {
    await memoryScenario("realtime", dir, "realtime");
    await memoryScenario("flood", dir, "flood");
  }
  if (values.only !== "memory") await accountingRun(dir);
} catch (e) {
  failures.push(`harness error: ${(e as Error).stack ?? e}`);
  console.error(e);
} finally {
  await stopAgents();
  rmSync(dir, { recursive: true, force: true });
}
console.log(failures.length === 0 ? `soak: all passed (seed ${seed})` : `soak: FAILED (seed ${seed}):\n  ${failures.join("\n  ")}`);
process.exit(failures.length === 0 ? 0 : 1);
