/**
 * Who may talk to the agent: the socket's mode (0660 unless --socket-mode
 * says otherwise) is what the kernel enforces against another user, an
 * unwritable socket directory is refused up front, and the metrics endpoint
 * listens on loopback unless given a host.
 *
 * The other user is nobody (uid/gid 65534, no groups) via setpriv
 * (util-linux), so these tests need root; without it they are skipped, and
 * they say so.
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, chownSync, linkSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { expectAccountedLine, failureLine } from "../support/agent-log.ts";
import { useCleanup } from "../support/cleanup.ts";
import { startFedServer } from "../support/feeder.ts";
import { metricsUrl } from "../support/metrics.ts";
import { asNobody, canSwitchUser, NOBODY } from "../support/nobody.ts";
import { expectIntactInOrder } from "../support/payloads.ts";
import { listeners } from "../support/proc.ts";
import { AGENT, agentEnv, runAgent, spawnAgent, stopAgents, type Spawned } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { indexedWire, wireFileFrames, writeWireFile } from "../support/wire.ts";

const defer = useCleanup();
if (!canSwitchUser) console.warn("access tests as another user skipped: they need root and setpriv (util-linux)");

/** A temp dir other users can enter and read (the socket itself keeps its own mode). */
function openDir(prefix = "acc-") {
  const dir = socketDir(defer, prefix);
  chmodSync(dir.dir, 0o755);
  defer(stopAgents);
  return dir;
}

/** The agent command run as nobody. */
function agentAsNobody(dir: string): string[] {
  return asNobody(dir, AGENT);
}

/** Runs the agent as nobody to completion. */
async function runAsNobody(dir: string, args: string[]): Promise<{ code: number; stderr: string }> {
  const proc = Bun.spawn([...agentAsNobody(dir), ...args], { cwd: dir, env: agentEnv(), stdout: "ignore", stderr: "pipe" });
  const stderr = await new Response(proc.stderr).text();
  return { code: await proc.exited, stderr };
}

describe("the socket's mode", () => {
  for (const [role, args] of [
    ["output serve", (s: string, _d: string) => ["output", "serve", "--socket", s, "--source", "-"]],
    ["input serve", (s: string, d: string) => ["input", "serve", "--socket", s, "--sink", join(d, "in.wire")]],
  ] as const) {
    test(`${role}: 0660 by default, --socket-mode when given, whatever the umask`, async () => {
      const dir = openDir();
      for (const [extra, mode, umask] of [
        [[], 0o660, 0o077],
        [["--socket-mode", "0600"], 0o600, 0o000],
        [["--socket-mode", "0666"], 0o666, 0o027],
      ] as const) {
        const socket = dir.path(`m${mode.toString(8)}.sock`);
        // The child inherits the umask in force when it is spawned.
        const previous = process.umask(umask);
        let agent: Spawned;
        try {
          agent = spawnAgent([...args(socket, dir.dir), ...extra], { stdin: "pipe" });
        } finally {
          process.umask(previous);
        }
        await agent.waitForStderr("listening");
        const st = statSync(socket);
        expect(st.isSocket()).toBe(true);
        expect(st.mode & 0o777).toBe(mode);
        agent.kill("SIGTERM");
        expect(await agent.exited).toBe(0);
      }
    });
  }
});

describe.skipIf(!canSwitchUser)("another user (nobody, no groups)", () => {
  test("is refused by the kernel on a 0660 root socket: `output recv` exits 1 with EACCES; the server keeps serving", async () => {
    const dir = openDir();
    const socket = dir.path("out.sock");
    const { server, feed } = await startFedServer(socket);
    const st = statSync(socket);
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([0, 0, 0o660]);

    const recv = await runAsNobody(dir.dir, ["output", "recv", "--socket", socket, "--sink", "/dev/null", "--connect-timeout", "5"]);
    expect(recv.code).toBe(1);
    const line = failureLine(recv.stderr);
    expect(line).toContain(socket);
    expect(line).toMatch(/EACCES|permission denied/i);
    expect(server.stderr).not.toContain("client connected");

    // The owner's group may connect: root here.
    const sink = dir.path("root.wire");
    const own = spawnAgent(["output", "recv", "--socket", socket, "--sink", sink, "--count", "50"]);
    await server.waitForStderr("client connected");
    await feed.send(50);
    expect(await own.exited).toBe(0);
    await feed.end();
    expect(await server.exited).toBe(0);
    expect(expectIntactInOrder(wireFileFrames(sink).frames)).toEqual([...Array(50).keys()]);
    expectAccountedLine(server.stderr);
  });

  test("with --socket-mode 0666 the same user connects and receives", async () => {
    const dir = openDir();
    const socket = dir.path("out.sock");
    const { server, feed } = await startFedServer(socket, ["--socket-mode", "0666"]);
    const home = dir.path("nobody");
    mkdirSync(home);
    chownSync(home, NOBODY, NOBODY);
    const sink = join(home, "got.wire");
    const proc = Bun.spawn([...agentAsNobody(dir.dir), "output", "recv", "--socket", socket, "--sink", sink, "--count", "50"], {
      cwd: dir.dir,
      env: agentEnv(),
      stdout: "ignore",
      stderr: "pipe",
    });
    defer(() => proc.kill("SIGKILL"));
    const stderr = new Response(proc.stderr).text();
    await server.waitForStderr("client connected");
    await feed.send(50);
    expect(await proc.exited).toBe(0);
    expect(await stderr).toContain("connected");
    expect(statSync(sink).uid).toBe(NOBODY);
    expect(expectIntactInOrder(wireFileFrames(sink).frames)).toEqual([...Array(50).keys()]);
    await feed.end();
    expect(await server.exited).toBe(0);
    const acc = expectAccountedLine(server.stderr);
    expect(acc.delivered).toBe(50);
  });

  test("a socket directory it cannot write is refused up front: exit 2, naming the directory", async () => {
    const dir = openDir();
    const locked = dir.path("locked");
    mkdirSync(locked);
    chmodSync(locked, 0o755); // root's; nobody may enter but not create
    const source = dir.path("src.wire");
    writeFileSync(source, indexedWire(0, 10));
    chmodSync(source, 0o644);
    const result = await runAsNobody(dir.dir, ["output", "serve", "--socket", join(locked, "out.sock"), "--source", source]);
    expect(result.code).toBe(2);
    const line = failureLine(result.stderr);
    expect(line).toContain(locked);
    expect(line).toContain("not writable");
  });
});

describe.skipIf(!canSwitchUser)("a sink in a sticky directory others may write (as /tmp)", () => {
  /** A directory like /tmp (mode 1777, root's), with the root-only file `precious` beside it. */
  function stickyDir() {
    const dir = openDir("sticky-");
    const shared = dir.path("shared");
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    const precious = dir.path("precious");
    writeFileSync(precious, "precious\n");
    chmodSync(precious, 0o600);
    return { dir, shared, precious };
  }

  /** `output recv` as root into `sink` from a fed server: its exit code and log, and the server stopped. */
  async function recordAsRoot(dir: { path: (name: string) => string }, sink: string): Promise<{ code: number; stderr: string }> {
    const socket = dir.path("out.sock");
    const { server, feed } = await startFedServer(socket);
    const recv = spawnAgent(["output", "recv", "--socket", socket, "--sink", sink, "--count", "10"]);
    const connected = Promise.race([server.waitForStderr("client connected").then(() => true), recv.exited.then(() => false)]);
    if (await connected) await feed.send(10);
    const code = await recv.exited;
    await feed.end();
    expect(await server.exited).toBe(0);
    return { code, stderr: recv.stderr };
  }

  test("another user's symlink at the sink path is not followed: the file it points at is left as it was", async () => {
    const { dir, shared, precious } = stickyDir();
    const sink = join(shared, "rec.wire");
    const planted = Bun.spawnSync(asNobody(dir.dir, ["ln", "-s", precious, sink]), { cwd: dir.dir });
    expect(planted.exitCode).toBe(0);
    const { code, stderr } = await recordAsRoot(dir, sink);
    expect(statSync(precious).size).toBe("precious\n".length);
    expect(readFileSync(precious, "utf8")).toBe("precious\n");
    expect(code).toBe(1);
    expect(failureLine(stderr)).toContain(sink);
  });

  test("another user's symlink at the sink of input serve or serve is refused before any socket listens (with --append too): no client is let in, no socket file is left, the file it points at is left as it was", async () => {
    const { dir, shared, precious } = stickyDir();
    const sink = join(shared, "rec.wire");
    expect(Bun.spawnSync(asNobody(dir.dir, ["ln", "-s", precious, sink]), { cwd: dir.dir }).exitCode).toBe(0);
    const runs: [string[], string][] = [
      [["input", "serve", "--socket", dir.path("in.sock"), "--sink", sink], "--sink"],
      [["input", "serve", "--socket", dir.path("in.sock"), "--sink", sink, "--append"], "--sink"],
      [["serve", "--output-source", "/dev/null", "--output-socket", dir.path("out.sock"), "--input-socket", dir.path("in.sock"), "--input-sink", sink], "--input-sink"],
    ];
    for (const [args, flag] of runs) {
      const run = await runAgent(args);
      expect({ args, code: run.code }).toEqual({ args, code: 1 });
      expect(failureLine(run.stderr)).toStartWith(`audio-agent: ${flag} ${sink}: a symbolic link of another user`);
      expect(run.stderr).not.toContain("listening");
      expect(readdirSync(dir.dir).sort()).toEqual(["precious", "shared"]);
    }
    expect(readFileSync(precious, "utf8")).toBe("precious\n");
  });

  test("another user's symlink there on the way to the sink (a directory of the path) is not followed either, as the kernel's protected_symlinks does not follow it: the file it leads to is left as it was", async () => {
    const { dir, shared, precious } = stickyDir();
    // The operator's --sink /tmp/rec/rec.wire; another user made /tmp/rec first, a link to a directory of theirs
    // (outside the sticky directory) where rec.wire is their link to the file they want written over.
    const theirs = dir.path("theirs");
    mkdirSync(theirs);
    chownSync(theirs, NOBODY, NOBODY);
    const planted = Bun.spawnSync(asNobody(dir.dir, ["sh", "-c", `ln -s ${precious} ${theirs}/rec.wire && ln -s ${theirs} ${shared}/rec`]), { cwd: dir.dir });
    expect(planted.exitCode).toBe(0);
    const sink = join(shared, "rec", "rec.wire");
    const { code, stderr } = await recordAsRoot(dir, sink);
    expect(readFileSync(precious, "utf8")).toBe("precious\n");
    expect(code).toBe(1);
    expect(failureLine(stderr)).toContain(sink);
  });

  test("another user's FIFO at the sink path, replaced by that user's symlink while the agent waits for its reader: the file the symlink points at is left as it was", async () => {
    const { dir, shared, precious } = stickyDir();
    const sink = join(shared, "rec.wire");
    expect(Bun.spawnSync(asNobody(dir.dir, ["mkfifo", "-m", "0666", sink]), { cwd: dir.dir }).exitCode).toBe(0);
    const socket = dir.path("out.sock");
    const { server, feed } = await startFedServer(socket);
    const recv = spawnAgent(["output", "recv", "--socket", socket, "--sink", sink, "--count", "10"]);
    await recv.waitForStderr("waiting for a reader of the sink FIFO");
    const swap = Bun.spawnSync(asNobody(dir.dir, ["sh", "-c", `ln -s ${precious} ${sink}.new && mv -f ${sink}.new ${sink}`]), { cwd: dir.dir });
    expect(swap.exitCode).toBe(0);
    const connected = Promise.race([server.waitForStderr("client connected").then(() => true), recv.exited.then(() => false)]);
    if (await connected) await feed.send(10);
    const code = await recv.exited;
    await feed.end();
    expect(await server.exited).toBe(0);
    expect(statSync(precious).size).toBe("precious\n".length);
    expect(readFileSync(precious, "utf8")).toBe("precious\n");
    expect(code).toBe(1);
    expect(failureLine(recv.stderr)).toContain(sink);
  });

  test("the line refusing another user's file names the sink's option, and where it was set when not typed, as every other sink failure does", async () => {
    const { dir, shared } = stickyDir();
    const sink = join(shared, "rec.wire");
    expect(Bun.spawnSync(asNobody(dir.dir, ["sh", "-c", `umask 0; : >${sink}`]), { cwd: dir.dir }).exitCode).toBe(0);
    const fromEnv = await runAgent(["output", "recv", "--socket", dir.path("none.sock"), "--connect-timeout", "1"], { env: agentEnv({ AUDIO_AGENT_SINK: sink }) });
    expect(fromEnv.code).toBe(1);
    expect(failureLine(fromEnv.stderr)).toStartWith(`audio-agent: --sink (from environment AUDIO_AGENT_SINK) ${sink}: `);
    const flag = await runAgent(["input", "serve", "--socket", dir.path("in.sock"), "--sink", sink]);
    expect(flag.code).toBe(1);
    expect(failureLine(flag.stderr)).toStartWith(`audio-agent: --sink ${sink}: `);
    expect(statSync(sink).size).toBe(0);
  });

  // fs.protected_regular=2's reach: a sticky directory its group may write (1770) keeps files to their owners too.
  test("another user's file in a sticky directory its group may write (1770) is neither truncated nor written into", async () => {
    const dir = openDir("sticky-group-");
    const shared = dir.path("shared");
    mkdirSync(shared);
    chownSync(shared, 0, NOBODY); // nobody writes there through its group (gid 65534)
    chmodSync(shared, 0o1770);
    const sink = join(shared, "rec.wire");
    expect(Bun.spawnSync(asNobody(dir.dir, ["sh", "-c", `umask 0; echo theirs >${sink}`]), { cwd: dir.dir }).exitCode).toBe(0);
    const { code, stderr } = await recordAsRoot(dir, sink);
    expect(code).toBe(1);
    expect(failureLine(stderr)).toBe(`audio-agent: --sink ${sink}: a file of another user (uid ${NOBODY}) in the group-writable directory ${shared}; refusing to write through it (EACCES)`);
    expect(readFileSync(sink, "utf8")).toBe("theirs\n");
  });

  test("the agent's own symlink there to a file elsewhere that another user owns and lets it write is followed, as the kernel does: the audio is written there", async () => {
    const { dir, shared } = stickyDir();
    // Outside the sticky directory: the kernel's protected_regular judges a file by the directory it is in.
    const theirs = dir.path("theirs.wire");
    writeFileSync(theirs, "");
    chownSync(theirs, NOBODY, NOBODY);
    chmodSync(theirs, 0o666);
    const sink = join(shared, "rec.wire");
    symlinkSync(theirs, sink);
    const { code, stderr } = await recordAsRoot(dir, sink);
    expect(stderr).not.toContain("audio-agent: ");
    expect(code).toBe(0);
    expect(expectIntactInOrder(wireFileFrames(theirs).frames)).toEqual([...Array(10).keys()]);
  });

  /** A FIFO of root's outside the sticky directory (as /run/initctl), read by root; `taken()` stops its reader and gives what it read. */
  function rootsFifo(dir: { path: (name: string) => string }) {
    const fifo = dir.path("roots.fifo");
    expect(Bun.spawnSync(["mkfifo", "-m", "0600", fifo]).exitCode).toBe(0);
    const reader = Bun.spawn(["cat", fifo], { stdout: "pipe", stderr: "ignore" });
    defer(() => reader.kill("SIGKILL"));
    const read = new Response(reader.stdout).bytes();
    return {
      fifo,
      taken: async () => {
        reader.kill("SIGKILL");
        return (await read).length;
      },
    };
  }

  test("output recv: another user's symlink at the sink path to a FIFO is not followed: the FIFO's reader gets nothing", async () => {
    const { dir, shared } = stickyDir();
    const { fifo, taken } = rootsFifo(dir);
    const sink = join(shared, "rec.wire");
    expect(Bun.spawnSync(asNobody(dir.dir, ["ln", "-s", fifo, sink]), { cwd: dir.dir }).exitCode).toBe(0);
    const { code, stderr } = await recordAsRoot(dir, sink);
    expect(await taken()).toBe(0);
    expect(code).toBe(1);
    expect(failureLine(stderr)).toContain(sink);
  });

  test("input serve: another user's symlink at the sink path to a FIFO is not followed: the FIFO's reader gets nothing", async () => {
    const { dir, shared } = stickyDir();
    const { fifo, taken } = rootsFifo(dir);
    const sink = join(shared, "rec.wire");
    expect(Bun.spawnSync(asNobody(dir.dir, ["ln", "-s", fifo, sink]), { cwd: dir.dir }).exitCode).toBe(0);
    const socket = dir.path("in.sock");
    const source = dir.path("src.wire");
    await writeWireFile(source, 10);
    const server = spawnAgent(["input", "serve", "--socket", socket, "--sink", sink, "--once"]);
    if (await Promise.race([server.waitForStderr("listening socket=").then(() => true), server.exited.then(() => false)])) {
      await runAgent(["input", "send", "--socket", socket, "--source", source, "--connect-timeout", "5"]);
    }
    const code = await server.exited;
    expect(await taken()).toBe(0);
    expect(code).toBe(1);
    expect(failureLine(server.stderr)).toContain(sink);
  });

  test("another user's file at the sink path is not written into: the audio does not go to a file that user can read", async () => {
    const { dir, shared } = stickyDir();
    const sink = join(shared, "rec.wire");
    const planted = Bun.spawnSync(asNobody(dir.dir, ["sh", "-c", `umask 0; : >${sink}`]), { cwd: dir.dir });
    expect(planted.exitCode).toBe(0);
    expect(statSync(sink).uid).toBe(NOBODY);
    const { code, stderr } = await recordAsRoot(dir, sink);
    expect(statSync(sink).size).toBe(0);
    expect(code).toBe(1);
    expect(failureLine(stderr)).toContain(sink);
  });

  test("a file there with another name elsewhere (a hard link another user made where fs.protected_hardlinks is 0, the kernel's default) is not written into: the file it also is is left as it was", async () => {
    const { dir, shared, precious } = stickyDir();
    const sink = join(shared, "rec.wire");
    // Made here as root: with protected_hardlinks at 0 another user may link a root-only file, which this machine forbids.
    linkSync(precious, sink);
    const { code, stderr } = await recordAsRoot(dir, sink);
    expect(readFileSync(precious, "utf8")).toBe("precious\n");
    expect(code).toBe(1);
    expect(failureLine(stderr)).toContain(`--sink ${sink}: a file with 2 names`);
  });
});

function nonLoopbackAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return undefined;
}

async function connectTcp(host: string, port: number): Promise<string> {
  try {
    const socket = await Bun.connect({ hostname: host, port, socket: { data() {} } });
    socket.end();
    return "connected";
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}

describe("the metrics endpoint", () => {
  async function metricsPort(agent: Spawned): Promise<{ host: string; port: number }> {
    const url = new URL(await metricsUrl(agent));
    return { host: url.hostname, port: Number(url.port) };
  }

  test("--metrics PORT listens on 127.0.0.1 only; a host given explicitly is honoured", async () => {
    const dir = openDir();
    const loopback = spawnAgent(["output", "serve", "--socket", dir.path("a.sock"), "--source", "-", "--metrics", "0"], { stdin: "pipe" });
    const { host, port } = await metricsPort(loopback);
    expect(host).toBe("127.0.0.1");
    expect(listeners(port)).toEqual(["0100007F"]);
    expect((await fetch(`http://127.0.0.1:${port}/metrics`)).status).toBe(200);
    const outside = nonLoopbackAddress();
    if (outside) expect(await connectTcp(outside, port)).toBe("ECONNREFUSED");

    // The check can tell: all addresses when asked for.
    const everywhere = spawnAgent(["output", "serve", "--socket", dir.path("b.sock"), "--source", "-", "--metrics", "0.0.0.0:0"], { stdin: "pipe" });
    const wide = await metricsPort(everywhere);
    expect(listeners(wide.port)).toEqual(["00000000"]);
    if (outside) expect(await connectTcp(outside, wide.port)).toBe("connected");

    for (const agent of [loopback, everywhere]) {
      agent.kill("SIGTERM");
      expect(await agent.exited).toBe(0);
    }
  });
});
