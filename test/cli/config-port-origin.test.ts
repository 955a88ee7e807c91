/**
 * README "Build and deploy": a command run by hand beside the service reads
 * the service's /etc/audio-agent.json too, whose `metrics` port the service
 * holds. The user who ran `audio-agent output recv --sink -` typed no
 * --metrics, yet the line blames "--metrics 127.0.0.1:PORT"; a value from a
 * config file is otherwise told by its file and key (exit 2 "naming the key
 * path"), and the line should say where the port came from so the user knows
 * to add --metrics off.
 */
import { expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { failureLine } from "../support/agent-log.ts";
import { useCleanup } from "../support/cleanup.ts";
import { agentEnv, spawnAgent, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { writeWireFile } from "../support/wire.ts";

const defer = useCleanup();

test("a metrics port from the config file that another process holds: exit 2, the line names the config file it came from", async () => {
  const t = socketDir(defer, "aacp-");
  defer(() => stopAgents());
  const holder = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("the service's") });
  defer(() => holder.stop(true));
  const config = t.path("audio-agent.json");
  writeFileSync(config, JSON.stringify({ metrics: `127.0.0.1:${holder.port}` }));

  const agent = spawnAgent(["output", "recv", "--socket", t.path("out.sock"), "--sink", t.path("out.wire")], {
    env: agentEnv({ AUDIO_AGENT_CONFIG: config }),
  });
  expect(await agent.exited).toBe(2);
  const line = failureLine(agent.stderr);
  expect(line).toContain(`${holder.port}`);
  expect(line).toContain(config);
});

test("serve with the metrics port from the config file's \"output\" section, another process holding it: the line names that key, output.metrics, not a top-level \"metrics\" the file does not have", async () => {
  const t = socketDir(defer, "aacp-");
  defer(() => stopAgents());
  const holder = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("the service's") });
  defer(() => holder.stop(true));
  const config = t.path("audio-agent.json");
  writeFileSync(config, JSON.stringify({ output: { metrics: `127.0.0.1:${holder.port}` } }));
  await writeWireFile(t.path("capture.wire"), 3);

  const agent = spawnAgent(
    ["serve", "--output-source", t.path("capture.wire"), "--output-socket", t.path("o.sock"), "--input-socket", t.path("i.sock"), "--input-sink", t.path("mic.wire")],
    { env: agentEnv({ AUDIO_AGENT_CONFIG: config }) },
  );
  expect(await agent.exited).toBe(2);
  const line = failureLine(agent.stderr);
  expect(line).toContain(config);
  expect(line).toContain('config "output.metrics"');
});

test("--metrics on a port another process holds, --monitor on another address: the line names --metrics alone, with no origin (both typed)", async () => {
  const t = socketDir(defer, "aacp-");
  defer(() => stopAgents());
  const holder = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("another's") });
  defer(() => holder.stop(true));
  const agent = spawnAgent(
    ["output", "recv", "--socket", t.path("out.sock"), "--sink", t.path("out.wire"), "--metrics", `127.0.0.1:${holder.port}`, "--monitor", "127.0.0.2:0"],
    { env: agentEnv() },
  );
  expect(await agent.exited).toBe(2);
  expect(failureLine(agent.stderr)).toBe(`audio-agent: --metrics 127.0.0.1:${holder.port}: cannot listen: address in use (EADDRINUSE)`);
});
