import type { Socket } from "bun";
import { HEALTHY_SESSION_MS, sessionBackoffMs } from "./backoff.ts";
import type { Report } from "./report.ts";
import { socketReachedBy, sameIdentity, type SocketFileIdentity } from "./socket-file.ts";
import { shutDownReading } from "./socket-options.ts";
import { connectOnce, connectWithBackoff, sleep, type ConnectionHandler } from "./unix-client.ts";

/** How long the clients' connections may bring nothing before the path is looked at (serverLookMs). */
export const SERVER_LOOK_MS = 2000;

/** The reason a connection the look gave up ends with (serverLookMs). */
export const SERVER_REPLACED = "the server sent nothing for a while, and the socket path now leads to another server";

/** A connection the look made to the server now at the path, with what came on it before run() took it. */
interface Replacement {
  socket: Socket<unknown>;
  file: SocketFileIdentity;
  chunks: Uint8Array[];
  ended?: string;
}

export interface ReconnectingConnectionOptions {
  path: string;
  report: Report;
  /** Give up with ConnectTimeoutError after this long without a server; undefined waits forever. */
  connectTimeoutMs?: number;
  /** While no server answers: say so at once, then remind this often (ms); 30 s by default. */
  remindEveryMs?: number;
  data: (socket: Socket<unknown>, chunk: Uint8Array) => void;
  drain: (socket: Socket<unknown>) => void;
  /** A connection is up; it may already be closed again from here (close()). */
  onOpen: (socket: Socket<unknown>) => void;
  /**
   * The connection ended (the peer left, close() or stop() was called), before
   * any reconnect. May return a more precise reason to log.
   */
  onClose: (socket: Socket<unknown>, reason: string) => string | void;
  /**
   * Once a connection has brought nothing for this long (ms), looks whether the
   * path still reaches the socket file it was made to, and again as often while
   * it stays silent: a server hung with the connection open (stuck in a driver,
   * stopped) is not closed by the kernel, and one started in its place binds the
   * path anew. Such a connection is given up for the server there now, once a
   * connect to it is made; one that brings data is kept, as is one held by its
   * owner. None: never looked at.
   */
  serverLookMs?: number;
}

/**
 * A client connection that comes back: connects with the Go original's
 * backoff, and after each disconnect connects again, until stop(). Both
 * clients (output recv, input send) keep their protocol logic and share this.
 *
 * Sessions that end early (within HEALTHY_SESSION_MS: a server that drops us
 * at once, a competing client that takes our place) make the next connection
 * wait, longer after each one in a row (sessionBackoffMs); a healthy session
 * resets that, so a restarted server is found again at once.
 */
export class ReconnectingConnection {
  /** Connections made so far. */
  connects = 0;
  /** Connections that ended other than by stop(): the server left, or we gave up on it. */
  connectionDrops = 0;
  /** Connections a server closed as they were made, with whatever it sent on them (connectWithBackoff). */
  connectResets = 0;
  private current: Socket<unknown> | undefined;
  private closedWaiter: ((reason: string) => void) | undefined;
  private readonly abort = new AbortController();
  private stopping = false;
  /** While set, no connection is read (hold): the owner cannot take more yet. */
  private held: Promise<void> | undefined;
  private settle!: () => void;
  /** The socket file the path led to as the last connect began (watched connections only). */
  private atAttempt: SocketFileIdentity | undefined;
  /** The socket file the connection reached as it was made, and the look's timer, put off by each read. */
  private reached: SocketFileIdentity | undefined;
  private look: ReturnType<typeof setInterval> | undefined;
  /** Whether the look has said it found a socket file no server answers on, once a connection. */
  private toldNoAnswer = false;
  /**
   * The look's connect to the server now at the path: made while the silent one is still open, taken by
   * run() next; or kept aside, unread, when the silent one spoke as it was made (see lookAtServer).
   */
  private replacement: Replacement | undefined;
  private replacing = false;
  /** The look's connect under way, settled once its outcome is handled: run() waits for it rather than connect again. */
  private looking: Promise<void> | undefined;
  /** While run() runs: a look's connection made after it returned is taken by no one. */
  private running = false;
  /** Whether the current connection brought data since the look's connect began. */
  private heard = false;
  /** The connection the look gave up: its reading shut down, what came before the end still read (see giveUp). */
  private givenUp: Socket<unknown> | undefined;
  /** The connection finish() reads to its end, and what it resolves once that one is closed. */
  private finishing: { socket: Socket<unknown>; closed: () => void } | undefined;
  /** The connect under way, settled once it failed or its connection is taken (onOpen has run): see attemptDecided. */
  private attempt: PromiseWithResolvers<void> | undefined;
  private readonly handler: ConnectionHandler = {
    data: (s, chunk) => {
      if (s === this.current) {
        // Put off, not fired: while data comes the look never wakes the process.
        this.look?.refresh();
        this.heard = true;
        this.options.data(s, chunk);
      } else if (s === this.replacement?.socket) this.replacement.chunks.push(chunk.slice());
    },
    drain: (s) => {
      if (s === this.current) this.options.drain(s);
    },
    close: (s, reason) => {
      if (s === this.replacement?.socket) this.replacement.ended ??= reason;
      else this.closed(s, s === this.givenUp ? SERVER_REPLACED : s === this.finishing?.socket ? "stopped" : reason);
    },
  };
  /** Resolves once the first connection attempt has an outcome: connected, or no server there yet. */
  readonly firstAttempt = new Promise<void>((resolve) => (this.settle = resolve));

  constructor(private readonly options: ReconnectingConnectionOptions) {}

  get socket(): Socket<unknown> | undefined {
    return this.current;
  }

  get stopped(): boolean {
    return this.stopping;
  }

  /** Whether the connection is held (see hold). */
  get holding(): boolean {
    return this.held !== undefined;
  }

  /**
   * Reads nothing until `waiting` settles (the owner's sink holds what its
   * reader has not taken): the connection, and one made meanwhile, are
   * paused; the server sees a full socket, as from any slow reader.
   */
  hold(waiting: Promise<void>): void {
    if (this.held) return;
    this.held = waiting;
    this.current?.pause();
    const resume = () => {
      this.held = undefined;
      this.current?.resume();
    };
    waiting.then(resume, resume);
  }

  /**
   * Keeps a connection up until stop() (or, with `once`, until the first one
   * ends). Rejects with ConnectTimeoutError when no server appears in time.
   */
  async run(once = false): Promise<void> {
    const { path, report } = this.options;
    /** Sessions in a row that ended early, and the wait they earned. */
    let early = 0;
    let wait = 0;
    this.running = true;
    try {
      while (!this.stopping) {
        if (wait > 0) await sleep(wait, this.abort.signal);
        // The connection ended while the look's connect was under way: the look's connection, with
        // what its server sent at once, is the one to take; another would leave that unread.
        if (this.looking && !this.replacement) await this.looking;
        const next = this.replacement;
        this.replacement = undefined;
        const socket = this.stopping ? undefined : (next?.socket ?? (await this.connect()));
        if (!socket) return;
        const ended = new Promise<string>((resolve) => (this.closedWaiter = resolve));
        const openedAt = performance.now();
        this.current = socket;
        this.connects++;
        if (this.held) socket.pause();
        else if (next) socket.resume(); // kept aside unread until now
        this.watchServer(socket, next?.file);
        this.options.onOpen(socket);
        this.attemptDone();
        this.settle();
        if (next) this.replay(socket, next);
        const reason = await ended;
        early = performance.now() - openedAt >= HEALTHY_SESSION_MS ? 0 : early + 1;
        // A server found by the look is already connected: nothing to wait for.
        wait = once || this.stopping || this.replacement || this.looking ? 0 : sessionBackoffMs(early);
        report("info", "disconnected", { socket: path, reason, ...(wait > 0 ? { reconnect_in_ms: wait } : {}) });
        if (once) return;
      }
    } finally {
      this.running = false;
      this.endReplacement();
      this.attemptDone();
      this.settle();
    }
  }

  /**
   * Resolves once no connect is under way: the one under way now has failed,
   * or its connection is taken (the owner's onOpen has run). An owner that
   * stops waits for it first, so that a connection the server has already
   * accepted ends as a session does (input send: its Config, then the Stop),
   * not cut without a word, which the server counts as a dropped connection.
   */
  attemptDecided(): Promise<void> {
    return this.attempt?.promise ?? Promise.resolve();
  }

  private attemptDone(): void {
    this.attempt?.resolve();
    this.attempt = undefined;
  }

  /** Connects, retrying while there is no server; undefined when stopped meanwhile. */
  private async connect(): Promise<Socket<unknown> | undefined> {
    let socket: Socket<unknown>;
    try {
      socket = await connectWithBackoff({
        path: this.options.path,
        report: this.options.report,
        timeoutMs: this.options.connectTimeoutMs,
        signal: this.abort.signal,
        remindEveryMs: this.options.remindEveryMs,
        onWaiting: () => this.settle(),
        onReset: () => {
          this.connectResets++;
          // A server there that drops each connection is no server to use yet, as none there is.
          this.settle();
        },
        beforeAttempt: this.options.serverLookMs === undefined ? undefined : () => (this.atAttempt = socketReachedBy(this.options.path)),
        onAttempt: (connecting) => {
          const attempt = Promise.withResolvers<void>();
          this.attempt = attempt;
          connecting.catch(() => attempt.resolve());
        },
        handler: this.handler,
      });
    } catch (e) {
      if (this.stopping) return undefined;
      throw e;
    }
    if (this.stopping) {
      socket.end();
      this.attemptDone();
      return undefined;
    }
    return socket;
  }

  /** Ends this connection (the peer misbehaved, or it is stuck); run() connects again. */
  close(socket: Socket<unknown>, reason: string, graceful = false): void {
    if (!this.closed(socket, reason)) return;
    if (graceful) socket.end();
    else socket.terminate();
  }

  /** Stops for good: closes the connection gracefully and ends run(). */
  stop(): void {
    this.stopping = true;
    this.abort.abort();
    const socket = this.current;
    if (socket) this.close(socket, "stopped", true);
    this.endReplacement();
  }

  /**
   * Stops for good as stop() does, once the connection is read to its end:
   * its reading is shut down, so the server's writes fail from here on, and
   * what it wrote before, which it counts as delivered, is still passed on.
   * Resolves once it is closed; stop() meanwhile closes it at once, the rest
   * unread (its owner's hold that lasts). With no connection, stops at once.
   */
  finish(): Promise<void> {
    const socket = this.current;
    if (!socket || this.stopping || !shutDownReading(socket.fd).ok) {
      this.stop();
      return Promise.resolve();
    }
    this.stopping = true;
    this.abort.abort();
    clearInterval(this.look);
    this.look = undefined;
    this.endReplacement();
    const { promise, resolve } = Promise.withResolvers<void>();
    this.finishing = { socket, closed: resolve };
    return promise;
  }

  /** `file`: what the path led to as the look's connect began, for a connection the look made. */
  private watchServer(socket: Socket<unknown>, file?: SocketFileIdentity): void {
    const every = this.options.serverLookMs;
    if (every === undefined) return;
    // What the path led to as the connect began: looked at once made, it could already be the file of
    // a server started in the place of the one reached, which would then be kept, hung, for good. Had
    // the path changed in that moment the other way, a silent connection is given up once, needlessly.
    this.reached = file ?? this.atAttempt ?? socketReachedBy(this.options.path);
    this.toldNoAnswer = false;
    this.look = setInterval(() => this.lookAtServer(socket), every);
    // It never keeps the process up: the connection does, while it lasts.
    this.look.unref();
  }

  private lookAtServer(socket: Socket<unknown>): void {
    // Held, it is silent by its owner's doing.
    if (socket !== this.current || this.held || this.reached === undefined || this.replacing) return;
    // A connection kept aside at an earlier look, its server's bytes unread (its socket file may be
    // gone since: a server that sent all it had and left): the silent one is given up for it.
    if (this.replacement) return this.giveUp(socket);
    const { path, report } = this.options;
    const now = socketReachedBy(path);
    // Gone, or a file no server listens by (a regular file, a directory): there is no one else
    // to reach, and the server may yet speak. Given up, the connect there would fail for good.
    if (now === undefined || sameIdentity(now, this.reached)) return;
    // Given up only for a server that answers there: a socket file left by one that died (a
    // replacement that failed) has none, and the silent one may yet speak. Connected while the
    // silent one is still open, so no frame the new server sends at once is missed.
    this.replacing = true;
    this.heard = false;
    // Kept from the moment it is made (its open), before the connect resolves: its first bytes may come first.
    let opened: Socket<unknown> | undefined;
    const keep = (next: Socket<unknown>) => void (this.replacement ??= { socket: next, file: now, chunks: [] });
    const open = (next: Socket<unknown>) => {
      opened = next;
      keep(next);
    };
    this.looking = connectOnce(path, { ...this.handler, open }).then(
      (next) => {
        this.replacing = false;
        this.looking = undefined;
        // Taken already: the silent one ended by itself meanwhile, and run() found this one; it may have
        // ended since (its server closed it), and kept again it would be waited on for good.
        if (next === this.current || (next === opened && this.replacement?.socket !== next)) return;
        if (this.stopping || !this.running) {
          if (this.replacement?.socket === next) this.replacement = undefined;
          next.end();
          return;
        }
        keep(next);
        // The silent one ended meanwhile: run() takes this one, waiting for this look to be decided.
        if (socket !== this.current) return;
        // Heard from meanwhile, the silent one is silent no more: kept, as one that brings data is. This one
        // is kept aside, unread, not ended: its server has already sent on it (an output server, frames it
        // counts as delivered). Taken once the silent one ends, or at the next look that finds it silent.
        if (this.heard) return void next.pause();
        this.giveUp(socket);
      },
      (e: NodeJS.ErrnoException) => {
        this.replacing = false;
        this.looking = undefined;
        // Kept at its open, then failed (a reset as it was made): nothing to take, now or at a later look.
        this.endReplacement();
        if (this.toldNoAnswer || socket !== this.current) return;
        this.toldNoAnswer = true;
        // A reset is a server there that closed the connection as it was made (see connectWithBackoff).
        const there = e?.code === "ECONNRESET" ? "the server at the socket path's new file closed the connection as it was made" : "no server answers at the socket path's new file";
        report("info", `the server sends nothing, and ${there}: staying connected`, { socket: path, error: e?.code ?? String(e) });
      },
    );
  }

  /**
   * Gives up a silent connection for the look's one, kept aside (paused) until run() takes it. Its
   * server's writes fail from here on, and what it wrote before, though not read yet, still is, then
   * the end: closed at once, a silent server that spoke just now would lose what it counts as sent.
   */
  private giveUp(socket: Socket<unknown>): void {
    clearInterval(this.look);
    this.look = undefined;
    this.replacement?.socket.pause();
    if (shutDownReading(socket.fd).ok) this.givenUp = socket;
    else this.close(socket, SERVER_REPLACED);
  }

  /** Passes on what the look's connection brought before run() took it, and its end if it came. */
  private replay(socket: Socket<unknown>, next: Replacement): void {
    for (const chunk of next.chunks) {
      if (socket !== this.current) return;
      this.options.data(socket, chunk);
    }
    if (next.ended !== undefined) this.closed(socket, next.ended);
  }

  private endReplacement(): void {
    this.replacement?.socket.end();
    this.replacement = undefined;
  }

  private closed(socket: Socket<unknown>, reason: string): boolean {
    if (socket !== this.current) return false;
    this.current = undefined;
    this.givenUp = undefined;
    const finishing = this.finishing;
    this.finishing = undefined;
    clearInterval(this.look);
    this.look = undefined;
    if (!this.stopping) this.connectionDrops++;
    const precise = this.options.onClose(socket, reason) ?? reason;
    const wake = this.closedWaiter;
    this.closedWaiter = undefined;
    wake?.(precise);
    finishing?.closed();
    return true;
  }
}
