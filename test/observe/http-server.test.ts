/**
 * Who the HTTP endpoints answer, on spawned agents: requests are sent raw
 * over TCP so that Host and Origin are exactly what a DNS-rebinding page or
 * a hostile page in the operator's browser would send. A Host that is not
 * the server's own address (or a loopback name for a loopback bind, or a
 * name given with --http-allow-host) gets 421 on every path; a WebSocket
 * upgrade whose Origin is not its Host gets 403, also from a real WebSocket
 * client, which then hears nothing; same-origin use keeps working.
 */
import { describe, expect, test } from "bun:test";
import { networkInterfaces } from "node:os";
import { allowedHosts } from "../../src/observe/host-check.ts";
import { indexedWire } from "../support/wire.ts";
import { canUnshare, ipv6Loopback } from "../support/machine.ts";
import { useCleanup } from "../support/cleanup.ts";
import { rawRequest, rawUpgrade } from "../support/http.ts";
import { AGENT, agentEnv, run, spawnAgent, start, type Spawned, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();
const PATHS = ["/", "/figures", "/ws", "/metrics", "/healthz"];

/** `output serve` from stdin with --metrics and --monitor on one address; resolves with its port. */
async function agentWithHttp(listen: string, extra: string[] = []): Promise<{ agent: Spawned; port: number }> {
  const dir = socketDir(defer, "http-");
  defer(stopAgents);
  const agent = spawnAgent(
    ["output", "serve", "--socket", dir.path("out.sock"), "--source", "-", "--realtime", "--metrics", listen, "--monitor", listen, ...extra],
    { stdin: "pipe" },
  );
  await agent.waitForStderr(/http listening url=http/);
  const port = Number(new URL(/http listening url=(\S+)/.exec(agent.stderr)![1]!).port);
  return { agent, port };
}

async function statusOf(connectTo: string, port: number, path: string, host: string | undefined): Promise<number> {
  const head = [`GET ${path} HTTP/1.1`, ...(host === undefined ? [] : [`Host: ${host}`])].join("\r\n");
  return (await rawRequest(connectTo, port, head)).status;
}

function nonLoopbackAddress(): string | undefined {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return undefined;
}

describe("Host: only the server's own names", () => {
  test("a loopback bind answers localhost, 127.0.0.1 and [::1] with its port; any other Host gets 421 on every path", async () => {
    const { port } = await agentWithHttp("127.0.0.1:0");
    for (const path of ["/", "/figures", "/metrics", "/healthz"]) {
      for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, `LOCALHOST:${port}`]) {
        expect([path, host, await statusOf("127.0.0.1", port, path, host)]).toEqual([path, host, 200]);
      }
    }
    for (const path of PATHS) {
      for (const host of [`evil.example:${port}`, "evil.example", `localhost:${port + 1}`, "localhost", `127.0.0.2:${port}`]) {
        expect([path, host, await statusOf("127.0.0.1", port, path, host)]).toEqual([path, host, 421]);
      }
      // HTTP/1.1 without Host: Bun refuses it itself.
      expect([path, await statusOf("127.0.0.1", port, path, undefined)]).toEqual([path, 400]);
    }
    const refused = await rawRequest("127.0.0.1", port, `GET /metrics HTTP/1.1\r\nHost: rebound.example:${port}`);
    expect(refused.body).toContain("misdirected request");
    expect(refused.body).not.toContain("jetkvm_");
  });

  test("a bind to the loopback name localhost or ::1 answers every loopback name too, not only the one it was given", async () => {
    // ::1 only where it can be bound (a network with IPv6 disabled has none).
    const binds: (readonly [string, string])[] = [["localhost:0", "127.0.0.1"], ...(ipv6Loopback ? [["[::1]:0", "::1"] as const] : [])];
    for (const [listen, connectTo] of binds) {
      const { port } = await agentWithHttp(listen);
      for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`]) {
        expect([listen, host, await statusOf(connectTo, port, "/metrics", host)]).toEqual([listen, host, 200]);
      }
      expect([listen, await statusOf(connectTo, port, "/metrics", `rebound.example:${port}`)]).toEqual([listen, 421]);
    }
  });

  test("--http-allow-host adds names: alone (the server's port, or none behind a proxy) or with a port (a tunnel)", async () => {
    const { port } = await agentWithHttp("127.0.0.1:0", ["--http-allow-host", "monitor.example, localhost:9000"]);
    for (const host of [`monitor.example:${port}`, "monitor.example", "localhost:9000", `localhost:${port}`]) {
      expect([host, await statusOf("127.0.0.1", port, "/figures", host)]).toEqual([host, 200]);
    }
    // A name given with a port counts with that port only: not bare, not with another.
    for (const host of ["monitor.example:9000", "localhost:9001", "localhost", `other.example:${port}`]) {
      expect([host, await statusOf("127.0.0.1", port, "/figures", host)]).toEqual([host, 421]);
    }
  });

  test("a bind spelled otherwise than the usual way (0 for 0.0.0.0, 127.1, [::0], [0:0:0:0:0:0:0:1]) answers as the address it binds: loopback names, and for a wildcard this machine's addresses", async () => {
    const outside = nonLoopbackAddress();
    const binds: (readonly [string, string])[] = [
      ["0:0", "127.0.0.1"],
      ["127.1:0", "127.0.0.1"],
      ...(ipv6Loopback ? [["[::0]:0", "::1"] as const, ["[0:0:0:0:0:0:0:1]:0", "::1"] as const] : []),
    ];
    for (const [listen, connectTo] of binds) {
      const { port } = await agentWithHttp(listen);
      for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`]) {
        expect([listen, host, await statusOf(connectTo, port, "/metrics", host)]).toEqual([listen, host, 200]);
      }
      const wildcard = listen === "0:0" || listen === "[::0]:0";
      if (outside && wildcard) expect([listen, await statusOf(outside, port, "/metrics", `${outside}:${port}`)]).toEqual([listen, 200]);
      expect([listen, await statusOf(connectTo, port, "/metrics", `rebound.example:${port}`)]).toEqual([listen, 421]);
    }
  });

  const outside = nonLoopbackAddress();
  test.skipIf(!outside)("a non-loopback bind answers its own address only; a wildcard bind also this machine's addresses and loopback", async () => {
    const own = await agentWithHttp(`${outside}:0`);
    expect(await statusOf(outside!, own.port, "/metrics", `${outside}:${own.port}`)).toBe(200);
    expect(await statusOf(outside!, own.port, "/metrics", `localhost:${own.port}`)).toBe(421);
    expect(await statusOf(outside!, own.port, "/metrics", `rebound.example:${own.port}`)).toBe(421);

    const wildcard = await agentWithHttp("0.0.0.0:0");
    expect(await statusOf(outside!, wildcard.port, "/metrics", `${outside}:${wildcard.port}`)).toBe(200);
    expect(await statusOf("127.0.0.1", wildcard.port, "/metrics", `localhost:${wildcard.port}`)).toBe(200);
    expect(await statusOf(outside!, wildcard.port, "/metrics", `rebound.example:${wildcard.port}`)).toBe(421);
  });
});

describe("a wildcard bind and the machine's addresses as they change", () => {
  // A network namespace of the agent's own: an address given to it and taken back there, as DHCP
  // does after a boot, touches nothing of this machine's.
  test.skipIf(!canUnshare("--net") || !Bun.which("nsenter") || !Bun.which("ip"))("an address the machine gains after the start (a DHCP lease) is answered; one it has lost is not", async () => {
    const dir = socketDir(defer, "http-");
    defer(stopAgents);
    const port = 9101;
    const agent = start(
      ["unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", ...AGENT, "output", "serve", "--socket", dir.path("out.sock"), "--source", "-", "--metrics", `0.0.0.0:${port}`],
      { env: agentEnv(), stdin: "pipe" },
    );
    defer(() => agent.kill("SIGKILL"));
    await agent.waitForStderr(/http listening url=http/);
    const inside = (...cmd: string[]) => run(["nsenter", `--net=/proc/${agent.proc.pid}/ns/net`, ...cmd]);
    const status = async (address: string) => {
      const request = `GET /metrics HTTP/1.1\r\nHost: ${address}:${port}\r\nConnection: close\r\n\r\n`;
      const answer = await inside("sh", "-c", `printf '${request}' | nc -N ${address} ${port}`);
      return Number(/^HTTP\/1\.1 (\d+)/.exec(answer.stdout)?.[1]);
    };
    expect(await status("127.0.0.1")).toBe(200);
    expect((await inside("ip", "addr", "add", "10.77.0.1/32", "dev", "lo")).code).toBe(0);
    expect(await status("10.77.0.1")).toBe(200);
    expect((await inside("ip", "addr", "add", "10.77.0.2/32", "dev", "lo")).code).toBe(0);
    expect((await inside("ip", "addr", "del", "10.77.0.1/32", "dev", "lo")).code).toBe(0);
    expect(await status("10.77.0.2")).toBe(200);
    // Reached through an address still held, with the name of the one let go.
    const request = `GET /metrics HTTP/1.1\r\nHost: 10.77.0.1:${port}\r\nConnection: close\r\n\r\n`;
    expect((await inside("sh", "-c", `printf '${request}' | nc -N 10.77.0.2 ${port}`)).stdout).toStartWith("HTTP/1.1 421");
    agent.kill("SIGTERM");
    const done = await agent.done;
    expect(done.code, done.stderr).toBe(0);
  }, 30_000);
});

describe("WebSocket upgrades: Origin must be the Host", () => {
  test("raw upgrades: same origin (either loopback name) or no Origin is accepted; another Origin gets 403", async () => {
    const { port } = await agentWithHttp("127.0.0.1:0");
    const upgrade = async (host: string, origin?: string) =>
      (await rawUpgrade("127.0.0.1", port, { Host: host, ...(origin === undefined ? {} : { Origin: origin }) })).status;
    expect(await upgrade(`localhost:${port}`, `http://localhost:${port}`)).toBe(101);
    expect(await upgrade(`127.0.0.1:${port}`, `http://127.0.0.1:${port}`)).toBe(101);
    expect(await upgrade(`localhost:${port}`)).toBe(101);
    expect(await upgrade(`localhost:${port}`, "https://evil.example")).toBe(403);
    expect(await upgrade(`localhost:${port}`, `http://127.0.0.1:${port}`)).toBe(403);
    expect(await upgrade(`localhost:${port}`, `http://localhost:${port + 1}`)).toBe(403);
    expect(await upgrade(`localhost:${port}`, "null")).toBe(403);
    // A rebound name is refused before its Origin is even looked at.
    expect(await upgrade(`evil.example:${port}`, `http://evil.example:${port}`)).toBe(421);
  });

  test("a real WebSocket client with a foreign Origin is refused and hears no frame; with its own origin it listens", async () => {
    const { agent, port } = await agentWithHttp("127.0.0.1:0");
    const feed = agent.proc.stdin as import("bun").FileSink;
    const url = `ws://localhost:${port}/ws`;

    // Bun's WebSocket takes extra headers; a browser sends the page's origin here.
    const evil = new WebSocket(url, { headers: { Origin: "https://evil.example" } } as unknown as string[]);
    let evilMessages = 0;
    evil.onmessage = () => evilMessages++;
    const evilEnd = await new Promise<string>((resolve) => {
      evil.onopen = () => resolve("open");
      evil.onerror = () => resolve("error");
      evil.onclose = () => resolve("close");
    });
    expect(evilEnd).not.toBe("open");

    const own = new WebSocket(url, { headers: { Origin: `http://localhost:${port}` } } as unknown as string[]);
    own.binaryType = "arraybuffer";
    defer(() => own.close());
    let frames = 0;
    const hello = new Promise<{ type: string }>((resolve) => {
      own.onmessage = (e) => {
        if (typeof e.data !== "string") frames++;
        else if (JSON.parse(e.data).type === "hello") resolve(JSON.parse(e.data));
      };
    });
    expect((await hello).type).toBe("hello");
    own.send(JSON.stringify({ listen: true }));
    // Frames fed until one reaches the listener: the first may come before the agent has taken the listen.
    let fed = 0;
    await until(async () => {
      feed.write(indexedWire(fed, fed + 10));
      fed += 10;
      await feed.flush();
      await Bun.sleep(100);
      return frames > 0;
    }, "a frame at the same-origin listener");
    expect(evilMessages).toBe(0);
  });
});

describe("allowedHosts", () => {
  test("on port 80 a browser leaves the port out: the server's names count alone too; on another port only with it", () => {
    const on80 = allowedHosts({ host: "127.0.0.1", port: 80 });
    for (const host of ["localhost", "127.0.0.1", "[::1]", "localhost:80"]) expect([host, on80.has(host)]).toEqual([host, true]);
    const on8080 = allowedHosts({ host: "127.0.0.1", port: 8080 });
    for (const host of ["localhost", "127.0.0.1", "localhost:80"]) expect([host, on8080.has(host)]).toEqual([host, false]);
    expect(on8080.has("localhost:8080")).toBe(true);
  });
});
