import { describe, expect, it } from "vitest";
import { isBlockedAddress, type Lookup, resolveTarget } from "./src/egress.ts";

describe("egress safety on addresses", () => {
  it.each([
    "127.0.0.1",
    "127.255.255.254",
    "10.1.2.3",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "100.64.0.1",
    "100.127.255.255",
    "169.254.169.254",
    "0.0.0.0",
    "224.0.0.251",
    "239.255.255.250",
    "255.255.255.255",
    "::",
    "::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fe80::1%eth0",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:7f00:1",
    "::ffff:169.254.169.254",
    "::ffff:10.0.0.1",
    "0:0:0:0:0:ffff:c0a8:0101",
    "64:ff9b::10.0.0.1",
    "::127.0.0.1",
    "not-an-ip",
  ])("refuses %s", (addr) => {
    expect(isBlockedAddress(addr)).toBe(true);
  });

  it.each([
    "8.8.8.8",
    "1.1.1.1",
    "172.32.0.1",
    "100.128.0.1",
    "169.253.0.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::8.8.8.8",
  ])("allows public %s", (addr) => {
    expect(isBlockedAddress(addr)).toBe(false);
  });
});

describe("egress safety on resolved names", () => {
  // Stand-in resolvers: a test cannot make a public DNS name answer 10.0.0.5 on demand.
  const answers =
    (...addrs: string[]): Lookup =>
    async () =>
      addrs.map((address) => ({ address, family: address.includes(":") ? 6 : 4 }));

  it("a name that resolves to a private address is blocked_target (checked after DNS)", async () => {
    const r = await resolveTarget("innocent.example", { allowPrivate: false, lookup: answers("10.0.0.5") });
    expect(r).toMatchObject({ ok: false, reason: "blocked_target" });
  });

  it("the system resolver's answer for localhost is refused by default", async () => {
    expect(await resolveTarget("localhost", { allowPrivate: false })).toMatchObject({
      ok: false,
      reason: "blocked_target",
    });
    expect(await resolveTarget("[::1]", { allowPrivate: false })).toMatchObject({
      ok: false,
      reason: "blocked_target",
    });
  });

  it("picks a public address among mixed answers and returns it, so the connect goes to the checked address", async () => {
    const r = await resolveTarget("mixed.example", {
      allowPrivate: false,
      lookup: answers("127.0.0.1", "93.184.215.14"),
    });
    expect(r).toEqual({ ok: true, address: "93.184.215.14", family: 4 });
  });

  it("the development flag lifts the check", async () => {
    expect(await resolveTarget("localhost", { allowPrivate: true })).toMatchObject({ ok: true });
    expect(await resolveTarget("169.254.169.254", { allowPrivate: true })).toMatchObject({
      ok: true,
      address: "169.254.169.254",
    });
  });

  it("a failed lookup is dns_failed", async () => {
    const r = await resolveTarget("nothing.invalid", {
      allowPrivate: false,
      lookup: async () => {
        throw Object.assign(new Error("nope"), { code: "ENOTFOUND" });
      },
    });
    expect(r).toEqual({ ok: false, reason: "dns_failed", detail: "ENOTFOUND" });
  });
});
