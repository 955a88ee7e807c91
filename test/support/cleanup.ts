import { afterEach } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";

/**
 * Registers an afterEach that runs every deferred cleanup of the test, newest
 * first (sockets before their listeners, listeners before their directory),
 * each awaited, one failing cleanup not stopping the others. Call once at the
 * top level of a test file; returns `defer`.
 */
export function useCleanup(): (cleanup: () => unknown) => void {
  const pending: (() => unknown)[] = [];
  afterEach(async () => {
    for (const cleanup of pending.splice(0).reverse()) {
      try {
        await cleanup();
      } catch {
        // already closed or removed by the test itself
      }
    }
  });
  return (cleanup) => {
    pending.push(cleanup);
  };
}

/**
 * A fresh directory directly under /tmp, whatever TMPDIR says: socket paths
 * must fit sun_path (108 bytes). Removed by `defer`.
 */
export function socketDir(defer: (cleanup: () => unknown) => void, prefix = "aa-"): {
  dir: string;
  path: (name: string) => string;
} {
  const dir = mkdtempSync(join("/tmp", prefix));
  defer(() => rmSync(dir, { recursive: true, force: true }));
  return { dir, path: (name) => join(dir, name) };
}
