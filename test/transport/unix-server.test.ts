/**
 * UnixServer: one client at a time, a new client replaces the old one (which
 * is closed), the server keeps listening through disconnects, and stop()
 * closes the client and the socket.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, lstatSync, rmSync, statSync } from "node:fs";
import type { Socket } from "bun";
import { SocketPathError } from "../../src/transport/socket-file.ts";
import { silent } from "../../src/transport/report.ts";
import { HANDING_MS, PENDING_BYTES, SLICE_BYTES, UnixServer, type ClientHandler } from "../../src/transport/unix-server.ts";
import { concatBytes, sameBytes } from "../support/bytes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { startOutputServer } from "../support/output-server.ts";
import { indexedPayload, payloadIndex } from "../support/payloads.ts";
import { pacedReader } from "../support/paced-reader.ts";
import { connectClient } from "../support/peer.ts";
import { unixAccepted, unixListeners } from "../support/proc.ts";
import { connectWriteClose } from "../support/blocking-client.ts";
import { recordingReport } from "../support/reports.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { within } from "../../src/io/within.ts";

const defer = useCleanup();

/** A handler that logs every event as "open 1", "data 1 5", "close 1 <reason>" (clients numbered by connection order). */
function recordingHandler() {
  const events: string[] = [];
  const ids = new Map<Socket<unknown>, number>();
  const id = (s: Socket<unknown>) => {
    if (!ids.has(s)) ids.set(s, ids.size + 1);
    return ids.get(s)!;
  };
  const handler: ClientHandler = {
    open: (s) => events.push(`open ${id(s)}`),
    data: (s, chunk) => events.push(`data ${id(s)} ${chunk.length}`),
    drain: () => {},
    close: (s, reason) => events.push(`close ${id(s)} ${reason}`),
  };
  return { events, handler };
}

/** countingHandler's counts, plus each client's server-side socket (numbered by connection order) and a hook run on each data. */
function hookedHandler() {
  const sockets: Socket<unknown>[] = [];
  const id = (s: Socket<unknown>) => {
    if (!sockets.includes(s)) sockets.push(s);
    return sockets.indexOf(s) + 1;
  };
  const data = new Map<number, number>();
  const late = new Map<number, number>();
  const closed = new Map<number, string>();
  const add = (m: Map<number, number>, k: number, n: number) => m.set(k, (m.get(k) ?? 0) + n);
  const hooks: { onData?: (s: Socket<unknown>, n: number) => void } = {};
  const handler: ClientHandler = {
    open: (s) => void id(s),
    data: (s, chunk) => {
      add(data, id(s), chunk.length);
      hooks.onData?.(s, id(s));
    },
    late: (s, chunk) => void add(late, id(s), chunk.length),
    drain: () => {},
    close: (s, reason) => void closed.set(id(s), reason),
  };
  return { handler, hooks, socket: (k: number) => sockets[k - 1]!, data: (k: number) => data.get(k) ?? 0, late: (k: number) => late.get(k) ?? 0, closed };
}

/** The owner's work for a slice (parsing, a sink's write), `ms` of it, on the thread that runs the loop. */
function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

/** Writes `bytes` to `socket` in this turn, as far as the kernel takes them: how many it took. */
function fill(socket: Socket<unknown>, bytes: Uint8Array): number {
  let written = 0;
  for (let n = 1; n > 0 && written < bytes.length; written += Math.max(n, 0)) n = socket.write(bytes.subarray(written));
  return written;
}

async function startUnixServer(handler: ClientHandler) {
  const dir = socketDir(defer, "us-");
  const path = dir.path("s.sock");
  const server = await UnixServer.listen({ path, mode: 0o660, report: silent, handler });
  defer(() => server.stop());
  return { path, server };
}

describe("UnixServer: one client at a time", () => {
  test("a second client replaces the first, which is closed; only the current client's data is delivered", async () => {
    const { events, handler } = recordingHandler();
    const { path, server } = await startUnixServer(handler);
    const first = await connectClient(defer, path);
    await until(() => events.length === 1, "first open");
    first.socket.write(new Uint8Array(5));
    await until(() => events.length === 2, "first data");

    const second = await connectClient(defer, path);
    await first.closed;
    await until(() => events.length === 4, "replacement");
    expect(events).toEqual(["open 1", "data 1 5", "close 1 replaced by a new client", "open 2"]);
    expect(server.connections).toBe(2);
    expect(server.replacements).toBe(1);
    expect(server.client).toBeDefined();

    second.socket.write(new Uint8Array(7));
    await until(() => events.length === 5, "second data");
    expect(events[4]).toBe("data 2 7");
    expect(second.isClosed).toBe(false);
  });

  test("clients are numbered in the order they connect, in what the server reports", async () => {
    const { reports, report } = recordingReport();
    const path = socketDir(defer, "us-").path("s.sock");
    const server = await UnixServer.listen({ path, mode: 0o660, report, handler: recordingHandler().handler });
    defer(() => server.stop());
    for (let n = 1; n <= 3; n++) {
      await connectClient(defer, path);
      await until(() => server.connections === n, `client ${n}`);
    }
    const connected = reports.filter((r) => r.message === "client connected").map((r) => r.fields!.client);
    expect(connected).toEqual([1, 2, 3]);
    const replaced = reports.filter((r) => r.message === "client disconnected").map((r) => [r.fields!.client, r.fields!.reason]);
    expect(replaced).toEqual([
      [1, "replaced by a new client"],
      [2, "replaced by a new client"],
    ]);
  });

  test("clients let go faster than they close (a peer connecting again and again, each connection held open): at most 16 linger at once, the one let go longest ago is closed", async () => {
    const path = socketDir(defer, "us-").path("s.sock");
    // What the server holds as each client is accepted: its end of every connection not closed yet.
    let most = 0;
    const handler = { ...recordingHandler().handler, open: () => void (most = Math.max(most, unixAccepted(path))) };
    const server = await UnixServer.listen({ path, mode: 0o660, report: silent, handler });
    defer(() => server.stop());
    for (let n = 1; n <= 40; n++) {
      await connectClient(defer, path, { paused: true });
      await until(() => server.connections === n, `client ${n}`);
    }
    // Each would otherwise hold a descriptor of the server's for a second: a loop of them, the process's every one.
    expect(most).toBeLessThanOrEqual(17);
    // The newest is served.
    expect(server.client).toBeDefined();
  });

  test("a client that leaves is reported as peer closed and the server accepts the next one", async () => {
    const { events, handler } = recordingHandler();
    const { path, server } = await startUnixServer(handler);
    const first = await connectClient(defer, path);
    await until(() => events.length === 1, "open");
    first.socket.end();
    await until(() => events.length === 2, "close");
    expect(events[1]).toBe("close 1 peer closed");
    expect(server.client).toBeUndefined();

    await connectClient(defer, path);
    await until(() => events.length === 3, "second open");
    expect(events[2]).toBe("open 2");
    expect(server.replacements).toBe(0);
  });

  test("its socket file removed while a client is served: put back as that client leaves, where the next one comes (no reading taken meanwhile)", async () => {
    const { events, handler } = recordingHandler();
    const { reports, report } = recordingReport();
    const path = socketDir(defer, "us-").path("s.sock");
    const server = await UnixServer.listen({ path, mode: 0o640, report, handler });
    defer(() => server.stop());
    const bound = statSync(path);
    const first = await connectClient(defer, path);
    await until(() => events.length === 1, "open");
    rmSync(path);
    first.socket.end();
    await until(() => events.length === 2, "close");
    expect(statSync(path)).toMatchObject({ ino: bound.ino, mode: bound.mode });
    expect(reports.filter((r) => r.message === "the socket file was removed; put back").length).toBe(1);
    await connectClient(defer, path);
    await until(() => events.length === 3, "second open");
    expect(events[2]).toBe("open 2");
    await server.stop();
    expect(existsSync(path)).toBe(false);
  });

  test("disconnect() closes the client with the given reason; the server keeps listening", async () => {
    const { events, handler } = recordingHandler();
    const { path, server } = await startUnixServer(handler);
    const client = await connectClient(defer, path);
    await until(() => server.client !== undefined, "accepted");
    server.disconnect(server.client!, "told to go");
    await client.closed;
    expect(events).toEqual(["open 1", "close 1 told to go"]);
    await connectClient(defer, path);
    await until(() => events.length === 3, "next client");
  });

  test("stop() closes the client, removes the socket file and refuses new connections", async () => {
    const { events, handler } = recordingHandler();
    const { path, server } = await startUnixServer(handler);
    const client = await connectClient(defer, path);
    await until(() => events.length === 1, "open");
    await server.stop();
    await client.closed;
    expect(events).toEqual(["open 1", "close 1 server stopping"]);
    expect(existsSync(path)).toBe(false);
    const refused = await Bun.connect({ unix: path, socket: { data() {} } }).then(
      (s) => (s.end(), "connected"),
      (e) => (e as NodeJS.ErrnoException).code,
    );
    expect(refused).toBe("ENOENT");
  });

  test("stop() half-closes: the client reads what was written, then sees the end; one that keeps its end open is closed all the same", async () => {
    const { events, handler } = recordingHandler();
    const { path, server } = await startUnixServer(handler);
    let bytes = 0;
    let sawEnd = false;
    const { promise: closed, resolve: markClosed } = Promise.withResolvers<void>();
    // allowHalfOpen: this client does not close when the server's side ends; only the server's linger closes it.
    const client = await Bun.connect({
      unix: path,
      allowHalfOpen: true,
      socket: { data: (_s, chunk) => void (bytes += chunk.length), end: () => void (sawEnd = true), close: () => markClosed() },
    });
    defer(() => client.terminate());
    await until(() => events.length === 1, "open");
    server.client!.write(new Uint8Array(1000));
    await server.stop();
    await closed;
    expect(bytes).toBe(1000);
    expect(sawEnd).toBe(true);
    expect(events).toEqual(["open 1", "close 1 server stopping"]);
    expect(existsSync(path)).toBe(false);
  });

  test("stop() closes the listening socket itself; a second stop() leaves alone a server that listens there now", async () => {
    const { path, server } = await startUnixServer(recordingHandler().handler);
    expect(unixListeners(path)).toBe(1);
    await server.stop();
    expect(unixListeners(path)).toBe(0);
    expect(existsSync(path)).toBe(false);

    const next = await UnixServer.listen({ path, mode: 0o660, report: silent, handler: recordingHandler().handler });
    defer(() => next.stop());
    await server.stop();
    expect(unixListeners(path)).toBe(1);
    expect(lstatSync(path).isSocket()).toBe(true);
    const client = await connectClient(defer, path);
    await until(() => next.connections === 1, "the new server accepted");
    expect(client.isClosed).toBe(false);
  });

  // Each server listens for the process's exit (to remove its socket file then). A process that
  // starts and stops servers again and again (the benchmark does) must not collect one listener,
  // and one stopped server kept alive by it, per server.
  test("stop() takes back the exit listener listen() added: after servers come and go, as many are left as before", async () => {
    const before = process.listenerCount("exit");
    for (let i = 0; i < 12; i++) {
      const path = socketDir(defer, "us-").path("s.sock");
      const server = await UnixServer.listen({ path, mode: 0o660, report: silent, handler: recordingHandler().handler });
      defer(() => server.stop());
      expect(process.listenerCount("exit")).toBe(before + 1);
      await server.stop();
      expect(process.listenerCount("exit")).toBe(before);
    }
  });

  test("a second server on the same path is refused and the first keeps its client", async () => {
    const { events, handler } = recordingHandler();
    const { path, server } = await startUnixServer(handler);
    const client = await connectClient(defer, path);
    await until(() => events.length === 1, "open");

    const error = await UnixServer.listen({ path, mode: 0o660, report: silent, handler: recordingHandler().handler }).then(
      (other) => (defer(() => other.stop()), undefined),
      (e) => e,
    );
    expect(error).toBeInstanceOf(SocketPathError);
    expect((error as SocketPathError).problem).toBe("InUse");
    await Bun.sleep(50);
    expect(client.isClosed).toBe(false);
    expect(events).toEqual(["open 1"]);
    expect(server.replacements).toBe(0);
  });
});

describe("OutputServer and a client that shuts down its sending side", () => {
  test("it is still served: a reader such as `nc -N -U sock </dev/null` gets every frame after its end of sending", async () => {
    const { path, server } = await startOutputServer(defer, { queueFrames: 100 });
    const client = await connectClient(defer, path);
    await until(() => server.connected, "accepted");
    client.socket.shutdown();
    await Bun.sleep(50);
    for (let i = 0; i < 20; i++) server.sendFrame(indexedPayload(i));
    await until(() => client.frames.length === 20, "20 frames after the shutdown", 5000);
    expect(client.isClosed).toBe(false);
    expect(server.connected).toBe(true);
    expect(server.stats.delivered).toBe(20);
    // Replaced by the next client like any other: its end of sending is not its leaving.
    await connectClient(defer, path);
    await client.closed;
    expect(server.listener.replacements).toBe(1);
  });
});

describe("OutputServer client replacement", () => {
  test("frames go to the new client; the replaced one is closed and gets nothing more", async () => {
    const { path, server } = await startOutputServer(defer, { queueFrames: 100, writeDeadlineMs: 50 });

    const first = await connectClient(defer, path);
    await until(() => server.connected, "first accepted");
    for (let i = 0; i < 5; i++) server.sendFrame(indexedPayload(i));
    await until(() => first.frames.length === 5, "first gets 5");

    const second = await connectClient(defer, path);
    await first.closed;
    await until(() => server.listener.replacements === 1 && server.connected, "second accepted");
    for (let i = 5; i < 15; i++) server.sendFrame(indexedPayload(i));
    await until(() => second.frames.length === 10, "second gets 10");

    expect(first.frames.map(payloadIndex)).toEqual([0, 1, 2, 3, 4]);
    expect(first.pending).toBe(0);
    expect(second.frames.map(payloadIndex)).toEqual([5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
    expect(server.stats.delivered).toBe(15);
    expect(server.stats.droppedTotal).toBe(0);
  });
});

describe("UnixServer: connection drops", () => {
  test("a client leaving, being replaced or cut off counts; an expected end and the server's own stop do not", async () => {
    const { events, handler } = recordingHandler();
    const { path, server } = await startUnixServer(handler);

    const first = await connectClient(defer, path);
    await until(() => events.length === 1, "first open");
    await connectClient(defer, path); // replaces the first: its connection dropped
    await first.closed;
    await until(() => server.connectionDrops === 1, "replacement counted");

    server.disconnect(server.client!, "session stopped", "end", true); // a clean end the protocol asked for
    await until(() => server.client === undefined, "expected end");
    expect(server.connectionDrops).toBe(1);

    const third = await connectClient(defer, path);
    await until(() => server.client !== undefined, "third open");
    third.socket.end(); // the peer leaves
    await until(() => server.connectionDrops === 2, "peer close counted");

    await connectClient(defer, path);
    await until(() => server.client !== undefined, "fourth open");
    await server.stop();
    expect(server.connectionDrops).toBe(2);
  });
});

describe("UnixServer: clients the kernel had queued when the server stops accepting", () => {
  /** countingHandler's late bytes per client, with the reports the server made. */
  async function lateCounting() {
    const late = new Map<number, number>();
    const ids = new Map<Socket<unknown>, number>();
    const handler: ClientHandler = {
      open: () => {},
      data: () => {},
      late: (s, chunk) => {
        if (!ids.has(s)) ids.set(s, ids.size + 1);
        late.set(ids.get(s)!, (late.get(ids.get(s)!) ?? 0) + chunk.length);
      },
      drain: () => {},
      close: () => {},
    };
    const { reports, report } = recordingReport();
    const dir = socketDir(defer, "us-");
    const path = dir.path("s.sock");
    const server = await UnixServer.listen({ path, mode: 0o660, report, handler });
    defer(() => server.stop());
    return { server, path, late, reports };
  }

  test("stopAccepting(): clients queued before it (connected, bytes written, gone) are accepted and let go unserved, what they wrote read late; a client after it is refused", async () => {
    const { server, path, late, reports } = await lateCounting();
    // Within one turn of the loop: the server has seen neither connection when it stops accepting.
    expect(connectWriteClose(path, new Uint8Array(1000))).toBe(true);
    expect(connectWriteClose(path, new Uint8Array(2000))).toBe(true);
    const closed = server.stopAccepting();
    expect(connectWriteClose(path, new Uint8Array(10))).toBe(false);
    await closed;
    await until(() => late.size === 2, "both queued clients read");
    expect([...late.values()].sort((a, b) => a - b)).toEqual([1000, 2000]);
    expect([server.connections, server.connectionDrops, server.client]).toEqual([2, 0, undefined]);
    expect(reports.filter((r) => r.message === "client let go unserved").map((r) => r.fields!.reason)).toEqual(["the server no longer accepts clients", "the server no longer accepts clients"]);
  });

  test("stop(): a client queued before it is read late before stop() resolves", async () => {
    const { server, path, late } = await lateCounting();
    expect(connectWriteClose(path, new Uint8Array(700))).toBe(true);
    await server.stop();
    expect(late.get(1)).toBe(700);
  });
});

describe("UnixServer.hold: while the owner cannot take more, no client is read", () => {
  /** A handler that counts the bytes each client (numbered by connection order) gave to data and to late, and its close reason. */
  function countingHandler() {
    const ids = new Map<Socket<unknown>, number>();
    const id = (s: Socket<unknown>) => {
      if (!ids.has(s)) ids.set(s, ids.size + 1);
      return ids.get(s)!;
    };
    const data = new Map<number, number>();
    const late = new Map<number, number>();
    const closed = new Map<number, string>();
    const add = (m: Map<number, number>, k: number, n: number) => m.set(k, (m.get(k) ?? 0) + n);
    const handler: ClientHandler = {
      open: (s) => void id(s),
      data: (s, chunk) => void add(data, id(s), chunk.length),
      late: (s, chunk) => void add(late, id(s), chunk.length),
      drain: () => {},
      close: (s, reason) => void closed.set(id(s), reason),
    };
    return { handler, data: (k: number) => data.get(k) ?? 0, late: (k: number) => late.get(k) ?? 0, closed };
  }

  test("a client that connects while held waits, unread; once the hold settles, what the held one sent before it came is read as that one's, and then it takes over", async () => {
    const h = countingHandler();
    const { path, server } = await startUnixServer(h.handler);
    const first = await connectClient(defer, path);
    first.socket.write(new Uint8Array(100));
    await until(() => h.data(1) === 100, "the first client's bytes");
    const settle = Promise.withResolvers<void>();
    server.hold(settle.promise);
    expect(server.holding).toBe(true);
    expect(first.socket.write(new Uint8Array(1000))).toBe(1000);
    const second = await connectClient(defer, path);
    expect(second.socket.write(new Uint8Array(500))).toBe(500);
    // Turns of the loop in which a read of either, or the second taking over, would come (none may).
    await Bun.sleep(50);
    // The second is accepted (counted) and waits: not served, not read.
    expect([h.data(1), h.data(2), h.late(1), server.connections]).toEqual([100, 0, 0, 2]);
    expect(h.closed.size).toBe(0);
    settle.resolve();
    await until(() => h.data(2) === 500, "the second client's bytes once the hold settles");
    expect([h.data(1), h.late(1), server.connections, server.replacements]).toEqual([1100, 0, 2, 1]);
    expect(h.closed.get(1)).toBe("replaced by a new client");
    expect(server.holding).toBe(false);
  });

  test("clients still waiting when the server stops are let go unserved: what they sent is read late, whole", async () => {
    const h = countingHandler();
    const { path, server } = await startUnixServer(h.handler);
    await connectClient(defer, path);
    await until(() => server.connections === 1, "the first client");
    server.hold(Promise.withResolvers<void>().promise);
    const waiting = await connectClient(defer, path);
    expect(waiting.socket.write(new Uint8Array(300))).toBe(300);
    await Bun.sleep(50);
    expect(h.data(2)).toBe(0);
    const stopping = server.stop();
    await until(() => h.late(2) === 300, "the waiting client's bytes, late");
    waiting.socket.end();
    await stopping;
    // Accepted, never served; let go by the server's own stop: no drop.
    expect([h.data(2), server.connections, server.connectionDrops]).toEqual([0, 2, 0]);
  });

  test("past 16 waiting, the one waiting longest is let go unserved: counted as accepted and as a drop, logged waiting, then disconnected", async () => {
    const h = countingHandler();
    const { reports, report } = recordingReport();
    const dir = socketDir(defer, "us-");
    const path = dir.path("s.sock");
    const server = await UnixServer.listen({ path, mode: 0o660, report, handler: h.handler });
    defer(() => server.stop());
    await connectClient(defer, path);
    await until(() => server.client !== undefined, "the first client");
    server.hold(Promise.withResolvers<void>().promise);
    const waiting = [];
    for (let i = 0; i < 17; i++) {
      waiting.push(await connectClient(defer, path));
      await until(() => server.connections === i + 2, `client ${i + 2} accepted`);
    }
    await waiting[0]!.closed;
    expect([server.connections, server.connectionDrops]).toEqual([18, 1]);
    const about = (client: number) => reports.filter((r) => r.fields?.client === client).map((r) => [r.message, r.fields!.reason]);
    expect(about(2)).toEqual([["client waiting", undefined], ["client disconnected", "replaced by a new client before it was served"]]);
    expect(about(18)).toEqual([["client waiting", undefined]]);
    await server.stop();
    // The 16 still waiting at the stop are let go as the stop's own: no more drops.
    expect(server.connectionDrops).toBe(1);
  });

  test("a hold that fails (the owner's sink failed) lets the clients be read again, as one that settles does", async () => {
    const h = countingHandler();
    const { path, server } = await startUnixServer(h.handler);
    const failing = Promise.withResolvers<void>();
    failing.promise.catch(() => {});
    server.hold(failing.promise);
    const client = await connectClient(defer, path);
    expect(client.socket.write(new Uint8Array(300))).toBe(300);
    await Bun.sleep(50);
    expect([server.connections, server.client]).toEqual([1, undefined]);
    failing.reject(new Error("sink failed"));
    await until(() => h.data(1) === 300, "the client's bytes once the hold has failed");
    expect(server.holding).toBe(false);
    expect(server.connections).toBe(1);
    expect(server.client).toBeDefined();
  });
});

describe("UnixServer.hold: a hold that begins while a client is being replaced", () => {
  /** A served client whose 100 bytes are still unread when the next connects (the loop has not got to them: readPending's case). */
  async function servedWithUnreadBytes() {
    const h = hookedHandler();
    const { path, server } = await startUnixServer(h.handler);
    const first = await connectClient(defer, path);
    await until(() => server.connections === 1, "the first client");
    h.socket(1).pause();
    expect(first.socket.write(new Uint8Array(100))).toBe(100);
    await Bun.sleep(50);
    expect(h.data(1)).toBe(0);
    return { h, path, server };
  }

  test("a hold that begins as what the replaced client sent is read (no hold before): the new client waits and is served once it settles, not left unread and unserved", async () => {
    const { h, path, server } = await servedWithUnreadBytes();
    // Reading it fills the owner's sink: a hold begins inside readPending.
    const settle = Promise.withResolvers<void>();
    h.hooks.onData = (_s, k) => {
      if (k === 1) server.hold(settle.promise);
    };
    const second = await connectClient(defer, path);
    expect(second.socket.write(new Uint8Array(500))).toBe(500);
    await until(() => h.data(1) === 100, "the first client's bytes, read as the second connects");
    expect(server.holding).toBe(true);
    await Bun.sleep(50);
    // Not read while held, neither as its session nor (unserved) late.
    expect([h.data(2), h.late(2)]).toEqual([0, 0]);
    settle.resolve();
    // Once the hold settles the second client takes over, and what it sent is read.
    await until(() => h.data(2) + h.late(2) === 500, "the second client's bytes once the hold settles", 3000);
    expect([h.data(2), server.connections, server.replacements]).toEqual([500, 2, 1]);
  });

  test("a hold that begins as what the replaced client sent is read: stop() lets the new client go too (its descriptor closed, what it sent counted late)", async () => {
    const { h, path, server } = await servedWithUnreadBytes();
    h.hooks.onData = (_s, k) => {
      if (k === 1) server.hold(Promise.withResolvers<void>().promise);
    };
    const second = await connectClient(defer, path);
    await until(() => h.data(1) === 100, "the first client's bytes, read as the second connects");
    expect(second.socket.write(new Uint8Array(300))).toBe(300);
    await Bun.sleep(50);
    await server.stop();
    // Let go at the stop, as any client accepted and waiting is: what it sent read late, its connection closed.
    await within(second.closed, 3000, undefined);
    expect([second.isClosed, h.late(2)]).toEqual([true, 300]);
  });

  test("a hold that begins as the held client's last bytes are read, which also end its session (frames then Stop in one read): the next waiting client is not read until that hold settles", async () => {
    const h = hookedHandler();
    const { path, server } = await startUnixServer(h.handler);
    const first = await connectClient(defer, path);
    await until(() => server.connections === 1, "the first client");
    const first_hold = Promise.withResolvers<void>();
    server.hold(first_hold.promise);
    // Frames and Stop, unread while held.
    expect(first.socket.write(new Uint8Array(100))).toBe(100);
    const second = await connectClient(defer, path);
    expect(second.socket.write(new Uint8Array(500))).toBe(500);
    await Bun.sleep(50);
    expect([h.data(1), h.data(2)]).toEqual([0, 0]);
    // As InputServer does: the frames of that read hold the sink again, and the Stop in the same read ends the session.
    const second_hold = Promise.withResolvers<void>();
    h.hooks.onData = (s, k) => {
      if (k !== 1) return;
      server.hold(second_hold.promise);
      server.disconnect(s, "session stopped", "end", true);
    };
    first_hold.resolve();
    await until(() => h.data(1) === 100, "the first client's bytes once the first hold settles");
    expect(server.holding).toBe(true);
    await Bun.sleep(50);
    // Held again: the second client may not be read (its bytes would pile up in the owner's sink).
    expect(h.data(2)).toBe(0);
    second_hold.resolve();
    await until(() => h.data(2) === 500, "the second client's bytes once the second hold settles", 3000);
  });
});

/**
 * A served client that wrote, before the server read any of it, as much as
 * the kernel would take (more than a slice): Bun reads it in one go. Its
 * bytes count up 0..250, so their order is checked.
 */
async function floodedServer(onData: (server: UnixServer, socket: Socket<unknown>, chunk: Uint8Array) => void = () => {}) {
  const chunks: Uint8Array[] = [];
  const late: Uint8Array[] = [];
  const events: string[] = [];
  let server!: UnixServer;
  const handler: ClientHandler = {
    open: () => void events.push("open"),
    data: (s, chunk) => {
      chunks.push(chunk.slice());
      events.push(`data ${chunk.length}`);
      onData(server, s, chunk);
    },
    late: (_s, chunk) => void late.push(chunk.slice()),
    drain: () => {},
    close: (_s, reason) => void events.push(`close ${reason}`),
  };
  ({ server } = await startUnixServer(handler));
  const client = await connectClient(defer, server.path);
  await until(() => events.includes("open"), "the client served");
  const sent = new Uint8Array(4 << 20).map((_, i) => i % 251);
  const written = fill(client.socket, sent);
  expect(written).toBeGreaterThan(SLICE_BYTES);
  return { server, client, chunks, late, events, sent: sent.subarray(0, written) };
}
describe("UnixServer: a large read is handed in slices, over turns of the loop", () => {
  test("in order and whole, no slice larger than SLICE_BYTES, and a timer due meanwhile runs before the read is all handed (the owner busy HANDING_MS with a slice or two)", async () => {
    let timerFired = -1;
    let handed = 0;
    const f = await floodedServer((_server, _socket, chunk) => {
      // The owner's work for a slice (parsing, the sink's write): a timer armed at the first is due before the last.
      if (handed === 0) setTimeout(() => (timerFired = handed), 0);
      handed += chunk.length;
      busy(HANDING_MS / 2);
    });
    await until(() => handed === f.sent.length, "every byte handed", 10_000);
    expect(Math.max(...f.chunks.map((c) => c.length))).toBeLessThanOrEqual(SLICE_BYTES);
    expect(sameBytes(concatBytes(f.chunks), f.sent)).toBe(true);
    // Before: the whole read (up to 512 KiB) in one handing, the timer after it.
    expect(timerFired).toBeGreaterThan(0);
    expect(timerFired).toBeLessThan(f.sent.length);
  });

  test("a hold begun in a slice: nothing more is handed until it ends, then the rest in order", async () => {
    const hold = Promise.withResolvers<void>();
    const f = await floodedServer((server) => server.hold(hold.promise));
    await until(() => f.chunks.length > 0, "the first slice");
    await Bun.sleep(100);
    // Before: the rest of the read (all of it) still went to the held owner.
    expect(f.chunks.length).toBe(1);
    expect(f.chunks[0]!.length).toBe(SLICE_BYTES);
    hold.resolve();
    await until(() => concatBytes(f.chunks).length === f.sent.length, "the rest once the hold ended", 10_000);
    expect(sameBytes(concatBytes(f.chunks), f.sent)).toBe(true);
  });

  test("the owner busy HANDING_MS with a slice: one slice a turn, what it leaves for the next turn (setImmediate) runs before the next slice is handed", async () => {
    const handedAt: number[] = [];
    let handed = 0;
    const f = await floodedServer((_server, _socket, chunk) => {
      handed += chunk.length;
      setImmediate(() => handedAt.push(handed));
      busy(HANDING_MS);
    });
    await until(() => handedAt.length === f.chunks.length && handed === f.sent.length, "every byte handed", 10_000);
    // Each turn's work sees the slices handed so far, no more (a read handed whole in one turn: the total, each time).
    let sum = 0;
    expect(handedAt).toEqual(f.chunks.map((c) => (sum += c.length)));
  });

  test("a hold begun in a slice handed a turn after the read: nothing more is handed until it ends, then the rest in order", async () => {
    const hold = Promise.withResolvers<void>();
    let slices = 0;
    const f = await floodedServer((server) => {
      if (++slices === 2) server.hold(hold.promise);
    });
    await until(() => f.chunks.length >= 2, "the second slice");
    await Bun.sleep(100);
    expect(f.chunks.length).toBe(2);
    hold.resolve();
    await until(() => concatBytes(f.chunks).length === f.sent.length, "the rest once the hold ended", 10_000);
    expect(sameBytes(concatBytes(f.chunks), f.sent)).toBe(true);
  });

  test("a hold begun in the last slice of a read, the client writing on: it is not read again until the hold ends", async () => {
    const hold = Promise.withResolvers<void>();
    const more = new Uint8Array(64 << 10).fill(7);
    let handed = 0;
    let wroteMore = 0;
    const f = await floodedServer((server, _socket, chunk) => {
      // While the first read is handed, the client writes again (once its socket takes it).
      if (wroteMore === 0) wroteMore = Math.max(f.client.socket.write(more), 0);
      handed += chunk.length;
      if (handed === f.sent.length) server.hold(hold.promise);
    });
    await until(() => handed >= f.sent.length, "the first read, all of it");
    expect(wroteMore).toBeGreaterThan(0);
    await Bun.sleep(100);
    // The slice that began the hold was its read's last: what it sent next still waits for the hold's end.
    expect(handed).toBe(f.sent.length);
    hold.resolve();
    await until(() => handed === f.sent.length + wroteMore, "what it wrote next, once the hold ended", 10_000);
  });

  test("a client that floods is not read while the rest of a read waits, holds begun and ended on the way: what it has written and was not handed stays within one read and the socket's buffer", async () => {
    let handed = 0;
    let written = 0;
    let mostAhead = 0;
    const block = new Uint8Array(64 << 10);
    const f = await floodedServer((server, _socket, chunk) => {
      // Every 256 KiB or so, the owner's sink holds for a moment: the rest waits for the hold's end.
      if (handed >> 18 !== (handed + chunk.length) >> 18) server.hold(Bun.sleep(1));
      handed += chunk.length;
      // The client writes whatever the kernel takes, each time a slice is handed.
      for (let n = 1; n > 0 && written < 8 << 20; written += Math.max(n, 0)) n = f.client.socket.write(block);
      mostAhead = Math.max(mostAhead, f.sent.length + written - handed);
    });
    await until(() => handed === f.sent.length + written && written >= 8 << 20, "8 MiB more, all handed", 20_000);
    // One read (Bun's are at most 512 KiB) and what the kernel holds for it; read on meanwhile, the rest would grow by a read a turn.
    expect(mostAhead).toBeLessThan(1 << 20);
  });

  test("a client let go in a slice (its Stop): the rest of the read is handed late, after what was handed as data", async () => {
    const f = await floodedServer((server, socket) => server.disconnect(socket, "session stopped", "end", true));
    await until(() => concatBytes([...f.chunks, ...f.late]).length === f.sent.length, "every byte, data then late", 10_000);
    expect(f.chunks.length).toBe(1);
    expect(sameBytes(concatBytes([...f.chunks, ...f.late]), f.sent)).toBe(true);
  });

  test("a client let go in a slice and cut off (more let go than may linger) while the rest of its read waits: the rest is handed late before it is closed", async () => {
    const f = await floodedServer((server, socket) => {
      if (f.chunks.length > 1) return;
      server.disconnect(socket, "session stopped", "end", true);
      // Clients that connect and read nothing: each replaces the one before, let go and lingering, in one turn
      // (the kernel queues 17), past the 16 that may linger at once: the one let go longest ago, this one, is cut off.
      for (let n = 0; n < 17; n++) pacedReader(defer, server.path, 0, 0);
    });
    // What had not been handed of its read when it was cut off is handed (late, so counted) as it is closed.
    await until(() => concatBytes([...f.chunks, ...f.late]).length === f.sent.length, "every byte, data then late", 5000);
    expect(f.chunks.length).toBe(1);
    expect(sameBytes(concatBytes([...f.chunks, ...f.late]), f.sent)).toBe(true);
  });

  test("a client replaced while the rest of its read waits: the rest is handed as its data before the new client is served", async () => {
    let replacing: Promise<unknown> | undefined;
    const f = await floodedServer((server) => {
      replacing ??= connectClient(defer, server.path);
    });
    await replacing;
    await until(() => f.events.includes("open") && f.events.lastIndexOf("open") > 0, "the new client served", 10_000);
    const replaced = f.events.indexOf("close replaced by a new client");
    expect(replaced).toBeGreaterThan(0);
    // Everything the first client wrote was handed as its data, before it was replaced.
    expect(sameBytes(concatBytes(f.chunks), f.sent)).toBe(true);
    expect(f.events.slice(replaced + 1)).toEqual(["open"]);
  });

  test("a client replaced while the rest of its read waits, the owner busy HANDING_MS with a slice: still one slice a turn, the new client waiting", async () => {
    const handedAt: number[] = [];
    let handed = 0;
    let replacing: Promise<unknown> | undefined;
    const f = await floodedServer((server, _socket, chunk) => {
      replacing ??= connectClient(defer, server.path);
      handed += chunk.length;
      setImmediate(() => handedAt.push(handed));
      busy(HANDING_MS);
    });
    await replacing;
    await until(() => f.events.lastIndexOf("open") > 0, "the new client served", 10_000);
    await until(() => handedAt.length === f.chunks.length, "the last turn's work");
    expect(handed).toBe(f.sent.length);
    // Before: the turn booked to hand the rest and the replacement's own reading each handed a slice, two a turn.
    let sum = 0;
    expect(handedAt).toEqual(f.chunks.map((c) => (sum += c.length)));
  });
});

describe("UnixServer: a flooding client replaced", () => {
  // What a replaced client sent before the new one came is read before the new one is served: it was
  // read in that one turn, up to 4 MiB of a client that floods (64 reads), which a compiled agent in
  // its interpreter took seconds over (serve's other channel: a 1.9 s gap with a flooder replaced every
  // 100 ms). Now HANDING_MS a turn, the new client waiting meanwhile.
  test("what it sent is handed as its data over turns, a timer due meanwhile runs, and then the new client is served", async () => {
    const h = hookedHandler();
    const { path, server } = await startUnixServer(h.handler);
    const first = await connectClient(defer, path);
    await until(() => server.connections === 1, "the first client");
    h.socket(1).pause();
    const written = fill(first.socket, new Uint8Array(PENDING_BYTES));
    expect(written).toBeGreaterThan(4 * SLICE_BYTES);
    expect(written).toBeLessThan(PENDING_BYTES);
    // The owner's work for a slice takes the whole of HANDING_MS: one slice a turn.
    let handedWhenTimerRan = -1;
    h.hooks.onData = () => {
      if (handedWhenTimerRan === -1) {
        handedWhenTimerRan = -2;
        setTimeout(() => (handedWhenTimerRan = h.data(1)), 0);
      }
      busy(HANDING_MS);
    };
    const second = await connectClient(defer, path);
    await until(() => h.closed.get(1) === "replaced by a new client", "the first client replaced", 10_000);
    // All of it its session's, none late; before, in one turn: the timer ran once all was handed.
    expect([h.data(1), h.late(1)]).toEqual([written, 0]);
    expect(handedWhenTimerRan).toBeGreaterThan(0);
    expect(handedWhenTimerRan).toBeLessThan(written);
    expect(second.socket.write(new Uint8Array(7))).toBe(7);
    await until(() => h.data(2) === 7, "the new client served");
  });

  test("clients that come while what it sent is read over turns wait, and are served first come first: the last one to come is the one served in the end, each one's bytes its own data", async () => {
    const h = hookedHandler();
    const { reports, report } = recordingReport();
    const path = socketDir(defer, "us-").path("s.sock");
    const server = await UnixServer.listen({ path, mode: 0o660, report, handler: h.handler });
    defer(() => server.stop());
    const first = await connectClient(defer, path);
    await until(() => server.connections === 1, "the first client");
    h.socket(1).pause();
    const written = fill(first.socket, new Uint8Array(PENDING_BYTES));
    // One slice a turn; what it sent outlasts the turns in which the others connect.
    h.hooks.onData = () => {
      busy(HANDING_MS);
    };
    const others = [];
    for (let k = 2; k <= 4; k++) {
      const client = await connectClient(defer, path);
      expect(client.socket.write(new Uint8Array(k))).toBe(k);
      others.push(client);
    }
    await until(() => h.data(4) === 4, "the last one's bytes", 10_000);
    const order = reports.filter((r) => r.message === "client waiting" || r.message === "client connected").map((r) => `${r.message} ${r.fields!.client}`);
    expect(order).toEqual(["client connected 1", "client waiting 2", "client waiting 3", "client waiting 4", "client connected 2", "client connected 3", "client connected 4"]);
    expect([h.data(1), h.data(2), h.data(3), h.late(2), h.late(3)]).toEqual([written, 2, 3, 0, 0]);
    expect(server.client).toBe(h.socket(4));
    expect([...h.closed.entries()]).toEqual([[1, "replaced by a new client"], [2, "replaced by a new client"], [3, "replaced by a new client"]]);
  });

  test("one that floods on while the new client waits (Bun reading it between turns, the owner slow): at most PENDING_BYTES more are its data, then the new client is served and the rest is late", async () => {
    const h = hookedHandler();
    const { path, server } = await startUnixServer(h.handler);
    // The owner's work for a slice takes half of HANDING_MS: slower than the client writes.
    h.hooks.onData = () => {
      busy(HANDING_MS / 2);
    };
    const block = new Uint8Array(1 << 20);
    const writeOn = (socket: Socket<undefined>) => {
      for (let n = 1; n > 0; ) n = socket.write(block);
    };
    const flooder = await Bun.connect({ unix: path, socket: { drain: writeOn, data: () => {} } });
    defer(() => flooder.terminate());
    writeOn(flooder);
    await until(() => h.data(1) > 0, "the first client's bytes");
    let handedBefore = -1;
    h.hooks.onData = (_s, k) => {
      if (k === 1 && handedBefore === -1) handedBefore = h.data(1);
      busy(HANDING_MS / 2);
    };
    // Before: what Bun read of it between turns was handed as its data uncounted, a rest left every turn, and
    // the new client was never served while it flooded.
    await connectClient(defer, path);
    await until(() => h.closed.get(1) === "replaced by a new client", "the first client replaced", 15_000);
    expect(h.data(1) - handedBefore).toBeLessThanOrEqual(PENDING_BYTES + (1 << 20));
    const atReplacement = h.data(1);
    await until(() => h.late(1) > 0, "what it sent next, late");
    expect(h.data(1)).toBe(atReplacement);
  });
});

describe("UnixServer: a client that resets with the rest of its read not handed yet", () => {
  test("a hold begun while the rest is handed at its close: all of it is handed all the same, then its close", async () => {
    const hold = Promise.withResolvers<void>();
    defer(() => hold.resolve());
    // The owner's sink fills at the second slice (a pipe's reader behind).
    let slices = 0;
    const f = await floodedServer((server) => {
      if (++slices === 2) server.hold(hold.promise);
    });
    expect(f.sent.length).toBeGreaterThan(2 * SLICE_BYTES);
    // A byte the client leaves unread, and its close, which that byte makes a reset (ECONNRESET), told while the read is sliced.
    f.server.client!.write(new Uint8Array(1));
    f.client.socket.terminate();
    await until(() => f.events.some((e) => e.startsWith("close")), "its close");
    // Before: the slices after the one that began the hold were never handed (nor counted), though the client was gone.
    expect(sameBytes(concatBytes(f.chunks), f.sent)).toBe(true);
    expect(f.events.at(-1)).toStartWith("close error: ECONNRESET");
  });

});
