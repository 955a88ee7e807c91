/**
 * A command line or environment value whose bytes are not UTF-8: the runtime
 * reads it with U+FFFD for each such byte, so a path would name another file.
 * Refused with exit 2, as a config file's byte that is not UTF-8 is. Real
 * processes, given the bytes by /bin/sh (a spawn's arguments are UTF-8 text).
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, writeFileSync } from "node:fs";
import { useCleanup } from "../support/cleanup.ts";
import { AGENT, agentEnv, run, runAgent, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

function setup() {
  const dir = socketDir(defer, "aaab-");
  defer(stopAgents);
  return dir;
}

/** Runs the agent by /bin/sh's `script`, which ends with `exec "$@" ARGS...` (the agent's command in "$@"), with D the temp dir. */
function viaShell(script: string, dir: string, env: Record<string, string> = {}) {
  return run(["/bin/sh", "-c", script, "sh", ...AGENT], { cwd: dir, env: agentEnv({ D: dir, ...env }), timeoutMs: 30_000 });
}

describe("a value whose bytes are not UTF-8", () => {
  test("a flag's (a Latin-1 é in --sink): exit 2 naming the argument, the byte and its offset; no sink nor socket is made", async () => {
    const { dir } = setup();
    // The sink's path: `$D/caf` then 0xE9, as a Latin-1 system spells café.
    const got = await viaShell(`exec "$@" input serve --once --socket "$D/i.sock" --sink "$(printf '%s/caf\\351.wire' "$D")"`, dir);
    const offset = Buffer.byteLength(`${dir}/caf`);
    expect(got).toEqual({
      code: 2,
      stdout: "",
      stderr: `audio-agent: argument 7 of the command line, "${dir}/caf\uFFFD.wire": byte 0xe9 at offset ${offset} is not UTF-8; read as UTF-8, a path would name another file\n`,
    });
    expect(readdirSync(dir)).toEqual([]);
  });

  test("an environment variable's (JETKVM_AUDIO_INPUT_SOCKET): exit 2 naming the variable; no socket is made", async () => {
    const { dir } = setup();
    const got = await viaShell(`export JETKVM_AUDIO_INPUT_SOCKET="$(printf '%s/s\\377.sock' "$D")"; exec "$@" input serve --once --sink "$D/got.wire"`, dir);
    expect(got).toEqual({
      code: 2,
      stdout: "",
      stderr: `audio-agent: environment JETKVM_AUDIO_INPUT_SOCKET="${dir}/s\uFFFD.sock": byte 0xff at offset ${Buffer.byteLength(`${dir}/s`)} is not UTF-8; read as UTF-8, a path would name another file\n`,
    });
    expect(readdirSync(dir)).toEqual([]);
  });

  test("config check of a file so named: exit 2 with the byte, not that the file is missing", async () => {
    const { dir } = setup();
    await run(["/bin/sh", "-c", `printf '{}' > "$(printf '%s/c\\377.json' "$D")"`], { env: agentEnv({ D: dir }) });
    const got = await viaShell(`exec "$@" config check "$(printf '%s/c\\377.json' "$D")"`, dir);
    expect(got.code).toBe(2);
    expect(got.stderr).toBe(
      `audio-agent: argument 3 of the command line, "${dir}/c\uFFFD.json": byte 0xff at offset ${Buffer.byteLength(`${dir}/c`)} is not UTF-8; read as UTF-8, a path would name another file\n`,
    );
  });

  test("U+FFFD itself, which is UTF-8, is taken as written: a file of that name, from a flag and from the environment", async () => {
    const { path } = setup();
    const file = path("ok\uFFFD.json");
    writeFileSync(file, "{}");
    expect(await runAgent(["config", "check", file])).toEqual({ code: 0, stdout: `${file}: ok (0 settings)\n`, stderr: "" });
    const printed = await runAgent(["config", "print", "input serve"], { env: agentEnv({ AUDIO_AGENT_CONFIG: file, AUDIO_AGENT_SINK: path("in\uFFFD.wire") }) });
    expect(printed.code).toBe(0);
    expect(JSON.parse(printed.stdout).sink).toBe(path("in\uFFFD.wire"));
  });
});
