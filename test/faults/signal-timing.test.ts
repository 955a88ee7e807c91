/**
 * Signals that land at an awkward moment of a spawned agent's run: while a
 * connect of a client is under way (a process held with SIGSTOP has its
 * timers come due and its signal wait together, so that one turn of its
 * event loop begins the connect and the next one has the signal beside the
 * connection being made), and while a live source floods in faster than it
 * can be sent.
 */
import { describe, expect, test } from "bun:test";
import { closeSync, openSync } from "node:fs";
import { allLogFields, logFields } from "../support/agent-log.ts";
import { useCleanup } from "../support/cleanup.ts";
import { TONE } from "../support/opus-fixtures.ts";
import { spawnAgent, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { writeWireFile } from "../support/wire.ts";

const defer = useCleanup();

describe("`input send` signalled while its connect to a server that has just come up is being made", () => {
  // Rounds until one has the connect made: in a round whose signal is taken before the due connect, none is made.
  const ROUNDS = 6;
  test("a connection the server accepted gets its Config and the Stop: the server's session ends by Stop, not as a dropped connection", async () => {
    defer(stopAgents);
    let made = 0;
    for (let round = 0; round < ROUNDS && made < 2; round++) {
      const dir = socketDir(defer, "st-");
      const socket = dir.path("in.sock");
      const sender = spawnAgent(["input", "send", "--socket", socket, "--source", TONE, "--format", "ogg", "--realtime", "--loop"]);
      await sender.waitForStderr("waiting for the server");
      sender.kill("SIGSTOP");
      const server = spawnAgent(["input", "serve", "--socket", socket, "--sink", dir.path("got.wire")]);
      await server.waitForStderr("listening socket=");
      // Past the longest retry wait (400 ms): the next attempt is due as the sender goes on.
      await Bun.sleep(600);
      sender.kill("SIGTERM");
      sender.kill("SIGCONT");
      expect(await sender.exited).toBe(0);
      const sent = logFields(sender.stderr, "input-client", "stopped");
      server.kill("SIGTERM");
      expect(await server.exited).toBe(0);
      const served = logFields(server.stderr, "input-server", "stopped");
      if (served.connects === "0") continue;
      made++;
      // The sender knows the connection it made, and ended it as a session ends.
      expect(sent.connects).toBe("1");
      expect(allLogFields(server.stderr, "input-server", "session ended by Stop")).toHaveLength(1);
      expect(served).toMatchObject({ sessions: "1", clean_sessions: "1" });
      expect(Number(sent.submitted)).toBe(Number(sent.delivered) + Number(sent.dropped));
    }
    expect(made).toBeGreaterThan(0);
  }, 60_000);
});

describe("a live source that floods in (stdin a regular file: every read has data at once)", () => {
  // 400,000 frames (47 MB): read to its end, with no client to take them, in the better part of a second.
  const FRAMES = 400_000;
  for (const role of ["output serve", "input send"] as const) {
    test(`\`${role} --source -\`: SIGTERM is acted on while the source is still being read, not once it has run dry`, async () => {
      defer(stopAgents);
      const dir = socketDir(defer, "st-");
      const source = dir.path("flood.wire");
      const payload = new Uint8Array(100);
      await writeWireFile(source, FRAMES, () => payload);
      const stdin = openSync(source, "r");
      defer(() => closeSync(stdin));
      const agent = spawnAgent([...role.split(" "), "--socket", dir.path("s.sock"), "--source", "-"], { stdin });
      // Up and reading: the server listens before it reads its source, the client reads once its first connect failed.
      await agent.waitForStderr(role === "output serve" ? "listening socket=" : "waiting for the server");
      agent.kill("SIGTERM");
      expect(await agent.exited).toBe(0);
      const stopped = logFields(agent.stderr, role === "output serve" ? "output-server" : "input-client", "stopped");
      expect(stopped.signal).toBe("SIGTERM");
      // Every frame read is accounted for, and the read ended with the stop, well before the source's end.
      expect(Number(stopped.submitted)).toBe(Number(stopped.delivered) + Number(stopped.dropped));
      expect(Number(stopped.submitted)).toBeLessThan(FRAMES);
    }, 60_000);
  }
});
