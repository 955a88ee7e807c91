/**
 * The tests' spawned processes: waiting for one to exit never waits for good
 * on pipes that a process it left running still holds.
 */
import { expect, test } from "bun:test";
import { start } from "../support/processes.ts";

test("a process that exits leaving a child holding its stderr open: exited resolves, and its stderr says why the wait was cut", async () => {
  const shell = start(["sh", "-c", "echo before >&2; sleep 40 & echo $! >&2; exit 3"]);
  const code = await shell.exited;
  expect(code).toBe(3);
  expect(shell.stderr).toContain("before");
  expect(shell.stderr).toContain("still open 10 s after it exited");
  const sleeper = Number(shell.stderr.split("\n")[1]);
  expect(sleeper).toBeGreaterThan(0);
  process.kill(sleeper, "SIGKILL");
}, 30_000);
