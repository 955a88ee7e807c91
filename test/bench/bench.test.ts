/**
 * `audio-agent bench`'s choice of plan: the flag, either way, wins over
 * AUDIO_AGENT_BENCH_QUICK, as every flag wins over the environment.
 */
import { describe, expect, test } from "bun:test";
import { isQuick, parseOptions } from "../../src/bench/bench.ts";

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
