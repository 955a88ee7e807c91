import type { Server, Socket } from "bun";
import { lstatSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { probeUnixSocket } from "../io/unix-probe.ts";
import { descriptorLimit, HttpConnectionBound, HttpFront, MAX_HTTP_CONNECTIONS } from "./http-front.ts";
import { HttpListenError, resolvedAddress, type ListenAddress } from "./http-listen-error.ts";
import { allowedHosts, type BoundAddress, crossOrigin, misdirected } from "./host-check.ts";
import { agentOwner, localPeerUid, mayConnect, thisMachine } from "./local-peer.ts";
import type { AgentMetrics } from "./metrics.ts";
import type { MonitorHub } from "./monitor/hub.ts";
import pageText from "./monitor/page.html" with { type: "text" };

// The process-wide bound its callers share, loaded with this module (only when asked for).
export { descriptorLimit, HttpConnectionBound, HttpListenError, MAX_HTTP_CONNECTIONS, type ListenAddress };

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
  /**
   * Who of this machine's users may have the monitor (it plays the audio):
   * a peer of another uid gets 403 on the monitor's paths, and the rest
   * (/metrics, /healthz) as anyone. Default: the agent's user and root.
   */
  audience?: (uid: number) => boolean;
}

const monitorPage = () => new Response(page, { headers: { "content-type": "text/html; charset=utf-8" } });

type MonitorServer = Bun.Server<{ listening: boolean; dropped: number }>;

/** The monitor's paths and what each answers: only its audience is given them. */
const MONITOR_ROUTES: Record<string, (request: Request, server: MonitorServer, monitor: MonitorHub) => Response | undefined> = {
  "/": monitorPage,
  "/monitor": monitorPage,
  "/ws": (request, server, monitor) => crossOrigin(request) ?? monitor.upgrade(request, server),
  "/figures": (_request, _server, monitor) => Response.json(monitor.current()),
};

/**
 * The agent's HTTP endpoint: `/metrics` (Prometheus text format) and
 * `/healthz` (JSON) with --metrics; the monitor page at `/` and its
 * WebSocket at `/ws` with --monitor. Both can share one address. Binds where
 * it is told (the CLI defaults the host to loopback) and answers only
 * requests sent to it by its own address or an allowed name (host-check.ts).
 * The server itself listens on a Unix socket in a directory of its own that
 * only the agent's user may enter; the address is an HttpFront, which bounds
 * the connections and carries each peer of this machine that is not of the
 * monitor's audience to a second server without the monitor.
 */
export class AgentHttpServer {
  private constructor(
    private readonly server: Server<unknown>,
    private readonly front: HttpFront,
    private readonly host: string,
    /** The monitor's second server, for the peers not of its audience. */
    private readonly outsiders: Server<unknown> | undefined,
    /** The servers' own directory, removed at stop. */
    private readonly dir: string,
  ) {
    process.on("exit", this.removeAtExit);
  }

  /** An exit before stop() (a second signal, a failure that ends the process at once) removes the directory still. */
  private readonly removeAtExit = () => rmSync(this.dir, { recursive: true, force: true });

  /**
   * Listens at `address`, answering requests whose Host is its own or one of
   * `allowHosts`, with as many connections at once as `bound` (shared by the
   * process's servers) has places for; throws HttpListenError when it
   * cannot (a port in use, say).
   */
  static async start(address: ListenAddress, routes: HttpRoutes, allowHosts: readonly string[] = [], bound = new HttpConnectionBound()): Promise<AgentHttpServer> {
    // Known once bound (port 0 picks the port); no request is handled before.
    let hosts = new Set<string>();
    let at: BoundAddress | undefined;
    const dir = await ownDirectory();
    const sockets = { all: join(dir, "all"), outsiders: join(dir, "outsiders") };
    const audience = routes.audience ?? ((uid: number) => mayConnect(uid, 0o600));
    // Each connection of a peer on this machine goes by the uid owning its socket; one elsewhere (a wider bind) has none.
    const backendFor = (client: Socket<unknown>): string => {
      if (!routes.monitor) return sockets.all;
      const uid = localPeerUid({ address: client.remoteAddress, port: client.remotePort }, { address: client.localAddress, port: client.localPort });
      // A peer at one of this machine's addresses whose socket the kernel does not name is gone already, or no one to
      // trust; one whose address is gone (reset before it was accepted) could be anyone.
      if (uid === undefined) return client.remoteAddress === undefined || thisMachine(client.remoteAddress) ? sockets.outsiders : sockets.all;
      return audience(uid) ? sockets.all : sockets.outsiders;
    };
    let front: HttpFront;
    try {
      front = HttpFront.listen(address.host, address.port, backendFor, bound);
    } catch (e) {
      rmSync(dir, { recursive: true, force: true });
      // A host that resolves to nothing fails with whatever errno was left over (ENOENT, EINVAL): ask.
      const resolves = (await resolvedAddress(address.host)) !== undefined;
      throw new HttpListenError(address, resolves ? ((e as NodeJS.ErrnoException).code ?? (e as Error).message) : "ENOTFOUND");
    }
    const serve = (unix: string, served: HttpRoutes, refused: boolean) =>
      Bun.serve<{ listening: boolean; dropped: number }>({
        unix,
        fetch: async (request, srv) => {
          const response = misdirected(request, hosts, at) ?? notAllowed(request) ?? (refused ? notAudience(request) : undefined) ?? (await route(request, srv, served));
          // Bun adds its implicit text type to a GET's answer only: HEAD must carry the same headers.
          if (response && !response.headers.has("content-type")) response.headers.set("content-type", "text/plain; charset=utf-8");
          return response;
        },
        websocket: served.monitor?.websocket ?? { message() {} },
      }) as Server<unknown>;
    let server: Server<unknown> | undefined;
    let outsiders: Server<unknown> | undefined;
    try {
      server = serve(sockets.all, routes, false);
      if (routes.monitor) outsiders = serve(sockets.outsiders, { metrics: routes.metrics }, true);
    } catch (e) {
      await server?.stop(true);
      await front.stop(0);
      rmSync(dir, { recursive: true, force: true });
      throw e;
    }
    at = { host: address.host, port: front.port };
    hosts = allowedHosts(at, allowHosts);
    return new AgentHttpServer(server, front, address.host, outsiders, dir);
  }

  get url(): string {
    const host = this.host.includes(":") ? `[${this.host}]` : this.host;
    return new URL(`http://${host}:${this.front.port}/`).toString();
  }

  get port(): number {
    return this.front.port;
  }

  /** Why the kernel's queue of connections waiting for the front is Bun's own (512), not ACCEPT_QUEUE; undefined when it is bounded. */
  get acceptQueueUnbounded(): string | undefined {
    return this.front.acceptQueueUnbounded;
  }

  /** The server's connections close first: the front carries what they sent last (a viewer's goodbye), then closes too. */
  async stop(): Promise<void> {
    await this.server.stop(true);
    await this.outsiders?.stop(true);
    await this.front.stop();
    this.removeAtExit();
    process.off("exit", this.removeAtExit);
  }
}

const OWN_DIRECTORY = "audio-agent-http-";
/** An own directory's name, with the pid of the agent that made it. */
const LEFT_BEHIND = new RegExp(`^${OWN_DIRECTORY}(\\d+)-`);

/**
 * A directory for the servers' sockets that only the agent's user may enter
 * (mkdtemp makes it 0700), so that no one else reaches them past the front
 * (its bound, and which of them a peer is carried to): in TMPDIR, or /tmp
 * if that cannot be. One an agent killed left behind is removed first: the
 * agent's user's, of a pid that is gone, whose server no longer answers
 * (an agent in another pid namespace sharing TMPDIR has a pid that is gone
 * here).
 */
async function ownDirectory(): Promise<string> {
  const failures: string[] = [];
  for (const base of new Set([tmpdir(), "/tmp"])) {
    await removeLeftBehind(base);
    try {
      return mkdtempSync(join(base, `${OWN_DIRECTORY}${process.pid}-`));
    } catch (e) {
      failures.push(`${base} (${(e as NodeJS.ErrnoException).code ?? e})`);
    }
  }
  throw new Error(`cannot make a directory for the sockets of the HTTP servers (--metrics, --monitor) in ${failures.join(" or ")}: set TMPDIR to a directory the agent may write`);
}

async function removeLeftBehind(base: string): Promise<void> {
  const { uid } = agentOwner();
  let names: string[] = [];
  try {
    names = readdirSync(base);
  } catch {}
  for (const name of names) {
    const pid = Number(LEFT_BEHIND.exec(name)?.[1]);
    if (!pid || pid === process.pid || alive(pid)) continue;
    try {
      const stats = lstatSync(join(base, name));
      if (stats.isDirectory() && stats.uid === uid && (await probeUnixSocket(join(base, name, "all"), 1000)) === false) rmSync(join(base, name), { recursive: true, force: true });
    } catch {}
  }
}


function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code !== "ESRCH";
  }
}

/** The monitor's paths, to a peer not of its audience. */
function notAudience(request: Request): Response | undefined {
  if (!Object.hasOwn(MONITOR_ROUTES, new URL(request.url).pathname)) return undefined;
  return new Response("the monitor is served only to the users who may connect to the agent's socket (--socket-mode)\n", { status: 403 });
}

/** Every resource here is read-only: GET (a WebSocket upgrade is one) and HEAD. */
function notAllowed(request: Request): Response | undefined {
  if (request.method === "GET" || request.method === "HEAD") return undefined;
  return new Response(`method ${request.method} not allowed; use GET or HEAD\n`, { status: 405, headers: { allow: "GET, HEAD" } });
}

/** The exposition being answered in this turn of the event loop, by registry. */
const renders = new WeakMap<AgentMetrics, Promise<string>>();

/**
 * The registry's exposition for a scrape: the first scrape of a turn of the
 * event loop renders it (1.5-2 ms of the thread that paces the audio), those
 * after it in the same turn share that text. Bun answers every request ready
 * at once in one turn, before any timer: 16-32 scrapers in a loop rendered
 * once each, back to back, and held the audio 40-170 ms at a time.
 */
function exposition(registry: AgentMetrics): Promise<string> {
  let text = renders.get(registry);
  if (!text) {
    text = registry.text();
    renders.set(registry, text);
    setImmediate(() => renders.delete(registry));
  }
  return text;
}

async function route(request: Request, server: MonitorServer, { metrics, monitor }: HttpRoutes) {
  const { pathname } = new URL(request.url);
  if (metrics && pathname === "/metrics") {
    return new Response(await exposition(metrics.registry), {
      headers: { "content-type": metrics.registry.contentType },
    });
  }
  if (metrics && pathname === "/healthz") {
    const report = metrics.health();
    return Response.json(report, { status: report.healthy ? 200 : 503 });
  }
  if (monitor && Object.hasOwn(MONITOR_ROUTES, pathname)) return MONITOR_ROUTES[pathname]!(request, server, monitor);
  const paths = [...(metrics ? ["/metrics", "/healthz"] : []), ...(monitor ? ["/", "/ws"] : [])];
  return new Response(`not found; try ${paths.join(", ")}\n`, { status: 404 });
}
