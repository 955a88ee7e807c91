/**
 * The environment the benchmark gives the agent's processes: nothing of the
 * caller's that configures the agent, and the log the benchmark reads (text
 * at info) even where a device's config file sets another; Bun's own
 * settings as the device's service gives them.
 */
import { expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { childEnv } from "../../src/bench/runner.ts";
import { useCleanup } from "../support/cleanup.ts";
import { cleanEnv, runAgent } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

test("the caller's agent variables are left out; the log level and format are the ones the benchmark reads, and no HTTP endpoint", () => {
  const env = childEnv({ PATH: "/bin", AUDIO_AGENT_QUEUE_FRAMES: "5", JETKVM_AUDIO_OUTPUT_SOCKET: "/x", AUDIO_AGENT_LOG_LEVEL: "debug", AUDIO_AGENT_LOG_FORMAT: "json", AUDIO_AGENT_METRICS: "9100" });
  expect(env).toEqual({
    PATH: "/bin",
    AUDIO_AGENT_LOG_LEVEL: "info",
    AUDIO_AGENT_LOG_FORMAT: "text",
    AUDIO_AGENT_METRICS: "off",
    AUDIO_AGENT_MONITOR: "off",
    MIMALLOC_SCAVENGER: "0",
    BUN_JSC_numberOfGCMarkers: "1",
    BUN_GC_TIMER_INTERVAL: "30000",
  });
});

test("Bun runs as the device's service runs it, unless the caller sets a variable of its own", () => {
  expect(childEnv({ PATH: "/bin", MIMALLOC_SCAVENGER: "1" })).toMatchObject({ MIMALLOC_SCAVENGER: "1", BUN_JSC_numberOfGCMarkers: "1" });
});

test("a config file that asks for a quiet JSON log and HTTP endpoints still gives the agent's text lines at info, and no endpoint, under that environment", async () => {
  const t = socketDir(defer, "aace-");
  const config = t.path("audio-agent.json");
  writeFileSync(config, JSON.stringify({ "log-level": "warn", "log-format": "json", metrics: 9100, monitor: 9101 }));
  // The device's /etc/audio-agent.json, here given by path (the variable is the file's only other way in).
  const { code, stdout, stderr } = await runAgent(["config", "print", "output", "serve"], { env: { ...childEnv(cleanEnv()), AUDIO_AGENT_CONFIG: config } });
  expect(code, stderr).toBe(0);
  expect(JSON.parse(stdout)).toMatchObject({ "log-level": "info", "log-format": "text", metrics: "off", monitor: "off" });
});
