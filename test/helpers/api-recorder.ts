// A loopback HTTP proxy in front of the API that records each path a peer calls, so the peer tests
// (TypeScript SDK and Go binary) can count registrations and refreshes and act when a refresh passes.
import { createServer } from "node:http";

export interface ApiRecorder {
  url: string;
  /** every request path, in order */
  calls: string[];
  /** called as each token refresh passes through, before it reaches the API */
  onRefresh: (() => void) | undefined;
  close(): void;
}

export async function startApiRecorder(apiUrl: () => string): Promise<ApiRecorder> {
  const recorder: ApiRecorder = { url: "", calls: [], onRefresh: undefined, close: () => {} };
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const path = req.url ?? "/";
    recorder.calls.push(path);
    if (path.endsWith("/refresh")) recorder.onRefresh?.();
    const upstream = await fetch(`${apiUrl()}${path}`, {
      method: req.method,
      headers: { "content-type": req.headers["content-type"] ?? "application/json" },
      body: req.method === "GET" ? undefined : Buffer.concat(chunks),
    });
    res.writeHead(upstream.status, {
      "content-type": upstream.headers.get("content-type") ?? "application/json",
    });
    res.end(Buffer.from(await upstream.arrayBuffer()));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  recorder.url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  recorder.close = () => {
    server.closeAllConnections();
    server.close();
  };
  return recorder;
}
