import { describe, expect, test } from "bun:test";
import { ACCEPT_QUEUE, boundAcceptQueue } from "../../src/io/accept-queue.ts";
import { useCleanup } from "../support/cleanup.ts";
import { closeConnections, queueConnections } from "../support/queued-connections.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

/**
 * How many connections to `path` the kernel completes while nobody takes
 * them (see queueConnections).
 */
function completedUntaken(path: string, atMost: number): number {
  const held = queueConnections(path, atMost);
  const count = held.length;
  closeConnections(held);
  return count;
}

function listening(): { path: string; listener: ReturnType<typeof Bun.listen> } {
  const path = socketDir(defer, "aq-").path("s.sock");
  const listener = Bun.listen({ unix: path, socket: { data() {} } });
  defer(() => listener.stop(true));
  return { path, listener };
}

describe("boundAcceptQueue: the kernel's queue of connections not yet taken", () => {
  test("bounded to the backlog asked for (Linux keeps one more than it), where Bun's own keeps 512", () => {
    const unbounded = listening();
    expect(completedUntaken(unbounded.path, 600)).toBeGreaterThan(512);
    const bounded = listening();
    expect(boundAcceptQueue(bounded.listener)).toBeUndefined();
    expect(completedUntaken(bounded.path, 600)).toBe(ACCEPT_QUEUE + 1);
    // Those completed stay queued, closed or not, until taken: another listener for another bound.
    const three = listening();
    expect(boundAcceptQueue(three.listener, 3)).toBeUndefined();
    expect(completedUntaken(three.path, 600)).toBe(4);
  });

  test("a listener with no descriptor (stopped: -1; none, or not a whole number) is told so; descriptor 0 is a descriptor, tried", () => {
    for (const fd of [-1, undefined, "3", 2.5, Number.NaN]) {
      expect(boundAcceptQueue({ fd })).toBe("Bun's listener has no descriptor");
    }
    // Descriptor 0 is the test's stdin, no socket: listen(2) itself says why.
    expect(boundAcceptQueue({ fd: 0 })).toMatch(/^listen\(0, 16\) failed: E[A-Z]+$/);
  });
});
