import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { within } from "../../src/io/within.ts";
import { BUN, REPO, run } from "../support/processes.ts";

describe("within", () => {
  test("gives the work's result when it comes first, the fallback when the time runs out first", async () => {
    expect(await within(Promise.resolve("done"), 10_000, "late")).toBe("done");
    expect(await within(new Promise<string>(() => {}), 10, "late")).toBe("late");
    await expect(within(Promise.reject(new Error("failed")), 10_000, "late")).rejects.toThrow("failed");
  });

  test("a wait that ended leaves no timer behind: a process that used it exits at once, not after the bound", async () => {
    const script = `const { within } = await import(${JSON.stringify(join(REPO, "src/io/within.ts"))});
      console.log(await within(Promise.resolve("done"), 120_000, "late"));`;
    // Killed after 15 s (code -1): far less than the 2 minutes a forgotten timer would hold it.
    const result = await run([BUN, "-e", script], { timeoutMs: 15_000 });
    expect(result).toMatchObject({ code: 0, stdout: "done\n" });
  });
});
