/**
 * The bare Bun floor program (src/bench/floors/bare-bun.js), run from its
 * source: its modes and arguments, what it says it loaded, and that a
 * machine without glibc (musl) still gets a floor, as the agent still runs there.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { floorModuleArgs, STREAMING_RUNTIME_MODULES } from "../../src/bench/floor.ts";
import { LatencyMonitor } from "../../src/observe/latency-monitor.ts";
import { LIBC_CANDIDATES } from "../../src/io/libc.ts";
import { useCleanup } from "../support/cleanup.ts";
import { BARE_BUN_FLOOR, BUN, run, start, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const USAGE = "usage: bare-bun idle | tick | modules MODULE... | send SOCKET [MODULE...] | recv SOCKET [MODULE...]\n";
const defer = useCleanup();
afterEach(stopAgents);

/** A client is connected to the Unix socket at `path`: the kernel's table holds an end of it that is connected (state 03). */
function hasClient(path: string): boolean {
  return readFileSync("/proc/net/unix", "utf8")
    .split("\n")
    .some((line) => line.endsWith(` ${path}`) && line.trim().split(/\s+/)[5] === "03");
}

/** 1..n in an order of their own, the same every run. */
function shuffled(n: number): number[] {
  const ks = Array.from({ length: n }, (_, i) => i + 1);
  for (let i = n - 1, seed = 7; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    const j = seed % (i + 1);
    [ks[i], ks[j]] = [ks[j]!, ks[i]!];
  }
  return ks;
}

/**
 * The bare receiver's "stopped" fields after a hand-written sender on `socket` wrote `reads`:
 * each a list of frame ages (s), its frames stamped that long ago and written at once, the next
 * written only once the receiver has read every byte of it (nothing left in its queue: TIOCOUTQ 0),
 * so that each comes to the receiver in a read of its own.
 */
async function stoppedFields(socket: string, reads: number[][]): Promise<Record<string, number>> {
  const sender = start([
    "python3",
    "-c",
    `
import json, socket, struct, sys, termios, fcntl, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.bind(sys.argv[1]); s.listen(1)
print("listening", file=sys.stderr, flush=True)
c, _ = s.accept()
now = time.time_ns()
for ages in json.loads(sys.argv[2]):
    c.sendall(b"".join(struct.pack("<IBIq", 0x4a4b4f55, 0, 4, now - a * 10**9) + bytes(4) for a in ages))
    while struct.unpack("i", fcntl.ioctl(c, termios.TIOCOUTQ, bytes(4)))[0] > 0: time.sleep(0.0002)
print("drained", file=sys.stderr, flush=True)
time.sleep(60)
`,
    socket,
    JSON.stringify(reads),
  ]);
  await sender.waitForStderr("listening\n");
  const recv = start([BUN, BARE_BUN_FLOOR, "recv", socket]);
  await sender.waitForStderr("drained\n");
  recv.kill("SIGTERM");
  const done = await recv.done;
  sender.kill("SIGKILL");
  expect(done.code).toBe(0);
  return Object.fromEntries([...done.stderr.matchAll(/(\w+)=(\S+)/g)].map((m) => [m[1]!, Number(m[2])]));
}

/** The floor's "loaded" line, once it has said it. */
async function loadedLine(args: string[]): Promise<string> {
  const floor = start([BUN, BARE_BUN_FLOOR, ...args]);
  await floor.waitForStderr(/bare-bun: loaded .*\n/);
  floor.kill("SIGKILL");
  return floor.stderr.match(/bare-bun: loaded (.*)\n/)![1]!;
}

describe("bare-bun floor", () => {
  test("a mode without what it needs is a usage error (exit 2), not a floor of another kind", async () => {
    for (const args of [[], ["modules"], ["send"], ["recv"], ["nap"]]) {
      expect({ args, ...(await run([BUN, BARE_BUN_FLOOR, ...args])) }).toEqual({ args, code: 2, stdout: "", stderr: USAGE });
    }
  });

  test("a module that is not one of Bun's, or that Bun does not have, is named in one line", async () => {
    expect(await run([BUN, BARE_BUN_FLOOR, "modules", "node:fs", "./floor-helper.js"])).toEqual({ code: 2, stdout: "", stderr: `bare-bun: not a Bun runtime module: "./floor-helper.js"\n${USAGE}` });
    expect(await run([BUN, BARE_BUN_FLOOR, "send", "/tmp/x.sock", "=node:fs"])).toEqual({ code: 2, stdout: "", stderr: `bare-bun: not a Bun runtime module: "=node:fs"\n${USAGE}` });
    expect(await run([BUN, BARE_BUN_FLOOR, "modules", "node:"])).toEqual({ code: 2, stdout: "", stderr: `bare-bun: not a Bun runtime module: "node:"\n${USAGE}` });
    expect(await run([BUN, BARE_BUN_FLOOR, "modules", "node:nope"])).toEqual({ code: 1, stdout: "", stderr: "bare-bun: cannot load node:nope: No such built-in module: node:nope\n" });
  });

  test("libraries are for bun:ffi only, as a list of names: anything else is a usage error, not ignored", async () => {
    for (const module of ["node:fs=x", "bun:ffi=", "bun:ffi=nolib=libc.so.6", "bun:ffi=libc.so.6,", "bun:ffi=,libc.so.6"]) {
      const why = `bare-bun: only bun:ffi takes libraries, as bun:ffi=LIB,LIB... (names without "=" or ","): "${module}"\n`;
      expect({ module, ...(await run([BUN, BARE_BUN_FLOOR, "modules", "node:path", module])) }).toEqual({ module, code: 2, stdout: "", stderr: why + USAGE });
    }
  });

  test("loads every module it is given, bun:ffi from the libc names the agent tries", async () => {
    const args = floorModuleArgs();
    expect(args).toEqual(["node:fs", "node:path", `bun:ffi=${LIBC_CANDIDATES.join(",")}`]);
    expect(STREAMING_RUNTIME_MODULES.every((m) => args.some((a) => a.split("=")[0] === m))).toBe(true);
    expect(await loadedLine(["modules", ...args])).toMatch(/^node:fs, node:path, bun:ffi \((libc\.so\.6|\S*musl\S*|libc\.so)\)$/);
  });

  test("a libc that does not open is passed over for the next, as on musl; with none, it goes on without", async () => {
    expect(await loadedLine(["modules", "bun:ffi=libc.musl-nowhere.so.1,libc.so.6"])).toBe("bun:ffi (libc.so.6)");
    expect(await loadedLine(["modules", "node:path", "bun:ffi=libc.musl-nowhere.so.1"])).toBe("node:path, bun:ffi (no libc opened)");
    // The first that opens is the one: later names are not tried.
    expect(await loadedLine(["modules", "bun:ffi=libc.so.6,libm.so.6"])).toBe("bun:ffi (libc.so.6)");
    expect(await loadedLine(["modules", "bun:ffi"])).toBe("bun:ffi (libc.so.6)");
  });

  test("the receiver stops at a framing error with one line and exit 1, not skipping or holding the bad bytes", async () => {
    const dir = socketDir(defer, "aab-");
    // A hand-written sender: two good frames, then a bad header (only its 17 bytes: a length is never waited for).
    const header = ({ magic = 0x4a4b4f55, type = 0, length = 4 }) => {
      const bytes = new Uint8Array(17);
      const view = new DataView(bytes.buffer);
      view.setUint32(0, magic, true);
      view.setUint8(4, type);
      view.setUint32(5, length, true);
      view.setBigInt64(9, BigInt(Date.now()) * 1_000_000n, true);
      return bytes;
    };
    const good = Buffer.concat([header({}), new Uint8Array(4)]);
    const cases = [
      [{ magic: 0x4a4b4d49 }, "bad magic 0x4a4b4d49"], // another channel's ("JKMI")
      [{ type: 9 }, "unknown message type 9"],
      [{ length: 4097 }, "payload length 4097 over 4096"],
      [{ length: 0x7fffffff }, "payload length 2147483647 over 4096"],
    ] as const;
    for (const [bad, why] of cases) {
      const socket = dir.path(`bad${cases.findIndex(([b]) => b === bad)}.sock`);
      const listener = Bun.listen({ unix: socket, socket: { open: (s) => void s.write(Buffer.concat([good, good, header(bad)])), data() {} } });
      defer(() => listener.stop(true));
      const done = await start([BUN, BARE_BUN_FLOOR, "recv", socket]).done;
      expect({ bad, ...done }).toMatchObject({ bad, code: 1, stderr: `bare-bun: framing error: ${why} after 2 frames\n` });
    }
  });

  test("the receiver's latency is each read's age from its header stamp, p50 / p99 / max by nearest rank over its last 1024 reads, as the agent's monitor takes them", async () => {
    const dir = socketDir(defer, "aab-");
    const socket = dir.path("ages.sock");
    // A hand-written sender: 76 frames stamped 20000 s ago (older than the window keeps), then
    // 1024 stamped k * 10 s ago for k = 1..1024 in a shuffled order, each frame read on its own.
    const fields = await stoppedFields(dir.path("ages.sock"), [...Array(76).fill([20000]), ...shuffled(1024).map((k) => [k * 10])]);
    expect(fields.frames).toBe(1100);
    // Ranks 512, 1014 and 1024 of the last 1024: k * 10 s, plus the moment it took to arrive.
    const tens = (ms: number) => Math.round(ms / 10_000);
    expect([tens(fields.frame_age_p50_ms!), tens(fields.frame_age_p99_ms!), tens(fields.frame_age_max_ms!)]).toEqual([512, 1014, 1024]);
    // The agent's latency monitor, given the same ages, ranks them the same.
    const monitor = new LatencyMonitor({ targetSeconds: 1e6, maxSeconds: 1e6 });
    for (const k of [...Array(76).fill(2000), ...Array.from({ length: 1024 }, (_, i) => 1024 - i)]) monitor.record("frame_age", k * 10);
    const agent = monitor.snapshot("frame_age")!;
    expect([agent.p50 / 10, agent.p99 / 10, agent.max / 10]).toEqual([512, 1014, 1024]);
  });

  test("frames that come in one read give that read one age, its first frame's, as the agent's receiver takes them: a burst after a stall counts once", async () => {
    const dir = socketDir(defer, "aab-");
    // 20 reads of 5 frames: the first of read k stamped k * 10 s ago, the other four 1 s ago.
    const reads = Array.from({ length: 20 }, (_, i) => [(i + 1) * 10, 1, 1, 1, 1]);
    const fields = await stoppedFields(dir.path("burst.sock"), reads);
    expect(fields.frames).toBe(100);
    // Ranks 10, 20 and 20 of the 20 reads' ages (each frame's age would give 1 s for p50, 190 s for p99).
    const tens = (ms: number) => Math.round(ms / 10_000);
    expect([tens(fields.frame_age_p50_ms!), tens(fields.frame_age_p99_ms!), tens(fields.frame_age_max_ms!)]).toEqual([10, 20, 20]);
  });

  test("the pair loads its modules too, and frames still flow from sender to receiver", async () => {
    const dir = socketDir(defer, "aab-");
    const socket = dir.path("floor.sock");
    const modules = floorModuleArgs();
    const send = start([BUN, BARE_BUN_FLOOR, "send", socket, ...modules]);
    await send.waitForStderr("bare-bun: loaded node:fs, node:path, bun:ffi (");
    const recv = start([BUN, BARE_BUN_FLOOR, "recv", socket, ...modules]);
    await recv.waitForStderr("bare-bun: loaded node:fs, node:path, bun:ffi (");
    await until(() => hasClient(socket), "the receiver to connect");
    await Bun.sleep(300);
    recv.kill("SIGTERM");
    const done = await recv.done;
    expect(done.code).toBe(0);
    expect(Number(done.stderr.match(/stopped frames=(\d+)/)?.[1])).toBeGreaterThan(0);
    // Without modules it says nothing at start.
    const plain = start([BUN, BARE_BUN_FLOOR, "tick"]);
    await Bun.sleep(300);
    plain.kill("SIGKILL");
    expect((await plain.done).stderr).toBe("");
  });

  test("the receiver outlives its sender and still gives its line on SIGTERM (the runner stops both at once)", async () => {
    const dir = socketDir(defer, "aab-");
    const socket = dir.path("floor.sock");
    const send = start([BUN, BARE_BUN_FLOOR, "send", socket]);
    await until(() => existsSync(socket), "the floor's socket");
    const recv = start([BUN, BARE_BUN_FLOOR, "recv", socket]);
    // Frames' time once it is connected, not from its start: Bun can take longer than that to start
    // on a busy machine, and a receiver that then finds no sender exits.
    await until(() => hasClient(socket), "the receiver to connect");
    await Bun.sleep(300);
    send.kill("SIGTERM");
    await send.exited;
    await Bun.sleep(300);
    expect(recv.hasExited).toBe(false);
    recv.kill("SIGTERM");
    const done = await recv.done;
    expect(done.code).toBe(0);
    expect(Number(done.stderr.match(/^bare-bun recv: stopped frames=(\d+) /m)?.[1])).toBeGreaterThan(0);
  });
});
