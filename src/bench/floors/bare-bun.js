/**
 * The bare Bun floor the benchmark measures the agent against: what Bun
 * itself costs for the same job, with nothing of the agent in it. Compiled
 * by the benchmark like the agent (compile + bytecode), one program, one mode
 * per run:
 *
 *   bare-bun idle                  stays alive, never wakes
 *   bare-bun tick                  wakes every 20 ms and does nothing
 *   bare-bun modules MODULE...     loads Bun's runtime modules (node:fs, bun:ffi, ...) and uses each as
 *                                  the agent does, then wakes every 20 ms: what those modules cost a
 *                                  program that needs them, before any of its own code
 *   bare-bun send SOCKET [MODULE...]  Bun.listen; every 20 ms one OpusFrame (17-byte header + 160 bytes)
 *                                  to the client
 *   bare-bun recv SOCKET [MODULE...]  Bun.connect; parses the frames, records each read's age (arrival
 *                                  minus the header timestamp of its first frame); on SIGTERM logs
 *                                  "stopped" with frames=, first_frame_unix_ms= (when the first arrived:
 *                                  with frames=, how the rate is checked) and frame_age_p50_ms / _p99_ms
 *                                  / _max_ms over the last 1024 reads, as the agent does
 *
 * A MODULE is a name (node:fs) or, for bun:ffi, `bun:ffi=LIB,LIB...`: the
 * libc names to try in turn, as the agent does (the first that opens is used;
 * plain `bun:ffi` tries libc.so.6). The receiver exits 1 with one line on a
 * framing error.
 * With modules, it says at start which it loaded ("bare-bun: loaded node:fs,
 * bun:ffi (libc.so.6)", or "(no libc opened)").
 *
 * Plain JavaScript, so the benchmark can embed it as text and build it wherever it runs.
 */
const MAGIC = 0x4a4b4f55; // "JKOU", the output channel
const HEADER = 17;
const PAYLOAD = 160;
const MAX_PAYLOAD = 4096;
const LAST_TYPE = 4; // Ack
const PERIOD_MS = 20;
const WINDOW = 1024;
const TWO_32 = 2 ** 32;

const wallClockMs = () => performance.timeOrigin + performance.now();

/** Keeps the process alive with a timer that never fires (2^30 ms, about 12 days). */
function stayAlive() {
  setInterval(() => {}, 2 ** 30);
}

/** Calls `tick` every 20 ms against one anchor, so the rate does not drift (as the agent's pacer). */
function every20ms(tick) {
  const anchor = performance.now();
  let n = 0;
  const next = () => {
    tick();
    n++;
    setTimeout(next, Math.max(0, anchor + n * PERIOD_MS - performance.now()));
  };
  setTimeout(next, PERIOD_MS);
}

function send(path) {
  const frame = new Uint8Array(HEADER + PAYLOAD).fill(0xa5);
  const view = new DataView(frame.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint8(4, 0); // OpusFrame
  view.setUint32(5, PAYLOAD, true);
  let client;
  Bun.listen({
    unix: path,
    socket: {
      open(socket) {
        client?.end();
        client = socket;
      },
      close(socket) {
        if (client === socket) client = undefined;
      },
      data() {},
    },
  });
  every20ms(() => {
    if (!client) return;
    const ns = Math.round(wallClockMs() * 1e6);
    const hi = Math.floor(ns / TWO_32);
    view.setUint32(9, ns - hi * TWO_32, true);
    view.setInt32(13, hi, true);
    // A frame cut short would break the framing: that client is let go.
    if (client.write(frame) !== frame.length) client.end();
  });
}

function recv(path, modules) {
  const ages = new Float64Array(WINDOW);
  let frames = 0;
  let aged = 0;
  let firstFrameMs = NaN;
  let held = new Uint8Array(0);
  const onData = (chunk) => {
    const now = wallClockMs();
    let bytes = chunk;
    if (held.length > 0) {
      bytes = new Uint8Array(held.length + chunk.length);
      bytes.set(held);
      bytes.set(chunk, held.length);
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const before = frames;
    let at = 0;
    while (bytes.length - at >= HEADER) {
      // A throw here would go to the socket's error handler and the bad bytes be skipped
      // unseen: the floor's figures would then count a broken stream as a good one.
      // The protocol's header checks (the wire contract): magic, type 0-4, length at most 4096.
      const magic = view.getUint32(at, true);
      if (magic !== MAGIC) fail(`framing error: bad magic 0x${magic.toString(16).padStart(8, "0")} after ${frames} frames`);
      const type = view.getUint8(at + 4);
      if (type > LAST_TYPE) fail(`framing error: unknown message type ${type} after ${frames} frames`);
      const length = view.getUint32(at + 5, true);
      if (length > MAX_PAYLOAD) fail(`framing error: payload length ${length} over ${MAX_PAYLOAD} after ${frames} frames`);
      if (bytes.length - at < HEADER + length) break;
      if (type === 0) {
        if (frames === 0) firstFrameMs = now;
        // One age per read, its first (oldest) frame's, as the agent's receiver takes them: frames
        // queued behind a stall and read together would otherwise each add a sample of it.
        if (frames++ === before) {
          const sentMs = (view.getInt32(at + 13, true) * TWO_32 + view.getUint32(at + 9, true)) / 1e6;
          ages[aged++ % WINDOW] = now - sentMs;
        }
      }
      at += HEADER + length;
    }
    held = bytes.slice(at);
  };
  // The handler first: a SIGTERM that came before it would end the process without its line.
  process.on("SIGTERM", () => {
    const sorted = ages.slice(0, Math.min(aged, WINDOW)).sort();
    const rank = (p) => sorted[Math.max(1, Math.ceil((p * sorted.length) / 100)) - 1] ?? 0;
    const ms = (x) => +x.toFixed(3);
    // Written synchronously: console.error to a pipe may still be buffered when process.exit() runs.
    // node:fs is loaded only now, after the measured window, as the agent's own logger loads it at start.
    require("node:fs").writeSync(
      2,
      `bare-bun recv: stopped frames=${frames} first_frame_unix_ms=${ms(firstFrameMs)} frame_age_p50_ms=${ms(rank(50))} frame_age_p99_ms=${ms(rank(99))} frame_age_max_ms=${ms(sorted[sorted.length - 1] ?? 0)}\n`,
    );
    process.exit(0);
  });
  loadModules(modules);
  // Alive until SIGTERM, as the agent's receiver is: the runner stops the sender
  // right after it, and with the connection gone and nothing else pending the
  // process would exit 0 before its handler ran, without its line.
  stayAlive();
  Bun.connect({ unix: path, socket: { data: (_socket, chunk) => onData(chunk), close: () => {}, error: () => {} } });
}

/**
 * Loads each module and makes the calls the agent makes of it at start, so
 * that the code they reach in Bun is reached here too: node:fs's calls reach
 * its native side; bun:ffi's dlopen compiles its call stubs. The others are
 * only loaded, as the agent loads them before its first call.
 */
function loadModules(modules) {
  if (modules.length === 0) return;
  const loadedNames = [];
  for (const module of modules) {
    const [name, ...rest] = module.split("=");
    // Bun's own modules only: anything else would be a file of the floor's to run.
    if (!/^(node|bun):\w/.test(name)) usage(`not a Bun runtime module: "${module}"`);
    const libs = rest.length === 0 ? undefined : rest.join("=");
    if (libs !== undefined && (name !== "bun:ffi" || !/^[^=,]+(,[^=,]+)*$/.test(libs))) {
      usage(`only bun:ffi takes libraries, as bun:ffi=LIB,LIB... (names without "=" or ","): "${module}"`);
    }
    let loaded;
    try {
      loaded = require(name);
    } catch (e) {
      fail(`cannot load ${name}: ${e.message}`);
    }
    let said = name;
    if (name === "node:fs") {
      loaded.statSync("/");
      loaded.writeSync(2, "");
    } else if (name === "node:path") {
      loaded.join("a", "b");
    } else if (name === "bun:ffi") {
      // The symbols the agent's socket options take from libc (src/transport/socket-options.ts).
      const { i32, u32, u64, ptr } = loaded.FFIType;
      const symbols = {
        setsockopt: { args: [i32, i32, i32, ptr, u32], returns: i32 },
        getsockopt: { args: [i32, i32, i32, ptr, ptr], returns: i32 },
        ioctl: { args: [i32, u64, ptr], returns: i32 },
        __errno_location: { args: [], returns: ptr },
      };
      // Where none opens, the agent goes on without socket tuning: so does the floor.
      let opened = "no libc opened";
      for (const lib of (libs ?? "libc.so.6").split(",")) {
        try {
          loaded.dlopen(lib, symbols);
          opened = lib;
          break;
        } catch {}
      }
      said = `${name} (${opened})`;
    }
    loadedNames.push(said);
  }
  // One line at start, so that what was loaded can be checked from outside.
  console.error(`bare-bun: loaded ${loadedNames.join(", ")}`);
}

/** One line and exit 1: the floor cannot measure what it was asked to. */
function fail(why) {
  require("node:fs").writeSync(2, `bare-bun: ${why}\n`);
  process.exit(1);
}

function usage(why) {
  if (why) console.error(`bare-bun: ${why}`);
  console.error("usage: bare-bun idle | tick | modules MODULE... | send SOCKET [MODULE...] | recv SOCKET [MODULE...]");
  process.exit(2);
}

const [mode, path, ...modules] = process.argv.slice(2);
if (mode === "idle") stayAlive();
else if (mode === "tick") every20ms(() => {});
else if (mode === "modules" && path) {
  loadModules([path, ...modules]);
  every20ms(() => {});
} else if (mode === "send" && path) {
  loadModules(modules);
  send(path);
} else if (mode === "recv" && path) {
  recv(path, modules);
} else usage();
