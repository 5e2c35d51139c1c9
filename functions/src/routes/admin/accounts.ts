/** POST /v1/admin/accounts: an operator creates an account (keys are issued separately). */
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { ACCOUNT_KINDS } from "../../../../shared/accounts.ts";
import type { AppEnv } from "../../env.ts";
import { type AccountRow, createAccount } from "../../services/accounts.ts";
import { DEFAULT_RESELL_LIMITS } from "../../services/resell-limits.ts";
import { callerOf } from "../api-key.ts";
import { errorResponse, MAX_BYTES, registerResellerAuth } from "../reseller/common.ts";
import { requireOperatorKey } from "./common.ts";

const Kind = z.enum(ACCOUNT_KINDS).openapi({
  description:
    "customer, supplier, reseller, farmer (modem operator), operator (human), ops (AI operator), house (x402 sales)",
});

const CreateBody = z
  .object({
    name: z
      .string()
      .min(1)
      .max(100)
      // biome-ignore lint/suspicious/noControlCharactersInRegex: refusing control characters is the point
      .regex(/^[^\x00-\x1f\x7f]+$/, "must not contain control characters"),
    kind: Kind,
    resellAllowanceBytes: z
      .number()
      .int()
      .min(0)
      .max(MAX_BYTES)
      .optional()
      .openapi({
        description: `lifetime bytes its pool keys may sell in all (mints and topups); default settings.resell_limits (${DEFAULT_RESELL_LIMITS.allowanceBytes})`,
      }),
    resellMaxConnections: z
      .number()
      .int()
      .min(1)
      .max(10_000)
      .optional()
      .openapi({
        description: `ceiling on one pool key's maxConnections; default settings.resell_limits (${DEFAULT_RESELL_LIMITS.maxConnections})`,
      }),
  })
  .strict()
  .openapi("AccountCreate");

export const Account = z
  .object({
    accountId: z.string().openapi({ example: "acct_0a1b2c3d4e5f6a7b" }),
    name: z.string(),
    kind: Kind,
    createdAt: z.string(),
    resellAllowanceBytes: z.string().nullable().openapi({ description: "null: the settings default" }),
    resellMaxConnections: z.number().int().nullable().openapi({ description: "null: the settings default" }),
  })
  .openapi("Account");

export function accountView(a: AccountRow) {
  return {
    accountId: a.id,
    name: a.name,
    kind: a.kind,
    createdAt: new Date(a.created_at).toISOString(),
    resellAllowanceBytes: a.resell_allowance_bytes,
    resellMaxConnections: a.resell_max_connections,
  };
}

export const OPERATOR_ERRORS = {
  400: errorResponse("Invalid input; the message names the field"),
  401: errorResponse("Missing, unknown or revoked X-API-Key"),
  403: errorResponse(
    "E_SCOPE_REQUIRED: the key lacks `operate` (ops-agent keys included); E_FORBIDDEN: not an operator account",
  ),
} as const;

const route = createRoute({
  method: "post",
  path: "/v1/admin/accounts",
  summary: "Create an account (human operators only); issue its keys with POST .../api-keys",
  tags: ["admin"],
  security: [{ ApiKey: [] }],
  request: { body: { required: true, content: { "application/json": { schema: CreateBody } } } },
  responses: {
    201: { description: "Created", content: { "application/json": { schema: Account } } },
    ...OPERATOR_ERRORS,
  },
});

export function registerAdminAccounts(app: OpenAPIHono<AppEnv>) {
  registerResellerAuth(app); // only for the shared ApiKey OpenAPI scheme
  // Before validation: anonymous callers learn nothing about the schema.
  app.use("/v1/admin/accounts", async (c, next) => {
    await requireOperatorKey(c, "accounts");
    await next();
  });
  app.openapi(route, async (c) => {
    const body = c.req.valid("json");
    const account = await createAccount({
      deps: c.get("deps"),
      input: { actor: callerOf(c).accountId, ...body },
    });
    c.header("Cache-Control", "no-store");
    return c.json(accountView(account), 201);
  });
}
