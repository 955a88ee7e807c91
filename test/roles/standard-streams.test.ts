/**
 * The agent's stdout and stderr as it finds them (src/roles/standard-streams.ts):
 * a pipe it can open again is written through a description of its own (the
 * sink's, the log's), and the look at whether it opens again leaves no
 * descriptor behind on it.
 */
import { expect, test } from "bun:test";
import { closeSync, constants, openSync, readdirSync, readlinkSync } from "node:fs";
import { useCleanup } from "../support/cleanup.ts";
import { makeFifo, readAvailableText } from "../support/fifo.ts";
import { AGENT, agentEnv, start, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

/** A reader of `fifo` that takes nothing until asked (readAvailableText), open before any writer so none waits. */
function readerOf(fifo: string): number {
  const fd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
  defer(() => closeSync(fd));
  return fd;
}

test("output recv --sink - with stdout and stderr on pipes it can open again: each pipe held by its own descriptor and one description of the agent's own (the sink's, the log's), no third left by the look at it", async () => {
  const t = socketDir(defer, "aass-");
  defer(stopAgents);
  const out = makeFifo(t.path("out"));
  const log = makeFifo(t.path("log"));
  const outReader = readerOf(out);
  const logReader = readerOf(log);
  const agent = start(["sh", "-c", 'out=$1; log=$2; shift 2; exec "$@" >"$out" 2>"$log"', "sh", out, log, ...AGENT, "output", "recv", "--socket", t.path("none.sock"), "--sink", "-"], {
    env: agentEnv(),
  });
  // Logged once the sink is open and the client begins to connect: stdout and stderr have been looked at by then.
  let read = "";
  await until(() => ((read += readAvailableText(logReader)), read.includes("output-client: waiting for the server")), "output recv waiting for its server");
  // A descriptor listed may close before it is read (the agent opens and closes others meanwhile).
  const linkOf = (fd: string) => {
    try {
      return readlinkSync(`/proc/${agent.pid}/fd/${fd}`);
    } catch {
      return undefined;
    }
  };
  const on = (fifo: string) => readdirSync(`/proc/${agent.pid}/fd`).filter((fd) => linkOf(fd) === fifo).length;
  expect({ stdout: on(out), stderr: on(log) }).toEqual({ stdout: 2, stderr: 2 });

  agent.kill("SIGTERM");
  readAvailableText(outReader);
  expect(await agent.exited).toBe(0);
});
