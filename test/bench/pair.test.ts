/**
 * Runner.pair's figures (flood and soak): each side's peak RSS is the most it
 * ever held, as it reports its VmHWM at its end, not the largest RSS that the
 * runner's samples from outside happened to catch. The programs are small
 * Python scripts, so the memory is theirs alone.
 */
import { expect, test } from "bun:test";
import { Runner } from "../../src/bench/runner.ts";
import { useCleanup } from "../support/cleanup.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

/** Holds `heldMiB` for a moment (written, so resident) and lets it go, says LISTENING, runs a while, then gives its RESULT with its VmHWM. */
function side(heldMiB: number, listening: boolean): string[] {
  return [
    "python3",
    "-c",
    `import json, re, time
held = b"\\x01" * (${heldMiB} << 20)
del held
${listening ? 'print("LISTENING", flush=True)' : ""}
time.sleep(0.8)
hwm = int(re.search(r"^VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read(), re.M).group(1))
print("RESULT " + json.dumps({"maxRssKiB": hwm}), flush=True)`,
  ];
}

test("each side's peak RSS is its VmHWM, a peak the samples from outside did not see included", async () => {
  const dir = socketDir(defer, "aap-");
  const runner = new Runner(dir.dir, () => {});
  defer(() => runner.dispose());
  // Both peaks come and go before the runner samples anything: the sender's before it listens, the
  // receiver's as it starts; the 0.8 s after them are sampled.
  const pair = await runner.pair(side(64, true), side(48, false), 30_000);
  expect(pair.rssKiB.send).toBe(pair.send.maxRssKiB);
  expect(pair.rssKiB.recv).toBe(pair.recv.maxRssKiB);
  expect(pair.rssKiB.send).toBeGreaterThanOrEqual(64 * 1024);
  expect(pair.rssKiB.recv).toBeGreaterThanOrEqual(48 * 1024);
});
