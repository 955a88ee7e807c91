/**
 * A recording's file removed, moved aside or replaced while a receiving
 * agent writes into it (an operator's rm or mv, a tmp cleaner): the agent
 * writes on into the file it opened, counting every frame as before, and
 * tells it once, at warn level, naming the sink (and at info once the path
 * leads to the file again); /healthz (`sink_file`) and /metrics
 * (`audio_agent_sink_file_in_place`) show it. A FIFO, stdout and devices are
 * never looked at so.
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, chownSync, closeSync, linkSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Socket } from "bun";
import { SINK_LOOK_MS } from "../../src/media/sink-file-watch.ts";
import { DEFAULT_AUDIO_CONFIG, encodeConfigPayload, encodeMessage, INPUT_MAGIC, MessageType, OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import { logFields } from "../support/agent-log.ts";
import { concatBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { makeFifo } from "../support/fifo.ts";
import { asNobody, canSwitchUser, NOBODY } from "../support/nobody.ts";
import { canUnshare, smallDisk } from "../support/machine.ts";
import { healthz, metricsUrl, samples, scrape, value } from "../support/metrics.ts";
import { audioPacketsOf, packetsOf } from "../support/ogg.ts";
import { TONE } from "../support/opus-fixtures.ts";
import { testPayload } from "../support/payloads.ts";
import { connectClient, fakeServer } from "../support/peer.ts";
import { AGENT, agentEnv, run, spawnAgent, start, stopAgents, type Spawned } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { wholeWireFrames, wholeWireMessages, wireFileFrames } from "../support/wire.ts";

const defer = useCleanup();

function setup() {
  const t = socketDir(defer, "aasf-");
  defer(() => stopAgents());
  return { ...t, sock: t.path("a.sock") };
}

/** Real Opus packets (stereo, 20 ms): an Ogg recording of them is checked packet by packet. */
const TONE_PACKETS = packetsOf(new Uint8Array(readFileSync(TONE))).slice(2);
const tonePacket = (i: number) => TONE_PACKETS[i % TONE_PACKETS.length]!;

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

/** OpusFrames `from` .. `to`-1 of `payloadOf`, on the channel of `magic`, in one buffer. */
function frames(magic: number, from: number, to: number, payloadOf: (i: number) => Uint8Array): Uint8Array {
  const messages: Uint8Array[] = [];
  for (let i = from; i < to; i++) messages.push(encodeMessage(magic, MessageType.OpusFrame, payloadOf(i), nowNs()));
  return concatBytes(messages);
}

/** Where a receiver's readings put its sink file's state in /healthz: at the top for a single role, under its channel for serve. */
type SinkFileOf = (health: Record<string, unknown>) => unknown;
const single: SinkFileOf = (health) => health.sink_file;
const inputOfServe: SinkFileOf = (health) => (health.channels as Record<string, Record<string, unknown>>).input!.sink_file;

/** Asks /healthz (which takes the readings, and with them a look at most every SINK_LOOK_MS) until the sink file's state is `state`. */
async function sinkFileBecomes(base: string, state: string, of: SinkFileOf = single): Promise<void> {
  await until(async () => of(await healthz(base)) === state, `sink_file ${state} in /healthz`, 20_000, 50);
}

/** The frames /healthz says the receiver took, once they are `count`. */
async function framesReach(base: string, count: number, of: (health: Record<string, unknown>) => unknown = (h) => h.frames): Promise<void> {
  await until(async () => of(await healthz(base)) === count, `${count} frames in /healthz`, 20_000, 20);
}

/** The descriptor of `pid` open on `path` removed ("PATH (deleted)"), read through /proc: what the agent still writes into. */
function removedFileOf(pid: number, path: string): string {
  const fd = readdirSync(`/proc/${pid}/fd`).find((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === `${path} (deleted)`;
    } catch {
      return false;
    }
  });
  if (fd === undefined) throw new Error(`no descriptor of ${pid} open on ${path} removed`);
  return `/proc/${pid}/fd/${fd}`;
}

/** How many lines of `stderr` hold `text`. */
function linesWith(stderr: string, text: string | RegExp): number {
  return stderr.split("\n").filter((line) => (typeof text === "string" ? line.includes(text) : text.test(line))).length;
}

/** An input client of the test's own, hand-written: Config first, then what the test sends. */
async function micClient(path: string): Promise<{ send: (bytes: Uint8Array) => void }> {
  const client = await connectClient(defer, path, { magic: INPUT_MAGIC });
  client.socket.write(encodeMessage(INPUT_MAGIC, MessageType.Config, encodeConfigPayload(DEFAULT_AUDIO_CONFIG), nowNs()));
  return { send: (bytes) => void client.socket.write(bytes) };
}

describe("a recording's file removed while the agent writes it", () => {
  test("`output recv --sink FILE`: one warning naming the file and that it was removed; the frames go on into the file opened, every one counted, exit 0 as before", async () => {
    const t = setup();
    const rec = t.path("rec.wire");
    let socket: Socket<undefined> | undefined;
    const server = fakeServer(t.sock, (s) => (socket = s));
    defer(() => server.stop());
    const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", rec, "--once", "--metrics", "127.0.0.1:0", "--stats-interval", "0.2"]);
    const base = await metricsUrl(recv);
    await until(() => socket !== undefined, "the agent to connect");
    socket!.write(frames(OUTPUT_MAGIC, 0, 50, testPayload));
    await recv.waitForStderr(/instruments: stats .*frames=/);
    await framesReach(base, 50);
    expect(await healthz(base)).toMatchObject({ healthy: true, sink_file: "in_place" });
    expect(value(await scrape(base), "audio_agent_sink_file_in_place", { channel: "output" })).toBe(1);

    rmSync(rec);
    await sinkFileBecomes(base, "removed");
    await recv.waitForStderr(/WARN +output-client: the sink file was removed/);
    expect(value(await scrape(base), "audio_agent_sink_file_in_place", { channel: "output" })).toBe(0);
    // Still healthy: the client runs, and an agent started again in its place would only begin a new file.
    expect(await healthz(base)).toMatchObject({ healthy: true });
    // Each stats line says so while it lasts, beside the one warning.
    await recv.waitForStderr(/instruments: stats .* sink_file=removed/);
    socket!.write(frames(OUTPUT_MAGIC, 50, 100, testPayload));
    // Written on into the file it opened, which no name leads to any more.
    const opened = removedFileOf(recv.pid, rec);
    await until(() => wireFileFrames(opened).frames.length === 100, "100 frames in the file opened");
    expect(wholeWireFrames(opened)).toEqual(Array.from({ length: 100 }, (_, i) => testPayload(i)));
    socket!.end();
    expect(await recv.exited, recv.stderr).toBe(0);

    // Told once, however often it was looked at since, naming the sink.
    expect(linesWith(recv.stderr, "the sink file")).toBe(1);
    const warning = logFields(recv.stderr, "output-client", "the sink file was removed: what is recorded goes on into the file opened, which is no longer at that path (its space is freed at exit)");
    expect(warning).toEqual({ sink: rec });
    expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: "100", dropped: "0", sink_file: "removed" });
    // The lines before the removal, the file in place, say nothing of it.
    const statsLines = recv.stderr.split("\n").filter((line) => line.includes("instruments: stats"));
    expect(statsLines[0]).not.toContain("sink_file");
  }, 60_000);
});

describe("a recording's file moved aside or replaced, and back", () => {
  test("`input serve --format ogg --sink FILE` moved aside and back: a warning, then an info line once it is back; the file holds one whole stream of every packet", async () => {
    const t = setup();
    const rec = t.path("rec.opus");
    const aside = t.path("aside.opus");
    const agent = spawnAgent(["input", "serve", "--socket", t.sock, "--sink", rec, "--format", "ogg", "--once", "--metrics", "127.0.0.1:0"]);
    const base = await metricsUrl(agent);
    await agent.waitForStderr("input-server: listening");
    const mic = await micClient(t.sock);
    mic.send(frames(INPUT_MAGIC, 0, 40, tonePacket));
    await framesReach(base, 40);
    expect(await healthz(base)).toMatchObject({ sink_file: "in_place" });

    renameSync(rec, aside);
    await sinkFileBecomes(base, "moved");
    await agent.waitForStderr(/WARN +input-server: the sink file was moved away/);
    expect(value(await scrape(base), "audio_agent_sink_file_in_place", { channel: "input" })).toBe(0);
    mic.send(frames(INPUT_MAGIC, 40, 80, tonePacket));
    await framesReach(base, 80);

    renameSync(aside, rec);
    await sinkFileBecomes(base, "in_place");
    await agent.waitForStderr(/INFO +input-server: the sink file is at its path again/);
    expect(value(await scrape(base), "audio_agent_sink_file_in_place", { channel: "input" })).toBe(1);
    mic.send(concatBytes([frames(INPUT_MAGIC, 80, 120, tonePacket), encodeMessage(INPUT_MAGIC, MessageType.Stop, new Uint8Array(0), nowNs())]));
    expect(await agent.exited, agent.stderr).toBe(0);

    // Warned once, back once, in that order, each naming the sink; where it was is named too.
    expect(linesWith(agent.stderr, "the sink file")).toBe(2);
    const moved = logFields(agent.stderr, "input-server", "the sink file was moved away: no file is at its path now; what is recorded goes on into the file opened, which is no longer at that path");
    expect(moved).toEqual({ sink: rec, now_at: aside });
    expect(logFields(agent.stderr, "input-server", "the sink file is at its path again; the recording there goes on")).toEqual({ sink: rec });
    expect(agent.stderr.indexOf("the sink file was moved away")).toBeLessThan(agent.stderr.indexOf("the sink file is at its path again"));
    expect(audioPacketsOf(new Uint8Array(readFileSync(rec)))).toEqual(Array.from({ length: 120 }, (_, i) => tonePacket(i)));
    expect(logFields(agent.stderr, "input-server", "stopped")).toMatchObject({ frames: "120", dropped: "0" });
    // Back in place by the end: the last line says nothing of it.
    expect(logFields(agent.stderr, "input-server", "stopped")).not.toHaveProperty("sink_file");
  }, 60_000);

  test("`output recv --sink link/../rec.wire`, a path relative to the agent's working directory, that directory renamed: told moved away, as the same path given whole is, naming where the file is now; back in place once renamed back", async () => {
    const t = setup();
    const dir = t.path("rec-dir");
    const moved = t.path("rec-dir.moved");
    // The path as the kernel follows it: "link/.." is the link's target's parent (deep), not the working directory.
    mkdirSync(join(dir, "deep/x"), { recursive: true });
    symlinkSync("deep/x", join(dir, "link"));
    let socket: Socket<undefined> | undefined;
    const server = fakeServer(t.sock, (s) => (socket = s));
    defer(() => server.stop());
    const recv = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", "link/../rec.wire", "--once", "--metrics", "127.0.0.1:0"], { cwd: dir });
    const base = await metricsUrl(recv);
    await until(() => socket !== undefined, "the agent to connect");
    socket!.write(frames(OUTPUT_MAGIC, 0, 20, testPayload));
    await framesReach(base, 20);
    expect(await healthz(base)).toMatchObject({ sink_file: "in_place" });

    renameSync(dir, moved);
    await sinkFileBecomes(base, "moved");
    await recv.waitForStderr(/WARN +output-client: the sink file was moved away/);
    renameSync(moved, dir);
    await sinkFileBecomes(base, "in_place");
    await recv.waitForStderr(/INFO +output-client: the sink file is at its path again/);
    socket!.write(frames(OUTPUT_MAGIC, 20, 40, testPayload));
    await framesReach(base, 40);
    socket!.end();
    expect(await recv.exited, recv.stderr).toBe(0);

    // Named as it was given, and where the rename took it.
    const warning = logFields(recv.stderr, "output-client", "the sink file was moved away: no file is at its path now; what is recorded goes on into the file opened, which is no longer at that path");
    expect(warning).toEqual({ sink: "link/../rec.wire", now_at: join(moved, "deep/rec.wire") });
    expect(wholeWireFrames(join(dir, "deep/rec.wire"))).toEqual(Array.from({ length: 40 }, (_, i) => testPayload(i)));
  }, 60_000);

  test.skipIf(!canUnshare("--mount"))("`output recv --sink FILE`, a file system mounted over the file's directory: told moved away, with no now_at, the name the file keeps being its path, hidden by the mount; back in place once unmounted", async () => {
    const t = setup();
    const dir = t.path("disk");
    mkdirSync(dir);
    // The agent runs in a mount namespace of its own, where the mount is made: nothing outside sees it.
    const disk = await smallDisk(dir, 1024 * 1024);
    defer(disk.release);
    mkdirSync(disk.path("sub"));
    const sub = join(dir, "sub");
    const rec = join(sub, "rec.wire");
    let socket: Socket<undefined> | undefined;
    const server = fakeServer(t.sock, (s) => (socket = s));
    defer(() => server.stop());
    const recv = start(disk.run([...AGENT, "output", "recv", "--socket", t.sock, "--sink", rec, "--once", "--metrics", "127.0.0.1:0"]), { env: agentEnv() });
    const base = await metricsUrl(recv);
    await until(() => socket !== undefined, "the agent to connect");
    socket!.write(frames(OUTPUT_MAGIC, 0, 20, testPayload));
    await framesReach(base, 20);
    expect(await healthz(base)).toMatchObject({ sink_file: "in_place" });

    expect((await run(disk.run(["mount", "-t", "tmpfs", "tmpfs", sub]))).code).toBe(0);
    await sinkFileBecomes(base, "moved");
    await recv.waitForStderr(/WARN +output-client: the sink file was moved away/);
    expect((await run(disk.run(["umount", sub]))).code).toBe(0);
    await sinkFileBecomes(base, "in_place");
    socket!.write(frames(OUTPUT_MAGIC, 20, 40, testPayload));
    await framesReach(base, 40);
    socket!.end();
    expect(await recv.exited, recv.stderr).toBe(0);

    const moved = logFields(recv.stderr, "output-client", "the sink file was moved away: no file is at its path now; what is recorded goes on into the file opened, which is no longer at that path");
    expect(moved).toEqual({ sink: rec });
    expect(wholeWireFrames(disk.path("sub/rec.wire"))).toEqual(Array.from({ length: 40 }, (_, i) => testPayload(i)));
  }, 60_000);

  test("`serve --input-sink FILE` replaced (linked aside, another file renamed over its path): a warning that the path leads to another file now, shown in /healthz and /metrics; the other file is left as it was", async () => {
    const t = setup();
    const rec = t.path("rec.wire");
    const aside = t.path("aside.wire");
    const agent = spawnAgent(["serve", "--output-socket", t.path("o.sock"), "--output-source", "-", "--input-socket", t.sock, "--input-sink", rec, "--metrics", "127.0.0.1:0"], { stdin: "pipe" });
    const base = await metricsUrl(agent);
    await agent.waitForStderr("input-server: listening");
    const inputFrames = (h: Record<string, unknown>) => (h.channels as Record<string, Record<string, unknown>>).input!.frames;
    const mic = await micClient(t.sock);
    mic.send(frames(INPUT_MAGIC, 0, 30, testPayload));
    await framesReach(base, 30, inputFrames);

    // In one step, as a save by rename does: no look can find the path empty between the two.
    linkSync(rec, aside);
    writeFileSync(t.path("new"), "another file\n");
    renameSync(t.path("new"), rec);
    await sinkFileBecomes(base, "replaced", inputOfServe);
    await agent.waitForStderr(/WARN +input-server: the sink file was replaced: the path leads to another file now/);
    const text = await scrape(base);
    expect(samples(text, "audio_agent_sink_file_in_place")).toEqual([{ name: "audio_agent_sink_file_in_place", labels: { channel: "input" }, value: 0 }]);
    mic.send(concatBytes([frames(INPUT_MAGIC, 30, 60, testPayload), encodeMessage(INPUT_MAGIC, MessageType.Stop, new Uint8Array(0), nowNs())]));
    await agent.waitForStderr("input-server: session ended by Stop");
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);

    expect(linesWith(agent.stderr, "the sink file")).toBe(1);
    expect(logFields(agent.stderr, "input-server", "the sink file was replaced: the path leads to another file now; what is recorded goes on into the file opened, which is no longer at that path")).toEqual({ sink: rec });
    expect(readFileSync(rec, "utf8")).toBe("another file\n");
    const recorded = wholeWireMessages(aside, INPUT_MAGIC);
    expect(recorded.filter((m) => m.type === MessageType.OpusFrame).map((m) => m.payload)).toEqual(Array.from({ length: 60 }, (_, i) => testPayload(i)));
    expect(logFields(agent.stderr, "input-server", "stopped")).toMatchObject({ frames: "60" });
  }, 60_000);
});

describe("sinks that are not a file the agent opened by its path", () => {
  /** A receiving agent recording into what is not a regular file of its own, what it records removed from its path meanwhile. */
  const cases: { name: string; run: (t: ReturnType<typeof setup>) => Promise<{ agent: Spawned; send: (from: number, to: number) => void; gone: () => void }> }[] = [
    {
      name: "`input serve --sink FIFO` (a player reading it)",
      run: async (t) => {
        const fifo = makeFifo(t.path("play"));
        start(["sh", "-c", 'exec cat "$0" >/dev/null', fifo]);
        const agent = spawnAgent(["input", "serve", "--socket", t.sock, "--sink", fifo, "--metrics", "127.0.0.1:0"]);
        await agent.waitForStderr("input-server: listening");
        const mic = await micClient(t.sock);
        return { agent, send: (from, to) => mic.send(frames(INPUT_MAGIC, from, to, testPayload)), gone: () => rmSync(fifo) };
      },
    },
    {
      name: "`output recv --sink FIFO` (a reader on it)",
      run: async (t) => {
        const fifo = makeFifo(t.path("play"));
        start(["sh", "-c", 'exec cat "$0" >/dev/null', fifo]);
        let socket: Socket<undefined> | undefined;
        const server = fakeServer(t.sock, (s) => (socket = s));
        defer(() => server.stop());
        const agent = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", fifo, "--metrics", "127.0.0.1:0"]);
        await until(() => socket !== undefined, "the agent to connect");
        return { agent, send: (from, to) => socket!.write(frames(OUTPUT_MAGIC, from, to, testPayload)), gone: () => rmSync(fifo) };
      },
    },
    {
      name: "`output recv --sink -`, stdout a regular file",
      run: async (t) => {
        const out = t.path("stdout.wire");
        let socket: Socket<undefined> | undefined;
        const server = fakeServer(t.sock, (s) => (socket = s));
        defer(() => server.stop());
        const stdout = openSync(out, "w");
        defer(() => closeSync(stdout));
        const agent = spawnAgent(["output", "recv", "--socket", t.sock, "--sink", "-", "--metrics", "127.0.0.1:0"], { stdout });
        await until(() => socket !== undefined, "the agent to connect");
        return { agent, send: (from, to) => socket!.write(frames(OUTPUT_MAGIC, from, to, testPayload)), gone: () => rmSync(out) };
      },
    },
  ];

  for (const { name, run } of cases) {
    test(`${name}: never looked at against a path; no sink_file in /healthz, no series of audio_agent_sink_file_in_place, nothing told`, async () => {
      const t = setup();
      const { agent, send, gone } = await run(t);
      const base = await metricsUrl(agent);
      send(0, 20);
      await framesReach(base, 20);
      gone();
      // Asked over two looks' time while frames flow: a look would have found it gone.
      send(20, 40);
      for (const end = Date.now() + 2 * SINK_LOOK_MS + 500; Date.now() < end; await Bun.sleep(100)) {
        expect(await healthz(base)).not.toHaveProperty("sink_file");
      }
      await framesReach(base, 40);
      const text = await scrape(base);
      // The family is there for a receiver, with no series where there is no file.
      expect(text).toContain("# TYPE audio_agent_sink_file_in_place gauge");
      expect(samples(text, "audio_agent_sink_file_in_place")).toEqual([]);
      agent.kill("SIGTERM");
      expect(await agent.exited, agent.stderr).toBe(0);
      expect(agent.stderr).not.toContain("the sink file");
    }, 60_000);
  }
});

describe("a recording's path the agent can no longer look at", () => {
  test.skipIf(!canSwitchUser)("an agent run as nobody, its sink's directory made unsearchable (mode 000): where the file stands cannot be told, so it stays as last found and nothing is told; a removal once it can look again is told", async () => {
    const t = setup();
    chmodSync(t.dir, 0o755);
    const dir = t.path("rec-dir");
    mkdirSync(dir);
    chownSync(dir, NOBODY, NOBODY);
    const rec = join(dir, "rec.wire");
    let socket: Socket<undefined> | undefined;
    const server = fakeServer(t.sock, (s) => (socket = s));
    defer(() => server.stop());
    chmodSync(t.sock, 0o666);
    const recv = start([...asNobody(t.dir, AGENT), "output", "recv", "--socket", t.sock, "--sink", rec, "--metrics", "127.0.0.1:0"], { env: agentEnv(), cwd: t.dir });
    const base = await metricsUrl(recv);
    await until(() => socket !== undefined, "the agent to connect");
    socket!.write(frames(OUTPUT_MAGIC, 0, 20, testPayload));
    await framesReach(base, 20);
    expect(await healthz(base)).toMatchObject({ sink_file: "in_place" });

    chmodSync(dir, 0o000);
    // Asked over two looks' time: a look that takes "cannot search" for "nothing there" would tell it moved.
    for (const end = Date.now() + 2 * SINK_LOOK_MS + 500; Date.now() < end; await Bun.sleep(100)) {
      expect(await healthz(base)).toMatchObject({ sink_file: "in_place" });
    }
    chmodSync(dir, 0o755);
    rmSync(rec);
    await sinkFileBecomes(base, "removed");
    await recv.waitForStderr(/WARN +output-client: the sink file was removed/);
    recv.kill("SIGTERM");
    expect(await recv.exited, recv.stderr).toBe(0);
    expect(linesWith(recv.stderr, "the sink file")).toBe(1);
  }, 60_000);
});
