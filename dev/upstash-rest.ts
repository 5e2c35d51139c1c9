// DEV ONLY. The Upstash REST protocol (the subset @upstash/redis uses) in front of a real Redis,
// so the Worker runs unchanged against a local redis-server. Never deployed.
//   POST /            body: ["CMD", ...args]        -> {"result": ...} | 400 {"error": "<redis text>"}
//   POST /pipeline    body: [[...], [...]]          -> [{"result"}|{"error"}, ...]
//   POST /multi-exec  body: [[...], [...]]          -> same, executed in MULTI/EXEC
// With "Upstash-Encoding: base64" every string in a result is base64 (the client asks by default).
import { createServer, type IncomingMessage, type Server } from "node:http";
import { Redis } from "ioredis";

type Reply = null | number | string | Buffer | Reply[];
type Cell = { result: unknown } | { error: string };

function encode(value: Reply, base64: boolean): unknown {
  if (value === null || typeof value === "number") return value;
  if (Array.isArray(value)) return value.map((v) => encode(v, base64));
  // ioredis turns HGETALL replies into objects even for callBuffer; Upstash sends flat arrays.
  if (!Buffer.isBuffer(value) && typeof value === "object") {
    return Object.entries(value as Record<string, Reply>).flatMap(([k, v]) => [
      encode(k, base64),
      encode(v, base64),
    ]);
  }
  const buf = Buffer.isBuffer(value) ? value : Buffer.from(String(value));
  return base64 ? buf.toString("base64") : buf.toString("utf8");
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

function isCommand(x: unknown): x is (string | number)[] {
  return Array.isArray(x) && x.length > 0 && x.every((a) => typeof a === "string" || typeof a === "number");
}

export interface UpstashBridge {
  url: string;
  token: string;
  close(): Promise<void>;
}

export async function startUpstashBridge(opts: {
  redisUrl: string;
  token: string;
  port?: number;
  host?: string;
}): Promise<UpstashBridge> {
  const redis = new Redis(opts.redisUrl, { maxRetriesPerRequest: 1 });
  redis.on("error", () => {});
  const run = async (cmd: (string | number)[]): Promise<Cell> => {
    try {
      const [name, ...args] = cmd;
      return { result: (await redis.callBuffer(String(name), ...args)) as Reply };
    } catch (err) {
      return { error: (err as Error).message };
    }
  };
  const server: Server = createServer(async (req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.headers.authorization !== `Bearer ${opts.token}`) return send(401, { error: "Unauthorized" });
    const base64 = String(req.headers["upstash-encoding"] ?? "").toLowerCase() === "base64";
    const path = (req.url ?? "/").split("?")[0];
    let body: unknown;
    try {
      body = await readJson(req);
    } catch {
      return send(400, { error: "ERR body is not JSON" });
    }
    const enc = (c: Cell) => ("result" in c ? { result: encode(c.result as Reply, base64) } : c);
    if (path === "/" || path === "") {
      if (!isCommand(body)) return send(400, { error: "ERR body must be a JSON array command" });
      const cell = await run(body);
      return send("error" in cell ? 400 : 200, enc(cell));
    }
    if (path === "/pipeline" || path === "/multi-exec") {
      if (!Array.isArray(body) || !body.every(isCommand)) {
        return send(400, { error: "ERR body must be an array of commands" });
      }
      if (path === "/pipeline") return send(200, (await Promise.all(body.map(run))).map(enc));
      const multi = redis.multi();
      for (const [name, ...args] of body) multi.callBuffer(String(name), ...args);
      const out = (await multi.exec()) ?? [];
      return send(
        200,
        out.map(([err, result]) => (err ? { error: err.message } : enc({ result }))),
      );
    }
    return send(404, { error: `unknown path ${path}` });
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, opts.host ?? "127.0.0.1", resolve));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    token: opts.token,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      redis.disconnect();
    },
  };
}
