import { metricsUrl } from "./metrics.ts";
import type { Spawned } from "./processes.ts";

/**
 * A monitor page on `agent` (started with --monitor): resolves once its hello came, with how the
 * agent ends the connection later ("1001 agent stopping" when it stops its endpoints; 1006 when
 * the process just goes). `defer` closes it after the test.
 */
export async function monitorViewer(agent: Spawned, defer: (cleanup: () => unknown) => void): Promise<{ closed: Promise<string> }> {
  const ws = new WebSocket(`${(await metricsUrl(agent)).replace(/^http/, "ws")}/ws`);
  defer(() => ws.close());
  const closed = new Promise<string>((resolve) => (ws.onclose = (e) => resolve(`${e.code} ${e.reason}`)));
  await new Promise<void>((resolve, reject) => {
    ws.onmessage = (e) => {
      if (typeof e.data === "string" && JSON.parse(e.data).type === "hello") resolve();
    };
    void closed.then((how) => reject(new Error(`closed before hello: ${how}`)));
  });
  return { closed };
}
