/**
 * The live web monitor (--monitor): the page in a real browser (Debian's
 * chromium driven by playwright-core) against a running agent streaming a
 * real Ogg Opus file, and the hub's promises about the frame path: no
 * listener, no cost; a slow listener loses frames alone.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Page } from "playwright-core";
import { AgentHttpServer } from "../../src/observe/http-server.ts";
import { MonitorHub, type MonitorFigures } from "../../src/observe/monitor/hub.ts";
import { OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import { useCleanup } from "../support/cleanup.ts";
import { metricsUrl, scrapeValue } from "../support/metrics.ts";
import { TONE } from "../support/opus-fixtures.ts";
import { REPO, spawnAgent, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { wireBytes } from "../support/wire.ts";

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

const pageState = (page: Page) => page.evaluate(() => (window as unknown as { monitorState: PageState }).monitorState);

describe("monitor page in a browser", () => {
  test(
    "shows identity, live figures matching /metrics, the connection history, and plays the stream",
    async () => {
      if (!existsSync(CHROMIUM)) {
        throw new Error(
          `${CHROMIUM} is missing: the monitor page test needs Debian's chromium (.ci/run installs it: apt-get install chromium fonts-dejavu-core)`,
        );
      }
      const sockets = socketDir(defer);
      const socket = sockets.path("out.sock");
      const serve = spawnAgent([
        "output", "serve", "--socket", socket, "--source", TONE, "--format", "ogg", "--realtime", "--loop",
        "--monitor", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
      ]);
      const base = await metricsUrl(serve);
      const recv = spawnAgent(["output", "recv", "--socket", socket, "--sink", "/dev/null"]);
      await until(async () => (await figures(base)).connected, "the receiver to connect", 10_000, 50);

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

      // Identity, and figures that move.
      await page.waitForFunction(() => (window as any).monitorState.figuresReceived >= 1, null, { polling: 50, timeout: 10_000 });
      expect(await page.textContent("#id-role")).toBe("output serve");
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
      await page.click("#listen-button");
      await page.waitForFunction(
        () => {
          const s = (window as any).monitorState;
          return s.errors.length > 0 || (s.decodedFrames >= 25 && s.level > 0);
        },
        null,
        { polling: 50, timeout: 10_000 },
      );
      const listening = await pageState(page);
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

describe("monitor hub", () => {
  test("no listener, no cost: frameTap exists only while a page listens", async () => {
    const hub = new MonitorHub({ role: "output serve", channel: "output", socket: "/tmp/x.sock" }, () => ({
      connected: true,
      frames: 0,
      bytes: 0,
      dropped: {},
      queueDepth: 0,
      queueCapacity: 0,
      sendUtilization: 0,
      receiveUtilization: 0,
      sendBufferBytes: 0,
      receiveBufferBytes: 0,
      latency: {},
      adaptiveLevel: 0,
    }));
    defer(() => hub.stop());
    const server = AgentHttpServer.start({ host: "127.0.0.1", port: 0 }, { monitor: hub });
    defer(() => server.stop());
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
      const FRAMES = 1000;
      const STEP_MS = 1;
      const sockets = socketDir(defer);
      const capture = sockets.path("flood.wire");
      await Bun.write(capture, wireBytes(0, FRAMES, (i) => new Uint8Array(4096).fill(i & 0xff), OUTPUT_MAGIC, STEP_MS));
      const socket = sockets.path("out.sock");
      const serve = spawnAgent([
        "output", "serve", "--socket", socket, "--source", capture, "--format", "wire", "--realtime", "--loop",
        "--monitor", "127.0.0.1:0", "--metrics", "127.0.0.1:0",
      ]);
      const base = await metricsUrl(serve);
      const wsUrl = `${base.replace(/^http/, "ws")}/ws`;

      // A listener that keeps up, counting what it gets and what the hub says it missed.
      let fastFrames = 0;
      let fastDropped = -1;
      const fast = new WebSocket(wsUrl);
      fast.binaryType = "arraybuffer";
      defer(() => fast.close());
      fast.onmessage = (e) => {
        if (typeof e.data !== "string") fastFrames++;
        else if (JSON.parse(e.data).type === "listener") fastDropped = JSON.parse(e.data).dropped;
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

      const dropped0 = await scrapeValue(base, "jetkvm_audio_frames_dropped_total");
      const stalled = await pace();
      const fastAt = fastFrames;
      const dropped1 = await scrapeValue(base, "jetkvm_audio_frames_dropped_total");
      const after = await figures(base);

      expect(after.listenerDrops).toBeGreaterThan(0);
      expect(dropped1 - dropped0).toBe(0);
      expect(Object.entries(after.dropped).filter(([reason, n]) => reason !== "no_client" && n > 0)).toEqual([]);
      // The socket path did not slow down for the stalled browser: against the baseline just taken
      // (not a fixed rate, which a loaded machine could miss either way), with a wide margin.
      expect(baseline.sent).toBeGreaterThan(0);
      expect(stalled.perSecond).toBeGreaterThan(0.5 * baseline.perSecond);
      // The drops were the slow listener's alone: the other one got every frame.
      await until(() => fastDropped >= 0, "the fast listener's own drop count", 3000);
      expect(fastDropped).toBe(0);
      expect(fastAt).toBeGreaterThanOrEqual(0.9 * stalled.sent);
    },
    30_000,
  );
});
