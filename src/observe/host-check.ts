import { networkInterfaces } from "node:os";

/**
 * Which requests the HTTP endpoints answer: a page elsewhere must not reach
 * them through the operator's browser. DNS rebinding points a name the
 * attacker owns at this machine, so the browser sends that name in Host: a
 * request is answered only when its Host is this server's own address (the
 * loopback names for a loopback bind, this machine's addresses for a
 * wildcard bind) or a name the operator allowed, with the right port. A
 * WebSocket is not bound by the same-origin policy, so an upgrade that
 * carries an Origin (every browser sends one) must come from this very host.
 */

export interface BoundAddress {
  host: string;
  port: number;
}

const LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]"];

/** Whether a host in its Host form (hostForm) is a loopback one. */
function isLoopback(form: string): boolean {
  return form === "localhost" || form === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(form);
}

/** Whether a host in its Host form (hostForm) binds every address. */
function isWildcard(form: string): boolean {
  return form === "" || form === "0.0.0.0" || form === "[::]";
}

/**
 * A host as a browser writes it in a Host header: IPv6 in brackets, lower
 * case, an address in its one canonical spelling. A bind takes "0", "127.1"
 * or "[0:0:0:0:0:0:0:0]" as 0.0.0.0, 127.0.0.1 or [::]; named as given, such
 * a server would be neither loopback nor wildcard, and answer no request.
 */
function hostForm(host: string): string {
  const bracketed = host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
  try {
    return new URL(`http://${bracketed}/`).hostname;
  } catch {
    return bracketed.toLowerCase();
  }
}

/**
 * Every Host header value the server at `bound` answers to, but for a
 * wildcard bind's addresses of this machine, which misdirected() looks up as
 * each request comes (an address a DHCP lease gives after the start, or takes
 * back, counts from then on). Its own names count with its port (and alone
 * on port 80, where browsers leave the port out); an allowed name given with
 * a port counts as given, one without a port with the server's port or alone
 * (behind a proxy on 80 or 443).
 */
export function allowedHosts(bound: BoundAddress, allowed: readonly string[] = []): Set<string> {
  const own = [hostForm(bound.host)];
  if (isLoopback(own[0]!) || isWildcard(own[0]!)) own.push(...LOOPBACK_NAMES);
  const hosts = new Set<string>();
  for (const name of own) withPort(hosts, name, bound.port);
  for (const entry of allowed) {
    const name = entry.toLowerCase();
    if (/:\d+$/.test(name)) hosts.add(name);
    else hosts.add(`${name}:${bound.port}`).add(name);
  }
  return hosts;
}

/** Adds `name` with `port`, and alone on port 80. */
function withPort(hosts: Set<string>, name: string, port: number): Set<string> {
  hosts.add(`${name}:${port}`);
  if (port === 80) hosts.add(name);
  return hosts;
}

/** An address in a Host header (IPv4, or IPv6 in brackets), with a port or none: a rebinding name never costs a look at the interfaces. */
const ADDRESS_HOST = /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-f:.]+\])(:\d+)?$/;

/** Whether `host` is one of this machine's addresses now, with the port of `bound`, a wildcard bind. */
function machineAddress(host: string, bound: BoundAddress): boolean {
  if (!ADDRESS_HOST.test(host) || !isWildcard(hostForm(bound.host))) return false;
  const now = new Set<string>();
  for (const list of Object.values(networkInterfaces())) for (const a of list ?? []) withPort(now, hostForm(a.address), bound.port);
  return now.has(host);
}

/** 421 for a request whose Host is not one this server at `bound` answers to; undefined when it is. */
export function misdirected(request: Request, hosts: ReadonlySet<string>, bound?: BoundAddress): Response | undefined {
  const host = request.headers.get("host")?.toLowerCase();
  if (host !== undefined && (hosts.has(host) || (bound !== undefined && machineAddress(host, bound)))) return undefined;
  return new Response(`misdirected request: Host ${JSON.stringify(host ?? "")} is not this server's (see --http-allow-host)\n`, {
    status: 421,
  });
}

/** 403 for a WebSocket upgrade whose Origin is present and is not the Host it was sent to; undefined otherwise. */
export function crossOrigin(request: Request): Response | undefined {
  const origin = request.headers.get("origin");
  if (origin === null) return undefined;
  let originHost: string | undefined;
  try {
    originHost = new URL(origin).host.toLowerCase();
  } catch {
    // "null" (a sandboxed or file page) or garbage: not this host.
  }
  if (originHost !== undefined && originHost === request.headers.get("host")?.toLowerCase()) return undefined;
  return new Response(`cross-origin WebSocket refused: Origin ${JSON.stringify(origin)} is not this host\n`, { status: 403 });
}
