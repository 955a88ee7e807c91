import { describe, expect, test } from "bun:test";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { runCli } from "../../src/cli/run.ts";
import { OPTIONS } from "../../src/config.ts";
import { useCleanup } from "../support/cleanup.ts";
import { makeFifo, writeIntoFifo } from "../support/fifo.ts";
import { AGENT, agentEnv, run, runAgent, spawnAgent, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

function setup() {
  const t = socketDir(defer, "aacc-");
  defer(() => stopAgents());
  const write = (name: string, text: string) => {
    writeFileSync(t.path(name), text);
    return t.path(name);
  };
  return { ...t, write };
}

/**
 * The same command line run in this process (runCli, as main.ts calls it): much cheaper than a
 * process, used for the many message cases; exit codes are also checked on real processes below.
 */
async function cli(argv: string[], env: Record<string, string | undefined> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const code = await runCli(argv, { out: (t) => (stdout += t), err: (t) => (stderr += t), env });
  return { code, stdout, stderr };
}

const GOOD = JSON.stringify({
  "queue-frames": 100,
  "log-level": "warn",
  output: { "socket-buffers": "192k", "socket-mode": "0640" },
  input: { "heartbeat-ms": 250, "queue-frames": 64 },
});

describe("config check", () => {
  test("a valid file: exit 0 and the number of settings", async () => {
    const { write, dir } = setup();
    const path = write("good.json", GOOD);
    const r = await runAgent(["config", "check", path], { cwd: dir, env: agentEnv() });
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe(`${path}: ok (6 settings)\n`);
    expect(r.code).toBe(0);
  });

  test("a valid file whose name holds a newline: one line, the newline shown as \\u000a as an error line shows it", async () => {
    const { write, dir } = setup();
    const path = write("good\n.json", GOOD);
    const r = await runAgent(["config", "check", path], { cwd: dir, env: agentEnv() });
    expect(r.stdout).toBe(`${path.replace("\n", "\\u000a")}: ok (6 settings)\n`);
    expect(r.code).toBe(0);
  });

  test("an invalid file: exit 2 naming the key path, the value and what is allowed", async () => {
    const { write, dir } = setup();
    const cases: [string, string][] = [
      [`{"input": {"heartbeat-ms": 5}}`, '"input.heartbeat-ms": 5 is not allowed: an integer 10..60000'],
      [`{"output": {"bogus": true}}`, 'unknown key "output.bogus"; allowed in the "output" section: socket, '],
      [`{"bogus": true}`, 'unknown key "bogus"; allowed in the top level or an output/input section: socket, '],
      [`{"output": {"queue-frame": 3}}`, 'unknown key "output.queue-frame"; did you mean "queue-frames"? allowed in the "output" section: socket, '],
      [`{"drop": 7}`, '"drop": 7 is not allowed: oldest, newest'],
      [`[]`, "expected a JSON object of settings, found an array"],
      [`{"drop":`, "not valid JSON ("],
      // Valid JSON, but more than a config file may hold.
      [`{}${" ".repeat(1024 * 1024)}`, "1048578 bytes is more than a config file may hold (at most 1048576, 1 MiB)"],
    ];
    const paths = cases.map(([text], i) => write(`bad${i}.json`, text));
    const results = [];
    for (const path of paths) results.push(await cli(["config", "check", path]));
    // And once as a real process: the exit code and the one line on stderr.
    const real = await runAgent(["config", "check", paths[0]], { cwd: dir, env: agentEnv() });
    expect(real).toEqual(results[0]);
    for (const [i, [, expected]] of cases.entries()) {
      const path = paths[i];
      const r = results[i];
      expect(r.stdout).toBe("");
      expect(r.stderr).toStartWith(`audio-agent: config ${path}: `);
      expect(r.stderr).toContain(expected);
      expect(r.stderr.trim().split("\n").length).toBe(1);
      expect(r.code).toBe(2);
    }
  });

  test("a value nested 100,000 deep (200 KB, well under the 1 MiB limit): exit 2, one line naming the file and the key, as any bad value", async () => {
    const { write, dir } = setup();
    const depth = 100_000;
    const nested = "[".repeat(depth) + "]".repeat(depth);
    // A known key given a value it does not take, and an unknown key inside a section.
    const cases: [string, string][] = [
      [write("deep-value.json", `{"count": ${nested}}`), '"count": '],
      [write("deep-unknown.json", `{"output": {"bogus": ${nested}}}`), 'unknown key "output.bogus"'],
    ];
    for (const [path, expected] of cases) {
      const r = await runAgent(["config", "check", path], { cwd: dir, env: agentEnv() });
      expect(r.stdout).toBe("");
      expect(r.stderr.trim().split("\n").length).toBe(1);
      expect(r.stderr).toStartWith(`audio-agent: config ${path}: `);
      expect(r.stderr).toContain(expected);
      expect(r.code).toBe(2);
    }
  });

  test("a device or a pipe with no end (/dev/zero): read no further than a config file may hold, exit 2 saying so", async () => {
    const r = await cli(["config", "check", "/dev/zero"]);
    expect(r.stderr).toBe("audio-agent: config /dev/zero: more than a config file may hold (at most 1048576, 1 MiB)\n");
    expect(r.code).toBe(2);
  });

  test("at most 1 MiB: a file or a pipe of exactly 1048576 bytes is read, one byte more exits 2 with one line naming it and the limit", async () => {
    const { write, path, dir } = setup();
    const MIB = 1024 * 1024;
    // Valid JSON at any size: one setting, then spaces up to the size. Read whole, the setting counts.
    const padded = (bytes: number) => {
      const json = JSON.stringify({ "page-ms": 250 });
      return json + " ".repeat(bytes - json.length);
    };
    const fits = write("fits.json", padded(MIB));
    const over = write("over.json", padded(MIB + 1));
    // A regular file: its size decides, before a byte is read.
    const [fitsFile, overFile] = await Promise.all([fits, over].map((file) => runAgent(["config", "check", file], { cwd: dir, env: agentEnv() })));
    expect(fitsFile).toEqual({ code: 0, stdout: `${fits}: ok (1 setting)\n`, stderr: "" });
    expect(overFile).toEqual({ code: 2, stdout: "", stderr: `audio-agent: config ${over}: 1048577 bytes is more than a config file may hold (at most 1048576, 1 MiB)\n` });

    // A pipe has no size to look at: it is read up to one byte past the limit. The padding is at
    // the end, so a read that stopped at the limit would leave valid JSON and pass it.
    // A named pipe (FIFO) written by a process, and a process's stdout as `--config <(cat FILE)` gives it.
    const fromFifo = async (name: string, file: string) => {
      const fifo = makeFifo(path(name));
      const [writer, read] = await Promise.all([writeIntoFifo(fifo, file), runAgent(["config", "check", fifo], { cwd: dir, env: agentEnv() })]);
      return { fifo, writer, read };
    };
    const fromProcess = (file: string) => run(["bash", "-c", 'exec "$@" --config <(cat "$0")', file, ...AGENT, "config", "print", "input", "serve"], { cwd: dir, env: agentEnv() });
    const fitsFifo = await fromFifo("fits.fifo", fits);
    expect(fitsFifo.read).toEqual({ code: 0, stdout: `${fitsFifo.fifo}: ok (1 setting)\n`, stderr: "" });
    expect(fitsFifo.writer).toBe(0); // all of it taken
    const overFifo = await fromFifo("over.fifo", over);
    expect(overFifo.read).toEqual({ code: 2, stdout: "", stderr: `audio-agent: config ${overFifo.fifo}: more than a config file may hold (at most 1048576, 1 MiB)\n` });
    const [fitsOut, overOut] = await Promise.all([fromProcess(fits), fromProcess(over)]);
    expect(fitsOut.stderr).toBe("");
    expect(fitsOut.code).toBe(0);
    expect(JSON.parse(fitsOut.stdout)["page-ms"]).toBe(250);
    expect({ code: overOut.code, stdout: overOut.stdout }).toEqual({ code: 2, stdout: "" });
    expect(overOut.stderr).toMatch(/^audio-agent: config \/dev\/fd\/\d+: more than a config file may hold \(at most 1048576, 1 MiB\)\n$/);
  });

  // RFC 8259 lets a JSON parser ignore a byte order mark, which some editors put first; JSON.parse
  // refuses it, naming a character no terminal shows.
  test("a byte order mark before the JSON is not part of it: the file reads as without it, its log-format too", async () => {
    const { write, path, dir } = setup();
    const bom = "\uFEFF";
    const file = write("bom.json", `${bom}{"log-format": "json", "page-ms": 250}`);
    expect(await cli(["config", "check", file])).toEqual({ code: 0, stdout: `${file}: ok (2 settings)\n`, stderr: "" });
    const printed = await cli(["config", "print", "input", "serve", "--config", file]);
    expect(printed.code, printed.stderr).toBe(0);
    expect(JSON.parse(printed.stdout)).toMatchObject({ "log-format": "json", "page-ms": 250 });
    // A run refused for a flag, before the file is read, writes its line in the format the file asks for.
    const refused = await runAgent(["input", "serve", "--socket", path("i.sock"), "--sink", path("x.wire"), "--bogus", "--config", file], { cwd: dir, env: agentEnv() });
    expect(refused.code).toBe(2);
    expect(JSON.parse(refused.stderr)).toMatchObject({ level: 60, exit_code: 2, msg: "input serve: unknown option --bogus (see audio-agent input serve --help)" });
    expect(existsSync(path("x.wire"))).toBe(false);
  });

  // JSON.parse keeps a key's last value: the one before it, which the operator may be reading, did nothing.
  test("a key given twice in one object (top level, a section, a key with an escape) exits 2 naming it and both lines, in config check and a role; the same key in two sections is fine", async () => {
    const { write, path, dir } = setup();
    const top = write("top.json", `{\n  "queue-frames": 250,\n  "page-ms": 250,\n  "queue-frames": 100\n}`);
    const topLine = `audio-agent: config ${top}: key "queue-frames" is given twice (lines 2 and 4); JSON keeps only the last, so the other would do nothing: give it once\n`;
    expect(await cli(["config", "check", top])).toEqual({ code: 2, stdout: "", stderr: topLine });
    const role = await runAgent(["input", "serve", "--socket", path("i.sock"), "--sink", path("x.wire"), "--config", top], { cwd: dir, env: agentEnv() });
    expect(role).toEqual({ code: 2, stdout: "", stderr: topLine });
    expect(existsSync(path("x.wire"))).toBe(false);
    const section = write("section.json", `{"output": {"queue-frames": 1, "log-level": "info", "queue-frames": 2}}`);
    expect((await cli(["config", "check", section])).stderr).toBe(
      `audio-agent: config ${section}: key "output.queue-frames" is given twice (both on line 1); JSON keeps only the last, so the other would do nothing: give it once\n`,
    );
    const escaped = write("escaped.json", `{"page-ms": 250, "page\\u002dms": 500}`);
    expect((await cli(["config", "check", escaped])).stderr).toBe(
      `audio-agent: config ${escaped}: key "page-ms" is given twice (both on line 1); JSON keeps only the last, so the other would do nothing: give it once\n`,
    );
    const apart = write("apart.json", `{"output": {"queue-frames": 1}, "input": {"queue-frames": 2}, "log-level": "info"}`);
    expect(await cli(["config", "check", apart])).toEqual({ code: 0, stdout: `${apart}: ok (3 settings)\n`, stderr: "" });
  });

  // Read as UTF-8 with each bad byte turned into U+FFFD, a Latin-1 "café" names another file than the operator's.
  test("a byte that is not UTF-8 (a Latin-1 é in a path): exit 2 naming the byte, its offset and line; the role writes no sink", async () => {
    const { path, dir } = setup();
    const file = path("latin1.json");
    const sink = path("caf\u00e9.wire");
    // `"input": {\n"sink": "<dir>/caf` then 0xE9.
    const before = `{"input": {\n"sink": "${path("caf")}`;
    writeFileSync(file, Buffer.concat([Buffer.from(before), Buffer.from([0xe9]), Buffer.from(`.wire"}}`)]));
    const expected = `audio-agent: config ${file}: byte 0xe9 at offset ${Buffer.byteLength(before)} (line 2) is not UTF-8, which a JSON file is\n`;
    expect(await cli(["config", "check", file])).toEqual({ code: 2, stdout: "", stderr: expected });
    const role = await runAgent(["input", "serve", "--socket", path("i.sock"), "--config", file], { cwd: dir, env: agentEnv() });
    expect(role).toEqual({ code: 2, stdout: "", stderr: expected });
    expect(readdirSync(dir).filter((name) => name.startsWith("caf") || name.endsWith(".sock"))).toEqual([]);
    expect(existsSync(sink)).toBe(false);
    // A byte order mark first is three bytes of the file: the offset counts them.
    const marked = path("marked.json");
    writeFileSync(marked, Buffer.concat([Buffer.from("\uFEFF"), Buffer.from(before), Buffer.from([0xe9]), Buffer.from(`.wire"}}`)]));
    expect((await cli(["config", "check", marked])).stderr).toBe(
      `audio-agent: config ${marked}: byte 0xe9 at offset ${3 + Buffer.byteLength(before)} (line 2) is not UTF-8, which a JSON file is\n`,
    );
    // UTF-8 itself, U+FFFD included, is read as written.
    writeFileSync(file, JSON.stringify({ input: { sink: `${sink}\uFFFD` } }));
    expect(JSON.parse((await cli(["config", "print", "input", "serve", "--config", file])).stdout).sink).toBe(`${sink}\uFFFD`);
  });

  test("a file that is not JSON (a comma missing on line 3): exit 2, one line naming the line and column, in config check and a role", async () => {
    const { write, path, dir } = setup();
    const file = write("comma.json", `{\n  "input": {\n    "sink": "${path("got.wire")}"\n    "once": true\n  }\n}\n`);
    const checked = await runAgent(["config", "check", file], { cwd: dir, env: agentEnv() });
    expect(checked.code).toBe(2);
    expect(checked.stdout).toBe("");
    expect(checked.stderr).toMatch(new RegExp(`^audio-agent: config ${file}: not valid JSON \\(.+\\) at line 4, column 5\n$`));
    const role = await runAgent(["input", "serve", "--socket", path("i.sock"), "--config", file], { cwd: dir, env: agentEnv() });
    expect(role).toEqual({ code: 2, stdout: "", stderr: checked.stderr });
    expect(readdirSync(dir)).toEqual(["comma.json"]);
  });

  test("a missing file, or no file named: exit 2", async () => {
    const { path, dir } = setup();
    const missing = await cli(["config", "check", path("nope.json")]);
    const none = await cli(["config", "check"]);
    expect(missing.stderr).toBe(`audio-agent: config ${path("nope.json")}: no such file\n`);
    expect(missing.code).toBe(2);
    expect(none.stderr).toContain("config check takes one argument");
    expect(none.code).toBe(2);
  });
});

describe("config print", () => {
  test("metrics \"off\" in a channel's section beats the file's top level for that channel's roles, and is printed as off", async () => {
    const { write, dir } = setup();
    const path = write("off.json", JSON.stringify({ metrics: "9100", input: { metrics: "off" } }));
    const print = async (role: string) => {
      const r = await runAgent(["config", "print", ...role.split(" "), "--config", path], { cwd: dir, env: agentEnv() });
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout).metrics;
    };
    expect(await print("input serve")).toBe("off");
    expect(await print("input send")).toBe("off");
    expect(await print("output serve")).toBe("127.0.0.1:9100");
  });

  test("one role: the effective settings from file and environment, flags of other roles left out", async () => {
    const { write, dir } = setup();
    const path = write("good.json", GOOD);
    const env = agentEnv({ AUDIO_AGENT_QUEUE_FRAMES: "300", JETKVM_AUDIO_OUTPUT_SOCKET: "/run/test-out.sock" });
    const r = await runAgent(["config", "print", "output", "serve", "--config", path], { cwd: dir, env });
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.stdout);
    expect(printed).toMatchObject({
      socket: "/run/test-out.sock", // environment
      "queue-frames": 300, // environment beats the file's 100
      "log-level": "warn", // file top level
      "socket-buffers": 196608, // file output section, "192k"
      "socket-mode": "0640", // file output section, shown in octal
      drop: "oldest", // default
    });
    expect("heartbeat-ms" in printed).toBe(false);
    expect("source" in printed).toBe(false); // required at run time, not known here
  });

  test("an empty AUDIO_AGENT_CONFIG is unset, like every other variable: no file named \"\"", async () => {
    const env = agentEnv({ AUDIO_AGENT_CONFIG: "" });
    const printed = await cli(["config", "print", "output", "serve"], env);
    expect(printed.stderr).toBe("");
    expect(printed.code).toBe(0);
    // A role too: it fails on its own missing source, not on a config file.
    const run = await cli(["output", "serve", "--source", "/nonexistent/in.wire"], env);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("/nonexistent/in.wire");
    expect(run.stderr).not.toContain("config");
  });

  test("a top-level \"socket\", which the single roles take: config print shows every single role and serve as null, why on stderr; a serve run and config print serve refuse it", async () => {
    const { write } = setup();
    const path = write("top-socket.json", JSON.stringify({ socket: "/run/test-one.sock" }));
    const env = agentEnv({ AUDIO_AGENT_CONFIG: path });
    const serve = await cli(["serve", "--output-source", "/dev/null", "--input-sink", "/dev/null"], env);
    expect(serve.code).toBe(2);
    expect(serve.stderr).toContain("each channel needs a socket of its own");
    // serve on its own: what config print serve writes must run, so it is refused as the run refuses it.
    const serveOnly = await cli(["config", "print", "serve"], env);
    expect({ code: serveOnly.code, stdout: serveOnly.stdout }).toEqual({ code: 2, stdout: "" });
    expect(serveOnly.stderr.trim()).toBe(
      'audio-agent: --output-socket (from config "socket") and --input-socket (from config "socket") are both /run/test-one.sock: each channel needs a socket of its own (the config file\'s top-level "socket" applies to both channels: give it in "output" and "input")',
    );
    // Among all roles, as for sections that disagree on a process-wide option: the single roles
    // are shown, serve as null with the same refusal on stderr, never a serve that would not run.
    const r = await cli(["config", "print"], env);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe(`audio-agent: config print: serve not shown: ${serveOnly.stderr.replace(/^audio-agent: /, "")}`);
    const printed = JSON.parse(r.stdout);
    expect(printed["output serve"].socket).toBe("/run/test-one.sock");
    expect(printed.serve).toBe(null);
    // A single role named alone still takes it.
    const single = await cli(["config", "print", "input", "serve"], env);
    expect(single.code).toBe(0);
    expect(JSON.parse(single.stdout).socket).toBe("/run/test-one.sock");
  });

  test("all roles: the file path, each role with its channel's section", async () => {
    const { write } = setup();
    const path = write("good.json", GOOD);
    const env = agentEnv({ AUDIO_AGENT_CONFIG: path, JETKVM_AUDIO_INPUT_SOCKET: "/run/test-in.sock" });
    // No --config: AUDIO_AGENT_CONFIG names the file.
    const r = await cli(["config", "print"], env);
    expect(r.code).toBe(0);
    const printed = JSON.parse(r.stdout);
    expect(printed.config_file).toBe(path);
    expect(Object.keys(printed).sort()).toEqual(["config_file", "input send", "input serve", "output recv", "output serve", "serve"]);
    expect(printed["output serve"]).toMatchObject({ "queue-frames": 100, "socket-mode": "0640", socket: "/var/run/audio_output.sock" });
    expect(printed["input send"]).toMatchObject({ "queue-frames": 64, "heartbeat-ms": 250, socket: "/run/test-in.sock" });
    expect(printed["input serve"]).toMatchObject({ "socket-mode": "0660", socket: "/run/test-in.sock" });
    expect(printed["output recv"]).toMatchObject({ "socket-buffers": 196608, "log-level": "warn" });
    // serve: the process-wide settings at the top level, each channel's in its section.
    expect(printed.serve).toMatchObject({
      "log-level": "warn",
      output: { "queue-frames": 100, "socket-buffers": 196608, "socket-mode": "0640", socket: "/var/run/audio_output.sock" },
      input: { socket: "/run/test-in.sock", "socket-mode": "0660" },
    });
    expect("log-level" in printed.serve.output || "queue-frames" in printed.serve.input).toBe(false);
  });

  test("serve: what it prints passes config check and reads back as the same settings; sections that disagree exit 2", async () => {
    const { write, path } = setup();
    const file = write("serve.json", JSON.stringify({ metrics: "0.0.0.0:9100", output: { monitor: "[::1]:8080", "socket-mode": "0600" }, input: { format: "ogg" } }));
    const printed = await cli(["config", "print", "serve", "--config", file], { AUDIO_AGENT_INPUT_SOCKET_BUFFERS: "64k", AUDIO_AGENT_OUTPUT_SOURCE: "/o.ogg" });
    expect(printed.code, printed.stderr).toBe(0);
    const shown = JSON.parse(printed.stdout);
    expect(shown).toMatchObject({
      metrics: "0.0.0.0:9100",
      monitor: "[::1]:8080",
      output: { "socket-mode": "0600", source: "/o.ogg", format: "wire" },
      input: { "socket-buffers": 65536, format: "ogg", "socket-mode": "0660" },
    });
    const saved = path("printed.json");
    writeFileSync(saved, printed.stdout);
    expect(await cli(["config", "check", saved])).toMatchObject({ code: 0, stderr: "" });
    expect((await cli(["config", "print", "serve", "--config", saved])).stdout).toBe(printed.stdout);

    const split = write("split.json", JSON.stringify({ output: { monitor: 8080 }, input: { monitor: 8081 } }));
    const refused = await cli(["config", "print", "serve", "--config", split]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`"output.monitor" and "input.monitor" differ`);
    // The line a serve run refuses it with; config check takes it, a file two single roles run with.
    const run = await cli(["serve", "--output-source", "/dev/null", "--input-sink", path("in.wire"), "--config", split]);
    expect(run).toEqual({ code: 2, stdout: "", stderr: refused.stderr });
    expect(await cli(["config", "check", split])).toMatchObject({ code: 0, stderr: "" });
    // All roles: each single role is shown, serve as null, and why on stderr; the file is still one they run with.
    const all = await cli(["config", "print", "--config", split]);
    expect(all.code, all.stderr).toBe(0);
    const roles = JSON.parse(all.stdout);
    expect([roles["output serve"].monitor, roles["input serve"].monitor, roles.serve]).toEqual(["127.0.0.1:8080", "127.0.0.1:8081", null]);
    expect(all.stderr).toBe(`audio-agent: config print: serve not shown: ${refused.stderr.replace(/^audio-agent: /, "")}`);
  });

  test("without any file: defaults only, config_file null", async () => {
    // agentEnv() points AUDIO_AGENT_CONFIG at an empty file; here there is none at all.
    const { AUDIO_AGENT_CONFIG: _, ...env } = agentEnv();
    const r = await cli(["config", "print", "input", "serve"], env);
    const all = await cli(["config", "print"], env);
    expect(r.code).toBe(0);
    if (existsSync("/etc/audio-agent.json")) return; // the machine has a default file: nothing to compare
    expect(JSON.parse(r.stdout)).toEqual({
      socket: "/var/run/audio_input.sock",
      append: false,
      format: "wire",
      once: false,
      "socket-mode": "0660",
      "pre-skip": 312,
      "page-ms": 100,
      "sink-pipe-bytes": 8192,
      "socket-buffers": "default",
      "stats-interval": 60,
      "log-level": "info",
      "log-format": "text",
    });
    expect(JSON.parse(all.stdout).config_file).toBe(null);
  });

  test("what config print ROLE writes passes config check, and reads back as the same settings", async () => {
    const { write, path } = setup();
    const file = write("in.json", JSON.stringify({ metrics: "0.0.0.0:9100", output: { monitor: "[::1]:8080", "socket-mode": "0600" }, input: { monitor: 8081 } }));
    for (const role of ["output serve", "output recv", "input serve", "input send"]) {
      const printed = await cli(["config", "print", ...role.split(" "), "--config", file], { AUDIO_AGENT_SOCKET_BUFFERS: "64k" });
      expect(printed.code, printed.stderr).toBe(0);
      const saved = path(`${role.replace(" ", "-")}.json`);
      writeFileSync(saved, printed.stdout);
      const checked = await cli(["config", "check", saved]);
      expect({ role, code: checked.code, stderr: checked.stderr }).toEqual({ role, code: 0, stderr: "" });
      const again = await cli(["config", "print", ...role.split(" "), "--config", saved]);
      expect(again.stdout).toBe(printed.stdout);
    }
    const serve = JSON.parse((await cli(["config", "print", "output", "serve", "--config", file])).stdout);
    expect(serve).toMatchObject({ metrics: "0.0.0.0:9100", monitor: "[::1]:8080", "socket-mode": "0600" });
    expect(JSON.parse((await cli(["config", "print", "input", "send", "--config", file])).stdout).monitor).toBe("127.0.0.1:8081");
  });

  test("an unknown role or a bad file: exit 2", async () => {
    const { write } = setup();
    const bad = write("bad.json", `{"output": {"queue-frames": 0}}`);
    const role = await cli(["config", "print", "output", "play"]);
    const r = await cli(["config", "print", "--config", bad]);
    expect(role.stderr).toContain('config print: unknown role "output play"');
    expect(role.code).toBe(2);
    expect(r.stderr).toBe(`audio-agent: config ${bad}: "output.queue-frames": 0 is not allowed: an integer 1..100000\n`);
    expect(r.code).toBe(2);
  });
});

describe("what a command prints on stdout", () => {
  // `config print ROLE > file` on a full disk must not pass for a file written: the exit code says it was not.
  test("a stdout that cannot take it (a full disk: /dev/full): exit 1, one line naming stdout and why; config print, config check, --help, --version, bench --help", async () => {
    const { write } = setup();
    const good = write("good.json", GOOD);
    const full = openSync("/dev/full", "w");
    defer(() => closeSync(full));
    for (const args of [["config", "print", "output serve", "--config", good], ["config", "check", good], ["output", "serve", "--help"], ["--help"], ["--version"], ["bench", "--help"]]) {
      const r = await runAgent(args, { stdout: full });
      expect({ args, code: r.code, stderr: r.stderr }).toEqual({ args, code: 1, stderr: "audio-agent: stdout: cannot write: no space left on the device (ENOSPC)\n" });
    }
  });
});

describe("roles refuse bad configuration with exit 2 before doing anything", () => {
  test("--config with a bad value names the key, and no socket is created", async () => {
    const { write, path, dir } = setup();
    const bad = write("bad.json", `{"output": {"write-deadline-ms": -1}}`);
    const r = await runAgent(["output", "serve", "--socket", path("o.sock"), "--source", "/dev/null", "--config", bad], { cwd: dir, env: agentEnv() });
    expect(r.stderr).toBe(`audio-agent: config ${bad}: "output.write-deadline-ms": -1 is not allowed: an integer 0..60000\n`);
    expect(r.code).toBe(2);
    expect(existsSync(path("o.sock"))).toBe(false);
  });

  // A failure before the settings exist is written in the log format the command line asks for, which
  // may be in its config file: a FIFO there is read once, by the run; read again it would wait for a writer.
  test("--config a FIFO: refused content, a bad flag value or an unknown flag each exit 2 at once, the FIFO read at most once; its log-format applies", async () => {
    const { write, path, dir } = setup();
    const options = { cwd: dir, env: agentEnv(), timeoutMs: 30_000 };
    const fifo = makeFifo(path("config.fifo"));
    const viaFifo = async (file: string, args: string[]) => {
      const [writer, r] = await Promise.all([writeIntoFifo(fifo, file), runAgent([...args, "--config", fifo], options)]);
      expect(writer).toBe(0);
      return r;
    };
    const notJson = await viaFifo(write("not.json", "{"), ["config", "print", "input", "serve"]);
    expect({ code: notJson.code, stdout: notJson.stdout }).toEqual({ code: 2, stdout: "" });
    expect(notJson.stderr).toStartWith(`audio-agent: config ${fifo}: not valid JSON`);

    // A file that is read whole and well, then a flag's value refused: the failure line in the file's format.
    const badValue = await viaFifo(write("json.json", JSON.stringify({ "log-format": "json" })), ["output", "serve", "--socket", path("o.sock"), "--source", "/dev/null", "--write-deadline-ms", "-1"]);
    expect(badValue.code).toBe(2);
    expect(JSON.parse(badValue.stderr)).toMatchObject({ level: 60, exit_code: 2, msg: '--write-deadline-ms "-1" is not allowed: an integer 0..60000' });
    expect(existsSync(path("o.sock"))).toBe(false);

    // No writer at all: the bad flag is found before the file is read, and the file is not read for the format.
    const badFlag = await runAgent(["output", "serve", "--socket", path("o.sock"), "--source", "/dev/null", "--bogus", "--config", fifo], options);
    expect(badFlag.code).toBe(2);
    expect(badFlag.stderr).toStartWith("audio-agent: ");
    expect(badFlag.stderr).toContain("--bogus");
  });

  test("a bad flag value's failure line takes its format from the role's own section of the config file: input's for input roles, output's for output roles, either for serve", async () => {
    const { write, path } = setup();
    const bad = ["--stats-interval", "-1"];
    const message = '--stats-interval "-1" is not allowed';
    const failure = async (argv: string[]) => {
      const r = await cli(argv);
      expect({ code: r.code, stdout: r.stdout }).toEqual({ code: 2, stdout: "" });
      return r.stderr;
    };
    const inputJson = write("input-json.json", JSON.stringify({ input: { "log-format": "json" } }));
    const outputJson = write("output-json.json", JSON.stringify({ output: { "log-format": "json" } }));
    const inputServe = ["input", "serve", "--socket", path("i.sock"), "--sink", path("x.wire"), ...bad];
    const inputSend = ["input", "send", "--socket", path("i.sock"), "--source", path("x.wire"), ...bad];
    const outputServe = ["output", "serve", "--socket", path("o.sock"), "--source", "/dev/null", ...bad];
    const serve = ["serve", "--output-source", "/dev/null", "--input-sink", path("x.wire"), ...bad];
    for (const argv of [inputServe, inputSend]) {
      expect(JSON.parse(await failure([...argv, "--config", inputJson]))).toMatchObject({ level: 60, exit_code: 2 });
      expect(await failure([...argv, "--config", outputJson])).toStartWith(`audio-agent: ${message}`);
    }
    expect(JSON.parse(await failure([...outputServe, "--config", outputJson]))).toMatchObject({ level: 60, exit_code: 2 });
    expect(await failure([...outputServe, "--config", inputJson])).toStartWith(`audio-agent: ${message}`);
    for (const file of [inputJson, outputJson]) {
      expect(JSON.parse(await failure([...serve, "--config", file]))).toMatchObject({ level: 60, exit_code: 2 });
    }
    expect(existsSync(path("x.wire"))).toBe(false);
  });

  test("a source or sink at the socket's own path (as given, by another spelling, or from a file): exit 2 naming both; no socket, no file made", async () => {
    const { path, dir, write } = setup();
    const sock = path("a.sock");
    const other = path("b.sock");
    const fromFile = write("same.json", JSON.stringify({ input: { socket: sock, sink: sock } }));
    const cases: [string[], string][] = [
      [["input", "serve", "--socket", sock, "--sink", sock], `--sink ${sock} is the socket's path (--socket ${sock})`],
      [["output", "recv", "--connect-timeout", "0.1", "--socket", sock, "--sink", `${dir}/./a.sock`], `--sink ${dir}/./a.sock is the socket's path (--socket ${sock})`],
      [["output", "serve", "--socket", sock, "--source", sock], `--source ${sock} is the socket's path (--socket ${sock})`],
      [["input", "send", "--connect-timeout", "0.1", "--socket", "a.sock", "--source", sock], `--source ${sock} is the socket's path (--socket a.sock)`],
      [["input", "serve", "--config", fromFile], `--sink (from config "input.sink") ${sock} is the socket's path (--socket (from config "input.socket") ${sock})`],
      // serve: a channel's file at the other channel's socket.
      [["serve", "--output-socket", sock, "--input-socket", other, "--output-source", other, "--input-sink", path("x.wire")], `--output-source ${other} is the socket's path (--input-socket ${other})`],
      [["serve", "--output-socket", sock, "--input-socket", other, "--output-source", "/dev/null", "--input-sink", sock], `--input-sink ${sock} is the socket's path (--output-socket ${sock})`],
    ];
    for (const [args, named] of cases) {
      const r = await runAgent(args, { cwd: dir, env: agentEnv() });
      expect({ args, ...r }).toEqual({ args, code: 2, stdout: "", stderr: `audio-agent: ${named}: a source or sink is a file, a FIFO or "-", never a socket\n` });
      expect(readdirSync(dir)).toEqual(["same.json"]);
    }
  });

  test("the socket's path is its file: a FIFO of the socket's name in another directory is a sink; the socket's directory by a symbolic link is the socket's path", async () => {
    const { path, dir } = setup();
    const sock = path("a.sock");
    mkdirSync(path("sub"));
    const fifo = makeFifo(path("sub/a.sock"));
    symlinkSync(dir, path("here"));
    const print = (sink: string) => runAgent(["config", "print", "output recv"], { env: agentEnv({ JETKVM_AUDIO_OUTPUT_SOCKET: sock, AUDIO_AGENT_SINK: sink }) });
    const taken = await print(fifo);
    expect({ code: taken.code, stderr: taken.stderr }).toEqual({ code: 0, stderr: "" });
    expect(JSON.parse(taken.stdout)).toMatchObject({ socket: sock, sink: fifo });
    expect(await print(path("here/a.sock"))).toEqual({
      code: 2,
      stdout: "",
      stderr: `audio-agent: --sink (from environment AUDIO_AGENT_SINK) ${path("here/a.sock")} is the socket's path (--socket (from environment JETKVM_AUDIO_OUTPUT_SOCKET) ${sock}): a source or sink is a file, a FIFO or "-", never a socket\n`,
    });
  });

  test('--config "" names no file: exit 2 naming the flag, the value and what is allowed, as any empty value', async () => {
    const { path } = setup();
    const expected = 'audio-agent: --config "" is not allowed: a JSON file\n';
    const role = await cli(["input", "serve", "--socket", path("i.sock"), "--sink", path("x.wire"), "--config", ""]);
    expect(role).toEqual({ code: 2, stdout: "", stderr: expected });
    expect(await cli(["serve", "--output-source", "x", "--input-sink", path("x.wire"), "--config="])).toEqual({ code: 2, stdout: "", stderr: expected });
    expect(await cli(["config", "print", "output recv", "--config", ""])).toEqual({ code: 2, stdout: "", stderr: expected });
    expect(existsSync(path("x.wire"))).toBe(false);
  });

  test("a path with a NUL byte, which only a config file can give (JSON's \\u0000), names no file: config check and the role exit 2 naming the key", async () => {
    const { path, write } = setup();
    for (const [key, role] of [
      ["source", ["output", "serve"]],
      ["sink", ["output", "recv", "--connect-timeout", "0.1"]],
      ["socket", ["input", "serve", "--sink", path("x.wire")]],
    ] as const) {
      const value = path(`a\u0000b`);
      const f = write(`nul-${key}.json`, JSON.stringify({ [key]: value, ...(key === "socket" ? {} : { socket: path(`${key}.sock`) }) }));
      // The value as the log shows a NUL, which the message's shape does not depend on.
      const shape = (r: { code: number; stdout: string; stderr: string }) => ({ ...r, stderr: r.stderr.replace(/": ".*" is not allowed: /, '": VALUE is not allowed: ') });
      const message = `audio-agent: config ${f}: "${key}": VALUE is not allowed: ${OPTIONS[key].allowed}\n`;
      expect(shape(await cli(["config", "check", f]))).toEqual({ code: 2, stdout: "", stderr: message });
      expect(shape(await cli([...role, "--config", f]))).toEqual({ code: 2, stdout: "", stderr: message });
    }
    expect(existsSync(path("x.wire"))).toBe(false);
  });

  test("AUDIO_AGENT_CONFIG naming a missing file", async () => {
    const { path } = setup();
    const r = await cli(["input", "serve", "--socket", path("i.sock"), "--sink", path("x.wire")], { AUDIO_AGENT_CONFIG: path("gone.json") });
    expect(r.stderr).toBe(`audio-agent: config ${path("gone.json")}: no such file\n`);
    expect(r.code).toBe(2);
    expect(existsSync(path("x.wire"))).toBe(false);
  });

  test("--socket-buffers 16k names the range 32768..262144", async () => {
    const { path, dir } = setup();
    const r = await runAgent(["output", "recv", "--socket", path("o.sock"), "--sink", path("x.wire"), "--socket-buffers", "16k"], {
      cwd: dir,
      env: agentEnv(),
    });
    expect(r.stderr).toBe(
      'audio-agent: --socket-buffers "16k" is not allowed: default, high-load, or bytes 32768..262144 (32k..256k)\n',
    );
    expect(r.code).toBe(2);
  });

  test("--sink-pipe-bytes takes 0 or 4096..1048576: one byte outside either bound exits 2 naming the flag and the range; each bound serves", async () => {
    const { path, dir } = setup();
    const allowed = "0 or bytes 4096..1048576";
    const outside = ["4095", "1048577"];
    // Bounded: a server that took the value would serve on (and be killed: code -1).
    const options = { cwd: dir, env: agentEnv(), timeoutMs: 30_000 };
    const inputServe = (bytes: string) => runAgent(["input", "serve", "--socket", path(`${bytes}.sock`), "--sink", path(`${bytes}.wire`), "--sink-pipe-bytes", bytes], options);
    // serve names its channel's flag.
    const serve = (bytes: string) =>
      runAgent(
        ["serve", "--output-socket", path(`o${bytes}.sock`), "--output-source", "-", "--input-socket", path(`i${bytes}.sock`), "--input-sink", path(`i${bytes}.wire`), "--input-sink-pipe-bytes", bytes],
        options,
      );
    const [refused, refusedInServe] = await Promise.all([Promise.all(outside.map(inputServe)), Promise.all(outside.map(serve))]);
    outside.forEach((bytes, k) => {
      expect(refused[k]).toEqual({ code: 2, stdout: "", stderr: `audio-agent: --sink-pipe-bytes "${bytes}" is not allowed: ${allowed}\n` });
      expect(refusedInServe[k]).toEqual({ code: 2, stdout: "", stderr: `audio-agent: --input-sink-pipe-bytes "${bytes}" is not allowed: ${allowed}\n` });
      for (const made of [`${bytes}.sock`, `${bytes}.wire`, `o${bytes}.sock`, `i${bytes}.sock`, `i${bytes}.wire`]) expect({ made, exists: existsSync(path(made)) }).toEqual({ made, exists: false });
    });
    // 0 (the kernel's size) and each bound: past the flags the server listens, and a signal ends it cleanly.
    for (const bytes of ["0", "4096", "1048576"]) {
      const server = spawnAgent(["input", "serve", "--socket", path(`${bytes}.sock`), "--sink", path(`${bytes}.wire`), "--sink-pipe-bytes", bytes], { cwd: dir, env: agentEnv() });
      await server.waitForStderr("input-server: listening");
      server.kill("SIGTERM");
      expect({ bytes, code: await server.exited }).toEqual({ bytes, code: 0 });
    }
  });

  test("a bad environment value names the variable", async () => {
    const { path } = setup();
    const r = await cli(["input", "send", "--socket", path("i.sock"), "--source", "/dev/null"], { AUDIO_AGENT_ACK_TIMEOUT_MS: "5" });
    expect(r.stderr).toBe('audio-agent: environment AUDIO_AGENT_ACK_TIMEOUT_MS="5" is not allowed: an integer 10..600000\n');
    expect(r.code).toBe(2);
  });

  test("a flag does not excuse a bad file value: the file is checked whole, first", async () => {
    const { write, path } = setup();
    const bad = write("bad.json", `{"queue-frames": "lots"}`);
    const r = await cli(["output", "serve", "--socket", path("o.sock"), "--source", "/dev/null", "--queue-frames", "10", "--config", bad]);
    expect(r.stderr).toContain(`config ${bad}: "queue-frames": "lots" is not allowed`);
    expect(r.code).toBe(2);
  });
});

describe("flags win over the config file and the environment", () => {
  // README: "Precedence: flags > environment > file section > file top level > defaults", and a switch's
  // allowed values are "true, false" (as its variable takes them). A switch the service's config file turns
  // on (here "loop", which stdin cannot do) must be one a command line can turn off again, as
  // AUDIO_AGENT_LOOP=false can; today no flag can: "--loop=false" is "takes no value", "--no-loop" unknown.
  test("a switch the config file turns on is turned off by the command line (--loop=false): the run goes as without it", async () => {
    const { write, path, dir } = setup();
    const config = write("loop.json", `{"output": {"loop": true}}`);
    const args = ["output", "serve", "--source", "-", "--socket", path("o.sock"), "--config", config];
    // The environment can turn it off: stdin at its end ends the run, exit 0.
    const byEnv = await runAgent(args, { cwd: dir, env: agentEnv({ AUDIO_AGENT_LOOP: "false" }), timeoutMs: 30_000 });
    expect(byEnv.code, byEnv.stderr).toBe(0);
    // A flag must as well: flags win over the environment and the file.
    for (const off of ["--loop=false", "--no-loop"]) {
      const byFlag = await runAgent([...args, off], { cwd: dir, env: agentEnv({ AUDIO_AGENT_LOOP: "true" }), timeoutMs: 30_000 });
      expect(byFlag.stderr, off).toContain("output-server: stopped");
      expect(byFlag.code, `${off}: ${byFlag.stderr}`).toBe(0);
    }
  });

  test("serve turns a channel's switch off with --no-<channel>-NAME", async () => {
    const { write, path, dir } = setup();
    const config = write("loop.json", `{"output": {"loop": true}}`);
    const serve = ["serve", "--output-source", "-", "--input-sink", path("in.wire"), "--output-socket", path("o.sock"), "--input-socket", path("i.sock"), "--config", config, "--input-once"];
    // Without the flag the file's loop holds: stdin cannot be replayed, a usage error.
    const refused = await runAgent(serve, { cwd: dir, env: agentEnv(), timeoutMs: 30_000 });
    expect(refused.code, refused.stderr).toBe(2);
    expect(refused.stderr).toContain(`--output-loop (from config "output.loop") replays a file`);
    // --no-output-loop turns it off: the run starts, stdin's end ends the output channel, SIGTERM the rest.
    const agent = spawnAgent([...serve, "--no-output-loop"], { cwd: dir, env: agentEnv() });
    await agent.waitForStderr("output-server: stopped");
    agent.kill("SIGTERM");
    const done = await agent.done;
    expect(done.code, done.stderr).toBe(0);
  });
  // A switch's allowed values are "true, false" (--help): --NAME=true turns it on against the environment,
  // and of several switches of one flag the last on the command line is the one that holds.
  test("--loop=true turns a switch on against the environment, and the last of --loop / --no-loop wins", async () => {
    const { path, dir } = setup();
    const args = ["output", "serve", "--source", "-", "--socket", path("w.sock")];
    const refusal = "audio-agent: output serve: --loop replays a file; --source - (stdin) can be read only once\n";
    for (const on of [["--loop=true"], ["--no-loop", "--loop"], ["--loop=false", "--loop=true"], ["--no-loop", "--loop=true"]]) {
      const r = await runAgent([...args, ...on], { cwd: dir, env: agentEnv({ AUDIO_AGENT_LOOP: "false" }), timeoutMs: 30_000 });
      expect(r.code, `${on.join(" ")}: ${r.stderr}`).toBe(2);
      expect(r.stderr, on.join(" ")).toBe(refusal);
    }
    for (const off of [["--loop", "--no-loop"], ["--loop=true", "--loop=false"]]) {
      const r = await runAgent([...args, ...off], { cwd: dir, env: agentEnv({ AUDIO_AGENT_LOOP: "true" }), timeoutMs: 30_000 });
      expect(r.stderr, off.join(" ")).toContain("output-server: stopped");
      expect(r.code, `${off.join(" ")}: ${r.stderr}`).toBe(0);
    }
  });
});

describe("blanks around a value", () => {
  /** One value of every kind an option has (words, switches, a mode, numbers, sizes, addresses, names), as written plainly. */
  const PLAIN: Record<string, string> = {
    format: "ogg",
    realtime: "true",
    lenient: "on",
    "socket-mode": "0600",
    "queue-frames": "64",
    drop: "newest",
    "socket-buffers": "64k",
    adaptive: "off",
    metrics: "9100",
    monitor: "127.0.0.1:8080",
    "stats-interval": "2.5",
    "http-allow-host": "a.example:9000",
    "log-level": "warn",
    "log-format": "json",
  };
  /** The same values with blanks around them, as a shell script or a hand-written file may leave them. */
  const padded = Object.fromEntries(Object.entries(PLAIN).map(([key, value], i) => [key, i % 2 ? ` ${value}` : `${value} `]));
  const variables = (values: Record<string, string>) =>
    Object.fromEntries(Object.entries(values).map(([key, value]) => [`AUDIO_AGENT_${key.toUpperCase().replaceAll("-", "_")}`, value]));

  test("are not part of it, from the environment or a config file, whatever its kind; a path keeps them, as a file's name may", async () => {
    const { write, dir } = setup();
    const print = async (env: Record<string, string>, file?: Record<string, string>) => {
      const config = file ? ["--config", write(`c${Object.keys(env).length}.json`, JSON.stringify(file))] : [];
      const r = await runAgent(["config", "print", "output", "serve", ...config], { cwd: dir, env: agentEnv(env) });
      expect(r.stderr).toBe("");
      expect(r.code).toBe(0);
      return JSON.parse(r.stdout);
    };
    const paths = { JETKVM_AUDIO_OUTPUT_SOCKET: "/run/test-out.sock ", AUDIO_AGENT_SOURCE: " capture.ogg" };
    const plain = await print({ ...variables(PLAIN), ...paths });
    expect(plain).toMatchObject({ format: "ogg", "socket-mode": "0600", metrics: "127.0.0.1:9100", "socket-buffers": 65536, socket: "/run/test-out.sock ", source: " capture.ogg" });
    expect(await print({ ...variables(padded), ...paths })).toEqual(plain);
    expect(await print(paths, padded)).toEqual(plain);
    expect(await print(paths, { output: padded } as never)).toEqual(plain);
  });

  test("a role runs with them: the socket's mode, the log's format and the metrics' port from padded values, as from plain ones", async () => {
    const { write, path, dir } = setup();
    const fromEnv = spawnAgent(["output", "serve", "--socket", path("e.sock"), "--source", "-"], {
      cwd: dir,
      stdin: "pipe",
      env: agentEnv({ AUDIO_AGENT_SOCKET_MODE: "0600 ", AUDIO_AGENT_LOG_FORMAT: " json", AUDIO_AGENT_METRICS: " 0 " }),
    });
    const file = write("padded.json", JSON.stringify({ output: { "socket-mode": " 0640" }, "log-format": "json\t", metrics: "0 " }));
    const fromFile = spawnAgent(["output", "serve", "--socket", path("f.sock"), "--source", "-", "--config", file], { cwd: dir, stdin: "pipe" });
    for (const [agent, socket, mode] of [[fromEnv, "e.sock", 0o600], [fromFile, "f.sock", 0o640]] as const) {
      await agent.waitForStderr('"msg":"listening"');
      expect((statSync(path(socket)).mode & 0o777).toString(8)).toBe(mode.toString(8));
      expect(agent.stderr).toContain('"msg":"http listening"');
      agent.endStdin();
      const done = await agent.done;
      expect(done.code, done.stderr).toBe(0);
      // Every line JSON.
      for (const line of done.stderr.trimEnd().split("\n")) expect(JSON.parse(line)).toHaveProperty("msg");
    }
    // A run that fails before its settings exist writes its one line in the format asked for, blanks and all.
    const failed = await runAgent(["output", "serve", "--bogus"], { cwd: dir, env: agentEnv({ AUDIO_AGENT_LOG_FORMAT: "json " }) });
    expect(failed.code).toBe(2);
    expect(JSON.parse(failed.stderr)).toMatchObject({ level: 60, exit_code: 2 });
  });
});
