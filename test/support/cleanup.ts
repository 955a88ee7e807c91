import { afterEach } from "bun:test";

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
