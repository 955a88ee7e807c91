/**
 * The stop a signal begins, as a spawned agent lives it: a second SIGTERM or
 * SIGINT while the first's stop still writes out the queue ends the process
 * at once, with 128 + the signal's number, and says so as its last line.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync } from "node:fs";
import { logFields } from "../support/agent-log.ts";
import { useCleanup } from "../support/cleanup.ts";
import { stopAgents } from "../support/processes.ts";
import { agentWithQueue, signalTwice } from "../support/queued-agent.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

describe("a second signal while the server is still writing out its queue", () => {
  for (const [signal, code] of [["SIGTERM", 143], ["SIGINT", 130]] as const) {
    test(`${signal} twice: it exits at once with ${code} (128 + the signal's number), not after the flush, saying so last, its socket file removed`, async () => {
      const dir = socketDir(defer, "sd-");
      defer(stopAgents);
      const server = await agentWithQueue(defer, dir, dir.path("out.sock"));
      await signalTwice(server, signal);
      expect(await server.exited).toBe(code);
      expect(server.stderr).not.toContain(" stopped ");
      // Its client is cut off by the exit, and told so, not as one that left.
      expect(logFields(server.stderr, "output-server", "client disconnected").reason).toBe("the process exits at once");
      // The log does not just end: its last line says why there is no "stopped" line.
      expect(server.stderr.trimEnd().split("\n").at(-1)).toContain(`agent: ${signal} again during the stop: exiting at once exit_code=${code}`);
      // Neither the socket's path nor the hidden name it was bound by is left behind.
      expect(readdirSync(dir.dir)).toEqual(["queued.wire"]);
    });
  }
});
