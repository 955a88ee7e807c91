/**
 * Socket path safety: only a stale socket (nothing answers) is ever removed;
 * a regular file, a directory or a live socket is refused and left exactly as
 * it was. Mode and clean-up of the socket file.
 */
import { describe, expect, test } from "bun:test";
import { chmodSync, chownSync, copyFileSync, cpSync, existsSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, symlinkSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { SOCK_DGRAM, SOCK_STREAM } from "../../src/io/libc.ts";
import { bindSocketFile, prepareSocketPath, removeSocketFile, removeStaleHiddenNames, restoreSocketFile, SocketPathError } from "../../src/transport/socket-file.ts";
import { type ClientHandler, UnixServer } from "../../src/transport/unix-server.ts";
import { type Report, silent } from "../../src/transport/report.ts";
import { setDefaultAcl } from "../support/acl.ts";
import { bindSocket, SOCK_SEQPACKET } from "../support/bound-socket.ts";
import { useCleanup } from "../support/cleanup.ts";
import { makeFifo } from "../support/fifo.ts";
import { asNobody, canSwitchUser, NOBODY } from "../support/nobody.ts";
import { connectClient } from "../support/peer.ts";
import { unixListeners } from "../support/proc.ts";
import { BUN, makeStaleSocket, REPO, run, spawnListener } from "../support/processes.ts";
import { socketDir } from "../support/temp.ts";
import { until } from "../support/wait.ts";

const defer = useCleanup();

const idle: ClientHandler = { open() {}, data() {}, drain() {}, close() {} };

async function listen(path: string, options: { mode?: number; report?: Report; handler?: ClientHandler } = {}) {
  const server = await UnixServer.listen({
    path,
    mode: options.mode ?? 0o660,
    report: options.report ?? silent,
    handler: options.handler ?? idle,
  });
  defer(() => server.stop());
  return server;
}

/** Resolves with the SocketPathError that `work` rejects with (fails the test if it resolves). */
async function refusal(work: Promise<unknown>): Promise<SocketPathError> {
  try {
    await work;
  } catch (e) {
    expect(e).toBeInstanceOf(SocketPathError);
    return e as SocketPathError;
  }
  throw new Error("expected a SocketPathError, but it succeeded");
}

/** Connects and closes again; true if a server accepted. */
async function answers(path: string): Promise<boolean> {
  try {
    const socket = await Bun.connect({ unix: path, socket: { data() {} } });
    socket.end();
    return true;
  } catch {
    return false;
  }
}

describe("stale socket", () => {
  test("a socket left by a killed process is removed, and the server then listens there", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    await makeStaleSocket(path);
    expect(lstatSync(path).isSocket()).toBe(true);
    expect(await answers(path)).toBe(false);

    const reports: string[] = [];
    const server = await listen(path, { report: (_level, message) => reports.push(message) });
    expect(reports).toContain("removed stale socket");
    expect(reports).toContain("listening");
    expect(server.path).toBe(path);
    expect(await answers(path)).toBe(true);
  });

  test("a socket nothing listens on is stale even while its old server still holds a connection named by it", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    const listener = Bun.listen({ unix: path, socket: { data() {} } });
    defer(() => listener.stop(true));
    const client = await connectClient(defer, path);
    // Stop listening but keep serving the client (Bun unlinks the path: a second name keeps the file).
    linkSync(path, dir.path("kept.sock"));
    listener.stop();
    renameSync(dir.path("kept.sock"), path);
    expect(unixListeners(path)).toBe(0);
    expect(readFileSync("/proc/net/unix", "utf8")).toContain(` ${path}\n`); // the connection, under the path
    expect(client.isClosed).toBe(false);

    expect(await prepareSocketPath(path)).toBe(true);
    expect(existsSync(path)).toBe(false);
  });

  test("prepareSocketPath removes a stale socket and says so; a free path is left alone", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    await makeStaleSocket(path);
    expect(await prepareSocketPath(path)).toBe(true);
    expect(existsSync(path)).toBe(false);
    expect(await prepareSocketPath(path)).toBe(false);
    expect(existsSync(path)).toBe(false);
  });
  test("a stale socket that vanishes while it is checked (its server removing it as it stops) leaves the path free, no error", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    await makeStaleSocket(path);
    const preparing = prepareSocketPath(path);
    // The check waits for its probe; the socket goes meanwhile.
    unlinkSync(path);
    expect(await preparing).toBe(false);
    const server = await listen(path);
    expect(server.path).toBe(path);
    expect(await answers(path)).toBe(true);
  });
});

describe("stale hidden names beside the path", () => {
  test("a live server's hidden name (its path removed by hand) is found listening by its listing, never probed, and left", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    const hidden = dir.path(".s.sock.live0000");
    const events: string[] = [];
    let opened = 0;
    const live = Bun.listen({
      unix: hidden,
      socket: { open: () => void events.push(`open ${++opened}`), data: (_s, chunk) => void events.push(`data ${chunk.length}`) },
    });
    defer(() => live.stop(true));
    expect(await removeStaleHiddenNames(path)).toBe(0);
    expect(lstatSync(hidden).isSocket()).toBe(true);
    // A marker connection: had the check probed, the server would have seen that connection first.
    const marker = await connectClient(defer, hidden);
    marker.socket.write(new Uint8Array(3));
    await until(() => events.includes("data 3"), "the marker's bytes");
    expect(events).toEqual(["open 1", "data 3"]);
  });

  test("only a stale socket named by this path's hidden pattern exactly is removed: one of another length, or another path's of the same length, is left", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    const lookAlikes = [".s.sock.abc", ".s.sock.abcdefghi", ".t.sock.abcdefgh", "xs.sock.abcdefgh"];
    for (const name of [".s.sock.abcdefgh", ...lookAlikes]) await makeStaleSocket(dir.path(name));
    expect(await removeStaleHiddenNames(path)).toBe(1);
    expect(readdirSync(dir.dir).sort()).toEqual([...lookAlikes].sort());
  });

  test("a stale hidden name that another file takes while it is probed is left, though the file got the socket's inode back: a regular file, a live server's socket", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    const hidden = dir.path(".s.sock.abcdefgh");
    for (const takes of ["file", "server"] as const) {
      await makeStaleSocket(hidden);
      const removing = removeStaleHiddenNames(path);
      // The check waits for its probe; meanwhile the stale socket is removed and another file takes
      // the name, often with the same inode (ext4 gives a freed one back at once).
      unlinkSync(hidden);
      if (takes === "file") writeFileSync(hidden, "precious\n");
      else {
        const live = Bun.listen({ unix: hidden, socket: { data() {} } });
        defer(() => live.stop(true));
      }
      expect(await removing).toBe(0);
      if (takes === "file") {
        expect(readFileSync(hidden, "utf8")).toBe("precious\n");
        unlinkSync(hidden);
      } else expect(await answers(hidden)).toBe(true);
    }
  });
});

describe("refusals leave the path intact", () => {
  test("a stale socket at the path that another file takes while it is probed is left, and the start refused: a regular file, a live server's socket", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    for (const takes of ["file", "server"] as const) {
      await makeStaleSocket(path);
      const preparing = prepareSocketPath(path);
      // The check waits for its probe; meanwhile the stale socket is removed and another file takes
      // the path, often with the same inode (ext4 gives a freed one back at once).
      unlinkSync(path);
      if (takes === "file") writeFileSync(path, "precious\n");
      else {
        const live = Bun.listen({ unix: path, socket: { data() {} } });
        defer(() => live.stop(true));
      }
      const refusal = await preparing.then(() => undefined, (e: unknown) => e);
      expect([takes, refusal instanceof SocketPathError && refusal.problem]).toEqual([takes, "InUse"]);
      if (takes === "file") {
        expect(readFileSync(path, "utf8")).toBe("precious\n");
        unlinkSync(path);
      } else expect(lstatSync(path).isSocket()).toBe(true);
    }
  });

  test("a stale socket at the path that is removed while it is probed: the path is free, nothing was removed", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    await makeStaleSocket(path);
    const preparing = prepareSocketPath(path);
    unlinkSync(path);
    expect(await preparing).toBe(false);
  });

  test("a regular file is refused with SocketPathError and keeps its content and inode", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    writeFileSync(path, "precious data\n");
    const before = statSync(path);

    const error = await refusal(listen(path));
    expect(error.problem).toBe("NotASocket");
    expect(error.path).toBe(path);
    expect(error.message).toBe(`socket path ${path} is a regular file; refusing to replace it`);
    expect(readFileSync(path, "utf8")).toBe("precious data\n");
    expect(statSync(path).ino).toBe(before.ino);
    expect(statSync(path).mode).toBe(before.mode);
  });

  test("a FIFO (a capture pipe at the wrong path) is refused naming what it is, and stays a FIFO", async () => {
    const dir = socketDir(defer, "sf-");
    const path = makeFifo(dir.path("s.sock"));
    const before = statSync(path);

    const error = await refusal(listen(path));
    expect(error.problem).toBe("NotASocket");
    expect(error.message).toBe(`socket path ${path} is a FIFO; refusing to replace it`);
    expect(statSync(path).isFIFO()).toBe(true);
    expect(statSync(path).ino).toBe(before.ino);
  });

  test("a directory is refused and left with its content", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    mkdirSync(path);
    writeFileSync(`${path}/inside`, "x");
    const before = statSync(path);

    const error = await refusal(listen(path));
    expect(error.problem).toBe("NotASocket");
    expect(error.message).toContain("is a directory");
    expect(statSync(path).isDirectory()).toBe(true);
    expect(statSync(path).ino).toBe(before.ino);
    expect(readFileSync(`${path}/inside`, "utf8")).toBe("x");
  });

  test("a symlink (even to a live socket) is not a socket and is refused", async () => {
    const dir = socketDir(defer, "sf-");
    const target = dir.path("real.sock");
    await listen(target);
    const path = dir.path("link.sock");
    symlinkSync(target, path);

    const error = await refusal(prepareSocketPath(path));
    expect(error.problem).toBe("NotASocket");
    expect(error.message).toBe(`socket path ${path} is a symbolic link; refusing to follow or replace it`);
    expect(lstatSync(path).isSymbolicLink()).toBe(true);
  });

  test("a socket a live server answers on is refused without connecting: the client it serves is not replaced", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    // Connections in the order the live server accepts them, and who sent bytes.
    const events: string[] = [];
    const ids = new Map<unknown, number>();
    const live = await listen(path, {
      handler: {
        ...idle,
        open: (socket) => events.push(`open ${ids.set(socket, ids.size + 1).get(socket)}`),
        data: (socket, chunk) => events.push(`data ${ids.get(socket)} ${chunk.length}`),
        close: (socket, reason) => events.push(`close ${ids.get(socket)} ${reason}`),
      },
    });
    const served = await connectClient(defer, path);
    await until(() => events.length === 1, "the client accepted");
    const before = statSync(path);

    const error = await refusal(listen(path));
    expect(error.problem).toBe("InUse");
    expect(error.message).toBe(`socket ${path} is in use by a live server; stop it first`);
    expect(statSync(path).ino).toBe(before.ino);
    expect(lstatSync(path).isSocket()).toBe(true);

    // A marker connection, accepted after anything that connected before it: had the check
    // connected, the live server would have accepted that probe as its new client first.
    const marker = await connectClient(defer, path);
    marker.socket.write(new Uint8Array(3));
    await until(() => events.includes("data 2 3") || events.includes("data 3 3"), "the marker's bytes");
    expect(events).toEqual(["open 1", "close 1 replaced by a new client", "open 2", "data 2 3"]);
    expect(live.connections).toBe(2);
    // The served client was replaced by the marker, and by nothing before it.
    await served.closed;
  });

  test("a live socket another process bound by a relative name is found by its listing, the name asked of that process, and refused without a probe connection", async () => {
    const dir = socketDir(defer, "sf-");
    const listener = await spawnListener("rel.sock", dir.dir);
    defer(listener.kill);
    // Sockets of this process's own (as an agent serving its other channel holds): owners of other
    // sockets, met before the listener's (a lower pid), must not end the search for its process.
    const own = Bun.listen({ unix: dir.path("own.sock"), socket: { data() {} } });
    defer(() => own.stop(true));
    const path = dir.path("rel.sock");
    const error = await refusal(prepareSocketPath(path));
    expect(error.problem).toBe("InUse");
    expect(lstatSync(path).isSocket()).toBe(true);
    // A marker connection: had the check probed, the server would have seen that connection first.
    const marker = await connectClient(defer, path);
    marker.socket.write(new Uint8Array(3));
    await until(() => listener.events().includes("data 3"), "the marker's bytes");
    expect(listener.events()).toEqual(["open", "data 3"]);
  });

  test("a live datagram socket at the path is refused naming its type and left; once closed it is stale and removed", async () => {
    const path = socketDir(defer, "sf-").path("d.sock");
    const close = bindSocket(path, SOCK_DGRAM);
    defer(close);
    const before = lstatSync(path);
    const error = await refusal(prepareSocketPath(path));
    expect(error.problem).toBe("InUse");
    expect(error.message).toBe(`socket ${path} is a live datagram socket (SOCK_DGRAM); refusing to replace it`);
    expect(lstatSync(path)).toMatchObject({ dev: before.dev, ino: before.ino });
    close();
    expect(await prepareSocketPath(path)).toBe(true);
    expect(existsSync(path)).toBe(false);
  });

  test("a listening packet socket (SOCK_SEQPACKET) at the path, found by its listing, is refused naming its type, and left", async () => {
    const path = socketDir(defer, "sf-").path("p.sock");
    defer(bindSocket(path, SOCK_SEQPACKET));
    const before = lstatSync(path);
    const error = await refusal(prepareSocketPath(path));
    expect(error.problem).toBe("InUse");
    expect(error.message).toBe(`socket ${path} is a live packet socket (SOCK_SEQPACKET); refusing to replace it`);
    expect(lstatSync(path)).toMatchObject({ dev: before.dev, ino: before.ino });
  });

  test("a stream socket another process bound at the path and has yet to listen on (a server starting) is refused and left; once closed it is stale and removed", async () => {
    const path = socketDir(defer, "sf-").path("b.sock");
    const close = bindSocket(path, SOCK_STREAM, "not listening");
    defer(close);
    const before = lstatSync(path);
    // A connect is refused, as at a stale socket: only its listing tells that a process holds it.
    expect(await answers(path)).toBe(false);
    const error = await refusal(prepareSocketPath(path));
    expect(error.problem).toBe("InUse");
    expect(error.message).toBe(`socket ${path} is bound by a live process that does not listen on it yet (a server starting?); refusing to replace it`);
    expect(lstatSync(path)).toMatchObject({ dev: before.dev, ino: before.ino });
    close();
    expect(await prepareSocketPath(path)).toBe(true);
    expect(existsSync(path)).toBe(false);
  });

  test("a missing directory gives a clear BadDirectory error", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("no/such/dir/s.sock");
    const error = await refusal(listen(path));
    expect(error.problem).toBe("BadDirectory");
    expect(error.message).toBe(`socket directory ${dir.path("no/such/dir")} does not exist`);
    expect(existsSync(dir.path("no"))).toBe(false);
  });

  test("a parent that is a file is a BadDirectory too", async () => {
    const dir = socketDir(defer, "sf-");
    writeFileSync(dir.path("file"), "x");
    const error = await refusal(prepareSocketPath(dir.path("file/s.sock")));
    expect(error.problem).toBe("BadDirectory");
    expect(readFileSync(dir.path("file"), "utf8")).toBe("x");
  });

  test("a path of exactly 107 bytes, the most sun_path holds, is used", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("x".repeat(107 - dir.dir.length - 1));
    expect(Buffer.byteLength(path)).toBe(107);
    await listen(path);
    expect(await answers(path)).toBe(true);
  });

  test("a path longer than sun_path allows is refused before anything else", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("x".repeat(120));
    const error = await refusal(listen(path));
    expect(error.problem).toBe("TooLong");
    expect(error.message).toContain("allowed at most 107");
    expect(existsSync(path)).toBe(false);
  });
});

/**
 * What the socket-file module's `name`(path) gives when nobody calls it:
 * "gives <value>", or the error's message. The module is copied into `dir`
 * (which nobody must be able to enter), so that nobody can read it whatever
 * the checkout's permissions.
 */
async function callAsNobody(dir: string, name: "prepareSocketPath" | "removeStaleHiddenNames", path: string): Promise<string> {
  // Copies nobody can read, in the layout their imports expect.
  mkdirSync(join(dir, "transport"), { recursive: true });
  copyFileSync(join(REPO, "src/transport/socket-file.ts"), join(dir, "transport/socket-file.ts"));
  for (const layer of ["protocol", "io"]) cpSync(join(REPO, "src", layer), join(dir, layer), { recursive: true });
  const script = `const socketFile = await import("./transport/socket-file.ts");
    try { console.log("gives", await socketFile[${JSON.stringify(name)}](${JSON.stringify(path)})); } catch (e) { console.log(e.message); }`;
  const result = await run(asNobody(dir, [BUN, "-e", script]), { cwd: dir });
  return result.stdout.trim();
}

describe.skipIf(!canSwitchUser)("as another user (nobody)", () => {
  test("a socket it may not connect to (EACCES) cannot be probed: refused and left alone, never taken for stale", async () => {
    const dir = socketDir(defer, "sf-");
    chmodSync(dir.dir, 0o777); // nobody could remove the socket: only the check stops it
    const path = dir.path("s.sock");
    await makeStaleSocket(path);
    chmodSync(path, 0o600);
    expect(await callAsNobody(dir.dir, "prepareSocketPath", path)).toBe(`socket ${path} cannot be probed (EACCES); refusing to replace it`);
    expect(lstatSync(path).isSocket()).toBe(true);
  });

  test("a live server of another user (root's, whose descriptors nobody may not read) listed by our path is found by its name, without a probe connection", async () => {
    const dir = socketDir(defer, "sf-");
    chmodSync(dir.dir, 0o777);
    const path = dir.path("s.sock");
    const events: string[] = [];
    let opened = 0;
    const live = Bun.listen({
      unix: path,
      socket: { open: () => void events.push(`open ${++opened}`), data: (_s, chunk) => void events.push(`data ${chunk.length}`) },
    });
    defer(() => live.stop(true));
    // nobody could connect: only the listing keeps a probe away.
    chmodSync(path, 0o666);
    expect(await callAsNobody(dir.dir, "prepareSocketPath", path)).toBe(`socket ${path} is in use by a live server; stop it first`);
    // A marker connection: had nobody's check probed, the server would have seen that connection first.
    const marker = await connectClient(defer, path);
    marker.socket.write(new Uint8Array(3));
    await until(() => events.includes("data 3"), "the marker's bytes");
    expect(events).toEqual(["open 1", "data 3"]);
  });

  test("a socket directory it may not write is refused before anything else", async () => {
    const dir = socketDir(defer, "sf-");
    chmodSync(dir.dir, 0o755);
    const path = dir.path("s.sock");
    expect(await callAsNobody(dir.dir, "prepareSocketPath", path)).toBe(`socket directory ${dir.dir} is not writable (EACCES)`);
  });

  test("a socket directory it may write but not read: stale hidden names cannot be looked for, none is removed, and nothing fails", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    const hidden = dir.path(".s.sock.abcdefgh");
    await makeStaleSocket(hidden);
    chownSync(hidden, NOBODY, NOBODY);
    chmodSync(dir.dir, 0o333);
    expect(await callAsNobody(dir.dir, "removeStaleHiddenNames", path)).toBe("gives 0");
    expect(await callAsNobody(dir.dir, "prepareSocketPath", path)).toBe("gives false");
    expect(lstatSync(hidden).isSocket()).toBe(true);
  });

  test("a stale hidden name of its own it may not connect to (EACCES) cannot be told stale: it is left", async () => {
    const dir = socketDir(defer, "sf-");
    chmodSync(dir.dir, 0o777);
    const path = dir.path("s.sock");
    const hidden = dir.path(".s.sock.abcdefgh");
    await makeStaleSocket(hidden);
    chownSync(hidden, NOBODY, NOBODY);
    chmodSync(hidden, 0o000);
    expect(await callAsNobody(dir.dir, "removeStaleHiddenNames", path)).toBe("gives 0");
    expect(lstatSync(hidden).isSocket()).toBe(true);
    // Once it may connect, the same name is found stale and removed.
    chmodSync(hidden, 0o600);
    expect(await callAsNobody(dir.dir, "removeStaleHiddenNames", path)).toBe("gives 1");
    expect(existsSync(hidden)).toBe(false);
  });
});

describe("socket file mode and removal", () => {
  test("the mode asked for is the socket's, whatever the umask, and the umask is restored", async () => {
    const dir = socketDir(defer, "sf-");
    const umask = process.umask(0o077);
    try {
      for (const mode of [0o660, 0o600, 0o666]) {
        const path = dir.path(`m${mode.toString(8)}.sock`);
        const server = await listen(path, { mode });
        expect(statSync(path).mode & 0o777).toBe(mode);
        expect(process.umask()).toBe(0o077);
        await server.stop();
      }
    } finally {
      process.umask(umask);
    }
  });

  test("in a directory whose default ACL grants only the owner, the socket still has the mode asked for (the group can connect)", async () => {
    const dir = socketDir(defer, "sf-");
    setDefaultAcl(dir.dir, { owner: 0o7, group: 0, other: 0 });
    // The ACL really narrows what is created here: a plain file comes out for its owner alone.
    writeFileSync(dir.path("plain"), "");
    expect(statSync(dir.path("plain")).mode & 0o777).toBe(0o600);
    const path = dir.path("s.sock");
    await listen(path, { mode: 0o660 });
    expect(statSync(path).mode & 0o777).toBe(0o660);
  });

  test("a file that appears at the path while the socket is bound is refused and left as it was, with nothing of ours beside it", () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    let error: unknown;
    try {
      bindSocketFile(path, 0o660, (name) => {
        // Another process, between the path's check and our link to it.
        writeFileSync(path, "theirs\n");
        return Bun.listen({ unix: name, socket: { data() {} } });
      });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SocketPathError);
    expect((error as SocketPathError).problem).toBe("InUse");
    expect(readFileSync(path, "utf8")).toBe("theirs\n");
    expect(readdirSync(dir.dir)).toEqual(["s.sock"]);
  });

  test("stop() removes the socket file; a second stop() is harmless", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    const server = await listen(path);
    expect(lstatSync(path).isSocket()).toBe(true);
    await server.stop();
    expect(existsSync(path)).toBe(false);
    expect(await answers(path)).toBe(false);
    await server.stop();
  });

  test("removeSocketFile removes the socket it is given (same device and inode) and nothing else", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    writeFileSync(path, "not a socket");
    const file = statSync(path);
    await removeSocketFile(path, { dev: file.dev, ino: file.ino });
    expect(readFileSync(path, "utf8")).toBe("not a socket");
    await removeSocketFile(dir.path("missing.sock"), { dev: file.dev, ino: file.ino });

    const ours = dir.path("ours.sock");
    await makeStaleSocket(ours);
    const identity = { dev: lstatSync(ours).dev, ino: lstatSync(ours).ino };
    const theirs = dir.path("theirs.sock");
    await makeStaleSocket(theirs);
    await removeSocketFile(theirs, identity);
    expect(lstatSync(theirs).isSocket()).toBe(true);
    await removeSocketFile(ours, identity);
    expect(existsSync(ours)).toBe(false);
  });

  test("a hidden name another file already holds is given up for a fresh one: the socket is bound and linked all the same, the file left", () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    // The names drawn, stubbed: every random character the alphabet's first ("a"), then its second.
    writeFileSync(dir.path(".s.sock.aaaaaaaa"), "theirs\n");
    const real = crypto.getRandomValues;
    let draws = 0;
    crypto.getRandomValues = (<T extends ArrayBufferView | null>(bytes: T) => ((bytes as unknown as Uint8Array).fill(draws++), bytes)) as typeof crypto.getRandomValues;
    let bound: ReturnType<typeof bindSocketFile<Bun.UnixSocketListener<undefined>>>;
    try {
      bound = bindSocketFile(path, 0o660, (name) => Bun.listen({ unix: name, socket: { data() {} } }));
    } finally {
      crypto.getRandomValues = real;
    }
    defer(() => bound.listener.stop(true));
    expect(draws).toBe(2);
    expect(bound.identity.hidden).toBe(dir.path(".s.sock.bbbbbbbb"));
    expect(lstatSync(path).ino).toBe(lstatSync(dir.path(".s.sock.bbbbbbbb")).ino);
    expect(readFileSync(dir.path(".s.sock.aaaaaaaa"), "utf8")).toBe("theirs\n");
  });

  test("restoreSocketFile puts the socket back at its path from the hidden name it was bound by; a path taken since, or a hidden name gone too, is left as it is", () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    const { listener, identity } = bindSocketFile(path, 0o640, (name) => Bun.listen({ unix: name, socket: { data() {} } }));
    defer(() => listener.stop(true));
    expect(identity.hidden).toBe(dir.path(readdirSync(dir.dir).find((name) => name !== "s.sock")!));
    expect(restoreSocketFile(path, identity)).toBe(false); // in place: nothing to do
    unlinkSync(path);
    expect(restoreSocketFile(path, identity)).toBe(true);
    expect(lstatSync(path)).toMatchObject({ ino: identity.ino, mode: lstatSync(identity.hidden!).mode });
    expect(lstatSync(path).mode & 0o777).toBe(0o640);
    // Taken by another file: left alone.
    unlinkSync(path);
    writeFileSync(path, "theirs\n");
    expect(restoreSocketFile(path, identity)).toBe(false);
    expect(readFileSync(path, "utf8")).toBe("theirs\n");
    // The hidden name gone too, or another file by that name: nothing to put back.
    unlinkSync(path);
    renameSync(identity.hidden!, dir.path("aside"));
    expect(restoreSocketFile(path, identity)).toBe(false);
    writeFileSync(identity.hidden!, "other\n");
    expect(restoreSocketFile(path, identity)).toBe(false);
    expect(existsSync(path)).toBe(false);
  });

  test("stop() leaves a socket another server bound at the path after ours was moved away", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    const first = await listen(path);
    renameSync(path, dir.path("moved.sock"));
    const second = await listen(path);
    const theirs = statSync(path).ino;

    await first.stop();
    expect(lstatSync(path).isSocket()).toBe(true);
    expect(statSync(path).ino).toBe(theirs);
    const connectionsBefore = second.connections;
    expect(await answers(path)).toBe(true);
    await until(() => second.connections === connectionsBefore + 1, "the second server accepted");
    await second.stop();
    expect(existsSync(path)).toBe(false);
  });

  test("the socket is bound by a hidden name beside it, another link to the same file; stop() removes both", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    const server = await listen(path);
    const names = readdirSync(dir.dir).sort();
    expect(names.length).toBe(2);
    expect(names[1]).toBe("s.sock");
    expect(names[0]).toMatch(/^\.s\.sock\.[a-z0-9]{8}$/);
    expect(lstatSync(dir.path(names[0]!)).ino).toBe(lstatSync(path).ino);
    await server.stop();
    expect(readdirSync(dir.dir)).toEqual([]);
  });

  test("a path at the sun_path limit: the hidden name is still in the socket's own directory, and a live server there is found without a probe", async () => {
    const dir = socketDir(defer, "sf-");
    // "/tmp/sf-XXXXXX/" + d...d + "/s": 105 bytes, too long for ".s.XXXXXXXX" beside it.
    const deep = `${dir.dir}/${"d".repeat(105 - dir.dir.length - 3)}`;
    mkdirSync(deep);
    const path = `${deep}/s`;
    expect(Buffer.byteLength(path)).toBe(105);
    const live = await listen(path);
    const links = readdirSync(deep);
    expect(links.length).toBe(2);
    for (const name of links) expect(lstatSync(`${deep}/${name}`).ino).toBe(lstatSync(path).ino);
    // Nothing beside the directory: the socket's directory alone decides who reaches it.
    expect(readdirSync(dir.dir)).toEqual([deep.slice(dir.dir.length + 1)]);
    expect((await refusal(prepareSocketPath(path, 1))).problem).toBe("InUse");
    await Bun.sleep(50);
    expect(live.connections).toBe(0);
    await live.stop();
    expect(readdirSync(deep)).toEqual([]);
  });

  test("a server listening by a relative name is found by another process's absolute name without a probe", async () => {
    const dir = socketDir(defer, "sf-");
    const home = process.cwd();
    process.chdir(dir.dir);
    let live;
    try {
      live = await listen("s.sock");
    } finally {
      process.chdir(home);
    }
    expect((await refusal(prepareSocketPath(dir.path("s.sock"), 1))).problem).toBe("InUse");
    await Bun.sleep(50);
    expect(live.connections).toBe(0);
  });

  test("a live server is found by its hidden name, without a probe connection that would replace its client", async () => {
    const dir = socketDir(defer, "sf-");
    const path = dir.path("s.sock");
    const live = await listen(path);
    // A probe connection would be accepted: the count would move.
    const error = await refusal(prepareSocketPath(path, 1));
    expect(error.problem).toBe("InUse");
    await Bun.sleep(50);
    expect(live.connections).toBe(0);
  });
});
