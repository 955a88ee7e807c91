import type { Server } from "bun";
import type { AgentMetrics } from "./metrics.ts";

export interface ListenAddress {
  host: string;
  port: number;
}

/** What a role says about itself on /healthz. */
export interface HealthFigures {
  connected: boolean;
  frames: number;
  drops: number;
  [key: string]: unknown;
}

export interface HealthReport extends HealthFigures {
  role: string;
  channel: string;
  uptime_seconds: number;
}

/**
 * `/metrics` (Prometheus text format) and `/healthz` (JSON) over HTTP.
 * Binds where it is told; the CLI defaults the host to loopback.
 */
export class MetricsServer {
  private constructor(private readonly server: Server<undefined>) {}

  static start(address: ListenAddress, metrics: AgentMetrics, health: () => HealthReport): MetricsServer {
    const server = Bun.serve({
      hostname: address.host,
      port: address.port,
      fetch: async (request) => {
        const { pathname } = new URL(request.url);
        if (pathname === "/metrics") {
          return new Response(await metrics.text(), { headers: { "content-type": metrics.contentType } });
        }
        if (pathname === "/healthz") return Response.json(health());
        return new Response("not found: try /metrics or /healthz\n", { status: 404 });
      },
    });
    return new MetricsServer(server);
  }

  get url(): string {
    return this.server.url.toString();
  }

  get port(): number {
    return this.server.port ?? 0;
  }

  async stop(): Promise<void> {
    await this.server.stop(true);
  }
}
