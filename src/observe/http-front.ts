import type { Socket, TCPSocketListener } from "bun";
import { readFileSync } from "node:fs";
import { boundAcceptQueue } from "../io/accept-queue.ts";
import { unsentBytes } from "../io/unsent-bytes.ts";

/** HTTP connections served at once; past that a newcomer takes the place of an idle one (IDLE_MS), or is answered 503 and closed. */
export const MAX_HTTP_CONNECTIONS = 32;
/**
 * How long the server side of a connection must have sent nothing before,
 * with every place taken, the connection is let go for a newcomer (as a
 * server drains its idle keep-alive connections when it runs out): longer
 * than the monitor's second between figures, so a viewer is never taken for
 * idle, and shorter than the HTTP server's 10 s idle timeout. That timeout
 * closes a client trickling a header a byte at a time too (part of a header
 * does not put it off: closed within 12 s of coming, as Bun looks every 4 s),
 * but the place it frees goes to whoever comes first, and a peer that
 * connects again at once kept every place so.
 */
export const IDLE_MS = 5000;
/** How long a client whose server side has closed gets to take what is left for it. */
const LINGER_MS = 5000;
/**
 * How long a side may take nothing while bytes wait for it before the
 * connection is cut: as long as the monitor gives a viewer to answer a ping.
 * Its other side is not read meanwhile, so a server side that closes (a
 * viewer closed for its backlog) could otherwise wait on it for good.
 */
export const STALL_MS = 30_000;
/**
 * How often a side whose bytes wait is looked at for movement: what the
 * front wrote to its other side since, and whether the kernel's count of
 * what that side's peer has not taken yet fell. Bun's `drain` alone does not
 * tell: a TCP client reading slowly through a small receive buffer empties a
 * send buffer grown large so slowly that the kernel may not call the socket
 * writable again for longer than STALL_MS, though the client reads all along.
 */
const STALL_CHECK_MS = 3000;

/** How long a side may take nothing while bytes wait (STALL_MS), and how often it is looked at (STALL_CHECK_MS): a bound's, which a test may shorten. */
export interface StallTimes {
  stallMs: number;
  checkMs: number;
}
const STALL_TIMES: StallTimes = { stallMs: STALL_MS, checkMs: STALL_CHECK_MS };

const BUSY = new TextEncoder().encode(
  `HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 38\r\nRetry-After: 1\r\n\r\ntoo many connections; try again later\n`,
);

/** One side of a connection carried through: the client's (TCP) or the server's (Unix), its other side once there, and what waits for that side. */
interface Side {
  client: boolean;
  other: Socket<Side> | undefined;
  /** Bytes from this side that the other has not taken yet (or that wait for it to connect). */
  waiting: Uint8Array[];
  /** It has sent its last (a client that half-closes after its request, as `nc -N` does): passed on once what waits is taken. */
  ended: boolean;
  closed: boolean;
  /** While bytes wait: looks every `times.checkMs` whether they move, and cuts the connection once they have not for `times.stallMs`. */
  stall: ReturnType<typeof setTimeout> | undefined;
  /** Its bound's stall times. */
  times: StallTimes;
  /** performance.now() when what waits last moved (or began to wait). */
  moved: number;
  /** The other side's unsent bytes (io/unsent-bytes.ts) at the last look; -1 when the kernel did not say. */
  unsent: number;
  /** Bytes of what waits the other side has taken since the last look. */
  taken: number;
  /** A client's: performance.now() when its server side last sent it anything, or when it came. */
  heard: number;
}

/** Each connection carried holds this many descriptors: the client's, and both ends of its way to the server. */
const DESCRIPTORS_PER_CONNECTION = 3;
/** Descriptors kept for the rest of the process: its listeners, log, audio clients, a look-up's socket or file. */
const RESERVED_DESCRIPTORS = 32;

/**
 * The places for HTTP connections, shared by every listener of a process
 * (--metrics and --monitor on two addresses): the bound holds for the
 * process, whichever addresses its connections come to.
 */
export class HttpConnectionBound {
  /** The clients carried now, by every front sharing this bound, oldest first, each with its front. */
  private readonly carried = new Map<Socket<Side>, HttpFront>();
  /** Clients seen by every front sharing this bound, carried or turned away: a burst of them is what the process collects after (roles/connection-burst.ts). */
  connections = 0;
  constructor(
    readonly cap = MAX_HTTP_CONNECTIONS,
    readonly stallTimes: StallTimes = STALL_TIMES,
  ) {}

  /** A place for `client` of `front`: false when every place is taken and none of them is idle. */
  take(client: Socket<Side>, front: HttpFront): boolean {
    this.connections++;
    if (this.carried.size >= this.cap) {
      const idle = this.idlest();
      if (!idle) return false;
      this.carried.get(idle)!.letGo(idle);
    }
    this.carried.set(client, front);
    return true;
  }

  release(client: Socket<Side>): void {
    this.carried.delete(client);
  }

  /** How many of the clients carried are `front`'s. */
  carriedBy(front: HttpFront): number {
    let count = 0;
    for (const carrying of this.carried.values()) if (carrying === front) count++;
    return count;
  }

  /** The client carried whose server side has sent it nothing for longest, IDLE_MS at least; undefined if none has been idle that long. */
  private idlest(): Socket<Side> | undefined {
    let idlest: Socket<Side> | undefined;
    for (const client of this.carried.keys()) {
      if (!idlest || client.data.heard < idlest.data.heard) idlest = client;
    }
    return idlest && performance.now() - idlest.data.heard >= IDLE_MS ? idlest : undefined;
  }

  /**
   * MAX_HTTP_CONNECTIONS, or fewer (one at least) where the process's
   * descriptor limit has no room for theirs beside RESERVED_DESCRIPTORS:
   * out of descriptors, the servers behind the front accept nothing more
   * and the connections carried to them are never let go, and the audio
   * server accepts no new client, for good (Bun retries each accept at once,
   * a core's worth).
   */
  static within(limit = descriptorLimit()): HttpConnectionBound {
    if (limit === undefined) return new HttpConnectionBound();
    const room = Math.floor((limit - RESERVED_DESCRIPTORS) / DESCRIPTORS_PER_CONNECTION);
    return new HttpConnectionBound(Math.max(1, Math.min(MAX_HTTP_CONNECTIONS, room)));
  }
}

/** The process's descriptor limit (the soft one, which Bun raises to the hard one at start); undefined if /proc does not say. */
export function descriptorLimit(): number | undefined {
  try {
    const limit = /^Max open files\s+(\d+)/m.exec(readFileSync("/proc/self/limits", "utf8"))?.[1];
    return limit === undefined ? undefined : Number(limit);
  } catch {
    return undefined;
  }
}

const newSide = (times: StallTimes, client: boolean, other?: Socket<Side>): Side => ({
  client,
  other,
  times,
  waiting: [],
  ended: false,
  closed: false,
  stall: undefined,
  moved: 0,
  unsent: -1,
  taken: 0,
  heard: performance.now(),
});

/**
 * A TCP listener in front of the HTTP server (which listens on a Unix
 * socket of its own), carrying each connection's bytes both ways and counting
 * them: Bun.serve has no bound on its connections, and each holds a
 * descriptor, so a peer holding many open (idle, or sending a header a byte
 * at a time) would leave the process none for a new audio client. Past
 * the bound (the process's, shared by its fronts), a newcomer takes the
 * place of one idle for IDLE_MS, or is answered 503 and closed at once. Each connection
 * carried costs two more descriptors (the Unix one's ends), and no more than
 * it: a client that is gone takes its server side with it at once, and a
 * server side that closes (a monitor viewer closed for its backlog) takes its
 * client with it once the client has read what is left, or after LINGER_MS.
 * Each side reads no faster than the other takes (backpressure), so the
 * server sees a slow client as slow, and the front holds a chunk at most.
 */
export class HttpFront {
  /** Settles when the last connection carried has closed (stop). */
  private allClosed: PromiseWithResolvers<void> | undefined;

  private constructor(
    private readonly listener: TCPSocketListener<Side>,
    private readonly bound: HttpConnectionBound,
    /** Why the kernel's queue of connections waiting for it could not be bounded (ACCEPT_QUEUE, io/accept-queue.ts); undefined when it was. */
    readonly acceptQueueUnbounded: string | undefined,
  ) {}

  /**
   * Listens at host:port (throws as Bun.listen does: EADDRINUSE, ...) and
   * carries each connection to the Unix socket `backendFor` names for it,
   * while `bound` (the process's, shared with its other fronts) has a place
   * for it.
   */
  static listen(host: string, port: number, backendFor: (client: Socket<unknown>) => string, bound = new HttpConnectionBound()): HttpFront {
    let front!: HttpFront;
    // Each client's own Side, made as it is first seen: Bun may hand a socket reset early to `data` without `open`.
    const seen = (client: Socket<Side | undefined>): Socket<Side> => {
      if (!client.data) front.accept(client as Socket<Side>, backendFor);
      return client as Socket<Side>;
    };
    const listener = Bun.listen<Side | undefined>({
      hostname: host,
      port,
      allowHalfOpen: true,
      data: undefined,
      socket: {
        binaryType: "uint8array",
        open: (client) => void seen(client),
        data: (client, chunk) => {
          const carried = seen(client);
          if (!carried.data.closed) forward(carried, chunk);
        },
        end: (client) => ended(seen(client)),
        drain: (client) => flush(seen(client)),
        close: (client) => {
          // Never seen, or turned away: never counted.
          if (!client.data || client.data.closed) return;
          front.release(client as Socket<Side>);
        },
        error: () => {},
      },
    });
    front = new HttpFront(listener as unknown as TCPSocketListener<Side>, bound, boundAcceptQueue(listener));
    return front;
  }

  /** A client first seen: carried to the server, or with no place left in the bound answered 503 and closed. */
  private accept(client: Socket<Side>, backendFor: (client: Socket<unknown>) => string): void {
    client.data = newSide(this.bound.stallTimes, true);
    if (!this.bound.take(client, this)) {
      client.data.closed = true;
      client.end(BUSY);
      return;
    }
    this.carry(client, backendFor(client));
  }

  /** A client carried has closed, or is let go: its place is free, and its server side goes with it. */
  private release(client: Socket<Side>): void {
    this.bound.release(client);
    closed(client);
    if (this.bound.carriedBy(this) === 0) this.allClosed?.resolve();
  }

  /** Closes an idle client for a newcomer (HttpConnectionBound.take), counted out at once: its close, when it comes, finds it closed. */
  letGo(client: Socket<Side>): void {
    this.release(client);
    client.terminate();
  }

  get port(): number {
    return this.listener.port;
  }

  /**
   * Stops listening; each connection carried gets what its server side sent
   * last (the monitor's goodbye) and is closed as that side closes, within
   * `ms`; what is left then is cut off.
   */
  async stop(ms = 1000): Promise<void> {
    this.listener.stop(false);
    if (this.bound.carriedBy(this) > 0) {
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
      data: newSide(this.bound.stallTimes, false, client),
      socket: {
        binaryType: "uint8array",
        open: (server) => {
          server.data = newSide(this.bound.stallTimes, false, client);
          if (client.data.closed) return void server.terminate();
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

/** Hands `chunk` from `from` to its other side, keeping order; what that side does not take now waits (hold). */
function forward(from: Socket<Side>, chunk: Uint8Array): void {
  const to = from.data.other;
  if (!from.data.client) to!.data.heard = performance.now();
  // Its reader is gone: there is no one to carry it to.
  if (to?.data.closed) return;
  if (!to || from.data.waiting.length > 0) return hold(from, chunk.slice());
  const written = to.write(chunk);
  if (written < chunk.length) hold(from, chunk.slice(Math.max(0, written)));
}

/** Keeps `bytes` from `from` until its other side takes them; `from` is not read meanwhile, and is cut with its other side once they have not moved for STALL_MS. */
function hold(from: Socket<Side>, bytes: Uint8Array): void {
  from.data.waiting.push(bytes);
  from.pause();
  stalling(from);
}

/** Starts looking whether the bytes of `from`, which now wait, move (unless it looks already): from now and from what its other side has not taken yet. */
function stalling(from: Socket<Side>): void {
  if (from.data.stall) return;
  from.data.moved = performance.now();
  from.data.unsent = unsentOf(from.data.other);
  from.data.taken = 0;
  lookLater(from);
}

function lookLater(from: Socket<Side>): void {
  from.data.stall = setTimeout(() => look(from), from.data.times.checkMs);
  from.data.stall.unref();
}

/**
 * Whether what waits from `from` moved since the last look: its other side
 * took some, or that side's peer took some of what the kernel holds for it
 * (its count of unsent bytes fell; where the kernel does not say, taking is
 * all that counts). Not moved for STALL_MS: the connection is cut.
 */
function look(from: Socket<Side>): void {
  const side = from.data;
  const unsent = unsentOf(side.other);
  if (side.taken > 0 || (unsent >= 0 && side.unsent >= 0 && unsent < side.unsent)) side.moved = performance.now();
  side.unsent = unsent;
  side.taken = 0;
  if (performance.now() - side.moved >= side.times.stallMs) return cut(from);
  lookLater(from);
}

/** What `to`'s peer has not taken yet of what was written to it; -1 when unknown (not connected yet, closed, or the kernel did not say). */
function unsentOf(to: Socket<Side> | undefined): number {
  return to && !to.data.closed ? unsentBytes(to.fd) : -1;
}

function unstalled(from: Socket<Side>): void {
  clearTimeout(from.data.stall);
  from.data.stall = undefined;
}

/**
 * Offers what waits from `to`'s other side to `to` again (it drained, or
 * just connected); once all is taken, that side is resumed, or, if it has
 * closed (or ended) meanwhile, `to` is ended (or half-closed): its last bytes
 * (an answer) arrive whole.
 */
function flush(to: Socket<Side>): void {
  const from = to.data.other;
  if (!from) return;
  const waiting = from.data.waiting;
  let taken = 0;
  while (waiting.length > 0) {
    const chunk = waiting[0]!;
    const written = to.write(chunk);
    if (written < chunk.length) {
      waiting[0] = chunk.subarray(Math.max(0, written));
      stalling(from);
      // Taken in part: it moved, as the next look sees.
      from.data.taken += taken + Math.max(0, written);
      return;
    }
    taken += written;
    waiting.shift();
  }
  unstalled(from);
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

/**
 * `side` has closed. A client gone takes its server side with it at once
 * (no one would read the answer). A server side that closes ends its client
 * once the client has taken what is left, within LINGER_MS.
 */
function closed(side: Socket<Side>): void {
  side.data.closed = true;
  unstalled(side);
  const other = side.data.other;
  if (!other || other.data.closed) return;
  if (side.data.client) return void other.terminate();
  if (side.data.waiting.length === 0) return void other.end();
  setTimeout(() => other.terminate(), LINGER_MS).unref();
}

/** Cuts the connection `side` belongs to, both sides at once. */
function cut(side: Socket<Side>): void {
  side.data.other?.terminate();
  side.terminate();
}
