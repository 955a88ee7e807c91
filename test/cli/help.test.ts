/**
 * What a user meets first: every --help exits 0 and shows each option's
 * default; every usage mistake exits 2 with one line of the project's own,
 * never the text of Node's argument parser. Real processes.
 */
import { describe, expect, test } from "bun:test";
import { defaultOf, OPTIONS, unsetMeaning, PROCESS_OPTIONS, ROLE_OPTIONS, SERVE_ROLES, type Channel, type OptionName, type Role } from "../../src/config.ts";
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
      ["serve", "--help"],
      ["serve", "-h"],
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

  test("help COMMAND prints what COMMAND --help prints (as git and go take it); help help, the usage", async () => {
    const commands = [["output"], ["output", "recv"], ["input", "serve"], ["serve"], ["config"], ["config", "print"], ["bench"], ["help"]];
    const asked = await Promise.all(commands.map((words) => runAgent(["help", ...words])));
    const expected = await Promise.all(commands.map((words) => runAgent(words[0] === "help" ? ["--help"] : [...words, "--help"])));
    asked.forEach((result, k) => {
      expect({ words: commands[k], code: result.code, stderr: result.stderr }).toEqual({ words: commands[k], code: 0, stderr: "" });
      expect(result.stdout).toBe(expected[k]!.stdout);
      expect(result.stdout.length).toBeGreaterThan(100);
    });
    // A command that does not exist is told as it would be without help.
    const unknown = await runAgent(["help", "output", "bogus"]);
    expect({ code: unknown.code, stderr: unknown.stderr, stdout: unknown.stdout }).toEqual({
      code: 2,
      stderr: 'audio-agent: unknown output command "bogus"; allowed: serve, recv\n',
      stdout: "",
    });
  }, 30_000);

  test("each role's help shows every default in its option's row", async () => {
    for (const role of Object.keys(ROLE_OPTIONS) as Role[]) {
      const channel = role.split(" ")[0] as Channel;
      const { code, stdout } = await runAgent([...role.split(" "), "--help"]);
      expect(code).toBe(0);
      // The usage line, then the option rows under their heading.
      const lines = stdout.split("\n");
      expect(lines[0]).toBe(`Usage: audio-agent ${role} [options]`);
      expect({ role, heading: lines.indexOf("Options:") }).toEqual({ role, heading: lines.findIndex((line) => line.startsWith("  --")) - 1 });
      for (const option of ROLE_OPTIONS[role] as readonly OptionName[]) {
        const value = defaultOf(option, channel);
        const text = row(stdout, option);
        // Unset, an option says what that means where it means something (off, no limit), else nothing.
        const unset = unsetMeaning(option);
        if (value === undefined) expect({ option, text }).toEqual({ option, text: unset ? expect.stringContaining(`(default: ${unset})`) : expect.not.stringContaining("(default: ") });
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
    // What leaving an option with no default unset means, as README tells it: spelt out, not read from the table that makes the help.
    const recv = (await runAgent(["output", "recv", "--help"])).stdout;
    const unsetShown: [string, string, string][] = [
      [serve, "metrics", "off"],
      [serve, "monitor", "off"],
      [serve, "http-allow-host", "none"],
      [recv, "count", "no limit"],
      [recv, "connect-timeout", "wait forever"],
    ];
    for (const [help, option, shown] of unsetShown) expect({ option, text: row(help, option) }).toEqual({ option, text: expect.stringContaining(`(default: ${shown}); env`) });
  }, 30_000);

  test("serve's help: every option of both channels with its prefix, default and variable; the process-wide ones once", async () => {
    const { code, stdout } = await runAgent(["serve", "--help"]);
    expect(code).toBe(0);
    for (const [channel, role] of Object.entries(SERVE_ROLES) as [Channel, Role][]) {
      for (const option of ROLE_OPTIONS[role] as readonly OptionName[]) {
        if ((PROCESS_OPTIONS as readonly string[]).includes(option)) continue;
        const text = row(stdout, `${channel}-${option}`);
        const value = defaultOf(option, channel);
        const unset = unsetMeaning(option);
        expect({ option, text }).toEqual({ option, text: value === undefined && !unset ? expect.not.stringContaining("(default: ") : expect.stringContaining("(default: ") });
        const env = option === "socket" ? `JETKVM_AUDIO_${channel.toUpperCase()}_SOCKET` : `AUDIO_AGENT_${`${channel}_${option}`.toUpperCase().replace(/-/g, "_")}`;
        expect(text).toEndWith(`; env ${env}`);
      }
    }
    for (const option of PROCESS_OPTIONS) {
      expect(stdout.split("\n").filter((line) => line.startsWith(`  --${option} `)).length).toBe(1);
      expect(stdout).not.toContain(`--output-${option}`);
      expect(stdout).not.toContain(`--input-${option}`);
    }
    expect(row(stdout, "output-socket")).toContain("(default: /var/run/audio_output.sock)");
    expect(row(stdout, "input-socket")).toContain("(default: /var/run/audio_input.sock)");
    expect(row(stdout, "output-queue-frames")).toContain("(default: 500)");
    expect(row(stdout, "input-page-ms")).toContain("(default: 100)");
    expect(row(stdout, "log-level")).toContain("(default: info); env AUDIO_AGENT_LOG_LEVEL");
    // The process-wide ones with no default say what unset means, as in each role's help.
    for (const [option, shown] of [["metrics", "off"], ["monitor", "off"], ["http-allow-host", "none"]]) expect(row(stdout, option!)).toContain(`(default: ${shown}); env`);
    const top = await runAgent(["--help"]);
    expect(top.stdout).toContain("audio-agent serve --output-source PATH|- --input-sink PATH|-");
  }, 30_000);

  test("serve's help says, before its options, how its two channels share the process; a role's help does not", async () => {
    const said = "Runs output serve and input serve in one process.";
    const [serve, output] = await Promise.all([runAgent(["serve", "--help"]), runAgent(["output", "serve", "--help"])]);
    expect([serve.code, output.code]).toEqual([0, 0]);
    expect(serve.stdout.indexOf(said)).toBeGreaterThan(0);
    expect(serve.stdout.indexOf(said)).toBeLessThan(serve.stdout.indexOf("Options:"));
    expect(serve.stdout).toContain("a failure of either\nstops the other and ends the process with that failure.");
    expect(output.stdout).toStartWith("Usage: audio-agent output serve [options]\n\nOptions:\n");
    expect(output.stdout).not.toContain(said);
  }, 30_000);
});

describe("usage errors", () => {
  test("no command, a channel without one, or config without a verb: the help on stderr, exit 2, nothing on stdout", async () => {
    for (const [args, help] of [
      [[], "audio-agent serve"],
      [["output"], 'Run "audio-agent output serve --help" or "audio-agent output recv --help" for options.'],
      [["input"], 'Run "audio-agent input serve --help" or "audio-agent input send --help" for options.'],
      [["config"], "audio-agent config check FILE"],
    ] as const) {
      const result = await runAgent([...args]);
      expect({ args, code: result.code, stdout: result.stdout }).toEqual({ args, code: 2, stdout: "" });
      expect(result.stderr).toContain(help);
    }
  }, 30_000);


  test("exit 2 with one line of our own, naming the flag", async () => {
    const cases: [string[], string][] = [
      [["output", "serve", "--source", "x", "--bogus"], "audio-agent: output serve: unknown option --bogus (see audio-agent output serve --help)"],
      [["output", "serve", "--source", "x", "-x"], "audio-agent: output serve: unknown option -x (see audio-agent output serve --help)"],
      // A letter or two off: the flag it likely meant.
      [["output", "serve", "--source", "x", "--queue-frame", "3"], "audio-agent: output serve: unknown option --queue-frame (did you mean --queue-frames? see audio-agent output serve --help)"],
      [["input", "send", "--sourse", "x"], "audio-agent: input send: unknown option --sourse (did you mean --source? see audio-agent input send --help)"],
      // Names every JavaScript object has are not flags either.
      [["output", "recv", "--sink", "x", "--constructor", "y"], "audio-agent: output recv: unknown option --constructor (see audio-agent output recv --help)"],
      [["output", "recv", "--sink", "x", "--toString"], "audio-agent: output recv: unknown option --toString (see audio-agent output recv --help)"],
      [["output", "recv", "--sink", "x", "--__proto__=1"], "audio-agent: output recv: unknown option --__proto__ (see audio-agent output recv --help)"],
      // No name before the "=": the argument itself is what is unknown.
      [["output", "recv", "--sink", "x", "--=x"], "audio-agent: output recv: unknown option --=x (see audio-agent output recv --help)"],
      [["output", "recv", "--sink", "x", "--count"], "audio-agent: output recv: --count needs a value (an integer 1..9007199254740991)"],
      [["output", "recv", "--sink", "x", "--count", "--once"], "audio-agent: output recv: --count needs a value (an integer 1..9007199254740991)"],
      [["input", "serve", "--sink", "x", "--once=yes"], 'audio-agent: input serve: --once is a switch: takes true or false, found "yes" (see audio-agent input serve --help)'],
      [["input", "send", "--source", "x", "--config"], "audio-agent: input send: --config needs a value (a JSON file)"],
      // A switch is turned off by --no-NAME; a flag that takes a value has no such form.
      [["input", "serve", "--sink", "x", "--no-once=true"], 'audio-agent: input serve: --no-once takes no value, found "true" (see audio-agent input serve --help)'],
      [["output", "recv", "--sink", "x", "--no-count"], "audio-agent: output recv: unknown option --no-count (see audio-agent output recv --help)"],
      [["output", "recv", "--sink", "x", "--no-bogus"], "audio-agent: output recv: unknown option --no-bogus (see audio-agent output recv --help)"],
      [["config", "print", "--bogus"], "audio-agent: config print: unknown option --bogus (see audio-agent config print --help)"],
      [["config", "print", "--config"], "audio-agent: config print: --config needs a value (a JSON file)"],
      [["config", "check"], "audio-agent: config check takes one argument: the config file (see audio-agent config --help)"],
      [["config", "check", "--bogus", "f.json"], "audio-agent: config check: unknown option --bogus (see audio-agent config check --help)"],
      [["config", "check", ""], 'audio-agent: config check "" is not allowed: a JSON file'],
      [["bench", "--bogus"], "audio-agent: bench: unknown option --bogus (see audio-agent bench --help)"],
      [["bench", "--only"], "audio-agent: bench: --only needs a value (a comma-separated list of flood160, flood4096, live, soak, startup)"],
      [["bench", "--quick=yes"], 'audio-agent: bench: --quick is a switch: takes true or false, found "yes" (see audio-agent bench --help)'],
      [["serve", "--output-source", "x", "--input-sink", "y", "--source", "z"], "audio-agent: serve: unknown option --source (did you mean --output-source? see audio-agent serve --help)"],
      [["serve", "--output-source", "x", "--input-sink", "y", "--output-sink", "z"], "audio-agent: serve: unknown option --output-sink (did you mean --input-sink? see audio-agent serve --help)"],
      [["serve", "--output-source", "x", "--input-sink", "y", "--output-metrics", "9100"], "audio-agent: serve: unknown option --output-metrics (did you mean --metrics? see audio-agent serve --help)"],
      // The optimizer acts on a sending end's writes: a receiver has none to offer.
      [["output", "recv", "--sink", "x", "--adaptive", "on"], "audio-agent: output recv: unknown option --adaptive (see audio-agent output recv --help)"],
      [["input", "serve", "--sink", "x", "--adaptive-threshold", "3"], "audio-agent: input serve: unknown option --adaptive-threshold (see audio-agent input serve --help)"],
      [["serve", "--output-source", "x", "--input-sink", "y", "--input-adaptive", "off"], "audio-agent: serve: unknown option --input-adaptive (did you mean --output-adaptive? see audio-agent serve --help)"],
      [["serve", "--output-source", "x", "--input-sink", "y", "--input-format", "mp3"], 'audio-agent: --input-format "mp3" is not allowed: wire, ogg'],
      [["serve", "--output-source", "x", "--input-sink", "y", "--output-loop=yes"], 'audio-agent: serve: --output-loop is a switch: takes true or false, found "yes" (see audio-agent serve --help)'],
      [["serve", "--input-sink", "y"], `audio-agent: serve: --output-source is required (${OPTIONS.source.allowed})`],
      [["serve", "--output-source", "x", "--input-sink", "y", "extra"], 'audio-agent: unexpected argument "extra" (see audio-agent serve --help)'],
      [["version", "extra"], 'audio-agent: version takes no arguments, found "extra" (see --help)'],
      [["--help", "output"], 'audio-agent: --help takes no arguments, found "output" (see --help)'],
      [["help", "help", "output"], 'audio-agent: help help takes no arguments, found "output" (see --help)'],
      [["output", "--help", "x"], 'audio-agent: output --help takes no arguments, found "x" (see audio-agent output --help)'],
      [["input", "-h", "x"], 'audio-agent: input -h takes no arguments, found "x" (see audio-agent input --help)'],
      [["config", "--help", "x"], 'audio-agent: config --help takes no arguments, found "x" (see audio-agent config --help)'],
      [["config", "print", "--help", "serve"], 'audio-agent: config print --help takes no arguments, found "serve" (see audio-agent config --help)'],
      [["config", "check", "-h", "f.json"], 'audio-agent: config check --help takes no arguments, found "f.json" (see audio-agent config --help)'],
    ];
    const results = await Promise.all(cases.map(([args]) => runAgent(args)));
    results.forEach((result, k) => {
      const [args, message] = cases[k]!;
      expect({ args, code: result.code, stderr: result.stderr, stdout: result.stdout }).toEqual({ args, code: 2, stderr: `${message}\n`, stdout: "" });
    });
  }, 30_000);

  // As a value is shown (a megabyte's first 200 characters): a word of 100,000 is a mistake to name, not to echo whole.
  test("a very long word where a flag, a value, a command or a role was expected is shown cut short, in one line", async () => {
    const word = "y".repeat(100_000);
    const shown = `${"y".repeat(199)}...`;
    const cases: [string[], string][] = [
      [["output", "serve", `--${word}`], `audio-agent: output serve: unknown option --${"y".repeat(198)}... (see audio-agent output serve --help)`],
      [["input", "serve", `--once=${word}`], `audio-agent: input serve: --once is a switch: takes true or false, found "${shown} (see audio-agent input serve --help)`],
      [["input", "serve", `--no-once=${word}`], `audio-agent: input serve: --no-once takes no value, found "${shown} (see audio-agent input serve --help)`],
      [["output", "serve", word], `audio-agent: unexpected argument "${shown} (see audio-agent output serve --help)`],
      [["config", "print", word], `audio-agent: config print: unknown role "${shown}; allowed: output serve, output recv, input serve, input send, serve`],
      [[word], `audio-agent: unknown command "${shown}; allowed: output, input, serve, config, bench (see --help)`],
      [["output", word], `audio-agent: unknown output command "${shown}; allowed: serve, recv`],
      [["config", word], `audio-agent: unknown config command "${shown}; allowed: check, print`],
      [["--version", word], `audio-agent: --version takes no arguments, found "${shown} (see --help)`],
    ];
    const results = await Promise.all(cases.map(([args]) => runAgent(args)));
    results.forEach((result, k) => {
      const [args, message] = cases[k]!;
      expect({ args: args.map((arg) => arg.slice(0, 20)), ...result }).toEqual({ args: args.map((arg) => arg.slice(0, 20)), code: 2, stderr: `${message}\n`, stdout: "" });
    });
  }, 30_000);
});
