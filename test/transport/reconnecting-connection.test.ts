/**
 * ReconnectingConnection against scripted servers: it passes on the current
 * connection's bytes and drains, connects again after every end but stop(),
 * counts connects and drops, and leaves no connection open behind a stop.
 */
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { ReconnectingConnection, SERVER_REPLACED, type ReconnectingConnectionOptions } from "../../src/transport/reconnecting-connection.ts";
import { mkdirSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { silent } from "../../src/transport/report.ts";
import { ConnectTimeoutError } from "../../src/transport/unix-client.ts";
import { within } from "../../src/io/within.ts";
import { loadLibcFrom } from "../../src/transport/socket-options.ts";
import { useCleanup } from "../support/cleanup.ts";
import { hookConnects } from "../support/connect-hooks.ts";
import { fakeServer, type FakeServer } from "../support/peer.ts";
import { makeStaleSocket, spawnListener } from "../support/processes.ts";
import { recordingReport } from "../support/reports.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

/** A scripted server at a fresh path, stopped after the test. */
function serve(onOpen: (socket: Socket<undefined>, n: number) => void): { path: string; server: FakeServer } {
  const path = socketDir(defer, "rc-").path("s.sock");
  const server = fakeServer(path, onOpen);
  defer(() => server.stop());
  return { path, server };
}

/** A connection that logs its events as "open N", "data 1,2", "drain", "close <reason>". */
function connection(path: string, over: Partial<ReconnectingConnectionOptions> = {}) {
  const events: string[] = [];
  const conn: ReconnectingConnection = new ReconnectingConnection({
    path,
    report: silent,
    connectTimeoutMs: 10_000,
    data: (_socket, chunk) => events.push(`data ${[...chunk]}`),
    drain: () => events.push("drain"),
    onOpen: () => events.push(`open ${conn.connects}`),
    onClose: (_socket, reason) => void events.push(`close ${reason}`),
    ...over,
  });
  defer(() => conn.stop());
  return { conn, events };
}

/**
 * A connection looked at every 50 ms (or `serverLookMs`), silent on its first server, with another server started in that
 * one's place (connects hooked, and slowed by `slowMs`: hookConnects); with `once`, run(true).
 */
async function silentThenReplaced(
  onOpen: (socket: Socket<undefined>, n: number) => void,
  hooks: Parameters<typeof hookConnects>[1] = {},
  slowMs = 100,
  { once = false, serverLookMs = 50 } = {},
) {
  const { path, server } = serve(() => {});
  const { conn, events } = connection(path, { serverLookMs });
  const running = conn.run(once);
  await until(() => conn.connects === 1, "connected");
  hookConnects(defer, hooks, slowMs);
  unlinkSync(path);
  const second = fakeServer(path, onOpen);
  defer(() => second.stop());
  return { path, server, second, conn, events, running };
}

/** What a new server pours on the look's connection in the tests of a connection kept aside: 4 MiB. */
const POURED = 4 << 20;

/** A server's pour of POURED bytes of 7 on a connection, as fast as the kernel takes them; `stalled` once the kernel takes no more (or all went). */
function pourer() {
  const pouring = {
    poured: 0,
    async pour(socket: Socket<undefined>) {
      const chunk = new Uint8Array(64 << 10).fill(7);
      while (pouring.poured < POURED) {
        const n = socket.write(chunk, 0, Math.min(chunk.length, POURED - pouring.poured));
        if (n < 0) return;
        pouring.poured += n;
        if (n === 0) await Bun.sleep(1);
      }
    },
    /** Bytes of the pour passed on: each of its events reads "data 7,7,...,7". */
    passedOn(events: string[]) {
      return events.filter((e) => e.startsWith("data 7")).reduce((sum, e) => sum + (e.length - 4) / 2, 0);
    },
    async stalled() {
      let last = -1;
      await until(async () => {
        const still = pouring.poured === last;
        last = pouring.poured;
        await Bun.sleep(200);
        return still || pouring.poured === POURED;
      }, "the pour to stall or finish", 10_000);
    },
  };
  return pouring;
}

describe("ReconnectingConnection", () => {
  test("passes on the current connection's bytes; after the server ends it, connects again and counts one drop", async () => {
    // The first connection gets one byte and is ended; the second gets one byte and stays.
    const { path, server } = serve((socket, n) => {
      socket.write(Uint8Array.of(n));
      if (n === 0) socket.end();
    });
    const { conn, events } = connection(path);
    const running = conn.run();
    await until(() => events.includes("data 1"), "the second connection's byte");
    expect(events).toEqual(["open 1", "data 0", "close server closed", "open 2", "data 1"]);
    expect(conn.connects).toBe(2);
    expect(conn.connectionDrops).toBe(1);
    expect(conn.socket).toBeDefined();

    // stop() closes gracefully (the server sees the end), ends run(), and is not a drop.
    conn.stop();
    await running;
    expect(conn.stopped).toBe(true);
    expect(conn.socket).toBeUndefined();
    expect(conn.connectionDrops).toBe(1);
    expect(events.at(-1)).toBe("close stopped");
    await until(() => server.closedCount() === 2, "the server saw both connections end", 5000);
    expect(server.connections.length).toBe(2);
  });

  test("drains of the current connection are passed on", async () => {
    let peer: Socket<undefined> | undefined;
    const { path } = serve((socket) => {
      socket.pause();
      peer = socket;
    });
    const { conn, events } = connection(path);
    void conn.run();
    await until(() => conn.socket !== undefined && peer !== undefined, "connected");
    // Write until the kernel takes no more, then let the server read: the socket drains.
    const chunk = new Uint8Array(64 * 1024);
    for (let i = 0; i < 1000 && conn.socket!.write(chunk) === chunk.length; i++);
    expect(events).not.toContain("drain");
    peer!.resume();
    await until(() => events.includes("drain"), "a drain", 5000);
  });

  test("close() ends this connection, counts a drop and connects again; closing an old connection again does nothing", async () => {
    const { path, server } = serve(() => {});
    const { conn, events } = connection(path);
    void conn.run();
    await until(() => conn.connects === 1, "connected");
    const first = conn.socket!;
    conn.close(first, "peer misbehaved");
    await until(() => conn.connects === 2, "connected again");
    const second = conn.socket!;
    expect(second).not.toBe(first);
    conn.close(first, "again");
    expect(conn.socket).toBe(second);
    expect(conn.connectionDrops).toBe(1);
    expect(events).toEqual(["open 1", "close peer misbehaved", "open 2"]);
    await until(() => server.closedCount() === 1, "the server saw the first connection end", 5000);
  });

  test("hold: nothing is read while held, from a connection made meanwhile either; once the hold settles, the current one is read", async () => {
    const { path } = serve((socket, n) => void socket.write(Uint8Array.of(n)));
    const { conn, events } = connection(path);
    void conn.run();
    await until(() => events.includes("data 0"), "the first connection's byte");
    const settle = Promise.withResolvers<void>();
    conn.hold(settle.promise);
    expect(conn.holding).toBe(true);
    // The owner drops the connection while held (a protocol error, say): the next one is made, and held too.
    conn.close(conn.socket!, "peer misbehaved");
    await until(() => conn.connects === 2, "connected again");
    // Turns of the loop in which the second connection's byte would be read (it may not be).
    await Bun.sleep(50);
    // (A new connection's first drain is Bun's, written or not.)
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", "data 0", "close peer misbehaved", "open 2"]);
    settle.resolve();
    await until(() => events.includes("data 1"), "the second connection's byte once the hold settles");
    expect(conn.holding).toBe(false);
  });

  test("serverLookMs: a silent connection is kept while the path reaches its file, or none, or while held; given up once silent with another file there", async () => {
    const { path, server } = serve(() => {});
    const { conn, events } = connection(path, { serverLookMs: 50 });
    void conn.run();
    await until(() => conn.connects === 1, "connected");
    // Silent, the path unchanged, then gone with no successor: looked at again and again, kept.
    await Bun.sleep(200);
    unlinkSync(path);
    await Bun.sleep(200);
    expect(conn.connects).toBe(1);
    // Another server at the path while the owner holds the connection: its silence is the owner's doing.
    const settle = Promise.withResolvers<void>();
    conn.hold(settle.promise);
    const second = fakeServer(path, () => {});
    defer(() => second.stop());
    await Bun.sleep(200);
    expect(conn.connects).toBe(1);
    expect(second.connections.length).toBe(0);
    settle.resolve();
    await until(() => conn.connects === 2, "given up for the server now at the path", 5000);
    expect(second.connections.length).toBe(1);
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", "close the server sent nothing for a while, and the socket path now leads to another server", "open 2"]);
    await until(() => server.closedCount() === 1, "the first server saw its connection end", 5000);
    // The new connection is looked at against the file it reached, not the first one's: silent, it is kept.
    await Bun.sleep(200);
    expect(conn.connects).toBe(2);
    expect(second.closedCount()).toBe(0);
  });

  test("serverLookMs: a silent connection is kept while the path leads to a regular file or a directory: no server is there to take its place", async () => {
    const { path } = serve(() => {});
    const { conn, events } = connection(path, { serverLookMs: 50 });
    const running = conn.run();
    await until(() => conn.connects === 1, "connected");
    unlinkSync(path);
    writeFileSync(path, "not a socket");
    await Bun.sleep(200);
    unlinkSync(path);
    mkdirSync(path);
    await Bun.sleep(200);
    // Given up, the connect to such a path would fail for good: run() would have ended in error.
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1"]);
    expect(conn.socket).toBeDefined();
    conn.stop();
    expect(await running).toBeUndefined();
  });

  test("serverLookMs: a server started in the place of the one reached while the connect was being made is still found: the silent connection is given up for it", async () => {
    const { path, server } = serve(() => {});
    let second: FakeServer | undefined;
    // The other server binds the path just after the connect reached the first one (as its supervisor
    // restarts it, Go-style: the file removed, the path bound anew), before the client could look at it.
    const real = Bun.connect;
    Bun.connect = (async (options: Parameters<typeof Bun.connect>[0]) => {
      const socket = await real(options);
      if (second === undefined) {
        unlinkSync(path);
        second = fakeServer(path, () => {});
        defer(() => second!.stop());
      }
      return socket;
    }) as unknown as typeof Bun.connect;
    defer(() => void (Bun.connect = real));
    const { conn, events } = connection(path, { serverLookMs: 50 });
    void conn.run();
    await until(() => conn.connects === 2, "given up for the server now at the path", 5000);
    Bun.connect = real;
    expect(second!.connections.length).toBe(1);
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", "close the server sent nothing for a while, and the socket path now leads to another server", "open 2"]);
    await until(() => server.closedCount() === 1, "the first server saw its connection end", 5000);
  });

  test("serverLookMs: a server at the new file that closes the look's connection as it is made (Bun fails it, ECONNRESET) leaves the silent connection, said once as what it is", async () => {
    const { path, server } = serve(() => {});
    const reports: string[] = [];
    const { conn } = connection(path, { serverLookMs: 50, report: (_level, message) => void reports.push(message) });
    void conn.run();
    await until(() => conn.connects === 1, "connected");
    const real = Bun.connect;
    Bun.connect = (async (options: Parameters<typeof Bun.connect>[0]) => {
      const socket = await real(options);
      socket.terminate();
      throw Object.assign(new Error("connection reset by peer"), { code: "ECONNRESET" });
    }) as unknown as typeof Bun.connect;
    defer(() => void (Bun.connect = real));
    unlinkSync(path);
    const second = fakeServer(path, (socket) => socket.terminate());
    defer(() => second.stop());
    await until(() => second.connections.length >= 2, "looked at twice");
    expect(conn.connects).toBe(1);
    expect(server.closedCount()).toBe(0);
    expect(reports.filter((m) => m.includes("staying connected"))).toEqual([
      "the server sends nothing, and the server at the socket path's new file closed the connection as it was made: staying connected",
    ]);
  });

  test("serverLookMs: a socket file no server answers on (a replacement that died) leaves the silent connection, said once; a server there later gets it, and what it sent at once", async () => {
    const { path, server } = serve(() => {});
    const reports: string[] = [];
    const { conn, events } = connection(path, { serverLookMs: 50, report: (_level, message) => void reports.push(message) });
    void conn.run();
    await until(() => conn.connects === 1, "connected");
    // Made beside it and moved in: the look never meets its listener alive.
    await makeStaleSocket(`${path}.stale`);
    renameSync(`${path}.stale`, path);
    await Bun.sleep(300);
    expect(conn.connects).toBe(1);
    expect(server.closedCount()).toBe(0);
    expect(reports.filter((m) => m.includes("no server answers"))).toEqual(["the server sends nothing, and no server answers at the socket path's new file: staying connected"]);
    // The silent server speaks again: it was kept, so nothing it sends is lost.
    server.connections[0]!.write(Uint8Array.of(5));
    await until(() => events.includes("data 5"), "the kept server's byte");
    // The connect resolves late, as on a busy loop: the bytes come before it, and are kept for it.
    hookConnects(defer, {}, 100);
    unlinkSync(path);
    const second = fakeServer(path, (socket) => void socket.write(Uint8Array.of(7, 8, 9)));
    defer(() => second.stop());
    await until(() => events.includes("data 7,8,9"), "the byte the new server sent as it accepted", 5000);
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", "data 5", "close the server sent nothing for a while, and the socket path now leads to another server", "open 2", "data 7,8,9"]);
    expect(second.connections.length).toBe(1);
    await until(() => server.closedCount() === 1, "the first server saw its connection end", 5000);
  });

  test("serverLookMs: what the silent server sends as it is given up is still passed on, ahead of the new server's", async () => {
    // The silent server writes once the look's connect is made, in the turn the client gives it up,
    // before the client has read it: bytes it counts as sent.
    let spoke = false;
    const { events, conn, server } = await silentThenReplaced(
      (socket) => void socket.write(Uint8Array.of(7)),
      {
        made: () => {
          if (spoke) return;
          spoke = true;
          server.connections[0]!.write(Uint8Array.of(1, 2, 3));
        },
      },
      0,
    );
    await until(() => events.includes("data 7"), "the new server's byte", 5000);
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", "data 1,2,3", `close ${SERVER_REPLACED}`, "open 2", "data 7"]);
    expect(conn.connectionDrops).toBe(1);
  });

  test("serverLookMs: a silent connection given up while its owner holds it: the new server's connection is not read meanwhile, and every byte of both is passed on once the hold settles", async () => {
    // The silent server speaks as it is given up; its bytes make the owner hold (a sink whose reader stalls),
    // so the given-up connection is not read to its end until the hold settles.
    const settle = Promise.withResolvers<void>();
    const { path, server } = serve(() => {});
    const { conn, events } = connection(path, {
      serverLookMs: 50,
      data: (_socket, chunk) => {
        events.push(`data ${[...chunk]}`);
        if (conn.connects === 1) conn.hold(settle.promise);
      },
    });
    void conn.run();
    await until(() => conn.connects === 1, "connected");
    let spoke = false;
    hookConnects(
      defer,
      {
        made: () => {
          if (spoke) return;
          spoke = true;
          server.connections[0]!.write(Uint8Array.of(1, 2, 3));
        },
      },
      0,
    );
    const pouring = pourer();
    unlinkSync(path);
    const second = fakeServer(path, (socket) => void pouring.pour(socket));
    defer(() => second.stop());
    await until(() => events.includes("data 1,2,3") && second.connections.length === 1, "the silent server's bytes, held", 5000);
    // The kernel's buffers fill and the pour stalls: nothing reads the new server's connection while the hold lasts.
    await pouring.stalled();
    expect(pouring.poured).toBeLessThan(POURED);
    expect(conn.connects).toBe(1);
    settle.resolve();
    await until(() => pouring.poured === POURED && pouring.passedOn(events) === POURED, "every byte the new server poured", 20_000);
    expect(events.filter((e) => e !== "drain" && !e.startsWith("data 7"))).toEqual(["open 1", "data 1,2,3", `close ${SERVER_REPLACED}`, "open 2"]);
    expect(conn.connectionDrops).toBe(1);
  }, 60_000);

  test("serverLookMs: what the silent server sends as a later look gives it up for the connection kept aside is still passed on", async () => {
    // The silent one speaks as the look's connect begins: kept, the look's connection kept aside. Looked at every second.
    let first: FakeServer | undefined;
    let spoke = false;
    const setup = await silentThenReplaced(
      (socket) => void socket.write(Uint8Array.of(7)),
      {
        before: () => {
          if (spoke) return;
          spoke = true;
          first!.connections[0]!.write(Uint8Array.of(1));
        },
      },
      0,
      { serverLookMs: 1000 },
    );
    first = setup.server;
    const { events, conn, second } = setup;
    await until(() => events.includes("data 1") && second.connections.length === 1, "the look's connection kept aside", 5000);
    // The silent server writes in the turn of the next look, just before it (timers due together run in the
    // order they fall due): the look gives the silent one up with those bytes still unread.
    setTimeout(() => first!.connections[0]!.write(Uint8Array.of(2, 3)), 0);
    Bun.sleepSync(1200);
    await until(() => events.includes("data 7"), "the new server's byte", 5000);
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", "data 1", "data 2,3", `close ${SERVER_REPLACED}`, "open 2", "data 7"]);
    expect(conn.connects).toBe(2);
  });

  test("serverLookMs: with no libc to shut its reading down, the silent connection is still given up, closed at once", async () => {
    expect(loadLibcFrom(["/nonexistent/libc.so"]).loaded).toBe(false);
    defer(() => loadLibcFrom());
    const { events, conn } = await silentThenReplaced((socket) => void socket.write(Uint8Array.of(7)), {}, 0);
    await until(() => events.includes("data 7"), "the new server's byte", 5000);
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", `close ${SERVER_REPLACED}`, "open 2", "data 7"]);
    expect(conn.connectionDrops).toBe(1);
  });

  test("serverLookMs: what the new server sends in pieces before its connection is taken comes whole, once, in order", async () => {
    // Three writes 20 ms apart, all within the look's connect: each a read of its own.
    const { events, conn } = await silentThenReplaced((socket) => {
      for (const [k, bytes] of [[1, 2], [3, 4, 5], [6]].entries()) setTimeout(() => socket.write(Uint8Array.from(bytes)), 20 * k);
    });
    await until(() => conn.connects === 2, "given up for the server now at the path", 5000);
    await until(() => events.filter((e) => e.startsWith("data")).join(",") === "data 1,2,data 3,4,5,data 6", "the new server's bytes", 5000);
    expect(events.filter((e) => e !== "drain").slice(0, 3)).toEqual(["open 1", `close ${SERVER_REPLACED}`, "open 2"]);
  });

  test("serverLookMs: a new server that closes the look's connection before it is taken: that end is passed on, and the client connects again", async () => {
    // The first connection is closed 20 ms after it was accepted, within the look's connect; the next
    // stays, and its byte comes once that connect too has resolved.
    const { events, conn, second } = await silentThenReplaced((socket, n) => {
      if (n > 0) return void setTimeout(() => socket.write(Uint8Array.of(8)), 300);
      socket.write(Uint8Array.of(7));
      setTimeout(() => socket.end(), 20);
    });
    // Left as the current connection though closed, it was waited on for good: no connect again.
    await until(() => conn.connects === 3, "connected again after the new server closed the first connection", 5000);
    await until(() => events.includes("data 8"), "the next connection's byte", 5000);
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", `close ${SERVER_REPLACED}`, "open 2", "data 7", "close server closed", "open 3", "data 8"]);
    expect(second.connections.length).toBe(2);
  });

  test("serverLookMs: a silent connection whose server ends it while the look's connect is under way goes on with the look's connection", async () => {
    let first: FakeServer | undefined;
    const setup = await silentThenReplaced((socket) => void socket.write(Uint8Array.of(7)), { made: () => first!.connections[0]!.end() });
    first = setup.server;
    const { events, conn, second } = setup;
    await until(() => events.includes("data 7"), "the new server's byte", 5000);
    // Turns of the loop in which the look's connect resolves, and later looks find the path unchanged.
    await Bun.sleep(300);
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", "close server closed", "open 2", "data 7"]);
    expect(conn.connects).toBe(2);
    expect(second.connections.length).toBe(1);
    expect(second.closedCount()).toBe(0);
  });

  test("serverLookMs: a silent server that speaks while the look's connect is under way is kept; the look's connection is kept aside unread, and taken at the next look that finds the silent one silent", async () => {
    let first: FakeServer | undefined;
    let n = 0;
    // It speaks during every look's connect: it was silent when each look began, never once the connect is made.
    const setup = await silentThenReplaced((socket) => void socket.write(Uint8Array.of(9)), { made: () => void first!.connections[0]!.write(Uint8Array.of(n++)) });
    first = setup.server;
    const { events, conn, second } = setup;
    await until(() => conn.connects === 2, "the silent one given up at the next look", 5000);
    await until(() => events.includes("data 9"), "the new server's byte, sent as the look's connection was made", 5000);
    // Turns of the loop in which later looks find the path unchanged.
    await Bun.sleep(300);
    // The next look made no connection of its own: the one kept aside is the one taken, never ended.
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", "data 0", `close ${SERVER_REPLACED}`, "open 2", "data 9"]);
    expect(second.connections.length).toBe(1);
    expect(second.closedCount()).toBe(0);
    await until(() => first!.closedCount() === 1, "the silent one's connection ended", 5000);
  });

  test("serverLookMs: a silent server that speaks as the look's connect begins is kept; what the new server sent at once on the look's connection is passed on once the silent one is given up, none of it lost", async () => {
    let first: FakeServer | undefined;
    let spoke = false;
    // Its byte waits in the kernel before the look's connection is made: read first, in the same turn of the loop.
    const speak = () => void (spoke || ((spoke = true), first!.connections[0]!.write(Uint8Array.of(1))));
    // Each connection the new server takes gets three bytes of its own at once, as an output server sends frames.
    const setup = await silentThenReplaced((socket, n) => void socket.write(Uint8Array.of(7 + n, 7 + n, 7 + n)), { before: speak }, 0);
    first = setup.server;
    const { events, conn, second } = setup;
    await until(() => conn.connects === 2, "given up for the server now at the path once silent again", 5000);
    await until(() => events.filter((e) => e.startsWith("data")).length === 2, "the new server's bytes", 5000);
    // Turns of the loop in which later looks find the path unchanged.
    await Bun.sleep(300);
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", "data 1", `close ${SERVER_REPLACED}`, "open 2", "data 7,7,7"]);
    // One connection to the new server, the look's own, and never ended: nothing it sent was left unread.
    expect(second.connections.length).toBe(1);
    expect(second.closedCount()).toBe(0);
  });

  test("serverLookMs: a connection kept aside whose server then sent its last and left (its socket file gone) is still taken at the next look, with what it sent", async () => {
    let first: FakeServer | undefined;
    let spoke = false;
    const speak = () => void (spoke || ((spoke = true), first!.connections[0]!.write(Uint8Array.of(1))));
    const setup = await silentThenReplaced((socket) => void socket.write(Uint8Array.of(7, 7, 7)), { before: speak }, 0);
    first = setup.server;
    const { path, events, conn, second } = setup;
    await until(() => second.connections.length === 1 && events.includes("data 1"), "the look's connection made, as the silent one spoke", 5000);
    // Kept aside by now (decided in the turn that made it): its server ends it and goes, the path with it.
    unlinkSync(path);
    second.connections[0]!.end();
    await until(() => events.includes("close server closed"), "the kept connection taken and read to its end", 5000);
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", "data 1", `close ${SERVER_REPLACED}`, "open 2", "data 7,7,7", "close server closed"]);
    expect(conn.connects).toBe(2);
  });

  test("serverLookMs: a silent server that closes as the look's connect begins: the look's connection is taken, with what the new server sent on it, not ended for another", async () => {
    let first: FakeServer | undefined;
    let closed = false;
    // Its end waits in the kernel before the look's connection is made: read first, in the same turn of the loop.
    const close = () => void (closed || ((closed = true), first!.connections[0]!.end()));
    const setup = await silentThenReplaced((socket, n) => void socket.write(Uint8Array.of(7 + n, 7 + n, 7 + n)), { before: close }, 0);
    first = setup.server;
    const { events, conn, second } = setup;
    await until(() => events.some((e) => e.startsWith("data")), "the new server's bytes", 5000);
    await Bun.sleep(300);
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", "close server closed", "open 2", "data 7,7,7"]);
    expect(conn.connects).toBe(2);
    expect(second.connections.length).toBe(1);
    expect(second.closedCount()).toBe(0);
  });

  test("serverLookMs: the look's connection, taken as the silent one ended during its connect and ended by its server before that connect resolved, is not taken again: the client connects anew", async () => {
    let first: FakeServer | undefined;
    // The new server's first connection brings a byte and is ended 20 ms later, within the look's slowed
    // connect; the next stays, and its byte comes once that connect too has resolved.
    const setup = await silentThenReplaced(
      (socket, n) => {
        if (n > 0) return void setTimeout(() => socket.write(Uint8Array.of(8)), 300);
        socket.write(Uint8Array.of(7));
        setTimeout(() => socket.end(), 20);
      },
      { made: () => first!.connections[0]!.end() },
    );
    first = setup.server;
    const { events, conn, second } = setup;
    await until(() => events.includes("data 8"), "the byte of the next connection to the new server", 5000);
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", "close server closed", "open 2", "data 7", "close server closed", "open 3", "data 8"]);
    expect(conn.connects).toBe(3);
    expect(second.connections.length).toBe(2);
  });

  test("serverLookMs: run(true) whose one connection ends as the look's connect begins returns, and the look's connection, made after, is ended", async () => {
    let first: FakeServer | undefined;
    let closed = false;
    // Its end waits in the kernel before the look's connect: read, and run(true) returned, before that connection is made.
    const close = () => void (closed || ((closed = true), first!.connections[0]!.end()));
    const setup = await silentThenReplaced(() => {}, { before: close }, 0, { once: true });
    first = setup.server;
    await setup.running;
    expect(setup.events).toEqual(["open 1", "close server closed"]);
    // Taken by no one, it would stay open for good (and keep a process waiting on it from exiting).
    await until(() => setup.second.connections.length === 1 && setup.second.closedCount() === 1, "the look's connection ended", 5000);
    expect(setup.conn.connects).toBe(1);
  });

  test("serverLookMs: the connection kept aside is not read while the silent one keeps speaking: its server can pour no more than the kernel holds, and every byte it poured is passed on once it is taken", async () => {
    let first: FakeServer | undefined;
    let speaking: ReturnType<typeof setInterval> | undefined;
    // It speaks as the look's connect begins, and on every 10 ms after, until told to stop.
    const say = () => void first!.connections[0]!.write(Uint8Array.of(1));
    const speak = () => void (speaking ??= (say(), setInterval(say, 10)));
    defer(() => clearInterval(speaking));
    const pouring = pourer();
    // Looked at every 2 s as in the agent: the silent one, speaking every 10 ms, is never found silent meanwhile.
    const setup = await silentThenReplaced((socket) => void pouring.pour(socket), { before: speak }, 0, { serverLookMs: 2000 });
    first = setup.server;
    const { events, conn, second } = setup;
    let received = 0;
    await until(() => second.connections.length === 1 && events.some((e) => e.startsWith("data 1")), "the look's connection made as the silent one spoke", 10_000);
    // The kernel's buffers fill and the pour stalls: nothing reads the connection kept aside.
    await pouring.stalled();
    expect(conn.connects).toBe(1);
    expect(pouring.poured).toBeLessThan(POURED);
    // The silent one falls silent: the connection kept aside is taken at the next look, and read to the last byte poured.
    clearInterval(speaking);
    await until(() => conn.connects === 2, "the connection kept aside taken", 10_000);
    await until(() => pouring.poured === POURED && (received = pouring.passedOn(events)) === POURED, "every byte the new server poured", 20_000);
    expect(received).toBe(POURED);
    expect(second.connections.length).toBe(1);
  }, 60_000);

  test("serverLookMs: a stop while the look's connect is under way leaves no connection open", async () => {
    let conn: ReconnectingConnection | undefined;
    const setup = await silentThenReplaced(() => {}, { before: () => conn!.stop() });
    conn = setup.conn;
    await setup.running;
    expect(setup.events.filter((e) => e !== "drain")).toEqual(["open 1", "close stopped"]);
    // The look's connection was made after the stop, and is ended.
    await until(() => setup.second.connections.length === 1 && setup.second.closedCount() === 1, "the look's connection ended", 5000);
    await until(() => setup.server.closedCount() === 1, "the first connection ended", 5000);
  });

  test("serverLookMs: an owner that stops as the silent connection is given up (in its onClose) leaves no connection open, the look's neither", async () => {
    const { path, server } = serve(() => {});
    let conn: ReconnectingConnection | undefined;
    const made = connection(path, {
      serverLookMs: 50,
      onClose: (_socket, reason) => {
        made.events.push(`close ${reason}`);
        if (reason === SERVER_REPLACED) conn!.stop();
      },
    });
    conn = made.conn;
    const running = conn.run();
    await until(() => conn.connects === 1, "connected");
    unlinkSync(path);
    const second = fakeServer(path, () => {});
    defer(() => second.stop());
    await running;
    expect(made.events.filter((e) => e !== "drain")).toEqual(["open 1", `close ${SERVER_REPLACED}`]);
    expect(conn.connects).toBe(1);
    // The look's connection, made before the stop and not yet taken by run(), is ended with it.
    await until(() => second.connections.length === 1 && second.closedCount() === 1, "the look's connection ended", 5000);
    await until(() => server.closedCount() === 1, "the first connection ended", 5000);
  });

  test("serverLookMs: run(once) ends with the session the look gave up, and the look's connection, never taken, is ended with it", async () => {
    const { path, server } = serve(() => {});
    const { conn, events } = connection(path, { serverLookMs: 50 });
    const running = conn.run(true);
    await until(() => conn.connects === 1, "connected");
    unlinkSync(path);
    const second = fakeServer(path, () => {});
    defer(() => second.stop());
    await running;
    expect(events.filter((e) => e !== "drain")).toEqual(["open 1", `close ${SERVER_REPLACED}`]);
    expect(conn.connects).toBe(1);
    await until(() => second.connections.length === 1 && second.closedCount() === 1, "the look's connection ended", 5000);
    await until(() => server.closedCount() === 1, "the first connection ended", 5000);
  });

  test("serverLookMs: a connection that keeps bringing data is kept though another server is at the path", async () => {
    // In a process of its own: a pause of the test's (a busy machine) would hold up its bytes too, and
    // the connection would be silent for that long. Its bytes wait in the kernel, read before any timer.
    const path = socketDir(defer, "rc-").path("s.sock");
    const talking = await spawnListener(path, "/tmp", 10);
    defer(talking.kill);
    const { conn } = connection(path, { serverLookMs: 50 });
    void conn.run();
    await until(() => conn.connects === 1, "connected");
    unlinkSync(path);
    const second = fakeServer(path, () => {});
    defer(() => second.stop());
    await Bun.sleep(300);
    expect(conn.connects).toBe(1);
    expect(second.connections.length).toBe(0);
  });

  test("firstAttempt resolves once the first connection is taken (its onOpen has run), with the server there from the start", async () => {
    const { path } = serve(() => {});
    const { conn, events } = connection(path);
    const running = conn.run();
    expect(await within(conn.firstAttempt.then(() => "decided"), 10_000, "still waiting")).toBe("decided");
    expect(events).toEqual(["open 1"]);
    conn.stop();
    await running;
  });

  test("run(true) returns when its one connection ends, without connecting again, and its log promises no reconnect", async () => {
    const { path, server } = serve((socket) => socket.end());
    const { reports, report } = recordingReport();
    const { conn, events } = connection(path, { report });
    await conn.run(true);
    expect(events).toEqual(["open 1", "close server closed"]);
    expect(conn.connects).toBe(1);
    expect(server.connections.length).toBe(1);
    // A session that short earns a wait before the next connect, but there is no next one to announce.
    expect(reports.filter((r) => r.message === "disconnected")).toEqual([{ level: "info", message: "disconnected", fields: { socket: path, reason: "server closed" } }]);
  });

  test("no server within connectTimeoutMs: run() rejects with ConnectTimeoutError; a stop while waiting ends it quietly", async () => {
    const path = socketDir(defer, "rc-").path("absent.sock");
    const { conn } = connection(path, { connectTimeoutMs: 200 });
    const error = await conn.run().catch((e) => e);
    expect(error).toBeInstanceOf(ConnectTimeoutError);
    expect((error as ConnectTimeoutError).path).toBe(path);

    const { conn: waiting } = connection(path);
    const running = waiting.run();
    await Bun.sleep(60);
    waiting.stop();
    expect(await running).toBeUndefined();
    expect(waiting.connects).toBe(0);
  });

  test("a stop while connecting leaves no connection open", async () => {
    const { path, server } = serve(() => {});
    const { conn, events } = connection(path);
    const running = conn.run();
    conn.stop(); // the connect is already under way
    await running;
    expect(conn.connects).toBe(0);
    expect(events).toEqual([]);
    // The connection that was under way was made, and ended at once.
    await until(() => server.connections.length === 1 && server.closedCount() === 1, "the connection made to end", 5000);
  });
});

describe("ReconnectingConnection against a server that closes every connection as it is made", () => {
  test("Bun failing each connect (ECONNRESET) backs off as for any server that drops the client at once: at most 20 connections in 3 s", async () => {
    // Every connection reaches the server, which closes it before Bun sees it made: Bun then fails
    // the connect with ECONNRESET (a race a fast server wins most of the time; made certain here).
    const { path, server } = serve((socket) => socket.terminate());
    const real = Bun.connect;
    const resetting = (async (options: Parameters<typeof Bun.connect>[0]) => {
      const socket = await real(options);
      socket.terminate();
      throw Object.assign(new Error("connection reset by peer"), { code: "ECONNRESET" });
    }) as unknown as typeof Bun.connect;
    Bun.connect = resetting;
    defer(() => void (Bun.connect = real));
    const { conn } = connection(path);
    let decided = false;
    void conn.firstAttempt.then(() => (decided = true));
    const running = conn.run();
    // A reset is an outcome of the first attempt (no server to use yet): a live `input send` waits for it to read its source.
    await until(() => decided, "the first attempt decided by its reset");
    await Bun.sleep(3000);
    const connections = server.connections.length;
    conn.stop();
    await running;
    Bun.connect = real;
    expect(conn.connectResets).toBeGreaterThanOrEqual(3);
    expect(conn.connectResets).toBe(connections);
    // The Go original's schedule alone (50 ms thrice, 100 ms thrice, ... at most 400 ms) makes 14 in 3 s; 50 ms each time made 60.
    expect(connections).toBeLessThanOrEqual(20);
  });
});
