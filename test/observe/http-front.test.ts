/**
 * The TCP front of the HTTP servers, in this process: a Unix server behind
 * it that sends without end, and a client that stops reading, or reads
 * slowly; a client that sends without end to a server side that reads slowly.
 */
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { loadUnsentBytesFrom } from "../../src/io/unsent-bytes.ts";
import { HttpConnectionBound, HttpFront, MAX_HTTP_CONNECTIONS, STALL_MS, type StallTimes } from "../../src/observe/http-front.ts";
import { setSendBuffer } from "../../src/transport/socket-options.ts";
import { useCleanup } from "../support/cleanup.ts";
import { pacedServer, pacedTcpReader } from "../support/paced-reader.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

const PIECE_64K = new Uint8Array(64 * 1024);

/**
 * Stall times shorter than the process's (STALL_MS, a look every 3 s), for the
 * tests of what counts as moving: still far longer than the kernel takes to
 * call a socket writable that a reader at these paces has freed.
 */
const SHORT: StallTimes = { stallMs: 4000, checkMs: 500 };
const STALL = SHORT.stallMs;

/** A front at a loopback port with short stall times, carrying each client to what `backendFor` names. */
function shortFront(backendFor: (client: Socket<unknown>) => string, times = SHORT): HttpFront {
  const front = HttpFront.listen("127.0.0.1", 0, backendFor, new HttpConnectionBound(MAX_HTTP_CONNECTIONS, times));
  defer(() => front.stop(0));
  return front;
}

/** Writes 64 KiB pieces to `socket` until it takes no more: from open and from each drain, a peer that sends without end. */
function sendWithoutEnd(socket: Socket<undefined>): void {
  while (socket.write(PIECE_64K) === PIECE_64K.length);
}

/** A Unix server at `path` that sends each client 64 KiB pieces as fast as it takes them; counts its clients gone. */
function endlessServer(path: string): { gone: () => number } {
  let gone = 0;
  const listener = Bun.listen({ unix: path, socket: { open: sendWithoutEnd, drain: sendWithoutEnd, data() {}, close: () => void gone++ } });
  defer(() => listener.stop(true));
  return { gone: () => gone };
}

describe("a client that stops reading what its server sends", () => {
  test(`having read some, then nothing: cut within STALL_MS (${STALL_MS} ms) and some, its server side with it`, async () => {
    const backend = socketDir(defer, "hf-").path("b.sock");
    const server = endlessServer(backend);
    const front = HttpFront.listen("127.0.0.1", 0, () => backend);
    defer(() => front.stop(0));
    let got = 0;
    let closed = false;
    const client = await Bun.connect({
      hostname: "127.0.0.1",
      port: front.port,
      socket: { data: (_s, chunk) => void (got += chunk.length), close: () => void (closed = true), error() {} },
    });
    defer(() => client.terminate());
    // It reads for a while (more than the kernel's buffers hold, so the front holds what waits), then stops.
    await until(() => got > 16 * 1024 * 1024, "the client reading", 30_000);
    client.pause();
    await until(() => closed, "the client cut", STALL_MS + 20_000, 100);
    await until(() => server.gone() === 1, "its server side closed", 10_000);
  }, STALL_MS + 60_000);

  test("reading a byte at a tenth of the stall time, too little for its kernel to open the TCP window again: it takes nothing the front can see, and is cut within the stall time and some", async () => {
    const backend = socketDir(defer, "hf-").path("b.sock");
    const server = endlessServer(backend);
    const front = shortFront(() => backend);
    const every = STALL / 10;
    const reader = pacedTcpReader(defer, front.port, 8 * 1024, 1, every);
    await until(() => server.gone() === 1, "the client cut", STALL + 20_000, 100);
    // It read all along: one byte at each of its reads until the cut.
    expect(reader.bytes().length).toBeGreaterThanOrEqual(Math.floor(STALL / every) - 1);
  }, STALL + 60_000);
});

describe("a client that reads slowly through a small receive buffer", () => {
  // 8 KiB a second through an 8 KiB receive buffer: the front's send buffer, grown large, empties so slowly that the kernel may not call it writable again for longer than the stall time.
  const PIECE = 8 * 1024;
  const EVERY_MS = 1000;
  /** More than it can read in the stall time and four seconds more at that pace. */
  const PAST_STALL = PIECE * (STALL / EVERY_MS + 4);

  test(`reading all along: carried past the stall time (${STALL} ms); once it stops, cut within it and some, its server side with it`, async () => {
    const backend = socketDir(defer, "hf-").path("b.sock");
    const server = endlessServer(backend);
    const front = shortFront(() => backend);
    const reader = pacedTcpReader(defer, front.port, PIECE, PIECE, EVERY_MS);
    await until(() => reader.bytes().length >= PAST_STALL || server.gone() > 0, "the client reading", STALL * 3, 100);
    expect({ read: reader.bytes().length >= PAST_STALL, serverSidesGone: server.gone() }).toEqual({ read: true, serverSidesGone: 0 });
    reader.pause();
    await until(() => server.gone() === 1, "the client cut once it stopped reading", STALL + 20_000, 100);
  }, STALL * 3 + STALL + 60_000);

  test("where the kernel does not say what its peer has not taken: carried past the stall time while each drain takes part of what waits; cut once it stops", async () => {
    // No libc to ask: what the front writes at each drain is all that tells that the client reads.
    expect(loadUnsentBytesFrom(["/nonexistent/libc.so"])).toBe(false);
    defer(() => loadUnsentBytesFrom());
    const backend = socketDir(defer, "hf-").path("b.sock");
    const server = endlessServer(backend);
    // The front's send buffer kept small: each drain takes a few KiB, less than the piece that waits.
    const front = shortFront((client) => (setSendBuffer(client.fd, PIECE), backend));
    const reader = pacedTcpReader(defer, front.port, PIECE, PIECE, EVERY_MS);
    await until(() => reader.bytes().length >= PAST_STALL || server.gone() > 0, "the client reading", STALL * 3, 100);
    expect({ read: reader.bytes().length >= PAST_STALL, serverSidesGone: server.gone() }).toEqual({ read: true, serverSidesGone: 0 });
    reader.pause();
    await until(() => server.gone() === 1, "the client cut once it stopped reading", STALL + 20_000, 100);
  }, STALL * 3 + STALL + 60_000);
});

describe("a server side that reads slowly what its client sends", () => {
  const times: StallTimes = { stallMs: 8000, checkMs: 500 };
  test(`reading 16 KiB a second: carried past the stall time while it reads; once it stops, cut within it and some, its client with it`, async () => {
    // A Unix socket is called writable again only once three quarters of its send buffer (200 KiB or
    // so) have been read: at 16 KiB a second, later than this stall time. What it has read shows
    // once a whole message the front wrote (up to 64 KiB) has been read: sooner than this stall time.
    const PIECE = 4 * 1024;
    const EVERY_MS = 250;
    const PAST_STALL = PIECE * ((times.stallMs + 4000) / EVERY_MS);
    const backend = socketDir(defer, "hf-").path("b.sock");
    const server = pacedServer(defer, backend, PIECE, EVERY_MS);
    const front = shortFront(() => backend, times);
    let cut = false;
    const client = await Bun.connect({
      hostname: "127.0.0.1",
      port: front.port,
      socket: { open: sendWithoutEnd, drain: sendWithoutEnd, data() {}, close: () => void (cut = true), error() {} },
    });
    defer(() => client.terminate());
    const reader = await server.accepted();
    await until(() => reader.bytes().length >= PAST_STALL || cut, "the server side reading", times.stallMs * 3, 100);
    expect({ read: reader.bytes().length >= PAST_STALL, cut }).toEqual({ read: true, cut: false });
    reader.pause();
    await until(() => cut, "the client cut once its server side stopped reading", times.stallMs + 20_000, 100);
  }, times.stallMs * 4 + 60_000);
});
