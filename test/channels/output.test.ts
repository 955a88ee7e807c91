import { afterEach, describe, expect, test } from "bun:test";
import { OutputClient } from "../../src/channels/output-client.ts";
import { OutputServer, type OutputServerOptions } from "../../src/channels/output-server.ts";
import { MessageType } from "../../src/protocol/index.ts";
import { silent } from "../../src/transport/report.ts";
import { testPayload } from "../support/payloads.ts";
import { tempDir } from "../support/temp.ts";

const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function options(path: string, over: Partial<OutputServerOptions> = {}): OutputServerOptions {
  return {
    path,
    mode: 0o660,
    report: silent,
    queueFrames: 500,
    dropPolicy: "oldest",
    lossless: true,
    writeDeadlineMs: 0,
    stuckFrames: 50,
    ...over,
  };
}

async function setup(over: Partial<OutputServerOptions> = {}) {
  const t = tempDir();
  cleanups.push(t.cleanup);
  const server = await OutputServer.start(options(t.path("out.sock"), over));
  cleanups.push(() => server.stop());
  return { t, server };
}

describe("output channel in-process", () => {
  test("100k frames of mixed sizes arrive byte-identical and in order (lossless)", async () => {
    const { t, server } = await setup();
    const N = 100_000;
    let received = 0;
    let mismatch = -1;
    const client = new OutputClient({
      path: t.path("out.sock"),
      report: silent,
      onMessage: (m) => {
        if (m.type !== MessageType.OpusFrame) return;
        const want = testPayload(received);
        const got = m.payload;
        if (mismatch < 0 && (got.length !== want.length || !got.every((b, i) => b === want[i]))) mismatch = received;
        received++;
        if (received === N) client.stop();
      },
    });
    const running = client.run();
    await server.waitForClient();
    for (let i = 0; i < N; i++) {
      await server.waitForSpace();
      server.sendFrame(testPayload(i));
    }
    await running;
    expect(mismatch).toBe(-1);
    expect(received).toBe(N);
    expect(server.stats.submitted).toBe(N);
    expect(server.stats.delivered).toBe(N);
    expect(server.stats.droppedTotal).toBe(0);
  });
});
