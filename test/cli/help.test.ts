/**
 * What a user meets first: every --help exits 0 and shows each option's
 * default; every usage mistake exits 2 with one line of the project's own,
 * never the text of Node's argument parser. Real processes.
 */
import { describe, expect, test } from "bun:test";
import { defaultOf, OPTIONS, ROLE_OPTIONS, type Channel, type OptionName, type Role } from "../../src/config.ts";
import { runAgent } from "../support/processes.ts";

/** The help rows of one option: its flag line and the description below it. */
function row(help: string, option: string): string {
  const lines = help.split("\n");
  const at = lines.findIndex((line) => line.startsWith(`  --${option} `) || line === `  --${option}`);
  if (at < 0) throw new Error(`--${option} is not in:\n${help}`);
  return `${lines[at]}\n${lines[at + 1]}`;
}

describe("--help", () => {
  test("every level exits 0 and prints on stdout only", async () => {
    const levels = [
      ["--help"],
      ["output", "--help"],
      ["input", "-h"],
      ...Object.keys(ROLE_OPTIONS).flatMap((role) => [[...role.split(" "), "--help"], [...role.split(" "), "-h"]]),
      ["config", "--help"],
      ["config", "print", "--help"],
      ["config", "print", "-h"],
      ["config", "check", "--help"],
      ["bench", "--help"],
    ];
    const results = await Promise.all(levels.map((args) => runAgent(args)));
    results.forEach((result, k) => {
      expect({ args: levels[k], code: result.code, stderr: result.stderr }).toEqual({ args: levels[k], code: 0, stderr: "" });
      expect(result.stdout).toContain("audio-agent");
    });
  }, 30_000);

  test("each role's help shows every default in its option's row", async () => {
    for (const role of Object.keys(ROLE_OPTIONS) as Role[]) {
      const channel = role.split(" ")[0] as Channel;
      const { code, stdout } = await runAgent([...role.split(" "), "--help"]);
      expect(code).toBe(0);
      for (const option of ROLE_OPTIONS[role] as readonly OptionName[]) {
        const value = defaultOf(option, channel);
        const text = row(stdout, option);
        if (value === undefined) expect({ option, text }).toEqual({ option, text: expect.not.stringContaining("(default: ") });
        else expect({ option, text }).toEqual({ option, text: expect.stringContaining("(default: ") });
        if (OPTIONS[option].flag === "boolean") expect(text).not.toContain("(default: false)");
      }
    }
    const serve = (await runAgent(["output", "serve", "--help"])).stdout;
    const expected: [string, string][] = [
      ["queue-frames", "500"],
      ["drop", "oldest"],
      ["format", "wire"],
      ["write-deadline-ms", "50"],
      ["stuck-frames", "250"],
      ["socket-mode", "0660"],
      ["realtime", "off"],
      ["socket-buffers", "default"],
      ["adaptive", "on"],
      ["log-level", "info"],
      ["socket", "/var/run/audio_output.sock"],
    ];
    for (const [option, shown] of expected) expect(row(serve, option)).toContain(`(default: ${shown})`);
    expect(row((await runAgent(["input", "send", "--help"])).stdout, "heartbeat-ms")).toContain("(default: 1000)");
  }, 30_000);
});

describe("usage errors", () => {
  test("exit 2 with one line of our own, naming the flag", async () => {
    const cases: [string[], string][] = [
      [["output", "serve", "--source", "x", "--bogus"], "audio-agent: output serve: unknown option --bogus (see audio-agent output serve --help)"],
      [["output", "serve", "--source", "x", "-x"], "audio-agent: output serve: unknown option -x (see audio-agent output serve --help)"],
      [["output", "recv", "--sink", "x", "--count"], "audio-agent: output recv: --count needs a value (an integer 1..2^53)"],
      [["output", "recv", "--sink", "x", "--count", "--once"], "audio-agent: output recv: --count needs a value (an integer 1..2^53)"],
      [["input", "serve", "--sink", "x", "--once=yes"], 'audio-agent: input serve: --once takes no value, found "yes" (see audio-agent input serve --help)'],
      [["input", "send", "--source", "x", "--config"], "audio-agent: input send: --config needs a value (a JSON file)"],
      [["config", "print", "--bogus"], "audio-agent: config print: unknown option --bogus (see audio-agent config print --help)"],
      [["config", "print", "--config"], "audio-agent: config print: --config needs a value (a JSON file)"],
      [["config", "check"], "audio-agent: config check takes one argument: the config file (see audio-agent config --help)"],
      [["config", "check", "--bogus", "f.json"], "audio-agent: config check: unknown option --bogus (see audio-agent config check --help)"],
      [["bench", "--bogus"], "audio-agent: bench: unknown option --bogus (see audio-agent bench --help)"],
      [["bench", "--only"], "audio-agent: bench: --only needs a value (a comma-separated list of flood160, flood4096, live, soak, startup)"],
      [["bench", "--quick=yes"], 'audio-agent: bench: --quick takes no value, found "yes" (see audio-agent bench --help)'],
    ];
    const results = await Promise.all(cases.map(([args]) => runAgent(args)));
    results.forEach((result, k) => {
      const [args, message] = cases[k]!;
      expect({ args, code: result.code, stderr: result.stderr, stdout: result.stdout }).toEqual({ args, code: 2, stderr: `${message}\n`, stdout: "" });
    });
  }, 30_000);
});
