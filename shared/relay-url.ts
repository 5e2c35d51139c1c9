/**
 * One spelling per relay URL, so the URL a relay reports about itself (RELAY_PUBLIC_URL, or the
 * ws://host:port it listens on) and the `relayUrl` an operator typed into `relay_regions` compare
 * equal: lower-case scheme and host, no default port, no trailing slash.
 */
export function normaliseRelayUrl(url: string): string {
  if (!URL.canParse(url)) return url;
  const u = new URL(url);
  const path = u.pathname.replace(/\/+$/, "");
  return `${u.protocol}//${u.host}${path}${u.search}`;
}
