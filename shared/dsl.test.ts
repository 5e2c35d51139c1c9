import { describe, expect, it } from "vitest";
import { formatUsername, parseUsername, type RouteRequest, UsernameParseError } from "./dsl.ts";

function parseError(u: string): UsernameParseError {
  try {
    parseUsername(u);
  } catch (err) {
    if (err instanceof UsernameParseError) return err;
    throw err;
  }
  throw new Error(`expected ${u} to fail`);
}

describe("username DSL", () => {
  it.each<[string, RouteRequest]>([
    ["psx_acme-mbl-us", { account: "acme", pool: "mbl", country: "us" }],
    ["PSX_Acme-PEER-ANY", { account: "acme", pool: "peer", country: "any" }],
    [
      "psx_x402pool-mbl-us-sid-myjob123-rot-sticky",
      { account: "x402pool", pool: "mbl", country: "us", sid: "myjob123", rot: "sticky" },
    ],
    [
      "psx_a-any-de-sid-abcdefgh",
      { account: "a", pool: "any", country: "de", sid: "abcdefgh", rot: "auto10" },
    ],
    [
      "psx_a-peer-gb-sid-job_0001-rot-ondemand-ttl-600-carrier-vodafone-city-london-iptype-mobile",
      {
        account: "a",
        pool: "peer",
        country: "gb",
        sid: "job_0001",
        rot: "ondemand",
        ttl: 600,
        carrier: "vodafone",
        city: "london",
        iptype: "mobile",
      },
    ],
    [
      "psx_a-any-any-iptype-residential",
      { account: "a", pool: "any", country: "any", iptype: "residential" },
    ],
  ])("parses %s", (username, want) => {
    expect(parseUsername(username)).toEqual(want);
  });

  it.each<[string, string, string]>([
    ["acme-mbl-us", "psx_", "psx_<account>"],
    ["psx_-mbl-us", "account", "[a-z0-9_]"],
    ["psx_a-wifi-us", "pool", "mbl, peer, any"],
    ["psx_a-mbl-usa", "country", "any"],
    ["psx_a-mbl", "country", "<iso2>"],
    ["psx_a-mbl-us-colour-red", "colour", "sid, rot, ttl, carrier, city, iptype"],
    ["psx_a-mbl-us-sid-short", "sid", "[a-z0-9_]{8,64}"],
    ["psx_a-mbl-us-sid-abcdefgh-rot-auto7", "rot", "auto5"],
    ["psx_a-mbl-us-sid-abcdefgh-ttl-59", "ttl", "60-86400"],
    ["psx_a-mbl-us-sid-abcdefgh-ttl-86401", "ttl", "60-86400"],
    ["psx_a-mbl-us-sid-abcdefgh-ttl-1e3", "ttl", "60-86400"],
    ["psx_a-mbl-us-iptype-satellite", "iptype", "mobile, residential, datacenter"],
    ["psx_a-mbl-us-sid", "sid", "[a-z0-9_]{8,64}"],
    ["psx_a-mbl-us-rot-sticky", "rot", "sid"],
    ["psx_a-mbl-us-sid-abcdefgh-sid-abcdefgh", "sid", "sid"],
    ["psx_a-mbl-us-", "", "sid"],
  ])("rejects %s naming the token %s and listing valid values", (username, token, listed) => {
    const err = parseError(username);
    expect(err.token).toBe(token);
    expect(err.message).toContain("valid:");
    expect(err.message).toContain(listed);
  });

  it("fuzz: random and mutated usernames either parse and round-trip or throw UsernameParseError", () => {
    // Seeded so a failure is reproducible; mulberry32.
    let seed = 0x5eed1234;
    const rand = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
    const seeds = [
      "psx_acme-mbl-us-sid-abcdefgh-rot-sticky",
      "psx_a-peer-gb-sid-job_0001-rot-auto60-ttl-600-carrier-ee-city-leeds-iptype-mobile",
      "psx_x-any-any",
    ];
    const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789_-.:@ \u00e9\u0000\uffff%ZQ";
    const words = ["sid", "rot", "ttl", "carrier", "city", "iptype", "psx_", "any", "mbl", "-", "--", "60"];
    let parsed = 0;
    for (let i = 0; i < 20_000; i++) {
      let s = pick(seeds);
      const edits = 1 + Math.floor(rand() * 4);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(rand() * (s.length + 1));
        const op = Math.floor(rand() * 4);
        if (op === 0) s = s.slice(0, at) + pick([...alphabet]) + s.slice(at);
        else if (op === 1) s = s.slice(0, at) + s.slice(at + 1);
        else if (op === 2) s = s.slice(0, at) + pick(words) + s.slice(at);
        else s = Array.from({ length: Math.floor(rand() * 40) }, () => pick([...alphabet])).join("");
      }
      let r: RouteRequest;
      try {
        r = parseUsername(s);
      } catch (err) {
        expect(err, s).toBeInstanceOf(UsernameParseError);
        continue;
      }
      parsed++;
      const canonical = formatUsername(r);
      expect(parseUsername(canonical), s).toEqual(r);
      expect(formatUsername(parseUsername(canonical))).toBe(canonical);
    }
    // The mutations must exercise the success path too, or the round-trip check proves nothing.
    expect(parsed).toBeGreaterThan(500);
  });

  it("pin-device-<deviceId> names exactly one device (the Go fleet guide's supplier self-test)", () => {
    expect(parseUsername("psx_acme-peer-us-pin-device-agent_0123abcd")).toEqual({
      account: "acme",
      pool: "peer",
      country: "us",
      pinDevice: "agent_0123abcd",
    });
    expect(formatUsername(parseUsername("psx_acme-any-any-pin-device-agent_0123abcd"))).toBe(
      "psx_acme-any-any-pin-device-agent_0123abcd",
    );
  });

  it.each([
    ["psx_acme-peer-us-pin", "pin"],
    ["psx_acme-peer-us-pin-device", "pin"],
    ["psx_acme-peer-us-pin-endpoint-agent_0123abcd", "pin"],
    ["psx_acme-peer-us-pin-device-a-b", "pin"],
    ["psx_acme-peer-us-pin-device-agent_0123abcd-sid-job12345", "sid"],
    ["psx_acme-peer-us-sid-job12345-pin-device-agent_0123abcd", "sid"],
    ["psx_acme-peer-us-pin-device-agent_0123abcd-pin-device-agent_0123abce", "pin"],
  ])("refuses %s naming the token %s", (u, token) => {
    expect(parseError(u).token).toBe(token);
  });
});
