import { AF_INET } from "../../src/io/libc.ts";

/** A struct sockaddr_in for 127.0.0.1:`port`, as libc's connect() takes it: the family little-endian, the port in network order. */
export function loopbackAddress(port: number): Uint8Array {
  const address = new Uint8Array(16);
  const view = new DataView(address.buffer);
  view.setUint16(0, AF_INET, true);
  view.setUint16(2, port, false);
  address.set([127, 0, 0, 1], 4);
  return address;
}
