/**
 * `audio-agent bench`'s choice of plan: the flag, either way, wins over
 * AUDIO_AGENT_BENCH_QUICK, as every flag wins over the environment.
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bench, isQuick, parseOptions } from "../../src/bench/bench.ts";

describe("bench --quick against AUDIO_AGENT_BENCH_QUICK", () => {
  test("--no-quick (or --quick=false) runs the full plan though the variable asks for the quick one; no flag leaves it to the variable", () => {
    const quickOf = (argv: string[], variable: string | undefined) => {
      const parsed = parseOptions(argv);
      if (parsed instanceof Error) throw parsed;
      return isQuick(parsed.values.quick, variable);
    };
    expect(quickOf(["--no-quick"], "1")).toBe(false);
    expect(quickOf(["--quick=false"], "yes")).toBe(false);
    expect(quickOf(["--quick"], undefined)).toBe(true);
    expect(quickOf([], "1")).toBe(true);
    expect(quickOf([], undefined)).toBe(false);
    expect(quickOf([], "0")).toBe(false);
  });
});

describe("bench's flags", () => {
  // "--only=$LIST" with LIST empty would otherwise run every scenario, the longest run there is.
  test("an empty value (--only=, --out \"\", --binary=) is refused naming the flag and what is allowed, as every empty flag is", () => {
    const refused = (argv: string[]) => {
      const parsed = parseOptions(argv);
      return parsed instanceof Error ? parsed.message : "accepted";
    };
    expect(refused(["--only="])).toBe('bench: --only "" is not allowed: a comma-separated list of flood160, flood4096, live, soak, startup');
    expect(refused(["--out", ""])).toBe('bench: --out "" is not allowed: a directory');
    expect(refused(["--binary="])).toBe('bench: --binary "" is not allowed: a path');
    expect(refused(["--only", "live"])).toBe("accepted");
  });
});

/**
 * Runs `body` with a directory of its own for reports, AUDIO_AGENT_BENCH_QUICK=1 and stderr quiet
 * (bench's drivers, "false", never listen, so each scenario fails at once), and puts all three back.
 */
async function quickBenchQuietly(prefix: string, body: (dir: string) => Promise<void>): Promise<void> {
  const saved = process.env.AUDIO_AGENT_BENCH_QUICK;
  const write = process.stderr.write;
  const dir = mkdtempSync(join(tmpdir(), prefix));
  process.env.AUDIO_AGENT_BENCH_QUICK = "1";
  process.stderr.write = (() => true) as typeof process.stderr.write;
  try {
    await body(dir);
  } finally {
    process.stderr.write = write;
    if (saved === undefined) delete process.env.AUDIO_AGENT_BENCH_QUICK;
    else process.env.AUDIO_AGENT_BENCH_QUICK = saved;
    rmSync(dir, { recursive: true, force: true });
  }
}

describe("bench's own run, AUDIO_AGENT_BENCH_QUICK=1", () => {
  // The plan bench() runs, not only isQuick's answer: its report is named and filled after it.
  test("--no-quick writes a full run's report; no flag, a quick one's", async () => {
    await quickBenchQuietly("aa-bench-plan-", async (out) => {
      const planOf = async (flags: string[]) => {
        const dir = mkdtempSync(join(out, "run-"));
        await bench([...flags, "--no-native", "--only", "flood160", "--out", dir], { self: ["false"] });
        const files = readdirSync(dir).filter((f) => f.endsWith(".json"));
        expect(files.length).toBe(1);
        return { file: files[0]!.replace(/^.*-/, ""), plan: JSON.parse(readFileSync(join(dir, files[0]!), "utf8")).plan.name };
      };
      expect(await planOf(["--no-quick"])).toEqual({ file: "full.json", plan: "full" });
      expect(await planOf(["--quick=false"])).toEqual({ file: "full.json", plan: "full" });
      expect(await planOf([])).toEqual({ file: "quick.json", plan: "quick" });
    });
  }, 60_000);

  test("a stdout that does not take the table fails the run with its error, and the report is written all the same", async () => {
    const lost = new Error("stdout: cannot write (ENOSPC)");
    let printed = 0;
    const out = () => {
      printed++;
      throw lost;
    };
    await quickBenchQuietly("aa-bench-out-", async (dir) => {
      const run = bench(["--no-native", "--only", "flood160", "--out", dir], { self: ["false"], out });
      expect(await run.then(() => "resolved", (e) => e)).toBe(lost);
      expect(printed).toBe(1);
      expect(readdirSync(dir).filter((f) => f.endsWith("-quick.json"))).toHaveLength(1);
    });
  }, 60_000);
});
