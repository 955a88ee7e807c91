/**
 * The socket file stays ours, on spawned agents: a stopping agent removes
 * only the socket it bound (not one a second agent bound at the same path
 * after the first one's file was moved away), a symlink at the path is
 * refused and never followed, the socket never exists with a wider mode
 * than --socket-mode (the mode each bind creates is read from the system
 * calls the agent makes, traced with strace), and a killed agent's socket
 * is cleaned up whole by the next one, its path removed by hand or not.
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, statSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { failureLine } from "../support/agent-log.ts";
import { useCleanup } from "../support/cleanup.ts";
import { asNobody, canSwitchUser, NOBODY } from "../support/nobody.ts";
import { startFedServer } from "../support/feeder.ts";
import { expectIntactInOrder } from "../support/payloads.ts";
import { RecordingClient } from "../support/peer.ts";
import { AGENT, agentEnv, makeStaleSocket, spawnAgent, spawnListener, stopAgents } from "../support/processes.ts";
import { agentWithQueue, signalTwice } from "../support/queued-agent.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

function setup() {
  const dir = socketDir(defer, "own-");
  defer(stopAgents);
  return dir;
}

describe("a stopping agent removes only its own socket", () => {
  test("the first agent's file moved away, a second one listening at the path: the first stopping leaves the second's socket", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    const first = await startFedServer(path);
    renameSync(path, dir.path("moved.sock"));
    const second = await startFedServer(path);
    const theirs = lstatSync(path).ino;

    first.server.kill("SIGTERM");
    expect(await first.server.exited).toBe(0);
    expect(lstatSync(path).isSocket()).toBe(true);
    expect(lstatSync(path).ino).toBe(theirs);

    // The second agent still serves at the path.
    const client = await RecordingClient.connect(path);
    defer(() => client.close());
    await second.server.waitForStderr("client connected");
    await second.feed.send(50);
    await until(() => client.frames.length === 50, "50 frames from the second agent");
    expect(expectIntactInOrder(client.frames)).toEqual([...Array(50).keys()]);
    await second.feed.end();
    expect(await second.server.exited).toBe(0);
    expect(existsSync(path)).toBe(false);
  });

  test("a killed agent's socket (and the hidden name it was bound by) is removed whole by the next agent", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    const killed = await startFedServer(path);
    const left = readdirSync(dir.dir).sort();
    expect(left.length).toBe(2);
    killed.server.kill("SIGKILL");
    await killed.server.exited;
    expect(readdirSync(dir.dir).sort()).toEqual(left);

    const next = await startFedServer(path);
    expect(next.server.stderr).toContain("removed stale socket");
    const now = readdirSync(dir.dir).sort();
    expect(now.length).toBe(2);
    expect(now.filter((name) => left.includes(name))).toEqual(["out.sock"]);
    await next.feed.end();
    expect(await next.server.exited).toBe(0);
    expect(readdirSync(dir.dir)).toEqual([]);
  });
});

describe("hidden names left by killed agents whose path was removed by hand", () => {
  /** What each name in the directory is: "socket", "file", "directory", "symlink". */
  function kinds(dir: string): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of readdirSync(dir)) {
      const stat = lstatSync(`${dir}/${name}`);
      out[name] = stat.isSocket() ? "socket" : stat.isSymbolicLink() ? "symlink" : stat.isDirectory() ? "directory" : "file";
    }
    return out;
  }

  test("killed and its path removed by hand, again and again: each next agent removes the hidden names left behind, and leaves every look-alike that is not one", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    const hiddenNames = () => readdirSync(dir.dir).filter((name) => name.startsWith(".out.sock."));
    // Each agent killed, and its path removed by hand: its hidden name stays, until the next agent starts.
    for (let i = 1; i <= 3; i++) {
      const agent = await startFedServer(path);
      expect(hiddenNames().length).toBe(1);
      if (i > 1) expect(agent.server.stderr).toMatch(new RegExp(`removed stale hidden socket names socket=${path} count=1\n`));
      agent.server.kill("SIGKILL");
      await agent.server.exited;
      unlinkSync(path);
    }
    // Two more stale sockets by the agent's pattern for this path, beside the last one killed.
    await makeStaleSocket(dir.path(".out.sock.k1llme00"));
    await makeStaleSocket(dir.path(".out.sock.zz9plz99"));
    const stale = hiddenNames();
    expect(stale.length).toBe(3);

    // Look-alikes that are not stale hidden names of this path: none may go.
    writeFileSync(dir.path(".out.sock.file0000"), "precious\n");
    mkdirSync(dir.path(".out.sock.dir00000"));
    await makeStaleSocket(dir.path("elsewhere.sock"));
    symlinkSync(dir.path("elsewhere.sock"), dir.path(".out.sock.link0000"));
    symlinkSync(dir.path("nowhere.sock"), dir.path(".out.sock.link0001"));
    const live = await spawnListener(dir.path(".out.sock.live0000"));
    defer(live.kill);
    for (const name of [".out.sock.ABCDEFGH", ".out.sock.abc", ".out.sock.abcdefghi", ".out.sock.abcd-fgh", "out.sock.abcdefgh", ".other.sock.abcdefgh", ".abcdefgh"]) {
      await makeStaleSocket(dir.path(name));
    }
    // Another user's socket by the very pattern: not one this agent could have bound.
    const othersUser = process.getuid?.() === 0;
    if (othersUser) {
      await makeStaleSocket(dir.path(".out.sock.nobody00"));
      chownSync(dir.path(".out.sock.nobody00"), NOBODY, NOBODY);
    }
    const lookAlikes = kinds(dir.dir);
    for (const name of stale) delete lookAlikes[name];

    const next = await startFedServer(path);
    expect(next.server.stderr).toMatch(new RegExp(`removed stale hidden socket names socket=${path} count=3\n`));
    expect(next.server.stderr).not.toContain("removed stale socket ");
    const now = kinds(dir.dir);
    for (const name of stale) expect(now[name]).toBeUndefined();
    // Left as they were: the look-alikes, and the new agent's own two names.
    const own = Object.keys(now).filter((name) => !(name in lookAlikes));
    expect(own.sort()).toEqual([own.find((name) => name.startsWith(".out.sock."))!, "out.sock"].sort());
    expect(Object.fromEntries(Object.entries(now).filter(([name]) => name in lookAlikes))).toEqual(lookAlikes);
    expect(readFileSync(dir.path(".out.sock.file0000"), "utf8")).toBe("precious\n");
    expect(readlinkSync(dir.path(".out.sock.link0000"))).toBe(dir.path("elsewhere.sock"));
    if (othersUser) expect(lstatSync(dir.path(".out.sock.nobody00")).uid).toBe(NOBODY);
    // The live one still answers.
    const client = await Bun.connect({ unix: dir.path(".out.sock.live0000"), socket: { data() {} } });
    client.end();

    await next.feed.end();
    expect(await next.server.exited).toBe(0);
    expect(Object.keys(kinds(dir.dir)).sort()).toEqual(Object.keys(lookAlikes).sort());
  });
});

describe("a live agent whose path was removed by hand", () => {
  test("the next agent at that path neither removes nor probes its hidden name: a probe would have become its new client, and its client is served on", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    const first = await startFedServer(path);
    const client = await RecordingClient.connect(path);
    defer(() => client.close());
    await first.server.waitForStderr("client connected");
    const [hidden] = readdirSync(dir.dir).filter((name) => name.startsWith(".out.sock."));
    unlinkSync(path);

    const second = await startFedServer(path);
    expect(second.server.stderr).not.toContain("removed stale hidden socket names");
    expect(lstatSync(dir.path(hidden!)).isSocket()).toBe(true);
    // The first agent's client is still its client: it gets what the first agent sends next.
    await first.feed.send(50);
    await until(() => client.frames.length === 50 || client.isClosed, "50 frames from the first agent");
    expect(client.isClosed).toBe(false);
    expect(expectIntactInOrder(client.frames)).toEqual([...Array(50).keys()]);
    expect(first.server.stderr.split("client connected").length - 1).toBe(1);

    await first.feed.end();
    await second.feed.end();
    expect(await first.server.exited).toBe(0);
    expect(await second.server.exited).toBe(0);
    expect(readdirSync(dir.dir)).toEqual([]);
  });
});

describe("an agent that exits at once removes only its own socket", () => {
  // A second signal exits without waiting for stop(): the socket file is removed on the way out
  // instead, and that must leave alone a socket that is no longer the agent's, as stop() does.
  test("its file replaced by another process's socket, then SIGTERM twice: it exits with 143, the other socket is still at the path and answers, the agent's hidden name is gone", async () => {
    const dir = setup();
    const path = dir.path("out.sock");
    // After the first signal the agent is still writing out its queue.
    const server = await agentWithQueue(defer, dir, path);
    // Another process's socket at the path now (here the test's own): the agent's file is gone.
    unlinkSync(path);
    let accepted = 0;
    const other = Bun.listen({ unix: path, socket: { open: () => void accepted++, data() {} } });
    defer(() => other.stop(true));
    const theirs = lstatSync(path).ino;
    await signalTwice(server, "SIGTERM");
    // 143: the second signal's exit, which stop() never reached.
    expect(await server.exited).toBe(143);
    expect(lstatSync(path).isSocket()).toBe(true);
    expect(lstatSync(path).ino).toBe(theirs);
    expect(readdirSync(dir.dir).sort()).toEqual(["out.sock", "queued.wire"]);
    const client = await Bun.connect({ unix: path, socket: { data() {} } });
    defer(() => client.end());
    await until(() => accepted === 1, "the other socket to accept a client");
  });
});

describe("a symlink at the socket path", () => {
  for (const [what, target] of [
    ["to a file", "precious.txt"],
    ["to nothing", "nowhere.sock"],
  ] as const) {
    test(`${what}: refused (exit 2, naming it), not followed, left as it was`, async () => {
      const dir = setup();
      const path = dir.path("out.sock");
      const aim = dir.path(target);
      if (target === "precious.txt") writeFileSync(aim, "precious\n");
      symlinkSync(aim, path);
      const agent = spawnAgent(["output", "serve", "--socket", path, "--source", "-"], { stdin: "pipe" });
      expect(await agent.exited).toBe(2);
      expect(failureLine(agent.stderr)).toBe(`audio-agent: --socket: socket path ${path} is a symbolic link; refusing to follow or replace it`);
      expect(lstatSync(path).isSymbolicLink()).toBe(true);
      expect(readlinkSync(path)).toBe(aim);
      if (target === "precious.txt") expect(readFileSync(aim, "utf8")).toBe("precious\n");
      else expect(existsSync(aim)).toBe(false);
      expect(readdirSync(dir.dir).sort()).toEqual(target === "precious.txt" ? ["out.sock", "precious.txt"] : ["out.sock"]);
    });
  }
});

const STRACE = Bun.which("strace");

/**
 * The mode of every socket file the traced agent's bind() calls created in
 * `dir`: 0777 less the umask in force at that moment (umask is per process,
 * shared by its threads, so one running value follows the whole trace).
 */
function boundModes(trace: string, dir: string, initialUmask: number): { name: string; mode: number }[] {
  let umask = initialUmask;
  const bound: { name: string; mode: number }[] = [];
  for (const line of trace.split("\n")) {
    const set = /\bumask\((0?[0-7]+)\)/.exec(line);
    if (set) umask = parseInt(set[1]!, 8);
    const bind = /\bbind\(\d+, \{sa_family=AF_UNIX, sun_path="([^"]+)"\}/.exec(line);
    if (bind && bind[1]!.startsWith(dir + "/")) bound.push({ name: bind[1]!, mode: 0o777 & ~umask });
  }
  return bound;
}

describe("the socket's mode from the moment it exists", () => {
  test("bind creates the socket with --socket-mode at most, even under umask 000", async () => {
    if (!STRACE) throw new Error("strace is missing: this test traces the agent's bind() (.ci/run installs it: apt-get install strace)");
    const dir = setup();
    for (const mode of [0o600, 0o660]) {
      const path = dir.path(`m${mode.toString(8)}.sock`);
      const trace = dir.path(`m${mode.toString(8)}.trace`);
      const previous = process.umask(0);
      let proc;
      try {
        proc = Bun.spawn(
          [STRACE, "-f", "-qq", "-e", "trace=umask,bind", "-o", trace, ...AGENT, "output", "serve", "--socket", path, "--source", "-", "--socket-mode", `0${mode.toString(8)}`],
          { cwd: dir.dir, env: agentEnv(), stdin: "pipe", stdout: "ignore", stderr: "pipe" },
        );
      } finally {
        process.umask(previous);
      }
      defer(() => proc.kill("SIGKILL"));
      await until(() => existsSync(path), "the socket", 30_000);
      expect(lstatSync(path).mode & 0o777).toBe(mode);
      (proc.stdin as import("bun").FileSink).end();
      expect(await proc.exited).toBe(0);
      const binds = boundModes(readFileSync(trace, "utf8"), dir.dir, 0);
      expect(binds.length).toBe(1);
      expect((binds[0]!.mode & ~mode).toString(8)).toBe("0");
    }
  }, 60_000);
});

describe.skipIf(!canSwitchUser)("a socket directory another user may write (a clients' group's)", () => {
  test("the hidden name replaced by that user's symlink between bind and chmod: the file it points at keeps its mode, and no symlink is put at the path", async () => {
    if (!STRACE) throw new Error("strace is missing: this test traces the agent's bind() (.ci/run installs it: apt-get install strace)");
    const dir = setup();
    chmodSync(dir.dir, 0o755);
    const shared = dir.path("shared");
    mkdirSync(shared);
    chownSync(shared, 0, NOBODY);
    chmodSync(shared, 0o770);
    const precious = dir.path("precious");
    writeFileSync(precious, "precious\n");
    chmodSync(precious, 0o600);
    const path = `${shared}/out.sock`;
    // The chmod of the hidden name is held up for 3 s (strace's fault injection), so that the other
    // user's rename lands in the window every time rather than once in a while.
    const proc = Bun.spawn(
      [STRACE, "-f", "-qq", "-o", "/dev/null", "-e", "trace=chmod,fchmodat", "-e", "inject=chmod,fchmodat:delay_enter=3000000", ...AGENT, "output", "serve", "--socket", path, "--source", "-", "--socket-mode", "0666"],
      { cwd: dir.dir, env: agentEnv(), stdin: "pipe", stdout: "ignore", stderr: "pipe" },
    );
    defer(() => proc.kill("SIGKILL"));
    let hidden = "";
    await until(() => (hidden = readdirSync(shared).find((name) => name.startsWith(".out.sock.")) ?? "") !== "", "the hidden name", 30_000);
    const swap = Bun.spawnSync(asNobody(dir.dir, ["sh", "-c", `ln -s ${precious} ${shared}/planted && mv -f ${shared}/planted ${shared}/${hidden}`]), { cwd: dir.dir });
    expect(swap.exitCode).toBe(0);
    expect(lstatSync(`${shared}/${hidden}`).isSymbolicLink()).toBe(true);
    const stderr = new Response(proc.stderr).text();
    // Listening, or refusing: either way once the held-up chmod has returned.
    await until(async () => (await Promise.race([stderr.then(() => true), Bun.sleep(50).then(() => false)])) || existsSync(path), "the agent past its chmod", 30_000);
    expect((statSync(precious).mode & 0o777).toString(8)).toBe("600");
    expect(lstatSync(path, { throwIfNoEntry: false })?.isSymbolicLink() ?? false).toBe(false);
    (proc.stdin as import("bun").FileSink).end();
    await proc.exited;
  }, 60_000);
});
