/**
 * The runtime settings the device's service starts the agent with
 * (packaging/S95audio-agent, packaging/audio-agent.service), which the
 * benchmark's live and start-up processes run with too. They are Bun's own
 * knobs, not the agent's: each keeps the runtime from waking on a timer of
 * its own beside the 50 frames a second. Together they take a streaming
 * process from about 1.43 wake-ups a frame to about 1.06, at the same memory
 * (bench/FINDINGS.md).
 */
export const DEVICE_RUNTIME_ENV = {
  /**
   * No scavenger thread in Bun's mimalloc (it woke about 11 times a second):
   * freed memory still goes back to the system, from the threads that freed it.
   */
  MIMALLOC_SCAVENGER: "0",
  /** JavaScriptCore marks the heap (a few MB here) without a helper thread woken at each collection. */
  BUN_JSC_numberOfGCMarkers: "1",
  /**
   * Bun's own collection timer every 30 s instead of every second. A process
   * that allocates a little per frame never looks idle to it, so it stays at
   * its fast interval: a collection a second and a follow-up 16 ms later, two
   * or three wake-ups a second. JavaScriptCore still collects as the heap
   * grows; 30 s is the interval Bun itself falls back to when a heap is steady.
   */
  BUN_GC_TIMER_INTERVAL: "30000",
} as const;
