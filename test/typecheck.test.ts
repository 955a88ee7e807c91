/** The whole tree (src, test, bench, build.ts) type-checks under the pinned TypeScript, strict. */
import { expect, test } from "bun:test";
import { join } from "node:path";

test("tsc --noEmit reports no type errors", () => {
  const root = join(import.meta.dir, "..");
  const result = Bun.spawnSync([join(root, "node_modules/.bin/tsc"), "--noEmit", "-p", root], { cwd: root });
  const output = result.stdout.toString() + result.stderr.toString();
  expect(output).toBe("");
  expect(result.exitCode).toBe(0);
});
