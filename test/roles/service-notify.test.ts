/**
 * The service manager's notifications (systemd's NOTIFY_SOCKET, Type=notify):
 * the agent as a real process tells a datagram socket the test holds that it
 * is ready once its sockets listen, that it is stopping at SIGTERM, and, when
 * asked for a watchdog, that its event loop turns.
 */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { useCleanup } from "../support/cleanup.ts";
import { notifyReceiver, type NotifyReceiver } from "../support/notify-receiver.ts";
import { agentEnv, runAgent, spawnAgent, stopAgents, type Spawned } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { wholeWireFrames, writeWireFile } from "../support/wire.ts";
import { within } from "../../src/io/within.ts";
import { Shutdown, watchdogInterval } from "../../src/roles/shutdown.ts";

const defer = useCleanup();

async function setup() {
  const t = socketDir(defer, "aasn-");
  defer(() => stopAgents());
  const notify = notifyReceiver(t.path("notify"));
  defer(() => notify.close());
  await writeWireFile(t.path("in.wire"), 50);
  return { ...t, notify, out: t.path("o.sock"), in: t.path("i.sock") };
}

function agentTold(notify: NotifyReceiver, args: string[], extra: Record<string, string> = {}): Spawned {
  return spawnAgent(args, { env: agentEnv({ NOTIFY_SOCKET: notify.name, ...extra }) });
}

/** Waits for `message` among what the agent told, and returns what the check said at the moment it was first seen. */
async function whenTold<T>(notify: NotifyReceiver, message: string, check: () => T): Promise<T> {
  let seen: T | undefined;
  await until(() => {
    if (!notify.messages().includes(message)) return false;
    seen = check();
    return true;
  }, `${message} on the notify socket`, 20_000, 1);
  return seen!;
}

/** SIGTERM stops `agent` (exit 0), which told `notify` only that it was ready and is stopping. */
async function stopsTelling(agent: Spawned, notify: NotifyReceiver): Promise<void> {
  agent.kill("SIGTERM");
  expect(await agent.exited, agent.stderr).toBe(0);
  expect(notify.messages()).toEqual(["READY=1", "STOPPING=1"]);
}

describe("NOTIFY_SOCKET (systemd Type=notify)", () => {
  test("output serve: READY=1 once its socket listens, STOPPING=1 at SIGTERM, then exit 0; no watchdog unasked", async () => {
    const t = await setup();
    const agent = agentTold(t.notify, ["output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.out]);
    expect(await whenTold(t.notify, "READY=1", () => existsSync(t.out))).toBe(true);
    await stopsTelling(agent, t.notify);
  }, 30_000);

  test("input serve: READY=1 once its socket listens, STOPPING=1 at SIGTERM, then exit 0", async () => {
    const t = await setup();
    const agent = agentTold(t.notify, ["input", "serve", "--socket", t.in, "--sink", "/dev/null"]);
    expect(await whenTold(t.notify, "READY=1", () => existsSync(t.in))).toBe(true);
    await stopsTelling(agent, t.notify);
  }, 30_000);

  test("serve: READY=1 once, when both channels' sockets listen", async () => {
    const t = await setup();
    const agent = agentTold(t.notify, ["serve", "--output-socket", t.out, "--output-source", t.path("in.wire"), "--output-realtime", "--output-loop", "--input-socket", t.in, "--input-sink", "/dev/null"]);
    expect(await whenTold(t.notify, "READY=1", () => [existsSync(t.out), existsSync(t.in)])).toEqual([true, true]);
    await stopsTelling(agent, t.notify);
  }, 30_000);

  test("a role that fails before it listens never says READY=1: its manager sees a failed start", async () => {
    const t = await setup();
    const agent = agentTold(t.notify, ["output", "serve", "--source", t.path("in.wire"), "--socket", t.path("no-such-dir/o.sock")]);
    expect(await agent.exited).toBe(2);
    expect(t.notify.messages()).not.toContain("READY=1");
  }, 30_000);

  test("the clients (output recv, input send) say READY=1 as they begin to connect; an abstract socket name (@...) is reached too", async () => {
    const t = await setup();
    const abstract = notifyReceiver(`@aa-notify-${process.pid}-${Date.now()}`);
    defer(() => abstract.close());
    const recv = agentTold(abstract, ["output", "recv", "--socket", t.out, "--sink", "/dev/null"]);
    await whenTold(abstract, "READY=1", () => true);
    await stopsTelling(recv, abstract);

    const send = agentTold(t.notify, ["input", "send", "--socket", t.in, "--source", t.path("in.wire")]);
    await whenTold(t.notify, "READY=1", () => true);
    send.kill("SIGTERM");
    await send.exited;
    expect(t.notify.messages()).toEqual(["READY=1", "STOPPING=1"]);
  }, 30_000);

  test("WATCHDOG_USEC: WATCHDOG=1 keeps coming while the agent runs; not when WATCHDOG_PID names another process", async () => {
    const t = await setup();
    const agent = agentTold(t.notify, ["output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.out], { WATCHDOG_USEC: "200000" });
    await until(() => t.notify.messages().filter((m) => m === "WATCHDOG=1").length >= 5, "five watchdog pings", 20_000);
    expect(t.notify.messages()).toContain("READY=1");
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);

    const other = notifyReceiver(t.path("notify-2"));
    defer(() => other.close());
    const elsewhere = agentTold(other, ["output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.path("o2.sock")], { WATCHDOG_USEC: "200000", WATCHDOG_PID: "1" });
    await whenTold(other, "READY=1", () => true);
    await Bun.sleep(500);
    await stopsTelling(elsewhere, other);
  }, 30_000);

  test("a watchdog interval longer than a timer holds (WatchdogSec=60d): pinged at the longest a timer waits, not every millisecond; no runtime warning in the log", async () => {
    const t = await setup();
    const agent = agentTold(t.notify, ["output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.out], { WATCHDOG_USEC: String(60 * 86_400 * 1_000_000) });
    await whenTold(t.notify, "READY=1", () => true);
    await Bun.sleep(500);
    agent.kill("SIGTERM");
    expect(await agent.exited, agent.stderr).toBe(0);
    // The one ping as the agent starts.
    expect(t.notify.messages()).toEqual(["WATCHDOG=1", "READY=1", "STOPPING=1"]);
    expect(agent.stderr).not.toContain("TimeoutOverflowWarning");
  }, 30_000);

  test("a NOTIFY_SOCKET path of 107 bytes, the longest sun_path holds with its NUL, is reached: READY=1, STOPPING=1", async () => {
    const t = await setup();
    const name = t.path("n".repeat(107 - t.dir.length - 1));
    expect(Buffer.byteLength(name)).toBe(107);
    const notify = notifyReceiver(name);
    defer(() => notify.close());
    const agent = agentTold(notify, ["output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.out]);
    await whenTold(notify, "READY=1", () => true);
    await stopsTelling(agent, notify);
    expect(agent.stderr).not.toContain("NOTIFY_SOCKET");
  }, 30_000);

  test("a service manager that stops reading its notify socket never holds up the agent: with its queue full of WATCHDOG=1, frames still flow and SIGTERM exits 0", async () => {
    const t = await setup();
    // A watchdog ping every millisecond into a socket no one reads (t.notify is never read here): its queue is full at once.
    const agent = agentTold(t.notify, ["output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.out], { WATCHDOG_USEC: "2000" });
    await agent.waitForStderr("listening");
    const recv = await runAgent(["output", "recv", "--socket", t.out, "--sink", t.path("out.wire"), "--count", "100", "--connect-timeout", "5"], { timeoutMs: 20_000 });
    expect(recv.code, recv.stderr).toBe(0);
    expect(wholeWireFrames(t.path("out.wire")).length).toBe(100);
    agent.kill("SIGTERM");
    // -1: still running (held in a send to the full socket).
    expect(await within(agent.exited, 10_000, -1), agent.stderr).toBe(0);
  }, 40_000);

  test("a NOTIFY_SOCKET that cannot be used: a relative name is warned of in one line naming it, one with no listener is not; the agent serves and stops as without", async () => {
    const t = await setup();
    const relative = spawnAgent(["output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.out], { env: agentEnv({ NOTIFY_SOCKET: "run/notify" }) });
    await relative.waitForStderr("listening");
    expect(relative.stderr).toContain("WARN  agent: NOTIFY_SOCKET=run/notify is neither a path nor an abstract name (@...); the service manager is not told when the agent is ready\n");
    relative.kill("SIGTERM");
    expect(await relative.exited, relative.stderr).toBe(0);

    const nobody = spawnAgent(["output", "serve", "--source", t.path("in.wire"), "--realtime", "--loop", "--socket", t.out], { env: agentEnv({ NOTIFY_SOCKET: t.path("nothing-here") }) });
    await nobody.waitForStderr("listening");
    nobody.kill("SIGTERM");
    expect(await nobody.exited, nobody.stderr).toBe(0);
    expect(nobody.stderr).not.toContain("WARN");
  }, 30_000);
});

describe("the watchdog's interval", () => {
  test("WATCHDOG_USEC is microseconds: the interval in ms (pinged twice in it); none when unset, not a positive integer, or WATCHDOG_PID names another process", () => {
    expect(watchdogInterval({ WATCHDOG_USEC: "200000" })).toBe(200);
    expect(watchdogInterval({ WATCHDOG_USEC: "30000000", WATCHDOG_PID: String(process.pid) })).toBe(30_000);
    for (const usec of [undefined, "", "0", "-5", "1.5", "x"]) expect(watchdogInterval({ WATCHDOG_USEC: usec })).toBeUndefined();
    expect(watchdogInterval({ WATCHDOG_USEC: "200000", WATCHDOG_PID: "1" })).toBeUndefined();
  });
});

describe("what a role tells its service manager, whatever order its start and a stop come in", () => {
  test("READY=1 once however often the role says it is up; a stop asked for before it is up (a signal during its start) is told STOPPING=1, and READY=1 never after it", () => {
    const t = socketDir(defer, "aasn-");
    const notify = notifyReceiver(t.path("notify"));
    defer(() => notify.close());
    const up = new Shutdown(undefined, { NOTIFY_SOCKET: notify.name });
    up.ready();
    up.ready();
    up.dispose();
    expect(notify.messages()).toEqual(["READY=1"]);

    const early = notifyReceiver(t.path("notify-early"));
    defer(() => early.close());
    const stopping = new Shutdown(undefined, { NOTIFY_SOCKET: early.name });
    stopping.request("SIGTERM");
    stopping.ready();
    stopping.dispose();
    expect(early.messages()).toEqual(["STOPPING=1"]);
  });
});
