import type { Socket, SocketListener } from "bun";
import { readSync } from "node:fs";
import type { Report } from "./report.ts";
import { bindSocketFile, prepareSocketPath, removeSocketFile, removeStaleHiddenNames, restoreSocketFile, socketFileInPlace, type SocketFileIdentity } from "./socket-file.ts";
import { refuseConnections } from "./socket-options.ts";
import { boundAcceptQueue } from "../io/accept-queue.ts";
import { within } from "../io/within.ts";

/** What a role does with its one client. */
export interface ClientHandler {
  /** A client connected (any previous client has already been closed). */
  open(socket: Socket<unknown>): void;
  data(socket: Socket<unknown>, chunk: Uint8Array): void;
  /** What a client sends once it has been let go (after its end, or once replaced), until it closes. */
  late?(socket: Socket<unknown>, chunk: Uint8Array): void;
  drain(socket: Socket<unknown>): void;
  /** The client is gone; `reason` says why (replaced, peer closed, error, server stop). */
  close(socket: Socket<unknown>, reason: string): void;
}

export interface UnixServerOptions {
  path: string;
  /** File mode of the socket, e.g. 0o660; it is never reachable with a wider one. */
  mode: number;
  handler: ClientHandler;
  report: Report;
  /**
   * A client that has shut down its sending side is still served: the end of
   * what it sends is not the end of what it reads (`nc -N -U sock
   * </dev/null`). For a channel whose client only reads. Without it, the end
   * of a client's data is the end of the client.
   */
  halfOpen?: boolean;
}

interface Connection {
  id: number;
  closeReason: string | undefined;
  /** What Bun read of this client and the owner has not been handed yet (see SLICE_BYTES): handed before anything read after it. */
  rest: Uint8Array | undefined;
  /** A turn is booked to hand the next slice of `rest`. */
  slicing: boolean;
  /**
   * Bytes handed as its data since a client came to replace it (take), whoever read them (readPending,
   * or Bun between turns while the new one waits): at most PENDING_BYTES are its session's. Undefined
   * until one comes.
   */
  pendingRead: number | undefined;
}

/** A client being let go: closed by its peer, or by the server once LINGER_MS have passed. */
interface LettingGo {
  closed: PromiseWithResolvers<void>;
  linger: ReturnType<typeof setTimeout>;
}

/** How a client is let go: gently (it reads what was written, then the end), or cut off at once. */
export type Closing = "end" | "terminate";

/** How long a half-closed client has to read to the end and close before the server closes it. */
const LINGER_MS = 1000;
/** Clients that may wait for a hold to end; one more lets the one waiting longest go, unserved. */
const MAX_WAITING = 16;
/** Clients let go that may linger at once; one more cuts off the one let go longest ago. */
const MAX_LETTING_GO = 16;
/** How long a listener that refuses new clients stays open for the loop to accept those the kernel had queued. */
const ACCEPT_QUEUE_MS = 10;
/**
 * How a large read is handed to the owner: a slice at a time, for at most
 * HANDING_MS a turn of the loop. Bun reads up to 512 KiB at once from a
 * client that sends faster than it is read (a flood), and handing it whole
 * meant parsing and sinking thousands of frames in one turn, the other
 * channel's audio waiting meanwhile (on a slow board, or before the JIT has
 * compiled the parser, for tens of ms). The rest waits for the next turn,
 * the client not read again until it all has been handed. Live audio (a few
 * frames a read) is handed as it is read.
 */
export const SLICE_BYTES = 16384;
export const HANDING_MS = 4;
/**
 * The most of what a client being replaced sends, from when the new one
 * comes, that is handed as its session's before the new one is served,
 * whoever reads it (readPending, or Bun between turns): more than its
 * socket holds, so a client that flooded, and writes on once replaced, has
 * the rest read late (and counted by the owner).
 */
export const PENDING_BYTES = 4 << 20;

/**
 * A Unix stream socket server with one client at a time: a newly accepted
 * client replaces the previous one, whose connection is closed.
 */
export class UnixServer {
  private current: Socket<Connection> | undefined;
  private nextId = 1;
  private stopped = false;
  private accepting = true;
  /** A turn is booked for take() to go on reading a client being replaced (readPending). */
  private taking = false;
  /** What readPending reads a replaced client's last bytes into, made at the first replacement. */
  private pendingChunk: Uint8Array | undefined;
  /** The socket file was last found removed or replaced: no client can reach the listener (told as it goes, and as it comes back). */
  private unreachable = false;
  /** Settles once the listening socket is closed (stopAccepting). */
  private listenerClosed: Promise<void> | undefined;
  /** Clients let go gently and not closed yet: stop() waits for them. */
  private readonly lettingGo = new Map<Socket<Connection>, LettingGo>();
  /** While set, no client is read (hold): the owner cannot take more yet. */
  private held: Promise<void> | undefined;
  private readonly paused = new Set<Socket<unknown>>();
  /** Clients that connected while held, first come first: each takes over once the one before has been read. */
  private readonly waiting: Socket<Connection>[] = [];
  /** Clients accepted: served, or waiting for a hold to end (and perhaps let go unserved). */
  connections = 0;
  replacements = 0;
  /**
   * Client connections that ended other than by the server's own stop or an
   * `expected` disconnect (a client's clean Stop): the connection drops. A
   * client let go unserved because more came is one too.
   */
  connectionDrops = 0;

  private constructor(
    private readonly listener: SocketListener<Connection>,
    private readonly options: UnixServerOptions,
    /** The socket file we bound: removed at stop only if the path still leads to it. */
    readonly file: SocketFileIdentity,
  ) {
    process.on("exit", this.removeAtExit);
  }

  /**
   * An exit before stop() has removed the socket file (a second signal, a
   * failure that ends the process at once) removes it still, and the hidden
   * name it was bound by: neither is left for the next start to find.
   */
  private readonly removeAtExit = () => {
    // Its client is cut off by the exit, not gone by itself: its close line says so.
    if (this.current) this.current.data.closeReason ??= "the process exits at once";
    this.listener.stop(true);
    removeSocketFile(this.options.path, this.file);
  };

  /** Checks the path (stale socket removed, anything else refused), removes the hidden names stale servers left beside it, and listens there with the mode asked for. */
  static async listen(options: UnixServerOptions): Promise<UnixServer> {
    const { path, report } = options;
    if (await prepareSocketPath(path)) report("info", "removed stale socket", { socket: path });
    const hidden = await removeStaleHiddenNames(path);
    if (hidden > 0) report("info", "removed stale hidden socket names", { socket: path, count: hidden });
    // Assigned once bound; handlers only run once a client connects, later.
    let server!: UnixServer;
    const listen = (name: string) => Bun.listen<Connection>({
      unix: name,
      data: { id: 0, closeReason: undefined, rest: undefined, slicing: false, pendingRead: undefined },
      allowHalfOpen: options.halfOpen ?? false,
      socket: {
        binaryType: "uint8array",
        // Half-open: the client served stays; one being let go has read to its end and closes now.
        end: (socket) => {
          if (socket !== server.current) socket.end();
        },
        open: (socket) => server.accept(socket),
        data: (socket, chunk) => server.received(socket, chunk),
        drain: (socket) => {
          if (socket === server.current) options.handler.drain(socket);
        },
        close: (socket, error) => server.closed(socket, error),
        error: (socket, error) => {
          socket.data.closeReason ??= `error: ${error.message}`;
        },
      },
    });
    // Bun takes every waiting client in one turn: a peer connecting in a loop held the other channel's audio
    // for seconds. Bounded as it listens, before its path is linked: no client comes before the bound.
    let unbounded: string | undefined;
    const { listener, identity } = bindSocketFile(path, options.mode, (name) => {
      const bound = listen(name);
      unbounded = boundAcceptQueue(bound);
      return bound;
    });
    server = new UnixServer(listener, options, identity);
    report("info", "listening", { socket: path, mode: `0${options.mode.toString(8)}` });
    if (unbounded) report("warn", "the socket's queue of clients not yet taken is left at Bun's 512: a peer connecting in a loop can hold the audio", { socket: path, why: unbounded });
    return server;
  }

  get path(): string {
    return this.options.path;
  }

  /**
   * Its socket accepts clients: from listen() until stopAccepting() or
   * stop(), while its path still leads to it. The path is looked at
   * whenever the readings are taken (/healthz, /metrics, the sampler's
   * tick, a stats line) and as a client leaves (the next one comes to the
   * path). A socket file removed (a cleanup of the runtime directory, an
   * operator's rm) is put back as it is found, linked again from the hidden
   * name it was bound by: told. One replaced (another file at the path), or
   * out of reach with its directory, leaves the listener open but out of
   * every client's reach: told once, and again once it is back (moved aside
   * and back, its directory renamed back).
   */
  get listening(): boolean {
    return this.accepting && this.reachable();
  }

  private reachable(): boolean {
    if (this.stopped) return true;
    let inPlace = socketFileInPlace(this.options.path, this.file);
    if (!inPlace && restoreSocketFile(this.options.path, this.file)) {
      inPlace = true;
      this.options.report("warn", "the socket file was removed; put back", { socket: this.options.path });
    }
    if (inPlace !== this.unreachable) return inPlace;
    this.unreachable = !inPlace;
    if (inPlace) this.options.report("info", "the socket file is back; clients can connect again", { socket: this.options.path });
    else this.options.report("warn", "the socket file is gone (removed or replaced); no client can connect while it is", { socket: this.options.path });
    return inPlace;
  }

  /**
   * Refuses new clients from now on; the current one is served on until
   * stop(). Clients the kernel had already queued (connected, perhaps with
   * a whole session written) are accepted and let go unserved, what they
   * sent read late: closing the listener at once would reset them, their
   * bytes lost unseen. Settles once the listening socket is closed.
   */
  stopAccepting(): Promise<void> {
    if (this.listenerClosed) return this.listenerClosed;
    this.accepting = false;
    if (!refuseConnections(this.listener.fd).ok) {
      // Without libc the queue cannot be closed to newcomers first: closed at once, as it is.
      this.listener.stop();
      return (this.listenerClosed = Promise.resolve());
    }
    // Refusing, the listener reads as ready on every turn of the loop until closed: briefly, then.
    return (this.listenerClosed = Bun.sleep(ACCEPT_QUEUE_MS).then(() => this.listener.stop()));
  }

  get client(): Socket<unknown> | undefined {
    return this.current;
  }

  /** Whether clients are held (see hold). */
  get holding(): boolean {
    return this.held !== undefined;
  }

  /**
   * Reads no client until `waiting` settles (the owner's sink holds what its
   * reader has not taken): the current client is paused, and nothing is read
   * on its behalf, so what the owner holds stays bounded. A client that
   * connects meanwhile waits, paused, and takes over only once the hold has
   * ended and what the current one sent before it came has been read (as
   * without a hold: a session that ended with Stop meanwhile is the owner's
   * whole). Past MAX_WAITING, the one waiting longest is let go unserved. A
   * client let go is read again (late), as any is: what it sends is the
   * owner's to count, and its end is seen.
   */
  hold(waiting: Promise<void>): void {
    if (this.held) return;
    this.held = waiting;
    if (this.current) this.pause(this.current);
    const resume = () => {
      this.held = undefined;
      if (this.current && this.paused.delete(this.current)) this.read(this.current);
      this.takeWaiting();
    };
    waiting.then(resume, resume);
  }

  private pause(socket: Socket<unknown>): void {
    socket.pause();
    this.paused.add(socket);
  }

  /** Reads `socket` again (no longer held or waiting): what is left of its last read first. */
  private read(socket: Socket<Connection>): void {
    if (socket.data.rest) this.handRestNextTurn(socket);
    else socket.resume();
  }

  /**
   * A read from a client: handed to the owner (the client served) or as
   * late (one let go); one larger than a slice, a slice at a time (SLICE_BYTES).
   */
  private received(socket: Socket<Connection>, chunk: Uint8Array): void {
    const pending = socket.data.rest;
    if (pending) {
      // Read before its pause took: after what was read before it.
      socket.data.rest = Buffer.concat([pending, chunk]);
      return;
    }
    if (chunk.length <= SLICE_BYTES) return this.hand(socket, chunk);
    socket.data.rest = chunk;
    socket.pause();
    this.handRest(socket, performance.now() + HANDING_MS);
  }

  private hand(socket: Socket<Connection>, chunk: Uint8Array): void {
    if (socket === this.current) {
      if (socket.data.pendingRead !== undefined) socket.data.pendingRead += chunk.length;
      this.options.handler.data(socket, chunk);
    } else if (this.lettingGo.has(socket)) this.options.handler.late?.(socket, chunk);
  }

  private handRestNextTurn(socket: Socket<Connection>): void {
    if (socket.data.slicing) return;
    socket.data.slicing = true;
    setImmediate(() => {
      socket.data.slicing = false;
      this.handRest(socket, performance.now() + HANDING_MS);
    });
  }

  /**
   * Hands what is left of `socket`'s last read, a slice at a time, until
   * `until` (performance.now(); the rest in the next turn), while it is read
   * (not held, not waiting; served or being let go); the client is read
   * again once all of it has been handed. One gone (closed, cut off) leaves
   * its rest unread, as what the kernel held for it. `closing`: it has
   * closed, and all of it is handed now, a hold begun on the way too
   * (nothing would hand it later).
   */
  private handRest(socket: Socket<Connection>, until: number, closing = false): void {
    for (let first = true; socket.data.rest; first = false) {
      if (!closing && this.paused.has(socket)) return; // its hold's end (or its turn) goes on
      if (socket !== this.current && !this.lettingGo.has(socket)) {
        socket.data.rest = undefined;
        return;
      }
      if (!first && performance.now() >= until) return this.handRestNextTurn(socket);
      const rest = socket.data.rest;
      socket.data.rest = rest.length > SLICE_BYTES ? rest.subarray(SLICE_BYTES) : undefined;
      this.hand(socket, rest.subarray(0, SLICE_BYTES));
    }
    if (!this.paused.has(socket)) socket.resume();
  }

  /**
   * Closes the current client; the server keeps listening. An end lets the
   * peer read what was written; a stuck client is cut off at once (terminate).
   *
   * An end half-closes (shutdown) and leaves the peer LINGER_MS to read to
   * the end and close: Bun's end() closes at once, and a client that Bun has
   * not yet seen connected then fails its connect with ECONNRESET, losing
   * every byte written to it (a lossless file served within milliseconds, a
   * client replaced as it connects).
   */
  disconnect(socket: Socket<unknown>, reason: string, closing: Closing = "end", expected = false): void {
    if (socket !== this.current) return;
    (socket as Socket<Connection>).data.closeReason = reason;
    this.current = undefined;
    if (!expected) this.connectionDrops++;
    this.options.report("info", "client disconnected", {
      socket: this.options.path,
      client: (socket as Socket<Connection>).data.id,
      reason,
    });
    this.options.handler.close(socket, reason);
    if (closing === "terminate") {
      this.paused.delete(socket);
      socket.terminate();
      return;
    }
    this.letGo(socket as Socket<Connection>);
  }

  /**
   * Half-closes a client and leaves it LINGER_MS to read to the end and
   * close; held or not, it is read to its end (late): what it sends is
   * counted, and its close seen. Past MAX_LETTING_GO lingering at once, the
   * one let go longest ago is cut off: clients coming faster than those let
   * go close (a reconnect loop, many at once, a loop busy accepting them
   * before it sees them close) would otherwise hold a descriptor each, up to
   * the process's limit, where nothing else can open one (the other
   * channel's sink or source, an HTTP client, the next client).
   */
  private letGo(socket: Socket<Connection>): void {
    if (this.paused.delete(socket) || socket.data.rest) this.read(socket);
    // Set up before the shutdown, which may close a socket whose peer has already ended at once.
    const linger = setTimeout(() => socket.end(), LINGER_MS);
    linger.unref();
    this.lettingGo.set(socket, { closed: Promise.withResolvers<void>(), linger });
    socket.shutdown();
    if (this.lettingGo.size > MAX_LETTING_GO) this.cutOff(this.lettingGo.keys().next().value!);
  }

  /** Closes a client being let go at once: what it has not read of what was written is lost with it. */
  private cutOff(socket: Socket<Connection>): void {
    // What was read of it is the owner's still (counted), handed at once.
    this.handRest(socket, Infinity);
    this.forgetLettingGo(socket);
    socket.terminate();
  }

  /** A client let go is closed (or cut off): its linger ends, and stop() no longer waits for it. */
  private forgetLettingGo(socket: Socket<Connection>): void {
    const lettingGo = this.lettingGo.get(socket);
    if (!lettingGo) return;
    clearTimeout(lettingGo.linger);
    lettingGo.closed.resolve();
    this.lettingGo.delete(socket);
  }

  /**
   * A client that waited and will not be served (one more came, or the
   * server stops: `expected`, not a drop): let go at once, what it sent read late.
   */
  private letGoUnserved(socket: Socket<Connection>, reason: string, expected = false, message = "client disconnected"): void {
    if (!expected) this.connectionDrops++;
    this.options.report("info", message, { socket: this.options.path, client: socket.data.id, reason });
    this.letGo(socket);
  }

  /**
   * Stops listening, lets the client go (it reads to the end, see
   * disconnect), waits until it and any client let go before it are closed
   * (the process may exit next, closing them unread), and removes the socket
   * file if it is still ours.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    // Stop accepting first, so a client reconnecting right now is refused rather than accepted and cut.
    const closing = this.stopAccepting();
    const client = this.current;
    if (client) this.disconnect(client, "server stopping", "end", true);
    for (const socket of this.waiting.splice(0)) this.letGoUnserved(socket, "server stopping before it was served", true);
    // Those the kernel had queued are accepted (and let go) before the listener closes: waited for below too.
    await closing;
    // Closed by the clients, or by their linger's end(); the bound only guards against a close never told.
    await within(Promise.all([...this.lettingGo.values()].map((client) => client.closed.promise)), 2 * LINGER_MS, undefined);
    removeSocketFile(this.options.path, this.file);
    process.off("exit", this.removeAtExit);
  }

  private accept(socket: Socket<Connection>): void {
    socket.data = { id: this.nextId++, closeReason: undefined, rest: undefined, slicing: false, pendingRead: undefined };
    this.connections++;
    if (!this.accepting) {
      // Queued by the kernel before the listener refused: let go, what it sent read late (counted by the owner).
      this.letGoUnserved(socket, "the server no longer accepts clients", true, "client let go unserved");
      return;
    }
    if (this.held || this.waiting.length > 0) {
      // What the current client sent is read first, once the owner can take it: this one waits.
      this.wait(socket);
      if (this.waiting.length > MAX_WAITING) this.letGoUnserved(this.waiting.shift()!, "replaced by a new client before it was served");
      return;
    }
    // Reading what the current one sent may begin a hold (or end the channel's last session): then this one waits.
    if (!this.take(socket)) this.wait(socket);
  }

  /** Paused until its turn (takeWaiting), or until it is let go unserved. */
  private wait(socket: Socket<Connection>): void {
    this.pause(socket);
    this.waiting.push(socket);
    this.options.report("info", "client waiting", { socket: this.options.path, client: socket.data.id });
  }

  /** Clients that waited take over in turn, while no hold begins and the server still accepts. */
  private takeWaiting(): void {
    while (!this.held && this.accepting && this.waiting.length > 0) {
      if (!this.take(this.waiting[0]!)) return;
      this.waiting.shift();
    }
  }

  /**
   * Serves `socket` in place of the current client, once what that one sent
   * before has been read; false (nothing done with `socket`) when a hold
   * began while reading it (the rest of it, or this one's turn, waits for
   * the hold's end), its reading goes on in the next turn, or the owner
   * stopped accepting on the way (a session that ended the channel: this
   * one is let go unserved at stop).
   */
  private take(socket: Socket<Connection>): boolean {
    const previous = this.current;
    if (previous) {
      previous.data.pendingRead ??= 0;
      const more = this.readPending(previous);
      if (this.held || !this.accepting) return false;
      if (more && previous === this.current) {
        // The rest of it in the next turn, this one waiting: the loop goes on meanwhile.
        this.takeNextTurn();
        return false;
      }
      // Not if what it sent ended it (a Stop), or it had already left: then it was not replaced.
      if (previous === this.current) {
        this.replacements++;
        this.disconnect(previous, "replaced by a new client");
        // Its session's end may have ended the channel (--once).
        if (!this.accepting) return false;
      }
    }
    this.current = socket;
    if (this.paused.delete(socket)) this.read(socket);
    this.options.report("info", "client connected", { socket: this.options.path, client: socket.data.id });
    this.options.handler.open(socket);
    return true;
  }

  private takeNextTurn(): void {
    if (this.taking) return;
    this.taking = true;
    setImmediate(() => {
      this.taking = false;
      this.takeWaiting();
    });
  }

  /**
   * What a client being replaced sent before the new one came, and the loop
   * has not handed over yet (the new connection can come first in the same
   * turn): read before the new one is served, so that none of it is lost
   * unseen and a Stop among it ends its session cleanly; up to PENDING_BYTES,
   * for HANDING_MS a turn, as any read is handed. True while there may be
   * more and its time in this turn is up: take() goes on in the next.
   */
  private readPending(socket: Socket<Connection>): boolean {
    const until = performance.now() + HANDING_MS;
    // What was read of it and not handed yet comes first: by the turn booked for it, if one is (two a turn
    // would hand twice HANDING_MS's worth).
    if (!socket.data.slicing) this.handRest(socket, until);
    if (socket.data.rest) return !this.held && socket.data.pendingRead! < PENDING_BYTES;
    // One buffer for every replacement, as for every read below: the handler takes what it is handed
    // before it returns. (One per replacement was 64 KiB of garbage per client a churning peer made.)
    const chunk = (this.pendingChunk ??= new Uint8Array(SLICE_BYTES));
    // A hold begun on the way stops it: the owner can take no more for now.
    while (socket === this.current && !this.held && socket.data.pendingRead! < PENDING_BYTES) {
      if (performance.now() >= until) return true;
      let got: number;
      try {
        got = readSync(socket.fd, chunk);
      } catch {
        return false; // EAGAIN: nothing more (or the socket failed, which its close will say)
      }
      if (got < 0) return false;
      // Its end: it left before the new client came, so it was not replaced (half-open: it only stopped sending).
      if (got === 0) {
        if (!this.options.halfOpen) this.disconnect(socket, "peer closed");
        return false;
      }
      this.hand(socket, chunk.subarray(0, got));
    }
    return false;
  }

  private closed(socket: Socket<Connection>, error?: Error): void {
    // Read before it closed: handed before its close is told (held or not: it will send no more).
    this.handRest(socket, Infinity, true);
    // After: a hold begun in that rest paused it (and nothing reads it again).
    this.paused.delete(socket);
    const waited = this.waiting.indexOf(socket);
    if (waited >= 0) this.waiting.splice(waited, 1);
    this.forgetLettingGo(socket);
    if (socket !== this.current) return;
    this.current = undefined;
    this.connectionDrops++;
    // The next client comes to the path: put back there if it was removed meanwhile.
    if (this.accepting) this.reachable();
    const reason = socket.data.closeReason ?? (error ? `error: ${error.message}` : "peer closed");
    this.options.report("info", "client disconnected", {
      socket: this.options.path,
      client: socket.data.id,
      reason,
    });
    this.options.handler.close(socket, reason);
  }
}
