/**
 * --log-max-bytes on a spawned agent whose log is a file it appends to, as
 * the init script starts it (`2>>FILE`): the file is kept under the bound,
 * its older lines in FILE.1, none cut; any other log is told it is not.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { useCleanup } from "../support/cleanup.ts";
import { canUnshare, smallDisk } from "../support/machine.ts";
import { TONE } from "../support/opus-fixtures.ts";
import { AGENT, agentEnv, run, start, stopAgents } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

/** A text log line of the agent's: its time, level and component. */
const LOG_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO |WARN ) [a-z-]+: /;

/** The agent run with `args`, its output redirected to `log` as `redirect` says (a shell's, of "$log"). */
function agentLoggingTo(log: string, args: string[], redirect: string, env: Record<string, string> = {}) {
  defer(stopAgents);
  return start(["sh", "-c", `log=$1; shift; exec "$@" ${redirect}`, "sh", log, ...AGENT, ...args], { env: agentEnv(env) });
}

/** `output serve` of a looping tone, a stats line every 0.1 s, its stderr appended to `log` (`2>>`), or written over (`2>`). */
function serveLoggingTo(log: string, dir: string, extra: string[], redirect = "2>>", env: Record<string, string> = {}) {
  const args = ["output", "serve", "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--socket", `${dir}/o.sock`, "--stats-interval", "0.1", ...extra];
  return agentLoggingTo(log, args, `${redirect}"$log"`, env);
}

describe("--log-max-bytes", () => {
  test("a log appended to: past 4096 bytes it is copied to FILE.1 and emptied, again and again; each file under the bound by a line at most, every line whole, FILE.1's all older than FILE's", async () => {
    const t = socketDir(defer, "aa-log-");
    const log = t.path("agent.log");
    const agent = serveLoggingTo(log, t.path(""), ["--log-max-bytes", "4096"]);
    // FILE.1 as it is now, "" before the first turn: each turn renames a whole copy over it.
    const olderNow = () => (existsSync(`${log}.1`) ? readFileSync(`${log}.1`, "utf8") : "");
    let firstOlder = "";
    await until(() => (firstOlder ||= olderNow()).length > 0, "a first turn", 20_000);
    // A second turn puts later lines in FILE.1.
    await until(() => ![firstOlder, ""].includes(olderNow()), "a second turn", 20_000);
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    const [older, newer] = [readFileSync(`${log}.1`, "utf8"), readFileSync(log, "utf8")];
    // FILE is empty when the stopped line itself took it to the bound: that line then ends FILE.1.
    const texts = newer === "" ? [older] : [older, newer];
    for (const text of texts) {
      expect(text.endsWith("\n")).toBe(true);
      const lines = text.slice(0, -1).split("\n");
      for (const line of lines) expect(line).toMatch(LOG_LINE);
      // Past the bound by the last line at most.
      expect(Buffer.byteLength(text) - Buffer.byteLength(lines.at(-1)!) - 1).toBeLessThan(4096);
    }
    expect(Buffer.byteLength(older)).toBeGreaterThanOrEqual(4096);
    expect(texts.at(-1)!.trimEnd().split("\n").at(-1)).toContain("output-server: stopped signal=SIGTERM");
    // FILE.1's last line is older than FILE's first: the turn lost and reordered nothing between them.
    const time = (line: string) => Date.parse(line.slice(0, 24));
    if (newer !== "") expect(time(older.trimEnd().split("\n").at(-1)!)).toBeLessThanOrEqual(time(newer.split("\n")[0]!));
  }, 60_000);

  test("a copy that fails at every turn (FILE.1 a directory) is told at every turn, the first line of each emptied file, however often the log turns: the notice is never held back by the rate limit", async () => {
    const t = socketDir(defer, "aa-log-");
    const log = t.path("agent.log");
    mkdirSync(`${log}.1`);
    // Both channels' stats lines, stdout and stderr appended to the file as the init script has it: a turn about every 0.6 s.
    const args = ["serve", "--output-source", TONE, "--output-format", "ogg", "--output-realtime", "--output-loop", "--output-socket", t.path("o.sock"), "--input-socket", t.path("i.sock"), "--input-sink", "/dev/null", "--stats-interval", "0.1", "--log-max-bytes", "4096"];
    const agent = agentLoggingTo(log, args, '>>"$log" 2>&1');
    // Past 10 turns, the most the rate limit lets through in 10 s of one kind of line.
    let [turns, size] = [0, 0];
    await until(() => {
      const now = existsSync(log) ? statSync(log).size : 0;
      if (now < size) turns++;
      size = now;
      return turns > 10;
    }, "11 turns of the log", 30_000, 5);
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    const text = readFileSync(log, "utf8");
    expect(text.slice(24, text.indexOf("\n"))).toBe(` WARN  agent: cannot copy the log to ${log}.1 (EISDIR): the lines before this one are lost`);
    expect(text).not.toContain("more \"cannot copy");
  }, 60_000);

  test.skipIf(!canUnshare("--mount"))("a log on a disk another writer fills: the agent serves on, its log turned early for room (the newest lines kept), every line whole; once the disk has room again, lines go on", async () => {
    const t = socketDir(defer, "aa-log-");
    mkdirSync(t.path("disk"));
    const disk = await smallDisk(t.path("disk"), 64 * 1024);
    defer(disk.release);
    defer(stopAgents);
    const args = ["output", "serve", "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--socket", t.path("o.sock"), "--stats-interval", "0.1", "--log-max-bytes", "16384"];
    const agent = start(disk.run(["sh", "-c", 'log=$1; shift; exec "$@" 2>>"$log"', "sh", t.path("disk/agent.log"), ...AGENT, ...args]), { env: agentEnv() });
    const log = disk.path("agent.log");
    const text = () => (existsSync(log) ? readFileSync(log, "utf8") : "");
    await until(() => text().length > 1000, "the first lines", 20_000);
    // Full part-way through the log's page: the stats line that would cross its end fits in part, and the next not at all.
    disk.fill();
    await until(() => text().includes("no room for the log's next line"), "the log turned for room", 20_000);
    rmSync(disk.path("filler"));
    const turned = text().length;
    await until(() => text().length > turned + 2000 || existsSync(`${log}.1`), "lines again", 20_000);
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    const lines = text();
    expect(lines.endsWith("\n")).toBe(true);
    for (const line of lines.slice(0, -1).split("\n")) {
      expect(line).toMatch(LOG_LINE);
      expect(line.match(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /g)).toHaveLength(1);
    }
    expect(lines.trimEnd().split("\n").at(-1)).toContain("output-server: stopped signal=SIGTERM");
  }, 60_000);

  test.skipIf(!canUnshare("--mount"))("a run that fails with its log on a full disk (exit 1): the log is turned for room and its failure line is the emptied file's, after the notice, before the process exits", async () => {
    const t = socketDir(defer, "aa-log-");
    mkdirSync(t.path("disk"));
    const disk = await smallDisk(t.path("disk"), 64 * 1024);
    defer(disk.release);
    const log = disk.path("agent.log");
    // A page's worth: no room left in its last page for part of a line.
    writeFileSync(log, Array.from({ length: 256 }, (_, i) => `older line ${String(i).padStart(4, "0")}\n`).join(""));
    disk.fill();
    const args = ["output", "serve", "--source", t.path("missing.ogg"), "--format", "ogg", "--socket", t.path("o.sock"), "--log-max-bytes", "16384"];
    const done = await run(disk.run(["sh", "-c", 'log=$1; shift; exec "$@" 2>>"$log"', "sh", t.path("disk/agent.log"), ...AGENT, ...args]), { env: agentEnv() });
    expect(done.code).toBe(1);
    const lines = readFileSync(log, "utf8").trimEnd().split("\n");
    expect(lines[0]).toMatch(/ agent: no room for the log's next line, so it is emptied at 4096 bytes, below its bound of 16384; cannot copy the log to .*\.1 \(ENOSPC\)/);
    expect(lines.at(-1)).toBe(`audio-agent: --source ${t.path("missing.ogg")}: no such file (ENOENT)`);
  }, 60_000);

  test("from the environment too (AUDIO_AGENT_LOG_MAX_BYTES), and a log written over rather than appended to (2>FILE) is told it is not rotated: emptied, its writes would go on where they were", async () => {
    const t = socketDir(defer, "aa-log-");
    const log = t.path("agent.log");
    const agent = serveLoggingTo(log, t.path(""), [], "2>", { AUDIO_AGENT_LOG_MAX_BYTES: "4096" });
    await until(() => existsSync(log) && readFileSync(log, "utf8").includes("stats seconds="), "the agent's stats lines");
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    expect(readFileSync(log, "utf8")).toContain(
      "WARN  agent: --log-max-bytes (from environment AUDIO_AGENT_LOG_MAX_BYTES): the log (stderr) is a file not opened for appending (2>FILE, where 2>>FILE appends); it is not rotated\n",
    );
    expect(existsSync(`${log}.1`)).toBe(false);
  }, 30_000);

  test("a log that is a socket (journald's; here the test's) is told it is not rotated; the agent serves on", async () => {
    const t = socketDir(defer, "aa-log-");
    defer(stopAgents);
    const agent = start([...AGENT, "output", "serve", "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--socket", t.path("o.sock"), "--log-max-bytes", "65536"], { env: agentEnv() });
    await agent.waitForStderr("listening socket=");
    expect(agent.stderr).toContain("WARN  agent: --log-max-bytes: the log (stderr) is a socket; it is not rotated\n");
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
  }, 30_000);

  test("without --log-max-bytes a log that cannot be rotated is told nothing of rotation", async () => {
    const t = socketDir(defer, "aa-log-");
    defer(stopAgents);
    const agent = start([...AGENT, "output", "serve", "--source", TONE, "--format", "ogg", "--realtime", "--loop", "--socket", t.path("o.sock")], { env: agentEnv() });
    await agent.waitForStderr("listening socket=");
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
    expect(agent.stderr).toContain("output-server: listening socket=");
    expect(agent.stderr).not.toContain("log-max-bytes");
    expect(agent.stderr).not.toContain("WARN ");
  }, 30_000);

  test("a size under 4096 is refused at start, exit 2, naming the value and what is allowed", async () => {
    const t = socketDir(defer, "aa-log-");
    const agent = start([...AGENT, "output", "serve", "--source", TONE, "--socket", t.path("o.sock"), "--log-max-bytes", "100"], { env: agentEnv() });
    const { code, stderr } = await agent.done;
    expect(code).toBe(2);
    expect(stderr.trim().split("\n")).toEqual([expect.stringContaining('--log-max-bytes "100"')]);
    expect(stderr).toContain("an integer 4096..67108864");
  }, 30_000);
});
