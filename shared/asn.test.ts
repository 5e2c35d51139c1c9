import { describe, expect, it } from "vitest";
import { classifyIp, ipToBigInt, lookupAsn, parseAsnTable } from "./asn.ts";

// iptoasn.com rows (range_start, range_end, AS_number, country_code, AS_description), tab-separated.
const TSV = [
  "1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET",
  "1.0.1.0\t1.0.3.255\t0\tNone\tNot routed",
  "3.5.0.0\t3.5.255.255\t16509\tUS\tAMAZON-02",
  "100.128.0.0\t100.255.255.255\t21928\tUS\tT-MOBILE-AS21928",
  "81.2.69.0\t81.2.69.255\t64500\tgb\tExample Broadband Ltd",
  "2a00:1450::\t2a00:1450:ffff:ffff:ffff:ffff:ffff:ffff\t15169\tIE\tGOOGLE",
].join("\n");

describe("IP-to-ASN table", () => {
  const table = parseAsnTable(TSV);

  it("classifies an address by the same ASN rules the API uses for the caller", () => {
    expect(classifyIp(table, "3.5.1.2")).toEqual({ ipType: "datacenter", country: "US", asn: 16509 });
    expect(classifyIp(table, "100.200.3.4")).toEqual({ ipType: "mobile", country: "US", asn: 21928 });
    expect(classifyIp(table, "81.2.69.160")).toEqual({ ipType: "residential", country: "GB", asn: 64500 });
    expect(classifyIp(table, "2a00:1450:4001::200e")).toMatchObject({ ipType: "datacenter", country: "IE" });
    expect(classifyIp(table, "::ffff:3.5.1.2")).toMatchObject({ ipType: "datacenter" });
  });

  it("knows nothing of unrouted rows, addresses outside every range, and non-addresses", () => {
    expect(lookupAsn(table, "1.0.2.1")).toBeUndefined();
    expect(lookupAsn(table, "9.9.9.9")).toBeUndefined();
    expect(lookupAsn(table, "not-an-ip")).toBeUndefined();
    expect(lookupAsn(table, "300.1.1.1")).toBeUndefined();
  });

  it("range edges are inclusive", () => {
    expect(lookupAsn(table, "1.0.0.0")?.asn).toBe(13335);
    expect(lookupAsn(table, "1.0.0.255")?.asn).toBe(13335);
    expect(lookupAsn(table, "1.0.1.0")).toBeUndefined();
  });

  it("parses IPv6 forms to the same integer", () => {
    expect(ipToBigInt("::1")).toEqual({ family: 6, value: 1n });
    expect(ipToBigInt("0:0:0:0:0:0:0:1")).toEqual({ family: 6, value: 1n });
    expect(ipToBigInt("::ffff:127.0.0.1")).toEqual({ family: 4, value: 0x7f000001n });
    expect(ipToBigInt("64:ff9b::1.2.3.4")?.value).toBe((0x64ff9bn << 96n) | 0x01020304n);
    expect(ipToBigInt("1:2:3")).toBeUndefined();
    expect(ipToBigInt("1::2::3")).toBeUndefined();
  });

  it("a broken line fails the parse naming its number", () => {
    expect(() => parseAsnTable("1.0.0.0\t1.0.0.255\t13335\tUS\tX\nbad line")).toThrow(/line 2/);
  });
});
