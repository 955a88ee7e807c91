/**
 * A socket path the agent cannot use is a mistake in the settings (exit 2),
 * and the README promises such a line "names the flag, the value and what is
 * allowed". A first-time user who runs a server without --socket gets the
 * default /var/run path: the line must tell which option moves it, and in
 * `serve`, which of the two channels' sockets it is.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { failureLine } from "../support/agent-log.ts";
import { useCleanup } from "../support/cleanup.ts";
import { agentEnv, spawnAgent, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { writeWireFile } from "../support/wire.ts";

const defer = useCleanup();

function setup() {
  const dir = socketDir(defer, "aasf-");
  defer(() => stopAgents());
  return dir;
}

describe("a socket path that cannot be used names the option it came from", () => {
  test("output serve --socket in a directory that does not exist: exit 2, the line names --socket", async () => {
    const t = setup();
    await writeWireFile(t.path("in.wire"), 3);
    const result = await spawnAgent(["output", "serve", "--source", t.path("in.wire"), "--socket", t.path("gone/out.sock")]).done;
    expect(result.code).toBe(2);
    // Typed on the command line, the flag is named with no origin after it.
    expect(failureLine(result.stderr)).toBe(`audio-agent: --socket: socket directory ${t.path("gone")} does not exist`);
  });

  test("serve with --input-socket a regular file: exit 2, the line names --input-socket, not just a path", async () => {
    const t = setup();
    await writeWireFile(t.path("capture.wire"), 3);
    writeFileSync(t.path("in.sock"), "not a socket");
    const result = await spawnAgent([
      "serve", "--output-socket", t.path("out.sock"), "--output-source", t.path("capture.wire"),
      "--input-socket", t.path("in.sock"), "--input-sink", t.path("sink.wire"),
    ]).done;
    expect(result.code).toBe(2);
    expect(failureLine(result.stderr)).toContain("--input-socket");
  });

  test("input serve with the socket from JETKVM_AUDIO_INPUT_SOCKET in a directory that does not exist: exit 2, the line names the variable", async () => {
    const t = setup();
    const result = await spawnAgent(["input", "serve", "--sink", t.path("sink.wire")], {
      env: agentEnv({ JETKVM_AUDIO_INPUT_SOCKET: t.path("gone/in.sock") }),
    }).done;
    expect(result.code).toBe(2);
    expect(failureLine(result.stderr)).toMatch(/JETKVM_AUDIO_INPUT_SOCKET|--socket/);
  });
});

test("output serve with its socket from JETKVM_AUDIO_OUTPUT_SOCKET, a regular file there: exit 2, the line names the variable it came from, as a port from the environment is", async () => {
  const t = setup();
  await writeWireFile(t.path("in.wire"), 3);
  writeFileSync(t.path("out.sock"), "not a socket");
  const result = await spawnAgent(["output", "serve", "--source", t.path("in.wire")], {
    env: agentEnv({ JETKVM_AUDIO_OUTPUT_SOCKET: t.path("out.sock") }),
  }).done;
  expect(result.code).toBe(2);
  const line = failureLine(result.stderr);
  expect(line).toContain(t.path("out.sock"));
  expect(line).toContain("JETKVM_AUDIO_OUTPUT_SOCKET");
});
