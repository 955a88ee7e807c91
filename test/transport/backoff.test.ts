/**
 * The connect backoff (the Go original's schedule) and connectWithBackoff:
 * retries while the server is absent, gives up with ConnectTimeoutError,
 * stops on abort, fails at once on errors retrying cannot fix.
 */
import { describe, expect, test } from "bun:test";
import { mkdirSync, symlinkSync } from "node:fs";
import { backoffDelayMs, sessionBackoffMs } from "../../src/transport/backoff.ts";
import { silent, type Report } from "../../src/transport/report.ts";
import { SOCK_DGRAM } from "../../src/io/libc.ts";
import { connectWithBackoff, ConnectTimeoutError, type ConnectionHandler } from "../../src/transport/unix-client.ts";
import { within } from "../../src/io/within.ts";
import { bindSocket, SOCK_SEQPACKET } from "../support/bound-socket.ts";
import { useCleanup } from "../support/cleanup.ts";
import { makeStaleSocket } from "../support/processes.ts";
import { recordingReport } from "../support/reports.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

const SCHEDULE = [50, 50, 50, 100, 100, 100, 200, 200, 200, 400, 400, 400, 400, 400, 400];

const ignore: ConnectionHandler = { data() {}, drain() {}, close() {} };

/**
 * Runs `work` on a fake clock: performance.now() reads it, and each wait the
 * client asks for (setTimeout) advances it and passes at once; `onWait` sees
 * the clock after each. More than 100 waits fail the work (a wait that never ends).
 */
async function onFakeClock(work: () => Promise<unknown>, onWait: (now: number) => void = () => {}) {
  let clock = 0;
  const waits: number[] = [];
  const realNow = performance.now;
  const realSetTimeout = globalThis.setTimeout;
  performance.now = () => clock;
  globalThis.setTimeout = ((fn: () => void, ms?: number) => {
    waits.push(ms ?? 0);
    clock += ms ?? 0;
    if (waits.length > 100) throw new Error("still waiting after 100 waits");
    onWait(clock);
    return realSetTimeout(fn, 0);
  }) as typeof setTimeout;
  try {
    const outcome = await work().catch((e) => e);
    return { outcome, waits, clock };
  } finally {
    performance.now = realNow;
    globalThis.setTimeout = realSetTimeout;
  }
}

describe("backoffDelayMs", () => {
  test("is 50,50,50,100,100,100,200,200,200 and then 400 for ever", () => {
    expect(SCHEDULE.map((_, attempt) => backoffDelayMs(attempt))).toEqual(SCHEDULE);
    expect(backoffDelayMs(100)).toBe(400);
    expect(backoffDelayMs(1_000_000)).toBe(400);
  });
});

describe("sessionBackoffMs", () => {
  test("nothing after a healthy session; 50 ms doubling per early session, capped at 5 s; a random half to all of it", () => {
    expect(sessionBackoffMs(0)).toBe(0);
    const full = [1, 2, 3, 4, 5, 6, 7, 8, 20].map((n) => sessionBackoffMs(n, () => 1));
    expect(full).toEqual([50, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    const least = [1, 2, 3, 4, 5, 6, 7, 8, 20].map((n) => sessionBackoffMs(n, () => 0));
    expect(least).toEqual([25, 50, 100, 200, 400, 800, 1600, 2500, 2500]);
    for (let i = 0; i < 100; i++) {
      const wait = sessionBackoffMs(3);
      expect(wait).toBeGreaterThanOrEqual(100);
      expect(wait).toBeLessThanOrEqual(200);
    }
  });
});

describe("connectWithBackoff", () => {
  test("waits between attempts exactly on the schedule", async () => {
    const dir = socketDir(defer, "bo-");
    const abort = new AbortController();
    const waits: number[] = [];
    const realSetTimeout = globalThis.setTimeout;
    // Record each wait the client asks for and let it pass at once; abort after 15.
    globalThis.setTimeout = ((fn: () => void, ms?: number) => {
      waits.push(ms ?? 0);
      if (waits.length === SCHEDULE.length) abort.abort();
      return realSetTimeout(fn, 0);
    }) as typeof setTimeout;
    let error: unknown;
    try {
      await connectWithBackoff({ path: dir.path("absent.sock"), handler: ignore, report: silent, signal: abort.signal });
    } catch (e) {
      error = e;
    } finally {
      globalThis.setTimeout = realSetTimeout;
    }
    expect(waits).toEqual(SCHEDULE);
    expect(error).toBeInstanceOf(ConnectTimeoutError);
    expect((error as ConnectTimeoutError).lastError).toBe("aborted");
  });

  test("keeps retrying until the server appears, then connects", async () => {
    const dir = socketDir(defer, "bo-");
    const path = dir.path("late.sock");
    const { reports, report } = recordingReport();
    const connecting = connectWithBackoff({ path, handler: ignore, report, timeoutMs: 20_000 });
    // The server comes up once an attempt has failed, not after a pause a loaded machine may not reach it in.
    await until(() => reports.some((r) => r.message === "waiting for the server"), "the first attempt to fail");
    const listener = Bun.listen({ unix: path, socket: { data() {} } });
    defer(() => listener.stop(true));
    const socket = await connecting;
    defer(() => socket.terminate());
    const retried = reports.find((r) => r.message === "connected after retries");
    expect(retried).toBeDefined();
    expect(retried!.fields!.attempts as number).toBeGreaterThan(1);
  });

  test("a server already listening is connected at the first attempt, with no retry reported", async () => {
    const dir = socketDir(defer, "bo-");
    const path = dir.path("here.sock");
    const listener = Bun.listen({ unix: path, socket: { data() {} } });
    defer(() => listener.stop(true));
    const { reports, report } = recordingReport();
    const socket = await connectWithBackoff({ path, handler: ignore, report, timeoutMs: 20_000 });
    defer(() => socket.terminate());
    expect(reports).toEqual([]);
  });

  test("gives up after timeoutMs with ConnectTimeoutError naming the path and the last error", async () => {
    const dir = socketDir(defer, "bo-");
    const path = dir.path("absent.sock");
    const error = await connectWithBackoff({ path, handler: ignore, report: silent, timeoutMs: 300 }).catch((e) => e);
    expect(error).toBeInstanceOf(ConnectTimeoutError);
    expect(error.path).toBe(path);
    expect(error.lastError).toBe("ENOENT");
    expect(error.waitedMs).toBeGreaterThanOrEqual(300);
    expect(error.message).toMatch(new RegExp(`^could not connect to ${path} within \\d+(\\.\\d+)? s \\(last error: ENOENT\\)$`));
    // The time is said to the ms: a short timeout does not read "within 0.0 s".
    const short = await connectWithBackoff({ path, handler: ignore, report: silent, timeoutMs: 10 }).catch((e) => e);
    expect(Number(/ within (\S+) s /.exec(short.message)![1])).toBe(Math.round(short.waitedMs) / 1000);
    expect(short.waitedMs).toBeGreaterThanOrEqual(10);
  });

  test("the last attempt is made at the deadline, not a backoff step before it", async () => {
    const dir = socketDir(defer, "bo-");
    const path = dir.path("late.sock");
    // The server appears at 280 ms, the deadline is 300 ms.
    let listener: ReturnType<typeof Bun.listen> | undefined;
    defer(() => listener?.stop(true));
    const { outcome, waits, clock } = await onFakeClock(
      () => connectWithBackoff({ path, handler: ignore, report: silent, timeoutMs: 300 }),
      (now) => {
        if (now >= 280 && !listener) listener = Bun.listen({ unix: path, socket: { data() {} } });
      },
    );
    expect(outcome).not.toBeInstanceOf(Error);
    defer(() => (outcome as { terminate(): void }).terminate());
    expect(waits).toEqual([50, 50, 50, 100, 50]);
    expect(clock).toBe(300);
  });

  test("with no server, gives up at the deadline itself: the last wait is cut short, then no more attempts", async () => {
    const dir = socketDir(defer, "bo-");
    const { outcome, waits } = await onFakeClock(() =>
      connectWithBackoff({ path: dir.path("absent.sock"), handler: ignore, report: silent, timeoutMs: 300 }),
    );
    expect(waits).toEqual([50, 50, 50, 100, 50]);
    expect(outcome).toBeInstanceOf(ConnectTimeoutError);
    expect((outcome as ConnectTimeoutError).waitedMs).toBe(300);
  });

  test("each wait between attempts takes back its listener on the abort signal: a client waiting for hours holds none per attempt", async () => {
    const dir = socketDir(defer, "bo-");
    const abort = new AbortController();
    let listening = 0;
    const add = abort.signal.addEventListener.bind(abort.signal);
    const remove = abort.signal.removeEventListener.bind(abort.signal);
    abort.signal.addEventListener = ((...args: Parameters<typeof add>) => (listening++, add(...args))) as typeof add;
    abort.signal.removeEventListener = ((...args: Parameters<typeof remove>) => (listening--, remove(...args))) as typeof remove;
    const { outcome, waits } = await onFakeClock(() =>
      connectWithBackoff({ path: dir.path("absent.sock"), handler: ignore, report: silent, timeoutMs: 5000, signal: abort.signal }),
    );
    expect(outcome).toBeInstanceOf(ConnectTimeoutError);
    expect(waits.length).toBeGreaterThan(10);
    // Every wait has ended by its timer: none may leave its listener behind (the signal lives as long as the run).
    expect(listening).toBe(0);
  });

  test("with no server it says so at the first failed attempt, before any wait, then again once per remindEveryMs (30 s unless given): not at every attempt", async () => {
    const dir = socketDir(defer, "bo-");
    const told: { message: string; waits: number; at: number }[] = [];
    let waits = 0;
    let now = 0;
    const report: Report = (_level, message) => void told.push({ message, waits, at: now });
    const { outcome } = await onFakeClock(
      () => connectWithBackoff({ path: dir.path("absent.sock"), handler: ignore, report, timeoutMs: 5000, remindEveryMs: 2000, onWaiting: () => told.push({ message: "onWaiting", waits, at: now }) }),
      (clock) => {
        waits++;
        now = clock;
      },
    );
    expect(outcome).toBeInstanceOf(ConnectTimeoutError);
    expect(told.slice(0, 2)).toEqual([
      { message: "waiting for the server", waits: 0, at: 0 },
      { message: "onWaiting", waits: 0, at: 0 },
    ]);
    const reminders = told.filter((t) => t.message === "still waiting for the server").map((t) => t.at);
    expect(reminders.length).toBe(2);
    expect(reminders[0]).toBeGreaterThanOrEqual(2000);
    expect(reminders[1]! - reminders[0]!).toBeGreaterThanOrEqual(2000);
  });

  test("a stale socket is retried as ECONNREFUSED", async () => {
    const dir = socketDir(defer, "bo-");
    const path = dir.path("stale.sock");
    await makeStaleSocket(path);
    const error = await connectWithBackoff({ path, handler: ignore, report: silent, timeoutMs: 200 }).catch((e) => e);
    expect(error).toBeInstanceOf(ConnectTimeoutError);
    expect(error.lastError).toBe("ECONNREFUSED");
  });

  test("an error retrying cannot fix fails at once, not as a timeout", async () => {
    // A path longer than sun_path: connect(2) says EINVAL.
    const dir = socketDir(defer, "bo-");
    const path = dir.path("x".repeat(120));
    const error = await connectWithBackoff({ path, handler: ignore, report: silent }).catch((e) => e);
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(ConnectTimeoutError);
    expect(error.message).toBe(`cannot connect to ${path}: EINVAL`);
  });

  test("a path that can never be a socket fails at once, although Bun reports it as ECONNREFUSED", async () => {
    const dir = socketDir(defer, "bo-");
    const file = dir.path("plain");
    await Bun.write(file, "x");
    // No timeout given: without the check these would retry for ever. At once: on the first attempt, with no wait.
    const { reports, report } = recordingReport();
    const regular = await connectWithBackoff({ path: file, handler: ignore, report }).catch((e) => e);
    expect(regular.message).toBe(`cannot connect to ${file}: it is a regular file, not a socket`);
    expect(reports.map((r) => r.message)).toEqual([]);
    const under = `${file}/s.sock`;
    const notDir = await connectWithBackoff({ path: under, handler: ignore, report: silent }).catch((e) => e);
    expect(notDir.message).toBe(`cannot connect to ${under}: a parent in the path is not a directory (ENOTDIR)`);
    const directory = await connectWithBackoff({ path: dir.dir, handler: ignore, report: silent }).catch((e) => e);
    expect(directory.message).toBe(`cannot connect to ${dir.dir}: it is a directory, not a socket`);
    const fifo = dir.path("fifo");
    expect(Bun.spawnSync(["mkfifo", fifo]).exitCode).toBe(0);
    const notSocket = await connectWithBackoff({ path: fifo, handler: ignore, report: silent }).catch((e) => e);
    expect(notSocket.message).toBe(`cannot connect to ${fifo}: it is a FIFO, not a socket`);
  });

  test("a datagram or packet socket at the path fails at once naming its type, where it read as a server not yet up for good", async () => {
    const dir = socketDir(defer, "bo-");
    for (const [type, name] of [[SOCK_DGRAM, "datagram socket (SOCK_DGRAM)"], [SOCK_SEQPACKET, "packet socket (SOCK_SEQPACKET)"]] as const) {
      const path = dir.path(`t${type}.sock`);
      defer(bindSocket(path, type));
      const error = await connectWithBackoff({ path, handler: ignore, report: silent }).catch((e) => e);
      expect(error.message).toBe(`cannot connect to ${path}: it is a ${name}; the protocol needs a stream socket (SOCK_STREAM)`);
    }
  });

  test("a datagram socket bound by another name of the same file (through a symlinked directory, or a link to it) is named too", async () => {
    const dir = socketDir(defer, "bo-");
    mkdirSync(dir.path("run"));
    symlinkSync(dir.path("run"), dir.path("varrun"));
    defer(bindSocket(dir.path("varrun/d.sock"), SOCK_DGRAM));
    symlinkSync(dir.path("run/d.sock"), dir.path("link.sock"));
    for (const path of [dir.path("run/d.sock"), dir.path("link.sock")]) {
      const error = await connectWithBackoff({ path, handler: ignore, report: silent }).catch((e) => e);
      expect(error.message).toBe(`cannot connect to ${path}: it is a datagram socket (SOCK_DGRAM); the protocol needs a stream socket (SOCK_STREAM)`);
    }
  });

  test("a symbolic link to a socket yet to come is waited for, as the socket itself would be", async () => {
    const dir = socketDir(defer, "bo-");
    const target = dir.path("later.sock");
    const link = dir.path("link.sock");
    symlinkSync(target, link);
    const error = await connectWithBackoff({ path: link, handler: ignore, report: silent, timeoutMs: 200 }).catch((e) => e);
    expect(error).toBeInstanceOf(ConnectTimeoutError);
    // And once a server listens there, the link leads to it.
    const server = Bun.listen({ unix: target, socket: { data() {} } });
    defer(() => server.stop(true));
    const socket = await connectWithBackoff({ path: link, handler: ignore, report: silent, timeoutMs: 2000 });
    socket.end();
  });

  test("an abort while waiting ends the wait at once, not when the wait is over", async () => {
    const dir = socketDir(defer, "bo-");
    const abort = new AbortController();
    // The client's first wait between attempts is made an hour long: only the abort can end it.
    const realSetTimeout = globalThis.setTimeout;
    const waits: number[] = [];
    let hour: ReturnType<typeof setTimeout> | undefined;
    globalThis.setTimeout = ((fn: () => void, ms?: number) => {
      globalThis.setTimeout = realSetTimeout;
      waits.push(ms ?? 0);
      hour = realSetTimeout(fn, 3_600_000);
      return hour;
    }) as typeof setTimeout;
    // Which timers get cleared: the ended wait's must be, or it would keep the process alive for the hour.
    const realClearTimeout = globalThis.clearTimeout;
    const cleared: unknown[] = [];
    globalThis.clearTimeout = ((timer?: ReturnType<typeof setTimeout>) => {
      cleared.push(timer);
      realClearTimeout(timer);
    }) as typeof clearTimeout;
    defer(() => (globalThis.clearTimeout = realClearTimeout));
    let connecting: Promise<unknown>;
    try {
      connecting = connectWithBackoff({ path: dir.path("absent.sock"), handler: ignore, report: silent, signal: abort.signal }).catch((e) => e);
      await until(() => waits.length === 1, "the first wait");
    } finally {
      globalThis.setTimeout = realSetTimeout;
    }
    expect(waits).toEqual([50]);
    abort.abort();
    // Generous: an ended wait settles within microseconds; one that is not ended takes the hour.
    const error = await within(connecting, 10_000, "still waiting");
    globalThis.clearTimeout = realClearTimeout;
    expect(error).toBeInstanceOf(ConnectTimeoutError);
    expect((error as ConnectTimeoutError).lastError).toBe("aborted");
    expect(cleared).toContain(hour);
  });

  test("an abort while it sleeps between attempts ends the sleep at once, before any timer fires", async () => {
    const dir = socketDir(defer, "bo-");
    const abort = new AbortController();
    let outcome: Promise<unknown> | undefined;
    const connecting: Promise<unknown> = connectWithBackoff({
      path: dir.path("absent.sock"),
      handler: ignore,
      signal: abort.signal,
      report: (_level, message) => {
        if (message !== "waiting for the server") return;
        // The first attempt failed; the 50 ms sleep after it starts as this returns.
        setTimeout(() => {
          abort.abort();
          // Ended by the abort itself: settled before even a 0 ms timer (the sleep's own timer would come later).
          outcome = Promise.race([connecting.catch((e) => e), new Promise((resolve) => setTimeout(() => resolve("a timer fired first"), 0))]);
        }, 0);
      },
    });
    while (outcome === undefined) await Bun.sleep(5);
    const error = await outcome;
    expect(error).toBeInstanceOf(ConnectTimeoutError);
    expect((error as ConnectTimeoutError).lastError).toBe("aborted");
  });
});

