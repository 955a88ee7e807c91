/**
 * The runtime settings the device's service starts the agent with
 * (packaging/S95audio-agent, packaging/audio-agent.service), which the
 * benchmark's live and start-up processes run with too. They are Bun's own
 * knobs, not the agent's: each keeps a helper thread of the runtime from
 * waking on its own timer beside the 50 frames a second. Together they take
 * a streaming process from about 1.39 wake-ups a frame to 1.08, at the same
 * memory (bench/FINDINGS.md).
 */
export const DEVICE_RUNTIME_ENV = {
  /**
   * No scavenger thread in Bun's mimalloc (it woke about 11 times a second):
   * freed memory still goes back to the system, from the threads that freed it.
   */
  MIMALLOC_SCAVENGER: "0",
  /** JavaScriptCore marks the heap (a few MB here) without a helper thread woken at each collection. */
  BUN_JSC_numberOfGCMarkers: "1",
} as const;
