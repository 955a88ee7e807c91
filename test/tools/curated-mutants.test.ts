/**
 * The mutation run's curated mutants must still apply: each names a line of
 * src/ that the code may have moved away from, which would silently drop a
 * bug the suite once missed from `npm run mutants`. A reviewed equivalent
 * names its line too, so the reason given stands for code that is there.
 */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { CURATED, EQUIVALENT, reviewedLines } from "../long/curated-mutants.ts";
import { REPO } from "../support/processes.ts";

/** The lines of a file of the repository, as the run reads them. */
const sourceLines = (file: string) => readFileSync(join(REPO, file), "utf8").split("\n");

test("every curated mutant finds its line in src/, and one line only: the run mutates the first that holds it", () => {
  expect(CURATED.length).toBeGreaterThan(0);
  const lines = (c: (typeof CURATED)[number]) => sourceLines(c.file).filter((line) => line.includes(c.find)).length;
  const notOnce = CURATED.map((c) => ({ mutant: `${c.name} (${c.file})`, lines: lines(c) })).filter(({ lines }) => lines !== 1);
  expect(notOnce).toEqual([]);
});

test("every reviewed equivalent mutant names a line still in its file: one the code moved away from leaves a reason standing for code that is gone", () => {
  const there = (e: (typeof EQUIVALENT)[number]) => reviewedLines(e, sourceLines(e.file)).length > 0;
  expect(EQUIVALENT.filter((e) => !there(e)).map((e) => `${e.file}: ${e.before}`)).toEqual([]);
});

test("an equivalent named `within` a line stands for one line, the first that is `before` after it; its mark must be in the file once", () => {
  const lines = ["f() {", "  x = 1;", "}", "g() {", "  x = 1;", "  x = 1;", "}"];
  const entry = { file: "", before: "x = 1;", after: "x = 2;", why: "" };
  expect(reviewedLines(entry, lines)).toEqual([2, 5, 6]);
  expect(reviewedLines({ ...entry, within: "g() {" }, lines)).toEqual([5]);
  expect(reviewedLines({ ...entry, within: "() {" }, lines)).toEqual([]);
  expect(reviewedLines({ ...entry, within: "h() {" }, lines)).toEqual([]);
  expect(reviewedLines({ ...entry, within: "}" }, [...lines.slice(0, 3), "  x = 1;"])).toEqual([4]);
});
