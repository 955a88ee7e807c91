/** Fresh temp directories, short enough for socket paths (sun_path is 108 bytes), and scripts in them. */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A fresh directory directly under /tmp, whatever TMPDIR says; removed by `defer` (see useCleanup). */
export function socketDir(defer: (cleanup: () => unknown) => void, prefix = "aa-"): {
  dir: string;
  path: (name: string) => string;
} {
  const dir = mkdtempSync(join("/tmp", prefix));
  defer(() => rmSync(dir, { recursive: true, force: true }));
  return { dir, path: (name) => join(dir, name) };
}

/** A fresh short temp dir under TMPDIR, removed by the returned cleanup. */
export function tempDir(prefix = "aa-"): { dir: string; path: (name: string) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, path: (name) => join(dir, name), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Writes an executable /bin/sh script of `body` at `path`; returns the path. */
export function shellScript(path: string, body: string): string {
  writeFileSync(path, `#!/bin/sh\n${body}\n`);
  chmodSync(path, 0o755);
  return path;
}
