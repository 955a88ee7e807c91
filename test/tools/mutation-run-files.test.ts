/**
 * `--files` narrows a mutation run to some files of its folders, so a run
 * stopped part way can be finished on the files it had not reached: the
 * sample of each file is the same as in the whole folder's run.
 */
import { expect, test } from "bun:test";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { REPO } from "../support/processes.ts";

function list(...args: string[]) {
  const run = Bun.spawnSync([process.execPath, "test/long/mutants.ts", "--list", ...args], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  const files = new Set([...run.stdout.toString().matchAll(/^M\d+ (\S+):\d+ /gm)].map((m) => m[1]));
  return { exitCode: run.exitCode, files: [...files].sort(), out: run.stdout.toString(), err: run.stderr.toString() };
}

test("--files keeps the named files of a folder, by their path below it or the whole path, and the same mutants of each", () => {
  const whole = list("--only", "media", "--seed", "5", "--max-per-file", "2");
  const some = list("--only", "media,observe", "--seed", "5", "--max-per-file", "2", "--files", "pacer.ts,src/media/ogg-crc.ts,monitor/hub.ts");
  expect(some.exitCode).toBe(0);
  expect(some.files).toEqual(["src/media/ogg-crc.ts", "src/media/pacer.ts", "src/observe/monitor/hub.ts"]);
  // Each file's sample is the whole folder's: a run finished with --files runs what the stopped one would have.
  const mutantsOf = (out: string, file: string) => out.split(/^M\d+ /m).filter((m) => m.startsWith(`${file}:`)).map((m) => m.split("\n  (not run")[0]);
  expect(mutantsOf(some.out, "src/media/pacer.ts").length).toBeGreaterThan(0);
  expect(mutantsOf(some.out, "src/media/pacer.ts")).toEqual(mutantsOf(whole.out, "src/media/pacer.ts"));
});

test("--files naming no source file of the folders run is refused, naming it", () => {
  const run = list("--only", "media", "--files", "pacer.ts,hub.ts");
  expect(run.exitCode).toBe(2);
  expect(run.err.trim()).toBe('--files: "hub.ts" is no source file of media');
});

test("--files naming nothing (empty, or commas alone) is refused, not run as a sample of no file", () => {
  for (const value of ["", " , "]) {
    const run = list("--only", "media", "--files", value);
    expect(run.exitCode).toBe(2);
    expect(run.err.trim()).toBe(`--files: "${value}" names no file; give source files of the folders run, comma-separated (pump.ts,monitor/hub.ts)`);
    expect(run.out).toBe("");
  }
});

test("a folder's mutants run against each test file named after one of its source files, whatever other files the folder's run picks", () => {
  const run = Bun.spawnSync([process.execPath, "test/long/mutants.ts", "--tests"], { cwd: REPO, stdout: "pipe", stderr: "pipe" });
  expect(run.exitCode).toBe(0);
  const runs = new Map(run.stdout.toString().trim().split("\n").map((line) => {
    const [folder, files] = line.split(": ");
    return [folder!, files!.split(" ")];
  }));
  expect([...runs.keys()]).toEqual(["protocol", "io", "transport", "channels", "media", "observe", "roles", "cli", "config"]);
  // A folder's own test of a file left out of its run: every mutant of that file survives, however well the test holds it.
  const missing: string[] = [];
  for (const [folder, files] of runs) {
    const sources = existsSync(join(REPO, "src", `${folder}.ts`)) ? [`${folder}.ts`] : readdirSync(join(REPO, "src", folder), { recursive: true }).map(String).map((f) => `${folder}/${f}`);
    for (const source of sources.filter((f) => f.endsWith(".ts"))) {
      const own = `test/${source.replace(/\.ts$/, ".test.ts")}`;
      if (existsSync(join(REPO, own)) && !files.includes(own)) missing.push(`${folder}: ${own}`);
    }
  }
  expect(missing).toEqual([]);
});
