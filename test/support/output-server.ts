/** An OutputServer for in-process tests: a fresh socket path, live-mode defaults, stopped after the test. */
import { OutputServer, type OutputServerOptions } from "../../src/channels/output-server.ts";
import { silent } from "../../src/transport/report.ts";
import { socketDir } from "./temp.ts";

/** Starts an OutputServer (live, 500 frames, 20 ms deadline, stuck after 50 unless `over` says otherwise); `defer` (see useCleanup) stops it. */
export async function startOutputServer(
  defer: (cleanup: () => unknown) => void,
  over: Partial<OutputServerOptions> = {},
): Promise<{ path: string; server: OutputServer }> {
  const path = socketDir(defer, "out-").path("out.sock");
  const server = await OutputServer.start({
    path,
    mode: 0o660,
    report: silent,
    queueFrames: 500,
    dropPolicy: "oldest",
    lossless: false,
    writeDeadlineMs: 20,
    stuckFrames: 50,
    ...over,
  });
  defer(() => server.stop());
  return { path, server };
}
