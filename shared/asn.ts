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
