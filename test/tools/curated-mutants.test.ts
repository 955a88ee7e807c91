/**
 * The mutation run's curated mutants must still apply: each names a line of
 * src/ that the code may have moved away from, which would silently drop a
 * bug the suite once missed from `npm run mutants`.
 */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { CURATED } from "../long/curated-mutants.ts";
import { REPO } from "../support/processes.ts";

test("every curated mutant finds its line in src/", () => {
  expect(CURATED.length).toBeGreaterThan(0);
  const missing = CURATED.filter((c) => !readFileSync(join(REPO, c.file), "utf8").includes(c.find)).map((c) => `${c.name} (${c.file})`);
  expect(missing).toEqual([]);
});
