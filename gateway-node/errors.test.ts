import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { GATEWAY_ERRORS, GatewayError, httpError, rawHttpError } from "./errors.ts";
import { parseAuthority } from "./http-connect.ts";
import { checkTarget } from "./targets.ts";

describe("gateway error table", () => {
  it("maps every PROTOCOL.md code to its HTTP status", () => {
    const statuses = Object.fromEntries(Object.entries(GATEWAY_ERRORS).map(([k, v]) => [k, v.status]));
    expect(statuses).toEqual({
      E_AUTH_REQUIRED: 407,
      E_AUTH_INVALID: 407,
      E_CAP_EXCEEDED: 402,
      E_CREDENTIAL_SUSPENDED: 403,
      E_USERNAME_PARSE: 400,
      E_RATE_LIMITED: 429,
      E_NO_STOCK: 502,
      E_NO_CAPACITY: 503,
      E_SESSION_PEER_GONE: 502,
      E_TARGET_UNREACHABLE: 502,
      E_TARGET_BLOCKED: 403,
      E_INTERNAL: 503,
    });
  });

  it("renders CODE: message (req: id) with X-Request-ID, Proxy-Status and, for 407, Proxy-Authenticate", () => {
    const e = httpError(new GatewayError("E_AUTH_REQUIRED", "proxy credentials required"), "req_abc");
    expect(e.status).toBe(407);
    expect(e.body).toBe("E_AUTH_REQUIRED: proxy credentials required (req: req_abc)\n");
    expect(e.headers).toMatchObject({
      "X-Request-ID": "req_abc",
      "Proxy-Status": 'peerproxy; error=http_request_denied; details="E_AUTH_REQUIRED"',
      "Proxy-Authenticate": 'Basic realm="peerproxy"',
    });
    const raw = rawHttpError(
      new GatewayError("E_NO_STOCK", "none", { proxyStatus: "destination_unavailable" }),
      "req_x",
    );
    expect(raw).toMatch(/^HTTP\/1\.1 502 Bad Gateway\r\n/);
    expect(raw).not.toContain("Proxy-Authenticate");
    expect(raw.endsWith("\r\n\r\nE_NO_STOCK: none (req: req_x)\n")).toBe(true);
  });
});

describe("targets", () => {
  it.each([
    ["example.com:443", { host: "example.com", port: 443 }],
    ["1.2.3.4:80", { host: "1.2.3.4", port: 80 }],
    ["[2001:db8::1]:8443", { host: "2001:db8::1", port: 8443 }],
    ["example.com", undefined],
    ["[::1]", undefined],
    ["a b:80", undefined],
  ])("parses the CONNECT authority %s", (authority, want) => {
    expect(parseAuthority(authority)).toEqual(want);
  });

  it.each([
    ["127.0.0.1", true],
    ["10.1.2.3", true],
    ["172.16.0.1", true],
    ["172.32.0.1", false],
    ["192.168.1.1", true],
    ["100.64.0.1", true],
    ["169.254.169.254", true],
    ["224.0.0.1", true],
    ["::1", true],
    ["[::1]", true],
    ["fd00::1", true],
    ["fe80::1", true],
    ["::ffff:127.0.0.1", true],
    ["localhost", true],
    ["8.8.8.8", false],
    ["2001:db8::1", true],
    ["2606:4700::1111", false],
    ["example.com", false],
  ])("treats %s as private: %s", (host, isPrivate) => {
    // Checked only, never dialed.
    const policy = { allowLoopback: false, allowList: null };
    const blocked = (() => {
      try {
        checkTarget({ host, port: 443 }, policy);
        return false;
      } catch {
        return true;
      }
    })();
    expect(blocked).toBe(isPrivate);
  });
});

describe("docs/errors.md gateway table", () => {
  it("lists every gateway code with its HTTP status and SOCKS5 REP, and nothing else", () => {
    const doc = readFileSync(join(import.meta.dirname, "..", "docs", "errors.md"), "utf8");
    const section = doc.split(/^## /m).find((x) => x.startsWith("Gateway")) ?? "";
    const rows: Record<string, { status: number; socksRep: number }> = {};
    for (const line of section.split("\n")) {
      const m = /^\|\s*`(E_[A-Z0-9_]+)`\s*\|\s*(\d{3})\s*\|\s*0x([0-9a-f]{2})\s*\|/.exec(line);
      if (m?.[1]) rows[m[1]] = { status: Number(m[2]), socksRep: Number.parseInt(m[3] ?? "", 16) };
    }
    const table = Object.fromEntries(
      Object.entries(GATEWAY_ERRORS).map(([code, v]) => [code, { status: v.status, socksRep: v.socksRep }]),
    );
    expect(rows).toEqual(table);
  });
});
