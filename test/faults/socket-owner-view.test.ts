/**
 * Which /proc/net/unix listing is the socket file at --socket: the listing's name, asked of the
 * process that bound it (its root or working directory), must lead to the file. These are the
 * cases where that process's view no longer tells, or tells of a process that is not the binder.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { failureLine } from "../support/agent-log.ts";
import { useCleanup } from "../support/cleanup.ts";
import { connectClient } from "../support/peer.ts";
import { agentEnv, BUN, runAgent, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";
import { indexedWire } from "../support/wire.ts";

const defer = useCleanup();

function setup() {
  const dir = socketDir(defer, "own-");
  defer(stopAgents);
  return dir;
}

function writeSource(dir: string): string {
  const source = join(dir, "src.wire");
  if (!existsSync(source)) writeFileSync(source, indexedWire(0, 10));
  return source;
}

/**
 * A Go-style server (each new connection becomes its client; the one before is closed), bound
 * by the relative name `name` from `cwd`, which then changes its working directory to `later`.
 * Prints each event ("open N", "data N") on its stdout, which `events` collects.
 */
async function goStyleServerThatMoves(name: string, cwd: string, later: string) {
  const script = `
    let current, opened = 0;
    Bun.listen({ unix: ${JSON.stringify(name)}, socket: {
      open(s) { console.log("open " + ++opened); current?.end(); current = s; },
      data(_s, chunk) { console.log("data " + chunk.length); },
    } });
    process.chdir(${JSON.stringify(later)});
    console.log("listening");`;
  const child = Bun.spawn([BUN, "-e", script], { cwd, stdout: "pipe", stderr: "pipe", env: agentEnv() });
  defer(async () => {
    child.kill("SIGKILL");
    await child.exited;
  });
  const events: string[] = [];
  let text = "";
  void (async () => {
    for await (const chunk of child.stdout) {
      text += new TextDecoder().decode(chunk);
      const lines = text.split("\n");
      text = lines.pop()!;
      events.push(...lines);
    }
  })();
  await until(() => events.includes("listening"), "the server listening");
  return events;
}

describe("a live server whose process no longer sees its socket by the name it bound", () => {
  test("a Go-style server bound by relative name in the socket's directory, that then changed directory: the agent given that same relative --socket refuses it (exit 2) without a probe connection", async () => {
    // Before b1b81cb a listing "s.sock" equal to the agent's own --socket "s.sock" counted (the
    // connect probe was never needed). Now the listing is asked of its process's current
    // directory, where "s.sock" is nothing: the listing is dropped, the agent probes, and the
    // Go-style server takes the probe for its new client (its real client is cut off).
    const dir = setup();
    mkdirSync(dir.path("here"));
    mkdirSync(dir.path("later"));
    const events = await goStyleServerThatMoves("s.sock", dir.path("here"), dir.path("later"));

    const intruder = await runAgent(["output", "serve", "--socket", "s.sock", "--source", writeSource(dir.dir)], { cwd: dir.path("here") });
    expect(intruder.code).toBe(2);
    expect(failureLine(intruder.stderr)).toContain("in use by a live server");

    // A marker connection: had the agent probed, the server would have seen that connection first.
    const marker = await connectClient(defer, dir.path("here/s.sock"));
    marker.socket.write(new Uint8Array(3));
    await until(() => events.includes("data 3"), "the marker's bytes");
    expect(events).toEqual(["listening", "open 1", "data 3"]);
  });
});

describe("a live server bound by a relative name", () => {
  test("a Go-style server bound by relative name in the socket's directory, still there: the agent given the absolute --socket from elsewhere refuses it (exit 2) without a probe connection", async () => {
    const dir = setup();
    mkdirSync(dir.path("here"));
    mkdirSync(dir.path("elsewhere"));
    const events = await goStyleServerThatMoves("s.sock", dir.path("here"), dir.path("here"));

    const intruder = await runAgent(["output", "serve", "--socket", dir.path("here/s.sock"), "--source", writeSource(dir.dir)], { cwd: dir.path("elsewhere") });
    expect(intruder.code).toBe(2);
    expect(failureLine(intruder.stderr)).toContain("in use by a live server");

    const marker = await connectClient(defer, dir.path("here/s.sock"));
    marker.socket.write(new Uint8Array(3));
    await until(() => events.includes("data 3"), "the marker's bytes");
    expect(events).toEqual(["listening", "open 1", "data 3"]);
  });
});
