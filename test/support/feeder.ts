/** A live source of indexed frames for a spawned agent: its stdin. */
import { spawnAgent, type Spawned } from "./processes.ts";
import { indexedWire } from "./wire.ts";

/**
 * Feeds indexed frames as a wire stream into a spawned agent's stdin
 * (`--source -`: a live source). `next` is the index of the next frame.
 */
export class StdinFeeder {
  next: number;
  private flooding: Promise<void> | undefined;
  private stopFlood = false;
  private ended = false;

  constructor(
    private readonly agent: Spawned,
    first = 0,
  ) {
    this.next = first;
  }

  /** Writes `count` more frames and waits until the pipe took them. */
  async send(count: number): Promise<void> {
    if (this.ended) throw new Error("StdinFeeder: stdin already closed");
    const from = this.next;
    this.next += count;
    await this.agent.writeStdin(indexedWire(from, from + count));
  }

  /** Keeps sending batches of `batch` frames, `pauseMs` apart, until stopFlooding(). */
  flood(batch = 50, pauseMs = 1): void {
    this.stopFlood = false;
    this.flooding = (async () => {
      while (!this.stopFlood && !this.agent.hasExited) {
        try {
          await this.send(batch);
        } catch {
          return; // the agent went away
        }
        await Bun.sleep(pauseMs);
      }
    })();
  }

  async stopFlooding(): Promise<void> {
    this.stopFlood = true;
    await this.flooding;
  }

  /** Ends the source: the agent sees end of input. */
  async end(): Promise<void> {
    await this.stopFlooding();
    if (this.ended) return;
    this.ended = true;
    await this.agent.endStdin();
  }
}

/** `output serve` reading indexed frames from its stdin (`--source -`: live mode, drops counted), once it listens; `env` replaces the agent's environment. */
export async function startFedServer(socket: string, extra: string[] = [], env?: Record<string, string>): Promise<{ server: Spawned; feed: StdinFeeder }> {
  const server = spawnAgent(["output", "serve", "--socket", socket, "--source", "-", ...extra], { stdin: "pipe", env });
  await server.waitForStderr("listening socket=");
  return { server, feed: new StdinFeeder(server) };
}
