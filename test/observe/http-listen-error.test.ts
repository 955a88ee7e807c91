import { describe, expect, test } from "bun:test";
import { HttpListenError, oneSocket } from "../../src/observe/http-listen-error.ts";

describe("oneSocket: whether two listen addresses name one socket (--metrics and --monitor)", () => {
  test("the same host and port: one", async () => {
    expect(await oneSocket({ host: "127.0.0.1", port: 9100 }, { host: "127.0.0.1", port: 9100 })).toBe(true);
    // A name that resolves to nothing is still the same name.
    expect(await oneSocket({ host: "nowhere.invalid", port: 9100 }, { host: "nowhere.invalid", port: 9100 })).toBe(true);
  });

  test("another port, whatever the host: two", async () => {
    expect(await oneSocket({ host: "127.0.0.1", port: 9100 }, { host: "127.0.0.1", port: 9101 })).toBe(false);
    expect(await oneSocket({ host: "localhost", port: 9100 }, { host: "127.0.0.1", port: 9101 })).toBe(false);
  });

  test("hosts spelled apart on one port: one when they resolve alike, two when they do not or resolve to nothing", async () => {
    const localhost = (await Bun.dns.lookup("localhost"))[0]!.address;
    expect(await oneSocket({ host: "localhost", port: 9100 }, { host: localhost, port: 9100 })).toBe(true);
    expect(await oneSocket({ host: "127.0.0.1", port: 9100 }, { host: "127.0.0.2", port: 9100 })).toBe(false);
    expect(await oneSocket({ host: "a.invalid", port: 9100 }, { host: "b.invalid", port: 9100 })).toBe(false);
  });
});

test("HttpListenError names the address and the errno", () => {
  const error = new HttpListenError({ host: "127.0.0.1", port: 9100 }, "EADDRINUSE");
  expect(error.message).toBe("cannot listen at 127.0.0.1:9100 (EADDRINUSE)");
  expect(error.code).toBe("EADDRINUSE");
});
