/**
 * The TCP front of the HTTP servers, in this process: a Unix server behind
 * it that sends without end, and a client that stops reading.
 */
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { HttpFront, STALL_MS } from "../../src/observe/http-front.ts";
import { useCleanup } from "../support/cleanup.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

/** A Unix server at `path` that sends each client 64 KiB pieces as fast as it takes them; counts its clients gone. */
function endlessServer(path: string): { gone: () => number } {
  const piece = new Uint8Array(64 * 1024);
  let gone = 0;
  const send = (socket: Socket<undefined>) => {
    while (socket.write(piece) === piece.length);
  };
  const listener = Bun.listen({ unix: path, socket: { open: send, drain: send, data() {}, close: () => void gone++ } });
  defer(() => listener.stop(true));
  return { gone: () => gone };
}

describe("a client that stops reading what its server sends", () => {
  test(`having read some, then nothing: cut within STALL_MS (${STALL_MS} ms) and some, its server side with it`, async () => {
    const backend = socketDir(defer, "hf-").path("b.sock");
    const server = endlessServer(backend);
    const front = HttpFront.listen("127.0.0.1", 0, () => backend);
    defer(() => front.stop(0));
    let got = 0;
    let closed = false;
    const client = await Bun.connect({
      hostname: "127.0.0.1",
      port: front.port,
      socket: { data: (_s, chunk) => void (got += chunk.length), close: () => void (closed = true), error() {} },
    });
    defer(() => client.terminate());
    // It reads for a while (more than the kernel's buffers hold, so the front holds what waits), then stops.
    await until(() => got > 16 * 1024 * 1024, "the client reading", 30_000);
    client.pause();
    await until(() => closed, "the client cut", STALL_MS + 20_000, 100);
    await until(() => server.gone() === 1, "its server side closed", 10_000);
  }, STALL_MS + 60_000);
});
