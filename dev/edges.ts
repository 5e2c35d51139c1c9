// DEV ONLY. The network's edge processes as they run in production, N of each on one machine: relays
// (one region each) and gateways, all on the one Redis (and, through the API, the one Postgres).
// Used by `npm start` (STACK_RELAYS, STACK_GATEWAYS), the two-region test and the bench.
import { join } from "node:path";
import { type Service, startProcess } from "./proc.ts";

const root = join(import.meta.dirname, "..");

/**
 * The regions relays 1..4 serve locally. Relay 1 is the default region (`local`: every country no
 * other region lists, so one relay behaves exactly as before); relay 2 takes Europe, and so on.
 */
export const LOCAL_REGIONS: { region: string; countries: string[] }[] = [
  { region: "local", countries: [] },
  {
    region: "local-eu",
    countries: [
      "DE",
      "FR",
      "GB",
      "NL",
      "ES",
      "IT",
      "PL",
      "SE",
      "NO",
      "FI",
      "DK",
      "IE",
      "PT",
      "AT",
      "BE",
      "CH",
    ],
  },
  { region: "local-ap", countries: ["JP", "KR", "SG", "AU", "IN", "ID", "PH", "VN", "TH", "MY"] },
  { region: "local-sa", countries: ["BR", "AR", "CL", "CO", "PE"] },
];

export interface RelayEdge {
  id: string;
  region: string;
  countries: string[];
  url: string;
  internalUrl: string;
  metrics: string;
  service: Service;
}

export interface GatewayEdge {
  id: string;
  http: string;
  socks5: string;
  admin: string;
  metrics: string;
  httpPort: number;
  socksPort: number;
  service: Service;
}

export interface EdgeEnv {
  REDIS_URL: string;
  JWT_SECRET: string;
  RELAY_SHARED_SECRET: string;
}

/**
 * Starts `ports.length` relays, relay i serving LOCAL_REGIONS[i]; each knows every other region's
 * URL (REGION_RELAYS, for relay_redirect). Resolves once all print `relay ready`.
 */
export async function startRelays(opts: {
  env: EdgeEnv;
  ports: { ws: number; internal: number }[];
  /** relay i's id: ids[i] ?? `relay_local` for the first, `relay_local_<n>` after it */
  ids?: string[];
  echo?: boolean;
  extraEnv?: Record<string, string>;
}): Promise<RelayEdge[]> {
  if (opts.ports.length > LOCAL_REGIONS.length)
    throw new Error(`at most ${LOCAL_REGIONS.length} local relays (one per region in dev/edges.ts)`);
  const planned = opts.ports.map((p, i) => ({
    ...LOCAL_REGIONS[i]!,
    id: opts.ids?.[i] ?? (i === 0 ? "relay_local" : `relay_local_${i + 1}`),
    url: `ws://127.0.0.1:${p.ws}`,
    internalUrl: `http://127.0.0.1:${p.internal}`,
    p,
  }));
  const regionRelays = JSON.stringify(Object.fromEntries(planned.map((r) => [r.region, r.url])));
  const relays = planned.map((r) => {
    const service = startProcess(
      planned.length === 1 ? "relay" : `relay-${r.region}`,
      process.execPath,
      ["relay-node/main.ts"],
      {
        cwd: root,
        echo: opts.echo,
        env: {
          ENVIRONMENT: "development",
          RELAY_ID: r.id,
          RELAY_PORT: String(r.p.ws),
          RELAY_INTERNAL_PORT: String(r.p.internal),
          JWT_SECRET: opts.env.JWT_SECRET,
          RELAY_SHARED_SECRET: opts.env.RELAY_SHARED_SECRET,
          REDIS_URL: opts.env.REDIS_URL,
          RELAY_REGION: r.region,
          REGION_RELAYS: regionRelays,
          ...opts.extraEnv,
        },
      },
    );
    return {
      id: r.id,
      region: r.region,
      countries: r.countries,
      url: r.url,
      internalUrl: r.internalUrl,
      metrics: `${r.internalUrl}/metrics`,
      service,
    };
  });
  await Promise.all(relays.map((r) => r.service.waitFor(/relay ready/, 30_000)));
  return relays;
}

/** The `relay_regions` setting (settings table) that sends each country to its local relay. */
export function relayRegionsSetting(relays: Pick<RelayEdge, "region" | "url" | "countries">[]) {
  return {
    default: relays[0]!.region,
    regions: Object.fromEntries(relays.map((r) => [r.region, { relayUrl: r.url, countries: r.countries }])),
  };
}

/** Starts one gateway per port triple, all on the one Redis; resolves once all print `gateway ready`. */
export async function startGateways(opts: {
  env: Pick<EdgeEnv, "REDIS_URL" | "RELAY_SHARED_SECRET">;
  ports: { http: number; socks: number; admin: number }[];
  ids?: string[];
  echo?: boolean;
  extraEnv?: Record<string, string>;
}): Promise<GatewayEdge[]> {
  const gateways = opts.ports.map((p, i) => {
    const id = opts.ids?.[i] ?? (i === 0 ? "gw_local" : `gw_local_${i + 1}`);
    const service = startProcess(
      opts.ports.length === 1 ? "gateway" : `gateway-${i + 1}`,
      process.execPath,
      ["gateway-node/main.ts"],
      {
        cwd: root,
        echo: opts.echo,
        env: {
          ENVIRONMENT: "development",
          GATEWAY_ID: id,
          GATEWAY_HTTP_PORT: String(p.http),
          GATEWAY_SOCKS_PORT: String(p.socks),
          GATEWAY_ADMIN_PORT: String(p.admin),
          REDIS_URL: opts.env.REDIS_URL,
          RELAY_SHARED_SECRET: opts.env.RELAY_SHARED_SECRET,
          // Development only: the demo targets are on loopback.
          GATEWAY_ALLOW_PRIVATE_TARGETS: "1",
          ...opts.extraEnv,
        },
      },
    );
    return {
      id,
      http: `http://127.0.0.1:${p.http}`,
      socks5: `socks5://127.0.0.1:${p.socks}`,
      admin: `http://127.0.0.1:${p.admin}`,
      metrics: `http://127.0.0.1:${p.admin}/metrics`,
      httpPort: p.http,
      socksPort: p.socks,
      service,
    };
  });
  await Promise.all(gateways.map((g) => g.service.waitFor(/gateway ready/, 30_000)));
  return gateways;
}
