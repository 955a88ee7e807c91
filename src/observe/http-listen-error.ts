/** Where an HTTP endpoint listens. */
export interface ListenAddress {
  host: string;
  port: number;
}

/** The address a listen host resolves to first (as a bind takes it), or undefined when it resolves to none. */
export async function resolvedAddress(host: string): Promise<string | undefined> {
  return (await Bun.dns.lookup(host).catch(() => []))[0]?.address;
}

/**
 * Do two listen addresses name one socket? The same port and host, or hosts
 * spelled apart that resolve alike ("localhost" and "127.0.0.1"): bound
 * twice they would refuse each other, where the operator asked for one server.
 */
export async function oneSocket(a: ListenAddress, b: ListenAddress): Promise<boolean> {
  if (a.port !== b.port) return false;
  if (a.host === b.host) return true;
  const [x, y] = await Promise.all([resolvedAddress(a.host), resolvedAddress(b.host)]);
  return x !== undefined && x === y;
}

/** An HTTP endpoint could not listen at its address; `code` is the errno (EADDRINUSE, EADDRNOTAVAIL, ...). */
export class HttpListenError extends Error {
  constructor(
    readonly address: ListenAddress,
    readonly code: string,
  ) {
    super(`cannot listen at ${address.host}:${address.port} (${code})`);
    this.name = "HttpListenError";
  }
}
