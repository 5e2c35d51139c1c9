/**
 * IP class from the connecting IP's ASN (payout tier and routing filter). What a device claims is
 * never used. Maintained table first, then the AS organisation's name; unknown -> residential,
 * which earns less than mobile, so an unrecognised network cannot inflate its own payout.
 */
export type IpClass = "mobile" | "residential" | "datacenter";

export const ASN_CLASS: Readonly<Record<number, IpClass>> = {
  // mobile carriers
  21928: "mobile", // T-Mobile USA
  6167: "mobile", // Verizon Wireless
  20057: "mobile", // AT&T Mobility
  22394: "mobile", // Verizon (Cellco)
  3651: "mobile", // Sprint
  12576: "mobile", // EE (UK)
  25135: "mobile", // Vodafone UK
  3320: "mobile", // Deutsche Telekom (mixed; mobile egress)
  16135: "mobile", // Turkcell
  45609: "mobile", // Bharti Airtel mobile
  55836: "mobile", // Reliance Jio
  // hosting and cloud
  16509: "datacenter", // Amazon
  14618: "datacenter", // Amazon
  15169: "datacenter", // Google
  396982: "datacenter", // Google Cloud
  8075: "datacenter", // Microsoft
  14061: "datacenter", // DigitalOcean
  24940: "datacenter", // Hetzner
  16276: "datacenter", // OVH
  63949: "datacenter", // Akamai/Linode
  20473: "datacenter", // Vultr
  13335: "datacenter", // Cloudflare
  9009: "datacenter", // M247
  60068: "datacenter", // Datacamp/CDN77
  212238: "datacenter", // Datacamp
};

const MOBILE_WORDS = /\b(mobile|wireless|cellular|mobility|lte|5g)\b/i;
const DATACENTER_WORDS = /\b(hosting|cloud|data ?cent(er|re)|server|vps|colo(cation)?|dedicated|cdn)\b/i;

export function classifyAsn(asn: number | undefined, asOrganization: string | undefined): IpClass {
  if (asn !== undefined && ASN_CLASS[asn]) return ASN_CLASS[asn];
  if (asOrganization) {
    if (MOBILE_WORDS.test(asOrganization)) return "mobile";
    if (DATACENTER_WORDS.test(asOrganization)) return "datacenter";
  }
  return "residential";
}

/** One row of an IP-to-ASN table: an inclusive address range and who announces it. */
export interface AsnRange {
  start: bigint;
  end: bigint;
  asn: number;
  country: string;
  organization: string;
}

/** Ranges sorted by start, per address family, for binary search. */
export interface AsnTable {
  v4: AsnRange[];
  v6: AsnRange[];
}

/** An IPv4 or IPv6 literal as an integer and its family; undefined when it is not an address. */
export function ipToBigInt(ip: string): { family: 4 | 6; value: bigint } | undefined {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  const text = mapped ? mapped[1]! : ip;
  const v4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(text);
  if (v4) {
    const parts = v4.slice(1).map(Number);
    if (parts.some((p) => p > 255)) return undefined;
    return { family: 4, value: parts.reduce((acc, p) => (acc << 8n) | BigInt(p), 0n) };
  }
  if (!text.includes(":") || !/^[0-9a-f:.]+$/i.test(text)) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (h: string) => (h === "" ? [] : h.split(":"));
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  // A trailing dotted quad (e.g. 64:ff9b::1.2.3.4) is two groups.
  const last = tail.length ? tail : head;
  const quad = last.length ? /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(last[last.length - 1]!) : null;
  if (quad) {
    const q = quad.slice(1).map(Number);
    last.splice(last.length - 1, 1, ((q[0]! << 8) | q[1]!).toString(16), ((q[2]! << 8) | q[3]!).toString(16));
  }
  const fill = 8 - head.length - tail.length;
  if ((halves.length === 1 && fill !== 0) || fill < 0) return undefined;
  const all = [...head, ...Array<string>(halves.length === 2 ? fill : 0).fill("0"), ...tail];
  let value = 0n;
  for (const g of all) {
    if (!/^[0-9a-f]{1,4}$/i.test(g)) return undefined;
    value = (value << 16n) | BigInt(Number.parseInt(g, 16));
  }
  return { family: 6, value };
}

/**
 * Parses an iptoasn.com-style TSV (`range_start  range_end  AS_number  country_code  AS_description`,
 * public domain, IPv4 and IPv6 mixed). AS 0 rows ("Not routed") are skipped; bad lines throw with
 * their number so a broken table fails the process at start, not a socket later.
 */
export function parseAsnTable(tsv: string): AsnTable {
  const table: AsnTable = { v4: [], v6: [] };
  const lines = tsv.split("\n");
  for (const [i, raw] of lines.entries()) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const [from, to, asnText, country = "", ...org] = line.split("\t");
    const start = ipToBigInt(from ?? "");
    const end = ipToBigInt(to ?? "");
    const asn = Number(asnText);
    if (!start || !end || start.family !== end.family || end.value < start.value || !Number.isInteger(asn))
      throw new Error(`ASN table line ${i + 1}: expected range_start, range_end, AS number, country, name`);
    if (asn === 0) continue;
    const cc = country.toUpperCase();
    (start.family === 4 ? table.v4 : table.v6).push({
      start: start.value,
      end: end.value,
      asn,
      country: /^[A-Z]{2}$/.test(cc) ? cc : "",
      organization: org.join("\t"),
    });
  }
  for (const list of [table.v4, table.v6])
    list.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  return table;
}

/** The range holding `ip`, or undefined (not an address, or not in the table). */
export function lookupAsn(table: AsnTable, ip: string): AsnRange | undefined {
  const addr = ipToBigInt(ip);
  if (!addr) return undefined;
  const list = addr.family === 4 ? table.v4 : table.v6;
  let lo = 0;
  let hi = list.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = list[mid]!;
    if (addr.value < r.start) hi = mid - 1;
    else if (addr.value > r.end) lo = mid + 1;
    else return r;
  }
  return undefined;
}

/** Class and country of an address by the same rules the API applies to the caller's ASN. */
export function classifyIp(
  table: AsnTable,
  ip: string,
): { ipType: IpClass; country: string; asn: number } | undefined {
  const r = lookupAsn(table, ip);
  return r ? { ipType: classifyAsn(r.asn, r.organization), country: r.country, asn: r.asn } : undefined;
}
