/**
 * The agent against the unchanged Go original (its output side, ipc.go, built
 * at test time: test/support/go-original.ts): the Go AudioServer feeding
 * `output recv`, `output serve` feeding the Go AudioClient, each side
 * restarted under the other. Skipped, saying why, without its ipc.go or `go`.
 */
import { beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { encodeConfigPayload, encodeMessage, MessageType, OUTPUT_MAGIC } from "../../src/protocol/index.ts";
import { expectAccountedLine, logFields } from "../support/agent-log.ts";
import { concatBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { goClient, goOriginalMissing, goPeer, goServer, readLengthPrefixed } from "../support/go-original.ts";
import { audioPacketsOf, packetsOf } from "../support/ogg.ts";
import { encodeWith } from "../support/opus-fixtures.ts";
import { indexedPayload, isIntactIndexedPayload, payloadIndex, payloadOfSize } from "../support/payloads.ts";
import { spawnAgent, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { frameTimestampNs, wholeWireMessages } from "../support/wire.ts";

const defer = useCleanup();
const missing = goOriginalMissing();

function setup() {
  const dir = socketDir(defer, "aag-");
  defer(() => stopAgents());
  return { ...dir, sock: dir.path("out.sock") };
}

/** Frames `from` .. `to - 1`: indexed test payloads, the first of all empty and the second the largest legal. */
function frames(from: number, to: number): Uint8Array[] {
  return Array.from({ length: to - from }, (_, k) => {
    const i = from + k;
    return i === 0 ? new Uint8Array(0) : i === 1 ? payloadOfSize(1, 4096) : indexedPayload(i, 600);
  });
}

/** Payloads as hex, each: a mismatch reads as which payload differs. */
function hex(payloads: readonly Uint8Array[]): string[] {
  return payloads.map((p) => Buffer.from(p).toString("hex"));
}

/** The Go AudioServer at `t.sock`, and `output recv` (`args` after its socket) once it has connected to it. */
async function recvFromGoServer(t: ReturnType<typeof setup>, args: string[]) {
  const server = await goServer(t.sock);
  const recv = spawnAgent(["output", "recv", "--socket", t.sock, ...args]);
  await recv.waitForStderr("output-client: connected");
  return { server, recv };
}

/** Real Opus packets: opusenc's 20 ms frames of a 2 s sweep, in an Ogg file at the returned path. */
function opusFile(dir: string): { path: string; packets: Uint8Array[] } {
  const path = encodeWith(dir, "sweep", ["--framesize", "20"], { samples: 96_000 });
  return { path, packets: packetsOf(new Uint8Array(readFileSync(path))).slice(2) };
}

describe.skipIf(missing !== undefined)(`the unchanged Go original${missing ? ` (skipped: ${missing})` : ""}`, () => {
  beforeAll(async () => {
    await goPeer();
  }, 300_000);

  describe("Go AudioServer -> output recv", () => {
    test("wire sink: every frame the Go server sent (empty and 4096 bytes among them) is recorded byte for byte, stamped by the Go server; the stopped line counts them", async () => {
      const t = setup();
      const sink = t.path("got.wire");
      const { server, recv } = await recvFromGoServer(t, ["--sink", sink]);
      const sent = frames(0, 400);
      const before = BigInt(Date.now()) * 1_000_000n;
      await server.send(sent);
      expect(await server.end()).toMatchObject({ total: 400, dropped: 0 });
      const after = BigInt(Date.now()) * 1_000_000n;
      await recv.waitForStderr("output-client: disconnected");
      recv.kill("SIGTERM");
      expect(await recv.exited, recv.stderr).toBe(0);

      const got = wholeWireMessages(sink);
      expect(got.map((m) => m.type)).toEqual(sent.map(() => MessageType.OpusFrame));
      expect(hex(got.map((m) => m.payload))).toEqual(hex(sent));
      // The Go server stamps each frame as it writes it: this run's wall clock, in order.
      const stamps = got.map((m) => m.timestampNs);
      expect(stamps.every((s, k) => s >= before && s <= after && (k === 0 || s >= stamps[k - 1]!))).toBe(true);
      expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: "400", dropped: "0", protocol_errors: "0", other_messages: "0", frame_stamps_unusable: "0", connects: "1" });
    }, 60_000);

    test("Ogg sink: every Opus packet the Go server sent is a packet of the recording, in order", async () => {
      const t = setup();
      const { packets } = opusFile(t.dir);
      const sink = t.path("got.opus");
      const { server, recv } = await recvFromGoServer(t, ["--sink", sink, "--format", "ogg"]);
      await server.send(packets);
      expect(await server.end()).toMatchObject({ total: packets.length, dropped: 0 });
      await recv.waitForStderr("output-client: disconnected");
      recv.kill("SIGTERM");
      expect(await recv.exited, recv.stderr).toBe(0);
      const recorded = audioPacketsOf(new Uint8Array(readFileSync(sink)));
      expect(hex(recorded)).toEqual(hex(packets));
      expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: String(packets.length), dropped: "0" });
    }, 60_000);

    test("the Go server restarted mid-stream (Close, a new one on the path): the agent connects again and records both runs' frames, in order", async () => {
      const t = setup();
      const sink = t.path("got.wire");
      const { server: first, recv } = await recvFromGoServer(t, ["--sink", sink]);
      await first.send(frames(0, 150));
      expect(await first.end()).toMatchObject({ total: 150, dropped: 0 });
      await recv.waitForStderr("output-client: disconnected");

      const second = await goServer(t.sock);
      await recv.waitForStderr("output-client: reconnected");
      await second.send(frames(150, 300));
      expect(await second.end()).toMatchObject({ total: 150, dropped: 0 });
      await until(() => recv.stderr.split("output-client: disconnected").length === 3, "the second disconnect");
      recv.kill("SIGTERM");
      expect(await recv.exited, recv.stderr).toBe(0);

      expect(hex(wholeWireMessages(sink).map((m) => m.payload))).toEqual(hex(frames(0, 300)));
      expect(logFields(recv.stderr, "output-client", "stopped")).toMatchObject({ frames: "300", dropped: "0", connects: "2", protocol_errors: "0" });
    }, 60_000);
  });

  describe("what the Go original gets wrong, seen from the agent", () => {
    test("the Go server's timed write, its client stalled (SIGSTOP) past the 10 ms timeout: frames it dropped are gone, its interleaved writes are a framing violation the agent disconnects on and connects again after, never resynchronising; every message recorded is whole, in order, and only one before each violation can be another's bytes", async () => {
      const t = setup();
      const sink = t.path("got.wire");
      const { server, recv } = await recvFromGoServer(t, ["--sink", sink]);
      const N = 3000;
      const sent = frames(2, N);
      const sending = server.send(sent);
      await until(() => (Bun.file(sink).size ?? 0) > 0, "frames recorded");
      // Stalled while the server writes on: its socket buffers fill, its writes time out.
      process.kill(recv.pid, "SIGSTOP");
      await Bun.sleep(1500);
      process.kill(recv.pid, "SIGCONT");
      await sending;
      const stats = await server.end();
      expect(stats.total).toBeGreaterThan(0);
      expect(stats.dropped).toBeGreaterThan(0);
      await until(() => /disconnected .*reason="server closed"/.test(recv.stderr), "the Go server's Close");
      recv.kill("SIGTERM");
      expect(await recv.exited, recv.stderr).toBe(0);

      const got = wholeWireMessages(sink);
      const stopped = logFields(recv.stderr, "output-client", "stopped");
      const violations = Number(stopped.protocol_errors);
      expect(stopped.frames).toBe(String(got.length));
      expect(Number(stopped.connects)).toBe(1 + violations);
      expect(recv.stderr.split("framing violation from server; disconnecting").length - 1).toBe(violations);
      const intact = got.filter((m) => isIntactIndexedPayload(m.payload, 600));
      expect(got.length - intact.length).toBeLessThanOrEqual(violations);
      const indices = intact.map((m) => payloadIndex(m.payload));
      expect(indices.filter((i, k) => k > 0 && i <= indices[k - 1]!)).toEqual([]);
      // Recording went on after the stall: the last frames the server wrote are there.
      expect(indices.at(-1)).toBe(N - 1);
    }, 60_000);
  });

  describe("output serve -> Go AudioClient", () => {
    /** The Go client's run: its payloads, its lines, its exit code. */
    async function received(client: Awaited<ReturnType<typeof goClient>>, out: string) {
      const { code, stdout } = await client.done;
      return { code, stdout, payloads: hex(readLengthPrefixed(out)) };
    }

    test("an opusenc Ogg file, lossless: the Go client gets every packet byte for byte, in order, then the end of the stream (EOF)", async () => {
      const t = setup();
      const { path, packets } = opusFile(t.dir);
      const serve = spawnAgent(["output", "serve", "--socket", t.sock, "--source", path, "--format", "ogg"]);
      await serve.waitForStderr("waiting for a client");
      const out = t.path("got.bin");
      const got = await received(await goClient(t.sock, out), out);
      expect(await serve.exited, serve.stderr).toBe(0);
      expect(got).toEqual({ code: 0, stdout: `connected\nerror: failed to read header: EOF\nframes=${packets.length}\n`, payloads: hex(packets) });
      expect(expectAccountedLine(serve.stderr)).toMatchObject({ submitted: packets.length, delivered: packets.length, dropped: 0 });
    }, 60_000);

    test("a wire file whose capture holds Config and Heartbeat messages among the frames: the Go client, which takes OpusFrames only, gets every frame and nothing else", async () => {
      const t = setup();
      const sent = frames(0, 300);
      const source = t.path("in.wire");
      const config = encodeConfigPayload({ sampleRate: 48000, channels: 2, frameSize: 960 });
      const messages: Uint8Array[] = [];
      sent.forEach((p, i) => {
        if (i % 50 === 10) messages.push(encodeMessage(OUTPUT_MAGIC, MessageType.Heartbeat, new Uint8Array(0), frameTimestampNs(i)));
        if (i % 100 === 20) messages.push(encodeMessage(OUTPUT_MAGIC, MessageType.Config, config, frameTimestampNs(i)));
        messages.push(encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, p, frameTimestampNs(i)));
      });
      await Bun.write(source, concatBytes(messages));
      const serve = spawnAgent(["output", "serve", "--socket", t.sock, "--source", source]);
      await serve.waitForStderr("waiting for a client");
      const out = t.path("got.bin");
      const got = await received(await goClient(t.sock, out), out);
      expect(await serve.exited, serve.stderr).toBe(0);
      expect(got).toEqual({ code: 0, stdout: `connected\nerror: failed to read header: EOF\nframes=300\n`, payloads: hex(sent) });
      expect(expectAccountedLine(serve.stderr)).toMatchObject({ submitted: 300, delivered: 300, dropped: 0 });
    }, 60_000);

    for (const format of ["ogg", "wire"] as const) {
      test(`--realtime (${format}): every frame the agent delivered reaches the Go client byte for byte, in order; those sent before it connected are counted no_client`, async () => {
        const t = setup();
        let path: string;
        let sent: Uint8Array[];
        if (format === "ogg") ({ path, packets: sent } = opusFile(t.dir));
        else {
          sent = frames(0, 100);
          path = t.path("in.wire");
          await Bun.write(path, concatBytes(sent.map((p, i) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, p, frameTimestampNs(i)))));
        }
        const serve = spawnAgent(["output", "serve", "--socket", t.sock, "--source", path, "--format", format, "--realtime"]);
        await serve.waitForStderr("listening");
        const out = t.path("got.bin");
        const got = await received(await goClient(t.sock, out), out);
        expect(await serve.exited, serve.stderr).toBe(0);
        const accounting = expectAccountedLine(serve.stderr);
        expect(accounting.submitted).toBe(sent.length);
        expect(accounting.byReason).toEqual(accounting.dropped ? { no_client: accounting.dropped } : {});
        expect(got).toEqual({
          code: 0,
          stdout: `connected\nerror: failed to read header: EOF\nframes=${accounting.delivered}\n`,
          payloads: hex(sent.slice(accounting.dropped)),
        });
        expect(accounting.delivered).toBeGreaterThan(0);
      }, 60_000);
    }

    test("the agent's server restarted: the Go client's ReceiveFrame fails at the end of the stream (EOF) after every frame delivered; Disconnect and Connect again, it gets the new server's frames", async () => {
      const t = setup();
      const sent = frames(0, 200);
      const source = t.path("in.wire");
      await Bun.write(source, concatBytes(sent.map((p, i) => encodeMessage(OUTPUT_MAGIC, MessageType.OpusFrame, p, frameTimestampNs(i)))));
      const first = spawnAgent(["output", "serve", "--socket", t.sock, "--source", source, "--realtime"]);
      await first.waitForStderr("listening");
      const out = t.path("got.bin");
      const client = await goClient(t.sock, out, ["-reconnects", "1"]);
      await first.waitForStderr("client connected");
      await until(() => (Bun.file(out).size ?? 0) > 0, "frames at the Go client");
      first.kill("SIGTERM");
      expect(await first.exited, first.stderr).toBe(0);
      const firstRun = expectAccountedLine(first.stderr);
      expect(firstRun.byReason).toEqual(firstRun.dropped ? { no_client: firstRun.dropped } : {});
      await until(() => client.stdout.includes("error: failed to read header: EOF"), "the Go client to see the end of the stream");

      const second = spawnAgent(["output", "serve", "--socket", t.sock, "--source", source]);
      const got = await received(client, out);
      expect(await second.exited, second.stderr).toBe(0);
      expect(got.stdout).toBe(`connected\nerror: failed to read header: EOF\nconnected\nerror: failed to read header: EOF\nframes=${firstRun.delivered + sent.length}\n`);
      expect(got.code).toBe(0);
      const sentHex = hex(sent);
      expect(got.payloads).toEqual([...sentHex.slice(firstRun.dropped, firstRun.dropped + firstRun.delivered), ...sentHex]);
    }, 60_000);
  });
});
