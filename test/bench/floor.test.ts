/**
 * The floor with the streaming roles' runtime modules stands for what those
 * roles load: its list must be the Bun modules they import at start, found by
 * the bundler the way build.ts bundles them (dynamic imports, loaded only for
 * --metrics or the bench, are not followed).
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { STREAMING_RUNTIME_MODULES } from "../../src/bench/floor.ts";

const ROOT = join(import.meta.dir, "../..");
const ROLES = ["output-serve", "output-recv", "input-serve", "input-send", "serve"];

interface MetaInput {
  imports: { path: string; kind: string }[];
}

/** The runtime modules `entry` reaches through static imports, as "node:fs", "bun:ffi". */
function staticRuntimeModules(inputs: Record<string, MetaInput>, entry: string): string[] {
  const seen = new Set<string>();
  const modules = new Set<string>();
  const todo = [entry];
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    for (const { path, kind } of inputs[file]?.imports ?? []) {
      if (kind !== "import-statement") continue;
      if (inputs[path]) todo.push(path);
      else modules.add(path.includes(":") ? path : `node:${path}`);
    }
  }
  return [...modules].sort();
}

describe("the floor's runtime modules", () => {
  test("are the ones each streaming role imports at start", async () => {
    const result = await Bun.build({ entrypoints: [join(ROOT, "src/main.ts")], target: "bun", metafile: true });
    expect(result.success).toBe(true);
    const meta = typeof result.metafile === "string" ? JSON.parse(result.metafile) : result.metafile;
    const inputs = meta.inputs as Record<string, MetaInput>;
    const expected = [...STREAMING_RUNTIME_MODULES].sort();
    for (const role of ROLES) {
      const entry = Object.keys(inputs).find((file) => file.endsWith(`src/roles/${role}.ts`));
      expect(entry).toBeDefined();
      expect({ role, modules: staticRuntimeModules(inputs, entry!) }).toEqual({ role, modules: expected });
    }
  });
});
