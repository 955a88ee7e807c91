/**
 * Mutants that once survived the suite: each stands for a real bug a test
 * should catch. The mutation run (mutants.ts) applies every one of them, and
 * fails if any survives. `find` must occur once in `file` (the first line
 * holding it is mutated); keep it in step when the code moves.
 */
export interface CuratedMutant {
  name: string;
  file: string;
  find: string;
  replace: string;
}

export const CURATED: readonly CuratedMutant[] = [
  {
    name: "no write-deadline drop",
    file: "src/transport/frame-writer.ts",
    find: "if (this.deadlineMs > 0) this.queue.dropOlderThan(now - this.deadlineMs, DropReason.WriteDeadline);",
    replace: ";",
  },
  {
    name: "an abort no longer ends the backoff sleep",
    file: "src/transport/unix-client.ts",
    find: 'signal?.addEventListener("abort", done, { once: true });',
    replace: ";",
  },
  {
    name: "Ogg page CRC never checked",
    file: "src/media/ogg-page.ts",
    find: "crcValid(): boolean {",
    replace: "crcValid(): boolean { return true;",
  },
  {
    name: "live server probed by connecting, without the /proc/net/unix check",
    file: "src/transport/socket-file.ts",
    find: "if (listedAsListening(listings) || (await answers(path, probeTimeoutMs))) return true;",
    replace: "if (await answers(path, probeTimeoutMs)) return true;",
  },
  {
    name: "a live server's hidden name probed by connecting at start, its client replaced by the probe",
    file: "src/transport/socket-file.ts",
    find: "if (await live(hidden, stat, probeTimeoutMs).catch(() => true)) continue;",
    replace: "if (await answers(hidden, probeTimeoutMs).catch(() => true)) continue;",
  },
  {
    name: "a stale hidden name removed without looking at it again after the probe",
    file: "src/transport/socket-file.ts",
    find: "if (!unchanged(hidden, stat)) continue;",
    replace: ";",
  },
  {
    name: "the send queue's per-message arrays laid out anew without each message's type",
    file: "src/transport/frame-queue.ts",
    find: "types[i] = this.types[slot];",
    replace: ";",
  },
  {
    name: "per-message arrays grown under a lowered bound given back again, an allocation per swing",
    file: "src/transport/frame-queue.ts",
    find: "this.resizeSlots(this.starts.length * 2);",
    replace: "this.resizeSlots(this.starts.length * 2); return;",
  },
  {
    name: "a frame cut by a short write copied aside after the shift that may lay the ring out anew",
    file: "src/transport/frame-writer.ts",
    find: "const tailStart = start + wholeBytes;",
    replace: "queue.shift(whole); whole = 0; const tailStart = start + wholeBytes;",
  },
  {
    name: "hidden socket name bound by a relative name, which /proc/net/unix cannot match",
    file: "src/transport/socket-file.ts",
    find: "const prefixes = [resolve(path), path].flatMap(",
    replace: "const prefixes = [path].flatMap(",
  },
  {
    name: "socket left with the mode a directory's default ACL narrowed it to",
    file: "src/transport/socket-file.ts",
    find: "chmodSync(`/proc/self/fd/${held}`, mode);",
    replace: ";",
  },
  {
    name: "a stale socket that went while it was checked fails the start",
    file: "src/transport/socket-file.ts",
    find: "if (!lstatSync(path, { throwIfNoEntry: false })) return false;",
    replace: ";",
  },
  {
    name: "a listing's process looked for among every socket's owners, so the search stops at the first owner found and a relative-bound live server is probed",
    file: "src/transport/socket-file.ts",
    find: "if (inodes.has(inode) && !owners.has(inode)) owners.set(inode, Number(pid));",
    replace: "if (inodes.has(inode) || !owners.has(inode)) owners.set(inode, Number(pid));",
  },
  {
    name: "room never looked for under a latency budget alone: frames wait for a drain that a slow reader never brings",
    file: "src/transport/frame-writer.ts",
    find: "if (this.roomTimer || !(this.deadlineMs > 0 || this.budgetMs > 0 || this.closedFor)) return;",
    replace: "if (this.roomTimer || !(this.deadlineMs > 0 || this.closedFor)) return;",
  },
  {
    name: "the look back over a connection's writes started two past the newest, so writes the client has read count as unread and live writing holds past the budget",
    file: "src/transport/in-flight.ts",
    find: "covered += this.bytes[this.slot(this.count - 1 - keep)];",
    replace: "covered += this.bytes[this.slot(this.count + 1 - keep)];",
  },
  {
    name: "a file another user swapped in for the hidden name while binding left linked at the socket path",
    file: "src/transport/socket-file.ts",
    find: "if (!sameFile(path, stat)) {",
    replace: "if (!sameFile(path, stat)) { throw replaced(path, hidden);",
  },
  {
    name: "a new FIFO made at the source's path never followed",
    file: "src/media/fifo-source.ts",
    find: "if (stat && stat.dev === this.fifo.dev && stat.ino === this.fifo.ino) return;",
    replace: "return;",
  },
  {
    name: "a failed write's bytes taken back off a file holding fewer, which ftruncate's negative length empties",
    file: "src/io/write-from.ts",
    find: "if (size < bytes) return false;",
    replace: ";",
  },
  {
    name: "a failed ftruncate told as a failed write's bytes taken back, so the sink counts frames lost that the file still holds",
    file: "src/io/write-from.ts",
    find: "} catch {",
    replace: "} catch { return true;",
  },
  {
    name: "descriptor 0 taken for no descriptor: a socket a process has as its stdin is never asked for its unsent bytes",
    file: "src/io/unsent-bytes.ts",
    find: "if (!Number.isInteger(fd) || fd < 0) return -1;",
    replace: "if (!Number.isInteger(fd) || fd <= 0) return -1;",
  },
  {
    name: "the ioctl's failure not looked at: a closed descriptor or a file reads as a socket with nothing unsent",
    file: "src/io/unsent-bytes.ts",
    find: "return ioctlCall.symbols.ioctl(fd, SIOCOUTQ, count) === 0 ? count[0]! : -1;",
    replace: "ioctlCall.symbols.ioctl(fd, SIOCOUTQ, count); return count[0]!;",
  },
  {
    name: "an HTTP client that stops reading never cut: what waits for it arms no stall timer",
    file: "src/observe/http-front.ts",
    find: "from.pause();",
    replace: "from.pause(); return;",
  },
  {
    name: "a left-behind HTTP directory judged by its server alone, so a starting agent's is removed",
    file: "src/observe/http-server.ts",
    find: "if (!pid || pid === process.pid || alive(pid)) continue;",
    replace: "if (!pid || pid === process.pid) continue;",
  },
  {
    name: "a log's waiting lines given up when the process exits at once: no drain hooked to its exit",
    file: "src/observe/line-writer.ts",
    find: "private drainAtExit = false;",
    replace: "private drainAtExit = true;",
  },
  {
    name: "an HTTP server's exit hook kept after its stop: one more held at every start in a process that runs roles one after another",
    file: "src/observe/http-server.ts",
    find: 'process.off("exit", this.removeAtExit);',
    replace: ";",
  },
  {
    name: "unread bytes looked at again and again: a server that floods without acking is never given up",
    file: "src/channels/input-client.ts",
    find: "this.ackLookedAgain = true;",
    replace: "this.ackLookedAgain = false;",
  },
  {
    name: "the look at unread bytes taken once for good, never again for a later Ack: a client stopped past its Ack timeout drops a server that answered",
    file: "src/channels/input-client.ts",
    find: "this.ackLookedAgain = false;",
    replace: "this.ackLookedAgain = true;",
  },
  {
    name: "a Heartbeat tick due with an overdue Ack judges it before the unread bytes are read: Heartbeats further apart than the Ack timeout drop, after a stall, a server that answered",
    file: "src/channels/input-client.ts",
    find: "if (!this.connection.socket || (!this.ackLookedAgain && this.ackOverdue())) return;",
    replace: "if (!this.connection.socket || this.ackOverdue()) return;",
  },
  {
    name: "Heartbeats allowed after Stop",
    file: "src/channels/input-client.ts",
    find: "if (this.queue.isFull || this.finishing) return;",
    replace: "if (this.queue.isFull) return;",
  },
  {
    name: "the input client closes at once after its Stop: a short run's Config Ack goes unread, as if the server never answered",
    file: "src/channels/input-client.ts",
    find: "if (out && this.unacked > 0 && this.connected) {",
    replace: "if (false) {",
  },
  {
    name: "a sink whose flush failed outside a read left uncounted by it: what a client sends while let go counted session_ended",
    file: "src/channels/input-server.ts",
    find: "sinkFailed(): void {",
    replace: "sinkFailed(): void { return;",
  },
  {
    name: "a client let go that broke the framing read again with a fresh parser: its stream resynced at a read's edge",
    file: "src/channels/input-server.ts",
    find: "this.unreadable.add(socket);",
    replace: ";",
  },
  {
    name: "what an output client sends never parsed: bytes that break the framing never disconnect it",
    file: "src/channels/output-server.ts",
    find: "parser.push(chunk);",
    replace: ";",
  },
  {
    name: "the output client reads on while its sink's reader is behind: what the server sends piles up in the sink instead of in the socket",
    file: "src/channels/output-client.ts",
    find: "this.connection.hold(waiting);",
    replace: ";",
  },
  {
    name: "input serve never tells systemd READY=1: a Type=notify unit of it times out starting",
    file: "src/roles/input-serve.ts",
    find: "shutdown.ready();",
    replace: ";",
  },
  {
    name: "an input role's failure before its settings exist written without the log format of the config file's input section",
    file: "src/cli/run.ts",
    find: 'command === "output" || command === "input" ? [command] : []',
    replace: 'command === "output" || command !== "input" ? [command] : []',
  },
  {
    name: "output serve accepting through its final flush: a client coming after SIGTERM replaces the one taking the last frames",
    file: "src/roles/output-serve.ts",
    find: "server.stopAccepting();",
    replace: ";",
  },
  {
    name: "a lossless output serve going on to its stop once its source is read, not once its queue has drained: a client slower than the final flush's second loses the rest",
    file: "src/roles/output-serve.ts",
    find: "if (!shutdown.isRequested && !live) await shutdown.race(server.waitForIdle());",
    replace: ";",
  },
  {
    name: "a lossless output serve reading its file before a client connects: frames queued and stamped while none is there, aged by the wait when one comes",
    file: "src/roles/output-serve.ts",
    find: "await shutdown.race(server.waitForClient());",
    replace: ";",
  },
  {
    name: "READY=1 told after STOPPING=1 when a stop comes during the start: the service manager takes a stopping agent for started",
    file: "src/roles/shutdown.ts",
    find: "if (this.isReady || this.stopping) return;",
    replace: "if (this.isReady) return;",
  },
  {
    name: "input send's connect under way as a signal lands not seen through: the connection the server accepted ends without Config or Stop, a dropped connection",
    file: "src/roles/input-send.ts",
    find: "await within(client.connectDecided(), FINAL_FLUSH_MS, undefined);",
    replace: ";",
  },
  {
    name: "every message copied through the parser's own buffer, even one whole in its chunk",
    file: "src/protocol/frame-parser.ts",
    find: "if (this.held > 0) return this.continuePartial();",
    replace: "if (this.held >= 0) return this.continuePartial();",
  },
  {
    name: "a Config changed in its channels or frame size alone taken for the same audio: the input client never sends it",
    file: "src/protocol/config-payload.ts",
    find: "return a.sampleRate === b.sampleRate && a.channels === b.channels",
    replace: "return a.sampleRate === b.sampleRate || a.channels === b.channels",
  },
  {
    name: "every run told its log is not rotated, --log-max-bytes set or not",
    file: "src/cli/run.ts",
    find: "if (io === defaultIo && maxLogBytes !== undefined)",
    replace: "if (io === defaultIo || maxLogBytes !== undefined)",
  },
  {
    name: "serve's format error naming --format, a flag serve does not have, for --output-format",
    file: "src/cli/run.ts",
    find: "name.endsWith(end) && settings[name] === path",
    replace: "name.endsWith(end) && settings[name] !== path",
  },
  {
    name: "a source or sink that is not there told without the directory or link target that is missing",
    file: "src/cli/run.ts",
    find: 'if (code === "ENOENT") {',
    replace: 'if (code !== "ENOENT") {',
  },
  {
    name: "another user's symbolic link in a world-writable sticky directory (as /tmp) followed by a sink's open",
    file: "src/media/sink-path.ts",
    find: 'return dir?.kind === "world-writable" ? dir : undefined;',
    replace: 'return dir?.kind !== "world-writable" ? dir : undefined;',
  },
  {
    name: "the lenient start-up check reading on where a bad page's length says it ends, refusing a file its source streams",
    file: "src/media/file-format.ts",
    find: "pages.resync();",
    replace: ";",
  },
  {
    name: "a sink's file looked at for its format without --append, refused where it is only replaced",
    file: "src/media/open.ts",
    find: 'if (options.append && options.fd === undefined && path !== "-") checkAppendFormat(path, format, options.channel);',
    replace: 'if (options.append && options.fd === undefined || path !== "-") checkAppendFormat(path, format, options.channel);',
  },
  {
    name: "a JETKVM_AUDIO_ variable's bytes not looked at: a socket path that is not UTF-8 taken as another path",
    file: "src/cli/argument-bytes.ts",
    find: '(name.startsWith("AUDIO_AGENT_") || name.startsWith("JETKVM_AUDIO_"))',
    replace: 'name.startsWith("AUDIO_AGENT_")',
  },
  {
    name: "descriptor 0 taken for a failed socket(): where the process has closed its stdin no local peer is named, and the monitor refuses every one",
    file: "src/observe/local-peer.ts",
    find: "if (fd < 0) return undefined;",
    replace: "if (fd <= 0) return undefined;",
  },
  {
    name: "/healthz without where a recording's file stands: sink_file given only to an end without one, which JSON leaves out",
    file: "src/observe/readings.ts",
    find: "...(r.sinkFile !== undefined ? { sink_file: r.sinkFile } : {}),",
    replace: "...(r.sinkFile === undefined ? { sink_file: r.sinkFile } : {}),",
  },
  {
    name: "a pipe sink closed while its reader is behind never closing its descriptor once it lingers no more",
    file: "src/media/byte-sink.ts",
    find: "await this.release();",
    replace: ";",
  },
  {
    name: "a whole file appended to cut to its own length: an append-only one (chattr +a) refused, ftruncate failing with EPERM",
    file: "src/media/byte-sink.ts",
    find: "if (kept.length < file.size) {",
    replace: "if (kept.length <= file.size) {",
  },
  {
    name: "the descriptor an Ogg file's stream endings are written through left open, one more at each start",
    file: "src/media/byte-sink.ts",
    find: "closeSync(own);",
    replace: ";",
  },
  {
    name: "a log file's lines waiting behind a write in the thread pool offered again every 20 ms: some fifty wake-ups a second while its disk holds the write",
    file: "src/observe/line-writer.ts",
    find: "if (this.retry || this.offLoop) return;",
    replace: "if (this.retry && this.offLoop) return;",
  },
  {
    name: "a write in the thread pool that took all of its bytes written again from its end, zero bytes at a time, its done never told",
    file: "src/io/write-from.ts",
    find: 'if (code === "EINTR" || (code === undefined && at + n < end)) return writeFromOffLoop(fd, bytes, code ? at : at + n, end, done);',
    replace: 'if (code === "EINTR" || (code === undefined || at + n < end)) return writeFromOffLoop(fd, bytes, code ? at : at + n, end, done);',
  },
  {
    name: "room taken at a resize or a fall in the unread count though the client's unread data still fills the send buffer: a write the kernel refuses",
    file: "src/transport/frame-writer.ts",
    find: "if (unread >= 0) {",
    replace: "if (!(unread >= 0)) {",
  },
];

/**
 * Generated mutants reviewed and found unable to change what the code does;
 * the run lists them with the reason instead of running them. `before` and
 * `after` are the mutated line, trimmed, before and after the change.
 */
export interface EquivalentMutant {
  file: string;
  before: string;
  after: string;
  why: string;
  /**
   * Where `before` stands on several lines and the reason holds for one:
   * text of a line above it, which the file holds once; the entry is for
   * the first line after that one which is `before`.
   */
  within?: string;
}

/** The lines (1-based) of `lines`, the file's, that an entry stands for: none once the code moved away from it. */
export function reviewedLines(e: EquivalentMutant, lines: readonly string[]): number[] {
  const at = lines.flatMap((line, i) => (line.trim() === e.before ? [i + 1] : []));
  if (e.within === undefined) return at;
  const marks = lines.flatMap((line, i) => (line.includes(e.within!) ? [i + 1] : []));
  if (marks.length !== 1) return [];
  const first = at.find((n) => n > marks[0]!);
  return first === undefined ? [] : [first];
}

export const EQUIVALENT: readonly EquivalentMutant[] = [
  {
    file: "src/protocol/frame-parser.ts",
    before: "if (this.held < HEADER_SIZE) {",
    after: "if (this.held <= HEADER_SIZE) {",
    why: "with the whole header held, take(0) copies nothing and the same header is validated again, with the same result",
  },
  {
    file: "src/protocol/frame-parser.ts",
    before: "if (count > 0) this.partial.set(this.chunk.subarray(this.pos, this.pos + count), 0);",
    after: "if (count >= 0) this.partial.set(this.chunk.subarray(this.pos, this.pos + count), 0);",
    why: "setting an empty subarray copies nothing",
  },
  {
    file: "src/transport/unix-client.ts",
    before: 'signal?.addEventListener("abort", done, { once: true });',
    after: 'signal?.addEventListener("abort", done, { once: false });',
    why: "done() removes the listener itself",
  },
  {
    file: "src/transport/socket-tuner.ts",
    before: "if (!this.socket || this.socket.readyState <= 0) return;",
    after: "if (!this.socket || this.socket.readyState < 0) return;",
    why: "an attached Bun socket is open (1) or closed (-1), never 0: a closed one returns either way",
  },
  {
    file: "src/transport/socket-tuner.ts",
    before: "if (!socket || socket.readyState <= 0) return undefined;",
    after: "if (!socket || socket.readyState < 0) return undefined;",
    why: "an attached Bun socket is open (1) or closed (-1), never 0",
  },
  {
    file: "src/transport/socket-tuner.ts",
    before: 'return typeof fd === "number" && fd >= 0 ? fd : undefined;',
    after: 'return typeof fd === "number" || fd >= 0 ? fd : undefined;',
    why: "only an open socket gets here, and an open Bun socket always has a numeric fd >= 0",
  },
  {
    file: "src/transport/socket-tuner.ts",
    before: 'if (typeof fd !== "number" || fd < 0) return;',
    after: 'if (typeof fd !== "number" || fd <= 0) return;',
    why: "a socket is never descriptor 0: Bun opens /dev/null there when the process starts with it closed (`bun -e` under `0<&-` holds /dev/null at 0), and the agent never closes it (stdin is read through Bun.stdin)",
  },
  {
    file: "src/transport/in-flight.ts",
    before: "clientRead = false;",
    after: "clientRead = true;",
    why: "clientRead is read only after olderThan() returned true, and every way to true assigns it first",
  },
  {
    file: "src/transport/in-flight.ts",
    before: "this.clientRead = false;",
    after: "this.clientRead = true;",
    why: "clientRead is read only after olderThan() returned true, and every way to true assigns it first",
  },
  {
    file: "src/transport/socket-file.ts",
    before: 'if (errno(e) === "EADDRINUSE" && attempt < BIND_ATTEMPTS) continue;',
    after: 'if (errno(e) === "EADDRINUSE" || attempt < BIND_ATTEMPTS) continue;',
    why: "an error other than a taken name concerns the directory and comes again at every fresh name: thrown the same after the retries; only BIND_ATTEMPTS taken names in a row would retry on",
  },
  {
    file: "src/transport/socket-options.ts",
    before: "return bytes < 0 ? syscallFailed(libc, call, fd) : { ok: true, fd, bytes };",
    after: "return bytes <= 0 ? syscallFailed(libc, call, fd) : { ok: true, fd, bytes };",
    why: "a pipe holds a page at least: F_GETPIPE_SZ and F_SETPIPE_SZ return its size or -1, never 0",
  },
  {
    file: "src/transport/notify-socket.ts",
    before: "this.library.close();",
    after: ";",
    why: "libc stays mapped for the process's life (Bun links it): the close only drops a reference, and dispose is the last use",
  },
  {
    file: "src/transport/notify-socket.ts",
    before: "opened.library.close();",
    after: ";",
    why: "libc stays mapped for the process's life (Bun links it): the close only drops a reference, and open() returns its reason at once, never using the library again",
  },
  {
    file: "src/transport/frame-writer.ts",
    before: "while (queue.length > 0) {",
    after: "while (queue.length >= 0) {",
    why: "with the queue empty, contiguousRun() finds no run and the loop breaks",
  },
  {
    file: "src/transport/frame-writer.ts",
    before: "this.scheduled = true;",
    after: "this.scheduled = false;",
    why: "only more pump calls per burst: the first writes the whole run, the others find the queue empty",
  },
  {
    file: "src/transport/frame-writer.ts",
    before: "private blocked = false;",
    after: "private blocked = true;",
    why: "attach() clears it before the first socket is written to; until then every read of it is behind a look for a socket, or in lossless mode's watchRoom, which has no live limit to look for room under",
  },
  {
    file: "src/transport/frame-writer.ts",
    before: "if (this.unreadWhenBlocked > 0) this.roomTimer = setInterval(this.roomTask, ROOM_RECHECK_MS);",
    after: "if (this.unreadWhenBlocked >= 0) this.roomTimer = setInterval(this.roomTask, ROOM_RECHECK_MS);",
    why: "nothing unread at the block means the client read it all just after the short write: the socket is writable, so drain comes; until then the timer's looks never find less than 0 unread and act on nothing, and the first after the drain stops it",
  },
  {
    file: "src/transport/frame-writer.ts",
    before: "if (this.budgetMs > 0) this.inFlight.wrote(written, this.tailEnqueuedAt);",
    after: "if (this.budgetMs >= 0) this.inFlight.wrote(written, this.tailEnqueuedAt);",
    why: "what InFlight records is read only by overBudget(), under a latency budget; without one the records are only kept, RECORDS at most, and reset with each connection",
  },
  {
    file: "src/transport/reconnecting-connection.ts",
    before: "close(socket: Socket<unknown>, reason: string, graceful = false): void {",
    after: "close(socket: Socket<unknown>, reason: string, graceful = true): void {",
    why: "end() or terminate(): Bun keeps no unsent bytes and a Unix socket's peer reads what the kernel holds either way, then sees the close",
  },
  {
    file: "src/transport/reconnecting-connection.ts",
    before: "if (graceful) socket.end();",
    after: "if (!(graceful)) socket.end();",
    why: "end() or terminate(): Bun keeps no unsent bytes and a Unix socket's peer reads what the kernel holds either way, then sees the close",
  },
  {
    file: "src/transport/reconnecting-connection.ts",
    before: 'if (socket) this.close(socket, "stopped", true);',
    after: 'if (socket) this.close(socket, "stopped", false);',
    why: "end() or terminate(): Bun keeps no unsent bytes and a Unix socket's peer reads what the kernel holds either way, then sees the close",
  },
  {
    file: "src/media/ogg-crc.ts",
    before: "for (let i = 0; i < 256; i++) {",
    after: "for (let i = 0; i <= 256; i++) {",
    why: "the table is a Uint32Array(256): the write at index 256 is ignored",
  },
  {
    file: "src/media/ogg-crc.ts",
    before: "const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] === 1;",
    after: "const LITTLE_ENDIAN = new Uint8Array(Uint32Array.of(1).buffer)[0] !== 1;",
    why: "on the little-endian machines this runs on (x64, arm64) the flag turns false, sending every byte through the byte-at-a-time loop: the same CRC as the word loop, only slower",
  },
  {
    file: "src/media/ogg-crc.ts",
    before: "if (end > bytes.length) end = bytes.length;",
    after: "if (end >= bytes.length) end = bytes.length;",
    why: "where end is bytes.length already, setting it to bytes.length changes nothing",
  },
  {
    file: "src/media/ogg-crc.ts",
    before: "for (let k = 1; k < 8; k++) {",
    after: "for (let k = 1; k <= 8; k++) {",
    why: "a ninth table is built once at load and never read: only the first eight are taken out of TABLES",
  },
  {
    file: "src/media/ogg-page-reader.ts",
    before: "const to = found < 0 ? this.chunk.length : found;",
    after: "const to = found <= 0 ? this.chunk.length : found;",
    why: "the search starts at pos + 1, so found is -1 or at least 1, never 0",
  },
  {
    file: "src/media/ogg-packet-reader.ts",
    before: "return this.carried >= 0;",
    after: "return this.carried > 0;",
    why: "between pages an open packet has carried at least one byte: carried is -1 or above 0, never 0",
  },
  {
    file: "src/media/ogg-packet-reader.ts",
    before: "if (this.carried >= 0) {",
    after: "if (this.carried > 0) {",
    why: "between pages an open packet has carried at least one byte: carried is -1 or above 0, never 0",
  },
  {
    file: "src/media/ogg-packet-reader.ts",
    before: "if (this.carried < 0) {",
    after: "if (this.carried <= 0) {",
    why: "a packet is carried only once its first page gave it a byte at least (pieceStart < bodyPos), and carry() only adds: carried is -1 or above 0, never 0, on both lines that hold this test",
  },
  {
    file: "src/media/ogg-packet-reader.ts",
    before: "if (room > 0) this.buffer.set(page.bytes.subarray(start, start + Math.min(room, this.bodyPos - start)), this.carried);",
    after: "if (room >= 0) this.buffer.set(page.bytes.subarray(start, start + Math.min(room, this.bodyPos - start)), this.carried);",
    why: "with no room the subarray is empty, and setting it copies nothing",
  },
  {
    file: "src/media/ogg-page-writer.ts",
    before: "for (let first = true; ; first = false) {",
    after: "for (let first = false; ; first = false) {",
    why: "a packet that does not fit has already started a fresh page, so the first segment never meets a full page",
  },
  {
    file: "src/media/ogg-page-writer.ts",
    before: "if (this.segments > 0 && !this.fits(packet.length)) this.flushPage();",
    after: "if (this.segments >= 0 && !this.fits(packet.length)) this.flushPage();",
    why: "flushing a page with no segments writes nothing",
  },
  {
    file: "src/media/opus-head.ts",
    before: "view.setUint8(18, 0);",
    after: ";",
    why: "the header is a fresh, zero-filled buffer: byte 18 is 0 already",
  },
  {
    file: "src/media/opus-toc.ts",
    before: "if (config < 12) return [480, 960, 1920, 2880][config & 3]!;",
    after: "if (config <= 12) return [480, 960, 1920, 2880][config & 3]!;",
    why: "config 12 (hybrid, 10 ms) is 480 samples either way",
  },
  {
    file: "src/media/byte-sink.ts",
    before: "return this.trimmable && bytes > 0 && takeBack(this.fd, bytes);",
    after: "return this.trimmable && bytes >= 0 && takeBack(this.fd, bytes);",
    why: "bytes is 0 only when the failed write took nothing of the unit it cut and no opening unit is counted, and then openingFrames is 0 too (every unit a sink writes holds bytes: a page, a message); takeBack of 0 bytes truncates the file to its own length",
  },
  {
    file: "src/media/wire-sink.ts",
    before: "if (n < 4) return [OUTPUT_MAGIC, INPUT_MAGIC].some((magic) => beginsHeader(fd, from, n, magic)) ? from : undefined;",
    after: "if (n <= 4) return [OUTPUT_MAGIC, INPUT_MAGIC].some((magic) => beginsHeader(fd, from, n, magic)) ? from : undefined;",
    why: "four bytes read are a magic alone: the parser made for a channel's magic holds them pending, its own header begun (from), as the look for either channel's finds; any other four bytes are undefined either way",
  },
  {
    file: "src/channels/input-client.ts",
    before: "private ackLookedAgain = false;",
    after: "private ackLookedAgain = true;",
    why: "it matters only while a Config/Heartbeat awaits its Ack (with none, ackOverdue judges nothing, whoever asks), and awaitAck sets it false as the first of them starts to",
  },
  {
    file: "src/channels/output-client.ts",
    before: "if (this.failure && !this.stopped) this.toFailedSink(parser);",
    after: "if (this.failure || !this.stopped) this.toFailedSink(parser);",
    why: "the connection passes on only its current socket's reads, so the socket changes under onMessage only by stop() (stopped) or fail() (failure); where both are set, toFailedSink takes nothing once stopped",
  },
  {
    file: "src/observe/local-peer.ts",
    before: "const [uid, inode] = [answer.getUint32(80, true), answer.getUint32(84, true)];",
    after: "const [uid, inode] = [answer.getUint32(80, true), answer.getUint32(84, false)];",
    why: "the inode is only compared with 0, and four bytes read in either order are 0 only when all are",
  },
  {
    file: "src/observe/http-server.ts",
    before: "if (!pid || pid === process.pid || alive(pid)) continue;",
    after: "if (!pid && pid === process.pid || alive(pid)) continue;",
    why: "alive() passes over the names !pid stands for: process.kill(NaN, 0) throws ERR_INVALID_ARG_TYPE (not ESRCH), and kill(0, 0) reaches our own group",
  },
  {
    file: "src/observe/http-server.ts",
    before: "rmSync(dir, { recursive: true, force: true });",
    after: "rmSync(dir, { recursive: true, force: false });",
    why: "force only passes over a path that is missing, and this one is there: mkdtemp made it just before, 0700 and ours, and another agent's sweep spares the directory of a pid that lives",
  },
  {
    file: "src/transport/frame-writer.ts",
    before: "this.blocked = false;",
    after: "this.blocked = true;",
    within: "private release(dropQueued: boolean",
    why: "released, the writer has no socket until attach(), which clears it; meanwhile every reader of it asks for a socket too (pump, schedule, the stale drop and the stuck report of submit) or stops at once without one (the room check a lossless submit may start)",
  },
  {
    file: "src/transport/reconnecting-connection.ts",
    before: "this.endReplacement();",
    after: ";",
    within: "  stop(): void {",
    why: "a look's connection not taken yet is ended all the same, a few turns later: by run()'s finally, which a stop always reaches (its sleep and connect are aborted, the connection it waits on closed), or by the look's own continuation once stopping is set; and with run() over, its finally has ended it already",
  },
  {
    file: "src/observe/line-writer.ts",
    before: "return true;",
    after: "return false;",
    within: "private resume(): boolean {",
    why: "resume()'s answer is read by drain() alone, whose loop asks waiting() first: with nothing left waiting it ends either way, one 1 ms sleep later",
  },
  {
    file: "src/observe/monitor/hub.ts",
    before: "clearTimeout(this.liveness);",
    after: ";",
    why: "stop() closes every viewer, and Bun runs the close handler inside ws.close() (a peer that reads nothing too), so the check left running walks an empty set; Instruments.stop() stops the HTTP server in the same turn, so no viewer comes after, and each of its timers is unref'd: it holds no exit",
  },
  {
    file: "src/observe/monitor/hub.ts",
    before: "if (!heldUp && now - (ws.data.heard ?? now) >= this.limits.idleSeconds * 1000) ws.terminate();",
    after: "if (!heldUp && now - (ws.data.heard ?? now) > this.limits.idleSeconds * 1000) ws.terminate();",
    why: "heard is set at the viewer's opening, so the two differ only where a judgement comes exactly the idle timeout after the last word to the fraction of a millisecond: the judgement runs on its own timer, the word in a read or pong, both timed by performance.now(); a peer that stays silent is closed at the next check, half an idle timeout later",
  },
  {
    file: "src/protocol/timestamp.ts",
    before: "if (this.offset >= low && this.offset <= high) return;",
    after: "if (this.offset >= low && this.offset < high) return;",
    why: "an offset exactly at high goes on to the last branch, which sets it to high again: nothing else is touched",
  },
  {
    file: "src/cli/run.ts",
    before: "return `${flagsOf(names)}${names.length > 0 && from ? ` (${from})` : \"\"}`;",
    after: "return `${flagsOf(names)}${names.length >= 0 && from ? ` (${from})` : \"\"}`;",
    why: "with no names, origins() of none is \"\", so `from` is falsy either way",
  },
  {
    file: "src/roles/sampler.ts",
    before: "private byFrames = false;",
    after: "private byFrames = true;",
    why: "the first value is never read: only tick() reads it, and both ways to a tick set it first, frame() to true before it queues the tick, the fallback to false before it ticks",
  },
  {
    file: "src/roles/channel-instruments.ts",
    before: "if (state.queueFrames > 0) end.resizeQueue?.(state.queueFrames);",
    after: "if (state.queueFrames >= 0) end.resizeQueue?.(state.queueFrames);",
    why: "the optimizer's queue is 0 frames only where it started from 0, an end without a send queue (queueCapacity 0, doubled still 0), and such an end (a receiver) has no resizeQueue: a sender's queue holds at least one frame",
  },
];
