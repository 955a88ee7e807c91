/**
 * What the agent's HTTP server answers, in process, over real sockets:
 * methods (GET and HEAD only), a request the Host check must refuse (no Host,
 * sent raw since fetch never sends one), and the exact Prometheus content
 * type of /metrics, and what a stop takes back.
 */
import { describe, expect, spyOn, test } from "bun:test";
import type { Socket } from "bun";
import { Registry } from "prom-client";
import { AgentHttpServer } from "../../src/observe/http-server.ts";
import { LatencyMonitor } from "../../src/observe/latency-monitor.ts";
import { AgentMetrics } from "../../src/observe/metrics.ts";
import { MonitorHub } from "../../src/observe/monitor/hub.ts";
import { useCleanup } from "../support/cleanup.ts";
import { rawRequest, rawUpgrade } from "../support/http.ts";
import { idleSenderReadings, stillFigures } from "../support/readings.ts";
import { value } from "../support/metrics.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

/** A sender's readings before its first client. */
const idleReadings = () =>
  idleSenderReadings({
    dropped: { no_client: 3 },
    queueCapacity: 500,
    socketBuffers: { ...idleSenderReadings().socketBuffers, requested: { sendBytes: 131072, receiveBytes: 131072 } },
  });

/** /metrics, /healthz and the monitor on one loopback port; everything stopped after the test. */
async function agentServer(): Promise<{ server: AgentHttpServer; port: number; metrics: AgentMetrics }> {
  const metrics = new AgentMetrics([{ read: idleReadings, latency: new LatencyMonitor() }]);
  const hub = new MonitorHub({ role: "output serve", channel: "output", socket: "/tmp/x.sock" }, () => stillFigures());
  defer(() => hub.stop());
  const server = await AgentHttpServer.start(
    { host: "127.0.0.1", port: 0 },
    { metrics: { registry: metrics, health: () => ({ role: "output serve", healthy: true, channel: "output", uptime_seconds: 1 }) }, monitor: hub },
  );
  defer(() => server.stop());
  return { server, port: server.port, metrics };
}

const PATHS = ["/metrics", "/healthz", "/", "/monitor", "/figures", "/ws", "/nope"];

describe("methods: GET and HEAD only", () => {
  test("POST, PUT, DELETE, PATCH, OPTIONS and TRACE get 405 with Allow: GET, HEAD on every path, and none of the content", async () => {
    const { port } = await agentServer();
    for (const method of ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]) {
      for (const path of PATHS) {
        const r = await rawRequest("127.0.0.1", port, `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Length: 0`);
        expect([method, path, r.status, r.headers.allow]).toEqual([method, path, 405, "GET, HEAD"]);
        expect(r.body).toContain(`method ${method} not allowed`);
        expect(r.body).not.toContain("jetkvm_");
        expect(r.body).not.toContain("<html");
      }
    }
    // What fetch sends (a body and all) gets the same.
    const posted = await fetch(`http://127.0.0.1:${port}/metrics`, { method: "POST", body: "x=1" });
    expect(posted.status).toBe(405);
    expect(posted.headers.get("allow")).toBe("GET, HEAD");
    await posted.text();
  });

  test("GET serves each path; HEAD gives GET's status and headers without the body", async () => {
    const { port } = await agentServer();
    const expected: Record<string, [number, string]> = {
      "/metrics": [200, "jetkvm_audio_frames_sent_total"],
      "/healthz": [200, '"role":"output serve"'],
      "/": [200, "<html"],
      "/monitor": [200, "<html"],
      "/figures": [200, '"queueCapacity":0'],
      // A plain GET of the WebSocket route: it is a GET, but not an upgrade.
      "/ws": [400, "expected a WebSocket upgrade"],
      "/nope": [404, "not found"],
    };
    for (const path of PATHS) {
      const [status, content] = expected[path]!;
      const got = await rawRequest("127.0.0.1", port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}`);
      expect([path, got.status]).toEqual([path, status]);
      expect(got.body).toContain(content);
      const head = await rawRequest("127.0.0.1", port, `HEAD ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}`);
      expect([path, head.status, head.body]).toEqual([path, status, ""]);
      expect(head.headers["content-type"]).toBe(got.headers["content-type"]!);
      expect(Number(head.headers["content-length"])).toBeGreaterThan(0);
    }
    // The WebSocket upgrade is a GET: still served.
    expect((await rawUpgrade("127.0.0.1", port, { Host: `127.0.0.1:${port}`, Origin: `http://127.0.0.1:${port}` })).status).toBe(101);
  });
});

describe("the Host check: a missing Host", () => {
  test("a request without Host (HTTP/1.0) is refused as a wrong Host is: 421, no content", async () => {
    const { port } = await agentServer();
    for (const path of PATHS) {
      const r = await rawRequest("127.0.0.1", port, `GET ${path} HTTP/1.0`);
      expect([path, r.status]).toEqual([path, 421]);
      expect(r.body).toContain('misdirected request: Host ""');
      expect(r.body).not.toContain("jetkvm_");
    }
    // HTTP/1.1 without Host: Bun refuses it itself.
    expect((await rawRequest("127.0.0.1", port, "GET /metrics HTTP/1.1")).status).toBe(400);
    // An empty Host is no better.
    expect((await rawRequest("127.0.0.1", port, "GET /metrics HTTP/1.1\r\nHost: ")).status).toBe(421);
  });
});

describe("clients as scripts write them", () => {
  test("a client that half-closes after its request (`nc -N`, `printf ... | nc`) gets the whole answer, then the end", async () => {
    const { port } = await agentServer();
    let text = "";
    const ended = Promise.withResolvers<void>();
    const socket = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      allowHalfOpen: true,
      socket: { data: (_s, chunk) => void (text += Buffer.from(chunk).toString()), close: () => ended.resolve(), error: () => {} },
    });
    socket.write(`GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
    socket.shutdown();
    await ended.promise;
    expect(text).toStartWith("HTTP/1.1 200 OK\r\n");
    const [, body] = text.split("\r\n\r\n");
    expect(value(body!, "jetkvm_audio_frames_dropped_total")).toBe(3);
  });
});

/** Keep-alive HTTP/1.1 connections to `port`, each once through to the server (a first GET /healthz answered): what each received, whole answers counted by their Content-Length. */
async function keptAlive(port: number, count: number): Promise<{ sockets: Socket<undefined>[]; answers: () => number[] }> {
  const received = Array.from({ length: count }, () => "");
  const sockets: Socket<undefined>[] = [];
  for (let i = 0; i < count; i++) {
    sockets.push(await Bun.connect({ hostname: "127.0.0.1", port, socket: { data: (_s, chunk) => void (received[i] += Buffer.from(chunk).toString()), error: () => {} } }));
  }
  defer(() => sockets.forEach((s) => s.terminate()));
  const answers = () =>
    received.map((text) => {
      let whole = 0;
      for (let at = 0; ; whole++) {
        const head = text.indexOf("\r\n\r\n", at);
        const length = Number(/content-length: (\d+)/i.exec(text.slice(at, head))?.[1]);
        if (head < 0 || text.length < head + 4 + length) return whole;
        at = head + 4 + length;
      }
    });
  sockets.forEach((s) => s.write(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`));
  await until(() => answers().every((n) => n === 1), "each connection answered once");
  return { sockets, answers };
}

describe("/metrics scrapes at once", () => {
  // Bun answers every request ready at once in one turn of the loop that paces the audio: each rendering the registry held it in turn.
  test("scrapes answered in one turn of the event loop share one render of the registry; a scrape in a later turn renders afresh", async () => {
    const { port, metrics } = await agentServer();
    const { sockets, answers } = await keptAlive(port, 8);
    const renders = spyOn(metrics, "text");
    // All eight written before the loop turns again: they reach the server together.
    sockets.forEach((s) => s.write(`GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`));
    await until(() => answers().every((n) => n === 2), "each scrape answered");
    expect(renders).toHaveBeenCalledTimes(1);
    const later = await rawRequest("127.0.0.1", port, `GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:${port}`);
    expect(value(later.body, "jetkvm_audio_frames_dropped_total")).toBe(3);
    expect(renders).toHaveBeenCalledTimes(2);
  });
});

describe("/metrics content type", () => {
  test("exactly prom-client's registry content type (the Prometheus text format 0.0.4)", async () => {
    const { port, metrics } = await agentServer();
    expect(metrics.contentType).toBe(Registry.PROMETHEUS_CONTENT_TYPE);
    expect(metrics.contentType).toBe("text/plain; version=0.0.4; charset=utf-8");
    const response = await fetch(`http://127.0.0.1:${port}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(value(await response.text(), "jetkvm_audio_frames_dropped_total")).toBe(3);
    // HEAD: the same type.
    const head = await fetch(`http://127.0.0.1:${port}/metrics`, { method: "HEAD" });
    expect(head.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  });
});

describe("stop", () => {
  // A process that runs roles one after another (the benchmark) starts and stops servers again and again.
  test("takes back the exit hook that removes the servers' directory: started and stopped three times, the process holds none of them", async () => {
    const before = process.listenerCount("exit");
    for (let i = 0; i < 3; i++) {
      const server = await AgentHttpServer.start({ host: "127.0.0.1", port: 0 }, { metrics: { registry: new AgentMetrics([{ read: idleReadings, latency: new LatencyMonitor() }]), health: () => ({ role: "output serve", healthy: true, channel: "output", uptime_seconds: 1 }) } });
      expect(process.listenerCount("exit")).toBe(before + 1);
      await server.stop();
      expect(process.listenerCount("exit")).toBe(before);
    }
  });
});
