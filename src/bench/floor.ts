/**
 * The bare Bun floor (floors/bare-bun.js): embedded as text, so the compiled
 * agent carries it too, and compiled in the run by the Bun running the
 * benchmark, the way build.ts compiles the agent. Inside a compiled agent
 * that Bun is the agent's own, so the floor and the agent share one runtime
 * wherever the benchmark runs.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { LIBC_CANDIDATES } from "../io/libc.ts";
import { compileExecutable } from "./compile.ts";
import BARE_BUN_SOURCE from "./floors/bare-bun.js" with { type: "text" };

/**
 * Bun's runtime modules that every streaming role loads at start (their
 * static imports; a test keeps this list equal to them). The floor loads
 * them too (`bare-bun modules ...`), to show what they cost any program that
 * needs them: socket files and sinks need node:fs, socket buffer sizes need
 * bun:ffi.
 */
export const STREAMING_RUNTIME_MODULES = ["node:fs", "node:path", "bun:ffi"] as const;

/** Those modules as the floor's MODULE arguments: bun:ffi with the libc names the agent tries, in its order. */
export function floorModuleArgs(): string[] {
  return STREAMING_RUNTIME_MODULES.map((name) => (name === "bun:ffi" ? `${name}=${LIBC_CANDIDATES.join(",")}` : name));
}

/** Builds the floor into `work`; its path, or an Error saying why it could not be built. */
export async function buildBareBun(work: string): Promise<string | Error> {
  const source = join(work, "bare-bun.js");
  const binary = join(work, "bare-bun");
  writeFileSync(source, BARE_BUN_SOURCE);
  try {
    await compileExecutable(source, binary);
    return binary;
  } catch (e) {
    return e as Error;
  }
}
