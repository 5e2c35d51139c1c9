/**
 * GET /admin (an `operate` or `ops-agent` sign-in): the approvals queue, the kill switch, the
 * autonomous loops, alerts and modem exits. The forms decide approvals (human operators only: the
 * buttons are absent for an ops-agent, and the server refuses and audits a forged post) and set
 * the kill switch (an ops-agent may only engage it), through the same services as
 * /v1/admin/approvals/{id}/approve|reject and /v1/admin/kill-switch.
 */
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { keys } from "../../../shared/keys.ts";
import { formatUsdc } from "../../../shared/money.ts";
import type { AppEnv } from "../env.ts";
import { runGuarded } from "../jobs/guard.ts";
import { payoutJobFor } from "../jobs/payouts.ts";
import { jobs } from "../jobs/registry.ts";
import { type AlertRow, listAlerts } from "../services/alerts.ts";
import { type Approval, decideApproval, listApprovals } from "../services/approvals.ts";
import { appendAudit } from "../services/audit.ts";
import { isHumanOperator, isOpsAgent } from "../services/auth.ts";
import { changeKillSwitch, type KillSwitchState, killSwitchState } from "../services/kill-switch.ts";
import { type LoopState, readLoops } from "../services/loops.ts";
import { listModemExits } from "../services/modem-exits.ts";
import { type FailedPayout, listFailedPayouts, returnFailedWithdrawal } from "../services/withdrawals.ts";
import { formPostFor, type PageRole, sessionFor } from "./guard.tsx";
import { renderPrivate } from "./html.ts";
import { Ago, Layout, Notice } from "./layout.tsx";
import { RefusedPage } from "./refused.tsx";
import type { PageSession } from "./session.ts";
import { signedInAs } from "./sign-in.tsx";

const DONE: Record<string, string> = {
  approved: "Approved: the payout is on its way (the payouts loop sends and confirms it).",
  rejected: "Rejected: the amount is back in the supplier's available balance.",
  engaged: "Kill switch engaged: every autonomous loop now skips.",
  released: "Kill switch released: the loops run again from their next tick.",
  returned: "Returned: the failed payout's amount is back in the supplier's available balance.",
};

interface ModemView {
  id: string;
  address: string;
  country: string;
  carrier: string | null;
  listed: boolean;
  lastProbe: string | null;
  reservedUntil: Date | null;
}

interface AdminView {
  now: Date;
  pending: Approval[];
  decided: Approval[];
  failed: FailedPayout[];
  killSwitch: KillSwitchState;
  loops: (LoopState & { paused: string | null })[];
  alerts: AlertRow[];
  modems: ModemView[];
}

async function readAdmin(c: Context<AppEnv>): Promise<AdminView> {
  const deps = c.get("deps");
  const now = deps.now();
  const [pending, recent, failed, killSwitch, loops, alerts, exits] = await Promise.all([
    listApprovals(deps.db, { status: "pending", limit: 100 }),
    listApprovals(deps.db, { limit: 30 }),
    listFailedPayouts(deps.db),
    killSwitchState(deps.redis),
    readLoops(deps.db, jobs, now),
    listAlerts(deps.db, { open: false }),
    listModemExits(deps.db),
  ]);
  const modems = await Promise.all(
    exits.slice(0, 100).map(async (m): Promise<ModemView> => {
      const [endpoint, probe] = await Promise.all([
        deps.redis.hgetall(keys.endpoint(m.id)),
        deps.redis.hgetall(keys.probe(m.id)),
      ]);
      return {
        id: m.id,
        address: `${m.host}:${m.port}`,
        country: m.country,
        carrier: m.carrier,
        listed: endpoint.listed === "1",
        lastProbe: probe.lastResult || null,
        reservedUntil: m.reserved_until ? new Date(m.reserved_until) : null,
      };
    }),
  );
  return {
    now,
    pending,
    decided: recent.filter((a) => a.status !== "pending").slice(0, 20),
    failed,
    killSwitch,
    // A loop an operator paused (ops actions, ADR 0018): the guard skips it until it is resumed.
    loops: await Promise.all(
      loops.map(async (l) => ({ ...l, paused: await deps.redis.get(keys.loopPaused(l.job)) })),
    ),
    alerts: alerts.slice(0, 20),
    modems,
  };
}

/** A decision that needs a reason (reject, return): one text field, required, at most 500 characters. */
function ReasonForm(props: {
  action: string;
  csrf: string;
  placeholder: string;
  testid: string;
  label: string;
}) {
  return (
    <form method="post" action={props.action} class="inline">
      <input type="hidden" name="csrf" value={props.csrf} />
      <input name="reason" required maxlength={500} placeholder={props.placeholder} />
      <button type="submit" data-testid={props.testid}>
        {props.label}
      </button>
    </form>
  );
}

/** What an approval asks for, in two short lines: a payout's amount and wallet, a proposal's action. */
function summary(a: Approval): { what: string; detail: string } {
  if (a.kind === "payout") {
    const s = a.summary as { accountId?: string; amountMicro?: string; network?: string; address?: string };
    const amount =
      s.amountMicro && /^\d+$/.test(s.amountMicro) ? `${formatUsdc(BigInt(s.amountMicro))} USDC` : "?";
    return {
      what: `payout of ${amount} to ${s.accountId ?? "?"}`,
      detail: `${s.network ?? "?"}: ${s.address ?? "?"}`,
    };
  }
  // Proposals an ops-agent filed (ADR 0018): the action and its arguments as filed.
  const { action, ...rest } = a.summary as { action?: unknown };
  return {
    what: `proposal: ${String(action ?? "?")} (by ${a.proposedBy})`,
    detail: Object.keys(rest).length ? JSON.stringify(rest) : "",
  };
}

function AdminPage(props: {
  v: AdminView;
  session: PageSession;
  notice?: { kind: "ok" | "error"; text: string };
}) {
  const { v, session } = props;
  const human = isHumanOperator(session.account);
  const csrf = session.csrf;
  return (
    <Layout title="Operators" signedIn={signedInAs(session)}>
      <h1>Operators' console</h1>
      <Notice notice={props.notice} />
      {human ? null : (
        <p class="lede" data-testid="agent-note">
          Signed in as an AI operator: you see the queue, and may engage the kill switch; only a human
          operator approves, rejects or releases.
        </p>
      )}

      <h2>Approvals waiting ({v.pending.length})</h2>
      {v.pending.length ? (
        <div class="scroll">
          <table data-testid="approvals">
            <thead>
              <tr>
                <th scope="col">Filed</th>
                <th scope="col">Request</th>
                <th scope="col">Detail</th>
                {human ? <th scope="col">Decision</th> : null}
              </tr>
            </thead>
            <tbody>
              {v.pending.map((a) => {
                const s = summary(a);
                return (
                  <tr data-approval={a.id}>
                    <td>
                      <Ago at={a.createdAt} now={v.now} />
                      <br />
                      <code class="fine">{a.id}</code>
                    </td>
                    <td>
                      <strong>{s.what}</strong>
                    </td>
                    <td class="hash">
                      <code>{s.detail}</code>
                    </td>
                    {human ? (
                      <td>
                        <form method="post" action={`/admin/approvals/${a.id}/approve`} class="inline">
                          <input type="hidden" name="csrf" value={csrf} />
                          <button type="submit" data-testid="approve">
                            Approve
                          </button>
                        </form>
                        <ReasonForm
                          action={`/admin/approvals/${a.id}/reject`}
                          csrf={csrf}
                          placeholder="reason (shown to the supplier)"
                          testid="reject"
                          label="Reject"
                        />
                      </td>
                    ) : null}
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      ) : (
        <p>Nothing waits for a decision.</p>
      )}
      {v.failed.length ? (
        <>
          <h2>Payouts that failed on chain ({v.failed.length})</h2>
          <p class="fine">
            The amount stays reserved until a human returns it to the supplier's balance; the supplier may
            then withdraw again.
          </p>
          <div class="scroll">
            <table data-testid="failed-payouts">
              <thead>
                <tr>
                  <th scope="col">Failed</th>
                  <th scope="col">Amount</th>
                  <th scope="col">Wallet and error</th>
                  {human ? <th scope="col">Decision</th> : null}
                </tr>
              </thead>
              <tbody>
                {v.failed.map((f) => (
                  <tr data-withdrawal={f.id}>
                    <td>
                      <Ago at={f.failedAt} now={v.now} />
                      <br />
                      <code class="fine">{f.id}</code>
                    </td>
                    <td>
                      <strong>{formatUsdc(f.amountMicro)} USDC</strong>
                      <br />
                      <code class="fine">{f.accountId}</code>
                    </td>
                    <td class="hash">
                      <code>
                        {f.network} {f.address}
                      </code>
                      <br />
                      {f.error ?? "failed"}
                      {f.txHash ? (
                        <>
                          {" "}
                          <code class="fine">{f.txHash}</code>
                        </>
                      ) : null}
                    </td>
                    {human ? (
                      <td>
                        <ReasonForm
                          action={`/admin/withdrawals/${f.id}/return`}
                          csrf={csrf}
                          placeholder="reason (audited)"
                          testid="return"
                          label="Return to balance"
                        />
                      </td>
                    ) : null}
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </>
      ) : null}
      {v.decided.length ? (
        <details>
          <summary>Recently decided ({v.decided.length})</summary>
          <ul data-testid="decided">
            {v.decided.map((a) => {
              const s = summary(a);
              return (
                <li data-approval={a.id}>
                  <span data-testid="decision">{a.status}</span> {s.what} by <code>{a.decidedBy}</code>
                  {a.decidedAt ? (
                    <>
                      {" "}
                      <Ago at={a.decidedAt} now={v.now} />
                    </>
                  ) : null}
                  {a.reason ? `: ${a.reason}` : ""}
                </li>
              );
            })}
          </ul>
        </details>
      ) : null}

      <h2>Kill switch</h2>
      <p data-testid="kill-switch">
        {v.killSwitch.engaged ? <strong class="bad">engaged</strong> : <strong class="ok">released</strong>}
        {v.killSwitch.since ? ` (${v.killSwitch.since})` : ": the loops below run"}
      </p>
      {v.killSwitch.engaged ? (
        human ? (
          <form method="post" action="/admin/kill-switch" class="stack">
            <input type="hidden" name="csrf" value={csrf} />
            <input type="hidden" name="engaged" value="false" />
            <label for="ks-reason">Reason (audited)</label>
            <input id="ks-reason" name="reason" maxlength={500} />
            <button type="submit" data-testid="release">
              Release the kill switch
            </button>
          </form>
        ) : (
          <p class="fine">Only a human operator releases it.</p>
        )
      ) : (
        <form method="post" action="/admin/kill-switch" class="stack">
          <input type="hidden" name="csrf" value={csrf} />
          <input type="hidden" name="engaged" value="true" />
          <label for="ks-reason">Reason (audited)</label>
          <input id="ks-reason" name="reason" maxlength={500} />
          <button type="submit" class="danger" data-testid="engage">
            Engage the kill switch
          </button>
        </form>
      )}

      <h2>Loops</h2>
      <div class="scroll">
        <table data-testid="loops">
          <thead>
            <tr>
              <th scope="col">Loop</th>
              <th scope="col">Last run</th>
              <th scope="col">Runs this hour / cap</th>
            </tr>
          </thead>
          <tbody>
            {v.loops.map((l) => (
              <tr data-loop={l.job}>
                <td>{l.job}</td>
                <td>
                  {l.paused ? (
                    <div class="bad" data-testid="loop-paused">
                      {l.paused}
                    </div>
                  ) : null}
                  {l.lastRun ? (
                    <>
                      <span class={l.lastRun.status === "ok" ? "ok" : "bad"}>{l.lastRun.status}</span>
                      {typeof l.lastRun.detail.reason === "string" ? ` (${l.lastRun.detail.reason})` : ""},{" "}
                      <Ago at={l.lastRun.startedAt} now={v.now} />
                    </>
                  ) : (
                    "never"
                  )}
                </td>
                <td>
                  {l.runsLastHour} / {l.maxRunsPerHour}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>

      <h2>Alerts</h2>
      {v.alerts.length ? (
        <ul class="alerts" data-testid="alerts">
          {v.alerts.map((a) => (
            <li class={a.resolved_at ? "resolved" : "open"}>
              <strong>{a.resolved_at ? "resolved" : "open"}</strong> {a.kind} {a.scope}
              {typeof a.detail?.error === "string" ? ` (${a.detail.error})` : ""}: opened{" "}
              <Ago at={new Date(a.opened_at)} now={v.now} />
              {a.resolved_at ? (
                <>
                  , resolved <Ago at={new Date(a.resolved_at)} now={v.now} />
                </>
              ) : null}
            </li>
          ))}
        </ul>
      ) : (
        <p>No alerts.</p>
      )}

      <h2>Modem exits</h2>
      {v.modems.length ? (
        <div class="scroll">
          <table data-testid="modems">
            <thead>
              <tr>
                <th scope="col">Exit</th>
                <th scope="col">Where</th>
                <th scope="col">Listed</th>
                <th scope="col">Last probe</th>
                <th scope="col">Dedicated until</th>
              </tr>
            </thead>
            <tbody>
              {v.modems.map((m) => (
                <tr data-modem={m.id}>
                  <td>
                    <code>{m.id}</code>
                    <br />
                    <code class="fine">{m.address}</code>
                  </td>
                  <td>
                    {m.country.toUpperCase()}
                    {m.carrier ? `, ${m.carrier}` : ""}
                  </td>
                  <td>{m.listed ? "yes" : "no"}</td>
                  <td>{m.lastProbe ?? "not probed yet"}</td>
                  <td>
                    {m.reservedUntil ? m.reservedUntil.toISOString().slice(0, 16).replace("T", " ") : "-"}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ) : (
        <p>No modem exits registered.</p>
      )}
    </Layout>
  );
}

/** The console: a human operator or an ops-agent; only a human decides (checked per action). */
const CONSOLE: PageRole = {
  path: "/admin",
  allows: (a) => isHumanOperator(a) || isOpsAgent(a),
  viewRefusal:
    "The operators' console needs an operate key of an operator account or an ops-agent key of an ops account",
  postRefusal: "Only operator and ops accounts use these forms",
};

const APPROVAL_ID = /^apr_[0-9a-f]{24}$/;
const WITHDRAWAL_ID = /^wd_[0-9a-f]{24}$/;

export function registerAdmin(app: OpenAPIHono<AppEnv>) {
  app.get("/admin", async (c) => {
    const s = await sessionFor(c, CONSOLE);
    if (s instanceof Response) return s;
    const done = DONE[c.req.query("done") ?? ""];
    return renderPrivate(
      c,
      <AdminPage
        v={await readAdmin(c)}
        session={s}
        {...(done ? { notice: { kind: "ok" as const, text: done } } : {})}
      />,
    );
  });

  /** A decision an ops-agent (or anyone but a human operator) tried: refused, and on the audit chain. */
  const refuseNonHuman = async (c: Context<AppEnv>, s: PageSession, action: string, subject: string) => {
    await appendAudit(c.get("deps").db, {
      actor: s.account.apiKeyId,
      action,
      subject,
      detail: { via: "page", accountKind: s.account.accountKind, scopes: s.account.scopes },
    });
    return renderPrivate(
      c,
      <RefusedPage
        reason="Only a human operator (an operate key of an operator account) decides this; the attempt was audited"
        signedIn={signedInAs(s)}
      />,
      403,
    );
  };

  const back = async (c: Context<AppEnv>, s: PageSession, status: number, text: string) =>
    renderPrivate(
      c,
      <AdminPage v={await readAdmin(c)} session={s} notice={{ kind: "error", text }} />,
      status,
    );

  for (const decision of ["approve", "reject"] as const)
    app.post(`/admin/approvals/:id/${decision}`, async (c) => {
      const check = await formPostFor(c, CONSOLE);
      if (check instanceof Response) return check;
      const { session, form } = check;
      const id = c.req.param("id");
      if (!APPROVAL_ID.test(id)) return back(c, session, 400, `${id} is not an approval id (apr_...).`);
      if (!isHumanOperator(session.account))
        return refuseNonHuman(c, session, `approval.${decision}_refused`, id);
      const reason = form.reason?.trim();
      if (decision === "reject" && !reason)
        return back(c, session, 400, "A rejection needs a reason: the supplier sees it.");
      if (reason && reason.length > 500)
        return back(c, session, 400, "The reason is at most 500 characters.");
      const deps = c.get("deps");
      const d = await decideApproval(
        deps.db,
        {
          id,
          decision,
          actor: session.account.apiKeyId,
          ...(reason && decision === "reject" ? { reason } : {}),
          now: deps.now(),
        },
        deps.redis,
      );
      if (!d.ok) return back(c, session, d.code === "not_found" ? 404 : 409, `${d.message}.`);
      if (decision === "approve" && d.approval.kind === "payout")
        // As the JSON route does: start the transfer under the guard; the payouts loop finishes it.
        await runGuarded(deps, payoutJobFor(d.approval.subject, 0));
      return c.redirect(`/admin?done=${decision === "approve" ? "approved" : "rejected"}`, 303);
    });

  app.post("/admin/withdrawals/:id/return", async (c) => {
    const check = await formPostFor(c, CONSOLE);
    if (check instanceof Response) return check;
    const { session, form } = check;
    const id = c.req.param("id");
    if (!WITHDRAWAL_ID.test(id)) return back(c, session, 400, `${id} is not a withdrawal id (wd_...).`);
    if (!isHumanOperator(session.account)) return refuseNonHuman(c, session, "withdrawal.return_refused", id);
    const reason = form.reason?.trim();
    if (!reason) return back(c, session, 400, "A return needs a reason: it is audited.");
    if (reason.length > 500) return back(c, session, 400, "The reason is at most 500 characters.");
    const deps = c.get("deps");
    const r = await returnFailedWithdrawal(deps.db, {
      id,
      actor: session.account.apiKeyId,
      reason,
      now: deps.now(),
    });
    if (!r.ok) return back(c, session, r.code === "not_found" ? 404 : 409, `${r.message}.`);
    return c.redirect("/admin?done=returned", 303);
  });

  app.post("/admin/kill-switch", async (c) => {
    const check = await formPostFor(c, CONSOLE);
    if (check instanceof Response) return check;
    const { session, form } = check;
    if (form.engaged !== "true" && form.engaged !== "false")
      return back(c, session, 400, "engaged: true or false.");
    const engaged = form.engaged === "true";
    const deps = c.get("deps");
    const reason = form.reason?.trim().slice(0, 500);
    const r = await changeKillSwitch(deps, {
      engaged,
      caller: session.account,
      now: deps.now(),
      ...(reason ? { reason } : {}),
    });
    if (!r.ok && r.code === "human_only")
      return refuseNonHuman(c, session, "kill_switch.release_refused", "kill_switch");
    if (!r.ok)
      return back(
        c,
        session,
        429,
        `An ops-agent engages the kill switch at most ${r.cap} times an hour; try again in ${r.retryAfterSeconds} s.`,
      );
    return c.redirect(`/admin?done=${engaged ? "engaged" : "released"}`, 303);
  });
}
