/**
 * InFlight on a real Unix socket pair: which written data the peer may not
 * have read yet, from the kernel's own count (TIOCOUTQ).
 */
import { describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { InFlight } from "../../src/transport/in-flight.ts";
import { setSocketBuffers } from "../../src/transport/socket-options.ts";
import { useCleanup } from "../support/cleanup.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

async function pair() {
  const { path } = socketDir(defer, "if-");
  let server: Socket<undefined> | undefined;
  const listener = Bun.listen({ unix: path("s.sock"), socket: { open: (s) => void (server = s), data() {} } });
  defer(() => listener.stop(true));
  let read = 0;
  const reader = await Bun.connect({
    unix: path("s.sock"),
    socket: { open: (s) => s.pause(), data: (_s, chunk) => void (read += chunk.length) },
  });
  defer(() => reader.terminate());
  await until(() => server !== undefined, "accepted");
  return { writer: server!, reader, read: () => read };
}

describe("InFlight", () => {
  test("unread data older than the cutoff is seen until the peer reads it; then everything is forgotten", async () => {
    const { writer, reader, read } = await pair();
    // Room for 300 small writes: the kernel charges each about 768 bytes of buffer.
    expect(setSocketBuffers(writer.fd, { sendBytes: 256 * 1024, receiveBytes: 256 * 1024 }).ok).toBe(true);
    const inFlight = new InFlight();
    inFlight.reset(writer.fd);
    const frame = new Uint8Array(177);
    // More writes than it remembers one by one: the oldest are merged, keeping the oldest time.
    for (let t = 0; t < 300; t++) {
      expect(writer.write(frame)).toBe(177);
      inFlight.wrote(177, 1000 + t);
    }
    expect(inFlight.olderThan(1000)).toBe(false);
    expect(inFlight.olderThan(1001)).toBe(true);
    expect(inFlight.olderThan(1299)).toBe(true);
    reader.resume();
    await until(() => read() === 300 * 177, "everything read");
    expect(inFlight.olderThan(100_000)).toBe(false);
    expect(inFlight.clientRead).toBe(true);

    // Three more, unread: only they count now.
    reader.pause();
    for (let t = 0; t < 3; t++) {
      writer.write(frame);
      inFlight.wrote(177, 2000 + t);
    }
    expect(inFlight.olderThan(2000)).toBe(false);
    expect(inFlight.olderThan(2001)).toBe(true);
    expect(inFlight.clientRead).toBe(true); // a write came between: not a stalled peer
    expect(inFlight.olderThan(2001)).toBe(true);
    expect(inFlight.clientRead).toBe(false); // nothing read since the last look
  });

  test("a write the peer has read is forgotten once newer writes cover what the kernel holds unread", async () => {
    const { writer, reader, read } = await pair();
    expect(setSocketBuffers(writer.fd, { sendBytes: 256 * 1024, receiveBytes: 256 * 1024 }).ok).toBe(true);
    const inFlight = new InFlight();
    inFlight.reset(writer.fd);
    const small = new Uint8Array(177);
    const large = new Uint8Array(64 * 1024);
    // Read by the peer: a small write, then a large one.
    expect(writer.write(small)).toBe(small.length);
    inFlight.wrote(small.length, 1000);
    expect(writer.write(large)).toBe(large.length);
    inFlight.wrote(large.length, 2000);
    reader.resume();
    await until(() => read() === small.length + large.length, "the first two writes read");
    reader.pause();
    // Unread: one large write. The kernel counts a little more than its bytes, which the
    // large write read before it covers; the small one before that is certainly read.
    expect(writer.write(large)).toBe(large.length);
    inFlight.wrote(large.length, 3000);
    expect(inFlight.olderThan(1500)).toBe(false);
    // Never too young: the read large write is kept with the unread one.
    expect(inFlight.olderThan(2500)).toBe(true);
  });

  test("without a socket to ask, nothing is held back", () => {
    const inFlight = new InFlight();
    inFlight.reset(-1);
    inFlight.wrote(177, 0);
    expect(inFlight.olderThan(10)).toBe(false);
  });
});
