// Reservations (dedicated ports) in the selection pool, against the real Redis and Lua scripts.
import { afterAll, describe, expect, it } from "vitest";
import { stateEnv } from "../test/helpers/env.ts";
import { keys } from "./keys.ts";
import {
  delistEndpoint,
  freeEndpoints,
  listEndpoint,
  releaseEndpoint,
  releaseHold,
  reserveEndpoint,
  type SelectInput,
  selectEndpoint,
} from "./pool.ts";
import { tcpRedis } from "./redis.node.ts";

const redis = tcpRedis(stateEnv().REDIS_URL);
const uid = () => crypto.randomUUID().slice(0, 8);
const listed: string[] = [];
// A private holds zset: this file's clock runs ahead of the real one.
const holdsKey = `pool:holds:test_${uid()}`;
afterAll(async () => {
  for (const id of listed) {
    await releaseEndpoint(redis, id);
    await delistEndpoint(redis, id);
  }
  await redis.del(holdsKey);
  await redis.close();
});

const T0 = 1_900_000_000_000;
// User-assigned ISO codes, private to this file.
async function modem(country: string): Promise<string> {
  const endpointId = `modem_${uid()}${uid()}`;
  await listEndpoint(redis, {
    endpointId,
    pool: "mbl",
    kind: "modem",
    country,
    ipType: "mobile",
    speedTier: "unknown",
    host: "127.0.0.1",
    port: 1,
  });
  listed.push(endpointId);
  return endpointId;
}
const base = (over: Partial<SelectInput>): SelectInput => ({
  holdsKey,
  keyId: `pk_${uid()}`,
  pool: "mbl",
  country: "any",
  maxConnections: 0,
  now: T0,
  leaseMs: 30_000,
  ...over,
});
const indexes = (country: string) =>
  ["mbl", "any"].flatMap((p) =>
    [country, "any"].flatMap((c) => ["mobile", "any"].map((t) => keys.poolIndex(p, c, t))),
  );
async function indexedIn(id: string, country: string): Promise<number> {
  let n = 0;
  for (const idx of indexes(country)) if ((await redis.raw.zscore(idx, id)) !== null) n++;
  return n;
}

describe("endpoint reservations", () => {
  it("reserving takes the endpoint out of all 8 shared indexes; releasing puts it back", async () => {
    const country = "xq";
    const id = await modem(country);
    expect(await indexedIn(id, country)).toBe(8);
    await reserveEndpoint(redis, id, "pk_renter");
    expect(await indexedIn(id, country)).toBe(0);
    expect(await freeEndpoints(redis, [id])).toEqual([]);
    // Delist and relist (probe failure and recovery, or an operator re-registering) keep it reserved.
    await delistEndpoint(redis, id);
    expect(await redis.get(keys.endpointReservation(id))).toBe("pk_renter");
    listed.pop();
    await listEndpoint(redis, {
      endpointId: id,
      pool: "mbl",
      kind: "modem",
      country,
      ipType: "mobile",
      speedTier: "unknown",
      host: "127.0.0.1",
      port: 1,
    });
    listed.push(id);
    expect(await indexedIn(id, country)).toBe(0);
    // Releasing on behalf of another key changes nothing; the renter's release restores it.
    expect(await releaseEndpoint(redis, id, "pk_other")).toBe(false);
    expect(await indexedIn(id, country)).toBe(0);
    expect(await releaseEndpoint(redis, id, "pk_renter")).toBe(true);
    expect(await indexedIn(id, country)).toBe(8);
    expect(await freeEndpoints(redis, [id, "modem_missing"])).toEqual([id]);
  });

  it("a pinned selection gets exactly its reserved endpoint, past the customer cap, and nothing else", async () => {
    const country = "xr";
    const [reserved, other] = [await modem(country), await modem(country)];
    const renter = `pk_${uid()}`;
    // Before the reservation exists a pinned key gets nothing (not the other modem).
    const early = await selectEndpoint(redis, base({ keyId: renter, endpointId: reserved }));
    expect(early).toMatchObject({ ok: false, code: "E_NO_STOCK" });
    // Three shared customers fill the modem's customer cap (3), then it is rented.
    const shared = await Promise.all(
      [1, 2, 3].map(() => selectEndpoint(redis, base({ country, exclude: [other] }))),
    );
    expect(shared.every((r) => r.ok && r.endpoint.endpointId === reserved)).toBe(true);
    await reserveEndpoint(redis, reserved, renter);
    const pinned = await selectEndpoint(redis, base({ keyId: renter, endpointId: reserved, country: "zz" }));
    expect(pinned.ok && pinned.endpoint.endpointId).toBe(reserved);
    for (let i = 0; i < 5; i++) {
      const r = await selectEndpoint(redis, base({ country }));
      expect(r.ok && r.endpoint.endpointId).toBe(other);
      if (r.ok) await releaseHold(redis, r.hold, T0);
    }
    for (const r of [...shared, pinned]) if (r.ok) await releaseHold(redis, r.hold, T0);
  });

  it("a sticky session of another key pinned to the endpoint moves off it once it is reserved", async () => {
    const country = "xy";
    const first = await modem(country);
    const keyId = `pk_${uid()}`;
    const sticky = { keyId, country, sid: `sess_${uid()}`, rot: "sticky" as const };
    const a = await selectEndpoint(redis, base(sticky));
    expect(a.ok && a.endpoint.endpointId).toBe(first);
    if (a.ok) await releaseHold(redis, a.hold, T0);
    const second = await modem(country);
    await reserveEndpoint(redis, first, "pk_renter2");
    const b = await selectEndpoint(redis, base(sticky));
    expect(b).toMatchObject({ ok: true, moved: true, endpoint: { endpointId: second } });
    if (b.ok) await releaseHold(redis, b.hold, T0);
  });
});
