/**
 * NotifySocket against a real datagram socket the test binds (as a service
 * manager holds NOTIFY_SOCKET): which names it takes, each send one datagram,
 * the errno of a send nobody receives, and its descriptor given back.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { NotifySocket } from "../../src/transport/notify-socket.ts";
import { useCleanup } from "../support/cleanup.ts";
import { notifyReceiver } from "../support/notify-receiver.ts";
import { BUN, REPO, run } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";

const defer = useCleanup();

function opened(name: string): NotifySocket {
  const socket = NotifySocket.open(name);
  if (typeof socket === "string") throw new Error(socket);
  defer(() => socket.dispose());
  return socket;
}

/** This process's descriptors that are sockets, each with its link ("socket:[inode]"). */
function socketDescriptors(): Map<string, string> {
  const out = new Map<string, string>();
  for (const fd of readdirSync("/proc/self/fd")) {
    try {
      const link = readlinkSync(`/proc/self/fd/${fd}`);
      if (link.startsWith("socket:")) out.set(fd, link);
    } catch {
      // The directory's own descriptor, closed once listed.
    }
  }
  return out;
}

describe("NotifySocket", () => {
  test("a path and an abstract name (@...) each get every send as one datagram", () => {
    const { path } = socketDir(defer, "ns-");
    for (const name of [path("notify"), `@aa-notify-test-${process.pid}`]) {
      const receiver = notifyReceiver(name);
      defer(() => receiver.close());
      const socket = opened(name);
      expect(socket.send("READY=1")).toBeUndefined();
      expect(socket.send("STATUS=serving\nWATCHDOG=1")).toBeUndefined();
      expect(receiver.messages()).toEqual(["READY=1", "STATUS=serving\nWATCHDOG=1"]);
    }
  });

  test("a send nobody receives gives the errno's name; one to a path with no file, ENOENT", () => {
    const { path } = socketDir(defer, "ns-");
    expect(opened(path("nobody")).send("READY=1")).toBe("ENOENT");
    const receiver = notifyReceiver(path("gone"));
    receiver.close();
    expect(opened(path("gone")).send("READY=1")).toBe("ECONNREFUSED");
  });

  test("a name that is neither a path nor @... is refused in one line naming it", () => {
    expect(NotifySocket.open("run/notify")).toBe("NOTIFY_SOCKET=run/notify is neither a path nor an abstract name (@...)");
    expect(NotifySocket.open("")).toBe("NOTIFY_SOCKET= is neither a path nor an abstract name (@...)");
  });

  test("a path of 107 bytes, the longest sun_path holds with its NUL, is reached; one of 108 is refused, naming the limit", () => {
    const { dir, path } = socketDir(defer, "ns-");
    const longest = path("n".repeat(107 - dir.length - 1));
    expect(Buffer.byteLength(longest)).toBe(107);
    const receiver = notifyReceiver(longest);
    defer(() => receiver.close());
    expect(opened(longest).send("READY=1")).toBeUndefined();
    expect(receiver.messages()).toEqual(["READY=1"]);

    const tooLong = `${longest}n`;
    expect(NotifySocket.open(tooLong)).toBe(`NOTIFY_SOCKET=${tooLong} is longer than a Unix socket address holds (107 bytes)`);
  });

  test("dispose closes its socket's descriptor", () => {
    const { path } = socketDir(defer, "ns-");
    const before = socketDescriptors();
    const socket = NotifySocket.open(path("notify"));
    if (typeof socket === "string") throw new Error(socket);
    const mine = [...socketDescriptors()].filter(([fd, link]) => before.get(fd) !== link);
    expect(mine.length).toBe(1);
    socket.dispose();
    const [fd, link] = mine[0]!;
    expect(socketDescriptors().get(fd)).not.toBe(link);
  });

  test("descriptor 0 is a socket like any other: with stdin closed, the notify socket takes it and sends", async () => {
    const { path } = socketDir(defer, "ns-");
    const receiver = notifyReceiver(path("notify"));
    defer(() => receiver.close());
    // A daemon may be started with stdin closed: socket() then returns 0, the lowest free descriptor.
    const script = `
      import { readlinkSync } from "node:fs";
      import { openLibc } from ${JSON.stringify(join(REPO, "src/io/libc.ts"))};
      import { NotifySocket } from ${JSON.stringify(join(REPO, "src/transport/notify-socket.ts"))};
      const libc = openLibc({ close: { args: ["i32"], returns: "i32" } });
      if (!libc.library || libc.library.symbols.close(0) !== 0) throw new Error("cannot close stdin");
      const socket = NotifySocket.open(process.env.NAME);
      if (typeof socket === "string") throw new Error(socket);
      console.log(readlinkSync("/proc/self/fd/0").split(":")[0], socket.send("READY=1") ?? "sent");`;
    const result = await run([BUN, "-e", script], { env: { PATH: process.env.PATH ?? "/usr/bin:/bin", NAME: receiver.name } });
    expect(result.stderr).toBe("");
    expect(result.stdout).toBe("socket sent\n");
    expect(result.code).toBe(0);
    expect(receiver.messages()).toEqual(["READY=1"]);
  });
});
