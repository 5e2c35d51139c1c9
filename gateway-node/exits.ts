/**
 * Opening the exit leg of a tunnel: peers through the relay that holds them (internal POST /tunnel
 * upgrade, docs/internal.md), production modems through their upstream HTTP proxy port (CONNECT).
 */
import { request } from "node:http";
import { connect, type Socket } from "node:net";
import type { SelectedEndpoint } from "../shared/pool.ts";
import { GatewayError } from "./errors.ts";

export interface Target {
  host: string;
  port: number;
}

/** host:port with IPv6 literals in brackets. */
export function formatTarget(t: Target): string {
  return t.host.includes(":") ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

export type ExitResult =
  | { ok: true; socket: Socket; head: Buffer }
  /** side "exit": the endpoint itself failed (try another); "target": the exit could not reach the target */
  | { ok: false; side: "exit" | "target"; reason: string; error: GatewayError };

const unreachable = (reason: string, proxyStatus = "destination_unavailable") =>
  new GatewayError("E_TARGET_UNREACHABLE", `exit could not reach the target (${reason})`, { proxyStatus });
const exitDown = (reason: string) =>
  new GatewayError("E_NO_STOCK", `exit unavailable (${reason})`, { proxyStatus: "proxy_internal_error" });

export function openExit(
  endpoint: SelectedEndpoint,
  target: Target,
  opts: { relaySecret: string; timeoutMs: number; requestId: string },
): Promise<ExitResult> {
  return endpoint.kind === "modem" ? openModem(endpoint, target, opts) : openPeer(endpoint, target, opts);
}

function openPeer(
  endpoint: SelectedEndpoint,
  target: Target,
  opts: { relaySecret: string; timeoutMs: number; requestId: string },
): Promise<ExitResult> {
  return new Promise((resolve) => {
    let url: URL;
    try {
      url = new URL("/tunnel", endpoint.relayInternal);
    } catch {
      resolve({ ok: false, side: "exit", reason: "bad_relay_url", error: exitDown("bad relay url") });
      return;
    }
    let settled = false;
    const done = (r: ExitResult) => {
      if (settled) {
        if (r.ok) r.socket.destroy();
        return;
      }
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const req = request(url, {
      method: "POST",
      headers: {
        Authorization: `Bearer ${opts.relaySecret}`,
        "X-Device-Id": endpoint.deviceId ?? endpoint.endpointId,
        "X-Target": formatTarget(target),
        "X-Request-ID": opts.requestId,
        Connection: "Upgrade",
        Upgrade: "peerproxy-tunnel/1",
      },
    });
    const timer = setTimeout(() => {
      req.destroy();
      done({
        ok: false,
        side: "target",
        reason: "timeout",
        error: unreachable("timeout", "connection_timeout"),
      });
    }, opts.timeoutMs);
    req.on("upgrade", (_res, socket, head) => done({ ok: true, socket, head }));
    req.on("response", (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        if (body.length < 4096) body += d;
      });
      res.on("end", () => {
        let parsed: { code?: string; reason?: string } = {};
        try {
          parsed = JSON.parse(body) as typeof parsed;
        } catch {}
        const code = parsed.code ?? `http_${res.statusCode}`;
        if (code === "tunnel_open_failed" || code === "connect_timeout") {
          const reason = parsed.reason ?? (code === "connect_timeout" ? "timeout" : "unknown");
          if (reason === "blocked_target")
            done({
              ok: false,
              side: "target",
              reason,
              error: new GatewayError("E_TARGET_BLOCKED", "the exit refuses this target"),
            });
          else
            done({ ok: false, side: "target", reason, error: unreachable(reason, peerProxyStatus(reason)) });
        } else {
          done({ ok: false, side: "exit", reason: code, error: exitDown(code) });
        }
      });
      res.on("error", () =>
        done({ ok: false, side: "exit", reason: "relay_error", error: exitDown("relay error") }),
      );
    });
    req.on("error", (err) =>
      done({
        ok: false,
        side: "exit",
        reason: `relay_${(err as NodeJS.ErrnoException).code ?? "error"}`,
        error: exitDown("relay unreachable"),
      }),
    );
    req.end();
  });
}

function peerProxyStatus(reason: string): string {
  if (reason === "connection_refused") return "connection_refused";
  if (reason === "dns_failed") return "dns_error";
  if (reason === "timeout") return "connection_timeout";
  return "destination_unavailable";
}

const MAX_HEADER = 16 * 1024;

function openModem(
  endpoint: SelectedEndpoint,
  target: Target,
  opts: { timeoutMs: number },
): Promise<ExitResult> {
  return new Promise((resolve) => {
    const socket = connect({ host: endpoint.host ?? "127.0.0.1", port: endpoint.port ?? 0 });
    let settled = false;
    let connected = false;
    let buf = Buffer.alloc(0);
    const done = (r: ExitResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener("data", onData);
      if (!r.ok) socket.destroy();
      resolve(r);
    };
    const timer = setTimeout(
      () =>
        done(
          connected
            ? {
                ok: false,
                side: "target",
                reason: "timeout",
                error: unreachable("timeout", "connection_timeout"),
              }
            : { ok: false, side: "exit", reason: "modem_timeout", error: exitDown("modem timeout") },
        ),
      opts.timeoutMs,
    );
    const onData = (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) {
        if (buf.length > MAX_HEADER)
          done({ ok: false, side: "exit", reason: "modem_bad_reply", error: exitDown("bad modem reply") });
        return;
      }
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(buf.subarray(0, end).toString("latin1"))?.[1] ?? 0);
      if (status === 200) {
        socket.pause();
        done({ ok: true, socket, head: buf.subarray(end + 4) });
      } else if (status === 403) {
        done({
          ok: false,
          side: "target",
          reason: "blocked_target",
          error: new GatewayError("E_TARGET_BLOCKED", "the exit refuses this target"),
        });
      } else if (status >= 500 || status === 404 || status === 400) {
        done({
          ok: false,
          side: "target",
          reason: `modem_${status}`,
          error: unreachable(`upstream ${status}`),
        });
      } else {
        done({
          ok: false,
          side: "exit",
          reason: `modem_${status}`,
          error: exitDown(`modem answered ${status}`),
        });
      }
    };
    socket.on("data", onData);
    socket.on("error", (err) =>
      done({
        ok: false,
        side: "exit",
        reason: `modem_${(err as NodeJS.ErrnoException).code ?? "error"}`,
        error: exitDown("modem unreachable"),
      }),
    );
    socket.on("close", () =>
      done({ ok: false, side: "exit", reason: "modem_closed", error: exitDown("modem closed") }),
    );
    socket.on("connect", () => {
      connected = true;
      const t = formatTarget(target);
      socket.write(`CONNECT ${t} HTTP/1.1\r\nHost: ${t}\r\n\r\n`);
    });
  });
}
