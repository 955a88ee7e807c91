/**
 * Who of this machine's users the monitor plays the audio to: those who may
 * connect to the agent's socket (its file's mode, owner and group, as the
 * kernel judges a connect) and root. Each request is made by a process of
 * another user (setpriv, so these tests need root); the agent tells them
 * apart by asking the kernel who owns the peer's socket (sock_diag).
 * /metrics and /healthz stay open to all, as a scraper of another user
 * needs them.
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, chownSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { SOCK_DGRAM, SOCK_STREAM } from "../../src/io/libc.ts";
import { type Endpoint, localPeerUid, peerLookupUnavailable, peerUidFromTable, socketDiagnosticsMissing } from "../../src/observe/local-peer.ts";
import { connectAndReset } from "../support/blocking-client.ts";
import { bindSocket } from "../support/bound-socket.ts";
import { useCleanup } from "../support/cleanup.ts";
import { canUnshare, ipv6Loopback } from "../support/machine.ts";
import { asUser, canSwitchUser, NOBODY } from "../support/nobody.ts";
import { fdCount } from "../support/proc.ts";
import { AGENT, agentEnv, BUN, type Result, spawnAgent, type Spawned, start, stopAgents } from "../support/processes.ts";
import { closeConnections, queueConnections } from "../support/queued-connections.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();
if (!canSwitchUser) console.warn("monitor audience tests skipped: they need root and setpriv (util-linux)");

/** A uid no account has: no primary group, no group lists it. */
const STRANGER = 4321;
const MONITOR_PATHS = ["/", "/monitor", "/figures", "/ws"];
const OPEN_PATHS = ["/metrics", "/healthz"];

/** `output serve` with --metrics and --monitor on one loopback port (run by `prefix`, e.g. setpriv), its socket at `socket`; resolves with it and its port. */
async function agentWithMonitor(extra: string[] = [], prefix: string[] = [], listen = "127.0.0.1:0", socket = socketDir(defer, "aud-").path("out.sock")): Promise<{ agent: Spawned; port: number }> {
  defer(stopAgents);
  const args = ["output", "serve", "--socket", socket, "--source", "-", "--realtime", "--metrics", listen, "--monitor", listen, ...extra];
  const agent = prefix.length === 0 ? spawnAgent(args, { stdin: "pipe" }) : start([...prefix, ...AGENT, ...args], { stdin: "pipe", env: agentEnv(), timeoutMs: 120_000 });
  await agent.waitForStderr(/http listening url=http/);
  const port = Number(new URL(/http listening url=(\S+)/.exec(agent.stderr)![1]!).port);
  return { agent, port };
}

/**
 * The status of GET `path` on each of `paths` at host:port, asked by a
 * process of `uid` (its own group `uid`, no others), each on a connection of
 * its own (by hand: fetch takes no link-local address's interface).
 */
async function statusesAs(uid: number, port: number, paths: string[], host = "127.0.0.1"): Promise<Record<string, number>> {
  const dir = socketDir(defer, "aud-client-");
  const script = `
    const out = {};
    for (const path of process.env.PATHS.split(" ")) {
      let answer = "";
      await new Promise((closed, failed) => Bun.connect({
        hostname: process.env.HOST,
        port: Number(process.env.PORT),
        socket: {
          open: (s) => void s.write("GET " + path + " HTTP/1.1\\r\\nHost: localhost:" + process.env.PORT + "\\r\\nConnection: close\\r\\n\\r\\n"),
          data: (s, chunk) => void (answer += chunk),
          close: closed,
        },
      }).catch(failed));
      out[path] = Number(/^HTTP\\/1\\.1 (\\d+)/.exec(answer)?.[1]);
    }
    console.log(JSON.stringify(out));`;
  const child = start(asUser(uid, uid, dir.dir, [BUN, "-e", script]), {
    cwd: dir.dir,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOST: host, PORT: String(port), PATHS: paths.join(" ") },
  });
  const result = await child.done;
  expect(result.stderr).toBe("");
  return JSON.parse(result.stdout) as Record<string, number>;
}

/** `script` run by Bun as `uid` (its own group `uid`, no others) in `dir`, to its end. */
function bunAs(uid: number, dir: string, script: string): Promise<Result> {
  return start(asUser(uid, uid, dir, [BUN, "-e", script]), { cwd: dir, env: { PATH: process.env.PATH ?? "/usr/bin:/bin" } }).done;
}

/** A TCP listener at `hostname` that judges each peer with `lookUp` (-1: no one) as it connects, and ends it. */
function judgingListener(hostname: string, lookUp: typeof localPeerUid): { port: number; seen: number[] } {
  const seen: number[] = [];
  const listener = Bun.listen<undefined>({
    hostname,
    port: 0,
    socket: {
      open: (s) => {
        seen.push(lookUp({ address: s.remoteAddress, port: s.remotePort }, { address: s.localAddress, port: s.localPort }) ?? -1);
        s.end();
      },
      data() {},
    },
  });
  defer(() => listener.stop(true));
  return { port: listener.port, seen };
}

/**
 * Runs `script`, a listener that says "port N" on stderr, prints its look-ups on stdout and exits,
 * as `BUN listen.ts` after `prefix` (a namespace of its own), connects to it as each of `uids` in
 * turn, and returns what it printed; its stderr must hold nothing else.
 */
async function lookUpsOf(dir: ReturnType<typeof socketDir>, prefix: string[], script: string, uids: number[]): Promise<unknown> {
  writeFileSync(dir.path("listen.ts"), script);
  const inside = start([...prefix, BUN, dir.path("listen.ts")], { cwd: dir.dir, timeoutMs: 30_000 });
  defer(() => inside.kill("SIGKILL"));
  await inside.waitForStderr(/port \d+/);
  const port = Number(/port (\d+)/.exec(inside.stderr)![1]);
  for (const uid of uids) {
    await bunAs(uid, dir.dir, `await new Promise((done) => Bun.connect({ hostname: "127.0.0.1", port: ${port}, socket: { data() {}, close: done } }));`);
  }
  const result = await inside.done;
  expect(result.stderr.replace(/^port \d+\n/, "")).toBe("");
  return JSON.parse(result.stdout);
}

const all = (paths: string[], status: number) => Object.fromEntries(paths.map((p) => [p, status]));
/** The loopback addresses this machine has: ::1 only where IPv6 is on. */
const LOOPBACKS = ["127.0.0.1", ...(ipv6Loopback ? ["::1"] : [])];

describe.skipIf(!canSwitchUser)("the monitor's audience", () => {
  test("default 0660, agent root: root is served everything; nobody and a uid of no account get 403 on the monitor's paths, 200 on /metrics and /healthz", async () => {
    const { port } = await agentWithMonitor();
    expect(await statusesAs(0, port, ["/", "/figures", ...OPEN_PATHS])).toEqual(all(["/", "/figures", ...OPEN_PATHS], 200));
    for (const uid of [NOBODY, STRANGER]) {
      expect([uid, await statusesAs(uid, port, [...MONITOR_PATHS, ...OPEN_PATHS])]).toEqual([uid, { ...all(MONITOR_PATHS, 403), ...all(OPEN_PATHS, 200) }]);
    }
  });

  test("--socket-mode 0666 lets every user connect, so every user is served the monitor", async () => {
    const { port } = await agentWithMonitor(["--socket-mode", "0666"]);
    for (const uid of [NOBODY, STRANGER]) expect([uid, await statusesAs(uid, port, ["/", "/figures"])]).toEqual([uid, all(["/", "/figures"], 200)]);
  });

  test("a chmod of the socket file while the agent runs moves the audience with it: wider lets others in, narrower again keeps them out", async () => {
    const dir = socketDir(defer, "aud-chmod-");
    const { agent, port } = await agentWithMonitor([], [], "127.0.0.1:0", dir.path("out.sock"));
    await agent.waitForStderr(/listening socket=/);
    expect(await statusesAs(NOBODY, port, ["/figures"])).toEqual({ "/figures": 403 });
    chmodSync(dir.path("out.sock"), 0o666);
    expect(await statusesAs(NOBODY, port, ["/figures", "/"])).toEqual(all(["/figures", "/"], 200));
    chmodSync(dir.path("out.sock"), 0o660);
    expect(await statusesAs(NOBODY, port, ["/figures", "/"])).toEqual(all(["/figures", "/"], 403));
  });

  test("a client role, which makes no socket, is judged as the default 0660 would be: root and the agent's group are served, others are not", async () => {
    // output recv of a server that never comes, run as root with nobody's group (nogroup), nobody's primary group.
    defer(stopAgents);
    const dir = socketDir(defer, "aud-client-");
    const args = ["output", "recv", "--socket", dir.path("none.sock"), "--sink", "/dev/null", "--monitor", "127.0.0.1:0", "--metrics", "127.0.0.1:0"];
    const agent = start(["setpriv", `--regid=${NOBODY}`, "--clear-groups", "--", ...AGENT, ...args], { env: agentEnv(), timeoutMs: 120_000 });
    await agent.waitForStderr(/http listening url=http/);
    const port = Number(new URL(/http listening url=(\S+)/.exec(agent.stderr)![1]!).port);
    expect(await statusesAs(0, port, ["/figures"])).toEqual({ "/figures": 200 });
    expect(await statusesAs(NOBODY, port, ["/figures"])).toEqual({ "/figures": 200 });
    expect(await statusesAs(STRANGER, port, [...MONITOR_PATHS, ...OPEN_PATHS])).toEqual({ ...all(MONITOR_PATHS, 403), ...all(OPEN_PATHS, 200) });
  });

  test("a member of the agent's group (by /etc/passwd) is served with 0660, not with 0600; others are not", async () => {
    // The agent as root with nobody's group (nogroup), which /etc/passwd gives nobody as its primary group.
    const asGroup = ["setpriv", `--regid=${NOBODY}`, "--clear-groups", "--"];
    const member = await agentWithMonitor([], asGroup);
    expect(await statusesAs(NOBODY, member.port, ["/figures"])).toEqual({ "/figures": 200 });
    expect(await statusesAs(STRANGER, member.port, ["/figures"])).toEqual({ "/figures": 403 });
    const ownerOnly = await agentWithMonitor(["--socket-mode", "0600"], asGroup);
    expect(await statusesAs(NOBODY, ownerOnly.port, ["/figures"])).toEqual({ "/figures": 403 });
    expect(await statusesAs(0, ownerOnly.port, ["/figures"])).toEqual({ "/figures": 200 });
  });

  test("the socket's group is its file's: in a setgid directory, the directory's group (whose members connect) is served, the agent's own group (whose members cannot) is not", async () => {
    const asGroup = ["setpriv", `--regid=${NOBODY}`, "--clear-groups", "--"];
    for (const [dirGroup, agentPrefix, nobodyStatus] of [
      [NOBODY, [], 200],
      [0, asGroup, 403],
    ] as const) {
      const dir = socketDir(defer, "aud-setgid-");
      chownSync(dir.dir, 0, dirGroup);
      chmodSync(dir.dir, 0o2775);
      const { agent, port } = await agentWithMonitor([], [...agentPrefix], "127.0.0.1:0", dir.path("out.sock"));
      await agent.waitForStderr(/listening socket=/);
      expect([dirGroup, lstatSync(dir.path("out.sock")).gid]).toEqual([dirGroup, dirGroup]);
      // What the kernel says, then what the monitor does.
      const connect = `await Bun.connect({ unix: ${JSON.stringify(dir.path("out.sock"))}, socket: { data() {}, open: (s) => s.end() } }).then(() => console.log("connected"), (e) => console.log(e.code))`;
      const probe = await bunAs(NOBODY, dir.dir, connect);
      expect([dirGroup, probe.stdout.trim()]).toEqual([dirGroup, nobodyStatus === 200 ? "connected" : "EACCES"]);
      expect([dirGroup, await statusesAs(NOBODY, port, ["/figures"])]).toEqual([dirGroup, { "/figures": nobodyStatus }]);
    }
  });

  test.skipIf(!canUnshare("--user"))("in a user namespace that maps only some users (systemd's PrivateUsers=yes), a user it leaves out, whom the kernel names by the overflow uid (nobody's), is not taken for nobody", async () => {
    // The agent as root of group nogroup, in a namespace that maps only root and that group: a stranger's connections are named 65534.
    const dir = socketDir(defer, "aud-userns-");
    const go = dir.path("mapped");
    const inside = ["setpriv", `--regid=${NOBODY}`, "--clear-groups", "--", "unshare", "--user", "--", "sh", "-c", `while [ ! -e ${go} ]; do sleep 0.02; done; exec "$@"`, "sh"];
    defer(stopAgents);
    // On a wildcard bind: a peer the kernel names no one is refused at every address of this machine.
    const wildcard = ipv6Loopback ? "[::]:0" : "0.0.0.0:0";
    const args = ["output", "serve", "--socket", dir.path("out.sock"), "--source", "-", "--realtime", "--monitor", wildcard, "--metrics", wildcard];
    const agent = start([...inside, ...AGENT, ...args], { stdin: "pipe", env: agentEnv() });
    // unshare runs in the process it was started as: its maps are written once it is in its namespace.
    while (readlinkSync(`/proc/${agent.pid}/ns/user`) === readlinkSync("/proc/self/ns/user")) await Bun.sleep(10);
    writeFileSync(`/proc/${agent.pid}/uid_map`, "0 0 1\n");
    writeFileSync(`/proc/${agent.pid}/gid_map`, `0 0 1\n${NOBODY} ${NOBODY} 1\n`);
    writeFileSync(go, "");
    await agent.waitForStderr(/http listening url=http/);
    const port = Number(new URL(/http listening url=(\S+)/.exec(agent.stderr)![1]!).port);
    await agent.waitForStderr(/listening socket=/);
    const connect = `await Bun.connect({ unix: ${JSON.stringify(dir.path("out.sock"))}, socket: { data() {}, open: (s) => s.end() } }).then(() => console.log("connected"), (e) => console.log(e.code))`;
    chmodSync(dir.dir, 0o755);
    const probe = await bunAs(STRANGER, dir.dir, connect);
    expect(probe.stdout.trim()).toBe("EACCES");
    for (const host of [...LOOPBACKS, ...ownOtherAddresses()]) {
      expect([host, await statusesAs(STRANGER, port, ["/figures", "/metrics"], host)]).toEqual([host, { "/figures": 403, "/metrics": 200 }]);
      expect([host, await statusesAs(0, port, ["/figures"], host)]).toEqual([host, { "/figures": 200 }]);
    }
  });

  test("the socket file removed, or replaced by another socket of the agent's user with a wider mode, widens nothing: the audience is judged by the socket the agent bound, as bound", async () => {
    const dir = socketDir(defer, "aud-gone-");
    const { agent, port } = await agentWithMonitor([], [], "127.0.0.1:0", dir.path("out.sock"));
    await agent.waitForStderr(/listening socket=/);
    expect(await statusesAs(NOBODY, port, ["/figures"])).toEqual({ "/figures": 403 });
    unlinkSync(dir.path("out.sock"));
    expect(await statusesAs(NOBODY, port, ["/figures"])).toEqual({ "/figures": 403 });
    // Another server of the same user (root) at the path, open to all: not the agent's socket. Bound
    // aside and moved in: the agent puts a removed socket file back at its next look (its sampler ticks each second).
    const other = Bun.listen<undefined>({ unix: dir.path("other.sock"), socket: { data() {} } });
    defer(() => other.stop(true));
    chmodSync(dir.path("other.sock"), 0o666);
    renameSync(dir.path("other.sock"), dir.path("out.sock"));
    expect(await statusesAs(NOBODY, port, ["/figures", "/metrics"])).toEqual({ "/figures": 403, "/metrics": 200 });
    expect(await statusesAs(0, port, ["/figures"])).toEqual({ "/figures": 200 });
  });

  test("in serve, a user must be let in by both channels' sockets", async () => {
    const dir = socketDir(defer, "aud-serve-");
    defer(stopAgents);
    const agent = spawnAgent(
      ["serve", "--output-socket", dir.path("o.sock"), "--output-source", "-", "--output-realtime", "--output-socket-mode", "0666",
        "--input-socket", dir.path("i.sock"), "--input-sink", dir.path("in.wire"), "--input-socket-mode", "0660", "--monitor", "127.0.0.1:0"],
      { stdin: "pipe" },
    );
    await agent.waitForStderr(/http listening url=http/);
    const port = Number(new URL(/http listening url=(\S+)/.exec(agent.stderr)![1]!).port);
    expect(await statusesAs(NOBODY, port, ["/figures"])).toEqual({ "/figures": 403 });
    expect(await statusesAs(0, port, ["/figures"])).toEqual({ "/figures": 200 });
  });

  test("on IPv6 loopback and on a wildcard bind reached at a loopback address, a local user is told apart the same way", async () => {
    const binds = [["0.0.0.0:0", "127.0.0.1"], ...(ipv6Loopback ? [["[::1]:0", "::1"], ["[::]:0", "127.0.0.1"], ["[::]:0", "::1"]] : [])] as const;
    for (const [listen, host] of binds) {
      const { agent, port } = await agentWithMonitor([], [], listen);
      expect([listen, host, await statusesAs(NOBODY, port, ["/figures", "/metrics"], host)]).toEqual([listen, host, { "/figures": 403, "/metrics": 200 }]);
      expect([listen, host, await statusesAs(0, port, ["/figures"], host)]).toEqual([listen, host, { "/figures": 200 }]);
      agent.kill("SIGKILL");
      await agent.exited;
    }
  });
});

/** This machine's addresses other than loopback (IPv6 ones where it has IPv6), a link-local one with its interface (fe80::1%eth0). */
function ownOtherAddresses(): string[] {
  return Object.entries(networkInterfaces()).flatMap(([name, list]) =>
    (list ?? []).filter((a) => !a.internal && (ipv6Loopback || a.family === "IPv4")).map((a) => (a.family === "IPv6" && /^fe[89ab]/i.test(a.address) ? `${a.address}%${name}` : a.address)),
  );
}

describe.skipIf(!canSwitchUser || ownOtherAddresses().length === 0)("the monitor's audience at the machine's other addresses", () => {
  test("on a wildcard bind reached at the machine's own other addresses (link-local among them, whose sockets are bound to their interface), a local user is told apart the same way", async () => {
    const { port } = await agentWithMonitor([], [], ipv6Loopback ? "[::]:0" : "0.0.0.0:0");
    for (const host of ownOtherAddresses()) {
      expect([host, await statusesAs(NOBODY, port, ["/figures", "/metrics"], host)]).toEqual([host, { "/figures": 403, "/metrics": 200 }]);
      expect([host, await statusesAs(0, port, ["/figures"], host)]).toEqual([host, { "/figures": 200 }]);
    }
  });
});

describe.skipIf(!canSwitchUser)("the servers behind the port", () => {
  const ownDirectories = () => readdirSync(tmpdir()).filter((name) => name.startsWith("audio-agent-http-"));

  test("listen in a directory only the agent's user may enter (no one else reaches them past the front), removed at exit; one a killed agent left is removed at the next start, another user's of that name is not", async () => {
    const before = new Set(ownDirectories());
    const first = await agentWithMonitor();
    const made = ownDirectories().filter((name) => !before.has(name) && name.startsWith(`audio-agent-http-${first.agent.proc.pid}-`));
    expect(made.length).toBe(1);
    const dir = join(tmpdir(), made[0]!);
    expect(lstatSync(dir).mode & 0o777).toBe(0o700);
    expect(readdirSync(dir).sort()).toEqual(["all", "outsiders"]);
    // nobody cannot reach a server without the front.
    const probe = await bunAs(NOBODY, "/tmp", `await Bun.connect({ unix: ${JSON.stringify(join(dir, "all"))}, socket: { data() {} } }).then(() => console.log("connected"), (e) => console.log(e.code))`);
    expect(probe.stdout.trim()).toBe("EACCES");

    first.agent.kill("SIGKILL");
    await first.agent.exited;
    expect(lstatSync(dir).isDirectory()).toBe(true);
    // A directory of that name kept by a live process is not the killed agent's to take.
    const keeper = start(["sleep", "60"]);
    const kept = join(tmpdir(), `audio-agent-http-${keeper.proc.pid}-kept`);
    mkdirSync(kept, { mode: 0o700 });
    defer(() => Bun.spawnSync(["rm", "-rf", kept]));
    // One of the killed agent's name that another user made (with a file of theirs in it) is not the agent's to remove.
    const theirs = join(tmpdir(), `audio-agent-http-${first.agent.proc.pid}-theirs`);
    mkdirSync(theirs, { mode: 0o700 });
    writeFileSync(join(theirs, "file"), "theirs\n");
    chownSync(theirs, NOBODY, NOBODY);
    chownSync(join(theirs, "file"), NOBODY, NOBODY);
    defer(() => Bun.spawnSync(["rm", "-rf", theirs]));

    const second = await agentWithMonitor();
    expect(() => lstatSync(dir)).toThrow();
    expect(lstatSync(kept).isDirectory()).toBe(true);
    expect(readFileSync(join(theirs, "file"), "utf8")).toBe("theirs\n");
    second.agent.kill("SIGTERM");
    await second.agent.exited;
    expect(ownDirectories().filter((name) => name.startsWith(`audio-agent-http-${second.agent.proc.pid}-`))).toEqual([]);
  });

  test("a left-behind directory whose pid is gone but whose server still answers (an agent in another pid namespace sharing TMPDIR) is left to it", async () => {
    const tmp = socketDir(defer, "aud-tmp-");
    // A pid no process has now, as another pid namespace's agent's can be here.
    const gone = Bun.spawnSync(["true"]).pid;
    const live = join(tmp.dir, `audio-agent-http-${gone}-live`);
    mkdirSync(live, { mode: 0o700 });
    const server = Bun.listen<undefined>({ unix: join(live, "all"), socket: { open: (s) => void s.end("still here\n"), data() {} } });
    defer(() => server.stop(true));
    defer(stopAgents);
    const agent = spawnAgent(["output", "serve", "--socket", tmp.path("out.sock"), "--source", "-", "--monitor", "127.0.0.1:0"], { stdin: "pipe", env: agentEnv({ TMPDIR: tmp.dir }) });
    await agent.waitForStderr(/http listening url=http/);
    let answer = "";
    await new Promise<void>((closed, failed) => void Bun.connect({ unix: join(live, "all"), socket: { data: (_, chunk) => void (answer += chunk), close: () => closed() } }).catch(failed));
    expect(answer).toBe("still here\n");
  });

  test("a left-behind directory whose pid is gone and whose server takes no connection now (stopped, its accept queue full) is left to it too", async () => {
    const tmp = socketDir(defer, "aud-tmp-");
    const gone = Bun.spawnSync(["true"]).pid;
    const live = join(tmp.dir, `audio-agent-http-${gone}-stopped`);
    mkdirSync(live, { mode: 0o700 });
    const all = join(live, "all");
    defer(bindSocket(all, SOCK_STREAM, 0));
    const queued = queueConnections(all, 100);
    defer(() => closeConnections(queued));
    // Turned away before 100: the queue is full.
    expect(queued.length).toBeLessThan(100);
    const socket = lstatSync(all);
    defer(stopAgents);
    const agent = spawnAgent(["output", "serve", "--socket", tmp.path("out.sock"), "--source", "-", "--monitor", "127.0.0.1:0"], { stdin: "pipe", env: agentEnv({ TMPDIR: tmp.dir }) });
    await agent.waitForStderr(/http listening url=http/);
    expect(lstatSync(all)).toMatchObject({ dev: socket.dev, ino: socket.ino });
  });

  test("a left-behind directory whose pid is gone and whose socket cannot be told stale (a live datagram socket there: EPROTOTYPE) is left too", async () => {
    const tmp = socketDir(defer, "aud-tmp-");
    const gone = Bun.spawnSync(["true"]).pid;
    const other = join(tmp.dir, `audio-agent-http-${gone}-other`);
    mkdirSync(other, { mode: 0o700 });
    const all = join(other, "all");
    defer(bindSocket(all, SOCK_DGRAM));
    const socket = lstatSync(all);
    defer(stopAgents);
    const agent = spawnAgent(["output", "serve", "--socket", tmp.path("out.sock"), "--source", "-", "--monitor", "127.0.0.1:0"], { stdin: "pipe", env: agentEnv({ TMPDIR: tmp.dir }) });
    await agent.waitForStderr(/http listening url=http/);
    expect(lstatSync(all)).toMatchObject({ dev: socket.dev, ino: socket.ino });
  });
});

/** Bytes the process `pid` has read (read(2) and the like, /proc/PID/io's rchar). */
function bytesRead(pid: number): number {
  return Number(/^rchar: (\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, "utf8"))![1]);
}

/** `count` loopback connections made and closed: each leaves a socket in TIME_WAIT, listed for a minute. */
async function closedConnections(count: number): Promise<void> {
  const listener = Bun.listen<undefined>({ hostname: "127.0.0.1", port: 0, socket: { open: (s) => void s.end(), data() {} } });
  for (let made = 0; made < count; made += 100) {
    await Promise.all(
      Array.from({ length: 100 }, () => new Promise<void>((closed) => void Bun.connect({ hostname: "127.0.0.1", port: listener.port, socket: { data() {}, close: () => closed() } }).catch(() => closed()))),
    );
  }
  listener.stop(true);
}

/** A request on a connection of its own, read to its close. */
async function requestAlone(port: number, path: string): Promise<void> {
  await new Promise<void>((closed, failed) => {
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: { open: (s) => void s.write(`GET ${path} HTTP/1.1\r\nHost: localhost:${port}\r\nConnection: close\r\n\r\n`), data() {}, close: () => closed() },
    }).catch(failed);
  });
}

// Where the kernel has no socket diagnostics for TCP the agent reads the whole table instead, as it says at start.
describe.skipIf(!canSwitchUser || peerLookupUnavailable() !== undefined)("telling a connection's user apart", () => {
  test("asks for the peer's one socket, not the machine's whole table: with 4,000 sockets listed, 40 connections read less than /proc/net/tcp once", async () => {
    const { agent } = await agentWithMonitor();
    const port = Number(new URL(/http listening url=(\S+)/.exec(agent.stderr)![1]!).port);
    await closedConnections(4000);
    const table = readFileSync("/proc/net/tcp").length;
    const before = bytesRead(agent.proc.pid);
    for (let i = 0; i < 40; i++) await requestAlone(port, "/healthz");
    const read = bytesRead(agent.proc.pid) - before;
    expect({ table: table > 4000 * 100, read: read < table }).toEqual({ table: true, read: true });
  });

  test("closes the socket each look-up asks the kernel on: 50 connections leave the agent holding the descriptors it held before", async () => {
    const { agent, port } = await agentWithMonitor();
    await requestAlone(port, "/healthz");
    const before = fdCount(agent.proc.pid);
    for (let i = 0; i < 50; i++) await requestAlone(port, "/healthz");
    // Each connection's own descriptors (its two ends and the server's) close as it does.
    await until(() => fdCount(agent.proc.pid) <= before, `the agent's descriptors back to ${before}`, 5000).catch(() => {});
    expect(fdCount(agent.proc.pid) - before).toBeLessThanOrEqual(0);
  });
});

/** The users of a system of the test's own: the socket's owner, its group's members (one by its primary group, one listed in /etc/group), a stranger. */
const ACCOUNTS = { owner: [4400, 4400], listed: [4401, 4401], primary: [4402, 4500], stranger: [4403, 4403] } as const;
const SOCKET_OWNER = { uid: 4400, gid: 4500 };

describe.skipIf(!canSwitchUser || !canUnshare("--mount"))("mayConnect", () => {
  test("judges every mode as the kernel judges a connect: by the socket's owner, a member of its group (primary, or listed in /etc/group), another user, root", async () => {
    const dir = socketDir(defer, "aud-modes-");
    chmodSync(dir.dir, 0o755);
    const rows = Object.entries(ACCOUNTS).map(([name, [uid, gid]]) => `${name}:x:${uid}:${gid}::/:/bin/sh`);
    writeFileSync(dir.path("passwd"), ["root:x:0:0:root:/root:/bin/sh", ...rows, ""].join("\n"));
    writeFileSync(dir.path("group"), ["root:x:0:", "owner:x:4400:", "listed:x:4401:", "audio:x:4500:listed", "stranger:x:4403:", ""].join("\n"));
    const modes = [0o600, 0o660, 0o640, 0o620, 0o606, 0o604, 0o602, 0o666, 0o460, 0o406, 0o066, 0o000];
    const users = [[0, 0], ...Object.values(ACCOUNTS)] as const;
    // Each user tries every socket, with the groups a login gives it.
    const tries = users.map(([uid, gid]) => asUser(uid, gid, dir.dir, [BUN, "-e", `
      const connected = [];
      for (const mode of ${JSON.stringify(modes)}) {
        await Bun.connect({ unix: ${JSON.stringify(dir.dir)} + "/s" + mode.toString(8), socket: { data() {}, open: (s) => s.end() } }).then(() => connected.push(mode), () => {});
      }
      console.log(JSON.stringify(connected));`], true));
    const check = `
      import { chmodSync, chownSync } from "node:fs";
      import { mayConnect } from ${JSON.stringify(join(import.meta.dir, "../../src/observe/local-peer.ts"))};
      const modes = ${JSON.stringify(modes)};
      for (const mode of modes) {
        const path = ${JSON.stringify(dir.dir)} + "/s" + mode.toString(8);
        Bun.listen({ unix: path, socket: { data() {} } });
        chownSync(path, ${SOCKET_OWNER.uid}, ${SOCKET_OWNER.gid});
        chmodSync(path, mode);
      }
      const out = [];
      for (const [i, [uid]] of ${JSON.stringify(users)}.entries()) {
        const tried = Bun.spawnSync(${JSON.stringify(tries)}[i], { cwd: ${JSON.stringify(dir.dir)}, stderr: "inherit" });
        const kernel = JSON.parse(tried.stdout.toString()).map((m) => m.toString(8));
        const judged = modes.filter((m) => mayConnect(uid, m, ${JSON.stringify(SOCKET_OWNER)})).map((m) => m.toString(8));
        out.push({ uid, kernel, judged });
      }
      console.log(JSON.stringify(out));
      process.exit(0);`;
    writeFileSync(dir.path("check.ts"), check);
    // Its own /etc/passwd and /etc/group, mounted over the system's in a mount namespace of its own.
    const inside = `mount --bind ${dir.path("passwd")} /etc/passwd && mount --bind ${dir.path("group")} /etc/group && exec ${BUN} ${dir.path("check.ts")}`;
    const result = await start(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", inside], { cwd: dir.dir }).done;
    expect(result.stderr).toBe("");
    const seen = JSON.parse(result.stdout) as { uid: number; kernel: string[]; judged: string[] }[];
    expect(seen.map(({ uid, judged }) => ({ uid, judged }))).toEqual(seen.map(({ uid, kernel }) => ({ uid, judged: kernel })));
    // The kernel's answers themselves: each class of user is let in by some mode and kept out by another.
    expect(seen.map(({ kernel }) => kernel.length > 0 && kernel.length < modes.length)).toEqual([false, true, true, true, true]);
  });
});

// The kernel's socket diagnostics, and the whole table where a kernel has none to ask.
describe.skipIf(!canSwitchUser).each([
  ["localPeerUid", localPeerUid],
  ["peerUidFromTable", peerUidFromTable],
] as const)("%s", (name, lookUp) => {
  test("names the uid owning the connecting socket, over IPv4 and IPv6, and nothing for an end no socket is", async () => {
    for (const hostname of LOOPBACKS) {
      const { port, seen } = judgingListener(hostname, lookUp);
      const dir = socketDir(defer, "aud-uid-");
      const connect = `await new Promise((done) => Bun.connect({ hostname: ${JSON.stringify(hostname)}, port: ${port}, socket: { data() {}, close: done } }));`;
      await bunAs(NOBODY, dir.dir, connect);
      await bunAs(STRANGER, dir.dir, connect);
      expect([hostname, seen]).toEqual([hostname, [NOBODY, STRANGER]]);
      expect(lookUp({ address: hostname, port: 1 }, { address: hostname, port })).toBeUndefined();
      // Nor the listener the kernel's look-up falls back to when no connected socket matches (root's, here).
      expect(lookUp({ address: hostname, port }, { address: hostname, port: 1 })).toBeUndefined();
    }
  });

  test("names no one for a peer that has closed: what is left of its socket (FIN_WAIT2, TIME_WAIT) the kernel lists as root's", async () => {
    for (const hostname of LOOPBACKS) {
      const accepted = Promise.withResolvers<Endpoint[]>();
      // Our end stays open (half-open, as the front's), so the peer's closed socket waits in FIN_WAIT2.
      const listener = Bun.listen<undefined>({
        hostname,
        port: 0,
        allowHalfOpen: true,
        socket: { open: (s) => accepted.resolve([{ address: s.remoteAddress, port: s.remotePort }, { address: s.localAddress, port: s.localPort }]), data() {}, end() {} },
      });
      defer(() => listener.stop(true));
      const dir = socketDir(defer, "aud-uid-");
      const connect = `await new Promise((done) => Bun.connect({ hostname: ${JSON.stringify(hostname)}, port: ${listener.port}, socket: { open: (s) => s.end(), data() {}, close: done } }));`;
      await bunAs(NOBODY, dir.dir, connect);
      const [peer, local] = await accepted.promise;
      expect([hostname, lookUp(peer!, local!)]).toEqual([hostname, undefined]);
    }
  });

  test("names no one for a peer reset before it was accepted, whose address the listener no longer has", async () => {
    const looked = Promise.withResolvers<unknown>();
    const listener = Bun.listen<undefined>({
      hostname: "127.0.0.1",
      port: 0,
      socket: {
        open: (s) => {
          try {
            looked.resolve(["gives", lookUp({ address: s.remoteAddress, port: s.remotePort }, { address: s.localAddress, port: s.localPort })]);
          } catch (e) {
            looked.resolve(["throws", String(e)]);
          }
        },
        data() {},
      },
    });
    defer(() => listener.stop(true));
    connectAndReset(listener.port);
    expect(await looked.promise).toEqual(["gives", undefined]);
  });

  test.skipIf(!ipv6Loopback)("names the owner of a dual-stack socket (IPv6) connected to an IPv4 address, which the kernel lists as IPv4-mapped", async () => {
    const { port, seen } = judgingListener("127.0.0.1", lookUp);
    const dir = socketDir(defer, "aud-uid-");
    const connect = `await new Promise((done) => Bun.connect({ hostname: "::ffff:127.0.0.1", port: ${port}, socket: { data() {}, close: done } }));`;
    await bunAs(NOBODY, dir.dir, connect);
    expect(seen).toEqual([NOBODY]);
  });

  test.skipIf(!canUnshare("--user", "--map-root-user"))("names no one for a user its user namespace leaves out, whom the kernel names by the overflow uid (nobody's, so anyone's)", async () => {
    // A listener in a namespace that maps root alone; a stranger and root connect from outside it.
    const dir = socketDir(defer, "aud-userns-");
    chmodSync(dir.dir, 0o755);
    const script = `
      import { ${name} as lookUp } from ${JSON.stringify(join(import.meta.dir, "../../src/observe/local-peer.ts"))};
      const seen = [];
      const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: {
        open: (s) => {
          seen.push(lookUp({ address: s.remoteAddress, port: s.remotePort }, { address: s.localAddress, port: s.localPort }) ?? -1);
          s.end();
          if (seen.length === 2) { console.log(JSON.stringify(seen)); process.exit(0); }
        },
        data() {},
      } });
      console.error("port " + listener.port);`;
    expect(await lookUpsOf(dir, ["unshare", "--user", "--map-root-user", "--"], script, [STRANGER, 0])).toEqual([-1, 0]);
  });

  test.skipIf(!canUnshare("--mount"))("names nobody where the process's uid_map cannot be read (a kernel without user namespaces has none): every uid is then its own", async () => {
    // The listener's uid_map hidden under a socket, which no one can open (ENXIO), in a mount namespace of its own.
    const dir = socketDir(defer, "aud-nomap-");
    chmodSync(dir.dir, 0o755);
    defer(bindSocket(dir.path("mask.sock"), SOCK_STREAM));
    const script = `
      import { readFileSync } from "node:fs";
      import { ${name} as lookUp } from ${JSON.stringify(join(import.meta.dir, "../../src/observe/local-peer.ts"))};
      let uidMap = "read";
      try { readFileSync("/proc/self/uid_map"); } catch (e) { uidMap = e.code; }
      const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: {
        open: (s) => {
          const uid = lookUp({ address: s.remoteAddress, port: s.remotePort }, { address: s.localAddress, port: s.localPort }) ?? -1;
          s.end();
          console.log(JSON.stringify({ uidMap, uid }));
          process.exit(0);
        },
        data() {},
      } });
      console.error("port " + listener.port);`;
    // exec keeps the shell's pid, so the mount covers the listener's own /proc/self/uid_map.
    const masked = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", 'mount --bind "$0" /proc/$$/uid_map && exec "$1" "$2"', dir.path("mask.sock")];
    expect(await lookUpsOf(dir, masked, script, [NOBODY])).toEqual({ uidMap: "ENXIO", uid: NOBODY });
  });

  test("names the peer in a process whose stdin is closed, where what the look-up opens gets descriptor 0", async () => {
    const dir = socketDir(defer, "aud-fd0-");
    chmodSync(dir.dir, 0o755);
    // Bun opens /dev/null for a stdin closed at its start, and the connection accepted takes the lowest free
    // descriptor: the script closes 0 itself, once it has accepted.
    const script = `
      import { closeSync } from "node:fs";
      import { ${name} as lookUp } from ${JSON.stringify(join(import.meta.dir, "../../src/observe/local-peer.ts"))};
      const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: {
        open: (s) => {
          closeSync(0);
          const uid = lookUp({ address: s.remoteAddress, port: s.remotePort }, { address: s.localAddress, port: s.localPort }) ?? -1;
          s.end();
          console.log(JSON.stringify({ uid }));
          process.exit(0);
        },
        data() {},
      } });
      console.error("port " + listener.port);`;
    expect(await lookUpsOf(dir, [], script, [NOBODY])).toEqual({ uid: NOBODY });
  });
});

describe("socketDiagnosticsMissing", () => {
  test("tells the kernel's diagnostics for TCP from those it has none for, whose netlink socket opens all the same: a family with no handler (a kernel without CONFIG_INET_DIAG), a protocol with none (one without its TCP part)", () => {
    const [AF_UNSPEC, AF_INET, AF_INET6, IPPROTO_TCP] = [0, 2, 10, 6];
    // A protocol number kept for experiments (RFC 3692): no kernel registers it.
    const EXPERIMENTAL = 253;
    expect(socketDiagnosticsMissing(AF_INET, IPPROTO_TCP)).toBeUndefined();
    if (ipv6Loopback) expect(socketDiagnosticsMissing(AF_INET6, IPPROTO_TCP)).toBeUndefined();
    expect(socketDiagnosticsMissing(AF_UNSPEC, IPPROTO_TCP)).toBe(
      "sock_diag has no sockets of family 0 protocol 6 to list (ENOENT: a kernel built without CONFIG_INET_DIAG or its TCP part)",
    );
    expect(socketDiagnosticsMissing(AF_INET, EXPERIMENTAL)).toBe(
      "sock_diag has no sockets of family 2 protocol 253 to list (ENOENT: a kernel built without CONFIG_INET_DIAG or its TCP part)",
    );
  });
});
