/**
 * GET /farmer (a `supply` sign-in): the supplier's devices, earnings with a daily chart, payout
 * wallet, the withdraw form and withdrawal history. POST /farmer/wallet and /farmer/withdrawals
 * are the forms: they call the same services as PUT /v1/peer/wallet and POST /v1/peer/withdrawals
 * and redirect (303) on success; a refusal re-renders the page saying why.
 */
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { withTransaction } from "../../../shared/db/pool.ts";
import { formatUsdc, parseUsdc } from "../../../shared/money.ts";
import type { Config } from "../config.ts";
import type { AppEnv } from "../env.ts";
import { earningsSummary } from "../services/earnings.ts";
import { supplierBalance } from "../services/ledger.ts";
import { getSetting } from "../services/settings.ts";
import { listSupplierDevices, type SupplierDevice } from "../services/supplier-devices.ts";
import {
  DEFAULT_COOLING_SECONDS,
  getWallet,
  type PayoutNetwork,
  setWallet,
  walletAddressProblem,
} from "../services/wallets.ts";
import {
  listWithdrawals,
  requestWithdrawal,
  supplyKind,
  type Withdrawal,
  type WithdrawalRefusal,
  withdrawalMinimum,
} from "../services/withdrawals.ts";
import { TimeChart } from "./chart.tsx";
import { formPostFor, type PageRole, sessionFor } from "./guard.tsx";
import { renderPrivate } from "./html.ts";
import { Ago, Layout, Notice } from "./layout.tsx";
import type { PageSession } from "./session.ts";
import { signedInAs } from "./sign-in.tsx";

const DAYS = 30;

/** What a finished form says after its redirect (a fixed table: nothing from the query is echoed). */
const DONE: Record<string, string> = {
  wallet: "Wallet saved. A new wallet pays only after its cooling period (below).",
  "wallet-unchanged": "That is already your wallet: nothing changed.",
  withdrawal: "Withdrawal requested: it waits for a human operator's approval (below).",
};

/** Where a payout's transaction is shown: the network's explorer in production, the bare hash locally. */
export function txLink(
  network: PayoutNetwork,
  hash: string,
  environment: Config["ENVIRONMENT"],
): { href: string | null; text: string } {
  if (environment !== "production") return { href: null, text: hash };
  return network === "base"
    ? { href: `https://basescan.org/tx/${hash}`, text: hash }
    : { href: `https://explorer.solana.com/tx/${hash}`, text: hash };
}

interface FarmerView {
  now: Date;
  environment: Config["ENVIRONMENT"];
  devices: SupplierDevice[];
  earnings: Awaited<ReturnType<typeof earningsSummary>>;
  balance: Awaited<ReturnType<typeof supplierBalance>>;
  wallet: Awaited<ReturnType<typeof getWallet>>;
  coolingSeconds: number;
  minimumMicro: bigint;
  supplyKind: "agent" | "sdk";
  withdrawals: Withdrawal[];
}

async function readFarmer(c: Context<AppEnv>, accountId: string): Promise<FarmerView> {
  const deps = c.get("deps");
  const now = deps.now();
  const [devices, earnings, balance, wallet, coolingSeconds, kind, withdrawals] = await Promise.all([
    listSupplierDevices(deps, accountId, now),
    earningsSummary(deps.db, accountId, { now, days: DAYS, limit: 10 }),
    supplierBalance(deps.db, accountId),
    getWallet(deps.db, accountId),
    getSetting(deps.db, "wallet_cooling_seconds", DEFAULT_COOLING_SECONDS),
    supplyKind(deps.db, accountId),
    listWithdrawals(deps.db, accountId, { limit: 50 }),
  ]);
  return {
    now,
    environment: deps.config.ENVIRONMENT,
    devices,
    earnings,
    balance,
    wallet,
    coolingSeconds: Number(coolingSeconds),
    minimumMicro: await withdrawalMinimum(deps.db, kind),
    supplyKind: kind,
    withdrawals,
  };
}

const usdc = (micro: bigint) => `${formatUsdc(micro)} USDC`;
const gb = (bytes: bigint) => `${(Number(bytes) / 1e9).toFixed(3)} GB`;
const days = (s: number) => (s % 86400 === 0 ? `${s / 86400} days` : `${Math.round(s / 3600)} hours`);

function DeviceState(props: { d: SupplierDevice }) {
  const d = props.d;
  const state = d.listed ? "listed" : d.verified ? "verified" : d.online ? "unverified" : "offline";
  return (
    <span class={`badge b-${state}`} data-testid="device-state">
      {state}
    </span>
  );
}

function FarmerPage(props: {
  v: FarmerView;
  session: PageSession;
  notice?: { kind: "ok" | "error"; text: string };
  form?: { network?: string; address?: string; amount?: string };
}) {
  const { v, session } = props;
  const csrf = session.csrf;
  const end = Date.parse(`${v.now.toISOString().slice(0, 10)}T00:00:00Z`);
  const cooling = v.wallet ? v.wallet.payableFrom.getTime() > v.now.getTime() : false;
  return (
    <Layout title="Supplier" signedIn={signedInAs(session)}>
      <h1>Your devices and earnings</h1>
      <Notice notice={props.notice} />

      <section class="cards">
        <div class="card">
          <div class="big" data-testid="available">
            {usdc(v.balance.availableMicro)}
          </div>
          <div>available to withdraw</div>
        </div>
        <div class="card">
          <div class="big">{usdc(v.balance.pendingPayoutMicro)}</div>
          <div>withdrawn, waiting for approval or the chain</div>
        </div>
        <div class="card">
          <div class="big">{usdc(v.balance.paidMicro)}</div>
          <div>paid out</div>
        </div>
        <div class="card">
          <div class="big">{gb(v.earnings.bytes)}</div>
          <div>served to customers</div>
        </div>
      </section>

      <h2>Devices</h2>
      <p class="fine">
        A device is sold once it is online, the prober has verified it (two clean probes) and it is fast
        enough; the every-minute cron then lists it.
      </p>
      {v.devices.length ? (
        <div class="scroll">
          <table data-testid="devices">
            <thead>
              <tr>
                <th scope="col">Device</th>
                <th scope="col">State</th>
                <th scope="col">Online</th>
                <th scope="col">Speed</th>
                <th scope="col">Last probe</th>
                <th scope="col">Served</th>
              </tr>
            </thead>
            <tbody>
              {v.devices.map((d) => (
                <tr data-device={d.deviceId}>
                  <td>
                    {d.name}
                    <br />
                    <code class="fine">{d.deviceId}</code>
                  </td>
                  <td>
                    <DeviceState d={d} />
                    {d.pausedReason ? <div class="fine">paused: {d.pausedReason}</div> : null}
                  </td>
                  <td>{d.online ? `yes${d.country ? ` (${d.country})` : ""}` : "no"}</td>
                  <td data-testid="speed-tier">{d.speedTier}</td>
                  <td data-testid="last-probe">
                    {d.lastProbe ? (
                      <>
                        <span class={d.lastProbe.result === "ok" ? "ok" : "bad"}>{d.lastProbe.result}</span>,{" "}
                        <Ago at={d.lastProbe.at} now={v.now} />
                      </>
                    ) : (
                      "not probed yet"
                    )}
                  </td>
                  <td>{gb(d.bytesServed)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : (
        <p data-testid="no-devices">
          No devices yet: run the peer SDK with your <code>supply</code> key (see the peer-node README).
        </p>
      )}

      <h2>Earnings, last {DAYS} days</h2>
      <TimeChart
        series={[
          {
            id: "earnings",
            label: "earned per UTC day (USDC)",
            cls: "s-peer",
            points: v.earnings.days.map((d) => ({
              t: Date.parse(`${d.date}T00:00:00Z`),
              // Drawing only: the figures on the page are exact micro-USDC.
              v: Number(d.accruedMicro) / 1e6,
            })),
          },
        ]}
        start={end - (DAYS - 1) * 86_400_000}
        end={end}
        xTicks={[DAYS - 1, 20, 10, 0].map((k) => ({
          t: end - k * 86_400_000,
          label: k === 0 ? "today" : `-${k} d`,
        }))}
        yLabel={(n) => (n === 0 ? "0" : n < 0.01 ? n.toPrecision(1) : n.toFixed(2))}
        ariaLabel={`USDC earned per day over the last ${DAYS} days`}
        empty="nothing earned yet"
      />
      <p class="fine">
        Accrued in all: {usdc(v.earnings.accruedMicro)}. Rates per GB: mobile {v.earnings.rates.mobile},
        residential {v.earnings.rates.residential}, datacenter {v.earnings.rates.datacenter} USDC.
      </p>

      <h2>Payout wallet</h2>
      {v.wallet ? (
        <p class="hash" data-testid="wallet">
          {v.wallet.network === "base" ? "USDC on Base" : "USDC on Solana"} to <code>{v.wallet.address}</code>
          :{" "}
          {cooling ? (
            <strong data-testid="wallet-cooling">
              cooling until {v.wallet.payableFrom.toISOString().slice(0, 16).replace("T", " ")} UTC
            </strong>
          ) : (
            <strong data-testid="wallet-cooling">payable</strong>
          )}
        </p>
      ) : (
        <p class="hash" data-testid="wallet">
          No wallet yet: set one to be paid.
        </p>
      )}
      <form method="post" action="/farmer/wallet" class="stack">
        <input type="hidden" name="csrf" value={csrf} />
        <label for="network">Network</label>
        <select id="network" name="network">
          <option value="base" selected={(props.form?.network ?? v.wallet?.network ?? "base") === "base"}>
            Base (USDC)
          </option>
          <option value="solana" selected={(props.form?.network ?? v.wallet?.network) === "solana"}>
            Solana (USDC)
          </option>
        </select>
        <label for="address">Address</label>
        <input
          id="address"
          name="address"
          required
          maxlength={100}
          autocomplete="off"
          spellcheck={false}
          value={props.form?.address ?? ""}
          placeholder="0x... (EIP-55 checksummed) or a Solana address"
        />
        <p class="fine">
          A new or changed wallet pays only after {days(v.coolingSeconds)} of cooling, so a stolen key cannot
          redirect your earnings before you notice the change.
        </p>
        <button type="submit">Save wallet</button>
      </form>

      <h2>Withdraw</h2>
      <form method="post" action="/farmer/withdrawals" class="stack">
        <input type="hidden" name="csrf" value={csrf} />
        <label for="amount">Amount (USDC)</label>
        <input
          id="amount"
          name="amount"
          inputmode="decimal"
          required
          value={props.form?.amount ?? ""}
          placeholder={formatUsdc(v.minimumMicro)}
        />
        <p class="fine" data-testid="withdraw-rules">
          Minimum {usdc(v.minimumMicro)} (
          {v.supplyKind === "sdk" ? "accounts with SDK devices" : "custom agent integrations"}
          ); at most your available {usdc(v.balance.availableMicro)}. It is paid to the wallet above once its
          cooling period is over
          {v.wallet && cooling ? ` (${v.wallet.payableFrom.toISOString().slice(0, 10)})` : ""}, after a human
          operator approves it.
        </p>
        <button type="submit">Request withdrawal</button>
      </form>

      <h2>Withdrawals</h2>
      {v.withdrawals.length ? (
        <div class="scroll">
          <table data-testid="withdrawals">
            <thead>
              <tr>
                <th scope="col">Requested</th>
                <th scope="col">Amount</th>
                <th scope="col">Status</th>
                <th scope="col">Transaction</th>
              </tr>
            </thead>
            <tbody>
              {v.withdrawals.map((w) => {
                const tx = w.txHash ? txLink(w.network, w.txHash, v.environment) : null;
                return (
                  <tr data-withdrawal={w.id}>
                    <td>
                      <Ago at={w.createdAt} now={v.now} />
                    </td>
                    <td>{usdc(w.amountMicro)}</td>
                    <td data-testid="withdrawal-status">{w.status}</td>
                    <td class="hash">
                      {tx ? (
                        tx.href ? (
                          <a href={tx.href} rel="noreferrer">
                            {tx.text}
                          </a>
                        ) : (
                          <code>{tx.text}</code>
                        )
                      ) : (
                        "-"
                      )}
                      {tx && w.confirmations ? <span class="fine"> ({w.confirmations} conf.)</span> : null}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      ) : (
        <p>No withdrawals yet.</p>
      )}
    </Layout>
  );
}

/** A withdrawal refusal as the page says it (the service's messages speak of the JSON API), and its status. */
function refusalText(r: WithdrawalRefusal): { status: number; text: string } {
  switch (r.code) {
    case "no_wallet":
      return { status: 409, text: "Set a payout wallet first (the form above)." };
    case "cooling":
      return {
        status: 409,
        text: `Your wallet is in its cooling period until ${r.payableFrom.toISOString().slice(0, 16).replace("T", " ")} UTC: nothing pays to it before then.`,
      };
    case "below_minimum":
      return {
        status: 422,
        text: `The minimum withdrawal is ${usdc(r.minimumMicro)} for ${r.supplyKind === "sdk" ? "accounts with SDK devices" : "custom agent integrations"}.`,
      };
    case "insufficient_balance":
      return { status: 409, text: `That is more than your available ${usdc(r.availableMicro)}.` };
  }
}

/** The supplier page: any key with the supply scope. */
const SUPPLIER: PageRole = {
  path: "/farmer",
  allows: (a) => a.scopes.includes("supply"),
  viewRefusal: "The supplier page needs a key with the supply scope; you are signed in with one without it",
  postRefusal: "Only a supply key's session may change payouts",
};

export function registerFarmer(app: OpenAPIHono<AppEnv>) {
  app.get("/farmer", async (c) => {
    const s = await sessionFor(c, SUPPLIER);
    if (s instanceof Response) return s;
    const done = DONE[c.req.query("done") ?? ""];
    return renderPrivate(
      c,
      <FarmerPage
        v={await readFarmer(c, s.account.accountId)}
        session={s}
        {...(done ? { notice: { kind: "ok" as const, text: done } } : {})}
      />,
    );
  });

  const refuse = async (
    c: Context<AppEnv>,
    s: PageSession,
    status: number,
    text: string,
    form: Record<string, string>,
  ) =>
    renderPrivate(
      c,
      <FarmerPage
        v={await readFarmer(c, s.account.accountId)}
        session={s}
        notice={{ kind: "error", text }}
        form={{ network: form.network, address: form.address, amount: form.amount }}
      />,
      status,
    );

  app.post("/farmer/wallet", async (c) => {
    const check = await formPostFor(c, SUPPLIER);
    if (check instanceof Response) return check;
    const { session, form } = check;
    const network = form.network;
    const address = (form.address ?? "").trim();
    if (network !== "base" && network !== "solana")
      return refuse(c, session, 400, "Network: choose base or solana.", form);
    const problem = address ? walletAddressProblem(network, address) : "is required";
    if (problem) return refuse(c, session, 400, `Address ${problem}.`, form);
    const deps = c.get("deps");
    const { changed } = await withTransaction(deps.db, (tx) =>
      setWallet(tx, {
        accountId: session.account.accountId,
        actor: session.account.apiKeyId,
        network,
        address,
        now: deps.now(),
      }),
    );
    return c.redirect(`/farmer?done=${changed ? "wallet" : "wallet-unchanged"}`, 303);
  });

  app.post("/farmer/withdrawals", async (c) => {
    const check = await formPostFor(c, SUPPLIER);
    if (check instanceof Response) return check;
    const { session, form } = check;
    let amountMicro: bigint;
    try {
      amountMicro = parseUsdc(form.amount ?? "");
    } catch {
      return refuse(c, session, 400, "Amount: a USDC amount like 10 or 12.5 (at most 6 decimals).", form);
    }
    if (amountMicro <= 0n) return refuse(c, session, 400, "Amount: more than 0 USDC.", form);
    const deps = c.get("deps");
    const out = await requestWithdrawal(deps.db, {
      accountId: session.account.accountId,
      actor: session.account.apiKeyId,
      amountMicro,
      now: deps.now(),
    });
    if (!out.ok) {
      const r = refusalText(out.refusal);
      return refuse(c, session, r.status, r.text, form);
    }
    return c.redirect("/farmer?done=withdrawal", 303);
  });
}
