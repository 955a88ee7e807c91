/**
 * Raw HTTP/1.1 over a plain TCP socket, so a test sends exactly the headers
 * it means (fetch and WebSocket clients set Host and Origin themselves).
 */

export interface RawResponse {
  status: number;
  /** Header names in lower case. */
  headers: Record<string, string>;
  /** What followed the headers (as received, not de-chunked). */
  body: string;
}

/** Sends `head` (request line and headers, without the blank line) and reads the response until the server closes. */
export async function rawRequest(host: string, port: number, head: string, timeoutMs = 10_000): Promise<RawResponse> {
  const text = await exchange(host, port, `${head}\r\nConnection: close\r\n\r\n`, () => false, timeoutMs);
  return parseResponse(text);
}

/**
 * A WebSocket upgrade request with the given extra headers (Host, Origin,
 * ...): resolves with the response head (101, 403, 421, ...) and closes.
 */
export async function rawUpgrade(host: string, port: number, headers: Record<string, string>, path = "/ws"): Promise<RawResponse> {
  const lines = [
    `GET ${path} HTTP/1.1`,
    ...Object.entries(headers).map(([name, value]) => `${name}: ${value}`),
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
  ];
  // A 101 keeps the connection open: stop once the head is in.
  const text = await exchange(host, port, lines.join("\r\n") + "\r\n\r\n", (received) => received.includes("\r\n\r\n"));
  return parseResponse(text);
}

function exchange(host: string, port: number, request: string, done: (received: string) => boolean, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let received = "";
    const decoder = new TextDecoder();
    const timer = setTimeout(() => reject(new Error(`no complete response from ${host}:${port} in ${timeoutMs} ms:\n${received}`)), timeoutMs);
    Bun.connect({
      hostname: host,
      port,
      socket: {
        open: (socket) => void socket.write(request),
        data: (socket, chunk) => {
          received += decoder.decode(chunk, { stream: true });
          if (done(received)) {
            clearTimeout(timer);
            socket.end();
            resolve(received);
          }
        },
        close: () => {
          clearTimeout(timer);
          resolve(received);
        },
        error: (_socket, error) => {
          clearTimeout(timer);
          reject(error);
        },
      },
    }).catch(reject);
  });
}

function parseResponse(text: string): RawResponse {
  const end = text.indexOf("\r\n\r\n");
  const [statusLine, ...headerLines] = (end < 0 ? text : text.slice(0, end)).split("\r\n");
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(statusLine ?? "")?.[1]);
  if (!Number.isInteger(status)) throw new Error(`not an HTTP response: ${JSON.stringify(text.slice(0, 200))}`);
  const headers: Record<string, string> = {};
  for (const line of headerLines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return { status, headers, body: end < 0 ? "" : text.slice(end + 4) };
}
