/**
 * The device build (linux-arm64, glibc), cross-compiled by build.ts and run
 * under qemu user-mode emulation: it starts, and two of them really stream
 * frames to each other over a Unix socket; `serve` as the device runs it
 * gives what the x64 build gives where it goes through libc by bun:ffi
 * (socket buffers, the kernel's unsent and unread bytes, the accept queue's
 * bound, a player's pipe, the service manager's notify socket) and /proc
 * (the log's turn); what is at a socket path is told as on x64 (a connect
 * through libc); and its monitor tells users apart by the look-up a
 * kernel without socket diagnostics gets (/proc/net/tcp).
 * Needs qemu-aarch64-static and the aarch64 glibc (Debian: qemu-user-static,
 * libc6-arm64-cross; npm test installs them).
 */
import { afterEach, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import pkg from "../../package.json" with { type: "json" };
import { ACCEPT_QUEUE } from "../../src/io/accept-queue.ts";
import { SOCK_DGRAM, SOCK_STREAM } from "../../src/io/libc.ts";
import { built, type Built } from "../support/binaries.ts";
import { bindSocket } from "../support/bound-socket.ts";
import { useCleanup } from "../support/cleanup.ts";
import { expectAccountedLine, findLogFields, logFields } from "../support/agent-log.ts";
import { makeFifo, writeIntoFifo } from "../support/fifo.ts";
import { samples, scrapeUntil, value } from "../support/metrics.ts";
import { asUser, canSwitchUser, NOBODY } from "../support/nobody.ts";
import { notifyReceiver } from "../support/notify-receiver.ts";
import { audioPacketsOf } from "../support/ogg.ts";
import { TONE } from "../support/opus-fixtures.ts";
import { firstMismatch } from "../support/payloads.ts";
import { kernelBufferBytes } from "../support/proc.ts";
import { agentEnv, BUN, makeStaleSocket, spawnAgent, stopAgents, run, start } from "../support/processes.ts";
import { closeConnections, queueConnections } from "../support/queued-connections.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { wholeWireFrames, writeWireFile } from "../support/wire.ts";

const QEMU = Bun.which("qemu-aarch64-static");
const SYSROOT = "/usr/aarch64-linux-gnu";

let arm64: Built;

function qemu(args: string[]): string[] {
  return [QEMU!, "-L", SYSROOT, arm64.path, ...args];
}

beforeAll(async () => {
  if (!QEMU) throw new Error("qemu-aarch64-static not found: install qemu-user-static (and libc6-arm64-cross) to test the arm64 build");
  if (!existsSync(join(SYSROOT, "lib/ld-linux-aarch64.so.1"))) throw new Error(`${SYSROOT} has no aarch64 glibc: install libc6-arm64-cross`);
  arm64 = await built("arm64");
}, 120_000);

// Processes first, then their directories (afterEach hooks run in this order).
afterEach(stopAgents);
const defer = useCleanup();

describe("compiled arm64 binary under qemu", () => {
  test("is an aarch64 executable and --version prints the version and commit", async () => {
    const header = new Uint8Array(await Bun.file(arm64.path).slice(0, 20).arrayBuffer());
    expect([...header.subarray(0, 4)]).toEqual([0x7f, 0x45, 0x4c, 0x46]); // ELF
    expect(header[18] | (header[19] << 8)).toBe(183); // e_machine EM_AARCH64
    const { code, stdout, stderr } = await run(qemu(["--version"]), { timeoutMs: 30_000 });
    expect(code, stderr).toBe(0);
    expect(stdout.trim()).toBe(`audio-agent ${pkg.version} (commit ${arm64.commit}, bun ${Bun.version})`);
  }, 30_000);

  test("output serve -> output recv, both arm64, stream a wire capture over a Unix socket", async () => {
    const { dir } = socketDir(defer, "aa-arm-");
    const count = 300;
    const source = join(dir, "in.wire");
    const sink = join(dir, "out.wire");
    const socket = join(dir, "o.sock");
    await writeWireFile(source, count);

    const serve = start(qemu(["output", "serve", "--source", source, "--socket", socket]), { cwd: dir, timeoutMs: 40_000 });
    const recv = start(qemu(["output", "recv", "--socket", socket, "--sink", sink, "--once", "--connect-timeout", "30"]), { cwd: dir, timeoutMs: 40_000 });
    const [served, received] = await Promise.all([serve.done, recv.done]);
    expect(served.code, served.stderr).toBe(0);
    expect(received.code, received.stderr).toBe(0);

    const frames = wholeWireFrames(sink);
    expect(frames.length).toBe(count);
    expect(firstMismatch(frames)).toBe(-1);
    expect(readdirSync(dir).sort()).toEqual(["in.wire", "out.wire"]);
  }, 45_000);

  test("serve as the device runs it (Ogg from a FIFO, the microphone into a player's FIFO, --metrics, NOTIFY_SOCKET, a log appended to and turned): ready once listening with no warning, the accept queue bounded, the buffers asked for, the kernel's queues read, every frame through", async () => {
    const { dir, path } = socketDir(defer, "aa-arm-");
    const [capture, mic, log] = [makeFifo(path("capture.ogg")), makeFifo(path("mic.ogg")), path("agent.log")];
    const notify = notifyReceiver(path("notify"));
    defer(() => notify.close());
    const tone = audioPacketsOf(readFileSync(TONE)).length;
    const args = [
      "serve", "--output-source", capture, "--output-format", "ogg", "--output-socket", path("o.sock"), "--output-socket-buffers", "high-load",
      "--input-socket", path("i.sock"), "--input-sink", mic, "--input-format", "ogg", "--input-socket-buffers", "65536",
      "--metrics", "127.0.0.1:0", "--stats-interval", "1", "--log-max-bytes", "4096",
    ];
    // The init script's way: stderr appended to the log file.
    const serve = start(["sh", "-c", 'log=$1; shift; exec "$@" 2>>"$log"', "sh", log, ...qemu(args)], { cwd: dir, env: agentEnv({ NOTIFY_SOCKET: notify.name }), timeoutMs: 90_000 });

    // Told ready once both sockets listen, and nothing warned of by then (a libc call that failed is a warning).
    await until(() => notify.messages().includes("READY=1"), "READY=1 on the notify socket", 40_000);
    // A log file is written in the thread pool: the lines before READY=1 follow it closely.
    const listened = [`output-server: listening socket=${path("o.sock")}`, `input-server: listening socket=${path("i.sock")}`, "http listening url="];
    let started = "";
    await until(() => listened.every((line) => (started = readFileSync(log, "utf8")).includes(line)), "the lines before READY=1 in the log", 10_000);
    const lines = started.split("\n");
    expect(lines.slice(0, lines.findLastIndex((line) => / listening /.test(line)) + 1).filter((line) => / (WARN|ERROR) /.test(line))).toEqual([]);
    const base = /http listening url=(http:\/\/\S+?)\/?(?:\s|$)/.exec(started)![1]!;

    // listen(2) again through libc bounds the kernel's queue: while the agent takes none, one more than the bound completes.
    serve.kill("SIGSTOP");
    const outcomes = await Promise.all(
      Array.from({ length: 3 * ACCEPT_QUEUE }, () =>
        Bun.connect({ unix: path("i.sock"), socket: { data() {}, error() {}, close() {} } }).then((socket) => (socket.terminate(), "connected"), () => "refused"),
      ),
    );
    serve.kill("SIGCONT");
    expect(outcomes.filter((o) => o === "connected").length).toBe(ACCEPT_QUEUE + 1);
    await scrapeUntil(base, (text) => value(text, "audio_agent_sessions_total", { channel: "input" }) === ACCEPT_QUEUE + 1, "the queued clients taken");

    // The player waits on the FIFO (its output file made as it starts) before the first frame comes.
    const player = start(["sh", "-c", 'exec cat "$0" > "$1"', mic, path("heard.ogg")], { cwd: dir });
    await until(() => existsSync(path("heard.ogg")), "the player started");
    const recv = spawnAgent(["output", "recv", "--socket", path("o.sock"), "--sink", path("out.ogg"), "--format", "ogg", "--count", String(tone), "--connect-timeout", "30"], { cwd: dir });
    const send = spawnAgent(["input", "send", "--socket", path("i.sock"), "--source", TONE, "--format", "ogg", "--realtime", "--connect-timeout", "30"], { cwd: dir });

    // Both clients on: the kernel's buffers as asked for (doubled), and every setsockopt, getsockopt and queue ioctl answered.
    // A channel without a client has no buffer sizes to show yet.
    const buffers = (text: string, component: string) =>
      ["send", "receive"].map((type) => samples(text, "jetkvm_audio_socket_buffer_size_bytes", { component, buffer_type: type })[0]?.value ?? 0);
    const connected = await scrapeUntil(base, (text) => buffers(text, "audio-output")[0]! > 0 && buffers(text, "audio-input")[0]! > 0, "both clients' buffers", 30_000);
    expect({ output: buffers(connected, "audio-output"), input: buffers(connected, "audio-input") }).toEqual({
      output: [kernelBufferBytes(256 * 1024, "send"), kernelBufferBytes(256 * 1024, "receive")],
      input: [kernelBufferBytes(65536, "send"), kernelBufferBytes(65536, "receive")],
    });

    // The player's pipe sized through fcntl (--input-sink-pipe-bytes, 8 KiB by default), as the first frame opens it.
    const logged = () => [`${log}.1`, log].map((file) => (existsSync(file) ? readFileSync(file, "utf8") : "")).join("");
    let opened: Record<string, string> | undefined;
    await until(() => (opened = findLogFields(logged(), "input-server", "sink FIFO opened by a reader")) !== undefined, "the player's FIFO opened", 30_000);
    expect(opened!.pipe_bytes).toBe("8192");

    expect(await writeIntoFifo(capture, TONE)).toBe(0);
    const [received, sent] = await Promise.all([recv.done, send.done]);
    expect(received.code, received.stderr).toBe(0);
    expect(sent.code, sent.stderr).toBe(0);
    const failures = samples(await scrapeUntil(base, () => true, "a scrape"), "audio_agent_socket_option_failures_total");
    expect(failures.filter((s) => s.value > 0)).toEqual([]);

    serve.kill("SIGTERM");
    expect((await serve.done).code).toBe(0);
    expect(notify.messages()).toEqual(["READY=1", "STOPPING=1"]);
    expect((await player.done).code).toBe(0);
    expect(audioPacketsOf(readFileSync(path("out.ogg"))).length).toBe(tone);
    expect(audioPacketsOf(readFileSync(path("heard.ogg"))).length).toBe(tone);

    // The log turned at its bound (copied through /proc/self/fd to FILE.1); the stopped lines account for every frame.
    expect(existsSync(`${log}.1`)).toBe(true);
    const ended = logged();
    expect(expectAccountedLine(ended)).toEqual({ submitted: tone, delivered: tone, dropped: 0, byReason: {} });
    expect(logFields(ended, "input-server", "stopped")).toMatchObject({ frames: String(tone), dropped: "0", sessions: String(ACCEPT_QUEUE + 2), clean_sessions: "1" });
  }, 100_000);

  test("what is at --socket, told as the x64 build tells it (its listing in /proc/net/unix, then a connect through libc): a live server whose accept queue is full, a datagram socket and one bound but not listening yet are refused (exit 2, each named); a stale one is removed and served on", async () => {
    const { path } = socketDir(defer, "aa-arm-");
    defer(bindSocket(path("full.sock"), SOCK_STREAM, 0));
    const held = queueConnections(path("full.sock"), 100);
    defer(() => closeConnections(held));
    defer(bindSocket(path("dgram.sock"), SOCK_DGRAM));
    defer(bindSocket(path("starting.sock"), SOCK_STREAM, "not listening"));
    await makeStaleSocket(path("stale.sock"));
    const serveAt = (name: string) => qemu(["output", "serve", "--socket", path(name), "--source", TONE, "--format", "ogg"]);

    const refused = await Promise.all(["full.sock", "dgram.sock", "starting.sock"].map((name) => run(serveAt(name), { timeoutMs: 40_000 })));
    expect(refused.map(({ code, stderr }) => [code, stderr.trimEnd()])).toEqual([
      [2, `audio-agent: --socket: socket ${path("full.sock")} is in use by a live server; stop it first`],
      [2, `audio-agent: --socket: socket ${path("dgram.sock")} is a live datagram socket (SOCK_DGRAM); refusing to replace it`],
      [2, `audio-agent: --socket: socket ${path("starting.sock")} is bound by a live process that does not listen on it yet (a server starting?); refusing to replace it`],
    ]);

    const serve = start(serveAt("stale.sock"), { timeoutMs: 40_000 });
    await serve.waitForStderr(`listening socket=${path("stale.sock")}`, 30_000);
    expect(serve.stderr).toContain(`output-server: removed stale socket socket=${path("stale.sock")}`);
    serve.kill("SIGTERM");
    expect((await serve.done).code).toBe(0);
  }, 60_000);

  test.skipIf(!canSwitchUser)("--monitor where qemu gives no socket diagnostics (no NETLINK_SOCK_DIAG): said at start, and each peer's user found in /proc/net/tcp: root is served the monitor, nobody only /metrics", async () => {
    const { dir } = socketDir(defer, "aa-arm-");
    chmodSync(dir, 0o755);
    const serve = start(qemu(["output", "serve", "--source", "-", "--socket", join(dir, "o.sock"), "--monitor", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]), { cwd: dir, stdin: "pipe", timeoutMs: 40_000 });
    await serve.waitForStderr(/http listening url=http/, 30_000);
    expect(serve.stderr).toContain("the kernel has no socket diagnostics to ask who connects to the monitor");
    const url = /http listening url=(\S+)/.exec(serve.stderr)![1]!;
    const statuses = async (uid: number) => {
      const ask = `const out = []; for (const path of ["figures", "metrics"]) out.push((await fetch(${JSON.stringify(url)} + path)).status); console.log(out.join(" "));`;
      const asked = await start(asUser(uid, uid, dir, [BUN, "-e", ask]), { cwd: dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } }).done;
      expect(asked.stderr).toBe("");
      return asked.stdout.trim();
    };
    expect({ root: await statuses(0), nobody: await statuses(NOBODY) }).toEqual({ root: "200 200", nobody: "403 200" });
  }, 45_000);
});
