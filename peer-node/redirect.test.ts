import { describe, expect, it } from "vitest";
import { decideRedirect, type RedirectContext, relayDomain } from "./src/redirect.ts";

const now = 1_000_000_000;
const base: RedirectContext = {
  pinned: false,
  allowlist: [relayDomain("wss://us.relay.peerproxy.dev")],
  currentRelay: "wss://us.relay.peerproxy.dev",
  lastRedirectAt: undefined,
  now,
  cooldownMs: 60_000,
};

describe("relay_redirect rules", () => {
  it("the default allow-list is the registered relay's domain", () => {
    expect(relayDomain("wss://us.relay.peerproxy.dev")).toBe("peerproxy.dev");
    expect(relayDomain("wss://peerproxy.dev/ws")).toBe("peerproxy.dev");
    expect(relayDomain("ws://127.0.0.1:8080")).toBe("127.0.0.1");
    expect(relayDomain("ws://[::1]:8080")).toBe("::1");
    expect(relayDomain("ws://localhost:1")).toBe("localhost");
  });

  it("follows a redirect to another relay on an allowed domain", () => {
    expect(decideRedirect("wss://eu.relay.peerproxy.dev", base)).toEqual({
      follow: true,
      target: "wss://eu.relay.peerproxy.dev",
    });
  });

  it("never follows when the relay is pinned by configuration", () => {
    expect(decideRedirect("wss://eu.relay.peerproxy.dev", { ...base, pinned: true })).toMatchObject({
      follow: false,
      reason: /pinned/,
    });
  });

  it("refuses hosts off the allow-list, including look-alike suffixes", () => {
    for (const target of ["wss://evil.example", "wss://peerproxy.dev.evil.example", "wss://notpeerproxy.dev"])
      expect(decideRedirect(target, base)).toMatchObject({ follow: false, reason: /allow-list/ });
  });

  it("refuses a target equal to the current relay and anything that is not a ws(s) URL", () => {
    expect(decideRedirect("wss://us.relay.peerproxy.dev/", base)).toMatchObject({
      follow: false,
      reason: /already/,
    });
    for (const target of ["https://eu.relay.peerproxy.dev", 42, undefined, "wss://"])
      expect(decideRedirect(target, base)).toMatchObject({ follow: false, reason: /not a ws/ });
  });

  it("anti-flap: a second redirect within 60 s is ignored, after 60 s it is followed", () => {
    const target = "wss://eu.relay.peerproxy.dev";
    expect(decideRedirect(target, { ...base, lastRedirectAt: now - 60_000 })).toMatchObject({
      follow: false,
      reason: /too recent/,
    });
    expect(decideRedirect(target, { ...base, lastRedirectAt: now - 60_001 })).toMatchObject({ follow: true });
  });

  it("an explicit allow-list replaces the default", () => {
    const ctx = { ...base, allowlist: ["relays.example.net"] };
    expect(decideRedirect("wss://eu.relay.peerproxy.dev", ctx)).toMatchObject({ follow: false });
    expect(decideRedirect("wss://a.relays.example.net", ctx)).toMatchObject({ follow: true });
  });
});
