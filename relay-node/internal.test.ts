import { describe, expect, it } from "vitest";
import { parseTarget } from "./internal.ts";

describe("X-Target parsing", () => {
  it("accepts host:port, IPv4 and bracketed IPv6", () => {
    expect(parseTarget("example.com:443")).toEqual({ host: "example.com", port: 443 });
    expect(parseTarget("127.0.0.1:8080")).toEqual({ host: "127.0.0.1", port: 8080 });
    expect(parseTarget("[::1]:80")).toEqual({ host: "::1", port: 80 });
    expect(parseTarget("[2001:db8::1]:65535")).toEqual({ host: "2001:db8::1", port: 65535 });
  });

  it("refuses a missing or out-of-range port, bare IPv6, paths and empty values", () => {
    for (const bad of [
      undefined,
      "",
      "example.com",
      "example.com:0",
      "example.com:65536",
      "::1:80",
      "a/b:80",
      "[::1]",
      " :80",
    ]) {
      expect(parseTarget(bad), String(bad)).toBeUndefined();
    }
  });
});
