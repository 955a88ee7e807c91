/**
 * How many connections the HTTP endpoints hold, on spawned agents: each
 * holds a descriptor, so a peer holding many open must not leave the agent
 * none for its audio clients. Past 32 a newcomer takes the place of one idle
 * for IDLE_MS, or is answered 503 and closed.
 * The servers behind the front listen on Unix sockets in a directory of
 * their own in TMPDIR (or /tmp), which every way out but SIGKILL removes,
 * and the next start after a SIGKILL.
 */
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { ACCEPT_QUEUE } from "../../src/io/accept-queue.ts";
import { IDLE_MS, MAX_HTTP_CONNECTIONS } from "../../src/observe/http-front.ts";
import { useCleanup } from "../support/cleanup.ts";
import { rawRequest } from "../support/http.ts";
import { metricsUrl } from "../support/metrics.ts";
import { connectClient } from "../support/peer.ts";
import { resetOnClose } from "../support/player-sockets.ts";
import { fdCount } from "../support/proc.ts";
import { canUnshare } from "../support/machine.ts";
import { AGENT, agentEnv, run, runAgent, start, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { wholeWireFrames, writeWireFile } from "../support/wire.ts";

const defer = useCleanup();

/**
 * `count` TCP connections to host:port, each having sent the start of a
 * request and no more (as a slow client does, or one trickling a header a
 * byte at a time); resolves once each is connected, with how many the agent
 * closed so far.
 */
async function idleConnections(port: number, count: number, host = "127.0.0.1"): Promise<{ sockets: Socket<undefined>[]; closed: () => number }> {
  let closed = 0;
  const sockets: Socket<undefined>[] = [];
  for (let i = 0; i < count; i++) {
    const socket = await Bun.connect({ hostname: host, port, socket: { data: () => {}, close: () => void closed++, error: () => {} } });
    socket.write("GET /metrics HTTP/1.1\r\n");
    sockets.push(socket);
    // Past the bound each is answered 503 and closed: the next comes once it has been, so that the
    // peer never outruns the kernel's queue (ACCEPT_QUEUE), whose overflow waits on SYN retries.
    await until(() => closed >= sockets.length - MAX_HTTP_CONNECTIONS, "the connection past the bound closed", 30_000, 1);
  }
  defer(() => sockets.forEach((s) => s.terminate()));
  return { sockets, closed: () => closed };
}

/** `output serve` of a looping wire file with the HTTP options `http`, its descriptors limited to `files` (soft and hard: Bun raises the soft one to the hard). */
async function serving(files: number, http: string[]) {
  const t = socketDir(defer, "aahc-");
  defer(stopAgents);
  await writeWireFile(t.path("in.wire"), 50);
  const agent = start(["sh", "-c", `ulimit -n ${files} && exec "$@"`, "sh", ...AGENT, "output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.path("o.sock"), ...http], { env: agentEnv() });
  return { t, agent };
}

/** serving() with --metrics. */
async function servingWithMetrics(files: number) {
  const { t, agent } = await serving(files, ["--metrics", "127.0.0.1:0"]);
  const base = await metricsUrl(agent);
  return { t, agent, port: Number(new URL(base).port) };
}

/**
 * serving() with --metrics on 127.0.0.1 and --monitor on 127.0.0.2: two
 * listeners sharing the process's places (port 0 on one address would be one
 * server for both).
 */
async function servingOnTwoAddresses(files: number) {
  const { t, agent } = await serving(files, ["--metrics", "127.0.0.1:0", "--monitor", "127.0.0.2:0"]);
  const pattern = /http listening url=http:\/\/127\.0\.0\.[12]:(\d+)\//g;
  await until(() => [...agent.stderr.matchAll(pattern)].length === 2, "both HTTP ports listening");
  const [metricsPort, monitorPort] = [...agent.stderr.matchAll(pattern)].map((m) => Number(m[1]));
  return { t, agent, metricsPort: metricsPort!, monitorPort: monitorPort! };
}

/** An audio client of the agent's socket `sock` is served: `output recv` takes 5 frames into `out`, exit 0. */
async function expectAudioServed(sock: string, out: string): Promise<void> {
  const recv = await runAgent(["output", "recv", "--socket", sock, "--sink", out, "--count", "5", "--connect-timeout", "5"], { timeoutMs: 20_000 });
  expect(recv.code, recv.stderr).toBe(0);
  expect(wholeWireFrames(out).length).toBe(5);
}

const healthz = (port: number) => rawRequest("127.0.0.1", port, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}`);

describe("HTTP connections are bounded", () => {
  test(`past ${MAX_HTTP_CONNECTIONS} open connections, none idle for IDLE_MS, a newcomer gets 503 and is closed; once one leaves, the next is served`, async () => {
    const { port } = await servingWithMetrics(1024);
    const held = await idleConnections(port, MAX_HTTP_CONNECTIONS);
    const busy = await healthz(port);
    expect(busy.status).toBe(503);
    expect(busy.body).toBe("too many connections; try again later\n");
    expect(busy.headers["retry-after"]).toBe("1");
    // The ones held are still open: none was closed to make room.
    expect(held.closed()).toBe(0);
    held.sockets.pop()!.end();
    await until(async () => (await healthz(port)).status === 200, "a connection served again");
  }, 30_000);

  test("a peer holding more HTTP connections than the agent has descriptors: those past the bound are closed, the agent keeps descriptors free, and an audio client is served", async () => {
    const { t, agent, port } = await servingWithMetrics(200);
    const held = await idleConnections(port, 300);
    // Those past the bound were answered and closed at once (unbounded, the agent took them until it had no descriptor left).
    // (The kernel keeps ACCEPT_QUEUE of them waiting at a time: the others' SYNs are sent again, 1, 3, 7 s later.)
    await until(() => held.closed() === 300 - MAX_HTTP_CONNECTIONS, "the connections past the bound closed", 60_000);
    // Each carried connection holds three: the TCP one, and both ends of its way to the server.
    expect(fdCount(agent.pid)).toBeLessThan(200 - 50);
    await expectAudioServed(t.path("o.sock"), t.path("out.wire"));
  }, 90_000);

  test("a descriptor limit too small for 32 connections (64): the bound fits within it, so a peer holding every place leaves the agent descriptors, and once it lets go /healthz answers and an audio client is served", async () => {
    const { t, agent, port } = await servingWithMetrics(64);
    expect(agent.stderr).toContain("fewer HTTP connections at once");
    const held = await idleConnections(port, 40);
    // Those past the fitted bound are answered and closed at once: the agent had descriptors for them.
    await until(() => held.closed() > 0, "a connection past the bound closed");
    held.sockets.forEach((s) => s.terminate());
    // Over its limit, the agent accepted nothing more, nor let go what it held: for good.
    const served = () => rawRequest("127.0.0.1", port, `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}`, 2000).then((r) => r.status === 200, () => false);
    await until(served, "/healthz answered again", 10_000).catch(() => {});
    expect(await served()).toBe(true);
    await expectAudioServed(t.path("o.sock"), t.path("out.wire"));
  }, 60_000);
});

describe("connections held open and fed a byte now and then", () => {
  test(`${MAX_HTTP_CONNECTIONS} places so held keep no one out: once their server has said nothing to them for ${IDLE_MS} ms, a newcomer takes the place of the one idle longest (/healthz 200), never a monitor viewer's, which hears figures every second, though it came first`, async () => {
    const t = socketDir(defer, "aahc-");
    defer(stopAgents);
    await writeWireFile(t.path("in.wire"), 50);
    // One address for both: one server, /healthz and the monitor's /ws on one port.
    const agent = start([...AGENT, "output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.path("o.sock"), "--metrics", "127.0.0.1:0", "--monitor", "127.0.0.1:0"], { env: agentEnv() });
    const port = Number(new URL(await metricsUrl(agent)).port);
    const viewer = new WebSocket(`ws://127.0.0.1:${port}/ws`);
    defer(() => viewer.close());
    let viewerClosed = false;
    let heard = 0;
    viewer.onmessage = () => void heard++;
    viewer.onclose = () => void (viewerClosed = true);
    await until(() => heard > 0, "the viewer's hello");
    const closed: boolean[] = [];
    const tricklers: Socket<undefined>[] = [];
    for (let i = 0; i < MAX_HTTP_CONNECTIONS - 1; i++) {
      const socket = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data: () => {}, close: () => void (closed[i] = true), error: () => {} } });
      socket.write("GET /metrics HTTP/1.1\r\nX-Slow: ");
      tricklers.push(socket);
    }
    defer(() => tricklers.forEach((s) => s.terminate()));
    const trickle = setInterval(() => tricklers.forEach((s) => s.write("a")), 1000);
    defer(() => clearInterval(trickle));
    // Every place taken a moment ago: a newcomer is turned away.
    expect((await healthz(port)).status).toBe(503);
    await Bun.sleep(IDLE_MS + 500);
    const served = await healthz(port);
    expect(served.status).toBe(200);
    expect(served.body).toContain('"healthy":true');
    // The first trickler, and only it, let go; the viewer, older still, kept.
    await until(() => closed[0] === true, "the trickler idle longest closed");
    expect(closed.filter(Boolean).length).toBe(1);
    const heardBefore = heard;
    await until(() => heard > heardBefore, "figures still reaching the viewer");
    expect(viewerClosed).toBe(false);
  }, 40_000);
});

describe("connections the kernel keeps until the agent takes them", () => {
  // Bun takes every waiting connection in one turn of the thread that paces the audio: a peer
  // connecting and closing in a loop filled Bun's 512 in a moment, and each turn held the audio.
  test(`while the agent takes none (stopped), ${ACCEPT_QUEUE + 1} connections complete and no more: the rest wait in the kernel; once it goes on, /healthz answers`, async () => {
    const { agent, port } = await servingWithMetrics(1024);
    expect((await healthz(port)).status).toBe(200);
    agent.kill("SIGSTOP");
    defer(() => agent.kill("SIGCONT"));
    let completed = 0;
    // Those still waiting complete once it goes on, or fail with it: each is closed as it completes.
    for (let i = 0; i < 100; i++) {
      void Bun.connect({ hostname: "127.0.0.1", port, socket: { data: () => {}, error: () => {} } }).then(
        (socket) => void (completed++, socket.terminate()),
        () => {},
      );
    }
    // Over loopback a connection the queue has room for completes within its connect; the others' SYNs are dropped.
    await until(() => completed >= ACCEPT_QUEUE + 1, "the queue's connections completed");
    await Bun.sleep(300);
    expect(completed).toBe(ACCEPT_QUEUE + 1);
    agent.kill("SIGCONT");
    await until(async () => (await healthz(port).catch(() => ({ status: 0 }))).status === 200, "/healthz answered after the flood", 30_000);
  }, 60_000);
});

describe("--metrics and --monitor on two ports", () => {
  test(`the bound is the process's: ${MAX_HTTP_CONNECTIONS} connections held on the metrics port leave none for the monitor's port (503), and one let go frees a place there`, async () => {
    const { metricsPort, monitorPort } = await servingOnTwoAddresses(1024);
    const figures = () => rawRequest("127.0.0.2", monitorPort, `GET /figures HTTP/1.1\r\nHost: 127.0.0.2:${monitorPort}`);
    expect((await figures()).status).toBe(200);
    const held = await idleConnections(metricsPort, MAX_HTTP_CONNECTIONS);
    // At most 32 at once, and so at most 96 descriptors, whichever ports they came to.
    const busy = await figures();
    expect(busy.status).toBe(503);
    expect(busy.body).toBe("too many connections; try again later\n");
    expect(held.closed()).toBe(0);
    held.sockets.pop()!.end();
    await until(async () => (await figures()).status === 200, "a connection served again on the monitor's port");
  }, 30_000);
});

/**
 * A client asking for `path` on a connection it keeps open after the answer
 * (HTTP/1.1's default): the answer's status once its head is in (0 if the
 * agent closed first), and whether the agent has closed it since.
 */
async function keptOpen(host: string, port: number, path: string): Promise<{ status: Promise<number>; closed: () => boolean }> {
  let received = "";
  let closed = false;
  const head = Promise.withResolvers<number>();
  const socket = await Bun.connect({
    hostname: host,
    port,
    socket: {
      data: (_s, chunk) => {
        received += new TextDecoder().decode(chunk);
        if (received.includes("\r\n\r\n")) head.resolve(Number(/^HTTP\/1\.1 (\d{3})/.exec(received)?.[1]));
      },
      close: () => {
        closed = true;
        head.resolve(0);
      },
      error: () => {},
    },
  });
  defer(() => socket.terminate());
  socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\n\r\n`);
  return { status: head.promise, closed: () => closed };
}

describe("newcomers taking idle places, round after round, on two addresses", () => {
  test(`each connection let go for a newcomer gives back its three descriptors at once, whichever address either came to: after each round of ${MAX_HTTP_CONNECTIONS - 1} taken the agent holds three a connection carried, no more; the next with none idle gets 503; the viewer that came first is never taken, and hears the agent stop (1001), which exits 0`, async () => {
    const { agent, metricsPort, monitorPort } = await servingOnTwoAddresses(1024);
    await agent.waitForStderr("output-server: listening");
    const base = fdCount(agent.pid);
    const viewer = new WebSocket(`ws://127.0.0.2:${monitorPort}/ws`);
    defer(() => viewer.close());
    let heard = 0;
    let viewerClosed = "";
    viewer.onmessage = () => void heard++;
    viewer.onclose = (e) => void (viewerClosed = `${e.code} ${e.reason}`);
    await until(() => heard > 0, "the viewer's hello");
    // Every other place held by a client that sent the start of a request, on either address.
    const half = Math.floor((MAX_HTTP_CONNECTIONS - 1) / 2);
    const first = [await idleConnections(metricsPort, half), await idleConnections(monitorPort, MAX_HTTP_CONNECTIONS - 1 - half, "127.0.0.2")];
    let heldClosed = () => first.reduce((n, held) => n + held.closed(), 0);
    const addresses = [
      { host: "127.0.0.2", port: monitorPort, path: "/figures" },
      { host: "127.0.0.1", port: metricsPort, path: "/healthz" },
    ];
    for (let round = 0; round < 2; round++) {
      await Bun.sleep(IDLE_MS + 500);
      // Each takes the place of one idle since the round before, of either address; each is answered and stays.
      const newcomers: Awaited<ReturnType<typeof keptOpen>>[] = [];
      for (let i = 0; i < MAX_HTTP_CONNECTIONS - 1; i++) {
        const { host, port, path } = addresses[i % 2]!;
        newcomers.push(await keptOpen(host, port, path));
      }
      expect(await Promise.all(newcomers.map((n) => n.status))).toEqual(newcomers.map(() => 200));
      await until(() => heldClosed() === MAX_HTTP_CONNECTIONS - 1, "the connections taken closed");
      heldClosed = () => newcomers.filter((n) => n.closed()).length;
      // Those let go hold none: the agent holds three for each connection carried (the viewer among them).
      await until(() => fdCount(agent.pid) <= base + 3 * MAX_HTTP_CONNECTIONS, "the descriptors of those let go closed", 2000).catch(() => {});
      expect(fdCount(agent.pid)).toBeLessThanOrEqual(base + 3 * MAX_HTTP_CONNECTIONS);
    }
    // None idle now: the places are as many as ever.
    expect((await healthz(metricsPort)).status).toBe(503);
    const heardBefore = heard;
    await until(() => heard > heardBefore, "figures still reaching the viewer");
    expect(viewerClosed).toBe("");
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    await until(() => viewerClosed !== "", "the viewer told the agent stops");
    expect(viewerClosed).toBe("1001 agent stopping");
  }, 60_000);
});

describe("a client that resets its connection", () => {
  test("a peer that sends a request and resets (RST) at once, over and over: each carried connection's descriptors are closed (the agent's count back where it was), and an audio client is served", async () => {
    const { t, agent, port } = await servingWithMetrics(200);
    expect((await healthz(port)).status).toBe(200);
    const before = fdCount(agent.pid);
    // Far more than the descriptors the agent may hold: any one kept per reset connection would run it out.
    for (let i = 0; i < 400; i++) {
      const socket = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data: () => {}, error: () => {} } });
      socket.write(`GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
      // SO_LINGER 0: closing sends an RST, as a crashed or killed client's kernel does.
      resetOnClose(socket.fd);
      socket.terminate();
    }
    // Given time to see every reset (a few seconds), the agent holds what it held before them (a leak holds them for good).
    await until(() => fdCount(agent.pid) <= before + 3, "the reset connections' descriptors closed", 30_000).catch(() => {});
    expect(fdCount(agent.pid)).toBeLessThanOrEqual(before + 3);
    await expectAudioServed(t.path("o.sock"), t.path("out.wire"));
  }, 60_000);
});

/** A client of the HTTP port that writes `request` (if any) and at once half-closes: when the agent closes, and what it read. */
async function halfClosing(port: number, request: string): Promise<{ closed: Promise<void>; received: () => string }> {
  let received = "";
  const closed = Promise.withResolvers<void>();
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: { data: (_s, chunk) => void (received += new TextDecoder().decode(chunk)), close: () => closed.resolve(), error: () => {} },
  });
  defer(() => socket.terminate());
  if (request) socket.write(request);
  socket.shutdown();
  return { closed: closed.promise, received: () => received };
}

describe("a client that half-closes after its request", () => {
  // `printf 'GET ...' | nc -N host port`, socat, a script's socket.shutdown(SHUT_WR):
  // the end of what it sends is not the end of what it reads.
  test("still reads the whole answer, even with its end sent at once: 200 and the /healthz body, then the agent's close", async () => {
    const { port } = await servingWithMetrics(1024);
    const client = await halfClosing(port, `GET /healthz HTTP/1.0\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    await client.closed;
    const received = client.received();
    expect(received.split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
    const body = received.slice(received.indexOf("\r\n\r\n") + 4);
    expect(JSON.parse(body).role).toBe("output serve");
  }, 30_000);
});

describe("a client that half-closes on a keep-alive connection", () => {
  // HTTP/1.1 keeps a connection open after an answer: only the client's end, passed on, tells the server it is done.
  test("its end reaches the server: with a request (HTTP/1.1, no Connection: close) or none, the agent answers and closes, well before the server's idle timeout; the 32 places are free for the next client", async () => {
    const { port } = await servingWithMetrics(1024);
    const clients = [];
    for (let i = 0; i < MAX_HTTP_CONNECTIONS; i++) {
      clients.push(await halfClosing(port, i % 2 === 0 ? `GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n` : ""));
    }
    // Bun.serve closes an idle connection after 10 s: each must be closed long before, by the end passed on.
    const late = Bun.sleep(5000).then(() => "still open");
    for (const client of clients) expect(await Promise.race([client.closed.then(() => "closed"), late])).toBe("closed");
    clients.forEach((client, i) => expect(client.received().split("\r\n")[0]).toBe(i % 2 === 0 ? "HTTP/1.1 200 OK" : ""));
    expect((await healthz(port)).status).toBe(200);
  }, 30_000);
});

describe("the HTTP servers' own directory", () => {
  test("a TMPDIR that names nothing: it is made in /tmp instead, /healthz answers 200, SIGTERM exits 0 and leaves nothing there", async () => {
    const t = socketDir(defer, "aahd-");
    defer(stopAgents);
    await writeWireFile(t.path("in.wire"), 50);
    const agent = start([...AGENT, "output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.path("o.sock"), "--metrics", "127.0.0.1:0"], { env: agentEnv({ TMPDIR: t.path("missing") }) });
    const port = Number(new URL(await metricsUrl(agent)).port);
    expect((await healthz(port)).status).toBe(200);
    const own = () => readdirSync("/tmp").filter((name) => name.startsWith(`audio-agent-http-${agent.proc.pid}-`));
    expect(own().length).toBe(1);
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    expect(own()).toEqual([]);
  }, 30_000);

  test("a stop and a second signal's exit leave nothing in TMPDIR; SIGKILL leaves the directory, which the next start removes", async () => {
    const t = socketDir(defer, "aahd-");
    const tmp = socketDir(defer, "aahd-tmp-");
    defer(stopAgents);
    await writeWireFile(t.path("in.wire"), 50);
    for (const way of ["stop", "second signal", "SIGKILL"] as const) {
      const agent = start([...AGENT, "output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.path("o.sock"), "--metrics", "127.0.0.1:0"], { env: agentEnv({ TMPDIR: tmp.dir }) });
      await metricsUrl(agent);
      await agent.waitForStderr("output-server: listening");
      // A client that reads nothing holds the stop (it is given 1 s to read to the end): a second signal comes first.
      const client = await connectClient(defer, t.path("o.sock"), { paused: true });
      await agent.waitForStderr("client connected");
      if (way === "SIGKILL") agent.kill("SIGKILL");
      else agent.kill("SIGTERM");
      if (way === "second signal") {
        await agent.waitForStderr("client disconnected");
        agent.kill("SIGTERM");
      }
      expect(await agent.exited).toBe({ stop: 0, "second signal": 143, SIGKILL: 137 }[way]);
      expect(readdirSync(tmp.dir).length).toBe(way === "SIGKILL" ? 1 : 0);
      client.close();
      rmSync(t.path("o.sock"), { force: true });
    }
    const [killed] = readdirSync(tmp.dir);
    const next = start([...AGENT, "output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.path("o.sock"), "--metrics", "127.0.0.1:0"], { env: agentEnv({ TMPDIR: tmp.dir }) });
    await metricsUrl(next);
    expect(readdirSync(tmp.dir).some((name) => name === killed)).toBe(false);
    expect(readdirSync(tmp.dir).length).toBe(1);
    next.kill("SIGTERM");
    expect(await next.exited).toBe(0);
    expect(readdirSync(tmp.dir)).toEqual([]);
  }, 30_000);

  test.skipIf(!canUnshare("--mount"))("neither TMPDIR nor /tmp can take it (one names nothing, the other is read-only): the failure line names each and why, exit 1", async () => {
    const t = socketDir(defer, "aahd-");
    await writeWireFile(t.path("in.wire"), 50);
    // /tmp read-only for the agent alone, in a mount namespace of its own.
    const readOnlyTmp = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", 'mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp && exec "$@"', "sh"];
    const args = ["output", "serve", "--source", t.path("in.wire"), "--socket", t.path("o.sock"), "--metrics", "127.0.0.1:0"];
    const result = await run([...readOnlyTmp, ...AGENT, ...args], { env: agentEnv({ TMPDIR: t.path("missing") }) });
    expect(result.code).toBe(1);
    expect(result.stderr).toContain(`cannot make a directory for the sockets of the HTTP servers (--metrics, --monitor) in ${t.path("missing")} (ENOENT) or /tmp (EROFS): set TMPDIR`);
  }, 30_000);

  test("a directory of a process that lives (an agent starting, its servers not listening yet) is left to it; one of a pid that is gone, removed", async () => {
    const t = socketDir(defer, "aahd-");
    const tmp = socketDir(defer, "aahd-tmp-");
    defer(stopAgents);
    await writeWireFile(t.path("in.wire"), 50);
    const gone = Bun.spawn(["true"]);
    await gone.exited;
    // This test's own process lives, and nothing listens in its directory yet.
    const starting = `audio-agent-http-${process.pid}-aaaaaa`;
    const left = `audio-agent-http-${gone.pid}-bbbbbb`;
    mkdirSync(tmp.path(starting), { mode: 0o700 });
    mkdirSync(tmp.path(left), { mode: 0o700 });
    const agent = start([...AGENT, "output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.path("o.sock"), "--metrics", "127.0.0.1:0"], { env: agentEnv({ TMPDIR: tmp.dir }) });
    await metricsUrl(agent);
    expect(readdirSync(tmp.dir).filter((name) => !name.startsWith(`audio-agent-http-${agent.proc.pid}-`))).toEqual([starting]);
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    expect(readdirSync(tmp.dir)).toEqual([starting]);
  }, 30_000);
});
