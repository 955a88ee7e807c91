import type { Server } from "bun";
import { HttpConnectionBound, HttpFront } from "./http-front.ts";
import { HttpListenError, resolvedAddress, type ListenAddress } from "./http-listen-error.ts";
import { allowedHosts, crossOrigin, misdirected } from "./host-check.ts";
import type { AgentMetrics } from "./metrics.ts";
import type { MonitorHub } from "./monitor/hub.ts";
import pageText from "./monitor/page.html" with { type: "text" };

// The process-wide bound its callers share, loaded with this module (only when asked for).
export { HttpConnectionBound, HttpListenError, type ListenAddress };

// Imported as text (embedded in the compiled binary); the type declarations only know HTML bundles.
const page = pageText as unknown as string;

/**
 * What a role says about itself on /healthz: its role and uptime, and its
 * channel with its channel end's readings (serve: `channels`, each channel's).
 * Not `healthy` is answered 503 (same body), so a probe that reads only the
 * status code (`curl -f`, a supervisor's check) sees it.
 */
export interface HealthReport {
  role: string;
  healthy: boolean;
  uptime_seconds: number;
  [field: string]: unknown;
}

/** What one HTTP listener serves: metrics and health, the monitor, or both. */
export interface HttpRoutes {
  metrics?: { registry: AgentMetrics; health: () => HealthReport };
  monitor?: MonitorHub;
}

/**
 * The agent's HTTP endpoint: `/metrics` (Prometheus text format) and
 * `/healthz` (JSON) with --metrics; the monitor page at `/` and its
 * WebSocket at `/ws` with --monitor. Both can share one address. Binds where
 * it is told (the CLI defaults the host to loopback) and answers only
 * requests sent to it by its own address or an allowed name (host-check.ts).
 * The server itself listens on a Unix socket in the abstract namespace
 * (no file to leave behind, however the process ends); the address is an
 * HttpFront, which bounds the connections.
 */
export class AgentHttpServer {
  private constructor(
    private readonly server: Server<unknown>,
    private readonly front: HttpFront,
    private readonly host: string,
  ) {}

  /**
   * Listens at `address`, answering requests whose Host is its own or one of
   * `allowHosts`, with as many connections at once as `bound` (shared by the
   * process's servers) has places for; throws HttpListenError when it
   * cannot (a port in use, say).
   */
  static async start(address: ListenAddress, routes: HttpRoutes, allowHosts: readonly string[] = [], bound = new HttpConnectionBound()): Promise<AgentHttpServer> {
    // Known once bound (port 0 picks the port); no request is handled before.
    let hosts = new Set<string>();
    // The server's own socket: an abstract name (this process's pid, and random), reached through the front.
    const name = `\0audio-agent-http-${process.pid}-${crypto.randomUUID()}`;
    let front: HttpFront;
    try {
      front = HttpFront.listen(address.host, address.port, name, bound);
    } catch (e) {
      // A host that resolves to nothing fails with whatever errno was left over (ENOENT, EINVAL): ask.
      const resolves = (await resolvedAddress(address.host)) !== undefined;
      throw new HttpListenError(address, resolves ? ((e as NodeJS.ErrnoException).code ?? (e as Error).message) : "ENOTFOUND");
    }
    let server;
    try {
      server = Bun.serve<{ listening: boolean; dropped: number }>({
        unix: name,
        fetch: async (request, srv) => {
          const response = misdirected(request, hosts) ?? notAllowed(request) ?? (await route(request, srv, routes));
          // Bun adds its implicit text type to a GET's answer only: HEAD must carry the same headers.
          if (response && !response.headers.has("content-type")) response.headers.set("content-type", "text/plain; charset=utf-8");
          return response;
        },
        websocket: routes.monitor?.websocket ?? { message() {} },
      });
    } catch (e) {
      await front.stop(0);
      throw e;
    }
    hosts = allowedHosts({ host: address.host, port: front.port }, allowHosts);
    return new AgentHttpServer(server as Server<unknown>, front, address.host);
  }

  get url(): string {
    const host = this.host.includes(":") ? `[${this.host}]` : this.host;
    return new URL(`http://${host}:${this.front.port}/`).toString();
  }

  get port(): number {
    return this.front.port;
  }

  /** The server's connections close first: the front carries what they sent last (a viewer's goodbye), then closes too. */
  async stop(): Promise<void> {
    await this.server.stop(true);
    await this.front.stop();
  }
}

/** Every resource here is read-only: GET (a WebSocket upgrade is one) and HEAD. */
function notAllowed(request: Request): Response | undefined {
  if (request.method === "GET" || request.method === "HEAD") return undefined;
  return new Response(`method ${request.method} not allowed; use GET or HEAD\n`, { status: 405, headers: { allow: "GET, HEAD" } });
}

async function route(request: Request, server: Bun.Server<{ listening: boolean; dropped: number }>, { metrics, monitor }: HttpRoutes) {
  const { pathname } = new URL(request.url);
  if (metrics && pathname === "/metrics") {
    return new Response(await metrics.registry.text(), {
      headers: { "content-type": metrics.registry.contentType },
    });
  }
  if (metrics && pathname === "/healthz") {
    const report = metrics.health();
    return Response.json(report, { status: report.healthy ? 200 : 503 });
  }
  if (monitor && (pathname === "/" || pathname === "/monitor")) {
    return new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } });
  }
  if (monitor && pathname === "/ws") return crossOrigin(request) ?? monitor.upgrade(request, server);
  if (monitor && pathname === "/figures") return Response.json(monitor.current());
  const paths = [...(metrics ? ["/metrics", "/healthz"] : []), ...(monitor ? ["/", "/ws"] : [])];
  return new Response(`not found; try ${paths.join(", ")}\n`, { status: 404 });
}
