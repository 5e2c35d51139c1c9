/**
 * POST /v1/admin/proposals (ADR 0018): auth changes (bulk key revocation, scope changes), deleting
 * modem exits, and configuration the loops and relays read. A human operator's `operate` key acts
 * at once (200, audited); an `ops-agent` key files an approval instead (202 with its id) that only a
 * human approves, except a deletion at or under settings.mass_deletion_threshold, which it may do
 * itself (capped per hour).
 */

import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { withTransaction } from "../../../../shared/db/pool.ts";
import type { AppEnv } from "../../env.ts";
import { isHumanOperator } from "../../services/auth.ts";
import { OPS_ACTIONS, spendOpsCap } from "../../services/ops-actions.ts";
import {
  executeProposal,
  fileProposal,
  needsApproval,
  type ProposalAction,
} from "../../services/proposals.ts";
import { Scope } from "../account/common.ts";
import { callerOf } from "../api-key.ts";
import { errorResponse, registerResellerAuth } from "../reseller/common.ts";
import { requireOperatorOrAgent } from "./common.ts";

const KeyId = z.string().regex(/^key_[A-Za-z0-9_]{1,64}$/, "must be an API key id (key_...)");
const Proposal = z
  .discriminatedUnion("action", [
    z
      .object({
        action: z.literal("revoke_keys"),
        keyIds: z
          .array(KeyId)
          .min(1)
          .max(100)
          .refine((a) => new Set(a).size === a.length, "must not repeat a key")
          .openapi({ uniqueItems: true }),
      })
      .strict(),
    z
      .object({
        action: z.literal("change_scopes"),
        keyId: KeyId,
        scopes: z
          .array(Scope)
          .min(1)
          .max(4)
          .refine((s) => new Set(s).size === s.length, "must not repeat a scope")
          .openapi({ uniqueItems: true }),
      })
      .strict(),
    z
      .object({
        action: z.literal("delete_modem_exits"),
        ids: z
          .array(z.string().regex(/^modem_[0-9a-f]{16}$/, "must be a modem exit id (modem_...)"))
          .min(1)
          .max(500)
          .refine((a) => new Set(a).size === a.length, "must not repeat an id")
          .openapi({ uniqueItems: true }),
      })
      .strict(),
    z
      .object({
        action: z.literal("set_listing_min_tier"),
        value: z
          .enum(["fast", "medium", "slow", "unknown"])
          .openapi({ description: "settings.listing_min_tier" }),
      })
      .strict(),
    z
      .object({
        action: z.literal("set_ops_agent_caps"),
        value: z
          .object(
            Object.fromEntries(
              OPS_ACTIONS.map((a) => [a, z.number().int().min(0).max(1_000_000).optional()]),
            ),
          )
          .strict()
          .openapi({
            description: "settings.ops_agent_caps_per_hour: per ops-agent key per hour, by action",
          }),
      })
      .strict(),
    z
      .object({
        action: z.literal("set_mass_deletion_threshold"),
        value: z
          .number()
          .int()
          .min(0)
          .max(1_000_000)
          .openapi({ description: "settings.mass_deletion_threshold" }),
      })
      .strict(),
    z
      .object({
        action: z.literal("set_device_region"),
        deviceId: z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/, "must be a device id"),
        region: z
          .string()
          .regex(/^[a-z0-9-]{1,32}$/, "must be a region name")
          .nullable()
          .openapi({ description: "the relays redirect the device to this region; null clears it" }),
      })
      .strict(),
  ])
  .openapi("Proposal", {
    description:
      "revoke_keys, change_scopes: auth changes; delete_modem_exits: an ops-agent may delete up to settings.mass_deletion_threshold at once itself; set_listing_min_tier, set_ops_agent_caps, set_mass_deletion_threshold: the settings rows the loops read; set_device_region: relay configuration",
  });

type Body = z.infer<typeof Proposal>;
const SETTING_OF = {
  set_listing_min_tier: "listing_min_tier",
  set_ops_agent_caps: "ops_agent_caps_per_hour",
  set_mass_deletion_threshold: "mass_deletion_threshold",
} as const;

/** The request as the executor stores it: the three settings actions become one set_setting. */
function toProposal(b: Body): ProposalAction {
  if (b.action in SETTING_OF)
    return {
      action: "set_setting",
      key: SETTING_OF[b.action as keyof typeof SETTING_OF],
      value: (b as { value: unknown }).value,
    };
  return b as ProposalAction;
}

const route = createRoute({
  method: "post",
  path: "/v1/admin/proposals",
  summary:
    "Ask for an auth, deletion or configuration change: a human's runs now, an ops-agent's waits for approval",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: { body: { required: true, content: { "application/json": { schema: Proposal } } } },
  responses: {
    200: {
      description:
        "Executed now (a human operator's request, or an ops-agent's deletion under the threshold)",
      content: {
        "application/json": {
          schema: z
            .object({ executed: z.literal(true), result: z.record(z.string(), z.unknown()) })
            .openapi("ProposalExecuted"),
        },
      },
    },
    202: {
      description: "Filed for a human: approve or reject it at /v1/admin/approvals/{approvalId}",
      content: {
        "application/json": {
          schema: z
            .object({ executed: z.literal(false), approvalId: z.string(), status: z.literal("pending") })
            .openapi("ProposalFiled"),
        },
      },
    },
    400: errorResponse("Invalid input; the message names the field"),
    401: errorResponse("Missing, unknown or revoked X-API-Key"),
    403: errorResponse(
      "E_SCOPE_REQUIRED: needs `operate` or `ops-agent`; E_FORBIDDEN: not an operator or ops account",
    ),
    429: errorResponse("E_RATE_LIMITED: the ops-agent key's hourly cap for deletions"),
  },
});

export function registerAdminProposals(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  app.use("/v1/admin/proposals", async (c, next) => {
    await requireOperatorOrAgent(c, "proposals");
    await next();
  });

  app.openapi(route, async (c) => {
    const p = toProposal(c.req.valid("json"));
    const caller = callerOf(c);
    const deps = c.get("deps");
    const human = isHumanOperator(caller);
    if (!human && (await needsApproval(deps.db, p))) {
      const approvalId = await withTransaction(deps.db, (tx) => fileProposal(tx, p, caller.apiKeyId));
      c.header("Cache-Control", "no-store");
      return c.json({ executed: false as const, approvalId, status: "pending" as const }, 202);
    }
    if (!human) await spendOpsCap(deps, { apiKeyId: caller.apiKeyId, human }, "delete");
    const ex = await withTransaction(deps.db, (tx) => executeProposal(tx, p, caller.apiKeyId));
    await ex.after({ redis: deps.redis, db: deps.db });
    c.header("Cache-Control", "no-store");
    return c.json({ executed: true as const, result: ex.result }, 200);
  });
}
