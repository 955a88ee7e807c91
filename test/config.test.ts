import { describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import {
  ConfigError,
  defaultOf,
  environmentWarnings,
  walkJson,
  loadConfigFile,
  nearestName,
  OPTIONS,
  parseConfigFile,
  PROCESS_OPTIONS,
  readFlags,
  resolveServeSettings,
  resolveSettings,
  ROLE_OPTIONS,
  type ConfigFile,
  type OptionName,
} from "../src/config.ts";
import { useCleanup } from "./support/cleanup.ts";
import { REPO, run } from "./support/processes.ts";
import { tempDir } from "./support/temp.ts";

const defer = useCleanup();

function file(json: unknown): ConfigFile {
  return parseConfigFile(JSON.stringify(json), "/etc/test.json");
}

/** The ConfigError message parseConfigFile throws for `text`. */
function fileError(text: string): string {
  try {
    parseConfigFile(text, "/etc/bad.json");
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error(`accepted: ${text}`);
}

function resolveError(run: () => unknown): string {
  try {
    run();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error("resolved without an error");
}

describe("resolveSettings precedence: flags > env > file section > file top > defaults", () => {
  const layers = {
    top: { "queue-frames": 100, "log-level": "warn", "socket-buffers": "high-load", realtime: true },
    section: { "queue-frames": 200, "log-level": "error", "socket-buffers": "48k" },
    env: { AUDIO_AGENT_QUEUE_FRAMES: "300", AUDIO_AGENT_LOG_LEVEL: "debug", AUDIO_AGENT_SOCKET_BUFFERS: "96k" },
    flags: { "queue-frames": "400", "log-level": "info", "socket-buffers": "128k" },
  };

  function settings(use: { flags?: boolean; env?: boolean; section?: boolean; top?: boolean }) {
    const json: Record<string, unknown> = {};
    if (use.top) Object.assign(json, layers.top);
    if (use.section) json.output = layers.section;
    return resolveSettings(
      "output serve",
      {
        flags: { source: "/dev/null", ...(use.flags ? layers.flags : {}) },
        env: use.env ? layers.env : {},
        file: use.top || use.section ? file(json) : undefined,
      },
    );
  }

  test("each layer wins over the ones below it, for several options at once", () => {
    const all = { flags: true, env: true, section: true, top: true };
    expect(settings(all)).toMatchObject({ "queue-frames": 400, "log-level": "info", "socket-buffers": 128 * 1024 });
    expect(settings({ ...all, flags: false })).toMatchObject({ "queue-frames": 300, "log-level": "debug", "socket-buffers": 96 * 1024 });
    expect(settings({ section: true, top: true })).toMatchObject({ "queue-frames": 200, "log-level": "error", "socket-buffers": 48 * 1024 });
    expect(settings({ top: true })).toMatchObject({ "queue-frames": 100, "log-level": "warn", "socket-buffers": "high-load", realtime: true });
    expect(settings({})).toMatchObject({ "queue-frames": 500, "log-level": "info", "socket-buffers": "default", realtime: false });
  });

  test("a lower layer fills what a higher one leaves out", () => {
    const s = resolveSettings("output serve", {
      flags: { source: "/dev/null", drop: "newest" },
      env: { AUDIO_AGENT_STUCK_FRAMES: "77" },
      file: file({ "write-deadline-ms": 20, output: { loop: true } }),
    });
    expect(s).toMatchObject({ drop: "newest", "stuck-frames": 77, loop: true, "write-deadline-ms": 20, format: "wire" });
  });

  test("a section applies to its channel only", () => {
    const f = file({ "heartbeat-ms": 500, output: { "queue-frames": 42 }, input: { "queue-frames": 7, "heartbeat-ms": 250 } });
    expect(resolveSettings("output serve", { flags: { source: "x" }, env: {}, file: f })["queue-frames"]).toBe(42);
    const send = resolveSettings("input send", { flags: { source: "x" }, env: {}, file: f });
    expect(send["queue-frames"]).toBe(7);
    expect(send["heartbeat-ms"]).toBe(250);
    // A setting a role does not read is not in its settings at all.
    expect("heartbeat-ms" in resolveSettings("output serve", { flags: { source: "x" }, env: {}, file: f })).toBe(false);
  });

  test("an empty environment variable counts as unset", () => {
    const s = resolveSettings("output serve", {
      flags: { source: "x" },
      env: { AUDIO_AGENT_QUEUE_FRAMES: "" },
      file: file({ "queue-frames": 123 }),
    });
    expect(s["queue-frames"]).toBe(123);
  });

  test("flag and env text is converted like file values: sizes, octal modes, booleans, listen addresses", () => {
    const s = resolveSettings("output serve", {
      flags: { source: "x", "socket-buffers": "192k", "socket-mode": "0640", metrics: "9100" },
      env: { AUDIO_AGENT_REALTIME: "yes", AUDIO_AGENT_LOOP: "0", AUDIO_AGENT_MONITOR: "[::1]:8080" },
    });
    expect(s["socket-buffers"]).toBe(196608);
    expect(s["socket-mode"]).toBe(0o640);
    expect(s.realtime).toBe(true);
    expect(s.loop).toBe(false);
    expect(s.metrics).toEqual({ host: "127.0.0.1", port: 9100 });
    expect(s.monitor).toEqual({ host: "::1", port: 8080 });
    const t = resolveSettings("output recv", { flags: { sink: "x", metrics: "0.0.0.0:0" }, env: {} });
    expect(t.metrics).toEqual({ host: "0.0.0.0", port: 0 });
    expect(resolveSettings("output recv", { flags: { sink: "x", metrics: ":9200" }, env: {} }).metrics).toEqual({
      host: "127.0.0.1",
      port: 9200,
    });
  });

  test("every spelling of a boolean, each way; a port is 0..65535", () => {
    const realtime = (text: string) => resolveSettings("output serve", { flags: { source: "x" }, env: { AUDIO_AGENT_REALTIME: text } }).realtime;
    expect(["true", "1", "on", "yes"].map(realtime)).toEqual([true, true, true, true]);
    expect(["false", "0", "off", "no"].map(realtime)).toEqual([false, false, false, false]);
    expect(resolveError(() => realtime("maybe"))).toBe('environment AUDIO_AGENT_REALTIME="maybe" is not allowed: true, false');
    const metrics = (text: string) => resolveSettings("output recv", { flags: { sink: "x", metrics: text }, env: {} }).metrics;
    expect(metrics("65535")).toEqual({ host: "127.0.0.1", port: 65535 });
    for (const bad of ["65536", "127.0.0.1:65536", "-1"]) expect(resolveError(() => metrics(bad))).toContain(`--metrics "${bad}" is not allowed`);
  });
});

describe("readFlags", () => {
  const flags = { config: { type: "string" }, help: { type: "boolean", short: "h" } } as const;

  test("-- ends the flags: what follows is positional, a leading dash too", () => {
    expect(readFlags(["--config", "a.json", "--", "-f.json", "--help"], flags, "config print")).toEqual({ values: { config: "a.json" }, positionals: ["-f.json", "--help"] });
    expect(readFlags(["-h", "x"], flags, "config check")).toEqual({ values: { help: true }, positionals: ["x"] });
    expect(() => readFlags(["-f.json"], flags, "config check")).toThrow("config check: unknown option -f.json (see audio-agent config check --help)");
  });

  test("a switch's value, like any value but a path, is read without the blanks around it; a word but true or false is refused as written", () => {
    expect(readFlags(["--help= true"], flags, "config print").values).toEqual({ help: true });
    expect(readFlags(["--help=false\t"], flags, "config print").values).toEqual({ help: false });
    expect(() => readFlags(["--help= yes"], flags, "config print")).toThrow('config print: --help is a switch: takes true or false, found " yes" (see audio-agent config print --help)');
  });

  test("--no-NAME turns off a switch only: for an option that takes a value it is an unknown option, not that option set to false", () => {
    expect(readFlags(["--no-help"], flags, "config print")).toEqual({ values: { help: false }, positionals: [] });
    expect(() => readFlags(["--no-config"], flags, "config print")).toThrow("config print: unknown option --no-config (see audio-agent config print --help)");
  });
});

describe("socket paths from JetKVM's variables", () => {
  const env = { JETKVM_AUDIO_OUTPUT_SOCKET: "/run/o.sock", JETKVM_AUDIO_INPUT_SOCKET: "/run/i.sock", AUDIO_AGENT_SOCKET: "/run/generic.sock" };

  test("output roles read JETKVM_AUDIO_OUTPUT_SOCKET, input roles JETKVM_AUDIO_INPUT_SOCKET", () => {
    expect(resolveSettings("output serve", { flags: { source: "x" }, env }).socket).toBe("/run/o.sock");
    expect(resolveSettings("output recv", { flags: { sink: "x" }, env }).socket).toBe("/run/o.sock");
    expect(resolveSettings("input serve", { flags: { sink: "x" }, env }).socket).toBe("/run/i.sock");
    expect(resolveSettings("input send", { flags: { source: "x" }, env }).socket).toBe("/run/i.sock");
  });

  test("the other channel's variable is ignored; the default path stays", () => {
    expect(resolveSettings("input send", { flags: { source: "x" }, env: { JETKVM_AUDIO_OUTPUT_SOCKET: "/run/o.sock" } }).socket).toBe(
      defaultOf("socket", "input") as string,
    );
    expect(resolveSettings("output serve", { flags: { source: "x" }, env: { JETKVM_AUDIO_INPUT_SOCKET: "/run/i.sock" } }).socket).toBe(
      defaultOf("socket", "output") as string,
    );
  });

  test("--socket beats the variable, the variable beats the file", () => {
    const f = file({ input: { socket: "/file/i.sock" }, socket: "/file/any.sock" });
    expect(resolveSettings("input serve", { flags: { sink: "x", socket: "/flag.sock" }, env, file: f }).socket).toBe("/flag.sock");
    expect(resolveSettings("input serve", { flags: { sink: "x" }, env, file: f }).socket).toBe("/run/i.sock");
    expect(resolveSettings("input serve", { flags: { sink: "x" }, env: {}, file: f }).socket).toBe("/file/i.sock");
    expect(resolveSettings("output serve", { flags: { source: "x" }, env: {}, file: f }).socket).toBe("/file/any.sock");
  });
});

describe("environmentWarnings: names the agent would ignore", () => {
  test("every AUDIO_AGENT_* and JETKVM_AUDIO_* name the repository's code uses (the init script's, the build's, the tests' tools') is known: none is warned of", async () => {
    // Where names are used: the sources, the scripts (the init script's header lists its own), the tools, the tests' helpers.
    // The tests and the Markdown show wrong ones on purpose.
    const found = await run(["git", "grep", "-ohE", "(AUDIO_AGENT|JETKVM_AUDIO)_[A-Z0-9_]+", "--", ".", ":!*.test.ts", ":!*.md"], { cwd: REPO });
    expect(found.code).toBe(0);
    // A name's beginning (AUDIO_AGENT_OUTPUT_*) is none.
    const names = [...new Set(found.stdout.split("\n").filter((name) => name !== "" && !name.endsWith("_")))];
    for (const name of ["AUDIO_AGENT_ROLE", "AUDIO_AGENT_FIFO", "AUDIO_AGENT_BENCH_QUICK", "AUDIO_AGENT_GO_IPC", "JETKVM_AUDIO_INPUT_SOCKET"]) expect(names).toContain(name);
    expect(names.flatMap((name) => environmentWarnings({ [name]: "1" }))).toEqual([]);
  });

  test("the socket as AUDIO_AGENT_[CHANNEL_]SOCKET points at the variable the command reads for it", () => {
    const warned = (command?: "output serve" | "input send" | "serve") => environmentWarnings({ AUDIO_AGENT_SOCKET: "/run/a.sock" }, command)[0];
    expect(warned("output serve")).toEndWith("did you mean JETKVM_AUDIO_OUTPUT_SOCKET?");
    expect(warned("input send")).toEndWith("did you mean JETKVM_AUDIO_INPUT_SOCKET?");
    expect(warned("serve")).toEndWith("did you mean JETKVM_AUDIO_OUTPUT_SOCKET or JETKVM_AUDIO_INPUT_SOCKET?");
    expect(environmentWarnings({ AUDIO_AGENT_INPUT_SOCKT: "/run/a.sock" }, "output serve")[0]).toEndWith("did you mean JETKVM_AUDIO_INPUT_SOCKET?");
  });

  test("nearestName: within two edits, the nearest", () => {
    const known = ["AUDIO_AGENT_LOG_LEVEL", "AUDIO_AGENT_LOG_FILE", "AUDIO_AGENT_LOG_FORMAT"];
    expect(nearestName("AUDIO_AGENT_LOGLEVEL", known)).toBe("AUDIO_AGENT_LOG_LEVEL");
    expect(nearestName("AUDIO_AGENT_LOG_FROMAT", known)).toBe("AUDIO_AGENT_LOG_FORMAT");
    expect(nearestName("AUDIO_AGENT_LOG_FIL", known)).toBe("AUDIO_AGENT_LOG_FILE");
    expect(nearestName("AUDIO_AGENT_LEVEL", known)).toBeUndefined();
  });
});

describe("serve: each channel's settings as its role reads them, the process-wide ones once", () => {
  const required = { "output-source": "/o.ogg", "input-sink": "/i.ogg" };

  test("prefixed flags reach their channel only; process-wide flags reach both", () => {
    const s = resolveServeSettings({
      flags: { ...required, "output-format": "ogg", "input-format": "wire", "output-socket-mode": "0600", "input-once": true, metrics: "9100", "log-level": "debug" },
      env: {},
    });
    expect(s.output).toMatchObject({ source: "/o.ogg", format: "ogg", "socket-mode": 0o600, socket: "/var/run/audio_output.sock" });
    expect(s.input).toMatchObject({ sink: "/i.ogg", format: "wire", "socket-mode": 0o660, once: true, socket: "/var/run/audio_input.sock" });
    for (const settings of [s, s.output, s.input]) {
      expect(settings.metrics).toEqual({ host: "127.0.0.1", port: 9100 });
      expect(settings["log-level"]).toBe("debug");
    }
    // Each channel has its role's options and no others.
    expect(ROLE_OPTIONS["output serve"].filter((o) => !(o in s.output))).toEqual(["monitor", "http-allow-host", "log-max-bytes"]);
    expect(Object.keys(s.output).filter((o) => !(ROLE_OPTIONS["output serve"] as readonly string[]).includes(o))).toEqual([]);
    expect(ROLE_OPTIONS["input serve"].filter((o) => !(o in s.input))).toEqual(["monitor", "http-allow-host", "log-max-bytes"]);
    expect(Object.keys(s.input).filter((o) => !(ROLE_OPTIONS["input serve"] as readonly string[]).includes(o))).toEqual([]);
  });

  test("environment: the channel's own variables; process-wide ones as every role reads them", () => {
    const s = resolveServeSettings({
      flags: {},
      env: {
        AUDIO_AGENT_OUTPUT_SOURCE: "/env/o.ogg",
        AUDIO_AGENT_OUTPUT_QUEUE_FRAMES: "42",
        AUDIO_AGENT_INPUT_SINK: "/env/i.ogg",
        AUDIO_AGENT_INPUT_FORMAT: "ogg",
        JETKVM_AUDIO_OUTPUT_SOCKET: "/run/o.sock",
        JETKVM_AUDIO_INPUT_SOCKET: "/run/i.sock",
        AUDIO_AGENT_STATS_INTERVAL: "5",
        // Unprefixed channel variables would be ambiguous in serve: not read.
        AUDIO_AGENT_FORMAT: "ogg",
        AUDIO_AGENT_SOCKET_MODE: "0600",
      },
    });
    expect(s.output).toMatchObject({ source: "/env/o.ogg", "queue-frames": 42, socket: "/run/o.sock", format: "wire", "socket-mode": 0o660 });
    expect(s.input).toMatchObject({ sink: "/env/i.ogg", format: "ogg", socket: "/run/i.sock", "socket-mode": 0o660 });
    expect(s["stats-interval"]).toBe(5);
  });

  test("the file's sections apply to their channel, the top level to both; flags > env > section > top", () => {
    const f = file({
      "socket-buffers": "64k",
      format: "ogg",
      monitor: 8080,
      output: { socket: "/file/o.sock", "queue-frames": 9 },
      input: { socket: "/file/i.sock", "socket-buffers": "96k", "log-format": "json" },
    });
    const s = resolveServeSettings({ flags: { ...required, "output-queue-frames": "11" }, env: { JETKVM_AUDIO_INPUT_SOCKET: "/env/i.sock" }, file: f });
    expect(s.output).toMatchObject({ socket: "/file/o.sock", "queue-frames": 11, "socket-buffers": 64 * 1024, format: "ogg" });
    expect(s.input).toMatchObject({ socket: "/env/i.sock", "socket-buffers": 96 * 1024, format: "ogg" });
    // A process-wide setting one section gives applies to the process.
    expect(s["log-format"]).toBe("json");
    expect(s.output["log-format"]).toBe("json");
    expect(s.monitor).toEqual({ host: "127.0.0.1", port: 8080 });
  });

  test("a process-wide setting the two sections give differently is refused, naming both keys", () => {
    const f = file({ output: { metrics: 9100 }, input: { metrics: 9101 } });
    expect(resolveError(() => resolveServeSettings({ flags: required, env: {}, file: f }))).toBe(
      'config /etc/test.json: "output.metrics" and "input.metrics" differ, and serve runs both channels in one process: give "metrics" once, at the top level',
    );
    // The same value twice is no conflict.
    const same = file({ output: { metrics: 9100 }, input: { metrics: "127.0.0.1:9100" } });
    expect(resolveServeSettings({ flags: required, env: {}, file: same }).metrics).toEqual({ host: "127.0.0.1", port: 9100 });
  });

  test("errors name the prefixed flag or variable", () => {
    expect(resolveError(() => resolveServeSettings({ flags: { ...required, "output-format": "mp3" }, env: {} }))).toBe(
      '--output-format "mp3" is not allowed: wire, ogg',
    );
    expect(resolveError(() => resolveServeSettings({ flags: required, env: { AUDIO_AGENT_INPUT_PAGE_MS: "0" } }))).toBe(
      'environment AUDIO_AGENT_INPUT_PAGE_MS="0" is not allowed: an integer 1..10000',
    );
    expect(resolveError(() => resolveServeSettings({ flags: { "output-source": "x" }, env: {} }))).toBe(
      `serve: --input-sink is required (${OPTIONS.sink.allowed})`,
    );
    expect(resolveError(() => resolveServeSettings({ flags: { "input-sink": "x" }, env: {} }))).toBe(
      `serve: --output-source is required (${OPTIONS.source.allowed})`,
    );
    expect("source" in resolveServeSettings({ flags: {}, env: {} }, false).output).toBe(false);
  });

  test("the process-wide options are read by both channel roles", () => {
    for (const option of PROCESS_OPTIONS) {
      expect(ROLE_OPTIONS["output serve"]).toContain(option);
      expect(ROLE_OPTIONS["input serve"]).toContain(option);
    }
  });
});

describe("resolveSettings errors name the source, the value and what is allowed", () => {
  test("a bad flag", () => {
    const message = resolveError(() => resolveSettings("output serve", { flags: { source: "x", "queue-frames": "0" }, env: {} }));
    expect(message).toBe('--queue-frames "0" is not allowed: an integer 1..100000');
  });

  test("--count: the largest value accepted is the one the message names as allowed", () => {
    const count = (value: string) => resolveSettings("output recv", { flags: { sink: "x", count: value }, env: {} }).count;
    expect(count("9007199254740991")).toBe(Number.MAX_SAFE_INTEGER);
    const message = resolveError(() => count("9007199254740992"));
    expect(message.startsWith('--count "9007199254740992" is not allowed: an integer 1..')).toBe(true);
    const largest = message.slice(message.indexOf("1..") + 3).split(" ")[0]!;
    expect(largest).toBe("9007199254740991");
  });

  test("text of a fraction is refused where an integer is allowed, also where Number() would round it to one", () => {
    const cases: [string, string, Record<string, string>, string][] = [
      ["output serve", "queue-frames", { source: "x" }, "5.0000000000000001"],
      ["output recv", "count", { sink: "x" }, "9007199254740990.5"],
      ["input serve", "sink-pipe-bytes", { sink: "x" }, "4096.0000000000001"],
      ["input send", "sample-rate", { source: "x" }, "48000.000000000001"],
      ["input send", "channels", { source: "x" }, "1.0000000000000001"],
    ];
    for (const [role, option, required, text] of cases) {
      const allowed = OPTIONS[option as keyof typeof OPTIONS].allowed;
      const viaFlag = () => resolveSettings(role as "output serve", { flags: { ...required, [option]: text }, env: {} });
      expect(resolveError(viaFlag)).toBe(`--${option} "${text}" is not allowed: ${allowed}`);
      const variable = `AUDIO_AGENT_${option.toUpperCase().replaceAll("-", "_")}`;
      const viaEnv = () => resolveSettings(role as "output serve", { flags: required, env: { [variable]: text } });
      expect(resolveError(viaEnv)).toBe(`environment ${variable}="${text}" is not allowed: ${allowed}`);
      expect(fileError(JSON.stringify({ [option]: text }))).toBe(`config /etc/bad.json: "${option}": "${text}" is not allowed: ${allowed}`);
    }
    // A whole number written with a fraction of zeros is that number.
    expect(resolveSettings("output serve", { flags: { source: "x", "queue-frames": "5.00" }, env: {} })["queue-frames"]).toBe(5);
  });

  test("what is allowed, as --help and the messages say it, is what each option takes: its ends, and nothing past them, by flag, environment and file", () => {
    type Case = { taken: string[]; refused: string[] };
    /** The values at the ends of what `allowed` says, and one past each. */
    const cases = (allowed: string): Case | undefined => {
      let m: RegExpExecArray | null;
      if ((m = /^an integer (\d+)\.\.(\d+)$/.exec(allowed))) {
        const [low, high] = [BigInt(m[1]!), BigInt(m[2]!)];
        return { taken: [`${low}`, `${high}`], refused: [`${low - 1n}`, `${high + 1n}`] };
      }
      if ((m = /^0 or bytes (\d+)\.\.(\d+)$/.exec(allowed))) return { taken: ["0", m[1]!, m[2]!], refused: [`${+m[1]! - 1}`, `${+m[2]! + 1}`] };
      if ((m = /^0 \(off\) or seconds ([\d.]+)\.\.(\d+)$/.exec(allowed))) return { taken: ["0", m[1]!, m[2]!], refused: [`${+m[1]! / 2}`, `${+m[2]! + 1}`] };
      if ((m = /^seconds, ([\d.]+) or more/.exec(allowed))) return { taken: [m[1]!], refused: [`${+m[1]! / 2}`] };
      if ((m = /^default, high-load, or bytes (\d+)\.\.(\d+)/.exec(allowed))) return { taken: ["default", "high-load", m[1]!, m[2]!], refused: [`${+m[1]! - 1}`, `${+m[2]! + 1}`] };
      if (/^octal 000\.\.777/.test(allowed)) return { taken: ["000", "777", "0777"], refused: ["0800", "1000"] };
      if ((m = /^([\w-]+(?:, [\w-]+)+)$/.exec(allowed))) {
        const listed = m[1]!.split(", ");
        // A list of numbers (channels, sample rates): none below or above it either.
        const numbers = listed.every((item) => /^\d+$/.test(item)) ? ["0", `${Math.max(...listed.map(Number)) + 1}`] : [];
        return { taken: listed, refused: ["other", ...numbers] };
      }
      return undefined;
    };
    const named = Object.keys(OPTIONS).filter((option) => cases(OPTIONS[option as keyof typeof OPTIONS].allowed) !== undefined);
    // Every option but the paths, the listen addresses and the host names, whose forms are tested on their own.
    expect(Object.keys(OPTIONS).filter((option) => !named.includes(option))).toEqual(["socket", "source", "sink", "metrics", "monitor", "http-allow-host"]);
    for (const option of named) {
      const spec = OPTIONS[option as keyof typeof OPTIONS];
      const { taken, refused } = cases(spec.allowed)!;
      const role = (Object.keys(ROLE_OPTIONS) as (keyof typeof ROLE_OPTIONS)[]).find((r) => (ROLE_OPTIONS[r] as readonly string[]).includes(option))!;
      const required = role === "output serve" || role === "input send" ? { source: "x" } : { sink: "x" };
      const variable = option === "socket" ? "" : `AUDIO_AGENT_${option.toUpperCase().replaceAll("-", "_")}`;
      const ways = {
        flag: (text: string) => (resolveSettings(role, { flags: { ...required, [option]: text }, env: {} }) as Record<string, unknown>)[option],
        environment: (text: string) => (resolveSettings(role, { flags: required, env: { [variable]: text } }) as Record<string, unknown>)[option],
        file: (text: string) => (resolveSettings(role, { flags: required, env: {}, file: file({ [option]: text }) }) as Record<string, unknown>)[option],
      };
      for (const [way, read] of Object.entries(ways)) {
        for (const text of taken) expect({ option, way, text, ok: (() => (read(text), true))() }).toEqual({ option, way, text, ok: true });
        for (const text of refused) {
          let message = "";
          try {
            read(text);
          } catch (e) {
            message = (e as Error).message;
          }
          expect({ option, way, text, message }).toEqual({ option, way, text, message: expect.stringContaining(`"${text}" is not allowed: ${spec.allowed}`) });
        }
      }
    }
  });

  test("a bad environment value", () => {
    const message = resolveError(() =>
      resolveSettings("input send", { flags: { source: "x" }, env: { AUDIO_AGENT_HEARTBEAT_MS: "fast" } }),
    );
    expect(message).toBe('environment AUDIO_AGENT_HEARTBEAT_MS="fast" is not allowed: an integer 10..60000');
  });

  test("a number of 400 digits (Infinity) is refused; a socket path too long for sun_path names its flag", () => {
    const infinite = "1" + "0".repeat(400);
    expect(resolveError(() => resolveSettings("output recv", { flags: { sink: "x", "connect-timeout": infinite }, env: {} }))).toBe(
      // Shown cut short: a message tells the value, it need not hold all of it.
      `--connect-timeout "${infinite.slice(0, 199)}... is not allowed: seconds, 0.001 or more (a decimal: 2.5)`,
    );
    const long = `/tmp/${"é".repeat(50)}.sock`; // 5 + 100 + 5 bytes: sun_path counts bytes, not characters
    expect(resolveError(() => resolveSettings("output recv", { flags: { sink: "x", socket: long }, env: {} }))).toBe(`--socket "${long}" is not allowed: a file's path of at most 107 bytes`);
    expect(resolveError(() => resolveSettings("input send", { flags: { source: "x" }, env: { JETKVM_AUDIO_INPUT_SOCKET: long } }))).toBe(
      `environment JETKVM_AUDIO_INPUT_SOCKET="${long}" is not allowed: a file's path of at most 107 bytes`,
    );
  });

  test("a server's socket directory leaves room in sun_path for the hidden name it binds first; a client's need not", () => {
    // 107 bytes in a directory of 105 (multibyte: bytes are counted, not characters).
    const deep = `/${"é".repeat(51)}dd/s`;
    expect(Buffer.byteLength(deep)).toBe(107);
    const refused = `is not allowed: a server's socket directory is at most 104 bytes (room in sun_path for the hidden name it is bound by first)`;
    expect(resolveError(() => resolveSettings("output serve", { flags: { source: "x", socket: deep }, env: {} }))).toBe(`--socket "${deep}" ${refused}`);
    expect(resolveError(() => resolveServeSettings({ flags: { "output-source": "x", "input-sink": "y", "input-socket": deep }, env: {} }))).toBe(`--input-socket "${deep}" ${refused}`);
    expect(resolveError(() => resolveSettings("input serve", { flags: { sink: "x" }, env: { JETKVM_AUDIO_INPUT_SOCKET: deep } }))).toBe(
      `--socket (from environment JETKVM_AUDIO_INPUT_SOCKET) "${deep}" ${refused}`,
    );
    // A client connects to the path itself (a Go server binds it directly).
    expect(resolveSettings("output recv", { flags: { sink: "x", socket: deep }, env: {} }).socket).toBe(deep);
    expect(resolveSettings("input send", { flags: { source: "x", socket: deep }, env: {} }).socket).toBe(deep);
    // A directory of 104 is a server's longest.
    const longest = `/${"d".repeat(103)}/ab`;
    expect(resolveSettings("input serve", { flags: { sink: "x", socket: longest }, env: {} }).socket).toBe(longest);
  });

  test("--loop with stdin as the source, which can be read only once, from flags, environment or file", () => {
    expect(resolveError(() => resolveSettings("output serve", { flags: { source: "-", loop: true }, env: {} }))).toBe(
      "output serve: --loop replays a file; --source - (stdin) can be read only once",
    );
    // Named by its flag, and by where it came from when not from the flag.
    expect(resolveError(() => resolveSettings("input send", { flags: { source: "-" }, env: { AUDIO_AGENT_LOOP: "yes" } }))).toBe(
      "input send: --loop (from environment AUDIO_AGENT_LOOP) replays a file; --source - (stdin) can be read only once",
    );
    expect(resolveError(() => resolveServeSettings({ flags: { "input-sink": "x" }, env: {}, file: file({ loop: true, output: { source: "-" } }) }))).toBe(
      'serve: --output-loop (from config "loop") replays a file; --output-source (from config "output.source") - (stdin) can be read only once',
    );
    expect(resolveSettings("output serve", { flags: { source: "a.opus", loop: true }, env: {} }).loop).toBe(true);
  });

  test("a socket buffer size outside 32k..256k", () => {
    for (const bad of ["16k", "300k", "1000", "lots"]) {
      const message = resolveError(() => resolveSettings("output recv", { flags: { sink: "x", "socket-buffers": bad }, env: {} }));
      expect(message).toContain(`--socket-buffers "${bad}"`);
      expect(message).toContain("32768..262144");
    }
  });

  test("a missing required setting, unless requireAll is off (config print)", () => {
    expect(resolveError(() => resolveSettings("output serve", { flags: {}, env: {} }))).toBe(
      `output serve: --source is required (${OPTIONS.source.allowed})`,
    );
    expect(resolveError(() => resolveSettings("input serve", { flags: {}, env: {} }))).toContain("--sink is required");
    const partial = resolveSettings("output serve", { flags: {}, env: {} }, false);
    expect("source" in partial).toBe(false);
    expect(partial["queue-frames"]).toBe(500);
  });
});

// --help and config print show the defaults from the same table the roles read, so a default changed
// there changes every one of them alike: this holds each to the value published (--help, and README.md where it names one).
test("every option's default, per channel where they differ, is the documented one; the others have none", () => {
  const documented = {
    socket: { output: "/var/run/audio_output.sock", input: "/var/run/audio_input.sock" },
    format: "wire", realtime: false, loop: false, lenient: false, append: false, once: false,
    "socket-mode": 0o660, "queue-frames": 500, drop: "oldest", "write-deadline-ms": 50, "max-latency-ms": 100, "stuck-frames": 250,
    "pre-skip": 312, "page-ms": 100, "sink-pipe-bytes": 8192, "heartbeat-ms": 1000, "ack-timeout-ms": 3000,
    "socket-buffers": "default", adaptive: "on", "adaptive-threshold": 10, "adaptive-window-ms": 5000, "adaptive-calm-ms": 30000,
    "stats-interval": 60, "log-level": "info", "log-format": "text",
  } as Record<string, unknown>;
  for (const channel of ["output", "input"] as const) {
    const defaults = Object.fromEntries((Object.keys(OPTIONS) as OptionName[]).flatMap((option) => (defaultOf(option, channel) === undefined ? [] : [[option, defaultOf(option, channel)]])));
    const expected = Object.fromEntries(Object.entries(documented).map(([option, value]) => [option, option === "socket" ? (value as Record<string, string>)[channel] : value]));
    expect({ channel, defaults }).toEqual({ channel, defaults: expected });
  }
  // Required, or unset unless given (derived from the source, or off).
  for (const option of ["source", "sink", "count", "connect-timeout", "sample-rate", "channels", "frame-size", "metrics", "monitor", "http-allow-host", "log-max-bytes"] as const) expect({ option, value: defaultOf(option) }).toEqual({ option, value: undefined });
});

/** A value each option allows. */
const ALLOWED_VALUE: Record<OptionName, unknown> = {
  socket: "/run/x.sock", source: "/x", sink: "/x", format: "ogg", realtime: true, loop: true, lenient: true, count: 5, append: true, once: true,
  "connect-timeout": 2, "socket-mode": "0600", "queue-frames": 9, drop: "newest", "write-deadline-ms": 20, "max-latency-ms": 200, "stuck-frames": 9,
  "pre-skip": 0, "page-ms": 20, "sink-pipe-bytes": 0, "heartbeat-ms": 500, "ack-timeout-ms": 500, "sample-rate": 16000, channels: 1, "frame-size": 480,
  "socket-buffers": "64k", adaptive: "off", "adaptive-threshold": 5, "adaptive-window-ms": 500, "adaptive-calm-ms": 500, metrics: 9100, monitor: 9101,
  "stats-interval": 5, "http-allow-host": "a.example", "log-level": "warn", "log-format": "json", "log-max-bytes": 65536,
};

describe("parseConfigFile", () => {
  test("a valid file: top level and sections, values converted", () => {
    const f = file({ "socket-mode": "0600", "socket-buffers": "64k", output: { "queue-frames": 50 }, input: { realtime: "on" } });
    expect(f.path).toBe("/etc/test.json");
    expect(f.top).toEqual({ "socket-mode": 0o600, "socket-buffers": 65536 });
    expect(f.sections.output).toEqual({ "queue-frames": 50 });
    expect(f.sections.input).toEqual({ realtime: true });
    expect(file({})).toMatchObject({ top: {}, sections: {} });
  });

  test("an unknown top-level key names the key and the allowed keys", () => {
    const message = fileError(`{"queue-frames": 10, "bogus": 1}`);
    expect(message).toStartWith('config /etc/bad.json: unknown key "bogus"; allowed in the top level or an output/input section: ');
    expect(message).toContain("queue-frames");
    expect(message).toContain("socket-buffers");
  });

  test("a key every JavaScript object has (toString, constructor, __proto__) is an unknown key, not an option", () => {
    for (const [json, keyPath] of [
      [`{"toString": 1}`, "toString"],
      [`{"constructor": 1}`, "constructor"],
      [`{"__proto__": 1}`, "__proto__"],
      [`{"output": {"hasOwnProperty": 1}}`, "output.hasOwnProperty"],
    ] as const) {
      expect(fileError(json)).toStartWith(`config /etc/bad.json: unknown key "${keyPath}"; allowed in `);
    }
  });

  test("a key given twice is found among keys only: a value spelling a key, or holding quotes, backslashes, braces, brackets and commas, is none", () => {
    // Each value, read as a key or ended at an escaped quote, would make "sink" come twice.
    const values = { sink: "sink", source: 'a "b", "sink": {[', format: "wire" };
    const text = `{"sink": "sink", "source": "a \\"b\\", \\"sink\\": {[", "output": {"sink": "d\\\\", "socket": "}", "format": "wire"}, "format": "wire"}`;
    expect(JSON.parse(text)).toEqual({ ...values, output: { sink: "d\\", socket: "}", format: "wire" } });
    const f = parseConfigFile(text, "/etc/test.json");
    expect(f.top).toEqual(values);
    expect(f.sections.output).toEqual({ sink: "d\\", socket: "}", format: "wire" });
    // A key after such values is still seen, escaped or not, in its section.
    expect(fileError(`{"source": "a \\"}\\"", "output": {"sink": "\\\\", "s\\u0069nk": "x"}}`)).toStartWith('config /etc/bad.json: key "output.sink" is given twice (both on line 1)');
  });

  test("an unknown key in a section names the section path", () => {
    const message = fileError(`{"input": {"heartbeat-ms": 100, "heartbeat": 100}}`);
    expect(message).toStartWith('config /etc/bad.json: unknown key "input.heartbeat"; allowed in the "input" section: ');
    expect(message).toContain("heartbeat-ms");
  });

  // A section applies to its channel only: a key there that no role of the channel reads would never apply.
  test("a section's key that no role of its channel reads is refused, naming the roles that read it and where to give it", () => {
    expect(fileError(`{"output": {"queue-frames": 9, "heartbeat-ms": 100}}`)).toBe(
      'config /etc/bad.json: "output.heartbeat-ms" is read by no output role (input send reads it): give it in the "input" section or at the top level',
    );
    expect(fileError(`{"input": {"count": 100}}`)).toBe(
      'config /etc/bad.json: "input.count" is read by no input role (output recv reads it): give it in the "output" section or at the top level',
    );
    // Every option some role of the channel reads is taken in its section; every other one is refused.
    for (const channel of ["output", "input"] as const) {
      const read = new Set<string>(Object.entries(ROLE_OPTIONS).flatMap(([role, options]) => (role.startsWith(channel) ? options : [])));
      for (const [option, value] of Object.entries(ALLOWED_VALUE)) {
        const text = JSON.stringify({ [channel]: { [option]: value } });
        if (read.has(option)) expect({ option, section: file(JSON.parse(text)).sections[channel] }).toEqual({ option, section: { [option]: expect.anything() } });
        else expect(fileError(text)).toStartWith(`config /etc/bad.json: "${channel}.${option}" is read by no ${channel} role (`);
      }
    }
    // The top level is every role's: a key some role reads is taken there.
    expect(file({ "heartbeat-ms": 100, count: 5 }).top).toEqual({ "heartbeat-ms": 100, count: 5 });
    // An unknown key in a section lists what that section takes.
    const unknown = fileError(`{"output": {"heartbeat": 100}}`);
    expect(unknown).toStartWith('config /etc/bad.json: unknown key "output.heartbeat"; allowed in the "output" section: socket, source, sink, ');
    expect(unknown).not.toContain("heartbeat-ms");
  });

  test("a value of the wrong type names the key path, the value and what is allowed", () => {
    expect(fileError(`{"output": {"queue-frames": "many"}}`)).toBe(
      'config /etc/bad.json: "output.queue-frames": "many" is not allowed: an integer 1..100000',
    );
    expect(fileError(`{"realtime": "maybe"}`)).toBe('config /etc/bad.json: "realtime": "maybe" is not allowed: true, false');
    expect(fileError(`{"format": 3}`)).toBe('config /etc/bad.json: "format": 3 is not allowed: wire, ogg');
  });

  test("an out-of-range value names the range", () => {
    // --stats-interval: 0 is off; else at least a tenth of a second.
    for (const seconds of [0.05, -1, 86_401]) {
      expect(fileError(JSON.stringify({ "stats-interval": seconds }))).toBe(`config /etc/bad.json: "stats-interval": ${seconds} is not allowed: 0 (off) or seconds 0.1..86400`);
    }
    for (const seconds of [0, 0.1, 86_400]) expect(file({ "stats-interval": seconds }).top["stats-interval"]).toBe(seconds);
    // --connect-timeout: what is allowed says what the schema takes (1e3 is not a decimal).
    for (const seconds of [`"0.0001"`, `"1e3"`, "0"]) {
      expect(fileError(`{"connect-timeout": ${seconds}}`)).toBe(`config /etc/bad.json: "connect-timeout": ${seconds} is not allowed: seconds, 0.001 or more (a decimal: 2.5)`);
    }
    expect(file({ "connect-timeout": "0.001" }).top["connect-timeout"]).toBe(0.001);
    expect(fileError(`{"queue-frames": 100001}`)).toBe(
      'config /etc/bad.json: "queue-frames": 100001 is not allowed: an integer 1..100000',
    );
    expect(fileError(`{"queue-frames": 1.5}`)).toBe('config /etc/bad.json: "queue-frames": 1.5 is not allowed: an integer 1..100000');
    expect(fileError(`{"input": {"heartbeat-ms": 5}}`)).toBe(
      'config /etc/bad.json: "input.heartbeat-ms": 5 is not allowed: an integer 10..60000',
    );
    expect(fileError(`{"socket-buffers": 16384}`)).toBe(
      'config /etc/bad.json: "socket-buffers": 16384 is not allowed: default, high-load, or bytes 32768..262144 (32k..256k)',
    );
    expect(fileError(`{"metrics": "127.0.0.1:70000"}`)).toContain('"metrics": "127.0.0.1:70000" is not allowed: HOST:PORT, :PORT, PORT or off');
    expect(fileError(`{"socket-mode": "0999"}`)).toContain('"socket-mode": "0999" is not allowed: octal 000..777');
    // A number's digits are read as octal, as written: 400 is 0400, never decimal 400 (0620); 384 (decimal 0600) has an 8.
    expect(file({ "socket-mode": 400 }).top["socket-mode"]).toBe(0o400);
    expect(file({ "socket-mode": 660 }).top["socket-mode"]).toBe(0o660);
    // A JSON number has no leading zeros: 70 is 070, 0 is 000.
    expect([0, 7, 70].map((mode) => file({ "socket-mode": mode }).top["socket-mode"])).toEqual([0, 0o7, 0o70]);
    for (const bad of [384, 1000, -1, 6.5]) expect(fileError(JSON.stringify({ "socket-mode": bad }))).toContain(`"socket-mode": ${bad} is not allowed: octal 000..777`);
    // 1e400 is Infinity to JSON.parse: refused, where it was taken (and printed back as null), and named as written.
    expect(fileError(`{"connect-timeout": 1e400}`)).toBe('config /etc/bad.json: "connect-timeout": 1e400 is not allowed: seconds, 0.001 or more (a decimal: 2.5)');
    // A number past 2^53 is named as written, not as the double JSON.parse reads it (9007199254740992).
    expect(fileError(`{"output": {"max-latency-ms": 9007199254740993}}`)).toBe('config /etc/bad.json: "output.max-latency-ms": 9007199254740993 is not allowed: an integer 10..60000');
    expect(fileError(`{"input": {"heartbeat-ms": -1.50e1}}`)).toContain('"input.heartbeat-ms": -1.50e1 is not allowed');
    // A socket path sun_path cannot hold, refused before anything listens or connects.
    const long = `/run/${"a".repeat(98)}.sock`;
    expect(fileError(JSON.stringify({ output: { socket: long } }))).toBe(`config /etc/bad.json: "output.socket": "${long}" is not allowed: a file's path of at most 107 bytes`);
    expect(file({ socket: long.slice(1) }).top.socket).toBe(long.slice(1));
    // A trailing "/" names a directory, where no socket can be.
    expect(fileError(JSON.stringify({ input: { socket: "/run/in.sock/" } }))).toBe(`config /etc/bad.json: "input.socket": "/run/in.sock/" is not allowed: a file's path of at most 107 bytes`);
    // A Host header's port is 1..65535, as --metrics' own.
    for (const hosts of ["foo:99999", "foo:0", "a.example,[::1]:65536"]) {
      expect(fileError(JSON.stringify({ "http-allow-host": hosts }))).toBe(
        `config /etc/bad.json: "http-allow-host": ${JSON.stringify(hosts)} is not allowed: NAME[:PORT][,NAME[:PORT]...] (IPv6 in brackets, PORT 1..65535)`,
      );
    }
    expect(file({ "http-allow-host": "foo:65535, [::1]:1, bar" }).top["http-allow-host"]).toEqual(["foo:65535", "[::1]:1", "bar"]);
  });

  test("a value a megabyte long, or nested deeper than JSON.stringify can write, is shown cut short", () => {
    const long = "x".repeat(1024 * 1024);
    const cut = (text: string) => `${text.slice(0, 200)}...`;
    expect(fileError(JSON.stringify({ count: long }))).toBe(`config /etc/bad.json: "count": ${cut(JSON.stringify(long))} is not allowed: an integer 1..9007199254740991`);
    expect(fileError(JSON.stringify({ [long]: 1 }))).toStartWith(`config /etc/bad.json: unknown key ${cut(JSON.stringify(long))}; allowed in `);
    const deep = "[".repeat(500_000) + "]".repeat(500_000);
    expect(fileError(`{"output": ${deep}}`)).toBe(`config /etc/bad.json: "output" must be an object of settings, found ${cut(deep)}`);
    expect(fileError(`{"input": {"sink": ${deep}}}`)).toBe(`config /etc/bad.json: "input.sink": ${cut(deep)} is not allowed: a path or "-"`);
    // Short of the length, as JSON writes it.
    expect(fileError(`{"count": {"a": [1, null, {"b": "c"}]}}`)).toBe('config /etc/bad.json: "count": {"a":[1,null,{"b":"c"}]} is not allowed: an integer 1..9007199254740991');
    // A flag's or a variable's value too.
    expect(resolveError(() => resolveSettings("output serve", { flags: { source: "x", "queue-frames": long }, env: {} }))).toBe(
      `--queue-frames ${cut(JSON.stringify(long))} is not allowed: an integer 1..100000`,
    );
  });

  test("a section that is not an object", () => {
    expect(fileError(`{"output": 5}`)).toBe('config /etc/bad.json: "output" must be an object of settings, found 5');
    expect(fileError(`{"input": "str"}`)).toBe('config /etc/bad.json: "input" must be an object of settings, found "str"');
    expect(fileError(`{"input": null}`)).toBe('config /etc/bad.json: "input" must be an object of settings, found null');
  });

  test("an array section is refused as not an object", () => {
    expect(fileError(`{"input": []}`)).toBe('config /etc/bad.json: "input" must be an object of settings, found []');
  });

  test('an array section with items is "not an object", not an unknown key "input.0"', () => {
    expect(fileError(`{"input": [1]}`)).toBe('config /etc/bad.json: "input" must be an object of settings, found [1]');
  });

  test("hexadecimal or exponent text is not a number", () => {
    expect(fileError(`{"queue-frames": "0x10"}`)).toBe('config /etc/bad.json: "queue-frames": "0x10" is not allowed: an integer 1..100000');
    expect(fileError(`{"queue-frames": "1e3"}`)).toBe('config /etc/bad.json: "queue-frames": "1e3" is not allowed: an integer 1..100000');
  });

  test("a section inside a section is an unknown key", () => {
    expect(fileError(`{"output": {"input": {}}}`)).toStartWith('config /etc/bad.json: unknown key "output.input"');
  });

  test("a file that is not an object", () => {
    expect(fileError(`[1, 2]`)).toBe("config /etc/bad.json: expected a JSON object of settings, found an array");
    expect(fileError(`"text"`)).toBe('config /etc/bad.json: expected a JSON object of settings, found "text"');
    expect(fileError(`null`)).toBe("config /etc/bad.json: expected a JSON object of settings, found null");
    expect(fileError(`42`)).toBe("config /etc/bad.json: expected a JSON object of settings, found 42");
  });

  test("invalid JSON", () => {
    expect(fileError(`{"queue-frames": 5,`)).toStartWith("config /etc/bad.json: not valid JSON (");
    expect(fileError(``)).toStartWith("config /etc/bad.json: not valid JSON (");
  });

  test("invalid JSON is told with the line and column where it goes wrong (JSON.parse's own message gives neither)", () => {
    const at = (text: string) => / at line \d+, column \d+$/.exec(fileError(text))?.[0];
    // A comma missing between two keys: the second key, on line 4.
    expect(at(`{\n  "queue-frames": 5,\n  "log-level": "debug"\n  "drop": "oldest"\n}\n`)).toBe(" at line 4, column 3");
    // A comma after the last key: the brace that follows it.
    expect(at(`{\n  "queue-frames": 5,\n}\n`)).toBe(" at line 3, column 1");
    // A number with a leading zero: the digit after the 0.
    expect(at(`{\n  "queue-frames": 05\n}`)).toBe(" at line 2, column 20");
    // A raw tab inside a string; a bad escape; single quotes.
    expect(at(`{"drop": "old\test"}`)).toBe(" at line 1, column 14");
    expect(at(`{"drop": "old\\xest"}`)).toBe(" at line 1, column 15");
    expect(at(`{\n'drop': 1}`)).toBe(" at line 2, column 1");
    // Something after the object; the file ending inside it; nothing at all.
    expect(at(`{"drop": "oldest"}}`)).toBe(" at line 1, column 19");
    expect(at(`{"drop":`)).toBe(" at line 1, column 9");
    expect(at(``)).toBe(" at line 1, column 1");
    // Deep nesting is walked without recursion: the stray comma 100,000 levels in.
    expect(at(`${"[".repeat(100_000)},${"]".repeat(100_000)}`)).toBe(" at line 1, column 100001");
    // JSON.parse's words stay, before the place.
    expect(fileError(`{"drop": "oldest",}`)).toStartWith("config /etc/bad.json: not valid JSON (JSON Parse error: ");
  });

  test("the place counts a CRLF line end as one line, a tab and a non-ASCII character (one beyond U+FFFF too) as one column", () => {
    const at = (text: string) => / at line \d+, column \d+$/.exec(fileError(text))?.[0];
    expect(at(`{\r\n  "queue-frames": 5\r\n  "drop": "oldest"\r\n}\r\n`)).toBe(" at line 3, column 3");
    expect(at(`{\n\t"queue-frames": 5\n\t"drop": "oldest"}`)).toBe(" at line 3, column 2");
    expect(at(`{"sink": "café.wire" "drop": "oldest"}`)).toBe(" at line 1, column 22");
    expect(at(`{"sink": "🎵.wire" "drop": "oldest"}`)).toBe(" at line 1, column 19");
  });

  test("the walk that finds the place calls valid exactly the texts JSON.parse takes, over 20,000 generated and mutated texts", () => {
    // A fixed seed: a text found wrong is found again.
    let seed = 29;
    const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x80000000;
    const pick = <T>(items: readonly T[]) => items[Math.floor(random() * items.length)]!;
    // What JSON allows in every spelling the walk tells apart, and what it does not.
    const values = ["0", "-0", "-12.5", "1E+2", "1e5", "2.5e-3", "true", "false", "null", '""', '"a\\/b"', '"\\u00e9\\u00E9"', '"\\ud800"', '"\\"\\\\\\b\\f\\n\\r\\t"', '"é😀"', '"\u007f"'];
    const noise = ["01", "1.", ".5", "-", "1e", "+1", "0x1", "tru", "nul", "NaN", "'a'", '"\\x"', '"\\u12"', '"\\u12G4"', '"\t"', '"\u0000"', "\u00a0", "\ufeff", "\v", "\f", "[", "]", "{", "}", ":", ",", '"', "\\", "/", "é"];
    const spaces = ["", " ", "\t", "\n", "\r\n", "\r"];
    const value = (depth: number): string => {
      const r = random();
      if (depth > 4 || r < 0.4) return pick(values);
      const n = Math.floor(random() * 4);
      const items = Array.from({ length: n }, () => (r < 0.7 ? "" : `${pick(['"a"', '"é"', '""'])}${pick(spaces)}:`) + pick(spaces) + value(depth + 1) + pick(spaces));
      return r < 0.7 ? `[${items.join(",")}]` : `{${items.join(",")}}`;
    };
    const mutated = (text: string) => {
      for (let k = Math.floor(random() * 3); k >= 0; k--) {
        const i = Math.floor(random() * (text.length + 1));
        const r = random();
        text = text.slice(0, i) + (r < 0.7 ? pick(noise) : "") + text.slice(r < 0.4 ? i : i + 1);
      }
      return text;
    };
    const parses = (text: string) => {
      try {
        JSON.parse(text);
        return true;
      } catch {
        return false;
      }
    };
    const wrong: string[] = [];
    let valid = 0;
    for (let n = 0; n < 20_000; n++) {
      const whole = pick(spaces) + value(0) + pick(spaces);
      const text = random() < 0.4 ? whole : mutated(whole);
      const ok = parses(text);
      if (ok) valid++;
      if (ok !== (walkJson(text).fault === undefined)) wrong.push(text);
    }
    expect(wrong.slice(0, 5)).toEqual([]);
    // Both kinds in numbers: neither answer alone passes.
    expect(valid).toBeGreaterThan(5000);
    expect(valid).toBeLessThan(15_000);
  });
});

describe("loadConfigFile", () => {
  test("an explicit file must exist; one that does is parsed", async () => {
    const t = tempDir("aac-");
    defer(t.cleanup);
    await expect(loadConfigFile(t.path("missing.json"))).rejects.toThrow(`config ${t.path("missing.json")}: no such file`);
    writeFileSync(t.path("ok.json"), `{"output": {"drop": "newest"}}`);
    const f = await loadConfigFile(t.path("ok.json"));
    expect(f?.sections.output).toEqual({ drop: "newest" });
    writeFileSync(t.path("bad.json"), `{"drop": "middle"}`);
    await expect(loadConfigFile(t.path("bad.json"))).rejects.toThrow(`config ${t.path("bad.json")}: "drop": "middle" is not allowed: oldest, newest`);
  });

  test("a directory given as the file is named as unreadable, not as missing; one at the default path is passed over", async () => {
    const t = tempDir("aac-");
    defer(t.cleanup);
    mkdirSync(t.path("conf.d"));
    await expect(loadConfigFile(t.path("conf.d"))).rejects.toThrow(`config ${t.path("conf.d")}: cannot be read (EISDIR)`);
    expect(await loadConfigFile(undefined, t.path("conf.d"))).toBeUndefined();
    expect(await loadConfigFile(undefined, t.path("absent.json"))).toBeUndefined();
    writeFileSync(t.path("default.json"), `{"drop": "newest"}`);
    expect((await loadConfigFile(undefined, t.path("default.json")))?.top).toEqual({ drop: "newest" });
    // A default path that cannot be reached is told, not passed over.
    await expect(loadConfigFile(undefined, t.path("default.json/x"))).rejects.toThrow(`config ${t.path("default.json/x")}: cannot be read (ENOTDIR)`);
  });

  test("a FIFO at the default path is passed over, not read (start-up would wait for a writer)", async () => {
    const t = tempDir("aac-");
    defer(t.cleanup);
    expect(Bun.spawnSync(["mkfifo", t.path("fifo.json")]).exitCode).toBe(0);
    expect(await loadConfigFile(undefined, t.path("fifo.json"))).toBeUndefined();
  });
});
