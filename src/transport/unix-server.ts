import type { Socket, SocketListener } from "bun";
import { readSync } from "node:fs";
import type { Report } from "./report.ts";
import { bindSocketFile, prepareSocketPath, removeSocketFile, type SocketFileIdentity } from "./socket-file.ts";
import { within } from "./within.ts";

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
   * what it sends is not the end of what it reads (`socat -u`, `nc -U sock
   * </dev/null`). For a channel whose client only reads. Without it, the end
   * of a client's data is the end of the client.
   */
  halfOpen?: boolean;
}

interface Connection {
  id: number;
  closeReason: string | undefined;
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

/**
 * A Unix stream socket server with one client at a time: a newly accepted
 * client replaces the previous one, whose connection is closed.
 */
export class UnixServer {
  private current: Socket<Connection> | undefined;
  private nextId = 1;
  private stopped = false;
  private accepting = true;
  /** Clients let go gently and not closed yet: stop() waits for them. */
  private readonly lettingGo = new Map<Socket<unknown>, LettingGo>();
  /** While set, no client is read (hold): the owner cannot take more yet. */
  private held: Promise<void> | undefined;
  private readonly paused = new Set<Socket<unknown>>();
  connections = 0;
  replacements = 0;
  /**
   * Client connections that ended other than by the server's own stop or an
   * `expected` disconnect (a client's clean Stop): the connection drops.
   */
  connectionDrops = 0;

  private constructor(
    private readonly listener: SocketListener<Connection>,
    private readonly options: UnixServerOptions,
    /** The socket file we bound: removed at stop only if the path still leads to it. */
    private readonly file: SocketFileIdentity,
  ) {
    process.on("exit", this.removeAtExit);
  }

  /**
   * An exit before stop() has removed the socket file (a second signal, a
   * failure that ends the process at once) removes it still, and the hidden
   * name it was bound by: neither is left for the next start to find.
   */
  private readonly removeAtExit = () => {
    this.listener.stop(true);
    removeSocketFile(this.options.path, this.file);
  };

  /** Checks the path (stale socket removed, anything else refused) and listens there with the mode asked for. */
  static async listen(options: UnixServerOptions): Promise<UnixServer> {
    const { path, report } = options;
    if (await prepareSocketPath(path)) report("info", "removed stale socket", { socket: path });
    // Assigned once bound; handlers only run once a client connects, later.
    let server!: UnixServer;
    const listen = (name: string) => Bun.listen<Connection>({
      unix: name,
      data: { id: 0, closeReason: undefined },
      allowHalfOpen: options.halfOpen ?? false,
      socket: {
        binaryType: "uint8array",
        // Half-open: the client served stays; one being let go has read to its end and closes now.
        end: (socket) => {
          if (socket !== server.current) socket.end();
        },
        open: (socket) => server.accept(socket),
        data: (socket, chunk) => {
          if (socket === server.current) options.handler.data(socket, chunk);
          else if (server.lettingGo.has(socket)) options.handler.late?.(socket, chunk);
        },
        drain: (socket) => {
          if (socket === server.current) options.handler.drain(socket);
        },
        close: (socket, error) => server.closed(socket, error),
        error: (socket, error) => {
          socket.data.closeReason ??= `error: ${error.message}`;
        },
      },
    });
    const { listener, identity } = bindSocketFile(path, options.mode, listen);
    server = new UnixServer(listener, options, identity);
    report("info", "listening", { socket: path, mode: `0${options.mode.toString(8)}` });
    return server;
  }

  get path(): string {
    return this.options.path;
  }

  /** Its socket accepts clients: from listen() until stopAccepting() or stop(). */
  get listening(): boolean {
    return this.accepting;
  }

  /** Refuses new clients from now on; the current one is served on until stop(). */
  stopAccepting(): void {
    if (!this.accepting) return;
    this.accepting = false;
    this.listener.stop();
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
   * reader has not taken): the current client and any that connects
   * meanwhile are paused, and nothing is read on their behalf, so what the
   * owner holds stays bounded. A client let go meanwhile is read again
   * (late), as any client let go is: what it sent, its session over, is
   * the owner's to count, and its end is seen.
   */
  hold(waiting: Promise<void>): void {
    if (this.held) return;
    this.held = waiting;
    if (this.current) this.pause(this.current);
    const resume = () => {
      this.held = undefined;
      for (const socket of this.paused) socket.resume();
      this.paused.clear();
    };
    waiting.then(resume, resume);
  }

  private pause(socket: Socket<unknown>): void {
    socket.pause();
    this.paused.add(socket);
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
    // Held or not, a client let go is read to its end (late): what it sends is counted, and its close seen.
    if (this.paused.delete(socket)) socket.resume();
    if (closing === "terminate") {
      socket.terminate();
      return;
    }
    // Set up before the shutdown, which may close a socket whose peer has already ended at once.
    const linger = setTimeout(() => socket.end(), LINGER_MS);
    linger.unref();
    this.lettingGo.set(socket, { closed: Promise.withResolvers<void>(), linger });
    socket.shutdown();
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
    this.stopAccepting();
    const client = this.current;
    if (client) this.disconnect(client, "server stopping", "end", true);
    // Closed by the clients, or by their linger's end(); the bound only guards against a close never told.
    await within(Promise.all([...this.lettingGo.values()].map((client) => client.closed.promise)), 2 * LINGER_MS, undefined);
    removeSocketFile(this.options.path, this.file);
    process.off("exit", this.removeAtExit);
  }

  private accept(socket: Socket<Connection>): void {
    socket.data = { id: this.nextId++, closeReason: undefined };
    if (!this.accepting) {
      socket.terminate();
      return;
    }
    const previous = this.current;
    if (previous) {
      // Not while held: the owner could not take it (it is read as the replaced client's, late).
      if (!this.held) this.readPending(previous);
      // Not if what it sent ended it (a Stop), or it had already left: then it was not replaced.
      if (previous === this.current) {
        this.replacements++;
        this.disconnect(previous, "replaced by a new client");
      }
    }
    this.current = socket;
    this.connections++;
    if (this.held) this.pause(socket);
    this.options.report("info", "client connected", { socket: this.options.path, client: socket.data.id });
    this.options.handler.open(socket);
  }

  /**
   * What a client being replaced sent before the new one came, and the loop
   * has not handed over yet (the new connection can come first in the same
   * turn): read now, at most the socket's buffer, so that none of it is lost
   * unseen and a Stop among it ends its session cleanly.
   */
  private readPending(socket: Socket<Connection>): void {
    const chunk = new Uint8Array(65536);
    for (let reads = 0; reads < 64 && socket === this.current; reads++) {
      let got: number;
      try {
        got = readSync(socket.fd, chunk);
      } catch {
        return; // EAGAIN: nothing more (or the socket failed, which its close will say)
      }
      if (got < 0) return;
      // Its end: it left before the new client came, so it was not replaced (half-open: it only stopped sending).
      if (got === 0) return this.options.halfOpen ? undefined : this.disconnect(socket, "peer closed");
      this.options.handler.data(socket, chunk.subarray(0, got));
    }
  }

  private closed(socket: Socket<Connection>, error?: Error): void {
    this.paused.delete(socket);
    const lettingGo = this.lettingGo.get(socket);
    if (lettingGo) {
      clearTimeout(lettingGo.linger);
      lettingGo.closed.resolve();
      this.lettingGo.delete(socket);
    }
    if (socket !== this.current) return;
    this.current = undefined;
    this.connectionDrops++;
    const reason = socket.data.closeReason ?? (error ? `error: ${error.message}` : "peer closed");
    this.options.report("info", "client disconnected", {
      socket: this.options.path,
      client: socket.data.id,
      reason,
    });
    this.options.handler.close(socket, reason);
  }
}
