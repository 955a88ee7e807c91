/** Where an HTTP endpoint listens. */
export interface ListenAddress {
  host: string;
  port: number;
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
