/**
 * packaging/audio-agent.service: the settings the daemon relies on are there,
 * and where systemd-analyze exists the unit verifies without a warning.
 */
import { describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { DEVICE_RUNTIME_ENV } from "../../src/bench/device-runtime.ts";
import { useCleanup } from "../support/cleanup.ts";
import { AGENT, agentEnv, REPO, run } from "../support/processes.ts";
import { notifyReceiver } from "../support/notify-receiver.ts";
import { socketDir } from "../support/temp.ts";

const UNIT = join(REPO, "packaging/audio-agent.service");
const text = await Bun.file(UNIT).text();

/** section -> key -> values (a key may repeat). */
function parseUnit(source: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of source.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = new Map();
      sections.set(section[1], current);
      continue;
    }
    const eq = line.indexOf("=");
    if (!current || eq < 0) throw new Error(`not a unit file line: ${raw}`);
    const key = line.slice(0, eq).trim();
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return sections;
}

const unit = parseUnit(text);
const service = unit.get("Service")!;
const value = (key: string) => service.get(key)?.at(-1);

/** The variables Environment= lines set: each line's assignments, quoted or not, in order. */
function environment(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of service.get("Environment") ?? []) {
    for (const [, quoted, bare] of line.matchAll(/"([^"]*)"|(\S+)/g)) {
      const assignment = quoted ?? bare;
      const eq = assignment.indexOf("=");
      env[assignment.slice(0, eq)] = assignment.slice(eq + 1);
    }
  }
  return env;
}

const defer = useCleanup();

describe("audio-agent.service", () => {
  test("runs /usr/bin/audio-agent, restarts on failure, stops with TERM", () => {
    expect([...unit.keys()]).toEqual(["Unit", "Service", "Install"]);
    expect(value("ExecStart")).toStartWith("/usr/bin/audio-agent ");
    expect(value("Restart")).toBe("on-failure");
    // A mistake in the settings (exit 2) is not retried.
    expect(value("RestartPreventExitStatus")).toBe("2");
    expect(value("KillSignal")).toBe("SIGTERM");
    // The agent says READY=1 once it listens, and pings a watchdog (test/roles/service-notify.test.ts).
    expect(value("Type")).toBe("notify");
    expect(value("WatchdogSec")).toBe("30s");
    expect(unit.get("Install")!.get("WantedBy")).toEqual(["multi-user.target"]);
  });

  test("the socket lives in its RuntimeDirectory, the only writable path", () => {
    expect(value("RuntimeDirectory")).toBe("audio-agent");
    expect(value("ProtectSystem")).toBe("strict");
    expect(value("ReadWritePaths")).toBe("/run/audio-agent");
    expect(environment().AUDIO_AGENT_ARGS).toContain("--socket /run/audio-agent/");
  });

  test("Bun runs as the benchmark measures it (device-runtime.ts), and the settings file, read after, can change that", () => {
    expect(environment()).toMatchObject(DEVICE_RUNTIME_ENV);
    // Environment= lines come before EnvironmentFile= (whose values win in systemd anyway), as a reader expects.
    const keys = [...service.keys()];
    expect(keys.indexOf("Environment")).toBeLessThan(keys.indexOf("EnvironmentFile"));
  });

  test("hardening fits a daemon that owns a Unix socket and may serve /metrics", () => {
    for (const [key, want] of [
      ["NoNewPrivileges", "yes"],
      ["ProtectHome", "yes"],
      ["PrivateTmp", "yes"],
      ["LockPersonality", "yes"],
      ["RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6 AF_NETLINK"],
      ["CapabilityBoundingSet", ""],
    ]) {
      expect(`${key}=${value(key)}`).toBe(`${key}=${want}`);
    }
    // JavaScriptCore's JIT needs W+X memory: this one would kill the agent at start.
    expect(service.has("MemoryDenyWriteExecute")).toBe(false);
  });

  test("the settings file examples (packaging/README.md, the unit's header) read the same to sh and to systemd: quoted when they hold a blank, no comment after a value", async () => {
    const readme = await Bun.file(join(REPO, "packaging/README.md")).text();
    const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]);
    const header = text.split("\n").filter((line) => line.startsWith("#   ")).map((line) => line.slice(4));
    const assignments = [...blocks.flatMap((block) => block.split("\n")), ...header].filter((line) => /^[A-Z][A-Z0-9_]*=/.test(line));
    expect(assignments.length).toBeGreaterThan(5);
    for (const line of assignments) expect(line).toMatch(/^[A-Z][A-Z0-9_]*=("[^"$`\\]*"|[^\s"'$`#\\]*)$/);
  });

  test.skipIf(!Bun.which("systemd-analyze"))("systemd-analyze verify reports nothing", async () => {
    // verify wants ExecStart's binary to exist: point it at something executable.
    const { dir } = socketDir(defer, "aa-unit-");
    const copy = join(dir, "audio-agent.service");
    writeFileSync(copy, text.replaceAll("/usr/bin/audio-agent", "/bin/true"));
    const { code, stdout, stderr } = await run(["systemd-analyze", "verify", copy], { timeoutMs: 30_000 });
    expect(stdout + stderr).toBe("");
    expect(code).toBe(0);
  });
});

describe("audio-agent.service and what the agent really calls", () => {
  test("--metrics on a wildcard address, systemd's notify socket: every address family the agent opens a socket of is one RestrictAddressFamilies= allows", async () => {
    const strace = Bun.which("strace");
    if (!strace) throw new Error("strace is missing: this test traces the agent's socket() calls (apt-get install strace)");
    const t = socketDir(defer, "aaunit-");
    const trace = t.path("socket.trace");
    const notify = notifyReceiver(t.path("notify"));
    defer(() => notify.close());
    // The agent's start-up with /metrics on a wildcard address (its Host check lists the machine's addresses), traced.
    const traced = await run(
      [strace, "-f", "-qq", "-e", "trace=socket", "-o", trace, ...AGENT, "output", "serve", "--socket", t.path("p.sock"), "--source", "/dev/null", "--format", "wire", "--metrics", "0.0.0.0:0"],
      { env: agentEnv({ NOTIFY_SOCKET: notify.name }), timeoutMs: 20_000 },
    );
    expect(traced.stderr).toContain("http listening");
    expect(notify.messages()).toContain("READY=1");
    const families = new Set([...(await Bun.file(trace).text()).matchAll(/socket\((AF_[A-Z0-9]+)/g)].map((m) => m[1]!));
    const allowed = value("RestrictAddressFamilies")!.split(/\s+/);
    // A family outside the list fails with EAFNOSUPPORT under the unit (getifaddrs needs AF_NETLINK): the agent exits 1 and restarts every second.
    expect([...families].filter((f) => !allowed.includes(f))).toEqual([]);
  }, 30_000);
});
