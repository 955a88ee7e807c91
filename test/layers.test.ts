/**
 * The layers import downwards only (README, Layout): each folder of src/ may
 * import the folders listed for it and nothing above. A new upward import
 * fails here, naming the file and what it imports.
 */
import { expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join, relative, resolve } from "node:path";

const SRC = resolve(import.meta.dir, "../src");

/** Layer -> the layers it may import (besides itself). */
const ALLOWED: Record<string, string[]> = {
  protocol: [],
  io: [],
  transport: ["protocol", "io"],
  media: ["protocol", "io"],
  observe: ["protocol", "io"],
  channels: ["protocol", "io", "transport"],
  config: ["protocol"],
  roles: ["protocol", "io", "transport", "media", "observe", "channels", "config"],
  bench: ["protocol", "io", "transport", "media", "observe", "channels", "config", "roles"],
  cli: ["protocol", "io", "transport", "media", "observe", "channels", "config", "roles", "bench"],
  main: ["cli"],
};

function layerOf(file: string): string {
  const rel = relative(SRC, file);
  const top = rel.split("/")[0]!;
  return top.replace(/\.ts$/, "");
}

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return sources(path);
    return e.name.endsWith(".ts") ? [path] : [];
  });
}

test("every import in src/ goes to the same layer or one below it", () => {
  const violations: string[] = [];
  const files = sources(SRC);
  expect(files.length).toBeGreaterThan(50);
  for (const file of files) {
    const from = layerOf(file);
    expect(Object.keys(ALLOWED)).toContain(from);
    const text = readFileSync(file, "utf8");
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*"(\.[^"]+)"/g)) {
      const target = resolve(file, "..", m[1]!);
      if (!target.startsWith(SRC + "/")) {
        if (!target.endsWith("package.json")) violations.push(`${relative(SRC, file)} imports ${m[1]} (outside src/)`);
        continue;
      }
      const to = layerOf(target);
      if (to !== from && !ALLOWED[from]!.includes(to)) violations.push(`${relative(SRC, file)} (${from}) imports ${m[1]} (${to})`);
    }
  }
  expect(violations).toEqual([]);
});
