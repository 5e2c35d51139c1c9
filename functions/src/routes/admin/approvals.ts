/**
 * GET /v1/admin/approvals (operate or ops-agent), POST /v1/admin/approvals/{id}/approve and
 * /reject: the human gate, for payouts and for ops-agent proposals (docs/adr/0018). Only an `operate` key of an operator account decides; an ops-agent's
 * key gets 403 E_SCOPE_REQUIRED naming `operate`.
 */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { ApiError } from "../../../../shared/errors.ts";
import type { AppEnv } from "../../env.ts";
import { runGuarded } from "../../jobs/guard.ts";
import { payoutJobFor } from "../../jobs/payouts.ts";
import { type Approval, decideApproval, listApprovals } from "../../services/approvals.ts";
import { callerOf } from "../api-key.ts";
import { errorResponse, registerResellerAuth } from "../reseller/common.ts";
import { decisionReason, requireOperatorKey, requireOpsReader } from "./common.ts";

const ApprovalView = z
  .object({
    id: z.string().openapi({ example: "apr_0a1b2c3d4e5f6a7b8c9d0e1f" }),
    kind: z.enum(["payout", "proposal"]),
    subject: z.string().openapi({ description: "payout: the withdrawal id; proposal: its own id (prp_...)" }),
    summary: z.record(z.string(), z.unknown()).openapi({
      description:
        "payout: accountId, amountMicro, network, address; proposal: the request ({action, ...}, see POST /v1/admin/proposals)",
    }),
    status: z.enum(["pending", "approved", "rejected"]),
    proposedBy: z.string(),
    decidedBy: z.string().nullable(),
    reason: z.string().nullable(),
    createdAt: z.string(),
    decidedAt: z.string().nullable(),
    result: z
      .record(z.string(), z.unknown())
      .nullable()
      .openapi({ description: "proposal: what executing it did (once approved)" }),
  })
  .openapi("Approval");

const Payout = z
  .object({
    status: z.enum(["queued", "signed", "broadcast", "confirmed", "failed", "skipped"]),
    txHash: z.string().nullable().optional(),
    confirmations: z.number().int().optional(),
    reason: z.string().optional().openapi({
      description:
        "why it is not further along: kill_switch, paused, run_cap, treasury_not_configured, solana_treasury_not_configured, ...",
    }),
  })
  .openapi("PayoutProgress");

const IdParam = z.object({
  id: z
    .string()
    .regex(/^apr_[0-9a-f]{24}$/, "must be an approval id (apr_...)")
    .openapi({ param: { name: "id", in: "path" }, example: "apr_0a1b2c3d4e5f6a7b8c9d0e1f" }),
});

const AUTH_ERRORS = {
  400: errorResponse("Invalid input; the message names the field"),
  401: errorResponse("Missing, unknown or revoked X-API-Key"),
} as const;

const listRoute = createRoute({
  method: "get",
  path: "/v1/admin/approvals",
  summary: "What waits for a human decision (and what was decided), newest first",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: {
    query: z.object({
      status: z.enum(["pending", "approved", "rejected"]).optional().openapi({ description: "default: all" }),
      limit: z.coerce.number().int().min(1).max(500).default(100),
    }),
  },
  responses: {
    200: {
      description: "Approvals",
      content: {
        "application/json": {
          schema: z.object({ approvals: z.array(ApprovalView) }).openapi("ApprovalList"),
        },
      },
    },
    ...AUTH_ERRORS,
    403: errorResponse(
      "E_SCOPE_REQUIRED (needs `operate` or `ops-agent`) or E_FORBIDDEN (not an operator or ops account)",
    ),
  },
});

const DECIDE_ERRORS = {
  ...AUTH_ERRORS,
  403: errorResponse(
    "E_SCOPE_REQUIRED: only a human operator's `operate` key decides (an ops-agent key included); E_FORBIDDEN: not an operator account",
  ),
  404: errorResponse("E_NOT_FOUND: no such approval"),
  409: errorResponse("E_CONFLICT: the approval was already decided"),
} as const;

const approveRoute = createRoute({
  method: "post",
  path: "/v1/admin/approvals/{id}/approve",
  summary: "Approve (human operators only); a payout then executes on-chain, a proposal executes once",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: { params: IdParam },
  responses: {
    200: {
      description: "Approved; `payout` says how far the transfer got within this request",
      content: {
        "application/json": {
          schema: z.object({ approval: ApprovalView, payout: Payout.nullable() }).openapi("ApprovalDecision"),
        },
      },
    },
    ...DECIDE_ERRORS,
  },
});

const rejectRoute = createRoute({
  method: "post",
  path: "/v1/admin/approvals/{id}/reject",
  summary: "Reject (human operators only); a rejected withdrawal returns to the available balance",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: {
    params: IdParam,
    body: {
      required: true,
      content: {
        "application/json": {
          schema: z
            .object({
              reason: decisionReason,
            })
            .strict()
            .openapi("ApprovalReject"),
        },
      },
    },
  },
  responses: {
    200: {
      description: "Rejected",
      content: {
        "application/json": { schema: z.object({ approval: ApprovalView }).openapi("ApprovalRejected") },
      },
    },
    ...DECIDE_ERRORS,
  },
});

const iso = (d: Date | null) => (d ? d.toISOString() : null);
const view = (a: Approval) => ({
  id: a.id,
  kind: a.kind,
  subject: a.subject,
  summary: a.summary,
  status: a.status,
  proposedBy: a.proposedBy,
  decidedBy: a.decidedBy,
  reason: a.reason,
  createdAt: a.createdAt.toISOString(),
  decidedAt: iso(a.decidedAt),
  result: a.result,
});

function refuse(d: { code: "not_found" | "already_decided"; message: string }): never {
  throw new ApiError(d.code === "not_found" ? "E_NOT_FOUND" : "E_CONFLICT", d.message);
}

// How long an approval request waits for the payout's confirmations before answering (the cron finishes the rest).
const PAYOUT_WAIT_MS = 15_000;

export function registerAdminApprovals(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  // Before validation: anonymous callers learn nothing about the schema.
  app.use("/v1/admin/approvals", async (c, next) => {
    await requireOpsReader(c, "approvals");
    await next();
  });
  for (const decision of ["approve", "reject"])
    app.use(`/v1/admin/approvals/:id/${decision}`, async (c, next) => {
      await requireOperatorKey(c, "approval decisions");
      await next();
    });

  app.openapi(listRoute, async (c) => {
    const { status, limit } = c.req.valid("query");
    const approvals = await listApprovals(c.get("deps").db, { status, limit });
    c.header("Cache-Control", "no-store");
    return c.json({ approvals: approvals.map(view) }, 200);
  });

  app.openapi(approveRoute, async (c) => {
    const deps = c.get("deps");
    const d = await decideApproval(
      deps.db,
      { id: c.req.valid("param").id, decision: "approve", actor: callerOf(c).apiKeyId, now: deps.now() },
      deps.redis,
    );
    if (!d.ok) refuse(d);
    let payout = null;
    if (d.approval.kind === "payout") {
      // The approval is committed; the transfer runs under the guard (kill switch, run cap) and
      // whatever it does not finish here, the payouts cron does.
      const outcome = await runGuarded(deps, payoutJobFor(d.approval.subject, PAYOUT_WAIT_MS));
      const detail = outcome.detail as {
        status?: string;
        txHash?: string | null;
        confirmations?: number;
        reason?: string;
      };
      payout =
        outcome.status === "ok"
          ? {
              status: (detail.status ?? "queued") as "queued",
              txHash: detail.txHash ?? null,
              ...(detail.confirmations !== undefined ? { confirmations: detail.confirmations } : {}),
              ...(detail.reason ? { reason: detail.reason } : {}),
            }
          : {
              status: outcome.status === "skipped" ? ("skipped" as const) : ("queued" as const),
              reason: String(
                (outcome.detail as { reason?: unknown; error?: unknown }).reason ??
                  (outcome.detail as { error?: unknown }).error ??
                  outcome.status,
              ),
            };
    }
    c.header("Cache-Control", "no-store");
    return c.json({ approval: view(d.approval), payout }, 200);
  });

  app.openapi(rejectRoute, async (c) => {
    const deps = c.get("deps");
    const d = await decideApproval(deps.db, {
      id: c.req.valid("param").id,
      decision: "reject",
      actor: callerOf(c).apiKeyId,
      reason: c.req.valid("json").reason,
      now: deps.now(),
    });
    if (!d.ok) refuse(d);
    c.header("Cache-Control", "no-store");
    return c.json({ approval: view(d.approval) }, 200);
  });
}
