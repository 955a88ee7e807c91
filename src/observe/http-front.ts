import type { Socket, TCPSocketListener } from "bun";

/** HTTP connections served at once; past that a newcomer is answered 503 and closed. */
export const MAX_HTTP_CONNECTIONS = 32;

const BUSY = new TextEncoder().encode(
  `HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 38\r\nRetry-After: 1\r\n\r\ntoo many connections; try again later\n`,
);

/** One side of a connection carried through: its other side once there, and what waits for that side to take it. */
interface Side {
  other: Socket<Side> | undefined;
  /** Bytes from this side that the other has not taken yet (or that wait for it to connect). */
  waiting: Uint8Array[];
  /** It has sent its last (a client that half-closes after its request, as `nc -N` does): passed on once what waits is taken. */
  ended: boolean;
  closed: boolean;
}

/**
 * A TCP listener in front of the HTTP server (which listens on a Unix
 * socket of its own), carrying each connection's bytes both ways and counting
 * them: Bun.serve has no bound on its connections, and each holds a
 * descriptor, so a peer holding many open (idle, or sending a header a byte
 * at a time) would leave the process none for a new audio client. Past
 * `cap`, a newcomer is answered 503 and closed at once. Each connection
 * carried costs two more descriptors (the Unix one's ends).
 */
export class HttpFront {
  private open = 0;
  /** Settles when the last connection carried has closed (stop). */
  private allClosed: PromiseWithResolvers<void> | undefined;
  /** Connections turned away so far (503). */
  refused = 0;

  private constructor(private readonly listener: TCPSocketListener<Side>) {}

  /** Listens at host:port (throws as Bun.listen does: EADDRINUSE, ...) and carries each connection to the Unix socket `backend`. */
  static listen(host: string, port: number, backend: string, cap = MAX_HTTP_CONNECTIONS): HttpFront {
    let front!: HttpFront;
    const listener = Bun.listen<Side>({
      hostname: host,
      port,
      allowHalfOpen: true,
      data: { other: undefined, waiting: [], ended: false, closed: false },
      socket: {
        binaryType: "uint8array",
        open: (client) => {
          client.data = { other: undefined, waiting: [], ended: false, closed: false };
          if (front.open >= cap) {
            front.refused++;
            client.data.closed = true;
            client.end(BUSY);
            return;
          }
          front.open++;
          front.carry(client, backend);
        },
        data: (client, chunk) => forward(client, chunk),
        end: (client) => ended(client),
        drain: (client) => flush(client),
        close: (client) => {
          // Turned away: never counted.
          if (client.data.closed) return;
          front.open--;
          closed(client);
          if (front.open === 0) front.allClosed?.resolve();
        },
        error: () => {},
      },
    });
    front = new HttpFront(listener);
    return front;
  }

  get port(): number {
    return this.listener.port;
  }

  /** Connections carried now. */
  get connections(): number {
    return this.open;
  }

  /**
   * Stops listening; each connection carried gets what its server side sent
   * last (the monitor's goodbye) and is closed as that side closes, within
   * `ms`; what is left then is cut off.
   */
  async stop(ms = 1000): Promise<void> {
    this.listener.stop(false);
    if (this.open > 0) {
      this.allClosed = Promise.withResolvers<void>();
      const late = setTimeout(this.allClosed.resolve, ms);
      await this.allClosed.promise;
      clearTimeout(late);
    }
    this.listener.stop(true);
  }

  /** Connects `client` through to the server: what it sends meanwhile waits. */
  private carry(client: Socket<Side>, backend: string): void {
    Bun.connect<Side>({
      unix: backend,
      data: { other: client, waiting: [], ended: false, closed: false },
      socket: {
        binaryType: "uint8array",
        open: (server) => {
          server.data = { other: client, waiting: [], ended: false, closed: false };
          if (client.data.closed) return void server.end();
          client.data.other = server;
          flush(server);
        },
        data: (server, chunk) => forward(server, chunk),
        drain: (server) => flush(server),
        close: (server) => closed(server),
        error: () => {},
      },
    }).catch(() => client.end());
  }
}

/** Hands `chunk` from `from` to its other side, keeping order; what that side does not take waits, and `from` is paused until it does. */
function forward(from: Socket<Side>, chunk: Uint8Array): void {
  const to = from.data.other;
  if (!to || from.data.waiting.length > 0) {
    from.data.waiting.push(chunk.slice());
    from.pause();
    return;
  }
  const written = to.write(chunk);
  if (written < chunk.length) {
    from.data.waiting.push(chunk.slice(Math.max(0, written)));
    from.pause();
  }
}

/**
 * Offers what waits from `to`'s other side to `to` again (it drained, or
 * just connected); once all is taken, that side is resumed, or, if it has
 * closed meanwhile, `to` is ended: its last bytes (an answer) arrive whole.
 */
function flush(to: Socket<Side>): void {
  const from = to.data.other;
  if (!from) return;
  const waiting = from.data.waiting;
  while (waiting.length > 0) {
    const chunk = waiting[0]!;
    const written = to.write(chunk);
    if (written < chunk.length) {
      waiting[0] = chunk.subarray(Math.max(0, written));
      return;
    }
    waiting.shift();
  }
  if (from.data.closed) to.end();
  else if (from.data.ended) to.shutdown();
  else from.resume();
}

/** `side` has sent its last: its other side is told so (half-closed) once it has taken what `side` sent. */
function ended(side: Socket<Side>): void {
  side.data.ended = true;
  const other = side.data.other;
  if (other && side.data.waiting.length === 0) other.shutdown();
}

/** `side` has closed: its other side is ended once it has taken what `side` sent (at once when nothing waits). */
function closed(side: Socket<Side>): void {
  side.data.closed = true;
  const other = side.data.other;
  if (other && side.data.waiting.length === 0) other.end();
}
