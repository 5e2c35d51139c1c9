/** GET /status: the network as the public may see it: counts per pool and country, never an IP. */
import type { NetworkStatus } from "../services/status.ts";
import { RoutableChart } from "./chart.tsx";
import { Ago, Layout } from "./layout.tsx";

const POOLS = [
  { pool: "peer", title: "Peer pool (community devices)" },
  { pool: "mbl", title: "Mobile pool (production modems)" },
] as const;

export function StatusPage(props: { status: NetworkStatus }) {
  const s = props.status;
  const now = s.generatedAt;
  return (
    <Layout title="Network status">
      <h1>Network status</h1>
      <p class="lede">
        Live counts from the rollup the every-minute cron computes
        {s.stock.updatedAt ? (
          <>
            {" "}
            (<Ago at={new Date(s.stock.updatedAt)} now={now} />)
          </>
        ) : (
          " (not computed yet)"
        )}
        . Routable means up for sale right now; online means connected.
      </p>
      <section class="cards">
        {POOLS.map((p) => (
          <div class="card" data-pool={p.pool}>
            <div class="big" data-testid={`routable-${p.pool}`}>
              {s.stock.pools[p.pool].routable}
            </div>
            <div>routable in {p.pool}</div>
          </div>
        ))}
        <div class="card">
          <div class="big">{s.listing ? <Ago at={s.listing.at} now={now} /> : "never"}</div>
          <div>listing cron{s.listing ? ` (${s.listing.status})` : ""}</div>
        </div>
        <div class="card">
          <div class="big">{s.breaker.delists24h}</div>
          <div>
            faulty exits delisted by the circuit breaker in 24 h
            {s.breaker.medianProbeMs !== null ? `; median re-probe ${s.breaker.medianProbeMs} ms` : ""}
          </div>
        </div>
      </section>

      <h2>Routable endpoints, last 24 hours</h2>
      <RoutableChart history={s.history} now={now} />

      {POOLS.map((p) => {
        const countries = Object.entries(s.stock.pools[p.pool].countries);
        const w = s.watchdog[p.pool];
        return (
          <section data-pool-table={p.pool}>
            <h2>{p.title}</h2>
            <p class="watchdog">
              Watchdog:{" "}
              {w ? (
                <>
                  {w.failed === 0 ? "all checks passed" : `failing in ${w.failing.join(", ")}`} ({w.passed}{" "}
                  passed, {w.failed} failed, <Ago at={w.at} now={now} />)
                </>
              ) : (
                "no verdict in the last 24 h"
              )}
            </p>
            {countries.length ? (
              <table>
                <thead>
                  <tr>
                    <th scope="col">Country</th>
                    <th scope="col">Routable</th>
                    <th scope="col">Online</th>
                  </tr>
                </thead>
                <tbody>
                  {countries.map(([country, c]) => (
                    <tr>
                      <td>{country.toUpperCase()}</td>
                      <td>{c.routable}</td>
                      <td>{c.online}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            ) : (
              <p>No endpoints in this pool yet.</p>
            )}
          </section>
        );
      })}

      <h2>Recent alerts</h2>
      {s.alerts.length ? (
        <ul class="alerts">
          {s.alerts.map((a) => (
            <li class={a.resolvedAt ? "resolved" : "open"}>
              <strong>{a.resolvedAt ? "resolved" : "open"}</strong> {a.scope}
              {a.error ? ` (${a.error})` : ""}: opened <Ago at={a.openedAt} now={now} />
              {a.resolvedAt ? (
                <>
                  , resolved <Ago at={a.resolvedAt} now={now} />
                </>
              ) : null}
            </li>
          ))}
        </ul>
      ) : (
        <p>No alerts in the last 7 days.</p>
      )}
      <p class="fine">
        The same counts as JSON: <a href="/v1/gateway/pool/stock">/v1/gateway/pool/stock</a>.
      </p>
    </Layout>
  );
}
