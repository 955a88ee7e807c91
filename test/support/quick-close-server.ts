/**
 * A server that accepts, writes `frames` OpusFrames and closes, `count`
 * times, as fast as libc does it: blocking socket calls through bun:ffi,
 * no event loop in between, as a Go or C server that exits (or drops a
 * client) right after it writes can be. A Bun server takes a turn of its loop
 * to accept, and its client has seen the connection made by then.
 *
 * Run: bun quick-close-server.ts PATH COUNT FRAMES; prints "listening", then
 * "accepted N" when done.
 */
import { ptr } from "bun:ffi";
import { AF_UNIX, openLibc, SOCK_STREAM, unixAddress } from "../../src/io/libc.ts";
import { wireBytes } from "./wire.ts";

const [path, count, frames] = [process.argv[2]!, Number(process.argv[3]), Number(process.argv[4])];
const opened = openLibc({
  socket: { args: ["i32", "i32", "i32"], returns: "i32" },
  bind: { args: ["i32", "ptr", "u32"], returns: "i32" },
  listen: { args: ["i32", "i32"], returns: "i32" },
  accept: { args: ["i32", "ptr", "ptr"], returns: "i32" },
  write: { args: ["i32", "ptr", "u64"], returns: "i64" },
  close: { args: ["i32"], returns: "i32" },
});
if (!opened.library) throw new Error(opened.detail);
const libc = opened.library.symbols;

const address = unixAddress(path);

const listener = libc.socket(AF_UNIX, SOCK_STREAM, 0);
if (listener < 0 || libc.bind(listener, ptr(address), address.length) !== 0 || libc.listen(listener, 16) !== 0) throw new Error(`cannot listen on ${path}`);
const bytes = wireBytes(0, frames);
console.log("listening");
for (let i = 0; i < count; i++) {
  const client = libc.accept(listener, null, null);
  if (client < 0) throw new Error("accept failed");
  if (Number(libc.write(client, ptr(bytes), bytes.length)) !== bytes.length) throw new Error("short write");
  libc.close(client);
}
libc.close(listener);
console.log(`accepted ${count}`);
