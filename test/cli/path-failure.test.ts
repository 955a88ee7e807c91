/**
 * A source or sink path that cannot be opened: exit 1 and one line naming
 * its flag, the path, where it was set when the user never typed it, and
 * what is missing (the directory, where a symbolic link leads), as
 * describeFailure words it. Real processes.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SOCK_STREAM } from "../../src/io/libc.ts";
import { failureLine } from "../support/agent-log.ts";
import { bindSocket } from "../support/bound-socket.ts";
import { useCleanup } from "../support/cleanup.ts";
import { agentEnv, spawnAgent, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

function setup() {
  const dir = socketDir(defer, "aapf-");
  defer(stopAgents);
  return dir;
}

describe("a source or sink path that cannot be opened: one line naming the flag, the path and what is missing", () => {
  for (const role of ["output recv", "input serve"] as const) {
    test(`${role} with a sink in a missing directory: exit 1 naming --sink, the path and that the directory does not exist`, async () => {
      const dir = setup();
      const missing = dir.path("no/such");
      const sink = join(missing, "got.wire");
      const socket = dir.path("s.sock");
      const args = role === "output recv" ? ["output", "recv", "--connect-timeout", "5"] : ["input", "serve"];
      const agent = spawnAgent([...args, "--socket", socket, "--sink", sink]);
      expect(await agent.exited).toBe(1);
      expect(failureLine(agent.stderr)).toBe(`audio-agent: --sink ${sink}: directory ${missing} does not exist (ENOENT)`);
      expect(readdirSync(dir.dir)).toEqual([]);
    });
  }

  // As --metrics and --socket are told: a value the user never typed is told by where it was set.
  test("a source or sink path from the environment or the config file that cannot be opened: the line says where it was set", async () => {
    const dir = setup();
    const source = dir.path("missing.opus");
    const sink = join(dir.path("no/such"), "got.wire");
    const config = dir.path("audio-agent.json");
    writeFileSync(config, JSON.stringify({ output: { source }, input: { sink } }));
    const cases: [string, string[], Record<string, string>, string][] = [
      ["output serve, source from the environment", ["output", "serve", "--socket", dir.path("a.sock")], { AUDIO_AGENT_SOURCE: source }, "environment AUDIO_AGENT_SOURCE"],
      ["output serve, source from the config file", ["output", "serve", "--socket", dir.path("b.sock"), "--config", config], {}, 'config "output.source"'],
      ["input serve, sink from the environment", ["input", "serve", "--socket", dir.path("c.sock")], { AUDIO_AGENT_SINK: sink }, "environment AUDIO_AGENT_SINK"],
      ["input serve, sink from the config file", ["input", "serve", "--socket", dir.path("d.sock"), "--config", config], {}, 'config "input.sink"'],
      ["serve, output source from the environment", ["serve", "--output-socket", dir.path("e.sock"), "--input-socket", dir.path("f.sock"), "--input-sink", dir.path("in.wire")], { AUDIO_AGENT_OUTPUT_SOURCE: source }, "environment AUDIO_AGENT_OUTPUT_SOURCE"],
    ];
    for (const [what, args, env, origin] of cases) {
      const agent = spawnAgent(args, { env: agentEnv(env) });
      expect({ what, code: await agent.exited }).toEqual({ what, code: 1 });
      const line = failureLine(agent.stderr);
      expect({ what, names: line.includes(what.includes("source") ? source : sink) }).toEqual({ what, names: true });
      expect({ what, line }).toEqual({ what, line: expect.stringContaining(`from ${origin}`) });
    }
  });

  test("a source or sink through a symbolic link that leads nowhere names where it leads; a sink ending in / says so: exit 1 each", async () => {
    const dir = setup();
    const dangling = dir.path("tone.opus");
    symlinkSync("gone.opus", dangling);
    const serve = spawnAgent(["output", "serve", "--socket", dir.path("o.sock"), "--source", dangling]);
    expect(await serve.exited).toBe(1);
    expect(failureLine(serve.stderr)).toBe(`audio-agent: --source ${dangling}: a symbolic link to gone.opus, which does not exist (ENOENT)`);

    const nowhere = dir.path("sink.wire");
    symlinkSync(dir.path("no/such/got.wire"), nowhere);
    const linked = spawnAgent(["input", "serve", "--socket", dir.path("i.sock"), "--sink", nowhere]);
    expect(await linked.exited).toBe(1);
    expect(failureLine(linked.stderr)).toBe(`audio-agent: --sink ${nowhere}: a symbolic link to ${dir.path("no/such/got.wire")}, whose directory ${dir.path("no/such")} does not exist (ENOENT)`);

    const slash = dir.path("x.opus/");
    const trailing = spawnAgent(["input", "serve", "--socket", dir.path("j.sock"), "--sink", slash]);
    expect(await trailing.exited).toBe(1);
    expect(failureLine(trailing.stderr)).toBe(`audio-agent: --sink ${slash}: ends in /, which names a directory; a file was expected (EISDIR)`);
    expect(readdirSync(dir.dir).sort()).toEqual(["sink.wire", "tone.opus"]);
  });

  test("a source or sink that is another program's socket: exit 1 saying it is a socket, not just that the open failed", async () => {
    const dir = setup();
    const other = dir.path("other.sock");
    defer(bindSocket(other, SOCK_STREAM));
    const sink = spawnAgent(["input", "serve", "--socket", dir.path("i.sock"), "--sink", other]);
    expect(await sink.exited).toBe(1);
    expect(failureLine(sink.stderr)).toBe(`audio-agent: --sink ${other}: a socket, not a file to read or write (ENXIO)`);
    const source = spawnAgent(["output", "serve", "--socket", dir.path("o.sock"), "--source", other]);
    expect(await source.exited).toBe(1);
    expect(failureLine(source.stderr)).toBe(`audio-agent: --source ${other}: a socket, not a file to read or write (ENXIO)`);
    expect(readdirSync(dir.dir)).toEqual(["other.sock"]);
  });
});
