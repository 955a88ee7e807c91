/**
 * The live web monitor (--monitor): the page in a real browser (Debian's
 * chromium driven by playwright-core) against a running agent streaming a
 * real Ogg Opus file, and the hub's promises about the frame path: no
 * listener, no cost; a slow listener loses frames alone.
 */
import { afterEach, describe, expect, spyOn, test } from "bun:test";
import type { Socket } from "bun";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Page } from "playwright-core";
import { STALL_MS } from "../../src/observe/http-front.ts";
import { AgentHttpServer } from "../../src/observe/http-server.ts";
import { setSocketBuffers } from "../../src/transport/socket-options.ts";
import { JUDGE_AFTER_READ_MS, type MonitorFigures, MonitorHub, VIEWER_LIMITS, type ViewerLimits } from "../../src/observe/monitor/hub.ts";
import { encodeMessage, INPUT_MAGIC, MessageType, OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import { useCleanup } from "../support/cleanup.ts";
import { faketimeMissing, SteppedClock } from "../support/faketime.ts";
import { rawRequest, rawUpgrade } from "../support/http.ts";
import { metricsUrl, samples, scrape, scrapeValue, value } from "../support/metrics.ts";
import { TONE } from "../support/opus-fixtures.ts";
import { expectIntactInOrder } from "../support/payloads.ts";
import { connectClient, fakeServer, RecordingClient } from "../support/peer.ts";
import { packetsOf } from "../support/ogg.ts";
import { resetOnClose } from "../support/player-sockets.ts";
import { agentEnv, BUN, REPO, spawnAgent, type Spawned, stopAgents } from "../support/processes.ts";
import { stillFigures } from "../support/readings.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { indexedWire, wireBytes } from "../support/wire.ts";

/** TONE: stereo, 20 ms packets. */
const FIXTURE_CHANNELS = 2;
const FIXTURE_FRAMES_PER_SECOND = 50;
const ARTIFACTS = join(REPO, "test/artifacts");
const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
];

const defer = useCleanup();
afterEach(stopAgents);

/** What the page exposes as window.monitorState. */
interface PageState {
  link: string;
  identity: { role: string; channel: string; socket: string } | null;
  figuresReceived: number;
  lastFigures: MonitorFigures | null;
  listening: boolean;
  packetsReceived: number;
  decodedFrames: number;
  decodedSampleRate: number;
  decodedChannels: number;
  level: number;
  listenerDrops: number | null;
  errors: string[];
}

async function figures(base: string): Promise<MonitorFigures> {
  const response = await fetch(`${base}/figures`);
  if (response.status !== 200) throw new Error(`GET ${base}/figures: ${response.status}`);
  return (await response.json()) as MonitorFigures;
}

/** A hub with still figures, served on a loopback port; both stopped after the test. */
async function hubOnHttp(limits: ViewerLimits = VIEWER_LIMITS, intervalMs = 1000): Promise<{ hub: MonitorHub; server: AgentHttpServer; url: string }> {
  const still = () => stillFigures({ connected: true });
  const hub = new MonitorHub({ role: "output serve", channel: "output", socket: "/tmp/x.sock" }, still, intervalMs, limits);
  defer(() => hub.stop());
  const server = await AgentHttpServer.start({ host: "127.0.0.1", port: 0 }, { monitor: hub });
  defer(() => server.stop());
  return { hub, server, url: `ws://127.0.0.1:${server.port}/ws` };
}

/** A WebSocket viewer that resolves once the hub's hello arrives, or rejects if it is closed first. */
async function viewer(url: string): Promise<WebSocket> {
  const ws = new WebSocket(url);
  defer(() => ws.close());
  await new Promise<void>((resolve, reject) => {
    ws.onmessage = (e) => {
      if (typeof e.data === "string" && JSON.parse(e.data).type === "hello") resolve();
    };
    ws.onclose = (e) => reject(new Error(`closed before hello: ${e.code}`));
  });
  return ws;
}

/** The hello a new viewer at `url` is sent first, as sent; the viewer is closed once it has it. */
async function helloText(url: string): Promise<string> {
  const ws = new WebSocket(url);
  defer(() => ws.close());
  const text = await new Promise<string>((resolve, reject) => {
    ws.onmessage = (e) => resolve(String(e.data));
    ws.onclose = (e) => reject(new Error(`closed before hello: ${e.code}`));
  });
  ws.close();
  return text;
}

/** A bare TCP peer that asks for a WebSocket at `port`, then never reads again (nor answers a ping). */
async function stalledPeer(port: number, receiveBytes?: number): Promise<void> {
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: { open: (s) => void s.pause(), data() {}, close() {}, error() {} },
  });
  defer(() => socket.terminate());
  // A small receive buffer: what the agent sends it waits in the agent, not in this test's kernel.
  if (receiveBytes !== undefined) expect(setSocketBuffers(socket.fd, { sendBytes: 4096, receiveBytes }).ok).toBe(true);
  socket.write(
    `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  );
}

/** The monitor page at `base` in Debian's Chromium (closed after the test), and the errors it throws. */
async function openPage(base: string): Promise<{ page: Page; pageErrors: string[] }> {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: the monitor page test needs Debian's chromium (npm test installs it: apt-get install chromium fonts-dejavu-core)`);
  }
  const profile = socketDir(defer, "aa-chromium-").dir;
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 800 },
  });
  defer(() => context.close());
  const page = context.pages()[0] ?? (await context.newPage());
  const pageErrors: string[] = [];
  page.on("pageerror", (e) => pageErrors.push(String(e)));
  await page.goto(`${base}/`);
  return { page, pageErrors };
}

/** Presses Listen and waits until the page has decoded half a second of audio with a level (or failed). */
async function listen(page: Page): Promise<PageState> {
  await page.click("#listen-button");
  await page.waitForFunction(
    () => {
      const s = (window as any).monitorState;
      return s.errors.length > 0 || (s.decodedFrames >= 25 && s.level > 0);
    },
    null,
    { polling: 50, timeout: 10_000 },
  );
  return pageState(page);
}

const pageState = (page: Page) => page.evaluate(() => (window as unknown as { monitorState: PageState }).monitorState);

describe("monitor page in a browser", () => {
  test(
    "shows identity, live figures matching /metrics, the connection history, and plays the stream",
    async () => {
      const sockets = socketDir(defer);
      const socket = sockets.path("out.sock");
      const serve = spawnAgent([
        "output", "serve", "--socket", socket, "--source", TONE, "--format", "ogg", "--realtime", "--loop",
        "--monitor", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
      ]);
      const base = await metricsUrl(serve);
      const recv = spawnAgent(["output", "recv", "--socket", socket, "--sink", "/dev/null"]);
      await until(async () => (await figures(base)).connected, "the receiver to connect", 10_000, 50);

      const { page, pageErrors } = await openPage(base);

      // Identity, and figures that move.
      await page.waitForFunction(() => (window as any).monitorState.figuresReceived >= 1, null, { polling: 50, timeout: 10_000 });
      expect(await page.textContent("#id-role")).toBe("output serve");
      expect(await page.textContent("#now-title")).toBe("Now");
      expect(await page.locator("#other-channels").isVisible()).toBe(false);
      expect(await page.textContent("#id-channel")).toBe("output");
      expect(await page.textContent("#id-socket")).toBe(socket);
      const first = await pageState(page);
      expect(first.link).toBe("live");
      expect(first.identity).toEqual({ role: "output serve", channel: "output", socket });
      await page.waitForFunction((n) => (window as any).monitorState.figuresReceived > n, first.figuresReceived, { polling: 50, timeout: 5000 });
      const second = await pageState(page);
      expect(second.lastFigures!.frames).toBeGreaterThan(first.lastFigures!.frames);
      expect(second.lastFigures!.connected).toBe(true);

      // The page's figures are the metrics: right after a fresh figures message, a scrape is at most a second ahead.
      await page.waitForFunction((n) => (window as any).monitorState.figuresReceived > n, second.figuresReceived, { polling: 20, timeout: 5000 });
      const shown = (await pageState(page)).lastFigures!;
      const sent = await scrapeValue(base, "jetkvm_audio_frames_sent_total");
      expect(shown.connected).toBe(true);
      expect(sent - shown.frames).toBeGreaterThanOrEqual(0);
      expect(sent - shown.frames).toBeLessThanOrEqual(FIXTURE_FRAMES_PER_SECOND);
      expect(await page.textContent("#figures")).toContain(shown.frames.toLocaleString("en-US"));

      // The connection history shows the receiver.
      const history = await page.textContent("#events");
      expect(history).toContain("connected");
      expect(history).toContain(socket);
      expect(await page.textContent("#peer")).toContain("connected");

      // Listen: WebCodecs decodes the live Opus frames.
      const listening = await listen(page);
      expect(listening.errors).toEqual([]);
      expect(listening.listening).toBe(true);
      expect(listening.decodedSampleRate).toBe(48000);
      expect(listening.decodedChannels).toBe(FIXTURE_CHANNELS);
      expect(listening.level).toBeGreaterThan(0.01);
      expect(listening.level).toBeLessThanOrEqual(1.5);
      expect((await figures(base)).listeners).toBe(1);
      await page.waitForFunction(() => (window as any).monitorState.listenerDrops === 0, null, { polling: 50, timeout: 5000 });
      await page.waitForFunction(() => document.querySelector("#listen-figures")!.textContent!.includes("48,000 Hz · stereo"), null, { polling: 50, timeout: 5000 });
      expect(await page.textContent("#listen-status")).toBe("playing");

      // A little more history for the charts, then the screenshot.
      await page.waitForFunction((n) => (window as any).monitorState.figuresReceived >= n, second.figuresReceived + 3, { polling: 100, timeout: 5000 });
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, "monitor.png") });

      // Stop: the page leaves the listeners and the agent's tap goes away.
      await page.click("#listen-button");
      expect((await pageState(page)).listening).toBe(false);
      await until(async () => (await figures(base)).listeners === 0, "the listener to leave", 10_000, 50);

      // The receiver goes away: the page shows the disconnect and its reason.
      recv.kill("SIGTERM");
      await page.waitForFunction(() => document.querySelector("#events")!.textContent!.includes("disconnected"), null, { polling: 50, timeout: 10_000 });
      await page.waitForFunction(() => (window as any).monitorState.lastFigures.connected === false, null, { polling: 50, timeout: 5000 });
      expect(await page.textContent("#peer")).toContain("not connected");
      expect(pageErrors).toEqual([]);
    },
    40_000,
  );
});

describe("monitor page at a receiver whose peer stamps its frames off this machine's clock", () => {
  test(
    "plays them all the same: the page takes no decoder timestamp from the peer (i64 max, 0, i64 min)",
    async () => {
      const sockets = socketDir(defer);
      const socket = sockets.path("out.sock");
      const audio = packetsOf(new Uint8Array(readFileSync(TONE))).slice(2);
      const stamps = [(1n << 63n) - 1n, 0n, -(1n << 63n)];
      let streaming = true;
      defer(() => void (streaming = false));
      const server = fakeServer(socket, async (s) => {
        for (let i = 0; streaming; i++) {
          s.write(encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, audio[i % audio.length]!, stamps[i % stamps.length]!));
          await Bun.sleep(20);
        }
      });
      defer(() => server.stop());
      const recv = spawnAgent(["output", "recv", "--socket", socket, "--sink", "/dev/null", "--monitor", "127.0.0.1:0"]);
      const base = await metricsUrl(recv);
      await until(async () => (await figures(base)).frames > 0, "frames at the receiver", 10_000, 50);

      const { page, pageErrors } = await openPage(base);
      await page.waitForFunction(() => (window as any).monitorState.figuresReceived >= 1, null, { polling: 50, timeout: 10_000 });
      const listening = await listen(page);
      expect(listening.errors).toEqual([]);
      expect(listening.decodedFrames).toBeGreaterThanOrEqual(25);
      expect(listening.level).toBeGreaterThan(0.01);
      expect(await page.textContent("#listen-status")).toBe("playing");
      expect(pageErrors).toEqual([]);
    },
    40_000,
  );
});

describe.skipIf(faketimeMissing !== undefined)(`monitor page of an agent whose wall clock steps${faketimeMissing ? ` (skipped: ${faketimeMissing})` : ""}`, () => {
  test(
    "how long the peer has been connected counts the time that passed, not the step: not days after the clock is set 3 days forward (a board's first sync), still growing after it is set back an hour",
    async () => {
      const sockets = socketDir(defer);
      const socket = sockets.path("out.sock");
      const clock = new SteppedClock(sockets.path("clock"));
      clock.step("-259200");
      const serve = spawnAgent(["output", "serve", "--socket", socket, "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--monitor", "127.0.0.1:0"], { env: agentEnv(clock.env()) });
      const base = await metricsUrl(serve);
      spawnAgent(["output", "recv", "--socket", socket, "--sink", "/dev/null"]);
      await until(async () => (await figures(base)).connected, "the receiver to connect", 10_000, 50);
      const { page, pageErrors } = await openPage(base);
      await page.waitForFunction(() => /^connected for \d+ s$/.test(document.querySelector("#peer")!.textContent!), null, { polling: 50, timeout: 10_000 });
      /** Waits for two more figures from the agent (one taken wholly after whatever came before), then reads the badge. */
      const badgeAfterFigures = async () => {
        const n = (await pageState(page)).figuresReceived;
        await page.waitForFunction((n) => (window as any).monitorState.figuresReceived >= n + 2, n, { polling: 50, timeout: 10_000 });
        return (await page.textContent("#peer"))!;
      };
      clock.step("+0");
      const forward = await badgeAfterFigures();
      expect(forward).toMatch(/^connected for \d+ s$/);
      clock.step("-3600");
      const back = await badgeAfterFigures();
      expect(back).toMatch(/^connected for \d+ s$/);
      const seconds = (text: string) => Number(/(\d+) s$/.exec(text)![1]);
      expect(seconds(back)).toBeGreaterThanOrEqual(seconds(forward));
      // And it goes on counting.
      await page.waitForFunction((s) => Number(/(\d+) s$/.exec(document.querySelector("#peer")!.textContent!)?.[1]) > s, seconds(back), { polling: 100, timeout: 10_000 });
      expect(pageErrors).toEqual([]);
    },
    60_000,
  );
});

describe("monitor page of serve", () => {
  test(
    "shows and plays the output channel, and the input channel's figures and connections beside it",
    async () => {
      const sockets = socketDir(defer);
      const out = sockets.path("o.sock");
      const input = sockets.path("i.sock");
      const mic = sockets.path("mic.wire");
      await Bun.write(mic, wireBytes(0, 250, (i) => new Uint8Array(160).fill(i & 0xff), INPUT_MAGIC));
      const serve = spawnAgent([
        "serve", "--output-socket", out, "--output-source", TONE, "--output-format", "ogg", "--output-realtime", "--output-loop",
        "--input-socket", input, "--input-sink", sockets.path("sink.wire"),
        "--monitor", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
      ]);
      const base = await metricsUrl(serve);
      spawnAgent(["output", "recv", "--socket", out, "--sink", "/dev/null"]);
      const send = spawnAgent(["input", "send", "--socket", input, "--source", mic, "--realtime", "--loop"]);
      await until(async () => {
        const f = await figures(base);
        return f.connected && f.channels?.input?.connected === true;
      }, "both peers to connect", 10_000, 50);

      const { page, pageErrors } = await openPage(base);
      await page.waitForFunction(() => (window as any).monitorState.figuresReceived >= 2, null, { polling: 50, timeout: 10_000 });
      expect(await page.textContent("#id-role")).toBe("serve");
      expect(await page.textContent("#now-title")).toBe("Now · output channel");
      expect(await page.textContent("#id-channel")).toBe("output");
      expect(await page.textContent("#id-socket")).toBe(out);
      expect(await page.textContent("#peer")).toContain("connected");

      // The input channel's card: its socket and figures that move, as the metrics count them.
      const others = page.locator("#other-channels");
      expect(await others.isVisible()).toBe(true);
      expect(await others.textContent()).toContain(`input channel ${input}`);
      const shown = (await pageState(page)).lastFigures!.channels!.input!;
      expect(shown.connected).toBe(true);
      const received = await scrapeValue(base, "jetkvm_microphone_frames_received_total");
      expect(received - shown.frames).toBeGreaterThanOrEqual(0);
      expect(received - shown.frames).toBeLessThanOrEqual(2 * FIXTURE_FRAMES_PER_SECOND);
      expect(await others.textContent()).toContain(shown.frames.toLocaleString("en-US"));
      const before = shown.frames;
      await page.waitForFunction((n) => (window as any).monitorState.lastFigures.channels.input.frames > n, before, { polling: 50, timeout: 5000 });
      // The input server's own counts, as /healthz has them: one session so far, the client's heartbeats.
      const health = await (await fetch(`${base}/healthz`)).json();
      expect(shown.counts.sessions).toBe(1);
      expect(health.channels.input.sessions).toBe(1);
      expect(Object.keys(shown.counts).sort()).toEqual(["acks_dropped", "acks_sent", "clean_sessions", "frame_stamps_unusable", "heartbeats", "sessions"]);
      expect(await others.locator('dt:text-is("sessions") + dd').textContent()).toBe("1");
      // The output channel's optimizer shows its level; the input server runs none, and says so.
      expect(shown.adaptiveLevel).toBeUndefined();
      expect(await others.locator('dt:text-is("Adaptive level") + dd').textContent()).toBe("no optimizer at this role");
      expect(await page.locator('#figures dt:text-is("Adaptive level") + dd').textContent()).toBe("0");

      // Both channels' connections in the history, the input one named as such.
      const history = await page.textContent("#events");
      expect(history).toContain(out);
      expect(history).toContain(`input: ${input}`);

      // Listen plays the output channel.
      const listening = await listen(page);
      expect(listening.errors).toEqual([]);
      expect(listening.decodedChannels).toBe(FIXTURE_CHANNELS);

      // The input peer leaves: its card says so, the output channel's badge does not change.
      send.kill("SIGTERM");
      await page.waitForFunction(() => (window as any).monitorState.lastFigures.channels.input.connected === false, null, { polling: 50, timeout: 10_000 });
      await page.waitForFunction(() => document.querySelector("#events")!.textContent!.includes("disconnected"), null, { polling: 50, timeout: 10_000 });
      expect(await page.textContent("#peer")).toContain("connected for");
      expect(pageErrors).toEqual([]);
    },
    40_000,
  );
});

describe("monitor hub", () => {
  test("no listener, no cost: frameTap exists only while a page listens", async () => {
    const { hub, server } = await hubOnHttp();
    expect(hub.frameTap).toBeUndefined();

    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
    const hello = new Promise<{ type: string; identity: unknown }>((done) => {
      ws.onmessage = (e) => done(JSON.parse(String(e.data)));
    });
    defer(() => ws.close());
    await new Promise((open) => (ws.onopen = open));
    expect(await hello).toMatchObject({ type: "hello", identity: { role: "output serve", socket: "/tmp/x.sock" } });
    // A page that only watches costs the frame path nothing either.
    expect(hub.frameTap).toBeUndefined();

    ws.send(JSON.stringify({ listen: true }));
    await until(() => hub.frameTap !== undefined, "the tap while listening", 5000);
    expect(hub.listeners).toBe(1);
    ws.send(JSON.stringify({ listen: false }));
    await until(() => hub.frameTap === undefined, "no tap after listening stops", 5000);
    expect(hub.listeners).toBe(0);

    // A listener that goes away without saying so removes the tap too.
    ws.send(JSON.stringify({ listen: true }));
    await until(() => hub.frameTap !== undefined, "the tap while listening again", 5000);
    ws.close();
    await until(() => hub.frameTap === undefined, "no tap after the listener closed", 5000);
    expect(hub.listeners).toBe(0);
  });

  test(
    "a listener that never reads loses frames alone; the socket path keeps pace without drops",
    async () => {
      // 4 KiB frames 1 ms apart, in real time: 4 MiB/s, enough to fill a stalled
      // browser's TCP buffers in about a second (20 ms Opus would take minutes).
      // Each frame's first two bytes are its index, so a listener can tell a frame it missed.
      const FRAMES = 1000;
      const STEP_MS = 1;
      const sockets = socketDir(defer);
      const capture = sockets.path("flood.wire");
      const indexed = (i: number) => {
        const payload = new Uint8Array(4096).fill(i & 0xff);
        new DataView(payload.buffer).setUint16(0, i, true);
        return payload;
      };
      await Bun.write(capture, wireBytes(0, FRAMES, indexed, OUTPUT_MAGIC, STEP_MS));
      const socket = sockets.path("out.sock");
      // The socket's reader gets two seconds before frames are dropped for it, where the defaults give
      // 50 ms (write deadline) and 100 ms (latency budget): a loaded machine that holds `output recv`
      // off the CPU for a moment would otherwise drop frames here that are not the stalled browser's
      // doing. A socket path held up by the browser still shows, in the pace below and in drops.
      const serve = spawnAgent([
        "output", "serve", "--socket", socket, "--source", capture, "--format", "wire", "--realtime", "--loop",
        "--write-deadline-ms", "2000", "--max-latency-ms", "2000", "--queue-frames", "2000",
        "--monitor", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
      ]);
      const base = await metricsUrl(serve);
      const wsUrl = `${base.replace(/^http/, "ws")}/ws`;

      // A listener that keeps up: what it gets (frames it was not sent show as a gap in the indices,
      // counted by it, not by the hub), the stamp of the newest, and what the hub says it missed, with
      // what all listeners missed at the same tick (its figures come just before).
      let fastMissed = 0;
      let fastLast = -1;
      let fastNewestStamp = 0;
      let fastDropped = -1;
      let allDropped = -1;
      let allDroppedAtTick = -1;
      const fast = new WebSocket(wsUrl);
      fast.binaryType = "arraybuffer";
      defer(() => fast.close());
      fast.onmessage = (e) => {
        if (typeof e.data !== "string") {
          // [u8 kind][f64 stamp, Unix ms][payload]
          const view = new DataView(e.data as ArrayBuffer);
          const index = view.getUint16(9, true);
          if (fastLast >= 0) fastMissed += (index - fastLast - 1 + FRAMES) % FRAMES;
          fastLast = index;
          fastNewestStamp = view.getFloat64(1, true);
        } else {
          const message = JSON.parse(e.data);
          if (message.type === "figures") allDroppedAtTick = message.figures.listenerDrops;
          else if (message.type === "listener") [fastDropped, allDropped] = [message.dropped, allDroppedAtTick];
        }
      };
      await new Promise((open) => (fast.onopen = open));
      fast.send(JSON.stringify({ listen: true }));
      await until(async () => (await figures(base)).listeners === 1, "the fast listener to listen", 10_000, 50);

      spawnAgent(["output", "recv", "--socket", socket, "--sink", "/dev/null"]);
      await until(async () => (await figures(base)).connected, "the receiver to connect", 10_000, 50);

      /** Frames sent on the socket over the next second, per second, and how many. */
      const pace = async () => {
        const sent0 = await scrapeValue(base, "jetkvm_audio_frames_sent_total");
        const t0 = performance.now();
        await Bun.sleep(1000);
        const sent = (await scrapeValue(base, "jetkvm_audio_frames_sent_total")) - sent0;
        return { sent, perSecond: sent / ((performance.now() - t0) / 1000) };
      };
      // The pace with every listener keeping up: the baseline, on this machine, under its load now.
      const baseline = await pace();

      // The slow listener: asks for frames, then stops reading its socket.
      // Bun's WebSocket client has pause()/terminate(); the DOM type does not list them.
      const slow = new WebSocket(wsUrl) as WebSocket & { pause(): boolean; terminate(): void };
      defer(() => slow.terminate());
      await new Promise((open) => (slow.onopen = open));
      slow.send(JSON.stringify({ listen: true }));
      await until(async () => (await figures(base)).listeners === 2, "the slow listener to listen", 10_000, 50);
      expect(slow.pause()).toBe(true);
      await until(async () => (await figures(base)).listenerDrops > 0, "frames dropped for the slow listener", 15_000, 50);

      // The pace while it is stalled: up to three one-second windows, the first that keeps half the
      // baseline's. A machine busy elsewhere can hold the agent off the CPU for part of one window
      // (lateness over 200 ms is not caught up), not for all three; a socket path held up by the
      // stalled browser is slow in every one.
      const dropped0 = await scrapeValue(base, "jetkvm_audio_frames_dropped_total");
      let stalled = await pace();
      for (let tries = 1; tries < 3 && !(stalled.perSecond > 0.5 * baseline.perSecond); tries++) stalled = await pace();
      const dropped1 = await scrapeValue(base, "jetkvm_audio_frames_dropped_total");
      const stalledUntil = Date.now();
      const after = await figures(base);

      expect(after.listenerDrops).toBeGreaterThan(0);
      expect(dropped1 - dropped0).toBe(0);
      expect(Object.entries(after.dropped).filter(([reason, n]) => reason !== "no_client" && n > 0)).toEqual([]);
      // The socket path did not slow down for the stalled browser: against the baseline just taken
      // (not a fixed rate, which a loaded machine could miss either way), with a wide margin.
      expect(baseline.sent).toBeGreaterThan(0);
      expect(stalled.perSecond).toBeGreaterThan(0.5 * baseline.perSecond);
      // The drops were the slow listener's: the other one got frames through the stall, up to one
      // sent after the windows (stamped by the agent on this machine's wall clock), however far behind
      // this process read them. Not always every one: on a loaded machine this process can fall
      // behind itself, or the agent, held off the CPU for up to 200 ms, catch up in one burst larger
      // than a listener's allowance, and a listener that is behind then misses frames, rightly. Drops
      // shared with the stalled listener would be every one of its own, and more; so what the fast
      // one missed, seen in its indices and as the hub counts it (in the hub's next report, which
      // comes after that frame on the same connection), stays under half of what the slow one did.
      await until(() => fastNewestStamp >= stalledUntil, "the fast listener to get the frames sent while the other was stalled", 10_000);
      fastDropped = -1;
      await until(() => fastDropped >= 0, "the fast listener's own drop count", 3000);
      const slowDropped = allDropped - fastDropped;
      expect(slowDropped).toBeGreaterThan(0.5 * stalled.sent);
      expect(fastMissed).toBeLessThan(0.5 * slowDropped);
      expect(fastDropped).toBeLessThan(0.5 * slowDropped);
    },
    30_000,
  );
});

describe("a hostile viewer", () => {
  /** Arrival times (performance.now()) of whole frames at a Unix-socket client, as they come. */
  function frameClock(client: RecordingClient): number[] {
    const times: number[] = [];
    client.onChunk = (c) => {
      while (times.length < c.frames.length) times.push(performance.now());
    };
    return times;
  }

  /**
   * The largest gap between the header stamps (the agent's send times) of
   * consecutive frames that arrived within [from, to). The agent's own
   * clock: a stall of the agent shows, a stall of this test process (a
   * loaded machine) does not.
   */
  function largestSendGap(client: RecordingClient, times: number[], from: number, to: number): number {
    const stamps = client.messages.filter((m) => m.type === 0).map((m) => m.timestampMs);
    let gap = 0;
    for (let i = 1; i < times.length; i++) if (times[i - 1]! >= from && times[i]! < to) gap = Math.max(gap, stamps[i]! - stamps[i - 1]!);
    return gap;
  }

  /**
   * A separate process that builds a 16 MiB text message, opens /ws like
   * a page and says "ready"; on a line from stdin it sends it six times, then prints
   * how it ended. Building and connecting happen before the attack is timed,
   * and it runs niced: what is measured is the agent's cost, not the CPU the
   * attacker itself takes from the other processes on a small machine.
   */
  const ATTACKER = `
    // Just under Bun's own default limit (16 MiB), so only a limit of the agent's refuses it.
    const big = '{"listen":true,"pad":"' + "x".repeat(16 * 1024 * 1024 - 64) + '"}';
    const ws = new WebSocket(process.argv.at(-1));
    let closed = null;
    ws.onclose = (e) => (closed = { code: e.code });
    await new Promise((open, fail) => { ws.onopen = open; ws.onerror = fail; });
    console.log("ready");
    for await (const line of console) break;
    let sent = 0;
    // One after the other, each once the last is out (or the agent hung up).
    for (let i = 0; i < 6 && closed === null; i++) {
      ws.send(big);
      sent++;
      for (const start = Date.now(); closed === null && ws.bufferedAmount > 0 && Date.now() - start < 15000; ) await Bun.sleep(5);
    }
    await Bun.sleep(500);
    console.log(JSON.stringify({ sent, closed }));
    process.exit(0);
  `;

  test(
    "six 16 MiB messages: refused unread (1009); frames at a Unix-socket client stay whole, in order, and keep coming through the attack",
    async () => {
      const sockets = socketDir(defer);
      const capture = sockets.path("live.wire");
      // 60 s, one frame every 20 ms: the stream outlasts the test (its timeout), however slowly the attacker starts.
      await Bun.write(capture, indexedWire(0, 3000, 200));
      const socket = sockets.path("out.sock");
      const serve = spawnAgent(["output", "serve", "--socket", socket, "--source", capture, "--realtime", "--monitor", "127.0.0.1:0"]);
      const base = await metricsUrl(serve);
      await serve.waitForStderr("listening socket=");
      const client = await connectClient(defer, socket);
      const times = frameClock(client);
      await until(() => times.length >= 25, "the stream to flow", 10_000);

      const attacker = Bun.spawn(["nice", "-n", "19", BUN, "-e", ATTACKER, `${base.replace(/^http/, "ws")}/ws`], { stdin: "pipe", stdout: "pipe", stderr: "pipe" });
      defer(() => attacker.kill("SIGKILL"));
      let printed = "";
      const output = (async () => {
        for await (const chunk of attacker.stdout) printed += new TextDecoder().decode(chunk);
        return printed;
      })();
      await until(() => printed.includes("ready\n"), "the attacker to be ready", 30_000);

      // The same stream, windows of the same length: quiet, under attack, quiet again.
      const WINDOW_MS = 4000;
      const quietFrom = performance.now();
      await Bun.sleep(WINDOW_MS);
      const attackFrom = performance.now();
      attacker.stdin.write("go\n");
      await attacker.stdin.flush();
      expect(await attacker.exited).toBe(0);
      const attackTo = Math.max(performance.now(), attackFrom + WINDOW_MS);
      const afterTo = attackTo + WINDOW_MS;
      await until(() => performance.now() > afterTo + 100, "the last window to end", 2 * WINDOW_MS + 10_000);

      const { sent, closed } = JSON.parse((await output).split("\n")[1]!) as { sent: number; closed: { code: number } | null };
      // Message Too Big, from the frame header: refused unread, and the attacker was cut off before the rest.
      expect(closed?.code).toBe(1009);
      expect(sent).toBeLessThan(6);
      expect((await figures(base)).listeners).toBe(0);

      const quiet = Math.max(largestSendGap(client, times, quietFrom, attackFrom), largestSendGap(client, times, attackTo, afterTo));
      const attacked = largestSendGap(client, times, attackFrom, attackTo);
      console.log(`largest gap between frames sent: ${quiet.toFixed(1)} ms without the attack, ${attacked.toFixed(1)} ms during it`);
      // The stream kept going through the attack: frames in every window (so no gap above is vacuous)...
      for (const [from, to] of [[quietFrom, attackFrom], [attackFrom, attackTo], [attackTo, afterTo]] as const) {
        expect(times.filter((t) => t >= from && t < to).length).toBeGreaterThan(((to - from) / 20) * 0.25);
      }
      // ...and no stall of a second, which a 16 MiB message read and parsed six times would cause. Finer
      // bounds are the benchmark's: on a shared 2-core machine the attacker's own CPU and the load beside
      // it delay the agent by 100 ms and more, with or without a defect.
      expect(attacked).toBeLessThan(1000);
      expect(expectIntactInOrder(client.frames, 200).length).toBe(client.frames.length);
    },
    60_000,
  );

  test("at most 16 viewers: the 17th is refused (503), and served once another leaves", async () => {
    const { hub, server, url } = await hubOnHttp();
    const open: WebSocket[] = [];
    for (let i = 0; i < 16; i++) open.push(await viewer(url));
    expect(hub.viewerCount).toBe(16);
    const refused = await rawUpgrade("127.0.0.1", server.port, { Host: `127.0.0.1:${server.port}` });
    expect(refused.status).toBe(503);
    expect(refused.body).toContain("too many monitor viewers");
    await expect(viewer(url)).rejects.toThrow("closed before hello");
    expect(hub.viewerCount).toBe(16);

    open.pop()!.close();
    await until(() => hub.viewerCount === 15, "a viewer to leave", 5000);
    await viewer(url);
    expect(hub.viewerCount).toBe(16);
  });

  test("viewers opening one after another: the hello (five minutes of figures, 0.3-0.5 MB) is made once until a tick or an event changes what it holds, not once per viewer", async () => {
    // A tick far past the test's first part: only the event changes the hello there.
    const { hub, url } = await hubOnHttp(VIEWER_LIMITS, 600_000);
    const stringify = spyOn(JSON, "stringify");
    defer(() => stringify.mockRestore());
    const made = () => stringify.mock.calls.filter(([value]) => (value as { type?: unknown } | null)?.type === "hello").length;
    const first = await helloText(url);
    expect(JSON.parse(first)).toMatchObject({ type: "hello", identity: { role: "output serve" }, events: [] });
    for (let i = 0; i < 7; i++) expect(await helloText(url)).toBe(first);
    expect(made()).toBe(1);

    hub.event("connected", "client=2");
    const after = await helloText(url);
    expect(JSON.parse(after).events).toMatchObject([{ kind: "connected", detail: "client=2" }]);
    expect(await helloText(url)).toBe(after);
    expect(made()).toBe(2);

    // Each tick adds a second of figures: a viewer opening after it has them.
    const ticking = (await hubOnHttp(VIEWER_LIMITS, 50)).url;
    const before = JSON.parse(await helloText(ticking)).history.length;
    await until(async () => JSON.parse(await helloText(ticking)).history.length > before, "a viewer opening after a tick to have its figures", 5000, 50);
  });

  test("viewers whose connections end without a close frame (a crash's reset, a FIN) leave the hub at once: their places are free for new viewers, not held until the idle timeout", async () => {
    // An idle timeout far past the test: only the front passing the client's end on frees a place.
    const { hub, server, url } = await hubOnHttp({ ...VIEWER_LIMITS, idleSeconds: 600 });
    const peers: Socket<undefined>[] = [];
    for (let i = 0; i < VIEWER_LIMITS.viewers; i++) {
      const socket = await Bun.connect({ hostname: "127.0.0.1", port: server.port, socket: { data() {}, close() {}, error() {} } });
      defer(() => socket.terminate());
      socket.write(
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      );
      peers.push(socket);
    }
    await until(() => hub.viewerCount === VIEWER_LIMITS.viewers, "the viewers upgraded", 5000);
    // Half leave with a reset (SO_LINGER 0), half with a FIN: neither says goodbye in WebSocket terms.
    peers.forEach((socket, i) => {
      if (i % 2 === 0) resetOnClose(socket.fd);
      socket.terminate();
    });
    await until(() => hub.viewerCount === 0, "the gone viewers left the hub", 10_000).catch(() => {});
    expect(hub.viewerCount).toBe(0);
    for (let i = 0; i < VIEWER_LIMITS.viewers; i++) await viewer(url);
    expect(hub.viewerCount).toBe(VIEWER_LIMITS.viewers);
  });

  test("a message longer than the page ever sends closes that viewer (1009) unread; the others stay", async () => {
    const { hub, url } = await hubOnHttp();
    const calm = await viewer(url);
    const loud = await viewer(url);
    const closed = new Promise<number>((resolve) => (loud.onclose = (e) => resolve(e.code)));
    loud.send(JSON.stringify({ listen: true, pad: "x".repeat(VIEWER_LIMITS.messageBytes) }));
    expect(await closed).toBe(1009);
    expect(hub.listeners).toBe(0);
    await until(() => hub.viewerCount === 1, "the loud viewer gone", 5000);
    calm.send(JSON.stringify({ listen: true }));
    await until(() => hub.listeners === 1, "the calm viewer listening", 5000);
  });

  test("messages that are JSON but not the page's object (null, a number, a string, an array) are ignored; the agent keeps serving", async () => {
    const sockets = socketDir(defer);
    const capture = sockets.path("live.wire");
    await Bun.write(capture, indexedWire(0, 500, 200));
    const serve = spawnAgent(["output", "serve", "--socket", sockets.path("out.sock"), "--source", capture, "--realtime", "--loop", "--monitor", "127.0.0.1:0"]);
    const url = `${(await metricsUrl(serve)).replace(/^http/, "ws")}/ws`;
    const odd = await viewer(url);
    for (const message of ["null", "5", '"listen"', "[true]", "true", '{"listen":"yes"}']) odd.send(message);
    // A page's own request after them: it is heard, so the odd ones before it were read and passed over.
    const frame = new Promise<void>((resolve, reject) => {
      odd.onmessage = (e) => {
        if (typeof e.data !== "string") resolve();
      };
      odd.onclose = (e) => reject(new Error(`closed before a frame came: ${e.code}`));
    });
    odd.send(JSON.stringify({ listen: true }));
    await frame;
    expect(serve.hasExited).toBe(false);
    await viewer(url);
  });

  test("a viewer that reads nothing is closed once its backlog passes the limit; a reading one is not", async () => {
    const { hub, server, url } = await hubOnHttp();
    const reading = await viewer(url);
    await stalledPeer(server.port);
    await until(() => hub.viewerCount === 2, "the stalled viewer upgraded", 5000);
    let got = 0;
    reading.onmessage = () => got++;
    // Connection events of 64 KiB each: far more than the socket buffers and the backlog limit together.
    for (let i = 0; i < 400 && hub.viewerCount === 2; i++) {
      hub.event("connected", "x".repeat(64 * 1024));
      await Bun.sleep(1);
    }
    await until(() => hub.viewerCount === 1, "the stalled viewer closed", 10_000);
    await until(() => got > 0, "the reading viewer still served", 5000);
    expect(reading.readyState).toBe(WebSocket.OPEN);
  });

  test("viewers closed for their backlog hold no HTTP connection after: with 16 of them closed and 16 viewers that read, the page is still served, not 503 (their connections, unread, held the HTTP bound for good)", async () => {
    const { hub, server, url } = await hubOnHttp();
    // As many stalled viewers as the hub takes, each with a small receive buffer: what is sent to it waits in the agent.
    for (let i = 0; i < 16; i++) await stalledPeer(server.port, 4096);
    await until(() => hub.viewerCount === 16, "the stalled viewers upgraded", 5000);
    // 64 KiB events until each is over its backlog limit and closed (they still read nothing, nor close).
    for (let i = 0; i < 2000 && hub.viewerCount > 0; i++) {
      hub.event("connected", "x".repeat(64 * 1024));
      await Bun.sleep(1);
    }
    await until(() => hub.viewerCount === 0, "the stalled viewers closed", 10_000);
    // The hello carries the last 100 events: with those 64 KiB ones, 6 MiB, past a viewer's backlog, so that a
    // viewer this process did not read fast enough (a loaded machine) was closed before its hello. Small ones now.
    for (let i = 0; i < 100; i++) hub.event("connected", "a client");
    // 16 viewers that read, as pages do: with the 16 closed ones, the 32 connections the agent serves at once.
    for (let i = 0; i < 16; i++) await viewer(url);
    expect(hub.viewerCount).toBe(16);
    // The viewers the agent closed are no longer its connections: there is room for one more, at once or soon.
    let status = 0;
    // (The hub's close waits on what they left unread: the front cuts a connection whose reader has taken nothing for STALL_MS.)
    await until(async () => (status = (await rawRequest("127.0.0.1", server.port, `GET / HTTP/1.1\r\nHost: 127.0.0.1:${server.port}`)).status) === 200, "the page served", STALL_MS + 10_000, 100).catch(() => {});
    expect(status).toBe(200);
  }, STALL_MS + 60_000);

  test("a peer that answers no ping is closed after the idle timeout", async () => {
    const { hub, server } = await hubOnHttp({ ...VIEWER_LIMITS, idleSeconds: 8 }, 60_000);
    await stalledPeer(server.port);
    await until(() => hub.viewerCount === 1, "the peer upgraded", 5000);
    const start = performance.now();
    await until(() => hub.viewerCount === 0, "the idle peer closed", 40_000);
    expect(performance.now() - start).toBeGreaterThanOrEqual(4000);
  }, 60_000);

  test("viewers that answer the hub's pings stay past the idle timeout though they send nothing: a WebSocket client, and the page in a browser", async () => {
    const idleSeconds = 4;
    const { hub, server, url } = await hubOnHttp({ ...VIEWER_LIMITS, idleSeconds }, 1000);
    const quiet = await viewer(url);
    let closes = 0;
    quiet.onclose = () => void closes++;
    const { page } = await openPage(`http://127.0.0.1:${server.port}`);
    await page.waitForFunction(() => (window as any).monitorState.figuresReceived >= 1, null, { polling: 50, timeout: 10_000 });
    expect(hub.viewerCount).toBe(2);
    // Three idle timeouts: each viewer was pinged several times, and one the hub did not hear from would be gone.
    await Bun.sleep(3 * idleSeconds * 1000);
    expect(closes).toBe(0);
    expect(hub.viewerCount).toBe(2);
    // The page kept its first connection: it never had to connect again.
    const state = await pageState(page);
    expect(state.link).toBe("live");
    expect(state.errors).toEqual([]);
  }, 60_000);

  test("a peer that answers no ping is closed after the idle timeout while the figures go to it every second, as they do to every viewer", async () => {
    const { hub, server } = await hubOnHttp({ ...VIEWER_LIMITS, idleSeconds: 8 }, 1000);
    // A receive buffer of the usual size: the figures it never reads wait in the kernel, not in the agent.
    await stalledPeer(server.port);
    await until(() => hub.viewerCount === 1, "the peer upgraded", 5000);
    // Well past the timeout (8 s with no answer), with room on a loaded machine.
    await until(() => hub.viewerCount === 0, "the idle peer closed", 40_000);
  }, 60_000);

  test("stop() lets every viewer go at once, a peer that reads nothing among them: none is left for the idle check to ping or cut", async () => {
    const { hub, server, url } = await hubOnHttp();
    await viewer(url);
    await stalledPeer(server.port);
    await until(() => hub.viewerCount === 2, "both upgraded", 5000);
    hub.stop();
    expect(hub.viewerCount).toBe(0);
  });
});

describe("a monitor held up", () => {
  test("a hub held up past the idle timeout (its event loop blocked, as a stopped or starved agent's is) keeps a viewer that answered every ping, asked nothing meanwhile; one that answers none is still closed", async () => {
    const idleSeconds = 2;
    const { hub, server, url } = await hubOnHttp({ ...VIEWER_LIMITS, idleSeconds }, 1000);
    const quiet = await viewer(url);
    let closes = 0;
    quiet.onclose = () => void closes++;
    await stalledPeer(server.port);
    await until(() => hub.viewerCount === 2, "the peer upgraded", 5000);
    // A ping or two answered, then the hub's thread held for longer than the idle timeout.
    await Bun.sleep(idleSeconds * 1000);
    Bun.sleepSync(idleSeconds * 1000 + 500);
    // Checks after it: the first after the hold, the next once the viewer could answer.
    await until(() => hub.viewerCount === 1, "the peer that answers nothing closed", 20_000);
    await Bun.sleep(idleSeconds * 1000);
    expect(closes).toBe(0);
    expect(hub.viewerCount).toBe(1);
  }, 30_000);
});

/**
 * A bare TCP viewer that answers each of the hub's pings with a pong at once; after the `hold.after`-th
 * pong it holds this whole process (the hub with it) for `hold.ms`, so that pong waits unread by the hub.
 * `closed` turns true once the hub closes it.
 */
async function pongingViewer(port: number, hold?: { after: number; ms: number }) {
  const state = { pongs: 0, closed: false };
  let buffered = new Uint8Array(0);
  let upgraded = false;
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(s, chunk) {
        const all = new Uint8Array(buffered.length + chunk.length);
        all.set(buffered);
        all.set(chunk, buffered.length);
        let at = 0;
        if (!upgraded) {
          const end = Buffer.from(all).indexOf("\r\n\r\n");
          if (end < 0) return void (buffered = all);
          upgraded = true;
          at = end + 4;
        }
        // The server's frames are unmasked: opcode, a 7-bit length or its 16/64-bit extension, the payload.
        while (all.length - at >= 2) {
          let length = all[at + 1]! & 0x7f;
          let head = 2;
          if (length === 126) [length, head] = [(all[at + 2]! << 8) | all[at + 3]!, 4];
          else if (length === 127) [length, head] = [Number(new DataView(all.buffer, all.byteOffset + at + 2, 8).getBigUint64(0)), 10];
          if (all.length - at < head + length) break;
          if ((all[at]! & 0x0f) === 0x9) {
            const payload = all.subarray(at + head, at + head + length);
            // A pong from a client: masked, with a zero mask that leaves the payload as it is.
            s.write(new Uint8Array([0x8a, 0x80 | payload.length, 0, 0, 0, 0, ...payload]));
            if (++state.pongs === hold?.after) Bun.sleepSync(hold.ms);
          }
          at += head + length;
        }
        buffered = all.slice(at);
      },
      close() {
        state.closed = true;
      },
      error() {},
    },
  });
  defer(() => socket.terminate());
  socket.write(
    `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
  );
  return state;
}

describe("a monitor held up for less than the idle timeout", () => {
  // Checks every half idle timeout: a hold from just after a ping until past the next check leaves that
  // ping's pong unread when the check runs, and the viewer looked unheard since the ping before.
  test("a viewer that answered the ping before the hold at once is kept, and answers the pings after it", async () => {
    const idleSeconds = 4;
    const { hub, server } = await hubOnHttp({ ...VIEWER_LIMITS, idleSeconds }, 1000);
    const viewer = await pongingViewer(server.port, { after: 2, ms: (idleSeconds * 1000) / 2 + 600 });
    await until(() => viewer.pongs >= 4 || viewer.closed, "two pings answered after the hold, or the viewer closed", 30_000);
    expect({ closed: viewer.closed, pongs: viewer.pongs }).toEqual({ closed: false, pongs: 4 });
    expect(hub.viewerCount).toBe(1);
  }, 40_000);

  // As an agent stopped just after a check has run, before its judgement: the judgement comes after the
  // hold, before the loop has read what the viewers sent meanwhile, their last pongs read 2 s before it.
  test("a hold between a check and its judgement: the viewers are asked again, not judged; the viewer that answered is kept, one that answers none is still closed", async () => {
    const idleSeconds = 4;
    const { hub, server } = await hubOnHttp({ ...VIEWER_LIMITS, idleSeconds }, 1000);
    const realSetTimeout = globalThis.setTimeout;
    let judgements = 0;
    globalThis.setTimeout = ((...args: Parameters<typeof setTimeout>) => {
      const timer = realSetTimeout(...args);
      // The second check's judgement is due: the agent is held now, for less than a late check's time.
      if (args[1] === JUDGE_AFTER_READ_MS && ++judgements === 2) Bun.sleepSync((idleSeconds * 1000) / 2 + 600);
      return timer;
    }) as typeof setTimeout;
    defer(() => (globalThis.setTimeout = realSetTimeout));
    const viewer = await pongingViewer(server.port);
    await stalledPeer(server.port);
    await until(() => hub.viewerCount === 2, "the peer upgraded", 5000);
    await until(() => judgements >= 2, "the hold", 20_000);
    const pongs = viewer.pongs;
    expect(pongs).toBeGreaterThan(0);
    await until(() => hub.viewerCount < 2, "a viewer closed", 20_000);
    await until(() => viewer.closed || viewer.pongs >= pongs + 2, "two pings answered after the hold, or the viewer closed", 20_000);
    expect(viewer.closed).toBe(false);
    expect(hub.viewerCount).toBe(1);
  }, 60_000);
});

describe("a listener that stops reading", () => {
  /** A bare TCP peer that opens /ws, asks to listen, then never reads again. */
  async function stalledListener(port: number): Promise<void> {
    const socket = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: { data() {}, close() {}, error() {} },
    });
    defer(() => socket.terminate());
    const text = new TextEncoder().encode(JSON.stringify({ listen: true }));
    // A client's frame: FIN + text, masked (a zero mask leaves the payload as it is).
    const frame = new Uint8Array([0x81, 0x80 | text.length, 0, 0, 0, 0, ...text]);
    socket.write(
      `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    socket.write(frame);
    socket.pause();
  }

  test("misses frames, counted, and stays a listener: it is not cut off as a viewer over its backlog", async () => {
    const { hub, server } = await hubOnHttp();
    await stalledListener(server.port);
    await until(() => hub.listeners === 1, "the stalled peer to listen", 5000);
    // 4 KiB frames, 16 MiB in all: many times what the TCP buffers and the viewer's backlog limit hold.
    const payload = new Uint8Array(4096).fill(7);
    for (let i = 0; i < 4096; i++) {
      hub.frameTap?.(payload, Date.now());
      if (i % 64 === 0) await Bun.sleep(1);
    }
    const { listenerDrops, listeners } = hub.current();
    expect(listenerDrops).toBeGreaterThan(1000);
    // Frames stop for it at 64 KiB queued, long before the 1 MiB that closes a viewer.
    expect(listeners).toBe(1);
    expect(hub.viewerCount).toBe(1);
  });
});

describe("the monitor's figures", () => {
  test("are what /metrics holds at the same moment, figure by figure: a paused reader's full socket buffer, the queue behind it, the optimizer's level, drops and latency", async () => {
    const { path } = socketDir(defer, "aamf-");
    const socket = path("out.sock");
    // Frames wait for the paused reader, none dropped; one short write escalates the optimizer, and nothing relaxes it.
    const agent = spawnAgent(
      [
        "output", "serve", "--socket", socket, "--source", "-", "--queue-frames", "5000", "--write-deadline-ms", "0", "--max-latency-ms", "60000", "--stuck-frames", "100000",
        "--adaptive-threshold", "1", "--adaptive-calm-ms", "3600000", "--socket-buffers", "32768", "--monitor", "0", "--metrics", "0",
      ],
      { stdin: "pipe" },
    );
    const base = await metricsUrl(agent);
    await agent.waitForStderr("listening socket=");
    const reader = await connectClient(defer, socket, { paused: true });
    await until(async () => (await figures(base)).connected, "the reader to connect", 10_000, 50);
    const N = 2000;
    await agent.writeStdin(wireBytes(0, N, (i) => new Uint8Array(1000).fill(i & 0xff), OUTPUT_MAGIC, 0));
    await until(async () => (await scrapeValue(base, "audio_agent_frames_submitted_total", { channel: "output" })) === N, "every frame submitted", 10_000, 50);
    await agent.waitForStderr("adaptive: escalate");

    const shown = await figures(base);
    const text = await scrape(base);
    const metric = (name: string, labels: Record<string, string> = {}) => value(text, name, labels);
    expect(shown.sendUtilization).toBeGreaterThan(0);
    expect([shown.sendUtilization, shown.receiveUtilization]).toEqual([
      metric("jetkvm_audio_socket_buffer_utilization_percent", { component: "audio-output", buffer_type: "send" }),
      metric("jetkvm_audio_socket_buffer_utilization_percent", { component: "audio-output", buffer_type: "receive" }),
    ]);
    expect([shown.sendBufferBytes, shown.receiveBufferBytes]).toEqual([
      metric("jetkvm_audio_socket_buffer_size_bytes", { component: "audio-output", buffer_type: "send" }),
      metric("jetkvm_audio_socket_buffer_size_bytes", { component: "audio-output", buffer_type: "receive" }),
    ]);
    expect(shown.queueDepth).toBeGreaterThan(0);
    expect([shown.frames, shown.queueDepth, shown.queueCapacity]).toEqual([
      metric("jetkvm_audio_frames_sent_total"),
      metric("audio_agent_queue_depth_frames"),
      metric("audio_agent_queue_capacity_frames"),
    ]);
    expect(shown.adaptiveLevel).toBe(1);
    expect(shown.adaptiveLevel).toBe(metric("audio_agent_adaptive_level"));
    expect(shown.dropped).toEqual(Object.fromEntries(samples(text, "audio_agent_frames_dropped_by_reason_total").map((s) => [s.labels.reason, s.value])));
    expect(Object.keys(shown.latency).sort()).toEqual(["enqueue_to_write", "write_call"]);
    for (const [source, figures] of Object.entries(shown.latency)) {
      for (const [percentile, seconds] of Object.entries(figures)) expect([source, percentile, seconds]).toEqual([source, percentile, metric("jetkvm_audio_latency_percentile_seconds", { source, percentile })]);
    }
    reader.socket.resume();
    agent.endStdin();
    expect(await agent.exited, agent.stderr).toBe(0);
  });

  test("at a receiver, each percentile of the frames' ages is its own, as /metrics has it: one frame 800 ms old among 300 fresh ones is the max, not the p99", async () => {
    const { path } = socketDir(defer, "aamf-");
    const socket = path("out.sock");
    const stampNs = (agoMs: number) => BigInt(Math.round((Date.now() - agoMs) * 1e6));
    // A frame at a time, each stamped as it is written: a socket buffer's worth at once would be written in part.
    const server = fakeServer(socket, async (s) => {
      for (let i = 0; i < 301; i++) {
        expect(s.write(encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, new Uint8Array(160).fill(i & 0xff), stampNs(i === 150 ? 800 : 0)))).toBe(177);
        await Bun.sleep(1);
      }
    });
    defer(() => server.stop());
    const recv = spawnAgent(["output", "recv", "--socket", socket, "--sink", "/dev/null", "--monitor", "127.0.0.1:0", "--metrics", "0"]);
    const base = await metricsUrl(recv);
    await until(async () => (await figures(base)).frames === 301, "every frame at the receiver", 10_000, 50);
    const shown = (await figures(base)).latency.frame_age!;
    const text = await scrape(base);
    expect(shown.max).toBeGreaterThanOrEqual(0.8);
    expect(shown.p99).toBeLessThan(0.4);
    for (const percentile of ["p50", "p95", "p99", "max"] as const) {
      expect([percentile, shown[percentile]]).toEqual([percentile, value(text, "jetkvm_audio_latency_percentile_seconds", { source: "frame_age", percentile })]);
    }
    // The heap the JavaScript engine holds, not the process's resident memory (tens of MiB of Bun's own).
    const heap = value(text, "audio_agent_heap_used_bytes");
    expect(heap).toBeGreaterThan(0);
    expect(heap).toBeLessThan(value(text, "process_resident_memory_bytes") / 2);
  });
});
