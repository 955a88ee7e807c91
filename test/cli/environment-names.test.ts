/**
 * The environment's AUDIO_AGENT_* and JETKVM_AUDIO_* names that do nothing,
 * as an operator writes them in /etc/default/audio-agent: a misspelt one is
 * warned of once with the name it is likely a misspelling of, another role's
 * setting is quiet, and under systemd (INVOCATION_ID) the init script's own
 * settings are told to be the script's. Warnings never change the exit code.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { OPTIONS } from "../../src/config.ts";
import { useCleanup } from "../support/cleanup.ts";
import { makeFifo } from "../support/fifo.ts";
import { agentEnv, runAgent, spawnAgent, stopAgents, type Spawned } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

function setup() {
  const t = socketDir(defer, "aaen-");
  defer(() => stopAgents());
  // A FIFO no encoder writes: the agent listens and waits for one.
  return { ...t, fifo: makeFifo(t.path("capture.ogg")), out: t.path("o.sock") };
}

/** `output serve` on the FIFO with `extra` in its environment, once it listens. */
async function listening(t: ReturnType<typeof setup>, extra: Record<string, string>): Promise<Spawned> {
  const agent = spawnAgent(["output", "serve", "--source", t.fifo, "--format", "ogg", "--socket", t.out], { env: agentEnv(extra) });
  await agent.waitForStderr("output-server: listening");
  return agent;
}

/** SIGTERM stops it as ever (exit 0); its stderr. */
async function stopped(agent: Spawned): Promise<string> {
  agent.kill("SIGTERM");
  expect(await agent.exited, agent.stderr).toBe(0);
  return agent.stderr;
}

const count = (text: string, part: string) => text.split(part).length - 1;

const UNIT = `the unit runs /usr/bin/audio-agent $AUDIO_AGENT_ARGS (packaging/README.md, "systemd hosts")`;

describe("a name that is no setting of the agent", () => {
  test("is warned of once, naming it and the setting it is likely a misspelling of; the role runs as without it", async () => {
    const t = setup();
    const agent = await listening(t, {
      AUDIO_AGENT_QUEUE_FRAME: "250",
      // output serve's --socket is JetKVM's variable, not AUDIO_AGENT_<CHANNEL>_SOCKET.
      AUDIO_AGENT_OUTPUT_SOCKET: t.path("elsewhere.sock"),
      JETKVM_AUDIO_OUTPUT_SOCK: t.path("elsewhere.sock"),
      AUDIO_AGENT_NOTHING_LIKE_IT: "1",
    });
    const stderr = await stopped(agent);
    const warned = (name: string, rest: string) => `WARN  agent: environment ${name} is no setting of the agent's, ignored${rest}\n`;
    expect(count(stderr, warned("AUDIO_AGENT_QUEUE_FRAME", ": did you mean AUDIO_AGENT_QUEUE_FRAMES?"))).toBe(1);
    expect(count(stderr, warned("AUDIO_AGENT_OUTPUT_SOCKET", ": did you mean JETKVM_AUDIO_OUTPUT_SOCKET?"))).toBe(1);
    expect(count(stderr, warned("JETKVM_AUDIO_OUTPUT_SOCK", ": did you mean JETKVM_AUDIO_OUTPUT_SOCKET?"))).toBe(1);
    expect(count(stderr, warned("AUDIO_AGENT_NOTHING_LIKE_IT", " (--help names each option's variable)"))).toBe(1);
    expect(count(stderr, "environment ")).toBe(4);
    // It served where --socket said, not where the misspelt names did.
    expect(stderr).toContain(`output-server: listening socket=${t.out} `);
  });

  test("is warned of before the line of a failure it may be the cause of, the exit code as without it", async () => {
    const r = await runAgent(["output", "serve", "--format", "ogg"], { env: agentEnv({ AUDIO_AGENT_SOURC: "/run/capture.ogg" }) });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(
      /^\S+ WARN {2}agent: environment AUDIO_AGENT_SOURC is no setting of the agent's, ignored: did you mean AUDIO_AGENT_SOURCE\?\naudio-agent: output serve: --source is required \(a path or "-"\)\n$/,
    );
  });
});

describe("another role's setting", () => {
  test("is quiet: one settings file serves several roles", async () => {
    const t = setup();
    const agent = await listening(t, {
      AUDIO_AGENT_SINK: "/dev/null",
      AUDIO_AGENT_HEARTBEAT_MS: "500",
      AUDIO_AGENT_INPUT_SINK: "/dev/null",
      AUDIO_AGENT_OUTPUT_QUEUE_FRAMES: "250",
      JETKVM_AUDIO_INPUT_SOCKET: t.path("i.sock"),
      AUDIO_AGENT_PIDFILE: t.path("audio-agent.pid"),
    });
    expect(await stopped(agent)).not.toContain("environment ");
  });
});

describe("the init script's settings", () => {
  const script = { AUDIO_AGENT_ROLE: "serve", AUDIO_AGENT_ARGS: "", AUDIO_AGENT_DEFAULTS: "/etc/default/audio-agent" };

  test("under systemd (INVOCATION_ID) AUDIO_AGENT_ROLE is told to be the script's, in one line: the unit runs AUDIO_AGENT_ARGS", async () => {
    const t = setup();
    const agent = await listening(t, { ...script, INVOCATION_ID: "0123456789abcdef0123456789abcdef" });
    const stderr = await stopped(agent);
    expect(count(stderr, `WARN  agent: environment AUDIO_AGENT_ROLE is the init script's (S95audio-agent), ignored under systemd: ${UNIT}\n`)).toBe(1);
    expect(count(stderr, "environment ")).toBe(1);
  });

  test("under systemd, several in one line", async () => {
    const t = setup();
    const agent = await listening(t, {
      ...script,
      AUDIO_AGENT_FIFO: t.fifo,
      AUDIO_AGENT_LOG_FILE: t.path("agent.log"),
      INVOCATION_ID: "0123456789abcdef0123456789abcdef",
    });
    const stderr = await stopped(agent);
    const names = ["AUDIO_AGENT_ROLE", "AUDIO_AGENT_FIFO", "AUDIO_AGENT_LOG_FILE"];
    const line = stderr.split("\n").find((l) => l.includes("the init script's"));
    expect(line).toEndWith(`WARN  agent: environment ${names.join(", ")} are the init script's (S95audio-agent), ignored under systemd: ${UNIT}`);
    expect(count(stderr, "environment ")).toBe(1);
  });

  test("under the init script (no INVOCATION_ID) they are quiet", async () => {
    const t = setup();
    const agent = await listening(t, { ...script, AUDIO_AGENT_FIFO: t.fifo, AUDIO_AGENT_LOG_FILE: t.path("agent.log") });
    expect(await stopped(agent)).not.toContain("environment ");
  });
});

describe("config check", () => {
  test("reports the same on stderr, and the file's verdict as without them", async () => {
    const t = setup();
    const path = t.path("c.json");
    writeFileSync(path, `{"queue-frames": 250}`);
    const env = agentEnv({ AUDIO_AGENT_QUEUE_FRAME: "250", AUDIO_AGENT_SINK: "/dev/null", AUDIO_AGENT_ROLE: "serve", INVOCATION_ID: "0123456789abcdef0123456789abcdef" });
    const r = await runAgent(["config", "check", path], { env });
    expect(r.stdout).toBe(`${path}: ok (1 setting)\n`);
    expect(r.stderr).toBe(
      "audio-agent: config check: environment AUDIO_AGENT_QUEUE_FRAME is no setting of the agent's, ignored: did you mean AUDIO_AGENT_QUEUE_FRAMES?\n" +
        `audio-agent: config check: environment AUDIO_AGENT_ROLE is the init script's (S95audio-agent), ignored under systemd: ${UNIT}\n`,
    );
    expect(r.code).toBe(0);
    // Outside systemd, and a misspelt name left empty (unset, as every option's empty variable): nothing to say.
    const { INVOCATION_ID: _, ...outside } = env;
    const quiet = await runAgent(["config", "check", path], { env: { ...outside, AUDIO_AGENT_QUEUE_FRAME: "" } });
    expect(quiet.stderr).toBe("");
    expect(quiet.code).toBe(0);
  });
});

describe("config print", () => {
  test("says the same on stderr beside the settings it prints, which the misspelt name leaves at their default", async () => {
    const env = agentEnv({ AUDIO_AGENT_QUEUE_FRAME: "250" });
    const r = await runAgent(["config", "print", "output serve"], { env });
    expect(r.stderr).toBe("audio-agent: config print: environment AUDIO_AGENT_QUEUE_FRAME is no setting of the agent's, ignored: did you mean AUDIO_AGENT_QUEUE_FRAMES?\n");
    expect(JSON.parse(r.stdout)["queue-frames"]).toBe(OPTIONS["queue-frames"].default);
    expect(r.code).toBe(0);
  });
});

describe("a channel's prefix where the command reads none, or the other channel's", () => {
  // As for flags (serve --output-metrics: --metrics; --output-sink: --input-sink): the variable the command reads for it.
  test("names the variable read instead: serve's process-wide option unprefixed, the other channel's own, a single role's unprefixed", async () => {
    const warned = (name: string, meant: string) => `environment ${name} is no setting of the agent's, ignored: did you mean ${meant}?\n`;
    const serve = await runAgent(["config", "print", "serve"], {
      env: agentEnv({ AUDIO_AGENT_INPUT_LOG_LEVEL: "debug", AUDIO_AGENT_OUTPUT_SINK: "/dev/null", AUDIO_AGENT_OUTPUT_HEARTBEAT_MS: "250" }),
    });
    expect(serve.code).toBe(0);
    expect(serve.stderr.split("audio-agent: config print: ").filter(Boolean).sort()).toEqual(
      [
        warned("AUDIO_AGENT_INPUT_LOG_LEVEL", "AUDIO_AGENT_LOG_LEVEL"),
        warned("AUDIO_AGENT_OUTPUT_SINK", "AUDIO_AGENT_INPUT_SINK"),
        // Read by no channel of serve: the role that reads it.
        warned("AUDIO_AGENT_OUTPUT_HEARTBEAT_MS", "AUDIO_AGENT_HEARTBEAT_MS"),
      ].sort(),
    );
    expect(JSON.parse(serve.stdout)["log-level"]).toBe("info");
    const recv = await runAgent(["config", "print", "output recv"], { env: agentEnv({ AUDIO_AGENT_OUTPUT_COUNT: "3" }) });
    expect(recv.stderr).toBe(`audio-agent: config print: ${warned("AUDIO_AGENT_OUTPUT_COUNT", "AUDIO_AGENT_COUNT")}`);
    expect(JSON.parse(recv.stdout).count).toBeUndefined();
  });
});
