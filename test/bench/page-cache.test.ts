import { expect, test } from "bun:test";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { dropPageCache } from "../../src/bench/page-cache.ts";
import { run } from "../support/processes.ts";
import { useCleanup } from "../support/cleanup.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

/** Bytes of `path` in the page cache, as util-linux's fincore counts them. */
async function cachedBytes(path: string): Promise<number> {
  const { code, stdout, stderr } = await run(["fincore", "--bytes", "--noheadings", "--output", "RES", path]);
  expect(code, stderr).toBe(0);
  return Number(stdout.trim());
}

test("a program's file is written back and leaves the page cache, as after a reboot", async () => {
  const path = join(socketDir(defer, "aa-pc-").dir, "program");
  writeFileSync(path, new Uint8Array(4 << 20).fill(7));
  // Just written: all of it cached (and dirty).
  expect(await cachedBytes(path)).toBe(4 << 20);
  expect(dropPageCache(path)).toBeUndefined();
  expect(await cachedBytes(path)).toBe(0);
});

test("where the pages cannot leave, it says why instead: tmpfs, the running program itself, no file", async () => {
  const onTmpfs = "/dev/shm/aa-pc-" + process.pid;
  defer(() => rmSync(onTmpfs, { force: true }));
  if (existsSync("/dev/shm")) {
    writeFileSync(onTmpfs, new Uint8Array(1 << 20));
    expect(dropPageCache(onTmpfs)).toContain("tmpfs");
    expect(await cachedBytes(onTmpfs)).toBe(1 << 20);
  }
  expect(dropPageCache(process.execPath)).toContain("running");
  expect(dropPageCache("/nonexistent/agent")).toContain("no such file");
});
