/**
 * An `output serve` still writing out its queue when it is told to stop: the
 * second-signal tests' agent.
 */
import { connectClient } from "./peer.ts";
import { spawnAgent, type Spawned } from "./processes.ts";
import { writeWireFile } from "./wire.ts";

/**
 * `output serve` at `path` from DIR/queued.wire (8 MB: more than any socket
 * buffer), its client connected and never reading, so that frames stay queued.
 */
export async function agentWithQueue(defer: (cleanup: () => unknown) => void, dir: { path: (name: string) => string }, path: string): Promise<Spawned> {
  const source = dir.path("queued.wire");
  const payload = new Uint8Array(4096);
  await writeWireFile(source, 2000, () => payload);
  const server = spawnAgent(["output", "serve", "--socket", path, "--source", source]);
  await server.waitForStderr("waiting for a client");
  await connectClient(defer, path, { paused: true });
  await server.waitForStderr("client connected");
  return server;
}

/** `signal` twice, the second once the first is taken (never merged into it): it comes while the first's stop still flushes. */
export async function signalTwice(server: Spawned, signal: NodeJS.Signals): Promise<void> {
  await Bun.sleep(200);
  await server.signalTaken(signal);
  server.kill(signal);
}
