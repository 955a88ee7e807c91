/**
 * ReconnectingConnection against real sockets: it says when it waits for a
 * server (and reminds), and sessions that end early make the next connection
 * wait longer each time, until a healthy session resets it.
 */
import { describe, expect, test } from "bun:test";
import { HEALTHY_SESSION_MS } from "../../src/transport/backoff.ts";
import { ReconnectingConnection } from "../../src/transport/reconnecting-connection.ts";
import type { Report } from "../../src/transport/report.ts";
import { useCleanup } from "../support/cleanup.ts";
import { fakeServer } from "../support/peer.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

interface Logged {
  message: string;
  fields: Record<string, unknown>;
}

function connection(path: string, remindEveryMs?: number) {
  const logs: Logged[] = [];
  const report: Report = (_level, message, fields = {}) => logs.push({ message, fields });
  const rc = new ReconnectingConnection({
    path,
    report,
    remindEveryMs,
    data() {},
    drain() {},
    onOpen() {},
    onClose() {},
  });
  defer(() => rc.stop());
  return { rc, logs };
}

describe("ReconnectingConnection", () => {
  test("without a server it says at once that it waits and for which socket, then reminds every interval", async () => {
    const { path } = socketDir(defer, "rc-");
    const sock = path("absent.sock");
    const { rc, logs } = connection(sock, 100);
    const begun = performance.now();
    const running = rc.run();
    await rc.firstAttempt;
    expect(logs[0]).toMatchObject({ message: "waiting for the server", fields: { socket: sock, error: "ENOENT" } });
    const reminders = () => logs.filter((l) => l.message === "still waiting for the server");
    await until(() => reminders().length >= 3, "three reminders");
    rc.stop();
    await running;
    // A reminder is due 100 ms after the last on the client's clock, read as an attempt fails; its report
    // can reach the test later than that read (a stalled machine), so two reports may come closer than
    // 100 ms. What they show whatever the stalls: no more reminders than whole intervals since the start.
    const spanMs = performance.now() - begun;
    expect(reminders().length).toBeLessThanOrEqual(Math.floor(spanMs / 100));
    for (const l of reminders()) expect(l.fields.socket).toBe(sock);
    expect(logs.filter((l) => l.message === "waiting for the server").length).toBe(1);
  });

  test("each session that ends at once doubles the wait before the next; a healthy one resets it", async () => {
    const { path } = socketDir(defer, "rc-");
    const sock = path("s.sock");
    const { rc, logs } = connection(sock);
    // Connections 0-3 and 5 are closed at once; connection 4 is kept HEALTHY_SESSION_MS from when the client
    // counted it open (a healthy session), not from its accept: a turn of the loop between the two shortened it.
    const server = fakeServer(sock, (socket, n) => {
      if (n === 4) void until(() => rc.connects === 5, "the fifth connection open").then(() => setTimeout(() => socket.end(), HEALTHY_SESSION_MS));
      else socket.end();
    });
    defer(() => server.stop());
    const running = rc.run();
    await until(() => server.connections.length >= 7, "seven connections");
    rc.stop();
    await running;
    const waits = logs.filter((l) => l.message === "disconnected").slice(0, 6).map((l) => l.fields.reconnect_in_ms as number | undefined);
    const within = (wait: number | undefined, full: number) => wait !== undefined && wait >= full / 2 && wait <= full;
    expect(waits.map((w, k) => (k === 4 ? w === undefined : within(w, [50, 100, 200, 400, 0, 50][k]!)))).toEqual([true, true, true, true, true, true]);
  });
});
